//! Names and addresses derived the way Calico derives them, so that an operator's knowledge of
//! `cali*` interfaces and `66:..` VTEP MACs carries over to `brd*` and Brindle.

use sha1::{Digest, Sha1};

use super::Mac;

/// Prefix of every host-side pod veth.
pub const HOST_VETH_PREFIX: &str = "brd";

/// The VTEP MAC of a node: `0x66` (`'f'`) followed by the first five bytes of `sha1(node_name)`,
/// as Felix computes it. Locally administered and unicast, and every node derives the same value
/// for every peer, so it never has to be stored.
pub fn vtep_mac(node_name: &str) -> Mac {
    let digest = Sha1::digest(node_name.as_bytes());
    let mut mac = [0u8; 6];
    mac[0] = b'f';
    mac[1..].copy_from_slice(&digest[..5]);
    mac
}

/// MAC of a pod's interface: locally administered unicast, from `sha1("<host_ifname>.<ifname>")`.
/// Chosen by Brindle rather than the kernel so that it is known before the pod side is
/// configured (the WorkloadEndpoint is written meanwhile), and stable across re-ADDs.
pub fn pod_mac(host_ifname: &str, ifname: &str) -> Mac {
    let digest = Sha1::digest(format!("{host_ifname}.{ifname}").as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    if mac == super::HOST_VETH_MAC {
        mac[5] ^= 1;
    }
    mac
}

/// Host-side veth name of a Kubernetes pod: `brd` + the first 11 hex characters of
/// `sha1("<namespace>.<pod>")` (Calico's `cali` scheme with our prefix; 14 characters, within
/// IFNAMSIZ).
pub fn host_veth_name(namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_VETH_PREFIX}{}", &hex[..11])
}

/// Host-side veth name outside Kubernetes: `brd` + the first 11 characters of the container ID.
pub fn host_veth_name_for_container(container_id: &str) -> String {
    let id: String = container_id.chars().take(11).collect();
    format!("{HOST_VETH_PREFIX}{id}")
}

/// The EUI-64 link-local address the kernel gives an interface with `mac` (RFC 4291 §2.5.1,
/// appendix A): `ee:ee:ee:ee:ee:ee` gives the pods' gateway `fe80::ecee:eeff:feee:eeee`, and a
/// remote node's VTEP MAC the next hop of IPv6 routes through VXLAN.
pub fn eui64_link_local(mac: &Mac) -> std::net::Ipv6Addr {
    let word = |a: u8, b: u8| (u16::from(a) << 8) | u16::from(b);
    std::net::Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        word(mac[0] ^ 0x02, mac[1]),
        word(mac[2], 0xff),
        word(0xfe, mac[3]),
        word(mac[4], mac[5]),
    )
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case, `:` or `-` separated).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_macs_are_local_unicast_and_stable() {
        let mac = pod_mac("brd0123456789a", "eth0");
        assert_eq!(
            mac[0] & 0x03,
            0x02,
            "locally administered, unicast: {mac:?}"
        );
        assert_eq!(mac, pod_mac("brd0123456789a", "eth0"));
        assert_ne!(mac, pod_mac("brd0123456789b", "eth0"));
        assert_ne!(mac, super::super::HOST_VETH_MAC);
    }

    #[test]
    fn eui64_link_local_of_the_host_veth_mac_is_the_pod_gateway() {
        assert_eq!(eui64_link_local(&[0xee; 6]), super::super::POD_GATEWAY_V6);
        assert_eq!(
            eui64_link_local(&[0x66, 0x01, 0x02, 0x03, 0x04, 0x05]).to_string(),
            "fe80::6401:2ff:fe03:405"
        );
    }

    #[test]
    fn vtep_mac_matches_felix() {
        // `printf node-1 | sha1sum` = b36828398e...
        let mac = vtep_mac("node-1");
        assert_eq!(mac, [0x66, 0xb3, 0x68, 0x28, 0x39, 0x8e]);
        // Locally administered, unicast.
        assert_eq!(mac[0] & 0x03, 0x02);
    }

    #[test]
    fn veth_names() {
        // `printf default.nginx | sha1sum` = c440f455693b6...
        assert_eq!(host_veth_name("default", "nginx"), "brdc440f455693");
        assert_eq!(
            host_veth_name_for_container("0123456789abcdef"),
            "brd0123456789a"
        );
        assert_eq!(host_veth_name_for_container("abc"), "brdabc");
    }

    #[test]
    fn mac_round_trip() {
        let mac = [0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
        assert_eq!(format_mac(&mac), "ee:ee:ee:ee:ee:ee");
        assert_eq!(parse_mac("EE:ee:ee:ee:ee:EE"), Some(mac));
        assert_eq!(parse_mac("66-01-02-03-04-05"), Some([0x66, 1, 2, 3, 4, 5]));
        assert_eq!(parse_mac("66:01:02:03:04"), None);
        assert_eq!(parse_mac("66:01:02:03:04:05:06"), None);
        assert_eq!(parse_mac("66:01:02:03:04:5"), None);
        assert_eq!(parse_mac("zz:01:02:03:04:05"), None);
    }
}
