//! `brindlectl ipam show` and `brindlectl ipam check`: what IPAM holds, and what it holds that
//! nobody uses (Calico's calicoctl ipam show/check, same tables and the same order of checks).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;

use crate::model::{
    block_len, ordinal_to_ip, IpPoolSpec, IpamBlockSpec, IpamHandleSpec, NodeSpec, Object,
    WorkloadEndpointSpec,
};
use brindle_ipam::check::check_invariants;
use brindle_ipam::store::{Store, StoreError, StoreExt};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ctl::table;
use crate::routes::affinity_node;

/// Everything the tools read, loaded once.
pub struct Snapshot {
    pub pools: Vec<Object<IpPoolSpec>>,
    pub blocks: Vec<Object<IpamBlockSpec>>,
    pub handles: Vec<Object<IpamHandleSpec>>,
    pub nodes: Vec<Object<NodeSpec>>,
    pub endpoints: Vec<Object<WorkloadEndpointSpec>>,
    /// The store revision the snapshot was taken at (the highest of the lists).
    pub revision: u64,
}

/// One allocated address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle: Option<String>,
    pub sequence_number: Option<u64>,
    pub attrs: BTreeMap<String, String>,
}

impl Snapshot {
    pub async fn load(store: &dyn Store) -> Result<Snapshot, StoreError> {
        let (pools, r1) = store.list_objs::<IpPoolSpec>().await?;
        let (blocks, r2) = store.list_objs::<IpamBlockSpec>().await?;
        let (handles, r3) = store.list_objs::<IpamHandleSpec>().await?;
        let (nodes, r4) = store.list_objs::<NodeSpec>().await?;
        let (endpoints, r5) = store.list_objs::<WorkloadEndpointSpec>().await?;
        Ok(Snapshot {
            pools,
            blocks,
            handles,
            nodes,
            endpoints,
            revision: r1.max(r2).max(r3).max(r4).max(r5),
        })
    }

    /// Every allocation of every block.
    pub fn allocations(&self) -> Vec<Allocation> {
        let mut out = Vec::new();
        for b in &self.blocks {
            for (ordinal, attr) in b.spec.allocations.iter().enumerate() {
                let Some(index) = attr else { continue };
                let Some(ip) = ordinal_to_ip(&b.spec.cidr, ordinal) else {
                    continue;
                };
                let attr = b.spec.attributes.get(*index);
                out.push(Allocation {
                    ip,
                    block: b.spec.cidr,
                    handle: attr.and_then(|a| a.handle_id.clone()),
                    sequence_number: b
                        .spec
                        .sequence_number_for_allocation
                        .get(&ordinal.to_string())
                        .copied(),
                    attrs: attr.map(|a| a.secondary.clone()).unwrap_or_default(),
                });
            }
        }
        out
    }

    /// Addresses in use: each workload's and each node's tunnel address, with their owners.
    fn in_use(&self) -> BTreeMap<IpAddr, Vec<String>> {
        let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for ep in &self.endpoints {
            for net in &ep.spec.ip_networks {
                if let Ok(net) = net.parse::<IpNet>() {
                    out.entry(net.addr())
                        .or_default()
                        .push(format!("workload {}", ep.metadata.name));
                }
            }
        }
        for node in &self.nodes {
            for (kind, ip) in node.spec.tunnel_addrs() {
                out.entry(ip)
                    .or_default()
                    .push(format!("node {} ({kind} tunnel)", node.metadata.name));
            }
        }
        out
    }
}

/// `%.5g (%.f%%)` as calicoctl prints counts.
fn count_pct(n: f64, total: f64) -> String {
    let pct = if total > 0.0 { n * 100.0 / total } else { 0.0 };
    format!("{} ({pct:.0}%)", short(n))
}

fn short(n: f64) -> String {
    if n < 1e6 {
        format!("{n:.0}")
    } else {
        format!("{n:.5e}")
    }
}

fn addresses_in(net: &IpNet) -> f64 {
    2f64.powi(i32::from(net.max_prefix_len() - net.prefix_len()))
}

