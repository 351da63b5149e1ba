//! Prometheus metrics of the BGP speaker (prefix `brindle_bgp_`), taken from its peer status.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `brindle_bgp_session_state` | gauge: 1 for the current state, 0 for the others | `peer`, `peer_type`, `state` (Idle, Connect, Active, OpenSent, OpenConfirm, Established) |
//! | `brindle_bgp_session_established` | gauge: 1 when Established | `peer`, `peer_type` |
//! | `brindle_bgp_session_transitions_total` | counter: state changes | `peer`, `peer_type` |
//! | `brindle_bgp_session_established_total` | counter: times the session came up | `peer`, `peer_type` |
//! | `brindle_bgp_routes_received` | gauge: prefixes in the peer's Adj-RIB-In | `peer`, `peer_type`, `family` |
//! | `brindle_bgp_routes_accepted` | gauge: of those, the usable ones | `peer`, `peer_type`, `family` |
//! | `brindle_bgp_routes_advertised` | gauge: prefixes in its Adj-RIB-Out | `peer`, `peer_type`, `family` |
//!
//! `family` is `ipv4-unicast` or `ipv6-unicast`. The metrics live in a [`Registry`] the owner
//! passes in; [`BgpMetrics::update`] takes a snapshot of [`SpeakerHandle::peers`] and is called
//! before each scrape ([`serve`] does so) or periodically ([`poll`]). A peer that is removed
//! loses its series.
//!
//! Next to the agent's own metrics, in one registry (clones of a `Registry` share it):
//!
//! ```ignore
//! let registry = Registry::new();
//! let metrics = Metrics::new(registry.clone())?;            // brindle_* of the agent
//! let bgp = Arc::new(BgpMetrics::new(&registry)?);           // brindle_bgp_*
//! tokio::spawn(bgp_metrics::poll(speaker.clone(), bgp, Duration::from_secs(5)));
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brindle_bgp::speaker::{PeerStatus, SpeakerHandle};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::bgp_status::family_name;

/// The states of `brindle_bgp_session_state`, RFC 4271 §8.
const STATES: [&str; 6] = [
    "Idle",
    "Connect",
    "Active",
    "OpenSent",
    "OpenConfirm",
    "Established",
];

/// The counters' values at the last update, per (peer, peer type): the speaker's totals are
/// cumulative, Prometheus counters only go up by increments.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    transitions: u64,
    established: u64,
}

/// The speaker's metrics, registered in the owner's registry.
pub struct BgpMetrics {
    session_state: IntGaugeVec,
    session_established: IntGaugeVec,
    transitions: IntCounterVec,
    established_total: IntCounterVec,
    received: IntGaugeVec,
    accepted: IntGaugeVec,
    advertised: IntGaugeVec,
    /// Series written at the last update, so that removed peers lose theirs.
    seen: Mutex<BTreeMap<(String, String), Seen>>,
    families_seen: Mutex<Vec<[String; 3]>>,
}

