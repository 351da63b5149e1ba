//! The session task: owns the FSM(s), applies their outputs, routes child task messages.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::connection::{self, Connection};
use super::{
    down_text, glue, SessionConfig, SessionConfigError, SessionEvent, SessionMsg, SessionStatus,
};
use crate::fsm::{
    resolve_collision_with_asn, ConnectionOrigin, DownReason, Fsm, Input, Output, PeerConfig,
    State, Timer,
};
use crate::packet::{self, DecodeError, EncodeContext, Message, RouteRefresh, Update};

/// What child tasks tell the session task. Each names its connection, connect attempt or FSM
/// by id, so a message from something the session has since dropped is recognised and ignored.
// An UPDATE dominates, as in `packet::Message`; boxing it would cost an allocation per UPDATE.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Internal {
    Connected {
        attempt: u64,
        result: Result<TcpStream, String>,
    },
    Received {
        conn: u64,
        msg: Message,
    },
    DecodeFailed {
        conn: u64,
        error: DecodeError,
    },
    ConnectionLost {
        conn: u64,
        detail: String,
    },
    TimerFired {
        fsm: u64,
        timer: Timer,
        generation: u64,
    },
}

/// `base` times a random factor between 0.75 and 1 (RFC 4271 §10). The randomness is the
/// standard library's per-process hash seed mixed with the clock, enough to spread retries.
fn jittered(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // 0..=1023, so the factor is 0.75 ..= 1.0 in steps of 1/4096.
    let r = (hasher.finish() % 1024) as u32;
    base * (3072 + r) / 4096
}

/// The FSM carrying the session, or the second one of a collision (RFC 4271 §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Primary,
    Secondary,
}

impl Which {
    fn other(self) -> Which {
        match self {
            Which::Primary => Which::Secondary,
            Which::Secondary => Which::Primary,
        }
    }
}

/// A task aborted when this is dropped: a connect attempt or a timer.
#[derive(Debug)]
struct Task {
    id: u64,
    handle: AbortHandle,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// One FSM with its connection, connect attempt and timers.
#[derive(Debug)]
struct Slot {
    id: u64,
    fsm: Fsm,
    /// Built for a collision (passive, no automatic start); replaced by a normal FSM once its
    /// session ends.
    ephemeral: bool,
    conn: Option<Connection>,
    connecting: Option<Task>,
    /// Armed timers; the task id is the generation that an expiry must match.
    timers: HashMap<Timer, Task>,
    encode_ctx: EncodeContext,
    /// The cause of the next SessionDown the FSM reports.
    down_detail: Option<String>,
}

impl Slot {
    fn new(id: u64, fsm: Fsm, ephemeral: bool) -> Self {
        Slot {
            id,
            fsm,
            ephemeral,
            conn: None,
            connecting: None,
            timers: HashMap::new(),
            encode_ctx: EncodeContext::default(),
            down_detail: None,
        }
    }

