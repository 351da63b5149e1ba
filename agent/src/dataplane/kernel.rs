//! The narrow interface between reconciliation and the kernel.
//!
//! [`Kernel`] speaks in Brindle's own types (names, prefixes, [`RouteTarget`]), so reconciliation
//! never sees a netlink message. It is implemented by the rtnetlink client
//! ([`super::netlink::NetlinkKernel`]) and, in unit tests, by an in-memory fake.

use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use ipnet::IpNet;

use super::{DataplaneError, FdbEntry, Mac, Neighbor, RouteTarget, VxlanDevice};

/// The kind of a kernel route (`rtm_type`), reduced to what Brindle installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Unicast,
    Blackhole,
    Other(u8),
}

/// A route of the main table as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KernelRoute {
    pub dst: IpNet,
    /// `rtm_protocol`: [`super::RTPROT_BRINDLE`] marks ours.
    pub protocol: u8,
    pub tos: u8,
    /// `RTA_PRIORITY`, if the kernel reported one.
    pub metric: Option<u32>,
    pub kind: RouteKind,
    pub scope_link: bool,
    pub onlink: bool,
    pub gateway: Option<IpAddr>,
    /// Output device name (resolved from the ifindex).
    pub dev: Option<String>,
    /// A multipath route (RTA_MULTIPATH).
    pub multipath: bool,
    /// The gateways of a multipath route's next hops, when every one is a plain gateway (not
    /// onlink); empty otherwise.
    pub nexthops: Vec<IpAddr>,
}

impl KernelRoute {
    /// The [`RouteTarget`] this route implements, or `None` for a shape Brindle never installs.
    pub fn target(&self) -> Option<RouteTarget> {
        if self.multipath {
            return match self.kind {
                RouteKind::Unicast => RouteTarget::via(self.nexthops.iter().copied()),
                _ => None,
            };
        }
        match (self.kind, &self.gateway, &self.dev) {
            (RouteKind::Blackhole, None, _) => Some(RouteTarget::Blackhole),
            (RouteKind::Unicast, Some(gw), Some(dev)) if self.onlink => {
                Some(RouteTarget::ViaOnlink {
                    gw: *gw,
                    dev: dev.clone(),
                })
            }
            // The kernel reports the device it resolved the gateway to; it is not ours to set.
            (RouteKind::Unicast, Some(gw), _) if !self.onlink => {
                Some(RouteTarget::Via { gws: vec![*gw] })
            }
            // IPv6 has no route scopes (the kernel reports universe), so only IPv4 checks it.
            (RouteKind::Unicast, None, Some(dev))
                if self.scope_link || self.dst.addr().is_ipv6() =>
            {
                Some(RouteTarget::Device { dev: dev.clone() })
            }
            _ => None,
        }
    }

    /// The route the kernel would hold after Brindle installs `target` for `dst`.
    #[cfg(test)]
    pub fn from_target(dst: IpNet, protocol: u8, target: &RouteTarget) -> Self {
        let mut route = KernelRoute {
            dst,
            protocol,
            tos: 0,
            metric: None,
            kind: RouteKind::Unicast,
            scope_link: false,
            onlink: false,
            gateway: None,
            dev: None,
            multipath: false,
            nexthops: Vec::new(),
        };
        match target {
            RouteTarget::Blackhole => route.kind = RouteKind::Blackhole,
            RouteTarget::Device { dev } => {
                route.scope_link = true;
                route.dev = Some(dev.clone());
            }
            RouteTarget::ViaOnlink { gw, dev } => {
                route.onlink = true;
                route.gateway = Some(*gw);
                route.dev = Some(dev.clone());
            }
            RouteTarget::Via { gws } => match gws.as_slice() {
                [gw] => route.gateway = Some(*gw),
                _ => {
                    route.multipath = true;
                    route.nexthops = gws.clone();
                }
            },
        }
        route
    }
}

/// The VXLAN parameters of a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VxlanParams {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    /// Name of the parent (`dev`) link.
    pub parent: Option<String>,
    pub learning: Option<bool>,
}

/// What reconciliation needs to know about a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub index: u32,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    /// `Some` when the link is a VXLAN device.
    pub vxlan: Option<VxlanParams>,
}

