//! The fan-out: streams the state machine to every Felix as one shared
//! snapshot followed by shared deltas (Calico Typha's "breadcrumbs").
//!
//! # What it does
//!
//! The apply loop calls [`Fanout::publish`] after each applied batch, in
//! revision order. The changes are encoded once into an immutable breadcrumb
//! (`history.rs`) that every client stream sends as the same shared bytes.
//! The history is bounded by count (`max_history_revisions`) and by encoded
//! bytes (`max_history_bytes`); the newest breadcrumb is always kept.
//!
//! A client (the `Sync` gRPC service, `service.rs`) gets:
//!
//! 1. `ServerHello`, saying where the stream starts and whether a snapshot
//!    follows;
//! 2. when it cannot resume from the history: `SnapshotChunk`s (at least
//!    one; an empty state is one chunk holding an empty `EntryList`), taken
//!    from the [`SnapshotSource`], chunked and encoded once per revision and
//!    compression and shared by every client that needs a snapshot before
//!    the next publish (`snapshot.rs`; only the latest is cached);
//! 3. `InSync` at the snapshot (or resume) revision;
//! 4. one `DeltaBatch` per published revision after it, in order, with
//!    `first_revision` = the client's previous revision + 1 (publishes that
//!    carry no entries still produce an empty batch, so the revisions a
//!    client sees are contiguous);
//! 5. a `Ping` every `ping_interval` from in-sync on. `Ping.revision` is the
//!    last revision queued to this client before the ping: a client that has
//!    processed everything before the ping is at that revision.
//!
//! Compression: the first of the client's `accepted_compression` that is
//! `"gzip"` or `"identity"` (ASCII case-insensitive) is used for snapshot
//! chunks and delta batches alike; other names are ignored; identity
//! otherwise. Delta batches are gzipped once per breadcrumb, lazily, and
//! shared.
//!
//! Resuming: a client with `resume_revision` > 0 that the history can bring
//! up to date (`oldest_resumable_revision() <= resume_revision <=
//! current_revision()`) gets no snapshot. A client *ahead* of this replica
//! (it came from a replica that applied more) is held, before the hello,
//! until this replica has published its revision, for at most
//! [`FanoutConfig::resume_ahead_wait`] (5 s by default); then it resumes
//! from the history, or, if this replica is still behind, gets a fresh
//! snapshot at this replica's (older) revision, which is consistent but
//! moves the client back in time until the deltas catch up.
//!
//! Slow clients: each stream buffers at most `client_queue` messages. A
//! client whose next needed revision leaves the history (it reads too
//! slowly) has its stream ended, after the messages already queued, with
//! `RESOURCE_EXHAUSTED` ("... fell behind ... resume from revision N"), and
//! is counted in `typha_connections_dropped_total{reason="fell_behind"}`.
//! After [`Fanout::reset`] the clients behind the new start end with
//! `ABORTED` (`reason="history_reset"`). Either way the client reconnects
//! with the last revision it applied.
//!
//! Stalled clients: a stream that leaves queued messages untaken for
//! `stall_timeout` (60 s; its client stopped reading, or answers HTTP/2
//! PINGs but keeps its window shut, so the stream is never polled) is cut:
//! its task ends and its whole connection is closed
//! ([`Fanout::cut_through`], `crate::listener::kill`), freeing what it
//! held; counted as `reason="stalled"`. A slow reader that keeps taking
//! messages is not stalled (it may still fall behind).
//!
//! Not serving: [`Fanout::stop_serving`] (called at start until the
//! replica has known a Raft leader, and when it has known none for an
//! election timeout, `crate::serving`) ends every open stream at once with
//! `UNAVAILABLE` ("... stopped serving ... resume from revision N") and
//! refuses new ones the same way until [`Fanout::resume_serving`]; counted
//! as `reason="not_serving"`, with `typha_serving` at 0 meanwhile. Each
//! such status carries the retry hint [`retry_later`] puts on it (the
//! condition lasts about an election). The clients resume on another
//! replica from their revision.
//!
//! Limits: beyond `max_connections` open streams a new stream is refused at
//! once with `RESOURCE_EXHAUSTED` naming the limit and the replica. A
//! request with an invalid `node_name` (empty, over 253 bytes, not
//! printable ASCII without spaces), a `client_version` over 256 bytes or
//! with control characters, or more than 16 (or over-long)
//! `accepted_compression` names is refused with `INVALID_ARGUMENT` naming
//! the field. After [`Fanout::shutdown`] new streams get `UNAVAILABLE`.
//!
//! # What it refuses to do
//!
//! It never looks inside resource values: entries are encoded and shipped
//! as given. It knows nothing of Raft: revisions are plain increasing
//! numbers handed over by the apply loop, which must call
//! [`Fanout::reset`] with the applied revision at start-up when the state
//! machine was restored (otherwise the first publish is the oldest
//! resumable point) and after installing a Raft snapshot. A publish at or
//! below the current revision is logged and ignored.
//!
//! # Metrics
//!
//! Exposed names (prometheus-client appends `_total` to counters):
//! `typha_connections_active` (gauge), `typha_connections_accepted_total`,
//! `typha_connections_dropped_total{reason="fell_behind"|"history_reset"|"limit"|"not_serving"|"shutdown"|"stalled"}`,
//! `typha_updates_total` (entries published), `typha_breadcrumb_seq_number`
//! (gauge: current revision), `typha_client_snapshot_send_secs` (histogram:
//! `_bucket`, `_sum`, `_count`, from hello to in-sync),
//! `typha_snapshots_generated_total` (snapshots taken from the source and
//! encoded), `typha_snapshots_reused_total` (clients served an already
//! taken snapshot) and `typha_history_bytes` (gauge: identity-encoded bytes
//! of the retained history; lazily made gzip copies are not counted).

