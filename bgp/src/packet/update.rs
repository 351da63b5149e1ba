//! UPDATE messages (RFC 4271 §4.3): framing, IPv4 NLRI, the multiprotocol attributes for IPv6
//! (RFC 4760, next hops per RFC 2545) and End-of-RIB (RFC 4724 §2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::attributes::{self, flag, type_code, PathAttributes};
use super::error::{AttributeError, EncodeError, MessageError, Treatment};
use super::wire::Reader;
use super::{Afi, DecodeContext, EncodeContext, Safi};

/// An UPDATE message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// IPv4 unicast routes withdrawn in the classic field.
    pub withdrawn: Vec<IpNet>,
    pub attributes: PathAttributes,
    /// IPv4 unicast routes announced in the classic field.
    pub nlri: Vec<IpNet>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Malformed attributes that RFC 7606 lets the session survive; empty on encode.
    pub errors: Vec<AttributeError>,
}

/// MP_REACH_NLRI (RFC 4760 §3) for a supported family: IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub afi: Afi,
    pub safi: Safi,
    pub next_hop: IpAddr,
    /// The link-local address of a 32-octet IPv6 next hop (RFC 2545 §3).
    pub link_local_next_hop: Option<Ipv6Addr>,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub afi: Afi,
    pub safi: Safi,
    pub withdrawn: Vec<IpNet>,
}

impl Update {
    /// The strongest treatment among the attribute errors (RFC 7606 §3(j)); `None` if the
    /// UPDATE is clean. With `TreatAsWithdraw`, every prefix in `nlri` and `mp_reach` is to be
    /// handled as withdrawn; with `AttributeDiscard`, the routes stand and the offending
    /// attributes are already absent from `attributes`.
    pub fn treatment(&self) -> Option<Treatment> {
        self.errors.iter().map(|e| e.treatment).max()
    }

    /// The family this UPDATE marks End-of-RIB for (RFC 4724 §2): an UPDATE with nothing in it
    /// for IPv4 unicast, or one holding only an empty MP_UNREACH_NLRI for other families.
    pub fn end_of_rib(&self) -> Option<(Afi, Safi)> {
        if !self.withdrawn.is_empty()
            || !self.nlri.is_empty()
            || self.mp_reach.is_some()
            || !self.errors.is_empty()
            || self.attributes != PathAttributes::default()
        {
            return None;
        }
        match &self.mp_unreach {
            None => Some((Afi::IPV4, Safi::UNICAST)),
            Some(u) if u.withdrawn.is_empty() => Some((u.afi, u.safi)),
            Some(_) => None,
        }
    }

    /// The End-of-RIB marker for a family.
    pub fn end_of_rib_marker(afi: Afi, safi: Safi) -> Update {
        let mut u = Update::default();
        if (afi, safi) != (Afi::IPV4, Safi::UNICAST) {
            u.mp_unreach = Some(MpUnreach {
                afi,
                safi,
                withdrawn: Vec::new(),
            });
        }
        u
    }
}

pub(crate) fn decode(body: &[u8], ctx: &DecodeContext) -> Result<Update, MessageError> {
    let overrun = |reason| MessageError::MalformedAttributeList { reason };
    let mut r = Reader::new(body);
    // RFC 4271 §6.3: lengths that overrun the message are a Malformed Attribute List; the
    // framing guarantees the 4 octets of the two length fields, not what they claim.
    let withdrawn_len = r.u16().ok_or(overrun("UPDATE shorter than 4 octets"))?;
    let withdrawn_bytes = r
        .take(usize::from(withdrawn_len))
        .ok_or(overrun("withdrawn routes length overruns the message"))?;
    let attr_len = r.u16().ok_or(overrun(
        "withdrawn routes leave no room for the attribute length",
    ))?;
    let attr_bytes = r
        .take(usize::from(attr_len))
        .ok_or(overrun("total path attribute length overruns the message"))?;
    let nlri_bytes = r.rest();

    // RFC 7606 §5.3: NLRI that cannot be parsed resets the session.
    let withdrawn = decode_prefixes(Afi::IPV4, withdrawn_bytes)
        .map_err(|reason| MessageError::InvalidNetworkField { reason })?;
    let decoded = attributes::decode(attr_bytes, ctx)?;
    let nlri = decode_prefixes(Afi::IPV4, nlri_bytes)
        .map_err(|reason| MessageError::InvalidNetworkField { reason })?;

    let mut update = Update {
        withdrawn,
        attributes: decoded.attributes,
        nlri,
        mp_reach: decoded.mp_reach,
        mp_unreach: decoded.mp_unreach,
        errors: decoded.errors,
    };

    // RFC 7606 §3(d): a missing well-known mandatory attribute is treat-as-withdraw. They are
    // mandatory only when something is announced; NEXT_HOP only for the classic NLRI
    // (RFC 4760 §3). An attribute that was present but malformed is already reported.
    let announces =
        !update.nlri.is_empty() || update.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
    if announces {
        let seen = |code: u8| decoded.seen[usize::from(code)];
        let mut missing = |code, reason| {
            if !seen(code) {
                update.errors.push(AttributeError {
                    type_code: code,
                    treatment: Treatment::TreatAsWithdraw,
                    reason,
                });
            }
        };
        missing(type_code::ORIGIN, "missing well-known attribute ORIGIN");
        missing(type_code::AS_PATH, "missing well-known attribute AS_PATH");
        if !update.nlri.is_empty() {
            missing(type_code::NEXT_HOP, "missing well-known attribute NEXT_HOP");
        }
    }
    Ok(update)
}

