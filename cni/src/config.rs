//! What the runtime tells the plugin: the network configuration on stdin ([`NetConf`]), the
//! `CNI_*` environment ([`RuntimeEnv`]) and the `CNI_ARGS` key-value list ([`CniArgs`]).
//!
//! Parsing and validation are separate steps: [`RawNetConf::parse`] only checks JSON syntax and
//! field types, [`RawNetConf::validate`] checks meaning. Between the two the plugin can learn the
//! requested `cniVersion` for its error output even when another field is wrong.
//!
//! Unknown fields are ignored on purpose (no `deny_unknown_fields`): the CNI spec lets runtimes
//! add keys (`runtimeConfig`, `args`, `cniVersions`...) and a conflist shared with other tools
//! may carry theirs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use brindle_agent::api;
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::log::LogLevel;
use crate::version::CniVersion;

/// Largest stdin the plugin accepts. A conflist with a `prevResult` is a few KiB.
pub(crate) const MAX_STDIN: usize = 1 << 20;

/// The smallest MTU an IPv4 interface may have (RFC 791).
const MIN_MTU: u64 = 68;
const MAX_MTU: u64 = 65535;

/// How long the plugin waits for the agent by default. Allocation may wait on the datastore;
/// Calico's IPAM allows 90 s as well.
pub(crate) const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_AGENT_TIMEOUT_SECONDS: u64 = 3600;

/// The network configuration after parsing: JSON syntax and field types are right.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RawNetConf {
    cni_version: Option<String>,
    name: Option<String>,
    plugin_type: Option<String>,
    agent_socket: Option<String>,
    mtu: Option<u64>,
    log_level: Option<String>,
    agent_timeout_seconds: Option<u64>,
    prev_result: Option<Value>,
    runtime_config: Option<Value>,
    capabilities: Option<Value>,
    valid_attachments: Option<Vec<api::CniAttachment>>,
    ipam: Option<Value>,
}

/// `ipam.type` values that mean "the agent's own block IPAM": Calico's name is accepted so a
/// Calico conflist carries over.
const OWN_IPAM_TYPES: [&str; 3] = ["brindle", "brindle-ipam", "calico-ipam"];

/// The GC input key (CNI spec 1.1). libcni also sends it as `cni.dev/attachments` (a name from
/// an earlier draft); both are read.
pub(crate) const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
const VALID_ATTACHMENTS_OLD: &str = "cni.dev/attachments";

/// The network configuration after validation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NetConf {
    pub(crate) cni_version: CniVersion,
    /// The network name; with the container ID it forms the IPAM handle.
    pub(crate) name: String,
    /// The agent's socket (`agent_socket`, default [`api::DEFAULT_SOCKET`]).
    pub(crate) agent_socket: PathBuf,
    /// `None` when absent or 0: the agent picks the MTU.
    pub(crate) mtu: Option<u32>,
    pub(crate) log_level: LogLevel,
    /// `agent_timeout_seconds`: deadline for one exchange with the agent.
    pub(crate) agent_timeout: Duration,
    /// `ipam.assign_ipv4` / `ipam.assign_ipv6` (Calico's keys, `true`/`false` or their
    /// strings): `None` lets the agent decide from the pools.
    pub(crate) assign_ipv4: Option<bool>,
    pub(crate) assign_ipv6: Option<bool>,
    /// The previous plugin's result (ADD in a chain) or the cached result (CHECK, DEL).
    pub(crate) prev_result: Option<Value>,
    #[allow(dead_code)]
    pub(crate) runtime_config: Option<Value>,
    #[allow(dead_code)]
    pub(crate) capabilities: Option<Value>,
    /// `cni.dev/valid-attachments`, present at GC.
    pub(crate) valid_attachments: Option<Vec<api::CniAttachment>>,
}

