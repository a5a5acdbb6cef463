//! The traffic: a listener that resets every connection, `iperf3` in the
//! pods' namespaces, and the connect and round-trip loops run from the
//! client's namespace.

use std::io::{self, Read as _};
use std::net::{Shutdown, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use manul_netns::NetNs;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::*;
use crate::ConformanceError;

/// A listener that accepts and closes every connection at once, from its
/// own threads (one per expected concurrent client); stopped on drop.
pub(super) struct ConnectSink {
    stop: Arc<AtomicBool>,
    waker: Socket,
    threads: Vec<JoinHandle<()>>,
}

impl ConnectSink {
    pub(super) fn start(ns: &NetNs, addr: SocketAddr) -> Result<ConnectSink, ConformanceError> {
        ConnectSink::start_with(ns, addr, 1)
    }

    /// A sink whose listener is drained by `acceptors` threads.
    pub(super) fn start_with(
        ns: &NetNs,
        addr: SocketAddr,
        acceptors: usize,
    ) -> Result<ConnectSink, ConformanceError> {
        let socket = ns
            .run(|| -> io::Result<Socket> {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                s.bind(&SockAddr::from(addr))?;
                s.listen(4096)?;
                Ok(s)
            })
            .map_err(setup("connect listener"))?
            .map_err(setup("connect listener"))?;
        let waker = socket.try_clone().map_err(setup("connect listener"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink = ConnectSink {
            stop: Arc::clone(&stop),
            waker,
            threads: Vec::new(),
        };
        for _ in 0..acceptors.max(1) {
            let socket = socket.try_clone().map_err(setup("connect listener"))?;
            let stop = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("bench-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match socket.accept() {
                            Ok((conn, _)) => drop(conn),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                if !stop.load(Ordering::Relaxed) {
                                    tracing::warn!(error = %e, "benchmark accept failed");
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                            }
                        }
                    }
                })
                .map_err(setup("connect listener thread"))?;
            sink.threads.push(thread);
        }
        Ok(sink)
    }
}

impl Drop for ConnectSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes every blocked accept.
        let _ = self.waker.shutdown(Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A child process killed (and reaped) on drop.
pub(super) struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `port` is listening in the calling thread's namespace.
pub(super) fn listening_here(port: u16) -> io::Result<bool> {
    let mut text = String::new();
    std::fs::File::open("/proc/thread-self/net/tcp")?.read_to_string(&mut text)?;
    let want = format!(":{port:04X}");
    Ok(text.lines().skip(1).any(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        local.ends_with(&want) && state == "0A"
    }))
}

