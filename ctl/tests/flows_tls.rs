//! The flow aggregator over TLS with real certificates on loopback: Felix's
//! exporter pushes with its own certificate and checks the aggregator's
//! identity, `manulctl flows` reads with the administrator's; a
//! certificate of another identity, a plaintext client and a wrong
//! aggregator identity are refused, and each role may call only its own
//! service. `manulctl report policy` and `report compliance` reach the
//! aggregator the same way, and Typha over TLS with the same certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::flows::{allowed_web_to_db, now, pod, router};
use common::{free_low_port, manulctl, text};
use manul_felix::flows::export::{self, ExportConfig, ExportStatus};
use manul_flows::tls::TlsArgs;
use manul_flows::{Shared, Store};
use manul_proto::flows::flow_ingest_client::FlowIngestClient;
use manul_proto::flows::flows_client::FlowsClient;
use manul_proto::flows::{
    FlowRecord, ListRequest, PushHello, PushRequest, RecordBatch, push_request,
};
use manul_tls::connect::Transport;
use manul_tls::dev::{DevSet, write_dev_set};
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

const UNUSED: &str = "127.0.0.1:1";

fn record(src: &str, action: &str) -> FlowRecord {
    let now = now();
    FlowRecord {
        start_unix_s: now - 15,
        end_unix_s: now,
        node: "node1".into(),
        reporter: "dst".into(),
        src: Some(pod("shop", src)),
        dst: Some(pod("shop", "db")),
        protocol: 6,
        dst_port: 5432,
        action: action.into(),
        flows_started: u64::from(action == "allow"),
        flows_denied: u64::from(action == "deny"),
        ..FlowRecord::default()
    }
}

fn certs(dir: &Path) -> impl Fn(&str) -> PathBuf + '_ {
    write_dev_set(
        dir,
        &DevSet {
            typha_names: vec!["127.0.0.1".into()],
            typha_cn: manul_tls::dev::TYPHA_CN.into(),
            nodes: vec!["node1".into()],
            days: 1,
        },
    )
    .unwrap();
    move |f: &str| dir.join(f)
}

