//! The Raft thread: owns the `RawNode`, its storage and the state machine,
//! and runs the ready loop in the order raft-rs requires:
//!
//! 1. send the messages that need no persistence (the leader's appends);
//! 2. install an incoming snapshot (storage, then the state machine);
//! 3. apply committed entries (already durable on a quorum);
//! 4. append new entries and the hard state, then fsync;
//! 5. only then send the messages that depend on what was persisted;
//! 6. advance, and repeat for the light ready.
//!
//! A caller's write is answered from step 3 or 6, after its entry is
//! committed and applied, so an acknowledged write is never lost.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use manul_proto::v1::{Command, Member, StateSnapshot};

/// Most bytes of committed entries one Ready hands to the apply loop (at
/// least one entry): a restart replays a long log in pieces.
const REPLAY_PIECE_BYTES: u64 = 16 * 1024 * 1024;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::guard::{self, LogView};
use super::transport::Transport;
use super::{MembershipChange, Msg, NodeConfig, NodeError, RaftStatus, Shared};
use crate::fanout::Fanout;
use crate::raft_storage::SledStorage;
use crate::state::{Applied, StateMachine};

/// Raft gauges, named like the rest of Typha's metrics.
#[derive(Debug, Clone, Default)]
pub struct RaftMetrics {
    pub term: Gauge,
    pub leader_id: Gauge,
    pub is_leader: Gauge,
    pub commit_index: Gauge<u64, AtomicU64>,
    pub applied_index: Gauge<u64, AtomicU64>,
    pub snapshot_index: Gauge<i64, AtomicI64>,
    pub refused_messages: Counter,
    pub apply_errors: Counter,
}

impl RaftMetrics {
    pub fn register(registry: &mut Registry) -> RaftMetrics {
        let m = RaftMetrics::default();
        registry.register("typha_raft_term", "Current Raft term", m.term.clone());
        registry.register(
            "typha_raft_leader_id",
            "Id of the leader this replica follows (0: none)",
            m.leader_id.clone(),
        );
        registry.register(
            "typha_raft_is_leader",
            "1 when this replica is the leader",
            m.is_leader.clone(),
        );
        registry.register(
            "typha_raft_commit_index",
            "Highest Raft index known committed",
            m.commit_index.clone(),
        );
        registry.register(
            "typha_raft_applied_index",
            "Highest Raft index applied to the state machine (the revision)",
            m.applied_index.clone(),
        );
        registry.register(
            "typha_raft_snapshot_index",
            "Index of the last Raft snapshot (log compacted up to here)",
            m.snapshot_index.clone(),
        );
        registry.register(
            "typha_raft_refused_messages",
            "Raft messages from peers dropped before Raft saw them (not a member, a local-only type, an impossible field)",
            m.refused_messages.clone(),
        );
        registry.register(
            "typha_raft_apply_errors",
            "Committed entries skipped because they could not be applied (invalid command, refused configuration change)",
            m.apply_errors.clone(),
        );
        m
    }
}

/// Forwards raft-rs's slog records to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let msg = record.msg().to_string();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => error!(target: "raft", "{msg}"),
            slog::Level::Warning => warn!(target: "raft", "{msg}"),
            slog::Level::Info => info!(target: "raft", "{msg}"),
            _ => debug!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}

type Pending<T> = HashMap<u64, oneshot::Sender<Result<T, NodeError>>>;

