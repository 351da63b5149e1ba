//! BGP status over HTTP: the speaker's peers and routes as JSON (`GET /bgp/peers`,
//! `GET /bgp/routes`, served by `brindle-bgpd` and later brindle-node) and as the tables
//! `brindlectl bgp peers|routes` prints.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brindle_bgp::rib::{AddressFamily, RouteSource, Selection};
use brindle_bgp::speaker::{PeerStatus, RouteStatus, SpeakerHandle};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::api::{BgpFamilyCounts, BgpPeer, BgpRoute, PATH_BGP_PEERS, PATH_BGP_ROUTES};

/// A peer as the JSON answer shows it.
pub fn peer_json(p: &PeerStatus) -> BgpPeer {
    BgpPeer {
        address: p.address.to_string(),
        asn: p.asn,
        state: p.state.to_string(),
        since: rfc3339(p.since),
        info: p.info.clone(),
        received: p.received,
        accepted: p.accepted,
        advertised: p.advertised,
        peer_type: p.peer_type.to_string(),
        families: p
            .families
            .iter()
            .map(|f| BgpFamilyCounts {
                family: family_name(f.family).to_string(),
                received: f.received,
                accepted: f.accepted,
                advertised: f.advertised,
            })
            .collect(),
        transitions: p.transitions,
        established_transitions: p.established_transitions,
    }
}

/// `ipv4-unicast` or `ipv6-unicast`: a family as JSON and metric labels name it.
pub fn family_name(family: AddressFamily) -> &'static str {
    match family {
        AddressFamily::Ipv4Unicast => "ipv4-unicast",
        AddressFamily::Ipv6Unicast => "ipv6-unicast",
    }
}

/// A route as the JSON answer shows it.
pub fn route_json(r: &RouteStatus) -> BgpRoute {
    BgpRoute {
        prefix: r.prefix.to_string(),
        next_hops: r.next_hops.iter().map(ToString::to_string).collect(),
        source: match r.source {
            RouteSource::Local => "local".to_string(),
            RouteSource::Peer { id, .. } => id.to_string(),
        },
        as_path: r.as_path.clone(),
        best: r.best,
        reason: match r.selection {
            Selection::Best => String::new(),
            other => other.to_string(),
        },
    }
}

/// `2026-11-23T08:04:05Z`: RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses what [`rfc3339`] writes (UTC, `Z`, whole seconds); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y as i64, mo as i64, d as i64)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60 + se))
}

// Howard Hinnant's algorithms (proleptic Gregorian calendar, days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `3d4h`, `2h5m`, `4m10s`, `7s`: how long ago, as status tables show it.
pub fn age(since: SystemTime, now: SystemTime) -> String {
    let s = now.duration_since(since).unwrap_or_default().as_secs();
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The `brindlectl bgp peers` table: a row per peer and address family (as `cilium bgp
/// peers` has it), the peer's columns on its first row only.
pub fn peers_table(peers: &[BgpPeer], now: SystemTime) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for p in peers {
        let mut first = vec![
            p.address.clone(),
            p.asn.to_string(),
            p.state.clone(),
            parse_rfc3339(&p.since)
                .map(|t| age(t, now))
                .unwrap_or_else(|| p.since.clone()),
            if p.info.is_empty() {
                "-".to_string()
            } else {
                p.info.clone()
            },
        ];
        let counts = |family: &str, r: usize, a: usize, d: usize| {
            vec![
                family.to_string(),
                r.to_string(),
                a.to_string(),
                d.to_string(),
            ]
        };
        match p.families.split_first() {
            // An older speaker: totals only.
            None => {
                first.extend(counts("-", p.received, p.accepted, p.advertised));
                rows.push(first);
            }
            Some((head, rest)) => {
                first.extend(counts(
                    &head.family,
                    head.received,
                    head.accepted,
                    head.advertised,
                ));
                rows.push(first);
                for f in rest {
                    let mut row = vec![String::new(); 5];
                    row.extend(counts(&f.family, f.received, f.accepted, f.advertised));
                    rows.push(row);
                }
            }
        }
    }
    crate::ctl::table(
        &[
            "PEER ADDRESS",
            "ASN",
            "STATE",
            "SINCE",
            "INFO",
            "FAMILY",
            "RECEIVED",
            "ACCEPTED",
            "ADVERTISED",
        ],
        &rows,
    )
}

