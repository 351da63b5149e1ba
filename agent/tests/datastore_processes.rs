//! Several OS processes sharing one embedded datastore file.
//!
//! Each test re-executes this test binary (`current_exe()`, the test's own name, `--exact`) with
//! [`ROLE_ENV`] set; the child runs the same test function, sees the variable and acts as a
//! worker instead of a parent. No extra binaries are needed.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brindle_agent::datastore::embedded::EmbeddedStore;
use brindle_ipam::store::{Store, StoreError, Watch, WatchEvent};

/// Tells a child which worker role to play.
const ROLE_ENV: &str = "BRINDLE_DS_TEST_ROLE";
/// The database file the child opens.
const PATH_ENV: &str = "BRINDLE_DS_TEST_PATH";
/// A role-specific number (increments, or the revision to watch from).
const ARG_ENV: &str = "BRINDLE_DS_TEST_ARG";
/// When the workers start, in milliseconds since the epoch, so that they all contend at once.
const START_ENV: &str = "BRINDLE_DS_TEST_START";

const PROCESSES: u64 = 6;
const INCREMENTS: u64 = 200;

/// A database file under the temp dir, removed (with its -wal and -shm files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(test: &str) -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        TempDb(std::env::temp_dir().join(format!(
            "brindle-processes-{test}-{}-{nanos}-{}.db",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn env_arg() -> u64 {
    std::env::var(ARG_ENV)
        .expect("ARG env")
        .parse()
        .expect("numeric ARG")
}

fn epoch_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Sleeps until the start time the parent gave.
async fn wait_for_start() {
    let start: u64 = std::env::var(START_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let wait = start.saturating_sub(epoch_millis());
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Runs `test` in a child process as `role`; the child starts work at `start`
/// (milliseconds since the epoch; 0 = at once).
fn spawn_worker(
    test: &str,
    role: &str,
    path: &Path,
    arg: u64,
    start: u64,
) -> tokio::process::Child {
    let exe = std::env::current_exe().expect("current_exe");
    tokio::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(PATH_ENV, path)
        .env(ARG_ENV, arg.to_string())
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

fn assert_worker_ok(which: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{which} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("watch event within 10 s")
        .expect("watch open")
}

fn parse_counter(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("counter value is a number")
}

/// Each worker creates the counter unless another one did first, then increments it
/// `increments` times by read-modify-write with compare-and-swap, retrying on conflict.
async fn counter_worker(store: &EmbeddedStore, increments: u64) {
    match store.create("Counter", "c", b"0".to_vec()).await {
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
                .expect("counter exists");
            let n = parse_counter(&kv.value);
            match store
                .update(
                    "Counter",
                    "c",
                    (n + 1).to_string().into_bytes(),
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

#[tokio::test]
async fn cas_counter_across_processes() {
    const TEST: &str = "cas_counter_across_processes";
    if std::env::var(ROLE_ENV).as_deref() == Ok("counter") {
        // All workers open the new file at once: schema creation must be safe too.
        wait_for_start().await;
        let store = EmbeddedStore::open(std::env::var(PATH_ENV).expect("PATH env"))
            .await
            .expect("worker open");
        counter_worker(&store, env_arg()).await;
        return;
    }

    // The workers create the file, the schema and the counter themselves.
    let db = TempDb::new("counter");

    // Start all workers at the same moment so that they really contend.
    let start = epoch_millis() + 300;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_worker(TEST, "counter", &db.0, INCREMENTS, start))
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().await.expect("wait worker");
        assert_worker_ok(&format!("counter worker {i}"), &out);
        // The worker's report (its conflict count), shown with --nocapture.
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }

    let store = EmbeddedStore::open(&db.0).await.expect("open");
    let total = PROCESSES * INCREMENTS;
    let kv = store
        .get("Counter", "c")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(parse_counter(&kv.value), total, "lost updates");
    // One revision per successful write: the create and every increment; failed CAS attempts
    // bump nothing.
    assert_eq!(kv.revision, 1 + total);
    assert_eq!(
        store.list("Counter").await.expect("list").revision,
        1 + total
    );

    // The history holds every write, in revision order, with no gaps: revision r wrote r - 1.
    let mut watch = store.watch(Some("Counter"), 0).await.expect("watch");
    for rev in 1..=1 + total {
        match next(&mut watch).await {
            WatchEvent::Put(kv) => {
                assert_eq!(kv.revision, rev);
                assert_eq!(parse_counter(&kv.value), rev - 1);
            }
            other => panic!("unexpected {other:?} at revision {rev}"),
        }
    }
}

/// Expects `count` creates followed by the delete of the last one, all of `kind`, named
/// `{prefix}-{i}`, in order.
async fn expect_writes(watch: &mut Watch, kind: &str, prefix: &str, count: usize) {
    let mut last = 0;
    for i in 0..count {
        match next(watch).await {
            WatchEvent::Put(kv) => {
                assert_eq!(
                    (kv.kind.as_str(), kv.name.clone()),
                    (kind, format!("{prefix}-{i}"))
                );
                assert!(kv.revision > last, "revisions go up");
                last = kv.revision;
            }
            other => panic!("expected put of {prefix}-{i}, got {other:?}"),
        }
    }
    match next(watch).await {
        WatchEvent::Deleted {
            kind: k,
            name,
            revision,
        } => {
            assert_eq!(
                (k.as_str(), name),
                (kind, format!("{prefix}-{}", count - 1))
            );
            assert!(revision > last);
        }
        other => panic!("expected delete, got {other:?}"),
    }
}

async fn write_some(store: &EmbeddedStore, kind: &str, prefix: &str, count: usize) {
    for i in 0..count {
        store
            .create(kind, &format!("{prefix}-{i}"), b"{}".to_vec())
            .await
            .expect("create");
    }
    store
        .delete(kind, &format!("{prefix}-{}", count - 1), None)
        .await
        .expect("delete");
}

#[tokio::test]
async fn watch_sees_other_process_writes() {
    const TEST: &str = "watch_sees_other_process_writes";
    const WRITES: usize = 5;
    if std::env::var(ROLE_ENV).as_deref() == Ok("watcher") {
        // The child watches the parent's Nodes and writes WorkloadEndpoints.
        let store = EmbeddedStore::open(std::env::var(PATH_ENV).expect("PATH env"))
            .await
            .expect("worker open");
        wait_for_start().await;
        let mut watch = store.watch(Some("Node"), env_arg()).await.expect("watch");
        write_some(&store, "WorkloadEndpoint", "child", WRITES).await;
        expect_writes(&mut watch, "Node", "parent", WRITES).await;
        return;
    }

    let db = TempDb::new("watch");
    let store = EmbeddedStore::open(&db.0).await.expect("open");
    let from = store.list("Node").await.expect("list").revision;
    let mut watch = store
        .watch(Some("WorkloadEndpoint"), from)
        .await
        .expect("watch");
    let child = spawn_worker(TEST, "watcher", &db.0, from, 0);
    write_some(&store, "Node", "parent", WRITES).await;
    expect_writes(&mut watch, "WorkloadEndpoint", "child", WRITES).await;
    let out = child.wait_with_output().await.expect("wait watcher");
    assert_worker_ok("watcher", &out);
}
