//! The rtnetlink client: the only file in Brindle that imports `rtnetlink`.
//!
//! rtnetlink's releases change its builders often, so everything it offers is translated here
//! into the [`Kernel`] trait's vocabulary (plus the few extra operations pod wiring needs), and
//! upgrading it should touch this file alone.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use ipnet::{IpNet, Ipv4Net};
use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};

use super::kernel::{
    Kernel, KernelRoute, LinkState, RouteKind, RouteWrite, VxlanParams, WRITES_IN_FLIGHT,
};
use super::{
    netns, DataplaneError, FdbEntry, KernelEvent, Mac, Neighbor, NextHopResolution, RouteTarget,
    VxlanDevice, RTPROT_BRINDLE,
};

/// `rtm_protocol` of `ip route add` (RTPROT_BOOT); used inside pods, as Calico's routes there.
pub(crate) const RTPROT_BOOT: u8 = 3;

/// A route to write, in more detail than a [`RouteTarget`] (pod-side routes are neither onlink
/// nor ours).
pub(crate) struct RouteSpec<'a> {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub dev: Option<&'a str>,
    pub kind: RouteKind,
    pub scope_link: bool,
    pub onlink: bool,
    pub protocol: u8,
    /// Gateways of a multipath route (RTA_MULTIPATH), when there are several.
    pub multipath: &'a [IpAddr],
}

impl<'a> RouteSpec<'a> {
    pub fn from_target(dst: IpNet, target: &'a RouteTarget) -> Self {
        let mut spec = RouteSpec {
            dst,
            gateway: None,
            dev: None,
            kind: RouteKind::Unicast,
            scope_link: false,
            onlink: false,
            protocol: RTPROT_BRINDLE,
            multipath: &[],
        };
        match target {
            RouteTarget::Blackhole => spec.kind = RouteKind::Blackhole,
            RouteTarget::Device { dev } => {
                spec.dev = Some(dev);
                spec.scope_link = true;
            }
            RouteTarget::ViaOnlink { gw, dev } => {
                spec.gateway = Some(*gw);
                spec.dev = Some(dev);
                spec.onlink = true;
            }
            RouteTarget::Via { gws } => match gws.as_slice() {
                [gw] => spec.gateway = Some(*gw),
                _ => spec.multipath = gws,
            },
        }
        spec
    }
}

/// A rtnetlink connection bound to the network namespace it was created in.
///
/// Clones share the socket. The kernel runs one dump at a time per netlink socket and answers
/// EBUSY to a second one, so every dump holds `dumps` until it has read its last message: the
/// reconciler and concurrent pod ADDs can share a connection.
#[derive(Clone)]
pub(crate) struct NetlinkKernel {
    handle: Handle,
    dumps: Arc<tokio::sync::Mutex<()>>,
    /// A second, plain socket for [`Kernel::write_routes`] (only on connections made in the
    /// current namespace; the others write routes one request at a time).
    batch: Option<Arc<std::sync::Mutex<BatchSocket>>>,
}

/// Route writes for the kernel in batches: many RTM_NEWROUTE / RTM_DELROUTE messages in one
/// `sendmsg`, only the last asking for an acknowledgement. The kernel handles the messages of
/// a datagram in order and answers only those that fail (plus the last), so a batch costs two
/// system calls instead of two per route, and no per-request bookkeeping. This is what takes
/// 100,000 learned BGP routes into the kernel faster than `ip -batch` (docs/benchmarks.md).
struct BatchSocket {
    socket: rtnetlink::sys::Socket,
    seq: u32,
}

/// Route messages per datagram: their error answers must fit in the receive buffer. (512 and
/// 1,024 were no faster on the kernel benchmark: the kernel's own work per route dominates.)
const BATCH_MESSAGES: usize = 128;

/// One route write, encoded: its message and, for a failure, what it was.
struct EncodedWrite {
    msg: RouteNetlinkMessage,
    flags: u16,
    op: &'static str,
    object: IpNet,
    /// The errno that counts as done (ESRCH for a delete of a route that is gone).
    ok_errno: Option<i32>,
}

impl BatchSocket {
    fn open() -> std::io::Result<Self> {
        use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Error answers without the request's body.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(BatchSocket { socket, seq: 0 })
    }