    fn state(&self) -> State {
        self.fsm.state()
    }
}

pub(crate) struct Driver {
    config: SessionConfig,
    peer: IpAddr,
    /// Fresh FSMs to clone: the configured one, and the collision one.
    template: Fsm,
    ephemeral_template: Fsm,
    primary: Slot,
    secondary: Option<Slot>,
    /// A connect that was in flight when an inbound connection was accepted in Connect.
    orphan: Option<Task>,
    tx: mpsc::UnboundedSender<Internal>,
    rx: mpsc::UnboundedReceiver<Internal>,
    events: mpsc::Sender<SessionEvent>,
    pending: Vec<SessionEvent>,
    status: watch::Sender<SessionStatus>,
    reported_state: State,
    since: Instant,
    last_error: Option<String>,
    messages_in: u64,
    messages_out: u64,
    updates_in: u64,
    updates_out: u64,
    stopping: bool,
    /// The Cease subcode of a stop other than Administrative Shutdown (Peer De-configured).
    stop_subcode: Option<u8>,
    /// A stop for a graceful restart: the connection is closed without a NOTIFICATION, so the
    /// peer keeps our routes (RFC 4724 §4.2).
    silent_stop: bool,
    next_id: u64,
}

impl Driver {
    pub(crate) fn new(
        config: SessionConfig,
        events: mpsc::Sender<SessionEvent>,
        status: watch::Sender<SessionStatus>,
    ) -> Result<Self, SessionConfigError> {
        let template = Fsm::new(config.fsm.clone())?;
        // RFC 4271 §6.8 / the `fsm` docs: the second connection's FSM.
        let ephemeral_template = Fsm::new(PeerConfig {
            passive: true,
            allow_automatic_start: false,
            ..config.fsm.clone()
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Driver {
            peer: config.peer_addr,
            primary: Slot::new(0, template.clone(), false),
            template,
            ephemeral_template,
            config,
            secondary: None,
            orphan: None,
            tx,
            rx,
            events,
            pending: Vec::new(),
            status,
            reported_state: State::Idle,
            since: Instant::now(),
            last_error: None,
            messages_in: 0,
            messages_out: 0,
            updates_in: 0,
            updates_out: 0,
            stopping: false,
            stop_subcode: None,
            silent_stop: false,
            next_id: 1,
        })
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<SessionMsg>) {
        tracing::info!("session starting");
        self.feed(Which::Primary, Input::ManualStart);
        let mut running = self.finish_step().await;
        while running {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.process_command(cmd),
                    // The handle is gone: nobody can use this session any more.
                    None => self.stop(),
                },
                msg = self.rx.recv() => {
                    if let Some(msg) = msg {
                        self.process_internal(msg);
                    }
                }
            }
            running = self.finish_step().await;
        }
        tracing::info!("session stopped");
        // Dropping the slots closes their connections (flushing the NOTIFICATION) and aborts
        // their timers.
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn slot(&self, which: Which) -> Option<&Slot> {
        match which {
            Which::Primary => Some(&self.primary),
            Which::Secondary => self.secondary.as_ref(),
        }
    }

    fn slot_mut(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Primary => Some(&mut self.primary),
            Which::Secondary => self.secondary.as_mut(),
        }
    }

    fn slot_of_conn(&self, conn: u64) -> Option<Which> {
        [Which::Primary, Which::Secondary].into_iter().find(|w| {
            self.slot(*w)
                .and_then(|s| s.conn.as_ref())
                .is_some_and(|c| c.id == conn)
        })
    }

    fn slot_of_fsm(&self, fsm: u64) -> Option<Which> {
        [Which::Primary, Which::Secondary]
            .into_iter()
            .find(|w| self.slot(*w).is_some_and(|s| s.id == fsm))
    }

    // ===== the step boundary =====

    /// Settles the two FSMs, publishes status and hands the events over. False when the task
    /// should end.
    async fn finish_step(&mut self) -> bool {
        self.reconcile();
        self.publish_status();
        for event in std::mem::take(&mut self.pending) {
            if self.events.send(event).await.is_err() {
                tracing::warn!("event receiver dropped; stopping the session");
                self.stop();
                self.pending.clear();
                self.publish_status();
                return false;
            }
        }
        !self.stopping
    }

