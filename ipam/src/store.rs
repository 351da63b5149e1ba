//! The datastore trait every backend implements, and a typed layer over it.
//!
//! The trait is raw (kind, name, JSON bytes, revision) so that it is object-safe: the agent picks
//! a backend at run time (`embedded:`, later `etcd://` and `kubernetes`) and hands an
//! `Arc<dyn Store>` to IPAM and to its own controllers. [`StoreExt`] adds typed access to
//! [`Object`]s of any [`Resource`] kind on top.
//!
//! Semantics every backend gives (BRIEF §3):
//! - one revision counter for the whole store, bumped by every write;
//! - `create` fails with [`StoreError::AlreadyExists`]; `update` and `delete` with an expected
//!   revision fail with [`StoreError::Conflict`] when the record changed since (compare-and-swap);
//! - `watch` delivers every change after a revision in order, and [`WatchEvent::Resync`] when that
//!   revision is older than the history the backend keeps, after which the caller must list again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};

use crate::model::{Object, Resource};

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvPair {
    pub kind: String,
    pub name: String,
    /// The resource as JSON.
    pub value: Vec<u8>,
    /// The store revision of the record's last write.
    pub revision: u64,
}

/// The records of one kind and the store revision they were read at (watch from there).
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub items: Vec<KvPair>,
    pub revision: u64,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created or updated.
    Put(KvPair),
    /// Deleted at `revision`.
    Deleted {
        kind: String,
        name: String,
        revision: u64,
    },
    /// The history asked for is gone (compacted); list again and watch from the list's revision.
    Resync,
}

/// The receiving end of a watch. Dropping it stops the watch.
pub type Watch = mpsc::Receiver<WatchEvent>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("{kind} {name:?} was modified concurrently (expected revision {expected})")]
    Conflict {
        kind: String,
        name: String,
        expected: u64,
    },
    #[error("{kind} {name:?}: stored value is not valid: {reason}")]
    Corrupt {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True for a compare-and-swap failure that a read-modify-write loop should retry.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }
        )
    }
}

/// A datastore backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError>;
    async fn list(&self, kind: &str) -> Result<Listing, StoreError>;
    /// Creates a record; returns its revision.
    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError>;
    /// Replaces a record if its revision is still `expected`; returns the new revision.
    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError>;
    /// Deletes a record, only if its revision is still `expected` when one is given.
    async fn delete(&self, kind: &str, name: &str, expected: Option<u64>)
        -> Result<(), StoreError>;
    /// Watches every change of `kind` (all kinds when `None`) after revision `after`.
    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError>;
}

/// Decodes a stored record into a typed object, with its revision in `resourceVersion`.
pub fn decode<S: Resource>(kv: &KvPair) -> Result<Object<S>, StoreError> {
    let mut obj: Object<S> =
        serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
            kind: kv.kind.clone(),
            name: kv.name.clone(),
            reason: e.to_string(),
        })?;
    obj.metadata.resource_version = Some(kv.revision.to_string());
    Ok(obj)
}

fn encode<S: Resource>(obj: &Object<S>) -> Vec<u8> {
    let mut obj = obj.clone();
    obj.metadata.resource_version = None;
    // Serializing plain data structures with string keys cannot fail.
    serde_json::to_vec(&obj).unwrap_or_default()
}

fn expected_revision<S: Resource>(obj: &Object<S>) -> Result<u64, StoreError> {
    obj.revision().ok_or_else(|| StoreError::Conflict {
        kind: S::KIND.to_string(),
        name: obj.metadata.name.clone(),
        expected: 0,
    })
}

/// Typed access to any [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    async fn get_obj<S: Resource>(&self, name: &str) -> Result<Option<Object<S>>, StoreError> {
        match self.get(S::KIND, name).await? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// Every object of a kind, and the revision to watch from.
    async fn list_objs<S: Resource>(&self) -> Result<(Vec<Object<S>>, u64), StoreError> {
        let listing = self.list(S::KIND).await?;
        let items = listing.items.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((items, listing.revision))
    }

    /// Creates `obj`; returns it as stored (with its revision).
    async fn create_obj<S: Resource>(&self, obj: &Object<S>) -> Result<Object<S>, StoreError> {
        let rev = self
            .create(S::KIND, &obj.metadata.name, encode(obj))
            .await?;
        let mut out = obj.clone();
        out.metadata.resource_version = Some(rev.to_string());
        Ok(out)
    }

    /// Updates `obj`, which must carry the revision it was read at.
    async fn update_obj<S: Resource>(&self, obj: &Object<S>) -> Result<Object<S>, StoreError> {
        let expected = expected_revision(obj)?;
        let rev = self
            .update(S::KIND, &obj.metadata.name, encode(obj), expected)
            .await?;
        let mut out = obj.clone();
        out.metadata.resource_version = Some(rev.to_string());
        Ok(out)
    }

    /// Deletes `obj` if it is unchanged since it was read.
    async fn delete_obj<S: Resource>(&self, obj: &Object<S>) -> Result<(), StoreError> {
        let expected = expected_revision(obj)?;
        self.delete(S::KIND, &obj.metadata.name, Some(expected))
            .await
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// An in-memory store with the full semantics, for unit tests of code above the store.
/// Real runs use the agent's backends; the conformance suite checks both agree.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Mutex<MemInner>>,
    events: broadcast::Sender<(u64, WatchEvent)>,
}

