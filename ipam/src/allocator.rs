//! Block IPAM over a [`Store`]: Calico's `AutoAssign` and `ReleaseByHandle` (reference §4.2-4.4).
//!
//! Records touched, all with compare-and-swap writes retried on conflict:
//!
//! ```text
//!   IPPool (read only)          BlockAffinity <node>-<block>     IPAMBlock <block>       IPAMHandle <handle>
//!   cidr, blockSize,    claim:  1. create {state: pending}  -->  2. create, host:<node>
//!   allowedUses, ...            3. update {state: confirmed}
//!                       assign:                                  pop `unallocated` (CAS) --> block[cidr] += n (CAS)
//!                       release:                                 free handle's ordinals  --> block[cidr] -= n, delete at 0
//! ```
//!
//! Choices of this first version (each a small addition later):
//! - IPv4 only through the public API; the logic is per family (`Family`), so IPv6 needs only
//!   a request field and a call.
//! - A pool's `nodeSelector` other than `all()` is ignored (with a warning): every node may use
//!   every enabled pool.
//! - No borrowing from other nodes' blocks when the node's own are full and no block is free
//!   (Calico's step 4 with strictAffinity false). TODO(#6).
//! - Empty affine blocks are kept; releasing them is the GC's job, as in Calico.
//! - `maxBlocksPerHost` is the constant [`MAX_BLOCKS_PER_HOST`]; there is no IPAMConfig yet.
//! - Re-ADD is idempotent: a handle that already holds addresses gets them back, nothing new.
//! - Concurrent calls for the same handle are the caller's to serialise (the CNI holds a
//!   per-node lock, and handle IDs are unique per container); different handles are safe.
//!
//! The decisions are written up in `docs/ipam.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tracing::{debug, error, info, warn};

use crate::block;
use crate::model::{
    affinity_name, cidr_to_name, handle_name, host_affinity, ordinal_to_ip, AffinityState,
    AllowedUse, BlockAffinitySpec, IpPoolSpec, IpamBlockSpec, IpamHandleSpec, Object,
};
use crate::store::{Store, StoreError, StoreExt};

/// How many blocks one node may own (Calico's `maxBlocksPerHost` default).
pub const MAX_BLOCKS_PER_HOST: usize = 20;

/// Attempts of one read-modify-write before giving up (Calico's `datastoreRetries`).
pub const DATASTORE_RETRIES: usize = 100;

/// What to allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignRequest {
    /// Owner of the addresses, unique per container network attachment.
    pub handle_id: String,
    /// The node allocating, whose blocks are used.
    pub node: String,
    /// How many IPv4 addresses.
    pub num: usize,
    /// Secondary attributes stored with the allocation (`node`, `namespace`, `pod`...).
    pub attrs: BTreeMap<String, String>,
    pub use_: AllowedUse,
    /// Pool names to allocate from; `None` means every enabled pool that allows `use_`.
    pub pools: Option<Vec<String>>,
}

impl AssignRequest {
    /// A request for `num` workload addresses from any pool, with no attributes.
    pub fn workload(handle_id: impl Into<String>, node: impl Into<String>, num: usize) -> Self {
        AssignRequest {
            handle_id: handle_id.into(),
            node: node.into(),
            num,
            attrs: BTreeMap::new(),
            use_: AllowedUse::Workload,
            pools: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no enabled {family} IP pool allows {use_:?} addresses")]
    NoPool {
        use_: AllowedUse,
        family: &'static str,
    },
    #[error("IP pool {name:?} does not exist")]
    PoolNotFound { name: String },
    #[error("no free block left for node {node} in pools {pools:?}")]
    Exhausted { node: String, pools: Vec<String> },
    #[error("node {node} owns {max} blocks (maxBlocksPerHost), all full")]
    BlockLimit { node: String, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up {what} after {DATASTORE_RETRIES} conflicting writes")]
    TooManyRetries { what: String },
}

impl IpamError {
    /// True when the request failed for lack of room (no free block, or the node's block limit),
    /// not because of configuration or the datastore.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            IpamError::Exhausted { .. } | IpamError::BlockLimit { .. }
        )
    }
}

/// An address family; the allocation logic is written once for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A usable pool.
struct Pool {
    name: String,
    spec: IpPoolSpec,
}

/// Allocates addresses from per-node blocks of the IP pools in a [`Store`].
#[derive(Clone)]
pub struct Ipam {
    store: Arc<dyn Store>,
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ipam { store }
    }

