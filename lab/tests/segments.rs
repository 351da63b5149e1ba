//! Encapsulation modes and NAT outgoing on two L2 segments joined by a router (the fabric
//! namespace): 4 nodes, 2 per segment, one pod per node. What is checked is what the wire
//! shows: the nodes' `vxlan.brindle` counters and the router's forward counters (VXLAN packets,
//! and unencapsulated packets from the pool). Needs root.

use std::time::{Duration, Instant};

use brindle_lab::{
    can_run_here, in_ns, ip, Cluster, ClusterSpec, Encap, Pod, OUTSIDE_IP, OUTSIDE_IP6,
};

const POOL: &str = "10.244.0.0/16";
const PINGS: u64 = 10;
/// Packets a `vxlan.brindle` device may send on its own (IPv6 router solicitations and MLD
/// reports after it comes up); they never reach the wire without an FDB entry.
const STRAY: u64 = 2;

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).exists()))
        .unwrap_or(false)
}

fn two_segments(encap: Encap) -> Cluster {
    let cluster = Cluster::build(ClusterSpec {
        nodes: 4,
        pods_per_node: 1,
        segments: 2,
        encap,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    assert_eq!(
        cluster
            .nodes
            .iter()
            .map(|n| n.ip.as_str())
            .collect::<Vec<_>>(),
        ["10.99.0.11", "10.99.0.12", "10.99.1.13", "10.99.1.14"]
    );
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    cluster.count_routed(POOL).expect("router counters");
    cluster
}

fn pod_on(cluster: &Cluster, node: usize) -> &Pod {
    cluster
        .pods
        .iter()
        .find(|p| p.node == node)
        .expect("a pod on every node")
}

/// Pings `PINGS` times from the pod on node `from` to the pod on node `to`; returns the
/// packets node `from` sent through its tunnel and the router's (VXLAN, plain pod) counters
/// during that time.
fn ping_and_count(cluster: &Cluster, from: usize, to: usize) -> (u64, u64, u64) {
    let tx = |i| cluster.vxlan_tx_packets(i).unwrap_or(0);
    let tx_before = tx(from);
    let (vxlan_before, pods_before) = cluster.router_counters().expect("counters");
    let target = pod_on(cluster, to).ip.clone();
    let out = in_ns(
        &pod_on(cluster, from).netns,
        "ping",
        &[
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.02",
            "-W",
            "2",
            "-q",
            &target,
        ],
    );
    assert!(
        out.is_ok(),
        "pod on node{} cannot reach {target} on node{}: {out:?}",
        from + 1,
        to + 1
    );
    let (vxlan_after, pods_after) = cluster.router_counters().expect("counters");
    (
        tx(from) - tx_before,
        vxlan_after - vxlan_before,
        pods_after - pods_before,
    )
}

fn route_for(cluster: &Cluster, on: usize, to: usize) -> String {
    let pod_ip = &pod_on(cluster, to).ip;
    let out = ip(&["-n", &cluster.nodes[on].netns, "route", "get", pod_ip]).expect("ip route get");
    out.lines().next().unwrap_or_default().to_string()
}

#[test]
fn cross_subnet_encapsulates_only_between_segments() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let cluster = two_segments(Encap::VxlanCrossSubnet);
    // Same segment: straight to the neighbour node, nothing through the tunnel or the router.
    let route = route_for(&cluster, 0, 1);
    assert!(route.contains("via 10.99.0.12 dev eth0"), "{route}");
    let (tx, vxlan, plain) = ping_and_count(&cluster, 0, 1);
    assert!(tx <= STRAY, "same segment: {tx} packets through the tunnel");
    assert_eq!(
        (vxlan, plain),
        (0, 0),
        "same segment never crosses the router"
    );
    // Across the router: every packet encapsulated, none of the pods' addresses on the wire.
    let route = route_for(&cluster, 0, 2);
    assert!(route.contains("dev vxlan.brindle"), "{route}");
    let (tx, vxlan, plain) = ping_and_count(&cluster, 0, 2);
    assert!(tx >= PINGS, "node1 sent {tx} packets through the tunnel");
    assert!(vxlan >= 2 * PINGS, "router saw {vxlan} VXLAN packets");
    assert_eq!(plain, 0, "router saw unencapsulated pod packets");
    let (_, vxlan, plain) = ping_and_count(&cluster, 3, 1);
    assert!(
        vxlan >= 2 * PINGS && plain == 0,
        "node4 -> node2: {vxlan} {plain}"
    );
}

#[test]
fn always_encapsulates_within_and_across_segments() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let cluster = two_segments(Encap::VxlanAlways);
    let (tx, vxlan, plain) = ping_and_count(&cluster, 0, 1);
    assert!(tx >= PINGS, "same segment: {tx} packets through the tunnel");
    assert_eq!(
        (vxlan, plain),
        (0, 0),
        "same segment never crosses the router"
    );
    let (tx, vxlan, plain) = ping_and_count(&cluster, 2, 0);
    assert!(tx >= PINGS, "across: {tx} packets through the tunnel");
    assert!(vxlan >= 2 * PINGS, "router saw {vxlan} VXLAN packets");
    assert_eq!(plain, 0);
}

