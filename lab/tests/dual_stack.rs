//! End to end, dual stack and MTU: clusters with an IPv4 and an IPv6 pool, built from the real
//! binaries in network namespaces; pods get one address of each family from one CNI ADD and
//! reach each other across nodes over IPv6. Needs root.

use std::time::{Duration, Instant};

use brindle_lab::{can_run_here, in_ns, Cluster, ClusterSpec, Encap, Pod};

fn dual_stack(encap: Encap, uplink_mtu: Option<u32>) -> Cluster {
    Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 2,
        encap,
        pool_cidr_v6: Some("fd00:10:244::/48".to_string()),
        uplink_mtu,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds")
}

/// The MTU of the pod's eth0.
fn pod_mtu(pod: &Pod) -> u32 {
    let out = in_ns(&pod.netns, "cat", &["/sys/class/net/eth0/mtu"]).expect("reading the MTU");
    out.trim().parse().expect("an MTU")
}

fn assert_all_reached(matrix: &std::collections::BTreeMap<(String, String), bool>, what: &str) {
    let unreachable: Vec<_> = matrix
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k)
        .collect();
    assert!(
        unreachable.is_empty(),
        "{what}: unreachable pairs: {unreachable:?}"
    );
}

#[test]
fn dual_stack_pods_reach_each_other_over_ipv6_through_vxlan() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = dual_stack(Encap::VxlanAlways, Some(9000));
    assert_eq!(cluster.pods.len(), 4);

    // One ADD, both families: the result lists both addresses and a default route per family.
    for pod in &cluster.pods {
        let ip6 = pod
            .ip6
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no IPv6 address: {}", pod.name, pod.result));
        assert!(ip6.starts_with("fd00:10:244:"), "{ip6}");
        let ips: Vec<&str> = pod.result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .filter_map(|ip| ip["address"].as_str())
            .collect();
        assert_eq!(
            ips,
            [format!("{}/32", pod.ip), format!("{ip6}/128")],
            "{}",
            pod.result
        );
        let routes = &pod.result["routes"];
        assert_eq!(
            routes,
            &serde_json::json!([
                {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}
            ]),
            "{}",
            pod.result
        );
        let addrs = in_ns(&pod.netns, "ip", &["-6", "addr", "show", "dev", "eth0"]).expect("ip");
        assert!(addrs.contains(&format!("inet6 {ip6}/128")), "{addrs}");
        // MTU: the uplink's 9000 minus VXLAN's 50.
        assert_eq!(pod_mtu(pod), 8950, "{}", pod.name);
    }

    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    // Remote IPv6 blocks go through the tunnel, via the remote VTEP's link-local.
    for i in 0..2 {
        let routes = cluster.routes(i).expect("routes");
        assert!(
            routes.lines().any(|l| l.starts_with("fd00:10:244:")
                && l.contains("via fe80::64")
                && l.contains("dev vxlan.brindle")),
            "node{}: no IPv6 route through the tunnel:\n{routes}",
            i + 1
        );
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with("blackhole fd00:10:244:")),
            "node{}: own IPv6 block not blackholed:\n{routes}",
            i + 1
        );
    }

    let before: Vec<u64> = (0..2)
        .map(|i| cluster.vxlan_tx_packets(i).expect("counter"))
        .collect();
    assert_all_reached(&cluster.ping6_matrix().expect("pings"), "IPv6");
    for (i, node) in cluster.nodes.iter().enumerate() {
        let sent = cluster.vxlan_tx_packets(i).expect("counter") - before[i];
        // Each of the node's 2 pods pings the 2 remote pods and answers their pings.
        assert!(
            sent >= 8,
            "{}: only {sent} packets through vxlan.brindle",
            node.name
        );
    }
    assert_all_reached(&cluster.ping_matrix().expect("pings"), "IPv4");

    // CHECK passes, then names what is missing on the IPv6 side.
    cluster
        .check_pod("pod-1-1")
        .expect("CHECK of a healthy dual-stack pod");
    let first = cluster.pods[0].clone();
    in_ns(&first.netns, "ip", &["-6", "route", "del", "default"]).expect("route del");
    let err = format!(
        "{:#}",
        cluster
            .check_pod("pod-1-1")
            .expect_err("CHECK sees the missing route")
    );
    assert!(
        err.contains("route default via fe80::ecee:eeff:feee:eeee dev eth0 missing"),
        "{err}"
    );
    in_ns(
        &first.netns,
        "ip",
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fe80::ecee:eeff:feee:eeee",
            "dev",
            "eth0",
        ],
    )
    .expect("route add");
    cluster
        .check_pod("pod-1-1")
        .expect("CHECK after the repair");

    // A pod reaches its own node's IPv6 address (host via the link-local gateway).
    let first = cluster.pods[0].clone();
    assert!(
        cluster.ping(&first, "fd99::11", 3),
        "pod-1-1 cannot reach node1 over IPv6"
    );

    // An agent restart keeps the pods' IPv6 host routes (the endpoints are reloaded, so the
    // first reconcile pass does not take them for stale) and their connectivity.
    cluster.stop_agent(1).expect("agent stopped");
    cluster.start_agent(1).expect("agent started");
    cluster
        .wait_ready(1, Duration::from_secs(30))
        .expect("agent ready again");
    let routes = cluster.routes(1).expect("routes");
    for pod in cluster.pods.iter().filter(|p| p.node == 1) {
        let ip6 = pod.ip6.as_deref().expect("ipv6");
        assert!(
            routes.contains(&format!("{ip6} dev brd")),
            "{ip6} lost:\n{routes}"
        );
    }
    let (from, to) = (cluster.pods[0].clone(), cluster.pods[2].clone());
    let to_ip6 = to.ip6.clone().expect("ipv6");
    assert!(
        cluster.ping(&from, &to_ip6, 3),
        "{} -> {} after restart",
        from.name,
        to.name
    );

    // The conflist's MTU wins over the agent's.
    let small = cluster
        .add_pod_conf(
            0,
            "small-mtu",
            serde_json::json!({}),
            serde_json::json!({"mtu": 1400}),
        )
        .expect("pod added");
    assert_eq!(pod_mtu(&small), 1400);
    assert!(small.ip6.is_some());

    // ipam.assign_ipv6: false asks for IPv4 only (Calico's key and spelling).
    let v4_only = cluster
        .add_pod_conf(
            1,
            "v4-only",
            serde_json::json!({}),
            serde_json::json!({"ipam": {"assign_ipv6": "false"}}),
        )
        .expect("pod added");
    assert!(v4_only.ip6.is_none(), "{}", v4_only.result);
    assert_eq!(v4_only.result["routes"].as_array().map(Vec::len), Some(1));

    // DEL releases both addresses and removes both host routes.
    let small_ip6 = small.ip6.clone().expect("ipv6");
    for ip in [&small.ip, &small_ip6] {
        let held = cluster
            .ctl(&["ipam", "show", "--ip", ip])
            .expect("ipam show");
        assert!(held.starts_with(&format!("IP {ip} is in use")), "{held}");
    }
    cluster.del_pod("small-mtu").expect("pod deleted");
    for ip in [&small.ip, &small_ip6] {
        let held = cluster
            .ctl(&["ipam", "show", "--ip", ip])
            .expect("ipam show");
        assert!(held.contains("is not currently assigned"), "{held}");
    }
    let routes = cluster.routes(0).expect("routes");
    assert!(!routes.contains(&format!("{small_ip6} dev")), "{routes}");
    assert!(!routes.contains(&format!("{} dev", small.ip)), "{routes}");
    let check = cluster.ctl(&["ipam", "check"]).expect("ipam check");
    assert!(check.contains("found 0 problems"), "{check}");
    let show = cluster.ctl(&["ipam", "show"]).expect("ipam show");
    assert!(show.contains("fd00:10:244::/48"), "{show}");
}

