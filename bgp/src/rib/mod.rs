//! The RIB (RFC 4271 §3.2): Adj-RIBs-In, the Loc-RIB and Adj-RIBs-Out for IPv4 and IPv6
//! unicast. Pure and synchronous: the speaker task owns one [`Rib`] and feeds it decoded
//! UPDATEs and session events; every operation returns the [`RibChanges`] it caused (best-route
//! changes for the dataplane, UPDATEs for each established peer).
//!
//! ```text
//!  apply_update / originate / peer_down
//!     |  Adj-RIB-In: one Path per (prefix, peer) in the prefix's Destination
//!     v  (ingress: LOCAL_PREF rules, loop checks; attributes interned, attr_set.rs)
//!  touched prefixes, each with its best route before --decision.rs--> Loc-RIB best +
//!     |                                                multipath group --> RibChanges::best
//!     '--adj_out.rs: should_export + per-peer attributes of the old and the new best route
//!        --differences--> pack_updates --> RibChanges::per_peer_out
//! ```
//!
//! Everything about a prefix lives in its destination (holo-bgp's layout): its candidates
//! (the Adj-RIBs-In), marked with their selection (the Loc-RIB). A candidate is a pointer to
//! a record shared by every prefix of the UPDATE that brought it (source, attributes, next
//! hop) plus its selection, and a destination with one candidate holds it inline: 100,000
//! prefixes from one peer cost their B-tree slots and one record per UPDATE. The Adj-RIB-Out
//! of a peer is not stored: it is by definition the best route of each prefix as
//! [`adj_out::export`] makes it for that peer (which depends only on the route and on the
//! peer's configuration and session, fixed while the session is up), so a change compares
//! what the best route before and after exports, and a new session gets the table exported.
//! BIRD shares its attributes the same way; per-(prefix, peer) entries made the Adj-RIB-Out
//! most of the memory of a reflector. The decision and the export for a prefix touch one
//! place in memory, and a batch walks the table in prefix order. Work that needs all of one
//! peer's routes (`peer_down`, `peer_up`) walks the table. Only the best route is announced
//! (no ADD-PATH). There is no import or export policy yet (`policy.rs` will sit between
//! ingress and the decision, and in `adj_out.rs`; an export policy keeps the Adj-RIB-Out a
//! function of the best route and the peer).

mod adj_out;
mod attr_set;
mod decision;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

pub use adj_out::{pack_updates, should_export, OutPath};
pub use types::{
    AddressFamily, BestChange, BestRoute, Candidate, Ineligibility, LocalInfo, LossReason,
    PeerCounts, PeerId, PeerInfo, RibChanges, RibError, RouteEntry, RouteSource, Selection,
    DEFAULT_LOCAL_PREF,
};

use self::adj_out::ExportCache;
use self::attr_set::AttrSets;
use self::decision::{Path, PathInfo};
use crate::fsm::NegotiatedSession;
use crate::packet::{AsPath, EncodeContext, Origin, PathAttributes, Treatment, Update};

/// The RIB of one speaker.
#[derive(Debug)]
pub struct Rib {
    local: LocalInfo,
    peers: BTreeMap<PeerId, PeerState>,
    /// The Loc-RIB with each prefix's candidates, per family ([`AddressFamily::index`]).
    tables: [BTreeMap<IpNet, Destination>; 2],
    attr_sets: AttrSets,
    /// Next hops the owner reported unreachable (RFC 4271 §9.1.2.1).
    unreachable: BTreeSet<IpAddr>,
}

#[derive(Debug)]
struct PeerState {
    info: PeerInfo,
    session: Option<Session>,
    /// Prefixes in its Adj-RIB-In (the paths are in the destinations), per family
    /// ([`AddressFamily::index`]).
    received: [usize; 2],
    /// How many of those are ineligible.
    ineligible: [usize; 2],
    /// Prefixes in its Adj-RIB-Out, per family.
    advertised: [usize; 2],
    /// Graceful restart (RFC 4724 §4.2), we are the helper: the routes kept from before the
    /// peer restarted that it has not announced or withdrawn again since.
    stale: BTreeSet<IpNet>,
    /// The shared part of the paths it last announced (see `apply_update`).
    last_info: Option<Arc<PathInfo>>,
}

