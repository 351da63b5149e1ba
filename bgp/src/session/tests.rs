//! Sessions over loopback TCP: two of ours talking to each other (127.0.0.1 and 127.0.0.2,
//! both on lo), and ours against a scripted raw peer for the error cases.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::fsm::{CapabilitySet, DownReason, PeerConfig, State};
use crate::packet::{
    decode, encode, AsPath, DecodeContext, EncodeContext, Message, Notification, Origin,
    PathAttributes, Treatment, Update,
};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const ID_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ID_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const AS_A: u32 = 65001;
const AS_B: u32 = 65002;

type Events = mpsc::Receiver<SessionEvent>;

fn fsm_config(local_as: u32, id: Ipv4Addr, peer_as: u32, passive: bool) -> PeerConfig {
    PeerConfig {
        hold_time: 9,
        connect_retry_time: 2,
        passive,
        // Retry every second: tests should not wait for a doubled backoff.
        damp_peer_oscillations: false,
        ..PeerConfig::new(local_as, id, peer_as)
    }
}

fn session_config(local: Ipv4Addr, peer: SocketAddr, fsm: PeerConfig) -> SessionConfig {
    SessionConfig {
        peer_port: peer.port(),
        local_addr: Some(IpAddr::V4(local)),
        connect_timeout: Duration::from_secs(2),
        ..SessionConfig::new(peer.ip(), fsm)
    }
}

async fn listener(ip: Ipv4Addr) -> (TcpListener, SocketAddr) {
    let l = listen(SocketAddr::new(IpAddr::V4(ip), 0))
        .await
        .expect("listen on loopback");
    let addr = l.local_addr().expect("bound address");
    (l, addr)
}

/// What the speaker will do: hand connections from the peer's address to its session, close
/// the others.
fn route_inbound(l: TcpListener, peer: Ipv4Addr, handle: Arc<SessionHandle>) {
    tokio::spawn(async move {
        while let Ok((stream, from)) = l.accept().await {
            if from.ip() == IpAddr::V4(peer) {
                let _ = handle.accept_inbound(stream);
            }
        }
    });
}

/// Logs to the test's output with `RUST_LOG=brindle_bgp=debug`.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn spawn(config: SessionConfig) -> (Arc<SessionHandle>, Events) {
    init_tracing();
    let (tx, rx) = mpsc::channel(256);
    let handle = spawn_session(config, tx).expect("valid config");
    (Arc::new(handle), rx)
}

/// The next event matching `want`, skipping others; panics after `secs`.
async fn expect_event(
    rx: &mut Events,
    what: &str,
    secs: u64,
    want: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let wait = async {
        while let Some(ev) = rx.recv().await {
            if want(&ev) {
                return ev;
            }
        }
        panic!("event channel closed while waiting for {what}");
    };
    timeout(Duration::from_secs(secs), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {secs} s"))
}

fn is_established(ev: &SessionEvent) -> bool {
    matches!(ev, SessionEvent::Established { .. })
}

fn route(prefix: &str, asn: u32, next_hop: Ipv4Addr) -> Update {
    Update {
        nlri: vec![prefix.parse().expect("prefix")],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![asn])),
            next_hop: Some(next_hop),
            ..PathAttributes::default()
        },
        ..Update::default()
    }
}

struct Pair {
    a: Arc<SessionHandle>,
    a_events: Events,
    a_port: u16,
    b: Arc<SessionHandle>,
    b_events: Events,
    b_port: u16,
}

/// Two of our sessions, A on 127.0.0.1 and B on 127.0.0.2, each with its listener.
async fn pair(a_passive: bool, b_passive: bool) -> Pair {
    let (la, a_addr) = listener(A).await;
    let (lb, b_addr) = listener(B).await;
    // TTLs set (single-hop on loopback, and the maximum) to exercise the socket options on
    // outbound and accepted connections.
    let (a, a_events) = spawn(SessionConfig {
        ttl: Some(1),
        ..session_config(A, b_addr, fsm_config(AS_A, ID_A, AS_B, a_passive))
    });
    let (b, b_events) = spawn(SessionConfig {
        ttl: Some(255),
        ..session_config(B, a_addr, fsm_config(AS_B, ID_B, AS_A, b_passive))
    });
    route_inbound(la, B, a.clone());
    route_inbound(lb, A, b.clone());
    Pair {
        a,
        a_events,
        a_port: a_addr.port(),
        b,
        b_events,
        b_port: b_addr.port(),
    }
}

