//! The RIB's public types: who the peers are, what a route's status is, and what changed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::fsm::Family;
use crate::packet::{Afi, PathAttributes, Safi, Update};

/// The degree of preference of a route without LOCAL_PREF: eBGP-learned routes (whose
/// LOCAL_PREF is ignored, RFC 4271 §5.1.5), iBGP routes that lack it, and local routes. BIRD
/// and GoBGP use 100 too.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// A peer, identified by its address (one session per peer address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub IpAddr);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub address: IpAddr,
    /// The peer's BGP Identifier; replaced by the one from its OPEN at [`super::Rib::peer_up`].
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// The peer is in our AS.
    pub ibgp: bool,
    /// The peer is a route-reflector client (RFC 4456): iBGP routes are reflected to it, and
    /// its routes to every iBGP peer ([`super::should_export`]).
    pub rr_client: bool,
    /// Our address on the session: the next hop we announce for ourselves ("next-hop self").
    pub local_address: IpAddr,
    /// The IPv6 next hop to announce for IPv6 routes when the session runs over IPv4 (BIRD's
    /// `next hop address`). `None`: the IPv4-mapped form of `local_address` (RFC 4291
    /// §2.5.5.2), which is what GoBGP sends; a peer that cannot resolve it will not use the
    /// routes. IPv4 routes over an IPv6 session would need RFC 8950 and are not exported.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// eBGP: learned routes keep their next hop (BIRD's `next hop keep`) instead of ours.
    pub next_hop_keep: bool,
}

impl PeerInfo {
    pub fn id(&self) -> PeerId {
        PeerId(self.address)
    }

    /// The next hop we announce for ourselves to this peer in `family`, if there is one.
    pub fn next_hop_self(&self, family: AddressFamily) -> Option<IpAddr> {
        match (family, self.local_address) {
            (AddressFamily::Ipv4Unicast, IpAddr::V4(a)) => Some(IpAddr::V4(a)),
            (AddressFamily::Ipv4Unicast, IpAddr::V6(_)) => None,
            (AddressFamily::Ipv6Unicast, IpAddr::V6(a)) => Some(IpAddr::V6(a)),
            (AddressFamily::Ipv6Unicast, IpAddr::V4(a)) => Some(IpAddr::V6(
                self.next_hop_v6.unwrap_or_else(|| a.to_ipv6_mapped()),
            )),
        }
    }
}

/// The local speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalInfo {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// The route-reflection cluster (RFC 4456 §7): prepended to CLUSTER_LIST of reflected
    /// routes and checked against received ones; `None` means the router ID.
    pub cluster_id: Option<Ipv4Addr>,
}

/// The families the RIB holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl AddressFamily {
    pub const ALL: [AddressFamily; 2] = [AddressFamily::Ipv4Unicast, AddressFamily::Ipv6Unicast];

    pub fn of(prefix: &IpNet) -> Self {
        match prefix {
            IpNet::V4(_) => AddressFamily::Ipv4Unicast,
            IpNet::V6(_) => AddressFamily::Ipv6Unicast,
        }
    }

    /// The RIB family of a negotiated family; `None` for one the RIB does not hold.
    pub fn from_family(f: Family) -> Option<Self> {
        match f {
            Family::IPV4_UNICAST => Some(AddressFamily::Ipv4Unicast),
            Family::IPV6_UNICAST => Some(AddressFamily::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn afi_safi(self) -> (Afi, Safi) {
        match self {
            AddressFamily::Ipv4Unicast => (Afi::IPV4, Safi::UNICAST),
            AddressFamily::Ipv6Unicast => (Afi::IPV6, Safi::UNICAST),
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            AddressFamily::Ipv4Unicast => 0,
            AddressFamily::Ipv6Unicast => 1,
        }
    }

    pub(crate) fn matches(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (AddressFamily::Ipv4Unicast, IpAddr::V4(_))
                | (AddressFamily::Ipv6Unicast, IpAddr::V6(_))
        )
    }
}

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// Originated by this speaker ([`super::Rib::originate`]).
    Local,
    Peer {
        id: PeerId,
        /// Learned over iBGP.
        ibgp: bool,
        /// Learned from a route-reflector client (RFC 4456).
        rr_client: bool,
    },
}

impl RouteSource {
    pub fn peer(&self) -> Option<PeerId> {
        match self {
            RouteSource::Local => None,
            RouteSource::Peer { id, .. } => Some(*id),
        }
    }
}