/// A sequence of (length, prefix) NLRI encodings (RFC 4271 §4.3, RFC 4760 §5). Host bits past
/// the prefix length are cleared.
fn decode_prefixes(afi: Afi, bytes: &[u8]) -> Result<Vec<IpNet>, &'static str> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8().ok_or("prefix truncated")?;
        let octets = r
            .take(usize::from(len).div_ceil(8))
            .ok_or("prefix overruns its field")?;
        let net = if afi == Afi::IPV4 {
            let mut a = [0u8; 4];
            a.get_mut(..octets.len())
                .ok_or("IPv4 prefix length exceeds 32")?
                .copy_from_slice(octets);
            Ipv4Net::new(Ipv4Addr::from(a), len)
                .map(|n| IpNet::V4(n.trunc()))
                .map_err(|_| "IPv4 prefix length exceeds 32")?
        } else {
            let mut a = [0u8; 16];
            a.get_mut(..octets.len())
                .ok_or("IPv6 prefix length exceeds 128")?
                .copy_from_slice(octets);
            Ipv6Net::new(Ipv6Addr::from(a), len)
                .map(|n| IpNet::V6(n.trunc()))
                .map_err(|_| "IPv6 prefix length exceeds 128")?
        };
        out.push(net);
    }
    Ok(out)
}

fn is_supported(afi: Afi, safi: Safi) -> bool {
    (afi == Afi::IPV4 || afi == Afi::IPV6) && safi == Safi::UNICAST
}

/// MP_REACH_NLRI (RFC 4760 §3). `Ok(None)` for a family we do not support. A malformed one
/// cannot be treated as withdraw, since its NLRI is what would be withdrawn: session reset
/// (RFC 7606 §7.11; AFI/SAFI disable is not implemented).
pub(crate) fn decode_mp_reach(value: &[u8], raw: &[u8]) -> Result<Option<MpReach>, MessageError> {
    let err = |reason| MessageError::MalformedMpAttribute {
        type_code: type_code::MP_REACH_NLRI,
        reason,
        attribute: raw.to_vec(),
    };
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(err("MP_REACH_NLRI shorter than its fixed fields"));
    };
    let (afi, safi) = (Afi(afi), Safi(safi));
    let nh = r
        .take(usize::from(nh_len))
        .ok_or(err("next hop overruns MP_REACH_NLRI"))?;
    r.u8().ok_or(err("MP_REACH_NLRI has no reserved octet"))?;
    if !is_supported(afi, safi) {
        return Ok(None);
    }
    let (next_hop, link_local_next_hop) = match (afi, nh.len()) {
        (Afi::IPV4, 4) => (IpAddr::V4(Ipv4Addr::from(octets::<4>(nh))), None),
        // RFC 2545 §3: a global address, optionally followed by a link-local one.
        (Afi::IPV6, 16) => (IpAddr::V6(Ipv6Addr::from(octets::<16>(nh))), None),
        (Afi::IPV6, 32) => (
            IpAddr::V6(Ipv6Addr::from(octets::<16>(nh))),
            Some(Ipv6Addr::from(octets::<16>(&nh[16..]))),
        ),
        _ => return Err(err("next hop length does not match the AFI")),
    };
    let nlri = decode_prefixes(afi, r.rest()).map_err(err)?;
    Ok(Some(MpReach {
        afi,
        safi,
        next_hop,
        link_local_next_hop,
        nlri,
    }))
}

