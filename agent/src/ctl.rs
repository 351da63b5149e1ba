//! `brindlectl`'s resource commands: parse, validate, write; and tables for reading.
//!
//! Parsing and validation come first for every document of a file; only when all of them are
//! good is anything written, so a bad file changes nothing.

use std::fmt::Write as _;

use brindle_ipam::store::{Store, StoreError, StoreExt};
use serde::Deserialize;

use crate::model::{
    BgpConfigurationSpec, BgpPeerSpec, BlockAffinitySpec, IpPoolSpec, IpamBlockSpec,
    IpamConfigSpec, IpamHandleSpec, NodeSpec, Object, Resource, WorkloadEndpointSpec, API_VERSION,
    IPAM_CONFIG_NAME,
};

/// API versions `apply` accepts; Calico's are converted (their fields match for these kinds).
const ACCEPTED_API_VERSIONS: &[&str] = &[
    API_VERSION,
    "crd.projectcalico.org/v1",
    "projectcalico.org/v3",
];

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{source_name}: document {index}{what}: {reason}")]
    Invalid {
        source_name: String,
        index: usize,
        what: String,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A resource kind `brindlectl` knows, by any of the names users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    IpPool,
    Node,
    WorkloadEndpoint,
    IpamBlock,
    BlockAffinity,
    IpamHandle,
    IpamConfig,
    BgpPeer,
    BgpConfiguration,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, CtlError> {
        match s.to_ascii_lowercase().as_str() {
            "ippool" | "ippools" | "pool" | "pools" => Ok(Kind::IpPool),
            "node" | "nodes" => Ok(Kind::Node),
            "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => Ok(Kind::WorkloadEndpoint),
            "ipamblock" | "ipamblocks" | "block" | "blocks" => Ok(Kind::IpamBlock),
            "blockaffinity" | "blockaffinities" | "affinity" | "affinities" => {
                Ok(Kind::BlockAffinity)
            }
            "ipamhandle" | "ipamhandles" | "handle" | "handles" => Ok(Kind::IpamHandle),
            "ipamconfig" | "ipamconfigs" | "ipamconfiguration" | "ipamconfigurations" => {
                Ok(Kind::IpamConfig)
            }
            "bgppeer" | "bgppeers" | "peer" | "peers" => Ok(Kind::BgpPeer),
            "bgpconfiguration" | "bgpconfigurations" | "bgpconfig" | "bgpconfigs" => {
                Ok(Kind::BgpConfiguration)
            }
            other => Err(CtlError::Usage(format!(
                "unknown resource kind {other:?}; known: ippools, bgppeers, bgpconfigurations, \
                 ipamconfigs, nodes, workloadendpoints, ipamblocks, blockaffinities, ipamhandles"
            ))),
        }
    }
}

/// One validated document of an apply file.
#[derive(Debug)]
pub enum Document {
    IpPool(Object<IpPoolSpec>),
    BgpPeer(Object<BgpPeerSpec>),
    BgpConfiguration(Object<BgpConfigurationSpec>),
    IpamConfig(Object<IpamConfigSpec>),
    Node(Object<NodeSpec>),
}

impl Document {
    /// `kind name`, as errors and `delete -f` name it.
    pub fn describe(&self) -> String {
        let (kind, name) = self.key();
        format!("{kind} {name}")
    }

    /// The kind and the name.
    pub fn key(&self) -> (&'static str, &str) {
        match self {
            Document::IpPool(o) => (IpPoolSpec::KIND, &o.metadata.name),
            Document::BgpPeer(o) => (BgpPeerSpec::KIND, &o.metadata.name),
            Document::BgpConfiguration(o) => (BgpConfigurationSpec::KIND, &o.metadata.name),
            Document::IpamConfig(o) => (IpamConfigSpec::KIND, &o.metadata.name),
            Document::Node(o) => (NodeSpec::KIND, &o.metadata.name),
        }
    }
}

/// Metadata the API server sets, found in `kubectl get -o yaml` output (e.g. of Calico's
/// resources when migrating); read-only there, meaningless here.
const SERVER_METADATA: &[&str] = &["generation", "managedFields", "selfLink"];

