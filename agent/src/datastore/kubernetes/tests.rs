//! The kubernetes store against RECORDED API-server exchanges (no API server runs here): a
//! `tower_test` mock service stands where the HTTP connection would be, each test checks the
//! requests the store makes (method, path, query, body) and answers with the JSON an API server
//! sends: objects with the fields it adds, Lists with `metadata.resourceVersion` and
//! `continue`, `Status` objects for 404, 409 and 410, and watch streams of newline-delimited
//! `{"type","object"}` events. The conformance suite runs the same store against a fake of the
//! API server's semantics (agent/tests/datastore_conformance/fake_apiserver.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use brindle_ipam::store::{Store, StoreError, Watch, WatchEvent};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::KubernetesStore;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the store must make, and the recorded answer.
pub(super) struct Exchange {
    method: &'static str,
    path: String,
    /// Query parameters the request must carry (others may be there too).
    query: Vec<(&'static str, String)>,
    /// JSON the request body must contain (a subset match).
    body: Option<Value>,
    status: u16,
    response: String,
    /// How long the answer takes (a slow watch stream).
    delay: Duration,
}

pub(super) fn exchange(
    method: &'static str,
    path: &str,
    status: u16,
    response: impl Into<String>,
) -> Exchange {
    Exchange {
        method,
        path: path.to_string(),
        query: Vec::new(),
        body: None,
        status,
        response: response.into(),
        delay: Duration::ZERO,
    }
}

impl Exchange {
    pub(super) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub(super) fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// A store over a mock service (two items per list page), and the handle answering it.
pub(super) fn mock_store() -> (KubernetesStore, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (KubernetesStore::with_page(client, 2), handle)
}

/// Whether every field of `want` is in `got`, recursively.
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(got), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| got.get(k).is_some_and(|g| contains(g, w))),
        _ => got == want,
    }
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%3A", ":")))
        .collect()
}

/// Answers each request with the first recorded exchange not used yet that it matches
/// (method, path, query, body), so that a watch reconnecting in the background cannot take
/// another request's answer; a watch request that matches nothing is left hanging, any other
/// request fails the test. The task ends when every exchange has happened; its panic fails the
/// test when it is awaited ([`finish`]).
pub(super) fn serve(mut handle: Handle, exchanges: Vec<Exchange>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: Vec<Option<Exchange>> = exchanges.into_iter().map(Some).collect();
        let mut hanging = Vec::new();
        while pending.iter().any(Option::is_some) {
            let (request, respond) =
                tokio::time::timeout(Duration::from_secs(10), handle.next_request())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "no request within 10 s; still expected: {}",
                            describe(&pending)
                        )
                    })
                    .unwrap_or_else(|| {
                        panic!("the client is gone; still expected: {}", describe(&pending))
                    });
            let (parts, body) = request.into_parts();
            let query = query_map(parts.uri.query());
            let bytes = body.collect().await.expect("request body").to_bytes();
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let found = pending.iter_mut().find(|slot| {
                slot.as_ref().is_some_and(|ex| {
                    parts.method.as_str() == ex.method
                        && parts.uri.path() == ex.path
                        && ex.query.iter().all(|(k, v)| query.get(*k) == Some(v))
                        && ex
                            .body
                            .as_ref()
                            .is_none_or(|want| body.as_ref().is_some_and(|got| contains(got, want)))
                })
            });
            let Some(ex) = found.and_then(Option::take) else {
                if query.get("watch").map(String::as_str) == Some("true") {
                    hanging.push(respond);
                    continue;
                }
                panic!(
                    "unexpected request {} {} {query:?} {body:?}; expected one of: {}",
                    parts.method,
                    parts.uri.path(),
                    describe(&pending)
                );
            };
            let response = Response::builder()
                .status(ex.status)
                .header("content-type", "application/json")
                .body(Body::from(ex.response.into_bytes()))
                .expect("response");
            if ex.delay.is_zero() {
                respond.send_response(response);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(ex.delay).await;
                    respond.send_response(response);
                });
            }
        }
    })
}

fn describe(pending: &[Option<Exchange>]) -> String {
    pending
        .iter()
        .flatten()
        .map(|ex| format!("{} {} {:?} {:?}", ex.method, ex.path, ex.query, ex.body))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) async fn finish(server: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("every recorded exchange happened")
        .expect("every request was the one recorded");
}

