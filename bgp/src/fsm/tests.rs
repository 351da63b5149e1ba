//! FSM tests: the state × event table (`table.rs`), then the rules that need more than one step.

use std::net::Ipv4Addr;

use super::notification as n;
use super::*;

mod table;

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65002;
const RETRY: u16 = 5;

// ===== helpers =====

fn config() -> PeerConfig {
    PeerConfig {
        connect_retry_time: RETRY,
        ..PeerConfig::new(LOCAL_AS, LOCAL_ID, PEER_AS)
    }
}

fn peer_open() -> OpenInfo {
    OpenInfo {
        version: 4,
        asn: PEER_AS,
        hold_time: 60,
        router_id: PEER_ID,
        capabilities: CapabilitySet::standard(),
    }
}

fn notif(code: u8, subcode: u8) -> NotificationInfo {
    NotificationInfo::new(code, subcode)
}

fn new_fsm(config: PeerConfig) -> Fsm {
    Fsm::new(config).expect("test config is valid")
}

// The inputs that take a fresh FSM to `state` along the normal path.
fn path_to(state: State) -> Vec<Input> {
    match state {
        State::Idle => vec![],
        State::Connect => vec![Input::ManualStart],
        // OpenSent falls back to Active when the connection fails (§8.2.2).
        State::Active => vec![
            Input::ManualStart,
            Input::TcpConnectionConfirmed,
            Input::TcpConnectionFails,
        ],
        State::OpenSent => vec![Input::ManualStart, Input::TcpConnectionConfirmed],
        State::OpenConfirm => vec![
            Input::ManualStart,
            Input::TcpConnectionConfirmed,
            Input::OpenReceived(peer_open()),
        ],
        State::Established => vec![
            Input::ManualStart,
            Input::TcpConnectionConfirmed,
            Input::OpenReceived(peer_open()),
            Input::KeepaliveReceived,
        ],
    }
}

fn fsm_in_with(config: PeerConfig, state: State) -> Fsm {
    let mut fsm = new_fsm(config);
    for input in path_to(state) {
        fsm.process(input);
    }
    assert_eq!(fsm.state(), state, "path_to({state}) ends elsewhere");
    fsm
}

fn fsm_in(state: State) -> Fsm {
    fsm_in_with(config(), state)
}

fn timer(timer: Timer, seconds: u16) -> Output {
    Output::StartTimer { timer, seconds }
}

fn down(reason: DownReason, was_established: bool) -> Output {
    Output::SessionDown {
        reason,
        was_established,
    }
}

fn sent(code: u8, subcode: u8) -> DownReason {
    DownReason::NotificationSent { code, subcode }
}

fn send(code: u8, subcode: u8) -> Output {
    Output::SendNotification(notif(code, subcode))
}

// `expect` appears in `out` in order, other outputs in between allowed.
fn assert_subsequence(out: &[Output], expect: &[Output], context: &str) {
    let mut rest = out.iter();
    for e in expect {
        assert!(
            rest.any(|o| o == e),
            "{context}: expected {e:?} (in this order) within {out:#?}"
        );
    }
}

fn sends_notification(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::SendNotification(_)))
}

fn bad_open(f: impl FnOnce(&mut OpenInfo)) -> Input {
    let mut open = peer_open();
    f(&mut open);
    Input::OpenReceived(open)
}

// ===== OPEN and negotiation =====

