//! The agent's Prometheus metrics (prefix `brindle_`), kept in an explicit [`Registry`] that the
//! controller updates and the metrics server (`GET /metrics`, port 9091 by default) encodes.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `brindle_routes_programmed` | gauge | `kind`: blackhole, workload, vxlan, ipip, direct, bgp |
//! | `brindle_reconcile_duration_seconds` | histogram | — |
//! | `brindle_reconciles_total` | counter | `trigger`: datastore, kernel, resync, retry, api |
//! | `brindle_dataplane_failures_total` | counter | — |
//! | `brindle_ipam_blocks` | gauge | `pool` |
//! | `brindle_ipam_addresses_in_use` | gauge | `pool` |
//! | `brindle_remote_nodes` | gauge | — |
//! | `brindle_build_info` | gauge (1) | `version` |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tracing::warn;

use crate::dataplane::{DesiredState, RouteTarget, IPIP_DEVICE, VXLAN_DEVICE};
use crate::model::{IpPoolSpec, IpamBlockSpec, Object};

/// What started a reconcile pass (the `trigger` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A datastore change.
    Datastore,
    /// A kernel notification about something Brindle owns.
    Kernel,
    /// The periodic full resync.
    Resync,
    /// A retry after a failed pass.
    Retry,
    /// A kick from the API server (pod added or removed).
    Api,
    /// The BGP speaker's best routes changed (`--routing bgp`).
    Bgp,
    /// A deadline the dataplane set: the lingering VXLAN device is due to go.
    Linger,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Datastore => "datastore",
            Trigger::Kernel => "kernel",
            Trigger::Resync => "resync",
            Trigger::Retry => "retry",
            Trigger::Api => "api",
            Trigger::Bgp => "bgp",
            Trigger::Linger => "linger",
        }
    }
}

