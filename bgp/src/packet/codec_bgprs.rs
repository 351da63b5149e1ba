//! The adapter to bgp-rs 0.6, and the only file that uses it.
//!
//! bgp-rs does these parts cleanly, and they are delegated to it:
//! - OPEN encoding, and the values of the multiprotocol, route refresh, 4-octet AS and ADD-PATH
//!   capabilities (it rejects families it cannot name; such a capability stays `Unknown`);
//! - NOTIFICATION and KEEPALIVE decoding and encoding;
//! - the values of ORIGIN, NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF, COMMUNITIES, ORIGINATOR_ID,
//!   CLUSTER_LIST and EXTENDED_COMMUNITIES, once our validator has checked their flags and
//!   lengths (RFC 7606 §7).
//!
//! These parts are ours, because bgp-rs gets them wrong for a speaker:
//! - message framing, UPDATE framing and the attribute walk: bgp-rs skips attributes that fail
//!   to parse without saying so, so it cannot classify errors per RFC 7606;
//! - AS_PATH: bgp-rs guesses 2- or 4-octet AS numbers from the bytes instead of the session,
//!   and encodes 2-octet numbers whenever they all fit; AGGREGATOR is always encoded 2-octet;
//!   nothing handles AS4_PATH per RFC 6793;
//! - MP_REACH_NLRI / MP_UNREACH_NLRI: the NLRI length is computed with unchecked `u8`/`u16`
//!   arithmetic (a panic on short input in debug builds) and unknown AFI/SAFI abort the parse;
//! - graceful restart (RFC 4724), which bgp-rs returns as an unknown capability;
//! - the OPEN optional-parameter walk (bounds checks first, RFC 9072 extended lengths).
//!
//! bgp-rs is never given attribute type 128 (ATTR_SET): its decoder prints to stdout and
//! subtracts 4 from the length unchecked. `decode_simple` accepts only the codes listed above.

use std::convert::TryFrom;
use std::net::{IpAddr, Ipv4Addr};

use bgp_rs::{
    AddPathDirection, Capabilities, Header, OpenCapability, OpenParameter, PathAttribute, AFI, SAFI,
};

use super::attributes::{type_code, Origin};
use super::error::EncodeError;
use super::header::{HEADER_LEN, MAX_MESSAGE_LEN, TYPE_NOTIFICATION};
use super::notification::Notification;
use super::open::{graceful_restart_value, AddPathMode, Capability, Open};
use super::{Afi, Safi};

/// An attribute value bgp-rs decodes and encodes for us. Flags and lengths are checked before a
/// value gets here (decode) and are bgp-rs's standard ones on the way out (encode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Simple {
    Origin(Origin),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    Communities(Vec<u32>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    ExtendedCommunities(Vec<u64>),
}

/// Decodes one attribute value of a type in the list above; `None` for any other type, or if
/// bgp-rs rejects the value.
pub(crate) fn decode_simple(code: u8, value: &[u8]) -> Option<Simple> {
    if !matches!(
        code,
        type_code::ORIGIN
            | type_code::NEXT_HOP
            | type_code::MULTI_EXIT_DISC
            | type_code::LOCAL_PREF
            | type_code::COMMUNITIES
            | type_code::ORIGINATOR_ID
            | type_code::CLUSTER_LIST
            | type_code::EXTENDED_COMMUNITIES
    ) {
        return None;
    }
    let len = u16::try_from(value.len()).ok()?;
    // Re-frame the value with an extended-length header so that any length fits.
    let mut attr = Vec::with_capacity(4 + value.len());
    attr.extend_from_slice(&[0x10, code]);
    attr.extend_from_slice(&len.to_be_bytes());
    attr.extend_from_slice(value);
    let parsed = PathAttribute::parse(&mut attr.as_slice(), &Capabilities::default()).ok()?;
    Some(match parsed {
        PathAttribute::ORIGIN(o) => Simple::Origin(match o {
            bgp_rs::Origin::IGP => Origin::Igp,
            bgp_rs::Origin::EGP => Origin::Egp,
            bgp_rs::Origin::INCOMPLETE => Origin::Incomplete,
        }),
        PathAttribute::NEXT_HOP(IpAddr::V4(a)) => Simple::NextHop(a),
        PathAttribute::MULTI_EXIT_DISC(v) => Simple::Med(v),
        PathAttribute::LOCAL_PREF(v) => Simple::LocalPref(v),
        PathAttribute::COMMUNITY(v) => Simple::Communities(v),
        PathAttribute::ORIGINATOR_ID(v) => Simple::OriginatorId(Ipv4Addr::from(v)),
        PathAttribute::CLUSTER_LIST(v) => {
            Simple::ClusterList(v.into_iter().map(Ipv4Addr::from).collect())
        }
        PathAttribute::EXTENDED_COMMUNITIES(v) => Simple::ExtendedCommunities(v),
        _ => return None,
    })
}

