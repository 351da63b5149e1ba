//! Wiring a pod: the veth pair, the pod's addresses and routes, the host's route to it
//! (Calico's `DoNetworking`, BRIEF §4).
//!
//! ```text
//!   pod netns                          node netns
//!   eth0  10.244.0.5/32   <-- veth -->  brdXXXXXXXXXXX  ee:ee:ee:ee:ee:ee, proxy_arp=1
//!         fd00:10:244::5/128                           fe80::ecee:eeff:feee:eeee/64, proxy_ndp=1
//!   169.254.1.1 dev eth0 scope link     10.244.0.5 dev brdXXXXXXXXXXX scope link proto 98
//!   default via 169.254.1.1 dev eth0    fd00:10:244::5 dev brdXXXXXXXXXXX proto 98
//!   default via fe80::ecee:eeff:feee:eeee dev eth0
//! ```
//!
//! IPv4: the pod ARPs for 169.254.1.1 and the host answers with its own MAC through proxy ARP,
//! so the host side needs no IPv4 address. IPv6 (only for a pod with an IPv6 address): the
//! gateway is the host side's link-local address, which its MAC `ee:ee:ee:ee:ee:ee` gives by
//! EUI-64 (Calico's choice); it is added explicitly so that it does not depend on the host's
//! `addr_gen_mode`, and duplicate address detection is off on both ends so that neither the
//! gateway nor the pod's /128 sits "tentative" after ADD.

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::Instrument;

use super::kernel::{Kernel, RouteKind};
use super::netlink::{NetlinkKernel, RouteSpec, RTPROT_BOOT};
use super::reaper::Reaper;
use super::reconcile::ProtectedRoutes;
use super::{
    format_mac, netns, sysctl, DataplaneError, RouteTarget, HOST_VETH_MAC, POD_GATEWAY_V4,
    POD_GATEWAY_V6, RTPROT_BRINDLE,
};

/// How long a pod route written by [`PodWirer::setup`] is safe from [`super::Dataplane::apply`]
/// while the desired state catches up (Felix's `routeCleanupGracePeriod`).
const POD_ROUTE_GRACE: Duration = Duration::from_secs(10);

/// What to wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// Path of the pod's network namespace (`/var/run/netns/x`, `/proc/<pid>/ns/net`).
    pub netns: String,
    /// Interface name inside the pod (`CNI_IFNAME`, usually `eth0`).
    pub ifname: String,
    /// Host-side veth name, from [`super::host_veth_name`].
    pub host_ifname: String,
    /// The pod's addresses, IPv4 and/or IPv6; each is installed as a /32 (/128) whatever
    /// prefix it carries.
    pub ips: Vec<IpNet>,
    pub mtu: u32,
}

/// The result of wiring a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodWiring {
    /// MAC of the pod-side interface, `aa:bb:cc:dd:ee:ff`.
    pub container_mac: String,
}

/// Host routes recently written by the pod wirer: destination -> (device, when).
#[derive(Clone, Default)]
pub(crate) struct RecentPodRoutes(Arc<Mutex<HashMap<IpNet, (String, Instant)>>>);

impl RecentPodRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpNet, (String, Instant)>> {
        // The map holds plain values; a panic elsewhere cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, dst: IpNet, dev: &str) {
        self.lock().insert(dst, (dev.to_string(), Instant::now()));
    }

    fn forget_device(&self, dev: &str) {
        self.lock().retain(|_, (d, _)| d != dev);
    }

    /// The routes still within their grace period; older entries are dropped.
    pub(crate) fn protected(&self) -> ProtectedRoutes {
        let mut map = self.lock();
        map.retain(|_, (_, at)| at.elapsed() < POD_ROUTE_GRACE);
        map.iter()
            .map(|(dst, (dev, _))| (*dst, dev.clone()))
            .collect()
    }
}

/// Wires and unwires pods. Cheap to clone; clones share one netlink connection and can be used
/// from many tasks at once.
#[derive(Clone)]
pub struct PodWirer {
    kernel: NetlinkKernel,
    /// The namespace of `kernel`'s connection. `/proc/sys/net` shows the namespace of the thread
    /// that opens it, so host-side sysctls are written from a thread that entered this one: any
    /// task on any thread can wire pods.
    home: Arc<File>,
    recent: RecentPodRoutes,
    reaper: Reaper,
}

