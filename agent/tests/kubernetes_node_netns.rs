//! `brindle-node --datastore kubernetes` started as the DaemonSet starts it (the environment of
//! manifests/brindle.yaml), on an empty cluster: a FAKE of the API server (not a real one: none
//! can run here; datastore_conformance/fake_apiserver.rs) serving Brindle's CRDs and the node's
//! core v1 Node, inside a throwaway network namespace that is the node. Checks that the agent
//! creates the default pool, registers its Node under NODENAME with the address of the
//! Kubernetes Node's InternalIP (prefix from the local interface), and makes only calls the
//! manifest's ClusterRole allows; that a pod ADD records the Pod's labels on its
//! WorkloadEndpoint and patches the Pod's IP annotations (also with a slow Pod API); and that
//! the agent keeps its routes through 410 Gone and an API-server outage, and removes a deleted
//! Node's. Needs root; skipped without it unless CI is set.

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
    /// Starts brindle-node in `ns` as the DaemonSet would: the manifest's environment `env`,
    /// node `worker-7`, the default IPv4 pool 10.244.0.0/16, its API on `socket`, health and
    /// metrics off, then `settings` on top (the datastore, how the node IP is found, ...).
    fn start(
        ns: &Netns,
        env: &[(String, String)],
        settings: &[(&str, String)],
        socket: &std::path::Path,
        log: PathBuf,
    ) -> Agent {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_brindle-node")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.env("NODENAME", "worker-7")
            .env("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16")
            .env("BRINDLE_LOG_FORMAT", "text")
            .env("BRINDLE_SOCKET", socket)
            .env("BRINDLE_HEALTH_LISTEN", "off")
            .env("BRINDLE_METRICS_LISTEN", "off");
        for (name, value) in settings {
            cmd.env(name, value);
        }
        cmd.stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        Agent {
            child: cmd.spawn().expect("start brindle-node"),
            log,
        }
    }

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
    let agent = Agent::start(
        &ns,
        &env,
        &[
            ("BRINDLE_DATASTORE", fake.spec()),
            (
                "BRINDLE_IP_AUTODETECTION_METHOD",
                "kubernetes-internal-ip".to_string(),
            ),
        ],
        &socket,
        log,
    );
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
            .filter(|(verb, r)| verb == "watch" && !r.starts_with("core/"))
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

/// Runs `f` on a thread inside `ns` (where the fake API server listens) with a tokio runtime.
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let file = File::open(&path).expect("netns file");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("thread in the namespace")
}

/// An HTTP GET of `path` on 127.0.0.1:`port` inside `ns`: (status, body), or None when nothing
/// answers.
fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    in_ns(ns, move || {
        Box::pin(async move {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            let code = text.split_whitespace().nth(1)?.parse().ok()?;
            let body = text
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            Some((code, body))
        })
    })
}

