//! Tests of assignment features: dual stack, pools by nodeSelector, IPAMConfig, borrowing,
//! `assign_ip` and bad input, against the in-memory store.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::json;

use crate::allocator::tests::{
    add_pool, add_pool_spec, affinities, assert_consistent, block_spec, ipam, one, req, set_config,
};
use crate::block;
use crate::model::{cidr_to_name, IpPoolSpec, IpamBlockSpec, IpamHandleSpec, Object};
use crate::store::{MemStore, StoreExt};
use crate::{AssignRequest, IpamError};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn dual(handle: &str, node: &str) -> AssignRequest {
    AssignRequest {
        num_v6: 1,
        ..AssignRequest::workload(handle, node, 1)
    }
}

#[tokio::test]
async fn one_request_gets_both_families_with_block_prefixes() {
    let store = MemStore::default();
    add_pool(&store, "v4", "10.244.0.0/16", None).await;
    add_pool(&store, "v6", "fd00:10::/108", None).await;
    let ipam = ipam(&store);
    let nets = ipam.auto_assign(&dual("h", "n1")).await.expect("assign");
    assert_eq!(nets.len(), 2, "{nets:?}");
    assert!(matches!(nets[0], IpNet::V4(_)) && nets[0].prefix_len() == 26);
    assert!(matches!(nets[1], IpNet::V6(_)) && nets[1].prefix_len() == 122);
    // Idempotent per family: a repeated ADD gets the same pair.
    assert_eq!(
        ipam.auto_assign(&dual("h", "n1")).await.expect("again"),
        nets
    );
    let handle = store
        .get_obj::<IpamHandleSpec>("h")
        .await
        .expect("get")
        .expect("handle");
    assert_eq!(handle.spec.block.len(), 2);
    assert_eq!(ipam.release_by_handle("h").await.expect("release").len(), 2);
    assert_consistent(&store).await;
}

