//! The tokio driver of one BGP session: it owns the [`Fsm`](crate::fsm::Fsm), the TCP
//! connection, the codec and the clock, and reports to the speaker through [`SessionEvent`]s.
//!
//! ```text
//!   speaker task ──SessionHandle (unbounded mpsc: SessionMsg)──►┐
//!        ▲                                                       │
//!        └──────── mpsc::Sender<SessionEvent> ◄──────────┐       ▼
//!                                                  ┌──────────────────────┐
//!   watch::Receiver<SessionStatus> ◄───────────────│ session task (1)     │
//!                                                  │ owns Fsm(s), counters│
//!                                                  └──────────────────────┘
//!                       unbounded mpsc: Internal ▲   ▲   ▲         │ WriterMsg / ReaderCtl
//!              ┌─────────────────────────────────┘   │   └──────┐  ▼
//!   connect task (0-2)   timer tasks (one per armed timer)   reader task ─┐ writer task
//!   TcpConnectionConfirmed/Fails   *TimerExpired       decoded messages  │ (owns write half)
//!                                                      (owns read half) ─┘ one pair per connection
//! ```
//!
//! One task owns the session's state: the FSM of the connection in use and, during a
//! connection collision (RFC 4271 §6.8), a second FSM for the other connection. Child tasks
//! never touch that state; they send typed messages. The session task does its processing
//! synchronously and only awaits when it hands the collected [`SessionEvent`]s to the speaker
//! (so a slow speaker slows the session down, and TCP flow control slows the peer).
//!
//! # Connections
//!
//! - Outbound connections go to `peer_addr:peer_port`, from `local_addr` when set, within
//!   `connect_timeout`. A failure becomes `TcpConnectionFails` and the [`SessionEvent::Down`]
//!   carries the precise cause ("connection refused", "no route to host", ...). Passive peers
//!   never connect.
//! - Inbound connections are accepted by the speaker's listener ([`listen`]) and handed to the
//!   session of the peer they come from with [`SessionHandle::accept_inbound`]. The speaker
//!   keeps a map from peer IP address to `SessionHandle`; an accepted connection whose source
//!   address is not a configured peer is closed at once, before any BGP message is read. The
//!   session closes an inbound connection it cannot use: in Idle (RFC 4271 §8.2.2), while
//!   Established (§6.8), while it already has two connections, or while its only connection
//!   is itself inbound and not yet Established.
//! - `ttl` sets IP_TTL (IPV6_UNICAST_HOPS for IPv6) on both outbound and accepted connections,
//!   for eBGP multihop. When it is `None` the kernel default (64) is used: this version does
//!   not force TTL 1 on single-hop eBGP sessions.
//! - `ttl_security` (GTSM, RFC 5082): N hops. Our packets leave with TTL 255 and the kernel
//!   drops the peer's unless they arrive with at least 256 - N (IP_MINTTL, IPV6_MINHOPCOUNT),
//!   on outbound sockets before connect and on accepted ones before anything is read. A peer
//!   farther away completes no BGP exchange; its segments are dropped silently.
//! - `md5_key` (RFC 2385): the key is set on the outbound socket before connect; the owner of
//!   the listener sets it there for the peer's address ([`set_listener_md5`]). A segment
//!   without the right signature is dropped by the kernel, silently, so a key mismatch shows
//!   as connections that time out; the down reason says so when a key is configured.
//!
//! # Collisions (RFC 4271 §6.8)
//!
//! The second connection gets a second FSM, as the `fsm` module docs describe. The driver
//! also keeps an outbound connect that was in flight when an inbound connection was accepted
//! in Connect: if it completes, it becomes the second connection, so both sides of a
//! simultaneous open keep both connections and agree on the survivor by BGP Identifier instead
//! of both abandoning theirs. Only the FSM carrying the session reports state changes; the one
//! that loses a collision goes quietly.
//!
//! # Errors
//!
//! A fatal decode error ([`crate::packet::DecodeError::Fatal`]) becomes the FSM input for its
//! NOTIFICATION code (`HeaderErr`, `OpenMsgErr`, `UpdateMsgErr`), which sends the NOTIFICATION
//! and closes. UPDATEs with RFC 7606 attribute errors are forwarded as they are, with
//! [`Update::errors`] set: the RIB applies [`Update::treatment`] (treat-as-withdraw or
//! attribute-discard) and the session stays up.
//!
//! Closing a connection flushes what was queued (so a NOTIFICATION goes out), shuts the write
//! side down and reads until the peer closes, for at most [`CLOSE_LINGER`].

