//! Status views of the speaker's state: peers and routes as `brindlectl bgp` shows them.

use std::net::IpAddr;
use std::time::SystemTime;

use super::{NeighborConfig, PeerStatus, RouteStatus};
use crate::fsm::State;
use crate::rib::{AddressFamily, PeerCounts, Rib, Selection};
use crate::session::SessionStatus;

pub(super) fn peer_status(
    config: &NeighborConfig,
    session: &SessionStatus,
    counts: Option<PeerCounts>,
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
    }
}

/// Why a session is not Established: the last failure while it waits to try again, what it
/// waits for once a connection is open.
fn info(config: &NeighborConfig, session: &SessionStatus) -> String {
    let waiting = match session.state {
        State::Established => return String::new(),
        State::OpenSent => return "OPEN sent, waiting for the peer's OPEN".into(),
        State::OpenConfirm => return "OPEN received, waiting for KEEPALIVE".into(),
        State::Idle => "idle",
        State::Connect => "connecting",
        State::Active if config.passive => "passive: waiting for the peer to connect",
        State::Active => "waiting for the peer to connect",
    };
    match &session.last_error {
        Some(e) => e.clone(),
        None => waiting.into(),
    }
}

pub(super) fn route_status(rib: &Rib) -> Vec<RouteStatus> {
    let mut out = Vec::new();
    for family in AddressFamily::ALL {
        for entry in rib.routes(family) {
            let group: Vec<IpAddr> = rib
                .best(&entry.prefix)
                .map(|b| b.next_hops.clone())
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