    /// After a step: resolve what RFC 4271 §6.8 leaves to the driver, and restart a session
    /// whose FSM will not restart itself.
    fn reconcile(&mut self) {
        if let Some(second) = &self.secondary {
            let s = second.state();
            let p = self.primary.state();
            if s < State::OpenSent {
                // The second connection failed or lost the collision.
                self.secondary = None;
            } else if s == State::Established || p < State::OpenSent {
                if p >= State::OpenSent {
                    // §6.8: an Established connection wins over the other one.
                    self.feed(Which::Primary, Input::CollisionDump);
                }
                self.promote();
            } else if p == State::Established {
                self.feed(Which::Secondary, Input::CollisionDump);
                self.secondary = None;
            }
        }
        let p = &self.primary;
        if !self.stopping
            && p.state() == State::Idle
            && !p.fsm.is_timer_armed(Timer::IdleHold)
            && (p.ephemeral || p.fsm.last_down_reason() == Some(&DownReason::Collision))
        {
            // A collision FSM does not restart itself, and a collision dump schedules no
            // restart: start over with the configured FSM (its damping history is lost).
            tracing::debug!("restarting with a fresh FSM");
            let id = self.next_id();
            self.primary = Slot::new(id, self.template.clone(), false);
            if self.config.fsm.allow_automatic_start {
                self.feed(Which::Primary, Input::AutomaticStart);
            }
        }
    }

    /// The second FSM becomes the session's.
    fn promote(&mut self) {
        let Some(second) = self.secondary.take() else {
            return;
        };
        tracing::info!(state = %second.state(), "the other connection carries the session");
        // The old primary's connection, timers and connect attempt go with it.
        self.primary = second;
        self.report_state(self.primary.state());
        if self.primary.state() == State::Established {
            self.report_established();
        }
    }

    fn report_state(&mut self, to: State) {
        if to != self.reported_state {
            tracing::info!(from = %self.reported_state, to = %to, "state changed");
            self.pending.push(SessionEvent::StateChanged {
                peer: self.peer,
                from: self.reported_state,
                to,
            });
            self.reported_state = to;
            self.since = Instant::now();
        }
    }

    fn report_established(&mut self) {
        let p = &self.primary;
        let Some(negotiated) = p.fsm.negotiated().cloned() else {
            return;
        };
        let local_addr = p
            .conn
            .as_ref()
            .and_then(|c| c.local_addr)
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        tracing::info!(
            hold_time = negotiated.hold_time,
            four_octet_as = negotiated.four_octet_as,
            %local_addr,
            "session established"
        );
        self.pending.push(SessionEvent::Established {
            peer: self.peer,
            negotiated,
            local_addr,
        });
        // Reconnections after this one are not a restart of ours (R bit, RFC 4724 §3).
        self.primary.fsm.clear_restart_state();
        self.template.clear_restart_state();
        self.ephemeral_template.clear_restart_state();
    }

