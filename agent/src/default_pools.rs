//! The default IP pools `brindle-node` creates at first start, from environment variables, the
//! way calico-node does with `CALICO_IPV4POOL_CIDR` and its siblings.
//!
//! | variable (alias `CALICO_...`)         | meaning                      | default        |
//! |-----------------------------------------|------------------------------|----------------|
//! | `BRINDLE_IPV4POOL_CIDR`                 | the IPv4 pool; unset: none   | -              |
//! | `BRINDLE_IPV4POOL_BLOCK_SIZE`           | per-node block prefix        | 26             |
//! | `BRINDLE_IPV4POOL_IPIP`                 | Never, Always, CrossSubnet   | Never          |
//! | `BRINDLE_IPV4POOL_VXLAN`                | Never, Always, CrossSubnet   | Never          |
//! | `BRINDLE_IPV4POOL_NAT_OUTGOING`         | SNAT traffic leaving pods    | true           |
//! | `BRINDLE_IPV4POOL_NODE_SELECTOR`        | nodes that take blocks       | all            |
//! | `BRINDLE_IPV4POOL_DISABLE_BGP_EXPORT`   | do not advertise the pool    | false          |
//! | `BRINDLE_IPV6POOL_*`                    | the same for IPv6 (no IPIP)  | 122, NAT false |
//! | `BRINDLE_NO_DEFAULT_POOLS` (`NO_DEFAULT_POOLS`) | create none at all   | false          |
//!
//! A pool of a family is created, named `default-ipv4-ippool` / `default-ipv6-ippool`, only when
//! the datastore holds no pool of that family: pools edited or added later are never touched, and
//! nodes starting together all try the same name, so one create wins and the others see
//! `AlreadyExists`. Unlike calico-node, nothing is created when the CIDR variable is unset (Calico
//! falls back to 192.168.0.0/16): a pool nobody asked for could overlap the hosts' networks.
//! Mode values are read as Calico reads them: case-insensitive, `off` for Never, `cross-subnet`
//! for CrossSubnet.

use std::sync::Arc;

use brindle_ipam::model::{EncapMode, IpPoolSpec, Object};
use brindle_ipam::store::{Store, StoreError, StoreExt};
use ipnet::IpNet;
use tracing::info;

/// The names of the pools created at first start.
pub const DEFAULT_IPV4_POOL: &str = "default-ipv4-ippool";
pub const DEFAULT_IPV6_POOL: &str = "default-ipv6-ippool";

/// What `brindle-node --help` says about these variables.
pub const ENV_HELP: &str = "\
Default IP pools, created at start when the datastore holds no pool of the family (docs/install.md):
  BRINDLE_IPV4POOL_CIDR            the IPv4 pool to create (unset: none)
  BRINDLE_IPV4POOL_BLOCK_SIZE      per-node block prefix length [26]
  BRINDLE_IPV4POOL_IPIP            Never|Always|CrossSubnet [Never]
  BRINDLE_IPV4POOL_VXLAN           Never|Always|CrossSubnet [Never]
  BRINDLE_IPV4POOL_NAT_OUTGOING    true|false [true]
  BRINDLE_IPV4POOL_NODE_SELECTOR   selector of the nodes that take blocks [all()]
  BRINDLE_IPV4POOL_DISABLE_BGP_EXPORT  true|false [false]
  BRINDLE_IPV6POOL_*               the same for IPv6 (no IPIP; block size 122, NAT false)
  BRINDLE_NO_DEFAULT_POOLS         true: create none
Each also accepts Calico's name (CALICO_IPV4POOL_CIDR, ..., NO_DEFAULT_POOLS); BRINDLE_* wins.";

/// A bad value in one of the variables.
#[derive(Debug, thiserror::Error)]
pub enum DefaultPoolError {
    #[error("{var}={value:?}: {reason}")]
    BadValue {
        var: String,
        value: String,
        reason: String,
    },
    #[error("creating the default pool {name}: {source}")]
    Store { name: String, source: StoreError },
}

/// The pools to create when their family has none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DefaultPoolsConfig {
    pub v4: Option<IpPoolSpec>,
    pub v6: Option<IpPoolSpec>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::V4 => "IPV4POOL",
            Family::V6 => "IPV6POOL",
        }
    }
}

/// Reads `BRINDLE_<name>`, else Calico's `<calico>`; the variable found comes with the value.
fn lookup(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    calico: &str,
) -> Option<(String, String)> {
    let brindle = format!("BRINDLE_{name}");
    [brindle, calico.to_string()]
        .into_iter()
        .find_map(|var| env(&var).map(|value| (var, value.trim().to_string())))
        .filter(|(_, value)| !value.is_empty())
}

