//! Brindle's BGP speaker.
//!
//! This crate will hold the wire layer (`packet/`, wrapping bgp-rs), the pure per-peer state
//! machine (`fsm.rs`), the RIB (`rib.rs`) and the speaker task (`speaker.rs`). It emits route
//! intents and consumes originated routes through channels and never touches netlink or the
//! datastore. It is built out by issue #3; the foundation (issue #2) routes with VXLAN from the
//! datastore and does not need it yet.

pub mod fsm;

/// The TCP port BGP listens on (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// The AS number Brindle uses when neither BGPConfiguration nor the Node sets one (Calico's).
pub const DEFAULT_ASN: u32 = 64512;

pub mod packet;
