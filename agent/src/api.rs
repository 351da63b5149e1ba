//! The agent's local API: HTTP+JSON over the Unix socket `/var/run/brindle/agent.sock`.
//!
//! This module is serde types only, so the CNI plugin can depend on it without the daemon
//! (`brindle-agent` with `default-features = false`).
//!
//! | method and path       | body              | answer                         |
//! |-----------------------|-------------------|--------------------------------|
//! | `POST /v1/cni/add`    | [`CniAddRequest`] | 200 [`CniAddResponse`]         |
//! | `POST /v1/cni/del`    | [`CniDelRequest`] | 200 `{}`                       |
//! | `POST /v1/cni/check`  | [`CniAddRequest`] | 200 [`CniAddResponse`] (as recorded) |
//! | `POST /v1/cni/status` | [`CniStatusRequest`] | 200 `{}`; 50 or 51 when pods cannot be added |
//! | `POST /v1/cni/gc`     | [`CniGcRequest`]  | 200 [`CniGcResponse`]          |
//! | `GET /v1/status`      |                   | 200 [`AgentStatus`]            |
//!
//! The plugin sends its deadline in [`DEADLINE_HEADER`]: a request read after it is refused
//! (code 11) without doing anything, and an ADD that finishes after it is undone.
//!
//! `brindle-bgpd` serves the BGP status on its own socket ([`DEFAULT_BGPD_SOCKET`]); brindle-node
//! will serve the same paths:
//!
//! | method and path       | answer                                   |
//! |-----------------------|------------------------------------------|
//! | `GET /bgp/peers`      | 200 array of [`BgpPeer`]                 |
//! | `GET /bgp/routes`     | 200 array of [`BgpRoute`]                |
//!
//! Every failure is a non-2xx status with an [`ApiError`] body whose `code` is a CNI error code,
//! so the plugin can pass it on unchanged.

use serde::{Deserialize, Serialize};

/// Default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/var/run/brindle/agent.sock";

/// Path of the ADD endpoint.
pub const PATH_CNI_ADD: &str = "/v1/cni/add";
/// Path of the DEL endpoint.
pub const PATH_CNI_DEL: &str = "/v1/cni/del";
/// Path of the CHECK endpoint.
pub const PATH_CNI_CHECK: &str = "/v1/cni/check";
/// Path of the CNI STATUS endpoint (spec 1.1).
pub const PATH_CNI_STATUS: &str = "/v1/cni/status";
/// Path of the CNI GC endpoint (spec 1.1).
pub const PATH_CNI_GC: &str = "/v1/cni/gc";
/// Request header carrying the plugin's deadline, in milliseconds since the Unix epoch: after it
/// the plugin has given up and reported failure, so the agent must not leave anything behind.
pub const DEADLINE_HEADER: &str = "brindle-deadline-ms";
/// Path of the status endpoint.
pub const PATH_STATUS: &str = "/v1/status";

/// Default path of `brindle-bgpd`'s status socket.
pub const DEFAULT_BGPD_SOCKET: &str = "/run/brindle/bgpd.sock";
/// BGP neighbours and their sessions.
pub const PATH_BGP_PEERS: &str = "/bgp/peers";
/// Every candidate route of the BGP RIB.
pub const PATH_BGP_ROUTES: &str = "/bgp/routes";

