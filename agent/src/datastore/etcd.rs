//! The `etcd` datastore: etcd's v3 API through its JSON gateway (`POST /v3/kv/...`,
//! `/v3/watch`), with the semantics of [`Store`] (BRIEF §3).
//!
//! # Why the JSON gateway
//!
//! etcd serves every v3 call as JSON over HTTP/1.1 next to gRPC on the client port. Using it
//! needs nothing beyond hyper, which the agent already has; a gRPC client would add tonic,
//! prost and a protobuf toolchain (or checked-in generated code). The cost: JSON and base64
//! instead of protobuf on the wire, one TCP connection per concurrent call (pooled) and per
//! watch instead of one multiplexed HTTP/2 connection, and no TLS yet. docs/datastore.md
//! records the decision.
//!
//! # Layout and revisions
//!
//! A record is the key `<prefix>/v1/<Kind>/<name>` holding the resource's JSON. A record's
//! revision is the key's `mod_revision`; the store revision is the `header.revision` of the
//! answer (etcd's cluster-wide revision, so writes outside the prefix bump it too).
//!
//! # Compare-and-swap
//!
//! Every conditional write is one transaction, whose `else` branch reads the key so that a
//! failure tells a missing key (NotFound) from a changed one (Conflict) without a second call:
//!
//! | call               | if                                              | then   | else |
//! |--------------------|-------------------------------------------------|--------|------|
//! | create             | `create_revision == 0`                          | put    | get  |
//! | update(expected)   | `mod_revision == expected && version > 0`       | put    | get  |
//! | delete(expected)   | `mod_revision == expected && version > 0`       | delete | get  |
//!
//! `version > 0` keeps `expected == 0` from matching (and creating) a missing key.
//!
//! # Watch
//!
//! See `etcd/watch.rs`: one task per watch streams `/v3/watch` from `after + 1`, resumes after
//! the last revision it delivered when the stream breaks, and sends `Resync` when etcd reports
//! the start revision compacted.

mod client;
#[cfg(test)]
mod tests;
mod watch;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brindle_ipam::store::{KvPair, Listing, Store, StoreError, Watch};
use serde_json::Value;
use tracing::{debug, info};

use self::client::{CallError, Client, Retry};
use self::wire::{DeleteRangeResponse, RangeResponse, TxnResponse};
use super::DatastoreError;

/// The key prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "/brindle";
/// The default client port of etcd.
const DEFAULT_PORT: u16 = 2379;
/// Keys read per range call of a `list`, by default.
const LIST_PAGE: u64 = 1000;

/// Where an [`EtcdStore`] connects and how it behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member; tried in order, starting with the last that answered.
    pub endpoints: Vec<String>,
    /// Keys live under `<prefix>/v1/`. No trailing slash.
    pub prefix: String,
    /// How long connecting to one endpoint may take (then the next is tried); a call's whole
    /// exchange with one endpoint may take twice that. Default 5 s.
    pub timeout: Duration,
    /// Keys read per range call of a `list` (1,000); later pages read at the first page's
    /// revision.
    pub list_page: u64,
}

impl EtcdConfig {
    /// Parses `etcd://host[:port][,host[:port]...][?prefix=/path]`.
    pub fn from_url(url: &str) -> Result<Self, DatastoreError> {
        let invalid = |reason: String| DatastoreError::Etcd {
            spec: url.to_string(),
            reason,
        };
        if url.starts_with("etcd+https://") {
            return Err(invalid(
                "TLS to etcd is not supported yet; use etcd://host:port".to_string(),
            ));
        }
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| invalid("expected etcd://host:port".to_string()))?;
        let (hosts, query) = match rest.split_once('?') {
            Some((hosts, query)) => (hosts, Some(query)),
            None => (rest, None),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            endpoints.push(parse_endpoint(host).map_err(invalid)?);
        }
        let mut prefix = DEFAULT_PREFIX.to_string();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("prefix", value)) => prefix = value.trim_end_matches('/').to_string(),
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {pair:?} (only prefix=/path is known)"
                    )))
                }
            }
        }
        // `prefix=/` (or empty) puts the keys at `/v1/...`.
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err(invalid(format!("prefix {prefix:?} must start with '/'")));
        }
        Ok(EtcdConfig {
            endpoints,
            prefix,
            timeout: Duration::from_secs(5),
            list_page: LIST_PAGE,
        })
    }
}