mod grpc;
mod history;
mod lean;
mod metrics;
pub(crate) mod service;
mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use manul_proto::v1::Entry;
use tokio::sync::{oneshot, watch};
use tonic::Status;

pub use grpc::SyncServer;
use history::{EncodedEntries, History, Next, Published};
pub(crate) use lean::serve_connection as serve_lean_connection;
pub use metrics::FanoutMetrics;
use metrics::{DropReason, gauge_value};
pub use service::{SyncService, SyncStream};
use snapshot::{EncodedSnapshot, SnapshotCache};

/// Largest `SyncRequest` the service decodes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Tuning of the fan-out.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// This replica's id, announced in hellos and errors.
    pub replica_id: u64,
    /// Breadcrumbs retained, by count.
    pub max_history_revisions: usize,
    /// Breadcrumbs retained, by identity-encoded bytes.
    pub max_history_bytes: usize,
    /// Entries per `SnapshotChunk`.
    pub snapshot_chunk_entries: usize,
    /// Interval between pings on a stream.
    pub ping_interval: Duration,
    /// Messages buffered per client stream: bounds per-client memory.
    pub client_queue: usize,
    /// Open streams beyond which new ones are refused.
    pub max_connections: usize,
    /// How long a client resuming from a revision this replica has not
    /// reached yet is held before it gets a snapshot instead.
    pub resume_ahead_wait: Duration,
    /// How long a stream may leave queued messages untaken (its client
    /// stopped reading, or keeps its HTTP/2 window shut) before it is cut,
    /// its connection with it.
    pub stall_timeout: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            replica_id: 0,
            max_history_revisions: 10_000,
            max_history_bytes: 64 * 1024 * 1024,
            snapshot_chunk_entries: 1000,
            ping_interval: Duration::from_secs(10),
            client_queue: 64,
            max_connections: 10_000,
            resume_ahead_wait: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// What a snapshot is made from: a consistent view of the state machine at
/// its applied revision.
pub trait SnapshotSource: Send + Sync + 'static {
    /// The applied revision and every live entry at it.
    fn snapshot(&self) -> (u64, Vec<Entry>);
}

/// Compression of snapshot chunks and delta batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    Identity,
    Gzip,
}

impl Compression {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
        }
    }

    /// The first supported name in the client's preference order.
    pub(crate) fn negotiate(accepted: &[String]) -> Compression {
        accepted
            .iter()
            .find_map(|name| {
                if name.eq_ignore_ascii_case("gzip") {
                    Some(Compression::Gzip)
                } else if name.eq_ignore_ascii_case("identity") {
                    Some(Compression::Identity)
                } else {
                    None
                }
            })
            .unwrap_or(Compression::Identity)
    }
}

/// Why the server ends an open stream from outside its task.
#[derive(Debug, Clone)]
pub(crate) enum EndSignal {
    /// [`Fanout::shutdown`].
    Shutdown,
    /// [`Fanout::stop_serving`], with its reason.
    NotServing(Arc<str>),
}

/// Open streams' end signals, in connection order.
#[derive(Debug, Default)]
struct Clients {
    next_id: u64,
    shutting_down: bool,
    /// Set while the replica does not serve: why.
    not_serving: Option<Arc<str>>,
    signals: BTreeMap<u64, oneshot::Sender<EndSignal>>,
}

