//! Wires a Typha replica together: the Raft node, the fan-out, two gRPC
//! listeners and the metrics/health HTTP endpoint.
//!
//! The client listener serves what any client may use: Resources (writes
//! validated there) and Sync. The optional sync listener serves Sync alone
//! over the lean transport (`crate::listener::lean`), with the client
//! listener's TLS. The peer listener serves Raft traffic
//! (Peer), cluster administration (Cluster) and the Resources service for
//! writes followers forward, all behind [`crate::peer_auth::PeerGate`]:
//! the cluster's peer token in plaintext, a replica's or administrator's
//! certificate with TLS ([`crate::tls`]: every listener then speaks TLS).
//! With TLS, writes are authorized by the caller's role
//! ([`crate::api_authz`]); every write is recorded in the audit trail
//! ([`crate::audit`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manul_proto::v1::Entry;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tracing::info;

use crate::api::{LeaderClients, ResourcesService};
use crate::api_authz::WriteAuth;
use crate::api_limits::WriteLimits;
use crate::cluster::ClusterService;
use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};
use crate::listener::ConnectionLimits;
use crate::listener::kill::Connections;
use crate::listener::slots::{self, ListenerMetrics, Slots};
use crate::node::transport::PeerService;
use crate::node::{Node, NodeConfig, NodeError, RaftMetrics, Shared};
use crate::peer_auth::{PeerGate, PeerToken};
use crate::tls::TyphaTls;

/// Everything a replica needs to start.
#[derive(Debug, Clone)]
pub struct TyphaConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// Client gRPC listener: the resource API and Sync.
    pub listen: SocketAddr,
    /// Peer gRPC listener: Raft, cluster administration, forwarded writes.
    pub peer_listen: SocketAddr,
    /// Sync listener of the lean transport (framed protobuf over TCP,
    /// `manul_proto::frame`); none: Sync over gRPC only.
    pub sync_listen: Option<SocketAddr>,
    /// The token the peer listener requires and this replica sends to
    /// others; none: a fresh random one (a single replica's own).
    pub peer_token: Option<PeerToken>,
    /// `/metrics`, `/healthz`, `/readyz`; none to disable.
    pub metrics: Option<SocketAddr>,
    /// Every initial member's id and peer address, this one's included (a
    /// port 0 for this one: the bound peer port).
    pub peers: BTreeMap<u64, String>,
    pub join: bool,
    pub snapshot_every: u64,
    /// ... or every this many bytes of entries.
    pub snapshot_every_bytes: u64,
    pub fanout: FanoutConfig,
    /// Over how long a graceful shutdown spreads client disconnects.
    pub shutdown_spread: Duration,
    /// Kubernetes mode: the write API refuses the keys the watchers own.
    pub kube: Option<crate::kube::driver::KubeOptions>,
    /// TLS on the gRPC listeners; none: plaintext (development).
    pub tls: Option<TyphaTls>,
    /// HTTPS on the metrics listener; none: HTTP.
    pub metrics_tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the audit trail of writes goes (JSON lines); none: nowhere.
    pub audit_log: Option<PathBuf>,
    /// What one connection to either gRPC listener may hold.
    pub limits: ConnectionLimits,
    /// What one write request may cost.
    pub write_limits: WriteLimits,
}

