//! A small HTTP/1.1 client for etcd's JSON gateway: unary `POST`s over pooled connections, and
//! streaming `POST`s (watches) over a connection of their own. Several endpoints are tried in
//! turn when one cannot be reached.
//!
//! Failover never sends a write twice: a request is retried on the next endpoint only when it
//! provably did not leave (the connection failed, or hyper handed the request back unsent), or
//! when it is a read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tracing::debug;

use super::wire::ErrorBody;

/// Largest answer read into memory; a list of a few hundred thousand objects fits.
const MAX_BODY: usize = 256 << 20;
/// Idle connections kept per client.
const MAX_IDLE: usize = 8;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    /// No endpoint could be reached, or the connection failed mid-call.
    #[error("{0}")]
    Transport(String),
    /// etcd answered with an error status.
    #[error("{path}: {status}: {message}")]
    Status {
        path: &'static str,
        status: StatusCode,
        message: String,
    },
    /// etcd answered 200 with a body we cannot read.
    #[error("{path}: unreadable answer: {reason}")]
    Decode { path: &'static str, reason: String },
}

pub(super) struct Client {
    /// `host:port` of each endpoint.
    endpoints: Vec<String>,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    timeout: Duration,
    idle: Mutex<Vec<(usize, SendRequest<Full<Bytes>>)>>,
}

/// Whether a call may be sent again after it may have reached etcd.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads: any transport failure moves on to the next endpoint.
    Idempotent,
    /// Writes: only a request that never left is sent again.
    Once,
}

enum Attempt {
    Done(Result<Bytes, CallError>),
    /// Try the next endpoint; the error explains why this one failed.
    Next(String),
}

