//! brindle-node in BGP routing mode (`--routing bgp`), end to end in network namespaces: the
//! node-to-node mesh, a route reflector with its clients, two racks behind BIRD ToRs, lossless
//! agent restarts (SIGTERM, kill -9, a rolling restart of two nodes), and a node
//! that loses power having its routes withdrawn within the hold time. Needs root (and BIRD 2
//! for the racks).

use std::time::{Duration, Instant};

use brindle_lab::bgp::bird_available;
use brindle_lab::{can_run_here, in_ns, Cluster, ClusterSpec, Encap, Routing};

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
    if !can_run_here(&[]) {
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
    let started = Instant::now();
    for i in 0..4 {
        cluster
            .wait_established(i, 3, Duration::from_secs(30))
            .expect("every node peers with the 3 others");
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes to every block");
    println!(
        "mesh of 4: sessions up and every block routed {:?} after the pods were wired",
        started.elapsed()
    );
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
    // `brindlectl node status` reads the agent's socket: three mesh peers, up.
    let status = cluster.node_status(0).expect("node status");
    assert!(status.contains("Brindle process is running."), "{status}");
    for other in &cluster.nodes[1..] {
        let row = status
            .lines()
            .find(|l| l.contains(&format!("| {} ", other.ip)))
            .unwrap_or_else(|| panic!("no row for {} in\n{status}", other.ip));
        assert!(
            row.contains("node-to-node mesh") && row.contains("Established"),
            "{row}"
        );
    }
    // Its metrics: every mesh session established, one block accepted from each peer.
    let script = "exec 3<>/dev/tcp/127.0.0.1/9091; \
                  printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = in_ns(&cluster.nodes[0].netns, "bash", &["-c", script]).expect("metrics");
        let established = |other: &str| {
            format!(
                "brindle_bgp_session_established{{peer=\"{other}\",peer_type=\"node-to-node mesh\"}} 1"
            )
        };
        let accepted = |other: &str| {
            format!(
                "brindle_bgp_routes_accepted{{family=\"ipv4-unicast\",peer=\"{other}\",peer_type=\"node-to-node mesh\"}} 1"
            )
        };
        let all = cluster.nodes[1..].iter().all(|n| {
            let ip = n.ip.to_string();
            text.lines().any(|l| l == established(&ip)) && text.lines().any(|l| l == accepted(&ip))
        });
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node1's /metrics lacks the mesh sessions:\n{}",
            text.lines()
                .filter(|l| l.starts_with("brindle_bgp_"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A new global BGPPeer adds one session on every node and resets none of the others; its
    // deletion removes just that one.
    let since = |cluster: &Cluster, i: usize| -> Vec<(String, String)> {
        let peers = cluster.bgp_peers(i).expect("peers");
        peers
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "Established")
            .map(|p| (p["address"].to_string(), p["since"].to_string()))
            .collect()
    };
    let before: Vec<_> = (0..4).map(|i| since(&cluster, i)).collect();
    // A reset would show as a later `since` (whole seconds).
    std::thread::sleep(Duration::from_millis(1100));
    let peer = cluster.dir.join("gateway.yaml");
    std::fs::write(
        &peer,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: gateway\nspec:\n  peerIP: 10.99.0.200\n  asNumber: 65200\n",
    )
    .expect("write");
    cluster
        .ctl(&["apply", "-f", &peer.display().to_string()])
        .expect("apply BGPPeer");
    for (i, before) in before.iter().enumerate() {
        wait_for(
            &format!("node{} adds the gateway", i + 1),
            Duration::from_secs(10),
            || {
                let peers = cluster.bgp_peers(i).expect("peers");
                peers.as_array().is_some_and(|p| {
                    p.iter()
                        .any(|p| p["address"] == "10.99.0.200" && p["asn"] == 65200)
                })
            },
        );
        assert_eq!(
            since(&cluster, i),
            *before,
            "node{}: mesh sessions untouched",
            i + 1
        );
    }
    cluster
        .ctl(&["delete", "bgppeer", "gateway"])
        .expect("delete BGPPeer");
    for (i, before) in before.iter().enumerate() {
        wait_for(
            &format!("node{} removes the gateway", i + 1),
            Duration::from_secs(10),
            || {
                cluster
                    .bgp_peers(i)
                    .expect("peers")
                    .as_array()
                    .is_some_and(|p| p.len() == 3)
            },
        );
        assert_eq!(
            since(&cluster, i),
            *before,
            "node{}: mesh sessions untouched",
            i + 1
        );
    }

    // Restarting node1's agent (SIGTERM, as a rollout does) loses no packet: its peers keep
    // its routes while it is away (graceful restart), its kernel routes stay, and once back
    // it programs the kernel only after its peers' initial tables are in.
    let to_node1 = cluster
        .pods
        .iter()
        .find(|p| p.node == 0)
        .expect("a pod on node1")
        .clone();
    let from_node2 = cluster
        .pods
        .iter()
        .find(|p| p.node == 1)
        .expect("a pod on node2")
        .clone();
    let pinger = cluster
        .ping_continuously(&from_node2, &to_node1.ip, Duration::from_millis(20))
        .expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    cluster.stop_agent(0).expect("stop node1's agent");
    std::thread::sleep(Duration::from_secs(1));
    cluster.start_agent(0).expect("start node1's agent");
    cluster
        .wait_ready(0, Duration::from_secs(30))
        .expect("node1 ready again");
    cluster
        .wait_established(0, 3, Duration::from_secs(30))
        .expect("node1's sessions back");
    std::thread::sleep(Duration::from_millis(500));
    let (sent, received) = pinger.stop().expect("ping summary");
    println!("node2 -> node1 across node1's agent restart: {received}/{sent} echoes answered");
    assert!(sent > 50, "only {sent} pings sent");
    assert_eq!(received, sent, "packets lost across a graceful restart");

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

#[test]
fn a_route_reflector_serves_five_clients_that_peer_only_with_it() {
    if !can_run_here(&[]) {
        return;
    }
    let resources = "\
apiVersion: brindle.dev/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
---
apiVersion: brindle.dev/v1
kind: Node
metadata:
  name: node1
  labels:
    route-reflector: 'true'
spec:
  bgp:
    routeReflectorClusterID: 244.0.0.1
---
apiVersion: brindle.dev/v1
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
";
    let cluster = Cluster::build(ClusterSpec {
        nodes: 6,
        pods_per_node: 1,
        encap: Encap::Never,
        routing: Routing::Bgp,
        bgp_hold_time: HOLD,
        resources: resources.to_string(),
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    let rr_ip = cluster.nodes[0].ip.clone();
    cluster
        .wait_established(0, 5, Duration::from_secs(30))
        .expect("the reflector peers with its 5 clients");
    for i in 1..6 {
        cluster
            .wait_established(i, 1, Duration::from_secs(30))
            .expect("a client peers with the reflector only");
        let peers = cluster.bgp_peers(i).expect("peers");
        assert_eq!(peers[0]["address"], rr_ip.as_str(), "{peers}");
        // The reflector reflects the other 4 clients' blocks and originates its own.
        wait_for(
            &format!("node{} has 5 routes from the reflector", i + 1),
            Duration::from_secs(20),
            || cluster.bgp_peers(i).expect("peers")[0]["accepted"] == 5,
        );
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes to every block");
    // Reflected routes keep their next hop (RFC 4456): client to client directly, not through
    // the reflector.
    for i in 1..6 {
        let routes = cluster.routes(i).expect("routes");
        for other in cluster
            .nodes
            .iter()
            .filter(|n| n.name != cluster.nodes[i].name)
        {
            let want = format!(
                "{} via {} dev eth0",
                block_of(&cluster, &other.name),
                other.ip
            );
            assert!(
                routes.lines().any(|l| l.starts_with(&want)),
                "node{}: no `{want}` in\n{routes}",
                i + 1
            );
        }
    }
    assert_all_reachable(&cluster);
}

#[test]
fn two_racks_behind_bird_tors_reach_each_other_over_ebgp() {
    if !can_run_here(&[("BIRD 2 (bird2)", bird_available())]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        nodes: 4,
        pods_per_node: 1,
        segments: 2,
        encap: Encap::Never,
        routing: Routing::BgpRacks,
        bgp_hold_time: HOLD,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    for i in 0..4 {
        cluster
            .wait_established(i, 1, Duration::from_secs(30))
            .expect("each node peers with its ToR only");
        let rack = cluster.segment_of(i);
        let peers = cluster.bgp_peers(i).expect("peers");
        assert_eq!(peers[0]["address"], format!("10.99.{rack}.1"), "{peers}");
        assert_eq!(peers[0]["asn"], 65100 + rack, "{peers}");
        let status = cluster.node_status(i).expect("node status");
        assert!(
            status
                .lines()
                .any(|l| l.contains(&format!("| 10.99.{rack}.1 ")) && l.contains("node specific")),
            "{status}"
        );
    }
    let blocks: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| block_of(&cluster, &n.name))
        .collect();
    // Both ToRs know every node's block: their own rack's from the nodes, the other's from the
    // other ToR.
    for tor in &cluster.tors {
        wait_for(
            &format!("ToR of rack {} learns every block", tor.rack),
            Duration::from_secs(30),
            || {
                let table = tor.birdc(&["show", "route"]).unwrap_or_default();
                blocks.iter().all(|b| table.contains(b.as_str()))
            },
        );
    }
    for i in 0..4 {
        let rack = cluster.segment_of(i);
        let tor = format!("10.99.{rack}.1");
        wait_for(
            &format!(
                "node{} routes the other rack's blocks through its ToR",
                i + 1
            ),
            Duration::from_secs(30),
            || {
                let routes = cluster.routes(i).expect("routes");
                routes
                    .lines()
                    .any(|l| l.starts_with(&format!("default via {tor} ")))
                    && (0..4).filter(|&j| cluster.segment_of(j) != rack).all(|j| {
                        routes
                            .lines()
                            .any(|l| l.starts_with(&format!("{} via {tor} ", blocks[j])))
                    })
            },
        );
        // Its own block came back from the ToR over no path: it stays a blackhole.
        let routes = cluster.routes(i).expect("routes");
        let own: Vec<&str> = routes
            .lines()
            .filter(|l| l.contains(&format!("{} ", blocks[i])))
            .collect();
        assert_eq!(own.len(), 1, "node{}: {own:?}", i + 1);
        assert!(own[0].starts_with("blackhole"), "node{}: {own:?}", i + 1);
    }
    println!(
        "node1's routes:\n{}ToR of rack 0:\n{}",
        cluster.routes(0).expect("routes"),
        cluster.tors[0].birdc(&["show", "route"]).expect("birdc")
    );
    assert_all_reachable(&cluster);
}

#[test]
fn a_dual_stack_mesh_carries_ipv6_blocks_over_the_ipv4_sessions() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        nodes: 3,
        pods_per_node: 1,
        encap: Encap::Never,
        pool_cidr_v6: Some("fd00:10:244::/48".to_string()),
        routing: Routing::Bgp,
        bgp_hold_time: HOLD,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    for i in 0..3 {
        cluster
            .wait_established(i, 2, Duration::from_secs(30))
            .expect("mesh up");
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes to every block, IPv4 and IPv6");
    // IPv6 blocks straight to the node's IPv6 address.
    let routes = cluster.routes(0).expect("routes");
    for i in 1..3 {
        let want = format!("via fd99::{} dev eth0", 11 + i);
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with("fd00:10:244:") && l.contains(&want)),
            "node1: no IPv6 block `{want}` in\n{routes}"
        );
    }
    assert_all_reachable(&cluster);
    let matrix = cluster.ping6_matrix().expect("pings");
    let unreachable: Vec<_> = matrix
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(matrix.len(), 6);
    assert!(
        unreachable.is_empty(),
        "IPv6: unreachable pairs: {unreachable:?}"
    );
}

/// A ping from `from`'s pod to `to`'s pod every 20 ms, labelled for the report.
fn pinger_between(cluster: &Cluster, from: usize, to: usize) -> (String, brindle_lab::Pinger) {
    let pod = |node: usize| {
        cluster
            .pods
            .iter()
            .find(|p| p.node == node)
            .unwrap_or_else(|| panic!("a pod on node{}", node + 1))
            .clone()
    };
    let (src, dst) = (pod(from), pod(to));
    let pinger = cluster
        .ping_continuously(&src, &dst.ip, Duration::from_millis(20))
        .expect("ping");
    (format!("node{} -> node{}", from + 1, to + 1), pinger)
}

/// Stops the pingers; asserts that each sent enough and lost nothing.
fn assert_no_loss(pingers: Vec<(String, brindle_lab::Pinger)>, across: &str) {
    let mut lost = Vec::new();
    for (label, pinger) in pingers {
        let (sent, received) = pinger.stop().expect("ping summary");
        println!("{label} across {across}: {received}/{sent} echoes answered");
        assert!(sent > 50, "{label}: only {sent} pings sent");
        if received != sent {
            lost.push(format!("{label}: {} of {sent} lost", sent - received));
        }
    }
    assert!(lost.is_empty(), "packets lost across {across}: {lost:?}");
}

/// Waits until node `i` has `peers` sessions Established, each with the peer's block accepted
/// (one route per peer): its table is whole again after a restart.
fn wait_tables_back(cluster: &Cluster, i: usize, peers: usize) {
    wait_for(
        &format!("node{} has every peer's block again", i + 1),
        Duration::from_secs(30),
        || {
            let status = cluster.bgp_peers(i).expect("peers");
            let up: Vec<_> = status
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["state"] == "Established" && p["accepted"] == 1)
                .collect();
            up.len() == peers
        },
    );
}

fn three_node_mesh() -> Cluster {
    let cluster = Cluster::build(ClusterSpec {
        nodes: 3,
        pods_per_node: 1,
        encap: Encap::Never,
        routing: Routing::Bgp,
        bgp_hold_time: HOLD,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    for i in 0..3 {
        cluster
            .wait_established(i, 2, Duration::from_secs(30))
            .expect("mesh up");
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes to every block");
    for i in 0..3 {
        wait_tables_back(&cluster, i, 2);
    }
    cluster
}

#[test]
fn an_agent_killed_with_sigkill_and_restarted_loses_no_packet() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = three_node_mesh();
    let block1 = block_of(&cluster, "node1");
    // Both directions: node1's kernel routes must stay while its agent is dead and while the
    // new one waits for its peers' tables; the peers must keep node1's block (graceful
    // restart helpers) although it sent no NOTIFICATION and its sessions just dropped.
    let pingers = vec![
        pinger_between(&cluster, 1, 0),
        pinger_between(&cluster, 2, 0),
        pinger_between(&cluster, 0, 1),
        pinger_between(&cluster, 0, 2),
    ];
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_agent(0).expect("kill -9 node1's agent");
    // The peers notice at once (the kernel closed the dead process's connections) and keep
    // node1's block, stale, instead of withdrawing it.
    for i in 1..3 {
        wait_for(
            &format!("node{} sees node1's session down", i + 1),
            Duration::from_secs(5),
            || {
                cluster
                    .bgp_peers(i)
                    .expect("peers")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["address"] == cluster.nodes[0].ip && p["state"] != "Established")
            },
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    for i in 1..3 {
        let routes = cluster.routes(i).expect("routes");
        assert!(
            routes.lines().any(|l| l.starts_with(&format!("{block1} "))),
            "node{}: node1's block {block1} gone while node1's agent is down:\n{routes}",
            i + 1
        );
    }
    cluster.start_agent(0).expect("start node1's agent");
    cluster
        .wait_ready(0, Duration::from_secs(30))
        .expect("node1 ready again");
    wait_tables_back(&cluster, 0, 2);
    for i in 1..3 {
        wait_tables_back(&cluster, i, 2);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_no_loss(pingers, "a kill -9 of node1's agent and its restart");
    cluster
        .wait_converged(Duration::from_secs(10))
        .expect("routes to every block after the restart");
}

#[test]
fn a_rolling_restart_of_two_agents_loses_no_packet() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = three_node_mesh();
    let pingers = vec![
        pinger_between(&cluster, 2, 0),
        pinger_between(&cluster, 2, 1),
        pinger_between(&cluster, 0, 1),
        pinger_between(&cluster, 1, 0),
    ];
    std::thread::sleep(Duration::from_millis(500));
    // As a DaemonSet rollout does: one node at a time (SIGTERM), the next once the previous
    // is ready again.
    for i in 0..2 {
        cluster.stop_agent(i).expect("stop the agent");
        std::thread::sleep(Duration::from_secs(1));
        cluster.start_agent(i).expect("start the agent");
        cluster
            .wait_ready(i, Duration::from_secs(30))
            .expect("ready again");
        wait_tables_back(&cluster, i, 2);
    }
    for i in 0..3 {
        wait_tables_back(&cluster, i, 2);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_no_loss(pingers, "a rolling restart of node1's and node2's agents");
    cluster
        .wait_converged(Duration::from_secs(10))
        .expect("routes to every block after the rollout");
}
