//! `brindlectl node status` against a real `brindle-node` (its default kind of socket): the
//! process line while it runs, and after it is killed (its socket file left behind).
//! Needs root (a network namespace); skipped without it unless `CI` is set.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A namespace with an uplink, a temp dir and the agent; all removed on drop, also when the
/// test fails.
struct Node {
    ns: String,
    dir: PathBuf,
    agent: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    fn kill(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn start() -> Node {
    let ns = format!("brns-{}", std::process::id());
    let dir = std::env::temp_dir().join(&ns);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut node = Node {
        ns: ns.clone(),
        dir: dir.clone(),
        agent: None,
    };
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && \
         ip -n {ns} link add eth0 type veth peer name peer0 && \
         ip -n {ns} addr add 10.97.255.1/16 dev eth0 && \
         ip -n {ns} link set eth0 up && ip -n {ns} link set peer0 up"
    ));
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_brindle-node")])
        .args(["--node-name", "status", "--node-ip", "10.97.255.1/16"])
        .arg("--datastore")
        .arg(format!("embedded:{}", dir.join("store.db").display()))
        .arg("--socket")
        .arg(node.socket())
        .args(["--health-listen", "off", "--metrics-listen", "off"])
        .args(["--log", "info"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("brindle-node starts");
    node.agent = Some(child);
    node
}

/// `brindlectl node status --socket ...`: (exit success, stdout, stderr).
fn node_status(node: &Node) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brindlectl"))
        .args(["node", "status", "--socket"])
        .arg(node.socket())
        .output()
        .expect("brindlectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn node_status_reads_the_agent_socket() {
    if !root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "node_status_reads_the_agent_socket needs root (CI is set, so not skipping)"
        );
        eprintln!("skipped: node_status_reads_the_agent_socket needs root");
        return;
    }
    let mut node = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let (ok, out, err) = node_status(&node);
        if ok {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "node status never succeeded: {out}{err}\nagent log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The agent answers; whether it runs a BGP speaker depends on its configuration, and the
    // output says which.
    assert!(out.starts_with("Brindle process is running.\n\n"), "{out}");
    assert!(
        out.contains("The BGP speaker is not running.\n") || out.contains("IPv4 BGP status\n"),
        "{out}"
    );
    assert!(out.ends_with("\n\n"), "{out:?}");

    node.kill();
    let (ok, out, err) = node_status(&node);
    assert!(!ok, "{out}");
    assert_eq!(out, "Brindle process is not running.\n");
    assert!(err.contains("agent.sock"), "{err}");
}
