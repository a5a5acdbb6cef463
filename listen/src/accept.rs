//! An accept that does not spin: a failed `accept` (out of file
//! descriptors: the connection stays in the backlog and the listener stays
//! readable, so retrying at once would spin) is counted and retried after
//! [`ACCEPT_BACKOFF`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::slots::Slots;

/// How long an accept loop waits after a failed accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection of `listener`, whose failing accepts are counted
/// in `slots` and retried after [`ACCEPT_BACKOFF`] instead of at once.
pub async fn accept(listener: &TcpListener, slots: &Slots) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                slots.accepted();
                return accepted;
            }
            Err(e) => {
                slots.accept_failed(&e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
