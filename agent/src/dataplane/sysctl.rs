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

/// One sysctl the dataplane needs, checked on every pass.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sysctl {
    /// Path components under `/proc/sys` (`["net", "ipv4", "ip_forward"]`).
    pub key: Vec<String>,
    /// The value written when the current one is not acceptable.
    pub value: String,
    /// Other values left as they are (`rp_filter` off is as good as loose).
    pub also_fine: Vec<String>,
}

impl Sysctl {
    pub fn new(key: &[&str], value: &str, also_fine: &[&str]) -> Self {
        Sysctl {
            key: key.iter().map(|s| s.to_string()).collect(),
            value: value.to_string(),
            also_fine: also_fine.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `net.ipv4.ip_forward`, as `sysctl` prints it.
    pub fn name(&self) -> String {
        self.key.join(".")
    }

    fn accepts(&self, current: &str) -> bool {
        current == self.value || self.also_fine.iter().any(|v| v == current)
    }
}

/// Checks and sets the wanted sysctls. `seen_ok` remembers which were right once, so that a
/// later change is reported as made behind our back. Returns how many were written; errors are
/// pushed to `errors`.
pub(crate) fn reconcile(
    want: &std::collections::BTreeSet<Sysctl>,
    seen_ok: &mut std::collections::BTreeSet<String>,
    errors: &mut Vec<String>,
) -> usize {
    let mut written = 0;
    for sysctl in want {
        let key: Vec<&str> = sysctl.key.iter().map(String::as_str).collect();
        let name = sysctl.name();
        let current = match get(&key) {
            Ok(current) => current,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if sysctl.accepts(&current) {
            seen_ok.insert(name);
            continue;
        }
        if seen_ok.contains(&name) {
            tracing::warn!(sysctl = %name, current = %current, wanted = %sysctl.value,
                "sysctl changed behind our back; restoring");
        } else {
            tracing::info!(sysctl = %name, current = %current, wanted = %sysctl.value, "setting sysctl");
        }
        match set(&key, &sysctl.value) {
            Ok(()) => {
                seen_ok.insert(name);
                written += 1;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    written
}
