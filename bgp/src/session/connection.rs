//! One TCP connection of a session: the connect, and the reader and writer child tasks.
//!
//! The reader frames and decodes messages and sends them to the session task; the writer owns
//! the write half and writes the frames the session task encoded. Neither holds session state.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::driver::Internal;
use super::CLOSE_LINGER;
use crate::packet::{self, DecodeContext, Message};

/// TTL, GTSM and MD5 settings of a session's sockets.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketOptions {
    pub(crate) ttl: Option<u8>,
    pub(crate) min_ttl: Option<u8>,
    pub(crate) md5_key: Option<super::Md5Key>,
}

impl SocketOptions {
    /// Applies TTL and minimum TTL to an accepted connection (its MD5 key comes from the
    /// listener).
    pub(crate) fn apply_accepted(&self, socket: &impl AsFd, ipv4: bool) -> io::Result<()> {
        if let Some(ttl) = self.ttl {
            set_ttl(socket, ipv4, ttl)?;
        }
        if let Some(min) = self.min_ttl {
            super::sockopt::set_min_ttl(socket, ipv4, min)?;
        }
        Ok(())
    }
}

/// Opens the session's outbound connection. The error is the text for the down reason.
pub(crate) async fn connect(
    peer: SocketAddr,
    local: Option<IpAddr>,
    options: &SocketOptions,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let socket = if peer.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {}", io_error_text(&e)))?;
    if let Some(local) = local {
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|e| format!("bind to {local}: {}", io_error_text(&e)))?;
    }
    options
        .apply_accepted(&socket, peer.is_ipv4())
        .map_err(|e| format!("set TTL: {e}"))?;
    if let Some(key) = &options.md5_key {
        super::sockopt::set_tcp_md5(&socket, peer.is_ipv6(), peer.ip(), None, key.as_bytes())
            .map_err(|e| format!("set TCP MD5 key: {}", io_error_text(&e)))?;
    }
    match tokio::time::timeout(timeout, socket.connect(peer)).await {
        Err(_) if options.md5_key.is_some() => Err(format!(
            // A key mismatch looks like this: the peer's kernel drops our segments silently.
            "connect timed out after {} s (TCP MD5 is configured: authentication failure?)",
            timeout.as_secs()
        )),
        Err(_) => Err(format!("connect timed out after {} s", timeout.as_secs())),
        Ok(Err(e)) => Err(io_error_text(&e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// IP_TTL, or IPV6_UNICAST_HOPS for an IPv6 socket (eBGP multihop).
pub(crate) fn set_ttl(socket: &impl AsFd, ipv4: bool, ttl: u8) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    if ipv4 {
        sock.set_ttl_v4(u32::from(ttl))
    } else {
        sock.set_unicast_hops_v6(u32::from(ttl))
    }
}

/// The words an operator expects for a socket error.
pub(crate) fn io_error_text(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::HostUnreachable => "no route to host".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::ConnectionReset => "connection reset by peer".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "connection timed out".into(),
        K::AddrNotAvailable => "local address not available".into(),
        K::AddrInUse => "local address in use".into(),
        K::BrokenPipe => "broken pipe".into(),
        K::UnexpectedEof => "connection closed by peer".into(),
        _ => e.to_string(),
    }
}

/// What the session task tells a reader.
#[derive(Debug)]
enum ReaderCtl {
    /// The decode context after the OPEN exchange (4-octet AS, eBGP, peer AS).
    SetContext(DecodeContext),
}

enum WriterMsg {
    Frame(Vec<u8>),
    Close,
}

/// The session task's side of one connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) local_addr: Option<SocketAddr>,
    writer: mpsc::UnboundedSender<WriterMsg>,
    writer_task: AbortHandle,
    // Dropping it tells the reader to stop reporting and drain.
    reader_ctl: Option<mpsc::UnboundedSender<ReaderCtl>>,
}

impl std::fmt::Debug for WriterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterMsg::Frame(b) => write!(f, "Frame({} octets)", b.len()),
            WriterMsg::Close => f.write_str("Close"),
        }
    }
}

