//! The `embedded` datastore: SQLite in one file, shared by several processes on one host
//! (`brindle-node`, `brindlectl`, the CNI plugin's agent calls), with the semantics of
//! [`Store`] (BRIEF §3).
//!
//! # Schema
//!
//! ```text
//! meta    (key PRIMARY KEY, value)          schema_version, revision, compacted
//! records (kind, name PRIMARY KEY, value, rev)   the current state; rev = last write's revision
//! events  (rev PRIMARY KEY, kind, name, value)   the watch history; value NULL = deleted
//! ```
//!
//! # Locking
//!
//! The database runs in WAL mode: readers never block the writer and always see one committed
//! snapshot. Every write is a `BEGIN IMMEDIATE` transaction, which takes SQLite's single write
//! lock up front, so writers in all processes serialize; a writer that finds the lock held waits
//! in SQLite's busy handler (`busy_timeout`, 10 s by default) instead of failing. Because the
//! compare-and-swap check (read the row's revision) and the write happen inside that one
//! transaction, no other writer can slip in between. Reads (`get`, `list`, watch polls) are
//! deferred transactions on a second connection, so a `list` sees its items and its revision
//! from the same snapshot.
//!
//! # Revisions
//!
//! `meta.revision` is the one counter of the whole store. Each write bumps it inside its
//! transaction, stamps the row with it and appends one event with it. Writes commit in revision
//! order (they hold the write lock), so the events table has no gaps and a reader never sees
//! revision N+1 without N.
//!
//! # Watch and compaction
//!
//! One tokio task per watch polls the events table by its primary key (`embedded/watch.rs` has
//! the task diagram) and forwards what it finds in order, filtered by kind. Writers keep the last
//! `history` events: every `history / 10` revisions (at most 1,000) the writer deletes older
//! events and records the highest deleted revision as `meta.compacted`. A watch whose position
//! is older than that sends [`WatchEvent::Resync`](brindle_ipam::store::WatchEvent::Resync)
//! and continues from the current revision.
//!
//! All SQLite calls run on tokio's blocking pool; each process has its own two connections.

#[cfg(test)]
mod tests;
mod watch;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use brindle_ipam::store::{KvPair, Listing, Store, StoreError, Watch};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tracing::{debug, info};

use super::DatastoreError;

/// The schema this build writes. Opening a file with a newer version fails.
pub const SCHEMA_VERSION: i64 = 1;

const META_SCHEMA_VERSION: &str = "schema_version";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Tuning of an [`EmbeddedStore`]; the defaults suit production.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// How many events the watch history keeps (at least; compaction runs every
    /// `history / 10` writes, at most every 1,000).
    pub history: u64,
    /// How often a watch looks for new events.
    pub poll_interval: Duration,
    /// How long a write waits for another process holding the write lock.
    pub busy_timeout: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            history: 10_000,
            poll_interval: Duration::from_millis(50),
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A [`Store`] in one SQLite file. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    config: EmbeddedConfig,
    /// Writes only (`BEGIN IMMEDIATE`).
    writer: Mutex<Connection>,
    /// Gets, lists and watch polls, so that they never queue behind a write waiting for the lock.
    reader: Mutex<Connection>,
}