pub(super) struct Driver {
    raw: RawNode<SledStorage>,
    storage: SledStorage,
    shared: Arc<Shared>,
    fanout: Arc<Fanout>,
    transport: Box<dyn Outbox>,
    metrics: RaftMetrics,
    config: NodeConfig,
    proposals: Pending<Applied>,
    memberships: Pending<Vec<Member>>,
    /// ReadIndex requests waiting for a quorum's heartbeat answers, by the
    /// request id carried as their context.
    reads: Pending<u64>,
    /// Reads not handed to Raft yet: a new leader drops a ReadIndex until
    /// it has committed an entry of its own term, so they wait for that.
    unissued_reads: Vec<u64>,
    next_request: u64,
    last_snapshot: u64,
    /// Bytes of the entries applied since the last snapshot (or since the
    /// start: what a restart replays counts too).
    log_bytes: u64,
    /// Take a snapshot after this Ready even if the log is short: a member
    /// was added, and Raft only lets it restore a snapshot whose
    /// configuration includes it.
    force_snapshot: bool,
    /// Set when raft-rs panicked: the replica stops and reports unhealthy.
    broken: bool,
    /// Every entry applied (index, term, data), kept only when asked for
    /// (the simulation checks replicas' logs against each other).
    applied_log: Option<Vec<(u64, u64, bytes::Bytes)>>,
}

/// Marks the replica dead when the Raft thread ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// Where the Raft thread's outgoing messages go: the gRPC [`Transport`] in
/// a `typha` process, a simulated network in `crate::sim`.
pub trait Outbox: Send {
    fn send(&mut self, m: Message);
}

impl Outbox for Transport {
    fn send(&mut self, m: Message) {
        Transport::send(self, m);
    }
}

/// Starts the Raft thread; must be called inside a Tokio runtime (the
/// transport's sender tasks run on it).
pub(super) fn spawn(
    config: NodeConfig,
    fanout: Arc<Fanout>,
    metrics: RaftMetrics,
) -> Result<(Sender<Msg>, Arc<Shared>), NodeError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let token = config.peer_token.clone();
    let dial = config.peer_transport.clone();
    let id = config.id;
    let transport_tx = tx.clone();
    let request_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut driver = Driver::open(
        config,
        fanout,
        metrics,
        move |shared| {
            Box::new(Transport::new(
                id,
                shared.clone(),
                transport_tx,
                token,
                dial,
            ))
        },
        request_base,
    )?;
    let shared = driver.shared.clone();
    let name = format!("raft-{}", driver.config.id);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || driver.run(rx))
        .map_err(|e| NodeError::Dropped(format!("cannot start the Raft thread: {e}")))?;
    Ok((tx, shared))
}

impl Driver {
    /// Opens the storage, bootstraps a founding member, rebuilds the state
    /// machine from the stored snapshot and builds the `RawNode`. Request
    /// ids start from `request_base` (the clock in a `typha` process, a
    /// seed in the simulation).
    pub(super) fn open(
        config: NodeConfig,
        fanout: Arc<Fanout>,
        metrics: RaftMetrics,
        outbox: impl FnOnce(&Arc<Shared>) -> Box<dyn Outbox>,
        request_base: u64,
    ) -> Result<Driver, NodeError> {
        let voters: Vec<u64> = if config.join {
            Vec::new()
        } else {
            config.peers.keys().copied().collect()
        };
        let storage = SledStorage::open(&config.data_dir.join("raft"), &voters)
            .map_err(NodeError::Storage)?;
        if !voters.is_empty() && storage.snapshot_metadata().index == 0 {
            bootstrap(&storage, &config, &voters)?;
        }
        let mut sm = StateMachine::new();
        if let Some(snap) = storage.stored_snapshot() {
            match StateSnapshot::decode(snap.get_data()) {
                Ok(s) => sm.restore(&s),
                Err(e) => {
                    return Err(NodeError::Dropped(format!(
                        "stored Raft snapshot is corrupt: {e}"
                    )));
                }
            }
        }
        let snapshot_index = storage.snapshot_metadata().index;
        let mut addresses = config.peers.clone();
        for m in sm.members() {
            addresses.insert(m.id, m.address.clone());
        }
        fanout.reset(sm.revision());
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: sm.revision(),
            // 0: raft-rs's default, twice the election timeout.
            max_election_tick: config.max_election_ticks,
            max_size_per_msg: 4 * 1024 * 1024,
            max_inflight_msgs: 256,
            // A restart (or a follower catching up) applies the log in pieces
            // of this size, not all of it in one Ready.
            max_committed_size_per_ready: REPLAY_PIECE_BYTES,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Drain::fuse(TracingDrain), slog::o!());
        let raw = RawNode::new(&raft_config, storage.clone(), &logger).map_err(NodeError::Raft)?;
        let shared = Arc::new(Shared {
            state: RwLock::new(sm),
            status: RwLock::new(RaftStatus::default()),
            addresses: RwLock::new(addresses),
            alive: AtomicBool::new(true),
        });
        let transport = outbox(&shared);
        let next_request = (config.id << 48) | (request_base & 0xFFFF_FFFF_FFFF);
        let driver = Driver {
            raw,
            storage,
            shared,
            fanout,
            transport,
            metrics,
            config,
            proposals: HashMap::new(),
            memberships: HashMap::new(),
            reads: HashMap::new(),
            unissued_reads: Vec::new(),
            next_request,
            last_snapshot: snapshot_index,
            log_bytes: 0,
            force_snapshot: false,
            broken: false,
            applied_log: None,
        };
        driver.metrics.snapshot_index.set(snapshot_index as i64);
        Ok(driver)
    }
}