impl RawNetConf {
    /// Decodes stdin. Bad JSON, or JSON that is not an object, is code 6; a known field of the
    /// wrong type is code 7 naming the field.
    pub(crate) fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::Decode {
                reason: "stdin is empty; the runtime must pass the network configuration".into(),
            });
        }
        let value: Value = serde_json::from_slice(stdin).map_err(|e| CniError::Decode {
            reason: e.to_string(),
        })?;
        let Value::Object(map) = value else {
            return Err(CniError::Decode {
                reason: "the network configuration is not a JSON object".into(),
            });
        };
        Ok(RawNetConf {
            cni_version: opt_string(&map, "cniVersion")?,
            name: opt_string(&map, "name")?,
            plugin_type: opt_string(&map, "type")?,
            agent_socket: opt_string(&map, "agent_socket")?,
            mtu: opt_u64(&map, "mtu")?,
            log_level: opt_string(&map, "log_level")?,
            agent_timeout_seconds: opt_u64(&map, "agent_timeout_seconds")?,
            prev_result: opt_object(&map, "prevResult")?,
            runtime_config: opt_object(&map, "runtimeConfig")?,
            capabilities: opt_object(&map, "capabilities")?,
            ipam: opt_object(&map, "ipam")?,
            valid_attachments: match opt_attachments(&map, VALID_ATTACHMENTS)? {
                Some(list) => Some(list),
                None => opt_attachments(&map, VALID_ATTACHMENTS_OLD)?,
            },
        })
    }

    /// The requested version if it is one we speak: the `cniVersion` of an error's output.
    pub(crate) fn version_hint(&self) -> Option<CniVersion> {
        self.cni_version
            .as_deref()
            .and_then(|v| CniVersion::parse(v).ok())
    }

    /// The log level asked for, even if the rest of the configuration is invalid.
    pub(crate) fn log_level_hint(&self) -> LogLevel {
        self.log_level
            .as_deref()
            .and_then(LogLevel::parse)
            .unwrap_or_default()
    }

    pub(crate) fn validate(self) -> Result<NetConf, CniError> {
        let version = self.cni_version.ok_or_else(|| missing("cniVersion"))?;
        let cni_version = CniVersion::parse(&version)?;

        let name = self.name.ok_or_else(|| missing("name"))?;
        if !is_valid_network_name(&name) {
            return Err(CniError::InvalidConfig {
                field: "name",
                reason: format!(
                    "{name:?} is not a valid network name (letters, digits, '_', '.', '-'; \
                     starting with a letter or digit)"
                ),
            });
        }
        // Addresses come from the agent's IPAM; silently ignoring a request to delegate to
        // another IPAM plugin would hand out addresses the user did not ask for.
        if let Some(ipam) = &self.ipam {
            match ipam.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if OWN_IPAM_TYPES.contains(&t.as_str()) => {}
                Some(other) => {
                    return Err(CniError::UnsupportedField {
                        field: "ipam.type",
                        reason: format!(
                            "{other} is not supported: Brindle allocates addresses with its own \
                             IPAM (leave ipam out, or use one of {OWN_IPAM_TYPES:?})"
                        ),
                    })
                }
            }
        }
        // `type` names this binary; the runtime found us by it. Not compared with "brindle" so
        // the binary may be installed under another name.
        let _ = self.plugin_type;

        let agent_socket = match self.agent_socket {
            None => PathBuf::from(api::DEFAULT_SOCKET),
            Some(s) if s.starts_with('/') => PathBuf::from(s),
            Some(s) => {
                return Err(CniError::InvalidConfig {
                    field: "agent_socket",
                    reason: format!("{s:?} is not an absolute path"),
                })
            }
        };

        let mtu = match self.mtu {
            None | Some(0) => None,
            Some(m) if (MIN_MTU..=MAX_MTU).contains(&m) => u32::try_from(m).ok(),
            Some(m) => {
                return Err(CniError::InvalidConfig {
                    field: "mtu",
                    reason: format!("{m} is outside {MIN_MTU}..={MAX_MTU} (0 lets the agent pick)"),
                })
            }
        };

        let log_level = match self.log_level.as_deref() {
            None => LogLevel::default(),
            Some(s) => LogLevel::parse(s).ok_or_else(|| CniError::InvalidConfig {
                field: "log_level",
                reason: format!("{s:?} is not one of none, error, warn, info, debug"),
            })?,
        };

        let agent_timeout = match self.agent_timeout_seconds {
            None => DEFAULT_AGENT_TIMEOUT,
            Some(t) if (1..=MAX_AGENT_TIMEOUT_SECONDS).contains(&t) => Duration::from_secs(t),
            Some(t) => {
                return Err(CniError::InvalidConfig {
                    field: "agent_timeout_seconds",
                    reason: format!("{t} is outside 1..={MAX_AGENT_TIMEOUT_SECONDS}"),
                })
            }
        };

        let (assign_ipv4, assign_ipv6) = match &self.ipam {
            Some(Value::Object(ipam)) => (
                opt_flag(ipam, "assign_ipv4", "ipam.assign_ipv4")?,
                opt_flag(ipam, "assign_ipv6", "ipam.assign_ipv6")?,
            ),
            _ => (None, None),
        };
        if assign_ipv4 == Some(false) && assign_ipv6 == Some(false) {
            return Err(CniError::InvalidConfig {
                field: "ipam.assign_ipv4",
                reason: "assign_ipv4 and assign_ipv6 are both false: the pod would get no address"
                    .into(),
            });
        }

        Ok(NetConf {
            cni_version,
            name,
            agent_socket,
            mtu,
            log_level,
            agent_timeout,
            assign_ipv4,
            assign_ipv6,
            prev_result: self.prev_result,
            runtime_config: self.runtime_config,
            capabilities: self.capabilities,
            valid_attachments: self.valid_attachments,
        })
    }
}

