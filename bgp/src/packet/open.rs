//! OPEN messages (RFC 4271 §4.2), optional parameters (RFC 5492, RFC 9072) and the
//! capabilities Brindle negotiates, with the OPEN error checks of RFC 4271 §6.2.

use std::net::Ipv4Addr;

use super::error::{EncodeError, MessageError};
use super::wire::Reader;
use super::{codec_bgprs, Afi, Safi, AS_TRANS, BGP_VERSION};

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The sender's AS: from the 4-octet AS capability when present (RFC 6793 §4.1), otherwise
    /// the 2-octet My Autonomous System field. On encode the field gets AS_TRANS when the AS
    /// does not fit; the caller includes `Capability::FourOctetAs` itself.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The value of the 4-octet AS capability, if the OPEN carries one.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }
}

/// A capability (RFC 5492). Codes we do not interpret, or whose value does not parse, are kept
/// as `Unknown` with their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol {
        afi: Afi,
        safi: Safi,
    },
    /// RFC 2918 §2.
    RouteRefresh,
    /// RFC 6793 §3.
    FourOctetAs(u32),
    /// RFC 4724 §3, with the N bit of RFC 8538 §2.
    GracefulRestart {
        restart_state: bool,
        /// The sender supports graceful restart for NOTIFICATIONs (RFC 8538).
        notification: bool,
        /// Seconds, 12 bits on the wire.
        restart_time: u16,
        families: Vec<GracefulRestartFamily>,
    },
    /// RFC 7911 §4.
    AddPath(Vec<(Afi, Safi, AddPathMode)>),
    Unknown {
        code: u8,
        data: Vec<u8>,
    },
}

impl Capability {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;

    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => Self::MULTIPROTOCOL,
            Capability::RouteRefresh => Self::ROUTE_REFRESH,
            Capability::FourOctetAs(_) => Self::FOUR_OCTET_AS,
            Capability::GracefulRestart { .. } => Self::GRACEFUL_RESTART,
            Capability::AddPath(_) => Self::ADD_PATH,
            Capability::Unknown { code, .. } => *code,
        }
    }
}

/// One address family in a graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// The F bit: forwarding state was preserved across the restart.
    pub forwarding_preserved: bool,
}

/// The Send/Receive field of the ADD-PATH capability (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPathMode {
    Receive = 1,
    Send = 2,
    Both = 3,
}

/// The Capabilities optional parameter (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: a Non-Ext OP Len and Non-Ext OP Type of 255 announce the extended format.
const EXTENDED_PARAMS: u8 = 255;

/// RFC 4724 §3: restart flags in the top 4 bits of the first 2 octets, restart time below.
const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING_PRESERVED: u8 = 0x80;

pub(crate) fn decode(body: &[u8]) -> Result<Open, MessageError> {
    // The framing guarantees 10 octets of fixed fields (OPEN length >= 29).
    let mut r = Reader::new(body);
    let short = MessageError::MalformedOptionalParameters {
        reason: "OPEN shorter than its fixed fields",
    };
    let version = r.u8().ok_or(short.clone())?;
    let my_as = r.u16().ok_or(short.clone())?;
    let hold_time = r.u16().ok_or(short.clone())?;
    let router_id = Ipv4Addr::from(r.u32().ok_or(short.clone())?);
    let opt_len = r.u8().ok_or(short)?;

    // RFC 4271 §6.2, checked in the order of the fields.
    if version != BGP_VERSION {
        return Err(MessageError::UnsupportedVersion { version });
    }
    // RFC 7607 §2: AS 0 is never a valid peer AS.
    if my_as == 0 {
        return Err(MessageError::BadPeerAs { asn: 0 });
    }
    // RFC 4271 §6.2: a hold time of 1 or 2 seconds MUST be rejected.
    if hold_time == 1 || hold_time == 2 {
        return Err(MessageError::UnacceptableHoldTime { hold_time });
    }
    // RFC 6286 §2.2: the BGP Identifier is a non-zero 4-octet number.
    if router_id.is_unspecified() {
        return Err(MessageError::BadBgpIdentifier { id: router_id });
    }

    let capabilities = decode_parameters(opt_len, r.rest())?;
    let mut open = Open {
        version,
        asn: u32::from(my_as),
        hold_time,
        router_id,
        capabilities,
    };
    if let Some(asn) = open.four_octet_as() {
        // RFC 7607 §2 applies to the capability's AS too.
        if asn == 0 {
            return Err(MessageError::BadPeerAs { asn });
        }
        open.asn = asn;
    }
    Ok(open)
}

