//! The lab the interop scenarios run in: network namespaces joined by veth pairs, and the
//! routers started inside them as real processes (brindle-bgpd, BIRD 2, GoBGP), each with its
//! configuration generated into the lab's temporary directory.
//!
//! ```text
//!   Lab ── Netns "bgi-<pid>-<n>-<role>" (deleted on drop)
//!       └─ Link: veth pair between two namespaces, 10.0.<k>.1/24 + fd00:0:<k>::1/64 on the
//!          first end, .2 / ::2 on the second
//!   Proc ── a child process (SIGCONT + SIGKILL + wait on drop; its log printed when the test
//!           panics)
//! ```
//!
//! Addresses repeat between labs: each lab has its own namespaces, so tests run in parallel.
//! Locals drop in reverse order, so a test that creates the `Lab` first has its routers killed
//! before the namespaces go.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Whether the scenario can run here: root and the given programs. Without them it is skipped
/// with a notice, unless `CI` is set, where it fails.
pub fn can_run(test: &str, programs: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("needs {}", missing.join(", "))
    } else {
        "needs root".to_string()
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} {why} (CI is set, so not skipping)"
    );
    eprintln!("skipped: {test} {why}");
    false
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Polls `probe` every 100 ms until it returns `Ok`, or panics after `limit` with what it last
/// returned as `Err`.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not reached within {limit:?}; last seen:\n{last}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so the pairs.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair between two namespaces, with the addresses of each end.
#[derive(Clone, Debug)]
pub struct Link {
    pub a: (String, IpAddr, IpAddr),
    pub b: (String, IpAddr, IpAddr),
}

impl Link {
    /// The IPv4 address of the first end.
    pub fn a4(&self) -> IpAddr {
        self.a.1
    }
    pub fn a6(&self) -> IpAddr {
        self.a.2
    }
    pub fn b4(&self) -> IpAddr {
        self.b.1
    }
    pub fn b6(&self) -> IpAddr {
        self.b.2
    }
}

/// The namespaces and files of one scenario.
pub struct Lab {
    pub dir: PathBuf,
    id: String,
    links: u32,
    namespaces: Vec<Netns>,
}

impl Lab {
    pub fn new() -> Lab {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("bgi-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab temp dir");
        Lab {
            dir,
            id,
            links: 0,
            namespaces: Vec::new(),
        }
    }

    /// Creates a namespace for `role` with its loopback up; returns its name.
    pub fn netns(&mut self, role: &str) -> String {
        let name = format!("bgi-{}-{role}", self.id);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(Netns { name: name.clone() });
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Joins two namespaces with a veth pair: 10.0.k.1/24 and fd00:0:k::1/64 in `a`, .2 and ::2
    /// in `b` (k counts the lab's links from 1). IPv6 addresses skip duplicate detection so they
    /// are usable at once.
    pub fn link(&mut self, a: &str, b: &str) -> Link {
        self.links += 1;
        let k = self.links;
        // Interface names are at most 15 bytes; these only need to be unique inside each
        // namespace, but are created under unique names anyway.
        let tag = NEXT_LAB.fetch_add(1, Ordering::SeqCst) % 10_000;
        let pid = std::process::id() % 100_000;
        let (da, db) = (format!("v{pid}x{tag}a"), format!("v{pid}x{tag}b"));
        run(
            "ip",
            &[
                "link", "add", &da, "netns", a, "type", "veth", "peer", "name", &db, "netns", b,
            ],
        );
        let mut ends = Vec::new();
        for (ns, dev, host) in [(a, &da, 1), (b, &db, 2)] {
            let v4: IpAddr = format!("10.0.{k}.{host}").parse().expect("v4");
            let v6: IpAddr = format!("fd00:0:{k}::{host}").parse().expect("v6");
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            );
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            ends.push((ns.to_string(), v4, v6));
        }
        let b = ends.pop().expect("two ends");
        let a = ends.pop().expect("two ends");
        Link { a, b }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.namespaces.clear();
        if std::env::var_os("BRINDLE_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lab files kept in {}", self.dir.display());
        }
    }
}

/// A router process; killed (after a SIGCONT, in case a test stopped it) and reaped on drop.
/// When the test is panicking, its log is printed.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `argv` inside `ns` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, ns: &str, argv: &[&str], env: &[(&str, &str)], log: PathBuf) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = file.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({argv:?}): {e}"));
        Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (HUP, STOP, CONT, TERM, KILL).
    pub fn signal(&self, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.pid().to_string()]);
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code().or(Some(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills and reaps the process now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            let mut out = String::new();
            for line in tail.iter().rev() {
                let _ = writeln!(out, "  {line}");
            }
            eprintln!("---- {} log ({}):\n{out}", self.name, self.log.display());
        }
    }
}