/// manulctl's TLS flags with the administrator's certificate.
fn admin_flags(file: &dyn Fn(&str) -> PathBuf) -> [String; 6] {
    [
        "--ca-file".to_owned(),
        path(&file("ca.crt")),
        "--cert-file".to_owned(),
        path(&file("admin.crt")),
        "--key-file".to_owned(),
        path(&file("admin.key")),
    ]
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Felix's transport with `identity`'s certificate (`felix-node1`, ...).
fn transport(file: &dyn Fn(&str) -> PathBuf, identity: &str, url: &str) -> Transport {
    let (ca, cert, key) = (
        path(&file("ca.crt")),
        path(&file(&format!("{identity}.crt"))),
        path(&file(&format!("{identity}.key"))),
    );
    export::transport(url, [&ca, &cert, &key], None, None).unwrap()
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_pushes_and_manulctl_reads_over_mutual_tls_and_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = certs(dir.path());
    let shared = Shared::new(Store::new(3600, 1000));
    let (url, port) = tls_aggregator(&file, &shared).await;

    // Felix's exporter, with its certificate, checking the aggregator's.
    let (records_tx, records_rx) = mpsc::channel(4);
    let (status_tx, status) = watch::channel(ExportStatus::default());
    tokio::spawn(export::run(
        ExportConfig {
            endpoint: url.clone(),
            transport: transport(&file, "felix-node1", &url),
            node: "node1".into(),
            epoch: 1,
            capacity: 100,
        },
        records_rx,
        status_tx,
    ));
    records_tx
        .send(vec![record("web-*", "allow"), record("cache", "deny")])
        .await
        .unwrap();
    let start = Instant::now();
    while status.borrow().acknowledged < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no acknowledgement over TLS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shared.store().len(), 2);

    // manulctl with the administrator's certificate.
    let admin = admin_flags(&file);
    let ctl = |extra: &[&str]| {
        let mut args: Vec<String> = admin.to_vec();
        args.extend(["flows", "--aggregator", url.as_str(), "-o", "json"].map(str::to_owned));
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            manulctl(UNUSED, &args).await
        }
    };
    let out = ctl(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["source"]["workload"], "web-*");

    // The aggregator must carry the identity asked for.
    let out = ctl(&["--aggregator-cn", "manul-typha"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot reach the flow aggregator"),
        "{}",
        text(&out.stderr)
    );
    // https:// without a certificate is bad input; plaintext gets nowhere.
    let out = manulctl(UNUSED, &["flows", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--ca-file, --cert-file and --key-file"));
    let plain = format!("http://127.0.0.1:{port}");
    let out = manulctl(UNUSED, &["flows", "--aggregator", &plain]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // A certificate of an identity the aggregator does not admit (the CNI
    // plugin's) fails the handshake.
    let cni = transport(&file, "cni-node1", &url);
    let admitted = match cni.connect(endpoint(port)).await {
        Err(_) => false,
        Ok(channel) => FlowsClient::new(channel)
            .list(ListRequest::default())
            .await
            .is_ok(),
    };
    assert!(!admitted, "the CNI plugin's certificate was admitted");

    // Felix may push but not read; the administrator may read but not push.
    let felix = transport(&file, "felix-node1", &url)
        .connect(endpoint(port))
        .await
        .unwrap();
    let denied = FlowsClient::new(felix)
        .list(ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let admin_tls = manul_tls::client::ClientSettings {
        ca_file: file("ca.crt"),
        cert_file: file("admin.crt"),
        key_file: file("admin.key"),
        server: manul_tls::Expected::new([manul_tls::dev::FLOWS_CN.to_owned()], [], "test")
            .unwrap(),
    }
    .config()
    .unwrap();
    let admin_channel = Transport::Tls(admin_tls)
        .connect(endpoint(port))
        .await
        .unwrap();
    let hello = PushRequest {
        msg: Some(push_request::Msg::Hello(PushHello {
            node: "node1".into(),
            epoch: 9,
        })),
    };
    let denied = FlowIngestClient::new(admin_channel)
        .push(tokio_stream::iter([hello]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(shared.store().len(), 2);
}

/// The aggregator over TLS on a free loopback port, serving `shared`;
/// its https:// URL and its port.
async fn tls_aggregator(file: &dyn Fn(&str) -> PathBuf, shared: &Shared) -> (String, u16) {
    let tls = TlsArgs {
        ca_file: Some(file("ca.crt")),
        server_cert_file: Some(file("flows.crt")),
        server_key_file: Some(file("flows.key")),
        ..TlsArgs::default()
    }
    .build()
    .unwrap()
    .unwrap();
    let shared = shared.clone().with_gates(tls.gates.clone());
    let port = free_low_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(
        router(&shared).serve_with_incoming(manul_tls::accept::incoming(listener, tls.config)),
    );
    (format!("https://127.0.0.1:{port}"), port)
}

/// A single-node Typha whose listeners speak TLS with the development
/// certificates, leading; it and its address.
async fn tls_typha(
    file: &dyn Fn(&str) -> PathBuf,
    data: &Path,
) -> (manul_typha::server::Running, String) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_low_port()));
    let mut config = manul_typha::server::TyphaConfig::single(data.to_path_buf(), addr);
    config.tls = manul_typha::tls::TlsArgs {
        ca_file: Some(file("ca.crt")),
        server_cert_file: Some(file("typha.crt")),
        server_key_file: Some(file("typha.key")),
        // Felix's; the administrator is admitted anyway.
        client_cn: vec![manul_tls::dev::FELIX_CN.into()],
        ..manul_typha::tls::TlsArgs::default()
    }
    .build()
    .unwrap();
    let typha = manul_typha::server::start(config).await.unwrap();
    let start = Instant::now();
    while typha.node.status().leader_id != typha.node.id() {
        assert!(start.elapsed() < Duration::from_secs(10), "Typha never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = typha.local_addr.to_string();
    (typha, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_read_the_aggregator_over_mutual_tls_as_flows_does() {
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("certs");
    let file = certs(&cert_dir);
    let (_typha, server) = tls_typha(&file, &dir.path().join("typha")).await;
    let shared = Shared::new(Store::new(3600, 1000));
    let (url, _) = tls_aggregator(&file, &shared).await;
    let admin = admin_flags(&file);
    let run = |args: &[&str]| {
        let mut all: Vec<String> = admin.to_vec();
        all.extend(args.iter().map(|s| s.to_string()));
        let server = server.clone();
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            manulctl(&server, &refs).await
        }
    };
    let cluster = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/report/testdata/cluster.yaml"
    );
    let out = run(&["apply", "-f", cluster]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // web → db on 5432, allowed by shop/db-allow's first ingress rule.
    let now = now();
    shared.store().ingest(
        "node1",
        1,
        RecordBatch {
            seq: 1,
            records: vec![allowed_web_to_db(now, 40), allowed_web_to_db(now - 15, 2)],
        },
        now,
    );

    // Both reports over TLS: the aggregator's statistics and records.
    let out = run(&["report", "policy", "--aggregator", &url, "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policies"][0]["name"], "db-allow", "{report:#}");
    assert_eq!(report["policies"][0]["flows_allowed"], 42);
    let out = run(&["report", "compliance", "--aggregator", &url, "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shop = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "shop")
        .cloned()
        .unwrap();
    assert_eq!(shop["ingress"]["observed_allowed"][0]["peer"], "shop/web-*");
    assert_eq!(shop["ingress"]["observed_allowed"][0]["flows"], 42);

    // The aggregator must carry the identity asked for; plaintext towards
    // a TLS aggregator gets nowhere; https:// without a certificate and
    // an identity flag without https:// are bad input.
    let out = run(&[
        "report",
        "policy",
        "--aggregator",
        &url,
        "--aggregator-cn",
        "manul-typha",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot reach the flow aggregator"),
        "{}",
        text(&out.stderr)
    );
    let plain = url.replace("https://", "http://");
    let out = run(&["report", "compliance", "--aggregator", &plain]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = manulctl(&server, &["report", "policy", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--ca-file, --cert-file and --key-file"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "report",
        "policy",
        "--aggregator",
        &plain,
        "--aggregator-uri-san",
        "spiffe://manul/flows",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("need an https:// aggregator"));
}
