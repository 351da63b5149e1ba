//! The per-peer BGP finite state machine of RFC 4271 §8, as pure code.
//!
//! [`Fsm::process`] takes one [`Input`] (an RFC 4271 §8.1 event) and returns the [`Output`]s the
//! driver must apply, in order. There is no async, no I/O and no clock read: timers are outputs
//! ([`Output::StartTimer`], [`Output::StopTimer`]) and their expiry comes back as an input. The
//! driver owns the socket, the codec and the clock. It maps decoded messages to the small types
//! here ([`OpenInfo`], [`NotificationInfo`]), so this module does not depend on `packet/`.
//!
//! ```text
//!  Idle ─start─► Connect ─TCP up─► OpenSent ─OPEN ok─► OpenConfirm ─KEEPALIVE─► Established
//!   │               ▲                ▲   │
//!   │        retry  │        TCP up  │   │ TCP fails
//!   │        timer  │  ┌─────────────┘   │
//!   └─start──────► Active ◄──────────────┘
//!     (passive)
//!
//!  Errors, NOTIFICATIONs, hold timer expiry, ManualStop: ──► Idle. After a failure the
//!  IdleHold timer (1 s, 2 s, 4 s ... 120 s) starts the session again.
//! ```
//!
//! # Connect delay
//!
//! A connection that fails before the peer's OPEN arrived (refused, no route, or accepted and
//! closed by a speaker that does not know us yet) is not a session failure: the FSM keeps
//! listening in Active and connects again after the *connect delay*, 1 s after the first such
//! failure, then 2 s, 4 s ... up to the ConnectRetryTime ([`Fsm::next_connect_delay`]). The
//! delay returns to 1 s once an OPEN is accepted. So agents started together, each refused by
//! peers whose listener is not up yet, find each other within a second or two instead of
//! waiting a whole ConnectRetryTime (BIRD likewise stays in Active after a failed connect).
//! For Connect this departs from RFC 4271 §8.2.2, which goes to Idle unless a DelayOpenTimer
//! runs; Idle would refuse the peer's own connection meanwhile. The driver jitters the
//! ConnectRetryTimer (RFC 4271 §10), so that peers refused together do not retry in lockstep.
//!
//! # Driver contract
//!
//! - **Timers** are one-shot. `StartTimer` on a running timer restarts it; `StopTimer` cancels
//!   it; when one fires the driver feeds [`Input::timer_expired`]. The FSM ignores the expiry of a
//!   timer it has not armed (an expiry racing a `StopTimer`), so the driver need not be exact.
//! - **Connections.** `Connect` opens TCP to the peer's port 179. `Disconnect` closes the
//!   session's connection after flushing queued writes (so a NOTIFICATION goes out), or aborts a
//!   pending connect. `TcpConnectionConfirmed` reports that our connect completed,
//!   `TcpConnectionAccepted` an inbound connection, `TcpConnectionFails` a failed or closed one.
//!   Offer inbound connections only while [`Fsm::accepts_inbound`] holds (Idle refuses them,
//!   §8.2.2); when one is accepted in Connect, abandon the outbound attempt.
//! - **Messages.** Decoded messages map to `OpenReceived`, `KeepaliveReceived`, `UpdateReceived`,
//!   `RouteRefreshReceived`, `NotificationReceived`; decode errors that reset the session map to
//!   `HeaderErr`, `OpenMsgErr`, `UpdateMsgErr` carrying the NOTIFICATION to send. UPDATE errors
//!   that RFC 7606 handles by treat-as-withdraw or attribute-discard are not reported here.
//!
//! # Connection collisions (RFC 4271 §6.8)
//!
//! One `Fsm` tracks one connection. While the peer's FSM is in OpenSent or OpenConfirm, an
//! inbound connection from the same peer gets a second `Fsm`, built from the same config with
//! `passive: true, allow_automatic_start: false`, started with `ManualStart` and fed
//! `TcpConnectionAccepted`. When an OPEN arrives on one connection while the other is in
//! OpenConfirm (so the peer's BGP Identifier is known, [`Fsm::peer_open`]), the driver calls
//! [`resolve_collision_with_asn`] (or [`resolve_collision`]) and checks each FSM's
//! [`Fsm::connection_origin`] with [`CollisionWinner::keeps`]. The loser gets
//! [`Input::CollisionDump`]: it sends Cease 6/7, disconnects and goes Idle without scheduling a
//! restart, and the driver drops it (promoting the second `Fsm` if the first one lost). If the
//! loser is the connection the OPEN just arrived on, feed `CollisionDump` instead of the OPEN.
//! An inbound connection while the peer's FSM is Established is closed (§6.8: the existing
//! Established connection wins).
//!
//! Not implemented: DelayOpen, AutomaticStop, TCP connection validation events (14/15) and
//! CollisionDetectEstablishedState (all optional in RFC 4271 §8.1).