/// `ip route show proto 98` (Brindle's routes) in `ns`.
fn brindle_routes(ns: &Netns) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.0, "route", "show", "proto", "98"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for `cond`, failing with `what` and the agent's log after `secs`.
fn wait_for(agent: &Agent, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} (after {secs} s); agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A background process, killed when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The API server as a node agent meets it over days: a watch resumed after 410 Gone, an outage,
/// then a Node deleted. Against the fake API server, with the agent in a network namespace:
/// - 410 Gone: the controller's view is rebuilt from a full relist, and the other node's block
///   route is neither removed nor re-added (`ip monitor route` sees no deletion);
/// - outage (every request 503 for a while): readiness says the datastore is unreachable,
///   liveness stays OK, the route stays; on recovery the node is ready again;
/// - the other Node deleted: its block route goes and its block affinity is released.
#[test]
fn fake_apiserver_410_outage_and_node_deletion() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add eth0 type veth peer name peer0 && \
         ip addr add 10.77.0.7/24 dev eth0 && ip link set eth0 up && ip link set peer0 up",
    );
    let kubeconfig = temp("kubeconfig-outage");
    let fake = fake_in(&ns, kubeconfig.clone());
    let spec = fake.spec();
    let (env, _) = manifest_env_and_role();
    let log = temp("agent-outage.log");
    let socket = temp("agent-outage.sock");
    let health_port = 19000 + (std::process::id() % 1000) as u16;
    let agent = Agent::start(
        &ns,
        &env,
        &[
            ("BRINDLE_DATASTORE", spec.clone()),
            ("IP", "10.77.0.7/24".to_string()),
            ("BRINDLE_HEALTH_LISTEN", format!("127.0.0.1:{health_port}")),
        ],
        &socket,
        log,
    );
    let _socket_cleanup = SocketFile(socket);
    wait_for(&agent, 30, "the default pool", || {
        fake.object("ippools", "default-ipv4-ippool").is_some()
    });

    // Another node with a pod: its block is routed via its address.
    let spec2 = spec.clone();
    let block: String = in_ns(&ns, move || {
        Box::pin(async move {
            let store = brindle_agent::datastore::open(&spec2).await.expect("open");
            brindle_agent::node::register(
                &store,
                "worker-8",
                "10.77.0.8/24".parse().expect("net"),
                None,
            )
            .await
            .expect("register worker-8");
            let ipam = brindle_ipam::Ipam::new(store.clone());
            let ips = ipam
                .auto_assign(&brindle_ipam::AssignRequest::workload(
                    "k8s-pod-network.w8",
                    "worker-8",
                    1,
                ))
                .await
                .expect("assign on worker-8");
            let ip = ips[0].addr();
            let block = ipnet::IpNet::new(ip, 26).expect("block").trunc();
            block.to_string()
        })
    });
    let route_prefix = format!("{block} via 10.77.0.8");
    wait_for(&agent, 30, "a route to worker-8's block", || {
        brindle_routes(&ns).contains(&route_prefix)
    });
    wait_for(&agent, 30, "ready", || {
        http_get(&ns, health_port, "/readiness").is_some_and(|(code, _)| code == 200)
    });
    let monitor_log = temp("monitor");
    let _monitor = Background(
        Command::new("ip")
            .args(["-n", &ns.0, "monitor", "route"])
            .stdout(File::create(&monitor_log).expect("monitor file"))
            .spawn()
            .expect("ip monitor"),
    );

    // 410 Gone: a change, the history compacted past it, the watches cut. They resume from an
    // expired resourceVersion and the controller relists.
    let spec3 = spec.clone();
    in_ns(&ns, move || {
        Box::pin(async move {
            let store = brindle_agent::datastore::open(&spec3).await.expect("open");
            let ipam = brindle_ipam::Ipam::new(store);
            ipam.auto_assign(&brindle_ipam::AssignRequest::workload(
                "k8s-pod-network.w8b",
                "worker-8",
                1,
            ))
            .await
            .expect("second pod on worker-8");
        })
    });
    fake.compact(fake.revision());
    fake.cut_watches();
    wait_for(&agent, 30, "a relist after 410", || {
        agent
            .log()
            .contains("datastore history compacted; relisting")
    });
    wait_for(&agent, 30, "the relisted view loaded", || {
        agent.log().matches("datastore loaded").count() >= 2
    });
    assert!(brindle_routes(&ns).contains(&route_prefix));

    // Outage.
    fake.set_unavailable(true);
    wait_for(&agent, 30, "readiness reports the datastore", || {
        http_get(&ns, health_port, "/readiness")
            .is_some_and(|(code, body)| code == 503 && body.contains("datastore unreachable"))
    });
    // Through a full resync period and more failures, the route stays and the loop is live.
    let outage_end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < outage_end {
        assert!(
            brindle_routes(&ns).contains(&route_prefix),
            "route removed during the outage; log:\n{}",
            agent.log()
        );
        let live = http_get(&ns, health_port, "/liveness").expect("liveness answers");
        assert_eq!(live.0, 200, "{live:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    fake.set_unavailable(false);
    wait_for(&agent, 30, "ready after the outage", || {
        http_get(&ns, health_port, "/readiness").is_some_and(|(code, _)| code == 200)
    });
    let monitored = std::fs::read_to_string(&monitor_log).unwrap_or_default();
    let _ = std::fs::remove_file(&monitor_log);
    assert!(
        !monitored
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains(&block)),
        "the block route was removed (410 or outage):\n{monitored}"
    );

    // Node deletion: the route goes, the affinity is released.
    let spec4 = spec.clone();
    in_ns(&ns, move || {
        Box::pin(async move {
            use brindle_ipam::store::StoreExt;
            let store = brindle_agent::datastore::open(&spec4).await.expect("open");
            let node = store
                .get_obj::<brindle_agent::model::NodeSpec>("worker-8")
                .await
                .expect("get")
                .expect("worker-8 exists");
            store.delete_obj(&node).await.expect("delete worker-8");
        })
    });
    wait_for(&agent, 30, "worker-8's route removed", || {
        !brindle_routes(&ns).contains(&block)
    });
    wait_for(&agent, 30, "worker-8's block affinity released", || {
        let spec5 = spec.clone();
        in_ns(&ns, move || {
            Box::pin(async move {
                use brindle_ipam::store::StoreExt;
                let store = brindle_agent::datastore::open(&spec5).await.expect("open");
                let (blocks, _) = store
                    .list_objs::<brindle_ipam::model::IpamBlockSpec>()
                    .await
                    .expect("blocks");
                !blocks
                    .iter()
                    .any(|b| b.spec.affinity.as_deref() == Some("host:worker-8"))
            })
        })
    });
    drop(fake);
    let _ = std::fs::remove_file(&kubeconfig);
}

