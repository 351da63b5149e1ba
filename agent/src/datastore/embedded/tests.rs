use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use brindle_ipam::store::WatchEvent;

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
            "brindle-embedded-{test}-{}-{nanos}-{}.db",
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

fn test_config(history: u64) -> EmbeddedConfig {
    EmbeddedConfig {
        history,
        poll_interval: Duration::from_millis(10),
        ..EmbeddedConfig::default()
    }
}

async fn open(db: &TempDb) -> EmbeddedStore {
    EmbeddedStore::open_with(&db.0, test_config(10_000))
        .await
        .expect("open")
}

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .expect("watch event within 5 s")
        .expect("watch open")
}

fn put(kind: &str, name: &str, value: &[u8], revision: u64) -> WatchEvent {
    WatchEvent::Put(KvPair {
        kind: kind.to_string(),
        name: name.to_string(),
        value: value.to_vec(),
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

#[tokio::test]
async fn crud_and_list_revision() {
    let db = TempDb::new("crud");
    let store = open(&db).await;
    assert_eq!(store.list("IPPool").await.expect("list").revision, 0);
    assert_eq!(store.get("IPPool", "a").await.expect("get"), None);

    assert_eq!(
        store.create("IPPool", "b", b"B".to_vec()).await.expect("b"),
        1
    );
    assert_eq!(
        store.create("IPPool", "a", b"A".to_vec()).await.expect("a"),
        2
    );
    assert_eq!(
        store.create("Node", "n", b"N".to_vec()).await.expect("n"),
        3
    );
    let err = store
        .create("IPPool", "a", b"again".to_vec())
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");

    let got = store
        .get("IPPool", "a")
        .await
        .expect("get")
        .expect("a exists");
    assert_eq!((got.value.as_slice(), got.revision), (&b"A"[..], 2));

    let listing = store.list("IPPool").await.expect("list");
    let names: Vec<_> = listing.items.iter().map(|kv| kv.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // The store's revision, not the kind's: the Node write counts too.
    assert_eq!(listing.revision, 3);

    assert_eq!(
        store
            .update("IPPool", "a", b"A2".to_vec(), 2)
            .await
            .expect("update"),
        4
    );
    let got = store
        .get("IPPool", "a")
        .await
        .expect("get")
        .expect("a exists");
    assert_eq!((got.value.as_slice(), got.revision), (&b"A2"[..], 4));

    store.delete("IPPool", "a", None).await.expect("delete");
    assert_eq!(store.get("IPPool", "a").await.expect("get"), None);
    assert_eq!(store.list("IPPool").await.expect("list").revision, 5);

    let err = store
        .update("IPPool", "a", b"x".to_vec(), 4)
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.delete("IPPool", "a", None).await.expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn compare_and_swap_conflicts() {
    let db = TempDb::new("cas");
    let store = open(&db).await;
    let rev = store
        .create("IPAMBlock", "blk", b"v1".to_vec())
        .await
        .expect("create");
    let rev2 = store
        .update("IPAMBlock", "blk", b"v2".to_vec(), rev)
        .await
        .expect("first writer wins");

    let err = store
        .update("IPAMBlock", "blk", b"stale".to_vec(), rev)
        .await
        .expect_err("stale writer loses");
    assert!(err.is_conflict(), "{err}");
    let got = store
        .get("IPAMBlock", "blk")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((got.value.as_slice(), got.revision), (&b"v2"[..], rev2));
    // A failed write does not bump the revision.
    assert_eq!(store.list("IPAMBlock").await.expect("list").revision, rev2);

    let err = store
        .delete("IPAMBlock", "blk", Some(rev))
        .await
        .expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { expected, .. } if expected == rev));
    // A revision that cannot exist in SQLite is a conflict too, not an error.
    let err = store
        .update("IPAMBlock", "blk", b"x".to_vec(), u64::MAX)
        .await
        .expect_err("huge revision");
    assert!(err.is_conflict(), "{err}");

    store
        .delete("IPAMBlock", "blk", Some(rev2))
        .await
        .expect("delete at current revision");
    assert_eq!(store.get("IPAMBlock", "blk").await.expect("get"), None);
}

#[tokio::test]
async fn watch_from_revision_in_order_filtered_by_kind() {
    let db = TempDb::new("watch");
    let store = open(&db).await;
    store
        .create("IPPool", "before", b"0".to_vec())
        .await
        .expect("create");
    let from = store.list("IPPool").await.expect("list").revision;

    let mut pools = store.watch(Some("IPPool"), from).await.expect("watch");
    let mut all = store.watch(None, from).await.expect("watch");

    let r1 = store
        .create("IPPool", "p", b"1".to_vec())
        .await
        .expect("create");
    let r2 = store
        .create("Node", "n", b"n".to_vec())
        .await
        .expect("create");
    let r3 = store
        .update("IPPool", "p", b"2".to_vec(), r1)
        .await
        .expect("update");
    store.delete("IPPool", "p", Some(r3)).await.expect("delete");
    let r4 = r3 + 1;

    assert_eq!(next(&mut pools).await, put("IPPool", "p", b"1", r1));
    assert_eq!(next(&mut pools).await, put("IPPool", "p", b"2", r3));
    assert_eq!(next(&mut pools).await, deleted("IPPool", "p", r4));

    assert_eq!(next(&mut all).await, put("IPPool", "p", b"1", r1));
    assert_eq!(next(&mut all).await, put("Node", "n", b"n", r2));
    assert_eq!(next(&mut all).await, put("IPPool", "p", b"2", r3));
    assert_eq!(next(&mut all).await, deleted("IPPool", "p", r4));

    // A watch from the past replays the history that is still kept.
    let mut replay = store.watch(Some("Node"), 0).await.expect("watch");
    assert_eq!(next(&mut replay).await, put("Node", "n", b"n", r2));
    let r5 = store
        .update("Node", "n", b"m".to_vec(), r2)
        .await
        .expect("update");
    assert_eq!(next(&mut replay).await, put("Node", "n", b"m", r5));
}

#[tokio::test]
async fn watch_reads_long_histories_in_batches() {
    let db = TempDb::new("batches");
    let store = open(&db).await;
    let count = watch::WATCH_BATCH as u64 * 2 + 3;
    for i in 0..count {
        store
            .create("Node", &format!("n{i}"), b"{}".to_vec())
            .await
            .expect("create");
        // Other kinds between them must not stall or reorder a filtered watch.
        store
            .create("IPPool", &format!("p{i}"), b"{}".to_vec())
            .await
            .expect("create");
    }
    let mut watch = store.watch(Some("Node"), 0).await.expect("watch");
    for i in 0..count {
        assert_eq!(
            next(&mut watch).await,
            put("Node", &format!("n{i}"), b"{}", 2 * i + 1)
        );
    }
}

#[tokio::test]
async fn watch_before_compaction_point_resyncs() {
    let db = TempDb::new("compact");
    // Keep 5 events, compact every write.
    let store = EmbeddedStore::open_with(&db.0, test_config(5))
        .await
        .expect("open");
    let mut rev = store
        .create("Node", "n", b"0".to_vec())
        .await
        .expect("create");
    for i in 1..20u32 {
        rev = store
            .update("Node", "n", i.to_string().into_bytes(), rev)
            .await
            .expect("update");
    }
    assert_eq!(rev, 20);

    // Revision 15 is the compaction point: events after it are still there.
    let mut recent = store.watch(Some("Node"), 15).await.expect("watch");
    assert_eq!(next(&mut recent).await, put("Node", "n", b"15", 16));

    let mut old = store.watch(Some("Node"), 3).await.expect("watch");
    assert_eq!(next(&mut old).await, WatchEvent::Resync);
    // ... and then continues from the current revision, not replaying what it skipped.
    let rev = store
        .update("Node", "n", b"new".to_vec(), rev)
        .await
        .expect("update");
    assert_eq!(next(&mut old).await, put("Node", "n", b"new", rev));
}

#[tokio::test]
async fn watch_stops_when_receiver_dropped() {
    let db = TempDb::new("drop");
    let store = open(&db).await;
    let watch = store.watch(None, 0).await.expect("watch");
    assert!(Arc::strong_count(&store.shared) > 1);
    drop(watch);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store.shared) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch task still running"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn reopen_keeps_data_and_schema() {
    let db = TempDb::new("reopen");
    let rev = {
        let store = open(&db).await;
        store
            .create("Node", "n", b"x".to_vec())
            .await
            .expect("create")
    };
    let store = open(&db).await;
    let got = store
        .get("Node", "n")
        .await
        .expect("get")
        .expect("persisted");
    assert_eq!(got.revision, rev);
    assert_eq!(
        store
            .create("Node", "m", b"y".to_vec())
            .await
            .expect("create"),
        rev + 1
    );
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let db = TempDb::new("schema");
    drop(open(&db).await);
    let conn = Connection::open(&db.0).expect("raw open");
    conn.execute(
        "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
        [],
    )
    .expect("bump schema");
    drop(conn);
    let err = EmbeddedStore::open(&db.0).await.err().expect("refused");
    assert!(
        matches!(err, DatastoreError::SchemaVersion { found: 99, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn bad_data_is_an_error_not_a_panic() {
    let db = TempDb::new("corrupt");
    let store = open(&db).await;
    store
        .create("Node", "n", b"x".to_vec())
        .await
        .expect("create");
    let conn = Connection::open(&db.0).expect("raw open");
    conn.execute("UPDATE records SET rev = -4", [])
        .expect("corrupt rev");
    conn.execute(
        "INSERT INTO records VALUES ('Node', 'm', 'text', 'not a number')",
        [],
    )
    .expect("corrupt row");
    drop(conn);
    let err = store.get("Node", "n").await.expect_err("negative revision");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = store.list("Node").await.expect_err("bad row");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}
