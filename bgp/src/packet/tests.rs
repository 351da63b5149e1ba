//! Tests of the packet layer through its public entry points: the malformed-input cases of
//! RFC 7606 (numbered as in bgp-anchors §4.1) with their wire bytes, round trips of every
//! message type, AS4 handling in both directions, End-of-RIB, and a no-panic run over random
//! and mutated messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn msg(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(msg_type);
    v.extend_from_slice(body);
    v
}

fn update_msg(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    msg(2, &body)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

/// iBGP between 4-octet speakers (Brindle's mesh).
const IBGP: DecodeContext = DecodeContext {
    four_octet_as: true,
    peer_is_ebgp: false,
    peer_asn: 64512,
};

/// eBGP from AS 65001, 4-octet.
const EBGP: DecodeContext = DecodeContext {
    four_octet_as: true,
    peer_is_ebgp: true,
    peer_asn: 65001,
};

/// iBGP with a peer that did not advertise the 4-octet AS capability.
const IBGP_2OCTET: DecodeContext = DecodeContext {
    four_octet_as: false,
    peer_is_ebgp: false,
    peer_asn: 64512,
};

const ORIGIN_IGP: &[u8] = &[0x40, 1, 1, 0];
/// AS_PATH: AS_SEQUENCE [65001], 4-octet.
const AS_PATH_65001: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP_10_0_0_1: &[u8] = &[0x40, 3, 4, 10, 0, 0, 1];
/// NLRI 10.1.0.0/16.
const NLRI_10_1: &[u8] = &[16, 10, 1];

fn base_attrs() -> Vec<u8> {
    cat(&[ORIGIN_IGP, AS_PATH_65001, NEXT_HOP_10_0_0_1])
}

fn decode_update(bytes: &[u8], ctx: &DecodeContext) -> Update {
    match decode(bytes, ctx) {
        Ok(Some((Message::Update(u), n))) => {
            assert_eq!(n, bytes.len());
            u
        }
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

fn fatal(bytes: &[u8], ctx: &DecodeContext) -> Notification {
    match decode(bytes, ctx) {
        Err(e) => e.notification(),
        Ok(other) => panic!("expected a fatal error, got {other:?}"),
    }
}

fn assert_code(n: &Notification, code: u8, subcode: u8) {
    assert_eq!((n.code, n.subcode), (code, subcode), "got {n}");
}

/// The single error of an UPDATE, with the NLRI still there for the caller to withdraw.
fn only_error(u: &Update) -> &AttributeError {
    assert_eq!(u.errors.len(), 1, "errors: {:?}", u.errors);
    &u.errors[0]
}

// ---------------------------------------------------------------------------------------------
// RFC 4271 §6.1: header (cases 1-3)

#[test]
fn rfc7606_case1_bad_marker_is_connection_not_synchronized() {
    let mut m = msg(4, &[]);
    m[3] = 0xfe;
    let n = fatal(&m, &IBGP);
    assert_code(
        &n,
        codes::code::MESSAGE_HEADER_ERROR,
        codes::header::CONNECTION_NOT_SYNCHRONIZED,
    );
    assert!(n.data.is_empty());
}

#[test]
fn rfc7606_case2_bad_lengths_carry_the_length() {
    let mut short = msg(4, &[]);
    short[16..18].copy_from_slice(&18u16.to_be_bytes());
    let mut long = msg(2, &[]);
    long[16..18].copy_from_slice(&4097u16.to_be_bytes());
    let keepalive_20 = msg(4, &[0]);
    let notification_20 = msg(3, &[6]);
    for (m, len) in [
        (short, 18u16),
        (long, 4097),
        (keepalive_20, 20),
        (notification_20, 20),
    ] {
        let n = fatal(&m, &IBGP);
        assert_code(
            &n,
            codes::code::MESSAGE_HEADER_ERROR,
            codes::header::BAD_MESSAGE_LENGTH,
        );
        assert_eq!(n.data, len.to_be_bytes().to_vec());
    }
}

#[test]
fn rfc7606_case3_unknown_type_carries_the_type() {
    let n = fatal(&msg(7, &[]), &IBGP);
    assert_code(
        &n,
        codes::code::MESSAGE_HEADER_ERROR,
        codes::header::BAD_MESSAGE_TYPE,
    );
    assert_eq!(n.data, vec![7]);
}

// ---------------------------------------------------------------------------------------------
// RFC 7606: UPDATE (cases 7-26)

#[test]
fn clean_update_decodes() {
    let u = decode_update(&update_msg(&[], &base_attrs(), NLRI_10_1), &EBGP);
    assert_eq!(u.errors, vec![]);
    assert_eq!(u.treatment(), None);
    assert_eq!(u.nlri, vec![net("10.1.0.0/16")]);
    assert_eq!(u.attributes.origin, Some(Origin::Igp));
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence(vec![65001]))
    );
    assert_eq!(u.attributes.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
}

#[test]
fn rfc7606_case7_attribute_header_truncated_is_treat_as_withdraw() {
    // Two octets left where an attribute header needs three.
    let attrs = cat(&[&base_attrs(), &[0x40, 0x05]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(only_error(&u).treatment, Treatment::TreatAsWithdraw);
    assert_eq!(u.nlri, vec![net("10.1.0.0/16")]);
    // Extended Length set with three octets left.
    let attrs = cat(&[&base_attrs(), &[0x50, 0x08, 0x00]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(only_error(&u).treatment, Treatment::TreatAsWithdraw);
    assert_eq!(u.nlri, vec![net("10.1.0.0/16")]);
}

#[test]
fn rfc7606_case8_attribute_overrunning_the_attribute_list_is_treat_as_withdraw() {
    // MED claims 8 octets, 4 remain in the attribute list; the NLRI is found by the total.
    let attrs = cat(&[&base_attrs(), &[0x80, 4, 8, 0, 0, 0, 1]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (4, Treatment::TreatAsWithdraw));
    assert_eq!(u.nlri, vec![net("10.1.0.0/16")]);
}

#[test]
fn rfc7606_case8_total_attribute_length_overrunning_the_message_resets() {
    // The NLRI cannot be located: Malformed Attribute List.
    let mut m = update_msg(&[], &base_attrs(), NLRI_10_1);
    let attr_len_at = 19 + 2;
    m[attr_len_at..attr_len_at + 2].copy_from_slice(&200u16.to_be_bytes());
    let n = fatal(&m, &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::MALFORMED_ATTRIBUTE_LIST,
    );
}

#[test]
fn rfc7606_case10_nlri_with_only_an_unknown_attribute_is_treat_as_withdraw() {
    // An optional transitive attribute of type 99 and nothing else.
    let attrs = [0xc0, 99, 2, 0xab, 0xcd];
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(u.treatment(), Some(Treatment::TreatAsWithdraw));
    let missing: Vec<u8> = u.errors.iter().map(|e| e.type_code).collect();
    assert_eq!(missing, vec![1, 2, 3]);
    // The unknown attribute is kept, with the Partial bit (RFC 4271 §5).
    assert_eq!(
        u.attributes.unknown,
        vec![RawAttribute {
            flags: 0xe0,
            type_code: 99,
            value: vec![0xab, 0xcd]
        }]
    );
}

#[test]
fn rfc7606_case11_mp_unreach_with_classic_nlri_and_no_mandatory_attributes() {
    // MP_UNREACH_NLRI withdrawing 2001:db8::/32, plus classic NLRI with nothing else.
    let mp_unreach = [0x80, 15, 8, 0, 2, 1, 32, 0x20, 0x01, 0x0d, 0xb8];
    let u = decode_update(&update_msg(&[], &mp_unreach, NLRI_10_1), &IBGP);
    assert_eq!(u.treatment(), Some(Treatment::TreatAsWithdraw));
    assert_eq!(
        u.mp_unreach,
        Some(MpUnreach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            withdrawn: vec![net("2001:db8::/32")]
        })
    );
    assert_eq!(u.nlri, vec![net("10.1.0.0/16")]);
}

#[test]
fn rfc7606_case11_zero_attribute_length_with_nlri_is_treat_as_withdraw() {
    let u = decode_update(&update_msg(&[], &[], NLRI_10_1), &IBGP);
    assert_eq!(u.treatment(), Some(Treatment::TreatAsWithdraw));
    assert_eq!(u.end_of_rib(), None);
}

#[test]
fn rfc7606_case12_mp_reach_with_bad_next_hop_length_resets() {
    // IPv6 unicast with an 8-octet next hop.
    let mp_reach = [0x80, 14, 14, 0, 2, 1, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
    let attrs = cat(&[&mp_reach, ORIGIN_IGP, AS_PATH_65001]);
    let n = fatal(&update_msg(&[], &attrs, &[]), &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::OPTIONAL_ATTRIBUTE_ERROR,
    );
    assert_eq!(n.data, mp_reach.to_vec());
}

#[test]
fn rfc7606_case12_mp_reach_prefix_longer_than_128_resets() {
    let mut mp_reach = vec![0x80, 14, 22, 0, 2, 1, 16];
    mp_reach.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    mp_reach.extend_from_slice(&[0, 129, 0]);
    let attrs = cat(&[&mp_reach, ORIGIN_IGP, AS_PATH_65001]);
    let n = fatal(&update_msg(&[], &attrs, &[]), &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::OPTIONAL_ATTRIBUTE_ERROR,
    );
}

#[test]
fn ipv4_prefix_longer_than_32_is_invalid_network_field() {
    // RFC 7606 §5.3.
    let n = fatal(
        &update_msg(&[], &base_attrs(), &[33, 10, 0, 0, 0, 0]),
        &IBGP,
    );
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::INVALID_NETWORK_FIELD,
    );
    let n = fatal(&update_msg(&[24, 10, 0], &[], &[]), &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::INVALID_NETWORK_FIELD,
    );
}

#[test]
fn rfc7606_case13_mp_reach_twice_resets() {
    let mut mp_reach = vec![0x80, 14, 24, 0, 2, 1, 16];
    mp_reach.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("addr").octets());
    mp_reach.extend_from_slice(&[0, 16, 0x20, 0x01]);
    let attrs = cat(&[&mp_reach, &mp_reach, ORIGIN_IGP, AS_PATH_65001]);
    let n = fatal(&update_msg(&[], &attrs, &[]), &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::MALFORMED_ATTRIBUTE_LIST,
    );

    let mp_unreach: &[u8] = &[0x80, 15, 3, 0, 2, 1];
    let n = fatal(
        &update_msg(&[], &cat(&[mp_unreach, mp_unreach]), &[]),
        &IBGP,
    );
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::MALFORMED_ATTRIBUTE_LIST,
    );
}

#[test]
fn rfc7606_case14_repeated_med_keeps_the_first() {
    let attrs = cat(&[
        &base_attrs(),
        &[0x80, 4, 4, 0, 0, 0, 10],
        &[0x80, 4, 4, 0, 0, 0, 20],
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(u.attributes.med, Some(10));
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (4, Treatment::AttributeDiscard));
}

fn assert_taw(attr: &[u8], ctx: &DecodeContext, type_code: u8) {
    let attrs = cat(&[&base_attrs(), attr]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), ctx);
    let e = only_error(&u);
    assert_eq!(
        (e.type_code, e.treatment),
        (type_code, Treatment::TreatAsWithdraw),
        "{e}"
    );
    assert_eq!(u.nlri, vec![net("10.1.0.0/16")], "NLRI kept for withdrawal");
}

#[test]
fn rfc7606_case15_med_length_5_is_treat_as_withdraw() {
    // GoBGP's scenario test_03: a 5-octet MED.
    assert_taw(&[0x80, 4, 5, 0, 0, 0, 0, 100], &IBGP, 4);
}

#[test]
fn rfc7606_case15_origin_length_and_value_are_treat_as_withdraw() {
    for origin in [&[0x40, 1, 2, 0, 0][..], &[0x40, 1, 1, 3], &[0x40, 1, 0]] {
        let attrs = cat(&[origin, AS_PATH_65001, NEXT_HOP_10_0_0_1]);
        let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
        let e = only_error(&u);
        assert_eq!(
            (e.type_code, e.treatment),
            (1, Treatment::TreatAsWithdraw),
            "{e}"
        );
    }
}

#[test]
fn rfc7606_case15_local_pref_length_3_is_treat_as_withdraw() {
    assert_taw(&[0x40, 5, 3, 0, 0, 100], &IBGP, 5);
}

#[test]
fn rfc7606_case15_community_lengths_are_treat_as_withdraw() {
    assert_taw(&[0xc0, 8, 5, 0, 0, 0, 1, 2], &IBGP, 8);
    assert_taw(&[0xc0, 8, 0], &IBGP, 8);
    assert_taw(&[0xc0, 16, 7, 0, 2, 0, 0, 0, 0, 1], &IBGP, 16);
    let mut large = vec![0xc0, 32, 13];
    large.extend_from_slice(&[0; 13]);
    assert_taw(&large, &IBGP, 32);
}

#[test]
fn rfc7606_case16_next_hop_length_3_is_treat_as_withdraw_and_keeps_alignment() {
    // NEXT_HOP of 3 octets followed by a MED that must still be read correctly.
    let attrs = cat(&[
        ORIGIN_IGP,
        AS_PATH_65001,
        &[0x40, 3, 3, 10, 0, 0],
        &[0x80, 4, 4, 0, 0, 0, 42],
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (3, Treatment::TreatAsWithdraw));
    assert_eq!(u.attributes.med, Some(42));
    assert_eq!(u.attributes.next_hop, None);
}

#[test]
fn rfc7606_case17_aggregator_bad_length_is_attribute_discard() {
    // After GoBGP's scenario test_02: a 5-octet AGGREGATOR. The route is kept.
    let attrs = cat(&[&base_attrs(), &[0xc0, 7, 5, 0, 0, 0, 0x64, 0]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (7, Treatment::AttributeDiscard));
    assert_eq!(u.attributes.aggregator, None);
    assert_eq!(u.attributes.origin, Some(Origin::Igp));
    // 6 octets is right only on a 2-octet session.
    let attrs = cat(&[&base_attrs(), &[0xc0, 7, 6, 0xfd, 0xe9, 10, 0, 0, 1]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(only_error(&u).treatment, Treatment::AttributeDiscard);
}

#[test]
fn rfc7606_case17_atomic_aggregate_with_a_value_is_attribute_discard() {
    let attrs = cat(&[&base_attrs(), &[0x40, 6, 1, 0]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (6, Treatment::AttributeDiscard));
    assert!(!u.attributes.atomic_aggregate);
}

#[test]
fn rfc7606_case18_malformed_as4_path_is_attribute_discard() {
    // AS4_PATH with a segment overrunning it, placed before AS_PATH, on a 2-octet session.
    let attrs = cat(&[
        &[0xc0, 17, 6, 2, 2, 0, 0, 0xfd, 0xe9],
        ORIGIN_IGP,
        &[0x40, 2, 4, 2, 1, 0xfd, 0xe9],
        NEXT_HOP_10_0_0_1,
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP_2OCTET);
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
fn rfc7606_case19_as_path_errors_are_treat_as_withdraw() {
    let cases: &[(&str, &[u8])] = &[
        ("bad segment type", &[0x40, 2, 6, 5, 1, 0, 0, 0xfd, 0xe9]),
        ("segment overrun", &[0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9]),
        ("zero-length segment", &[0x40, 2, 2, 2, 0]),
        ("AS 0", &[0x40, 2, 6, 2, 1, 0, 0, 0, 0]),
        ("AS_SET", &[0x40, 2, 6, 1, 1, 0, 0, 0xfd, 0xe9]),
        ("truncated header", &[0x40, 2, 1, 2]),
    ];
    for (what, as_path) in cases {
        let attrs = cat(&[ORIGIN_IGP, as_path, NEXT_HOP_10_0_0_1]);
        let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
        assert_eq!(u.errors.len(), 1, "{what}: {:?}", u.errors);
        let e = &u.errors[0];
        assert_eq!(
            (e.type_code, e.treatment),
            (2, Treatment::TreatAsWithdraw),
            "{what}"
        );
    }
}

#[test]
fn rfc7606_case19_first_as_not_the_ebgp_peer_is_treat_as_withdraw() {
    let ctx = DecodeContext {
        peer_asn: 65002,
        ..EBGP
    };
    let u = decode_update(&update_msg(&[], &base_attrs(), NLRI_10_1), &ctx);
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (2, Treatment::TreatAsWithdraw));
    // The same path from the right peer is clean.
    let u = decode_update(&update_msg(&[], &base_attrs(), NLRI_10_1), &EBGP);
    assert_eq!(u.errors, vec![]);
}

#[test]
fn rfc7606_case21_internal_attributes_from_an_ebgp_peer_are_discarded() {
    let attrs = cat(&[
        &base_attrs(),
        &[0x40, 5, 4, 0, 0, 0, 200],
        &[0x80, 9, 4, 10, 9, 9, 9],
        &[0x80, 10, 4, 10, 8, 8, 8],
    ]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &EBGP);
    assert_eq!(u.treatment(), Some(Treatment::AttributeDiscard));
    assert_eq!(u.errors.len(), 3);
    assert_eq!(u.attributes.local_pref, None);
    assert_eq!(u.attributes.originator_id, None);
    assert!(u.attributes.cluster_list.is_empty());
    // From an internal peer they are kept.
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(u.errors, vec![]);
    assert_eq!(u.attributes.local_pref, Some(200));
    assert_eq!(u.attributes.originator_id, Some(Ipv4Addr::new(10, 9, 9, 9)));
    assert_eq!(u.attributes.cluster_list, vec![Ipv4Addr::new(10, 8, 8, 8)]);
}

#[test]
fn rfc7606_case24_route_refresh_of_wrong_length_carries_the_message() {
    let m = msg(5, &[0, 1, 0, 1, 0]);
    let n = fatal(&m, &IBGP);
    assert_code(
        &n,
        codes::code::ROUTE_REFRESH_MESSAGE_ERROR,
        codes::route_refresh::INVALID_MESSAGE_LENGTH,
    );
    assert_eq!(n.data, m);
    let n = fatal(&msg(5, &[0, 1]), &IBGP);
    assert_eq!(n.code, codes::code::ROUTE_REFRESH_MESSAGE_ERROR);
}

#[test]
fn rfc7606_case26_withdrawn_length_past_the_body_resets() {
    // Withdrawn Routes Length 0xffff in a 4-octet body.
    let m = msg(2, &[0xff, 0xff, 0, 0]);
    let n = fatal(&m, &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::MALFORMED_ATTRIBUTE_LIST,
    );
    // Withdrawn routes filling the body, leaving no room for the attribute length.
    let n = fatal(&msg(2, &[0, 2, 8, 10]), &IBGP);
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::MALFORMED_ATTRIBUTE_LIST,
    );
}

#[test]
fn attribute_flags_conflict_is_treat_as_withdraw() {
    // RFC 7606 §3(c): ORIGIN marked optional.
    let attrs = cat(&[&[0xc0, 1, 1, 0], AS_PATH_65001, NEXT_HOP_10_0_0_1]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    let e = only_error(&u);
    assert_eq!((e.type_code, e.treatment), (1, Treatment::TreatAsWithdraw));
}

#[test]
fn unrecognized_well_known_attribute_resets_with_the_attribute_as_data() {
    // RFC 4271 §6.3: type 99 without the Optional bit.
    let unknown = [0x40, 99, 1, 7];
    let n = fatal(
        &update_msg(&[], &cat(&[&base_attrs(), &unknown]), NLRI_10_1),
        &IBGP,
    );
    assert_code(
        &n,
        codes::code::UPDATE_MESSAGE_ERROR,
        codes::update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
    );
    assert_eq!(n.data, unknown.to_vec());
}

#[test]
fn attr_set_is_carried_opaque_and_never_parsed() {
    // ATTR_SET (RFC 6368) whose inner attribute is malformed, and one shorter than its
    // 4-octet origin AS: bgp-rs would print "Error: ..." or underflow on these.
    for attr_set in [
        &[0xc0, 128, 7, 0, 0, 0xfd, 0xe9, 0x40, 1, 9][..],
        &[0xc0, 128, 2, 0, 0],
    ] {
        let attrs = cat(&[&base_attrs(), attr_set]);
        let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
        assert_eq!(u.errors, vec![]);
        assert_eq!(u.attributes.unknown.len(), 1);
        assert_eq!(u.attributes.unknown[0].type_code, 128);
        assert_eq!(u.attributes.unknown[0].value, attr_set[3..].to_vec());
    }
}

#[test]
fn unknown_optional_non_transitive_attribute_is_dropped_quietly() {
    let attrs = cat(&[&base_attrs(), &[0x80, 99, 1, 7]]);
    let u = decode_update(&update_msg(&[], &attrs, NLRI_10_1), &IBGP);
    assert_eq!(u.errors, vec![]);
    assert!(u.attributes.unknown.is_empty());
}

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

fn full_attributes() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Incomplete),
        as_path: Some(AsPath {
            segments: vec![
                AsSegment {
                    kind: SegmentType::ConfedSequence,
                    asns: vec![65100],
                },
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![64512, 4_200_000_001, 65001],
                },
            ],
        }),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        med: Some(50),
        local_pref: Some(150),
        atomic_aggregate: true,
        aggregator: Some(Aggregator {
            asn: 4_200_000_001,
            address: Ipv4Addr::new(192, 0, 2, 9),
        }),
        communities: vec![0xfde8_0064, 0xffff_ff03],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 7)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
        extended_communities: vec![0x0002_fde8_0000_0064],
        large_communities: vec![LargeCommunity {
            global_admin: 4_200_000_001,
            local_data_1: 1,
            local_data_2: 2,
        }],
        unknown: vec![RawAttribute {
            flags: 0xe0,
            type_code: 99,
            value: vec![1, 2, 3],
        }],
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

// ---------------------------------------------------------------------------------------------
// No panic, no stdout, on random and mutated input

/// xorshift64* (Vigna): enough randomness to shake a decoder, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seed_messages() -> Vec<Vec<u8>> {
    let four = EncodeContext {
        four_octet_as: true,
    };
    let two = EncodeContext::default();
    let mut seeds = Vec::new();
    let full = Message::Update(Update {
        withdrawn: vec![net("10.9.0.0/16")],
        attributes: full_attributes(),
        nlri: vec![net("10.1.0.0/26")],
        ..Update::default()
    });
    let v6 = Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65001, 4_200_000_001])),
            ..PathAttributes::default()
        },
        mp_reach: Some(MpReach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            next_hop: IpAddr::V6("2001:db8::1".parse().expect("addr")),
            link_local_next_hop: Some("fe80::1".parse().expect("addr")),
            nlri: vec![net("fd00::/64")],
        }),
        mp_unreach: Some(MpUnreach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            withdrawn: vec![net("fd01::/64")],
        }),
        ..Update::default()
    });
    let open = Message::Open(Open {
        version: 4,
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(4_200_000_001),
            Capability::GracefulRestart {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                    forwarding_preserved: true,
                }],
            },
            Capability::AddPath(vec![(Afi::IPV4, Safi::UNICAST, AddPathMode::Both)]),
        ],
    });
    for m in [&full, &v6, &open] {
        seeds.push(encode(m, &four).expect("encodes"));
        seeds.push(encode(m, &two).expect("encodes"));
    }
    seeds.push(encode(&Message::Keepalive, &four).expect("encodes"));
    seeds.push(
        encode(
            &Message::Notification(Notification::new(6, 2, b"\x03bye".to_vec())),
            &four,
        )
        .expect("encodes"),
    );
    seeds.push(msg(5, &[0, 2, 0, 1]));
    // ATTR_SET with a malformed inner attribute: what would make bgp-rs print.
    seeds.push(update_msg(
        &[],
        &cat(&[&base_attrs(), &[0xc0, 128, 7, 0, 0, 0xfd, 0xe9, 0x40, 1, 9]]),
        NLRI_10_1,
    ));
    seeds
}

fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seeds[rng.below(seeds.len())].clone();
    match rng.below(6) {
        // Change 1-4 bytes anywhere (header included).
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.byte();
            }
        }
        // Change 1-4 bytes of the body and keep the header consistent.
        1 => {
            for _ in 0..1 + rng.below(4) {
                let i = 19 + rng.below(m.len() - 19);
                if i < m.len() {
                    m[i] = rng.byte();
                }
            }
        }
        // Truncate, then fix the header length so that the body is what is cut.
        2 => {
            let keep = 19 + rng.below(m.len() - 18);
            m.truncate(keep);
            let len = m.len() as u16;
            m[16..18].copy_from_slice(&len.to_be_bytes());
        }
        // Insert random bytes in the body and fix the length.
        3 => {
            let at = 19 + rng.below(m.len() - 18);
            let n = 1 + rng.below(8);
            let extra: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            m.splice(at..at, extra);
            let len = m.len().min(4096) as u16;
            m[16..18].copy_from_slice(&len.to_be_bytes());
        }
        // A random body of a random valid type.
        4 => {
            let n = rng.below(120);
            let body: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            m = msg(1 + rng.below(5) as u8, &body);
        }
        // Random bytes with a correct marker.
        _ => {
            let n = rng.below(64);
            m = vec![0xff; 16];
            m.extend((0..n).map(|_| rng.byte()));
        }
    }
    m
}

