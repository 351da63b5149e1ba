//! The dataplane: the only module that imports rtnetlink.
//!
//! Callers describe what the kernel should hold ([`DesiredState`]) and [`Dataplane::apply`]
//! reconciles the kernel to it. Pods are wired and unwired through [`PodWirer`].
//!
//! ```text
//!   Dataplane ── NetlinkKernel (one rtnetlink connection; its task runs on the tokio runtime)
//!      │  apply(): reconcile.rs ── dump, diff, write ──> trait Kernel (kernel.rs)
//!      │                                                  ├─ NetlinkKernel (netlink.rs)
//!      │                                                  └─ FakeKernel (fake.rs, tests)
//!      ├─ route_table() ─> RouteTable (routes only, incremental: route_table.rs; brindle-bgpd)
//!      └─ pod_wirer() ─> PodWirer (pod.rs, clones share the connection; per call a second,
//!                        short-lived connection inside the pod's netns, made by netns.rs;
//!                        veth deletions go to the reaper thread, reaper.rs)
//! ```
//!
//! Only `netlink.rs` imports rtnetlink. Ownership in the kernel is exact: routes with protocol
//! [`RTPROT_BRINDLE`], PERMANENT neighbour and FDB entries on [`VXLAN_DEVICE`], and the IPv4
//! addresses of [`IPIP_DEVICE`] (with its MTU and state while an IPIP pool exists; without one
//! its addresses are removed, as Felix does). Nothing else is ever changed or deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

#[cfg(test)]
mod fake;
mod kernel;
mod names;
mod nat;
mod netlink;
mod netns;
mod pod;
mod reaper;
mod reconcile;
mod route_table;
mod sysctl;

use kernel::Kernel;
pub use names::{
    eui64_link_local, format_mac, host_veth_name, host_veth_name_for_container, parse_mac, pod_mac,
    vtep_mac, HOST_VETH_PREFIX,
};
pub use nat::{NatOutgoing, NAT_TABLE};
use netlink::NetlinkKernel;
use pod::RecentPodRoutes;
pub use pod::{PodSpec, PodWirer, PodWiring};
pub use sysctl::Sysctl;

/// The `rtproto` value on every route Brindle installs. Only routes with it are ever deleted.
pub const RTPROT_BRINDLE: u8 = 98;
/// Name of the VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.brindle";
/// Name of the IPIP device: the kernel's fallback IPIP tunnel, which appears in every network
/// namespace when the `ipip` module is loaded (Calico's Felix uses it the same way). It
/// decapsulates every IPIP packet that arrives and encapsulates towards a route's gateway.
pub const IPIP_DEVICE: &str = "tunl0";
/// VXLAN network identifier (Calico's).
pub const VXLAN_VNI: u32 = 4096;
/// VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// How long the VXLAN device outlives the last pool that needed it (see
/// `Dataplane::vxlan_linger`).
pub const VXLAN_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// MAC of every host-side pod veth.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];
/// The pods' IPv4 gateway, answered by proxy ARP on the host side.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway: the EUI-64 link-local address of [`HOST_VETH_MAC`], held by every
/// host-side veth (Calico's).
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// A MAC address.
pub type Mac = [u8; 6];

/// Errors of the dataplane, with the object they concern.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("netlink: {op} {object}: {reason}")]
    Netlink {
        op: &'static str,
        object: String,
        reason: String,
    },
    #[error("network namespace {path}: {reason}")]
    Netns { path: String, reason: String },
    #[error("nftables: {0}")]
    Nftables(String),
    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    /// A pod spec that cannot be wired as given.
    #[error("pod {host_ifname}: {reason}")]
    InvalidPodSpec { host_ifname: String, reason: String },
    /// The kernel differs from what was checked ([`PodWirer::check`]); `differences` lists all.
    #[error("{object}: {differences}")]
    Mismatch { object: String, differences: String },
}

/// The VXLAN device as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    /// The node IP packets are encapsulated from.
    pub local_ip: Ipv4Addr,
    /// The interface holding `local_ip`.
    pub parent: String,
    /// This node's VTEP MAC.
    pub mac: Mac,
    /// This node's IPv4 tunnel address, set on the device as a /32 (the device's only IPv4
    /// address). `None` when only IPv6 pools use VXLAN: their next hops are link-local
    /// addresses, so the device needs no address of its own.
    pub tunnel_addr: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// The IPIP device (`tunl0`) as it should be: up, with this MTU and the node's IPIP tunnel