/// Encodes one attribute (flags, type, length and value).
pub(crate) fn encode_simple(value: Simple, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let attr = match value {
        Simple::Origin(o) => PathAttribute::ORIGIN(match o {
            Origin::Igp => bgp_rs::Origin::IGP,
            Origin::Egp => bgp_rs::Origin::EGP,
            Origin::Incomplete => bgp_rs::Origin::INCOMPLETE,
        }),
        Simple::NextHop(a) => PathAttribute::NEXT_HOP(IpAddr::V4(a)),
        Simple::Med(v) => PathAttribute::MULTI_EXIT_DISC(v),
        Simple::LocalPref(v) => PathAttribute::LOCAL_PREF(v),
        Simple::Communities(v) => {
            check_attribute_len(v.len() * 4)?;
            PathAttribute::COMMUNITY(v)
        }
        Simple::OriginatorId(a) => PathAttribute::ORIGINATOR_ID(u32::from(a)),
        Simple::ClusterList(v) => {
            check_attribute_len(v.len() * 4)?;
            PathAttribute::CLUSTER_LIST(v.into_iter().map(u32::from).collect())
        }
        Simple::ExtendedCommunities(v) => {
            check_attribute_len(v.len() * 8)?;
            PathAttribute::EXTENDED_COMMUNITIES(v)
        }
    };
    attr.encode(out)
        .map_err(|e| EncodeError::Codec(e.to_string()))
}

/// bgp-rs writes an attribute's length as `len as u16`; refuse what would be truncated.
fn check_attribute_len(len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong {
            what: "attribute value",
        });
    }
    Ok(())
}

/// Decodes the value of a capability bgp-rs knows (multiprotocol, route refresh, 4-octet AS,
/// ADD-PATH). `None` for other codes and for values bgp-rs rejects (wrong length, a family it
/// cannot name), which the caller keeps as `Capability::Unknown`.
pub(crate) fn decode_capability(code: u8, data: &[u8]) -> Option<Capability> {
    if !matches!(
        code,
        Capability::MULTIPROTOCOL
            | Capability::ROUTE_REFRESH
            | Capability::FOUR_OCTET_AS
            | Capability::ADD_PATH
    ) {
        return None;
    }
    // bgp-rs parses capabilities only inside an OPEN: wrap this one in a minimal OPEN body
    // (one Capabilities parameter holding just this capability).
    let cap_len = u8::try_from(data.len()).ok()?;
    let param_len = cap_len.checked_add(2)?;
    let opt_len = param_len.checked_add(2)?;
    let mut body = vec![
        4, 0, 1, 0, 0, 0, 0, 0, 1, opt_len, 2, param_len, code, cap_len,
    ];
    body.extend_from_slice(data);
    let open = bgp_rs::Open::parse(&mut body.as_slice()).ok()?;
    let [OpenParameter::Capabilities(caps)] = open.parameters.as_slice() else {
        return None;
    };
    let [cap] = caps.as_slice() else {
        return None;
    };
    Some(match cap {
        OpenCapability::MultiProtocol((afi, safi)) => Capability::Multiprotocol {
            afi: Afi(*afi as u16),
            safi: Safi(*safi as u8),
        },
        OpenCapability::RouteRefresh => Capability::RouteRefresh,
        OpenCapability::FourByteASN(asn) => Capability::FourOctetAs(*asn),
        OpenCapability::AddPath(families) => Capability::AddPath(
            families
                .iter()
                .map(|(afi, safi, dir)| {
                    let mode = match dir {
                        AddPathDirection::ReceivePaths => AddPathMode::Receive,
                        AddPathDirection::SendPaths => AddPathMode::Send,
                        AddPathDirection::SendReceivePaths => AddPathMode::Both,
                    };
                    (Afi(*afi as u16), Safi(*safi as u8), mode)
                })
                .collect(),
        ),
        _ => return None,
    })
}

fn bgprs_family(afi: Afi, safi: Safi) -> Option<(AFI, SAFI)> {
    Some((AFI::try_from(afi.0).ok()?, SAFI::try_from(safi.0).ok()?))
}

fn unknown_capability(code: u8, value: Vec<u8>) -> Result<OpenCapability, EncodeError> {
    // Each capability goes in its own parameter, whose 1-octet length covers code and length.
    if value.len() > usize::from(u8::MAX) - 2 {
        return Err(EncodeError::FieldTooLong {
            what: "capability value",
        });
    }
    Ok(OpenCapability::Unknown {
        cap_code: code,
        cap_length: value.len() as u8,
        value,
    })
}