/// `ipam show`: utilisation per pool, and per block with `show_blocks`.
pub fn show(snap: &Snapshot, show_blocks: bool) -> String {
    let mut rows = Vec::new();
    for pool in &snap.pools {
        let blocks: Vec<_> = snap
            .blocks
            .iter()
            .filter(|b| pool.spec.cidr.contains(&b.spec.cidr))
            .collect();
        let used: usize = blocks
            .iter()
            .map(|b| b.spec.allocations.iter().filter(|a| a.is_some()).count())
            .sum();
        let total = addresses_in(&pool.spec.cidr);
        rows.push(vec![
            "IP Pool".to_string(),
            pool.spec.cidr.to_string(),
            short(total),
            count_pct(used as f64, total),
            count_pct(total - used as f64, total),
        ]);
        if show_blocks {
            for b in blocks {
                let total = block_len(&b.spec.cidr).unwrap_or(0) as f64;
                let used = b.spec.allocations.iter().filter(|a| a.is_some()).count() as f64;
                rows.push(vec![
                    "Block".to_string(),
                    b.spec.cidr.to_string(),
                    short(total),
                    count_pct(used, total),
                    count_pct(total - used, total),
                ]);
            }
        }
    }
    table(
        &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
        &rows,
    )
}

/// `ipam show --show-borrowed`: addresses allocated to a node from another node's block.
pub fn show_borrowed(snap: &Snapshot) -> String {
    let mut rows = Vec::new();
    for b in &snap.blocks {
        let owner = affinity_node(b.spec.affinity.as_deref()).unwrap_or("");
        for a in snap
            .allocations()
            .into_iter()
            .filter(|a| a.block == b.spec.cidr)
        {
            let node = a.attrs.get("node").map(String::as_str).unwrap_or("");
            if node.is_empty() || node == owner {
                continue;
            }
            let allocated_to = match (a.attrs.get("namespace"), a.attrs.get("pod")) {
                (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
                _ => a.handle.clone().unwrap_or_default(),
            };
            rows.push(vec![
                a.ip.to_string(),
                node.to_string(),
                b.spec.cidr.to_string(),
                owner.to_string(),
                a.attrs.get("type").cloned().unwrap_or_else(|| "pod".into()),
                allocated_to,
            ]);
        }
    }
    table(
        &[
            "IP",
            "BORROWING-NODE",
            "BLOCK",
            "BLOCK OWNER",
            "TYPE",
            "ALLOCATED-TO",
        ],
        &rows,
    )
}

/// `ipam show --ip X`.
pub fn show_ip(snap: &Snapshot, ip: IpAddr) -> String {
    match snap.allocations().into_iter().find(|a| a.ip == ip) {
        Some(a) => {
            let attrs: Vec<String> = a.attrs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!(
                "IP {ip} is in use\nHandle ID: {}\nBlock: {}\nAttributes: {}\n",
                a.handle.unwrap_or_default(),
                a.block,
                attrs.join(" ")
            )
        }
        None => format!("IP {ip} is not currently assigned\n"),
    }
}

/// What `ipam check` found, as written to `-o report.json` and read by `ipam release`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The brindlectl version that wrote the report.
    pub version: String,
    /// The store revision the check read.
    pub revision: u64,
    /// Allocated addresses that no workload or node uses.
    pub leaked: Vec<Allocation>,
    /// Addresses used by a workload or node but not allocated in IPAM.
    pub unallocated_in_use: Vec<String>,
    /// Addresses with more than one user.
    pub multiple_owners: Vec<String>,
    /// Handle resources with no allocation.
    pub orphan_handles: Vec<String>,
    /// Handles named by allocations without a handle resource.
    pub missing_handles: Vec<String>,
    /// Blocks affine to a node that does not exist.
    pub blocks_of_missing_nodes: Vec<String>,
    /// Structural problems of blocks and handles.
    pub invalid: Vec<String>,
}

impl CheckReport {
    pub fn problems(&self) -> usize {
        self.leaked.len()
            + self.unallocated_in_use.len()
            + self.multiple_owners.len()
            + self.orphan_handles.len()
            + self.missing_handles.len()
            + self.blocks_of_missing_nodes.len()
            + self.invalid.len()
    }
}

