//! Any bytes as a batch on Typha's peer listener (`RaftBatch` from
//! `manul.proto`, each message raft's `eraftpb.Message`), decoded as the
//! Peer service decodes it and offered to a raft-rs follower behind Typha's
//! guard: decoding never panics, and no message the guard admits panics
//! raft-rs. The harness is shared with `typha/tests/raft_messages.rs`.
#![no_main]

#[path = "../../typha/tests/common/raft_follower.rs"]
mod raft_follower;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raft_follower::offer_batch(data);
});