/// `ip` as the /32 (/128) host prefix.
fn host_prefix(ip: &IpNet) -> IpNet {
    IpNet::new(ip.addr(), ip.max_prefix_len()).unwrap_or(*ip)
}

fn invalid(spec: &PodSpec, reason: String) -> DataplaneError {
    DataplaneError::InvalidPodSpec {
        host_ifname: spec.host_ifname.clone(),
        reason,
    }
}

/// Checks what the veth pair needs: names and MTU.
fn validate_pair(spec: &PodSpec) -> Result<(), DataplaneError> {
    let invalid = |reason: String| invalid(spec, reason);
    if spec.host_ifname.is_empty() || spec.host_ifname.len() > 15 {
        return Err(invalid(format!(
            "host interface name {:?} must have 1 to 15 characters",
            spec.host_ifname
        )));
    }
    if spec.ifname.is_empty() || spec.ifname.len() > 15 {
        return Err(invalid(format!(
            "pod interface name {:?} must have 1 to 15 characters",
            spec.ifname
        )));
    }
    if spec.mtu < 68 {
        return Err(invalid(format!(
            "MTU {} below the IPv4 minimum 68",
            spec.mtu
        )));
    }
    if has_v6(spec) && spec.mtu < 1280 {
        return Err(invalid(format!(
            "MTU {} below the IPv6 minimum 1280 (RFC 8200 §5), and the pod has an IPv6 address",
            spec.mtu
        )));
    }
    Ok(())
}

/// Checks the whole spec.
fn validate(spec: &PodSpec) -> Result<(), DataplaneError> {
    validate_pair(spec)?;
    let invalid = |reason: String| invalid(spec, reason);
    if spec.ips.is_empty() {
        return Err(invalid("no addresses".into()));
    }
    if has_v6(spec) && spec.mtu < 1280 {
        return Err(invalid(format!(
            "MTU {} below the IPv6 minimum 1280 (RFC 8200 §5), and the pod has an IPv6 address",
            spec.mtu
        )));
    }
    Ok(())
}

fn has_v6(spec: &PodSpec) -> bool {
    spec.ips.iter().any(|ip| ip.addr().is_ipv6())
}

/// The host side's link-local address, the pods' IPv6 gateway.
fn gateway_v6_net() -> IpNet {
    IpNet::V6(Ipv6Net::new(POD_GATEWAY_V6, 64).unwrap_or_else(|_| Ipv6Net::from(POD_GATEWAY_V6)))
}

/// The routes inside the pod, per family present: the gateway's link route (IPv4 only; IPv6
/// reaches a link-local gateway through the interface) and the default route.
fn pod_routes(spec: &PodSpec) -> Vec<RouteSpec<'_>> {
    let dev = Some(spec.ifname.as_str());
    let mut routes = Vec::new();
    if spec.ips.iter().any(|ip| ip.addr().is_ipv4()) {
        let gateway = IpAddr::V4(POD_GATEWAY_V4);
        routes.push(RouteSpec {
            dst: IpNet::from(gateway),
            gateway: None,
            dev,
            kind: RouteKind::Unicast,
            scope_link: true,
            onlink: false,
            protocol: RTPROT_BOOT,
            multipath: &[],
        });
        routes.push(RouteSpec {
            dst: IpNet::V4(Ipv4Net::default()),
            gateway: Some(gateway),
            dev,
            kind: RouteKind::Unicast,
            scope_link: false,
            onlink: false,
            protocol: RTPROT_BOOT,
            multipath: &[],
        });
    }
    if has_v6(spec) {
        routes.push(RouteSpec {
            dst: IpNet::V6(Ipv6Net::default()),
            gateway: Some(IpAddr::V6(POD_GATEWAY_V6)),
            dev,
            kind: RouteKind::Unicast,
            scope_link: false,
            onlink: false,
            protocol: RTPROT_BOOT,
            multipath: &[],
        });
    }
    routes
}

impl PodWirer {
    pub(crate) fn new(
        kernel: NetlinkKernel,
        home: Arc<File>,
        recent: RecentPodRoutes,
        reaper: Reaper,
    ) -> Self {
        PodWirer {
            kernel,
            home,
            recent,
            reaper,
        }
    }

