//! IPAM under contention: 8 OS processes on 4 nodes allocate and release addresses at random
//! against one datastore (the embedded file, a real etcd, and the kubernetes backend against a
//! fake of the API server), then a checker verifies every invariant: no address allocated
//! twice, every handle consistent with the blocks, nothing leaked after every release.
//!
//! The parent re-executes this test binary (`current_exe()`, the test's name, `--exact`) with
//! [`ROLE_ENV`] set; each child runs the workload and prints what it holds at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::process::Stdio;

use brindle_ipam::check::check_invariants;
use brindle_ipam::model::{IpPoolSpec, IpamBlockSpec, Object};
use brindle_ipam::store::StoreExt;
use brindle_ipam::{AssignRequest, Ipam};

#[allow(dead_code)]
#[path = "datastore_conformance/fixture.rs"]
mod fixture;

const ROLE_ENV: &str = "BRINDLE_HAMMER_WORKER";
const SPEC_ENV: &str = "BRINDLE_HAMMER_DATASTORE";
const PROCESSES: usize = 8;
const NODES: usize = 4;
const STEPS: usize = 200;
/// Most handles a worker holds at once.
const MAX_LIVE: usize = 6;

/// A small deterministic PRNG (xorshift64*), seeded per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One worker: allocate and release at random; print `handle ip` for what it still holds.
async fn worker(index: usize, spec: &str) {
    let store = brindle_agent::datastore::open(spec)
        .await
        .expect("open store");
    let ipam = Ipam::new(store);
    let node = format!("node{}", index % NODES);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut live: BTreeMap<String, IpAddr> = BTreeMap::new();
    for step in 0..STEPS {
        let allocate = live.is_empty() || (live.len() < MAX_LIVE && rng.next() % 3 != 0);
        if allocate {
            let handle = format!("hammer.w{index}-{step}");
            let ips = ipam
                .auto_assign(&AssignRequest::workload(handle.clone(), node.clone(), 1))
                .await
                .unwrap_or_else(|e| panic!("worker {index} step {step}: allocation failed: {e}"));
            assert_eq!(ips.len(), 1, "one address per request");
            live.insert(handle, ips[0].addr());
        } else {
            let pick = (rng.next() as usize) % live.len();
            let handle = live.keys().nth(pick).cloned().expect("non-empty");
            let released = ipam
                .release_by_handle(&handle)
                .await
                .unwrap_or_else(|e| panic!("worker {index}: release of {handle} failed: {e}"));
            assert_eq!(
                released,
                vec![live[&handle]],
                "release returns what was held"
            );
            live.remove(&handle);
        }
    }
    for (handle, ip) in &live {
        println!("HOLD {handle} {ip}");
    }
}

#[test]
fn eight_processes_on_the_embedded_store() {
    hammer("eight_processes_on_the_embedded_store", |test| {
        Box::pin(fixture::Backend::embedded(test, false))
    });
}

#[test]
fn eight_processes_on_etcd() {
    hammer("eight_processes_on_etcd", |test| {
        Box::pin(fixture::Backend::etcd(test, false))
    });
}

/// Through the kubernetes datastore, against a FAKE of the API server (its CRD semantics in
/// process, see datastore_conformance/fake_apiserver.rs), not a real one.
#[test]
fn eight_processes_on_kubernetes_fake_apiserver() {
    hammer("eight_processes_on_kubernetes_fake_apiserver", |test| {
        Box::pin(fixture::Backend::kubernetes_fake(test, false))
    });
}

type MakeBackend = fn(&'static str) -> Pin<Box<dyn Future<Output = Option<fixture::Backend>>>>;

/// Runs the workers against the backend `make` gives (or acts as a worker when re-executed).
fn hammer(test: &'static str, make: MakeBackend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(index) = std::env::var(ROLE_ENV) {
        let spec = std::env::var(SPEC_ENV).expect("datastore spec");
        rt.block_on(worker(index.parse().expect("index"), &spec));
        return;
    }
    let Some(backend) = rt.block_on(make(test)) else {
        return; // the fixture said why it skipped
    };
    let store = backend.store();
    let path = backend.spec().expect("a backend other processes can open");
    // Small blocks in a small pool, so that nodes race for blocks as well as for addresses.
    let pool: IpPoolSpec = serde_json::from_value(serde_json::json!({
        "cidr": "10.250.0.0/24",
        "blockSize": 29,
    }))
    .expect("pool");
    rt.block_on(store.create_obj(&Object::new("hammer", pool)))
        .expect("create pool");

    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            std::process::Command::new(&exe)
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(ROLE_ENV, i.to_string())
                .env(SPEC_ENV, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    let mut held: BTreeMap<String, IpAddr> = BTreeMap::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("worker output");
        assert!(
            out.status.success(),
            "worker {i} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest prints `test <name> ... ` without a newline before the test's own output.
            if let Some(rest) = line.find("HOLD ").map(|at| &line[at + 5..]) {
                let (handle, ip) = rest.split_once(' ').expect("HOLD handle ip");
                held.insert(handle.to_string(), ip.parse().expect("ip"));
            }
        }
    }

    rt.block_on(async {
        // No address handed to two holders; the store agrees with what each worker holds.
        let distinct: BTreeSet<_> = held.values().collect();
        assert_eq!(
            distinct.len(),
            held.len(),
            "an address was handed out twice: {held:?}"
        );
        check_invariants(store.as_ref())
            .await
            .unwrap_or_else(|problems| panic!("invariants broken:\n{}", problems.join("\n")));
        let ipam = Ipam::new(store.clone());
        for (handle, ip) in &held {
            let ips = ipam.ips_by_handle(handle).await.expect("lookup");
            assert_eq!(ips, vec![*ip], "handle {handle} disagrees with its holder");
        }
        let (blocks, _) = store.list_objs::<IpamBlockSpec>().await.expect("blocks");
        let allocated: usize = blocks
            .iter()
            .map(|b| b.spec.allocations.iter().filter(|a| a.is_some()).count())
            .sum();
        if allocated != held.len() {
            let mut orphans = Vec::new();
            for b in &blocks {
                for (ord, a) in b.spec.allocations.iter().enumerate() {
                    if let Some(attr) = a.and_then(|i| b.spec.attributes.get(i)) {
                        let handle = attr.handle_id.clone().unwrap_or_default();
                        if !held.contains_key(&handle) {
                            orphans.push(format!("{} ordinal {ord} handle {handle}", b.spec.cidr));
                        }
                    }
                }
            }
            panic!(
                "{} allocations but {} held; allocations nobody holds (a leak): {orphans:?}",
                allocated,
                held.len()
            );
        }

        // Release everything: nothing may stay allocated.
        for handle in held.keys() {
            ipam.release_by_handle(handle).await.expect("release");
        }
        check_invariants(store.as_ref())
            .await
            .unwrap_or_else(|problems| panic!("invariants broken:\n{}", problems.join("\n")));
        let (blocks, _) = store.list_objs::<IpamBlockSpec>().await.expect("blocks");
        let left: Vec<_> = blocks
            .iter()
            .filter(|b| b.spec.allocations.iter().any(Option::is_some))
            .map(|b| b.spec.cidr)
            .collect();
        assert!(left.is_empty(), "addresses leaked in {left:?}");
    });
}
