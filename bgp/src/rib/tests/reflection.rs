//! Route reflection (RFC 4456): which iBGP peer gets which iBGP route, ORIGINATOR_ID and
//! CLUSTER_LIST on the way out, and loops refused on the way in.

use super::*;

fn client(n: u8) -> PeerInfo {
    PeerInfo {
        rr_client: true,
        ..ibgp_peer(n)
    }
}

fn reflector(cluster_id: Option<Ipv4Addr>) -> LocalInfo {
    LocalInfo {
        cluster_id,
        ..local()
    }
}

fn rib_of(local: LocalInfo, peers: &[PeerInfo]) -> Rib {
    let mut rib = Rib::new(local);
    for p in peers {
        rib.add_peer(p.clone()).unwrap();
        rib.peer_up(p.id(), &session(p)).unwrap();
    }
    rib
}

fn prefixes_to(ch: &RibChanges, peer: &PeerInfo) -> Vec<IpNet> {
    out_for(ch, peer).0.into_iter().map(|(p, _, _)| p).collect()
}

const CLUSTER: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);

#[test]
fn client_routes_go_to_every_ibgp_peer_and_non_client_routes_to_clients_only() {
    let (c1, c2, n1, n2, e1) = (
        client(1),
        client(2),
        ibgp_peer(3),
        ibgp_peer(4),
        ebgp_peer(1),
    );
    let peers = [c1.clone(), c2.clone(), n1.clone(), n2.clone(), e1.clone()];
    let mut rib = rib_of(reflector(Some(CLUSTER)), &peers);

    // From a client: to the other client, both non-clients and the eBGP peer; not back.
    let ch = rib
        .apply_update(c1.id(), &announce(&["10.1.0.0/24"], attrs(&[], "10.0.0.1")))
        .unwrap();
    for p in [&c2, &n1, &n2, &e1] {
        assert_eq!(
            prefixes_to(&ch, p),
            vec![net("10.1.0.0/24")],
            "to {}",
            p.address
        );
    }
    assert!(prefixes_to(&ch, &c1).is_empty());

    // From a non-client: to the clients only (RFC 4456 §6), not to the other non-client.
    let ch = rib
        .apply_update(n1.id(), &announce(&["10.3.0.0/24"], attrs(&[], "10.0.0.3")))
        .unwrap();
    for p in [&c1, &c2, &e1] {
        assert_eq!(
            prefixes_to(&ch, p),
            vec![net("10.3.0.0/24")],
            "to {}",
            p.address
        );
    }
    assert!(prefixes_to(&ch, &n2).is_empty(), "non-client to non-client");

    // From eBGP: to everyone, clients and non-clients, without reflection attributes.
    let ch = rib
        .apply_update(
            e1.id(),
            &announce(&["203.0.113.0/24"], attrs(&[65001], "192.0.2.1")),
        )
        .unwrap();
    for p in [&c1, &c2, &n1, &n2] {
        let (ann, _) = out_for(&ch, p);
        assert_eq!(ann.len(), 1, "to {}", p.address);
        assert_eq!(ann[0].1.originator_id, None);
        assert!(ann[0].1.cluster_list.is_empty());
    }
}

#[test]
fn reflected_routes_carry_originator_id_and_our_cluster_id_first() {
    let (c1, c2, n1) = (client(1), client(2), ibgp_peer(3));
    let mut rib = rib_of(
        reflector(Some(CLUSTER)),
        &[c1.clone(), c2.clone(), n1.clone()],
    );
    let mut a = attrs(&[65100], "10.0.0.1");
    a.local_pref = Some(200);
    a.med = Some(7);
    let ch = rib
        .apply_update(c1.id(), &announce(&["10.1.0.0/24"], a))
        .unwrap();
    let (ann, _) = out_for(&ch, &c2);
    let (_, out, nh) = &ann[0];
    // ORIGINATOR_ID: the client's router ID; CLUSTER_LIST: ours. Nothing else changes.
    assert_eq!(out.originator_id, Some(c1.router_id));
    assert_eq!(out.cluster_list, vec![CLUSTER]);
    assert_eq!(*nh, v4("10.0.0.1"));
    assert_eq!((out.local_pref, out.med), (Some(200), Some(7)));
    assert_eq!(out.as_path, Some(AsPath::from_sequence(vec![65100])));

    // Already reflected once (by another cluster): ORIGINATOR_ID kept, our ID prepended.
    let mut a = attrs(&[], "10.0.0.9");
    a.originator_id = Some(Ipv4Addr::new(9, 9, 9, 9));
    a.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7)];
    let ch = rib
        .apply_update(n1.id(), &announce(&["10.9.0.0/24"], a))
        .unwrap();
    let (ann, _) = out_for(&ch, &c1);
    assert_eq!(ann[0].1.originator_id, Some(Ipv4Addr::new(9, 9, 9, 9)));
    assert_eq!(
        ann[0].1.cluster_list,
        vec![CLUSTER, Ipv4Addr::new(7, 7, 7, 7)]
    );
    // Not to the router that originated it into the AS.
    let originator = PeerInfo {
        router_id: Ipv4Addr::new(9, 9, 9, 9),
        ..client(5)
    };
    rib.add_peer(originator.clone()).unwrap();
    rib.peer_up(originator.id(), &session(&originator)).unwrap();
    let dump = rib.initial_updates(originator.id()).unwrap();
    let (ann, _) = flatten(&dump);
    assert!(
        !ann.iter().any(|(p, _, _)| *p == net("10.9.0.0/24")),
        "{ann:?}"
    );
    assert!(ann.iter().any(|(p, _, _)| *p == net("10.1.0.0/24")));
}

