//! A FAKE of the Kubernetes API server, not a real one: an in-process HTTP/1.1 server that
//! implements the semantics Brindle's `kubernetes` datastore relies on, for cluster-scoped custom
//! resources of `brindle.dev/v1`, with the answers' real shapes. No API server can run here;
//! this stands in for one in the conformance suite.
//!
//! What it models (as kube-apiserver + etcd do):
//! - one resourceVersion counter for every resource (etcd's revision), starting well above 0
//!   as in a real cluster; every create, update and delete moves it;
//! - `POST` (201, or 409 `AlreadyExists`), `GET` (404 `NotFound`), `PUT` with
//!   `metadata.resourceVersion` (409 `Conflict` when stale, 404 when missing, 422 without it),
//!   `DELETE` with `preconditions.resourceVersion` (409 `Conflict` when stale); names must be
//!   DNS-1123 subdomains (422 `Invalid`); an update that changes nothing is not written (same
//!   resourceVersion, no event), as the API server skips no-op writes;
//! - lists with `metadata.resourceVersion`, paginated by `limit` and `continue`: later pages
//!   read the first page's snapshot, and a continue token older than the compaction point gets
//!   410 `Expired`; `PartialObjectMetadataList` when the Accept header asks for it;
//! - watches from a resourceVersion (`?watch=1`): the history after it, then live events, as
//!   newline-delimited `{"type","object"}`; a DELETED event's object carries the delete's
//!   resourceVersion; with `allowWatchBookmarks` a BOOKMARK at the current revision once the
//!   history is sent; a watch from before the compaction point gets one `ERROR` event with a
//!   410 `Expired` Status, as the API server's watch cache answers;
//! - `compact(rev)`, standing in for etcd's compaction.
//!
//! Not modelled: schemas and pruning, admission, field managers, namespaces, authentication.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::broadcast;

type Body = UnsyncBoxBody<Bytes, Infallible>;

const GROUP_VERSION: &str = "brindle.dev/v1";
const PREFIX: &str = "/apis/brindle.dev/v1/";
/// The first revision handed out: real clusters are never at 0.
const FIRST_REVISION: u64 = 1000;
/// The `plural` of core v1 Nodes in events and requests.
const CORE_NODES: &str = "core/nodes";
/// The internal event that ends every open watch (an outage).
const CUT: &str = "CUT";

#[derive(Clone)]
struct Event {
    revision: u64,
    plural: String,
    type_: &'static str,
    object: Value,
}

