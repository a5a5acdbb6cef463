//! Clients that misbehave on the lean Sync transport (`--sync-listen`),
//! against a real `typha` process on loopback:
//!
//! - connections that never send their hello (or send part of it) are
//!   closed after the handshake timeout, and each holds a slot of the
//!   client listener's pool (`typha_listener_connections{listener="client"}`)
//!   meanwhile: with the pool full the listener waits before accepting;
//! - an oversized length, a frame that does not decode, an invalid
//!   request and plain noise each get a `StreamEnd` naming the problem and
//!   the connection closed; bytes after the hello close it; the process
//!   neither panics nor stops serving the others;
//! - a Sync client that stops reading is cut within the stall timeout
//!   (`reason="stalled"`), with the process's memory growing by a bounded
//!   amount;
//! - a flood of silent connections against a process with RLIMIT_NOFILE
//!   256 leaves `/readyz` answering and the accept loop idle;
//! - with TLS, connections that never finish the TLS handshake are closed
//!   after its 10 s, and those that finish it but send no hello after the
//!   handshake timeout, each holding a slot from its accept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::tls_typha::{TlsTypha, felix_tls};
use common::{Cluster, SERIAL};
use manul_listen::testing::{closed_between, no_tls_handshakes, until_closed, wait_metric_eq};
use manul_proto::frame::{self, FrameReader};
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{StreamEnd, SyncMessage, SyncRequest};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn hello(node: &str, compression: &[&str]) -> SyncRequest {
    SyncRequest {
        node_name: node.into(),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        resume_revision: 0,
        accepted_compression: compression.iter().map(|c| (*c).to_owned()).collect(),
    }
}

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(f, v)| [(*f).to_owned(), (*v).to_owned()])
        .collect()
}

/// A one-replica cluster with a sync listener; its address.
async fn lean_cluster(extra: &[(&str, &str)], nofile: Option<u64>) -> (Cluster, String) {
    let sync = format!("127.0.0.1:{}", common::free_port());
    let mut args = flags(extra);
    args.extend(["--sync-listen".to_owned(), sync.clone()]);
    let c = Cluster::start_limited(1, 10_000, args, nofile).await;
    (c, sync)
}

