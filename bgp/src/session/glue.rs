//! Conversions between the wire types of `packet` and the small types of `fsm`.

use crate::fsm::{
    CapabilitySet, Family, GracefulRestart, GracefulRestartFamily, Input, NegotiatedSession,
    NotificationInfo, OpenInfo, OpenParams,
};
use crate::packet::{
    self, codes, Afi, Capability, DecodeContext, DecodeError, EncodeContext, Notification, Open,
    Safi,
};

/// What the FSM needs from a received OPEN. `open.asn` already holds the 4-octet AS
/// capability's value when there is one (RFC 6793 §4.1).
pub(crate) fn open_info(open: &Open) -> OpenInfo {
    let mut caps = CapabilitySet::default();
    for c in &open.capabilities {
        match c {
            Capability::Multiprotocol { afi, safi } => caps.families.push(Family {
                afi: afi.0,
                safi: safi.0,
            }),
            Capability::RouteRefresh => caps.route_refresh = true,
            Capability::FourOctetAs(_) => caps.four_octet_as = true,
            Capability::GracefulRestart {
                restart_state,
                restart_time,
                families,
                ..
            } => {
                caps.graceful_restart = Some(GracefulRestart {
                    restart_state: *restart_state,
                    restart_time: *restart_time,
                    families: families
                        .iter()
                        .map(|f| GracefulRestartFamily {
                            family: Family {
                                afi: f.afi.0,
                                safi: f.safi.0,
                            },
                            forwarding_preserved: f.forwarding_preserved,
                        })
                        .collect(),
                })
            }
            Capability::AddPath(_) | Capability::Unknown { .. } => {}
        }
    }
    OpenInfo {
        version: open.version,
        asn: open.asn,
        hold_time: open.hold_time,
        router_id: open.router_id,
        capabilities: caps,
    }
}

/// The OPEN to send for the FSM's parameters. The encoder puts AS_TRANS in the 2-octet field
/// when the AS does not fit (RFC 6793 §4.1); the config check guarantees the capability then.
pub(crate) fn open_message(params: &OpenParams) -> Open {
    let caps = &params.capabilities;
    let mut capabilities = Vec::new();
    // RFC 4760 §8: none at all means IPv4 unicast only.
    for f in &caps.families {
        capabilities.push(Capability::Multiprotocol {
            afi: Afi(f.afi),
            safi: Safi(f.safi),
        });
    }
    if caps.route_refresh {
        capabilities.push(Capability::RouteRefresh);
    }
    if let Some(gr) = &caps.graceful_restart {
        capabilities.push(Capability::GracefulRestart {
            restart_state: gr.restart_state,
            // RFC 8538 is not implemented.
            notification: false,
            restart_time: gr.restart_time,
            families: gr
                .families
                .iter()
                .map(|f| packet::GracefulRestartFamily {
                    afi: Afi(f.family.afi),
                    safi: Safi(f.family.safi),
                    forwarding_preserved: f.forwarding_preserved,
                })
                .collect(),
        });
    }
    if caps.four_octet_as {
        capabilities.push(Capability::FourOctetAs(params.asn));
    }
    Open {
        version: params.version,
        asn: params.asn,
        hold_time: params.hold_time,
        router_id: params.router_id,
        capabilities,
    }
}

pub(crate) fn notification_info(n: &Notification) -> NotificationInfo {
    NotificationInfo {
        code: n.code,
        subcode: n.subcode,
        data: n.data.clone(),
    }
}

pub(crate) fn notification_message(n: &NotificationInfo) -> Notification {
    Notification::new(n.code, n.subcode, n.data.clone())
}

/// The FSM event for a fatal decode error, carrying its NOTIFICATION. The FSM sends it as given
/// where the message type fits the state, and an FSM Error otherwise (RFC 6608).
pub(crate) fn error_input(e: &DecodeError) -> Input {
    let n = notification_info(&e.notification());
    match n.code {
        codes::code::MESSAGE_HEADER_ERROR => Input::HeaderErr(n),
        codes::code::OPEN_MESSAGE_ERROR => Input::OpenMsgErr(n),
        // UPDATE errors, and a malformed ROUTE-REFRESH (RFC 7313 §5), which like an UPDATE is
        // only valid in Established.
        _ => Input::UpdateMsgErr(n),
    }
}

pub(crate) fn decode_context(n: &NegotiatedSession) -> DecodeContext {
    DecodeContext {
        four_octet_as: n.four_octet_as,
        peer_is_ebgp: !n.ibgp,
        peer_asn: n.peer_asn,
    }
}

pub(crate) fn encode_context(n: &NegotiatedSession) -> EncodeContext {
    EncodeContext {
        four_octet_as: n.four_octet_as,
    }
}

/// Whether the session negotiated `(afi, safi)`.
pub(crate) fn has_family(n: &NegotiatedSession, afi: Afi, safi: Safi) -> bool {
    n.families.contains(&Family {
        afi: afi.0,
        safi: safi.0,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packet::{decode, encode, Message};

    #[test]
    fn open_round_trips_through_the_wire() {
        let params = OpenParams {
            version: 4,
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            capabilities: CapabilitySet {
                four_octet_as: true,
                route_refresh: true,
                graceful_restart: Some(GracefulRestart {
                    restart_state: false,
                    restart_time: 120,
                    families: vec![GracefulRestartFamily {
                        family: Family::IPV4_UNICAST,
                        forwarding_preserved: true,
                    }],
                }),
                families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            },
        };
        let bytes = encode(
            &Message::Open(open_message(&params)),
            &EncodeContext::default(),
        )
        .expect("encodes");
        let Ok(Some((Message::Open(open), _))) = decode(&bytes, &DecodeContext::default()) else {
            panic!("does not decode");
        };
        assert_eq!(open_info(&open), params);
    }

    #[test]
    fn decode_errors_map_to_their_fsm_event() {
        let header: DecodeError = packet::MessageError::BadType { msg_type: 9 }.into();
        assert!(
            matches!(error_input(&header), Input::HeaderErr(n) if n.code == 1 && n.subcode == 3 && n.data == [9])
        );
        let open: DecodeError = packet::MessageError::UnacceptableHoldTime { hold_time: 1 }.into();
        assert!(matches!(error_input(&open), Input::OpenMsgErr(n) if n.subcode == 6));
        let update: DecodeError = packet::MessageError::InvalidNetworkField { reason: "x" }.into();
        assert!(matches!(error_input(&update), Input::UpdateMsgErr(n) if n.code == 3));
    }
}
