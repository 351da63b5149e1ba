//! Watches of the embedded store: one polling task per [`Watch`].
//!
//! ```text
//!   Store::watch() ──spawns──> Watcher task
//!                                │ every poll_interval (at once after a full batch):
//!                                │   spawn_blocking(Shared::poll) = one read transaction,
//!                                │   SELECT ... FROM events WHERE rev > after ORDER BY rev
//!                                └── mpsc<WatchEvent> (bounded) ──> caller's Watch
//! ```
//! The task ends when the caller drops the receiver.

use std::sync::Arc;

use brindle_ipam::store::{KvPair, StoreError, Watch, WatchEvent};
use rusqlite::params;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Shared, META_COMPACTED, META_REVISION};

/// Events a watch reads per poll; a full batch is followed by another poll at once.
pub(super) const WATCH_BATCH: i64 = 512;
/// Events buffered between a watch's poll task and its receiver.
const WATCH_CHANNEL: usize = 1024;

impl Shared {
    /// One poll of a watch: what happened after `after`, or that the history is gone.
    fn poll(&self, kind: Option<&str>, after: u64) -> Result<Poll, StoreError> {
        self.read(|tx| {
            let compacted = self.meta(tx, META_COMPACTED)?;
            let current = self.meta(tx, META_REVISION)?;
            if after < compacted {
                return Ok(Poll::Compacted { current });
            }
            // Past SQLite's integers: no such revision has happened yet, nothing to read.
            let Ok(after_db) = i64::try_from(after) else {
                return Ok(Poll::Events {
                    events: Vec::new(),
                    next: after,
                    more: false,
                });
            };
            let mut st = tx
                .prepare_cached(
                    "SELECT rev, kind, name, value FROM events \
                     WHERE rev > ?1 AND (?2 IS NULL OR kind = ?2) ORDER BY rev LIMIT ?3",
                )
                .map_err(|e| self.unavailable("prepare watch query", e))?;
            let rows = st
                .query_map(params![after_db, kind, WATCH_BATCH], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                })
                .map_err(|e| self.unavailable("read events", e))?;
            let mut events = Vec::new();
            let mut last = after;
            for row in rows {
                let (rev, kind, name, value) =
                    row.map_err(|e| self.unavailable("read event", e))?;
                let revision = self.revision_from_db(rev, "an event")?;
                last = revision;
                events.push(match value {
                    Some(value) => WatchEvent::Put(KvPair {
                        kind,
                        name,
                        value,
                        revision,
                    }),
                    None => WatchEvent::Deleted {
                        kind,
                        name,
                        revision,
                    },
                });
            }
            let more = events.len() as i64 == WATCH_BATCH;
            // Without more to read, everything up to `current` has been seen (events of other
            // kinds included), so the next poll starts there.
            let next = if more { last } else { current.max(after) };
            Ok(Poll::Events { events, next, more })
        })
    }
}

enum Poll {
    Events {
        events: Vec<WatchEvent>,
        /// The revision the next poll starts after.
        next: u64,
        /// A full batch was read: poll again without waiting.
        more: bool,
    },
    /// `after` is older than the history; `current` is the revision to continue from.
    Compacted { current: u64 },
}

/// The poll task behind one [`Watch`].
pub(super) struct Watcher {
    shared: Arc<Shared>,
    kind: Option<String>,
    /// The last revision delivered (or skipped as another kind).
    after: u64,
    tx: mpsc::Sender<WatchEvent>,
}

impl Watcher {
    /// Starts the poll task of a watch of `kind` (all kinds when `None`) after `after`.
    pub(super) fn spawn(shared: Arc<Shared>, kind: Option<String>, after: u64) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let watcher = Watcher {
            shared,
            kind,
            after,
            tx,
        };
        tokio::spawn(watcher.run());
        rx
    }

    async fn run(mut self) {
        let interval = self.shared.config.poll_interval;
        let mut failing = false;
        debug!(kind = ?self.kind, after = self.after, "watch started");
        loop {
            let (shared, kind, after) = (Arc::clone(&self.shared), self.kind.clone(), self.after);
            let polled = tokio::task::spawn_blocking(move || shared.poll(kind.as_deref(), after))
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError::Unavailable(format!(
                        "watch poll task failed: {e}"
                    )))
                });
            let mut more = false;
            match polled {
                Ok(poll) => {
                    if failing {
                        info!(kind = ?self.kind, after = self.after, "watch poll recovered");
                        failing = false;
                    }
                    match self.process_poll(poll).await {
                        Some(again) => more = again,
                        None => break,
                    }
                }
                Err(error) => {
                    if !failing {
                        warn!(kind = ?self.kind, after = self.after, %error, "watch poll failed; retrying");
                        failing = true;
                    }
                }
            }
            if !more {
                tokio::select! {
                    () = self.tx.closed() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
        debug!(kind = ?self.kind, after = self.after, "watch stopped");
    }

    /// Forwards one poll's result. `None` when the receiver is gone; otherwise whether to poll
    /// again at once.
    async fn process_poll(&mut self, poll: Poll) -> Option<bool> {
        match poll {
            Poll::Compacted { current } => {
                info!(kind = ?self.kind, after = self.after, current, "watch history compacted; resync");
                self.tx.send(WatchEvent::Resync).await.ok()?;
                self.after = current;
                Some(false)
            }
            Poll::Events { events, next, more } => {
                for event in events {
                    self.tx.send(event).await.ok()?;
                }
                self.after = next;
                Some(more)
            }
        }
    }
}
