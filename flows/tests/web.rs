//! The web UI's HTTP side on a loopback port: the embedded page with its
//! security headers, the JSON list and graph with the gRPC filters, a bad
//! filter refused naming it, and the follow stream as Server-Sent Events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use manul_flows::{Shared, Store};
use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit, RecordBatch};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn record(src: &str, dst: &str, action: &str, n: u64) -> FlowRecord {
    let ep = |w: &str| FlowEndpoint {
        kind: "pod".into(),
        namespace: "shop".into(),
        workload: w.into(),
        labels: Default::default(),
    };
    FlowRecord {
        start_unix_s: manul_flows::server::unix_now() - 15,
        end_unix_s: manul_flows::server::unix_now(),
        node: "node2".into(),
        reporter: "dst".into(),
        src: Some(ep(src)),
        dst: Some(ep(dst)),
        protocol: 6,
        dst_port: 8080,
        action: action.into(),
        enforced: vec![PolicyHit {
            tier: "default".into(),
            kind: "NetworkPolicy".into(),
            namespace: "shop".into(),
            name: "<b>web-to-api</b>".into(),
            rule_index: Some(0),
            action: action.into(),
        }],
        flows_started: if action == "allow" { n } else { 0 },
        flows_denied: if action == "deny" { n } else { 0 },
        ..FlowRecord::default()
    }
}

/// A loopback port below 32768 that nothing listens on now.
async fn listener() -> tokio::net::TcpListener {
    for i in 0..2000u32 {
        let port = 20000 + ((std::process::id().wrapping_mul(31) + i * 7) % 12000) as u16;
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
    }
    panic!("no free loopback port");
}

/// GET `path`: the status, the headers (lower-case names) and the body.
async fn get(port: u16, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_the_api_and_the_follow_stream() {
    let shared = Shared::new(Store::new(3600, 1000));
    let l = listener().await;
    let port = l.local_addr().unwrap().port();
    tokio::spawn(manul_flows::web::serve(l, shared.clone(), None));
    shared.ingest(
        "node2",
        1,
        RecordBatch {
            seq: 1,
            records: vec![
                record("web-*", "api", "allow", 5),
                record("other", "api", "deny", 3),
            ],
        },
    );

    let (status, headers, body) = get(port, "/").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").starts_with("text/html"));
    let csp = header(&headers, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert!(body.contains("<script src=\"app.js\""), "{body}");
    for asset in ["/app.js", "/app.css"] {
        let (status, _, body) = get(port, asset).await;
        assert_eq!(status, 200);
        assert!(!body.is_empty());
    }
    let (_, _, js) = get(port, "/app.js").await;
    assert!(!js.contains("innerHTML"), "the page must set names as text");

    let (status, _, body) = get(port, "/api/flows?verdict=denied").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"]["workload"], "other");
    assert_eq!(
        records[0]["policies"]["enforced"][0]["display"],
        "shop/<b>web-to-api</b>"
    );
    let (_, _, body) = get(port, "/api/flows?from_pod=shop%2Fweb-*&to_pod=shop/api").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
    assert_eq!(v["records"][0]["action"], "allow");

    let (status, _, body) = get(port, "/api/graph").await;
    assert_eq!(status, 200, "{body}");
    let g: Value = serde_json::from_str(&body).unwrap();
    let edges = g["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{g}");
    let web = edges.iter().find(|e| e["source"] == "shop/web-*").unwrap();
    assert_eq!(
        (web["allowed"].as_u64(), web["denied"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(web["target"], "shop/api");
    assert_eq!(web["policies"][0]["name"], "shop/<b>web-to-api</b>");
    assert_eq!(g["nodes"].as_array().unwrap().len(), 3);

    let (status, _, body) = get(port, "/api/flows?port=http").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "port=\"http\": expected a port, 1 to 65535")
    );
    let (status, _, body) = get(port, "/api/graph?colour=red").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "unknown parameter \"colour\"")
    );

    // Follow: only what is stored from now on, filtered.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /api/follow?verdict=allowed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if line.to_ascii_lowercase().starts_with("content-type:") {
            assert!(line.contains("text/event-stream"), "{line}");
        }
    }
    // Stored after the subscription (made before the answer's head): a
    // denial (filtered out), then an allowed record.
    let ack = shared.ingest(
        "node2",
        1,
        RecordBatch {
            seq: 2,
            records: vec![
                record("other", "api", "deny", 1),
                record("cache-*", "api", "allow", 2),
            ],
        },
    );
    assert_eq!(ack, 2);
    let events = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            got.push_str(&line);
            if line.starts_with("data:") {
                return got;
            }
        }
    })
    .await
    .expect("no follow event");
    assert!(events.contains("event: record"), "{events}");
    let data = events
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap()
        .trim();
    let r: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        r["source"]["workload"], "cache-*",
        "the denial is filtered out"
    );
}
