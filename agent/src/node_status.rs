//! `brindlectl node status`: what `calicoctl node status` prints (the process line, then a
//! table of BGP peers per address family), read from the agent's socket (or brindle-bgpd's).
//!
//! ```text
//! Brindle process is running.
//!
//! IPv4 BGP status
//! +--------------+-------------------+-------+----------+----------------------------+
//! | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |            INFO            |
//! +--------------+-------------------+-------+----------+----------------------------+
//! | 10.0.1.2     | node-to-node mesh | up    | 09:16:37 | Established                |
//! | 10.0.1.3     | global            | start | 09:16:40 | Active: connection refused |
//! +--------------+-------------------+-------+----------+----------------------------+
//!
//! IPv6 BGP status
//! No IPv6 peers found.
//! ```
//!
//! STATE is BIRD's protocol state, as calicoctl shows it: `up` when the session is
//! Established, `start` while it is being brought up. SINCE is the time of the last state
//! change, `HH:MM:SS` when it was less than 20 hours ago, else `YYYY-MM-DD` (BIRD's format), in
//! UTC. INFO is `Established`, or the BGP state and why the session is not up.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::api::{BgpPeer, PATH_BGP_PEERS, PATH_STATUS};
use crate::bgp_status::{parse_rfc3339, rfc3339};

/// What the socket answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Nothing answers on the socket.
    NotRunning { reason: String },
    /// The process answers but runs no BGP speaker (`GET /bgp/peers` is 404).
    NoSpeaker,
    /// The process and its speaker answer.
    Peers(Vec<BgpPeer>),
}

/// Asks the process behind `socket`: `GET /v1/status` tells whether it runs (any HTTP answer
/// will do, so brindle-bgpd, which serves only `/bgp/*`, counts), `GET /bgp/peers` its peers.
pub fn fetch(socket: &Path) -> Result<NodeStatus, String> {
    if let Err(e) = crate::server::get_over_socket(socket, PATH_STATUS) {
        return Ok(NodeStatus::NotRunning {
            reason: format!("{}: {e}", socket.display()),
        });
    }
    let (code, body) = crate::server::get_over_socket(socket, PATH_BGP_PEERS)
        .map_err(|e| format!("asking {} for BGP peers: {e}", socket.display()))?;
    match code {
        200 => serde_json::from_slice(&body)
            .map(NodeStatus::Peers)
            .map_err(|e| format!("{} answered malformed BGP peers: {e}", socket.display())),
        404 => Ok(NodeStatus::NoSpeaker),
        _ => Err(format!(
            "{} answered {code} for BGP peers: {}",
            socket.display(),
            String::from_utf8_lossy(&body).trim()
        )),
    }
}

/// One row of the table, also the `-o json` form of a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    pub peer_address: String,
    pub peer_type: String,
    /// `up` or `start` (BIRD's protocol state).
    pub state: String,
    /// As the table shows it: `HH:MM:SS` or `YYYY-MM-DD`.
    pub since: String,
    /// `Established`, or the BGP state and why the session is not up.
    pub info: String,
    /// The RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub bgp_state: String,
    /// When the session entered `bgp_state`, RFC 3339 in UTC.
    pub since_time: String,
}

/// `brindlectl node status -o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    /// The process behind the socket answers.
    pub running: bool,
    /// It runs a BGP speaker.
    pub bgp_running: bool,
    /// Why the process is taken as not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ipv4: Vec<StatusRow>,
    pub ipv6: Vec<StatusRow>,
}

/// BIRD's protocol state for a BGP state, as calicoctl's STATE column shows it.
pub fn bird_state(bgp_state: &str) -> &'static str {
    if bgp_state == "Established" {
        "up"
    } else {
        "start"
    }
}

/// BIRD's time format (`{"%T", "%F", 20h}`): the time of day if `since` was less than 20
/// hours before `now`, else the date.
pub fn since_text(since: SystemTime, now: SystemTime) -> String {
    let text = rfc3339(since);
    let recent = now.duration_since(since).unwrap_or_default() < Duration::from_secs(20 * 3600);
    if recent {
        text[11..19].to_string()
    } else {
        text[..10].to_string()
    }
}

/// What the speaker says while a session is on its way up without a failure to report; the
/// state alone says as much.
const PROGRESS: [&str; 5] = [
    "idle",
    "connecting",
    "waiting for the peer to connect",
    "OPEN sent, waiting for the peer's OPEN",
    "OPEN received, waiting for KEEPALIVE",
];

/// The INFO column: `Established`, the state alone while there is nothing to explain
/// (`Connect`, `Passive`), else the state and the reason (`Active: connection refused`,
/// `Idle: bad peer AS: expected 65002, got 65009`).
pub fn info_text(bgp_state: &str, info: &str) -> String {
    if info.is_empty() {
        return bgp_state.to_string();
    }
    if info.starts_with("passive:") {
        return "Passive".to_string();
    }
    if PROGRESS.contains(&info) {
        return bgp_state.to_string();
    }
    // The table is narrow; the socket's words say enough (`bgp peers` has the full text).
    let info = info.strip_prefix("TCP connection failed: ").unwrap_or(info);
    format!("{bgp_state}: {info}")
}

