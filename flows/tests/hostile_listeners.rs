//! Hostile clients against a real `manul-flows` process on loopback
//! (`manul_flows::listen`, `manul_listen`):
//!
//! - the web UI listener, with 4 slots, a 2 s idle timeout and a 1 s
//!   handshake timeout: a slow-loris (a request head trickled a byte
//!   every 200 ms, never idle) is closed at the handshake timeout; a
//!   flood of silent connections, 2 more than the slots, is held no
//!   longer than the idle timeout from each one's accept (the 2 past the
//!   slots wait in the backlog for the first to close), and a `/healthz`
//!   asked meanwhile is answered once the first slots free;
//! - the process out of file descriptors (its soft RLIMIT_NOFILE lowered
//!   to what it has open plus 16, then 64 silent connections to the gRPC
//!   listener): the gRPC accept loop backs off (at most one failed accept
//!   per 50 ms, under a tenth of a core), `/healthz` and `/metrics` answer
//!   within a second on the UI listener's reserved descriptor, and once
//!   the flood closes a gRPC `List` succeeds again;
//! - a follow stream (`/api/follow`) with a 1 s idle timeout: its
//!   keep-alive comments keep it open for 3 s, while a silent connection
//!   beside it is closed after 1 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_listen::testing::{
    closed_between, cpu_time, flood_while_probing, http_get, lower_nofile, metric, silent,
    slow_loris, used_below, wait_metric_eq,
};
use manul_proto::flows::ListRequest;
use manul_proto::flows::flows_client::FlowsClient;
use tokio::net::TcpStream;

/// A running `manul-flows`, killed when dropped.
struct Flows {
    child: Child,
    grpc: u16,
    ui: u16,
}

