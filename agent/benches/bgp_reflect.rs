//! Route reflection, brindle-bgpd vs BIRD 2: one client announces 100,000 IPv4 /24s, ten
//! clients each receive all of them.
//!
//! ```text
//!   netns rr: the reflector, AS 64512          netns cli: this bench's client process
//!   (brindle-bgpd with cluster_id and   ──veth──  1 sender + 10 receivers, each with its own
//!    rr_client peers, or BIRD 2 with            address, built on brindle_bgp::session
//!    `rr client`), passive
//! ```
//!
//! The clients are not routers: they are sessions of the `bgp` crate's session layer in one
//! process (this binary, run again inside the clients' namespace with `client` as its first
//! argument), on a current-thread runtime so that they take at most one of the machine's cores.
//! The sender packs its routes into UPDATEs of 1,000 NLRI with one set of attributes (ORIGIN,
//! empty AS_PATH, NEXT_HOP, LOCAL_PREF) and hands them all to its session at once, once every
//! session is Established; each receiver marks the prefixes it has seen in a bitmap. The time is
//! from the moment the sender queues its first UPDATE to the moment the last receiver has all
//! of them, both read in the client process. The reflector's peak RSS (VmHWM) and CPU time
//! (utime + stime) are read from /proc at that moment, as is the client process's own CPU time
//! (to show where the time goes).
//!
//! Needs root and bird2; run with `cargo bench -p brindle-agent --bench bgp_reflect`
//! (`BGP_BENCH_ROUTES`, `BGP_BENCH_CLIENTS`, `BGP_BENCH_RUNS`; `BGP_BENCH_BGPD_WRAP` to run
//! brindle-bgpd under a profiler such as heaptrack).

#[path = "../tests/bgpd_interop/harness/mod.rs"]
#[allow(dead_code, unused_imports)]
mod harness;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brindle_bgp::fsm::PeerConfig;
use brindle_bgp::packet::{AsPath, Origin, PathAttributes, Update};
use brindle_bgp::session::{spawn_session, SessionConfig, SessionEvent};
use harness::*;
use ipnet::{IpNet, Ipv4Net};
use tokio::sync::mpsc;

const ASN: u32 = 64512;
/// NLRI per UPDATE from the sender (4 octets each for a /24: about 4,000 of the 4,096 octets).
const PER_UPDATE: usize = 1000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The i-th /24 from 20.0.0.0.
fn prefix(i: usize) -> Ipv4Net {
    let a = u32::try_from(20 * 65536 + i).unwrap_or(u32::MAX) << 8;
    Ipv4Net::new(Ipv4Addr::from(a), 24).unwrap_or_default()
}