impl Connection {
    /// Splits `stream` and starts its reader and writer in the current span.
    pub(crate) fn start(id: u64, stream: TcpStream, tx: mpsc::UnboundedSender<Internal>) -> Self {
        let local_addr = stream.local_addr().ok();
        // BGP messages are small and latency matters more than packet count (KEEPALIVEs).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let (read, write) = stream.into_split();
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let (reader_ctl, ctl_rx) = mpsc::unbounded_channel();
        let writer_task =
            tokio::spawn(run_writer(id, write, writer_rx, tx.clone()).in_current_span())
                .abort_handle();
        tokio::spawn(run_reader(id, read, ctl_rx, tx).in_current_span());
        Connection {
            id,
            local_addr,
            writer,
            writer_task,
            reader_ctl: Some(reader_ctl),
        }
    }

    /// Queues an encoded message.
    pub(crate) fn send(&self, frame: Vec<u8>) {
        // A writer that has stopped has reported why; the frame has nowhere to go.
        let _ = self.writer.send(WriterMsg::Frame(frame));
    }

    /// Releases a reader waiting after an OPEN, with the negotiated decode context.
    pub(crate) fn set_decode_context(&self, ctx: DecodeContext) {
        if let Some(ctl) = &self.reader_ctl {
            let _ = ctl.send(ReaderCtl::SetContext(ctx));
        }
    }

    /// Flushes the queue, shuts the write side down and lets the reader drain, all within
    /// [`CLOSE_LINGER`]. Nothing from this connection reaches the session task afterwards
    /// that it would not ignore.
    fn close(&mut self) {
        self.reader_ctl = None;
        let _ = self.writer.send(WriterMsg::Close);
        let writer = self.writer_task.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_LINGER).await;
            writer.abort();
        });
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

async fn run_writer(
    id: u64,
    mut write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    tx: mpsc::UnboundedSender<Internal>,
) {
    while let Some(msg) = rx.recv().await {
        match msg {
            WriterMsg::Frame(frame) => {
                if let Err(e) = write.write_all(&frame).await {
                    let _ = tx.send(Internal::ConnectionLost {
                        conn: id,
                        detail: format!("write: {}", io_error_text(&e)),
                    });
                    return;
                }
            }
            WriterMsg::Close => break,
        }
    }
    // FIN after everything queued, the NOTIFICATION included.
    let _ = write.shutdown().await;
}

async fn run_reader(
    id: u64,
    mut read: OwnedReadHalf,
    mut ctl: mpsc::UnboundedReceiver<ReaderCtl>,
    tx: mpsc::UnboundedSender<Internal>,
) {
    // Holds at most one partial message (4096 octets, checked by the framing) plus one read.
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    let mut ctx = DecodeContext::default();
    loop {
        // Every whole message in the buffer first.
        loop {
            match packet::decode(&buf, &ctx) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    let is_open = matches!(msg, Message::Open(_));
                    if tx.send(Internal::Received { conn: id, msg }).is_err() {
                        return;
                    }
                    if is_open {
                        // UPDATEs after the OPEN decode with the session's context; wait for it.
                        match ctl.recv().await {
                            Some(ReaderCtl::SetContext(c)) => ctx = c,
                            None => return drain(read).await,
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = tx.send(Internal::DecodeFailed { conn: id, error });
                    // The session task sends the NOTIFICATION and closes; read no further.
                    while ctl.recv().await.is_some() {}
                    return drain(read).await;
                }
            }
        }
        tokio::select! {
            c = ctl.recv() => match c {
                Some(ReaderCtl::SetContext(c)) => ctx = c,
                None => return drain(read).await,
            },
            r = read.read(&mut chunk) => match r {
                Ok(0) => {
                    let detail = if buf.is_empty() {
                        "connection closed by peer".to_string()
                    } else {
                        format!("connection closed by peer within a message ({} octets)", buf.len())
                    };
                    let _ = tx.send(Internal::ConnectionLost { conn: id, detail });
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    let detail = io_error_text(&e);
                    let _ = tx.send(Internal::ConnectionLost { conn: id, detail });
                    return;
                }
            },
        }
    }
}

/// Reads and discards until the peer closes, for at most [`CLOSE_LINGER`]. Closing a socket
/// with unread data makes the kernel send a RST, which can destroy our NOTIFICATION before
/// the peer has read it.
async fn drain(mut read: OwnedReadHalf) {
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(n) = read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