/// `ipam check`: prints its progress to `out` as it goes and returns the report.
pub async fn check(
    store: &dyn Store,
    out: &mut dyn Write,
    show_problem_ips: bool,
) -> Result<CheckReport, StoreError> {
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say("Checking IPAM for inconsistencies...\n".into());
    say("Loading all IPAM blocks, pools, handles, nodes and workload endpoints...".into());
    let snap = Snapshot::load(store).await?;
    let allocations = snap.allocations();
    say(format!("Found {} IPAM blocks.", snap.blocks.len()));
    say(format!(
        "IPAM blocks record {} allocations.",
        allocations.len()
    ));
    let active: Vec<_> = snap.pools.iter().filter(|p| !p.spec.disabled).collect();
    for p in &active {
        say(format!("  {}", p.spec.cidr));
    }
    say(format!("Found {} active IP pools.", active.len()));
    let in_use = snap.in_use();
    let tunnel_ips = snap
        .nodes
        .iter()
        .map(|n| n.spec.tunnel_addrs().len())
        .sum::<usize>();
    say(format!("Found {tunnel_ips} node tunnel IPs."));
    let workload_ips: usize = snap
        .endpoints
        .iter()
        .map(|e| e.spec.ip_networks.len())
        .sum();
    say(format!("Found {workload_ips} workload IPs."));
    say(format!(
        "Workloads and nodes are using {} IPs.\n",
        in_use.len()
    ));

    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for a in &allocations {
        *by_node
            .entry(a.attrs.get("node").cloned().unwrap_or_default())
            .or_default() += 1;
    }
    let mut top: Vec<_> = by_node.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    say("Looking for top (up to 20) nodes by allocations...".into());
    for (node, n) in top.iter().take(20) {
        say(format!("  {node} has {n} allocations"));
    }

    let mut report = CheckReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision: snap.revision,
        ..CheckReport::default()
    };
    say("\nScanning for IPs that are allocated but not actually in use...".into());
    for a in &allocations {
        if !in_use.contains_key(&a.ip) {
            if show_problem_ips {
                say(format!(
                    "  {} leaked; handle {:?} attrs {:?}",
                    a.ip, a.handle, a.attrs
                ));
            }
            report.leaked.push(a.clone());
        }
    }
    say(format!(
        "Found {} IPs that are allocated in IPAM but not actually in use.",
        report.leaked.len()
    ));

    say(
        "Scanning for IPs that are in use by a workload or node but not allocated in IPAM..."
            .into(),
    );
    let allocated: BTreeSet<IpAddr> = allocations.iter().map(|a| a.ip).collect();
    let mut outside_pools = 0;
    for (ip, owners) in &in_use {
        if owners.len() > 1 {
            say(format!("  {ip} has multiple owners: {}", owners.join(", ")));
            report
                .multiple_owners
                .push(format!("{ip}: {}", owners.join(", ")));
        }
        if !allocated.contains(ip) {
            if !active.iter().any(|p| p.spec.cidr.contains(ip)) {
                outside_pools += 1;
            }
            report
                .unallocated_in_use
                .push(format!("{ip}: {}", owners.join(", ")));
        }
    }
    say(format!(
        "Found {outside_pools} in-use IPs that are not in active IP pools."
    ));
    say(format!(
        "Found {} in-use IPs that are in active IP pools but have no corresponding IPAM allocation.",
        report.unallocated_in_use.len() - outside_pools
    ));

    say("Scanning for IPAM handles with no matching IPs...".into());
    let handles_in_blocks: BTreeSet<String> = allocations
        .iter()
        .filter_map(|a| a.handle.clone())
        .collect();
    for h in &snap.handles {
        if !handles_in_blocks.contains(&h.spec.handle_id) {
            report.orphan_handles.push(h.spec.handle_id.clone());
        }
    }
    say(format!(
        "Found {} handles with no matching IPs (and {} handles with matches).",
        report.orphan_handles.len(),
        snap.handles.len() - report.orphan_handles.len()
    ));
    say("Scanning for IPs with missing handle...".into());
    let handle_ids: BTreeSet<&str> = snap
        .handles
        .iter()
        .map(|h| h.spec.handle_id.as_str())
        .collect();
    report.missing_handles = handles_in_blocks
        .iter()
        .filter(|h| !handle_ids.contains(h.as_str()))
        .cloned()
        .collect();
    say(format!(
        "Found {} handles mentioned in blocks with no matching handle resource.",
        report.missing_handles.len()
    ));

    say("Scanning for blocks of nodes that no longer exist...".into());
    let nodes: BTreeSet<&str> = snap
        .nodes
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    for b in &snap.blocks {
        if let Some(owner) = affinity_node(b.spec.affinity.as_deref()) {
            if !nodes.contains(owner) {
                report
                    .blocks_of_missing_nodes
                    .push(format!("{} (node {owner})", b.spec.cidr));
            }
        }
    }
    say(format!(
        "Found {} blocks affine to nodes that do not exist.",
        report.blocks_of_missing_nodes.len()
    ));

    say("Validating IPAMBlock structures...".into());
    if let Err(problems) = check_invariants(store).await {
        report.invalid = problems;
    }
    for p in &report.invalid {
        say(format!("  {p}"));
    }
    say(format!(
        "Found {} invalid IPAM structures.",
        report.invalid.len()
    ));
    say(format!(
        "Check complete; found {} problems.",
        report.problems()
    ));
    Ok(report)
}