pub(super) const POOLS: &str = "/apis/brindle.dev/v1/ippools";
const BLOCKS: &str = "/apis/brindle.dev/v1/ipamblocks";

/// Messages and tokens as the API server writes them.
const EXPIRED_CONTINUE: &str = concat!(
    "The provided continue parameter is too old to display a consistent list result. ",
    "You can start a new list without the continue parameter, or use the continue token in ",
    "this response to retrieve the remainder of the results. Continuing with the provided ",
    "token results in an inconsistent list - objects that were created, modified, or deleted ",
    "between the time the first chunk was returned and now may show up in the list.",
);
const MODIFIED: &str = concat!(
    "Operation cannot be fulfilled on ippools.brindle.dev \"default-ipv4-ippool\": ",
    "the object has been modified; please apply your changes to the latest version and try again",
);
const PRECONDITION: &str = concat!(
    "Operation cannot be fulfilled on ippools.brindle.dev \"default-ipv4-ippool\": ",
    "Precondition failed: ResourceVersion in precondition: 4711, ",
    "ResourceVersion in object meta: 4730",
);
pub(super) const ALREADY_EXISTS: &str =
    "ippools.brindle.dev \"default-ipv4-ippool\" already exists";
const POOL_NOT_FOUND: &str = "ippools.brindle.dev \"default-ipv4-ippool\" not found";
const TOKEN: &str = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgwMH0";

/// An object as the API server returns it: with uid, creationTimestamp, generation and
/// managedFields, none of which Brindle stores.
pub(super) fn recorded_object(kind: &str, name: &str, rv: u64, spec: Value) -> Value {
    json!({
        "apiVersion": "brindle.dev/v1",
        "kind": kind,
        "metadata": {
            "creationTimestamp": "2026-11-20T09:14:03Z",
            "generation": 1,
            "managedFields": [{
                "apiVersion": "brindle.dev/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": { "f:spec": { ".": {}, "f:cidr": {} } },
                "manager": "unknown",
                "operation": "Update",
                "time": "2026-11-20T09:14:03Z"
            }],
            "name": name,
            "resourceVersion": rv.to_string(),
            "uid": "5f0c8d6e-2b7a-4c1e-9d3f-7a8b9c0d1e2f"
        },
        "spec": spec
    })
}

pub(super) fn recorded_list(kind: &str, rv: u64, cont: Option<&str>, items: Vec<Value>) -> String {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if let Some(cont) = cont {
        metadata["continue"] = json!(cont);
        metadata["remainingItemCount"] = json!(1);
    }
    json!({
        "apiVersion": "brindle.dev/v1",
        "kind": format!("{kind}List"),
        "metadata": metadata,
        "items": items
    })
    .to_string()
}

pub(super) fn recorded_status(code: u16, reason: &str, message: &str) -> String {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
        "details": { "name": "default-ipv4-ippool", "group": "brindle.dev", "kind": "ippools" },
        "code": code
    })
    .to_string()
}

pub(super) fn watch_lines(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(type_, object)| format!("{}\n", json!({ "type": type_, "object": object })))
        .collect()
}

/// What Brindle writes and reads back: the resource without the server's fields.
fn brindle_value(kind: &str, name: &str, spec: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "brindle.dev/v1", "kind": kind, "metadata": { "name": name }, "spec": spec
    }))
    .expect("json")
}

fn pool_spec() -> Value {
    json!({
        "cidr": "10.244.0.0/16",
        "blockSize": 26,
        "ipipMode": "Never",
        "vxlanMode": "Always",
        "natOutgoing": true
    })
}

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("a watch event within 10 s")
        .expect("watch open")
}

