//! CNI spec 1.1's node-wide verbs, on behalf of the plugin: STATUS (can this node add pods now?)
//! and GC (remove every attachment of a network the runtime no longer lists).
//!
//! Both read one datastore snapshot. STATUS decides "room" the way [`Ipam::auto_assign`] would
//! look for an address: a free address in a block affine to this node, else a new block while
//! the node owns fewer than `maxBlocksPerHost`, else (without strict affinity) a free address in
//! another node's block. GC only ever touches this node's allocations and endpoints.
//!
//! [`Ipam::auto_assign`]: brindle_ipam::Ipam::auto_assign

use std::collections::{BTreeMap, BTreeSet};

use brindle_ipam::block;
use brindle_ipam::selector::Selector;
use brindle_ipam::store::{StoreError, StoreExt};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::api::{codes, ApiError, CniGcRequest, CniGcResponse, CniStatusRequest};
use crate::ipam_tools::{Allocation, Snapshot};
use crate::model::{host_affinity, AllowedUse, IpPoolSpec, IpamBlockSpec, IpamConfigSpec, Object};
use crate::pods::{handle_id, host_ifname, PodNetwork, NETWORK_ANNOTATION, NETWORK_ATTR};

fn api_err(code: u32, msg: impl Into<String>, details: impl ToString) -> ApiError {
    ApiError {
        code,
        msg: msg.into(),
        details: details.to_string(),
    }
}

/// STATUS answers 50 when the datastore cannot be read: nothing could be allocated.
fn unavailable(what: &str, e: impl ToString) -> ApiError {
    api_err(
        codes::NOT_AVAILABLE,
        format!("the agent cannot read the datastore ({what})"),
        e,
    )
}

/// Why a node can (or cannot) get a pod address, for STATUS's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Room {
    /// A block affine to the node has a free address.
    AffineBlock(IpNet),
    /// The node may claim a new block in this pool.
    NewBlock(String),
    /// Another node's block has a free address and borrowing is allowed.
    Borrow(IpNet),
    /// No address: the reason, naming the pools looked at.
    None(String),
}

/// Where an IPv4 workload address for `node` would come from (see the module doc).
pub fn room_for(
    node: &str,
    pools: &[Object<IpPoolSpec>],
    blocks: &[Object<IpamBlockSpec>],
    config: &IpamConfigSpec,
) -> Room {
    room_for_family(node, false, pools, blocks, config)
}

/// Where a workload address of one family (IPv6 when `v6`) for `node` would come from (see the
/// module doc). Pure, so the rules have unit tests.
pub fn room_for_family(
    node: &str,
    v6: bool,
    pools: &[Object<IpPoolSpec>],
    blocks: &[Object<IpamBlockSpec>],
    config: &IpamConfigSpec,
) -> Room {
    // The plugin's ADD asks for one address per family with no node labels (pods.rs), so the
    // same pools are usable here.
    let family = if v6 { "IPv6" } else { "IPv4" };
    let no_labels = BTreeMap::new();
    let usable: Vec<&Object<IpPoolSpec>> = pools
        .iter()
        .filter(|p| {
            let s = &p.spec;
            s.cidr.addr().is_ipv6() == v6
                && !s.disabled
                && s.allows(AllowedUse::Workload)
                && s.validate().is_ok()
                && Selector::parse(s.node_selector.as_deref().unwrap_or(""))
                    .is_ok_and(|sel| sel.matches(&no_labels))
        })
        .collect();
    if usable.is_empty() {
        return Room::None(format!(
            "no enabled {family} pool allows workload addresses on node {node}"
        ));
    }
    let in_usable = |b: &IpamBlockSpec| usable.iter().any(|p| p.spec.cidr.contains(&b.cidr));
    let mine = host_affinity(node);
    let live = || blocks.iter().map(|b| &b.spec).filter(|b| !b.deleted);

    if let Some(b) = live().find(|b| {
        b.affinity.as_deref() == Some(mine.as_str()) && in_usable(b) && block::free_count(b) > 0
    }) {
        return Room::AffineBlock(b.cidr);
    }
    let owned = live()
        .filter(|b| b.affinity.as_deref() == Some(mine.as_str()) && in_usable(b))
        .count();
    if config.auto_allocate_blocks && owned < config.max_blocks() {
        for pool in &usable {
            let bits = u32::from(pool.spec.block_size())
                .saturating_sub(u32::from(pool.spec.cidr.prefix_len()));
            let possible = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
            let existing = blocks
                .iter()
                .filter(|b| pool.spec.cidr.contains(&b.spec.cidr))
                .count() as u128;
            if existing < possible {
                return Room::NewBlock(pool.metadata.name.clone());
            }
        }
    }
    if !config.strict_affinity {
        if let Some(b) = live().find(|b| {
            b.affinity.as_deref() != Some(mine.as_str()) && in_usable(b) && block::free_count(b) > 0
        }) {
            return Room::Borrow(b.cidr);
        }
    }
    let names: Vec<&str> = usable.iter().map(|p| p.metadata.name.as_str()).collect();
    let limit = if owned >= config.max_blocks() {
        format!(
            "; node {node} owns {owned} blocks (maxBlocksPerHost {})",
            config.max_blocks()
        )
    } else {
        String::new()
    };
    Room::None(format!(
        "pools {names:?} have no free address for node {node}{limit}"
    ))
}