/// What `ipam release --from-report` did.
#[derive(Debug, Default)]
pub struct ReleaseOutcome {
    pub released: Vec<IpAddr>,
    /// Leaks of the report that a fresh check no longer confirms, with why.
    pub skipped: Vec<String>,
}

/// Releases the leaked addresses of `report` that a fresh check confirms are still leaked with
/// the same handle and sequence number; the release itself is sequence-checked, so an address
/// handed out again between the check and the release is left alone.
pub async fn release_from_report(
    store: &dyn Store,
    ipam: &brindle_ipam::Ipam,
    report: &CheckReport,
) -> Result<ReleaseOutcome, String> {
    if report.version != env!("CARGO_PKG_VERSION") {
        return Err(format!(
            "the report was written by brindlectl {}, this is {}; run ipam check again",
            report.version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    let fresh = check(store, &mut std::io::sink(), false)
        .await
        .map_err(|e| e.to_string())?;
    let mut outcome = ReleaseOutcome::default();
    let mut opts = Vec::new();
    for leak in &report.leaked {
        match fresh.leaked.iter().find(|f| f.ip == leak.ip) {
            Some(now)
                if now.handle == leak.handle && now.sequence_number == leak.sequence_number =>
            {
                opts.push(brindle_ipam::block::ReleaseOptions {
                    address: leak.ip,
                    handle_id: leak.handle.clone(),
                    sequence_number: leak.sequence_number,
                });
            }
            Some(_) => outcome
                .skipped
                .push(format!("{}: allocated again since the report", leak.ip)),
            None => outcome
                .skipped
                .push(format!("{}: no longer leaked", leak.ip)),
        }
    }
    let done = ipam
        .release_ips_detailed(&opts)
        .await
        .map_err(|e| e.to_string())?;
    outcome.released = done.released;
    for (ip, why) in done.refused {
        outcome.skipped.push(format!("{ip}: refused ({why:?})"));
    }
    for ip in done.not_allocated {
        outcome
            .skipped
            .push(format!("{ip}: not allocated any more"));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brindle_ipam::store::MemStore;
    use brindle_ipam::{AssignRequest, Ipam};
    use std::sync::Arc;

    async fn cluster() -> (Arc<dyn Store>, Ipam, Vec<IpNet>) {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let pool: IpPoolSpec =
            serde_json::from_value(serde_json::json!({"cidr": "10.244.0.0/24"})).expect("pool");
        store
            .create_obj(&Object::new("p", pool))
            .await
            .expect("pool");
        let node = NodeSpec::default();
        store
            .create_obj(&Object::new("n1", node))
            .await
            .expect("node");
        let ipam = Ipam::new(store.clone());
        let mut ips = Vec::new();
        for c in ["a", "b", "c"] {
            let mut req = AssignRequest::workload(format!("net.{c}"), "n1", 1);
            req.attrs.insert("node".into(), "n1".into());
            ips.extend(ipam.auto_assign(&req).await.expect("assign"));
        }
        // Only a and b have workload endpoints: c is a leak.
        for (c, ip) in ["a", "b"].iter().zip(&ips) {
            let ep = WorkloadEndpointSpec {
                orchestrator: "cni".into(),
                node: "n1".into(),
                endpoint: "eth0".into(),
                container_id: c.to_string(),
                ip_networks: vec![format!("{}/32", ip.addr())],
                interface_name: format!("brd{c}"),
                ..WorkloadEndpointSpec::default()
            };
            store
                .create_obj(&Object::new(format!("ep-{c}"), ep))
                .await
                .expect("ep");
        }
        (store, ipam, ips)
    }

    #[tokio::test]
    async fn check_finds_the_leak_and_prints_its_progress() {
        let (store, _, ips) = cluster().await;
        let mut out = Vec::new();
        let report = check(store.as_ref(), &mut out, true).await.expect("check");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(report.leaked.len(), 1, "{text}");
        assert_eq!(report.leaked[0].ip, ips[2].addr());
        assert_eq!(report.leaked[0].handle.as_deref(), Some("net.c"));
        assert!(report.leaked[0].sequence_number.is_some());
        assert_eq!(report.problems(), 1, "{report:?}");
        assert!(text.contains("IPAM blocks record 3 allocations."), "{text}");
        assert!(
            text.ends_with("Check complete; found 1 problems.\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn release_from_report_frees_only_confirmed_leaks() {
        let (store, ipam, ips) = cluster().await;
        let report = check(store.as_ref(), &mut Vec::new(), false)
            .await
            .expect("check");
        assert_eq!(report.leaked.len(), 1);
        // Between the report and the release, the leaked address's owner comes back: it is
        // released and handed out again, with a new sequence number.
        ipam.release_by_handle("net.c").await.expect("release");
        let mut req = AssignRequest::workload("net.d", "n1", 1);
        req.attrs.insert("node".into(), "n1".into());
        ipam.auto_assign(&req).await.expect("assign");
        // And a new leak appears that the report does not know about.
        let mut req = AssignRequest::workload("net.e", "n1", 1);
        req.attrs.insert("node".into(), "n1".into());
        let e = ipam.auto_assign(&req).await.expect("assign");
        let outcome = release_from_report(store.as_ref(), &ipam, &report)
            .await
            .expect("release");
        assert!(outcome.released.is_empty(), "{outcome:?}");
        assert_eq!(outcome.skipped.len(), 1, "{outcome:?}");
        assert_eq!(
            ipam.ips_by_handle("net.e").await.expect("ips"),
            vec![e[0].addr()]
        );

        // A report that still holds: the leak is freed.
        let report = check(store.as_ref(), &mut Vec::new(), false)
            .await
            .expect("check");
        let outcome = release_from_report(store.as_ref(), &ipam, &report)
            .await
            .expect("release");
        assert_eq!(
            outcome.released.len(),
            2,
            "net.d and net.e have no endpoint: {outcome:?}"
        );
        let after = check(store.as_ref(), &mut Vec::new(), false)
            .await
            .expect("check");
        assert!(after.leaked.is_empty(), "{after:?}");
        assert!(!ips.is_empty());
    }

    #[tokio::test]
    async fn a_workload_address_without_allocation_is_reported() {
        let (store, ipam, ips) = cluster().await;
        ipam.release_by_handle("net.a").await.expect("release");
        let report = check(store.as_ref(), &mut Vec::new(), false)
            .await
            .expect("check");
        assert_eq!(report.unallocated_in_use.len(), 1, "{report:?}");
        assert!(report.unallocated_in_use[0].starts_with(&ips[0].addr().to_string()));
    }

    #[tokio::test]
    async fn show_prints_pool_and_block_utilisation() {
        let (store, _, _) = cluster().await;
        let snap = Snapshot::load(store.as_ref()).await.expect("load");
        let text = show(&snap, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("GROUPING"), "{text}");
        assert!(
            lines[1].contains("IP Pool") && lines[1].contains("256") && lines[1].contains("3 (1%)"),
            "{text}"
        );
        assert!(
            lines[2].contains("Block") && lines[2].contains("64") && lines[2].contains("3 (5%)"),
            "{text}"
        );
        let ip = snap.allocations()[0].ip;
        assert!(show_ip(&snap, ip).starts_with(&format!("IP {ip} is in use")));
        assert!(show_ip(&snap, "10.9.9.9".parse().expect("ip")).contains("not currently assigned"));
    }
}