#[test]
fn open_confirm_and_established_report_the_negotiated_session() {
    let mut fsm = fsm_in(State::OpenSent);
    let mut open = peer_open();
    open.capabilities.families = vec![Family::IPV6_UNICAST, Family::IPV4_UNICAST];
    open.capabilities.route_refresh = false;
    open.capabilities.graceful_restart = Some(GracefulRestart {
        restart_state: false,
        restart_time: 120,
        families: vec![GracefulRestartFamily {
            family: Family::IPV4_UNICAST,
            forwarding_preserved: true,
        }],
    });
    fsm.process(Input::OpenReceived(open.clone()));
    assert_eq!(fsm.peer_open(), Some(&open));
    assert_eq!(fsm.connection_origin(), Some(ConnectionOrigin::Local));
    let out = fsm.process(Input::KeepaliveReceived);
    let expected = NegotiatedSession {
        peer_asn: PEER_AS,
        peer_router_id: PEER_ID,
        ibgp: false,
        hold_time: 60,
        keepalive: 20,
        four_octet_as: true,
        route_refresh: false,
        // Only what both sides advertised: we advertise IPv4 unicast alone.
        families: vec![Family::IPV4_UNICAST],
        peer_graceful_restart: open.capabilities.graceful_restart.clone(),
    };
    assert_eq!(
        out.last(),
        Some(&Output::SessionEstablished(expected.clone()))
    );
    assert_eq!(fsm.negotiated(), Some(&expected));
}

#[test]
fn hold_time_is_the_smaller_proposal() {
    for (ours, theirs, hold, keepalive) in [(90, 60, 60, 20), (30, 90, 30, 10), (90, 3, 3, 1)] {
        let mut fsm = fsm_in_with(
            PeerConfig {
                hold_time: ours,
                ..config()
            },
            State::OpenSent,
        );
        let out = fsm.process(bad_open(|o| o.hold_time = theirs));
        assert_subsequence(
            &out,
            &[timer(Timer::Hold, hold), timer(Timer::Keepalive, keepalive)],
            &format!("ours {ours}, theirs {theirs}"),
        );
    }
}

#[test]
fn zero_hold_time_disables_keepalive_and_hold_timers() {
    for (ours, theirs) in [(0, 90), (90, 0)] {
        let mut fsm = fsm_in_with(
            PeerConfig {
                hold_time: ours,
                ..config()
            },
            State::OpenSent,
        );
        let out = fsm.process(bad_open(|o| o.hold_time = theirs));
        // The 240 s OpenSent hold timer is stopped and nothing replaces it.
        assert_eq!(
            out,
            vec![
                Output::SendKeepalive,
                Output::StopTimer(Timer::Hold),
                Output::StateChanged {
                    from: State::OpenSent,
                    to: State::OpenConfirm,
                },
            ]
        );
        let out = fsm.process(Input::KeepaliveReceived);
        assert_eq!(fsm.state(), State::Established);
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::StartTimer { timer, .. }
            if *timer == Timer::Hold || *timer == Timer::Keepalive)));
        // Messages do not restart a hold timer that does not run; stale expiries do nothing.
        assert!(fsm.process(Input::UpdateReceived).is_empty());
        assert!(fsm.process(Input::KeepaliveTimerExpired).is_empty());
        assert!(fsm.process(Input::HoldTimerExpired).is_empty());
        assert_eq!(fsm.state(), State::Established);
    }
}

#[test]
fn peer_without_multiprotocol_capability_speaks_ipv4_unicast() {
    let mut fsm = fsm_in(State::OpenSent);
    fsm.process(bad_open(|o| o.capabilities = CapabilitySet::default()));
    let negotiated = fsm.negotiated().expect("OPEN accepted");
    assert_eq!(negotiated.families, vec![Family::IPV4_UNICAST]);
    assert!(!negotiated.four_octet_as);
}

#[test]
fn own_router_id_is_bad_on_ibgp_but_legal_on_ebgp() {
    // RFC 6286 §2.2.
    let ibgp = PeerConfig {
        peer_asn: LOCAL_AS,
        ..config()
    };
    let mut fsm = fsm_in_with(ibgp, State::OpenSent);
    let out = fsm.process(bad_open(|o| {
        o.asn = LOCAL_AS;
        o.router_id = LOCAL_ID;
    }));
    assert_subsequence(
        &out,
        &[send(n::OPEN_MESSAGE_ERROR, n::BAD_BGP_IDENTIFIER)],
        "iBGP",
    );
    assert_eq!(fsm.state(), State::Idle);

    let mut fsm = fsm_in(State::OpenSent);
    fsm.process(bad_open(|o| o.router_id = LOCAL_ID));
    assert_eq!(fsm.state(), State::OpenConfirm);
}

