//! `brindle-bgpd`: the BGP speaker alone, run from a YAML file ([`crate::bgpd_config`]).
//!
//! ```text
//!  config file ──start──▶ speaker (brindle_bgp::speaker) ──RouteChange──▶ installer (install_routes)
//!       ▲ SIGHUP: diff ──originate/withdraw/add/remove──┘   ▲                  └─▶ dataplane RouteTable
//!  status socket (HTTP over UDS): GET /bgp/peers, /bgp/routes ┘
//! ```
//!
//! SIGHUP re-reads the file and applies the difference: prefixes added to or removed from
//! `originate` are announced or withdrawn, peers added or removed are started or stopped (a
//! peer whose settings changed is restarted). The other keys (`router_id`, `asn`, `listen`,
//! `install_routes`, `hold_time`, `connect_retry`, `next_hop_v6`, `cluster_id`,
//! `graceful_restart`, `dynamic_peers`) need a restart; a change to
//! them is logged and ignored. A file that does
//! not parse or validate is logged and the running configuration stays.
//!
//! SIGTERM (or SIGINT): Cease to every peer, then the routes it installed are removed and the
//! status socket is deleted. With `graceful_restart` enabled, the connections are closed
//! without a Cease and the routes stay in the kernel, for the peers and the kernel to keep
//! forwarding until bgpd is back (RFC 4724).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use brindle_bgp::speaker::{
    self, MaxPrefixAction, MaxPrefixes, Md5Key, NeighborConfig, SpeakerConfig, SpeakerError,
    SpeakerHandle,
};
use ipnet::IpNet;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::bgpd_config::{BgpdConfig, MaxPrefixActionConfig, PeerConfig};

/// What `brindle-bgpd` is started with.
#[derive(Clone, Debug)]
pub struct BgpdOptions {
    pub config: PathBuf,
    pub status_socket: PathBuf,
}

/// The speaker's own settings from the file.
pub fn speaker_config(c: &BgpdConfig) -> SpeakerConfig {
    SpeakerConfig {
        listen: Some(c.listen),
        hold_time: c.hold_time,
        connect_retry: c.connect_retry,
        next_hop_v6: c.next_hop_v6,
        cluster_id: c.cluster_id,
        graceful_restart_time: c
            .graceful_restart
            .enabled
            .then_some(c.graceful_restart.restart_time),
        dynamic_peers: c
            .dynamic_peers
            .iter()
            .map(|r| speaker::DynamicPeers {
                prefix: r.prefix,
                asn: r.asn,
                password: r
                    .password
                    .as_deref()
                    .and_then(|p| Md5Key::new(p.as_bytes())),
            })
            .collect(),
        ..SpeakerConfig::new(c.asn, c.router_id)
    }
}

/// One peer of the file as the speaker takes it.
pub fn neighbor_config(p: &PeerConfig) -> NeighborConfig {
    NeighborConfig {
        passive: p.passive,
        multihop: p.multihop,
        rr_client: p.rr_client,
        // Validated: 1 to 80 octets.
        password: p
            .password
            .as_deref()
            .and_then(|k| Md5Key::new(k.as_bytes())),
        ttl_security: p.ttl_security,
        max_prefixes: p.max_prefixes.map(|m| MaxPrefixes {
            limit: m.limit,
            action: match m.action {
                MaxPrefixActionConfig::Warn => MaxPrefixAction::Warn,
                MaxPrefixActionConfig::Discard => MaxPrefixAction::Discard,
                MaxPrefixActionConfig::Reset => MaxPrefixAction::Reset,
            },
        }),
        ..NeighborConfig::new(p.address, p.asn)
    }
}

/// What a reload changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    pub withdraw: Vec<IpNet>,
    pub originate: Vec<IpNet>,
    /// Peers removed, or changed (they are removed, then added again).
    pub remove_peers: Vec<IpAddr>,
    pub add_peers: Vec<PeerConfig>,
    /// Keys that changed but need a restart.
    pub restart_needed: Vec<&'static str>,
}

