//! The decision process of RFC 4271 §9.1.2, run per destination over its candidate paths.
//!
//! Selection is by elimination, as RFC 4271 §9.1.2.2 words it: each step keeps the candidates
//! that are best on one criterion, and every candidate it drops records the step as its
//! [`LossReason`]. Elimination over the whole set (rather than pairwise comparison against a
//! running best) makes the result independent of the order in which routes arrived, which the
//! MED rule needs: MED is only comparable within one neighbouring AS, so "is better than" is
//! not transitive across ASes.
//!
//! Steps, in order:
//! 0. ineligible candidates drop out (AS loop, RFC 4271 §9.1.2; RFC 4456 §8 loops);
//!    a locally originated route beats every learned one (a Cisco-"weight"-like rule: what
//!    this node originates itself is never replaced by a copy learned from a peer);
//! 1. highest degree of preference: LOCAL_PREF, 100 when absent (§9.1.1, §5.1.5);
//! 2. shortest AS_PATH, an AS_SET counting 1, confederation segments 0 (§9.1.2.2 a);
//! 3. lowest ORIGIN (§9.1.2.2 b);
//! 4. lowest MED, absent counting 0, only among routes from the same neighbouring AS
//!    (§9.1.2.2 c). `always-compare-med` is off and there is no switch for it. Because the
//!    step works on the whole set, the outcome is what other daemons call "deterministic MED";
//! 5. eBGP-learned over iBGP-learned (§9.1.2.2 d);
//! 6. IGP cost to the next hop (§9.1.2.2 e): skipped. Brindle's next hops are directly
//!    connected peers or routes from the kernel it does not weigh, so every cost is equal;
//! 7. lowest BGP Identifier of the advertising router, ORIGINATOR_ID in its place when present
//!    (§9.1.2.2 f, RFC 4456 §9);
//! 8. shortest CLUSTER_LIST (RFC 4456 §9);
//! 9. lowest peer address (§9.1.2.2 g).
//!
//! The candidates left after step 5 are equal for forwarding: they form the multipath (ECMP)
//! group, as BIRD's `merge paths` does (its `bgp_rte_mergable` checks the same attributes,
//! with MED only within one neighbouring AS). Steps 7-9 then order the group, best first.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::types::{Ineligibility, LossReason, RouteSource, Selection, DEFAULT_LOCAL_PREF};
use crate::packet::{Origin, PathAttributes};

/// What a candidate shares with every other prefix of the UPDATE that brought it: where it
/// came from, its attributes and its next hop. One `Arc` for the 1,000 prefixes of an UPDATE
/// (and for the whole table of a peer that announces it with one set of attributes), so a
/// candidate costs a pointer and its selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathInfo {
    pub(crate) source: RouteSource,
    pub(crate) attrs: Arc<PathAttributes>,
    /// The next hop to forward to; `None` for a locally originated route.
    pub(crate) next_hop: Option<IpAddr>,
    /// The BGP Identifier of the peer the path came from (ours for a local route).
    pub(crate) peer_router_id: Ipv4Addr,
}

/// One candidate for a destination: an Adj-RIB-In entry of one peer, or the local route.
/// Reads its shared part through `Deref` (`path.attrs`, `path.source`).
#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub(crate) info: Arc<PathInfo>,
    pub(crate) ineligible: Option<Ineligibility>,
    /// Set by [`select`].
    pub(crate) selection: Selection,
}

impl std::ops::Deref for Path {
    type Target = PathInfo;

    fn deref(&self) -> &PathInfo {
        &self.info
    }
}

impl Path {
    fn local_pref(&self) -> u32 {
        self.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    fn as_path_len(&self) -> usize {
        self.attrs.as_path.as_ref().map_or(0, |p| p.path_len())
    }

    fn origin(&self) -> Origin {
        // ORIGIN is mandatory (the decoder treats a route without it as withdrawn); a missing
        // one ranks last.
        self.attrs.origin.unwrap_or(Origin::Incomplete)
    }

    /// The AS the route was learned from, for the MED rule: the leftmost AS of the path, or
    /// our own AS for a route that has not left it (RFC 4271 §9.1.2.2 c).
    fn neighbour_as(&self, local_asn: u32) -> u32 {
        self.attrs
            .as_path
            .as_ref()
            .and_then(|p| p.leftmost())
            .unwrap_or(local_asn)
    }

    fn med(&self) -> u32 {
        // RFC 4271 §9.1.2.2 c: a missing MED is the lowest possible value.
        self.attrs.med.unwrap_or(0)
    }

    fn is_ibgp(&self) -> bool {
        matches!(self.source, RouteSource::Peer { ibgp: true, .. })
    }

    /// RFC 4456 §9: ORIGINATOR_ID stands in for the BGP Identifier when present.
    fn router_id(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.peer_router_id)
    }

