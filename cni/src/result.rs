//! What the plugin prints on stdout: the ADD result and the error object, per CNI version; and
//! what it reads back: the `prevResult` of a chain (ADD) or of the runtime's cache (CHECK).
//!
//! Differences between versions live here and in `version.rs`, nowhere else:
//! - up to 0.4.0 each `ips` entry carries `"version": "4"|"6"`; 1.0.0 dropped the field;
//! - from 1.1.0 both interfaces carry their `mtu`.
//!
//! A `prevResult` arrives in the requested version (the runtime converts it), so its entries are
//! passed through as they are: Brindle's interfaces are appended after the previous ones and its
//! `ips` point at them by index.

use std::collections::BTreeSet;
use std::net::IpAddr;

use brindle_agent::api::{ApiError, CniAddResponse};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version::CniVersion;

/// The result; entries are JSON values so a `prevResult`'s pass through untouched.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AddResult {
    cni_version: &'static str,
    interfaces: Vec<Value>,
    ips: Vec<Value>,
    routes: Vec<Value>,
    dns: Value,
}

#[derive(Debug, Serialize)]
struct Interface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    /// From 1.1.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct IpConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: &'a str,
    /// Index into `interfaces`. No `gateway`: the pod reaches 169.254.1.1 by a link route, and
    /// Calico omits it too.
    interface: usize,
}

#[derive(Debug, Serialize)]
struct Route<'a> {
    dst: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorOut<'a> {
    cni_version: &'static str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

/// A `prevResult`, checked for shape: the lists are arrays of objects.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PrevResult {
    interfaces: Vec<Value>,
    ips: Vec<Value>,
    routes: Vec<Value>,
    dns: Option<Value>,
}

impl PrevResult {
    /// Reads `prevResult`; a list that is not an array of objects is code 7 naming it.
    pub(crate) fn parse(v: &Value) -> Result<Self, CniError> {
        let Value::Object(map) = v else {
            return Err(prev_error("is not an object".into()));
        };
        let list = |key: &str| -> Result<Vec<Value>, CniError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => {
                    if let Some(i) = items.iter().position(|x| !x.is_object()) {
                        return Err(prev_error(format!("{key}[{i}] is not an object")));
                    }
                    Ok(items.clone())
                }
                Some(_) => Err(prev_error(format!("{key} is not an array"))),
            }
        };
        Ok(PrevResult {
            interfaces: list("interfaces")?,
            ips: list("ips")?,
            routes: list("routes")?,
            dns: match map.get("dns") {
                None | Some(Value::Null) => None,
                Some(d @ Value::Object(_)) => Some(d.clone()),
                Some(_) => return Err(prev_error("dns is not an object".into())),
            },
        })
    }
}

fn prev_error(reason: String) -> CniError {
    CniError::InvalidConfig {
        field: "prevResult",
        reason,
    }
}

