//! manifests/brindle.yaml checked as Kubernetes reads it: every document parses as its typed
//! Kubernetes object with no field Kubernetes would drop, the DaemonSet has what a node agent
//! needs, its ConfigMap holds the shipped conflist, its pool variables are valid, the RBAC
//! grants every call the agent makes against a FAKE API server (not a real one: none can run
//! here), and `kubectl apply|create --dry-run=client` accepts every manifest (skipped without
//! kubectl unless CI is set).

#[allow(dead_code)]
#[path = "datastore_conformance/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use brindle_agent::datastore::kubernetes::crd;
use brindle_agent::default_pools::DefaultPoolsConfig;
use brindle_agent::{cni_install, datastore, kube_pod, node};
use brindle_ipam::model::IpPoolSpec;
use brindle_ipam::store::{Store, StoreExt};
use brindle_ipam::{AssignRequest, Ipam};
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests");

fn manifest(name: &str) -> String {
    std::fs::read_to_string(format!("{MANIFESTS}/{name}")).expect("manifest file")
}

/// The documents of a YAML stream, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).expect("valid YAML");
            serde_json::to_value(value).expect("JSON-compatible YAML")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in manifests/brindle.yaml"));
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

/// Parses `doc` as `T` and back: a field `T` does not have (a typo, a field at the wrong
/// level) is dropped by the round trip, which the comparison shows.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Value {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    serde_json::to_value(typed).expect("serialize")
}

#[test]
fn every_document_is_a_kubernetes_object_without_unknown_fields() {
    let docs = documents(&manifest("brindle.yaml"));
    let mut kinds = BTreeSet::new();
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("kind");
        let back = match kind {
            "ServiceAccount" => round_trips::<ServiceAccount>(doc),
            "ClusterRole" => round_trips::<ClusterRole>(doc),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(doc),
            "ConfigMap" => round_trips::<ConfigMap>(doc),
            "DaemonSet" => round_trips::<DaemonSet>(doc),
            other => panic!("unexpected kind {other} in manifests/brindle.yaml"),
        };
        assert_eq!(
            &back, doc,
            "{kind} {}: a field Kubernetes does not know",
            doc["metadata"]["name"]
        );
        kinds.insert(kind.to_string());
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn env_field_ref(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.clone())
}

fn mounts(container: &Container) -> BTreeMap<String, String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.name.clone()))
        .collect()
}

#[test]
fn the_daemonset_runs_the_agent_on_every_node() {
    let docs = documents(&manifest("brindle.yaml"));
    let ds: DaemonSet = find(&docs, "DaemonSet", "brindle-node");
    let pod = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint: {tolerations:?}"
    );
    let host_paths: BTreeMap<String, String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), v.host_path.as_ref()?.path.clone())))
        .collect();

    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "brindle-node")
        .expect("brindle-node container");
    assert_eq!(
        agent.command.as_deref(),
        Some(&["brindle-node".to_string()][..])
    );
    assert_eq!(
        agent.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    assert_eq!(
        env_field_ref(agent, "NODENAME").as_deref(),
        Some("spec.nodeName")
    );
    assert_eq!(
        env_value(agent, "BRINDLE_DATASTORE").as_deref(),
        Some("kubernetes")
    );
    for (probe, path) in [
        (agent.liveness_probe.as_ref(), "/liveness"),
        (agent.readiness_probe.as_ref(), "/readiness"),
    ] {
        let get = probe.and_then(|p| p.http_get.as_ref()).expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9099)
        );
    }
    let ports: BTreeSet<i32> = agent
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert!(ports.contains(&9091) && ports.contains(&9099), "{ports:?}");
    let agent_mounts = mounts(agent);
    for (path, host) in [
        ("/var/run/brindle", "/var/run/brindle"),
        ("/var/lib/brindle", "/var/lib/brindle"),
        ("/var/run/netns", "/var/run/netns"),
    ] {
        let volume = agent_mounts.get(path).expect("agent mount");
        assert_eq!(host_paths.get(volume).map(String::as_str), Some(host));
    }

    let install = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install-cni")
        .expect("install-cni init container");
    assert_eq!(
        install.command.as_deref(),
        Some(&["brindle-install-cni".to_string()][..])
    );
    let install_mounts = mounts(install);
    for (path, host) in [
        ("/host/opt/cni/bin", "/opt/cni/bin"),
        ("/host/etc/cni/net.d", "/etc/cni/net.d"),
    ] {
        let volume = install_mounts.get(path).expect("install-cni mount");
        assert_eq!(host_paths.get(volume).map(String::as_str), Some(host));
    }
    let config_ref = install
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "CNI_NETWORK_CONFIG")
        .and_then(|e| e.value_from.as_ref()?.config_map_key_ref.clone())
        .expect("CNI_NETWORK_CONFIG from a ConfigMap");
    let cm: ConfigMap = find(&docs, "ConfigMap", &config_ref.name);
    assert!(cm.data.unwrap_or_default().contains_key(&config_ref.key));

    // The service account exists and is bound to the role.
    let sa_name = pod.service_account_name.clone().expect("service account");
    let ns = ds.metadata.namespace.clone().expect("namespace");
    let _: ServiceAccount = find(&docs, "ServiceAccount", &sa_name);
    let binding: ClusterRoleBinding = find(&docs, "ClusterRoleBinding", "brindle-node");
    assert_eq!(binding.role_ref.name, "brindle-node");
    assert!(binding
        .subjects
        .iter()
        .flatten()
        .any(|s| s.kind == "ServiceAccount"
            && s.name == sa_name
            && s.namespace.as_deref() == Some(ns.as_str())));
}