/// address. The device itself belongs to the kernel's `ipip` module; Brindle never creates or
/// deletes it. Without IPIP pools it is left down or up as it is, without IPv4 addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpipDevice {
    /// This node's IPIP tunnel address, set on the device as a /32 (the device's only IPv4
    /// address): the source of the node's own traffic to remote pods.
    pub tunnel_addr: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// Where a route sends traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// `blackhole <dst>`: a local block, so unallocated addresses do not leak to the default route.
    Blackhole,
    /// `<dst> dev <dev> scope link`: a local pod.
    Device { dev: String },
    /// `<dst> via <gw> dev <dev> onlink`: a remote block through a tunnel or a direct neighbour.
    ViaOnlink { gw: IpAddr, dev: String },
    /// `<dst> via <gw>`, or with several gateways one multipath (ECMP) route `<dst> nexthop via
    /// <gw1> nexthop via <gw2> ...`: a route learned over BGP. The kernel resolves each gateway's
    /// device (not onlink). Build it with [`RouteTarget::via`], which keeps `gws` sorted and
    /// without duplicates, as the kernel's view is compared in that form.
    Via { gws: Vec<IpAddr> },
}

impl RouteTarget {
    /// A [`RouteTarget::Via`] through `gws` (sorted, duplicates dropped); `None` without any.
    pub fn via(gws: impl IntoIterator<Item = IpAddr>) -> Option<RouteTarget> {
        let mut gws: Vec<IpAddr> = gws.into_iter().collect();
        gws.sort();
        gws.dedup();
        (!gws.is_empty()).then_some(RouteTarget::Via { gws })
    }
}

/// How the kernel reaches a BGP next hop, through routes that are not Brindle's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHopResolution {
    /// No usable route: routes through this next hop are not used.
    Unreachable,
    /// On one of our links: installed `via` the next hop itself.
    Connected,
    /// Through these gateways (the route towards the next hop): installed `via` them, as
    /// BIRD's `gateway recursive`.
    Via(Vec<IpAddr>),
}

/// A permanent neighbour (ARP) entry: a remote tunnel address and its VTEP MAC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbor {
    pub dev: String,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A permanent FDB entry: a remote VTEP MAC and the node IP behind it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub dev: String,
    pub mac: Mac,
    pub dst: IpAddr,
}

/// What the kernel should hold, all of it: anything Brindle owns that is not here is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub vxlan: Option<VxlanDevice>,
    /// `None`: Brindle leaves `tunl0` alone (it may not exist).
    pub ipip: Option<IpipDevice>,
    pub routes: BTreeMap<IpNet, RouteTarget>,
    pub neighbors: BTreeSet<Neighbor>,
    pub fdb: BTreeSet<FdbEntry>,
    /// NAT outgoing, in Brindle's nftables table.
    pub nat: NatOutgoing,
    /// Sysctls the dataplane needs (forwarding, `rp_filter`), checked on every pass.
    pub sysctls: BTreeSet<Sysctl>,
}

/// What one [`Dataplane::apply`] pass changed, and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub routes_added: usize,
    pub routes_removed: usize,
    pub neighbors_changed: usize,
    pub fdb_changed: usize,
    /// Whether the NAT table was (re)written.
    pub nat_written: bool,
    /// Sysctls set (at start, or because they were changed behind our back).
    pub sysctls_set: usize,
    /// Failed writes, each naming its object. They are attempted again by the next pass.
    pub errors: Vec<String>,
}

/// A kernel notification that may concern the reconciler (see [`Dataplane::watch_kernel`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// A route with protocol [`RTPROT_BRINDLE`] was added, replaced or deleted.
    OwnRoute,
    /// A PERMANENT neighbour or FDB entry appeared or changed, or any neighbour or FDB entry was
    /// deleted (Brindle's live on [`VXLAN_DEVICE`]).
    PermanentNeighbour,
    /// A link appeared, changed or vanished.
    Link { name: String, deleted: bool },
    /// An address was added to or removed from an interface.
    Address,
}