/// The fan-out server state, shared as `Arc<Fanout>` by the apply loop and
/// every client stream.
pub struct Fanout {
    config: FanoutConfig,
    source: Arc<dyn SnapshotSource>,
    metrics: FanoutMetrics,
    history: RwLock<History>,
    /// The current revision; every publish and reset notifies.
    revisions: watch::Sender<u64>,
    snapshots: SnapshotCache,
    active: AtomicUsize,
    clients: Mutex<Clients>,
    /// The client listener's connections, to end a stalled client's.
    connections: std::sync::OnceLock<Arc<crate::listener::kill::Connections>>,
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("config", &self.config)
            .field("current_revision", &self.current_revision())
            .field(
                "oldest_resumable_revision",
                &self.oldest_resumable_revision(),
            )
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Fanout {
    pub fn new(
        config: FanoutConfig,
        source: Arc<dyn SnapshotSource>,
        metrics: FanoutMetrics,
    ) -> Arc<Fanout> {
        let history = History::new(config.max_history_revisions, config.max_history_bytes);
        let (revisions, _) = watch::channel(0);
        Arc::new(Fanout {
            config,
            source,
            metrics,
            history: RwLock::new(history),
            revisions,
            snapshots: SnapshotCache::default(),
            active: AtomicUsize::new(0),
            clients: Mutex::new(Clients::default()),
            connections: std::sync::OnceLock::new(),
        })
    }

    /// Ends a stalled client's connection through `connections` (the
    /// client listener's); without them only its stream's task ends.
    pub fn cut_through(&self, connections: Arc<crate::listener::kill::Connections>) {
        let _ = self.connections.set(connections);
    }

    pub(crate) fn kill_connection(&self, addr: std::net::SocketAddr) -> bool {
        self.connections.get().is_some_and(|c| c.kill(addr))
    }

    /// Called by the apply loop, in revision order, after the state machine
    /// applied Raft indexes up to `revision`. `entries` are the changes (may
    /// be empty: the revision still advances). They are encoded once into a
    /// breadcrumb shared by every client; the history is trimmed and waiting
    /// clients are woken.
    pub fn publish(&self, revision: u64, entries: Vec<Entry>) {
        let count = entries.len();
        let encoded = EncodedEntries::encode(entries);
        let (outcome, current, bytes) = {
            let mut history = self.history.write().unwrap_or_else(PoisonError::into_inner);
            let outcome = history.publish(revision, encoded);
            (outcome, history.current(), history.bytes())
        };
        match outcome {
            Published::Appended => {
                self.metrics
                    .updates
                    .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
                self.metrics.breadcrumb_seq_number.set(gauge_value(current));
                self.metrics.history_bytes.set(gauge_value(bytes));
                self.revisions.send_modify(|r| *r = current);
            }
            Published::Unchanged => {}
            Published::OutOfOrder => tracing::error!(
                revision,
                current,
                entries = count,
                "fan-out publish at or below the current revision ignored"
            ),
        }
    }

    /// After a Raft snapshot replaced the state machine: the history is
    /// cleared and restarts at `revision`; clients behind it will have to
    /// take a fresh snapshot.
    pub fn reset(&self, revision: u64) {
        self.history
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .reset(revision);
        self.snapshots.clear();
        self.metrics
            .breadcrumb_seq_number
            .set(gauge_value(revision));
        self.metrics.history_bytes.set(0);
        tracing::info!(revision, "fan-out history reset");
        self.revisions.send_modify(|r| *r = revision);
    }

    /// The latest published (or reset-to) revision.
    pub fn current_revision(&self) -> u64 {
        self.read_history().current()
    }

    /// The oldest revision a client can resume from without a snapshot.
    pub fn oldest_resumable_revision(&self) -> u64 {
        self.read_history().oldest()
    }

    /// Open sync streams.
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: refuses new streams, then ends every open one
    /// (with `UNAVAILABLE`), spread evenly over `spread` in connection
    /// order so that thousands of Felixes do not reconnect to the other
    /// replicas at once, then returns.
    pub async fn shutdown(&self, spread: Duration) {
        let signals: Vec<oneshot::Sender<EndSignal>> = {
            let mut clients = self.lock_clients();
            clients.shutting_down = true;
            std::mem::take(&mut clients.signals).into_values().collect()
        };
        let count = signals.len();
        tracing::info!(clients = count, ?spread, "fan-out shutting down");
        let start = tokio::time::Instant::now();
        for (index, signal) in signals.into_iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let offset = spread.mul_f64(index as f64 / count as f64);
            tokio::time::sleep_until(start + offset).await;
            // The stream may have ended meanwhile.
            let _ = signal.send(EndSignal::Shutdown);
        }
    }

