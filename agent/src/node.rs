//! This node's identity: its address, its Node resource, its VXLAN and IPIP tunnel addresses.

use std::sync::Arc;

use brindle_ipam::store::{Store, StoreError, StoreExt};
use brindle_ipam::{AssignRequest, Ipam, IpamError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::dataplane::{
    format_mac, vtep_mac, Dataplane, DataplaneError, HOST_VETH_PREFIX, VXLAN_DEVICE,
};
use crate::model::{AllowedUse, EncapMode, IpPoolSpec, NodeBgpSpec, NodeSpec, Object};

/// Interfaces never chosen by `first-found` and `skip-interface` (Calico's list, with Brindle's
/// own devices).
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
    #[error("no usable IPv4 address found by IP autodetection method {method}; pass --node-ip or another --ip-autodetection-method")]
    NoAddress { method: String },
    #[error("IP autodetection method {method:?}: {reason}")]
    BadMethod { method: String, reason: String },
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

/// How the node's IPv4 address is chosen when it is not given (Calico's
/// `IP_AUTODETECTION_METHOD`).
#[derive(Clone, Debug)]
pub enum AutodetectMethod {
    /// The first global unicast address on an interface that is not virtual.
    FirstFound,
    /// The first global unicast address on an interface whose name matches one of these
    /// (anchored at the start, as Go's regexp is used by Calico: `eth.*`).
    Interface(Vec<NamePattern>),
    /// As first-found, also skipping interfaces matching one of these.
    SkipInterface(Vec<NamePattern>),
    /// The first global unicast address inside one of these networks.
    Cidr(Vec<IpNet>),
    /// The local address the kernel would use to reach this destination (a route lookup), which
    /// must be on an interface.
    CanReach(String),
}

/// An interface-name regular expression, matched from the start of the name.
#[derive(Clone, Debug)]
pub struct NamePattern {
    source: String,
    regex: regex::Regex,
}

impl NamePattern {
    fn is_match(&self, ifname: &str) -> bool {
        self.regex.is_match(ifname)
    }
}

impl std::fmt::Display for AutodetectMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |v: &[NamePattern]| {
            v.iter()
                .map(|r| r.source.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            AutodetectMethod::FirstFound => write!(f, "first-found"),
            AutodetectMethod::Interface(v) => write!(f, "interface={}", join(v)),
            AutodetectMethod::SkipInterface(v) => write!(f, "skip-interface={}", join(v)),
            AutodetectMethod::Cidr(v) => {
                let v: Vec<String> = v.iter().map(ToString::to_string).collect();
                write!(f, "cidr={}", v.join(","))
            }
            AutodetectMethod::CanReach(d) => write!(f, "can-reach={d}"),
        }
    }
}

impl std::str::FromStr for AutodetectMethod {
    type Err = NodeError;

    fn from_str(s: &str) -> Result<Self, NodeError> {
        let bad = |reason: String| NodeError::BadMethod {
            method: s.to_string(),
            reason,
        };
        let s = s.trim();
        if s.is_empty() || s == "first-found" {
            return Ok(AutodetectMethod::FirstFound);
        }
        let (name, arg) = s.split_once('=').ok_or_else(|| {
            bad("expected first-found, interface=REGEX, skip-interface=REGEX, cidr=CIDR[,CIDR] or can-reach=DEST".into())
        })?;
        let list: Vec<&str> = arg
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if list.is_empty() {
            return Err(bad(format!("{name}= needs a value")));
        }
        let regexes = || -> Result<Vec<NamePattern>, NodeError> {
            list.iter()
                .map(|r| {
                    regex::Regex::new(&format!("^(?:{r})"))
                        .map(|regex| NamePattern {
                            source: r.to_string(),
                            regex,
                        })
                        .map_err(|e| bad(format!("regular expression {r:?}: {e}")))
                })
                .collect()
        };
        match name {
            "interface" => Ok(AutodetectMethod::Interface(regexes()?)),
            "skip-interface" => Ok(AutodetectMethod::SkipInterface(regexes()?)),
            "cidr" => list
                .iter()
                .map(|c| {
                    c.parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|e| bad(format!("{c:?}: {e}")))
                })
                .collect::<Result<_, _>>()
                .map(AutodetectMethod::Cidr),
            "can-reach" if list.len() == 1 => Ok(AutodetectMethod::CanReach(list[0].to_string())),
            "can-reach" => Err(bad("can-reach takes one destination".into())),
            other => Err(bad(format!("unknown method {other:?}"))),
        }
    }
}

/// The address a method chose, and every address it could have chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub address: Ipv4Net,
    pub ifname: String,
    /// Every candidate, the chosen first; more than one interface here means the choice was
    /// ambiguous.
    pub candidates: Vec<(String, Ipv4Net)>,
}

