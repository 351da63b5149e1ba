//! The speaker: one task that owns the [`Rib`](crate::rib::Rib), one session per neighbour and
//! the listener, and turns their events into UPDATEs for the peers and best-route changes for
//! the dataplane.
//!
//! ```text
//!  SpeakerHandle (Clone) ──mpsc: Command──────────────►┌──────────────────────────┐
//!    originate / withdraw / add_neighbor / peers ...   │ speaker task (1)         │
//!                                                      │ owns Rib, sessions map,  │──mpsc: RouteChange──► consumer
//!  listener task (0-1) ──mpsc: (TcpStream, from)──────►│ and the generation count │     (dataplane)
//!    accepts on `listen`                               └──────────────────────────┘
//!                                                        ▲            │ SessionHandle::send_updates
//!  forwarder task (1 per session) ──mpsc: (generation,   │            ▼ / accept_inbound / stop
//!    SessionEvent)───────────────────────────────────────┘   session tasks (1 per neighbour, `session`)
//! ```
//!
//! Nothing is shared behind a lock: the speaker task owns all protocol state, the listener and
//! the sessions only send it typed messages. Each session reports through its own channel to
//! a forwarder that tags the events with the session's generation, so events of a removed
//! neighbour's session (still closing) are never taken for those of a neighbour re-added at
//! the same address.
//!
//! # Inbound connections
//!
//! The listener hands every accepted connection to the speaker task, which routes it by
//! source address ([`std::net::IpAddr::to_canonical`], so IPv4 peers on an IPv6 wildcard socket
//! match) to that neighbour's session. A connection from any other address is closed at once,
//! before a BGP message is read or sent, unless it comes from one of
//! [`SpeakerConfig::dynamic_peers`]: then a passive neighbour is added for it (AS and MD5
//! key of the range) and removed again when its session goes down.
//!
//! # Session security and limits
//!
//! A neighbour's [`NeighborConfig::password`] is set on its outbound sockets and, for its
//! address, on the listener (a range's key for the range); [`NeighborConfig::ttl_security`]
//! is GTSM (RFC 5082, see `session`). [`NeighborConfig::max_prefixes`] counts the prefixes in
//! the peer's Adj-RIB-In: past the limit the speaker warns, ignores further new prefixes, or
//! resets the session with Cease 6/1, as [`MaxPrefixAction`] says; peer status shows it.
//!
//! # Route changes
//!
//! [`RouteChange`]s carry the best route's next hops, the whole multipath group (ECMP) with the
//! best's first; empty next hops mean "nothing to install" (withdrawn, or replaced by a locally
//! originated route). A change is sent only when the next hops of a prefix change
//! ([`crate::rib::BestChange::next_hops_changed`]), not for a change of attributes alone. The
//! channel is bounded: a consumer that stops reading slows the speaker down (and TCP slows the
//! peers); drop the receiver if the changes are not wanted.
//!
//! # Families
//!
//! A session carries the unicast family of its own addresses: IPv4 routes over IPv4 sessions,
//! IPv6 routes over IPv6 sessions. With [`SpeakerConfig::next_hop_v6`] set, IPv4 sessions
//! carry IPv6 unicast as well, announced with that next hop (BIRD's `next hop address`).
//!
//! # Outbound connections
//!
//! A session connects from [`NeighborConfig::local_address`] when it is set, else from the
//! `listen` address when that is a specific address of the peer's family, else from the
//! address the kernel chooses. Passive neighbours are never connected to.

mod status;
mod task;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};

use crate::fsm::{
    PeerConfig, PeerConfigError, State, DEFAULT_CONNECT_RETRY_TIME, DEFAULT_HOLD_TIME,
};
use crate::rib::{RouteSource, Selection};
pub use crate::session::Md5Key;
use crate::session::{SessionConfigError, DEFAULT_CONNECT_TIMEOUT};

/// Capacity of the [`RouteChange`] channel.
pub const ROUTE_CHANNEL_CAPACITY: usize = 4096;

