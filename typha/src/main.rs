//! `typha`: one replica of Manul's policy store.
//!
//! With no flags it runs a single-node embedded cluster: data in
//! `./typha-data`, the client gRPC listener on 127.0.0.1:5473, the peer
//! listener (Raft, cluster administration) on 127.0.0.1:5474 behind the
//! token in `./typha-data/peer-token` (created when missing), metrics on
//! 127.0.0.1:9093. With `--ca-file`, `--server-cert-file` and
//! `--server-key-file` every gRPC listener is mutual TLS and certificates
//! replace the token (`manul_typha::tls`); the certificates' identities
//! then decide who may write what (`manul_typha::authz`). `--audit-log`
//! records every write.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use manul_model::error::chain;
use manul_typha::api_limits::WriteLimits;
use manul_typha::fanout::FanoutConfig;
use manul_typha::listener::ConnectionLimits;
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
    /// Address for the Sync stream over the lean transport (length-delimited
    /// protobuf over TCP, with the client listener's TLS), beside gRPC on
    /// --listen; unset: Sync over gRPC only. Felix uses it with
    /// --typha-sync-transport=tcp (port 5475 by default).
    #[arg(long)]
    sync_listen: Option<SocketAddr>,
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
    /// Also take a Raft snapshot and compact the log once the entries since
    /// the last one hold this many MiB: the log on disk, and what a restart
    /// replays, stay bounded by size too.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    snapshot_every_mib: u64,
    /// Most Sync clients this replica serves at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Deltas retained for resuming clients, by count.
    #[arg(long, default_value_t = 10_000)]
    history_revisions: usize,
    /// Deltas retained for resuming clients, by encoded size in MiB.
    #[arg(long, default_value_t = 64)]
    history_mib: usize,
    /// Seconds a Sync stream may leave its queued messages untaken (its
    /// client stopped reading, or keeps its HTTP/2 window shut) before it
    /// and its connection are cut.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..86400))]
    sync_stall_timeout_secs: u64,
    /// Seconds over which a graceful shutdown spreads client disconnects.
    #[arg(long, default_value_t = 10)]
    shutdown_spread_secs: u64,
    /// Seconds a new gRPC connection has to send the HTTP/2 preface
    /// (after its TLS handshake) before it is closed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..3600))]
    handshake_timeout_secs: u64,
    /// Seconds without a frame from a client before it is sent an HTTP/2
    /// PING.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..86400))]
    http2_keepalive_secs: u64,
    /// Seconds a client has to acknowledge that PING before its connection
    /// is closed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..3600))]
    http2_keepalive_timeout_secs: u64,
    /// Largest write request (encoded gRPC message) a client may send, in
    /// MiB; each item in it is at most 8 MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_request_mib: u64,
    /// Most problems a refused write lists: validation stops there (its
    /// text is at most 4 KiB however many).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_validation_problems: u64,
    /// Connections each gRPC listener (client, peer) holds at once; with
    /// that many open it waits before accepting. Never more than half of
    /// RLIMIT_NOFILE less 128 (kept for the store and /readyz).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    max_connections_per_listener: u64,
    /// Concurrent gRPC streams one connection may open (a Felix uses one).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_connection: u32,
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
    /// Raft membership from the Kubernetes API, for a Deployment's pods:
    /// the replica id comes from the pod's uid, a Lease decides which pod
    /// bootstraps the cluster, and the leader adds new pods as learners,
    /// promotes them up to --voters and removes members whose pod is gone.
    /// Needs --kubernetes or --kubeconfig; replaces --node-id, --peers and
    /// --join. The peer address is POD_IP and the --peer-listen port.
    #[arg(long)]
    kubernetes_membership: bool,
    /// This pod's name (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// This pod's namespace, where the Lease and the Typha pods are.
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// This pod's uid: the replica id is derived from it.
    #[arg(long, env = "POD_UID")]
    pod_uid: Option<String>,
    /// This pod's IP: the address its peers reach it at.
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<IpAddr>,
    /// Label selector of this Deployment's Typha pods.
    #[arg(long, default_value = "app.kubernetes.io/name=manul-typha")]
    typha_selector: String,
    /// The Lease that decides which pod bootstraps (and that the leader
    /// then holds).
    #[arg(long, default_value = "manul-typha-bootstrap")]
    membership_lease: String,
    /// Voters wanted: learners are promoted up to this many.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    voters: u64,
    /// The Lease's duration: how long another pod waits before taking a
    /// Lease that is not renewed.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..3600))]
    lease_duration_secs: u64,
    /// Use the Kubernetes API for membership only, without the datastore
    /// watchers (policy then comes from the write API).
    #[arg(long)]
    no_kube_watchers: bool,
    #[command(flatten)]
    tls: manul_typha::tls::TlsArgs,
    /// Append an audit record of every write (allowed or refused) to this
    /// file, as JSON lines (like the Kubernetes API server's audit log).
    #[arg(long, env = "TYPHA_AUDITLOG")]
    audit_log: Option<PathBuf>,
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
    let mut peers = args
        .peers
        .clone()
        .unwrap_or_else(|| BTreeMap::from([(args.node_id, args.peer_listen.to_string())]));
    let membership = if args.kubernetes_membership {
        match membership_options(&args) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    if membership.is_none() && !args.join && !peers.contains_key(&args.node_id) {
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
                eprintln!("error: {}", chain(&e));
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let (tls, metrics_tls) = match (args.tls.build(), args.tls.metrics_tls()) {
        (Ok(t), Ok(m)) => (t, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {}", chain(&e));
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
            eprintln!("error: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    let kube_opts = manul_typha::kube::driver::KubeOptions {
        auto_host_endpoints: args.auto_host_endpoints,
    };
    let (mut node_id, mut join) = (args.node_id, args.join);
    let mut membership_run = None;
    if let (Some(opts), Some(client)) = (membership, &kube_client) {
        use manul_typha::kube::membership_driver::{prepare, watch_pods};
        let (mut pods, _watcher) = watch_pods(client.clone(), &opts);
        let plan = match prepare(client.clone(), &opts, &args.data_dir, &mut pods).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {}", chain(&e));
                return ExitCode::from(1);
            }
        };
        (node_id, join, peers) = (plan.node_id, plan.join, plan.peers);
        membership_run = Some((opts, pods, client.clone()));
    }
    let config = TyphaConfig {
        node_id,
        data_dir: args.data_dir,
        listen: args.listen,
        peer_listen: args.peer_listen,
        sync_listen: args.sync_listen,
        peer_token: token,
        metrics: Some(args.metrics),
        peers,
        join,
        snapshot_every: args.snapshot_every.max(1),
        snapshot_every_bytes: args.snapshot_every_mib * 1024 * 1024,
        fanout: FanoutConfig {
            replica_id: node_id,
            max_connections: args.max_connections,
            max_history_revisions: args.history_revisions.max(1),
            max_history_bytes: args.history_mib.max(1) * 1024 * 1024,
            stall_timeout: Duration::from_secs(args.sync_stall_timeout_secs),
            ..FanoutConfig::default()
        },
        shutdown_spread: Duration::from_secs(args.shutdown_spread_secs),
        // Without the watchers nothing is owned by the Kubernetes API: the
        // write API takes every kind.
        kube: kube_client
            .as_ref()
            .filter(|_| !args.no_kube_watchers)
            .map(|_| kube_opts),
        tls,
        metrics_tls,
        audit_log: args.audit_log.clone(),
        limits: ConnectionLimits {
            handshake: Duration::from_secs(args.handshake_timeout_secs),
            keepalive: Duration::from_secs(args.http2_keepalive_secs),
            keepalive_timeout: Duration::from_secs(args.http2_keepalive_timeout_secs),
            max_streams: args.max_streams_per_connection,
            max_connections: usize::try_from(args.max_connections_per_listener)
                .unwrap_or(usize::MAX),
            ..ConnectionLimits::default()
        },
        write_limits: WriteLimits {
            max_request_bytes: usize::try_from(args.max_request_mib * 1024 * 1024)
                .unwrap_or(usize::MAX),
            max_problems: usize::try_from(args.max_validation_problems).unwrap_or(usize::MAX),
            ..WriteLimits::default()
        },
    };
    let running = match start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return ExitCode::from(1);
        }
    };
    let (kube_stop, kube_stopped) = tokio::sync::watch::channel(false);
    let (node, stop) = (running.node.clone(), kube_stopped.clone());
    let membership_ended = async move {
        match membership_run {
            Some((opts, pods, client)) => {
                manul_typha::kube::membership_driver::run(client, node, opts, pods, stop).await
            }
            None => std::future::pending().await,
        }
    };
    if let Some(client) = kube_client.filter(|_| !args.no_kube_watchers) {
        let opts = kube_opts;
        let (node, metrics) = (running.node.clone(), running.kube_metrics.clone());
        tokio::spawn(manul_typha::kube::driver::run(
            client,
            node,
            metrics,
            opts,
            kube_stopped,
        ));
    }
    // A replica whose Raft thread stopped (a failed write to its disk, a
    // caught panic) applies nothing more: its Sync clients would stay at
    // its last revision. It stops, so they move to another replica and a
    // supervisor restarts it on its data.
    let raft_stopped = {
        let node = running.node.clone();
        async move {
            while node.is_alive() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (code, now) = tokio::select! {
        () = shutdown_signal() => (ExitCode::SUCCESS, false),
        ended = membership_ended => {
            tracing::error!(?ended, "Raft membership ended; stopping so the replica restarts");
            (ExitCode::from(1), false)
        }
        () = raft_stopped => {
            tracing::error!("the Raft thread stopped; stopping so the replica restarts");
            (ExitCode::from(1), true)
        }
    };
    tracing::info!("shutting down");
    let _ = kube_stop.send(true);
    if now {
        running.shutdown_now().await;
    } else {
        running.shutdown().await;
    }
    code
}

/// The membership settings from the flags, or what is missing.
fn membership_options(
    args: &Args,
) -> Result<manul_typha::kube::membership_driver::MembershipOptions, String> {
    if !args.kubernetes && args.kubeconfig.is_none() {
        return Err("--kubernetes-membership needs --kubernetes or --kubeconfig".into());
    }
    if args.peers.is_some() || args.join {
        return Err(
            "--kubernetes-membership decides the members itself: drop --peers and --join".into(),
        );
    }
    let missing = |what: &str, env: &str| {
        format!("--kubernetes-membership needs {what} (--{what} or ${env}, from the downward API)")
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    Ok(manul_typha::kube::membership_driver::MembershipOptions {
        namespace: nonempty(&args.pod_namespace)
            .ok_or_else(|| missing("pod-namespace", "POD_NAMESPACE"))?,
        pod_name: nonempty(&args.pod_name).ok_or_else(|| missing("pod-name", "POD_NAME"))?,
        pod_uid: nonempty(&args.pod_uid).ok_or_else(|| missing("pod-uid", "POD_UID"))?,
        pod_ip: args.pod_ip.ok_or_else(|| missing("pod-ip", "POD_IP"))?,
        selector: args.typha_selector.clone(),
        lease_name: args.membership_lease.clone(),
        voters: usize::try_from(args.voters).unwrap_or(usize::MAX),
        peer_port: args.peer_listen.port(),
        lease_duration: Duration::from_secs(args.lease_duration_secs),
    })
}
