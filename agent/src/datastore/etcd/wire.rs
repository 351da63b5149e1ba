//! The JSON of etcd's gRPC gateway (`/v3/...`): request builders, response types, and the
//! base64 that carries keys and values.
//!
//! The gateway marshals protobuf with the proto field names, leaves out fields at their default
//! (`false`, `0`, empty), writes 64-bit integers as strings and `bytes` as padded standard
//! base64. Every response field is therefore optional here and integers accept a string or a
//! number; unknown fields are ignored so that newer etcd releases parse too.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

/// The `ResponseHeader` every answer carries.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "int")]
    pub revision: u64,
}

/// A `mvccpb.KeyValue`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Kv {
    #[serde(default, deserialize_with = "b64")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "b64")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    pub mod_revision: u64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<Kv>,
    /// More keys in the range than `limit` returned.
    #[serde(default)]
    pub more: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeleteRangeResponse {
    #[serde(default, deserialize_with = "int")]
    pub deleted: u64,
}

/// One `ResponseOp` of a transaction. Only the `else` branches' reads are looked at; the
/// `response_put` / `response_delete_range` of a success carry nothing the header lacks.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ResponseOp {
    pub response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The range result of a failed transaction's `else` branch (a single `request_range`).
    pub fn failure_range(&self) -> Option<&RangeResponse> {
        self.responses.first()?.response_range.as_ref()
    }
}

/// One line of the `/v3/watch` stream: `{"result": WatchResponse}` or `{"error": ...}`.
#[derive(Debug, Deserialize)]
pub(super) struct WatchLine {
    pub result: Option<WatchResponse>,
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    /// Set when the watch was canceled because its start revision is compacted.
    #[serde(default, deserialize_with = "int")]
    pub compact_revision: u64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Event {
    /// `PUT` is the default and so is left out by the gateway; deletes say `DELETE`.
    #[serde(default, rename = "type")]
    pub kind: EventType,
    #[serde(default)]
    pub kv: Kv,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) enum EventType {
    #[default]
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
}

/// The body of an error answer (non-200 status), e.g.
/// `{"error":"etcdserver: mvcc: required revision has been compacted","code":11}`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    pub fn text(&self) -> &str {
        if self.message.is_empty() {
            &self.error
        } else {
            &self.message
        }
    }
}

// ---- requests -------------------------------------------------------------------------------

/// `RangeRequest` for one key.
pub(super) fn range_key(key: &[u8]) -> Value {
    json!({ "key": encode(key) })
}

/// `RangeRequest` for every key starting with `prefix`, at most `limit` keys from `from` on, at
/// `revision` (0 = the current one).
pub(super) fn range_prefix(prefix: &[u8], from: &[u8], limit: u64, revision: u64) -> Value {
    json!({
        "key": encode(from),
        "range_end": encode(&prefix_end(prefix)),
        "limit": limit.to_string(),
        "revision": revision.to_string(),
    })
}

/// `RangeRequest` that returns only the header (the current revision).
pub(super) fn range_count_only(key: &[u8]) -> Value {
    json!({ "key": encode(key), "count_only": true })
}

/// `Compare` of a key's revision field (`CREATE` or `MOD`) with `op` (`EQUAL`, `GREATER`...).
pub(super) fn compare(key: &[u8], target: &str, op: &str, revision: u64) -> Value {
    let field = match target {
        "CREATE" => "create_revision",
        "VERSION" => "version",
        _ => "mod_revision",
    };
    json!({ "key": encode(key), "target": target, "result": op, field: revision.to_string() })
}

pub(super) fn op_put(key: &[u8], value: &[u8]) -> Value {
    json!({ "request_put": { "key": encode(key), "value": encode(value) } })
}

pub(super) fn op_delete(key: &[u8]) -> Value {
    json!({ "request_delete_range": { "key": encode(key) } })
}

pub(super) fn op_get(key: &[u8]) -> Value {
    json!({ "request_range": range_key(key) })
}

pub(super) fn txn(compare: Vec<Value>, success: Value, failure: Value) -> Value {
    json!({ "compare": compare, "success": [success], "failure": [failure] })
}