fn bad(var: &str, value: &str, reason: impl Into<String>) -> DefaultPoolError {
    DefaultPoolError::BadValue {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `true`/`false` as Calico's env parsing takes them.
fn parse_bool(var: &str, value: &str) -> Result<bool, DefaultPoolError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(bad(var, value, "expected true or false")),
    }
}

/// An encapsulation mode, case-insensitive, with Calico's `off` and `cross-subnet` spellings.
pub fn parse_mode(var: &str, value: &str) -> Result<EncapMode, DefaultPoolError> {
    match value.to_ascii_lowercase().as_str() {
        "never" | "off" | "false" => Ok(EncapMode::Never),
        "always" => Ok(EncapMode::Always),
        "crosssubnet" | "cross-subnet" => Ok(EncapMode::CrossSubnet),
        _ => Err(bad(var, value, "expected Never, Always or CrossSubnet")),
    }
}

fn pool_from_env(
    env: &impl Fn(&str) -> Option<String>,
    family: Family,
) -> Result<Option<IpPoolSpec>, DefaultPoolError> {
    let get = |field: &str| {
        let name = format!("{}_{field}", family.prefix());
        lookup(env, &name, &format!("CALICO_{name}"))
    };
    let Some((var, value)) = get("CIDR") else {
        return Ok(None);
    };
    let cidr: IpNet = value
        .parse()
        .map_err(|e| bad(&var, &value, format!("not a CIDR: {e}")))?;
    match (family, cidr) {
        (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)) => {}
        (Family::V4, _) => return Err(bad(&var, &value, "an IPv6 CIDR for the IPv4 pool")),
        (Family::V6, _) => return Err(bad(&var, &value, "an IPv4 CIDR for the IPv6 pool")),
    }
    let mut spec = IpPoolSpec {
        cidr,
        block_size: None,
        ipip_mode: EncapMode::Never,
        vxlan_mode: EncapMode::Never,
        nat_outgoing: family == Family::V4,
        disabled: false,
        node_selector: None,
        allowed_uses: None,
        disable_bgp_export: false,
    };
    if let Some((var, value)) = get("BLOCK_SIZE") {
        let size = value
            .parse::<u8>()
            .map_err(|_| bad(&var, &value, "not a prefix length"))?;
        spec.block_size = Some(size);
    }
    if let Some((var, value)) = get("IPIP") {
        spec.ipip_mode = parse_mode(&var, &value)?;
    }
    if let Some((var, value)) = get("VXLAN") {
        spec.vxlan_mode = parse_mode(&var, &value)?;
    }
    if let Some((var, value)) = get("NAT_OUTGOING") {
        spec.nat_outgoing = parse_bool(&var, &value)?;
    }
    if let Some((_, value)) = get("NODE_SELECTOR") {
        spec.node_selector = Some(value);
    }
    if let Some((var, value)) = get("DISABLE_BGP_EXPORT") {
        spec.disable_bgp_export = parse_bool(&var, &value)?;
    }
    // The same checks `brindlectl apply` makes, named after the variables.
    spec.validate()
        .map_err(|reason| bad(&var, &value, format!("the pool is invalid: {reason}")))?;
    Ok(Some(spec))
}

