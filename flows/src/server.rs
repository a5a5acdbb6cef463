//! The gRPC services over a [`Store`]: `FlowIngest` (Felix's numbered
//! batches in, acknowledgements out; served by [`crate::ingest`], which
//! decodes straight into the stored form) and `Flows` (list, follow,
//! statistics). The store's lock is held only to store or read, never
//! across an await.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manul_proto::flows::flows_server::{Flows, FlowsServer};
use manul_proto::flows::{
    FlowRecord, ListRequest, ListResponse, RecordBatch, StatsRequest, StatsResponse,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::filter::Filter;
use crate::flow::Flow;
use crate::ingest::IngestServer;
use crate::store::{Ingested, Store};
use crate::tls::Gates;
use crate::wire::Batch;

/// The most records one list returns.
pub const MAX_LIST: usize = 100_000;
/// What a list returns when it names no limit.
pub const DEFAULT_LIST: usize = 1_000;

/// The store and the feed of newly stored records, shared by both
/// services.
#[derive(Debug, Clone)]
pub struct Shared {
    store: Arc<Mutex<Store>>,
    feed: broadcast::Sender<Arc<Flow>>,
    /// With TLS: which certificates may push and which may query.
    gates: Option<Arc<Gates>>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    pub fn new(store: Store) -> Shared {
        let (feed, _) = broadcast::channel(16_384);
        Shared {
            store: Arc::new(Mutex::new(store)),
            feed,
            gates: None,
        }
    }

    /// Calls must come with a certificate `gates` admits for their
    /// service (the listener speaks TLS).
    pub fn with_gates(mut self, gates: Gates) -> Shared {
        self.gates = Some(Arc::new(gates));
        self
    }

    /// Refuses a call whose certificate the service's gate does not admit
    /// (nothing to check without TLS).
    pub(crate) fn admit<T>(&self, request: &Request<T>, ingest: bool) -> Result<(), Status> {
        let Some(gates) = &self.gates else {
            return Ok(());
        };
        let (which, what) = if ingest {
            (
                &gates.ingest,
                "pushing flow records needs a Felix certificate",
            )
        } else {
            (
                &gates.query,
                "querying flow records needs a reader's certificate",
            )
        };
        let certs = request.peer_certs();
        if Gates::admits(which, certs.as_ref().and_then(|c| c.first())) {
            Ok(())
        } else {
            Err(Status::permission_denied(what))
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a batch from `node`'s run `epoch` (see [`Store::ingest`]) and
    /// hands what was stored to the followers; returns what to
    /// acknowledge.
    pub fn ingest(&self, node: &str, epoch: u64, batch: RecordBatch) -> u64 {
        let mut store = self.store();
        let ingested = store.ingest(node, epoch, batch, unix_now());
        self.publish(&store, ingested)
    }

    /// [`Shared::ingest`] of a batch already in the stored form.
    pub fn ingest_flat(&self, node: &str, epoch: u64, batch: Batch) -> u64 {
        let mut store = self.store();
        let ingested = store.ingest_flat(node, epoch, batch, unix_now());
        self.publish(&store, ingested)
    }

    /// Hands what `ingested` stored to the followers; returns what to
    /// acknowledge.
    fn publish(&self, store: &Store, ingested: Ingested) -> u64 {
        // No follower: nothing to hand over (and nothing copied).
        if self.feed.receiver_count() > 0 {
            for r in store.newest(ingested.stored) {
                // The last follower may just have gone: nothing to do.
                let _ = self.feed.send(Arc::new(r.clone()));
            }
        }
        ingested.ack
    }

    /// The records stored from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
        self.feed.subscribe()
    }

    /// Both services, for a tonic router.
    pub fn services(&self) -> (IngestServer, FlowsServer<Query>) {
        (
            IngestServer::new(self.clone()),
            FlowsServer::new(Query(self.clone())),
        )
    }

    /// Drops what left the window, every `every`, forever.
    pub async fn expire_every(self, every: Duration) {
        let mut t = tokio::time::interval(every);
        loop {
            t.tick().await;
            self.store().expire(unix_now());
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `Flows`.
#[derive(Debug, Clone)]
pub struct Query(Shared);

fn filter(f: Option<manul_proto::flows::FlowFilter>) -> Result<Filter, Status> {
    Filter::new(f.unwrap_or_default()).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl Flows for Query {
    type FollowStream = Boxed<FlowRecord>;

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.0.admit(&request, false)?;
        let req = request.into_inner();
        let f = filter(req.filter)?;
        let limit = match req.limit as usize {
            0 => DEFAULT_LIST,
            n => n.min(MAX_LIST),
        };
        let records = self.0.store().list(&f, limit);
        Ok(Response::new(ListResponse { records }))
    }

    async fn follow(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        self.0.admit(&request, false)?;
        let f = filter(request.into_inner().filter)?;
        let mut feed = self.0.feed.subscribe();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(r) => {
                        if f.matches(&r) && tx.send(Ok(r.to_record())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(skipped = n, "a follower fell behind; records were skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        self.0.admit(&request, false)?;
        let f = filter(request.into_inner().filter)?;
        let store = self.0.store();
        Ok(Response::new(StatsResponse {
            rules: store.rule_stats(&f),
            retained: store.len() as u64,
            retained_bytes: store.bytes() as u64,
        }))
    }
}
