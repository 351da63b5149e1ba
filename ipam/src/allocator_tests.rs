//! Tests of [`super::Ipam`] against the in-memory store.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;

use super::*;
use crate::check::check_invariants;
use crate::model::IpamHandleSpec;
use crate::store::{KvPair, Listing, MemStore, Watch};

pub(crate) async fn add_pool(store: &MemStore, name: &str, cidr: &str, block_size: Option<u8>) {
    let mut spec = serde_json::json!({ "cidr": cidr });
    if let Some(bs) = block_size {
        spec["blockSize"] = bs.into();
    }
    let spec: IpPoolSpec = serde_json::from_value(spec).expect("pool spec");
    store
        .create_obj(&Object::new(name, spec))
        .await
        .expect("create pool");
}

/// Writes the IPAMConfig `default` from YAML.
pub(crate) async fn set_config(store: &MemStore, yaml: &str) {
    let spec: IpamConfigSpec = serde_yaml::from_str(yaml).expect("config");
    match store
        .get_obj::<IpamConfigSpec>(IPAM_CONFIG_NAME)
        .await
        .expect("get")
    {
        Some(mut c) => {
            c.spec = spec;
            store.update_obj(&c).await.expect("update config");
        }
        None => {
            store
                .create_obj(&Object::new(IPAM_CONFIG_NAME, spec))
                .await
                .expect("create config");
        }
    }
}

/// Creates a pool from a JSON spec.
pub(crate) async fn add_pool_spec(store: &MemStore, name: &str, spec: serde_json::Value) {
    let spec: IpPoolSpec = serde_json::from_value(spec).expect("pool spec");
    store
        .create_obj(&Object::new(name, spec))
        .await
        .expect("create pool");
}

pub(crate) fn ipam(store: &MemStore) -> Ipam {
    Ipam::new(Arc::new(store.clone()))
}

pub(crate) fn req(handle: &str, node: &str) -> AssignRequest {
    AssignRequest::workload(handle, node, 1)
}

pub(crate) async fn one(ipam: &Ipam, handle: &str, node: &str) -> IpNet {
    let nets = ipam.auto_assign(&req(handle, node)).await.expect("assign");
    assert_eq!(nets.len(), 1, "{nets:?}");
    nets[0]
}

pub(crate) async fn affinities(store: &MemStore) -> Vec<BlockAffinitySpec> {
    let (affs, _) = store.list_objs::<BlockAffinitySpec>().await.expect("list");
    affs.into_iter().map(|a| a.spec).collect()
}

pub(crate) async fn block_spec(store: &MemStore, cidr: &IpNet) -> IpamBlockSpec {
    store
        .get_obj::<IpamBlockSpec>(&cidr_to_name(cidr))
        .await
        .expect("get")
        .expect("block exists")
        .spec
}

pub(crate) async fn assert_consistent(store: &MemStore) {
    if let Err(problems) = check_invariants(store).await {
        panic!("IPAM invariants broken:\n{}", problems.join("\n"));
    }
}

#[tokio::test]
async fn claims_a_block_and_allocates_sequential_addresses_with_block_prefix() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let b = one(&ipam, "h2", "n1").await;
    let c = one(&ipam, "h3", "n1").await;
    assert_eq!(a.prefix_len(), 26);
    let block = a.trunc();
    assert_eq!(b.trunc(), block);
    assert_eq!(c.trunc(), block);
    // The first address is the block's first: every ordinal is usable.
    assert_eq!(a.addr(), block.addr());
    let next = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + 1).into()),
        IpAddr::V6(_) => unreachable!(),
    };
    assert_eq!(b.addr(), next(a.addr()));
    assert_eq!(c.addr(), next(b.addr()));
    assert_eq!(ipam.node_blocks("n1").await.expect("blocks"), vec![block]);
    let affs = affinities(&store).await;
    assert_eq!(affs.len(), 1);
    assert_eq!(affs[0].state, AffinityState::Confirmed);
    assert_eq!(affs[0].cidr, block);
    let spec = block_spec(&store, &block).await;
    assert_eq!(spec.affinity.as_deref(), Some("host:n1"));
    assert!(spec.affinity_claim_time.is_some());
    assert_eq!(block::allocated_count(&spec), 3);
    assert_eq!(ipam.ips_by_handle("h2").await.expect("ips"), vec![b.addr()]);
    assert_consistent(&store).await;
}

