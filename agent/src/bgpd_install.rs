//! `install_routes`: the speaker's best routes into the kernel, through the dataplane's
//! [`RouteTable`] (protocol 98, `via` the next hops, one multipath route for an ECMP group).
//!
//! Changes are taken from the speaker in batches (whatever has queued up, up to
//! [`MAX_BATCH`]) and written incrementally. Writes that fail are retried every
//! [`RETRY_INTERVAL`]; a full resync every [`RESYNC_INTERVAL`] (the first after
//! [`FIRST_RESYNC`], once the sessions have had time to bring the routes back) removes routes
//! of ours that nobody wants, such as those left by an earlier run. When the speaker's stream
//! ends (shutdown), every installed route is removed.

use std::net::IpAddr;
use std::time::Duration;

use brindle_bgp::speaker::RouteChange;
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::time::{interval, interval_at, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::dataplane::{ApplyReport, Dataplane, RouteTable, RouteTarget};

/// Most route changes written in one flush.
pub const MAX_BATCH: usize = 16_384;
/// How often failed writes are tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Delay of the first full resync after start.
pub const FIRST_RESYNC: Duration = Duration::from_secs(60);
/// Full resync period.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);

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

/// Connects to the kernel and installs routes until the speaker's stream ends, then removes
/// them. Without a kernel connection it logs why and only drains the stream.
pub async fn run(mut routes: mpsc::Receiver<RouteChange>) {
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
    install(&mut routes, &mut table).await;
    let report = table.clear().await;
    log_report("removed the installed routes", &report, table.pending());
}

async fn install(routes: &mut mpsc::Receiver<RouteChange>, table: &mut RouteTable) {
    let mut retry = interval(RETRY_INTERVAL);
    retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut resync = interval_at(Instant::now() + FIRST_RESYNC, RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            n = routes.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                for change in batch.drain(..) {
                    let target = target_for(&change.prefix, &change.next_hops);
                    if target.is_none() && !change.next_hops.is_empty() {
                        debug!(prefix = %change.prefix, next_hops = ?change.next_hops, "no next hop the kernel can use; not installed");
                    }
                    table.set(change.prefix, target);
                }
                let report = table.flush().await;
                log_report("routes installed", &report, table.pending());
            }
            _ = retry.tick(), if table.pending() > 0 => {
                let report = table.flush().await;
                log_report("retried route writes", &report, table.pending());
            }
            _ = resync.tick() => match table.resync().await {
                Ok(report) => log_report("route resync", &report, table.pending()),
                Err(e) => warn!(error = %e, "route resync failed"),
            },
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
