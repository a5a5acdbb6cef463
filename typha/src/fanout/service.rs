//! The `Sync` gRPC service: validates the request, admits the stream and
//! runs one task per client that feeds its bounded queue from the snapshot
//! cache and the breadcrumb history.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt as _;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::sync_server::Sync as SyncApi;
use manul_proto::v1::{
    DeltaBatch, InSync, Ping, ServerHello, SnapshotChunk, SyncMessage, SyncRequest,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::NextDelta;
use super::history::Next;
use super::metrics::DropReason;
use super::{Compression, ConnectionGuard, EndSignal, Fanout, Registration};
use crate::listener::kill::KillSwitch;

/// Longest accepted `node_name` (a DNS subdomain).
const MAX_NODE_NAME: usize = 253;
/// Longest accepted `client_version`.
const MAX_CLIENT_VERSION: usize = 256;
/// Most `accepted_compression` names, and the longest one.
const MAX_COMPRESSIONS: usize = 16;
const MAX_COMPRESSION_NAME: usize = 64;

/// The tonic `Sync` service over a [`Fanout`].
#[derive(Debug, Clone)]
pub struct SyncService {
    fanout: Arc<Fanout>,
}

impl SyncService {
    pub(crate) fn new(fanout: Arc<Fanout>) -> SyncService {
        SyncService { fanout }
    }
}

#[tonic::async_trait]
impl SyncApi for SyncService {
    type SyncStream = SyncStream;

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncStream>, Status> {
        let remote = request.remote_addr();
        let peer = remote.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        let request = request.into_inner();
        let valid = match validate(&request) {
            Ok(valid) => valid,
            Err(status) => {
                tracing::info!(%peer, reason = status.message(), "invalid sync request refused");
                return Err(status);
            }
        };
        let stream = open(&self.fanout, valid, &peer, Cut::Listener(remote))?;
        Ok(Response::new(stream))
    }
}

/// How a stalled client's connection is ended.
#[derive(Debug)]
pub(crate) enum Cut {
    /// Through the client listener's connection registry, by address
    /// (the gRPC listener).
    Listener(Option<std::net::SocketAddr>),
    /// By the connection's own switch (the lean listener).
    Switch(Arc<KillSwitch>),
}

/// Admits a validated stream and starts the task that feeds it: the
/// stream both transports send.
pub(crate) fn open(
    fanout: &Arc<Fanout>,
    valid: ValidRequest,
    peer: &str,
    cut: Cut,
) -> Result<SyncStream, Status> {
    let accepted = fanout.accept()?;
    let config = fanout.config();
    let (tx, rx) = mpsc::channel(config.client_queue.max(1));
    let (end_tx, end_rx) = oneshot::channel();
    let span = tracing::info_span!(
        "sync",
        node = %valid.node_name,
        %peer,
        conn = accepted.id,
    );
    let period = config
        .ping_interval
        .max(std::time::Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let taken = Arc::new(Taken::new());
    let check = (config.stall_timeout / 4).max(std::time::Duration::from_millis(50));
    let mut stall_check = tokio::time::interval_at(Instant::now() + check, check);
    stall_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let task = ClientTask {
        revisions: fanout.subscribe(),
        fanout: Arc::clone(fanout),
        tx,
        shutdown: accepted.shutdown,
        ping,
        compression: valid.compression,
        position: 0,
        in_sync: false,
        taken: taken.clone(),
        queued_since: Instant::now(),
        stall_check,
        cut,
        _registration: accepted.registration,
    };
    tracing::info!(
        parent: &span,
        resume_revision = valid.resume_revision,
        client_version = %valid.client_version,
        compression = valid.compression.name(),
        "sync stream accepted"
    );
    tokio::spawn(task.run(valid.resume_revision, end_tx).instrument(span));
    Ok(SyncStream {
        rx,
        taken,
        end: Some(end_rx),
        _guard: accepted.guard,
    })
}

/// The response stream of one client: its bounded queue, then the status
/// that ended it (if the server ended it). Holds the connection count.
#[derive(Debug)]
pub struct SyncStream {
    rx: mpsc::Receiver<Box<SyncMessage>>,
    /// When a message was last taken, for the task's stall check.
    taken: Arc<Taken>,
    end: Option<oneshot::Receiver<Status>>,
    _guard: ConnectionGuard,
}

impl futures::Stream for SyncStream {
    type Item = Result<SyncMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(message) = std::task::ready!(self.rx.poll_recv(cx)) {
            self.taken.now();
            return Poll::Ready(Some(Ok(*message)));
        }
        // The queue is drained and the task is gone: deliver its verdict.
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        let result = std::task::ready!(Pin::new(end).poll(cx));
        self.end = None;
        Poll::Ready(result.ok().map(Err))
    }
}

/// When the stream last took a message from its queue, in milliseconds
/// since the stream began.
#[derive(Debug)]
struct Taken {
    start: Instant,
    at_millis: std::sync::atomic::AtomicU64,
}

impl Taken {
    fn new() -> Taken {
        Taken {
            start: Instant::now(),
            at_millis: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_millis
            .store(millis, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        let millis = self.at_millis.load(std::sync::atomic::Ordering::Relaxed);
        self.start + std::time::Duration::from_millis(millis)
    }
}

/// A request that passed validation.
#[derive(Debug)]
pub(crate) struct ValidRequest {
    pub(crate) node_name: String,
    pub(crate) client_version: String,
    pub(crate) resume_revision: u64,
    pub(crate) compression: Compression,
}

/// Checks a `SyncRequest`; the error names the field.
pub(crate) fn validate(request: &SyncRequest) -> Result<ValidRequest, Status> {
    let name = &request.node_name;
    if name.is_empty() {
        return Err(Status::invalid_argument("node_name: required"));
    }
    if name.len() > MAX_NODE_NAME {
        return Err(Status::invalid_argument(format!(
            "node_name: {} bytes, longer than {MAX_NODE_NAME}",
            name.len()
        )));
    }
    if let Some(offset) = name.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "node_name: byte {offset} is not printable ASCII (spaces and control characters are not allowed)"
        )));
    }
    let version = &request.client_version;
    if version.len() > MAX_CLIENT_VERSION {
        return Err(Status::invalid_argument(format!(
            "client_version: {} bytes, longer than {MAX_CLIENT_VERSION}",
            version.len()
        )));
    }
    if let Some(offset) = version
        .char_indices()
        .find(|(_, c)| c.is_control())
        .map(|(i, _)| i)
    {
        return Err(Status::invalid_argument(format!(
            "client_version: byte {offset} is a control character"
        )));
    }
    if request.accepted_compression.len() > MAX_COMPRESSIONS {
        return Err(Status::invalid_argument(format!(
            "accepted_compression: {} names, more than {MAX_COMPRESSIONS}",
            request.accepted_compression.len()
        )));
    }
    if let Some(index) = request
        .accepted_compression
        .iter()
        .position(|name| name.len() > MAX_COMPRESSION_NAME)
    {
        return Err(Status::invalid_argument(format!(
            "accepted_compression[{index}]: longer than {MAX_COMPRESSION_NAME} bytes"
        )));
    }
    Ok(ValidRequest {
        node_name: name.clone(),
        client_version: version.clone(),
        resume_revision: request.resume_revision,
        compression: Compression::negotiate(&request.accepted_compression),
    })
}

