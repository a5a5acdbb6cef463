//! What one client connection may hold of a gRPC listener, so that no
//! client (garbage, a half-open connection, a slow or absent reader) can
//! stall or starve the others. [`ConnectionLimits`]:
//!
//! - **The TLS handshake within `tls_handshake`** (10 s,
//!   `manul_tls::accept::HANDSHAKE_TIMEOUT`), each in its own task, so a
//!   silent client holds up no one else.
//! - **The HTTP/2 preface within `handshake`** (10 s; after the TLS
//!   handshake): a connection that opens and says nothing, or too little,
//!   is closed (h2 would wait for the preface forever, holding a
//!   descriptor). Bytes that are not the preface end the connection at
//!   once.
//! - **HTTP/2 keepalive** (`keepalive`, 30 s, and `keepalive_timeout`,
//!   10 s): a PING after that long without a frame from the client; a
//!   connection that does not acknowledge it in time (a client that
//!   stopped reading its socket, or vanished without a FIN) is closed.
//! - **At most `max_streams` concurrent streams per connection** (128;
//!   tonic's own default is unlimited).
//! - **At most `max_connections` connections per listener** (4096, and
//!   never more than the listener's share of the descriptor limit:
//!   [`crate::slots::share`]): with none free the listener waits before
//!   accepting.
//! - An `accept` that fails (out of file descriptors) waits
//!   [`crate::accept::ACCEPT_BACKOFF`] (50 ms) before the next, instead of
//!   spinning, and is counted (`PREFIX_listener_accept_errors_total`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

use crate::accept::accept;
use crate::kill::{Connections, Registered};
use crate::slots::{Slot, Slots};

/// The HTTP/2 client connection preface (RFC 9113, 3.4), without the
/// SETTINGS frame that follows it.
const PREFACE_LEN: usize = 24;

/// What one connection may hold (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for the HTTP/2 preface of a new connection.
    pub handshake: Duration,
    /// Idle time before the server pings the client.
    pub keepalive: Duration,
    /// Longest wait for the acknowledgement of that ping.
    pub keepalive_timeout: Duration,
    /// Concurrent streams per connection.
    pub max_streams: u32,
    /// Connections each gRPC listener holds at once (before its share of
    /// the descriptor limit, [`crate::slots::share`]).
    pub max_connections: usize,
    /// Longest wait for a TLS handshake, from the accept.
    pub tls_handshake: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_streams: 128,
            max_connections: 4096,
            tls_handshake: manul_tls::accept::HANDSHAKE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// A tonic server builder that keeps these limits.
    pub fn builder(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(self.keepalive))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(self.max_streams)
    }
}

/// The plaintext connections of `listener`, each held to `limits.handshake`
/// and to a slot of `slots`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    slots: Slots,
    connections: Option<Arc<Connections>>,
) -> impl Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
    futures::stream::unfold(listener, move |listener| {
        let slots = slots.clone();
        let connections = connections.clone();
        async move {
            let free = slots.acquire().await;
            let (tcp, _) = accept(&listener, &slots).await;
            let slot = free.open();
            // The builder's `tcp_nodelay` only reaches listeners tonic
            // binds itself: without it, Nagle plus delayed ACKs hold each
            // response's trailers for ~40 ms.
            let _ = tcp.set_nodelay(true);
            let addr = tcp.peer_addr();
            let guarded = Guarded::new(tcp, limits.handshake)
                .holding(slot)
                .killable(connections.as_ref(), addr);
            Some((Ok(guarded), listener))
        }
    })
}

/// The TLS connections of `listener`, each held to `limits.handshake` and
/// to a slot of `slots` from its accept, its TLS handshake included
/// (within `limits.tls_handshake`): a connection counts in
/// `PREFIX_listener_connections` from
/// its accept, not only once its handshake is done. One task accepts;
/// each handshake runs in its own task, so a silent client holds up no
/// one else; a handshake that fails or times out is logged and its slot
/// freed. Accepting stops when the stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
    slots: Slots,
) -> impl Stream<Item = io::Result<Guarded<tokio_rustls::server::TlsStream<TcpStream>>>> + Send + 'static
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = async {
                    let free = slots.acquire().await;
                    let accepted = accept(&listener, &slots).await;
                    (free.open(), accepted)
                } => a,
            };
            let (slot, (tcp, peer)) = accepted;
            // Nagle plus delayed ACKs would hold each response's trailers.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let timeout = limits.tls_handshake;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let guarded = Guarded::new(tls, limits.handshake).holding(slot);
                        let _ = tx.send(Ok(guarded)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::warn!(%peer, ?timeout, "TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the server ended this connection",
    )
}

/// A connection that must deliver the HTTP/2 preface before a deadline:
/// a read still waiting for it when the deadline passes fails, which ends
/// the connection.
#[derive(Debug)]
pub struct Guarded<IO> {
    inner: IO,
    /// Until the preface has arrived: the bytes of it still missing and
    /// the deadline.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
    /// The listener's slot this connection holds.
    _slot: Option<Slot>,
    /// Its kill switch, when its listener keeps them (`kill`).
    kill: Option<Registered>,
}

impl<IO> Guarded<IO> {
    pub fn new(inner: IO, handshake: Duration) -> Guarded<IO> {
        Guarded {
            inner,
            preface: Some((PREFACE_LEN, Box::pin(tokio::time::sleep(handshake)))),
            _slot: None,
            kill: None,
        }
    }

    /// This connection (from `addr`) can be ended through `connections`.
    pub fn killable(
        mut self,
        connections: Option<&Arc<Connections>>,
        addr: io::Result<std::net::SocketAddr>,
    ) -> Guarded<IO> {
        if let (Some(c), Ok(addr)) = (connections, addr) {
            self.kill = Some(c.register(addr));
        }
        self
    }

    fn killed(&self, cx: &Context<'_>) -> bool {
        self.kill.as_ref().is_some_and(|k| k.switch.killed(cx))
    }

    /// This connection holds `slot` until it is dropped.
    pub fn holding(mut self, slot: Slot) -> Guarded<IO> {
        self._slot = Some(slot);
        self
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some((missing, deadline)) = this.preface.as_mut() else {
            return result;
        };
        match &result {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                if got >= *missing {
                    this.preface = None;
                } else {
                    *missing -= got;
                }
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within the handshake timeout",
                    )));
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_at_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 64];
        let started = tokio::time::Instant::now();
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn part_of_the_preface_is_not_enough_and_all_of_it_lifts_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 64];
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 16);
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, Duration::from_secs(10));
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), PREFACE_LEN);
        // Past the preface, silence is the keepalive's business.
        let read = tokio::time::timeout(Duration::from_secs(60), guarded.read(&mut buf)).await;
        assert!(read.is_err(), "the deadline still applies: {read:?}");
        client.write_all(b"x").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
    }
}
