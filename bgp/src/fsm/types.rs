//! The types the FSM shares with its driver: inputs, outputs, and what it needs from messages.

use std::fmt;
use std::net::Ipv4Addr;

/// NOTIFICATION error codes and subcodes the FSM sends or inspects itself.
pub mod notification {
    /// Message Header Error (RFC 4271 §4.5).
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    /// OPEN Message Error (RFC 4271 §4.5).
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    /// UPDATE Message Error (RFC 4271 §4.5).
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    /// Hold Timer Expired (RFC 4271 §4.5).
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error (RFC 4271 §4.5).
    pub const FSM_ERROR: u8 = 5;
    /// Cease (RFC 4271 §4.5).
    pub const CEASE: u8 = 6;

    /// OPEN subcode: Unsupported Version Number (RFC 4271 §6.2).
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    /// OPEN subcode: Bad Peer AS (RFC 4271 §6.2).
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN subcode: Bad BGP Identifier (RFC 4271 §6.2, RFC 6286 §2.2).
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    /// OPEN subcode: Unacceptable Hold Time (RFC 4271 §6.2).
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;

    /// FSM Error subcode: Receive Unexpected Message in OpenSent State (RFC 6608 §3).
    pub const UNEXPECTED_MESSAGE_IN_OPENSENT: u8 = 1;
    /// FSM Error subcode: Receive Unexpected Message in OpenConfirm State (RFC 6608 §3).
    pub const UNEXPECTED_MESSAGE_IN_OPENCONFIRM: u8 = 2;
    /// FSM Error subcode: Receive Unexpected Message in Established State (RFC 6608 §3).
    pub const UNEXPECTED_MESSAGE_IN_ESTABLISHED: u8 = 3;

    /// Cease subcode: Administrative Shutdown (RFC 4486 §4).
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    /// Cease subcode: Connection Collision Resolution (RFC 4486 §4).
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
}

/// The session states of RFC 4271 §8.2.2. Ordered, so `state >= State::OpenSent` reads well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// An address family: AFI and SAFI (RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };
}

/// One family of a Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub family: Family,
    pub forwarding_preserved: bool,
}

/// The Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The Restart State (R) bit.
    pub restart_state: bool,
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

/// The capabilities (RFC 5492) the FSM negotiates. `Default` is "advertised nothing".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilitySet {
    /// RFC 6793.
    pub four_octet_as: bool,
    /// RFC 2918.
    pub route_refresh: bool,
    /// RFC 4724.
    pub graceful_restart: Option<GracefulRestart>,
    /// Multiprotocol families (RFC 4760).
    pub families: Vec<Family>,
}

impl CapabilitySet {
    /// What Brindle advertises by default: 4-octet AS, route refresh, IPv4 unicast.
    pub fn standard() -> Self {
        CapabilitySet {
            four_octet_as: true,
            route_refresh: true,
            graceful_restart: None,
            families: vec![Family::IPV4_UNICAST],
        }
    }

    // RFC 4760 §8: a peer that advertises no Multiprotocol capability speaks IPv4 unicast only.
    pub(super) fn effective_families(&self) -> Vec<Family> {
        if self.families.is_empty() {
            vec![Family::IPV4_UNICAST]
        } else {
            self.families.clone()
        }
    }
}

/// What the FSM needs from an OPEN, in either direction.
///
/// `asn` is the speaker's real AS: the glue puts AS_TRANS (23456) in the 2-octet field and the
/// real AS in the 4-octet AS capability when it exceeds 65535 (RFC 6793 §4.1), and reads the
/// capability's value back when the peer sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    pub version: u8,
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: CapabilitySet,
}

/// The OPEN the FSM asks the driver to send; same shape as a received one.
pub type OpenParams = OpenInfo;

/// A NOTIFICATION, received or to send (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationInfo {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl NotificationInfo {
    pub fn new(code: u8, subcode: u8) -> Self {
        NotificationInfo {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

/// The FSM's timers. Each is one-shot; see the driver contract in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// ConnectRetryTimer (RFC 4271 §8.1.3).
    ConnectRetry,
    /// HoldTimer (RFC 4271 §4.4, §8.1.3).
    Hold,
    /// KeepaliveTimer (RFC 4271 §4.4, §8.1.3).
    Keepalive,
    /// IdleHoldTimer: the damped automatic restart from Idle (RFC 4271 §8.1.1).
    IdleHold,
    /// Runs while Established; when it fires the session counts as stable and the IdleHold
    /// backoff returns to its initial value.
    DampingReset,
}

impl Timer {
    pub(super) const COUNT: usize = 5;
    pub(super) const ALL: [Timer; Timer::COUNT] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
        Timer::DampingReset,
    ];

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Which side opened a TCP connection; collision resolution keeps one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionOrigin {
    /// We connected to the peer.
    Local,
    /// The peer connected to us.
    Remote,
}

/// The FSM's events (RFC 4271 §8.1, with its event numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// ManualStart (Event 1); ManualStart_with_PassiveTcpEstablishment (Event 4) when passive.
    ManualStart,
    /// ManualStop (Event 2).
    ManualStop,
    /// AutomaticStart (Events 3, 5); ignored unless `allow_automatic_start`.
    AutomaticStart,
    /// ConnectRetryTimer_Expires (Event 9).
    ConnectRetryTimerExpired,
    /// HoldTimer_Expires (Event 10).
    HoldTimerExpired,
    /// KeepaliveTimer_Expires (Event 11).
    KeepaliveTimerExpired,
    /// IdleHoldTimer_Expires (Event 13).
    IdleHoldTimerExpired,
    /// The [`Timer::DampingReset`] timer fired.
    DampingResetTimerExpired,
    /// Our outbound connection completed: Tcp_CR_Acked (Event 16).
    TcpConnectionConfirmed,
    /// The peer's inbound connection completed: TcpConnectionConfirmed (Event 17).
    TcpConnectionAccepted,
    /// TcpConnectionFails (Event 18): refused, reset, or closed by the peer.
    TcpConnectionFails,
    /// BGPOpen (Event 19).
    OpenReceived(OpenInfo),
    /// BGPHeaderErr (Event 21), with the NOTIFICATION to send.
    HeaderErr(NotificationInfo),
    /// BGPOpenMsgErr (Event 22), with the NOTIFICATION to send.
    OpenMsgErr(NotificationInfo),
    /// OpenCollisionDump (Event 23): this connection lost collision resolution (§6.8).
    CollisionDump,
    /// NotifMsg (Event 25) and NotifMsgVerErr (Event 24).
    NotificationReceived(NotificationInfo),
    /// KeepAliveMsg (Event 26).
    KeepaliveReceived,
    /// UpdateMsg (Event 27).
    UpdateReceived,
    /// A ROUTE-REFRESH (RFC 2918); restarts the HoldTimer like any message.
    RouteRefreshReceived,
    /// UpdateMsgErr (Event 28) that resets the session, with the NOTIFICATION to send.
    UpdateMsgErr(NotificationInfo),
}