#[tokio::test]
async fn second_node_claims_a_different_block() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let b = one(&ipam, "h2", "n2").await;
    assert_ne!(a.trunc(), b.trunc());
    assert_eq!(
        ipam.node_blocks("n2").await.expect("blocks"),
        vec![b.trunc()]
    );
    assert_consistent(&store).await;
}

#[tokio::test]
async fn a_full_block_makes_the_node_claim_another() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    let mut seen = BTreeSet::new();
    for i in 0..64 {
        let ip = one(&ipam, &format!("h{i}"), "n1").await;
        assert!(seen.insert(ip.addr()), "{ip} handed out twice");
    }
    let first: BTreeSet<IpNet> = seen
        .iter()
        .map(|ip| IpNet::new(*ip, 26).expect("net").trunc())
        .collect();
    assert_eq!(first.len(), 1, "64 addresses fill exactly one /26");
    let ip = one(&ipam, "h64", "n1").await;
    assert!(!first.contains(&ip.trunc()));
    assert_eq!(ipam.node_blocks("n1").await.expect("blocks").len(), 2);
    // A multi-address request spans blocks when it has to.
    let nets = ipam
        .auto_assign(&AssignRequest::workload("many", "n1", 70))
        .await
        .expect("assign");
    assert_eq!(nets.len(), 70);
    assert_eq!(ipam.node_blocks("n1").await.expect("blocks").len(), 3);
    assert_consistent(&store).await;
}

#[tokio::test]
async fn release_frees_and_the_address_comes_back_last() {
    let store = MemStore::default();
    add_pool(&store, "small", "10.0.0.0/24", Some(29)).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let b = one(&ipam, "h2", "n1").await;
    assert_eq!(
        ipam.release_by_handle("h1").await.expect("release"),
        vec![a.addr()]
    );
    assert!(ipam.ips_by_handle("h1").await.expect("ips").is_empty());
    assert!(store
        .get_obj::<IpamHandleSpec>("h1")
        .await
        .expect("get")
        .is_none());
    assert!(ipam
        .release_by_handle("h1")
        .await
        .expect("again")
        .is_empty());
    // The six never-used addresses of the /29 go first, then the released one.
    let mut later = Vec::new();
    for i in 0..7 {
        later.push(one(&ipam, &format!("x{i}"), "n1").await);
    }
    assert!(later[..6]
        .iter()
        .all(|n| n.trunc() == a.trunc() && *n != a && *n != b));
    assert_eq!(later[6], a);
    assert_eq!(ipam.node_blocks("n1").await.expect("blocks").len(), 1);
    assert_consistent(&store).await;
}

#[tokio::test]
async fn empty_affine_blocks_are_kept() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    ipam.release_by_handle("h1").await.expect("release");
    let spec = block_spec(&store, &a.trunc()).await;
    assert!(block::is_empty(&spec));
    assert_eq!(
        ipam.node_blocks("n1").await.expect("blocks"),
        vec![a.trunc()]
    );
}

#[tokio::test]
async fn re_add_with_the_same_handle_returns_the_same_address() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let again = one(&ipam, "h1", "n1").await;
    assert_eq!(a, again);
    let handle = store
        .get_obj::<IpamHandleSpec>("h1")
        .await
        .expect("get")
        .expect("handle");
    assert_eq!(handle.spec.block.values().sum::<u32>(), 1);
    assert_eq!(
        block::allocated_count(&block_spec(&store, &a.trunc()).await),
        1
    );
    assert_consistent(&store).await;
}

