//! Messages captured from real routers: every message BIRD 2.0.12 and GoBGP 3.10.0 sent to a
//! recorder in a network namespace (`scripts/capture-bgp-vectors` regenerates the files in
//! `captured/`). Each one must decode whole and without errors, come back to the same message
//! after encoding, and, where the sender laid the bytes out as we do, to the same bytes.
//!
//! Where the layout differs, both are valid: we put each capability in its own optional
//! parameter (BIRD and GoBGP put them all in one, RFC 5492 §4 allows either), BIRD sets the
//! extended-length bit on every MP_REACH_NLRI, and GoBGP puts MP_REACH_NLRI after the other
//! attributes where RFC 7606 §5.1 asks for it first, as we and BIRD do.

use std::net::{IpAddr, Ipv6Addr};

use super::*;

/// One captured message: the step of the capture it belongs to, and its bytes.
struct Captured {
    phase: &'static str,
    bytes: Vec<u8>,
}

fn load(text: &'static str) -> Vec<Captured> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (phase, hex) = l.split_once(' ').expect("`<phase> <hex>`");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            Captured { phase, bytes }
        })
        .collect()
}

/// BIRD, AS 65002, over eBGP to the recorder's AS 64512 (an IPv4 and an IPv6 session).
fn bird() -> Vec<Captured> {
    load(include_str!("captured/bird.hex"))
}

/// GoBGP, AS 64512, over iBGP (one IPv4 session carrying both families).
fn gobgp() -> Vec<Captured> {
    load(include_str!("captured/gobgp.hex"))
}

const BIRD_EBGP: DecodeContext = DecodeContext {
    four_octet_as: true,
    peer_is_ebgp: true,
    peer_asn: 65002,
};

fn decode_whole(c: &Captured, ctx: &DecodeContext) -> Message {
    match decode(&c.bytes, ctx) {
        Ok(Some((m, n))) => {
            assert_eq!(n, c.bytes.len(), "{} message not used whole", c.phase);
            m
        }
        other => panic!("{} message {:02x?}: {other:?}", c.phase, c.bytes),
    }
}

/// Whether our encoder lays this message out as the sender did (see the module docs).
fn same_layout_expected(m: &Message) -> bool {
    match m {
        Message::Open(_) => false,
        Message::Update(u) => u.mp_reach.is_none(),
        _ => true,
    }
}

fn check_all(name: &str, messages: &[Captured], ctx: &DecodeContext) {
    assert!(!messages.is_empty(), "{name}: no captured messages");
    let enc = EncodeContext {
        four_octet_as: ctx.four_octet_as,
    };
    for c in messages {
        let m = decode_whole(c, ctx);
        if let Message::Update(u) = &m {
            assert!(u.errors.is_empty(), "{name} {}: {:?}", c.phase, u.errors);
        }
        let bytes = encode(&m, &enc).expect("encodes");
        assert_eq!(
            decode(&bytes, ctx).expect("decodes").map(|(m, _)| m),
            Some(m.clone()),
            "{name} {}: not the same message after encoding",
            c.phase
        );
        if same_layout_expected(&m) {
            assert_eq!(bytes, c.bytes, "{name} {}: {m:?}", c.phase);
        }
    }
}

#[test]
fn every_bird_message_decodes_and_encodes_back() {
    check_all("BIRD", &bird(), &BIRD_EBGP);
}

#[test]
fn every_gobgp_message_decodes_and_encodes_back() {
    check_all("GoBGP", &gobgp(), &IBGP);
}

fn messages(captured: &[Captured], ctx: &DecodeContext, phase: &str) -> Vec<Message> {
    captured
        .iter()
        .filter(|c| c.phase == phase)
        .map(|c| decode_whole(c, ctx))
        .collect()
}

fn updates(captured: &[Captured], ctx: &DecodeContext, phase: &str) -> Vec<Update> {
    messages(captured, ctx, phase)
        .into_iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

#[test]
fn bird_open_carries_its_capabilities() {
    let opens: Vec<Open> = messages(&bird(), &BIRD_EBGP, "initial")
        .into_iter()
        .filter_map(|m| match m {
            Message::Open(o) => Some(o),
            _ => None,
        })
        .collect();
    // One OPEN per session: IPv4, then IPv6.
    assert_eq!(opens.len(), 2, "{opens:?}");
    for (open, afi) in opens.iter().zip([Afi::IPV4, Afi::IPV6]) {
        assert_eq!((open.asn, open.hold_time), (65002, 240));
        assert_eq!(open.four_octet_as(), Some(65002));
        let caps = &open.capabilities;
        assert!(caps.contains(&Capability::Multiprotocol {
            afi,
            safi: Safi::UNICAST
        }));
        assert!(caps.contains(&Capability::RouteRefresh));
        // Graceful restart "aware": the capability with no family (RFC 4724 §3).
        assert!(caps.iter().any(|c| matches!(
            c,
            Capability::GracefulRestart { restart_time: 120, families, .. } if families.is_empty()
        )));
        // Enhanced route refresh (70, RFC 7313) and long-lived graceful restart (71) are
        // carried as unknown capabilities.
        for code in [70, 71] {
            assert!(caps.contains(&Capability::Unknown { code, data: vec![] }));
        }
    }
}

#[test]
fn bird_routes_with_communities_med_and_a_withdrawal() {
    let captured = bird();
    let initial = updates(&captured, &BIRD_EBGP, "initial");
    let tagged = initial
        .iter()
        .find(|u| u.nlri == vec![net("10.99.1.0/24")])
        .expect("the route with communities");
    let a = &tagged.attributes;
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.as_path, Some(AsPath::from_sequence(vec![65002])));
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(10, 0, 1, 2)));
    assert_eq!(a.med, Some(50));
    assert_eq!(a.local_pref, None);
    assert_eq!(a.communities, vec![65002 << 16 | 100]);
    // Route target 65002:7: type 0x00 (2-octet AS), subtype 0x02.
    assert_eq!(a.extended_communities, vec![0x0002_fdea_0000_0007]);
    assert_eq!(
        a.large_communities,
        vec![LargeCommunity {
            global_admin: 65002,
            local_data_1: 1,
            local_data_2: 2
        }]
    );
    // The two routes without extra attributes share one UPDATE.
    assert!(initial
        .iter()
        .any(|u| u.nlri == vec![net("10.99.2.0/24"), net("10.99.3.0/24")]));
    // End-of-RIB on both sessions.
    let eors: Vec<_> = initial.iter().filter_map(Update::end_of_rib).collect();
    assert_eq!(
        eors,
        vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)]
    );

    let withdrawn = updates(&captured, &BIRD_EBGP, "withdraw");
    assert_eq!(withdrawn.len(), 1);
    assert_eq!(withdrawn[0].withdrawn, vec![net("10.99.3.0/24")]);
    // Our ROUTE-REFRESH is answered with the routes it still has.
    let refreshed = updates(&captured, &BIRD_EBGP, "refresh");
    let prefixes: Vec<IpNet> = refreshed.iter().flat_map(|u| u.nlri.clone()).collect();
    assert_eq!(prefixes.len(), 2, "{refreshed:?}");
    assert!(prefixes.contains(&net("10.99.1.0/24")) && prefixes.contains(&net("10.99.2.0/24")));
}

