//! BGP routing mode of brindle-node (`--routing bgp`): the embedded speaker, configured from
//! the datastore.
//!
//! ```text
//!  datastore watch ──WatchEvent──► ┌──────────────┐ add/remove neighbour, originate/withdraw
//!  (Node, BGPPeer, BGPConfiguration,│ routing task │──────────────────────────────► speaker
//!   IPPool, IPAMBlock)             └──────────────┘                                 │
//!                                                                                   │ RouteChange
//!  controller ◄── kick ── Shared::learned ◄── route consumer task (1 per speaker) ◄──┘
//! ```
//!
//! The routing task owns the [`SpeakerHandle`]. After every change of the kinds above it
//! computes the neighbours ([`crate::bgp_peers`]) and the prefixes to originate, and applies
//! the difference from what it applied before: a change resets only the sessions it affects.
//! A change of the node's own settings (AS, cluster ID, address, listen port) restarts the
//! speaker. Best-route changes go into [`Shared::learned`]; the controller turns them into
//! kernel routes with the pool's encapsulation (`routes::desired_state`) and reconciles them
//! with its other routes under rtproto 98, so the reconciler owns them and never removes them.
//! The API socket serves the speaker's status (`GET /bgp/peers`, `/bgp/routes`) through
//! [`Shared::speaker`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brindle_bgp::speaker::{self, RouteChange, SpeakerConfig, SpeakerHandle};
use brindle_ipam::store::{decode, Store, StoreError, StoreExt, WatchEvent};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::bgp_peers::{self, BgpView, DesiredPeer, LocalBgp, SecretDir};
use crate::bgpd_install::Recursive;
use crate::controller::Shared;
use crate::model::{
    BgpConfigurationSpec, BgpPeerSpec, IpPoolSpec, IpamBlockSpec, NodeSpec, Object, Resource,
};
use crate::routes::affinity_node;

/// How long, after a start, a configured peer that is not Established is waited for before
/// the kernel is programmed without its routes (Established peers are waited for until they
/// send End-of-RIB, at most `bgpd_install::FIRST_RESYNC`).
const INITIAL_WAIT_FOR_DOWN_PEERS: Duration = Duration::from_secs(5);

/// How brindle-node routes to other nodes' pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoutingMode {
    /// Routes computed from the datastore (block affinities and Node addresses).
    Static,
    /// Routes learned over BGP from the embedded speaker.
    Bgp,
}

/// The routing task's settings.
#[derive(Clone, Debug)]
pub struct RoutingConfig {
    pub node: String,
    /// Hold time proposed to every peer, in seconds.
    pub hold_time: u16,
    /// Graceful-restart time announced (unless a BGPPeer's `maxRestartTime` says otherwise).
    pub graceful_restart_time: u16,
    /// Where BGPPeer password secrets are read (see [`SecretDir`]).
    pub secrets_dir: PathBuf,
}

#[derive(Default)]
struct Cache {
    nodes: BTreeMap<String, Object<NodeSpec>>,
    configs: BTreeMap<String, Object<BgpConfigurationSpec>>,
    peers: BTreeMap<String, Object<BgpPeerSpec>>,
    pools: BTreeMap<String, Object<IpPoolSpec>>,
    blocks: BTreeMap<String, Object<IpamBlockSpec>>,
}

async fn list<S: Resource>(
    store: &dyn Store,
) -> Result<(BTreeMap<String, Object<S>>, u64), StoreError> {
    let (items, revision) = store.list_objs::<S>().await?;
    Ok((
        items
            .into_iter()
            .map(|o| (o.metadata.name.clone(), o))
            .collect(),
        revision,
    ))
}

impl Cache {
    async fn load(store: &dyn Store) -> Result<(Cache, u64), StoreError> {
        let (nodes, r1) = list(store).await?;
        let (configs, r2) = list(store).await?;
        let (peers, r3) = list(store).await?;
        let (pools, r4) = list(store).await?;
        let (blocks, r5) = list(store).await?;
        let cache = Cache {
            nodes,
            configs,
            peers,
            pools,
            blocks,
        };
        Ok((cache, r1.min(r2).min(r3).min(r4).min(r5)))
    }