/// Renders the ADD result for the version the runtime asked for. `netns` is `CNI_NETNS`, the
/// `sandbox` of the pod interface. With a `prevResult` (Brindle not first in a chain), the
/// previous interfaces, addresses, routes and DNS come first and Brindle's are appended. An
/// answer from the agent that would make a wrong result (no address, an address that is not a
/// CIDR) is an error rather than a bad result.
pub(crate) fn render_add_result(
    version: CniVersion,
    netns: &str,
    resp: &CniAddResponse,
    prev: Option<&PrevResult>,
) -> Result<String, CniError> {
    let bad = |reason: String| CniError::BadAgentAnswer { reason };
    let empty = PrevResult::default();
    let prev = prev.unwrap_or(&empty);
    // The host veth follows the previous interfaces; the pod interface follows it.
    let container_interface = prev.interfaces.len() + 1;
    let mtu = version.interface_mtu().then_some(resp.mtu);
    if resp.ips.is_empty() {
        return Err(bad("no addresses in the ADD answer".into()));
    }
    if resp.host_interface.is_empty() || resp.container_interface.is_empty() {
        return Err(bad("an interface name is empty in the ADD answer".into()));
    }
    let mut ips = Vec::with_capacity(resp.ips.len());
    for address in &resp.ips {
        let ip = parse_cidr(address).ok_or_else(|| bad(format!("{address:?} is not a CIDR")))?;
        ips.push(IpConfig {
            version: version.ips_have_version().then_some(match ip {
                IpAddr::V4(_) => "4",
                IpAddr::V6(_) => "6",
            }),
            address,
            interface: container_interface,
        });
    }
    let mut routes = Vec::with_capacity(resp.routes.len());
    for route in &resp.routes {
        if parse_cidr(&route.dst).is_none() {
            return Err(bad(format!(
                "route destination {:?} is not a CIDR",
                route.dst
            )));
        }
        if let Some(gw) = &route.gw {
            if gw.parse::<IpAddr>().is_err() {
                return Err(bad(format!("route gateway {gw:?} is not an address")));
            }
        }
        routes.push(Route {
            dst: &route.dst,
            gw: route.gw.as_deref(),
        });
    }
    let interfaces = [
        Interface {
            name: &resp.host_interface,
            mac: None,
            mtu,
            sandbox: None,
        },
        Interface {
            name: &resp.container_interface,
            mac: (!resp.container_mac.is_empty()).then_some(resp.container_mac.as_str()),
            mtu,
            sandbox: Some(netns),
        },
    ];
    let to_values = |items: Vec<Value>, ours: Result<Vec<Value>, serde_json::Error>| {
        ours.map(|ours| items.into_iter().chain(ours).collect::<Vec<_>>())
            .map_err(|e| bad(e.to_string()))
    };
    let result = AddResult {
        cni_version: version.as_str(),
        interfaces: to_values(
            prev.interfaces.clone(),
            interfaces.iter().map(serde_json::to_value).collect(),
        )?,
        ips: to_values(
            prev.ips.clone(),
            ips.iter().map(serde_json::to_value).collect(),
        )?,
        routes: to_values(
            prev.routes.clone(),
            routes.iter().map(serde_json::to_value).collect(),
        )?,
        // Cluster DNS is the runtime's business; a previous plugin's is kept.
        dns: prev
            .dns
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new())),
    };
    serde_json::to_string(&result).map_err(|e| bad(e.to_string()))
}

/// CHECK: compares the cached result (`prevResult`) with what the agent recorded for the pod.
/// Returns every difference, each naming what differs; empty when they agree.
pub(crate) fn compare_with_record(
    prev: &PrevResult,
    netns: &str,
    record: &CniAddResponse,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let name_of = |i: &Value| i.get("name").and_then(Value::as_str).map(str::to_string);
    fn sandbox_of(i: &Value) -> &str {
        i.get("sandbox").and_then(Value::as_str).unwrap_or("")
    }
    let ifname = record.container_interface.as_str();
    if !prev.interfaces.iter().any(|i| {
        name_of(i).as_deref() == Some(record.host_interface.as_str()) && sandbox_of(i).is_empty()
    }) {
        diffs.push(format!(
            "prevResult does not list the host interface {}",
            record.host_interface
        ));
    }
    let Some(index) = prev
        .interfaces
        .iter()
        .position(|i| name_of(i).as_deref() == Some(ifname) && sandbox_of(i) == netns)
    else {
        diffs.push(format!(
            "prevResult has no interface {ifname} in sandbox {netns}"
        ));
        return diffs;
    };
    if let Some(mac) = prev.interfaces[index].get("mac").and_then(Value::as_str) {
        if !record.container_mac.is_empty() && !mac.eq_ignore_ascii_case(&record.container_mac) {
            diffs.push(format!(
                "{ifname} MAC is {}, prevResult says {mac}",
                record.container_mac
            ));
        }
    }
    let cached: BTreeSet<(IpAddr, String)> = prev
        .ips
        .iter()
        .filter(|ip| ip.get("interface").and_then(Value::as_u64) == Some(index as u64))
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .filter_map(|a| parse_cidr(a).map(|ip| (ip, a.to_string())))
        .collect();
    let recorded: BTreeSet<(IpAddr, String)> = record
        .ips
        .iter()
        .filter_map(|a| parse_cidr(a).map(|ip| (ip, a.to_string())))
        .collect();
    for (_, a) in cached.difference(&recorded) {
        diffs.push(format!(
            "address {a} is in prevResult but not assigned to the pod"
        ));
    }
    for (_, a) in recorded.difference(&cached) {
        diffs.push(format!("address {a} of the pod is missing from prevResult"));
    }
    diffs
}

/// Renders an error object: `{"cniVersion", "code", "msg", "details"}`; `details` is left out
/// when empty, as libcni does.
pub(crate) fn render_error(version: CniVersion, err: &ApiError) -> String {
    let out = ErrorOut {
        cni_version: version.as_str(),
        code: err.code,
        msg: &err.msg,
        details: &err.details,
    };
    // Strings and integers always serialize; the fallback keeps stdout valid JSON regardless.
    serde_json::to_string(&out).unwrap_or_else(|_| {
        format!(
            r#"{{"cniVersion":"{}","code":{},"msg":"cannot encode the error"}}"#,
            version.as_str(),
            err.code
        )
    })
}

