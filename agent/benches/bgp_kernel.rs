//! brindle-bgpd vs BIRD 2 vs `ip -batch`: 100,000 IPv4 /24s learned over eBGP into the kernel.
//!
//! ```text
//!   netns send: BIRD 2, AS 65002, 100,000 static /24s ──veth── netns recv: the receiver, AS 64512
//! ```
//!
//! The same sender BIRD announces the routes to each receiver in turn, each in a fresh pair of
//! namespaces: `brindle-bgpd` with `install_routes: true`, then BIRD 2 with a kernel protocol
//! (`export all`). The time is from the sender's "BGP session established" (its log, ms) to
//! the moment `ip monitor route` in the receiver's namespace has shown the last of the
//! 100,000 routes; the receiver's peak RSS (VmHWM) and CPU time (utime + stime) are read
//! from /proc at that moment. `ip -batch` adds the same routes in a third namespace; its time
//! runs from the command's start to the same event (the monitor has shown the last route), and
//! the command's wall time is printed beside it. Needs root and bird2; run with
//! `cargo bench -p brindle-agent --bench bgp_kernel` (`BGP_BENCH_ROUTES`, `BGP_BENCH_RUNS`,
//! default 5). It prints each run, then the minimum and median of each contender.
//! `ip monitor` gets a 64 MiB receive buffer, and `net.core.rmem_max` is raised to 64 MiB while
//! the bench runs (SO_RCVBUF is capped by it): with less it loses notifications when 100,000
//! routes arrive within a second. A run where it still does is left out (and said so).

#[path = "../tests/bgpd_interop/harness/mod.rs"]
#[allow(dead_code, unused_imports)]
mod harness;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::*;

const SENDER_AS: u32 = 65002;
const RECEIVER_AS: u32 = 64512;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The i-th /24 from 20.0.0.0.
fn prefix(i: usize) -> String {
    format!("{}.{}.{}.0/24", 20 + i / 65536, (i / 256) % 256, i % 256)
}

/// Seconds since the Unix epoch of a BIRD log time ("2026-11-23 09:29:25.703", UTC here).
fn bird_time(line: &str) -> Option<f64> {
    let (date, rest) = line.trim_start().split_once(' ')?;
    let time = rest.split_whitespace().next()?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m, day) = (*d.first()?, *d.get(1)?, *d.get(2)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t: Vec<f64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    Some(days as f64 * 86400.0 + t.first()? * 3600.0 + t.get(1)? * 60.0 + t.get(2)?)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `ip monitor route` in `ns`: sends the time at which `count` distinct prefixes of
/// protocol `proto` ("98", "bird") have been added.
fn monitor(ns: &str, proto: &str, count: usize) -> (std::process::Child, mpsc::Receiver<f64>) {
    let mut child = Command::new("ip")
        .args(["-rcvbuf", "67108864", "-n", ns, "-4", "monitor", "route"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ip monitor");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let tag = format!("proto {proto}");
    std::thread::spawn(move || {
        let mut seen = HashSet::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Deleted") || !line.contains(&tag) {
                continue;
            }
            if let Some(p) = line.split_whitespace().next() {
                seen.insert(p.to_string());
            }
            if seen.len() == count {
                let _ = tx.send(now());
                return;
            }
        }
    });
    // Let it subscribe before anything is sent.
    std::thread::sleep(Duration::from_millis(200));
    (child, rx)
}

/// Peak RSS (KiB), CPU seconds (user + system) and system seconds of a process.
fn usage(pid: u32) -> (u64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), in clock ticks (100 a second here).
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (hwm, (utime + stime) as f64 / 100.0, stime as f64 / 100.0)
}

struct Sample {
    seconds: f64,
    rss_kib: u64,
    cpu: f64,
    /// The part of `cpu` in the kernel (system time: mostly the route writes).
    sys: f64,
}