/// A peer as a row of the table.
pub fn row(p: &BgpPeer, now: SystemTime) -> StatusRow {
    StatusRow {
        peer_address: p.address.clone(),
        peer_type: p.peer_type.clone(),
        state: bird_state(&p.state).to_string(),
        since: parse_rfc3339(&p.since)
            .map(|t| since_text(t, now))
            .unwrap_or_else(|| p.since.clone()),
        info: info_text(&p.state, &p.info),
        bgp_state: p.state.clone(),
        since_time: p.since.clone(),
    }
}

fn is_ipv6(p: &BgpPeer) -> bool {
    p.address.contains(':')
}

/// The `-o json` document.
pub fn json(status: &NodeStatus, now: SystemTime) -> StatusJson {
    let rows = |v6: bool| -> Vec<StatusRow> {
        match status {
            NodeStatus::Peers(peers) => peers
                .iter()
                .filter(|p| is_ipv6(p) == v6)
                .map(|p| row(p, now))
                .collect(),
            _ => Vec::new(),
        }
    };
    StatusJson {
        running: !matches!(status, NodeStatus::NotRunning { .. }),
        bgp_running: matches!(status, NodeStatus::Peers(_)),
        error: match status {
            NodeStatus::NotRunning { reason } => Some(reason.clone()),
            _ => None,
        },
        ipv4: rows(false),
        ipv6: rows(true),
    }
}

/// The text calicoctl prints, ending with an empty line.
pub fn render(status: &NodeStatus, now: SystemTime) -> String {
    let peers = match status {
        NodeStatus::NotRunning { .. } => return "Brindle process is not running.\n".to_string(),
        NodeStatus::NoSpeaker => {
            return "Brindle process is running.\n\nThe BGP speaker is not running.\n\n".to_string()
        }
        NodeStatus::Peers(peers) => peers,
    };
    let mut out = String::from("Brindle process is running.\n");
    for (name, v6) in [("IPv4", false), ("IPv6", true)] {
        out.push_str(&format!("\n{name} BGP status\n"));
        let rows: Vec<Vec<String>> = peers
            .iter()
            .filter(|p| is_ipv6(p) == v6)
            .map(|p| {
                let r = row(p, now);
                vec![r.peer_address, r.peer_type, r.state, r.since, r.info]
            })
            .collect();
        if rows.is_empty() {
            out.push_str(&format!("No {name} peers found.\n"));
        } else {
            out.push_str(&bordered_table(
                &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                &rows,
            ));
        }
    }
    out.push('\n');
    out
}