impl LinkState {
    /// Whether this link is the VXLAN device `want` describes, in every attribute that can only
    /// be set at creation (MTU and state can be changed in place).
    pub fn is_vxlan_device(&self, want: &VxlanDevice) -> bool {
        let Some(vx) = &self.vxlan else {
            return false;
        };
        vx.vni == Some(super::VXLAN_VNI)
            && vx.port == Some(super::VXLAN_PORT)
            && vx.local == Some(want.local_ip)
            && vx.parent.as_deref() == Some(want.parent.as_str())
            && vx.learning != Some(true)
            && self.mac == Some(want.mac)
    }
}

/// One route write of a batch ([`Kernel::write_routes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RouteWrite {
    /// [`Kernel::add_route`].
    Add {
        dst: IpNet,
        target: RouteTarget,
        replace: bool,
    },
    /// [`Kernel::del_route`].
    Delete(KernelRoute),
}

/// Route writes in flight at once in the default [`Kernel::write_routes`].
pub(crate) const WRITES_IN_FLIGHT: usize = 256;

/// The kernel operations reconciliation performs. Writes are idempotent where the kernel
/// allows it; every error names the object it concerns.
#[async_trait]
pub(crate) trait Kernel: Send + Sync {
    /// The link named `name`, or `None` if there is none.
    async fn link(&self, name: &str) -> Result<Option<LinkState>, DataplaneError>;
    /// Creates the VXLAN device `name` as `dev` describes it, up.
    async fn create_vxlan(&self, name: &str, dev: &VxlanDevice) -> Result<(), DataplaneError>;
    async fn delete_link(&self, name: &str) -> Result<(), DataplaneError>;
    /// Sets the MTU and brings the link up.
    async fn set_link_mtu_up(&self, name: &str, mtu: u32) -> Result<(), DataplaneError>;

    /// IPv4 addresses on `dev`.
    async fn addresses_v4(&self, dev: &str) -> Result<Vec<ipnet::Ipv4Net>, DataplaneError>;
    async fn add_address(&self, dev: &str, addr: IpNet) -> Result<(), DataplaneError>;
    async fn del_address(&self, dev: &str, addr: IpNet) -> Result<(), DataplaneError>;

    /// Every route of the main table (IPv4 and IPv6), whoever owns it.
    async fn routes(&self) -> Result<Vec<KernelRoute>, DataplaneError>;
    /// Installs `dst -> target` with protocol [`super::RTPROT_BRINDLE`]. With `replace` an
    /// existing route with the same key is overwritten, otherwise one is an error (EEXIST).
    async fn add_route(
        &self,
        dst: IpNet,
        target: &RouteTarget,
        replace: bool,
    ) -> Result<(), DataplaneError>;
    /// Deletes exactly this route (matched by destination, protocol, TOS and metric).
    async fn del_route(&self, route: &KernelRoute) -> Result<(), DataplaneError>;
    /// Many route writes at once; the result of each, in the order given. Each write is
    /// independent: one failing does not stop the others. By default, [`WRITES_IN_FLIGHT`]
    /// single writes in flight.
    async fn write_routes(&self, writes: Vec<RouteWrite>) -> Vec<Result<(), DataplaneError>> {
        use futures::StreamExt;
        futures::stream::iter(writes)
            .map(|write| async move {
                match write {
                    RouteWrite::Add {
                        dst,
                        target,
                        replace,
                    } => self.add_route(dst, &target, replace).await,
                    RouteWrite::Delete(route) => self.del_route(&route).await,
                }
            })
            .buffered(WRITES_IN_FLIGHT)
            .collect()
            .await
    }

    /// The PERMANENT neighbour entries (with a link-layer address) on `dev`.
    async fn neighbors(&self, dev: &str) -> Result<Vec<Neighbor>, DataplaneError>;
    /// Adds or replaces `ip lladdr mac PERMANENT` on `n.dev`.
    async fn set_neighbor(&self, n: &Neighbor) -> Result<(), DataplaneError>;
    async fn del_neighbor(&self, n: &Neighbor) -> Result<(), DataplaneError>;

    /// The PERMANENT FDB entries with a remote destination on the VXLAN device `dev`.
    async fn fdb(&self, dev: &str) -> Result<Vec<FdbEntry>, DataplaneError>;
    /// `bridge fdb append <mac> dev <dev> dst <dst> self permanent`.
    async fn add_fdb(&self, e: &FdbEntry) -> Result<(), DataplaneError>;
    async fn del_fdb(&self, e: &FdbEntry) -> Result<(), DataplaneError>;
}