#[test]
fn dual_stack_without_encapsulation_routes_ipv6_via_the_node_addresses() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = dual_stack(Encap::Never, None);
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    // Each agent registered its uplink's IPv6 address.
    let nodes = cluster.ctl(&["get", "nodes"]).expect("get nodes");
    assert!(nodes.contains("IPV6 ADDRESS"), "{nodes}");
    assert!(
        nodes.contains("fd99::11/64") && nodes.contains("fd99::12/64"),
        "{nodes}"
    );
    let routes = cluster.routes(0).expect("routes");
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("fd00:10:244:") && l.contains("via fd99::12 dev eth0")),
        "node1: no direct IPv6 route to node2:\n{routes}"
    );
    assert_all_reached(&cluster.ping6_matrix().expect("pings"), "IPv6");
    // No encapsulation: the pods get the uplink's whole MTU.
    for pod in &cluster.pods {
        assert_eq!(pod_mtu(pod), 1500, "{}", pod.name);
    }

    // A pool that enables VXLAN lowers the MTU of pods added afterwards, without a restart.
    let mut cluster = cluster;
    let pool = cluster.dir.join("vxlan-pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: vxlan-extra\n\
         spec:\n  cidr: 10.250.0.0/16\n  vxlanMode: Always\n",
    )
    .expect("writing the pool");
    cluster
        .ctl(&["apply", "-f", &pool.display().to_string()])
        .expect("pool applied");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = format!("late-{attempt}");
        let pod = cluster.add_pod(0, &name).expect("pod added");
        let mtu = pod_mtu(&pod);
        cluster.del_pod(&name).expect("pod deleted");
        if mtu == 1450 {
            break;
        }
        assert_eq!(mtu, 1500, "neither the old nor the new MTU");
        assert!(
            Instant::now() < deadline,
            "pods still get MTU {mtu} 10 s after a VXLAN pool was added"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// IPv6-only pods (no IPv4 pool) on IPv4 nodes: the VXLAN device exists for the IPv6 pool
/// alone, without an IPv4 tunnel address, and carries the pods' IPv6 traffic.
#[test]
fn ipv6_only_pods_reach_each_other_through_vxlan() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        pool_cidr: String::new(),
        pool_cidr_v6: Some("fd00:10:246::/48".to_string()),
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    for pod in &cluster.pods {
        let ips = pod.result["ips"].as_array().expect("ips");
        assert_eq!(ips.len(), 1, "{}", pod.result);
        assert!(pod.ip6.is_some() && pod.ip.contains(':'), "{}", pod.result);
        assert_eq!(pod_mtu(pod), 1450, "{}", pod.name);
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    for node in &cluster.nodes {
        let addrs = in_ns(
            &node.netns,
            "ip",
            &["-4", "addr", "show", "dev", "vxlan.brindle"],
        )
        .expect("the VXLAN device exists");
        assert!(!addrs.contains("inet "), "{}: {addrs}", node.name);
    }
    let before = cluster.vxlan_tx_packets(0).expect("counter");
    assert_all_reached(&cluster.ping6_matrix().expect("pings"), "IPv6");
    assert!(cluster.vxlan_tx_packets(0).expect("counter") > before);
}