    fn publish_status(&mut self) {
        let p = &self.primary;
        let established = p.state() == State::Established;
        let status = SessionStatus {
            peer: self.peer,
            state: self.reported_state,
            since: self.since,
            last_error: self.last_error.clone(),
            negotiated: if p.state() >= State::OpenConfirm {
                p.fsm.negotiated().cloned()
            } else {
                None
            },
            local_addr: if established {
                p.conn.as_ref().and_then(|c| c.local_addr)
            } else {
                None
            },
            messages_in: self.messages_in,
            messages_out: self.messages_out,
            updates_in: self.updates_in,
            updates_out: self.updates_out,
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    // ===== feeding the FSM and applying its outputs =====

    fn feed(&mut self, which: Which, input: Input) {
        // The FSM that loses a collision goes quietly; only the session's FSM is reported.
        let report = which == Which::Primary && input != Input::CollisionDump;
        let Some(slot) = self.slot_mut(which) else {
            return;
        };
        tracing::trace!(?which, ?input, state = %slot.state(), "FSM input");
        let outputs = slot.fsm.process(input);
        for output in outputs {
            self.apply(which, output, report);
        }
    }

    fn apply(&mut self, which: Which, output: Output, report: bool) {
        match output {
            Output::Connect => self.start_connect(which),
            Output::Disconnect => {
                if let Some(slot) = self.slot_mut(which) {
                    // Dropping closes the connection gracefully, or aborts the attempt.
                    slot.conn = None;
                    slot.connecting = None;
                }
            }
            Output::SendOpen(params) => {
                self.send_message(which, &Message::Open(glue::open_message(&params)))
            }
            Output::SendKeepalive => self.send_message(which, &Message::Keepalive),
            Output::SendNotification(_) if self.stopping && self.silent_stop => {
                tracing::info!("graceful restart: closing without a NOTIFICATION");
            }
            Output::SendNotification(mut n) => {
                // The FSM's ManualStop always says Administrative Shutdown; the reason for
                // this stop may be more precise (RFC 4486 §4).
                if let Some(subcode) = self.stop_subcode.filter(|_| self.stopping) {
                    if n.code == crate::fsm::notification::CEASE
                        && n.subcode == crate::fsm::notification::ADMINISTRATIVE_SHUTDOWN
                    {
                        n.subcode = subcode;
                    }
                }
                tracing::warn!(code = n.code, subcode = n.subcode, "sending NOTIFICATION");
                self.send_message(
                    which,
                    &Message::Notification(glue::notification_message(&n)),
                );
            }
            Output::StartTimer { timer, seconds } => self.start_timer(which, timer, seconds),
            Output::StopTimer(timer) => {
                if let Some(slot) = self.slot_mut(which) {
                    slot.timers.remove(&timer);
                }
            }
            Output::SessionEstablished(negotiated) => {
                if let Some(slot) = self.slot_mut(which) {
                    slot.encode_ctx = glue::encode_context(&negotiated);
                }
                if report {
                    self.report_established();
                }
            }
            Output::SessionDown {
                reason,
                was_established,
            } => {
                let detail = self.slot_mut(which).and_then(|s| s.down_detail.take());
                let text = down_text(&reason, detail.as_deref());
                if report {
                    tracing::warn!(reason = %text, was_established, "session down");
                    self.last_error = Some(text);
                    self.pending.push(SessionEvent::Down {
                        peer: self.peer,
                        reason,
                        detail,
                        was_established,
                    });
                } else {
                    tracing::info!(?which, reason = %text, "second connection closed");
                }
            }
            Output::StateChanged { from, to } => {
                tracing::debug!(?which, %from, %to, "FSM state");
                if report {
                    self.report_state(to);
                }
            }
        }
    }

    fn start_connect(&mut self, which: Which) {
        let id = self.next_id();
        let tx = self.tx.clone();
        let peer = self.config.peer_socket();
        let (local, options, timeout) = (
            self.config.local_addr,
            self.config.socket_options(),
            self.config.connect_timeout,
        );
        tracing::debug!(%peer, "connecting");
        let handle = tokio::spawn(
            async move {
                let result = connection::connect(peer, local, &options, timeout).await;
                let _ = tx.send(Internal::Connected {
                    attempt: id,
                    result,
                });
            }
            .in_current_span(),
        )
        .abort_handle();
        if let Some(slot) = self.slot_mut(which) {
            slot.connecting = Some(Task { id, handle });
        }
    }

    fn start_timer(&mut self, which: Which, timer: Timer, seconds: u16) {
        let generation = self.next_id();
        let tx = self.tx.clone();
        let Some(slot) = self.slot_mut(which) else {
            return;
        };
        let fsm = slot.id;
        let duration = if timer == Timer::ConnectRetry {
            // RFC 4271 §10: jitter, so that peers refused together do not retry in lockstep.
            jittered(Duration::from_secs(u64::from(seconds)))
        } else {
            Duration::from_secs(u64::from(seconds))
        };
        let handle = tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let _ = tx.send(Internal::TimerFired {
                fsm,
                timer,
                generation,
            });
        })
        .abort_handle();
        // Replacing a running timer aborts it (the FSM restarts timers this way).
        slot.timers.insert(
            timer,
            Task {
                id: generation,
                handle,
            },
        );
    }

