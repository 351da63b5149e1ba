//! The plugin's side of the agent API (`brindle_agent::api`): one blocking HTTP/1.1 request per
//! connection over the agent's Unix socket.
//!
//! No async runtime and no HTTP library: the plugin is started once per pod and must be quick to
//! start. The wire format is in `http.rs`; this module owns the socket, the deadline, and the
//! mapping of failures to CNI errors:
//!
//! | failure                                              | CNI code              |
//! |------------------------------------------------------|-----------------------|
//! | socket missing, connection refused, no answer in time, connection dropped | 11 try again later |
//! | other I/O errors (permission denied...)              | 5 I/O failure         |
//! | not HTTP, or a 2xx body that does not decode         | 100                   |
//! | non-2xx with an `ApiError` body                      | the body's code       |
//! | non-2xx without one                                  | 11 for 429/503, else 100 |

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brindle_agent::api::{
    codes, ApiError, CniAddRequest, CniAddResponse, CniDelRequest, CniGcRequest, CniGcResponse,
    CniStatusRequest, PATH_CNI_ADD, PATH_CNI_CHECK, PATH_CNI_DEL, PATH_CNI_GC, PATH_CNI_STATUS,
};
use serde::Serialize;

use crate::error::CniError;
use crate::http::{self, HttpError, Progress, Response};

/// What the plugin asks of the agent. A trait so the verbs can be tested with a scripted agent.
pub(crate) trait Agent {
    fn add(&self, req: &CniAddRequest) -> Result<CniAddResponse, CniError>;
    /// Succeeds when the pod is gone, including when it was gone before.
    fn del(&self, req: &CniDelRequest) -> Result<(), CniError>;
    /// The agent's record of the pod when it sends one (agents before CNI 1.1 answer `{}`).
    fn check(&self, req: &CniAddRequest) -> Result<Option<CniAddResponse>, CniError>;
    /// Succeeds when an ADD would find an address.
    fn status(&self, req: &CniStatusRequest) -> Result<(), CniError>;
    fn gc(&self, req: &CniGcRequest) -> Result<CniGcResponse, CniError>;
}

/// The agent at the end of a Unix socket.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    socket: PathBuf,
    /// Deadline for a whole exchange: connect, send, and the complete answer.
    timeout: Duration,
}

impl Client {
    pub(crate) fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Client {
            socket: socket.into(),
            timeout,
        }
    }

    /// Posts a JSON body and returns the body of a 2xx answer; a non-2xx answer is an error.
    fn call(&self, path: &str, body: &impl Serialize) -> Result<Vec<u8>, CniError> {
        let body = serde_json::to_vec(body).map_err(|e| CniError::AgentProtocol {
            socket: self.socket.clone(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        // The agent undoes what it finishes after this: the plugin will have reported failure.
        let deadline_ms = SystemTime::now()
            .checked_add(self.timeout)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        let resp = self.exchange(&http::encode_request("POST", path, &body, deadline_ms))?;
        if resp.is_success() {
            Ok(resp.body)
        } else {
            Err(error_from_answer(path, &resp))
        }
    }

    /// Sends one request and reads one response before the deadline.
    fn exchange(&self, request: &[u8]) -> Result<Response, CniError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.connect_error(&e))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io_error("setting a timeout", &e))?;
        stream
            .write_all(request)
            .map_err(|e| self.io_error("sending the request", &e))?;
        // No shutdown(Write) here: a server that does not support half-close (hyper's default)
        // would drop the request on seeing EOF.

        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 8192];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timeout_error());
            }
            stream
                .set_read_timeout(Some(remaining))
                .map_err(|e| self.io_error("setting a timeout", &e))?;
            let eof = match stream.read(&mut chunk) {
                Ok(0) => true,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    false
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A server that answers and then resets the connection still answered.
                    if let Ok(Progress::Complete(resp)) = http::parse_response(&buf, true) {
                        return Ok(resp);
                    }
                    return Err(self.io_error("reading the answer", &e));
                }
            };
            if buf.len() > http::MAX_HEADER + http::MAX_BODY + 64 * 1024 {
                return Err(self.protocol_error(&HttpError::TooLarge(
                    "response",
                    http::MAX_HEADER + http::MAX_BODY,
                )));
            }
            match http::parse_response(&buf, eof) {
                Ok(Progress::Complete(resp)) => return Ok(resp),
                Ok(Progress::Incomplete) => continue,
                Err(e) => return Err(self.protocol_error(&e)),
            }
        }
    }

    fn connect_error(&self, e: &std::io::Error) -> CniError {
        match e.kind() {
            ErrorKind::NotFound => self.unreachable("the socket does not exist".into()),
            ErrorKind::ConnectionRefused => self.unreachable("connection refused".into()),
            _ => self.io_error("connecting", e),
        }
    }

    fn io_error(&self, doing: &str, e: &std::io::Error) -> CniError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timeout_error(),
            ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof => self.unreachable(format!(
                "the agent closed the connection while {doing}: {e}"
            )),
            _ => CniError::AgentIo {
                socket: self.socket.clone(),
                reason: format!("{doing}: {e}"),
            },
        }
    }

    fn timeout_error(&self) -> CniError {
        self.unreachable(format!(
            "no complete answer within {}s",
            self.timeout.as_secs_f32()
        ))
    }

    fn unreachable(&self, reason: String) -> CniError {
        CniError::AgentUnreachable {
            socket: self.socket.clone(),
            reason,
        }
    }

    fn protocol_error(&self, e: &HttpError) -> CniError {
        CniError::AgentProtocol {
            socket: self.socket.clone(),
            reason: e.to_string(),
        }
    }
}

