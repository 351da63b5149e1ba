//! `install_routes`: the speaker's best routes into the kernel, through the dataplane's
//! [`RouteTable`] (protocol 98, `via` the next hops, one multipath route for an ECMP group).
//!
//! Changes are taken from the speaker as they come (whatever has queued up, up to
//! [`MAX_BATCH`] at a time) and written incrementally, one batch in the kernel while the next
//! collects, so that the writes keep pace with the UPDATEs. Writes that fail are retried every
//! [`RETRY_INTERVAL`]. The routes of ours found in the kernel at the start (left by an earlier
//! run) that nobody wants are removed as soon as every peer has sent End-of-RIB, or is not
//! Established after the hold time (at the latest after [`FIRST_RESYNC`]); a full resync
//! (dump, compare, write) every [`RESYNC_INTERVAL`] also repairs what others changed. When
//! the speaker's stream
//! ends (shutdown), every installed route is removed.
//!
//! Next hops are checked too (RFC 4271 §9.1.2.1): every [`RESOLVE_INTERVAL`] a resolver task
//! asks the speaker for the next hops of its learned routes and the kernel whether each is
//! reachable through a route that is not one of ours, and tells the speaker when that changes;
//! routes through an unreachable next hop then leave the decision process, and another path,
//! if there is one, is installed instead. A next hop that is not on one of our links (a
//! multihop peer's) is resolved recursively, as BIRD's `gateway recursive`: the route is
//! installed `via` the gateways of the kernel route towards it, and rewritten when that route
//! changes. The resolver is a task of its own because it waits on the
//! speaker, which may itself wait on the installer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use brindle_bgp::fsm::State;
use brindle_bgp::speaker::{RouteChange, SpeakerHandle};
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, interval_at, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use futures::future::BoxFuture;

use crate::dataplane::{
    ApplyReport, Dataplane, NextHopResolution, RouteTable, RouteTarget, WrittenBatch,
};

/// Most route changes written in one flush.
pub const MAX_BATCH: usize = 16_384;
/// How often failed writes are tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Longest delay of the first full resync after start.
pub const FIRST_RESYNC: Duration = Duration::from_secs(60);
/// Full resync period.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// How often the next hops are checked against the kernel.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often, until the peers' initial tables are in, their End-of-RIB is looked for: the
/// kernel is programmed at the first look after the last one (checking once a second cost
/// a 30-node mesh up to a second: docs/benchmarks.md, mesh against N).
pub const INITIAL_TABLES_POLL: Duration = Duration::from_millis(100);

/// The kernel route for a speaker's next hops: the gateways the kernel can use for `prefix`
/// (same family; not an IPv4-mapped IPv6 address or an IPv6 link-local one, which would need
/// a device), `None` when none is left.
pub fn target_for(prefix: &IpNet, next_hops: &[IpAddr]) -> Option<RouteTarget> {
    RouteTarget::via(next_hops.iter().copied().filter(|gw| match (prefix, gw) {
        (IpNet::V4(_), IpAddr::V4(a)) => !a.is_unspecified(),
        (IpNet::V6(_), IpAddr::V6(a)) => {
            !a.is_unspecified()
                && a.to_ipv4_mapped().is_none()
                && (a.segments()[0] & 0xffc0) != 0xfe80
        }
        _ => false,
    }))
}

fn log_report(what: &str, report: &ApplyReport, pending: usize) {
    if report.routes_added + report.routes_removed > 0 {
        info!(
            added = report.routes_added,
            removed = report.routes_removed,
            pending,
            "{what}"
        );
    }
    if let Some(first) = report.errors.first() {
        warn!(
            errors = report.errors.len(),
            first = %first,
            pending,
            "{what}: some route writes failed; retried in {} s",
            RETRY_INTERVAL.as_secs()
        );
    }
}

/// Gateways of the recursive next hops (not on one of our links): BGP next hop → the gateways
/// of the kernel route towards it. A next hop not in the map is installed as it is.
pub type Recursive = BTreeMap<IpAddr, Vec<IpAddr>>;

/// The kernel route for a best route's BGP next hops, recursive ones replaced by the gateways
/// they resolve to (see [`target_for`]).
pub fn resolved_target(
    prefix: &IpNet,
    next_hops: &[IpAddr],
    recursive: &Recursive,
) -> Option<RouteTarget> {
    if !next_hops.iter().any(|nh| recursive.contains_key(nh)) {
        return target_for(prefix, next_hops);
    }
    let gws: Vec<IpAddr> = next_hops
        .iter()
        .flat_map(|nh| match recursive.get(nh) {
            Some(gws) => gws.as_slice(),
            None => std::slice::from_ref(nh),
        })
        .copied()
        .collect();
    target_for(prefix, &gws)
}

