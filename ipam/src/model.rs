//! The resource envelope and the IPAM kinds, with Calico's field names.
//!
//! Every resource is stored as `Object<Spec>`: `apiVersion`, `kind`, `metadata` and `spec`, as in
//! Kubernetes and Calico. The kinds the agent alone needs (Node, WorkloadEndpoint) live in
//! `brindle_agent::model`; the kinds IPAM reads and writes live here so that this crate depends on
//! nothing of Brindle's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Brindle's API group and version.
pub const API_VERSION: &str = "brindle.dev/v1";

/// A spec type that is stored as a resource of its own kind.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The resource kind, as spelled in `kind:` (`IPPool`, `IPAMBlock`...).
    const KIND: &'static str;
}

/// A resource: Kubernetes' envelope around a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S: Resource> Object<S> {
    /// A new object of kind `S::KIND` with the given name.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: API_VERSION.to_string(),
            kind: S::KIND.to_string(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec,
        }
    }

    /// The store revision this object was read at, if it was read from a store.
    pub fn revision(&self) -> Option<u64> {
        self.metadata.resource_version.as_deref()?.parse().ok()
    }
}

/// Object metadata, the subset of Kubernetes' that Brindle uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    /// The store revision, as a decimal string (Kubernetes' `resourceVersion`). Filled in on read;
    /// an update must carry the revision it was read at (compare-and-swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Accepted for compatibility with `kubectl get -o yaml` output; not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Encapsulation mode of a pool, spelled as Calico spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        })
    }
}

/// What addresses of a pool may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// `IPPool` spec (Calico `projectcalico.org/v3` field names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// Prefix length of the per-node blocks; 26 for IPv4 and 122 for IPv6 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<AllowedUse>>,
    #[serde(rename = "disableBGPExport", default)]
    pub disable_bgp_export: bool,
}

impl Resource for IpPoolSpec {
    const KIND: &'static str = "IPPool";
}

impl IpPoolSpec {
    /// The block prefix length, with Calico's defaults.
    pub fn block_size(&self) -> u8 {
        self.block_size.unwrap_or(match self.cidr {
            IpNet::V4(_) => 26,
            IpNet::V6(_) => 122,
        })
    }

    /// Whether the pool may hand out addresses for `use_`.
    pub fn allows(&self, use_: AllowedUse) -> bool {
        match &self.allowed_uses {
            Some(uses) => uses.contains(&use_),
            None => matches!(use_, AllowedUse::Workload | AllowedUse::Tunnel),
        }
    }

    /// Checks what can be checked of one pool on its own.
    pub fn validate(&self) -> Result<(), String> {
        if self.cidr.trunc() != self.cidr {
            return Err(format!(
                "spec.cidr: {} has host bits set (did you mean {}?)",
                self.cidr,
                self.cidr.trunc()
            ));
        }
        let bs = self.block_size();
        let (lo, hi) = match self.cidr {
            IpNet::V4(_) => (20, 32),
            IpNet::V6(_) => (116, 128),
        };
        if bs < lo || bs > hi {
            return Err(format!("spec.blockSize: {bs} is outside {lo}..={hi}"));
        }
        if bs < self.cidr.prefix_len() {
            return Err(format!(
                "spec.blockSize: {bs} is larger than the pool {} itself",
                self.cidr
            ));
        }
        if self.ipip_mode != EncapMode::Never && self.vxlan_mode != EncapMode::Never {
            return Err("spec.ipipMode and spec.vxlanMode cannot both be enabled".to_string());
        }
        if self.ipip_mode != EncapMode::Never && matches!(self.cidr, IpNet::V6(_)) {
            return Err("spec.ipipMode: IPIP is IPv4 only".to_string());
        }
        if let Some(sel) = &self.node_selector {
            crate::selector::Selector::parse(sel).map_err(|e| format!("spec.nodeSelector: {e}"))?;
        }
        Ok(())
    }
}

/// `IPAMConfig` spec (Calico `crd.projectcalico.org/v1` `ipamconfigs`, v3 `IPAMConfiguration`).
/// One object, named [`IPAM_CONFIG_NAME`]; when it is absent the defaults apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfigSpec {
    /// Never borrow addresses from other nodes' blocks.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Claim new blocks when a node's blocks are full.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
    /// Blocks one node may own; 0 means [`DEFAULT_MAX_BLOCKS_PER_HOST`].
    #[serde(default)]
    pub max_blocks_per_host: u32,
}

/// The name of the one `IPAMConfig` object that is read.
pub const IPAM_CONFIG_NAME: &str = "default";

/// Calico's `maxBlocksPerHost` when unset or 0.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

fn default_true() -> bool {
    true
}

