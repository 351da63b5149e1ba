//! Whether the datastore answers, for readiness: a cheap read (the IP pools) every
//! [`PROBE_INTERVAL`], with a deadline. An unreachable datastore makes the node not ready (new
//! pods are better scheduled elsewhere) but never touches the dataplane: routes programmed from
//! the last-known state stay, and liveness stays OK (a restart would not bring the API server
//! back, and would lose nothing but time).

use std::sync::Arc;
use std::time::Duration;

use brindle_ipam::store::{Store, StoreExt};
use tracing::{info, warn};

use crate::controller::Shared;
use crate::model::IpPoolSpec;

/// How often the datastore is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one probe may take before the datastore counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One probe: `None` when the datastore answered, else why not.
pub async fn probe_once(store: &dyn Store, timeout: Duration) -> Option<String> {
    match tokio::time::timeout(timeout, store.list_objs::<IpPoolSpec>()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {timeout:?}")),
    }
}

/// Probes until the process ends, recording the outcome in [`Shared::datastore_error`] and
/// logging each change.
pub async fn run(store: Arc<dyn Store>, shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let error = probe_once(store.as_ref(), PROBE_TIMEOUT).await;
        let before = shared.datastore_error();
        match (&before, &error) {
            (None, Some(e)) => {
                warn!(error = %e, "datastore unreachable; keeping the last-known dataplane")
            }
            (Some(_), None) => info!("datastore reachable again"),
            _ => {}
        }
        shared.set_datastore_error(error);
    }
}