fn is_global_v4(n: &Ipv4Net) -> bool {
    let a = n.addr();
    !a.is_loopback() && !a.is_link_local() && !a.is_multicast() && !a.is_unspecified()
}

fn excluded(ifname: &str) -> bool {
    EXCLUDED_PREFIXES.iter().any(|p| ifname.starts_with(p))
}

/// Brindle's own devices, whose addresses (pod gateways, tunnel addresses from the pools) are
/// never the node's, whatever the method.
fn brindle_device(ifname: &str) -> bool {
    ifname == VXLAN_DEVICE || ifname == "tunl0" || ifname.starts_with(HOST_VETH_PREFIX)
}

/// Applies `method` to the interfaces' addresses (in the kernel's order), `reached` being the
/// local address of the route to the can-reach destination. Pure, for tests.
pub fn choose(
    method: &AutodetectMethod,
    addrs: &[(String, IpNet)],
    reached: Option<std::net::IpAddr>,
) -> Result<Choice, NodeError> {
    let v4 = addrs.iter().filter_map(|(ifname, net)| match net {
        IpNet::V4(n) if is_global_v4(n) && !brindle_device(ifname) => Some((ifname.clone(), *n)),
        _ => None,
    });
    let candidates: Vec<(String, Ipv4Net)> = match method {
        AutodetectMethod::FirstFound => v4.filter(|(i, _)| !excluded(i)).collect(),
        AutodetectMethod::Interface(res) => v4
            .filter(|(i, _)| res.iter().any(|r| r.is_match(i)))
            .collect(),
        AutodetectMethod::SkipInterface(res) => v4
            .filter(|(i, _)| !excluded(i) && !res.iter().any(|r| r.is_match(i)))
            .collect(),
        AutodetectMethod::Cidr(nets) => v4
            .filter(|(_, n)| {
                nets.iter()
                    .any(|c| c.contains(&std::net::IpAddr::V4(n.addr())))
            })
            .collect(),
        AutodetectMethod::CanReach(_) => v4
            .filter(|(_, n)| reached == Some(std::net::IpAddr::V4(n.addr())))
            .collect(),
    };
    let (ifname, address) = candidates
        .first()
        .cloned()
        .ok_or_else(|| NodeError::NoAddress {
            method: method.to_string(),
        })?;
    Ok(Choice {
        address,
        ifname,
        candidates,
    })
}

/// The local address the kernel picks to reach `dest` (a host name or address; port 80 is
/// assumed, as Calico does). A UDP socket is connected, which sends nothing.
fn local_address_towards(dest: &str) -> Result<std::net::IpAddr, NodeError> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let err = |reason: String| NodeError::BadMethod {
        method: format!("can-reach={dest}"),
        reason,
    };
    let target = match dest.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, 80),
        Err(_) => (dest, 80)
            .to_socket_addrs()
            .map_err(|e| err(format!("resolving: {e}")))?
            .find(std::net::SocketAddr::is_ipv4)
            .ok_or_else(|| err("no IPv4 address".into()))?,
    };
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| err(e.to_string()))?;
    socket
        .connect(target)
        .map_err(|e| err(format!("no route: {e}")))?;
    Ok(socket.local_addr().map_err(|e| err(e.to_string()))?.ip())
}

/// Chooses the node address by `method` from the interfaces' addresses now.
pub async fn autodetect(
    dataplane: &Dataplane,
    method: &AutodetectMethod,
) -> Result<Choice, NodeError> {
    let addrs = dataplane.addresses().await?;
    let reached = match method {
        AutodetectMethod::CanReach(dest) => Some(local_address_towards(dest)?),
        _ => None,
    };
    choose(method, &addrs, reached)
}

/// Logs a warning naming every candidate when several interfaces qualified.
pub fn warn_if_ambiguous(method: &AutodetectMethod, choice: &Choice) {
    let interfaces: std::collections::BTreeSet<&str> =
        choice.candidates.iter().map(|(i, _)| i.as_str()).collect();
    if interfaces.len() > 1 {
        let all: Vec<String> = choice
            .candidates
            .iter()
            .map(|(i, n)| format!("{n} on {i}"))
            .collect();
        tracing::warn!(
            %method,
            chosen = %choice.address,
            interface = %choice.ifname,
            candidates = %all.join(", "),
            "node address ambiguous: several interfaces qualify; set --ip-autodetection-method or --node-ip to choose"
        );
    }
}

