//! The plugin's side of the agent contract (`brindle_agent::api`), tested by running the real
//! `brindle` binary against a *scripted* agent: a Unix-socket HTTP server in this test process
//! that records the request it got and answers canned bytes.
//!
//! These tests check what the plugin sends and what it prints; they do not check the agent.
//! End-to-end with the real agent is the lab's job.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use brindle_agent::api::{CniAddRequest, CniAddResponse, CniDelRequest, PodRoute};
use serde_json::{json, Value};

/// What the scripted agent does with one connection.
#[derive(Clone)]
enum Script {
    /// Answer with this status and JSON body, with a Content-Length.
    Reply(u16, String),
    /// Answer with these exact bytes, then close.
    Raw(Vec<u8>),
    /// Read the request, then say nothing for this long.
    Silence(Duration),
}

/// A request as the scripted agent received it.
#[derive(Clone, Debug)]
struct Recorded {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the plugin sent JSON")
    }
}

/// A fake agent on a Unix socket in a fresh directory, serving one script step per connection.
struct ScriptedAgent {
    dir: PathBuf,
    socket: PathBuf,
    received: Arc<Mutex<Vec<Recorded>>>,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "brindle-cni-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl ScriptedAgent {
    fn start(script: Vec<Script>) -> Self {
        let dir = fresh_dir();
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        // Detached: a test whose plugin never connects leaves it blocked in accept().
        thread::spawn(move || {
            for step in script {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                if let Some(req) = read_request(&mut conn) {
                    log.lock().expect("lock").push(req);
                }
                match step {
                    Script::Reply(status, body) => {
                        let head = format!(
                            "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(head.as_bytes());
                        let _ = conn.write_all(body.as_bytes());
                    }
                    Script::Raw(bytes) => {
                        let _ = conn.write_all(&bytes);
                    }
                    Script::Silence(d) => thread::sleep(d),
                }
            }
        });
        ScriptedAgent {
            dir,
            socket,
            received,
        }
    }

    fn received(&self) -> Vec<Recorded> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads one HTTP request with a Content-Length body.
fn read_request(conn: &mut UnixStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))?
        .1
        .parse()
        .ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Recorded {
        request_line,
        headers,
        body,
    })
}

fn conf(version: &str, socket: &Path, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "brindle",
        "agent_socket": socket,
        "mtu": 1440,
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c.to_string()
}

/// Runs the plugin with a clean environment: the usual Kubernetes variables for `command`,
/// overridden by `env` (an empty value removes the variable).
fn run_plugin(command: &str, stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut vars: Vec<(String, String)> = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "6f2a1b9c0d"),
        ("CNI_NETNS", "/var/run/netns/cni-6f2a"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7;\
             K8S_POD_INFRA_CONTAINER_ID=6f2a1b9c0d;K8S_POD_UID=abcd",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in env {
        vars.retain(|(name, _)| name != k);
        if !v.is_empty() {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_brindle"))
        .env_clear()
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn brindle");
    if let Some(mut input) = child.stdin.take() {
        // VERSION does not read stdin; a closed pipe is fine then.
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait for brindle")
}

/// The plugin's stdout as one JSON document (and nothing else).
fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    serde_json::from_str(text.trim_end()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {text:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts a CNI error on stdout with this code and exit status 1; returns the error object.
fn assert_cni_error(out: &Output, code: u64) -> Value {
    let v = stdout_json(out);
    assert_eq!(v["code"], code, "error object: {v}");
    assert!(v["msg"].is_string(), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    assert_eq!(out.status.code(), Some(1), "{v}");
    v
}

fn add_answer() -> CniAddResponse {
    CniAddResponse {
        host_interface: "brd5d3c8a1f0e2".into(),
        container_interface: "eth0".into(),
        container_mac: "0a:58:0a:f4:01:05".into(),
        mtu: 1440,
        ips: vec!["10.244.1.5/32".into()],
        routes: vec![PodRoute {
            dst: "0.0.0.0/0".into(),
            gw: Some("169.254.1.1".into()),
        }],
    }
}

fn add_answer_json() -> String {
    serde_json::to_string(&add_answer()).expect("json")
}

#[test]
fn scripted_agent_add_gets_the_pod_and_the_plugin_prints_the_result() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, add_answer_json())]);
    let out = run_plugin("ADD", &conf("1.0.0", &agent.socket, json!({})), &[]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_json(&out),
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "brd5d3c8a1f0e2"},
                {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-6f2a"},
            ],
            "ips": [{"address": "10.244.1.5/32", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {},
        })
    );

    let got = agent.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.request_line, "POST /v1/cni/add HTTP/1.1");
    assert_eq!(req.header("connection"), Some("close"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    let sent: CniAddRequest = serde_json::from_slice(&req.body).expect("a CniAddRequest");
    assert_eq!(
        sent,
        CniAddRequest {
            container_id: "6f2a1b9c0d".into(),
            netns: "/var/run/netns/cni-6f2a".into(),
            ifname: "eth0".into(),
            network: "k8s-pod-network".into(),
            pod_namespace: Some("shop".into()),
            pod_name: Some("cart-7".into()),
            mtu: Some(1440),
            assign_ipv4: None,
            assign_ipv6: None,
        }
    );
    // The wire names are the API's camelCase ones.
    assert_eq!(req.json()["containerId"], "6f2a1b9c0d");
    assert_eq!(req.json()["podNamespace"], "shop");
}

#[test]
fn scripted_agent_add_result_for_0_3_1_has_ip_version() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, add_answer_json())]);
    let out = run_plugin("ADD", &conf("0.3.1", &agent.socket, json!({})), &[]);
    assert!(out.status.success());
    let v = stdout_json(&out);
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(
        v["ips"],
        json!([{"version": "4", "address": "10.244.1.5/32", "interface": 1}])
    );
}

