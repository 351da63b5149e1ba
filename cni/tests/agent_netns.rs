//! The real `brindle` plugin against a real `brindle-node`, in network namespaces: what a
//! container runtime sees (stdout, exit status) and what is left on the node afterwards (IPAM
//! allocations read back with `brindlectl`, host interfaces with `ip link`).
//!
//! Each test builds its own node: a namespace with an uplink veth, an embedded datastore in a
//! fresh directory holding one IP pool, and an agent on its own socket; pods are namespaces of
//! their own. Everything is removed by guards, also when a test fails. Needs root; without it
//! the tests print a skip message, unless `CI` is set, where they fail.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false)
}

fn can_run() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this test needs root"
    );
    eprintln!("skipped: needs root (network namespaces)");
    false
}

/// Runs a command; panics with its output if it fails.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends a signal with the shell's `kill` builtin (no procps needed); true if it was sent.
fn signal(pid: u32, name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The directory of the Brindle binaries: where cargo put this test's `brindle`. When run by
/// cargo, `brindle-node` and `brindlectl` (another package's binaries) are built first, so the
/// test never runs stale ones.
fn bin_dir() -> PathBuf {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_brindle"));
    let dir = plugin.parent().expect("binary directory").to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "brindle-agent",
            "--bin",
            "brindle-node",
            "--bin",
            "brindlectl",
        ]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building brindle-node and brindlectl");
    }
    for bin in ["brindle-node", "brindlectl"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: cargo build -p brindle-agent",
            dir.join(bin).display()
        );
    }
    dir
}

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name]);
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        sh("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One node: its namespace, datastore, pool and agent.
struct Node {
    ns: Netns,
    dir: PathBuf,
    bins: PathBuf,
    datastore: String,
    socket: PathBuf,
    log: PathBuf,
    agent: Option<Child>,
}

const POOL_CIDR: &str = "10.250.0.0/24";

impl Node {
    /// A node whose pool is `cidr` cut into blocks of `block_size`.
    fn start(cidr: &str, block_size: u8) -> Node {
        let ns = Netns::new("brc-node");
        let dir = std::env::temp_dir().join(unique("brindle-cni-agent"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let mut node = Node {
            datastore: format!("embedded:{}", dir.join("store.db").display()),
            socket: dir.join("agent.sock"),
            log: dir.join("agent.log"),
            bins: bin_dir(),
            dir,
            ns,
            agent: None,
        };
        node.ns.ip(&["link", "set", "lo", "up"]);
        node.ns.ip(&[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "uplink-peer",
        ]);
        node.ns
            .ip(&["addr", "add", "10.98.0.10/24", "dev", "uplink"]);
        node.ns.ip(&["link", "set", "uplink", "up"]);
        node.ns.ip(&["link", "set", "uplink-peer", "up"]);
        let pool = format!(
            "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  \
             cidr: {cidr}\n  blockSize: {block_size}\n"
        );
        let path = node.dir.join("pool.yaml");
        std::fs::write(&path, pool).expect("pool file");
        node.ctl(&["apply", "-f", &path.display().to_string()]);
        node.start_agent();
        node
    }

    fn start_agent(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.0])
            .arg(self.bins.join("brindle-node"))
            .args(["--node-name", "node1", "--datastore", &self.datastore])
            .args(["--node-ip", "10.98.0.10/24", "--health-listen", "off"])
            .arg("--socket")
            .arg(&self.socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("brindle-node starts");
        self.agent = Some(child);
        // Ready when the plugin's STATUS gets an answer from the agent (not 50).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.plugin("STATUS", &self.conf("1.1.0", json!({})), &[]);
            if out.status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("brindle-node exited ({status}):\n{}", self.agent_log());
            }
            assert!(
                Instant::now() < deadline,
                "brindle-node not ready in 30 s: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn agent_pid(&self) -> u32 {
        self.agent.as_ref().expect("agent running").id()
    }

    fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["--datastore", &self.datastore];
        all.extend_from_slice(args);
        sh(&self.bins.join("brindlectl").display().to_string(), &all)
    }

    /// The plugin's network configuration for this node.
    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "brindle",
            "agent_socket": self.socket,
            "agent_timeout_seconds": 20,
        });
        if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
            c.extend(extra);
        }
        c
    }

    /// Runs the plugin with only the given variables (an empty value leaves one out).
    fn plugin(&self, command: &str, conf: &Value, env: &[(&str, &str)]) -> Output {
        run_plugin(command, &conf.to_string(), env)
    }

    /// Host-side pod interfaces in the node's namespace.
    fn host_veths(&self) -> Vec<String> {
        self.ns
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name.starts_with("brd"))
            .collect()
    }

    /// Every allocated address with its handle, from `brindlectl get ipamblocks -o json`.
    fn allocations(&self) -> Vec<(String, String)> {
        let text = self.ctl(&["get", "ipamblocks", "-o", "json"]);
        let v: Value = serde_json::from_str(&text).expect("ipamblocks JSON");
        let blocks = match &v {
            Value::Array(items) => items.clone(),
            other => other["items"].as_array().cloned().unwrap_or_default(),
        };
        let mut out = Vec::new();
        for b in blocks {
            let spec = &b["spec"];
            let cidr: &str = spec["cidr"].as_str().expect("block cidr");
            let base: std::net::Ipv4Addr = cidr
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .expect("IPv4 block");
            let attrs = spec["attributes"].as_array().cloned().unwrap_or_default();
            for (ordinal, a) in spec["allocations"]
                .as_array()
                .expect("allocations")
                .iter()
                .enumerate()
            {
                if let Some(index) = a.as_u64() {
                    let ip = std::net::Ipv4Addr::from(u32::from(base) + ordinal as u32);
                    let handle = attrs
                        .get(index as usize)
                        .and_then(|x| x["handle_id"].as_str().or(x["handleId"].as_str()))
                        .unwrap_or("")
                        .to_string();
                    out.push((ip.to_string(), handle));
                }
            }
        }
        out.sort();
        out
    }

    fn endpoints(&self) -> Vec<Value> {
        let text = self.ctl(&["get", "workloadendpoints", "-o", "json"]);
        let v: Value = serde_json::from_str(&text).expect("workloadendpoints JSON");
        match v {
            Value::Array(items) => items,
            other => other["items"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Asserts the node holds no pod: no allocation, no host veth, no endpoint.
    fn assert_clean(&self, after: &str) {
        assert_eq!(
            self.allocations(),
            Vec::<(String, String)>::new(),
            "addresses leaked after {after}"
        );
        assert_eq!(
            self.host_veths(),
            Vec::<String>::new(),
            "interfaces leaked after {after}"
        );
        assert_eq!(
            self.endpoints(),
            Vec::<Value>::new(),
            "endpoints left after {after}"
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &self.agent {
            // A paused agent must be able to see SIGTERM.
            signal(child.id(), "CONT");
        }
        self.stop_agent();
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", self.agent_log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The plugin with a clean environment: `env` only, as a runtime would set it.
fn run_plugin(command: &str, stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brindle"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin");
    for (k, v) in env {
        if !v.is_empty() {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn brindle");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait for brindle")
}

/// The variables a Kubernetes runtime sets for a pod.
fn pod_env<'a>(container: &'a str, netns: &'a str, args: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ]
}

fn k8s_args(pod: &str, container: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod};\
         K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID=uid-{pod}"
    )
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim_end()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {text:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a CNI error with this code on stdout and exit status 1; returns its message.
fn assert_cni_error(out: &Output, code: u64, what: &str) -> String {
    let v = stdout_json(out);
    assert_eq!(v["code"], code, "{what}: {v}");
    assert_eq!(out.status.code(), Some(1), "{what}: {v}");
    v["msg"].as_str().expect("msg").to_string()
}

fn add(node: &Node, version: &str, container: &str, pod: &str, netns: &Netns) -> Value {
    let args = k8s_args(pod, container);
    let out = node.plugin(
        "ADD",
        &node.conf(version, json!({})),
        &pod_env(container, &netns.path(), &args),
    );
    assert_ok(&out, &format!("ADD {pod}"));
    stdout_json(&out)
}

fn pod_address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("an address in the result")
        .to_string()
}

#[test]
fn add_twice_check_and_del_twice_against_the_real_agent() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let pod = Netns::new("brc-pod");
    let args = k8s_args("cart-7", "c0ffee01");
    let pod_path = pod.path();
    let env = pod_env("c0ffee01", &pod_path, &args);

    let out = node.plugin("ADD", &node.conf("1.1.0", json!({})), &env);
    assert_ok(&out, "ADD");
    let first = stdout_json(&out);
    assert_eq!(first["cniVersion"], "1.1.0");
    let ip = pod_address(&first);
    let host_veth = first["interfaces"][0]["name"].as_str().expect("host veth");
    assert!(host_veth.starts_with("brd"), "{first}");
    // 1.1.0 reports the MTU the pod really got.
    let link = pod.ip(&["-o", "link", "show", "dev", "eth0"]);
    let mtu = first["interfaces"][1]["mtu"]
        .as_u64()
        .expect("mtu in 1.1.0");
    assert!(link.contains(&format!(" mtu {mtu} ")), "{link} vs {first}");
    assert_eq!(first["interfaces"][0]["mtu"], mtu);
    assert_eq!(first["interfaces"][1]["sandbox"], pod.path());
    assert_eq!(node.host_veths(), [host_veth]);
    assert!(
        pod.ip(&["-o", "addr", "show", "dev", "eth0"])
            .contains(&format!("{ip}/32")),
        "the pod has its address"
    );

    // The endpoint records the Kubernetes identity, the interfaces and the address.
    let eps = node.endpoints();
    assert_eq!(eps.len(), 1, "{eps:?}");
    let spec = &eps[0]["spec"];
    assert_eq!(spec["namespace"], "shop");
    assert_eq!(spec["pod"], "cart-7");
    assert_eq!(spec["endpoint"], "eth0");
    assert_eq!(spec["interfaceName"], host_veth);
    assert_eq!(spec["containerID"], "c0ffee01");
    assert_eq!(spec["ipNetworks"], json!([format!("{ip}/32")]));

    // A second ADD returns the same result and allocates nothing more.
    let allocations = node.allocations();
    assert_eq!(allocations.len(), 1, "{allocations:?}");
    let out = node.plugin("ADD", &node.conf("1.1.0", json!({})), &env);
    assert_ok(&out, "second ADD");
    assert_eq!(stdout_json(&out), first, "a repeated ADD answers the same");
    assert_eq!(node.allocations(), allocations);
    assert_eq!(node.host_veths(), [host_veth]);

    // CHECK with the cached result: all is as recorded.
    let with_prev = node.conf("1.1.0", json!({ "prevResult": first.clone() }));
    assert_ok(&node.plugin("CHECK", &with_prev, &env), "CHECK");

    // A cached result that disagrees with the pod is named.
    let mut wrong = first.clone();
    wrong["ips"][0]["address"] = json!("10.250.0.200/32");
    let out = node.plugin(
        "CHECK",
        &node.conf("1.1.0", json!({ "prevResult": wrong })),
        &env,
    );
    let msg = assert_cni_error(&out, 100, "CHECK with a wrong prevResult");
    assert!(msg.contains("10.250.0.200/32"), "{msg}");

    // Kernel state that differs is named: a sysctl on the host veth, the pod's address.
    node.ns.ip(&["link", "set", host_veth, "mtu", "1400"]);
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &node.ns.0,
            "sh",
            "-c",
            &format!("echo 0 > /proc/sys/net/ipv4/conf/{host_veth}/proxy_arp"),
        ],
    );
    pod.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    // (Removing the pod's only IPv4 address also makes the kernel flush its routes.)
    let out = node.plugin("CHECK", &with_prev, &env);
    let msg = assert_cni_error(&out, 100, "CHECK of a broken pod");
    for part in [
        "proxy_arp on",
        "host interface MTU is 1400",
        &format!("address {ip}/32 missing"),
        "route default via 169.254.1.1 dev eth0 missing",
    ] {
        assert!(msg.contains(part), "CHECK should name {part:?}: {msg}");
    }

    // A repeated ADD of a broken pod wires it again, with the same address.
    let out = node.plugin("ADD", &node.conf("1.1.0", json!({})), &env);
    assert_ok(&out, "ADD of a broken pod");
    let rewired = stdout_json(&out);
    assert_eq!(pod_address(&rewired), ip);
    // The veth pair is new, and so is the pod's MAC: the old cached result no longer fits.
    let out = node.plugin("CHECK", &with_prev, &env);
    let msg = assert_cni_error(&out, 100, "CHECK with the result before re-ADD");
    assert!(msg.contains("MAC"), "{msg}");
    let with_prev = node.conf("1.1.0", json!({ "prevResult": rewired }));
    assert_ok(
        &node.plugin("CHECK", &with_prev, &env),
        "CHECK after re-ADD",
    );
    assert_eq!(node.allocations().len(), 1);

    // DEL removes everything; a second DEL, and one without the namespace, still succeed.
    let out = node.plugin("DEL", &with_prev, &env);
    assert_ok(&out, "DEL");
    assert!(out.stdout.is_empty(), "DEL prints nothing");
    node.assert_clean("DEL");
    assert_ok(&node.plugin("DEL", &with_prev, &env), "second DEL");
    let no_netns = pod_env("c0ffee01", "", &args);
    assert_ok(
        &node.plugin("DEL", &node.conf("1.1.0", json!({})), &no_netns),
        "DEL without CNI_NETNS",
    );
    // CHECK of a pod that is gone says so.
    let out = node.plugin("CHECK", &with_prev, &env);
    assert_cni_error(&out, 3, "CHECK after DEL");
}

