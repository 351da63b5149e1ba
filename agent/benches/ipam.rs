//! IPAM allocation throughput on the embedded datastore: one node allocating alone, then 8 nodes
//! (8 OS processes) allocating at once against the same file, then releasing.
//!
//! Run: `cargo bench -p brindle-agent --bench ipam` (prints a Markdown table).
//! Workers are this binary re-executed with `BRINDLE_BENCH_WORKER` set.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use brindle_agent::datastore::embedded::EmbeddedStore;
use brindle_ipam::model::{IpPoolSpec, Object};
use brindle_ipam::store::{Store, StoreExt};
use brindle_ipam::{AssignRequest, Ipam};

const WORKER_ENV: &str = "BRINDLE_BENCH_WORKER";
const DB_ENV: &str = "BRINDLE_BENCH_DB";
const PER_NODE: usize = 500;
const NODES: usize = 8;

async fn open(path: &str) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(path).await.expect("open store"))
}

/// Allocates `PER_NODE` addresses as `node`, then releases them; returns both durations.
async fn run_node(path: &str, node: &str) -> (f64, f64) {
    let ipam = Ipam::new(open(path).await);
    let start = Instant::now();
    for i in 0..PER_NODE {
        ipam.auto_assign(&AssignRequest::workload(
            format!("bench.{node}-{i}"),
            node,
            1,
        ))
        .await
        .expect("allocation");
    }
    let allocated = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..PER_NODE {
        ipam.release_by_handle(&format!("bench.{node}-{i}"))
            .await
            .expect("release");
    }
    (allocated, start.elapsed().as_secs_f64())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(node) = std::env::var(WORKER_ENV) {
        let path = std::env::var(DB_ENV).expect("db path");
        let (a, r) = rt.block_on(run_node(&path, &node));
        println!("{a} {r}");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of benchmarks
    }
    let dir = std::env::temp_dir().join(format!("brindle-ipam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("store.db").display().to_string();
    rt.block_on(async {
        let store = open(&path).await;
        let pool: IpPoolSpec =
            serde_json::from_value(serde_json::json!({"cidr": "10.240.0.0/12"})).expect("pool");
        store
            .create_obj(&Object::new("bench", pool))
            .await
            .expect("pool");
    });

    println!("| scenario | allocations/s | releases/s |");
    println!("|---|---|---|");
    let (a, r) = rt.block_on(run_node(&path, "solo"));
    println!(
        "| 1 node, {PER_NODE} sequential | {:.0} | {:.0} |",
        PER_NODE as f64 / a,
        PER_NODE as f64 / r
    );

    let exe = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let children: Vec<_> = (0..NODES)
        .map(|i| {
            std::process::Command::new(&exe)
                .env(WORKER_ENV, format!("node{i}"))
                .env(DB_ENV, &path)
                .stdout(Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    let mut alloc_secs: f64 = 0.0;
    let mut release_secs: f64 = 0.0;
    for child in children {
        let out = child.wait_with_output().expect("worker output");
        assert!(out.status.success(), "worker failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text
            .split_whitespace()
            .map(|s| s.parse::<f64>().expect("seconds"));
        alloc_secs = alloc_secs.max(it.next().expect("alloc"));
        release_secs = release_secs.max(it.next().expect("release"));
    }
    let wall = start.elapsed().as_secs_f64();
    let total = (NODES * PER_NODE) as f64;
    println!(
        "| {NODES} nodes (processes) at once, {PER_NODE} each | {:.0} | {:.0} |",
        total / alloc_secs,
        total / release_secs
    );
    eprintln!("(8-node run wall time {wall:.2} s, including process start)");
    let _ = std::fs::remove_dir_all(&dir);
}