/// Walks the optional parameters (RFC 4271 §4.2, RFC 9072 §2) and returns the capabilities.
/// Every length is checked against the bytes that are actually there.
fn decode_parameters(opt_len: u8, rest: &[u8]) -> Result<Vec<Capability>, MessageError> {
    let malformed = |reason| MessageError::MalformedOptionalParameters { reason };
    let mut r = Reader::new(rest);
    let extended = opt_len == EXTENDED_PARAMS && rest.first() == Some(&EXTENDED_PARAMS);
    let area = if extended {
        r.u8(); // Non-Ext OP Type
        let ext_len = r
            .u16()
            .ok_or(malformed("extended parameter length truncated"))?;
        if usize::from(ext_len) != r.remaining() {
            return Err(malformed(
                "extended parameter length disagrees with the message",
            ));
        }
        r.rest()
    } else {
        if usize::from(opt_len) != rest.len() {
            return Err(malformed("parameter length disagrees with the message"));
        }
        rest
    };

    let mut params = Reader::new(area);
    let mut capabilities = Vec::new();
    while !params.is_empty() {
        let param_type = params.u8().ok_or(malformed("parameter header truncated"))?;
        let len = if extended {
            params.u16()
        } else {
            params.u8().map(u16::from)
        }
        .ok_or(malformed("parameter header truncated"))?;
        let value = params
            .take(usize::from(len))
            .ok_or(malformed("parameter overruns the parameters"))?;
        // RFC 5492 §4 defines the only parameter in use; RFC 4271 §6.2 rejects the others.
        if param_type != PARAM_CAPABILITIES {
            return Err(MessageError::UnsupportedOptionalParameter { param_type });
        }
        let mut caps = Reader::new(value);
        while !caps.is_empty() {
            let code = caps.u8().ok_or(malformed("capability header truncated"))?;
            let len = caps.u8().ok_or(malformed("capability header truncated"))?;
            let data = caps
                .take(usize::from(len))
                .ok_or(malformed("capability overruns its parameter"))?;
            capabilities.push(decode_capability(code, data));
        }
    }
    Ok(capabilities)
}

fn decode_capability(code: u8, data: &[u8]) -> Capability {
    let decoded = match code {
        Capability::GRACEFUL_RESTART => decode_graceful_restart(data),
        _ => codec_bgprs::decode_capability(code, data),
    };
    decoded.unwrap_or_else(|| Capability::Unknown {
        code,
        data: data.to_vec(),
    })
}

/// RFC 4724 §3. bgp-rs leaves this capability undecoded.
fn decode_graceful_restart(data: &[u8]) -> Option<Capability> {
    let mut r = Reader::new(data);
    let head = r.u16()?;
    if r.remaining() % 4 != 0 {
        return None;
    }
    let mut families = Vec::with_capacity(r.remaining() / 4);
    while !r.is_empty() {
        families.push(GracefulRestartFamily {
            afi: Afi(r.u16()?),
            safi: Safi(r.u8()?),
            forwarding_preserved: r.u8()? & GR_FORWARDING_PRESERVED != 0,
        });
    }
    Some(Capability::GracefulRestart {
        restart_state: head & GR_RESTART_STATE != 0,
        notification: head & GR_NOTIFICATION != 0,
        restart_time: head & GR_TIME_MASK,
        families,
    })
}