mod connection;
mod driver;
mod glue;
pub(crate) mod sockopt;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::fsm::{DownReason, NegotiatedSession, PeerConfig, PeerConfigError, State};
use crate::packet::{Afi, Safi, Update};

/// How long a closing connection may take to flush its queue and see the peer close.
pub const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Default time allowed for a TCP connect to complete.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One peer's session configuration.
///
/// The capabilities advertised in our OPEN (IPv4/IPv6 unicast, 4-octet AS, route refresh,
/// graceful restart) are `fsm.capabilities`, the set the FSM also negotiates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub peer_addr: IpAddr,
    /// The peer's BGP port: 179 ([`crate::BGP_PORT`]) except in tests.
    pub peer_port: u16,
    /// The source address of outbound connections; the kernel chooses when `None`.
    pub local_addr: Option<IpAddr>,
    pub fsm: PeerConfig,
    /// IP TTL / hop limit of the session's packets (eBGP multihop). See the module docs.
    pub ttl: Option<u8>,
    /// GTSM (RFC 5082): the peer is at most this many hops away. See the module docs.
    pub ttl_security: Option<u8>,
    /// TCP MD5 signature key (RFC 2385). See the module docs.
    pub md5_key: Option<Md5Key>,
    pub connect_timeout: Duration,
}

/// A TCP MD5 key (RFC 2385): 1 to 80 octets. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl Md5Key {
    /// The key, if it is 1 to 80 octets long (TCP_MD5SIG_MAXKEYLEN).
    pub fn new(key: impl Into<Vec<u8>>) -> Option<Md5Key> {
        let key = key.into();
        (!key.is_empty() && key.len() <= sockopt::TCP_MD5SIG_MAXKEYLEN).then_some(Md5Key(key))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Md5Key(..)")
    }
}

/// Sets the TCP MD5 key for connections from `peer` (a single address, or a whole range with
/// `prefix_len`) on a listener; `None` removes it. Accepted connections inherit it.
pub fn set_listener_md5(
    listener: &impl std::os::fd::AsFd,
    peer: IpAddr,
    prefix_len: Option<u8>,
    key: Option<&Md5Key>,
) -> std::io::Result<()> {
    let ipv6_socket = socket2::SockRef::from(listener)
        .local_addr()?
        .as_socket()
        .is_some_and(|a| a.is_ipv6());
    let key = key.map(Md5Key::as_bytes).unwrap_or_default();
    sockopt::set_tcp_md5(listener, ipv6_socket, peer, prefix_len, key)
}

/// The minimum TTL a GTSM peer `hops` away arrives with (RFC 5082 §3: 255 - hops + 1).
pub fn gtsm_min_ttl(hops: u8) -> u8 {
    (256 - u16::from(hops.max(1))).min(255) as u8
}