/// The local speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Where to accept BGP connections; `None`: only outbound connections.
    pub listen: Option<SocketAddr>,
    /// Hold time proposed to every peer (RFC 4271 §4.2: 0 or at least 3 s).
    pub hold_time: u16,
    /// ConnectRetryTime, in seconds (RFC 4271 §10).
    pub connect_retry: u16,
    /// Time allowed for a TCP connect.
    pub connect_timeout: Duration,
    /// The next hop announced for our IPv6 routes over IPv4 sessions. With it, IPv4 sessions
    /// carry IPv6 unicast as well; without it, only IPv4 (see the module docs).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// The route-reflection cluster ID (RFC 4456 §7); `None`: the router ID. Used when
    /// neighbours are [`NeighborConfig::rr_client`]s.
    pub cluster_id: Option<Ipv4Addr>,
    /// Graceful restart (RFC 4724) as the restarting speaker, with this restart time in
    /// seconds: the capability is advertised (forwarding state preserved for every family of
    /// the session; the R bit on the first session of each neighbour configured within the
    /// restart time after start),
    /// and [`SpeakerHandle::shutdown`] closes the sessions without a NOTIFICATION, so that
    /// helpers keep our routes. `None`: no capability, shutdown sends Cease.
    pub graceful_restart_time: Option<u16>,
    /// Restart a failed session on its own (AllowAutomaticStart) with a doubling delay
    /// (DampPeerOscillations, up to 120 s). Tests turn damping off to retry every second.
    pub damp_peer_oscillations: bool,
    /// Ranges whose addresses may connect without being configured (see the module docs).
    pub dynamic_peers: Vec<DynamicPeers>,
}

/// Peers accepted from a range: a connection from an address in `prefix` that is not a
/// configured neighbour becomes a passive neighbour of AS `asn` for as long as its session
/// lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicPeers {
    pub prefix: IpNet,
    pub asn: u32,
    /// TCP MD5 key for the whole range (RFC 2385).
    pub password: Option<Md5Key>,
}

/// What to do when a peer announces more prefixes than [`MaxPrefixes::limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPrefixAction {
    /// Accept them and say so (log and peer status).
    Warn,
    /// Keep the first `limit` prefixes; ignore announcements of further ones.
    Discard,
    /// Cease 6/1 (Maximum Number of Prefixes Reached, RFC 4486 §4), routes withdrawn; the
    /// session restarts after the (damped) idle hold time.
    Reset,
}

/// A per-peer limit on the prefixes in its Adj-RIB-In, all families together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefixes {
    pub limit: usize,
    pub action: MaxPrefixAction,
}

impl SpeakerConfig {
    /// AS `asn`, router ID `router_id`, no listener, RFC 4271 §10 timer defaults.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            asn,
            router_id,
            listen: None,
            hold_time: DEFAULT_HOLD_TIME,
            connect_retry: DEFAULT_CONNECT_RETRY_TIME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            next_hop_v6: None,
            cluster_id: None,
            graceful_restart_time: None,
            damp_peer_oscillations: true,
            dynamic_peers: Vec::new(),
        }
    }
}

/// One neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    pub address: IpAddr,
    /// The neighbour's BGP port ([`crate::BGP_PORT`] except in tests).
    pub port: u16,
    pub asn: u32,
    /// Never connect; wait for the neighbour to.
    pub passive: bool,
    /// IP TTL of the session's packets (eBGP multihop); `None`: the kernel default.
    pub multihop: Option<u8>,
    /// Source address of outbound connections (see the module docs).
    pub local_address: Option<IpAddr>,
    /// An iBGP neighbour that is a route-reflector client (RFC 4456): this speaker reflects
    /// iBGP routes to it, and its routes to every iBGP neighbour.
    pub rr_client: bool,
    /// TCP MD5 signature key (RFC 2385), on outbound sockets and on the listener.
    pub password: Option<Md5Key>,
    /// GTSM (RFC 5082): the peer is at most this many hops away; we send with TTL 255.
    pub ttl_security: Option<u8>,
    /// Limit on the prefixes accepted from the peer.
    pub max_prefixes: Option<MaxPrefixes>,
    /// Graceful-restart time announced to this neighbour, overriding
    /// [`SpeakerConfig::graceful_restart_time`] (BIRD's per-protocol `graceful restart time`).
    /// Only used when the speaker does graceful restart.
    pub graceful_restart_time: Option<u16>,
    /// eBGP: announce learned routes with the next hop they were learned with instead of our
    /// own address (BIRD's `next hop keep`). Local routes always carry ours.
    pub next_hop_keep: bool,
    /// Hold time proposed to this neighbour, overriding [`SpeakerConfig::hold_time`] (BIRD's
    /// per-protocol `hold time`; keepalives go every third of the negotiated hold time).
    pub hold_time: Option<u16>,
    /// Why this neighbour is configured, for status and metrics only.
    pub peer_type: PeerType,
}

/// Why a neighbour is configured, as `brindlectl node status` shows it (calicoctl's PEER
/// TYPE column). Status and metrics only: the speaker treats every kind alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerType {
    /// Another node of the node-to-node mesh.
    NodeToNodeMesh,
    /// A peer of every node (a global BGPPeer), or a peer of brindle-bgpd's file.
    #[default]
    Global,
    /// A peer of this node only (a BGPPeer with `node` or a node selector).
    NodeSpecific,
    /// Accepted from a [`SpeakerConfig::dynamic_peers`] range.
    Dynamic,
}