#[tokio::test]
async fn kubernetes_recorded_create_get_list_across_pages() {
    let (store, handle) = mock_store();
    let spec = pool_spec();
    let name = "default-ipv4-ippool";
    let object = |rv| recorded_object("IPPool", name, rv, spec.clone()).to_string();
    let missing = recorded_status(404, "NotFound", "ippools.brindle.dev \"missing\" not found");
    let server = serve(
        handle,
        vec![
            exchange("POST", POOLS, 201, object(4711)).body(json!({
                "apiVersion": "brindle.dev/v1",
                "kind": "IPPool",
                "metadata": { "name": name },
                "spec": spec
            })),
            exchange("GET", &format!("{POOLS}/{name}"), 200, object(4711)),
            exchange("GET", &format!("{POOLS}/missing"), 404, missing),
            // A list of three in pages of two; the continue token expires once (410), and the
            // list starts over rather than mixing two snapshots.
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list(
                    "IPPool",
                    4800,
                    Some(TOKEN),
                    vec![
                        recorded_object("IPPool", "a", 4701, json!({"cidr": "10.1.0.0/16"})),
                        recorded_object("IPPool", "b", 4702, json!({"cidr": "10.2.0.0/16"})),
                    ],
                ),
            )
            .query("limit", "2"),
            exchange(
                "GET",
                POOLS,
                410,
                recorded_status(410, "Expired", EXPIRED_CONTINUE),
            )
            .query("continue", TOKEN),
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list(
                    "IPPool",
                    4900,
                    Some("c2"),
                    vec![
                        recorded_object("IPPool", "a", 4701, json!({"cidr": "10.1.0.0/16"})),
                        recorded_object("IPPool", "b", 4850, json!({"cidr": "10.2.0.0/16"})),
                    ],
                ),
            )
            .query("limit", "2"),
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list(
                    "IPPool",
                    4900,
                    None,
                    vec![recorded_object(
                        "IPPool",
                        "c",
                        4899,
                        json!({"cidr": "10.3.0.0/16"}),
                    )],
                ),
            )
            .query("continue", "c2"),
        ],
    );
    let value = brindle_value("IPPool", name, spec.clone());
    assert_eq!(
        store
            .create("IPPool", name, value.clone())
            .await
            .expect("create"),
        4711
    );
    let kv = store
        .get("IPPool", name)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((kv.name.as_str(), kv.revision), (name, 4711));
    assert_eq!(
        kv.value, value,
        "read back as written, without the server's fields"
    );
    assert_eq!(store.get("IPPool", "missing").await.expect("get"), None);
    let listing = store.list("IPPool").await.expect("list");
    assert_eq!(
        listing.revision, 4900,
        "the snapshot of the list that completed"
    );
    let got: Vec<_> = listing
        .items
        .iter()
        .map(|kv| (kv.name.as_str(), kv.revision))
        .collect();
    assert_eq!(got, [("a", 4701), ("b", 4850), ("c", 4899)]);
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_create_conflict_and_update_conflict_are_cas_failures() {
    let (store, handle) = mock_store();
    let name = "default-ipv4-ippool";
    let spec = pool_spec();
    let server = serve(
        handle,
        vec![
            exchange(
                "POST",
                POOLS,
                409,
                recorded_status(409, "AlreadyExists", ALREADY_EXISTS),
            ),
            // The update carries the revision it was read at.
            exchange(
                "PUT",
                &format!("{POOLS}/{name}"),
                409,
                recorded_status(409, "Conflict", MODIFIED),
            )
            .body(json!({ "metadata": { "name": name, "resourceVersion": "4711" }, "spec": spec })),
            exchange(
                "PUT",
                &format!("{POOLS}/{name}"),
                200,
                recorded_object("IPPool", name, 4730, spec.clone()).to_string(),
            )
            .body(json!({ "metadata": { "resourceVersion": "4720" } })),
            exchange(
                "PUT",
                &format!("{POOLS}/gone"),
                404,
                recorded_status(404, "NotFound", "ippools.brindle.dev \"gone\" not found"),
            ),
        ],
    );
    let value = brindle_value("IPPool", name, spec.clone());
    let err = store
        .create("IPPool", name, value.clone())
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    let err = store
        .update("IPPool", name, value.clone(), 4711)
        .await
        .expect_err("stale");
    assert!(
        matches!(err, StoreError::Conflict { expected: 4711, .. }) && err.is_conflict(),
        "{err}"
    );
    assert_eq!(
        store
            .update("IPPool", name, value.clone(), 4720)
            .await
            .expect("current"),
        4730
    );
    let err = store
        .update(
            "IPPool",
            "gone",
            brindle_value("IPPool", "gone", spec),
            4720,
        )
        .await
        .expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_delete_sends_the_revision_as_a_precondition() {
    let (store, handle) = mock_store();
    let name = "default-ipv4-ippool";
    let server = serve(
        handle,
        vec![
            exchange(
                "DELETE",
                &format!("{POOLS}/{name}"),
                409,
                recorded_status(409, "Conflict", PRECONDITION),
            )
            .body(json!({ "preconditions": { "resourceVersion": "4711" } })),
            exchange(
                "DELETE",
                &format!("{POOLS}/{name}"),
                200,
                recorded_object("IPPool", name, 4730, pool_spec()).to_string(),
            )
            .body(json!({ "preconditions": { "resourceVersion": "4730" } })),
            exchange(
                "DELETE",
                &format!("{POOLS}/{name}"),
                404,
                recorded_status(404, "NotFound", POOL_NOT_FOUND),
            ),
            // Expected revision 0 matches nothing: a read tells Conflict from NotFound, and
            // nothing is deleted.
            exchange(
                "GET",
                &format!("{POOLS}/other"),
                200,
                recorded_object("IPPool", "other", 4740, pool_spec()).to_string(),
            ),
        ],
    );
    let err = store
        .delete("IPPool", name, Some(4711))
        .await
        .expect_err("stale");
    assert!(
        matches!(err, StoreError::Conflict { expected: 4711, .. }),
        "{err}"
    );
    store
        .delete("IPPool", name, Some(4730))
        .await
        .expect("current");
    let err = store.delete("IPPool", name, None).await.expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store
        .delete("IPPool", "other", Some(0))
        .await
        .expect_err("revision 0");
    assert!(
        matches!(err, StoreError::Conflict { expected: 0, .. }),
        "{err}"
    );
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_watch_resumes_from_the_last_revision_seen() {
    let (store, handle) = mock_store();
    let spec = pool_spec();
    let server = serve(
        handle,
        vec![
            exchange(
                "GET",
                POOLS,
                200,
                watch_lines(&[
                    ("ADDED", recorded_object("IPPool", "p", 4712, spec.clone())),
                    (
                        "MODIFIED",
                        recorded_object("IPPool", "p", 4713, json!({"cidr": "10.9.0.0/16"})),
                    ),
                    (
                        "BOOKMARK",
                        json!({
                            "kind": "IPPool",
                            "apiVersion": "brindle.dev/v1",
                            "metadata": { "resourceVersion": "4720", "creationTimestamp": null }
                        }),
                    ),
                ]),
            )
            .query("watch", "true")
            .query("resourceVersion", "4711")
            .query("allowWatchBookmarks", "true"),
            // The stream ended (the server's timeout): resume after the bookmark. The object of
            // a DELETED event carries the revision of the delete.
            exchange(
                "GET",
                POOLS,
                200,
                watch_lines(&[(
                    "DELETED",
                    recorded_object("IPPool", "p", 4725, json!({"cidr": "10.9.0.0/16"})),
                )]),
            )
            .query("watch", "true")
            .query("resourceVersion", "4720"),
            exchange("GET", POOLS, 200, "")
                .query("watch", "true")
                .query("resourceVersion", "4725"),
        ],
    );
    let mut watch = store.watch(Some("IPPool"), 4711).await.expect("watch");
    match next(&mut watch).await {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.name.as_str(), kv.revision), ("p", 4712));
            assert_eq!(kv.value, brindle_value("IPPool", "p", spec));
        }
        other => panic!("expected the ADDED event, got {other:?}"),
    }
    assert!(matches!(next(&mut watch).await, WatchEvent::Put(kv) if kv.revision == 4713));
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Deleted {
            kind: "IPPool".to_string(),
            name: "p".to_string(),
            revision: 4725
        }
    );
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_watch_error_410_signals_resync_and_relists() {
    let (store, handle) = mock_store();
    let too_old = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "too old resource version: 4711 (4790)",
        "reason": "Expired",
        "code": 410
    });
    let current = json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": "5000", "continue": "x", "remainingItemCount": 3 },
        "items": [{
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {
                "name": "p",
                "resourceVersion": "4990",
                "uid": "5f0c8d6e-2b7a-4c1e-9d3f-7a8b9c0d1e2f",
                "creationTimestamp": "2026-11-20T09:14:03Z"
            }
        }]
    });
    let server = serve(
        handle,
        vec![
            // The API server's watch cache answers a too-old resourceVersion with one ERROR
            // event carrying a 410 Status.
            exchange("GET", POOLS, 200, watch_lines(&[("ERROR", too_old)]))
                .query("resourceVersion", "4711"),
            // The watch reads the current revision...
            exchange("GET", POOLS, 200, current.to_string()).query("limit", "1"),
            // ...and goes on from there after Resync.
            exchange(
                "GET",
                POOLS,
                200,
                watch_lines(&[(
                    "MODIFIED",
                    recorded_object("IPPool", "p", 5001, pool_spec()),
                )]),
            )
            .query("resourceVersion", "5000"),
            // The caller lists again.
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list(
                    "IPPool",
                    5001,
                    None,
                    vec![recorded_object("IPPool", "p", 5001, pool_spec())],
                ),
            )
            .query("limit", "2"),
        ],
    );
    let mut watch = store.watch(Some("IPPool"), 4711).await.expect("watch");
    assert_eq!(next(&mut watch).await, WatchEvent::Resync);
    assert!(matches!(next(&mut watch).await, WatchEvent::Put(kv) if kv.revision == 5001));
    let listing = store.list("IPPool").await.expect("relist");
    assert_eq!(listing.revision, 5001);
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_watch_http_410_signals_resync() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![
            // Some API servers (no watch cache) refuse the watch call itself with 410 Gone.
            exchange(
                "GET",
                POOLS,
                410,
                recorded_status(410, "Expired", "too old resource version: 4711 (4790)"),
            )
            .query("resourceVersion", "4711"),
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list("IPPool", 5000, None, vec![]),
            )
            .query("limit", "1"),
            exchange("GET", POOLS, 200, "").query("resourceVersion", "5000"),
        ],
    );
    let mut watch = store.watch(Some("IPPool"), 4711).await.expect("watch");
    assert_eq!(next(&mut watch).await, WatchEvent::Resync);
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_names_are_mapped_to_dns1123_and_back() {
    let (store, handle) = mock_store();
    let name = "10.244.0.0/26";
    let k8s = "x--10-2e244-2e0-2e0-2f26";
    let spec = json!({
        "cidr": "10.244.0.0/26",
        "allocations": [null],
        "unallocated": [0],
        "attributes": []
    });
    let server = serve(
        handle,
        vec![
            exchange(
                "POST",
                BLOCKS,
                201,
                recorded_object("IPAMBlock", k8s, 4800, spec.clone()).to_string(),
            )
            .body(json!({ "metadata": { "name": k8s } })),
            exchange(
                "GET",
                &format!("{BLOCKS}/{k8s}"),
                200,
                recorded_object("IPAMBlock", k8s, 4800, spec.clone()).to_string(),
            ),
            exchange(
                "GET",
                BLOCKS,
                200,
                recorded_list(
                    "IPAMBlock",
                    4801,
                    None,
                    vec![
                        recorded_object("IPAMBlock", k8s, 4800, spec.clone()),
                        recorded_object("IPAMBlock", "10-244-0-64-26", 4801, spec.clone()),
                        // Made with kubectl: a second spelling of "abc", not a record.
                        recorded_object("IPAMBlock", "x--abc", 4799, spec.clone()),
                    ],
                ),
            ),
        ],
    );
    store
        .create(
            "IPAMBlock",
            name,
            brindle_value("IPAMBlock", name, spec.clone()),
        )
        .await
        .expect("create");
    let kv = store
        .get("IPAMBlock", name)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(kv.name, name);
    assert_eq!(kv.value, brindle_value("IPAMBlock", name, spec));
    let names: Vec<_> = store
        .list("IPAMBlock")
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|kv| kv.name)
        .collect();
    assert_eq!(names, [name, "10-244-0-64-26"]);
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_non_numeric_resource_version_is_a_clear_error() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![exchange("GET", &format!("{POOLS}/p"), 200, {
            let mut obj = recorded_object("IPPool", "p", 1, pool_spec());
            obj["metadata"]["resourceVersion"] = json!("MTIzNA==");
            obj.to_string()
        })],
    );
    let err = store.get("IPPool", "p").await.expect_err("opaque RV");
    let text = err.to_string();
    assert!(
        text.contains("\"MTIzNA==\"") && text.contains("not a number"),
        "{text}"
    );
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_values_must_be_resources_and_names_storable() {
    // Neither reaches the API server: the mock answers nothing.
    let (store, _handle) = mock_store();
    let err = store
        .create("IPPool", "p", b"first".to_vec())
        .await
        .expect_err("not JSON");
    assert!(
        err.to_string()
            .contains("must be a JSON object with a spec"),
        "{err}"
    );
    let err = store
        .create(
            "IPPool",
            "p",
            br#"{"apiVersion":"brindle.dev/v1","kind":"IPPool","metadata":{"name":"p"}}"#.to_vec(),
        )
        .await
        .expect_err("no spec");
    assert!(err.to_string().contains("no spec"), "{err}");
    let long = "A".repeat(200);
    let err = store
        .create("IPPool", &long, brindle_value("IPPool", &long, pool_spec()))
        .await
        .expect_err("too long");
    assert!(err.to_string().contains("limit is 253"), "{err}");
    let err = store.get("IP/Pool", "p").await.expect_err("bad kind");
    assert!(err.to_string().contains("invalid kind"), "{err}");
}