    /// Stops serving: every open stream ends at once with `UNAVAILABLE`
    /// saying `reason` (and the revision to resume from), and new streams
    /// are refused the same way until [`Fanout::resume_serving`]. For a
    /// replica whose state may be stale (it has known no leader for an
    /// election timeout): its clients resume on another replica, from
    /// their revision, without a snapshot. Returns how many streams were
    /// ended; does nothing while already stopped.
    pub fn stop_serving(&self, reason: &str) -> usize {
        let signals: Vec<oneshot::Sender<EndSignal>> = {
            let mut clients = self.lock_clients();
            if clients.not_serving.is_some() {
                return 0;
            }
            clients.not_serving = Some(Arc::from(reason));
            self.metrics.serving.set(0);
            std::mem::take(&mut clients.signals).into_values().collect()
        };
        let reason: Arc<str> = Arc::from(reason);
        let count = signals.len();
        if count == 0 {
            tracing::info!(%reason, "fan-out does not serve");
        } else {
            tracing::warn!(clients = count, %reason, "fan-out stops serving");
        }
        for signal in signals {
            let _ = signal.send(EndSignal::NotServing(reason.clone()));
        }
        count
    }

    /// Serves again after [`Fanout::stop_serving`].
    pub fn resume_serving(&self) {
        if self.lock_clients().not_serving.take().is_some() {
            self.metrics.serving.set(1);
            tracing::info!("fan-out serves");
        }
    }

    /// Whether new streams are accepted (not stopped by
    /// [`Fanout::stop_serving`]).
    pub fn serving(&self) -> bool {
        self.lock_clients().not_serving.is_none()
    }

