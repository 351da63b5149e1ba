//! Just enough HTTP/1.1 for one request and one response on a fresh connection.
//!
//! Pure: bytes in, bytes or a parsed response out; the socket lives in `client.rs`. The parser
//! is incremental ([`parse_response`] says `Incomplete` until it has the whole message, so the
//! client does not depend on the agent closing the connection) and total: any input gives a
//! value or an [`HttpError`], never a panic. Sizes are bounded.
//!
//! Supported: `Content-Length`, `Transfer-Encoding: chunked`, a body delimited by the end of the
//! connection, and interim `1xx` responses (skipped). Not supported, since the agent never sends
//! them: other transfer codings, obsolete header line folding.

/// Largest header section accepted (status line and headers).
pub(crate) const MAX_HEADER: usize = 16 * 1024;
/// Largest body accepted. A `CniAddResponse` is a few hundred bytes.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Result of looking at the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    Complete(Response),
    /// More bytes are needed; only returned when the connection is still open.
    Incomplete,
}

/// Why the bytes received are not an acceptable HTTP response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("connection closed before any response")]
    Empty,
    #[error("malformed status line {0:?}")]
    StatusLine(String),
    #[error("malformed header line {0:?}")]
    Header(String),
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    #[error("unsupported Transfer-Encoding {0:?}")]
    TransferEncoding(String),
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("connection closed in the middle of the {0}")]
    Truncated(&'static str),
    #[error("{0} larger than {1} bytes")]
    TooLarge(&'static str, usize),
}

/// Encodes a request with a JSON body. `Connection: close` keeps both sides simple: one request
/// per connection.
pub(crate) fn encode_request(
    method: &str,
    path: &str,
    body: &[u8],
    deadline_ms: Option<u64>,
) -> Vec<u8> {
    let deadline = deadline_ms
        .map(|ms| format!("{}: {ms}\r\n", brindle_agent::api::DEADLINE_HEADER))
        .unwrap_or_default();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\n\
         Host: localhost\r\n\
         User-Agent: brindle-cni/{}\r\n\
         Accept: application/json\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         {deadline}\
         Connection: close\r\n\
         \r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses the bytes received so far. `eof` says the peer closed the connection, so nothing
/// more will come: then the answer is `Complete` or an error, never `Incomplete`.
pub(crate) fn parse_response(buf: &[u8], eof: bool) -> Result<Progress, HttpError> {
    let mut rest = buf;
    loop {
        if rest.is_empty() && eof {
            return Err(if rest.len() == buf.len() {
                HttpError::Empty
            } else {
                HttpError::Truncated("response after an interim 1xx response")
            });
        }
        let Some((head, body_start)) = split_head(rest) else {
            if rest.len() > MAX_HEADER {
                return Err(HttpError::TooLarge("header section", MAX_HEADER));
            }
            if eof {
                return Err(HttpError::Truncated("header section"));
            }
            return Ok(Progress::Incomplete);
        };
        if head.len() > MAX_HEADER {
            return Err(HttpError::TooLarge("header section", MAX_HEADER));
        }
        let (status, reason, framing) = parse_head(head)?;
        let body = &rest[body_start..];
        if (100..200).contains(&status) {
            // An interim response (RFC 9110 §15.2); the final one follows.
            rest = body;
            continue;
        }
        let body = match framing {
            Framing::Empty => Some(Vec::new()),
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(HttpError::TooLarge("body", MAX_BODY));
                }
                match body.get(..n) {
                    Some(b) => Some(b.to_vec()),
                    None if eof => return Err(HttpError::Truncated("body")),
                    None => None,
                }
            }
            Framing::Chunked => decode_chunked(body, eof)?,
            Framing::UntilClose => {
                if body.len() > MAX_BODY {
                    return Err(HttpError::TooLarge("body", MAX_BODY));
                }
                eof.then(|| body.to_vec())
            }
        };
        return Ok(match body {
            Some(body) => Progress::Complete(Response {
                status,
                reason,
                body,
            }),
            None => Progress::Incomplete,
        });
    }
}