/// `10.244.1.5/32` or `fd00::5/128`: an address and a prefix length that fits it.
fn parse_cidr(s: &str) -> Option<IpAddr> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brindle_agent::api::PodRoute;
    use serde_json::{json, Value};

    fn answer() -> CniAddResponse {
        CniAddResponse {
            host_interface: "brd0123456789a".into(),
            container_interface: "eth0".into(),
            container_mac: "02:42:ac:11:00:02".into(),
            mtu: 1450,
            ips: vec!["10.244.1.5/32".into(), "fd00:1::5/128".into()],
            routes: vec![
                PodRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("169.254.1.1".into()),
                },
                PodRoute {
                    dst: "::/0".into(),
                    gw: Some("fe80::ecee:eeff:feee:eeee".into()),
                },
            ],
        }
    }

    fn render(version: CniVersion) -> Value {
        let text =
            render_add_result(version, "/var/run/netns/cni-1", &answer(), None).expect("valid");
        serde_json::from_str(&text).expect("json")
    }

    fn expected(version: &str, with_ip_version: bool) -> Value {
        let ip = |v: &str, a: &str| {
            if with_ip_version {
                json!({"version": v, "address": a, "interface": 1})
            } else {
                json!({"address": a, "interface": 1})
            }
        };
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "brd0123456789a"},
                {"name": "eth0", "mac": "02:42:ac:11:00:02", "sandbox": "/var/run/netns/cni-1"},
            ],
            "ips": [ip("4", "10.244.1.5/32"), ip("6", "fd00:1::5/128")],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"},
            ],
            "dns": {},
        })
    }

    #[test]
    fn result_1_0_0_has_no_ip_version() {
        assert_eq!(render(CniVersion::V1_0_0), expected("1.0.0", false));
    }

    #[test]
    fn result_0_4_0_has_ip_version() {
        assert_eq!(render(CniVersion::V0_4_0), expected("0.4.0", true));
    }

    #[test]
    fn result_0_3_x_has_ip_version() {
        assert_eq!(render(CniVersion::V0_3_1), expected("0.3.1", true));
        assert_eq!(render(CniVersion::V0_3_0), expected("0.3.0", true));
    }

    #[test]
    fn result_1_1_0_has_interface_mtu() {
        let mut want = expected("1.1.0", false);
        want["interfaces"][0]["mtu"] = json!(1450);
        want["interfaces"][1]["mtu"] = json!(1450);
        assert_eq!(render(CniVersion::V1_1_0), want);
        // No other version prints it.
        for v in [CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_0_0] {
            assert!(render(v)["interfaces"][1].get("mtu").is_none(), "{v:?}");
        }
    }

    fn prev() -> PrevResult {
        PrevResult::parse(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "macvlan0", "sandbox": "/var/run/netns/cni-1"}],
            "ips": [{"address": "192.168.5.9/24", "interface": 0}],
            "routes": [{"dst": "192.168.0.0/16"}],
            "dns": {"nameservers": ["10.96.0.10"]},
        }))
        .expect("valid prevResult")
    }

    #[test]
    fn chained_add_appends_to_the_previous_result() {
        let text = render_add_result(
            CniVersion::V1_0_0,
            "/var/run/netns/cni-1",
            &answer(),
            Some(&prev()),
        )
        .expect("valid");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "macvlan0", "sandbox": "/var/run/netns/cni-1"},
                    {"name": "brd0123456789a"},
                    {"name": "eth0", "mac": "02:42:ac:11:00:02", "sandbox": "/var/run/netns/cni-1"},
                ],
                "ips": [
                    {"address": "192.168.5.9/24", "interface": 0},
                    {"address": "10.244.1.5/32", "interface": 2},
                    {"address": "fd00:1::5/128", "interface": 2},
                ],
                "routes": [
                    {"dst": "192.168.0.0/16"},
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                    {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"},
                ],
                "dns": {"nameservers": ["10.96.0.10"]},
            })
        );
    }

    #[test]
    fn malformed_prev_results_are_code_7_naming_the_part() {
        for (bad, part) in [
            (json!([]), "not an object"),
            (json!({"interfaces": {}}), "interfaces"),
            (json!({"ips": [1]}), "ips[0]"),
            (json!({"routes": "x"}), "routes"),
            (json!({"dns": []}), "dns"),
        ] {
            let err = PrevResult::parse(&bad).expect_err("malformed");
            assert_eq!(err.code(), 7);
            let msg = err.to_string();
            assert!(msg.contains("prevResult") && msg.contains(part), "{msg}");
        }
        assert_eq!(
            PrevResult::parse(&json!({"cniVersion": "1.0.0"})).expect("empty is fine"),
            PrevResult::default()
        );
    }

    fn cached(version: CniVersion) -> PrevResult {
        let text = render_add_result(version, "/ns", &answer(), None).expect("valid");
        PrevResult::parse(&serde_json::from_str(&text).expect("json")).expect("parses")
    }

    #[test]
    fn check_agrees_with_its_own_add_result_in_every_version() {
        for v in crate::version::SUPPORTED {
            assert_eq!(
                compare_with_record(&cached(v), "/ns", &answer()),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn check_names_every_difference() {
        let mut record = answer();
        record.ips = vec!["10.244.1.6/32".into(), "fd00:1::5/128".into()];
        record.container_mac = "02:42:ac:11:00:03".into();
        let diffs = compare_with_record(&cached(CniVersion::V1_0_0), "/ns", &record);
        assert_eq!(
            diffs,
            [
                "eth0 MAC is 02:42:ac:11:00:03, prevResult says 02:42:ac:11:00:02",
                "address 10.244.1.5/32 is in prevResult but not assigned to the pod",
                "address 10.244.1.6/32 of the pod is missing from prevResult",
            ]
        );
        let diffs = compare_with_record(&cached(CniVersion::V1_0_0), "/other", &answer());
        assert_eq!(
            diffs,
            ["prevResult has no interface eth0 in sandbox /other"]
        );
        let mut record = answer();
        record.host_interface = "brdffffffffff0".into();
        let diffs = compare_with_record(&cached(CniVersion::V1_0_0), "/ns", &record);
        assert_eq!(
            diffs,
            ["prevResult does not list the host interface brdffffffffff0"]
        );
    }

    #[test]
    fn result_field_order_is_stable() {
        let text = render_add_result(CniVersion::V1_0_0, "/ns", &answer(), None).expect("valid");
        assert!(
            text.starts_with(r#"{"cniVersion":"1.0.0","interfaces":[{"name":"brd0123456789a"}"#),
            "{text}"
        );
        assert!(text.ends_with(r#""dns":{}}"#), "{text}");
    }

    #[test]
    fn bad_agent_answers_are_errors() {
        let mut a = answer();
        a.ips.clear();
        assert_eq!(
            render_add_result(CniVersion::V1_0_0, "/ns", &a, None)
                .expect_err("no ips")
                .code(),
            100
        );
        for bad in [
            "10.244.1.5",
            "10.244.1.5/33",
            "fd00::1/129",
            "x/32",
            "10.0.0.1/+1",
        ] {
            let mut a = answer();
            a.ips = vec![bad.into()];
            assert!(
                render_add_result(CniVersion::V1_0_0, "/ns", &a, None).is_err(),
                "{bad}"
            );
        }
        let mut a = answer();
        a.routes[0].gw = Some("gateway".into());
        assert!(render_add_result(CniVersion::V1_0_0, "/ns", &a, None).is_err());
    }

    #[test]
    fn missing_mac_and_gateway_are_left_out() {
        let mut a = answer();
        a.container_mac.clear();
        a.routes = vec![PodRoute {
            dst: "169.254.1.1/32".into(),
            gw: None,
        }];
        let v: Value = serde_json::from_str(
            &render_add_result(CniVersion::V1_0_0, "/ns", &a, None).expect("valid"),
        )
        .expect("json");
        assert_eq!(
            v["interfaces"][1],
            json!({"name": "eth0", "sandbox": "/ns"})
        );
        assert_eq!(v["routes"], json!([{"dst": "169.254.1.1/32"}]));
    }

    #[test]
    fn error_shape() {
        let e = ApiError {
            code: 7,
            msg: "invalid network configuration: \"quoted\"".into(),
            details: "line 1".into(),
        };
        let v: Value = serde_json::from_str(&render_error(CniVersion::V0_4_0, &e)).expect("json");
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "code": 7,
                   "msg": "invalid network configuration: \"quoted\"", "details": "line 1"})
        );
        let e = ApiError {
            code: 11,
            msg: "m".into(),
            details: String::new(),
        };
        assert_eq!(
            render_error(CniVersion::V1_0_0, &e),
            r#"{"cniVersion":"1.0.0","code":11,"msg":"m"}"#
        );
    }
}
