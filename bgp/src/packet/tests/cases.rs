//! bgp-anchors §4.1 cases 1-3 and 7-26 (case 5, and 4 and 6, are in `open.rs`).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

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
