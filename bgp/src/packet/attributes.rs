//! Path attributes (RFC 4271 §4.3, §5): the attribute walk with the RFC 7606 classification of
//! every error, AS4_PATH / AS4_AGGREGATOR from 2-octet peers (RFC 6793), and the encoder.
//! AS_PATH itself is in `as_path.rs`.

use std::net::Ipv4Addr;

use super::as_path::{self, as_path_value, decode_as_path, AsPath};
use super::codec_bgprs::{self, Simple};
use super::error::{AttributeError, EncodeError, MessageError, Treatment};
use super::update::{self, MpReach, MpUnreach};
use super::wire::Reader;
use super::{DecodeContext, EncodeContext, AS_TRANS};

/// Attribute type codes (IANA "BGP Path Attributes").
pub(crate) mod type_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// Attribute flags (RFC 4271 §4.3).
pub(crate) mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

const WELL_KNOWN: u8 = flag::TRANSITIVE;
const OPTIONAL_TRANSITIVE: u8 = flag::OPTIONAL | flag::TRANSITIVE;
const OPTIONAL_NON_TRANSITIVE: u8 = flag::OPTIONAL;

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AGGREGATOR (RFC 4271 §5.1.7), with a 4-octet AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A large community (RFC 8092 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data_1: u32,
    pub local_data_2: u32,
}

/// An attribute we do not interpret, passed on as it came. Optional transitive ones get the
/// Partial bit on receipt (RFC 4271 §5); optional non-transitive ones are dropped on receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// The flags as received, without the Extended Length bit (the encoder chooses it).
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE, other than MP_REACH_NLRI and MP_UNREACH_NLRI (which are
/// fields of [`super::Update`]). After decode, AS numbers are 4-octet whatever the session, with
/// AS4_PATH and AS4_AGGREGATOR already merged in (RFC 6793 §4.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub extended_communities: Vec<u64>,
    pub large_communities: Vec<LargeCommunity>,
    pub unknown: Vec<RawAttribute>,
}

/// What the attribute walk found.
pub(crate) struct Decoded {
    pub(crate) attributes: PathAttributes,
    pub(crate) mp_reach: Option<MpReach>,
    pub(crate) mp_unreach: Option<MpUnreach>,
    pub(crate) errors: Vec<AttributeError>,
    /// Which type codes appeared (for the missing-attribute check, RFC 7606 §3(d)).
    pub(crate) seen: [bool; 256],
}

impl Decoded {
    fn error(&mut self, type_code: u8, treatment: Treatment, reason: &'static str) {
        self.errors.push(AttributeError {
            type_code,
            treatment,
            reason,
        });
    }
}

/// The O and T flag bits each attribute we interpret must carry (RFC 4271 §5 and the
/// attribute's RFC).
fn expected_flags(code: u8) -> Option<u8> {
    use type_code::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => WELL_KNOWN,
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            OPTIONAL_NON_TRANSITIVE
        }
        AGGREGATOR | COMMUNITIES | EXTENDED_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR
        | LARGE_COMMUNITIES => OPTIONAL_TRANSITIVE,
        _ => return None,
    })
}