/// A lab with the sender BIRD; returns (lab, receiver namespace, link, sender).
fn sender_lab(routes: usize) -> (Lab, String, Link, Bird) {
    let mut lab = Lab::new();
    let (nr, ns) = (lab.netns("recv"), lab.netns("send"));
    let link = lab.link(&nr, &ns);
    let statics: Vec<ipnet::IpNet> = (0..routes)
        .map(|i| prefix(i).parse().expect("prefix"))
        .collect();
    let config = BirdConfig {
        router_id: link.b4(),
        asn: SENDER_AS,
        peers: vec![(link.b4(), link.a4(), RECEIVER_AS)],
        statics,
        hold_time: 90,
        passive: true,
        export_actions: String::new(),
        protocol_extra: String::new(),
        global_extra: String::new(),
    };
    let bird = Bird::start(&lab, "send", &ns, config);
    wait_until(
        "the sender's routes loaded",
        Duration::from_secs(60),
        || {
            let out = birdc(&bird.ctl, &["show", "route", "count"]).unwrap_or_default();
            if out.contains(&format!("{routes} of {routes} routes")) {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    (lab, nr, link, bird)
}

/// When the sender logged the session as established.
fn established_at(bird: &Bird) -> Option<f64> {
    bird.log_text()
        .lines()
        .find(|l| l.contains("BGP session established"))
        .and_then(bird_time)
}

/// When `ip monitor` saw the last route; `None` if the routes are all in the kernel but the
/// monitor missed some notifications (its buffer overran: the run is left out).
fn wait_done(
    rx: &mpsc::Receiver<f64>,
    ns: &str,
    proto: &str,
    count: usize,
    what: &str,
) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(t) = rx.recv_timeout(Duration::from_secs(10)) {
            return Some(t);
        }
        let out = Command::new("ip")
            .args(["-n", ns, "-4", "route", "show", "proto", proto])
            .output()
            .expect("ip route show");
        let installed = String::from_utf8_lossy(&out.stdout).lines().count();
        if installed >= count {
            eprintln!("{what}: all {count} routes are in the kernel but `ip monitor` missed some; run left out");
            return None;
        }
    }
    panic!("{what}: not all routes in the kernel within 120 s");
}

fn run_bgpd(bin: &str, routes: usize) -> Option<Sample> {
    let (lab, nr, link, bird) = sender_lab(routes);
    let (mut mon, rx) = monitor(&nr, "98", routes);
    let conf = lab.path("bgpd.yaml");
    std::fs::write(
        &conf,
        format!(
            "router_id: {}\nasn: {RECEIVER_AS}\ninstall_routes: true\npeers:\n  - address: {}\n    asn: {SENDER_AS}\n",
            link.a4(),
            link.b4()
        ),
    )
    .expect("bgpd.yaml");
    let (conf_s, sock) = (
        conf.display().to_string(),
        lab.path("bgpd.sock").display().to_string(),
    );
    let proc = Proc::spawn(
        "brindle-bgpd",
        &nr,
        &[bin, "--config", &conf_s, "--status-socket", &sock],
        &[("RUST_LOG", "warn")],
        lab.path("bgpd.log"),
    );
    let done = wait_done(&rx, &nr, "98", routes, "brindle-bgpd");
    let (rss_kib, cpu, sys) = usage(proc.pid());
    let _ = mon.kill();
    let start = established_at(&bird).expect("the sender logged the session");
    Some(Sample {
        seconds: done? - start,
        rss_kib,
        cpu,
        sys,
    })
}

fn run_bird(routes: usize) -> Option<Sample> {
    let (lab, nr, link, bird) = sender_lab(routes);
    let (mut mon, rx) = monitor(&nr, "bird", routes);
    let conf = lab.path("recv.conf");
    let ctl = lab.path("recv.ctl");
    std::fs::write(
        &conf,
        format!(
            "router id {a};\nprotocol device {{ scan time 10; }}\n\
             protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n\
             protocol bgp peer0 {{\n  local {a} as {RECEIVER_AS};\n  neighbor {b} as {SENDER_AS};\n  \
             connect delay time 1;\n  ipv4 {{ import all; export none; }};\n}}\n",
            a = link.a4(),
            b = link.b4()
        ),
    )
    .expect("recv.conf");
    let (conf_s, ctl_s) = (conf.display().to_string(), ctl.display().to_string());
    let proc = Proc::spawn(
        "bird-recv",
        &nr,
        &["bird", "-f", "-c", &conf_s, "-s", &ctl_s],
        &[],
        lab.path("recv.log"),
    );
    let done = wait_done(&rx, &nr, "bird", routes, "BIRD");
    let (rss_kib, cpu, sys) = usage(proc.pid());
    let _ = mon.kill();
    let start = established_at(&bird).expect("the sender logged the session");
    Some(Sample {
        seconds: done? - start,
        rss_kib,
        cpu,
        sys,
    })
}

/// `ip -batch` adding the routes: (time until `ip monitor` has shown the last, as for the
/// daemons; wall time of the command).
fn run_ip_batch(routes: usize) -> Option<(f64, f64)> {
    let mut lab = Lab::new();
    let (na, nb) = (lab.netns("ipa"), lab.netns("ipb"));
    let link = lab.link(&na, &nb);
    let batch = lab.path("routes.batch");
    let mut text = String::with_capacity(routes * 48);
    for i in 0..routes {
        text.push_str(&format!(
            "route add {} via {} proto 98\n",
            prefix(i),
            link.b4()
        ));
    }
    std::fs::write(&batch, text).expect("batch file");
    let (mut mon, rx) = monitor(&na, "98", routes);
    let start = now();
    let t = Instant::now();
    run("ip", &["-n", &na, "-batch", &batch.display().to_string()]);
    let wall = t.elapsed().as_secs_f64();
    let done = wait_done(&rx, &na, "98", routes, "ip -batch");
    let _ = mon.kill();
    Some((done? - start, wall))
}

/// Minimum and median.
fn min_median(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let median = match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    (v.first().copied().unwrap_or(f64::NAN), median)
}

/// Raises `net.core.rmem_max` (a host-wide setting) so that `ip monitor`'s 64 MiB receive
/// buffer is granted (SO_RCVBUF is capped by it), and restores it when dropped.
struct RmemMax(Option<String>);

const RMEM_MAX: &str = "/proc/sys/net/core/rmem_max";

impl RmemMax {
    fn raise() -> Self {
        let old = std::fs::read_to_string(RMEM_MAX).ok();
        let _ = std::fs::write(RMEM_MAX, "67108864");
        RmemMax(old)
    }
}

impl Drop for RmemMax {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(RMEM_MAX, old.trim());
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this too, but briefly.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !can_run("bgp_kernel bench", &["bird", "birdc"]) {
        return;
    }
    let _rmem = RmemMax::raise();
    let routes = env_usize("BGP_BENCH_ROUTES", 100_000);
    let runs = env_usize("BGP_BENCH_RUNS", 5);
    let bgpd = env!("CARGO_BIN_EXE_brindle-bgpd");
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "kernel: {routes} IPv4 /24s over eBGP into the kernel, {runs} runs; load before: {}",
        load()
    );
    println!();
    println!(
        "| run | brindle-bgpd | RSS | CPU (system) | BIRD 2 | RSS | CPU (system) | `ip -batch` (command) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (mut ours, mut birds, mut ips, mut cpus, mut bird_cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run_no in 1..=runs {
        let (Some(b), Some(r), Some((ip, ip_wall))) = (
            run_bgpd(bgpd, routes),
            run_bird(routes),
            run_ip_batch(routes),
        ) else {
            println!("| {run_no} | left out: `ip monitor` missed notifications |");
            continue;
        };
        println!(
            "| {run_no} | {:.2} s | {:.0} MiB | {:.2} s ({:.2} s) | {:.2} s | {:.0} MiB | {:.2} s ({:.2} s) | {:.2} s ({:.2} s) |",
            b.seconds,
            b.rss_kib as f64 / 1024.0,
            b.cpu,
            b.sys,
            r.seconds,
            r.rss_kib as f64 / 1024.0,
            r.cpu,
            r.sys,
            ip,
            ip_wall
        );
        ours.push(b.seconds);
        birds.push(r.seconds);
        ips.push(ip);
        cpus.push(b.cpu);
        bird_cpus.push(r.cpu);
    }
    let ((b_min, b_med), (r_min, r_med), (i_min, i_med)) =
        (min_median(&ours), min_median(&birds), min_median(&ips));
    let n = ours.len();
    println!();
    println!("| of {n} runs | brindle-bgpd | BIRD 2 | `ip -batch` |");
    println!("|---|---|---|---|");
    println!("| min | {b_min:.2} s | {r_min:.2} s | {i_min:.2} s |");
    println!("| median | {b_med:.2} s | {r_med:.2} s | {i_med:.2} s |");
    println!(
        "| median CPU | {:.2} s | {:.2} s | |",
        min_median(&cpus).1,
        min_median(&bird_cpus).1
    );
    println!();
    let faster = |other: &[f64]| ours.iter().zip(other).filter(|(a, b)| a < b).count();
    println!(
        "median ratios: brindle-bgpd / BIRD {:.2}, brindle-bgpd / ip -batch {:.2}; \
         brindle-bgpd faster in {}/{n} runs than BIRD, {}/{n} than ip -batch; load after: {}",
        b_med / r_med,
        b_med / i_med,
        faster(&birds),
        faster(&ips),
        load()
    );
}