/// Checks the speaker's next hops against the kernel until the speaker stops, and publishes
/// the gateways of recursive next hops on `recursive`.
pub async fn resolve_next_hops(speaker: SpeakerHandle, recursive: watch::Sender<Recursive>) {
    let dataplane = match Dataplane::connect().await {
        Ok(dataplane) => dataplane,
        Err(e) => {
            warn!(error = %e, "next-hop checks: no access to the kernel's routes; every next hop counts as reachable");
            return;
        }
    };
    // Kept in step with what the speaker was told (never pruned: a next hop that leaves and
    // comes back is still marked in the speaker's RIB).
    let mut unreachable: BTreeSet<IpAddr> = BTreeSet::new();
    let mut tick = interval(RESOLVE_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(next_hops) = speaker.next_hops().await else {
            return;
        };
        let mut gateways = Recursive::new();
        for next_hop in next_hops {
            let resolution = match dataplane.resolve_next_hop(next_hop).await {
                Ok(resolution) => resolution,
                Err(e) => {
                    debug!(%next_hop, error = %e, "next-hop lookup failed; unchanged");
                    if let Some(gws) = recursive.borrow().get(&next_hop) {
                        gateways.insert(next_hop, gws.clone());
                    }
                    continue;
                }
            };
            let reachable = resolution != NextHopResolution::Unreachable;
            if let NextHopResolution::Via(gws) = resolution {
                gateways.insert(next_hop, gws);
            }
            if reachable != unreachable.contains(&next_hop) {
                continue;
            }
            if reachable {
                info!(%next_hop, "next hop reachable again");
                unreachable.remove(&next_hop);
            } else {
                warn!(%next_hop, "next hop unreachable: its routes are not used");
                unreachable.insert(next_hop);
            }
            if speaker
                .set_next_hop_reachable(next_hop, reachable)
                .await
                .is_err()
            {
                return;
            }
        }
        recursive.send_if_modified(|old| {
            if *old == gateways {
                return false;
            }
            for (next_hop, gws) in &gateways {
                if old.get(next_hop) != Some(gws) {
                    info!(%next_hop, gateways = ?gws, "recursive next hop: installed via the route towards it");
                }
            }
            *old = gateways;
            true
        });
    }
}

/// Resolves once every configured peer has sent End-of-RIB for each family of its session,
/// or is not Established `hold_time` after the start (RFC 4724 §4.1's "the initial table is
/// complete"); [`FIRST_RESYNC`] bounds the wait in any case (a peer that never sends
/// End-of-RIB). The first full resync, which removes routes left by an earlier run, waits for
/// this.
pub async fn initial_tables_received(speaker: SpeakerHandle, hold_time: Duration) {
    let start = Instant::now();
    let mut tick = interval(INITIAL_TABLES_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(peers) = speaker.peers().await else {
            return;
        };
        let waited = start.elapsed();
        let ready = peers.iter().all(|p| {
            if p.state == State::Established {
                p.end_of_rib
            } else {
                waited >= hold_time
            }
        });
        if ready {
            info!(
                after_ms = waited.as_millis() as u64,
                "initial tables received from every peer"
            );
            return;
        }
    }
}

/// Connects to the kernel and installs routes until the speaker's stream ends, then removes
/// them (unless not `remove_at_end`: graceful restart). Without a kernel connection it logs why and only drains the stream. `initial` ends
/// when the peers' initial tables are in ([`initial_tables_received`]): the routes of an
/// earlier run that nobody wants are then removed (at the latest [`FIRST_RESYNC`] after the
/// start).
pub async fn run(
    mut routes: mpsc::Receiver<RouteChange>,
    recursive: watch::Receiver<Recursive>,
    initial: impl Future<Output = ()> + Send,
    remove_at_end: bool,
) {
    let table = match Dataplane::connect().await {
        Ok(dataplane) => dataplane.route_table().await,
        Err(e) => Err(e),
    };
    let mut table = match table {
        Ok(table) => table,
        Err(e) => {
            warn!(error = %e, "install_routes: no access to the kernel's routes; nothing will be installed");
            while routes.recv().await.is_some() {}
            return;
        }
    };
    install(&mut routes, &mut table, recursive, initial).await;
    if !remove_at_end {
        info!(
            routes = table.len(),
            "graceful restart: the installed routes stay in the kernel"
        );
        return;
    }
    let report = table.clear().await;
    log_report("removed the installed routes", &report, table.pending());
}

/// The batch of writes in the kernel, if any.
type Writing = Option<BoxFuture<'static, WrittenBatch>>;

/// Waits for the batch in the kernel; never resolves when there is none.
async fn written(writing: &mut Writing) -> WrittenBatch {
    match writing {
        Some(batch) => batch.await,
        None => std::future::pending().await,
    }
}

