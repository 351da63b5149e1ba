//! brindle-node in BGP mode (`--routing bgp`) and what Calico's BGPConfiguration and BGPPeer
//! add to the routing of pods, end to end in network namespaces with real BIRD 2 routers:
//! service CIDRs advertised from every node (and withdrawn), a BGPPeer over IPv6 with its
//! `keepaliveTime`. Needs root and BIRD 2.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brindle_lab::bgp::{bird_available, Tor};
use brindle_lab::{can_run_here, in_ns, Cluster, ClusterSpec, Encap, Routing};

/// The hold time the agents propose (and the racks' ToRs use).
const HOLD: u16 = 9;

/// Waits until `cond` holds, or panics with `what` (and the last value `cond` saw) after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match cond() {
            Ok(()) => return,
            Err(last) => assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}; last seen:\n{last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `birdc show route <cidr> [all]` on `router`: the table text, empty when BIRD has no route
/// for it (birdc then exits non-zero with "Network not found").
fn bird_route(router: &Tor, cidr: &str, all: bool) -> Result<String, String> {
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(&router.ctl).args(["show", "route", cidr]);
    if all {
        cmd.arg("all");
    }
    let out = cmd.output().map_err(|e| format!("running birdc: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else if text.contains("Network not found") {
        Ok(String::new())
    } else {
        Err(format!("birdc show route {cidr}: {text}"))
    }
}

fn apply(cluster: &Cluster, name: &str, yaml: &str) {
    let path = cluster.dir.join(name);
    fs::write(&path, yaml).expect("write resources");
    cluster
        .ctl(&["apply", "-f", &path.display().to_string()])
        .expect("brindlectl apply");
}

const SERVICE_CLUSTER: &str = "10.96.0.0/12";
const SERVICE_EXTERNAL: &str = "192.0.2.0/24";
const SERVICE_LB: &str = "198.51.100.0/24";

#[test]
fn service_cidrs_are_advertised_from_every_node_and_withdrawn_when_dropped() {
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
            .expect("each node peers with its ToR");
    }
    let rack_ips = |rack: usize| -> Vec<String> {
        (0..4)
            .filter(|&i| cluster.segment_of(i) == rack)
            .map(|i| cluster.nodes[i].ip.clone())
            .collect()
    };
    for tor in &cluster.tors {
        let table = bird_route(tor, SERVICE_CLUSTER, false).expect("birdc");
        assert!(
            !table.contains(SERVICE_CLUSTER),
            "nothing advertised before the configuration: {table}"
        );
    }

    // The racks' configuration (mesh off) plus Calico's three kinds of service CIDRs.
    let with_services = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  serviceClusterIPs:\n  - cidr: {SERVICE_CLUSTER}\n  serviceExternalIPs:\n  - cidr: {SERVICE_EXTERNAL}\n  serviceLoadBalancerIPs:\n  - cidr: {SERVICE_LB}\n"
    );
    let established_before: Vec<serde_json::Value> = (0..4)
        .map(|i| cluster.bgp_peers(i).expect("peers")[0]["established_transitions"].clone())
        .collect();
    assert!(
        established_before.iter().all(|n| n.as_u64().is_some()),
        "{established_before:?}"
    );
    let started = Instant::now();
    apply(&cluster, "services.yaml", &with_services);
    // Each ToR has every CIDR from each node of its rack (one path per node, AS path the
    // rack's AS), and installs them as one multipath kernel route over those nodes: ECMP at
    // the router, as with calico-node.
    for tor in &cluster.tors {
        let nodes = rack_ips(tor.rack);
        wait_for(
            &format!(
                "ToR of rack {} learns the service CIDRs from its nodes",
                tor.rack
            ),
            Duration::from_secs(20),
            || {
                for cidr in [SERVICE_CLUSTER, SERVICE_EXTERNAL, SERVICE_LB] {
                    let table = bird_route(tor, cidr, true)?;
                    for node in &nodes {
                        if !table.contains(&format!("via {node} on rack")) {
                            return Err(format!("{cidr}: no path via {node}:\n{table}"));
                        }
                    }
                    let kernel = in_ns(&tor.netns, "ip", &["route", "show", cidr])
                        .map_err(|e| e.to_string())?;
                    if !nodes
                        .iter()
                        .all(|n| kernel.contains(&format!("nexthop via {n} ")))
                    {
                        return Err(format!(
                            "{cidr}: kernel route not over every node: {kernel}"
                        ));
                    }
                }
                Ok(())
            },
        );
        let table = bird_route(tor, SERVICE_CLUSTER, true).expect("birdc");
        assert!(
            table.contains(&format!("BGP.as_path: {}", 65000 + tor.rack)),
            "originated by the rack's nodes: {table}"
        );
    }
    println!(
        "service CIDRs at both ToRs, from every node of the rack, {:?} after the apply",
        started.elapsed()
    );
    // The nodes route nothing for them (kube-proxy owns service addresses): their own
    // origination beats what the ToR sends back from the other rack.
    for i in 0..4 {
        let routes = cluster.routes(i).expect("routes");
        for cidr in [SERVICE_CLUSTER, SERVICE_EXTERNAL, SERVICE_LB] {
            assert!(
                !routes.lines().any(|l| l.starts_with(&format!("{cidr} "))),
                "node{} routes {cidr}:\n{routes}",
                i + 1
            );
        }
    }
    // The sessions carried them without a reset.
    let assert_not_reset = |when: &str| {
        for (i, before) in established_before.iter().enumerate() {
            let peers = cluster.bgp_peers(i).expect("peers");
            assert_eq!(peers[0]["state"], "Established", "{when}: {peers}");
            assert_eq!(
                peers[0]["established_transitions"],
                *before,
                "{when}: node{}'s session was reset: {peers}",
                i + 1
            );
        }
    };
    assert_not_reset("after the advertisement");

    // Dropping the external and load-balancer CIDRs withdraws just those.
    let cluster_only = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  serviceClusterIPs:\n  - cidr: {SERVICE_CLUSTER}\n"
    );
    apply(&cluster, "services-cluster-only.yaml", &cluster_only);
    for tor in &cluster.tors {
        wait_for(
            &format!("ToR of rack {} loses the external and LB CIDRs", tor.rack),
            Duration::from_secs(20),
            || {
                for cidr in [SERVICE_EXTERNAL, SERVICE_LB] {
                    let table = bird_route(tor, cidr, false)?;
                    if table.contains(cidr) {
                        return Err(table);
                    }
                }
                Ok(())
            },
        );
        let table = bird_route(tor, SERVICE_CLUSTER, true).expect("birdc");
        for node in rack_ips(tor.rack) {
            assert!(
                table.contains(&format!("via {node} on rack")),
                "the cluster CIDR stays: {table}"
            );
        }
    }
    // Deleting the configuration's service list altogether withdraws the rest.
    let none = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n";
    apply(&cluster, "services-none.yaml", none);
    for tor in &cluster.tors {
        wait_for(
            &format!("ToR of rack {} loses the cluster CIDR", tor.rack),
            Duration::from_secs(20),
            || {
                let table = bird_route(tor, SERVICE_CLUSTER, false)?;
                let kernel = in_ns(&tor.netns, "ip", &["route", "show", SERVICE_CLUSTER])
                    .map_err(|e| e.to_string())?;
                if table.contains(SERVICE_CLUSTER) || !kernel.trim().is_empty() {
                    return Err(format!("{table}\n{kernel}"));
                }
                Ok(())
            },
        );
    }
    // The blocks are still there: the withdrawal touched only the service CIDRs.
    cluster
        .wait_racks_converged(Duration::from_secs(10))
        .expect("blocks still routed");
    assert_not_reset("after the withdrawals");
}

