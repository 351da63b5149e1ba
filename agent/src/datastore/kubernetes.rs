//! The `kubernetes` datastore: every record is a cluster-scoped custom resource of group
//! `brindle.dev/v1`, read and written through the API server with the kube crate.
//!
//! # Mapping
//!
//! | Store                  | Kubernetes                                                      |
//! |------------------------|-----------------------------------------------------------------|
//! | kind `IPPool`          | resource `ippools.brindle.dev` (CRDs: `manifests/crds.yaml`)    |
//! | name                   | `metadata.name`, escaped when not DNS-1123 ([`names`])          |
//! | value (the object JSON)| `spec`, `metadata.labels`, `metadata.annotations`               |
//! | record revision        | `metadata.resourceVersion` (etcd's `mod_revision`), as a u64    |
//! | store revision         | a list's `metadata.resourceVersion`                             |
//! | create                 | `POST`; 409 AlreadyExists -> `AlreadyExists`                    |
//! | update(expected)       | `PUT` with `resourceVersion: expected`; 409 -> `Conflict`       |
//! | delete(expected)       | `DELETE` with `preconditions.resourceVersion`; 409 -> `Conflict`|
//! | watch(kind, after)     | `?watch=1&resourceVersion=after`; 410 -> `Resync` (`watch.rs`)  |
//!
//! The API server keeps resourceVersions opaque, but for every etcd-backed resource they are
//! etcd revisions: one counter for the cluster, which is what [`Store`] promises. A
//! resourceVersion that is not a number is reported as an error rather than guessed at.
//!
//! A value must be a resource (`{"apiVersion", "kind", "metadata", "spec"}`): Kubernetes
//! stores objects, not bytes. What is read back is rebuilt as `{"apiVersion", "kind",
//! "metadata": {"name", "labels", "annotations"}, "spec"}`; fields the API server adds (uid,
//! creationTimestamp, managedFields) are left out, so a record reads the same on every backend.
//!
//! Updates with expected revision 0 never reach the API server: 0 is no resourceVersion, and
//! the answer (NotFound or Conflict) comes from a read. An update that changes nothing is not
//! written by the API server: it keeps its resourceVersion and produces no watch event (the
//! one difference from the other backends; docs/datastore.md).

pub mod crd;
pub mod names;
#[cfg(test)]
mod startup_tests;
#[cfg(test)]
mod tests;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use brindle_ipam::model::API_VERSION;
use brindle_ipam::store::{KvPair, Listing, Store, StoreError, Watch};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams,
    Preconditions, TypeMeta,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use super::DatastoreError;

/// The API group of every Brindle custom resource.
pub const GROUP: &str = "brindle.dev";
/// Its version.
pub const VERSION: &str = "v1";
/// Items read per list call; later pages continue the first page's snapshot.
const LIST_PAGE: u32 = 500;

/// Where the API server is: the in-cluster service account or `KUBECONFIG` (`None`), or a
/// kubeconfig file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub kubeconfig: Option<PathBuf>,
}

impl KubernetesConfig {
    /// Parses `kubernetes` or `kubernetes:/path/to/kubeconfig`.
    pub fn from_spec(spec: &str) -> Option<Self> {
        if spec == "kubernetes" {
            return Some(KubernetesConfig::default());
        }
        let path = spec.strip_prefix("kubernetes:")?;
        (!path.is_empty()).then(|| KubernetesConfig {
            kubeconfig: Some(PathBuf::from(path)),
        })
    }
}

/// A [`Store`] in a Kubernetes API server. Cheap to clone.
#[derive(Clone)]
pub struct KubernetesStore {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    client: kube::Client,
    list_page: u32,
}

impl KubernetesStore {
    /// A store over `client`; nothing is contacted yet.
    pub fn new(client: kube::Client) -> Self {
        KubernetesStore::with_page(client, LIST_PAGE)
    }

    /// A store that lists `list_page` items per call (tests use small pages).
    pub fn with_page(client: kube::Client, list_page: u32) -> Self {
        KubernetesStore {
            shared: Arc::new(Shared {
                client,
                list_page: list_page.max(1),
            }),
        }
    }

    /// The API client (clones share its connections).
    pub fn client(&self) -> kube::Client {
        self.shared.client.clone()
    }

