//! Block IPAM over a [`Store`]: Calico's `AutoAssign`, `AssignIP`, `ReleaseIPs`,
//! `ReleaseByHandle` and the affinity life cycle (reference §4.2-4.4).
//!
//! Records touched, all with compare-and-swap writes retried on conflict:
//!
//! ```text
//!   IPPool, IPAMConfig (read)   BlockAffinity <node>-<block>     IPAMBlock <block>       IPAMHandle <handle>
//!   cidr, blockSize,    claim:  1. create {state: pending}  -->  2. create, host:<node>
//!   nodeSelector, ...           3. update {state: confirmed}
//!                       assign:                                  pop `unallocated` (CAS) --> block[cidr] += n (CAS)
//!                       borrow:                                  same, in another node's block, attribute node=<me>
//!                       release:                                 free ordinals (CAS)     --> block[cidr] -= n, delete at 0
//!                       give up:    1. {state: pendingDeletion}  2. delete if empty (CAS), else unaffine
//!                                   3. delete
//! ```
//!
//! Code: this file (requests, pools, assignment, borrowing, `assign_ip`), `affinity.rs`
//! (claiming, reclaiming and releasing blocks), `release.rs` (release paths and handles). The
//! decisions are written up in `docs/ipam.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tracing::{debug, error, info, warn};

use crate::block;
use crate::clock::{rfc3339, Clock, SystemClock};
use crate::model::{
    cidr_to_name, host_affinity, ip_to_ordinal, ordinal_to_ip, AffinityState, AllowedUse,
    BlockAffinitySpec, IpPoolSpec, IpamBlockSpec, IpamConfigSpec, Object,
    DEFAULT_MAX_BLOCKS_PER_HOST, EMPTY_SINCE_ANNOTATION, IPAM_CONFIG_NAME,
};
use crate::selector::Selector;
use crate::store::{Store, StoreError, StoreExt};

pub use crate::affinity::NodeRelease;
pub use crate::block::{Refusal, ReleaseOptions};
pub use crate::release::ReleaseReport;

/// How many blocks one node may own when `IPAMConfig` does not say (Calico's default).
pub const MAX_BLOCKS_PER_HOST: usize = DEFAULT_MAX_BLOCKS_PER_HOST as usize;

/// Attempts of one read-modify-write before giving up (Calico's `datastoreRetries`).
pub const DATASTORE_RETRIES: usize = 100;

/// How old another node's claim on an empty block must be before this node may take the block
/// (Calico's `EmptyBlockMinReclaimAge`).
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE: Duration = Duration::from_secs(60);

/// What to allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignRequest {
    /// Owner of the addresses, unique per container network attachment.
    pub handle_id: String,
    /// The node allocating, whose blocks are used.
    pub node: String,
    /// How many IPv4 addresses.
    pub num: usize,
    /// How many IPv6 addresses.
    pub num_v6: usize,
    /// Secondary attributes stored with the allocation (`namespace`, `pod`...). `node` is
    /// always set to [`AssignRequest::node`].
    pub attrs: BTreeMap<String, String>,
    pub use_: AllowedUse,
    /// Pool names to allocate from, used exactly (their `nodeSelector` is then ignored, as in
    /// Calico); `None` means every enabled pool that allows `use_` and selects the node.
    pub pools: Option<Vec<String>>,
    /// The node's labels, matched against pools' `nodeSelector`.
    pub node_labels: BTreeMap<String, String>,
}

impl Default for AssignRequest {
    fn default() -> Self {
        AssignRequest {
            handle_id: String::new(),
            node: String::new(),
            num: 0,
            num_v6: 0,
            attrs: BTreeMap::new(),
            use_: AllowedUse::Workload,
            pools: None,
            node_labels: BTreeMap::new(),
        }
    }
}