#[test]
fn every_version_gets_its_result_shape_from_the_real_agent() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let mut pods = Vec::new();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .into_iter()
        .enumerate()
    {
        let ns = Netns::new("brc-pod");
        let container = format!("ver{i}");
        let result = add(&node, version, &container, &format!("v{i}"), &ns);
        assert_eq!(result["cniVersion"], version);
        let ip = &result["ips"][0];
        assert_eq!(
            ip.get("version").is_some(),
            version < "1.0.0",
            "{version}: {result}"
        );
        assert_eq!(ip["interface"], 1, "{version}");
        assert_eq!(
            result["interfaces"][1].get("mtu").is_some(),
            version == "1.1.0",
            "{version}: {result}"
        );
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0", "{version}");
        pods.push((container, ns, version));
    }
    assert_eq!(node.allocations().len(), 5);
    for (container, ns, version) in &pods {
        let args = k8s_args("x", container);
        let pod_name = format!("v{}", &container[3..]);
        let args = args.replace("K8S_POD_NAME=x", &format!("K8S_POD_NAME={pod_name}"));
        let out = node.plugin(
            "DEL",
            &node.conf(version, json!({})),
            &pod_env(container, &ns.path(), &args),
        );
        assert_ok(&out, &format!("DEL {version}"));
    }
    node.assert_clean("DEL of every version's pod");
}

