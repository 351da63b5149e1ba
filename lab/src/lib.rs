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
//! The lab drives the real binaries and the `ip` and `ping` commands; it links none of Brindle's
//! code.
//!
//! A large lab raises the host's neighbour (ARP) table limits, which all namespaces share, for
//! as long as it exists, and says so ([`neigh`]).

pub mod bgp;
pub mod cni_exec;
pub mod neigh;

pub use bgp::Routing;

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

    /// Builds the cluster: fabric, nodes, agents, pool, pods. On error, what was built is torn
    /// down before returning.
    pub fn build(spec: ClusterSpec) -> Result<Cluster> {
        if !is_root() {
            bail!("the lab needs root (network namespaces); run it as root");
        }
        let bins = bin_dir()?;
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{}", std::process::id() % 0xfff, n);
        let dir = std::env::temp_dir().join(format!("brindle-lab-{id}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let datastore = match spec.datastore {
            Datastore::Embedded => format!("embedded:{}", dir.join("store.db").display()),
            Datastore::Etcd => ETCD_URL.replacen("http://", "etcd://", 1),
        };
        let mut cluster = Cluster {
            fabric: format!("bl{id}-fabric"),
            outside: None,
            id,
            conflist: dir.join("10-brindle.conflist"),
            dir,
            bins,
            nodes: Vec::new(),
            pods: Vec::new(),
            datastore,
            spec,
            namespaces: Vec::new(),
            etcd: None,
            tors: Vec::new(),
            neighbour_limits: None,
        };
        // On error `cluster` is dropped here, which tears down whatever exists.
        cluster.raise_neighbour_limits()?;
        cluster.build_fabric()?;
        if cluster.spec.datastore == Datastore::Etcd {
            cluster.start_etcd()?;
        }
        cluster.create_pool()?;
        cluster.apply_resources()?;
        cluster.start_agents()?;
        cluster.start_pods()?;
        Ok(cluster)
    }

    /// The nodes resolve each other in the host-wide neighbour table: make room for them.
    fn raise_neighbour_limits(&mut self) -> Result<()> {
        let entries = neigh::entries_needed(self.spec.nodes, self.spec.pods_per_node);
        self.neighbour_limits = neigh::NeighbourLimits::raise(entries)?;
        if let Some(limits) = &self.neighbour_limits {
            eprintln!(
                "{} nodes need about {entries} neighbour (ARP/NDP) entries in the host-wide table: \
                 raised {} until the lab ends",
                self.spec.nodes,
                limits.describe()
            );
        }
        Ok(())
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        in_ns(name, "ip", &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The segment (0-based) node `i` (0-based) sits on.
    pub fn segment_of(&self, i: usize) -> usize {
        let segments = self.spec.segments.max(1);
        let per_segment = self.spec.nodes.div_ceil(segments);
        (i / per_segment.max(1)).min(segments - 1)
    }

    fn build_fabric(&mut self) -> Result<()> {
        let steps = self.spec.nodes;
        if !(1..=2).contains(&self.spec.segments) {
            bail!("segments must be 1 or 2, not {}", self.spec.segments);
        }
        self.say(&format!(
            "[1/5] fabric: {} bridge(s) in {} and {} node namespaces on 10.99.0.0/24{}",
            self.spec.segments,
            self.fabric,
            steps,
            if self.spec.segments == 2 {
                " and 10.99.1.0/24"
            } else {
                ""
            }
        ));
        let fabric = self.fabric.clone();
        self.add_netns(&fabric)?;
        // The fabric is the nodes' default gateway, as a real network's router would be: proxy
        // ARP for the pods' gateway 169.254.1.1 answers only when the node has a route to it.
        in_ns(&fabric, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        for seg in 0..self.spec.segments {
            let br = format!("br{seg}");
            in_ns(&fabric, "ip", &["link", "add", &br, "type", "bridge"])?;
            in_ns(&fabric, "ip", &["link", "set", &br, "up"])?;
            // With racks, the ToR holds the gateway address and routes.
            if self.spec.routing != Routing::BgpRacks {
                in_ns(
                    &fabric,
                    "ip",
                    &["addr", "add", &format!("10.99.{seg}.1/24"), "dev", &br],
                )?;
            }
        }
        if self.spec.outside {
            let outside = format!("bl{}-outside", self.id);
            self.add_netns(&outside)?;
            ip(&[
                "-n", &fabric, "link", "add", "out0", "type", "veth", "peer", "name", "eth0",
                "netns", &outside,
            ])?;
            in_ns(
                &fabric,
                "ip",
                &["addr", "add", "203.0.113.1/24", "dev", "out0"],
            )?;
            in_ns(&fabric, "ip", &["link", "set", "out0", "up"])?;
            in_ns(
                &outside,
                "ip",
                &["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"],
            )?;
            in_ns(&outside, "ip", &["link", "set", "eth0", "up"])?;
            in_ns(
                &outside,
                "ip",
                &["route", "add", "default", "via", "203.0.113.1"],
            )?;
            if self.spec.pool_cidr_v6.is_some() {
                in_ns(
                    &fabric,
                    "ip",
                    &[
                        "-6",
                        "addr",
                        "add",
                        "2001:db8:113::1/64",
                        "dev",
                        "out0",
                        "nodad",
                    ],
                )?;
                in_ns(
                    &outside,
                    "ip",
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("{OUTSIDE_IP6}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )?;
                in_ns(
                    &outside,
                    "ip",
                    &["-6", "route", "add", "default", "via", "2001:db8:113::1"],
                )?;
            }
            self.outside = Some(outside);
        }
        if self.spec.pool_cidr_v6.is_some() {
            in_ns(
                &fabric,
                "ip",
                &["-6", "addr", "add", "fd99::1/64", "dev", "br0", "nodad"],
            )?;
            in_ns(
                &fabric,
                "sysctl",
                &["-q", "-w", "net.ipv6.conf.all.forwarding=1"],
            )?;
        }
        for i in 1..=self.spec.nodes {
            check_interrupted()?;
            let name = format!("node{i}");
            let netns = format!("bl{}-{name}", self.id);
            let seg = self.segment_of(i - 1);
            let node_ip = format!("10.99.{seg}.{}", 10 + i);
            self.add_netns(&netns)?;
            let port = format!("n{i}");
            ip(&[
                "-n", &fabric, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &netns,
            ])?;
            in_ns(
                &fabric,
                "ip",
                &["link", "set", &port, "master", &format!("br{seg}"), "up"],
            )?;
            in_ns(
                &netns,
                "ip",
                &["addr", "add", &format!("{node_ip}/24"), "dev", "eth0"],
            )?;
            in_ns(&netns, "ip", &["link", "set", "eth0", "up"])?;
            // With racks, the default route is learned from the ToR.
            if self.spec.routing != Routing::BgpRacks {
                in_ns(
                    &netns,
                    "ip",
                    &["route", "add", "default", "via", &format!("10.99.{seg}.1")],
                )?;
            }
            if let Some(mtu) = self.spec.uplink_mtu {
                let mtu = mtu.to_string();
                in_ns(&netns, "ip", &["link", "set", "eth0", "mtu", &mtu])?;
                in_ns(&fabric, "ip", &["link", "set", &port, "mtu", &mtu])?;
            }
            if self.spec.pool_cidr_v6.is_some() {
                let node_ip6 = format!("fd99::{}/64", 10 + i);
                in_ns(
                    &netns,
                    "ip",
                    &["-6", "addr", "add", &node_ip6, "dev", "eth0", "nodad"],
                )?;
                if self.spec.outside {
                    in_ns(
                        &netns,
                        "ip",
                        &["-6", "route", "add", "default", "via", "fd99::1"],
                    )?;
                }
            }
            self.nodes.push(Node {
                socket: self.dir.join(format!("{name}.sock")),
                log: self.dir.join(format!("{name}.log")),
                name,
                netns,
                ip: node_ip,
                agent: None,
            });
        }
        Ok(())
    }

    /// Applies [`ClusterSpec::resources`], and for racks the rack topology's resources, and
    /// starts the ToRs.
    fn apply_resources(&mut self) -> Result<()> {
        let mut yaml = self.spec.resources.clone();
        if self.spec.routing == Routing::BgpRacks {
            if self.spec.segments != 2 {
                bail!("racks need 2 segments");
            }
            let node_racks: Vec<(String, usize)> = (0..self.nodes.len())
                .map(|i| (self.nodes[i].name.clone(), self.segment_of(i)))
                .collect();
            let rack = bgp::rack_resources(&node_racks, 2);
            yaml = if yaml.is_empty() {
                rack
            } else {
                format!("{rack}---\n{yaml}")
            };
            let rack_nodes: Vec<Vec<String>> = (0..2)
                .map(|r| {
                    (0..self.nodes.len())
                        .filter(|&i| self.segment_of(i) == r)
                        .map(|i| self.nodes[i].ip.clone())
                        .collect()
                })
                .collect();
            self.say("      BIRD ToR per rack (eBGP), nodes peering only with their ToR");
            let fabric = self.fabric.clone();
            let prefix = format!("bl{}", self.id);
            let dir = self.dir.clone();
            let mut namespaces = Vec::new();
            let tors = bgp::start_tors(&fabric, &prefix, &dir, &rack_nodes, &mut |ns| {
                ip(&["netns", "add", ns])?;
                namespaces.push(ns.to_string());
                in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
                Ok(())
            });
            self.namespaces.extend(namespaces);
            self.tors = tors?;
        }
        if yaml.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("resources.yaml");
        fs::write(&path, yaml)?;
        self.ctl(&["apply", "-f", &path.display().to_string()])?;
        Ok(())
    }

    /// `brindlectl bgp peers -o json` of node `i`.
    pub fn bgp_peers(&self, i: usize) -> Result<serde_json::Value> {
        let out = run(
            &self.bins.join("brindlectl").display().to_string(),
            &[
                "bgp",
                "peers",
                "--socket",
                &self.nodes[i].socket.display().to_string(),
                "-o",
                "json",
            ],
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// `brindlectl node status` of node `i` (calicoctl's table).
    pub fn node_status(&self, i: usize) -> Result<String> {
        run(
            &self.bins.join("brindlectl").display().to_string(),
            &[
                "node",
                "status",
                "--socket",
                &self.nodes[i].socket.display().to_string(),
            ],
        )
    }

    /// Waits until node `i` has `want` BGP sessions, all Established.
    pub fn wait_established(&self, i: usize, want: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let peers = self.bgp_peers(i).unwrap_or_default();
            let list = peers.as_array().cloned().unwrap_or_default();
            let up = list.iter().filter(|p| p["state"] == "Established").count();
            if list.len() == want && up == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {up} of {want} BGP sessions Established after {timeout:?}: {peers}\n{}",
                    self.nodes[i].name,
                    tail(&self.nodes[i].log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Racks: waits until both ToRs know every block and every node has its default route
    /// (to its ToR) and the other rack's blocks.
    pub fn wait_racks_converged(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let blocks = self.ctl(&["get", "ipamblocks", "-o", "json"])?;
            let blocks: serde_json::Value = serde_json::from_str(&blocks)?;
            let blocks: Vec<(String, String)> = blocks["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    (
                        b["spec"]["cidr"].as_str().unwrap_or_default().to_string(),
                        b["spec"]["affinity"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            let mut missing = Vec::new();
            for tor in &self.tors {
                let table = tor.birdc(&["show", "route"]).unwrap_or_default();
                for (cidr, _) in &blocks {
                    if !table.contains(cidr.as_str()) {
                        missing.push(format!("ToR {}: {cidr}", tor.rack));
                    }
                }
            }
            for (i, node) in self.nodes.iter().enumerate() {
                let routes = self.routes(i)?;
                if !routes.lines().any(|l| l.starts_with("default via")) {
                    missing.push(format!("{}: default", node.name));
                }
                for (cidr, owner) in &blocks {
                    let other_rack = self.nodes.iter().enumerate().any(|(j, n)| {
                        *owner == format!("host:{}", n.name)
                            && self.segment_of(j) != self.segment_of(i)
                    });
                    if other_rack && !routes.lines().any(|l| l.starts_with(&format!("{cidr} "))) {
                        missing.push(format!("{}: {cidr}", node.name));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("routes missing after {timeout:?}: {}", missing.join(", "));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Cuts node `i` off the network as a power cut would: its uplink goes down, so its peers
    /// hear nothing more (no TCP FIN, no NOTIFICATION), then its agent is killed.
    pub fn power_off(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        in_ns(&node.netns, "ip", &["link", "set", "eth0", "down"])?;
        if let Some(mut child) = node.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts etcd in the fabric namespace and waits until it answers.
    fn start_etcd(&mut self) -> Result<()> {
        self.say(&format!("      etcd in {} on {ETCD_URL}", self.fabric));
        let data = self.dir.join("etcd");
        let log = fs::File::create(self.dir.join("etcd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.fabric, "etcd", "--name", "lab"])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                ETCD_URL,
                "--advertise-client-urls",
                ETCD_URL,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = "exec 3<>/dev/tcp/10.99.0.1/2379; printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
        loop {
            check_interrupted()?;
            if let Ok(out) = in_ns(&self.fabric, "bash", &["-c", probe]) {
                if out.contains("\"health\":\"true\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not healthy after 20 s:\n{}",
                    tail(&self.dir.join("etcd.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_pool(&mut self) -> Result<()> {
        self.apply_pools()?;
        // Each node's copy gets that node's agent socket (in `runtime`).
        let mut plugins = vec![serde_json::json!({"type": "brindle"})];
        plugins.extend(self.spec.chain.iter().cloned());
        let conflist =
            serde_json::json!({"cniVersion": "1.0.0", "name": "lab-net", "plugins": plugins});
        fs::write(&self.conflist, serde_json::to_string_pretty(&conflist)?)?;
        Ok(())
    }

    /// Changes the pools' encapsulation and `natOutgoing` (`brindlectl apply` of the changed
    /// IPPools, as a user would).
    pub fn set_pools(&mut self, encap: Encap, nat_outgoing: bool) -> Result<()> {
        self.spec.encap = encap;
        self.spec.nat_outgoing = nat_outgoing;
        self.apply_pools()
    }

    fn apply_pools(&mut self) -> Result<()> {
        let fields = format!(
            "{}\n  natOutgoing: {}",
            self.spec.encap.pool_fields(),
            self.spec.nat_outgoing
        );
        let mut pools = Vec::new();
        for (name, cidr) in [
            (
                "lab-pool",
                Some(&self.spec.pool_cidr).filter(|c| !c.is_empty()),
            ),
            ("lab-pool-v6", self.spec.pool_cidr_v6.as_ref()),
        ] {
            if let Some(cidr) = cidr {
                pools.push((name, cidr.clone()));
            }
        }
        let cidrs: Vec<&str> = pools.iter().map(|(_, c)| c.as_str()).collect();
        self.say(&format!(
            "[2/5] datastore {} with IPPool {} ({fields})",
            self.datastore,
            cidrs.join(" and ")
        ));
        let pool = pools
            .iter()
            .map(|(name, cidr)| {
                format!(
                    "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  {fields}\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n");
        let path = self.dir.join("pool.yaml");
        fs::write(&path, pool)?;
        self.ctl(&["apply", "-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Runs `brindlectl` against the lab's datastore.
    /// (In the fabric namespace, where etcd is reachable.)
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let bin = self.bins.join("brindlectl").display().to_string();
        let mut all = vec!["--datastore", &self.datastore];
        all.extend_from_slice(args);
        in_ns(&self.fabric, &bin, &all)
    }

    /// Starts (or restarts) node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let bin = self.bins.join("brindle-node");
        let datastore = self.datastore.clone();
        let routing = self.spec.routing.clone();
        let hold = self.spec.bgp_hold_time;
        let secrets = self.dir.join("secrets");
        let resync = self.spec.resync_interval_secs.to_string();
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&bin)
            .args(["--node-name", &node.name])
            .args(["--datastore", &datastore])
            .args(["--node-ip", &format!("{}/24", node.ip)])
            .arg("--socket")
            .arg(&node.socket)
            .args(["--health-listen", "127.0.0.1:9099"])
            .args(["--resync-interval", &resync])
            .args(if routing.is_bgp() {
                vec![
                    "--routing".to_string(),
                    "bgp".to_string(),
                    "--bgp-hold-time".to_string(),
                    hold.to_string(),
                    "--bgp-secrets-dir".to_string(),
                    secrets.display().to_string(),
                ]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        node.agent = Some(child);
        Ok(())
    }

    /// Stops node `i`'s agent with SIGTERM and waits for it.
    pub fn stop_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].agent.take() {
            terminate(&mut child);
        }
        Ok(())
    }

    /// Kills node `i`'s agent with SIGKILL (no shutdown of any kind: a crash, an OOM kill)
    /// and waits for it.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].agent.take() {
            // `ip netns exec` execs the agent, so the child's pid is the agent's.
            child.kill().context("sending SIGKILL to the agent")?;
            child.wait().context("waiting for the killed agent")?;
        }
        Ok(())
    }

    fn start_agents(&mut self) -> Result<()> {
        self.say(&format!(
            "[3/5] starting {} brindle-node agents",
            self.nodes.len()
        ));
        for i in 0..self.nodes.len() {
            self.start_agent(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Waits until node `i`'s agent answers on its socket and reports ready.
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let node = &mut self.nodes[i];
            if let Some(child) = node.agent.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "brindle-node on {} exited ({status}); its log {}:\n{}",
                        node.name,
                        node.log.display(),
                        tail(&node.log, 20)
                    );
                }
            }
            if let Ok(out) = run(
                &self.bins.join("brindlectl").display().to_string(),
                &[
                    "status",
                    "--socket",
                    &node.socket.display().to_string(),
                    "-o",
                    "json",
                ],
            ) {
                if out.contains("\"ready\": true") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "brindle-node on {} not ready after {:?}; its log:\n{}",
                    node.name,
                    timeout,
                    tail(&node.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The container runtime of node `node`: the lab's conflist, with that node's agent socket,
    /// run the way libcni runs it.
    pub fn runtime(&self, node: usize) -> Result<cni_exec::Runtime> {
        let node = &self.nodes[node];
        let text = fs::read_to_string(&self.conflist)?;
        let mut conflist = serde_json::from_str::<serde_json::Value>(&text)?;
        conflist["plugins"][0]["agent_socket"] =
            serde_json::Value::String(node.socket.display().to_string());
        Ok(cni_exec::Runtime {
            conflist,
            cni_path: vec![
                self.bins.clone(),
                PathBuf::from(cni_exec::REFERENCE_PLUGINS),
            ],
            exec_in: Some(node.netns.clone()),
        })
    }

    fn attachment(pod: &Pod) -> cni_exec::Attachment {
        cni_exec::Attachment {
            container_id: pod.container_id.clone(),
            netns: format!("/var/run/netns/{}", pod.netns),
            ifname: "eth0".to_string(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME={}",
                pod.name
            ),
            runtime_config: pod.runtime_config.clone(),
        }
    }

    /// Creates a pod namespace on node `node` and wires it with the CNI plugin.
    pub fn add_pod(&mut self, node: usize, name: &str) -> Result<Pod> {
        self.add_pod_with(node, name, serde_json::json!({}))
    }

    /// Like [`Cluster::add_pod`], with what the runtime knows about the pod (`portMappings`,
    /// `bandwidth`) passed to the plugins whose capabilities ask for it.
    pub fn add_pod_with(
        &mut self,
        node: usize,
        name: &str,
        runtime_config: serde_json::Value,
    ) -> Result<Pod> {
        self.add_pod_conf(node, name, runtime_config, serde_json::json!({}))
    }

    /// Like [`Cluster::add_pod_with`], with `brindle_conf`'s keys (`mtu`, `ipam`...) set in
    /// Brindle's entry of the conflist for this pod only.
    pub fn add_pod_conf(
        &mut self,
        node: usize,
        name: &str,
        runtime_config: serde_json::Value,
        brindle_conf: serde_json::Value,
    ) -> Result<Pod> {
        let netns = format!("bl{}-{name}", self.id);
        self.add_netns(&netns)?;
        let mut pod = Pod {
            name: name.to_string(),
            netns,
            node,
            container_id: format!("lab{}{}", self.id, name.replace('-', "")),
            ip: String::new(),
            ip6: None,
            result: serde_json::Value::Null,
            runtime_config,
        };
        let mut runtime = self.runtime(node)?;
        if let (Some(plugin), Some(extra)) = (
            runtime.conflist["plugins"][0].as_object_mut(),
            brindle_conf.as_object(),
        ) {
            plugin.extend(extra.clone());
        }
        let result = runtime
            .add(&Self::attachment(&pod))
            .with_context(|| format!("CNI ADD of pod {name}"))?;
        pod.result = result.clone();
        let addr = result["ips"][0]["address"]
            .as_str()
            .ok_or_else(|| anyhow!("CNI result without an address: {result}"))?;
        pod.ip = addr.split('/').next().unwrap_or_default().to_string();
        pod.ip6 = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .find(|a| a.contains(':'))
            .map(|a| a.split('/').next().unwrap_or_default().to_string());
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// CNI CHECK of a pod through the conflist, with its ADD result as `prevResult`.
    pub fn check_pod(&self, name: &str) -> Result<()> {
        let pod = self
            .pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow!("no pod {name}"))?;
        self.runtime(pod.node)?
            .check(&Self::attachment(pod), &pod.result)
            .with_context(|| format!("CNI CHECK of pod {name}"))
    }

    /// Deletes a pod through the CNI plugin, then its namespace.
    pub fn del_pod(&mut self, name: &str) -> Result<()> {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            bail!("no pod {name}");
        };
        let pod = self.pods.remove(i);
        self.runtime(pod.node)?
            .del(&Self::attachment(&pod), Some(&pod.result))
            .with_context(|| format!("CNI DEL of pod {name}"))?;
        let _ = ip(&["netns", "del", &pod.netns]);
        self.namespaces.retain(|n| *n != pod.netns);
        Ok(())
    }

    fn start_pods(&mut self) -> Result<()> {
        self.say(&format!(
            "[4/5] starting {} pods per node through the brindle CNI plugin",
            self.spec.pods_per_node
        ));
        for node in 0..self.nodes.len() {
            for p in 1..=self.spec.pods_per_node {
                check_interrupted()?;
                let name = format!("pod-{}-{p}", node + 1);
                let pod = self.add_pod(node, &name)?;
                self.say(&format!(
                    "      {:<10} on {:<6} {}",
                    pod.name, self.nodes[node].name, pod.ip
                ));
            }
        }
        Ok(())
    }

    /// Brindle's routes (proto 98) of node `i`, IPv4 then IPv6, as `ip route` prints them.
    pub fn routes(&self, i: usize) -> Result<String> {
        let netns = &self.nodes[i].netns;
        let v4 = ip(&["-n", netns, "route", "show", "proto", "98"])?;
        let v6 = ip(&["-n", netns, "-6", "route", "show", "proto", "98"])?;
        Ok(v4 + &v6)
    }

    /// Waits until every node has a route for every other node's blocks and a blackhole for its own.
    pub fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let blocks = self.ctl(&["get", "ipamblocks", "-o", "json"])?;
            let blocks: serde_json::Value = serde_json::from_str(&blocks)?;
            let mut missing = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                let routes = self.routes(i)?;
                for block in blocks["items"].as_array().into_iter().flatten() {
                    let cidr = block["spec"]["cidr"].as_str().unwrap_or_default();
                    let owner = block["spec"]["affinity"].as_str().unwrap_or_default();
                    // Unencapsulated, a node behind the router is the network's business.
                    let behind_router = self.spec.encap == Encap::Never
                        && self.nodes.iter().enumerate().any(|(j, n)| {
                            owner == format!("host:{}", n.name)
                                && self.segment_of(j) != self.segment_of(i)
                        });
                    let own = owner == format!("host:{}", node.name);
                    // A node's own blocks are blackholed (pod routes are more specific).
                    if own
                        && !routes
                            .lines()
                            .any(|l| l.starts_with(&format!("blackhole {cidr} ")))
                    {
                        missing.push(format!("{}: blackhole {cidr}", node.name));
                    }
                    if !own
                        && !behind_router
                        && !routes.lines().any(|l| l.starts_with(&format!("{cidr} ")))
                    {
                        missing.push(format!("{}: {cidr}", node.name));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("routes missing after {timeout:?}: {}", missing.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `from` reaches `to_ip`, IPv4 or IPv6 (a few tries, for convergence).
    pub fn ping(&self, from: &Pod, to_ip: &str, tries: u32) -> bool {
        (0..tries).any(|_| in_ns(&from.netns, "ping", &["-c", "1", "-W", "1", "-q", to_ip]).is_ok())
    }

    /// Pings every pod's IPv6 address from every pod with one; (from, to) -> reached.
    pub fn ping6_matrix(&self) -> Result<BTreeMap<(String, String), bool>> {
        let mut out = BTreeMap::new();
        for from in self.pods.iter().filter(|p| p.ip6.is_some()) {
            for to in &self.pods {
                check_interrupted()?;
                if let (true, Some(ip6)) = (from.name != to.name, &to.ip6) {
                    out.insert(
                        (from.name.clone(), to.name.clone()),
                        self.ping(from, ip6, 3),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Pings every pod from every pod; returns the matrix (from, to) -> reached.
    pub fn ping_matrix(&self) -> Result<BTreeMap<(String, String), bool>> {
        let mut out = BTreeMap::new();
        for from in &self.pods {
            for to in &self.pods {
                check_interrupted()?;
                if from.name != to.name {
                    out.insert(
                        (from.name.clone(), to.name.clone()),
                        self.ping(from, &to.ip, 3),
                    );
                }
            }
        }
        Ok(out)
    }

    /// GETs `path` from node `i`'s health server (127.0.0.1:9099 in the node's namespace);
    /// returns the status line.
    pub fn health(&self, i: usize, path: &str) -> Result<String> {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; head -n 1 <&3"
        );
        let out = in_ns(&self.nodes[i].netns, "bash", &["-c", &script])?;
        Ok(out.trim().to_string())
    }

    /// Packets sent through node `i`'s `vxlan.brindle` device.
    pub fn vxlan_tx_packets(&self, i: usize) -> Result<u64> {
        self.tx_packets(i, "vxlan.brindle")
    }

    /// Device `dev` of node `i` in one line: `mtu 1480, up, addresses 10.244.3.0/32`.
    pub fn link_summary(&self, i: usize, dev: &str) -> Result<String> {
        let out = ip(&["-n", &self.nodes[i].netns, "-j", "addr", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let link = &v[0];
        let up = link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        let addrs: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect();
        Ok(format!(
            "mtu {}, {}, addresses {}",
            link["mtu"],
            if up { "up" } else { "down" },
            if addrs.is_empty() {
                "none".to_string()
            } else {
                addrs.join(" ")
            }
        ))
    }

    /// Packets sent through device `dev` of node `i`.
    pub fn tx_packets(&self, i: usize, dev: &str) -> Result<u64> {
        let out = ip(&["-n", &self.nodes[i].netns, "-s", "-j", "link", "show", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .ok_or_else(|| anyhow!("no tx counter for {dev} on {}", self.nodes[i].name))
    }

    /// Gives the fabric router a static route to every node's blocks, via that node (flannel's
    /// host-gw, or what a ToR learns over BGP): what pod traffic between segments needs when
    /// it is not encapsulated.
    pub fn route_blocks_via_router(&self) -> Result<()> {
        let blocks = self.ctl(&["get", "ipamblocks", "-o", "json"])?;
        let blocks: serde_json::Value = serde_json::from_str(&blocks)?;
        for block in blocks["items"].as_array().into_iter().flatten() {
            let cidr = block["spec"]["cidr"].as_str().unwrap_or_default();
            let owner = block["spec"]["affinity"].as_str().unwrap_or_default();
            if let Some(node) = self
                .nodes
                .iter()
                .find(|n| owner == format!("host:{}", n.name))
            {
                in_ns(
                    &self.fabric,
                    "ip",
                    &["route", "replace", cidr, "via", &node.ip],
                )?;
            }
        }
        Ok(())
    }

    /// Starts counting, on the fabric router, the packets it routes between two of its
    /// interfaces (segments, outside): VXLAN packets, and unencapsulated packets from `pool`.
    /// Read with [`Cluster::router_counters`].
    pub fn count_routed(&self, pool: &str) -> Result<()> {
        // Only routed packets: with br_netfilter loaded, bridged ones pass this hook too.
        let routed = r#"iifname . oifname { "br0" . "br1", "br1" . "br0", "br0" . "out0", "out0" . "br0", "br1" . "out0", "out0" . "br1" }"#;
        let script = format!(
            r#"table ip lab-wire {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        {routed} udp dport 4789 counter comment "vxlan"
        {routed} ip saddr {pool} counter comment "pods"
    }}
}}
"#
        );
        nft_script(&self.fabric, &script)
    }

    /// (VXLAN packets, unencapsulated pod packets) the router has routed since
    /// [`Cluster::count_routed`].
    pub fn router_counters(&self) -> Result<(u64, u64)> {
        let out = in_ns(&self.fabric, "nft", &["list", "table", "ip", "lab-wire"])?;
        Ok((counter(&out, "vxlan")?, counter(&out, "pods")?))
    }

    /// Starts recording the source address of every ping request (ICMP and ICMPv6) arriving
    /// in namespace `ns` (what a server there sees). Read with [`Cluster::ping_sources`].
    pub fn record_ping_sources(&self, ns: &str) -> Result<()> {
        let script = r#"table ip lab-seen {
    set sources { type ipv4_addr; flags dynamic; size 1024; }
    chain input {
        type filter hook input priority 0; policy accept;
        icmp type echo-request add @sources { ip saddr }
    }
}
table ip6 lab-seen {
    set sources { type ipv6_addr; flags dynamic; size 1024; }
    chain input {
        type filter hook input priority 0; policy accept;
        icmpv6 type echo-request add @sources { ip6 saddr }
    }
}
"#;
        nft_script(ns, script)
    }

    /// The sources recorded by [`Cluster::record_ping_sources`] in `ns` (IPv4 first, then
    /// IPv6), and forgets them.
    pub fn ping_sources(&self, ns: &str) -> Result<Vec<String>> {
        let mut sources = Vec::new();
        for family in ["ip", "ip6"] {
            let out = in_ns(ns, "nft", &["list", "set", family, "lab-seen", "sources"])?;
            in_ns(ns, "nft", &["flush", "set", family, "lab-seen", "sources"])?;
            let Some(start) = out.find("elements = {") else {
                continue;
            };
            let rest = &out[start + "elements = {".len()..];
            let end = rest.find('}').unwrap_or(rest.len());
            sources.extend(
                rest[..end]
                    .split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty()),
            );
        }
        Ok(sources)
    }

    /// Pings `to_ip` from `from` every `interval` until stopped; for reachability while
    /// something changes.
    pub fn ping_continuously(&self, from: &Pod, to_ip: &str, interval: Duration) -> Result<Pinger> {
        let child = Command::new("ip")
            .args(["netns", "exec", &from.netns, "ping", "-n", "-q"])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .args(["-W", "1", to_ip])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ping")?;
        Ok(Pinger { child: Some(child) })
    }

    /// Tears everything down (also done on drop).
    pub fn teardown(&mut self) {
        for pod in self.pods.clone() {
            if let Ok(rt) = self.runtime(pod.node) {
                let _ = rt.del(&Self::attachment(&pod), Some(&pod.result));
            }
        }
        self.pods.clear();
        for node in &mut self.nodes {
            if let Some(mut child) = node.agent.take() {
                terminate(&mut child);
            }
        }
        if let Some(mut etcd) = self.etcd.take() {
            terminate(&mut etcd);
        }
        for tor in &mut self.tors {
            tor.stop();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
        // With the namespaces gone, their entries go too: the previous limits fit again.
        if let Some(limits) = self.neighbour_limits.take() {
            let what = limits.describe();
            drop(limits);
            eprintln!("neighbour table limits back as before the lab ({what})");
        }
        if std::env::var_os("BRINDLE_LAB_KEEP_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A running `ping` ([`Cluster::ping_continuously`]); killed on drop.
pub struct Pinger {
    child: Option<Child>,
}

impl Pinger {
    /// Stops the ping (SIGINT, so it prints its summary); returns (sent, received).
    pub fn stop(mut self) -> Result<(u64, u64)> {
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("ping already stopped"))?;
        // `ip netns exec` execs ping, so the child's pid is ping's.
        run("kill", &["-INT", &child.id().to_string()])?;
        let out = child.wait_with_output().context("waiting for ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| anyhow!("no ping summary in: {text}"))?;
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        match numbers[..] {
            [sent, received, ..] => Ok((sent, received)),
            _ => bail!("cannot read ping summary: {line}"),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Loads an nft script in namespace `ns`.
fn nft_script(ns: &str, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("nft stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The packet count of the rule commented `name` in an `nft list` output.
fn counter(listing: &str, name: &str) -> Result<u64> {
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{name}\"")))
        .ok_or_else(|| anyhow!("no counter {name} in:\n{listing}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "packets")
        .and_then(|p| words.get(p + 1))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unreadable counter: {line}"))
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
