//! The kinds the agent owns (Node, WorkloadEndpoint), with Calico's field names, plus the IPAM
//! kinds re-exported from `brindle_ipam::model`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use brindle_ipam::model::*;

/// `Node` spec: how other nodes reach this one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// The node's VXLAN tunnel address (allocated from a VXLAN pool).
    #[serde(
        rename = "ipv4VXLANTunnelAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    /// The node's VTEP MAC; when absent every node derives it from the node name.
    #[serde(
        rename = "vxlanTunnelMACAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
}

impl Resource for NodeSpec {
    const KIND: &'static str = "Node";
}

impl NodeSpec {
    /// The node's tunnel addresses held in IPAM, each with its kind: the VXLAN one
    /// (`ipv4VXLANTunnelAddr`) and the IPIP one (`bgp.ipv4IPIPTunnelAddr`).
    pub fn tunnel_addrs(&self) -> Vec<(&'static str, std::net::IpAddr)> {
        let ipip = self
            .bgp
            .as_ref()
            .and_then(|b| b.ipv4_ipip_tunnel_addr.as_deref());
        [
            ("VXLAN", self.ipv4_vxlan_tunnel_addr.as_deref()),
            ("IPIP", ipip),
        ]
        .into_iter()
        .filter_map(|(kind, a)| Some((kind, a?.parse().ok()?)))
        .collect()
    }
}

/// `Node.spec.bgp`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// The node's IPv4 address with its prefix length (`10.0.0.5/24`): the subnet decides
    /// CrossSubnet encapsulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(
        rename = "ipv4IPIPTunnelAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<String>,
    #[serde(
        rename = "routeReflectorClusterID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
}

/// One of a node's addresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(rename = "type")]
    pub type_: String,
}

/// `WorkloadEndpoint` spec: a pod wired on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    pub orchestrator: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    pub endpoint: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ip_networks: Vec<String>,
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

impl Resource for WorkloadEndpointSpec {
    const KIND: &'static str = "WorkloadEndpoint";
}

/// A reference to a key of a Kubernetes Secret (`password.secretKeyRef`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// A password given by reference, never inline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSource {
    pub secret_key_ref: SecretKeyRef,
}

/// `BGPPeer` spec (Calico `projectcalico.org/v3` field names): a peering for one node, the
/// nodes a selector matches, or every node (global).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// Only this node peers (node-specific).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The nodes that peer (node-specific); absent with `node` absent means every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address, optionally with a port (`10.0.0.1`, `10.0.0.1:1179`, `[fd00::1]:179`).
    #[serde(rename = "peerIP", default, skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    /// Peer with the nodes this selects instead of an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    #[serde(rename = "asNumber", default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(
        rename = "localASNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    #[serde(default)]
    pub keep_original_next_hop: bool,
    /// `Auto`, `Self` or `Keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<String>,
    /// Graceful-restart time granted to this peer, as a duration (`120s`, `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// `UseNodeIP` (default) or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_allowed_local_as_numbers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    /// `Auto` (default) or `Manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
}

impl Resource for BgpPeerSpec {
    const KIND: &'static str = "BGPPeer";
}

/// Parses a peer address with an optional port: `a.b.c.d`, `a.b.c.d:port`, `v6`, `[v6]:port`.
pub fn parse_peer_ip(s: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse() {
        return Some((ip, None));
    }
    let sock: std::net::SocketAddr = s.parse().ok()?;
    Some((sock.ip(), Some(sock.port())))
}

/// Parses a Go-style duration (`90s`, `2m`, `1h30m`) into seconds.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    (!s.is_empty()).then_some(total)
}

