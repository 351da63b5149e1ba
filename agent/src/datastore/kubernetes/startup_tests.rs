//! `brindle-node`'s start-up calls on a Kubernetes cluster against RECORDED API-server exchanges
//! (tests.rs explains the mock): the default IP pool on an empty cluster, on a cluster that has
//! pools, and when another node creates it first; the Node's InternalIP for
//! `kubernetes-internal-ip`, and its changes followed by a watch.

use std::net::Ipv4Addr;
use std::sync::Arc;

use brindle_ipam::store::Store;
use serde_json::json;

use super::tests::{
    exchange, finish, mock_store, recorded_list, recorded_object, recorded_status, serve,
    watch_lines, ALREADY_EXISTS, POOLS,
};
use crate::default_pools::{DefaultPoolsConfig, DEFAULT_IPV4_POOL};
use crate::kube_node;

/// The environment of manifests/brindle.yaml's DaemonSet.
fn manifest_env() -> DefaultPoolsConfig {
    DefaultPoolsConfig::from_env(|var| {
        match var {
            "CALICO_IPV4POOL_CIDR" => Some("10.244.0.0/16"),
            "BRINDLE_IPV4POOL_VXLAN" => Some("CrossSubnet"),
            _ => None,
        }
        .map(str::to_string)
    })
    .expect("valid environment")
}

fn empty_pool_list(rv: u64) -> String {
    recorded_list("IPPool", rv, None, Vec::new())
}

/// What the API server answers a create with: the object and its fields.
fn created_pool(rv: u64) -> String {
    recorded_object(
        "IPPool",
        DEFAULT_IPV4_POOL,
        rv,
        json!({
            "cidr": "10.244.0.0/16", "ipipMode": "Never", "vxlanMode": "CrossSubnet",
            "natOutgoing": true, "disabled": false, "disableBGPExport": false
        }),
    )
    .to_string()
}

#[tokio::test]
async fn startup_on_an_empty_cluster_creates_the_default_pool() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![
            exchange("GET", POOLS, 200, empty_pool_list(5000)),
            // The pool as the user would see it in `kubectl get ippools -o yaml`.
            exchange("POST", POOLS, 201, created_pool(5001)).body(json!({
                "apiVersion": "brindle.dev/v1",
                "kind": "IPPool",
                "metadata": { "name": "default-ipv4-ippool" },
                "spec": {
                    "cidr": "10.244.0.0/16",
                    "ipipMode": "Never",
                    "vxlanMode": "CrossSubnet",
                    "natOutgoing": true,
                    "disabled": false
                }
            })),
        ],
    );
    let store: Arc<dyn Store> = Arc::new(store);
    let created = manifest_env().ensure(&store).await.expect("start-up");
    assert_eq!(created, [DEFAULT_IPV4_POOL]);
    finish(server).await;
}

#[tokio::test]
async fn startup_leaves_a_cluster_with_a_pool_alone() {
    let (store, handle) = mock_store();
    // A pool the user made: no POST may follow (the mock fails any request not recorded).
    let server = serve(
        handle,
        vec![exchange(
            "GET",
            POOLS,
            200,
            recorded_list(
                "IPPool",
                6000,
                None,
                vec![recorded_object(
                    "IPPool",
                    "user-pool",
                    5990,
                    json!({"cidr": "10.96.0.0/12", "ipipMode": "Always"}),
                )],
            ),
        )],
    );
    let store: Arc<dyn Store> = Arc::new(store);
    let created = manifest_env().ensure(&store).await.expect("start-up");
    assert!(created.is_empty(), "created {created:?}");
    finish(server).await;
}

#[tokio::test]
async fn startup_when_another_node_created_the_pool_first() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![
            exchange("GET", POOLS, 200, empty_pool_list(7000)),
            exchange(
                "POST",
                POOLS,
                409,
                recorded_status(409, "AlreadyExists", ALREADY_EXISTS),
            ),
        ],
    );
    let store: Arc<dyn Store> = Arc::new(store);
    let created = manifest_env()
        .ensure(&store)
        .await
        .expect("a lost race is fine");
    assert!(created.is_empty(), "created {created:?}");
    finish(server).await;
}

#[tokio::test]
async fn startup_fails_clearly_without_the_crds() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![exchange(
            "GET",
            POOLS,
            404,
            recorded_status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        )],
    );
    let store: Arc<dyn Store> = Arc::new(store);
    let err = manifest_env()
        .ensure(&store)
        .await
        .expect_err("no CRDs")
        .to_string();
    assert!(err.contains("manifests/crds.yaml"), "{err}");
    finish(server).await;
}

