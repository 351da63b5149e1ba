//! The life of a block affinity: claiming a block for a node (pending, block created,
//! confirmed), taking over another node's stale empty block, and giving blocks up (a node's
//! empty blocks after a grace period, or all of a deleted node's).
//!
//! Giving up an affinity is Calico's `releaseBlockAffinity`, in three CAS steps so that a crash
//! anywhere leaves a state the next pass finishes or undoes:
//! 1. the affinity becomes `pendingDeletion` (allocation ignores it from then on);
//! 2. the block is deleted at the revision at which it was seen empty (a concurrent assignment
//!    makes the delete fail, and the affinity is confirmed again), or, when releasing a node
//!    whatever its blocks hold, made unaffine (`affinity: null`), keeping its addresses;
//! 3. the affinity is deleted, unless it was confirmed again meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::allocator::{
    candidate_blocks, note_emptiness, retryable, Ipam, IpamError, Pool, DATASTORE_RETRIES,
    EMPTY_BLOCK_MIN_RECLAIM_AGE,
};
use crate::block;
use crate::clock::{parse_rfc3339, rfc3339, unix_nanos};
use crate::model::{
    affinity_name, cidr_to_name, host_affinity, AffinityState, BlockAffinitySpec, IpamBlockSpec,
    Object, EMPTY_SINCE_ANNOTATION,
};
use crate::store::{StoreError, StoreExt};

/// What [`Ipam::release_node`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRelease {
    /// Empty blocks deleted with their affinity.
    pub deleted: Vec<IpNet>,
    /// Blocks that still hold addresses: now unaffine (`affinity: null`), their addresses kept
    /// (each records its node; the GC frees them, and the last release deletes the block).
    pub unaffined: Vec<IpNet>,
}

/// When a block may be deleted while giving up its affinity.
#[derive(Clone, Debug)]
enum Condition {
    /// Always: an empty block is deleted, a block with addresses made unaffine.
    Always,
    /// Only if empty and still claimed at the time seen (reclaiming another node's block).
    EmptyClaimedAt(Option<String>),
    /// Only if empty since at least `older_than` before `now`.
    EmptySince {
        older_than: Duration,
        now: SystemTime,
    },
}

/// What giving up one affinity did to the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Deleted,
    Unaffined,
    /// No block affine to the node (only the affinity record was removed).
    NoBlock,
    /// The condition did not hold; the affinity was restored.
    Kept,
}

impl Ipam {
    /// Releases every affinity of `node`: empty blocks are deleted, blocks still holding
    /// addresses become unaffine (Calico's `ReleaseHostAffinities` on node deletion). For a
    /// node that is gone; a live node would claim blocks again.
    #[tracing::instrument(skip(self))]
    pub async fn release_node(&self, node: &str) -> Result<NodeRelease, IpamError> {
        let (affs, _) = self.store.list_objs::<BlockAffinitySpec>().await?;
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        let me = host_affinity(node);
        let cidrs: BTreeSet<IpNet> = affs
            .iter()
            .filter(|a| a.spec.node == node)
            .map(|a| a.spec.cidr)
            .chain(
                blocks
                    .iter()
                    .filter(|b| b.spec.affinity.as_deref() == Some(me.as_str()))
                    .map(|b| b.spec.cidr),
            )
            .collect();
        let mut out = NodeRelease::default();
        for cidr in cidrs {
            match self.release_affinity(node, cidr, Condition::Always).await? {
                Outcome::Deleted => out.deleted.push(cidr),
                Outcome::Unaffined => out.unaffined.push(cidr),
                Outcome::NoBlock | Outcome::Kept => {}
            }
        }
        info!(deleted = ?out.deleted, unaffined = ?out.unaffined, "released node's blocks");
        Ok(out)
    }

