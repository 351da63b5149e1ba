//! Status views of the speaker's state: peers and routes as `brindlectl bgp` shows them.

use std::net::IpAddr;
use std::time::SystemTime;

use super::{FamilyCounts, NeighborConfig, PeerStatus, RouteStatus};
use crate::fsm::State;
use crate::rib::{AddressFamily, PeerCounts, Rib, Selection};
use crate::session::SessionStatus;

/// Counters the speaker task keeps per neighbour, for [`PeerStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Transitions {
    pub(super) all: u64,
    pub(super) established: u64,
}

pub(super) fn peer_status(
    config: &NeighborConfig,
    session: &SessionStatus,
    counts: Option<PeerCounts>,
    families: Vec<FamilyCounts>,
    transitions: Transitions,
    end_of_rib: bool,
) -> PeerStatus {
    let counts = counts.unwrap_or_default();
    // An Instant cannot be printed; its age can be taken from the wall clock.
    let since = SystemTime::now()
        .checked_sub(session.since.elapsed())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    PeerStatus {
        address: config.address,
        asn: config.asn,
        state: session.state,
        since,
        info: info(config, session),
        received: counts.received,
        accepted: counts.accepted,
        advertised: counts.advertised,
        end_of_rib,
        peer_type: config.peer_type,
        families,
        transitions: transitions.all,
        established_transitions: transitions.established,
    }
}

/// Why a session is not Established: the last failure, and what the session is doing about it
/// once it has a connection again ("hold timer expired; retrying: OPEN sent, ...").
fn info(config: &NeighborConfig, session: &SessionStatus) -> String {
    let gtsm;
    let doing = match session.state {
        State::Established => return String::new(),
        // RFC 5082: packets from farther away are dropped without a word, so a connection
        // the peer opened may sit here until the 4-minute OpenSent hold timer.
        State::OpenSent => match config.ttl_security {
            Some(hops) => {
                gtsm = format!(
                    "OPEN sent, waiting for the peer's OPEN (TTL security: a peer more than \
                     {hops} hop{} away is not heard)",
                    if hops == 1 { "" } else { "s" }
                );
                &gtsm
            }
            None => "OPEN sent, waiting for the peer's OPEN",
        },
        State::OpenConfirm => "OPEN received, waiting for KEEPALIVE",
        State::Idle => "idle",
        State::Connect => "connecting",
        State::Active if config.passive => "passive: waiting for the peer to connect",
        State::Active => "waiting for the peer to connect",
    };
    match (&session.last_error, session.state) {
        (None, _) => doing.into(),
        (Some(e), State::OpenSent | State::OpenConfirm) => format!("{e}; retrying: {doing}"),
        (Some(e), _) => e.clone(),
    }
}

pub(super) fn route_status(rib: &Rib) -> Vec<RouteStatus> {
    let mut out = Vec::new();
    for family in AddressFamily::ALL {
        for entry in rib.routes(family) {
            let group: Vec<IpAddr> = rib
                .best(&entry.prefix)
                .map(|b| b.next_hops)
                .unwrap_or_default();
            for c in entry.candidates {
                let best = c.selection == Selection::Best;
                let next_hops = if best {
                    group.clone()
                } else {
                    c.next_hop.into_iter().collect()
                };
                let as_path = c
                    .attrs
                    .as_path
                    .as_ref()
                    .map(|p| {
                        p.segments
                            .iter()
                            .flat_map(|s| s.asns.iter().copied())
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(RouteStatus {
                    prefix: entry.prefix,
                    next_hops,
                    source: c.source,
                    as_path,
                    best,
                    selection: c.selection,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn session(state: State, last_error: Option<&str>) -> SessionStatus {
        SessionStatus {
            peer: "192.0.2.1".parse().expect("address"),
            state,
            since: Instant::now(),
            last_error: last_error.map(str::to_owned),
            negotiated: None,
            local_addr: None,
            messages_in: 0,
            messages_out: 0,
            updates_in: 0,
            updates_out: 0,
        }
    }

    #[test]
    fn info_keeps_the_last_failure_while_retrying() {
        let active = NeighborConfig::new("192.0.2.1".parse().expect("address"), 65001);
        let passive = NeighborConfig {
            passive: true,
            ..active.clone()
        };
        let info = |config: &NeighborConfig, state, err| info(config, &session(state, err));
        assert_eq!(
            info(&active, State::Established, Some("hold timer expired")),
            ""
        );
        assert_eq!(info(&active, State::Connect, None), "connecting");
        assert_eq!(
            info(&passive, State::Active, None),
            "passive: waiting for the peer to connect"
        );
        assert_eq!(
            info(&active, State::Idle, Some("hold timer expired")),
            "hold timer expired"
        );
        assert_eq!(
            info(&active, State::OpenSent, Some("hold timer expired")),
            "hold timer expired; retrying: OPEN sent, waiting for the peer's OPEN"
        );
        let gtsm = NeighborConfig {
            ttl_security: Some(1),
            ..active.clone()
        };
        assert_eq!(
            info(&gtsm, State::OpenSent, None),
            "OPEN sent, waiting for the peer's OPEN (TTL security: a peer more than 1 hop away \
             is not heard)"
        );
        assert_eq!(
            info(&active, State::OpenConfirm, None),
            "OPEN received, waiting for KEEPALIVE"
        );
    }
}
