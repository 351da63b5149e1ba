//! BIRD 2 as an eBGP peer: routes, withdrawals and attributes both ways over IPv4 and IPv6
//! sessions, 4-octet AS, route refresh, AS-loop refusal, ECMP from two BIRDs, thousands of routes.

use std::time::{Duration, Instant};

use super::harness::*;
use super::*;

/// BIRD 2 as an eBGP peer over IPv4: routes both ways with the AS_PATH and NEXT_HOP eBGP
/// asks for, BIRD's routes in the kernel, withdrawals both ways, a SIGHUP that changes only
/// what it must, and a clean SIGTERM.
#[test]
fn bird_ebgp_ipv4_routes_and_withdrawals_both_ways() {
    let test = "bird_ebgp_ipv4_routes_and_withdrawals_both_ways";
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
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24", "10.98.1.0/24"]),
    );
    let up = bgpd.wait_established(link.b4(), SESSION_UP);
    assert_eq!(up.asn, BIRD_AS);

    // Ours in BIRD: AS_PATH is our AS alone, NEXT_HOP ourselves. (BIRD gives every route it
    // imports a LOCAL_PREF, so its absence on the wire is checked with GoBGP below.)
    for p in ["10.98.0.0/24", "10.98.1.0/24"] {
        let shown = wait_bird_route(&bird, p, true);
        assert!(
            shown.contains(&format!("BGP.as_path: {BGPD_AS}\n")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("BGP.next_hop: {}", link.a4())),
            "{shown}"
        );
        assert!(shown.contains("BGP.origin: IGP"), "{shown}");
    }

    // BIRD's in bgpd's RIB and in its kernel, via BIRD, with Brindle's rtproto.
    for p in ["10.99.99.0/24", "10.99.98.0/24"] {
        let route = bgpd
            .wait_route(p, &link.b4().to_string(), true)
            .expect("present");
        assert_eq!(route.as_path, vec![BIRD_AS], "{route:?}");
        assert_eq!(route.next_hops, vec![link.b4().to_string()], "{route:?}");
        assert!(route.best, "{route:?}");
        bgpd.wait_kernel_route(p, &[&format!("via {}", link.b4())], true);
    }
    let local = bgpd
        .wait_route("10.98.0.0/24", "local", true)
        .expect("present");
    assert!(local.as_path.is_empty() && local.best, "{local:?}");
    // Our own prefixes are not installed as routes via a peer.
    assert!(kernel_routes(&nb, "10.98.0.0/24").trim().is_empty());

    wait_until("per-peer counts", Duration::from_secs(10), || {
        let p = bgpd.peer(link.b4())?;
        if p.received >= 2 && p.accepted >= 2 && p.advertised >= 2 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });

    // Withdrawal from bgpd: SIGHUP with 10.98.0.0/24 removed and 10.98.2.0/24 added; the
    // session is not reset and 10.98.1.0/24 stays.
    let mut spec = bgpd.spec.clone();
    spec.originate = vec!["10.98.1.0/24".into(), "10.98.2.0/24".into()];
    bgpd.reload(spec);
    wait_bird_route(&bird, "10.98.0.0/24", false);
    wait_bird_route(&bird, "10.98.2.0/24", true);
    assert!(bird.route("10.98.1.0/24").is_ok(), "kept prefix withdrawn");
    bgpd.wait_route("10.98.0.0/24", "local", false);
    let after = bgpd.peer(link.b4()).expect("peer");
    assert_eq!(after.state, "Established");
    // `since` is whole seconds computed from the session's age: equal within a second.
    let (t0, t1) = (since_secs(&up.since), since_secs(&after.since));
    assert!(
        t0.zip(t1).is_some_and(|(a, b)| (a - b).abs() <= 1),
        "SIGHUP reset the session: {up:?} -> {after:?}"
    );

    // Withdrawal from BIRD: 10.99.99.0/24 leaves its configuration.
    bird.reconfigure(bird_config(&link, false, &["10.99.98.0/24"]));
    bgpd.wait_route("10.99.99.0/24", &link.b4().to_string(), false);
    bgpd.wait_kernel_route("10.99.99.0/24", &[], false);
    assert!(!kernel_routes(&nb, "10.99.98.0/24").trim().is_empty());

    // SIGTERM: bgpd exits promptly and successfully, and BIRD sees the session end.
    bgpd.proc.signal("TERM");
    let code = bgpd.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "brindle-bgpd's exit on SIGTERM");
    assert!(
        kernel_routes(&nb, "10.99.98.0/24").trim().is_empty(),
        "installed routes left after SIGTERM:\n{}",
        all_routes(&nb, "-4")
    );
    wait_until(
        "BIRD sees the session closed",
        Duration::from_secs(10),
        || {
            let state = bird.peer_state(0);
            if state == "Established" {
                Err(state)
            } else {
                Ok(())
            }
        },
    );
    let log = bird.log_text();
    assert!(
        log.contains("Received: Administrative shutdown") || log.contains("Received: Cease"),
        "{log}"
    );
}