#[test]
fn the_configmap_holds_the_shipped_conflist_and_the_pool_variables_are_valid() {
    let docs = documents(&manifest("brindle.yaml"));
    let cm: ConfigMap = find(&docs, "ConfigMap", "brindle-config");
    let conflist = cm
        .data
        .unwrap_or_default()
        .remove("cni_network_config")
        .expect("cni_network_config");
    let shipped: Value = serde_json::from_str(&manifest("10-brindle.conflist")).expect("json");
    let in_map: Value = serde_json::from_str(&conflist).expect("json");
    assert_eq!(
        in_map, shipped,
        "manifests/brindle.yaml's ConfigMap and manifests/10-brindle.conflist differ"
    );
    let rendered = cni_install::render_conflist(&conflist, &[]).expect("installable");
    assert!(
        !cni_install::holds_credentials(&rendered),
        "no credentials: 0644"
    );

    let ds: DaemonSet = find(&docs, "DaemonSet", "brindle-node");
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "brindle-node")
        .expect("container");
    let pools = DefaultPoolsConfig::from_env(|var| env_value(agent, var)).expect("valid pool env");
    assert!(pools.v4.is_some(), "the manifest creates an IPv4 pool");
    let method = env_value(agent, "BRINDLE_IP_AUTODETECTION_METHOD").expect("method");
    if method != brindle_agent::kube_node::KUBERNETES_INTERNAL_IP {
        method
            .parse::<node::AutodetectMethod>()
            .expect("a method brindle-node accepts");
    }
}