/// The value (after code and length) of a graceful restart capability.
pub(crate) fn graceful_restart_value(
    restart_state: bool,
    notification: bool,
    restart_time: u16,
    families: &[GracefulRestartFamily],
) -> Vec<u8> {
    let mut head = restart_time.min(GR_TIME_MASK);
    if restart_state {
        head |= GR_RESTART_STATE;
    }
    if notification {
        head |= GR_NOTIFICATION;
    }
    let mut v = Vec::with_capacity(2 + 4 * families.len());
    v.extend_from_slice(&head.to_be_bytes());
    for f in families {
        v.extend_from_slice(&f.afi.0.to_be_bytes());
        v.push(f.safi.0);
        v.push(if f.forwarding_preserved {
            GR_FORWARDING_PRESERVED
        } else {
            0
        });
    }
    v
}

pub(crate) fn encode(open: &Open) -> Result<Vec<u8>, EncodeError> {
    // RFC 6793 §4.2.1: an AS that does not fit 2 octets goes out as AS_TRANS.
    let my_as = u16::try_from(open.asn).unwrap_or(AS_TRANS);
    codec_bgprs::encode_open(open, my_as)
}

#[cfg(test)]
mod tests {
    use super::super::{decode as decode_msg, encode as encode_msg};
    use super::super::{DecodeContext, EncodeContext, Message};
    use super::*;
    use crate::packet::codes;