#[test]
fn open_checks_follow_rfc_order() {
    // §6.2 checks the version first, then the AS, then the hold time.
    let mut fsm = fsm_in(State::OpenSent);
    let out = fsm.process(bad_open(|o| {
        o.version = 5;
        o.asn = 1;
        o.hold_time = 1;
    }));
    assert!(out.contains(&Output::SendNotification(NotificationInfo {
        code: 2,
        subcode: 1,
        data: vec![0, 4],
    })));
    let mut fsm = fsm_in(State::OpenSent);
    let out = fsm.process(bad_open(|o| {
        o.asn = 1;
        o.hold_time = 1;
    }));
    assert!(out.contains(&send(2, 2)));
    assert_eq!(
        fsm.last_down_reason(),
        Some(&DownReason::BadPeerAs {
            expected: PEER_AS,
            got: 1
        })
    );
}

// ===== passive peers =====

#[test]
fn passive_peer_never_connects() {
    let passive = PeerConfig {
        passive: true,
        ..config()
    };
    let mut fsm = new_fsm(passive);
    let out = fsm.process(Input::ManualStart);
    assert_eq!(
        out,
        vec![Output::StateChanged {
            from: State::Idle,
            to: State::Active,
        }]
    );
    assert!(!fsm.is_timer_armed(Timer::ConnectRetry));
    // A (stale) retry expiry does not make it connect.
    assert!(fsm.process(Input::ConnectRetryTimerExpired).is_empty());
    assert!(fsm.accepts_inbound());

    let out = fsm.process(Input::TcpConnectionAccepted);
    assert_eq!(fsm.state(), State::OpenSent);
    assert_eq!(fsm.connection_origin(), Some(ConnectionOrigin::Remote));
    assert!(out.iter().any(|o| matches!(o, Output::SendOpen(_))));

    // Losing the connection in OpenSent goes back to Active without arming a retry.
    let out = fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Active);
    assert!(!out.contains(&Output::Connect));
    assert!(!fsm.is_timer_armed(Timer::ConnectRetry));

    // After a failure the automatic restart returns to Active, still without Connect.
    fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Idle);
    let out = fsm.process(Input::IdleHoldTimerExpired);
    assert_eq!(fsm.state(), State::Active);
    assert!(!out.contains(&Output::Connect));
}

// ===== ManualStop =====

#[test]
fn manual_stop_from_every_state_goes_idle_and_stays() {
    use State::*;
    for state in [Idle, Connect, Active, OpenSent, OpenConfirm, Established] {
        let mut fsm = fsm_in(state);
        let out = fsm.process(Input::ManualStop);
        assert_eq!(fsm.state(), Idle, "from {state}");
        // RFC 4486 §4: Cease/Administrative Shutdown only where a BGP connection exists.
        assert_eq!(
            out.contains(&send(n::CEASE, n::ADMINISTRATIVE_SHUTDOWN)),
            state >= OpenSent,
            "from {state}: {out:#?}"
        );
        assert_eq!(sends_notification(&out), state >= OpenSent);
        assert!(
            !out.iter().any(|o| matches!(o, Output::StartTimer { .. })),
            "from {state}: no restart after ManualStop: {out:#?}"
        );
        assert!(Timer::ALL.iter().all(|t| !fsm.is_timer_armed(*t)));
        assert_eq!(fsm.connect_retry_counter(), 0);
    }
}

#[test]
fn manual_stop_in_idle_cancels_the_pending_restart() {
    let mut fsm = fsm_in(State::OpenSent);
    fsm.process(Input::HoldTimerExpired);
    assert!(fsm.is_timer_armed(Timer::IdleHold));
    let out = fsm.process(Input::ManualStop);
    assert_eq!(out, vec![Output::StopTimer(Timer::IdleHold)]);
    // The expiry that raced the stop is ignored.
    assert!(fsm.process(Input::IdleHoldTimerExpired).is_empty());
    assert_eq!(fsm.state(), State::Idle);
}

// ===== automatic restart and damping =====