#[test]
fn scripted_agent_add_without_mtu_leaves_it_to_the_agent() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, add_answer_json())]);
    let out = run_plugin(
        "ADD",
        &conf("1.0.0", &agent.socket, json!({"mtu": 0})),
        &[("CNI_ARGS", "")],
    );
    assert!(out.status.success());
    let body = agent.received()[0].json();
    assert!(body.get("mtu").is_none(), "{body}");
    assert!(body.get("podName").is_none(), "{body}");
}

#[test]
fn scripted_agent_chunked_answer_is_understood() {
    let body = add_answer_json();
    let (a, b) = body.split_at(10);
    let raw = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let agent = ScriptedAgent::start(vec![Script::Raw(raw.into_bytes())]);
    let out = run_plugin("ADD", &conf("1.0.0", &agent.socket, json!({})), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stdout_json(&out)["ips"][0]["address"], "10.244.1.5/32");
}

#[test]
fn scripted_agent_error_is_passed_on_with_its_code() {
    let agent = ScriptedAgent::start(vec![Script::Reply(
        409,
        r#"{"code":51,"msg":"no IP pool has room for this node","details":"pool 10.244.0.0/16: 0 free"}"#
            .into(),
    )]);
    let out = run_plugin("ADD", &conf("0.4.0", &agent.socket, json!({})), &[]);
    let v = assert_cni_error(&out, 51);
    assert_eq!(
        v,
        json!({"cniVersion": "0.4.0", "code": 51, "msg": "no IP pool has room for this node",
               "details": "pool 10.244.0.0/16: 0 free"})
    );
}

#[test]
fn scripted_agent_garbage_answer_is_error_100() {
    let agent = ScriptedAgent::start(vec![Script::Raw(
        b"\x00\xffnot http at all\r\n\r\n".to_vec(),
    )]);
    let out = run_plugin("ADD", &conf("1.0.0", &agent.socket, json!({})), &[]);
    let v = assert_cni_error(&out, 100);
    assert!(
        v["msg"]
            .as_str()
            .unwrap_or("")
            .contains("unexpected answer"),
        "{v}"
    );
}

#[test]
fn scripted_agent_undecodable_add_answer_is_error_100() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, r#"{"ips":"nope"}"#.into())]);
    let out = run_plugin("ADD", &conf("1.0.0", &agent.socket, json!({})), &[]);
    assert_cni_error(&out, 100);
}

#[test]
fn scripted_agent_silent_past_the_deadline_is_try_again() {
    let agent = ScriptedAgent::start(vec![Script::Silence(Duration::from_secs(4))]);
    let started = std::time::Instant::now();
    let out = run_plugin(
        "ADD",
        &conf("1.0.0", &agent.socket, json!({"agent_timeout_seconds": 1})),
        &[],
    );
    let v = assert_cni_error(&out, 11);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited too long"
    );
    assert!(v["msg"].as_str().unwrap_or("").contains("within"), "{v}");
}

