//! RIB scenarios: UPDATEs in, best routes and per-peer UPDATEs out.

// A panic is how a test reports.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::fsm::Family;
use crate::packet::{
    encode, AsPath, AttributeError, Message, MpReach, MpUnreach, Origin, Treatment,
};

const LOCAL_ASN: u32 = 65000;

fn local() -> LocalInfo {
    LocalInfo {
        asn: LOCAL_ASN,
        router_id: Ipv4Addr::new(10, 255, 0, 1),
        cluster_id: None,
    }
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// eBGP peers 192.0.2.N in AS 6500N; iBGP peers 10.0.0.N.
fn ebgp_peer(n: u8) -> PeerInfo {
    PeerInfo {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
        router_id: Ipv4Addr::new(1, 1, 1, n),
        asn: 65000 + u32::from(n),
        ibgp: false,
        rr_client: false,
        local_address: v4("192.0.2.254"),
        next_hop_v6: Some("2001:db8:ffff::254".parse().unwrap()),
        next_hop_keep: false,
    }
}

fn ibgp_peer(n: u8) -> PeerInfo {
    PeerInfo {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        router_id: Ipv4Addr::new(2, 2, 2, n),
        asn: LOCAL_ASN,
        ibgp: true,
        rr_client: false,
        local_address: v4("10.0.0.254"),
        next_hop_v6: None,
        next_hop_keep: false,
    }
}

fn session(info: &PeerInfo) -> NegotiatedSession {
    NegotiatedSession {
        peer_asn: info.asn,
        peer_router_id: info.router_id,
        ibgp: info.ibgp,
        hold_time: 90,
        keepalive: 30,
        four_octet_as: true,
        route_refresh: true,
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        peer_graceful_restart: None,
    }
}

/// A RIB with the given peers configured and established.
fn rib_with(peers: &[PeerInfo]) -> Rib {
    let mut rib = Rib::new(local());
    for p in peers {
        rib.add_peer(p.clone()).unwrap();
        rib.peer_up(p.id(), &session(p)).unwrap();
    }
    rib
}

fn attrs(path: &[u32], next_hop: &str) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.to_vec())),
        next_hop: Some(next_hop.parse().unwrap()),
        ..Default::default()
    }
}

fn announce(prefixes: &[&str], attributes: PathAttributes) -> Update {
    Update {
        attributes,
        nlri: prefixes.iter().map(|p| net(p)).collect(),
        ..Default::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|p| net(p)).collect(),
        ..Default::default()
    }
}

/// (announced prefixes with their attributes and next hop, withdrawn prefixes) in `updates`.
fn flatten(updates: &[Update]) -> (Vec<(IpNet, PathAttributes, IpAddr)>, Vec<IpNet>) {
    let (mut ann, mut wd) = (Vec::new(), Vec::new());
    for u in updates {
        // Everything the RIB emits must encode.
        encode(&Message::Update(u.clone()), &Default::default()).unwrap();
        for p in &u.nlri {
            let nh = IpAddr::V4(u.attributes.next_hop.unwrap());
            ann.push((*p, u.attributes.clone(), nh));
        }
        if let Some(mp) = &u.mp_reach {
            for p in &mp.nlri {
                ann.push((*p, u.attributes.clone(), mp.next_hop));
            }
        }
        wd.extend_from_slice(&u.withdrawn);
        if let Some(mp) = &u.mp_unreach {
            wd.extend_from_slice(&mp.withdrawn);
        }
    }
    (ann, wd)
}

fn out_for(
    changes: &RibChanges,
    peer: &PeerInfo,
) -> (Vec<(IpNet, PathAttributes, IpAddr)>, Vec<IpNet>) {
    flatten(
        changes
            .per_peer_out
            .get(&peer.id())
            .map_or(&[][..], Vec::as_slice),
    )
}