#[derive(Debug)]
struct Session {
    families: Vec<AddressFamily>,
    encode: EncodeContext,
}

impl PeerState {
    /// The session, if it is established and carries `family`.
    fn carries(&self, family: AddressFamily) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.families.contains(&family))
    }
}

/// The candidates of one prefix: at most one per peer, and the local route. Most prefixes
/// have one, held inline: a prefix then costs its B-tree slot and nothing else. The best
/// route and the multipath group are the candidates' [`Selection`]s; what each peer was sent
/// (its Adj-RIB-Out) is what [`adj_out::export`] makes of the best route for that peer, so it
/// is not stored either (the memory of 100,000 prefixes times the number of peers).
#[derive(Debug, Default)]
enum Destination {
    #[default]
    Empty,
    One(Path),
    Many(Vec<Path>),
}

/// A prefix's best route as it was before a change: the best path and the next hops of its
/// multipath group (best first, without duplicates).
#[derive(Debug, Clone)]
struct Selected {
    path: Path,
    next_hops: Vec<IpAddr>,
}

impl Selected {
    fn route(&self) -> BestRoute {
        BestRoute {
            next_hops: self.next_hops.clone(),
            attrs: Arc::clone(&self.path.attrs),
            source: self.path.source,
        }
    }
}

/// Prefixes a RIB operation touched, each with its best route before the first change.
type Touched = Vec<(IpNet, Option<Selected>)>;

impl Destination {
    fn paths(&self) -> &[Path] {
        match self {
            Destination::Empty => &[],
            Destination::One(p) => std::slice::from_ref(p),
            Destination::Many(v) => v,
        }
    }

    fn paths_mut(&mut self) -> &mut [Path] {
        match self {
            Destination::Empty => &mut [],
            Destination::One(p) => std::slice::from_mut(p),
            Destination::Many(v) => v,
        }
    }

    fn best_path(&self) -> Option<&Path> {
        self.paths().iter().find(|p| p.selection == Selection::Best)
    }

    /// The best route and its multipath group, as the last decision left them.
    fn selected(&self) -> Option<Selected> {
        let best = self.best_path()?;
        let mut group: Vec<&Path> = self
            .paths()
            .iter()
            .filter(|p| matches!(p.selection, Selection::Multipath(_)))
            .collect();
        group.sort_by_key(|p| decision::group_order(p));
        let mut next_hops: Vec<IpAddr> = Vec::with_capacity(1 + group.len());
        for nh in std::iter::once(best)
            .chain(group)
            .filter_map(|p| p.next_hop)
        {
            if !next_hops.contains(&nh) {
                next_hops.push(nh);
            }
        }
        Some(Selected {
            path: best.clone(),
            next_hops,
        })
    }

    /// Records `prefix` as touched by the operation under way, with its state before.
    fn touch(&self, prefix: IpNet, touched: &mut Touched) {
        touched.push((prefix, self.selected()));
    }

    /// Inserts or replaces the path from `path.source`; returns the one it replaced.
    fn upsert(&mut self, path: Path) -> Option<Path> {
        if let Some(slot) = self
            .paths_mut()
            .iter_mut()
            .find(|p| p.source == path.source)
        {
            return Some(std::mem::replace(slot, path));
        }
        *self = match std::mem::take(self) {
            Destination::Empty => Destination::One(path),
            Destination::One(first) => Destination::Many(vec![first, path]),
            Destination::Many(mut v) => {
                v.push(path);
                Destination::Many(v)
            }
        };
        None
    }

    fn remove(&mut self, source: &RouteSource) -> Option<Path> {
        let i = self.paths().iter().position(|p| p.source == *source)?;
        match std::mem::take(self) {
            Destination::Empty => None,
            Destination::One(p) => Some(p),
            Destination::Many(mut v) => {
                let p = v.swap_remove(i);
                *self = match v.len() {
                    1 => Destination::One(v.swap_remove(0)),
                    _ => Destination::Many(v),
                };
                Some(p)
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Destination::Empty)
    }
}

impl Rib {
    pub fn new(local: LocalInfo) -> Self {
        Rib {
            local,
            peers: BTreeMap::new(),
            tables: [BTreeMap::new(), BTreeMap::new()],
            attr_sets: AttrSets::default(),
            unreachable: BTreeSet::new(),
        }
    }

