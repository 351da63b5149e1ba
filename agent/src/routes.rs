//! What the kernel of this node should hold, computed from the cluster's state.
//!
//! Pure: datastore objects and local endpoints in, a [`DesiredState`] out. The controller calls it
//! after every relevant change and hands the result to the dataplane, which reconciles.
//!
//! Rules (BRIEF §4, Calico's Felix):
//! - a block affine to this node is blackholed, so unallocated addresses never leak to the
//!   default route;
//! - a block affine to another node goes through VXLAN when its pool's `vxlanMode` is `Always`,
//!   or `CrossSubnet` and the other node is outside this node's subnet: `<block> via <remote
//!   tunnel IP> dev vxlan.brindle onlink`, with a permanent neighbour (tunnel IP -> VTEP MAC) and
//!   an FDB entry (VTEP MAC -> node IP) per remote node;
//! - otherwise, when both modes are `Never` (or CrossSubnet within the subnet), directly:
//!   `<block> via <node IP> dev <uplink> onlink`, but only to a node on this node's subnet (the
//!   only next hops an onlink route can reach); a node behind a router gets no route from us
//!   and its blocks follow the network's routes (default route, BGP, a router's static routes);
//! - while one end of a VXLAN path has no tunnel address yet (a pool just switched to VXLAN, a
//!   node just joined), a node on the same subnet is reached directly, so a mode change never
//!   leaves a block without a route;
//! - a block of a pool whose `ipipMode` is `Always`, or `CrossSubnet` with the other node outside
//!   this node's subnet, goes through the kernel's fallback IPIP device, the remote node IP as
//!   the tunnel's far end: `<block> via <node IP> dev tunl0 onlink`. While an IPIP pool exists,
//!   `tunl0` is kept up with MTU uplink-20 and this node's IPIP tunnel address
//!   (`Node.spec.bgp.ipv4IPIPTunnelAddr`). IPIP carries IPv4 only: an IPv6 pool's `ipipMode`
//!   is ignored (Calico rejects it);
//! - addresses a node borrowed from another node's block get a /32 to the borrowing node;
//! - every local pod address gets `<ip>/32 dev <host veth> scope link`.
//!
//! IPv6 blocks follow the same rules, with two differences. Encapsulated, they travel in the
//! same `vxlan.brindle` device over the IPv4 underlay (no second device and no node IPv6
//! address needed; the encapsulation costs 50 bytes as for IPv4): the next hop is the remote
//! VTEP's EUI-64 link-local address, derived from its VTEP MAC as every node derives the MAC,
//! with a permanent neighbour entry for it: `<block> via fe80::64xx:xxff:fexx:xxxx dev
//! vxlan.brindle onlink`. CrossSubnet is decided on the IPv4 underlay's subnet. Unencapsulated
//! (`Never`), they go directly to the remote node's IPv6 address (`Node.spec.bgp.ipv6Address`):
//! `<block> via <node IPv6> dev <uplink> onlink`; a node without one gets no such route.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::dataplane::{
    eui64_link_local, parse_mac, vtep_mac, DesiredState, FdbEntry, IpipDevice, Neighbor,
    RouteTarget, Sysctl, VxlanDevice, IPIP_DEVICE, VXLAN_DEVICE,
};
use crate::model::{EncapMode, IpPoolSpec, IpamBlockSpec, NodeSpec, Object};

/// This node's own facts, as the controller knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    /// The node IP with the prefix of its subnet.
    pub address: Ipv4Net,
    /// The interface holding `address`.
    pub uplink: String,
    /// MTU of the VXLAN device (uplink MTU minus 50).
    pub vxlan_mtu: u32,
    /// MTU of the IPIP device (uplink MTU minus 20).
    pub ipip_mtu: u32,
}

/// A pod wired on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub ips: Vec<IpNet>,
    pub host_ifname: String,
}

/// Everything the computation reads.
pub struct ClusterView<'a> {
    pub local: &'a LocalNode,
    pub nodes: &'a BTreeMap<String, Object<NodeSpec>>,
    pub pools: &'a BTreeMap<String, Object<IpPoolSpec>>,
    pub blocks: &'a BTreeMap<String, Object<IpamBlockSpec>>,
    pub endpoints: &'a BTreeMap<String, LocalEndpoint>,
    /// `Some` in BGP routing mode: the best routes the speaker learned (prefix -> next hops,
    /// ECMP group). Routes to other nodes' blocks and borrowed addresses then come from here
    /// instead of from the datastore (see [`learned_routes`]).
    pub learned: Option<&'a BTreeMap<IpNet, Vec<IpAddr>>>,
    /// Learned next hops that are not on one of our links -> the gateways towards them: a
    /// route installed plainly goes via those (BIRD's `gateway recursive`).
    pub recursive: &'a BTreeMap<IpAddr, Vec<IpAddr>>,
}

/// How to reach another node.
struct RemoteNode {
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    /// The node's IPv4 VXLAN tunnel address, once it has one.
    tunnel: Option<Ipv4Addr>,
    vtep_mac: [u8; 6],
}