/// The `brindlectl bgp routes` table: best routes marked `*`, the others with why they lost.
pub fn routes_table(routes: &[BgpRoute]) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let path: Vec<String> = r.as_path.iter().map(ToString::to_string).collect();
            vec![
                r.prefix.clone(),
                if r.best { "*" } else { "" }.to_string(),
                if r.next_hops.is_empty() {
                    "-".to_string()
                } else {
                    r.next_hops.join(",")
                },
                r.source.clone(),
                if path.is_empty() {
                    "-".to_string()
                } else {
                    path.join(" ")
                },
                if r.reason.is_empty() {
                    "-".to_string()
                } else {
                    r.reason.clone()
                },
            ]
        })
        .collect();
    crate::ctl::table(
        &["PREFIX", "BEST", "NEXT HOPS", "SOURCE", "AS PATH", "REASON"],
        &rows,
    )
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, body: Vec<u8>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Answers one request of the BGP status paths from `speaker` (brindle-bgpd's socket, and
/// brindle-node's API socket in BGP mode).
pub async fn handle(speaker: SpeakerHandle, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let unavailable = |e: brindle_bgp::speaker::SpeakerError| {
        respond(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&serde_json::json!({ "error": e.to_string() })).unwrap_or_default(),
        )
    };
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, PATH_BGP_PEERS) => match speaker.peers().await {
            Ok(peers) => {
                let body: Vec<BgpPeer> = peers.iter().map(peer_json).collect();
                respond(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
            }
            Err(e) => unavailable(e),
        },
        (&Method::GET, PATH_BGP_ROUTES) => match speaker.routes().await {
            Ok(routes) => {
                let body: Vec<BgpRoute> = routes.iter().map(route_json).collect();
                respond(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
            }
            Err(e) => unavailable(e),
        },
        (_, path) => respond(
            StatusCode::NOT_FOUND,
            serde_json::to_vec(&serde_json::json!({
                "error": format!("no such endpoint: {path} (try {PATH_BGP_PEERS} or {PATH_BGP_ROUTES})")
            }))
            .unwrap_or_default(),
        ),
    };
    Ok(resp)
}

