//! Speakers over loopback TCP (127.0.0.x on lo, ports chosen by the kernel): routes both ways
//! in both families, withdrawal, ECMP from two eBGP peers, neighbour removal, refused
//! connections, status texts.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

use super::*;
use crate::rib::{AddressFamily, RouteSource};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

struct Node {
    handle: SpeakerHandle,
    routes: mpsc::Receiver<RouteChange>,
    addr: SocketAddr,
    asn: u32,
}

impl Node {
    /// A neighbour entry pointing at this node.
    fn as_neighbor(&self) -> NeighborConfig {
        NeighborConfig {
            port: self.addr.port(),
            ..NeighborConfig::new(self.addr.ip(), self.asn)
        }
    }

    async fn peer(&self, with: &Node) -> PeerStatus {
        self.handle
            .peers()
            .await
            .expect("speaker alive")
            .into_iter()
            .find(|p| p.address == with.addr.ip())
            .expect("neighbour configured")
    }

    /// Waits for a change of `prefix` whose next hops satisfy `want`; panics after 10 s.
    async fn route_change(
        &mut self,
        prefix: &str,
        want: impl Fn(&[IpAddr]) -> bool,
    ) -> RouteChange {
        let prefix = net(prefix);
        let wait = async {
            while let Some(change) = self.routes.recv().await {
                if change.prefix == prefix && want(&change.next_hops) {
                    return change;
                }
            }
            panic!("route channel closed while waiting for {prefix}");
        };
        timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no wanted change of {prefix} within 10 s"))
    }
}

/// A speaker on 127.0.0.`last`, listening on a port the kernel picks, without neighbours,
/// announcing IPv6 routes with next hop fd00::`last`.
async fn node(last: u8, asn: u32) -> Node {
    node_with(last, asn, true).await
}

async fn node_with(last: u8, asn: u32, ipv6_next_hop: bool) -> Node {
    init_tracing();
    let address = Ipv4Addr::new(127, 0, 0, last);
    let config = SpeakerConfig {
        listen: Some(SocketAddr::new(IpAddr::V4(address), 0)),
        hold_time: 9,
        connect_retry: 1,
        connect_timeout: Duration::from_secs(2),
        next_hop_v6: ipv6_next_hop
            .then(|| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(last))),
        damp_peer_oscillations: false,
        ..SpeakerConfig::new(asn, Ipv4Addr::new(10, 0, 0, last))
    };
    let (handle, routes) = start(config, Vec::new()).await.expect("speaker starts");
    let addr = handle.listen_addr().expect("listening");
    Node {
        handle,
        routes,
        addr,
        asn,
    }
}

/// Peers `a` and `b` with each other (both active: the collision is resolved by the sessions).
async fn connect(a: &Node, b: &Node) {
    a.handle
        .add_neighbor(b.as_neighbor())
        .await
        .expect("add neighbour");
    b.handle
        .add_neighbor(a.as_neighbor())
        .await
        .expect("add neighbour");
}

/// Polls `check` every 50 ms until it returns `Some`; panics with `what` after 10 s.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, check: impl Fn() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within 10 s");
        }
        sleep(Duration::from_millis(50)).await;
    }
}

async fn established(a: &Node, b: &Node) {
    eventually("session established", || async {
        let (pa, pb) = (a.peer(b).await, b.peer(a).await);
        (pa.state == State::Established && pb.state == State::Established).then_some(())
    })
    .await;
}