/// A Felix-style lean client on `io`, reading everything; the watch holds
/// the revision it has received up to (0 until in sync).
fn follow<S>(io: S, node: &str) -> watch::Receiver<u64>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = watch::channel(0);
    let request = hello(node, &["gzip"]);
    tokio::spawn(async move {
        let mut stream = frame::open(io, &request, frame::MAX_MESSAGE_BYTES)
            .await
            .unwrap();
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

async fn felix(addr: &str, node: &str) -> watch::Receiver<u64> {
    follow(TcpStream::connect(addr).await.unwrap(), node)
}

async fn wait_metric(c: &Cluster, name: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = c.metric(0, name).await.unwrap_or(0.0);
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {v}, not {at_least}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_sets(c: &Cluster, names: &[&str]) -> u64 {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    common::apply(c, 0, &names).await.unwrap().revision
}

async fn reaches(rx: &mut watch::Receiver<u64>, revision: u64, within: Duration, who: &str) {
    tokio::time::timeout(within, rx.wait_for(|r| *r >= revision))
        .await
        .unwrap_or_else(|_| panic!("{who} did not reach revision {revision} within {within:?}"))
        .unwrap();
}

const CLIENT_OPEN: &str = "typha_listener_connections{listener=\"client\"}";
const CLIENT_FULL: &str = "typha_listener_full_total{listener=\"client\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unfinished_hellos_hold_a_slot_until_the_handshake_timeout() {
    let _serial = SERIAL.lock().await;
    let (c, sync) = lean_cluster(
        &[
            ("--handshake-timeout-secs", "2"),
            ("--max-connections-per-listener", "12"),
        ],
        None,
    )
    .await;
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut partial = Vec::new();
    // 11 connections: with the slot the gRPC client listener's accept loop
    // holds for its next connection, the pool of 12 is full.
    for k in 0..6 {
        if k < 5 {
            silent.push(until_closed(TcpStream::connect(&sync).await.unwrap()));
        }
        let mut socket = TcpStream::connect(&sync).await.unwrap();
        // Part of a length prefix, or a length and part of its frame.
        let bytes: &[u8] = if k % 2 == 0 {
            &[0, 0]
        } else {
            &[0, 0, 0, 40, 10, 3, b'a']
        };
        socket.write_all(bytes).await.unwrap();
        partial.push(until_closed(socket));
    }
    // Every one holds a slot of the client listener's pool: full.
    let open = wait_metric(&c, CLIENT_OPEN, 11.0, Duration::from_secs(1)).await;
    assert_eq!(open, 11.0);
    // One more waits in the kernel's backlog, not accepted: counted.
    let mut late = TcpStream::connect(&sync).await.unwrap();
    wait_metric(&c, CLIENT_FULL, 1.0, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(c.metric(0, CLIENT_OPEN).await, Some(11.0));

    closed_between(
        "silent",
        silent,
        Duration::from_millis(1800),
        Duration::from_secs(4),
    )
    .await;
    closed_between(
        "half-hello",
        partial,
        Duration::from_millis(1800),
        Duration::from_secs(4),
    )
    .await;

    // The one that waited is accepted once slots are free, and a whole
    // hello is served.
    let request = frame::encode_frame(&hello("late", &[]), frame::MAX_HELLO_BYTES).unwrap();
    late.write_all(&request).await.unwrap();
    let mut stream = FrameReader::new(late, frame::MAX_MESSAGE_BYTES, 4096);
    let first = tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("the waiting client is served")
        .unwrap()
        .unwrap();
    let first = SyncMessage::decode(first).unwrap();
    assert!(
        matches!(first.message, Some(Message::Hello(_))),
        "{first:?}"
    );
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.metric(0, CLIENT_OPEN).await != Some(0.0) {
        assert!(Instant::now() < deadline, "slots not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `bytes` on a new connection and reads what comes back: the
/// `StreamEnd` (if any) and whether the connection was then closed.
async fn send_and_read_end(sync: &str, bytes: &[u8]) -> (Option<StreamEnd>, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(sync).await.unwrap();
    // The server may close before it has read everything.
    let _ = socket.write_all(bytes).await;
    let mut reader = FrameReader::new(socket, frame::MAX_MESSAGE_BYTES, 4096);
    let mut end = None;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.next().await {
                Ok(Some(frame)) => {
                    let message = SyncMessage::decode(frame).unwrap();
                    if let Some(Message::End(e)) = message.message {
                        end = Some(e);
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection stays open");
    (end, started.elapsed())
}

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_a_named_end_and_the_connection_closed() {
    let _serial = SERIAL.lock().await;
    let (c, sync) = lean_cluster(&[("--handshake-timeout-secs", "2")], None).await;
    let mut reader = felix(&sync, "reader").await;
    let first = write_sets(&c, &["before"]).await;
    reaches(&mut reader, first, Duration::from_secs(3), "the reader").await;

    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut empty_node = Vec::new();
    hello("", &[]).encode(&mut empty_node).unwrap();
    let mut bad_field = vec![0xffu8; 12];
    bad_field[0] = 0x0a; // field 1, length-delimited, a length past the end
    let mut big = frame_of(&[]);
    big[..4].copy_from_slice(&(64 * 1024 + 1u32).to_be_bytes());
    big.extend(noise(70 * 1024));
    let mut huge = vec![0xff, 0xff, 0xff, 0xff];
    huge.extend(noise(1024 * 1024));
    let mut noisy = noise(64 * 1024);
    noisy[0] = 0x7f; // a length over the limit
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a 4 GiB length", huge, "over the limit of 65536"),
        ("a 64 KiB + 1 frame", big, "over the limit of 65536"),
        ("noise", noisy, "over the limit"),
        (
            "a frame that is no SyncRequest",
            frame_of(&bad_field),
            "does not decode as a SyncRequest",
        ),
        ("an empty node name", frame_of(&empty_node), "node_name"),
        (
            "a frame cut by the close",
            vec![0, 0, 0, 100, 1, 2, 3],
            "closed inside a frame",
        ),
    ];
    for (what, bytes, named) in &cases {
        if *what == "a frame cut by the close" {
            // Sent, then the client's half closed.
            let mut socket = TcpStream::connect(&sync).await.unwrap();
            socket.write_all(bytes).await.unwrap();
            socket.shutdown().await.unwrap();
            let mut reader = FrameReader::new(socket, frame::MAX_MESSAGE_BYTES, 4096);
            let end = tokio::time::timeout(Duration::from_secs(5), reader.next())
                .await
                .expect("answered")
                .unwrap()
                .map(|f| SyncMessage::decode(f).unwrap());
            let Some(SyncMessage {
                message: Some(Message::End(end)),
            }) = end
            else {
                panic!("{what}: no end: {end:?}");
            };
            assert!(end.message.contains(named), "{what}: {}", end.message);
            continue;
        }
        let (end, took) = send_and_read_end(&sync, bytes).await;
        let end = end.unwrap_or_else(|| panic!("{what}: closed without a StreamEnd"));
        eprintln!("{what}: {} (code {}) after {took:?}", end.message, end.code);
        assert_eq!(end.code, tonic::Code::InvalidArgument as i32, "{what}");
        assert!(
            end.message.contains(named),
            "{what}: {:?} does not name {named:?}",
            end.message
        );
        assert!(took < Duration::from_secs(2), "{what}: took {took:?}");
    }

    // Bytes after a valid hello: the stream starts, then the connection is
    // closed.
    let mut socket = TcpStream::connect(&sync).await.unwrap();
    let request = frame::encode_frame(&hello("chatty", &[]), frame::MAX_HELLO_BYTES).unwrap();
    socket.write_all(&request).await.unwrap();
    socket.write_all(b"more").await.unwrap();
    closed_between(
        "chatty",
        vec![until_closed(socket)],
        Duration::ZERO,
        Duration::from_secs(2),
    )
    .await;

    // No panic: the process runs, serves the reader, takes writes.
    assert!(
        c.replicas[0].child.as_ref().is_some(),
        "the replica was started"
    );
    let after = write_sets(&c, &["after"]).await;
    reaches(&mut reader, after, Duration::from_secs(3), "the reader").await;
    assert_eq!(c.http(0, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(c.metric(0, CLIENT_OPEN).await, Some(1.0));
}

/// A GlobalNetworkSet of 2,000 addresses: about 40 KiB per delta.
fn huge_set(k: u64) -> manul_proto::v1::ApplyRequest {
    let nets: Vec<String> = (0..2000)
        .map(|i| format!("\"10.{}.{}.{}/32\"", k % 250, i / 250, i % 250))
        .collect();
    let document = format!(
        "{{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"GlobalNetworkSet\",\"metadata\":{{\"name\":\"huge-{k}\"}},\"spec\":{{\"nets\":[{}]}}}}",
        nets.join(",")
    );
    manul_proto::v1::ApplyRequest {
        items: vec![manul_proto::v1::ApplyItem {
            document: document.into_bytes().into(),
            origin: format!("huge-{k}"),
            expected_revision: None,
        }],
        deletes: Vec::new(),
        origin: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_client_that_stops_reading_is_cut_in_bounded_time_and_memory() {
    let _serial = SERIAL.lock().await;
    let (c, sync) = lean_cluster(&[("--sync-stall-timeout-secs", "2")], None).await;
    let mut reader = felix(&sync, "reader").await;
    // The staller: a small receive buffer, identity compression (large
    // deltas), a hello, and never a read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut staller = socket.connect(sync.parse().unwrap()).await.unwrap();
    let request = frame::encode_frame(&hello("staller", &[]), frame::MAX_HELLO_BYTES).unwrap();
    staller.write_all(&request).await.unwrap();
    let active = wait_metric(&c, "typha_connections_active", 2.0, Duration::from_secs(2)).await;
    assert_eq!(active, 2.0);

    let rss_before = c.memory_kib(0, "VmRSS").unwrap();
    let mut resources = c.resources(0).await;
    let mut last = 0;
    let started = Instant::now();
    // About 12 MiB of deltas: more than the socket buffers on both sides
    // (loopback's grow to 4 MiB) and the staller's queue hold.
    for k in 0..300 {
        last = resources
            .apply(huge_set(k))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    eprintln!("300 writes of 40 KiB in {:?}", started.elapsed());
    reaches(&mut reader, last, Duration::from_secs(5), "the reader").await;

    let stalled = "typha_connections_dropped_total{reason=\"stalled\"}";
    wait_metric(&c, stalled, 1.0, Duration::from_secs(6)).await;
    eprintln!("cut {:?} after the first write", started.elapsed());
    // Its connection is closed: reading it now ends.
    closed_between(
        "stalled",
        vec![until_closed(staller)],
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(c.metric(0, "typha_connections_active").await, Some(1.0));
    assert_eq!(
        c.metric(0, "typha_connections_dropped_total{reason=\"fell_behind\"}")
            .await,
        Some(0.0)
    );
    let rss_after = c.memory_kib(0, "VmRSS").unwrap();
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!("VmRSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        grown < 48 * 1024,
        "the process grew by {grown} KiB with a stalled client"
    );
    let after = resources
        .apply(common::big_set(999))
        .await
        .unwrap()
        .into_inner()
        .revision;
    reaches(&mut reader, after, Duration::from_secs(2), "the reader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_lean_connections_leaves_readyz_working_and_the_accept_loop_idle() {
    let _serial = SERIAL.lock().await;
    // RLIMIT_NOFILE 256: each listener's share is (256 - 128) / 2 = 64,
    // one of which the gRPC client listener's accept loop holds for its
    // next connection: the sync listener holds 63.
    let (c, sync) = lean_cluster(&[("--handshake-timeout-secs", "30")], Some(256)).await;
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(TcpStream::connect(&sync).await.unwrap());
    }
    wait_metric(&c, CLIENT_OPEN, 63.0, Duration::from_secs(5)).await;
    let cpu_before = c.cpu_time(0).unwrap();
    let window = Instant::now();
    for _ in 0..10 {
        let asked = Instant::now();
        let (code, _) = c.http(0, "/readyz").await.expect("/readyz answers");
        assert_eq!(code, 200);
        assert!(asked.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = c.cpu_time(0).unwrap() - cpu_before;
    let wall = window.elapsed();
    eprintln!("with the sync listener flooded: {cpu:?} of CPU in {wall:?}");
    assert!(cpu < wall / 4, "{cpu:?} of CPU in {wall:?}: a loop spins");
    assert_eq!(c.metric(0, CLIENT_OPEN).await, Some(63.0));
    assert!(c.metric(0, CLIENT_FULL).await.unwrap() >= 1.0);

    // The flood ends: a lean client is served again, and so are writes.
    drop(flood);
    let mut reader = felix(&sync, "after-flood").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let revision = loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), write_sets(&c, &["after"])).await;
        if let Ok(r) = attempt {
            break r;
        }
        assert!(Instant::now() < deadline, "no write after the flood");
    };
    reaches(
        &mut reader,
        revision,
        Duration::from_secs(5),
        "a client after the flood",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_unfinished_handshakes_and_hellos_are_closed_and_hold_slots() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let typha = TlsTypha::start(tmp.path(), true).await;
    let sync_port = typha.sync_port.unwrap();
    let sync = format!("127.0.0.1:{sync_port}");

    // Connected, never a ClientHello; a ClientHello's first bytes only.
    let no_tls = no_tls_handshakes(&sync, 4).await;
    // TLS done, then no hello.
    let transport = felix_tls(&typha.certs);
    let mut no_hello = Vec::new();
    for _ in 0..4 {
        let stream = transport
            .connect_stream("127.0.0.1", sync_port, frame::ALPN)
            .await
            .unwrap();
        no_hello.push(until_closed(stream));
    }
    // All eight hold a slot: those in their TLS handshake too.
    wait_metric_eq(typha.metrics_port, CLIENT_OPEN, 8.0, Duration::from_secs(1)).await;
    // A Felix with its certificate is served meanwhile.
    let io = transport
        .connect_stream("127.0.0.1", sync_port, frame::ALPN)
        .await
        .unwrap();
    let mut request = hello("node1", &["gzip"]);
    request.resume_revision = 0;
    let mut stream = frame::open(io, &request, frame::MAX_MESSAGE_BYTES)
        .await
        .unwrap();
    let in_sync = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.message().await {
                Ok(Some(SyncMessage {
                    message: Some(Message::InSync(_)),
                })) => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(None),
                Err(e) => return Err(Some(e)),
            }
        }
    })
    .await
    .expect("in sync in time");
    assert!(in_sync.is_ok(), "{in_sync:?}");

    closed_between(
        "TLS-done, no hello",
        no_hello,
        Duration::from_millis(1800),
        Duration::from_secs(4),
    )
    .await;
    closed_between(
        "no TLS handshake",
        no_tls,
        Duration::from_secs(9),
        Duration::from_secs(12),
    )
    .await;
    wait_metric_eq(typha.metrics_port, CLIENT_OPEN, 1.0, Duration::from_secs(2)).await;
}
