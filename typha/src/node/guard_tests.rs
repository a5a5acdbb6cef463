//! The guard's decisions, one forged message or change at a time.

use manul_proto::v1::{DeleteBatch, Member, StateSnapshot, Write, WriteBatch};
use prost::Message as _;
use raft::prelude::{ConfState, Entry, Message, MessageType, Snapshot};

use super::*;

fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..ConfState::default()
    }
}

fn msg(kind: MessageType, from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = 5;
    m
}

fn view(c: &ConfState) -> LogView<'_> {
    LogView {
        id: 1,
        conf: c,
        last_index: 10,
    }
}

#[test]
fn only_messages_peers_exchange_are_admitted() {
    let c = conf(&[1, 2, 3], &[4]);
    for kind in [
        MessageType::MsgPropose,
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgReadIndex,
        MessageType::MsgReadIndexResp,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
        MessageType::MsgTransferLeader,
        MessageType::MsgTimeoutNow,
    ] {
        assert_eq!(
            admit(&msg(kind, 2, 1), &view(&c)),
            Err(Refused::LocalOnly(kind))
        );
    }
    for kind in [
        MessageType::MsgAppend,
        MessageType::MsgHeartbeat,
        MessageType::MsgRequestVote,
        MessageType::MsgRequestPreVote,
        MessageType::MsgAppendResponse,
        MessageType::MsgHeartbeatResponse,
        MessageType::MsgRequestVoteResponse,
        MessageType::MsgRequestPreVoteResponse,
    ] {
        assert_eq!(admit(&msg(kind, 2, 1), &view(&c)), Ok(()), "{kind:?}");
    }
}

#[test]
fn non_members_strangers_and_learners_leading_are_refused() {
    let c = conf(&[1, 2, 3], &[4]);
    let hb = MessageType::MsgHeartbeat;
    assert_eq!(
        admit(&msg(hb, 77, 1), &view(&c)),
        Err(Refused::NotAMember(77))
    );
    assert_eq!(admit(&msg(hb, 1, 1), &view(&c)), Err(Refused::FromSelf));
    assert_eq!(
        admit(&msg(hb, 2, 9), &view(&c)),
        Err(Refused::NotForUs { to: 9 })
    );
    assert_eq!(
        admit(&msg(hb, 4, 1), &view(&c)),
        Err(Refused::NotAVoter { from: 4, kind: hb })
    );
    let vote = MessageType::MsgRequestVote;
    assert_eq!(
        admit(&msg(vote, 4, 1), &view(&c)),
        Err(Refused::NotAVoter {
            from: 4,
            kind: vote
        })
    );
    let mut no_term = msg(hb, 2, 1);
    no_term.term = 0;
    assert_eq!(admit(&no_term, &view(&c)), Err(Refused::NoTerm));
    // A learner answers its leader.
    let ack = MessageType::MsgAppendResponse;
    assert_eq!(admit(&msg(ack, 4, 1), &view(&c)), Ok(()));
}

#[test]
fn a_joining_replica_only_follows() {
    let empty = ConfState::default();
    assert_eq!(
        admit(&msg(MessageType::MsgAppend, 7, 1), &view(&empty)),
        Ok(())
    );
    assert_eq!(
        admit(&msg(MessageType::MsgRequestVote, 7, 1), &view(&empty)),
        Err(Refused::NotAMember(7))
    );
    assert_eq!(
        admit(&msg(MessageType::MsgAppendResponse, 7, 1), &view(&empty)),
        Err(Refused::NotAMember(7))
    );
}

#[test]
fn a_heartbeat_committing_beyond_the_log_is_refused() {
    let c = conf(&[1, 2, 3], &[]);
    let mut m = msg(MessageType::MsgHeartbeat, 2, 1);
    m.term = 100;
    m.commit = 1_000_000;
    assert_eq!(
        admit(&m, &view(&c)),
        Err(Refused::CommitBeyondLog {
            commit: 1_000_000,
            last: 10
        })
    );
    m.commit = 10;
    assert_eq!(admit(&m, &view(&c)), Ok(()));
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Entry::default()
    }
}