    pub fn local(&self) -> &LocalInfo {
        &self.local
    }

    /// Configures a peer (down until [`Rib::peer_up`]).
    pub fn add_peer(&mut self, info: PeerInfo) -> Result<(), RibError> {
        let id = info.id();
        if self.peers.contains_key(&id) {
            return Err(RibError::PeerExists(id));
        }
        self.peers.insert(
            id,
            PeerState {
                info,
                session: None,
                received: [0; 2],
                ineligible: [0; 2],
                advertised: [0; 2],
                stale: BTreeSet::new(),
                last_info: None,
            },
        );
        Ok(())
    }

    /// Removes a peer and its routes.
    pub fn remove_peer(&mut self, peer: PeerId) -> Result<RibChanges, RibError> {
        let changes = self.peer_down(peer)?;
        self.peers.remove(&peer);
        Ok(changes)
    }

    /// Sets our address on the session with `peer` (the next hop of next-hop-self), known
    /// once the connection is up. Call before [`Rib::peer_up`]: the Adj-RIB-Out of an
    /// established peer is computed from it, so changing it then would change what the RIB
    /// believes the peer was sent.
    pub fn set_local_address(&mut self, peer: PeerId, address: IpAddr) -> Result<(), RibError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        state.info.local_address = address;
        Ok(())
    }

    /// The session with `peer` reached Established. Its Adj-RIB-Out is from now on the
    /// current best routes as exported to it (counted here); send them with [`Rib::initial_updates`] before any later
    /// [`RibChanges::per_peer_out`] for this peer.
    pub fn peer_up(&mut self, peer: PeerId, session: &NegotiatedSession) -> Result<(), RibError> {
        let Rib {
            local,
            peers,
            tables,
            attr_sets,
            unreachable: _,
        } = self;
        let state = peers.get_mut(&peer).ok_or(RibError::UnknownPeer(peer))?;
        state.info.router_id = session.peer_router_id;
        let mut families: Vec<AddressFamily> = session
            .families
            .iter()
            .filter_map(|f| AddressFamily::from_family(*f))
            .collect();
        families.sort();
        families.dedup();
        let mut cache = ExportCache::default();
        state.advertised = [0; 2];
        for family in AddressFamily::ALL {
            let carried = families.contains(&family);
            if !carried {
                continue;
            }
            for dest in tables[family.index()].values() {
                let Some(best) = dest.best_path() else {
                    continue;
                };
                if adj_out::export(best, family, &state.info, local, attr_sets, &mut cache)
                    .is_some()
                {
                    state.advertised[family.index()] += 1;
                }
            }
        }
        state.session = Some(Session {
            families,
            encode: EncodeContext {
                four_octet_as: session.four_octet_as,
            },
        });
        Ok(())
    }

    /// The whole Adj-RIB-Out of `peer` as UPDATEs, each negotiated family closed by its
    /// End-of-RIB marker (RFC 4724 §2). For a newly established session, and to answer a
    /// ROUTE-REFRESH (RFC 2918 §4).
    pub fn initial_updates(&mut self, peer: PeerId) -> Result<Vec<Update>, RibError> {
        let Rib {
            local,
            peers,
            tables,
            attr_sets,
            unreachable: _,
        } = self;
        let state = peers.get(&peer).ok_or(RibError::UnknownPeer(peer))?;
        let session = state.session.as_ref().ok_or(RibError::PeerNotUp(peer))?;
        let mut cache = ExportCache::default();
        let mut out = Vec::new();
        for &family in &session.families {
            let routes: Vec<(IpNet, OutPath)> = tables[family.index()]
                .iter()
                .filter_map(|(prefix, dest)| {
                    let best = dest.best_path()?;
                    let out =
                        adj_out::export(best, family, &state.info, local, attr_sets, &mut cache)?;
                    Some((*prefix, out))
                })
                .collect();
            out.extend(pack_updates(routes, Vec::new(), &session.encode));
            out.push(adj_out::end_of_rib(family));
        }
        Ok(out)
    }

