//! Interoperability with a real BIRD 2 (Debian `bird2`) as an eBGP peer, in two network
//! namespaces joined by a veth pair:
//!
//! ```text
//!   netns A: our session, 10.77.N.1/24 ──veth── netns B: bird, 10.77.N.2/24
//!            AS 65001                                   AS 65002, static 10.99.99.0/24
//! ```
//!
//! Needs root (namespaces); without it the test prints a skip notice, unless `CI` is set.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brindle_bgp::fsm::{DownReason, PeerConfig};
use brindle_bgp::packet::{AsPath, Origin, PathAttributes, Update};
use brindle_bgp::session::{spawn_session, SessionConfig, SessionEvent};
use ipnet::IpNet;
use nix::sched::{setns, CloneFlags};
use tokio::sync::mpsc;

const OUR_AS: u32 = 65001;
const BIRD_AS: u32 = 65002;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?}: {status}");
}

/// The namespaces, the veth pair, BIRD and its files; all removed on drop, also when the test
/// fails half-way.
struct Lab {
    ns_a: String,
    ns_b: String,
    ours: Ipv4Addr,
    birds: Ipv4Addr,
    dir: PathBuf,
    bird: Option<Child>,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let n = (pid % 200 + 20) as u8;
        let mut lab = Lab {
            ns_a: format!("brindle-bgp-a-{pid}"),
            ns_b: format!("brindle-bgp-b-{pid}"),
            ours: Ipv4Addr::new(10, 77, n, 1),
            birds: Ipv4Addr::new(10, 77, n, 2),
            dir: std::env::temp_dir().join(format!("brindle-bird-{pid}")),
            bird: None,
        };
        let (va, vb) = (format!("bgpa{pid}"), format!("bgpb{pid}"));
        std::fs::create_dir_all(&lab.dir).expect("temp dir");
        run(&["ip", "netns", "add", &lab.ns_a]);
        run(&["ip", "netns", "add", &lab.ns_b]);
        run(&[
            "ip", "link", "add", &va, "netns", &lab.ns_a, "type", "veth", "peer", "name", &vb,
            "netns", &lab.ns_b,
        ]);
        for (ns, dev, addr) in [(&lab.ns_a, &va, lab.ours), (&lab.ns_b, &vb, lab.birds)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab.start_bird();
        lab
    }

