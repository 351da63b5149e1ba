//! The BGP wire layer: our own message types, `decode` and `encode`.
//!
//! This is the only module that knows about bgp-rs (see `codec_bgprs.rs`); everything it
//! exports is our own type, so the codec behind it can be replaced (netgauze-bgp-pkt is the
//! maintained alternative) by touching only this directory.
//!
//! ```text
//!  bytes --decode--> header::frame (RFC 4271 §6.1 checks)
//!                      |-- OPEN          open.rs        (§6.2 checks; capability values via bgp-rs)
//!                      |-- UPDATE        update.rs      (framing, NLRI, RFC 4760 MP attributes)
//!                      |                   attributes.rs (per-attribute RFC 7606 classification,
//!                      |                                  RFC 6793 AS4 merge; simple values via bgp-rs)
//!                      |-- NOTIFICATION  codec_bgprs.rs
//!                      |-- KEEPALIVE
//!                      '-- ROUTE-REFRESH route refresh below (RFC 2918, RFC 7313)
//! ```
//!
//! bgp-rs only ever sees bytes whose framing this module has already checked, and only for the
//! parts it decodes correctly (see `codec_bgprs.rs` for the list and the reasons). It is never
//! given an ATTR_SET (type 128), whose decoder prints to stdout.

mod as_path;
mod attributes;
mod codec_bgprs;
mod error;
mod header;
mod notification;
mod open;
mod update;
mod wire;

#[cfg(test)]
mod tests;

pub use as_path::{AsPath, AsSegment, SegmentType};
pub use attributes::{Aggregator, LargeCommunity, Origin, PathAttributes, RawAttribute};
pub use error::{AttributeError, DecodeError, EncodeError, MessageError, Treatment};
pub use notification::Notification;
pub use open::{AddPathMode, Capability, GracefulRestartFamily, Open};
pub use update::{MpReach, MpUnreach, Update};

/// NOTIFICATION error codes and subcodes, by message: `codes::code::CEASE`,
/// `codes::cease::HARD_RESET`, `codes::update::MALFORMED_AS_PATH`, ...
pub mod codes {
    pub use super::notification::{cease, code, fsm, header, open, route_refresh, update};
}

use wire::Reader;

/// The BGP version we speak (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;

/// The 2-octet stand-in for a 4-octet AS number (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// An Address Family Identifier (IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// A Subsequent Address Family Identifier (RFC 4760 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
    pub const MULTICAST: Safi = Safi(2);
}

/// One BGP message.
// UPDATE is by far the largest and the most frequent variant; boxing it would add an allocation
// per UPDATE to save copying a few hundred bytes once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// A ROUTE-REFRESH message (RFC 2918 §3; subtypes from RFC 7313 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
    /// 0: normal request, 1: Beginning of Route Refresh, 2: End of Route Refresh (RFC 7313).
    pub subtype: u8,
}

impl RouteRefresh {
    pub const REQUEST: u8 = 0;
    pub const BEGINNING_OF_ROUTE_REFRESH: u8 = 1;
    pub const END_OF_ROUTE_REFRESH: u8 = 2;
}

/// What `decode` needs to know about the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// Both sides advertised the 4-octet AS capability (RFC 6793): AS_PATH and AGGREGATOR carry
    /// 4-octet AS numbers, and AS4_PATH / AS4_AGGREGATOR are not expected.
    pub four_octet_as: bool,
    /// The peer is in another AS: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST from it are
    /// discarded (RFC 7606 §7.5, §7.9, §7.10) and its AS must lead the AS_PATH.
    pub peer_is_ebgp: bool,
    /// The peer's AS, for the leftmost-AS check on eBGP sessions (RFC 4271 §6.3, RFC 7606
    /// §7.2). 0 skips the check. ADD-PATH (RFC 7911) is not decoded yet.
    pub peer_asn: u32,
}

/// What `encode` needs to know about the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeContext {
    /// Both sides advertised the 4-octet AS capability. Without it, AS numbers above 65535 go
    /// out as AS_TRANS with AS4_PATH / AS4_AGGREGATOR carrying the real ones (RFC 6793 §4.2.2).
    pub four_octet_as: bool,
}

/// Frames and decodes the first message of a stream buffer.
///
/// Returns `Ok(None)` when `buf` does not hold a whole message yet, and otherwise the message and
/// the number of bytes it used. An UPDATE with malformed attributes that RFC 7606 lets the
/// session survive comes back as `Ok` with [`Update::errors`] filled in; the caller applies
/// [`Update::treatment`]. Anything that must reset the session is a [`DecodeError`] whose
/// [`DecodeError::notification`] is the NOTIFICATION to send.
pub fn decode(buf: &[u8], ctx: &DecodeContext) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(frame) = header::frame(buf)? else {
        return Ok(None);
    };
    let message = match frame.msg_type {
        header::TYPE_OPEN => Message::Open(open::decode(frame.body)?),
        header::TYPE_UPDATE => Message::Update(update::decode(frame.body, ctx)?),
        header::TYPE_NOTIFICATION => {
            Message::Notification(codec_bgprs::decode_notification(frame.body))
        }
        header::TYPE_KEEPALIVE => Message::Keepalive,
        header::TYPE_ROUTE_REFRESH => Message::RouteRefresh(decode_route_refresh(frame.body)),
        // `frame` has already rejected every other type.
        msg_type => return Err(MessageError::BadType { msg_type }.into()),
    };
    Ok(Some((message, frame.len)))
}

/// Encodes one message, header included.
///
/// Fails only for messages that cannot be represented: longer than 4096 octets, an OPEN whose
/// optional parameters exceed 255 octets, or prefixes of the wrong family in a field.
pub fn encode(msg: &Message, ctx: &EncodeContext) -> Result<Vec<u8>, EncodeError> {
    match msg {
        Message::Open(o) => open::encode(o),
        Message::Update(u) => header::with_header(header::TYPE_UPDATE, &update::encode(u, ctx)?),
        Message::Notification(n) => codec_bgprs::encode_notification(n),
        Message::Keepalive => codec_bgprs::encode_keepalive(),
        Message::RouteRefresh(r) => {
            let mut body = Vec::with_capacity(4);
            body.extend_from_slice(&r.afi.0.to_be_bytes());
            body.push(r.subtype);
            body.push(r.safi.0);
            header::with_header(header::TYPE_ROUTE_REFRESH, &body)
        }
    }
}

/// RFC 2918 §3 / RFC 7313 §3: AFI (2), subtype (1, "Reserved" before RFC 7313), SAFI (1). The
/// length was checked by the framing. AFI/SAFI values we do not support are passed on; the
/// caller ignores a refresh for a family that was not negotiated (RFC 2918 §4).
fn decode_route_refresh(body: &[u8]) -> RouteRefresh {
    let mut r = Reader::new(body);
    RouteRefresh {
        afi: Afi(r.u16().unwrap_or(0)),
        subtype: r.u8().unwrap_or(0),
        safi: Safi(r.u8().unwrap_or(0)),
    }
}
