//! Tests of the block life cycle and address release: reclaiming stale empty blocks, releasing
//! a node, releasing empty blocks after a grace period, release by address with sequence
//! numbers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::allocator::tests::{
    add_pool, affinities, assert_consistent, block_spec, ipam, one, req, set_config,
};
use crate::block;
use crate::clock::ManualClock;
use crate::model::{
    cidr_to_name, AffinityState, IpamBlockSpec, IpamHandleSpec, EMPTY_SINCE_ANNOTATION,
};
use crate::store::{MemStore, StoreExt};
use crate::{AssignRequest, Ipam, IpamError, Refusal, ReleaseOptions};

fn clocked(store: &MemStore) -> (Ipam, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    (
        Ipam::with_clock(Arc::new(store.clone()), clock.clone()),
        clock,
    )
}

#[tokio::test]
async fn an_empty_block_of_another_node_is_reclaimed_after_a_minute() {
    let store = MemStore::default();
    add_pool(&store, "tiny", "10.0.0.0/26", Some(26)).await;
    set_config(&store, "strictAffinity: true").await;
    let (ipam, clock) = clocked(&store);
    let a = one(&ipam, "h1", "gone").await;
    ipam.release_by_handle("h1").await.expect("release");
    // Claimed 30 s ago: too recent.
    clock.advance(Duration::from_secs(30));
    let err = ipam
        .auto_assign(&req("h2", "n2"))
        .await
        .expect_err("too recent");
    assert!(err.is_capacity(), "{err}");
    clock.advance(Duration::from_secs(31));
    let b = one(&ipam, "h2", "n2").await;
    assert_eq!(b.trunc(), a.trunc());
    let affs = affinities(&store).await;
    assert_eq!(affs.len(), 1, "{affs:?}");
    assert_eq!(affs[0].node, "n2");
    assert_eq!(affs[0].state, AffinityState::Confirmed);
    assert_eq!(
        block_spec(&store, &b.trunc()).await.affinity.as_deref(),
        Some("host:n2")
    );
    assert_consistent(&store).await;
}

#[tokio::test]
async fn a_block_with_addresses_is_never_reclaimed() {
    let store = MemStore::default();
    add_pool(&store, "tiny", "10.0.0.0/26", Some(26)).await;
    set_config(&store, "strictAffinity: true").await;
    let (ipam, clock) = clocked(&store);
    one(&ipam, "h1", "n1").await;
    clock.advance(Duration::from_secs(3600));
    let err = ipam
        .auto_assign(&req("h2", "n2"))
        .await
        .expect_err("in use");
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    assert_eq!(affinities(&store).await[0].node, "n1");
    assert_consistent(&store).await;
}

#[tokio::test]
async fn release_node_deletes_empty_blocks_and_unaffines_the_others() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.0.0.0/24", Some(28)).await;
    let ipam = ipam(&store);
    // n1 holds one address in a first block and none in a second.
    let kept = one(&ipam, "h1", "n1").await;
    let many = ipam
        .auto_assign(&AssignRequest::workload("h2", "n1", 16))
        .await
        .expect("fills to a second block");
    ipam.release_by_handle("h2").await.expect("release");
    let blocks = ipam.node_blocks("n1").await.expect("blocks");
    assert_eq!(blocks.len(), 2, "{many:?}");
    let out = ipam.release_node("n1").await.expect("release node");
    assert_eq!(out.unaffined, vec![kept.trunc()]);
    assert_eq!(out.deleted.len(), 1);
    assert!(affinities(&store).await.is_empty());
    assert!(ipam.node_blocks("n1").await.expect("blocks").is_empty());
    let spec = block_spec(&store, &kept.trunc()).await;
    assert_eq!(spec.affinity, None);
    assert_eq!(block::allocated_count(&spec), 1);
    assert_consistent(&store).await;
    // The last release of an unaffine block deletes it.
    ipam.release_by_handle("h1").await.expect("release");
    let (left, _) = store.list_objs::<IpamBlockSpec>().await.expect("list");
    assert!(left.is_empty(), "{left:?}");
    // Releasing a node with nothing is a no-op.
    assert_eq!(
        ipam.release_node("n1").await.expect("again"),
        Default::default()
    );
    assert_consistent(&store).await;
}

#[tokio::test]
async fn empty_blocks_are_released_only_after_the_grace_period() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.0.0.0/24", None).await;
    let (ipam, clock) = clocked(&store);
    let grace = Duration::from_secs(300);
    let a = one(&ipam, "h1", "n1").await;
    let name = cidr_to_name(&a.trunc());
    assert_eq!(annotated(&store, &name).await, Some(None), "in use");
    ipam.release_by_handle("h1").await.expect("release");
    assert!(annotated(&store, &name).await.expect("block").is_some());
    clock.advance(Duration::from_secs(200));
    let now = clock_now(&clock);
    assert!(ipam
        .release_empty_blocks("n1", grace, now)
        .await
        .expect("gc")
        .is_empty());
    // A pod comes back within the grace period: the block is in use again, the stamp goes.
    let b = one(&ipam, "h2", "n1").await;
    assert_eq!(b.trunc(), a.trunc());
    assert_eq!(annotated(&store, &name).await, Some(None));
    ipam.release_by_handle("h2").await.expect("release");
    clock.advance(Duration::from_secs(299));
    assert!(ipam
        .release_empty_blocks("n1", grace, clock_now(&clock))
        .await
        .expect("gc")
        .is_empty());
    clock.advance(Duration::from_secs(1));
    let released = ipam
        .release_empty_blocks("n1", grace, clock_now(&clock))
        .await
        .expect("gc");
    assert_eq!(released, vec![a.trunc()]);
    assert!(annotated(&store, &name).await.is_none(), "block deleted");
    assert!(affinities(&store).await.is_empty());
    assert_consistent(&store).await;
}