impl DefaultPoolsConfig {
    /// The pools the environment asks for; `env` reads a variable (`std::env::var(..).ok()`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, DefaultPoolError> {
        if let Some((var, value)) = lookup(&env, "NO_DEFAULT_POOLS", "NO_DEFAULT_POOLS") {
            if parse_bool(&var, &value)? {
                return Ok(DefaultPoolsConfig::default());
            }
        }
        Ok(DefaultPoolsConfig {
            v4: pool_from_env(&env, Family::V4)?,
            v6: pool_from_env(&env, Family::V6)?,
        })
    }

    /// From the process environment.
    pub fn from_process_env() -> Result<Self, DefaultPoolError> {
        Self::from_env(|var| std::env::var(var).ok())
    }

    /// Creates each configured pool whose family has no pool yet; the names of those created.
    /// A pool created meanwhile by another node under the same name counts as done.
    pub async fn ensure(&self, store: &Arc<dyn Store>) -> Result<Vec<String>, DefaultPoolError> {
        let wanted: Vec<(&str, &IpPoolSpec)> = [
            (DEFAULT_IPV4_POOL, self.v4.as_ref()),
            (DEFAULT_IPV6_POOL, self.v6.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, spec)| spec.map(|s| (name, s)))
        .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let store_err = |name: &str, source| DefaultPoolError::Store {
            name: name.to_string(),
            source,
        };
        let (existing, _) = store
            .list_objs::<IpPoolSpec>()
            .await
            .map_err(|e| store_err("(listing the pools)", e))?;
        let mut created = Vec::new();
        for (name, spec) in wanted {
            if let Some(pool) = existing
                .iter()
                .find(|p| p.spec.cidr.addr().is_ipv4() == spec.cidr.addr().is_ipv4())
            {
                info!(
                    pool = %pool.metadata.name,
                    cidr = %pool.spec.cidr,
                    "a pool of this family exists; no default pool created"
                );
                continue;
            }
            match store.create_obj(&Object::new(name, spec.clone())).await {
                Ok(_) => {
                    info!(pool = name, cidr = %spec.cidr, "default IP pool created");
                    created.push(name.to_string());
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    info!(pool = name, "default IP pool created by another node");
                }
                Err(e) => return Err(store_err(name, e)),
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var| map.get(var).cloned()
    }

    #[test]
    fn nothing_without_a_cidr() {
        let config = DefaultPoolsConfig::from_env(env(&[("BRINDLE_IPV4POOL_VXLAN", "Always")]))
            .expect("valid");
        assert_eq!(config, DefaultPoolsConfig::default());
    }

    #[test]
    fn brindle_names_with_calico_defaults() {
        let config = DefaultPoolsConfig::from_env(env(&[
            ("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16"),
            ("BRINDLE_IPV4POOL_VXLAN", "cross-subnet"),
            ("BRINDLE_IPV6POOL_CIDR", "fd00:10:244::/48"),
        ]))
        .expect("valid");
        let v4 = config.v4.expect("v4 pool");
        assert_eq!(v4.cidr.to_string(), "10.244.0.0/16");
        assert_eq!(v4.block_size(), 26);
        assert_eq!(v4.vxlan_mode, EncapMode::CrossSubnet);
        assert_eq!(v4.ipip_mode, EncapMode::Never);
        assert!(v4.nat_outgoing, "IPv4 NAT outgoing defaults to true");
        let v6 = config.v6.expect("v6 pool");
        assert_eq!(v6.block_size(), 122);
        assert!(!v6.nat_outgoing, "IPv6 NAT outgoing defaults to false");
    }

    #[test]
    fn calico_names_are_aliases_and_brindle_wins() {
        let config = DefaultPoolsConfig::from_env(env(&[
            ("CALICO_IPV4POOL_CIDR", "192.168.0.0/16"),
            ("CALICO_IPV4POOL_IPIP", "ALWAYS"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "24"),
            ("CALICO_IPV4POOL_NAT_OUTGOING", "false"),
            ("BRINDLE_IPV4POOL_BLOCK_SIZE", "28"),
        ]))
        .expect("valid");
        let v4 = config.v4.expect("v4 pool");
        assert_eq!(v4.cidr.to_string(), "192.168.0.0/16");
        assert_eq!(v4.ipip_mode, EncapMode::Always);
        assert_eq!(v4.block_size, Some(28));
        assert!(!v4.nat_outgoing);
    }

    #[test]
    fn no_default_pools_wins() {
        for var in ["NO_DEFAULT_POOLS", "BRINDLE_NO_DEFAULT_POOLS"] {
            let config = DefaultPoolsConfig::from_env(env(&[
                ("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16"),
                (var, "true"),
            ]))
            .expect("valid");
            assert_eq!(config, DefaultPoolsConfig::default(), "{var}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("BRINDLE_IPV4POOL_CIDR", "10.244.0.0")],
                "BRINDLE_IPV4POOL_CIDR",
            ),
            (
                &[("CALICO_IPV4POOL_CIDR", "fd00::/48")],
                "CALICO_IPV4POOL_CIDR",
            ),
            (
                &[
                    ("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16"),
                    ("BRINDLE_IPV4POOL_VXLAN", "sometimes"),
                ],
                "BRINDLE_IPV4POOL_VXLAN",
            ),
            (
                &[
                    ("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16"),
                    ("BRINDLE_IPV4POOL_BLOCK_SIZE", "12"),
                ],
                "blockSize",
            ),
            (
                &[
                    ("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16"),
                    ("BRINDLE_IPV4POOL_IPIP", "Always"),
                    ("BRINDLE_IPV4POOL_VXLAN", "Always"),
                ],
                "cannot both be enabled",
            ),
            (
                &[
                    ("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16"),
                    ("BRINDLE_IPV4POOL_NAT_OUTGOING", "maybe"),
                ],
                "BRINDLE_IPV4POOL_NAT_OUTGOING",
            ),
            (
                &[
                    ("BRINDLE_IPV6POOL_CIDR", "fd00::/48"),
                    ("BRINDLE_IPV6POOL_IPIP", "Always"),
                ],
                "IPv4 only",
            ),
        ];
        for (vars, want) in cases {
            let err = DefaultPoolsConfig::from_env(env(vars))
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(want), "{vars:?}: {err}");
        }
    }
}