fn missing(field: &'static str) -> CniError {
    CniError::InvalidConfig {
        field,
        reason: "missing".into(),
    }
}

fn wrong_type(field: &'static str, expected: &str, got: &Value) -> CniError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    CniError::InvalidConfig {
        field,
        reason: format!("expected {expected}, got {got}"),
    }
}

/// A string field; `null` counts as absent.
fn opt_string(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, CniError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

/// A non-negative integer field; `null` counts as absent.
fn opt_u64(map: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, CniError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(field, "a non-negative integer", v)),
        Some(other) => Err(wrong_type(field, "a non-negative integer", other)),
    }
}

/// A flag as Calico's conflists write it: `true`, `false`, `"true"` or `"false"`; `null` counts
/// as absent.
fn opt_flag(
    map: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<bool>, CniError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(wrong_type(
            field,
            "true, false, \"true\" or \"false\"",
            other,
        )),
    }
}

/// An object field kept as JSON; `null` counts as absent.
fn opt_object(map: &Map<String, Value>, field: &'static str) -> Result<Option<Value>, CniError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(wrong_type(field, "an object", other)),
    }
}

/// `cni.dev/valid-attachments`: an array of `{"containerID": string, "ifname": string}`; `null`
/// counts as absent.
fn opt_attachments(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<api::CniAttachment>>, CniError> {
    let items = match map.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type(field, "an array", other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let bad = |reason: String| CniError::InvalidConfig {
            field,
            reason: format!("entry {i}: {reason}"),
        };
        let Value::Object(obj) = item else {
            return Err(bad("expected an object".into()));
        };
        let get = |key: &str| match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(bad(format!("{key} must be a non-empty string"))),
        };
        out.push(api::CniAttachment {
            container_id: get("containerID")?,
            ifname: get("ifname")?,
        });
    }
    Ok(Some(out))
}

/// The CNI spec's network name rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. The same rule applies to
/// container IDs.
fn is_valid_network_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The `CNI_*` variables, as the runtime set them. Which are required depends on the verb, so
/// the `require_*` methods check on use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuntimeEnv {
    pub(crate) command: Option<String>,
    container_id: Option<String>,
    netns: Option<String>,
    ifname: Option<String>,
    args: Option<String>,
    /// Not used: the plugin delegates to no other plugin. Read so that a later IPAM delegation
    /// finds it here.
    #[allow(dead_code)]
    pub(crate) path: Option<String>,
}

