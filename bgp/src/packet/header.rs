//! The message header (RFC 4271 §4.1) and framing of one message out of a byte stream,
//! with the header checks of RFC 4271 §6.1.

use super::error::{EncodeError, MessageError};

pub(crate) const MARKER: [u8; 16] = [0xff; 16];
pub(crate) const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1. Extended messages (RFC 8654) are not negotiated.
pub(crate) const MAX_MESSAGE_LEN: usize = 4096;

pub(crate) const TYPE_OPEN: u8 = 1;
pub(crate) const TYPE_UPDATE: u8 = 2;
pub(crate) const TYPE_NOTIFICATION: u8 = 3;
pub(crate) const TYPE_KEEPALIVE: u8 = 4;
/// RFC 2918 §3.
pub(crate) const TYPE_ROUTE_REFRESH: u8 = 5;

/// The minimum length of each message type, header included (RFC 4271 §4.2-4.5, RFC 2918 §3).
const MIN_OPEN_LEN: usize = 29;
const MIN_UPDATE_LEN: usize = 23;
const MIN_NOTIFICATION_LEN: usize = 21;
const KEEPALIVE_LEN: usize = 19;
const ROUTE_REFRESH_LEN: usize = 23;

/// One framed message: its type, its body (after the header), and how many bytes of the
/// stream it used.
pub(crate) struct Frame<'a> {
    pub(crate) msg_type: u8,
    pub(crate) body: &'a [u8],
    pub(crate) len: usize,
}

/// Frames one message from the start of `buf`. `Ok(None)` means more bytes are needed.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, MessageError> {
    // Reject a bad marker as soon as the bytes that are in show it, instead of waiting for a
    // length that may never come.
    let seen = buf.len().min(MARKER.len());
    if buf[..seen] != MARKER[..seen] {
        // RFC 4271 §6.1: Connection Not Synchronized.
        return Err(MessageError::BadMarker);
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = u16::from_be_bytes([buf[16], buf[17]]);
    let msg_type = buf[18];
    let len = usize::from(length);
    // RFC 4271 §6.1: Bad Message Length, with the length as data.
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(MessageError::BadLength { length });
    }
    let length_fits_type = match msg_type {
        TYPE_OPEN => len >= MIN_OPEN_LEN,
        TYPE_UPDATE => len >= MIN_UPDATE_LEN,
        TYPE_NOTIFICATION => len >= MIN_NOTIFICATION_LEN,
        TYPE_KEEPALIVE => len == KEEPALIVE_LEN,
        // RFC 7313 §5 reports a wrong ROUTE-REFRESH length with its own code, carrying the
        // whole message, so it is checked once the message is complete.
        TYPE_ROUTE_REFRESH => true,
        // RFC 4271 §6.1: Bad Message Type, with the type as data.
        _ => return Err(MessageError::BadType { msg_type }),
    };
    if !length_fits_type {
        return Err(MessageError::BadLength { length });
    }
    let Some(message) = buf.get(..len) else {
        return Ok(None);
    };
    if msg_type == TYPE_ROUTE_REFRESH && len != ROUTE_REFRESH_LEN {
        return Err(MessageError::RouteRefreshLength {
            message: message.to_vec(),
        });
    }
    Ok(Some(Frame {
        msg_type,
        body: &message[HEADER_LEN..],
        len,
    }))
}

/// Prepends the header to a message body.
pub(crate) fn with_header(msg_type: u8, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let len = HEADER_LEN + body.len();
    if len > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong { length: len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&MARKER);
    // Fits: checked against MAX_MESSAGE_LEN above.
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(msg_type);
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u16, msg_type: u8) -> Vec<u8> {
        let mut v = MARKER.to_vec();
        v.extend_from_slice(&len.to_be_bytes());
        v.push(msg_type);
        v
    }

    #[test]
    fn partial_header_needs_more() {
        assert!(matches!(frame(&[0xff; 10]), Ok(None)));
        assert!(matches!(frame(&[]), Ok(None)));
    }

    #[test]
    fn partial_body_needs_more() {
        let mut v = header(23, TYPE_UPDATE);
        v.extend_from_slice(&[0, 0]);
        assert!(matches!(frame(&v), Ok(None)));
    }

    #[test]
    fn a_bad_marker_is_seen_early() {
        assert_eq!(frame(&[0xff, 0x00]).err(), Some(MessageError::BadMarker));
    }

    #[test]
    fn notification_shorter_than_21_is_bad_length() {
        assert_eq!(
            frame(&header(20, TYPE_NOTIFICATION)).err(),
            Some(MessageError::BadLength { length: 20 })
        );
    }

    #[test]
    fn open_shorter_than_29_is_bad_length() {
        assert_eq!(
            frame(&header(28, TYPE_OPEN)).err(),
            Some(MessageError::BadLength { length: 28 })
        );
    }
}