/// Kernel routes of `ns` with Brindle's rtproto (98) for `prefix`: the `ip route` lines, empty
/// when there is none.
pub fn kernel_routes(ns: &str, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    run(
        "ip",
        &[
            "-n", ns, family, "route", "show", "proto", "98", "exact", prefix,
        ],
    )
}

/// All of `ns`'s routes in one family, for messages.
pub fn all_routes(ns: &str, family: &str) -> String {
    run("ip", &["-n", ns, family, "route", "show"])
}

// ---------------------------------------------------------------------------------------------
// BIRD 2

/// What a BIRD instance is configured with.
#[derive(Clone, Debug)]
pub struct BirdConfig {
    pub router_id: IpAddr,
    pub asn: u32,
    /// Neighbours: local address, neighbour address, neighbour AS.
    pub peers: Vec<(IpAddr, IpAddr, u32)>,
    /// Blackhole routes exported to every neighbour.
    pub statics: Vec<IpNet>,
    pub hold_time: u16,
    pub passive: bool,
    /// Filter statements run on every exported static route before it is accepted, e.g.
    /// `bgp_community.add((65002, 100));`.
    pub export_actions: String,
}

impl BirdConfig {
    pub fn render(&self, log: &Path) -> String {
        let mut conf = format!(
            "log \"{}\" all;\nrouter id {};\nprotocol device {{ scan time 1; }}\n",
            log.display(),
            self.router_id
        );
        let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
            self.statics.iter().partition(|p| matches!(p, IpNet::V4(_)));
        for (name, channel, routes) in [("static4", "ipv4", v4), ("static6", "ipv6", v6)] {
            let _ = writeln!(conf, "protocol static {name} {{\n  {channel};");
            for r in routes {
                let _ = writeln!(conf, "  route {r} blackhole;");
            }
            conf.push_str("}\n");
        }
        let keepalive = (self.hold_time / 3).max(1);
        for (i, (local, neighbor, asn)) in self.peers.iter().enumerate() {
            let channel = if neighbor.is_ipv4() { "ipv4" } else { "ipv6" };
            let _ = write!(
                conf,
                "protocol bgp peer{i} {{\n  local {local} as {asn_self};\n  neighbor {neighbor} as {asn};\n  \
                 passive {passive};\n  hold time {hold};\n  keepalive time {keepalive};\n  \
                 connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 2;\n  \
                 debug {{ states, events, packets }};\n  \
                 {channel} {{ import all; export filter {{ if source = RTS_STATIC then {{ \
                 {actions} accept; }} reject; }}; }};\n}}\n",
                actions = self.export_actions,
                asn_self = self.asn,
                passive = if self.passive { "on" } else { "off" },
                hold = self.hold_time,
            );
        }
        conf
    }
}

/// A BIRD 2 daemon in a namespace, with its control socket in the lab directory.
pub struct Bird {
    pub ns: String,
    pub ctl: PathBuf,
    pub conf_path: PathBuf,
    pub config: BirdConfig,
    log: PathBuf,
    name: String,
    pub proc: Proc,
}

impl Bird {
    pub fn start(lab: &Lab, name: &str, ns: &str, config: BirdConfig) -> Bird {
        let conf_path = lab.path(&format!("{name}.conf"));
        let log = lab.path(&format!("{name}.log"));
        std::fs::write(&conf_path, config.render(&log)).expect("write bird.conf");
        let ctl = lab.path(&format!("{name}.ctl"));
        let proc = Bird::spawn(name, ns, &conf_path, &ctl, &log);
        Bird {
            ns: ns.to_string(),
            ctl,
            conf_path,
            config,
            log,
            name: name.to_string(),
            proc,
        }
    }

    fn spawn(name: &str, ns: &str, conf: &Path, ctl: &Path, log: &Path) -> Proc {
        let (conf_s, ctl_s) = (conf.display().to_string(), ctl.display().to_string());
        let proc = Proc::spawn(
            name,
            ns,
            &["bird", "-f", "-c", &conf_s, "-s", &ctl_s],
            &[],
            log.to_path_buf(),
        );
        wait_until(
            &format!("{name} answers birdc"),
            Duration::from_secs(10),
            || birdc(ctl, &["show", "status"]).ok_or_else(|| "no answer".to_string()),
        );
        proc
    }