#[test]
fn scripted_agent_del_is_sent_and_prints_nothing() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, "{}".into())]);
    let out = run_plugin(
        "DEL",
        &conf("1.0.0", &agent.socket, json!({})),
        // The runtime may have removed the namespace already.
        &[("CNI_NETNS", "")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let got = agent.received();
    assert_eq!(got[0].request_line, "POST /v1/cni/del HTTP/1.1");
    let sent: CniDelRequest = serde_json::from_slice(&got[0].body).expect("a CniDelRequest");
    assert_eq!(
        sent,
        CniDelRequest {
            container_id: "6f2a1b9c0d".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            network: "k8s-pod-network".into(),
            pod_namespace: Some("shop".into()),
            pod_name: Some("cart-7".into()),
        }
    );
}

#[test]
fn scripted_agent_check_is_sent_and_prints_nothing() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, "{}".into())]);
    let out = run_plugin("CHECK", &conf("1.0.0", &agent.socket, json!({})), &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let got = agent.received();
    assert_eq!(got[0].request_line, "POST /v1/cni/check HTTP/1.1");
    let sent: CniAddRequest = serde_json::from_slice(&got[0].body).expect("a CniAddRequest");
    assert_eq!(sent.netns, "/var/run/netns/cni-6f2a");
}

#[test]
fn scripted_agent_logs_go_to_stderr_only() {
    let agent = ScriptedAgent::start(vec![Script::Reply(200, add_answer_json())]);
    let out = run_plugin(
        "ADD",
        &conf("1.0.0", &agent.socket, json!({"log_level": "debug"})),
        &[],
    );
    assert!(out.status.success());
    stdout_json(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pod added"), "{stderr}");
    assert!(stderr.contains("shop/cart-7"), "{stderr}");
}

#[test]
fn no_agent_socket_is_try_again_naming_the_path() {
    let dir = fresh_dir();
    let socket = dir.join("agent.sock");
    for cmd in ["ADD", "DEL", "CHECK"] {
        let out = run_plugin(cmd, &conf("1.0.0", &socket, json!({})), &[]);
        // DEL too: pretending success would leak the address; the runtime retries.
        let v = assert_cni_error(&out, 11);
        let msg = v["msg"].as_str().unwrap_or("");
        assert!(msg.contains(&socket.display().to_string()), "{cmd}: {msg}");
        assert!(msg.contains("brindle-node"), "{cmd}: {msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refused_connection_is_try_again() {
    // A socket file nobody listens on: bind, then drop the listener.
    let dir = fresh_dir();
    let socket = dir.join("agent.sock");
    drop(UnixListener::bind(&socket).expect("bind"));
    let out = run_plugin("ADD", &conf("1.0.0", &socket, json!({})), &[]);
    assert_cni_error(&out, 11);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_prints_supported_versions() {
    let out = run_plugin("VERSION", "", &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
}

#[test]
fn malformed_stdin_is_code_6() {
    let out = run_plugin("ADD", "{\"cniVersion\": \"1.0.0\", name", &[]);
    assert_cni_error(&out, 6);
}

#[test]
fn config_errors_are_codes_7_and_1() {
    let out = run_plugin("ADD", r#"{"cniVersion":"1.0.0","type":"brindle"}"#, &[]);
    let v = assert_cni_error(&out, 7);
    assert!(v["msg"].as_str().unwrap_or("").contains("name"), "{v}");
    let out = run_plugin("ADD", r#"{"cniVersion":"1.2.0","name":"n"}"#, &[]);
    assert_cni_error(&out, 1);
}

#[test]
fn missing_environment_is_code_4_naming_the_variable() {
    let stdin = conf("0.4.0", Path::new("/nonexistent.sock"), json!({}));
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let out = run_plugin("ADD", &stdin, &[(var, "")]);
        let v = assert_cni_error(&out, 4);
        assert!(v["msg"].as_str().unwrap_or("").contains(var), "{var}: {v}");
    }
    let out = run_plugin("ADD", &stdin, &[("CNI_ARGS", "K8S_POD_NAME=x;SURPRISE=1")]);
    assert_cni_error(&out, 4);
}