    /// Sends the writes, [`BATCH_MESSAGES`] a datagram; the result of each, in order.
    fn write(&mut self, writes: &mut [EncodedWrite]) -> Vec<Result<(), DataplaneError>> {
        let mut results = Vec::with_capacity(writes.len());
        let mut buf = Vec::new();
        let mut answer = vec![0u8; 1 << 16];
        for chunk in writes.chunks_mut(BATCH_MESSAGES) {
            let first = self.seq.wrapping_add(1);
            buf.clear();
            let len = chunk.len();
            for (i, w) in chunk.iter_mut().enumerate() {
                self.seq = self.seq.wrapping_add(1);
                let mut header = NetlinkHeader::default();
                header.sequence_number = self.seq;
                header.flags = w.flags | if i + 1 == len { NLM_F_ACK } else { 0 };
                let mut msg = NetlinkMessage::new(
                    header,
                    NetlinkPayload::InnerMessage(std::mem::replace(
                        &mut w.msg,
                        RouteNetlinkMessage::NewRoute(RouteMessage::default()),
                    )),
                );
                msg.finalize();
                let at = buf.len();
                buf.resize(at + msg.buffer_len(), 0);
                msg.serialize(&mut buf[at..]);
            }
            let last = self.seq;
            let mut chunk_results: Vec<Result<(), i32>> = vec![Ok(()); chunk.len()];
            let outcome = self.socket.send(&buf, 0).and_then(|_| loop {
                let n = self.socket.recv(&mut &mut answer[..], 0)?;
                let mut done = false;
                let mut at = 0;
                while at + 16 <= n.min(answer.len()) {
                    let Ok(reply) =
                        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[at..n])
                    else {
                        break;
                    };
                    let len = reply.header.length as usize;
                    let seq = reply.header.sequence_number;
                    if let NetlinkPayload::Error(e) = &reply.payload {
                        let i = seq.wrapping_sub(first) as usize;
                        if let (Some(code), Some(slot)) = (e.code, chunk_results.get_mut(i)) {
                            *slot = Err(-code.get());
                        }
                        done |= seq == last;
                    }
                    if len == 0 {
                        break;
                    }
                    at += (len + 3) & !3;
                }
                if done {
                    return Ok(());
                }
            });
            for (w, r) in chunk.iter().zip(chunk_results) {
                results.push(match (&outcome, r) {
                    (Err(e), _) => Err(DataplaneError::Netlink {
                        op: w.op,
                        object: w.object.to_string(),
                        reason: e.to_string(),
                    }),
                    (Ok(()), Ok(())) => Ok(()),
                    (Ok(()), Err(errno)) if Some(errno) == w.ok_errno => Ok(()),
                    (Ok(()), Err(errno)) => Err(DataplaneError::Netlink {
                        op: w.op,
                        object: w.object.to_string(),
                        reason: std::io::Error::from_raw_os_error(errno).to_string(),
                    }),
                });
            }
            if outcome.is_err() {
                // Answers may still be on their way: a fresh socket for the next batch.
                if let Ok(fresh) = BatchSocket::open() {
                    *self = fresh;
                }
            }
        }
        results
    }
}

fn nl_err(op: &'static str, object: impl ToString, e: rtnetlink::Error) -> DataplaneError {
    DataplaneError::Netlink {
        op,
        object: object.to_string(),
        reason: e.to_string(),
    }
}

/// The errno of a netlink NACK (positive), if `e` is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The RTM_NEWROUTE body for `spec`, `oif` the index of its device if it names one.
fn route_message(spec: &RouteSpec<'_>, oif: Option<u32>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(spec.dst.addr());
    msg.header.destination_prefix_length = spec.dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(spec.protocol);
    msg.header.scope = if spec.scope_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    msg.header.kind = match spec.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Other(k) => RouteType::from(k),
    };
    if spec.onlink {
        msg.header.flags.insert(RouteFlags::Onlink);
    }
    msg.attributes
        .push(RouteAttribute::Destination(route_address(spec.dst.addr())));
    if let Some(gw) = spec.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if !spec.multipath.is_empty() {
        let hops = spec
            .multipath
            .iter()
            .map(|gw| {
                let mut hop = RouteNextHop::default();
                hop.attributes
                    .push(RouteAttribute::Gateway(route_address(*gw)));
                hop
            })
            .collect();
        msg.attributes.push(RouteAttribute::MultiPath(hops));
    }
    if let Some(index) = oif {
        msg.attributes.push(RouteAttribute::Oif(index));
    }
    msg
}

