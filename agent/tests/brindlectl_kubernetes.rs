//! `brindlectl --datastore kubernetes:<kubeconfig>` as a user runs it, against a FAKE of the
//! Kubernetes API server (datastore_conformance/fake_apiserver.rs: its semantics for Brindle's
//! custom resources, in process; not a real API server).

#[allow(dead_code)]
#[path = "datastore_conformance/fake_apiserver.rs"]
mod fake_apiserver;

use std::path::PathBuf;
use std::process::Command;

use brindle_agent::datastore::kubernetes::crd;
use fake_apiserver::FakeApiServer;

fn temp(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "brindlectl-k8s-{name}-{}-{nanos}",
        std::process::id()
    ))
}

/// Runs brindlectl with `args`; its exit status, stdout and stderr.
fn brindlectl(spec: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brindlectl"))
        .arg("--datastore")
        .arg(spec)
        .args(args)
        .output()
        .expect("run brindlectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn brindlectl_applies_and_gets_pools_through_the_kubernetes_fake_apiserver() {
    let kinds: Vec<&str> = crd::KINDS.iter().map(|k| k.kind).collect();
    let fake = FakeApiServer::start(&kinds, temp("kubeconfig"));
    let spec = fake.spec();
    let pools = TempFile(temp("pools.yaml"));
    std::fs::write(
        &pools.0,
        "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n\
         spec:\n  cidr: 10.244.0.0/16\n  vxlanMode: Always\n  natOutgoing: true\n\
         ---\n\
         apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: calico-pool\n\
         spec:\n  cidr: 10.96.0.0/16\n  blockSize: 28\n  ipipMode: Always\n",
    )
    .expect("write pools");
    let path = pools.0.to_string_lossy().into_owned();
    let (ok, stdout, stderr) = brindlectl(&spec, &["apply", "-f", &path]);
    assert!(ok, "apply failed:\n{stdout}\n{stderr}");

    let (ok, table, stderr) = brindlectl(&spec, &["get", "ippools"]);
    assert!(ok, "get failed: {stderr}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "CIDR", "BLOCK SIZE", "IPIP", "VXLAN", "NAT"] {
        assert!(header.contains(column), "{column} in {header:?}");
    }
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let default = row("default-ipv4-ippool");
    assert!(
        default.contains(&"10.244.0.0/16") && default.contains(&"26"),
        "{default:?}"
    );
    let calico = row("calico-pool");
    assert!(
        calico.contains(&"10.96.0.0/16") && calico.contains(&"28"),
        "{calico:?}"
    );

    // The revision shown is the API server's resourceVersion.
    let (ok, yaml, stderr) = brindlectl(&spec, &["get", "ippools", "-o", "yaml"]);
    assert!(ok, "get -o yaml failed: {stderr}");
    assert!(yaml.contains("resourceVersion: '100"), "{yaml}");

    // An invalid document: a one-line error, a non-zero exit, nothing written.
    std::fs::write(
        &pools.0,
        "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: ok-pool\nspec:\n  cidr: 10.50.0.0/16\n\
         ---\n\
         apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: bad-pool\nspec:\n  cidr: 10.60.0.0/16\n  blockSize: 12\n",
    )
    .expect("write pools");
    let (ok, _, stderr) = brindlectl(&spec, &["apply", "-f", &path]);
    assert!(!ok, "an invalid pool is refused");
    assert!(stderr.contains("blockSize"), "{stderr}");
    let (_, table, _) = brindlectl(&spec, &["get", "ippools"]);
    assert!(!table.contains("ok-pool"), "nothing written:\n{table}");
}