struct State {
    revision: u64,
    compacted: u64,
    /// plural -> kind, the CRDs "installed".
    kinds: BTreeMap<String, String>,
    /// (plural, name) -> the stored object.
    objects: BTreeMap<(String, String), Value>,
    /// Every event since the start (the fake never forgets; `compacted` hides the old part).
    history: Vec<Event>,
    /// The RBAC verb and resource of every request (`("watch", "ippools")`; core resources as
    /// `core/nodes`), in order.
    requests: Vec<(String, String)>,
    /// Core `v1` Nodes (`GET /api/v1/nodes/<name>` only), by name.
    core_nodes: BTreeMap<String, Value>,
    /// Core `v1` Pods (`GET` and merge-`PATCH` of `/api/v1/namespaces/<ns>/pods/<name>`), by
    /// (namespace, name).
    core_pods: BTreeMap<(String, String), Value>,
    /// Every merge patch received for a Pod: (namespace, name, body).
    pod_patches: Vec<(String, String, Value)>,
    /// While set, every request gets 503 ServiceUnavailable (an API server outage) and open
    /// watches end.
    unavailable: bool,
    /// How long requests for core Pods wait before being answered (a slow API server).
    pod_delay: std::time::Duration,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake, serving on a loopback port from a thread of its own until dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Serves the CRDs of `kinds` (e.g. `IPPool`, plural `ippools`) and writes a kubeconfig for
    /// it at `kubeconfig`.
    pub fn start(kinds: &[&str], kubeconfig: PathBuf) -> FakeApiServer {
        let kinds = kinds
            .iter()
            .map(|k| {
                (
                    brindle_agent::datastore::kubernetes::names::plural(k),
                    k.to_string(),
                )
            })
            .collect();
        let (events, _) = broadcast::channel(65536);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                revision: FIRST_REVISION,
                compacted: 0,
                kinds,
                objects: BTreeMap::new(),
                history: Vec::new(),
                requests: Vec::new(),
                core_nodes: BTreeMap::new(),
                core_pods: BTreeMap::new(),
                pod_patches: Vec::new(),
                unavailable: false,
                pod_delay: std::time::Duration::ZERO,
            }),
            events,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake API server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stop => return,
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                    };
                    let shared = Arc::clone(&serving);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: fake\n  user: {{}}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\n"
            ),
        )
        .expect("write kubeconfig");
        FakeApiServer {
            shared,
            kubeconfig,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The RBAC verb and resource (plural) of every request so far, in order.
    #[allow(dead_code)] // used by tests/manifests.rs, not by the conformance suite
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
    }

    /// Serves `node` (a core v1 Node object) at `GET /api/v1/nodes/<name>`, as a write: it gets
    /// the next resourceVersion, and watches of core Nodes (`GET /api/v1/nodes?watch=1`, with
    /// a `metadata.name=` field selector or not) see it as ADDED or MODIFIED.
    #[allow(dead_code)] // used by tests/kubernetes_node_netns.rs
    pub fn set_core_node(&self, name: &str, mut node: Value) {
        let mut state = self.shared.lock();
        state.revision += 1;
        let revision = state.revision;
        node["metadata"]["resourceVersion"] = json!(revision.to_string());
        let type_ = if state.core_nodes.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.core_nodes.insert(name.to_string(), node.clone());
        let event = Event {
            revision,
            plural: CORE_NODES.to_string(),
            type_,
            object: node,
        };
        state.history.push(event.clone());
        let _ = self.shared.events.send(event);
    }

    /// Serves `pod` (a core v1 Pod object) at `/api/v1/namespaces/<namespace>/pods/<name>`.
    #[allow(dead_code)]
    pub fn set_core_pod(&self, namespace: &str, name: &str, pod: Value) {
        self.shared
            .lock()
            .core_pods
            .insert((namespace.to_string(), name.to_string()), pod);
    }

    /// The core v1 Pod `namespace/name` as stored (merge patches applied).
    #[allow(dead_code)]
    pub fn core_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .core_pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every merge patch received for a Pod, in order: (namespace, name, body).
    #[allow(dead_code)]
    pub fn pod_patches(&self) -> Vec<(String, String, Value)> {
        self.shared.lock().pod_patches.clone()
    }

    /// Makes every request for a core Pod wait `delay` before being answered.
    #[allow(dead_code)]
    pub fn set_pod_delay(&self, delay: std::time::Duration) {
        self.shared.lock().pod_delay = delay;
    }

    /// The current revision (the resourceVersion of the last write).
    #[allow(dead_code)]
    pub fn revision(&self) -> u64 {
        self.shared.lock().revision
    }

    /// Ends every open watch, as an API server restart does; clients reconnect from their last
    /// resourceVersion.
    #[allow(dead_code)]
    pub fn cut_watches(&self) {
        let state = self.shared.lock();
        let _ = self.shared.events.send(Event {
            revision: state.revision,
            plural: String::new(),
            type_: CUT,
            object: Value::Null,
        });
    }

    /// Starts (`true`) or ends an outage: while it lasts every request gets 503 and open watches
    /// are cut.
    #[allow(dead_code)]
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut state = self.shared.lock();
        state.unavailable = unavailable;
        if unavailable {
            let _ = self.shared.events.send(Event {
                revision: state.revision,
                plural: String::new(),
                type_: CUT,
                object: Value::Null,
            });
        }
    }

    /// The stored object `plural/name` (`ippools`, `default-ipv4-ippool`), as the API server
    /// would return it.
    #[allow(dead_code)] // used by tests/kubernetes_node_netns.rs
    pub fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(plural.to_string(), name.to_string()))
            .cloned()
    }

    /// The `--datastore` value that reaches this fake.
    pub fn spec(&self) -> String {
        format!("kubernetes:{}", self.kubeconfig.display())
    }

    /// Forgets the history up to `revision`, as etcd's compaction does: watches from before it
    /// get 410.
    pub fn compact(&self, revision: u64) {
        let mut state = self.shared.lock();
        state.compacted = state.compacted.max(revision);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A `Status` object, as the API server answers errors.
fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_object(code, reason, message),
    )
}

fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kubernetes' `IsDNS1123Subdomain`.
fn valid_name(name: &str) -> bool {
    brindle_agent::datastore::kubernetes::names::is_dns1123_subdomain(name)
}

