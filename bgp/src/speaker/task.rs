//! The speaker task: its state and its `process_*` handlers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::SpeakerError;
use super::{
    session_config, status, Command, MaxPrefixAction, NeighborConfig, RouteChange, SpeakerConfig,
};
use crate::fsm::{DownReason, Family, NotificationInfo};
use crate::packet::{codes, PathAttributes, Update};
use crate::rib::{AddressFamily, LocalInfo, PeerId, PeerInfo, Rib, RibChanges};
use crate::session::{set_listener_md5, spawn_session, SessionEvent, SessionHandle, CLOSE_LINGER};

/// Events of one session, tagged with the generation of the neighbour entry that started it.
type TaggedEvent = (u64, SessionEvent);

/// Session events queued for the speaker task, all sessions together. Small: an UPDATE event
/// holds up to a few hundred decoded prefixes, and a full queue makes the sessions stop
/// reading, so TCP slows the peers down instead of the speaker buffering their tables.
const EVENT_QUEUE: usize = 128;

/// How long shutdown waits for the sessions to close after their Cease.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(CLOSE_LINGER.as_secs() + 2);

/// One configured neighbour.
struct Neighbor {
    config: NeighborConfig,
    session: SessionHandle,
    generation: u64,
    /// The families of the Established session that the peer has not yet ended with an
    /// End-of-RIB (RFC 4724 §2); `None` while not Established.
    awaiting_end_of_rib: Option<BTreeSet<Family>>,
    /// The restart time the peer advertised (RFC 4724 §3) on the current or last session,
    /// if it can restart gracefully (at least one family).
    peer_restart_time: Option<u16>,
    /// We are its graceful-restart helper: its stale routes go at this time at the latest.
    stale_until: Option<Instant>,
    /// Accepted from a `dynamic_peers` range: removed when its session goes down.
    dynamic: bool,
    /// The max-prefix limit was passed (warn or discard) since the session came up.
    over_limit: Option<usize>,
    /// State changes of its sessions, for status and metrics.
    transitions: status::Transitions,
}

pub(super) struct Speaker {
    config: SpeakerConfig,
    rib: Rib,
    neighbors: BTreeMap<IpAddr, Neighbor>,
    next_generation: u64,
    events_tx: mpsc::Sender<TaggedEvent>,
    events_rx: mpsc::Receiver<TaggedEvent>,
    route_tx: Option<mpsc::Sender<RouteChange>>,
    /// When the speaker started: sessions opened within the graceful-restart time after it
    /// say that we restarted (R bit, RFC 4724 §3).
    started: Instant,
    /// The listener's socket (a second descriptor), for MD5 keys.
    listener: Option<std::os::fd::OwnedFd>,
}