#[tokio::test]
async fn kubernetes_recorded_watch_from_revision_zero_starts_with_resync() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list("IPPool", 5000, None, vec![]),
            )
            .query("limit", "1"),
            exchange("GET", POOLS, 200, "")
                .query("watch", "true")
                .query("resourceVersion", "5000"),
        ],
    );
    let mut watch = store.watch(Some("IPPool"), 0).await.expect("watch");
    assert_eq!(next(&mut watch).await, WatchEvent::Resync);
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_watch_of_every_kind_merges_streams_by_revision() {
    let (store, handle) = mock_store();
    let nodes = "/apis/brindle.dev/v1/nodes";
    // The IPPool stream delivers revision 4712 first; the Node stream's 4711 arrives 20 ms
    // later (each resource has its own watch cache). The merged watch still gives 4711 first.
    let server = serve(
        handle,
        vec![
            exchange(
                "GET",
                POOLS,
                200,
                watch_lines(&[("ADDED", recorded_object("IPPool", "p", 4712, pool_spec()))]),
            )
            .query("resourceVersion", "4710"),
            exchange(
                "GET",
                nodes,
                200,
                watch_lines(&[("ADDED", recorded_object("Node", "n1", 4711, json!({})))]),
            )
            .query("resourceVersion", "4710")
            .delay(Duration::from_millis(20)),
        ],
    );
    let mut watch = store.watch(None, 4710).await.expect("watch");
    let first = next(&mut watch).await;
    let second = next(&mut watch).await;
    let order: Vec<_> = [first, second]
        .into_iter()
        .map(|ev| match ev {
            WatchEvent::Put(kv) => (kv.kind, kv.revision),
            other => panic!("expected a put, got {other:?}"),
        })
        .collect();
    assert_eq!(
        order,
        [("Node".to_string(), 4711), ("IPPool".to_string(), 4712)]
    );
    finish(server).await;
}

