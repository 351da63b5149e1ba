//! Connection collision resolution (RFC 4271 §6.8, RFC 6286 §2.3); the module docs of `fsm`
//! describe how the driver applies it.

use std::net::Ipv4Addr;

use super::types::ConnectionOrigin;

/// Which connection survives a collision: the one the `Local` or the `Remote` speaker initiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollisionWinner {
    Local,
    Remote,
}

impl CollisionWinner {
    /// Whether the connection with this origin is the one to keep.
    pub fn keeps(self, origin: ConnectionOrigin) -> bool {
        matches!(
            (self, origin),
            (CollisionWinner::Local, ConnectionOrigin::Local)
                | (CollisionWinner::Remote, ConnectionOrigin::Remote)
        )
    }
}

/// RFC 4271 §6.8: the connection initiated by the speaker with the higher BGP Identifier,
/// compared as 4-octet unsigned integers in host byte order, is kept.
///
/// Equal identifiers cannot reach here on iBGP (the OPEN check rejects them with 2/3); on eBGP
/// they are legal (RFC 6286) and need the AS tie-break of [`resolve_collision_with_asn`].
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> CollisionWinner {
    if u32::from(local_id) > u32::from(remote_id) {
        CollisionWinner::Local
    } else {
        CollisionWinner::Remote
    }
}

/// [`resolve_collision`] with RFC 6286 §2.3's tie-break: for equal identifiers the connection
/// initiated by the speaker with the larger AS number is kept.
pub fn resolve_collision_with_asn(
    local_id: Ipv4Addr,
    local_asn: u32,
    remote_id: Ipv4Addr,
    remote_asn: u32,
) -> CollisionWinner {
    if local_id != remote_id {
        resolve_collision(local_id, remote_id)
    } else if local_asn > remote_asn {
        CollisionWinner::Local
    } else {
        CollisionWinner::Remote
    }
}