fn resource_version(obj: &Value) -> Option<&str> {
    obj["metadata"]["resourceVersion"].as_str()
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let params = query_params(req.uri().query());
    let partial = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadataList"));
    let method = req.method().clone();
    let req_content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return status(400, "BadRequest", &e.to_string()),
    };
    if shared.lock().unavailable {
        return status(503, "ServiceUnavailable", "the API server is unavailable");
    }
    if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
        if let Some((namespace, name)) = rest.split_once("/pods/") {
            let delay = shared.lock().pod_delay;
            tokio::time::sleep(delay).await;
            return core_pod(shared, &method, namespace, name, &req_content_type, &body);
        }
    }
    if path == "/api/v1/nodes" {
        let watching = matches!(params.get("watch").map(String::as_str), Some("1" | "true"));
        let verb = if watching { "watch" } else { "list" };
        shared
            .lock()
            .requests
            .push((verb.to_string(), CORE_NODES.to_string()));
        if !watching {
            return status(
                405,
                "MethodNotAllowed",
                "only watches of core Nodes are served",
            );
        }
        return watch(shared, CORE_NODES, "Node", &params);
    }
    if let Some(name) = path.strip_prefix("/api/v1/nodes/") {
        let mut state = shared.lock();
        state
            .requests
            .push((method.to_string().to_lowercase(), "core/nodes".to_string()));
        return match (method, state.core_nodes.get(name)) {
            (Method::GET, Some(node)) => json_response(StatusCode::OK, node),
            (Method::GET, None) => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
            (method, _) => status(
                405,
                "MethodNotAllowed",
                &format!("method {method} not allowed"),
            ),
        };
    }
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let (plural, name) = match rest.split_once('/') {
        Some((plural, name)) => (plural.to_string(), Some(name.to_string())),
        None => (rest.to_string(), None),
    };
    let Some(kind) = shared.lock().kinds.get(&plural).cloned() else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let resource = format!("{plural}.brindle.dev");
    let watching = matches!(params.get("watch").map(String::as_str), Some("1" | "true"));
    let verb = match (&method, &name) {
        (&Method::GET, None) if watching => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::DELETE, _) => "delete",
        (&Method::PATCH, _) => "patch",
        _ => "other",
    };
    shared
        .lock()
        .requests
        .push((verb.to_string(), plural.clone()));
    match (method, name) {
        (Method::GET, None)
            if matches!(params.get("watch").map(String::as_str), Some("1" | "true")) =>
        {
            watch(shared, &plural, &kind, &params)
        }
        (Method::GET, None) => list(shared, &plural, &kind, &params, partial),
        (Method::POST, None) => create(shared, &plural, &kind, &resource, &body),
        (Method::GET, Some(name)) => match shared.lock().objects.get(&(plural, name.clone())) {
            Some(obj) => json_response(StatusCode::OK, obj),
            None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
        },
        (Method::PUT, Some(name)) => replace(shared, &plural, &resource, &name, &body),
        (Method::DELETE, Some(name)) => delete(shared, &plural, &resource, &name, &body),
        (method, _) => status(
            405,
            "MethodNotAllowed",
            &format!("method {method} not allowed"),
        ),
    }
}

