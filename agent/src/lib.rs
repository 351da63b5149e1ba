//! The Brindle node agent (`brindle-node`), its CLI (`brindlectl`), the datastore backends, the
//! dataplane and the local API.
//!
//! With default features off only [`api`] is built: the serde types the CNI plugin shares with
//! the agent.
//!
//! ```text
//!  brindle (CNI) ──HTTP/unix──▶ server ──▶ pods ──▶ ipam (brindle-ipam) ──▶ datastore
//!                                           └────▶ dataplane (veth, routes)
//!  datastore ──watch──▶ controller ──routes::desired_state──▶ dataplane.apply ──▶ kernel
//!
//!  brindle-bgpd: bgpd ──▶ brindle_bgp::speaker ──RouteChange──▶ bgpd_install ──▶ dataplane
//!                 ├──▶ bgp_status (GET /bgp/peers, /bgp/routes on a Unix socket)
//!                 └──▶ bgp_metrics (brindle_bgp_* on GET /metrics, `metrics_listen`)
//! ```

pub mod api;

#[cfg(feature = "daemon")]
pub mod bgp_metrics;
/// Which BGP sessions a node should have, from the datastore.
#[cfg(feature = "daemon")]
pub mod bgp_peers;
/// brindle-node's BGP routing mode: the speaker configured from the datastore.
#[cfg(feature = "daemon")]
pub mod bgp_routing;
#[cfg(feature = "daemon")]
pub mod bgp_status;
#[cfg(feature = "daemon")]
pub mod bgpd;
#[cfg(feature = "daemon")]
pub mod bgpd_config;
#[cfg(feature = "daemon")]
pub mod bgpd_install;
#[cfg(feature = "daemon")]
pub mod cni_admin;
#[cfg(feature = "daemon")]
pub mod cni_install;
#[cfg(feature = "daemon")]
pub mod controller;
#[cfg(feature = "daemon")]
pub mod ctl;
#[cfg(feature = "daemon")]
pub mod dataplane;
#[cfg(feature = "daemon")]
pub mod datastore;
#[cfg(feature = "daemon")]
pub mod datastore_health;
#[cfg(feature = "daemon")]
pub mod default_pools;
#[cfg(feature = "daemon")]
pub mod ipam_gc;
#[cfg(feature = "daemon")]
pub mod ipam_tools;
#[cfg(feature = "daemon")]
pub mod kube_node;
#[cfg(feature = "daemon")]
pub mod kube_pod;
#[cfg(feature = "daemon")]
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod model;
#[cfg(feature = "daemon")]
pub mod node;
#[cfg(feature = "daemon")]
pub mod node_status;
#[cfg(feature = "daemon")]
pub mod pod_defaults;
#[cfg(feature = "daemon")]
pub mod pods;
#[cfg(feature = "daemon")]
pub mod routes;
#[cfg(feature = "daemon")]
pub mod server;
#[cfg(feature = "daemon")]
pub mod telemetry;