/// The index of a /24 made by [`prefix`], if it is one.
fn index(p: &IpNet) -> Option<usize> {
    match p {
        IpNet::V4(n) if n.prefix_len() == 24 => {
            let v = u32::from(n.network()) >> 8;
            usize::try_from(v).ok()?.checked_sub(20 * 65536)
        }
        _ => None,
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Peak RSS (KiB) and CPU seconds (utime + stime) of a process.
fn usage(pid: &str) -> (u64, f64) {
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
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (hwm, ticks as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------------
// The client process.

/// `client <reflector> <routes> <sender address> <receiver address>...`: prints
/// `established`, then `result <first update> <last complete> <cpu s>` (Unix seconds), then
/// keeps the sessions up until stdin closes.
fn client_main(args: &[String]) {
    let rr: IpAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .expect("reflector address");
    let routes: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("route count");
    let addrs: Vec<Ipv4Addr> = args[2..]
        .iter()
        .map(|a| a.parse().expect("client address"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(clients(rr, routes, addrs));
}

async fn clients(rr: IpAddr, routes: usize, addrs: Vec<Ipv4Addr>) {
    // One event channel per session: every session's events name the same peer (the reflector).
    let mut sessions = Vec::new();
    let mut channels = Vec::new();
    for addr in &addrs {
        let (tx, rx) = mpsc::channel(4096);
        let mut fsm = PeerConfig::new(ASN, *addr, ASN);
        fsm.connect_retry_time = 1;
        fsm.idle_hold_time = 1;
        let mut config = SessionConfig::new(rr, fsm);
        config.local_addr = Some(IpAddr::V4(*addr));
        sessions.push(spawn_session(config, tx).expect("session"));
        channels.push(rx);
    }
    for (addr, rx) in addrs.iter().zip(channels.iter_mut()) {
        loop {
            match rx.recv().await.expect("session events") {
                SessionEvent::Established { .. } => break,
                SessionEvent::Down { reason, .. } => {
                    eprintln!("client {addr}: down ({reason}); retrying");
                }
                _ => {}
            }
        }
    }
    println!("established");

    // The receivers count from here on, each in a task of its own.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut channels = channels.into_iter();
    let mut sender_events = channels.next().expect("the sender's channel");
    for (addr, mut rx) in addrs[1..].iter().copied().zip(channels) {
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut seen = vec![false; routes];
            let mut count = 0;
            while let Some(event) = rx.recv().await {
                match event {
                    SessionEvent::Update { update, .. } => {
                        for p in &update.nlri {
                            if let Some(slot) = index(p).and_then(|i| seen.get_mut(i)) {
                                if !*slot {
                                    *slot = true;
                                    count += 1;
                                }
                            }
                        }
                        if count == routes {
                            let _ = done.send(now());
                            count += 1;
                        }
                    }
                    SessionEvent::Down { reason, .. } => {
                        eprintln!("client {addr}: session went down ({reason})");
                    }
                    _ => {}
                }
            }
        });
    }
    drop(done_tx);
    tokio::spawn(async move { while sender_events.recv().await.is_some() {} });

    let attributes = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        next_hop: Some(addrs[0]),
        local_pref: Some(100),
        ..PathAttributes::default()
    };
    let all: Vec<IpNet> = (0..routes).map(|i| IpNet::V4(prefix(i))).collect();
    let mut updates: Vec<Update> = all
        .chunks(PER_UPDATE)
        .map(|nlri| Update {
            attributes: attributes.clone(),
            nlri: nlri.to_vec(),
            ..Update::default()
        })
        .collect();
    updates.push(Update::default()); // End-of-RIB
    let first_update = now();
    sessions[0].send_updates(updates).expect("sender session");

    let mut last = first_update;
    for _ in 1..addrs.len() {
        last = done_rx.recv().await.expect("a receiver completes");
    }
    let (_, cpu) = usage("self");
    println!("result {first_update:.6} {last:.6} {cpu:.2}");
    // Keep the sessions up while the reflector is measured: until stdin closes.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    drop(sessions);
}

// ---------------------------------------------------------------------------------------------
// The bench.

struct Sample {
    seconds: f64,
    rss_kib: u64,
    cpu: f64,
    client_cpu: f64,
}

/// The clients' namespace joined to the reflector's, with `clients` addresses on its end.
struct Setup {
    lab: Lab,
    rr_ns: String,
    cli_ns: String,
    rr: IpAddr,
    clients: Vec<IpAddr>,
}

fn setup(clients: usize) -> Setup {
    let mut lab = Lab::new();
    let (rr_ns, cli_ns) = (lab.netns("rr"), lab.netns("cli"));
    let link = lab.link(&rr_ns, &cli_ns);
    let dev = run("ip", &["-n", &cli_ns, "-o", "link", "show", "type", "veth"]);
    let dev = dev
        .split(':')
        .nth(1)
        .map(|d| d.trim().split('@').next().unwrap_or("").to_string())
        .expect("the clients' veth");
    let base = match link.b4() {
        IpAddr::V4(a) => u32::from(a) & !0xff,
        IpAddr::V6(_) => unreachable!("IPv4 link"),
    };
    let mut addrs = Vec::new();
    for i in 0..=clients {
        let a = IpAddr::V4(Ipv4Addr::from(base + 100 + i as u32));
        run(
            "ip",
            &[
                "-n",
                &cli_ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &dev,
            ],
        );
        addrs.push(a);
    }
    Setup {
        lab,
        rr_ns,
        cli_ns,
        rr: link.a4(),
        clients: addrs,
    }
}

/// Runs the client process against a reflector that is already up (`pid`), and measures.
fn measure(s: &Setup, routes: usize, pid: &str) -> Sample {
    let exe = std::env::current_exe().expect("own path");
    let mut argv = vec![
        exe.display().to_string(),
        "client".to_string(),
        s.rr.to_string(),
        routes.to_string(),
    ];
    argv.extend(s.clients.iter().map(IpAddr::to_string));
    let log = std::fs::File::create(s.lab.path("clients.log")).expect("clients log");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &s.cli_ns])
        .args(&argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("client process");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut result = None;
    while result.is_none() {
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line.starts_with("result ") => result = Some(line),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the clients did not complete within 180 s:\n{}",
                    std::fs::read_to_string(s.lab.path("clients.log")).unwrap_or_default()
                );
            }
        }
    }
    let (rss_kib, cpu) = usage(pid);
    drop(child.stdin.take());
    let _ = child.wait();
    let f: Vec<f64> = result
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Sample {
        seconds: f[1] - f[0],
        rss_kib,
        cpu,
        client_cpu: f[2],
    }
}