impl BgpPeerSpec {
    /// Calico's rules (its CEL validation), with the field named in each error.
    pub fn validate(&self) -> Result<(), String> {
        if self.node.is_some() && self.node_selector.is_some() {
            return Err("spec.node and spec.nodeSelector are mutually exclusive".into());
        }
        match (&self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) => {
                return Err("spec.peerIP and spec.peerSelector are mutually exclusive".into())
            }
            (None, None) => return Err("spec.peerIP or spec.peerSelector is required".into()),
            _ => {}
        }
        if let Some(ip) = &self.peer_ip {
            if parse_peer_ip(ip).is_none() {
                return Err(format!(
                    "spec.peerIP: {ip:?} is not an address or address:port"
                ));
            }
            if self.as_number.is_none() {
                return Err("spec.asNumber is required with spec.peerIP".into());
            }
        }
        if self.peer_selector.is_some() && self.as_number.is_some() {
            return Err(
                "spec.asNumber must be empty with spec.peerSelector (the peers' own AS is used)"
                    .into(),
            );
        }
        for (field, sel) in [
            ("nodeSelector", &self.node_selector),
            ("peerSelector", &self.peer_selector),
        ] {
            if let Some(sel) = sel {
                brindle_ipam::selector::Selector::parse(sel)
                    .map_err(|e| format!("spec.{field}: {e}"))?;
            }
        }
        if self.as_number == Some(0) || self.local_as_number == Some(0) {
            return Err("spec.asNumber: AS 0 is reserved (RFC 7607)".into());
        }
        if self.keep_original_next_hop && self.next_hop_mode.is_some() {
            return Err(
                "spec.keepOriginalNextHop and spec.nextHopMode are mutually exclusive".into(),
            );
        }
        if let Some(mode) = &self.next_hop_mode {
            if !["Auto", "Self", "Keep"].contains(&mode.as_str()) {
                return Err(format!(
                    "spec.nextHopMode: {mode:?} is not Auto, Self or Keep"
                ));
            }
        }
        if let Some(mode) = &self.source_address {
            if !["UseNodeIP", "None"].contains(&mode.as_str()) {
                return Err(format!(
                    "spec.sourceAddress: {mode:?} is not UseNodeIP or None"
                ));
            }
        }
        if let Some(mode) = &self.reverse_peering {
            if !["Auto", "Manual"].contains(&mode.as_str()) {
                return Err(format!(
                    "spec.reversePeering: {mode:?} is not Auto or Manual"
                ));
            }
        }
        for (field, d) in [
            ("maxRestartTime", &self.max_restart_time),
            ("keepaliveTime", &self.keepalive_time),
        ] {
            if let Some(d) = d {
                if parse_duration_secs(d).is_none() {
                    return Err(format!(
                        "spec.{field}: {d:?} is not a duration like 120s or 2m"
                    ));
                }
            }
        }
        if let Some(d) = &self.keepalive_time {
            // The hold time proposed is three keepalives, and must fit the OPEN's 16 bits.
            if !parse_duration_secs(d).is_some_and(|s| (1..=MAX_KEEPALIVE_SECS).contains(&s)) {
                return Err(format!(
                    "spec.keepaliveTime: {d:?}: must be 1s to {MAX_KEEPALIVE_SECS}s"
                ));
            }
        }
        if self.ttl_security == Some(0) {
            return Err("spec.ttlSecurity: must be 1 to 255 hops".into());
        }
        if self.reachable_by.is_some() && self.peer_ip.is_none() {
            return Err("spec.reachableBy requires spec.peerIP".into());
        }
        Ok(())
    }

    /// The fields set here that Brindle accepts but does not act on, each with what happens
    /// instead: `brindlectl apply` prints them as warnings (docs/routing.md lists them).
    pub fn unsupported(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.local_as_number.is_some() {
            out.push("spec.localASNumber: a per-peer local AS is not supported; nodes whose own AS differs skip this peering (with a warning in their log)".to_string());
        }
        if self.num_allowed_local_as_numbers.is_some() {
            out.push("spec.numAllowedLocalASNumbers: not supported; routes whose AS path holds the node's AS are rejected as loops".to_string());
        }
        if self.reachable_by.is_some() {
            out.push(
                "spec.reachableBy: not supported; the peer is reached by the node's routing table"
                    .to_string(),
            );
        }
        if !self.filters.is_empty() {
            out.push(
                "spec.filters: BGPFilter is not supported; every route is imported and exported"
                    .to_string(),
            );
        }
        out
    }
}

/// The largest `keepaliveTime`: three of them are the hold time, at most 65535 s.
pub const MAX_KEEPALIVE_SECS: u64 = u16::MAX as u64 / 3;

/// A CIDR in a list of service CIDRs (`serviceClusterIPs: [{cidr: ...}]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CidrEntry {
    #[schemars(with = "String")]
    pub cidr: ipnet::IpNet,
}

/// A named BGP community value (`aa:nn` or large `aa:nn:mm`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

/// Communities attached to a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefixAdvertisement {
    #[schemars(with = "String")]
    pub cidr: ipnet::IpNet,
    #[serde(default)]
    pub communities: Vec<String>,
}

