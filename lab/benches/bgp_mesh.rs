//! Node-to-node mesh convergence: how long a lab of N brindle-node agents in `--routing bgp`
//! takes, from the moment they are all started, until every session is Established and every
//! node has every other node's block in its kernel.
//!
//! ```sh
//! sudo cargo bench -p brindle-lab --bench bgp_mesh   # BRINDLE_MESH_BENCH_NODES=12, _RUNS=3
//! ```
//!
//! The lab is built once (N node namespaces on one segment, a pod on each, the default
//! datastore, pool `Never`: routes straight to the node). Each run then stops every agent
//! (SIGTERM), flushes the routes of brindle-node (rtproto 98) from every node, so that nothing
//! of the previous run (graceful restart keeps it) can count, starts all agents at once and
//! polls: the time until every node has N-1 Established sessions, and the time until every
//! node's kernel has a route for each other node's block and the blackhole for its own
//! (`Cluster::wait_converged`). Polling spawns `brindlectl` and `ip` for every node, so the
//! figures are late by up to one polling round (about 10 ms per node).
//!
//! All nodes share the host's neighbour (ARP) table: from about 20 nodes the lab raises its
//! limits (`gc_thresh1/2/3`, see `brindle_lab::neigh`) for as long as it runs, and prints so.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use brindle_lab::{ip, is_root, Cluster, ClusterSpec, Encap, Routing};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How many nodes of `cluster` have `want` Established sessions.
fn nodes_established(cluster: &Cluster, want: usize) -> usize {
    (0..cluster.nodes.len())
        .filter(|&i| {
            cluster.bgp_peers(i).is_ok_and(|peers| {
                peers
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["state"] == "Established")
                    .count()
                    == want
            })
        })
        .count()
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is understood.
    if !is_root() {
        bail!("the mesh benchmark builds network namespaces: run it as root");
    }
    let n = env_or("BRINDLE_MESH_BENCH_NODES", 12);
    let runs = env_or("BRINDLE_MESH_BENCH_RUNS", 3);
    if n < 2 {
        bail!("BRINDLE_MESH_BENCH_NODES must be at least 2");
    }
    eprintln!("building a lab of {n} nodes in BGP mode");
    let built = Instant::now();
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: n,
        pods_per_node: 1,
        encap: Encap::Never,
        routing: Routing::Bgp,
        bgp_hold_time: 30,
        verbose: false,
        ..ClusterSpec::default()
    })?;
    cluster.wait_converged(Duration::from_secs(120))?;
    eprintln!("lab built and converged in {:?}", built.elapsed());
    let sessions = n * (n - 1) / 2;
    println!("| run | nodes | sessions | all Established | all routes installed |");
    println!("|---|---|---|---|---|");
    for run in 1..=runs {
        for i in 0..n {
            cluster.stop_agent(i)?;
        }
        for node in &cluster.nodes {
            ip(&["-n", &node.netns, "route", "flush", "proto", "98"])?;
        }
        let start = Instant::now();
        for i in 0..n {
            cluster.start_agent(i)?;
        }
        let deadline = start + Duration::from_secs(120);
        let mut established = None;
        loop {
            if established.is_none() && nodes_established(&cluster, n - 1) == n {
                established = Some(start.elapsed());
            }
            if established.is_some() && cluster.wait_converged(Duration::ZERO).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("run {run}: not converged within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let installed = start.elapsed();
        let established = established.unwrap_or(installed);
        println!(
            "| {run} | {n} | {sessions} | {:.2} s | {:.2} s |",
            established.as_secs_f64(),
            installed.as_secs_f64()
        );
        eprintln!(
            "load average: {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    Ok(())
}
