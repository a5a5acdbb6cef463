//! `typha`: one replica of Manul's policy store.
//!
//! With no flags it runs a single-node embedded cluster: data in
//! `./typha-data`, the client gRPC listener on 127.0.0.1:5473, the peer
//! listener (Raft, cluster administration) on 127.0.0.1:5474 behind the
//! token in `./typha-data/peer-token` (created when missing), metrics on
//! 127.0.0.1:9093. With `--ca-file`, `--server-cert-file` and
//! `--server-key-file` every gRPC listener is mutual TLS and certificates
//! replace the token (`manul_typha::tls`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use manul_typha::fanout::FanoutConfig;
use manul_typha::peer_auth::PeerToken;
use manul_typha::server::{TyphaConfig, start};

/// Parses `ID=HOST:PORT,...`.
fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("{part:?}: the id must be a number above 0"))?;
        let addr = addr.trim();
        addr.parse::<SocketAddr>()
            .map_err(|e| format!("{part:?}: {addr:?} is not HOST:PORT ({e})"))?;
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("replica {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

#[derive(Debug, Parser)]
#[command(
    name = "typha",
    version,
    about = "Manul's Raft-replicated policy store and fan-out server"
)]
struct Args {
    /// Where Raft's log, hard state and snapshots are kept.
    #[arg(long, default_value = "typha-data")]
    data_dir: PathBuf,
    /// Address for the resource API and the Sync stream (any client).
    #[arg(long, default_value = "127.0.0.1:5473")]
    listen: SocketAddr,
    /// Address for Raft traffic, cluster administration and forwarded
    /// writes: only holders of the peer token are served there.
    #[arg(long, default_value = "127.0.0.1:5474")]
    peer_listen: SocketAddr,
    /// File holding the cluster's shared peer token (every replica and
    /// administrator uses the same one). Default: DATA_DIR/peer-token,
    /// created with a random token when missing.
    #[arg(long)]
    peer_token_file: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9093")]
    metrics: SocketAddr,
    /// This replica's id (from 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    node_id: u64,
    /// Every member's peer address as ID=HOST:PORT,..., this replica
    /// included. Default:
    /// this replica alone (a single-node cluster).
    #[arg(long, value_parser = parse_peers)]
    peers: Option<BTreeMap<u64, String>>,
    /// Join a running cluster: start empty and wait to be added with
    /// `manulctl cluster add-learner`.
    #[arg(long)]
    join: bool,
    /// Take a Raft snapshot and compact the log every N entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Most Sync clients this replica serves at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Deltas retained for resuming clients, by count.
    #[arg(long, default_value_t = 10_000)]
    history_revisions: usize,
    /// Deltas retained for resuming clients, by encoded size in MiB.
    #[arg(long, default_value_t = 64)]
    history_mib: usize,
    /// Seconds over which a graceful shutdown spreads client disconnects.
    #[arg(long, default_value_t = 10)]
    shutdown_spread_secs: u64,
    /// Watch the Kubernetes API server this kubeconfig names (on the Raft
    /// leader) and store what its objects convert to.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the in-cluster configuration (or
    /// $KUBECONFIG).
    #[arg(long)]
    kubernetes: bool,
    /// With the Kubernetes watchers: an automatic host endpoint per node.
    #[arg(long)]
    auto_host_endpoints: bool,
    #[command(flatten)]
    tls: manul_typha::tls::TlsArgs,
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format == "json");
    let peers = args
        .peers
        .clone()
        .unwrap_or_else(|| BTreeMap::from([(args.node_id, args.peer_listen.to_string())]));
    if !args.join && !peers.contains_key(&args.node_id) {
        eprintln!(
            "error: --peers must list this replica ({}) too, or pass --join",
            args.node_id
        );
        return ExitCode::from(2);
    }
    // A Kubernetes configuration that cannot be used is refused before
    // the replica starts.
    let kube_client = if args.kubernetes || args.kubeconfig.is_some() {
        match manul_typha::kube::driver::client(args.kubeconfig.as_deref()).await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let tls = match args.tls.build() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // With TLS, certificates authenticate peers: no token file is needed.
    let token = match (&tls, &args.peer_token_file) {
        (Some(_), None) => Ok(None),
        (_, Some(path)) => PeerToken::load(path).map(Some),
        (None, None) => PeerToken::load_or_create(&args.data_dir.join("peer-token")).map(Some),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = TyphaConfig {
        node_id: args.node_id,
        data_dir: args.data_dir,
        listen: args.listen,
        peer_listen: args.peer_listen,
        peer_token: token,
        metrics: Some(args.metrics),
        peers,
        join: args.join,
        snapshot_every: args.snapshot_every.max(1),
        fanout: FanoutConfig {
            replica_id: args.node_id,
            max_connections: args.max_connections,
            max_history_revisions: args.history_revisions.max(1),
            max_history_bytes: args.history_mib.max(1) * 1024 * 1024,
            ..FanoutConfig::default()
        },
        shutdown_spread: Duration::from_secs(args.shutdown_spread_secs),
        tls,
    };
    let running = match start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let (kube_stop, kube_stopped) = tokio::sync::watch::channel(false);
    if let Some(client) = kube_client {
        let opts = manul_typha::kube::driver::KubeOptions {
            auto_host_endpoints: args.auto_host_endpoints,
        };
        let (node, metrics) = (running.node.clone(), running.kube_metrics.clone());
        tokio::spawn(manul_typha::kube::driver::run(
            client,
            node,
            metrics,
            opts,
            kube_stopped,
        ));
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = kube_stop.send(true);
    running.shutdown().await;
    ExitCode::SUCCESS
}