/// IPv6 with BIRD over an IPv6 session (MP_REACH_NLRI / MP_UNREACH_NLRI): routes both ways,
/// BIRD's in the kernel, withdrawals both ways.
#[test]
fn bird_ebgp_ipv6_routes_both_ways() {
    let test = "bird_ebgp_ipv6_routes_both_ways";
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
        bird_config(&link, true, &["fd00:99::/64", "fd00:99:1::/64"]),
    );
    let mut spec = bgpd_spec(&link, link.b6(), BIRD_AS, &["fd00:98::/64"]);
    spec.listen = Some("[::]:179".into());
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(link.b6(), SESSION_UP);

    let shown = wait_bird_route(&bird, "fd00:98::/64", true);
    assert!(
        shown.contains(&format!("BGP.as_path: {BGPD_AS}\n")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("BGP.next_hop: {}", link.a6())),
        "{shown}"
    );

    for p in ["fd00:99::/64", "fd00:99:1::/64"] {
        let route = bgpd
            .wait_route(p, &link.b6().to_string(), true)
            .expect("present");
        assert_eq!(route.as_path, vec![BIRD_AS], "{route:?}");
        bgpd.wait_kernel_route(p, &["via"], true);
    }
    let kernel = kernel_routes(&nb, "fd00:99::/64");
    assert!(
        kernel.contains(&format!("via {}", link.b6())) || kernel.contains("via fe80:"),
        "{kernel}"
    );

    bird.reconfigure(bird_config(&link, true, &["fd00:99:1::/64"]));
    bgpd.wait_kernel_route("fd00:99::/64", &[], false);
    assert!(!kernel_routes(&nb, "fd00:99:1::/64").trim().is_empty());
    let mut spec = bgpd.spec.clone();
    spec.originate.clear();
    bgpd.reload(spec);
    wait_bird_route(&bird, "fd00:98::/64", false);
}

/// 4-octet AS numbers (RFC 6793) on both sides, with bgpd passive: BIRD connects, and each
/// side's AS_PATH holds the other's 4-octet AS.
#[test]
fn bird_four_octet_as_with_passive_bgpd() {
    let test = "bird_four_octet_as_with_passive_bgpd";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    const OURS: u32 = 4_200_000_001;
    const THEIRS: u32 = 4_200_000_002;
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let mut config = bird_config(&link, false, &["10.99.99.0/24"]);
    config.asn = THEIRS;
    config.peers = vec![(link.b4(), link.a4(), OURS)];
    let bird = Bird::start(&lab, "bird", &nr, config);
    let mut spec = bgpd_spec(&link, link.b4(), THEIRS, &["10.98.0.0/24"]);
    spec.asn = OURS;
    spec.peers = vec![BgpdPeer {
        passive: true,
        ..peer(link.b4(), THEIRS)
    }];
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    let up = bgpd.wait_established(link.b4(), SESSION_UP);
    assert_eq!(up.asn, THEIRS);

    let shown = wait_bird_route(&bird, "10.98.0.0/24", true);
    assert!(shown.contains(&format!("BGP.as_path: {OURS}\n")), "{shown}");
    let route = bgpd
        .wait_route("10.99.99.0/24", &link.b4().to_string(), true)
        .expect("present");
    assert_eq!(route.as_path, vec![THEIRS], "{route:?}");
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", link.b4())], true);
}

