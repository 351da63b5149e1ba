//! GoBGP as an iBGP (and once an eBGP) peer: routes and withdrawals both ways over IPv4 and IPv6,
//! LOCAL_PREF and AS_PATH as each kind of session asks, transit between eBGP and iBGP peers,
//! optional transitive attributes passed on.

use std::time::Duration;

use super::harness::*;
use super::*;

/// GoBGP as an iBGP peer (same AS): routes both ways, LOCAL_PREF on what bgpd sends,
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
            neighbor_extra: String::new(),
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

/// GoBGP as an iBGP peer over IPv6: MP_REACH_NLRI both ways with LOCAL_PREF, GoBGP's
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
            neighbor_extra: String::new(),
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

/// GoBGP as an eBGP peer: what bgpd sends carries its AS in AS_PATH and no LOCAL_PREF
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
            neighbor_extra: String::new(),
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

/// brindle-bgpd between an eBGP peer (BIRD) and two iBGP peers (GoBGP): BIRD's routes go to both
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
                neighbor_extra: String::new(),
            },
        )
    };
    let (gobgp1, gobgp2) = (gobgp("gobgp1", &n1, &l1), gobgp("gobgp2", &n2, &l2));
    let mut spec = bgpd_spec(&lr, lr.b4(), BIRD_AS, &[]);
    spec.peers.push(peer(l1.b4(), BGPD_AS));
    spec.peers.push(peer(l2.b4(), BGPD_AS));
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

/// Optional transitive attributes pass through bgpd (RFC 4271 §5, §9.1.2.2): BIRD's
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
            neighbor_extra: String::new(),
        },
    );
    let mut spec = bgpd_spec(&lr, lr.b4(), BIRD_AS, &[]);
    spec.peers.push(peer(lg.b4(), BGPD_AS));
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

/// GoBGP announces one route whose next hop bgpd cannot reach and one it can: the good one is
/// installed, the other is not, and neither blocks the other.
#[test]
fn gobgp_route_with_unreachable_next_hop_does_not_block_others() {
    let test = "gobgp_route_with_unreachable_next_hop_does_not_block_others";
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
            local: link.b4(),
            peers: vec![(link.a4(), BGPD_AS)],
            hold_time: HOLD,
            neighbor_extra: String::new(),
        },
    );
    let bgpd = Bgpd::start(&lab, &bins, &nb, bgpd_spec(&link, link.b4(), BGPD_AS, &[]));
    bgpd.wait_established(link.b4(), SESSION_UP);
    gobgp.cli(&[
        "global",
        "rib",
        "add",
        "10.9.2.0/24",
        "nexthop",
        "192.0.2.1",
    ]);
    gobgp.cli(&["global", "rib", "add", "10.9.3.0/24"]);
    bgpd.wait_kernel_route("10.9.3.0/24", &[&format!("via {}", link.b4())], true);
    assert!(
        kernel_routes(&nb, "10.9.2.0/24").trim().is_empty(),
        "{}",
        all_routes(&nb, "-4")
    );
    assert_eq!(bgpd.peer(link.b4()).expect("peer").state, "Established");

    // Withdrawn, the unreachable route leaves the RIB; a new good route is installed.
    gobgp.cli(&["global", "rib", "del", "10.9.2.0/24"]);
    bgpd.wait_route("10.9.2.0/24", &link.b4().to_string(), false);
    gobgp.cli(&["global", "rib", "add", "10.9.4.0/24"]);
    bgpd.wait_kernel_route("10.9.4.0/24", &[&format!("via {}", link.b4())], true);
}

/// GoBGP offers capabilities bgpd does not use (graceful restart with its per-family flags,
/// ADD-PATH send and receive): the session comes up on what both support, with plain NLRI both
/// ways (no path identifiers, RFC 7911 §3 needs both sides).
#[test]
fn gobgp_with_graceful_restart_and_add_path_capabilities() {
    let test = "gobgp_with_graceful_restart_and_add_path_capabilities";
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
            local: link.b4(),
            peers: vec![(link.a4(), BGPD_AS)],
            hold_time: HOLD,
            neighbor_extra: "  [neighbors.graceful-restart.config]\n    enabled = true\n    \
                restart-time = 20\n  [neighbors.afi-safis.mp-graceful-restart.config]\n    \
                enabled = true\n  [neighbors.add-paths.config]\n    send-max = 8\n    \
                receive = true\n"
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
    // GoBGP's view of the capabilities: what both sides advertised, what only GoBGP did.
    let neighbor = gobgp.cli(&["neighbor", &link.a4().to_string()]);
    let capability = |name: &str| {
        neighbor
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_default()
            .to_string()
    };
    for both in ["route-refresh", "4-octet-as"] {
        assert!(
            capability(both).contains("advertised and received"),
            "{both}: {neighbor}"
        );
    }
    assert!(
        neighbor.contains("ipv4-unicast:\tadvertised and received"),
        "multiprotocol: {neighbor}"
    );
    for only_gobgp in ["add-path", "graceful-restart"] {
        let line = capability(only_gobgp);
        assert!(
            line.contains("advertised") && !line.contains("received"),
            "{only_gobgp}: {neighbor}"
        );
    }
    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    bgpd.wait_kernel_route("10.9.0.0/24", &[&format!("via {}", link.b4())], true);
    wait_until("bgpd's route in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv4");
        if rib.contains_key("10.98.0.0/24") {
            Ok(())
        } else {
            Err(format!("{rib:?}"))
        }
    });
}
