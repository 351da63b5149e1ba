//! Graceful restart (RFC 4724) with BIRD as the helper: brindle-bgpd restarts and traffic
//! between the hosts behind the two routers does not stop.

use std::time::{Duration, Instant};

use super::harness::*;
use super::*;

/// host A ─ bgpd ─ BIRD ─ host B. bgpd announces A's network, BIRD B's; BIRD installs what
/// it learns in its kernel (`protocol kernel`), bgpd with `install_routes`. With
/// `graceful_restart` on bgpd's side and `graceful restart on` on BIRD's, bgpd is stopped
/// (SIGTERM) and started again while A pings B every 50 ms: BIRD keeps bgpd's route in its
/// table and kernel while bgpd is away, bgpd's routes stay in its kernel, the session comes
/// back and not one ping is lost.
#[test]
fn bgpd_graceful_restart_with_bird_as_helper_loses_no_ping() {
    let test = "bgpd_graceful_restart_with_bird_as_helper_loses_no_ping";
    let Some(bins) = binaries(test, &["bird", "birdc", "ping"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let (ha, hb) = (lab.netns("hosta"), lab.netns("hostb"));
    let la = lab.link(&nb, &ha); // 10.0.1.0/24
    let lr = lab.link(&nb, &nr); // 10.0.2.0/24
    let lb = lab.link(&nr, &hb); // 10.0.3.0/24
    for ns in [&nb, &nr] {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
    }
    run(
        "ip",
        &[
            "-n",
            &ha,
            "route",
            "add",
            "default",
            "via",
            &la.a4().to_string(),
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &hb,
            "route",
            "add",
            "default",
            "via",
            &lb.a4().to_string(),
        ],
    );

    let mut config = bird_config(&lr, false, &["10.0.3.0/24"]);
    config.protocol_extra = "graceful restart on; graceful restart time 60;".into();
    config.global_extra = "protocol kernel { ipv4 { export where source = RTS_BGP; }; }\n".into();
    let bird = Bird::start(&lab, "bird", &nr, config);
    let mut spec = bgpd_spec(&lr, lr.b4(), BIRD_AS, &["10.0.1.0/24"]);
    spec.extra = vec!["graceful_restart: {enabled: true, restart_time: 60}".into()];
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(lr.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.0.3.0/24", &[&format!("via {}", lr.b4())], true);
    let bird_kernel = || run("ip", &["-n", &nr, "route", "show", "10.0.1.0/24"]);
    wait_until(
        "bgpd's route in BIRD's kernel",
        Duration::from_secs(15),
        || {
            let text = bird_kernel();
            (!text.trim().is_empty()).then_some(()).ok_or(text)
        },
    );
    let ping_once = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ha, "ping", "-c", "1", "-W", "1"])
            .arg(lb.b4().to_string())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    wait_until("A reaches B", Duration::from_secs(15), || {
        ping_once().then_some(()).ok_or("no answer".to_string())
    });

    // 15 s of pings, 50 ms apart, around the restart.
    let mut ping = Proc::spawn(
        "ping",
        &ha,
        &[
            "ping",
            "-n",
            "-i",
            "0.05",
            "-c",
            "300",
            "-W",
            "1",
            &lb.b4().to_string(),
        ],
        &[],
        lab.path("ping.log"),
    );
    bgpd.proc.signal("TERM");
    assert_eq!(bgpd.proc.wait_exit(Duration::from_secs(10)), Some(0));
    let stopped = Instant::now();
    assert!(
        !kernel_routes(&nb, "10.0.3.0/24").trim().is_empty(),
        "graceful restart: bgpd's routes stay in the kernel"
    );
    wait_until("BIRD notices bgpd is gone", Duration::from_secs(10), || {
        let state = bird.peer_state(0);
        (state != "Established").then_some(()).ok_or(state)
    });
    // BIRD, the helper, keeps the route (stale) in its table and kernel.
    assert!(
        bird.route("10.0.1.0/24").is_ok(),
        "{:?}",
        bird.route("10.0.1.0/24")
    );
    assert!(
        !bird_kernel().trim().is_empty(),
        "BIRD removed bgpd's route"
    );
    let log = bird.log_text();
    assert!(
        !log.contains("Received: Administrative shutdown"),
        "bgpd sent a Cease: {log}"
    );

    bgpd.restart();
    bgpd.wait_established(lr.b4(), SESSION_UP);
    eprintln!(
        "{test}: session back {:?} after the stop",
        stopped.elapsed()
    );
    wait_bird_route(&bird, "10.0.1.0/24", true);
    bgpd.wait_route("10.0.3.0/24", &lr.b4().to_string(), true);

    assert!(
        ping.wait_exit(Duration::from_secs(40)).is_some(),
        "ping did not finish"
    );
    let out = ping.log_text();
    let summary = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {out}"))
        .to_string();
    eprintln!("{test}: {summary}");
    assert!(
        summary.starts_with("300 packets transmitted, 300 received"),
        "pings lost across the restart: {summary}"
    );
    // Still the route it was, and BIRD's still installed after bgpd's first resync.
    bgpd.wait_kernel_route("10.0.3.0/24", &[&format!("via {}", lr.b4())], true);
    assert!(!bird_kernel().trim().is_empty());
}

/// bgpd as the helper of a restarting GoBGP (graceful restart on, restart time 8 s): gobgpd
/// is killed, so its connection closes without a NOTIFICATION. bgpd keeps its routes (RIB
/// and kernel) while it is away; when it is back, the route it announces again stays and the
/// one it does not is removed at its End-of-RIB. Killed again and not restarted, its routes
/// are removed once its restart time is over.
#[test]
fn bgpd_keeps_a_restarting_gobgps_routes_until_end_of_rib_or_restart_time() {
    let test = "bgpd_keeps_a_restarting_gobgps_routes_until_end_of_rib_or_restart_time";
    let Some(bins) = binaries(test, &["gobgpd", "gobgp"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, ng) = (lab.netns("bgpd"), lab.netns("gobgp"));
    let link = lab.link(&nb, &ng);
    let mut gobgp = Gobgp::start(
        &lab,
        "gobgp",
        &ng,
        &GobgpConfig {
            router_id: link.b4(),
            asn: BGPD_AS,
            local: link.b4(),
            peers: vec![(link.a4(), BGPD_AS)],
            hold_time: HOLD,
            neighbor_extra: "  [neighbors.graceful-restart.config]\n    enabled = true\n    \
                restart-time = 8\n  [neighbors.afi-safis.mp-graceful-restart.config]\n    \
                enabled = true\n"
                .into(),
        },
    );
    let bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BGPD_AS, &["10.98.0.0/24"]),
    );
    bgpd.wait_established(link.b4(), SESSION_UP);
    let via = format!("via {}", link.b4());
    for p in ["10.9.0.0/24", "10.9.1.0/24"] {
        gobgp.cli(&["global", "rib", "add", p]);
        bgpd.wait_kernel_route(p, &[&via], true);
    }
    let wait_down = |bgpd: &Bgpd| {
        wait_until("bgpd sees GoBGP gone", Duration::from_secs(10), || {
            let peer = bgpd.peer(link.b4())?;
            (peer.state != "Established")
                .then_some(())
                .ok_or(peer.state)
        })
    };

    // Killed: the routes stay, in the RIB and the kernel.
    gobgp.proc.kill();
    wait_down(&bgpd);
    for p in ["10.9.0.0/24", "10.9.1.0/24"] {
        assert!(!kernel_routes(&nb, p).trim().is_empty(), "{p} removed");
        assert!(
            bgpd.routes()
                .expect("routes")
                .iter()
                .any(|r| r.prefix == p && r.best),
            "{p} not in bgpd's RIB"
        );
    }

    // Back, announcing one of the two again: that one stays, the other goes at End-of-RIB.
    gobgp.restart();
    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.9.1.0/24", &[], false);
    bgpd.wait_kernel_route("10.9.0.0/24", &[&via], true);

    // Killed for good: removed when the restart time (8 s) is over, not before.
    gobgp.proc.kill();
    let killed = Instant::now();
    wait_down(&bgpd);
    assert!(!kernel_routes(&nb, "10.9.0.0/24").trim().is_empty());
    bgpd.wait_kernel_route_within("10.9.0.0/24", &[], false, Duration::from_secs(20));
    let after = killed.elapsed();
    eprintln!("{test}: stale route removed {after:?} after the kill");
    assert!(after >= Duration::from_secs(6), "removed after {after:?}");
}