/// Walks the path attributes of an UPDATE (`area` is exactly Total Path Attribute Length
/// octets, so the NLRI that follows is located whatever happens here).
pub(crate) fn decode(area: &[u8], ctx: &DecodeContext) -> Result<Decoded, MessageError> {
    let mut d = Decoded {
        attributes: PathAttributes::default(),
        mp_reach: None,
        mp_unreach: None,
        errors: Vec::new(),
        seen: [false; 256],
    };
    let mut as4_path = None;
    let mut as4_aggregator = None;
    let mut r = Reader::new(area);
    while !r.is_empty() {
        let start = r.rest();
        // RFC 7606 §4: fewer octets than an attribute header, or an attribute that overruns the
        // Total Path Attribute Length, is treat-as-withdraw; the rest of the list is unusable.
        let (Some(flags), Some(code)) = (r.u8(), r.u8()) else {
            d.error(0, Treatment::TreatAsWithdraw, "attribute header truncated");
            break;
        };
        let len = if flags & flag::EXTENDED_LENGTH != 0 {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let Some(len) = len else {
            d.error(
                code,
                Treatment::TreatAsWithdraw,
                "attribute header truncated",
            );
            break;
        };
        let header_len = start.len() - r.remaining();
        let Some(value) = r.take(usize::from(len)) else {
            d.error(
                code,
                Treatment::TreatAsWithdraw,
                "attribute overruns the attribute list",
            );
            break;
        };
        let raw = &start[..header_len + value.len()];

        // RFC 7606 §3(g): a repeated MP_REACH_NLRI / MP_UNREACH_NLRI resets the session; any
        // other repeated attribute is discarded after the first.
        if d.seen[usize::from(code)] {
            if code == type_code::MP_REACH_NLRI || code == type_code::MP_UNREACH_NLRI {
                return Err(MessageError::DuplicateMpAttribute { type_code: code });
            }
            d.error(code, Treatment::AttributeDiscard, "repeated attribute");
            continue;
        }
        d.seen[usize::from(code)] = true;

        match code {
            type_code::AS4_PATH => as4_path = decode_as4_path(&mut d, flags, value, ctx),
            type_code::AS4_AGGREGATOR => {
                as4_aggregator = decode_as4_aggregator(&mut d, flags, value, ctx)
            }
            _ => decode_one(&mut d, flags, code, value, raw, ctx)?,
        }
    }

    // RFC 6793 §4.2.3: from a 2-octet peer, fold AS4_PATH / AS4_AGGREGATOR back in.
    if !ctx.four_octet_as {
        merge_as4(&mut d.attributes, as4_path, as4_aggregator);
    }

    // RFC 4271 §6.3 (a MAY), RFC 7606 §7.2: an external peer's AS leads the AS_PATH.
    if ctx.peer_is_ebgp && ctx.peer_asn != 0 {
        if let Some(path) = &d.attributes.as_path {
            if path.leftmost() != Some(ctx.peer_asn) {
                d.error(
                    type_code::AS_PATH,
                    Treatment::TreatAsWithdraw,
                    "leftmost AS is not the peer's",
                );
            }
        }
    }
    Ok(d)
}

fn decode_one(
    d: &mut Decoded,
    flags: u8,
    code: u8,
    value: &[u8],
    raw: &[u8],
    ctx: &DecodeContext,
) -> Result<(), MessageError> {
    use type_code::*;
    let len = value.len();

    // RFC 7606 §7.5, §7.9, §7.10: these are for internal peers only; from an external peer
    // they are discarded whatever their contents.
    if ctx.peer_is_ebgp && matches!(code, LOCAL_PREF | ORIGINATOR_ID | CLUSTER_LIST) {
        d.error(
            code,
            Treatment::AttributeDiscard,
            "internal-only attribute from an eBGP peer",
        );
        return Ok(());
    }

    let Some(expected) = expected_flags(code) else {
        return decode_unrecognized(d, flags, code, value, raw);
    };
    // RFC 7606 §3(c): O/T bits that conflict with the attribute's definition make it malformed.
    let flags_ok = flags & (flag::OPTIONAL | flag::TRANSITIVE) == expected;
    if !flags_ok {
        d.error(
            code,
            Treatment::TreatAsWithdraw,
            "attribute flags conflict with its type",
        );
        // The NLRI of an MP attribute must still be parsed to be withdrawn (RFC 7606 §5.3).
        if !matches!(code, MP_REACH_NLRI | MP_UNREACH_NLRI) {
            return Ok(());
        }
    }

    let a = &mut d.attributes;
    let taw = Treatment::TreatAsWithdraw;
    let discard = Treatment::AttributeDiscard;
    match code {
        // RFC 7606 §7.1.
        ORIGIN => match (len, codec_bgprs::decode_simple(code, value)) {
            (1, Some(Simple::Origin(o))) => a.origin = Some(o),
            (1, _) => d.error(code, taw, "undefined ORIGIN value"),
            _ => d.error(code, taw, "ORIGIN length is not 1"),
        },
        // RFC 7606 §7.2.
        AS_PATH => match decode_as_path(value, ctx.four_octet_as) {
            Ok(path) => a.as_path = Some(path),
            Err(reason) => d.error(code, taw, reason),
        },
        // RFC 7606 §7.3. Semantic checks (our own address, martians) belong to the RIB.
        NEXT_HOP => match (len, codec_bgprs::decode_simple(code, value)) {
            (4, Some(Simple::NextHop(nh))) => a.next_hop = Some(nh),
            _ => d.error(code, taw, "NEXT_HOP length is not 4"),
        },
        // RFC 7606 §7.4.
        MULTI_EXIT_DISC => match (len, codec_bgprs::decode_simple(code, value)) {
            (4, Some(Simple::Med(v))) => a.med = Some(v),
            _ => d.error(code, taw, "MULTI_EXIT_DISC length is not 4"),
        },
        // RFC 7606 §7.5.
        LOCAL_PREF => match (len, codec_bgprs::decode_simple(code, value)) {
            (4, Some(Simple::LocalPref(v))) => a.local_pref = Some(v),
            _ => d.error(code, taw, "LOCAL_PREF length is not 4"),
        },
        // RFC 7606 §7.6.
        ATOMIC_AGGREGATE => {
            if len == 0 {
                a.atomic_aggregate = true;
            } else {
                d.error(code, discard, "ATOMIC_AGGREGATE length is not 0");
            }
        }
        // RFC 7606 §7.7: 6 octets from a 2-octet-AS peer, 8 from a 4-octet one.
        AGGREGATOR => {
            let asn_len = if ctx.four_octet_as { 4 } else { 2 };
            let mut r = Reader::new(value);
            let parsed = if len == asn_len + 4 {
                let asn = if ctx.four_octet_as {
                    r.u32()
                } else {
                    r.u16().map(u32::from)
                };
                asn.zip(r.u32())
            } else {
                None
            };
            match parsed {
                // RFC 7607 §2: AS 0 makes it malformed, handled per RFC 7606 (discard).
                Some((0, _)) => d.error(code, discard, "AGGREGATOR AS is 0"),
                Some((asn, address)) => {
                    a.aggregator = Some(Aggregator {
                        asn,
                        address: Ipv4Addr::from(address),
                    })
                }
                None => d.error(code, discard, "AGGREGATOR length is wrong for the session"),
            }
        }
        // RFC 7606 §7.8.
        COMMUNITIES => match (len, codec_bgprs::decode_simple(code, value)) {
            (l, Some(Simple::Communities(v))) if l > 0 && l % 4 == 0 => a.communities = v,
            _ => d.error(
                code,
                taw,
                "COMMUNITIES length is not a non-zero multiple of 4",
            ),
        },
        // RFC 7606 §7.9.
        ORIGINATOR_ID => match (len, codec_bgprs::decode_simple(code, value)) {
            (4, Some(Simple::OriginatorId(v))) => a.originator_id = Some(v),
            _ => d.error(code, taw, "ORIGINATOR_ID length is not 4"),
        },
        // RFC 7606 §7.10.
        CLUSTER_LIST => match (len, codec_bgprs::decode_simple(code, value)) {
            (l, Some(Simple::ClusterList(v))) if l > 0 && l % 4 == 0 => a.cluster_list = v,
            _ => d.error(
                code,
                taw,
                "CLUSTER_LIST length is not a non-zero multiple of 4",
            ),
        },
        // RFC 4760 §3-4, RFC 7606 §7.11: errors here reset the session.
        MP_REACH_NLRI => match update::decode_mp_reach(value, raw)? {
            Some(mp) => d.mp_reach = Some(mp),
            None => d.error(code, discard, "AFI/SAFI not supported; NLRI ignored"),
        },
        MP_UNREACH_NLRI => match update::decode_mp_unreach(value, raw)? {
            Some(mp) => d.mp_unreach = Some(mp),
            None => d.error(code, discard, "AFI/SAFI not supported; NLRI ignored"),
        },
        // RFC 7606 §7.14.
        EXTENDED_COMMUNITIES => match (len, codec_bgprs::decode_simple(code, value)) {
            (l, Some(Simple::ExtendedCommunities(v))) if l > 0 && l % 8 == 0 => {
                a.extended_communities = v
            }
            _ => d.error(
                code,
                taw,
                "EXTENDED_COMMUNITIES length is not a non-zero multiple of 8",
            ),
        },
        // RFC 8092 §5.
        LARGE_COMMUNITIES => {
            if len == 0 || len % 12 != 0 {
                d.error(
                    code,
                    taw,
                    "LARGE_COMMUNITY length is not a non-zero multiple of 12",
                );
            } else {
                let mut r = Reader::new(value);
                while let (Some(g), Some(l1), Some(l2)) = (r.u32(), r.u32(), r.u32()) {
                    a.large_communities.push(LargeCommunity {
                        global_admin: g,
                        local_data_1: l1,
                        local_data_2: l2,
                    });
                }
            }
        }
        _ => return decode_unrecognized(d, flags, code, value, raw),
    }
    Ok(())
}

/// An attribute type we do not interpret (RFC 4271 §5, §6.3). ATTR_SET (128) lands here too and
/// is carried as an opaque optional transitive attribute.
fn decode_unrecognized(
    d: &mut Decoded,
    flags: u8,
    code: u8,
    value: &[u8],
    raw: &[u8],
) -> Result<(), MessageError> {
    if flags & flag::OPTIONAL == 0 {
        // RFC 4271 §6.3: Unrecognized Well-known Attribute, data = the attribute.
        return Err(MessageError::UnrecognizedWellKnown {
            type_code: code,
            attribute: raw.to_vec(),
        });
    }
    if flags & flag::TRANSITIVE != 0 {
        d.attributes.unknown.push(RawAttribute {
            flags: (flags | flag::PARTIAL) & !flag::EXTENDED_LENGTH,
            type_code: code,
            value: value.to_vec(),
        });
    }
    Ok(())
}

/// AS4_PATH (RFC 6793 §5): only meaningful from a 2-octet-AS peer; malformed ones are discarded
/// (RFC 6793 §6, RFC 7607 §2 for AS 0).
fn decode_as4_path(
    d: &mut Decoded,
    flags: u8,
    value: &[u8],
    ctx: &DecodeContext,
) -> Option<AsPath> {
    let code = type_code::AS4_PATH;
    if ctx.four_octet_as {
        // RFC 6793 §4.1: not expected between 4-octet speakers; discarded.
        d.error(
            code,
            Treatment::AttributeDiscard,
            "AS4_PATH from a 4-octet-AS peer",
        );
        return None;
    }
    if flags & (flag::OPTIONAL | flag::TRANSITIVE) != OPTIONAL_TRANSITIVE {
        d.error(
            code,
            Treatment::AttributeDiscard,
            "AS4_PATH flags are wrong",
        );
        return None;
    }
    match decode_as_path(value, true) {
        Ok(path) if path.segments.iter().all(|s| !s.kind.is_confed()) => Some(path),
        Ok(_) => {
            d.error(
                code,
                Treatment::AttributeDiscard,
                "AS4_PATH contains confederation segments",
            );
            None
        }
        Err(reason) => {
            d.error(code, Treatment::AttributeDiscard, reason);
            None
        }
    }
}

/// AS4_AGGREGATOR (RFC 6793 §5), handled like AS4_PATH.
fn decode_as4_aggregator(
    d: &mut Decoded,
    flags: u8,
    value: &[u8],
    ctx: &DecodeContext,
) -> Option<Aggregator> {
    let code = type_code::AS4_AGGREGATOR;
    let discard = Treatment::AttributeDiscard;
    if ctx.four_octet_as {
        d.error(code, discard, "AS4_AGGREGATOR from a 4-octet-AS peer");
        return None;
    }
    if flags & (flag::OPTIONAL | flag::TRANSITIVE) != OPTIONAL_TRANSITIVE {
        d.error(code, discard, "AS4_AGGREGATOR flags are wrong");
        return None;
    }
    let mut r = Reader::new(value);
    match (value.len(), r.u32(), r.u32()) {
        (8, Some(asn), Some(address)) if asn != 0 => Some(Aggregator {
            asn,
            address: Ipv4Addr::from(address),
        }),
        _ => {
            d.error(code, discard, "malformed AS4_AGGREGATOR");
            None
        }
    }
}

/// RFC 6793 §4.2.3: folds AS4_AGGREGATOR and AS4_PATH from a 2-octet peer back in.
fn merge_as4(a: &mut PathAttributes, as4_path: Option<AsPath>, as4_aggregator: Option<Aggregator>) {
    // An AGGREGATOR with a real 2-octet AS means the aggregation happened after the last
    // 4-octet speaker: AS4_AGGREGATOR and AS4_PATH are stale and ignored.
    if let Some(agg) = a.aggregator {
        if agg.asn != u32::from(AS_TRANS) {
            return;
        }
        if let Some(as4_agg) = as4_aggregator {
            a.aggregator = Some(as4_agg);
        }
    }
    if let (Some(as_path), Some(as4_path)) = (&a.as_path, as4_path) {
        if let Some(merged) = as_path::merge_as4_path(as_path, as4_path) {
            a.as_path = Some(merged);
        }
    }
}

/// Appends one attribute, choosing the Extended Length bit by the value's size.
pub(crate) fn put_attribute(
    out: &mut Vec<u8>,
    flags: u8,
    code: u8,
    value: &[u8],
) -> Result<(), EncodeError> {
    let flags = flags & !flag::EXTENDED_LENGTH;
    if let Ok(len) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags, code, len]);
    } else {
        let len = u16::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong {
            what: "attribute value",
        })?;
        out.extend_from_slice(&[flags | flag::EXTENDED_LENGTH, code]);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(value);
    Ok(())
}

