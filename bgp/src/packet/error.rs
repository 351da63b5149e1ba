//! Decode and encode errors, and the one mapping from a decode error to its NOTIFICATION.
//!
//! Two kinds of trouble come out of `decode`:
//! - [`DecodeError::Fatal`]: the session must be reset (RFC 4271 §6). The [`MessageError`] says
//!   what was wrong; [`MessageError::notification`] is the only place that turns it into the
//!   NOTIFICATION code, subcode and data to send.
//! - [`AttributeError`]s attached to an otherwise usable UPDATE, each classified per RFC 7606
//!   (attribute-discard or treat-as-withdraw). The caller applies the strongest one
//!   ([`super::Update::treatment`], RFC 7606 §3(j)).

use std::fmt;

use super::notification::{self, code, Notification};

/// How an UPDATE with a malformed attribute is handled (RFC 7606 §2), weakest first so that
/// `max()` picks the strongest (§3(j)). AFI/SAFI disable is not implemented: where it would
/// apply, the session is reset, which the RFC allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Treatment {
    /// The attribute is dropped; the routes are kept.
    AttributeDiscard,
    /// Every route the UPDATE announces (NLRI and MP_REACH_NLRI) is handled as withdrawn.
    TreatAsWithdraw,
    /// The session is reset. `decode` reports these as [`DecodeError::Fatal`] instead.
    SessionReset,
}

/// One malformed attribute in an UPDATE that was otherwise decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeError {
    pub type_code: u8,
    pub treatment: Treatment,
    pub reason: &'static str,
}

impl fmt::Display for AttributeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attribute {}: {} ({:?})",
            self.type_code, self.reason, self.treatment
        )
    }
}