impl Reload {
    pub fn is_empty(&self) -> bool {
        self.withdraw.is_empty()
            && self.originate.is_empty()
            && self.remove_peers.is_empty()
            && self.add_peers.is_empty()
    }
}

/// The difference between the running configuration and a new one.
pub fn diff(old: &BgpdConfig, new: &BgpdConfig) -> Reload {
    let mut r = Reload {
        withdraw: old
            .originate
            .iter()
            .filter(|p| !new.originate.contains(p))
            .copied()
            .collect(),
        originate: new
            .originate
            .iter()
            .filter(|p| !old.originate.contains(p))
            .copied()
            .collect(),
        ..Reload::default()
    };
    let old_peers: BTreeMap<IpAddr, &PeerConfig> =
        old.peers.iter().map(|p| (p.address, p)).collect();
    let new_peers: BTreeMap<IpAddr, &PeerConfig> =
        new.peers.iter().map(|p| (p.address, p)).collect();
    for (addr, old_peer) in &old_peers {
        match new_peers.get(addr) {
            None => r.remove_peers.push(*addr),
            Some(new_peer) if new_peer != old_peer => {
                r.remove_peers.push(*addr);
                r.add_peers.push((*new_peer).clone());
            }
            Some(_) => {}
        }
    }
    for (addr, new_peer) in &new_peers {
        if !old_peers.contains_key(addr) {
            r.add_peers.push((*new_peer).clone());
        }
    }
    if old.router_id != new.router_id {
        r.restart_needed.push("router_id");
    }
    if old.asn != new.asn {
        r.restart_needed.push("asn");
    }
    if old.listen != new.listen {
        r.restart_needed.push("listen");
    }
    if old.install_routes != new.install_routes {
        r.restart_needed.push("install_routes");
    }
    if old.hold_time != new.hold_time {
        r.restart_needed.push("hold_time");
    }
    if old.connect_retry != new.connect_retry {
        r.restart_needed.push("connect_retry");
    }
    if old.next_hop_v6 != new.next_hop_v6 {
        r.restart_needed.push("next_hop_v6");
    }
    if old.cluster_id != new.cluster_id {
        r.restart_needed.push("cluster_id");
    }
    if old.graceful_restart != new.graceful_restart {
        r.restart_needed.push("graceful_restart");
    }
    if old.dynamic_peers != new.dynamic_peers {
        r.restart_needed.push("dynamic_peers");
    }
    if old.metrics_listen != new.metrics_listen {
        r.restart_needed.push("metrics_listen");
    }
    r
}

/// Applies a reload to the running speaker: peers first (removed, then added), then the
/// withdrawals, then the new prefixes. A step that fails is logged and the others still run.
/// Returns the peers that could not be added: leave them out of the running configuration, so
/// that the next reload tries them again.
pub async fn apply(speaker: &SpeakerHandle, r: &Reload) -> Vec<IpAddr> {
    for addr in &r.remove_peers {
        info!(peer = %addr, "reload: removing peer");
        match speaker.remove_neighbor(*addr).await {
            Ok(()) | Err(SpeakerError::UnknownNeighbor(_)) => {}
            Err(e) => error!(peer = %addr, error = %e, "reload: removing the peer failed"),
        }
    }
    let mut failed = Vec::new();
    for peer in &r.add_peers {
        info!(peer = %peer.address, asn = peer.asn, "reload: adding peer");
        if let Err(e) = speaker.add_neighbor(neighbor_config(peer)).await {
            error!(peer = %peer.address, error = %e, "reload: adding the peer failed");
            failed.push(peer.address);
        }
    }
    if let Some(first) = r.withdraw.first() {
        info!(count = r.withdraw.len(), %first, "reload: withdrawing");
        if let Err(e) = speaker.withdraw_all(r.withdraw.clone()).await {
            error!(error = %e, "reload: withdrawing failed");
        }
    }
    if let Some(first) = r.originate.first() {
        info!(count = r.originate.len(), %first, "reload: originating");
        if let Err(e) = speaker.originate_all(r.originate.clone()).await {
            error!(error = %e, "reload: originating failed");
        }
    }
    failed
}

