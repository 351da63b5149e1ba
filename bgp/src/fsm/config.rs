//! One peer's FSM configuration and its validation.

use std::fmt;
use std::net::Ipv4Addr;

use super::types::CapabilitySet;

/// Default proposed hold time (RFC 4271 §10: 90 s).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Default ConnectRetryTime (RFC 4271 §10: 120 s).
pub const DEFAULT_CONNECT_RETRY_TIME: u16 = 120;
/// First IdleHoldTimer value after a failure.
pub const DEFAULT_IDLE_HOLD_TIME: u16 = 1;
/// Cap of the doubling IdleHoldTimer.
pub const DEFAULT_MAX_IDLE_HOLD_TIME: u16 = 120;

/// One peer's FSM configuration (RFC 4271 §8.1.1 session attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub local_asn: u32,
    pub local_router_id: Ipv4Addr,
    pub peer_asn: u32,
    /// Proposed hold time: 0 or at least 3 (RFC 4271 §4.2).
    pub hold_time: u16,
    pub connect_retry_time: u16,
    /// PassiveTcpEstablishment: never connect, wait in Active for the peer.
    pub passive: bool,
    /// AllowAutomaticStart: restart from Idle after a failure, once the IdleHoldTimer fires.
    pub allow_automatic_start: bool,
    /// DampPeerOscillations: double the IdleHoldTimer on each failure, up to
    /// `max_idle_hold_time`; reset after `max_idle_hold_time` seconds in Established.
    pub damp_peer_oscillations: bool,
    /// First IdleHoldTimer value, in seconds.
    pub idle_hold_time: u16,
    pub max_idle_hold_time: u16,
    /// What we advertise in our OPEN.
    pub capabilities: CapabilitySet,
}

impl PeerConfig {
    /// A config with RFC 4271 §10 defaults, automatic restart and damping on.
    pub fn new(local_asn: u32, local_router_id: Ipv4Addr, peer_asn: u32) -> Self {
        PeerConfig {
            local_asn,
            local_router_id,
            peer_asn,
            hold_time: DEFAULT_HOLD_TIME,
            connect_retry_time: DEFAULT_CONNECT_RETRY_TIME,
            passive: false,
            allow_automatic_start: true,
            damp_peer_oscillations: true,
            idle_hold_time: DEFAULT_IDLE_HOLD_TIME,
            max_idle_hold_time: DEFAULT_MAX_IDLE_HOLD_TIME,
            capabilities: CapabilitySet::standard(),
        }
    }

    /// Internal BGP: both ends in the same AS.
    pub fn is_ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }

    /// Checks the values the FSM relies on.
    pub fn validate(&self) -> Result<(), PeerConfigError> {
        if self.local_asn == 0 || self.peer_asn == 0 {
            // RFC 7607: AS 0 must not be used in an OPEN.
            return Err(PeerConfigError::ZeroAsn);
        }
        if self.local_router_id.is_unspecified() {
            // RFC 6286 §2.1: the BGP Identifier is a non-zero 4-octet value.
            return Err(PeerConfigError::ZeroRouterId);
        }
        if matches!(self.hold_time, 1 | 2) {
            // RFC 4271 §4.2: zero or at least three seconds.
            return Err(PeerConfigError::HoldTimeTooSmall(self.hold_time));
        }
        if self.connect_retry_time == 0 {
            return Err(PeerConfigError::ZeroConnectRetryTime);
        }
        if self.idle_hold_time == 0 || self.idle_hold_time > self.max_idle_hold_time {
            return Err(PeerConfigError::BadIdleHoldTime {
                initial: self.idle_hold_time,
                max: self.max_idle_hold_time,
            });
        }
        Ok(())
    }
}

/// A [`PeerConfig`] the FSM cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerConfigError {
    ZeroAsn,
    ZeroRouterId,
    HoldTimeTooSmall(u16),
    ZeroConnectRetryTime,
    BadIdleHoldTime { initial: u16, max: u16 },
}

impl fmt::Display for PeerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerConfigError::ZeroAsn => f.write_str("AS number 0 is reserved (RFC 7607)"),
            PeerConfigError::ZeroRouterId => f.write_str("router ID 0.0.0.0 is not valid"),
            PeerConfigError::HoldTimeTooSmall(h) => {
                write!(f, "hold time {h} s: must be 0 or at least 3 s")
            }
            PeerConfigError::ZeroConnectRetryTime => {
                f.write_str("connect retry time must be at least 1 s")
            }
            PeerConfigError::BadIdleHoldTime { initial, max } => write!(
                f,
                "idle hold time {initial} s must be between 1 s and the maximum {max} s"
            ),
        }
    }
}

impl std::error::Error for PeerConfigError {}