    fn peer_address(&self) -> Option<IpAddr> {
        self.source.peer().map(|p| p.0)
    }
}

/// Runs the decision process over `paths`, setting each one's [`Path::selection`].
///
/// Returns the multipath group as indices into `paths`, best first; empty when no candidate
/// is eligible.
pub(crate) fn select(paths: &mut [Path], local_asn: u32) -> Vec<usize> {
    // The common case: one candidate.
    if let [only] = paths {
        return match only.ineligible {
            Some(why) => {
                only.selection = Selection::Lost(LossReason::Ineligible(why));
                Vec::new()
            }
            None => {
                only.selection = Selection::Best;
                vec![0]
            }
        };
    }
    let mut alive = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter_mut().enumerate() {
        match p.ineligible {
            Some(why) => p.selection = Selection::Lost(LossReason::Ineligible(why)),
            None => alive.push(i),
        }
    }

    if let Some(&local) = alive
        .iter()
        .find(|&&i| paths[i].source == RouteSource::Local)
    {
        for &i in &alive {
            paths[i].selection = if i == local {
                Selection::Best
            } else {
                Selection::Lost(LossReason::LocallyOriginated)
            };
        }
        return vec![local];
    }

    keep_min(paths, &mut alive, LossReason::LocalPref, |p| {
        Reverse(p.local_pref())
    });
    keep_min(
        paths,
        &mut alive,
        LossReason::AsPathLength,
        Path::as_path_len,
    );
    keep_min(paths, &mut alive, LossReason::Origin, Path::origin);
    keep_lowest_med(paths, &mut alive, local_asn);
    keep_min(paths, &mut alive, LossReason::EbgpOverIbgp, Path::is_ibgp);

    let mut group = alive.clone();
    keep_min(paths, &mut alive, LossReason::RouterId, Path::router_id);
    keep_min(paths, &mut alive, LossReason::ClusterListLength, |p| {
        p.attrs.cluster_list.len()
    });
    keep_min(
        paths,
        &mut alive,
        LossReason::PeerAddress,
        Path::peer_address,
    );

    // One path per peer, so the peer address leaves at most one; `alive` is empty only if
    // nothing was eligible.
    let Some(&best) = alive.first() else {
        return Vec::new();
    };
    paths[best].selection = Selection::Best;
    group.sort_by_key(|&i| (i != best, group_order(&paths[i])));
    for &i in &group[1..] {
        if let Selection::Lost(why) = paths[i].selection {
            paths[i].selection = Selection::Multipath(why);
        }
    }
    group
}

/// The order of a multipath group behind its best route: steps 7-9.
pub(crate) fn group_order(p: &Path) -> (Ipv4Addr, usize, Option<IpAddr>) {
    (p.router_id(), p.attrs.cluster_list.len(), p.peer_address())
}

/// Keeps the candidates with the smallest `key`; the others lose for `reason`.
fn keep_min<K: Ord>(
    paths: &mut [Path],
    alive: &mut Vec<usize>,
    reason: LossReason,
    key: impl Fn(&Path) -> K,
) {
    let Some(min) = alive.iter().map(|&i| key(&paths[i])).min() else {
        return;
    };
    alive.retain(|&i| {
        let keep = key(&paths[i]) == min;
        if !keep {
            paths[i].selection = Selection::Lost(reason);
        }
        keep
    });
}

