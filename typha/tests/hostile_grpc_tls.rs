//! Connections to the gRPC client listener with TLS that never finish
//! their TLS handshake, against a real `typha` process on loopback: each
//! holds a slot of the listener's pool, and counts in
//! `typha_listener_connections{listener="client"}`, from its accept (as the
//! lean sync listener's do), until the 10 s TLS handshake timeout closes
//! it; one that finished its handshake and sends no HTTP/2 preface is
//! closed after the handshake timeout; then every slot is free again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::SERIAL;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn metric(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Reads `socket` until the server closes it; how long that took.
fn until_closed<S>(mut socket: S) -> tokio::task::JoinHandle<Duration>
where
    S: AsyncRead + Unpin + Send + 'static,
{
    let started = Instant::now();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
        started.elapsed()
    })
}

async fn closed_between(
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<Duration>>,
    earliest: Duration,
    latest: Duration,
) {
    for task in tasks {
        let took = tokio::time::timeout(latest + Duration::from_secs(1), task)
            .await
            .unwrap_or_else(|_| panic!("a {what} connection is still open after {latest:?}"))
            .unwrap();
        assert!(
            took >= earliest && took <= latest,
            "a {what} connection closed after {took:?}, not within {earliest:?}..{latest:?}"
        );
    }
}

fn felix_tls(certs: &Path) -> manul_tls::connect::Transport {
    let settings = manul_tls::client::ClientSettings {
        ca_file: certs.join("ca.crt"),
        cert_file: certs.join("felix-node1.crt"),
        key_file: certs.join("felix-node1.key"),
        server: manul_tls::Expected::new(["manul-typha".to_string()], [], "test").unwrap(),
    };
    manul_tls::connect::Transport::Tls(settings.config().unwrap())
}

async fn wait_open(port: u16, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(port, name).await;
        if v == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{v:?} connections counted, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_connections_count_from_their_accept_until_closed() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    manul_tls::dev::write_dev_set(
        &certs,
        &manul_tls::dev::DevSet {
            typha_names: vec!["127.0.0.1".into()],
            typha_cn: "manul-typha".into(),
            nodes: vec!["node1".into()],
            days: 1,
        },
    )
    .unwrap();
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_typha"));
    cmd.args(["--node-id", "1"])
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--peer-listen", &format!("127.0.0.1:{}", ports[1])])
        .args(["--metrics", &format!("127.0.0.1:{}", ports[2])])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--ca-file")
        .arg(certs.join("ca.crt"))
        .arg("--server-cert-file")
        .arg(certs.join("typha.crt"))
        .arg("--server-key-file")
        .arg(certs.join("typha.key"))
        .args(["--client-cn", "manul-felix"])
        .args(["--handshake-timeout-secs", "2"])
        .args(["--shutdown-spread-secs", "0"])
        .env(
            "RUST_LOG",
            std::env::var("TYPHA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    let _typha = Proc(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(ports[2], "typha_serving").await != Some(1.0) {
        assert!(Instant::now() < deadline, "typha does not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = "typha_listener_connections{listener=\"client\"}";
    let grpc = format!("127.0.0.1:{}", ports[0]);

    // Connected, never a ClientHello; a ClientHello's first bytes only.
    let mut no_tls = Vec::new();
    for k in 0..4 {
        let mut socket = TcpStream::connect(&grpc).await.unwrap();
        if k % 2 == 1 {
            socket.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
        }
        no_tls.push(until_closed(socket));
    }
    // Each counts while its TLS handshake is still under way.
    wait_open(ports[2], open, 4.0, Duration::from_secs(1)).await;
    // TLS done (HTTP/2 offered), then no preface: counted too.
    let stream = felix_tls(&certs)
        .connect_stream("127.0.0.1", ports[0], b"h2")
        .await
        .unwrap();
    let no_preface = vec![until_closed(stream)];
    wait_open(ports[2], open, 5.0, Duration::from_secs(1)).await;

    closed_between(
        "TLS-done, no preface",
        no_preface,
        Duration::from_millis(1800),
        Duration::from_secs(4),
    )
    .await;
    closed_between(
        "no TLS handshake",
        no_tls,
        Duration::from_secs(8),
        Duration::from_secs(12),
    )
    .await;
    wait_open(ports[2], open, 0.0, Duration::from_secs(2)).await;
}