/// Route kinds reported by `brindle_routes_programmed`.
const ROUTE_KINDS: [&str; 6] = ["blackhole", "workload", "vxlan", "ipip", "direct", "bgp"];

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    routes_programmed: IntGaugeVec,
    reconcile_duration: Histogram,
    reconciles: IntCounterVec,
    dataplane_failures: IntCounter,
    ipam_blocks: IntGaugeVec,
    ipam_addresses: IntGaugeVec,
    remote_nodes: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: Registry) -> Result<Metrics, prometheus::Error> {
        let routes_programmed = IntGaugeVec::new(
            Opts::new(
                "brindle_routes_programmed",
                "Routes Brindle holds in the kernel after the last successful pass, by kind.",
            ),
            &["kind"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "brindle_reconcile_duration_seconds",
                "Time of one dataplane reconcile pass (dump, diff, write).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let reconciles = IntCounterVec::new(
            Opts::new(
                "brindle_reconciles_total",
                "Reconcile passes, by what triggered them.",
            ),
            &["trigger"],
        )?;
        let dataplane_failures = IntCounter::new(
            "brindle_dataplane_failures_total",
            "Reconcile passes that failed or left writes pending.",
        )?;
        let ipam_blocks = IntGaugeVec::new(
            Opts::new("brindle_ipam_blocks", "IPAM blocks allocated, per IP pool."),
            &["pool"],
        )?;
        let ipam_addresses = IntGaugeVec::new(
            Opts::new(
                "brindle_ipam_addresses_in_use",
                "Addresses allocated in the pool's blocks, per IP pool.",
            ),
            &["pool"],
        )?;
        let remote_nodes = IntGauge::new("brindle_remote_nodes", "Other nodes known.")?;
        let build_info = IntGaugeVec::new(
            Opts::new("brindle_build_info", "Always 1; the labels name the build."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(routes_programmed.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(dataplane_failures.clone()))?;
        registry.register(Box::new(ipam_blocks.clone()))?;
        registry.register(Box::new(ipam_addresses.clone()))?;
        registry.register(Box::new(remote_nodes.clone()))?;
        registry.register(Box::new(build_info))?;
        for kind in ROUTE_KINDS {
            routes_programmed.with_label_values(&[kind]).set(0);
        }
        Ok(Metrics {
            registry,
            routes_programmed,
            reconcile_duration,
            reconciles,
            dataplane_failures,
            ipam_blocks,
            ipam_addresses,
            remote_nodes,
        })
    }

    /// Records one reconcile pass.
    pub fn observe_reconcile(&self, trigger: Trigger, took: Duration, ok: bool) {
        self.reconciles.with_label_values(&[trigger.label()]).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        if !ok {
            self.dataplane_failures.inc();
        }
    }

    /// Records the routes of a state the kernel now holds.
    pub fn set_routes(&self, state: &DesiredState) {
        let mut counts: BTreeMap<&str, i64> = ROUTE_KINDS.iter().map(|k| (*k, 0)).collect();
        for target in state.routes.values() {
            let kind = match target {
                RouteTarget::Blackhole => "blackhole",
                RouteTarget::Device { .. } => "workload",
                RouteTarget::ViaOnlink { dev, .. } if dev == VXLAN_DEVICE => "vxlan",
                RouteTarget::ViaOnlink { dev, .. } if dev == IPIP_DEVICE => "ipip",
                RouteTarget::ViaOnlink { .. } => "direct",
                RouteTarget::Via { .. } => "bgp",
            };
            *counts.entry(kind).or_default() += 1;
        }
        for (kind, n) in counts {
            self.routes_programmed.with_label_values(&[kind]).set(n);
        }
    }

    pub fn set_remote_nodes(&self, n: usize) {
        self.remote_nodes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records blocks and addresses in use per pool, from the cluster's blocks.
    pub fn set_ipam<'a>(
        &self,
        pools: impl IntoIterator<Item = &'a Object<IpPoolSpec>>,
        blocks: impl IntoIterator<Item = &'a Object<IpamBlockSpec>>,
    ) {
        let pools: Vec<(&str, IpNet)> = pools
            .into_iter()
            .map(|p| (p.metadata.name.as_str(), p.spec.cidr))
            .collect();
        let mut usage: BTreeMap<&str, (i64, i64)> =
            pools.iter().map(|(name, _)| (*name, (0, 0))).collect();
        for block in blocks {
            let Some((pool, _)) = pools
                .iter()
                .find(|(_, cidr)| cidr.contains(&block.spec.cidr))
            else {
                continue;
            };
            let used = block.spec.allocations.iter().flatten().count();
            let entry = usage.entry(pool).or_default();
            entry.0 += 1;
            entry.1 += i64::try_from(used).unwrap_or(i64::MAX);
        }
        // Pools that were deleted disappear from the output.
        self.ipam_blocks.reset();
        self.ipam_addresses.reset();
        for (pool, (blocks, addresses)) in usage {
            self.ipam_blocks.with_label_values(&[pool]).set(blocks);
            self.ipam_addresses
                .with_label_values(&[pool])
                .set(addresses);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

async fn handle(
    metrics: Arc<Metrics>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(scrape_response(req.uri().path(), || metrics.encode()))
}

/// The answer to a request on a metrics port: `/metrics` gets the text `encode` makes, any
/// other path a 404.
pub(crate) fn scrape_response(
    path: &str,
    encode: impl FnOnce() -> Result<String, prometheus::Error>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => match encode() {
            Ok(text) => (StatusCode::OK, "text/plain; version=0.0.4", text),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("encoding metrics failed: {e}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Serves `GET /metrics` until the listener fails.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "accepting on the metrics port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(metrics.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_counted_by_kind_and_text_has_the_prefix() {
        let m = Metrics::new(Registry::new()).expect("metrics register");
        let mut state = DesiredState::default();
        state
            .routes
            .insert("10.0.1.0/26".parse().expect("net"), RouteTarget::Blackhole);
        state.routes.insert(
            "10.0.2.0/26".parse().expect("net"),
            RouteTarget::ViaOnlink {
                gw: "10.0.2.1".parse().expect("ip"),
                dev: VXLAN_DEVICE.to_string(),
            },
        );
        state.routes.insert(
            "10.0.3.0/26".parse().expect("net"),
            RouteTarget::ViaOnlink {
                gw: "192.168.0.3".parse().expect("ip"),
                dev: "eth0".to_string(),
            },
        );
        m.set_routes(&state);
        m.observe_reconcile(Trigger::Kernel, Duration::from_millis(3), false);
        let text = m.encode().expect("encodes");
        assert!(
            text.contains("brindle_routes_programmed{kind=\"blackhole\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("brindle_routes_programmed{kind=\"vxlan\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("brindle_routes_programmed{kind=\"direct\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("brindle_routes_programmed{kind=\"workload\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("brindle_dataplane_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("brindle_reconciles_total{trigger=\"kernel\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("brindle_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("brindle_build_info{version="), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("brindle_"), "unprefixed metric: {line}");
        }
    }
}