/// POSTs `body` to `path` on the agent's Unix socket; (status, body).
fn post_unix(socket: &std::path::Path, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("agent socket");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: brindle\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string(),
    )
}

/// A pod ADD in Kubernetes mode: the WorkloadEndpoint carries the pod's namespace and the Pod's
/// labels (read from the API server), and the Pod receives its addresses as a merge patch of
/// the brindle.dev/podIP(s) annotations, checked as the fake API server received it.
#[test]
fn fake_apiserver_pod_add_records_labels_and_annotates_the_pod() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add eth0 type veth peer name peer0 && \
         ip addr add 10.77.0.7/24 dev eth0 && ip link set eth0 up && ip link set peer0 up",
    );
    let pod_ns = Netns::new();
    let kubeconfig = temp("kubeconfig-pods");
    let fake = fake_in(&ns, kubeconfig.clone());
    fake.set_core_pod(
        "shop",
        "web-1",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "web-1", "namespace": "shop", "resourceVersion": "7001",
                          "labels": { "app": "web", "tier": "front" } },
            "spec": { "nodeName": "worker-7", "containers": [{ "name": "c", "image": "x" }] }
        }),
    );
    let (env, _) = manifest_env_and_role();
    let log = temp("agent-pods.log");
    let socket = temp("agent-pods.sock");
    let agent = Agent::start(
        &ns,
        &env,
        &[
            ("BRINDLE_DATASTORE", fake.spec()),
            ("IP", "10.77.0.7/24".to_string()),
        ],
        &socket,
        log,
    );
    let _socket_cleanup = SocketFile(socket.clone());
    wait_for(&agent, 30, "the agent's socket and pool", || {
        socket.exists() && fake.object("ippools", "default-ipv4-ippool").is_some()
    });

    let request = brindle_agent::api::CniAddRequest {
        container_id: "c0ffee0001".to_string(),
        netns: format!("/run/netns/{}", pod_ns.0),
        ifname: "eth0".to_string(),
        network: "k8s-pod-network".to_string(),
        pod_namespace: Some("shop".to_string()),
        pod_name: Some("web-1".to_string()),
        mtu: None,
        assign_ipv4: None,
        assign_ipv6: None,
    };
    let body = serde_json::to_string(&request).expect("json");
    let (code, answer) = post_unix(&socket, brindle_agent::api::PATH_CNI_ADD, &body);
    assert_eq!(code, 200, "{answer}; log:\n{}", agent.log());
    let answer: Value = serde_json::from_str(&answer).expect("ADD answer");
    let ip = answer["ips"][0].as_str().expect("an address").to_string();

    let wep = fake
        .object("workloadendpoints", "worker--7-k8s-shop-web--1-eth0")
        .unwrap_or_else(|| {
            panic!(
                "no WorkloadEndpoint; log:\n{}\nrequests {:?}",
                agent.log(),
                fake.requests()
            )
        });
    let labels = &wep["metadata"]["labels"];
    assert_eq!(labels["app"], "web", "{wep}");
    assert_eq!(labels["tier"], "front", "{wep}");
    assert_eq!(labels["brindle.dev/namespace"], "shop", "{wep}");
    assert_eq!(labels["brindle.dev/orchestrator"], "k8s", "{wep}");
    assert_eq!(wep["spec"]["namespace"], "shop", "{wep}");
    assert_eq!(wep["spec"]["pod"], "web-1", "{wep}");

    wait_for(&agent, 10, "the Pod patched", || {
        !fake.pod_patches().is_empty()
    });
    assert_eq!(
        fake.pod_patches(),
        vec![(
            "shop".to_string(),
            "web-1".to_string(),
            json!({ "metadata": { "annotations": {
                "brindle.dev/podIP": ip,
                "brindle.dev/podIPs": ip,
            }}})
        )]
    );
    let pod = fake.core_pod("shop", "web-1").expect("pod");
    assert_eq!(pod["metadata"]["labels"]["app"], "web", "{pod}");
    assert_eq!(pod["spec"]["nodeName"], "worker-7", "{pod}");

    // A slow API server for Pods (5 s, past the agent's 2 s deadline): the ADD still succeeds,
    // in about the deadline, with what is known: the namespace, no pod labels.
    fake.set_pod_delay(Duration::from_secs(5));
    let pod_ns2 = Netns::new();
    let slow = brindle_agent::api::CniAddRequest {
        container_id: "c0ffee0002".to_string(),
        netns: format!("/run/netns/{}", pod_ns2.0),
        pod_name: Some("web-2".to_string()),
        ..request
    };
    let started = Instant::now();
    let (code, answer) = post_unix(
        &socket,
        brindle_agent::api::PATH_CNI_ADD,
        &serde_json::to_string(&slow).expect("json"),
    );
    let took = started.elapsed();
    assert_eq!(code, 200, "{answer}; log:\n{}", agent.log());
    assert!(took < Duration::from_secs(4), "the ADD took {took:?}");
    let wep = fake
        .object("workloadendpoints", "worker--7-k8s-shop-web--2-eth0")
        .expect("the slow pod's WorkloadEndpoint");
    let labels = wep["metadata"]["labels"].as_object().expect("labels");
    assert_eq!(labels["brindle.dev/namespace"], "shop", "{wep}");
    assert!(!labels.contains_key("app"), "{wep}");
    assert!(
        agent.log().contains("pod labels unknown"),
        "the log says why:\n{}",
        agent.log()
    );
    drop(agent);
    let _ = std::fs::remove_file(&kubeconfig);
}