// From Connect: the peer accepts the connection but never sends its OPEN (the HoldTimer
// expires in OpenSent). Returns the IdleHold value armed for the restart.
fn fail_once(fsm: &mut Fsm) -> u16 {
    fsm.process(Input::TcpConnectionConfirmed);
    let out = fsm.process(Input::HoldTimerExpired);
    assert_eq!(fsm.state(), State::Idle);
    let waits: Vec<u16> = out
        .iter()
        .filter_map(|o| match o {
            Output::StartTimer {
                timer: Timer::IdleHold,
                seconds,
            } => Some(*seconds),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 1, "one IdleHold start in {out:#?}");
    let out = fsm.process(Input::IdleHoldTimerExpired);
    assert_eq!(fsm.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
    waits[0]
}

#[test]
fn idle_hold_doubles_on_repeated_failures_up_to_the_cap() {
    let mut fsm = fsm_in(State::Connect);
    let waits: Vec<u16> = (0..10).map(|_| fail_once(&mut fsm)).collect();
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
    assert_eq!(fsm.connect_retry_counter(), 10);
}

#[test]
fn stable_established_session_resets_the_backoff() {
    let mut fsm = fsm_in(State::Connect);
    for _ in 0..4 {
        fail_once(&mut fsm);
    }
    assert_eq!(fsm.next_idle_hold_time(), 16);
    for input in [
        Input::TcpConnectionConfirmed,
        Input::OpenReceived(peer_open()),
    ] {
        fsm.process(input);
    }
    let out = fsm.process(Input::KeepaliveReceived);
    assert!(out.contains(&timer(Timer::DampingReset, 120)));

    // Going down before the session is stable keeps the backoff.
    let mut flapping = fsm.clone();
    let out = flapping.process(Input::HoldTimerExpired);
    assert!(out.contains(&timer(Timer::IdleHold, 16)));

    assert!(fsm.process(Input::DampingResetTimerExpired).is_empty());
    assert_eq!(fsm.next_idle_hold_time(), 1);
    assert_eq!(fsm.connect_retry_counter(), 0);
    let out = fsm.process(Input::HoldTimerExpired);
    assert!(out.contains(&timer(Timer::IdleHold, 1)));
}

#[test]
fn automatic_start_waits_for_the_idle_hold_timer() {
    let mut fsm = fsm_in(State::OpenSent);
    fsm.process(Input::HoldTimerExpired);
    assert!(fsm.process(Input::AutomaticStart).is_empty());
    assert_eq!(fsm.state(), State::Idle);
    // ManualStart overrides the damping and resets it.
    let out = fsm.process(Input::ManualStart);
    assert_subsequence(
        &out,
        &[Output::StopTimer(Timer::IdleHold), Output::Connect],
        "ManualStart",
    );
    assert_eq!(fsm.next_idle_hold_time(), 1);
    assert_eq!(fsm.connect_retry_counter(), 0);
}

#[test]
fn without_automatic_start_a_failed_peer_stays_idle() {
    let manual = PeerConfig {
        allow_automatic_start: false,
        ..config()
    };
    let mut fsm = fsm_in_with(manual, State::Established);
    let out = fsm.process(Input::HoldTimerExpired);
    assert_eq!(fsm.state(), State::Idle);
    assert!(!out.iter().any(|o| matches!(o, Output::StartTimer { .. })));
    assert!(fsm.process(Input::AutomaticStart).is_empty());
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn without_damping_the_idle_hold_time_stays_put() {
    let undamped = PeerConfig {
        damp_peer_oscillations: false,
        idle_hold_time: 5,
        ..config()
    };
    let mut fsm = fsm_in_with(undamped, State::Connect);
    let waits: Vec<u16> = (0..3).map(|_| fail_once(&mut fsm)).collect();
    assert_eq!(waits, vec![5, 5, 5]);
}

// ===== connect delay =====

// The ConnectRetryTimer value armed in `out`, if any.
fn retry_armed(out: &[Output]) -> Option<u16> {
    out.iter().find_map(|o| match o {
        Output::StartTimer {
            timer: Timer::ConnectRetry,
            seconds,
        } => Some(*seconds),
        _ => None,
    })
}

// Connect, refused: returns the connect delay armed, after checking the FSM waits in Active
// (listening) and connects when the delay expires.
fn refused_once(fsm: &mut Fsm) -> u16 {
    assert_eq!(fsm.state(), State::Connect);
    let out = fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Active, "{out:#?}");
    assert!(fsm.accepts_inbound(), "Active listens for the peer");
    assert!(!fsm.is_timer_armed(Timer::IdleHold), "no damped restart");
    let delay = retry_armed(&out).expect("the connect delay is armed");
    let out = fsm.process(Input::ConnectRetryTimerExpired);
    assert_eq!(fsm.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
    // While the connect is in flight the timer bounds it with the whole ConnectRetryTime.
    assert_eq!(retry_armed(&out), Some(fsm.config().connect_retry_time));
    delay
}

#[test]
fn a_refused_connect_is_retried_after_1_s_then_backs_off_to_the_connect_retry_time() {
    let mut fsm = fsm_in(State::Connect);
    let delays: Vec<u16> = (0..6).map(|_| refused_once(&mut fsm)).collect();
    // RETRY is 5 s.
    assert_eq!(delays, vec![1, 2, 4, 5, 5, 5]);
    assert_eq!(fsm.connect_retry_counter(), 6);
    // Failures to connect are not session failures: the damping is untouched.
    assert_eq!(fsm.next_idle_hold_time(), 1);

    let slow = PeerConfig {
        connect_retry_time: 120,
        ..config()
    };
    let mut fsm = fsm_in_with(slow, State::Connect);
    let delays: Vec<u16> = (0..9).map(|_| refused_once(&mut fsm)).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 120, 120]);
}

#[test]
fn a_connection_closed_before_the_open_is_retried_after_the_connect_delay() {
    // A speaker that does not know us yet accepts the connection and closes it.
    let mut fsm = fsm_in(State::Connect);
    let mut delays = Vec::new();
    for _ in 0..4 {
        fsm.process(Input::TcpConnectionConfirmed);
        assert_eq!(fsm.state(), State::OpenSent);
        let out = fsm.process(Input::TcpConnectionFails);
        assert_eq!(fsm.state(), State::Active);
        delays.push(retry_armed(&out).expect("connect delay armed"));
        fsm.process(Input::ConnectRetryTimerExpired);
        assert_eq!(fsm.state(), State::Connect);
    }
    assert_eq!(delays, vec![1, 2, 4, 5]);
}

#[test]
fn an_accepted_open_and_a_manual_start_reset_the_connect_delay() {
    let mut fsm = fsm_in(State::Connect);
    for _ in 0..3 {
        refused_once(&mut fsm);
    }
    assert_eq!(fsm.next_connect_delay(), 5);
    // The peer answers with an OPEN, then the connection drops: a session failure, damped.
    fsm.process(Input::TcpConnectionConfirmed);
    fsm.process(Input::OpenReceived(peer_open()));
    assert_eq!(fsm.next_connect_delay(), 1);
    fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Idle);
    fsm.process(Input::IdleHoldTimerExpired);
    assert_eq!(refused_once(&mut fsm), 1);
    assert_eq!(refused_once(&mut fsm), 2);

    fsm.process(Input::ManualStop);
    fsm.process(Input::ManualStart);
    assert_eq!(refused_once(&mut fsm), 1);
}

