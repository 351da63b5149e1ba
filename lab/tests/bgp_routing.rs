//! brindle-node in BGP routing mode (`--routing bgp`), end to end in network namespaces: the
//! node-to-node mesh, a route reflector with its clients, two racks behind BIRD ToRs, and a node
//! that loses power having its routes withdrawn within the hold time. Needs root (and BIRD 2
//! for the racks).

use std::time::{Duration, Instant};

use brindle_lab::bgp::bird_available;
use brindle_lab::{is_root, Cluster, ClusterSpec, Encap, Routing};

fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "scenario tests must run as root in CI"
    );
    eprintln!("skipping: needs root");
    false
}

/// The hold time the agents propose (and the ToRs use): short, so that a dead node is noticed
/// within seconds.
const HOLD: u16 = 9;

fn assert_all_reachable(cluster: &Cluster) {
    let matrix = cluster.ping_matrix().expect("pings");
    let unreachable: Vec<_> = matrix
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k)
        .collect();
    assert!(unreachable.is_empty(), "unreachable pairs: {unreachable:?}");
}

/// The block affine to `node`, from `brindlectl get ipamblocks`.
fn block_of(cluster: &Cluster, node: &str) -> String {
    let blocks = cluster
        .ctl(&["get", "ipamblocks", "-o", "json"])
        .expect("get ipamblocks");
    let blocks: serde_json::Value = serde_json::from_str(&blocks).expect("json");
    blocks["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["spec"]["affinity"] == format!("host:{node}"))
        .and_then(|b| b["spec"]["cidr"].as_str())
        .unwrap_or_else(|| panic!("no block of {node}: {blocks}"))
        .to_string()
}

/// Waits until `cond` holds, or panics with `what` after `limit`; returns the time it took.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn a_four_node_mesh_routes_pods_over_bgp_and_withdraws_a_dead_node() {
    if !root_or_skip() {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 4,
        pods_per_node: 1,
        encap: Encap::Never,
        routing: Routing::Bgp,
        bgp_hold_time: HOLD,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    for i in 0..4 {
        cluster
            .wait_established(i, 3, Duration::from_secs(30))
            .expect("every node peers with the 3 others");
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes to every block");
    // Each remote block: straight to its node over the uplink (pool `Never`), and learned: the
    // fabric router knows no pod route, so only these make pods reachable.
    for i in 0..4 {
        let routes = cluster.routes(i).expect("routes");
        for (j, other) in cluster.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            let block = block_of(&cluster, &other.name);
            let want = format!("{block} via {} dev eth0", other.ip);
            assert!(
                routes.lines().any(|l| l.starts_with(&want)),
                "node{}: no `{want}` (node{}'s block) in\n{routes}",
                i + 1,
                j + 1
            );
        }
        let peers = cluster.bgp_peers(i).expect("peers");
        for p in peers.as_array().into_iter().flatten() {
            assert_eq!(p["asn"], 64512, "{p}");
            assert_eq!(p["accepted"], 1, "one block from each peer: {p}");
        }
    }
    assert_all_reachable(&cluster);

    // node4 loses power: the Node stays in the datastore (static routing would keep routing
    // to it); over BGP its block is withdrawn everywhere once the hold timer expires.
    let block4 = block_of(&cluster, "node4");
    cluster.power_off(3).expect("power off node4");
    let cut = Instant::now();
    for i in 0..3 {
        wait_for(
            &format!("node{} withdraws {block4}", i + 1),
            Duration::from_secs(u64::from(HOLD) + 5),
            || {
                !cluster
                    .routes(i)
                    .expect("routes")
                    .lines()
                    .any(|l| l.starts_with(&format!("{block4} ")))
            },
        );
        println!(
            "node{}: node4's block withdrawn {:?} after the power cut (hold time {HOLD} s)",
            i + 1,
            cut.elapsed()
        );
    }
    // The others still reach each other.
    let pods: Vec<_> = cluster
        .pods
        .iter()
        .filter(|p| p.node < 3)
        .cloned()
        .collect();
    for from in &pods {
        for to in pods.iter().filter(|p| p.name != from.name) {
            assert!(
                cluster.ping(from, &to.ip, 3),
                "{} -> {}",
                from.name,
                to.name
            );
        }
    }
}
