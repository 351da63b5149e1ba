//! Deleting pod veth pairs off the request path.
//!
//! Deleting a network device makes the kernel wait for RCU grace periods (twice, while the
//! netlink request is in `sendmsg`): 10 to 30 ms on a busy node, the bulk of a CNI DEL. Nothing a
//! DEL promises depends on that wait. By the time the reaper is handed a veth, the pod's host
//! routes are already gone and its address may be given out again; the veth itself is
//! unreachable. So CNI DEL answers at once and the reaper deletes the pair on its own thread,
//! with its own netlink connection, so neither a tokio worker nor the main connection is
//! blocked meanwhile.
//!
//! ```text
//!   PodWirer::release ── queue(name) ──> reaper thread: current-thread runtime,
//!   PodWirer::setup ─── wait(name) ────>   its own rtnetlink socket in the node namespace,
//!                                           deletes one veth after the other
//! ```
//!
//! A new veth of the same name (the same pod sandbox added again) waits for the old one's
//! deletion ([`Reaper::wait`]). If the agent stops with deletions queued, the kernel still
//! removes those pairs when the pods' namespaces are destroyed.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sched::{setns, CloneFlags};
use tokio::sync::{mpsc, watch};

use super::kernel::Kernel;
use super::netlink::NetlinkKernel;
use super::DataplaneError;

/// Interface name -> "deleted" flag of its queued deletion.
type Pending = Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>;

/// Handle to the reaper thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reaper {
    queue: mpsc::UnboundedSender<(String, watch::Sender<bool>)>,
    pending: Pending,
}

fn lock(pending: &Pending) -> MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
    // Plain values only; a panic elsewhere cannot leave the map inconsistent.
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reaper {
    /// Starts the reaper thread in the network namespace `home`.
    pub(crate) fn start(home: &File) -> Result<Self, DataplaneError> {
        let ns_err = |reason: String| DataplaneError::Netns {
            path: "reaper".into(),
            reason,
        };
        let home = home.try_clone().map_err(|e| ns_err(e.to_string()))?;
        let (queue, mut rx) = mpsc::unbounded_channel::<(String, watch::Sender<bool>)>();
        let pending: Pending = Arc::default();
        let pending_in_thread = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("brindle-reaper".into())
            .spawn(move || {
                if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
                    tracing::error!(error = %e, "veth reaper: setns failed; deleting nothing");
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "veth reaper: no runtime; deleting nothing");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let kernel = match NetlinkKernel::connect() {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::error!(error = %e, "veth reaper: no netlink connection");
                            return;
                        }
                    };
                    while let Some((name, done)) = rx.recv().await {
                        match kernel.delete_link(&name).await {
                            Ok(()) | Err(DataplaneError::NoSuchInterface(_)) => {
                                tracing::debug!(ifname = %name, "veth deleted")
                            }
                            Err(e) => {
                                tracing::warn!(ifname = %name, error = %e, "deleting a pod's veth failed")
                            }
                        }
                        {
                            let mut map = lock(&pending_in_thread);
                            if map.get(&name).is_some_and(|rx| rx.same_channel(&done.subscribe())) {
                                map.remove(&name);
                            }
                        }
                        // Nobody waiting is fine.
                        let _ = done.send(true);
                    }
                });
            })
            .map_err(|e| ns_err(format!("spawning the reaper thread: {e}")))?;
        Ok(Reaper { queue, pending })
    }

    /// Queues the deletion of interface `name` (and its veth peer).
    pub(crate) fn queue(&self, name: &str) -> Result<(), DataplaneError> {
        let (done, waiter) = watch::channel(false);
        lock(&self.pending).insert(name.to_string(), waiter);
        self.queue.send((name.to_string(), done)).map_err(|_| {
            lock(&self.pending).remove(name);
            DataplaneError::Netlink {
                op: "delete link",
                object: name.to_string(),
                reason: "the veth reaper thread has stopped".into(),
            }
        })
    }

    /// Waits until no deletion of `name` is queued or running.
    pub(crate) async fn wait(&self, name: &str) {
        let waiter = lock(&self.pending).get(name).cloned();
        if let Some(mut waiter) = waiter {
            // An error means the reaper dropped the sender: it is not deleting anything anymore.
            let _ = waiter.wait_for(|deleted| *deleted).await;
        }
    }
}
