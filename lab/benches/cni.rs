//! CNI ADD and DEL latency: Brindle's plugin (with brindle-node and the embedded datastore)
//! against the reference `ptp` plugin with `host-local` IPAM, in the same run, on the same
//! node namespace.
//!
//! ```text
//! sudo cargo bench -p brindle-lab --bench cni            # 100 pods, 3 rounds per plugin
//! BRINDLE_CNI_BENCH_PODS=200 BRINDLE_CNI_BENCH_ROUNDS=5 cargo bench -p brindle-lab --bench cni
//! ```
//!
//! One lab node (a namespace with brindle-node running in it) is built; the timing loop then
//! runs inside that namespace (this binary re-executes itself through `ip netns exec`), so each
//! plugin is started directly as a container runtime would start it, without `ip netns exec`
//! in the measured time. The pod namespaces are created beforehand (untimed); each round times
//! every ADD, then every DEL, one plugin after the other; rounds alternate which plugin goes
//! first. Each sample is the wall time of one plugin process, from spawn to exit.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brindle_lab::cni_exec::{reference_plugin, Attachment, Runtime, REFERENCE_PLUGINS};
use brindle_lab::{ip, is_root, Cluster, ClusterSpec};
use serde_json::{json, Value};

const INNER: &str = "BRINDLE_CNI_BENCH_INNER";

fn main() -> Result<()> {
    if std::env::var_os(INNER).is_some() {
        return inner();
    }
    if !is_root() {
        bail!("the CNI benchmark builds network namespaces: run it as root");
    }
    for p in ["ptp", "host-local"] {
        if reference_plugin(p).is_none() {
            bail!(
                "the reference plugin {p} is missing: apt-get install containernetworking-plugins"
            );
        }
    }
    let pods: usize = env_or("BRINDLE_CNI_BENCH_PODS", 100);
    let rounds: usize = env_or("BRINDLE_CNI_BENCH_ROUNDS", 3);
    eprintln!("building a one-node lab (brindle-node on the embedded datastore)");
    let cluster = Cluster::build(ClusterSpec {
        nodes: 1,
        pods_per_node: 0,
        verbose: false,
        ..ClusterSpec::default()
    })?;
    let brindle = cluster.runtime(0)?.conflist;
    let prefix = format!("bb{}", cluster.id);
    let ptp = json!({
        "cniVersion": "1.0.0",
        "name": "ptp-bench",
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.250.0.0/16"}]],
                "dataDir": cluster.dir.join("host-local").display().to_string(),
            },
        }],
    });
    let spec = json!({
        "pods": pods,
        "rounds": rounds,
        "bins": cluster.bins.display().to_string(),
        "prefix": prefix,
        "conflists": {"brindle": brindle, "ptp+host-local": ptp},
    });
    // The pod namespaces are made here, outside `ip netns exec` (whose private mount
    // namespace would hide them from brindle-node).
    let mut namespaces = Namespaces(Vec::new());
    eprintln!("creating {} pod namespaces", 2 * rounds * pods);
    for which in 0..2 {
        for round in 0..rounds {
            for i in 0..pods {
                let ns = pod_netns(&prefix, which, round, i);
                ip(&["netns", "add", &ns])?;
                namespaces.0.push(ns);
            }
        }
    }
    let spec_path = cluster.dir.join("bench.json");
    std::fs::write(&spec_path, spec.to_string())?;
    let exe = std::env::current_exe()?;
    let status = Command::new("ip")
        .args(["netns", "exec", &cluster.nodes[0].netns])
        .arg(exe)
        .env(INNER, &spec_path)
        .status()
        .context("running the timing loop in the node namespace")?;
    if !status.success() {
        bail!(
            "the timing loop failed; brindle-node's log: {}",
            cluster.nodes[0].log.display()
        );
    }
    drop(namespaces);
    Ok(())
}

fn pod_netns(prefix: &str, which: usize, round: usize, i: usize) -> String {
    format!("{prefix}{which}r{round}p{i}")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The timing loop, inside the node's namespace.
fn inner() -> Result<()> {
    let spec_path = std::env::var(INNER)?;
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&spec_path)?)?;
    let pods = spec["pods"].as_u64().unwrap_or(100) as usize;
    let rounds = spec["rounds"].as_u64().unwrap_or(3) as usize;
    let prefix = spec["prefix"].as_str().unwrap_or("bb").to_string();
    let cni_path = vec![
        PathBuf::from(spec["bins"].as_str().unwrap_or_default()),
        PathBuf::from(REFERENCE_PLUGINS),
    ];
    let names = ["brindle", "ptp+host-local"];
    let mut samples: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); 2];
    for round in 0..rounds {
        for k in 0..2 {
            // Alternate which plugin goes first.
            let which = (k + round) % 2;
            let rt = Runtime {
                conflist: spec["conflists"][names[which]].clone(),
                cni_path: cni_path.clone(),
                exec_in: None,
            };
            eprintln!(
                "round {}/{rounds}: {} ADD then DEL of {pods} pods",
                round + 1,
                names[which]
            );
            let names: Vec<String> = (0..pods)
                .map(|i| pod_netns(&prefix, which, round, i))
                .collect();
            let (adds, dels) = one_round(&rt, &names)?;
            samples[which].0.extend(adds);
            samples[which].1.extend(dels);
        }
    }
    let stats: Vec<[Duration; 4]> = samples
        .iter_mut()
        .map(|(adds, dels)| {
            adds.sort();
            dels.sort();
            [
                percentile(adds, 50),
                percentile(adds, 90),
                percentile(dels, 50),
                percentile(dels, 90),
            ]
        })
        .collect();
    println!("\nCNI ADD/DEL of {pods} pods x {rounds} rounds, wall time per plugin process (ms)\n");
    println!("| plugin | ADD median | ADD p90 | DEL median | DEL p90 |");
    println!("|---|---|---|---|---|");
    for (name, s) in names.iter().zip(&stats) {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(s[0]),
            ms(s[1]),
            ms(s[2]),
            ms(s[3])
        );
    }
    println!(
        "| brindle / ptp | {:.2} | {:.2} | {:.2} | {:.2} |",
        ms(stats[0][0]) / ms(stats[1][0]),
        ms(stats[0][1]) / ms(stats[1][1]),
        ms(stats[0][2]) / ms(stats[1][2]),
        ms(stats[0][3]) / ms(stats[1][3])
    );
    Ok(())
}

/// ADDs a pod in every namespace of `names`, then DELs every pod.
fn one_round(rt: &Runtime, names: &[String]) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let pods = names.len();
    let attachments: Vec<Attachment> = names
        .iter()
        .map(|ns| Attachment {
            container_id: format!("{ns}c"),
            netns: format!("/var/run/netns/{ns}"),
            ifname: "eth0".into(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={ns}"),
            runtime_config: json!({}),
        })
        .collect();
    let mut adds = Vec::with_capacity(pods);
    let mut results = Vec::with_capacity(pods);
    for att in &attachments {
        let t = Instant::now();
        let result = rt.add(att)?;
        adds.push(t.elapsed());
        results.push(result);
    }
    let mut dels = Vec::with_capacity(pods);
    for (att, result) in attachments.iter().zip(&results) {
        let t = Instant::now();
        rt.del(att, Some(result))?;
        dels.push(t.elapsed());
    }
    Ok((adds, dels))
}

/// Deletes the pod namespaces, also when the benchmark fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) * p + 50) / 100;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