/// Why a route cannot be used at all. It stays in the Adj-RIB-In so status can show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ineligibility {
    /// Our AS is in the AS_PATH (RFC 4271 §9.1.2).
    AsLoop,
    /// ORIGINATOR_ID is our router ID (RFC 4456 §8).
    OriginatorIdLoop,
    /// Our cluster ID is in the CLUSTER_LIST (RFC 4456 §8).
    ClusterLoop,
    /// The next hop is not of the prefix's family (IPv4 routes with IPv6 next hops, RFC 8950,
    /// are not supported).
    UnusableNextHop,
    /// The next hop cannot be reached (RFC 4271 §9.1.2.1), as the owner of the RIB was told
    /// with [`super::Rib::set_next_hop_reachable`].
    UnreachableNextHop,
}

/// The step of the decision process at which a candidate lost to the best route (see
/// `decision.rs` for the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    Ineligible(Ineligibility),
    /// A locally originated route exists for the prefix.
    LocallyOriginated,
    LocalPref,
    AsPathLength,
    Origin,
    Med,
    EbgpOverIbgp,
    RouterId,
    ClusterListLength,
    PeerAddress,
}

/// A candidate's outcome in the decision process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selection {
    Best,
    /// Equal to the best for forwarding (ECMP); behind it on the tie-breaker named.
    Multipath(LossReason),
    Lost(LossReason),
}

/// A Loc-RIB entry for consumers: the best route with the next hops of its multipath group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestRoute {
    /// Every next hop of the multipath group, the best route's first, without duplicates.
    /// Empty for a locally originated route (nothing to install).
    pub next_hops: Vec<IpAddr>,
    pub attrs: Arc<PathAttributes>,
    pub source: RouteSource,
}

/// One prefix whose best route changed. `new: None`: no route left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestChange {
    pub prefix: IpNet,
    pub new: Option<BestRoute>,
    /// The next hops to install differ from before (no route and a local route both count as
    /// none): what a forwarding consumer needs to act on; the other changes are attributes.
    pub next_hops_changed: bool,
}

/// What one RIB operation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibChanges {
    /// Best-route changes in prefix order, for the dataplane.
    pub best: Vec<BestChange>,
    /// UPDATEs to send, per established peer, each under 4096 octets for that session.
    pub per_peer_out: BTreeMap<PeerId, Vec<Update>>,
}

impl RibChanges {
    pub fn is_empty(&self) -> bool {
        self.best.is_empty() && self.per_peer_out.is_empty()
    }
}

/// One candidate of a prefix, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub source: RouteSource,
    pub attrs: Arc<PathAttributes>,
    pub next_hop: Option<IpAddr>,
    pub selection: Selection,
}

/// A prefix and its candidates: the best first, then the rest of its multipath group, then
/// the losers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub prefix: IpNet,
    pub candidates: Vec<Candidate>,
}

/// Route counts of one peer, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Prefixes in its Adj-RIB-In.
    pub received: usize,
    /// Of those, the ones eligible for the decision process.
    pub accepted: usize,
    /// Prefixes in its Adj-RIB-Out.
    pub advertised: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RibError {
    #[error("peer {0} is not configured")]
    UnknownPeer(PeerId),
    #[error("peer {0} is already configured")]
    PeerExists(PeerId),
    #[error("peer {0} has no established session")]
    PeerNotUp(PeerId),
}

impl fmt::Display for Ineligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ineligibility::AsLoop => "AS loop: our AS is in the AS_PATH",
            Ineligibility::OriginatorIdLoop => "ORIGINATOR_ID is our router ID",
            Ineligibility::ClusterLoop => "our cluster ID is in the CLUSTER_LIST",
            Ineligibility::UnusableNextHop => "next hop of another address family",
            Ineligibility::UnreachableNextHop => "next hop unreachable",
        })
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::Ineligible(why) => write!(f, "ineligible: {why}"),
            LossReason::LocallyOriginated => f.write_str("locally originated route preferred"),
            LossReason::LocalPref => f.write_str("lower LOCAL_PREF"),
            LossReason::AsPathLength => f.write_str("longer AS_PATH"),
            LossReason::Origin => f.write_str("worse ORIGIN"),
            LossReason::Med => f.write_str("higher MED"),
            LossReason::EbgpOverIbgp => f.write_str("iBGP route, eBGP preferred"),
            LossReason::RouterId => f.write_str("higher router ID"),
            LossReason::ClusterListLength => f.write_str("longer CLUSTER_LIST"),
            LossReason::PeerAddress => f.write_str("higher peer address"),
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::Best => f.write_str("best"),
            Selection::Multipath(why) => write!(f, "multipath (behind the best: {why})"),
            Selection::Lost(why) => write!(f, "lost: {why}"),
        }
    }
}