    /// Runs `f` (sysctl access, a few small `/proc/sys` writes) in the connection's namespace:
    /// right here when this thread is in it (the agent's own threads always are), else on a
    /// thread that enters it.
    async fn in_home<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DataplaneError> {
        if netns::is_current(&self.home) {
            return Ok(f());
        }
        let ns = self.home.try_clone().map_err(|e| DataplaneError::Netns {
            path: netns::CURRENT.into(),
            reason: e.to_string(),
        })?;
        netns::run_in("host namespace", ns, f).await
    }

    /// Wires the pod as the module doc shows and returns the pod-side MAC. An existing host
    /// interface of the same name is replaced (a repeated CNI ADD). On failure nothing is left
    /// behind: the veth pair is deleted.
    pub async fn setup(&self, spec: &PodSpec) -> Result<PodWiring, DataplaneError> {
        validate(spec)?;
        let wiring = self.create_pair(spec).await?;
        self.finish(spec, &wiring).await?;
        Ok(wiring)
    }

    /// The first half of [`Self::setup`]: the veth pair, its host side configured and up. It
    /// needs no address (`spec.ips` is not read), so it can run while IPAM allocates one.
    /// Returns what the pod's interface will be (its MAC is chosen here, see
    /// [`super::pod_mac`]). On failure the pair is deleted.
    pub async fn create_pair(&self, spec: &PodSpec) -> Result<PodWiring, DataplaneError> {
        let span = tracing::info_span!("pod", host_ifname = %spec.host_ifname, netns = %spec.netns);
        async {
            validate_pair(spec)?;
            let container_mac = super::pod_mac(&spec.host_ifname, &spec.ifname);
            let ns = netns::open(&spec.netns)?;
            // The same sandbox added again right after a DEL: its old veth may still be going.
            self.reaper.wait(&spec.host_ifname).await;
            if self.kernel.link(&spec.host_ifname).await?.is_some() {
                tracing::info!("host interface exists; recreating it");
                self.kernel.delete_link(&spec.host_ifname).await?;
                self.recent.forget_device(&spec.host_ifname);
            }
            self.kernel
                .create_veth(
                    &spec.host_ifname,
                    HOST_VETH_MAC,
                    &spec.ifname,
                    container_mac,
                    &ns,
                    spec.mtu,
                )
                .await?;
            drop(ns);
            let configured = self.configure_host_side(&spec.host_ifname).await;
            self.undo_on_error(&spec.host_ifname, configured).await?;
            Ok(PodWiring {
                container_mac: format_mac(&container_mac),
            })
        }
        .instrument(span)
        .await
    }