/// How a client task ended.
#[derive(Debug)]
enum Ended {
    /// The client closed its stream (or the connection dropped).
    ClientGone,
    /// The server ends the stream with `status`.
    Dropped {
        status: Status,
        reason: Option<DropReason>,
    },
}

/// Feeds one client's queue.
struct ClientTask {
    fanout: Arc<Fanout>,
    /// Boxed: tokio allocates a channel's slots 32 at a time, up front, so
    /// a pointer per slot instead of a whole `SyncMessage` keeps that
    /// allocation at a few hundred bytes per client instead of about 2.5 KB.
    tx: mpsc::Sender<Box<SyncMessage>>,
    shutdown: oneshot::Receiver<EndSignal>,
    revisions: watch::Receiver<u64>,
    ping: Interval,
    compression: Compression,
    /// Every revision up to this one has been queued (once in sync).
    position: u64,
    in_sync: bool,
    /// When the stream last took a message.
    taken: Arc<Taken>,
    /// When a message was last queued into an empty queue.
    queued_since: Instant,
    /// When to look for a stall.
    stall_check: Interval,
    /// How its connection is ended when it stalls.
    cut: Cut,
    _registration: Registration,
}

impl ClientTask {
    async fn run(mut self, resume_revision: u64, end: oneshot::Sender<Status>) {
        let Err(ended) = self.serve(resume_revision).await;
        match ended {
            Ended::ClientGone => {
                tracing::info!(revision = self.position, "sync client went away");
            }
            Ended::Dropped { status, reason } => {
                if let Some(reason) = reason {
                    self.fanout.metrics().dropped(reason);
                }
                match reason {
                    Some(DropReason::FellBehind | DropReason::HistoryReset) => tracing::warn!(
                        revision = self.position,
                        reason = status.message(),
                        "sync stream dropped"
                    ),
                    _ => tracing::info!(
                        revision = self.position,
                        reason = status.message(),
                        "sync stream ended"
                    ),
                }
                // The stream delivers it after the queued messages.
                let _ = end.send(status);
            }
        }
    }

