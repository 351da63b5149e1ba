//! Which BGP sessions this node should have, computed from the datastore (Calico's confd
//! `bird.cfg` logic, docs/routing.md).
//!
//! Pure: Nodes, the `default` BGPConfiguration and BGPPeers in, the speaker's own settings
//! ([`LocalBgp`]) and the desired neighbours ([`DesiredPeer`], keyed by address) out. The
//! routing task diffs successive results so that a change resets only the sessions it
//! affects.
//!
//! Rules:
//! - AS: the Node's `asNumber`, else BGPConfiguration `asNumber`, else 64512.
//! - Mesh (`nodeToNodeMeshEnabled`, default on): a node without `routeReflectorClusterID` peers
//!   with every other node that has an IPv4 address and no cluster ID.
//! - Route reflectors: a node with a cluster ID leaves the mesh; an iBGP peer whose cluster ID
//!   is empty or different is its client (`rr_client`), as in Calico's `buildPeerFromData`.
//! - BGPPeer: global (no `node`, no `nodeSelector`) or node-specific; the remote side is
//!   `peerIP` (+ `asNumber`) or every node `peerSelector` matches (with its own AS). Unless
//!   `reversePeering: Manual`, a node the remote side names peers back with the nodes of the
//!   local side, so route reflectors get a session to each client.
//! - Between two cluster nodes exactly one side connects: the node whose address is the
//!   larger *string* (Calico compares dotted addresses as strings; kept so that Brindle and
//!   calico-node pick the same side); the other is passive.
//! - When several rules give the same address, the first wins: global peers, then
//!   node-specific ones (BGPPeer names in order), then the mesh.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

pub use brindle_bgp::speaker::PeerType;
use brindle_bgp::speaker::{Md5Key, NeighborConfig};
use brindle_ipam::selector::Selector;

use crate::model::{
    parse_duration_secs, parse_peer_ip, BgpConfigurationSpec, BgpPeerSpec, NodeSpec, Object,
    SecretKeyRef,
};
use crate::routes::parse_v4_cidr_or_addr;

/// Calico's default AS.
pub const DEFAULT_ASN: u32 = 64512;

/// The speaker's own settings for this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalBgp {
    pub asn: u32,
    /// The node's IPv4 address: router ID and session source address.
    pub address: Ipv4Addr,
    /// The node's IPv6 address, if it has one: the next hop of its IPv6 routes, which the
    /// IPv4 sessions carry too.
    pub address_v6: Option<std::net::Ipv6Addr>,
    /// Set on route reflectors.
    pub cluster_id: Option<Ipv4Addr>,
    /// BGPConfiguration `listenPort` (179 by default).
    pub listen_port: u16,
}

/// One neighbour this node should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPeer {
    /// What the speaker is given (its `peer_type` is this one's, for status).
    pub neighbor: NeighborConfig,
    pub peer_type: PeerType,
    /// The rule that asked for it: `mesh` or `BGPPeer/<name>`.
    pub source: String,
}

/// What the computation reads.
pub struct BgpView<'a> {
    pub local: &'a str,
    pub nodes: &'a BTreeMap<String, Object<NodeSpec>>,
    /// The BGPConfiguration named `default`, if any.
    pub config: Option<&'a BgpConfigurationSpec>,
    /// Every BGPConfiguration by name: `node.<name>` ones override `listenPort` for one node.
    pub configs: &'a BTreeMap<String, Object<BgpConfigurationSpec>>,
    pub peers: &'a BTreeMap<String, Object<BgpPeerSpec>>,
}

/// Looks a secret up: `Err` says why it cannot be had.
pub trait SecretSource {
    fn get(&self, secret: &SecretKeyRef) -> Result<String, String>;
}

/// Secrets laid out as a mounted Kubernetes Secret volume: `<dir>/<secret name>/<key>`, the
/// file's content (one trailing newline dropped) being the value.
pub struct SecretDir(pub std::path::PathBuf);

