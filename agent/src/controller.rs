//! The route programmer's loop: datastore in, kernel out.
//!
//! ```text
//!   datastore watch ──WatchEvent──▶ ┌────────────┐  DesiredState  ┌───────────┐
//!   API server (pod ADD/DEL) ─kick─▶│ Controller │ ─────────────▶ │ Dataplane │──▶ kernel
//!   resync timer ──────────tick───▶ │            │   apply()      └───────────┘
//!   kernel (rtnetlink multicast) ─▶ └────────────┘                     │
//!        ▲      KernelEvent: own route / PERMANENT neighbour / link /  │
//!        └──────────────── address changed ─────────────────────────────┘
//! ```
//!
//! One task owns the controller. It keeps a cache of the kinds routing depends on (IPPool, Node,
//! IPAMBlock), updated from one watch on the whole store; after any change (debounced), a kick
//! from the API server, or the periodic resync, it computes the desired state and has the
//! dataplane reconcile the kernel to it. The kernel's own notifications also trigger a pass when
//! something Brindle owns changed (a route of rtproto 98, a PERMANENT neighbour or FDB entry, the
//! VXLAN or IPIP device or the uplink), so what is deleted by hand is restored at once. A pass with
//! errors is retried with exponential backoff (0.2 s doubling to 30 s). When the watch reports
//! that its history is gone, the cache is rebuilt from a fresh list.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brindle_ipam::store::{decode, Store, StoreError, StoreExt, WatchEvent};
use brindle_ipam::Ipam;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::dataplane::{Dataplane, DesiredState, KernelEvent, IPIP_DEVICE, VXLAN_DEVICE};
use crate::metrics::{Metrics, Trigger};
use crate::model::{IpPoolSpec, IpamBlockSpec, NodeSpec, Object, Resource};
use crate::node::{self, AutodetectMethod};
use crate::pod_defaults::{pod_defaults, MtuConfig, PodDefaults};
use crate::routes::{desired_state, ClusterView, LocalEndpoint, LocalNode};

/// State the controller shares with the API and health servers.
#[derive(Default)]
pub struct Shared {
    /// Pods wired on this node, by IPAM handle. The API server adds an entry before it creates a
    /// pod's host route and removes it before it deletes the pod, so a reconcile pass never sees
    /// a pod route that is not desired.
    pub endpoints: RwLock<BTreeMap<String, LocalEndpoint>>,
    /// Set once the dataplane has been programmed without error (and kept: a change being
    /// programmed does not make the node unready).
    pub ready: AtomicBool,
    /// Unix time (seconds) of the controller loop's last turn, for liveness.
    pub heartbeat: AtomicU64,
    /// Number of other nodes known.
    pub remote_nodes: AtomicU64,
    /// Wakes the controller for a pass.
    pub kick: Notify,
    /// Wakes the controller for a pass because the learned routes changed.
    pub bgp_kick: Notify,
    /// BGP mode, after a start: the peers' initial tables are not all in yet, so the kernel is
    /// left as it is (the routes of the previous run keep forwarding, RFC 4724 §4.1) and no
    /// pass runs. The routing task clears it and kicks.
    pub bgp_initial_tables_pending: AtomicBool,
    /// BGP routing mode: the speaker's best routes (prefix -> next hops), kept by the routing
    /// task (`crate::bgp_routing`), which kicks the controller when they change. `None`:
    /// static routing from the datastore.
    pub learned: RwLock<Option<BTreeMap<ipnet::IpNet, Vec<std::net::IpAddr>>>>,
    /// BGP mode: the running speaker, whose status the API socket serves.
    pub speaker: RwLock<Option<brindle_bgp::speaker::SpeakerHandle>>,
    /// BGP next hops that are not on one of our links -> the gateways of the kernel route
    /// towards them (BIRD's `gateway recursive`), from the speaker's next-hop checks.
    pub recursive: RwLock<BTreeMap<std::net::IpAddr, Vec<std::net::IpAddr>>>,
    /// Address families and MTU for pods whose conflist does not set them, from the pools;
    /// `None` until the controller has loaded the datastore.
    pub pod_defaults: RwLock<Option<PodDefaults>>,
    /// Why the datastore is unreachable, while it is (see [`crate::datastore_health`]); the
    /// node reports not ready meanwhile, and keeps its dataplane.
    pub datastore_error: RwLock<Option<String>>,
}