/// Serves the BGP status endpoints until the listener fails.
pub async fn serve(listener: UnixListener, speaker: SpeakerHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the status socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let speaker = speaker.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(speaker.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for secs in [
            0u64,
            951_782_400,
            1_795_420_800,
            1_795_424_645,
            4_102_444_799,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let text = rfc3339(t);
            assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_424_645)),
            "2026-11-23T09:04:05Z"
        );
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn ages_read_like_kubectl() {
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| age(t, t + Duration::from_secs(s));
        assert_eq!(at(7), "7s");
        assert_eq!(at(250), "4m10s");
        assert_eq!(at(7500), "2h5m");
        assert_eq!(at(3 * 86_400 + 4 * 3600), "3d4h");
    }

    #[test]
    fn peers_table_has_the_columns_users_expect() {
        let peer = BgpPeer {
            address: "10.0.0.2".into(),
            asn: 64513,
            state: "Active".into(),
            since: "2026-11-23T08:00:00Z".into(),
            info: "TCP connection failed: connection refused".into(),
            received: 0,
            accepted: 0,
            advertised: 0,
            peer_type: "global".into(),
            families: Vec::new(),
            transitions: 4,
            established_transitions: 0,
        };
        let both = BgpPeer {
            address: "10.0.0.3".into(),
            state: "Established".into(),
            info: String::new(),
            received: 7,
            accepted: 6,
            advertised: 2,
            families: vec![
                BgpFamilyCounts {
                    family: "ipv4-unicast".into(),
                    received: 5,
                    accepted: 4,
                    advertised: 1,
                },
                BgpFamilyCounts {
                    family: "ipv6-unicast".into(),
                    received: 2,
                    accepted: 2,
                    advertised: 1,
                },
            ],
            ..peer.clone()
        };
        let now = parse_rfc3339("2026-11-23T08:01:05Z").expect("time");
        let out = peers_table(&[peer, both], now);
        let mut lines = out.lines();
        let head = lines.next().expect("header");
        for col in [
            "PEER ADDRESS",
            "ASN",
            "STATE",
            "SINCE",
            "INFO",
            "FAMILY",
            "RECEIVED",
            "ACCEPTED",
            "ADVERTISED",
        ] {
            assert!(head.contains(col), "{head}");
        }
        let row = lines.next().expect("row");
        assert!(row.contains("10.0.0.2") && row.contains("1m5s") && row.contains("refused"));
        let words = |l: &str| -> Vec<String> { l.split_whitespace().map(String::from).collect() };
        let v4 = words(lines.next().expect("v4 row"));
        assert_eq!(v4[..2], ["10.0.0.3", "64513"]);
        assert_eq!(v4[v4.len() - 4..], ["ipv4-unicast", "5", "4", "1"]);
        // The second family of the same peer: only the counts.
        assert_eq!(
            words(lines.next().expect("v6 row")),
            ["ipv6-unicast", "2", "2", "1"]
        );
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn json_has_exactly_the_agreed_keys() {
        use brindle_bgp::fsm::State;
        use brindle_bgp::rib::PeerId;
        let peer = PeerStatus {
            address: "10.0.0.2".parse().expect("address"),
            asn: 64513,
            state: State::OpenConfirm,
            since: UNIX_EPOCH + Duration::from_secs(1_795_424_645),
            info: "OPEN received, waiting for KEEPALIVE".into(),
            received: 3,
            accepted: 2,
            advertised: 1,
            end_of_rib: false,
            peer_type: brindle_bgp::speaker::PeerType::NodeToNodeMesh,
            families: vec![brindle_bgp::speaker::FamilyCounts {
                family: AddressFamily::Ipv4Unicast,
                received: 3,
                accepted: 2,
                advertised: 1,
            }],
            transitions: 5,
            established_transitions: 1,
        };
        let v = serde_json::to_value(peer_json(&peer)).expect("json");
        assert_eq!(
            keys(&v),
            [
                "accepted",
                "address",
                "advertised",
                "asn",
                "established_transitions",
                "families",
                "info",
                "peer_type",
                "received",
                "since",
                "state",
                "transitions"
            ]
        );
        assert_eq!(v["peer_type"], "node-to-node mesh");
        assert_eq!(
            v["families"],
            serde_json::json!([{"family": "ipv4-unicast", "received": 3, "accepted": 2, "advertised": 1}])
        );
        assert_eq!(v["transitions"], 5);
        assert_eq!(v["state"], "OpenConfirm");
        assert_eq!(v["since"], "2026-11-23T09:04:05Z");
        assert_eq!(v["asn"], 64513);

        let route = RouteStatus {
            prefix: "10.1.0.0/24".parse().expect("prefix"),
            next_hops: vec![
                "192.0.2.1".parse().expect("a"),
                "192.0.2.2".parse().expect("b"),
            ],
            source: RouteSource::Peer {
                id: PeerId("192.0.2.1".parse().expect("address")),
                ibgp: false,
                rr_client: false,
            },
            as_path: vec![64513, 64999],
            best: true,
            selection: Selection::Best,
        };
        let v = serde_json::to_value(route_json(&route)).expect("json");
        assert_eq!(
            keys(&v),
            ["as_path", "best", "next_hops", "prefix", "reason", "source"]
        );
        assert_eq!(
            v["next_hops"],
            serde_json::json!(["192.0.2.1", "192.0.2.2"])
        );
        assert_eq!(v["source"], "192.0.2.1");
        assert_eq!(v["as_path"], serde_json::json!([64513, 64999]));
        let local = RouteStatus {
            source: RouteSource::Local,
            next_hops: Vec::new(),
            as_path: Vec::new(),
            best: false,
            selection: Selection::Lost(brindle_bgp::rib::LossReason::AsPathLength),
            ..route
        };
        let v = serde_json::to_value(route_json(&local)).expect("json");
        assert_eq!(v["source"], "local");
        assert_eq!(v["reason"], "lost: longer AS_PATH");
    }

    #[test]
    fn routes_table_marks_the_best_and_says_why_others_lost() {
        let best = BgpRoute {
            prefix: "10.1.0.0/24".into(),
            next_hops: vec!["192.0.2.1".into(), "192.0.2.2".into()],
            source: "192.0.2.1".into(),
            as_path: vec![64513],
            best: true,
            reason: String::new(),
        };
        let lost = BgpRoute {
            next_hops: vec!["192.0.2.3".into()],
            source: "192.0.2.3".into(),
            as_path: vec![64514, 64515],
            best: false,
            reason: "lost: longer AS_PATH".into(),
            ..best.clone()
        };
        let out = routes_table(&[best, lost]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("PREFIX") && lines[0].contains("NEXT HOPS"));
        assert!(lines[1].contains(" * ") && lines[1].contains("192.0.2.1,192.0.2.2"));
        assert!(lines[2].contains("64514 64515") && lines[2].ends_with("lost: longer AS_PATH"));
    }
}