/// A Node as the API server returns it (trimmed of most status fields).
fn recorded_node(name: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" },
            "resourceVersion": "81234",
            "uid": "0b6d3c1e-8f2a-4d5b-9c7e-1a2b3c4d5e6f"
        },
        "spec": { "podCIDR": "10.244.3.0/24" },
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": "fd00:10::7" },
                { "type": "InternalIP", "address": "10.0.0.7" },
                { "type": "Hostname", "address": name }
            ],
            "nodeInfo": { "kubeletVersion": "v1.34.1", "osImage": "Debian GNU/Linux 13 (trixie)" }
        }
    })
    .to_string()
}

#[tokio::test]
async fn node_internal_ip_from_the_kubernetes_node() {
    let (store, handle) = mock_store();
    let server = serve(
        handle,
        vec![
            exchange(
                "GET",
                "/api/v1/nodes/worker-7",
                200,
                recorded_node("worker-7"),
            ),
            exchange(
                "GET",
                "/api/v1/nodes/ghost",
                404,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "nodes \"ghost\" not found", "reason": "NotFound",
                    "details": { "name": "ghost", "kind": "nodes" }, "code": 404
                })
                .to_string(),
            ),
        ],
    );
    let client = store.client();
    let ip = kube_node::internal_ipv4(&client, "worker-7")
        .await
        .expect("InternalIP");
    assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 7));
    let err = kube_node::internal_ipv4(&client, "ghost")
        .await
        .expect_err("no such node")
        .to_string();
    assert!(
        err.contains("\"ghost\"") && err.contains("404"),
        "names the node and the status: {err}"
    );
    finish(server).await;
}

/// The kubelet's Node with `ip` as its IPv4 InternalIP, at resourceVersion `rv`.
fn recorded_node_with(name: &str, ip: &str, rv: u64) -> serde_json::Value {
    let mut node: serde_json::Value =
        serde_json::from_str(&recorded_node(name)).expect("recorded node");
    node["metadata"]["resourceVersion"] = json!(rv.to_string());
    node["status"]["addresses"][1]["address"] = json!(ip);
    node
}

/// `kubernetes-internal-ip` after start-up, against recorded exchanges: the Node is read, then
/// watched from its resourceVersion (field selector on its name); a MODIFIED event with a new
/// InternalIP is passed on; after 410 Gone the Node is read again, a 503 meanwhile changes
/// nothing, and the address read afterwards is passed on.
#[tokio::test]
async fn node_internal_ip_followed_by_a_watch_through_410_and_503() {
    let (store, handle) = mock_store();
    const NODE: &str = "/api/v1/nodes/worker-7";
    const NODES: &str = "/api/v1/nodes";
    let unavailable = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server is currently unable to handle the request",
        "reason": "ServiceUnavailable", "code": 503
    });
    let expired = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 81300 (81350)", "reason": "Expired", "code": 410
    });
    let server = serve(
        handle,
        vec![
            exchange("GET", NODE, 200, recorded_node("worker-7")),
            exchange(
                "GET",
                NODES,
                200,
                watch_lines(&[
                    (
                        "MODIFIED",
                        recorded_node_with("worker-7", "10.0.0.8", 81300),
                    ),
                    ("ERROR", expired),
                ]),
            )
            .query("watch", "true")
            .query("resourceVersion", "81234")
            .query("fieldSelector", "metadata.name%3Dworker-7"),
            exchange("GET", NODE, 503, unavailable.to_string()),
            exchange(
                "GET",
                NODE,
                200,
                recorded_node_with("worker-7", "10.0.0.9", 81400).to_string(),
            ),
            // Then watched from there: the recorded server leaves that watch hanging.
        ],
    );
    let client = store.client();
    let (tx, mut rx) = tokio::sync::watch::channel(Some(Ipv4Addr::new(10, 0, 0, 7)));
    let follow = tokio::spawn(kube_node::follow_internal_ipv4(
        client,
        "worker-7".to_string(),
        tx,
    ));
    let mut seen = Vec::new();
    while seen.last() != Some(&Ipv4Addr::new(10, 0, 0, 9)) {
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
            .await
            .expect("a change within 10 s")
            .expect("the follower runs");
        seen.extend(*rx.borrow_and_update());
    }
    // The first read gave the address already known: no change; the 503 none either.
    assert_eq!(
        seen,
        [Ipv4Addr::new(10, 0, 0, 8), Ipv4Addr::new(10, 0, 0, 9)]
    );
    finish(server).await;
    follow.abort();
}