fn parse_endpoint(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("empty endpoint".to_string());
    }
    if host.contains(['/', '@', ' ']) {
        return Err(format!("invalid endpoint {host:?}"));
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    if host.starts_with('[') != host.contains(']') {
        return Err(format!("invalid endpoint {host:?}"));
    }
    if !has_port {
        return Ok(format!("{host}:{DEFAULT_PORT}"));
    }
    let (name, port) = host
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid endpoint {host:?}"))?;
    if name.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("invalid endpoint {host:?}: bad host or port"));
    }
    if !name.starts_with('[') && name.contains(':') {
        return Err(format!(
            "invalid endpoint {host:?}: write IPv6 addresses as [addr]:port"
        ));
    }
    Ok(host.to_string())
}

/// A [`Store`] in etcd. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    list_page: u64,
    /// `<prefix>/v1/`.
    root: String,
}

impl EtcdStore {
    /// A store talking to `config`'s endpoints; nothing is contacted yet.
    pub fn new(config: EtcdConfig) -> Self {
        EtcdStore {
            shared: Arc::new(Shared {
                client: Client::new(config.endpoints, config.timeout),
                list_page: config.list_page.max(1),
                root: format!("{}/v1/", config.prefix),
            }),
        }
    }

    /// A store at `config`, after checking that an endpoint answers.
    pub async fn connect(config: EtcdConfig) -> Result<Self, DatastoreError> {
        let spec = format!("etcd://{}", config.endpoints.join(","));
        let store = EtcdStore::new(config);
        let revision = store
            .shared
            .current_revision()
            .await
            .map_err(|e| DatastoreError::Etcd {
                spec,
                reason: e.to_string(),
            })?;
        info!(endpoints = ?store.shared.client.endpoints(), root = %store.shared.root, revision, "etcd datastore open");
        Ok(store)
    }

    /// Compacts etcd's history up to `revision`: watches from before it get a resync. For
    /// tests and operators; etcd usually compacts itself (`--auto-compaction-retention`).
    pub async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let body = serde_json::json!({ "revision": revision.to_string(), "physical": true });
        self.shared
            .client
            .call::<Value>("/v3/kv/compaction", &body, Retry::Idempotent)
            .await
            .map(drop)
            .map_err(|e| self.shared.unavailable("compact", e))
    }
}

