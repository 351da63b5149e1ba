//! The agent's HTTP servers: the local API on a Unix socket (mode 0600) for the CNI plugin and
//! `brindlectl`, and health on TCP (`/liveness`, `/readiness`) for probes.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, UnixListener};
use tracing::{debug, warn};

use crate::api::{self, codes, AgentStatus, ApiError, CniAddRequest, CniDelRequest};
use crate::controller::Shared;
use crate::pods::PodNetwork;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// Liveness fails when the controller loop has not turned for this long.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(90);

/// What the API needs.
pub struct ApiState {
    pub pods: PodNetwork,
    pub shared: Arc<Shared>,
    pub node_ip: String,
}

type Resp = Response<Full<Bytes>>;

fn json<T: Serialize>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_default()
}

fn api_error(status: StatusCode, e: &ApiError) -> Resp {
    json(status, e)
}

async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            api_error(
                StatusCode::BAD_REQUEST,
                &ApiError {
                    code: codes::IO_FAILURE,
                    msg: "reading the request failed".into(),
                    details: e.to_string(),
                },
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            &ApiError {
                code: codes::DECODE_FAILURE,
                msg: "the request is not valid JSON for this endpoint".into(),
                details: e.to_string(),
            },
        )
    })
}

fn status_for(e: &ApiError) -> StatusCode {
    match e.code {
        codes::INVALID_ENV | codes::DECODE_FAILURE | codes::INVALID_CONFIG => {
            StatusCode::BAD_REQUEST
        }
        codes::UNKNOWN_CONTAINER => StatusCode::NOT_FOUND,
        codes::TRY_AGAIN | codes::NOT_AVAILABLE | codes::NO_CAPACITY => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The plugin's deadline ([`api::DEADLINE_HEADER`]), if it sent one.
fn deadline_of(req: &Request<Incoming>) -> Option<SystemTime> {
    let ms: u64 = req
        .headers()
        .get(api::DEADLINE_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

fn expired(deadline: Option<SystemTime>) -> bool {
    deadline.is_some_and(|d| SystemTime::now() >= d)
}

/// The answer to a request read after the plugin gave up on it (an agent that was stopped or
/// overloaded): nothing is done, so the failure the plugin reported is the truth.
fn too_late(path: &str) -> Resp {
    warn!(%path, "request read after the plugin's deadline; not acting on it");
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &ApiError {
            code: codes::TRY_AGAIN,
            msg: format!(
                "{path}: the request arrived after the plugin's deadline; nothing was done"
            ),
            details: String::new(),
        },
    )
}

/// Runs a pod operation on its own task: a plugin that hangs up must not cancel it halfway
/// (between allocating and recording, say), which would leak what was done so far.
async fn to_completion<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(f).await.unwrap_or_else(|e| {
        Err(ApiError {
            code: codes::INTERNAL,
            msg: "the agent's request task failed".into(),
            details: e.to_string(),
        })
    })
}

/// ADD, undone when it finishes after the plugin's deadline: the plugin has already reported a
/// failure, and the runtime would never DEL an attachment it believes was not made.
async fn add_before(
    state: Arc<ApiState>,
    req: CniAddRequest,
    deadline: Option<SystemTime>,
) -> Result<api::CniAddResponse, ApiError> {
    let resp = state.pods.add(&req).await?;
    if !expired(deadline) {
        return Ok(resp);
    }
    warn!(container = %req.container_id, "ADD finished after the plugin's deadline; undoing it");
    let undo = CniDelRequest {
        container_id: req.container_id.clone(),
        netns: req.netns.clone(),
        ifname: req.ifname.clone(),
        network: req.network.clone(),
        pod_namespace: req.pod_namespace.clone(),
        pod_name: req.pod_name.clone(),
    };
    if let Err(e) = state.pods.del(&undo).await {
        warn!(container = %req.container_id, error = %e.msg, "undoing the late ADD failed; the IPAM GC will release the address");
    }
    Err(ApiError {
        code: codes::TRY_AGAIN,
        msg: "ADD finished after the plugin's deadline and was undone".into(),
        details: String::new(),
    })
}

async fn handle_api(state: Arc<ApiState>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    debug!(%method, %path, "api request");
    let deadline = deadline_of(&req);
    if expired(deadline) {
        return Ok(too_late(&path));
    }
    let resp =
        match (method, path.as_str()) {
            (Method::POST, api::PATH_CNI_ADD) => match read_json(req).await {
                Ok(_) if expired(deadline) => too_late(&path),
                Ok(body) => match to_completion(add_before(state.clone(), body, deadline)).await {
                    Ok(r) => json(StatusCode::OK, &r),
                    Err(e) => api_error(status_for(&e), &e),
                },
                Err(resp) => resp,
            },
            (Method::POST, api::PATH_CNI_DEL) => match read_json::<CniDelRequest>(req).await {
                Ok(_) if expired(deadline) => too_late(&path),
                Ok(body) => {
                    let st = state.clone();
                    match to_completion(async move { st.pods.del(&body).await }).await {
                        Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
                        Err(e) => api_error(status_for(&e), &e),
                    }
                }
                Err(resp) => resp,
            },
            (Method::POST, api::PATH_CNI_CHECK) => match read_json(req).await {
                Ok(body) => match state.pods.check(&body).await {
                    Ok(r) => json(StatusCode::OK, &r),
                    Err(e) => api_error(status_for(&e), &e),
                },
                Err(resp) => resp,
            },
            (Method::POST, api::PATH_CNI_STATUS) => match read_json(req).await {
                Ok(body) => match state.pods.status(&body).await {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
                    Err(e) => api_error(status_for(&e), &e),
                },
                Err(resp) => resp,
            },
            (Method::POST, api::PATH_CNI_GC) => match read_json::<api::CniGcRequest>(req).await {
                Ok(body) => {
                    let st = state.clone();
                    match to_completion(async move { st.pods.gc(&body).await }).await {
                        Ok(r) => json(StatusCode::OK, &r),
                        Err(e) => api_error(status_for(&e), &e),
                    }
                }
                Err(resp) => resp,
            },
            (Method::GET, api::PATH_STATUS) => json(
                StatusCode::OK,
                &AgentStatus {
                    node_name: state.pods.node.clone(),
                    node_ip: state.node_ip.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ready: state.shared.ready.load(Ordering::Relaxed),
                    local_pods: state.shared.endpoints().len(),
                    remote_nodes: state.shared.remote_nodes.load(Ordering::Relaxed) as usize,
                },
            ),
            // BGP mode: the speaker's status, as brindle-bgpd serves it (routing.md).
            (Method::GET, api::PATH_BGP_PEERS | api::PATH_BGP_ROUTES) => {
                match state.shared.speaker() {
                Some(speaker) => return crate::bgp_status::handle(speaker, req).await,
                None => api_error(
                    StatusCode::NOT_FOUND,
                    &ApiError {
                        code: codes::INTERNAL,
                        msg: format!("no such endpoint: {path} (the BGP speaker is not running: --routing static)"),
                        details: String::new(),
                    },
                ),
            }
            }
            (_, path) => api_error(
                StatusCode::NOT_FOUND,
                &ApiError {
                    code: codes::INTERNAL,
                    msg: format!("no such endpoint: {path}"),
                    details: String::new(),
                },
            ),
        };
    Ok(resp)
}

/// Binds the API socket: creates its directory, replaces a stale socket, sets mode 0600.
pub fn bind_api(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API until the listener fails.
pub async fn serve_api(listener: UnixListener, state: Arc<ApiState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "accepting on the API socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle_api(state.clone(), req));
            // With half-close allowed, a request whose plugin already hung up (it timed out while
            // the agent was paused) is still handled, and so refused for its deadline with a log
            // line, instead of being dropped at EOF in a race with its dispatch.
            if let Err(e) = http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "API connection ended with an error");
            }
        });
    }
}

async fn handle_health(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap_or_default()
    };
    let resp = match req.uri().path() {
        "/liveness" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let last = shared.heartbeat.load(Ordering::Relaxed);
            if now.saturating_sub(last) <= LIVENESS_TIMEOUT.as_secs() {
                text(StatusCode::OK, "live\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not live: the controller loop is stuck\n",
                )
            }
        }
        "/readiness" => {
            if let Some(error) = shared.datastore_error() {
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from(format!(
                        "not ready: datastore unreachable: {error}\n"
                    ))))
                    .unwrap_or_default()
            } else if shared.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: dataplane not programmed yet\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "try /liveness or /readiness\n"),
    };
    Ok(resp)
}

/// Serves `/liveness` and `/readiness` until the listener fails.
pub async fn serve_health(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "accepting on the health port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle_health(shared.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A blocking HTTP/1.1 GET over the agent's Unix socket, for `brindlectl` and the lab.
pub fn get_over_socket(socket: &Path, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: brindle\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP status line"))?;
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || size > data.len() {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// The default API socket path as a `PathBuf`.
pub fn default_socket() -> PathBuf {
    PathBuf::from(api::DEFAULT_SOCKET)
}