    async fn serve(&mut self, resume_revision: u64) -> Result<Infallible, Ended> {
        self.start(resume_revision).await?;
        loop {
            self.revisions.borrow_and_update();
            self.catch_up().await?;
            tokio::select! {
                biased;
                signal = &mut self.shutdown => return Err(self.ended_by(signal.ok())),
                () = self.tx.closed() => return Err(Ended::ClientGone),
                changed = self.revisions.changed() => {
                    if changed.is_err() {
                        return Err(self.shutdown_end());
                    }
                }
                _ = self.ping.tick() => self.send_ping().await?,
                _ = self.stall_check.tick() => self.check_stall()?,
            }
        }
    }

    /// Ends a stream (and its connection) whose queued messages have
    /// waited `stall_timeout` without the stream taking any.
    fn check_stall(&self) -> Result<(), Ended> {
        if self.tx.capacity() >= self.tx.max_capacity() {
            return Ok(());
        }
        let since = self.queued_since.max(self.taken.last());
        let timeout = self.fanout.config().stall_timeout;
        if since.elapsed() < timeout {
            return Ok(());
        }
        let killed = match &self.cut {
            Cut::Listener(remote) => remote.is_some_and(|addr| self.fanout.kill_connection(addr)),
            Cut::Switch(switch) => {
                switch.kill();
                true
            }
        };
        let replica = self.fanout.config().replica_id;
        let resume = if self.in_sync {
            format!("resume from revision {}", self.position)
        } else {
            "resume from the last revision you applied".to_owned()
        };
        tracing::warn!(
            ?timeout,
            connection_closed = killed,
            "sync client took nothing from its stream; cutting it"
        );
        Err(Ended::Dropped {
            status: Status::resource_exhausted(format!(
                "client stopped reading: nothing was taken from its stream for {timeout:?}; replica {replica} cut it; reconnect and {resume}"
            )),
            reason: Some(DropReason::Stalled),
        })
    }