/// A BIRD 2 in the fabric namespace, peering over IPv6 with every node (AS 65300 to the
/// nodes' 64512), announcing `2001:db8:99::/48` to them.
fn start_v6_router(cluster: &Cluster) -> Tor {
    let mut conf = String::from(
        "log stderr all;\nrouter id 10.99.0.1;\nprotocol device { scan time 2; }\n\
         protocol static upstream6 { ipv6; route 2001:db8:99::/48 blackhole; }\n",
    );
    for (i, _) in cluster.nodes.iter().enumerate() {
        conf.push_str(&format!(
            "protocol bgp node{i} {{\n  local fd99::1 as 65300;\n  neighbor fd99::{} as 64512;\n  connect retry time 2;\n  ipv6 {{ import all; export where proto = \"upstream6\"; }};\n}}\n",
            11 + i
        ));
    }
    let path = |ext: &str| cluster.dir.join(format!("router6.{ext}"));
    fs::write(path("conf"), conf).expect("write BIRD config");
    let log = fs::File::create(path("log")).expect("BIRD log");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &cluster.fabric,
            "/usr/sbin/bird",
            "-f",
            "-c",
        ])
        .arg(path("conf"))
        .arg("-s")
        .arg(path("ctl"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting BIRD");
    let router = Tor {
        rack: 0,
        netns: cluster.fabric.clone(),
        ctl: path("ctl"),
        conf: path("conf"),
        log: path("log"),
        child: Some(child),
    };
    wait_for("BIRD answers", Duration::from_secs(10), || {
        router
            .birdc(&["show", "status"])
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    router
}

#[test]
fn a_bgp_peer_over_ipv6_gets_the_ipv6_blocks_and_shows_under_ipv6() {
    if !can_run_here(&[("BIRD 2 (bird2)", bird_available())]) {
        return;
    }
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        encap: Encap::Never,
        pool_cidr_v6: Some("fd00:10:244::/48".to_string()),
        routing: Routing::Bgp,
        bgp_hold_time: HOLD,
        verbose: false,
        resources: "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: router6\nspec:\n  peerIP: fd99::1\n  asNumber: 65300\n  keepaliveTime: 5s\n".to_string(),
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    // Dropped before the cluster: BIRD stops before its namespace goes.
    let router = start_v6_router(&cluster);
    for i in 0..2 {
        cluster
            .wait_established(i, 2, Duration::from_secs(30))
            .expect("the mesh session and the IPv6 router's");
    }
    let blocks6: Vec<(usize, String)> = {
        let blocks = cluster
            .ctl(&["get", "ipamblocks", "-o", "json"])
            .expect("get ipamblocks");
        let blocks: serde_json::Value = serde_json::from_str(&blocks).expect("json");
        blocks["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| {
                let cidr = b["spec"]["cidr"].as_str()?;
                let owner = b["spec"]["affinity"].as_str()?.strip_prefix("host:node")?;
                let i: usize = owner.parse().ok()?;
                cidr.contains(':').then(|| (i - 1, cidr.to_string()))
            })
            .collect()
    };
    assert_eq!(blocks6.len(), 2, "an IPv6 block per node: {blocks6:?}");

    // The router learns each node's IPv6 block from that node, next hop its IPv6 address.
    wait_for(
        "the IPv6 router learns every IPv6 block",
        Duration::from_secs(20),
        || {
            for (i, block) in &blocks6 {
                let table = router
                    .birdc(&[
                        "show",
                        "route",
                        block.as_str(),
                        "protocol",
                        &format!("node{i}"),
                    ])
                    .map_err(|e| e.to_string())?;
                if !table.contains(&format!("via fd99::{} on br0", 11 + i)) {
                    return Err(table);
                }
            }
            Ok(())
        },
    );
    // Over IPv6 sessions only IPv6 unicast: the router has no IPv4 route from the nodes.
    let v4 = router
        .birdc(&["show", "route", "table", "master4", "count"])
        .expect("birdc");
    assert!(
        v4.contains("0 of 0 routes"),
        "IPv4 over an IPv6 session: {v4}"
    );
    // keepaliveTime 5s: the node proposed a hold time of 15 s, which BIRD (240 s) agreed to.
    let proto = router
        .birdc(&["show", "protocols", "all", "node0"])
        .expect("birdc");
    assert!(
        proto.contains("Established") && proto.contains("Hold timer:") && proto.contains("/15"),
        "negotiated hold time 15 s:\n{proto}"
    );

    // The nodes install what the router sends, via its IPv6 address.
    for i in 0..2 {
        wait_for(
            &format!("node{} routes 2001:db8:99::/48 via the router", i + 1),
            Duration::from_secs(20),
            || {
                let routes = cluster.routes(i).map_err(|e| e.to_string())?;
                if routes
                    .lines()
                    .any(|l| l.starts_with("2001:db8:99::/48 via fd99::1 dev eth0"))
                {
                    Ok(())
                } else {
                    Err(routes)
                }
            },
        );
    }

    // `brindlectl node status`: the router under IPv6, the mesh peer under IPv4.
    let status = cluster.node_status(0).expect("node status");
    let (v4_part, v6_part) = status
        .split_once("IPv6 BGP status")
        .unwrap_or_else(|| panic!("no IPv6 section:\n{status}"));
    let row = v6_part
        .lines()
        .find(|l| l.contains("| fd99::1 "))
        .unwrap_or_else(|| panic!("no row for fd99::1 under IPv6:\n{status}"));
    assert!(
        row.contains("global") && row.contains("Established"),
        "{row}"
    );
    assert!(
        v4_part.contains(&format!("| {} ", cluster.nodes[1].ip)) && !v4_part.contains("fd99::1"),
        "{status}"
    );
    wait_for(
        "node1 advertises both IPv6 blocks to the router and accepts its /48",
        Duration::from_secs(10),
        || {
            let json = cluster.bgp_peers(0).map_err(|e| e.to_string())?;
            let peer = json
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["address"] == "fd99::1")
                .ok_or_else(|| json.to_string())?;
            if peer["asn"] == 65300 && peer["advertised"] == 2 && peer["accepted"] == 1 {
                Ok(())
            } else {
                Err(peer.to_string())
            }
        },
    );
}