fn parse_obj<S: Resource>(mut value: serde_yaml::Value) -> Result<Object<S>, String> {
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_yaml::Value::as_mapping_mut)
    {
        for key in SERVER_METADATA {
            meta.remove(*key);
        }
    }
    let mut obj: Object<S> = serde_yaml::from_value(value).map_err(|e| e.to_string())?;
    obj.api_version = API_VERSION.to_string();
    obj.metadata.resource_version = None;
    Ok(obj)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<HeaderMeta>,
}

#[derive(Deserialize)]
struct HeaderMeta {
    name: Option<String>,
}

/// Parses and validates every document of a YAML (or JSON) text.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Document>, CtlError> {
    let mut docs = Vec::new();
    let mut values = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(de).map_err(|e| CtlError::Invalid {
            source_name: source_name.to_string(),
            index: i + 1,
            what: String::new(),
            reason: format!("malformed YAML: {e}"),
        })?;
        // `kubectl get KIND -o yaml` prints a `kind: List` (or `IPPoolList`) of items.
        let is_list = value
            .get("kind")
            .and_then(serde_yaml::Value::as_str)
            .is_some_and(|k| k.ends_with("List"));
        match value.get("items").and_then(serde_yaml::Value::as_sequence) {
            Some(items) if is_list => values.extend(items.iter().cloned()),
            _ => values.push(value),
        }
    }
    for (i, value) in values.into_iter().enumerate() {
        let index = i + 1;
        let invalid = |what: String, reason: String| CtlError::Invalid {
            source_name: source_name.to_string(),
            index,
            what,
            reason,
        };
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let header: Header = serde_yaml::from_value(value.clone())
            .map_err(|e| invalid(String::new(), format!("not a resource: {e}")))?;
        let kind = header
            .kind
            .ok_or_else(|| invalid(String::new(), "missing field `kind`".into()))?;
        let name = header.metadata.and_then(|m| m.name).unwrap_or_default();
        let what = format!(" ({kind} {name})");
        let api_version = header
            .api_version
            .ok_or_else(|| invalid(what.clone(), "missing field `apiVersion`".into()))?;
        if !ACCEPTED_API_VERSIONS.contains(&api_version.as_str()) {
            return Err(invalid(
                what,
                format!(
                    "apiVersion {api_version:?} is not one of {}",
                    ACCEPTED_API_VERSIONS.join(", ")
                ),
            ));
        }
        if name.is_empty() {
            return Err(invalid(what, "missing field `metadata.name`".into()));
        }
        if !valid_name(&name) {
            return Err(invalid(
                what,
                "metadata.name: use lowercase letters, digits, '-' and '.' (at most 253)".into(),
            ));
        }
        let doc = match kind.as_str() {
            "IPPool" => parse_obj::<IpPoolSpec>(value).and_then(|o| {
                o.spec.validate()?;
                Ok(Document::IpPool(o))
            }),
            "BGPPeer" => parse_obj::<BgpPeerSpec>(value).and_then(|o| {
                o.spec.validate()?;
                Ok(Document::BgpPeer(o))
            }),
            "BGPConfiguration" => parse_obj::<BgpConfigurationSpec>(value).and_then(|o| {
                o.spec.validate(&o.metadata.name)?;
                Ok(Document::BgpConfiguration(o))
            }),
            "IPAMConfig" | "IPAMConfiguration" => parse_obj::<IpamConfigSpec>(value).and_then(|mut o| {
                if o.metadata.name != IPAM_CONFIG_NAME {
                    return Err(format!("metadata.name: the IPAM configuration is named {IPAM_CONFIG_NAME:?}"));
                }
                o.kind = IpamConfigSpec::KIND.to_string();
                o.spec.validate()?;
                Ok(Document::IpamConfig(o))
            }),
            // Labels (for BGPPeer selectors), asNumber and routeReflectorClusterID; the agent
            // keeps them when it registers its address.
            "Node" => parse_obj::<NodeSpec>(value).and_then(|o| {
                validate_node(&o.spec)?;
                Ok(Document::Node(o))
            }),
            other => Err(format!(
                "kind {other:?} cannot be applied (supported: IPPool, BGPPeer, BGPConfiguration, IPAMConfig, Node)"
            )),
        };
        docs.push(doc.map_err(|e| invalid(what, e))?);
    }
    if docs.is_empty() {
        return Err(CtlError::Usage(format!(
            "{source_name}: no resources found"
        )));
    }
    Ok(docs)
}