    /// Hello, then a snapshot or a resume, then in-sync.
    async fn start(&mut self, mut resume: u64) -> Result<(), Ended> {
        let current = self.fanout.current_revision();
        if resume > current {
            let wait = self.fanout.config().resume_ahead_wait;
            tracing::info!(
                resume,
                current,
                ?wait,
                "client is ahead of this replica; waiting for it to catch up"
            );
            let revisions = &mut self.revisions;
            let reached = async move {
                let reached = revisions.wait_for(|revision| *revision >= resume);
                matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)))
            };
            let caught_up = tokio::select! {
                biased;
                signal = &mut self.shutdown => return Err(self.ended_by(signal.ok())),
                () = self.tx.closed() => return Err(Ended::ClientGone),
                reached = reached => reached,
            };
            if !caught_up {
                tracing::warn!(
                    resume,
                    current = self.fanout.current_revision(),
                    "replica did not catch up with the client; sending a snapshot"
                );
                resume = 0;
            }
        }
        if resume > 0 && self.fanout.can_resume(resume) {
            self.send(
                hello(
                    self.fanout.config().replica_id,
                    resume,
                    false,
                    self.compression,
                ),
                resume,
            )
            .await?;
            self.send(in_sync(resume), resume).await?;
            self.position = resume;
            self.in_sync = true;
            tracing::info!(revision = resume, "resumed without a snapshot");
            return Ok(());
        }
        if resume > 0 {
            tracing::info!(
                resume,
                oldest = self.fanout.oldest_resumable_revision(),
                "resume revision no longer retained; sending a snapshot"
            );
        }
        let fanout = Arc::clone(&self.fanout);
        let snapshot = tokio::select! {
            biased;
            signal = &mut self.shutdown => return Err(self.ended_by(signal.ok())),
            () = self.tx.closed() => return Err(Ended::ClientGone),
            snapshot = fanout.snapshot(self.compression) => snapshot.map_err(|status| Ended::Dropped {
                status,
                reason: None,
            })?,
        };
        let started = Instant::now();
        let revision = snapshot.revision;
        self.send(
            hello(
                self.fanout.config().replica_id,
                revision,
                true,
                self.compression,
            ),
            revision,
        )
        .await?;
        let count = u32::try_from(snapshot.chunks.len()).unwrap_or(u32::MAX);
        for (index, chunk) in snapshot.chunks.iter().enumerate() {
            self.send(snapshot_chunk(revision, index, count, chunk), revision)
                .await?;
        }
        self.send(in_sync(revision), revision).await?;
        self.position = revision;
        self.in_sync = true;
        self.fanout
            .metrics()
            .client_snapshot_send_secs
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            revision,
            entries = snapshot.entries,
            chunks = snapshot.chunks.len(),
            compression = snapshot.compression.name(),
            "snapshot sent"
        );
        Ok(())
    }

    /// Queues every retained breadcrumb after the client's position.
    async fn catch_up(&mut self) -> Result<(), Ended> {
        loop {
            let (message, last) = match self.fanout.next_delta(self.position, self.compression) {
                NextDelta::UpToDate => return Ok(()),
                NextDelta::Gone { oldest, by_reset } => return Err(self.lost(oldest, by_reset)),
                NextDelta::EncodingFailed => {
                    return Err(Ended::Dropped {
                        status: Status::internal("encoding a delta batch failed"),
                        reason: None,
                    });
                }
                NextDelta::Batch { message, last } => (message, last),
            };
            self.send(message, last).await?;
            self.position = last;
            if self.ping.tick().now_or_never().is_some() {
                self.send_ping().await?;
            }
        }
    }

    async fn send_ping(&mut self) -> Result<(), Ended> {
        let unix_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let message = Message::Ping(Ping {
            unix_millis,
            revision: self.position,
        });
        let position = self.position;
        self.send(
            SyncMessage {
                message: Some(message),
            },
            position,
        )
        .await
    }

    /// Queues `message`, after which the client will need the revisions
    /// after `then`. Waiting for room in the queue ends the stream when
    /// those revisions leave the history meanwhile, or on shutdown.
    async fn send(&mut self, message: SyncMessage, then: u64) -> Result<(), Ended> {
        loop {
            tokio::select! {
                biased;
                signal = &mut self.shutdown => return Err(self.ended_by(signal.ok())),
                permit = self.tx.reserve() => {
                    return match permit {
                        Ok(permit) => {
                            // The reserved slot counts as taken: the queue
                            // was empty before it.
                            if self.tx.capacity() + 1 >= self.tx.max_capacity() {
                                self.queued_since = Instant::now();
                            }
                            permit.send(Box::new(message));
                            Ok(())
                        }
                        Err(_) => Err(Ended::ClientGone),
                    };
                }
                _ = self.stall_check.tick() => self.check_stall()?,
                changed = self.revisions.changed() => {
                    if changed.is_err() {
                        return Err(self.shutdown_end());
                    }
                    if let Next::Gone { oldest, by_reset } = self.fanout.next_after(then) {
                        return Err(self.lost(oldest, by_reset));
                    }
                }
            }
        }
    }

    /// The end of a client whose next revisions left the history.
    fn lost(&self, oldest: u64, by_reset: bool) -> Ended {
        let replica = self.fanout.config().replica_id;
        let resume = if self.in_sync {
            format!("resume from revision {}", self.position)
        } else {
            "resume from the last revision you applied".to_owned()
        };
        if by_reset {
            Ended::Dropped {
                status: Status::aborted(format!(
                    "replica {replica}'s history restarted at revision {oldest} after a Raft snapshot; reconnect and {resume}"
                )),
                reason: Some(DropReason::HistoryReset),
            }
        } else {
            Ended::Dropped {
                status: Status::resource_exhausted(format!(
                    "client fell behind: the revisions after {} are no longer retained by replica {replica} (oldest resumable is {oldest}); reconnect and {resume}",
                    self.position
                )),
                reason: Some(DropReason::FellBehind),
            }
        }
    }

    /// The end a signal from [`Fanout`] asks for (a dropped signal is a
    /// shutdown).
    fn ended_by(&self, signal: Option<EndSignal>) -> Ended {
        match signal {
            Some(EndSignal::NotServing(reason)) => {
                let replica = self.fanout.config().replica_id;
                Ended::Dropped {
                    status: super::retry_later(Status::unavailable(format!(
                        "replica {replica} stopped serving: {reason}; reconnect to another replica and {}",
                        self.resume_hint()
                    ))),
                    reason: Some(DropReason::NotServing),
                }
            }
            Some(EndSignal::Shutdown) | None => self.shutdown_end(),
        }
    }

    fn resume_hint(&self) -> String {
        if self.in_sync {
            format!("resume from revision {}", self.position)
        } else {
            "resume from the last revision you applied".to_owned()
        }
    }

    fn shutdown_end(&self) -> Ended {
        let replica = self.fanout.config().replica_id;
        let resume = if self.in_sync {
            format!("resume from revision {}", self.position)
        } else {
            "resume from the last revision you applied".to_owned()
        };
        Ended::Dropped {
            status: Status::unavailable(format!(
                "replica {replica} is shutting down; reconnect (to any replica) and {resume}"
            )),
            reason: Some(DropReason::Shutdown),
        }
    }
}

pub(crate) fn hello(
    replica_id: u64,
    revision: u64,
    snapshot_follows: bool,
    compression: Compression,
) -> SyncMessage {
    SyncMessage {
        message: Some(Message::Hello(ServerHello {
            server_version: manul_proto::PROTOCOL_VERSION.to_owned(),
            replica_id,
            revision,
            snapshot_follows,
            compression: compression.name().to_owned(),
        })),
    }
}

pub(crate) fn in_sync(revision: u64) -> SyncMessage {
    SyncMessage {
        message: Some(Message::InSync(InSync { revision })),
    }
}

/// Chunk `index` of `count` of a snapshot at `revision`.
pub(crate) fn snapshot_chunk(
    revision: u64,
    index: usize,
    count: u32,
    chunk: &Bytes,
) -> SyncMessage {
    SyncMessage {
        message: Some(Message::Snapshot(SnapshotChunk {
            revision,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            count,
            entries: chunk.clone(),
        })),
    }
}

pub(crate) fn deltas(first_revision: u64, last_revision: u64, entries: Bytes) -> SyncMessage {
    SyncMessage {
        message: Some(Message::Deltas(DeltaBatch {
            first_revision,
            last_revision,
            entries,
        })),
    }
}
