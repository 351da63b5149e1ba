//! Tests of the packet layer through its public entry points:
//! - `captured`: messages captured from BIRD 2 and GoBGP (`scripts/capture-bgp-vectors`),
//!   decoded and encoded back;
//! - `cases`: the malformed-input cases of bgp-anchors §4.1 (RFC 4271 §6, RFC 7606) with their
//!   wire bytes;
//! - `round_trip`: every message type encoded and decoded back, AS4 in both directions,
//!   End-of-RIB, streams and encoding limits;
//! - `fuzz`: a no-panic, no-stdout run over 200,000 random and mutated messages.

use std::net::Ipv4Addr;

use ipnet::IpNet;

use super::*;

mod captured;
mod cases;
mod fuzz;
mod round_trip;

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