impl Default for IpamConfigSpec {
    fn default() -> Self {
        IpamConfigSpec {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

impl Resource for IpamConfigSpec {
    const KIND: &'static str = "IPAMConfig";
}

impl IpamConfigSpec {
    /// The block limit in force: `maxBlocksPerHost`, or 20 when it is 0.
    pub fn max_blocks(&self) -> usize {
        let n = if self.max_blocks_per_host == 0 {
            DEFAULT_MAX_BLOCKS_PER_HOST
        } else {
            self.max_blocks_per_host
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Calico's rules (`libcalico-go` `validateIPAMConfig`): a block limit needs strict
    /// affinity, and a node that may neither claim blocks nor be strict could borrow only.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_blocks_per_host > 0 && !self.strict_affinity {
            return Err(
                "spec.maxBlocksPerHost: a block limit requires spec.strictAffinity: true"
                    .to_string(),
            );
        }
        if !self.strict_affinity && !self.auto_allocate_blocks {
            return Err(
                "spec.autoAllocateBlocks: false is only allowed with spec.strictAffinity: true"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// Annotation on an `IPAMBlock`: when (RFC 3339) the block last became empty. Brindle writes
/// it on every block write that leaves the block empty (creation included) and removes it on
/// every write that leaves addresses in it; [`crate::Ipam::release_empty_blocks`] releases a
/// node's empty block only once this is older than the grace period. Not part of Calico's
/// schema, hence an annotation rather than a spec field.
pub const EMPTY_SINCE_ANNOTATION: &str = "brindle.dev/empty-since";

/// `IPAMBlock` spec (Calico `crd.projectcalico.org/v1` field names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamBlockSpec {
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// `host:<node>` when the block is affine to a node.
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    /// One entry per address of the block: the index into `attributes`, or null when free.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, a FIFO: allocation pops the head, release pushes the tail.
    pub unallocated: Vec<usize>,
    pub attributes: Vec<AllocationAttribute>,
    #[serde(default)]
    pub sequence_number: u64,
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub strict_affinity: bool,
}

impl Resource for IpamBlockSpec {
    const KIND: &'static str = "IPAMBlock";
}

/// Who an allocation belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationAttribute {
    pub handle_id: Option<String>,
    /// `node`, `namespace`, `pod`, `timestamp`, `type`...
    #[serde(default)]
    pub secondary: BTreeMap<String, String>,
}

/// State of a block affinity: claimed in two phases, pending then confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    Pending,
    Confirmed,
    PendingDeletion,
}

/// `BlockAffinity` spec. `deleted` is a string in Calico's v1 schema, and so here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockAffinitySpec {
    pub state: AffinityState,
    pub node: String,
    #[serde(rename = "type", default = "default_affinity_type")]
    pub type_: String,
    #[schemars(with = "String")]
    pub cidr: IpNet,
    #[serde(default = "default_deleted")]
    pub deleted: String,
}

fn default_affinity_type() -> String {
    "host".to_string()
}

fn default_deleted() -> String {
    "false".to_string()
}

impl Resource for BlockAffinitySpec {
    const KIND: &'static str = "BlockAffinity";
}

/// `IPAMHandle` spec: which blocks hold how many addresses of one handle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamHandleSpec {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR to the number of addresses this handle holds in it.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    #[serde(default)]
    pub deleted: bool,
}

impl Resource for IpamHandleSpec {
    const KIND: &'static str = "IPAMHandle";
}

/// A resource name for a CIDR, as Calico spells block names: `10.244.1.0/26` -> `10-244-1-0-26`.
pub fn cidr_to_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// The name of a block affinity: `<node>-<block name>`.
pub fn affinity_name(node: &str, cidr: &IpNet) -> String {
    format!("{node}-{}", cidr_to_name(cidr))
}

/// The name of a handle resource: the lowercased handle ID.
pub fn handle_name(handle_id: &str) -> String {
    handle_id.to_lowercase()
}

/// The `affinity` value for a node.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

/// The address at `ordinal` within `cidr`, if the ordinal is inside it.
pub fn ordinal_to_ip(cidr: &IpNet, ordinal: usize) -> Option<IpAddr> {
    let size = block_len(cidr)?;
    if ordinal >= size {
        return None;
    }
    Some(match cidr {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + ordinal as u32).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + ordinal as u128).into()),
    })
}

/// The ordinal of `ip` within `cidr`, if it is inside it.
pub fn ip_to_ordinal(cidr: &IpNet, ip: IpAddr) -> Option<usize> {
    if !cidr.contains(&ip) {
        return None;
    }
    match (cidr, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => Some((u32::from(a) - u32::from(n.network())) as usize),
        (IpNet::V6(n), IpAddr::V6(a)) => {
            usize::try_from(u128::from(a) - u128::from(n.network())).ok()
        }
        _ => None,
    }
}

