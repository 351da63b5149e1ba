//! What a pod gets when its CNI configuration does not say: which address families, and which
//! MTU. Pure: IP pools and the uplink's MTU in, [`PodDefaults`] out. The controller recomputes
//! it whenever pools change and shares it with the API server (see
//! [`crate::controller::Shared::pod_defaults`]).
//!
//! - Families: an IPv4 address when some pool can give this node a workload IPv4 address, an
//!   IPv6 address when some pool can give an IPv6 one (dual stack as soon as both exist). The
//!   conflist's `ipam.assign_ipv4` / `ipam.assign_ipv6` override this per family (Calico's
//!   keys).
//! - MTU (Felix's `determinePodMTU`, BRIEF §4): the uplink's MTU minus the largest overhead of
//!   the encapsulations enabled by some pool: VXLAN 50 (over an IPv4 underlay; 70 over IPv6),
//!   IPIP 20, none 0. The agent's `--mtu` replaces the detected value; the conflist's `mtu`
//!   wins over both.

use std::collections::BTreeMap;

use brindle_ipam::selector::Selector;
use ipnet::IpNet;

use crate::model::{AllowedUse, EncapMode, IpPoolSpec};

/// VXLAN over IPv4: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// VXLAN over IPv6: the outer header is 40 bytes instead of 20.
pub const VXLAN_V6_OVERHEAD: u32 = 70;
/// IPIP: one outer IPv4 header.
pub const IPIP_OVERHEAD: u32 = 20;

/// How the node's MTU settings were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtuConfig {
    /// MTU of the interface holding the node IP.
    pub uplink_mtu: u32,
    /// `--mtu`: replaces the computed pod MTU.
    pub configured: Option<u32>,
    /// Whether encapsulated packets travel over IPv6 between nodes (VXLAN then costs 70).
    pub underlay_v6: bool,
}

/// A pod's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodDefaults {
    /// Some usable pool gives IPv4 workload addresses.
    pub ipv4: bool,
    /// Some usable pool gives IPv6 workload addresses.
    pub ipv6: bool,
    /// The pod interface MTU when the conflist sets none.
    pub mtu: u32,
}

/// Whether IPAM would allocate a workload address for this node from `pool` (the node's labels
/// are not known to the CNI path, so a `nodeSelector` is matched against none, as IPAM does).
fn usable_for_workloads(pool: &IpPoolSpec) -> bool {
    if pool.disabled || !pool.allows(AllowedUse::Workload) || pool.validate().is_err() {
        return false;
    }
    let selector = pool.node_selector.as_deref().unwrap_or("");
    Selector::parse(selector).is_ok_and(|s| s.matches(&BTreeMap::new()))
}

/// The largest encapsulation overhead among the enabled pools.
pub fn encap_overhead<'a>(
    pools: impl IntoIterator<Item = &'a IpPoolSpec>,
    underlay_v6: bool,
) -> u32 {
    pools
        .into_iter()
        .filter(|p| !p.disabled)
        .map(|p| {
            if p.vxlan_mode != EncapMode::Never {
                if underlay_v6 {
                    VXLAN_V6_OVERHEAD
                } else {
                    VXLAN_OVERHEAD
                }
            } else if p.ipip_mode != EncapMode::Never {
                IPIP_OVERHEAD
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0)
}

/// The defaults for pods on this node, given every pool.
pub fn pod_defaults<'a>(
    pools: impl IntoIterator<Item = &'a IpPoolSpec> + Clone,
    mtu: &MtuConfig,
) -> PodDefaults {
    let usable = || {
        pools
            .clone()
            .into_iter()
            .filter(|p| usable_for_workloads(p))
    };
    PodDefaults {
        ipv4: usable().any(|p| matches!(p.cidr, IpNet::V4(_))),
        ipv6: usable().any(|p| matches!(p.cidr, IpNet::V6(_))),
        mtu: mtu.configured.unwrap_or_else(|| {
            mtu.uplink_mtu
                .saturating_sub(encap_overhead(pools.clone(), mtu.underlay_v6))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, vxlan: EncapMode, ipip: EncapMode) -> IpPoolSpec {
        let mut spec: IpPoolSpec =
            serde_json::from_value(serde_json::json!({ "cidr": cidr })).expect("pool");
        spec.vxlan_mode = vxlan;
        spec.ipip_mode = ipip;
        spec
    }

    const UPLINK: MtuConfig = MtuConfig {
        uplink_mtu: 1500,
        configured: None,
        underlay_v6: false,
    };

    #[test]
    fn mtu_is_the_uplink_minus_the_largest_enabled_overhead() {
        use EncapMode::*;
        let never = pool("10.244.0.0/16", Never, Never);
        let vxlan = pool("10.245.0.0/16", Always, Never);
        let ipip = pool("10.246.0.0/16", Never, CrossSubnet);
        let v6_vxlan = pool("fd00:10:244::/48", CrossSubnet, Never);
        assert_eq!(pod_defaults([&never], &UPLINK).mtu, 1500);
        assert_eq!(pod_defaults([&never, &ipip], &UPLINK).mtu, 1480);
        assert_eq!(pod_defaults([&ipip, &vxlan], &UPLINK).mtu, 1450);
        assert_eq!(pod_defaults([&v6_vxlan], &UPLINK).mtu, 1450);
        let over_v6 = MtuConfig {
            underlay_v6: true,
            ..UPLINK
        };
        assert_eq!(pod_defaults([&vxlan], &over_v6).mtu, 1430);
        // No pool at all: nothing is encapsulated.
        assert_eq!(pod_defaults([], &UPLINK).mtu, 1500);
        // A disabled pool enables no encapsulation.
        let mut off = vxlan.clone();
        off.disabled = true;
        assert_eq!(pod_defaults([&never, &off], &UPLINK).mtu, 1500);
        // --mtu replaces the computation.
        let set = MtuConfig {
            configured: Some(1400),
            ..UPLINK
        };
        assert_eq!(pod_defaults([&vxlan], &set).mtu, 1400);
    }

    #[test]
    fn families_follow_the_usable_pools() {
        use EncapMode::*;
        let v4 = pool("10.244.0.0/16", Always, Never);
        let v6 = pool("fd00:10:244::/48", Never, Never);
        let d = pod_defaults([&v4], &UPLINK);
        assert!(d.ipv4 && !d.ipv6);
        let d = pod_defaults([&v4, &v6], &UPLINK);
        assert!(d.ipv4 && d.ipv6);
        let d = pod_defaults([&v6], &UPLINK);
        assert!(!d.ipv4 && d.ipv6);

        // Disabled, tunnel-only and not-selecting pools do not count.
        let mut disabled = v6.clone();
        disabled.disabled = true;
        let mut tunnel_only = v6.clone();
        tunnel_only.allowed_uses = Some(vec![AllowedUse::Tunnel]);
        let mut elsewhere = v6.clone();
        elsewhere.node_selector = Some("zone == 'b'".into());
        for p in [&disabled, &tunnel_only, &elsewhere] {
            assert!(!pod_defaults([&v4, p], &UPLINK).ipv6, "{p:?}");
        }
    }
}