mod collision;
mod config;
mod types;

#[cfg(test)]
mod tests;

pub use collision::{resolve_collision, resolve_collision_with_asn, CollisionWinner};
pub use config::{
    PeerConfig, PeerConfigError, DEFAULT_CONNECT_RETRY_TIME, DEFAULT_HOLD_TIME,
    DEFAULT_IDLE_HOLD_TIME, DEFAULT_MAX_IDLE_HOLD_TIME,
};
pub use types::{
    notification, CapabilitySet, ConnectionOrigin, DownReason, Family, GracefulRestart,
    GracefulRestartFamily, Input, NegotiatedSession, NotificationInfo, OpenInfo, OpenParams,
    Output, State, Timer,
};

/// The BGP version this speaker supports (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;
/// HoldTimer value while waiting for the peer's OPEN (RFC 4271 §8.2.2: "4 minutes").
pub const LARGE_HOLD_TIME: u16 = 240;

// ===== the state machine =====

/// One peer connection's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    state: State,
    config: PeerConfig,
    // Timers armed and neither stopped nor expired since.
    armed: [bool; Timer::COUNT],
    // ConnectRetryCounter (§8.1.3): failures since the last ManualStart or stable session.
    connect_retry_counter: u32,
    // The IdleHoldTimer value the next failure will use.
    next_idle_hold_time: u16,
    // Connections that failed before an OPEN arrived, since the last accepted OPEN or
    // ManualStart: they set the connect delay (module docs).
    connect_failures: u32,
    origin: Option<ConnectionOrigin>,
    peer_open: Option<OpenInfo>,
    negotiated: Option<NegotiatedSession>,
    last_down: Option<DownReason>,
}

