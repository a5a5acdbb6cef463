//! A raft-rs replica (a follower, or the leader) on in-memory storage that
//! steps a peer's message only when Typha's guard (`node::guard::admit`)
//! admits it, and persists its Ready the way Typha's Raft thread does. Shared by the `raft_message`
//! fuzz target and the generated-message test: neither may find a message
//! that is admitted and then panics raft-rs.
#![allow(dead_code)]

use manul_proto::v1::RaftBatch;
use manul_typha::node::guard::{LogView, admit};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfState, Config, Entry, HardState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, Storage as _};

/// Replica 1 of voters 1, 2, 3 and learner 4, with entries 1 to 5 at term
/// 2, 3 of them committed.
pub struct Follower {
    raw: RawNode<MemStorage>,
    storage: MemStorage,
}

impl Default for Follower {
    fn default() -> Self {
        Follower::new()
    }
}

impl Follower {
    pub fn new() -> Follower {
        let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![4])));
        let entries: Vec<Entry> = (1..=5)
            .map(|index| Entry {
                index,
                term: 2,
                ..Entry::default()
            })
            .collect();
        let hs = HardState {
            term: 2,
            commit: 3,
            ..HardState::default()
        };
        {
            let mut w = storage.wl();
            w.append(&entries).expect("a fresh log takes entries");
            w.set_hardstate(hs);
        }
        let config = Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 1,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage.clone(), &logger).expect("a valid follower");
        Follower { raw, storage }
    }

    /// The same replica after winning an election (votes from replica 2).
    pub fn leader() -> Follower {
        let mut f = Follower::new();
        f.raw.campaign().expect("a voter campaigns");
        f.persist();
        for kind in [
            MessageType::MsgRequestPreVoteResponse,
            MessageType::MsgRequestVoteResponse,
        ] {
            let mut m = Message::default();
            m.set_msg_type(kind);
            m.from = 2;
            m.to = 1;
            m.term = f.raw.raft.term + u64::from(kind == MessageType::MsgRequestPreVoteResponse);
            f.raw.step(m).expect("a vote is stepped");
            f.persist();
        }
        assert_eq!(f.raw.raft.state, raft::StateRole::Leader);
        f
    }

    /// Steps `m` if the guard admits it; whether it did.
    pub fn offer(&mut self, m: Message) -> bool {
        let conf = self
            .storage
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default();
        let view = LogView {
            id: 1,
            conf: &conf,
            last_index: self.raw.raft.raft_log.last_index(),
        };
        if admit(&m, &view).is_err() {
            return false;
        }
        let _ = self.raw.step(m);
        self.persist();
        true
    }

    /// Ticks, as time passing would.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.persist();
    }

    fn persist(&mut self) {
        if !self.raw.has_ready() {
            return;
        }
        let mut ready = self.raw.ready();
        if !ready
            .snapshot()
            .get_metadata()
            .get_conf_state()
            .voters
            .is_empty()
        {
            let snap = ready.snapshot().clone();
            self.storage
                .wl()
                .apply_snapshot(snap)
                .expect("an admitted snapshot is newer");
        }
        let _ = ready.take_committed_entries();
        if !ready.entries().is_empty() {
            self.storage
                .wl()
                .append(ready.entries())
                .expect("entries follow the log");
        }
        if let Some(hs) = ready.hs() {
            self.storage.wl().set_hardstate(hs.clone());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.wl().mut_hard_state().commit = commit;
        }
        let _ = light.take_committed_entries();
        self.raw.advance_apply();
    }
}

/// Any bytes as a batch on the peer listener: decoded as the Peer service
/// decodes it (a batch whose messages name another sender is refused
/// whole), then each message offered to a fresh follower (the leader when
/// the first byte is odd), with a tick after every fourth. Whether the
/// batch decoded.
pub fn offer_batch(data: &[u8]) -> bool {
    let Ok(batch) = RaftBatch::decode(data) else {
        return false;
    };
    let mut messages = Vec::new();
    for bytes in batch.messages.iter().take(32) {
        match Message::parse_from_bytes(bytes) {
            Ok(m) if m.from == batch.from => messages.push(m),
            _ => return false,
        }
    }
    let mut follower = if data.first().is_some_and(|b| b & 1 == 1) {
        Follower::leader()
    } else {
        Follower::new()
    };
    for (k, m) in messages.into_iter().enumerate() {
        follower.offer(m);
        if k % 4 == 3 {
            follower.tick();
        }
    }
    true
}
