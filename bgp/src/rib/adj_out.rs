//! Adj-RIB-Out: which best routes go to which peer, the attributes they carry there
//! (RFC 4271 §5.1, §9.2), and packing them into UPDATEs under the 4096-octet limit.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::attr_set::AttrSets;
use super::decision::Path;
use super::types::{AddressFamily, LocalInfo, PeerInfo, RouteSource, DEFAULT_LOCAL_PREF};
use crate::packet::{self, AsPath, EncodeContext, Message, MpReach, PathAttributes};
use crate::packet::{Origin, Update};

/// The largest BGP message (RFC 4271 §4.1).
const MAX_MESSAGE_LEN: usize = 4096;
/// Marker, length and type (RFC 4271 §4.1) plus the two UPDATE length fields (§4.3).
const EMPTY_UPDATE_LEN: usize = 19 + 2 + 2;

/// A route as announced to one peer: its attributes there and its next hop (in NEXT_HOP for
/// IPv4, in MP_REACH_NLRI for IPv6).
#[derive(Debug, Clone, Eq)]
pub struct OutPath {
    pub attrs: Arc<PathAttributes>,
    pub next_hop: IpAddr,
}

impl PartialEq for OutPath {
    fn eq(&self, other: &Self) -> bool {
        // Interned sets make the pointer test the usual answer.
        self.next_hop == other.next_hop
            && (Arc::ptr_eq(&self.attrs, &other.attrs) || self.attrs == other.attrs)
    }
}

/// Whether a route from `source` may be announced to `target` (before the per-family and
/// AS_PATH checks of the export itself).
///
/// - Never back to the peer it came from: an eBGP peer would drop it as a loop (RFC 4271
///   §9.1.2), an iBGP peer already has it.
/// - iBGP-learned routes are not sent to iBGP peers (RFC 4271 §9.2) unless reflecting
///   (route reflection, RFC 4456 §6: from a client to every iBGP peer, from a non-client to
///   the clients).
pub fn should_export(source: &RouteSource, target: &PeerInfo, _local: &LocalInfo) -> bool {
    match *source {
        RouteSource::Local => true,
        RouteSource::Peer {
            id,
            ibgp,
            rr_client,
        } => {
            if id == target.id() {
                return false;
            }
            if ibgp && target.ibgp {
                return reflect(rr_client, target);
            }
            true
        }
    }
}

/// Route reflection (RFC 4456 §6): whether an iBGP-learned route (from a client if
/// `from_client`) is reflected to the iBGP peer `target`. A route from a client goes to every
/// iBGP peer, clients and non-clients; a route from a non-client only to clients. Without
/// clients configured nothing is reflected: plain RFC 4271 §9.2. ORIGINATOR_ID and
/// CLUSTER_LIST are set by [`export`] (RFC 4456 §8).
fn reflect(from_client: bool, target: &PeerInfo) -> bool {
    from_client || target.rr_client
}

/// Per-peer memo of attribute transformations within one batch: every prefix that shares a
/// source attribute set and next hop shares the exported set, so 100,000 prefixes from one
/// UPDATE cost one transformation per peer.
#[derive(Default)]
pub(crate) struct ExportCache {
    /// (source set address, local route, next hop) -> (source set, exported set). The source
    /// `Arc` is held so that its address cannot be reused while the cache lives.
    map: HashMap<ExportKey, (Arc<PathAttributes>, Arc<PathAttributes>)>,
    /// The last answer: consecutive prefixes usually come from one UPDATE.
    last: Option<(ExportKey, Arc<PathAttributes>)>,
}

/// (source set address, local route, next hop, ORIGINATOR_ID of a reflected route).
type ExportKey = (usize, bool, IpAddr, Option<Ipv4Addr>);