/// RFC 4271 §9.1.2.2 c: drops every route for which another route from the same neighbouring
/// AS has a lower MED.
fn keep_lowest_med(paths: &mut [Path], alive: &mut Vec<usize>, local_asn: u32) {
    if alive.len() < 2 {
        return;
    }
    // (neighbour AS, lowest MED); a destination has a handful of candidates.
    let mut lowest: Vec<(u32, u32)> = Vec::new();
    for &i in alive.iter() {
        let (asn, med) = (paths[i].neighbour_as(local_asn), paths[i].med());
        match lowest.iter_mut().find(|(a, _)| *a == asn) {
            Some((_, m)) => *m = (*m).min(med),
            None => lowest.push((asn, med)),
        }
    }
    alive.retain(|&i| {
        let p = &paths[i];
        let asn = p.neighbour_as(local_asn);
        let keep = lowest.iter().any(|&(a, m)| a == asn && m == p.med());
        if !keep {
            paths[i].selection = Selection::Lost(LossReason::Med);
        }
        keep
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packet::AsPath;
    use crate::rib::types::PeerId;

    const LOCAL_ASN: u32 = 65000;

    fn attrs(f: impl FnOnce(&mut PathAttributes)) -> Arc<PathAttributes> {
        let mut a = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65001])),
            ..Default::default()
        };
        f(&mut a);
        Arc::new(a)
    }

    fn path(peer: u8, ibgp: bool, attrs: Arc<PathAttributes>) -> Path {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer));
        Path {
            info: Arc::new(PathInfo {
                source: RouteSource::Peer {
                    id: PeerId(addr),
                    ibgp,
                    rr_client: false,
                },
                attrs,
                next_hop: Some(addr),
                peer_router_id: Ipv4Addr::new(1, 1, 1, peer),
            }),
            ineligible: None,
            selection: Selection::Lost(LossReason::PeerAddress),
        }
    }

    fn ebgp(peer: u8, f: impl FnOnce(&mut PathAttributes)) -> Path {
        path(peer, false, attrs(f))
    }

    /// Each step of §9.1.2.2 decides a pair: (winner, loser, the loser's reason). Peer 2 beats
    /// peer 1 on the step and would lose every later one, so a wrong step order fails.
    #[test]
    fn each_step_decides_a_pair_and_names_it() {
        let cases: Vec<(&str, Path, Path, LossReason)> = vec![
            (
                "higher LOCAL_PREF",
                path(2, true, attrs(|a| a.local_pref = Some(200))),
                path(1, true, attrs(|a| a.local_pref = Some(100))),
                LossReason::LocalPref,
            ),
            (
                "absent LOCAL_PREF counts as 100",
                path(2, true, attrs(|a| a.local_pref = Some(101))),
                ebgp(1, |_| {}),
                LossReason::LocalPref,
            ),
            (
                "shorter AS_PATH",
                ebgp(2, |_| {}),
                ebgp(1, |a| {
                    a.as_path = Some(AsPath::from_sequence(vec![65001, 65009]))
                }),
                LossReason::AsPathLength,
            ),
            (
                "lower ORIGIN",
                ebgp(2, |a| a.origin = Some(Origin::Egp)),
                ebgp(1, |a| a.origin = Some(Origin::Incomplete)),
                LossReason::Origin,
            ),
            (
                "lower MED from the same neighbour AS",
                ebgp(2, |a| a.med = Some(10)),
                ebgp(1, |a| a.med = Some(20)),
                LossReason::Med,
            ),
            (
                "absent MED counts as 0",
                ebgp(2, |_| {}),
                ebgp(1, |a| a.med = Some(1)),
                LossReason::Med,
            ),
            (
                "eBGP over iBGP",
                ebgp(2, |_| {}),
                path(1, true, attrs(|_| {})),
                LossReason::EbgpOverIbgp,
            ),
            (
                "lower router ID",
                {
                    let mut p = ebgp(2, |_| {});
                    Arc::make_mut(&mut p.info).peer_router_id = Ipv4Addr::new(1, 1, 1, 0);
                    p
                },
                ebgp(1, |_| {}),
                LossReason::RouterId,
            ),
            (
                "ORIGINATOR_ID stands in for the router ID",
                path(
                    2,
                    true,
                    attrs(|a| a.originator_id = Some(Ipv4Addr::new(0, 0, 0, 1))),
                ),
                path(1, true, attrs(|_| {})),
                LossReason::RouterId,
            ),
            (
                "shorter CLUSTER_LIST",
                path(
                    2,
                    true,
                    attrs(|a| {
                        a.originator_id = Some(Ipv4Addr::new(9, 9, 9, 9));
                        a.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7)];
                    }),
                ),
                path(
                    1,
                    true,
                    attrs(|a| {
                        a.originator_id = Some(Ipv4Addr::new(9, 9, 9, 9));
                        a.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7); 2];
                    }),
                ),
                LossReason::ClusterListLength,
            ),
            (
                "lower peer address",
                {
                    let mut p = ebgp(1, |_| {});
                    Arc::make_mut(&mut p.info).peer_router_id = Ipv4Addr::new(5, 5, 5, 5);
                    p
                },
                {
                    let mut p = ebgp(2, |_| {});
                    Arc::make_mut(&mut p.info).peer_router_id = Ipv4Addr::new(5, 5, 5, 5);
                    p
                },
                LossReason::PeerAddress,
            ),
        ];
        for (name, winner, loser, reason) in cases {
            // Both orders: the outcome must not depend on arrival.
            for flip in [false, true] {
                let mut paths = if flip {
                    vec![loser.clone(), winner.clone()]
                } else {
                    vec![winner.clone(), loser.clone()]
                };
                let (w, l) = if flip { (1, 0) } else { (0, 1) };
                let group = select(&mut paths, LOCAL_ASN);
                assert_eq!(group.first(), Some(&w), "{name}");
                assert_eq!(paths[w].selection, Selection::Best, "{name}");
                let expect = if group.contains(&l) {
                    Selection::Multipath(reason)
                } else {
                    Selection::Lost(reason)
                };
                assert_eq!(paths[l].selection, expect, "{name}");
            }
        }
    }

    #[test]
    fn med_is_compared_only_within_one_neighbour_as() {
        // AS 65001 with MED 50 and AS 65002 with MED 10: not comparable, both survive MED
        // and the router ID decides; peer 1 (lower ID) wins despite the higher MED.
        let mut paths = vec![
            ebgp(1, |a| a.med = Some(50)),
            ebgp(2, |a| {
                a.med = Some(10);
                a.as_path = Some(AsPath::from_sequence(vec![65002]));
            }),
        ];
        let group = select(&mut paths, LOCAL_ASN);
        assert_eq!(group, vec![0, 1]);
        assert_eq!(
            paths[1].selection,
            Selection::Multipath(LossReason::RouterId)
        );

        // A third route from 65001 with MED 5 eliminates the first, whatever the order.
        paths.push(ebgp(3, |a| a.med = Some(5)));
        let group = select(&mut paths, LOCAL_ASN);
        assert_eq!(paths[0].selection, Selection::Lost(LossReason::Med));
        assert_eq!(group, vec![1, 2]);
        assert_eq!(paths[1].selection, Selection::Best);
    }

    #[test]
    fn equal_ebgp_paths_form_a_multipath_group_best_first() {
        let mut paths = vec![ebgp(3, |_| {}), ebgp(1, |_| {}), ebgp(2, |_| {})];
        // A worse one (longer path) stays out of the group.
        paths.push(ebgp(4, |a| {
            a.as_path = Some(AsPath::from_sequence(vec![1, 2]))
        }));
        let group = select(&mut paths, LOCAL_ASN);
        assert_eq!(group, vec![1, 2, 0]);
        assert_eq!(paths[1].selection, Selection::Best);
        assert_eq!(
            paths[2].selection,
            Selection::Multipath(LossReason::RouterId)
        );
        assert_eq!(
            paths[3].selection,
            Selection::Lost(LossReason::AsPathLength)
        );
    }

    #[test]
    fn ibgp_and_ebgp_do_not_mix_in_a_group() {
        let mut paths = vec![ebgp(1, |_| {}), path(2, true, attrs(|_| {}))];
        assert_eq!(select(&mut paths, LOCAL_ASN), vec![0]);
    }

    #[test]
    fn ineligible_paths_lose_with_their_reason() {
        let mut looped = ebgp(1, |_| {});
        looped.ineligible = Some(Ineligibility::AsLoop);
        let mut paths = vec![
            looped.clone(),
            ebgp(2, |a| a.origin = Some(Origin::Incomplete)),
        ];
        assert_eq!(select(&mut paths, LOCAL_ASN), vec![1]);
        assert_eq!(
            paths[0].selection,
            Selection::Lost(LossReason::Ineligible(Ineligibility::AsLoop))
        );
        let mut alone = vec![looped];
        assert!(select(&mut alone, LOCAL_ASN).is_empty());
    }

    #[test]
    fn a_local_route_beats_learned_ones() {
        let mut local = ebgp(9, |a| a.local_pref = Some(1));
        let info = Arc::make_mut(&mut local.info);
        info.source = RouteSource::Local;
        info.next_hop = None;
        let mut paths = vec![ebgp(1, |a| a.local_pref = Some(1000)), local];
        assert_eq!(select(&mut paths, LOCAL_ASN), vec![1]);
        assert_eq!(
            paths[0].selection,
            Selection::Lost(LossReason::LocallyOriginated)
        );
    }
}
