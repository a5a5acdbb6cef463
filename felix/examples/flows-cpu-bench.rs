//! `flows-cpu-bench`: Felix's CPU time for flow records under a steady rate
//! of new connections on one node (eBPF dataplane), with flow records off
//! and on, side by side in one run. Prints one JSON object.
//!
//! Each measurement builds fresh network namespaces (a node with two pods
//! plumbed in, as the shared traffic benchmark does) and runs Felix's
//! flow path on one thread in the node's namespace: a `BpfDriver`
//! programmed with the shared benchmark policy (`--rules` non-matching
//! rules before the allowing one) and, with records on, the driver's
//! observations on (the conntrack scan every `--flow-interval`, as Felix
//! sets it) and Felix's own `FlowPipeline` (the pods' WorkloadEndpoints,
//! the batches the driver took) drained every second as the agent does,
//! each interval's records encoded as the exporter's batch (the gRPC send
//! itself is not included). With records off the driver is built as Felix
//! builds it without `--flow-aggregator` (no observations, no pipeline).
//!
//! The load: `--clients` threads in the client pod open new TCP
//! connections to a listener in the server pod at `--rate` per second in
//! total for `--seconds`, each closed with an RST (no `TIME_WAIT`), every
//! one a new flow through both pods' programs.
//!
//! Felix's CPU is the on-CPU time (`/proc/self/task/TID/schedstat`, in
//! nanoseconds) of Felix's threads only: the agent thread and the
//! driver's event thread (`manul-bpf-events`: ring buffer, conntrack
//! scan, observations), from the start of the load until `--flow-interval`
//! plus two seconds after its end (so the last connections' ends are
//! scanned and taken). The load's threads and the kernel work they cause
//! (the programs run in the sender's softirq) are not counted: that is
//! the per-packet cost, measured by `bpf-bench flows`.
//!
//! `cargo build --release -p manul-felix --example flows-cpu-bench`, then
//! as root `target/release/examples/flows-cpu-bench [--rate 10000]
//! [--seconds 10] [--runs 3] [--clients 2] [--flow-interval 5] [--rules 10]`.
//! Everything it creates (namespaces, pins under `/sys/fs/bpf/manul-bench`)
//! is removed when a measurement ends.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use manul_dataplane_api::Driver;
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::traffic::{
    CLIENT, CLIENT_IP, CLOSED_PORT, CONNECT_PORT, NAMESPACE, PROFILE, SERVER, SERVER_IP,
    bench_operations,
};
use manul_dataplane_conformance::workload_yaml;
use manul_felix::calc::Update;
use manul_felix::flows::FlowPipeline;
use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, ProbeOutcome, plumb_pod, tcp_connect, unique_prefix};
use manul_proto::flows::RecordBatch;
use prost::Message;
use serde_json::{Value, json};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const PIN_ROOT: &str = "/sys/fs/bpf/manul-bench";

#[derive(Debug, Parser)]
#[command(name = "flows-cpu-bench")]
struct Args {
    /// New connections per second, all clients together.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds; each measures records off and on, in alternating order.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Client threads sharing the rate.
    #[arg(long, default_value_t = 2)]
    clients: u32,
    /// Felix's `--flow-interval` (seconds) with records on.
    #[arg(long, default_value_t = 5)]
    flow_interval: u64,
    /// Non-matching rules before the allowing one.
    #[arg(long, default_value_t = 10)]
    rules: usize,
}

/// What Felix's thread counted.
#[derive(Debug, Default, Clone, Copy)]
struct FelixCounts {
    observations: u64,
    records: u64,
    record_batches: u64,
    encoded_bytes: u64,
    trace_mismatches: u64,
    dropped_observations: u64,
}

/// One measurement.
#[derive(Debug)]
struct Sample {
    records_on: bool,
    connections: u64,
    failures: u64,
    achieved_rate: f64,
    /// Felix's on-CPU time per thread name, ns.
    cpu_ns: HashMap<String, u64>,
    counts: FelixCounts,
}

