//! `install_routes`: programs the speaker's best routes into the kernel.

use brindle_bgp::speaker::RouteChange;
use tokio::sync::mpsc;

/// Consumes route changes until the speaker stops.
pub async fn run(mut routes: mpsc::Receiver<RouteChange>) {
    tracing::warn!("install_routes: kernel programming is not wired yet; routes are not installed");
    while routes.recv().await.is_some() {}
}
