//! The aggregator's listeners and their limits (`manul_listen`, as Typha's
//! and Felix's), shared by the binary and the ingest benchmark so both
//! serve a stream the same way:
//!
//! - the gRPC listener (`--listen`): at most `--max-connections`
//!   connections (4096, and never more than RLIMIT_NOFILE less 128
//!   allows), each with its TLS handshake and then its HTTP/2 preface
//!   within `--handshake-timeout-secs` (10), HTTP/2 keepalive (a PING
//!   after 30 s of silence, unanswered for 10 s: closed) and at most 128
//!   streams; Nagle off on every connection (tonic's `tcp_nodelay` only
//!   reaches listeners it binds itself, and with Nagle on every small
//!   frame waits for the peer's delayed ACK);
//! - the web UI listener (`--ui-listen`): at most `--ui-max-connections`
//!   connections (32), each closed after `--ui-idle-timeout-secs` (10)
//!   with nothing read or written (a follow stream's keep-alive comments
//!   count), and when its TLS handshake or a request's head takes longer
//!   than `--handshake-timeout-secs`; it keeps a descriptor in reserve so
//!   that `/healthz` answers when the process is out of them.
//!
//! A failed accept (out of file descriptors) waits 50 ms instead of
//! spinning and is counted in `flows_listener_accept_errors_total
//! {listener="grpc"|"web"}`, beside `flows_listener_connections` and
//! `flows_listener_full_total` (the UI's `/metrics`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use manul_listen::slots::{self, ListenerMetrics, Slots};
use manul_listen::{ConnectionLimits, Guarded, HttpLimits};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

/// The prefix of the aggregator's metrics (`flows_listener_*`).
pub const METRICS_PREFIX: &str = "flows";

/// The listeners' limits, as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Connections the gRPC listener holds at once (at most what
    /// RLIMIT_NOFILE allows less 128); past them it waits before
    /// accepting.
    #[arg(long, env = "FLOWS_MAXCONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Close a connection whose TLS handshake, HTTP/2 preface (gRPC) or
    /// request head (web UI) takes longer than this many seconds.
    #[arg(long, env = "FLOWS_HANDSHAKETIMEOUTSECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout_secs: u64,
    /// Connections the web UI listener holds at once; past them it waits
    /// before accepting.
    #[arg(long, env = "FLOWS_UIMAXCONNECTIONS", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub ui_max_connections: u64,
    /// Close a web UI connection after this many seconds with nothing
    /// read or written.
    #[arg(long, env = "FLOWS_UIIDLETIMEOUTSECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ui_idle_timeout_secs: u64,
}

impl Default for ListenArgs {
    fn default() -> Self {
        ListenArgs {
            max_connections: 4096,
            handshake_timeout_secs: 10,
            ui_max_connections: 32,
            ui_idle_timeout_secs: 10,
        }
    }
}

impl ListenArgs {
    /// The gRPC listener's limits.
    pub fn grpc(&self) -> ConnectionLimits {
        let handshake = Duration::from_secs(self.handshake_timeout_secs);
        ConnectionLimits {
            handshake,
            tls_handshake: handshake,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            ..ConnectionLimits::default()
        }
    }

    /// The web UI listener's limits.
    pub fn web(&self) -> HttpLimits {
        HttpLimits {
            max_connections: usize::try_from(self.ui_max_connections).unwrap_or(usize::MAX),
            idle: Duration::from_secs(self.ui_idle_timeout_secs),
            handshake: Duration::from_secs(self.handshake_timeout_secs),
            streaming: true,
        }
    }
}

/// The listeners' slots and the registry they count in.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: ConnectionLimits,
    pub grpc_slots: Slots,
    pub web: HttpLimits,
    pub web_slots: Slots,
    pub registry: Arc<Registry>,
}

impl Listeners {
    /// The slots of `args`' limits, the gRPC listener's bounded by the
    /// descriptor limit `nofile` (logged when that lowers it).
    pub fn new(args: &ListenArgs, nofile: Option<u64>) -> Listeners {
        let mut registry = Registry::default();
        let metrics = ListenerMetrics::register(&mut registry, METRICS_PREFIX);
        let grpc = args.grpc();
        let max = slots::share(grpc.max_connections, nofile, 1);
        if max < grpc.max_connections {
            tracing::warn!(
                max,
                ?nofile,
                "RLIMIT_NOFILE allows the gRPC listener at most {max} connections; raise it for more"
            );
        }
        let web = args.web();
        Listeners {
            grpc,
            grpc_slots: Slots::new("grpc", max, &metrics),
            web,
            web_slots: web.slots("web", &metrics),
            registry: Arc::new(registry),
        }
    }
}

/// Each plaintext connection `listener` accepts, with Nagle off, held to
/// `limits` and to a slot of `slots`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    slots: Slots,
) -> impl Stream<Item = io::Result<Guarded<TcpStream>>> + Send {
    manul_listen::incoming(listener, limits, slots, None)
}