#[test]
fn gc_releases_what_the_runtime_no_longer_lists() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let keep_ns = Netns::new("brc-pod");
    let stale_ns = [Netns::new("brc-pod"), Netns::new("brc-pod")];
    let keep = add(&node, "1.1.0", "keep01", "keep", &keep_ns);
    for (i, ns) in stale_ns.iter().enumerate() {
        add(
            &node,
            "1.1.0",
            &format!("stale0{i}"),
            &format!("stale{i}"),
            ns,
        );
    }
    // A pod whose sandbox was replaced without a DEL for the old one: the old container's
    // address is leaked, while the host veth (named after the pod) now serves the new sandbox.
    let old_ns = Netns::new("brc-pod");
    add(&node, "1.1.0", "web-old", "web", &old_ns);
    let web_ns = Netns::new("brc-pod");
    let web = add(&node, "1.1.0", "web-new", "web", &web_ns);
    assert_eq!(node.allocations().len(), 5);
    assert_eq!(node.host_veths().len(), 4);

    // An allocation of another network on this node is not GC's business.
    let other = Netns::new("brc-pod");
    let other_conf = node.conf("1.1.0", json!({"name": "other-net"}));
    let other_args = k8s_args("other", "other01");
    assert_ok(
        &node.plugin(
            "ADD",
            &other_conf,
            &pod_env("other01", &other.path(), &other_args),
        ),
        "ADD in another network",
    );

    let gc_conf = node.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [
            {"containerID": "keep01", "ifname": "eth0"},
            {"containerID": "web-new", "ifname": "eth0"},
        ]}),
    );
    let out = node.plugin("GC", &gc_conf, &[]);
    assert_ok(&out, "GC");
    assert!(out.stdout.is_empty(), "GC prints nothing");

    let mut handles: Vec<String> = node.allocations().into_iter().map(|(_, h)| h).collect();
    handles.sort();
    assert_eq!(
        handles,
        [
            "k8s-pod-network.keep01",
            "k8s-pod-network.web-new",
            "other-net.other01"
        ],
        "only the valid attachments and the other network keep addresses"
    );
    let veths = node.host_veths();
    assert_eq!(veths.len(), 3, "{veths:?}");
    for result in [&keep, &web] {
        let veth = result["interfaces"][0]["name"].as_str().expect("veth");
        assert!(veths.iter().any(|v| v == veth), "{veth} kept: {veths:?}");
    }
    let mut pods: Vec<String> = node
        .endpoints()
        .iter()
        .map(|e| e["spec"]["pod"].as_str().unwrap_or("").to_string())
        .collect();
    pods.sort();
    assert_eq!(pods, ["keep", "other", "web"]);

    // The kept pods are untouched, the replaced sandbox's successor included.
    for (result, container, pod, ns) in [
        (&keep, "keep01", "keep", &keep_ns),
        (&web, "web-new", "web", &web_ns),
    ] {
        let args = k8s_args(pod, container);
        let with_prev = node.conf("1.1.0", json!({ "prevResult": result }));
        assert_ok(
            &node.plugin("CHECK", &with_prev, &pod_env(container, &ns.path(), &args)),
            &format!("CHECK of {pod} after GC"),
        );
    }
    // GC again finds nothing more to do.
    assert_ok(&node.plugin("GC", &gc_conf, &[]), "second GC");
    assert_eq!(node.allocations().len(), 3);

    // GC without the list is refused, and removes nothing.
    let out = node.plugin("GC", &node.conf("1.1.0", json!({})), &[]);
    let msg = assert_cni_error(&out, 7, "GC without valid-attachments");
    assert!(msg.contains("cni.dev/valid-attachments"), "{msg}");
    assert_eq!(node.allocations().len(), 3);
}