/// The container an allocation belongs to in `network`, if it is one of that network's. New
/// allocations carry the network as an attribute; older ones are recognised by their handle
/// `<network>.<containerID>` when the rest holds no dot (Kubernetes container IDs are hex).
fn container_of<'a>(alloc: &'a Allocation, network: &str) -> Option<&'a str> {
    let handle = alloc.handle.as_deref()?;
    let rest = handle.strip_prefix(network)?.strip_prefix('.')?;
    match alloc.attrs.get(NETWORK_ATTR) {
        Some(n) if n == network => Some(rest),
        Some(_) => None,
        None => (!rest.is_empty() && !rest.contains('.')).then_some(rest),
    }
}

impl PodNetwork {
    /// CNI STATUS: `Ok` when an ADD on this node would find an address; 51 naming the pools when
    /// none has room; 50 when the datastore cannot be read.
    pub async fn status(&self, req: &CniStatusRequest) -> Result<(), ApiError> {
        let (pools, _) = self
            .store
            .list_objs::<IpPoolSpec>()
            .await
            .map_err(|e| unavailable("listing IP pools", e))?;
        let (blocks, _) = self
            .store
            .list_objs::<IpamBlockSpec>()
            .await
            .map_err(|e| unavailable("listing IPAM blocks", e))?;
        let config = self
            .ipam
            .config()
            .await
            .map_err(|e| unavailable("reading IPAMConfig", e))?;
        // The families an ADD without assign_ipv4/assign_ipv6 asks for: each one a pool offers,
        // IPv4 when none does (which then fails, naming the reason).
        let pod = crate::pod_defaults::pod_defaults(pools.iter().map(|p| &p.spec), &self.mtu);
        let families: &[bool] = match (pod.ipv4, pod.ipv6) {
            (true, true) => &[false, true],
            (false, true) => &[true],
            _ => &[false],
        };
        for &v6 in families {
            match room_for_family(&self.node, v6, &pools, &blocks, &config) {
                Room::None(reason) => {
                    return Err(api_err(
                        codes::NO_CAPACITY,
                        format!("no IP pool has room for a pod on node {}", self.node),
                        format!("network {}: {reason}", req.network),
                    ))
                }
                room => tracing::debug!(?room, v6, "STATUS: room for pods"),
            }
        }
        Ok(())
    }

    /// CNI GC: releases every allocation of `network` on this node whose container is not in
    /// the valid list, and removes the host veth and WorkloadEndpoint of every such attachment.
    /// Goes on after a failure and reports all failures at the end (spec 1.1: GC should remove
    /// as much as it can).
    pub async fn gc(&self, req: &CniGcRequest) -> Result<CniGcResponse, ApiError> {
        let snap = Snapshot::load(self.store.as_ref())
            .await
            .map_err(|e| store_unavailable("reading the datastore", e))?;
        let valid_containers: BTreeSet<&str> = req
            .valid_attachments
            .iter()
            .map(|a| a.container_id.as_str())
            .collect();
        let valid_pairs: BTreeSet<(&str, &str)> = req
            .valid_attachments
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut out = CniGcResponse::default();
        let mut failures = Vec::new();

        // Host interfaces that valid endpoints use are never removed, whatever else says so.
        let ours = |ep: &Object<crate::model::WorkloadEndpointSpec>| {
            ep.spec.node == self.node
                && ep
                    .metadata
                    .annotations
                    .get(NETWORK_ANNOTATION)
                    .map(String::as_str)
                    == Some(req.network.as_str())
        };
        let kept_interfaces: BTreeSet<&str> = snap
            .endpoints
            .iter()
            .filter(|ep| {
                ep.spec.node == self.node
                    && (!ours(ep)
                        || valid_pairs
                            .contains(&(ep.spec.container_id.as_str(), ep.spec.endpoint.as_str())))
            })
            .map(|ep| ep.spec.interface_name.as_str())
            .collect();
        let mut to_remove: BTreeSet<String> = BTreeSet::new();

        for ep in snap.endpoints.iter().filter(|ep| ours(ep)) {
            let pair = (ep.spec.container_id.as_str(), ep.spec.endpoint.as_str());
            if valid_pairs.contains(&pair) {
                continue;
            }
            info!(endpoint = %ep.metadata.name, container = %ep.spec.container_id, "GC: stale endpoint");
            to_remove.insert(ep.spec.interface_name.clone());
            if !valid_containers.contains(ep.spec.container_id.as_str()) {
                self.shared
                    .endpoints_mut()
                    .remove(&handle_id(&req.network, &ep.spec.container_id));
            }
            match self.store.delete_obj(ep).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {
                    out.removed_endpoints.push(ep.metadata.name.clone());
                }
                Err(e) => failures.push(format!("deleting endpoint {}: {e}", ep.metadata.name)),
            }
        }