/// What the plugin knows of a pod at ADD (and CHECK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniAddRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: a path the agent opens to enter the pod's network namespace.
    pub netns: String,
    /// `CNI_IFNAME`, normally `eth0`.
    pub ifname: String,
    /// The network name from the conflist; with the container ID it forms the IPAM handle.
    pub network: String,
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`, when run by a Kubernetes runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME` from `CNI_ARGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// MTU from the conflist; the agent's detected MTU when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `ipam.assign_ipv4` from the conflist (Calico's key): `false` asks for no IPv4 address,
    /// `true` for one even if that fails the ADD; absent: one when an IPv4 pool can give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_ipv4: Option<bool>,
    /// `ipam.assign_ipv6`, likewise for IPv6 (dual stack when both pools exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_ipv6: Option<bool>,
}

/// What the agent did at ADD; the plugin turns it into the CNI result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniAddResponse {
    /// Host side of the veth pair (`brd` + 11 hex characters).
    pub host_interface: String,
    /// Pod side interface name (the request's `ifname`).
    pub container_interface: String,
    /// MAC of the pod side interface.
    pub container_mac: String,
    /// MTU set on the pod side interface.
    pub mtu: u32,
    /// Pod addresses with their prefix length (`10.244.1.5/32`, `fd00:10:244::5/128`).
    pub ips: Vec<String>,
    /// Routes installed in the pod: destination and gateway, one default route per family.
    pub routes: Vec<PodRoute>,
}

/// A route inside the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRoute {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// What the plugin knows of a pod at DEL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniDelRequest {
    pub container_id: String,
    /// `CNI_NETNS`; may be empty at DEL when the runtime already removed the namespace.
    #[serde(default)]
    pub netns: String,
    pub ifname: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

/// What the plugin asks at STATUS: can this node add pods to `network` now?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniStatusRequest {
    pub network: String,
}

/// One attachment the runtime still uses (`cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CniAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// What the plugin sends at GC: every attachment of `network` not listed is stale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniGcRequest {
    pub network: String,
    pub valid_attachments: Vec<CniAttachment>,
}

/// What GC removed on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniGcResponse {
    /// IPAM handles released, with their addresses.
    pub released_handles: Vec<String>,
    /// Host-side interfaces deleted.
    pub removed_interfaces: Vec<String>,
    /// WorkloadEndpoints deleted.
    pub removed_endpoints: Vec<String>,
}

/// An error as the CNI spec shapes it; `code` is a CNI error code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// CNI error codes (CNI spec, "Error" section) used by Brindle.
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available (the agent or its datastore cannot be reached).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin is not available and ADD would fail: no pool has room.
    pub const NO_CAPACITY: u32 = 51;
    /// Brindle's own: the agent failed while wiring the pod.
    pub const INTERNAL: u32 = 100;
    /// Brindle's own: no pool had an address for the pod.
    pub const NO_ADDRESS: u32 = 101;
}

/// The agent's view of itself, for `brindlectl` and scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub node_name: String,
    pub node_ip: String,
    pub version: String,
    /// Whether the dataplane has been programmed since the last datastore change.
    pub ready: bool,
    pub local_pods: usize,
    pub remote_nodes: usize,
}

/// One BGP neighbour, as `GET /bgp/peers` lists it (`brindlectl bgp peers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeer {
    pub address: String,
    pub asn: u32,
    /// RFC 4271 §8 state: Idle, Connect, Active, OpenSent, OpenConfirm or Established.
    pub state: String,
    /// When the session entered `state`, RFC 3339 in UTC.
    pub since: String,
    /// Why the session is not Established (empty when it is).
    pub info: String,
    /// Prefixes received from the peer (its Adj-RIB-In).
    pub received: usize,
    /// Of those, the ones usable (no AS loop, usable next hop).
    pub accepted: usize,
    /// Prefixes sent to the peer (its Adj-RIB-Out).
    pub advertised: usize,
    /// Why the peer is configured: `node-to-node mesh`, `global`, `node specific` or `dynamic`
    /// (calicoctl's PEER TYPE). Absent from older speakers: `global`.
    #[serde(default = "default_peer_type")]
    pub peer_type: String,
    /// `received`, `accepted` and `advertised` per address family of the session.
    #[serde(default)]
    pub families: Vec<BgpFamilyCounts>,
    /// State changes of the session since the peer was configured.
    #[serde(default)]
    pub transitions: u64,
    /// How many times the session reached Established since the peer was configured.
    #[serde(default)]
    pub established_transitions: u64,
}

fn default_peer_type() -> String {
    "global".to_string()
}

/// A peer's route counts in one address family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpFamilyCounts {
    /// `ipv4-unicast` or `ipv6-unicast`.
    pub family: String,
    pub received: usize,
    pub accepted: usize,
    pub advertised: usize,
}

/// One candidate route of the BGP RIB, as `GET /bgp/routes` lists it (`brindlectl bgp routes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoute {
    pub prefix: String,
    /// For the best route, every next hop of its equal-cost group; empty for a local route.
    pub next_hops: Vec<String>,
    /// `local`, or the address of the peer it was learned from.
    pub source: String,
    pub as_path: Vec<u32>,
    pub best: bool,
    /// The outcome of the decision process: `best`, `multipath (...)` or `lost: <reason>`.
    #[serde(default)]
    pub reason: String,
}