#[test]
fn status_is_51_when_the_pool_is_full_and_50_when_the_agent_is_down() {
    if !can_run() {
        return;
    }
    // One block of 4 addresses.
    let mut node = Node::start("10.250.9.0/30", 30);
    let conf = node.conf("1.1.0", json!({}));
    assert_ok(&node.plugin("STATUS", &conf, &[]), "STATUS with room");

    let mut namespaces = Vec::new();
    let mut added = 0;
    loop {
        let ns = Netns::new("brc-pod");
        let container = format!("fill{added}");
        let args = k8s_args(&format!("fill{added}"), &container);
        let out = node.plugin("ADD", &conf, &pod_env(&container, &ns.path(), &args));
        if !out.status.success() {
            let v = stdout_json(&out);
            assert_eq!(v["code"], 101, "a full pool is 'no address': {v}");
            break;
        }
        added += 1;
        namespaces.push(ns);
        assert!(added <= 4, "a /30 holds at most 4 pods");
    }
    assert_eq!(added, 4, "every address of the /30 is usable");
    assert_eq!(
        node.host_veths().len(),
        4,
        "the failed ADD left no interface"
    );
    let out = node.plugin("STATUS", &conf, &[]);
    let msg = assert_cni_error(&out, 51, "STATUS with a full pool");
    assert!(msg.contains("no IP pool has room"), "{msg}");

    let args = k8s_args("fill0", "fill0");
    assert_ok(
        &node.plugin(
            "DEL",
            &conf,
            &pod_env("fill0", &namespaces[0].path(), &args),
        ),
        "DEL",
    );
    assert_ok(&node.plugin("STATUS", &conf, &[]), "STATUS after a DEL");

    node.stop_agent();
    let out = node.plugin("STATUS", &conf, &[]);
    let msg = assert_cni_error(&out, 50, "STATUS without an agent");
    assert!(msg.contains(&node.socket.display().to_string()), "{msg}");
    // ADD with the agent down is "try again later".
    let ns = Netns::new("brc-pod");
    let args = k8s_args("late", "late01");
    let out = node.plugin("ADD", &conf, &pod_env("late01", &ns.path(), &args));
    assert_cni_error(&out, 11, "ADD without an agent");
    // So is DEL: answering success would let the runtime forget a pod whose address and
    // interface are still there.
    let args = k8s_args("fill1", "fill1");
    let out = node.plugin(
        "DEL",
        &conf,
        &pod_env("fill1", &namespaces[1].path(), &args),
    );
    let msg = assert_cni_error(&out, 11, "DEL without an agent");
    assert!(msg.contains("is brindle-node running"), "{msg}");
}

