//! What one client connection may hold of Typha's listeners, so that no
//! client (garbage, a half-open connection, a slow or absent reader) can
//! stall or starve the others. The mechanisms live in `manul_listen`,
//! shared with Felix and the flow aggregator, and are re-exported here;
//! Typha's own part is the lean sync listener ([`lean`]).
//!
//! Every connection is served by its own task, and each Sync stream is fed
//! by its own task with a bounded queue (`fanout`: a stream whose client
//! stops reading is ended once the revisions it needs leave the history,
//! counted as `fell_behind`). Around that, [`ConnectionLimits`]:
//!
//! - **The HTTP/2 preface within `handshake`** (10 s; after the TLS
//!   handshake, which is limited to 10 s as well): a connection that
//!   opens and says nothing, or too little, is closed (h2 would wait for
//!   the preface forever, holding a descriptor). Bytes that are not the
//!   preface end the connection at once.
//! - **HTTP/2 keepalive** (`keepalive`, 30 s, and `keepalive_timeout`,
//!   10 s): a PING after that long without a frame from the client; a
//!   connection that does not acknowledge it in time (a client that
//!   stopped reading its socket, or vanished without a FIN) is closed.
//! - **At most `max_streams` concurrent streams per connection** (128;
//!   tonic's own default is unlimited): one connection cannot take the
//!   fan-out's whole `max_connections` of Sync streams. A Felix uses one.
//! - **At most `max_connections` connections per listener** (4096, and
//!   never more than the listener's share of the descriptor limit:
//!   [`slots`]): with none free the listener waits before accepting. The
//!   metrics listener (`manul_listen::http`, HTTP or HTTPS) holds at most
//!   [`slots::METRICS_CONNECTIONS`], each closed after [`METRICS_IDLE`]
//!   without a request or when a request's head takes longer than 10 s
//!   ([`Idle`]), so `/readyz` answers whatever the gRPC listeners hold.
//! - An `accept` that fails (out of file descriptors) waits
//!   [`ACCEPT_BACKOFF`] (50 ms) before the next, instead of spinning, and
//!   is counted (`typha_listener_accept_errors_total`). The metrics
//!   listener keeps one descriptor in reserve for that case ([`spare`]):
//!   `/readyz` answers even when every other descriptor is taken.
//!
//! The sync listener of the lean transport ([`lean`]) keeps the same
//! slots, accept backoff and handshake timeout (for its hello frame).
//!
//! Typha's flags: `--handshake-timeout-secs`, `--http2-keepalive-secs`,
//! `--http2-keepalive-timeout-secs`, `--max-streams-per-connection`,
//! `--max-connections-per-listener`.

pub mod lean;

pub use manul_listen::{
    ACCEPT_BACKOFF, ConnectionLimits, Guarded, HttpLimits, HttpListener, HttpTlsListener, Idle,
    METRICS_IDLE, incoming, kill, slots, spare, tls_incoming,
};

/// The prefix of Typha's listener metrics (`typha_listener_connections`
/// and the like).
pub const METRICS_PREFIX: &str = "typha";
