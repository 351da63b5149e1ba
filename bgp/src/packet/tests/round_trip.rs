//! Round trips, AS4, End-of-RIB, streams and encoding limits.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::*;

// ---------------------------------------------------------------------------------------------
// End-of-RIB (RFC 4724 §2)

#[test]
fn end_of_rib_ipv4_is_the_empty_update() {
    let u = decode_update(&msg(2, &[0, 0, 0, 0]), &IBGP);
    assert_eq!(u.end_of_rib(), Some((Afi::IPV4, Safi::UNICAST)));
    let bytes = encode(
        &Message::Update(Update::end_of_rib_marker(Afi::IPV4, Safi::UNICAST)),
        &EncodeContext::default(),
    )
    .expect("encodes");
    assert_eq!(bytes, msg(2, &[0, 0, 0, 0]));
}

#[test]
fn end_of_rib_ipv6_is_an_empty_mp_unreach() {
    let m = update_msg(&[], &[0x80, 15, 3, 0, 2, 1], &[]);
    let u = decode_update(&m, &IBGP);
    assert_eq!(u.end_of_rib(), Some((Afi::IPV6, Safi::UNICAST)));
    let bytes = encode(
        &Message::Update(Update::end_of_rib_marker(Afi::IPV6, Safi::UNICAST)),
        &EncodeContext::default(),
    )
    .expect("encodes");
    assert_eq!(bytes, m);
}

#[test]
fn end_of_rib_for_a_family_we_do_not_support_is_still_recognised() {
    // L2VPN EVPN (25/70), as FRR sends it after its initial table.
    let u = decode_update(&update_msg(&[], &[0x80, 15, 3, 0, 25, 70], &[]), &IBGP);
    assert_eq!(u.end_of_rib(), Some((Afi(25), Safi(70))));
}

#[test]
fn updates_with_routes_are_not_end_of_rib() {
    let u = decode_update(&update_msg(&[8, 10], &[], &[]), &IBGP);
    assert_eq!(u.withdrawn, vec![net("10.0.0.0/8")]);
    assert_eq!(u.end_of_rib(), None);
    let u = decode_update(
        &update_msg(&[], &[0x80, 15, 5, 0, 2, 1, 8, 0x20], &[]),
        &IBGP,
    );
    assert_eq!(u.end_of_rib(), None);
}

// ---------------------------------------------------------------------------------------------
// Round trips

fn round_trip(m: &Message, enc: &EncodeContext, dec: &DecodeContext) {
    let bytes = encode(m, enc).expect("encodes");
    match decode(&bytes, dec) {
        Ok(Some((back, n))) => {
            assert_eq!(n, bytes.len());
            assert_eq!(&back, m);
        }
        other => panic!("{m:?} decoded as {other:?}"),
    }
}

#[test]
fn every_message_type_round_trips() {
    let four = EncodeContext {
        four_octet_as: true,
    };
    let messages = [
        Message::Keepalive,
        Message::Notification(Notification::new(6, 2, b"\x04bye!".to_vec())),
        Message::Notification(Notification::hold_timer_expired()),
        Message::RouteRefresh(RouteRefresh {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            subtype: RouteRefresh::BEGINNING_OF_ROUTE_REFRESH,
        }),
        Message::Open(Open {
            version: 4,
            asn: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                },
                Capability::FourOctetAs(64512),
            ],
        }),
        Message::Update(Update {
            withdrawn: vec![net("10.9.0.0/16"), net("0.0.0.0/0")],
            attributes: full_attributes(),
            nlri: vec![net("10.1.0.0/26"), net("10.1.0.64/32")],
            ..Update::default()
        }),
        Message::Update(Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::default()),
                local_pref: Some(100),
                ..PathAttributes::default()
            },
            mp_reach: Some(MpReach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                next_hop: IpAddr::V6("2001:db8::1".parse().expect("addr")),
                link_local_next_hop: Some("fe80::1".parse().expect("addr")),
                nlri: vec![net("fd00:10:244::/122"), net("::/0")],
            }),
            mp_unreach: Some(MpUnreach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                withdrawn: vec![net("fd00:10:245::/122")],
            }),
            ..Update::default()
        }),
        Message::Update(Update {
            attributes: PathAttributes {
                origin: Some(Origin::Egp),
                as_path: Some(AsPath::from_sequence(vec![65001])),
                ..PathAttributes::default()
            },
            mp_reach: Some(MpReach {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
                next_hop: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                link_local_next_hop: None,
                nlri: vec![net("10.2.0.0/16")],
            }),
            ..Update::default()
        }),
    ];
    for m in &messages {
        round_trip(m, &four, &IBGP);
        // The same messages between 2-octet speakers: AS4_PATH / AS4_AGGREGATOR carry the
        // 4-octet numbers across and are merged back.
        round_trip(m, &EncodeContext::default(), &IBGP_2OCTET);
    }
}

// ---------------------------------------------------------------------------------------------
// AS4 (RFC 6793)

