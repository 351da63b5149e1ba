//! Running a closure inside another network namespace.
//!
//! `setns(2)` changes the namespace of the calling thread only. A tokio worker must never change
//! namespace (every later task on it would run there), so the closure runs on a short-lived
//! `std::thread` that enters the namespace, does its work and exits. A netlink socket created on
//! that thread stays bound to the namespace it was created in, so callers create their
//! connection there and use it from anywhere afterwards.

use std::fs::File;

use nix::sched::{setns, CloneFlags};

use super::DataplaneError;

/// The calling thread's own network namespace.
pub(crate) const CURRENT: &str = "/proc/thread-self/ns/net";

/// Opens a network namespace by path (`/var/run/netns/x`, `/proc/<pid>/ns/net`).
pub(crate) fn open(path: &str) -> Result<File, DataplaneError> {
    File::open(path).map_err(|e| DataplaneError::Netns {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Whether the calling thread is in the network namespace `ns` (same nsfs inode). False when
/// either cannot be read.
pub(crate) fn is_current(ns: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(CURRENT), ns.metadata()) {
        (Ok(here), Ok(there)) => here.dev() == there.dev() && here.ino() == there.ino(),
        _ => false,
    }
}

/// Runs `f` on a fresh thread inside the network namespace `ns` (opened from `path`) and returns
/// its result without blocking the async runtime.
pub(crate) async fn run_in<T, F>(path: &str, ns: File, f: F) -> Result<T, DataplaneError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("brindle-netns".into())
        .spawn(move || {
            let result = setns(&ns, CloneFlags::CLONE_NEWNET)
                .map(|()| f())
                .map_err(|e| e.to_string());
            // The receiver is gone only if the caller was cancelled; nothing to report then.
            let _ = tx.send(result);
        });
    let netns_err = |reason: String| DataplaneError::Netns {
        path: path.to_string(),
        reason,
    };
    spawned.map_err(|e| netns_err(format!("spawning thread: {e}")))?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(netns_err(format!("setns: {reason}"))),
        Err(_) => Err(netns_err("netns thread panicked".to_string())),
    }
}