/// `GET` or merge-`PATCH` of a core v1 Pod.
fn core_pod(
    shared: &Shared,
    method: &Method,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    let mut state = shared.lock();
    let verb = match *method {
        Method::GET => "get",
        Method::PATCH => "patch",
        _ => "other",
    };
    state
        .requests
        .push((verb.to_string(), "core/pods".to_string()));
    let key = (namespace.to_string(), name.to_string());
    let not_found = || status(404, "NotFound", &format!("pods \"{name}\" not found"));
    match *method {
        Method::GET => match state.core_pods.get(&key) {
            Some(pod) => json_response(StatusCode::OK, pod),
            None => not_found(),
        },
        Method::PATCH => {
            if content_type != "application/merge-patch+json" {
                return status(
                    415,
                    "UnsupportedMediaType",
                    &format!("only merge patches are modelled, not {content_type:?}"),
                );
            }
            let patch: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", &e.to_string()),
            };
            state
                .pod_patches
                .push((namespace.to_string(), name.to_string(), patch.clone()));
            let Some(pod) = state.core_pods.get_mut(&key) else {
                return not_found();
            };
            merge_patch(pod, &patch);
            let pod = pod.clone();
            json_response(StatusCode::OK, &pod)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("method {method} not allowed"),
        ),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(object) = target.as_object_mut() {
        for (key, value) in fields {
            if value.is_null() {
                object.remove(key);
            } else {
                merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn record(shared: &Shared, state: &mut State, plural: &str, type_: &'static str, object: Value) {
    let event = Event {
        revision: state.revision,
        plural: plural.to_string(),
        type_,
        object,
    };
    state.history.push(event.clone());
    let _ = shared.events.send(event);
}

fn create(
    shared: &Shared,
    plural: &str,
    kind: &str,
    resource: &str,
    body: &[u8],
) -> Response<Body> {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not a JSON object");
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !valid_name(&name) {
        return status(
            422,
            "Invalid",
            &format!(
                concat!(
                    "{}.brindle.dev \"{}\" is invalid: metadata.name: Invalid value: \"{}\": ",
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric ",
                    "characters, '-' or '.'"
                ),
                kind, name, name
            ),
        );
    }
    if obj["kind"] != kind || obj["apiVersion"] != GROUP_VERSION {
        return status(
            400,
            "BadRequest",
            "the kind or apiVersion of the body does not match the URL",
        );
    }
    if resource_version(&obj).is_some() {
        return status(
            500,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
        );
    }
    let mut state = shared.lock();
    let key = (plural.to_string(), name.clone());
    if state.objects.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("{resource} \"{name}\" already exists"),
        );
    }
    state.revision += 1;
    let revision = state.revision;
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{revision:012}"));
    obj["metadata"]["creationTimestamp"] = json!("2026-11-23T08:00:00Z");
    obj["metadata"]["generation"] = json!(1);
    state.objects.insert(key, obj.clone());
    record(shared, &mut state, plural, "ADDED", obj.clone());
    json_response(StatusCode::CREATED, &obj)
}

fn replace(
    shared: &Shared,
    plural: &str,
    resource: &str,
    name: &str,
    body: &[u8],
) -> Response<Body> {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not a JSON object");
    };
    let mut state = shared.lock();
    let key = (plural.to_string(), name.to_string());
    let Some(current) = state.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    };
    let Some(expected) = resource_version(&obj).map(str::to_string) else {
        return status(
            422,
            "Invalid",
            &format!(
                concat!(
                    "{} \"{}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: ",
                    "must be specified for an update"
                ),
                resource, name
            ),
        );
    };
    if Some(expected.as_str()) != resource_version(&current) {
        return status(
            409,
            "Conflict",
            &format!(
                concat!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; ",
                    "please apply your changes to the latest version and try again"
                ),
                resource, name
            ),
        );
    }
    // An update that changes nothing is not written (etcd3 store's GuaranteedUpdate compares
    // the bytes): same resourceVersion, no event.
    let mut unchanged = obj.clone();
    for field in ["uid", "creationTimestamp", "generation"] {
        unchanged["metadata"][field] = current["metadata"][field].clone();
    }
    if unchanged == current {
        return json_response(StatusCode::OK, &current);
    }
    state.revision += 1;
    let revision = state.revision;
    let generation = current["metadata"]["generation"].as_u64().unwrap_or(1)
        + u64::from(current["spec"] != obj["spec"]);
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
    obj["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
    obj["metadata"]["generation"] = json!(generation);
    state.objects.insert(key, obj.clone());
    record(shared, &mut state, plural, "MODIFIED", obj.clone());
    json_response(StatusCode::OK, &obj)
}

fn delete(
    shared: &Shared,
    plural: &str,
    resource: &str,
    name: &str,
    body: &[u8],
) -> Response<Body> {
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut state = shared.lock();
    let key = (plural.to_string(), name.to_string());
    let Some(current) = state.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    };
    let current_rv = resource_version(&current).unwrap_or_default().to_string();
    if let Some(expected) = options["preconditions"]["resourceVersion"].as_str() {
        if expected != current_rv {
            return status(
                409,
                "Conflict",
                &format!(
                    concat!(
                        "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ",
                        "ResourceVersion in precondition: {}, ResourceVersion in object meta: {}"
                    ),
                    resource, name, expected, current_rv
                ),
            );
        }
    }
    state.objects.remove(&key);
    state.revision += 1;
    let mut gone = current.clone();
    gone["metadata"]["resourceVersion"] = json!(state.revision.to_string());
    record(shared, &mut state, plural, "DELETED", gone);
    json_response(StatusCode::OK, &current)
}

/// The objects of `plural` at `revision`, by name, rebuilt from the history.
fn snapshot(state: &State, plural: &str, revision: u64) -> BTreeMap<String, Value> {
    if revision == state.revision {
        return state
            .objects
            .iter()
            .filter(|((p, _), _)| p == plural)
            .map(|((_, name), obj)| (name.clone(), obj.clone()))
            .collect();
    }
    let mut objects = BTreeMap::new();
    for event in state
        .history
        .iter()
        .filter(|e| e.plural == plural && e.revision <= revision)
    {
        let name = event.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if event.type_ == "DELETED" {
            objects.remove(&name);
        } else {
            objects.insert(name, event.object.clone());
        }
    }
    objects
}