/// BIRD asks for a route refresh (`birdc reload in`, RFC 2918 / RFC 7313): bgpd sends its
/// routes again, BIRD keeps them, and the session stays up.
#[test]
fn bird_route_refresh_keeps_our_routes() {
    let test = "bird_route_refresh_keeps_our_routes";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let bird = Bird::start(&lab, "bird", &nr, bird_config(&link, false, &[]));
    let bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24", "10.98.1.0/24"]),
    );
    let up = bgpd.wait_established(link.b4(), SESSION_UP);
    wait_bird_route(&bird, "10.98.0.0/24", true);
    wait_bird_route(&bird, "10.98.1.0/24", true);

    let out = birdc(&bird.ctl, &["reload", "in", "peer0"]).unwrap_or_default();
    assert!(out.contains("peer0: reloading"), "birdc reload in: {out}");
    // BIRD's packet log: the refresh it sent, then bgpd's UPDATEs answering it.
    wait_until(
        "bgpd answers the ROUTE-REFRESH",
        Duration::from_secs(10),
        || {
            let log = bird.log_text();
            let answer = log
                .split("Sending ROUTE-REFRESH")
                .nth(1)
                .ok_or_else(|| log.clone())?;
            if answer.contains("Got UPDATE") {
                Ok(())
            } else {
                Err(log.clone())
            }
        },
    );
    wait_bird_route(&bird, "10.98.0.0/24", true);
    wait_bird_route(&bird, "10.98.1.0/24", true);
    let after = bgpd.peer(link.b4()).expect("peer");
    assert_eq!(after.state, "Established", "{after:?}");
    let (t0, t1) = (since_secs(&up.since), since_secs(&after.since));
    assert!(
        t0.zip(t1).is_some_and(|(a, b)| (a - b).abs() <= 1),
        "the refresh reset the session: {up:?} -> {after:?}"
    );
}

/// A route whose AS_PATH holds bgpd's own AS (RFC 4271 §9.1.2): received but not accepted,
/// shown with its reason, never installed; BIRD's other route is.
#[test]
fn bird_route_with_our_as_in_the_path_is_refused() {
    let test = "bird_route_with_our_as_in_the_path_is_refused";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let mut config = bird_config(&link, false, &["10.99.99.0/24", "10.99.98.0/24"]);
    config.export_actions = format!("if net = 10.99.99.0/24 then bgp_path.prepend({BGPD_AS});");
    let _bird = Bird::start(&lab, "bird", &nr, config);
    let bgpd = Bgpd::start(&lab, &bins, &nb, bgpd_spec(&link, link.b4(), BIRD_AS, &[]));
    bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.98.0/24", &[&format!("via {}", link.b4())], true);

    let peer = wait_until(
        "both routes received, one accepted",
        Duration::from_secs(10),
        || {
            let p = bgpd.peer(link.b4())?;
            if p.received == 2 && p.accepted == 1 {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        },
    );
    assert_eq!(peer.state, "Established", "{peer:?}");
    let routes = bgpd.routes().expect("routes");
    let looped = routes
        .iter()
        .find(|r| r.prefix == "10.99.99.0/24")
        .expect("the refused route is listed with its reason");
    assert!(!looped.best, "{looped:?}");
    assert_eq!(looped.as_path, vec![BIRD_AS, BGPD_AS], "{looped:?}");
    assert!(looped.reason.contains("AS loop"), "{looped:?}");
    assert!(kernel_routes(&nb, "10.99.99.0/24").trim().is_empty());
}

/// Two BIRD peers (same AS) announce the same prefix with equal attributes: bgpd installs one
/// kernel route with both next hops; when one withdraws, the route keeps the other.
#[test]
fn two_birds_same_prefix_make_an_ecmp_kernel_route() {
    let test = "two_birds_same_prefix_make_an_ecmp_kernel_route";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, n1, n2) = (lab.netns("bgpd"), lab.netns("bird1"), lab.netns("bird2"));
    let (l1, l2) = (lab.link(&nb, &n1), lab.link(&nb, &n2));
    let _bird1 = Bird::start(
        &lab,
        "bird1",
        &n1,
        bird_config(&l1, false, &["10.99.99.0/24"]),
    );
    let mut bird2 = Bird::start(
        &lab,
        "bird2",
        &n2,
        bird_config(&l2, false, &["10.99.99.0/24"]),
    );
    let mut spec = bgpd_spec(&l1, l1.b4(), BIRD_AS, &[]);
    spec.peers.push(peer(l2.b4(), BIRD_AS));
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(l1.b4(), SESSION_UP);
    bgpd.wait_established(l2.b4(), SESSION_UP);

    let (via1, via2) = (
        format!("nexthop via {}", l1.b4()),
        format!("nexthop via {}", l2.b4()),
    );
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via1, &via2], true);
    let best = wait_until(
        "one best route with two next hops",
        Duration::from_secs(10),
        || {
            let routes = bgpd.routes()?;
            routes
                .iter()
                .find(|r| r.prefix == "10.99.99.0/24" && r.best && r.next_hops.len() == 2)
                .cloned()
                .ok_or_else(|| format!("{routes:#?}"))
        },
    );
    assert!(best.next_hops.contains(&l2.b4().to_string()), "{best:?}");

    bird2.reconfigure(bird_config(&l2, false, &[]));
    let via1 = format!("via {}", l1.b4());
    wait_until(
        "the route keeps one next hop",
        Duration::from_secs(15),
        || {
            let text = kernel_routes(&nb, "10.99.99.0/24");
            if text.contains(&via1)
                && !text.contains("nexthop")
                && !text.contains(&l2.b4().to_string())
            {
                Ok(())
            } else {
                Err(text)
            }
        },
    );
}

