//! A fresh single-voter replica leads at once and takes its first write
//! without waiting out an election timeout. A forged Raft message, a bad
//! committed entry or a refused membership change never stops the Raft
//! thread; a stopped one is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manul_proto::v1::command::Op;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{ApplyItem, ApplyRequest, Command, Entry, ResourceKey, Write, WriteBatch};

use raft::prelude::{Message, MessageType};

use super::{MembershipChange, Node, NodeConfig, NodeError, RaftMetrics};
use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};

struct Empty;

impl SnapshotSource for Empty {
    fn snapshot(&self) -> (u64, Vec<Entry>) {
        (0, Vec::new())
    }
}

fn write(name: &str) -> Command {
    let value = format!(
        r#"{{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{{"name":"{name}"}},"spec":{{"nets":["10.1.2.0/24"]}}}}"#
    );
    Command {
        request_id: 0,
        origin: None,
        op: Some(Op::Writes(WriteBatch {
            writes: vec![Write {
                key: Some(ResourceKey {
                    kind: manul_model::Kind::GlobalNetworkSet.key_name().into(),
                    namespace: String::new(),
                    name: name.into(),
                }),
                value: value.into_bytes().into(),
                expected_revision: None,
            }],
            ..Default::default()
        })),
    }
}

fn start(dir: &std::path::Path, peers: &[u64]) -> Node {
    start_with(dir, peers, RaftMetrics::default())
}

fn start_with(dir: &std::path::Path, peers: &[u64], metrics: RaftMetrics) -> Node {
    let peers: BTreeMap<u64, String> = peers
        .iter()
        .map(|id| (*id, format!("127.0.0.1:{}", 20000 + id)))
        .collect();
    let mut config = NodeConfig::new(1, dir.to_path_buf(), peers);
    // An election timeout far longer than the test: only a campaign at start
    // can make this replica the leader in time.
    config.election_ticks = 600;
    let fanout = Fanout::new(
        FanoutConfig::default(),
        Arc::new(Empty),
        FanoutMetrics::default(),
    );
    Node::start(config, fanout, metrics).unwrap()
}

fn heartbeat(from: u64, term: u64, commit: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = 1;
    m.term = term;
    m.commit = commit;
    m
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_heartbeat_committing_beyond_the_log_is_dropped_and_raft_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = RaftMetrics::default();
    // Three voters, only this one running: replica 2 is a real member.
    let node = start_with(dir.path(), &[1, 2, 3], metrics.clone());
    settle().await;
    node.step(heartbeat(2, 100, 1_000_000)).unwrap();
    node.step(heartbeat(77, 200, 1)).unwrap();
    settle().await;
    assert!(node.is_alive(), "the Raft thread survived");
    assert_eq!(metrics.refused_messages.get(), 2);
    let st = node.status();
    assert!(st.term < 100, "the forged terms were not taken: {st:?}");
    assert_eq!(st.leader_id, 0);
    // A heartbeat a real leader could send is stepped.
    node.step(heartbeat(2, 100, 1)).unwrap();
    settle().await;
    let st = node.status();
    assert_eq!((st.term, st.leader_id), (100, 2), "{st:?}");
    assert!(node.is_alive());
    node.stop();
    settle().await;
    assert!(!node.is_alive(), "a stopped Raft thread is reported");
}

#[tokio::test]
async fn a_committed_entry_the_model_refuses_is_skipped_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = RaftMetrics::default();
    let node = start_with(dir.path(), &[1], metrics.clone());
    let mut bad = write("evil");
    if let Some(Op::Writes(b)) = &mut bad.op {
        b.writes[0].value = b"not json".to_vec().into();
    }
    let err = tokio::time::timeout(Duration::from_secs(10), node.propose(bad))
        .await
        .expect("answered in time")
        .unwrap_err();
    assert!(err.to_string().contains("skipped"), "{err}");
    assert_eq!(metrics.apply_errors.get(), 1);
    let good = node.propose(write("fine")).await.unwrap();
    assert!(good.result.is_ok(), "{:?}", good.result);
    let sm = node.shared().state.read().unwrap();
    let names: Vec<String> = sm
        .list("", "")
        .into_iter()
        .map(|e| e.key.unwrap().name)
        .collect();
    assert_eq!(names, ["fine"]);
    drop(sm);
    assert!(node.is_alive());
    node.stop();
}

