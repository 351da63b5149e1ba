//! The concurrency test: tasks of several nodes allocate (dual stack, borrowing when blocks run
//! out), release and run the empty-block pass against one store whose every operation yields,
//! so that reads and writes interleave; the records are checked afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ipnet::IpNet;

use crate::allocator::retryable;
use crate::allocator::tests::{add_pool, affinities, assert_consistent};
use crate::model::{host_affinity, AffinityState, IpamBlockSpec, IpamHandleSpec};
use crate::store::{KvPair, Listing, MemStore, Store, StoreError, StoreExt, Watch};
use crate::{AssignRequest, Ipam};

/// A small deterministic generator, so that a failing interleaving of choices can be rerun.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A store that yields to the scheduler around every operation, so that concurrent tasks
/// interleave between their reads and their writes, and counts the writes that lost a race.
struct Interleaving {
    inner: MemStore,
    lost_races: AtomicUsize,
}

impl Interleaving {
    fn count<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.as_ref().is_err_and(retryable) {
            self.lost_races.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

#[async_trait]
impl Store for Interleaving {
    async fn get(&self, kind: &str, name: &str) -> Result<Option<KvPair>, StoreError> {
        tokio::task::yield_now().await;
        let r = self.inner.get(kind, name).await;
        tokio::task::yield_now().await;
        r
    }
    async fn list(&self, kind: &str) -> Result<Listing, StoreError> {
        tokio::task::yield_now().await;
        let r = self.inner.list(kind).await;
        tokio::task::yield_now().await;
        r
    }
    async fn create(&self, kind: &str, name: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        tokio::task::yield_now().await;
        self.count(self.inner.create(kind, name, value).await)
    }
    async fn update(
        &self,
        kind: &str,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<u64, StoreError> {
        tokio::task::yield_now().await;
        self.count(self.inner.update(kind, name, value, expected).await)
    }
    async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.count(self.inner.delete(kind, name, expected).await)
    }
    async fn watch(&self, kind: Option<&str>, after: u64) -> Result<Watch, StoreError> {
        self.inner.watch(kind, after).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dual_stack_allocation_with_borrowing_and_gc_keeps_the_records_consistent() {
    let store = MemStore::default();
    // IPv4: 4 blocks of 16 for 5 nodes, so some node runs out of blocks and borrows (at most
    // 8 tasks x 3 handles x 2 addresses are held at once, fewer than 64). IPv6: 16 blocks.
    add_pool(&store, "v4", "10.0.0.0/26", Some(28)).await;
    add_pool(&store, "v6", "fd00::/120", Some(124)).await;
    let racy = Arc::new(Interleaving {
        inner: store.clone(),
        lost_races: Default::default(),
    });
    let ipam = Ipam::new(racy.clone());
    let borrowed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let ipam = ipam.clone();
        let borrowed = borrowed.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("n{}", t % 5);
            let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
            let mut held: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
            for k in 0..60 {
                let roll = xorshift(&mut rng) % 8;
                if roll == 0 {
                    // The agent's periodic pass, with no grace period: as hostile as it gets.
                    ipam.release_empty_blocks(&node, Duration::ZERO, SystemTime::now())
                        .await
                        .expect("release empty blocks");
                } else if !held.is_empty() && (held.len() >= 3 || roll < 3) {
                    let pick = (xorshift(&mut rng) as usize) % held.len();
                    let handle = held.keys().nth(pick).cloned().expect("held");
                    let nets = held.remove(&handle).expect("held");
                    let mut freed = ipam.release_by_handle(&handle).await.expect("release");
                    freed.sort();
                    let mut want: Vec<IpAddr> = nets.iter().map(IpNet::addr).collect();
                    want.sort();
                    assert_eq!(freed, want, "release of {handle}");
                } else {
                    let handle = format!("t{t}-{k}");
                    let num = 1 + (xorshift(&mut rng) % 2) as usize;
                    let num_v6 = (xorshift(&mut rng) % 2) as usize;
                    let r = AssignRequest {
                        num_v6,
                        ..AssignRequest::workload(&handle, &node, num)
                    };
                    let nets = ipam.auto_assign(&r).await.expect("assign");
                    assert_eq!(nets.len(), num + num_v6);
                    assert_eq!(
                        nets.iter().filter(|n| matches!(n, IpNet::V6(_))).count(),
                        num_v6
                    );
                    for n in &nets {
                        let a = ipam
                            .get_allocation(n.addr())
                            .await
                            .expect("get")
                            .expect("allocated");
                        assert_eq!(a.handle_id.as_deref(), Some(handle.as_str()));
                        assert_eq!(a.attrs.get("node"), Some(&node), "{n}");
                        if a.block_affinity != Some(host_affinity(&node)) {
                            borrowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    held.insert(handle, nets);
                }
                tokio::task::yield_now().await;
            }
            (node, held)
        }));
    }
    let mut all_held: Vec<(String, String, IpNet)> = Vec::new();
    for task in tasks {
        let (node, held) = task.await.expect("task");
        for (handle, nets) in held {
            all_held.extend(nets.into_iter().map(|n| (node.clone(), handle.clone(), n)));
        }
    }
    assert_consistent(&store).await;
    assert!(
        racy.lost_races.load(Ordering::Relaxed) > 0,
        "the tasks never raced; the test proves nothing"
    );
    assert!(
        borrowed.load(Ordering::Relaxed) > 0,
        "no address was borrowed; the test does not cover borrowing"
    );
    let distinct: BTreeSet<IpAddr> = all_held.iter().map(|(_, _, n)| n.addr()).collect();
    assert_eq!(distinct.len(), all_held.len(), "an address is held twice");
    for (node, handle, net) in &all_held {
        let a = ipam
            .get_allocation(net.addr())
            .await
            .expect("get")
            .expect("still allocated");
        assert_eq!(a.handle_id.as_ref(), Some(handle));
        assert_eq!(a.attrs.get("node"), Some(node));
    }
    let affs = affinities(&store).await;
    assert!(
        affs.iter().all(|a| a.state == AffinityState::Confirmed),
        "pending affinities left: {affs:?}"
    );
    // Release everything, then the GC pass: nothing may be left behind.
    for (_, handle, _) in &all_held {
        ipam.release_by_handle(handle).await.expect("release");
    }
    for n in 0..5 {
        ipam.release_empty_blocks(&format!("n{n}"), Duration::ZERO, SystemTime::now())
            .await
            .expect("gc");
    }
    assert_consistent(&store).await;
    let (blocks, _) = store.list_objs::<IpamBlockSpec>().await.expect("list");
    let (handles, _) = store.list_objs::<IpamHandleSpec>().await.expect("list");
    assert!(blocks.is_empty(), "blocks left: {blocks:?}");
    assert!(handles.is_empty(), "handles left: {handles:?}");
    assert!(affinities(&store).await.is_empty());
}