const FUZZ_CHILD_ENV: &str = "BRINDLE_PACKET_FUZZ_CHILD";
const FUZZ_ITERATIONS: usize = 200_000;

fn fuzz_decode(iterations: usize) {
    let seeds = seed_messages();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Outcomes, to show the run reaches past the framing: clean messages, UPDATEs with
    // RFC 7606 errors, and fatal errors.
    let (mut clean, mut with_errors, mut fatal) = (0usize, 0usize, 0usize);
    for _ in 0..iterations {
        let m = mutate(&mut rng, &seeds);
        let ctx = DecodeContext {
            four_octet_as: rng.below(2) == 0,
            peer_is_ebgp: rng.below(2) == 0,
            peer_asn: 65001,
        };
        let mut rest = &m[..];
        loop {
            let (msg, n) = match decode(rest, &ctx) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => {
                    // Every fatal error maps to a NOTIFICATION with a defined code.
                    assert!((1..=7).contains(&e.notification().code));
                    fatal += 1;
                    break;
                }
            };
            match &msg {
                Message::Update(u) if !u.errors.is_empty() => with_errors += 1,
                _ => clean += 1,
            }
            assert!((19..=rest.len()).contains(&n));
            // Whatever decodes must encode without panicking (it may be refused).
            let _ = encode(
                &msg,
                &EncodeContext {
                    four_octet_as: ctx.four_octet_as,
                },
            );
            rest = &rest[n..];
        }
    }
    eprintln!("fuzz: {clean} clean, {with_errors} UPDATEs with attribute errors, {fatal} fatal");
    assert!(clean > iterations / 20 && with_errors > iterations / 100 && fatal > iterations / 20);
}

/// The body of the no-panic test, run in a child process so that its stdout can be checked
/// (libtest captures only Rust's print macros of the test thread, which is what bgp-rs uses,
/// so the child runs with --nocapture). Does nothing unless started by the parent.
#[test]
fn fuzz_child() {
    if std::env::var_os(FUZZ_CHILD_ENV).is_some() {
        fuzz_decode(FUZZ_ITERATIONS);
    }
}

#[test]
fn decode_survives_200k_random_and_mutated_messages_without_printing() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "packet::tests::fuzz_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FUZZ_CHILD_ENV, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fuzz run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test packet::tests::fuzz_child ... ok"),
        "child did not run the fuzz test:\n{stdout}"
    );
    assert!(
        !stdout.contains("Error:"),
        "something printed to stdout:\n{stdout}"
    );
}
