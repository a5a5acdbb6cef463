//! The aggregator's plaintext gRPC listener and server settings, shared by
//! the binary and the ingest benchmark so both serve a stream the same way.
//!
//! tonic's `Server::tcp_nodelay` only reaches listeners tonic binds itself;
//! connections handed in through `serve_with_incoming` keep Nagle on, and
//! with it every small frame the server writes while data it sent is
//! unacknowledged (acknowledgements, HTTP/2 `WINDOW_UPDATE`s) waits for the
//! peer's delayed ACK. [`incoming`] turns Nagle off on each accepted
//! connection, as the TLS acceptor does.

use std::io;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};

/// Each connection `listener` accepts, with Nagle off.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> + Send {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| {
        r.inspect(|tcp| {
            // A socket that refuses the option still serves (slower).
            let _ = tcp.set_nodelay(true);
        })
    })
}