    fn send_message(&mut self, which: Which, msg: &Message) {
        let Some(slot) = self.slot(which) else {
            return;
        };
        let Some(conn) = &slot.conn else {
            tracing::debug!(?which, "no connection to send on");
            return;
        };
        match packet::encode(msg, &slot.encode_ctx) {
            Ok(frame) => {
                conn.send(frame);
                self.messages_out += 1;
            }
            Err(e) => tracing::error!(error = %e, "cannot encode message"),
        }
    }

    // ===== commands from the handle =====

    fn process_command(&mut self, cmd: SessionMsg) {
        match cmd {
            SessionMsg::SendUpdates(updates) => self.send_updates(updates),
            SessionMsg::AcceptInbound(stream) => self.accept_inbound(stream),
            SessionMsg::RouteRefresh(afi, safi) => {
                let p = &self.primary;
                let ok = p.state() == State::Established
                    && p.fsm
                        .negotiated()
                        .is_some_and(|n| n.route_refresh && glue::has_family(n, afi, safi));
                if ok {
                    let rr = RouteRefresh {
                        afi,
                        safi,
                        subtype: RouteRefresh::REQUEST,
                    };
                    self.send_message(Which::Primary, &Message::RouteRefresh(rr));
                } else {
                    tracing::warn!(
                        afi = afi.0,
                        safi = safi.0,
                        "route refresh not sent: not established, or not negotiated"
                    );
                }
            }
            SessionMsg::Stop => self.stop(),
            SessionMsg::Deconfigure => {
                self.stop_subcode = Some(crate::packet::codes::cease::PEER_DECONFIGURED);
                self.stop();
            }
            SessionMsg::StopForRestart => {
                self.silent_stop = true;
                self.stop();
            }
            SessionMsg::Reset(n) => {
                if self.primary.state() == State::Established {
                    tracing::warn!(code = n.code, subcode = n.subcode, "resetting the session");
                    // An error detected in Established: NOTIFICATION, Idle, automatic restart.
                    self.feed(Which::Primary, Input::UpdateMsgErr(n));
                }
            }
        }
    }

    fn send_updates(&mut self, updates: Vec<Update>) {
        if self.primary.state() != State::Established {
            tracing::warn!(
                count = updates.len(),
                "UPDATEs dropped: session not established"
            );
            return;
        }
        for update in updates {
            let before = self.messages_out;
            self.send_message(Which::Primary, &Message::Update(update));
            if self.messages_out != before {
                self.updates_out += 1;
            }
        }
    }

    fn accept_inbound(&mut self, stream: TcpStream) {
        let remote = stream.peer_addr().ok();
        if self.stopping {
            return;
        }
        if let Err(e) = self
            .config
            .socket_options()
            .apply_accepted(&stream, self.config.peer_addr.is_ipv4())
        {
            tracing::warn!(error = %e, "cannot set TTL or minimum TTL on inbound connection");
        }
        let p = self.primary.state();
        if self.primary.fsm.accepts_inbound() {
            tracing::info!(?remote, "inbound connection accepted");
            // Keep a connect in flight: if it completes, it is the second connection of a
            // collision rather than a connection both sides abandon.
            if let Some(attempt) = self.primary.connecting.take() {
                self.orphan = Some(attempt);
            }
            let conn = Connection::start(self.next_id(), stream, self.tx.clone());
            self.primary.conn = Some(conn);
            self.feed(Which::Primary, Input::TcpConnectionAccepted);
        } else if matches!(p, State::OpenSent | State::OpenConfirm)
            && self.primary.fsm.connection_origin() == Some(ConnectionOrigin::Local)
            && self.secondary.is_none()
        {
            tracing::info!(?remote, "inbound connection while {p}: collision detection");
            self.start_secondary(stream, ConnectionOrigin::Remote);
        } else {
            // Idle refuses connections (§8.2.2); Established keeps its connection (§6.8).
            tracing::info!(?remote, state = %p, "inbound connection closed");
        }
    }

