//! Interning of path attribute sets (holo-bgp's `AttrSets`): every distinct `PathAttributes` is
//! held once behind an `Arc`, and routes hold clones of that `Arc`. An UPDATE that announces
//! 1,000 prefixes costs one attribute set, not 1,000, and routes whose attributes are the same
//! set compare with a pointer test.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::packet::PathAttributes;

/// Below this many sets, unreferenced ones are not worth a sweep.
const MIN_SWEEP: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct AttrSets {
    /// Bucketed by a hash of the value; `PathAttributes` itself does not implement `Hash`.
    sets: HashMap<u64, Vec<Arc<PathAttributes>>>,
    len: usize,
    /// The count after the last sweep; the next one runs when `len` doubles it.
    swept_len: usize,
}

impl AttrSets {
    /// The shared copy of `attrs`.
    pub(crate) fn intern(&mut self, attrs: PathAttributes) -> Arc<PathAttributes> {
        let bucket = self.sets.entry(hash(&attrs)).or_default();
        if let Some(shared) = bucket.iter().find(|a| ***a == attrs) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(attrs);
        bucket.push(Arc::clone(&shared));
        self.len += 1;
        if self.len > MIN_SWEEP.max(2 * self.swept_len) {
            self.sweep();
        }
        shared
    }

    /// Drops the sets no route holds any more (amortised: runs when the count has doubled).
    fn sweep(&mut self) {
        self.sets.retain(|_, bucket| {
            bucket.retain(|a| Arc::strong_count(a) > 1);
            !bucket.is_empty()
        });
        self.len = self.sets.values().map(Vec::len).sum();
        self.swept_len = self.len;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Hashes every field. The destructuring makes a new field in `PathAttributes` a compile error
/// here rather than a silent hash collision.
fn hash(a: &PathAttributes) -> u64 {
    let PathAttributes {
        origin,
        as_path,
        next_hop,
        med,
        local_pref,
        atomic_aggregate,
        aggregator,
        communities,
        originator_id,
        cluster_list,
        extended_communities,
        large_communities,
        unknown,
    } = a;
    let mut h = DefaultHasher::new();
    origin.hash(&mut h);
    as_path.hash(&mut h);
    next_hop.hash(&mut h);
    med.hash(&mut h);
    local_pref.hash(&mut h);
    atomic_aggregate.hash(&mut h);
    aggregator.hash(&mut h);
    communities.hash(&mut h);
    originator_id.hash(&mut h);
    cluster_list.hash(&mut h);
    extended_communities.hash(&mut h);
    large_communities.hash(&mut h);
    unknown.hash(&mut h);
    h.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use super::*;

    #[test]
    fn equal_sets_share_one_arc() {
        let mut sets = AttrSets::default();
        let a = sets.intern(PathAttributes {
            med: Some(5),
            ..Default::default()
        });
        let b = sets.intern(PathAttributes {
            med: Some(5),
            ..Default::default()
        });
        let c = sets.intern(PathAttributes::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn unreferenced_sets_are_swept() {
        let mut sets = AttrSets::default();
        let kept = sets.intern(PathAttributes {
            med: Some(u32::MAX),
            ..Default::default()
        });
        for med in 0..(3 * MIN_SWEEP as u32) {
            drop(sets.intern(PathAttributes {
                med: Some(med),
                ..Default::default()
            }));
        }
        assert!(sets.len() <= MIN_SWEEP + 1);
        let again = sets.intern(PathAttributes {
            med: Some(u32::MAX),
            ..Default::default()
        });
        assert!(Arc::ptr_eq(&kept, &again));
    }
}
