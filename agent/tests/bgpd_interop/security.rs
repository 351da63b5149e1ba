//! Session security and limits with BIRD: TCP MD5 (RFC 2385), GTSM (RFC 5082), max-prefix
//! actions, and dynamic peers accepted from a range.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

/// Routes of protocol 98 (bgpd's) in a namespace whose prefix starts with `start`.
fn kernel_count(ns: &str, start: &str) -> usize {
    run("ip", &["-n", ns, "-4", "route", "show", "proto", "98"])
        .lines()
        .filter(|l| l.starts_with(start))
        .count()
}

fn with_extra(mut p: BgpdPeer, extra: &[&str]) -> BgpdPeer {
    p.extra = extra.iter().map(|s| s.to_string()).collect();
    p
}

/// Waits until the peer's status row satisfies `check`; the row.
fn wait_peer(
    bgpd: &Bgpd,
    address: IpAddr,
    what: &str,
    limit: Duration,
    check: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    wait_until(what, limit, || {
        let p = bgpd.peer(address)?;
        if check(&p) {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
}

/// BIRD with `password "s3cret"`: the same key on bgpd's side brings the session up and
/// routes through; a different key (SIGHUP) keeps it down and `bgp peers` says TCP MD5 may be
/// why; the right key again (SIGHUP): up.
#[test]
fn bird_md5_password_match_and_mismatch() {
    let test = "bird_md5_password_match_and_mismatch";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let mut config = bird_config(&link, false, &["10.99.99.0/24"]);
    config.protocol_extra = "password \"s3cret\";".into();
    let bird = Bird::start(&lab, "bird", &nr, config);
    let mut spec = bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]);
    let good = with_extra(peer(link.b4(), BIRD_AS), &["password: s3cret"]);
    spec.peers = vec![good.clone()];
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, spec.clone());
    bgpd.wait_established(link.b4(), SESSION_UP);
    wait_bird_route(&bird, "10.98.0.0/24", true);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", link.b4())], true);

    // A wrong key: both kernels drop the other's segments, silently.
    let mut wrong = spec.clone();
    wrong.peers = vec![with_extra(peer(link.b4(), BIRD_AS), &["password: wrong"])];
    bgpd.reload(wrong);
    let down = wait_peer(
        &bgpd,
        link.b4(),
        "the MD5 mismatch reported",
        Duration::from_secs(30),
        |p| {
            p.state != "Established"
                && p.info.as_deref().is_some_and(|i| {
                    i.contains("connect timed out") && i.contains("TCP MD5 is configured")
                })
        },
    );
    assert_eq!(down.received, 0, "{down:?}");
    // BIRD itself may call the session Established for a hold time at a time: our OPEN and
    // KEEPALIVE reach it with TTL 254, which its `multihop 2` accepts. It never gets a
    // route from us, because bgpd never leaves OpenConfirm.
    assert!(
        bird.route("10.98.0.0/24").is_err(),
        "BIRD two hops away learned bgpd's route"
    );
    bgpd.wait_kernel_route("10.99.99.0/24", &[], false);
    // Our kernel counted BIRD's connection attempts with a signature it could not verify.
    let netstat = run("ip", &["netns", "exec", &nb, "cat", "/proc/net/netstat"]);
    assert!(netstat.contains("TCPMD5Failure"), "{netstat}");

    bgpd.reload(spec);
    bgpd.wait_established(link.b4(), Duration::from_secs(30));
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", link.b4())], true);
}

