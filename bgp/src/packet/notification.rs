//! NOTIFICATION messages (RFC 4271 §4.5) and the registry of error codes and subcodes
//! (RFC 4271 §4.5 and §6, RFC 4486 and RFC 8538 for Cease, RFC 7313 for ROUTE-REFRESH).

use std::fmt;

/// A NOTIFICATION message: the error that closes a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease with the given subcode and no data (RFC 4486).
    pub fn cease(subcode: u8) -> Self {
        Notification::new(code::CEASE, subcode, Vec::new())
    }

    /// Hold Timer Expired (RFC 4271 §6.5).
    pub fn hold_timer_expired() -> Self {
        Notification::new(code::HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    /// A Cease/Hard Reset wrapping the NOTIFICATION that caused it (RFC 8538 §3): the data
    /// carries the inner code and subcode followed by the inner data. Used when graceful restart
    /// is negotiated with the N bit and the session must not be preserved.
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = Vec::with_capacity(2 + inner.data.len());
        data.push(inner.code);
        data.push(inner.subcode);
        data.extend_from_slice(&inner.data);
        Notification::new(code::CEASE, cease::HARD_RESET, data)
    }

    /// The Shutdown Communication of an Administrative Shutdown or Reset (RFC 9003 §2), if the
    /// data carries a well-formed one. Bounded by the data actually present.
    pub fn shutdown_communication(&self) -> Option<String> {
        if self.code != code::CEASE
            || !(self.subcode == cease::ADMINISTRATIVE_SHUTDOWN
                || self.subcode == cease::ADMINISTRATIVE_RESET)
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok().map(str::to_owned)
    }
}

/// Error codes (RFC 4271 §4.5; ROUTE-REFRESH from RFC 7313 §5).
pub mod code {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE_ERROR: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2; 7 from RFC 5492; 11 from RFC 9234).
pub mod open {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    pub const ROLE_MISMATCH: u8 = 11;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608 §4).
pub mod fsm {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_MESSAGE_IN_OPENSENT: u8 = 1;
    pub const UNEXPECTED_MESSAGE_IN_OPENCONFIRM: u8 = 2;
    pub const UNEXPECTED_MESSAGE_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486 §4; Hard Reset from RFC 8538 §5).
pub mod cease {
    pub const MAXIMUM_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
}

/// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
pub mod route_refresh {
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

fn code_name(code: u8) -> &'static str {
    match code {
        code::MESSAGE_HEADER_ERROR => "Message Header Error",
        code::OPEN_MESSAGE_ERROR => "OPEN Message Error",
        code::UPDATE_MESSAGE_ERROR => "UPDATE Message Error",
        code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
        code::FSM_ERROR => "Finite State Machine Error",
        code::CEASE => "Cease",
        code::ROUTE_REFRESH_MESSAGE_ERROR => "ROUTE-REFRESH Message Error",
        _ => "unknown error code",
    }
}