/// The route `best` (for a prefix of `family`) as announced to `target`, or `None` if it is
/// not announced there.
pub(crate) fn export(
    best: &Path,
    family: AddressFamily,
    target: &PeerInfo,
    local: &LocalInfo,
    sets: &mut AttrSets,
    cache: &mut ExportCache,
) -> Option<OutPath> {
    if !should_export(&best.source, target, local) {
        return None;
    }
    let is_local = best.source == RouteSource::Local;
    // Sender-side loop avoidance: the peer would drop a path holding its own AS (RFC 4271
    // §9.1.2), so it is not sent. BIRD sends it and lets the peer drop it; GoBGP does this.
    if !target.ibgp
        && best
            .attrs
            .as_path
            .as_ref()
            .is_some_and(|p| p.contains(target.asn))
    {
        return None;
    }
    // RFC 4271 §5.1.3: to eBGP peers we always announce ourselves (no third-party next hop).
    // To iBGP peers, learned routes keep their next hop (the eBGP border's, as BIRD and
    // GoBGP do by default); local routes carry ours. `next hop keep` does the same over eBGP.
    let next_hop = if (target.ibgp || target.next_hop_keep) && !is_local {
        best.next_hop.filter(|nh| family.matches(*nh))?
    } else {
        target.next_hop_self(family)?
    };

    // Reflected (iBGP to iBGP, RFC 4456 §8): ORIGINATOR_ID is the router that brought the
    // route into the AS, kept if already set, else the peer we learned it from.
    let originator = match best.source {
        RouteSource::Peer { ibgp: true, .. } if target.ibgp => {
            Some(best.attrs.originator_id.unwrap_or(best.peer_router_id))
        }
        _ => None,
    };
    // Not back to the router that brought it into the AS: it would drop it (RFC 4456 §8).
    if originator.is_some() && originator == Some(target.router_id) {
        return None;
    }
    let key = (
        Arc::as_ptr(&best.attrs) as usize,
        is_local,
        next_hop,
        originator,
    );
    let out = match &cache.last {
        Some((k, out)) if *k == key => Arc::clone(out),
        _ => {
            let out = match cache.map.get(&key) {
                Some((_, out)) => Arc::clone(out),
                None => {
                    let out = sets.intern(export_attrs(
                        &best.attrs,
                        is_local,
                        target,
                        local,
                        next_hop,
                        originator,
                    ));
                    cache
                        .map
                        .insert(key, (Arc::clone(&best.attrs), Arc::clone(&out)));
                    out
                }
            };
            cache.last = Some((key, Arc::clone(&out)));
            out
        }
    };
    Some(OutPath {
        attrs: out,
        next_hop,
    })
}

fn export_attrs(
    src: &PathAttributes,
    is_local: bool,
    target: &PeerInfo,
    local: &LocalInfo,
    next_hop: IpAddr,
    reflected_from: Option<Ipv4Addr>,
) -> PathAttributes {
    let mut a = src.clone();
    if let Some(originator) = reflected_from {
        // RFC 4456 §8: ORIGINATOR_ID set once, our CLUSTER_ID prepended to CLUSTER_LIST.
        a.originator_id = Some(originator);
        a.cluster_list
            .insert(0, local.cluster_id.unwrap_or(local.router_id));
    }
    // NEXT_HOP for IPv4; IPv6 carries it in MP_REACH_NLRI and sends no NEXT_HOP (RFC 4760 §3).
    a.next_hop = match next_hop {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    };
    if target.ibgp {
        // RFC 4271 §5.1.5: LOCAL_PREF is sent to every internal peer.
        a.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        a.as_path.get_or_insert_with(AsPath::default);
    } else {
        // RFC 4271 §5.1.2: prepend our AS towards an external peer.
        let mut path = a.as_path.take().unwrap_or_default();
        path.prepend(local.asn);
        a.as_path = Some(path);
        // RFC 4271 §5.1.5: no LOCAL_PREF to external peers.
        a.local_pref = None;
        // RFC 4271 §5.1.4: a MED learned from another AS is not propagated to other ASes. We
        // cannot tell a MED set inside our AS from one received from outside, so only the
        // MED of our own routes goes out.
        if !is_local {
            a.med = None;
        }
        // ORIGINATOR_ID and CLUSTER_LIST are internal to the AS (RFC 4456 §8; receivers
        // discard them from external peers, RFC 7606 §7.9-7.10).
        a.originator_id = None;
        a.cluster_list.clear();
    }
    if is_local {
        a.origin.get_or_insert(Origin::Igp);
    }
    a
}