impl AssignRequest {
    /// A request for `num` IPv4 workload addresses from any pool, with no attributes.
    pub fn workload(handle_id: impl Into<String>, node: impl Into<String>, num: usize) -> Self {
        AssignRequest {
            handle_id: handle_id.into(),
            node: node.into(),
            num,
            ..AssignRequest::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no enabled {family} IP pool allows {use_:?} addresses on node {node}")]
    NoPool {
        use_: AllowedUse,
        family: &'static str,
        node: String,
    },
    #[error("IP pool {name:?} does not exist")]
    PoolNotFound { name: String },
    #[error("IP pool {name:?} is disabled")]
    PoolDisabled { name: String },
    #[error("IP pool {name:?} is not valid: {reason}")]
    InvalidPool { name: String, reason: String },
    #[error("{ip} is not in any IP pool")]
    OutsidePools { ip: IpAddr },
    #[error("no free block left for node {node} in pools {pools:?}")]
    Exhausted { node: String, pools: Vec<String> },
    #[error("node {node} owns {max} blocks (maxBlocksPerHost), all full")]
    BlockLimit { node: String, max: usize },
    #[error("{ip} is already allocated (handle {handle:?})")]
    AddressInUse { ip: IpAddr, handle: Option<String> },
    #[error("block {cidr} would overlap the existing block {existing} (did the pool's blockSize change?)")]
    BlockOverlap { cidr: IpNet, existing: IpNet },
    #[error("IPAMConfig {IPAM_CONFIG_NAME:?} is not valid: {0}")]
    InvalidConfig(String),
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

/// One allocated address as the blocks record it (for `ipam show --ip`, the GC and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The address with its block's prefix length.
    pub address: IpNet,
    pub block: IpNet,
    /// The block's `affinity` (`host:<node>`), `None` for an unaffine block.
    pub block_affinity: Option<String>,
    pub handle_id: Option<String>,
    pub attrs: BTreeMap<String, String>,
    /// `sequenceNumberForAllocation` of the ordinal: pass it to [`Ipam::release_ips`].
    pub sequence_number: Option<u64>,
}

/// An address family; the allocation logic is written once for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(net: &IpNet) -> Family {
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
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) spec: IpPoolSpec,
}

/// Who an assignment is for: the handle, the node, and the attributes to record (with `node`).
pub(crate) struct Claimant<'a> {
    pub(crate) handle_id: &'a str,
    pub(crate) node: &'a str,
    pub(crate) attrs: BTreeMap<String, String>,
}

impl<'a> Claimant<'a> {
    fn new(handle_id: &'a str, node: &'a str, attrs: &BTreeMap<String, String>) -> Self {
        let mut attrs = attrs.clone();
        if let Some(other) = attrs.insert("node".to_string(), node.to_string()) {
            if other != node {
                warn!(attribute = %other, %node, "attribute node differs from the allocating node; recording the allocating node");
            }
        }
        Claimant {
            handle_id,
            node,
            attrs,
        }
    }
}

/// Whose block an assignment may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockUse {
    /// Only a block affine to the claimant's node; recreated if its affinity is confirmed but
    /// the block is missing.
    Affine,
    /// Any existing block (borrowing).
    Any,
}