#[test]
fn appends_must_follow_their_index_with_possible_terms() {
    let c = conf(&[1, 2, 3], &[]);
    let mut m = msg(MessageType::MsgAppend, 2, 1);
    m.index = 4;
    m.log_term = 4;
    m.entries = vec![entry(5, 4), entry(6, 5)].into();
    assert_eq!(admit(&m, &view(&c)), Ok(()));
    m.entries = vec![entry(5, 5), entry(6, 4)].into();
    assert_eq!(
        admit(&m, &view(&c)),
        Err(Refused::AppendTermAhead { term: 5 })
    );
    m.log_term = 0;
    m.entries = vec![entry(5, 5)].into();
    assert_eq!(
        admit(&m, &view(&c)),
        Err(Refused::AppendNoLogTerm { index: 4 })
    );
    m.log_term = 4;
    m.entries = vec![entry(5, 5), entry(3, 5)].into();
    assert_eq!(
        admit(&m, &view(&c)),
        Err(Refused::AppendNotContiguous { index: 4 })
    );
    m.entries = vec![entry(5, 6)].into();
    assert_eq!(
        admit(&m, &view(&c)),
        Err(Refused::AppendTermAhead { term: 5 })
    );
    m.index = u64::MAX;
    m.log_term = 5;
    m.entries = vec![entry(0, 5)].into();
    assert_eq!(admit(&m, &view(&c)), Err(Refused::Overflowing));
    m.index = (1 << 62) - 1;
    m.entries = vec![entry(1 << 62, 5)].into();
    assert_eq!(admit(&m, &view(&c)), Err(Refused::Overflowing));
}

#[test]
fn an_acknowledgement_beyond_the_log_is_refused() {
    let c = conf(&[1, 2, 3], &[]);
    let mut m = msg(MessageType::MsgAppendResponse, 2, 1);
    m.index = 11;
    assert_eq!(
        admit(&m, &view(&c)),
        Err(Refused::AckBeyondLog {
            index: 11,
            last: 10
        })
    );
    m.reject = true;
    assert_eq!(admit(&m, &view(&c)), Ok(()));
}