/// GTSM: a directly connected BIRD with `ttl security on` and bgpd's `ttl_security: 1` make a
/// session; a BIRD two hops away (behind a router, `ttl security on; multihop 2`) arrives
/// with TTL 254 and is refused by `ttl_security: 1` (the session never comes up), and
/// accepted with `ttl_security: 2`.
#[test]
fn ttl_security_refuses_a_peer_more_hops_away() {
    let test = "ttl_security_refuses_a_peer_more_hops_away";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nx, nr, nn) = (
        lab.netns("bgpd"),
        lab.netns("router"),
        lab.netns("bird"),
        lab.netns("near"),
    );
    let (l1, l2, l3) = (lab.link(&nb, &nx), lab.link(&nx, &nr), lab.link(&nb, &nn));
    run(
        "ip",
        &[
            "netns",
            "exec",
            &nx,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    let (bgpd_addr, far) = (l1.a4(), l2.b4());
    let via1 = l1.b4().to_string();
    let via2 = l2.a4().to_string();
    run(
        "ip",
        &["-n", &nb, "route", "add", "10.0.2.0/24", "via", &via1],
    );
    run(
        "ip",
        &["-n", &nr, "route", "add", "10.0.1.0/24", "via", &via2],
    );

    let mut near_config = bird_config(&l3, false, &["10.97.0.0/24"]);
    near_config.protocol_extra = "ttl security on;".into();
    let _near = Bird::start(&lab, "near", &nn, near_config);
    let far_config = BirdConfig {
        router_id: far,
        asn: BIRD_AS,
        peers: vec![(far, bgpd_addr, BGPD_AS)],
        statics: vec![prefix("10.99.99.0/24")],
        hold_time: HOLD,
        passive: false,
        export_actions: String::new(),
        protocol_extra: "ttl security on; multihop 2;".into(),
        global_extra: String::new(),
    };
    let bird = Bird::start(&lab, "bird", &nr, far_config);

    let mut spec = bgpd_spec(&l1, far, BIRD_AS, &["10.98.0.0/24"]);
    let gtsm = |address, hops: u8| {
        with_extra(
            peer(address, BIRD_AS),
            &[format!("ttl_security: {hops}").as_str()],
        )
    };
    spec.peers = vec![gtsm(far, 1), gtsm(l3.b4(), 1)];
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, spec.clone());
    bgpd.wait_established(l3.b4(), SESSION_UP);
    let refused = wait_peer(
        &bgpd,
        far,
        "the peer two hops away refused",
        Duration::from_secs(30),
        |p| {
            // Our connects time out (BIRD's SYN-ACK is dropped); a connection BIRD opened
            // may get as far as its OPEN (queued before the accepted socket's minimum TTL
            // was set) but its KEEPALIVE is dropped, so the hold timer expires.
            // Or the OPEN is dropped too, and the session waits in OpenSent, saying why.
            p.state != "Established"
                && p.info.as_deref().is_some_and(|i| {
                    i.contains("connect timed out")
                        || i.starts_with("hold timer expired")
                        || i.contains("TTL security: a peer more than 1 hop away is not heard")
                })
        },
    );
    assert_eq!(refused.received, 0, "{refused:?}");
    // And it stays so for longer than a hold time.
    std::thread::sleep(Duration::from_secs(u64::from(HOLD) + 1));
    let still = bgpd.peer(far).expect("far peer");
    assert_ne!(still.state, "Established", "{still:?}");
    assert_eq!(still.received, 0, "{still:?}");
    // BIRD itself may call the session Established for a hold time at a time: our OPEN and
    // KEEPALIVE reach it with TTL 254, which its `multihop 2` accepts. It never gets a
    // route from us, because bgpd never leaves OpenConfirm.
    assert!(
        bird.route("10.98.0.0/24").is_err(),
        "BIRD two hops away learned bgpd's route"
    );

    spec.peers = vec![gtsm(far, 2), gtsm(l3.b4(), 1)];
    bgpd.reload(spec);
    bgpd.wait_established(far, Duration::from_secs(30));
    bgpd.wait_route("10.99.99.0/24", &far.to_string(), true);
    wait_until("BIRD two hops away learns bgpd's route", SESSION_UP, || {
        bird.route("10.98.0.0/24")
    });
    // The near session was not touched by the reload.
    let near = bgpd.peer(l3.b4()).expect("near peer");
    assert_eq!(near.state, "Established", "{near:?}");
}