fn to_bgprs_capability(cap: &Capability) -> Result<OpenCapability, EncodeError> {
    match cap {
        Capability::Multiprotocol { afi, safi } => match bgprs_family(*afi, *safi) {
            Some(family) => Ok(OpenCapability::MultiProtocol(family)),
            None => {
                let mut v = afi.0.to_be_bytes().to_vec();
                v.extend_from_slice(&[0, safi.0]);
                unknown_capability(Capability::MULTIPROTOCOL, v)
            }
        },
        Capability::RouteRefresh => Ok(OpenCapability::RouteRefresh),
        Capability::FourOctetAs(asn) => Ok(OpenCapability::FourByteASN(*asn)),
        Capability::AddPath(families) => {
            let named: Option<Vec<_>> = families
                .iter()
                .map(|(afi, safi, mode)| {
                    let (afi, safi) = bgprs_family(*afi, *safi)?;
                    let dir = match mode {
                        AddPathMode::Receive => AddPathDirection::ReceivePaths,
                        AddPathMode::Send => AddPathDirection::SendPaths,
                        AddPathMode::Both => AddPathDirection::SendReceivePaths,
                    };
                    Some((afi, safi, dir))
                })
                .collect();
            match named {
                Some(named) if named.len() * 4 <= usize::from(u8::MAX) - 2 => {
                    Ok(OpenCapability::AddPath(named))
                }
                _ => {
                    let mut v = Vec::with_capacity(families.len() * 4);
                    for (afi, safi, mode) in families {
                        v.extend_from_slice(&afi.0.to_be_bytes());
                        v.extend_from_slice(&[safi.0, *mode as u8]);
                    }
                    unknown_capability(Capability::ADD_PATH, v)
                }
            }
        }
        Capability::GracefulRestart {
            restart_state,
            notification,
            restart_time,
            families,
        } => unknown_capability(
            Capability::GRACEFUL_RESTART,
            graceful_restart_value(*restart_state, *notification, *restart_time, families),
        ),
        Capability::Unknown { code, data } => unknown_capability(*code, data.clone()),
    }
}

/// Encodes an OPEN, header included. Each capability goes in its own Capabilities parameter
/// (RFC 5492 §4 allows either layout).
pub(crate) fn encode_open(open: &Open, my_as: u16) -> Result<Vec<u8>, EncodeError> {
    let caps = open
        .capabilities
        .iter()
        .map(to_bgprs_capability)
        .collect::<Result<Vec<_>, _>>()?;
    let msg = bgp_rs::Message::Open(bgp_rs::Open {
        version: open.version,
        peer_asn: my_as,
        hold_timer: open.hold_time,
        identifier: u32::from(open.router_id),
        parameters: vec![OpenParameter::Capabilities(caps)],
    });
    let mut out = Vec::new();
    msg.encode(&mut out)
        .map_err(|_| EncodeError::FieldTooLong {
            what: "OPEN optional parameters",
        })?;
    Ok(out)
}

/// Decodes a NOTIFICATION body; the framing guarantees at least the 2 octets of code and
/// subcode.
pub(crate) fn decode_notification(body: &[u8]) -> Notification {
    let header = Header {
        marker: [0xff; 16],
        // The framing bounds the length by 4096.
        length: (HEADER_LEN + body.len()) as u16,
        record_type: TYPE_NOTIFICATION,
    };
    match bgp_rs::Notification::parse(&header, &mut &body[..]) {
        Ok(n) => Notification::new(n.major_err_code, n.minor_err_code, n.data),
        // Not reachable with a framed body; decode it directly rather than fail.
        Err(_) => Notification::new(
            body.first().copied().unwrap_or(0),
            body.get(1).copied().unwrap_or(0),
            body.get(2..).unwrap_or(&[]).to_vec(),
        ),
    }
}

pub(crate) fn encode_notification(n: &Notification) -> Result<Vec<u8>, EncodeError> {
    let length = HEADER_LEN + 2 + n.data.len();
    if length > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong { length });
    }
    let msg = bgp_rs::Message::Notification(bgp_rs::Notification {
        major_err_code: n.code,
        minor_err_code: n.subcode,
        data: n.data.clone(),
    });
    let mut out = Vec::with_capacity(length);
    msg.encode(&mut out)
        .map_err(|e| EncodeError::Codec(e.to_string()))?;
    Ok(out)
}

pub(crate) fn encode_keepalive() -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    bgp_rs::Message::KeepAlive
        .encode(&mut out)
        .map_err(|e| EncodeError::Codec(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_set_never_reaches_bgp_rs() {
        // A malformed ATTR_SET would make bgp-rs print "Error: ..." and underflow.
        assert_eq!(decode_simple(128, &[0, 0]), None);
        assert_eq!(decode_simple(128, &[0, 0, 0, 1, 0x40, 1, 5]), None);
    }

    #[test]
    fn simple_values_round_trip_through_bgp_rs() {
        for v in [
            Simple::Origin(Origin::Incomplete),
            Simple::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
            Simple::Med(7),
            Simple::LocalPref(200),
            Simple::Communities(vec![0xfde8_0001, 0xffff_ff01]),
            Simple::OriginatorId(Ipv4Addr::new(10, 0, 0, 9)),
            Simple::ClusterList(vec![Ipv4Addr::new(1, 2, 3, 4)]),
            Simple::ExtendedCommunities(vec![0x0002_fde8_0000_0001]),
        ] {
            let mut out = Vec::new();
            encode_simple(v.clone(), &mut out).expect("encodes");
            let (code, value) = (out[1], &out[3..]);
            assert_eq!(decode_simple(code, value), Some(v));
        }
    }

    #[test]
    fn keepalive_is_19_octets() {
        let k = encode_keepalive().expect("encodes");
        assert_eq!(k.len(), 19);
        assert_eq!(k[18], 4);
    }
}
