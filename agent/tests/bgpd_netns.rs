//! `brindle-bgpd` with `install_routes` against the real kernel: three speakers, each in its
//! own network namespace, A linked to B and to C by veth pairs.
//!
//! ```text
//!   B (AS 65002) ──veth 10.N.1.0/24, fd00:N:1::/64── A (AS 65001, install_routes) ──veth 10.N.2.0/24, fd00:N:2::/64── C (AS 65003)
//! ```
//!
//! One IPv4 and one IPv6 session on each link. B and C announce the same IPv4 and IPv6
//! prefixes, so A installs one multipath route through both for each. Then: C withdraws (SIGHUP), a route of
//! another protocol is left alone, A stops (SIGTERM) and removes what it installed.
//! Processes and namespaces are removed by guards, also when the test fails. Needs root;
//! skipped without it unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BGPD: &str = env!("CARGO_BIN_EXE_brindle-bgpd");
const CTL: &str = env!("CARGO_BIN_EXE_brindlectl");

fn privileged() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("the brindle-bgpd netns test needs root (CI is set, so not skipping)");
    }
    eprintln!("skipping: the brindle-bgpd netns test needs root");
    false
}

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("brd-bgpd-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        sh_host(&format!("ip netns add {name}"));
        let ns = Netns(name);
        ns.sh("ip link set lo up");
        ns
    }

    fn sh(&self, cmd: &str) -> String {
        let (ok, out) = self.try_sh(cmd);
        assert!(ok, "`{cmd}` in {} failed: {out}", self.0);
        out
    }

    fn try_sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", cmd])
            .output()
            .expect("running ip netns exec");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Our routes (protocol 98), one per line, trimmed, for both families.
    fn our_routes(&self) -> String {
        let v4 = self.sh("ip route show proto 98");
        let v6 = self.sh("ip -6 route show proto 98");
        format!("{v4}{v6}")
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh_host(cmd: &str) {
    let status = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .expect("running sh");
    assert!(status.success(), "`{cmd}` failed");
}

/// A brindle-bgpd process in a namespace; killed when dropped.
struct Bgpd {
    child: Child,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Bgpd {
    fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> Bgpd {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).expect("writing the config");
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, BGPD, "--config"])
            .arg(&path)
            .arg("--status-socket")
            .arg(&socket)
            .args(["--log", "info,brindle_bgp=debug"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting brindle-bgpd");
        Bgpd {
            child,
            config: path,
            socket,
            log,
        }
    }

    fn signal(&self, sig: &str) {
        sh_host(&format!("kill -{sig} {}", self.child.id()));
    }

    fn reconfigure(&self, config: &str) {
        std::fs::write(&self.config, config).expect("writing the config");
        self.signal("HUP");
    }

    fn peers_json(&self) -> String {
        let out = Command::new(CTL)
            .args(["bgp", "peers", "-o", "json", "--socket"])
            .arg(&self.socket)
            .output()
            .expect("running brindlectl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bgpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` holds; panics with `what`, `state()` and the logs after `secs`.
fn wait_for(
    what: &str,
    secs: u64,
    logs: &[&Bgpd],
    state: impl Fn() -> String,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = logs.iter().map(|b| b.log()).collect();
    panic!(
        "{what}: not within {secs} s; now:\n{}\n----- logs:\n{}",
        state(),
        logs.join("\n-----\n")
    );
}

#[test]
fn bgpd_installs_ecmp_and_ipv6_routes_and_removes_them() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("brd-bgpd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let a = Netns::new("a");
    let b = Netns::new("b");
    let c = Netns::new("c");
    // Second octet from the pid keeps parallel runs' addresses apart in logs.
    let n = std::process::id() % 200 + 20;
    sh_host(&format!(
        "ip link add ab{n} netns {a} type veth peer name ba{n} netns {b} && \
         ip link add ac{n} netns {a} type veth peer name ca{n} netns {c}",
        a = a.0,
        b = b.0,
        c = c.0
    ));
    a.sh(&format!(
        "ip addr add 10.{n}.1.1/24 dev ab{n} && ip addr add fd00:{n}:1::1/64 dev ab{n} nodad && \
         ip addr add 10.{n}.2.1/24 dev ac{n} && ip addr add fd00:{n}:2::1/64 dev ac{n} nodad && \
         ip link set ab{n} up && ip link set ac{n} up"
    ));
    b.sh(&format!(
        "ip addr add 10.{n}.1.2/24 dev ba{n} && ip addr add fd00:{n}:1::2/64 dev ba{n} nodad && \
         ip link set ba{n} up"
    ));
    c.sh(&format!(
        "ip addr add 10.{n}.2.2/24 dev ca{n} && ip addr add fd00:{n}:2::2/64 dev ca{n} nodad && \
         ip link set ca{n} up"
    ));
    // A route of another protocol that B will also announce: never ours to touch.
    a.sh(&format!(
        "ip route add 10.98.0.0/24 via 10.{n}.1.2 proto static"
    ));

    let config_a = format!(
        "router_id: 10.{n}.0.1\nasn: 65001\nlisten: '[::]:179'\ninstall_routes: true\npeers:\n\
         - {{address: 10.{n}.1.2, asn: 65002}}\n\
         - {{address: 'fd00:{n}:1::2', asn: 65002}}\n\
         - {{address: 10.{n}.2.2, asn: 65003}}\n\
         - {{address: 'fd00:{n}:2::2', asn: 65003}}\n"
    );
    let config_b = format!(
        "router_id: 10.{n}.0.2\nasn: 65002\nlisten: '[::]:179'\n\
         originate: [10.99.0.0/24, 10.98.0.0/24, 'fd00:99::/64']\npeers:\n\
         - {{address: 10.{n}.1.1, asn: 65001}}\n\
         - {{address: 'fd00:{n}:1::1', asn: 65001}}\n"
    );
    let config_c = |originate: &str| {
        format!(
            "router_id: 10.{n}.0.3\nasn: 65003\nlisten: '[::]:179'\n\
             originate: [{originate}]\npeers:\n- {{address: 10.{n}.2.1, asn: 65001}}\n\
             - {{address: 'fd00:{n}:2::1', asn: 65001}}\n"
        )
    };
    let bgpd_a = Bgpd::start(&a, &dir, "a", &config_a);
    let bgpd_b = Bgpd::start(&b, &dir, "b", &config_b);
    let bgpd_c = Bgpd::start(&c, &dir, "c", &config_c("10.99.0.0/24, 'fd00:99::/64'"));
    let all = [&bgpd_a, &bgpd_b, &bgpd_c];

    wait_for(
        "A's four sessions Established",
        30,
        &all,
        || bgpd_a.peers_json(),
        || bgpd_a.peers_json().matches("\"Established\"").count() == 4,
    );

    let ecmp = format!(
        "10.99.0.0/24\nnexthop via 10.{n}.1.2 dev ab{n} weight 1\nnexthop via 10.{n}.2.2 dev ac{n} weight 1"
    );
    let v6_ecmp = format!(
        "fd00:99::/64 metric 1024 pref medium\nnexthop via fd00:{n}:1::2 dev ab{n} weight 1\n\
         nexthop via fd00:{n}:2::2 dev ac{n} weight 1"
    );
    wait_for(
        "IPv4 and IPv6 ECMP routes in A's kernel",
        20,
        &all,
        || a.our_routes(),
        || {
            let routes = a.our_routes();
            routes.contains(&ecmp) && routes.contains(&v6_ecmp)
        },
    );
    // The foreign route is untouched and no route of ours shadows it.
    let foreign = a.sh("ip route show 10.98.0.0/24");
    assert!(foreign.contains("proto static"), "{foreign}");
    assert!(
        !a.our_routes().contains("10.98.0.0/24"),
        "{}",
        a.our_routes()
    );

    // A file that does not parse: logged, and C goes on with what it runs.
    bgpd_c.reconfigure("router_id: [");
    wait_for(
        "C logs the failed reload",
        20,
        &all,
        || bgpd_c.log(),
        || bgpd_c.log().contains("reload failed"),
    );
    assert!(bgpd_c.peers_json().contains("\"Established\""));
    assert!(a.our_routes().contains(&ecmp), "{}", a.our_routes());

    // C withdraws: the multipath routes become routes through B alone.
    bgpd_c.reconfigure(&config_c(""));
    let single = format!("10.99.0.0/24 via 10.{n}.1.2 dev ab{n}");
    let v6_single = format!("fd00:99::/64 via fd00:{n}:1::2 dev ab{n} metric 1024 pref medium");
    wait_for(
        "single-path route after C's withdrawal",
        20,
        &all,
        || a.our_routes(),
        || {
            let routes = a.our_routes();
            routes.contains(&single) && routes.contains(&v6_single)
        },
    );

    // SIGTERM: A says goodbye and removes what it installed.
    bgpd_a.signal("TERM");
    wait_for(
        "A's routes removed at shutdown",
        20,
        &all,
        || a.our_routes(),
        || a.our_routes().is_empty(),
    );
    wait_for(
        "B's sessions down",
        20,
        &all,
        || bgpd_b.peers_json(),
        || {
            let peers = bgpd_b.peers_json();
            peers.contains("\"address\"") && !peers.contains("\"Established\"")
        },
    );
    let mut bgpd_a = bgpd_a;
    let status = bgpd_a.child.wait().expect("waiting for A");
    assert!(status.success(), "brindle-bgpd exit status {status}");
    assert!(a.sh("ip route show 10.98.0.0/24").contains("proto static"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Timing probe, not run by default: an eBGP peer announces `BRINDLE_ROUTES` (100,000) /24s
/// to a `brindle-bgpd` with `install_routes`; prints how long until all are in the kernel, how
/// long until they are gone after the peer stops, and, for comparison, how long `ip -batch`
/// takes to add the same routes. `BRINDLE_BGPD=path` runs another build (a release one):
///
/// ```sh
/// cargo build --release -p brindle-agent --bin brindle-bgpd
/// BRINDLE_BGPD=$PWD/target/release/brindle-bgpd cargo test -p brindle-agent --test bgpd_netns \
///     -- --ignored --nocapture install_timing_probe
/// ```
#[test]
#[ignore]
fn install_timing_probe() {
    if !privileged() {
        return;
    }
    let count: u32 = std::env::var("BRINDLE_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bgpd_bin = std::env::var("BRINDLE_BGPD").unwrap_or_else(|_| BGPD.to_string());
    assert!(
        Path::new(&bgpd_bin).is_absolute() && Path::new(&bgpd_bin).exists(),
        "BRINDLE_BGPD={bgpd_bin}: give the absolute path of a brindle-bgpd binary"
    );
    let dir = std::env::temp_dir().join(format!("brd-bgpd-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let a = Netns::new("pa");
    let b = Netns::new("pb");
    let c = Netns::new("pc");
    sh_host(&format!(
        "ip link add pab netns {a} type veth peer name pba netns {b}",
        a = a.0,
        b = b.0
    ));
    a.sh("ip addr add 10.200.1.1/24 dev pab && ip link set pab up");
    b.sh("ip addr add 10.200.1.2/24 dev pba && ip link set pba up");
    c.sh("ip link add pc0 type veth peer name pc1 && ip addr add 10.200.1.1/24 dev pc0 && ip link set pc0 up && ip link set pc1 up");

    let prefixes: Vec<String> = (0..count)
        .map(|i| {
            let a = (11u32 << 24) + (i << 8);
            format!("{}.{}.{}.0/24", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff)
        })
        .collect();
    let config_a = "router_id: 10.200.0.1\nasn: 65001\ninstall_routes: true\npeers:\n- {address: 10.200.1.2, asn: 65002}\n";
    let mut config_b = String::from(
        "router_id: 10.200.0.2\nasn: 65002\npeers:\n- {address: 10.200.1.1, asn: 65001}\noriginate:\n",
    );
    for p in &prefixes {
        config_b.push_str("- ");
        config_b.push_str(p);
        config_b.push('\n');
    }
    let start = |ns: &Netns, name: &str, config: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).expect("config");
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, &bgpd_bin, "--config"])
            .arg(&path)
            .arg("--status-socket")
            .arg(&socket)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("starting brindle-bgpd");
        Bgpd {
            child,
            config: path,
            socket,
            log,
        }
    };
    let count_routes = |ns: &Netns| -> u32 {
        ns.sh("ip -4 route show proto 98 | wc -l")
            .trim()
            .parse()
            .expect("a count")
    };

    let bgpd_a = start(&a, "a", config_a);
    let t0 = Instant::now();
    let bgpd_b = start(&b, "b", &config_b);
    let all = [&bgpd_a, &bgpd_b];
    wait_for(
        "session up",
        60,
        &all,
        || bgpd_a.peers_json(),
        || bgpd_a.peers_json().contains("\"Established\""),
    );
    let up = t0.elapsed();
    wait_for(
        "all routes installed",
        300,
        &all,
        || count_routes(&a).to_string(),
        || count_routes(&a) == count,
    );
    let installed = t0.elapsed();
    let peak_rss = std::fs::read_to_string(format!("/proc/{}/status", bgpd_a.child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into());
    let t1 = Instant::now();
    bgpd_b.signal("TERM");
    wait_for(
        "routes removed after the peer stopped",
        300,
        &all,
        || count_routes(&a).to_string(),
        || count_routes(&a) == 0,
    );
    let removed = t1.elapsed();

    let batch = dir.join("routes.batch");
    let text: String = prefixes
        .iter()
        .map(|p| format!("route add {p} via 10.200.1.2 proto 98\n"))
        .collect();
    std::fs::write(&batch, text).expect("batch file");
    let t2 = Instant::now();
    c.sh(&format!("ip -batch {}", batch.display()));
    let ip_batch = t2.elapsed();
    assert_eq!(count_routes(&c), count);

    println!(
        "{count} routes: peer started -> Established {:.2} s, -> all installed {:.2} s \
         (install {:.2} s after Established, receiver's peak RSS {peak_rss}); \
         peer stopped -> all removed {:.2} s; ip -batch adding the same: {:.2} s",
        up.as_secs_f64(),
        installed.as_secs_f64(),
        (installed - up).as_secs_f64(),
        removed.as_secs_f64(),
        ip_batch.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
