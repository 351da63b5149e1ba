//! `brindle-node --datastore kubernetes` started as the DaemonSet starts it (the environment of
//! manifests/brindle.yaml), on an empty cluster: a FAKE of the API server (not a real one: none
//! can run here; datastore_conformance/fake_apiserver.rs) serving Brindle's CRDs and the node's
//! core v1 Node, inside a throwaway network namespace that is the node. Checks that the agent
//! creates the default pool, registers its Node under NODENAME with the address of the
//! Kubernetes Node's InternalIP (prefix from the local interface), and makes only calls the
//! manifest's ClusterRole allows. Needs root; skipped without it unless CI is set.

#[allow(dead_code)]
#[path = "datastore_conformance/fake_apiserver.rs"]
mod fake_apiserver;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use brindle_agent::datastore::kubernetes::crd;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::rbac::v1::ClusterRole;
use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn can_run() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "kubernetes_node_netns needs root (CI is set, so not skipping)"
    );
    eprintln!("skipping: needs root");
    false
}

/// A network namespace, deleted when dropped (also when the test fails).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "brd-k8s-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    fn sh(&self, cmd: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "`{cmd}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The agent process, killed when dropped; its stderr goes to a file.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn temp(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "brindle-k8s-node-{name}-{}-{nanos}",
        std::process::id()
    ))
}

/// Starts the fake API server with its listening socket inside `ns` (a socket belongs to the
/// namespace it was created in): only processes in the namespace reach it.
fn fake_in(ns: &Netns, kubeconfig: PathBuf) -> FakeApiServer {
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let file = File::open(&path).expect("netns file");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let kinds: Vec<&str> = crd::KINDS.iter().map(|k| k.kind).collect();
        FakeApiServer::start(&kinds, kubeconfig)
    })
    .join()
    .expect("fake API server thread")
}

/// The DaemonSet's env for brindle-node, from manifests/brindle.yaml.
fn manifest_env_and_role() -> (Vec<(String, String)>, ClusterRole) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/brindle.yaml"
    ))
    .expect("manifest");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("yaml");
            serde_json::to_value(v).ok().filter(|v| !v.is_null())
        })
        .collect();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let agent = containers
        .iter()
        .find(|c| c["name"] == "brindle-node")
        .expect("brindle-node");
    let env = agent["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "brindle-node")
        .expect("ClusterRole");
    (
        env,
        serde_json::from_value(role.clone()).expect("ClusterRole"),
    )
}

fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    role.rules.iter().flatten().any(|rule| {
        rule.api_groups.iter().flatten().any(|g| g == group)
            && rule.resources.iter().flatten().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn agent_starts_on_an_empty_cluster_creates_the_pool_and_takes_the_internal_ip() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add eth0 type veth peer name peer0 && \
         ip addr add 10.77.0.7/24 dev eth0 && ip addr add 10.88.0.9/24 dev peer0 && \
         ip link set eth0 up && ip link set peer0 up",
    );
    let kubeconfig = temp("kubeconfig");
    let fake = fake_in(&ns, kubeconfig.clone());
    // The kubelet's Node: its InternalIP is eth0's address, not the first one found.
    fake.set_core_node(
        "worker-7",
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "worker-7", "resourceVersion": "81234" },
            "status": { "addresses": [
                { "type": "Hostname", "address": "worker-7" },
                { "type": "InternalIP", "address": "10.77.0.7" }
            ]}
        }),
    );

    let (env, role) = manifest_env_and_role();
    let log = temp("agent.log");
    let socket = temp("agent.sock");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_brindle-node")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in &env {
        cmd.env(name, value);
    }
    cmd.env("NODENAME", "worker-7")
        .env("BRINDLE_DATASTORE", fake.spec())
        .env("BRINDLE_IP_AUTODETECTION_METHOD", "kubernetes-internal-ip")
        .env("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16")
        .env("BRINDLE_LOG_FORMAT", "text")
        .env("BRINDLE_SOCKET", &socket)
        .env("BRINDLE_HEALTH_LISTEN", "off")
        .env("BRINDLE_METRICS_LISTEN", "off")
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"));
    let agent = Agent {
        child: cmd.spawn().expect("start brindle-node"),
        log,
    };
    let _socket_cleanup = SocketFile(socket);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (pool, node) = loop {
        let pool = fake.object("ippools", "default-ipv4-ippool");
        let node = fake.object("nodes", "worker-7");
        if let (Some(pool), Some(node)) = (&pool, &node) {
            break (pool.clone(), node.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no pool or Node after 30 s; agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(pool["spec"]["cidr"], "10.244.0.0/16", "{pool}");
    assert_eq!(
        pool["spec"]["vxlanMode"], "CrossSubnet",
        "the manifest's mode: {pool}"
    );
    assert_eq!(pool["spec"]["natOutgoing"], true, "{pool}");
    assert_eq!(
        node["spec"]["bgp"]["ipv4Address"], "10.77.0.7/24",
        "the InternalIP with eth0's prefix: {node}"
    );

    // Every call the agent made is one the manifest's ClusterRole allows. Let the controller
    // start its watches first: wait until one of every kind has been made.
    let kinds = crd::KINDS.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let watched: std::collections::BTreeSet<String> = fake
            .requests()
            .into_iter()
            .filter(|(verb, _)| verb == "watch")
            .map(|(_, r)| r)
            .collect();
        if watched.len() == kinds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller watches every kind; watched {watched:?}; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let denied: Vec<(String, String)> = fake
        .requests()
        .into_iter()
        .filter(|(verb, resource)| match resource.strip_prefix("core/") {
            Some(core) => !allows(&role, "", core, verb),
            None => !allows(&role, "brindle.dev", resource, verb),
        })
        .collect();
    assert!(
        denied.is_empty(),
        "ClusterRole brindle-node lacks {denied:?}"
    );
    let log_text = agent.log();
    assert!(
        log_text.contains("default IP pool created"),
        "the log says so:\n{log_text}"
    );
}

struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