#[test]
fn bad_input_is_a_named_error_and_leaks_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let pod = Netns::new("brc-pod");
    let args = k8s_args("web", "bad01");
    let pod_path = pod.path();
    let env = pod_env("bad01", &pod_path, &args);
    let conf = node.conf("1.0.0", json!({}));

    // Malformed configuration JSON.
    let out = run_plugin("ADD", "{\"cniVersion\": \"1.0.0\", \"name\": ", &env);
    let msg = assert_cni_error(&out, 6, "malformed JSON");
    assert!(msg.contains("decode"), "{msg}");
    node.assert_clean("malformed JSON");

    // Each missing variable is named.
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let partial: Vec<(&str, &str)> = env.iter().copied().filter(|(k, _)| *k != var).collect();
        let out = node.plugin("ADD", &conf, &partial);
        let msg = assert_cni_error(&out, 4, var);
        assert!(msg.contains(var), "{msg}");
        node.assert_clean(var);
    }

    // An unknown CNI_ARGS key without IgnoreUnknown; with it, the same key is accepted.
    let strict = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;SURPRISE=1";
    let out = node.plugin("ADD", &conf, &pod_env("bad01", &pod.path(), strict));
    let msg = assert_cni_error(&out, 4, "unknown CNI_ARGS key");
    assert!(
        msg.contains("SURPRISE") && msg.contains("IgnoreUnknown"),
        "{msg}"
    );
    node.assert_clean("unknown CNI_ARGS key");

    // A namespace path that does not exist: the agent names it, and undoes the allocation.
    let gone = format!("/run/netns/{}", unique("brc-missing"));
    let out = node.plugin("ADD", &conf, &pod_env("bad01", &gone, &args));
    let msg = assert_cni_error(&out, 3, "missing netns");
    assert!(msg.contains(&gone), "{msg}");
    node.assert_clean("a missing netns");

    // An agent that does not answer: paused, so connections queue but nothing is read.
    let pid = node.agent_pid();
    assert!(signal(pid, "STOP"), "pausing the agent");
    let impatient = node.conf("1.0.0", json!({"agent_timeout_seconds": 1}));
    let started = Instant::now();
    let out = node.plugin("ADD", &impatient, &env);
    let waited = started.elapsed();
    assert!(signal(pid, "CONT"), "resuming the agent");
    let msg = assert_cni_error(&out, 11, "an agent that does not answer");
    assert!(msg.contains("no complete answer within 1s"), "{msg}");
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");
    // The request the agent finds when it wakes up is past its deadline: it says so, and
    // allocates and wires nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.agent_log().contains("after the plugin's deadline") {
        assert!(
            Instant::now() < deadline,
            "the resumed agent did not refuse the late request:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.assert_clean("an agent that did not answer");

    // And the pod can be added normally afterwards.
    assert_ok(&node.plugin("ADD", &conf, &env), "ADD after all that");
    assert_eq!(node.allocations().len(), 1);
}

