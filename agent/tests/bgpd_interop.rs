//! brindle-bgpd against real routers, BIRD 2 (eBGP) and GoBGP (iBGP), in network namespaces.
//!
//! ```text
//!   netns bgpd: brindle-bgpd, AS 64512   ──veth──   netns bird: BIRD 2, AS 65002 (eBGP)
//!     10.0.1.1/24, fd00:0:1::1/64                    10.0.1.2/24, fd00:0:1::2/64
//!     install_routes: true (rtproto 98)          or  netns gobgp: gobgpd, AS 64512 (iBGP)
//! ```
//!
//! The test drives each router the way an operator would (its configuration file and SIGHUP,
//! `birdc configure`, `gobgp global rib add`) and checks what a user sees: `brindlectl bgp peers`
//! and `bgp routes`, `birdc show route`, `gobgp global rib`, and `ip route` in bgpd's namespace.
//! Needs root, bird2 and gobgpd; skipped without them unless `CI` is set.
//! `BRINDLE_KEEP_LAB=1` keeps the generated configurations and logs.

#[path = "bgpd_interop/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use harness::*;

const BGPD_AS: u32 = 64512;
const BIRD_AS: u32 = 65002;
/// The hold time BIRD and GoBGP offer; the negotiated one is the smaller of both sides'.
const HOLD: u16 = 6;
const SESSION_UP: Duration = Duration::from_secs(20);

fn binaries(test: &str, peers: &[&str]) -> Option<Binaries> {
    let bins = Binaries {
        bgpd: env!("CARGO_BIN_EXE_brindle-bgpd"),
        ctl: env!("CARGO_BIN_EXE_brindlectl"),
    };
    can_run(test, peers).then_some(bins)
}

fn prefix(s: &str) -> ipnet::IpNet {
    s.parse().expect("test prefix")
}

fn bird_config(link: &Link, v6: bool, statics: &[&str]) -> BirdConfig {
    let (local, neighbor) = if v6 {
        (link.b6(), link.a6())
    } else {
        (link.b4(), link.a4())
    };
    BirdConfig {
        router_id: link.b4(),
        asn: BIRD_AS,
        peers: vec![(local, neighbor, BGPD_AS)],
        statics: statics.iter().map(|s| prefix(s)).collect(),
        hold_time: HOLD,
        passive: false,
        export_actions: String::new(),
    }
}

fn bgpd_spec(link: &Link, peer: IpAddr, peer_as: u32, originate: &[&str]) -> BgpdSpec {
    BgpdSpec {
        router_id: link.a4(),
        asn: BGPD_AS,
        listen: None,
        originate: originate.iter().map(|s| s.to_string()).collect(),
        install_routes: true,
        peers: vec![(peer, peer_as, false)],
    }
}

/// Waits until BIRD has (or no longer has) `prefix`; `show route ... all` when present.
fn wait_bird_route(bird: &Bird, prefix: &str, present: bool) -> String {
    wait_until(
        &format!("BIRD route {prefix} present={present}"),
        Duration::from_secs(15),
        || match (bird.route(prefix), present) {
            (Ok(text), true) => Ok(text),
            (Err(_), false) => Ok(String::new()),
            (Ok(text), false) | (Err(text), true) => Err(text),
        },
    )
}

/// a. BIRD 2 as an eBGP peer over IPv4: routes both ways with the AS_PATH and NEXT_HOP eBGP
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