    /// Applies one watch event; returns whether it concerns BGP.
    fn apply(&mut self, event: &WatchEvent) -> bool {
        /// Whether the object changed in a way that matters (spec or labels, not the revision).
        fn put<S: Resource + PartialEq>(
            map: &mut BTreeMap<String, Object<S>>,
            kv: &brindle_ipam::store::KvPair,
        ) -> bool {
            match decode::<S>(kv) {
                Ok(obj) => {
                    let changed = map.get(&kv.name).is_none_or(|old| {
                        old.spec != obj.spec || old.metadata.labels != obj.metadata.labels
                    });
                    map.insert(kv.name.clone(), obj);
                    changed
                }
                Err(e) => {
                    warn!(kind = %kv.kind, name = %kv.name, error = %e, "ignoring undecodable resource");
                    false
                }
            }
        }
        match event {
            WatchEvent::Put(kv) => match kv.kind.as_str() {
                NodeSpec::KIND => put(&mut self.nodes, kv),
                BgpConfigurationSpec::KIND => put(&mut self.configs, kv),
                BgpPeerSpec::KIND => put(&mut self.peers, kv),
                IpPoolSpec::KIND => put(&mut self.pools, kv),
                IpamBlockSpec::KIND => put(&mut self.blocks, kv),
                _ => false,
            },
            WatchEvent::Deleted { kind, name, .. } => match kind.as_str() {
                NodeSpec::KIND => self.nodes.remove(name).is_some(),
                BgpConfigurationSpec::KIND => self.configs.remove(name).is_some(),
                BgpPeerSpec::KIND => self.peers.remove(name).is_some(),
                IpPoolSpec::KIND => self.pools.remove(name).is_some(),
                IpamBlockSpec::KIND => self.blocks.remove(name).is_some(),
                _ => false,
            },
            WatchEvent::Resync => false,
        }
    }
}

/// The prefixes this node originates: its affine blocks and the addresses it borrowed from
/// other nodes' blocks (as /32 or /128), except in pools with `disableBGPExport`.
pub fn originated(
    node: &str,
    pools: &BTreeMap<String, Object<IpPoolSpec>>,
    blocks: &BTreeMap<String, Object<IpamBlockSpec>>,
) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for block in blocks.values().map(|b| &b.spec) {
        if block.deleted {
            continue;
        }
        let Some(pool) = pools
            .values()
            .map(|p| &p.spec)
            .find(|p| p.cidr.contains(&block.cidr))
        else {
            continue;
        };
        if pool.disable_bgp_export {
            continue;
        }
        let owner = affinity_node(block.affinity.as_deref());
        if owner == Some(node) {
            out.insert(block.cidr);
            continue;
        }
        for (ordinal, attr) in block.allocations.iter().enumerate() {
            let Some(attr) = attr.and_then(|i| block.attributes.get(i)) else {
                continue;
            };
            if attr.secondary.get("node").map(String::as_str) != Some(node) {
                continue;
            }
            if let Some(ip) = crate::model::ordinal_to_ip(&block.cidr, ordinal) {
                out.insert(IpNet::from(ip));
            }
        }
    }
    out
}

/// The service CIDRs every node originates (BGPConfiguration `default`'s `serviceClusterIPs`,
/// `serviceExternalIPs`, `serviceLoadBalancerIPs`), as Calico does: the router sees each from
/// every node, equal paths. Nothing is installed for them here (kube-proxy owns service
/// addresses); a CIDR with host bits set (refused by `brindlectl apply`) is left out.
pub fn service_cidrs(config: Option<&BgpConfigurationSpec>) -> BTreeSet<IpNet> {
    config
        .map(BgpConfigurationSpec::service_cidrs)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.trunc() == *c)
        .collect()
}

/// The fields of the stored BGPConfigurations and BGPPeers that Brindle accepts but does not
/// act on, one line each naming the resource (as `brindlectl apply` warns). A BGPPeer's
/// `localASNumber` is left to [`bgp_peers::desired_peers`], which says when it skips a peering
/// for it.
fn unsupported_fields(cache: &Cache) -> Vec<String> {
    let configs = cache.configs.iter().flat_map(|(name, c)| {
        c.spec
            .unsupported()
            .into_iter()
            .map(move |f| format!("BGPConfiguration/{name}: {f}"))
    });
    let peers = cache.peers.iter().flat_map(|(name, p)| {
        p.spec
            .unsupported()
            .into_iter()
            .filter(|f| !f.starts_with("spec.localASNumber"))
            .map(move |f| format!("BGPPeer/{name}: {f}"))
    });
    configs.chain(peers).collect()
}

/// A running speaker and what was applied to it.
struct Running {
    local: LocalBgp,
    handle: SpeakerHandle,
    peers: BTreeMap<IpAddr, DesiredPeer>,
    originated: BTreeSet<IpNet>,
    consumer: JoinHandle<()>,
    recursive: JoinHandle<()>,
}