impl SecretSource for SecretDir {
    fn get(&self, secret: &SecretKeyRef) -> Result<String, String> {
        let valid = |s: &str| {
            !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
        };
        if !valid(&secret.name) || !valid(&secret.key) {
            return Err(format!(
                "secret {:?} key {:?}: not a valid name",
                secret.name, secret.key
            ));
        }
        let path = self.0.join(&secret.name).join(&secret.key);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading secret {}: {e}", path.display()))?;
        Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
    }
}

/// A remote side: address, port, AS, and the node at that address if it is one.
type Remote<'n, 'a> = (IpAddr, Option<u16>, u32, Option<&'n NodePeer<'a>>);

/// A node as a BGP peer.
struct NodePeer<'a> {
    name: &'a str,
    ip: Ipv4Addr,
    asn: u32,
    cluster_id: Option<Ipv4Addr>,
    /// The port its speaker listens on.
    listen_port: u16,
    labels: &'a BTreeMap<String, String>,
}

fn global_asn(config: Option<&BgpConfigurationSpec>) -> u32 {
    config.and_then(|c| c.as_number).unwrap_or(DEFAULT_ASN)
}

/// The port node `name` listens on: its `node.<name>` BGPConfiguration's `listenPort`, else the
/// `default` one's, else 179 (Calico's per-node override).
fn listen_port(view: &BgpView<'_>, name: &str) -> u16 {
    view.configs
        .get(&format!("node.{name}"))
        .and_then(|c| c.spec.listen_port)
        .or_else(|| view.config.and_then(|c| c.listen_port))
        .unwrap_or(brindle_bgp::BGP_PORT)
}

fn node_peer<'a>(
    view: &BgpView<'a>,
    name: &'a str,
    node: &'a Object<NodeSpec>,
    global: u32,
) -> Option<NodePeer<'a>> {
    let bgp = node.spec.bgp.as_ref()?;
    let ip = bgp
        .ipv4_address
        .as_deref()
        .and_then(parse_v4_cidr_or_addr)?;
    Some(NodePeer {
        name,
        ip,
        asn: bgp.as_number.unwrap_or(global),
        cluster_id: bgp
            .route_reflector_cluster_id
            .as_deref()
            .and_then(|c| c.parse().ok()),
        listen_port: listen_port(view, name),
        labels: &node.metadata.labels,
    })
}

/// This node's speaker settings; `Err` when the node has no IPv4 address yet or its cluster ID
/// is not an IPv4-formatted ID.
pub fn local_bgp(view: &BgpView<'_>) -> Result<LocalBgp, String> {
    let node = view
        .nodes
        .get(view.local)
        .ok_or_else(|| format!("Node {} is not in the datastore", view.local))?;
    let bgp = node.spec.bgp.as_ref();
    if let Some(id) = bgp.and_then(|b| b.route_reflector_cluster_id.as_deref()) {
        id.parse::<Ipv4Addr>().map_err(|_| {
            format!("Node {}: routeReflectorClusterID {id:?} is not an IPv4-formatted ID (e.g. 244.0.0.1)", view.local)
        })?;
    }
    let me = node_peer(view, view.local, node, global_asn(view.config))
        .ok_or_else(|| format!("Node {} has no IPv4 address", view.local))?;
    Ok(LocalBgp {
        asn: me.asn,
        address: me.ip,
        address_v6: bgp
            .and_then(|b| b.ipv6_address.as_deref())
            .and_then(crate::routes::parse_v6_cidr_or_addr),
        cluster_id: me.cluster_id,
        listen_port: me.listen_port,
    })
}

/// Calico's choice of the connecting side: passive iff the peer's address is the larger string.
fn passive_towards(me: Ipv4Addr, peer: IpAddr) -> bool {
    peer.to_string() > me.to_string()
}