/// The block's empty-since annotation; `None` when the block does not exist.
async fn annotated(store: &MemStore, name: &str) -> Option<Option<String>> {
    store
        .get_obj::<IpamBlockSpec>(name)
        .await
        .expect("get")
        .map(|b| b.metadata.annotations.get(EMPTY_SINCE_ANNOTATION).cloned())
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    use crate::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn an_empty_block_without_a_stamp_is_stamped_first() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.0.0.0/24", None).await;
    let (ipam, clock) = clocked(&store);
    let a = one(&ipam, "h1", "n1").await;
    ipam.release_by_handle("h1").await.expect("release");
    // Written by other software: no annotation.
    let mut b = store
        .get_obj::<IpamBlockSpec>(&cidr_to_name(&a.trunc()))
        .await
        .expect("get")
        .expect("block");
    b.metadata.annotations.clear();
    store.update_obj(&b).await.expect("update");
    clock.advance(Duration::from_secs(3600));
    let now = clock_now(&clock);
    let grace = Duration::from_secs(60);
    assert!(ipam
        .release_empty_blocks("n1", grace, now)
        .await
        .expect("first look stamps")
        .is_empty());
    assert!(ipam
        .release_empty_blocks("n1", grace, now + grace)
        .await
        .expect("second look")
        .contains(&a.trunc()));
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test]
async fn release_by_address_checks_sequence_numbers() {
    let store = MemStore::default();
    // A /30 block: four addresses, so a released one comes back soon.
    add_pool(&store, "p", "10.0.0.0/24", Some(30)).await;
    let ipam = ipam(&store);
    let a = one(&ipam, "h1", "n1").await;
    let seen = ipam
        .get_allocation(a.addr())
        .await
        .expect("get")
        .expect("allocated");
    let seq = seen.sequence_number.expect("recorded");
    // The GC's view is now stale: h1 goes, and the address is handed out again to h5.
    ipam.release_by_handle("h1").await.expect("release");
    for i in 2..5 {
        one(&ipam, &format!("h{i}"), "n1").await;
    }
    let again = one(&ipam, "h5", "n1").await;
    assert_eq!(again, a, "the FIFO came round");
    let late = ReleaseOptions {
        address: a.addr(),
        handle_id: None,
        sequence_number: Some(seq),
    };
    let report = ipam
        .release_ips_detailed(std::slice::from_ref(&late))
        .await
        .expect("release");
    assert!(report.released.is_empty());
    assert!(matches!(
        report.refused[..],
        [(_, Refusal::SequenceMismatch { .. })]
    ));
    assert_eq!(ipam.ips_by_handle("h5").await.expect("ips"), vec![a.addr()]);
    assert_eq!(
        ipam.release_ips(&[late]).await.expect("release"),
        vec![a.addr()],
        "reported as not released"
    );
    // With the current number (and handle) it goes, and the handle with it.
    let now = ipam
        .get_allocation(a.addr())
        .await
        .expect("get")
        .expect("allocated");
    let not_released = ipam
        .release_ips(&[
            ReleaseOptions {
                address: a.addr(),
                handle_id: Some("h5".to_string()),
                sequence_number: now.sequence_number,
            },
            ReleaseOptions::address(ip("10.0.0.200")),
            ReleaseOptions::address(ip("192.168.0.1")),
        ])
        .await
        .expect("release");
    assert_eq!(not_released, vec![ip("10.0.0.200"), ip("192.168.0.1")]);
    assert!(store
        .get_obj::<IpamHandleSpec>("h5")
        .await
        .expect("get")
        .is_none());
    assert_consistent(&store).await;
}

#[tokio::test]
async fn release_by_address_updates_handles_of_multi_address_workloads() {
    let store = MemStore::default();
    add_pool(&store, "p", "10.0.0.0/24", None).await;
    let ipam = ipam(&store);
    let nets = ipam
        .auto_assign(&AssignRequest::workload("h", "n1", 3))
        .await
        .expect("assign");
    let addrs: Vec<IpAddr> = nets.iter().map(IpNet::addr).collect();
    let left = ipam
        .release_ips(&[ReleaseOptions::address(addrs[1])])
        .await
        .expect("release");
    assert!(left.is_empty());
    assert_eq!(
        ipam.ips_by_handle("h").await.expect("ips"),
        vec![addrs[0], addrs[2]]
    );
    let handle = store
        .get_obj::<IpamHandleSpec>("h")
        .await
        .expect("get")
        .expect("handle");
    assert_eq!(handle.spec.block.values().sum::<u32>(), 2);
    assert_consistent(&store).await;
}
