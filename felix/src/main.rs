//! `felix`: Manul's per-node agent.
//!
//! It follows Typha (`--typha`), computes what its node (`--node`) needs
//! and drives a dataplane: `null` records the desired state (tests, scale
//! runs; needs no root), `remote` sends it to an out-of-process driver over
//! a Unix socket (`--driver-socket`), `iptables` programs netfilter through
//! nftables and `bpf` loads eBPF programs at TC (both need root).
//!
//! `--netns NAME` runs the whole agent inside a named network namespace
//! (entered before any thread starts), as a local cluster's nodes do.

/// The agent's allocator: the calculation graph allocates and frees many
/// small objects, which mimalloc serves far faster than the system malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use manul_dataplane_api::Driver;
use manul_felix::agent::{self, AgentOptions, AgentStatus};
use manul_felix::calc::CalcGraph;
use manul_felix::metrics::FelixMetrics;
use manul_felix::routes::{RouteCalc, RouteProgrammer};
use manul_felix::status::StatusReporter;
use manul_felix::sync::{SyncConfig, Syncer};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dataplane {
    /// Record the desired state in memory.
    Null,
    /// Send operations to an out-of-process driver (--driver-socket).
    Remote,
    /// Linux netfilter, programmed through nftables (`nft`).
    Iptables,
    /// eBPF programs at TC on every workload interface.
    Bpf,
}

#[derive(Debug, Parser)]
#[command(name = "felix", version, about = "Manul's per-node policy agent")]
struct Args {
    /// Typha replicas, tried in turn: HOST:PORT[,HOST:PORT...].
    #[arg(long, default_value = "127.0.0.1:5473", value_delimiter = ',')]
    typha: Vec<String>,
    /// This node's name (endpoints with this spec.node are local).
    #[arg(long)]
    node: String,
    #[arg(long, value_enum, default_value = "null")]
    dataplane: Dataplane,
    /// Unix socket of an out-of-process driver (with --dataplane remote).
    #[arg(long)]
    driver_socket: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9091")]
    metrics: SocketAddr,
    /// eBPF: pins live under /sys/fs/bpf/manul/NAME (default: the node
    /// name; nodes sharing a machine need different names).
    #[arg(long)]
    bpf_pin_name: Option<String>,
    /// eBPF: append flow logs (JSON lines, aggregated per interval) here.
    #[arg(long)]
    flow_log: Option<PathBuf>,
    /// Run inside this named network namespace (as `ip netns` names them).
    #[arg(long)]
    netns: Option<String>,
    /// Write a status file per programmed workload endpoint here, for the
    /// CNI plugin to wait on.
    #[arg(long)]
    status_dir: Option<PathBuf>,
    /// Route other nodes' pod blocks via their node addresses (direct
    /// routing, no encapsulation).
    #[arg(long)]
    program_routes: bool,
    /// How often the dataplane is checked for out-of-band changes, in
    /// seconds.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    refresh_interval: u64,
    /// Log format: text or json. Filter with RUST_LOG (default: info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn driver(args: &Args) -> Result<Box<dyn Driver>, String> {
    match args.dataplane {
        Dataplane::Null => Ok(Box::new(manul_dataplane_api::null::NullDriver::default())),
        Dataplane::Remote => {
            let path = args
                .driver_socket
                .as_ref()
                .ok_or("--dataplane remote needs --driver-socket PATH")?;
            manul_dataplane_api::remote::RemoteDriver::connect(path)
                .map(|d| Box::new(d) as Box<dyn Driver>)
                .map_err(|e| format!("cannot reach the driver at {}: {e}", path.display()))
        }
        Dataplane::Iptables => {
            manul_dataplane_iptables::NftDriver::new(manul_dataplane_iptables::Nft::default())
                .map(|d| Box::new(d) as Box<dyn Driver>)
                .map_err(|e| format!("cannot start the iptables dataplane: {}", chain(&e)))
        }
        Dataplane::Bpf => {
            let mut config = manul_dataplane_bpf::BpfConfig::new(
                args.bpf_pin_name
                    .clone()
                    .unwrap_or_else(|| args.node.clone()),
            );
            config.flow_log = args.flow_log.clone();
            manul_dataplane_bpf::BpfDriver::new(config)
                .map(|d| Box::new(d) as Box<dyn Driver>)
                .map_err(|e| format!("cannot start the eBPF dataplane: {}", chain(&e)))
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format == "json");
    if let Some(name) = &args.netns {
        // Before the runtime starts: every thread inherits the namespace.
        if let Err(e) = manul_netns::NetNs::open(name).and_then(|ns| ns.enter_current_thread()) {
            eprintln!("error: --netns {name}: {e}");
            return ExitCode::from(2);
        }
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> ExitCode {
    if args.node.is_empty() {
        eprintln!("error: --node must not be empty");
        return ExitCode::from(2);
    }
    let driver = match driver(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut registry = Registry::default();
    let metrics = FelixMetrics::register(&mut registry);
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    match manul_felix::http::serve(args.metrics, Arc::new(registry), status_rx).await {
        Ok(addr) => tracing::info!(%addr, "serving metrics and health"),
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.metrics);
            return ExitCode::from(1);
        }
    }
    let (tx, rx) = mpsc::channel(1024);
    let syncer = Syncer::new(SyncConfig {
        typhas: args.typha.clone(),
        node: args.node.clone(),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
    });
    tokio::spawn(syncer.run(tx));
    let graph = CalcGraph::new(args.node.clone());
    let mut options = AgentOptions {
        refresh_interval: Duration::from_secs(args.refresh_interval),
        ..AgentOptions::default()
    };
    if args.program_routes {
        match RouteProgrammer::current() {
            Ok(p) => options.routes = Some((RouteCalc::new(args.node.clone()), p)),
            Err(e) => {
                eprintln!("error: --program-routes: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(dir) = &args.status_dir {
        match StatusReporter::new(dir) {
            Ok(r) => options.status = Some(r),
            Err(e) => {
                eprintln!("error: --status-dir {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        }
    }
    tokio::select! {
        _ = agent::run(graph, driver, rx, metrics, status_tx, options) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    ExitCode::SUCCESS
}