/// Accepts connections and hands them to the speaker task until it goes away.
pub(super) async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<(TcpStream, SocketAddr)>) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!(error = %e, "accepting a BGP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Speaker {
    pub(super) fn new(config: SpeakerConfig) -> Self {
        let rib = Rib::new(LocalInfo {
            asn: config.asn,
            router_id: config.router_id,
            cluster_id: config.cluster_id,
        });
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Speaker {
            config,
            rib,
            neighbors: BTreeMap::new(),
            next_generation: 0,
            events_tx,
            events_rx,
            route_tx: None,
            started: Instant::now(),
            listener: None,
        }
    }

    /// Keeps the listener's socket for MD5 keys and sets the dynamic ranges' keys on it.
    pub(super) fn set_listener(
        &mut self,
        listener: std::os::fd::OwnedFd,
    ) -> Result<(), SpeakerError> {
        for range in &self.config.dynamic_peers {
            if let Some(key) = &range.password {
                let prefix = range.prefix.trunc();
                set_listener_md5(
                    &listener,
                    prefix.addr(),
                    Some(prefix.prefix_len()),
                    Some(key),
                )
                .map_err(|e| {
                    SpeakerError::neighbor(
                        prefix.addr(),
                        format!("TCP MD5 key for dynamic peers {prefix}: {e}"),
                    )
                })?;
            }
        }
        self.listener = Some(listener);
        Ok(())
    }

    /// Sets (or removes) a neighbour's MD5 key on the listener.
    fn set_listener_key(&self, config: &NeighborConfig, set: bool) -> Result<(), SpeakerError> {
        let (Some(listener), Some(key)) = (&self.listener, &config.password) else {
            return Ok(());
        };
        set_listener_md5(listener, config.address, None, set.then_some(key))
            .map_err(|e| SpeakerError::neighbor(config.address, format!("TCP MD5 key: {e}")))
    }

    /// Configures a neighbour in the RIB and starts its session.
    pub(super) fn add_neighbor(&mut self, config: NeighborConfig) -> Result<(), SpeakerError> {
        self.add_neighbor_as(config, false)
    }

    fn add_neighbor_as(
        &mut self,
        config: NeighborConfig,
        dynamic: bool,
    ) -> Result<(), SpeakerError> {
        let address = config.address;
        if self.neighbors.contains_key(&address) {
            return Err(SpeakerError::NeighborExists(address));
        }
        let restarting = self
            .config
            .graceful_restart_time
            .is_some_and(|t| self.started.elapsed() < Duration::from_secs(u64::from(t)));
        let session_config = session_config(&self.config, &config, restarting)?;
        self.set_listener_key(&config, true)?;
        let info = PeerInfo {
            address,
            router_id: Ipv4Addr::UNSPECIFIED,
            asn: config.asn,
            ibgp: config.asn == self.config.asn,
            rr_client: config.rr_client && config.asn == self.config.asn,
            // Replaced by the connection's local address when the session comes up.
            local_address: session_config.local_addr.unwrap_or(if address.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            }),
            next_hop_v6: self.config.next_hop_v6,
            next_hop_keep: config.next_hop_keep,
        };
        self.rib
            .add_peer(info)
            .map_err(|e| SpeakerError::neighbor(address, e))?;

        let generation = self.next_generation;
        self.next_generation += 1;
        let (tx, mut rx) = mpsc::channel(64);
        let session = match spawn_session(session_config, tx) {
            Ok(session) => session,
            Err(e) => {
                let _ = self.rib.remove_peer(PeerId(address));
                let _ = self.set_listener_key(&config, false);
                return Err(SpeakerError::neighbor(address, e));
            }
        };
        let forward = self.events_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if forward.send((generation, event)).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(peer = %address, peer_as = config.asn, passive = config.passive, dynamic, "neighbour added");
        self.neighbors.insert(
            address,
            Neighbor {
                config,
                session,
                generation,
                awaiting_end_of_rib: None,
                peer_restart_time: None,
                stale_until: None,
                dynamic,
                over_limit: None,
                transitions: status::Transitions::default(),
            },
        );
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<(TcpStream, SocketAddr)>,
        route_tx: mpsc::Sender<RouteChange>,
        listener: Option<JoinHandle<()>>,
    ) {
        self.route_tx = Some(route_tx);
        loop {
            let stale_deadline = self.neighbors.values().filter_map(|n| n.stale_until).min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        self.shutdown(listener).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.process_command(command).await,
                    None => {
                        // Every handle is gone: nobody can ask for anything any more.
                        self.shutdown(listener).await;
                        return;
                    }
                },
                Some((generation, event)) = self.events_rx.recv() => {
                    self.process_event(generation, event).await;
                }
                Some((stream, from)) = inbound.recv() => self.process_inbound(stream, from),
                _ = sleep_until_some(stale_deadline) => self.process_stale_timeouts().await,
            }
        }
    }

    async fn process_command(&mut self, command: Command) {
        match command {
            Command::Originate(prefixes, done) => {
                tracing::info!(count = prefixes.len(), first = ?prefixes.first(), "originating");
                let changes = self
                    .rib
                    .originate_many(&prefixes, PathAttributes::default());
                self.dispatch(changes).await;
                let _ = done.send(());
            }
            Command::Withdraw(prefixes, done) => {
                tracing::info!(count = prefixes.len(), first = ?prefixes.first(), "withdrawing local routes");
                let changes = self.rib.withdraw_local_many(&prefixes);
                self.dispatch(changes).await;
                let _ = done.send(());
            }
            Command::AddNeighbor(config, done) => {
                let _ = done.send(self.add_neighbor(config));
            }
            Command::RemoveNeighbor(address, done) => {
                let result = self.remove_neighbor(address).await;
                let _ = done.send(result);
            }
            Command::Peers(reply) => {
                let peers = self
                    .neighbors
                    .values()
                    .map(|n| {
                        let id = PeerId(n.config.address);
                        let families = super::session_families(&self.config, n.config.address)
                            .into_iter()
                            .filter_map(AddressFamily::from_family)
                            .filter_map(|family| {
                                let c = self.rib.peer_family_counts(id, family)?;
                                Some(super::FamilyCounts {
                                    family,
                                    received: c.received,
                                    accepted: c.accepted,
                                    advertised: c.advertised,
                                })
                            })
                            .collect();
                        let mut peer = status::peer_status(
                            &n.config,
                            &n.session.status(),
                            self.rib.peer_counts(id),
                            families,
                            n.transitions,
                            n.awaiting_end_of_rib.as_ref().is_some_and(|f| f.is_empty()),
                        );
                        if let (Some(max), Some(seen)) = (n.config.max_prefixes, n.over_limit) {
                            let what = match max.action {
                                MaxPrefixAction::Discard => "further prefixes discarded",
                                _ => "warning only",
                            };
                            let text = format!(
                                "max prefixes {} exceeded: {seen} announced, {what}",
                                max.limit
                            );
                            peer.info = if peer.info.is_empty() {
                                text
                            } else {
                                format!("{}; {text}", peer.info)
                            };
                        }
                        peer
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::NextHops(reply) => {
                let _ = reply.send(self.rib.next_hops().into_iter().collect());
            }
            Command::SetNextHopReachable(next_hop, reachable, done) => {
                let changes = self.rib.set_next_hop_reachable(next_hop, reachable);
                if !changes.is_empty() {
                    tracing::info!(%next_hop, reachable, prefixes = changes.best.len(), "next hop reachability changed");
                }
                self.dispatch(changes).await;
                let _ = done.send(());
            }
            Command::Routes(reply) => {
                let _ = reply.send(status::route_status(&self.rib));
            }
            // Handled by `run`.
            Command::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }

    async fn remove_neighbor(&mut self, address: IpAddr) -> Result<(), SpeakerError> {
        let Some(neighbor) = self.neighbors.remove(&address) else {
            return Err(SpeakerError::UnknownNeighbor(address));
        };
        // Cease 6/3 (Peer De-configured); the task closes on its own and its late events are
        // dropped (generation).
        let _ = neighbor.session.deconfigure();
        if let Err(e) = self.set_listener_key(&neighbor.config, false) {
            tracing::warn!(peer = %address, error = %e, "TCP MD5 key not removed from the listener");
        }
        tracing::info!(peer = %address, "neighbour removed");
        match self.rib.remove_peer(PeerId(address)) {
            Ok(changes) => self.dispatch(changes).await,
            Err(e) => tracing::warn!(peer = %address, error = %e, "RIB did not know the neighbour"),
        }
        Ok(())
    }

    /// A connection the listener accepted: to its neighbour's session, or closed.
    fn process_inbound(&mut self, stream: TcpStream, from: SocketAddr) {
        let source = from.ip().to_canonical();
        match self.neighbors.get(&source) {
            Some(neighbor) => {
                tracing::debug!(peer = %source, "inbound connection");
                let _ = neighbor.session.accept_inbound(stream);
            }
            None => {
                let range = self
                    .config
                    .dynamic_peers
                    .iter()
                    .find(|r| r.prefix.contains(&source));
                let Some(range) = range else {
                    // Closed before any BGP message is read or sent.
                    tracing::info!(from = %from, "connection from an address that is not a neighbour refused");
                    drop(stream);
                    return;
                };
                let config = NeighborConfig {
                    passive: true,
                    peer_type: super::PeerType::Dynamic,
                    // The range's key is on the listener already.
                    password: None,
                    ..NeighborConfig::new(source, range.asn)
                };
                tracing::info!(peer = %source, range = %range.prefix, "dynamic peer accepted");
                match self.add_neighbor_as(config, true) {
                    Ok(()) => {
                        if let Some(neighbor) = self.neighbors.get(&source) {
                            let _ = neighbor.session.accept_inbound(stream);
                        }
                    }
                    Err(e) => tracing::warn!(peer = %source, error = %e, "dynamic peer refused"),
                }
            }
        }
    }

    /// Applies the neighbour's max-prefix limit to an UPDATE before the RIB sees it: `None`
    /// when the session is to be reset instead. Counts all families together.
    fn limit_prefixes(&mut self, peer: IpAddr, mut update: Update) -> Option<Update> {
        let Some(neighbor) = self.neighbors.get_mut(&peer) else {
            return Some(update);
        };
        let Some(max) = neighbor.config.max_prefixes else {
            return Some(update);
        };
        let id = PeerId(peer);
        let held = self.rib.peer_counts(id).map(|c| c.received).unwrap_or(0);
        let withdrawn: Vec<IpNet> = update
            .withdrawn
            .iter()
            .chain(update.mp_unreach.iter().flat_map(|m| m.withdrawn.iter()))
            .copied()
            .filter(|p| self.rib.has_route_from(id, p))
            .collect();
        let mut room = (max.limit + withdrawn.len()).saturating_sub(held);
        let mut new = 0usize;
        let rib = &self.rib;
        let mut keep = |p: &IpNet| {
            if rib.has_route_from(id, p) || withdrawn.contains(p) {
                return true;
            }
            new += 1;
            if room > 0 {
                room -= 1;
                true
            } else {
                max.action != MaxPrefixAction::Discard
            }
        };
        update.nlri.retain(&mut keep);
        if let Some(mp) = &mut update.mp_reach {
            mp.nlri.retain(&mut keep);
        }
        let total = held + new - withdrawn.len().min(held + new);
        if total <= max.limit {
            return Some(update);
        }
        match max.action {
            MaxPrefixAction::Warn | MaxPrefixAction::Discard => {
                if neighbor.over_limit.is_none() {
                    tracing::warn!(peer = %peer, limit = max.limit, announced = total, action = ?max.action, "max prefixes exceeded");
                }
                neighbor.over_limit = Some(total.max(neighbor.over_limit.unwrap_or(0)));
                Some(update)
            }
            MaxPrefixAction::Reset => {
                tracing::warn!(peer = %peer, limit = max.limit, announced = total, "max prefixes exceeded: resetting the session");
                // RFC 4486 §4: AFI, SAFI and the upper bound (the limit is per peer here, so
                // the family of the first prefix that passed it).
                let ipv6 = update.nlri.is_empty()
                    && update.mp_reach.as_ref().is_some_and(|m| m.afi.0 == 2);
                let mut data = vec![0, if ipv6 { 2 } else { 1 }, 1];
                data.extend_from_slice(&u32::try_from(max.limit).unwrap_or(u32::MAX).to_be_bytes());
                let n = NotificationInfo {
                    code: crate::fsm::notification::CEASE,
                    subcode: codes::cease::MAXIMUM_PREFIXES_REACHED,
                    data,
                };
                let _ = neighbor.session.reset(n);
                None
            }
        }
    }

    async fn process_event(&mut self, generation: u64, event: SessionEvent) {
        let peer = match &event {
            SessionEvent::StateChanged { peer, .. }
            | SessionEvent::Established { peer, .. }
            | SessionEvent::Update { peer, .. }
            | SessionEvent::RouteRefresh { peer, .. }
            | SessionEvent::Down { peer, .. } => *peer,
        };
        let Some(neighbor) = self.neighbors.get_mut(&peer) else {
            return;
        };
        if neighbor.generation != generation {
            return;
        }
        let id = PeerId(peer);
        match event {
            SessionEvent::StateChanged { from, to, .. } => {
                tracing::debug!(peer = %peer, %from, %to, "session state");
                neighbor.transitions.all += 1;
                if to == crate::fsm::State::Established {
                    neighbor.transitions.established += 1;
                }
            }
            SessionEvent::Established {
                negotiated,
                local_addr,
                ..
            } => {
                tracing::info!(peer = %peer, local = %local_addr, hold_time = negotiated.hold_time, "session established");
                neighbor.awaiting_end_of_rib = Some(negotiated.families.iter().copied().collect());
                neighbor.peer_restart_time = negotiated
                    .peer_graceful_restart
                    .as_ref()
                    .filter(|gr| !gr.families.is_empty())
                    .map(|gr| gr.restart_time);
                let mut stale_flushed = None;
                if neighbor.stale_until.is_some() {
                    match neighbor.peer_restart_time {
                        // RFC 4724 §4.2: back, now its End-of-RIB decides; bounded again.
                        Some(t) => {
                            neighbor.stale_until =
                                Some(Instant::now() + Duration::from_secs(u64::from(t.max(1))))
                        }
                        // Back without graceful restart: the stale routes go at once.
                        None => {
                            neighbor.stale_until = None;
                            stale_flushed = Some(self.rib.flush_stale(id));
                        }
                    }
                }
                let up = self
                    .rib
                    .set_local_address(id, local_addr.ip().to_canonical())
                    .and_then(|()| self.rib.peer_up(id, &negotiated))
                    .and_then(|()| self.rib.initial_updates(id));
                match up {
                    Ok(updates) => {
                        let _ = neighbor.session.send_updates(updates);
                    }
                    Err(e) => tracing::warn!(peer = %peer, error = %e, "RIB refused the session"),
                }
                if let Some(Ok(changes)) = stale_flushed {
                    self.dispatch(changes).await;
                }
            }
            SessionEvent::Update { update, .. } => {
                let Some(update) = self.limit_prefixes(peer, update) else {
                    return;
                };
                match self.rib.apply_update(id, &update) {
                    Ok(changes) if update.end_of_rib().is_some() => {
                        if let (Some((afi, safi)), Some(awaiting)) = (
                            update.end_of_rib(),
                            self.neighbors
                                .get_mut(&peer)
                                .and_then(|n| n.awaiting_end_of_rib.as_mut()),
                        ) {
                            awaiting.remove(&Family {
                                afi: afi.0,
                                safi: safi.0,
                            });
                            tracing::info!(peer = %peer, afi = afi.0, safi = safi.0, "End-of-RIB received");
                        }
                        self.dispatch(changes).await;
                        // RFC 4724 §4.2: what the restarted peer did not refresh is gone.
                        if let Some(family) = update.end_of_rib().and_then(|(afi, safi)| {
                            AddressFamily::from_family(Family {
                                afi: afi.0,
                                safi: safi.0,
                            })
                        }) {
                            if let Ok(changes) = self.rib.end_of_rib(id, family) {
                                if !changes.is_empty() {
                                    tracing::info!(peer = %peer, prefixes = changes.best.len(), "graceful restart: stale routes removed at End-of-RIB");
                                }
                                self.dispatch(changes).await;
                            }
                            if self.rib.stale_count(id) == 0 {
                                if let Some(n) = self.neighbors.get_mut(&peer) {
                                    n.stale_until = None;
                                }
                            }
                        }
                    }
                    Ok(changes) => self.dispatch(changes).await,
                    Err(e) => tracing::warn!(peer = %peer, error = %e, "UPDATE not applied"),
                }
            }
            SessionEvent::RouteRefresh { afi, safi, .. } => {
                tracing::info!(peer = %peer, afi = afi.0, safi = safi.0, "route refresh requested");
                // RFC 2918 §4: the whole Adj-RIB-Out again (every family; the others are
                // harmless repeats).
                match self.rib.initial_updates(id) {
                    Ok(updates) => {
                        let _ = neighbor.session.send_updates(updates);
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "route refresh not answered")
                    }
                }
            }
            SessionEvent::Down {
                reason,
                detail,
                was_established,
                ..
            } => {
                tracing::info!(peer = %peer, %reason, detail, was_established, "session down");
                let dynamic = neighbor.dynamic;
                neighbor.over_limit = None;
                if dynamic {
                    // A dynamic peer lasts as long as its session.
                    if let Err(e) = self.remove_neighbor(peer).await {
                        tracing::warn!(peer = %peer, error = %e, "dynamic peer not removed");
                    }
                    return;
                }
                neighbor.awaiting_end_of_rib = None;
                // RFC 4724 §4.2: the connection closed without a NOTIFICATION and the peer can
                // restart gracefully: keep its routes, stale, for its restart time.
                let graceful = neighbor
                    .peer_restart_time
                    .filter(|t| *t > 0 && matches!(reason, DownReason::TcpFailed));
                if let (true, Some(restart_time)) = (was_established, graceful) {
                    tracing::info!(peer = %peer, restart_time, "graceful restart: keeping the peer's routes as stale");
                    neighbor.stale_until =
                        Some(Instant::now() + Duration::from_secs(u64::from(restart_time)));
                    if let Err(e) = self.rib.peer_down_graceful(id) {
                        tracing::warn!(peer = %peer, error = %e, "RIB did not know the neighbour");
                    }
                } else if was_established {
                    neighbor.stale_until = None;
                    match self.rib.peer_down(id) {
                        Ok(changes) => self.dispatch(changes).await,
                        Err(e) => {
                            tracing::warn!(peer = %peer, error = %e, "RIB did not know the neighbour")
                        }
                    }
                }
            }
        }
    }

    /// Helpers' restart timers (RFC 4724 §4.2): a peer that did not come back, or did not
    /// send End-of-RIB, in time loses its stale routes.
    async fn process_stale_timeouts(&mut self) {
        let now = Instant::now();
        let expired: Vec<IpAddr> = self
            .neighbors
            .iter_mut()
            .filter(|(_, n)| n.stale_until.is_some_and(|t| t <= now))
            .map(|(address, n)| {
                n.stale_until = None;
                *address
            })
            .collect();
        for peer in expired {
            tracing::info!(peer = %peer, "graceful restart: restart time over; stale routes removed");
            if let Ok(changes) = self.rib.flush_stale(PeerId(peer)) {
                self.dispatch(changes).await;
            }
        }
    }

    /// Sends the UPDATEs to the peers and the changed next hops to the consumer.
    async fn dispatch(&mut self, changes: RibChanges) {
        for (peer, updates) in changes.per_peer_out {
            if let Some(neighbor) = self.neighbors.get(&peer.0) {
                let _ = neighbor.session.send_updates(updates);
            }
        }
        let Some(tx) = &self.route_tx else {
            return;
        };
        for change in changes.best.into_iter().filter(|c| c.next_hops_changed) {
            let change = RouteChange {
                prefix: change.prefix,
                next_hops: change.new.map(|b| b.next_hops).unwrap_or_default(),
            };
            if tx.send(change).await.is_err() {
                // The consumer does not want them.
                self.route_tx = None;
                return;
            }
        }
    }

    /// Cease to every peer; waits for the sessions to close while still draining their
    /// events (a session blocks until its events are taken).
    async fn shutdown(&mut self, listener: Option<JoinHandle<()>>) {
        tracing::info!(peers = self.neighbors.len(), "shutting down");
        if let Some(listener) = listener {
            listener.abort();
        }
        let mut closing = JoinSet::new();
        for (_, neighbor) in std::mem::take(&mut self.neighbors) {
            let _ = if self.config.graceful_restart_time.is_some() {
                neighbor.session.stop_for_restart()
            } else {
                neighbor.session.stop()
            };
            closing.spawn(neighbor.session.stopped());
        }
        let wait = async {
            loop {
                tokio::select! {
                    joined = closing.join_next() => if joined.is_none() { return },
                    Some(_) = self.events_rx.recv() => {}
                }
            }
        };
        if tokio::time::timeout(SHUTDOWN_WAIT, wait).await.is_err() {
            tracing::warn!("sessions did not close in time");
        }
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