impl PeerType {
    /// The words of calicoctl's PEER TYPE column (`dynamic` is ours).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::NodeToNodeMesh => "node-to-node mesh",
            PeerType::Global => "global",
            PeerType::NodeSpecific => "node specific",
            PeerType::Dynamic => "dynamic",
        }
    }
}

impl std::fmt::Display for PeerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NeighborConfig {
    /// An active neighbour on port 179.
    pub fn new(address: IpAddr, asn: u32) -> Self {
        NeighborConfig {
            address,
            port: crate::BGP_PORT,
            asn,
            passive: false,
            multihop: None,
            local_address: None,
            rr_client: false,
            password: None,
            ttl_security: None,
            max_prefixes: None,
            graceful_restart_time: None,
            next_hop_keep: false,
            hold_time: None,
            peer_type: PeerType::Global,
        }
    }
}

/// The best route of `prefix` changed: its next hops now, the equal-cost ones grouped (ECMP),
/// the best's first. Empty: nothing to install (withdrawn, or originated by us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub prefix: IpNet,
    pub next_hops: Vec<IpAddr>,
}

/// One neighbour, for status (`brindlectl bgp peers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    pub state: State,
    /// When `state` was entered.
    pub since: SystemTime,
    /// Why the session is not Established, as precisely as known ("TCP connection failed:
    /// connection refused", "hold timer expired", "NOTIFICATION 6/2 received: Cease (6) /
    /// Administrative Shutdown (2)", ...); empty when Established.
    pub info: String,
    /// Prefixes in its Adj-RIB-In.
    pub received: usize,
    /// Of those, the ones eligible for the decision process.
    pub accepted: usize,
    /// Prefixes in its Adj-RIB-Out.
    pub advertised: usize,
    /// Established, and the peer has sent End-of-RIB (RFC 4724 §2) for every family of the
    /// session: its initial table is complete.
    pub end_of_rib: bool,
    /// Why the neighbour is configured (copied from [`NeighborConfig::peer_type`]).
    pub peer_type: PeerType,
    /// `received`, `accepted` and `advertised` per family the session carries (or would carry).
    pub families: Vec<FamilyCounts>,
    /// How many times the session changed state since the neighbour was configured.
    pub transitions: u64,
    /// How many times the session reached Established since the neighbour was configured.
    pub established_transitions: u64,
}

/// Route counts of one peer in one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyCounts {
    pub family: crate::rib::AddressFamily,
    pub received: usize,
    pub accepted: usize,
    pub advertised: usize,
}

/// One candidate route, for status (`brindlectl bgp routes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    pub prefix: IpNet,
    /// For the best route, the next hops of its multipath group; for another candidate its
    /// own next hop; empty for a local route.
    pub next_hops: Vec<IpAddr>,
    pub source: RouteSource,
    /// The AS numbers of the AS_PATH, segments flattened in order.
    pub as_path: Vec<u32>,
    pub best: bool,
    /// The outcome of the decision process, with the reason a candidate lost.
    pub selection: Selection,
}

/// What can go wrong starting or driving the speaker.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("speaker configuration: {0}")]
    Config(PeerConfigError),
    #[error("neighbour {address}: {reason}")]
    Neighbor { address: IpAddr, reason: String },
    #[error("neighbour {0} is already configured")]
    NeighborExists(IpAddr),
    #[error("neighbour {0} is not configured")]
    UnknownNeighbor(IpAddr),
    #[error("prefix {prefix}: host bits set (did you mean {}?)", prefix.trunc())]
    HostBitsSet { prefix: IpNet },
    // Not `source`: the text already carries the cause, and a chain would print it twice.
    #[error("listening on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the BGP speaker has stopped")]
    Gone,
}

impl SpeakerError {
    fn neighbor(address: IpAddr, e: impl std::fmt::Display) -> Self {
        SpeakerError::Neighbor {
            address,
            reason: e.to_string(),
        }
    }
}

