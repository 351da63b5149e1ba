//! Brindle's BGP speaker.
//!
//! The wire layer (`packet/`, the only module that uses bgp-rs) and the pure per-peer state
//! machine (`fsm`) are here; the RIB (`rib`), the per-session driver (`session`) and the speaker
//! task (`speaker`) are being built (issue #3). The crate emits route intents and consumes
//! originated routes through channels and never touches netlink or the datastore.

pub mod fsm;
pub mod packet;
pub mod rib;

/// The TCP port BGP listens on (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// The AS number Brindle uses when neither BGPConfiguration nor the Node sets one (Calico's).
pub const DEFAULT_ASN: u32 = 64512;
