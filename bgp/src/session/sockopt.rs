//! Socket options tokio and socket2 do not offer: TCP MD5 signatures (RFC 2385) and the
//! minimum TTL of GTSM (RFC 5082).
//!
//! The workspace denies `unsafe` code. nix's `sockopt_impl!` is its documented way of
//! declaring a socket option it does not know; the one `setsockopt(2)` call it expands to is
//! nix's, checked against the option's value type, so this module holds only the layouts.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;

use nix::setsockopt_impl;
use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::SetStruct;

/// `struct tcp_md5sig` (linux/tcp.h): a `sockaddr_storage` (128 octets), flags, prefix
/// length, key length, interface index, and an 80-octet key. Kept as bytes: the kernel copies
/// it, so no alignment is needed, and no field is read back.
type TcpMd5SigBytes = [u8; TCP_MD5SIG_LEN];
const TCP_MD5SIG_LEN: usize = 128 + 1 + 1 + 2 + 4 + TCP_MD5SIG_MAXKEYLEN;
/// TCP_MD5SIG_MAXKEYLEN (linux/tcp.h).
pub const TCP_MD5SIG_MAXKEYLEN: usize = 80;
/// TCP_MD5SIG_EXT: the same structure, with `tcpm_flags` honoured.
const TCP_MD5SIG_EXT: libc::c_int = 32;
/// TCP_MD5SIG_FLAG_PREFIX: `tcpm_prefixlen` is a prefix length (a key for a whole range).
const TCP_MD5SIG_FLAG_PREFIX: u8 = 1;

#[derive(Clone, Copy, Debug)]
struct TcpMd5Sig;
setsockopt_impl!(
    TcpMd5Sig,
    libc::IPPROTO_TCP,
    libc::TCP_MD5SIG,
    TcpMd5SigBytes,
    SetStruct<'_, TcpMd5SigBytes>
);
#[derive(Clone, Copy, Debug)]
struct TcpMd5SigExt;
setsockopt_impl!(
    TcpMd5SigExt,
    libc::IPPROTO_TCP,
    TCP_MD5SIG_EXT,
    TcpMd5SigBytes,
    SetStruct<'_, TcpMd5SigBytes>
);
#[derive(Clone, Copy, Debug)]
struct MinTtlV4;
setsockopt_impl!(
    MinTtlV4,
    libc::IPPROTO_IP,
    libc::IP_MINTTL,
    libc::c_int,
    SetStruct<'_, libc::c_int>
);
#[derive(Clone, Copy, Debug)]
struct MinHopCountV6;
setsockopt_impl!(
    MinHopCountV6,
    libc::IPPROTO_IPV6,
    libc::IPV6_MINHOPCOUNT,
    libc::c_int,
    SetStruct<'_, libc::c_int>
);

/// Sets (or, with an empty key, removes) the TCP MD5 key for connections with `peer` on
/// `socket`: on a listener before the peer connects, on an outbound socket before connect.
/// `ipv6_socket`: the socket is IPv6, so an IPv4 peer is written as its IPv4-mapped address.
/// `prefix_len`: a key for a whole range (`peer` is then the range's network address).
pub fn set_tcp_md5(
    socket: &impl AsFd,
    ipv6_socket: bool,
    peer: IpAddr,
    prefix_len: Option<u8>,
    key: &[u8],
) -> io::Result<()> {
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {TCP_MD5SIG_MAXKEYLEN} octets"),
        ));
    }
    let mut sig: TcpMd5SigBytes = [0; TCP_MD5SIG_LEN];
    let (peer, prefix_len) = match (peer, ipv6_socket) {
        (IpAddr::V4(v4), true) => (IpAddr::V6(v4.to_ipv6_mapped()), prefix_len.map(|l| l + 96)),
        other => (other.0, prefix_len),
    };
    match peer {
        IpAddr::V4(v4) => {
            // sockaddr_in: family (host order), port 0, address.
            sig[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            sig[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            // sockaddr_in6: family, port 0, flow info 0, address, scope 0.
            sig[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            sig[8..24].copy_from_slice(&v6.octets());
        }
    }
    // Both lengths fit: checked above and at most 80; a prefix at most 128.
    sig[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    sig[136..136 + key.len()].copy_from_slice(key);
    let fd = socket.as_fd();
    let result = match prefix_len {
        None => setsockopt(&fd, TcpMd5Sig, &sig),
        Some(len) => {
            sig[128] = TCP_MD5SIG_FLAG_PREFIX;
            sig[129] = len;
            setsockopt(&fd, TcpMd5SigExt, &sig)
        }
    };
    result.map_err(io::Error::from)
}

/// GTSM (RFC 5082 §3): drop segments that arrived with a TTL (hop limit) below `min`.
pub fn set_min_ttl(socket: &impl AsFd, ipv4: bool, min: u8) -> io::Result<()> {
    let fd = socket.as_fd();
    let value = libc::c_int::from(min);
    let result = if ipv4 {
        setsockopt(&fd, MinTtlV4, &value)
    } else {
        setsockopt(&fd, MinHopCountV6, &value)
    };
    result.map_err(io::Error::from)
}