        let mut handles: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
        for alloc in snap.allocations() {
            if alloc.attrs.get("node").map(String::as_str) != Some(self.node.as_str()) {
                continue;
            }
            let Some(container) = container_of(&alloc, &req.network) else {
                continue;
            };
            if valid_containers.contains(container) {
                continue;
            }
            if let Some(handle) = &alloc.handle {
                handles
                    .entry(handle.clone())
                    .or_insert_with(|| (container.to_string(), alloc.attrs.clone()));
            }
        }
        for (handle, (container, attrs)) in &handles {
            // An allocation without its endpoint (an ADD cut short) may still have a veth.
            to_remove.insert(host_ifname(
                attrs.get("namespace").map(String::as_str),
                attrs.get("pod").map(String::as_str),
                container,
            ));
            self.shared.endpoints_mut().remove(handle);
            match self.ipam.release_by_handle(handle).await {
                Ok(ips) => {
                    info!(%handle, ?ips, "GC: released");
                    out.released_handles.push(handle.clone());
                }
                Err(e) => failures.push(format!("releasing handle {handle}: {e}")),
            }
        }

        for ifname in to_remove {
            if kept_interfaces.contains(ifname.as_str()) {
                continue;
            }
            match self.wirer.host_link_exists(&ifname).await {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    failures.push(format!("looking up {ifname}: {e}"));
                    continue;
                }
            }
            match self.wirer.teardown(&ifname).await {
                Ok(()) => out.removed_interfaces.push(ifname),
                Err(e) => failures.push(format!("removing {ifname}: {e}")),
            }
        }
        self.shared.kick.notify_one();
        info!(
            network = %req.network,
            valid = req.valid_attachments.len(),
            released = out.released_handles.len(),
            interfaces = out.removed_interfaces.len(),
            "GC done"
        );
        if failures.is_empty() {
            Ok(out)
        } else {
            warn!(?failures, "GC incomplete");
            Err(api_err(
                codes::INTERNAL,
                format!("GC could not remove everything: {}", failures.join("; ")),
                "",
            ))
        }
    }
}