    fn ctl(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    fn start_bird(&mut self) {
        let conf = self.dir.join("bird.conf");
        std::fs::write(
            &conf,
            format!(
                r#"
log "{log}" all;
router id {birds};
protocol device {{ scan time 1; }}
protocol static static4 {{
  ipv4;
  route 10.99.99.0/24 blackhole;
}}
protocol bgp brindle {{
  local {birds} as {BIRD_AS};
  neighbor {ours} as {OUR_AS};
  passive on;
  hold time 6;
  keepalive time 2;
  error wait time 1, 2;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
"#,
                log = self.dir.join("bird.log").display(),
                birds = self.birds,
                ours = self.ours,
            ),
        )
        .expect("write bird.conf");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_b, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(self.ctl())
            .stdin(Stdio::null())
            .spawn()
            .expect("start bird (Debian package bird2)");
        self.bird = Some(child);
        // Ready when birdc answers.
        let deadline = Instant::now() + Duration::from_secs(5);
        while birdc(&self.ctl(), &["show", "status"]).is_none() {
            assert!(Instant::now() < deadline, "bird did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn bird_pid(&self) -> u32 {
        self.bird.as_ref().map(Child::id).unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut bird) = self.bird.take() {
            let _ = bird.kill();
            let _ = bird.wait();
        }
        // Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if std::env::var_os("BRINDLE_KEEP_BIRD_LOG").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `birdc -s ctl args...`; None if BIRD did not answer.
fn birdc(ctl: &Path, args: &[&str]) -> Option<String> {
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

/// Polls BIRD until `show route prefix` does (or does not) list the route.
fn wait_for_bird_route(ctl: &Path, prefix: &str, present: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = birdc(ctl, &["show", "route", prefix, "all"]).unwrap_or_default();
        if out.contains(&format!("{prefix} ")) == present {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "BIRD route {prefix} present={} not reached:\n{out}",
            !present
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn next_event(
    rx: &mut mpsc::Receiver<SessionEvent>,
    what: &str,
    secs: u64,
    want: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let wait = async {
        while let Some(ev) = rx.recv().await {
            if want(&ev) {
                return ev;
            }
        }
        panic!("events closed while waiting for {what}");
    };
    tokio::time::timeout(Duration::from_secs(secs), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {secs} s"))
}

/// The part that runs inside namespace A.
async fn scenario(ours: Ipv4Addr, birds: Ipv4Addr, dir: PathBuf, bird_pid: u32) {
    let ctl = dir.join("bird.ctl");
    let fsm = PeerConfig {
        hold_time: 6,
        connect_retry_time: 2,
        damp_peer_oscillations: false,
        ..PeerConfig::new(OUR_AS, ours, BIRD_AS)
    };
    let config = SessionConfig {
        local_addr: Some(IpAddr::V4(ours)),
        connect_timeout: Duration::from_secs(2),
        ..SessionConfig::new(IpAddr::V4(birds), fsm)
    };
    let (tx, mut events) = mpsc::channel(256);
    let handle = spawn_session(config, tx).expect("valid config");

    let ev = next_event(&mut events, "Established", 10, |e| {
        matches!(e, SessionEvent::Established { .. })
    })
    .await;
    let SessionEvent::Established { negotiated, .. } = ev else {
        unreachable!()
    };
    assert_eq!(negotiated.hold_time, 6);
    assert!(negotiated.four_octet_as, "BIRD advertises 4-octet AS");

    // BIRD's static route, with its AS prepended.
    let static_route: IpNet = "10.99.99.0/24".parse().expect("prefix");
    let ev = next_event(
        &mut events,
        "BIRD's UPDATE",
        10,
        |e| matches!(e, SessionEvent::Update { update, .. } if update.nlri.contains(&static_route)),
    )
    .await;
    let SessionEvent::Update { update, .. } = ev else {
        unreachable!()
    };
    assert_eq!(update.treatment(), None, "{update:?}");
    assert_eq!(
        update.attributes.as_path,
        Some(AsPath::from_sequence(vec![BIRD_AS]))
    );
    assert_eq!(update.attributes.next_hop, Some(birds));

    // Ours to BIRD, and withdrawn again.
    let prefix = "10.98.0.0/24";
    let announce = Update {
        nlri: vec![prefix.parse().expect("prefix")],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![OUR_AS])),
            next_hop: Some(ours),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    handle.send_updates(vec![announce]).expect("session alive");
    let ctl2 = ctl.clone();
    let shown = tokio::task::spawn_blocking(move || wait_for_bird_route(&ctl2, prefix, true))
        .await
        .expect("birdc poll");
    assert!(shown.contains(&format!("AS{OUR_AS}")), "{shown}");
    let withdraw = Update {
        withdrawn: vec![prefix.parse().expect("prefix")],
        ..Update::default()
    };
    handle.send_updates(vec![withdraw]).expect("session alive");
    let ctl2 = ctl.clone();
    tokio::task::spawn_blocking(move || wait_for_bird_route(&ctl2, prefix, false))
        .await
        .expect("birdc poll");

    // BIRD goes silent (SIGSTOP): our hold timer expires and we send 4/0.
    run(&["kill", "-STOP", &bird_pid.to_string()]);
    let stopped = Instant::now();
    let ev = next_event(&mut events, "Down (silent peer)", 9, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            SessionEvent::Down {
                reason: DownReason::HoldTimerExpired,
                was_established: true,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(4),
        "{:?}",
        stopped.elapsed()
    );
    run(&["kill", "-CONT", &bird_pid.to_string()]);

    // We reconnect once BIRD is back, and BIRD saw why the first session ended.
    next_event(&mut events, "Established again", 15, |e| {
        matches!(e, SessionEvent::Established { .. })
    })
    .await;
    next_event(
        &mut events,
        "BIRD's UPDATE again",
        10,
        |e| matches!(e, SessionEvent::Update { update, .. } if update.nlri.contains(&static_route)),
    )
    .await;
    let log = std::fs::read_to_string(dir.join("bird.log")).unwrap_or_default();
    assert!(log.contains("Received: Hold timer expired"), "{log}");

    // BIRD dies without a NOTIFICATION: the kernel closes its socket, or the hold timer
    // (6 s) expires.
    run(&["kill", "-KILL", &bird_pid.to_string()]);
    let ev = next_event(&mut events, "Down", 9, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    let SessionEvent::Down {
        reason,
        was_established,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert!(was_established);
    assert!(
        matches!(reason, DownReason::TcpFailed | DownReason::HoldTimerExpired),
        "{reason:?}"
    );
    handle.stop().expect("session alive");
}

#[test]
fn bird2_ebgp_routes_both_ways_and_peer_death() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the BIRD interop test needs root in CI"
        );
        eprintln!("skipped: bird2_ebgp_routes_both_ways_and_peer_death needs root");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let lab = Lab::new();
    let (ns_a, ours, birds, dir, pid) = (
        lab.ns_a.clone(),
        lab.ours,
        lab.birds,
        lab.dir.clone(),
        lab.bird_pid(),
    );
    let started = Instant::now();
    let result = std::thread::spawn(move || {
        // setns(2) changes only this thread's namespace; the current-thread runtime keeps every
        // socket of the session on it.
        let ns = File::open(format!("/run/netns/{ns_a}")).expect("open netns");
        setns(ns, CloneFlags::CLONE_NEWNET).expect("setns into namespace A");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenario(ours, birds, dir, pid));
    })
    .join();
    if let Err(panic) = result {
        let log = std::fs::read_to_string(lab.dir.join("bird.log")).unwrap_or_default();
        eprintln!("bird.log:\n{log}");
        drop(lab);
        std::panic::resume_unwind(panic);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}