impl Drop for Flows {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port below 32768, a different one at each call.
fn port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id() % 6_000;
    loop {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = 20_000 + ((base + k * 17) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Starts `manul-flows` with `flags` and waits until `/healthz` answers.
async fn start(flags: &[&str]) -> Flows {
    let (grpc, ui) = (port(), port());
    let child = Command::new(env!("CARGO_BIN_EXE_manul-flows"))
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--ui-listen", &format!("127.0.0.1:{ui}")])
        .args(flags)
        .env(
            "RUST_LOG",
            std::env::var("FLOWS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let flows = Flows { child, grpc, ui };
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(ui, "/healthz").await != Some((200, "ok\n".into())) {
        assert!(Instant::now() < deadline, "manul-flows does not serve");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flows
}

const SLOTS: usize = 4;
const PAST: usize = 2;
const IDLE: Duration = Duration::from_secs(2);
const HANDSHAKE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_listener_closes_slow_and_idle_connections_and_answers_health_meanwhile() {
    let flows = start(&[
        "--ui-max-connections",
        "4",
        "--ui-idle-timeout-secs",
        "2",
        "--handshake-timeout-secs",
        "1",
    ])
    .await;
    let ui = flows.ui;

    // A slow-loris is never idle, but its head takes too long.
    let loris = slow_loris(ui, Duration::from_millis(200), Duration::from_secs(6))
        .await
        .unwrap()
        .expect("the slow-loris is closed");
    eprintln!("slow-loris closed after {loris:?}");
    assert!(
        loris >= HANDSHAKE - Duration::from_millis(100) && loris < IDLE,
        "the slow-loris was closed after {loris:?}, not at the 1 s head deadline"
    );

    // Silent connections: the slots' closed after the idle timeout, the
    // others idle as long once accepted.
    flood_while_probing(ui, "/healthz", SLOTS, PAST, IDLE).await;

    let full = metric(ui, "flows_listener_full_total{listener=\"web\"}").await;
    assert!(full.unwrap() >= 1.0, "{full:?}");
    // Only the scrape itself is open now.
    wait_metric_eq(
        ui,
        "flows_listener_connections{listener=\"web\"}",
        1.0,
        Duration::from_secs(2),
    )
    .await;
}

const ACCEPT_ERRORS: &str = "flows_listener_accept_errors_total{listener=\"grpc\"}";

/// `/healthz` and the gRPC listener's failed accepts, each within 1 s.
async fn probe(ui: u16, when: &str) -> f64 {
    let asked = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(1), http_get(ui, "/healthz"))
        .await
        .unwrap_or_else(|_| panic!("{when}: no answer to /healthz within 1 s"));
    assert_eq!(answer, Some((200, "ok\n".into())), "{when}");
    eprintln!("{when}: /healthz answered in {:?}", asked.elapsed());
    tokio::time::timeout(Duration::from_secs(1), metric(ui, ACCEPT_ERRORS))
        .await
        .unwrap_or_else(|_| panic!("{when}: no answer to /metrics within 1 s"))
        .unwrap_or_else(|| panic!("{when}: no {ACCEPT_ERRORS}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_aggregator_backs_off_answers_health_and_recovers() {
    // Silent gRPC connections stay until the flood ends.
    let flows = start(&["--handshake-timeout-secs", "120"]).await;
    let pid = flows.child.id();
    let limit = lower_nofile(pid, 16);

    let mut flood = Vec::new();
    for _ in 0..64 {
        flood.push(TcpStream::connect(("127.0.0.1", flows.grpc)).await.unwrap());
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
    assert!(
        probe(flows.ui, "exhausted").await >= 1.0,
        "no accept failed"
    );

    // Backing off: a window of exhaustion.
    let cpu_before = cpu_time(pid).unwrap();
    let errors_before = metric(flows.ui, ACCEPT_ERRORS).await.unwrap();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let errors = metric(flows.ui, ACCEPT_ERRORS).await.unwrap() - errors_before;
    let cpu = cpu_time(pid).unwrap() - cpu_before;
    let wall = window.elapsed();
    eprintln!("exhausted: {errors} failed accepts and {cpu:?} of CPU in {wall:?}");
    assert!(errors >= 1.0, "the accepts stopped failing");
    assert!(
        errors <= wall.as_secs_f64() / 0.05 + 2.0,
        "{errors} failed accepts in {wall:?}: the accept loop spins"
    );
    assert!(cpu < wall / 10, "{cpu:?} of CPU in {wall:?}: a loop spins");

    // Probes answer throughout, on the reserve.
    for k in 0..5 {
        probe(flows.ui, &format!("exhausted, probe {k}")).await;
    }
    assert!(
        used_below(pid, limit) >= limit - 1,
        "the exhaustion ended early"
    );

    // The flood closes: the gRPC listener serves again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let mut client = FlowsClient::connect(format!("http://127.0.0.1:{}", flows.grpc))
                .await
                .map_err(|e| e.to_string())?;
            client
                .list(ListRequest::default())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        if let Ok(Ok(_)) = attempt {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gRPC call after the flood: {attempt:?}"
        );
    }
    probe(flows.ui, "after the flood").await;
}

/// A follow stream is no idle connection: its keep-alive comments (every
/// half idle timeout) keep it open past the idle timeout, while a silent
/// connection beside it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_stream_outlives_the_idle_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let flows = start(&["--ui-idle-timeout-secs", "1"]).await;
    let mut follow = TcpStream::connect(("127.0.0.1", flows.ui)).await.unwrap();
    follow
        .write_all(b"GET /api/follow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let idle = silent(flows.ui, 1).await;
    let opened = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while opened.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_millis(200), follow.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the follow stream closed after {:?}", opened.elapsed()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("the follow stream failed after {:?}: {e}", opened.elapsed()),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let comments = text.lines().filter(|l| l.starts_with(':')).count();
    assert!(
        comments >= 4,
        "{comments} keep-alive comments in 3 s: {text}"
    );
    closed_between(
        "silent beside the follow stream",
        idle,
        Duration::from_millis(900),
        Duration::from_secs(2),
    )
    .await;
}