/// The kernel's routing state, owned through one rtnetlink connection in the network namespace
/// that was current when [`Dataplane::connect`] ran.
pub struct Dataplane {
    kernel: NetlinkKernel,
    /// The namespace the connection lives in, for `/proc/sys/net` writes from any thread.
    home: Arc<File>,
    recent_pod_routes: RecentPodRoutes,
    /// Deletes pods' veth pairs off the CNI DEL path.
    reaper: reaper::Reaper,
    nat: nat::NatTables,
    /// The VXLAN device as last wanted, and since when it is not wanted any more.
    vxlan_last: Option<(VxlanDevice, Option<std::time::Instant>)>,
    /// How long the device outlives it ([`VXLAN_LINGER`] unless set).
    vxlan_linger: std::time::Duration,
    /// Sysctls found right at least once (a later change is reported as drift).
    sysctls_ok: BTreeSet<String>,
}

impl Dataplane {
    /// Opens the netlink connection. Must run inside a tokio runtime.
    pub async fn connect() -> Result<Self, DataplaneError> {
        let home = netns::open(netns::CURRENT)?;
        Ok(Dataplane {
            kernel: NetlinkKernel::connect()?,
            reaper: reaper::Reaper::start(&home)?,
            home: Arc::new(home),
            recent_pod_routes: RecentPodRoutes::default(),
            nat: nat::NatTables::default(),
            vxlan_last: None,
            vxlan_linger: VXLAN_LINGER,
            sysctls_ok: BTreeSet::new(),
        })
    }