impl SessionConfig {
    /// A session to `peer_addr` port 179 with the kernel's choices for the rest.
    pub fn new(peer_addr: IpAddr, fsm: PeerConfig) -> Self {
        SessionConfig {
            peer_addr,
            peer_port: crate::BGP_PORT,
            local_addr: None,
            fsm,
            ttl: None,
            ttl_security: None,
            md5_key: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Checks what the FSM checks, and what the session adds.
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        self.fsm.validate()?;
        if self.fsm.local_asn > u32::from(u16::MAX) && !self.fsm.capabilities.four_octet_as {
            // RFC 6793 §4.1: without the capability the peer would see only AS_TRANS.
            return Err(SessionConfigError::FourOctetAsRequired(self.fsm.local_asn));
        }
        if self.peer_port == 0 {
            return Err(SessionConfigError::ZeroPort);
        }
        if let Some(local) = self.local_addr {
            if local.is_ipv4() != self.peer_addr.is_ipv4() {
                return Err(SessionConfigError::FamilyMismatch {
                    local,
                    peer: self.peer_addr,
                });
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(SessionConfigError::ZeroConnectTimeout);
        }
        if self.ttl_security == Some(0) {
            return Err(SessionConfigError::ZeroTtlSecurity);
        }
        if self.ttl_security.is_some() && self.ttl.is_some() {
            return Err(SessionConfigError::TtlAndTtlSecurity);
        }
        Ok(())
    }

    fn peer_socket(&self) -> SocketAddr {
        SocketAddr::new(self.peer_addr, self.peer_port)
    }

    /// The socket options of the session's connections.
    pub(crate) fn socket_options(&self) -> connection::SocketOptions {
        connection::SocketOptions {
            ttl: self.ttl_security.map(|_| 255).or(self.ttl),
            min_ttl: self.ttl_security.map(gtsm_min_ttl),
            md5_key: self.md5_key.clone(),
        }
    }
}

/// A [`SessionConfig`] a session cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionConfigError {
    #[error("{0}")]
    Fsm(#[from] PeerConfigError),
    #[error("local AS {0} needs the 4-octet AS capability (RFC 6793)")]
    FourOctetAsRequired(u32),
    #[error("peer port 0")]
    ZeroPort,
    #[error("local address {local} and peer address {peer} are of different families")]
    FamilyMismatch { local: IpAddr, peer: IpAddr },
    #[error("connect timeout of zero")]
    ZeroConnectTimeout,
    #[error("TTL security of 0 hops")]
    ZeroTtlSecurity,
    #[error("TTL security sends with TTL 255: it cannot be combined with a TTL (multihop)")]
    TtlAndTtlSecurity,
}

/// What a session reports to its owner.
// UPDATE dominates the traffic, as in `packet::Message`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    StateChanged {
        peer: IpAddr,
        from: State,
        to: State,
    },
    /// The session is up: send the peer its routes.
    Established {
        peer: IpAddr,
        negotiated: NegotiatedSession,
        /// Our end of the connection (the next hop to announce for next-hop-self).
        local_addr: SocketAddr,
    },
    /// An UPDATE from the peer, as decoded: apply [`Update::treatment`] for `errors`.
    Update { peer: IpAddr, update: Update },
    /// The peer asks for our routes of a negotiated family again (RFC 2918).
    RouteRefresh { peer: IpAddr, afi: Afi, safi: Safi },
    /// The session, or an attempt at one, went down. Withdraw the peer's routes if
    /// `was_established`.
    Down {
        peer: IpAddr,
        reason: DownReason,
        /// The cause below `reason`: the socket error of a TCP failure, the decode error
        /// behind a NOTIFICATION we sent.
        detail: Option<String>,
        was_established: bool,
    },
}

/// The text of a down reason with its detail, as status shows it.
pub fn down_text(reason: &DownReason, detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!("{reason}: {d}"),
        None => reason.to_string(),
    }
}

/// A snapshot of a session, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub peer: IpAddr,
    pub state: State,
    /// When `state` was entered.
    pub since: Instant,
    /// Why the session last went down ([`down_text`]).
    pub last_error: Option<String>,
    pub negotiated: Option<NegotiatedSession>,
    /// Our end of the established connection.
    pub local_addr: Option<SocketAddr>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
}

impl SessionStatus {
    fn new(peer: IpAddr) -> Self {
        SessionStatus {
            peer,
            state: State::Idle,
            since: Instant::now(),
            last_error: None,
            negotiated: None,
            local_addr: None,
            messages_in: 0,
            messages_out: 0,
            updates_in: 0,
            updates_out: 0,
        }
    }
}

/// The session task has ended (after [`SessionHandle::stop`], or when its event receiver
/// was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the BGP session task has ended")]
pub struct SessionGone;

/// What the handle asks of the session task.
// AcceptInbound carries a TcpStream; the enum is small in any case.
#[derive(Debug)]
enum SessionMsg {
    SendUpdates(Vec<Update>),
    AcceptInbound(TcpStream),
    RouteRefresh(Afi, Safi),
    Stop,
    Deconfigure,
    StopForRestart,
    Reset(crate::fsm::NotificationInfo),
}

/// The owner's side of one session. Dropping it stops the session like [`SessionHandle::stop`].
#[derive(Debug)]
pub struct SessionHandle {
    peer: IpAddr,
    tx: mpsc::UnboundedSender<SessionMsg>,
    status: watch::Receiver<SessionStatus>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Queues UPDATEs for the peer. They are encoded for the negotiated session and dropped,
    /// with a warning, unless the session is Established: the owner resends its routes on the
    /// next [`SessionEvent::Established`].
    pub fn send_updates(&self, updates: Vec<Update>) -> Result<(), SessionGone> {
        self.send(SessionMsg::SendUpdates(updates))
    }

