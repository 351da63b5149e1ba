//! Routes only, incrementally: the delta-tracking half of Felix's route table, for routes that
//! change one prefix at a time (BGP's best routes in `brindle-bgpd`).
//!
//! [`RouteTracker`] holds, per prefix, what is desired and whether the kernel holds a route of
//! ours. [`RouteTracker::take_batch`] takes the prefixes that changed as one batch of writes
//! ([`Kernel::write_routes`]); [`RouteTracker::complete`] records the outcome, and a write that
//! failed waits for the next retry. Between the two the tracker is free: the caller keeps
//! taking changes while a batch is in the kernel (`brindle-bgpd` writes while UPDATEs are still
//! arriving). [`RouteTracker::resync`] is the full pass (dump, compare, write:
//! [`super::reconcile`]'s route half) that also removes routes of ours nobody wants any more.
//! Nothing but routes is touched: no device, neighbour or FDB entry, and only routes with
//! protocol [`RTPROT_BRINDLE`].
//!
//! One hash map keyed by prefix holds everything (100,000 BGP routes cost a lookup or two per
//! change, not searches in three ordered maps); the order of prefixes is not needed between
//! full resyncs.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use super::kernel::{Kernel, KernelRoute, RouteKind, RouteWrite};
use super::{ApplyReport, DataplaneError, RouteTarget, RTPROT_BRINDLE};

/// Most writes in one batch of [`super::RouteTable::begin_flush`]: while a batch is in the
/// kernel the next collects, so batches keep pace with the changes; the bound keeps the memory
/// a batch takes on its way (its writes, their netlink messages and results: a few hundred
/// bytes a route) small, and the changes flowing.
pub(crate) const MAX_BATCH_WRITES: usize = 4096;

/// One prefix: what is desired and what the kernel holds.
#[derive(Debug, Default)]
struct Slot {
    desired: Option<RouteTarget>,
    /// Counts the changes of `desired`, so that a write's outcome can tell whether what it
    /// wrote is still what is desired.
    generation: u32,
    /// `Some(as_desired)` when the kernel holds a route of ours for the prefix. (Not the target
    /// itself: at 100,000 routes a second copy cost 10 MiB.)
    installed: Option<bool>,
    /// In [`RouteTracker::dirty`].
    queued: bool,
}

impl Slot {
    fn in_step(&self) -> bool {
        match self.installed {
            Some(as_desired) => as_desired && self.desired.is_some(),
            None => self.desired.is_none(),
        }
    }

    /// Nothing desired, nothing installed, nothing queued: the slot can go.
    fn is_idle(&self) -> bool {
        self.desired.is_none() && self.installed.is_none() && !self.queued
    }
}

/// Desired routes, installed routes, and the prefixes where they may differ.
#[derive(Debug, Default)]
pub(crate) struct RouteTracker {
    slots: HashMap<IpNet, Slot>,
    /// How many slots have a desired route.
    desired: usize,
    /// Prefixes to write (each once: [`Slot::queued`]).
    dirty: Vec<IpNet>,
    /// Prefixes whose last write failed, for the next retry.
    failed: Vec<IpNet>,
}