#[tokio::test]
async fn membership_changes_raft_would_refuse_are_refused_before_proposing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[1]);
    node.propose(write("first")).await.unwrap();
    for (change, why) in [
        (MembershipChange::Remove { id: 1 }, "last voter"),
        (
            MembershipChange::AddLearner {
                id: 1,
                address: "127.0.0.1:20001".into(),
            },
            "already a voter",
        ),
        (MembershipChange::Promote { id: 9 }, "not a member"),
    ] {
        let err = node.change_membership(change).await.unwrap_err();
        assert!(err.to_string().contains(why), "{err} / {why}");
    }
    // A learner at an address nobody answers never catches up.
    node.change_membership(MembershipChange::AddLearner {
        id: 2,
        address: "127.0.0.1:20002".into(),
    })
    .await
    .unwrap();
    let err = node
        .change_membership(MembershipChange::Promote { id: 2 })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has not caught up"), "{err}");
    assert_eq!(node.status().voters, [1]);
    assert!(node.is_alive());
    assert!(node.propose(write("second")).await.unwrap().result.is_ok());
    node.stop();
}

#[tokio::test]
async fn a_sole_voter_takes_its_first_write_without_an_election_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[1]);
    let applied = tokio::time::timeout(Duration::from_secs(10), node.propose(write("first")))
        .await
        .expect("the write is committed long before the 60 s election timeout")
        .expect("the sole voter leads and accepts the write");
    assert!(applied.result.is_ok(), "{:?}", applied.result);
    assert_eq!(node.status().role, "leader");
    node.stop();

    // Restarted from its data, it leads at once again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let node = start(dir.path(), &[1]);
    let applied = tokio::time::timeout(Duration::from_secs(10), node.propose(write("second")))
        .await
        .expect("committed in time")
        .expect("accepted");
    assert!(applied.revision > 2, "revision {}", applied.revision);
    node.stop();
}

#[tokio::test]
async fn a_voter_with_peers_waits_for_an_election() {
    let dir = tempfile::tempdir().unwrap();
    // Two voters, the other one absent: no campaign at start, and no
    // election could be won anyway.
    let node = start(dir.path(), &[1, 2]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = node.propose(write("w")).await.unwrap_err();
    assert!(
        matches!(err, NodeError::NotLeader { leader: None }),
        "{err}"
    );
    assert_eq!(node.status().leader_id, 0);
    node.stop();
}

/// What a user sees: an embedded single-node Typha acknowledges a write
/// through its API within a second of being started (the election timeout
/// alone is at least 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_single_node_typha_acknowledges_a_write_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let typha =
        crate::server::start_single_loopback(dir.path().to_path_buf(), Duration::from_secs(1))
            .await
            .expect("a single-node Typha leads within a second of starting");
    let mut c = ResourcesClient::connect(format!("http://{}", typha.local_addr))
        .await
        .unwrap();
    let doc = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: first\nspec:\n  nets: [10.1.2.0/24]\n";
    let r = c
        .apply(ApplyRequest {
            items: vec![ApplyItem {
                document: doc.as_bytes().to_vec().into(),
                origin: "test".into(),
                expected_revision: None,
            }],
            deletes: Vec::new(),
            origin: None,
        })
        .await
        .expect("the first write is acknowledged");
    let elapsed = started.elapsed();
    assert_eq!(r.into_inner().entries.len(), 1);
    eprintln!("first write acknowledged {elapsed:?} after start");
    assert!(
        elapsed < Duration::from_secs(1),
        "first write acknowledged {elapsed:?} after start"
    );
    typha.shutdown().await;
}

#[tokio::test]
async fn adding_a_member_takes_one_snapshot_not_one_per_later_entry() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = RaftMetrics::default();
    let node = start_with(dir.path(), &[1], metrics.clone());
    settle().await;
    node.propose(write("before")).await.unwrap();
    node.change_membership(MembershipChange::AddLearner {
        id: 2,
        address: "127.0.0.1:20002".into(),
    })
    .await
    .unwrap();
    // The snapshot follows the change's reply, within the same Ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.snapshot_index.get() <= 1 {
        assert!(Instant::now() < deadline, "no snapshot for the new member");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_change = metrics.snapshot_index.get();
    for k in 0..5 {
        node.propose(write(&format!("after-{k}"))).await.unwrap();
    }
    settle().await;
    assert_eq!(
        metrics.snapshot_index.get(),
        at_change,
        "no snapshot before --snapshot-every entries"
    );
    node.stop();
}
