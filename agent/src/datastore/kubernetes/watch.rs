//! Watches of the Kubernetes store: the API server watches one resource at a time, so a
//! [`Watch`] of several kinds runs one stream per kind and merges them by revision.
//!
//! ```text
//!   Store::watch() ──spawns──> merger task (one per Watch)
//!                                 │ spawns one stream task per kind, generation g:
//!                                 │   GET /apis/brindle.dev/v1/<plural>?watch=1
//!                                 │       &resourceVersion=<rv>&allowWatchBookmarks=true
//!                                 │   ADDED/MODIFIED -> Put, DELETED -> Deleted, rv = its RV
//!                                 │   BOOKMARK       -> progress, rv = its RV
//!                                 │   stream ends    -> reconnect from rv (API server timeout)
//!                                 │   410 Gone (HTTP or ERROR event) -> Expired
//!                                 │ <── mpsc<KindMsg> (tagged with g) ──┘
//!                                 │ holds events until every kind has reached their revision
//!                                 │ or HOLD passed, then sends them in revision order;
//!                                 │ Expired: flush, Resync, restart every kind from the
//!                                 │ current revision (generation g + 1)
//!                                 └── mpsc<WatchEvent> (bounded) ──> caller's Watch
//! ```
//!
//! One kind's events come in revision order from its stream. Across kinds the API server gives
//! no order (each resource has its own watch cache), so the merger holds an event until every
//! other kind's stream has delivered something at or past its revision, or for [`HOLD`]: events
//! are in revision order unless one kind's stream lags another's by more than that. A watch of
//! one kind holds nothing.
//!
//! `after == 0` asks for the whole history, which no API server keeps: the watch starts with
//! `Resync` at the current revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brindle_ipam::store::{Watch, WatchEvent};
use futures::StreamExt;
use kube::api::WatchParams;
use kube::core::WatchEvent as KubeEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{parse_revision, Shared};

/// Events buffered between a watch's merger and its receiver.
const WATCH_CHANNEL: usize = 1024;
/// How long an event of one kind waits for the other kinds' streams to catch up.
const HOLD: Duration = Duration::from_millis(100);
/// The server-side timeout asked for each watch call; the stream task then reconnects.
const WATCH_TIMEOUT_SECS: u32 = 290;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a kind's stream task tells the merger.
enum KindMsg {
    Event {
        revision: u64,
        event: WatchEvent,
    },
    /// Everything of this kind up to `revision` has been sent (a bookmark).
    Progress {
        revision: u64,
    },
    /// The API server no longer has the history after the requested revision.
    Expired {
        message: String,
    },
}

/// The merger behind one [`Watch`].
pub(super) struct Watcher {
    shared: Arc<Shared>,
    kinds: Vec<String>,
    tx: mpsc::Sender<WatchEvent>,
}