impl RuntimeEnv {
    /// Reads the variables through `lookup` (`std::env::var_os` in the binary, a map in tests).
    /// A value that is not UTF-8 is code 4.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, CniError> {
        let get = |var: &'static str| -> Result<Option<String>, CniError> {
            match lookup(var) {
                None => Ok(None),
                Some(os) => os.into_string().map(Some).map_err(|_| CniError::Env {
                    var,
                    reason: "not valid UTF-8".into(),
                }),
            }
        };
        Ok(RuntimeEnv {
            command: get("CNI_COMMAND")?,
            container_id: get("CNI_CONTAINERID")?,
            netns: get("CNI_NETNS")?,
            ifname: get("CNI_IFNAME")?,
            args: get("CNI_ARGS")?,
            path: get("CNI_PATH")?,
        })
    }

    /// `CNI_CONTAINERID`, checked against the spec's character rule.
    pub(crate) fn require_container_id(&self) -> Result<&str, CniError> {
        let id = require(&self.container_id, "CNI_CONTAINERID")?;
        if !is_valid_network_name(id) {
            return Err(CniError::Env {
                var: "CNI_CONTAINERID",
                reason: format!("invalid characters in {id:?}"),
            });
        }
        Ok(id)
    }

    /// `CNI_IFNAME`, checked as Linux checks interface names.
    pub(crate) fn require_ifname(&self) -> Result<&str, CniError> {
        let name = require(&self.ifname, "CNI_IFNAME")?;
        let bad = |reason: &str| CniError::Env {
            var: "CNI_IFNAME",
            reason: format!("{name:?} {reason}"),
        };
        // IFNAMSIZ is 16 including the NUL.
        if name.len() > 15 {
            return Err(bad("is longer than 15 bytes"));
        }
        if name == "." || name == ".." {
            return Err(bad("is not a valid interface name"));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(bad("contains '/', ':', white space or a control character"));
        }
        Ok(name)
    }

    /// `CNI_NETNS`, required at ADD and CHECK.
    pub(crate) fn require_netns(&self) -> Result<&str, CniError> {
        require(&self.netns, "CNI_NETNS")
    }

    /// `CNI_NETNS` at DEL: it may be empty when the runtime already removed the namespace.
    pub(crate) fn netns_or_empty(&self) -> &str {
        self.netns.as_deref().unwrap_or("")
    }

    pub(crate) fn cni_args(&self) -> Result<CniArgs, CniError> {
        CniArgs::parse(self.args.as_deref().unwrap_or(""))
    }
}

