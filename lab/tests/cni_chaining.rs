//! Brindle's plugin as the first of a conflist, followed by the reference `portmap` and
//! `bandwidth` plugins (Debian's containernetworking-plugins), run the way libcni runs a chain:
//! a port mapping really forwards, the shaping is on the pod's host-side veth, and DEL removes
//! both. Root only; skipped outside CI when root or the plugins are missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brindle_lab::cni_exec::{portmap_and_bandwidth, reference_plugin};
use brindle_lab::{in_ns, is_root, Cluster, ClusterSpec};
use serde_json::json;

fn can_run() -> bool {
    let missing: Vec<&str> = ["portmap", "bandwidth"]
        .into_iter()
        .filter(|p| reference_plugin(p).is_none())
        .collect();
    let reason = if !is_root() {
        "needs root".to_string()
    } else if !missing.is_empty() {
        format!("needs the reference CNI plugins {missing:?} (apt-get install containernetworking-plugins)")
    } else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but this test cannot run: {reason}");
    }
    eprintln!("skipped: {reason}");
    false
}

/// Kills the server in the pod when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to `addr:port` from namespace `ns` and returns what the server said.
fn fetch(ns: &str, addr: &str, port: u16) -> Option<String> {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port} && timeout 2 cat <&3");
    in_ns(ns, "timeout", &["3", "bash", "-c", &script])
        .ok()
        .map(|s| s.trim().to_string())
}

fn fetch_until(ns: &str, addr: &str, port: u16, want: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        last = fetch(ns, addr, port);
        if last.as_deref() == Some(want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{addr}:{port} from {ns}: last answer {last:?}"))
}

fn host_veth(result: &serde_json::Value) -> String {
    result["interfaces"]
        .as_array()
        .expect("result has interfaces")
        .iter()
        .find(|i| i.get("sandbox").is_none())
        .and_then(|i| i["name"].as_str())
        .expect("the result names the host-side veth (bandwidth needs it)")
        .to_string()
}

#[test]
fn portmap_forwards_and_bandwidth_shapes_after_brindle() {
    if !can_run() {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 0,
        verbose: false,
        chain: portmap_and_bandwidth(),
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    let runtime_config = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {
            "ingressRate": 8_000_000, "ingressBurst": 1_000_000,
            "egressRate": 8_000_000, "egressBurst": 1_000_000,
        },
    });
    let web = cluster
        .add_pod_with(0, "web", runtime_config)
        .expect("ADD through brindle, portmap and bandwidth");
    let node1_ns = cluster.nodes[0].netns.clone();
    let node1_ip = cluster.nodes[0].ip.clone();
    let node2_ns = cluster.nodes[1].netns.clone();

    // The chain's result is Brindle's, passed through: the pod's address and the host veth.
    assert_eq!(
        web.result["ips"][0]["address"],
        format!("{}/32", web.ip),
        "{}",
        web.result
    );
    let veth = host_veth(&web.result);

    let _server = Server(
        Command::new("ip")
            .args(["netns", "exec", &web.netns])
            .arg(env!("CARGO_BIN_EXE_brindle-lab"))
            .args(["serve", "--port", "80", "--reply", "hello-from-web"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts in the pod"),
    );
    // The pod answers on its own address (from the other node, through VXLAN)...
    fetch_until(&node2_ns, &web.ip, 80, "hello-from-web").expect("pod reachable on port 80");
    // ...and on its node's port 8080, from another node and from outside the cluster.
    fetch_until(&node2_ns, &node1_ip, 8080, "hello-from-web")
        .expect("hostPort 8080 on node1 forwards to the pod from node2");
    fetch_until(&cluster.fabric, &node1_ip, 8080, "hello-from-web")
        .expect("hostPort 8080 on node1 forwards to the pod from the fabric");

    // bandwidth: ingress to the pod is a tbf on the host veth; egress goes through an ifb.
    let qdisc = in_ns(&node1_ns, "tc", &["qdisc", "show", "dev", &veth]).expect("tc qdisc");
    assert!(qdisc.contains("tbf"), "no tbf on {veth}: {qdisc}");
    assert!(
        qdisc.contains("ingress"),
        "no ingress qdisc on {veth}: {qdisc}"
    );
    let links = in_ns(&node1_ns, "ip", &["-o", "link", "show", "type", "ifb"]).expect("ip link");
    assert_eq!(
        links.lines().count(),
        1,
        "one ifb device for the pod's egress: {links}"
    );

    let ipam = cluster
        .ctl(&["ipam", "show", "--ip", &web.ip])
        .expect("ipam show --ip");
    assert!(ipam.contains("web"), "the address is the pod's: {ipam}");
    let rules = in_ns(&node1_ns, "iptables-save", &[]).expect("iptables-save");
    assert!(
        rules.contains("--dport 8080"),
        "portmap's DNAT rule:\n{rules}"
    );

    cluster.del_pod("web").expect("DEL through the chain");
    let rules = in_ns(&node1_ns, "iptables-save", &[]).expect("iptables-save");
    assert!(
        !rules.contains("--dport 8080"),
        "portmap left its DNAT rule behind:\n{rules}"
    );
    let links = in_ns(&node1_ns, "ip", &["-o", "link", "show", "type", "ifb"]).expect("ip link");
    assert!(links.trim().is_empty(), "ifb device left behind: {links}");
    let ipam = cluster
        .ctl(&["ipam", "show", "--ip", &web.ip])
        .unwrap_or_else(|e| e.to_string());
    assert!(
        ipam.contains("not currently assigned"),
        "address still allocated after DEL: {ipam}"
    );
    assert!(
        fetch(&node2_ns, &node1_ip, 8080)
            .unwrap_or_default()
            .is_empty(),
        "port 8080 still answers after DEL"
    );
}
