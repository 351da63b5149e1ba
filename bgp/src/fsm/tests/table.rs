//! Every state × the events that matter in it: the resulting state and the outputs, in order.

use super::*;

enum Expect {
    // Ignored: no outputs at all.
    Nothing,
    // These outputs, in this order, among possibly others.
    Contains(Vec<Output>),
}

struct Case {
    from: State,
    input: Input,
    to: State,
    expect: Expect,
}

fn case(from: State, input: Input, to: State, expect: Vec<Output>) -> Case {
    Case {
        from,
        input,
        to,
        expect: Expect::Contains(expect),
    }
}

fn ignored(from: State, input: Input) -> Case {
    Case {
        from,
        input,
        to: from,
        expect: Expect::Nothing,
    }
}

fn table() -> Vec<Case> {
    use State::*;
    let open_sent_entry = vec![
        Output::StopTimer(Timer::ConnectRetry),
        Output::SendOpen(OpenInfo {
            version: 4,
            asn: LOCAL_AS,
            hold_time: 90,
            router_id: LOCAL_ID,
            capabilities: CapabilitySet::standard(),
        }),
        // §8.2.2: the large hold time while waiting for the OPEN.
        timer(Timer::Hold, 240),
        Output::StateChanged {
            from: Connect,
            to: OpenSent,
        },
    ];
    let hold = timer(Timer::Hold, 60);
    vec![
        // Idle
        case(
            Idle,
            Input::ManualStart,
            Connect,
            vec![
                timer(Timer::ConnectRetry, RETRY),
                Output::Connect,
                Output::StateChanged {
                    from: Idle,
                    to: Connect,
                },
            ],
        ),
        case(Idle, Input::AutomaticStart, Connect, vec![Output::Connect]),
        ignored(Idle, Input::ManualStop),
        ignored(Idle, Input::TcpConnectionAccepted),
        ignored(Idle, Input::TcpConnectionFails),
        ignored(Idle, Input::KeepaliveReceived),
        ignored(Idle, Input::OpenReceived(peer_open())),
        ignored(Idle, Input::HoldTimerExpired),
        ignored(Idle, Input::IdleHoldTimerExpired),
        ignored(Idle, Input::CollisionDump),
        // Connect
        ignored(Connect, Input::ManualStart),
        ignored(Connect, Input::AutomaticStart),
        ignored(Connect, Input::CollisionDump),
        case(
            Connect,
            Input::ConnectRetryTimerExpired,
            Connect,
            vec![
                Output::Disconnect,
                timer(Timer::ConnectRetry, RETRY),
                Output::Connect,
            ],
        ),
        case(
            Connect,
            Input::TcpConnectionConfirmed,
            OpenSent,
            open_sent_entry.clone(),
        ),
        case(
            Connect,
            Input::TcpConnectionAccepted,
            OpenSent,
            open_sent_entry,
        ),
        // Not Idle as in §8.2.2 without DelayOpen: Active, connecting again after the connect
        // delay (the `fsm` module docs).
        case(
            Connect,
            Input::TcpConnectionFails,
            Active,
            vec![
                Output::Disconnect,
                Output::StopTimer(Timer::ConnectRetry),
                down(DownReason::TcpFailed, false),
                Output::StateChanged {
                    from: Connect,
                    to: Active,
                },
                timer(Timer::ConnectRetry, 1),
            ],
        ),
        case(
            Connect,
            Input::ManualStop,
            Idle,
            vec![
                Output::Disconnect,
                Output::StopTimer(Timer::ConnectRetry),
                down(DownReason::ManualStop, false),
            ],
        ),
        case(
            Connect,
            Input::KeepaliveReceived,
            Idle,
            vec![down(DownReason::UnexpectedEvent { state: Connect }, false)],
        ),
        ignored(Connect, Input::HoldTimerExpired),
        // Active
        ignored(Active, Input::ManualStart),
        ignored(Active, Input::CollisionDump),
        case(
            Active,
            Input::ConnectRetryTimerExpired,
            Connect,
            vec![timer(Timer::ConnectRetry, RETRY), Output::Connect],
        ),
        case(
            Active,
            Input::TcpConnectionAccepted,
            OpenSent,
            vec![
                Output::StopTimer(Timer::ConnectRetry),
                timer(Timer::Hold, 240),
            ],
        ),
        case(
            Active,
            Input::TcpConnectionFails,
            Idle,
            vec![
                down(DownReason::TcpFailed, false),
                timer(Timer::IdleHold, 1),
            ],
        ),
        case(
            Active,
            Input::ManualStop,
            Idle,
            vec![
                Output::StopTimer(Timer::ConnectRetry),
                down(DownReason::ManualStop, false),
            ],
        ),
        case(
            Active,
            Input::NotificationReceived(notif(6, 4)),
            Idle,
            vec![down(
                DownReason::NotificationReceived {
                    code: 6,
                    subcode: 4,
                },
                false,
            )],
        ),
        // OpenSent
        ignored(OpenSent, Input::ManualStart),
        ignored(OpenSent, Input::TcpConnectionAccepted),
        ignored(OpenSent, Input::ConnectRetryTimerExpired),
        ignored(OpenSent, Input::KeepaliveTimerExpired),
        case(
            OpenSent,
            Input::OpenReceived(peer_open()),
            OpenConfirm,
            vec![
                Output::SendKeepalive,
                hold.clone(),
                timer(Timer::Keepalive, 20),
            ],
        ),
        case(
            OpenSent,
            bad_open(|o| o.asn = 65099),
            Idle,
            vec![
                send(n::OPEN_MESSAGE_ERROR, n::BAD_PEER_AS),
                Output::Disconnect,
                down(
                    DownReason::BadPeerAs {
                        expected: PEER_AS,
                        got: 65099,
                    },
                    false,
                ),
                timer(Timer::IdleHold, 1),
            ],
        ),
        case(
            OpenSent,
            bad_open(|o| o.hold_time = 1),
            Idle,
            vec![send(n::OPEN_MESSAGE_ERROR, n::UNACCEPTABLE_HOLD_TIME)],
        ),
        case(
            OpenSent,
            bad_open(|o| o.hold_time = 2),
            Idle,
            vec![send(n::OPEN_MESSAGE_ERROR, n::UNACCEPTABLE_HOLD_TIME)],
        ),
        case(
            OpenSent,
            bad_open(|o| o.version = 3),
            Idle,
            vec![Output::SendNotification(NotificationInfo {
                code: n::OPEN_MESSAGE_ERROR,
                subcode: n::UNSUPPORTED_VERSION_NUMBER,
                data: vec![0, 4],
            })],
        ),
        case(
            OpenSent,
            bad_open(|o| o.router_id = Ipv4Addr::UNSPECIFIED),
            Idle,
            vec![
                send(n::OPEN_MESSAGE_ERROR, n::BAD_BGP_IDENTIFIER),
                down(sent(n::OPEN_MESSAGE_ERROR, n::BAD_BGP_IDENTIFIER), false),
            ],
        ),
        case(
            OpenSent,
            Input::KeepaliveReceived,
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_OPENSENT)],
        ),
        case(
            OpenSent,
            Input::UpdateReceived,
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_OPENSENT)],
        ),
        case(
            OpenSent,
            Input::RouteRefreshReceived,
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_OPENSENT)],
        ),
        case(
            OpenSent,
            Input::UpdateMsgErr(notif(3, 1)),
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_OPENSENT)],
        ),
        case(
            OpenSent,
            Input::HoldTimerExpired,
            Idle,
            vec![
                send(n::HOLD_TIMER_EXPIRED, 0),
                Output::Disconnect,
                down(DownReason::HoldTimerExpired, false),
            ],
        ),
        // §8.2.2: OpenSent + TcpConnectionFails -> Active with the ConnectRetryTimer restarted,
        // for the connect delay: no OPEN came on this connection.
        case(
            OpenSent,
            Input::TcpConnectionFails,
            Active,
            vec![
                Output::Disconnect,
                Output::StopTimer(Timer::Hold),
                down(DownReason::TcpFailed, false),
                Output::StateChanged {
                    from: OpenSent,
                    to: Active,
                },
                timer(Timer::ConnectRetry, 1),
            ],
        ),
        case(
            OpenSent,
            Input::NotificationReceived(notif(2, 2)),
            Idle,
            vec![
                Output::Disconnect,
                down(
                    DownReason::NotificationReceived {
                        code: 2,
                        subcode: 2,
                    },
                    false,
                ),
            ],
        ),
        case(
            OpenSent,
            Input::OpenMsgErr(notif(2, 4)),
            Idle,
            vec![send(2, 4), Output::Disconnect, down(sent(2, 4), false)],
        ),
        case(
            OpenSent,
            Input::HeaderErr(notif(1, 2)),
            Idle,
            vec![send(1, 2), down(sent(1, 2), false)],
        ),
        case(
            OpenSent,
            Input::CollisionDump,
            Idle,
            vec![
                send(n::CEASE, n::CONNECTION_COLLISION_RESOLUTION),
                Output::Disconnect,
                down(DownReason::Collision, false),
            ],
        ),
        case(
            OpenSent,
            Input::ManualStop,
            Idle,
            vec![
                send(n::CEASE, n::ADMINISTRATIVE_SHUTDOWN),
                Output::Disconnect,
                down(DownReason::ManualStop, false),
            ],
        ),
        // OpenConfirm
        ignored(OpenConfirm, Input::AutomaticStart),
        ignored(OpenConfirm, Input::TcpConnectionAccepted),
        case(
            OpenConfirm,
            Input::KeepaliveReceived,
            Established,
            vec![
                hold.clone(),
                Output::StateChanged {
                    from: OpenConfirm,
                    to: Established,
                },
            ],
        ),
        case(
            OpenConfirm,
            Input::KeepaliveTimerExpired,
            OpenConfirm,
            vec![Output::SendKeepalive, timer(Timer::Keepalive, 20)],
        ),
        case(
            OpenConfirm,
            Input::UpdateReceived,
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_OPENCONFIRM)],
        ),
        case(
            OpenConfirm,
            Input::OpenReceived(peer_open()),
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_OPENCONFIRM)],
        ),
        case(
            OpenConfirm,
            Input::HoldTimerExpired,
            Idle,
            vec![
                send(n::HOLD_TIMER_EXPIRED, 0),
                down(DownReason::HoldTimerExpired, false),
            ],
        ),
        case(
            OpenConfirm,
            Input::NotificationReceived(notif(6, 2)),
            Idle,
            vec![down(
                DownReason::NotificationReceived {
                    code: 6,
                    subcode: 2,
                },
                false,
            )],
        ),
        case(
            OpenConfirm,
            Input::TcpConnectionFails,
            Idle,
            vec![down(DownReason::TcpFailed, false)],
        ),
        case(
            OpenConfirm,
            Input::CollisionDump,
            Idle,
            vec![
                send(n::CEASE, n::CONNECTION_COLLISION_RESOLUTION),
                down(DownReason::Collision, false),
            ],
        ),
        case(
            OpenConfirm,
            Input::ManualStop,
            Idle,
            vec![send(n::CEASE, n::ADMINISTRATIVE_SHUTDOWN)],
        ),
        // Established
        ignored(Established, Input::ManualStart),
        ignored(Established, Input::TcpConnectionAccepted),
        ignored(Established, Input::ConnectRetryTimerExpired),
        case(
            Established,
            Input::UpdateReceived,
            Established,
            vec![hold.clone()],
        ),
        case(
            Established,
            Input::KeepaliveReceived,
            Established,
            vec![hold.clone()],
        ),
        case(
            Established,
            Input::RouteRefreshReceived,
            Established,
            vec![hold],
        ),
        case(
            Established,
            Input::KeepaliveTimerExpired,
            Established,
            vec![Output::SendKeepalive, timer(Timer::Keepalive, 20)],
        ),
        case(
            Established,
            Input::HoldTimerExpired,
            Idle,
            vec![
                send(n::HOLD_TIMER_EXPIRED, 0),
                Output::Disconnect,
                Output::StopTimer(Timer::Keepalive),
                down(DownReason::HoldTimerExpired, true),
                Output::StateChanged {
                    from: Established,
                    to: Idle,
                },
                timer(Timer::IdleHold, 1),
            ],
        ),
        case(
            Established,
            Input::NotificationReceived(notif(6, 4)),
            Idle,
            vec![
                Output::Disconnect,
                down(
                    DownReason::NotificationReceived {
                        code: 6,
                        subcode: 4,
                    },
                    true,
                ),
            ],
        ),
        case(
            Established,
            Input::OpenReceived(peer_open()),
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_ESTABLISHED)],
        ),
        case(
            Established,
            Input::OpenMsgErr(notif(2, 4)),
            Idle,
            vec![send(n::FSM_ERROR, n::UNEXPECTED_MESSAGE_IN_ESTABLISHED)],
        ),
        case(
            Established,
            Input::UpdateMsgErr(notif(3, 1)),
            Idle,
            vec![send(3, 1), down(sent(3, 1), true)],
        ),
        case(
            Established,
            Input::HeaderErr(notif(1, 1)),
            Idle,
            vec![send(1, 1), down(sent(1, 1), true)],
        ),
        case(
            Established,
            Input::TcpConnectionFails,
            Idle,
            vec![Output::Disconnect, down(DownReason::TcpFailed, true)],
        ),
        case(
            Established,
            Input::ManualStop,
            Idle,
            vec![
                send(n::CEASE, n::ADMINISTRATIVE_SHUTDOWN),
                Output::Disconnect,
                down(DownReason::ManualStop, true),
            ],
        ),
        case(
            Established,
            Input::CollisionDump,
            Idle,
            vec![
                send(n::CEASE, n::CONNECTION_COLLISION_RESOLUTION),
                down(DownReason::Collision, true),
            ],
        ),
    ]
}

