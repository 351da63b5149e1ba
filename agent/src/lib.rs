//! The Brindle node agent (`brindle-node`), its CLI (`brindlectl`), the datastore backends, the
//! dataplane and the local API.
//!
//! With default features off only [`api`] is built: the serde types the CNI plugin shares with
//! the agent.

pub mod api;

#[cfg(feature = "daemon")]
pub mod dataplane;
#[cfg(feature = "daemon")]
pub mod datastore;
#[cfg(feature = "daemon")]
pub mod model;
