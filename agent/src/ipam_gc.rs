//! IPAM garbage collection by each agent, for its own node.
//!
//! A leak is an address allocated to this node (attribute `node`) that no local pod and no
//! tunnel of this node holds: a CNI DEL that never came, an agent that died between allocating
//! and wiring. An address becomes a candidate when a pass first sees it leaked and is released
//! only when a later pass, at least the grace period after the first, still sees it leaked with
//! the same handle and sequence number; the release itself is sequence-checked, so an address
//! handed out again in between is never freed. Empty affine blocks are released after their own
//! grace period, so flapping pods do not churn blocks (Calico's kube-controllers do both; here
//! every agent does it for itself, so no cluster-wide controller is needed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use brindle_ipam::block::ReleaseOptions;
use brindle_ipam::store::Store;
use brindle_ipam::Ipam;
use tracing::{info, warn};

use crate::controller::Shared;
use crate::ipam_tools::{Allocation, Snapshot};

/// GC settings.
#[derive(Clone, Debug)]
pub struct GcConfig {
    pub node: String,
    /// Time between passes.
    pub interval: Duration,
    /// How long an address must stay leaked before it is released (Calico: 15 minutes).
    pub leak_grace: Duration,
    /// How long an affine block must stay empty before it is released.
    pub empty_block_grace: Duration,
}

/// A candidate leak, as first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    handle: Option<String>,
    sequence_number: Option<u64>,
    first_seen: Instant,
}

/// Remembers candidates between passes; pure, so its rules have unit tests.
#[derive(Default)]
pub struct LeakTracker {
    candidates: BTreeMap<IpAddr, Candidate>,
}

impl LeakTracker {
    /// Records this pass's leaks; returns those confirmed (seen leaked, unchanged, for at least
    /// `grace`). Candidates no longer leaked, or changed, are forgotten or restarted.
    pub fn observe(
        &mut self,
        leaks: &[Allocation],
        now: Instant,
        grace: Duration,
    ) -> Vec<ReleaseOptions> {
        let current: BTreeSet<IpAddr> = leaks.iter().map(|l| l.ip).collect();
        self.candidates.retain(|ip, _| current.contains(ip));
        let mut confirmed = Vec::new();
        for leak in leaks {
            let seen = Candidate {
                handle: leak.handle.clone(),
                sequence_number: leak.sequence_number,
                first_seen: now,
            };
            match self.candidates.get(&leak.ip) {
                Some(c) if c.handle == seen.handle && c.sequence_number == seen.sequence_number => {
                    if now.duration_since(c.first_seen) >= grace {
                        confirmed.push(ReleaseOptions {
                            address: leak.ip,
                            handle_id: leak.handle.clone(),
                            sequence_number: leak.sequence_number,
                        });
                    }
                }
                _ => {
                    self.candidates.insert(leak.ip, seen);
                }
            }
        }
        for c in &confirmed {
            self.candidates.remove(&c.address);
        }
        confirmed
    }
}

/// This node's allocations that nothing on this node holds.
pub fn local_leaks(snap: &Snapshot, node: &str, shared: &Shared) -> Vec<Allocation> {
    let local: BTreeSet<IpAddr> = shared
        .endpoints()
        .values()
        .flat_map(|ep| ep.ips.iter().map(|ip| ip.addr()))
        .collect();
    let tunnels: BTreeSet<IpAddr> = snap
        .nodes
        .iter()
        .filter(|n| n.metadata.name == node)
        .flat_map(|n| n.spec.tunnel_addrs())
        .map(|(_, ip)| ip)
        .collect();
    let endpoint_ips: BTreeSet<IpAddr> = snap
        .endpoints
        .iter()
        .filter(|e| e.spec.node == node)
        .flat_map(|e| e.spec.ip_networks.iter())
        .filter_map(|n| n.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
        .collect();
    snap.allocations()
        .into_iter()
        .filter(|a| a.attrs.get("node").map(String::as_str) == Some(node))
        .filter(|a| !local.contains(&a.ip) && !endpoint_ips.contains(&a.ip))
        .filter(|a| !tunnels.contains(&a.ip))
        .collect()
}

/// Runs GC passes until the process ends.
pub async fn run(config: GcConfig, store: Arc<dyn Store>, ipam: Arc<Ipam>, shared: Arc<Shared>) {
    let mut tracker = LeakTracker::default();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match Snapshot::load(store.as_ref()).await {
            Ok(snap) => {
                let leaks = local_leaks(&snap, &config.node, &shared);
                let confirmed = tracker.observe(&leaks, Instant::now(), config.leak_grace);
                if !confirmed.is_empty() {
                    match ipam.release_ips_detailed(&confirmed).await {
                        Ok(done) => info!(
                            released = ?done.released,
                            refused = done.refused.len(),
                            "released leaked addresses"
                        ),
                        Err(e) => warn!(error = %e, "releasing leaked addresses failed"),
                    }
                }
            }
            Err(e) => warn!(error = %e, "IPAM GC: reading the datastore failed"),
        }
        match ipam
            .release_empty_blocks(&config.node, config.empty_block_grace, SystemTime::now())
            .await
        {
            Ok(released) if !released.is_empty() => {
                info!(blocks = ?released, "released empty blocks")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "IPAM GC: releasing empty blocks failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak(ip: &str, handle: &str, seq: u64) -> Allocation {
        Allocation {
            ip: ip.parse().expect("ip"),
            block: "10.0.0.0/26".parse().expect("cidr"),
            handle: Some(handle.to_string()),
            sequence_number: Some(seq),
            attrs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_leak_is_released_only_after_two_observations_spanning_the_grace() {
        let mut t = LeakTracker::default();
        let grace = Duration::from_secs(900);
        let t0 = Instant::now();
        let leaks = [leak("10.0.0.5", "net.a", 3)];
        assert!(t.observe(&leaks, t0, grace).is_empty(), "first sight");
        assert!(
            t.observe(&leaks, t0 + Duration::from_secs(600), grace)
                .is_empty(),
            "too soon"
        );
        let confirmed = t.observe(&leaks, t0 + grace, grace);
        assert_eq!(confirmed.len(), 1);
        assert_eq!(confirmed[0].handle_id.as_deref(), Some("net.a"));
        assert_eq!(confirmed[0].sequence_number, Some(3));
    }

    #[test]
    fn a_candidate_that_changes_or_recovers_starts_over() {
        let mut t = LeakTracker::default();
        let grace = Duration::from_secs(60);
        let t0 = Instant::now();
        t.observe(&[leak("10.0.0.5", "net.a", 3)], t0, grace);
        // Handed out again (new handle and sequence number): the clock restarts.
        let later = t0 + Duration::from_secs(61);
        assert!(t
            .observe(&[leak("10.0.0.5", "net.b", 4)], later, grace)
            .is_empty());
        // Not leaked in one pass: forgotten.
        t.observe(&[], later + grace, grace);
        assert!(t
            .observe(&[leak("10.0.0.5", "net.b", 4)], later + grace * 2, grace)
            .is_empty());
    }
}