impl Shared {
    fn unavailable(&self, what: &str, e: CallError) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd {}: {what}: {e}",
            self.client.endpoints().join(",")
        ))
    }

    fn kind_prefix(&self, kind: &str) -> Result<String, StoreError> {
        if kind.is_empty() || kind.contains('/') {
            return Err(StoreError::Unavailable(format!(
                "etcd: invalid kind {kind:?} (empty or containing '/')"
            )));
        }
        Ok(format!("{}{kind}/", self.root))
    }

    fn key(&self, kind: &str, name: &str) -> Result<Vec<u8>, StoreError> {
        Ok(format!("{}{name}", self.kind_prefix(kind)?).into_bytes())
    }

    /// The kind and name of a key under the root; `None` for a key that is not ours.
    fn parse_key(&self, key: &[u8]) -> Option<(String, String)> {
        let key = std::str::from_utf8(key).ok()?;
        let (kind, name) = key.strip_prefix(&self.root)?.split_once('/')?;
        Some((kind.to_string(), name.to_string()))
    }

    async fn current_revision(&self) -> Result<u64, CallError> {
        let range: RangeResponse = self
            .client
            .call(
                "/v3/kv/range",
                &wire::range_count_only(self.root.as_bytes()),
                Retry::Idempotent,
            )
            .await?;
        Ok(range.header.revision)
    }

    /// Every record under `prefix`, a page at a time; pages after the first read at the first
    /// page's revision, so the listing is one snapshot.
    async fn list_snapshot(&self, kind: &str, prefix: &[u8]) -> Result<Listing, CallError> {
        let mut items = Vec::new();
        let mut from = prefix.to_vec();
        let mut revision = 0;
        loop {
            let body = wire::range_prefix(prefix, &from, self.list_page, revision);
            let page: RangeResponse = self
                .client
                .call("/v3/kv/range", &body, Retry::Idempotent)
                .await?;
            if revision == 0 {
                revision = page.header.revision;
            }
            let Some(last) = page.kvs.last() else { break };
            // The next page starts just after the last key.
            from = last.key.clone();
            from.push(0);
            for kv in page.kvs {
                if let Some((_, name)) = self.parse_key(&kv.key) {
                    items.push(KvPair {
                        kind: kind.to_string(),
                        name,
                        value: kv.value,
                        revision: kv.mod_revision,
                    });
                }
            }
            if !page.more {
                break;
            }
        }
        Ok(Listing { items, revision })
    }

    async fn txn(&self, what: &str, body: Value) -> Result<TxnResponse, StoreError> {
        self.client
            .call("/v3/kv/txn", &body, Retry::Once)
            .await
            .map_err(|e| self.unavailable(what, e))
    }

    /// The error of a failed conditional write, from the `else` branch's read.
    fn cas_failure(&self, txn: &TxnResponse, kind: &str, name: &str, expected: u64) -> StoreError {
        let exists = txn.failure_range().is_some_and(|r| !r.kvs.is_empty());
        if exists {
            StoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected,
            }
        } else {
            StoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            }
        }
    }

    /// Compares that make a write conditional on the key existing at `expected`.
    fn at_revision(key: &[u8], expected: u64) -> Vec<Value> {
        vec![
            wire::compare(key, "MOD", "EQUAL", expected),
            wire::compare(key, "VERSION", "GREATER", 0),
        ]
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        let db = &self.shared;
        let key = db.key(kind, name)?;
        let range: RangeResponse = db
            .client
            .call("/v3/kv/range", &wire::range_key(&key), Retry::Idempotent)
            .await
            .map_err(|e| db.unavailable("get", e))?;
        Ok(range
            .kvs
            .into_iter()
            .find(|kv| kv.key == key)
            .map(|kv| KvPair {
                kind: kind.to_string(),
                name: name.to_string(),
                value: kv.value,
                revision: kv.mod_revision,
            }))
    }

    async fn list(&self, kind: &str) -> Result<Listing, StoreError> {
        let db = &self.shared;
        let prefix = db.kind_prefix(kind)?.into_bytes();
        // A compaction between two pages makes the snapshot unreadable: start again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match db.list_snapshot(kind, &prefix).await {
                Err(CallError::Status { message, .. })
                    if attempts < 3 && message.contains("compacted") =>
                {
                    debug!(kind, "etcd compacted during a list; listing again");
                }
                result => return result.map_err(|e| db.unavailable("list", e)),
            }
        }
    }

    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        let db = &self.shared;
        let key = db.key(kind, name)?;
        let body = wire::txn(
            vec![wire::compare(&key, "CREATE", "EQUAL", 0)],
            wire::op_put(&key, &value),
            wire::op_get(&key),
        );
        let txn = db.txn("create", body).await?;
        if !txn.succeeded {
            return Err(StoreError::AlreadyExists {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        }
        Ok(txn.header.revision)
    }

    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let db = &self.shared;
        let key = db.key(kind, name)?;
        let body = wire::txn(
            Shared::at_revision(&key, expected),
            wire::op_put(&key, &value),
            wire::op_get(&key),
        );
        let txn = db.txn("update", body).await?;
        if !txn.succeeded {
            return Err(db.cas_failure(&txn, kind, name, expected));
        }
        Ok(txn.header.revision)
    }

    async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let db = &self.shared;
        let key = db.key(kind, name)?;
        let Some(expected) = expected else {
            let deleted: DeleteRangeResponse = db
                .client
                .call(
                    "/v3/kv/deleterange",
                    &serde_json::json!({ "key": wire::encode(&key) }),
                    Retry::Once,
                )
                .await
                .map_err(|e| db.unavailable("delete", e))?;
            if deleted.deleted == 0 {
                return Err(StoreError::NotFound {
                    kind: kind.to_string(),
                    name: name.to_string(),
                });
            }
            return Ok(());
        };
        let body = wire::txn(
            Shared::at_revision(&key, expected),
            wire::op_delete(&key),
            wire::op_get(&key),
        );
        let txn = db.txn("delete", body).await?;
        if !txn.succeeded {
            return Err(db.cas_failure(&txn, kind, name, expected));
        }
        Ok(())
    }

    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError> {
        let prefix = match kind {
            Some(kind) => self.shared.kind_prefix(kind)?,
            None => self.shared.root.clone(),
        };
        Ok(watch::Watcher::spawn(
            Arc::clone(&self.shared),
            prefix.into_bytes(),
            after,
        ))
    }
}
