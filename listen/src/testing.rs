//! Hostile clients for other crates' tests (feature `testing`): silent
//! connections (and a flood of them against a listener's slots while a
//! probe is asked), unfinished TLS handshakes, a slow-loris, plain HTTP GETs and metric reads on
//! loopback, and a process's descriptors and CPU time from `/proc`. Real
//! sockets only; they return what happened and leave the judging to the
//! test, except [`closed_between`] and [`flood_while_probing`], which are
//! the judgements they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// GET `path` on a loopback port (`Connection: close`): the status code
/// and the body; none when the connection fails.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The value of the sample `name` (with its labels, as the text format
/// prints them) on the `/metrics` page at `port`.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Waits up to `within` for the sample `name` at `port` to be `want`.
pub async fn wait_metric_eq(port: u16, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(port, name).await;
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
pub fn until_closed<S>(mut socket: S) -> JoinHandle<Duration>
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

/// `n` connections to loopback `port` that send nothing, each read until
/// the server closes it ([`until_closed`]).
pub async fn silent(port: u16, n: usize) -> Vec<JoinHandle<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        out.push(until_closed(socket));
    }
    out
}

/// A slow-loris on loopback `port`: a request head sent one byte every
/// `every`, never finished; how long until the server closed the
/// connection (none while it is still open after `give_up`).
pub fn slow_loris(port: u16, every: Duration, give_up: Duration) -> JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .copied();
        for byte in head.chain(std::iter::repeat(b'a')) {
            if socket.write_all(&[byte]).await.is_err() {
                return Some(started.elapsed());
            }
            let mut buf = [0u8; 64];
            // Closed (or reset) by the server; else the next byte.
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(every, socket.read(&mut buf)).await {
                return Some(started.elapsed());
            }
            if started.elapsed() > give_up {
                return None;
            }
        }
        None
    })
}

/// `n` connections to `addr` that never finish a TLS handshake: every
/// other one sends the first bytes of a ClientHello, the others nothing;
/// each read until the server closes it ([`until_closed`]).
pub async fn no_tls_handshakes(addr: &str, n: usize) -> Vec<JoinHandle<Duration>> {
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

/// A flood of `slots + past` silent connections ([`silent`]) to loopback
/// `port` of a listener with `slots` connection slots and the idle
/// timeout `idle`, with `path` asked meanwhile: checks that the
/// connections in the slots are closed at the idle timeout, that `path`
/// is answered `200 ok` once the first slots free, and that the `past`
/// connections, waiting in the backlog, are closed one idle timeout after
/// their accept.
pub async fn flood_while_probing(port: u16, path: &str, slots: usize, past: usize, idle: Duration) {
    let mut flood = silent(port, slots + past).await;
    let asked = Instant::now();
    let probe_path = path.to_string();
    let probe = tokio::spawn(async move { (http_get(port, &probe_path).await, asked.elapsed()) });
    let past = flood.split_off(slots);
    let early = idle - Duration::from_millis(100);
    closed_between(
        "in the slots",
        flood,
        early,
        idle + Duration::from_millis(1500),
    )
    .await;
    let (answer, took) = probe.await.unwrap();
    eprintln!("{path} during the flood answered after {took:?}");
    assert_eq!(answer, Some((200, "ok\n".into())));
    assert!(
        took < idle + Duration::from_secs(2),
        "{path} answered after {took:?}, not when the first slots freed"
    );
    closed_between(
        "in the backlog",
        past,
        2 * idle - Duration::from_millis(100),
        2 * idle + Duration::from_secs(2),
    )
    .await;
}

/// Checks that every connection of `tasks` ([`until_closed`]) was closed
/// between `earliest` and `latest`; the slowest.
pub async fn closed_between(
    what: &str,
    tasks: Vec<JoinHandle<Duration>>,
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

/// How many of the descriptor numbers below `limit` process `pid` has in
/// use: at `limit`, every new descriptor fails with EMFILE.
pub fn used_below(pid: u32, limit: u64) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|fd| *fd < limit)
        .count() as u64
}

/// Lowers process `pid`'s soft RLIMIT_NOFILE to what it has open plus
/// `free`; the new limit (asserted below the old one).
pub fn lower_nofile(pid: u32, free: u64) -> u64 {
    let pid_t = i32::try_from(pid).unwrap();
    let (mut soft, mut hard) = (0, 0);
    rlimit::prlimit(
        pid_t,
        rlimit::Resource::NOFILE,
        None,
        Some((&mut soft, &mut hard)),
    )
    .unwrap();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = open + free;
    assert!(limit < soft, "started with {soft} descriptors, {open} open");
    rlimit::prlimit(pid_t, rlimit::Resource::NOFILE, Some((limit, hard)), None).unwrap();
    eprintln!("RLIMIT_NOFILE {soft} lowered to {limit}");
    limit
}

/// The CPU time (user and system) process `pid` has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (`after_name` starts at field
    // 3), in ticks of USER_HZ, which is 100 on Linux.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
