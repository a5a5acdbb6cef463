//! The Raft node: a handle to the thread that owns the tikv `RawNode`, the
//! `sled` storage and the state machine.
//!
//! Writes go in as [`Command`]s and are answered once the entry that carries
//! them is committed (persisted and fsynced on a quorum) and applied here.
//! Each applied entry is published to the fan-out.
//!
//! What survives a crash, step by step:
//! - a proposal not yet appended is lost, and was never acknowledged;
//! - entries appended and fsynced survive; once committed they are applied
//!   again on restart (the state machine is rebuilt from the last Raft
//!   snapshot plus the log after it);
//! - a write is acknowledged only after it is committed and applied, so an
//!   acknowledged write is on a quorum's disks and survives any minority of
//!   crashes.

pub mod core;
mod driver;
pub mod guard;
#[cfg(test)]
mod tests;
pub mod transport;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use manul_proto::v1::{Command, Member};
use tokio::sync::oneshot;

use crate::fanout::Fanout;
use crate::state::{Applied, StateMachine};

pub use driver::{Outbox, RaftMetrics};

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    /// Every initial member's id and peer address, this node's included.
    pub peers: BTreeMap<u64, String>,
    /// Join an existing cluster (start with no voters and wait to be added)
    /// instead of bootstrapping from `peers`.
    pub join: bool,
    pub tick: Duration,
    pub election_ticks: usize,
    /// Election timeouts are drawn from `[election_ticks, this)`; 0 means
    /// twice `election_ticks`. The simulation sets `election_ticks + 1`
    /// (a fixed timeout per replica) so that a seed decides every timeout.
    pub max_election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Take a Raft snapshot and compact the log every this many entries.
    pub snapshot_every: u64,
    /// ... or once the entries applied since the last snapshot hold this
    /// many bytes, whichever comes first: the log on disk, and what a
    /// restart replays, stay bounded by size as well as by count.
    pub snapshot_every_bytes: u64,
    /// Sent with every Raft message to other replicas' peer listeners.
    pub peer_token: Option<crate::peer_auth::PeerToken>,
    /// How Raft messages reach other replicas (TLS or plaintext).
    pub peer_transport: manul_tls::connect::Transport,
}

impl NodeConfig {
    pub fn new(id: u64, data_dir: PathBuf, peers: BTreeMap<u64, String>) -> NodeConfig {
        NodeConfig {
            id,
            data_dir,
            peers,
            join: false,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            max_election_ticks: 0,
            heartbeat_ticks: 1,
            snapshot_every: 10_000,
            snapshot_every_bytes: 64 * 1024 * 1024,
            peer_token: None,
            peer_transport: manul_tls::connect::Transport::Plain,
        }
    }
}

/// Errors a caller of the node can see.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("this replica is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(u64, String)> },
    #[error("the Raft node has stopped")]
    Stopped,
    #[error("proposal dropped: {0}")]
    Dropped(String),
    // These two carry their cause's text (they are shown in gRPC statuses
    // and log lines on their own), so it is not also their source.
    #[error("storage: {0}")]
    Storage(crate::raft_storage::StorageError),
    #[error("raft: {0}")]
    Raft(raft::Error),
    #[error("invalid membership change: {0}")]
    Membership(String),
}

/// The node's role and progress, refreshed after every Raft `Ready`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// On the leader: each member's log as the leader knows it (raft-rs's
    /// `matched`), to promote a learner once caught up; empty elsewhere.
    pub matched: BTreeMap<u64, u64>,
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner { id: u64, address: String },
    Promote { id: u64 },
    Remove { id: u64 },
}

pub(crate) enum Msg {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Applied, NodeError>>,
    },
    /// Confirm leadership with a quorum (Raft's ReadIndex) and answer the
    /// commit index a linearizable read must wait for.
    ReadIndex {
        reply: oneshot::Sender<Result<u64, NodeError>>,
    },
    Raft(Box<raft::prelude::Message>),
    Unreachable(u64),
    SnapshotDone {
        to: u64,
        ok: bool,
    },
    Membership {
        change: MembershipChange,
        reply: oneshot::Sender<Result<Vec<Member>, NodeError>>,
    },
    Stop,
}

/// State shared between the Raft thread and the servers.
#[derive(Debug)]
pub struct Shared {
    pub state: RwLock<StateMachine>,
    pub status: RwLock<RaftStatus>,
    /// Peer addresses by replica id: from the founding `--peers` list and
    /// then from membership (configuration changes and snapshots), never
    /// from what a message claims.
    pub addresses: RwLock<BTreeMap<u64, String>>,
    /// False once the Raft thread has ended, however it ended.
    pub alive: AtomicBool,
}

/// A handle to the running node. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Node {
    tx: std::sync::mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    id: u64,
}

impl Node {
    /// Opens the storage, rebuilds the state machine and starts the Raft
    /// thread. Fails when the storage cannot be opened.
    pub fn start(
        config: NodeConfig,
        fanout: Arc<Fanout>,
        metrics: RaftMetrics,
    ) -> Result<Node, NodeError> {
        let id = config.id;
        let (tx, shared) = driver::spawn(config, fanout, metrics)?;
        Ok(Node { tx, shared, id })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn status(&self) -> RaftStatus {
        self.shared
            .status
            .read()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The address of a member, if known.
    pub fn address_of(&self, id: u64) -> Option<String> {
        self.shared.addresses.read().ok()?.get(&id).cloned()
    }

    pub fn addresses(&self) -> BTreeMap<u64, String> {
        self.shared
            .addresses
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Whether the Raft thread still runs.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// The leader's id and address, when a leader is known and is a voter
    /// of this replica's configuration (any other leader id is not one).
    pub fn leader(&self) -> Option<(u64, String)> {
        let status = self.status();
        let id = status.leader_id;
        (id != 0 && status.voters.contains(&id))
            .then(|| (id, self.address_of(id).unwrap_or_default()))
    }

    pub(crate) fn send(&self, msg: Msg) -> Result<(), NodeError> {
        self.tx.send(msg).map_err(|_| NodeError::Stopped)
    }

    /// Proposes `command` and waits until it is committed and applied here.
    /// Only the leader accepts proposals.
    pub async fn propose(&self, command: Command) -> Result<Applied, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Propose { command, reply })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Raft's ReadIndex: only the leader answers, and only after a quorum
    /// acknowledged a heartbeat sent after the request (so a leader cut off
    /// by a partition, still believing it leads, cannot answer). The index
    /// is what this replica must have applied before a read here is
    /// linearizable.
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::ReadIndex { reply })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Proposes a membership change and waits until it is applied.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<Member>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Membership { change, reply })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Hands a message from a peer to Raft.
    pub fn step(&self, msg: raft::prelude::Message) -> Result<(), NodeError> {
        self.send(Msg::Raft(Box::new(msg)))
    }

    /// Stops the Raft thread (storage is flushed after every Ready, so
    /// nothing acknowledged depends on this).
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}
