//! The route programmer's loop: datastore in, kernel out.
//!
//! ```text
//!   datastore watch ──WatchEvent──▶ ┌────────────┐  DesiredState  ┌───────────┐
//!   API server (pod ADD/DEL) ─kick─▶│ Controller │ ─────────────▶ │ Dataplane │──▶ kernel
//!   resync timer ──────────tick───▶ └────────────┘   apply()      └───────────┘
//! ```
//!
//! One task owns the controller. It keeps a cache of the kinds routing depends on (IPPool, Node,
//! IPAMBlock), updated from one watch on the whole store; after any change (debounced), a kick
//! from the API server, or the periodic resync, it computes the desired state and has the
//! dataplane reconcile the kernel to it. A pass with errors is retried after a second. When the
//! watch reports that its history is gone, the cache is rebuilt from a fresh list.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brindle_ipam::store::{decode, Store, StoreError, StoreExt, WatchEvent};
use brindle_ipam::Ipam;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::dataplane::Dataplane;
use crate::model::{IpPoolSpec, IpamBlockSpec, NodeSpec, Object, Resource};
use crate::node;
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
    /// Address families and MTU for pods whose conflist does not set them, from the pools;
    /// `None` until the controller has loaded the datastore.
    pub pod_defaults: RwLock<Option<PodDefaults>>,
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
}

/// Runs the controller until the process ends.
pub async fn run(
    config: ControllerConfig,
    store: Arc<dyn Store>,
    ipam: Arc<Ipam>,
    mut dataplane: Dataplane,
    shared: Arc<Shared>,
) {
    let local = config.local;
    loop {
        let (mut cache, revision) = match Cache::load(store.as_ref()).await {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(error = %e, "listing the datastore failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut watch = match store.watch(None, revision).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "watching the datastore failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        info!(
            nodes = cache.nodes.len(),
            pools = cache.pools.len(),
            blocks = cache.blocks.len(),
            revision,
            "datastore loaded"
        );
        let mut pools_changed = true;
        let mut dirty = true;
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
            if dirty {
                dirty = !program(&local, &cache, &mut dataplane, &shared).await;
            }
            let retry = tokio::time::sleep(if dirty || pools_changed {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(3600)
            });
            tokio::select! {
                event = watch.recv() => {
                    let Some(event) = event else { break };
                    if event == WatchEvent::Resync {
                        info!("datastore history compacted; relisting");
                        break;
                    }
                    pools_changed |= matches!(&event, WatchEvent::Put(kv) if kv.kind == IpPoolSpec::KIND)
                        || matches!(&event, WatchEvent::Deleted { kind, .. } if kind == IpPoolSpec::KIND);
                    if cache.apply(&event) {
                        dirty = true;
                        // Debounce: take whatever else arrived in the meantime.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        while let Ok(event) = watch.try_recv() {
                            if event == WatchEvent::Resync {
                                break;
                            }
                            cache.apply(&event);
                        }
                    }
                }
                _ = shared.kick.notified() => dirty = true,
                _ = resync.tick() => dirty = true,
                _ = retry => {}
            }
        }
    }
}

/// One reconcile pass; returns whether it succeeded.
async fn program(
    local: &LocalNode,
    cache: &Cache,
    dataplane: &mut Dataplane,
    shared: &Shared,
) -> bool {
    let endpoints = shared.endpoints().clone();
    let desired = desired_state(&ClusterView {
        local,
        nodes: &cache.nodes,
        pools: &cache.pools,
        blocks: &cache.blocks,
        endpoints: &endpoints,
    });
    shared.remote_nodes.store(
        cache.nodes.len().saturating_sub(1) as u64,
        Ordering::Relaxed,
    );
    match dataplane.apply(&desired).await {
        Ok(report) if report.errors.is_empty() => {
            if report.routes_added
                + report.routes_removed
                + report.neighbors_changed
                + report.fdb_changed
                > 0
            {
                info!(
                    routes_added = report.routes_added,
                    routes_removed = report.routes_removed,
                    neighbors_changed = report.neighbors_changed,
                    fdb_changed = report.fdb_changed,
                    "dataplane programmed"
                );
            } else {
                debug!("dataplane in sync");
            }
            shared.ready.store(true, Ordering::Relaxed);
            true
        }
        Ok(report) => {
            warn!(errors = ?report.errors, "dataplane programmed with errors; retrying");
            false
        }
        Err(e) => {
            warn!(error = %e, "dataplane programming failed; retrying");
            false
        }
    }
}