/// What the documents set that Brindle accepts but does not act on: one line per field,
/// naming the document (`brindlectl apply` prints them on stderr as warnings).
pub fn warnings(docs: &[Document]) -> Vec<String> {
    let mut out = Vec::new();
    for doc in docs {
        let fields = match doc {
            Document::BgpPeer(o) => o.spec.unsupported(),
            Document::BgpConfiguration(o) => o.spec.unsupported(),
            _ => Vec::new(),
        };
        out.extend(
            fields
                .into_iter()
                .map(|f| format!("{}: {f}", doc.describe())),
        );
    }
    out
}

/// The BGP fields of a Node a user may set.
fn validate_node(spec: &NodeSpec) -> Result<(), String> {
    let Some(bgp) = &spec.bgp else { return Ok(()) };
    if bgp.as_number == Some(0) {
        return Err("spec.bgp.asNumber: AS 0 is reserved (RFC 7607)".into());
    }
    if let Some(id) = &bgp.route_reflector_cluster_id {
        if id.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!(
                "spec.bgp.routeReflectorClusterID: {id:?} is not an IPv4-formatted ID (e.g. 244.0.0.1)"
            ));
        }
    }
    if let Some(a) = &bgp.ipv4_address {
        if a.parse::<ipnet::Ipv4Net>().is_err() {
            return Err(format!("spec.bgp.ipv4Address: {a:?} is not a.b.c.d/len"));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
}

/// Checks pools against each other and the stored ones: no overlap, immutable fields kept.
fn check_pools(new: &[&Object<IpPoolSpec>], stored: &[Object<IpPoolSpec>]) -> Result<(), String> {
    for (i, pool) in new.iter().enumerate() {
        let name = &pool.metadata.name;
        if let Some(old) = stored.iter().find(|p| p.metadata.name == *name) {
            if old.spec.cidr != pool.spec.cidr {
                return Err(format!(
                    "IPPool {name}: spec.cidr cannot change ({} -> {}); create a new pool instead",
                    old.spec.cidr, pool.spec.cidr
                ));
            }
            if old.spec.block_size() != pool.spec.block_size() {
                return Err(format!(
                    "IPPool {name}: spec.blockSize cannot change ({} -> {})",
                    old.spec.block_size(),
                    pool.spec.block_size()
                ));
            }
        }
        let others = stored
            .iter()
            .filter(|p| {
                p.metadata.name != *name && !new.iter().any(|n| n.metadata.name == p.metadata.name)
            })
            .chain(new.iter().skip(i + 1).copied());
        for other in others {
            if other.spec.cidr.contains(&pool.spec.cidr.network())
                || pool.spec.cidr.contains(&other.spec.cidr.network())
            {
                return Err(format!(
                    "IPPool {name}: spec.cidr {} overlaps IPPool {} ({})",
                    pool.spec.cidr, other.metadata.name, other.spec.cidr
                ));
            }
        }
    }
    Ok(())
}

/// Writes validated documents: creates, or updates at the stored revision. Returns one line per
/// document saying what happened.
pub async fn apply(store: &dyn Store, docs: &[Document]) -> Result<Vec<String>, CtlError> {
    let mut seen = std::collections::BTreeSet::new();
    for doc in docs {
        if !seen.insert(doc.key()) {
            return Err(CtlError::Usage(format!("{} appears twice", doc.describe())));
        }
    }
    let (stored, _) = store.list_objs::<IpPoolSpec>().await?;
    let pools: Vec<&Object<IpPoolSpec>> = docs
        .iter()
        .filter_map(|d| match d {
            Document::IpPool(p) => Some(p),
            _ => None,
        })
        .collect();
    check_pools(&pools, &stored).map_err(CtlError::Usage)?;
    let mut out = Vec::new();
    for doc in docs {
        out.push(match doc {
            Document::IpPool(o) => upsert(store, o).await?,
            Document::BgpPeer(o) => upsert(store, o).await?,
            Document::BgpConfiguration(o) => upsert(store, o).await?,
            Document::IpamConfig(o) => upsert(store, o).await?,
            Document::Node(o) => upsert(store, o).await?,
        });
    }
    Ok(out)
}

/// Creates `obj`, or replaces the stored one at its current revision.
async fn upsert<S: Resource>(store: &dyn Store, obj: &Object<S>) -> Result<String, CtlError> {
    let label = format!("{}/{}", S::KIND.to_ascii_lowercase(), obj.metadata.name);
    match store.get_obj::<S>(&obj.metadata.name).await? {
        Some(old) => {
            let mut updated = obj.clone();
            updated.metadata.resource_version = old.metadata.resource_version;
            store.update_obj(&updated).await?;
            Ok(format!("{label} configured"))
        }
        None => {
            store.create_obj(obj).await?;
            Ok(format!("{label} created"))
        }
    }
}

/// Deletes a resource of an applicable kind by name (pools with the in-use check).
pub async fn delete(store: &dyn Store, kind: Kind, name: &str) -> Result<String, CtlError> {
    async fn plain<S: Resource>(store: &dyn Store, name: &str) -> Result<String, CtlError> {
        let Some(obj) = store.get_obj::<S>(name).await? else {
            return Err(CtlError::Usage(format!("{} {name:?} not found", S::KIND)));
        };
        store.delete_obj(&obj).await?;
        Ok(format!("{}/{name} deleted", S::KIND.to_ascii_lowercase()))
    }
    match kind {
        Kind::IpPool => delete_pool(store, name).await,
        Kind::BgpPeer => plain::<BgpPeerSpec>(store, name).await,
        Kind::BgpConfiguration => plain::<BgpConfigurationSpec>(store, name).await,
        Kind::IpamConfig => plain::<IpamConfigSpec>(store, name).await,
        // Decommissioning a node: every agent then removes its routes, neighbour and FDB entries
        // and releases its block affinities (as Calico's node deletion does).
        Kind::Node => plain::<NodeSpec>(store, name).await,
        other => Err(CtlError::Usage(format!(
            "{other:?} records are managed by Brindle itself and cannot be deleted with brindlectl"
        ))),
    }
}

/// Deletes a pool, refusing while addresses of it are allocated.
pub async fn delete_pool(store: &dyn Store, name: &str) -> Result<String, CtlError> {
    let Some(pool) = store.get_obj::<IpPoolSpec>(name).await? else {
        return Err(CtlError::Usage(format!("IPPool {name:?} not found")));
    };
    let (blocks, _) = store.list_objs::<IpamBlockSpec>().await?;
    let in_use: usize = blocks
        .iter()
        .filter(|b| pool.spec.cidr.contains(&b.spec.cidr))
        .map(|b| b.spec.allocations.iter().filter(|a| a.is_some()).count())
        .sum();
    if in_use > 0 {
        return Err(CtlError::Usage(format!(
            "IPPool {name} still has {in_use} allocated addresses; delete its workloads first"
        )));
    }
    store.delete_obj(&pool).await?;
    Ok(format!("ippool/{name} deleted"))
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
}

/// Renders rows as an aligned table, kubectl style.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}   ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn render<S: crate::model::Resource>(
    objs: &[Object<S>],
    output: Output,
    headers: &[&str],
    row: impl Fn(&Object<S>) -> Vec<String>,
) -> Result<String, CtlError> {
    let as_list =
        || serde_json::json!({ "apiVersion": API_VERSION, "kind": "List", "items": objs });
    Ok(match output {
        Output::Table | Output::Wide => table(headers, &objs.iter().map(row).collect::<Vec<_>>()),
        Output::Yaml => serde_yaml::to_string(&as_list())
            .map_err(|e| CtlError::Usage(format!("rendering YAML: {e}")))?,
        Output::Json => serde_json::to_string_pretty(&as_list()).unwrap_or_default() + "\n",
    })
}