    /// Allocates `req.num` IPv4 addresses for `req.handle_id` on `req.node`, each with its
    /// block's prefix length (as Calico returns them). All or nothing: on error, whatever this
    /// call had allocated is released again.
    ///
    /// Idempotent per handle: if `req.handle_id` already holds IPv4 addresses, those are
    /// returned, whatever `req.num`, and nothing is allocated.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Vec<IpNet>, IpamError> {
        self.auto_assign_family(req, Family::V4).await
    }

    #[tracing::instrument(skip_all, fields(handle = %req.handle_id, node = %req.node, num = req.num, family = family.name()))]
    pub(crate) async fn auto_assign_family(
        &self,
        req: &AssignRequest,
        family: Family,
    ) -> Result<Vec<IpNet>, IpamError> {
        if req.num == 0 {
            return Ok(Vec::new());
        }
        let held = self.handle_nets(&req.handle_id, Some(family)).await?;
        if !held.is_empty() {
            info!(
                held = held.len(),
                "handle already holds addresses, returning them"
            );
            return Ok(held);
        }
        let pools = self.pools_for(req, family).await?;
        let mut done = Vec::new();
        match self.assign_from_pools(req, &pools, &mut done).await {
            Ok(()) => {
                let nets: Vec<IpNet> = done
                    .iter()
                    .flat_map(|(cidr, ords)| ords.iter().filter_map(|&o| net_at(cidr, o)))
                    .collect();
                info!(addresses = ?nets, "assigned");
                Ok(nets)
            }
            Err(e) => {
                warn!(error = %e, "assignment failed, rolling back");
                self.roll_back(&req.handle_id, &done).await;
                Err(e)
            }
        }
    }

    /// Releases every address of `handle_id` and deletes the handle; returns the addresses
    /// freed. A handle that does not exist has nothing to release.
    #[tracing::instrument(skip(self))]
    pub async fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let Some(handle) = self.get_handle(handle_id).await? else {
            debug!("no such handle, nothing to release");
            return Ok(Vec::new());
        };
        let mut freed_ips = Vec::new();
        let mut counts = BTreeMap::new();
        for (key, &count) in &handle.spec.block {
            counts.insert(key.clone(), count);
            let Ok(cidr) = key.parse::<IpNet>() else {
                warn!(block = %key, "handle names a block that is not a CIDR; dropping the entry");
                continue;
            };
            let freed = self.release_in_block(cidr, handle_id, None).await?;
            freed_ips.extend(freed.iter().filter_map(|&o| ordinal_to_ip(&cidr, o)));
        }
        self.decrement_handle(handle_id, &counts).await?;
        freed_ips.sort();
        info!(addresses = ?freed_ips, "released");
        Ok(freed_ips)
    }

    /// The addresses `handle_id` holds, ascending; empty when the handle does not exist.
    pub async fn ips_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let nets = self.handle_nets(handle_id, None).await?;
        Ok(nets.iter().map(IpNet::addr).collect())
    }

    /// The blocks affine to `node` with a confirmed affinity, ascending.
    pub async fn node_blocks(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        let mut blocks = self.confirmed_affinities(node).await?;
        blocks.sort();
        Ok(blocks)
    }

    // --- pools and affinities ---

    /// The pools `req` may allocate from, in the requested order or by name.
    async fn pools_for(&self, req: &AssignRequest, family: Family) -> Result<Vec<Pool>, IpamError> {
        let (mut all, _) = self.store.list_objs::<IpPoolSpec>().await?;
        all.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let candidates: Vec<Object<IpPoolSpec>> = match &req.pools {
            Some(names) => names
                .iter()
                .map(|name| {
                    all.iter()
                        .find(|p| &p.metadata.name == name)
                        .cloned()
                        .ok_or_else(|| IpamError::PoolNotFound { name: name.clone() })
                })
                .collect::<Result<_, _>>()?,
            None => all,
        };
        let mut pools = Vec::new();
        for p in candidates {
            let name = p.metadata.name;
            let spec = p.spec;
            if Family::of(&spec.cidr) != family || spec.disabled || !spec.allows(req.use_) {
                continue;
            }
            if let Err(reason) = spec.validate() {
                warn!(pool = %name, %reason, "skipping invalid pool");
                continue;
            }
            if let Some(sel) = spec.node_selector.as_deref() {
                let sel = sel.trim();
                if !sel.is_empty() && sel != "all()" && req.pools.is_none() {
                    warn!(pool = %name, selector = %sel, "nodeSelector is not supported yet; pool used on every node");
                }
            }
            pools.push(Pool { name, spec });
        }
        if pools.is_empty() {
            return Err(IpamError::NoPool {
                use_: req.use_,
                family: family.name(),
            });
        }
        Ok(pools)
    }

    /// CIDRs of `node`'s confirmed block affinities.
    async fn confirmed_affinities(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        let (affs, _) = self.store.list_objs::<BlockAffinitySpec>().await?;
        Ok(affs
            .into_iter()
            .filter(|a| {
                a.spec.node == node
                    && a.spec.state == AffinityState::Confirmed
                    && a.spec.deleted != "true"
            })
            .map(|a| a.spec.cidr)
            .collect())
    }

    // --- assignment ---

    /// Fills `done` with (block, ordinals) until `req.num` addresses are assigned and recorded in
    /// the handle; on error `done` holds what must be rolled back.
    async fn assign_from_pools(
        &self,
        req: &AssignRequest,
        pools: &[Pool],
        done: &mut Vec<(IpNet, Vec<usize>)>,
    ) -> Result<(), IpamError> {
        let mut remaining = req.num;
        let mut affine: Vec<IpNet> = self
            .confirmed_affinities(&req.node)
            .await?
            .into_iter()
            .filter(|b| pools.iter().any(|p| p.spec.cidr.contains(b)))
            .collect();
        affine.sort();
        let mut owned = affine.len();
        for cidr in affine {
            if remaining == 0 {
                return Ok(());
            }
            let ords = self.assign_from_block(req, cidr, remaining).await?;
            remaining -= ords.len();
            if !ords.is_empty() {
                done.push((cidr, ords));
            }
        }
        while remaining > 0 {
            if owned >= MAX_BLOCKS_PER_HOST {
                return Err(IpamError::BlockLimit {
                    node: req.node.clone(),
                    max: MAX_BLOCKS_PER_HOST,
                });
            }
            let cidr = self.claim_block(&req.node, pools).await?;
            owned += 1;
            let ords = self.assign_from_block(req, cidr, remaining).await?;
            remaining -= ords.len();
            if !ords.is_empty() {
                done.push((cidr, ords));
            }
        }
        Ok(())
    }

    /// Assigns up to `n` addresses from one of the node's blocks and records them in the handle;
    /// if the handle cannot be written, the block assignment is undone before returning the error.
    async fn assign_from_block(
        &self,
        req: &AssignRequest,
        cidr: IpNet,
        n: usize,
    ) -> Result<Vec<usize>, IpamError> {
        let ords = self.assign_in_block(req, cidr, n).await?;
        if ords.is_empty() {
            return Ok(ords);
        }
        if let Err(e) = self.add_to_handle(&req.handle_id, cidr, ords.len()).await {
            if let Err(undo) = self
                .release_in_block(cidr, &req.handle_id, Some(&ords))
                .await
            {
                error!(block = %cidr, error = %undo, "could not undo an assignment whose handle write failed");
            }
            return Err(e);
        }
        Ok(ords)
    }

    /// The block half of an assignment: pops up to `n` ordinals, with CAS retries.
    async fn assign_in_block(
        &self,
        req: &AssignRequest,
        cidr: IpNet,
        n: usize,
    ) -> Result<Vec<usize>, IpamError> {
        let name = cidr_to_name(&cidr);
        let me = host_affinity(&req.node);
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut obj) = self.store.get_obj::<IpamBlockSpec>(&name).await? else {
                // A confirmed affinity without its block: a claim interrupted, or the block was
                // deleted under us. Recreate it, as Calico does.
                info!(block = %cidr, "affine block missing, recreating it");
                self.create_block(&req.node, cidr).await?;
                continue;
            };
            if obj.spec.deleted || obj.spec.affinity.as_deref() != Some(me.as_str()) {
                debug!(block = %cidr, affinity = ?obj.spec.affinity, "block is not ours, skipping");
                return Ok(Vec::new());
            }
            let ords = block::assign(&mut obj.spec, n, Some(&req.handle_id), &req.attrs);
            if ords.is_empty() {
                return Ok(ords);
            }
            match self.store.update_obj(&obj).await {
                Ok(_) => {
                    debug!(block = %cidr, ordinals = ?ords, "assigned in block");
                    return Ok(ords);
                }
                Err(e) if retryable(&e) => {
                    debug!(block = %cidr, "block changed concurrently, retrying")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("assigning from block {cidr}"),
        })
    }

    /// Undoes assignments that were recorded in both the blocks and the handle.
    async fn roll_back(&self, handle_id: &str, done: &[(IpNet, Vec<usize>)]) {
        for (cidr, ords) in done {
            if let Err(e) = self.release_in_block(*cidr, handle_id, Some(ords)).await {
                error!(block = %cidr, handle = %handle_id, error = %e, "rollback: could not free addresses");
                continue;
            }
            let counts = BTreeMap::from([(cidr.to_string(), count_u32(ords.len()))]);
            if let Err(e) = self.decrement_handle(handle_id, &counts).await {
                error!(block = %cidr, handle = %handle_id, error = %e, "rollback: could not update handle");
            }
        }
    }

    // --- claiming blocks ---

    /// Finds a block for `node`: one of its own with room whose claim was not finished, or a
    /// new one claimed in two phases. Candidates of each pool are tried in the node's order.
    async fn claim_block(&self, node: &str, pools: &[Pool]) -> Result<IpNet, IpamError> {
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        let existing: BTreeMap<IpNet, IpamBlockSpec> =
            blocks.into_iter().map(|b| (b.spec.cidr, b.spec)).collect();
        let me = host_affinity(node);
        for pool in pools {
            for cidr in candidate_blocks(&pool.spec.cidr, pool.spec.block_size(), node) {
                match existing.get(&cidr) {
                    Some(b)
                        if !b.deleted
                            && b.affinity.as_deref() == Some(me.as_str())
                            && block::free_count(b) > 0 =>
                    {
                        self.confirm_affinity(node, cidr).await?;
                        return Ok(cidr);
                    }
                    Some(_) => continue,
                    None => {
                        if self.try_claim(node, cidr).await? {
                            return Ok(cidr);
                        }
                    }
                }
            }
        }
        Err(IpamError::Exhausted {
            node: node.to_string(),
            pools: pools.iter().map(|p| p.name.clone()).collect(),
        })
    }

    /// Claims `cidr` for `node`: pending affinity, block, confirmed affinity. Returns false,
    /// leaving nothing behind, when another node got the block first.
    async fn try_claim(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
        self.ensure_pending_affinity(node, cidr).await?;
        match self.create_block(node, cidr).await {
            Ok(true) => {}
            Ok(false) => {
                self.delete_pending_affinity(node, cidr).await?;
                debug!(block = %cidr, "block taken by another node");
                return Ok(false);
            }
            Err(e) => {
                if let Err(undo) = self.delete_pending_affinity(node, cidr).await {
                    warn!(block = %cidr, error = %undo, "could not delete pending affinity");
                }
                return Err(e);
            }
        }
        self.confirm_affinity(node, cidr).await?;
        info!(block = %cidr, "claimed block");
        Ok(true)
    }

    /// Creates the block affine to `node`; true if it now exists and is ours (created by us or,
    /// concurrently, by another task of the same node), false if it belongs to someone else.
    async fn create_block(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
        let me = host_affinity(node);
        let spec = block::new_block(cidr, Some(me.clone()), Some(now_rfc3339()), unix_nanos())
            .ok_or_else(|| StoreError::Corrupt {
                kind: "IPAMBlock".to_string(),
                name: cidr_to_name(&cidr),
                reason: format!("{cidr} is too large to be a block"),
            })?;
        let name = cidr_to_name(&cidr);
        match self
            .store
            .create_obj(&Object::new(name.clone(), spec))
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => {
                let existing = self.store.get_obj::<IpamBlockSpec>(&name).await?;
                Ok(existing.is_some_and(|b| {
                    !b.spec.deleted && b.spec.affinity.as_deref() == Some(me.as_str())
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Phase one of a claim: the affinity exists and is pending, or already confirmed.
    async fn ensure_pending_affinity(&self, node: &str, cidr: IpNet) -> Result<(), IpamError> {
        let name = affinity_name(node, &cidr);
        for _ in 0..DATASTORE_RETRIES {
            let result = match self.store.get_obj::<BlockAffinitySpec>(&name).await? {
                None => {
                    let spec = BlockAffinitySpec {
                        state: AffinityState::Pending,
                        node: node.to_string(),
                        type_: "host".to_string(),
                        cidr,
                        deleted: "false".to_string(),
                    };
                    self.store
                        .create_obj(&Object::new(name.clone(), spec))
                        .await
                }
                Some(a) if a.spec.state == AffinityState::Confirmed && a.spec.deleted != "true" => {
                    return Ok(())
                }
                Some(a) if a.spec.state == AffinityState::Pending && a.spec.deleted != "true" => {
                    return Ok(())
                }
                Some(mut a) => {
                    a.spec.state = AffinityState::Pending;
                    a.spec.deleted = "false".to_string();
                    self.store.update_obj(&a).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("writing pending affinity {name}"),
        })
    }

    /// Phase three of a claim (and repair of an interrupted one): the affinity is confirmed.
    async fn confirm_affinity(&self, node: &str, cidr: IpNet) -> Result<(), IpamError> {
        let name = affinity_name(node, &cidr);
        for _ in 0..DATASTORE_RETRIES {
            let result = match self.store.get_obj::<BlockAffinitySpec>(&name).await? {
                Some(a) if a.spec.state == AffinityState::Confirmed && a.spec.deleted != "true" => {
                    return Ok(())
                }
                Some(mut a) => {
                    a.spec.state = AffinityState::Confirmed;
                    a.spec.deleted = "false".to_string();
                    self.store.update_obj(&a).await
                }
                None => {
                    let spec = BlockAffinitySpec {
                        state: AffinityState::Confirmed,
                        node: node.to_string(),
                        type_: "host".to_string(),
                        cidr,
                        deleted: "false".to_string(),
                    };
                    self.store
                        .create_obj(&Object::new(name.clone(), spec))
                        .await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("confirming affinity {name}"),
        })
    }

    /// Undoes phase one after losing the block to another node. A confirmed affinity is left
    /// alone (it cannot be ours to drop).
    async fn delete_pending_affinity(&self, node: &str, cidr: IpNet) -> Result<(), IpamError> {
        let name = affinity_name(node, &cidr);
        for _ in 0..DATASTORE_RETRIES {
            let Some(a) = self.store.get_obj::<BlockAffinitySpec>(&name).await? else {
                return Ok(());
            };
            if a.spec.state == AffinityState::Confirmed {
                return Ok(());
            }
            match self.store.delete_obj(&a).await {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("deleting pending affinity {name}"),
        })
    }

    // --- handles and release ---

    /// The handle record, unless absent or soft-deleted.
    async fn get_handle(
        &self,
        handle_id: &str,
    ) -> Result<Option<Object<IpamHandleSpec>>, IpamError> {
        let handle = self
            .store
            .get_obj::<IpamHandleSpec>(&handle_name(handle_id))
            .await?;
        Ok(handle.filter(|h| !h.spec.deleted))
    }

    /// The addresses `handle_id` holds, with their blocks' prefix lengths, ascending.
    async fn handle_nets(
        &self,
        handle_id: &str,
        family: Option<Family>,
    ) -> Result<Vec<IpNet>, IpamError> {
        let Some(handle) = self.get_handle(handle_id).await? else {
            return Ok(Vec::new());
        };
        let mut nets = Vec::new();
        for key in handle.spec.block.keys() {
            let Ok(cidr) = key.parse::<IpNet>() else {
                continue;
            };
            if family.is_some_and(|f| f != Family::of(&cidr)) {
                continue;
            }
            if let Some(b) = self
                .store
                .get_obj::<IpamBlockSpec>(&cidr_to_name(&cidr))
                .await?
            {
                let ords = block::ordinals_of_handle(&b.spec, handle_id);
                nets.extend(
                    ords.into_iter()
                        .filter_map(|o| block::ordinal_net(&b.spec, o)),
                );
            }
        }
        nets.sort();
        Ok(nets)
    }

    /// Adds `n` addresses in `cidr` to the handle, creating it if needed.
    async fn add_to_handle(&self, handle_id: &str, cidr: IpNet, n: usize) -> Result<(), IpamError> {
        let name = handle_name(handle_id);
        for _ in 0..DATASTORE_RETRIES {
            let result = match self.store.get_obj::<IpamHandleSpec>(&name).await? {
                None => {
                    let spec = IpamHandleSpec {
                        handle_id: handle_id.to_string(),
                        block: BTreeMap::from([(cidr.to_string(), count_u32(n))]),
                        deleted: false,
                    };
                    self.store
                        .create_obj(&Object::new(name.clone(), spec))
                        .await
                }
                Some(mut h) => {
                    if h.spec.deleted {
                        h.spec.block.clear();
                        h.spec.deleted = false;
                    }
                    let count = h.spec.block.entry(cidr.to_string()).or_default();
                    *count = count.saturating_add(count_u32(n));
                    self.store.update_obj(&h).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if retryable(&e) => {
                    debug!(handle = %handle_id, "handle changed concurrently, retrying")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("updating handle {handle_id}"),
        })
    }

    /// Subtracts per-block counts from the handle; deletes it when nothing is left.
    async fn decrement_handle(
        &self,
        handle_id: &str,
        counts: &BTreeMap<String, u32>,
    ) -> Result<(), IpamError> {
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut h) = self.get_handle(handle_id).await? else {
                return Ok(());
            };
            for (key, n) in counts {
                if let Some(count) = h.spec.block.get_mut(key) {
                    *count = count.saturating_sub(*n);
                }
            }
            h.spec.block.retain(|_, count| *count > 0);
            let result = if h.spec.block.is_empty() {
                self.store.delete_obj(&h).await
            } else {
                self.store.update_obj(&h).await.map(drop)
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) => {
                    debug!(handle = %handle_id, "handle changed concurrently, retrying")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("updating handle {handle_id}"),
        })
    }

    /// Frees the handle's ordinals in one block (only `only` when given), with CAS retries.
    /// Empty blocks are kept: affine ones belong to their node until the GC releases them.
    async fn release_in_block(
        &self,
        cidr: IpNet,
        handle_id: &str,
        only: Option<&[usize]>,
    ) -> Result<Vec<usize>, IpamError> {
        let name = cidr_to_name(&cidr);
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut b) = self.store.get_obj::<IpamBlockSpec>(&name).await? else {
                warn!(block = %cidr, handle = %handle_id, "handle names a block that does not exist");
                return Ok(Vec::new());
            };
            let freed = match only {
                Some(ords) => block::release_ordinals_of_handle(&mut b.spec, handle_id, ords),
                None => block::release_handle(&mut b.spec, handle_id),
            };
            if freed.is_empty() {
                return Ok(freed);
            }
            match self.store.update_obj(&b).await {
                Ok(_) => {
                    debug!(block = %cidr, ordinals = ?freed, "released in block");
                    return Ok(freed);
                }
                Err(e) if retryable(&e) => {
                    debug!(block = %cidr, "block changed concurrently, retrying")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("releasing in block {cidr}"),
        })
    }
}

/// A write that lost a race: the record changed, appeared or vanished since it was read.
fn retryable(e: &StoreError) -> bool {
    e.is_conflict() || matches!(e, StoreError::NotFound { .. })
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The address at `ordinal` of `block` with the block's prefix length.
fn net_at(block: &IpNet, ordinal: usize) -> Option<IpNet> {
    IpNet::new(ordinal_to_ip(block, ordinal)?, block.prefix_len()).ok()
}

/// FNV-1a, 32 bits.
fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The block CIDRs of `pool` in the order `node` tries them: from FNV-1a(node) modulo the
/// number of blocks, wrapping around. The same node retries the same order and different nodes
/// spread over the pool (Calico seeds its `randomBlockGenerator` with an FNV hash of the host).
pub(crate) fn candidate_blocks(
    pool: &IpNet,
    block_size: u8,
    node: &str,
) -> impl Iterator<Item = IpNet> {
    let pool = pool.trunc();
    let max = pool.max_prefix_len();
    let block_size = block_size.clamp(pool.prefix_len(), max);
    let count = 1u128
        .checked_shl(u32::from(block_size - pool.prefix_len()))
        .unwrap_or(u128::MAX);
    let step = 1u128
        .checked_shl(u32::from(max - block_size))
        .unwrap_or(u128::MAX);
    let base = match pool {
        IpNet::V4(n) => u128::from(u32::from(n.network())),
        IpNet::V6(n) => u128::from(n.network()),
    };
    let start = u128::from(fnv1a32(node.as_bytes())) % count;
    (0..count).filter_map(move |i| {
        let addr = base.checked_add(((start + i) % count).checked_mul(step)?)?;
        let ip = match pool {
            IpNet::V4(_) => IpAddr::V4(u32::try_from(addr).ok()?.into()),
            IpNet::V6(_) => IpAddr::V6(addr.into()),
        };
        IpNet::new(ip, block_size).ok()
    })
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The current UTC time as RFC 3339 (`2026-11-22T10:00:00Z`), for `affinityClaimTime`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let rem = unix_secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
