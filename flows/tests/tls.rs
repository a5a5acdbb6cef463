//! The aggregator's gRPC listener over TLS with real certificates on
//! loopback (the development set, `manul_tls::dev`): Felix's certificate
//! may push and not query, the administrator's may query and not push, a
//! certificate of another identity and a plaintext client are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use manul_flows::tls::TlsArgs;
use manul_flows::{Shared, Store};
use manul_proto::flows::flow_ingest_client::FlowIngestClient;
use manul_proto::flows::flows_client::FlowsClient;
use manul_proto::flows::{
    FlowEndpoint, FlowRecord, ListRequest, PushHello, PushRequest, RecordBatch, push_request,
};
use manul_tls::connect::Transport;
use manul_tls::dev::{DevSet, FLOWS_CN, write_dev_set};
use tonic::transport::{Channel, Endpoint};

fn record() -> FlowRecord {
    let now = manul_flows::server::unix_now();
    FlowRecord {
        start_unix_s: now - 15,
        end_unix_s: now,
        node: "node1".into(),
        reporter: "dst".into(),
        src: Some(FlowEndpoint {
            kind: "pod".into(),
            namespace: "shop".into(),
            workload: "web-*".into(),
            labels: Default::default(),
        }),
        dst_port: 5432,
        action: "allow".into(),
        flows_started: 1,
        ..FlowRecord::default()
    }
}

/// A loopback port below 32768 that nothing listens on now.
async fn listener() -> tokio::net::TcpListener {
    for i in 0..2000u32 {
        let port = 20000 + ((std::process::id().wrapping_mul(17) + i * 13) % 12000) as u16;
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
    }
    panic!("no free loopback port");
}

/// A channel presenting `identity`'s certificate (`felix-node1`, `admin`,
/// ...) and expecting the aggregator's identity; the error when the
/// connection cannot be made.
async fn channel(dir: &std::path::Path, identity: &str, port: u16) -> Result<Channel, String> {
    let file = |f: &str| dir.join(f);
    let config = manul_tls::client::ClientSettings {
        ca_file: file("ca.crt"),
        cert_file: file(&format!("{identity}.crt")),
        key_file: file(&format!("{identity}.key")),
        server: manul_tls::Expected::new([FLOWS_CN.to_owned()], [], "test").unwrap(),
    }
    .config()
    .unwrap();
    Transport::Tls(config)
        .connect(endpoint(port))
        .await
        .map_err(|e| e.to_string())
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
}

async fn push(channel: Channel, seq: u64) -> Result<u64, tonic::Status> {
    let msgs = [
        push_request::Msg::Hello(PushHello {
            node: "node1".into(),
            epoch: 1,
        }),
        push_request::Msg::Batch(RecordBatch {
            seq,
            records: vec![record()],
        }),
    ]
    .map(|m| PushRequest { msg: Some(m) });
    let mut acks = FlowIngestClient::new(channel)
        .push(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    Ok(acks.message().await?.map_or(0, |a| a.seq))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_pushes_readers_query_and_nobody_else_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    write_dev_set(
        dir.path(),
        &DevSet {
            typha_names: vec!["127.0.0.1".into()],
            typha_cn: manul_tls::dev::TYPHA_CN.into(),
            nodes: vec!["node1".into()],
            days: 1,
        },
    )
    .unwrap();
    let file = |f: &str| -> PathBuf { dir.path().join(f) };
    let tls = TlsArgs {
        ca_file: Some(file("ca.crt")),
        server_cert_file: Some(file("flows.crt")),
        server_key_file: Some(file("flows.key")),
        ..TlsArgs::default()
    }
    .build()
    .unwrap()
    .unwrap();
    let shared = Shared::new(Store::new(3600, 1000)).with_gates(tls.gates.clone());
    let l = listener().await;
    let port = l.local_addr().unwrap().port();
    let (ingest, query) = shared.services();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ingest)
            .add_service(query)
            .serve_with_incoming(manul_tls::accept::incoming(l, tls.config)),
    );

    // Felix pushes; the administrator reads it back.
    let felix = channel(dir.path(), "felix-node1", port).await.unwrap();
    assert_eq!(push(felix.clone(), 1).await.unwrap(), 1);
    assert_eq!(shared.store().len(), 1);
    let admin = channel(dir.path(), "admin", port).await.unwrap();
    let listed = FlowsClient::new(admin.clone())
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].src.as_ref().unwrap().workload, "web-*");

    // Each role only its own service.
    let denied = FlowsClient::new(felix)
        .list(ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let denied = push(admin, 2).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // Another identity of the same CA (the CNI plugin's) and a plaintext
    // client get nothing.
    let cni_admitted = match channel(dir.path(), "cni-node1", port).await {
        Err(_) => false,
        Ok(c) => FlowsClient::new(c)
            .list(ListRequest::default())
            .await
            .is_ok(),
    };
    assert!(!cni_admitted, "the CNI plugin's certificate was admitted");
    let plain_admitted = match endpoint(port).connect().await {
        Err(_) => false,
        Ok(c) => FlowsClient::new(c)
            .list(ListRequest::default())
            .await
            .is_ok(),
    };
    assert!(!plain_admitted, "a plaintext client was admitted");
    assert_eq!(shared.store().len(), 1);

    // A partial configuration is refused, naming the flags.
    let partial = TlsArgs {
        ca_file: Some(file("ca.crt")),
        ..TlsArgs::default()
    }
    .build()
    .unwrap_err();
    assert!(
        partial.to_string().contains("--server-key-file"),
        "{partial}"
    );
}