/// Allocates addresses from per-node blocks of the IP pools in a [`Store`].
#[derive(Clone)]
pub struct Ipam {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ipam::with_clock(store, Arc::new(SystemClock))
    }

    /// An allocator reading the time from `clock` (claim times, reclaim ages, empty-since).
    pub fn with_clock(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Ipam { store, clock }
    }

    /// The `IPAMConfig` in force: the object named `default`, or the defaults when it is absent.
    pub async fn config(&self) -> Result<IpamConfigSpec, IpamError> {
        let Some(obj) = self
            .store
            .get_obj::<IpamConfigSpec>(IPAM_CONFIG_NAME)
            .await?
        else {
            return Ok(IpamConfigSpec::default());
        };
        obj.spec.validate().map_err(IpamError::InvalidConfig)?;
        Ok(obj.spec)
    }

    /// Allocates `req.num` IPv4 and `req.num_v6` IPv6 addresses for `req.handle_id` on
    /// `req.node`, each with its block's prefix length (as Calico returns them), IPv4 first.
    ///
    /// Order, as Calico: the node's confirmed affine blocks; new blocks claimed in the node's
    /// order (reclaiming other nodes' empty blocks claimed over a minute ago when no block is
    /// free) up to `maxBlocksPerHost`; then, unless `strictAffinity`, addresses borrowed from
    /// other nodes' blocks.
    ///
    /// All or nothing, across both families: on error, whatever this call had allocated is
    /// released again. Idempotent per handle and family: if `req.handle_id` already holds
    /// addresses of a family, those are returned, whatever the number asked, and none is added.
    #[tracing::instrument(skip_all, fields(handle = %req.handle_id, node = %req.node, v4 = req.num, v6 = req.num_v6))]
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Vec<IpNet>, IpamError> {
        let mut out = Vec::new();
        let mut plan = Vec::new();
        // Everything that can fail without writing is checked before anything is written.
        for (family, num) in [(Family::V4, req.num), (Family::V6, req.num_v6)] {
            if num == 0 {
                continue;
            }
            let held = self.handle_nets(&req.handle_id, Some(family)).await?;
            if !held.is_empty() {
                info!(
                    family = family.name(),
                    held = held.len(),
                    "handle already holds addresses, returning them"
                );
                out.extend(held);
                continue;
            }
            plan.push((num, self.pools_for(req, family).await?));
        }
        if plan.is_empty() {
            out.sort();
            return Ok(out);
        }
        let config = self.config().await?;
        let who = Claimant::new(&req.handle_id, &req.node, &req.attrs);
        let mut done = Vec::new();
        for (num, pools) in &plan {
            if let Err(e) = self
                .assign_family(&who, *num, pools, &config, &mut done)
                .await
            {
                warn!(error = %e, "assignment failed, rolling back");
                self.roll_back(&req.handle_id, &done).await;
                return Err(e);
            }
        }
        let new: Vec<IpNet> = done
            .iter()
            .flat_map(|(cidr, ords)| ords.iter().filter_map(|&o| net_at(cidr, o)))
            .collect();
        info!(addresses = ?new, "assigned");
        out.extend(new);
        out.sort();
        Ok(out)
    }

    /// Allocates exactly `ip` to `handle_id` on `node` (Calico's `AssignIP`), claiming the
    /// block that would hold it for `node` when there is none; an existing block is used
    /// whoever owns it (the allocation then records `node`, like a borrowed one). Returns the
    /// address with its block's prefix length.
    ///
    /// Fails with [`IpamError::AddressInUse`] when another handle holds `ip` (the same handle
    /// gets it back: re-ADD is idempotent), [`IpamError::OutsidePools`] or
    /// [`IpamError::PoolDisabled`] when no enabled pool contains it, and
    /// [`IpamError::BlockOverlap`] when its block would overlap a block of another size.
    #[tracing::instrument(skip(self, attrs))]
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle_id: &str,
        node: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<IpNet, IpamError> {
        let pool = self.pool_containing(ip).await?;
        let who = Claimant::new(handle_id, node, attrs);
        for _ in 0..DATASTORE_RETRIES {
            let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
            let Some(mut obj) = blocks
                .into_iter()
                .find(|b| !b.spec.deleted && b.spec.cidr.contains(&ip))
            else {
                let cidr = IpNet::new(ip, pool.spec.block_size())
                    .map_err(|_| IpamError::InvalidPool {
                        name: pool.name.clone(),
                        reason: "bad blockSize".to_string(),
                    })?
                    .trunc();
                if let Some(existing) = self.overlapping_block(cidr).await? {
                    return Err(IpamError::BlockOverlap { cidr, existing });
                }
                // Claimed by us or lost to someone else: either way the next pass finds it.
                self.try_claim(node, cidr).await?;
                continue;
            };
            let cidr = obj.spec.cidr;
            let Some(ordinal) = ip_to_ordinal(&cidr, ip) else {
                continue;
            };
            let net = net_at(&cidr, ordinal).unwrap_or(cidr);
            match block::assign_ordinal(&mut obj.spec, ordinal, Some(handle_id), &who.attrs) {
                Ok(()) => {}
                Err(Some(holder)) if holder == handle_id => {
                    debug!("address already held by this handle");
                    return Ok(net);
                }
                Err(holder) => return Err(IpamError::AddressInUse { ip, handle: holder }),
            }
            match self.write_block(&mut obj).await {
                Ok(()) => {}
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = self.add_to_handle(handle_id, cidr, 1).await {
                if let Err(undo) = self
                    .release_in_block(cidr, handle_id, Some(&[ordinal]))
                    .await
                {
                    error!(block = %cidr, error = %undo, "could not undo an assignment whose handle write failed");
                }
                return Err(e);
            }
            info!(address = %net, "assigned");
            return Ok(net);
        }
        Err(IpamError::TooManyRetries {
            what: format!("assigning {ip}"),
        })
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

    /// What the blocks record about `ip`; `None` when it is not allocated.
    pub async fn get_allocation(&self, ip: IpAddr) -> Result<Option<Allocation>, IpamError> {
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        for b in blocks.iter().filter(|b| !b.spec.deleted) {
            let Some(ordinal) = ip_to_ordinal(&b.spec.cidr, ip) else {
                continue;
            };
            let Some(Some(idx)) = b.spec.allocations.get(ordinal) else {
                return Ok(None);
            };
            let attr = b.spec.attributes.get(*idx);
            return Ok(Some(Allocation {
                address: net_at(&b.spec.cidr, ordinal).unwrap_or(b.spec.cidr),
                block: b.spec.cidr,
                block_affinity: b.spec.affinity.clone(),
                handle_id: attr.and_then(|a| a.handle_id.clone()),
                attrs: attr.map(|a| a.secondary.clone()).unwrap_or_default(),
                sequence_number: block::sequence_of(&b.spec, ordinal),
            }));
        }
        Ok(None)
    }

    // --- pools and affinities ---

    /// The pools `req` may allocate from in `family`: the requested ones by name, or the
    /// enabled ones whose `nodeSelector` selects the node; then by family and allowed use.
    async fn pools_for(&self, req: &AssignRequest, family: Family) -> Result<Vec<Pool>, IpamError> {
        let (mut all, _) = self.store.list_objs::<IpPoolSpec>().await?;
        all.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let requested = req.pools.is_some();
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
            if Family::of(&spec.cidr) != family || !spec.allows(req.use_) {
                continue;
            }
            if spec.disabled {
                if requested {
                    return Err(IpamError::PoolDisabled { name });
                }
                continue;
            }
            if let Err(reason) = spec.validate() {
                if requested {
                    return Err(IpamError::InvalidPool { name, reason });
                }
                warn!(pool = %name, %reason, "skipping invalid pool");
                continue;
            }
            if !requested {
                let selector = spec.node_selector.as_deref().unwrap_or("");
                match Selector::parse(selector) {
                    Ok(sel) if sel.matches(&req.node_labels) => {}
                    Ok(_) => {
                        debug!(pool = %name, %selector, "nodeSelector does not select the node");
                        continue;
                    }
                    // validate() parsed it already; kept for completeness.
                    Err(e) => {
                        warn!(pool = %name, error = %e, "skipping pool with a bad nodeSelector");
                        continue;
                    }
                }
            }
            pools.push(Pool { name, spec });
        }
        if pools.is_empty() {
            return Err(IpamError::NoPool {
                use_: req.use_,
                family: family.name(),
                node: req.node.clone(),
            });
        }
        Ok(pools)
    }

    /// The enabled, valid pool containing `ip`.
    async fn pool_containing(&self, ip: IpAddr) -> Result<Pool, IpamError> {
        let (all, _) = self.store.list_objs::<IpPoolSpec>().await?;
        let containing: Vec<Object<IpPoolSpec>> = all
            .into_iter()
            .filter(|p| p.spec.cidr.contains(&ip))
            .collect();
        if let Some(p) = containing
            .iter()
            .find(|p| !p.spec.disabled && p.spec.validate().is_ok())
        {
            return Ok(Pool {
                name: p.metadata.name.clone(),
                spec: p.spec.clone(),
            });
        }
        match containing.into_iter().next() {
            None => Err(IpamError::OutsidePools { ip }),
            Some(p) if p.spec.disabled => Err(IpamError::PoolDisabled {
                name: p.metadata.name,
            }),
            Some(p) => Err(IpamError::InvalidPool {
                reason: p.spec.validate().err().unwrap_or_default(),
                name: p.metadata.name,
            }),
        }
    }

    /// CIDRs of `node`'s confirmed block affinities.
    pub(crate) async fn confirmed_affinities(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
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

    /// Assigns `num` addresses of one family from `pools`, appending (block, ordinals) to `done`
    /// as they are recorded in blocks and handle; on error `done` holds what to roll back.
    async fn assign_family(
        &self,
        who: &Claimant<'_>,
        num: usize,
        pools: &[Pool],
        config: &IpamConfigSpec,
        done: &mut Vec<(IpNet, Vec<usize>)>,
    ) -> Result<(), IpamError> {
        let mut remaining = num;
        let mut affine: Vec<IpNet> = self
            .confirmed_affinities(who.node)
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
            remaining -= self
                .assign_from_block(who, cidr, remaining, BlockUse::Affine, done)
                .await?;
        }
        let mut limited = false;
        while remaining > 0 && config.auto_allocate_blocks {
            if owned >= config.max_blocks() {
                limited = true;
                break;
            }
            let cidr = match self.claim_block(who.node, pools).await {
                Ok(cidr) => cidr,
                Err(IpamError::Exhausted { .. }) => break,
                Err(e) => return Err(e),
            };
            owned += 1;
            remaining -= self
                .assign_from_block(who, cidr, remaining, BlockUse::Affine, done)
                .await?;
        }
        if remaining > 0 && !config.strict_affinity {
            remaining -= self.borrow(who, pools, remaining, done).await?;
        }
        if remaining == 0 {
            Ok(())
        } else if limited {
            Err(IpamError::BlockLimit {
                node: who.node.to_string(),
                max: config.max_blocks(),
            })
        } else {
            Err(IpamError::Exhausted {
                node: who.node.to_string(),
                pools: pools.iter().map(|p| p.name.clone()).collect(),
            })
        }
    }

    /// Borrowing (Calico's step 4): up to `n` addresses from existing blocks of `pools` that
    /// are not the node's, tried from a per-node starting point. Returns how many were taken.
    async fn borrow(
        &self,
        who: &Claimant<'_>,
        pools: &[Pool],
        n: usize,
        done: &mut Vec<(IpNet, Vec<usize>)>,
    ) -> Result<usize, IpamError> {
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        let me = host_affinity(who.node);
        let mut tried = BTreeSet::new();
        let mut got = 0;
        for pool in pools {
            let mut candidates: Vec<IpNet> = blocks
                .iter()
                .map(|b| &b.spec)
                .filter(|b| {
                    !b.deleted
                        && pool.spec.cidr.contains(&b.cidr)
                        && b.affinity.as_deref() != Some(me.as_str())
                        && block::free_count(b) > 0
                })
                .map(|b| b.cidr)
                .collect();
            candidates.sort();
            if !candidates.is_empty() {
                let start = fnv1a32(who.node.as_bytes()) as usize % candidates.len();
                candidates.rotate_left(start);
            }
            for cidr in candidates {
                if got == n {
                    return Ok(got);
                }
                if !tried.insert(cidr) {
                    continue;
                }
                let before = got;
                got += self
                    .assign_from_block(who, cidr, n - got, BlockUse::Any, done)
                    .await?;
                if got > before {
                    info!(block = %cidr, count = got - before, "borrowed from another node's block");
                }
            }
        }
        Ok(got)
    }

    /// Assigns up to `n` addresses from one block and records them in the handle, appending
    /// them to `done`; returns how many. If the handle cannot be written, the block assignment
    /// is undone before returning the error.
    async fn assign_from_block(
        &self,
        who: &Claimant<'_>,
        cidr: IpNet,
        n: usize,
        use_: BlockUse,
        done: &mut Vec<(IpNet, Vec<usize>)>,
    ) -> Result<usize, IpamError> {
        let ords = self.assign_in_block(who, cidr, n, use_).await?;
        if ords.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.add_to_handle(who.handle_id, cidr, ords.len()).await {
            if let Err(undo) = self
                .release_in_block(cidr, who.handle_id, Some(&ords))
                .await
            {
                error!(block = %cidr, error = %undo, "could not undo an assignment whose handle write failed");
            }
            return Err(e);
        }
        let count = ords.len();
        done.push((cidr, ords));
        Ok(count)
    }

    /// The block half of an assignment: pops up to `n` ordinals, with CAS retries.
    async fn assign_in_block(
        &self,
        who: &Claimant<'_>,
        cidr: IpNet,
        n: usize,
        use_: BlockUse,
    ) -> Result<Vec<usize>, IpamError> {
        let name = cidr_to_name(&cidr);
        let me = host_affinity(who.node);
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut obj) = self.store.get_obj::<IpamBlockSpec>(&name).await? else {
                if use_ == BlockUse::Any {
                    return Ok(Vec::new());
                }
                // A confirmed affinity without its block: a claim interrupted, or the block
                // released under us. Recreate it and confirm the affinity, as Calico does.
                info!(block = %cidr, "affine block missing, recreating it");
                if !self.create_block(who.node, cidr).await? {
                    return Ok(Vec::new());
                }
                self.confirm_affinity(who.node, cidr).await?;
                continue;
            };
            if obj.spec.deleted
                || (use_ == BlockUse::Affine && obj.spec.affinity.as_deref() != Some(me.as_str()))
            {
                debug!(block = %cidr, affinity = ?obj.spec.affinity, "block is not usable, skipping");
                return Ok(Vec::new());
            }
            let ords = block::assign(&mut obj.spec, n, Some(who.handle_id), &who.attrs);
            if ords.is_empty() {
                return Ok(ords);
            }
            match self.write_block(&mut obj).await {
                Ok(()) => {
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

    /// Updates a block (compare-and-swap), keeping its empty-since annotation right.
    pub(crate) async fn write_block(
        &self,
        obj: &mut Object<IpamBlockSpec>,
    ) -> Result<(), StoreError> {
        note_emptiness(obj, self.clock.now());
        *obj = self.store.update_obj(obj).await?;
        Ok(())
    }
}

/// Sets the empty-since annotation on an empty block that lacks it, and removes it from a
/// block that holds addresses.
pub(crate) fn note_emptiness(obj: &mut Object<IpamBlockSpec>, now: SystemTime) {
    let annotations = &mut obj.metadata.annotations;
    if block::is_empty(&obj.spec) {
        annotations
            .entry(EMPTY_SINCE_ANNOTATION.to_string())
            .or_insert_with(|| rfc3339(now));
    } else {
        annotations.remove(EMPTY_SINCE_ANNOTATION);
    }
}

/// A write that lost a race: the record changed, appeared or vanished since it was read.
pub(crate) fn retryable(e: &StoreError) -> bool {
    e.is_conflict() || matches!(e, StoreError::NotFound { .. })
}

pub(crate) fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The address at `ordinal` of `block` with the block's prefix length.
pub(crate) fn net_at(block: &IpNet, ordinal: usize) -> Option<IpNet> {
    IpNet::new(ordinal_to_ip(block, ordinal)?, block.prefix_len()).ok()
}

/// FNV-1a, 32 bits.
pub(crate) fn fnv1a32(data: &[u8]) -> u32 {
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

#[cfg(test)]
#[path = "allocator_tests.rs"]
pub(crate) mod tests;