#[test]
fn ebgp_route_becomes_best_and_is_exported_with_ebgp_and_ibgp_rules() {
    let (e1, e2, i1) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), e2.clone(), i1.clone()]);
    let mut a = attrs(&[65001, 65100], "192.0.2.1");
    a.med = Some(50);
    a.communities = vec![0xfde8_0001];
    let ch = rib
        .apply_update(e1.id(), &announce(&["203.0.113.0/24"], a))
        .unwrap();

    assert_eq!(ch.best.len(), 1);
    let best = ch.best[0].new.as_ref().unwrap();
    assert_eq!(best.next_hops, vec![v4("192.0.2.1")]);
    assert_eq!(best.source.peer(), Some(e1.id()));
    // eBGP: LOCAL_PREF absent (treated as 100).
    assert_eq!(best.attrs.local_pref, None);

    // To the other eBGP peer: our AS prepended, next hop self, no LOCAL_PREF, no MED
    // (RFC 4271 §5.1.4), communities kept.
    let (ann, wd) = out_for(&ch, &e2);
    assert!(wd.is_empty());
    let (p, out, nh) = &ann[0];
    assert_eq!(*p, net("203.0.113.0/24"));
    assert_eq!(*nh, v4("192.0.2.254"));
    assert_eq!(
        out.as_path,
        Some(AsPath::from_sequence(vec![65000, 65001, 65100]))
    );
    assert_eq!(out.local_pref, None);
    assert_eq!(out.med, None);
    assert_eq!(out.communities, vec![0xfde8_0001]);

    // To the iBGP peer: next hop unchanged, LOCAL_PREF 100, MED kept, no prepend.
    let (ann, _) = out_for(&ch, &i1);
    let (_, out, nh) = &ann[0];
    assert_eq!(*nh, v4("192.0.2.1"));
    assert_eq!(out.local_pref, Some(100));
    assert_eq!(out.med, Some(50));
    assert_eq!(out.as_path, Some(AsPath::from_sequence(vec![65001, 65100])));

    // Never back to the source.
    assert!(!ch.per_peer_out.contains_key(&e1.id()));
    assert_eq!(
        rib.peer_counts(e1.id()),
        Some(PeerCounts {
            received: 1,
            accepted: 1,
            advertised: 0
        })
    );
    assert_eq!(rib.peer_counts(e2.id()).unwrap().advertised, 1);
}

#[test]
fn next_hop_keep_announces_learned_routes_with_their_next_hop_over_ebgp() {
    let keep = PeerInfo {
        next_hop_keep: true,
        ..ebgp_peer(3)
    };
    let (e1, i1) = (ebgp_peer(1), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), i1.clone(), keep.clone()]);
    let ch = rib
        .apply_update(
            e1.id(),
            &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
        )
        .unwrap();
    let (ann, _) = out_for(&ch, &keep);
    assert_eq!(ann[0].2, v4("192.0.2.1"), "the eBGP peer's next hop kept");
    assert_eq!(
        ann[0].1.as_path,
        Some(AsPath::from_sequence(vec![65000, 65001])),
        "still eBGP: our AS prepended"
    );
    // A route of our own still carries our address.
    let ch = rib.originate(net("198.51.100.0/24"), PathAttributes::default());
    let (ann, _) = out_for(&ch, &keep);
    assert_eq!(ann[0].2, v4("192.0.2.254"));
}

#[test]
fn ibgp_route_is_not_exported_to_ibgp_peers() {
    let (e1, i1, i2) = (ebgp_peer(1), ibgp_peer(1), ibgp_peer(2));
    let mut rib = rib_with(&[e1.clone(), i1.clone(), i2.clone()]);
    let a = attrs(&[65100], "10.0.0.1");
    let ch = rib
        .apply_update(i1.id(), &announce(&["198.51.100.0/24"], a))
        .unwrap();
    assert_eq!(ch.best.len(), 1);
    assert!(!ch.per_peer_out.contains_key(&i2.id()), "RFC 4271 §9.2");
    assert!(!ch.per_peer_out.contains_key(&i1.id()));
    let (ann, _) = out_for(&ch, &e1);
    assert_eq!(ann.len(), 1);
    assert_eq!(
        ann[0].1.as_path,
        Some(AsPath::from_sequence(vec![65000, 65100]))
    );
}

#[test]
fn should_export_table() {
    let l = local();
    let (e1, e2, i1, i2) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1), ibgp_peer(2));
    let from = |p: &PeerInfo| RouteSource::Peer {
        id: p.id(),
        ibgp: p.ibgp,
        rr_client: false,
    };
    let cases = [
        (RouteSource::Local, &e1, true),
        (RouteSource::Local, &i1, true),
        (from(&e1), &e1, false),
        (from(&e1), &e2, true),
        (from(&e1), &i1, true),
        (from(&i1), &e1, true),
        (from(&i1), &i1, false),
        (from(&i1), &i2, false),
    ];
    for (source, target, expect) in cases {
        assert_eq!(
            should_export(&source, target, &l),
            expect,
            "{source:?} -> {}",
            target.address
        );
    }
}