    /// The session with `peer` went down: the routes learned on it leave the RIB (RFC 4271
    /// §8.2.2, Established state: "deletes all routes associated with this connection") and
    /// its Adj-RIB-Out is forgotten.
    pub fn peer_down(&mut self, peer: PeerId) -> Result<RibChanges, RibError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        state.session = None;
        state.received = [0; 2];
        state.ineligible = [0; 2];
        state.advertised = [0; 2];
        state.stale.clear();
        state.last_info = None;
        let source = source_of(&state.info);
        let mut touched = Touched::new();
        for table in &mut self.tables {
            for (prefix, dest) in table.iter_mut() {
                if dest.paths().iter().any(|p| p.source == source) {
                    dest.touch(*prefix, &mut touched);
                    dest.remove(&source);
                }
            }
        }
        Ok(self.process(touched))
    }

    /// The session with a peer that supports graceful restart went down without a
    /// NOTIFICATION (RFC 4724 §4.2, receiving speaker): its routes stay, marked stale, and are
    /// still used; its Adj-RIB-Out is forgotten. They are replaced as the peer announces them
    /// again, and the rest removed by [`Rib::end_of_rib`] or [`Rib::flush_stale`] (restart
    /// time over, or the peer came back without graceful restart).
    pub fn peer_down_graceful(&mut self, peer: PeerId) -> Result<(), RibError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        state.session = None;
        state.advertised = [0; 2];
        let source = source_of(&state.info);
        for table in &mut self.tables {
            for (prefix, dest) in table.iter() {
                if dest.paths().iter().any(|p| p.source == source) {
                    state.stale.insert(*prefix);
                }
            }
        }
        Ok(())
    }

    /// End-of-RIB from `peer` for `family` (RFC 4724 §4.2): its stale routes of that family
    /// that it did not announce again are removed.
    pub fn end_of_rib(
        &mut self,
        peer: PeerId,
        family: AddressFamily,
    ) -> Result<RibChanges, RibError> {
        self.remove_stale(peer, Some(family))
    }

    /// Removes every stale route of `peer` (its restart time is over, or it came back
    /// without graceful restart).
    pub fn flush_stale(&mut self, peer: PeerId) -> Result<RibChanges, RibError> {
        self.remove_stale(peer, None)
    }

    /// How many routes of `peer` are stale.
    pub fn stale_count(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |s| s.stale.len())
    }

    fn remove_stale(
        &mut self,
        peer: PeerId,
        family: Option<AddressFamily>,
    ) -> Result<RibChanges, RibError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        let source = source_of(&state.info);
        let (gone, kept): (BTreeSet<IpNet>, BTreeSet<IpNet>) = std::mem::take(&mut state.stale)
            .into_iter()
            .partition(|p| family.is_none_or(|f| AddressFamily::of(p) == f));
        state.stale = kept;
        let mut touched = Touched::with_capacity(gone.len());
        for prefix in gone {
            let table = &mut self.tables[AddressFamily::of(&prefix).index()];
            let Some(dest) = table.get_mut(&prefix) else {
                continue;
            };
            dest.touch(prefix, &mut touched);
            let Some(old) = dest.remove(&source) else {
                continue;
            };
            let f = AddressFamily::of(&prefix).index();
            state.received[f] -= 1;
            if old.ineligible.is_some() {
                state.ineligible[f] -= 1;
            }
        }
        Ok(self.process(touched))
    }

    /// Applies an UPDATE received from `peer`.
    ///
    /// RFC 7606: with treat-as-withdraw, every prefix it announces is withdrawn; with
    /// attribute-discard the decoder has already dropped the attributes and the routes stand.
    /// Prefixes of families the session did not negotiate are ignored (RFC 4760 §6 lets us
    /// reset instead; ignoring keeps the session up).
    pub fn apply_update(&mut self, peer: PeerId, update: &Update) -> Result<RibChanges, RibError> {
        let Rib {
            local,
            peers,
            tables,
            attr_sets,
            unreachable,
        } = self;
        let state = peers.get_mut(&peer).ok_or(RibError::UnknownPeer(peer))?;
        let session = state.session.as_ref().ok_or(RibError::PeerNotUp(peer))?;
        let source = source_of(&state.info);

        let mut withdrawn: Vec<IpNet> = update.withdrawn.clone();
        if let Some(mp) = &update.mp_unreach {
            withdrawn.extend_from_slice(&mp.withdrawn);
        }
        // (prefix, next hop) for everything announced; an IPv4 prefix without NEXT_HOP was
        // already treated as withdrawn by the decoder (RFC 7606 §3(d)).
        let mut announced: Vec<(IpNet, Option<IpAddr>)> = Vec::new();
        let v4_next_hop = update.attributes.next_hop.map(IpAddr::V4);
        announced.extend(update.nlri.iter().map(|p| (*p, v4_next_hop)));
        if let Some(mp) = &update.mp_reach {
            announced.extend(mp.nlri.iter().map(|p| (*p, Some(mp.next_hop))));
        }

        let mut touched = Touched::with_capacity(withdrawn.len() + announced.len());
        if update
            .treatment()
            .is_some_and(|t| t >= Treatment::TreatAsWithdraw)
        {
            withdrawn.extend(announced.drain(..).map(|(p, _)| p));
        }

        for prefix in withdrawn {
            if !session.families.contains(&AddressFamily::of(&prefix)) {
                continue;
            }
            state.stale.remove(&prefix);
            let table = &mut tables[AddressFamily::of(&prefix).index()];
            let Some(dest) = table
                .get_mut(&prefix)
                .filter(|d| d.paths().iter().any(|p| p.source == source))
            else {
                continue;
            };
            dest.touch(prefix, &mut touched);
            let Some(old) = dest.remove(&source) else {
                continue;
            };
            let f = AddressFamily::of(&prefix).index();
            state.received[f] -= 1;
            if old.ineligible.is_some() {
                state.ineligible[f] -= 1;
            }
        }

        if !announced.is_empty() {
            let attrs = attr_sets.intern(ingress_attrs(&update.attributes, &state.info));
            let loop_check = ineligibility(&attrs, local);
            // One shared record per next hop (an UPDATE has at most two), reused across
            // UPDATEs while the peer keeps announcing with the same attributes.
            let mut infos: Vec<Arc<PathInfo>> = Vec::with_capacity(2);
            for (prefix, next_hop) in announced {
                let family = AddressFamily::of(&prefix);
                if !session.families.contains(&family) {
                    continue;
                }
                let Some(next_hop) = next_hop else {
                    continue;
                };
                state.stale.remove(&prefix);
                let ineligible = loop_check
                    .or_else(|| {
                        (!family.matches(next_hop)).then_some(Ineligibility::UnusableNextHop)
                    })
                    .or_else(|| {
                        unreachable
                            .contains(&next_hop)
                            .then_some(Ineligibility::UnreachableNextHop)
                    });
                let info = match infos.iter().find(|i| i.next_hop == Some(next_hop)) {
                    Some(info) => Arc::clone(info),
                    None => {
                        let wanted = PathInfo {
                            source,
                            attrs: Arc::clone(&attrs),
                            next_hop: Some(next_hop),
                            peer_router_id: state.info.router_id,
                        };
                        let info = match state.last_info.take() {
                            Some(last) if *last == wanted => last,
                            _ => Arc::new(wanted),
                        };
                        state.last_info = Some(Arc::clone(&info));
                        infos.push(Arc::clone(&info));
                        info
                    }
                };
                let path = Path {
                    info,
                    ineligible,
                    selection: Selection::Lost(LossReason::PeerAddress),
                };
                let dest = tables[family.index()].entry(prefix).or_default();
                dest.touch(prefix, &mut touched);
                let f = family.index();
                match dest.upsert(path) {
                    Some(old) if old.ineligible.is_some() => state.ineligible[f] -= 1,
                    Some(_) => {}
                    None => state.received[f] += 1,
                }
                if ineligible.is_some() {
                    state.ineligible[f] += 1;
                }
            }
        }
        Ok(self.process(touched))
    }

    /// Originates `prefix` from this speaker (replacing an earlier origination of it). ORIGIN
    /// defaults to IGP; the AS_PATH is empty (RFC 4271 §5.1.2: our AS is prepended towards
    /// external peers); NEXT_HOP is ours, set per peer on export. A local route wins over
    /// every learned route for the prefix (see `decision.rs`).
    pub fn originate(&mut self, prefix: IpNet, attrs: PathAttributes) -> RibChanges {
        self.originate_many(&[prefix], attrs)
    }

    /// [`Rib::originate`] for many prefixes with the same attributes, decided and packed
    /// together (one UPDATE per peer for as many prefixes as fit, not one per prefix).
    pub fn originate_many(&mut self, prefixes: &[IpNet], attrs: PathAttributes) -> RibChanges {
        let mut attrs = attrs;
        attrs.origin.get_or_insert(Origin::Igp);
        attrs.as_path = Some(AsPath::default());
        attrs.next_hop = None;
        let info = Arc::new(PathInfo {
            source: RouteSource::Local,
            attrs: self.attr_sets.intern(attrs),
            next_hop: None,
            peer_router_id: self.local.router_id,
        });
        let mut touched = Touched::with_capacity(prefixes.len());
        for prefix in prefixes {
            let path = Path {
                info: Arc::clone(&info),
                ineligible: None,
                selection: Selection::Best,
            };
            let dest = self.tables[AddressFamily::of(prefix).index()]
                .entry(*prefix)
                .or_default();
            dest.touch(*prefix, &mut touched);
            dest.upsert(path);
        }
        self.process(touched)
    }

    /// Withdraws a prefix originated with [`Rib::originate`].
    pub fn withdraw_local(&mut self, prefix: IpNet) -> RibChanges {
        self.withdraw_local_many(&[prefix])
    }

    /// [`Rib::withdraw_local`] for many prefixes, packed together.
    pub fn withdraw_local_many(&mut self, prefixes: &[IpNet]) -> RibChanges {
        let mut touched = Touched::with_capacity(prefixes.len());
        for prefix in prefixes {
            let Some(dest) = self.tables[AddressFamily::of(prefix).index()]
                .get_mut(prefix)
                .filter(|d| d.paths().iter().any(|p| p.source == RouteSource::Local))
            else {
                continue;
            };
            dest.touch(*prefix, &mut touched);
            dest.remove(&RouteSource::Local);
        }
        if touched.is_empty() {
            return RibChanges::default();
        }
        self.process(touched)
    }

    /// Records whether `next_hop` can be reached (RFC 4271 §9.1.2.1: a route whose NEXT_HOP is
    /// unresolvable is excluded from the decision process). The learned routes through it
    /// become ineligible, or eligible again, and the decision runs for their prefixes. The RIB
    /// cannot know this itself; its owner asks the kernel (see [`Rib::next_hops`]).
    pub fn set_next_hop_reachable(&mut self, next_hop: IpAddr, reachable: bool) -> RibChanges {
        let changed = if reachable {
            self.unreachable.remove(&next_hop)
        } else {
            self.unreachable.insert(next_hop)
        };
        if !changed {
            return RibChanges::default();
        }
        let mut touched = Touched::new();
        for table in &mut self.tables {
            for (prefix, dest) in table.iter_mut() {
                if !dest.paths().iter().any(|p| p.next_hop == Some(next_hop)) {
                    continue;
                }
                let before = dest.selected();
                let mut flipped = false;
                for path in dest.paths_mut() {
                    if path.next_hop != Some(next_hop) {
                        continue;
                    }
                    let Some(peer) = path.source.peer() else {
                        continue;
                    };
                    let flip = match (reachable, path.ineligible) {
                        (false, None) => Some(Some(Ineligibility::UnreachableNextHop)),
                        (true, Some(Ineligibility::UnreachableNextHop)) => Some(None),
                        // Another reason stands whatever the next hop does.
                        _ => None,
                    };
                    let Some(new) = flip else {
                        continue;
                    };
                    path.ineligible = new;
                    if let Some(state) = self.peers.get_mut(&peer) {
                        let f = AddressFamily::of(prefix).index();
                        if reachable {
                            state.ineligible[f] -= 1;
                        } else {
                            state.ineligible[f] += 1;
                        }
                    }
                    flipped = true;
                }
                if flipped {
                    touched.push((*prefix, before));
                }
            }
        }
        self.process(touched)
    }

    /// Every next hop of a learned route, for the owner to check with
    /// [`Rib::set_next_hop_reachable`]. Walks the table.
    pub fn next_hops(&self) -> BTreeSet<IpAddr> {
        self.tables
            .iter()
            .flat_map(|t| t.values())
            .flat_map(|d| d.paths().iter())
            .filter(|p| p.source.peer().is_some())
            .filter_map(|p| p.next_hop)
            .collect()
    }

    /// The next hops currently reported unreachable.
    pub fn unreachable_next_hops(&self) -> &BTreeSet<IpAddr> {
        &self.unreachable
    }

    /// Whether `peer`'s Adj-RIB-In holds `prefix` (an announcement of it replaces a route
    /// rather than adding one; the max-prefix limit counts only additions).
    pub fn has_route_from(&self, peer: PeerId, prefix: &IpNet) -> bool {
        self.tables[AddressFamily::of(prefix).index()]
            .get(prefix)
            .is_some_and(|d| {
                d.paths()
                    .iter()
                    .any(|p| matches!(&p.source, RouteSource::Peer { id, .. } if *id == peer))
            })
    }

    /// The best route of `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<BestRoute> {
        self.tables[AddressFamily::of(prefix).index()]
            .get(prefix)?
            .selected()
            .map(|s| s.route())
    }

    /// Every prefix of `family` in prefix order, with its candidates and why each lost.
    pub fn routes(&self, family: AddressFamily) -> impl Iterator<Item = RouteEntry> + '_ {
        self.tables[family.index()].iter().map(|(prefix, dest)| {
            let mut candidates: Vec<Candidate> = dest
                .paths()
                .iter()
                .map(|p| Candidate {
                    source: p.source,
                    attrs: Arc::clone(&p.attrs),
                    next_hop: p.next_hop,
                    selection: p.selection,
                })
                .collect();
            candidates.sort_by_key(|c| match c.selection {
                Selection::Best => 0,
                Selection::Multipath(_) => 1,
                Selection::Lost(_) => 2,
            });
            RouteEntry {
                prefix: *prefix,
                candidates,
            }
        })
    }

    /// Received, accepted and advertised prefix counts of `peer`, all families together.
    pub fn peer_counts(&self, peer: PeerId) -> Option<PeerCounts> {
        let state = self.peers.get(&peer)?;
        let sum = |a: [usize; 2]| a.iter().sum();
        Some(PeerCounts {
            received: sum(state.received),
            accepted: sum(state.received) - sum(state.ineligible),
            advertised: sum(state.advertised),
        })
    }

    /// [`Rib::peer_counts`] of one family.
    pub fn peer_family_counts(&self, peer: PeerId, family: AddressFamily) -> Option<PeerCounts> {
        let state = self.peers.get(&peer)?;
        let f = family.index();
        Some(PeerCounts {
            received: state.received[f],
            accepted: state.received[f] - state.ineligible[f],
            advertised: state.advertised[f],
        })
    }

    /// Reruns the decision for the `touched` prefixes and carries the outcome to the Loc-RIB
    /// consumers and to every established peer: what the old best route exported to a peer
    /// against what the new one exports (its Adj-RIB-Out before and after).
    fn process(&mut self, mut touched: Touched) -> RibChanges {
        // Stable: the first entry of a prefix holds its state before the operation.
        touched.sort_by_key(|t| t.0);
        touched.dedup_by(|later, first| later.0 == first.0);
        let Rib {
            local,
            peers,
            tables,
            attr_sets,
            unreachable: _,
        } = self;
        let mut changes = RibChanges::default();
        // Indexed like `peers` (whose order does not change during this call).
        let mut out: Vec<PendingOut> = Vec::new();
        out.resize_with(peers.len(), Default::default);
        let mut caches: Vec<ExportCache> = Vec::new();
        caches.resize_with(peers.len(), Default::default);

        for (prefix, before) in touched {
            let family = AddressFamily::of(&prefix);
            let table = &mut tables[family.index()];
            let Some(dest) = table.get_mut(&prefix) else {
                continue;
            };
            decision::select(dest.paths_mut(), local.asn);
            let after = dest.selected();
            let old_best = before.as_ref().map(Selected::route);
            let new_best = after.as_ref().map(Selected::route);
            if old_best != new_best {
                changes.best.push(BestChange {
                    prefix,
                    next_hops_changed: next_hops(&old_best) != next_hops(&new_best),
                    new: new_best,
                });
            }

            let (old, new) = (before.map(|s| s.path), after.map(|s| s.path));
            let same_path = match (&old, &new) {
                (None, None) => true,
                (Some(o), Some(n)) => Arc::ptr_eq(&o.info, &n.info),
                _ => false,
            };
            if !same_path {
                for (peer, (cache, (announce, withdraw))) in peers
                    .values_mut()
                    .zip(caches.iter_mut().zip(out.iter_mut()))
                {
                    if !peer.carries(family) {
                        continue;
                    }
                    let mut export = |p: &Option<Path>| {
                        p.as_ref().and_then(|p| {
                            adj_out::export(p, family, &peer.info, local, attr_sets, cache)
                        })
                    };
                    let (was, now) = (export(&old), export(&new));
                    if was == now {
                        continue;
                    }
                    let advertised = &mut peer.advertised[family.index()];
                    match (was.is_some(), now.is_some()) {
                        (false, true) => *advertised += 1,
                        (true, false) => *advertised -= 1,
                        _ => {}
                    }
                    match now {
                        Some(now) => announce.push((prefix, now)),
                        None => withdraw.push(prefix),
                    }
                }
            }

            if dest.is_empty() {
                table.remove(&prefix);
            }
        }

        for ((id, peer), (announce, withdraw)) in peers.iter().zip(out) {
            let Some(session) = &peer.session else {
                continue;
            };
            if announce.is_empty() && withdraw.is_empty() {
                continue;
            }
            let updates = pack_updates(announce, withdraw, &session.encode);
            changes.per_peer_out.insert(*id, updates);
        }
        changes
    }
}

