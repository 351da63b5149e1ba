//! End to end: the demo's cluster (3 nodes, 2 pods each, VXLAN Always on the embedded
//! datastore) built from the real binaries in network namespaces. Needs root.

use std::time::Duration;

use brindle_lab::{can_run_here, Cluster, ClusterSpec};

#[test]
fn every_pod_reaches_every_pod_through_vxlan() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    assert_eq!(cluster.pods.len(), 6);
    for i in 0..3 {
        let live = cluster
            .health(i, "/liveness")
            .expect("health server answers");
        assert!(live.contains("200"), "node{}: /liveness: {live}", i + 1);
        let ready = cluster
            .health(i, "/readiness")
            .expect("health server answers");
        assert!(ready.contains("200"), "node{}: /readiness: {ready}", i + 1);
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");

    // By routes: every remote pod block goes via vxlan.brindle, onlink, with Brindle's proto.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let routes = cluster.routes(i).expect("routes");
        for pod in cluster.pods.iter().filter(|p| p.node != i) {
            let covering = routes
                .lines()
                .find(|l| {
                    let dst = l.split_whitespace().next().unwrap_or_default();
                    dst.parse::<ipnet_lite::Net>()
                        .map(|n| n.contains(&pod.ip))
                        .unwrap_or(false)
                })
                .unwrap_or_else(|| panic!("{}: no route for {} in\n{routes}", node.name, pod.ip));
            assert!(
                covering.contains("dev vxlan.brindle") && covering.contains("onlink"),
                "{}: {} not routed through the tunnel: {covering}",
                node.name,
                pod.ip
            );
        }
        assert!(
            routes.lines().any(|l| l.starts_with("blackhole")),
            "{}: own block not blackholed:\n{routes}",
            node.name
        );
    }

    let check = cluster
        .ctl(&["ipam", "check"])
        .expect("ipam check finds no problem");
    assert!(check.contains("Found 3 node tunnel IPs."), "{check}");
    assert!(check.contains("Found 6 workload IPs."), "{check}");

    // By counters: the pings between nodes leave through vxlan.brindle.
    let before: Vec<u64> = (0..3)
        .map(|i| cluster.vxlan_tx_packets(i).expect("counter"))
        .collect();
    let matrix = cluster.ping_matrix().expect("pings");
    let unreachable: Vec<_> = matrix
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k)
        .collect();
    assert!(unreachable.is_empty(), "unreachable pairs: {unreachable:?}");
    for (i, node) in cluster.nodes.iter().enumerate() {
        let sent = cluster.vxlan_tx_packets(i).expect("counter") - before[i];
        // Each of this node's 2 pods pings the 4 remote pods, and answers their 4 pings each.
        assert!(
            sent >= 16,
            "{}: only {sent} packets through vxlan.brindle for 16 cross-node echoes and replies",
            node.name
        );
    }
}

#[test]
fn deleting_a_pod_frees_its_address_and_its_route() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    let extra = cluster.add_pod(0, "extra").expect("pod added");
    let routes = cluster.routes(0).expect("routes");
    assert!(
        routes.contains(&format!("{} dev brd", extra.ip)),
        "no host route for {}:\n{routes}",
        extra.ip
    );
    let weps = cluster.ctl(&["get", "weps"]).expect("get weps");
    assert!(weps.contains("extra"), "{weps}");

    cluster.del_pod("extra").expect("pod deleted");
    let routes = cluster.routes(0).expect("routes");
    assert!(
        !routes.contains(&format!("{} dev", extra.ip)),
        "route left:\n{routes}"
    );
    let weps = cluster.ctl(&["get", "weps"]).expect("get weps");
    assert!(!weps.contains("extra"), "endpoint left: {weps}");

    // Nothing leaked, nothing used without an allocation.
    let check = cluster
        .ctl(&["ipam", "check"])
        .expect("ipam check finds no problem");
    assert!(check.contains("found 0 problems"), "{check}");

    // The freed address goes to the back of the block's queue; the next pod gets a new one,
    // and the address count in use is back to what it was plus one.
    let again = cluster.add_pod(0, "again").expect("pod added");
    assert_ne!(
        again.ip, extra.ip,
        "FIFO reuse: a freed address is not handed out at once"
    );
    let pods = cluster.pods.clone();
    assert!(
        cluster.ping(&pods[1], &again.ip, 5),
        "new pod not reachable from node2"
    );
}

/// A tiny CIDR parser so the test does not need a dependency.
mod ipnet_lite {
    use std::net::Ipv4Addr;

    pub struct Net(u32, u32);

    impl std::str::FromStr for Net {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
            let addr: Ipv4Addr = addr.parse().map_err(|_| ())?;
            let len: u32 = len.parse().map_err(|_| ())?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Ok(Net(u32::from(addr) & mask, mask))
        }
    }

    impl Net {
        pub fn contains(&self, ip: &str) -> bool {
            ip.parse::<Ipv4Addr>()
                .map(|a| u32::from(a) & self.1 == self.0)
                .unwrap_or(false)
        }
    }
}

#[test]
fn the_cluster_runs_on_a_real_etcd() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        datastore: brindle_lab::Datastore::Etcd,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds on etcd");
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    let matrix = cluster.ping_matrix().expect("pings");
    let unreachable: Vec<_> = matrix
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k)
        .collect();
    assert!(unreachable.is_empty(), "unreachable pairs: {unreachable:?}");
    let check = cluster
        .ctl(&["ipam", "check"])
        .expect("ipam check finds no problem");
    assert!(check.contains("Found 6 workload IPs."), "{check}");
}