/// Runs BGP routing until the process ends.
pub async fn run(config: RoutingConfig, store: Arc<dyn Store>, shared: Arc<Shared>) {
    let secrets = SecretDir(config.secrets_dir.clone());
    let mut running: Option<Running> = None;
    let mut last_warnings: Vec<String> = Vec::new();
    let mut initial_wait_started = false;
    loop {
        let (mut cache, revision) = match Cache::load(store.as_ref()).await {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(error = %e, "BGP: listing the datastore failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut watch = match store.watch(None, revision).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "BGP: watching the datastore failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let ok = reconcile(
                &config,
                &cache,
                &secrets,
                &shared,
                &mut running,
                &mut last_warnings,
            )
            .await;
            // After the first pass has configured the neighbours: the controller programs the
            // kernel once the peers' initial tables are in (graceful restart: until then the
            // routes of the previous run keep forwarding).
            if !initial_wait_started {
                initial_wait_started = true;
                let speaker = running.as_ref().map(|run| run.handle.clone());
                let shared = shared.clone();
                tokio::spawn(async move {
                    // No speaker (it could not start): nothing to wait for.
                    if let Some(speaker) = speaker {
                        crate::bgpd_install::initial_tables_received(
                            speaker,
                            INITIAL_WAIT_FOR_DOWN_PEERS,
                        )
                        .await;
                    }
                    shared
                        .bgp_initial_tables_pending
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    shared.bgp_kick.notify_one();
                });
            }
            let retry = tokio::time::sleep(if ok {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(2)
            });
            tokio::select! {
                event = watch.recv() => {
                    let Some(event) = event else { break };
                    if event == WatchEvent::Resync {
                        info!("BGP: datastore history compacted; relisting");
                        break;
                    }
                    let mut relevant = cache.apply(&event);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    // A Resync among the debounced events means some were lost: relist (it
                    // used to be dropped here, as in the controller).
                    let mut resync = false;
                    while let Ok(event) = watch.try_recv() {
                        if event == WatchEvent::Resync {
                            resync = true;
                            break;
                        }
                        relevant |= cache.apply(&event);
                    }
                    if resync {
                        info!("BGP: datastore history compacted; relisting");
                        break;
                    }
                    if !relevant {
                        // Wait for a relevant change without another pass.
                        continue;
                    }
                }
                _ = retry => {}
            }
        }
    }
}

/// One pass: the speaker brought to what the cache asks for. Returns whether everything was
/// applied (otherwise the caller retries soon).
async fn reconcile(
    config: &RoutingConfig,
    cache: &Cache,
    secrets: &SecretDir,
    shared: &Arc<Shared>,
    running: &mut Option<Running>,
    last_warnings: &mut Vec<String>,
) -> bool {
    let view = BgpView {
        local: &config.node,
        nodes: &cache.nodes,
        config: cache.configs.get("default").map(|c| &c.spec),
        configs: &cache.configs,
        peers: &cache.peers,
    };
    let local = match bgp_peers::local_bgp(&view) {
        Ok(local) => local,
        Err(e) => {
            warn!(error = %e, "BGP: the speaker cannot start yet");
            return false;
        }
    };
    // The route stream ends only when the speaker has stopped: start a new one.
    if running.as_ref().is_some_and(|r| r.consumer.is_finished()) {
        if let Some(old) = running.take() {
            warn!("BGP: the speaker stopped; starting it again");
            stop(old, shared).await;
            shared.update_learned(BTreeMap::clear);
        }
    }
    if running.as_ref().is_some_and(|r| r.local != local) {
        if let Some(old) = running.take() {
            info!(from = ?old.local, to = ?local, "BGP: the node's own settings changed; restarting the speaker");
            stop(old, shared).await;
            shared.update_learned(BTreeMap::clear);
        }
    }
    if running.is_none() {
        match start(config, &local, shared).await {
            Ok(r) => *running = Some(r),
            Err(e) => {
                warn!(error = %e, "BGP: starting the speaker failed");
                return false;
            }
        }
    }
    let Some(run) = running.as_mut() else {
        return false;
    };
    let mut ok = true;

    // The prefixes first, the neighbours after: a session that comes up (after a restart of
    // this node, say) then finds them in its initial dump before its End-of-RIB, so the
    // graceful-restart helper never flushes them as not refreshed.
    let mut want = originated(&config.node, &cache.pools, &cache.blocks);
    want.extend(service_cidrs(view.config));
    let gone: Vec<IpNet> = run.originated.difference(&want).copied().collect();
    let new: Vec<IpNet> = want.difference(&run.originated).copied().collect();
    if !gone.is_empty() {
        match run.handle.withdraw_all(gone.clone()).await {
            Ok(()) => {
                info!(prefixes = ?gone, "BGP: withdrawn");
                for p in &gone {
                    run.originated.remove(p);
                }
            }
            Err(e) => {
                warn!(error = %e, "BGP: withdrawing failed");
                ok = false;
            }
        }
    }
    if !new.is_empty() {
        match run.handle.originate_all(new.clone()).await {
            Ok(()) => {
                info!(prefixes = ?new, "BGP: originated");
                run.originated.extend(new);
            }
            Err(e) => {
                warn!(error = %e, "BGP: originating failed");
                ok = false;
            }
        }
    }

    let (desired, mut warnings) = bgp_peers::desired_peers(&view, &local, secrets);
    // Fields accepted but not acted on: said here too, for resources written without
    // `brindlectl apply` (kubectl on the CRDs).
    let ignored = unsupported_fields(cache);
    warnings.extend(ignored.iter().cloned());
    if warnings != *last_warnings {
        for w in &warnings {
            if ignored.contains(w) {
                warn!(problem = %w, "BGP: field ignored");
            } else {
                warn!(problem = %w, "BGP: peering not applied");
            }
        }
        *last_warnings = warnings;
    }
    let (remove, add) = bgp_peers::diff(&run.peers, &desired);
    for address in remove {
        if let Err(e) = run.handle.remove_neighbor(address).await {
            warn!(peer = %address, error = %e, "BGP: removing a neighbour failed");
        }
        run.peers.remove(&address);
        info!(peer = %address, "BGP: neighbour removed");
    }
    for neighbor in add {
        let address = neighbor.address;
        match run.handle.add_neighbor(neighbor).await {
            Ok(()) => {
                if let Some(p) = desired.get(&address) {
                    info!(peer = %address, peer_as = p.neighbor.asn, peer_type = %p.peer_type, rule = %p.source, passive = p.neighbor.passive, rr_client = p.neighbor.rr_client, "BGP: neighbour added");
                    run.peers.insert(address, p.clone());
                }
            }
            Err(e) => {
                warn!(peer = %address, error = %e, "BGP: adding a neighbour failed");
                ok = false;
            }
        }
    }

    ok
}

async fn start(
    config: &RoutingConfig,
    local: &LocalBgp,
    shared: &Arc<Shared>,
) -> Result<Running, speaker::SpeakerError> {
    let speaker_config = SpeakerConfig {
        listen: Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            local.listen_port,
        )),
        hold_time: config.hold_time,
        // BIRD's `connect retry time 5` (Calico's template) rather than RFC 4271's 120 s: a
        // node that starts before its peers connects to them within seconds of their start.
        connect_retry: 5,
        cluster_id: local.cluster_id,
        next_hop_v6: local.address_v6,
        graceful_restart_time: Some(config.graceful_restart_time),
        damp_peer_oscillations: false,
        ..SpeakerConfig::new(local.asn, local.address)
    };
    let (handle, changes) = speaker::start(speaker_config, Vec::new()).await?;
    info!(asn = local.asn, router_id = %local.address, next_hop_v6 = ?local.address_v6, cluster_id = ?local.cluster_id, port = local.listen_port, "BGP speaker started");
    let consumer = tokio::spawn(consume(changes, shared.clone()));
    // Next hops checked against the kernel as brindle-bgpd does (RFC 4271 §9.1.2.1): the
    // unreachable ones leave the decision process, the recursive ones are installed via the
    // route towards them. The task ends with the speaker.
    let (recursive_tx, mut recursive_rx) = tokio::sync::watch::channel(Recursive::new());
    tokio::spawn(crate::bgpd_install::resolve_next_hops(
        handle.clone(),
        recursive_tx,
    ));
    let publish = shared.clone();
    let recursive = tokio::spawn(async move {
        while recursive_rx.changed().await.is_ok() {
            let now = recursive_rx.borrow_and_update().clone();
            publish.set_recursive(now);
        }
    });
    shared.set_speaker(Some(handle.clone()));
    Ok(Running {
        local: local.clone(),
        handle,
        peers: BTreeMap::new(),
        originated: BTreeSet::new(),
        consumer,
        recursive,
    })
}