impl Sample {
    fn felix_cpu_ns(&self) -> u64 {
        self.cpu_ns.values().sum()
    }

    fn cpu_ms_per_1000(&self) -> f64 {
        self.felix_cpu_ns() as f64 / 1e6 / (self.connections.max(1) as f64 / 1000.0)
    }
}

/// Felix's threads: the agent's and the driver's event thread (`comm` is
/// cut to 15 bytes).
const AGENT_THREAD: &str = "felix-agent";
const EVENTS_THREAD: &str = "manul-bpf-event";

/// On-CPU nanoseconds of this process's threads named `names`, per thread.
fn thread_cpu(names: &[&str]) -> HashMap<u64, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !names.contains(&comm) {
            continue;
        }
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            out.insert(tid, (comm.to_owned(), ns));
        }
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The two pods' WorkloadEndpoints as Typha sends them.
fn endpoint_updates(node: &str) -> Vec<Update> {
    let ip = |a: std::net::Ipv4Addr| a.octets();
    let yaml = [
        workload_yaml(
            &format!("{NAMESPACE}/{CLIENT}"),
            ip(CLIENT_IP),
            "app: client, pod-template-hash: 6d4cf56db6",
            &format!("[{PROFILE}]"),
            "",
            node,
        ),
        workload_yaml(
            &format!("{NAMESPACE}/{SERVER}"),
            ip(SERVER_IP),
            "app: server, pod-template-hash: 7f9b8c6d5e",
            &format!("[{PROFILE}]"),
            "",
            node,
        ),
    ]
    .concat();
    manul_model::load("bench.yaml", yaml.as_bytes())
        .into_result()
        .expect("the benchmark's endpoints parse")
        .into_iter()
        .map(|l| Update {
            key: l.resource.key(),
            value: Some(l.resource),
        })
        .collect()
}

/// Felix's flow path on its own thread in the node's namespace, until
/// `stop`; says on `ready` once the driver holds the policy.
fn felix_thread(
    node_path: PathBuf,
    node: String,
    on: bool,
    args: &Args,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
) -> io::Result<std::thread::JoinHandle<FelixCounts>> {
    let (rules, interval) = (args.rules, args.flow_interval);
    std::thread::Builder::new()
        .name(AGENT_THREAD.into())
        .spawn(move || {
            let mut counts = FelixCounts::default();
            if let Err(e) = NetNs::from_path(&node_path).and_then(|ns| ns.enter_current_thread()) {
                let _ = ready.send(Err(format!("cannot enter the node namespace: {e}")));
                return counts;
            }
            let mut config = BpfConfig::new(node.clone());
            config.pin_root = PathBuf::from(PIN_ROOT);
            config.flow_observations = on;
            config.flow_update_interval = on.then(|| Duration::from_secs(interval));
            let mut driver = match BpfDriver::new(config) {
                Ok(d) => d,
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot load the programs: {e}")));
                    return counts;
                }
            };
            let ops = bench_operations(rules);
            if let Err(e) = driver.apply(&ops) {
                let _ = ready.send(Err(format!("apply: {e}")));
                return counts;
            }
            let mut pipeline = on.then(|| {
                let mut p = FlowPipeline::new(&node, interval, unix_now());
                for u in endpoint_updates(&node) {
                    p.update(&u);
                }
                p.applied(&ops);
                p
            });
            let _ = ready.send(Ok(()));
            // The agent's one-second flow tick.
            let mut next = Instant::now() + Duration::from_secs(1);
            let mut seq = 0;
            while !stop.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += Duration::from_secs(1);
                let Some(p) = pipeline.as_mut() else {
                    continue;
                };
                if let Some(records) = p.poll(&mut driver, unix_now())
                    && !records.is_empty()
                {
                    seq += 1;
                    counts.records += records.len() as u64;
                    counts.record_batches += 1;
                    let batch = RecordBatch { seq, records };
                    counts.encoded_bytes += batch.encode_to_vec().len() as u64;
                }
            }
            if let Some(p) = &pipeline {
                counts.observations = p.stats.observations;
                counts.trace_mismatches = p.stats.trace_mismatches;
            }
            counts.dropped_observations = driver.flows_dropped();
            counts
        })
}

