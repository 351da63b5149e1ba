//! IPAM allocation throughput on each datastore backend: one node allocating alone, then 8 nodes
//! (8 OS processes) allocating at once against the same store, then releasing. The embedded
//! store is a temp file; etcd is a real server (Debian's `etcd`) the benchmark starts on a
//! loopback port, when the binary is installed.
//!
//! Run: `cargo bench -p brindle-agent --bench ipam` (prints a Markdown table).
//! Workers are this binary re-executed with `BRINDLE_BENCH_WORKER` set.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use brindle_ipam::model::{IpPoolSpec, Object};
use brindle_ipam::store::{Store, StoreExt};
use brindle_ipam::{AssignRequest, Ipam};

const WORKER_ENV: &str = "BRINDLE_BENCH_WORKER";
const DB_ENV: &str = "BRINDLE_BENCH_DB";
const PER_NODE: usize = 500;
const NODES: usize = 8;

async fn open(spec: &str) -> Arc<dyn Store> {
    brindle_agent::datastore::open(spec)
        .await
        .expect("open store")
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
        let path = std::env::var(DB_ENV).expect("datastore spec");
        let (a, r) = rt.block_on(run_node(&path, &node));
        println!("{a} {r}");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of benchmarks
    }
    let dir = std::env::temp_dir().join(format!("brindle-ipam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("| backend | scenario | allocations/s | releases/s |");
    println!("|---|---|---|---|");
    let embedded = format!("embedded:{}", dir.join("store.db").display());
    run_backend(&rt, "embedded", &embedded);
    match start_etcd(&dir) {
        Some((mut etcd, spec)) => {
            run_backend(&rt, "etcd", &spec);
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
        None => eprintln!("etcd not installed: the etcd rows are skipped"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts etcd on a free loopback port; returns it and its datastore spec once it answers.
fn start_etcd(dir: &std::path::Path) -> Option<(std::process::Child, String)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        l.local_addr().ok()?.port()
    };
    let peer = port.checked_add(1)?;
    let url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let spec = format!("etcd://127.0.0.1:{port}");
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            return Some((child, spec));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

fn run_backend(rt: &tokio::runtime::Runtime, name: &str, spec: &str) {
    rt.block_on(async {
        let store = open(spec).await;
        let pool: IpPoolSpec =
            serde_json::from_value(serde_json::json!({"cidr": "10.240.0.0/12"})).expect("pool");
        store
            .create_obj(&Object::new("bench", pool))
            .await
            .expect("pool");
    });
    let (a, r) = rt.block_on(run_node(spec, "solo"));
    println!(
        "| {name} | 1 node, {PER_NODE} sequential | {:.0} | {:.0} |",
        PER_NODE as f64 / a,
        PER_NODE as f64 / r
    );

    let exe = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..NODES)
        .map(|i| {
            std::process::Command::new(&exe)
                .env(WORKER_ENV, format!("node{i}"))
                .env(DB_ENV, spec)
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
    let total = (NODES * PER_NODE) as f64;
    println!(
        "| {name} | {NODES} nodes (processes) at once, {PER_NODE} each | {:.0} (all together) | {:.0} (all together) |",
        total / alloc_secs,
        total / release_secs
    );
}