    /// The gRPC `Sync` service.
    pub fn service(self: &Arc<Self>) -> SyncServer {
        SyncServer::new(SyncService::new(Arc::clone(self)))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    fn read_history(&self) -> std::sync::RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &FanoutConfig {
        &self.config
    }

    pub(crate) fn metrics(&self) -> &FanoutMetrics {
        &self.metrics
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    pub(crate) fn can_resume(&self, revision: u64) -> bool {
        self.read_history().can_resume(revision)
    }

    pub(crate) fn next_after(&self, revision: u64) -> Next {
        self.read_history().next_after(revision)
    }

    /// The delta batch a client that has every revision up to `position`
    /// gets next: the shared breadcrumb after it (or, when its snapshot was
    /// taken inside a crumb's range, the part of the crumb after it).
    pub(crate) fn next_delta(&self, position: u64, compression: Compression) -> NextDelta {
        let crumb = match self.next_after(position) {
            Next::UpToDate => return NextDelta::UpToDate,
            Next::Gone { oldest, by_reset } => return NextDelta::Gone { oldest, by_reset },
            Next::Crumb(crumb) => crumb,
        };
        let (first, payload) = if crumb.first > position {
            (crumb.first, crumb.payload(compression))
        } else {
            // The snapshot was taken inside this crumb's range.
            (position + 1, crumb.payload_after(position, compression))
        };
        let Some(entries) = payload else {
            return NextDelta::EncodingFailed;
        };
        tracing::trace!(
            first,
            last = crumb.last,
            entries = crumb.entries,
            "queueing deltas"
        );
        NextDelta::Batch {
            message: service::deltas(first, crumb.last, entries),
            last: crumb.last,
        }
    }

    /// Admits a new stream, or refuses it (shutting down, or at the limit).
    pub(crate) fn accept(self: &Arc<Self>) -> Result<Accepted, Status> {
        let mut clients = self.lock_clients();
        if clients.shutting_down {
            return Err(Status::unavailable(format!(
                "replica {} is shutting down; connect to another replica",
                self.config.replica_id
            )));
        }
        if let Some(reason) = &clients.not_serving {
            self.metrics.dropped(DropReason::NotServing);
            return Err(retry_later(Status::unavailable(format!(
                "replica {} does not serve: {reason}; connect to another replica",
                self.config.replica_id
            ))));
        }
        let active = self.active.load(Ordering::SeqCst);
        if active >= self.config.max_connections {
            self.metrics.dropped(DropReason::Limit);
            tracing::warn!(
                limit = self.config.max_connections,
                "sync stream refused: connection limit reached"
            );
            return Err(Status::resource_exhausted(format!(
                "replica {} is at its limit of {} sync connections; connect to another replica or retry later",
                self.config.replica_id, self.config.max_connections
            )));
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        self.metrics.connections_active.inc();
        self.metrics.connections_accepted.inc();
        let id = clients.next_id;
        clients.next_id += 1;
        let (signal, shutdown) = oneshot::channel();
        clients.signals.insert(id, signal);
        Ok(Accepted {
            id,
            guard: ConnectionGuard {
                fanout: Arc::clone(self),
            },
            registration: Registration {
                fanout: Arc::clone(self),
                id,
            },
            shutdown,
        })
    }

    /// The snapshot in `compression`: the cached one if nothing was
    /// published since it was taken, else a new one (taken and encoded once
    /// however many clients ask at the same time).
    pub(crate) async fn snapshot(
        &self,
        compression: Compression,
    ) -> Result<Arc<EncodedSnapshot>, Status> {
        let slot = self.snapshots.slot_for(self.current_revision());
        let source = Arc::clone(&self.source);
        let chunk_entries = self.config.snapshot_chunk_entries;
        let (identity, taken) = slot
            .identity(|| async move {
                tokio::task::spawn_blocking(move || {
                    let (revision, entries) = source.snapshot();
                    EncodedSnapshot::encode(revision, entries, chunk_entries)
                })
                .await
                .map_err(|error| {
                    tracing::error!(%error, "taking a snapshot failed");
                    Status::internal("taking a snapshot failed")
                })
            })
            .await?;
        if taken {
            self.metrics.snapshots_generated.inc();
            tracing::info!(
                revision = identity.revision,
                entries = identity.entries,
                chunks = identity.chunks.len(),
                bytes = identity.bytes(),
                "snapshot generated"
            );
        } else {
            self.metrics.snapshots_reused.inc();
        }
        match compression {
            Compression::Identity => Ok(identity),
            Compression::Gzip => {
                slot.gzip(|| async move {
                    match tokio::task::spawn_blocking(move || identity.gzip()).await {
                        Ok(Ok(snapshot)) => Ok(snapshot),
                        Ok(Err(error)) => {
                            tracing::error!(%error, "compressing a snapshot failed");
                            Err(Status::internal("compressing a snapshot failed"))
                        }
                        Err(error) => {
                            tracing::error!(%error, "compressing a snapshot failed");
                            Err(Status::internal("compressing a snapshot failed"))
                        }
                    }
                })
                .await
            }
        }
    }
}

/// What [`Fanout::next_delta`] found for a client.
#[derive(Debug)]
pub(crate) enum NextDelta {
    /// The next `DeltaBatch`; the client is then at `last`.
    Batch {
        message: manul_proto::v1::SyncMessage,
        last: u64,
    },
    /// The client has every published revision.
    UpToDate,
    /// The revisions after the client's are no longer retained.
    Gone { oldest: u64, by_reset: bool },
    /// The batch could not be encoded.
    EncodingFailed,
}

/// A stream admitted by [`Fanout::accept`].
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) id: u64,
    pub(crate) guard: ConnectionGuard,
    pub(crate) registration: Registration,
    pub(crate) shutdown: oneshot::Receiver<EndSignal>,
}

/// Counts one open stream; held by the response stream, so the count drops
/// however the stream ends.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    fanout: Arc<Fanout>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.fanout.active.fetch_sub(1, Ordering::SeqCst);
        self.fanout.metrics.connections_active.dec();
    }
}

/// Keeps a client task's shutdown signal registered while it runs.
#[derive(Debug)]
pub(crate) struct Registration {
    fanout: Arc<Fanout>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fanout.lock_clients().signals.remove(&self.id);
    }
}

/// The gRPC trailer of a server's retry hint (gRPC's retry design, A6).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// `status` with the hint to ask again (this or another replica) after
/// [`crate::serving::RETRY_AFTER`]: for a refusal that lasts about an
/// election, not a failure to back off from.
pub(crate) fn retry_later(status: Status) -> Status {
    let mut status = status;
    let millis = crate::serving::RETRY_AFTER.as_millis().to_string();
    if let Ok(value) = millis.parse() {
        status.metadata_mut().insert(RETRY_PUSHBACK, value);
    }
    status
}

/// The retry hint of `status`, in milliseconds, when it has one.
pub(crate) fn retry_hint(status: &Status) -> Option<u32> {
    status
        .metadata()
        .get(RETRY_PUSHBACK)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