/// A listener in the server pod that accepts and closes every connection.
struct Sink {
    stop: Arc<AtomicBool>,
    waker: Socket,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start(ns: &NetNs, addr: SocketAddr) -> Sink {
        let socket = ns
            .run(|| -> io::Result<Socket> {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                s.bind(&SockAddr::from(addr))?;
                s.listen(4096)?;
                Ok(s)
            })
            .expect("enter the server namespace")
            .expect("the connection listener");
        let waker = socket.try_clone().expect("clone the listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("load-accept".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((conn, _)) = socket.accept() {
                        drop(conn);
                    }
                }
            })
            .expect("the accept thread");
        Sink {
            stop,
            waker,
            thread: Some(thread),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Paced connects from the client pod: `(made, failed)`.
fn load(client: &NetNs, args: &Args) -> (u64, u64, Duration) {
    let dst = SockAddr::from(SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT));
    let per_thread = f64::from(args.rate) / f64::from(args.clients.max(1));
    let gap = Duration::from_secs_f64(1.0 / per_thread);
    let length = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..args.clients.max(1))
        .map(|i| {
            let (dst, path) = (dst.clone(), client.path().to_path_buf());
            std::thread::Builder::new()
                .name("load-connect".into())
                .spawn(move || {
                    NetNs::from_path(&path)
                        .and_then(|ns| ns.enter_current_thread())
                        .expect("enter the client namespace");
                    // Staggered so that the threads' connects interleave.
                    let mut next = started + gap.mul_f64(f64::from(i) / 2.0);
                    let end = started + length;
                    let (mut made, mut failed) = (0u64, 0u64);
                    loop {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        if now < next {
                            std::thread::sleep(next - now);
                        }
                        next += gap;
                        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
                            .expect("a socket");
                        match s.connect_timeout(&dst, Duration::from_secs(1)) {
                            Ok(()) => made += 1,
                            Err(_) => failed += 1,
                        }
                        let _ = s.set_linger(Some(Duration::ZERO));
                    }
                    (made, failed)
                })
                .expect("a load thread")
        })
        .collect();
    let (mut made, mut failed) = (0, 0);
    for h in handles {
        let (m, f) = h.join().expect("a load thread");
        made += m;
        failed += f;
    }
    (made, failed, started.elapsed())
}

fn purge(node: &str) {
    let _ = BpfDriver::purge_node(Path::new(PIN_ROOT), node);
}

