//! Consistency check of the IPAM records in a store, for tests (unit, concurrency, the
//! multi-process hammer) and later `brindlectl ipam check`.
//!
//! Run it when no allocation is in flight: between a block write and the handle write that
//! follows it, the records legitimately disagree.
//!
//! Invariants:
//! 1. Each block: its name is `cidr_to_name(cidr)`; `allocations` has one entry per address;
//!    every allocation's attribute index is inside `attributes`; no attribute entry is
//!    unreferenced; `unallocated` has no duplicates, only ordinals of the block, only free ones,
//!    and together with the allocated ordinals covers every ordinal exactly once.
//! 2. No address is allocated in two blocks (overlapping blocks would allow it).
//! 3. Each handle's name is `handle_name(handleID)`, and for every block its count equals the
//!    number of allocations in that block carrying the handle; conversely every allocation with
//!    a handle is counted by that handle.
//! 4. Every allocation records its `node` attribute (Brindle always writes it: the route
//!    programmer routes borrowed addresses by it, and the GC checks workloads on that node).
//! 5. Every allocated ordinal has a `sequenceNumberForAllocation` entry, below the block's
//!    `sequenceNumber`; free ordinals have none.
//! 6. No two blocks overlap (a pool's blockSize may have changed since some were made).
//! 7. Affinities: each is named `affinity_name(node, cidr)`; a confirmed one has its block, affine
//!    to that node; a block affine to a node has a confirmed affinity (pending and
//!    pendingDeletion ones are transitions and may lack a block).
//! 8. An unaffine block is not empty (the release that empties it deletes it), and a block
//!    holding addresses carries no empty-since annotation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::block;
use crate::model::{
    affinity_name, cidr_to_name, handle_name, host_affinity, ordinal_to_ip, AffinityState,
    BlockAffinitySpec, IpamBlockSpec, IpamHandleSpec, Object, EMPTY_SINCE_ANNOTATION,
};
use crate::store::{Store, StoreExt};

