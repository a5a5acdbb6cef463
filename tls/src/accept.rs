//! Accepting TLS connections for a tonic server.
//!
//! One task accepts; each handshake runs in its own task with a time
//! limit, so a client that connects and sends nothing (or a slow one)
//! holds up no one else. A failed handshake is logged and dropped: a
//! server never sees a connection that did not authenticate.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The authenticated connections of `listener`, for
/// `Router::serve_with_incoming`. Accepting stops when the stream is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    futures::StreamExt::map(incoming_limited(listener, config, slots), |r| {
        r.map(|(stream, _slot)| stream)
    })
}

/// [`incoming`], holding each connection to a permit of `slots` from
/// before it is accepted (its handshake included) to when the caller
/// drops the permit: with none free, accepting waits (the kernel's
/// backlog holds newcomers).
pub fn incoming_limited(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    slots: Arc<Semaphore>,
) -> impl Stream<Item = std::io::Result<(TlsStream<TcpStream>, OwnedSemaphorePermit)>> + Send + 'static
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                _ = tx.closed() => return,
                s = slots.clone().acquire_owned() => s,
            };
            let Ok(slot) = slot else { return };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Nagle plus delayed ACKs would hold each response's trailers.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok((stream, slot))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