/// What the handle asks of the speaker task.
#[derive(Debug)]
enum Command {
    Originate(Vec<IpNet>, oneshot::Sender<()>),
    Withdraw(Vec<IpNet>, oneshot::Sender<()>),
    AddNeighbor(NeighborConfig, oneshot::Sender<Result<(), SpeakerError>>),
    RemoveNeighbor(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    NextHops(oneshot::Sender<Vec<IpAddr>>),
    SetNextHopReachable(IpAddr, bool, oneshot::Sender<()>),
    Routes(oneshot::Sender<Vec<RouteStatus>>),
    Shutdown(oneshot::Sender<()>),
}

/// The speaker's owners' side. Clones talk to the same speaker; when the last one is dropped
/// the speaker shuts down as with [`SpeakerHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct SpeakerHandle {
    tx: mpsc::Sender<Command>,
    listen: Option<SocketAddr>,
}

impl SpeakerHandle {
    /// The address the listener is bound to (with the port the kernel chose for port 0).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// Originates `prefix` (next hop self, ORIGIN IGP) to every peer.
    pub async fn originate(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        self.originate_all(vec![prefix]).await
    }

    /// Originates many prefixes at once: they are announced together, as many per UPDATE as
    /// fit, rather than one UPDATE each.
    pub async fn originate_all(&self, prefixes: Vec<IpNet>) -> Result<(), SpeakerError> {
        prefixes.iter().try_for_each(|p| check_prefix(*p))?;
        self.ask(|tx| Command::Originate(prefixes, tx)).await
    }

    /// Withdraws a prefix originated with [`SpeakerHandle::originate`] (nothing if it was not).
    pub async fn withdraw(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        self.withdraw_all(vec![prefix]).await
    }

    /// Withdraws many originated prefixes at once.
    pub async fn withdraw_all(&self, prefixes: Vec<IpNet>) -> Result<(), SpeakerError> {
        prefixes.iter().try_for_each(|p| check_prefix(*p))?;
        self.ask(|tx| Command::Withdraw(prefixes, tx)).await
    }

    /// Adds a neighbour and starts its session.
    pub async fn add_neighbor(&self, neighbor: NeighborConfig) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::AddNeighbor(neighbor, tx)).await?
    }

    /// Stops the session with a neighbour (Cease) and withdraws the routes learned from it.
    pub async fn remove_neighbor(&self, address: IpAddr) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::RemoveNeighbor(address, tx)).await?
    }

    /// Every neighbour's status, in address order.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        self.ask(Command::Peers).await
    }

    /// Every candidate route of the RIB: per prefix (IPv4 then IPv6, in prefix order) the best
    /// first, then the rest of its multipath group, then the losers.
    pub async fn routes(&self) -> Result<Vec<RouteStatus>, SpeakerError> {
        self.ask(Command::Routes).await
    }

    /// Every next hop of a learned route, for the owner to check against the kernel.
    pub async fn next_hops(&self) -> Result<Vec<IpAddr>, SpeakerError> {
        self.ask(Command::NextHops).await
    }

    /// Whether `next_hop` can be reached (RFC 4271 §9.1.2.1): the routes through an
    /// unreachable one leave the decision process (status shows them as ineligible, "next hop
    /// unreachable") until it is reported reachable again. Every next hop is reachable until
    /// said otherwise.
    pub async fn set_next_hop_reachable(
        &self,
        next_hop: IpAddr,
        reachable: bool,
    ) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::SetNextHopReachable(next_hop, reachable, tx))
            .await
    }

    /// Sends Cease to every peer (with [`SpeakerConfig::graceful_restart_time`]: closes the
    /// connections without one), waits (a few seconds at most) for the sessions to close and
    /// stops the speaker; the [`RouteChange`] channel then ends.
    pub async fn shutdown(&self) -> Result<(), SpeakerError> {
        self.ask(Command::Shutdown).await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(command(tx))
            .await
            .map_err(|_| SpeakerError::Gone)?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }
}

fn check_prefix(prefix: IpNet) -> Result<(), SpeakerError> {
    if prefix.trunc() != prefix {
        return Err(SpeakerError::HostBitsSet { prefix });
    }
    Ok(())
}