fn store_unavailable(what: &str, e: StoreError) -> ApiError {
    let code = if matches!(e, StoreError::Unavailable(_)) {
        codes::TRY_AGAIN
    } else {
        codes::INTERNAL
    };
    api_err(code, format!("datastore: {what}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocationAttribute;

    fn pool(name: &str, cidr: &str, block_size: u8) -> Object<IpPoolSpec> {
        Object::new(
            name,
            IpPoolSpec {
                cidr: cidr.parse().expect("cidr"),
                block_size: Some(block_size),
                ipip_mode: Default::default(),
                vxlan_mode: Default::default(),
                nat_outgoing: false,
                disabled: false,
                node_selector: None,
                allowed_uses: None,
                disable_bgp_export: false,
            },
        )
    }

    /// A block with `used` of its addresses allocated.
    fn blk(cidr: &str, node: &str, used: usize) -> Object<IpamBlockSpec> {
        let cidr: IpNet = cidr.parse().expect("cidr");
        let n = 1usize << (cidr.max_prefix_len() - cidr.prefix_len());
        let mut spec =
            block::new_block(cidr, Some(host_affinity(node)), None, 1).expect("a block-sized cidr");
        for o in 0..used {
            spec.allocations[o] = Some(0);
        }
        spec.unallocated = (used..n).collect();
        spec.attributes = vec![AllocationAttribute {
            handle_id: Some("h".into()),
            secondary: BTreeMap::new(),
        }];
        Object::new(cidr.to_string(), spec)
    }

    #[test]
    fn room_in_an_affine_block_first() {
        let pools = [pool("p", "10.0.0.0/24", 26)];
        let blocks = [blk("10.0.0.0/26", "n1", 10)];
        let room = room_for("n1", &pools, &blocks, &IpamConfigSpec::default());
        assert_eq!(room, Room::AffineBlock("10.0.0.0/26".parse().expect("net")));
    }

    #[test]
    fn each_family_is_judged_by_its_own_pools() {
        let pools = [
            pool("v4", "10.0.0.0/26", 26),
            pool("v6", "fd00:10::/122", 122),
        ];
        let blocks = [blk("10.0.0.0/26", "n1", 64), blk("fd00:10::/122", "n1", 10)];
        let cfg = IpamConfigSpec::default();
        assert!(matches!(
            room_for_family("n1", false, &pools, &blocks, &cfg),
            Room::None(_)
        ));
        assert_eq!(
            room_for_family("n1", true, &pools, &blocks, &cfg),
            Room::AffineBlock("fd00:10::/122".parse().expect("net"))
        );
        let Room::None(reason) = room_for_family("n1", true, &pools[..1], &blocks, &cfg) else {
            panic!("no IPv6 pool, no room");
        };
        assert!(reason.contains("IPv6"), "{reason}");
    }

    #[test]
    fn full_blocks_then_a_new_block_then_borrowing_then_none() {
        let pools = [pool("p", "10.0.0.0/25", 26)];
        let mut blocks = vec![blk("10.0.0.0/26", "n1", 64)];
        let cfg = IpamConfigSpec::default();
        assert_eq!(
            room_for("n1", &pools, &blocks, &cfg),
            Room::NewBlock("p".into())
        );
        blocks.push(blk("10.0.0.64/26", "n2", 63));
        assert_eq!(
            room_for("n1", &pools, &blocks, &cfg),
            Room::Borrow("10.0.0.64/26".parse().expect("net"))
        );
        let strict = IpamConfigSpec {
            strict_affinity: true,
            ..IpamConfigSpec::default()
        };
        assert!(matches!(
            room_for("n1", &pools, &blocks, &strict),
            Room::None(_)
        ));
        blocks[1] = blk("10.0.0.64/26", "n2", 64);
        let Room::None(reason) = room_for("n1", &pools, &blocks, &cfg) else {
            panic!("no room expected");
        };
        assert!(reason.contains("\"p\""), "{reason}");
    }

    #[test]
    fn block_limit_and_disabled_pools_leave_no_room() {
        let pools = [pool("p", "10.0.0.0/24", 26)];
        let blocks = [blk("10.0.0.0/26", "n1", 64)];
        let cfg = IpamConfigSpec {
            max_blocks_per_host: 1,
            strict_affinity: true,
            ..IpamConfigSpec::default()
        };
        let Room::None(reason) = room_for("n1", &pools, &blocks, &cfg) else {
            panic!("block limit");
        };
        assert!(reason.contains("maxBlocksPerHost 1"), "{reason}");

        let mut disabled = pool("p", "10.0.0.0/24", 26);
        disabled.spec.disabled = true;
        assert!(matches!(
            room_for("n1", &[disabled], &[], &IpamConfigSpec::default()),
            Room::None(_)
        ));
        assert!(matches!(
            room_for("n1", &[], &[], &IpamConfigSpec::default()),
            Room::None(_)
        ));
    }

    fn alloc(handle: &str, network: Option<&str>) -> Allocation {
        let mut attrs = BTreeMap::from([("node".to_string(), "n1".to_string())]);
        if let Some(n) = network {
            attrs.insert(NETWORK_ATTR.to_string(), n.to_string());
        }
        Allocation {
            ip: "10.0.0.1".parse().expect("ip"),
            block: "10.0.0.0/26".parse().expect("net"),
            handle: Some(handle.to_string()),
            sequence_number: None,
            attrs,
        }
    }

    #[test]
    fn allocations_belong_to_a_network_by_attribute_or_handle() {
        assert_eq!(
            container_of(&alloc("net.c1", Some("net")), "net"),
            Some("c1")
        );
        // The attribute decides even when the handle would also fit a shorter network name.
        assert_eq!(container_of(&alloc("a.b.c1", Some("a.b")), "a"), None);
        assert_eq!(
            container_of(&alloc("a.b.c1", Some("a.b")), "a.b"),
            Some("c1")
        );
        // Without the attribute, only an unambiguous handle counts.
        assert_eq!(container_of(&alloc("net.c1", None), "net"), Some("c1"));
        assert_eq!(container_of(&alloc("a.b.c1", None), "a"), None);
        assert_eq!(
            container_of(&alloc("vxlan-tunnel-addr-n1", None), "net"),
            None
        );
        assert_eq!(container_of(&alloc("netx.c1", None), "net"), None);
    }
}
