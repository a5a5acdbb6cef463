//! Clients that misbehave at the connection level against a real `typha`
//! process on loopback: garbage instead of HTTP/2, connections that open
//! and never speak (or send the HTTP/2 preface and fall silent), a Sync
//! client that never reads its stream, and one connection opening many
//! Sync streams. While they are connected, Felix-style Sync clients get
//! every delta promptly and writes succeed; the silent connections are
//! closed within the handshake and keepalive bounds; the slow reader is
//! dropped once the revisions it needs leave the history, and the drop is
//! counted in `typha_connections_dropped_total{reason="fell_behind"}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_proto::v1::SyncRequest;
use manul_proto::v1::sync_message::Message;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Deltas retained: a client this many revisions behind is dropped.
const HISTORY: u64 = 16;
/// Writes made while the hostile clients are connected.
const WRITES: u64 = 200;
/// How long a write, or a delta's trip to every Felix, may take.
const PROMPT: Duration = Duration::from_secs(2);
/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn hello(node: &str, compression: &[&str]) -> SyncRequest {
    SyncRequest {
        node_name: node.into(),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        resume_revision: 0,
        accepted_compression: compression.iter().map(|c| (*c).to_owned()).collect(),
    }
}

/// A Felix-style client on its own connection, reading everything; the
/// watch holds the revision it has received up to (0 until in sync).
async fn felix(c: &Cluster, node: &str) -> watch::Receiver<u64> {
    let mut stream = c
        .sync(0)
        .await
        .sync(hello(node, &["gzip"]))
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            match message.message {
                Some(Message::InSync(s)) => tx.send_replace(s.revision),
                Some(Message::Deltas(d)) => tx.send_replace(d.last_revision),
                _ => continue,
            };
        }
    });
    rx
}

/// Reads `socket` until the server closes it; how long that took.
fn until_closed(mut socket: TcpStream) -> tokio::task::JoinHandle<Duration> {
    let started = Instant::now();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
        started.elapsed()
    })
}

async fn closed_within(
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<Duration>>,
    within: Duration,
) {
    for task in tasks {
        let took = tokio::time::timeout(within, task)
            .await
            .unwrap_or_else(|_| panic!("a {what} connection is still open after {within:?}"))
            .unwrap();
        assert!(took <= within, "a {what} connection took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_stall_and_starve_no_one() {
    let _serial = SERIAL.lock().await;
    let flags = [
        ("--history-revisions", HISTORY),
        ("--handshake-timeout-secs", 2),
        ("--http2-keepalive-secs", 1),
        ("--http2-keepalive-timeout-secs", 1),
        ("--max-streams-per-connection", 8),
    ];
    let c = Cluster::start_with(
        1,
        10_000,
        flags
            .iter()
            .flat_map(|(f, v)| [(*f).to_owned(), v.to_string()])
            .collect(),
    )
    .await;
    let addr = c.replicas[0].addr();

    // Garbage instead of HTTP/2, and garbage after a valid preface: the
    // connection is closed at once.
    let mut garbage = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for k in 0..20 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if k % 2 == 1 {
            socket.write_all(PREFACE).await.unwrap();
        }
        // The server may close before it has read everything.
        let _ = socket.write_all(&noise).await;
        garbage.push(until_closed(socket));
    }
    // Half-open: connected and silent, or silent after the preface.
    let mut silent = Vec::new();
    let mut after_preface = Vec::new();
    for _ in 0..50 {
        silent.push(until_closed(TcpStream::connect(&addr).await.unwrap()));
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(PREFACE).await.unwrap();
        after_preface.push(until_closed(socket));
    }
    // A Sync client that never reads its stream (identity compression:
    // big deltas), with the smallest HTTP/2 windows.
    let slow_channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let slow = manul_proto::v1::sync_client::SyncClient::new(slow_channel)
        .sync(hello("slow-reader", &[]))
        .await
        .unwrap()
        .into_inner();
    // One connection asking for 40 Sync streams: at most 8 are open.
    let hog = common::connect(&addr).await;
    for k in 0..40 {
        let mut client = manul_proto::v1::sync_client::SyncClient::new(hog.clone());
        tokio::spawn(async move {
            if let Ok(_held_never_read) = client.sync(hello(&format!("hog-{k}"), &[])).await {
                std::future::pending::<()>().await;
            }
        });
    }

    let mut felixes = Vec::new();
    for k in 0..3 {
        felixes.push(felix(&c, &format!("node{k}")).await);
    }
    for f in &mut felixes {
        tokio::time::timeout(Duration::from_secs(10), f.wait_for(|r| *r > 0))
            .await
            .expect("a Felix gets in sync")
            .unwrap();
    }

    let mut resources = c.resources(0).await;
    let (mut slowest_write, mut slowest_delta) = (Duration::ZERO, Duration::ZERO);
    for k in 0..WRITES {
        let started = Instant::now();
        let revision = tokio::time::timeout(PROMPT, resources.apply(common::big_set(k)))
            .await
            .unwrap_or_else(|_| panic!("write {k} took longer than {PROMPT:?}"))
            .unwrap()
            .into_inner()
            .revision;
        slowest_write = slowest_write.max(started.elapsed());
        for f in &mut felixes {
            tokio::time::timeout(PROMPT, f.wait_for(|r| *r >= revision))
                .await
                .unwrap_or_else(|_| panic!("revision {revision} did not reach a Felix in time"))
                .unwrap();
        }
        slowest_delta = slowest_delta.max(started.elapsed());
    }
    eprintln!("slowest write {slowest_write:?}, slowest write-to-every-Felix {slowest_delta:?}");

    // The slow reader fell behind and was dropped, visibly.
    let fell_behind = "typha_connections_dropped_total{reason=\"fell_behind\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.metric(0, fell_behind).await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the slow reader was not dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What it finally reads ends with the reason.
    let mut slow = slow;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the slow reader's stream ends");
    let status = ended.expect("the slow reader's stream ends with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("fell behind"), "{status:?}");

    // The hog holds at most 8 streams: with the 3 Felixes, 11 at most
    // (the hog's own were dropped as slow readers too, or still open).
    let active = c.metric(0, "typha_connections_active").await.unwrap();
    assert!(active <= 11.0, "{active} Sync streams open");

    closed_within("garbage", garbage, Duration::from_secs(2)).await;
    // Handshake bound 2 s; keepalive 1 s plus 1 s to acknowledge.
    closed_within("silent", silent, Duration::from_secs(5)).await;
    closed_within(
        "silent-after-preface",
        after_preface,
        Duration::from_secs(5),
    )
    .await;

    // A newcomer still gets in sync at once, and writes still go through.
    let mut late = felix(&c, "late").await;
    tokio::time::timeout(PROMPT, late.wait_for(|r| *r > WRITES))
        .await
        .expect("a new Felix gets in sync promptly")
        .unwrap();
    common::apply(&c, 0, &["after".to_owned()]).await.unwrap();
    assert!(
        slowest_write < PROMPT && slowest_delta < PROMPT,
        "{slowest_write:?} {slowest_delta:?}"
    );
}