/// The RTM_DELROUTE body that deletes exactly `route`.
fn del_message(route: &KernelRoute) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(route.dst.addr());
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(route.protocol);
    msg.header.tos = route.tos;
    // "Any scope, any type": the protocol, destination and metric pick the route.
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(route.dst.addr())));
    if let Some(metric) = route.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    msg
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn neighbour_address(addr: IpAddr) -> NeighbourAddress {
    match addr {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn to_mac(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

impl NetlinkKernel {
    /// Connects in the current thread's network namespace. Needs a tokio runtime.
    pub fn connect() -> Result<Self, DataplaneError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| DataplaneError::Netlink {
                op: "connect",
                object: "rtnetlink".into(),
                reason: e.to_string(),
            })?;
        tokio::spawn(conn);
        let batch = match BatchSocket::open() {
            Ok(socket) => Some(Arc::new(std::sync::Mutex::new(socket))),
            Err(e) => {
                tracing::debug!(error = %e, "no batch netlink socket; routes are written one by one");
                None
            }
        };
        Ok(NetlinkKernel {
            handle,
            dumps: Arc::default(),
            batch,
        })
    }

    /// Connects inside the network namespace at `path`: the socket is created on a thread that
    /// entered it (see [`netns`]), the connection then runs on the current runtime.
    pub async fn connect_in_netns(path: &str) -> Result<Self, DataplaneError> {
        let ns = netns::open(path)?;
        let runtime = tokio::runtime::Handle::current();
        let created = netns::run_in(path, ns, move || {
            // The socket registers with the runtime's reactor as it is created.
            let _entered = runtime.enter();
            rtnetlink::new_connection().map(|(conn, handle, _)| (conn, handle))
        })
        .await?;
        let (conn, handle) = created.map_err(|e| DataplaneError::Netns {
            path: path.to_string(),
            reason: format!("netlink socket: {e}"),
        })?;
        tokio::spawn(conn);
        Ok(NetlinkKernel {
            handle,
            dumps: Arc::default(),
            batch: None,
        })
    }

    async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>, DataplaneError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err("get link", name, e)),
        }
    }

    /// The ifindex of `name`, or [`DataplaneError::NoSuchInterface`].
    pub async fn link_index(&self, name: &str) -> Result<u32, DataplaneError> {
        match self.link_message(name).await? {
            Some(link) => Ok(link.header.index),
            None => Err(DataplaneError::NoSuchInterface(name.to_string())),
        }
    }

    /// ifindex -> name of every link.
    pub async fn link_names(&self) -> Result<HashMap<u32, String>, DataplaneError> {
        let _dump = self.dumps.lock().await;
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("dump", "links", e))?;
        Ok(links
            .into_iter()
            .filter_map(|l| {
                let name = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })?;
                Some((l.header.index, name))
            })
            .collect())
    }

    /// Creates a veth pair in one request: `host` (MAC `host_mac`) in this namespace and its
    /// peer `peer` (MAC `peer_mac`) directly in the namespace `peer_ns`, both with `mtu`.
    pub async fn create_veth(
        &self,
        host: &str,
        host_mac: Mac,
        peer: &str,
        peer_mac: Mac,
        peer_ns: &File,
        mtu: u32,
    ) -> Result<(), DataplaneError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer)
            .address(peer_mac.to_vec())
            .mtu(mtu)
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .address(host_mac.to_vec())
            .mtu(mtu)
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err("create veth", host, e))
    }

    /// Brings `name` up.
    pub async fn set_link_up(&self, name: &str) -> Result<(), DataplaneError> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl_err("set link up", name, e))
    }

    /// Sets the MAC address of `name`.
    pub async fn set_link_mac(&self, name: &str, mac: Mac) -> Result<(), DataplaneError> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .change(
                LinkUnspec::new_with_index(index)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| nl_err("set link address", name, e))
    }

    /// Every address of every link, with the link's name.
    pub async fn all_addresses(&self) -> Result<Vec<(String, IpNet)>, DataplaneError> {
        let names = self.link_names().await?;
        let _dump = self.dumps.lock().await;
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("dump", "addresses", e))?;
        Ok(addrs
            .iter()
            .filter_map(|m| {
                let name = names.get(&m.header.index)?;
                let net = address_of(m)?;
                Some((name.clone(), net))
            })
            .collect())
    }

    /// The addresses (IPv4 and IPv6) on `dev`.
    pub async fn addresses_on(&self, dev: &str) -> Result<Vec<IpNet>, DataplaneError> {
        let index = self.link_index(dev).await?;
        let _dump = self.dumps.lock().await;
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("dump addresses", dev, e))?;
        Ok(addrs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(address_of)
            .collect())
    }

    /// Writes a route as `spec` describes it.
    pub async fn write_route(
        &self,
        spec: &RouteSpec<'_>,
        replace: bool,
    ) -> Result<(), DataplaneError> {
        let msg = self.route_message(spec).await?;
        let mut req = self.handle.route().add(msg);
        if replace {
            req = req.replace();
        }
        req.execute()
            .await
            .map_err(|e| nl_err("add route", spec.dst, e))
    }

    /// The RTM_NEWROUTE body for `spec` (its device looked up).
    async fn route_message(&self, spec: &RouteSpec<'_>) -> Result<RouteMessage, DataplaneError> {
        let oif = match spec.dev {
            Some(dev) => Some(self.link_index(dev).await?),
            None => None,
        };
        Ok(route_message(spec, oif))
    }

    /// Installs a route of Brindle's (protocol [`RTPROT_BRINDLE`]) for a pod. A route already
    /// holding the key is replaced only if it is ours too; a foreign one is a conflict.
    pub async fn install_own_route(
        &self,
        dst: IpNet,
        target: &RouteTarget,
    ) -> Result<(), DataplaneError> {
        let spec = RouteSpec::from_target(dst, target);
        let err = match self.write_route(&spec, false).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Routes holding the key our add used: this destination, TOS 0, the default metric
        // (none for IPv4; IPv6 gives routes without one 1024, IP6_RT_PRIO_USER).
        let default_metric = if dst.addr().is_ipv6() { 1024 } else { 0 };
        let existing: Vec<KernelRoute> = self
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.dst == dst && r.tos == 0 && r.metric.unwrap_or(0) == default_metric)
            .collect();
        if existing.is_empty() {
            return Err(err);
        }
        if let Some(foreign) = existing.iter().find(|r| r.protocol != RTPROT_BRINDLE) {
            return Err(DataplaneError::Netlink {
                op: "add route",
                object: dst.to_string(),
                reason: format!(
                    "conflicts with a route not installed by Brindle (proto {}, dev {})",
                    foreign.protocol,
                    foreign.dev.as_deref().unwrap_or("-")
                ),
            });
        }
        self.write_route(&spec, true).await
    }

    /// Deletes Brindle's route to `dst` through the interface with index `oif`, if there is one.
    /// Routes of other protocols or through other interfaces are left alone.
    pub async fn delete_own_route_on(&self, dst: IpNet, oif: u32) -> Result<(), DataplaneError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(dst.addr());
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::from(RTPROT_BRINDLE);
        msg.header.scope = RouteScope::NoWhere;
        msg.header.kind = RouteType::Unspec;
        msg.attributes
            .push(RouteAttribute::Destination(route_address(dst.addr())));
        msg.attributes.push(RouteAttribute::Oif(oif));
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(nl_err("delete route", dst, e)),
        }
    }

    /// How the kernel reaches `addr` through a route that is not Brindle's own: the main FIB's
    /// matching route (RTM_F_FIB_MATCH, `ip route get fibmatch`), if it is a unicast route of
    /// another protocol. A next hop reached only through a route Brindle installed does not
    /// count (no recursion through BGP's own routes); neither does a local address.
    pub async fn resolve_without_ours(
        &self,
        addr: IpAddr,
    ) -> Result<NextHopResolution, DataplaneError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(addr);
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.header.flags.insert(RouteFlags::FibMatch);
        msg.attributes
            .push(RouteAttribute::Destination(route_address(addr)));
        let mut replies = self.handle.route().get(msg).execute();
        match replies.try_next().await {
            Ok(Some(route))
                if route.header.kind == RouteType::Unicast
                    && u8::from(route.header.protocol) != RTPROT_BRINDLE =>
            {
                Ok(resolution_of(&route))
            }
            Ok(_) => Ok(NextHopResolution::Unreachable),
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ESRCH)
                ) =>
            {
                Ok(NextHopResolution::Unreachable)
            }
            Err(e) => Err(nl_err("route lookup", addr, e)),
        }
    }

    async fn ack(
        &self,
        op: &'static str,
        object: String,
        req: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<(), DataplaneError> {
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req).map_err(|e| nl_err(op, &object, e))?;
        while let Some(msg) = responses.next().await {
            if let NetlinkPayload::Error(e) = msg.payload {
                return Err(nl_err(op, &object, rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }
}

/// The prefix an address message carries (IFA_LOCAL for IPv4 point-to-point correctness, else
/// IFA_ADDRESS).
fn address_of(m: &AddressMessage) -> Option<IpNet> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    IpNet::new(local.or(address)?, m.header.prefix_len).ok()
}

fn parse_link(msg: &LinkMessage, names: Option<&HashMap<u32, String>>) -> LinkState {
    let mut state = LinkState {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) => state.mac = to_mac(a),
            LinkAttribute::Mtu(m) => state.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                let is_vxlan = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
                if !is_vxlan {
                    continue;
                }
                let mut vx = VxlanParams::default();
                for info in infos {
                    let LinkInfo::Data(InfoData::Vxlan(data)) = info else {
                        continue;
                    };
                    for d in data {
                        match d {
                            InfoVxlan::Id(id) => vx.vni = Some(*id),
                            InfoVxlan::Port(p) => vx.port = Some(*p),
                            InfoVxlan::Local(ip) => vx.local = Some(*ip),
                            InfoVxlan::Learning(l) => vx.learning = Some(*l),
                            InfoVxlan::Link(index) => {
                                vx.parent = names.and_then(|n| n.get(index)).cloned()
                            }
                            _ => {}
                        }
                    }
                }
                state.vxlan = Some(vx);
            }
            _ => {}
        }
    }
    state
}

