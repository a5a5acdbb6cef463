//! Three `typha` processes watch a minimal Kubernetes API server (the
//! shared `manul_typha::kube::testing` one: list and watch over HTTP on
//! loopback, the documented JSON): only the leader writes; when it dies,
//! the new leader lists and reconciles, deleting what vanished and adding
//! what appeared, without rewriting what is unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_proto::v1::ListRequest;
use manul_typha::kube::testing::FakeApi;
use serde_json::json;

fn pod(name: &str, ip: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip},
    })
}

/// WorkloadEndpoint name → revision on replica `i`.
async fn endpoints(c: &Cluster, i: usize) -> Vec<(String, u64)> {
    let mut r = c.resources(i).await;
    let Ok(list) = r
        .list(ListRequest {
            kind: "workloadendpoint".into(),
            namespace: String::new(),
        })
        .await
    else {
        return Vec::new();
    };
    list.into_inner()
        .entries
        .into_iter()
        .map(|e| (e.key.unwrap().name, e.revision))
        .collect()
}

async fn until_endpoints(c: &Cluster, i: usize, want: &[&str]) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = endpoints(c, i).await;
        if got.iter().map(|(n, _)| n.as_str()).eq(want.iter().copied()) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "replica {i}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_lists_and_reconciles_what_changed_while_none_watched() {
    let _serial = SERIAL.lock().await;
    let api = FakeApi::start().await.unwrap();
    api.api.put_pod(pod("a", "10.0.0.1"));
    api.api.put_pod(pod("b", "10.0.0.2"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let mut c = Cluster::start_with(
        3,
        10_000,
        vec!["--kubeconfig".into(), kubeconfig.to_str().unwrap().into()],
    )
    .await;

    let leader = c.wait_for_leader(Duration::from_secs(10)).await;
    let first = until_endpoints(&c, leader, &["a", "b"]).await;

    // While no leader watches, b goes and c comes.
    c.kill(leader);
    api.api.delete_pod("shop", "b");
    api.api.put_pod(pod("c", "10.0.0.3"));
    let leader = c.wait_for_leader(Duration::from_secs(10)).await;
    let after = until_endpoints(&c, leader, &["a", "c"]).await;
    assert_eq!(
        after[0], first[0],
        "the unchanged endpoint was not written again"
    );
    for i in c.alive().collect::<Vec<_>>() {
        until_endpoints(&c, i, &["a", "c"]).await;
    }
    let revision = c.status(leader).await.unwrap().applied_revision;
    let statuses = c.wait_applied(revision, Duration::from_secs(5)).await;
    assert!(
        statuses
            .windows(2)
            .all(|w| w[0].state_hash == w[1].state_hash),
        "{statuses:?}"
    );
}
