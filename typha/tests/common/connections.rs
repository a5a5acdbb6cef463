//! Raw connections to a `typha` on loopback, for tests of its listeners:
//! its metrics scraped over plain HTTP, and how long the server took to
//! close a connection.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// GET `path` over plain HTTP on the loopback port `port`: the whole
/// response, status line and headers included.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// The value of the metric `name` (with its labels, if any) on the
/// metrics listener at the loopback port `port`.
pub async fn metric_at(port: u16, name: &str) -> Option<f64> {
    let body = http_get(port, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Waits until the metric `name` at `port` is `want`; fails after `within`.
pub async fn wait_metric_eq(port: u16, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = metric_at(port, name).await;
        if v == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {v:?}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `socket` until the server closes it; how long that took.
pub fn until_closed<S>(mut socket: S) -> tokio::task::JoinHandle<Duration>
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

/// Checks that every connection of `tasks` ([`until_closed`]) was closed
/// between `earliest` and `latest`; the slowest.
pub async fn closed_between(
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<Duration>>,
    earliest: Duration,
    latest: Duration,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let took = tokio::time::timeout(latest + Duration::from_secs(1), task)
            .await
            .unwrap_or_else(|_| panic!("a {what} connection is still open after {latest:?}"))
            .unwrap();
        assert!(
            took >= earliest && took <= latest,
            "a {what} connection closed after {took:?}, not within {earliest:?}..{latest:?}"
        );
        slowest = slowest.max(took);
    }
    eprintln!("{what}: closed after at most {slowest:?}");
    slowest
}

/// `n` connections to `addr` that never finish a TLS handshake: every
/// other one sends the first bytes of a ClientHello, the others nothing;
/// each read until the server closes it (see [`until_closed`]).
pub async fn no_tls_handshakes(addr: &str, n: usize) -> Vec<tokio::task::JoinHandle<Duration>> {
    let mut out = Vec::new();
    for k in 0..n {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        if k % 2 == 1 {
            socket.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
        }
        out.push(until_closed(socket));
    }
    out
}
