//! Writes to `/proc/sys`. `/proc/sys/net` shows the network namespace of the thread that opens
//! the file, so these act on the caller's current netns.

use std::path::PathBuf;

use super::DataplaneError;

/// Sets one sysctl. `key` is given as path components (`["net", "ipv4", "conf", ifname,
/// "proxy_arp"]`) because interface names may contain dots (`vxlan.brindle`).
pub(crate) fn set(key: &[&str], value: &str) -> Result<(), DataplaneError> {
    let path: PathBuf = ["/proc/sys"].iter().chain(key.iter()).collect();
    std::fs::write(&path, value).map_err(|e| DataplaneError::Sysctl {
        key: key.join("."),
        reason: e.to_string(),
    })
}

/// Reads one sysctl, trimmed.
pub(crate) fn get(key: &[&str]) -> Result<String, DataplaneError> {
    let path: PathBuf = ["/proc/sys"].iter().chain(key.iter()).collect();
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_string())
        .map_err(|e| DataplaneError::Sysctl {
            key: key.join("."),
            reason: e.to_string(),
        })
}

/// The per-interface settings of a host-side pod veth (Calico's `configureSysctls`): the host
/// answers the pod's ARP for 169.254.1.1 itself (proxy ARP, without delay) and forwards its
/// traffic. `proxy_delay` is best effort, as in Calico.
pub(crate) fn configure_host_veth(ifname: &str) -> Result<(), DataplaneError> {
    set(&["net", "ipv4", "conf", ifname, "route_localnet"], "1")?;
    if let Err(e) = set(&["net", "ipv4", "neigh", ifname, "proxy_delay"], "0") {
        tracing::warn!(interface = ifname, error = %e, "could not set proxy_delay");
    }
    set(&["net", "ipv4", "conf", ifname, "proxy_arp"], "1")?;
    set(&["net", "ipv4", "conf", ifname, "forwarding"], "1")?;
    // The host never takes router advertisements from a pod; best effort, as in Calico (a host
    // without IPv6 has no such key).
    if let Err(e) = set(&["net", "ipv6", "conf", ifname, "accept_ra"], "0") {
        tracing::debug!(interface = ifname, error = %e, "could not set accept_ra");
    }
    Ok(())
}

/// The IPv6 settings of a host-side pod veth, for a pod with an IPv6 address (Calico's
/// `configureSysctls`): IPv6 on, no duplicate address detection (the link-local gateway
/// `fe80::ecee:eeff:feee:eeee` must be usable at once), proxy NDP, forwarding on the interface
/// and globally.
pub(crate) fn configure_host_veth_v6(ifname: &str) -> Result<(), DataplaneError> {
    set(&["net", "ipv6", "conf", ifname, "accept_dad"], "0")?;
    set(&["net", "ipv6", "conf", ifname, "disable_ipv6"], "0")?;
    set(&["net", "ipv6", "conf", ifname, "accept_ra"], "0")?;
    set(&["net", "ipv6", "conf", ifname, "proxy_ndp"], "1")?;
    set(&["net", "ipv6", "conf", ifname, "forwarding"], "1")?;
    if get(&["net", "ipv6", "conf", "all", "forwarding"])? != "1" {
        set(&["net", "ipv6", "conf", "all", "forwarding"], "1")?;
    }
    Ok(())
}

/// The IPv6 settings inside a pod with an IPv6 address (run in the pod's namespace): IPv6 on,
/// and no duplicate address detection on `ifname`, so the pod's /128 is usable as soon as it
/// is added instead of staying "tentative" for a second or more.
pub(crate) fn configure_pod_v6(ifname: &str) -> Result<(), DataplaneError> {
    for scope in ["all", "default", "lo", ifname] {
        set(&["net", "ipv6", "conf", scope, "disable_ipv6"], "0")?;
    }
    set(&["net", "ipv6", "conf", ifname, "accept_dad"], "0")?;
    Ok(())
}
