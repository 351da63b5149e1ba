//! Routes only, incrementally: the delta-tracking half of Felix's route table, for routes that
//! change one prefix at a time (BGP's best routes in `brindle-bgpd`).
//!
//! [`RouteTracker`] holds what is desired and what it installed. [`RouteTracker::flush`] writes
//! only the prefixes that changed, as one batch ([`Kernel::write_routes`]); a write that fails
//! stays pending for the next flush. [`RouteTracker::resync`] is the full pass (dump, compare,
//! write: [`super::reconcile`]'s route half) that also removes routes of ours nobody wants any
//! more. Nothing but routes is touched: no device, neighbour or FDB entry, and only routes with
//! protocol [`RTPROT_BRINDLE`].

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::kernel::{Kernel, KernelRoute, RouteKind, RouteWrite};
use super::{ApplyReport, DataplaneError, RouteTarget, RTPROT_BRINDLE};

/// Desired routes, installed routes, and the prefixes where they may differ.
#[derive(Debug, Default)]
pub(crate) struct RouteTracker {
    desired: BTreeMap<IpNet, RouteTarget>,
    /// The prefixes where the kernel holds a route of ours, and whether it is the desired one.
    /// (Not the targets themselves: at 100,000 routes a second copy cost 10 MiB.)
    installed: BTreeMap<IpNet, bool>,
    dirty: BTreeSet<IpNet>,
}

enum Write {
    Add { target: RouteTarget, replace: bool },
    Delete,
}

impl RouteTracker {
    /// Learns the routes of ours already in the kernel (left by an earlier run): they are
    /// replaced in place when desired, and removed by the next [`RouteTracker::resync`] if not.
    pub async fn adopt<K: Kernel>(&mut self, kernel: &K) -> Result<usize, DataplaneError> {
        self.installed = ours(kernel)
            .await?
            .into_keys()
            // Whatever they are, they are rewritten when desired: `replace` over our own.
            .map(|dst| (dst, false))
            .collect();
        Ok(self.installed.len())
    }

    pub fn set(&mut self, dst: IpNet, target: Option<RouteTarget>) {
        let changed = match &target {
            Some(t) => self.desired.insert(dst, t.clone()).as_ref() != Some(t),
            None => self.desired.remove(&dst).is_some(),
        };
        if changed {
            if let Some(as_desired) = self.installed.get_mut(&dst) {
                *as_desired = false;
            }
        }
        let in_step = match self.installed.get(&dst) {
            Some(as_desired) => *as_desired && self.desired.contains_key(&dst),
            None => !self.desired.contains_key(&dst),
        };
        if !in_step {
            self.dirty.insert(dst);
        }
    }

    /// Prefixes whose write is still to be done (or failed).
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    pub fn desired_len(&self) -> usize {
        self.desired.len()
    }

    /// Writes the changed prefixes. Failed writes stay pending.
    pub async fn flush<K: Kernel>(&mut self, kernel: &K) -> ApplyReport {
        let mut writes = Vec::new();
        for dst in std::mem::take(&mut self.dirty) {
            let write = match (self.desired.get(&dst), self.installed.get(&dst)) {
                (Some(_), Some(true)) => continue,
                (Some(want), have) => Write::Add {
                    target: want.clone(),
                    // Replacing is safe only over a route of ours: the kernel would overwrite
                    // whichever route holds the key. A foreign one makes the add fail instead.
                    replace: have.is_some(),
                },
                (None, Some(_)) => Write::Delete,
                (None, None) => continue,
            };
            writes.push((dst, write));
        }
        let batch = writes
            .iter()
            .map(|(dst, write)| match write {
                Write::Add { target, replace } => RouteWrite::Add {
                    dst: *dst,
                    target: target.clone(),
                    replace: *replace,
                },
                Write::Delete => RouteWrite::Delete(own_route(*dst)),
            })
            .collect();
        let results = kernel.write_routes(batch).await;
        let results = writes
            .into_iter()
            .zip(results)
            .map(|((dst, write), result)| (dst, write, result));

        let mut report = ApplyReport::default();
        for (dst, write, result) in results {
            match (write, result) {
                (Write::Add { target, .. }, Ok(())) => {
                    // Desired may not have changed during the write: `set` is not called then.
                    let as_desired = self.desired.get(&dst) == Some(&target);
                    self.installed.insert(dst, as_desired);
                    report.routes_added += 1;
                }
                (Write::Delete, Ok(())) => {
                    self.installed.remove(&dst);
                    report.routes_removed += 1;
                }
                (_, Err(e)) => {
                    self.dirty.insert(dst);
                    report.errors.push(e.to_string());
                }
            }
        }
        report
    }

    /// The full pass: every route of ours in the kernel is compared with what is desired,
    /// stale ones are deleted and missing or wrong ones written; then the kernel is read again
    /// to know what is installed.
    pub async fn resync<K: Kernel>(&mut self, kernel: &K) -> Result<ApplyReport, DataplaneError> {
        let mut report = ApplyReport::default();
        super::reconcile::reconcile_routes(kernel, &self.desired, &Default::default(), &mut report)
            .await?;
        let kernel_ours = ours(kernel).await?;
        self.installed = kernel_ours
            .iter()
            .map(|(dst, t)| (*dst, self.desired.get(dst) == Some(t)))
            .collect();
        self.dirty = self
            .desired
            .keys()
            .filter(|dst| self.installed.get(dst) != Some(&true))
            .chain(
                self.installed
                    .keys()
                    .filter(|dst| !self.desired.contains_key(dst)),
            )
            .copied()
            .collect();
        Ok(report)
    }

    /// Removes every route this tracker installed (at shutdown).
    pub async fn clear<K: Kernel>(&mut self, kernel: &K) -> ApplyReport {
        self.desired.clear();
        self.dirty = self.installed.keys().copied().collect();
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
}