/// Number of addresses in a block; `None` for blocks too large to be blocks (over 2^16).
pub fn block_len(cidr: &IpNet) -> Option<usize> {
    let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
    (host_bits <= 16).then(|| 1usize << host_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_yaml_round_trips_with_calico_field_names() {
        let yaml = "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: default\nspec:\n  cidr: 10.244.0.0/16\n  vxlanMode: Always\n  natOutgoing: true\n  disableBGPExport: true\n";
        let pool: Object<IpPoolSpec> = serde_yaml::from_str(yaml).expect("parses");
        assert_eq!(pool.spec.vxlan_mode, EncapMode::Always);
        assert_eq!(pool.spec.ipip_mode, EncapMode::Never);
        assert_eq!(pool.spec.block_size(), 26);
        assert!(pool.spec.disable_bgp_export);
        let again: Object<IpPoolSpec> =
            serde_yaml::from_str(&serde_yaml::to_string(&pool).expect("writes")).expect("parses");
        assert_eq!(pool, again);
    }

    #[test]
    fn pool_rejects_unknown_fields_and_bad_modes() {
        let unknown = "cidr: 10.0.0.0/16\nvxlanmode: Always\n";
        assert!(serde_yaml::from_str::<IpPoolSpec>(unknown).is_err());
        let bad_mode = "cidr: 10.0.0.0/16\nvxlanMode: always\n";
        assert!(serde_yaml::from_str::<IpPoolSpec>(bad_mode).is_err());
    }

    #[test]
    fn pool_validation_names_the_field() {
        let mut pool: IpPoolSpec = serde_yaml::from_str("cidr: 10.0.0.0/16").expect("parses");
        assert!(pool.validate().is_ok());
        pool.block_size = Some(12);
        assert!(pool
            .validate()
            .expect_err("invalid")
            .contains("spec.blockSize"));
        pool.block_size = None;
        pool.cidr = "10.0.0.1/16".parse().expect("cidr");
        assert!(pool.validate().expect_err("invalid").contains("spec.cidr"));
        pool.cidr = "10.0.0.0/16".parse().expect("cidr");
        pool.ipip_mode = EncapMode::Always;
        pool.vxlan_mode = EncapMode::CrossSubnet;
        assert!(pool.validate().expect_err("invalid").contains("ipipMode"));
    }

    #[test]
    fn ipam_config_defaults_and_calico_rules() {
        let c: IpamConfigSpec = serde_yaml::from_str("{}").expect("parses");
        assert_eq!(c, IpamConfigSpec::default());
        assert!(c.auto_allocate_blocks && !c.strict_affinity);
        assert_eq!(c.max_blocks(), 20);
        assert!(c.validate().is_ok());
        let c: IpamConfigSpec =
            serde_yaml::from_str("strictAffinity: true\nmaxBlocksPerHost: 4\n").expect("parses");
        assert_eq!(c.max_blocks(), 4);
        assert!(c.validate().is_ok());
        let c: IpamConfigSpec = serde_yaml::from_str("maxBlocksPerHost: 4").expect("parses");
        assert!(c
            .validate()
            .expect_err("needs strict")
            .contains("maxBlocksPerHost"));
        let c: IpamConfigSpec = serde_yaml::from_str("autoAllocateBlocks: false").expect("parses");
        assert!(c
            .validate()
            .expect_err("borrow only")
            .contains("autoAllocateBlocks"));
        let c: IpamConfigSpec =
            serde_yaml::from_str("autoAllocateBlocks: false\nstrictAffinity: true")
                .expect("parses");
        assert!(c.validate().is_ok());
        assert!(serde_yaml::from_str::<IpamConfigSpec>("strictaffinity: true").is_err());
    }

    #[test]
    fn pool_validation_checks_the_node_selector() {
        let mut pool: IpPoolSpec = serde_yaml::from_str("cidr: 10.0.0.0/16").expect("parses");
        pool.node_selector = Some("zone == 'a' && !has(gpu)".to_string());
        assert!(pool.validate().is_ok());
        pool.node_selector = Some("zone = 'a'".to_string());
        let e = pool.validate().expect_err("bad selector");
        assert!(
            e.contains("spec.nodeSelector") && e.contains("position 5"),
            "{e}"
        );
    }

    #[test]
    fn names_and_ordinals_follow_calico() {
        let cidr: IpNet = "10.244.1.64/26".parse().expect("cidr");
        assert_eq!(cidr_to_name(&cidr), "10-244-1-64-26");
        assert_eq!(affinity_name("node1", &cidr), "node1-10-244-1-64-26");
        assert_eq!(block_len(&cidr), Some(64));
        let ip = ordinal_to_ip(&cidr, 63).expect("inside");
        assert_eq!(ip.to_string(), "10.244.1.127");
        assert_eq!(ip_to_ordinal(&cidr, ip), Some(63));
        assert_eq!(ordinal_to_ip(&cidr, 64), None);
        assert_eq!(
            ip_to_ordinal(&cidr, "10.244.1.128".parse().expect("ip")),
            None
        );
        let v6: IpNet = "fd00::40/122".parse().expect("cidr");
        assert_eq!(cidr_to_name(&v6), "fd00--40-122");
        assert_eq!(
            ordinal_to_ip(&v6, 1).expect("inside").to_string(),
            "fd00::41"
        );
    }
}