/// Finds the end of the header section: the first empty line. Returns the head (without the
/// empty line) and the offset where the body starts. Accepts bare LF line ends as well as CRLF.
fn split_head(buf: &[u8]) -> Option<(&[u8], usize)> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        if line.is_empty() || line == b"\r" {
            return Some((&buf[..line_start], i + 1));
        }
        line_start = i + 1;
    }
    None
}

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn parse_head(head: &[u8]) -> Result<(u16, String, Framing), HttpError> {
    let mut lines = lines(head);
    let status_line = lines.next().unwrap_or_default();
    let (status, reason) = parse_status_line(status_line)?;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let text = String::from_utf8_lossy(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(HttpError::Header(text.into_owned()));
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(HttpError::Header(text.into_owned()));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HttpError::ContentLength(value.to_string()));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if !coding.eq_ignore_ascii_case("identity") {
                    return Err(HttpError::TransferEncoding(value.to_string()));
                }
            }
        }
    }

    // RFC 9112 §6.3: no body for 204 and 304; chunked wins over Content-Length.
    let framing = if status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((status, reason, framing))
}

/// `HTTP/1.1 200 OK`; the reason phrase may be empty or absent.
fn parse_status_line(line: &[u8]) -> Result<(u16, String), HttpError> {
    let bad = || HttpError::StatusLine(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let (version, rest) = text.split_once(' ').ok_or_else(bad)?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad());
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&status) {
        return Err(bad());
    }
    Ok((status, reason.trim().to_string()))
}