/// b. GoBGP as an iBGP peer (same AS): routes both ways, LOCAL_PREF on what bgpd sends,
/// AS_PATH left empty, withdrawals both ways, and the session back after gobgpd restarts.
#[test]
fn gobgp_ibgp_routes_and_withdrawals_both_ways() {
    let test = "gobgp_ibgp_routes_and_withdrawals_both_ways";
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
        },
    );
    let mut bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BGPD_AS, &["10.98.0.0/24"]),
    );
    bgpd.wait_established(link.b4(), SESSION_UP);

    // Ours in GoBGP: LOCAL_PREF present (iBGP), AS_PATH empty, NEXT_HOP ourselves.
    let path = wait_until("bgpd's route in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv4");
        rib.get("10.98.0.0/24")
            .and_then(|paths| paths.get(0))
            .cloned()
            .ok_or_else(|| format!("{rib:?}"))
    });
    let local_pref = gobgp_attr(&path, 5).and_then(|a| a.get("value"));
    assert_eq!(
        local_pref.and_then(serde_json::Value::as_u64),
        Some(100),
        "{path}"
    );
    let as_path = gobgp_attr(&path, 2).expect("AS_PATH attribute");
    let segments = as_path
        .get("as_paths")
        .and_then(serde_json::Value::as_array);
    assert!(segments.is_none_or(|s| s.is_empty()), "{path}");
    let next_hop = gobgp_attr(&path, 3).and_then(|a| a.get("nexthop"));
    assert_eq!(
        next_hop.and_then(serde_json::Value::as_str),
        Some(link.a4().to_string().as_str()),
        "{path}"
    );

    // GoBGP's in bgpd's RIB and kernel.
    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    let route = bgpd
        .wait_route("10.9.0.0/24", &link.b4().to_string(), true)
        .expect("present");
    assert!(route.as_path.is_empty(), "{route:?}");
    assert_eq!(route.next_hops, vec![link.b4().to_string()], "{route:?}");
    bgpd.wait_kernel_route("10.9.0.0/24", &[&format!("via {}", link.b4())], true);

    // Withdrawals both ways.
    gobgp.cli(&["global", "rib", "del", "10.9.0.0/24"]);
    bgpd.wait_route("10.9.0.0/24", &link.b4().to_string(), false);
    bgpd.wait_kernel_route("10.9.0.0/24", &[], false);
    let mut spec = bgpd.spec.clone();
    spec.originate.clear();
    bgpd.reload(spec);
    wait_until(
        "bgpd's withdrawal in GoBGP",
        Duration::from_secs(15),
        || {
            let rib = gobgp.rib("ipv4");
            if rib.contains_key("10.98.0.0/24") {
                Err(format!("{rib:?}"))
            } else {
                Ok(())
            }
        },
    );

    // gobgpd restarts: the session comes back and a new route of it arrives.
    let mut spec = bgpd.spec.clone();
    spec.originate = vec!["10.98.3.0/24".into()];
    bgpd.reload(spec);
    gobgp.restart();
    bgpd.wait_established(link.b4(), SESSION_UP);
    gobgp.cli(&["global", "rib", "add", "10.9.1.0/24"]);
    bgpd.wait_kernel_route("10.9.1.0/24", &[&format!("via {}", link.b4())], true);
    wait_until(
        "bgpd's route in the restarted GoBGP",
        Duration::from_secs(15),
        || {
            let rib = gobgp.rib("ipv4");
            if rib.contains_key("10.98.3.0/24") {
                Ok(())
            } else {
                Err(format!("{rib:?}"))
            }
        },
    );
}