#[tokio::test]
async fn two_sessions_establish_and_exchange_updates() {
    let mut p = pair(false, true).await;
    let ev = expect_event(&mut p.a_events, "A Established", 5, is_established).await;
    let SessionEvent::Established {
        negotiated,
        local_addr,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(negotiated.peer_asn, AS_B);
    assert_eq!(negotiated.hold_time, 9);
    assert!(negotiated.four_octet_as && !negotiated.ibgp);
    assert_eq!(local_addr.ip(), IpAddr::V4(A));
    expect_event(&mut p.b_events, "B Established", 5, is_established).await;

    p.a.send_updates(vec![route("10.1.0.0/24", AS_A, A)])
        .expect("session alive");
    let ev = expect_event(&mut p.b_events, "UPDATE at B", 5, |e| {
        matches!(e, SessionEvent::Update { .. })
    })
    .await;
    let SessionEvent::Update { peer, update } = ev else {
        unreachable!()
    };
    assert_eq!(peer, IpAddr::V4(A));
    assert_eq!(
        update.nlri,
        vec!["10.1.0.0/24".parse::<IpNet>().expect("prefix")]
    );
    assert_eq!(
        update.attributes.as_path,
        Some(AsPath::from_sequence(vec![AS_A]))
    );
    assert_eq!(update.treatment(), None);

    // And the other way, with a withdrawal.
    let withdraw = Update {
        withdrawn: vec!["10.2.0.0/24".parse().expect("prefix")],
        ..Update::default()
    };
    p.b.send_updates(vec![route("10.2.0.0/24", AS_B, B), withdraw])
        .expect("session alive");
    for _ in 0..2 {
        expect_event(&mut p.a_events, "UPDATE at A", 5, |e| {
            matches!(e, SessionEvent::Update { .. })
        })
        .await;
    }

    let a = p.a.status();
    assert_eq!(a.state, State::Established);
    assert_eq!(a.updates_out, 1);
    assert_eq!(a.updates_in, 2);
    assert!(a.messages_out >= 3 && a.messages_in >= 4, "{a:?}");
    assert_eq!(p.b.status().updates_in, 1);

    p.a.route_refresh(crate::packet::Afi::IPV4, crate::packet::Safi::UNICAST)
        .expect("session alive");
    let ev = expect_event(&mut p.b_events, "ROUTE-REFRESH at B", 5, |e| {
        matches!(e, SessionEvent::RouteRefresh { .. })
    })
    .await;
    assert!(
        matches!(ev, SessionEvent::RouteRefresh { afi, .. } if afi == crate::packet::Afi::IPV4)
    );
}

#[tokio::test]
async fn stop_sends_cease_and_the_peer_sees_it() {
    let mut p = pair(false, true).await;
    expect_event(&mut p.a_events, "A Established", 5, is_established).await;
    expect_event(&mut p.b_events, "B Established", 5, is_established).await;

    p.a.stop().expect("session alive");
    let ev = expect_event(&mut p.b_events, "Down at B", 5, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            SessionEvent::Down {
                reason: DownReason::NotificationReceived {
                    code: 6,
                    subcode: 2
                },
                was_established: true,
                ..
            }
        ),
        "{ev:?}"
    );
    let ev = expect_event(&mut p.a_events, "Down at A", 5, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    assert!(matches!(
        ev,
        SessionEvent::Down {
            reason: DownReason::ManualStop,
            ..
        }
    ));
    assert_eq!(
        p.b.status().last_error.as_deref(),
        Some("NOTIFICATION 6/2 received: Cease (6) / Administrative Shutdown (2)")
    );
    // A's task ends; its handle says so.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.a.stop(), Err(SessionGone));
}

#[tokio::test]
async fn simultaneous_open_keeps_exactly_one_connection() {
    let mut p = pair(false, false).await;
    let ea = expect_event(&mut p.a_events, "A Established", 10, is_established).await;
    let eb = expect_event(&mut p.b_events, "B Established", 10, is_established).await;
    let (
        SessionEvent::Established { local_addr: la, .. },
        SessionEvent::Established { local_addr: lb, .. },
    ) = (ea, eb)
    else {
        unreachable!()
    };
    // Let any leftover connection be resolved, then check nothing went down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = p.a.status();
    let b = p.b.status();
    assert_eq!((a.state, b.state), (State::Established, State::Established));
    assert_eq!((a.local_addr, b.local_addr), (Some(la), Some(lb)));
    // One connection, the one B opened: B has the higher BGP Identifier (RFC 4271 §6.8), so
    // A's end of it is A's listening port and B's end is not B's.
    assert!(
        la.port() == p.a_port && lb.port() != p.b_port,
        "A {la}, B {lb}, listening {} and {}",
        p.a_port,
        p.b_port
    );
    while let Ok(ev) = p.a_events.try_recv() {
        assert!(
            !matches!(
                ev,
                SessionEvent::Down {
                    was_established: true,
                    ..
                }
            ),
            "{ev:?}"
        );
    }
    while let Ok(ev) = p.b_events.try_recv() {
        assert!(
            !matches!(
                ev,
                SessionEvent::Down {
                    was_established: true,
                    ..
                }
            ),
            "{ev:?}"
        );
    }
    // The session works.
    p.b.send_updates(vec![route("10.3.0.0/24", AS_B, B)])
        .expect("session alive");
    expect_event(&mut p.a_events, "UPDATE at A", 5, |e| {
        matches!(e, SessionEvent::Update { .. })
    })
    .await;
}

#[tokio::test]
async fn connection_refused_is_reported_precisely() {
    let (l, addr) = listener(B).await;
    drop(l);
    let (h, mut events) = spawn(session_config(A, addr, fsm_config(AS_A, ID_A, AS_B, false)));
    let ev = expect_event(&mut events, "Down", 5, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    let SessionEvent::Down {
        reason,
        detail,
        was_established,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(reason, DownReason::TcpFailed);
    assert_eq!(detail.as_deref(), Some("connection refused"));
    assert!(!was_established);
    assert_eq!(
        h.status().last_error.as_deref(),
        Some("TCP connection failed: connection refused")
    );
}

#[tokio::test]
async fn passive_session_never_connects() {
    let (l, addr) = listener(B).await;
    let (h, _events) = spawn(session_config(A, addr, fsm_config(AS_A, ID_A, AS_B, true)));
    let accepted = timeout(Duration::from_millis(1500), l.accept()).await;
    assert!(accepted.is_err(), "a passive session connected");
    assert_eq!(h.status().state, State::Active);
}

// ===== a scripted peer =====

/// The far end of a connection, driven by the test.
struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    async fn accept(l: &TcpListener) -> RawPeer {
        let (stream, _) = timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("the session connects")
            .expect("accept");
        RawPeer {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next message, or None when the session closed the connection.
    async fn read(&mut self) -> Option<Message> {
        let ctx = DecodeContext {
            four_octet_as: true,
            ..DecodeContext::default()
        };
        loop {
            if let Some((msg, n)) = decode(&self.buf, &ctx).expect("the session sends valid BGP") {
                self.buf.drain(..n);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("the session sends something within 10 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, msg: &Message) {
        let ctx = EncodeContext {
            four_octet_as: true,
        };
        let bytes = encode(msg, &ctx).expect("test message encodes");
        self.send_raw(&bytes).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to session");
    }

    /// Reads our OPEN, answers with an OPEN (AS 65002, `hold`) and a KEEPALIVE, and reads up to
    /// the session's KEEPALIVE.
    async fn handshake(&mut self, hold: u16) {
        let Some(Message::Open(open)) = self.read().await else {
            panic!("expected the session's OPEN");
        };
        assert_eq!(open.asn, AS_A);
        let params = crate::fsm::OpenInfo {
            version: 4,
            asn: AS_B,
            hold_time: hold,
            router_id: ID_B,
            capabilities: CapabilitySet::standard(),
        };
        self.send(&Message::Open(super::glue::open_message(&params)))
            .await;
        self.send(&Message::Keepalive).await;
        assert_eq!(self.read().await, Some(Message::Keepalive));
    }

    /// Reads until a NOTIFICATION, which it returns, or the end of the connection.
    async fn notification(&mut self) -> Option<Notification> {
        while let Some(msg) = self.read().await {
            if let Message::Notification(n) = msg {
                return Some(n);
            }
        }
        None
    }
}

async fn session_with_raw_peer() -> (Arc<SessionHandle>, Events, RawPeer) {
    let (l, addr) = listener(B).await;
    let (h, mut events) = spawn(session_config(A, addr, fsm_config(AS_A, ID_A, AS_B, false)));
    let mut raw = RawPeer::accept(&l).await;
    raw.handshake(90).await;
    expect_event(&mut events, "Established", 5, is_established).await;
    (h, events, raw)
}

#[tokio::test]
async fn hold_timer_expires_when_the_peer_goes_silent() {
    let (l, addr) = listener(B).await;
    let fsm = PeerConfig {
        hold_time: 3,
        ..fsm_config(AS_A, ID_A, AS_B, false)
    };
    let (_h, mut events) = spawn(session_config(A, addr, fsm));
    let mut raw = RawPeer::accept(&l).await;
    raw.handshake(3).await;
    expect_event(&mut events, "Established", 5, is_established).await;
    let started = std::time::Instant::now();
    // Silent from here on; the session keeps sending KEEPALIVEs until it gives up.
    let n = raw
        .notification()
        .await
        .expect("a NOTIFICATION before close");
    assert_eq!((n.code, n.subcode), (4, 0));
    let ev = expect_event(&mut events, "Down", 5, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    assert!(matches!(
        ev,
        SessionEvent::Down {
            reason: DownReason::HoldTimerExpired,
            was_established: true,
            ..
        }
    ));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // The session closes after its NOTIFICATION.
    assert_eq!(raw.read().await, None);
}

fn header(len: u16, msg_type: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(msg_type);
    v
}

#[tokio::test]
async fn malformed_messages_get_the_right_notification() {
    // UPDATE whose NLRI has a prefix length of 33 (RFC 7606 §5.3: reset, 3/10).
    let mut bad_nlri = header(19 + 4 + 5, 2);
    bad_nlri.extend_from_slice(&[0, 0, 0, 0, 33, 10, 0, 0, 0]);
    let mut bad_marker = header(19, 4);
    bad_marker[3] = 0;
    // (what, bytes, code, subcode, data)
    type Case<'a> = (&'a str, Vec<u8>, u8, u8, &'a [u8]);
    let cases: [Case; 4] = [
        ("unknown type", header(19, 9), 1, 3, &[9]),
        ("bad length", header(18, 4), 1, 2, &[0, 18]),
        ("bad marker", bad_marker, 1, 1, &[]),
        ("bad NLRI", bad_nlri, 3, 10, &[]),
    ];
    for (what, bytes, code, subcode, data) in cases {
        let (_h, mut events, mut raw) = session_with_raw_peer().await;
        raw.send_raw(&bytes).await;
        let n = raw.notification().await.expect("a NOTIFICATION");
        assert_eq!(
            (n.code, n.subcode, n.data.as_slice()),
            (code, subcode, data),
            "{what}"
        );
        let ev = expect_event(&mut events, "Down", 5, |e| {
            matches!(e, SessionEvent::Down { .. })
        })
        .await;
        let SessionEvent::Down { reason, detail, .. } = ev else {
            unreachable!()
        };
        assert_eq!(
            reason,
            DownReason::NotificationSent { code, subcode },
            "{what}"
        );
        assert!(detail.is_some(), "{what}: the decode error is kept");
    }
}

#[tokio::test]
async fn malformed_attribute_is_treat_as_withdraw_and_the_session_stays_up() {
    let (h, mut events, mut raw) = session_with_raw_peer().await;
    // ORIGIN IGP, AS_PATH [65002], NEXT_HOP 127.0.0.2, MED with length 5; NLRI 10.2.0.0/24.
    let attrs: &[u8] = &[
        0x40, 1, 1, 0, //
        0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xea, //
        0x40, 3, 4, 127, 0, 0, 2, //
        0x80, 4, 5, 0, 0, 0, 0, 0,
    ];
    let nlri: &[u8] = &[24, 10, 2, 0];
    let mut msg = header((19 + 4 + attrs.len() + nlri.len()) as u16, 2);
    msg.extend_from_slice(&[0, 0, 0, attrs.len() as u8]);
    msg.extend_from_slice(attrs);
    msg.extend_from_slice(nlri);
    raw.send_raw(&msg).await;
    let ev = expect_event(&mut events, "UPDATE", 5, |e| {
        matches!(e, SessionEvent::Update { .. })
    })
    .await;
    let SessionEvent::Update { update, .. } = ev else {
        unreachable!()
    };
    assert_eq!(update.treatment(), Some(Treatment::TreatAsWithdraw));
    assert_eq!(
        update.nlri,
        vec!["10.2.0.0/24".parse::<IpNet>().expect("prefix")]
    );

    // Still up: a clean UPDATE goes through and nothing went down.
    raw.send(&Message::Update(route("10.4.0.0/24", AS_B, B)))
        .await;
    let ev = expect_event(&mut events, "second UPDATE", 5, |e| {
        matches!(e, SessionEvent::Update { .. }) || matches!(e, SessionEvent::Down { .. })
    })
    .await;
    assert!(
        matches!(ev, SessionEvent::Update { ref update, .. } if update.treatment().is_none()),
        "{ev:?}"
    );
    assert_eq!(h.status().state, State::Established);
    assert_eq!(h.status().updates_in, 2);
}

#[tokio::test]
async fn unexpected_open_in_established_is_an_fsm_error() {
    let (_h, mut events, mut raw) = session_with_raw_peer().await;
    let params = crate::fsm::OpenInfo {
        version: 4,
        asn: AS_B,
        hold_time: 90,
        router_id: ID_B,
        capabilities: CapabilitySet::standard(),
    };
    raw.send(&Message::Open(super::glue::open_message(&params)))
        .await;
    let n = raw.notification().await.expect("a NOTIFICATION");
    // RFC 6608 §3: Receive Unexpected Message in Established State.
    assert_eq!((n.code, n.subcode), (5, 3));
    expect_event(&mut events, "Down", 5, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
}

#[tokio::test]
async fn wrong_peer_as_is_refused_with_2_2() {
    let (l, addr) = listener(B).await;
    let (_h, mut events) = spawn(session_config(
        A,
        addr,
        fsm_config(AS_A, ID_A, 65099, false),
    ));
    let mut raw = RawPeer::accept(&l).await;
    let Some(Message::Open(_)) = raw.read().await else {
        panic!("expected OPEN");
    };
    let params = crate::fsm::OpenInfo {
        version: 4,
        asn: AS_B,
        hold_time: 90,
        router_id: ID_B,
        capabilities: CapabilitySet::standard(),
    };
    raw.send(&Message::Open(super::glue::open_message(&params)))
        .await;
    let n = raw.notification().await.expect("a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 2));
    let ev = expect_event(&mut events, "Down", 5, |e| {
        matches!(e, SessionEvent::Down { .. })
    })
    .await;
    assert!(matches!(
        ev,
        SessionEvent::Down {
            reason: DownReason::BadPeerAs {
                expected: 65099,
                got: AS_B
            },
            ..
        }
    ));
}

#[test]
fn config_errors_are_typed() {
    let fsm = fsm_config(4_200_000_000, ID_A, AS_B, false);
    let mut c = SessionConfig::new(IpAddr::V4(B), fsm);
    c.fsm.capabilities.four_octet_as = false;
    assert_eq!(
        c.validate(),
        Err(SessionConfigError::FourOctetAsRequired(4_200_000_000))
    );
    let mut c = SessionConfig::new(IpAddr::V4(B), fsm_config(AS_A, ID_A, AS_B, false));
    c.local_addr = Some("::1".parse().expect("address"));
    assert!(matches!(
        c.validate(),
        Err(SessionConfigError::FamilyMismatch { .. })
    ));
    c.local_addr = None;
    c.fsm.hold_time = 2;
    assert!(matches!(c.validate(), Err(SessionConfigError::Fsm(_))));
}