impl TyphaConfig {
    /// A single-node embedded cluster on `listen`, its peer listener on a
    /// free loopback port.
    pub fn single(data_dir: PathBuf, listen: SocketAddr) -> TyphaConfig {
        let peer_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        TyphaConfig {
            node_id: 1,
            data_dir,
            listen,
            peer_listen,
            sync_listen: None,
            peer_token: None,
            metrics: None,
            peers: BTreeMap::from([(1, peer_listen.to_string())]),
            join: false,
            snapshot_every: 10_000,
            snapshot_every_bytes: 64 * 1024 * 1024,
            fanout: FanoutConfig::default(),
            shutdown_spread: Duration::from_secs(10),
            kube: None,
            tls: None,
            metrics_tls: None,
            audit_log: None,
            limits: ConnectionLimits::default(),
            write_limits: WriteLimits::default(),
        }
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the Raft node")]
    Node(#[source] NodeError),
    #[error("the single node did not become leader within {0:?}")]
    NotLeading(Duration),
    #[error("peer token")]
    Token(#[source] crate::peer_auth::TokenError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// Starts a single-node replica on a free port of 127.0.0.1 with its data
/// in `data_dir`, and waits until it leads (up to `within`): an embedded
/// store for tests and tools.
pub async fn start_single_loopback(
    data_dir: PathBuf,
    within: Duration,
) -> Result<Running, ServerError> {
    let probe = SocketAddr::from(([127, 0, 0, 1], 0));
    // Bind once to learn a free port: the replica's peer map names it.
    let addr = std::net::TcpListener::bind(probe)
        .and_then(|l| l.local_addr())
        .map_err(|source| ServerError::Listen {
            addr: probe,
            source,
        })?;
    let running = start(TyphaConfig::single(data_dir, addr)).await?;
    let deadline = tokio::time::Instant::now() + within;
    while running.node.status().leader_id != running.node.id() {
        if tokio::time::Instant::now() > deadline {
            return Err(ServerError::NotLeading(within));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(running)
}

/// Reads the state machine for fan-out snapshots, once the node exists.
#[derive(Debug, Default)]
pub(crate) struct StateSource(pub(crate) OnceLock<Arc<Shared>>);

impl SnapshotSource for StateSource {
    fn snapshot(&self) -> (u64, Vec<Entry>) {
        match self.0.get().and_then(|s| s.state.read().ok()) {
            Some(sm) => (sm.revision(), sm.list("", "")),
            None => (0, Vec::new()),
        }
    }
}

/// A running replica.
#[derive(Debug)]
pub struct Running {
    pub node: Node,
    pub fanout: Arc<Fanout>,
    pub registry: Arc<Registry>,
    pub local_addr: SocketAddr,
    /// The bound peer listener.
    pub peer_addr: SocketAddr,
    /// The bound sync listener of the lean transport, when there is one.
    pub sync_addr: Option<SocketAddr>,
    pub peer_token: PeerToken,
    pub metrics_addr: Option<SocketAddr>,
    /// The Kubernetes watchers' metrics (registered whether they run or not).
    pub kube_metrics: crate::kube::metrics::KubeMetrics,
    spread: Duration,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    server: Option<JoinHandle<()>>,
    peer_server: Option<JoinHandle<()>>,
    sync_server: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listen_err = |source| ServerError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    Ok((listener, bound))
}

/// Serves `router` on `listener` until `stop` fires, over TLS with `tls`,
/// each connection held to `limits` (`crate::listener`).
fn serve(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    slots: Slots,
    connections: Option<Arc<Connections>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut stop = stop;
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Some(config) = tls {
        return tokio::spawn(async move {
            let incoming = crate::listener::tls_incoming(listener, config, limits, slots);
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!("gRPC server failed: {e}");
            }
        });
    }
    tokio::spawn(async move {
        let incoming = crate::listener::incoming(listener, limits, slots, connections);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!("gRPC server failed: {e}");
        }
    })
}

/// Starts a replica.
pub async fn start(mut config: TyphaConfig) -> Result<Running, ServerError> {
    let (listener, local_addr) = bind(config.listen).await?;
    let (peer_listener, peer_addr) = bind(config.peer_listen).await?;
    let sync_listener = match config.sync_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let sync_addr = sync_listener.as_ref().map(|(_, addr)| *addr);
    if let Some(own) = config.peers.get_mut(&config.node_id)
        && own.parse::<SocketAddr>().is_ok_and(|a| a.port() == 0)
    {
        *own = peer_addr.to_string();
    }
    let peer_token = match config.peer_token.clone() {
        Some(t) => t,
        None => PeerToken::generate().map_err(ServerError::Token)?,
    };
    let mut registry = Registry::default();
    let fanout_metrics = FanoutMetrics::register(&mut registry);
    let raft_metrics = RaftMetrics::register(&mut registry);
    let kube_metrics = crate::kube::metrics::KubeMetrics::register(&mut registry);
    let threatfeed_metrics = crate::threatfeed::metrics::ThreatFeedMetrics::register(&mut registry);
    let authz_metrics = crate::audit::AuthzMetrics::register(&mut registry);
    let listener_metrics =
        ListenerMetrics::register(&mut registry, crate::listener::METRICS_PREFIX);
    let audit = match &config.audit_log {
        Some(path) => crate::audit::Audit::open(path, authz_metrics).await?,
        None => crate::audit::Audit::disabled(authz_metrics),
    };
    let auth = WriteAuth::new(config.tls.as_ref().map(|t| t.roles.clone()), audit);
    let source = Arc::new(StateSource::default());
    let mut fanout_config = config.fanout.clone();
    fanout_config.replica_id = config.node_id;
    let fanout = Fanout::new(fanout_config, source.clone(), fanout_metrics);
    // Nothing is served before a leader is known (`serving.rs`).
    fanout.stop_serving(crate::serving::STARTING);
    // The client listener's connections, which the fan-out ends when their
    // Sync stream stalls.
    let client_connections = Arc::new(Connections::default());
    fanout.cut_through(client_connections.clone());
    let mut node_config = NodeConfig::new(
        config.node_id,
        config.data_dir.clone(),
        config.peers.clone(),
    );
    node_config.join = config.join;
    node_config.snapshot_every = config.snapshot_every;
    node_config.snapshot_every_bytes = config.snapshot_every_bytes;
    node_config.peer_token = Some(peer_token.clone());
    let dial = config
        .tls
        .as_ref()
        .map(|t| t.dial.clone())
        .unwrap_or_default();
    node_config.peer_transport = dial.clone();
    let gate = match config.tls {
        Some(_) => PeerGate::Certificate,
        None => PeerGate::Token(peer_token.clone()),
    };
    // A replica serves Sync once it knows a leader, and one that has known
    // none for an election timeout sends its Sync clients to the others
    // (`serving.rs`).
    let leaderless_grace = node_config
        .tick
        .saturating_mul(u32::try_from(node_config.election_ticks).unwrap_or(u32::MAX));
    let status_period = node_config.tick;
    let node = Node::start(node_config, fanout.clone(), raft_metrics).map_err(ServerError::Node)?;
    let _ = source.0.set(node.shared().clone());

    let leaders = LeaderClients::new(Some(peer_token.clone())).with_transport(dial);
    let router = config
        .limits
        .builder()
        .add_service(ResourcesService::serve(
            node.clone(),
            leaders.clone(),
            config.kube,
            auth.clone(),
            config.write_limits,
        ))
        .add_service(fanout.service());
    let peer_router = config
        .limits
        .builder()
        .add_service(InterceptedService::new(
            PeerService::new(node.clone()),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterService::new(node.clone(), fanout.clone(), leaders.clone()),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            ResourcesService::serve(
                node.clone(),
                leaders,
                config.kube,
                auth,
                config.write_limits,
            ),
            gate,
        ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (client_tls, peer_tls) = match &config.tls {
        Some(t) => (Some(t.client.clone()), Some(t.peer.clone())),
        None => {
            tracing::warn!(
                "no TLS configured: the gRPC listeners are plaintext, clients have no identity and any client may write anything (no authorization)"
            );
            (None, None)
        }
    };
    // Each gRPC listener's share of the descriptors (`listener::slots`);
    // the sync listener shares the client listener's slots (a Felix uses
    // one or the other).
    let nofile = slots::nofile();
    let max = slots::share(config.limits.max_connections, nofile, 2);
    if max < config.limits.max_connections {
        tracing::warn!(
            max,
            ?nofile,
            "RLIMIT_NOFILE allows each gRPC listener at most {max} connections; raise it for more"
        );
    }
    let client_slots = Slots::new("client", max, &listener_metrics);
    let sync_server = sync_listener.map(|(listener, _)| {
        crate::listener::lean::serve(
            listener,
            client_tls.clone(),
            config.limits,
            client_slots.clone(),
            fanout.clone(),
            stop_rx.clone(),
        )
    });
    let server = serve(
        router,
        listener,
        client_tls,
        config.limits,
        client_slots,
        Some(client_connections),
        stop_rx.clone(),
    );
    tokio::spawn(crate::serving::watch(
        node.clone(),
        fanout.clone(),
        leaderless_grace,
        status_period,
        stop_rx.clone(),
    ));
    tokio::spawn(crate::threatfeed::driver::run(
        node.clone(),
        threatfeed_metrics,
        stop_rx.clone(),
    ));
    let peer_server = serve(
        peer_router,
        peer_listener,
        peer_tls,
        config.limits,
        Slots::new("peer", max, &listener_metrics),
        None,
        stop_rx,
    );
    let metrics_slots = Slots::new("metrics", slots::METRICS_CONNECTIONS, &listener_metrics);
    let registry = Arc::new(registry);
    let (metrics_addr, http) = match config.metrics {
        Some(addr) => {
            let (bound, task) = crate::http::serve(
                addr,
                registry.clone(),
                node.clone(),
                config.metrics_tls.clone(),
                metrics_slots,
            )
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    info!(id = config.node_id, %local_addr, %peer_addr, ?sync_addr, ?metrics_addr, "typha replica started");
    Ok(Running {
        node,
        fanout,
        registry,
        local_addr,
        peer_addr,
        sync_addr,
        peer_token,
        metrics_addr,
        kube_metrics,
        spread: config.shutdown_spread,
        stop: Some(stop_tx),
        server: Some(server),
        peer_server: Some(peer_server),
        sync_server,
        http,
    })
}

impl Running {
    /// Shutdown without spreading Sync clients' disconnects: for a replica
    /// that can no longer serve (its Raft thread stopped), whose clients
    /// had better move at once.
    pub async fn shutdown_now(mut self) {
        self.spread = Duration::ZERO;
        self.shutdown().await;
    }

    /// Graceful shutdown: spreads Sync clients' disconnects over the
    /// configured interval, stops serving, then stops Raft.
    pub async fn shutdown(mut self) {
        self.fanout.shutdown(self.spread).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for server in [
            self.server.take(),
            self.peer_server.take(),
            self.sync_server.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        if let Some(http) = self.http.take() {
            http.abort();
        }
        self.node.stop();
    }
}