async fn stop(old: Running, shared: &Shared) {
    shared.set_speaker(None);
    if let Err(e) = old.handle.shutdown().await {
        warn!(error = %e, "BGP: stopping the speaker failed");
    }
    old.consumer.abort();
    old.recursive.abort();
}

/// Moves best-route changes into [`Shared::learned`], a batch at a time (whatever arrived
/// together), each batch one controller pass.
async fn consume(mut changes: mpsc::Receiver<RouteChange>, shared: Arc<Shared>) {
    while let Some(first) = changes.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = changes.try_recv() {
            batch.push(next);
        }
        shared.update_learned(|learned| {
            for change in batch {
                if change.next_hops.is_empty() {
                    learned.remove(&change.prefix);
                } else {
                    learned.insert(change.prefix, change.next_hops);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocationAttribute;

    #[test]
    fn a_node_originates_its_blocks_and_borrowed_addresses_but_not_unexported_pools() {
        let pool = |name: &str, cidr: &str, export: bool| {
            let mut spec: IpPoolSpec =
                serde_json::from_value(serde_json::json!({ "cidr": cidr })).expect("pool");
            spec.disable_bgp_export = !export;
            (name.to_string(), Object::new(name, spec))
        };
        let block = |cidr: &str, owner: &str, borrowed_by: Option<&str>| {
            let cidr: IpNet = cidr.parse().expect("cidr");
            let mut allocations = vec![None; 64];
            let mut attributes = vec![];
            if let Some(node) = borrowed_by {
                allocations[5] = Some(0);
                attributes.push(AllocationAttribute {
                    handle_id: Some("h".into()),
                    secondary: [("node".to_string(), node.to_string())].into(),
                });
            }
            let spec = IpamBlockSpec {
                cidr,
                affinity: Some(format!("host:{owner}")),
                affinity_claim_time: None,
                allocations,
                unallocated: vec![],
                attributes,
                sequence_number: 0,
                sequence_number_for_allocation: BTreeMap::new(),
                deleted: false,
                strict_affinity: false,
            };
            (cidr.to_string(), Object::new(cidr.to_string(), spec))
        };
        let pools: BTreeMap<_, _> = [
            pool("p", "10.244.0.0/16", true),
            pool("private", "10.250.0.0/16", false),
        ]
        .into();
        let blocks: BTreeMap<_, _> = [
            block("10.244.0.0/26", "a", None),
            block("10.244.0.64/26", "b", Some("a")),
            block("10.244.0.128/26", "b", Some("b")),
            block("10.250.0.0/26", "a", None),
        ]
        .into();
        let mine: Vec<String> = originated("a", &pools, &blocks)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(mine, ["10.244.0.0/26", "10.244.0.69/32"]);
        let theirs: Vec<String> = originated("b", &pools, &blocks)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(theirs, ["10.244.0.64/26", "10.244.0.128/26"]);
    }

    #[test]
    fn every_service_cidr_is_originated_and_none_without_a_configuration() {
        assert!(service_cidrs(None).is_empty());
        let mut c: BgpConfigurationSpec = serde_yaml::from_str(
            "serviceClusterIPs: [{cidr: 10.96.0.0/12}]\nserviceExternalIPs: [{cidr: 192.0.2.0/24}]\nserviceLoadBalancerIPs: [{cidr: 192.0.2.0/24}, {cidr: 'fd00:96::/108'}]\n",
        )
        .expect("config");
        let got: Vec<String> = service_cidrs(Some(&c))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.96.0.0/12", "192.0.2.0/24", "fd00:96::/108"]);
        // Stored without `brindlectl apply`'s check: left out rather than refused by the speaker.
        c.service_cluster_ips[0].cidr = "10.96.0.1/12".parse().expect("cidr");
        assert!(!service_cidrs(Some(&c)).contains(&"10.96.0.0/12".parse().expect("cidr")));
    }

    #[test]
    fn the_agent_names_the_stored_fields_it_ignores() {
        let mut cache = Cache::default();
        let peer: BgpPeerSpec = serde_yaml::from_str(
            "peerIP: 10.0.0.1\nasNumber: 65001\nlocalASNumber: 65002\nfilters: [f]\n",
        )
        .expect("peer");
        cache.peers.insert("tor".into(), Object::new("tor", peer));
        let config: BgpConfigurationSpec =
            serde_yaml::from_str("bindMode: NodeIP\nserviceClusterIPs: [{cidr: 10.96.0.0/12}]\n")
                .expect("config");
        cache
            .configs
            .insert("default".into(), Object::new("default", config));
        let fields = unsupported_fields(&cache);
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert!(fields[0].starts_with("BGPConfiguration/default: spec.bindMode"));
        assert!(
            fields[1].starts_with("BGPPeer/tor: spec.filters"),
            "localASNumber is said by desired_peers when it skips the peering: {fields:?}"
        );
    }
}