/// Whether `role` allows `verb` on `resource` of group brindle.dev.
fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    role.rules.iter().flatten().any(|rule| {
        rule.api_groups.iter().flatten().any(|g| g == group)
            && rule.resources.iter().flatten().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

fn temp(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "brindle-manifests-{name}-{}-{nanos}",
        std::process::id()
    ))
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn rbac_grants_every_call_the_agent_makes() {
    let docs = documents(&manifest("brindle.yaml"));
    let role: ClusterRole = find(&docs, "ClusterRole", "brindle-node");

    let kinds: Vec<&str> = crd::KINDS.iter().map(|k| k.kind).collect();
    let kubeconfig = TempFile(temp("kubeconfig"));
    let fake = FakeApiServer::start(&kinds, kubeconfig.0.clone());
    let store: Arc<dyn Store> = datastore::open(&fake.spec()).await.expect("open");

    // What brindle-node does at start and while pods come and go (no kernel needed).
    let pools = DefaultPoolsConfig::from_env(|var| match var {
        "BRINDLE_IPV4POOL_CIDR" => Some("10.244.0.0/16".to_string()),
        "BRINDLE_IPV4POOL_VXLAN" => Some("Always".to_string()),
        _ => None,
    })
    .expect("env");
    assert_eq!(pools.ensure(&store).await.expect("default pool").len(), 1);
    let registered = node::register(
        &store,
        "worker-1",
        "10.0.0.7/24".parse().expect("net"),
        None,
    )
    .await
    .expect("register");
    let revision = registered.revision().expect("revision");
    let mut watch = store.watch(None, revision).await.expect("watch");
    let ipam = Ipam::new(store.clone());
    let (pool_objs, _) = store.list_objs::<IpPoolSpec>().await.expect("pools");
    let pool_refs: Vec<_> = pool_objs.iter().collect();
    node::ensure_vxlan_tunnel(&store, &ipam, "worker-1", &pool_refs)
        .await
        .expect("tunnel address");
    let ips = ipam
        .auto_assign(&AssignRequest::workload(
            "k8s-pod-network.c1",
            "worker-1",
            1,
        ))
        .await
        .expect("assign");
    assert_eq!(ips.len(), 1);
    ipam.release_by_handle("k8s-pod-network.c1")
        .await
        .expect("release");
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("a watch event")
        .expect("watch open");
    ipam.config().await.expect("IPAM config");
    // At pod ADD: the Pod's labels read, its addresses written to it.
    fake.set_core_pod(
        "shop",
        "web-1",
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}}}),
    );
    let (client, _) = datastore::kubernetes::client(
        &datastore::kubernetes::KubernetesConfig::from_spec(&fake.spec()).expect("spec"),
    )
    .await
    .expect("client");
    let labels = kube_pod::pod_labels(&client, "shop", "web-1", kube_pod::POD_API_TIMEOUT)
        .await
        .expect("pod labels");
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    kube_pod::annotate_pod_ips(&client, "shop", "web-1", &ips, kube_pod::POD_API_TIMEOUT)
        .await
        .expect("pod annotated");

    let calls: BTreeSet<(String, String)> = fake.requests().into_iter().collect();
    for needed in [
        ("create", "ippools"),
        ("update", "nodes"),
        ("watch", "bgppeers"),
        ("get", "core/pods"),
        ("patch", "core/pods"),
    ] {
        assert!(
            calls.contains(&(needed.0.to_string(), needed.1.to_string())),
            "the exercise made {needed:?}: {calls:?}"
        );
    }
    let denied: Vec<_> = calls
        .iter()
        .filter(|(verb, resource)| match resource.strip_prefix("core/") {
            Some(core) => !allows(&role, "", core, verb),
            None => !allows(&role, "brindle.dev", resource, verb),
        })
        .collect();
    assert!(
        denied.is_empty(),
        "ClusterRole brindle-node lacks {denied:?}"
    );
    // Least privilege: nothing the agent never does.
    for (resource, verb) in [
        ("ippools", "update"),
        ("ippools", "delete"),
        ("bgppeers", "create"),
        ("bgpconfigurations", "update"),
        ("nodes", "delete"),
    ] {
        assert!(
            !allows(&role, "brindle.dev", resource, verb),
            "{verb} {resource}"
        );
    }
    // Patch only on Pods (their IP annotations); no wildcard or collection delete anywhere.
    assert!(role.rules.iter().flatten().all(|r| {
        let pods_only = r.resources.iter().flatten().all(|res| res == "pods");
        !r.verbs
            .iter()
            .any(|v| v == "*" || (v == "patch" && !pods_only) || v == "deletecollection")
    }));
    assert!(allows(&role, "", "pods", "get") && allows(&role, "", "pods", "patch"));
    assert!(!allows(&role, "", "pods", "update") && !allows(&role, "", "pods", "delete"));
    assert!(allows(&role, "", "nodes", "get"), "kubernetes-internal-ip");
    assert!(
        allows(&role, "", "nodes", "watch"),
        "kubernetes-internal-ip follows the Node"
    );
}

/// A server answering only API discovery (what `kubectl create --dry-run=client` asks to map
/// kinds to resources), over plain HTTP/1.1, one request per connection.
struct DiscoveryServer {
    addr: std::net::SocketAddr,
}