/// Checks the invariants above over every IPAM block and handle in `store`. Returns every
/// problem found, each a self-contained sentence naming the record.
pub async fn check_invariants(store: &dyn Store) -> Result<(), Vec<String>> {
    let blocks = store
        .list_objs::<IpamBlockSpec>()
        .await
        .map_err(|e| vec![format!("cannot list IPAM blocks: {e}")])?
        .0;
    let handles = store
        .list_objs::<IpamHandleSpec>()
        .await
        .map_err(|e| vec![format!("cannot list IPAM handles: {e}")])?
        .0;
    let affinities = store
        .list_objs::<BlockAffinitySpec>()
        .await
        .map_err(|e| vec![format!("cannot list block affinities: {e}")])?
        .0;
    let mut problems = Vec::new();
    for b in &blocks {
        check_block(b, &mut problems);
        check_allocation_records(b, &mut problems);
    }
    check_no_double_allocation(&blocks, &mut problems);
    check_no_overlap(&blocks, &mut problems);
    check_handles(&blocks, &handles, &mut problems);
    check_affinities(&blocks, &affinities, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_block(obj: &Object<IpamBlockSpec>, problems: &mut Vec<String>) {
    let b = &obj.spec;
    let name = &obj.metadata.name;
    if *name != cidr_to_name(&b.cidr) {
        problems.push(format!(
            "block {name}: name does not match its cidr {}",
            b.cidr
        ));
    }
    let len = match crate::model::block_len(&b.cidr) {
        Some(len) => len,
        None => {
            problems.push(format!("block {name}: cidr {} is too large", b.cidr));
            return;
        }
    };
    if b.allocations.len() != len {
        problems.push(format!(
            "block {name}: {} allocation entries for {len} addresses",
            b.allocations.len()
        ));
    }
    let mut referenced = vec![false; b.attributes.len()];
    for (ordinal, idx) in b.allocations.iter().enumerate() {
        if let Some(idx) = *idx {
            match referenced.get_mut(idx) {
                Some(r) => *r = true,
                None => problems.push(format!(
                    "block {name}: ordinal {ordinal} refers to attribute {idx}, but there are {}",
                    b.attributes.len()
                )),
            }
        }
    }
    for (idx, r) in referenced.iter().enumerate() {
        if !r {
            problems.push(format!("block {name}: attribute {idx} is not referenced"));
        }
    }
    let mut seen = BTreeSet::new();
    for &ordinal in &b.unallocated {
        if !seen.insert(ordinal) {
            problems.push(format!(
                "block {name}: ordinal {ordinal} is in unallocated twice"
            ));
        }
        match b.allocations.get(ordinal) {
            None => problems.push(format!(
                "block {name}: unallocated ordinal {ordinal} is outside the block"
            )),
            Some(Some(_)) => problems.push(format!(
                "block {name}: ordinal {ordinal} is both allocated and in unallocated"
            )),
            Some(None) => {}
        }
    }
    for (ordinal, idx) in b.allocations.iter().enumerate() {
        if idx.is_none() && !seen.contains(&ordinal) {
            problems.push(format!(
                "block {name}: ordinal {ordinal} is neither allocated nor in unallocated (lost)"
            ));
        }
    }
}

/// Invariants 4, 5 and 8 for one block.
fn check_allocation_records(obj: &Object<IpamBlockSpec>, problems: &mut Vec<String>) {
    let b = &obj.spec;
    let name = &obj.metadata.name;
    for (ordinal, idx) in b.allocations.iter().enumerate() {
        let key = ordinal.to_string();
        let seq = b.sequence_number_for_allocation.get(&key);
        let Some(idx) = idx else {
            if seq.is_some() {
                problems.push(format!(
                    "block {name}: free ordinal {ordinal} still has a sequence number"
                ));
            }
            continue;
        };
        match seq {
            None => problems.push(format!(
                "block {name}: allocated ordinal {ordinal} has no sequence number"
            )),
            Some(&s) if s >= b.sequence_number => problems.push(format!(
                "block {name}: ordinal {ordinal} was allocated at sequence number {s}, not below the block's {}",
                b.sequence_number
            )),
            Some(_) => {}
        }
        if let Some(attr) = b.attributes.get(*idx) {
            if attr.secondary.get("node").is_none_or(String::is_empty) {
                problems.push(format!(
                    "block {name}: ordinal {ordinal} (handle {:?}) has no node attribute",
                    attr.handle_id
                ));
            }
        }
    }
    let empty = block::is_empty(b);
    if b.affinity.is_none() && empty && !b.deleted {
        problems.push(format!(
            "block {name}: unaffine and empty, it should have been deleted"
        ));
    }
    if !empty
        && obj
            .metadata
            .annotations
            .contains_key(EMPTY_SINCE_ANNOTATION)
    {
        problems.push(format!(
            "block {name}: holds addresses but is annotated {EMPTY_SINCE_ANNOTATION}"
        ));
    }
}

fn check_no_overlap(blocks: &[Object<IpamBlockSpec>], problems: &mut Vec<String>) {
    let mut cidrs: Vec<(&IpNet, &str)> = blocks
        .iter()
        .map(|b| (&b.spec.cidr, b.metadata.name.as_str()))
        .collect();
    cidrs.sort();
    for (i, (a, an)) in cidrs.iter().enumerate() {
        for (b, bn) in &cidrs[i + 1..] {
            if a != b && (a.contains(*b) || b.contains(*a)) {
                problems.push(format!("block {an} ({a}) overlaps block {bn} ({b})"));
            }
        }
    }
}

fn check_affinities(
    blocks: &[Object<IpamBlockSpec>],
    affinities: &[Object<BlockAffinitySpec>],
    problems: &mut Vec<String>,
) {
    let by_cidr: BTreeMap<IpNet, &IpamBlockSpec> = blocks
        .iter()
        .filter(|b| !b.spec.deleted)
        .map(|b| (b.spec.cidr, &b.spec))
        .collect();
    let mut confirmed: BTreeSet<(String, IpNet)> = BTreeSet::new();
    for obj in affinities.iter().filter(|a| a.spec.deleted != "true") {
        let a = &obj.spec;
        let name = &obj.metadata.name;
        if *name != affinity_name(&a.node, &a.cidr) {
            problems.push(format!(
                "affinity {name}: name does not match node {} and cidr {}",
                a.node, a.cidr
            ));
        }
        if a.state != AffinityState::Confirmed {
            continue;
        }
        confirmed.insert((host_affinity(&a.node), a.cidr));
        match by_cidr.get(&a.cidr) {
            None => problems.push(format!(
                "affinity {name}: confirmed, but block {} does not exist",
                a.cidr
            )),
            Some(b) if b.affinity.as_deref() != Some(host_affinity(&a.node).as_str()) => problems
                .push(format!(
                    "affinity {name}: confirmed for {}, but block {} is affine to {:?}",
                    a.node, a.cidr, b.affinity
                )),
            Some(_) => {}
        }
    }
    for (cidr, b) in &by_cidr {
        if let Some(owner) = &b.affinity {
            if !confirmed.contains(&(owner.clone(), *cidr)) {
                problems.push(format!(
                    "block {}: affine to {owner}, which has no confirmed affinity for it",
                    cidr_to_name(cidr)
                ));
            }
        }
    }
}

fn check_no_double_allocation(blocks: &[Object<IpamBlockSpec>], problems: &mut Vec<String>) {
    let mut owner: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for obj in blocks {
        for (ordinal, idx) in obj.spec.allocations.iter().enumerate() {
            if idx.is_none() {
                continue;
            }
            let Some(ip) = ordinal_to_ip(&obj.spec.cidr, ordinal) else {
                continue;
            };
            if let Some(first) = owner.insert(ip, &obj.metadata.name) {
                problems.push(format!(
                    "address {ip} is allocated in both block {first} and block {}",
                    obj.metadata.name
                ));
            }
        }
    }
}

fn check_handles(
    blocks: &[Object<IpamBlockSpec>],
    handles: &[Object<IpamHandleSpec>],
    problems: &mut Vec<String>,
) {
    // (handle ID, block CIDR) -> allocations carrying the handle, from the blocks.
    let mut actual: BTreeMap<(String, IpNet), u64> = BTreeMap::new();
    for obj in blocks {
        let b = &obj.spec;
        for idx in b.allocations.iter().flatten() {
            if let Some(handle) = b.attributes.get(*idx).and_then(|a| a.handle_id.clone()) {
                *actual.entry((handle, b.cidr)).or_default() += 1;
            }
        }
    }
    // The same, from the handles.
    let mut recorded: BTreeMap<(String, IpNet), u64> = BTreeMap::new();
    for obj in handles.iter().filter(|h| !h.spec.deleted) {
        let h = &obj.spec;
        if obj.metadata.name != handle_name(&h.handle_id) {
            problems.push(format!(
                "handle {}: name does not match handleID {:?}",
                obj.metadata.name, h.handle_id
            ));
        }
        for (key, &count) in &h.block {
            match key.parse::<IpNet>() {
                Ok(cidr) => {
                    *recorded.entry((h.handle_id.clone(), cidr)).or_default() += u64::from(count)
                }
                Err(_) => problems.push(format!(
                    "handle {}: block key {key:?} is not a CIDR",
                    obj.metadata.name
                )),
            }
        }
    }
    let keys: BTreeSet<&(String, IpNet)> = actual.keys().chain(recorded.keys()).collect();
    for key in keys {
        let a = actual.get(key).copied().unwrap_or(0);
        let r = recorded.get(key).copied().unwrap_or(0);
        if a != r {
            let (handle, cidr) = key;
            problems.push(format!(
                "handle {handle:?}: records {r} addresses in block {cidr}, the block holds {a}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block;
    use crate::store::MemStore;

    fn block_obj(cidr: &str) -> Object<IpamBlockSpec> {
        let cidr: IpNet = cidr.parse().expect("cidr");
        let spec = block::new_block(cidr, Some("host:n1".into()), None, 1).expect("block");
        Object::new(cidr_to_name(&cidr), spec)
    }

    fn handle_obj(id: &str, cidr: &str, n: u32) -> Object<IpamHandleSpec> {
        let spec = IpamHandleSpec {
            handle_id: id.to_string(),
            block: BTreeMap::from([(cidr.to_string(), n)]),
            deleted: false,
        };
        Object::new(handle_name(id), spec)
    }

    fn node_attr(node: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("node".to_string(), node.to_string())])
    }

    async fn confirmed(store: &MemStore, node: &str, cidr: &str) {
        let cidr: IpNet = cidr.parse().expect("cidr");
        let spec = BlockAffinitySpec {
            state: AffinityState::Confirmed,
            node: node.to_string(),
            type_: "host".to_string(),
            cidr,
            deleted: "false".to_string(),
        };
        store
            .create_obj(&Object::new(affinity_name(node, &cidr), spec))
            .await
            .expect("create");
    }

    #[tokio::test]
    async fn consistent_records_pass() {
        let store = MemStore::default();
        let mut b = block_obj("10.0.0.0/29");
        block::assign(&mut b.spec, 2, Some("h1"), &node_attr("n1"));
        store.create_obj(&b).await.expect("create");
        confirmed(&store, "n1", "10.0.0.0/29").await;
        store
            .create_obj(&handle_obj("h1", "10.0.0.0/29", 2))
            .await
            .expect("create");
        assert_eq!(check_invariants(&store).await, Ok(()));
    }

    #[tokio::test]
    async fn each_broken_invariant_is_reported() {
        let store = MemStore::default();
        let mut a = block_obj("10.0.0.0/29");
        block::assign(&mut a.spec, 2, Some("h1"), &node_attr("n1"));
        a.spec.unallocated.push(0); // allocated and free
        a.spec.unallocated.retain(|&o| o != 7); // lost
        a.spec.unallocated.push(3); // twice
        a.spec.allocations[1] = Some(5); // bad index
        store.create_obj(&a).await.expect("create");
        // Overlaps the first block, and allocates 10.0.0.0 again.
        let mut overlap = block_obj("10.0.0.0/30");
        block::assign(&mut overlap.spec, 1, Some("h2"), &node_attr("n1"));
        store.create_obj(&overlap).await.expect("create");
        store
            .create_obj(&handle_obj("h1", "10.0.0.0/29", 2))
            .await
            .expect("create");
        let problems = check_invariants(&store).await.expect_err("broken");
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(has("both allocated and in unallocated"), "{problems:#?}");
        assert!(has("neither allocated nor in unallocated"), "{problems:#?}");
        assert!(has("in unallocated twice"), "{problems:#?}");
        assert!(has("refers to attribute 5"), "{problems:#?}");
        assert!(
            has("address 10.0.0.0 is allocated in both"),
            "{problems:#?}"
        );
        assert!(
            has("records 2 addresses in block 10.0.0.0/29, the block holds 1"),
            "{problems:#?}"
        );
        assert!(has("handle \"h2\": records 0"), "{problems:#?}");
        assert!(has("overlaps block"), "{problems:#?}");
        assert!(has("which has no confirmed affinity"), "{problems:#?}");
    }

    #[tokio::test]
    async fn allocation_records_and_affinities_are_checked() {
        let store = MemStore::default();
        // No node attribute, a missing and a stale sequence number, an annotation that lies.
        let mut b = block_obj("10.0.1.0/29");
        block::assign(&mut b.spec, 2, Some("h1"), &BTreeMap::new());
        b.spec.sequence_number_for_allocation.remove("0");
        b.spec
            .sequence_number_for_allocation
            .insert("5".to_string(), 1);
        b.metadata.annotations.insert(
            EMPTY_SINCE_ANNOTATION.to_string(),
            "2026-01-01T00:00:00Z".into(),
        );
        store.create_obj(&b).await.expect("create");
        store
            .create_obj(&handle_obj("h1", "10.0.1.0/29", 2))
            .await
            .expect("create");
        confirmed(&store, "n1", "10.0.1.0/29").await;
        // A confirmed affinity without a block, and an empty unaffine block.
        confirmed(&store, "n2", "10.0.2.0/29").await;
        let mut unaffine = block_obj("10.0.3.0/29");
        unaffine.spec.affinity = None;
        store.create_obj(&unaffine).await.expect("create");
        let problems = check_invariants(&store).await.expect_err("broken");
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(
            has("ordinal 0 (handle Some(\"h1\")) has no node attribute"),
            "{problems:#?}"
        );
        assert!(
            has("allocated ordinal 0 has no sequence number"),
            "{problems:#?}"
        );
        assert!(
            has("free ordinal 5 still has a sequence number"),
            "{problems:#?}"
        );
        assert!(has("holds addresses but is annotated"), "{problems:#?}");
        assert!(has("block 10.0.2.0/29 does not exist"), "{problems:#?}");
        assert!(has("unaffine and empty"), "{problems:#?}");
    }
}
