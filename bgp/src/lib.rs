//! Brindle's BGP speaker.
//!
//! ```text
//!  speaker   one task: the RIB, a session per neighbour, the listener; RouteChange stream out
//!   ├─ rib      Adj-RIBs-In, Loc-RIB (decision, ECMP groups), Adj-RIBs-Out; pure
//!   └─ session  tokio driver of one peer: TCP, codec, timers
//!        ├─ fsm     RFC 4271 §8 state machine; pure
//!        └─ packet  wire codec (the only module that uses bgp-rs), RFC 7606 classification
//! ```
//!
//! Start with [`speaker::start`]: it returns a [`speaker::SpeakerHandle`] (originate, withdraw,
//! neighbours, status, shutdown) and the stream of best-route changes for the dataplane. The
//! crate emits route intents and consumes originated routes through channels and never touches
//! netlink or the datastore.

pub mod fsm;
pub mod packet;
pub mod rib;
pub mod session;
pub mod speaker;

/// The TCP port BGP listens on (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// The AS number Brindle uses when neither BGPConfiguration nor the Node sets one (Calico's).
pub const DEFAULT_ASN: u32 = 64512;
