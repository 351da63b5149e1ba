//! Pure operations on one [`IpamBlockSpec`]: no store, no I/O, no clock.
//!
//! Calico's `allocationBlock` (`libcalico-go/lib/ipam/ipam_block.go`):
//! - `allocations[ordinal]` is the index of the ordinal's entry in `attributes`, or null;
//! - `unallocated` is a FIFO of free ordinals: assignment pops the head, release pushes the tail,
//!   so a released address is handed out again as late as possible;
//! - identical (handle, secondary attributes) pairs share one `attributes` entry, and entries no
//!   allocation refers to any more are dropped on release, with the indices compacted;
//! - `sequenceNumber` is bumped by every change, and `sequenceNumberForAllocation[ordinal]`
//!   remembers the value at which an ordinal was handed out (release by a GC checks it, so that
//!   it never frees an address that has since been reallocated).
//!
//! Functions here never panic on a malformed block read from a store: an out-of-range index is
//! treated as "not ours" and left for [`crate::check`] to report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{block_len, ip_to_ordinal, ordinal_to_ip, AllocationAttribute, IpamBlockSpec};

/// A new, empty block for `cidr`: every ordinal free, in ascending order.
///
/// `sequence_number` is the block's starting sequence number; Calico uses the creation time in
/// Unix nanoseconds so that a block deleted and created again never repeats one. Returns `None`
/// when `cidr` is too large to be a block (more than 2^16 addresses).
pub fn new_block(
    cidr: IpNet,
    affinity: Option<String>,
    affinity_claim_time: Option<String>,
    sequence_number: u64,
) -> Option<IpamBlockSpec> {
    let len = block_len(&cidr)?;
    Some(IpamBlockSpec {
        cidr: cidr.trunc(),
        affinity,
        affinity_claim_time,
        allocations: vec![None; len],
        unallocated: (0..len).collect(),
        attributes: Vec::new(),
        sequence_number,
        sequence_number_for_allocation: BTreeMap::new(),
        deleted: false,
        strict_affinity: false,
    })
}

/// Number of addresses in the block (the length of `allocations`).
pub fn total(block: &IpamBlockSpec) -> usize {
    block.allocations.len()
}

/// Number of free addresses.
pub fn free_count(block: &IpamBlockSpec) -> usize {
    block.unallocated.len()
}

/// Number of allocated addresses.
pub fn allocated_count(block: &IpamBlockSpec) -> usize {
    block.allocations.iter().filter(|a| a.is_some()).count()
}

/// Whether no address of the block is allocated.
pub fn is_empty(block: &IpamBlockSpec) -> bool {
    block.allocations.iter().all(Option::is_none)
}

/// The address at `ordinal`, if the ordinal is inside the block.
pub fn ordinal_ip(block: &IpamBlockSpec, ordinal: usize) -> Option<IpAddr> {
    ordinal_to_ip(&block.cidr, ordinal)
}

/// The address at `ordinal` with the block's prefix length, as Calico returns assigned addresses.
pub fn ordinal_net(block: &IpamBlockSpec, ordinal: usize) -> Option<IpNet> {
    let ip = ordinal_ip(block, ordinal)?;
    IpNet::new(ip, block.cidr.prefix_len()).ok()
}

fn attribute_has_handle(attr: &AllocationAttribute, handle_id: &str) -> bool {
    attr.handle_id.as_deref() == Some(handle_id)
}

/// The handle of the allocation at `ordinal`, if it is allocated and has one.
pub fn handle_of(block: &IpamBlockSpec, ordinal: usize) -> Option<&str> {
    let idx = (*block.allocations.get(ordinal)?)?;
    block.attributes.get(idx)?.handle_id.as_deref()
}

/// The ordinals allocated to `handle_id`, ascending.
pub fn ordinals_of_handle(block: &IpamBlockSpec, handle_id: &str) -> Vec<usize> {
    let matching: BTreeSet<usize> = block
        .attributes
        .iter()
        .enumerate()
        .filter(|(_, a)| attribute_has_handle(a, handle_id))
        .map(|(i, _)| i)
        .collect();
    if matching.is_empty() {
        return Vec::new();
    }
    block
        .allocations
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_some_and(|i| matching.contains(&i)))
        .map(|(o, _)| o)
        .collect()
}

/// The addresses allocated to `handle_id`, ascending.
pub fn ips_of_handle(block: &IpamBlockSpec, handle_id: &str) -> Vec<IpAddr> {
    ordinals_of_handle(block, handle_id)
        .into_iter()
        .filter_map(|o| ordinal_ip(block, o))
        .collect()
}

