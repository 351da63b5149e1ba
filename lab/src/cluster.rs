//! The methods of [`Cluster`](crate::Cluster), by layer.

pub(crate) mod agents;
pub(crate) mod fabric;
pub(crate) mod pods;
pub(crate) mod traffic;