fn parse_route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<KernelRoute> {
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || msg.header.flags.contains(RouteFlags::Cloned)
    {
        return None;
    }
    let default_dst = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst = default_dst;
    let mut route = KernelRoute {
        dst: IpNet::new(default_dst, 0).ok()?,
        protocol: u8::from(msg.header.protocol),
        tos: msg.header.tos,
        metric: None,
        kind: match msg.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            other => RouteKind::Other(u8::from(other)),
        },
        scope_link: msg.header.scope == RouteScope::Link,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
        gateway: None,
        dev: None,
        multipath: false,
        nexthops: Vec::new(),
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = IpAddr::V4(*a),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = IpAddr::V6(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => route.gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(index) => {
                // An unknown index still makes the route "on a device", just not one we name.
                route.dev = Some(
                    names
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| format!("if{index}")),
                )
            }
            RouteAttribute::Priority(p) => route.metric = Some(*p),
            RouteAttribute::MultiPath(hops) => {
                route.multipath = true;
                route.nexthops = multipath_gateways(hops);
            }
            _ => {}
        }
    }
    route.dst = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(route)
}

/// How the matching route `route` reaches a next hop: on a link of ours (no gateway), or
/// through its gateways (one, or a multipath route's). A multipath route with a next hop
/// that is not a plain gateway counts as connected, as the kernel would pick a device itself.
fn resolution_of(route: &RouteMessage) -> NextHopResolution {
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => {
                return NextHopResolution::Via(vec![IpAddr::V4(*a)])
            }
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => {
                return NextHopResolution::Via(vec![IpAddr::V6(*a)])
            }
            RouteAttribute::MultiPath(hops) => {
                let gws = multipath_gateways(hops);
                if !gws.is_empty() {
                    return NextHopResolution::Via(gws);
                }
            }
            _ => {}
        }
    }
    NextHopResolution::Connected
}