pub(super) fn iperf(
    client: &NetNs,
    server: &NetNs,
    options: &TrafficOptions,
) -> Result<(f64, Option<u64>), ConformanceError> {
    let spawn_err = |e: io::Error| {
        ConformanceError::Setup(format!(
            "cannot run {} (install the iperf3 package, see scripts/deps.sh): {e}",
            options.iperf3
        ))
    };
    let ip = SERVER_IP.to_string();
    let port = IPERF_PORT.to_string();
    let child = server
        .run(|| {
            Command::new(&options.iperf3)
                .args(["-s", "-B", &ip, "-p", &port])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .map_err(setup("iperf3 server"))?
        .map_err(spawn_err)?;
    let _server = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let up = server
            .run(|| listening_here(IPERF_PORT))
            .map_err(setup("iperf3 server"))?
            .map_err(setup("reading the server's sockets"))?;
        if up {
            break;
        }
        if Instant::now() > deadline {
            return Err(ConformanceError::Setup(
                "the iperf3 server did not listen within 5 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (t, omit) = (
        options.iperf_seconds.to_string(),
        options.iperf_omit_seconds.to_string(),
    );
    let output = client
        .run(|| {
            Command::new(&options.iperf3)
                .args(["-c", &ip, "-p", &port, "-t", &t, "-O", &omit, "-J"])
                .stdin(Stdio::null())
                .output()
        })
        .map_err(setup("iperf3 client"))?
        .map_err(spawn_err)?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        ConformanceError::Setup(format!(
            "iperf3 printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    if let Some(error) = json.get("error").and_then(|e| e.as_str()) {
        return Err(ConformanceError::Setup(format!("iperf3: {error}")));
    }
    let end = &json["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| ConformanceError::Setup("iperf3 JSON without end.sum_received".into()))?;
    Ok((bps, end["sum_sent"]["retransmits"].as_u64()))
}

/// Sequential connects from `client`; each closed with an RST so that no
/// `TIME_WAIT` piles up. Returns the latencies, the failures and the time
/// the timed ones took.
pub(super) fn connect_loop(
    client: &NetNs,
    dst: SocketAddr,
    count: usize,
    warmup: usize,
) -> Result<(Vec<Duration>, usize, Duration), ConformanceError> {
    let run = parallel_connect_loop(client, dst, 1, count, warmup)?;
    Ok((run.connects, run.failures, run.took))
}

/// The timed part of a connect loop.
pub(super) struct ConnectRun {
    /// The handshakes (`connect` until it returns), of those that succeeded.
    pub connects: Vec<Duration>,
    /// Whole cycles (socket, connect, RST close), of every attempt.
    pub cycles: Vec<Duration>,
    pub failures: usize,
    /// Wall time from the first timed cycle's start to the last one's end.
    pub took: Duration,
}

/// `clients` threads in `client`'s namespace, each running the sequential
/// loop of [`connect_loop`] at once: `count` timed connects in all (after
/// `warmup` untimed ones in all, which every thread finishes before any
/// starts timing).
pub(super) fn parallel_connect_loop(
    client: &NetNs,
    dst: SocketAddr,
    clients: usize,
    count: usize,
    warmup: usize,
) -> Result<ConnectRun, ConformanceError> {
    let clients = clients.max(1);
    let barrier = Barrier::new(clients);
    let share = |total: usize, i: usize| total / clients + usize::from(i < total % clients);
    let results: Vec<Result<io::Result<Timed>, ConformanceError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let barrier = &barrier;
                let (count, warmup) = (share(count, i), share(warmup, i));
                s.spawn(move || {
                    client
                        .run(|| connects_here(dst, count, warmup, barrier))
                        .map_err(setup("connect loop"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ConformanceError::Setup(
                        "connect loop: a client thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut run = ConnectRun {
        connects: Vec::with_capacity(count),
        cycles: Vec::with_capacity(count),
        failures: 0,
        took: Duration::ZERO,
    };
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for r in results {
        let t = r?.map_err(setup("connect loop"))?;
        run.connects.extend(t.connects);
        run.cycles.extend(t.cycles);
        run.failures += t.failures;
        first = Some(first.map_or(t.started, |f| f.min(t.started)));
        last = Some(last.map_or(t.ended, |l| l.max(t.ended)));
    }
    if let (Some(f), Some(l)) = (first, last) {
        run.took = l.saturating_duration_since(f);
    }
    Ok(run)
}

/// One client thread's timed connects.
struct Timed {
    connects: Vec<Duration>,
    cycles: Vec<Duration>,
    failures: usize,
    started: Instant,
    ended: Instant,
}

/// One cycle: a socket, its connect (the result and how long it took),
/// its RST close; with the whole cycle's time.
fn connect_once(addr: &SockAddr) -> io::Result<(io::Result<()>, Duration, Duration)> {
    let cycle = Instant::now();
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let t = Instant::now();
    let r = s.connect_timeout(addr, Duration::from_secs(1));
    let took = t.elapsed();
    s.set_linger(Some(Duration::ZERO))?;
    drop(s);
    Ok((r, took, cycle.elapsed()))
}

/// The calling thread's loop: `warmup` untimed connects, the barrier (also
/// after a failed warmup, so that no other thread waits for ever), then
/// `count` timed ones.
fn connects_here(
    dst: SocketAddr,
    count: usize,
    warmup: usize,
    barrier: &Barrier,
) -> io::Result<Timed> {
    let addr = SockAddr::from(dst);
    let warmed = (0..warmup).try_for_each(|_| connect_once(&addr).map(|_| ()));
    barrier.wait();
    warmed?;
    let mut connects = Vec::with_capacity(count);
    let mut cycles = Vec::with_capacity(count);
    let mut failures = 0;
    let started = Instant::now();
    for _ in 0..count {
        let (r, took, cycle) = connect_once(&addr)?;
        cycles.push(cycle);
        match r {
            Ok(()) => connects.push(took),
            Err(_) => failures += 1,
        }
    }
    Ok(Timed {
        connects,
        cycles,
        failures,
        started,
        ended: Instant::now(),
    })
}

pub(super) fn roundtrip_loop(
    client: &NetNs,
    dst: SocketAddr,
    count: usize,
    warmup: usize,
) -> Result<(Vec<Duration>, usize), ConformanceError> {
    let mut held = manul_netns::open_connection(client, dst, Duration::from_secs(2))
        .map_err(setup("opening the round-trip connection"))?;
    let mut samples = Vec::with_capacity(count);
    let mut failures = 0;
    for i in 0..warmup + count {
        let t = Instant::now();
        let ok = held
            .roundtrip(Duration::from_secs(1))
            .map_err(setup("round trip"))?;
        let took = t.elapsed();
        if i >= warmup {
            if ok {
                samples.push(took);
            } else {
                failures += 1;
            }
        }
    }
    Ok((samples, failures))
}