#[test]
fn never_routes_directly_and_through_the_routers_static_routes() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let cluster = two_segments(Encap::Never);
    // flannel's host-gw: the router knows every node's blocks.
    cluster.route_blocks_via_router().expect("router routes");
    for i in 0..4 {
        let link = ip(&[
            "-n",
            &cluster.nodes[i].netns,
            "link",
            "show",
            "vxlan.brindle",
        ]);
        assert!(link.is_err(), "node{} has a VXLAN device: {link:?}", i + 1);
    }
    let route = route_for(&cluster, 0, 1);
    assert!(route.contains("via 10.99.0.12 dev eth0"), "{route}");
    // Across segments Brindle adds nothing: the default route leads to the router.
    let route = route_for(&cluster, 0, 3);
    assert!(route.contains("via 10.99.0.1 dev eth0"), "{route}");
    let (_, vxlan, plain) = ping_and_count(&cluster, 0, 1);
    assert_eq!(
        (vxlan, plain),
        (0, 0),
        "same segment never crosses the router"
    );
    let (_, vxlan, plain) = ping_and_count(&cluster, 0, 3);
    assert_eq!(vxlan, 0, "no VXLAN in Never mode");
    assert!(
        plain >= 2 * PINGS,
        "router routed {plain} plain pod packets"
    );
    let unreachable: Vec<_> = cluster
        .ping_matrix()
        .expect("ping matrix")
        .into_iter()
        .filter(|(_, ok)| !ok)
        .collect();
    assert!(unreachable.is_empty(), "unreachable: {unreachable:?}");
}

fn nat_table_present(cluster: &Cluster, node: usize) -> bool {
    nat_tables(cluster, node).contains("table ip brindle-nat")
}

