//! Hostile clients against the `felix` binary's HTTP listeners on
//! loopback (`felix::http`, `manul_listen::http`), with a real Typha in
//! this process and the null dataplane, each listener held to 4
//! connections, a 2 s idle timeout and a 1 s handshake timeout
//! (`--metrics-max-connections`, `--metrics-idle-timeout-secs`,
//! `--metrics-handshake-timeout-secs`):
//!
//! - Calico's health listener (`healthEnabled`, what a DaemonSet's probe
//!   asks): a flood of silent connections, 2 more than its slots, is held
//!   no longer than the idle timeout from each one's accept (the 2 past
//!   the slots wait in the backlog for the first to close), and a
//!   `/liveness` asked meanwhile is answered once the first slots free;
//!   `felix_listener_full_total{listener="health"}` counts the wait;
//! - the metrics listener (`--metrics`): a slow-loris (a request head
//!   trickled a byte every 200 ms, never idle) is closed at the handshake
//!   timeout, and `/healthz` answers meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Felix, port};
use manul_listen::testing::{flood_while_probing, http_get, metric, slow_loris, wait_metric_eq};
use manul_typha::server::{TyphaConfig, start};

const SLOTS: usize = 4;
const PAST: usize = 2;
const IDLE: Duration = Duration::from_secs(2);
const HANDSHAKE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_listeners_close_idle_and_slow_connections_and_answer_probes_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().unwrap();
    let typha = start(TyphaConfig::single(dir.path().to_path_buf(), addr))
        .await
        .unwrap();
    let (metrics, health) = (port(), port());
    let child = Command::new(env!("CARGO_BIN_EXE_felix"))
        .args(["--node", "node1", "--typha", &addr.to_string()])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--metrics-max-connections", "4"])
        .args(["--metrics-idle-timeout-secs", "2"])
        .args(["--metrics-handshake-timeout-secs", "1"])
        .arg("--no-service-health")
        .env("RUST_LOG", "warn")
        .env("FELIX_HEALTHENABLED", "true")
        .env("FELIX_HEALTHHOST", "127.0.0.1")
        .env("FELIX_HEALTHPORT", health.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _felix = Felix(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in [metrics, health] {
        while http_get(p, "/healthz").await.map(|a| a.0) != Some(200) {
            assert!(Instant::now() < deadline, "felix does not serve on {p}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The health listener under a flood of silent connections.
    flood_while_probing(health, "/liveness", SLOTS, PAST, IDLE).await;
    let full = metric(metrics, "felix_listener_full_total{listener=\"health\"}").await;
    assert!(full.unwrap() >= 1.0, "{full:?}");
    wait_metric_eq(
        metrics,
        "felix_listener_connections{listener=\"health\"}",
        0.0,
        Duration::from_secs(2),
    )
    .await;
    let errors = metric(
        metrics,
        "felix_listener_accept_errors_total{listener=\"health\"}",
    )
    .await;
    assert_eq!(errors, Some(0.0));

    // The metrics listener and a slow-loris: never idle, too slow a head.
    let loris = slow_loris(metrics, Duration::from_millis(200), Duration::from_secs(6));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http_get(metrics, "/healthz").await,
        Some((200, "ok\n".into()))
    );
    let loris = loris.await.unwrap().expect("the slow-loris is closed");
    eprintln!("slow-loris closed after {loris:?}");
    assert!(
        loris >= HANDSHAKE - Duration::from_millis(100) && loris < IDLE,
        "the slow-loris was closed after {loris:?}, not at the 1 s head deadline"
    );
    typha.shutdown().await;
}