#[test]
fn state_event_table() {
    for Case {
        from,
        input,
        to,
        expect,
    } in table()
    {
        let context = format!("{from} + {input:?}");
        let mut fsm = fsm_in(from);
        let out = fsm.process(input);
        assert_eq!(fsm.state(), to, "{context}: outputs {out:#?}");
        match expect {
            Expect::Nothing => assert!(out.is_empty(), "{context}: expected nothing, got {out:#?}"),
            Expect::Contains(expect) => assert_subsequence(&out, &expect, &context),
        }
        // A state change is reported exactly once, and only when it happened.
        let changes: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::StateChanged { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        let want: Vec<_> = if from == to { vec![] } else { vec![(from, to)] };
        assert_eq!(changes, want, "{context}: StateChanged outputs");
        // Every armed timer belongs to the state the FSM is now in.
        for t in Timer::ALL {
            if fsm.is_timer_armed(t) {
                let allowed = match t {
                    Timer::ConnectRetry => matches!(to, State::Connect | State::Active),
                    Timer::Hold => to >= State::OpenSent,
                    Timer::Keepalive => to >= State::OpenConfirm,
                    Timer::IdleHold => to == State::Idle,
                    Timer::DampingReset => to == State::Established,
                };
                assert!(allowed, "{context}: {t:?} still armed in {to}");
            }
        }
    }
}