/// Thousands of routes both ways (UPDATEs packed with many NLRI, up to the 4096-byte
/// limit): 3,000 of BIRD's /24s and 300 /64s in bgpd's kernel, 1,000 of bgpd's in BIRD; then
/// all withdrawn both ways.
#[test]
fn thousands_of_routes_both_ways_with_bird() {
    let test = "thousands_of_routes_both_ways_with_bird";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr) = (lab.netns("bgpd"), lab.netns("bird"));
    let link = lab.link(&nb, &nr);
    let theirs: Vec<String> = (0..3000)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    let theirs6: Vec<String> = (0..300).map(|i| format!("fd00:99:{i:x}::/64")).collect();
    let ours: Vec<String> = (0..1000)
        .map(|i| format!("10.{}.{}.0/24", 50 + i / 256, i % 256))
        .collect();
    let mut config = bird_config(&link, false, &[]);
    config.statics = theirs.iter().map(|p| prefix(p)).collect();
    // IPv6 over its own session: a second BIRD protocol towards bgpd's IPv6 address.
    config.peers.push((link.b6(), link.a6(), BGPD_AS));
    config.statics.extend(theirs6.iter().map(|p| prefix(p)));
    let mut bird = Bird::start(&lab, "bird", &nr, config.clone());
    let mut spec = bgpd_spec(&link, link.b4(), BIRD_AS, &[]);
    spec.originate = ours.clone();
    spec.peers.push(peer(link.b6(), BIRD_AS));
    let started = Instant::now();
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, spec);

    let count_kernel = |family: &str| {
        run("ip", &["-n", &nb, family, "route", "show", "proto", "98"])
            .lines()
            .count()
    };
    wait_until(
        "3,000 + 300 of BIRD's routes in the kernel",
        Duration::from_secs(60),
        || {
            let (v4, v6) = (count_kernel("-4"), count_kernel("-6"));
            if v4 == theirs.len() && v6 == theirs6.len() {
                Ok(())
            } else {
                Err(format!("{v4} IPv4 and {v6} IPv6 routes of proto 98"))
            }
        },
    );
    eprintln!(
        "{test}: {} routes in the kernel {:?} after bgpd started",
        theirs.len() + theirs6.len(),
        started.elapsed()
    );
    // "1000 of 4300 routes for 4300 networks in table master4": peer0's of all.
    let want = format!("\n{} of ", ours.len());
    wait_until(
        "bgpd's 1,000 routes in BIRD",
        Duration::from_secs(60),
        || {
            let out = birdc(&bird.ctl, &["show", "route", "protocol", "peer0", "count"])
                .unwrap_or_default();
            if out.contains(&want) {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    let peer = bgpd.peer(link.b4()).expect("peer");
    assert_eq!(peer.received, theirs.len() as u64, "{peer:?}");
    assert_eq!(peer.advertised, ours.len() as u64, "{peer:?}");

    config.statics.clear();
    bird.reconfigure(config);
    let withdrawn = Instant::now();
    wait_until(
        "BIRD's routes withdrawn from the kernel",
        Duration::from_secs(60),
        || {
            let (v4, v6) = (count_kernel("-4"), count_kernel("-6"));
            if v4 == 0 && v6 == 0 {
                Ok(())
            } else {
                Err(format!("{v4} IPv4 and {v6} IPv6 routes of proto 98 left"))
            }
        },
    );
    eprintln!(
        "{test}: all withdrawn from the kernel {:?} after birdc configure",
        withdrawn.elapsed()
    );

    let mut spec = bgpd.spec.clone();
    spec.originate.clear();
    bgpd.reload(spec);
    wait_until(
        "bgpd's routes withdrawn from BIRD",
        Duration::from_secs(60),
        || {
            let out = birdc(&bird.ctl, &["show", "route", "protocol", "peer0", "count"])
                .unwrap_or_default();
            if out.contains("\n0 of ") {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
}

/// eBGP multihop: BIRD two hops away, behind a router namespace, with `multihop: 2` on bgpd's
/// side and `multihop 2` on BIRD's: the session comes up and routes are exchanged both ways.
/// BIRD's next hop is its own address, not on a link of bgpd's: bgpd resolves it recursively
/// and installs the route `via` the router in between (BIRD's `gateway recursive`), and moves
/// it when the route towards BIRD changes.
#[test]
fn bird_two_hops_away_with_multihop() {
    let test = "bird_two_hops_away_with_multihop";
    let Some(bins) = binaries(test, &["bird", "birdc"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nx, nr) = (lab.netns("bgpd"), lab.netns("router"), lab.netns("bird"));
    let (l1, l2) = (lab.link(&nb, &nx), lab.link(&nx, &nr));
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
    let (bgpd_addr, bird_addr) = (l1.a4(), l2.b4());
    run(
        "ip",
        &[
            "-n",
            &nb,
            "route",
            "add",
            "10.0.2.0/24",
            "via",
            &l1.b4().to_string(),
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &nr,
            "route",
            "add",
            "10.0.1.0/24",
            "via",
            &l2.a4().to_string(),
        ],
    );

    let config = BirdConfig {
        router_id: bird_addr,
        asn: BIRD_AS,
        peers: vec![(bird_addr, bgpd_addr, BGPD_AS)],
        statics: vec![prefix("10.99.99.0/24")],
        hold_time: HOLD,
        passive: false,
        export_actions: String::new(),
        protocol_extra: "multihop 2;".into(),
        global_extra: String::new(),
    };
    let bird = Bird::start(&lab, "bird", &nr, config);
    let mut spec = bgpd_spec(&l1, bird_addr, BIRD_AS, &["10.98.0.0/24"]);
    spec.peers = vec![BgpdPeer {
        multihop: Some(2),
        ..peer(bird_addr, BIRD_AS)
    }];
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(bird_addr, SESSION_UP);

    let shown = wait_bird_route(&bird, "10.98.0.0/24", true);
    assert!(
        shown.contains(&format!("BGP.next_hop: {bgpd_addr}")),
        "{shown}"
    );
    let route = bgpd
        .wait_route("10.99.99.0/24", &bird_addr.to_string(), true)
        .expect("present");
    assert_eq!(route.as_path, vec![BIRD_AS], "{route:?}");
    let up = bgpd.peer(bird_addr).expect("peer");
    assert!(up.received == 1 && up.advertised == 1, "{up:?}");
    assert_eq!(route.reason, "", "the route is usable: {route:?}");
    // Installed through the route towards BIRD's address, which is not bgpd's own.
    let router = l1.b4().to_string();
    let dev = bgpd_dev(&nb, &router);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {router} dev {dev}")], true);

    // The route towards BIRD goes away: BIRD's next hop is unreachable, the route is removed.
    run("ip", &["-n", &nb, "route", "del", "10.0.2.0/24"]);
    bgpd.wait_kernel_route("10.99.99.0/24", &[], false);
    // And comes back as a host route through the same router: installed again.
    run(
        "ip",
        &[
            "-n",
            &nb,
            "route",
            "add",
            &format!("{bird_addr}/32"),
            "via",
            &router,
        ],
    );
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {router}")], true);
}

/// The device of bgpd's route towards `addr`, as `ip route get` says.
fn bgpd_dev(netns: &str, addr: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "route", "get", addr])
        .output()
        .expect("ip route get");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_else(|| panic!("no dev in {text}"))
        .to_string()
}