fn nat_tables(cluster: &Cluster, node: usize) -> String {
    in_ns(&cluster.nodes[node].netns, "nft", &["list", "tables"]).unwrap_or_default()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping_once(pod: &Pod, to: &str) -> bool {
    in_ns(&pod.netns, "ping", &["-c", "1", "-W", "1", "-q", to]).is_ok()
}

#[test]
fn nat_outgoing_shows_the_node_address_outside_and_pod_addresses_inside() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        nat_outgoing: true,
        outside: true,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    let outside = cluster.outside.clone().expect("outside namespace");
    cluster.record_ping_sources(&outside).expect("outside");
    let (a, b) = (pod_on(&cluster, 0).clone(), pod_on(&cluster, 1).clone());
    cluster.record_ping_sources(&b.netns).expect("pod b");

    wait_for("the NAT table on node1", || nat_table_present(&cluster, 0));
    assert!(
        cluster.ping(&a, OUTSIDE_IP, 5),
        "a pod cannot reach the outside server"
    );
    let seen = cluster.ping_sources(&outside).expect("sources");
    assert_eq!(seen, [cluster.nodes[0].ip.clone()], "outside saw");
    // Between pods (one pool) nothing is masqueraded.
    assert!(cluster.ping(&a, &b.ip, 3), "pod to pod");
    let seen = cluster.ping_sources(&b.netns).expect("sources");
    assert_eq!(seen, vec![a.ip.clone()], "pod b saw");

    // Changed behind the agent's back: the table and forwarding are restored by the next
    // periodic check (the lab's resync interval is 10 s).
    let node1 = cluster.nodes[0].netns.clone();
    in_ns(&node1, "nft", &["delete", "table", "ip", "brindle-nat"]).expect("delete table");
    in_ns(&node1, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=0"]).expect("sysctl");
    in_ns(
        &node1,
        "sysctl",
        &["-q", "-w", "net.ipv4.conf.eth0.rp_filter=1"],
    )
    .expect("sysctl");
    let sysctl = |key: &str| {
        in_ns(&node1, "sysctl", &["-n", key])
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    wait_for(
        "the NAT table, forwarding and loose rp_filter to be restored",
        || {
            nat_table_present(&cluster, 0)
                && sysctl("net.ipv4.ip_forward") == "1"
                && sysctl("net.ipv4.conf.eth0.rp_filter") == "2"
        },
    );
    let log = std::fs::read_to_string(&cluster.nodes[0].log).unwrap_or_default();
    assert!(
        log.contains("changed behind our back"),
        "the agent did not report the changes"
    );

    // natOutgoing off: the table goes, the outside sees the pod's address and its answer
    // has no way back (the router knows no pool).
    cluster
        .set_pools(Encap::VxlanAlways, false)
        .expect("pool update");
    wait_for("the NAT table to go from node1", || {
        !nat_table_present(&cluster, 0)
    });
    assert!(!ping_once(&a, OUTSIDE_IP), "answered without NAT");
    let seen = cluster.ping_sources(&outside).expect("sources");
    assert_eq!(seen, vec![a.ip.clone()], "outside saw");
}

#[test]
fn nat_outgoing_over_ipv6_shows_the_node_address_outside_and_pod_addresses_inside() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        pool_cidr_v6: Some("fd00:10:244::/48".to_string()),
        nat_outgoing: true,
        outside: true,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    let outside = cluster.outside.clone().expect("outside namespace");
    cluster.record_ping_sources(&outside).expect("outside");
    let (a, b) = (pod_on(&cluster, 0).clone(), pod_on(&cluster, 1).clone());
    let (a6, b6) = (
        a.ip6.clone().expect("pod a has IPv6"),
        b.ip6.clone().expect("pod b has IPv6"),
    );
    cluster.record_ping_sources(&b.netns).expect("pod b");

    wait_for("both NAT tables on node1", || {
        let tables = nat_tables(&cluster, 0);
        tables.contains("table ip brindle-nat") && tables.contains("table ip6 brindle-nat")
    });
    assert!(
        cluster.ping(&a, OUTSIDE_IP6, 5),
        "a pod cannot reach the outside server over IPv6"
    );
    assert!(
        cluster.ping(&a, OUTSIDE_IP, 5),
        "a pod cannot reach the outside server over IPv4"
    );
    let seen = cluster.ping_sources(&outside).expect("sources");
    assert_eq!(
        seen,
        [cluster.nodes[0].ip.clone(), "fd99::11".to_string()],
        "outside saw"
    );
    // Between pods (one pool per family) nothing is masqueraded.
    assert!(cluster.ping(&a, &b6, 3), "pod to pod over IPv6");
    assert!(cluster.ping(&a, &b.ip, 3), "pod to pod over IPv4");
    let seen = cluster.ping_sources(&b.netns).expect("sources");
    assert_eq!(seen, [a.ip.clone(), a6], "pod b saw");
}

#[test]
fn the_vxlan_device_goes_when_its_linger_ends_not_at_the_next_resync() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        encap: Encap::VxlanAlways,
        // Far beyond the test: only a pass the agent schedules itself can remove the device.
        resync_interval_secs: 300,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    let device_on = |cluster: &Cluster, i: usize| {
        ip(&[
            "-n",
            &cluster.nodes[i].netns,
            "link",
            "show",
            "vxlan.brindle",
        ])
        .is_ok()
    };
    assert!((0..2).all(|i| device_on(&cluster, i)));
    let before = Instant::now();
    cluster.set_pools(Encap::Never, false).expect("to Never");
    let switched = Instant::now();
    // Since the pool was switched: at least since `before`, at most since `switched`.
    let mut gone = [None; 2];
    while gone.iter().any(Option::is_none) {
        for (i, at) in gone.iter_mut().enumerate() {
            if at.is_none() && !device_on(&cluster, i) {
                *at = Some((before.elapsed(), switched.elapsed()));
            }
        }
        assert!(
            switched.elapsed() < Duration::from_secs(15),
            "the VXLAN device still exists 15 s after the switch to Never: {gone:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("VXLAN device gone after {gone:?} (linger 5 s)");
    for (most, least) in gone.into_iter().flatten() {
        // It lingers its 5 s (for slower nodes), then goes at once: the pass is scheduled
        // for the linger's end, not left to the periodic resync (300 s here).
        assert!(most >= Duration::from_secs(5), "gone too early: {most:?}");
        assert!(least < Duration::from_secs(7), "gone only after {least:?}");
    }
}

#[test]
fn changing_the_pool_mode_keeps_pods_reachable() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        encap: Encap::VxlanAlways,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    let (a, b) = (pod_on(&cluster, 0).clone(), pod_on(&cluster, 1).clone());
    assert!(route_for(&cluster, 0, 1).contains("dev vxlan.brindle"));
    let wait_path = |cluster: &Cluster, want: &str| {
        wait_for(want, || {
            route_for(cluster, 0, 1).contains(want) && route_for(cluster, 1, 0).contains(want)
        })
    };
    let interval = Duration::from_millis(10);
    let pinger = cluster
        .ping_continuously(&a, &b.ip, interval)
        .expect("ping");
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    cluster.set_pools(Encap::Never, false).expect("to Never");
    wait_path(&cluster, "dev eth0");
    // The device lingers 5 s for slower nodes, then goes; coming back must create it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..2).any(|i| {
        ip(&[
            "-n",
            &cluster.nodes[i].netns,
            "link",
            "show",
            "vxlan.brindle",
        ])
        .is_ok()
    }) {
        assert!(Instant::now() < deadline, "the VXLAN device stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (sent1, received1) = pinger.stop().expect("ping summary");
    eprintln!("to Never: {sent1} sent, {} lost", sent1 - received1);
    let pinger = cluster
        .ping_continuously(&a, &b.ip, interval)
        .expect("ping");
    std::thread::sleep(Duration::from_millis(300));
    cluster
        .set_pools(Encap::VxlanAlways, false)
        .expect("back to Always");
    wait_path(&cluster, "dev vxlan.brindle");
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = pinger.stop().expect("ping summary");
    eprintln!("to Always: {sent} sent, {} lost", sent - received);
    let (sent, received) = (sent + sent1, received + received1);
    let lost = sent - received;
    eprintln!(
        "mode change Always -> Never -> Always: {sent} pings every {interval:?} over {:?}, {lost} lost",
        started.elapsed()
    );
    assert!(sent >= 50, "only {sent} pings sent");
    // Documented bound (docs/dataplane.md): no loss.
    assert_eq!(
        lost, 0,
        "{lost} of {sent} pings lost during the mode changes"
    );
}

#[test]
fn cross_subnet_to_always_and_back_keeps_both_segments_reachable() {
    if !can_run_here(&[("nft", which("nft"))]) {
        return;
    }
    let mut cluster = two_segments(Encap::VxlanCrossSubnet);
    let (a, b, c) = (
        pod_on(&cluster, 0).clone(),
        pod_on(&cluster, 1).clone(),
        pod_on(&cluster, 2).clone(),
    );
    let interval = Duration::from_millis(10);
    let same = cluster
        .ping_continuously(&a, &b.ip, interval)
        .expect("ping");
    let across = cluster
        .ping_continuously(&a, &c.ip, interval)
        .expect("ping");
    std::thread::sleep(Duration::from_millis(300));
    cluster
        .set_pools(Encap::VxlanAlways, false)
        .expect("to Always");
    wait_for("same-segment routes through the tunnel", || {
        route_for(&cluster, 0, 1).contains("dev vxlan.brindle")
            && route_for(&cluster, 1, 0).contains("dev vxlan.brindle")
    });
    std::thread::sleep(Duration::from_millis(300));
    cluster
        .set_pools(Encap::VxlanCrossSubnet, false)
        .expect("back to CrossSubnet");
    wait_for("same-segment routes direct again", || {
        route_for(&cluster, 0, 1).contains("dev eth0")
            && route_for(&cluster, 1, 0).contains("dev eth0")
    });
    std::thread::sleep(Duration::from_millis(300));
    for (what, pinger) in [("same segment", same), ("across", across)] {
        let (sent, received) = pinger.stop().expect("ping summary");
        eprintln!(
            "CrossSubnet -> Always -> CrossSubnet, {what}: {sent} sent, {} lost",
            sent - received
        );
        assert!(sent >= 50, "{what}: only {sent} pings sent");
        assert_eq!(sent, received, "{what}: pings lost during the mode changes");
    }
    assert!(route_for(&cluster, 0, 2).contains("dev vxlan.brindle"));
}