/// The desired neighbours, by address, and a warning per rule that could not be applied
/// (invalid BGPPeer, unreadable secret...).
pub fn desired_peers(
    view: &BgpView<'_>,
    local: &LocalBgp,
    secrets: &dyn SecretSource,
) -> (BTreeMap<IpAddr, DesiredPeer>, Vec<String>) {
    let global = global_asn(view.config);
    let mut warnings = Vec::new();
    let nodes: Vec<NodePeer<'_>> = view
        .nodes
        .iter()
        .filter_map(|(name, node)| node_peer(view, name, node, global))
        .collect();
    let Some(me) = nodes.iter().find(|n| n.name == view.local) else {
        return (
            BTreeMap::new(),
            vec![format!("Node {} has no IPv4 address", view.local)],
        );
    };
    let node_at = |ip: IpAddr| nodes.iter().find(|n| IpAddr::V4(n.ip) == ip);
    let mut out: BTreeMap<IpAddr, DesiredPeer> = BTreeMap::new();

    // Global peers first, then node-specific ones (Calico's order and duplicate rule).
    let mut rules: Vec<(&String, &BgpPeerSpec, PeerType)> = view
        .peers
        .iter()
        .map(|(name, p)| {
            let t = if p.spec.node.is_none() && p.spec.node_selector.is_none() {
                PeerType::Global
            } else {
                PeerType::NodeSpecific
            };
            (name, &p.spec, t)
        })
        .collect();
    rules.sort_by_key(|(name, _, t)| (*t, (*name).clone()));

    for (name, spec, peer_type) in rules {
        let source = format!("BGPPeer/{name}");
        if let Err(e) = spec.validate() {
            warnings.push(format!("{source}: {e}"));
            continue;
        }
        let selects = |sel: &Option<String>, n: &NodePeer<'_>| match sel {
            Some(s) => Selector::parse(s).is_ok_and(|s| s.matches(n.labels)),
            None => true,
        };
        // The local side: who makes this peering.
        let local_side = |n: &NodePeer<'_>| match &spec.node {
            Some(node) => node == n.name,
            None => selects(&spec.node_selector, n),
        };
        // The remote side: whom it is made with, as (address, port, AS, node).
        let mut remotes: Vec<Remote<'_, '_>> = Vec::new();
        if let Some(ip) = &spec.peer_ip {
            if let (Some((ip, port)), Some(asn)) = (parse_peer_ip(ip), spec.as_number) {
                remotes.push((ip, port, asn, node_at(ip)));
            }
        } else {
            for n in nodes.iter().filter(|n| selects(&spec.peer_selector, n)) {
                remotes.push((IpAddr::V4(n.ip), None, n.asn, Some(n)));
            }
        }
        let mut targets: Vec<(Remote<'_, '_>, PeerType)> = Vec::new();
        if local_side(me) {
            targets.extend(remotes.iter().map(|&r| (r, peer_type)));
        }
        // Reverse peering: we are on the remote side, so we peer with the local side's nodes.
        let reverse = spec.reverse_peering.as_deref() != Some("Manual");
        if reverse
            && remotes
                .iter()
                .any(|r| r.3.is_some_and(|n| n.name == me.name))
        {
            for n in nodes.iter().filter(|n| local_side(n)) {
                targets.push((
                    (IpAddr::V4(n.ip), None, n.asn, Some(n)),
                    PeerType::NodeSpecific,
                ));
            }
        }
        for ((ip, port, asn, node), peer_type) in targets {
            if ip == IpAddr::V4(me.ip) || out.contains_key(&ip) {
                continue;
            }
            if spec.local_as_number.is_some_and(|l| l != local.asn) {
                warnings.push(format!(
                    "{source}: localASNumber differs from the node's AS {}: not supported, peering skipped",
                    local.asn
                ));
                continue;
            }
            let password = match &spec.password {
                Some(p) => match secrets.get(&p.secret_key_ref).and_then(|k| {
                    Md5Key::new(k.as_bytes())
                        .ok_or_else(|| "an MD5 password is 1 to 80 octets".to_string())
                }) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        warnings.push(format!("{source}: password: {e}; peering skipped"));
                        continue;
                    }
                },
                None => None,
            };
            // The node's own address of the peer's family (none without one: the kernel picks).
            let own_address = match ip {
                IpAddr::V4(_) => Some(IpAddr::V4(me.ip)),
                IpAddr::V6(_) => local.address_v6.map(IpAddr::V6),
            };
            let neighbor = NeighborConfig {
                port: port
                    .or(node.map(|n| n.listen_port))
                    .unwrap_or(brindle_bgp::BGP_PORT),
                passive: node.is_some() && passive_towards(me.ip, ip),
                local_address: own_address
                    .filter(|_| spec.source_address.as_deref() != Some("None")),
                rr_client: is_rr_client(local, asn, node.and_then(|n| n.cluster_id)),
                password,
                ttl_security: spec.ttl_security,
                graceful_restart_time: spec
                    .max_restart_time
                    .as_deref()
                    .and_then(parse_duration_secs)
                    .map(|s| s.min(u64::from(u16::MAX >> 4)) as u16),
                next_hop_keep: spec.keep_original_next_hop
                    || spec.next_hop_mode.as_deref() == Some("Keep"),
                // BIRD's `keepalive time`: keepalives every N s, so a hold time of 3N.
                hold_time: spec
                    .keepalive_time
                    .as_deref()
                    .and_then(parse_duration_secs)
                    .map(|k| (k * 3).min(u64::from(u16::MAX)) as u16),
                peer_type,
                ..NeighborConfig::new(ip, asn)
            };
            out.insert(
                ip,
                DesiredPeer {
                    neighbor,
                    peer_type,
                    source: source.clone(),
                },
            );
        }
    }

    let mesh = view.config.is_none_or(BgpConfigurationSpec::mesh_enabled);
    if mesh && me.cluster_id.is_none() {
        let config = view.config;
        let password = match config.and_then(|c| c.node_mesh_password.as_ref()) {
            Some(p) => match secrets.get(&p.secret_key_ref).and_then(|k| {
                Md5Key::new(k.as_bytes())
                    .ok_or_else(|| "an MD5 password is 1 to 80 octets".to_string())
            }) {
                Ok(key) => Some(key),
                Err(e) => {
                    warnings.push(format!("BGPConfiguration default: nodeMeshPassword: {e}; mesh sessions use no password"));
                    None
                }
            },
            None => None,
        };
        let restart = config
            .and_then(|c| c.node_mesh_max_restart_time.as_deref())
            .and_then(parse_duration_secs)
            .map(|s| s.min(u64::from(u16::MAX >> 4)) as u16);
        for n in nodes
            .iter()
            .filter(|n| n.name != me.name && n.cluster_id.is_none())
        {
            let ip = IpAddr::V4(n.ip);
            if ip == IpAddr::V4(me.ip) || out.contains_key(&ip) {
                continue;
            }
            let neighbor = NeighborConfig {
                port: n.listen_port,
                passive: passive_towards(me.ip, ip),
                local_address: Some(IpAddr::V4(me.ip)),
                password: password.clone(),
                graceful_restart_time: restart,
                peer_type: PeerType::NodeToNodeMesh,
                ..NeighborConfig::new(ip, n.asn)
            };
            out.insert(
                ip,
                DesiredPeer {
                    neighbor,
                    peer_type: PeerType::NodeToNodeMesh,
                    source: "mesh".to_string(),
                },
            );
        }
    }
    (out, warnings)
}