/// The metrics port, bound, with the registry its server encodes.
type MetricsListener = (
    tokio::net::TcpListener,
    prometheus::Registry,
    std::sync::Arc<crate::bgp_metrics::BgpMetrics>,
);

/// Binds `metrics_listen` and registers the `brindle_bgp_*` metrics.
async fn bind_metrics(addr: std::net::SocketAddr) -> Result<MetricsListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics_listen {addr}"))?;
    let registry = prometheus::Registry::new();
    let metrics =
        crate::bgp_metrics::BgpMetrics::new(&registry).context("registering the BGP metrics")?;
    info!(listen = %addr, "serving metrics on /metrics");
    Ok((listener, registry, std::sync::Arc::new(metrics)))
}

fn load(path: &Path) -> Result<BgpdConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(BgpdConfig::from_yaml(&path.display().to_string(), &text)?)
}

/// Runs `brindle-bgpd` until SIGTERM or SIGINT.
pub async fn run(options: BgpdOptions) -> Result<()> {
    let mut current = load(&options.config)?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    for peer in &current.peers {
        if peer.passive && peer.address.is_ipv4() != current.listen.is_ipv4() {
            warn!(peer = %peer.address, listen = %current.listen, "a passive peer of another family than `listen` can never connect (listen on '[::]:179' for both)");
        }
    }
    // Bound first: a socket that cannot be bound stops us before any session or route exists.
    let listener = crate::server::bind_api(&options.status_socket).with_context(|| {
        format!(
            "binding the status socket {}",
            options.status_socket.display()
        )
    })?;
    let metrics_listener = match current.metrics_listen {
        Some(addr) => match bind_metrics(addr).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                drop(listener);
                let _ = std::fs::remove_file(&options.status_socket);
                return Err(e);
            }
        },
        None => None,
    };
    let neighbors = current.peers.iter().map(neighbor_config).collect();
    let (speaker, routes) = match speaker::start(speaker_config(&current), neighbors).await {
        Ok(started) => started,
        Err(e) => {
            drop(listener);
            let _ = std::fs::remove_file(&options.status_socket);
            return Err(anyhow::Error::new(e).context("starting the BGP speaker"));
        }
    };
    info!(
        router_id = %current.router_id,
        asn = current.asn,
        listen = %current.listen,
        peers = current.peers.len(),
        "brindle-bgpd started"
    );
    speaker.originate_all(current.originate.clone()).await?;

    let installer = if current.install_routes {
        let (recursive_tx, recursive_rx) = tokio::sync::watch::channel(Default::default());
        tokio::spawn(crate::bgpd_install::resolve_next_hops(
            speaker.clone(),
            recursive_tx,
        ));
        let initial = crate::bgpd_install::initial_tables_received(
            speaker.clone(),
            match current.hold_time {
                // No hold timer: only the upper bound applies to a peer that is not up.
                0 => crate::bgpd_install::FIRST_RESYNC,
                hold => Duration::from_secs(u64::from(hold)),
            },
        );
        Some(tokio::spawn(crate::bgpd_install::run(
            routes,
            recursive_rx,
            initial,
            // Graceful restart: forwarding goes on while we are away (RFC 4724 §4.1).
            !current.graceful_restart.enabled,
        )))
    } else {
        drop(routes);
        None
    };

    let status = tokio::spawn(crate::bgp_status::serve(listener, speaker.clone()));
    let metrics = metrics_listener.map(|(listener, registry, metrics)| {
        tokio::spawn(crate::bgp_metrics::serve(
            listener,
            registry,
            metrics,
            speaker.clone(),
        ))
    });

    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!(file = %options.config.display(), "SIGHUP: reloading");
                let new = match load(&options.config) {
                    Ok(new) => new,
                    Err(e) => {
                        error!(error = %format!("{e:#}"), "reload failed; the running configuration stays");
                        continue;
                    }
                };
                let reload = diff(&current, &new);
                for key in &reload.restart_needed {
                    warn!(key, "reload: this key changed but needs a restart; ignored");
                }
                let failed = apply(&speaker, &reload).await;
                let mut new = new;
                new.peers.retain(|p| !failed.contains(&p.address));
                // What the speaker now runs with: the new peers and prefixes; every other key
                // needs a restart, so it keeps its old value (and a later reload warns again).
                current = BgpdConfig {
                    originate: new.originate,
                    peers: new.peers,
                    ..current
                };
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping"); break; }
        }
    }

    status.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Err(e) = speaker.shutdown().await {
        warn!(error = %e, "speaker already stopped");
    }
    if let Some(installer) = installer {
        // The route stream has ended: the installer removes its routes and returns.
        if let Err(e) = installer.await {
            warn!(error = %e, "route installer failed");
        }
    }
    let _ = std::fs::remove_file(&options.status_socket);
    info!("brindle-bgpd stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> BgpdConfig {
        BgpdConfig::from_yaml("test.yaml", text).expect("valid config")
    }

    const BASE: &str = "\
router_id: 10.0.0.1
asn: 64512
originate: [10.244.0.0/26, 10.244.1.0/26]
peers:
  - address: 10.0.0.2
    asn: 64513
  - address: 10.0.0.3
    asn: 64512
