//! `brindle-bgpd`'s configuration file: parsing (serde, unknown keys refused) separate from
//! validation (typed errors naming the key).
//!
//! ```yaml
//! router_id: 10.0.0.1
//! asn: 64512
//! listen: 0.0.0.0:179          # default
//! originate: [10.244.0.0/26]
//! install_routes: false
//! hold_time: 90                # proposed hold time, s (0, or 3 and more)
//! connect_retry: 120           # ConnectRetryTime, s
//! next_hop_v6: fd00::1         # lets IPv4 sessions carry IPv6 routes, with this next hop
//! cluster_id: 10.0.0.1         # route reflection cluster (RFC 4456); default: router_id
//! graceful_restart:            # RFC 4724, as the restarting speaker
//!   enabled: false
//!   restart_time: 120          # s, 1 to 4095
//! peers:
//!   - address: 10.0.0.2
//!     asn: 64513
//!     passive: false
//!     multihop: 1              # eBGP TTL; absent means directly connected
//!     rr_client: false         # iBGP only: a route-reflector client (RFC 4456)
//!     password: secret         # TCP MD5 (RFC 2385)
//!     ttl_security: 1          # GTSM (RFC 5082): at most this many hops away
//!     max_prefixes: {limit: 1000, action: reset}   # warn | discard | reset
//! dynamic_peers:               # accepted from these ranges without a peers entry
//!   - {prefix: 10.0.1.0/24, asn: 64600}
//! metrics_listen: 0.0.0.0:9091 # Prometheus GET /metrics (brindle_bgp_*); absent: off
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

/// The file as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpdConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub originate: Vec<IpNet>,
    #[serde(default)]
    pub install_routes: bool,
    /// Hold time proposed in our OPEN, in seconds (RFC 4271 §4.2: 0, or 3 and more).
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// ConnectRetryTime, in seconds (RFC 4271 §10).
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u16,
    /// The next hop of our IPv6 routes over IPv4 sessions; with it IPv4 sessions carry IPv6
    /// unicast as well, without it only IPv4.
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Route-reflection cluster ID (RFC 4456 §7); absent: the router ID.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Ranges from which peers that are not in `peers` may connect.
    #[serde(default)]
    pub dynamic_peers: Vec<DynamicPeersConfig>,
    /// Where to serve Prometheus metrics (`GET /metrics`, the `brindle_bgp_*` series);
    /// absent: no metrics server. brindle-node's port is 9091.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

/// Peers accepted from a range (passive, with the range's AS).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicPeersConfig {
    pub prefix: IpNet,
    pub asn: u32,
    /// TCP MD5 key for every peer of the range.
    #[serde(default)]
    pub password: Option<String>,
}

/// A per-peer limit on received prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPrefixesConfig {
    pub limit: usize,
    #[serde(default)]
    pub action: MaxPrefixActionConfig,
}

/// What to do past the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaxPrefixActionConfig {
    #[default]
    Warn,
    Discard,
    Reset,
}

/// One configured neighbour.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default)]
    pub passive: bool,
    /// eBGP multihop TTL (RFC 4271 leaves it to configuration); absent = 1 hop.
    #[serde(default)]
    pub multihop: Option<u8>,
    /// A route-reflector client (RFC 4456): iBGP peers only.
    #[serde(default)]
    pub rr_client: bool,
    /// TCP MD5 signature key (RFC 2385), 1 to 80 octets.
    #[serde(default)]
    pub password: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default)]
    pub max_prefixes: Option<MaxPrefixesConfig>,
}

/// Graceful restart (RFC 4724) of this speaker.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GracefulRestartConfig {
    #[serde(default)]
    pub enabled: bool,
    /// How long peers keep our routes while we restart, in seconds (12 bits on the wire).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            enabled: false,
            restart_time: default_restart_time(),
        }
    }
}

fn default_restart_time() -> u16 {
    120
}

fn default_hold_time() -> u16 {
    brindle_bgp::fsm::DEFAULT_HOLD_TIME
}

fn default_connect_retry() -> u16 {
    brindle_bgp::fsm::DEFAULT_CONNECT_RETRY_TIME
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], brindle_bgp::BGP_PORT))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

