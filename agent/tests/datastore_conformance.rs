//! One conformance suite for every datastore backend (BRIEF §3): the cases in [`cases`] take an
//! `Arc<dyn Store>` and know nothing of the backend; the `conformance!` macro instantiates them
//! for the memory store (where meaningful), the embedded store, a real etcd, and the kubernetes
//! store against a FAKE of the API server (`kubernetes_fake_apiserver`: its semantics for
//! custom resources in process, see `datastore_conformance/fake_apiserver.rs`; no real API
//! server runs here).
//!
//! Every value stored is a resource (`{"apiVersion","kind","metadata","spec":{"v":..}}`), as
//! in real use: the kubernetes store can hold nothing else. Every backend must give back the
//! bytes it was given.
//!
//! The etcd tests start Debian's `etcd` binary (package `etcd-server`) on free loopback ports
//! with a data dir under /dev/shm, and kill it and remove the dir when the test ends, also when
//! it fails. Tests share one server (each under its own key prefix) except those that compact
//! or restart it. Without an `etcd` binary the etcd tests fail when `CI` is set and are skipped
//! with a message otherwise; `BRINDLE_ETCD` names another binary.
//!
//! The multi-process case re-executes this test binary (the test's own name, `--exact`) with
//! [`ROLE_ENV`] set; the child runs the same test, sees the variable and acts as a worker.

#[path = "datastore_conformance/fixture.rs"]
mod fixture;

use std::sync::Arc;
use std::time::Duration;

use brindle_ipam::store::{KvPair, Store, StoreError, Watch, WatchEvent};

use fixture::Backend;

/// Tells a child process to act as a counter worker.
const ROLE_ENV: &str = "BRINDLE_CONFORMANCE_ROLE";
/// The `--datastore` value the child opens.
const SPEC_ENV: &str = "BRINDLE_CONFORMANCE_SPEC";
/// How many increments the child makes.
const ARG_ENV: &str = "BRINDLE_CONFORMANCE_ARG";

const PROCESSES: u64 = 4;
const INCREMENTS: u64 = 40;

/// The next watch event, within 10 s.
async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("watch event within 10 s")
        .expect("watch still open")
}

/// Asserts that nothing more arrives for a moment.
async fn quiet(watch: &mut Watch) {
    if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), watch.recv()).await {
        panic!("unexpected watch event {ev:?}");
    }
}

/// A record's value: a resource with `v` in its spec. Values are resources because that is what
/// the store holds (the Kubernetes backend can hold nothing else), and every backend gives back
/// the bytes it was given.
fn val(kind: &str, name: &str, v: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "brindle.dev/v1",
        "kind": kind,
        "metadata": { "name": name },
        "spec": { "v": v },
    }))
    .expect("json")
}

/// The `v` of a value made by [`val`].
fn v_of(value: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(value).expect("a resource");
    value["spec"]["v"].as_str().expect("spec.v").to_string()
}

fn put(kind: &str, name: &str, v: &str, revision: u64) -> WatchEvent {
    WatchEvent::Put(KvPair {
        kind: kind.to_string(),
        name: name.to_string(),
        value: val(kind, name, v),
        revision,
    })
}

fn deleted(kind: &str, name: &str, revision: u64) -> WatchEvent {
    WatchEvent::Deleted {
        kind: kind.to_string(),
        name: name.to_string(),
        revision,
    }
}

pub mod cases {
    use std::collections::BTreeMap;

    use super::*;

