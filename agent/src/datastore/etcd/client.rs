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
            let attempt = tokio::time::timeout(
                self.timeout,
                self.attempt(idx, path, body.clone(), retry),
            )
            .await
            .unwrap_or_else(|_| {
                let why = format!("no answer within {:?}", self.timeout);
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
        let mut request = self.request(idx, path, body);
        // A pooled connection may have been closed by the server meanwhile; hyper then hands the
        // request back unsent and a fresh connection is tried, once.
        for fresh in [false, true] {
            let mut sender = match self.take_idle(idx) {
                Some(sender) if !fresh => sender,
                _ => match self.connect(idx).await {
                    Ok(sender) => sender,
                    Err(why) => return Attempt::Next(why),
                },
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        request = unsent;
                        continue;
                    }
                    None => {
                        let why = format!("connection failed: {}", e.error());
                        return match retry {
                            Retry::Idempotent => Attempt::Next(why),
                            Retry::Once => Attempt::Done(Err(CallError::Transport(format!(
                                "{} {path}: {why}",
                                self.endpoints[idx]
                            )))),
                        };
                    }
                },
            };
            let status = response.status();
            let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    let why = format!("reading the answer failed: {e}");
                    return match retry {
                        Retry::Idempotent => Attempt::Next(why),
                        Retry::Once => Attempt::Done(Err(CallError::Transport(format!(
                            "{} {path}: {why}",
                            self.endpoints[idx]
                        )))),
                    };
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
        let stream = TcpStream::connect(endpoint.as_str())
            .await
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

    fn put_idle(&self, idx: usize, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((idx, sender));
        }
    }
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