    fn start_secondary(&mut self, stream: TcpStream, origin: ConnectionOrigin) {
        let id = self.next_id();
        let mut slot = Slot::new(id, self.ephemeral_template.clone(), true);
        slot.conn = Some(Connection::start(self.next_id(), stream, self.tx.clone()));
        self.secondary = Some(slot);
        self.feed(Which::Secondary, Input::ManualStart);
        let input = match origin {
            ConnectionOrigin::Local => Input::TcpConnectionConfirmed,
            ConnectionOrigin::Remote => Input::TcpConnectionAccepted,
        };
        self.feed(Which::Secondary, input);
    }

    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        tracing::info!("stopping (ManualStop)");
        self.stopping = true;
        self.orphan = None;
        self.feed(Which::Secondary, Input::ManualStop);
        self.feed(Which::Primary, Input::ManualStop);
    }

    // ===== messages from child tasks =====

    fn process_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Connected { attempt, result } => self.process_connected(attempt, result),
            Internal::Received { conn, msg } => {
                if let Some(which) = self.slot_of_conn(conn) {
                    self.process_message(which, msg);
                }
            }
            Internal::DecodeFailed { conn, error } => {
                if let Some(which) = self.slot_of_conn(conn) {
                    tracing::warn!(error = %error, "malformed message");
                    if let Some(slot) = self.slot_mut(which) {
                        slot.down_detail = Some(error.to_string());
                    }
                    self.feed(which, glue::error_input(&error));
                }
            }
            Internal::ConnectionLost { conn, detail } => {
                if let Some(which) = self.slot_of_conn(conn) {
                    tracing::info!(?which, %detail, "connection lost");
                    if let Some(slot) = self.slot_mut(which) {
                        slot.down_detail = Some(detail);
                    }
                    self.feed(which, Input::TcpConnectionFails);
                }
            }
            Internal::TimerFired {
                fsm,
                timer,
                generation,
            } => {
                let Some(which) = self.slot_of_fsm(fsm) else {
                    return;
                };
                let Some(slot) = self.slot_mut(which) else {
                    return;
                };
                // An expiry that raced a restart of the same timer is not an expiry.
                if slot.timers.get(&timer).is_some_and(|t| t.id == generation) {
                    slot.timers.remove(&timer);
                    self.feed(which, Input::timer_expired(timer));
                }
            }
        }
    }

    fn process_connected(&mut self, attempt: u64, result: Result<TcpStream, String>) {
        if self
            .primary
            .connecting
            .as_ref()
            .is_some_and(|t| t.id == attempt)
        {
            self.primary.connecting = None;
            match result {
                Ok(stream) => {
                    tracing::info!(local = ?stream.local_addr().ok(), "connected");
                    let conn = Connection::start(self.next_id(), stream, self.tx.clone());
                    self.primary.conn = Some(conn);
                    self.feed(Which::Primary, Input::TcpConnectionConfirmed);
                }
                Err(detail) => {
                    tracing::info!(%detail, "connect failed");
                    self.primary.down_detail = Some(detail);
                    self.feed(Which::Primary, Input::TcpConnectionFails);
                }
            }
        } else if self.orphan.as_ref().is_some_and(|t| t.id == attempt) {
            self.orphan = None;
            let Ok(stream) = result else {
                return;
            };
            let p = self.primary.state();
            if !self.stopping
                && matches!(p, State::OpenSent | State::OpenConfirm)
                && self.primary.fsm.connection_origin() == Some(ConnectionOrigin::Remote)
                && self.secondary.is_none()
            {
                tracing::info!("outbound connection completed while {p}: collision detection");
                self.start_secondary(stream, ConnectionOrigin::Local);
            }
        }
    }

    fn process_message(&mut self, which: Which, msg: Message) {
        self.messages_in += 1;
        let before = self.slot(which).map(Slot::state);
        match msg {
            Message::Open(open) => self.process_open(which, open),
            Message::Update(update) => {
                self.updates_in += 1;
                self.feed(which, Input::UpdateReceived);
                if self.still_established(which, before) {
                    if let Some(treatment) = update.treatment() {
                        tracing::warn!(
                            ?treatment,
                            errors = ?update.errors,
                            "UPDATE with malformed attributes (RFC 7606)"
                        );
                    }
                    self.pending.push(SessionEvent::Update {
                        peer: self.peer,
                        update,
                    });
                }
            }
            Message::Notification(n) => {
                tracing::warn!(
                    code = n.code,
                    subcode = n.subcode,
                    shutdown_communication = n.shutdown_communication(),
                    "NOTIFICATION received"
                );
                // Status shows the names, not only the numbers of the DownReason.
                if let Some(slot) = self.slot_mut(which) {
                    slot.down_detail = Some(n.to_string());
                }
                self.feed(
                    which,
                    Input::NotificationReceived(glue::notification_info(&n)),
                );
            }
            Message::Keepalive => self.feed(which, Input::KeepaliveReceived),
            Message::RouteRefresh(rr) => {
                self.feed(which, Input::RouteRefreshReceived);
                let negotiated = self.primary.fsm.negotiated();
                // RFC 2918 §4: a refresh for a family not negotiated is ignored.
                let wanted = rr.subtype == RouteRefresh::REQUEST
                    && negotiated.is_some_and(|n| glue::has_family(n, rr.afi, rr.safi));
                if self.still_established(which, before) && wanted {
                    self.pending.push(SessionEvent::RouteRefresh {
                        peer: self.peer,
                        afi: rr.afi,
                        safi: rr.safi,
                    });
                } else {
                    tracing::debug!(?rr, "ROUTE-REFRESH ignored");
                }
            }
        }
    }

    fn still_established(&self, which: Which, before: Option<State>) -> bool {
        which == Which::Primary
            && before == Some(State::Established)
            && self.primary.state() == State::Established
    }

    /// An OPEN, with collision detection (RFC 4271 §6.8): if the other connection is in
    /// OpenConfirm, the peer's BGP Identifier decides which one survives.
    fn process_open(&mut self, which: Which, open: packet::Open) {
        let info = glue::open_info(&open);
        let origin = self.slot(which).and_then(|s| s.fsm.connection_origin());
        let loses = match self.slot(which.other()).map(Slot::state) {
            // CollisionDetectEstablishedState is not set: the Established connection wins.
            Some(State::Established) => true,
            Some(State::OpenConfirm) => {
                let cfg = &self.config.fsm;
                let winner = resolve_collision_with_asn(
                    cfg.local_router_id,
                    cfg.local_asn,
                    info.router_id,
                    info.asn,
                );
                let loses = origin.is_some_and(|o| !winner.keeps(o));
                tracing::info!(?winner, peer_id = %info.router_id, "connection collision");
                if !loses {
                    self.feed(which.other(), Input::CollisionDump);
                }
                loses
            }
            _ => false,
        };
        if loses {
            self.feed(which, Input::CollisionDump);
            return;
        }
        self.feed(which, Input::OpenReceived(info));
        if let Some(slot) = self.slot_mut(which) {
            let negotiated = slot.fsm.negotiated();
            if let Some(n) = negotiated {
                slot.encode_ctx = glue::encode_context(n);
            }
            if let Some(conn) = &slot.conn {
                // Releases the reader, which waits after an OPEN for the session's context.
                conn.set_decode_context(negotiated.map(glue::decode_context).unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_retry_jitter_stays_between_three_quarters_and_the_whole() {
        let base = Duration::from_secs(4);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        for d in &samples {
            assert!(
                *d >= Duration::from_secs(3) && *d <= base,
                "{d:?} outside 3 s ..= 4 s"
            );
        }
        // Spread, not one value: peers refused together must not retry in lockstep.
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 50, "{} distinct values", distinct.len());
    }
}
