//! Datastore backends.

// ---- TEMPORARY STUBS (replaced when the datastore branch is merged) ----
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DatastoreError(String);
pub async fn open(
    spec: &str,
) -> Result<std::sync::Arc<dyn brindle_ipam::store::Store>, DatastoreError> {
    Err(DatastoreError(format!("stub {spec}")))
}