/// b'. GoBGP as an eBGP peer: what bgpd sends carries its AS in AS_PATH and no LOCAL_PREF
/// (RFC 4271 §5.1.5), as GoBGP's Adj-RIB-In shows the attributes received.
#[test]
fn gobgp_ebgp_gets_our_as_and_no_local_pref() {
    let test = "gobgp_ebgp_gets_our_as_and_no_local_pref";
    let Some(bins) = binaries(test, &["gobgpd", "gobgp"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, ng) = (lab.netns("bgpd"), lab.netns("gobgp"));
    let link = lab.link(&nb, &ng);
    let gobgp = Gobgp::start(
        &lab,
        "gobgp",
        &ng,
        &GobgpConfig {
            router_id: link.b4(),
            asn: BIRD_AS,
            local: link.b4(),
            peers: vec![(link.a4(), BGPD_AS)],
            hold_time: HOLD,
        },
    );
    let bgpd = Bgpd::start(
        &lab,
        &bins,
        &nb,
        bgpd_spec(&link, link.b4(), BIRD_AS, &["10.98.0.0/24"]),
    );
    bgpd.wait_established(link.b4(), SESSION_UP);
    let neighbor = link.a4().to_string();
    let path = wait_until(
        "bgpd's route in GoBGP's Adj-RIB-In",
        Duration::from_secs(15),
        || {
            let out = gobgp.cli(&["neighbor", &neighbor, "adj-in", "-a", "ipv4", "-j"]);
            let rib: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            rib.pointer("/10.98.0.0~124/0")
                .cloned()
                .ok_or_else(|| out.clone())
        },
    );
    assert!(
        gobgp_attr(&path, 5).is_none(),
        "LOCAL_PREF sent over eBGP: {path}"
    );
    let as_path = gobgp_attr(&path, 2).expect("AS_PATH attribute");
    assert_eq!(
        as_path.pointer("/as_paths/0/asns"),
        Some(&serde_json::json!([BGPD_AS])),
        "{path}"
    );
    let next_hop = gobgp_attr(&path, 3).and_then(|a| a.get("nexthop"));
    assert_eq!(
        next_hop.and_then(serde_json::Value::as_str),
        Some(neighbor.as_str()),
        "{path}"
    );

    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    let route = bgpd
        .wait_route("10.9.0.0/24", &link.b4().to_string(), true)
        .expect("present");
    assert_eq!(route.as_path, vec![BIRD_AS], "{route:?}");
}

/// h. bgpd between an eBGP peer (BIRD) and two iBGP peers (GoBGP): BIRD's routes go to both
/// iBGP peers with LOCAL_PREF and BIRD's AS_PATH; an iBGP peer's route goes to BIRD with our
/// AS prepended, and not to the other iBGP peer (RFC 4271 §9.2, no reflection configured).
#[test]
fn ebgp_and_ibgp_peers_transit_through_bgpd() {
    let test = "ebgp_and_ibgp_peers_transit_through_bgpd";
    let Some(bins) = binaries(test, &["bird", "birdc", "gobgpd", "gobgp"]) else {
        return;
    };
    let mut lab = Lab::new();
    let nb = lab.netns("bgpd");
    let (nr, n1, n2) = (lab.netns("bird"), lab.netns("gobgp1"), lab.netns("gobgp2"));
    let (lr, l1, l2) = (lab.link(&nb, &nr), lab.link(&nb, &n1), lab.link(&nb, &n2));
    let mut bird = Bird::start(&lab, "bird", &nr, bird_config(&lr, false, &[]));
    let gobgp = |name: &str, ns: &str, link: &Link| {
        Gobgp::start(
            &lab,
            name,
            ns,
            &GobgpConfig {
                router_id: link.b4(),
                asn: BGPD_AS,
                local: link.b4(),
                peers: vec![(link.a4(), BGPD_AS)],
                hold_time: HOLD,
            },
        )
    };
    let (gobgp1, gobgp2) = (gobgp("gobgp1", &n1, &l1), gobgp("gobgp2", &n2, &l2));
    let mut spec = bgpd_spec(&lr, lr.b4(), BIRD_AS, &[]);
    spec.peers.push((l1.b4(), BGPD_AS, false));
    spec.peers.push((l2.b4(), BGPD_AS, false));
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    for peer in [lr.b4(), l1.b4(), l2.b4()] {
        bgpd.wait_established(peer, SESSION_UP);
    }

    // First the iBGP route, so that by the time BIRD's route reaches gobgp2 bgpd would
    // already have sent it gobgp1's, had it broken the iBGP rule.
    gobgp1.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    bgpd.wait_route("10.9.0.0/24", &l1.b4().to_string(), true);
    let shown = wait_bird_route(&bird, "10.9.0.0/24", true);
    assert!(
        shown.contains(&format!("BGP.as_path: {BGPD_AS}\n")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("BGP.next_hop: {}", lr.a4())),
        "{shown}"
    );

    bird.reconfigure(bird_config(&lr, false, &["10.99.99.0/24"]));
    for g in [&gobgp1, &gobgp2] {
        let path = wait_until("BIRD's route in GoBGP", Duration::from_secs(15), || {
            let rib = g.rib("ipv4");
            rib.get("10.99.99.0/24")
                .and_then(|paths| paths.get(0))
                .cloned()
                .ok_or_else(|| format!("{rib:?}"))
        });
        let as_path = gobgp_attr(&path, 2).expect("AS_PATH attribute");
        assert_eq!(
            as_path.pointer("/as_paths/0/asns"),
            Some(&serde_json::json!([BIRD_AS])),
            "{path}"
        );
        assert!(
            gobgp_attr(&path, 5).is_some(),
            "no LOCAL_PREF over iBGP: {path}"
        );
    }
    let rib = gobgp2.rib("ipv4");
    assert!(
        !rib.contains_key("10.9.0.0/24"),
        "an iBGP route was sent to an iBGP peer: {rib:?}"
    );
}

/// b''. GoBGP as an iBGP peer over IPv6: MP_REACH_NLRI both ways with LOCAL_PREF, GoBGP's
/// /64 in bgpd's kernel, withdrawals both ways.
#[test]
fn gobgp_ibgp_ipv6_routes_both_ways() {
    let test = "gobgp_ibgp_ipv6_routes_both_ways";
    let Some(bins) = binaries(test, &["gobgpd", "gobgp"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, ng) = (lab.netns("bgpd"), lab.netns("gobgp"));
    let link = lab.link(&nb, &ng);
    let gobgp = Gobgp::start(
        &lab,
        "gobgp",
        &ng,
        &GobgpConfig {
            router_id: link.b4(),
            asn: BGPD_AS,
            local: link.b6(),
            peers: vec![(link.a6(), BGPD_AS)],
            hold_time: HOLD,
        },
    );
    let mut spec = bgpd_spec(&link, link.b6(), BGPD_AS, &["fd00:98::/64"]);
    spec.listen = Some("[::]:179".into());
    let mut bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(link.b6(), SESSION_UP);

    let path = wait_until("bgpd's /64 in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv6");
        rib.get("fd00:98::/64")
            .and_then(|paths| paths.get(0))
            .cloned()
            .ok_or_else(|| format!("{rib:?}"))
    });
    let local_pref = gobgp_attr(&path, 5).and_then(|a| a.get("value"));
    assert_eq!(
        local_pref.and_then(serde_json::Value::as_u64),
        Some(100),
        "{path}"
    );
    let mp_reach = gobgp_attr(&path, 14).expect("MP_REACH_NLRI");
    assert_eq!(
        mp_reach.get("nexthop").and_then(serde_json::Value::as_str),
        Some(link.a6().to_string().as_str()),
        "{path}"
    );

    gobgp.cli(&["global", "rib", "-a", "ipv6", "add", "fd00:9::/64"]);
    let route = bgpd
        .wait_route("fd00:9::/64", &link.b6().to_string(), true)
        .expect("present");
    assert!(route.as_path.is_empty(), "{route:?}");
    bgpd.wait_kernel_route("fd00:9::/64", &[&format!("via {}", link.b6())], true);

    gobgp.cli(&["global", "rib", "-a", "ipv6", "del", "fd00:9::/64"]);
    bgpd.wait_kernel_route("fd00:9::/64", &[], false);
    let mut spec = bgpd.spec.clone();
    spec.originate.clear();
    bgpd.reload(spec);
    wait_until(
        "bgpd's IPv6 withdrawal in GoBGP",
        Duration::from_secs(15),
        || {
            let rib = gobgp.rib("ipv6");
            if rib.contains_key("fd00:98::/64") {
                Err(format!("{rib:?}"))
            } else {
                Ok(())
            }
        },
    );
}

