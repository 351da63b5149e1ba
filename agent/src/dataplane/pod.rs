//! Wiring a pod: the veth pair, the pod's addresses and routes, the host's route to it
//! (Calico's `DoNetworking`, BRIEF §4).
//!
//! ```text
//!   pod netns                          node netns
//!   eth0  10.244.0.5/32   <-- veth -->  brdXXXXXXXXXXX  ee:ee:ee:ee:ee:ee, proxy_arp=1
//!   169.254.1.1 dev eth0 scope link     10.244.0.5 dev brdXXXXXXXXXXX scope link proto 98
//!   default via 169.254.1.1 dev eth0
//! ```
//!
//! The pod ARPs for 169.254.1.1 and the host answers with its own MAC through proxy ARP, so the
//! host side needs no address.

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use tracing::Instrument;

use super::kernel::{Kernel, RouteKind};
use super::netlink::{NetlinkKernel, RouteSpec, RTPROT_BOOT};
use super::reconcile::ProtectedRoutes;
use super::{
    format_mac, netns, sysctl, DataplaneError, RouteTarget, HOST_VETH_MAC, POD_GATEWAY_V4,
    RTPROT_BRINDLE,
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
    /// The pod's addresses; each is installed as a /32 whatever prefix it carries.
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
}

/// `ip` as the /32 (/128) host prefix.
fn host_prefix(ip: &IpNet) -> IpNet {
    IpNet::new(ip.addr(), ip.max_prefix_len()).unwrap_or(*ip)
}

fn validate(spec: &PodSpec) -> Result<(), DataplaneError> {
    let invalid = |reason: String| DataplaneError::InvalidPodSpec {
        host_ifname: spec.host_ifname.clone(),
        reason,
    };
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
    if spec.ips.is_empty() {
        return Err(invalid("no addresses".into()));
    }
    if let Some(v6) = spec.ips.iter().find(|ip| ip.addr().is_ipv6()) {
        return Err(invalid(format!("IPv6 address {v6}: not supported yet")));
    }
    if spec.mtu < 68 {
        return Err(invalid(format!(
            "MTU {} below the IPv4 minimum 68",
            spec.mtu
        )));
    }
    Ok(())
}

impl PodWirer {
    pub(crate) fn new(kernel: NetlinkKernel, home: Arc<File>, recent: RecentPodRoutes) -> Self {
        PodWirer {
            kernel,
            home,
            recent,
        }
    }

    /// Runs `f` (sysctl access) in the connection's namespace.
    async fn in_home<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DataplaneError> {
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
        let span = tracing::info_span!("pod", host_ifname = %spec.host_ifname, netns = %spec.netns);
        async {
            validate(spec)?;
            let ns = netns::open(&spec.netns)?;
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
                    &ns,
                    spec.mtu,
                )
                .await?;
            drop(ns);
            match self.wire(spec).await {
                Ok(wiring) => {
                    tracing::info!(container_mac = %wiring.container_mac, "pod wired");
                    Ok(wiring)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pod wiring failed; removing the veth pair");
                    if let Err(cleanup) = self.kernel.delete_link(&spec.host_ifname).await {
                        tracing::warn!(error = %cleanup, "could not remove the veth pair");
                    }
                    self.recent.forget_device(&spec.host_ifname);
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Everything after the veth pair exists.
    async fn wire(&self, spec: &PodSpec) -> Result<PodWiring, DataplaneError> {
        let host = spec.host_ifname.as_str();
        let ifname = host.to_string();
        self.in_home(move || sysctl::configure_host_veth(&ifname))
            .await??;
        // Calico found the kernel occasionally ignoring the MAC given at creation; read it back.
        let host_mac = self.kernel.link(host).await?.and_then(|l| l.mac);
        if host_mac != Some(HOST_VETH_MAC) {
            tracing::info!("host-side MAC not applied at creation; setting it again");
            self.kernel.set_link_mac(host, HOST_VETH_MAC).await?;
        }
        self.kernel.set_link_up(host).await?;

        let pod = NetlinkKernel::connect_in_netns(&spec.netns).await?;
        pod.set_link_up("lo").await?;
        pod.set_link_up(&spec.ifname).await?;
        for ip in &spec.ips {
            pod.add_address(&spec.ifname, host_prefix(ip)).await?;
        }
        let gateway = IpAddr::V4(POD_GATEWAY_V4);
        let pod_routes = [
            RouteSpec {
                dst: IpNet::from(gateway),
                gateway: None,
                dev: Some(&spec.ifname),
                kind: RouteKind::Unicast,
                scope_link: true,
                onlink: false,
                protocol: RTPROT_BOOT,
                multipath: &[],
            },
            RouteSpec {
                dst: IpNet::V4(Ipv4Net::default()),
                gateway: Some(gateway),
                dev: Some(&spec.ifname),
                kind: RouteKind::Unicast,
                scope_link: false,
                onlink: false,
                protocol: RTPROT_BOOT,
                multipath: &[],
            },
        ];
        for route in &pod_routes {
            pod.write_route(route, false).await?;
        }
        let container_mac = pod
            .link(&spec.ifname)
            .await?
            .and_then(|l| l.mac)
            .map(|m| format_mac(&m))
            .ok_or_else(|| DataplaneError::NoSuchInterface(spec.ifname.clone()))?;

        for ip in &spec.ips {
            let dst = host_prefix(ip);
            let target = RouteTarget::Device {
                dev: host.to_string(),
            };
            self.kernel.install_own_route(dst, &target).await?;
            self.recent.record(dst, host);
        }
        Ok(PodWiring { container_mac })
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
                let values = self
                    .in_home(move || {
                        ["proxy_arp", "forwarding"]
                            .map(|key| (key, sysctl::get(&["net", "ipv4", "conf", &ifname, key])))
                    })
                    .await?;
                for (key, value) in values {
                    match value {
                        Ok(v) if v == "1" => {}
                        Ok(v) => diffs.push(format!("{key} on {host} is {v}, want 1")),
                        Err(e) => diffs.push(e.to_string()),
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
    let addrs = pod.addresses_v4(ifname).await?;
    for ip in &spec.ips {
        let want = host_prefix(ip);
        if !addrs.iter().any(|a| IpNet::V4(*a) == want) {
            diffs.push(format!("address {want} missing on {ifname}"));
        }
    }
    let routes = pod.routes().await?;
    let gateway = IpAddr::V4(POD_GATEWAY_V4);
    let has_gateway_route = routes.iter().any(|r| {
        r.dst == IpNet::from(gateway)
            && r.gateway.is_none()
            && r.scope_link
            && r.dev.as_deref() == Some(ifname)
    });
    if !has_gateway_route {
        diffs.push(format!(
            "route {POD_GATEWAY_V4} dev {ifname} scope link missing"
        ));
    }
    let has_default = routes.iter().any(|r| {
        r.dst.prefix_len() == 0
            && r.dst.addr().is_ipv4()
            && r.gateway == Some(gateway)
            && r.dev.as_deref() == Some(ifname)
    });
    if !has_default {
        diffs.push(format!(
            "route default via {POD_GATEWAY_V4} dev {ifname} missing"
        ));
    }
    Ok(diffs)
}
