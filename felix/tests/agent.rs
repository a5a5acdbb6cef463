//! The `felix` binary against a real Typha (in this process, on loopback):
//! it syncs, programs the null driver, reports ready and counts what it
//! computed in its metrics, and follows later changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Felix, api_client, apply, get, port};
use manul_proto::v1::{ApplyItem, ApplyRequest};
use manul_typha::server::{TyphaConfig, start};

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn wait_metric(port: u16, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        if let Some((200, body)) = get(port, "/metrics").await {
            if metric(&body, name) == Some(want) {
                return;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {want}:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wep(name: &str, node: &str, ip: &str, app: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {{app: {app}}}\nspec:\n  node: {node}\n  interfaceName: cali-{name}\n  ipNetworks: [{ip}/32]\n  profiles: [kns.production]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_syncs_programs_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().unwrap();
    let typha = start(TyphaConfig::single(dir.path().to_path_buf(), addr))
        .await
        .unwrap();
    let mut api = api_client(&typha, addr).await;
    let docs = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n".to_string(),
        wep("api", "node1", "10.65.0.2", "api"),
        wep("frontend", "node2", "10.65.1.2", "frontend"),
        wep("other", "node1", "10.65.0.3", "other"),
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/frontend-to-api.yaml"),
        )
        .unwrap(),
    ];
    apply(&mut api, &docs).await;

    let metrics_port = port();
    let _felix = Felix(
        Command::new(env!("CARGO_BIN_EXE_felix"))
            .args(["--node", "node1", "--typha", &addr.to_string()])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(metrics_port, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "felix never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metric(metrics_port, "felix_resync_state", 3.0).await;
    // api, other and the example's host endpoint node1-eth0 are local.
    wait_metric(metrics_port, "felix_active_local_endpoints", 3.0).await;
    // frontend-to-api (api) and the example's host-protection policy (node1-eth0).
    wait_metric(metrics_port, "felix_active_local_policies", 2.0).await;
    wait_metric(metrics_port, "felix_cluster_num_workload_endpoints", 4.0).await;
    // The policy's source selector set (and no other, as its egress rule uses nets).
    wait_metric(metrics_port, "felix_ipsets_calico", 1.0).await;

    // A third local endpoint arrives; the policy goes away.
    let items = vec![ApplyItem {
        document: wep("third", "node1", "10.65.0.4", "api")
            .into_bytes()
            .into(),
        origin: "test".into(),
        expected_revision: None,
    }];
    api.apply(ApplyRequest {
        items,
        deletes: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    wait_metric(metrics_port, "felix_active_local_endpoints", 4.0).await;
    api.delete(manul_proto::v1::DeleteRequest {
        keys: vec![manul_proto::v1::ResourceKey {
            kind: "networkpolicy".into(),
            namespace: "production".into(),
            name: "frontend-to-api".into(),
        }],
        expected_revision: None,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_metric(metrics_port, "felix_active_local_policies", 1.0).await;
    wait_metric(metrics_port, "felix_ipsets_calico", 0.0).await;
    let (_, body) = get(metrics_port, "/metrics").await.unwrap();
    assert_eq!(
        metric(&body, "felix_int_dataplane_failures_total"),
        Some(0.0),
        "{body}"
    );
    typha.shutdown().await;
}