/// `WatchRequest` creating a watch of every key under `prefix` from `start` on.
pub(super) fn watch_create(prefix: &[u8], start: u64) -> Value {
    json!({ "create_request": {
        "key": encode(prefix),
        "range_end": encode(&prefix_end(prefix)),
        "start_revision": start.to_string(),
        // Idle watches still learn the current revision (every 10 min by default), so that a
        // reconnect resumes from a recent revision rather than one compacted since.
        "progress_notify": true,
    }})
}

/// The end of the range of keys starting with `prefix`: the prefix with its last byte below
/// 0xff incremented, as clientv3's `GetPrefixRangeEnd` does.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All bytes 0xff (or empty): to the end of the keyspace, spelled "\0".
    vec![0]
}

// ---- integers and base64 --------------------------------------------------------------------

fn int<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Str(String),
        Num(u64),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("not a revision: {s:?}"))),
    }
}

fn b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    decode(&s).ok_or_else(|| serde::de::Error::custom("invalid base64"))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as Go's `encoding/json` writes `[]byte`.
pub(super) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional, anything else invalid gives `None`.
pub(super) fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    let unpadded = match s {
        [rest @ .., b'=', b'='] if s.len() % 4 == 0 => rest,
        [rest @ .., b'='] if s.len() % 4 == 0 => rest,
        _ => s,
    };
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    for chunk in unpadded.chunks(4) {
        let mut n = 0u32;
        for &c in chunk {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            n = n << 6 | u32::from(v);
        }
        // Left-align a short final chunk (2 or 3 symbols) into 24 bits.
        n <<= 6 * (4 - chunk.len() as u32);
        let bytes = n.to_be_bytes();
        let len = chunk.len() - 1;
        // Bits below the last whole byte must be zero (canonical encoding).
        if len < 3 && bytes[1 + len..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[1..1 + len]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 §10.
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).as_deref(), Some(plain.as_bytes()), "{coded}");
            assert_eq!(
                decode(coded.trim_end_matches('=')).as_deref(),
                Some(plain.as_bytes())
            );
        }
    }

    #[test]
    fn base64_round_trips_every_byte() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 255) as u8).collect();
            assert_eq!(decode(&encode(&bytes)), Some(bytes));
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)), Some(all));
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in [
            "Z", "Zg=", "Z===", "Zh==", "Zm9=", "Zm9v*", "Zm 9v", "=Zm9", "Zg==Zg==",
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn parses_gateway_answers() {
        // As etcd 3.4's gateway writes them: defaults left out, integers as strings.
        let txn: TxnResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"3","raft_term":"2"},"responses":[
                {"response_range":{"header":{"revision":"3"},"kvs":[{"key":"L2Ev",
                "create_revision":"2","mod_revision":"2","version":"1","value":"eA=="}],"count":"1"}}]}"#,
        )
        .expect("txn");
        assert!(!txn.succeeded);
        assert_eq!(txn.header.revision, 3);
        let kv = &txn.failure_range().expect("range").kvs[0];
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"/a/"[..], &b"x"[..])
        );
        assert_eq!(kv.mod_revision, 2);

        let line: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"L2Ev","mod_revision":"2",
            "value":"eA=="}},{"type":"DELETE","kv":{"key":"L2Ev","mod_revision":"3"}}]}}"#,
        )
        .expect("watch line");
        let events = line.result.expect("result").events;
        assert_eq!(events[0].kind, EventType::Put);
        assert_eq!(events[1].kind, EventType::Delete);
        assert_eq!(events[1].kv.mod_revision, 3);

        let cancel: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"3"}}"#,
        )
        .expect("cancel");
        assert_eq!(cancel.result.expect("result").compact_revision, 3);
    }

    #[test]
    fn bad_answers_are_errors() {
        for bad in [
            r#"{"header":{"revision":"x"}}"#,
            r#"{"header":{"revision":"-1"}}"#,
            r#"{"kvs":[{"key":"!!"}]}"#,
            r#"{"kvs":{}}"#,
        ] {
            assert!(serde_json::from_str::<RangeResponse>(bad).is_err(), "{bad}");
        }
    }
}