fn remote_node(name: &str, node: &Object<NodeSpec>) -> Option<RemoteNode> {
    let ip = node
        .spec
        .bgp
        .as_ref()?
        .ipv4_address
        .as_deref()
        .and_then(parse_v4_cidr_or_addr)?;
    let tunnel = node
        .spec
        .ipv4_vxlan_tunnel_addr
        .as_deref()
        .and_then(|a| a.parse::<Ipv4Addr>().ok());
    let vtep_mac = node
        .spec
        .vxlan_tunnel_mac_addr
        .as_deref()
        .and_then(parse_mac)
        .unwrap_or_else(|| vtep_mac(name));
    let ip6 = node
        .spec
        .bgp
        .as_ref()?
        .ipv6_address
        .as_deref()
        .and_then(parse_v6_cidr_or_addr);
    Some(RemoteNode {
        ip,
        ip6,
        tunnel,
        vtep_mac,
    })
}

/// Parses `fd00::5/64` or `fd00::5` to the address.
pub fn parse_v6_cidr_or_addr(s: &str) -> Option<Ipv6Addr> {
    s.parse::<Ipv6Net>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<Ipv6Addr>())
        .ok()
}

/// Parses `10.0.0.5/24` or `10.0.0.5` to the address.
pub fn parse_v4_cidr_or_addr(s: &str) -> Option<Ipv4Addr> {
    s.parse::<Ipv4Net>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<Ipv4Addr>())
        .ok()
}

/// The node an IPAM affinity names, if it is a host affinity.
pub fn affinity_node(affinity: Option<&str>) -> Option<&str> {
    affinity?.strip_prefix("host:")
}

fn pool_for<'a>(
    pools: &'a BTreeMap<String, Object<IpPoolSpec>>,
    cidr: &IpNet,
) -> Option<&'a IpPoolSpec> {
    pools
        .values()
        .map(|p| &p.spec)
        .find(|p| p.cidr.contains(cidr))
}

