//! Brindle clusters built out of network namespaces, for the demo and the scenario tests.
//!
//! A cluster is a "fabric" namespace holding a bridge per L2 segment (`br0` on 10.99.0.0/24,
//! `br1` on 10.99.1.0/24 when [`ClusterSpec::segments`] is 2) and routing between them (it is the
//! nodes' default gateway: the router of a real network), a namespace per node joined to its
//! segment's bridge by a veth pair, optionally an "outside" namespace behind the router (a server
//! at [`OUTSIDE_IP`], not in any pool), one `brindle-node` per node (run inside its namespace,
//! all sharing one embedded datastore file), and pod namespaces wired by the real `brindle` CNI
//! plugin. Everything is named with a per-run prefix so that several clusters can coexist, and
//! everything is torn down when the [`Cluster`] is dropped: on success, on error, on panic.
//!
//! [`Cluster`]'s methods live in `cluster/`, one file per layer: `fabric` (namespaces, segments,
//! datastore, pools), `agents` (brindle-node processes, health, BGP status), `pods` (the CNI
//! plugin) and `traffic` (routes, pings, counters).
//!
//! The lab drives the real binaries and the `ip` and `ping` commands; it links none of Brindle's
//! code.
//!
//! A large lab raises the host's neighbour (ARP) table limits, which all namespaces share, for
//! as long as it exists, and says so ([`neigh`]).

pub mod bgp;
mod cluster;
pub mod cni_exec;
pub mod neigh;

pub use bgp::Routing;
pub use cluster::traffic::Pinger;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Set by the Ctrl-C handler; long steps check it and stop.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Fails when the user pressed Ctrl-C.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs a command; returns its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// `ip netns exec <ns> <program> <args>`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    ip(&all)
}

/// Where the Brindle binaries are: next to this executable (or its parent, for test binaries
/// under `deps/`). When run through cargo (`cargo run`, `cargo test`), builds them first with
/// the same profile, so the demo never runs stale binaries.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("executable has no directory"))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.ends_with("release");
        let mut args = vec![
            "build",
            "--quiet",
            "-p",
            "brindle-agent",
            "-p",
            "brindle-cni",
            "--bins",
        ];
        if release {
            args.push("--release");
        }
        eprintln!(
            "building brindle-node, brindlectl and brindle ({})",
            if release { "release" } else { "debug" }
        );
        let status = Command::new(&cargo)
            .args(&args)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of the Brindle binaries failed");
        }
    }
    for bin in ["brindle-node", "brindlectl", "brindle"] {
        if !dir.join(bin).exists() {
            bail!(
                "{} not found; build the workspace first (cargo build --workspace)",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir)
}

/// Pool encapsulation of the demo's IP pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    VxlanAlways,
    VxlanCrossSubnet,
    /// IPIP through `tunl0`: needs the kernel's `ipip` module (see lab/tests/ipip_qemu.rs).
    IpipAlways,
    IpipCrossSubnet,
    Never,
}

impl Encap {
    fn pool_fields(self) -> &'static str {
        match self {
            Encap::VxlanAlways => "vxlanMode: Always",
            Encap::VxlanCrossSubnet => "vxlanMode: CrossSubnet",
            Encap::IpipAlways => "ipipMode: Always\n  vxlanMode: Never",
            Encap::IpipCrossSubnet => "ipipMode: CrossSubnet\n  vxlanMode: Never",
            Encap::Never => "vxlanMode: Never",
        }
    }

    /// The device cross-node pod traffic goes through, when encapsulated.
    pub fn tunnel_device(self) -> Option<&'static str> {
        match self {
            Encap::VxlanAlways | Encap::VxlanCrossSubnet => Some("vxlan.brindle"),
            Encap::IpipAlways | Encap::IpipCrossSubnet => Some("tunl0"),
            Encap::Never => None,
        }
    }

    /// Whether every cross-node packet is encapsulated (the lab's nodes share one subnet, so
    /// CrossSubnet encapsulates nothing).
    pub fn always(self) -> bool {
        matches!(self, Encap::VxlanAlways | Encap::IpipAlways)
    }
}

/// Which datastore backend the cluster runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// One SQLite file shared by every node's agent.
    Embedded,
    /// A real etcd server (Debian's `etcd`) in the fabric namespace, reached over the fabric.
    Etcd,
}

/// Where the lab's etcd listens: the fabric bridge's address, which every node reaches.
const ETCD_URL: &str = "http://10.99.0.1:2379";

