//! The `sync_hello`, `write_request` and `raft_message` fuzz targets'
//! harnesses, replayed over their seeds (real messages, in `fuzz/seeds/`)
//! and reproducible mutations of them on every test run: how CI runs them
//! without libFuzzer (`FUZZ_REPLAY_ROUNDS` for a longer hunt).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/raft_follower.rs"]
mod raft_follower;
#[path = "../../fuzz/replay.rs"]
mod replay;
#[path = "common/sync_hello.rs"]
mod sync_hello;
#[path = "common/write_request.rs"]
mod write_request;

use std::path::Path;

fn seeds_dir(target: &str) -> std::path::PathBuf {
    replay::seeds_dir(env!("CARGO_MANIFEST_DIR"), target)
}

#[test]
fn sync_hello_seeds_are_real_hellos() {
    let seeds = sync_hello::seeds();
    replay::check_seeds(&seeds_dir("sync_hello"), &seeds);
    let opened: Vec<bool> = seeds
        .iter()
        .map(|(_, bytes)| sync_hello::offer_hello(bytes))
        .collect();
    // Every real client's hello opens a stream; the two bad names do not.
    assert_eq!(opened, [true, true, true, true, true, true, false, false]);
}

#[test]
fn hostile_sync_hellos_open_no_stream_or_the_right_one() {
    let seeds = replay::read_seeds(&seeds_dir("sync_hello"));
    let mut opened = 0;
    let offered = replay::replay("sync_hello", &seeds, 2_000, |input| {
        opened += usize::from(sync_hello::offer_hello(input));
    });
    assert!(
        opened > offered / 20,
        "{opened} streams of {offered} inputs"
    );
    assert!(opened < offered, "no input was refused");
}

#[test]
fn write_request_seeds_are_real_requests_and_hostile_ones_store_nothing() {
    // One test: the harness's replica is shared by the whole process, and
    // the seeds' order matters (create, then conditional writes).
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let generated = write_request::seeds(&examples);
    replay::check_seeds(&seeds_dir("write_request"), &generated);
    let taken: Vec<(String, bool)> = generated
        .iter()
        .map(|(name, bytes)| (name.clone(), write_request::offer_request(bytes)))
        .collect();
    for (name, took) in &taken {
        let want = !(name.starts_with("seed-bad-") || name == "seed-apply-stale-revision");
        assert_eq!(*took, want, "{name}");
    }
    let seeds = replay::read_seeds(&seeds_dir("write_request"));
    let mut stored = 0;
    let offered = replay::replay("write_request", &seeds, 600, |input| {
        stored += usize::from(write_request::offer_request(input));
    });
    assert!(stored > 0, "no mutated request was taken of {offered}");
}

/// Raft batches as replicas send them (from leader 2 to replica 1), and
/// the forgeries of `tests/hostile.rs`.
fn raft_seeds() -> Vec<(String, Vec<u8>)> {
    use manul_proto::v1::RaftBatch;
    use prost::Message as _;
    use protobuf::Message as _;
    use raft::prelude::{Entry, Message, MessageType, Snapshot};

    let message = |kind: MessageType, from: u64, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = from;
        m.to = 1;
        m.term = term;
        m
    };
    let batch = |from: u64, messages: Vec<Message>| {
        RaftBatch {
            messages: messages
                .iter()
                .map(|m| m.write_to_bytes().unwrap().into())
                .collect(),
            from,
            from_address: "127.0.0.1:5574".into(),
        }
        .encode_to_vec()
    };
    let mut heartbeat = message(MessageType::MsgHeartbeat, 2, 2);
    heartbeat.commit = 3;
    let mut append = message(MessageType::MsgAppend, 2, 2);
    (append.index, append.log_term, append.commit) = (5, 2, 5);
    append.entries = (6..=7)
        .map(|index| Entry {
            index,
            term: 2,
            ..Entry::default()
        })
        .collect::<Vec<_>>()
        .into();
    let mut vote = message(MessageType::MsgRequestPreVote, 3, 3);
    (vote.index, vote.log_term) = (5, 2);
    let mut beyond = message(MessageType::MsgHeartbeat, 2, 100);
    beyond.commit = 1_000_000;
    let mut propose = message(MessageType::MsgPropose, 2, 0);
    propose.entries = vec![Entry {
        data: b"not a command".to_vec().into(),
        ..Entry::default()
    }]
    .into();
    let mut snapshot = message(MessageType::MsgSnapshot, 77, 100);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 1000;
    snap.mut_metadata().term = 100;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 77];
    snapshot.snapshot = Some(snap).into();
    [
        ("heartbeat", batch(2, vec![heartbeat])),
        ("append", batch(2, vec![append])),
        ("pre-vote", batch(3, vec![vote])),
        ("heartbeat-beyond-log", batch(2, vec![beyond])),
        ("propose", batch(2, vec![propose])),
        ("snapshot-from-stranger", batch(77, vec![snapshot])),
    ]
    .into_iter()
    .map(|(name, bytes)| (format!("seed-{name}"), bytes))
    .collect()
}

#[test]
fn hostile_raft_batches_never_panic_raft() {
    let generated = raft_seeds();
    replay::check_seeds(&seeds_dir("raft_message"), &generated);
    let seeds = replay::read_seeds(&seeds_dir("raft_message"));
    let mut decoded = 0;
    let offered = replay::replay("raft_message", &seeds, 2_000, |input| {
        decoded += usize::from(raft_follower::offer_batch(input));
    });
    assert!(
        decoded > offered / 20,
        "{decoded} batches decoded of {offered}"
    );
}