#[tokio::test]
async fn exhausted_pool_is_a_capacity_error_and_leaves_nothing_behind() {
    let store = MemStore::default();
    add_pool(&store, "tiny", "10.0.0.0/26", Some(26)).await;
    // Strict affinity: n2 may not borrow from n1's block.
    set_config(&store, "strictAffinity: true").await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let err = ipam
        .auto_assign(&req("h2", "n2"))
        .await
        .expect_err("no block for n2");
    assert!(err.is_capacity(), "{err}");
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    let affs = affinities(&store).await;
    assert_eq!(affs.len(), 1, "n2's pending affinity was removed: {affs:?}");
    assert_eq!(affs[0].node, "n1");
    assert!(store
        .get_obj::<IpamHandleSpec>("h2")
        .await
        .expect("get")
        .is_none());
    // n1 asks for more than its block has left: all or nothing.
    let err = ipam
        .auto_assign(&AssignRequest::workload("big", "n1", 64))
        .await
        .expect_err("63 free");
    assert!(err.is_capacity(), "{err}");
    assert!(store
        .get_obj::<IpamHandleSpec>("big")
        .await
        .expect("get")
        .is_none());
    let spec = block_spec(&store, &a.trunc()).await;
    assert_eq!(block::allocated_count(&spec), 1);
    assert_eq!(spec.attributes.len(), 1);
    assert_consistent(&store).await;
}

#[tokio::test]
async fn no_usable_pool_is_no_pool() {
    let store = MemStore::default();
    let ipam = ipam(&store);
    let err = ipam.auto_assign(&req("h", "n1")).await.expect_err("none");
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    add_pool(&store, "off", "10.0.0.0/16", None).await;
    let mut off: Object<IpPoolSpec> = store.get_obj("off").await.expect("get").expect("pool");
    off.spec.disabled = true;
    store.update_obj(&off).await.expect("disable");
    let err = ipam
        .auto_assign(&req("h", "n1"))
        .await
        .expect_err("disabled");
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    assert!(!err.is_capacity());
    // A pool that does not allow the use, and one of the other family, do not count either.
    add_pool(&store, "v6", "fd00::/48", None).await;
    let mut lb = AssignRequest::workload("h", "n1", 1);
    lb.use_ = AllowedUse::LoadBalancer;
    let err = ipam.auto_assign(&lb).await.expect_err("no LB pool");
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    let mut named = req("h", "n1");
    named.pools = Some(vec!["missing".to_string()]);
    let err = ipam.auto_assign(&named).await.expect_err("unknown pool");
    assert!(matches!(err, IpamError::PoolNotFound { .. }), "{err}");
    assert!(affinities(&store).await.is_empty());
}

#[tokio::test]
async fn requested_pools_are_used_exactly() {
    let store = MemStore::default();
    add_pool(&store, "a", "10.1.0.0/16", None).await;
    add_pool(&store, "b", "10.2.0.0/16", None).await;
    let ipam = ipam(&store);
    let mut r = req("h", "n1");
    r.pools = Some(vec!["b".to_string()]);
    let nets = ipam.auto_assign(&r).await.expect("assign");
    assert!("10.2.0.0/16"
        .parse::<IpNet>()
        .expect("net")
        .contains(&nets[0]));
}

#[tokio::test]
async fn the_block_limit_stops_a_node() {
    let store = MemStore::default();
    // blockSize 32: one address per block, so the limit is reached after 20 addresses.
    add_pool(&store, "one-per-block", "10.0.0.0/24", Some(32)).await;
    let ipam = ipam(&store);
    let nets = ipam
        .auto_assign(&AssignRequest::workload("h", "n1", MAX_BLOCKS_PER_HOST))
        .await
        .expect("assign");
    assert!(nets.iter().all(|n| n.prefix_len() == 32));
    let err = ipam.auto_assign(&req("h2", "n1")).await.expect_err("limit");
    assert!(matches!(err, IpamError::BlockLimit { .. }), "{err}");
    assert!(err.is_capacity());
    assert_consistent(&store).await;
}