/// The handle of a node's IPIP tunnel address, as Calico names it.
pub fn ipip_tunnel_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// Picks the node address: the one given, with the interface holding it, or the one `method`
/// chooses.
pub async fn detect_address(
    dataplane: &Dataplane,
    given: Option<Ipv4Net>,
    method: &AutodetectMethod,
) -> Result<(Ipv4Net, String), NodeError> {
    if let Some(given) = given {
        let addrs = dataplane.addresses().await?;
        return addrs
            .into_iter()
            .find_map(|(ifname, net)| match net {
                IpNet::V4(n) if n.addr() == given.addr() => Some((given, ifname)),
                _ => None,
            })
            .ok_or(NodeError::AddressNotLocal(given));
    }
    let choice = autodetect(dataplane, method).await?;
    warn_if_ambiguous(method, &choice);
    Ok((choice.address, choice.ifname))
}

/// Writes a new IPv4 address into this node's Node (after re-detection).
pub async fn set_ipv4_address(
    store: &Arc<dyn Store>,
    name: &str,
    address: Ipv4Net,
) -> Result<Object<NodeSpec>, NodeError> {
    update_node(store, name, |spec| {
        spec.bgp
            .get_or_insert_with(NodeBgpSpec::default)
            .ipv4_address = Some(address.to_string());
    })
    .await
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

    fn addrs() -> Vec<(String, IpNet)> {
        [
            ("lo", "127.0.0.1/8"),
            ("eth0", "fe80::1/64"),
            ("docker0", "172.17.0.1/16"),
            ("eth0", "192.168.1.5/24"),
            ("eth1", "10.0.0.5/24"),
            ("vxlan.brindle", "10.244.0.1/32"),
            ("ens3", "169.254.3.3/16"),
        ]
        .iter()
        .map(|(i, n)| (i.to_string(), n.parse().expect("net")))
        .collect()
    }

    fn pick(method: &str, reached: Option<&str>) -> Result<Choice, NodeError> {
        let method: AutodetectMethod = method.parse()?;
        choose(&method, &addrs(), reached.map(|r| r.parse().expect("ip")))
    }

    #[test]
    fn first_found_skips_virtual_loopback_and_link_local_and_names_the_candidates() {
        let c = pick("first-found", None).expect("found");
        assert_eq!(c.address.to_string(), "192.168.1.5/24");
        assert_eq!(c.ifname, "eth0");
        let names: Vec<&str> = c.candidates.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"], "ambiguous: both named");
        assert_eq!(pick("", None).expect("default").address, c.address);
    }

    #[test]
    fn interface_and_skip_interface_match_names_by_regex() {
        assert_eq!(pick("interface=eth1", None).expect("eth1").ifname, "eth1");
        // Anchored at the start, as Calico's: `th.*` does not match eth0.
        assert!(pick("interface=th.*", None).is_err());
        // No default exclusions with interface=.
        assert_eq!(
            pick("interface=docker.*", None)
                .expect("docker")
                .address
                .to_string(),
            "172.17.0.1/16"
        );
        assert_eq!(
            pick("interface=nope,eth.*", None).expect("list").ifname,
            "eth0"
        );
        assert_eq!(
            pick("skip-interface=eth0", None).expect("skip").ifname,
            "eth1"
        );
        assert!(
            pick("skip-interface=eth.*", None).is_err(),
            "docker0 stays excluded"
        );
    }

    #[test]
    fn cidr_and_can_reach() {
        let c = pick("cidr=10.0.0.0/8", None).expect("cidr");
        assert_eq!(c.address.to_string(), "10.0.0.5/24");
        assert_eq!(c.candidates.len(), 1);
        assert_eq!(
            pick("cidr=172.30.0.0/16,192.168.0.0/16", None)
                .expect("list")
                .ifname,
            "eth0"
        );
        assert!(pick("cidr=172.30.0.0/16", None).is_err());
        let c = pick("can-reach=10.0.0.1", Some("10.0.0.5")).expect("reach");
        assert_eq!(c.ifname, "eth1");
        assert!(pick("can-reach=10.0.0.1", Some("10.9.9.9")).is_err());
    }

    #[test]
    fn bad_methods_are_clear_errors() {
        for bad in [
            "interface=",
            "interface=(",
            "cidr=10.0.0.0/33",
            "can-reach=a,b",
            "magic=1",
            "first-foundx",
        ] {
            let e = bad.parse::<AutodetectMethod>().expect_err(bad).to_string();
            assert!(e.contains("IP autodetection method"), "{bad}: {e}");
        }
    }

    #[test]
    fn methods_print_as_given() {
        for m in [
            "first-found",
            "interface=eth.*,en.*",
            "skip-interface=eth1",
            "cidr=10.0.0.0/8",
            "can-reach=8.8.8.8",
        ] {
            assert_eq!(m.parse::<AutodetectMethod>().expect(m).to_string(), m);
        }
    }
}