fn run_bgpd(bin: &str, routes: usize, clients: usize) -> Sample {
    let s = setup(clients);
    let mut yaml = format!(
        "router_id: {rr}\nasn: {ASN}\ncluster_id: {rr}\ninstall_routes: false\npeers:\n",
        rr = s.rr
    );
    for c in &s.clients {
        yaml.push_str(&format!(
            "  - address: {c}\n    asn: {ASN}\n    passive: true\n    rr_client: true\n"
        ));
    }
    let conf = s.lab.path("bgpd.yaml");
    std::fs::write(&conf, yaml).expect("bgpd.yaml");
    let (conf_s, sock) = (
        conf.display().to_string(),
        s.lab.path("bgpd.sock").display().to_string(),
    );
    // `BGP_BENCH_BGPD_WRAP="heaptrack -o /tmp/bgpd"` runs brindle-bgpd under a profiler (the
    // RSS and CPU figures are then the wrapper's, not brindle-bgpd's).
    let wrap = std::env::var("BGP_BENCH_BGPD_WRAP").unwrap_or_default();
    let mut argv: Vec<&str> = wrap.split_whitespace().collect();
    argv.extend([bin, "--config", &conf_s, "--status-socket", &sock]);
    let proc = Proc::spawn(
        "brindle-bgpd",
        &s.rr_ns,
        &argv,
        &[("RUST_LOG", "warn")],
        s.lab.path("bgpd.log"),
    );
    wait_until("brindle-bgpd listens", Duration::from_secs(10), || {
        if s.lab.path("bgpd.sock").exists() {
            Ok(())
        } else {
            Err(proc.log_text())
        }
    });
    let sample = measure(&s, routes, &proc.pid().to_string());
    drop(proc);
    sample
}

fn run_bird(routes: usize, clients: usize) -> Sample {
    let s = setup(clients);
    let mut conf = format!(
        "router id {rr};\nprotocol device {{ scan time 10; }}\n",
        rr = s.rr
    );
    for (i, c) in s.clients.iter().enumerate() {
        conf.push_str(&format!(
            "protocol bgp c{i} {{\n  local {rr} as {ASN};\n  neighbor {c} as {ASN};\n  \
             passive on;\n  rr client;\n  rr cluster id {rr};\n  \
             ipv4 {{ import all; export all; }};\n}}\n",
            rr = s.rr
        ));
    }
    let path = s.lab.path("rr.conf");
    std::fs::write(&path, conf).expect("rr.conf");
    let (conf_s, ctl) = (
        path.display().to_string(),
        s.lab.path("rr.ctl").display().to_string(),
    );
    let proc = Proc::spawn(
        "bird-rr",
        &s.rr_ns,
        &["bird", "-f", "-c", &conf_s, "-s", &ctl],
        &[],
        s.lab.path("rr.log"),
    );
    wait_until("BIRD answers birdc", Duration::from_secs(10), || {
        birdc(std::path::Path::new(&ctl), &["show", "status"]).ok_or_else(|| proc.log_text())
    });
    let sample = measure(&s, routes, &proc.pid().to_string());
    drop(proc);
    sample
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        client_main(&args[1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if !can_run("bgp_reflect bench", &["bird", "birdc"]) {
        return;
    }
    let routes = env_usize("BGP_BENCH_ROUTES", 100_000);
    let clients = env_usize("BGP_BENCH_CLIENTS", 10);
    let runs = env_usize("BGP_BENCH_RUNS", 3);
    let bgpd = env!("CARGO_BIN_EXE_brindle-bgpd");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "reflect: 1 client announces {routes} IPv4 /24s, {clients} clients receive them; {runs} runs; load before: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!();
    println!("| run | reflector | first UPDATE -> last client complete | peak RSS | CPU | clients' CPU |");
    println!("|---|---|---|---|---|---|");
    let mut pairs = Vec::new();
    for run_no in 1..=runs {
        let b = run_bgpd(bgpd, routes, clients);
        let r = run_bird(routes, clients);
        for (name, x) in [("brindle-bgpd", &b), ("BIRD 2", &r)] {
            println!(
                "| {run_no} | {name} | {:.2} s | {:.1} MiB | {:.2} s | {:.2} s |",
                x.seconds,
                x.rss_kib as f64 / 1024.0,
                x.cpu,
                x.client_cpu
            );
        }
        pairs.push((b, r));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio =
        |f: &dyn Fn(&Sample) -> f64| median(pairs.iter().map(|(b, r)| f(b) / f(r)).collect());
    println!();
    println!("| ratio brindle / BIRD (median of runs) | time | peak RSS | CPU |");
    println!("|---|---|---|---|");
    println!(
        "| | {:.2} | {:.2} | {:.2} |",
        ratio(&|s| s.seconds),
        ratio(&|s| s.rss_kib as f64),
        ratio(&|s| s.cpu)
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
