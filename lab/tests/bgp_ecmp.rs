//! ECMP over BGP, end to end in network namespaces: a node peers over eBGP with two BIRD routers
//! on its segment that both announce the default route with equal attributes. The node installs
//! one multipath route through both; its pod reaches a server outside the cluster only through
//! them (the node has no other default route); when the router carrying the traffic goes down,
//! the route falls back to the other one and the traffic follows. Needs root and BIRD 2.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brindle_lab::bgp::{bird_available, Tor};
use brindle_lab::{can_run_here, in_ns, ip, Cluster, ClusterSpec, Encap, Routing, OUTSIDE_IP};

/// The routers' AS; the node is in the default AS 64512.
const ROUTER_AS: u32 = 65200;
/// The routers' addresses on the nodes' segment (the nodes are 10.99.0.11 and up).
const ROUTERS: [&str; 2] = ["10.99.0.2", "10.99.0.3"];

/// The two routers: namespaces on the fabric's bridge, each with a BIRD. Dropping this kills
/// the BIRDs and deletes the namespaces (their veths go with them), also when the test fails.
struct Routers {
    routers: Vec<Tor>,
    namespaces: Vec<String>,
}

impl Drop for Routers {
    fn drop(&mut self) {
        for r in &mut self.routers {
            r.stop();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

fn bird_config(me: &str, node: &str) -> String {
    format!(
        r#"log stderr all;
router id {me};
protocol device {{ scan time 2; }}
# Announced, not installed (no kernel protocol): the kernel's own default route via the fabric
# forwards the traffic.
protocol static default_route {{ ipv4; route 0.0.0.0/0 blackhole; }}
protocol bgp node1 {{
  local {me} as {ROUTER_AS};
  neighbor {node} as 64512;
  hold time 9;
  connect retry time 2;
  # Without it BIRD advertises graceful restart and the node would keep a dead router's route
  # for the restart time.
  graceful restart off;
  ipv4 {{ import none; export where net = 0.0.0.0/0; }};
}}
"#
    )
}

/// Starts the routers next to `cluster`'s nodes.
fn start_routers(cluster: &Cluster) -> Routers {
    let mut routers = Routers {
        routers: Vec::new(),
        namespaces: Vec::new(),
    };
    let node = cluster.nodes[0].ip.clone();
    for (i, addr) in ROUTERS.iter().enumerate() {
        let netns = format!("bl{}-router{i}", cluster.id);
        ip(&["netns", "add", &netns]).expect("netns add");
        routers.namespaces.push(netns.clone());
        let port = format!("r{i}");
        ip(&[
            "-n",
            &cluster.fabric,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns,
        ])
        .expect("veth to the router");
        ip(&[
            "-n",
            &cluster.fabric,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ])
        .expect("router port on br0");
        // A router forwarding back out of the interface the packet came in would send an ICMP
        // redirect, and the node would then bypass it: routers that stay on the path.
        for key in ["all", "default"] {
            in_ns(
                &netns,
                "sysctl",
                &["-q", "-w", &format!("net.ipv4.conf.{key}.send_redirects=0")],
            )
            .expect("sysctl");
        }
        in_ns(&netns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]).expect("sysctl");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", "10.99.0.1"],
        ] {
            in_ns(&netns, "ip", &args).expect("router interface");
        }
        let conf = cluster.dir.join(format!("router{i}.conf"));
        let ctl = cluster.dir.join(format!("router{i}.ctl"));
        let log = cluster.dir.join(format!("router{i}.log"));
        std::fs::write(&conf, bird_config(addr, &node)).expect("BIRD config");
        let logf = std::fs::File::create(&log).expect("BIRD log");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "/usr/sbin/bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("starting BIRD");
        routers.routers.push(Tor {
            rack: i,
            netns,
            ctl,
            conf,
            log,
            child: Some(child),
        });
    }
    routers
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

/// Packets the kernel of `netns` forwarded (`Ip: ForwDatagrams` of /proc/net/snmp).
fn forwarded(netns: &str) -> u64 {
    let snmp = in_ns(netns, "cat", &["/proc/net/snmp"]).expect("/proc/net/snmp");
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip_lines.next(), ip_lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no Ip: lines in {snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ForwDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no ForwDatagrams in {snmp}"))
}

/// The node's BGP default route, as `ip route show` prints it.
fn default_route(cluster: &Cluster) -> String {
    ip(&[
        "-n",
        &cluster.nodes[0].netns,
        "route",
        "show",
        "default",
        "proto",
        "98",
    ])
    .unwrap_or_default()
}

/// Pings the outside server from `pod` `count` times (one try each); how many were answered.
fn pings_answered(cluster: &Cluster, pod_netns: &str, count: u32) -> u32 {
    let out = Command::new("ip")
        .args(["netns", "exec", pod_netns, "ping", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.2", "-W", "1", OUTSIDE_IP])
        .output()
        .expect("running ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 5 received, ..."
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "ping output not understood:\n{text}\nnode's routes:\n{}",
                cluster.routes(0).unwrap_or_default()
            )
        })
}

fn log_tail(path: &Path) -> String {
    brindle_lab::tail(path, 30)
}

#[test]
fn a_node_spreads_over_two_equal_routers_and_falls_back_to_one_when_the_other_dies() {
    if !can_run_here(&[("BIRD 2 (bird2)", bird_available())]) {
        return;
    }
    let peers = ROUTERS
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            format!(
                "apiVersion: brindle.dev/v1\nkind: BGPPeer\nmetadata:\n  name: router{i}\nspec:\n  peerIP: {addr}\n  asNumber: {ROUTER_AS}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    let cluster = Cluster::build(ClusterSpec {
        nodes: 1,
        pods_per_node: 1,
        encap: Encap::Never,
        routing: Routing::Bgp,
        outside: true,
        // The outside server answers the node's address: it has no route to the pods.
        nat_outgoing: true,
        bgp_hold_time: 9,
        resources: peers,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    // From here: what the scenario takes once the binaries are built and the lab is up.
    let started = Instant::now();
    // Declared after the cluster, so dropped (BIRDs and namespaces gone) before it.
    let mut routers = start_routers(&cluster);
    let node_ns = cluster.nodes[0].netns.clone();
    // The node reaches the outside only over what BGP gives it, and keeps it that way.
    ip(&["-n", &node_ns, "route", "del", "default"]).expect("removing the static default");
    for key in ["all", "eth0"] {
        in_ns(
            &node_ns,
            "sysctl",
            &[
                "-q",
                "-w",
                &format!("net.ipv4.conf.{key}.accept_redirects=0"),
            ],
        )
        .expect("sysctl");
    }

    let took = wait_for(
        "one default route through both routers",
        Duration::from_secs(20),
        || {
            let route = default_route(&cluster);
            ROUTERS
                .iter()
                .all(|r| route.contains(&format!("nexthop via {r} dev eth0")))
        },
    );
    println!(
        "ECMP default route after {took:?}:\n{}",
        default_route(&cluster)
    );
    let status = cluster.node_status(0).expect("node status");
    for r in ROUTERS {
        assert!(
            status
                .lines()
                .any(|l| l.contains(&format!("| {r} ")) && l.contains("Established")),
            "{status}"
        );
    }

    let pod = cluster.pods[0].netns.clone();
    wait_for(
        "the pod reaches the outside server through the routers",
        Duration::from_secs(10),
        || pings_answered(&cluster, &pod, 1) == 1,
    );
    let before: Vec<u64> = routers
        .routers
        .iter()
        .map(|r| forwarded(&r.netns))
        .collect();
    assert_eq!(pings_answered(&cluster, &pod, 5), 5, "no loss over ECMP");
    let after: Vec<u64> = routers
        .routers
        .iter()
        .map(|r| forwarded(&r.netns))
        .collect();
    let carried: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // One flow hashes onto one path; the five echo requests went through the routers.
    assert!(
        carried.iter().sum::<u64>() >= 5,
        "forwarded by the routers: {carried:?}"
    );
    let (down, _) = carried
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| **c)
        .expect("two routers");
    let up = 1 - down;
    println!(
        "router {} carried the pings ({carried:?}); taking it down",
        ROUTERS[down]
    );

    // The router carrying the traffic dies: BIRD gone (its sessions close), its link down.
    routers.routers[down].stop();
    ip(&[
        "-n",
        &routers.routers[down].netns,
        "link",
        "set",
        "eth0",
        "down",
    ])
    .expect("link down");
    let took = wait_for(
        "the default route falls back to the other router",
        Duration::from_secs(20),
        || {
            let route = default_route(&cluster);
            route.starts_with(&format!("default via {} dev eth0", ROUTERS[up]))
                && !route.contains(ROUTERS[down])
        },
    );
    println!(
        "fell back after {took:?}: {}",
        default_route(&cluster).trim()
    );
    let before = forwarded(&routers.routers[up].netns);
    let answered = pings_answered(&cluster, &pod, 5);
    let carried = forwarded(&routers.routers[up].netns) - before;
    assert_eq!(
        answered,
        5,
        "traffic flows through {} alone; its BIRD:\n{}",
        ROUTERS[up],
        log_tail(&routers.routers[up].log)
    );
    assert!(carried >= 5, "{} forwarded {carried} packets", ROUTERS[up]);
    let status = cluster.node_status(0).expect("node status");
    assert!(
        status
            .lines()
            .any(|l| l.contains(&format!("| {} ", ROUTERS[down])) && !l.contains("Established")),
        "{status}"
    );
    println!("{status}\nscenario took {:?}", started.elapsed());
}