#[test]
fn without_cluster_id_the_router_id_is_the_cluster() {
    let (c1, c2) = (client(1), client(2));
    let mut rib = rib_of(reflector(None), &[c1.clone(), c2.clone()]);
    let ch = rib
        .apply_update(c1.id(), &announce(&["10.1.0.0/24"], attrs(&[], "10.0.0.1")))
        .unwrap();
    let (ann, _) = out_for(&ch, &c2);
    assert_eq!(ann[0].1.cluster_list, vec![local().router_id]);
}

#[test]
fn loops_are_refused_by_cluster_list_and_originator_id() {
    let (c1, c2) = (client(1), client(2));
    let mut rib = rib_of(reflector(Some(CLUSTER)), &[c1.clone(), c2.clone()]);
    // Our cluster already in CLUSTER_LIST: a loop (RFC 4456 §8), kept ineligible.
    let mut a = attrs(&[], "10.0.0.1");
    a.originator_id = Some(Ipv4Addr::new(9, 9, 9, 9));
    a.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7), CLUSTER];
    let ch = rib
        .apply_update(c1.id(), &announce(&["10.1.0.0/24"], a))
        .unwrap();
    assert!(ch.best.is_empty());
    assert!(ch.per_peer_out.is_empty());
    // ORIGINATOR_ID is our router ID: our own route came back.
    let mut a = attrs(&[], "10.0.0.2");
    a.originator_id = Some(local().router_id);
    let ch = rib
        .apply_update(c2.id(), &announce(&["10.2.0.0/24"], a))
        .unwrap();
    assert!(ch.best.is_empty());
    assert_eq!(
        rib.peer_counts(c1.id()).map(|c| (c.received, c.accepted)),
        Some((1, 0))
    );
}

#[test]
fn a_client_of_two_reflectors_in_one_cluster_is_reflected_once() {
    // Two reflectors of one cluster, each with the client: what reflector B reflects to
    // reflector A (a non-client of A) carries the cluster ID and is refused by A.
    let (c1, rr_b) = (client(1), ibgp_peer(2));
    let mut rib = rib_of(reflector(Some(CLUSTER)), &[c1.clone(), rr_b.clone()]);
    let ch = rib
        .apply_update(c1.id(), &announce(&["10.1.0.0/24"], attrs(&[], "10.0.0.1")))
        .unwrap();
    assert_eq!(prefixes_to(&ch, &rr_b), vec![net("10.1.0.0/24")]);
    let mut a = attrs(&[], "10.0.0.1");
    a.originator_id = Some(c1.router_id);
    a.cluster_list = vec![CLUSTER];
    let ch = rib
        .apply_update(rr_b.id(), &announce(&["10.1.0.0/24"], a))
        .unwrap();
    assert!(
        ch.best.is_empty(),
        "the copy from the other reflector is a loop"
    );
    assert_eq!(
        rib.peer_counts(rr_b.id()).map(|c| (c.received, c.accepted)),
        Some((1, 0))
    );
    // The client's own route stays the best.
    let best = rib.best(&net("10.1.0.0/24")).unwrap();
    assert_eq!(best.source.peer(), Some(c1.id()));
}

#[test]
fn should_export_with_clients() {
    let l = reflector(Some(CLUSTER));
    let (c1, c2, n1, n2, e1) = (
        client(1),
        client(2),
        ibgp_peer(3),
        ibgp_peer(4),
        ebgp_peer(1),
    );
    let from = |p: &PeerInfo| RouteSource::Peer {
        id: p.id(),
        ibgp: p.ibgp,
        rr_client: p.rr_client,
    };
    let cases = [
        (from(&c1), &c2, true),
        (from(&c1), &n1, true),
        (from(&c1), &c1, false),
        (from(&n1), &c1, true),
        (from(&n1), &n2, false),
        (from(&e1), &c1, true),
        (from(&e1), &n1, true),
        (from(&c1), &e1, true),
        (RouteSource::Local, &c1, true),
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
