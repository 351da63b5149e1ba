//! Brindle's BGP speaker.
//!
//! The wire layer (`packet/`, the only module that uses bgp-rs), the pure per-peer state
//! machine (`fsm`) and its tokio driver (`session`) are here; the RIB (`rib`) and the speaker
//! task (`speaker`) are being built (issue #3). The crate emits route intents and consumes
//! originated routes through channels and never touches netlink or the datastore.

pub mod fsm;
pub mod packet;
pub mod rib;
pub mod session;

/// The TCP port BGP listens on (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// The AS number Brindle uses when neither BGPConfiguration nor the Node sets one (Calico's).
pub const DEFAULT_ASN: u32 = 64512;