impl BgpdConfig {
    /// Parses and validates a configuration text; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<BgpdConfig, ConfigError> {
        let config: BgpdConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason: reason.to_string(),
        };
        // RFC 6286 §2.1: a non-zero identifier; RFC 7607: AS 0 is reserved.
        if self.router_id.is_unspecified() {
            return Err(invalid("router_id".into(), "must not be 0.0.0.0"));
        }
        if self.asn == 0 {
            return Err(invalid("asn".into(), "AS 0 is reserved (RFC 7607)"));
        }
        if matches!(self.hold_time, 1 | 2) {
            return Err(invalid(
                "hold_time".into(),
                "must be 0 or at least 3 seconds (RFC 4271 §4.2)",
            ));
        }
        if self.connect_retry == 0 {
            return Err(invalid("connect_retry".into(), "must be at least 1 second"));
        }
        if !(1..=4095).contains(&self.graceful_restart.restart_time) {
            return Err(invalid(
                "graceful_restart.restart_time".into(),
                "must be 1 to 4095 seconds (RFC 4724 §3)",
            ));
        }
        if self.cluster_id.is_some_and(|c| c.is_unspecified()) {
            return Err(invalid("cluster_id".into(), "must not be 0.0.0.0"));
        }
        if let Some(nh) = self.next_hop_v6 {
            if nh.is_unspecified() || nh.is_multicast() || nh.to_ipv4_mapped().is_some() {
                return Err(invalid(
                    "next_hop_v6".into(),
                    "must be a global or unique-local IPv6 unicast address",
                ));
            }
        }
        for (i, prefix) in self.originate.iter().enumerate() {
            if prefix.trunc() != *prefix {
                return Err(invalid(
                    format!("originate[{i}]"),
                    &format!(
                        "{prefix} has host bits set (did you mean {}?)",
                        prefix.trunc()
                    ),
                ));
            }
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.asn == 0 {
                return Err(invalid(
                    format!("peers[{i}].asn"),
                    "AS 0 is reserved (RFC 7607)",
                ));
            }
            if peer.address.is_unspecified() || peer.address.is_multicast() {
                return Err(invalid(
                    format!("peers[{i}].address"),
                    "must be a unicast address",
                ));
            }
            if peer.multihop == Some(0) {
                return Err(invalid(format!("peers[{i}].multihop"), "must be 1 to 255"));
            }
            if peer.rr_client && peer.asn != self.asn {
                return Err(invalid(
                    format!("peers[{i}].rr_client"),
                    &format!(
                        "only an iBGP peer (asn {}) can be a route-reflector client (RFC 4456)",
                        self.asn
                    ),
                ));
            }
            if let Some(password) = &peer.password {
                if !valid_password(password) {
                    return Err(invalid(format!("peers[{i}].password"), PASSWORD_RULE));
                }
            }
            match peer.ttl_security {
                Some(0) => {
                    return Err(invalid(
                        format!("peers[{i}].ttl_security"),
                        "must be 1 to 255 hops",
                    ))
                }
                Some(_) if peer.multihop.is_some() => {
                    return Err(invalid(
                        format!("peers[{i}].ttl_security"),
                        "sends with TTL 255, so it replaces multihop: set one of them",
                    ))
                }
                _ => {}
            }
            if peer.max_prefixes.is_some_and(|m| m.limit == 0) {
                return Err(invalid(
                    format!("peers[{i}].max_prefixes.limit"),
                    "must be at least 1",
                ));
            }
            if self.peers[..i].iter().any(|p| p.address == peer.address) {
                return Err(invalid(
                    format!("peers[{i}].address"),
                    &format!("{} is configured twice", peer.address),
                ));
            }
        }
        for (i, range) in self.dynamic_peers.iter().enumerate() {
            if range.prefix.trunc() != range.prefix {
                return Err(invalid(
                    format!("dynamic_peers[{i}].prefix"),
                    &format!(
                        "{} has host bits set (did you mean {}?)",
                        range.prefix,
                        range.prefix.trunc()
                    ),
                ));
            }
            if range.asn == 0 {
                return Err(invalid(
                    format!("dynamic_peers[{i}].asn"),
                    "AS 0 is reserved (RFC 7607)",
                ));
            }
            if let Some(password) = &range.password {
                if !valid_password(password) {
                    return Err(invalid(
                        format!("dynamic_peers[{i}].password"),
                        PASSWORD_RULE,
                    ));
                }
            }
        }
        Ok(())
    }
}

const PASSWORD_RULE: &str = "must be 1 to 80 octets (TCP_MD5SIG_MAXKEYLEN)";

