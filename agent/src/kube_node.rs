//! What `brindle-node` reads of its own Kubernetes Node (core `v1/nodes`, verbs `get` and
//! `watch`): the address behind `--ip-autodetection-method kubernetes-internal-ip`.
//!
//! As calico-node does, the address is the first `InternalIP` entry of `status.addresses` of
//! the family, and its prefix length comes from the local interface holding it (the Node object
//! carries no prefix, and CrossSubnet needs one). [`follow_internal_ipv4`] watches the Node
//! afterwards, so that a changed InternalIP moves the node address as a changed interface
//! address does under the other methods (the controller re-evaluates it, see
//! `controller::Redetect`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Node;
use kube::api::WatchParams;
use kube::core::WatchEvent;
use kube::Api;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The autodetection method that asks the Kubernetes Node.
pub const KUBERNETES_INTERNAL_IP: &str = "kubernetes-internal-ip";

/// Why the Node's address could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KubeNodeError {
    #[error(
        "kubernetes-internal-ip needs --datastore kubernetes \
         (the node's address is read from its Kubernetes Node)"
    )]
    NotKubernetes,
    #[error("reading the Kubernetes Node {node:?}: {reason}")]
    Api { node: String, reason: String },
    #[error("the Kubernetes Node {node:?} has no IPv4 InternalIP in status.addresses")]
    NoInternalIp { node: String },
    #[error("the Kubernetes Node {node:?} has InternalIP {ip}, which no local interface holds")]
    NotLocal { node: String, ip: Ipv4Addr },
}

/// The first IPv4 `InternalIP` of the Node named `node`.
pub async fn internal_ipv4(client: &kube::Client, node: &str) -> Result<Ipv4Addr, KubeNodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let object = api.get(node).await.map_err(|e| KubeNodeError::Api {
        node: node.to_string(),
        reason: match e {
            kube::Error::Api(status) => {
                format!("{} {}: {}", status.code, status.reason, status.message)
            }
            other => other.to_string(),
        },
    })?;
    first_internal_ipv4(&object).ok_or_else(|| KubeNodeError::NoInternalIp {
        node: node.to_string(),
    })
}

/// The server-side timeout of each watch call on the Node; the watch is then made again.
const WATCH_TIMEOUT_SECS: u32 = 290;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Follows the first IPv4 `InternalIP` of the Node named `node` until `tx` has no receiver:
/// a `get`, then a watch of that one Node (field selector `metadata.name`) from its
/// resourceVersion. Every change of the address is sent into `tx`; a Node without one, or
/// deleted, leaves the last address in place. After any failure (API server unreachable, 410
/// Gone) the Node is read again, backing off up to 10 s: an outage changes nothing.
pub async fn follow_internal_ipv4(
    client: kube::Client,
    node: String,
    tx: watch::Sender<Option<Ipv4Addr>>,
) {
    let api: Api<Node> = Api::all(client);
    let mut backoff = MIN_BACKOFF;
    loop {
        if tx.is_closed() {
            return;
        }
        match api.get(&node).await {
            Ok(object) => {
                publish(&tx, &node, &object);
                let rv = object.metadata.resource_version.unwrap_or_default();
                let why = watch_node(&api, &node, rv, &tx).await;
                debug!(%node, reason = %why, "watch of the Kubernetes Node ended; reading it again");
            }
            Err(e) => {
                debug!(%node, error = %e, retry_in = ?backoff, "reading the Kubernetes Node failed; keeping the node address");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Watches the Node from `rv`, reconnecting after the server's timeout, until a call fails;
/// returns why.
async fn watch_node(
    api: &Api<Node>,
    node: &str,
    mut rv: String,
    tx: &watch::Sender<Option<Ipv4Addr>>,
) -> String {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={node}"))
        .timeout(WATCH_TIMEOUT_SECS);
    loop {
        let stream = match api.watch(&params, &rv).await {
            Ok(stream) => stream,
            Err(e) => return e.to_string(),
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                    if let Some(v) = &object.metadata.resource_version {
                        rv.clone_from(v);
                    }
                    publish(tx, node, &object);
                }
                Ok(WatchEvent::Deleted(_)) => {
                    warn!(%node, "the Kubernetes Node was deleted; keeping the node address");
                }
                Ok(WatchEvent::Bookmark(bookmark)) => rv = bookmark.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    return format!("{} {}: {}", e.code, e.reason, e.message)
                }
                Err(e) => return e.to_string(),
            }
            if tx.is_closed() {
                return "no receiver".to_string();
            }
        }
    }
}

/// Sends the Node's InternalIP into `tx` if it is one and differs from the last one sent.
fn publish(tx: &watch::Sender<Option<Ipv4Addr>>, node: &str, object: &Node) {
    let Some(ip) = first_internal_ipv4(object) else {
        warn!(%node, "the Kubernetes Node has no IPv4 InternalIP; keeping the node address");
        return;
    };
    tx.send_if_modified(|current| {
        if *current == Some(ip) {
            return false;
        }
        if let Some(old) = current {
            info!(%node, from = %old, to = %ip, "the Kubernetes Node's InternalIP changed");
        }
        *current = Some(ip);
        true
    });
}

/// The first `InternalIP` of a Node that parses as IPv4.
pub fn first_internal_ipv4(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| match a.address.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        })
}

/// `ip` with the prefix length of the local interface address equal to it, from `addrs`
/// (interface name, address) as the dataplane lists them.
pub fn with_local_prefix(
    node: &str,
    ip: Ipv4Addr,
    addrs: &[(String, IpNet)],
) -> Result<Ipv4Net, KubeNodeError> {
    addrs
        .iter()
        .find_map(|(_, net)| match net {
            IpNet::V4(n) if n.addr() == ip => Some(*n),
            _ => None,
        })
        .ok_or_else(|| KubeNodeError::NotLocal {
            node: node.to_string(),
            ip,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addresses: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "worker-1" },
            "status": { "addresses": addresses }
        }))
        .expect("a Node")
    }

    #[test]
    fn first_ipv4_internal_ip_is_taken() {
        let n = node(serde_json::json!([
            { "type": "Hostname", "address": "worker-1" },
            { "type": "ExternalIP", "address": "203.0.113.7" },
            { "type": "InternalIP", "address": "fd00::7" },
            { "type": "InternalIP", "address": "10.0.0.7" },
            { "type": "InternalIP", "address": "10.0.1.7" }
        ]));
        assert_eq!(first_internal_ipv4(&n), Some(Ipv4Addr::new(10, 0, 0, 7)));
        let none = node(serde_json::json!([{ "type": "Hostname", "address": "worker-1" }]));
        assert_eq!(first_internal_ipv4(&none), None);
    }

    #[test]
    fn prefix_comes_from_the_local_interface() {
        let addrs: Vec<(String, IpNet)> = vec![
            ("lo".into(), "127.0.0.1/8".parse().expect("net")),
            ("eth0".into(), "10.0.0.7/24".parse().expect("net")),
        ];
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(
            with_local_prefix("worker-1", ip, &addrs).expect("local"),
            "10.0.0.7/24".parse::<Ipv4Net>().expect("net")
        );
        let err = with_local_prefix("worker-1", Ipv4Addr::new(10, 9, 9, 9), &addrs)
            .expect_err("not local")
            .to_string();
        assert!(
            err.contains("10.9.9.9") && err.contains("no local interface"),
            "{err}"
        );
    }
}