#[derive(Default)]
struct MemInner {
    revision: u64,
    records: BTreeMap<(String, String), KvPair>,
}

impl Default for MemStore {
    fn default() -> Self {
        let (events, _) = broadcast::channel(4096);
        MemStore {
            inner: Arc::default(),
            events,
        }
    }
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        // A poisoned lock means a test already panicked; keep going with the data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        Ok(self
            .lock()
            .records
            .get(&(kind.to_string(), name.to_string()))
            .cloned())
    }

    async fn list(&self, kind: &str) -> Result<Listing, StoreError> {
        let inner = self.lock();
        Ok(Listing {
            items: inner
                .records
                .values()
                .filter(|kv| kv.kind == kind)
                .cloned()
                .collect(),
            revision: inner.revision,
        })
    }

    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let key = (kind.to_string(), name.to_string());
        if inner.records.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        }
        inner.revision += 1;
        let kv = KvPair {
            kind: kind.to_string(),
            name: name.to_string(),
            value,
            revision: inner.revision,
        };
        inner.records.insert(key, kv.clone());
        let _ = self.events.send((kv.revision, WatchEvent::Put(kv)));
        Ok(inner.revision)
    }

    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let revision = inner.revision + 1;
        let Some(kv) = inner.records.get_mut(&(kind.to_string(), name.to_string())) else {
            return Err(StoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        };
        if kv.revision != expected {
            return Err(StoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected,
            });
        }
        kv.value = value;
        kv.revision = revision;
        let kv = kv.clone();
        inner.revision = revision;
        let _ = self.events.send((revision, WatchEvent::Put(kv)));
        Ok(revision)
    }

    async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let key = (kind.to_string(), name.to_string());
        let Some(kv) = inner.records.get(&key) else {
            return Err(StoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        };
        if let Some(expected) = expected {
            if kv.revision != expected {
                return Err(StoreError::Conflict {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    expected,
                });
            }
        }
        inner.records.remove(&key);
        inner.revision += 1;
        let revision = inner.revision;
        let _ = self.events.send((
            revision,
            WatchEvent::Deleted {
                kind: kind.to_string(),
                name: name.to_string(),
                revision,
            },
        ));
        Ok(())
    }

    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError> {
        // The memory store keeps no history: a watch from the past is told to resync.
        let mut events = self.events.subscribe();
        let current = self.lock().revision;
        let (tx, rx) = mpsc::channel(1024);
        let kind = kind.map(str::to_string);
        tokio::spawn(async move {
            if after < current && tx.send(WatchEvent::Resync).await.is_err() {
                return;
            }
            loop {
                let (rev, ev) = match events.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if tx.send(WatchEvent::Resync).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let ev_kind = match &ev {
                    WatchEvent::Put(kv) => Some(kv.kind.as_str()),
                    WatchEvent::Deleted { kind, .. } => Some(kind.as_str()),
                    WatchEvent::Resync => None,
                };
                if rev <= after.max(current) {
                    continue;
                }
                if kind.is_some() && ev_kind != kind.as_deref() {
                    continue;
                }
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IpPoolSpec;

    fn pool(cidr: &str) -> Object<IpPoolSpec> {
        let spec: IpPoolSpec =
            serde_json::from_value(serde_json::json!({ "cidr": cidr })).expect("spec");
        Object::new("p", spec)
    }

    #[tokio::test]
    async fn typed_update_is_compare_and_swap() {
        let store = MemStore::default();
        let created = store
            .create_obj(&pool("10.0.0.0/16"))
            .await
            .expect("create");
        assert!(store.create_obj(&pool("10.0.0.0/16")).await.is_err());
        let mut a = created.clone();
        a.spec.nat_outgoing = true;
        let a = store.update_obj(&a).await.expect("first writer wins");
        let mut b = created;
        b.spec.disabled = true;
        let err = store.update_obj(&b).await.expect_err("stale writer loses");
        assert!(err.is_conflict());
        let read: Object<IpPoolSpec> = store.get_obj("p").await.expect("get").expect("exists");
        assert!(read.spec.nat_outgoing && !read.spec.disabled);
        assert_eq!(read.revision(), a.revision());
        assert!(store.delete_obj(&b).await.is_err());
        store
            .delete_obj(&a)
            .await
            .expect("delete at current revision");
        assert!(store
            .get_obj::<IpPoolSpec>("p")
            .await
            .expect("get")
            .is_none());
    }

    #[tokio::test]
    async fn watch_sees_changes_in_order() {
        let store = MemStore::default();
        let (_, rev) = store.list_objs::<IpPoolSpec>().await.expect("list");
        let mut watch = store.watch(Some("IPPool"), rev).await.expect("watch");
        let created = store
            .create_obj(&pool("10.0.0.0/16"))
            .await
            .expect("create");
        store.delete_obj(&created).await.expect("delete");
        assert!(matches!(watch.recv().await, Some(WatchEvent::Put(kv)) if kv.name == "p"));
        assert!(
            matches!(watch.recv().await, Some(WatchEvent::Deleted { name, .. }) if name == "p")
        );
    }
}