    /// Connects as `config` says, and checks that the API server answers and serves Brindle's
    /// CRDs (a list of IPPools), so a wrong cluster or missing CRDs show at start.
    pub async fn connect(config: &KubernetesConfig) -> Result<Self, DatastoreError> {
        let err = |reason: String| DatastoreError::Kubernetes { reason };
        let (client, server) = client(config).await?;
        let store = KubernetesStore::new(client);
        let api = store.shared.api("IPPool").map_err(|e| err(e.to_string()))?;
        match api.list(&ListParams::default().limit(1)).await {
            Ok(list) => {
                info!(%server, revision = ?list.metadata.resource_version, "kubernetes datastore open");
                Ok(store)
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Err(err(format!(
                "API server {server} does not serve ippools.{GROUP}: install the CRDs \
                 (kubectl apply -f manifests/crds.yaml)"
            ))),
            Err(e) => Err(err(format!("API server {server}: {e}"))),
        }
    }
}

/// A client for the API server `config` names (nothing is contacted yet), and its URL.
pub async fn client(config: &KubernetesConfig) -> Result<(kube::Client, String), DatastoreError> {
    let err = |reason: String| DatastoreError::Kubernetes { reason };
    let kube_config = match &config.kubeconfig {
        None => kube::Config::infer()
            .await
            .map_err(|e| err(format!("no in-cluster config nor KUBECONFIG: {e}")))?,
        Some(path) => from_kubeconfig_file(path).await.map_err(err)?,
    };
    let server = kube_config.cluster_url.to_string();
    let client = kube::Client::try_from(kube_config)
        .map_err(|e| err(format!("API server {server}: {e}")))?;
    Ok((client, server))
}

async fn from_kubeconfig_file(path: &Path) -> Result<kube::Config, String> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))
}

/// The revision a resourceVersion stands for.
fn parse_revision(rv: Option<&str>, what: &str) -> Result<u64, StoreError> {
    let rv = rv.ok_or_else(|| {
        StoreError::Unavailable(format!("kubernetes: {what} has no resourceVersion"))
    })?;
    rv.parse().map_err(|_| {
        StoreError::Unavailable(format!(
            "kubernetes: {what} has resourceVersion {rv:?}, not a number; the kubernetes \
             datastore needs an etcd-backed API server, whose resourceVersions are etcd revisions"
        ))
    })
}

impl Shared {
    fn resource(kind: &str) -> Result<ApiResource, StoreError> {
        if !names::valid_kind(kind) {
            return Err(StoreError::Unavailable(format!(
                "kubernetes: invalid kind {kind:?} (letters and digits only)"
            )));
        }
        Ok(ApiResource {
            group: GROUP.to_string(),
            version: VERSION.to_string(),
            api_version: API_VERSION.to_string(),
            kind: kind.to_string(),
            plural: names::plural(kind),
        })
    }

    pub(crate) fn api(&self, kind: &str) -> Result<Api<DynamicObject>, StoreError> {
        Ok(Api::all_with(self.client.clone(), &Self::resource(kind)?))
    }