/// Calico's rule: on a reflector, an iBGP peer is a client unless it is a reflector of the same
/// cluster.
fn is_rr_client(local: &LocalBgp, peer_asn: u32, peer_cluster: Option<Ipv4Addr>) -> bool {
    match local.cluster_id {
        Some(mine) => peer_asn == local.asn && peer_cluster != Some(mine),
        None => false,
    }
}

/// What to change on the speaker to go from `old` to `new`: the addresses to remove, and the
/// neighbours to add. A neighbour whose configuration changed is removed and added again; an
/// unchanged one is left alone, its session untouched.
pub fn diff(
    old: &BTreeMap<IpAddr, DesiredPeer>,
    new: &BTreeMap<IpAddr, DesiredPeer>,
) -> (Vec<IpAddr>, Vec<NeighborConfig>) {
    let remove = old
        .iter()
        .filter(|(ip, p)| new.get(*ip).is_none_or(|n| n.neighbor != p.neighbor))
        .map(|(ip, _)| *ip)
        .collect();
    let add = new
        .iter()
        .filter(|(ip, p)| old.get(*ip).is_none_or(|o| o.neighbor != p.neighbor))
        .map(|(_, p)| p.neighbor.clone())
        .collect();
    (remove, add)
}

#[cfg(test)]
mod tests;
