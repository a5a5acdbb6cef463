//! `manul-flows`: the flow aggregator's process (see the library's
//! documentation).

/// The aggregator's allocator: decoding a batch allocates every string and
/// label map of its records, and the window frees them as records expire;
/// mimalloc serves these small objects faster than the system malloc and
/// with less overhead per object (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manul_flows::{Shared, Store};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "manul-flows", version, about = "Manul's flow aggregator")]
struct Args {
    /// Where Felixes push records and clients query them.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Keep records whose interval ended this many seconds ago at most.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    window_seconds: u64,
    /// Keep at most this many records (the oldest go first).
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_records: u64,
    /// Where the web UI and its JSON API listen (HTTP, or HTTPS with
    /// --ui-tls-cert); it shows every record, so keep it on loopback or
    /// behind an authenticating proxy.
    #[arg(long, default_value = "127.0.0.1:7444")]
    ui_listen: SocketAddr,
    /// Serve no web UI.
    #[arg(long)]
    no_ui: bool,
    #[command(flatten)]
    tls: manul_flows::tls::TlsArgs,
    #[command(flatten)]
    limits: manul_flows::listen::ListenArgs,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let (tls, ui_tls) = match (args.tls.build(), args.tls.ui()) {
        (Ok(t), Ok(u)) => (t, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {}", chain(&e));
            return Ok(ExitCode::from(2));
        }
    };
    let max = usize::try_from(args.max_records).unwrap_or(usize::MAX);
    let mut shared = Shared::new(Store::new(args.window_seconds, max));
    if let Some(t) = &tls {
        shared = shared.with_gates(t.gates.clone());
    }
    tokio::spawn(shared.clone().expire_every(Duration::from_secs(10)));
    let (ingest, query) = shared.services();
    let listeners =
        manul_flows::listen::Listeners::new(&args.limits, manul_listen::slots::nofile());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if !args.no_ui {
        let ui = tokio::net::TcpListener::bind(args.ui_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--ui-listen)", args.ui_listen))?;
        tracing::info!(listen = %args.ui_listen, https = ui_tls.is_some(), "web UI serving");
        let shared = shared.clone();
        let (limits, slots, registry) = (
            listeners.web,
            listeners.web_slots.clone(),
            listeners.registry.clone(),
        );
        tokio::spawn(async move {
            let served =
                manul_flows::web::serve_limited(ui, shared, ui_tls, limits, slots, registry).await;
            if let Err(e) = served {
                tracing::error!("the web UI stopped: {e}");
            }
        });
    }
    if tls.is_none() {
        tracing::warn!(
            "no --ca-file/--server-cert-file/--server-key-file: the gRPC listener is plaintext"
        );
    }
    tracing::info!(listen = %args.listen, tls = tls.is_some(), window_s = args.window_seconds, max_records = max, "flow aggregator serving");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let router = listeners
        .grpc
        .builder()
        .add_service(ingest)
        .add_service(query);
    let (limits, slots) = (listeners.grpc, listeners.grpc_slots);
    match tls {
        Some(t) => {
            let incoming = manul_listen::tls_incoming(listener, t.config, limits, slots);
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
        None => {
            let incoming = manul_flows::listen::incoming(listener, limits, slots);
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
    .context("the gRPC server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