/// BIRD announces five prefixes to a peer limited to three: `warn` keeps all five and says
/// so, `discard` keeps three, `reset` ends the session with Cease 6/1, which BIRD reports.
#[test]
fn max_prefixes_warn_discard_and_reset_with_bird() {
    let test = "max_prefixes_warn_discard_and_reset_with_bird";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let statics = [
        "10.99.1.0/24",
        "10.99.2.0/24",
        "10.99.3.0/24",
        "10.99.4.0/24",
        "10.99.5.0/24",
    ];
    let bird = Bird::start(&lab, "bird", &nr, bird_config(&link, false, &statics));
    let limited = |action: &str| {
        let mut spec = bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]);
        spec.peers = vec![with_extra(
            peer(link.b4(), BIRD_AS),
            &[format!("max_prefixes: {{limit: 3, action: {action}}}").as_str()],
        )];
        spec
    };
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, limited("warn"));
    let warned = wait_peer(
        &bgpd,
        link.b4(),
        "warn: all five kept, the excess reported",
        SESSION_UP,
        |p| p.state == "Established" && p.received == 5,
    );
    assert_eq!(
        warned.info.as_deref(),
        Some("max prefixes 3 exceeded: 5 announced, warning only"),
        "{warned:?}"
    );
    wait_until(
        "five routes in the kernel",
        Duration::from_secs(10),
        || match kernel_count(&nb, "10.99.") {
            5 => Ok(()),
            n => Err(format!("{n} routes")),
        },
    );

    // The peer's settings change: its session restarts with the new limit.
    bgpd.reload(limited("discard"));
    let discarded = wait_peer(&bgpd, link.b4(), "discard: three kept", SESSION_UP, |p| {
        p.state == "Established"
            && p.received == 3
            && p.info.as_deref()
                == Some("max prefixes 3 exceeded: 5 announced, further prefixes discarded")
    });
    assert_eq!(discarded.accepted, 3, "{discarded:?}");
    wait_until(
        "three routes in the kernel",
        Duration::from_secs(10),
        || match kernel_count(&nb, "10.99.") {
            3 => Ok(()),
            n => Err(format!("{n} routes")),
        },
    );

    bgpd.reload(limited("reset"));
    wait_peer(&bgpd, link.b4(), "reset: Cease 6/1 sent", SESSION_UP, |p| {
        p.info
            .as_deref()
            .is_some_and(|i| i.contains("NOTIFICATION 6/1 sent"))
    });
    wait_until("BIRD reports the Cease", Duration::from_secs(10), || {
        let log = bird.log_text();
        if log.contains("Maximum number of prefixes reached") {
            Ok(())
        } else {
            Err(log)
        }
    });
    // Between resets nothing of BIRD's stays installed for long; after a reset none is.
    wait_until(
        "BIRD's routes removed",
        Duration::from_secs(10),
        || match kernel_count(&nb, "10.99.") {
            0 => Ok(()),
            n => Err(format!("{n} routes")),
        },
    );
}

/// `dynamic_peers: [{prefix: 10.0.1.0/24, asn: 65002}]` and no `peers`: BIRD on 10.0.1.2
/// connects and is accepted, listed in `bgp peers` and its route installed; BIRD on
/// 10.0.2.2, outside the range, is refused at accept time and never listed.
#[test]
fn dynamic_peer_from_a_range_accepted_and_outside_refused() {
    let test = "dynamic_peer_from_a_range_accepted_and_outside_refused";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, n1, n2) = (lab.netns("bgpd"), lab.netns("inside"), lab.netns("outside"));
    let (l1, l2) = (lab.link(&nb, &n1), lab.link(&nb, &n2));
    let _inside = Bird::start(
        &lab,
        "inside",
        &n1,
        bird_config(&l1, false, &["10.99.1.0/24"]),
    );
    let outside = Bird::start(
        &lab,
        "outside",
        &n2,
        bird_config(&l2, false, &["10.99.2.0/24"]),
    );
    let mut spec = bgpd_spec(&l1, l1.b4(), BIRD_AS, &["10.98.0.0/24"]);
    spec.peers = Vec::new();
    spec.extra = vec![
        "dynamic_peers:".into(),
        format!("  - {{prefix: 10.0.1.0/24, asn: {BIRD_AS}}}"),
    ];
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);

    let up = bgpd.wait_established(l1.b4(), SESSION_UP);
    assert_eq!(up.asn, BIRD_AS);
    assert_eq!(up.peer_type, "dynamic");
    bgpd.wait_kernel_route("10.99.1.0/24", &[&format!("via {}", l1.b4())], true);
    // The outside BIRD keeps trying (connect retry 2 s); each attempt is refused.
    wait_until(
        "a connection from outside the range refused",
        Duration::from_secs(15),
        || {
            let log = bgpd.proc.log_text();
            let refused = log.lines().any(|l| {
                l.contains("not a neighbour refused") && l.contains(&format!("{}:", l2.b4()))
            });
            if refused {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let peers = bgpd.peers().expect("peers");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_ne!(outside.peer_state(0), "Established");
    assert!(kernel_routes(&nb, "10.99.2.0/24").is_empty());
}