    /// get, list, create, update and delete, and their errors.
    pub async fn crud(store: Arc<dyn Store>) {
        assert_eq!(store.get("IPPool", "a").await.expect("get"), None);
        let empty = store.list("IPPool").await.expect("list");
        assert!(empty.items.is_empty());

        let r1 = store
            .create("IPPool", "a", val("IPPool", "a", "1"))
            .await
            .expect("create");
        assert!(r1 > empty.revision, "a write moves the revision forward");
        let err = store
            .create("IPPool", "a", val("IPPool", "a", ""))
            .await
            .expect_err("second create");
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }) && err.is_conflict(),
            "{err}"
        );
        let kv = store
            .get("IPPool", "a")
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (
                kv.kind.as_str(),
                kv.name.as_str(),
                kv.value.as_slice(),
                kv.revision
            ),
            ("IPPool", "a", &val("IPPool", "a", "1")[..], r1)
        );
        // Same name, other kind: another record.
        assert_eq!(store.get("Node", "a").await.expect("get"), None);

        let r2 = store
            .update("IPPool", "a", val("IPPool", "a", "2"), r1)
            .await
            .expect("update");
        assert!(r2 > r1);
        let kv = store
            .get("IPPool", "a")
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (kv.value.as_slice(), kv.revision),
            (&val("IPPool", "a", "2")[..], r2)
        );

        let err = store
            .update("IPPool", "missing", val("IPPool", "missing", ""), r2)
            .await
            .expect_err("update of a missing record");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        let err = store
            .delete("IPPool", "missing", None)
            .await
            .expect_err("delete of a missing record");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

        store.delete("IPPool", "a", None).await.expect("delete");
        assert_eq!(store.get("IPPool", "a").await.expect("get"), None);
        let listing = store.list("IPPool").await.expect("list");
        assert!(listing.items.is_empty());
        assert!(listing.revision > r2, "a delete is a write too");
        let r3 = store
            .create("IPPool", "a", val("IPPool", "a", ""))
            .await
            .expect("create after delete");
        assert!(r3 > listing.revision);
    }

    /// update and delete with a stale revision lose; the record keeps the winner's write.
    pub async fn compare_and_swap(store: Arc<dyn Store>) {
        let r0 = store
            .create("IPAMBlock", "b", val("IPAMBlock", "b", "0"))
            .await
            .expect("create");
        // Two writers read r0; the first to write wins.
        let r1 = store
            .update("IPAMBlock", "b", val("IPAMBlock", "b", "first"), r0)
            .await
            .expect("first writer");
        let err = store
            .update("IPAMBlock", "b", val("IPAMBlock", "b", "second"), r0)
            .await
            .expect_err("stale writer");
        assert!(
            matches!(err, StoreError::Conflict { expected, .. } if expected == r0),
            "{err}"
        );
        assert!(err.is_conflict());
        let kv = store
            .get("IPAMBlock", "b")
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (kv.value.as_slice(), kv.revision),
            (&val("IPAMBlock", "b", "first")[..], r1)
        );

        // Revision 0 never matches an existing record, and never creates a missing one.
        let err = store
            .update("IPAMBlock", "b", val("IPAMBlock", "b", "x"), 0)
            .await
            .expect_err("expected 0");
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let err = store
            .update("IPAMBlock", "nope", val("IPAMBlock", "nope", "x"), 0)
            .await
            .expect_err("expected 0 on a missing record");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert_eq!(store.get("IPAMBlock", "nope").await.expect("get"), None);

        // Delete with a revision: stale loses and leaves the record, current wins.
        let err = store
            .delete("IPAMBlock", "b", Some(r0))
            .await
            .expect_err("stale delete");
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert!(store.get("IPAMBlock", "b").await.expect("get").is_some());
        store
            .delete("IPAMBlock", "b", Some(r1))
            .await
            .expect("delete at the current revision");
        let err = store
            .delete("IPAMBlock", "b", Some(r1))
            .await
            .expect_err("delete of a deleted record");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        let err = store
            .update("IPAMBlock", "b", val("IPAMBlock", "b", "x"), r1)
            .await
            .expect_err("update of a deleted record");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    }

    /// A list returns one kind only, every item at or below the list's revision; with `history`,
    /// the list is a snapshot: applying the watch from its revision gives the final state, while
    /// a writer runs during the list.
    pub async fn list_consistency(store: Arc<dyn Store>, history: bool) {
        let mut last = 0;
        for i in 0..20 {
            last = store
                .create(
                    "Node",
                    &format!("n{i:02}"),
                    val("Node", &format!("n{i:02}"), &i.to_string()),
                )
                .await
                .expect("create");
        }
        store
            .create("WorkloadEndpoint", "w", val("WorkloadEndpoint", "w", ""))
            .await
            .expect("create other kind");
        let listing = store.list("Node").await.expect("list");
        let mut names: Vec<_> = listing.items.iter().map(|kv| kv.name.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            (0..20).map(|i| format!("n{i:02}")).collect::<Vec<_>>()
        );
        assert!(listing.items.iter().all(|kv| kv.kind == "Node"));
        assert!(listing.revision >= last);
        assert!(listing
            .items
            .iter()
            .all(|kv| kv.revision <= listing.revision));

        // A writer updates every node in turn while we list.
        let writer = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut last = 0;
                for round in 0..3 {
                    for i in 0..20 {
                        let name = format!("n{i:02}");
                        let kv = store.get("Node", &name).await.expect("get").expect("node");
                        last = store
                            .update(
                                "Node",
                                &name,
                                val("Node", &name, &format!("{i}.{round}")),
                                kv.revision,
                            )
                            .await
                            .expect("sole writer's update");
                    }
                }
                last
            })
        };
        let mut listings = Vec::new();
        while !writer.is_finished() {
            listings.push(store.list("Node").await.expect("list"));
            // Lets the writer run (on a single-threaded runtime too) and bounds the replays.
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        let last = writer.await.expect("writer");
        let end = store.list("Node").await.expect("final list");
        assert!(end.revision >= last);
        let final_state: BTreeMap<_, _> = end
            .items
            .iter()
            .map(|kv| (kv.name.clone(), (kv.value.clone(), kv.revision)))
            .collect();
        for listing in listings.iter().chain([&listing]) {
            assert_eq!(listing.items.len(), 20);
            assert!(listing
                .items
                .iter()
                .all(|kv| kv.revision <= listing.revision));
            if !history {
                continue;
            }
            // Replaying the history after the list's revision on top of it gives the end state:
            // the list was one snapshot at its revision.
            let mut state: BTreeMap<_, _> = listing
                .items
                .iter()
                .map(|kv| (kv.name.clone(), (kv.value.clone(), kv.revision)))
                .collect();
            let mut watch = store
                .watch(Some("Node"), listing.revision)
                .await
                .expect("watch");
            let mut at = listing.revision;
            while at < last {
                match next(&mut watch).await {
                    WatchEvent::Put(kv) => {
                        assert!(kv.revision > at, "watch goes forward");
                        at = kv.revision;
                        state.insert(kv.name, (kv.value, kv.revision));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(
                state, final_state,
                "list at {} was not a snapshot",
                listing.revision
            );
        }
    }

    /// A watch from the current revision sees later writes in order, filtered by kind; a watch
    /// of every kind sees them all.
    pub async fn watch_in_order(store: Arc<dyn Store>) {
        let from = store.list("IPPool").await.expect("list").revision;
        let mut pools = store
            .watch(Some("IPPool"), from)
            .await
            .expect("watch pools");
        let mut all = store.watch(None, from).await.expect("watch all");
        // Give the watches a moment to be established (some backends stream).
        tokio::time::sleep(Duration::from_millis(50)).await;

        let r1 = store
            .create("IPPool", "p", val("IPPool", "p", "1"))
            .await
            .expect("create");
        let r2 = store
            .create("Node", "n", val("Node", "n", "n"))
            .await
            .expect("create");
        let r3 = store
            .update("IPPool", "p", val("IPPool", "p", "2"), r1)
            .await
            .expect("update");
        store.delete("IPPool", "p", Some(r3)).await.expect("delete");
        let r4 = store.list("IPPool").await.expect("list").revision;
        store.delete("Node", "n", None).await.expect("delete");
        let r5 = store.list("Node").await.expect("list").revision;

        assert_eq!(next(&mut pools).await, put("IPPool", "p", "1", r1));
        assert_eq!(next(&mut pools).await, put("IPPool", "p", "2", r3));
        // A delete returns no revision; it lies between the write before and the list after
        // (other writers may share the revision counter, as on a shared etcd).
        let d4 = match next(&mut pools).await {
            WatchEvent::Deleted {
                kind,
                name,
                revision,
            } if (kind.as_str(), name.as_str()) == ("IPPool", "p") => revision,
            other => panic!("expected the delete of IPPool p, got {other:?}"),
        };
        assert!(r3 < d4 && d4 <= r4, "{r3} < {d4} <= {r4}");
        assert_eq!(next(&mut all).await, put("IPPool", "p", "1", r1));
        assert_eq!(next(&mut all).await, put("Node", "n", "n", r2));
        assert_eq!(next(&mut all).await, put("IPPool", "p", "2", r3));
        assert_eq!(next(&mut all).await, deleted("IPPool", "p", d4));
        match next(&mut all).await {
            WatchEvent::Deleted {
                kind,
                name,
                revision,
            } => {
                assert_eq!((kind.as_str(), name.as_str()), ("Node", "n"));
                assert!(r4 < revision && revision <= r5, "{r4} < {revision} <= {r5}");
            }
            other => panic!("expected the delete of Node n, got {other:?}"),
        }
        quiet(&mut pools).await;
        quiet(&mut all).await;
    }

    /// A watch from a past revision replays what happened after it (backends with history).
    pub async fn watch_replays_history(store: Arc<dyn Store>) {
        let from = store.list("IPPool").await.expect("list").revision;
        let r1 = store
            .create("IPPool", "p", val("IPPool", "p", "1"))
            .await
            .expect("create");
        store
            .create("Node", "n", val("Node", "n", "n"))
            .await
            .expect("create");
        let r3 = store
            .update("IPPool", "p", val("IPPool", "p", "2"), r1)
            .await
            .expect("update");

        let mut watch = store.watch(Some("IPPool"), from).await.expect("watch");
        assert_eq!(next(&mut watch).await, put("IPPool", "p", "1", r1));
        assert_eq!(next(&mut watch).await, put("IPPool", "p", "2", r3));
        // From the first write on: only what came after it.
        let mut watch = store.watch(Some("IPPool"), r1).await.expect("watch");
        assert_eq!(next(&mut watch).await, put("IPPool", "p", "2", r3));
        // ...and then live changes.
        let r4 = store
            .update("IPPool", "p", val("IPPool", "p", "3"), r3)
            .await
            .expect("update");
        assert_eq!(next(&mut watch).await, put("IPPool", "p", "3", r4));
        quiet(&mut watch).await;
    }

    /// A watch from before the history kept gets `Resync` first, then the changes after the
    /// current revision. `compact(rev)` makes the backend drop its history up to `rev`.
    pub async fn watch_after_compaction<F, Fut>(store: Arc<dyn Store>, compact: F)
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let from = store.list("IPPool").await.expect("list").revision;
        let mut rev = store
            .create("IPPool", "p", val("IPPool", "p", "0"))
            .await
            .expect("create");
        for i in 1..10 {
            rev = store
                .update("IPPool", "p", val("IPPool", "p", &i.to_string()), rev)
                .await
                .expect("update");
        }
        compact(rev).await;

        let mut watch = store.watch(Some("IPPool"), from).await.expect("watch");
        assert_eq!(next(&mut watch).await, WatchEvent::Resync);
        // The caller lists again and carries on; the watch goes on with what comes next.
        let listing = store.list("IPPool").await.expect("relist");
        assert_eq!(listing.items.len(), 1);
        let r = store
            .update(
                "IPPool",
                "p",
                val("IPPool", "p", "after"),
                listing.items[0].revision,
            )
            .await
            .expect("update");
        assert_eq!(next(&mut watch).await, put("IPPool", "p", "after", r));
        quiet(&mut watch).await;
    }

    fn counter(value: &[u8]) -> u64 {
        v_of(value).parse().expect("counter value is a number")
    }

    /// The child's part of [`cas_across_processes`]: create the counter unless another did,
    /// then increment it by read-modify-write with compare-and-swap, retrying on conflict.
    pub async fn counter_worker(store: Arc<dyn Store>, increments: u64) {
        match store.create("Counter", "c", val("Counter", "c", "0")).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("create failed: {e}"),
        }
        let mut conflicts = 0u64;
        for _ in 0..increments {
            loop {
                let kv = store
                    .get("Counter", "c")
                    .await
                    .expect("get")
                    .expect("counter");
                let n = counter(&kv.value);
                match store
                    .update(
                        "Counter",
                        "c",
                        val("Counter", "c", &(n + 1).to_string()),
                        kv.revision,
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.is_conflict() => conflicts += 1,
                    Err(e) => panic!("update failed: {e}"),
                }
            }
        }
        println!("worker {} done, {conflicts} conflicts", std::process::id());
    }

    /// [`PROCESSES`] OS processes increment one counter with compare-and-swap: no update is lost
    /// and the history holds every value once, in order.
    pub async fn cas_across_processes(store: Arc<dyn Store>, spec: &str, test: &str) {
        let from = store.list("Counter").await.expect("list").revision;
        let exe = std::env::current_exe().expect("current_exe");
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                tokio::process::Command::new(&exe)
                    .args([test, "--exact", "--nocapture", "--test-threads=1"])
                    .env(ROLE_ENV, "counter")
                    .env(SPEC_ENV, spec)
                    .env(ARG_ENV, INCREMENTS.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn worker")
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().await.expect("wait worker");
            assert!(
                out.status.success(),
                "worker {i} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let total = PROCESSES * INCREMENTS;
        let kv = store
            .get("Counter", "c")
            .await
            .expect("get")
            .expect("counter");
        assert_eq!(counter(&kv.value), total, "lost updates");

        // Every successful write is in the history once, in order: values 0, 1, ..., total.
        let mut watch = store.watch(Some("Counter"), from).await.expect("watch");
        let mut last = from;
        for value in 0..=total {
            match next(&mut watch).await {
                WatchEvent::Put(kv) => {
                    assert!(kv.revision > last, "revisions go up");
                    last = kv.revision;
                    assert_eq!(counter(&kv.value), value);
                }
                other => panic!("unexpected {other:?} at value {value}"),
            }
        }
        assert_eq!(last, kv.revision);
    }
}

/// In a child process started by [`cases::cas_across_processes`]: does the worker's part and
/// returns `true`.
async fn run_as_worker() -> bool {
    if std::env::var(ROLE_ENV).as_deref() != Ok("counter") {
        return false;
    }
    let spec = std::env::var(SPEC_ENV).expect("spec env");
    let increments = std::env::var(ARG_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("increments env");
    let store = brindle_agent::datastore::open(&spec)
        .await
        .expect("worker opens the datastore");
    cases::counter_worker(store, increments).await;
    true
}

/// Instantiates the cases for a backend. `$open(test, dedicated)` gives `Option<Backend>`
/// (`None`: skipped); `dedicated` asks for an instance of its own (compaction, small history).
macro_rules! conformance {
    ($backend:ident, $open:path, history = $history:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn crud() {
                let Some(b) = $open("crud", false).await else {
                    return;
                };
                cases::crud(b.store()).await;
            }

            #[tokio::test]
            async fn compare_and_swap() {
                let Some(b) = $open("cas", false).await else {
                    return;
                };
                cases::compare_and_swap(b.store()).await;
            }

            #[tokio::test]
            async fn list_consistency() {
                let Some(b) = $open("list", false).await else {
                    return;
                };
                cases::list_consistency(b.store(), $history).await;
            }

            #[tokio::test]
            async fn watch_in_order() {
                let Some(b) = $open("watch", false).await else {
                    return;
                };
                cases::watch_in_order(b.store()).await;
            }

            #[tokio::test]
            async fn watch_replays_history() {
                if !$history {
                    return;
                }
                let Some(b) = $open("history", false).await else {
                    return;
                };
                cases::watch_replays_history(b.store()).await;
            }

            #[tokio::test]
            async fn watch_after_compaction() {
                let Some(b) = $open("compaction", true).await else {
                    return;
                };
                let store = b.store();
                cases::watch_after_compaction(store, |rev| b.compact(rev)).await;
            }

            #[tokio::test]
            async fn cas_across_processes() {
                if run_as_worker().await {
                    return;
                }
                let Some(b) = $open("processes", false).await else {
                    return;
                };
                let Some(spec) = b.spec() else { return };
                let test = concat!(stringify!($backend), "::cas_across_processes");
                cases::cas_across_processes(b.store(), &spec, test).await;
            }
        }
    };
}

conformance!(mem, Backend::mem, history = false);
conformance!(embedded, Backend::embedded, history = true);
conformance!(etcd, Backend::etcd, history = true);
// Not a real API server: a fake of its semantics (see fake_apiserver.rs).
conformance!(
    kubernetes_fake_apiserver,
    Backend::kubernetes_fake,
    history = true
);

/// etcd only: a watch survives the server's restart without losing or repeating an event, and
/// calls and watches move past an endpoint that does not answer.
#[tokio::test]
async fn etcd_watch_resumes_after_restart_and_fails_over() {
    let Some(mut server) = fixture::EtcdServer::start_or_skip("restart") else {
        return;
    };
    // The first endpoint refuses connections: every call starts by failing over.
    let spec = format!(
        "etcd://127.0.0.1:{},127.0.0.1:{}?prefix=/restart",
        fixture::free_port(),
        server.port()
    );
    let store = brindle_agent::datastore::open(&spec).await.expect("open");
    let from = store.list("IPPool").await.expect("list").revision;
    let mut watch = store.watch(Some("IPPool"), from).await.expect("watch");
    let r1 = store
        .create("IPPool", "p", val("IPPool", "p", "1"))
        .await
        .expect("create");
    assert_eq!(next(&mut watch).await, put("IPPool", "p", "1", r1));

    server.restart();
    // Written while the watch is reconnecting (it backs off): read from the history.
    let r2 = store
        .update("IPPool", "p", val("IPPool", "p", "2"), r1)
        .await
        .expect("update after restart");
    let r3 = store
        .update("IPPool", "p", val("IPPool", "p", "3"), r2)
        .await
        .expect("update");
    assert_eq!(next(&mut watch).await, put("IPPool", "p", "2", r2));
    assert_eq!(next(&mut watch).await, put("IPPool", "p", "3", r3));
    quiet(&mut watch).await;
}

/// Kubernetes only, against the fake of the API server: an update that changes nothing keeps
/// its revision and sends no watch event (the API server skips no-op writes), unlike the other
/// backends, where every update is a write. A stale revision still loses. docs/datastore.md
/// says so.
#[tokio::test]
async fn kubernetes_fake_apiserver_noop_update_keeps_the_revision() {
    let Some(b) = Backend::kubernetes_fake("noop", false).await else {
        return;
    };
    let store = b.store();
    let r1 = store
        .create("IPPool", "p", val("IPPool", "p", "1"))
        .await
        .expect("create");
    let mut watch = store.watch(Some("IPPool"), r1).await.expect("watch");
    let same = store
        .update("IPPool", "p", val("IPPool", "p", "1"), r1)
        .await
        .expect("no-op update");
    assert_eq!(same, r1, "nothing written");
    let r2 = store
        .update("IPPool", "p", val("IPPool", "p", "2"), r1)
        .await
        .expect("real update");
    assert!(r2 > r1);
    assert_eq!(next(&mut watch).await, put("IPPool", "p", "2", r2));
    quiet(&mut watch).await;
    let err = store
        .update("IPPool", "p", val("IPPool", "p", "2"), r1)
        .await
        .expect_err("stale, even when it would change nothing");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
}

/// Kubernetes only, against the fake of the API server: a watch of every kind runs one stream
/// per kind; when the history is gone each stream hears 410, and the caller still gets one
/// `Resync`, then the changes of every kind after it.
#[tokio::test]
async fn kubernetes_fake_apiserver_watch_of_every_kind_resyncs_once() {
    let Some(b) = Backend::kubernetes_fake("all-resync", true).await else {
        return;
    };
    let store = b.store();
    let from = store.list("IPPool").await.expect("list").revision;
    let mut rev = store
        .create("IPPool", "p", val("IPPool", "p", "0"))
        .await
        .expect("create");
    for i in 1..5 {
        rev = store
            .update("IPPool", "p", val("IPPool", "p", &i.to_string()), rev)
            .await
            .expect("update");
    }
    store
        .create("Node", "n", val("Node", "n", "0"))
        .await
        .expect("create");
    b.compact(rev).await;

    let mut watch = store.watch(None, from).await.expect("watch");
    assert_eq!(next(&mut watch).await, WatchEvent::Resync);
    let listing = store.list("Node").await.expect("relist");
    let node = &listing.items[0];
    let r1 = store
        .update("Node", "n", val("Node", "n", "1"), node.revision)
        .await
        .expect("update node");
    let r2 = store
        .create("BGPPeer", "peer", val("BGPPeer", "peer", "x"))
        .await
        .expect("create peer");
    assert_eq!(next(&mut watch).await, put("Node", "n", "1", r1));
    assert_eq!(next(&mut watch).await, put("BGPPeer", "peer", "x", r2));
    quiet(&mut watch).await;
}
