//! The sync listener: the lean Sync transport (`manul_proto::frame`,
//! served by `crate::fanout` per connection) with the gRPC listeners'
//! limits: a slot per connection from its accept to its close, its TLS
//! handshake included (the client listener's `slots`, shared: a Felix
//! uses one listener or the other; with none free the listener waits
//! before accepting), an accept that fails (out of file descriptors)
//! retried after 50 ms, the TLS handshake within
//! [`super::ConnectionLimits::tls_handshake`] (10 s), then the hello
//! within [`super::ConnectionLimits::handshake`]. Each connection's handshakes
//! run in its own task, so a silent one holds up no one else. With TLS it
//! uses the client listener's rustls configuration (its certificate and
//! its client-certificate checks) with the application protocol
//! `manul_proto::frame::ALPN` instead of `h2`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use manul_listen::accept::accept;
use manul_listen::slots::{Slot, Slots};

use super::ConnectionLimits;
use crate::fanout::{Fanout, serve_lean_connection};

/// The client listener's TLS configuration with the lean transport's
/// application protocol.
pub fn lean_tls(client: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut config = (**client).clone();
    config.alpn_protocols = vec![manul_proto::frame::ALPN.to_vec()];
    Arc::new(config)
}

/// Serves the lean transport on `listener` until `stop` fires.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    slots: Slots,
    fanout: Arc<Fanout>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut stop = stop;
    let acceptor = tls.map(|config| TlsAcceptor::from(lean_tls(&config)));
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            let accepted = tokio::select! {
                () = &mut stopped => return,
                accepted = async {
                    let free = slots.acquire().await;
                    let accepted = accept(&listener, &slots).await;
                    (free.open(), accepted)
                } => accepted,
            };
            let (slot, (tcp, peer)) = accepted;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(connection(
                fanout.clone(),
                acceptor.clone(),
                tcp,
                peer,
                limits,
                slot,
            ));
        }
    })
}

/// One connection, holding `slot` until it closes: its TLS handshake
/// (when there is TLS), then its stream.
async fn connection(
    fanout: Arc<Fanout>,
    acceptor: Option<TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
    limits: ConnectionLimits,
    slot: Slot,
) {
    let Some(acceptor) = acceptor else {
        serve_lean_connection(fanout, tcp, peer, limits.handshake).await;
        drop(slot);
        return;
    };
    let timeout = limits.tls_handshake;
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_lean_connection(fanout, tls, peer, limits.handshake).await,
        Ok(Err(e)) => tracing::warn!(%peer, "lean sync TLS handshake refused: {e}"),
        Err(_) => tracing::warn!(%peer, ?timeout, "lean sync TLS handshake timed out"),
    }
    drop(slot);
}
