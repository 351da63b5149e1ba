//! The dataplane: the only module that imports rtnetlink.
//!
//! Callers describe what the kernel should hold ([`DesiredState`]) and [`Dataplane::apply`]
//! reconciles the kernel to it. Pods are wired and unwired through [`PodWirer`].
//!
//! INTERFACE CONTRACT (filled in by the dataplane work; the controller and the API server are
//! written against exactly these names).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// The `rtproto` value on every route Brindle installs. Only routes with it are ever deleted.
pub const RTPROT_BRINDLE: u8 = 98;
/// Name of the VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.brindle";
/// VXLAN network identifier (Calico's).
pub const VXLAN_VNI: u32 = 4096;
/// VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// MAC of every host-side pod veth.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];
/// The pods' IPv4 gateway, answered by proxy ARP on the host side.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

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
    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error("interface {0} not found")]
    NoSuchInterface(String),
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
    /// This node's tunnel address, set on the device as a /32.
    pub tunnel_addr: Ipv4Addr,
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
    pub routes: BTreeMap<IpNet, RouteTarget>,
    pub neighbors: BTreeSet<Neighbor>,
    pub fdb: BTreeSet<FdbEntry>,
}

// ---- TEMPORARY STUBS (replaced when the dataplane branch is merged) ----
pub fn vtep_mac(_node_name: &str) -> Mac {
    [0x66, 0, 0, 0, 0, 0]
}
pub fn host_veth_name(_namespace: &str, _pod: &str) -> String {
    String::new()
}
pub fn host_veth_name_for_container(_container_id: &str) -> String {
    String::new()
}
pub fn format_mac(_mac: &Mac) -> String {
    String::new()
}
pub fn parse_mac(_s: &str) -> Option<Mac> {
    None
}
pub fn enable_ip_forwarding() -> Result<(), DataplaneError> {
    Ok(())
}
pub struct Dataplane;
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub routes_added: usize,
    pub routes_removed: usize,
    pub neighbors_changed: usize,
    pub fdb_changed: usize,
    pub errors: Vec<String>,
}
impl Dataplane {
    pub async fn connect() -> Result<Self, DataplaneError> {
        Ok(Dataplane)
    }
    pub async fn apply(&mut self, _desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        Ok(ApplyReport::default())
    }
    pub fn pod_wirer(&self) -> PodWirer {
        PodWirer
    }
    pub async fn addresses(&self) -> Result<Vec<(String, IpNet)>, DataplaneError> {
        Ok(vec![])
    }
    pub async fn link_mtu(&self, _ifname: &str) -> Result<u32, DataplaneError> {
        Ok(1500)
    }
}
#[derive(Clone)]
pub struct PodWirer;
pub struct PodSpec {
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    pub ips: Vec<IpNet>,
    pub mtu: u32,
}
pub struct PodWiring {
    pub container_mac: String,
}
impl PodWirer {
    pub async fn setup(&self, _spec: &PodSpec) -> Result<PodWiring, DataplaneError> {
        Ok(PodWiring {
            container_mac: String::new(),
        })
    }
    pub async fn teardown(&self, _host_ifname: &str) -> Result<(), DataplaneError> {
        Ok(())
    }
    pub async fn check(&self, _spec: &PodSpec) -> Result<(), DataplaneError> {
        Ok(())
    }
}