/// The whole desired state of this node's kernel.
pub fn desired_state(view: &ClusterView<'_>) -> DesiredState {
    let local = view.local;
    let mut desired = DesiredState::default();
    let me = view.nodes.get(&local.name);
    let my_tunnel = me
        .and_then(|n| n.spec.ipv4_vxlan_tunnel_addr.as_deref())
        .and_then(|a| a.parse::<Ipv4Addr>().ok());
    // IPv6 pools through VXLAN need the device, but no address on it (their next hops are
    // link-local) and hence no IPv4 VXLAN pool.
    let v6_over_vxlan = view.pools.values().any(|p| {
        matches!(p.spec.cidr, IpNet::V6(_))
            && !p.spec.disabled
            && p.spec.vxlan_mode != EncapMode::Never
    });
    if my_tunnel.is_some() || v6_over_vxlan {
        desired.vxlan = Some(VxlanDevice {
            local_ip: local.address.addr(),
            parent: local.uplink.clone(),
            mac: me
                .and_then(|n| n.spec.vxlan_tunnel_mac_addr.as_deref())
                .and_then(parse_mac)
                .unwrap_or_else(|| vtep_mac(&local.name)),
            tunnel_addr: my_tunnel,
            mtu: local.vxlan_mtu,
        });
    }

    let ipip_pool = view.pools.values().any(|p| {
        matches!(p.spec.cidr, IpNet::V4(_))
            && !p.spec.disabled
            && p.spec.ipip_mode != EncapMode::Never
    });
    if ipip_pool {
        desired.ipip = Some(IpipDevice {
            tunnel_addr: me
                .and_then(|n| n.spec.bgp.as_ref())
                .and_then(|b| b.ipv4_ipip_tunnel_addr.as_deref())
                .and_then(parse_v4_cidr_or_addr),
            mtu: local.ipip_mtu,
        });
    }

    let remotes: BTreeMap<&str, RemoteNode> = view
        .nodes
        .iter()
        .filter(|(name, _)| **name != local.name)
        .filter_map(|(name, node)| Some((name.as_str(), remote_node(name, node)?)))
        .collect();

    let node_at = |ip: IpAddr| -> Option<&str> {
        remotes
            .iter()
            .find(|(_, r)| IpAddr::V4(r.ip) == ip || r.ip6.map(IpAddr::V6) == Some(ip))
            .map(|(name, _)| *name)
    };

    // Neighbour and FDB entries for every remote VTEP, when this node has a VXLAN device: the
    // IPv4 tunnel address's once the remote has one, the link-local's when IPv6 goes through.
    if desired.vxlan.is_some() {
        for remote in remotes.values() {
            let mac = remote.vtep_mac;
            if let Some(tunnel) = remote.tunnel {
                desired.neighbors.insert(Neighbor {
                    dev: VXLAN_DEVICE.to_string(),
                    ip: IpAddr::V4(tunnel),
                    mac,
                });
            }
            if v6_over_vxlan {
                desired.neighbors.insert(Neighbor {
                    dev: VXLAN_DEVICE.to_string(),
                    ip: IpAddr::V6(eui64_link_local(&mac)),
                    mac,
                });
            }
            if remote.tunnel.is_some() || v6_over_vxlan {
                desired.fdb.insert(FdbEntry {
                    dev: VXLAN_DEVICE.to_string(),
                    mac,
                    dst: IpAddr::V4(remote.ip),
                });
            }
        }
    }

    let route_to = |node: &str, pool: &IpPoolSpec| -> Option<RouteTarget> {
        let remote = remotes.get(node)?;
        let v6 = matches!(pool.cidr, IpNet::V6(_));
        let same_subnet = local.address.contains(&remote.ip);
        let encap = match pool.vxlan_mode {
            EncapMode::Always => true,
            EncapMode::CrossSubnet => !same_subnet,
            EncapMode::Never => false,
        };
        if encap {
            let gw = if v6 {
                Some(IpAddr::V6(eui64_link_local(&remote.vtep_mac)))
            } else {
                remote.tunnel.map(IpAddr::V4)
            };
            match (desired.vxlan.as_ref(), gw) {
                (Some(_), Some(gw)) => {
                    return Some(RouteTarget::ViaOnlink {
                        gw,
                        dev: VXLAN_DEVICE.to_string(),
                    })
                }
                // One end has no tunnel yet (a pool just switched to VXLAN, or a node just
                // joined): a neighbour on the same link is still reached directly, so a mode
                // change never leaves its blocks without a route.
                _ if same_subnet => {}
                _ => return None,
            }
        }
        let ipip = match pool.ipip_mode {
            EncapMode::Always => true,
            EncapMode::CrossSubnet => !same_subnet,
            EncapMode::Never => false,
        };
        if ipip && !v6 {
            desired.ipip.as_ref()?;
            return Some(RouteTarget::ViaOnlink {
                gw: IpAddr::V4(remote.ip),
                dev: IPIP_DEVICE.to_string(),
            });
        }
        // Unencapsulated, only a node on this node's link can be a next hop (an onlink route
        // to anything else would ARP in vain); blocks behind a router follow the network's
        // routes (the default route, BGP), as with Calico's `Never` across subnets.
        if !same_subnet {
            return None;
        }
        let gw = if v6 {
            IpAddr::V6(remote.ip6?)
        } else {
            IpAddr::V4(remote.ip)
        };
        Some(RouteTarget::ViaOnlink {
            gw,
            dev: local.uplink.clone(),
        })
    };

    for block in view.blocks.values() {
        let spec = &block.spec;
        if spec.deleted {
            continue;
        }
        let Some(pool) = pool_for(view.pools, &spec.cidr) else {
            continue;
        };
        let owner = affinity_node(spec.affinity.as_deref());
        match owner {
            Some(node) if node == local.name => {
                desired.routes.insert(spec.cidr, RouteTarget::Blackhole);
            }
            // BGP mode: other nodes' routes are what the speaker learned.
            Some(_) if view.learned.is_some() => {}
            Some(node) => {
                if let Some(target) = route_to(node, pool) {
                    desired.routes.insert(spec.cidr, target);
                }
            }
            None => {}
        }
        // Borrowed addresses: allocated to a node that does not own the block.
        for (ordinal, attr_index) in spec.allocations.iter().enumerate() {
            let Some(attr) = attr_index.and_then(|i| spec.attributes.get(i)) else {
                continue;
            };
            let Some(node) = attr.secondary.get("node") else {
                continue;
            };
            if Some(node.as_str()) == owner || *node == local.name || view.learned.is_some() {
                continue;
            }
            let Some(ip) = crate::model::ordinal_to_ip(&spec.cidr, ordinal) else {
                continue;
            };
            if let Some(target) = route_to(node, pool) {
                desired.routes.insert(IpNet::from(ip), target);
            }
        }
    }

    if let Some(learned) = view.learned {
        let own: Vec<IpNet> = desired.routes.keys().copied().collect();
        for (prefix, next_hops) in learned {
            // Our own blocks and pods never come back from a peer (a ToR reflecting them).
            if own.iter().any(|o| o.contains(prefix)) {
                continue;
            }
            let target = learned_target(prefix, next_hops, view.recursive, &|node_ip| {
                let name = node_at(node_ip)?;
                route_to(name, pool_for(view.pools, prefix)?)
            });
            if let Some(target) = target {
                desired.routes.insert(*prefix, target);
            }
        }
    }

    nat_and_sysctls(view, &mut desired);

    for endpoint in view.endpoints.values() {
        for ip in &endpoint.ips {
            desired.routes.insert(
                IpNet::new(ip.addr(), ip.max_prefix_len()).unwrap_or(*ip),
                RouteTarget::Device {
                    dev: endpoint.host_ifname.clone(),
                },
            );
        }
    }
    desired
}

/// The route for a learned prefix (BGP mode). A prefix inside a pool whose next hop is a
/// node is routed exactly as the datastore mode routes that node's blocks (`route_to`: VXLAN,
/// IPIP or direct per the pool's modes), so switching modes changes no route. Anything else
/// (a prefix outside every pool, such as a ToR's default route, a next hop that is a router,
/// several next hops) is installed plainly: `via` the next hops, one ECMP route for several,
/// a next hop that is not on one of our links replaced by the gateways towards it
/// (`recursive`).
fn learned_target(
    prefix: &IpNet,
    next_hops: &[IpAddr],
    recursive: &BTreeMap<IpAddr, Vec<IpAddr>>,
    route_to: &dyn Fn(IpAddr) -> Option<RouteTarget>,
) -> Option<RouteTarget> {
    let families_match = next_hops
        .iter()
        .filter(|nh| nh.is_ipv4() == matches!(prefix, IpNet::V4(_)))
        .copied();
    let next_hops: Vec<IpAddr> = families_match.collect();
    if let [only] = next_hops.as_slice() {
        if let Some(target) = route_to(*only) {
            return Some(target);
        }
    }
    RouteTarget::via(
        next_hops
            .iter()
            .flat_map(|nh| recursive.get(nh).cloned().unwrap_or_else(|| vec![*nh])),
    )
}