#[test]
fn ibgp_local_pref_defaults_to_100_and_ebgp_local_pref_is_ignored() {
    let (e1, i1) = (ebgp_peer(1), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), i1.clone()]);
    let mut from_ebgp = attrs(&[65001], "192.0.2.1");
    // Whatever decoded it, an eBGP LOCAL_PREF does not count (RFC 4271 §5.1.5).
    from_ebgp.local_pref = Some(1000);
    rib.apply_update(e1.id(), &announce(&["203.0.113.0/24"], from_ebgp))
        .unwrap();
    // iBGP without LOCAL_PREF gets 100. Both paths have length 1, so LOCAL_PREF ties at 100
    // (the eBGP 1000 did not count) and eBGP over iBGP decides.
    rib.apply_update(
        i1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65009], "10.0.0.1")),
    )
    .unwrap();
    let entry = rib.routes(AddressFamily::Ipv4Unicast).next().unwrap();
    assert_eq!(entry.candidates[0].source.peer(), Some(e1.id()));
    assert_eq!(entry.candidates[0].attrs.local_pref, None);
    assert_eq!(entry.candidates[1].attrs.local_pref, Some(100));
    assert_eq!(
        entry.candidates[1].selection,
        Selection::Lost(LossReason::EbgpOverIbgp)
    );
}

#[test]
fn as_loop_is_kept_ineligible_with_its_reason() {
    let (e1, e2) = (ebgp_peer(1), ebgp_peer(2));
    let mut rib = rib_with(&[e1.clone(), e2.clone()]);
    let ch = rib
        .apply_update(
            e1.id(),
            &announce(
                &["203.0.113.0/24"],
                attrs(&[65001, 65000, 65100], "192.0.2.1"),
            ),
        )
        .unwrap();
    assert!(ch.is_empty(), "{ch:?}");
    let entry = rib.routes(AddressFamily::Ipv4Unicast).next().unwrap();
    assert_eq!(
        entry.candidates[0].selection,
        Selection::Lost(LossReason::Ineligible(Ineligibility::AsLoop))
    );
    assert_eq!(
        rib.peer_counts(e1.id()),
        Some(PeerCounts {
            received: 1,
            accepted: 0,
            advertised: 0
        })
    );
    // A clean replacement makes it eligible; the counters follow.
    let ch = rib
        .apply_update(
            e1.id(),
            &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
        )
        .unwrap();
    assert_eq!(ch.best.len(), 1);
    assert_eq!(rib.peer_counts(e1.id()).unwrap().accepted, 1);
}

#[test]
fn treat_as_withdraw_withdraws_the_announced_prefixes() {
    let (e1, e2) = (ebgp_peer(1), ebgp_peer(2));
    let mut rib = rib_with(&[e1.clone(), e2.clone()]);
    rib.apply_update(
        e1.id(),
        &announce(
            &["203.0.113.0/24", "198.51.100.0/24"],
            attrs(&[65001], "192.0.2.1"),
        ),
    )
    .unwrap();
    let mut bad = announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1"));
    bad.errors.push(AttributeError {
        type_code: 4,
        treatment: Treatment::TreatAsWithdraw,
        reason: "MULTI_EXIT_DISC length is not 4",
    });
    let ch = rib.apply_update(e1.id(), &bad).unwrap();
    assert_eq!(
        ch.best,
        vec![BestChange {
            prefix: net("203.0.113.0/24"),
            new: None,
            next_hops_changed: true,
        }]
    );
    assert_eq!(out_for(&ch, &e2).1, vec![net("203.0.113.0/24")]);
    assert!(rib.best(&net("198.51.100.0/24")).is_some());
    assert_eq!(rib.peer_counts(e1.id()).unwrap().received, 1);

    // Attribute-discard: the route stands.
    let mut discarded = announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1"));
    discarded.errors.push(AttributeError {
        type_code: 7,
        treatment: Treatment::AttributeDiscard,
        reason: "AGGREGATOR AS is 0",
    });
    let ch = rib.apply_update(e1.id(), &discarded).unwrap();
    assert_eq!(ch.best.len(), 1);
    assert!(ch.best[0].new.is_some());
}

#[test]
fn equal_ebgp_paths_are_grouped_for_ecmp() {
    let (e1, e2, i1) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), e2.clone(), i1.clone()]);
    // Same neighbour AS behind both peers (two links to one AS), same attributes otherwise.
    rib.apply_update(
        e1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65100], "192.0.2.1")),
    )
    .unwrap();
    let ch = rib
        .apply_update(
            e2.id(),
            &announce(&["203.0.113.0/24"], attrs(&[65100], "192.0.2.2")),
        )
        .unwrap();
    let best = ch.best[0].new.as_ref().unwrap();
    // Peer 1 has the lower router ID: best, and first.
    assert_eq!(best.source.peer(), Some(e1.id()));
    assert_eq!(best.next_hops, vec![v4("192.0.2.1"), v4("192.0.2.2")]);
    // The exported best did not change: nothing new for the iBGP peer.
    assert!(!ch.per_peer_out.contains_key(&i1.id()));
    let entry = rib.routes(AddressFamily::Ipv4Unicast).next().unwrap();
    assert_eq!(entry.candidates[0].selection, Selection::Best);
    assert_eq!(
        entry.candidates[1].selection,
        Selection::Multipath(LossReason::RouterId)
    );
}

