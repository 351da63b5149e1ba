//! NAT outgoing (Calico's `masq_mgr.go`): pod traffic from a pool with `natOutgoing: true` to a
//! destination outside every pool leaves with the node's address.
//!
//! Brindle owns one nftables table per family, `table ip brindle-nat` and `table ip6
//! brindle-nat`, and nothing else. Each is replaced whole in one `nft -f -` transaction (create,
//! delete, define: atomic, so no packet ever sees a half-written table); a family without any
//! NAT-outgoing pool has no table. Drift is found by comparing the kernel's listing with the
//! one read right after our last write: anyone changing or deleting the table is reported and
//! undone on the next pass.
//!
//! nftables has no netlink crate we trust yet; `nft -f -` is the tool's own interface and keeps
//! the dependency list short.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::DataplaneError;

/// Name of Brindle's table, in both the `ip` and `ip6` families.
pub const NAT_TABLE: &str = "brindle-nat";

/// What NAT outgoing should do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatOutgoing {
    /// Every pool's CIDR: traffic to these is never masqueraded.
    pub pools: BTreeSet<IpNet>,
    /// The CIDRs of pools with `natOutgoing: true`: traffic from these is masqueraded.
    pub masquerade: BTreeSet<IpNet>,
}

impl NatOutgoing {
    fn family_wanted(&self, v6: bool) -> bool {
        self.masquerade.iter().any(|n| is_v6(n) == v6)
    }
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

/// The nft script that makes the kernel hold `want`, whatever it holds now.
pub(crate) fn render(want: &NatOutgoing) -> String {
    let mut script = String::new();
    for (family, v6, addr_type) in [("ip", false, "ipv4_addr"), ("ip6", true, "ipv6_addr")] {
        // Declaring an existing table is a no-op, so the delete always has a target.
        script.push_str(&format!(
            "table {family} {NAT_TABLE}\ndelete table {family} {NAT_TABLE}\n"
        ));
        if !want.family_wanted(v6) {
            continue;
        }
        let set = |name: &str, nets: &BTreeSet<IpNet>| {
            let elements: Vec<String> = nets
                .iter()
                .filter(|n| is_v6(n) == v6)
                .map(|n| n.trunc().to_string())
                .collect();
            format!(
                "\tset {name} {{\n\t\ttype {addr_type}\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {{ {} }}\n\t}}\n",
                elements.join(", ")
            )
        };
        script.push_str(&format!("table {family} {NAT_TABLE} {{\n"));
        script.push_str(&set("pools", &want.pools));
        script.push_str(&set("masq-pools", &want.masquerade));
        script.push_str(&format!(
            "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\t{family} saddr @masq-pools {family} daddr != @pools masquerade\n\t}}\n}}\n"
        ));
    }
    script
}

/// Keeps the kernel's `brindle-nat` tables as wanted.
#[derive(Default)]
pub(crate) struct NatTables {
    /// What was last written, and the kernel's listing right after.
    applied: Option<(NatOutgoing, String)>,
}

impl NatTables {
    /// Brings the tables to `want`; returns whether it wrote.
    pub(crate) async fn reconcile(&mut self, want: &NatOutgoing) -> Result<bool, DataplaneError> {
        let listing = match list().await {
            Ok(listing) => listing,
            // Without nft nothing of ours can exist, and nothing is needed.
            Err(NftError::Missing) if want.masquerade.is_empty() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match &self.applied {
            Some((applied, seen)) if applied == want => {
                if *seen == listing {
                    return Ok(false);
                }
                tracing::warn!(
                    table = NAT_TABLE,
                    "nftables NAT table changed behind our back; restoring"
                );
            }
            // First pass with nothing wanted and nothing there: nothing to do.
            None if !want.family_wanted(false)
                && !want.family_wanted(true)
                && listing.is_empty() =>
            {
                self.applied = Some((want.clone(), listing));
                return Ok(false);
            }
            _ => {}
        }
        nft_apply(&render(want)).await?;
        let listing = list().await.map_err(DataplaneError::from)?;
        tracing::info!(
            masquerade = ?want.masquerade,
            "nftables NAT outgoing table written"
        );
        self.applied = Some((want.clone(), listing));
        Ok(true)
    }
}

#[derive(Debug)]
enum NftError {
    /// The nft binary is not installed.
    Missing,
    Failed(String),
}

impl From<NftError> for DataplaneError {
    fn from(e: NftError) -> Self {
        DataplaneError::Nftables(match e {
            NftError::Missing => "nft not found (install the nftables package)".to_string(),
            NftError::Failed(reason) => reason,
        })
    }
}

async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => NftError::Missing,
            _ => NftError::Failed(format!("running nft: {e}")),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| NftError::Failed(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NftError::Failed(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Err(NftError::Failed(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn nft_apply(script: &str) -> Result<(), DataplaneError> {
    nft(&["-f", "-"], Some(script)).await?;
    Ok(())
}

/// The kernel's listing of our tables (empty when there are none).
async fn list() -> Result<String, NftError> {
    let tables = nft(&["list", "tables"], None).await?;
    let mut listing = String::new();
    for family in ["ip", "ip6"] {
        if tables
            .lines()
            .any(|l| l.trim() == format!("table {family} {NAT_TABLE}"))
        {
            listing.push_str(&nft(&["list", "table", family, NAT_TABLE], None).await?);
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn masquerades_only_from_nat_pools_to_outside_every_pool() {
        let script = render(&NatOutgoing {
            pools: nets(&["10.244.0.0/16", "10.250.0.0/16", "fd00:10:244::/48"]),
            masquerade: nets(&["10.244.0.0/16"]),
        });
        assert!(script.starts_with("table ip brindle-nat\ndelete table ip brindle-nat\n"));
        assert!(script.contains("elements = { 10.244.0.0/16, 10.250.0.0/16 }"));
        assert!(script.contains("elements = { 10.244.0.0/16 }"));
        assert!(script.contains("ip saddr @masq-pools ip daddr != @pools masquerade"));
        // No IPv6 pool masquerades: the ip6 table is only deleted.
        assert!(script.ends_with("table ip6 brindle-nat\ndelete table ip6 brindle-nat\n"));
    }

    #[test]
    fn nothing_wanted_deletes_both_tables() {
        let script = render(&NatOutgoing::default());
        assert_eq!(
            script,
            "table ip brindle-nat\ndelete table ip brindle-nat\n\
             table ip6 brindle-nat\ndelete table ip6 brindle-nat\n"
        );
    }

    #[test]
    fn ipv6_pools_get_the_ip6_table() {
        let script = render(&NatOutgoing {
            pools: nets(&["fd00:10:244::/48"]),
            masquerade: nets(&["fd00:10:244::/48"]),
        });
        assert!(script.contains("table ip6 brindle-nat {"));
        assert!(script.contains("type ipv6_addr"));
        assert!(script.contains("ip6 saddr @masq-pools ip6 daddr != @pools masquerade"));
        assert!(!script.contains("table ip brindle-nat {"));
    }
}