impl EmbeddedStore {
    /// Opens (creating when missing) the store at `path` with the default configuration.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, DatastoreError> {
        Self::open_with(path, EmbeddedConfig::default()).await
    }

    /// Opens (creating when missing) the store at `path`: the parent directories, the file
    /// (mode 0600) and the schema.
    pub async fn open_with(
        path: impl Into<PathBuf>,
        config: EmbeddedConfig,
    ) -> Result<Self, DatastoreError> {
        let path = path.into();
        let task_path = path.clone();
        let shared = tokio::task::spawn_blocking(move || Shared::open(task_path, config))
            .await
            .map_err(|e| DatastoreError::Embedded {
                path,
                reason: format!("open task failed: {e}"),
            })??;
        info!(path = %shared.path.display(), history = shared.config.history, "embedded datastore open");
        Ok(EmbeddedStore {
            shared: Arc::new(shared),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `f` on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded datastore task failed: {e}")))?
    }
}

fn open_error(
    path: &Path,
    context: &'static str,
) -> impl FnOnce(rusqlite::Error) -> DatastoreError {
    let path = path.to_path_buf();
    move |source| DatastoreError::Sqlite {
        path,
        context,
        source,
    }
}

impl Shared {
    fn open(path: PathBuf, config: EmbeddedConfig) -> Result<Self, DatastoreError> {
        let io_error = |source| DatastoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        // Create the file ourselves so that it (and the -wal/-shm files SQLite derives from it)
        // are readable by their owner only; an existing file is left as it is.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error)?;

        let mut writer = open_connection(&path, &config)?;
        init_schema(&path, &mut writer)?;
        let reader = open_connection(&path, &config)?;
        Ok(Shared {
            path,
            config,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    fn unavailable(&self, context: &str, e: rusqlite::Error) -> StoreError {
        StoreError::Unavailable(format!(
            "embedded datastore {}: {context}: {e}",
            self.path.display()
        ))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction; commits when it returns `Ok`.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.unavailable("begin write", e))?;
        // On error the transaction is dropped, which rolls it back.
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.unavailable("commit", e))?;
        Ok(out)
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.reader);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.unavailable("begin read", e))?;
        let out = f(&tx)?;
        tx.finish().map_err(|e| self.unavailable("end read", e))?;
        Ok(out)
    }

    /// [`Self::read`] on the calling thread, if the reader connection is free right now; `None`
    /// when another read holds it. A point read in WAL mode neither waits for writers nor
    /// touches the disk beyond the page cache, so callers on the async runtime use this to
    /// skip the blocking pool's thread hand-off (the bulk of a get's latency).
    fn try_read_now<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let mut conn = match self.reader.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Deferred) {
            Ok(tx) => tx,
            Err(e) => return Some(Err(self.unavailable("begin read", e))),
        };
        Some(f(&tx).and_then(|out| {
            tx.finish()
                .map_err(|e| self.unavailable("end read", e))
                .map(|()| out)
        }))
    }

    /// One record, within a read transaction.
    fn get_in(
        &self,
        tx: &Transaction<'_>,
        kind: &str,
        name: &str,
    ) -> Result<Option<KvPair>, StoreError> {
        let row: Option<(Vec<u8>, i64)> = tx
            .prepare_cached("SELECT value, rev FROM records WHERE kind = ?1 AND name = ?2")
            .and_then(|mut st| {
                st.query_row([kind, name], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.unavailable("get", e))?;
        row.map(|(value, rev)| {
            Ok(KvPair {
                revision: self.revision_from_db(rev, "a record")?,
                kind: kind.to_string(),
                name: name.to_string(),
                value,
            })
        })
        .transpose()
    }

    fn meta(&self, tx: &Transaction<'_>, key: &str) -> Result<u64, StoreError> {
        let value: i64 = tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |row| row.get(0)))
            .map_err(|e| self.unavailable("read meta", e))?;
        self.revision_from_db(value, key)
    }

    fn revision_from_db(&self, value: i64, what: &str) -> Result<u64, StoreError> {
        u64::try_from(value).map_err(|_| {
            StoreError::Unavailable(format!(
                "embedded datastore {}: {what} holds a negative revision {value}",
                self.path.display()
            ))
        })
    }

    /// The revision of a record, if it exists.
    fn record_revision(
        &self,
        tx: &Transaction<'_>,
        kind: &str,
        name: &str,
    ) -> Result<Option<u64>, StoreError> {
        let rev: Option<i64> = tx
            .prepare_cached("SELECT rev FROM records WHERE kind = ?1 AND name = ?2")
            .and_then(|mut st| st.query_row([kind, name], |row| row.get(0)).optional())
            .map_err(|e| self.unavailable("read record", e))?;
        rev.map(|r| self.revision_from_db(r, "a record"))
            .transpose()
    }

    /// Checks a compare-and-swap precondition; `Ok` when the record exists at `expected`.
    fn check_expected(
        &self,
        tx: &Transaction<'_>,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(current) = self.record_revision(tx, kind, name)? else {
            return Err(StoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        };
        match expected {
            Some(expected) if expected != current => Err(StoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected,
            }),
            _ => Ok(()),
        }
    }

    /// Bumps the store revision, records the event and compacts when due. Returns the revision.
    fn commit_event(
        &self,
        tx: &Transaction<'_>,
        kind: &str,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<i64, StoreError> {
        let rev: i64 = tx
            .prepare_cached("UPDATE meta SET value = value + 1 WHERE key = ?1 RETURNING value")
            .and_then(|mut st| st.query_row([META_REVISION], |row| row.get(0)))
            .map_err(|e| self.unavailable("bump revision", e))?;
        tx.prepare_cached("INSERT INTO events (rev, kind, name, value) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut st| st.execute(params![rev, kind, name, value]))
            .map_err(|e| self.unavailable("append event", e))?;
        self.maybe_compact(tx, rev)?;
        Ok(rev)
    }

    /// Every `interval` revisions, drops events older than the last `history`.
    fn maybe_compact(&self, tx: &Transaction<'_>, rev: i64) -> Result<(), StoreError> {
        let history = i64::try_from(self.config.history).unwrap_or(i64::MAX);
        let interval = (history / 10).clamp(1, 1000);
        let cutoff = rev.saturating_sub(history);
        if rev % interval != 0 || cutoff <= 0 {
            return Ok(());
        }
        let removed = tx
            .prepare_cached("DELETE FROM events WHERE rev <= ?1")
            .and_then(|mut st| st.execute([cutoff]))
            .map_err(|e| self.unavailable("compact events", e))?;
        tx.prepare_cached("UPDATE meta SET value = max(value, ?2) WHERE key = ?1")
            .and_then(|mut st| st.execute(params![META_COMPACTED, cutoff]))
            .map_err(|e| self.unavailable("record compaction", e))?;
        debug!(
            revision = rev,
            compacted = cutoff,
            removed,
            "compacted watch history"
        );
        Ok(())
    }

    fn to_u64(&self, rev: i64) -> Result<u64, StoreError> {
        self.revision_from_db(rev, "the revision counter")
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock rolled its transaction back; the connection is still good.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_connection(path: &Path, config: &EmbeddedConfig) -> Result<Connection, DatastoreError> {
    let conn = Connection::open(path).map_err(open_error(path, "open"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(open_error(path, "set busy timeout"))?;
    // Switching to WAL needs a moment of exclusive access; it is persistent, so only the first
    // open of a new file really switches. Retry in case another process is doing the same.
    let deadline = std::time::Instant::now() + config.busy_timeout;
    loop {
        let mode = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
            Ok(mode) => {
                return Err(DatastoreError::Embedded {
                    path: path.to_path_buf(),
                    reason: format!("cannot enable WAL journal mode (got {mode:?})"),
                })
            }
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(open_error(path, "enable WAL")(e)),
        }
    }
    // NORMAL (WAL): a committed write survives any crash of the processes; the WAL is fsynced at
    // checkpoints, so a power loss or kernel crash may roll the file back to an earlier consistent
    // state. Every process that can open this file runs on this host and every pod it allocated
    // for dies with it, so what a rollback loses are allocations of dead pods (re-added after the
    // reboot) and releases (leaks that `brindlectl ipam check` finds and `ipam release` frees, as
    // does CNI GC): never a duplicate address. It saves one fsync per write, most of an
    // allocation's latency (docs/decisions.md).
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error(path, "set synchronous"))?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Creates the schema when missing; refuses a file written by a newer schema.
fn init_schema(path: &Path, conn: &mut Connection) -> Result<(), DatastoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error(path, "begin schema transaction"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    )
    .map_err(open_error(path, "create meta table"))?;
    let found: Option<i64> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [META_SCHEMA_VERSION],
            |row| row.get(0),
        )
        .optional()
        .map_err(open_error(path, "read schema version"))?;
    match found {
        None | Some(SCHEMA_VERSION) => {}
        // Later versions migrate older schemas here.
        Some(found) => {
            return Err(DatastoreError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            })
        }
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS records (
             kind  TEXT NOT NULL,
             name  TEXT NOT NULL,
             value BLOB NOT NULL,
             rev   INTEGER NOT NULL,
             PRIMARY KEY (kind, name)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS events (
             rev   INTEGER PRIMARY KEY,
             kind  TEXT NOT NULL,
             name  TEXT NOT NULL,
             value BLOB
         );",
    )
    .map_err(open_error(path, "create tables"))?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2), (?3, 0), (?4, 0)",
        params![
            META_SCHEMA_VERSION,
            SCHEMA_VERSION,
            META_REVISION,
            META_COMPACTED
        ],
    )
    .map_err(open_error(path, "initialize meta"))?;
    tx.commit().map_err(open_error(path, "commit schema"))?;
    if found.is_none() {
        info!(path = %path.display(), schema_version = SCHEMA_VERSION, "created embedded datastore schema");
    }
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        if let Some(found) = self
            .shared
            .try_read_now(|tx| self.shared.get_in(tx, kind, name))
        {
            return found;
        }
        let (kind, name) = (kind.to_string(), name.to_string());
        self.blocking(move |db| db.read(|tx| db.get_in(tx, &kind, &name)))
            .await
    }

    async fn list(&self, kind: &str) -> Result<Listing, StoreError> {
        let kind = kind.to_string();
        self.blocking(move |db| {
            db.read(|tx| {
                let mut st = tx
                    .prepare_cached(
                        "SELECT name, value, rev FROM records WHERE kind = ?1 ORDER BY name",
                    )
                    .map_err(|e| db.unavailable("prepare list", e))?;
                let rows = st
                    .query_map([&kind], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    })
                    .map_err(|e| db.unavailable("list", e))?;
                let mut items = Vec::new();
                for row in rows {
                    let (name, value, rev) = row.map_err(|e| db.unavailable("list", e))?;
                    items.push(KvPair {
                        kind: kind.clone(),
                        name,
                        value,
                        revision: db.revision_from_db(rev, "a record")?,
                    });
                }
                let revision = db.meta(tx, META_REVISION)?;
                Ok(Listing { items, revision })
            })
        })
        .await
    }

    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.blocking(move |db| {
            db.write(|tx| {
                if db.record_revision(tx, &kind, &name)?.is_some() {
                    return Err(StoreError::AlreadyExists { kind, name });
                }
                let rev = db.commit_event(tx, &kind, &name, Some(&value))?;
                tx.prepare_cached(
                    "INSERT INTO records (kind, name, value, rev) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut st| st.execute(params![kind, name, value, rev]))
                .map_err(|e| db.unavailable("create", e))?;
                db.to_u64(rev)
            })
        })
        .await
    }

    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.blocking(move |db| {
            db.write(|tx| {
                db.check_expected(tx, &kind, &name, Some(expected))?;
                let rev = db.commit_event(tx, &kind, &name, Some(&value))?;
                tx.prepare_cached(
                    "UPDATE records SET value = ?3, rev = ?4 WHERE kind = ?1 AND name = ?2",
                )
                .and_then(|mut st| st.execute(params![kind, name, value, rev]))
                .map_err(|e| db.unavailable("update", e))?;
                db.to_u64(rev)
            })
        })
        .await
    }

    async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.blocking(move |db| {
            db.write(|tx| {
                db.check_expected(tx, &kind, &name, expected)?;
                db.commit_event(tx, &kind, &name, None)?;
                tx.prepare_cached("DELETE FROM records WHERE kind = ?1 AND name = ?2")
                    .and_then(|mut st| st.execute([&kind, &name]))
                    .map_err(|e| db.unavailable("delete", e))?;
                Ok(())
            })
        })
        .await
    }

    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError> {
        Ok(watch::Watcher::spawn(
            Arc::clone(&self.shared),
            kind.map(str::to_string),
            after,
        ))
    }
}
