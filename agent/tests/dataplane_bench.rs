//! Issue #8 point 10: the route programmer's timings, measured on a real `brindle-node` in a
//! network namespace against simulated nodes (Node and IPAMBlock records written straight into
//! its embedded datastore; no other agent runs). Needs root; ignored by default as it takes a
//! minute and prints figures rather than asserting thresholds (docs/benchmarks.md).
//!
//! ```sh
//! cargo build --release -p brindle-agent --bin brindle-node
//! BRINDLE_NODE=$PWD/target/release/brindle-node \
//!   cargo test -p brindle-agent --test dataplane_bench -- --ignored --nocapture
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brindle_agent::model::{IpPoolSpec, IpamBlockSpec, NodeSpec, Object};
use brindle_ipam::store::{Store, StoreExt};

const POOL_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);

fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace with an uplink, a temp dir and an agent; all removed on drop.
struct Bench {
    ns: String,
    dir: PathBuf,
    agent: Option<Child>,
    store: Arc<dyn Store>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn block_cidr(k: u32) -> String {
    format!("{}/26", Ipv4Addr::from(POOL_BASE + k * 64))
}

fn block_name(k: u32) -> String {
    block_cidr(k).replace(['.', '/'], "-")
}

impl Bench {
    async fn new(tag: &str) -> Bench {
        let ns = format!("brbench-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        std::fs::create_dir_all(&dir).expect("temp dir");
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip -n {ns} link add eth0 type veth peer name peer0 && \
             ip -n {ns} addr add 10.98.255.1/16 dev eth0 && \
             ip -n {ns} link set eth0 up && ip -n {ns} link set peer0 up"
        ));
        let store =
            brindle_agent::datastore::open(&format!("embedded:{}", dir.join("store.db").display()))
                .await
                .expect("store opens");
        let pool: IpPoolSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.128.0.0/9", "blockSize": 26, "vxlanMode": "Always"
        }))
        .expect("pool spec");
        store
            .create_obj(&Object::new("bench-pool", pool))
            .await
            .expect("pool created");
        Bench {
            ns,
            dir,
            agent: None,
            store,
        }
    }

    /// Simulated node `i` with `blocks` blocks (numbered from block `i * blocks`).
    async fn add_node(&self, i: u32, blocks: u32) {
        let first = POOL_BASE + i * blocks * 64;
        let node: NodeSpec = serde_json::from_value(serde_json::json!({
            "bgp": {"ipv4Address": format!("10.98.{}.{}/16", i / 250, i % 250 + 2)},
            "ipv4VXLANTunnelAddr": Ipv4Addr::from(first).to_string(),
        }))
        .expect("node spec");
        self.store
            .create_obj(&Object::new(format!("sim{i}"), node))
            .await
            .expect("node created");
        for j in 0..blocks {
            self.add_block(i, i * blocks + j).await;
        }
    }

    async fn add_block(&self, node: u32, k: u32) {
        let block: IpamBlockSpec = serde_json::from_value(serde_json::json!({
            "cidr": block_cidr(k),
            "affinity": format!("host:sim{node}"),
            "allocations": vec![serde_json::Value::Null; 64],
            "unallocated": (0..64).collect::<Vec<u32>>(),
            "attributes": [],
        }))
        .expect("block spec");
        self.store
            .create_obj(&Object::new(block_name(k), block))
            .await
            .expect("block created");
    }

    fn start_agent(&mut self) {
        let bin = std::env::var("BRINDLE_NODE")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_brindle-node").to_string());
        let log = std::fs::File::create(self.dir.join("agent.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, &bin])
            .args(["--node-name", "bench", "--node-ip", "10.98.255.1/16"])
            .arg("--datastore")
            .arg(format!("embedded:{}", self.dir.join("store.db").display()))
            .arg("--socket")
            .arg(self.dir.join("agent.sock"))
            .args([
                "--health-listen",
                "off",
                "--metrics-listen",
                "127.0.0.1:9091",
            ])
            .args(["--resync-interval", "2", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.agent = Some(child);
    }

    fn vxlan_routes(&self) -> usize {
        sh(&format!(
            "ip -n {} route show proto 98 | grep -c vxlan.brindle || true",
            self.ns
        ))
        .trim()
        .parse()
        .unwrap_or(0)
    }

    fn has_route(&self, cidr: &str) -> bool {
        !sh(&format!(
            "ip -n {} route show exact {cidr} proto 98",
            self.ns
        ))
        .trim()
        .is_empty()
    }

    fn wait_routes(&self, n: usize, deadline: Duration) -> Duration {
        let start = Instant::now();
        while self.vxlan_routes() < n {
            assert!(
                start.elapsed() < deadline,
                "{n} routes not programmed within {deadline:?}; log:\n{}",
                std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        start.elapsed()
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.agent.as_ref().expect("agent").id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// (sum, count) of the reconcile-duration histogram.
    fn reconcile_histogram(&self) -> (f64, f64) {
        let text = sh(&format!(
            "ip netns exec {} bash -c 'exec 3<>/dev/tcp/127.0.0.1/9091; \
             printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'",
            self.ns
        ));
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        (
            get("brindle_reconcile_duration_seconds_sum"),
            get("brindle_reconcile_duration_seconds_count"),
        )
    }
}

fn root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `ip -batch` adding `n` routes like the agent's into a fresh namespace, and `ip route show`
/// of them: the reference for writing and for the dump a resync starts with.
fn ip_batch_reference(n: u32, dir: &Path) -> (Duration, Duration) {
    let ns = format!("brbench-{}-ref", std::process::id());
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link add eth0 type veth peer name peer0 && \
         ip -n {ns} addr add 10.98.255.1/16 dev eth0 && ip -n {ns} link set eth0 up && \
         ip -n {ns} link set peer0 up"
    ));
    let batch: String = (0..n)
        .map(|k| {
            format!(
                "route add {} via 10.98.0.2 dev eth0 proto 98 onlink\n",
                block_cidr(k)
            )
        })
        .collect();
    let file = dir.join("routes.batch");
    std::fs::write(&file, batch).expect("batch file");
    let start = Instant::now();
    sh(&format!("ip -n {ns} -batch {}", file.display()));
    let write = start.elapsed();
    let start = Instant::now();
    sh(&format!("ip -n {ns} route show proto 98 > /dev/null"));
    let dump = start.elapsed();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    (write, dump)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures for docs/benchmarks.md; needs root"]
async fn dataplane_timing_probe() {
    if !root() {
        eprintln!("skipping: needs root");
        return;
    }

    // 1. A new node's block appearing, with 50 nodes known.
    let mut b = Bench::new("fifty").await;
    for i in 0..50 {
        b.add_node(i, 1).await;
    }
    b.start_agent();
    b.wait_routes(50, Duration::from_secs(60));
    let mut latencies = Vec::new();
    for i in 0..50u32 {
        // A second block for node i, numbered after every first block.
        let k = 1000 + i;
        let cidr = block_cidr(k);
        let start = Instant::now();
        b.add_block(i, k).await;
        while !b.has_route(&cidr) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{cidr} never programmed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    println!(
        "50 nodes: block written -> route in kernel: median {:?}, p90 {:?}, max {:?}",
        latencies[25], latencies[45], latencies[49]
    );
    drop(b);

    // 2. 1,000 remote nodes, one block each: programming from start, and RSS when idle.
    let mut b = Bench::new("thousand").await;
    for i in 0..1000 {
        b.add_node(i, 1).await;
    }
    b.start_agent();
    let took = b.wait_routes(1000, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "1,000 nodes: agent start -> 1,000 routes {took:?}; idle RSS {} KiB",
        b.rss_kib()
    );
    drop(b);

    // 3. 10,000 routes (1,000 nodes, 10 blocks each): initial programming and a full resync
    //    (the periodic pass every 2 s: dump, diff, nothing to write).
    let mut b = Bench::new("tenk").await;
    for i in 0..1000 {
        b.add_node(i, 10).await;
    }
    b.start_agent();
    let took = b.wait_routes(10_000, Duration::from_secs(300));
    // The passes so far: the first one (datastore loaded, everything written), and maybe a
    // periodic one already.
    let (first_sum, first_count) = b.reconcile_histogram();
    println!(
        "10,000 routes: first pass(es) writing them (with 1,000 neighbours and FDB entries): {:.1} ms over {first_count} pass(es)",
        first_sum * 1000.0
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s0, c0) = b.reconcile_histogram();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (s1, c1) = b.reconcile_histogram();
    println!(
        "10,000 routes: agent start -> all programmed {took:?}; full resync (no change) mean {:.1} ms over {} passes; idle RSS {} KiB",
        (s1 - s0) / (c1 - c0).max(1.0) * 1000.0,
        c1 - c0,
        b.rss_kib()
    );
    let (write, dump) = ip_batch_reference(10_000, &b.dir);
    println!("reference: ip -batch adding 10,000 routes {write:?}; ip route show of them {dump:?}");
}