#[test]
fn as4_encode_to_a_2_octet_peer_uses_as_trans_and_as4_path() {
    let u = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![4_200_000_001, 65001])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            aggregator: Some(Aggregator {
                asn: 4_200_000_001,
                address: Ipv4Addr::new(10, 0, 0, 9),
            }),
            ..PathAttributes::default()
        },
        nlri: vec![net("10.1.0.0/16")],
        ..Update::default()
    };
    let bytes = encode(&Message::Update(u.clone()), &EncodeContext::default()).expect("encodes");
    // §4.2.2, hand-made expectation.
    let expected_attrs = cat(&[
        ORIGIN_IGP,
        &[0x40, 2, 6, 2, 2, 0x5b, 0xa0, 0xfd, 0xe9], // AS_PATH [AS_TRANS, 65001]
        NEXT_HOP_10_0_0_1,
        &[0xc0, 7, 6, 0x5b, 0xa0, 10, 0, 0, 9], // AGGREGATOR AS_TRANS
        &[0xc0, 17, 10, 2, 2, 0xfa, 0x56, 0xea, 0x01, 0, 0, 0xfd, 0xe9], // AS4_PATH
        &[0xc0, 18, 8, 0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 9], // AS4_AGGREGATOR
    ]);
    assert_eq!(bytes, update_msg(&[], &expected_attrs, NLRI_10_1));
    assert_eq!(decode_update(&bytes, &IBGP_2OCTET), u);
}

#[test]
fn as4_decode_from_a_2_octet_peer_prepends_the_leading_as_path() {
    // §4.2.3: AS_PATH [65002, AS_TRANS, 65001] has one more AS than AS4_PATH
    // [4200000001, 65001]; the leading 65002 was added by a 2-octet-only speaker.
    let attrs = cat(&[
        ORIGIN_IGP,
        &[0x40, 2, 8, 2, 3, 0xfd, 0xea, 0x5b, 0xa0, 0xfd, 0xe9],
        NEXT_HOP_10_0_0_1,
        &[0xc0, 17, 10, 2, 2, 0xfa, 0x56, 0xea, 0x01, 0, 0, 0xfd, 0xe9],
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP_2OCTET);
    assert_eq!(u.errors, vec![]);
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![65002, 4_200_000_001, 65001]))
    );
}

#[test]
fn as4_path_longer_than_as_path_is_ignored() {
    let attrs = cat(&[
        ORIGIN_IGP,
        &[0x40, 2, 4, 2, 1, 0x5b, 0xa0],
        NEXT_HOP_10_0_0_1,
        &[0xc0, 17, 10, 2, 2, 0xfa, 0x56, 0xea, 0x01, 0, 0, 0xfd, 0xe9],
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP_2OCTET);
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![23456]))
    );
}

#[test]
fn as4_attributes_are_ignored_after_a_2_octet_aggregator() {
    // §4.2.3: AGGREGATOR with a real 2-octet AS: AS4_AGGREGATOR and AS4_PATH are stale.
    let attrs = cat(&[
        ORIGIN_IGP,
        &[0x40, 2, 4, 2, 1, 0x5b, 0xa0],
        NEXT_HOP_10_0_0_1,
        &[0xc0, 7, 6, 0xfd, 0xe9, 10, 0, 0, 9],
        &[0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01],
        &[0xc0, 18, 8, 0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 9],
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP_2OCTET);
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![23456]))
    );
    assert_eq!(u.attributes.aggregator.map(|a| a.asn), Some(65001));
}

#[test]
fn as4_path_from_a_4_octet_peer_is_discarded() {
    let attrs = cat(&[&base_attrs(), &[0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    let e = only_error(&u);
    assert_eq!(
        (e.type_code, e.treatment),
        (17, Treatment::AttributeDiscard)
    );
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![65001]))
    );
}

#[test]
fn as_path_is_read_with_the_sessions_as_width() {
    // The same 6 octets are one 4-octet AS or two 2-octet ones; the session decides.
    let path = [0x40, 2, 6, 2, 1, 0, 1, 0, 2];
    let attrs = cat(&[ORIGIN_IGP, &path, NEXT_HOP_10_0_0_1]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(u.errors.len(), 0);
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![65538]))
    );
    let path = [0x40, 2, 6, 2, 2, 0, 1, 0, 2];
    let attrs = cat(&[ORIGIN_IGP, &path, NEXT_HOP_10_0_0_1]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP_2OCTET);
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![1, 2]))
    );
}

// ---------------------------------------------------------------------------------------------
// Streams and encoding limits

#[test]
fn decode_frames_one_message_at_a_time() {
    let mut stream = encode(&Message::Keepalive, &EncodeContext::default()).expect("encodes");
    stream.extend(update_msg(&[], &base_attrs(), NLRI_10_1));
    let (m, n) = decode(&stream, &IBGP).expect("decodes").expect("complete");
    assert_eq!((m, n), (Message::Keepalive, 19));
    let (m, n) = decode(&stream[n..], &IBGP)
        .expect("decodes")
        .expect("complete");
    assert!(matches!(m, Message::Update(_)));
    assert_eq!(19 + n, stream.len());
    assert_eq!(decode(&stream[19..30], &IBGP), Ok(None));
}

#[test]
fn oversize_update_is_refused_on_encode() {
    let u = Update {
        withdrawn: (0..2000u32)
            .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(i << 8), 24).expect("net")))
            .collect(),
        ..Update::default()
    };
    assert!(matches!(
        encode(&Message::Update(u), &EncodeContext::default()),
        Err(EncodeError::TooLong { .. })
    ));
}

#[test]
fn ipv6_prefix_in_the_classic_nlri_is_refused_on_encode() {
    let u = Update {
        nlri: vec![net("2001:db8::/32")],
        ..Update::default()
    };
    assert!(matches!(
        encode(&Message::Update(u), &EncodeContext::default()),
        Err(EncodeError::NotIpv4 { .. })
    ));
}
