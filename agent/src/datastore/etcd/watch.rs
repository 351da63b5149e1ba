//! Watches of the etcd store: one streaming task per [`Watch`].
//!
//! ```text
//!   Store::watch() ──spawns──> Watcher task
//!                                │ POST /v3/watch {create_request: prefix, start = after + 1}
//!                                │ reads newline-delimited WatchResponses:
//!                                │   events        -> forwarded in order, after = mod_revision
//!                                │   progress      -> after = header.revision
//!                                │   compacted     -> Resync, after = current revision
//!                                │   stream broken -> back off, reconnect from after + 1
//!                                │   (or silent for 11 min)
//!                                └── mpsc<WatchEvent> (bounded) ──> caller's Watch
//! ```
//! The task ends when the caller drops the receiver. Because `after` only moves past what was
//! delivered (or what etcd reported as seen), a reconnect neither loses nor repeats events.

use std::sync::Arc;
use std::time::Duration;

use brindle_ipam::store::{KvPair, Watch, WatchEvent};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::wire::{self, EventType, WatchLine};
use super::Shared;

/// Events buffered between a watch's task and its receiver.
const WATCH_CHANNEL: usize = 1024;
/// Longest line of the watch stream kept in memory (one response of many events).
const MAX_LINE: usize = 64 << 20;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A stream silent for this long is presumed dead (a partitioned member sends no FIN) and is
/// reopened: etcd sends a progress notification to idle watches every 10 minutes.
const STREAM_IDLE: Duration = Duration::from_secs(11 * 60);

/// How one stream ended.
enum Ended {
    /// The receiver is gone: stop.
    ReceiverGone,
    /// etcd no longer has the history after `after`.
    Compacted { compact_revision: u64 },
    /// The stream could not be opened or broke; reconnect.
    Failed(String),
}

/// The streaming task behind one [`Watch`].
pub(super) struct Watcher {
    shared: Arc<Shared>,
    /// The key range watched: everything under this prefix.
    prefix: Vec<u8>,
    /// The last revision delivered (or reported by etcd as seen).
    after: u64,
    tx: mpsc::Sender<WatchEvent>,
    /// The current stream has been accepted by etcd (reset the backoff).
    connected: bool,
}

impl Watcher {
    pub(super) fn spawn(shared: Arc<Shared>, prefix: Vec<u8>, after: u64) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let watcher = Watcher {
            shared,
            prefix,
            after,
            tx,
            connected: false,
        };
        tokio::spawn(watcher.run());
        rx
    }

    fn prefix_str(&self) -> String {
        String::from_utf8_lossy(&self.prefix).into_owned()
    }

    async fn run(mut self) {
        let closed = self.tx.clone();
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        debug!(prefix = %self.prefix_str(), after = self.after, "etcd watch started");
        loop {
            self.connected = false;
            let ended = tokio::select! {
                () = closed.closed() => break,
                ended = self.stream() => ended,
            };
            if self.connected {
                if failing {
                    info!(prefix = %self.prefix_str(), after = self.after, "etcd watch reconnected");
                }
                failing = false;
                backoff = MIN_BACKOFF;
            }
            match ended {
                Ended::ReceiverGone => break,
                Ended::Compacted { compact_revision } => {
                    if !self.process_compacted(compact_revision).await {
                        break;
                    }
                    continue;
                }
                Ended::Failed(error) => {
                    if !failing {
                        warn!(prefix = %self.prefix_str(), after = self.after, %error, "etcd watch failed; reconnecting");
                        failing = true;
                    } else {
                        debug!(prefix = %self.prefix_str(), after = self.after, %error, "etcd watch still failing");
                    }
                }
            }
            tokio::select! {
                () = closed.closed() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        debug!(prefix = %self.prefix_str(), after = self.after, "etcd watch stopped");
    }

    /// Tells the receiver to resync and moves to the current revision. `false` when the
    /// receiver is gone.
    async fn process_compacted(&mut self, compact_revision: u64) -> bool {
        // The revision to continue from; etcd must answer first, so retry until it does.
        let mut backoff = MIN_BACKOFF;
        let current = loop {
            match self.shared.current_revision().await {
                Ok(current) => break current,
                Err(error) => {
                    debug!(%error, "etcd watch: reading the current revision failed; retrying");
                    tokio::select! {
                        () = self.tx.closed() => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        info!(prefix = %self.prefix_str(), after = self.after, compact_revision, current, "etcd history compacted; resync");
        if self.tx.send(WatchEvent::Resync).await.is_err() {
            return false;
        }
        self.after = current.max(self.after);
        true
    }

    /// Opens one watch stream from `after + 1` and forwards it until it ends.
    async fn stream(&mut self) -> Ended {
        // etcd revisions are int64; 0 would mean "from now".
        let start = self.after.saturating_add(1).min(i64::MAX as u64);
        let request = wire::watch_create(&self.prefix, start);
        let mut body = match self.shared.client.stream("/v3/watch", &request).await {
            Ok(body) => body,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Ok(frame) = tokio::time::timeout(STREAM_IDLE, body.frame()).await else {
                return Ended::Failed(format!("watch stream silent for {STREAM_IDLE:?}"));
            };
            let frame = match frame {
                None => return Ended::Failed("etcd closed the watch stream".to_string()),
                Some(Err(e)) => return Ended::Failed(format!("watch stream: {e}")),
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                if let Some(ended) = self.process_line(&line[..end]).await {
                    return ended;
                }
            }
            if buf.len() > MAX_LINE {
                return Ended::Failed(format!("watch stream line longer than {MAX_LINE} bytes"));
            }
        }
    }

    /// Handles one `WatchResponse`; `Some` when the stream is over.
    async fn process_line(&mut self, line: &[u8]) -> Option<Ended> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let line: WatchLine = match serde_json::from_slice(line) {
            Ok(line) => line,
            Err(e) => return Some(Ended::Failed(format!("unreadable watch response: {e}"))),
        };
        if let Some(error) = line.error {
            return Some(Ended::Failed(format!("etcd watch error: {error}")));
        }
        let Some(response) = line.result else {
            return Some(Ended::Failed("watch response without result".to_string()));
        };
        if response.canceled {
            if response.compact_revision > 0 {
                return Some(Ended::Compacted {
                    compact_revision: response.compact_revision,
                });
            }
            return Some(Ended::Failed(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason
            )));
        }
        if response.created {
            self.connected = true;
            return None;
        }
        if response.events.is_empty() {
            // A progress notification: every change up to this revision has been sent.
            self.after = self.after.max(response.header.revision);
            return None;
        }
        for event in response.events {
            let revision = event.kv.mod_revision;
            let Some((kind, name)) = self.shared.parse_key(&event.kv.key) else {
                debug!(key = %String::from_utf8_lossy(&event.kv.key), "etcd watch: skipping a key outside the layout");
                self.after = self.after.max(revision);
                continue;
            };
            let event = match event.kind {
                EventType::Put => WatchEvent::Put(KvPair {
                    kind,
                    name,
                    value: event.kv.value,
                    revision,
                }),
                EventType::Delete => WatchEvent::Deleted {
                    kind,
                    name,
                    revision,
                },
            };
            if self.tx.send(event).await.is_err() {
                return Some(Ended::ReceiverGone);
            }
            self.after = self.after.max(revision);
        }
        None
    }
}