fn parse_content_length(value: &str) -> Result<usize, HttpError> {
    let bad = || HttpError::ContentLength(value.to_string());
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// Decodes a chunked body (RFC 9112 §7.1). `Ok(None)` means more bytes are needed. Chunk
/// extensions and trailer fields are ignored.
fn decode_chunked(mut buf: &[u8], eof: bool) -> Result<Option<Vec<u8>>, HttpError> {
    let need_more = |what| {
        if eof {
            Err(HttpError::Truncated(what))
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    loop {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > 1024 {
                return Err(HttpError::Chunked("chunk size line too long"));
            }
            return need_more("chunked body");
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size_field = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_field = size_field.trim_ascii();
        if size_field.is_empty()
            || size_field.len() > 8
            || !size_field.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(HttpError::Chunked("invalid chunk size"));
        }
        let size_text = std::str::from_utf8(size_field).map_err(|_| HttpError::Chunked("size"))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Chunked("invalid chunk size"))?;
        buf = &buf[nl + 1..];

        if size == 0 {
            // Trailer section, ended by an empty line.
            return match split_head(buf) {
                Some(_) => Ok(Some(body)),
                None if buf.len() > MAX_HEADER => Err(HttpError::TooLarge("trailer", MAX_HEADER)),
                // The last chunk arrived; a missing final CRLF is harmless once the peer closed.
                None if eof => Ok(Some(body)),
                None => Ok(None),
            };
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(HttpError::TooLarge("body", MAX_BODY));
        }
        let Some(data) = buf.get(..size) else {
            return need_more("chunked body");
        };
        body.extend_from_slice(data);
        buf = &buf[size..];
        if buf.starts_with(b"\r\n") {
            buf = &buf[2..];
        } else if buf.starts_with(b"\n") {
            buf = &buf[1..];
        } else if buf.is_empty() || buf == b"\r" {
            return need_more("chunked body");
        } else {
            return Err(HttpError::Chunked("chunk data not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    fn complete(buf: &[u8]) -> Response {
        match parse_response(buf, true) {
            Ok(Progress::Complete(r)) => r,
            other => panic!("expected a complete response, got {other:?}"),
        }
    }

    #[test]
    fn request_has_length_and_close() {
        let req = encode_request("POST", "/v1/cni/add", b"{\"a\":1}", Some(1234));
        let text = String::from_utf8(req).expect("ascii");
        assert!(text.starts_with("POST /v1/cni/add HTTP/1.1\r\n"));
        assert!(text.contains("\r\nContent-Length: 7\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nbrindle-deadline-ms: 1234\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"));
        let req = encode_request("POST", "/v1/cni/add", b"{}", None);
        assert!(!String::from_utf8_lossy(&req).contains("deadline"));
    }

    #[test]
    fn content_length_response() {
        let r = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: x\r\n\r\n{}");
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"{}");
        assert!(r.is_success());
    }

    #[test]
    fn complete_before_eof_when_length_is_known() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert!(matches!(
            parse_response(buf, false),
            Ok(Progress::Complete(_))
        ));
        assert_eq!(
            parse_response(&buf[..buf.len() - 1], false),
            Ok(Progress::Incomplete)
        );
        assert_eq!(
            parse_response(&buf[..buf.len() - 1], true),
            Err(HttpError::Truncated("body"))
        );
    }

    #[test]
    fn body_until_close() {
        let buf = b"HTTP/1.0 500 Internal Server Error\n\n{\"code\":100}";
        assert_eq!(parse_response(buf, false), Ok(Progress::Incomplete));
        let r = complete(buf);
        assert_eq!(r.status, 500);
        assert_eq!(r.body, b"{\"code\":100}");
    }

    #[test]
    fn chunked_body() {
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: y\r\n\r\n";
        let r = complete(buf);
        assert_eq!(r.body, b"{\"a\":1}");
        for cut in 0..buf.len() {
            // Every prefix is either incomplete or (once the end is seen) complete: never an
            // error, never a different body.
            match parse_response(&buf[..cut], false) {
                Ok(Progress::Incomplete) => {}
                Ok(Progress::Complete(r)) => assert_eq!(r.body, b"{\"a\":1}"),
                Err(e) => panic!("prefix {cut}: {e}"),
            }
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = complete(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }

    #[test]
    fn garbage_is_an_error() {
        for (buf, want) in [
            (&b""[..], "connection closed before"),
            (b"\r\n\r\n", "status line"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
            (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
            (b"HTTP/1.1 999 OK\r\n\r\n", "status line"),
            (b"HTTP/2 200\r\n\r\n", "status line"),
            (b"HTTP/1.1 +20 OK\r\n\r\n", "status line"),
            (b"\xff\xfe\x00\x01\n\n", "status line"),
            (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", "header line"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n",
                "larger",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                "CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "middle",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "middle"),
            (b"HTTP/1.1 100 Continue\r\n\r\n", "middle"),
        ] {
            match parse_response(buf, true) {
                Err(e) => assert!(e.to_string().contains(want), "{buf:?}: {e}"),
                Ok(p) => panic!("{buf:?}: expected an error, got {p:?}"),
            }
        }
    }

    #[test]
    fn oversized_header_is_refused_without_waiting() {
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        buf.extend(std::iter::repeat_n(b'a', MAX_HEADER + 10));
        assert!(matches!(
            parse_response(&buf, false),
            Err(HttpError::TooLarge(..))
        ));
    }

    #[test]
    fn fuzz_response_parser_never_panics() {
        let mut rng = XorShift::new(0x0b5e_55ed_1234_5678);
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad\r\n\r\n{\"code\":7,\"msg\":\"x\"}",
            b"HTTP/1.0 503 Unavailable\nContent-Length: 0\n\n",
        ];
        for i in 0..20_000 {
            let input = if i % 3 == 0 {
                rng.bytes(300)
            } else {
                rng.mutate(seeds[i % seeds.len()])
            };
            for eof in [false, true] {
                let got = parse_response(&input, eof);
                if eof {
                    assert_ne!(got, Ok(Progress::Incomplete), "{input:?}");
                }
            }
        }
    }
}