/// The BGP peers a speaker's status socket (brindle-node's API socket or brindle-bgpd's status
/// socket) reports; empty when it does not answer.
fn bgp_peers(socket: &std::path::Path) -> Vec<brindle_agent::api::BgpPeer> {
    brindle_agent::server::get_over_socket(socket, brindle_agent::api::PATH_BGP_PEERS)
        .ok()
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_slice(&body).ok())
        .unwrap_or_default()
}

/// The session with `address` as `peers` shows it: (state, since, times Established).
fn session(peers: &[brindle_agent::api::BgpPeer], address: &str) -> Option<(String, String, u64)> {
    peers
        .iter()
        .find(|p| p.address == address)
        .map(|p| (p.state.clone(), p.since.clone(), p.established_transitions))
}

/// `brindle-node --routing bgp` through an API-server outage and a 410 relist, against the FAKE
/// API server (recorded semantics, not a real one), with a BGP peer: brindle-bgpd in a second
/// namespace, configured on the node side as a global BGPPeer served by the fake.
///
/// ```text
///   node ns: brindle-node (AS 64512, 10.77.0.7) ──veth── peer ns: brindle-bgpd (AS 65009, 10.77.0.9)
///            fake API server                                        originates 10.99.0.0/24
/// ```
///
/// With a 3 s hold time, the API server answers 503 to everything for 10 s (more than three
/// hold times): the session stays Established on both sides (same `since`, no new
/// Established transition), the peer keeps the node's block, the node keeps the peer's route
/// (`ip monitor route` on both sides sees no deletion). When the API server comes back with
/// the same data, and when it comes back from a second outage with its history compacted (the
/// watches get 410 Gone and the agent relists), nothing flaps either; a BGPPeer added, then
/// deleted, after each proves the agent acted on the datastore again.
#[test]
fn fake_apiserver_outage_and_410_keep_bgp_sessions_and_routes() {
    if !can_run() {
        return;
    }
    let node_ns = Netns::new();
    let peer_ns = Netns::new();
    let ok = Command::new("ip")
        .args([
            "link", "add", "eth0", "netns", &node_ns.0, "type", "veth", "peer", "name", "eth0",
            "netns", &peer_ns.0,
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "veth between the namespaces");
    node_ns.sh("ip link set lo up && ip addr add 10.77.0.7/24 dev eth0 && ip link set eth0 up");
    peer_ns.sh("ip link set lo up && ip addr add 10.77.0.9/24 dev eth0 && ip link set eth0 up");

    let kubeconfig = temp("kubeconfig-bgp");
    let fake = fake_in(&node_ns, kubeconfig.clone());
    let spec = fake.spec();
    // The peer, as a cluster administrator declares it.
    let spec2 = spec.clone();
    in_ns(&node_ns, move || {
        Box::pin(async move {
            use brindle_ipam::store::StoreExt;
            let store = brindle_agent::datastore::open(&spec2).await.expect("open");
            let peer = brindle_agent::model::BgpPeerSpec {
                peer_ip: Some("10.77.0.9".to_string()),
                as_number: Some(65009),
                ..Default::default()
            };
            store
                .create_obj(&brindle_agent::model::Object::new("tor", peer))
                .await
                .expect("create BGPPeer tor");
        })
    });

    let (env, _) = manifest_env_and_role();
    let log = temp("agent-bgp.log");
    let socket = temp("agent-bgp.sock");
    let health_port = 20000 + (std::process::id() % 1000) as u16;
    let agent = Agent::start(
        &node_ns,
        &env,
        &[
            ("BRINDLE_DATASTORE", spec.clone()),
            ("IP", "10.77.0.7/24".to_string()),
            ("BRINDLE_ROUTING", "bgp".to_string()),
            ("BRINDLE_BGP_HOLD_TIME", "3".to_string()),
            ("BRINDLE_HEALTH_LISTEN", format!("127.0.0.1:{health_port}")),
        ],
        &socket,
        log,
    );
    let _socket_cleanup = SocketFile(socket.clone());
    wait_for(&agent, 30, "the default pool", || {
        fake.object("ippools", "default-ipv4-ippool").is_some()
    });

    // A pod on this node: its block is what the node originates.
    let spec3 = spec.clone();
    let block: String = in_ns(&node_ns, move || {
        Box::pin(async move {
            let store = brindle_agent::datastore::open(&spec3).await.expect("open");
            let ipam = brindle_ipam::Ipam::new(store);
            let ips = ipam
                .auto_assign(&brindle_ipam::AssignRequest::workload(
                    "k8s-pod-network.w7",
                    "worker-7",
                    1,
                ))
                .await
                .expect("assign on worker-7");
            ipnet::IpNet::new(ips[0].addr(), 26)
                .expect("block")
                .trunc()
                .to_string()
        })
    });

    let bgpd_config = temp("bgpd.yaml");
    let bgpd_socket = temp("bgpd.sock");
    let bgpd_log = temp("bgpd.log");
    std::fs::write(
        &bgpd_config,
        "router_id: 10.77.0.9\nasn: 65009\nhold_time: 3\ninstall_routes: true\n\
         originate: [10.99.0.0/24]\npeers:\n- {address: 10.77.0.7, asn: 64512}\n",
    )
    .expect("bgpd config");
    let _bgpd = Background(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer_ns.0,
                env!("CARGO_BIN_EXE_brindle-bgpd"),
                "--config",
            ])
            .arg(&bgpd_config)
            .arg("--status-socket")
            .arg(&bgpd_socket)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(File::create(&bgpd_log).expect("bgpd log"))
            .spawn()
            .expect("start brindle-bgpd"),
    );
    let _bgpd_files = [
        SocketFile(bgpd_config),
        SocketFile(bgpd_socket.clone()),
        SocketFile(bgpd_log.clone()),
    ];
    let both_logs = || {
        format!(
            "{}\n----- brindle-bgpd:\n{}",
            agent.log(),
            std::fs::read_to_string(&bgpd_log).unwrap_or_default()
        )
    };
    let routes_in = |ns: &Netns| {
        let out = Command::new("ip")
            .args(["-n", &ns.0, "route", "show", "proto", "98"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let block_at_peer = format!("{block} via 10.77.0.7");
    let learned_at_node = "10.99.0.0/24 via 10.77.0.9";
    let deadline = Instant::now() + Duration::from_secs(40);
    while !(routes_in(&peer_ns).contains(&block_at_peer)
        && routes_in(&node_ns).contains(learned_at_node))
    {
        assert!(
            Instant::now() < deadline,
            "routes both ways within 40 s; peer: {:?}, node: {:?}\n{}",
            routes_in(&peer_ns),
            routes_in(&node_ns),
            both_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let node_side = session(&bgp_peers(&socket), "10.77.0.9").expect("node's session");
    let peer_side = session(&bgp_peers(&bgpd_socket), "10.77.0.7").expect("peer's session");
    assert_eq!(node_side.0, "Established", "{node_side:?}");
    assert_eq!(peer_side.0, "Established", "{peer_side:?}");
    wait_for(&agent, 30, "ready", || {
        http_get(&node_ns, health_port, "/readiness").is_some_and(|(code, _)| code == 200)
    });

    let monitor = |ns: &Netns, tag: &str| {
        let path = temp(tag);
        let child = Command::new("ip")
            .args(["-n", &ns.0, "monitor", "route"])
            .stdout(File::create(&path).expect("monitor file"))
            .spawn()
            .expect("ip monitor");
        (Background(child), SocketFile(path))
    };
    let node_monitor = monitor(&node_ns, "monitor-node");
    let peer_monitor = monitor(&peer_ns, "monitor-peer");
    // Everything that must hold at every moment from here on.
    let steady = |when: &str| {
        let node_now = session(&bgp_peers(&socket), "10.77.0.9");
        let peer_now = session(&bgp_peers(&bgpd_socket), "10.77.0.7");
        assert_eq!(
            node_now.as_ref(),
            Some(&node_side),
            "{when}: the node's session changed\n{}",
            both_logs()
        );
        assert_eq!(
            peer_now.as_ref(),
            Some(&peer_side),
            "{when}: the peer's session changed\n{}",
            both_logs()
        );
        assert!(
            routes_in(&peer_ns).contains(&block_at_peer),
            "{when}: the peer lost the node's block: {}\n{}",
            routes_in(&peer_ns),
            both_logs()
        );
        assert!(
            routes_in(&node_ns).contains(learned_at_node),
            "{when}: the node lost the peer's route: {}\n{}",
            routes_in(&node_ns),
            both_logs()
        );
    };
    // A change the agent can only act on by reading the datastore: a BGPPeer for an address
    // nobody answers, added or deleted; the log shows the neighbour added or removed.
    let set_probe_peer = |present: bool| {
        let spec = spec.clone();
        in_ns(&node_ns, move || {
            Box::pin(async move {
                use brindle_ipam::store::StoreExt;
                let store = brindle_agent::datastore::open(&spec).await.expect("open");
                let probe = brindle_agent::model::Object::new(
                    "probe",
                    brindle_agent::model::BgpPeerSpec {
                        peer_ip: Some("10.77.0.99".to_string()),
                        as_number: Some(65099),
                        ..Default::default()
                    },
                );
                if present {
                    store
                        .create_obj(&probe)
                        .await
                        .expect("create BGPPeer probe");
                } else {
                    let probe = store
                        .get_obj::<brindle_agent::model::BgpPeerSpec>("probe")
                        .await
                        .expect("get probe")
                        .expect("probe exists");
                    store
                        .delete_obj(&probe)
                        .await
                        .expect("delete BGPPeer probe");
                }
            })
        })
    };

    // Outage: every request 503, open watches cut, for more than three hold times.
    fake.set_unavailable(true);
    wait_for(&agent, 30, "readiness reports the datastore", || {
        http_get(&node_ns, health_port, "/readiness")
            .is_some_and(|(code, body)| code == 503 && body.contains("datastore unreachable"))
    });
    let outage_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < outage_end {
        steady("during the outage");
        std::thread::sleep(Duration::from_millis(500));
    }
    fake.set_unavailable(false);
    wait_for(&agent, 30, "ready after the outage", || {
        http_get(&node_ns, health_port, "/readiness").is_some_and(|(code, _)| code == 200)
    });
    set_probe_peer(true);
    wait_for(
        &agent,
        30,
        "the agent acting on the datastore again",
        || {
            agent
                .log()
                .lines()
                .any(|l| l.contains("BGP: neighbour added") && l.contains("10.77.0.99"))
        },
    );
    steady("after the outage");

    // The API server comes back from a second outage with its history compacted: the watches
    // resume from an expired resourceVersion, get 410 Gone, and the agent relists everything.
    let relists = agent
        .log()
        .matches("BGP: datastore history compacted")
        .count();
    fake.set_unavailable(true);
    wait_for(&agent, 30, "readiness reports the second outage", || {
        http_get(&node_ns, health_port, "/readiness")
            .is_some_and(|(code, body)| code == 503 && body.contains("datastore unreachable"))
    });
    steady("during the second outage");
    fake.compact(fake.revision());
    fake.set_unavailable(false);
    wait_for(&agent, 30, "the BGP task relists after 410", || {
        agent
            .log()
            .matches("BGP: datastore history compacted")
            .count()
            > relists
    });
    set_probe_peer(false);
    wait_for(
        &agent,
        30,
        "the probe neighbour removed after the relist",
        || {
            agent
                .log()
                .lines()
                .any(|l| l.contains("BGP: neighbour removed") && l.contains("10.77.0.99"))
        },
    );
    steady("after the 410 relist");

    let deleted = |(_, file): &(Background, SocketFile)| -> Vec<String> {
        std::fs::read_to_string(&file.0)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Deleted"))
            .map(str::to_string)
            .collect()
    };
    let node_deleted = deleted(&node_monitor);
    assert!(
        !node_deleted.iter().any(|l| l.contains("10.99.0.0/24")),
        "the node removed the learned route: {node_deleted:?}"
    );
    let peer_deleted = deleted(&peer_monitor);
    assert!(
        !peer_deleted.iter().any(|l| l.contains(&block)),
        "the peer removed the node's block: {peer_deleted:?}"
    );
    drop(agent);
    drop(fake);
    let _ = std::fs::remove_file(&kubeconfig);
}

/// The kubelet's Node `name` with `internal_ip` as its InternalIP.
fn kubelet_node(name: &str, internal_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name },
        "status": { "addresses": [
            { "type": "Hostname", "address": name },
            { "type": "InternalIP", "address": internal_ip }
        ]}
    })
}

/// `kubernetes-internal-ip` follows the Kubernetes Node, against the FAKE API server (its core
/// Node watch, not a real API server): the agent watches its Node, and when the InternalIP
/// changes to an address on a local interface its Brindle Node takes it (with that interface's
/// prefix); an InternalIP no interface holds yet is taken once the address appears; through an
/// API-server outage the address stays and the watch resumes.
#[test]
fn fake_apiserver_kubernetes_internal_ip_change_moves_the_node_address() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add eth0 type veth peer name peer0 && \
         ip addr add 10.77.0.7/24 dev eth0 && ip link set eth0 up && ip link set peer0 up",
    );
    let kubeconfig = temp("kubeconfig-internal-ip");
    let fake = fake_in(&ns, kubeconfig.clone());
    fake.set_core_node("worker-7", kubelet_node("worker-7", "10.77.0.7"));
    let (env, role) = manifest_env_and_role();
    let log = temp("agent-internal-ip.log");
    let socket = temp("agent-internal-ip.sock");
    let agent = Agent::start(
        &ns,
        &env,
        &[
            ("BRINDLE_DATASTORE", fake.spec()),
            (
                "BRINDLE_IP_AUTODETECTION_METHOD",
                "kubernetes-internal-ip".to_string(),
            ),
        ],
        &socket,
        log,
    );
    let _socket_cleanup = SocketFile(socket);
    let node_address = || {
        fake.object("nodes", "worker-7")
            .and_then(|n| n["spec"]["bgp"]["ipv4Address"].as_str().map(str::to_string))
    };
    wait_for(
        &agent,
        30,
        "the Node registered with the InternalIP",
        || node_address().as_deref() == Some("10.77.0.7/24"),
    );
    wait_for(&agent, 30, "the agent watching its Kubernetes Node", || {
        fake.requests()
            .contains(&("watch".to_string(), "core/nodes".to_string()))
    });
    assert!(
        allows(&role, "", "nodes", "watch"),
        "the ClusterRole lets the agent watch Nodes"
    );

    // The InternalIP moves to a second address of eth0, with another prefix length.
    ns.sh("ip addr add 10.66.0.7/16 dev eth0");
    fake.set_core_node("worker-7", kubelet_node("worker-7", "10.66.0.7"));
    wait_for(&agent, 30, "the Node following the InternalIP", || {
        node_address().as_deref() == Some("10.66.0.7/16")
    });

    // An outage: the address stays; after it the watch is made again and still followed.
    fake.set_unavailable(true);
    let outage_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < outage_end {
        assert_eq!(node_address().as_deref(), Some("10.66.0.7/16"));
        std::thread::sleep(Duration::from_millis(200));
    }
    fake.set_unavailable(false);
    // An InternalIP that no interface holds yet: kept as it was, taken when it appears.
    fake.set_core_node("worker-7", kubelet_node("worker-7", "10.55.0.7"));
    wait_for(
        &agent,
        30,
        "the agent noticing the InternalIP is not local",
        || {
            agent.log().lines().any(|l| {
                l.contains("re-detecting the node address failed") && l.contains("10.55.0.7")
            })
        },
    );
    assert_eq!(node_address().as_deref(), Some("10.66.0.7/16"));
    ns.sh("ip addr add 10.55.0.7/24 dev eth0");
    wait_for(
        &agent,
        30,
        "the Node taking the InternalIP once it is local",
        || node_address().as_deref() == Some("10.55.0.7/24"),
    );
    let log_text = agent.log();
    assert!(
        log_text.contains("node address changed"),
        "the log says so:\n{log_text}"
    );
    drop(agent);
    drop(fake);
    let _ = std::fs::remove_file(&kubeconfig);
}