/// The gateways of a multipath route, if every next hop is a plain gateway; else none.
fn multipath_gateways(hops: &[RouteNextHop]) -> Vec<IpAddr> {
    let mut gws = Vec::with_capacity(hops.len());
    for hop in hops {
        if hop.flags.contains(RouteNextHopFlags::Onlink) {
            return Vec::new();
        }
        let gw = hop.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        });
        match gw {
            Some(gw) => gws.push(gw),
            None => return Vec::new(),
        }
    }
    gws
}

fn neighbour_fields(m: &NeighbourMessage) -> (Option<IpAddr>, Option<Mac>) {
    let mut ip = None;
    let mut mac = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            // AF_BRIDGE (FDB) messages carry the remote IP as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(bytes.as_slice())
                        .ok()
                        .map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = to_mac(l),
            _ => {}
        }
    }
    (ip, mac)
}

impl NetlinkKernel {
    async fn neighbour_dump(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, DataplaneError> {
        let _dump = self.dumps.lock().await;
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("dump", format!("neighbours ({family:?})"), e))
    }

    fn neighbour_message(index: u32, family: AddressFamily) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg
    }

    fn fdb_message(index: u32, e: &FdbEntry) -> NeighbourMessage {
        let mut msg = Self::neighbour_message(index, AddressFamily::Bridge);
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(e.dst)));
        msg
    }
}