#[tokio::test]
async fn interrupted_claims_are_finished_later() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    // Crash after phase two: the block is ours, the affinity still pending.
    let cidr = candidate_blocks(&"10.244.0.0/16".parse().expect("net"), 26, "n1")
        .next()
        .expect("a candidate");
    ipam.ensure_pending_affinity("n1", cidr)
        .await
        .expect("pending");
    assert!(ipam.create_block("n1", cidr).await.expect("block"));
    assert!(ipam.node_blocks("n1").await.expect("blocks").is_empty());
    let a = one(&ipam, "h1", "n1").await;
    assert_eq!(a.trunc(), cidr);
    assert_eq!(ipam.node_blocks("n1").await.expect("blocks"), vec![cidr]);
    // A confirmed affinity whose block vanished: the block is recreated.
    ipam.release_by_handle("h1").await.expect("release");
    store
        .delete("IPAMBlock", &cidr_to_name(&cidr), None)
        .await
        .expect("delete");
    let b = one(&ipam, "h2", "n1").await;
    assert_eq!(b.trunc(), cidr);
    assert_consistent(&store).await;
}

#[tokio::test]
async fn ipv6_uses_the_same_logic() {
    let store = MemStore::default();
    add_pool(&store, "v6", "fd00:10::/112", None).await;
    let ipam = ipam(&store);
    let nets = ipam
        .auto_assign(&AssignRequest {
            num_v6: 2,
            ..AssignRequest::workload("h", "n1", 0)
        })
        .await
        .expect("assign");
    assert_eq!(nets.len(), 2);
    assert!(nets.iter().all(|n| n.prefix_len() == 122));
    assert_eq!(ipam.release_by_handle("h").await.expect("release").len(), 2);
    assert_consistent(&store).await;
}

/// A store whose handle writes always fail, to see that the block write is undone.
struct BrokenHandles(MemStore);

#[async_trait]
impl Store for BrokenHandles {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        self.0.get(kind, name).await
    }
    async fn list(&self, kind: &str) -> Result<Listing, StoreError> {
        self.0.list(kind).await
    }
    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        if kind == "IPAMHandle" {
            return Err(StoreError::Unavailable("handles are broken".into()));
        }
        self.0.create(kind, name, value).await
    }
    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        if kind == "IPAMHandle" {
            return Err(StoreError::Unavailable("handles are broken".into()));
        }
        self.0.update(kind, name, value, expected).await
    }
    async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        self.0.delete(kind, name, expected).await
    }
    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError> {
        self.0.watch(kind, after).await
    }
}

#[tokio::test]
async fn a_failed_handle_write_undoes_the_block_write() {
    let store = MemStore::default();
    add_pool(&store, "default", "10.244.0.0/16", None).await;
    let ipam = Ipam::new(Arc::new(BrokenHandles(store.clone())));
    let err = ipam
        .auto_assign(&req("h1", "n1"))
        .await
        .expect_err("broken");
    assert!(
        matches!(err, IpamError::Store(StoreError::Unavailable(_))),
        "{err}"
    );
    let (blocks, _) = store.list_objs::<IpamBlockSpec>().await.expect("list");
    assert_eq!(blocks.len(), 1, "the claim itself stands");
    assert!(block::is_empty(&blocks[0].spec));
    assert!(blocks[0].spec.attributes.is_empty());
    assert_consistent(&store).await;
}

#[test]
fn candidate_blocks_start_per_node_and_wrap() {
    assert_eq!(fnv1a32(b""), 0x811c_9dc5);
    assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    let pool: IpNet = "10.0.0.0/24".parse().expect("net");
    let order: Vec<IpNet> = candidate_blocks(&pool, 26, "n1").collect();
    assert_eq!(order.len(), 4);
    let start = (fnv1a32(b"n1") % 4) as usize;
    let all: Vec<IpNet> = pool.subnets(26).expect("subnets").collect();
    for (i, cidr) in order.iter().enumerate() {
        assert_eq!(*cidr, all[(start + i) % 4]);
    }
    assert_eq!(order, candidate_blocks(&pool, 26, "n1").collect::<Vec<_>>());
    let v6: IpNet = "fd00::/64".parse().expect("net");
    let first = candidate_blocks(&v6, 122, "n1").next().expect("first");
    assert_eq!(first.prefix_len(), 122);
    assert!(v6.contains(&first));
}
