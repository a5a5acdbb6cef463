//! Generated Raft messages, plausible and absurd, offered to a raft-rs
//! follower behind Typha's guard: nothing admitted may panic raft-rs (the
//! `raft_message` fuzz target does the same with libFuzzer's inputs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/raft_follower.rs"]
mod raft_follower;

use manul_proto::v1::{Member, RaftBatch, StateSnapshot};
use prost::Message as _;
use raft::prelude::{ConfState, Entry, Message, MessageType, Snapshot};
use raft_follower::Follower;

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly small numbers near the follower's log, sometimes extremes.
    fn number(&mut self) -> u64 {
        match self.below(10) {
            0 => u64::MAX - self.below(3),
            1 => self.next(),
            2 => 1_000_000,
            _ => self.below(12),
        }
    }

    fn ids(&mut self) -> Vec<u64> {
        (0..self.below(4)).map(|_| self.below(6)).collect()
    }
}

const KINDS: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

fn generate(r: &mut Rng) -> Message {
    let mut m = Message::default();
    m.set_msg_type(KINDS[r.below(KINDS.len() as u64) as usize]);
    m.from = [1, 2, 3, 4, 5, 77][r.below(6) as usize];
    m.to = if r.below(10) == 0 { r.below(5) } else { 1 };
    m.term = r.number();
    m.log_term = r.number();
    m.index = r.number();
    m.commit = r.number();
    m.reject = r.below(3) == 0;
    m.reject_hint = r.number();
    m.request_snapshot = r.number();
    // Entries: often contiguous after the index, sometimes not.
    let n = r.below(4);
    let contiguous = r.below(2) == 0;
    m.entries = (0..n)
        .map(|k| Entry {
            index: if contiguous {
                m.index.wrapping_add(k + 1)
            } else {
                r.number()
            },
            term: if r.below(2) == 0 { m.term } else { r.number() },
            ..Entry::default()
        })
        .collect::<Vec<_>>()
        .into();
    if r.below(3) == 0 {
        let voters = if r.below(2) == 0 {
            vec![1, 2, 3]
        } else {
            r.ids()
        };
        let learners = r.ids();
        let index = r.number();
        let data = StateSnapshot {
            revision: if r.below(4) == 0 { r.number() } else { index },
            entries: Vec::new(),
            members: voters
                .iter()
                .map(|id| Member {
                    id: *id,
                    address: "127.0.0.1:1".into(),
                    learner: false,
                })
                .collect(),
            ..Default::default()
        };
        let mut snap = Snapshot {
            data: if r.below(5) == 0 {
                b"junk".to_vec().into()
            } else {
                data.encode_to_vec().into()
            },
            ..Snapshot::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = if r.below(2) == 0 { m.term } else { r.number() };
        *meta.mut_conf_state() = ConfState {
            voters,
            learners,
            voters_outgoing: if r.below(8) == 0 { r.ids() } else { Vec::new() },
            ..ConfState::default()
        };
        m.snapshot = Some(snap).into();
    }
    m
}

#[test]
fn no_admitted_message_panics_raft() {
    // More rounds (and another seed) for a longer hunt:
    // RAFT_MESSAGES_ROUNDS=100000 RAFT_MESSAGES_SEED=7.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("RAFT_MESSAGES_ROUNDS", 400);
    let mut r = Rng(env("RAFT_MESSAGES_SEED", 0x9E37_79B9_7F4A_7C15) | 1);
    let mut admitted = 0;
    for round in 0..rounds {
        let mut f = if round % 2 == 1 {
            Follower::leader()
        } else {
            Follower::new()
        };
        for step in 0..50 {
            if f.offer(generate(&mut r)) {
                admitted += 1;
            }
            if step % 7 == 0 {
                f.tick();
            }
        }
    }
    // The generator reaches past the guard often enough to mean something.
    eprintln!("{admitted} of {} messages admitted", rounds * 50);
    assert!(
        admitted > rounds * 50 / 100,
        "only {admitted} of {} admitted",
        rounds * 50
    );
}

#[test]
fn batches_from_raw_bytes_and_generated_messages_never_panic() {
    let mut r = Rng(42);
    let mut decoded = 0;
    for _ in 0..5_000 {
        let len = r.below(64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        if raft_follower::offer_batch(&bytes) {
            decoded += 1;
        }
    }
    assert!(decoded > 0, "no random batch decoded");
    for _ in 0..500 {
        let from = [2, 3, 4, 77][r.below(4) as usize];
        let messages = (0..r.below(6))
            .map(|_| {
                let mut m = generate(&mut r);
                m.from = from;
                protobuf::Message::write_to_bytes(&m).unwrap().into()
            })
            .collect();
        let batch = RaftBatch {
            messages,
            from,
            from_address: String::new(),
        };
        assert!(raft_follower::offer_batch(&batch.encode_to_vec()));
    }
}
