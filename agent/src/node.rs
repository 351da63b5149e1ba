//! This node's identity: its address, its Node resource, its VXLAN and IPIP tunnel addresses.

use std::sync::Arc;

use brindle_ipam::store::{Store, StoreError, StoreExt};
use brindle_ipam::{AssignRequest, Ipam, IpamError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::dataplane::{format_mac, vtep_mac, Dataplane, DataplaneError};
use crate::model::{AllowedUse, EncapMode, IpPoolSpec, NodeBgpSpec, NodeSpec, Object};

/// Interfaces never chosen by `first-found` (Calico's list, with Brindle's own devices).
const EXCLUDED_PREFIXES: &[&str] = &[
    "docker",
    "cbr",
    "dummy",
    "podman",
    "virbr",
    "lxcbr",
    "veth",
    "lo",
    "br-",
    "brd",
    "cali",
    "tunl",
    "flannel",
    "kube-ipvs",
    "cni",
    "vxlan",
    "wireguard",
    "nodelocaldns",
];

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no usable IPv4 address found (first-found skips {skipped}); pass --node-ip")]
    NoAddress { skipped: String },
    #[error("--node-ip {0}: not on any local interface")]
    AddressNotLocal(Ipv4Net),
    #[error("--node-ip6 {0}: not on any local interface")]
    Address6NotLocal(Ipv6Net),
    #[error("dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("datastore: {0}")]
    Store(#[from] StoreError),
    #[error("IPAM: {0}")]
    Ipam(#[from] IpamError),
    #[error("Node {0}: gave up after repeated concurrent modifications")]
    Contention(String),
}

/// The handle of a node's VXLAN tunnel address, as Calico names it.
pub fn vxlan_tunnel_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// The handle of a node's IPIP tunnel address, as Calico names it.
pub fn ipip_tunnel_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// Picks the node address: the one given, with the interface holding it, or the first global
/// unicast IPv4 address on an interface that is not virtual (Calico's `first-found`).
pub async fn detect_address(
    dataplane: &Dataplane,
    given: Option<Ipv4Net>,
) -> Result<(Ipv4Net, String), NodeError> {
    let addrs = dataplane.addresses().await?;
    if let Some(given) = given {
        return addrs
            .into_iter()
            .find_map(|(ifname, net)| match net {
                IpNet::V4(n) if n.addr() == given.addr() => Some((given, ifname)),
                _ => None,
            })
            .ok_or(NodeError::AddressNotLocal(given));
    }
    addrs
        .into_iter()
        .filter(|(ifname, _)| !EXCLUDED_PREFIXES.iter().any(|p| ifname.starts_with(p)))
        .find_map(|(ifname, net)| match net {
            IpNet::V4(n)
                if !n.addr().is_loopback()
                    && !n.addr().is_link_local()
                    && !n.addr().is_multicast() =>
            {
                Some((n, ifname))
            }
            _ => None,
        })
        .ok_or_else(|| NodeError::NoAddress {
            skipped: EXCLUDED_PREFIXES.join(","),
        })
}

/// Picks the node's IPv6 address: the one given (which must be local), or the first global
/// IPv6 address on `uplink`, the interface holding the IPv4 node address. `None` when the uplink
/// has none: IPv6 blocks of unencapsulated pools then have no route to this node.
pub async fn detect_address_v6(
    dataplane: &Dataplane,
    given: Option<Ipv6Net>,
    uplink: &str,
) -> Result<Option<Ipv6Net>, NodeError> {
    let addrs = dataplane.addresses().await?;
    if let Some(given) = given {
        return addrs
            .into_iter()
            .find_map(|(_, net)| match net {
                IpNet::V6(n) if n.addr() == given.addr() => Some(Some(given)),
                _ => None,
            })
            .ok_or(NodeError::Address6NotLocal(given));
    }
    Ok(addrs
        .into_iter()
        .filter(|(ifname, _)| ifname == uplink)
        .find_map(|(_, net)| match net {
            IpNet::V6(n) if is_global_v6(&n.addr()) => Some(n),
            _ => None,
        }))
}

/// Not loopback, link-local, multicast or unspecified.
fn is_global_v6(a: &std::net::Ipv6Addr) -> bool {
    !a.is_loopback()
        && !a.is_multicast()
        && !a.is_unspecified()
        && (a.segments()[0] & 0xffc0) != 0xfe80
}

/// Creates or updates this node's Node resource with its addresses and VTEP MAC.
pub async fn register(
    store: &Arc<dyn Store>,
    name: &str,
    address: Ipv4Net,
    address_v6: Option<Ipv6Net>,
) -> Result<Object<NodeSpec>, NodeError> {
    let mac = format_mac(&vtep_mac(name));
    update_node(store, name, |spec| {
        let bgp = spec.bgp.get_or_insert_with(NodeBgpSpec::default);
        bgp.ipv4_address = Some(address.to_string());
        bgp.ipv6_address = address_v6.map(|a| a.to_string());
        spec.vxlan_tunnel_mac_addr = Some(mac.clone());
    })
    .await
}

/// Read-modify-write of this node's Node resource, retried on conflicts.
async fn update_node(
    store: &Arc<dyn Store>,
    name: &str,
    change: impl Fn(&mut NodeSpec),
) -> Result<Object<NodeSpec>, NodeError> {
    for _ in 0..100 {
        let result = match store.get_obj::<NodeSpec>(name).await? {
            Some(mut node) => {
                let before = node.spec.clone();
                change(&mut node.spec);
                if node.spec == before {
                    return Ok(node);
                }
                store.update_obj(&node).await
            }
            None => {
                let mut spec = NodeSpec::default();
                change(&mut spec);
                store.create_obj(&Object::new(name, spec)).await
            }
        };
        match result {
            Ok(node) => return Ok(node),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(NodeError::Contention(name.to_string()))
}

/// Makes sure the node has a VXLAN tunnel address when some pool uses VXLAN, allocated from
/// such a pool under the node's tunnel handle; and none when no pool does.
pub async fn ensure_vxlan_tunnel(
    store: &Arc<dyn Store>,
    ipam: &Ipam,
    name: &str,
    pools: &[&Object<IpPoolSpec>],
) -> Result<Object<NodeSpec>, NodeError> {
    let vxlan_pools: Vec<String> = pools
        .iter()
        .filter(|p| {
            p.spec.vxlan_mode != EncapMode::Never
                && !p.spec.disabled
                && matches!(p.spec.cidr, IpNet::V4(_))
                && p.spec.allows(AllowedUse::Tunnel)
        })
        .map(|p| p.metadata.name.clone())
        .collect();
    let handle = vxlan_tunnel_handle(name);
    if vxlan_pools.is_empty() {
        ipam.release_by_handle(&handle).await?;
        return update_node(store, name, |spec| spec.ipv4_vxlan_tunnel_addr = None).await;
    }
    // Idempotent: the handle's existing address comes back when it has one.
    let ips = ipam
        .auto_assign(&AssignRequest {
            handle_id: handle,
            node: name.to_string(),
            num: 1,
            attrs: [
                ("node".to_string(), name.to_string()),
                ("type".to_string(), "vxlanTunnelAddress".to_string()),
            ]
            .into(),
            use_: AllowedUse::Tunnel,
            pools: Some(vxlan_pools),
            ..AssignRequest::default()
        })
        .await?;
    let addr = ips.first().map(|ip| ip.addr().to_string());
    update_node(store, name, |spec| {
        spec.ipv4_vxlan_tunnel_addr.clone_from(&addr)
    })
    .await
}

/// Makes sure the node has an IPIP tunnel address (`spec.bgp.ipv4IPIPTunnelAddr`) when some
/// enabled IPv4 pool uses IPIP, allocated from such a pool under the handle
/// `ipip-tunnel-addr-<node>` (Calico's); and none when no pool does.
pub async fn ensure_ipip_tunnel(
    store: &Arc<dyn Store>,
    ipam: &Ipam,
    name: &str,
    pools: &[&Object<IpPoolSpec>],
) -> Result<Object<NodeSpec>, NodeError> {
    let ipip_pools: Vec<String> = pools
        .iter()
        .filter(|p| {
            p.spec.ipip_mode != EncapMode::Never
                && !p.spec.disabled
                && matches!(p.spec.cidr, IpNet::V4(_))
                && p.spec.allows(AllowedUse::Tunnel)
        })
        .map(|p| p.metadata.name.clone())
        .collect();
    let handle = ipip_tunnel_handle(name);
    if ipip_pools.is_empty() {
        ipam.release_by_handle(&handle).await?;
        return update_node(store, name, |spec| {
            if let Some(bgp) = spec.bgp.as_mut() {
                bgp.ipv4_ipip_tunnel_addr = None;
            }
        })
        .await;
    }
    // Idempotent: the handle's existing address comes back when it has one.
    let ips = ipam
        .auto_assign(&AssignRequest {
            handle_id: handle,
            node: name.to_string(),
            num: 1,
            attrs: [
                ("node".to_string(), name.to_string()),
                ("type".to_string(), "ipipTunnelAddress".to_string()),
            ]
            .into(),
            use_: AllowedUse::Tunnel,
            pools: Some(ipip_pools),
            ..AssignRequest::default()
        })
        .await?;
    let addr = ips.first().map(|ip| ip.addr().to_string());
    update_node(store, name, |spec| {
        spec.bgp
            .get_or_insert_with(NodeBgpSpec::default)
            .ipv4_ipip_tunnel_addr
            .clone_from(&addr)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam_tools::Snapshot;
    use brindle_ipam::store::MemStore;

    async fn with_pool(ipip: &str, vxlan: &str) -> (Arc<dyn Store>, Ipam, Object<IpPoolSpec>) {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let spec: IpPoolSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.244.0.0/16", "ipipMode": ipip, "vxlanMode": vxlan,
        }))
        .expect("pool");
        let pool = store
            .create_obj(&Object::new("p", spec))
            .await
            .expect("pool created");
        let address = "10.0.0.1/24".parse().expect("cidr");
        register(&store, "n1", address, None)
            .await
            .expect("registered");
        let ipam = Ipam::new(store.clone());
        (store, ipam, pool)
    }

    fn ipip_addr(node: &Object<NodeSpec>) -> Option<std::net::IpAddr> {
        node.spec
            .bgp
            .as_ref()?
            .ipv4_ipip_tunnel_addr
            .as_deref()?
            .parse()
            .ok()
    }

    #[tokio::test]
    async fn an_ipip_pool_gives_the_node_a_tunnel_address_that_is_no_leak() {
        let (store, ipam, pool) = with_pool("Always", "Never").await;
        let node = ensure_ipip_tunnel(&store, &ipam, "n1", &[&pool])
            .await
            .expect("allocated");
        let addr = ipip_addr(&node).expect("an IPIP tunnel address");
        assert!(pool.spec.cidr.contains(&addr), "{addr}");
        assert_eq!(
            node.spec
                .bgp
                .as_ref()
                .and_then(|b| b.ipv4_address.clone())
                .as_deref(),
            Some("10.0.0.1/24")
        );
        let again = ensure_ipip_tunnel(&store, &ipam, "n1", &[&pool])
            .await
            .expect("idempotent");
        assert_eq!(ipip_addr(&again), Some(addr));

        let snap = Snapshot::load(store.as_ref()).await.expect("snapshot");
        let allocs = snap.allocations();
        assert_eq!(allocs.len(), 1, "{allocs:?}");
        assert_eq!(allocs[0].handle.as_deref(), Some("ipip-tunnel-addr-n1"));
        assert_eq!(
            allocs[0].attrs.get("type").map(String::as_str),
            Some("ipipTunnelAddress")
        );
        let shared = crate::controller::Shared::default();
        assert!(crate::ipam_gc::local_leaks(&snap, "n1", &shared).is_empty());
        let mut out = Vec::new();
        let report = crate::ipam_tools::check(store.as_ref(), &mut out, true)
            .await
            .expect("check");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(report.problems(), 0, "{text}");
        assert!(text.contains("Found 1 node tunnel IPs."), "{text}");
    }

    #[tokio::test]
    async fn the_ipip_tunnel_address_goes_when_no_pool_uses_ipip() {
        let (store, ipam, mut pool) = with_pool("CrossSubnet", "Never").await;
        let node = ensure_ipip_tunnel(&store, &ipam, "n1", &[&pool])
            .await
            .expect("allocated");
        assert!(ipip_addr(&node).is_some());
        pool.spec.ipip_mode = EncapMode::Never;
        let node = ensure_ipip_tunnel(&store, &ipam, "n1", &[&pool])
            .await
            .expect("released");
        assert_eq!(ipip_addr(&node), None);
        let snap = Snapshot::load(store.as_ref()).await.expect("snapshot");
        assert!(snap.allocations().is_empty(), "released in IPAM too");

        // A VXLAN pool never gives an IPIP address.
        let (store, ipam, pool) = with_pool("Never", "Always").await;
        let node = ensure_ipip_tunnel(&store, &ipam, "n1", &[&pool])
            .await
            .expect("nothing to do");
        assert_eq!(ipip_addr(&node), None);
    }
}