impl Watcher {
    pub(super) fn spawn(shared: Arc<Shared>, kinds: Vec<String>, after: u64) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let watcher = Watcher { shared, kinds, tx };
        tokio::spawn(watcher.run(after));
        rx
    }

    async fn run(self, after: u64) {
        let (msg_tx, mut msg_rx) = mpsc::channel::<(u64, usize, KindMsg)>(WATCH_CHANNEL);
        let mut generation = 0u64;
        let mut from = after;
        if after == 0 {
            let Some(current) = self.resync().await else {
                return;
            };
            from = current;
        }
        let mut streams = self.spawn_streams(generation, from, &msg_tx);
        let mut watermark = vec![from; self.kinds.len()];
        // (revision, arrival sequence) -> (release deadline, event)
        let mut pending: BTreeMap<(u64, u64), (Instant, WatchEvent)> = BTreeMap::new();
        let mut seq = 0u64;
        debug!(kinds = ?self.kinds, after, "kubernetes watch started");
        loop {
            // Events leave in revision order, so nothing is due before the first one is.
            let deadline = pending.first_key_value().map(|(_, (at, _))| *at);
            tokio::select! {
                () = self.tx.closed() => break,
                msg = msg_rx.recv() => {
                    let Some((msg_generation, kind, msg)) = msg else { break };
                    if msg_generation != generation {
                        continue;
                    }
                    match msg {
                        KindMsg::Event { revision, event } => {
                            watermark[kind] = watermark[kind].max(revision);
                            seq += 1;
                            pending.insert((revision, seq), (Instant::now() + HOLD, event));
                        }
                        KindMsg::Progress { revision } => {
                            watermark[kind] = watermark[kind].max(revision);
                        }
                        KindMsg::Expired { message } => {
                            info!(kind = %self.kinds[kind], %message, "kubernetes watch history expired; resync");
                            for handle in streams.drain(..) {
                                handle.abort();
                            }
                            if !self.flush(&mut pending).await {
                                break;
                            }
                            let Some(current) = self.resync().await else { break };
                            generation += 1;
                            streams = self.spawn_streams(generation, current, &msg_tx);
                            watermark = vec![current; self.kinds.len()];
                            continue;
                        }
                    }
                }
                () = sleep_until(deadline) => {}
            }
            if !self.release(&mut pending, &watermark).await {
                break;
            }
        }
        for handle in streams {
            handle.abort();
        }
        debug!(kinds = ?self.kinds, "kubernetes watch stopped");
    }

    /// Sends the held events that are due: every kind has reached their revision, or they
    /// waited [`HOLD`]. `false` when the receiver is gone.
    async fn release(
        &self,
        pending: &mut BTreeMap<(u64, u64), (Instant, WatchEvent)>,
        watermark: &[u64],
    ) -> bool {
        let reached = watermark.iter().copied().min().unwrap_or(0);
        let now = Instant::now();
        while let Some(entry) = pending.first_entry() {
            let ((revision, _), (deadline, _)) = (*entry.key(), &entry.get());
            if revision > reached && *deadline > now {
                break;
            }
            let (_, event) = entry.remove();
            if self.tx.send(event).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends every held event, in order.
    async fn flush(&self, pending: &mut BTreeMap<(u64, u64), (Instant, WatchEvent)>) -> bool {
        while let Some((_, (_, event))) = pending.pop_first() {
            if self.tx.send(event).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends `Resync` and returns the revision to go on from, retrying until the API server
    /// answers; `None` when the receiver is gone.
    async fn resync(&self) -> Option<u64> {
        let mut backoff = MIN_BACKOFF;
        let current = loop {
            match self.shared.current_revision(&self.kinds[0]).await {
                Ok(current) => break current,
                Err(error) => {
                    debug!(%error, "kubernetes watch: reading the current revision failed; retrying");
                    tokio::select! {
                        () = self.tx.closed() => return None,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        self.tx.send(WatchEvent::Resync).await.ok()?;
        Some(current)
    }

    fn spawn_streams(
        &self,
        generation: u64,
        from: u64,
        msg_tx: &mpsc::Sender<(u64, usize, KindMsg)>,
    ) -> Vec<JoinHandle<()>> {
        self.kinds
            .iter()
            .enumerate()
            .map(|(index, kind)| {
                let stream = KindStream {
                    shared: Arc::clone(&self.shared),
                    kind: kind.clone(),
                    index,
                    generation,
                    rv: from,
                    tx: msg_tx.clone(),
                };
                tokio::spawn(stream.run())
            })
            .collect()
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How one watch call ended.
enum Ended {
    MergerGone,
    Expired(String),
    /// The call failed or the stream ended; reconnect from `rv`.
    Reconnect(String),
}

/// The stream task of one kind.
struct KindStream {
    shared: Arc<Shared>,
    kind: String,
    index: usize,
    generation: u64,
    /// The last resourceVersion delivered (or bookmarked).
    rv: u64,
    tx: mpsc::Sender<(u64, usize, KindMsg)>,
}

impl KindStream {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let (ended, got_data) = self.stream().await;
            match ended {
                Ended::MergerGone => return,
                Ended::Expired(message) => {
                    let _ = self.send(KindMsg::Expired { message }).await;
                    return;
                }
                Ended::Reconnect(why) => {
                    if got_data {
                        backoff = MIN_BACKOFF;
                        debug!(kind = %self.kind, rv = self.rv, %why, "kubernetes watch ended; reconnecting");
                        continue;
                    }
                    warn!(kind = %self.kind, rv = self.rv, error = %why, "kubernetes watch failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn send(&self, msg: KindMsg) -> bool {
        self.tx
            .send((self.generation, self.index, msg))
            .await
            .is_ok()
    }

    /// One watch call from `rv`; also whether it delivered anything.
    async fn stream(&mut self) -> (Ended, bool) {
        let api = match self.shared.api(&self.kind) {
            Ok(api) => api,
            Err(e) => return (Ended::Reconnect(e.to_string()), false),
        };
        // Bookmarks are on by default.
        let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
        let stream = match api.watch(&params, &self.rv.to_string()).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(e)) if e.code == 410 => return (Ended::Expired(e.message), false),
            Err(e) => return (Ended::Reconnect(e.to_string()), false),
        };
        let mut stream = std::pin::pin!(stream);
        let mut got_data = false;
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                // An error status of the watch call itself arrives as the stream's first item.
                Err(kube::Error::Api(e)) if e.code == 410 => {
                    return (Ended::Expired(e.message), got_data);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    let why = format!(
                        "{}: is the CRD {}.{} installed? (kubectl apply -f manifests/crds.yaml)",
                        e.message,
                        super::names::plural(&self.kind),
                        super::GROUP
                    );
                    return (Ended::Reconnect(why), got_data);
                }
                Err(e) => return (Ended::Reconnect(e.to_string()), got_data),
            };
            got_data = true;
            let msg = match event {
                KubeEvent::Added(obj) | KubeEvent::Modified(obj) => {
                    match Shared::to_record(&self.kind, &obj) {
                        Ok(kv) => KindMsg::Event {
                            revision: kv.revision,
                            event: WatchEvent::Put(kv),
                        },
                        Err(error) => {
                            warn!(kind = %self.kind, %error, "kubernetes watch: skipping an unreadable object");
                            continue;
                        }
                    }
                }
                KubeEvent::Deleted(obj) => match Shared::to_record(&self.kind, &obj) {
                    // The object of a DELETED event carries the revision of the delete.
                    Ok(kv) => KindMsg::Event {
                        revision: kv.revision,
                        event: WatchEvent::Deleted {
                            kind: kv.kind,
                            name: kv.name,
                            revision: kv.revision,
                        },
                    },
                    Err(error) => {
                        warn!(kind = %self.kind, %error, "kubernetes watch: skipping an unreadable delete");
                        continue;
                    }
                },
                KubeEvent::Bookmark(bookmark) => {
                    match parse_revision(Some(&bookmark.metadata.resource_version), "a bookmark") {
                        Ok(revision) => KindMsg::Progress { revision },
                        Err(error) => {
                            warn!(kind = %self.kind, %error, "kubernetes watch: skipping a bookmark");
                            continue;
                        }
                    }
                }
                KubeEvent::Error(e) if e.code == 410 => {
                    return (Ended::Expired(e.message), got_data);
                }
                KubeEvent::Error(e) => {
                    return (
                        Ended::Reconnect(format!("{} {}: {}", e.code, e.reason, e.message)),
                        got_data,
                    );
                }
            };
            if let KindMsg::Event { revision, .. } | KindMsg::Progress { revision } = &msg {
                self.rv = self.rv.max(*revision);
            }
            if !self.send(msg).await {
                return (Ended::MergerGone, got_data);
            }
        }
        // A clean end (the server-side timeout) is no failure: reconnect at once.
        (
            Ended::Reconnect("the API server ended the watch".to_string()),
            true,
        )
    }
}
