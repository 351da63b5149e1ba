//! What the plugin prints on stdout: the ADD result and the error object, per CNI version.
//!
//! Differences between versions live here and in `version.rs`, nowhere else:
//! - up to 0.4.0 each `ips` entry carries `"version": "4"|"6"`; 1.0.0 dropped the field;
//! - interface `mtu` arrives with 1.1.0 and is not printed yet.

use std::net::IpAddr;

use brindle_agent::api::{ApiError, CniAddResponse};
use serde::Serialize;

use crate::error::CniError;
use crate::version::CniVersion;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AddResult<'a> {
    cni_version: &'static str,
    interfaces: Vec<Interface<'a>>,
    ips: Vec<IpConfig<'a>>,
    routes: Vec<Route<'a>>,
    dns: Dns,
}

#[derive(Debug, Serialize)]
struct Interface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
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

/// Always empty: cluster DNS is the runtime's business.
#[derive(Debug, Serialize)]
struct Dns {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorOut<'a> {
    cni_version: &'static str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

/// Index of the pod's interface in `interfaces`: the host veth is 0.
const CONTAINER_INTERFACE: usize = 1;

/// Renders the ADD result for the version the runtime asked for. `netns` is `CNI_NETNS`, the
/// `sandbox` of the pod interface. An answer from the agent that would make a wrong result (no
/// address, an address that is not a CIDR) is an error rather than a bad result.
pub(crate) fn render_add_result(
    version: CniVersion,
    netns: &str,
    resp: &CniAddResponse,
) -> Result<String, CniError> {
    let bad = |reason: String| CniError::BadAgentAnswer { reason };
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
            interface: CONTAINER_INTERFACE,
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
    let result = AddResult {
        cni_version: version.as_str(),
        interfaces: vec![
            Interface {
                name: &resp.host_interface,
                mac: None,
                sandbox: None,
            },
            Interface {
                name: &resp.container_interface,
                mac: (!resp.container_mac.is_empty()).then_some(resp.container_mac.as_str()),
                sandbox: Some(netns),
            },
        ],
        ips,
        routes,
        dns: Dns {},
    };
    serde_json::to_string(&result).map_err(|e| bad(e.to_string()))
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
        let text = render_add_result(version, "/var/run/netns/cni-1", &answer()).expect("valid");
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
    fn result_field_order_is_stable() {
        let text = render_add_result(CniVersion::V1_0_0, "/ns", &answer()).expect("valid");
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
            render_add_result(CniVersion::V1_0_0, "/ns", &a)
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
                render_add_result(CniVersion::V1_0_0, "/ns", &a).is_err(),
                "{bad}"
            );
        }
        let mut a = answer();
        a.routes[0].gw = Some("gateway".into());
        assert!(render_add_result(CniVersion::V1_0_0, "/ns", &a).is_err());
    }

    #[test]
    fn missing_mac_and_gateway_are_left_out() {
        let mut a = answer();
        a.container_mac.clear();
        a.routes = vec![PodRoute {
            dst: "169.254.1.1/32".into(),
            gw: None,
        }];
        let v: Value =
            serde_json::from_str(&render_add_result(CniVersion::V1_0_0, "/ns", &a).expect("valid"))
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