impl Shared {
    pub fn endpoints(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, LocalEndpoint>> {
        self.endpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn endpoints_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, LocalEndpoint>> {
        self.endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn pod_defaults(&self) -> Option<PodDefaults> {
        *self
            .pod_defaults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_pod_defaults(&self, defaults: PodDefaults) {
        *self
            .pod_defaults
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(defaults);
    }

    pub fn datastore_error(&self) -> Option<String> {
        self.datastore_error
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_datastore_error(&self, error: Option<String>) {
        *self
            .datastore_error
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// A copy of the learned routes (see [`Shared::learned`]).
    pub fn learned(&self) -> Option<BTreeMap<ipnet::IpNet, Vec<std::net::IpAddr>>> {
        self.learned
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes the learned routes with `f` and wakes the controller.
    pub fn update_learned(
        &self,
        f: impl FnOnce(&mut BTreeMap<ipnet::IpNet, Vec<std::net::IpAddr>>),
    ) {
        {
            let mut guard = self
                .learned
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(guard.get_or_insert_with(BTreeMap::new));
        }
        self.bgp_kick.notify_one();
    }

    /// The running BGP speaker, if any.
    pub fn speaker(&self) -> Option<brindle_bgp::speaker::SpeakerHandle> {
        self.speaker
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_speaker(&self, speaker: Option<brindle_bgp::speaker::SpeakerHandle>) {
        *self
            .speaker
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = speaker;
    }

    /// A copy of the recursive next hops (see [`Shared::recursive`]).
    pub fn recursive(&self) -> BTreeMap<std::net::IpAddr, Vec<std::net::IpAddr>> {
        self.recursive
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the recursive next hops and wakes the controller.
    pub fn set_recursive(&self, recursive: BTreeMap<std::net::IpAddr, Vec<std::net::IpAddr>>) {
        *self
            .recursive
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = recursive;
        self.bgp_kick.notify_one();
    }

    pub fn beat(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.heartbeat.store(now, Ordering::Relaxed);
    }
}

/// The cached cluster state routing depends on.
#[derive(Default)]
struct Cache {
    nodes: BTreeMap<String, Object<NodeSpec>>,
    pools: BTreeMap<String, Object<IpPoolSpec>>,
    blocks: BTreeMap<String, Object<IpamBlockSpec>>,
}

impl Cache {
    async fn load(store: &dyn Store) -> Result<(Cache, u64), StoreError> {
        let (nodes, r1) = store.list_objs::<NodeSpec>().await?;
        let (pools, r2) = store.list_objs::<IpPoolSpec>().await?;
        let (blocks, r3) = store.list_objs::<IpamBlockSpec>().await?;
        let cache = Cache {
            nodes: nodes
                .into_iter()
                .map(|o| (o.metadata.name.clone(), o))
                .collect(),
            pools: pools
                .into_iter()
                .map(|o| (o.metadata.name.clone(), o))
                .collect(),
            blocks: blocks
                .into_iter()
                .map(|o| (o.metadata.name.clone(), o))
                .collect(),
        };
        // Watch from the oldest list revision: replaying a change twice is harmless.
        Ok((cache, r1.min(r2).min(r3)))
    }

    /// Applies one watch event; returns whether it concerns routing.
    fn apply(&mut self, event: &WatchEvent) -> bool {
        match event {
            WatchEvent::Put(kv) => match kv.kind.as_str() {
                NodeSpec::KIND => put(&mut self.nodes, kv),
                IpPoolSpec::KIND => put(&mut self.pools, kv),
                IpamBlockSpec::KIND => put(&mut self.blocks, kv),
                _ => false,
            },
            WatchEvent::Deleted { kind, name, .. } => match kind.as_str() {
                NodeSpec::KIND => self.nodes.remove(name).is_some(),
                IpPoolSpec::KIND => self.pools.remove(name).is_some(),
                IpamBlockSpec::KIND => self.blocks.remove(name).is_some(),
                _ => false,
            },
            WatchEvent::Resync => false,
        }
    }
}

fn put<S: Resource>(
    map: &mut BTreeMap<String, Object<S>>,
    kv: &brindle_ipam::store::KvPair,
) -> bool {
    match decode::<S>(kv) {
        Ok(obj) => {
            map.insert(kv.name.clone(), obj);
            true
        }
        Err(e) => {
            warn!(kind = %kv.kind, name = %kv.name, error = %e, "ignoring undecodable resource");
            false
        }
    }
}

/// The controller's configuration.
pub struct ControllerConfig {
    pub local: LocalNode,
    /// Full resync period, even without changes (repairs what others changed in the kernel).
    pub resync_interval: Duration,
    /// How the pods' MTU is found (see [`crate::pod_defaults`]).
    pub pod_mtu: MtuConfig,
    /// Where the controller reports what it does.
    pub metrics: Arc<Metrics>,
    /// How the node address was chosen, when it was detected rather than given: it is chosen
    /// again whenever an interface address changes (or the Kubernetes Node's InternalIP), and
    /// the Node updated if it moved.
    pub autodetect: Option<Redetect>,
}

/// How the controller chooses the node address again.
pub enum Redetect {
    /// By an interface method (`first-found`, `interface=`, `cidr=`, ...).
    Interfaces(AutodetectMethod),
    /// `kubernetes-internal-ip`: the Kubernetes Node's InternalIP, as
    /// [`crate::kube_node::follow_internal_ipv4`] keeps it here, with the prefix of the local
    /// interface holding it. Chosen again when it changes and when interface addresses do (the
    /// new InternalIP may reach an interface after the Node says so).
    KubernetesInternalIp(tokio::sync::watch::Receiver<Option<std::net::Ipv4Addr>>),
}

/// First retry delay after a failed pass; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long kernel notifications are gathered before the pass they trigger.
const KERNEL_DEBOUNCE: Duration = Duration::from_millis(50);

/// The delay before retry number `failures` (1 for the first).
fn backoff(failures: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// Runs the controller until the process ends.
pub async fn run(
    config: ControllerConfig,
    store: Arc<dyn Store>,
    ipam: Arc<Ipam>,
    mut dataplane: Dataplane,
    shared: Arc<Shared>,
) {
    let mut local = config.local.clone();
    let metrics = config.metrics.clone();
    let mut kernel = subscribe(&dataplane);
    let mut internal_ip = match &config.autodetect {
        Some(Redetect::KubernetesInternalIp(rx)) => Some(rx.clone()),
        _ => None,
    };
    // Failed (re)lists in a row. Until a list of every kind (all pages) succeeds, nothing is
    // programmed: the kernel keeps what the last full view put there.
    let mut list_failures = 0u32;
    loop {
        let (mut cache, revision) = match Cache::load(store.as_ref()).await {
            Ok(loaded) => loaded,
            Err(e) => {
                list_failures += 1;
                relist_failed(&shared, "listing", &e, list_failures).await;
                continue;
            }
        };
        let mut watch = match store.watch(None, revision).await {
            Ok(w) => w,
            Err(e) => {
                list_failures += 1;
                relist_failed(&shared, "watching", &e, list_failures).await;
                continue;
            }
        };
        list_failures = 0;
        shared.set_datastore_error(None);
        info!(
            nodes = cache.nodes.len(),
            pools = cache.pools.len(),
            blocks = cache.blocks.len(),
            revision,
            "datastore loaded"
        );
        let mut pools_changed = true;
        // The pass to run next, with what asked for it: a full resync at start.
        let mut pending = Some(Trigger::Resync);
        let mut failures = 0u32;
        // What the last successful pass programmed (see `program`).
        let mut applied: Option<DesiredState> = None;
        let mut resync = tokio::time::interval(config.resync_interval);
        resync.tick().await;
        loop {
            shared.beat();
            if pools_changed {
                let defaults = pod_defaults(cache.pools.values().map(|p| &p.spec), &config.pod_mtu);
                if shared.pod_defaults() != Some(defaults) {
                    info!(
                        ipv4 = defaults.ipv4,
                        ipv6 = defaults.ipv6,
                        mtu = defaults.mtu,
                        "pod defaults"
                    );
                    shared.set_pod_defaults(defaults);
                }
                let pools: Vec<_> = cache.pools.values().collect();
                let vxlan = node::ensure_vxlan_tunnel(&store, &ipam, &local.name, &pools).await;
                let ipip = match &vxlan {
                    Ok(_) => {
                        Some(node::ensure_ipip_tunnel(&store, &ipam, &local.name, &pools).await)
                    }
                    Err(_) => None,
                };
                match (vxlan, ipip) {
                    (Ok(_), Some(Ok(me))) => {
                        cache.nodes.insert(local.name.clone(), me);
                        pools_changed = false;
                    }
                    (Err(e), _) => warn!(error = %e, "allocating the VXLAN tunnel address failed"),
                    (_, Some(Err(e))) => {
                        warn!(error = %e, "allocating the IPIP tunnel address failed")
                    }
                    (Ok(_), None) => {}
                }
            }
            if let Some(trigger) = pending.take() {
                if program(
                    &local,
                    &cache,
                    &mut dataplane,
                    &shared,
                    &metrics,
                    trigger,
                    &mut applied,
                )
                .await
                {
                    failures = 0;
                } else {
                    failures += 1;
                    pending = Some(Trigger::Retry);
                }
            }
            let retry = tokio::time::sleep(if pending.is_some() || pools_changed {
                backoff(failures.max(1))
            } else {
                Duration::from_secs(3600)
            });
            // The lingering VXLAN device goes at its deadline, not a resync interval later.
            let linger = dataplane.vxlan_linger_until();
            let linger_expired = async move {
                match linger {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = watch.recv() => {
                    let Some(event) = event else { break };
                    if event == WatchEvent::Resync {
                        info!("datastore history compacted; relisting");
                        break;
                    }
                    if process_event(&mut cache, &event, &local, &ipam, &mut pools_changed) {
                        // Debounce: take whatever else arrived in the meantime. A Resync among
                        // it means events were lost: relist (it used to be dropped here, leaving
                        // the view stale until the next 410).
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if drain_debounced(&mut watch, &mut cache, &local, &ipam, &mut pools_changed) {
                            info!("datastore history compacted; relisting");
                            break;
                        }
                        pending.get_or_insert(Trigger::Datastore);
                    }
                }
                event = next_kernel_event(&mut kernel) => {
                    let mut events = vec![event];
                    tokio::time::sleep(KERNEL_DEBOUNCE).await;
                    if let Some(rx) = kernel.as_mut() {
                        while let Ok(e) = rx.try_recv() {
                            events.push(Some(e));
                        }
                    }
                    let mut addresses_changed = false;
                    for event in events {
                        match event {
                            None => {
                                // The subscription failed (e.g. an overrun): what was missed is
                                // unknown, so subscribe again and compare everything.
                                kernel = subscribe(&dataplane);
                                pending = Some(Trigger::Resync);
                            }
                            Some(KernelEvent::OwnRoute | KernelEvent::PermanentNeighbour) => {
                                pending.get_or_insert(Trigger::Kernel);
                            }
                            Some(KernelEvent::Link { name, deleted }) => {
                                let ours = [VXLAN_DEVICE, IPIP_DEVICE, local.uplink.as_str()];
                                if ours.contains(&name.as_str()) {
                                    debug!(link = %name, deleted, "link of ours changed");
                                    pending.get_or_insert(Trigger::Kernel);
                                }
                            }
                            Some(KernelEvent::Address) => addresses_changed = true,
                        }
                    }
                    if addresses_changed {
                        if let Some(how) = &config.autodetect {
                            if redetect(&dataplane, &store, how, &mut local).await {
                                pending = Some(Trigger::Kernel);
                            }
                        }
                    }
                }
                () = internal_ip_changed(&mut internal_ip) => {
                    if let Some(how) = &config.autodetect {
                        if redetect(&dataplane, &store, how, &mut local).await {
                            pending = Some(Trigger::Kernel);
                        }
                    }
                }
                _ = shared.kick.notified() => { pending.get_or_insert(Trigger::Api); }
                _ = shared.bgp_kick.notified() => { pending.get_or_insert(Trigger::Bgp); }
                _ = resync.tick() => pending = Some(Trigger::Resync),
                _ = retry => {}
                _ = linger_expired => { pending.get_or_insert(Trigger::Linger); }
            }
        }
    }
}

/// Applies the events already waiting on `watch`; returns whether one was a Resync (the rest
/// after it are left for the relist).
fn drain_debounced(
    watch: &mut brindle_ipam::store::Watch,
    cache: &mut Cache,
    local: &LocalNode,
    ipam: &Arc<Ipam>,
    pools_changed: &mut bool,
) -> bool {
    while let Ok(event) = watch.try_recv() {
        if event == WatchEvent::Resync {
            return true;
        }
        process_event(cache, &event, local, ipam, pools_changed);
    }
    false
}

/// After a failed (re)list or watch: the datastore counts as unreachable, the loop stays live,
/// and the next attempt waits (backing off to [`RETRY_MAX`]).
async fn relist_failed(shared: &Shared, what: &str, error: &StoreError, failures: u32) {
    shared.beat();
    shared.set_datastore_error(Some(error.to_string()));
    let delay = backoff(failures);
    warn!(%error, retry_in = ?delay, "{what} the datastore failed; keeping the last-known dataplane");
    tokio::time::sleep(delay).await;
}

/// Applies a datastore event to the cache; returns whether routing may change. A Node that is
/// deleted has its block affinities released (every agent tries; the releases are
/// compare-and-swap, so one wins and the others find nothing left).
fn process_event(
    cache: &mut Cache,
    event: &WatchEvent,
    local: &LocalNode,
    ipam: &Arc<Ipam>,
    pools_changed: &mut bool,
) -> bool {
    *pools_changed |= matches!(event, WatchEvent::Put(kv) if kv.kind == IpPoolSpec::KIND)
        || matches!(event, WatchEvent::Deleted { kind, .. } if kind == IpPoolSpec::KIND);
    if let WatchEvent::Deleted { kind, name, .. } = event {
        if kind == NodeSpec::KIND && *name != local.name {
            let ipam = ipam.clone();
            let node = name.clone();
            tokio::spawn(async move {
                match ipam.release_node(&node).await {
                    Ok(out) => info!(
                        %node,
                        deleted = ?out.deleted,
                        unaffined = ?out.unaffined,
                        "node deleted: its block affinities released"
                    ),
                    Err(e) => warn!(%node, error = %e, "releasing a deleted node's blocks failed"),
                }
            });
        }
    }
    cache.apply(event)
}

/// Subscribes to kernel notifications; `None` (with a warning) when that fails, leaving the
/// periodic resync as the only repair.
fn subscribe(dataplane: &Dataplane) -> Option<UnboundedReceiver<KernelEvent>> {
    match dataplane.watch_kernel() {
        Ok(rx) => Some(rx),
        Err(e) => {
            warn!(error = %e, "kernel notifications unavailable; relying on the periodic resync");
            None
        }
    }
}

/// The next kernel notification; `None` once the subscription has ended. Never resolves
/// without a subscription.
async fn next_kernel_event(
    kernel: &mut Option<UnboundedReceiver<KernelEvent>>,
) -> Option<KernelEvent> {
    match kernel {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the followed Kubernetes InternalIP changed; never without one (or once its
/// sender is gone).
async fn internal_ip_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<Option<std::net::Ipv4Addr>>>,
) {
    match rx {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The node address `how` chooses now.
async fn choose_again(
    dataplane: &Dataplane,
    how: &Redetect,
    name: &str,
) -> Result<node::Choice, String> {
    match how {
        Redetect::Interfaces(method) => node::autodetect(dataplane, method)
            .await
            .map_err(|e| e.to_string()),
        Redetect::KubernetesInternalIp(rx) => {
            let ip = (*rx.borrow())
                .ok_or_else(|| "the Kubernetes Node's InternalIP is not known".to_string())?;
            let addrs = dataplane.addresses().await.map_err(|e| e.to_string())?;
            let address =
                crate::kube_node::with_local_prefix(name, ip, &addrs).map_err(|e| e.to_string())?;
            let ifname = addrs
                .iter()
                .find(|(_, net)| net.addr() == std::net::IpAddr::V4(ip))
                .map(|(ifname, _)| ifname.clone())
                .unwrap_or_default();
            Ok(node::Choice {
                address,
                ifname: ifname.clone(),
                candidates: vec![(ifname, address)],
            })
        }
    }
}

/// Chooses the node address again; when it moved, updates the Node and `local`. Returns whether
/// it moved.
async fn redetect(
    dataplane: &Dataplane,
    store: &Arc<dyn Store>,
    how: &Redetect,
    local: &mut LocalNode,
) -> bool {
    let choice = match choose_again(dataplane, how, &local.name).await {
        Ok(choice) => choice,
        Err(e) => {
            warn!(error = %e, address = %local.address, "re-detecting the node address failed; keeping it");
            return false;
        }
    };
    if choice.address == local.address && choice.ifname == local.uplink {
        return false;
    }
    // Only on a change: addresses come and go with every pod's veth.
    if let Redetect::Interfaces(method) = how {
        node::warn_if_ambiguous(method, &choice);
    }
    match node::set_ipv4_address(store, &local.name, choice.address).await {
        Ok(_) => {
            info!(from = %local.address, to = %choice.address, interface = %choice.ifname, "node address changed");
            local.address = choice.address;
            local.uplink = choice.ifname;
            true
        }
        Err(e) => {
            warn!(error = %e, "updating the Node with its new address failed");
            false
        }
    }
}

/// One reconcile pass; returns whether it succeeded. A datastore change or an API kick that
/// leaves the desired state as the last successful pass programmed it (most block updates: a
/// pod allocated on another node) skips the kernel: nothing in the kernel changed that the
/// kernel's notifications did not report, and the periodic resync still compares everything.
#[allow(clippy::too_many_arguments)]
async fn program(
    local: &LocalNode,
    cache: &Cache,
    dataplane: &mut Dataplane,
    shared: &Shared,
    metrics: &Metrics,
    trigger: Trigger,
    applied: &mut Option<DesiredState>,
) -> bool {
    if shared.bgp_initial_tables_pending.load(Ordering::Relaxed) {
        debug!(
            ?trigger,
            "waiting for the BGP peers' initial tables; kernel left as it is"
        );
        return true;
    }
    let endpoints = shared.endpoints().clone();
    let learned = shared.learned();
    let recursive = shared.recursive();
    let desired = desired_state(&ClusterView {
        local,
        nodes: &cache.nodes,
        pools: &cache.pools,
        blocks: &cache.blocks,
        endpoints: &endpoints,
        learned: learned.as_ref(),
        recursive: &recursive,
    });
    let remote_nodes = cache.nodes.len().saturating_sub(1);
    shared
        .remote_nodes
        .store(remote_nodes as u64, Ordering::Relaxed);
    metrics.set_remote_nodes(remote_nodes);
    metrics.set_ipam(cache.pools.values(), cache.blocks.values());
    if matches!(trigger, Trigger::Datastore | Trigger::Api | Trigger::Bgp)
        && applied.as_ref() == Some(&desired)
    {
        debug!(?trigger, "desired state unchanged; kernel not consulted");
        return true;
    }
    let started = Instant::now();
    let result = dataplane.apply(&desired).await;
    let ok = matches!(&result, Ok(report) if report.errors.is_empty());
    metrics.observe_reconcile(trigger, started.elapsed(), ok);
    match result {
        Ok(report) if report.errors.is_empty() => {
            metrics.set_routes(&desired);
            *applied = Some(desired);
            if report.routes_added
                + report.routes_removed
                + report.neighbors_changed
                + report.fdb_changed
                > 0
            {
                info!(
                    ?trigger,
                    routes_added = report.routes_added,
                    routes_removed = report.routes_removed,
                    neighbors_changed = report.neighbors_changed,
                    fdb_changed = report.fdb_changed,
                    "dataplane programmed"
                );
            } else {
                debug!(?trigger, "dataplane in sync");
            }
            shared.ready.store(true, Ordering::Relaxed);
            true
        }
        Ok(report) => {
            *applied = None;
            warn!(errors = ?report.errors, "dataplane programmed with errors; retrying");
            false
        }
        Err(e) => {
            *applied = None;
            warn!(error = %e, "dataplane programming failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_to_a_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(10), RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