/// Packs announcements and withdrawals into UPDATEs of at most 4096 octets each, as
/// `packet::encode` would write them for a session with `ctx`.
///
/// Prefixes that share an [`OutPath`] go in the same UPDATEs, in the order they first appear;
/// IPv4 in the classic fields, IPv6 in MP_REACH_NLRI / MP_UNREACH_NLRI. Withdrawals come
/// first. A route whose attributes alone do not fit in a message (or cannot be encoded) is
/// withdrawn instead, so the peer is not left with an older version of it.
pub fn pack_updates(
    announce: Vec<(IpNet, OutPath)>,
    withdraw: Vec<IpNet>,
    ctx: &EncodeContext,
) -> Vec<Update> {
    let mut withdraw = withdraw;
    let mut announcements = Vec::new();

    let mut index: HashMap<(usize, IpAddr), usize> = HashMap::new();
    let mut last: Option<((usize, IpAddr), usize)> = None;
    let mut groups: Vec<(OutPath, Vec<IpNet>)> = Vec::new();
    for (prefix, out) in announce {
        if !AddressFamily::of(&prefix).matches(out.next_hop) {
            withdraw.push(prefix);
            continue;
        }
        let key = (Arc::as_ptr(&out.attrs) as usize, out.next_hop);
        let slot = match last {
            Some((k, slot)) if k == key => slot,
            _ => {
                let slot = *index.entry(key).or_insert_with(|| {
                    groups.push((out, Vec::new()));
                    groups.len() - 1
                });
                last = Some((key, slot));
                slot
            }
        };
        groups[slot].1.push(prefix);
    }
    for (out, prefixes) in groups {
        let mut skeleton = Update {
            attributes: (*out.attrs).clone(),
            ..Default::default()
        };
        let v6 = out.next_hop.is_ipv6();
        if v6 {
            skeleton.mp_reach = Some(MpReach {
                afi: packet::Afi::IPV6,
                safi: packet::Safi::UNICAST,
                next_hop: out.next_hop,
                link_local_next_hop: None,
                nlri: Vec::new(),
            });
        }
        let Some(budget) = budget(&skeleton, v6, ctx) else {
            withdraw.extend(prefixes);
            continue;
        };
        for chunk in chunks(&prefixes, budget) {
            let mut u = skeleton.clone();
            match &mut u.mp_reach {
                Some(mp) => mp.nlri = chunk,
                None => u.nlri = chunk,
            }
            announcements.push(u);
        }
    }

    let mut out = Vec::new();
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = withdraw
        .into_iter()
        .partition(|p| matches!(p, IpNet::V4(_)));
    if !v4.is_empty() {
        for chunk in chunks(&v4, MAX_MESSAGE_LEN - EMPTY_UPDATE_LEN) {
            out.push(Update {
                withdrawn: chunk,
                ..Default::default()
            });
        }
    }
    if !v6.is_empty() {
        let skeleton = Update::end_of_rib_marker(packet::Afi::IPV6, packet::Safi::UNICAST);
        // An empty MP_UNREACH_NLRI always encodes.
        let budget = budget(&skeleton, true, ctx).unwrap_or(0);
        for chunk in chunks(&v6, budget) {
            let mut u = skeleton.clone();
            if let Some(mp) = &mut u.mp_unreach {
                mp.withdrawn = chunk;
            }
            out.push(u);
        }
    }
    out.extend(announcements);
    out
}

/// The octets left for prefixes in an UPDATE built on `skeleton`, measured with the encoder.
/// An MP attribute may switch to an extended (2-octet) length as it grows: one octet is kept
/// for that. `None` if not even one prefix fits.
fn budget(skeleton: &Update, mp: bool, ctx: &EncodeContext) -> Option<usize> {
    let base = packet::encode(&Message::Update(skeleton.clone()), ctx)
        .ok()?
        .len();
    let budget = MAX_MESSAGE_LEN.checked_sub(base + usize::from(mp))?;
    // The longest prefix: one length octet and 16 address octets.
    (budget >= 17).then_some(budget)
}