/// Encodes the attributes, in type-code order after the MP attributes the caller wrote first
/// (RFC 7606 §5.1).
pub(crate) fn encode(
    a: &PathAttributes,
    ctx: &EncodeContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    use type_code::*;
    if let Some(o) = a.origin {
        codec_bgprs::encode_simple(Simple::Origin(o), out)?;
    }
    let mut as4_path = None;
    if let Some(path) = &a.as_path {
        put_attribute(
            out,
            WELL_KNOWN,
            AS_PATH,
            &as_path_value(path, ctx.four_octet_as, false),
        )?;
        // RFC 6793 §4.2.2: a 2-octet peer gets the real path in AS4_PATH, without
        // confederation segments, when AS_TRANS stood in for anything.
        let needs_as4 = path
            .segments
            .iter()
            .any(|s| !s.kind.is_confed() && s.asns.iter().any(|&asn| asn > 0xffff));
        if !ctx.four_octet_as && needs_as4 {
            as4_path = Some(as_path_value(path, true, true));
        }
    }
    if let Some(nh) = a.next_hop {
        codec_bgprs::encode_simple(Simple::NextHop(nh), out)?;
    }
    if let Some(med) = a.med {
        codec_bgprs::encode_simple(Simple::Med(med), out)?;
    }
    if let Some(lp) = a.local_pref {
        codec_bgprs::encode_simple(Simple::LocalPref(lp), out)?;
    }
    if a.atomic_aggregate {
        put_attribute(out, WELL_KNOWN, ATOMIC_AGGREGATE, &[])?;
    }
    let mut as4_aggregator = None;
    if let Some(agg) = a.aggregator {
        let mut v = Vec::with_capacity(8);
        if ctx.four_octet_as {
            v.extend_from_slice(&agg.asn.to_be_bytes());
        } else {
            let asn = u16::try_from(agg.asn).unwrap_or(AS_TRANS);
            v.extend_from_slice(&asn.to_be_bytes());
            if agg.asn > 0xffff {
                let mut v4 = agg.asn.to_be_bytes().to_vec();
                v4.extend_from_slice(&agg.address.octets());
                as4_aggregator = Some(v4);
            }
        }
        v.extend_from_slice(&agg.address.octets());
        put_attribute(out, OPTIONAL_TRANSITIVE, AGGREGATOR, &v)?;
    }
    if !a.communities.is_empty() {
        codec_bgprs::encode_simple(Simple::Communities(a.communities.clone()), out)?;
    }
    if let Some(id) = a.originator_id {
        codec_bgprs::encode_simple(Simple::OriginatorId(id), out)?;
    }
    if !a.cluster_list.is_empty() {
        codec_bgprs::encode_simple(Simple::ClusterList(a.cluster_list.clone()), out)?;
    }
    if !a.extended_communities.is_empty() {
        codec_bgprs::encode_simple(
            Simple::ExtendedCommunities(a.extended_communities.clone()),
            out,
        )?;
    }
    if let Some(v) = as4_path {
        put_attribute(out, OPTIONAL_TRANSITIVE, AS4_PATH, &v)?;
    }
    if let Some(v) = as4_aggregator {
        put_attribute(out, OPTIONAL_TRANSITIVE, AS4_AGGREGATOR, &v)?;
    }
    if !a.large_communities.is_empty() {
        let mut v = Vec::with_capacity(12 * a.large_communities.len());
        for c in &a.large_communities {
            v.extend_from_slice(&c.global_admin.to_be_bytes());
            v.extend_from_slice(&c.local_data_1.to_be_bytes());
            v.extend_from_slice(&c.local_data_2.to_be_bytes());
        }
        put_attribute(out, OPTIONAL_TRANSITIVE, LARGE_COMMUNITIES, &v)?;
    }
    for raw in &a.unknown {
        put_attribute(out, raw.flags, raw.type_code, &raw.value)?;
    }
    Ok(())
}