impl Client {
    pub(super) fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        Client {
            endpoints,
            preferred: AtomicUsize::new(0),
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `POST`s `body` to `path` and decodes the JSON answer.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &Value,
        retry: Retry,
    ) -> Result<T, CallError> {
        let body = Bytes::from(body.to_string());
        let bytes = self.call_raw(path, body, retry).await?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode {
            path,
            reason: e.to_string(),
        })
    }

    async fn call_raw(
        &self,
        path: &'static str,
        body: Bytes,
        retry: Retry,
    ) -> Result<Bytes, CallError> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let idx = (start + i) % self.endpoints.len();
            // Connecting has a timeout of its own (a silent endpoint moves on to the next);
            // this one bounds the whole exchange.
            let limit = self.timeout * 2;
            let attempt = tokio::time::timeout(limit, self.attempt(idx, path, body.clone(), retry))
                .await
                .unwrap_or_else(|_| {
                    let why = format!("no answer within {limit:?}");
                    match retry {
                        Retry::Idempotent => Attempt::Next(why),
                        // The write may have been applied; the caller must find out by reading.
                        Retry::Once => Attempt::Done(Err(CallError::Transport(format!(
                            "{} {path}: {why}",
                            self.endpoints[idx]
                        )))),
                    }
                });
            match attempt {
                Attempt::Done(result) => {
                    if result.is_ok() {
                        self.preferred.store(idx, Ordering::Relaxed);
                    }
                    return result;
                }
                Attempt::Next(why) => {
                    debug!(endpoint = %self.endpoints[idx], path, error = %why, "etcd endpoint failed");
                    failures.push(format!("{}: {why}", self.endpoints[idx]));
                }
            }
        }
        Err(CallError::Transport(format!(
            "{path}: no etcd endpoint answered ({})",
            failures.join("; ")
        )))
    }

    async fn attempt(&self, idx: usize, path: &'static str, body: Bytes, retry: Retry) -> Attempt {
        // A pooled connection may have been closed by the server since it was last used (etcd
        // restarted). Such a failure is retried once on a fresh connection; see `stale`.
        for fresh in [false, true] {
            let (mut sender, reused) = match self.take_idle(idx) {
                Some(sender) if !fresh => (sender, true),
                _ => match self.connect(idx).await {
                    Ok(sender) => (sender, false),
                    Err(why) => return Attempt::Next(why),
                },
            };
            if sender.ready().await.is_err() {
                self.drop_idle(idx);
                continue;
            }
            let response = match sender
                .try_send_request(self.request(idx, path, body.clone()))
                .await
            {
                Ok(response) => response,
                Err(e) if e.message().is_some() || (reused && stale(e.error(), retry)) => {
                    // Unsent, or the server had closed this idle connection: the other idle
                    // connections to it are most likely closed too.
                    self.drop_idle(idx);
                    continue;
                }
                Err(e) => {
                    let why = format!("connection failed: {}", e.error());
                    return self.after_send_failure(idx, path, why, retry);
                }
            };
            let status = response.status();
            let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    let why = format!("reading the answer failed: {e}");
                    return self.after_send_failure(idx, path, why, retry);
                }
            };
            self.put_idle(idx, sender);
            if status != StatusCode::OK {
                return Attempt::Done(Err(status_error(path, status, &body)));
            }
            return Attempt::Done(Ok(body));
        }
        Attempt::Next("connection closed before the request was sent".to_string())
    }

    /// A request may have reached etcd and the connection broke: reads move on to the next
    /// endpoint, writes report the failure (the caller finds out by reading).
    fn after_send_failure(&self, idx: usize, path: &str, why: String, retry: Retry) -> Attempt {
        match retry {
            Retry::Idempotent => Attempt::Next(why),
            Retry::Once => Attempt::Done(Err(CallError::Transport(format!(
                "{} {path}: {why}",
                self.endpoints[idx]
            )))),
        }
    }

    /// `POST`s `body` to `path` on a connection of its own and returns the streaming answer.
    pub(super) async fn stream(
        &self,
        path: &'static str,
        body: &Value,
    ) -> Result<Incoming, CallError> {
        let body = Bytes::from(body.to_string());
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let idx = (start + i) % self.endpoints.len();
            let opened = tokio::time::timeout(self.timeout, async {
                let mut sender = self.connect(idx).await?;
                let response = sender
                    .send_request(self.request(idx, path, body.clone()))
                    .await
                    .map_err(|e| format!("connection failed: {e}"))?;
                Ok::<_, String>(response)
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
            match opened {
                Ok(response) if response.status() == StatusCode::OK => {
                    return Ok(response.into_body())
                }
                Ok(response) => {
                    let status = response.status();
                    let body = Limited::new(response.into_body(), 64 << 10)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    return Err(status_error(path, status, &body));
                }
                Err(why) => failures.push(format!("{}: {why}", self.endpoints[idx])),
            }
        }
        Err(CallError::Transport(format!(
            "{path}: no etcd endpoint answered ({})",
            failures.join("; ")
        )))
    }

    fn request(&self, idx: usize, path: &'static str, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = hyper::Uri::from_static(path);
        let headers = request.headers_mut();
        if let Ok(host) = header::HeaderValue::from_str(&self.endpoints[idx]) {
            headers.insert(header::HOST, host);
        }
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        request
    }

    async fn connect(&self, idx: usize) -> Result<SendRequest<Full<Bytes>>, String> {
        let endpoint = &self.endpoints[idx];
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(endpoint.as_str()))
            .await
            .map_err(|_| format!("connect: no answer within {:?}", self.timeout))?
            .map_err(|e| format!("connect: {e}"))?;
        // Small requests and answers: don't wait to fill segments.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when the server closes or every sender is dropped; errors surface on the
            // sender's side.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn take_idle(&self, idx: usize) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(_, sender)| !sender.is_closed());
        let pos = idle.iter().rposition(|(i, _)| *i == idx)?;
        Some(idle.swap_remove(pos).1)
    }

    fn drop_idle(&self, idx: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(i, _)| *i != idx);
    }

    fn put_idle(&self, idx: usize, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((idx, sender));
        }
    }
}

/// Whether a request sent on a reused connection may be sent again on a fresh one. Reads may.
/// A write may when the connection ended before any answer (hyper's "incomplete message"):
/// etcd closes connections only when it stops, so the request found a connection closed while
/// it sat idle. This is the rule of Go's net/http (`errServerClosedIdle`); the one case it gets
/// wrong is a server that applied the write and died before answering, which the retry then
/// reports as a conflict.
fn stale(error: &hyper::Error, retry: Retry) -> bool {
    retry == Retry::Idempotent || error.is_incomplete_message()
}

fn status_error(path: &'static str, status: StatusCode, body: &[u8]) -> CallError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| e.text().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    CallError::Status {
        path,
        status,
        message,
    }
}