/// Waits for the batch in the kernel, if any, and records its outcome.
async fn settle(table: &mut RouteTable, writing: &mut Writing) {
    if let Some(batch) = writing.take() {
        let report = table.end_flush(batch.await);
        log_report("routes installed", &report, table.pending());
    }
}

/// Takes the speaker's changes and writes them in batches, one batch in the kernel at a time
/// while the next collects: as soon as a batch is done, whatever changed meanwhile goes, so
/// the writes keep pace with the UPDATEs instead of waiting for them to end.
async fn install(
    routes: &mut mpsc::Receiver<RouteChange>,
    table: &mut RouteTable,
    mut recursive: watch::Receiver<Recursive>,
    initial: impl Future<Output = ()> + Send,
) {
    let mut retry = interval(RETRY_INTERVAL);
    retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut resync = interval_at(Instant::now() + RESYNC_INTERVAL, RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let first_resync = tokio::time::timeout(FIRST_RESYNC, initial);
    tokio::pin!(first_resync);
    let mut first_done = false;
    let mut batch = Vec::with_capacity(1024);
    // The BGP next hops of every learned best route, to redo its target when the gateways of
    // a recursive next hop change.
    let mut learned: HashMap<IpNet, Vec<IpAddr>> = HashMap::new();
    let mut gateways = recursive.borrow_and_update().clone();
    let mut writing: Writing = None;
    loop {
        if writing.is_none() {
            writing = table.begin_flush();
        }
        tokio::select! {
            done = written(&mut writing) => {
                writing = None;
                let report = table.end_flush(done);
                log_report("routes installed", &report, table.pending());
            }
            n = routes.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    settle(table, &mut writing).await;
                    return;
                }
                for change in batch.drain(..) {
                    let target = resolved_target(&change.prefix, &change.next_hops, &gateways);
                    if target.is_none() && !change.next_hops.is_empty() {
                        debug!(prefix = %change.prefix, next_hops = ?change.next_hops, "no next hop the kernel can use; not installed");
                    }
                    table.set(change.prefix, target);
                    if change.next_hops.is_empty() {
                        learned.remove(&change.prefix);
                    } else {
                        learned.insert(change.prefix, change.next_hops);
                    }
                }
            }
            Ok(()) = recursive.changed() => {
                let new = recursive.borrow_and_update().clone();
                let changed: BTreeSet<IpAddr> = new
                    .iter()
                    .filter(|(nh, gws)| gateways.get(*nh) != Some(*gws))
                    .chain(gateways.iter().filter(|(nh, _)| !new.contains_key(*nh)))
                    .map(|(nh, _)| *nh)
                    .collect();
                gateways = new;
                let mut updated = 0;
                for (prefix, next_hops) in &learned {
                    if next_hops.iter().any(|nh| changed.contains(nh)) {
                        table.set(*prefix, resolved_target(prefix, next_hops, &gateways));
                        updated += 1;
                    }
                }
                if updated > 0 {
                    info!(routes = updated, "routes through recursive next hops updated");
                }
            }
            _ = retry.tick(), if table.pending() > 0 => {
                settle(table, &mut writing).await;
                let report = table.flush().await;
                log_report("retried route writes", &report, table.pending());
            }
            _ = &mut first_resync, if !first_done => {
                first_done = true;
                settle(table, &mut writing).await;
                let report = table.remove_unwanted().await;
                log_report("initial tables in: routes of an earlier run that nobody wants removed", &report, table.pending());
            }
            _ = resync.tick() => {
                settle(table, &mut writing).await;
                match table.resync().await {
                    Ok(report) => log_report("route resync", &report, table.pending()),
                    Err(e) => warn!(error = %e, "route resync failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn next_hops_the_kernel_cannot_use_are_left_out() {
        let v4: IpNet = "10.1.0.0/24".parse().expect("prefix");
        let v6: IpNet = "fd00:1::/64".parse().expect("prefix");
        assert_eq!(
            target_for(&v4, &[ip("192.0.2.2"), ip("192.0.2.1"), ip("fd00::1")]),
            Some(RouteTarget::Via {
                gws: vec![ip("192.0.2.1"), ip("192.0.2.2")]
            })
        );
        assert_eq!(target_for(&v6, &[ip("::ffff:192.0.2.1")]), None);
        assert_eq!(target_for(&v6, &[ip("fe80::1")]), None);
        assert_eq!(
            target_for(&v6, &[ip("fd00::2"), ip("fe80::1")]),
            Some(RouteTarget::Via {
                gws: vec![ip("fd00::2")]
            })
        );
        assert_eq!(target_for(&v4, &[]), None);
    }
}