fn measure(args: &Args, on: bool) -> Sample {
    let prefix = unique_prefix("fc");
    let node = NetNs::create(&format!("{prefix}-n")).expect("the node namespace");
    let client = NetNs::create(&format!("{prefix}-c")).expect("the client namespace");
    let server = NetNs::create(&format!("{prefix}-s")).expect("the server namespace");
    for (ns, name, ip) in [(&client, CLIENT, CLIENT_IP), (&server, SERVER, SERVER_IP)] {
        plumb_pod(
            &node,
            ns,
            &workload_interface_name(NAMESPACE, name),
            "eth0",
            ip,
        )
        .expect("pod plumbing");
    }
    let sink = Sink::start(
        &server,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let felix = felix_thread(
        node.path().to_path_buf(),
        prefix.clone(),
        on,
        args,
        stop.clone(),
        ready_tx,
    )
    .expect("Felix's thread");
    let sample = (|| {
        ready_rx
            .recv()
            .map_err(|_| "Felix's thread died".to_owned())??;
        // The policy must be in force, or the figures mean nothing.
        let closed = tcp_connect(
            &client,
            SocketAddr::new(IpAddr::V4(SERVER_IP), CLOSED_PORT),
            Duration::from_millis(300),
        )
        .map_err(|e| format!("enforcement check: {e}"))?;
        if matches!(closed, ProbeOutcome::Connected | ProbeOutcome::Refused) {
            return Err(format!(
                "the benchmark policy is not enforced: port {CLOSED_PORT} got {closed:?}"
            ));
        }
        let names = [AGENT_THREAD, EVENTS_THREAD];
        let before = thread_cpu(&names);
        let (made, failed, took) = load(&client, args);
        std::thread::sleep(Duration::from_secs(args.flow_interval + 2));
        let after = thread_cpu(&names);
        let mut cpu_ns: HashMap<String, u64> = HashMap::new();
        for (tid, (name, end)) in &after {
            let start = before.get(tid).map_or(0, |(_, s)| *s);
            *cpu_ns.entry(name.clone()).or_default() += end.saturating_sub(start);
        }
        Ok::<_, String>((made, failed, took, cpu_ns))
    })();
    stop.store(true, Ordering::Release);
    let counts = felix.join().expect("Felix's thread");
    drop(sink);
    drop((client, server, node));
    purge(&prefix);
    let (made, failed, took, cpu_ns) = sample.unwrap_or_else(|e| panic!("measurement: {e}"));
    Sample {
        records_on: on,
        connections: made,
        failures: failed,
        achieved_rate: made as f64 / took.as_secs_f64(),
        cpu_ns,
        counts,
    }
}

/// Median, range and every run.
fn figure(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    json!({"median": median, "min": v.first(), "max": v.last(), "runs": v})
}

fn side(samples: &[&Sample]) -> Value {
    let per = |f: &dyn Fn(&Sample) -> f64| figure(samples.iter().map(|s| f(s)).collect());
    let thread = |name: &'static str| {
        move |s: &Sample| s.cpu_ns.get(name).copied().unwrap_or(0) as f64 / 1e6
    };
    json!({
        "felix_cpu_ms_per_1000_connections": per(&|s| s.cpu_ms_per_1000()),
        "felix_cpu_ms": per(&|s| s.felix_cpu_ns() as f64 / 1e6),
        "agent_thread_cpu_ms": per(&thread(AGENT_THREAD)),
        "events_thread_cpu_ms": per(&thread(EVENTS_THREAD)),
        "connections": per(&|s| s.connections as f64),
        "connect_failures": per(&|s| s.failures as f64),
        "achieved_connections_per_s": per(&|s| s.achieved_rate),
        "observations": per(&|s| s.counts.observations as f64),
        "records": per(&|s| s.counts.records as f64),
        "record_batches": per(&|s| s.counts.record_batches as f64),
        "encoded_record_bytes": per(&|s| s.counts.encoded_bytes as f64),
        "trace_mismatches": per(&|s| s.counts.trace_mismatches as f64),
        "dropped_observations": per(&|s| s.counts.dropped_observations as f64),
    })
}

fn main() {
    let args = Args::parse();
    let mut samples = Vec::new();
    for round in 0..args.runs.max(1) {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let s = measure(&args, on);
            eprintln!(
                "flows-cpu: records {:3}: {} connections ({:.0}/s, {} failed), Felix {:.1} ms CPU, {:.2} ms per 1,000, {} observations, {} records",
                if on { "on" } else { "off" },
                s.connections,
                s.achieved_rate,
                s.failures,
                s.felix_cpu_ns() as f64 / 1e6,
                s.cpu_ms_per_1000(),
                s.counts.observations,
                s.counts.records,
            );
            samples.push(s);
        }
    }
    let off: Vec<&Sample> = samples.iter().filter(|s| !s.records_on).collect();
    let on: Vec<&Sample> = samples.iter().filter(|s| s.records_on).collect();
    let (off, on) = (side(&off), side(&on));
    let m = |v: &Value| {
        v["felix_cpu_ms_per_1000_connections"]["median"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let report = json!({
        "bench": "felix flows cpu",
        "dataplane": "bpf",
        "rate": args.rate,
        "seconds": args.seconds,
        "clients": args.clients,
        "flow_interval_s": args.flow_interval,
        "rules": args.rules,
        "runs": args.runs,
        "cpu_window": "load start until flow_interval + 2 s after its end",
        "off": off,
        "on": on,
        "records_cost_ms_per_1000_connections": m(&on) - m(&off),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
