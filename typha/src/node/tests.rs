//! A fresh single-voter replica leads at once and takes its first write
//! without waiting out an election timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manul_proto::v1::command::Op;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{ApplyItem, ApplyRequest, Command, Entry, ResourceKey, Write, WriteBatch};

use super::{Node, NodeConfig, NodeError, RaftMetrics};
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
        op: Some(Op::Writes(WriteBatch {
            writes: vec![Write {
                key: Some(ResourceKey {
                    kind: "GlobalNetworkSet".into(),
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
    Node::start(config, fanout, RaftMetrics::default()).unwrap()
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
