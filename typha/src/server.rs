//! Wires a Typha replica together: the Raft node, the fan-out, the gRPC
//! services on one listener (Resources, Sync, Cluster, Peer) and the
//! metrics/health HTTP endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manul_proto::v1::Entry;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::api::{LeaderClients, ResourcesService};
use crate::cluster::ClusterService;
use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};
use crate::node::transport::PeerService;
use crate::node::{Node, NodeConfig, NodeError, RaftMetrics, Shared};

/// Everything a replica needs to start.
#[derive(Debug, Clone)]
pub struct TyphaConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// gRPC listener: the resource API, Sync, cluster management and Raft.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`; none to disable.
    pub metrics: Option<SocketAddr>,
    /// Every initial member's id and listen address, this one's included.
    pub peers: BTreeMap<u64, String>,
    pub join: bool,
    pub snapshot_every: u64,
    pub fanout: FanoutConfig,
    /// Over how long a graceful shutdown spreads client disconnects.
    pub shutdown_spread: Duration,
}

impl TyphaConfig {
    /// A single-node embedded cluster on `listen`.
    pub fn single(data_dir: PathBuf, listen: SocketAddr) -> TyphaConfig {
        TyphaConfig {
            node_id: 1,
            data_dir,
            listen,
            metrics: None,
            peers: BTreeMap::from([(1, listen.to_string())]),
            join: false,
            snapshot_every: 10_000,
            fanout: FanoutConfig::default(),
            shutdown_spread: Duration::from_secs(10),
        }
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the Raft node: {0}")]
    Node(#[source] NodeError),
    #[error("the single node did not become leader within {0:?}")]
    NotLeading(Duration),
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
struct StateSource(OnceLock<Arc<Shared>>);

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
    pub metrics_addr: Option<SocketAddr>,
    /// The Kubernetes watchers' metrics (registered whether they run or not).
    pub kube_metrics: crate::kube::metrics::KubeMetrics,
    spread: Duration,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
}

/// Starts a replica.
pub async fn start(config: TyphaConfig) -> Result<Running, ServerError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let mut registry = Registry::default();
    let fanout_metrics = FanoutMetrics::register(&mut registry);
    let raft_metrics = RaftMetrics::register(&mut registry);
    let kube_metrics = crate::kube::metrics::KubeMetrics::register(&mut registry);
    let source = Arc::new(StateSource::default());
    let mut fanout_config = config.fanout.clone();
    fanout_config.replica_id = config.node_id;
    let fanout = Fanout::new(fanout_config, source.clone(), fanout_metrics);
    let mut node_config = NodeConfig::new(
        config.node_id,
        config.data_dir.clone(),
        config.peers.clone(),
    );
    node_config.join = config.join;
    node_config.snapshot_every = config.snapshot_every;
    let node = Node::start(node_config, fanout.clone(), raft_metrics).map_err(ServerError::Node)?;
    let _ = source.0.set(node.shared().clone());

    let leaders = LeaderClients::default();
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ResourcesService::new(node.clone(), leaders.clone()))
        .add_service(fanout.service())
        .add_service(ClusterService::new(node.clone(), fanout.clone(), leaders))
        .add_service(PeerService::new(node.clone()));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // The builder's `tcp_nodelay` only reaches listeners tonic binds
        // itself: set it on every accepted socket, or Nagle plus delayed
        // ACKs hold each response's trailers for ~40 ms.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        });
        let shutdown = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!("gRPC server failed: {e}");
        }
    });
    let registry = Arc::new(registry);
    let (metrics_addr, http) = match config.metrics {
        Some(addr) => {
            let (bound, task) = crate::http::serve(addr, registry.clone(), node.clone())
                .await
                .map_err(|source| ServerError::Listen { addr, source })?;
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    info!(id = config.node_id, %local_addr, ?metrics_addr, "typha replica started");
    Ok(Running {
        node,
        fanout,
        registry,
        local_addr,
        metrics_addr,
        kube_metrics,
        spread: config.shutdown_spread,
        stop: Some(stop_tx),
        server: Some(server),
        http,
    })
}

impl Running {
    /// Graceful shutdown: spreads Sync clients' disconnects over the
    /// configured interval, stops serving, then stops Raft.
    pub async fn shutdown(mut self) {
        self.fanout.shutdown(self.spread).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        if let Some(http) = self.http.take() {
            http.abort();
        }
        self.node.stop();
    }
}