#[test]
fn an_unreachable_next_hop_takes_its_routes_out_of_the_decision() {
    let (e1, e2) = (ebgp_peer(1), ebgp_peer(2));
    let mut rib = rib_with(&[e1.clone(), e2.clone()]);
    rib.apply_update(
        e1.id(),
        &announce(
            &["203.0.113.0/24", "198.51.100.0/24"],
            attrs(&[65100], "192.0.2.1"),
        ),
    )
    .unwrap();
    // A longer path through a next hop that stays reachable.
    rib.apply_update(
        e2.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65200, 65201], "192.0.2.2")),
    )
    .unwrap();
    assert_eq!(
        rib.next_hops().into_iter().collect::<Vec<_>>(),
        vec![v4("192.0.2.1"), v4("192.0.2.2")]
    );

    let ch = rib.set_next_hop_reachable(v4("192.0.2.1"), false);
    // 203.0.113.0/24 falls back to peer 2; 198.51.100.0/24 has no route left.
    let by_prefix = |p: &str| ch.best.iter().find(|c| c.prefix == net(p)).unwrap();
    let fallback = by_prefix("203.0.113.0/24");
    assert_eq!(
        fallback.new.as_ref().unwrap().next_hops,
        vec![v4("192.0.2.2")]
    );
    assert!(fallback.next_hops_changed);
    assert!(by_prefix("198.51.100.0/24").new.is_none());
    let counts = rib.peer_counts(e1.id()).unwrap();
    assert_eq!((counts.received, counts.accepted), (2, 0));
    let entry = rib.routes(AddressFamily::Ipv4Unicast).last().unwrap();
    assert_eq!(
        entry.candidates[1].selection,
        Selection::Lost(LossReason::Ineligible(Ineligibility::UnreachableNextHop))
    );
    // Reported again: nothing to do.
    assert!(rib
        .set_next_hop_reachable(v4("192.0.2.1"), false)
        .is_empty());

    // A route learned meanwhile through it is ineligible from the start.
    rib.apply_update(
        e1.id(),
        &announce(&["192.0.2.128/25"], attrs(&[65100], "192.0.2.1")),
    )
    .unwrap();
    assert!(rib.best(&net("192.0.2.128/25")).is_none());

    // Reachable again: everything through it is back, the best as before.
    let ch = rib.set_next_hop_reachable(v4("192.0.2.1"), true);
    assert_eq!(ch.best.len(), 3);
    assert_eq!(
        rib.best(&net("203.0.113.0/24")).unwrap().next_hops,
        vec![v4("192.0.2.1")]
    );
    let counts = rib.peer_counts(e1.id()).unwrap();
    assert_eq!((counts.received, counts.accepted), (3, 3));
    assert!(rib.unreachable_next_hops().is_empty());
}

#[test]
fn peer_down_removes_its_routes_and_the_best_falls_back() {
    let (e1, e2, i1) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), e2.clone(), i1.clone()]);
    rib.apply_update(
        e1.id(),
        &announce(
            &["203.0.113.0/24", "198.51.100.0/24"],
            attrs(&[65001], "192.0.2.1"),
        ),
    )
    .unwrap();
    rib.apply_update(
        e2.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65002, 65003], "192.0.2.2")),
    )
    .unwrap();
    assert_eq!(
        rib.best(&net("203.0.113.0/24")).unwrap().source.peer(),
        Some(e1.id())
    );

    let ch = rib.peer_down(e1.id()).unwrap();
    assert_eq!(ch.best.len(), 2);
    let fallback = ch
        .best
        .iter()
        .find(|c| c.prefix == net("203.0.113.0/24"))
        .unwrap();
    assert_eq!(fallback.new.as_ref().unwrap().source.peer(), Some(e2.id()));
    let gone = ch
        .best
        .iter()
        .find(|c| c.prefix == net("198.51.100.0/24"))
        .unwrap();
    assert_eq!(gone.new, None);

    // The iBGP peer gets the new path and the withdrawal; e1 (down) gets nothing; e2 gets
    // the withdrawal of what it had from e1 and nothing of its own route back.
    let (ann, wd) = out_for(&ch, &i1);
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].2, v4("192.0.2.2"));
    assert_eq!(wd, vec![net("198.51.100.0/24")]);
    assert!(!ch.per_peer_out.contains_key(&e1.id()));
    let (ann, wd) = out_for(&ch, &e2);
    assert!(ann.is_empty());
    assert_eq!(wd.len(), 2);

    assert_eq!(rib.peer_counts(e1.id()), Some(PeerCounts::default()));
    assert_eq!(rib.routes(AddressFamily::Ipv4Unicast).count(), 1);
    assert_eq!(
        rib.apply_update(e1.id(), &withdraw(&[])),
        Err(RibError::PeerNotUp(e1.id()))
    );
}

