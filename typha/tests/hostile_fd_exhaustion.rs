//! A `typha` process out of file descriptors, on loopback. Its
//! connection limits come from the descriptor limit it started with
//! (`listener::slots::share`); the test then lowers that limit (prlimit,
//! soft limit only) to what the process has open plus [`FREE`], so the
//! limits stand far above what its descriptors allow, as when something
//! else in the process took them. A client opens [`FLOOD`] silent
//! connections to the gRPC client listener until its accepts fail with
//! EMFILE (`typha_listener_accept_errors_total`). Then:
//!
//! 1. the accept loop backs off instead of spinning: over a window of
//!    exhaustion the listener's failed accepts number at most one per 50 ms
//!    (a spinning loop fails an accept every few microseconds), and the
//!    process uses under a tenth of a core (a spinning loop takes one whole
//!    core on an idle machine);
//! 2. `/readyz`, `/healthz` and `/metrics` answer within a second, on the
//!    metrics listener's reserved descriptor (`listener::spare`): without
//!    it a probe waits in the backlog for as long as the exhaustion lasts;
//! 3. once the client closes its connections, typha accepts again: a
//!    write succeeds, a Sync stream opens and reaches `InSync`, `/readyz`
//!    answers, and the reserve is held again (a second exhaustion is
//!    served the same way).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_proto::v1::SyncRequest;
use manul_proto::v1::sync_message::Message;
use tokio::net::TcpStream;

/// Descriptors left free below the lowered limit.
const FREE: u64 = 16;
/// Silent connections the client opens: more than [`FREE`], fewer than
/// the listener's slots and the kernel's backlog.
const FLOOD: usize = 64;

const ACCEPT_ERRORS: &str = "typha_listener_accept_errors_total{listener=\"client\"}";

use manul_listen::testing::used_below;

/// Waits up to 1 s until every descriptor number below `limit` is in use
/// (a connection just answered may take a moment to close and give the
/// metrics listener's reserve back).
async fn wait_exhausted(pid: u32, limit: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while used_below(pid, limit) < limit {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {limit} descriptors in use",
            used_below(pid, limit)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens [`FLOOD`] silent connections to the client listener and waits
/// until the process holds every descriptor its limit allows and its
/// accepts fail.
async fn exhaust(c: &Cluster, pid: u32, limit: u64) -> Vec<TcpStream> {
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(c.replicas[0].addr()).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while used_below(pid, limit) < limit {
        assert!(
            Instant::now() < deadline,
            "{} of {limit} descriptors in use",
            used_below(pid, limit)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood
}

/// `/readyz`, `/healthz` and the accept error count, each within 1 s.
async fn probe(c: &Cluster, when: &str) -> f64 {
    for (path, want) in [("/readyz", "ready: leader 1\n"), ("/healthz", "ok\n")] {
        let asked = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), c.http(0, path))
            .await
            .unwrap_or_else(|_| panic!("{when}: no answer to {path} within 1 s"));
        let (code, body) = answer.unwrap_or_else(|| panic!("{when}: {path} failed"));
        assert_eq!(code, 200, "{when}: {path}: {body}");
        if path == "/readyz" {
            assert_eq!(body, want, "{when}");
        }
        eprintln!("{when}: {path} answered in {:?}", asked.elapsed());
    }
    tokio::time::timeout(Duration::from_secs(1), c.metric(0, ACCEPT_ERRORS))
        .await
        .unwrap_or_else(|_| panic!("{when}: no answer to /metrics within 1 s"))
        .unwrap_or_else(|| panic!("{when}: no {ACCEPT_ERRORS}"))
}

async fn in_sync(c: &Cluster, node: &str) {
    let mut stream = c
        .sync(0)
        .await
        .sync(SyncRequest {
            node_name: node.into(),
            client_version: manul_proto::PROTOCOL_VERSION.into(),
            ..SyncRequest::default()
        })
        .await
        .expect("a Sync stream opens")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = stream.message().await.unwrap().expect("the stream goes on");
            if let Some(Message::InSync(_)) = m.message {
                return;
            }
        }
    })
    .await
    .expect("InSync within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_typha_backs_off_answers_probes_and_recovers() {
    let _serial = SERIAL.lock().await;
    // Silent connections stay until the flood ends.
    let flags = ["--handshake-timeout-secs", "120"]
        .map(String::from)
        .to_vec();
    let c = Cluster::start_with(1, 10_000, flags).await;
    common::apply(&c, 0, &["before".to_owned()]).await.unwrap();
    let pid = c.replicas[0].child.as_ref().unwrap().id();
    let slots = c
        .metric(0, "typha_listener_connections{listener=\"client\"}")
        .await;
    assert!(
        slots.is_some(),
        "the client listener counts its connections"
    );

    let limit = manul_listen::testing::lower_nofile(pid, FREE);

    for round in ["first", "second"] {
        let flood = exhaust(&c, pid, limit).await;
        let errors_at_start = probe(&c, &format!("{round} exhaustion, start")).await;
        assert!(errors_at_start >= 1.0, "no accept failed");

        // (1) Backing off: a window of exhaustion.
        let cpu_before = c.cpu_time(0).unwrap();
        let errors_before = c.metric(0, ACCEPT_ERRORS).await.unwrap();
        let window = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let errors = c.metric(0, ACCEPT_ERRORS).await.unwrap() - errors_before;
        let cpu = c.cpu_time(0).unwrap() - cpu_before;
        let wall = window.elapsed();
        eprintln!("{round} exhaustion: {errors} failed accepts and {cpu:?} of CPU in {wall:?}");
        // One failed accept per 50 ms backoff, plus the /metrics reads'
        // own (the metrics listener counts its failures in its own label).
        let most = wall.as_secs_f64() / 0.05 + 2.0;
        assert!(errors >= 1.0, "{round}: the accepts stopped failing");
        assert!(
            errors <= most,
            "{round}: {errors} failed accepts in {wall:?}: the accept loop spins"
        );
        assert!(
            cpu < wall / 10,
            "{round}: {cpu:?} of CPU in {wall:?}: a loop spins"
        );
        wait_exhausted(pid, limit, &format!("{round}: still exhausted")).await;

        // (2) Probes answer throughout, on the reserve.
        for k in 0..5 {
            probe(&c, &format!("{round} exhaustion, probe {k}")).await;
        }
        wait_exhausted(pid, limit, "the reserve came back after the probes").await;

        // (3) The client closes its connections: typha serves again.
        drop(flood);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                common::apply(&c, 0, &[format!("after-{round}")]),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{round}: no write after the flood: {attempt:?}"
            );
        }
        in_sync(&c, &format!("after-{round}")).await;
        probe(&c, &format!("after the {round} exhaustion")).await;
    }
    let mut names = c.names(0).await;
    names.sort();
    assert_eq!(names, ["after-first", "after-second", "before"]);
}