/// A batch of writes taken from a [`RouteTracker`], to write without borrowing it.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The writes, in the order given to the kernel.
    pub writes: Vec<RouteWrite>,
    /// Per write: its prefix and, for an add, the generation of the target it writes.
    meta: Vec<(IpNet, Option<u32>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

impl RouteTracker {
    /// Learns the routes of ours already in the kernel (left by an earlier run): they are
    /// replaced in place when desired, and removed by the next [`RouteTracker::resync`] if not.
    pub async fn adopt<K: Kernel>(&mut self, kernel: &K) -> Result<usize, DataplaneError> {
        let found = ours(kernel).await?;
        for slot in self.slots.values_mut() {
            slot.installed = None;
        }
        for dst in found.into_keys() {
            // Whatever they are, they are rewritten when desired: `replace` over our own.
            self.slots.entry(dst).or_default().installed = Some(false);
        }
        self.slots.retain(|_, slot| !slot.is_idle());
        Ok(self
            .slots
            .values()
            .filter(|slot| slot.installed.is_some())
            .count())
    }

    pub fn set(&mut self, dst: IpNet, target: Option<RouteTarget>) {
        let slot = match target {
            Some(target) => {
                let slot = self.slots.entry(dst).or_default();
                if slot.desired.as_ref() == Some(&target) {
                    return;
                }
                if slot.desired.is_none() {
                    self.desired += 1;
                }
                slot.desired = Some(target);
                slot
            }
            None => {
                let Some(slot) = self.slots.get_mut(&dst) else {
                    return;
                };
                if slot.desired.take().is_none() {
                    return;
                }
                self.desired -= 1;
                slot
            }
        };
        slot.generation = slot.generation.wrapping_add(1);
        if let Some(as_desired) = &mut slot.installed {
            *as_desired = false;
        }
        if !slot.in_step() && !slot.queued {
            slot.queued = true;
            self.dirty.push(dst);
        }
    }

    /// Prefixes whose write is still to be done (or failed).
    pub fn pending(&self) -> usize {
        self.dirty.len() + self.failed.len()
    }

    pub fn desired_len(&self) -> usize {
        self.desired
    }

    /// The writes for at most `max` of the changed prefixes (and, with `retry_failed`, of those
    /// whose last write failed; the others stay pending); `None` when there is nothing to write. Until [`RouteTracker::complete`]
    /// the tracker takes further changes as usual; a prefix changed meanwhile is written again
    /// by a later batch.
    pub fn take_batch(&mut self, retry_failed: bool, max: usize) -> Option<Batch> {
        if retry_failed {
            for dst in std::mem::take(&mut self.failed) {
                if let Some(slot) = self.slots.get_mut(&dst) {
                    if !slot.queued {
                        slot.queued = true;
                        self.dirty.push(dst);
                    }
                }
            }
        }
        if self.dirty.is_empty() {
            return None;
        }
        let taken = self
            .dirty
            .split_off(self.dirty.len().saturating_sub(max.max(1)));
        let mut batch = Batch {
            writes: Vec::with_capacity(taken.len()),
            meta: Vec::with_capacity(taken.len()),
        };
        for dst in taken {
            let Some(slot) = self.slots.get_mut(&dst) else {
                continue;
            };
            slot.queued = false;
            match (&slot.desired, slot.installed) {
                (Some(_), Some(true)) => {}
                (Some(want), have) => {
                    batch.writes.push(RouteWrite::Add {
                        dst,
                        target: want.clone(),
                        // Replacing is safe only over a route of ours: the kernel would
                        // overwrite whichever route holds the key. A foreign one makes the add
                        // fail instead.
                        replace: have.is_some(),
                    });
                    batch.meta.push((dst, Some(slot.generation)));
                }
                (None, Some(_)) => {
                    batch.writes.push(RouteWrite::Delete(own_route(dst)));
                    batch.meta.push((dst, None));
                }
                (None, None) => {
                    self.slots.remove(&dst);
                }
            }
        }
        if batch.is_empty() && !self.dirty.is_empty() {
            // Everything taken was in step already: try the rest.
            return self.take_batch(false, max);
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Records the outcome of a batch's writes (`results` in the order of its writes, as
    /// [`Kernel::write_routes`] gives them). Failed writes wait for the next retry.
    pub fn complete(
        &mut self,
        batch: Batch,
        results: Vec<Result<(), DataplaneError>>,
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut results = results.into_iter();
        for (dst, generation) in batch.meta {
            let result = results.next().unwrap_or_else(|| {
                Err(DataplaneError::Netlink {
                    op: "write route",
                    object: dst.to_string(),
                    reason: "no answer for this write".into(),
                })
            });
            let slot = self.slots.entry(dst).or_default();
            match (generation, result) {
                (Some(generation), Ok(())) => {
                    // Desired may have changed during the write.
                    slot.installed = Some(slot.generation == generation);
                    report.routes_added += 1;
                }
                (None, Ok(())) => {
                    slot.installed = None;
                    report.routes_removed += 1;
                }
                (_, Err(e)) => {
                    self.failed.push(dst);
                    report.errors.push(e.to_string());
                    continue;
                }
            }
            // Changed while it was written: written again by a later batch.
            if !slot.in_step() && !slot.queued {
                slot.queued = true;
                self.dirty.push(dst);
            }
            if slot.is_idle() {
                self.slots.remove(&dst);
            }
        }
        report
    }

    /// Writes the changed prefixes and those whose last write failed, in batches of at most
    /// [`MAX_BATCH_WRITES`], and waits for the outcome. No batch may be in flight.
    pub async fn flush<K: Kernel>(&mut self, kernel: &K) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut retry_failed = true;
        while let Some(mut batch) = self.take_batch(retry_failed, MAX_BATCH_WRITES) {
            // Failures of this flush wait for the next one.
            retry_failed = false;
            let writes = std::mem::take(&mut batch.writes);
            let results = kernel.write_routes(writes).await;
            let done = self.complete(batch, results);
            report.routes_added += done.routes_added;
            report.routes_removed += done.routes_removed;
            report.errors.extend(done.errors);
        }
        report
    }

    /// Queues the removal of every route of ours in the kernel that is not desired: those
    /// found by [`RouteTracker::adopt`] (left by an earlier run) that nobody wants any more.
    /// Cheaper than [`RouteTracker::resync`]: no dump of the kernel's table.
    pub fn remove_unwanted(&mut self) -> usize {
        let mut queued = 0;
        for (dst, slot) in &mut self.slots {
            if slot.desired.is_none() && slot.installed.is_some() && !slot.queued {
                slot.queued = true;
                self.dirty.push(*dst);
                queued += 1;
            }
        }
        queued
    }

    /// The full pass: every route of ours in the kernel is compared with what is desired,
    /// stale ones are deleted and missing or wrong ones written; then the kernel is read again
    /// to know what is installed. No batch may be in flight.
    pub async fn resync<K: Kernel>(&mut self, kernel: &K) -> Result<ApplyReport, DataplaneError> {
        let mut report = ApplyReport::default();
        let desired: BTreeMap<IpNet, RouteTarget> = self
            .slots
            .iter()
            .filter_map(|(dst, slot)| Some((*dst, slot.desired.clone()?)))
            .collect();
        super::reconcile::reconcile_routes(kernel, &desired, &Default::default(), &mut report)
            .await?;
        let kernel_ours = ours(kernel).await?;
        for slot in self.slots.values_mut() {
            slot.installed = None;
            slot.queued = false;
        }
        for (dst, target) in kernel_ours {
            let slot = self.slots.entry(dst).or_default();
            slot.installed = Some(slot.desired.as_ref() == Some(&target));
        }
        self.dirty.clear();
        self.failed.clear();
        self.slots.retain(|_, slot| !slot.is_idle());
        for (dst, slot) in &mut self.slots {
            if !slot.in_step() {
                slot.queued = true;
                self.dirty.push(*dst);
            }
        }
        Ok(report)
    }

    /// Removes every route this tracker installed (at shutdown). No batch may be in flight.
    pub async fn clear<K: Kernel>(&mut self, kernel: &K) -> ApplyReport {
        self.desired = 0;
        for (dst, slot) in &mut self.slots {
            slot.desired = None;
            slot.generation = slot.generation.wrapping_add(1);
            if slot.installed.is_some() && !slot.queued {
                slot.queued = true;
                self.dirty.push(*dst);
            }
        }
        self.flush(kernel).await
    }
}

/// The routes of ours in the kernel that have a shape Brindle writes.
async fn ours<K: Kernel>(kernel: &K) -> Result<BTreeMap<IpNet, RouteTarget>, DataplaneError> {
    Ok(kernel
        .routes()
        .await?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_BRINDLE)
        .filter_map(|r| Some((r.dst, r.target()?)))
        .collect())
}

/// Our route to `dst` as `del_route` matches it: protocol 98, TOS 0, any metric.
fn own_route(dst: IpNet) -> KernelRoute {
    KernelRoute {
        dst,
        protocol: RTPROT_BRINDLE,
        tos: 0,
        metric: None,
        kind: RouteKind::Unicast,
        scope_link: false,
        onlink: false,
        gateway: None,
        dev: None,
        multipath: false,
        nexthops: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::fake::FakeKernel;
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    fn via(gws: &[&str]) -> RouteTarget {
        RouteTarget::via(gws.iter().map(|g| g.parse::<IpAddr>().expect("address")))
            .expect("at least one gateway")
    }

    #[tokio::test]
    async fn flush_writes_only_changes_and_keeps_failures_pending() {
        let kernel = FakeKernel::with_links(&["eth0"]);
        let mut t = RouteTracker::default();
        t.set(net("10.1.0.0/24"), Some(via(&["192.0.2.1"])));
        t.set(net("10.2.0.0/24"), Some(via(&["192.0.2.2", "192.0.2.1"])));
        let r = t.flush(&kernel).await;
        assert_eq!((r.routes_added, r.errors.len()), (2, 0));
        assert_eq!(
            kernel.our_routes().get(&net("10.2.0.0/24")),
            Some(&via(&["192.0.2.1", "192.0.2.2"]))
        );
        let writes = kernel.writes();

        // Setting the same again writes nothing.
        t.set(net("10.1.0.0/24"), Some(via(&["192.0.2.1"])));
        assert_eq!(t.pending(), 0);
        t.flush(&kernel).await;
        assert_eq!(kernel.writes(), writes);

        // A changed group is replaced in place; a withdrawn prefix deleted.
        t.set(net("10.1.0.0/24"), Some(via(&["192.0.2.1", "192.0.2.3"])));
        t.set(net("10.2.0.0/24"), None);
        kernel.fail("delete route", "10.2.0.0/24");
        let r = t.flush(&kernel).await;
        assert_eq!(
            (r.routes_added, r.routes_removed, r.errors.len()),
            (1, 0, 1)
        );
        assert_eq!(t.pending(), 1);
        kernel.heal();
        let r = t.flush(&kernel).await;
        assert_eq!((r.routes_removed, r.errors.len()), (1, 0));
        assert_eq!(
            kernel.our_routes().into_iter().collect::<Vec<_>>(),
            vec![(net("10.1.0.0/24"), via(&["192.0.2.1", "192.0.2.3"]))]
        );

        t.clear(&kernel).await;
        assert!(kernel.our_routes().is_empty());
    }

    #[tokio::test]
    async fn a_foreign_route_is_never_replaced_and_resync_removes_stale_ones() {
        let kernel = FakeKernel::with_links(&["eth0"]);
        // Someone else's route to 10.3.0.0/24, and a stale one of ours.
        let mut foreign = KernelRoute::from_target(net("10.3.0.0/24"), 4, &via(&["192.0.2.9"]));
        foreign.protocol = 4;
        kernel.insert_route(foreign.clone());
        kernel.insert_route(KernelRoute::from_target(
            net("10.4.0.0/24"),
            RTPROT_BRINDLE,
            &via(&["192.0.2.4"]),
        ));
        let mut t = RouteTracker::default();
        assert_eq!(t.adopt(&kernel).await.expect("dump"), 1);
        t.set(net("10.3.0.0/24"), Some(via(&["192.0.2.1"])));
        let r = t.flush(&kernel).await;
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(kernel.has_route(&foreign));

        let r = t.resync(&kernel).await.expect("resync");
        assert_eq!(r.routes_removed, 1, "{r:?}");
        assert!(kernel.our_routes().is_empty());
        assert!(kernel.has_route(&foreign));
        assert_eq!(t.pending(), 1, "the conflicting prefix stays pending");
    }

    #[tokio::test]
    async fn changes_while_a_batch_is_in_flight_are_written_by_the_next() {
        let kernel = FakeKernel::with_links(&["eth0"]);
        let mut t = RouteTracker::default();
        t.set(net("10.1.0.0/24"), Some(via(&["192.0.2.1"])));
        t.set(net("10.2.0.0/24"), Some(via(&["192.0.2.1"])));
        let mut batch = t.take_batch(false, usize::MAX).expect("two adds");
        assert_eq!(batch.writes.len(), 2);
        assert_eq!(t.pending(), 0);
        // While the adds are in the kernel: one prefix withdrawn, the other changed.
        t.set(net("10.1.0.0/24"), None);
        t.set(net("10.2.0.0/24"), Some(via(&["192.0.2.2"])));
        let results = kernel.write_routes(std::mem::take(&mut batch.writes)).await;
        let r = t.complete(batch, results);
        assert_eq!((r.routes_added, r.errors.len()), (2, 0));
        assert_eq!(t.pending(), 2, "both written again");
        let r = t.flush(&kernel).await;
        assert_eq!((r.routes_added, r.routes_removed), (1, 1), "{r:?}");
        assert_eq!(
            kernel.our_routes().into_iter().collect::<Vec<_>>(),
            vec![(net("10.2.0.0/24"), via(&["192.0.2.2"]))]
        );
        assert_eq!(t.pending(), 0);
        assert!(t.take_batch(true, usize::MAX).is_none());
        assert_eq!(t.desired_len(), 1);
    }

    #[tokio::test]
    async fn remove_unwanted_deletes_only_adopted_routes_nobody_wants() {
        let kernel = FakeKernel::with_links(&["eth0"]);
        for (dst, gw) in [("10.5.0.0/24", "192.0.2.5"), ("10.6.0.0/24", "192.0.2.6")] {
            kernel.insert_route(KernelRoute::from_target(
                net(dst),
                RTPROT_BRINDLE,
                &via(&[gw]),
            ));
        }
        let mut t = RouteTracker::default();
        assert_eq!(t.adopt(&kernel).await.expect("dump"), 2);
        // 10.6.0.0/24 is learned again (through another gateway); 10.5.0.0/24 is not.
        t.set(net("10.6.0.0/24"), Some(via(&["192.0.2.1"])));
        assert_eq!(t.remove_unwanted(), 1);
        let r = t.flush(&kernel).await;
        assert_eq!(
            (r.routes_added, r.routes_removed, r.errors.len()),
            (1, 1, 0),
            "{r:?}"
        );
        assert_eq!(
            kernel.our_routes().into_iter().collect::<Vec<_>>(),
            vec![(net("10.6.0.0/24"), via(&["192.0.2.1"]))]
        );
        assert_eq!(t.pending(), 0);
    }
}