#[test]
fn origination_and_withdrawal_reach_every_peer() {
    let (e1, e2, i1, i2) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1), ibgp_peer(2));
    let mut rib = rib_with(&[e1.clone(), e2.clone(), i1.clone(), i2.clone()]);
    let ch = rib.originate(
        net("10.244.0.0/26"),
        PathAttributes {
            med: Some(7),
            ..Default::default()
        },
    );
    let best = ch.best[0].new.as_ref().unwrap();
    assert_eq!(best.source, RouteSource::Local);
    assert!(best.next_hops.is_empty());
    for p in [&e1, &e2] {
        let (ann, _) = out_for(&ch, p);
        let (_, a, nh) = &ann[0];
        assert_eq!(*nh, v4("192.0.2.254"));
        assert_eq!(a.as_path, Some(AsPath::from_sequence(vec![65000])));
        assert_eq!(a.origin, Some(Origin::Igp));
        // Our own MED goes out.
        assert_eq!(a.med, Some(7));
        assert_eq!(a.local_pref, None);
    }
    for p in [&i1, &i2] {
        let (ann, _) = out_for(&ch, p);
        let (_, a, nh) = &ann[0];
        assert_eq!(*nh, v4("10.0.0.254"), "next-hop self for local routes");
        assert_eq!(a.as_path, Some(AsPath::default()));
        assert_eq!(a.local_pref, Some(100));
    }

    // A learned copy loses to the local route.
    rib.apply_update(
        e1.id(),
        &announce(&["10.244.0.0/26"], attrs(&[65001], "192.0.2.1")),
    )
    .unwrap();
    let entry = rib.routes(AddressFamily::Ipv4Unicast).next().unwrap();
    assert_eq!(entry.candidates[0].source, RouteSource::Local);
    assert_eq!(
        entry.candidates[1].selection,
        Selection::Lost(LossReason::LocallyOriginated)
    );

    // Withdrawing the local route: the learned one takes over, e1 gets a withdrawal, the
    // others the learned route.
    let ch = rib.withdraw_local(net("10.244.0.0/26"));
    assert_eq!(
        ch.best[0].new.as_ref().unwrap().source.peer(),
        Some(e1.id())
    );
    assert_eq!(out_for(&ch, &e1), (vec![], vec![net("10.244.0.0/26")]));
    for p in [&e2, &i1, &i2] {
        let (ann, wd) = out_for(&ch, p);
        assert_eq!(ann.len(), 1, "{}", p.address);
        assert!(wd.is_empty());
    }

    // Withdrawing the learned one as well: every peer that had it gets a withdrawal.
    let ch = rib
        .apply_update(e1.id(), &withdraw(&["10.244.0.0/26"]))
        .unwrap();
    for p in [&e2, &i1, &i2] {
        assert_eq!(out_for(&ch, p), (vec![], vec![net("10.244.0.0/26")]));
    }
    assert!(rib.withdraw_local(net("10.244.0.0/26")).is_empty());
}

#[test]
fn ebgp_export_skips_paths_through_the_peers_as() {
    let (e1, e2) = (ebgp_peer(1), ebgp_peer(2));
    let mut rib = rib_with(&[e1.clone(), e2.clone()]);
    let ch = rib
        .apply_update(
            e1.id(),
            &announce(&["203.0.113.0/24"], attrs(&[65001, 65002], "192.0.2.1")),
        )
        .unwrap();
    assert_eq!(ch.best.len(), 1);
    assert!(ch.per_peer_out.is_empty());
}