/// NLRI size of one prefix (RFC 4271 §4.3, RFC 4760 §5).
fn prefix_len(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Splits `prefixes` into runs whose NLRI encodings fit in `budget` octets each.
fn chunks(prefixes: &[IpNet], budget: usize) -> Vec<Vec<IpNet>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for p in prefixes {
        let len = prefix_len(p);
        if used + len > budget && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(*p);
        used += len;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The End-of-RIB marker of `family` (RFC 4724 §2).
pub(crate) fn end_of_rib(family: AddressFamily) -> Update {
    let (afi, safi) = family.afi_safi();
    Update::end_of_rib_marker(afi, safi)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::packet::{decode, DecodeContext};

    fn out_v4(med: u32) -> OutPath {
        OutPath {
            attrs: Arc::new(PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(vec![65000, 65001])),
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                med: Some(med),
                communities: vec![1, 2, 3],
                ..Default::default()
            }),
            next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        }
    }

    fn out_v6() -> OutPath {
        OutPath {
            attrs: Arc::new(PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(vec![65000])),
                ..Default::default()
            }),
            next_hop: IpAddr::V6("2001:db8::1".parse().unwrap()),
        }
    }

    /// Encodes every UPDATE, checks the 4096-octet limit, decodes it back, and returns the
    /// announced and withdrawn prefixes in order.
    fn round_trip(updates: &[Update], ctx: &EncodeContext) -> (Vec<IpNet>, Vec<IpNet>) {
        let dctx = DecodeContext {
            four_octet_as: ctx.four_octet_as,
            ..Default::default()
        };
        let (mut announced, mut withdrawn) = (Vec::new(), Vec::new());
        for u in updates {
            let bytes = packet::encode(&Message::Update(u.clone()), ctx).unwrap();
            assert!(bytes.len() <= MAX_MESSAGE_LEN);
            let Some((Message::Update(d), _)) = decode(&bytes, &dctx).unwrap() else {
                panic!("not an UPDATE");
            };
            assert!(d.errors.is_empty(), "{:?}", d.errors);
            announced.extend(d.nlri);
            announced.extend(d.mp_reach.map(|m| m.nlri).unwrap_or_default());
            withdrawn.extend(d.withdrawn);
            withdrawn.extend(d.mp_unreach.map(|m| m.withdrawn).unwrap_or_default());
        }
        (announced, withdrawn)
    }

    #[test]
    fn ten_thousand_prefixes_stay_under_4096_octets() {
        for four_octet_as in [true, false] {
            let ctx = EncodeContext { four_octet_as };
            let a = out_v4(1);
            let b = out_v4(2);
            let v6 = out_v6();
            let mut announce = Vec::new();
            let mut expect = Vec::new();
            for i in 0..10_000u32 {
                let p4 = IpNet::V4(
                    ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(),
                );
                let p6 = IpNet::V6(
                    ipnet::Ipv6Net::new(
                        Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64),
                        64,
                    )
                    .unwrap(),
                );
                let out = if i % 2 == 0 { a.clone() } else { b.clone() };
                announce.push((p4, out));
                announce.push((p6, v6.clone()));
                expect.push(p4);
                expect.push(p6);
            }
            let withdraw: Vec<IpNet> = (0..10_000u32)
                .map(|i| {
                    IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + i), 32).unwrap())
                })
                .chain((0..10_000u32).map(|i| {
                    IpNet::V6(
                        ipnet::Ipv6Net::new(
                            Ipv6Addr::from(0x2001_0db9_u128 << 96 | u128::from(i)),
                            128,
                        )
                        .unwrap(),
                    )
                }))
                .collect();
            let updates = pack_updates(announce, withdraw.clone(), &ctx);
            // Three attribute sets: a handful of UPDATEs each, not one per prefix.
            assert!(updates.len() < 200, "{} updates", updates.len());
            let (mut announced, mut withdrawn) = round_trip(&updates, &ctx);
            announced.sort();
            expect.sort();
            withdrawn.sort();
            let mut withdraw = withdraw;
            withdraw.sort();
            assert_eq!(announced, expect);
            assert_eq!(withdrawn, withdraw);
            // Withdrawals first.
            assert!(!updates[0].withdrawn.is_empty());
        }
    }

    #[test]
    fn attributes_too_large_to_send_become_a_withdrawal() {
        let mut out = out_v4(1);
        out.attrs = Arc::new(PathAttributes {
            communities: vec![7; 1100],
            ..(*out.attrs).clone()
        });
        let p: IpNet = "10.1.0.0/16".parse().unwrap();
        let updates = pack_updates(vec![(p, out)], Vec::new(), &EncodeContext::default());
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].withdrawn, vec![p]);
        assert!(updates[0].nlri.is_empty());
    }
}