/// Starts the speaker on the current tokio runtime: binds the listener (if any), starts a
/// session per neighbour, and returns the handle with the stream of best-route changes.
pub async fn start(
    config: SpeakerConfig,
    neighbors: Vec<NeighborConfig>,
) -> Result<(SpeakerHandle, mpsc::Receiver<RouteChange>), SpeakerError> {
    // The speaker's own values, checked the way every session will check them.
    let mut template = PeerConfig::new(config.asn, config.router_id, config.asn);
    template.hold_time = config.hold_time;
    template.connect_retry_time = config.connect_retry;
    template.validate().map_err(SpeakerError::Config)?;

    let (inbound_tx, inbound_rx) = mpsc::channel(64);
    let (listener_task, listen) = match config.listen {
        Some(addr) => {
            let listener = crate::session::listen(addr)
                .await
                .map_err(|error| SpeakerError::Listen { addr, error })?;
            let bound = listener
                .local_addr()
                .map_err(|error| SpeakerError::Listen { addr, error })?;
            tracing::info!(listen = %bound, "BGP listener bound");
            // A second descriptor of the same socket, for the MD5 keys of peers added later.
            let fd = std::os::fd::AsFd::as_fd(&listener)
                .try_clone_to_owned()
                .map_err(|error| SpeakerError::Listen { addr, error })?;
            (
                Some(tokio::spawn(task::accept_loop(listener, inbound_tx))),
                Some((bound, fd)),
            )
        }
        None => (None, None),
    };
    let (listen, listener_fd) = listen.unzip();

    let mut speaker = task::Speaker::new(config);
    if let Some(fd) = listener_fd {
        if let Err(e) = speaker.set_listener(fd) {
            if let Some(task) = listener_task {
                task.abort();
            }
            return Err(e);
        }
    }
    for neighbor in neighbors {
        if let Err(e) = speaker.add_neighbor(neighbor) {
            if let Some(task) = listener_task {
                task.abort();
            }
            return Err(e);
        }
    }

    let (tx, rx) = mpsc::channel(64);
    let (route_tx, route_rx) = mpsc::channel(ROUTE_CHANNEL_CAPACITY);
    tokio::spawn(speaker.run(rx, inbound_rx, route_tx, listener_task));
    Ok((SpeakerHandle { tx, listen }, route_rx))
}

/// The families a session to `address` carries: its own; IPv6 over an IPv4 session too when
/// [`SpeakerConfig::next_hop_v6`] gives an IPv6 next hop to announce (without one, the
/// IPv4-mapped address would be announced, which routers cannot resolve). IPv4 over IPv6
/// sessions would need RFC 8950.
fn session_families(speaker: &SpeakerConfig, address: IpAddr) -> Vec<crate::fsm::Family> {
    use crate::fsm::Family;
    match address {
        IpAddr::V4(_) if speaker.next_hop_v6.is_some() => {
            vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        }
        IpAddr::V4(_) => vec![Family::IPV4_UNICAST],
        IpAddr::V6(_) => vec![Family::IPV6_UNICAST],
    }
}

/// The session configuration of a neighbour; `Err` names what is wrong with it.
pub(crate) fn session_config(
    speaker: &SpeakerConfig,
    neighbor: &NeighborConfig,
    restarting: bool,
) -> Result<crate::session::SessionConfig, SpeakerError> {
    use crate::fsm::{CapabilitySet, GracefulRestart, GracefulRestartFamily};
    let address = neighbor.address;
    if address.is_unspecified() || address.is_multicast() {
        return Err(SpeakerError::neighbor(address, "not a unicast address"));
    }
    if neighbor.multihop == Some(0) {
        return Err(SpeakerError::neighbor(
            address,
            "multihop TTL must be 1 to 255",
        ));
    }
    let mut fsm = PeerConfig::new(speaker.asn, speaker.router_id, neighbor.asn);
    fsm.hold_time = neighbor.hold_time.unwrap_or(speaker.hold_time);
    fsm.connect_retry_time = speaker.connect_retry;
    fsm.passive = neighbor.passive;
    fsm.damp_peer_oscillations = speaker.damp_peer_oscillations;
    let families = session_families(speaker, address);
    // RFC 4724 §3: R bit after a restart; F bit: the routes we installed stay in the kernel.
    let graceful_restart = speaker
        .graceful_restart_time
        .map(|speaker_time| neighbor.graceful_restart_time.unwrap_or(speaker_time))
        .map(|restart_time| GracefulRestart {
            restart_state: restarting,
            restart_time,
            families: families
                .iter()
                .map(|&family| GracefulRestartFamily {
                    family,
                    forwarding_preserved: true,
                })
                .collect(),
        });
    fsm.capabilities = CapabilitySet {
        families,
        graceful_restart,
        ..CapabilitySet::standard()
    };
    let listen_ip = speaker
        .listen
        .map(|l| l.ip())
        .filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == address.is_ipv4());
    let config = crate::session::SessionConfig {
        peer_port: neighbor.port,
        local_addr: neighbor.local_address.or(listen_ip),
        ttl: neighbor.multihop,
        ttl_security: neighbor.ttl_security,
        md5_key: neighbor.password.clone(),
        connect_timeout: speaker.connect_timeout,
        ..crate::session::SessionConfig::new(address, fsm)
    };
    config
        .validate()
        .map_err(|e: SessionConfigError| SpeakerError::neighbor(address, e))?;
    Ok(config)
}