    /// The StoreError for an API error of `verb` on `kind/name` (`name` empty: the kind).
    fn error(verb: &str, kind: &str, name: &str, e: kube::Error) -> StoreError {
        let what = if name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind} {name:?}")
        };
        match e {
            kube::Error::Api(status) => match (status.code, status.reason.as_str()) {
                // A collection that is not there: the CRD is missing.
                (404, _) if name.is_empty() => StoreError::Unavailable(format!(
                    "kubernetes {verb} {kind}: the API server does not serve {}.{GROUP}; \
                     install the CRDs (kubectl apply -f manifests/crds.yaml)",
                    names::plural(kind)
                )),
                (404, _) => StoreError::NotFound {
                    kind: kind.to_string(),
                    name: name.to_string(),
                },
                (409, "AlreadyExists") if verb == "create" => StoreError::AlreadyExists {
                    kind: kind.to_string(),
                    name: name.to_string(),
                },
                _ => StoreError::Unavailable(format!(
                    "kubernetes {verb} {what}: {} {}: {}",
                    status.code, status.reason, status.message
                )),
            },
            other => StoreError::Unavailable(format!("kubernetes {verb} {what}: {other}")),
        }
    }

    fn k8s_name(kind: &str, name: &str) -> Result<String, StoreError> {
        names::to_k8s_name(name).map_err(|e| StoreError::Corrupt {
            kind: kind.to_string(),
            name: name.to_string(),
            reason: format!("cannot be a Kubernetes name: {e}"),
        })
    }

    /// The custom resource holding `value` as `kind/name`.
    fn to_object(
        kind: &str,
        name: &str,
        value: &[u8],
        resource_version: Option<u64>,
    ) -> Result<DynamicObject, StoreError> {
        let invalid = |reason: String| StoreError::Corrupt {
            kind: kind.to_string(),
            name: name.to_string(),
            reason,
        };
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(value) else {
            return Err(invalid(
                "the kubernetes datastore stores resources: the value must be a JSON object \
                 with a spec"
                    .to_string(),
            ));
        };
        let spec = fields
            .remove("spec")
            .ok_or_else(|| invalid("the value has no spec".to_string()))?;
        let (labels, annotations) = match fields.remove("metadata") {
            Some(meta) => {
                let string_map = |field: &str| match meta.get(field) {
                    None | Some(Value::Null) => Ok(None),
                    Some(map) => serde_json::from_value(map.clone())
                        .map(Some)
                        .map_err(|e| invalid(format!("metadata.{field}: {e}"))),
                };
                (string_map("labels")?, string_map("annotations")?)
            }
            None => (None, None),
        };
        Ok(DynamicObject {
            types: Some(TypeMeta {
                api_version: API_VERSION.to_string(),
                kind: kind.to_string(),
            }),
            metadata: ObjectMeta {
                name: Some(Self::k8s_name(kind, name)?),
                labels,
                annotations,
                resource_version: resource_version.map(|rv| rv.to_string()),
                ..ObjectMeta::default()
            },
            data: serde_json::json!({ "spec": spec }),
        })
    }

    /// The record of a custom resource read from the API server.
    pub(crate) fn to_record(kind: &str, obj: &DynamicObject) -> Result<KvPair, StoreError> {
        let k8s_name = obj.metadata.name.as_deref().unwrap_or_default();
        let name = names::from_k8s_name(k8s_name).map_err(|e| StoreError::Corrupt {
            kind: kind.to_string(),
            name: k8s_name.to_string(),
            reason: e.to_string(),
        })?;
        let revision = parse_revision(
            obj.metadata.resource_version.as_deref(),
            &format!("{kind} {name:?}"),
        )?;
        Ok(KvPair {
            kind: kind.to_string(),
            value: record_value(kind, &name, obj),
            name,
            revision,
        })
    }

    /// The API server's current revision: the resourceVersion of a one-item list of `kind`.
    pub(crate) async fn current_revision(&self, kind: &str) -> Result<u64, StoreError> {
        let list = self
            .api(kind)?
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(|e| Self::error("list", kind, "", e))?;
        parse_revision(
            list.metadata.resource_version.as_deref(),
            &format!("the list of {kind}"),
        )
    }

    /// Every object of `kind` at one resourceVersion, a page at a time.
    async fn list_snapshot(&self, kind: &str) -> Result<Listing, ListError> {
        let api = self.api(kind)?;
        let mut params = ListParams::default().limit(self.list_page);
        let mut items = Vec::new();
        let mut revision = None;
        loop {
            let page = api.list(&params).await?;
            if revision.is_none() {
                revision = Some(parse_revision(
                    page.metadata.resource_version.as_deref(),
                    &format!("the list of {kind}"),
                )?);
            }
            for obj in &page.items {
                match Self::to_record(kind, obj) {
                    Ok(kv) => items.push(kv),
                    // A name Brindle would not have written (created by hand): not a record.
                    Err(StoreError::Corrupt { name, reason, .. }) => {
                        warn!(kind, name, %reason, "kubernetes list: skipping an object");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(Listing {
            items,
            revision: revision.unwrap_or_default(),
        })
    }

    /// The error of a write with `expected == 0`, which matches no record: read to tell a
    /// missing record from an existing one.
    async fn zero_revision(&self, kind: &str, name: &str) -> StoreError {
        match self.get(kind, name).await {
            Ok(Some(_)) => StoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected: 0,
            },
            Ok(None) => StoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            },
            Err(e) => e,
        }
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        let k8s_name = Self::k8s_name(kind, name)?;
        match self.api(kind)?.get_opt(&k8s_name).await {
            Ok(Some(obj)) => Self::to_record(kind, &obj).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(Self::error("get", kind, name, e)),
        }
    }
}

/// Why a list failed: the API server said no, or its answer is not usable.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The value of a record: the resource as Brindle wrote it, without what the API server adds.
fn record_value(kind: &str, name: &str, obj: &DynamicObject) -> Vec<u8> {
    let mut meta = Map::new();
    meta.insert("name".to_string(), Value::String(name.to_string()));
    let string_map = |map: &Option<std::collections::BTreeMap<String, String>>| {
        map.as_ref()
            .filter(|m| !m.is_empty())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))))
            .map(|entries| Value::Object(entries.collect()))
    };
    if let Some(labels) = string_map(&obj.metadata.labels) {
        meta.insert("labels".to_string(), labels);
    }
    if let Some(annotations) = string_map(&obj.metadata.annotations) {
        meta.insert("annotations".to_string(), annotations);
    }
    let mut value = Map::new();
    value.insert(
        "apiVersion".to_string(),
        Value::String(API_VERSION.to_string()),
    );
    value.insert("kind".to_string(), Value::String(kind.to_string()));
    value.insert("metadata".to_string(), Value::Object(meta));
    value.insert(
        "spec".to_string(),
        obj.data.get("spec").cloned().unwrap_or(Value::Null),
    );
    // Serializing a JSON value cannot fail.
    serde_json::to_vec(&Value::Object(value)).unwrap_or_default()
}