/// `get <kind> [name]`.
pub async fn get(
    store: &dyn Store,
    kind: Kind,
    name: Option<&str>,
    output: Output,
) -> Result<String, CtlError> {
    fn pick<S: crate::model::Resource>(
        mut objs: Vec<Object<S>>,
        name: Option<&str>,
        kind: &str,
    ) -> Result<Vec<Object<S>>, CtlError> {
        if let Some(name) = name {
            objs.retain(|o| o.metadata.name == name);
            if objs.is_empty() {
                return Err(CtlError::Usage(format!("{kind} {name:?} not found")));
            }
        }
        Ok(objs)
    }
    match kind {
        Kind::IpPool => {
            let pools = pick(store.list_objs::<IpPoolSpec>().await?.0, name, "IPPool")?;
            let (blocks, _) = store.list_objs::<IpamBlockSpec>().await?;
            let used = |pool: &IpPoolSpec| -> (usize, usize) {
                blocks
                    .iter()
                    .filter(|b| pool.cidr.contains(&b.spec.cidr))
                    .fold((0, 0), |(n, used), b| {
                        (
                            n + 1,
                            used + b.spec.allocations.iter().filter(|a| a.is_some()).count(),
                        )
                    })
            };
            let mut headers = vec![
                "NAME",
                "CIDR",
                "BLOCK SIZE",
                "IPIP",
                "VXLAN",
                "NAT",
                "DISABLED",
                "ALLOCATED",
            ];
            if output == Output::Wide {
                headers.extend(["BLOCKS", "IPS IN USE"]);
            }
            render(&pools, output, &headers, |p| {
                let mut row = vec![
                    p.metadata.name.clone(),
                    p.spec.cidr.to_string(),
                    p.spec.block_size().to_string(),
                    p.spec.ipip_mode.to_string(),
                    p.spec.vxlan_mode.to_string(),
                    p.spec.nat_outgoing.to_string(),
                    p.spec.disabled.to_string(),
                ];
                let (blocks, ips) = used(&p.spec);
                let total = 2f64.powi(i32::from(
                    p.spec.cidr.max_prefix_len() - p.spec.cidr.prefix_len(),
                ));
                row.push(format!("{:.0}%", ips as f64 * 100.0 / total));
                if output == Output::Wide {
                    row.extend([blocks.to_string(), ips.to_string()]);
                }
                row
            })
        }
        Kind::Node => {
            let nodes = pick(store.list_objs::<NodeSpec>().await?.0, name, "Node")?;
            render(
                &nodes,
                output,
                &[
                    "NAME",
                    "IPV4 ADDRESS",
                    "IPV6 ADDRESS",
                    "VXLAN TUNNEL",
                    "VTEP MAC",
                    "IPIP TUNNEL",
                ],
                |n| {
                    let bgp = n.spec.bgp.as_ref();
                    vec![
                        n.metadata.name.clone(),
                        bgp.and_then(|b| b.ipv4_address.clone()).unwrap_or_default(),
                        bgp.and_then(|b| b.ipv6_address.clone()).unwrap_or_default(),
                        n.spec.ipv4_vxlan_tunnel_addr.clone().unwrap_or_default(),
                        n.spec.vxlan_tunnel_mac_addr.clone().unwrap_or_default(),
                        bgp.and_then(|b| b.ipv4_ipip_tunnel_addr.clone())
                            .unwrap_or_default(),
                    ]
                },
            )
        }
        Kind::WorkloadEndpoint => {
            let eps = pick(
                store.list_objs::<WorkloadEndpointSpec>().await?.0,
                name,
                "WorkloadEndpoint",
            )?;
            render(
                &eps,
                output,
                &["NAME", "NODE", "NAMESPACE", "POD", "NETWORKS", "INTERFACE"],
                |e| {
                    vec![
                        e.metadata.name.clone(),
                        e.spec.node.clone(),
                        e.spec.namespace.clone(),
                        e.spec.pod.clone(),
                        e.spec.ip_networks.join(","),
                        e.spec.interface_name.clone(),
                    ]
                },
            )
        }
        Kind::BlockAffinity => {
            let objs = pick(
                store.list_objs::<BlockAffinitySpec>().await?.0,
                name,
                "BlockAffinity",
            )?;
            render(&objs, output, &["NAME", "NODE", "CIDR", "STATE"], |a| {
                vec![
                    a.metadata.name.clone(),
                    a.spec.node.clone(),
                    a.spec.cidr.to_string(),
                    format!("{:?}", a.spec.state).to_ascii_lowercase(),
                ]
            })
        }
        Kind::IpamHandle => {
            let objs = pick(
                store.list_objs::<IpamHandleSpec>().await?.0,
                name,
                "IPAMHandle",
            )?;
            render(&objs, output, &["NAME", "HANDLE", "BLOCKS"], |h| {
                let blocks: Vec<String> = h
                    .spec
                    .block
                    .iter()
                    .map(|(b, n)| format!("{b}:{n}"))
                    .collect();
                vec![
                    h.metadata.name.clone(),
                    h.spec.handle_id.clone(),
                    blocks.join(","),
                ]
            })
        }
        Kind::IpamConfig => {
            let objs = pick(
                store.list_objs::<IpamConfigSpec>().await?.0,
                name,
                "IPAMConfig",
            )?;
            render(
                &objs,
                output,
                &[
                    "NAME",
                    "STRICT AFFINITY",
                    "AUTO ALLOCATE BLOCKS",
                    "MAX BLOCKS PER HOST",
                ],
                |c| {
                    vec![
                        c.metadata.name.clone(),
                        c.spec.strict_affinity.to_string(),
                        c.spec.auto_allocate_blocks.to_string(),
                        c.spec.max_blocks().to_string(),
                    ]
                },
            )
        }
        Kind::BgpPeer => {
            let objs = pick(store.list_objs::<BgpPeerSpec>().await?.0, name, "BGPPeer")?;
            render(&objs, output, &["NAME", "PEERIP", "NODE", "ASN"], |p| {
                let selector = |s: &Option<String>| s.as_ref().map(|s| format!("selector: {s}"));
                vec![
                    p.metadata.name.clone(),
                    p.spec
                        .peer_ip
                        .clone()
                        .or_else(|| selector(&p.spec.peer_selector))
                        .unwrap_or_default(),
                    p.spec
                        .node
                        .clone()
                        .or_else(|| selector(&p.spec.node_selector))
                        .unwrap_or_else(|| "(global)".into()),
                    p.spec.as_number.map(|a| a.to_string()).unwrap_or_default(),
                ]
            })
        }
        Kind::BgpConfiguration => {
            let objs = pick(
                store.list_objs::<BgpConfigurationSpec>().await?.0,
                name,
                "BGPConfiguration",
            )?;
            render(
                &objs,
                output,
                &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
                |c| {
                    vec![
                        c.metadata.name.clone(),
                        c.spec
                            .log_severity_screen
                            .clone()
                            .unwrap_or_else(|| "Info".into()),
                        c.spec.mesh_enabled().to_string(),
                        c.spec
                            .as_number
                            .unwrap_or(brindle_bgp::DEFAULT_ASN)
                            .to_string(),
                    ]
                },
            )
        }
        Kind::IpamBlock => {
            let blocks = pick(
                store.list_objs::<IpamBlockSpec>().await?.0,
                name,
                "IPAMBlock",
            )?;
            render(
                &blocks,
                output,
                &["NAME", "CIDR", "AFFINITY", "IN USE"],
                |b| {
                    vec![
                        b.metadata.name.clone(),
                        b.spec.cidr.to_string(),
                        b.spec.affinity.clone().unwrap_or_default(),
                        format!(
                            "{}/{}",
                            b.spec.allocations.iter().filter(|a| a.is_some()).count(),
                            b.spec.allocations.len()
                        ),
                    ]
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubectl_get_output_of_calico_pools_is_accepted() {
        // `kubectl get ippools.crd.projectcalico.org -o yaml`, as a Calico cluster prints it.
        let text = r#"apiVersion: v1
kind: List
items:
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    annotations:
      projectcalico.org/metadata: '{"creationTimestamp":"2024-01-01T00:00:00Z"}'
    creationTimestamp: "2024-01-01T00:00:00Z"
    generation: 1
    name: default-ipv4-ippool
    resourceVersion: "1234"
    uid: 4f1b2c3d-aaaa-bbbb-cccc-1234567890ab
  spec:
    allowedUses: [Workload, Tunnel]
    blockSize: 26
    cidr: 192.168.0.0/16
    ipipMode: Always
    natOutgoing: true
    nodeSelector: all()
    vxlanMode: Never
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    generation: 2
    name: second
  spec:
    cidr: 10.60.0.0/16
metadata:
  resourceVersion: ""
"#;
        let docs = super::parse_documents("calico.yaml", text).expect("valid");
        assert_eq!(docs.len(), 2);
        // A field that is not server metadata is still refused.
        let bad = text.replace("generation: 2", "generaton: 2");
        let err = super::parse_documents("calico.yaml", &bad)
            .expect_err("unknown field")
            .to_string();
        assert!(
            err.contains("generaton") && err.contains("document 2"),
            "{err}"
        );
    }

    use super::*;
    use brindle_ipam::store::MemStore;

    const POOLS: &str = "\
apiVersion: brindle.dev/v1
kind: IPPool
metadata:
  name: default
spec:
  cidr: 10.244.0.0/16
  vxlanMode: Always
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: calico-style
spec:
  cidr: 10.245.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
";

    #[tokio::test]
    async fn apply_creates_then_configures_and_get_shows_a_table() {
        let store = MemStore::default();
        let docs = parse_documents("pools.yaml", POOLS).expect("valid");
        assert_eq!(docs.len(), 2);
        let out = apply(&store, &docs).await.expect("applies");
        assert_eq!(
            out,
            ["ippool/default created", "ippool/calico-style created"]
        );
        let out = apply(&store, &docs).await.expect("applies again");
        assert_eq!(out[0], "ippool/default configured");
        let table = get(&store, Kind::IpPool, None, Output::Table)
            .await
            .expect("get");
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(lines[0].contains("BLOCK SIZE") && lines[0].contains("VXLAN"));
        assert!(
            lines[0].ends_with("ALLOCATED") && lines[1].ends_with("0%"),
            "{table}"
        );
        assert!(
            table.contains("default")
                && table.contains("10.244.0.0/16")
                && table.contains("Always")
        );
        let pool: Object<IpPoolSpec> = store
            .get_obj("calico-style")
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            pool.api_version, API_VERSION,
            "Calico documents are converted"
        );
    }

    fn error_of(text: &str) -> String {
        parse_documents("f.yaml", text)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn bad_documents_name_the_document_and_the_field() {
        let bad_cidr = POOLS.replace("10.245.0.0/16", "10.245.0.0/33");
        let e = error_of(&bad_cidr);
        assert!(
            e.starts_with("f.yaml: document 2 (IPPool calico-style):"),
            "{e}"
        );
        let unknown = POOLS.replace("natOutgoing", "natOutgoin");
        assert!(
            error_of(&unknown).contains("natOutgoin"),
            "{}",
            error_of(&unknown)
        );
        let bad_kind = POOLS.replace(
            "kind: IPPool\nmetadata:\n  name: default",
            "kind: Frobnicator\nmetadata:\n  name: default",
        );
        assert!(error_of(&bad_kind).contains("Frobnicator"));
        assert!(error_of("a: [").contains("malformed YAML"));
        let bad_block = POOLS.replace("vxlanMode: Always", "blockSize: 8");
        assert!(error_of(&bad_block).contains("spec.blockSize"));
    }

    #[tokio::test]
    async fn overlapping_pools_are_refused_and_nothing_is_written() {
        let store = MemStore::default();
        let text = POOLS.replace("10.245.0.0/16", "10.244.128.0/17");
        let docs = parse_documents("f.yaml", &text).expect("each is valid alone");
        let e = apply(&store, &docs).await.expect_err("overlap").to_string();
        assert!(e.contains("overlaps"), "{e}");
        assert!(store
            .list_objs::<IpPoolSpec>()
            .await
            .expect("list")
            .0
            .is_empty());
    }

    #[tokio::test]
    async fn block_size_cannot_change() {
        let store = MemStore::default();
        apply(&store, &parse_documents("f", POOLS).expect("valid"))
            .await
            .expect("applies");
        let changed = POOLS.replace("vxlanMode: Always", "vxlanMode: Always\n  blockSize: 28");
        let e = apply(&store, &parse_documents("f", &changed).expect("valid"))
            .await
            .expect_err("immutable")
            .to_string();
        assert!(e.contains("blockSize cannot change"), "{e}");
    }

    const BGP: &str = "\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64513
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.168.1.1
  asNumber: 64512
  nodeSelector: rack == 'rack-1'
---
apiVersion: crd.projectcalico.org/v1
kind: IPAMConfig
metadata:
  name: default
spec:
  strictAffinity: true
";

    #[tokio::test]
    async fn calico_bgp_documents_apply_get_and_delete() {
        let store = MemStore::default();
        let docs = parse_documents("bgp.yaml", BGP).expect("valid");
        let out = apply(&store, &docs).await.expect("applies");
        assert_eq!(
            out,
            [
                "bgpconfiguration/default created",
                "bgppeer/rack1-tor created",
                "ipamconfig/default created"
            ]
        );
        let peers = get(&store, Kind::BgpPeer, None, Output::Table)
            .await
            .expect("get");
        assert!(
            peers.contains("rack1-tor")
                && peers.contains("192.168.1.1")
                && peers.contains("selector: rack == 'rack-1'"),
            "{peers}"
        );
        let conf = get(&store, Kind::BgpConfiguration, None, Output::Table)
            .await
            .expect("get");
        assert!(conf.contains("false") && conf.contains("64513"), "{conf}");
        let ipam = get(&store, Kind::IpamConfig, None, Output::Table)
            .await
            .expect("get");
        assert!(ipam.contains("true") && ipam.contains("20"), "{ipam}");
        assert_eq!(
            delete(&store, Kind::BgpPeer, "rack1-tor")
                .await
                .expect("delete"),
            "bgppeer/rack1-tor deleted"
        );
        assert!(delete(&store, Kind::BgpPeer, "rack1-tor").await.is_err());
        assert!(delete(&store, Kind::IpamBlock, "x").await.is_err());
    }

    #[test]
    fn fields_brindle_does_not_act_on_are_warned_about_per_document() {
        assert!(
            warnings(&parse_documents("bgp.yaml", BGP).expect("valid")).is_empty(),
            "nothing unsupported in BGP"
        );
        let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.168.1.1\n  asNumber: 64512\n  localASNumber: 65001\n  keepaliveTime: 10s\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  serviceClusterIPs: [{cidr: 10.96.0.0/12}]\n  bindMode: NodeIP\n";
        let w = warnings(&parse_documents("f.yaml", text).expect("valid"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("BGPPeer tor: spec.localASNumber"), "{w:?}");
        assert!(
            w[1].starts_with("BGPConfiguration default: spec.bindMode"),
            "{w:?}"
        );
    }

    #[test]
    fn invalid_bgp_documents_are_refused_with_the_field() {
        let bad = BGP.replace(
            "peerIP: 192.168.1.1",
            "peerIP: 192.168.1.1\n  peerSelector: all()",
        );
        let e = error_of(&bad);
        assert!(
            e.contains("document 2 (BGPPeer rack1-tor)") && e.contains("mutually exclusive"),
            "{e}"
        );
        let bad = BGP.replace(
            "name: default\nspec:\n  nodeToNodeMeshEnabled",
            "name: other\nspec:\n  nodeToNodeMeshEnabled",
        );
        assert!(
            error_of(&bad).contains("metadata.name"),
            "{}",
            error_of(&bad)
        );
        let twice = format!("{BGP}---\n{}", BGP.split("---").nth(1).expect("peer doc"));
        let docs = parse_documents("f", &twice).expect("each valid");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let e = rt
            .block_on(apply(&MemStore::default(), &docs))
            .expect_err("duplicate")
            .to_string();
        assert!(e.contains("appears twice"), "{e}");
    }
}