#[test]
fn ipv6_via_mp_reach_and_mp_unreach() {
    let (e1, e2, i1) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), e2.clone(), i1.clone()]);
    let nh: IpAddr = "2001:db8:1::1".parse().unwrap();
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65001])),
            ..Default::default()
        },
        mp_reach: Some(MpReach {
            afi: crate::packet::Afi::IPV6,
            safi: crate::packet::Safi::UNICAST,
            next_hop: nh,
            link_local_next_hop: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            nlri: vec![net("2001:db8:100::/48"), net("2001:db8:200::/48")],
        }),
        ..Default::default()
    };
    let ch = rib.apply_update(e1.id(), &update).unwrap();
    assert_eq!(ch.best.len(), 2);
    assert_eq!(ch.best[0].new.as_ref().unwrap().next_hops, vec![nh]);

    // eBGP: MP_REACH with our configured IPv6 next hop, no NEXT_HOP attribute.
    let updates = &ch.per_peer_out[&e2.id()];
    assert_eq!(updates.len(), 1);
    let mp = updates[0].mp_reach.as_ref().unwrap();
    assert_eq!(mp.next_hop, "2001:db8:ffff::254".parse::<IpAddr>().unwrap());
    assert_eq!(mp.nlri.len(), 2);
    assert_eq!(updates[0].attributes.next_hop, None);
    // iBGP: next hop unchanged.
    let (ann, _) = out_for(&ch, &i1);
    assert_eq!(ann[0].2, nh);
    assert_eq!(rib.routes(AddressFamily::Ipv6Unicast).count(), 2);
    assert_eq!(rib.routes(AddressFamily::Ipv4Unicast).count(), 0);

    // Counted per family: an IPv4 route from the same peer lands in the other column.
    rib.apply_update(
        e1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
    )
    .unwrap();
    let family = |rib: &Rib, peer: &PeerInfo, f| rib.peer_family_counts(peer.id(), f).unwrap();
    let counts = |received, accepted, advertised| PeerCounts {
        received,
        accepted,
        advertised,
    };
    assert_eq!(
        family(&rib, &e1, AddressFamily::Ipv6Unicast),
        counts(2, 2, 0)
    );
    assert_eq!(
        family(&rib, &e1, AddressFamily::Ipv4Unicast),
        counts(1, 1, 0)
    );
    assert_eq!(
        family(&rib, &e2, AddressFamily::Ipv6Unicast),
        counts(0, 0, 2)
    );
    assert_eq!(
        family(&rib, &e2, AddressFamily::Ipv4Unicast),
        counts(0, 0, 1)
    );
    assert_eq!(rib.peer_counts(e1.id()), Some(counts(3, 3, 0)));
    assert_eq!(rib.peer_counts(e2.id()), Some(counts(0, 0, 3)));

    let unreach = Update {
        mp_unreach: Some(MpUnreach {
            afi: crate::packet::Afi::IPV6,
            safi: crate::packet::Safi::UNICAST,
            withdrawn: vec![net("2001:db8:100::/48")],
        }),
        ..Default::default()
    };
    let ch = rib.apply_update(e1.id(), &unreach).unwrap();
    assert_eq!(ch.best[0].new, None);
    let u = &ch.per_peer_out[&e2.id()][0];
    assert_eq!(
        u.mp_unreach.as_ref().unwrap().withdrawn,
        vec![net("2001:db8:100::/48")]
    );
    assert_eq!(
        family(&rib, &e1, AddressFamily::Ipv6Unicast),
        counts(1, 1, 0)
    );
    assert_eq!(
        family(&rib, &e2, AddressFamily::Ipv6Unicast),
        counts(0, 0, 1)
    );
    assert_eq!(
        family(&rib, &e1, AddressFamily::Ipv4Unicast),
        counts(1, 1, 0)
    );
}

#[test]
fn ipv6_next_hop_self_over_an_ipv4_session_is_mapped_when_not_configured() {
    let (e1, mut e2) = (ebgp_peer(1), ebgp_peer(2));
    e2.next_hop_v6 = None;
    let mut rib = rib_with(&[e1.clone(), e2.clone()]);
    let ch = rib.originate(net("2001:db8:44::/64"), PathAttributes::default());
    let mp = ch.per_peer_out[&e2.id()][0].mp_reach.clone().unwrap();
    assert_eq!(mp.next_hop, "::ffff:192.0.2.254".parse::<IpAddr>().unwrap());
}

