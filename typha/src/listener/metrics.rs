//! The metrics listener (`/metrics`, `/healthz`, `/readyz`), over HTTP or
//! HTTPS: at most its slots' connections at once
//! ([`super::slots::METRICS_CONNECTIONS`]), each from its accept (its TLS
//! handshake included, within `manul_tls::accept::HANDSHAKE_TIMEOUT`) to
//! its close, and closed after [`METRICS_IDLE`] without a request; a
//! failing accept waits [`super::ACCEPT_BACKOFF`], except that when the
//! process is out of file descriptors it accepts on its reserved one
//! ([`super::spare`]), so a probe is answered while the gRPC listeners
//! hold every other descriptor.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::ACCEPT_BACKOFF;
use super::slots::{Slot, Slots};
use super::spare::{self, Lent, Spare};

/// How long a metrics connection may go without a request.
pub const METRICS_IDLE: Duration = Duration::from_secs(10);

/// The next connection of the metrics listener. A failed accept is counted
/// and retried after [`ACCEPT_BACKOFF`]; when it failed for want of a
/// descriptor and the reserve is held, the reserve is closed and one more
/// accept tried at once, the connection then holding the reserve's
/// [`Lent`]. That accept does not wait: Linux takes the descriptor before
/// it looks for a connection, so EMFILE also comes with an empty backlog
/// (the listener stays readable until an accept would block), and the
/// reserve must not stay closed while nobody is connecting, or another
/// listener takes its descriptor.
async fn accept_reserved(
    listener: &TcpListener,
    slots: &Slots,
    spare: &Arc<Spare>,
) -> (TcpStream, SocketAddr, Option<Lent>) {
    loop {
        let error = match listener.accept().await {
            Ok((tcp, addr)) => {
                slots.accepted();
                spare.restore();
                return (tcp, addr, None);
            }
            Err(e) => e,
        };
        if spare::out_of_descriptors(&error)
            && let Some(lent) = spare.release()
        {
            match listener.accept().now_or_never() {
                Some(Ok((tcp, addr))) => return (tcp, addr, Some(lent)),
                // Nobody waiting: the reserve is opened again at once and
                // the listener waits for the next connection.
                None => {
                    drop(lent);
                    continue;
                }
                // Another thread took the freed descriptor.
                Some(Err(e)) => {
                    slots.accept_failed(&e);
                    drop(lent);
                }
            }
        } else {
            slots.accept_failed(&error);
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
        spare.restore();
    }
}

/// The metrics listener over HTTP.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    slots: Slots,
    spare: Arc<Spare>,
}

impl MetricsListener {
    /// Holds its descriptor in reserve from now.
    pub fn new(listener: TcpListener, slots: Slots) -> MetricsListener {
        MetricsListener {
            listener,
            slots,
            spare: Spare::new(),
        }
    }
}

impl axum::serve::Listener for MetricsListener {
    type Io = Idle<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let free = self.slots.acquire().await;
        let (tcp, addr, lent) = accept_reserved(&self.listener, &self.slots, &self.spare).await;
        let slot = free.open();
        (Idle::new(tcp, METRICS_IDLE, Some(slot)).lending(lent), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

type Accepted = (Idle<TlsStream<TcpStream>>, SocketAddr);

/// The metrics listener over HTTPS: one task accepts (within the slots,
/// with the reserve), each TLS handshake runs in its own task within
/// `manul_tls::accept::HANDSHAKE_TIMEOUT`, and a connection holds its slot
/// from its accept. A failed or timed-out handshake is logged and frees
/// it. Accepting stops when the listener is dropped.
#[derive(Debug)]
pub struct MetricsTlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<Accepted>,
}

impl MetricsTlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        slots: Slots,
    ) -> io::Result<MetricsTlsListener> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(slots.max());
        let acceptor = TlsAcceptor::from(config);
        let spare = Spare::new();
        tokio::spawn(async move {
            loop {
                let (slot, tcp, peer, lent) = tokio::select! {
                    () = tx.closed() => return,
                    a = async {
                        let free = slots.acquire().await;
                        let (tcp, peer, lent) = accept_reserved(&listener, &slots, &spare).await;
                        (free.open(), tcp, peer, lent)
                    } => a,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(handshake(acceptor, tcp, peer, slot, lent, tx));
            }
        });
        Ok(MetricsTlsListener { local, accepted })
    }
}

/// One connection's TLS handshake; the connection (holding `slot` and
/// `lent`) goes to axum once it is done.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    lent: Option<Lent>,
    tx: mpsc::Sender<Accepted>,
) {
    let timeout = manul_tls::accept::HANDSHAKE_TIMEOUT;
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let idle = Idle::new(tls, METRICS_IDLE, Some(slot)).lending(lent);
            let _ = tx.send((idle, peer)).await;
        }
        Ok(Err(e)) => tracing::warn!(%peer, "metrics TLS handshake refused: {e}"),
        Err(_) => tracing::warn!(%peer, ?timeout, "metrics TLS handshake timed out"),
    }
}

impl axum::serve::Listener for MetricsTlsListener {
    type Io = Idle<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A connection whose reads fail once it has sent nothing for `idle`,
/// which ends it; it holds its listener's slot (and the reserve's
/// descriptor, when it was accepted on it) until dropped, after its own
/// socket closes.
#[derive(Debug)]
pub struct Idle<IO> {
    // Dropped first: the socket closes before the slot and the reserve
    // are given back.
    inner: IO,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: Option<Slot>,
    _lent: Option<Lent>,
}

impl<IO> Idle<IO> {
    pub fn new(inner: IO, idle: Duration, slot: Option<Slot>) -> Idle<IO> {
        Idle {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _slot: slot,
            _lent: None,
        }
    }

    /// This connection was accepted on the reserve's descriptor.
    fn lending(mut self, lent: Option<Lent>) -> Idle<IO> {
        self._lent = lent;
        self
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the idle timeout",
                )));
            }
            _ => {}
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Idle<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