    /// Hands over a connection the speaker's listener accepted from this peer's address.
    pub fn accept_inbound(&self, stream: TcpStream) -> Result<(), SessionGone> {
        self.send(SessionMsg::AcceptInbound(stream))
    }

    /// Asks the peer to send its routes of a family again (RFC 2918); ignored unless the peer
    /// advertised route refresh and the family was negotiated.
    pub fn route_refresh(&self, afi: Afi, safi: Safi) -> Result<(), SessionGone> {
        self.send(SessionMsg::RouteRefresh(afi, safi))
    }

    /// ManualStop: Cease 6/2 (RFC 4486) if a connection is open, then the task ends.
    pub fn stop(&self) -> Result<(), SessionGone> {
        self.send(SessionMsg::Stop)
    }

    /// [`SessionHandle::stop`] for a peer removed from the configuration: the Cease says 6/3,
    /// Peer De-configured (RFC 4486 §4).
    pub fn deconfigure(&self) -> Result<(), SessionGone> {
        self.send(SessionMsg::Deconfigure)
    }

    /// [`SessionHandle::stop`] before a graceful restart (RFC 4724): the connection is closed
    /// without a NOTIFICATION, so that a helper keeps our routes until we are back.
    pub fn stop_for_restart(&self) -> Result<(), SessionGone> {
        self.send(SessionMsg::StopForRestart)
    }

    /// Resets an Established session with `notification` (a Cease 6/1 when the peer sent
    /// more prefixes than allowed, RFC 4486 §4): the FSM goes to Idle and restarts on its own
    /// after the (damped) idle hold time, as after any error it detected.
    pub fn reset(&self, notification: crate::fsm::NotificationInfo) -> Result<(), SessionGone> {
        self.send(SessionMsg::Reset(notification))
    }

    /// The session's current status.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Waits until the session task has ended.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    fn send(&self, msg: SessionMsg) -> Result<(), SessionGone> {
        self.tx.send(msg).map_err(|_| SessionGone)
    }
}

/// Starts a session (ManualStart) on the current tokio runtime.
///
/// Fails only on a configuration the session cannot run with.
pub fn spawn_session(
    config: SessionConfig,
    events: mpsc::Sender<SessionEvent>,
) -> Result<SessionHandle, SessionConfigError> {
    config.validate()?;
    let peer = config.peer_addr;
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(SessionStatus::new(peer));
    let span = tracing::info_span!("bgp_session", peer = %peer, peer_as = config.fsm.peer_asn);
    let driver = driver::Driver::new(config, events, status_tx)?;
    let task = tokio::spawn(driver.run(rx).instrument(span));
    Ok(SessionHandle {
        peer,
        tx,
        status: status_rx,
        task,
    })
}

/// Binds the speaker's listening socket (SO_REUSEADDR, so a restarted speaker can bind while
/// old connections sit in TIME_WAIT).
///
/// The speaker accepts in a loop and routes each connection by its source address: to
/// [`SessionHandle::accept_inbound`] of the peer with that address, or closed at once (dropped)
/// when no peer has it. On an IPv6 wildcard socket, IPv4 peers arrive as IPv4-mapped
/// addresses: look them up by `from.ip().to_canonical()`.
///
/// ```no_run
/// # use std::collections::HashMap;
/// # use std::net::IpAddr;
/// # use brindle_bgp::session::{listen, SessionHandle};
/// # async fn speaker(sessions: HashMap<IpAddr, SessionHandle>) -> std::io::Result<()> {
/// let listener = listen("0.0.0.0:179".parse().expect("address")).await?;
/// loop {
///     let (stream, from) = listener.accept().await?;
///     match sessions.get(&from.ip().to_canonical()) {
///         Some(session) => {
///             // The session decides: first connection, collision, or refused (Idle).
///             let _ = session.accept_inbound(stream);
///         }
///         // Not a configured peer: closed before any BGP message is read.
///         None => drop(stream),
///     }
/// }
/// # }
/// ```
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} for {}s",
            self.peer,
            self.state,
            self.since.elapsed().as_secs()
        )?;
        if let Some(e) = &self.last_error {
            write!(f, " (last error: {e})")?;
        }
        Ok(())
    }
}