    /// Kills BIRD (SIGKILL: no NOTIFICATION) and starts it again with the same configuration.
    pub fn restart(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_file(&self.ctl);
        self.proc = Bird::spawn(&self.name, &self.ns, &self.conf_path, &self.ctl, &self.log);
    }

    /// Writes a new configuration and has BIRD apply it (`birdc configure`).
    pub fn reconfigure(&mut self, config: BirdConfig) {
        std::fs::write(&self.conf_path, config.render(&self.log)).expect("write bird.conf");
        self.config = config;
        let out = birdc(&self.ctl, &["configure"]).unwrap_or_default();
        assert!(out.contains("Reconfigured"), "birdc configure: {out}");
    }

    /// `show route <prefix> all`: the text when BIRD has the route, else Err with what it said.
    pub fn route(&self, prefix: &str) -> Result<String, String> {
        let out = birdc(&self.ctl, &["show", "route", prefix, "all"]).unwrap_or_default();
        let found = out.lines().any(|l| l.starts_with(&format!("{prefix} ")));
        if found {
            Ok(out)
        } else {
            Err(out)
        }
    }

    /// The state of protocol `peer<i>` as `show protocols` prints it ("Established", "Active").
    pub fn peer_state(&self, i: usize) -> String {
        let out = birdc(&self.ctl, &["show", "protocols", &format!("peer{i}")]).unwrap_or_default();
        out.lines()
            .find(|l| l.starts_with(&format!("peer{i} ")))
            .and_then(|l| l.split_whitespace().nth(5))
            .unwrap_or("?")
            .to_string()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `birdc -s ctl args...`; None if BIRD did not answer.
pub fn birdc(ctl: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(ctl)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// GoBGP

/// What a gobgpd instance is configured with.
#[derive(Clone, Debug)]
pub struct GobgpConfig {
    pub router_id: IpAddr,
    pub asn: u32,
    pub local: IpAddr,
    /// Neighbours: address and AS.
    pub peers: Vec<(IpAddr, u32)>,
    pub hold_time: u16,
}

impl GobgpConfig {
    pub fn render(&self) -> String {
        let mut conf = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  local-address-list = [\"{}\"]\n",
            self.asn, self.router_id, self.local
        );
        for (address, asn) in &self.peers {
            let family = if address.is_ipv4() {
                "ipv4-unicast"
            } else {
                "ipv6-unicast"
            };
            let _ = write!(
                conf,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{address}\"\n    \
                 peer-as = {asn}\n  [neighbors.timers.config]\n    connect-retry = 1\n    \
                 hold-time = {hold}\n    keepalive-interval = {keepalive}\n  \
                 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
                 afi-safi-name = \"{family}\"\n",
                hold = self.hold_time,
                keepalive = (self.hold_time / 3).max(1),
            );
        }
        conf
    }
}

/// A gobgpd in a namespace; its API on a Unix socket in the lab directory so that the `gobgp`
/// CLI runs from the test's own namespace.
pub struct Gobgp {
    pub api: String,
    pub proc: Proc,
    conf: PathBuf,
    ns: String,
}

impl Gobgp {
    pub fn start(lab: &Lab, name: &str, ns: &str, config: &GobgpConfig) -> Gobgp {
        let conf = lab.path(&format!("{name}.toml"));
        std::fs::write(&conf, config.render()).expect("write gobgp.toml");
        let api = format!("unix://{}", lab.path(&format!("{name}.sock")).display());
        let log = lab.path(&format!("{name}.log"));
        let proc = Gobgp::spawn(name, ns, &conf, &api, log);
        Gobgp {
            api,
            proc,
            conf,
            ns: ns.to_string(),
        }
    }

    fn spawn(name: &str, ns: &str, conf: &Path, api: &str, log: PathBuf) -> Proc {
        let conf_s = conf.display().to_string();
        let proc = Proc::spawn(
            name,
            ns,
            &[
                "gobgpd",
                "-f",
                &conf_s,
                "--api-hosts",
                api,
                "--pprof-disable",
                "-p",
            ],
            &[],
            log,
        );
        wait_until(
            &format!("{name} answers gobgp"),
            Duration::from_secs(10),
            || gobgp_cli(api, &["global"]).map(|_| ()),
        );
        proc
    }

    /// Kills gobgpd and starts it again with the same configuration (its RIB starts empty).
    pub fn restart(&mut self) {
        let log = self.proc.log.clone();
        let name = self.proc.name.clone();
        self.proc.kill();
        // gobgpd does not remove its API socket when killed.
        let _ = std::fs::remove_file(self.api.trim_start_matches("unix://"));
        self.proc = Gobgp::spawn(&name, &self.ns, &self.conf, &self.api, log);
    }

    /// Runs the `gobgp` CLI against this daemon; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        gobgp_cli(&self.api, args).unwrap_or_else(|e| panic!("gobgp {args:?}: {e}"))
    }

    /// The global RIB of one family ("ipv4" or "ipv6") as `prefix -> paths`.
    pub fn rib(&self, family: &str) -> serde_json::Map<String, serde_json::Value> {
        let out = self.cli(&["global", "rib", "-a", family, "-j"]);
        if out.trim().is_empty() || out.trim() == "null" {
            return serde_json::Map::new();
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("gobgp rib JSON {out:?}: {e}"))
    }

    /// The session state with `neighbor` as `gobgp neighbor` reports it ("established", ...).
    pub fn neighbor_state(&self, neighbor: &str) -> String {
        let out = gobgp_cli(&self.api, &["neighbor", neighbor, "-j"]).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| {
                v.pointer("/state/session_state")
                    .map(|s| s.to_string().trim_matches('"').to_string())
            })
            .unwrap_or_else(|| format!("? {out}"))
    }
}

fn gobgp_cli(api: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("gobgp")
        .args(["--target", api])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The path attributes of GoBGP's JSON for one path, by type code (1 ORIGIN, 2 AS_PATH,
/// 3 NEXT_HOP, 5 LOCAL_PREF, 14 MP_REACH_NLRI).
pub fn gobgp_attr(path: &serde_json::Value, code: u64) -> Option<&serde_json::Value> {
    path.get("attrs")?
        .as_array()?
        .iter()
        .find(|a| a.get("type").and_then(serde_json::Value::as_u64) == Some(code))
}

// ---------------------------------------------------------------------------------------------
// brindlectl's JSON

/// One row of `brindlectl bgp peers -o json`.
#[derive(Clone, Debug, Deserialize)]
pub struct PeerStatus {
    pub address: String,
    pub asn: u32,
    pub state: String,
    #[serde(default)]
    pub since: serde_json::Value,
    #[serde(default)]
    pub info: Option<String>,
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub advertised: u64,
}

/// One row of `brindlectl bgp routes -o json`.
#[derive(Clone, Debug, Deserialize)]
pub struct RouteStatus {
    pub prefix: String,
    pub next_hops: Vec<String>,
    pub source: String,
    pub as_path: Vec<u32>,
    pub best: bool,
    /// Why the route is not the best (empty for the best).
    #[serde(default)]
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// brindle-bgpd

/// What brindle-bgpd is configured with; rendered as its YAML file.
#[derive(Clone, Debug)]
pub struct BgpdSpec {
    pub router_id: IpAddr,
    pub asn: u32,
    pub listen: Option<String>,
    pub originate: Vec<String>,
    pub install_routes: bool,
    /// Neighbours: address, AS, passive.
    pub peers: Vec<(IpAddr, u32, bool)>,
}

impl BgpdSpec {
    pub fn render(&self) -> String {
        let mut yaml = format!("router_id: {}\nasn: {}\n", self.router_id, self.asn);
        if let Some(listen) = &self.listen {
            let _ = writeln!(yaml, "listen: \"{listen}\"");
        }
        let _ = writeln!(yaml, "install_routes: {}", self.install_routes);
        yaml.push_str("originate:\n");
        for prefix in &self.originate {
            let _ = writeln!(yaml, "  - \"{prefix}\"");
        }
        if self.originate.is_empty() {
            yaml = yaml.replace("originate:\n", "originate: []\n");
        }
        yaml.push_str("peers:\n");
        for (address, asn, passive) in &self.peers {
            let _ = writeln!(
                yaml,
                "  - address: \"{address}\"\n    asn: {asn}\n    passive: {passive}"
            );
        }
        yaml
    }
}

/// Where cargo built the binaries under test.
pub struct Binaries {
    pub bgpd: &'static str,
    pub ctl: &'static str,
}

/// brindle-bgpd in a namespace, its status socket in the lab directory.
pub struct Bgpd {
    pub ns: String,
    pub conf: PathBuf,
    pub socket: PathBuf,
    pub spec: BgpdSpec,
    ctl: &'static str,
    pub proc: Proc,
}

impl Bgpd {
    pub fn start(lab: &Lab, bins: &Binaries, ns: &str, spec: BgpdSpec) -> Bgpd {
        let conf = lab.path("bgpd.yaml");
        std::fs::write(&conf, spec.render()).expect("write bgpd.yaml");
        let socket = lab.path("bgpd.sock");
        let (conf_s, socket_s) = (conf.display().to_string(), socket.display().to_string());
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,brindle_bgp=debug".into());
        let proc = Proc::spawn(
            "brindle-bgpd",
            ns,
            &[bins.bgpd, "--config", &conf_s, "--status-socket", &socket_s],
            &[("RUST_LOG", &filter)],
            lab.path("bgpd.log"),
        );
        let bgpd = Bgpd {
            ns: ns.to_string(),
            conf,
            socket,
            spec,
            ctl: bins.ctl,
            proc,
        };
        wait_until(
            "brindle-bgpd serves its status",
            Duration::from_secs(10),
            || bgpd.peers().map(|_| ()),
        );
        bgpd
    }

    /// Rewrites the configuration file and sends SIGHUP.
    pub fn reload(&mut self, spec: BgpdSpec) {
        std::fs::write(&self.conf, spec.render()).expect("write bgpd.yaml");
        self.spec = spec;
        self.proc.signal("HUP");
    }

    fn ctl_json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, String> {
        let out = Command::new(self.ctl)
            .args(["bgp", what, "-o", "json", "--socket"])
            .arg(&self.socket)
            .output()
            .map_err(|e| format!("brindlectl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "brindlectl bgp {what}: {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_str(&stdout)
            .map_err(|e| format!("brindlectl bgp {what} JSON: {e}: {stdout}"))
    }

    /// `brindlectl bgp peers -o json`.
    pub fn peers(&self) -> Result<Vec<PeerStatus>, String> {
        self.ctl_json("peers")
    }

    /// `brindlectl bgp routes -o json`.
    pub fn routes(&self) -> Result<Vec<RouteStatus>, String> {
        self.ctl_json("routes")
    }

    /// The status row of one peer.
    pub fn peer(&self, address: IpAddr) -> Result<PeerStatus, String> {
        let peers = self.peers()?;
        peers
            .iter()
            .find(|p| p.address.parse::<IpAddr>().ok() == Some(address))
            .cloned()
            .ok_or_else(|| format!("{address} not in {peers:?}"))
    }

    /// Waits until the session with `address` is Established; its status row.
    pub fn wait_established(&self, address: IpAddr, limit: Duration) -> PeerStatus {
        wait_until(
            &format!("brindle-bgpd's session with {address} Established"),
            limit,
            || {
                let peer = self.peer(address)?;
                if peer.state == "Established" {
                    Ok(peer)
                } else {
                    Err(format!("{peer:?}"))
                }
            },
        )
    }

    /// Waits until `routes` shows (or no longer shows) a route for `prefix` from `source`
    /// ("local" or a peer's address); the route when present.
    pub fn wait_route(&self, prefix: &str, source: &str, present: bool) -> Option<RouteStatus> {
        wait_until(
            &format!("route {prefix} from {source} present={present} in brindlectl bgp routes"),
            Duration::from_secs(15),
            || {
                let routes = self.routes()?;
                let found = routes
                    .iter()
                    .find(|r| r.prefix == prefix && same_source(&r.source, source))
                    .cloned();
                match (found, present) {
                    (Some(r), true) => Ok(Some(r)),
                    (None, false) => Ok(None),
                    _ => Err(format!("{routes:#?}")),
                }
            },
        )
    }

    /// Waits until the kernel of bgpd's namespace holds (or no longer holds) a route for
    /// `prefix` with rtproto 98 whose `ip route` text contains every one of `expect`; the text.
    pub fn wait_kernel_route(&self, prefix: &str, expect: &[&str], present: bool) -> String {
        wait_until(
            &format!(
                "kernel route {prefix} {expect:?} present={present} in {}",
                self.ns
            ),
            Duration::from_secs(15),
            || {
                let text = kernel_routes(&self.ns, prefix);
                let matches = !text.trim().is_empty() && expect.iter().all(|e| text.contains(e));
                let gone = text.trim().is_empty();
                if (present && matches) || (!present && gone) {
                    Ok(text)
                } else {
                    let family = if prefix.contains(':') { "-6" } else { "-4" };
                    Err(format!(
                        "proto 98: {text:?}\nall routes:\n{}",
                        all_routes(&self.ns, family)
                    ))
                }
            },
        )
    }
}

fn same_source(shown: &str, wanted: &str) -> bool {
    match (shown.parse::<IpAddr>(), wanted.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => shown == wanted,
    }
}

/// Seconds since 1970 of a `since` as brindlectl prints it (`2026-11-23T08:04:05Z`).
pub fn since_secs(since: &serde_json::Value) -> Option<i64> {
    let s = since.as_str()?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}
