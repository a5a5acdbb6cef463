//! `manulctl flows` against the real flow aggregator (in this process, on
//! loopback ports), fed by Felix's real exporter through a TCP proxy the
//! test can cut: a batch stored whose acknowledgement was lost is resent
//! after the reconnect and dropped as a duplicate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::flows::{now, serve};
use common::{free_low_port, manulctl, text};
use manul_felix::flows::export::{self, ExportConfig, ExportStatus};
use manul_flows::{Shared, Store};
use manul_proto::flows::flows_client::FlowsClient;
use manul_proto::flows::{FlowEndpoint, FlowFilter, FlowRecord, ListRequest, PolicyHit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

const UNUSED: &str = "127.0.0.1:1";

fn record(src: &str, dst: &str, port: u32, action: &str, end: u64) -> FlowRecord {
    let ep = |w: &str| FlowEndpoint {
        kind: "pod".into(),
        namespace: "shop".into(),
        workload: w.into(),
        labels: [("app".to_owned(), w.trim_end_matches("-*").to_owned())]
            .into_iter()
            .collect(),
    };
    FlowRecord {
        start_unix_s: end - 15,
        end_unix_s: end,
        node: "node1".into(),
        reporter: "dst".into(),
        src: Some(ep(src)),
        dst: Some(ep(dst)),
        protocol: 6,
        dst_port: port,
        action: action.into(),
        enforced: vec![PolicyHit {
            tier: "default".into(),
            kind: if action == "allow" {
                "NetworkPolicy"
            } else {
                "EndOfTier"
            }
            .into(),
            namespace: if action == "allow" { "shop" } else { "" }.into(),
            name: if action == "allow" {
                "db-allow"
            } else {
                "default"
            }
            .into(),
            rule_index: (action == "allow").then_some(0),
            action: action.into(),
        }],
        flows_started: u64::from(action == "allow"),
        flows_denied: u64::from(action == "deny"),
        packets_forward: 4,
        bytes_forward: 400,
        ..FlowRecord::default()
    }
}

/// A TCP proxy whose answers (server to client) can be held back and
/// whose connections can be cut.
struct Proxy {
    answers: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(listen: u16, to: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen))
            .await
            .unwrap();
        let answers = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (a, c) = (answers.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", to))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let gate = a.clone();
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if gate.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                c.lock().await.extend([up, down]);
            }
        });
        Proxy { answers, conns }
    }

    async fn cut(&self) {
        for h in self.conns.lock().await.drain(..) {
            h.abort();
        }
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_records_reach_manulctl_once_across_a_lost_acknowledgement() {
    let shared = Shared::new(Store::new(3600, 10_000));
    let server_port = free_low_port();
    serve(&shared, server_port).await;
    let proxy_port = free_low_port();
    let proxy = Proxy::start(proxy_port, server_port).await;

    let (records_tx, records_rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(ExportStatus::default());
    tokio::spawn(export::run(
        ExportConfig {
            endpoint: format!("http://127.0.0.1:{proxy_port}"),
            transport: manul_tls::connect::Transport::Plain,
            node: "node1".into(),
            epoch: 42,
            capacity: 1000,
        },
        records_rx,
        status_tx,
    ));
    let t = now();
    records_tx
        .send(vec![
            record("web-*", "db", 5432, "allow", t),
            record("web-*", "db", 22, "deny", t),
        ])
        .await
        .unwrap();
    wait_until("the first acknowledgement", || {
        status.borrow().acknowledged == 1
    })
    .await;

    // The aggregator stores the next batch, but its acknowledgement is
    // lost; then the connection breaks.
    proxy.answers.store(false, Ordering::SeqCst);
    records_tx
        .send(vec![record("cache", "db", 5432, "deny", t)])
        .await
        .unwrap();
    wait_until("the second batch stored", || shared.store().len() == 3).await;
    assert_eq!(status.borrow().acknowledged, 1);
    proxy.cut().await;
    proxy.answers.store(true, Ordering::SeqCst);
    // Felix reconnects and resends it; it is not stored again.
    wait_until("the resent batch acknowledged", || {
        status.borrow().acknowledged == 2
    })
    .await;
    assert_eq!(shared.store().len(), 3);
    assert_eq!(shared.store().stats.duplicates, 1);
    assert_eq!(status.borrow().unacknowledged, 0);

    // A follower sees what is stored from now on.
    let mut client = FlowsClient::connect(format!("http://127.0.0.1:{server_port}"))
        .await
        .unwrap();
    let mut follow = client
        .follow(ListRequest {
            filter: Some(FlowFilter {
                action: "allow".into(),
                ..FlowFilter::default()
            }),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    records_tx
        .send(vec![
            record("cache", "db", 6379, "deny", t),
            record("api-*", "db", 5432, "allow", t),
        ])
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), follow.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.src.unwrap().workload,
        "api-*",
        "the denial is filtered out"
    );

    // manulctl: the table, filters, JSON.
    let url = format!("http://127.0.0.1:{server_port}");
    let out = manulctl(UNUSED, &["flows", "--aggregator", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 1 + 5, "{table}");
    assert!(table.lines().next().unwrap().starts_with("TIME"), "{table}");
    assert!(
        table.contains("shop/web-*") && table.contains("shop/db-allow#0:allow"),
        "{table}"
    );
    let json = |args: &[&str]| {
        let url = url.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let mut full = vec![
                "flows".to_owned(),
                "--aggregator".into(),
                url,
                "-o".into(),
                "json".into(),
            ];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            let out = manulctl(UNUSED, &refs).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            text(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let denied = json(&["--verdict", "dropped", "--since", "5m"]).await;
    assert_eq!(denied.len(), 3);
    assert!(denied.iter().all(|r| r["action"] == "deny"));
    let to_db_5432 = json(&[
        "--to-pod",
        "shop/db",
        "--port",
        "5432",
        "--verdict",
        "allowed",
    ])
    .await;
    let srcs: Vec<&str> = to_db_5432
        .iter()
        .map(|r| r["source"]["workload"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, vec!["web-*", "api-*"]);
    let by_policy = json(&[
        "--policy",
        "shop/db-allow",
        "--from-pod",
        "web-6d4cf56db6-x2k9p",
    ])
    .await;
    assert_eq!(by_policy.len(), 1);
    assert_eq!(by_policy[0]["policies"]["enforced"][0]["rule_index"], 0);
    let by_label = json(&["--label", "app=cache"]).await;
    assert_eq!(by_label.len(), 2);
    assert!(
        json(&["--since", "1s", "--namespace", "elsewhere"])
            .await
            .is_empty()
    );

    // Bad flags: exit 2, naming the flag.
    for (args, needle) in [
        (&["flows", "--since", "yesterday"][..], "--since"),
        (&["flows", "--verdict", "maybe"][..], "--verdict"),
        (&["flows", "--port", "http"][..], "--port"),
        (&["flows", "--label", "app"][..], "--label"),
        (
            &["flows", "--aggregator", "127.0.0.1:1"][..],
            "--aggregator",
        ),
    ] {
        let out = manulctl(UNUSED, args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