#[async_trait]
impl Kernel for NetlinkKernel {
    async fn link(&self, name: &str) -> Result<Option<LinkState>, DataplaneError> {
        let Some(msg) = self.link_message(name).await? else {
            return Ok(None);
        };
        // Names are needed only to report a VXLAN device's parent.
        let is_vxlan = msg.attributes.iter().any(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos
                .iter()
                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan))),
            _ => false,
        });
        let names = if is_vxlan {
            Some(self.link_names().await?)
        } else {
            None
        };
        Ok(Some(parse_link(&msg, names.as_ref())))
    }

    async fn create_vxlan(&self, name: &str, dev: &VxlanDevice) -> Result<(), DataplaneError> {
        let parent = self.link_index(&dev.parent).await?;
        let msg = LinkVxlan::new(name, super::VXLAN_VNI)
            .dev(parent)
            .port(super::VXLAN_PORT)
            .local(dev.local_ip)
            .learning(false)
            .address(dev.mac.to_vec())
            .mtu(dev.mtu)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err("create vxlan", name, e))
    }

    async fn delete_link(&self, name: &str) -> Result<(), DataplaneError> {
        let index = self.link_index(name).await?;
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            // Gone in between (deleting a veth's peer deletes it too): what we wanted.
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err("delete link", name, e)),
        }
    }

    async fn set_link_mtu_up(&self, name: &str, mtu: u32) -> Result<(), DataplaneError> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(|e| nl_err("set link", name, e))
    }

    async fn addresses_v4(&self, dev: &str) -> Result<Vec<Ipv4Net>, DataplaneError> {
        Ok(self
            .addresses_on(dev)
            .await?
            .into_iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(n),
                IpNet::V6(_) => None,
            })
            .collect())
    }

    async fn add_address(&self, dev: &str, addr: IpNet) -> Result<(), DataplaneError> {
        let index = self.link_index(dev).await?;
        self.handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("add address", format!("{addr} dev {dev}"), e))
    }

    async fn del_address(&self, dev: &str, addr: IpNet) -> Result<(), DataplaneError> {
        let index = self.link_index(dev).await?;
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(addr.addr());
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.addr()));
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| nl_err("delete address", format!("{addr} dev {dev}"), e))
    }

    async fn routes(&self) -> Result<Vec<KernelRoute>, DataplaneError> {
        let names = self.link_names().await?;
        let _dump = self.dumps.lock().await;
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl_err("dump", format!("routes ({family:?})"), e))?;
            routes.extend(msgs.iter().filter_map(|m| parse_route(m, &names)));
        }
        Ok(routes)
    }

    async fn add_route(
        &self,
        dst: IpNet,
        target: &RouteTarget,
        replace: bool,
    ) -> Result<(), DataplaneError> {
        self.write_route(&RouteSpec::from_target(dst, target), replace)
            .await
    }

    async fn write_routes(&self, writes: Vec<RouteWrite>) -> Vec<Result<(), DataplaneError>> {
        let Some(batch) = self.batch.clone() else {
            let mut results = Vec::with_capacity(writes.len());
            for chunk in writes.chunks(WRITES_IN_FLIGHT) {
                let futures = chunk.iter().map(|w| async move {
                    match w {
                        RouteWrite::Add {
                            dst,
                            target,
                            replace,
                        } => self.add_route(*dst, target, *replace).await,
                        RouteWrite::Delete(route) => self.del_route(route).await,
                    }
                });
                results.extend(futures::future::join_all(futures).await);
            }
            return results;
        };
        // Devices looked up first (BGP's routes name none); what cannot be encoded fails alone.
        // Encoding and writing then happen on a blocking thread, off the runtime that keeps
        // taking the speaker's changes meanwhile.
        let mut oifs: Vec<Result<Option<u32>, DataplaneError>> = Vec::with_capacity(writes.len());
        let mut indexes: HashMap<String, u32> = HashMap::new();
        for w in &writes {
            let dev = match w {
                RouteWrite::Add {
                    target: RouteTarget::Device { dev } | RouteTarget::ViaOnlink { dev, .. },
                    ..
                } => dev,
                _ => {
                    oifs.push(Ok(None));
                    continue;
                }
            };
            if let Some(index) = indexes.get(dev) {
                oifs.push(Ok(Some(*index)));
                continue;
            }
            oifs.push(self.link_index(dev).await.map(|index| {
                indexes.insert(dev.clone(), index);
                Some(index)
            }));
        }
        let count = writes.len();
        let written = tokio::task::spawn_blocking(move || {
            let mut encoded = Vec::with_capacity(writes.len());
            let mut slots: Vec<Result<(), DataplaneError>> = Vec::with_capacity(writes.len());
            for (w, oif) in writes.iter().zip(oifs) {
                let oif = match oif {
                    Ok(oif) => oif,
                    Err(e) => {
                        slots.push(Err(e));
                        continue;
                    }
                };
                slots.push(Ok(()));
                encoded.push(match w {
                    RouteWrite::Add {
                        dst,
                        target,
                        replace,
                    } => EncodedWrite {
                        msg: RouteNetlinkMessage::NewRoute(route_message(
                            &RouteSpec::from_target(*dst, target),
                            oif,
                        )),
                        flags: NLM_F_REQUEST
                            | NLM_F_CREATE
                            | if *replace { NLM_F_REPLACE } else { NLM_F_EXCL },
                        op: "add route",
                        object: *dst,
                        ok_errno: None,
                    },
                    RouteWrite::Delete(route) => EncodedWrite {
                        msg: RouteNetlinkMessage::DelRoute(del_message(route)),
                        flags: NLM_F_REQUEST,
                        op: "delete route",
                        object: route.dst,
                        ok_errno: Some(libc::ESRCH),
                    },
                });
            }
            let written = match batch.lock() {
                Ok(mut socket) => socket.write(&mut encoded),
                Err(_) => Vec::new(),
            };
            let mut written = written.into_iter();
            slots
                .into_iter()
                .zip(&writes)
                .map(|(slot, w)| {
                    slot?;
                    written.next().unwrap_or_else(|| {
                        Err(DataplaneError::Netlink {
                            op: "write route",
                            object: match w {
                                RouteWrite::Add { dst, .. } => dst.to_string(),
                                RouteWrite::Delete(route) => route.dst.to_string(),
                            },
                            reason: "the batch writer stopped".into(),
                        })
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        written.unwrap_or_else(|e| {
            (0..count)
                .map(|_| {
                    Err(DataplaneError::Netlink {
                        op: "write route",
                        object: "batch".into(),
                        reason: format!("the batch writer failed: {e}"),
                    })
                })
                .collect()
        })
    }

    async fn del_route(&self, route: &KernelRoute) -> Result<(), DataplaneError> {
        let msg = del_message(route);
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(nl_err("delete route", route.dst, e)),
        }
    }

    async fn neighbors(&self, dev: &str) -> Result<Vec<Neighbor>, DataplaneError> {
        let index = self.link_index(dev).await?;
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for m in self.neighbour_dump(family).await? {
                if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
                    continue;
                }
                if let (Some(ip), Some(mac)) = neighbour_fields(&m) {
                    out.push(Neighbor {
                        dev: dev.to_string(),
                        ip,
                        mac,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn set_neighbor(&self, n: &Neighbor) -> Result<(), DataplaneError> {
        let index = self.link_index(&n.dev).await?;
        self.handle
            .neighbours()
            .add(index, n.ip)
            .link_layer_address(&n.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("set neighbour", format!("{} dev {}", n.ip, n.dev), e))
    }

    async fn del_neighbor(&self, n: &Neighbor) -> Result<(), DataplaneError> {
        let index = self.link_index(&n.dev).await?;
        let mut msg = Self::neighbour_message(index, family_of(n.ip));
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(n.ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(nl_err(
                "delete neighbour",
                format!("{} dev {}", n.ip, n.dev),
                e,
            )),
        }
    }

    async fn fdb(&self, dev: &str) -> Result<Vec<FdbEntry>, DataplaneError> {
        let index = self.link_index(dev).await?;
        let mut out = Vec::new();
        for m in self.neighbour_dump(AddressFamily::Bridge).await? {
            if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
                continue;
            }
            // Entries without a destination are the device's own address list, and the
            // all-zero MAC is the default-destination entry: neither is ours.
            if let (Some(dst), Some(mac)) = neighbour_fields(&m) {
                if mac != [0; 6] {
                    out.push(FdbEntry {
                        dev: dev.to_string(),
                        mac,
                        dst,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn add_fdb(&self, e: &FdbEntry) -> Result<(), DataplaneError> {
        let index = self.link_index(&e.dev).await?;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(Self::fdb_message(
            index, e,
        )));
        // `bridge fdb append`: another destination for the MAC, not a replacement.
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        self.ack("add fdb", fdb_object(e), req).await
    }

    async fn del_fdb(&self, e: &FdbEntry) -> Result<(), DataplaneError> {
        let index = self.link_index(&e.dev).await?;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelNeighbour(Self::fdb_message(
            index, e,
        )));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        self.ack("delete fdb", fdb_object(e), req).await
    }
}

fn fdb_object(e: &FdbEntry) -> String {
    format!("{} dst {} dev {}", super::format_mac(&e.mac), e.dst, e.dev)
}

/// Receive buffer of the monitoring socket: large enough for the burst of notifications a full
/// pass over thousands of routes causes (the kernel drops the excess and the stream ends).
const MONITOR_RCVBUF: usize = 8 << 20;

/// Subscribes to the kernel's link, neighbour, route and address notifications (what `ip
/// monitor` shows) in the current network namespace. Each notification that may concern the
/// reconciler is reduced to a [`KernelEvent`]; the channel closes if the socket fails (e.g. on a
/// buffer overrun), and the caller then subscribes again and does a full resync.
pub(crate) fn monitor() -> Result<tokio::sync::mpsc::UnboundedReceiver<KernelEvent>, DataplaneError>
{
    use rtnetlink::sys::AsyncSocket;
    use rtnetlink::MulticastGroup as G;
    let err = |e: std::io::Error| DataplaneError::Netlink {
        op: "subscribe",
        object: "rtnetlink multicast groups".into(),
        reason: e.to_string(),
    };
    let (mut conn, handle, mut messages) = rtnetlink::new_multicast_connection(&[
        G::Link,
        G::Neigh,
        G::Ipv4Route,
        G::Ipv6Route,
        G::Ipv4Ifaddr,
        G::Ipv6Ifaddr,
    ])
    .map_err(err)?;
    // Best effort: without a larger buffer an overrun only ends the stream sooner.
    let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(MONITOR_RCVBUF);
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // The connection shuts down once its handle is gone; keep it for the stream's life.
        let _handle = handle;
        while let Some((msg, _)) = messages.next().await {
            if let Some(event) = classify(&msg) {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
        tracing::warn!("kernel notification stream ended");
    });
    Ok(rx)
}

/// What a notification means for the reconciler; `None` for what never concerns it.
fn classify(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    let NetlinkPayload::InnerMessage(inner) = &msg.payload else {
        return None;
    };
    match inner {
        RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
            (u8::from(m.header.protocol) == RTPROT_BRINDLE).then_some(KernelEvent::OwnRoute)
        }
        // A deletion's state is not the entry's (the kernel marks it failed first), so every
        // deletion counts; neighbours are deleted rarely enough for that to be cheap.
        RouteNetlinkMessage::NewNeighbour(m) => {
            (m.header.state == NeighbourState::Permanent).then_some(KernelEvent::PermanentNeighbour)
        }
        RouteNetlinkMessage::DelNeighbour(_) => Some(KernelEvent::PermanentNeighbour),
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
            let name = m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })?;
            Some(KernelEvent::Link {
                name,
                deleted: matches!(inner, RouteNetlinkMessage::DelLink(_)),
            })
        }
        RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => {
            Some(KernelEvent::Address)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(protocol: u8) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = RouteMessage::default();
        m.header.protocol = RouteProtocol::from(protocol);
        NetlinkMessage::from(RouteNetlinkMessage::DelRoute(m))
    }

    fn neighbour(state: NeighbourState, new: bool) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = NeighbourMessage::default();
        m.header.state = state;
        NetlinkMessage::from(if new {
            RouteNetlinkMessage::NewNeighbour(m)
        } else {
            RouteNetlinkMessage::DelNeighbour(m)
        })
    }

    #[test]
    fn notifications_are_reduced_to_what_concerns_brindle() {
        assert_eq!(
            classify(&route(RTPROT_BRINDLE)),
            Some(KernelEvent::OwnRoute)
        );
        assert_eq!(classify(&route(RTPROT_BOOT)), None, "a foreign route");
        assert_eq!(
            classify(&neighbour(NeighbourState::Permanent, true)),
            Some(KernelEvent::PermanentNeighbour)
        );
        assert_eq!(
            classify(&neighbour(NeighbourState::Reachable, true)),
            None,
            "ARP learning elsewhere"
        );
        assert_eq!(
            classify(&neighbour(NeighbourState::Failed, false)),
            Some(KernelEvent::PermanentNeighbour),
            "a deletion, whatever state it reports"
        );
        let mut link = LinkMessage::default();
        link.attributes
            .push(LinkAttribute::IfName(VXLAN_DEVICE_NAME.to_string()));
        assert_eq!(
            classify(&NetlinkMessage::from(RouteNetlinkMessage::DelLink(link))),
            Some(KernelEvent::Link {
                name: VXLAN_DEVICE_NAME.to_string(),
                deleted: true
            })
        );
        assert_eq!(
            classify(&NetlinkMessage::from(RouteNetlinkMessage::NewAddress(
                AddressMessage::default()
            ))),
            Some(KernelEvent::Address)
        );
    }

    const VXLAN_DEVICE_NAME: &str = super::super::VXLAN_DEVICE;
}