#[test]
fn an_inbound_connection_while_waiting_out_the_connect_delay_is_taken() {
    let mut fsm = fsm_in(State::Connect);
    fsm.process(Input::TcpConnectionFails);
    assert!(fsm.is_timer_armed(Timer::ConnectRetry));
    // The peer connects first: the session goes on with its connection, our retry is off.
    let out = fsm.process(Input::TcpConnectionAccepted);
    assert_eq!(fsm.state(), State::OpenSent);
    assert_eq!(fsm.connection_origin(), Some(ConnectionOrigin::Remote));
    assert!(out.contains(&Output::StopTimer(Timer::ConnectRetry)));
    assert!(!out.contains(&Output::Connect));
    // A retry expiry racing the accept is stale.
    assert!(fsm.process(Input::ConnectRetryTimerExpired).is_empty());
}

#[test]
fn a_passive_peer_arms_no_connect_delay() {
    let passive = PeerConfig {
        passive: true,
        ..config()
    };
    let mut fsm = fsm_in_with(passive, State::Idle);
    fsm.process(Input::ManualStart);
    fsm.process(Input::TcpConnectionAccepted);
    let out = fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(retry_armed(&out), None);
    assert!(!fsm.is_timer_armed(Timer::ConnectRetry));
}

// ===== timers =====