/// NAT outgoing (Calico's `masq_mgr.go`: from a `natOutgoing` pool to outside every pool) and
/// the sysctls the dataplane needs (Felix's `IPForwarding=Enabled`; loose `rp_filter`).
fn nat_and_sysctls(view: &ClusterView<'_>, desired: &mut DesiredState) {
    for pool in view.pools.values().map(|p| &p.spec) {
        desired.nat.pools.insert(pool.cidr);
        if pool.nat_outgoing && !pool.disabled {
            desired.nat.masquerade.insert(pool.cidr);
        }
    }
    desired
        .sysctls
        .insert(Sysctl::new(&["net", "ipv4", "ip_forward"], "1", &[]));
    if view
        .pools
        .values()
        .any(|p| matches!(p.spec.cidr, IpNet::V6(_)) && !p.spec.disabled)
    {
        desired.sysctls.insert(Sysctl::new(
            &["net", "ipv6", "conf", "all", "forwarding"],
            "1",
            &[],
        ));
    }
    // Strict reverse-path filtering drops a pod's packet that arrives on another interface
    // than the one its reply would leave by: during a mode change (one node already sends
    // directly, the other still routes back through the tunnel), and with CrossSubnet or a
    // router in between. Loose (2) keeps the spoofing check; off (0) is left alone. The
    // kernel applies the larger of `all` and the interface's value, so per interface is enough.
    let mut rp_devices = vec![view.local.uplink.as_str()];
    if desired.vxlan.is_some() {
        rp_devices.push(VXLAN_DEVICE);
    }
    if desired.ipip.is_some() {
        rp_devices.push(IPIP_DEVICE);
    }
    for dev in rp_devices {
        desired.sysctls.insert(Sysctl::new(
            &["net", "ipv4", "conf", dev, "rp_filter"],
            "2",
            &["0"],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeBgpSpec, Object};

    fn node(name: &str, ip: &str, tunnel: Option<&str>) -> (String, Object<NodeSpec>) {
        let spec = NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(ip.to_string()),
                ..NodeBgpSpec::default()
            }),
            ipv4_vxlan_tunnel_addr: tunnel.map(str::to_string),
            ..NodeSpec::default()
        };
        (name.to_string(), Object::new(name, spec))
    }

    fn pool(cidr: &str, vxlan: EncapMode) -> (String, Object<IpPoolSpec>) {
        let mut spec: IpPoolSpec =
            serde_json::from_value(serde_json::json!({ "cidr": cidr })).expect("pool");
        spec.vxlan_mode = vxlan;
        ("pool".to_string(), Object::new("pool", spec))
    }

    fn block(cidr: &str, owner: &str) -> (String, Object<IpamBlockSpec>) {
        let cidr: IpNet = cidr.parse().expect("cidr");
        let spec = IpamBlockSpec {
            cidr,
            affinity: Some(format!("host:{owner}")),
            affinity_claim_time: None,
            allocations: vec![None; 64],
            unallocated: (0..64).collect(),
            attributes: vec![],
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
            strict_affinity: false,
        };
        let name = crate::model::cidr_to_name(&cidr);
        (name.clone(), Object::new(name, spec))
    }

    fn local() -> LocalNode {
        LocalNode {
            name: "a".to_string(),
            address: "10.0.0.1/24".parse().expect("cidr"),
            uplink: "eth0".to_string(),
            vxlan_mtu: 1450,
            ipip_mtu: 1480,
        }
    }

    struct Fixture {
        nodes: BTreeMap<String, Object<NodeSpec>>,
        pools: BTreeMap<String, Object<IpPoolSpec>>,
        blocks: BTreeMap<String, Object<IpamBlockSpec>>,
        endpoints: BTreeMap<String, LocalEndpoint>,
    }

    impl Fixture {
        fn new(mode: EncapMode) -> Self {
            Fixture {
                nodes: [
                    node("a", "10.0.0.1/24", Some("10.244.0.0")),
                    node("b", "10.0.0.2/24", Some("10.244.0.64")),
                    node("c", "10.0.1.3/24", Some("10.244.0.128")),
                ]
                .into_iter()
                .collect(),
                pools: [pool("10.244.0.0/16", mode)].into_iter().collect(),
                blocks: [
                    block("10.244.0.0/26", "a"),
                    block("10.244.0.64/26", "b"),
                    block("10.244.0.128/26", "c"),
                ]
                .into_iter()
                .collect(),
                endpoints: BTreeMap::new(),
            }
        }

        fn desired(&self) -> DesiredState {
            desired_state(&ClusterView {
                local: &local(),
                nodes: &self.nodes,
                pools: &self.pools,
                blocks: &self.blocks,
                endpoints: &self.endpoints,
                learned: None,
                recursive: &BTreeMap::new(),
            })
        }

        fn desired_bgp(&self, learned: &BTreeMap<IpNet, Vec<IpAddr>>) -> DesiredState {
            self.desired_bgp_recursive(learned, &BTreeMap::new())
        }

        fn desired_bgp_recursive(
            &self,
            learned: &BTreeMap<IpNet, Vec<IpAddr>>,
            recursive: &BTreeMap<IpAddr, Vec<IpAddr>>,
        ) -> DesiredState {
            desired_state(&ClusterView {
                local: &local(),
                nodes: &self.nodes,
                pools: &self.pools,
                blocks: &self.blocks,
                endpoints: &self.endpoints,
                learned: Some(learned),
                recursive,
            })
        }
    }

    #[test]
    fn bgp_mode_routes_learned_blocks_as_the_datastore_mode_routes_them() {
        for mode in [EncapMode::Never, EncapMode::Always, EncapMode::CrossSubnet] {
            let f = Fixture::new(mode);
            let datastore = f.desired();
            // Nothing learned: no route to another node's block, only our blackhole.
            let nothing = f.desired_bgp(&BTreeMap::new());
            assert_eq!(
                nothing.routes.get(&net("10.244.0.0/26")),
                Some(&RouteTarget::Blackhole)
            );
            assert!(
                !nothing.routes.contains_key(&net("10.244.0.64/26")),
                "{mode:?}"
            );
            let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
            let learned: BTreeMap<IpNet, Vec<IpAddr>> = [
                (net("10.244.0.64/26"), vec![ip("10.0.0.2")]),
                (net("10.244.0.128/26"), vec![ip("10.0.1.3")]),
                // Our own block reflected back by a router: ignored.
                (net("10.244.0.0/26"), vec![ip("10.0.0.254")]),
                // A ToR's default route, over two uplinks: ECMP, plain.
                (net("0.0.0.0/0"), vec![ip("10.0.0.254"), ip("10.0.0.253")]),
            ]
            .into_iter()
            .collect();
            let bgp = f.desired_bgp(&learned);
            for block in ["10.244.0.0/26", "10.244.0.64/26"] {
                assert_eq!(
                    bgp.routes.get(&net(block)),
                    datastore.routes.get(&net(block)),
                    "{mode:?} {block}"
                );
            }
            let c = bgp.routes.get(&net("10.244.0.128/26"));
            match datastore.routes.get(&net("10.244.0.128/26")) {
                Some(t) => assert_eq!(c, Some(t), "{mode:?}"),
                // Never across a router: via the next hop, which the kernel resolves.
                None => assert_eq!(c, RouteTarget::via([ip("10.0.1.3")]).as_ref(), "{mode:?}"),
            }
            assert_eq!(
                bgp.routes.get(&net("0.0.0.0/0")),
                RouteTarget::via([ip("10.0.0.253"), ip("10.0.0.254")]).as_ref()
            );
            assert_eq!(bgp.vxlan, datastore.vxlan);
            assert_eq!(bgp.neighbors, datastore.neighbors);
        }
    }

    #[test]
    fn bgp_mode_resolves_a_next_hop_behind_a_router_through_it() {
        let f = Fixture::new(EncapMode::Never);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // A route learned from a multihop peer: 192.0.2.7 is not on our link, the kernel
        // reaches it through 10.0.0.254.
        let learned: BTreeMap<IpNet, Vec<IpAddr>> =
            [(net("198.51.100.0/24"), vec![ip("192.0.2.7")])]
                .into_iter()
                .collect();
        let recursive = [(ip("192.0.2.7"), vec![ip("10.0.0.254")])]
            .into_iter()
            .collect();
        assert_eq!(
            f.desired_bgp_recursive(&learned, &recursive)
                .routes
                .get(&net("198.51.100.0/24")),
            RouteTarget::via([ip("10.0.0.254")]).as_ref()
        );
        // Node c (10.0.1.3) is behind a router too: its block follows the route towards it.
        let learned: BTreeMap<IpNet, Vec<IpAddr>> =
            [(net("10.244.0.128/26"), vec![ip("10.0.1.3")])]
                .into_iter()
                .collect();
        let recursive = [(ip("10.0.1.3"), vec![ip("10.0.0.254")])]
            .into_iter()
            .collect();
        assert_eq!(
            f.desired_bgp_recursive(&learned, &recursive)
                .routes
                .get(&net("10.244.0.128/26")),
            RouteTarget::via([ip("10.0.0.254")]).as_ref()
        );
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    fn via(gw: &str, dev: &str) -> RouteTarget {
        RouteTarget::ViaOnlink {
            gw: gw.parse().expect("ip"),
            dev: dev.to_string(),
        }
    }

    #[test]
    fn vxlan_always_routes_every_remote_block_through_the_tunnel() {
        let d = Fixture::new(EncapMode::Always).desired();
        let vxlan = d.vxlan.as_ref().expect("device");
        assert_eq!(vxlan.tunnel_addr, Some(Ipv4Addr::new(10, 244, 0, 0)));
        assert_eq!(vxlan.local_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(vxlan.mac, vtep_mac("a"));
        assert_eq!(d.routes[&net("10.244.0.0/26")], RouteTarget::Blackhole);
        assert_eq!(
            d.routes[&net("10.244.0.64/26")],
            via("10.244.0.64", VXLAN_DEVICE)
        );
        assert_eq!(
            d.routes[&net("10.244.0.128/26")],
            via("10.244.0.128", VXLAN_DEVICE)
        );
        assert_eq!(d.neighbors.len(), 2);
        assert!(d.fdb.contains(&FdbEntry {
            dev: VXLAN_DEVICE.to_string(),
            mac: vtep_mac("c"),
            dst: "10.0.1.3".parse().expect("ip"),
        }));
        assert!(d.neighbors.contains(&Neighbor {
            dev: VXLAN_DEVICE.to_string(),
            ip: "10.244.0.64".parse().expect("ip"),
            mac: vtep_mac("b"),
        }));
    }

    #[test]
    fn cross_subnet_encapsulates_only_outside_the_local_subnet() {
        let d = Fixture::new(EncapMode::CrossSubnet).desired();
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "eth0"));
        assert_eq!(
            d.routes[&net("10.244.0.128/26")],
            via("10.244.0.128", VXLAN_DEVICE)
        );
    }

    #[test]
    fn never_routes_directly_via_the_node_ip() {
        let d = Fixture::new(EncapMode::Never).desired();
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "eth0"));
        // Node c is behind a router: no onlink route can reach it; the network routes it.
        assert!(!d.routes.contains_key(&net("10.244.0.128/26")));
    }

    #[test]
    fn a_remote_node_without_tunnel_address_is_reached_directly_on_the_same_link() {
        let mut f = Fixture::new(EncapMode::Always);
        f.nodes.insert("b".into(), node("b", "10.0.0.2/24", None).1);
        f.nodes.insert("c".into(), node("c", "10.0.1.3/24", None).1);
        let d = f.desired();
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "eth0"));
        assert!(!d.routes.contains_key(&net("10.244.0.128/26")));
        assert!(d.neighbors.is_empty());
    }

    #[test]
    fn nat_outgoing_masquerades_only_nat_pools_and_exempts_every_pool() {
        let mut f = Fixture::new(EncapMode::Always);
        let d = f.desired();
        assert!(d.nat.masquerade.is_empty());
        let (name, mut other) = pool("10.250.0.0/16", EncapMode::Never);
        other.spec.nat_outgoing = true;
        f.pools.insert(format!("{name}-2"), other);
        let d = f.desired();
        assert_eq!(
            d.nat.masquerade.iter().collect::<Vec<_>>(),
            vec![&net("10.250.0.0/16")]
        );
        assert_eq!(d.nat.pools.len(), 2);
    }

    #[test]
    fn forwarding_and_loose_rp_filter_are_wanted() {
        let d = Fixture::new(EncapMode::Always).desired();
        let names: Vec<String> = d.sysctls.iter().map(Sysctl::name).collect();
        assert!(
            names.contains(&"net.ipv4.ip_forward".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"net.ipv4.conf.eth0.rp_filter".to_string()));
        assert!(names.contains(&"net.ipv4.conf.vxlan.brindle.rp_filter".to_string()));
        assert!(!names.iter().any(|n| n.starts_with("net.ipv6")));
        let d = dual_stack(EncapMode::Never).desired();
        let names: Vec<String> = d.sysctls.iter().map(Sysctl::name).collect();
        assert!(names.contains(&"net.ipv6.conf.all.forwarding".to_string()));
    }

    #[test]
    fn switching_modes_moves_every_remote_block_to_the_new_path() {
        let mut f = Fixture::new(EncapMode::Always);
        let always = f.desired();
        f.pools = [pool("10.244.0.0/16", EncapMode::Never)]
            .into_iter()
            .collect();
        let never = f.desired();
        f.pools = [pool("10.244.0.0/16", EncapMode::CrossSubnet)]
            .into_iter()
            .collect();
        let cross = f.desired();
        let b = net("10.244.0.64/26");
        let c = net("10.244.0.128/26");
        assert_eq!(always.routes[&b], via("10.244.0.64", VXLAN_DEVICE));
        assert_eq!(never.routes[&b], via("10.0.0.2", "eth0"));
        assert_eq!(cross.routes[&b], via("10.0.0.2", "eth0"));
        assert_eq!(always.routes[&c], via("10.244.0.128", VXLAN_DEVICE));
        assert!(!never.routes.contains_key(&c));
        assert_eq!(cross.routes[&c], via("10.244.0.128", VXLAN_DEVICE));
    }

    #[test]
    fn no_tunnel_address_means_no_vxlan_device_and_no_tunnel_routes() {
        let mut f = Fixture::new(EncapMode::Always);
        f.nodes.insert("a".into(), node("a", "10.0.0.1/24", None).1);
        let d = f.desired();
        assert!(d.vxlan.is_none());
        assert!(d.neighbors.is_empty() && d.fdb.is_empty());
        // The local blackhole, and node b on the same link directly; c is out of reach.
        assert_eq!(d.routes.len(), 2, "{:?}", d.routes);
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "eth0"));
    }

    #[test]
    fn local_endpoints_and_borrowed_addresses_get_host_routes() {
        let mut f = Fixture::new(EncapMode::Always);
        f.endpoints.insert(
            "net.c1".into(),
            LocalEndpoint {
                ips: vec![net("10.244.0.5/26")],
                host_ifname: "brd0123456789a".into(),
            },
        );
        // Node c borrowed ordinal 3 of b's block.
        let b = f.blocks.get_mut("10-244-0-64-26").expect("block");
        b.spec.allocations[3] = Some(0);
        b.spec.attributes.push(crate::model::AllocationAttribute {
            handle_id: Some("net.c2".into()),
            secondary: [("node".to_string(), "c".to_string())].into(),
        });
        let d = f.desired();
        assert_eq!(
            d.routes[&net("10.244.0.5/32")],
            RouteTarget::Device {
                dev: "brd0123456789a".into()
            }
        );
        assert_eq!(
            d.routes[&net("10.244.0.67/32")],
            via("10.244.0.128", VXLAN_DEVICE)
        );
    }

    /// The fixture plus an IPv6 pool and a /122 block per node; nodes a and b have IPv6
    /// addresses, c has none.
    fn dual_stack(v6_mode: EncapMode) -> Fixture {
        let mut f = Fixture::new(EncapMode::Always);
        let (_, mut v6) = pool("fd00:10:244::/48", v6_mode);
        v6.metadata.name = "pool-v6".into();
        f.pools.insert("pool-v6".into(), v6);
        f.blocks.extend([
            block("fd00:10:244::/122", "a"),
            block("fd00:10:244::40/122", "b"),
            block("fd00:10:244::80/122", "c"),
        ]);
        for (name, ip6) in [("a", "fd99::1/64"), ("b", "fd99::2/64")] {
            let node = f.nodes.get_mut(name).expect("node");
            if let Some(bgp) = node.spec.bgp.as_mut() {
                bgp.ipv6_address = Some(ip6.to_string());
            }
        }
        f
    }

    #[test]
    fn ipv6_blocks_go_through_vxlan_via_the_remote_vtep_link_local() {
        let d = dual_stack(EncapMode::Always).desired();
        assert_eq!(d.routes[&net("fd00:10:244::/122")], RouteTarget::Blackhole);
        let b_ll = eui64_link_local(&vtep_mac("b"));
        assert_eq!(
            d.routes[&net("fd00:10:244::40/122")],
            via(&b_ll.to_string(), VXLAN_DEVICE)
        );
        assert!(b_ll.to_string().starts_with("fe80::64"), "{b_ll}");
        // c has no IPv6 address: the tunnel does not need one.
        assert_eq!(
            d.routes[&net("fd00:10:244::80/122")],
            via(&eui64_link_local(&vtep_mac("c")).to_string(), VXLAN_DEVICE)
        );
        // A neighbour entry per remote VTEP and family; the FDB is per VTEP.
        assert_eq!(d.neighbors.len(), 4);
        assert!(d.neighbors.contains(&Neighbor {
            dev: VXLAN_DEVICE.to_string(),
            ip: IpAddr::V6(b_ll),
            mac: vtep_mac("b"),
        }));
        assert_eq!(d.fdb.len(), 2);
        // The IPv4 routes are unchanged.
        assert_eq!(
            d.routes[&net("10.244.0.64/26")],
            via("10.244.0.64", VXLAN_DEVICE)
        );
    }

    #[test]
    fn ipv6_blocks_without_encapsulation_go_to_the_node_ipv6_address() {
        let d = dual_stack(EncapMode::Never).desired();
        assert_eq!(
            d.routes[&net("fd00:10:244::40/122")],
            via("fd99::2", "eth0")
        );
        // c has no IPv6 address: no route rather than a wrong one.
        assert!(!d.routes.contains_key(&net("fd00:10:244::80/122")));
        // No IPv6 pool through the tunnel: no IPv6 neighbour entries.
        assert_eq!(d.neighbors.len(), 2);

        // CrossSubnet decides on the IPv4 underlay: b is in a's subnet, c is not.
        let d = dual_stack(EncapMode::CrossSubnet).desired();
        assert_eq!(
            d.routes[&net("fd00:10:244::40/122")],
            via("fd99::2", "eth0")
        );
        assert_eq!(
            d.routes[&net("fd00:10:244::80/122")],
            via(&eui64_link_local(&vtep_mac("c")).to_string(), VXLAN_DEVICE)
        );
    }

    #[test]
    fn an_ipv6_only_vxlan_pool_gets_the_device_without_an_ipv4_tunnel_address() {
        // The IPv4 pool is not encapsulated, so no node has an IPv4 tunnel address.
        let mut f = dual_stack(EncapMode::Always);
        f.pools
            .insert("pool".into(), pool("10.244.0.0/16", EncapMode::Never).1);
        for node in f.nodes.values_mut() {
            node.spec.ipv4_vxlan_tunnel_addr = None;
        }
        let d = f.desired();
        let vxlan = d.vxlan.as_ref().expect("a device for the IPv6 pool");
        assert_eq!(vxlan.tunnel_addr, None);
        assert_eq!(
            d.routes[&net("fd00:10:244::80/122")],
            via(&eui64_link_local(&vtep_mac("c")).to_string(), VXLAN_DEVICE)
        );
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "eth0"));
        // Only IPv6 neighbours; an FDB entry per remote node.
        assert_eq!(d.neighbors.len(), 2);
        assert!(d.neighbors.iter().all(|n| n.ip.is_ipv6()));
        assert_eq!(d.fdb.len(), 2);
    }

    #[test]
    fn local_ipv6_endpoints_get_a_128_host_route() {
        let mut f = dual_stack(EncapMode::Always);
        f.endpoints.insert(
            "net.c1".into(),
            LocalEndpoint {
                ips: vec![net("10.244.0.5/26"), net("fd00:10:244::5/122")],
                host_ifname: "brd0123456789a".into(),
            },
        );
        let d = f.desired();
        let dev = RouteTarget::Device {
            dev: "brd0123456789a".into(),
        };
        assert_eq!(d.routes[&net("fd00:10:244::5/128")], dev);
        assert_eq!(d.routes[&net("10.244.0.5/32")], dev);
    }

    /// The fixture with its pool in IPIP `mode` (VXLAN off) and IPIP tunnel addresses.
    fn ipip(mode: EncapMode) -> Fixture {
        let mut f = Fixture::new(EncapMode::Never);
        if let Some(p) = f.pools.get_mut("pool") {
            p.spec.ipip_mode = mode;
        }
        for (name, addr) in [
            ("a", "10.244.0.1"),
            ("b", "10.244.0.65"),
            ("c", "10.244.0.129"),
        ] {
            let node = f.nodes.get_mut(name).expect("node");
            node.spec.ipv4_vxlan_tunnel_addr = None;
            if let Some(bgp) = node.spec.bgp.as_mut() {
                bgp.ipv4_ipip_tunnel_addr = Some(addr.to_string());
            }
        }
        f
    }

    #[test]
    fn ipip_always_routes_every_remote_block_through_tunl0_to_the_node_ip() {
        let d = ipip(EncapMode::Always).desired();
        assert_eq!(
            d.ipip,
            Some(IpipDevice {
                tunnel_addr: Some(Ipv4Addr::new(10, 244, 0, 1)),
                mtu: 1480,
            })
        );
        assert!(d.vxlan.is_none() && d.neighbors.is_empty() && d.fdb.is_empty());
        assert_eq!(d.routes[&net("10.244.0.0/26")], RouteTarget::Blackhole);
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "tunl0"));
        assert_eq!(d.routes[&net("10.244.0.128/26")], via("10.0.1.3", "tunl0"));
    }

    #[test]
    fn ipip_cross_subnet_encapsulates_only_outside_the_local_subnet() {
        let d = ipip(EncapMode::CrossSubnet).desired();
        assert!(d.ipip.is_some());
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "eth0"));
        assert_eq!(d.routes[&net("10.244.0.128/26")], via("10.0.1.3", "tunl0"));
    }

    #[test]
    fn ipip_device_is_wanted_before_the_tunnel_address_and_only_for_ipip_pools() {
        let mut f = ipip(EncapMode::Always);
        f.nodes.insert("a".into(), node("a", "10.0.0.1/24", None).1);
        let d = f.desired();
        let dev = d
            .ipip
            .as_ref()
            .expect("tunl0 wanted without an address yet");
        assert_eq!(dev.tunnel_addr, None);
        // Routes do not wait for the local tunnel address: the far end is the node IP.
        assert_eq!(d.routes[&net("10.244.0.64/26")], via("10.0.0.2", "tunl0"));

        let d = Fixture::new(EncapMode::Always).desired();
        assert!(d.ipip.is_none(), "a VXLAN pool leaves tunl0 alone");
        let mut f = ipip(EncapMode::Always);
        if let Some(p) = f.pools.get_mut("pool") {
            p.spec.disabled = true;
        }
        assert!(
            f.desired().ipip.is_none(),
            "a disabled pool leaves tunl0 alone"
        );
    }

    #[test]
    fn borrowed_addresses_of_an_ipip_pool_go_through_tunl0() {
        let mut f = ipip(EncapMode::Always);
        let b = f.blocks.get_mut("10-244-0-64-26").expect("block");
        b.spec.allocations[3] = Some(0);
        b.spec.attributes.push(crate::model::AllocationAttribute {
            handle_id: Some("net.c2".into()),
            secondary: [("node".to_string(), "c".to_string())].into(),
        });
        let d = f.desired();
        assert_eq!(d.routes[&net("10.244.0.67/32")], via("10.0.1.3", "tunl0"));
    }

    #[test]
    fn blocks_outside_every_pool_and_deleted_blocks_are_not_routed() {
        let mut f = Fixture::new(EncapMode::Always);
        f.blocks.extend([block("10.9.0.0/26", "b")]);
        f.blocks
            .get_mut("10-244-0-128-26")
            .expect("block")
            .spec
            .deleted = true;
        let d = f.desired();
        assert!(!d.routes.contains_key(&net("10.9.0.0/26")));
        assert!(!d.routes.contains_key(&net("10.244.0.128/26")));
    }
}
