//! Any bytes as a batch on Typha's peer listener (`RaftBatch` from
//! `manul.proto`, each message raft's `eraftpb.Message`), decoded as the
//! Peer service decodes it and offered to a raft-rs follower behind Typha's
//! guard: decoding never panics, and no message the guard admits panics
//! raft-rs.
#![no_main]

#[path = "../../typha/tests/common/raft_follower.rs"]
mod raft_follower;

use libfuzzer_sys::fuzz_target;
use manul_proto::v1::RaftBatch;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = RaftBatch::decode(data) else { return };
    let mut messages = Vec::new();
    for bytes in batch.messages.iter().take(32) {
        let Ok(m) = Message::parse_from_bytes(bytes) else { return };
        // The Peer service refuses a batch whose messages name another sender.
        if m.from != batch.from {
            return;
        }
        messages.push(m);
    }
    let mut follower = raft_follower::Follower::new();
    for (k, m) in messages.into_iter().enumerate() {
        follower.offer(m);
        if k % 4 == 3 {
            follower.tick();
        }
    }
});