impl BgpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<BgpMetrics, prometheus::Error> {
        let peer = ["peer", "peer_type"];
        let fam = ["peer", "peer_type", "family"];
        let m = BgpMetrics {
            session_state: IntGaugeVec::new(
                Opts::new(
                    "brindle_bgp_session_state",
                    "BGP session state per peer: 1 for the current state (RFC 4271), 0 for the others.",
                ),
                &["peer", "peer_type", "state"],
            )?,
            session_established: IntGaugeVec::new(
                Opts::new(
                    "brindle_bgp_session_established",
                    "1 when the BGP session with the peer is Established, else 0.",
                ),
                &peer,
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "brindle_bgp_session_transitions_total",
                    "BGP session state changes since the peer was configured.",
                ),
                &peer,
            )?,
            established_total: IntCounterVec::new(
                Opts::new(
                    "brindle_bgp_session_established_total",
                    "Times the BGP session with the peer reached Established.",
                ),
                &peer,
            )?,
            received: IntGaugeVec::new(
                Opts::new(
                    "brindle_bgp_routes_received",
                    "Prefixes received from the peer (its Adj-RIB-In), per address family.",
                ),
                &fam,
            )?,
            accepted: IntGaugeVec::new(
                Opts::new(
                    "brindle_bgp_routes_accepted",
                    "Prefixes received from the peer that are usable (no AS loop, reachable next hop).",
                ),
                &fam,
            )?,
            advertised: IntGaugeVec::new(
                Opts::new(
                    "brindle_bgp_routes_advertised",
                    "Prefixes advertised to the peer (its Adj-RIB-Out), per address family.",
                ),
                &fam,
            )?,
            seen: Mutex::new(BTreeMap::new()),
            families_seen: Mutex::new(Vec::new()),
        };
        registry.register(Box::new(m.session_state.clone()))?;
        registry.register(Box::new(m.session_established.clone()))?;
        registry.register(Box::new(m.transitions.clone()))?;
        registry.register(Box::new(m.established_total.clone()))?;
        registry.register(Box::new(m.received.clone()))?;
        registry.register(Box::new(m.accepted.clone()))?;
        registry.register(Box::new(m.advertised.clone()))?;
        Ok(m)
    }

    /// Sets every metric from a snapshot of the speaker's peers.
    pub fn update(&self, peers: &[PeerStatus]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut families_seen = self.families_seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut now: BTreeMap<(String, String), Seen> = BTreeMap::new();
        let mut families_now: Vec<[String; 3]> = Vec::new();
        for p in peers {
            let (addr, kind) = (p.address.to_string(), p.peer_type.to_string());
            let labels = [addr.as_str(), kind.as_str()];
            let state = p.state.to_string();
            for s in STATES {
                self.session_state
                    .with_label_values(&[&addr, &kind, s])
                    .set(i64::from(s == state));
            }
            self.session_established
                .with_label_values(&labels)
                .set(i64::from(state == "Established"));
            // A counter that went down belongs to a peer configured again: count from zero.
            let before = seen.get(&(addr.clone(), kind.clone())).copied();
            let inc = |counter: &IntCounterVec, was: Option<u64>, is: u64| {
                let c = counter.with_label_values(&labels);
                match was {
                    Some(was) if is >= was => c.inc_by(is - was),
                    _ => {
                        c.reset();
                        c.inc_by(is);
                    }
                }
            };
            inc(
                &self.transitions,
                before.map(|s| s.transitions),
                p.transitions,
            );
            inc(
                &self.established_total,
                before.map(|s| s.established),
                p.established_transitions,
            );
            now.insert(
                (addr.clone(), kind.clone()),
                Seen {
                    transitions: p.transitions,
                    established: p.established_transitions,
                },
            );
            for f in &p.families {
                let family = family_name(f.family);
                let l = [addr.as_str(), kind.as_str(), family];
                let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                self.received.with_label_values(&l).set(count(f.received));
                self.accepted.with_label_values(&l).set(count(f.accepted));
                self.advertised
                    .with_label_values(&l)
                    .set(count(f.advertised));
                families_now.push([addr.clone(), kind.clone(), family.to_string()]);
            }
        }
        for (addr, kind) in seen.keys().filter(|k| !now.contains_key(*k)) {
            let labels = [addr.as_str(), kind.as_str()];
            for s in STATES {
                let _ = self
                    .session_state
                    .remove_label_values(&[addr.as_str(), kind.as_str(), s]);
            }
            let _ = self.session_established.remove_label_values(&labels);
            let _ = self.transitions.remove_label_values(&labels);
            let _ = self.established_total.remove_label_values(&labels);
        }
        for l in families_seen.iter().filter(|l| !families_now.contains(l)) {
            let l = [l[0].as_str(), l[1].as_str(), l[2].as_str()];
            let _ = self.received.remove_label_values(&l);
            let _ = self.accepted.remove_label_values(&l);
            let _ = self.advertised.remove_label_values(&l);
        }
        *seen = now;
        *families_seen = families_now;
    }
}

/// Updates `metrics` from the speaker every `period` until the speaker stops: for an owner
/// whose metrics server does not ask the speaker itself (brindle-node).
pub async fn poll(speaker: SpeakerHandle, metrics: Arc<BgpMetrics>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        match speaker.peers().await {
            Ok(peers) => metrics.update(&peers),
            Err(_) => return,
        }
    }
}