impl Input {
    /// The expiry input of `timer`, for a driver with one generic timer task.
    pub fn timer_expired(timer: Timer) -> Input {
        match timer {
            Timer::ConnectRetry => Input::ConnectRetryTimerExpired,
            Timer::Hold => Input::HoldTimerExpired,
            Timer::Keepalive => Input::KeepaliveTimerExpired,
            Timer::IdleHold => Input::IdleHoldTimerExpired,
            Timer::DampingReset => Input::DampingResetTimerExpired,
        }
    }

    pub(super) fn expired_timer(&self) -> Option<Timer> {
        match self {
            Input::ConnectRetryTimerExpired => Some(Timer::ConnectRetry),
            Input::HoldTimerExpired => Some(Timer::Hold),
            Input::KeepaliveTimerExpired => Some(Timer::Keepalive),
            Input::IdleHoldTimerExpired => Some(Timer::IdleHold),
            Input::DampingResetTimerExpired => Some(Timer::DampingReset),
            _ => None,
        }
    }
}

/// What the session agreed on, reported on entry to Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedSession {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    pub ibgp: bool,
    /// min(ours, theirs) (RFC 4271 §4.2); 0 disables keepalives and the hold timer.
    pub hold_time: u16,
    /// hold_time / 3 (RFC 4271 §4.4, §10).
    pub keepalive: u16,
    pub four_octet_as: bool,
    /// The peer accepts ROUTE-REFRESH from us.
    pub route_refresh: bool,
    /// Families both sides advertised.
    pub families: Vec<Family>,
    pub peer_graceful_restart: Option<GracefulRestart>,
}

/// Why a session (or an attempt at one) went down; kept for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    ManualStop,
    HoldTimerExpired,
    /// The TCP connection failed, was refused or was closed by the peer.
    TcpFailed,
    NotificationReceived {
        code: u8,
        subcode: u8,
    },
    NotificationSent {
        code: u8,
        subcode: u8,
    },
    /// The peer's OPEN carried the wrong AS; we sent 2/2.
    BadPeerAs {
        expected: u32,
        got: u32,
    },
    /// This connection lost collision resolution (§6.8); we sent 6/7.
    Collision,
    /// A message or event with no meaning in `state` before any BGP connection existed.
    UnexpectedEvent {
        state: State,
    },
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::ManualStop => f.write_str("stopped by administrator"),
            DownReason::HoldTimerExpired => f.write_str("hold timer expired"),
            DownReason::TcpFailed => f.write_str("TCP connection failed"),
            DownReason::NotificationReceived { code, subcode } => {
                write!(f, "NOTIFICATION {code}/{subcode} received")
            }
            DownReason::NotificationSent { code, subcode } => {
                write!(f, "NOTIFICATION {code}/{subcode} sent")
            }
            DownReason::BadPeerAs { expected, got } => {
                write!(f, "bad peer AS: expected {expected}, got {got}")
            }
            DownReason::Collision => f.write_str("connection collision resolution"),
            DownReason::UnexpectedEvent { state } => write!(f, "unexpected event in {state}"),
        }
    }
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the connection (after flushing queued messages) or abort a pending connect.
    Disconnect,
    SendOpen(OpenParams),
    SendKeepalive,
    SendNotification(NotificationInfo),
    /// Arm `timer` for `seconds`, restarting it if running.
    StartTimer {
        timer: Timer,
        seconds: u16,
    },
    StopTimer(Timer),
    /// The session entered Established; start exchanging routes.
    SessionEstablished(NegotiatedSession),
    /// The session, or the attempt at one, went down. Withdraw the peer's routes if
    /// `was_established`.
    SessionDown {
        reason: DownReason,
        was_established: bool,
    },
    StateChanged {
        from: State,
        to: State,
    },
}
