//! The default IP pools from environment variables, against the embedded datastore (a SQLite
//! file, as `brindle-node --datastore embedded:...` opens it), read back as `brindlectl get
//! ippools` shows them.

use std::path::PathBuf;
use std::process::Command;

use brindle_agent::datastore;
use brindle_agent::default_pools::DefaultPoolsConfig;
use brindle_ipam::model::{EncapMode, IpPoolSpec};
use brindle_ipam::store::StoreExt;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "brindle-default-pools-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env(vars: &'static [(&'static str, &'static str)]) -> DefaultPoolsConfig {
    DefaultPoolsConfig::from_env(|var| {
        vars.iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.to_string())
    })
    .expect("valid environment")
}

#[tokio::test]
async fn first_start_creates_the_pools_and_later_starts_leave_them() {
    let dir = TempDir::new("first");
    let spec = format!("embedded:{}", dir.0.join("store.db").display());
    let store = datastore::open(&spec).await.expect("open");
    let config = env(&[
        ("CALICO_IPV4POOL_CIDR", "10.244.0.0/16"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
        ("BRINDLE_IPV4POOL_BLOCK_SIZE", "24"),
        ("BRINDLE_IPV6POOL_CIDR", "fd00:10:244::/48"),
    ]);
    let created = config.ensure(&store).await.expect("first start");
    assert_eq!(created, ["default-ipv4-ippool", "default-ipv6-ippool"]);

    // What a user sees.
    let out = Command::new(env!("CARGO_BIN_EXE_brindlectl"))
        .args(["--datastore", &spec, "get", "ippools"])
        .output()
        .expect("brindlectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let v4 = row("default-ipv4-ippool");
    assert_eq!(&v4[1..3], ["10.244.0.0/16", "24"], "{v4:?}");
    assert!(v4.contains(&"Always") && v4.contains(&"true"), "{v4:?}");
    let v6 = row("default-ipv6-ippool");
    assert_eq!(&v6[1..3], ["fd00:10:244::/48", "122"], "{v6:?}");

    // The user edits the pool; the next start (even with other variables) leaves it alone.
    let (pools, _) = store.list_objs::<IpPoolSpec>().await.expect("list");
    let mut pool = pools
        .into_iter()
        .find(|p| p.metadata.name == "default-ipv4-ippool")
        .expect("v4 pool");
    pool.spec.vxlan_mode = EncapMode::CrossSubnet;
    store.update_obj(&pool).await.expect("edit");
    let restart = env(&[("BRINDLE_IPV4POOL_CIDR", "10.99.0.0/16")]);
    let created = restart.ensure(&store).await.expect("restart");
    assert!(created.is_empty(), "{created:?}");
    let (pools, _) = store.list_objs::<IpPoolSpec>().await.expect("list");
    assert_eq!(pools.len(), 2);
    let v4 = pools
        .iter()
        .find(|p| p.metadata.name == "default-ipv4-ippool")
        .expect("v4 pool");
    assert_eq!(v4.spec.cidr.to_string(), "10.244.0.0/16");
    assert_eq!(v4.spec.vxlan_mode, EncapMode::CrossSubnet);
}

#[tokio::test]
async fn nodes_starting_together_create_one_pool() {
    let dir = TempDir::new("race");
    let spec = format!("embedded:{}", dir.0.join("store.db").display());
    let config = env(&[("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16")]);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let spec = spec.clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let store = datastore::open(&spec).await.expect("open");
            config.ensure(&store).await.expect("ensure")
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await.expect("task").len();
    }
    assert_eq!(created, 1, "exactly one node creates the pool");
    let store = datastore::open(&spec).await.expect("open");
    let (pools, _) = store.list_objs::<IpPoolSpec>().await.expect("list");
    assert_eq!(pools.len(), 1);
}

#[tokio::test]
async fn no_pool_without_the_variables() {
    let dir = TempDir::new("none");
    let spec = format!("embedded:{}", dir.0.join("store.db").display());
    let store = datastore::open(&spec).await.expect("open");
    let created = env(&[("BRINDLE_IPV4POOL_VXLAN", "Always")])
        .ensure(&store)
        .await
        .expect("ensure");
    assert!(created.is_empty());
    let (pools, _) = store.list_objs::<IpPoolSpec>().await.expect("list");
    assert!(pools.is_empty());
}

#[test]
fn brindle_node_refuses_a_bad_pool_variable_at_start() {
    let dir = TempDir::new("bad-env");
    let out = Command::new(env!("CARGO_BIN_EXE_brindle-node"))
        .env_clear()
        .env("BRINDLE_IPV4POOL_CIDR", "10.244.0.0/16")
        .env("CALICO_IPV4POOL_VXLAN", "sometimes")
        .args(["--datastore"])
        .arg(format!("embedded:{}", dir.0.join("store.db").display()))
        .args(["--socket"])
        .arg(dir.0.join("agent.sock"))
        .output()
        .expect("run brindle-node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CALICO_IPV4POOL_VXLAN=\"sometimes\"")
            && stderr.contains("Never, Always or CrossSubnet"),
        "{stderr}"
    );
    assert!(
        !dir.0.join("store.db").exists(),
        "stopped before touching the datastore"
    );
}

#[test]
fn kubernetes_internal_ip_needs_the_kubernetes_datastore() {
    let dir = TempDir::new("internal-ip");
    let out = Command::new(env!("CARGO_BIN_EXE_brindle-node"))
        .env_clear()
        .env("IP_AUTODETECTION_METHOD", "kubernetes-internal-ip")
        .args(["--datastore"])
        .arg(format!("embedded:{}", dir.0.join("store.db").display()))
        .output()
        .expect("run brindle-node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kubernetes-internal-ip needs --datastore kubernetes"),
        "Calico's variable name is read too: {stderr}"
    );
    assert!(!dir.0.join("store.db").exists(), "nothing opened");
}