impl Agent for Client {
    fn add(&self, req: &CniAddRequest) -> Result<CniAddResponse, CniError> {
        let body = self.call(PATH_CNI_ADD, req)?;
        serde_json::from_slice(&body).map_err(|e| CniError::AgentProtocol {
            socket: self.socket.clone(),
            reason: format!("cannot decode the ADD answer: {e}"),
        })
    }

    fn del(&self, req: &CniDelRequest) -> Result<(), CniError> {
        // The body (`{}`) carries nothing; a 2xx status is the answer.
        self.call(PATH_CNI_DEL, req).map(drop)
    }

    fn check(&self, req: &CniAddRequest) -> Result<Option<CniAddResponse>, CniError> {
        let body = self.call(PATH_CNI_CHECK, req)?;
        Ok(serde_json::from_slice(&body).ok())
    }

    fn status(&self, req: &CniStatusRequest) -> Result<(), CniError> {
        self.call(PATH_CNI_STATUS, req).map(drop)
    }

    fn gc(&self, req: &CniGcRequest) -> Result<CniGcResponse, CniError> {
        let body = self.call(PATH_CNI_GC, req)?;
        serde_json::from_slice(&body).map_err(|e| CniError::AgentProtocol {
            socket: self.socket.clone(),
            reason: format!("cannot decode the GC answer: {e}"),
        })
    }
}

/// Turns a non-2xx answer into an error: the agent's own `ApiError` when the body is one,
/// otherwise a description of the HTTP status.
fn error_from_answer(path: &str, resp: &Response) -> CniError {
    if let Ok(e) = serde_json::from_slice::<ApiError>(&resp.body) {
        // Code 0 means success in CNI; an agent sending it with an error status is confused.
        if e.code != 0 {
            return CniError::Agent(e);
        }
    }
    let code = match resp.status {
        429 | 503 => codes::TRY_AGAIN,
        _ => codes::INTERNAL,
    };
    let hint = if resp.status == 404 {
        "; is the agent older than the plugin?"
    } else {
        ""
    };
    CniError::Agent(ApiError {
        code,
        msg: format!(
            "the agent answered HTTP {} {} to {path}{hint}",
            resp.status, resp.reason
        ),
        details: snippet(&resp.body),
    })
}

/// The start of a body, for an error's details.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 256;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s: String = text.trim().to_string();
    if body.len() > MAX {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            reason: "Reason".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn api_errors_pass_through() {
        let e = error_from_answer(
            PATH_CNI_ADD,
            &resp(409, r#"{"code":51,"msg":"no pool has room","details":"d"}"#),
        );
        assert_eq!(e.code(), 51);
        assert_eq!(
            e.to_api_error(),
            ApiError {
                code: 51,
                msg: "no pool has room".into(),
                details: "d".into()
            }
        );
    }

    #[test]
    fn other_error_bodies_are_described() {
        let e = error_from_answer(PATH_CNI_ADD, &resp(503, "starting up"));
        assert_eq!(e.code(), 11);
        let api = e.to_api_error();
        assert!(api.msg.contains("503"), "{}", api.msg);
        assert_eq!(api.details, "starting up");

        let e = error_from_answer(PATH_CNI_DEL, &resp(404, "not found"));
        assert_eq!(e.code(), 100);
        assert!(e.to_string().contains("/v1/cni/del"), "{e}");

        let e = error_from_answer(PATH_CNI_DEL, &resp(500, r#"{"code":0,"msg":"ok?"}"#));
        assert_eq!(e.code(), 100);
    }

    #[test]
    fn snippet_is_bounded_and_lossy() {
        assert_eq!(snippet(b"\xff\xfeabc"), "\u{fffd}\u{fffd}abc");
        let long = vec![b'x'; 1000];
        assert_eq!(snippet(&long).len(), 256 + 3);
    }

    #[test]
    fn missing_socket_is_try_again_naming_the_path() {
        let client = Client::new("/nonexistent/brindle-test.sock", Duration::from_secs(1));
        let req = CniDelRequest {
            container_id: "c".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            network: "n".into(),
            pod_namespace: None,
            pod_name: None,
        };
        let err = client.del(&req).expect_err("no socket");
        assert_eq!(err.code(), 11);
        assert!(
            err.to_string().contains("/nonexistent/brindle-test.sock"),
            "{err}"
        );
    }
}