/// m. Optional transitive attributes pass through bgpd (RFC 4271 §5, §9.1.2.2): BIRD's
/// COMMUNITIES, EXTENDED COMMUNITIES and LARGE_COMMUNITY reach an iBGP GoBGP unchanged, and a
/// MED from the neighbouring AS does not stop the route from being used.
#[test]
fn bird_communities_pass_through_to_gobgp() {
    let test = "bird_communities_pass_through_to_gobgp";
    let Some(bins) = binaries(test, &["bird", "birdc", "gobgpd", "gobgp"]) else {
        return;
    };
    let mut lab = Lab::new();
    let (nb, nr, ng) = (lab.netns("bgpd"), lab.netns("bird"), lab.netns("gobgp"));
    let (lr, lg) = (lab.link(&nb, &nr), lab.link(&nb, &ng));
    let mut config = bird_config(&lr, false, &["10.99.99.0/24"]);
    config.export_actions = "bgp_community.add((65002, 100)); \
        bgp_ext_community.add((rt, 65002, 7)); \
        bgp_large_community.add((65002, 1, 2)); bgp_med = 50;"
        .into();
    let _bird = Bird::start(&lab, "bird", &nr, config);
    let gobgp = Gobgp::start(
        &lab,
        "gobgp",
        &ng,
        &GobgpConfig {
            router_id: lg.b4(),
            asn: BGPD_AS,
            local: lg.b4(),
            peers: vec![(lg.a4(), BGPD_AS)],
            hold_time: HOLD,
        },
    );
    let mut spec = bgpd_spec(&lr, lr.b4(), BIRD_AS, &[]);
    spec.peers.push((lg.b4(), BGPD_AS, false));
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(lr.b4(), SESSION_UP);
    bgpd.wait_established(lg.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", lr.b4())], true);

    let path = wait_until("BIRD's route in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv4");
        rib.get("10.99.99.0/24")
            .and_then(|paths| paths.get(0))
            .cloned()
            .ok_or_else(|| format!("{rib:?}"))
    });
    // GoBGP's JSON: a community as a 32-bit number, the others as objects.
    let community = gobgp_attr(&path, 8).expect("COMMUNITIES passed on");
    assert_eq!(
        community.get("communities"),
        Some(&serde_json::json!([65002u32 << 16 | 100])),
        "{path}"
    );
    let ext = gobgp_attr(&path, 16).expect("EXTENDED COMMUNITIES passed on");
    assert_eq!(
        ext.get("value"),
        Some(&serde_json::json!([{"type": 0, "subtype": 2, "value": "65002:7"}])),
        "{path}"
    );
    let large = gobgp_attr(&path, 32).expect("LARGE_COMMUNITY passed on");
    assert_eq!(
        large.get("value"),
        Some(&serde_json::json!([{"ASN": 65002, "LocalData1": 1, "LocalData2": 2}])),
        "{path}"
    );
}