/// What made a message unacceptable for the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("header marker is not all ones")]
    BadMarker,
    #[error("bad message length {length}")]
    BadLength { length: u16 },
    #[error("unknown message type {msg_type}")]
    BadType { msg_type: u8 },
    #[error("ROUTE-REFRESH of {} octets", message.len())]
    RouteRefreshLength { message: Vec<u8> },
    #[error("unsupported BGP version {version}")]
    UnsupportedVersion { version: u8 },
    #[error("bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    #[error("bad BGP identifier {id}")]
    BadBgpIdentifier { id: std::net::Ipv4Addr },
    #[error("unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    #[error("unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter { param_type: u8 },
    #[error("malformed OPEN optional parameters: {reason}")]
    MalformedOptionalParameters { reason: &'static str },
    #[error("malformed attribute list: {reason}")]
    MalformedAttributeList { reason: &'static str },
    #[error("attribute {type_code} appears more than once")]
    DuplicateMpAttribute { type_code: u8 },
    #[error("unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnown { type_code: u8, attribute: Vec<u8> },
    #[error("malformed attribute {type_code}: {reason}")]
    MalformedMpAttribute {
        type_code: u8,
        reason: &'static str,
        attribute: Vec<u8>,
    },
    #[error("invalid network field: {reason}")]
    InvalidNetworkField { reason: &'static str },
}

impl MessageError {
    /// The NOTIFICATION that reports this error to the peer. Every fatal decode error maps here
    /// and nowhere else.
    pub fn notification(&self) -> Notification {
        use notification::{header, open, route_refresh, update};
        let (c, s, data) = match self {
            // RFC 4271 §6.1: header errors; the data carries the bad length or type.
            MessageError::BadMarker => (
                code::MESSAGE_HEADER_ERROR,
                header::CONNECTION_NOT_SYNCHRONIZED,
                Vec::new(),
            ),
            MessageError::BadLength { length } => (
                code::MESSAGE_HEADER_ERROR,
                header::BAD_MESSAGE_LENGTH,
                length.to_be_bytes().to_vec(),
            ),
            MessageError::BadType { msg_type } => (
                code::MESSAGE_HEADER_ERROR,
                header::BAD_MESSAGE_TYPE,
                vec![*msg_type],
            ),
            // RFC 7313 §5: the data is the complete ROUTE-REFRESH message.
            MessageError::RouteRefreshLength { message } => (
                code::ROUTE_REFRESH_MESSAGE_ERROR,
                route_refresh::INVALID_MESSAGE_LENGTH,
                message.clone(),
            ),
            // RFC 4271 §6.2: the data is the largest supported version below the peer's bid,
            // as 2 octets. We support 4 only.
            MessageError::UnsupportedVersion { .. } => (
                code::OPEN_MESSAGE_ERROR,
                open::UNSUPPORTED_VERSION_NUMBER,
                u16::from(super::BGP_VERSION).to_be_bytes().to_vec(),
            ),
            MessageError::BadPeerAs { .. } => {
                (code::OPEN_MESSAGE_ERROR, open::BAD_PEER_AS, Vec::new())
            }
            MessageError::BadBgpIdentifier { .. } => (
                code::OPEN_MESSAGE_ERROR,
                open::BAD_BGP_IDENTIFIER,
                Vec::new(),
            ),
            MessageError::UnacceptableHoldTime { .. } => (
                code::OPEN_MESSAGE_ERROR,
                open::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
            ),
            MessageError::UnsupportedOptionalParameter { .. } => (
                code::OPEN_MESSAGE_ERROR,
                open::UNSUPPORTED_OPTIONAL_PARAMETER,
                Vec::new(),
            ),
            MessageError::MalformedOptionalParameters { .. } => {
                (code::OPEN_MESSAGE_ERROR, open::UNSPECIFIC, Vec::new())
            }
            // RFC 4271 §6.3 and RFC 7606 §3(g), §4: length fields that cannot be reconciled,
            // and a repeated MP_REACH_NLRI / MP_UNREACH_NLRI.
            MessageError::MalformedAttributeList { .. }
            | MessageError::DuplicateMpAttribute { .. } => (
                code::UPDATE_MESSAGE_ERROR,
                update::MALFORMED_ATTRIBUTE_LIST,
                Vec::new(),
            ),
            // RFC 4271 §6.3: the data is the unrecognized attribute (type, length and value).
            MessageError::UnrecognizedWellKnown { attribute, .. } => (
                code::UPDATE_MESSAGE_ERROR,
                update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                attribute.clone(),
            ),
            // RFC 4760 §7: a malformed MP_REACH_NLRI / MP_UNREACH_NLRI is an Optional Attribute
            // Error; RFC 4271 §6.3 puts the attribute in the data.
            MessageError::MalformedMpAttribute { attribute, .. } => (
                code::UPDATE_MESSAGE_ERROR,
                update::OPTIONAL_ATTRIBUTE_ERROR,
                attribute.clone(),
            ),
            // RFC 4271 §6.3, RFC 7606 §5.3: NLRI that cannot be parsed.
            MessageError::InvalidNetworkField { .. } => (
                code::UPDATE_MESSAGE_ERROR,
                update::INVALID_NETWORK_FIELD,
                Vec::new(),
            ),
        };
        Notification::new(c, s, data)
    }
}

/// A message that cannot be accepted: send [`DecodeError::notification`] and close the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Fatal(MessageError),
}

impl DecodeError {
    /// The NOTIFICATION to send before closing (see [`MessageError::notification`]).
    pub fn notification(&self) -> Notification {
        match self {
            DecodeError::Fatal(e) => e.notification(),
        }
    }
}

impl From<MessageError> for DecodeError {
    fn from(e: MessageError) -> Self {
        DecodeError::Fatal(e)
    }
}

/// A message that cannot be put on the wire as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {length} octets exceeds the 4096-octet maximum")]
    TooLong { length: usize },
    #[error("{what} does not fit its length field")]
    FieldTooLong { what: &'static str },
    #[error("prefix {prefix} is not IPv4 and cannot go in the UPDATE's NLRI fields")]
    NotIpv4 { prefix: ipnet::IpNet },
    #[error("prefix {prefix} does not match the family of its MP attribute")]
    WrongFamily { prefix: ipnet::IpNet },
    #[error("bgp-rs could not encode the message: {0}")]
    Codec(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongest_treatment_wins() {
        // RFC 7606 §3(j).
        let all = [
            Treatment::TreatAsWithdraw,
            Treatment::AttributeDiscard,
            Treatment::SessionReset,
        ];
        assert_eq!(all.iter().max(), Some(&Treatment::SessionReset));
        assert!(Treatment::AttributeDiscard < Treatment::TreatAsWithdraw);
    }

    #[test]
    fn header_errors_carry_their_data() {
        let n = MessageError::BadLength { length: 5000 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0x13, 0x88]));
        let n = MessageError::BadType { msg_type: 9 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
        let n = MessageError::UnsupportedVersion { version: 5 }.notification();
        assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
    }
}