fn subcode_name(code: u8, subcode: u8) -> Option<&'static str> {
    let name = match (code, subcode) {
        (code::MESSAGE_HEADER_ERROR, header::CONNECTION_NOT_SYNCHRONIZED) => {
            "Connection Not Synchronized"
        }
        (code::MESSAGE_HEADER_ERROR, header::BAD_MESSAGE_LENGTH) => "Bad Message Length",
        (code::MESSAGE_HEADER_ERROR, header::BAD_MESSAGE_TYPE) => "Bad Message Type",
        (code::OPEN_MESSAGE_ERROR, open::UNSUPPORTED_VERSION_NUMBER) => {
            "Unsupported Version Number"
        }
        (code::OPEN_MESSAGE_ERROR, open::BAD_PEER_AS) => "Bad Peer AS",
        (code::OPEN_MESSAGE_ERROR, open::BAD_BGP_IDENTIFIER) => "Bad BGP Identifier",
        (code::OPEN_MESSAGE_ERROR, open::UNSUPPORTED_OPTIONAL_PARAMETER) => {
            "Unsupported Optional Parameter"
        }
        (code::OPEN_MESSAGE_ERROR, open::UNACCEPTABLE_HOLD_TIME) => "Unacceptable Hold Time",
        (code::OPEN_MESSAGE_ERROR, open::UNSUPPORTED_CAPABILITY) => "Unsupported Capability",
        (code::OPEN_MESSAGE_ERROR, open::ROLE_MISMATCH) => "Role Mismatch",
        (code::UPDATE_MESSAGE_ERROR, update::MALFORMED_ATTRIBUTE_LIST) => {
            "Malformed Attribute List"
        }
        (code::UPDATE_MESSAGE_ERROR, update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE) => {
            "Unrecognized Well-known Attribute"
        }
        (code::UPDATE_MESSAGE_ERROR, update::MISSING_WELL_KNOWN_ATTRIBUTE) => {
            "Missing Well-known Attribute"
        }
        (code::UPDATE_MESSAGE_ERROR, update::ATTRIBUTE_FLAGS_ERROR) => "Attribute Flags Error",
        (code::UPDATE_MESSAGE_ERROR, update::ATTRIBUTE_LENGTH_ERROR) => "Attribute Length Error",
        (code::UPDATE_MESSAGE_ERROR, update::INVALID_ORIGIN_ATTRIBUTE) => {
            "Invalid ORIGIN Attribute"
        }
        (code::UPDATE_MESSAGE_ERROR, update::INVALID_NEXT_HOP_ATTRIBUTE) => {
            "Invalid NEXT_HOP Attribute"
        }
        (code::UPDATE_MESSAGE_ERROR, update::OPTIONAL_ATTRIBUTE_ERROR) => {
            "Optional Attribute Error"
        }
        (code::UPDATE_MESSAGE_ERROR, update::INVALID_NETWORK_FIELD) => "Invalid Network Field",
        (code::UPDATE_MESSAGE_ERROR, update::MALFORMED_AS_PATH) => "Malformed AS_PATH",
        (code::FSM_ERROR, fsm::UNEXPECTED_MESSAGE_IN_OPENSENT) => {
            "Receive Unexpected Message in OpenSent State"
        }
        (code::FSM_ERROR, fsm::UNEXPECTED_MESSAGE_IN_OPENCONFIRM) => {
            "Receive Unexpected Message in OpenConfirm State"
        }
        (code::FSM_ERROR, fsm::UNEXPECTED_MESSAGE_IN_ESTABLISHED) => {
            "Receive Unexpected Message in Established State"
        }
        (code::CEASE, cease::MAXIMUM_PREFIXES_REACHED) => "Maximum Number of Prefixes Reached",
        (code::CEASE, cease::ADMINISTRATIVE_SHUTDOWN) => "Administrative Shutdown",
        (code::CEASE, cease::PEER_DECONFIGURED) => "Peer De-configured",
        (code::CEASE, cease::ADMINISTRATIVE_RESET) => "Administrative Reset",
        (code::CEASE, cease::CONNECTION_REJECTED) => "Connection Rejected",
        (code::CEASE, cease::OTHER_CONFIGURATION_CHANGE) => "Other Configuration Change",
        (code::CEASE, cease::CONNECTION_COLLISION_RESOLUTION) => "Connection Collision Resolution",
        (code::CEASE, cease::OUT_OF_RESOURCES) => "Out of Resources",
        (code::CEASE, cease::HARD_RESET) => "Hard Reset",
        (code::ROUTE_REFRESH_MESSAGE_ERROR, route_refresh::INVALID_MESSAGE_LENGTH) => {
            "Invalid Message Length"
        }
        _ => return None,
    };
    Some(name)
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", code_name(self.code), self.code)?;
        match subcode_name(self.code, self.subcode) {
            Some(name) => write!(f, " / {name} ({})", self.subcode)?,
            None => write!(f, " / subcode {}", self.subcode)?,
        }
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": {text:?}")?;
        } else if !self.data.is_empty() {
            write!(f, ", {} octets of data", self.data.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_code_and_subcode() {
        let n = Notification::new(
            code::UPDATE_MESSAGE_ERROR,
            update::MALFORMED_AS_PATH,
            vec![],
        );
        assert_eq!(
            n.to_string(),
            "UPDATE Message Error (3) / Malformed AS_PATH (11)"
        );
    }

    #[test]
    fn shutdown_communication_is_bounded_by_the_data() {
        // RFC 9003 §2: length octet, then UTF-8. A length past the data yields nothing.
        let ok = Notification::new(
            code::CEASE,
            cease::ADMINISTRATIVE_SHUTDOWN,
            b"\x03bye".to_vec(),
        );
        assert_eq!(ok.shutdown_communication().as_deref(), Some("bye"));
        let overrun =
            Notification::new(code::CEASE, cease::ADMINISTRATIVE_SHUTDOWN, vec![200, b'a']);
        assert_eq!(overrun.shutdown_communication(), None);
        assert!(overrun.to_string().contains("2 octets of data"));
    }

    #[test]
    fn hard_reset_wraps_the_inner_notification() {
        let inner = Notification::hold_timer_expired();
        let outer = Notification::hard_reset(&inner);
        assert_eq!(
            (outer.code, outer.subcode),
            (code::CEASE, cease::HARD_RESET)
        );
        assert_eq!(outer.data, vec![code::HOLD_TIMER_EXPIRED, 0]);
    }
}
