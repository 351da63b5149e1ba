//! Release paths (by handle, by address with Calico's `ReleaseOptions`) and the handle records
//! they keep in step.
//!
//! A block left empty by a release is kept while it is affine to a node (the node's GC pass,
//! [`Ipam::release_empty_blocks`], gives it up after a grace period) and deleted at once when
//! it is unaffine (its node was released), as Calico does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::allocator::{count_u32, retryable, Family, Ipam, IpamError, DATASTORE_RETRIES};
use crate::block::{self, Refusal, ReleaseOptions};
use crate::model::{
    cidr_to_name, handle_name, ordinal_to_ip, IpamBlockSpec, IpamHandleSpec, Object,
};
use crate::store::{StoreError, StoreExt};

/// What [`Ipam::release_ips_detailed`] did with each address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Addresses freed.
    pub released: Vec<IpAddr>,
    /// Addresses that were not allocated (or are in no block).
    pub not_allocated: Vec<IpAddr>,
    /// Addresses left allocated because their handle or sequence number did not match.
    pub refused: Vec<(IpAddr, Refusal)>,
}

impl Ipam {
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

    /// Releases addresses (Calico's `ReleaseIPs`); returns those not released: not allocated,
    /// or refused because the handle or sequence number given does not match (logged; see
    /// [`Ipam::release_ips_detailed`] to tell them apart). A late release, carrying the
    /// sequence number of an allocation since freed and handed out again, frees nothing.
    pub async fn release_ips(&self, opts: &[ReleaseOptions]) -> Result<Vec<IpAddr>, IpamError> {
        let report = self.release_ips_detailed(opts).await?;
        let mut out = report.not_allocated;
        out.extend(report.refused.into_iter().map(|(ip, _)| ip));
        out.sort();
        Ok(out)
    }

    /// [`Ipam::release_ips`], reporting what happened to each address.
    #[tracing::instrument(skip_all, fields(count = opts.len()))]
    pub async fn release_ips_detailed(
        &self,
        opts: &[ReleaseOptions],
    ) -> Result<ReleaseReport, IpamError> {
        let (blocks, _) = self.store.list_objs::<IpamBlockSpec>().await?;
        let mut report = ReleaseReport::default();
        let mut by_block: BTreeMap<IpNet, Vec<ReleaseOptions>> = BTreeMap::new();
        for opt in opts {
            match blocks
                .iter()
                .find(|b| !b.spec.deleted && b.spec.cidr.contains(&opt.address))
            {
                Some(b) => by_block.entry(b.spec.cidr).or_default().push(opt.clone()),
                None => report.not_allocated.push(opt.address),
            }
        }
        for (cidr, opts) in by_block {
            let outcome = self.release_checked_in_block(cidr, &opts).await?;
            let mut per_handle: BTreeMap<String, u32> = BTreeMap::new();
            for (ip, handle) in outcome.freed {
                report.released.push(ip);
                if let Some(h) = handle {
                    *per_handle.entry(h).or_default() += 1;
                }
            }
            for (handle, n) in per_handle {
                self.decrement_handle(&handle, &BTreeMap::from([(cidr.to_string(), n)]))
                    .await?;
            }
            for (ip, why) in &outcome.refused {
                warn!(address = %ip, reason = %why, "release refused");
            }
            report.not_allocated.extend(outcome.not_allocated);
            report.refused.extend(outcome.refused);
        }
        report.released.sort();
        report.not_allocated.sort();
        info!(released = ?report.released, "released addresses");
        Ok(report)
    }

    /// One block's part of [`Ipam::release_ips_detailed`], with CAS retries.
    async fn release_checked_in_block(
        &self,
        cidr: IpNet,
        opts: &[ReleaseOptions],
    ) -> Result<block::CheckedRelease, IpamError> {
        let name = cidr_to_name(&cidr);
        for _ in 0..DATASTORE_RETRIES {
            let Some(mut b) = self.store.get_obj::<IpamBlockSpec>(&name).await? else {
                return Ok(block::CheckedRelease {
                    not_allocated: opts.iter().map(|o| o.address).collect(),
                    ..Default::default()
                });
            };
            let outcome = block::release_checked(&mut b.spec, opts);
            if outcome.freed.is_empty() {
                return Ok(outcome);
            }
            match self.write_released_block(&mut b).await {
                Ok(()) => return Ok(outcome),
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("releasing in block {cidr}"),
        })
    }

    /// Writes a block after a release: deleted when it is now empty and unaffine, updated
    /// otherwise.
    async fn write_released_block(&self, b: &mut Object<IpamBlockSpec>) -> Result<(), StoreError> {
        if b.spec.affinity.is_none() && block::is_empty(&b.spec) {
            info!(block = %b.spec.cidr, "unaffine block is empty, deleting it");
            return self.store.delete_obj(b).await;
        }
        self.write_block(b).await
    }

    /// The handle record, unless absent or soft-deleted.
    pub(crate) async fn get_handle(
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
    pub(crate) async fn handle_nets(
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
    pub(crate) async fn add_to_handle(
        &self,
        handle_id: &str,
        cidr: IpNet,
        n: usize,
    ) -> Result<(), IpamError> {
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
    pub(crate) async fn decrement_handle(
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
    pub(crate) async fn release_in_block(
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
            match self.write_released_block(&mut b).await {
                Ok(()) => {
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