/// MP_UNREACH_NLRI (RFC 4760 §4). For a family we do not support, only the End-of-RIB form
/// (no withdrawn routes) is kept.
pub(crate) fn decode_mp_unreach(
    value: &[u8],
    raw: &[u8],
) -> Result<Option<MpUnreach>, MessageError> {
    let err = |reason| MessageError::MalformedMpAttribute {
        type_code: type_code::MP_UNREACH_NLRI,
        reason,
        attribute: raw.to_vec(),
    };
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(err("MP_UNREACH_NLRI shorter than its fixed fields"));
    };
    let (afi, safi) = (Afi(afi), Safi(safi));
    if !is_supported(afi, safi) {
        return Ok(r.is_empty().then(|| MpUnreach {
            afi,
            safi,
            withdrawn: Vec::new(),
        }));
    }
    let withdrawn = decode_prefixes(afi, r.rest()).map_err(err)?;
    Ok(Some(MpUnreach {
        afi,
        safi,
        withdrawn,
    }))
}

/// The first N octets of a slice whose length the caller has checked.
fn octets<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = b.len().min(N);
    a[..n].copy_from_slice(&b[..n]);
    a
}

fn put_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net.trunc().addr() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

fn put_prefixes(out: &mut Vec<u8>, afi: Afi, nets: &[IpNet]) -> Result<(), EncodeError> {
    for net in nets {
        let family_ok = match net {
            IpNet::V4(_) => afi == Afi::IPV4,
            IpNet::V6(_) => afi == Afi::IPV6,
        };
        if !family_ok {
            return Err(EncodeError::WrongFamily { prefix: *net });
        }
        put_prefix(out, net);
    }
    Ok(())
}

fn put_ipv4_field(out: &mut Vec<u8>, nets: &[IpNet]) -> Result<(), EncodeError> {
    for net in nets {
        if !matches!(net, IpNet::V4(_)) {
            return Err(EncodeError::NotIpv4 { prefix: *net });
        }
        put_prefix(out, net);
    }
    Ok(())
}

fn put_len16(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), EncodeError> {
    let len = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong { what })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Encodes an UPDATE body. MP attributes go first (RFC 7606 §5.1), so that a receiver that
/// meets a malformed attribute later still has the NLRI it would withdraw.
pub(crate) fn encode(u: &Update, ctx: &EncodeContext) -> Result<Vec<u8>, EncodeError> {
    let mut withdrawn = Vec::new();
    put_ipv4_field(&mut withdrawn, &u.withdrawn)?;

    let mut attrs = Vec::new();
    if let Some(mp) = &u.mp_reach {
        let mut v = Vec::new();
        v.extend_from_slice(&mp.afi.0.to_be_bytes());
        v.push(mp.safi.0);
        let mut nh = match mp.next_hop {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        if let Some(ll) = mp.link_local_next_hop {
            nh.extend_from_slice(&ll.octets());
        }
        v.push(nh.len() as u8); // at most 32
        v.extend_from_slice(&nh);
        v.push(0); // Reserved (RFC 4760 §3)
        put_prefixes(&mut v, mp.afi, &mp.nlri)?;
        attributes::put_attribute(&mut attrs, flag::OPTIONAL, type_code::MP_REACH_NLRI, &v)?;
    }
    if let Some(mp) = &u.mp_unreach {
        let mut v = Vec::new();
        v.extend_from_slice(&mp.afi.0.to_be_bytes());
        v.push(mp.safi.0);
        put_prefixes(&mut v, mp.afi, &mp.withdrawn)?;
        attributes::put_attribute(&mut attrs, flag::OPTIONAL, type_code::MP_UNREACH_NLRI, &v)?;
    }
    attributes::encode(&u.attributes, ctx, &mut attrs)?;

    let mut body = Vec::with_capacity(4 + withdrawn.len() + attrs.len());
    put_len16(&mut body, withdrawn.len(), "withdrawn routes")?;
    body.extend_from_slice(&withdrawn);
    put_len16(&mut body, attrs.len(), "path attributes")?;
    body.extend_from_slice(&attrs);
    put_ipv4_field(&mut body, &u.nlri)?;
    Ok(body)
}