/// `BGPConfiguration` spec: `default` is global; `node.<name>` overrides a few fields for one
/// node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Default 64512.
    #[serde(rename = "asNumber", default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<String>,
    #[serde(
        rename = "serviceClusterIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<CidrEntry>,
    #[serde(
        rename = "serviceExternalIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<CidrEntry>,
    #[serde(
        rename = "serviceLoadBalancerIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<CidrEntry>,
    /// `Enabled` (default): the LB CIDRs are advertised whole. `Disabled` (a /32 per service)
    /// needs the Services and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<PasswordSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
}

impl Resource for BgpConfigurationSpec {
    const KIND: &'static str = "BGPConfiguration";
}

fn valid_community(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    }
}

impl BgpConfigurationSpec {
    /// The mesh is on unless turned off.
    pub fn mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    /// Calico's rules, with the field named in each error.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let per_node = name.starts_with("node.");
        if name != "default" && !per_node {
            return Err(format!(
                "metadata.name: {name:?}: a BGPConfiguration is named `default` or `node.<node name>`"
            ));
        }
        if per_node
            && (self.node_to_node_mesh_enabled.is_some()
                || self.as_number.is_some()
                || !self.service_cluster_ips.is_empty()
                || !self.service_external_ips.is_empty()
                || !self.service_load_balancer_ips.is_empty()
                || self.node_mesh_password.is_some()
                || self.node_mesh_max_restart_time.is_some())
        {
            return Err("spec: a per-node BGPConfiguration may set only listenPort, logSeverityScreen, prefixAdvertisements and bindMode".into());
        }
        if self.as_number == Some(0) {
            return Err("spec.asNumber: AS 0 is reserved (RFC 7607)".into());
        }
        if self.listen_port == Some(0) {
            return Err("spec.listenPort: must be 1 to 65535".into());
        }
        if let Some(mode) = &self.bind_mode {
            if !["None", "NodeIP"].contains(&mode.as_str()) {
                return Err(format!("spec.bindMode: {mode:?} is not None or NodeIP"));
            }
        }
        if let Some(sev) = &self.log_severity_screen {
            if !["Debug", "Info", "Warning", "Error", "Fatal"].contains(&sev.as_str()) {
                return Err(format!(
                    "spec.logSeverityScreen: {sev:?} is not Debug, Info, Warning, Error or Fatal"
                ));
            }
        }
        for (i, c) in self.communities.iter().enumerate() {
            if !valid_community(&c.value) {
                return Err(format!(
                    "spec.communities[{i}].value: {:?} is not aa:nn or aa:nn:mm",
                    c.value
                ));
            }
        }
        for (i, p) in self.prefix_advertisements.iter().enumerate() {
            for (j, c) in p.communities.iter().enumerate() {
                if !valid_community(c) && !self.communities.iter().any(|n| &n.name == c) {
                    return Err(format!(
                        "spec.prefixAdvertisements[{i}].communities[{j}]: {c:?} is neither a value nor a name in spec.communities"
                    ));
                }
            }
        }
        if (self.node_mesh_password.is_some() || self.node_mesh_max_restart_time.is_some())
            && !self.mesh_enabled()
        {
            return Err("spec.nodeMeshPassword and nodeMeshMaxRestartTime need the node-to-node mesh enabled".into());
        }
        if let Some(d) = &self.node_mesh_max_restart_time {
            if parse_duration_secs(d).is_none() {
                return Err(format!(
                    "spec.nodeMeshMaxRestartTime: {d:?} is not a duration like 120s"
                ));
            }
        }
        match self.service_load_balancer_aggregation.as_deref() {
            None | Some("Enabled") => {}
            Some("Disabled") => {
                return Err("spec.serviceLoadBalancerAggregation: Disabled (a route per service) is not supported; Brindle advertises the serviceLoadBalancerIPs CIDRs whole (Enabled)".into())
            }
            Some(other) => {
                return Err(format!(
                    "spec.serviceLoadBalancerAggregation: {other:?} is not Enabled or Disabled"
                ))
            }
        }
        for (field, list) in [
            ("serviceClusterIPs", &self.service_cluster_ips),
            ("serviceExternalIPs", &self.service_external_ips),
            ("serviceLoadBalancerIPs", &self.service_load_balancer_ips),
        ] {
            for (i, entry) in list.iter().enumerate() {
                let cidr = entry.cidr;
                if cidr.trunc() != cidr {
                    return Err(format!(
                        "spec.{field}[{i}].cidr: {cidr} has host bits set (did you mean {}?)",
                        cidr.trunc()
                    ));
                }
                if list[..i].iter().any(|e| e.cidr == cidr) {
                    return Err(format!("spec.{field}[{i}].cidr: {cidr} is listed twice"));
                }
            }
        }
        Ok(())
    }

    /// Every service CIDR (cluster, external and load-balancer IPs), in order, without
    /// duplicates: what each node in BGP mode originates.
    pub fn service_cidrs(&self) -> Vec<ipnet::IpNet> {
        let mut out: Vec<ipnet::IpNet> = Vec::new();
        for entry in self
            .service_cluster_ips
            .iter()
            .chain(&self.service_external_ips)
            .chain(&self.service_load_balancer_ips)
        {
            if !out.contains(&entry.cidr) {
                out.push(entry.cidr);
            }
        }
        out
    }

    /// The fields set here that Brindle accepts but does not act on, each with what happens
    /// instead: `brindlectl apply` prints them as warnings (docs/routing.md lists them).
    pub fn unsupported(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.communities.is_empty() || !self.prefix_advertisements.is_empty() {
            out.push("spec.communities, spec.prefixAdvertisements: not supported; routes are advertised without communities".to_string());
        }
        if self.bind_mode.as_deref() == Some("NodeIP") {
            out.push("spec.bindMode: NodeIP is not supported; the speaker listens on every address (0.0.0.0)".to_string());
        }
        if !self.ignored_interfaces.is_empty() {
            out.push("spec.ignoredInterfaces: ignored; Brindle never exports interface routes (only blocks and service CIDRs)".to_string());
        }
        if self.log_severity_screen.is_some() {
            out.push(
                "spec.logSeverityScreen: ignored; brindle-node's log level is its --log (BRINDLE_LOG)"
                    .to_string(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(yaml: &str) -> Result<BgpPeerSpec, String> {
        let spec: BgpPeerSpec = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(spec)
    }

    #[test]
    fn bgp_peers_follow_calicos_rules() {
        let p = peer("peerIP: 10.0.0.1:1179\nasNumber: 65001\nnodeSelector: rack == 'a'\nmaxRestartTime: 2m\npassword:\n  secretKeyRef: {name: bgp, key: rr}\n").expect("valid");
        assert_eq!(
            parse_peer_ip(p.peer_ip.as_deref().expect("ip"))
                .expect("parses")
                .1,
            Some(1179)
        );
        assert_eq!(parse_duration_secs("2m"), Some(120));
        assert!(peer("peerIP: 10.0.0.1\n")
            .expect_err("no AS")
            .contains("asNumber"));
        assert!(peer("peerIP: 10.0.0.1\npeerSelector: all()\nasNumber: 1\n")
            .expect_err("both")
            .contains("mutually exclusive"));
        assert!(
            peer("node: a\nnodeSelector: all()\npeerIP: 10.0.0.1\nasNumber: 1\n")
                .expect_err("both")
                .contains("spec.node")
        );
        assert!(peer("peerSelector: all()\nasNumber: 1\n")
            .expect_err("AS")
            .contains("asNumber must be empty"));
        assert!(peer("peerIP: 10.0.0.300\nasNumber: 1\n")
            .expect_err("ip")
            .contains("spec.peerIP"));
        assert!(peer("peerIP: 10.0.0.1\nasNumber: 1\nnextHopMode: self\n")
            .expect_err("mode")
            .contains("nextHopMode"));
        assert!(peer("peerIP: 10.0.0.1\nasNumber: 1\npeerIp: x\n")
            .expect_err("unknown")
            .contains("peerIp"));
        assert!(
            peer("peerIP: 10.0.0.1\nasNumber: 1\nmaxRestartTime: soon\n")
                .expect_err("d")
                .contains("maxRestartTime")
        );
    }

    #[test]
    fn bgp_configuration_names_and_fields_are_checked() {
        let c: BgpConfigurationSpec = serde_yaml::from_str(
            "nodeToNodeMeshEnabled: false\nasNumber: 64513\nserviceClusterIPs: [{cidr: 10.96.0.0/12}]\ncommunities: [{name: web, value: '65001:100'}]\nprefixAdvertisements: [{cidr: 10.96.0.0/12, communities: [web, '65001:200:3']}]\n",
        )
        .expect("parses");
        assert!(c.validate("default").is_ok());
        assert!(!c.mesh_enabled());
        assert!(c
            .validate("global")
            .expect_err("name")
            .contains("metadata.name"));
        assert!(c
            .validate("node.n1")
            .expect_err("per node")
            .contains("per-node"));
        let mut bad = c.clone();
        bad.communities[0].value = "65001".into();
        assert!(bad
            .validate("default")
            .expect_err("community")
            .contains("communities[0]"));
        let mut bad = c;
        bad.node_mesh_max_restart_time = Some("120s".into());
        assert!(bad
            .validate("default")
            .expect_err("mesh off")
            .contains("mesh enabled"));
    }

    #[test]
    fn service_cidrs_are_checked_and_listed_once() {
        let c: BgpConfigurationSpec = serde_yaml::from_str(
            "serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: 'fd00:96::/108'}]\nserviceExternalIPs: [{cidr: 192.0.2.0/24}]\nserviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}, {cidr: 192.0.2.0/24}]\n",
        )
        .expect("parses");
        assert!(c.validate("default").is_ok());
        let listed: Vec<String> = c.service_cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(
            listed,
            [
                "10.96.0.0/12",
                "fd00:96::/108",
                "192.0.2.0/24",
                "198.51.100.0/24"
            ]
        );
        let host_bits: BgpConfigurationSpec =
            serde_yaml::from_str("serviceExternalIPs: [{cidr: 10.96.0.1/12}]\n").expect("parses");
        let e = host_bits.validate("default").expect_err("host bits");
        assert!(
            e.contains("spec.serviceExternalIPs[0].cidr") && e.contains("10.96.0.0/12"),
            "{e}"
        );
        let twice: BgpConfigurationSpec = serde_yaml::from_str(
            "serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: 10.96.0.0/12}]\n",
        )
        .expect("parses");
        assert!(twice
            .validate("default")
            .expect_err("twice")
            .contains("serviceClusterIPs[1]"));
        assert!(
            serde_yaml::from_str::<BgpConfigurationSpec>(
                "serviceClusterIPs: [{cidr: 10.96.0.0/33}]\n"
            )
            .is_err(),
            "not a CIDR"
        );
        let per_node: BgpConfigurationSpec =
            serde_yaml::from_str("serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}]\n")
                .expect("parses");
        assert!(per_node
            .validate("node.n1")
            .expect_err("per node")
            .contains("per-node"));
        let mut agg = c.clone();
        agg.service_load_balancer_aggregation = Some("Enabled".into());
        assert!(agg.validate("default").is_ok());
        agg.service_load_balancer_aggregation = Some("Disabled".into());
        assert!(agg
            .validate("default")
            .expect_err("disabled")
            .contains("not supported"));
    }

    #[test]
    fn fields_accepted_but_not_acted_on_are_named() {
        let p = peer("peerIP: 10.0.0.1\nasNumber: 1\nlocalASNumber: 65009\nfilters: [f]\nkeepaliveTime: 10s\n")
            .expect("valid");
        let u = p.unsupported();
        assert_eq!(u.len(), 2, "{u:?}");
        assert!(u[0].starts_with("spec.localASNumber") && u[1].starts_with("spec.filters"));
        let plain = peer("peerIP: 10.0.0.1\nasNumber: 1\nkeepaliveTime: 10s\nmaxRestartTime: 2m\n")
            .expect("valid");
        assert!(plain.unsupported().is_empty());
        for bad in ["0s", "soon", "21846s"] {
            assert!(
                peer(&format!(
                    "peerIP: 10.0.0.1\nasNumber: 1\nkeepaliveTime: {bad}\n"
                ))
                .expect_err(bad)
                .contains("spec.keepaliveTime"),
                "{bad}"
            );
        }
        let c: BgpConfigurationSpec = serde_yaml::from_str(
            "communities: [{name: a, value: '1:2'}]\nbindMode: NodeIP\nlogSeverityScreen: Debug\nserviceClusterIPs: [{cidr: 10.96.0.0/12}]\nlistenPort: 1790\n",
        )
        .expect("parses");
        let u = c.unsupported();
        assert_eq!(u.len(), 3, "{u:?}");
        assert!(u
            .iter()
            .all(|w| !w.contains("serviceClusterIPs") && !w.contains("listenPort")));
    }
}