/// Holds SQLite's write lock on the node's datastore until dropped (the `sqlite3` shell, in a
/// transaction), so the agent's next write waits in its busy handler.
struct DatastoreLock(Child);

impl DatastoreLock {
    fn take(node: &Node) -> DatastoreLock {
        use std::io::{BufRead, BufReader};
        let path = node.dir.join("store.db");
        let mut child = Command::new("sqlite3")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sqlite3 starts (apt-get install sqlite3)");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"BEGIN IMMEDIATE;\nSELECT 'locked';\n")
            .expect("sqlite3 stdin");
        child.stdin = Some(stdin);
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("sqlite3 answers");
        assert_eq!(line.trim(), "locked", "sqlite3 took the write lock");
        DatastoreLock(child)
    }
}

impl Drop for DatastoreLock {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.write_all(b"ROLLBACK;\n");
        }
        let _ = self.0.wait();
    }
}

#[test]
fn an_add_finishing_after_the_plugins_deadline_is_undone() {
    if !can_run() {
        return;
    }
    if Command::new("sqlite3").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but sqlite3 is missing"
        );
        eprintln!("skipped: needs the sqlite3 shell");
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let pod = Netns::new("brc-pod");
    let args = k8s_args("slow", "slow01");
    let pod_path = pod.path();
    let env = pod_env("slow01", &pod_path, &args);

    // The agent reads the request in time, then waits for the datastore past the deadline.
    let lock = DatastoreLock::take(&node);
    let impatient = node.conf("1.0.0", json!({"agent_timeout_seconds": 1}));
    let out = node.plugin("ADD", &impatient, &env);
    let msg = assert_cni_error(&out, 11, "ADD slower than the plugin's deadline");
    assert!(msg.contains("no complete answer within 1s"), "{msg}");
    drop(lock);

    // The agent finishes the ADD, sees that the plugin gave up, and undoes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = node.agent_log();
        if log.contains("ADD finished after the plugin's deadline; undoing it")
            && node.allocations().is_empty()
            && node.host_veths().is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late ADD was not undone: {:?} {:?}\n{log}",
            node.allocations(),
            node.host_veths()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.assert_clean("an ADD that finished after the deadline");
    assert!(
        pod.ip(&["-o", "link", "show"])
            .lines()
            .all(|l| !l.contains("eth0")),
        "the pod's interface is gone"
    );

    // With patience, the same ADD works.
    let out = node.plugin("ADD", &node.conf("1.0.0", json!({})), &env);
    assert_ok(&out, "ADD in time");
    assert_eq!(node.allocations().len(), 1);
}
