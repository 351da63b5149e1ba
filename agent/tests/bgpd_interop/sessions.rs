//! Sessions under faults and changes: a silent peer (hold timer), a killed and restarted peer, a
//! wrong peer AS, peers removed and added by SIGHUP, hold time 0, bgpd itself crashing.

use std::time::{Duration, Instant};

use super::harness::*;
use super::*;

/// BIRD goes silent (SIGSTOP): bgpd's hold timer expires within the negotiated hold time,
/// the peer's status says so, and BIRD's routes leave the kernel; after SIGCONT the session
/// and the routes come back.
#[test]
fn silent_bird_hold_timer_expires_and_session_recovers() {
    let test = "silent_bird_hold_timer_expires_and_session_recovers";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let bird = Bird::start(
        &lab,
        "bird",
        &nr,
        bird_config(&link, false, &["10.99.99.0/24"]),
    );
    let bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]),
    );
    bgpd.wait_established(link.b4(), SESSION_UP);
    let via = format!("via {}", link.b4());
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via], true);

    bird.proc.freeze();
    let stopped = Instant::now();
    // The status keeps the reason while the session waits to reconnect.
    let down = wait_until(
        "bgpd's session down with \"hold timer expired\"",
        Duration::from_secs(u64::from(HOLD) + 3),
        || {
            let p = bgpd.peer(link.b4())?;
            let info = p.info.clone().unwrap_or_default().to_lowercase();
            if p.state != "Established" && info.contains("hold timer expired") {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        },
    );
    let after = stopped.elapsed();
    eprintln!("{test}: session down {after:?} after SIGSTOP (hold time {HOLD} s)");
    // Keepalives come every HOLD/3 s, so the last one was at most that long before SIGSTOP.
    assert!(
        after >= Duration::from_secs(u64::from(HOLD - HOLD / 3 - 1)),
        "down after {after:?}: too early for the hold timer: {down:?}"
    );
    bgpd.wait_kernel_route("10.99.99.0/24", &[], false);
    bgpd.wait_route("10.99.99.0/24", &link.b4().to_string(), false);
    // bgpd tries again (BIRD's kernel still completes the TCP handshake, so it gets as far as
    // OpenSent); the status keeps the reason of the failure while it does.
    wait_until(
        "the reason kept while retrying",
        Duration::from_secs(10),
        || {
            let p = bgpd.peer(link.b4())?;
            let info = p.info.clone().unwrap_or_default();
            if p.state != "Idle" && p.state != "Established" && info.contains("hold timer expired")
            {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    );

    bird.proc.signal("CONT");
    bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via], true);
    wait_bird_route(&bird, "10.98.0.0/24", true);
    // BIRD learnt why: our NOTIFICATION 4/0.
    let log = bird.log_text();
    assert!(log.contains("Received: Hold timer expired"), "{log}");
}

/// BIRD is killed (no NOTIFICATION) and started again: bgpd notices, removes its routes,
/// and re-establishes the session; routes come back both ways.
#[test]
fn bird_restart_session_and_routes_come_back() {
    let test = "bird_restart_session_and_routes_come_back";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let mut bird = Bird::start(
        &lab,
        "bird",
        &nr,
        bird_config(&link, false, &["10.99.99.0/24"]),
    );
    let bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]),
    );
    let first = bgpd.wait_established(link.b4(), SESSION_UP);
    let via = format!("via {}", link.b4());
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via], true);
    wait_bird_route(&bird, "10.98.0.0/24", true);

    bird.proc.kill();
    let down = wait_until(
        "bgpd sees BIRD gone",
        Duration::from_secs(u64::from(HOLD) + 3),
        || {
            let p = bgpd.peer(link.b4())?;
            if p.state == "Established" {
                Err(format!("{p:?}"))
            } else {
                Ok(p)
            }
        },
    );
    assert!(
        !down.info.clone().unwrap_or_default().is_empty(),
        "no reason given: {down:?}"
    );
    bgpd.wait_kernel_route("10.99.99.0/24", &[], false);

    let restarted = Instant::now();
    bird.restart();
    let again = bgpd.wait_established(link.b4(), SESSION_UP);
    eprintln!(
        "{test}: Established {:?} after BIRD restarted",
        restarted.elapsed()
    );
    let (t0, t1) = (since_secs(&first.since), since_secs(&again.since));
    assert!(
        t0.zip(t1).is_some_and(|(a, b)| b > a),
        "since not renewed: {first:?} {again:?}"
    );
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via], true);
    wait_bird_route(&bird, "10.98.0.0/24", true);
}

/// A wrong peer AS in bgpd's file: the session never comes up and `brindlectl bgp peers`
/// says why, naming both numbers; fixing the file with SIGHUP brings it up.
#[test]
fn wrong_peer_as_is_reported_and_fixed_by_sighup() {
    let test = "wrong_peer_as_is_reported_and_fixed_by_sighup";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let _bird = Bird::start(
        &lab,
        "bird",
        &nr,
        bird_config(&link, false, &["10.99.99.0/24"]),
    );
    let mut bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS + 1, &[]),
    );
    let refused = wait_until("bad peer AS in the status", SESSION_UP, || {
        let p = bgpd.peer(link.b4())?;
        let info = p.info.clone().unwrap_or_default().to_lowercase();
        if info.contains("bad peer as") && info.contains(&BIRD_AS.to_string()) {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    });
    assert_ne!(refused.state, "Established", "{refused:?}");
    assert_eq!(refused.asn, BIRD_AS + 1, "{refused:?}");

    let mut spec = bgpd.spec.clone();
    spec.peers = vec![peer(link.b4(), BIRD_AS)];
    bgpd.reload(spec);
    bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", link.b4())], true);
}