fn valid_password(password: &str) -> bool {
    brindle_bgp::speaker::Md5Key::new(password.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
router_id: 10.0.0.1
asn: 64512
originate: [10.244.0.0/26, 'fd00:244::/64']
install_routes: true
peers:
  - address: 10.0.0.2
    asn: 64513
  - address: 10.0.0.3
    asn: 64512
    passive: true
    multihop: 2
  - address: 10.0.0.4
    asn: 64514
    password: s3cret
    ttl_security: 1
    max_prefixes: {limit: 10, action: discard}
dynamic_peers:
  - {prefix: 10.1.0.0/24, asn: 64600, password: range-key}
metrics_listen: 127.0.0.1:9091
";

    #[test]
    fn a_full_file_parses_with_defaults() {
        let c = BgpdConfig::from_yaml("bgpd.yaml", GOOD).expect("valid");
        assert_eq!(c.listen, "0.0.0.0:179".parse().expect("addr"));
        assert_eq!(c.originate.len(), 2);
        assert!(c.install_routes);
        assert!(!c.peers[0].passive && c.peers[0].multihop.is_none());
        assert!(c.peers[1].passive && c.peers[1].multihop == Some(2));
        assert_eq!(c.peers[2].password.as_deref(), Some("s3cret"));
        assert_eq!(c.peers[2].ttl_security, Some(1));
        assert_eq!(
            c.peers[2].max_prefixes,
            Some(MaxPrefixesConfig {
                limit: 10,
                action: MaxPrefixActionConfig::Discard
            })
        );
        assert_eq!(c.dynamic_peers[0].asn, 64600);
        assert_eq!(
            c.metrics_listen,
            Some("127.0.0.1:9091".parse().expect("addr"))
        );
        let off = GOOD.replace("metrics_listen: 127.0.0.1:9091\n", "");
        let c = BgpdConfig::from_yaml("bgpd.yaml", &off).expect("valid");
        assert_eq!(c.metrics_listen, None);
        assert!(error(&GOOD.replace("127.0.0.1:9091", "9091")).contains("metrics_listen"));
        let warn = GOOD.replace(", action: discard", "");
        let c = BgpdConfig::from_yaml("bgpd.yaml", &warn).expect("valid");
        assert_eq!(
            c.peers[2].max_prefixes.map(|m| m.action),
            Some(MaxPrefixActionConfig::Warn)
        );
    }

    #[test]
    fn bad_security_keys_name_the_key() {
        assert!(error(&GOOD.replace("ttl_security: 1", "ttl_security: 0"))
            .contains("peers[2].ttl_security"));
        assert!(
            error(&GOOD.replace("ttl_security: 1", "ttl_security: 1\n    multihop: 3"))
                .contains("replaces multihop")
        );
        assert!(error(&GOOD.replace("password: s3cret", "password: ''"))
            .contains("peers[2].password: must be 1 to 80"));
        let long = "x".repeat(81);
        assert!(error(&GOOD.replace("s3cret", &long)).contains("peers[2].password"));
        assert!(error(&GOOD.replace("limit: 10", "limit: 0")).contains("max_prefixes.limit"));
        assert!(error(&GOOD.replace("action: discard", "action: drop")).contains("drop"));
        assert!(error(&GOOD.replace("10.1.0.0/24", "10.1.0.1/24"))
            .contains("dynamic_peers[0].prefix: 10.1.0.1/24 has host bits set"));
        assert!(error(&GOOD.replace("asn: 64600", "asn: 0")).contains("dynamic_peers[0].asn"));
    }

    fn error(text: &str) -> String {
        BgpdConfig::from_yaml("bgpd.yaml", text)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn bad_files_name_the_key() {
        assert!(error(&GOOD.replace("asn: 64512\n", "asn: 0\n")).contains("asn: AS 0"));
        assert!(
            error(&GOOD.replace("router_id: 10.0.0.1", "router_id: 0.0.0.0")).contains("router_id")
        );
        assert!(error(&GOOD.replace("10.244.0.0/26", "10.244.0.1/26")).contains("originate[0]"));
        assert!(error(&GOOD.replace("multihop: 2", "multihop: 0")).contains("peers[1].multihop"));
        assert!(error(&GOOD.replace("10.0.0.3", "10.0.0.2")).contains("configured twice"));
        assert!(error(&GOOD.replace("passive: true", "pasive: true")).contains("pasive"));
        assert!(error("router_id: [").starts_with("bgpd.yaml: "));
        assert!(error(&format!("{GOOD}hold_time: 2\n")).contains("hold_time: must be 0"));
        assert!(error(&format!("{GOOD}connect_retry: 0\n")).contains("connect_retry"));
        assert!(error(&format!("{GOOD}next_hop_v6: '::ffff:10.0.0.1'\n")).contains("next_hop_v6"));
        assert!(error(&format!("{GOOD}cluster_id: 0.0.0.0\n")).contains("cluster_id"));
        let ebgp_client = GOOD.replace("asn: 64513\n", "asn: 64513\n    rr_client: true\n");
        assert!(error(&ebgp_client).contains("peers[0].rr_client: only an iBGP peer"));
    }

    #[test]
    fn graceful_restart_keys() {
        let c = BgpdConfig::from_yaml("bgpd.yaml", GOOD).expect("valid");
        assert!(!c.graceful_restart.enabled);
        let gr = format!("{GOOD}graceful_restart: {{enabled: true, restart_time: 30}}\n");
        let c = BgpdConfig::from_yaml("bgpd.yaml", &gr).expect("valid");
        assert_eq!(
            c.graceful_restart,
            GracefulRestartConfig {
                enabled: true,
                restart_time: 30
            }
        );
        assert!(error(&gr.replace("30", "5000")).contains("graceful_restart.restart_time"));
        assert!(error(&gr.replace("enabled", "enable")).contains("enable"));
    }

    #[test]
    fn route_reflection_keys() {
        let text = GOOD.replace("passive: true", "rr_client: true");
        let c = BgpdConfig::from_yaml("bgpd.yaml", &format!("{text}cluster_id: 10.0.0.9\n"))
            .expect("valid");
        assert_eq!(c.cluster_id, Some("10.0.0.9".parse().expect("addr")));
        assert!(!c.peers[0].rr_client && c.peers[1].rr_client);
    }
}
