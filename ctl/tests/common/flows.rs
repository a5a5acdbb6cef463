//! The flow fixtures the flow, TLS and report tests share: the time now,
//! a pod endpoint, the allowed web → db record that `shop/db-allow`
//! decides (the cluster of `src/report/testdata/cluster.yaml`), and the
//! aggregator's server (in plaintext on a loopback port, or over the
//! listener a test brings).

use manul_flows::Shared;
use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A pod workload of `ns`, without labels.
pub fn pod(ns: &str, workload: &str) -> FlowEndpoint {
    FlowEndpoint {
        kind: "pod".into(),
        namespace: ns.into(),
        workload: workload.into(),
        ..FlowEndpoint::default()
    }
}

/// web to db on 5432, `flows` connections allowed by shop/db-allow's
/// first ingress rule in the interval ending at `end`.
pub fn allowed_web_to_db(end: u64, flows: u64) -> FlowRecord {
    FlowRecord {
        start_unix_s: end - 15,
        end_unix_s: end,
        node: "node1".into(),
        reporter: "dst".into(),
        src: Some(pod("shop", "web-*")),
        dst: Some(pod("shop", "db-*")),
        protocol: 6,
        dst_port: 5432,
        action: "allow".into(),
        enforced: vec![PolicyHit {
            tier: "default".into(),
            kind: "NetworkPolicy".into(),
            namespace: "shop".into(),
            name: "db-allow".into(),
            rule_index: Some(0),
            action: "allow".into(),
        }],
        flows_started: flows,
        packets_forward: 10,
        bytes_forward: 1000,
        ..FlowRecord::default()
    }
}

/// A server with `shared`'s ingest and query services.
pub fn router(shared: &Shared) -> tonic::transport::server::Router {
    let (ingest, query) = shared.services();
    tonic::transport::Server::builder()
        .add_service(ingest)
        .add_service(query)
}

/// Serves `shared`'s services in plaintext on the loopback `port`.
pub async fn serve(shared: &Shared, port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(
        router(shared)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
}