#[test]
fn stale_timer_expiries_are_ignored() {
    // The OpenSent hold timer is replaced by the negotiated one: restarted, still armed.
    let mut fsm = fsm_in(State::OpenConfirm);
    assert!(fsm.is_timer_armed(Timer::Hold));
    // The ConnectRetryTimer was stopped on leaving Connect.
    assert!(fsm.process(Input::ConnectRetryTimerExpired).is_empty());
    assert!(fsm.process(Input::IdleHoldTimerExpired).is_empty());
    assert_eq!(fsm.state(), State::OpenConfirm);
    // After the hold timer fired once, a duplicate expiry finds the FSM in Idle, unarmed.
    fsm.process(Input::HoldTimerExpired);
    assert!(fsm.process(Input::HoldTimerExpired).is_empty());
}

#[test]
fn keepalive_timer_keeps_rearming() {
    let mut fsm = fsm_in(State::Established);
    for _ in 0..3 {
        let out = fsm.process(Input::KeepaliveTimerExpired);
        assert_eq!(
            out,
            vec![Output::SendKeepalive, timer(Timer::Keepalive, 20)]
        );
    }
}

#[test]
fn timer_expired_maps_every_timer_back() {
    for t in Timer::ALL {
        assert_eq!(Input::timer_expired(t).expired_timer(), Some(t));
    }
}

// ===== collisions (RFC 4271 §6.8) =====

#[test]
fn higher_identifier_keeps_its_connection() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 200);
    assert_eq!(resolve_collision(high, low), CollisionWinner::Local);
    assert_eq!(resolve_collision(low, high), CollisionWinner::Remote);
    // Compared as host-order integers, not octet strings of different lengths.
    assert_eq!(
        resolve_collision(Ipv4Addr::new(9, 255, 255, 255), Ipv4Addr::new(10, 0, 0, 0)),
        CollisionWinner::Remote
    );
    assert!(CollisionWinner::Local.keeps(ConnectionOrigin::Local));
    assert!(!CollisionWinner::Local.keeps(ConnectionOrigin::Remote));
    assert!(CollisionWinner::Remote.keeps(ConnectionOrigin::Remote));
    assert!(!CollisionWinner::Remote.keeps(ConnectionOrigin::Local));
}

#[test]
fn equal_identifiers_fall_back_to_the_larger_asn() {
    // RFC 6286 §2.3.
    let id = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(
        resolve_collision_with_asn(id, 65010, id, 65001),
        CollisionWinner::Local
    );
    assert_eq!(
        resolve_collision_with_asn(id, 65001, id, 65010),
        CollisionWinner::Remote
    );
    // Different identifiers ignore the AS numbers.
    assert_eq!(
        resolve_collision_with_asn(Ipv4Addr::new(1, 1, 1, 1), 65010, id, 65001),
        CollisionWinner::Remote
    );
}

// The driver procedure from the module docs: our outbound connection reached OpenConfirm when
// the peer's inbound connection arrives; its OPEN triggers resolution.
fn collide(local_id: Ipv4Addr) -> (Fsm, Fsm) {
    let cfg = PeerConfig {
        local_router_id: local_id,
        ..config()
    };
    let mut outbound = fsm_in_with(cfg.clone(), State::OpenConfirm);
    let mut inbound = new_fsm(PeerConfig {
        passive: true,
        allow_automatic_start: false,
        ..cfg
    });
    inbound.process(Input::ManualStart);
    inbound.process(Input::TcpConnectionAccepted);
    assert_eq!(inbound.state(), State::OpenSent);

    let remote_id = outbound.peer_open().expect("OPEN seen").router_id;
    let winner = resolve_collision(local_id, remote_id);
    for fsm in [&mut outbound, &mut inbound] {
        let origin = fsm.connection_origin().expect("connected");
        if !winner.keeps(origin) {
            let out = fsm.process(Input::CollisionDump);
            assert_subsequence(
                &out,
                &[
                    send(n::CEASE, n::CONNECTION_COLLISION_RESOLUTION),
                    Output::Disconnect,
                    down(DownReason::Collision, false),
                ],
                "loser",
            );
            // A collision is not a failure: no restart, nothing counted.
            assert!(!fsm.is_timer_armed(Timer::IdleHold));
            assert_eq!(fsm.state(), State::Idle);
        }
    }
    (outbound, inbound)
}