";

    #[test]
    fn identical_files_change_nothing() {
        let r = diff(&config(BASE), &config(BASE));
        assert!(r.is_empty() && r.restart_needed.is_empty(), "{r:?}");
    }

    #[test]
    fn prefixes_and_peers_added_removed_and_changed() {
        let new = config(
            "\
router_id: 10.0.0.9
asn: 64512
originate: [10.244.1.0/26, 'fd00:244::/64']
peers:
  - address: 10.0.0.3
    asn: 64512
    passive: true
  - address: 10.0.0.4
    asn: 64514
",
        );
        let r = diff(&config(BASE), &new);
        assert_eq!(
            r.withdraw,
            vec!["10.244.0.0/26".parse::<IpNet>().expect("net")]
        );
        assert_eq!(
            r.originate,
            vec!["fd00:244::/64".parse::<IpNet>().expect("net")]
        );
        let removed: Vec<String> = r.remove_peers.iter().map(ToString::to_string).collect();
        assert_eq!(removed, ["10.0.0.2", "10.0.0.3"]);
        let added: Vec<String> = r.add_peers.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(added, ["10.0.0.3", "10.0.0.4"]);
        assert!(r.add_peers[0].passive);
        assert_eq!(r.restart_needed, ["router_id"]);
    }

    #[tokio::test]
    async fn a_reload_reaches_the_running_speaker() {
        let old = config(BASE);
        let new = config(
            "\
router_id: 10.0.0.1
asn: 64512
originate: [10.244.1.0/26, 'fd00:244::/64']
peers:
  - address: 10.0.0.3
    asn: 64512
    passive: true
  - address: 10.0.0.4
    asn: 64514
    passive: true
",
        );
        // No listener, passive peers: nothing leaves this process.
        let mut speaker_config = speaker_config(&old);
        speaker_config.listen = None;
        let passive = |p: &PeerConfig| NeighborConfig {
            passive: true,
            ..neighbor_config(p)
        };
        let (speaker, _routes) =
            brindle_bgp::speaker::start(speaker_config, old.peers.iter().map(passive).collect())
                .await
                .expect("speaker");
        speaker
            .originate_all(old.originate.clone())
            .await
            .expect("originate");

        let failed = apply(&speaker, &diff(&old, &new)).await;
        assert!(failed.is_empty(), "{failed:?}");
        let peers: Vec<String> = speaker
            .peers()
            .await
            .expect("peers")
            .iter()
            .map(|p| format!("{} {}", p.address, p.asn))
            .collect();
        assert_eq!(peers, ["10.0.0.3 64512", "10.0.0.4 64514"]);
        let routes: Vec<String> = speaker
            .routes()
            .await
            .expect("routes")
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        assert_eq!(routes, ["10.244.1.0/26", "fd00:244::/64"]);
        speaker.shutdown().await.expect("shutdown");
    }
}