/// n. A route whose AS_PATH holds bgpd's own AS (RFC 4271 §9.1.2): received but not accepted,
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

/// c. BIRD goes silent (SIGSTOP): bgpd's hold timer expires within the negotiated hold time,
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

    bird.proc.signal("STOP");
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

    bird.proc.signal("CONT");
    bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&via], true);
    wait_bird_route(&bird, "10.98.0.0/24", true);
    // BIRD learnt why: our NOTIFICATION 4/0.
    let log = bird.log_text();
    assert!(log.contains("Received: Hold timer expired"), "{log}");
}

/// d. BIRD is killed (no NOTIFICATION) and started again: bgpd notices, removes its routes,
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

/// e. IPv6 with BIRD over an IPv6 session (MP_REACH_NLRI / MP_UNREACH_NLRI): routes both ways,
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

/// f. Two BIRD peers (same AS) announce the same prefix with equal attributes: bgpd installs one
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
    spec.peers.push((l2.b4(), BIRD_AS, false));
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

/// g. A wrong peer AS in bgpd's file: the session never comes up and `brindlectl bgp peers`
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
    spec.peers = vec![(link.b4(), BIRD_AS, false)];
    bgpd.reload(spec);
    bgpd.wait_established(link.b4(), SESSION_UP);
    bgpd.wait_kernel_route("10.99.99.0/24", &[&format!("via {}", link.b4())], true);
}

/// i. 4-octet AS numbers (RFC 6793) on both sides, with bgpd passive: BIRD connects, and each
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
    spec.peers = vec![(link.b4(), THEIRS, true)];
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

/// j. BIRD asks for a route refresh (`birdc reload in`, RFC 2918 / RFC 7313): bgpd sends its
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

/// k. Thousands of routes both ways (UPDATEs packed with many NLRI, up to the 4096-byte
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
    spec.peers.push((link.b6(), BIRD_AS, false));
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

/// l. SIGHUP with the peer list changed: the removed peer gets a Cease and its routes leave
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
    spec.peers = vec![(l2.b4(), BIRD_AS, false)];
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

/// The harness itself, without bgpd: BIRD and GoBGP peer with each other (iBGP) and exchange
/// routes, so a failure above is bgpd's and not the lab's.
#[test]
fn harness_bird_and_gobgp_exchange_routes() {
    if !can_run(
        "harness_bird_and_gobgp_exchange_routes",
        &["bird", "birdc", "gobgpd", "gobgp"],
    ) {
        return;
    }
    let mut lab = Lab::new();
    let (g, b) = (lab.netns("gobgp"), lab.netns("bird"));
    let link = lab.link(&g, &b);
    let gobgp = Gobgp::start(
        &lab,
        "gobgp",
        &g,
        &GobgpConfig {
            router_id: link.a4(),
            asn: 65010,
            local: link.a4(),
            peers: vec![(link.b4(), 65010)],
            hold_time: HOLD,
        },
    );
    let bird = Bird::start(
        &lab,
        "bird",
        &b,
        BirdConfig {
            router_id: link.b4(),
            asn: 65010,
            peers: vec![(link.b4(), link.a4(), 65010)],
            statics: vec![prefix("10.99.99.0/24")],
            hold_time: HOLD,
            passive: false,
            export_actions: String::new(),
        },
    );
    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    let shown = wait_bird_route(&bird, "10.9.0.0/24", true);
    assert!(shown.contains("BGP.local_pref: 100"), "{shown}");
    let paths = wait_until("BIRD's route in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv4");
        rib.get("10.99.99.0/24")
            .cloned()
            .ok_or_else(|| format!("{rib:?}"))
    });
    assert!(gobgp_attr(&paths[0], 5).is_some(), "{paths:?}");
    gobgp.cli(&["global", "rib", "del", "10.9.0.0/24"]);
    wait_bird_route(&bird, "10.9.0.0/24", false);
}
