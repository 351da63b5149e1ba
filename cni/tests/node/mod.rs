//! The test node for `agent_netns.rs`: a network namespace with an uplink, an embedded
//! datastore with one IP pool, a real `brindle-node`, and the real `brindle` run as a runtime
//! runs it; plus what a test reads back (IPAM allocations with `brindlectl`, host interfaces with
//! `ip link`). Everything is removed by guards, also when a test fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false)
}

pub fn can_run() -> bool {
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
pub fn sh(program: &str, args: &[&str]) -> String {
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
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The directory of the Brindle binaries: where cargo put this test's `brindle`. When run by
/// cargo, `brindle-node` and `brindlectl` (another package's binaries) are built first, so the
/// test never runs stale ones.
pub fn bin_dir() -> PathBuf {
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
pub struct Netns(pub String);

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name]);
        Netns(name)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    pub fn ip(&self, args: &[&str]) -> String {
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
pub struct Node {
    pub ns: Netns,
    pub dir: PathBuf,
    bins: PathBuf,
    datastore: String,
    pub socket: PathBuf,
    log: PathBuf,
    agent: Option<Child>,
}

pub const POOL_CIDR: &str = "10.250.0.0/24";

impl Node {
    /// A node whose pool is `cidr` cut into blocks of `block_size`.
    pub fn start(cidr: &str, block_size: u8) -> Node {
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

    pub fn start_agent(&mut self) {
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

    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().expect("agent running").id()
    }

    pub fn stop_agent(&mut self) {
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

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["--datastore", &self.datastore];
        all.extend_from_slice(args);
        sh(&self.bins.join("brindlectl").display().to_string(), &all)
    }

    /// The plugin's network configuration for this node.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
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
    pub fn plugin(&self, command: &str, conf: &Value, env: &[(&str, &str)]) -> Output {
        run_plugin(command, &conf.to_string(), env)
    }

    /// Host-side pod interfaces in the node's namespace.
    pub fn host_veths(&self) -> Vec<String> {
        self.ns
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name.starts_with("brd"))
            .collect()
    }

    /// [`Self::host_veths`] once no more disappear: the list when it is empty, or after 5 s.
    pub fn host_veths_settled(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let veths = self.host_veths();
            if veths.is_empty() || std::time::Instant::now() >= deadline {
                return veths;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Every allocated address with its handle, from `brindlectl get ipamblocks -o json`.
    pub fn allocations(&self) -> Vec<(String, String)> {
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

    pub fn endpoints(&self) -> Vec<Value> {
        let text = self.ctl(&["get", "workloadendpoints", "-o", "json"]);
        let v: Value = serde_json::from_str(&text).expect("workloadendpoints JSON");
        match v {
            Value::Array(items) => items,
            other => other["items"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Asserts the node holds no pod: no allocation, no host veth, no endpoint.
    pub fn assert_clean(&self, after: &str) {
        assert_eq!(
            self.allocations(),
            Vec::<(String, String)>::new(),
            "addresses leaked after {after}"
        );
        // DEL answers before the veth is gone (the agent deletes it in the background, see
        // agent/src/dataplane/reaper.rs); a leaked one stays.
        assert_eq!(
            self.host_veths_settled(),
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
pub fn run_plugin(command: &str, stdin: &str, env: &[(&str, &str)]) -> Output {
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
pub fn pod_env<'a>(container: &'a str, netns: &'a str, args: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ]
}

pub fn k8s_args(pod: &str, container: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod};\
         K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID=uid-{pod}"
    )
}

pub fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim_end()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {text:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a CNI error with this code on stdout and exit status 1; returns its message.
pub fn assert_cni_error(out: &Output, code: u64, what: &str) -> String {
    let v = stdout_json(out);
    assert_eq!(v["code"], code, "{what}: {v}");
    assert_eq!(out.status.code(), Some(1), "{what}: {v}");
    v["msg"].as_str().expect("msg").to_string()
}

pub fn add(node: &Node, version: &str, container: &str, pod: &str, netns: &Netns) -> Value {
    let args = k8s_args(pod, container);
    let out = node.plugin(
        "ADD",
        &node.conf(version, json!({})),
        &pod_env(container, &netns.path(), &args),
    );
    assert_ok(&out, &format!("ADD {pod}"));
    stdout_json(&out)
}

pub fn pod_address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("an address in the result")
        .to_string()
}

/// Holds SQLite's write lock on the node's datastore until dropped (the `sqlite3` shell, in a
/// transaction), so the agent's next write waits in its busy handler.
pub struct DatastoreLock(Child);

impl DatastoreLock {
    pub fn take(node: &Node) -> DatastoreLock {
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