impl Fsm {
    /// An FSM in Idle. Nothing happens until `ManualStart` or `AutomaticStart`.
    pub fn new(config: PeerConfig) -> Result<Self, PeerConfigError> {
        config.validate()?;
        Ok(Fsm {
            state: State::Idle,
            next_idle_hold_time: config.idle_hold_time,
            config,
            armed: [false; Timer::COUNT],
            connect_retry_counter: 0,
            connect_failures: 0,
            origin: None,
            peer_open: None,
            negotiated: None,
            last_down: None,
        })
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Our restart is over once a session is up (RFC 4724 §3): later OPENs carry the graceful
    /// restart capability without the Restart State (R) bit.
    pub fn clear_restart_state(&mut self) {
        if let Some(gr) = &mut self.config.capabilities.graceful_restart {
            gr.restart_state = false;
        }
    }

    /// The session's negotiated parameters, from OpenConfirm until it goes down.
    pub fn negotiated(&self) -> Option<&NegotiatedSession> {
        self.negotiated.as_ref()
    }

    /// The peer's OPEN on the current connection; its `router_id` feeds collision resolution.
    pub fn peer_open(&self) -> Option<&OpenInfo> {
        self.peer_open.as_ref()
    }

    /// Who opened the current connection (None before OpenSent).
    pub fn connection_origin(&self) -> Option<ConnectionOrigin> {
        self.origin
    }

    pub fn last_down_reason(&self) -> Option<&DownReason> {
        self.last_down.as_ref()
    }

    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The IdleHoldTimer value the next failure will arm.
    pub fn next_idle_hold_time(&self) -> u16 {
        self.next_idle_hold_time
    }

    /// The ConnectRetryTimer value the next connection failure before an OPEN will arm:
    /// 1 s, doubled for each such failure in a row, capped at the ConnectRetryTime.
    pub fn next_connect_delay(&self) -> u16 {
        let doubled = 1u32 << self.connect_failures.min(15);
        doubled.min(u32::from(self.config.connect_retry_time)) as u16
    }

    pub fn is_timer_armed(&self, timer: Timer) -> bool {
        self.armed[timer.index()]
    }

    /// Whether an inbound connection from the peer should be fed to this FSM (§8.2.2: Connect
    /// and Active listen, Idle refuses; later states hand it to collision handling).
    pub fn accepts_inbound(&self) -> bool {
        matches!(self.state, State::Connect | State::Active)
    }

    /// Feeds one event; returns what the driver must do, in order.
    pub fn process(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(timer) = input.expired_timer() {
            // A stale expiry (the timer was stopped or restarted meanwhile) is not an event.
            if !self.armed[timer.index()] {
                return out;
            }
            self.armed[timer.index()] = false;
        }
        match self.state {
            State::Idle => self.process_idle(input, &mut out),
            State::Connect => self.process_connect(input, &mut out),
            State::Active => self.process_active(input, &mut out),
            State::OpenSent => self.process_open_sent(input, &mut out),
            State::OpenConfirm => self.process_open_confirm(input, &mut out),
            State::Established => self.process_established(input, &mut out),
        }
        out
    }

    // RFC 4271 §8.2.2, Idle state.
    fn process_idle(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart => {
                // An operator start overrides any damping in progress.
                self.stop(Timer::IdleHold, out);
                self.connect_retry_counter = 0;
                self.connect_failures = 0;
                self.next_idle_hold_time = self.config.idle_hold_time;
                self.start_session(out);
            }
            // §8.1.1 DampPeerOscillations: while the IdleHoldTimer runs, it decides when.
            Input::AutomaticStart
                if self.config.allow_automatic_start && !self.is_timer_armed(Timer::IdleHold) =>
            {
                self.start_session(out)
            }
            Input::IdleHoldTimerExpired => self.start_session(out),
            // ManualStop cancels a pending automatic restart; the FSM stays Idle.
            Input::ManualStop => self.stop(Timer::IdleHold, out),
            // Idle refuses connections, and other events do not change the state (§8.2.2).
            _ => {}
        }
    }