#[tokio::test]
async fn kubernetes_recorded_missing_crd_says_to_install_it() {
    let (store, handle) = mock_store();
    let missing = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "details": {},
        "code": 404
    });
    let server = serve(
        handle,
        vec![exchange("GET", POOLS, 404, missing.to_string()).query("limit", "2")],
    );
    let err = store.list("IPPool").await.expect_err("no CRD");
    let text = err.to_string();
    assert!(
        text.contains("ippools.brindle.dev") && text.contains("manifests/crds.yaml"),
        "{text}"
    );
    finish(server).await;
}

/// Never a partial list: a later page failing (503, an API server going down mid-list) fails
/// the whole list with `Unavailable`, and the first page's items are not returned. The
/// controller keeps its previous view and the kernel its routes (controller.rs).
#[tokio::test]
async fn kubernetes_recorded_list_failing_on_a_later_page_is_an_error_not_a_partial_list() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![
            exchange(
                "GET",
                POOLS,
                200,
                recorded_list(
                    "IPPool",
                    4800,
                    Some(TOKEN),
                    vec![
                        recorded_object("IPPool", "a", 4701, json!({"cidr": "10.1.0.0/16"})),
                        recorded_object("IPPool", "b", 4702, json!({"cidr": "10.2.0.0/16"})),
                    ],
                ),
            )
            .query("limit", "2"),
            exchange(
                "GET",
                POOLS,
                503,
                recorded_status(503, "ServiceUnavailable", "etcdserver: leader changed"),
            )
            .query("continue", TOKEN),
        ],
    );
    let err = store
        .list("IPPool")
        .await
        .expect_err("a list missing its last page");
    assert!(
        matches!(err, StoreError::Unavailable(_)),
        "unavailable (retryable), not {err:?}"
    );
    finish(server).await;
}