/// SIGHUP with the peer list changed: the removed peer gets a Cease and its routes leave
/// the kernel; the added peer (refused before, as an unknown address) comes up and its routes
/// are installed.
#[test]
fn sighup_removes_one_bird_and_adds_another() {
    let test = "sighup_removes_one_bird_and_adds_another";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, n1, n2) = (lab.netns("bgpd"), lab.netns("bird1"), lab.netns("bird2"));
    let (l1, l2) = (lab.link(&nb, &n1), lab.link(&nb, &n2));
    let bird1 = Bird::start(
        &lab,
        "bird1",
        &n1,
        bird_config(&l1, false, &["10.99.1.0/24"]),
    );
    let bird2 = Bird::start(
        &lab,
        "bird2",
        &n2,
        bird_config(&l2, false, &["10.99.2.0/24"]),
    );
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, bgpd_spec(&l1, l1.b4(), BIRD_AS, &[]));
    bgpd.wait_established(l1.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.1.0/24", &[&format!("via {}", l1.b4())], true);
    assert_ne!(bird2.peer_state(0), "Established");

    let mut spec = bgpd.spec.clone();
    spec.peers = vec![peer(l2.b4(), BIRD_AS)];
    bgpd.reload(spec);
    bgpd.wait_established(l2.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.2.0/24", &[&format!("via {}", l2.b4())], true);
    bgpd.wait_kernel_route("10.99.1.0/24", &[], false);
    let peers = bgpd.peers().expect("peers");
    assert!(
        peers.iter().all(|p| p.address != l1.b4().to_string()),
        "removed peer still listed: {peers:?}"
    );
    wait_until("BIRD 1 told by a Cease", Duration::from_secs(10), || {
        let log = bird1.log_text();
        if log.contains("Received: Peer de-configured")
            || log.contains("Received: Administrative shutdown")
        {
            Ok(())
        } else {
            Err(log)
        }
    });
}

/// BIRD offers hold time 0 (RFC 4271 §4.2: no KEEPALIVEs, no hold timer): the session comes
/// up with routes and stays up although no KEEPALIVE ever arrives.
#[test]
fn bird_hold_time_zero_session_stays_up() {
    let test = "bird_hold_time_zero_session_stays_up";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let mut config = bird_config(&link, false, &["10.99.99.0/24"]);
    config.hold_time = 0;
    let bird = Bird::start(&lab, "bird", &nr, config);
    let bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]),
    );
    let up = bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", link.b4())], true);
    wait_bird_route(&bird, "10.98.0.0/24", true);

    // Watch the session for a while: a hold timer of 0 s armed by mistake, or one of bgpd's
    // own 90 s, would end it; "stays up" can only be seen over time.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        let p = bgpd.peer(link.b4()).expect("peer");
        assert_eq!(p.state, "Established", "{p:?}");
        let (t0, t1) = (since_secs(&up.since), since_secs(&p.since));
        assert!(
            t0.zip(t1).is_some_and(|(a, b)| (a - b).abs() <= 1),
            "the session was reset: {up:?} -> {p:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // RFC 4271 §4.4: with a negotiated hold time of 0, KEEPALIVEs MUST NOT be sent (the one
    // that confirms the OPEN comes before BIRD logs the session as established).
    let log = bird.log_text();
    let after_up = log
        .split("BGP session established")
        .nth(1)
        .unwrap_or_default();
    assert!(!after_up.contains("Got KEEPALIVE"), "{log}");
}

/// brindle-bgpd is killed with SIGKILL (its routes stay in the kernel, its socket file stays)
/// and started again after BIRD dropped one route meanwhile: the new bgpd serves its status,
/// the session comes back at once, the route still announced is kept, and the stale one is
/// removed by the first full resync, as soon as BIRD has sent End-of-RIB (not after
/// `bgpd_install::FIRST_RESYNC`, the upper bound of 60 s).
#[test]
fn bgpd_crash_and_restart_removes_stale_routes() {
    let test = "bgpd_crash_and_restart_removes_stale_routes";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let mut bird = Bird::start(
        &lab,
        "bird",
        &nr,
        bird_config(&link, false, &["10.99.99.0/24", "10.99.98.0/24"]),
    );
    let mut bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]),
    );
    bgpd.wait_established(link.b4(), SESSION_UP);
    let via = format!("via {}", link.b4());
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via], true);
    bgpd.wait_kernel_route("10.99.98.0/24", &[&via], true);

    // Stopped first, so that BIRD's withdrawal reaches no bgpd: the route goes stale.
    bgpd.proc.freeze();
    bird.reconfigure(bird_config(&link, false, &["10.99.98.0/24"]));
    bgpd.crash();
    assert!(
        !kernel_routes(&nb, "10.99.99.0/24").trim().is_empty(),
        "a killed bgpd cannot remove routes"
    );
    let restarted = Instant::now();
    bgpd.restart();
    bgpd.wait_established(link.b4(), SESSION_UP);
    wait_bird_route(&bird, "10.98.0.0/24", true);
    eprintln!(
        "{test}: session and routes back {:?} after the restart",
        restarted.elapsed()
    );
    // The route still announced was never removed from the kernel.
    assert!(!kernel_routes(&nb, "10.99.98.0/24").trim().is_empty());
    bgpd.wait_kernel_route_within("10.99.99.0/24", &[], false, Duration::from_secs(20));
    eprintln!(
        "{test}: stale route removed {:?} after the restart",
        restarted.elapsed()
    );
    assert!(!kernel_routes(&nb, "10.99.98.0/24").trim().is_empty());
}