/// The Prometheus text of every metric in `registry`.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn handle(
    speaker: SpeakerHandle,
    registry: Registry,
    metrics: Arc<BgpMetrics>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/metrics" {
        // Fresh at every scrape; a stopped speaker leaves the last values.
        if let Ok(peers) = speaker.peers().await {
            metrics.update(&peers);
        }
    }
    Ok(crate::metrics::scrape_response(path, || encode(&registry)))
}

/// Serves `GET /metrics` (brindle-bgpd's `metrics_listen`) until the listener fails, updating
/// the BGP metrics from the speaker at each scrape.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    metrics: Arc<BgpMetrics>,
    speaker: SpeakerHandle,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the metrics port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (speaker, registry, metrics) = (speaker.clone(), registry.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                handle(speaker.clone(), registry.clone(), metrics.clone(), req)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use brindle_bgp::fsm::State;
    use brindle_bgp::rib::AddressFamily;
    use brindle_bgp::speaker::{FamilyCounts, PeerType};

    use super::*;

    fn peer(address: &str, state: State, transitions: u64, up: u64) -> PeerStatus {
        PeerStatus {
            address: address.parse().expect("address"),
            asn: 65002,
            state,
            since: SystemTime::now(),
            info: String::new(),
            received: 5,
            accepted: 4,
            advertised: 2,
            end_of_rib: true,
            peer_type: PeerType::NodeToNodeMesh,
            families: vec![
                FamilyCounts {
                    family: AddressFamily::Ipv4Unicast,
                    received: 3,
                    accepted: 2,
                    advertised: 1,
                },
                FamilyCounts {
                    family: AddressFamily::Ipv6Unicast,
                    received: 2,
                    accepted: 2,
                    advertised: 1,
                },
            ],
            transitions,
            established_transitions: up,
        }
    }

    #[test]
    fn registers_next_to_the_agents_metrics() {
        let registry = Registry::new();
        let agent = crate::metrics::Metrics::new(registry.clone()).expect("agent metrics");
        let bgp = BgpMetrics::new(&registry).expect("bgp metrics beside them");
        bgp.update(&[peer("10.0.0.2", State::Established, 4, 1)]);
        let text = agent.encode().expect("encodes");
        assert!(text.contains("brindle_remote_nodes "), "{text}");
        assert!(
            text.contains(r#"brindle_bgp_session_established{peer="10.0.0.2""#),
            "{text}"
        );
        // Registering twice in one registry is refused, not a panic.
        assert!(BgpMetrics::new(&registry).is_err());
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn states_counts_and_transitions_are_exposed_and_removed_peers_vanish() {
        let registry = Registry::new();
        let m = BgpMetrics::new(&registry).expect("registers");
        m.update(&[
            peer("10.0.0.2", State::Established, 4, 1),
            peer("10.0.0.3", State::Active, 2, 0),
        ]);
        let text = encode(&registry).expect("encodes");
        let l = r#"peer="10.0.0.2",peer_type="node-to-node mesh""#;
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_session_state{{{l},state=\"Established\"}}")
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_session_state{{{l},state=\"Active\"}}")
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            value(
                &text,
                r#"brindle_bgp_session_established{peer="10.0.0.3",peer_type="node-to-node mesh"}"#
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_routes_received{{family=\"ipv4-unicast\",{l}}}")
            )
            .as_deref(),
            Some("3"),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_routes_advertised{{family=\"ipv6-unicast\",{l}}}")
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_session_transitions_total{{{l}}}")
            )
            .as_deref(),
            Some("4")
        );

        // Later: the first peer flapped twice more; the second was removed.
        m.update(&[peer("10.0.0.2", State::Established, 8, 3)]);
        let text = encode(&registry).expect("encodes");
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_session_transitions_total{{{l}}}")
            )
            .as_deref(),
            Some("8")
        );
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_session_established_total{{{l}}}")
            )
            .as_deref(),
            Some("3")
        );
        assert!(!text.contains("10.0.0.3"), "{text}");
        // Removed and configured again: its counters start over.
        m.update(&[peer("10.0.0.2", State::Connect, 1, 0)]);
        let text = encode(&registry).expect("encodes");
        assert_eq!(
            value(
                &text,
                &format!("brindle_bgp_session_transitions_total{{{l}}}")
            )
            .as_deref(),
            Some("1")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("brindle_bgp_"),
                "unprefixed metric: {line}"
            );
        }
    }
}