fn list(
    shared: &Shared,
    plural: &str,
    kind: &str,
    params: &BTreeMap<String, String>,
    partial: bool,
) -> Response<Body> {
    let state = shared.lock();
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    // A continue token: "<revision>-<last name>".
    let (revision, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let Some((rv, last)) = token
                .split_once('-')
                .and_then(|(rv, last)| Some((rv.parse::<u64>().ok()?, last)))
            else {
                return status(400, "BadRequest", "invalid continue token");
            };
            if rv < state.compacted {
                return status(
                    410,
                    "Expired",
                    concat!(
                        "The provided continue parameter is too old to display a consistent ",
                        "list result. You can start a new list without the continue parameter."
                    ),
                );
            }
            (rv, Some(last.to_string()))
        }
        None => (state.revision, None),
    };
    let objects = snapshot(&state, plural, revision);
    let mut items: Vec<Value> = objects
        .into_iter()
        .filter(|(name, _)| after.as_ref().is_none_or(|a| name > a))
        .map(|(_, obj)| obj)
        .take(limit.saturating_add(1))
        .collect();
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if items.len() > limit {
        items.truncate(limit);
        let last = items
            .last()
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or_default();
        metadata["continue"] = json!(format!("{revision}-{last}"));
    }
    let body = if partial {
        let items: Vec<Value> = items
            .into_iter()
            .map(|o| {
                json!({
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": o["metadata"]
                })
            })
            .collect();
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": metadata,
            "items": items
        })
    } else {
        json!({
            "apiVersion": GROUP_VERSION,
            "kind": format!("{kind}List"),
            "metadata": metadata,
            "items": items
        })
    };
    json_response(StatusCode::OK, &body)
}

fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": type_, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(
    shared: &Shared,
    plural: &str,
    kind: &str,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    let from: u64 = match params.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => 0,
        Some(rv) => match rv.parse() {
            Ok(rv) => rv,
            Err(_) => {
                return status(
                    400,
                    "BadRequest",
                    &format!("invalid resourceVersion {rv:?}"),
                )
            }
        },
    };
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    // `fieldSelector=metadata.name=<name>`, the only field selector served.
    let only: Option<String> = params
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string);
    let selected = move |object: &Value| {
        only.as_deref()
            .is_none_or(|name| object["metadata"]["name"] == name)
    };
    let (tx, rx) = futures::channel::mpsc::unbounded::<Bytes>();
    let state = shared.lock();
    if from != 0 && from < state.compacted {
        let _ = tx.unbounded_send(event_line(
            "ERROR",
            &status_object(
                410,
                "Expired",
                &format!("too old resource version: {from} ({})", state.compacted),
            ),
        ));
    } else {
        let mut live = shared.events.subscribe();
        let current = state.revision;
        if from == 0 {
            // "Any": the current objects as ADDED, then changes.
            let objects = if plural == CORE_NODES {
                state.core_nodes.clone()
            } else {
                snapshot(&state, plural, current)
            };
            for obj in objects.into_values().filter(|o| selected(o)) {
                let _ = tx.unbounded_send(event_line("ADDED", &obj));
            }
        } else {
            for event in state
                .history
                .iter()
                .filter(|e| e.plural == plural && e.revision > from && selected(&e.object))
            {
                let _ = tx.unbounded_send(event_line(event.type_, &event.object));
            }
        }
        if bookmarks {
            let bookmark = json!({
                "kind": kind,
                "apiVersion": if plural == CORE_NODES { "v1" } else { GROUP_VERSION },
                "metadata": { "resourceVersion": current.to_string() },
            });
            let _ = tx.unbounded_send(event_line("BOOKMARK", &bookmark));
        }
        let plural = plural.to_string();
        tokio::spawn(async move {
            loop {
                let event = match live.recv().await {
                    Ok(event) => event,
                    // Too slow a reader: end the watch; the client resumes from its last RV.
                    Err(_) => return,
                };
                if event.type_ == CUT {
                    return;
                }
                if event.plural != plural || event.revision <= current || !selected(&event.object) {
                    continue;
                }
                if tx
                    .unbounded_send(event_line(event.type_, &event.object))
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    drop(state);
    let body = StreamBody::new(rx.map(|line| Ok::<_, Infallible>(Frame::data(line))));
    let mut response = Response::new(body.boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