#[async_trait]
impl Store for KubernetesStore {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        self.shared.get(kind, name).await
    }

    async fn list(&self, kind: &str) -> Result<Listing, StoreError> {
        let db = &self.shared;
        // A continue token can expire (410) between pages: start again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match db.list_snapshot(kind).await {
                Err(ListError::Api(kube::Error::Api(e))) if attempts < 3 && e.code == 410 => {
                    debug!(kind, message = %e.message, "kubernetes list continuation expired; listing again");
                }
                Ok(listing) => return Ok(listing),
                Err(ListError::Store(e)) => return Err(e),
                Err(ListError::Api(e)) => return Err(Shared::error("list", kind, "", e)),
            }
        }
    }

    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        let db = &self.shared;
        let obj = Shared::to_object(kind, name, &value, None)?;
        let created = db
            .api(kind)?
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| Shared::error("create", kind, name, e))?;
        parse_revision(
            created.metadata.resource_version.as_deref(),
            &format!("{kind} {name:?}"),
        )
    }

    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let db = &self.shared;
        if expected == 0 {
            return Err(db.zero_revision(kind, name).await);
        }
        let obj = Shared::to_object(kind, name, &value, Some(expected))?;
        let k8s_name = Shared::k8s_name(kind, name)?;
        match db
            .api(kind)?
            .replace(&k8s_name, &PostParams::default(), &obj)
            .await
        {
            Ok(updated) => parse_revision(
                updated.metadata.resource_version.as_deref(),
                &format!("{kind} {name:?}"),
            ),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected,
            }),
            Err(e) => Err(Shared::error("update", kind, name, e)),
        }
    }

    async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let db = &self.shared;
        if expected == Some(0) {
            return Err(db.zero_revision(kind, name).await);
        }
        let k8s_name = Shared::k8s_name(kind, name)?;
        let params = DeleteParams {
            preconditions: expected.map(|rv| Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match db.api(kind)?.delete(&k8s_name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected: expected.unwrap_or_default(),
            }),
            Err(e) => Err(Shared::error("delete", kind, name, e)),
        }
    }

    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError> {
        let kinds: Vec<String> = match kind {
            Some(kind) => {
                self.shared.api(kind)?;
                vec![kind.to_string()]
            }
            None => crd::KINDS.iter().map(|k| k.kind.to_string()).collect(),
        };
        Ok(watch::Watcher::spawn(
            Arc::clone(&self.shared),
            kinds,
            after,
        ))
    }
}
