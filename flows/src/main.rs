//! `manul-flows`: the flow aggregator's process (see the library's
//! documentation).

use std::net::SocketAddr;
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
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let max = usize::try_from(args.max_records).unwrap_or(usize::MAX);
    let shared = Shared::new(Store::new(args.window_seconds, max));
    tokio::spawn(shared.clone().expire_every(Duration::from_secs(10)));
    let (ingest, query) = shared.services();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, window_s = args.window_seconds, max_records = max, "flow aggregator serving");
    tonic::transport::Server::builder()
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .context("the gRPC server failed")?;
    Ok(())
}