#[tokio::test]
async fn ipv4_and_ipv6_routes_are_exchanged_and_withdrawn() {
    let a = node(11, 65011).await;
    let mut b = node(12, 65012).await;
    connect(&a, &b).await;
    established(&a, &b).await;

    a.handle
        .originate(net("10.11.0.0/24"))
        .await
        .expect("originate");
    a.handle
        .originate(net("fd00:11::/64"))
        .await
        .expect("originate");
    b.handle
        .originate(net("10.12.0.0/24"))
        .await
        .expect("originate");

    let v4 = b.route_change("10.11.0.0/24", |nh| !nh.is_empty()).await;
    assert_eq!(v4.next_hops, vec![ip("127.0.0.11")]);
    // IPv6 over an IPv4 session: the configured IPv6 next hop of A.
    let v6 = b.route_change("fd00:11::/64", |nh| !nh.is_empty()).await;
    assert_eq!(v6.next_hops, vec![ip("fd00::b")]);

    let routes = b.handle.routes().await.expect("routes");
    let learned = routes
        .iter()
        .find(|r| r.prefix == net("10.11.0.0/24"))
        .expect("A's route at B");
    assert!(learned.best);
    assert_eq!(learned.as_path, vec![65011]);
    assert_eq!(learned.source.peer().map(|p| p.0), Some(ip("127.0.0.11")));
    let own = routes
        .iter()
        .find(|r| r.prefix == net("10.12.0.0/24"))
        .expect("B's own route");
    assert_eq!(own.source, RouteSource::Local);
    assert!(own.best && own.as_path.is_empty() && own.next_hops.is_empty());

    let at_b = eventually("counts at B", || async {
        let p = b.peer(&a).await;
        (p.received == 2 && p.advertised == 1).then_some(p)
    })
    .await;
    assert_eq!(at_b.accepted, 2);
    assert_eq!(at_b.asn, 65011);
    assert_eq!(at_b.info, "");
    assert!(at_b.since <= SystemTime::now());
    let at_a = eventually("counts at A", || async {
        let p = a.peer(&b).await;
        (p.received == 1 && p.advertised == 2).then_some(p)
    })
    .await;
    // The same counts per family: one prefix each way over IPv4, one IPv6 prefix A to B.
    let counts = |p: &PeerStatus| -> Vec<(AddressFamily, usize, usize, usize)> {
        p.families
            .iter()
            .map(|f| (f.family, f.received, f.accepted, f.advertised))
            .collect()
    };
    assert_eq!(
        counts(&at_b),
        [
            (AddressFamily::Ipv4Unicast, 1, 1, 1),
            (AddressFamily::Ipv6Unicast, 1, 1, 0)
        ]
    );
    assert_eq!(
        counts(&at_a),
        [
            (AddressFamily::Ipv4Unicast, 1, 1, 1),
            (AddressFamily::Ipv6Unicast, 0, 0, 1)
        ]
    );
    // Idle, Connect or Active, OpenSent, OpenConfirm, Established: up once.
    assert_eq!(at_b.established_transitions, 1, "{at_b:?}");
    assert!(at_b.transitions >= 3, "{at_b:?}");
    assert_eq!(at_b.peer_type, PeerType::Global);

    a.handle
        .withdraw(net("fd00:11::/64"))
        .await
        .expect("withdraw");
    b.route_change("fd00:11::/64", <[IpAddr]>::is_empty).await;
    a.handle
        .withdraw(net("10.11.0.0/24"))
        .await
        .expect("withdraw");
    b.route_change("10.11.0.0/24", <[IpAddr]>::is_empty).await;
    eventually("A's routes gone from B's RIB", || async {
        let routes = b.handle.routes().await.expect("routes");
        (routes.len() == 1).then_some(())
    })
    .await;

    // Bad input is an error, not a panic.
    let err = a
        .handle
        .originate(net("10.11.0.1/24"))
        .await
        .expect_err("host bits");
    assert!(
        err.to_string().contains("did you mean 10.11.0.0/24"),
        "{err}"
    );
}

#[tokio::test]
async fn ipv4_sessions_carry_ipv6_only_with_an_ipv6_next_hop() {
    let a = node_with(16, 65016, false).await;
    let mut b = node(17, 65017).await;
    connect(&a, &b).await;
    established(&a, &b).await;
    a.handle
        .originate(net("fd00:16::/64"))
        .await
        .expect("originate");
    a.handle
        .originate(net("10.16.0.0/24"))
        .await
        .expect("originate");
    b.handle
        .originate(net("fd00:17::/64"))
        .await
        .expect("originate");
    // The IPv4 route arrives; the IPv6 routes do not go either way (IPv6 is negotiated only
    // when both sides offer it, and A does not).
    b.route_change("10.16.0.0/24", |nh| !nh.is_empty()).await;
    let at_a = a.peer(&b).await;
    let at_b = b.peer(&a).await;
    assert_eq!((at_a.advertised, at_a.received), (1, 0), "{at_a:?}");
    assert_eq!((at_b.advertised, at_b.received), (0, 1), "{at_b:?}");
}

