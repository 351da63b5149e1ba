//! Graceful restart, receiving speaker (RFC 4724 §4.2): a restarting peer's routes stay,
//! stale, and what it does not announce again is removed at its End-of-RIB.

use super::*;

#[test]
fn stale_routes_stay_until_end_of_rib_and_only_the_refreshed_ones_survive() {
    let (e1, i1) = (ebgp_peer(1), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), i1.clone()]);
    rib.apply_update(
        e1.id(),
        &announce(
            &["203.0.113.0/24", "198.51.100.0/24"],
            attrs(&[65001], "192.0.2.1"),
        ),
    )
    .unwrap();

    // The session drops without a NOTIFICATION: nothing changes for the Loc-RIB or the
    // other peers, the routes are kept and still best.
    rib.peer_down_graceful(e1.id()).unwrap();
    assert_eq!(rib.stale_count(e1.id()), 2);
    assert!(rib.best(&net("203.0.113.0/24")).is_some());
    assert_eq!(rib.peer_counts(e1.id()).unwrap().received, 2);

    // Back: one prefix announced again, then End-of-RIB. The other one goes, and i1 is told.
    rib.peer_up(e1.id(), &session(&e1)).unwrap();
    let ch = rib
        .apply_update(
            e1.id(),
            &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
        )
        .unwrap();
    assert_eq!(rib.stale_count(e1.id()), 1);
    assert!(ch.best.is_empty() || ch.best.iter().all(|b| !b.next_hops_changed));
    let ch = rib.end_of_rib(e1.id(), AddressFamily::Ipv4Unicast).unwrap();
    assert_eq!(ch.best.len(), 1);
    assert_eq!(ch.best[0].prefix, net("198.51.100.0/24"));
    assert!(ch.best[0].new.is_none());
    assert_eq!(out_for(&ch, &i1).1, vec![net("198.51.100.0/24")]);
    assert!(rib.best(&net("203.0.113.0/24")).is_some());
    assert_eq!(rib.stale_count(e1.id()), 0);
    assert_eq!(rib.peer_counts(e1.id()).unwrap().received, 1);
}

#[test]
fn restart_time_over_flushes_every_stale_route_and_a_plain_down_clears_them() {
    let (e1, i1) = (ebgp_peer(1), ibgp_peer(1));
    let mut rib = rib_with(&[e1.clone(), i1.clone()]);
    rib.apply_update(
        e1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
    )
    .unwrap();
    rib.apply_update(
        e1.id(),
        &Update {
            mp_reach: Some(MpReach {
                afi: crate::packet::Afi::IPV6,
                safi: crate::packet::Safi::UNICAST,
                link_local_next_hop: None,
                next_hop: "2001:db8::1".parse().unwrap(),
                nlri: vec![net("2001:db8:1::/48")],
            }),
            attributes: attrs(&[65001], "192.0.2.1"),
            ..Default::default()
        },
    )
    .unwrap();
    rib.peer_down_graceful(e1.id()).unwrap();
    assert_eq!(rib.stale_count(e1.id()), 2);
    // End-of-RIB of one family leaves the other family's stale routes alone.
    rib.peer_up(e1.id(), &session(&e1)).unwrap();
    rib.end_of_rib(e1.id(), AddressFamily::Ipv6Unicast).unwrap();
    assert_eq!(rib.stale_count(e1.id()), 1);
    assert!(rib.best(&net("2001:db8:1::/48")).is_none());
    let ch = rib.flush_stale(e1.id()).unwrap();
    assert_eq!(ch.best.len(), 1);
    assert!(rib.best(&net("203.0.113.0/24")).is_none());
    assert_eq!(rib.peer_counts(e1.id()).unwrap().received, 0);

    // A graceful down followed by a plain one: nothing stale is left behind.
    rib.apply_update(
        e1.id(),
        &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
    )
    .unwrap();
    rib.peer_down_graceful(e1.id()).unwrap();
    rib.peer_down(e1.id()).unwrap();
    assert_eq!(rib.stale_count(e1.id()), 0);
    assert!(rib.best(&net("203.0.113.0/24")).is_none());
}