fn discovery_answer(path: &str) -> Option<Value> {
    let resource = |name: &str, kind: &str, namespaced: bool| {
        serde_json::json!({
            "name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
        })
    };
    let list = |group_version: &str, resources: Vec<Value>| {
        serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": group_version, "resources": resources
        })
    };
    let group = |name: &str| {
        serde_json::json!({
            "name": name,
            "versions": [{ "groupVersion": format!("{name}/v1"), "version": "v1" }],
            "preferredVersion": { "groupVersion": format!("{name}/v1"), "version": "v1" }
        })
    };
    Some(match path {
        "/api" => serde_json::json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }]
        }),
        "/apis" => serde_json::json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [group("apps"), group("rbac.authorization.k8s.io"), group("apiextensions.k8s.io")]
        }),
        "/api/v1" => list(
            "v1",
            vec![
                resource("serviceaccounts", "ServiceAccount", true),
                resource("configmaps", "ConfigMap", true),
                resource("nodes", "Node", false),
            ],
        ),
        "/apis/apps/v1" => list("apps/v1", vec![resource("daemonsets", "DaemonSet", true)]),
        "/apis/rbac.authorization.k8s.io/v1" => list(
            "rbac.authorization.k8s.io/v1",
            vec![
                resource("clusterroles", "ClusterRole", false),
                resource("clusterrolebindings", "ClusterRoleBinding", false),
            ],
        ),
        "/apis/apiextensions.k8s.io/v1" => list(
            "apiextensions.k8s.io/v1",
            vec![resource(
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )],
        ),
        _ => return None,
    })
}

impl DiscoveryServer {
    fn start() -> DiscoveryServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut content_length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; content_length];
                let _ = reader.read_exact(&mut body);
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .to_string();
                let (status, body) = match discovery_answer(&path) {
                    Some(answer) => ("200 OK", answer.to_string()),
                    None => ("404 Not Found", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        DiscoveryServer { addr }
    }
}

#[test]
fn kubectl_client_dry_run_accepts_the_manifests() {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    if Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is missing (Debian: kubernetes-client)"
        );
        eprintln!("skipping: no kubectl");
        return;
    }
    let server = DiscoveryServer::start();
    let dir = temp("kubectl");
    std::fs::create_dir_all(&dir).expect("dir");
    let _cleanup = TempDirGuard(dir.clone());
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: d\n  cluster:\n    server: http://{}\n\
             users:\n- name: d\n  user: {{}}\ncontexts:\n- name: d\n  context:\n    cluster: d\n    user: d\n\
             current-context: d\n",
            server.addr
        ),
    )
    .expect("kubeconfig");
    let run = |verb: &str, file: &str| {
        Command::new(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &dir)
            .args([
                verb,
                "--dry-run=client",
                "--validate=false",
                "-o",
                "name",
                "--cache-dir",
            ])
            .arg(dir.join("cache"))
            .arg("-f")
            .arg(file)
            .output()
            .expect("run kubectl")
    };
    // `apply` as users run it (its GETs of the live objects find none: created), and `create`.
    for verb in ["apply", "create"] {
        let out = run(verb, MANIFESTS);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {verb} refused:\n{stdout}\n{stderr}"
        );
        let names: BTreeSet<&str> = stdout.lines().collect();
        for want in [
            "customresourcedefinition.apiextensions.k8s.io/ippools.brindle.dev",
            "serviceaccount/brindle-node",
            "clusterrole.rbac.authorization.k8s.io/brindle-node",
            "clusterrolebinding.rbac.authorization.k8s.io/brindle-node",
            "configmap/brindle-config",
            "daemonset.apps/brindle-node",
        ] {
            assert!(names.contains(want), "{want} in\n{stdout}");
        }
        assert_eq!(names.len(), crd::KINDS.len() + 6, "{stdout}");
    }

    // The check can fail: a document of a kind no API serves is refused.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: DaemonSets\nmetadata:\n  name: x\n",
    )
    .expect("bad manifest");
    let out = run("create", &bad.to_string_lossy());
    assert!(!out.status.success(), "a misspelled kind is refused");
}

struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