/// What cluster to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub datastore: Datastore,
    pub nodes: usize,
    pub pods_per_node: usize,
    /// The IPv4 pool; empty for none (IPv6-only pods, with [`ClusterSpec::pool_cidr_v6`]).
    pub pool_cidr: String,
    pub encap: Encap,
    /// Print each step as it happens.
    pub verbose: bool,
    /// Plugins chained after Brindle's in the conflist (e.g. [`cni_exec::portmap_and_bandwidth`]).
    pub chain: Vec<serde_json::Value>,
    /// An IPv6 pool (same encapsulation as the IPv4 one) for dual-stack pods; the fabric and
    /// the nodes then get IPv6 addresses too (`fd99::1/64`, `fd99::<10+i>/64`).
    pub pool_cidr_v6: Option<String>,
    /// MTU of the nodes' uplinks (and the fabric's ports); the kernel's 1500 when `None`.
    pub uplink_mtu: Option<u32>,
    /// L2 segments (1 or 2): with 2, the first half of the nodes sit on `br0` (10.99.0.0/24),
    /// the others on `br1` (10.99.1.0/24), and traffic between them is routed by the fabric.
    pub segments: usize,
    /// `natOutgoing` of the pools.
    pub nat_outgoing: bool,
    /// An "outside" namespace behind the fabric router, with a server at [`OUTSIDE_IP`] (and at
    /// [`OUTSIDE_IP6`] when the cluster has an IPv6 pool: the nodes then route IPv6 through the
    /// fabric too).
    pub outside: bool,
    /// How the agents route (see [`bgp`]).
    pub routing: Routing,
    /// `--bgp-hold-time` of the agents, in seconds.
    pub bgp_hold_time: u16,
    /// Resources (YAML: Node, BGPConfiguration, BGPPeer...) applied before the agents start.
    pub resources: String,
    /// The agents' `--resync-interval`, in seconds.
    pub resync_interval_secs: u64,
}

/// The outside server's address (TEST-NET-3: in no pool, routed by the fabric only).
pub const OUTSIDE_IP: &str = "203.0.113.10";
/// The outside server's IPv6 address (documentation prefix: in no pool, routed by the fabric
/// only).
pub const OUTSIDE_IP6: &str = "2001:db8:113::10";

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            datastore: Datastore::Embedded,
            nodes: 3,
            pods_per_node: 2,
            pool_cidr: "10.244.0.0/16".to_string(),
            encap: Encap::VxlanAlways,
            verbose: true,
            chain: Vec::new(),
            pool_cidr_v6: None,
            uplink_mtu: None,
            segments: 1,
            nat_outgoing: false,
            outside: false,
            routing: Routing::Static,
            bgp_hold_time: 9,
            resources: String::new(),
            resync_interval_secs: 10,
        }
    }
}

/// A pod of the lab.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub netns: String,
    pub node: usize,
    pub container_id: String,
    pub ip: String,
    /// The pod's IPv6 address, when it has one (dual stack).
    pub ip6: Option<String>,
    /// The chain's ADD result, which DEL and CHECK get back as `prevResult`.
    pub result: serde_json::Value,
    /// What the runtime passed (`portMappings`, `bandwidth`).
    pub runtime_config: serde_json::Value,
}

/// A node of the lab.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub netns: String,
    pub ip: String,
    pub socket: PathBuf,
    pub log: PathBuf,
    agent: Option<Child>,
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running cluster. Dropping it tears everything down.
pub struct Cluster {
    pub id: String,
    pub dir: PathBuf,
    pub bins: PathBuf,
    pub fabric: String,
    /// The outside namespace, when [`ClusterSpec::outside`].
    pub outside: Option<String>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub datastore: String,
    spec: ClusterSpec,
    namespaces: Vec<String>,
    conflist: PathBuf,
    etcd: Option<Child>,
    /// The ToR routers of [`Routing::BgpRacks`].
    pub tors: Vec<bgp::Tor>,
    /// Raised neighbour table limits of a large lab, restored after teardown.
    neighbour_limits: Option<neigh::NeighbourLimits>,
}

impl Cluster {
    fn say(&self, msg: &str) {
        if self.spec.verbose {
            println!("{msg}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn terminate(child: &mut Child) {
    // `ip netns exec` execs the agent, so the child's pid is the agent's.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a scenario test can run here: as root, with each of `needs` (what, whether it is
/// present). Otherwise the test is skipped with a message, except when `CI` is set: there it
/// fails, naming what is missing, so that CI never passes by skipping.
pub fn can_run_here(needs: &[(&str, bool)]) -> bool {
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|(_, present)| !present)
        .map(|(what, _)| *what)
        .collect();
    if !is_root() {
        missing.insert(0, "root");
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {}", missing.join(", "));
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this scenario cannot run: {reason}"
    );
    eprintln!("skipping: {reason}");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false)
}