#[test]
fn initial_dump_ends_with_end_of_rib_per_family() {
    let (e1, e2) = (ebgp_peer(1), ebgp_peer(2));
    let mut rib = rib_with(std::slice::from_ref(&e1));
    rib.add_peer(e2.clone()).unwrap();
    rib.originate(net("10.244.0.0/26"), PathAttributes::default());
    rib.originate(net("2001:db8:44::/64"), PathAttributes::default());
    rib.apply_update(
        e1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
    )
    .unwrap();
    assert_eq!(
        rib.initial_updates(e2.id()),
        Err(RibError::PeerNotUp(e2.id()))
    );

    rib.peer_up(e2.id(), &session(&e2)).unwrap();
    let dump = rib.initial_updates(e2.id()).unwrap();
    let eors: Vec<_> = dump.iter().filter_map(Update::end_of_rib).collect();
    assert_eq!(
        eors,
        vec![
            (crate::packet::Afi::IPV4, crate::packet::Safi::UNICAST),
            (crate::packet::Afi::IPV6, crate::packet::Safi::UNICAST)
        ]
    );
    assert_eq!(
        dump.last().and_then(Update::end_of_rib),
        eors.last().copied()
    );
    // IPv4 routes, then the IPv4 End-of-RIB, then IPv6.
    let eor4 = dump.iter().position(|u| u.end_of_rib().is_some()).unwrap();
    let (ann, _) = flatten(&dump[..eor4]);
    assert_eq!(ann.len(), 2);
    let (ann, _) = flatten(&dump[eor4 + 1..]);
    assert_eq!(ann.len(), 1);
    assert_eq!(rib.peer_counts(e2.id()).unwrap().advertised, 3);

    // An IPv4-only session gets only the IPv4 routes and End-of-RIB.
    let e3 = ebgp_peer(3);
    rib.add_peer(e3.clone()).unwrap();
    let mut s = session(&e3);
    s.families = vec![Family::IPV4_UNICAST];
    rib.peer_up(e3.id(), &s).unwrap();
    let dump = rib.initial_updates(e3.id()).unwrap();
    assert_eq!(dump.iter().filter_map(Update::end_of_rib).count(), 1);
    assert_eq!(flatten(&dump).0.len(), 2);
}

#[test]
fn routes_learned_from_an_unnegotiated_family_are_ignored() {
    let e1 = ebgp_peer(1);
    let mut rib = Rib::new(local());
    rib.add_peer(e1.clone()).unwrap();
    let mut s = session(&e1);
    s.families = vec![Family::IPV4_UNICAST];
    rib.peer_up(e1.id(), &s).unwrap();
    let update = Update {
        attributes: attrs(&[65001], "192.0.2.1"),
        mp_reach: Some(MpReach {
            afi: crate::packet::Afi::IPV6,
            safi: crate::packet::Safi::UNICAST,
            next_hop: "2001:db8::1".parse().unwrap(),
            link_local_next_hop: None,
            nlri: vec![net("2001:db8:100::/48")],
        }),
        ..Default::default()
    };
    assert!(rib.apply_update(e1.id(), &update).unwrap().is_empty());
    assert_eq!(rib.peer_counts(e1.id()).unwrap().received, 0);
}

#[test]
fn unknown_and_duplicate_peers_are_errors() {
    let e1 = ebgp_peer(1);
    let mut rib = rib_with(std::slice::from_ref(&e1));
    assert_eq!(rib.add_peer(e1.clone()), Err(RibError::PeerExists(e1.id())));
    let other = PeerId(v4("192.0.2.99"));
    assert_eq!(rib.peer_down(other), Err(RibError::UnknownPeer(other)));
    assert_eq!(rib.peer_counts(other), None);
    rib.apply_update(
        e1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
    )
    .unwrap();
    let ch = rib.remove_peer(e1.id()).unwrap();
    assert_eq!(ch.best[0].new, None);
    assert_eq!(rib.peer_counts(e1.id()), None);
}

/// Not timed: 100,000 prefixes from one peer, exported to ten others.
#[test]
fn hundred_thousand_prefixes_to_ten_peers() {
    const N: u32 = 100_000;
    let source = ebgp_peer(1);
    let mut peers = vec![source.clone()];
    peers.extend((1..=10).map(ibgp_peer));
    let mut rib = rib_with(&peers);
    let prefixes: Vec<IpNet> = (0..N)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    let mut total = 0;
    let mut changes_best = 0;
    let mut per_peer = vec![0usize; 10];
    // As a peer sends them: about 1,000 prefixes per UPDATE.
    for chunk in prefixes.chunks(1000) {
        let u = Update {
            attributes: attrs(&[65001, 65100], "192.0.2.1"),
            nlri: chunk.to_vec(),
            ..Default::default()
        };
        let ch = rib.apply_update(source.id(), &u).unwrap();
        changes_best += ch.best.len();
        for (i, p) in peers[1..].iter().enumerate() {
            let n: usize = ch.per_peer_out[&p.id()].iter().map(|u| u.nlri.len()).sum();
            per_peer[i] += n;
        }
        total += chunk.len();
    }
    assert_eq!(total, N as usize);
    assert_eq!(changes_best, N as usize);
    assert!(per_peer.iter().all(|&n| n == N as usize), "{per_peer:?}");
    for p in &peers[1..] {
        assert_eq!(rib.peer_counts(p.id()).unwrap().advertised, N as usize);
    }
    // One attribute set in, one out per distinct export (all iBGP peers share it).
    assert!(rib.attr_sets.len() <= 4, "{}", rib.attr_sets.len());

    let dump = rib.initial_updates(peers[1].id()).unwrap();
    assert_eq!(flatten(&dump).0.len(), N as usize);

    let ch = rib.peer_down(source.id()).unwrap();
    assert_eq!(ch.best.len(), N as usize);
    for p in &peers[1..] {
        let (_, wd) = flatten(&ch.per_peer_out[&p.id()]);
        assert_eq!(wd.len(), N as usize);
    }
}