#[test]
fn bird_ipv6_route_in_mp_reach_with_its_global_next_hop() {
    let initial = updates(&bird(), &BIRD_EBGP, "initial");
    let reach = initial
        .iter()
        .find_map(|u| u.mp_reach.as_ref())
        .expect("an MP_REACH_NLRI");
    assert_eq!((reach.afi, reach.safi), (Afi::IPV6, Safi::UNICAST));
    assert_eq!(
        reach.next_hop,
        IpAddr::V6("fd00:0:1::2".parse::<Ipv6Addr>().expect("address"))
    );
    assert_eq!(reach.nlri, vec![net("fd00:99::/64")]);
}

#[test]
fn gobgp_open_with_capabilities_we_do_not_implement() {
    let open = match messages(&gobgp(), &IBGP, "initial").first() {
        Some(Message::Open(o)) => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((open.asn, open.hold_time), (64512, 90));
    let caps = &open.capabilities;
    for afi in [Afi::IPV4, Afi::IPV6] {
        assert!(caps.contains(&Capability::Multiprotocol {
            afi,
            safi: Safi::UNICAST
        }));
    }
    assert!(caps.iter().any(|c| matches!(
        c,
        Capability::GracefulRestart { restart_time: 20, families, .. }
            if families.len() == 1 && families[0].afi == Afi::IPV4
    )));
    // FQDN (73) and extended next hop (5, RFC 8950) are kept as unknown capabilities.
    assert!(caps
        .iter()
        .any(|c| matches!(c, Capability::Unknown { code: 73, .. })));
    assert!(caps.contains(&Capability::Unknown {
        code: 5,
        data: vec![0, 1, 0, 1, 0, 2]
    }));
}

#[test]
fn gobgp_ibgp_routes_with_local_pref_and_an_ipv4_mapped_ipv6_next_hop() {
    let captured = gobgp();
    let announced = updates(&captured, &IBGP, "announce");
    assert_eq!(announced.len(), 3, "{announced:?}");
    for u in &announced {
        assert_eq!(u.attributes.local_pref, Some(100), "{u:?}");
        assert_eq!(u.attributes.as_path, Some(AsPath { segments: vec![] }));
    }
    let first = &announced[0].attributes;
    assert_eq!(first.origin, Some(Origin::Incomplete));
    assert_eq!(first.med, Some(10));
    assert_eq!(first.communities, vec![65010 << 16 | 1]);
    assert_eq!(announced[1].attributes.origin, Some(Origin::Egp));
    // An IPv6 route over an IPv4 session: the IPv4-mapped next hop (RFC 4291 §2.5.5.2).
    let reach = announced[2].mp_reach.as_ref().expect("MP_REACH_NLRI");
    assert_eq!(
        reach.next_hop,
        IpAddr::V6("::ffff:10.0.1.2".parse::<Ipv6Addr>().expect("address"))
    );
    assert_eq!(reach.nlri, vec![net("fd00:9::/64")]);

    let withdrawn = updates(&captured, &IBGP, "withdraw");
    assert_eq!(withdrawn[0].withdrawn, vec![net("10.9.2.0/24")]);
    let unreach = withdrawn[1].mp_unreach.as_ref().expect("MP_UNREACH_NLRI");
    assert_eq!(unreach.withdrawn, vec![net("fd00:9::/64")]);
    assert_eq!(withdrawn[1].end_of_rib(), None);
}

#[test]
fn shutdown_communication_from_both() {
    for (name, captured, ctx) in [("BIRD", bird(), BIRD_EBGP), ("GoBGP", gobgp(), IBGP)] {
        let n = match messages(&captured, &ctx, "shutdown").first() {
            Some(Message::Notification(n)) => n.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!((n.code, n.subcode), (6, 2), "{name}");
        assert_eq!(
            n.shutdown_communication().as_deref(),
            Some("going down for maintenance"),
            "{name}"
        );
    }
}