    fn open_message(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0xff; 16];
        v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        v.push(1);
        v.extend_from_slice(body);
        v
    }

    fn decode_open(bytes: &[u8]) -> Result<Open, crate::packet::DecodeError> {
        match decode_msg(bytes, &DecodeContext::default())? {
            Some((Message::Open(o), n)) => {
                assert_eq!(n, bytes.len());
                Ok(o)
            }
            other => panic!("expected an OPEN, got {other:?}"),
        }
    }

    fn fixed(version: u8, asn: u16, hold: u16, id: [u8; 4]) -> Vec<u8> {
        let mut v = vec![version];
        v.extend_from_slice(&asn.to_be_bytes());
        v.extend_from_slice(&hold.to_be_bytes());
        v.extend_from_slice(&id);
        v
    }

    /// Hand-made from the RFC formats, laid out as BIRD 2 sends it: one Capabilities parameter
    /// holding all capabilities; MP IPv4 and IPv6 unicast, route refresh, graceful restart
    /// (restart time 120, "aware" mode: no families), 4-octet AS, enhanced route refresh (70)
    /// and long-lived graceful restart (71) with no families. AS 4200000001, hold 240.
    #[test]
    fn bird2_style_open_decodes() {
        let mut body = fixed(4, AS_TRANS, 240, [10, 0, 0, 1]);
        let caps: &[u8] = &[
            0x01, 0x04, 0x00, 0x01, 0x00, 0x01, // MP IPv4 unicast
            0x01, 0x04, 0x00, 0x02, 0x00, 0x01, // MP IPv6 unicast
            0x02, 0x00, // route refresh
            0x40, 0x02, 0x00, 0x78, // graceful restart, 120 s, no families
            0x41, 0x04, 0xfa, 0x56, 0xea, 0x01, // 4-octet AS 4200000001
            0x46, 0x00, // enhanced route refresh
            0x47, 0x00, // long-lived graceful restart
        ];
        body.push(caps.len() as u8 + 2);
        body.push(2);
        body.push(caps.len() as u8);
        body.extend_from_slice(caps);
        let open = decode_open(&open_message(&body)).expect("decodes");
        assert_eq!(open.asn, 4_200_000_001);
        assert_eq!(open.hold_time, 240);
        assert_eq!(open.router_id, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            open.capabilities,
            vec![
                Capability::Multiprotocol {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST
                },
                Capability::Multiprotocol {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST
                },
                Capability::RouteRefresh,
                Capability::GracefulRestart {
                    restart_state: false,
                    notification: false,
                    restart_time: 120,
                    families: vec![]
                },
                Capability::FourOctetAs(4_200_000_001),
                Capability::Unknown {
                    code: 70,
                    data: vec![]
                },
                Capability::Unknown {
                    code: 71,
                    data: vec![]
                },
            ]
        );
    }

    /// Hand-made from the RFC formats, laid out as GoBGP sends it: route refresh first, MP
    /// families, graceful restart with the R and N bits and per-family F bits, 4-octet AS,
    /// ADD-PATH and the FQDN capability (73). AS 65001 (2-octet), hold 90.
    #[test]
    fn gobgp_style_open_decodes() {
        let mut body = fixed(4, 65001, 90, [192, 0, 2, 7]);
        let caps: &[u8] = &[
            0x02, 0x00, // route refresh
            0x01, 0x04, 0x00, 0x01, 0x00, 0x01, // MP IPv4 unicast
            0x01, 0x04, 0x00, 0x02, 0x00, 0x01, // MP IPv6 unicast
            0x40, 0x0a, 0xc0, 0x78, // GR: R and N bits, 120 s
            0x00, 0x01, 0x01, 0x80, // IPv4 unicast, forwarding preserved
            0x00, 0x02, 0x01, 0x00, // IPv6 unicast
            0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9, // 4-octet AS 65001
            0x45, 0x04, 0x00, 0x01, 0x01, 0x03, // ADD-PATH IPv4 unicast send/receive
            0x49, 0x05, 0x03, b'g', b'b', b'p', 0x00, // FQDN "gbp", no domain
        ];
        body.push(caps.len() as u8 + 2);
        body.push(2);
        body.push(caps.len() as u8);
        body.extend_from_slice(caps);
        let open = decode_open(&open_message(&body)).expect("decodes");
        assert_eq!(open.asn, 65001);
        assert_eq!(
            open.capabilities[3],
            Capability::GracefulRestart {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![
                    GracefulRestartFamily {
                        afi: Afi::IPV4,
                        safi: Safi::UNICAST,
                        forwarding_preserved: true
                    },
                    GracefulRestartFamily {
                        afi: Afi::IPV6,
                        safi: Safi::UNICAST,
                        forwarding_preserved: false
                    },
                ]
            }
        );
        assert_eq!(
            open.capabilities[5],
            Capability::AddPath(vec![(Afi::IPV4, Safi::UNICAST, AddPathMode::Both)])
        );
        assert_eq!(
            open.capabilities[6],
            Capability::Unknown {
                code: 73,
                data: vec![3, b'g', b'b', b'p', 0]
            }
        );
    }

    #[test]
    fn unknown_family_in_multiprotocol_is_kept_as_unknown() {
        // AFI 3 is not one bgp-rs names; the OPEN must still be accepted.
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[8, 2, 6, 0x01, 0x04, 0x00, 0x03, 0x00, 0x01]);
        let open = decode_open(&open_message(&body)).expect("decodes");
        assert_eq!(
            open.capabilities,
            vec![Capability::Unknown {
                code: 1,
                data: vec![0, 3, 0, 1]
            }]
        );
    }

    #[test]
    fn open_round_trips_with_every_capability() {
        let open = Open {
            version: 4,
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: Ipv4Addr::new(10, 1, 2, 3),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                },
                Capability::Multiprotocol {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(4_200_000_001),
                Capability::GracefulRestart {
                    restart_state: true,
                    notification: true,
                    restart_time: 300,
                    families: vec![GracefulRestartFamily {
                        afi: Afi::IPV6,
                        safi: Safi::UNICAST,
                        forwarding_preserved: true,
                    }],
                },
                Capability::AddPath(vec![(Afi::IPV4, Safi::UNICAST, AddPathMode::Receive)]),
                Capability::Unknown {
                    code: 73,
                    data: vec![1, b'x', 0],
                },
            ],
        };
        let bytes =
            encode_msg(&Message::Open(open.clone()), &EncodeContext::default()).expect("encodes");
        // My Autonomous System is AS_TRANS (RFC 6793 §4.2.1).
        assert_eq!(&bytes[20..22], &AS_TRANS.to_be_bytes());
        assert_eq!(decode_open(&bytes).expect("decodes"), open);
    }

    fn expect_open_error(body: &[u8], code: u8, subcode: u8) -> Vec<u8> {
        let err = decode_open(&open_message(body)).expect_err("must be rejected");
        let n = err.notification();
        assert_eq!((n.code, n.subcode), (code, subcode), "{err}");
        n.data
    }

    #[test]
    fn rfc7606_case5_unsupported_version_carries_version_4() {
        let mut body = fixed(3, 65001, 90, [1, 1, 1, 1]);
        body.push(0);
        let data = expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::UNSUPPORTED_VERSION_NUMBER,
        );
        assert_eq!(data, vec![0, 4]);
    }

    #[test]
    fn rfc7606_case5_hold_time_1_and_2_are_unacceptable() {
        for hold in [1, 2] {
            let mut body = fixed(4, 65001, hold, [1, 1, 1, 1]);
            body.push(0);
            expect_open_error(
                &body,
                codes::code::OPEN_MESSAGE_ERROR,
                codes::open::UNACCEPTABLE_HOLD_TIME,
            );
        }
        let mut body = fixed(4, 65001, 0, [1, 1, 1, 1]);
        body.push(0);
        assert!(
            decode_open(&open_message(&body)).is_ok(),
            "0 disables keepalives"
        );
    }

    #[test]
    fn rfc7606_case5_bgp_identifier_zero_is_bad() {
        let mut body = fixed(4, 65001, 90, [0, 0, 0, 0]);
        body.push(0);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::BAD_BGP_IDENTIFIER,
        );
    }

    #[test]
    fn rfc7606_case5_peer_as_zero_is_bad() {
        let mut body = fixed(4, 0, 90, [1, 1, 1, 1]);
        body.push(0);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::BAD_PEER_AS,
        );
        // RFC 7607: also in the 4-octet AS capability.
        let mut body = fixed(4, AS_TRANS, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[8, 2, 6, 0x41, 0x04, 0, 0, 0, 0]);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::BAD_PEER_AS,
        );
    }

    #[test]
    fn optional_parameter_area_ending_on_the_length_octet_is_rejected() {
        // Anchor case 4 (CVE-2022-43681): a parameter header with no length octet.
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[1, 2]);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::UNSPECIFIC,
        );
    }

    #[test]
    fn capability_overrunning_its_parameter_is_rejected() {
        // Anchor case 6: a capability length past the end of its parameter.
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[6, 2, 4, 0x49, 0xf0, b'a', b'b']);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::UNSPECIFIC,
        );
    }

    #[test]
    fn optional_parameter_length_must_match_the_message() {
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[9, 2, 2, 0x02, 0x00]);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::UNSPECIFIC,
        );
    }

    #[test]
    fn unsupported_optional_parameter_is_rejected() {
        // Type 1 (authentication, deprecated by RFC 5492).
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[3, 1, 1, 0]);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::UNSUPPORTED_OPTIONAL_PARAMETER,
        );
    }

    #[test]
    fn extended_optional_parameters_decode() {
        // RFC 9072 §2: 255, 255, then a 2-octet length and 2-octet parameter lengths.
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[255, 255, 0, 5, 2, 0, 2, 0x02, 0x00]);
        let open = decode_open(&open_message(&body)).expect("decodes");
        assert_eq!(open.capabilities, vec![Capability::RouteRefresh]);
        // Mis-sized extended length.
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[255, 255, 0, 9, 2, 0, 2, 0x02, 0x00]);
        expect_open_error(
            &body,
            codes::code::OPEN_MESSAGE_ERROR,
            codes::open::UNSPECIFIC,
        );
    }

    #[test]
    fn malformed_graceful_restart_is_kept_as_unknown() {
        let mut body = fixed(4, 65001, 90, [1, 1, 1, 1]);
        body.extend_from_slice(&[7, 2, 5, 0x40, 0x03, 0x00, 0x78, 0x00]);
        let open = decode_open(&open_message(&body)).expect("decodes");
        assert_eq!(
            open.capabilities,
            vec![Capability::Unknown {
                code: 64,
                data: vec![0x00, 0x78, 0x00]
            }]
        );
    }
}