    /// Releases `node`'s affine blocks that have been empty for at least `older_than` at `now`
    /// (the affinity and the block), so that flapping pods do not churn blocks. An empty block
    /// without the empty-since annotation (written by other software) is stamped `now` and
    /// released on a later call. The agent calls this periodically; returns the blocks
    /// released.
    #[tracing::instrument(skip(self))]
    pub async fn release_empty_blocks(
        &self,
        node: &str,
        older_than: Duration,
        now: SystemTime,
    ) -> Result<Vec<IpNet>, IpamError> {
        let me = host_affinity(node);
        let mut released = Vec::new();
        let mut cidrs = self.confirmed_affinities(node).await?;
        cidrs.sort();
        for cidr in cidrs {
            let Some(mut obj) = self
                .store
                .get_obj::<IpamBlockSpec>(&cidr_to_name(&cidr))
                .await?
            else {
                continue;
            };
            if obj.spec.deleted
                || obj.spec.affinity.as_deref() != Some(me.as_str())
                || !block::is_empty(&obj.spec)
            {
                continue;
            }
            if !obj
                .metadata
                .annotations
                .contains_key(EMPTY_SINCE_ANNOTATION)
            {
                note_emptiness(&mut obj, now);
                match self.store.update_obj(&obj).await {
                    Ok(_) => debug!(block = %cidr, "empty block stamped"),
                    Err(e) if retryable(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            if !empty_long_enough(&obj, older_than, now) {
                continue;
            }
            let cond = Condition::EmptySince { older_than, now };
            if self.release_affinity(node, cidr, cond).await? == Outcome::Deleted {
                info!(block = %cidr, "released empty block");
                released.push(cidr);
            }
        }
        Ok(released)
    }

    // --- claiming ---

    /// Finds a block for `node`: one of its own with room whose claim was not finished, a
    /// CIDR with no block (and overlapping none) claimed in two phases, or, failing those,
    /// another node's empty block claimed over a minute ago. Candidates of each pool are tried
    /// in the node's order.
    pub(crate) async fn claim_block(&self, node: &str, pools: &[Pool]) -> Result<IpNet, IpamError> {
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        let existing: BTreeMap<IpNet, IpamBlockSpec> =
            blocks.into_iter().map(|b| (b.spec.cidr, b.spec)).collect();
        let me = host_affinity(node);
        let now = self.clock.now();
        let mut reclaimable = Vec::new();
        for pool in pools {
            let size = pool.spec.block_size();
            // Blocks of another size (the pool's blockSize changed): new blocks must not
            // overlap them.
            let odd: Vec<IpNet> = existing
                .keys()
                .filter(|c| c.prefix_len() != size && pool.spec.cidr.contains(*c))
                .copied()
                .collect();
            for cidr in candidate_blocks(&pool.spec.cidr, size, node) {
                match existing.get(&cidr) {
                    Some(b)
                        if !b.deleted
                            && b.affinity.as_deref() == Some(me.as_str())
                            && block::free_count(b) > 0 =>
                    {
                        self.confirm_affinity(node, cidr).await?;
                        return Ok(cidr);
                    }
                    Some(b) => {
                        if reclaimable_from_other(b, &me, now) {
                            reclaimable.push((cidr, b.clone()));
                        }
                    }
                    None if odd.iter().any(|o| overlaps(o, &cidr)) => {}
                    None => {
                        if self.try_claim(node, cidr).await? {
                            return Ok(cidr);
                        }
                    }
                }
            }
        }
        for (cidr, b) in reclaimable {
            let Some(owner) = b.affinity.as_deref().and_then(|a| a.strip_prefix("host:")) else {
                continue;
            };
            let cond = Condition::EmptyClaimedAt(b.affinity_claim_time.clone());
            if self.release_affinity(owner, cidr, cond).await? != Outcome::Deleted {
                continue;
            }
            info!(block = %cidr, previous = %owner, "reclaimed an empty block of another node");
            if self.try_claim(node, cidr).await? {
                return Ok(cidr);
            }
        }
        Err(IpamError::Exhausted {
            node: node.to_string(),
            pools: pools.iter().map(|p| p.name.clone()).collect(),
        })
    }

    /// Claims `cidr` for `node`: pending affinity, block, confirmed affinity. Returns false,
    /// leaving nothing behind, when another node got the block first.
    pub(crate) async fn try_claim(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
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
    ///
    /// Blocks are named by CIDR, so two blocks of different sizes could both be created over
    /// the same addresses (a pool's blockSize changed while a node still used the old one).
    /// After creating, the block is checked against every other: of two overlapping blocks,
    /// the one created second sees the first and deletes itself, so no address is ever in two
    /// blocks that both hand it out.
    pub(crate) async fn create_block(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
        let me = host_affinity(node);
        let now = self.clock.now();
        let spec = block::new_block(
            cidr,
            Some(me.clone()),
            Some(rfc3339(now)),
            unix_nanos(SystemTime::now()),
        )
        .ok_or_else(|| StoreError::Corrupt {
            kind: "IPAMBlock".to_string(),
            name: cidr_to_name(&cidr),
            reason: format!("{cidr} is too large to be a block"),
        })?;
        let name = cidr_to_name(&cidr);
        let mut obj = Object::new(name.clone(), spec);
        note_emptiness(&mut obj, now);
        match self.store.create_obj(&obj).await {
            Ok(created) => {
                if let Some(other) = self.overlapping_block(cidr).await? {
                    warn!(block = %cidr, existing = %other, "new block overlaps an existing one; deleting it");
                    self.store.delete_obj(&created).await?;
                    return Ok(false);
                }
                Ok(true)
            }
            Err(StoreError::AlreadyExists { .. }) => {
                let existing = self.store.get_obj::<IpamBlockSpec>(&name).await?;
                Ok(existing.is_some_and(|b| {
                    !b.spec.deleted && b.spec.affinity.as_deref() == Some(me.as_str())
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A block other than `cidr` itself that shares addresses with it.
    pub(crate) async fn overlapping_block(&self, cidr: IpNet) -> Result<Option<IpNet>, IpamError> {
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        Ok(blocks
            .into_iter()
            .map(|b| b.spec.cidr)
            .find(|c| *c != cidr && overlaps(c, &cidr)))
    }

    /// Phase one of a claim: the affinity exists and is pending, or already confirmed.
    pub(crate) async fn ensure_pending_affinity(
        &self,
        node: &str,
        cidr: IpNet,
    ) -> Result<(), IpamError> {
        let name = affinity_name(node, &cidr);
        for _ in 0..DATASTORE_RETRIES {
            let result = match self.store.get_obj::<BlockAffinitySpec>(&name).await? {
                None => {
                    self.store
                        .create_obj(&Object::new(
                            name.clone(),
                            affinity_spec(node, cidr, AffinityState::Pending),
                        ))
                        .await
                }
                Some(a)
                    if matches!(
                        a.spec.state,
                        AffinityState::Confirmed | AffinityState::Pending
                    ) && a.spec.deleted != "true" =>
                {
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
    pub(crate) async fn confirm_affinity(&self, node: &str, cidr: IpNet) -> Result<(), IpamError> {
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
                    self.store
                        .create_obj(&Object::new(
                            name.clone(),
                            affinity_spec(node, cidr, AffinityState::Confirmed),
                        ))
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

    // --- giving up ---

    /// Gives up `node`'s affinity for `cidr` in the three steps of the module comment.
    async fn release_affinity(
        &self,
        node: &str,
        cidr: IpNet,
        cond: Condition,
    ) -> Result<Outcome, IpamError> {
        let aff_name = affinity_name(node, &cidr);
        let what = || IpamError::TooManyRetries {
            what: format!("releasing affinity {aff_name}"),
        };
        // 1. pendingDeletion.
        let mut marked = false;
        let mut step1 = false;
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut a) = self.store.get_obj::<BlockAffinitySpec>(&aff_name).await? else {
                step1 = true;
                break;
            };
            if a.spec.state == AffinityState::PendingDeletion {
                marked = true;
                step1 = true;
                break;
            }
            a.spec.state = AffinityState::PendingDeletion;
            match self.store.update_obj(&a).await {
                Ok(_) => {
                    marked = true;
                    step1 = true;
                    break;
                }
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !step1 {
            return Err(what());
        }
        // 2. The block.
        let me = host_affinity(node);
        let mut outcome = None;
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut b) = self
                .store
                .get_obj::<IpamBlockSpec>(&cidr_to_name(&cidr))
                .await?
            else {
                outcome = Some(Outcome::NoBlock);
                break;
            };
            if b.spec.deleted || b.spec.affinity.as_deref() != Some(me.as_str()) {
                outcome = Some(Outcome::NoBlock);
                break;
            }
            let empty = block::is_empty(&b.spec);
            let deletable = empty
                && match &cond {
                    Condition::Always => true,
                    Condition::EmptyClaimedAt(seen) => b.spec.affinity_claim_time == *seen,
                    Condition::EmptySince { older_than, now } => {
                        empty_long_enough(&b, *older_than, *now)
                    }
                };
            let result = if deletable {
                self.store.delete_obj(&b).await.map(|()| Outcome::Deleted)
            } else if matches!(cond, Condition::Always) {
                b.spec.affinity = None;
                b.spec.affinity_claim_time = None;
                self.write_block(&mut b).await.map(|()| Outcome::Unaffined)
            } else {
                outcome = Some(Outcome::Kept);
                break;
            };
            match result {
                Ok(o) => {
                    outcome = Some(o);
                    break;
                }
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some(outcome) = outcome else {
            return Err(what());
        };
        // 3. The affinity goes, or comes back when the block stays.
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut a) = self.store.get_obj::<BlockAffinitySpec>(&aff_name).await? else {
                return Ok(outcome);
            };
            if a.spec.state != AffinityState::PendingDeletion {
                // Confirmed again meanwhile: the node is using the block (it recreated it).
                return Ok(outcome);
            }
            let result = if outcome == Outcome::Kept {
                if !marked {
                    return Ok(outcome);
                }
                a.spec.state = AffinityState::Confirmed;
                self.store.update_obj(&a).await.map(drop)
            } else {
                self.store.delete_obj(&a).await
            };
            match result {
                Ok(()) => return Ok(outcome),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(what())
    }
}

fn affinity_spec(node: &str, cidr: IpNet, state: AffinityState) -> BlockAffinitySpec {
    BlockAffinitySpec {
        state,
        node: node.to_string(),
        type_: "host".to_string(),
        cidr,
        deleted: "false".to_string(),
    }
}

/// Whether two networks share addresses (one contains the other).
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// An empty block affine to another host whose claim is older than
/// [`EMPTY_BLOCK_MIN_RECLAIM_AGE`] (an unparseable claim time is never old enough).
fn reclaimable_from_other(b: &IpamBlockSpec, me: &str, now: SystemTime) -> bool {
    let Some(affinity) = b.affinity.as_deref() else {
        return false;
    };
    if b.deleted || affinity == me || !affinity.starts_with("host:") || !block::is_empty(b) {
        return false;
    }
    b.affinity_claim_time
        .as_deref()
        .and_then(parse_rfc3339)
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age >= EMPTY_BLOCK_MIN_RECLAIM_AGE)
}

/// Whether the block is empty and its empty-since annotation is at least `older_than` old.
fn empty_long_enough(obj: &Object<IpamBlockSpec>, older_than: Duration, now: SystemTime) -> bool {
    block::is_empty(&obj.spec)
        && obj
            .metadata
            .annotations
            .get(EMPTY_SINCE_ANNOTATION)
            .and_then(|s| parse_rfc3339(s))
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= older_than)
}