#[tokio::test]
async fn two_ebgp_peers_form_an_ecmp_group_and_removal_withdraws() {
    let a = node(21, 65021).await;
    let b = node(22, 65022).await;
    let mut c = node(23, 65023).await;
    connect(&a, &c).await;
    connect(&b, &c).await;
    established(&a, &c).await;
    established(&b, &c).await;

    a.handle
        .originate(net("10.20.0.0/24"))
        .await
        .expect("originate");
    b.handle
        .originate(net("10.20.0.0/24"))
        .await
        .expect("originate");
    let both = c.route_change("10.20.0.0/24", |nh| nh.len() == 2).await;
    let mut hops = both.next_hops.clone();
    hops.sort();
    assert_eq!(hops, vec![ip("127.0.0.21"), ip("127.0.0.22")]);

    // One best, one multipath member, both listed with their own next hops.
    let routes = c.handle.routes().await.expect("routes");
    let candidates: Vec<&RouteStatus> = routes
        .iter()
        .filter(|r| r.prefix == net("10.20.0.0/24"))
        .collect();
    assert_eq!(candidates.len(), 2);
    assert!(candidates[0].best && candidates[0].next_hops.len() == 2);
    assert!(!candidates[1].best);
    assert!(matches!(candidates[1].selection, Selection::Multipath(_)));

    // Removing A takes its path away: B's alone remains.
    c.handle
        .remove_neighbor(a.addr.ip())
        .await
        .expect("remove neighbour");
    let one = c.route_change("10.20.0.0/24", |nh| nh.len() == 1).await;
    assert_eq!(one.next_hops, vec![ip("127.0.0.22")]);
    assert!(c
        .handle
        .peers()
        .await
        .expect("peers")
        .iter()
        .all(|p| p.address != a.addr.ip()));
    // A sees C go with a Cease saying why (RFC 4486 §4).
    eventually("A sees the Cease", || async {
        let p = a.peer(&c).await;
        (p.state != State::Established && p.info.contains("Peer De-configured (3)")).then_some(())
    })
    .await;

    c.handle
        .remove_neighbor(b.addr.ip())
        .await
        .expect("remove neighbour");
    c.route_change("10.20.0.0/24", <[IpAddr]>::is_empty).await;
    let err = c
        .handle
        .remove_neighbor(b.addr.ip())
        .await
        .expect_err("already removed");
    assert!(matches!(err, SpeakerError::UnknownNeighbor(_)));
}

#[tokio::test]
async fn routes_through_an_unreachable_next_hop_are_withdrawn_until_it_is_back() {
    let a = node(26, 65026).await;
    let mut b = node(27, 65027).await;
    connect(&a, &b).await;
    established(&a, &b).await;
    a.handle
        .originate(net("10.26.0.0/24"))
        .await
        .expect("originate");
    b.route_change("10.26.0.0/24", |nh| !nh.is_empty()).await;
    assert_eq!(
        b.handle.next_hops().await.expect("next hops"),
        vec![ip("127.0.0.26")]
    );

    b.handle
        .set_next_hop_reachable(ip("127.0.0.26"), false)
        .await
        .expect("speaker alive");
    b.route_change("10.26.0.0/24", <[IpAddr]>::is_empty).await;
    let routes = b.handle.routes().await.expect("routes");
    assert_eq!(routes.len(), 1);
    assert!(!routes[0].best);
    assert_eq!(
        routes[0].selection.to_string(),
        "lost: ineligible: next hop unreachable"
    );
    let p = b.peer(&a).await;
    assert_eq!((p.received, p.accepted), (1, 0));

    b.handle
        .set_next_hop_reachable(ip("127.0.0.26"), true)
        .await
        .expect("speaker alive");
    let back = b.route_change("10.26.0.0/24", |nh| !nh.is_empty()).await;
    assert_eq!(back.next_hops, vec![ip("127.0.0.26")]);
}

#[tokio::test]
async fn a_connection_from_an_unknown_address_is_closed_before_any_message() {
    let a = node(31, 65031).await;
    a.handle
        .add_neighbor(NeighborConfig {
            passive: true,
            ..NeighborConfig::new(ip("127.0.0.32"), 65032)
        })
        .await
        .expect("add neighbour");

    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(ip("127.0.0.33"), 0))
        .expect("bind 127.0.0.33");
    let mut stream = socket.connect(a.addr).await.expect("TCP connect");
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "no OPEN (or anything) sent to an unknown address");

    // The configured neighbour is still waiting, untouched.
    let p = a.handle.peers().await.expect("peers");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].state, State::Active);
    assert_eq!(p[0].info, "passive: waiting for the peer to connect");
}

#[tokio::test]
async fn status_says_why_a_session_is_down() {
    let a = node(41, 65041).await;
    let b = node(42, 65042).await;

    // Nothing listens on 127.0.0.43.
    a.handle
        .add_neighbor(NeighborConfig {
            port: b.addr.port(),
            ..NeighborConfig::new(ip("127.0.0.43"), 65043)
        })
        .await
        .expect("add neighbour");
    // B is configured at A with the wrong AS.
    a.handle
        .add_neighbor(NeighborConfig {
            asn: 65099,
            ..b.as_neighbor()
        })
        .await
        .expect("add neighbour");
    b.handle
        .add_neighbor(a.as_neighbor())
        .await
        .expect("add neighbour");

    let refused = eventually("connection refused reported", || async {
        let peers = a.handle.peers().await.expect("peers");
        peers
            .into_iter()
            .find(|p| p.address == ip("127.0.0.43") && p.info.contains("connection refused"))
    })
    .await;
    assert_ne!(refused.state, State::Established);

    eventually("bad peer AS at A", || async {
        let p = a.peer(&b).await;
        p.info.contains("bad peer AS").then_some(())
    })
    .await;
    eventually("B is told", || async {
        let p = b.peer(&a).await;
        p.info.contains("Bad Peer AS").then_some(())
    })
    .await;

    // Duplicate and invalid neighbours are refused with the reason.
    let dup = a
        .handle
        .add_neighbor(b.as_neighbor())
        .await
        .expect_err("duplicate");
    assert!(matches!(dup, SpeakerError::NeighborExists(_)));
    let bad = a
        .handle
        .add_neighbor(NeighborConfig::new(ip("0.0.0.0"), 65000))
        .await
        .expect_err("unspecified address");
    assert!(bad.to_string().contains("not a unicast address"), "{bad}");
}