/// A table with `+---+` borders, headers centred and cells left-aligned (calicoctl's
/// tablewriter layout).
pub fn bordered_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w - width(h);
        let left = gap / 2;
        out.push_str(&format!(
            "| {}{h}{} ",
            " ".repeat(left),
            " ".repeat(gap - left)
        ));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for row in rows {
        for (cell, w) in row.iter().zip(&widths) {
            out.push_str(&format!("| {cell}{} ", " ".repeat(w - width(cell))));
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str, peer_type: &str, state: &str, since: &str, info: &str) -> BgpPeer {
        BgpPeer {
            address: address.into(),
            asn: 65002,
            state: state.into(),
            since: since.into(),
            info: info.into(),
            received: 0,
            accepted: 0,
            advertised: 0,
            peer_type: peer_type.into(),
            families: Vec::new(),
            transitions: 0,
            established_transitions: 0,
        }
    }

    fn now() -> SystemTime {
        parse_rfc3339("2026-11-23T10:04:05Z").expect("time")
    }

    /// The whole output for a mixed set of peers, compared with the text a user sees.
    #[test]
    fn table_reads_like_calicoctl() {
        let peers = vec![
            peer(
                "10.0.1.2",
                "node-to-node mesh",
                "Established",
                "2026-11-23T09:16:37Z",
                "",
            ),
            peer(
                "10.0.1.3",
                "node-to-node mesh",
                "Active",
                "2026-11-23T09:16:40Z",
                "TCP connection failed: connection refused",
            ),
            peer(
                "10.0.0.1",
                "global",
                "Established",
                "2026-11-20T08:00:00Z",
                "",
            ),
            peer(
                "10.0.2.1",
                "node specific",
                "Idle",
                "2026-11-23T10:04:00Z",
                "bad peer AS: expected 65002, got 65009",
            ),
            peer(
                "10.0.2.2",
                "global",
                "Connect",
                "2026-11-23T10:04:01Z",
                "connecting",
            ),
        ];
        let expected = "\
Brindle process is running.

IPv4 BGP status
+--------------+-------------------+-------+------------+----------------------------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |   SINCE    |                     INFO                     |
+--------------+-------------------+-------+------------+----------------------------------------------+
| 10.0.1.2     | node-to-node mesh | up    | 09:16:37   | Established                                  |
| 10.0.1.3     | node-to-node mesh | start | 09:16:40   | Active: connection refused                   |
| 10.0.0.1     | global            | up    | 2026-11-20 | Established                                  |
| 10.0.2.1     | node specific     | start | 10:04:00   | Idle: bad peer AS: expected 65002, got 65009 |
| 10.0.2.2     | global            | start | 10:04:01   | Connect                                      |
+--------------+-------------------+-------+------------+----------------------------------------------+

IPv6 BGP status
No IPv6 peers found.

";
        assert_eq!(render(&NodeStatus::Peers(peers), now()), expected);
    }

    #[test]
    fn ipv6_peers_get_their_own_table() {
        let peers = vec![peer(
            "fd00:0:1::2",
            "global",
            "Active",
            "2026-11-23T10:00:00Z",
            "passive: waiting for the peer to connect",
        )];
        let expected = "\
Brindle process is running.

IPv4 BGP status
No IPv4 peers found.

IPv6 BGP status
+--------------+-----------+-------+----------+---------+
| PEER ADDRESS | PEER TYPE | STATE |  SINCE   |  INFO   |
+--------------+-----------+-------+----------+---------+
| fd00:0:1::2  | global    | start | 10:00:00 | Passive |
+--------------+-----------+-------+----------+---------+

";
        assert_eq!(render(&NodeStatus::Peers(peers), now()), expected);
    }

    #[test]
    fn not_running_and_no_speaker_say_so() {
        let down = NodeStatus::NotRunning {
            reason: "/run/x.sock: No such file or directory".into(),
        };
        assert_eq!(render(&down, now()), "Brindle process is not running.\n");
        assert_eq!(
            render(&NodeStatus::NoSpeaker, now()),
            "Brindle process is running.\n\nThe BGP speaker is not running.\n\n"
        );
        let j = json(&down, now());
        assert!(!j.running && !j.bgp_running);
        assert_eq!(
            j.error.as_deref(),
            Some("/run/x.sock: No such file or directory")
        );
    }

    /// The speaker's texts for each reason a session is down, as INFO shows them.
    #[test]
    fn info_names_the_reason() {
        for (state, info, shown) in [
            ("Established", "", "Established"),
            ("Connect", "connecting", "Connect"),
            ("Idle", "idle", "Idle"),
            (
                "Active",
                "passive: waiting for the peer to connect",
                "Passive",
            ),
            (
                "Active",
                "TCP connection failed: no route to host",
                "Active: no route to host",
            ),
            ("Idle", "hold timer expired", "Idle: hold timer expired"),
            (
                "Idle",
                "NOTIFICATION 6/2 received: Cease (6) / Administrative Shutdown (2)",
                "Idle: NOTIFICATION 6/2 received: Cease (6) / Administrative Shutdown (2)",
            ),
            (
                "Connect",
                "TCP connection failed: connect timed out after 10 s (TCP MD5 is configured: \
                 authentication failure?)",
                "Connect: connect timed out after 10 s (TCP MD5 is configured: authentication \
                 failure?)",
            ),
            (
                "Established",
                "max prefixes 3 exceeded: 5 announced, warning only",
                "Established: max prefixes 3 exceeded: 5 announced, warning only",
            ),
        ] {
            assert_eq!(info_text(state, info), shown);
        }
    }

    #[test]
    fn since_switches_to_the_date_after_20_hours() {
        let t = parse_rfc3339("2026-11-22T14:04:06Z").expect("time");
        assert_eq!(since_text(t, now()), "14:04:06");
        let t = parse_rfc3339("2026-11-22T14:04:05Z").expect("time");
        assert_eq!(since_text(t, now()), "2026-11-22");
    }

    #[test]
    fn json_splits_families_and_keeps_the_bgp_state() {
        let peers = vec![
            peer(
                "10.0.1.2",
                "global",
                "Established",
                "2026-11-23T09:16:37Z",
                "",
            ),
            peer(
                "fd00::2",
                "global",
                "OpenSent",
                "2026-11-23T09:16:37Z",
                "hold timer expired; retrying: OPEN sent, waiting for the peer's OPEN",
            ),
        ];
        let j = json(&NodeStatus::Peers(peers), now());
        assert!(j.running && j.bgp_running && j.error.is_none());
        assert_eq!(j.ipv4.len(), 1);
        assert_eq!(j.ipv4[0].state, "up");
        assert_eq!(j.ipv4[0].info, "Established");
        assert_eq!(j.ipv6[0].bgp_state, "OpenSent");
        assert_eq!(
            j.ipv6[0].info,
            "OpenSent: hold timer expired; retrying: OPEN sent, waiting for the peer's OPEN"
        );
        let text = serde_json::to_string(&j).expect("json");
        let back: StatusJson = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, j);
    }
}