/// How many addresses `handle_id` holds in the block.
pub fn handle_count(block: &IpamBlockSpec, handle_id: &str) -> usize {
    ordinals_of_handle(block, handle_id).len()
}

/// The index of the attribute entry for (`handle_id`, `secondary`), added if there is none.
fn find_or_add_attribute(
    block: &mut IpamBlockSpec,
    handle_id: Option<&str>,
    secondary: &BTreeMap<String, String>,
) -> usize {
    if let Some(i) = block
        .attributes
        .iter()
        .position(|a| a.handle_id.as_deref() == handle_id && &a.secondary == secondary)
    {
        return i;
    }
    block.attributes.push(AllocationAttribute {
        handle_id: handle_id.map(str::to_string),
        secondary: secondary.clone(),
    });
    block.attributes.len() - 1
}

/// Assigns up to `n` free ordinals from the head of `unallocated` to `handle_id` with the
/// `secondary` attributes, and returns them (fewer than `n`, possibly none, when the block has
/// less room). Bumps the sequence number when anything was assigned.
///
/// Ordinals in `unallocated` that are somehow allocated already (a malformed block) are dropped
/// from the queue rather than handed out twice.
pub fn assign(
    block: &mut IpamBlockSpec,
    n: usize,
    handle_id: Option<&str>,
    secondary: &BTreeMap<String, String>,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(n.min(block.unallocated.len()));
    let mut taken = 0;
    for &ordinal in &block.unallocated {
        if out.len() == n {
            break;
        }
        taken += 1;
        if block.allocations.get(ordinal) == Some(&None) {
            out.push(ordinal);
        }
    }
    if out.is_empty() {
        return out;
    }
    block.unallocated.drain(..taken);
    let attr = find_or_add_attribute(block, handle_id, secondary);
    for &ordinal in &out {
        block.allocations[ordinal] = Some(attr);
        block
            .sequence_number_for_allocation
            .insert(ordinal.to_string(), block.sequence_number);
    }
    block.sequence_number += 1;
    out
}

/// Frees `ordinals` (those that are allocated; others are ignored): pushes them to the tail of
/// `unallocated`, forgets their sequence numbers, drops attribute entries no longer referenced
/// and bumps the sequence number. Returns the ordinals actually freed.
fn free_ordinals(block: &mut IpamBlockSpec, ordinals: &[usize]) -> Vec<usize> {
    let mut freed = Vec::with_capacity(ordinals.len());
    for &ordinal in ordinals {
        if let Some(slot @ Some(_)) = block.allocations.get_mut(ordinal) {
            *slot = None;
            block.unallocated.push(ordinal);
            block
                .sequence_number_for_allocation
                .remove(&ordinal.to_string());
            freed.push(ordinal);
        }
    }
    if !freed.is_empty() {
        delete_unreferenced_attributes(block);
        block.sequence_number += 1;
    }
    freed
}

/// Releases every address of `handle_id` in the block; returns the freed ordinals, ascending.
pub fn release_handle(block: &mut IpamBlockSpec, handle_id: &str) -> Vec<usize> {
    let ordinals = ordinals_of_handle(block, handle_id);
    free_ordinals(block, &ordinals)
}

/// Releases the given ordinals, but only those still allocated to `handle_id` (an allocation
/// rolled back must not free an address someone else has been given since).
pub fn release_ordinals_of_handle(
    block: &mut IpamBlockSpec,
    handle_id: &str,
    ordinals: &[usize],
) -> Vec<usize> {
    let ours: Vec<usize> = ordinals
        .iter()
        .copied()
        .filter(|&o| handle_of(block, o) == Some(handle_id))
        .collect();
    free_ordinals(block, &ours)
}

/// The outcome of [`release_addresses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Freed addresses with the handle each was allocated to.
    pub freed: Vec<(IpAddr, Option<String>)>,
    /// Addresses that were not allocated, or are not in this block.
    pub not_allocated: Vec<IpAddr>,
}

/// Releases individual addresses, whatever their handle (Calico's `ReleaseIPs`).
pub fn release_addresses(block: &mut IpamBlockSpec, ips: &[IpAddr]) -> Released {
    let mut out = Released::default();
    let mut ordinals = Vec::new();
    for &ip in ips {
        let allocated = ip_to_ordinal(&block.cidr, ip)
            .filter(|&o| block.allocations.get(o).is_some_and(Option::is_some));
        match allocated {
            Some(o) if !ordinals.contains(&o) => {
                out.freed
                    .push((ip, handle_of(block, o).map(str::to_string)));
                ordinals.push(o);
            }
            Some(_) => {}
            None => out.not_allocated.push(ip),
        }
    }
    free_ordinals(block, &ordinals);
    out
}

