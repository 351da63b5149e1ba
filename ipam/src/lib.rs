//! Brindle's block IPAM (Calico's model): pools are cut into per-node blocks; a node claims a
//! block (affinity pending, block created, affinity confirmed), allocates addresses from its own
//! blocks, and releases them by handle. Every write is a compare-and-swap on the store revision.
//!
//! The crate also owns the resource envelope, the IPAM kinds and the [`store::Store`] trait the
//! allocation logic runs over, since it is the lowest crate that needs them; the agent implements
//! the backends.

pub mod model;
pub mod store;

// ---- TEMPORARY STUBS (replaced when the ipam branch is merged) ----
pub use stub::*;
mod stub {
    use crate::model::AllowedUse;
    use crate::store::{Store, StoreError};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    pub struct Ipam(#[allow(dead_code)] Arc<dyn Store>);
    pub struct AssignRequest {
        pub handle_id: String,
        pub node: String,
        pub num: usize,
        pub attrs: BTreeMap<String, String>,
        pub use_: AllowedUse,
        pub pools: Option<Vec<String>>,
    }
    #[derive(Debug, thiserror::Error)]
    pub enum IpamError {
        #[error("no pool")]
        NoPool,
        #[error(transparent)]
        Store(#[from] StoreError),
    }
    impl IpamError {
        pub fn is_capacity(&self) -> bool {
            false
        }
    }
    impl Ipam {
        pub fn new(store: Arc<dyn Store>) -> Self {
            Ipam(store)
        }
        pub async fn auto_assign(
            &self,
            _req: &AssignRequest,
        ) -> Result<Vec<ipnet::IpNet>, IpamError> {
            Err(IpamError::NoPool)
        }
        pub async fn release_by_handle(
            &self,
            _h: &str,
        ) -> Result<Vec<std::net::IpAddr>, IpamError> {
            Ok(vec![])
        }
        pub async fn ips_by_handle(&self, _h: &str) -> Result<Vec<std::net::IpAddr>, IpamError> {
            Ok(vec![])
        }
        pub async fn node_blocks(&self, _n: &str) -> Result<Vec<ipnet::IpNet>, IpamError> {
            Ok(vec![])
        }
    }
}
