//! The pod conversion from the API server's JSON, and reading a data
//! directory's configuration without keeping it open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};
use crate::node::{NodeConfig, RaftMetrics};

struct Empty;

impl SnapshotSource for Empty {
    fn snapshot(&self) -> (u64, Vec<manul_proto::v1::Entry>) {
        (0, Vec::new())
    }
}

#[test]
fn a_pod_from_the_api_servers_json() {
    let json = r#"{"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "manul-typha-7d9f-abcde", "namespace": "manul-system",
            "uid": "0b6c0d3e-5f0e-4f55-9a55-0a1b2c3d4e5f", "resourceVersion": "812",
            "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "typha", "image": "manul",
            "ports": [{"name": "sync", "containerPort": 5473}, {"name": "peer", "containerPort": 5474}]}]},
        "status": {"phase": "Running", "podIP": "10.0.1.7",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}}"#;
    let pod: Pod = serde_json::from_str(json).unwrap();
    let v = pod_view(&pod).unwrap();
    assert_eq!(
        v,
        PodView {
            name: "manul-typha-7d9f-abcde".into(),
            uid: "0b6c0d3e-5f0e-4f55-9a55-0a1b2c3d4e5f".into(),
            ip: Some("10.0.1.7".parse().unwrap()),
            peer_port: Some(5474),
            ready: true,
            deleting: true,
        }
    );

    let pending = r#"{"metadata": {"name": "p", "uid": "u"},
        "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}}"#;
    let v = pod_view(&serde_json::from_str(pending).unwrap()).unwrap();
    assert_eq!(
        (v.ip, v.ready, v.deleting, v.peer_port),
        (None, false, false, None)
    );

    let nameless = r#"{"metadata": {"uid": "u"}}"#;
    assert_eq!(pod_view(&serde_json::from_str(nameless).unwrap()), None);
}

#[tokio::test]
async fn a_data_directory_with_a_configuration_is_resumed_and_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!has_configuration(dir.path()).unwrap(), "no directory yet");
    let fanout = || {
        Fanout::new(
            FanoutConfig::default(),
            Arc::new(Empty),
            FanoutMetrics::default(),
        )
    };

    // A replica that joined and was never added has storage but no
    // configuration.
    let mut config = NodeConfig::new(7, dir.path().to_path_buf(), BTreeMap::new());
    config.join = true;
    let node = Node::start(config, fanout(), RaftMetrics::default()).unwrap();
    node.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(node);
    assert!(
        !has_configuration(dir.path()).unwrap(),
        "joined, never added"
    );

    // A bootstrapped replica has one, and its node opens the storage again
    // after the check closed it.
    let other = tempfile::tempdir().unwrap();
    let peers = BTreeMap::from([(7, "127.0.0.1:20007".to_string())]);
    let node = Node::start(
        NodeConfig::new(7, other.path().to_path_buf(), peers),
        fanout(),
        RaftMetrics::default(),
    )
    .unwrap();
    node.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(node);
    assert!(has_configuration(other.path()).unwrap());
    let mut config = NodeConfig::new(7, other.path().to_path_buf(), BTreeMap::new());
    config.join = true;
    let node = Node::start(config, fanout(), RaftMetrics::default()).unwrap();
    for _ in 0..100 {
        if node.status().leader_id == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node.status().voters, vec![7], "resumed as the sole voter");
    assert_eq!(node.status().leader_id, 7);
    node.stop();
}