/// Assigns exactly `ordinal` (Calico's `AssignIP` within a block). Fails with the current
/// holder's handle when the ordinal is allocated already, or is outside the block (`Err(None)`).
pub fn assign_ordinal(
    block: &mut IpamBlockSpec,
    ordinal: usize,
    handle_id: Option<&str>,
    secondary: &BTreeMap<String, String>,
) -> Result<(), Option<String>> {
    match block.allocations.get(ordinal) {
        None => return Err(None),
        Some(Some(_)) => return Err(handle_of(block, ordinal).map(str::to_string)),
        Some(None) => {}
    }
    block.unallocated.retain(|&o| o != ordinal);
    let attr = find_or_add_attribute(block, handle_id, secondary);
    block.allocations[ordinal] = Some(attr);
    block
        .sequence_number_for_allocation
        .insert(ordinal.to_string(), block.sequence_number);
    block.sequence_number += 1;
    Ok(())
}

/// The sequence number at which `ordinal` was handed out, if it is allocated and has one.
pub fn sequence_of(block: &IpamBlockSpec, ordinal: usize) -> Option<u64> {
    block
        .sequence_number_for_allocation
        .get(&ordinal.to_string())
        .copied()
}

/// One address to release, with what the caller believes about its allocation (Calico's
/// `ReleaseOptions`). Each condition given must hold, or the address is left allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseOptions {
    pub address: IpAddr,
    /// Release only if the address is allocated to this handle.
    pub handle_id: Option<String>,
    /// Release only if the address was handed out at this block sequence number (the value of
    /// `sequenceNumberForAllocation` the caller read). A release that comes late, after the
    /// address was freed and handed out again, then does nothing.
    pub sequence_number: Option<u64>,
}

impl ReleaseOptions {
    /// Release `address` whoever holds it.
    pub fn address(address: IpAddr) -> Self {
        ReleaseOptions {
            address,
            handle_id: None,
            sequence_number: None,
        }
    }
}

/// Why a release was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address is allocated to another handle (or to none).
    HandleMismatch {
        expected: String,
        actual: Option<String>,
    },
    /// The address was handed out again since the caller looked (or has no recorded number).
    SequenceMismatch { expected: u64, actual: Option<u64> },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::HandleMismatch { expected, actual } => {
                write!(f, "allocated to handle {actual:?}, not {expected:?}")
            }
            Refusal::SequenceMismatch { expected, actual } => write!(
                f,
                "allocated at sequence number {actual:?}, not {expected} (handed out again since)"
            ),
        }
    }
}

/// The outcome of [`release_checked`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckedRelease {
    /// Freed addresses with the handle each was allocated to.
    pub freed: Vec<(IpAddr, Option<String>)>,
    /// Addresses that were not allocated, or are not in this block.
    pub not_allocated: Vec<IpAddr>,
    /// Addresses left allocated because a condition of their options did not hold.
    pub refused: Vec<(IpAddr, Refusal)>,
}

/// Releases the addresses of `opts` whose conditions hold; the rest are reported.
pub fn release_checked(block: &mut IpamBlockSpec, opts: &[ReleaseOptions]) -> CheckedRelease {
    let mut out = CheckedRelease::default();
    let mut ordinals = Vec::new();
    for opt in opts {
        let ip = opt.address;
        let Some(o) = ip_to_ordinal(&block.cidr, ip)
            .filter(|&o| block.allocations.get(o).is_some_and(Option::is_some))
        else {
            out.not_allocated.push(ip);
            continue;
        };
        if ordinals.contains(&o) {
            continue;
        }
        let handle = handle_of(block, o).map(str::to_string);
        if let Some(expected) = &opt.handle_id {
            if handle.as_deref() != Some(expected.as_str()) {
                out.refused.push((
                    ip,
                    Refusal::HandleMismatch {
                        expected: expected.clone(),
                        actual: handle,
                    },
                ));
                continue;
            }
        }
        if let Some(expected) = opt.sequence_number {
            let actual = sequence_of(block, o);
            if actual != Some(expected) {
                out.refused
                    .push((ip, Refusal::SequenceMismatch { expected, actual }));
                continue;
            }
        }
        out.freed.push((ip, handle));
        ordinals.push(o);
    }
    free_ordinals(block, &ordinals);
    out
}

