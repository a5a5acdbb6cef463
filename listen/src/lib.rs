//! Listeners that no client can take down: the one home of the
//! connection limits Typha, Felix and the flow aggregator put on their
//! listeners, so that garbage, half-open connections, slow or absent
//! readers, a slow-loris or a flood of idle connections stall nobody else,
//! and a health probe is answered even when the process is out of file
//! descriptors.
//!
//! - [`slots`]: at most so many connections per listener, each holding a
//!   slot from its accept to its close (a full listener waits before
//!   accepting; the kernel's backlog holds newcomers), a gRPC listener's
//!   share bounded by RLIMIT_NOFILE, and the listeners' metrics
//!   (`PREFIX_listener_connections`, `PREFIX_listener_full_total`,
//!   `PREFIX_listener_accept_errors_total`, each with a `listener` label).
//! - [`accept`]: a failed accept (EMFILE) is counted and retried after
//!   [`accept::ACCEPT_BACKOFF`] instead of spinning.
//! - [`grpc`]: a tonic listener's connections (plaintext or TLS) with a
//!   TLS handshake deadline, an HTTP/2 preface deadline, keepalive and a
//!   stream limit ([`grpc::ConnectionLimits`]).
//! - [`http`]: an `axum` listener (HTTP or HTTPS) for health, metrics and
//!   small web UIs: slots, TLS handshake deadline, idle close and a
//!   request-head deadline ([`idle`]), and a descriptor in reserve
//!   ([`spare`]) for when the process runs out.
//! - [`kill`]: closing one client's connection from a service.
//! - `testing` (feature `testing`): hostile clients for other crates'
//!   tests (silent connections, a slow-loris, descriptor exhaustion).
//!
//! It refuses to serve anything itself (the routes and services are the
//! caller's), to define metrics beyond the listeners' own, and to accept
//! a connection it has no slot for.

pub mod accept;
pub mod grpc;
pub mod http;
pub mod idle;
pub mod kill;
pub mod slots;
pub mod spare;
#[cfg(feature = "testing")]
pub mod testing;

pub use accept::ACCEPT_BACKOFF;
pub use grpc::{ConnectionLimits, Guarded, incoming, tls_incoming};
pub use http::{HttpLimits, HttpListener, HttpTlsListener, METRICS_IDLE};
pub use idle::Idle;
pub use slots::{ListenerMetrics, Slots};
