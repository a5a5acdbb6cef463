//! The sync listener: the lean Sync transport (`manul_proto::frame`,
//! served by `crate::fanout` per connection) with the gRPC listeners'
//! limits: a slot per connection (the client listener's `slots`, shared:
//! a Felix uses one listener or the other; waiting before accepting when
//! none is free), an accept that fails (out of file descriptors) retried
//! after 50 ms, the TLS handshake within `manul_tls::accept`'s 10 s, then
//! the hello within [`super::ConnectionLimits::handshake`]. With TLS it uses
//! the client listener's rustls configuration (its certificate and its
//! client-certificate checks) with the application protocol
//! `manul_proto::frame::ALPN` instead of `h2`.

use std::sync::Arc;

use futures::StreamExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ConnectionLimits;
use super::slots::Slots;
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
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        if let Some(config) = tls {
            let incoming =
                manul_tls::accept::incoming_limited(listener, lean_tls(&config), slots.semaphore());
            tokio::pin!(incoming);
            loop {
                let next = tokio::select! {
                    () = &mut stopped => return,
                    next = incoming.next() => next,
                };
                let Some(Ok((tls, permit))) = next else {
                    return;
                };
                let Ok(peer) = tls.get_ref().0.peer_addr() else {
                    continue;
                };
                let slot = slots.from_permit(permit);
                let fanout = fanout.clone();
                tokio::spawn(async move {
                    serve_lean_connection(fanout, tls, peer, limits.handshake).await;
                    drop(slot);
                });
            }
        }
        loop {
            let accepted = tokio::select! {
                () = &mut stopped => return,
                accepted = async {
                    let slot = slots.acquire().await;
                    (slot, super::accept(&listener).await)
                } => accepted,
            };
            let (slot, (tcp, peer)) = accepted;
            let _ = tcp.set_nodelay(true);
            let fanout = fanout.clone();
            tokio::spawn(async move {
                serve_lean_connection(fanout, tcp, peer, limits.handshake).await;
                drop(slot);
            });
        }
    })
}