#[tokio::test]
async fn shutdown_sends_cease_and_peers_drop_the_routes() {
    let a = node(51, 65051).await;
    let mut b = node(52, 65052).await;
    connect(&a, &b).await;
    established(&a, &b).await;
    a.handle
        .originate(net("10.51.0.0/24"))
        .await
        .expect("originate");
    b.route_change("10.51.0.0/24", |nh| !nh.is_empty()).await;

    a.handle.shutdown().await.expect("shutdown");
    b.route_change("10.51.0.0/24", <[IpAddr]>::is_empty).await;
    let p = b.peer(&a).await;
    assert!(
        p.info.contains("Cease") && p.info.contains("Administrative Shutdown"),
        "{}",
        p.info
    );
    // The stopped speaker's handle says so; its route stream has ended.
    assert!(matches!(a.handle.peers().await, Err(SpeakerError::Gone)));
}

#[tokio::test]
async fn start_refuses_bad_configuration() {
    let zero_as = start(
        SpeakerConfig::new(0, Ipv4Addr::new(10, 0, 0, 1)),
        Vec::new(),
    )
    .await;
    assert!(matches!(zero_as, Err(SpeakerError::Config(_))));
    let bad_hold = start(
        SpeakerConfig {
            hold_time: 2,
            ..SpeakerConfig::new(65000, Ipv4Addr::new(10, 0, 0, 1))
        },
        Vec::new(),
    )
    .await;
    assert!(matches!(bad_hold, Err(SpeakerError::Config(_))));
    let twice = start(
        SpeakerConfig::new(65000, Ipv4Addr::new(10, 0, 0, 1)),
        vec![
            NeighborConfig::new(ip("127.0.0.61"), 65001),
            NeighborConfig::new(ip("127.0.0.61"), 65002),
        ],
    )
    .await;
    assert!(matches!(twice, Err(SpeakerError::NeighborExists(_))));
}

#[test]
fn a_neighbours_restart_time_overrides_the_speakers() {
    let speaker = SpeakerConfig {
        graceful_restart_time: Some(120),
        ..SpeakerConfig::new(65001, "192.0.2.1".parse().expect("router id"))
    };
    let restart_time = |neighbor: &NeighborConfig, speaker: &SpeakerConfig| {
        super::session_config(speaker, neighbor, false)
            .expect("valid")
            .fsm
            .capabilities
            .graceful_restart
            .map(|gr| gr.restart_time)
    };
    let plain = NeighborConfig::new(ip("192.0.2.2"), 65002);
    let short = NeighborConfig {
        graceful_restart_time: Some(30),
        ..plain.clone()
    };
    assert_eq!(restart_time(&plain, &speaker), Some(120));
    assert_eq!(restart_time(&short, &speaker), Some(30));
    // Without graceful restart on the speaker, none for anybody.
    let off = SpeakerConfig {
        graceful_restart_time: None,
        ..speaker
    };
    assert_eq!(restart_time(&short, &off), None);
}

#[test]
fn a_neighbours_hold_time_overrides_the_speakers() {
    let speaker = SpeakerConfig {
        hold_time: 90,
        ..SpeakerConfig::new(65001, "192.0.2.1".parse().expect("router id"))
    };
    let hold = |neighbor: &NeighborConfig| {
        super::session_config(&speaker, neighbor, false)
            .map(|c| c.fsm.hold_time)
            .map_err(|e| e.to_string())
    };
    let plain = NeighborConfig::new(ip("192.0.2.2"), 65002);
    assert_eq!(hold(&plain), Ok(90));
    let fast = NeighborConfig {
        hold_time: Some(15),
        ..plain.clone()
    };
    assert_eq!(hold(&fast), Ok(15));
    // RFC 4271 §4.2: 0 or at least 3 s.
    let bad = NeighborConfig {
        hold_time: Some(2),
        ..plain
    };
    assert!(hold(&bad).is_err());
}