/// Prints how long the 100,000 x 10 case takes; asserts nothing. Run with
/// `cargo test --release -p brindle-bgp --lib rib::tests::timing_probe -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn timing_probe() {
    use std::time::Instant;
    const N: u32 = 100_000;
    let source = ebgp_peer(1);
    let mut peers = vec![source.clone()];
    peers.extend((1..=10).map(ibgp_peer));
    let mut rib = rib_with(&peers);
    let prefixes: Vec<IpNet> = (0..N)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    let t = Instant::now();
    for chunk in prefixes.chunks(1000) {
        let u = Update {
            attributes: attrs(&[65001, 65100], "192.0.2.1"),
            nlri: chunk.to_vec(),
            ..Default::default()
        };
        rib.apply_update(source.id(), &u).unwrap();
    }
    eprintln!("insert+export: {:?}", t.elapsed());
    let t = Instant::now();
    let d = rib.initial_updates(peers[1].id()).unwrap();
    eprintln!("dump: {:?} {}", t.elapsed(), d.len());
    let t = Instant::now();
    rib.peer_down(source.id()).unwrap();
    eprintln!("down: {:?}", t.elapsed());
}

mod reflection;

mod graceful_restart;

/// The memory of a large table is its destinations: one candidate must sit inline in the
/// B-tree slot, as a pointer to the record shared by its UPDATE and its selection (the
/// reflect benchmark of docs/benchmarks.md holds 100,000 of them).
#[test]
fn a_destination_with_one_candidate_is_three_words() {
    assert!(std::mem::size_of::<super::decision::Path>() <= 16);
    assert!(std::mem::size_of::<super::Destination>() <= 24);
}

/// The Adj-RIB-Out is computed from the best route: a change of the best route that exports
/// the same to a peer sends that peer nothing, and one that exports differently sends it the
/// new version; the advertised counts follow.
#[test]
fn a_change_invisible_to_a_peer_sends_it_nothing() {
    let (e1, e2, i1) = (ebgp_peer(1), ebgp_peer(2), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), e2.clone(), i1.clone()]);
    let mut a = attrs(&[65001], "192.0.2.1");
    a.med = Some(50);
    let ch = rib
        .apply_update(e1.id(), &announce(&["203.0.113.0/24"], a.clone()))
        .unwrap();
    assert!(ch.per_peer_out.contains_key(&e2.id()));
    assert!(ch.per_peer_out.contains_key(&i1.id()));

    // Only the MED changes: eBGP peers never see a learned MED (RFC 4271 §5.1.4), iBGP
    // peers do.
    a.med = Some(10);
    let ch = rib
        .apply_update(e1.id(), &announce(&["203.0.113.0/24"], a.clone()))
        .unwrap();
    assert_eq!(ch.best.len(), 1);
    assert!(!ch.per_peer_out.contains_key(&e2.id()), "{ch:?}");
    let (ann, wd) = out_for(&ch, &i1);
    assert!(wd.is_empty());
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].1.med, Some(10));

    // The same announcement again changes nothing for anyone.
    let ch = rib
        .apply_update(e1.id(), &announce(&["203.0.113.0/24"], a))
        .unwrap();
    assert!(ch.is_empty(), "{ch:?}");
    assert_eq!(rib.peer_counts(e2.id()).unwrap().advertised, 1);
    assert_eq!(rib.peer_counts(i1.id()).unwrap().advertised, 1);

    // Withdrawn: both peers get the withdrawal, once.
    let ch = rib
        .apply_update(
            e1.id(),
            &Update {
                withdrawn: vec![net("203.0.113.0/24")],
                ..Default::default()
            },
        )
        .unwrap();
    for peer in [&e2, &i1] {
        let (ann, wd) = out_for(&ch, peer);
        assert!(ann.is_empty());
        assert_eq!(wd, vec![net("203.0.113.0/24")]);
        assert_eq!(rib.peer_counts(peer.id()).unwrap().advertised, 0);
    }
}