    /// Reconciles the kernel to `desired` (a full resync: dump, diff, write). Failed writes are
    /// reported and retried on the next call; one failure never stops the others. Fails only if
    /// the route table cannot be read.
    ///
    /// Host routes that [`PodWirer::setup`] wrote in the last few seconds survive even if
    /// `desired` does not list them yet. The NAT table is written by `nft`, which runs in the
    /// calling thread's network namespace: call from a thread in the connection's (the agent's
    /// threads all are).
    pub async fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        let protected = self.recent_pod_routes.protected();
        let lingering = self.vxlan_linger(desired);
        let desired = lingering.as_ref().unwrap_or(desired);
        let mut report = reconcile::reconcile(&self.kernel, desired, &protected).await?;
        // After the devices exist: some sysctls are per interface.
        self.reconcile_sysctls(&desired.sysctls, &mut report).await;
        match self.nat.reconcile(&desired.nat).await {
            Ok(written) => report.nat_written = written,
            Err(e) => report.errors.push(e.to_string()),
        }
        Ok(report)
    }

    /// Checks and sets `want` in the connection's namespace (`/proc/sys/net` shows the
    /// calling thread's): right here in the agent, whose threads all live there, else on a
    /// thread that enters it.
    async fn reconcile_sysctls(&mut self, want: &BTreeSet<Sysctl>, report: &mut ApplyReport) {
        let mut seen_ok = std::mem::take(&mut self.sysctls_ok);
        let (set, errors, seen_ok) = if netns::is_current(&self.home) {
            let mut errors = Vec::new();
            let set = sysctl::reconcile(want, &mut seen_ok, &mut errors);
            (set, errors, seen_ok)
        } else {
            let want = want.clone();
            let home = match self.home.try_clone() {
                Ok(home) => home,
                Err(e) => {
                    report.errors.push(format!("sysctls: {e}"));
                    self.sysctls_ok = seen_ok;
                    return;
                }
            };
            let kept = seen_ok.clone();
            match netns::run_in("host namespace", home, move || {
                let mut errors = Vec::new();
                let set = sysctl::reconcile(&want, &mut seen_ok, &mut errors);
                (set, errors, seen_ok)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => (0, vec![e.to_string()], kept),
            }
        };
        self.sysctls_ok = seen_ok;
        report.sysctls_set = set;
        report.errors.extend(errors);
    }

    /// How long the VXLAN device outlives the last desired state that had it (default
    /// [`VXLAN_LINGER`]; zero removes it at once).
    pub fn set_vxlan_linger(&mut self, linger: std::time::Duration) {
        self.vxlan_linger = linger;
    }

    /// When the VXLAN device kept past its last use is due to go, if one is lingering: a pass
    /// at that instant removes it (the controller schedules one).
    pub fn vxlan_linger_until(&self) -> Option<std::time::Instant> {
        match &self.vxlan_last {
            Some((_, Some(since))) => Some(*since + self.vxlan_linger),
            _ => None,
        }
    }

    /// `desired` with the VXLAN device kept, if it was wanted until less than the linger time
    /// ago. When a pool leaves VXLAN, every node moves its routes off the tunnel at its own
    /// pace; a node that deleted its device at once would drop what the slower ones still
    /// send it encapsulated. Kept, the device still decapsulates (it needs no route, neighbour
    /// or FDB entry for that); it goes at the first pass after the grace period, which the
    /// controller runs at [`Dataplane::vxlan_linger_until`].
    fn vxlan_linger(&mut self, desired: &DesiredState) -> Option<DesiredState> {
        if let Some(want) = &desired.vxlan {
            self.vxlan_last = Some((want.clone(), None));
            return None;
        }
        let (device, since) = self.vxlan_last.as_mut()?;
        let since = *since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= self.vxlan_linger {
            self.vxlan_last = None;
            return None;
        }
        // Without its tunnel address: IPAM may hand it to a pod of this node right away.
        Some(DesiredState {
            vxlan: Some(VxlanDevice {
                tunnel_addr: None,
                ..device.clone()
            }),
            ..desired.clone()
        })
    }

    /// Subscribes to the kernel's notifications (rtnetlink multicast groups: links, neighbours,
    /// IPv4 and IPv6 routes, addresses) in the namespace the dataplane lives in. The channel
    /// closes if the subscription fails (a socket overrun); subscribe again and resync.
    pub fn watch_kernel(
        &self,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<KernelEvent>, DataplaneError> {
        netlink::monitor()
    }

    /// A table of routes only, written incrementally (see [`RouteTable`]), sharing this
    /// connection. It starts knowing the routes of ours already in the kernel.
    pub async fn route_table(&self) -> Result<RouteTable, DataplaneError> {
        let mut tracker = route_table::RouteTracker::default();
        let adopted = tracker.adopt(&self.kernel).await?;
        tracing::info!(
            routes = adopted,
            "route table: routes of ours found in the kernel"
        );
        Ok(RouteTable {
            kernel: self.kernel.clone(),
            tracker,
        })
    }

    /// How `next_hop` is reached through a route that is not Brindle's own (see
    /// `NetlinkKernel::resolve_without_ours`): BGP's next-hop resolvability check, and the
    /// gateway to install for a next hop that is not on one of our links (recursive next hop).
    pub async fn resolve_next_hop(
        &self,
        next_hop: IpAddr,
    ) -> Result<NextHopResolution, DataplaneError> {
        self.kernel.resolve_without_ours(next_hop).await
    }

    /// A pod wirer sharing this connection.
    pub fn pod_wirer(&self) -> PodWirer {
        PodWirer::new(
            self.kernel.clone(),
            Arc::clone(&self.home),
            self.recent_pod_routes.clone(),
            self.reaper.clone(),
        )
    }

    /// Every address on every interface, with the interface's name (node IP autodetection).
    pub async fn addresses(&self) -> Result<Vec<(String, IpNet)>, DataplaneError> {
        self.kernel.all_addresses().await
    }

    /// The MTU of `ifname`.
    pub async fn link_mtu(&self, ifname: &str) -> Result<u32, DataplaneError> {
        self.kernel
            .link(ifname)
            .await?
            .map(|l| l.mtu)
            .ok_or_else(|| DataplaneError::NoSuchInterface(ifname.to_string()))
    }
}

/// Routes only, changed one prefix at a time and written incrementally (brindle-bgpd's best
/// routes): [`RouteTable::set`] records what a prefix should have, [`RouteTable::flush`] writes
/// the changed prefixes (as one batch, `Kernel::write_routes`; failures stay pending for the
/// next flush), [`RouteTable::resync`] compares the whole table with the kernel and also
/// removes stale routes of ours. Devices, neighbours and FDB entries are never touched; only
/// routes with protocol [`RTPROT_BRINDLE`] are changed, a foreign route to the same destination
/// is left alone (the write fails and is reported).
pub struct RouteTable {
    kernel: NetlinkKernel,
    tracker: route_table::RouteTracker,
}

impl RouteTable {
    /// What `dst` should have; `None`: no route of ours.
    pub fn set(&mut self, dst: IpNet, target: Option<RouteTarget>) {
        self.tracker.set(dst, target);
    }

    /// Prefixes not yet written (or whose write failed).
    pub fn pending(&self) -> usize {
        self.tracker.pending()
    }

    /// How many prefixes have a desired route.
    pub fn len(&self) -> usize {
        self.tracker.desired_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what changed since the last flush, and retries the writes that failed.
    pub async fn flush(&mut self) -> ApplyReport {
        self.tracker.flush(&self.kernel).await
    }

    /// Starts writing what changed since the last batch (not the writes that failed: those
    /// wait for [`RouteTable::flush`]); `None` when nothing changed. The table keeps taking
    /// changes while the returned future writes; hand its output to [`RouteTable::end_flush`].
    /// One batch at a time: [`RouteTable::flush`], [`RouteTable::resync`] and
    /// [`RouteTable::clear`] only once it has ended.
    pub fn begin_flush(&mut self) -> Option<futures::future::BoxFuture<'static, WrittenBatch>> {
        let mut batch = self
            .tracker
            .take_batch(false, route_table::MAX_BATCH_WRITES)?;
        let kernel = self.kernel.clone();
        Some(Box::pin(async move {
            let writes = std::mem::take(&mut batch.writes);
            let results = kernel.write_routes(writes).await;
            WrittenBatch { batch, results }
        }))
    }

    /// Records the outcome of a batch started by [`RouteTable::begin_flush`].
    pub fn end_flush(&mut self, written: WrittenBatch) -> ApplyReport {
        self.tracker.complete(written.batch, written.results)
    }

    /// Removes the routes of ours found in the kernel at the start (see
    /// [`Dataplane::route_table`]) that are not desired, and writes whatever is pending, in
    /// batches; no dump of the kernel's table (that is [`RouteTable::resync`]).
    pub async fn remove_unwanted(&mut self) -> ApplyReport {
        self.tracker.remove_unwanted();
        self.tracker.flush(&self.kernel).await
    }

    /// Full pass over the kernel's routes of ours. Fails only if the table cannot be read.
    pub async fn resync(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.tracker.resync(&self.kernel).await
    }

    /// Removes every route this table installed.
    pub async fn clear(&mut self) -> ApplyReport {
        self.tracker.clear(&self.kernel).await
    }
}

/// A batch of route writes done by the kernel ([`RouteTable::begin_flush`]).
pub struct WrittenBatch {
    batch: route_table::Batch,
    results: Vec<Result<(), DataplaneError>>,
}

impl WrittenBatch {
    /// How many routes the batch wrote or tried to.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

/// Sets `net.ipv4.ip_forward=1` in the current network namespace.
pub fn enable_ip_forwarding() -> Result<(), DataplaneError> {
    sysctl::set(&["net", "ipv4", "ip_forward"], "1")
}

/// Sets `net.ipv6.conf.all.forwarding=1` in the current network namespace (Felix does when IPv6
/// is on). Pod wiring sets it too, for the first IPv6 pod; this is for the agent's start.
pub fn enable_ipv6_forwarding() -> Result<(), DataplaneError> {
    sysctl::set(&["net", "ipv6", "conf", "all", "forwarding"], "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    /// Callers spawn these futures on a multi-threaded runtime and share the wirer across tasks;
    /// this fails to compile if that stops being possible. Never called.
    #[allow(dead_code)]
    fn public_futures_are_send(dp: &mut Dataplane, wirer: &PodWirer, d: &DesiredState) {
        let spec = PodSpec {
            netns: String::new(),
            ifname: String::new(),
            host_ifname: String::new(),
            ips: Vec::new(),
            mtu: 0,
        };
        assert_send(&wirer.setup(&spec));
        assert_send(&wirer.check(&spec));
        assert_send(&wirer.teardown(""));
        assert_send(&dp.addresses());
        assert_send(&dp.link_mtu(""));
        assert_send(&dp.apply(d));
    }

    #[test]
    fn pod_wirer_is_shareable() {
        assert_send_sync_clone::<PodWirer>();
    }
}
