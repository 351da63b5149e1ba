//! Issue #8 points 6-8 against the real binaries in network namespaces: what is deleted by hand
//! is restored within 2 seconds (the agent watches the kernel's notifications), foreign routes
//! are left alone, a restart neither removes nor re-adds a route, a deleted Node is forgotten
//! everywhere, and `/metrics` serves the `brindle_` metrics. Needs root.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brindle_lab::{can_run_here, in_ns, ip, Cluster, ClusterSpec};

fn two_nodes() -> Cluster {
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(30))
        .expect("routes converge");
    cluster
}

/// Polls `cond` until it holds; returns how long that took, or panics with `what` after
/// `deadline`.
fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /metrics` from node `i`'s agent (port 9091 inside the node's namespace).
fn metrics(cluster: &Cluster, i: usize) -> String {
    let script = "exec 3<>/dev/tcp/127.0.0.1/9091; \
                  printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    in_ns(&cluster.nodes[i].netns, "bash", &["-c", script]).expect("metrics server answers")
}

/// The value of the sample `name` (with its labels, as printed) in a scrape; 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn sh(ns: &str, cmd: &str) -> String {
    in_ns(ns, "sh", &["-c", cmd]).unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

#[test]
fn deleted_route_device_neighbour_and_fdb_come_back_and_foreign_routes_stay() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = two_nodes();
    let ns = cluster.nodes[0].netns.clone();
    let remote_route = cluster
        .routes(0)
        .expect("routes")
        .lines()
        .find(|l| l.contains("dev vxlan.brindle"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .expect("a remote block route through the tunnel");
    let has_route = |dst: &str| {
        cluster
            .routes(0)
            .map(|r| r.lines().any(|l| l.starts_with(&format!("{dst} "))))
            .unwrap_or(false)
    };
    let before = metrics(&cluster, 0);
    let kernel_passes = sample(&before, "brindle_reconciles_total{trigger=\"kernel\"}");

    // A foreign route, inside the pool and outside it: never Brindle's to touch.
    sh(
        &ns,
        "ip route add 10.244.250.0/24 via 10.99.0.1 proto static",
    );
    sh(&ns, "ip route add blackhole 192.0.2.0/24");

    // A route of ours, deleted by hand.
    ip(&["-n", &ns, "route", "del", &remote_route]).expect("route deleted");
    let took = wait_for(
        "the deleted route is restored",
        Duration::from_secs(2),
        || has_route(&remote_route),
    );
    println!("route restored after {took:?}");

    // A neighbour entry of ours.
    let neigh = sh(&ns, "ip neigh show dev vxlan.brindle nud permanent");
    let neigh_ip = neigh
        .split_whitespace()
        .next()
        .expect("a permanent neighbour on vxlan.brindle")
        .to_string();
    sh(&ns, &format!("ip neigh del {neigh_ip} dev vxlan.brindle"));
    let took = wait_for(
        "the deleted neighbour is restored",
        Duration::from_secs(2),
        || sh(&ns, "ip neigh show dev vxlan.brindle nud permanent").contains(&neigh_ip),
    );
    println!("neighbour restored after {took:?}");

    // An FDB entry of ours.
    let fdb = sh(&ns, "bridge fdb show dev vxlan.brindle | grep dst");
    let mac = fdb
        .split_whitespace()
        .next()
        .expect("an FDB entry on vxlan.brindle")
        .to_string();
    let dst = fdb
        .split_whitespace()
        .skip_while(|w| *w != "dst")
        .nth(1)
        .expect("the FDB entry's dst")
        .to_string();
    sh(
        &ns,
        &format!("bridge fdb del {mac} dev vxlan.brindle dst {dst}"),
    );
    let took = wait_for(
        "the deleted FDB entry is restored",
        Duration::from_secs(2),
        || sh(&ns, "bridge fdb show dev vxlan.brindle").contains(&mac),
    );
    println!("FDB entry restored after {took:?}");

    // The whole VXLAN device: it comes back with its routes, neighbours and FDB entries.
    sh(&ns, "ip link del vxlan.brindle");
    let took = wait_for(
        "the VXLAN device and its routes are restored",
        Duration::from_secs(2),
        || {
            has_route(&remote_route)
                && sh(
                    &ns,
                    "ip neigh show dev vxlan.brindle nud permanent 2>/dev/null || true",
                )
                .contains(&neigh_ip)
                && sh(&ns, "bridge fdb show dev vxlan.brindle 2>/dev/null || true").contains(&mac)
        },
    );
    println!("vxlan.brindle restored after {took:?}");
    let pods = cluster.pods.clone();
    assert!(
        cluster.ping(&pods[0], &pods[1].ip, 5),
        "pods reach each other through the rebuilt tunnel"
    );

    // Those repairs were kernel-triggered passes; the foreign routes outlived them.
    let after = metrics(&cluster, 0);
    assert!(
        sample(&after, "brindle_reconciles_total{trigger=\"kernel\"}") >= kernel_passes + 4.0,
        "kernel notifications triggered the passes:\n{after}"
    );
    let all = sh(&ns, "ip route show");
    assert!(
        all.lines()
            .any(|l| l.starts_with("10.244.250.0/24 via 10.99.0.1") && l.contains("proto static")),
        "{all}"
    );
    assert!(all.contains("blackhole 192.0.2.0/24"), "{all}");
}

#[test]
fn metrics_are_served_with_the_brindle_prefix() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = two_nodes();
    // The gauges follow the datastore: wait for the last pod's allocation to be seen.
    let mut text = String::new();
    wait_for(
        "the metrics count 4 addresses",
        Duration::from_secs(10),
        || {
            text = metrics(&cluster, 0);
            sample(&text, "brindle_ipam_addresses_in_use{pool=\"lab-pool\"}") == 4.0
        },
    );
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    for name in [
        "brindle_routes_programmed{kind=\"vxlan\"}",
        "brindle_routes_programmed{kind=\"blackhole\"}",
        "brindle_reconcile_duration_seconds_count",
        "brindle_dataplane_failures_total",
        "brindle_ipam_blocks{pool=\"lab-pool\"}",
        "brindle_ipam_addresses_in_use{pool=\"lab-pool\"}",
        "brindle_remote_nodes",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.contains("brindle_build_info{version="), "{text}");
    // Two nodes, one pod and one tunnel address each: the values a user would check.
    assert_eq!(sample(&text, "brindle_remote_nodes"), 1.0, "{text}");
    assert!(
        sample(&text, "brindle_routes_programmed{kind=\"vxlan\"}") >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "brindle_routes_programmed{kind=\"blackhole\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "brindle_ipam_addresses_in_use{pool=\"lab-pool\"}"),
        4.0,
        "{text}"
    );
    assert!(
        sample(&text, "brindle_reconcile_duration_seconds_count") >= 1.0,
        "{text}"
    );
}

/// `ip monitor route` in a namespace, killed on drop.
struct Monitor(Child);

impl Monitor {
    fn start(ns: &str) -> Monitor {
        let child = Command::new("ip")
            .args(["-n", ns, "monitor", "route", "neigh", "link"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor starts");
        Monitor(child)
    }

    fn stop(mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut out = String::new();
        if let Some(mut stdout) = self.0.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_agent_restart_neither_removes_nor_readds_anything() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = two_nodes();
    let ns = cluster.nodes[0].netns.clone();
    let routes_before = cluster.routes(0).expect("routes");
    let monitor = Monitor::start(&ns);
    // Let `ip monitor` subscribe before anything can happen.
    std::thread::sleep(Duration::from_millis(200));
    cluster.stop_agent(0).expect("agent stops");
    cluster.start_agent(0).expect("agent starts");
    cluster
        .wait_ready(0, Duration::from_secs(30))
        .expect("agent ready again");
    // Ready means the first full pass is done; give a kernel-triggered pass time to happen too.
    let m = metrics(&cluster, 0);
    assert!(
        sample(&m, "brindle_reconcile_duration_seconds_count") >= 1.0,
        "{m}"
    );
    std::thread::sleep(Duration::from_millis(500));
    // A canary, so that a monitor that saw nothing at all cannot pass the test.
    sh(&ns, "ip route add blackhole 198.51.100.0/24");
    std::thread::sleep(Duration::from_millis(100));
    let seen = monitor.stop();
    assert!(
        seen.contains("198.51.100.0/24"),
        "ip monitor saw nothing:\n{seen}"
    );
    let ours: Vec<&str> = seen
        .lines()
        // The kernel's own routes (e.g. vxlan.brindle's IPv6 link-local address once its DAD
        // ends, which can fall in this window on a young cluster) are not the agent's doing.
        .filter(|l| !l.contains("proto kernel"))
        .filter(|l| {
            l.contains("proto 98")
                || l.contains("vxlan.brindle")
                || l.starts_with("Deleted")
                || l.contains("PERMANENT")
        })
        .collect();
    assert!(
        ours.is_empty(),
        "the restart changed the kernel:\n{}",
        ours.join("\n")
    );
    assert_eq!(cluster.routes(0).expect("routes"), routes_before);
}

#[test]
fn a_deleted_node_is_forgotten_by_the_others_and_its_blocks_released() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = two_nodes();
    let ns = cluster.nodes[0].netns.clone();
    let gone = cluster.nodes[1].name.clone();
    let blocks: serde_json::Value = serde_json::from_str(
        &cluster
            .ctl(&["get", "ipamblocks", "-o", "json"])
            .expect("blocks"),
    )
    .expect("json");
    let their_blocks: Vec<String> = blocks["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["spec"]["affinity"].as_str() == Some(&format!("host:{gone}")))
        .filter_map(|b| b["spec"]["cidr"].as_str().map(str::to_string))
        .collect();
    assert!(!their_blocks.is_empty(), "{blocks}");
    assert!(sh(&ns, "bridge fdb show dev vxlan.brindle").contains("dst 10.99.0.12"));

    cluster.stop_agent(1).expect("agent stops");
    cluster
        .ctl(&["delete", "node", &gone])
        .expect("node deleted");

    wait_for(
        "the deleted node's routes, neighbours and FDB entries are removed",
        Duration::from_secs(10),
        || {
            let routes = cluster.routes(0).unwrap_or_default();
            their_blocks
                .iter()
                .all(|b| !routes.lines().any(|l| l.starts_with(&format!("{b} "))))
                && !sh(&ns, "bridge fdb show dev vxlan.brindle").contains("dst 10.99.0.12")
                && sh(&ns, "ip neigh show dev vxlan.brindle nud permanent")
                    .trim()
                    .is_empty()
        },
    );
    wait_for(
        "the deleted node's affinities are released",
        Duration::from_secs(10),
        || {
            let affinities = cluster
                .ctl(&["get", "blockaffinities", "-o", "json"])
                .unwrap_or_default();
            let blocks = cluster
                .ctl(&["get", "ipamblocks", "-o", "json"])
                .unwrap_or_default();
            !affinities.contains(&format!("\"{gone}\""))
                && !blocks.contains(&format!("host:{gone}"))
        },
    );
}

#[test]
fn a_write_blocked_by_a_foreign_route_is_retried_and_never_forced() {
    if !can_run_here(&[]) {
        return;
    }
    let cluster = two_nodes();
    let ns = cluster.nodes[0].netns.clone();
    let remote_route = cluster
        .routes(0)
        .expect("routes")
        .lines()
        .find(|l| l.contains("dev vxlan.brindle"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .expect("a remote block route through the tunnel");
    let failures_before = sample(&metrics(&cluster, 0), "brindle_dataplane_failures_total");

    // Someone else takes the destination: ours deleted and a static route put in its place in
    // one batch, so the agent's next write collides with it.
    sh(
        &ns,
        &format!(
            "printf 'route del {remote_route}\\nroute add {remote_route} via 10.99.0.1 proto static\\n' \
             | ip -batch -"
        ),
    );
    wait_for(
        "the blocked write is counted as a failure",
        Duration::from_secs(5),
        || sample(&metrics(&cluster, 0), "brindle_dataplane_failures_total") > failures_before,
    );
    // Retried (with backoff), never forced over the foreign route.
    std::thread::sleep(Duration::from_secs(1));
    let failures = sample(&metrics(&cluster, 0), "brindle_dataplane_failures_total");
    assert!(failures >= failures_before + 2.0, "retried: {failures}");
    let all = sh(&ns, &format!("ip route show exact {remote_route}"));
    assert!(all.contains("proto static"), "foreign route kept: {all}");
    assert!(!all.contains("proto 98"), "{all}");

    // Once it is gone, a retry programs ours.
    sh(&ns, &format!("ip route del {remote_route} proto static"));
    // Backoff after ~1.5 s of failures is at most 3.2 s; the periodic resync (10 s) also comes.
    wait_for(
        "a retry programs the route",
        Duration::from_secs(10),
        || sh(&ns, &format!("ip route show exact {remote_route}")).contains("vxlan.brindle"),
    );
}