    /// The second half of [`Self::setup`], after [`Self::create_pair`] returned `pair`: the
    /// pod's addresses and routes, the host's routes to it. On failure the pair is deleted.
    pub async fn finish(&self, spec: &PodSpec, pair: &PodWiring) -> Result<(), DataplaneError> {
        let span = tracing::info_span!("pod", host_ifname = %spec.host_ifname, netns = %spec.netns);
        async {
            let wired = match validate(spec) {
                Ok(()) => self.wire(spec, pair).await,
                Err(e) => Err(e),
            };
            self.undo_on_error(&spec.host_ifname, wired).await?;
            tracing::info!(container_mac = %pair.container_mac, "pod wired");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Deletes the veth pair when `result` is an error.
    async fn undo_on_error<T>(
        &self,
        host_ifname: &str,
        result: Result<T, DataplaneError>,
    ) -> Result<T, DataplaneError> {
        if let Err(e) = &result {
            tracing::warn!(error = %e, "pod wiring failed; removing the veth pair");
            if let Err(cleanup) = self.kernel.delete_link(host_ifname).await {
                tracing::warn!(error = %cleanup, "could not remove the veth pair");
            }
            self.recent.forget_device(host_ifname);
        }
        result
    }

    /// The host side of a new pair: sysctls, MAC, up.
    async fn configure_host_side(&self, host: &str) -> Result<(), DataplaneError> {
        let ifname = host.to_string();
        self.in_home(move || sysctl::configure_host_veth(&ifname))
            .await??;
        // Calico found the kernel occasionally ignoring the MAC given at creation; read it back.
        let host_mac = self.kernel.link(host).await?.and_then(|l| l.mac);
        if host_mac != Some(HOST_VETH_MAC) {
            tracing::info!("host-side MAC not applied at creation; setting it again");
            self.kernel.set_link_mac(host, HOST_VETH_MAC).await?;
        }
        self.kernel.set_link_up(host).await
    }

    /// Everything after the host side is up.
    async fn wire(&self, spec: &PodSpec, pair: &PodWiring) -> Result<(), DataplaneError> {
        let host = spec.host_ifname.as_str();
        let v6 = has_v6(spec);
        if v6 {
            // IPv6 on the host side only when the pod has it: a host without IPv6 can still
            // run IPv4 pods.
            let ifname = host.to_string();
            self.in_home(move || sysctl::configure_host_veth_v6(&ifname))
                .await??;
            self.kernel.add_address(host, gateway_v6_net()).await?;
        }
        if v6 {
            let ns = netns::open(&spec.netns)?;
            let ifname = spec.ifname.clone();
            netns::run_in(&spec.netns, ns, move || sysctl::configure_pod_v6(&ifname)).await??;
        }
        let pod = NetlinkKernel::connect_in_netns(&spec.netns).await?;
        // The MAC was given at creation and may already be recorded; make sure it holds.
        let want_mac = super::parse_mac(&pair.container_mac);
        let mac = pod
            .link(&spec.ifname)
            .await?
            .ok_or_else(|| DataplaneError::NoSuchInterface(spec.ifname.clone()))?
            .mac;
        if let Some(want) = want_mac.filter(|want| mac != Some(*want)) {
            tracing::info!("pod-side MAC not applied at creation; setting it again");
            pod.set_link_mac(&spec.ifname, want).await?;
        }
        pod.set_link_up("lo").await?;
        pod.set_link_up(&spec.ifname).await?;
        for ip in &spec.ips {
            pod.add_address(&spec.ifname, host_prefix(ip)).await?;
        }
        for route in &pod_routes(spec) {
            pod.write_route(route, false).await?;
        }
        for ip in &spec.ips {
            let dst = host_prefix(ip);
            let target = RouteTarget::Device {
                dev: host.to_string(),
            };
            self.kernel.install_own_route(dst, &target).await?;
            self.recent.record(dst, host);
        }
        Ok(())
    }

    /// Removes the pod's host interface (its peer and the host routes go with it). A missing
    /// interface is success: teardown is repeated by CNI DEL.
    pub async fn teardown(&self, host_ifname: &str) -> Result<(), DataplaneError> {
        self.recent.forget_device(host_ifname);
        if self.kernel.link(host_ifname).await?.is_none() {
            return Ok(());
        }
        match self.kernel.delete_link(host_ifname).await {
            Ok(()) | Err(DataplaneError::NoSuchInterface(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Unwires a pod without waiting for its veth to go: the host routes to `ips` through
    /// `host_ifname` are removed now, so no traffic reaches the pod once this returns and its
    /// addresses can be given out again; the veth pair is deleted by the reaper thread (see
    /// `reaper.rs`). A missing interface is success, as for [`Self::teardown`].
    pub async fn release(&self, host_ifname: &str, ips: &[IpNet]) -> Result<(), DataplaneError> {
        self.recent.forget_device(host_ifname);
        let Some(index) = self.kernel.link(host_ifname).await?.map(|l| l.index) else {
            return Ok(());
        };
        for ip in ips {
            self.kernel
                .delete_own_route_on(host_prefix(ip), index)
                .await?;
        }
        self.reaper.queue(host_ifname)
    }

    /// Whether a host interface of this name exists (CNI GC reports what it removed).
    pub async fn host_link_exists(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        Ok(self.kernel.link(host_ifname).await?.is_some())
    }

    /// Checks that the pod is wired as `spec` says (CNI CHECK). The error lists every
    /// difference found.
    pub async fn check(&self, spec: &PodSpec) -> Result<(), DataplaneError> {
        let mut diffs = Vec::new();
        let host = spec.host_ifname.as_str();
        match self.kernel.link(host).await? {
            None => diffs.push(format!("host interface {host} missing")),
            Some(link) => {
                if link.mac != Some(HOST_VETH_MAC) {
                    diffs.push(format!(
                        "host interface MAC is {}, want {}",
                        link.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                        format_mac(&HOST_VETH_MAC)
                    ));
                }
                if link.mtu != spec.mtu {
                    diffs.push(format!(
                        "host interface MTU is {}, want {}",
                        link.mtu, spec.mtu
                    ));
                }
                if !link.up {
                    diffs.push("host interface is down".into());
                }
                let ifname = host.to_string();
                let v6 = has_v6(spec);
                let values = self
                    .in_home(move || {
                        let mut want = vec![
                            ("ipv4", "conf", "proxy_arp", "1"),
                            ("ipv4", "neigh", "proxy_delay", "0"),
                            ("ipv4", "conf", "forwarding", "1"),
                        ];
                        if v6 {
                            want.extend([
                                ("ipv6", "conf", "proxy_ndp", "1"),
                                ("ipv6", "conf", "forwarding", "1"),
                                ("ipv6", "conf", "accept_ra", "0"),
                                ("ipv6", "conf", "disable_ipv6", "0"),
                            ]);
                        }
                        want.into_iter()
                            .map(|(family, dir, key, value)| {
                                let got = sysctl::get(&["net", family, dir, &ifname, key]);
                                (format!("{family} {key}"), value, got)
                            })
                            .collect::<Vec<_>>()
                    })
                    .await?;
                for (key, want, got) in values {
                    match got {
                        Ok(v) if v == want => {}
                        Ok(v) => diffs.push(format!("{key} on {host} is {v}, want {want}")),
                        Err(e) => diffs.push(e.to_string()),
                    }
                }
                if v6 {
                    let gateway = gateway_v6_net();
                    if !self.kernel.addresses_on(host).await?.contains(&gateway) {
                        diffs.push(format!(
                            "address {gateway} (the pods' gateway) missing on {host}"
                        ));
                    }
                }
            }
        }
        let host_routes = self.kernel.routes().await?;
        for ip in &spec.ips {
            let dst = host_prefix(ip);
            let want = RouteTarget::Device {
                dev: host.to_string(),
            };
            let present = host_routes.iter().any(|r| {
                r.dst == dst && r.protocol == RTPROT_BRINDLE && r.target().as_ref() == Some(&want)
            });
            if !present {
                diffs.push(format!(
                    "host route {dst} dev {host} proto {RTPROT_BRINDLE} missing"
                ));
            }
        }

        match NetlinkKernel::connect_in_netns(&spec.netns).await {
            Err(e) => diffs.push(e.to_string()),
            Ok(pod) => diffs.extend(check_pod_side(&pod, spec).await?),
        }

        if diffs.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Mismatch {
                object: format!("pod on {host}"),
                differences: diffs.join("; "),
            })
        }
    }
}

/// Differences inside the pod's namespace.
async fn check_pod_side(
    pod: &NetlinkKernel,
    spec: &PodSpec,
) -> Result<Vec<String>, DataplaneError> {
    let mut diffs = Vec::new();
    let ifname = spec.ifname.as_str();
    let Some(link) = pod.link(ifname).await? else {
        diffs.push(format!("{ifname} missing in the pod"));
        return Ok(diffs);
    };
    if link.mtu != spec.mtu {
        diffs.push(format!("{ifname} MTU is {}, want {}", link.mtu, spec.mtu));
    }
    if !link.up {
        diffs.push(format!("{ifname} is down"));
    }
    let addrs = pod.addresses_on(ifname).await?;
    for ip in &spec.ips {
        let want = host_prefix(ip);
        if !addrs.contains(&want) {
            diffs.push(format!("address {want} missing on {ifname}"));
        }
    }
    let routes = pod.routes().await?;
    for want in pod_routes(spec) {
        let present = routes.iter().any(|r| {
            r.dst == want.dst
                && r.gateway == want.gateway
                && r.dev.as_deref() == want.dev
                // IPv6 routes have no scope.
                && (r.scope_link == want.scope_link || r.dst.addr().is_ipv6())
        });
        if !present {
            let dst = if want.dst.prefix_len() == 0 {
                "default".to_string()
            } else {
                want.dst.addr().to_string()
            };
            let via = want
                .gateway
                .map(|gw| format!(" via {gw}"))
                .unwrap_or_default();
            let scope = if want.scope_link { " scope link" } else { "" };
            diffs.push(format!("route {dst}{via} dev {ifname}{scope} missing"));
        }
    }
    Ok(diffs)
}