/// Drops attribute entries that no allocation refers to and renumbers the rest, keeping their
/// order (Calico's `deleteUnreferencedAttributes`).
fn delete_unreferenced_attributes(block: &mut IpamBlockSpec) {
    let mut in_use = vec![false; block.attributes.len()];
    for idx in block.allocations.iter().flatten() {
        if let Some(used) = in_use.get_mut(*idx) {
            *used = true;
        }
    }
    if in_use.iter().all(|u| *u) {
        return;
    }
    let mut new_index = vec![None; block.attributes.len()];
    let mut kept = Vec::with_capacity(block.attributes.len());
    for (i, attr) in std::mem::take(&mut block.attributes)
        .into_iter()
        .enumerate()
    {
        if in_use[i] {
            new_index[i] = Some(kept.len());
            kept.push(attr);
        }
    }
    block.attributes = kept;
    for slot in block.allocations.iter_mut() {
        // An index that was out of range stays out of range, for the checker to report.
        if let Some(idx) = *slot {
            *slot = Some(new_index.get(idx).copied().flatten().unwrap_or(usize::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str) -> IpamBlockSpec {
        new_block(cidr.parse().expect("cidr"), Some("host:n1".into()), None, 7).expect("block")
    }

    fn attrs(pod: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("pod".to_string(), pod.to_string())])
    }

    #[test]
    fn new_block_has_every_ordinal_free_in_order() {
        let b = block("10.0.0.64/26");
        assert_eq!(total(&b), 64);
        assert_eq!(free_count(&b), 64);
        assert_eq!(b.unallocated, (0..64).collect::<Vec<_>>());
        assert!(is_empty(&b));
        assert!(new_block("10.0.0.0/8".parse().expect("cidr"), None, None, 0).is_none());
    }

    #[test]
    fn assign_pops_the_head_and_shares_attributes() {
        let mut b = block("10.0.0.0/26");
        assert_eq!(assign(&mut b, 2, Some("h1"), &attrs("a")), vec![0, 1]);
        assert_eq!(b.sequence_number, 8);
        assert_eq!(b.sequence_number_for_allocation.get("0"), Some(&7));
        assert_eq!(assign(&mut b, 1, Some("h1"), &attrs("a")), vec![2]);
        assert_eq!(
            b.attributes.len(),
            1,
            "identical handle+attrs share an entry"
        );
        assert_eq!(b.sequence_number_for_allocation.get("2"), Some(&8));
        assert_eq!(assign(&mut b, 1, Some("h2"), &attrs("b")), vec![3]);
        assert_eq!(b.attributes.len(), 2);
        assert_eq!(b.allocations[3], Some(1));
        assert_eq!(free_count(&b), 60);
        assert_eq!(allocated_count(&b), 4);
        assert_eq!(handle_count(&b, "h1"), 3);
        assert_eq!(
            ips_of_handle(&b, "h2"),
            vec!["10.0.0.3".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(
            ordinal_net(&b, 3).expect("inside").to_string(),
            "10.0.0.3/26"
        );
    }

    #[test]
    fn assign_returns_what_fits() {
        let mut b = block("10.0.0.0/30");
        assert_eq!(assign(&mut b, 3, Some("h"), &BTreeMap::new()).len(), 3);
        assert_eq!(assign(&mut b, 3, Some("h"), &BTreeMap::new()), vec![3]);
        let seq = b.sequence_number;
        assert!(assign(&mut b, 1, Some("h"), &BTreeMap::new()).is_empty());
        assert_eq!(b.sequence_number, seq, "a no-op does not bump the sequence");
    }

    #[test]
    fn release_pushes_to_the_tail_and_compacts_attributes() {
        let mut b = block("10.0.0.0/29");
        assign(&mut b, 2, Some("h1"), &attrs("a"));
        assign(&mut b, 2, Some("h2"), &attrs("b"));
        assign(&mut b, 1, Some("h3"), &attrs("c"));
        assert_eq!(b.attributes.len(), 3);
        assert_eq!(release_handle(&mut b, "h1"), vec![0, 1]);
        // h1's entry is gone and the others moved down by one.
        assert_eq!(b.attributes.len(), 2);
        assert_eq!(b.attributes[0].handle_id.as_deref(), Some("h2"));
        assert_eq!(b.allocations[..5], [None, None, Some(0), Some(0), Some(1)]);
        assert_eq!(handle_of(&b, 4), Some("h3"));
        assert_eq!(b.unallocated, vec![5, 6, 7, 0, 1]);
        assert!(!b.sequence_number_for_allocation.contains_key("0"));
        // FIFO: the next assignment does not reuse the freed ordinals yet.
        assert_eq!(assign(&mut b, 1, Some("h4"), &attrs("d")), vec![5]);
        assert!(release_handle(&mut b, "nobody").is_empty());
    }

    #[test]
    fn release_by_address_reports_what_was_not_allocated() {
        let mut b = block("10.0.0.0/29");
        assign(&mut b, 2, Some("h1"), &attrs("a"));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let out = release_addresses(&mut b, &[ip("10.0.0.1"), ip("10.0.0.5"), ip("10.9.9.9")]);
        assert_eq!(out.freed, vec![(ip("10.0.0.1"), Some("h1".to_string()))]);
        assert_eq!(out.not_allocated, vec![ip("10.0.0.5"), ip("10.9.9.9")]);
        assert_eq!(handle_count(&b, "h1"), 1);
        assert_eq!(b.attributes.len(), 1);
    }

    #[test]
    fn assign_ordinal_takes_exactly_that_address() {
        let mut b = block("10.0.0.0/29");
        assign_ordinal(&mut b, 5, Some("h1"), &attrs("a")).expect("free");
        assert_eq!(handle_of(&b, 5), Some("h1"));
        assert!(!b.unallocated.contains(&5));
        assert_eq!(sequence_of(&b, 5), Some(7));
        assert_eq!(
            assign_ordinal(&mut b, 5, Some("h2"), &attrs("b")),
            Err(Some("h1".to_string()))
        );
        assert_eq!(
            assign_ordinal(&mut b, 8, Some("h2"), &attrs("b")),
            Err(None)
        );
        // The queue skips it afterwards.
        assert_eq!(
            assign(&mut b, 7, Some("h3"), &attrs("c")),
            vec![0, 1, 2, 3, 4, 6, 7]
        );
    }

    #[test]
    fn release_checked_refuses_a_late_release() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut b = block("10.0.0.0/30");
        assign(&mut b, 1, Some("h1"), &attrs("a"));
        let seq = sequence_of(&b, 0).expect("recorded");
        // The GC saw ordinal 0 held by h1 at `seq`; meanwhile h1 released it and h2 got it.
        release_handle(&mut b, "h1");
        b.unallocated.retain(|&o| o != 0);
        b.unallocated.insert(0, 0);
        assert_eq!(assign(&mut b, 1, Some("h2"), &attrs("b")), vec![0]);
        let late = ReleaseOptions {
            address: ip("10.0.0.0"),
            handle_id: None,
            sequence_number: Some(seq),
        };
        let out = release_checked(&mut b, std::slice::from_ref(&late));
        assert!(out.freed.is_empty());
        assert!(matches!(
            out.refused[..],
            [(_, Refusal::SequenceMismatch { .. })]
        ));
        assert_eq!(handle_of(&b, 0), Some("h2"));
        let wrong_handle = ReleaseOptions {
            handle_id: Some("h1".into()),
            sequence_number: None,
            ..late.clone()
        };
        let out = release_checked(&mut b, &[wrong_handle]);
        assert!(matches!(
            out.refused[..],
            [(_, Refusal::HandleMismatch { .. })]
        ));
        let right = ReleaseOptions {
            handle_id: Some("h2".into()),
            sequence_number: sequence_of(&b, 0),
            ..late
        };
        let free = ReleaseOptions::address(ip("10.0.0.3"));
        let out = release_checked(&mut b, &[right, free]);
        assert_eq!(out.freed, vec![(ip("10.0.0.0"), Some("h2".to_string()))]);
        assert_eq!(out.not_allocated, vec![ip("10.0.0.3")]);
        assert!(is_empty(&b));
    }

    #[test]
    fn rollback_only_frees_ordinals_still_held_by_the_handle() {
        let mut b = block("10.0.0.0/29");
        let mine = assign(&mut b, 2, Some("h1"), &attrs("a"));
        release_handle(&mut b, "h1");
        // Someone else got ordinal 0 back after the queue wrapped: simulate by assigning directly.
        b.unallocated.retain(|&o| o != 0);
        b.allocations[0] = Some(find_or_add_attribute(&mut b, Some("h2"), &attrs("b")));
        assert!(release_ordinals_of_handle(&mut b, "h1", &mine).is_empty());
        assert_eq!(handle_of(&b, 0), Some("h2"));
    }
}
