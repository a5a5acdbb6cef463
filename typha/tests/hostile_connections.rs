//! A flood of connections against a real `typha` process started with a
//! low descriptor limit (RLIMIT_NOFILE 256): more silent connections to
//! the client and peer listeners than the process has descriptors. Each
//! listener holds at most its share of the limit and waits before
//! accepting more (counted in `typha_listener_full_total`), so the accept
//! loops do not spin, `/readyz` answers throughout, and once the flood
//! ends writes go through again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use tokio::net::TcpStream;

const NOFILE: u64 = 256;
/// Each gRPC listener's share: (256 - 128 reserved) / 2.
const SHARE: f64 = 64.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_leaves_readyz_and_writes_working() {
    let _serial = SERIAL.lock().await;
    let flags = ["--handshake-timeout-secs", "30"]
        .map(String::from)
        .to_vec();
    let c = Cluster::start_limited(1, 10_000, flags, Some(NOFILE)).await;
    common::apply(&c, 0, &["before".to_owned()]).await.unwrap();

    // 180 silent connections to each gRPC listener: more than the process
    // has descriptors. Those past the share wait in the kernel's backlog
    // (128 deep).
    let mut flood = Vec::new();
    for addr in [c.replicas[0].addr(), c.replicas[0].peer_addr()] {
        for _ in 0..180 {
            flood.push(TcpStream::connect(&addr).await.unwrap());
        }
    }
    let open = "typha_listener_connections{listener=\"client\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.metric(0, open).await.unwrap_or(0.0) < SHARE {
        assert!(
            Instant::now() < deadline,
            "the client listener never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Full listeners: no spinning, /readyz answers at once, the limits
    // hold and are visible.
    let cpu_before = c.cpu_time(0).unwrap();
    let window = Instant::now();
    for _ in 0..10 {
        let asked = Instant::now();
        let (code, body) = c.http(0, "/readyz").await.expect("/readyz answers");
        assert_eq!((code, body.as_str()), (200, "ready: leader 1\n"));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = c.cpu_time(0).unwrap() - cpu_before;
    let wall = window.elapsed();
    eprintln!("with both listeners full: {cpu:?} of CPU in {wall:?}");
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?}: the accept loop spins"
    );
    for listener in ["client", "peer"] {
        let open = c
            .metric(
                0,
                &format!("typha_listener_connections{{listener=\"{listener}\"}}"),
            )
            .await
            .unwrap();
        assert!(open <= SHARE, "{listener}: {open} connections open");
        let full = c
            .metric(
                0,
                &format!("typha_listener_full_total{{listener=\"{listener}\"}}"),
            )
            .await
            .unwrap();
        assert!(full >= 1.0, "{listener}: full {full} times");
    }
    assert_eq!(c.http(0, "/healthz").await.unwrap().0, 200);

    // The flood ends: the listeners take new clients again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            common::apply(&c, 0, &["after".to_owned()]),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write after the flood: {attempt:?}"
        );
    }
    let mut names = c.names(0).await;
    names.sort();
    assert_eq!(names, ["after", "before"]);
}