/// The next hops to install for a best route (none for no route or a local one).
fn next_hops(best: &Option<BestRoute>) -> &[IpAddr] {
    best.as_ref().map_or(&[], |b| b.next_hops.as_slice())
}

/// Announcements and withdrawals for one peer, before packing.
type PendingOut = (Vec<(IpNet, OutPath)>, Vec<IpNet>);

fn source_of(info: &PeerInfo) -> RouteSource {
    RouteSource::Peer {
        id: info.id(),
        ibgp: info.ibgp,
        rr_client: info.rr_client,
    }
}

/// The attributes of a received route as the RIB keeps them.
fn ingress_attrs(received: &PathAttributes, peer: &PeerInfo) -> PathAttributes {
    let mut a = received.clone();
    if peer.ibgp {
        // RFC 4271 §5.1.5: LOCAL_PREF is mandatory on iBGP; if a peer leaves it out we use
        // the default rather than dropping the route.
        a.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
    } else {
        // RFC 4271 §5.1.5: a LOCAL_PREF from an external peer is ignored (the decoder already
        // discards it, RFC 7606 §7.5; this holds whatever decoded the UPDATE).
        a.local_pref = None;
    }
    a
}

/// The loop checks that make a route ineligible (RFC 4271 §9.1.2, RFC 4456 §8).
fn ineligibility(attrs: &PathAttributes, local: &LocalInfo) -> Option<Ineligibility> {
    if attrs
        .as_path
        .as_ref()
        .is_some_and(|p| p.contains(local.asn))
    {
        return Some(Ineligibility::AsLoop);
    }
    if attrs.originator_id == Some(local.router_id) {
        return Some(Ineligibility::OriginatorIdLoop);
    }
    let cluster_id = local.cluster_id.unwrap_or(local.router_id);
    if attrs.cluster_list.contains(&cluster_id) {
        return Some(Ineligibility::ClusterLoop);
    }
    None
}