fn snapshot_msg(voters: &[u64], learners: &[u64], data: Vec<u8>) -> Message {
    let mut m = msg(MessageType::MsgSnapshot, 2, 1);
    let mut snap = Snapshot {
        data: data.into(),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = 20;
    meta.term = 5;
    *meta.mut_conf_state() = conf(voters, learners);
    m.snapshot = Some(snap).into();
    m
}

#[test]
fn snapshots_must_be_installable() {
    let c = conf(&[1, 2, 3], &[]);
    let good = StateSnapshot {
        revision: 20,
        entries: Vec::new(),
        members: vec![Member {
            id: 2,
            address: "127.0.0.1:1".into(),
            learner: false,
        }],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(
        admit(&snapshot_msg(&[1, 2, 3], &[], good.clone()), &view(&c)),
        Ok(())
    );
    for (m, why) in [
        (
            snapshot_msg(&[1, 2, 3], &[], b"not a snapshot".to_vec()),
            "undecodable",
        ),
        (snapshot_msg(&[], &[1], good.clone()), "no voters"),
        (snapshot_msg(&[1, 2], &[2], good.clone()), "both voter"),
        (snapshot_msg(&[1, 2, 2], &[], good.clone()), "listed twice"),
        (snapshot_msg(&[0, 1, 2], &[], good.clone()), "replica id 0"),
        (
            snapshot_msg(&[2, 3], &[], good.clone()),
            "not in its configuration",
        ),
        (
            snapshot_msg(&[1, 3], &[], good.clone()),
            "outside its configuration",
        ),
    ] {
        match admit(&m, &view(&c)) {
            Err(Refused::Snapshot(s)) => assert!(s.contains(why), "{s} / {why}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    let mut none = msg(MessageType::MsgSnapshot, 2, 1);
    none.snapshot = None.into();
    assert!(matches!(admit(&none, &view(&c)), Err(Refused::Snapshot(_))));
}

#[test]
fn membership_changes_raft_would_refuse_are_refused() {
    let one = conf(&[1], &[]);
    let err = check_change(&MembershipChange::Remove { id: 1 }, &one, Some(10), 10).unwrap_err();
    assert!(err.contains("last voter"), "{err}");
    let err = check_change(
        &MembershipChange::AddLearner {
            id: 1,
            address: "127.0.0.1:1".into(),
        },
        &one,
        None,
        10,
    )
    .unwrap_err();
    assert!(err.contains("already a voter"), "{err}");
    let err = check_change(&MembershipChange::Remove { id: 5 }, &one, None, 10).unwrap_err();
    assert!(err.contains("not a member"), "{err}");

    let with_learner = conf(&[1], &[2]);
    let err = check_change(
        &MembershipChange::Promote { id: 2 },
        &with_learner,
        Some(3),
        10,
    )
    .unwrap_err();
    assert!(err.contains("has not caught up"), "{err}");
    let err = check_change(
        &MembershipChange::Promote { id: 2 },
        &with_learner,
        None,
        10,
    )
    .unwrap_err();
    assert!(err.contains("has not caught up"), "{err}");
    assert_eq!(
        check_change(
            &MembershipChange::Promote { id: 2 },
            &with_learner,
            Some(10),
            10
        ),
        Ok(())
    );
    let err = check_change(
        &MembershipChange::Promote { id: 3 },
        &with_learner,
        None,
        10,
    )
    .unwrap_err();
    assert!(err.contains("not a member"), "{err}");
    assert_eq!(
        check_change(&MembershipChange::Remove { id: 2 }, &with_learner, None, 10),
        Ok(())
    );
    assert_eq!(
        check_change(
            &MembershipChange::Remove { id: 1 },
            &conf(&[1, 2], &[]),
            None,
            10
        ),
        Ok(())
    );
}

fn write(kind: &str, namespace: &str, name: &str, value: &[u8]) -> Command {
    Command {
        request_id: 0,
        op: Some(Op::Writes(WriteBatch {
            writes: vec![Write {
                key: Some(ResourceKey {
                    kind: kind.into(),
                    namespace: namespace.into(),
                    name: name.into(),
                }),
                value: value.to_vec().into(),
                expected_revision: None,
            }],
            deletes: Vec::new(),
        })),
        ..Default::default()
    }
}

const SET: &str = r#"{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"blocked"},"spec":{"nets":["10.1.2.0/24"]}}"#;

#[test]
fn committed_commands_are_checked_with_the_model() {
    let kind = Kind::GlobalNetworkSet.key_name();
    assert_eq!(
        check_command(&write(kind, "", "blocked", SET.as_bytes())),
        Ok(())
    );
    for (cmd, why) in [
        (write(kind, "", "blocked", b"not json"), "not a valid"),
        (
            write("frobnicator", "", "blocked", SET.as_bytes()),
            "unknown kind",
        ),
        (write(kind, "", "bad\0name", SET.as_bytes()), "bad name"),
        (
            write(kind, "", "other", SET.as_bytes()),
            "not the resource of its key",
        ),
        (
            write(kind, "default", "blocked", SET.as_bytes()),
            "bad namespace",
        ),
        (
            Command {
                request_id: 0,
                op: None,
                ..Default::default()
            },
            "no operation",
        ),
        (
            Command {
                request_id: 0,
                op: Some(Op::Deletes(DeleteBatch {
                    keys: vec![ResourceKey {
                        kind: "frobnicator".into(),
                        namespace: String::new(),
                        name: "x".into(),
                    }],
                    expected_revision: None,
                })),
                ..Default::default()
            },
            "unknown kind",
        ),
    ] {
        let err = check_command(&cmd).unwrap_err();
        assert!(err.contains(why), "{err} / {why}");
    }
}