/// Index of the snapshot every founding member starts from.
const BOOTSTRAP_INDEX: u64 = 1;

/// Gives a founding member the same initial snapshot as every other one:
/// index 1, the founding voters and their addresses. The log then starts
/// at 2, so a replica that joins later is sent a snapshot first and learns
/// the membership from it (the bootstrap configuration is in no log entry).
fn bootstrap(storage: &SledStorage, config: &NodeConfig, voters: &[u64]) -> Result<(), NodeError> {
    use raft::Storage as _;
    let last = storage.last_index().map_err(NodeError::Raft)?;
    if last != 0 {
        return Ok(());
    }
    let members = config
        .peers
        .iter()
        .map(|(id, address)| Member {
            id: *id,
            address: address.clone(),
            learner: false,
        })
        .collect();
    let data = StateSnapshot {
        revision: BOOTSTRAP_INDEX,
        entries: Vec::new(),
        members,
        ..Default::default()
    };
    let mut snap = Snapshot {
        data: data.encode_to_vec().into(),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = BOOTSTRAP_INDEX;
    meta.term = 1;
    meta.mut_conf_state().voters = voters.to_vec();
    storage.apply_snapshot(&snap).map_err(NodeError::Storage)?;
    storage.flush().map_err(NodeError::Storage)
}

impl Driver {
    fn run(&mut self, rx: Receiver<Msg>) {
        let span = tracing::info_span!("raft", id = self.config.id);
        let _enter = span.enter();
        let _alive = AliveGuard(self.shared.clone());
        if let Err(e) = self.start() {
            error!("Raft ready handling failed, stopping this replica: {e}");
            return;
        }
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Stop) => break,
                Ok(msg) => {
                    self.handle(msg);
                    // Batch whatever else is queued into the same Ready.
                    let mut stop = false;
                    for msg in rx.try_iter().take(4096) {
                        if matches!(msg, Msg::Stop) {
                            stop = true;
                            break;
                        }
                        self.handle(msg);
                    }
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.broken {
                break;
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick = Instant::now() + self.config.tick;
            }
            if let Err(e) = self.on_ready() {
                error!("Raft ready handling failed, stopping this replica: {e}");
                break;
            }
            self.publish_status();
        }
        self.fail_pending();
        info!("Raft thread stopped");
    }

    /// What the thread does before its loop: a sole voter campaigns, then
    /// the first Ready (a restart's replay starts here).
    pub(super) fn start(&mut self) -> Result<(), NodeError> {
        self.campaign_if_sole_voter();
        self.on_ready()?;
        self.publish_status();
        Ok(())
    }

    /// One Raft tick (the loop calls it every `config.tick`).
    pub(super) fn tick(&mut self) {
        self.raw.tick();
    }

    /// Whether raft-rs panicked: the replica must stop.
    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts keeping every applied entry, for [`Driver::take_applied`].
    pub(super) fn record_applied(&mut self) {
        self.applied_log.get_or_insert_with(Vec::new);
    }

    /// The entries applied since the last call (index, term, data).
    pub(super) fn take_applied(&mut self) -> Vec<(u64, u64, bytes::Bytes)> {
        self.applied_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Answers every waiting write and membership change: stopped.
    pub(super) fn fail_pending(&mut self) {
        for (_, tx) in self.proposals.drain() {
            let _ = tx.send(Err(NodeError::Stopped));
        }
        for (_, tx) in self.memberships.drain() {
            let _ = tx.send(Err(NodeError::Stopped));
        }
        for (_, tx) in self.reads.drain() {
            let _ = tx.send(Err(NodeError::Stopped));
        }
    }

    /// Answers the waiting reads once this replica stopped leading (a read
    /// confirmed by no quorum is never answered with an index), and forgets
    /// those whose caller gave up.
    fn settle_reads(&mut self) {
        self.reads.retain(|_, tx| !tx.is_closed());
        if self.reads.is_empty() {
            self.unissued_reads.clear();
            return;
        }
        if self.raw.raft.state == StateRole::Leader {
            self.issue_reads();
            return;
        }
        self.unissued_reads.clear();
        for (_, tx) in std::mem::take(&mut self.reads) {
            let _ = tx.send(Err(self.not_leader()));
        }
    }

    /// Hands the waiting reads to Raft once this leader has committed an
    /// entry of its term.
    fn issue_reads(&mut self) {
        if !self.raw.raft.commit_to_current_term() {
            return;
        }
        for rid in std::mem::take(&mut self.unissued_reads) {
            if self.reads.contains_key(&rid) {
                self.raw.read_index(rid.to_be_bytes().to_vec());
            }
        }
    }

    /// A replica that is the only voter of its configuration cannot lose an
    /// election: it campaigns at once instead of waiting out an election
    /// timeout (1-2 s), so a fresh single-node Typha takes writes within
    /// milliseconds of starting. A replica with peers waits as Raft
    /// prescribes, so a restarted member does not disrupt a leader.
    fn campaign_if_sole_voter(&mut self) {
        let cs = self.storage.conf_state();
        if cs.voters != [self.config.id] || !cs.voters_outgoing.is_empty() {
            return;
        }
        info!("the only voter of its configuration: campaigning at once");
        if let Err(e) = self.raw.campaign() {
            warn!("could not campaign at start, waiting for the election timeout: {e}");
        }
    }

    fn not_leader(&self) -> NodeError {
        let id = self.raw.raft.leader_id;
        let leader = (id != 0).then(|| {
            let addr = self
                .shared
                .addresses
                .read()
                .ok()
                .and_then(|a| a.get(&id).cloned())
                .unwrap_or_default();
            (id, addr)
        });
        NodeError::NotLeader { leader }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request = self.next_request.wrapping_add(1);
        self.next_request
    }

    pub(super) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Propose { mut command, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                command.request_id = self.request_id();
                match self.raw.propose(Vec::new(), command.encode_to_vec()) {
                    Ok(()) => {
                        self.proposals.insert(command.request_id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Raft(e)));
                    }
                }
            }
            Msg::ReadIndex { reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let rid = self.request_id();
                self.reads.insert(rid, reply);
                self.unissued_reads.push(rid);
                self.issue_reads();
            }
            Msg::Raft(m) => self.step(*m),
            Msg::Unreachable(id) => self.raw.report_unreachable(id),
            Msg::SnapshotDone { to, ok } => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Msg::Membership { change, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let cs = self.storage.conf_state();
                let target = match &change {
                    MembershipChange::AddLearner { id, .. }
                    | MembershipChange::Promote { id }
                    | MembershipChange::Remove { id } => *id,
                };
                let matched = self.raw.raft.prs().get(target).map(|p| p.matched);
                let committed = self.raw.raft.raft_log.committed;
                if let Err(why) = guard::check_change(&change, &cs, matched, committed) {
                    let _ = reply.send(Err(NodeError::Membership(why)));
                    return;
                }
                let rid = self.request_id();
                let (kind, id, address) = match change {
                    MembershipChange::AddLearner { id, address } => {
                        (ConfChangeType::AddLearnerNode, id, address)
                    }
                    MembershipChange::Promote { id } => {
                        let address = self
                            .shared
                            .addresses
                            .read()
                            .ok()
                            .and_then(|a| a.get(&id).cloned());
                        let Some(address) = address else {
                            let _ = reply.send(Err(NodeError::Membership(format!(
                                "replica {id} is not a member; add it as a learner first"
                            ))));
                            return;
                        };
                        (ConfChangeType::AddNode, id, address)
                    }
                    MembershipChange::Remove { id } => {
                        (ConfChangeType::RemoveNode, id, String::new())
                    }
                };
                let mut cc = ConfChange::default();
                cc.set_change_type(kind);
                cc.node_id = id;
                cc.context = format!("{rid}|{address}").into_bytes().into();
                match self.raw.propose_conf_change(Vec::new(), cc) {
                    Ok(()) => {
                        self.memberships.insert(rid, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Membership(e.to_string())));
                    }
                }
            }
            Msg::Stop => {}
        }
    }

    /// Steps a peer's message once [`guard::admit`] has accepted it. A
    /// panic inside raft-rs (which no admitted message should cause) stops
    /// the replica visibly: `/healthz` then fails.
    pub(super) fn step(&mut self, m: Message) {
        let cs = self.storage.conf_state();
        let view = LogView {
            id: self.config.id,
            conf: &cs,
            last_index: self.raw.raft.raft_log.last_index(),
        };
        if let Err(why) = guard::admit(&m, &view) {
            self.metrics.refused_messages.inc();
            warn!(from = m.from, kind = ?m.get_msg_type(), "dropped a Raft message: {why}");
            return;
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.raw.step(m))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("dropped a Raft message: {e}"),
            Err(_) => {
                error!("Raft panicked on a peer's message; stopping this replica");
                self.broken = true;
            }
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            self.transport.send(m);
        }
    }

    pub(super) fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        for rs in ready.take_read_states() {
            let rid = <[u8; 8]>::try_from(rs.request_ctx.as_slice()).map(u64::from_be_bytes);
            if let Some(tx) = rid.ok().and_then(|rid| self.reads.remove(&rid)) {
                let _ = tx.send(Ok(rs.index));
            }
        }
        if !ready.messages().is_empty() {
            let msgs = ready.take_messages();
            self.send(msgs);
        }
        if *ready.snapshot() != Snapshot::default() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        if !ready.entries().is_empty() {
            self.storage
                .append(ready.entries())
                .map_err(NodeError::Storage)?;
        }
        if let Some(hs) = ready.hs() {
            self.storage
                .set_hard_state(hs)
                .map_err(NodeError::Storage)?;
        }
        if ready.must_sync() || !ready.entries().is_empty() || ready.hs().is_some() {
            self.storage.flush().map_err(NodeError::Storage)?;
        }
        if !ready.persisted_messages().is_empty() {
            let msgs = ready.take_persisted_messages();
            self.send(msgs);
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage
                .set_commit(commit)
                .map_err(NodeError::Storage)?;
        }
        let msgs = light.take_messages();
        self.send(msgs);
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.settle_reads();
        self.maybe_snapshot()
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let data = StateSnapshot::decode(snap.get_data())
            .map_err(|e| NodeError::Dropped(format!("received a corrupt snapshot: {e}")))?;
        self.storage
            .apply_snapshot(&snap)
            .map_err(NodeError::Storage)?;
        let index = snap.get_metadata().index;
        if let Ok(mut sm) = self.shared.state.write() {
            sm.restore(&data);
            sm.advance(index);
        }
        // Peer addresses come from membership only: the snapshot's members
        // replace whatever was known.
        if let Ok(mut a) = self.shared.addresses.write() {
            let own = a.get(&self.config.id).cloned();
            *a = data
                .members
                .iter()
                .map(|m| (m.id, m.address.clone()))
                .collect();
            if let Some(own) = own {
                a.entry(self.config.id).or_insert(own);
            }
        }
        self.last_snapshot = index;
        self.log_bytes = 0;
        self.metrics.snapshot_index.set(index as i64);
        self.fanout.reset(index);
        info!(
            index,
            resources = data.entries.len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut published = Vec::with_capacity(entries.len());
        let mut replies = Vec::new();
        let mut member_replies = Vec::new();
        let mut skipped = Vec::new();
        {
            let Ok(mut sm) = self.shared.state.write() else {
                return Err(NodeError::Dropped("state machine lock poisoned".into()));
            };
            for e in entries {
                let index = e.index;
                if index <= sm.revision() {
                    continue;
                }
                if let Some(log) = self.applied_log.as_mut() {
                    log.push((index, e.term, e.data.clone()));
                }
                self.log_bytes += e.data.len() as u64;
                match e.get_entry_type() {
                    EntryType::EntryNormal if e.data.is_empty() => {
                        sm.advance(index);
                        published.push((index, Vec::new()));
                    }
                    EntryType::EntryNormal => {
                        let checked = Command::decode(e.get_data())
                            .map_err(|err| (0, format!("undecodable: {err}")))
                            .and_then(|cmd| match guard::check_command(&cmd) {
                                Ok(()) => Ok(cmd),
                                Err(why) => Err((cmd.request_id, why)),
                            });
                        match checked {
                            Ok(cmd) => {
                                let applied = sm.apply(index, &cmd);
                                published.push((index, applied.result.clone().unwrap_or_default()));
                                replies.push(applied);
                            }
                            Err((request_id, why)) => {
                                error!(index, "skipping a committed entry: {why}");
                                self.metrics.apply_errors.inc();
                                sm.advance(index);
                                published.push((index, Vec::new()));
                                skipped.push((request_id, why));
                            }
                        }
                    }
                    EntryType::EntryConfChange => {
                        let mut cc = ConfChange::default();
                        let applied = cc
                            .merge_from_bytes(e.get_data())
                            .map_err(|err| format!("undecodable: {err}"))
                            .and_then(|()| {
                                self.raw
                                    .apply_conf_change(&cc)
                                    .map_err(|err| err.to_string())
                            });
                        let context = String::from_utf8_lossy(cc.get_context()).into_owned();
                        let (rid, address) = context.split_once('|').unwrap_or(("0", ""));
                        let rid = rid.parse::<u64>().unwrap_or(0);
                        match applied {
                            Err(err) => {
                                error!(
                                    index,
                                    "skipping a configuration change raft refused: {err}"
                                );
                                self.metrics.apply_errors.inc();
                                member_replies.push((rid, Err(err)));
                            }
                            Ok(cs) => {
                                self.storage
                                    .set_conf_state(&cs)
                                    .map_err(NodeError::Storage)?;
                                let id = cc.node_id;
                                match cc.get_change_type() {
                                    ConfChangeType::RemoveNode => {
                                        sm.remove_member(id);
                                        if let Ok(mut a) = self.shared.addresses.write() {
                                            a.remove(&id);
                                        }
                                    }
                                    kind => {
                                        self.force_snapshot = true;
                                        let learner = kind == ConfChangeType::AddLearnerNode;
                                        sm.set_member(Member {
                                            id,
                                            address: address.to_string(),
                                            learner,
                                        });
                                        if let Ok(mut a) = self.shared.addresses.write() {
                                            a.insert(id, address.to_string());
                                        }
                                    }
                                }
                                info!(index, node = id, change = ?cc.get_change_type(), "membership changed");
                                member_replies.push((rid, Ok(())));
                            }
                        }
                        sm.advance(index);
                        published.push((index, Vec::new()));
                    }
                    EntryType::EntryConfChangeV2 => {
                        warn!(
                            index,
                            "ignoring a joint configuration change (not proposed by Manul)"
                        );
                        sm.advance(index);
                        published.push((index, Vec::new()));
                    }
                }
            }
        }
        for (revision, entries) in published {
            self.fanout.publish(revision, entries);
        }
        for applied in replies {
            if let Some(tx) = self.proposals.remove(&applied.request_id) {
                let _ = tx.send(Ok(applied));
            }
        }
        for (rid, why) in skipped {
            if let Some(tx) = self.proposals.remove(&rid) {
                let _ = tx.send(Err(NodeError::Dropped(format!(
                    "the committed entry was skipped: {why}"
                ))));
            }
        }
        for (rid, outcome) in member_replies {
            if let Some(tx) = self.memberships.remove(&rid) {
                let _ = tx.send(
                    outcome
                        .map(|()| self.members())
                        .map_err(NodeError::Membership),
                );
            }
        }
        Ok(())
    }

    /// Voters and learners with their addresses.
    fn members(&self) -> Vec<Member> {
        let cs = self.storage.conf_state();
        let addresses = self
            .shared
            .addresses
            .read()
            .map(|a| a.clone())
            .unwrap_or_default();
        let addr = |id: &u64| addresses.get(id).cloned().unwrap_or_default();
        let mut out: Vec<Member> = cs
            .voters
            .iter()
            .map(|id| Member {
                id: *id,
                address: addr(id),
                learner: false,
            })
            .chain(cs.learners.iter().map(|id| Member {
                id: *id,
                address: addr(id),
                learner: true,
            }))
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }

    /// Takes a snapshot and compacts the log when `snapshot_every` entries
    /// or `snapshot_every_bytes` bytes were applied since the last one.
    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let (applied, data) = {
            let Ok(sm) = self.shared.state.read() else {
                return Ok(());
            };
            let due = sm.revision() >= self.last_snapshot + self.config.snapshot_every
                || self.log_bytes >= self.config.snapshot_every_bytes;
            if sm.revision() <= self.last_snapshot || !(due || self.force_snapshot) {
                return Ok(());
            }
            let mut snap = sm.to_snapshot();
            snap.members = self.members();
            (sm.revision(), snap.encode_to_vec())
        };
        let cs = self.storage.conf_state();
        self.storage
            .create_snapshot(applied, cs, data)
            .map_err(NodeError::Storage)?;
        // Durable now, and the files the compaction released are removed.
        self.storage.flush().map_err(NodeError::Storage)?;
        self.last_snapshot = applied;
        self.log_bytes = 0;
        // One snapshot covers the added member: later entries wait for
        // --snapshot-every again.
        self.force_snapshot = false;
        self.metrics.snapshot_index.set(applied as i64);
        info!(
            index = applied,
            "took a Raft snapshot and compacted the log"
        );
        Ok(())
    }

    pub(super) fn publish_status(&mut self) {
        let cs = self.storage.conf_state();
        let raft = &self.raw.raft;
        let learner = cs.learners.contains(&self.config.id);
        let role = match raft.state {
            StateRole::Leader => "leader",
            _ if learner => "learner",
            StateRole::Follower => "follower",
            StateRole::Candidate | StateRole::PreCandidate => "candidate",
        };
        let applied = self.shared.state.read().map_or(0, |s| s.revision());
        let status = RaftStatus {
            id: self.config.id,
            role: role.to_string(),
            term: raft.term,
            leader_id: raft.leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: applied,
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            matched: if raft.state == StateRole::Leader {
                raft.prs().iter().map(|(id, p)| (*id, p.matched)).collect()
            } else {
                Default::default()
            },
        };
        self.metrics.term.set(status.term as i64);
        self.metrics.leader_id.set(status.leader_id as i64);
        self.metrics
            .is_leader
            .set(i64::from(raft.state == StateRole::Leader));
        self.metrics.commit_index.set(status.commit_index);
        self.metrics.applied_index.set(applied);
        if let Ok(mut s) = self.shared.status.write()
            && *s != status
        {
            *s = status;
        }
    }
}