    // RFC 4271 §8.2.2, Connect state (DelayOpen not implemented).
    fn process_connect(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart | Input::AutomaticStart | Input::CollisionDump => {}
            Input::ManualStop => self.manual_stop(out),
            Input::ConnectRetryTimerExpired => {
                // Drop the attempt in progress, restart the timer, try again.
                out.push(Output::Disconnect);
                self.start(Timer::ConnectRetry, self.config.connect_retry_time, out);
                out.push(Output::Connect);
            }
            Input::TcpConnectionConfirmed => self.connection_up(ConnectionOrigin::Local, out),
            Input::TcpConnectionAccepted => self.connection_up(ConnectionOrigin::Remote, out),
            // Not Idle, as §8.2.2 has it without DelayOpen: keep listening in Active and
            // connect again after the connect delay (module docs).
            Input::TcpConnectionFails => self.connection_failed(out),
            other => self.unexpected_before_open(other, out),
        }
    }

    // RFC 4271 §8.2.2, Active state.
    fn process_active(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart | Input::AutomaticStart | Input::CollisionDump => {}
            Input::ManualStop => self.manual_stop(out),
            Input::ConnectRetryTimerExpired => {
                // Never armed for a passive peer, so a passive peer never connects.
                self.start(Timer::ConnectRetry, self.config.connect_retry_time, out);
                out.push(Output::Connect);
                self.transition(State::Connect, out);
            }
            Input::TcpConnectionConfirmed => self.connection_up(ConnectionOrigin::Local, out),
            Input::TcpConnectionAccepted => self.connection_up(ConnectionOrigin::Remote, out),
            Input::TcpConnectionFails => self.fail(DownReason::TcpFailed, None, out),
            other => self.unexpected_before_open(other, out),
        }
    }

    // RFC 4271 §8.2.2, OpenSent state.
    fn process_open_sent(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart | Input::AutomaticStart => {}
            Input::ManualStop => self.manual_stop(out),
            Input::HoldTimerExpired => self.hold_timer_expired(out),
            // A second connection from the same peer belongs to the driver's collision handling.
            Input::TcpConnectionConfirmed | Input::TcpConnectionAccepted => {}
            // §8.2.2: close, restart the ConnectRetryTimer, keep listening in Active. The
            // peer's OPEN has not come: the connect delay, not the whole ConnectRetryTime.
            Input::TcpConnectionFails => self.connection_failed(out),
            Input::OpenReceived(open) => self.process_open(open, out),
            Input::HeaderErr(n) | Input::OpenMsgErr(n) => self.fail_sending(n, out),
            Input::NotificationReceived(n) => self.notification_received(&n, out),
            Input::CollisionDump => self.collision_dump(out),
            Input::KeepaliveReceived
            | Input::UpdateReceived
            | Input::RouteRefreshReceived
            | Input::UpdateMsgErr(_) => self.fsm_error(out),
            // Not armed in OpenSent; their stale expiries were dropped in `process`.
            Input::ConnectRetryTimerExpired
            | Input::KeepaliveTimerExpired
            | Input::IdleHoldTimerExpired
            | Input::DampingResetTimerExpired => {}
        }
    }

    // RFC 4271 §8.2.2, OpenConfirm state.
    fn process_open_confirm(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart | Input::AutomaticStart => {}
            Input::ManualStop => self.manual_stop(out),
            Input::HoldTimerExpired => self.hold_timer_expired(out),
            Input::KeepaliveTimerExpired => self.send_keepalive(out),
            Input::TcpConnectionConfirmed | Input::TcpConnectionAccepted => {}
            Input::TcpConnectionFails => self.fail(DownReason::TcpFailed, None, out),
            Input::NotificationReceived(n) => self.notification_received(&n, out),
            Input::HeaderErr(n) | Input::OpenMsgErr(n) => self.fail_sending(n, out),
            Input::CollisionDump => self.collision_dump(out),
            Input::KeepaliveReceived => self.establish(out),
            // A second OPEN on this connection is unexpected; collisions between two
            // connections are resolved by the driver with `CollisionDump`.
            Input::OpenReceived(_)
            | Input::UpdateReceived
            | Input::RouteRefreshReceived
            | Input::UpdateMsgErr(_) => self.fsm_error(out),
            Input::ConnectRetryTimerExpired
            | Input::IdleHoldTimerExpired
            | Input::DampingResetTimerExpired => {}
        }
    }

    // RFC 4271 §8.2.2, Established state.
    fn process_established(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart | Input::AutomaticStart => {}
            Input::ManualStop => self.manual_stop(out),
            Input::HoldTimerExpired => self.hold_timer_expired(out),
            Input::KeepaliveTimerExpired => self.send_keepalive(out),
            Input::DampingResetTimerExpired => {
                // The session lasted: forget earlier failures (§8.1.1 DampPeerOscillations).
                self.next_idle_hold_time = self.config.idle_hold_time;
                self.connect_retry_counter = 0;
            }
            // §6.8: a collision with an Established connection closes the new one (driver).
            Input::TcpConnectionConfirmed | Input::TcpConnectionAccepted => {}
            Input::TcpConnectionFails => self.fail(DownReason::TcpFailed, None, out),
            Input::NotificationReceived(n) => self.notification_received(&n, out),
            Input::KeepaliveReceived | Input::UpdateReceived | Input::RouteRefreshReceived => {
                // §8.2.2 Events 26/27: restart the HoldTimer if the hold time is non-zero.
                let hold = self.negotiated_hold_time();
                if hold != 0 {
                    self.start(Timer::Hold, hold, out);
                }
            }
            // §6.1 and §8.2.2 Event 28: send the error the decoder found.
            Input::HeaderErr(n) | Input::UpdateMsgErr(n) => self.fail_sending(n, out),
            Input::OpenReceived(_) | Input::OpenMsgErr(_) => self.fsm_error(out),
            Input::CollisionDump => self.collision_dump(out),
            Input::ConnectRetryTimerExpired | Input::IdleHoldTimerExpired => {}
        }
    }

    // ===== transitions =====

    // TcpConnectionFails in Connect or OpenSent: Active, and for an active peer a connect again
    // after the connect delay.
    fn connection_failed(&mut self, out: &mut Vec<Output>) {
        let delay = self.next_connect_delay();
        self.tear_down(DownReason::TcpFailed, None, State::Active, out);
        self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
        self.connect_failures = self.connect_failures.saturating_add(1);
        if !self.config.passive {
            self.start(Timer::ConnectRetry, delay, out);
        }
    }

    // Idle -> Connect, or -> Active for a passive peer (§8.2.2 Events 1, 3, 4, 5, 13).
    fn start_session(&mut self, out: &mut Vec<Output>) {
        if self.config.passive {
            // PassiveTcpEstablishment (§8.1.1): the ConnectRetryTimer stays unarmed because its
            // expiry in Active would make us connect.
            self.transition(State::Active, out);
        } else {
            self.start(Timer::ConnectRetry, self.config.connect_retry_time, out);
            out.push(Output::Connect);
            self.transition(State::Connect, out);
        }
    }

    // Connect/Active -> OpenSent on Events 16/17 (§8.2.2).
    fn connection_up(&mut self, origin: ConnectionOrigin, out: &mut Vec<Output>) {
        self.stop(Timer::ConnectRetry, out);
        self.origin = Some(origin);
        out.push(Output::SendOpen(self.open_params()));
        // §8.2.2: "sets the HoldTimer to a large value"; 4 minutes is suggested.
        self.start(Timer::Hold, LARGE_HOLD_TIME, out);
        self.transition(State::OpenSent, out);
    }

    // OpenSent + BGPOpen (§8.2.2 Event 19).
    fn process_open(&mut self, open: OpenInfo, out: &mut Vec<Output>) {
        let negotiated = match self.check_open(&open) {
            Ok(negotiated) => negotiated,
            Err((reason, notification)) => return self.fail(reason, Some(notification), out),
        };
        out.push(Output::SendKeepalive);
        if negotiated.hold_time == 0 {
            // §4.2: a zero hold time means no KEEPALIVEs and no HoldTimer.
            self.stop(Timer::Hold, out);
        } else {
            self.start(Timer::Hold, negotiated.hold_time, out);
            self.start(Timer::Keepalive, negotiated.keepalive, out);
        }
        self.peer_open = Some(open);
        self.negotiated = Some(negotiated);
        // The peer speaks BGP: the next connection failure starts the connect delay afresh.
        self.connect_failures = 0;
        self.transition(State::OpenConfirm, out);
    }

    // OpenConfirm + KeepAliveMsg (§8.2.2 Event 26).
    fn establish(&mut self, out: &mut Vec<Output>) {
        let hold = self.negotiated_hold_time();
        if hold != 0 {
            self.start(Timer::Hold, hold, out);
        }
        if self.config.damp_peer_oscillations {
            self.start(Timer::DampingReset, self.config.max_idle_hold_time, out);
        }
        self.transition(State::Established, out);
        if let Some(negotiated) = &self.negotiated {
            out.push(Output::SessionEstablished(negotiated.clone()));
        }
    }

    // KeepaliveTimer_Expires in OpenConfirm/Established (§8.2.2 Event 11).
    fn send_keepalive(&mut self, out: &mut Vec<Output>) {
        out.push(Output::SendKeepalive);
        if let Some(n) = &self.negotiated {
            if n.hold_time != 0 {
                self.start(Timer::Keepalive, n.keepalive, out);
            }
        }
    }

    // HoldTimer_Expires (§8.2.2 Event 10, §6.5): NOTIFICATION 4/0.
    fn hold_timer_expired(&mut self, out: &mut Vec<Output>) {
        let n = NotificationInfo::new(notification::HOLD_TIMER_EXPIRED, 0);
        self.fail(DownReason::HoldTimerExpired, Some(n), out);
    }

    // A message the current state does not allow (§6.6, RFC 6608 §3).
    fn fsm_error(&mut self, out: &mut Vec<Output>) {
        let subcode = match self.state {
            State::OpenSent => notification::UNEXPECTED_MESSAGE_IN_OPENSENT,
            State::OpenConfirm => notification::UNEXPECTED_MESSAGE_IN_OPENCONFIRM,
            State::Established => notification::UNEXPECTED_MESSAGE_IN_ESTABLISHED,
            // RFC 6608 §3: 0 is "Unspecific"; not reached, states before OpenSent have no
            // BGP connection to send on.
            State::Idle | State::Connect | State::Active => 0,
        };
        self.fail_sending(NotificationInfo::new(notification::FSM_ERROR, subcode), out);
    }

    // Connect/Active "any other event" (§8.2.2): no BGP connection yet, so no NOTIFICATION.
    fn unexpected_before_open(&mut self, input: Input, out: &mut Vec<Output>) {
        let reason = match input {
            Input::NotificationReceived(n) => DownReason::NotificationReceived {
                code: n.code,
                subcode: n.subcode,
            },
            _ => DownReason::UnexpectedEvent { state: self.state },
        };
        self.fail(reason, None, out);
    }

    // NotifMsg / NotifMsgVerErr (§8.2.2 Events 24, 25). RFC 4271 has OpenSent answer a
    // NOTIFICATION with an FSM Error; like most speakers we just close, since §6.4 says the
    // sender closes the connection right after it.
    fn notification_received(&mut self, n: &NotificationInfo, out: &mut Vec<Output>) {
        let reason = DownReason::NotificationReceived {
            code: n.code,
            subcode: n.subcode,
        };
        self.fail(reason, None, out);
    }

    // Send `n`, close, go Idle.
    fn fail_sending(&mut self, n: NotificationInfo, out: &mut Vec<Output>) {
        let reason = DownReason::NotificationSent {
            code: n.code,
            subcode: n.subcode,
        };
        self.fail(reason, Some(n), out);
    }

    // A failure (§8.2.2: "increments the ConnectRetryCounter by 1, (optionally) performs peer
    // oscillation damping, changes its state to Idle"): schedule the damped automatic restart.
    fn fail(
        &mut self,
        reason: DownReason,
        notification: Option<NotificationInfo>,
        out: &mut Vec<Output>,
    ) {
        self.tear_down(reason, notification, State::Idle, out);
        self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
        if self.config.allow_automatic_start {
            let wait = self.next_idle_hold_time;
            self.start(Timer::IdleHold, wait, out);
            if self.config.damp_peer_oscillations {
                self.next_idle_hold_time =
                    wait.saturating_mul(2).min(self.config.max_idle_hold_time);
            }
        }
    }

    // ManualStop (§8.2.2 Event 2): Cease if a BGP connection exists (RFC 4486 §4: 6/2), Idle,
    // ConnectRetryCounter to zero, no automatic restart.
    fn manual_stop(&mut self, out: &mut Vec<Output>) {
        let notification = (self.state >= State::OpenSent).then(|| {
            NotificationInfo::new(notification::CEASE, notification::ADMINISTRATIVE_SHUTDOWN)
        });
        self.tear_down(DownReason::ManualStop, notification, State::Idle, out);
        self.connect_retry_counter = 0;
        self.connect_failures = 0;
        self.next_idle_hold_time = self.config.idle_hold_time;
    }

    // OpenCollisionDump (§8.2.2 Event 23): Cease 6/7 (RFC 4486 §4), Idle. The surviving
    // connection carries the session, so no restart is scheduled and no failure counted.
    fn collision_dump(&mut self, out: &mut Vec<Output>) {
        let n = NotificationInfo::new(
            notification::CEASE,
            notification::CONNECTION_COLLISION_RESOLUTION,
        );
        self.tear_down(DownReason::Collision, Some(n), State::Idle, out);
    }

    // Common teardown: NOTIFICATION, Disconnect, stop every timer, report, change state.
    fn tear_down(
        &mut self,
        reason: DownReason,
        notification: Option<NotificationInfo>,
        to: State,
        out: &mut Vec<Output>,
    ) {
        let was_established = self.state == State::Established;
        if let Some(n) = notification {
            out.push(Output::SendNotification(n));
        }
        if self.state == State::Connect || self.state >= State::OpenSent {
            // Connect has an attempt in flight, OpenSent onward a connection.
            out.push(Output::Disconnect);
        }
        for timer in Timer::ALL {
            self.stop(timer, out);
        }
        self.origin = None;
        self.peer_open = None;
        self.negotiated = None;
        self.last_down = Some(reason.clone());
        out.push(Output::SessionDown {
            reason,
            was_established,
        });
        self.transition(to, out);
    }

    fn transition(&mut self, to: State, out: &mut Vec<Output>) {
        if self.state != to {
            out.push(Output::StateChanged {
                from: self.state,
                to,
            });
            self.state = to;
        }
    }

    fn start(&mut self, timer: Timer, seconds: u16, out: &mut Vec<Output>) {
        self.armed[timer.index()] = true;
        out.push(Output::StartTimer { timer, seconds });
    }

    fn stop(&mut self, timer: Timer, out: &mut Vec<Output>) {
        if self.armed[timer.index()] {
            self.armed[timer.index()] = false;
            out.push(Output::StopTimer(timer));
        }
    }

    // ===== OPEN handling =====

    fn open_params(&self) -> OpenParams {
        OpenInfo {
            version: BGP_VERSION,
            asn: self.config.local_asn,
            hold_time: self.config.hold_time,
            router_id: self.config.local_router_id,
            capabilities: self.config.capabilities.clone(),
        }
    }

    fn negotiated_hold_time(&self) -> u16 {
        self.negotiated.as_ref().map_or(0, |n| n.hold_time)
    }

    // The OPEN checks of RFC 4271 §6.2, in its order, then negotiation.
    fn check_open(
        &self,
        open: &OpenInfo,
    ) -> Result<NegotiatedSession, (DownReason, NotificationInfo)> {
        let reject = |subcode: u8, data: Vec<u8>| {
            let n = NotificationInfo {
                code: notification::OPEN_MESSAGE_ERROR,
                subcode,
                data,
            };
            let reason = DownReason::NotificationSent {
                code: n.code,
                subcode,
            };
            (reason, n)
        };
        if open.version != BGP_VERSION {
            // The data is the largest supported version below the peer's bid, or our
            // smallest: 4 either way, as 2 octets.
            let data = u16::from(BGP_VERSION).to_be_bytes().to_vec();
            return Err(reject(notification::UNSUPPORTED_VERSION_NUMBER, data));
        }
        if open.asn != self.config.peer_asn {
            let (_, n) = reject(notification::BAD_PEER_AS, Vec::new());
            let reason = DownReason::BadPeerAs {
                expected: self.config.peer_asn,
                got: open.asn,
            };
            return Err((reason, n));
        }
        if matches!(open.hold_time, 1 | 2) {
            return Err(reject(notification::UNACCEPTABLE_HOLD_TIME, Vec::new()));
        }
        // RFC 6286 §2.2: zero, or our own identifier on an internal session.
        let ibgp = self.config.is_ibgp();
        if open.router_id.is_unspecified()
            || (ibgp && open.router_id == self.config.local_router_id)
        {
            return Err(reject(notification::BAD_BGP_IDENTIFIER, Vec::new()));
        }

        // §4.2: the smaller of the two proposals; keepalive a third of it (§10).
        let hold_time = self.config.hold_time.min(open.hold_time);
        let ours = &self.config.capabilities;
        let theirs = &open.capabilities;
        let peer_families = theirs.effective_families();
        let families = ours
            .effective_families()
            .into_iter()
            .filter(|f| peer_families.contains(f))
            .collect();
        Ok(NegotiatedSession {
            peer_asn: open.asn,
            peer_router_id: open.router_id,
            ibgp,
            hold_time,
            keepalive: hold_time / 3,
            four_octet_as: ours.four_octet_as && theirs.four_octet_as,
            route_refresh: theirs.route_refresh,
            families,
            peer_graceful_restart: theirs.graceful_restart.clone(),
        })
    }
}