#[tokio::test]
async fn dual_stack_is_all_or_nothing() {
    let store = MemStore::default();
    add_pool(&store, "v4", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    // No IPv6 pool: nothing is written at all.
    let err = ipam.auto_assign(&dual("h", "n1")).await.expect_err("no v6");
    assert!(
        matches!(err, IpamError::NoPool { family: "IPv6", .. }),
        "{err}"
    );
    assert!(affinities(&store).await.is_empty());
    // An IPv6 pool with no room (strict, one block taken by n2): the IPv4 address is released.
    add_pool(&store, "v6", "fd00:10::/122", None).await;
    set_config(&store, "strictAffinity: true").await;
    let v6_only = AssignRequest {
        num_v6: 1,
        ..AssignRequest::workload("other", "n2", 0)
    };
    ipam.auto_assign(&v6_only)
        .await
        .expect("n2 takes the only v6 block");
    let err = ipam
        .auto_assign(&dual("h", "n1"))
        .await
        .expect_err("v6 full");
    assert!(err.is_capacity(), "{err}");
    assert!(ipam.ips_by_handle("h").await.expect("ips").is_empty());
    let (blocks, _) = store.list_objs::<IpamBlockSpec>().await.expect("list");
    let v4 = blocks
        .iter()
        .find(|b| matches!(b.spec.cidr, IpNet::V4(_)))
        .expect("the v4 block stays claimed");
    assert!(block::is_empty(&v4.spec));
    assert_consistent(&store).await;
}

#[tokio::test]
async fn pools_are_chosen_by_node_selector() {
    let store = MemStore::default();
    add_pool_spec(
        &store,
        "zone-a",
        json!({"cidr": "10.1.0.0/16", "nodeSelector": "zone == 'a'"}),
    )
    .await;
    add_pool_spec(
        &store,
        "not-a",
        json!({"cidr": "10.2.0.0/16", "nodeSelector": "zone != 'a' && !has(edge)"}),
    )
    .await;
    let ipam = ipam(&store);
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut r = req("ha", "na");
    r.node_labels = labels(&[("zone", "a")]);
    let a = ipam.auto_assign(&r).await.expect("zone a");
    assert!(net("10.1.0.0/16").contains(&a[0]), "{a:?}");
    let mut r = req("hb", "nb");
    r.node_labels = labels(&[("zone", "b")]);
    let b = ipam.auto_assign(&r).await.expect("zone b");
    assert!(net("10.2.0.0/16").contains(&b[0]), "{b:?}");
    let mut r = req("he", "ne");
    r.node_labels = labels(&[("zone", "b"), ("edge", "")]);
    let err = ipam.auto_assign(&r).await.expect_err("no pool selects it");
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    // Requested pools are used whatever their selector, as in Calico.
    r.pools = Some(vec!["zone-a".to_string()]);
    let e = ipam.auto_assign(&r).await.expect("named pool");
    assert!(net("10.1.0.0/16").contains(&e[0]), "{e:?}");
    assert_consistent(&store).await;
}

#[tokio::test]
async fn ipam_config_is_read_and_validated() {
    let store = MemStore::default();
    // blockSize 32: one address per block.
    add_pool(&store, "p", "10.0.0.0/24", Some(32)).await;
    let ipam = ipam(&store);
    set_config(&store, "strictAffinity: true\nmaxBlocksPerHost: 2").await;
    let nets = ipam
        .auto_assign(&AssignRequest::workload("h", "n1", 2))
        .await
        .expect("two blocks");
    assert_eq!(nets.len(), 2);
    let err = ipam.auto_assign(&req("h2", "n1")).await.expect_err("limit");
    assert!(matches!(err, IpamError::BlockLimit { max: 2, .. }), "{err}");
    // No new blocks at all: only the node's own blocks serve.
    set_config(&store, "strictAffinity: true\nautoAllocateBlocks: false").await;
    ipam.release_by_handle("h").await.expect("release");
    one(&ipam, "h3", "n1").await;
    let err = ipam
        .auto_assign(&req("h4", "n2"))
        .await
        .expect_err("no claims");
    assert!(err.is_capacity(), "{err}");
    // An invalid config is an error, not silently ignored.
    set_config(&store, "maxBlocksPerHost: 3").await;
    let err = ipam
        .auto_assign(&req("h5", "n1"))
        .await
        .expect_err("invalid");
    assert!(matches!(err, IpamError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("strictAffinity"), "{err}");
    assert_consistent(&store).await;
}

#[tokio::test]
async fn a_node_borrows_when_no_block_is_left_unless_strict() {
    let store = MemStore::default();
    add_pool(&store, "tiny", "10.0.0.0/26", Some(26)).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let b = one(&ipam, "h2", "n2").await;
    assert_eq!(b.trunc(), a.trunc(), "n2 borrowed from n1's block");
    assert_eq!(b.prefix_len(), 26);
    let alloc = ipam
        .get_allocation(b.addr())
        .await
        .expect("get")
        .expect("allocated");
    assert_eq!(alloc.attrs.get("node").map(String::as_str), Some("n2"));
    assert_eq!(alloc.block_affinity.as_deref(), Some("host:n1"));
    assert!(ipam.node_blocks("n2").await.expect("blocks").is_empty());
    assert_eq!(
        affinities(&store).await.len(),
        1,
        "borrowing claims nothing"
    );
    // Strict affinity forbids it.
    set_config(&store, "strictAffinity: true").await;
    let err = ipam
        .auto_assign(&req("h3", "n2"))
        .await
        .expect_err("strict");
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    set_config(&store, "strictAffinity: false").await;
    // Borrowing fills the block to the last address, then the pool is exhausted.
    let rest = ipam
        .auto_assign(&AssignRequest::workload("many", "n2", 62))
        .await
        .expect("62 left");
    assert_eq!(rest.len(), 62);
    let err = ipam.auto_assign(&req("h4", "n3")).await.expect_err("full");
    assert!(err.is_capacity(), "{err}");
    // Releasing a borrowed address works like any other.
    ipam.release_by_handle("h2").await.expect("release");
    assert_consistent(&store).await;
}

#[tokio::test]
async fn assign_ip_takes_a_specific_address() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.244.0.0/16", None).await;
    let ipam = ipam(&store);
    let attrs = BTreeMap::new();
    let got = ipam
        .assign_ip(ip("10.244.7.9"), "h1", "n1", &attrs)
        .await
        .expect("free");
    assert_eq!(got, net("10.244.7.9/26"));
    // The block was claimed for n1.
    assert_eq!(
        ipam.node_blocks("n1").await.expect("blocks"),
        vec![net("10.244.7.0/26")]
    );
    // Taken: a clear error naming the holder; the same handle gets it back.
    let err = ipam
        .assign_ip(ip("10.244.7.9"), "h2", "n1", &attrs)
        .await
        .expect_err("taken");
    assert!(
        matches!(&err, IpamError::AddressInUse { handle: Some(h), .. } if h == "h1"),
        "{err}"
    );
    assert_eq!(
        ipam.assign_ip(ip("10.244.7.9"), "h1", "n1", &attrs)
            .await
            .expect("idempotent"),
        got
    );
    // In another node's block: used in place, recording the node.
    let other = ipam
        .assign_ip(ip("10.244.7.10"), "h3", "n2", &attrs)
        .await
        .expect("borrowed");
    assert_eq!(other.trunc(), net("10.244.7.0/26"));
    let alloc = ipam
        .get_allocation(other.addr())
        .await
        .expect("get")
        .expect("allocated");
    assert_eq!(alloc.attrs.get("node").map(String::as_str), Some("n2"));
    // The free queue skips it: auto-assignment on n1 does not hand out .9 or .10 again.
    let nets = ipam
        .auto_assign(&AssignRequest::workload("h4", "n1", 62))
        .await
        .expect("the rest");
    assert!(!nets.contains(&got) && !nets.contains(&other));
    assert_consistent(&store).await;
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.244.0.0/16", None).await;
    add_pool_spec(
        &store,
        "off",
        json!({"cidr": "10.9.0.0/16", "disabled": true}),
    )
    .await;
    let ipam = ipam(&store);
    let attrs = BTreeMap::new();
    let err = ipam
        .assign_ip(ip("192.168.1.1"), "h", "n1", &attrs)
        .await
        .expect_err("outside");
    assert!(matches!(err, IpamError::OutsidePools { .. }), "{err}");
    let err = ipam
        .assign_ip(ip("10.9.0.1"), "h", "n1", &attrs)
        .await
        .expect_err("disabled");
    assert!(
        matches!(&err, IpamError::PoolDisabled { name } if name == "off"),
        "{err}"
    );
    let mut r = req("h", "n1");
    r.pools = Some(vec!["off".to_string()]);
    let err = ipam.auto_assign(&r).await.expect_err("disabled");
    assert!(matches!(err, IpamError::PoolDisabled { .. }), "{err}");
    assert!(!err.is_capacity());
    let (blocks, _) = store.list_objs::<IpamBlockSpec>().await.expect("list");
    assert!(blocks.is_empty());
    assert!(affinities(&store).await.is_empty());
    assert!(store
        .get_obj::<IpamHandleSpec>("h")
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn blocks_of_an_old_block_size_are_used_and_never_overlapped() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.0.0.0/24", Some(26)).await;
    let ipam = ipam(&store);
    // Two nodes hold /26 blocks; then the pool is recreated with blockSize 28.
    let a = one(&ipam, "h1", "n1").await;
    let b = one(&ipam, "h2", "n2").await;
    let mut pool: Object<IpPoolSpec> = store.get_obj("p").await.expect("get").expect("pool");
    pool.spec.block_size = Some(28);
    store.update_obj(&pool).await.expect("update");
    // n1 keeps allocating from its /26.
    let a2 = one(&ipam, "h3", "n1").await;
    assert_eq!(a2.trunc(), a.trunc());
    assert_eq!(a2.prefix_len(), 26);
    // n3 claims /28 blocks only outside the old /26 blocks; the pool has 2 free /26 = 8 /28s.
    let mut seen = Vec::new();
    for i in 0..8 {
        let r = AssignRequest::workload(format!("n3-{i}"), "n3", 16);
        let nets = ipam.auto_assign(&r).await.expect("a /28");
        let block = nets[0].trunc();
        assert_eq!(block.prefix_len(), 28);
        assert!(
            !a.trunc().contains(&block) && !b.trunc().contains(&block),
            "{block}"
        );
        seen.push(block);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);
    // assign_ip where a /28 would overlap nothing existing works; inside an old /26 it uses it.
    let inside = ipam
        .assign_ip(b.addr(), "x", "n3", &BTreeMap::new())
        .await
        .expect_err("taken by h2");
    assert!(matches!(inside, IpamError::AddressInUse { .. }), "{inside}");
    assert_consistent(&store).await;
    // A block of another size made by a racing claimer deletes itself.
    let stale: IpNet = net("10.0.0.64/27");
    assert!(!ipam.create_block("n9", stale).await.expect("create"));
    assert!(store
        .get_obj::<IpamBlockSpec>(&cidr_to_name(&stale))
        .await
        .expect("get")
        .is_none());
    let spec = block_spec(&store, &a.trunc()).await;
    assert_eq!(block::allocated_count(&spec), 2);
}

#[tokio::test]
async fn assign_ip_refuses_a_block_that_would_overlap_a_smaller_old_one() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.0.0.0/24", Some(30)).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let mut pool: Object<IpPoolSpec> = store.get_obj("p").await.expect("get").expect("pool");
    pool.spec.block_size = Some(28);
    store.update_obj(&pool).await.expect("update");
    // An address outside the old /30 but inside the /28 that would contain it.
    let base = match a.trunc().addr() {
        IpAddr::V4(v4) => u32::from(v4) & !0xf,
        IpAddr::V6(_) => unreachable!(),
    };
    let target = (0..16)
        .map(|i| IpAddr::V4((base + i).into()))
        .find(|ip| !a.trunc().contains(ip))
        .expect("an address outside the /30");
    let err = ipam
        .assign_ip(target, "h2", "n2", &BTreeMap::new())
        .await
        .expect_err("overlap");
    assert!(matches!(err, IpamError::BlockOverlap { .. }), "{err}");
    assert_eq!(affinities(&store).await.len(), 1, "nothing half-written");
    assert_consistent(&store).await;
}
