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
    Ok(())
}