fn require<'a>(value: &'a Option<String>, var: &'static str) -> Result<&'a str, CniError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(CniError::Env {
            var,
            reason: "not set; the runtime must set it".into(),
        }),
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`. Kubernetes runtimes pass the pod's identity here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CniArgs {
    pub(crate) pod_namespace: Option<String>,
    pub(crate) pod_name: Option<String>,
    pub(crate) infra_container_id: Option<String>,
    pub(crate) pod_uid: Option<String>,
    pub(crate) ignore_unknown: bool,
}

impl CniArgs {
    /// Parses `CNI_ARGS`. As libcni's `LoadArgs` does, a key we do not know is an error unless
    /// `IgnoreUnknown` is true (kubelet and containerd always set it).
    pub(crate) fn parse(s: &str) -> Result<Self, CniError> {
        let bad = |reason: String| CniError::Env {
            var: "CNI_ARGS",
            reason,
        };
        let mut args = CniArgs::default();
        let mut unknown = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(bad(format!("{pair:?} is not a KEY=VALUE pair")));
            };
            if key.is_empty() {
                return Err(bad(format!("{pair:?} has an empty key")));
            }
            let value = (!value.is_empty()).then(|| value.to_string());
            match key {
                "K8S_POD_NAMESPACE" => args.pod_namespace = value,
                "K8S_POD_NAME" => args.pod_name = value,
                "K8S_POD_INFRA_CONTAINER_ID" => args.infra_container_id = value,
                "K8S_POD_UID" => args.pod_uid = value,
                "IgnoreUnknown" => {
                    args.ignore_unknown = match value.as_deref().unwrap_or("") {
                        "1" | "true" | "True" | "TRUE" => true,
                        "0" | "false" | "False" | "FALSE" => false,
                        other => {
                            return Err(bad(format!(
                                "IgnoreUnknown={other:?} is not a boolean (1, true, 0, false)"
                            )))
                        }
                    }
                }
                other => unknown.push(other.to_string()),
            }
        }
        if !unknown.is_empty() && !args.ignore_unknown {
            return Err(bad(format!(
                "unknown key(s) {}; set IgnoreUnknown=1 to ignore them",
                unknown.join(", ")
            )));
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use std::collections::HashMap;

    fn conf(json: &str) -> Result<NetConf, CniError> {
        RawNetConf::parse(json.as_bytes())?.validate()
    }

    #[test]
    fn good_config_with_defaults() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"brindle"}"#)
            .expect("valid");
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name, "k8s-pod-network");
        assert_eq!(c.agent_socket, PathBuf::from(api::DEFAULT_SOCKET));
        assert_eq!(c.mtu, None);
        assert_eq!(c.log_level, LogLevel::default());
        assert_eq!(c.agent_timeout, DEFAULT_AGENT_TIMEOUT);
        assert_eq!(c.prev_result, None);
    }

    #[test]
    fn good_config_with_every_field() {
        let c = conf(
            r#"{"cniVersion":"0.3.1","name":"net1","type":"brindle",
                "agent_socket":"/tmp/a.sock","mtu":1450,"log_level":"debug",
                "agent_timeout_seconds":5,
                "prevResult":{"cniVersion":"0.3.1","ips":[]},
                "runtimeConfig":{"portMappings":[]},"capabilities":{"portMappings":true},
                "ipam":{"type":"calico-ipam"},"something_else":[1,2,3]}"#,
        )
        .expect("valid");
        assert_eq!(c.cni_version, CniVersion::V0_3_1);
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.agent_timeout, Duration::from_secs(5));
        assert!(c.prev_result.is_some());
        assert!(c.runtime_config.is_some());
        assert!(c.capabilities.is_some());
    }

    #[test]
    fn ipam_assign_flags_choose_the_families() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n"}"#).expect("valid");
        assert_eq!((c.assign_ipv4, c.assign_ipv6), (None, None));
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"n",
                "ipam":{"type":"calico-ipam","assign_ipv4":"false","assign_ipv6":"true"}}"#,
        )
        .expect("valid");
        assert_eq!((c.assign_ipv4, c.assign_ipv6), (Some(false), Some(true)));
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"assign_ipv6":false}}"#)
            .expect("valid");
        assert_eq!((c.assign_ipv4, c.assign_ipv6), (None, Some(false)));

        for (ipam, field) in [
            (r#"{"assign_ipv6":"yes"}"#, "ipam.assign_ipv6"),
            (r#"{"assign_ipv4":1}"#, "ipam.assign_ipv4"),
            (
                r#"{"assign_ipv4":false,"assign_ipv6":"false"}"#,
                "ipam.assign_ipv4",
            ),
            (r#""calico-ipam""#, "ipam"),
        ] {
            let json = format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ipam}}}"#);
            match conf(&json) {
                Err(CniError::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{ipam}"),
                other => panic!("{ipam}: expected an invalid config, got {other:?}"),
            }
        }
    }

    #[test]
    fn delegating_to_another_ipam_plugin_is_code_2() {
        for ok in [
            r#"{}"#,
            r#"{"type":"brindle"}"#,
            r#"{"type":"calico-ipam","assign_ipv4":"true"}"#,
        ] {
            let input = format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ok}}}"#);
            assert!(conf(&input).is_ok(), "{ok}");
        }
        for bad in [r#"{"type":"host-local"}"#, r#"{"type":5}"#] {
            let input = format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{bad}}}"#);
            let err = conf(&input).expect_err(bad);
            assert_eq!(err.code(), 2, "{bad}");
            assert!(err.to_string().contains("ipam.type"), "{err}");
        }
        let err = conf(r#"{"cniVersion":"1.0.0","name":"n","ipam":"host-local"}"#)
            .expect_err("not an object");
        assert_eq!(err.code(), 7);
    }

    #[test]
    fn valid_attachments_are_read_under_both_names() {
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"n",
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            c.valid_attachments,
            Some(vec![api::CniAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        let c =
            conf(r#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[]}"#).expect("valid");
        assert_eq!(c.valid_attachments, Some(vec![]));
        let c = conf(r#"{"cniVersion":"1.1.0","name":"n"}"#).expect("valid");
        assert_eq!(c.valid_attachments, None);
        for bad in [
            r#""cni.dev/valid-attachments":{}"#,
            r#""cni.dev/valid-attachments":["c1"]"#,
            r#""cni.dev/valid-attachments":[{"containerID":"c1"}]"#,
            r#""cni.dev/valid-attachments":[{"containerID":"","ifname":"eth0"}]"#,
            r#""cni.dev/valid-attachments":[{"containerID":1,"ifname":"eth0"}]"#,
        ] {
            let input = format!(r#"{{"cniVersion":"1.1.0","name":"n",{bad}}}"#);
            let err = conf(&input).expect_err(bad);
            assert_eq!(err.code(), 7, "{bad}");
            assert!(
                err.to_string().contains("cni.dev/valid-attachments"),
                "{err}"
            );
        }
    }

    #[test]
    fn mtu_zero_lets_the_agent_decide() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","mtu":0}"#).expect("valid");
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn malformed_json_is_code_6() {
        for input in [
            "",
            "   ",
            "{",
            "not json",
            "{\"cniVersion\":",
            "[1,2]",
            "42",
            "\"x\"",
        ] {
            let err = conf(input).expect_err(input);
            assert_eq!(err.code(), 6, "{input:?}: {err}");
        }
    }

    #[test]
    fn missing_name_or_version_is_code_7() {
        let err = conf(r#"{"name":"n"}"#).expect_err("no version");
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("cniVersion"), "{err}");

        let err = conf(r#"{"cniVersion":"1.0.0"}"#).expect_err("no name");
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("name"), "{err}");

        let err = conf(r#"{"cniVersion":"1.0.0","name":"-bad"}"#).expect_err("bad name");
        assert_eq!(err.code(), 7);
    }

    #[test]
    fn wrong_field_types_are_code_7_naming_the_field() {
        for (input, field) in [
            (r#"{"cniVersion":1,"name":"n"}"#, "cniVersion"),
            (r#"{"cniVersion":"1.0.0","name":["n"]}"#, "name"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":"1500"}"#, "mtu"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":-1}"#, "mtu"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":1500.5}"#, "mtu"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":70000}"#, "mtu"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":20}"#, "mtu"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","agent_socket":"rel.sock"}"#,
                "agent_socket",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","log_level":"loud"}"#,
                "log_level",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":"x"}"#,
                "prevResult",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","agent_timeout_seconds":0}"#,
                "agent_timeout",
            ),
        ] {
            let err = conf(input).expect_err(input);
            assert_eq!(err.code(), 7, "{input}: {err}");
            assert!(err.to_string().contains(field), "{input}: {err}");
        }
    }

    #[test]
    fn unsupported_version_is_code_1() {
        let err = conf(r#"{"cniVersion":"1.2.0","name":"n"}"#).expect_err("1.2.0");
        assert_eq!(err.code(), 1);
        let err = conf(r#"{"cniVersion":"0.2.0","name":"n"}"#).expect_err("0.2.0");
        assert_eq!(err.code(), 1);
    }

    #[test]
    fn version_hint_survives_other_errors() {
        let raw = RawNetConf::parse(br#"{"cniVersion":"0.4.0","mtu":3}"#).expect("parses");
        assert_eq!(raw.version_hint(), Some(CniVersion::V0_4_0));
        assert!(raw.validate().is_err());
        let raw = RawNetConf::parse(br#"{"cniVersion":"9.9.9"}"#).expect("parses");
        assert_eq!(raw.version_hint(), None);
    }

    #[test]
    fn cni_args_kubernetes() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1;K8S_OTHER=x",
        )
        .expect("valid");
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.infra_container_id.as_deref(), Some("abc123"));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        assert!(a.ignore_unknown);
    }

    #[test]
    fn cni_args_edge_cases() {
        assert_eq!(CniArgs::parse("").expect("empty"), CniArgs::default());
        assert_eq!(
            CniArgs::parse(";;").expect("only separators"),
            CniArgs::default()
        );
        // IgnoreUnknown may come after the unknown key.
        assert!(CniArgs::parse("FOO=1;IgnoreUnknown=true").is_ok());
        // A value may contain '='.
        let a = CniArgs::parse("K8S_POD_NAME=a=b").expect("valid");
        assert_eq!(a.pod_name.as_deref(), Some("a=b"));
        let a = CniArgs::parse("K8S_POD_NAME=").expect("valid");
        assert_eq!(a.pod_name, None);
    }

    #[test]
    fn cni_args_errors_are_code_4() {
        for input in [
            "FOO=1",
            "FOO=1;IgnoreUnknown=0",
            "K8S_POD_NAME",
            "=x",
            "IgnoreUnknown=maybe",
        ] {
            let err = CniArgs::parse(input).expect_err(input);
            assert_eq!(err.code(), 4, "{input}: {err}");
            assert!(err.to_string().contains("CNI_ARGS"), "{err}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> RuntimeEnv {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        RuntimeEnv::from_lookup(|k| map.get(k).cloned()).expect("utf-8")
    }

    #[test]
    fn runtime_env_required_variables_are_named() {
        let e = env(&[("CNI_COMMAND", "ADD")]);
        for (err, var) in [
            (e.require_container_id().expect_err("id"), "CNI_CONTAINERID"),
            (e.require_ifname().expect_err("ifname"), "CNI_IFNAME"),
            (e.require_netns().expect_err("netns"), "CNI_NETNS"),
        ] {
            assert_eq!(err.code(), 4);
            assert!(err.to_string().contains(var), "{err}");
        }
        assert_eq!(e.netns_or_empty(), "");

        let e = env(&[("CNI_CONTAINERID", ""), ("CNI_IFNAME", "")]);
        assert!(e.require_container_id().is_err());
        assert!(e.require_ifname().is_err());
    }

    #[test]
    fn runtime_env_values_are_checked() {
        let e = env(&[
            ("CNI_CONTAINERID", "abc$def"),
            ("CNI_IFNAME", "an-interface-name-too-long"),
        ]);
        assert_eq!(e.require_container_id().expect_err("chars").code(), 4);
        assert_eq!(e.require_ifname().expect_err("long").code(), 4);
        for bad in ["..", "a/b", "a b", "a:b"] {
            let e = env(&[("CNI_IFNAME", bad)]);
            assert!(e.require_ifname().is_err(), "{bad}");
        }
        let e = env(&[
            ("CNI_CONTAINERID", "0123abc_def.g-h"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert_eq!(e.require_container_id().ok(), Some("0123abc_def.g-h"));
        assert_eq!(e.require_ifname().ok(), Some("eth0"));
    }

    /// The example conflist's brindle entry, as a runtime hands it over (with the list's
    /// `name` and a `cniVersion` injected: `cniVersion` from a runtime before spec 1.1, the
    /// highest of `cniVersions` from a newer one), is a valid configuration.
    #[test]
    fn example_conflist_is_valid() {
        let list: Value = serde_json::from_str(include_str!("../../manifests/10-brindle.conflist"))
            .expect("json");
        let mut versions = vec![list["cniVersion"].clone()];
        versions.extend(list["cniVersions"].as_array().cloned().unwrap_or_default());
        assert!(versions.contains(&Value::from("1.1.0")), "{list}");
        for version in versions {
            let mut plugin = list["plugins"][0].clone();
            let obj = plugin.as_object_mut().expect("object");
            obj.insert("name".into(), list["name"].clone());
            obj.insert("cniVersion".into(), version.clone());
            assert_eq!(obj.get("type"), Some(&Value::from("brindle")));
            let c = conf(&plugin.to_string()).expect("valid");
            assert_eq!(c.cni_version.as_str(), version.as_str().unwrap_or(""));
            assert_eq!(c.name, "k8s-pod-network");
            assert_eq!(c.agent_socket, PathBuf::from(api::DEFAULT_SOCKET));
            assert_eq!(c.mtu, None);
        }
    }

    #[test]
    fn fuzz_config_parser_never_panics() {
        let mut rng = XorShift::new(0x5eed_c0de_0f16);
        let seeds: [&[u8]; 3] = [
            br#"{"cniVersion":"1.0.0","name":"n","mtu":1500,"log_level":"info"}"#,
            br#"{"cniVersion":"0.3.1","name":"k8s-pod-network","prevResult":{"ips":[]}}"#,
            b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
        ];
        for i in 0..5000 {
            let input = if i % 2 == 0 {
                rng.bytes(256)
            } else {
                rng.mutate(seeds[i % seeds.len()])
            };
            if let Ok(raw) = RawNetConf::parse(&input) {
                let _ = raw.version_hint();
                let _ = raw.log_level_hint();
                let _ = raw.validate();
            }
            let _ = CniArgs::parse(&String::from_utf8_lossy(&input));
        }
    }
}
