//! A flood of silent connections to the metrics listener (`/metrics`,
//! `/healthz`, `/readyz`) of a real `typha` process on loopback, over
//! HTTP and over HTTPS: the listener holds at most its 32 slots, each
//! connection closed 10 s after its accept when it sends nothing (the idle
//! timeout, or over HTTPS the TLS handshake timeout), so the connections
//! past the 32 wait in the kernel's backlog and are closed 10 s later
//! still, and a probe made meanwhile is answered once a slot frees
//! (`typha_listener_full_total{listener="metrics"}` counts the waits).
//! Afterwards the listener holds nothing but the probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_listen::testing::{closed_between, http_get, no_tls_handshakes, silent, wait_metric_eq};

/// The metrics listener's slots (`listener::slots::METRICS_CONNECTIONS`).
const SLOTS: usize = 32;
/// Silent connections past the slots.
const PAST: usize = 8;

const OPEN: &str = "typha_listener_connections{listener=\"metrics\"}";
const FULL: &str = "typha_listener_full_total{listener=\"metrics\"}";

/// The first [`SLOTS`] of `silent` are closed 10 s after they connect, the
/// others 10 s after that; `probe` (asked when the flood was open) is
/// answered once the first close.
async fn first_the_slots_then_the_backlog<F>(
    what: &str,
    mut silent: Vec<tokio::task::JoinHandle<Duration>>,
    probe: F,
) where
    F: std::future::Future<Output = (u16, String)> + Send + 'static,
{
    let asked = Instant::now();
    let probe = tokio::spawn(async move {
        let answer = probe.await;
        (answer, asked.elapsed())
    });
    let past = silent.split_off(SLOTS);
    closed_between(
        &format!("{what}: held"),
        silent,
        Duration::from_millis(9500),
        Duration::from_secs(13),
    )
    .await;
    let ((code, body), took) = probe.await.unwrap();
    eprintln!("{what}: the probe was answered after {took:?}");
    assert_eq!(code, 200, "{body}");
    assert!(
        took >= Duration::from_millis(9500) && took < Duration::from_secs(14),
        "{what}: the probe was answered after {took:?}, not when the first slots freed"
    );
    closed_between(
        &format!("{what}: waited in the backlog"),
        past,
        Duration::from_secs(19),
        Duration::from_secs(27),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_holds_its_slots_and_closes_idle_connections() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(1, 10_000).await;
    let port = c.replicas[0].metrics_port;
    let silent = silent(port, SLOTS + PAST).await;
    let probe = async move { http_get(port, "/readyz").await.expect("/readyz answers") };
    first_the_slots_then_the_backlog("HTTP", silent, probe).await;
    assert!(c.metric(0, FULL).await.unwrap() >= 1.0);
    // Only the scrape itself is open now.
    wait_metric_eq(port, OPEN, 1.0, Duration::from_secs(2)).await;
    assert_eq!(c.http(0, "/readyz").await.unwrap().0, 200);
}

/// GET `path` over HTTPS on the metrics listener at `port`, verified
/// against the development CA in `certs`.
async fn https_get(certs: &Path, port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    manul_tls::https::get(addr, "127.0.0.1", &certs.join("ca.crt"), path)
        .await
        .ok()
}

async fn https_metric(certs: &Path, port: u16, name: &str) -> Option<f64> {
    let (_, body) = https_get(certs, port, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_metrics_listener_holds_its_slots_too() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    common::tls_typha::dev_certs(&certs);
    let port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_typha"));
    cmd.args(["--node-id", "1"])
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args([
            "--peer-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .arg("--metrics-tls-server-cert")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--shutdown-spread-secs", "0"]);
    common::tls_typha::tls_server_args(&mut cmd, &certs)
        .args(["--client-cn", "manul-felix"])
        .env(
            "RUST_LOG",
            std::env::var("TYPHA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    let _typha = Killed(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while https_metric(&certs, port, "typha_serving").await != Some(1.0) {
        assert!(Instant::now() < deadline, "typha does not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Connected, and never a whole ClientHello: each closed at the TLS
    // handshake's 10 s.
    let silent = no_tls_handshakes(&format!("127.0.0.1:{port}"), SLOTS + PAST).await;
    let probe = {
        let certs = certs.clone();
        async move {
            https_get(&certs, port, "/readyz")
                .await
                .expect("/readyz answers")
        }
    };
    first_the_slots_then_the_backlog("HTTPS", silent, probe).await;
    assert!(https_metric(&certs, port, FULL).await.unwrap() >= 1.0);
    let deadline = Instant::now() + Duration::from_secs(2);
    while https_metric(&certs, port, OPEN).await != Some(1.0) {
        assert!(Instant::now() < deadline, "metrics connections left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