#[test]
fn collision_with_higher_local_id_keeps_our_connection() {
    let (outbound, inbound) = collide(Ipv4Addr::new(10, 0, 0, 9));
    assert_eq!(outbound.state(), State::OpenConfirm);
    assert_eq!(inbound.state(), State::Idle);
}

#[test]
fn collision_with_higher_remote_id_keeps_their_connection() {
    let (outbound, mut inbound) = collide(Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(outbound.state(), State::Idle);
    // The survivor carries on to Established.
    inbound.process(Input::OpenReceived(peer_open()));
    let out = inbound.process(Input::KeepaliveReceived);
    assert_eq!(inbound.state(), State::Established);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SessionEstablished(_))));
}

// ===== configuration =====

#[test]
fn bad_configs_are_refused() {
    let cases = [
        (
            PeerConfig {
                hold_time: 2,
                ..config()
            },
            PeerConfigError::HoldTimeTooSmall(2),
        ),
        (
            PeerConfig {
                peer_asn: 0,
                ..config()
            },
            PeerConfigError::ZeroAsn,
        ),
        (
            PeerConfig {
                local_router_id: Ipv4Addr::UNSPECIFIED,
                ..config()
            },
            PeerConfigError::ZeroRouterId,
        ),
        (
            PeerConfig {
                connect_retry_time: 0,
                ..config()
            },
            PeerConfigError::ZeroConnectRetryTime,
        ),
        (
            PeerConfig {
                idle_hold_time: 200,
                ..config()
            },
            PeerConfigError::BadIdleHoldTime {
                initial: 200,
                max: 120,
            },
        ),
    ];
    for (cfg, err) in cases {
        assert_eq!(Fsm::new(cfg).err(), Some(err));
    }
    assert!(PeerConfig {
        hold_time: 0,
        ..config()
    }
    .validate()
    .is_ok());
}

#[test]
fn down_reasons_read_well() {
    assert_eq!(
        DownReason::BadPeerAs {
            expected: 65002,
            got: 65099
        }
        .to_string(),
        "bad peer AS: expected 65002, got 65099"
    );
    assert_eq!(
        DownReason::NotificationReceived {
            code: 6,
            subcode: 2
        }
        .to_string(),
        "NOTIFICATION 6/2 received"
    );
    assert_eq!(
        DownReason::UnexpectedEvent {
            state: State::Connect
        }
        .to_string(),
        "unexpected event in Connect"
    );
}

#[test]
fn the_restart_state_bit_is_cleared_once_a_session_was_up() {
    let mut c = config();
    c.capabilities.graceful_restart = Some(GracefulRestart {
        restart_state: true,
        restart_time: 120,
        families: vec![],
    });
    let opened = |fsm: &mut Fsm| {
        fsm.process(Input::ManualStart);
        let out = fsm.process(Input::TcpConnectionConfirmed);
        out.into_iter()
            .find_map(|o| match o {
                Output::SendOpen(p) => p.capabilities.graceful_restart,
                _ => None,
            })
            .expect("an OPEN with graceful restart")
    };
    let mut fsm = new_fsm(c.clone());
    assert!(opened(&mut fsm).restart_state);
    let mut fsm = new_fsm(c);
    fsm.clear_restart_state();
    let gr = opened(&mut fsm);
    assert!(!gr.restart_state);
    assert_eq!(gr.restart_time, 120);
}
