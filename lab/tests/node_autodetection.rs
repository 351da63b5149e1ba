//! Issue #8 point 7: the node address chosen by `--ip-autodetection-method`, chosen again when
//! the node's addresses change, and what the other nodes then do. Real binaries in network
//! namespaces; needs root.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brindle_lab::{can_run_here, in_ns, tail, Cluster, ClusterSpec};

/// An agent started by the test with its own flags; stopped (SIGTERM, then SIGKILL) on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_address(cluster: &Cluster, name: &str) -> Option<String> {
    let out = cluster.ctl(&["get", "nodes", "-o", "json"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|n| n["metadata"]["name"] == name)?["spec"]["bgp"]["ipv4Address"]
        .as_str()
        .map(str::to_string)
}

fn wait_for(what: &str, deadline: Duration, log: &std::path::Path, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}; agent log:\n{}",
            tail(log, 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_node_address_follows_the_autodetection_method_and_address_changes() {
    if !can_run_here(&[]) {
        return;
    }
    let mut cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 0,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    let ns = cluster.nodes[0].netns.clone();
    let name = cluster.nodes[0].name.clone();
    let other_ns = cluster.nodes[1].netns.clone();
    cluster.stop_agent(0).expect("lab agent stops");

    // node1 gets a second address on eth0 and a second uplink-looking interface: first-found
    // would be ambiguous; cidr= picks the one address inside 10.99.0.64/26.
    in_ns(&ns, "ip", &["addr", "add", "10.99.0.71/24", "dev", "eth0"]).expect("address added");
    // (A veth pair: the dummy module may be missing.)
    in_ns(
        &ns,
        "ip",
        &[
            "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
        ],
    )
    .expect("link added");
    in_ns(&ns, "ip", &["addr", "add", "172.31.9.1/24", "dev", "eth9"]).expect("address added");
    in_ns(&ns, "ip", &["link", "set", "eth9", "up"]).expect("link up");

    let log = cluster.dir.join("autodetect-agent.log");
    let out = fs::File::create(&log).expect("log file");
    let agent = Agent(
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(cluster.bins.join("brindle-node"))
            .args(["--node-name", &name, "--datastore", &cluster.datastore])
            .args(["--node-ip", "autodetect"])
            .args(["--ip-autodetection-method", "cidr=10.99.0.64/26"])
            .arg("--socket")
            .arg(&cluster.nodes[0].socket)
            .args(["--health-listen", "off", "--metrics-listen", "off"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("agent starts"),
    );

    wait_for(
        "node1 registers 10.99.0.71/24",
        Duration::from_secs(20),
        &log,
        || node_address(&cluster, &name).as_deref() == Some("10.99.0.71/24"),
    );
    wait_for(
        "node2 sends node1's VXLAN traffic to 10.99.0.71",
        Duration::from_secs(10),
        &log,
        || {
            in_ns(
                &other_ns,
                "bridge",
                &["fdb", "show", "dev", "vxlan.brindle"],
            )
            .map(|f| f.contains("dst 10.99.0.71 "))
            .unwrap_or(false)
        },
    );

    // The address moves: the agent notices from the kernel's notifications, updates its Node,
    // and the other node follows.
    in_ns(&ns, "ip", &["addr", "del", "10.99.0.71/24", "dev", "eth0"]).expect("address deleted");
    in_ns(&ns, "ip", &["addr", "add", "10.99.0.72/24", "dev", "eth0"]).expect("address added");
    wait_for(
        "node1 re-registers 10.99.0.72/24",
        Duration::from_secs(10),
        &log,
        || node_address(&cluster, &name).as_deref() == Some("10.99.0.72/24"),
    );
    wait_for(
        "node2 follows to 10.99.0.72",
        Duration::from_secs(10),
        &log,
        || {
            in_ns(
                &other_ns,
                "bridge",
                &["fdb", "show", "dev", "vxlan.brindle"],
            )
            .map(|f| f.contains("dst 10.99.0.72 ") && !f.contains("dst 10.99.0.71 "))
            .unwrap_or(false)
        },
    );
    drop(agent);

    // first-found with two qualifying interfaces: it starts, and the warning names both.
    let log2 = cluster.dir.join("first-found-agent.log");
    let out = fs::File::create(&log2).expect("log file");
    let _agent = Agent(
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(cluster.bins.join("brindle-node"))
            .args(["--node-name", &name, "--datastore", &cluster.datastore])
            .args(["--node-ip", "autodetect"])
            .arg("--socket")
            .arg(&cluster.nodes[0].socket)
            .args(["--health-listen", "off", "--metrics-listen", "off"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("agent starts"),
    );
    wait_for(
        "the ambiguity warning",
        Duration::from_secs(20),
        &log2,
        || {
            let text = fs::read_to_string(&log2).unwrap_or_default();
            text.contains("ambiguous") && text.contains("on eth0") && text.contains("on eth9")
        },
    );

    // A method that cannot be parsed is refused with a clear error, before anything starts.
    let bad = Command::new(cluster.bins.join("brindle-node"))
        .args([
            "--ip-autodetection-method",
            "interface=(",
            "--datastore",
            "embedded:/nonexistent/x.db",
        ])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("IP autodetection method") && stderr.contains("regular expression"),
        "{stderr}"
    );
}
