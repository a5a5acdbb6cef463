//! An HTTP listener for health and metrics endpoints (and small web UIs),
//! over HTTP or HTTPS, for `axum::serve`: at most its slots' connections
//! at once ([`HttpLimits::max_connections`], 32 by default), each from its
//! accept (its TLS handshake included, within [`HttpLimits::handshake`])
//! to its close, closed after [`HttpLimits::idle`] without a request and
//! when a request's head takes longer than [`HttpLimits::handshake`]
//! ([`Idle`]); a failing accept waits [`ACCEPT_BACKOFF`], except that
//! when the process is out of file descriptors it accepts on its reserved
//! one ([`crate::spare`]), so a probe is answered while other listeners
//! hold every other descriptor.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::accept::ACCEPT_BACKOFF;
use crate::idle::Idle;
use crate::slots::{ListenerMetrics, METRICS_CONNECTIONS, Slot, Slots};
use crate::spare::{self, Lent, Spare, SpareStream};

/// How long an HTTP connection may go without a request, unless configured
/// otherwise.
pub const METRICS_IDLE: Duration = Duration::from_secs(10);

/// What an HTTP listener's connections may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// How long a connection may go without a request.
    pub idle: Duration,
    /// Longest TLS handshake, and longest a request's head may take to
    /// arrive from its first byte.
    pub handshake: Duration,
    /// Whether a write counts as activity too (responses that stream,
    /// such as Server-Sent Events, whose clients send nothing meanwhile).
    pub streaming: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: METRICS_CONNECTIONS,
            idle: METRICS_IDLE,
            handshake: manul_tls::accept::HANDSHAKE_TIMEOUT,
            streaming: false,
        }
    }
}

impl HttpLimits {
    /// The slots of the listener named `listener` in `metrics`.
    pub fn slots(&self, listener: &'static str, metrics: &ListenerMetrics) -> Slots {
        Slots::new(listener, self.max_connections, metrics)
    }

    fn wrap<IO>(&self, io: IO, slot: Slot) -> Idle<IO> {
        Idle::new(io, self.idle, self.handshake, Some(slot)).counting_writes(self.streaming)
    }
}

/// Serves `app` on `listener` (over HTTPS with `tls`) within `limits`,
/// its connections holding `slots`, until the server fails.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    slots: Slots,
    limits: HttpLimits,
) -> io::Result<()> {
    match tls {
        Some(config) => {
            let listener = HttpTlsListener::new(listener, config, slots, limits)?;
            axum::serve(listener, app).await
        }
        None => axum::serve(HttpListener::new(listener, slots, limits), app).await,
    }
}

/// The next connection of an HTTP listener. A failed accept is counted
/// and retried after [`ACCEPT_BACKOFF`]; when it failed for want of a
/// descriptor and the reserve is held, the reserve is closed and one more
/// accept tried at once (nothing in between: no await, no log), the
/// connection then holding the reserve's [`Lent`]. That accept does not wait: Linux takes the descriptor before
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
            && let Some((fd, lent)) = spare.release()
        {
            drop(fd);
            let accepted = listener.accept().now_or_never();
            tracing::debug!("reserved descriptor closed for an accept");
            match accepted {
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

/// An HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
    slots: Slots,
    spare: Arc<Spare>,
    limits: HttpLimits,
}

impl HttpListener {
    /// Holds its descriptor in reserve from now.
    pub fn new(listener: TcpListener, slots: Slots, limits: HttpLimits) -> HttpListener {
        HttpListener {
            listener,
            slots,
            spare: Spare::new(),
            limits,
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Idle<SpareStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let free = self.slots.acquire().await;
        let (tcp, addr, lent) = accept_reserved(&self.listener, &self.slots, &self.spare).await;
        let slot = free.open();
        (self.limits.wrap(SpareStream::new(tcp, lent), slot), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

type Accepted = (Idle<TlsStream<SpareStream>>, SocketAddr);

/// An HTTPS listener: one task accepts (within the slots, with the
/// reserve), each TLS handshake runs in its own task within
/// [`HttpLimits::handshake`], and a connection holds its slot from its
/// accept. A failed or timed-out handshake is logged and frees it.
/// Accepting stops when the listener is dropped.
#[derive(Debug)]
pub struct HttpTlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<Accepted>,
}

impl HttpTlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        slots: Slots,
        limits: HttpLimits,
    ) -> io::Result<HttpTlsListener> {
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
                tokio::spawn(handshake(acceptor, tcp, peer, slot, lent, limits, tx));
            }
        });
        Ok(HttpTlsListener { local, accepted })
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
    limits: HttpLimits,
    tx: mpsc::Sender<Accepted>,
) {
    let timeout = limits.handshake;
    let tcp = SpareStream::new(tcp, lent);
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let _ = tx.send((limits.wrap(tls, slot), peer)).await;
        }
        Ok(Err(e)) => tracing::warn!(%peer, "HTTPS handshake refused: {e}"),
        Err(_) => tracing::warn!(%peer, ?timeout, "HTTPS handshake timed out"),
    }
}

impl axum::serve::Listener for HttpTlsListener {
    type Io = Idle<TlsStream<SpareStream>>;
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
