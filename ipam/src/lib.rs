//! Brindle's block IPAM (Calico's model): pools are cut into per-node blocks; a node claims a
//! block (affinity pending, block created, affinity confirmed), allocates addresses from its own
//! blocks (borrowing from others' when it may not claim more), and releases them by handle or by
//! address. Every write is a compare-and-swap on the store revision.
//!
//! The crate also owns the resource envelope, the IPAM kinds and the [`store::Store`] trait the
//! allocation logic runs over, since it is the lowest crate that needs them; the agent implements
//! the backends.

mod affinity;
pub mod allocator;
pub mod block;
pub mod check;
pub mod clock;
pub mod model;
mod release;
pub mod selector;
pub mod store;

pub use allocator::{
    Allocation, AssignRequest, Ipam, IpamError, NodeRelease, Refusal, ReleaseOptions, ReleaseReport,
};

#[cfg(test)]
mod assign_tests;
#[cfg(test)]
mod concurrency_tests;
#[cfg(test)]
mod lifecycle_tests;
