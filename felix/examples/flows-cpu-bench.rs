//! `flows-cpu-bench`: Felix's CPU time for flow records under a steady rate
//! of new connections on one node (eBPF dataplane), with flow records off
//! and on, side by side in one run, and the flow aggregator's CPU for what
//! it received. Prints one JSON object.
//!
//! Each measurement builds fresh network namespaces (a node with two pods
//! plumbed in, as the shared traffic benchmark does) and runs Felix's
//! flow path in the node's namespace: a `BpfDriver` programmed with the
//! shared benchmark policy (`--rules` non-matching rules before the
//! allowing one) on the agent thread and, with records on, the driver's
//! observations on (the conntrack scan every `--flow-interval`, as Felix
//! sets it), Felix's own `FlowPipeline` (the pods' WorkloadEndpoints, the
//! batches the driver took) drained every second as the agent does, and
//! each interval's records handed to Felix's exporter
//! (`manul_felix::flows::export::run`, the task `felix --flow-aggregator`
//! spawns, on its own runtime threads in the node's namespace), which
//! streams them over TCP to a flow aggregator (`manul_flows`' ingest
//! server, served as `manul-flows` serves plaintext, on its own runtime
//! threads) listening on the node namespace's loopback, port 7443. With
//! records off the driver is built as Felix builds it without
//! `--flow-aggregator` (no observations, no pipeline, no exporter).
//!
//! The load: `--clients` threads in the client pod open new TCP
//! connections to a listener in the server pod at `--rate` per second in
//! total for `--seconds`, each closed with an RST (no `TIME_WAIT`), every
//! one a new flow through both pods' programs.
//!
//! CPU is the on-CPU time (`/proc/self/task/TID/schedstat`, in
//! nanoseconds) of named threads. Felix's: the agent thread, the driver's
//! event thread (`manul-bpf-events`: ring buffer, conntrack scan,
//! observations) and the exporter's runtime threads (`felix-export`:
//! encoding, HTTP/2, the sends and the acknowledgements). The
//! aggregator's: its runtime threads (`manul-flows`: decoding, storing,
//! acknowledging). The window runs from the start of the load until
//! `--flow-interval` plus two seconds after its end (so the last
//! connections' ends are scanned and taken), then the agent hands over
//! the interval open at that moment and stops taking observations (the
//! starts it never handed over are counted: `unhanded_starts`), and the
//! window closes once the aggregator acknowledged every batch the
//! exporter was handed. The load's threads and the kernel
//! work they cause (the programs run in the sender's softirq) are not
//! counted: that is the per-packet cost, measured by `bpf-bench flows`.
//! Loopback TCP delivers in the sender's context, so the kernel's receive
//! work for the exporter's bytes is counted on Felix's side and for the
//! acknowledgements on the aggregator's.
//!
//! Delivery is checked, not assumed: the aggregator's store must hold
//! exactly the records the pipeline produced, with no duplicate and no
//! batch dropped, and the flows those records count as started (per
//! reporting side) are reported beside the connections made; a run whose
//! records did not all arrive makes the benchmark exit 1 after its JSON.
//! Both binaries allocate with mimalloc, so this benchmark does.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use manul_felix::flows::export::{self, BATCH_RECORDS, ExportConfig, ExportStatus};
use manul_flows::server::Shared;
use manul_flows::store::Store;
use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, ProbeOutcome, plumb_pod, tcp_connect, unique_prefix};
use manul_proto::flows::FlowRecord;
use manul_tls::connect::Transport;
use serde_json::{Value, json};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::{mpsc as tmpsc, watch};

/// Felix's and the aggregator's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PIN_ROOT: &str = "/sys/fs/bpf/manul-bench";
/// The aggregator's listener, on the node namespace's loopback (the
/// port `manul-flows` listens on by default).
const AGGREGATOR: &str = "127.0.0.1:7443";

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
    /// Records the exporter alone streams to the aggregator in the
    /// export phase, per run (0: no export phase).
    #[arg(long, default_value_t = 100_000)]
    export_records: usize,
    /// Records per interval handed to the exporter in the export phase
    /// (a node with that many distinct records per interval).
    #[arg(long, default_value_t = 10_000)]
    export_interval_records: usize,
    /// Let the kernel choose each connection's source port (they repeat:
    /// some connections reuse a tuple still in conntrack and are no new
    /// flow) instead of a new port per connection.
    #[arg(long)]
    kernel_source_ports: bool,
}

/// What Felix's agent thread counted.
#[derive(Debug, Default, Clone, Copy)]
struct FelixCounts {
    observations: u64,
    records: u64,
    /// Intervals whose records went to the exporter.
    record_batches: u64,
    /// Flows the records count as started, by the source and the
    /// destination side.
    started_src: u64,
    started_dst: u64,
    trace_mismatches: u64,
    dropped_observations: u64,
    /// Intervals the exporter could not take (its channel full).
    refused_intervals: u64,
    /// The programs' counters at the end: new flows allowed (one per
    /// connection and interface it crossed) and flow events the ring
    /// buffer had no room for.
    kernel_new_allowed: u64,
    kernel_events_lost: u64,
    /// Starts the driver's conntrack scans recovered (their event lost).
    starts_recovered: u64,
    /// Starts (both sides) made but never handed over: queued or in the
    /// open interval when the agent stopped.
    unhanded_starts: u64,
}

/// What the aggregator holds at the end of a measurement.
#[derive(Debug, Default, Clone, Copy)]
struct Delivered {
    records: u64,
    batches: u64,
    duplicates: u64,
    started_src: u64,
    started_dst: u64,
    completed_src: u64,
    completed_dst: u64,
    /// The exporter's view: batches sent, the last acknowledged, records
    /// it dropped.
    sent_batches: u64,
    acknowledged: u64,
    export_dropped: u64,
}

/// One measurement.
#[derive(Debug)]
struct Sample {
    records_on: bool,
    connections: u64,
    failures: u64,
    achieved_rate: f64,
    /// On-CPU time per thread name, ns (Felix's and the aggregator's).
    cpu_ns: HashMap<String, u64>,
    counts: FelixCounts,
    delivered: Delivered,
    /// Seconds from the load's start to the end of the CPU window.
    window_s: f64,
    /// Seconds of load.
    load_s: f64,
    /// The 1-minute load average at the measurement's start.
    load_average: f64,
    /// Some of the records the aggregator received (as it lists them).
    received: Vec<FlowRecord>,
}

impl Sample {
    fn thread_ns(&self, name: &str) -> u64 {
        self.cpu_ns.get(name).copied().unwrap_or(0)
    }

    /// Felix's whole flow path: observation, aggregation, export.
    fn felix_cpu_ns(&self) -> u64 {
        FELIX_THREADS.iter().map(|t| self.thread_ns(t)).sum()
    }

    fn per_1000_connections(&self, ns: u64) -> f64 {
        ns as f64 / 1e6 / (self.connections.max(1) as f64 / 1000.0)
    }

    fn cpu_ms_per_1000(&self) -> f64 {
        self.per_1000_connections(self.felix_cpu_ns())
    }

    /// Every record the pipeline produced is in the aggregator's store,
    /// once, and every batch was acknowledged.
    fn all_delivered(&self) -> bool {
        let d = &self.delivered;
        !self.records_on
            || (d.records == self.counts.records
                && d.duplicates == 0
                && d.export_dropped == 0
                && self.counts.refused_intervals == 0
                && d.acknowledged == d.sent_batches
                && d.started_src == self.counts.started_src
                && d.started_dst == self.counts.started_dst)
    }
}

/// Felix's threads: the agent's, the driver's event thread and the
/// exporter's runtime (`comm` is cut to 15 bytes).
const AGENT_THREAD: &str = "felix-agent";
const EVENTS_THREAD: &str = "manul-bpf-event";
const EXPORT_THREAD: &str = "felix-export";
const FELIX_THREADS: [&str; 3] = [AGENT_THREAD, EVENTS_THREAD, EXPORT_THREAD];
/// The aggregator's runtime threads.
const AGGREGATOR_THREAD: &str = "manul-flows";

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

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
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

/// How the main thread steers Felix's agent thread.
struct Control {
    /// End the thread.
    stop: AtomicBool,
    /// Stop taking observations once the interval open now is handed
    /// over (the CPU window is closing).
    quiet: AtomicBool,
    /// Set by the agent: the interval open when `quiet` was set is handed
    /// over, and no more observations are taken.
    closed: AtomicBool,
    /// Batches handed to the exporter so far (an interval of more than
    /// `BATCH_RECORDS` records is several).
    handed_batches: AtomicU64,
}

/// Felix's agent on its own thread in the node's namespace, until
/// `control.stop`; says on `ready` once the driver holds the policy. With
/// records on (`sink`), each interval's records go to the exporter as
/// `felix`'s agent sends them (`try_send`: a full exporter drops the
/// interval, counted).
fn felix_thread(
    node_path: PathBuf,
    node: String,
    sink: Option<tmpsc::Sender<Vec<FlowRecord>>>,
    args: &Args,
    control: Arc<Control>,
    ready: mpsc::Sender<Result<(), String>>,
) -> io::Result<std::thread::JoinHandle<FelixCounts>> {
    let (rules, interval) = (args.rules, args.flow_interval);
    let on = sink.is_some();
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
            while !control.stop.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += Duration::from_secs(1);
                let quiet = control.quiet.load(Ordering::Acquire);
                if control.closed.load(Ordering::Acquire) {
                    continue;
                }
                let (Some(p), Some(sink)) = (pipeline.as_mut(), sink.as_ref()) else {
                    control.closed.store(quiet, Ordering::Release);
                    continue;
                };
                let Some(records) = p.poll(&mut driver, unix_now()) else {
                    continue;
                };
                // The interval open at the quiet request is closed: the
                // flows started before it are all in records handed over.
                if quiet {
                    control.closed.store(true, Ordering::Release);
                }
                if records.is_empty() {
                    continue;
                }
                let (n, batches) = (records.len(), records.len().div_ceil(BATCH_RECORDS));
                let started = |side: &str| {
                    records
                        .iter()
                        .filter(|r| r.reporter == side)
                        .map(|r| r.flows_started)
                        .sum::<u64>()
                };
                let (src, dst) = (started("src"), started("dst"));
                match sink.try_send(records) {
                    Ok(()) => {
                        counts.records += n as u64;
                        counts.record_batches += 1;
                        counts.started_src += src;
                        counts.started_dst += dst;
                        control
                            .handed_batches
                            .fetch_add(batches as u64, Ordering::AcqRel);
                    }
                    Err(_) => counts.refused_intervals += 1,
                }
            }
            if let Some(p) = pipeline.as_mut() {
                // What the window left out: the observations still queued
                // and the interval still open.
                let left = driver.take_flows();
                counts.unhanded_starts = left
                    .iter()
                    .filter(|o| o.phase == manul_dataplane_api::FlowPhase::Start)
                    .count() as u64;
                p.observe(left);
                counts.unhanded_starts += p
                    .flush_if_due(u64::MAX)
                    .unwrap_or_default()
                    .iter()
                    .map(|r| r.flows_started)
                    .sum::<u64>();
                counts.observations = p.stats.observations;
                counts.trace_mismatches = p.stats.trace_mismatches;
            }
            counts.dropped_observations = driver.flows_dropped();
            let k = driver.kernel_counters();
            counts.kernel_new_allowed = k.new_allowed;
            counts.kernel_events_lost = k.events_lost;
            counts.starts_recovered = driver.flow_counters().starts_recovered;
            counts
        })
}

/// A named runtime whose threads (workers and blocking pool) live in the
/// namespace at `ns`.
fn runtime_in(name: &str, workers: usize, ns: &Path) -> tokio::runtime::Runtime {
    let ns = ns.to_path_buf();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .on_thread_start(move || {
            NetNs::from_path(&ns)
                .and_then(|n| n.enter_current_thread())
                .expect("enter the node namespace");
        })
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The flow aggregator as `manul-flows` serves plaintext (its defaults: a
/// 1 h window of at most 2,000,000 records, expiry every 10 s), on the
/// node namespace's loopback.
struct Aggregator {
    shared: Shared,
    runtime: tokio::runtime::Runtime,
}

impl Aggregator {
    fn start(node: &NetNs) -> Aggregator {
        // Two workers: the binary's `#[tokio::main]` on this two-core
        // machine.
        let runtime = runtime_in(AGGREGATOR_THREAD, 2, node.path());
        let shared = Shared::new(Store::new(3600, 2_000_000));
        let addr: SocketAddr = AGGREGATOR.parse().expect("the aggregator's address");
        let listener = node
            .run(|| std::net::TcpListener::bind(addr))
            .expect("enter the node namespace")
            .expect("the aggregator's listener");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = {
            let _in = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("the aggregator's listener")
        };
        runtime.spawn(shared.clone().expire_every(Duration::from_secs(10)));
        let (ingest, query) = shared.services();
        // Served as the aggregator serves plaintext: its default limits,
        // Nagle off on each accepted connection.
        let listeners = manul_flows::listen::Listeners::new(
            &manul_flows::listen::ListenArgs::default(),
            manul_listen::slots::nofile(),
        );
        runtime.spawn(
            listeners
                .grpc
                .builder()
                .add_service(ingest)
                .add_service(query)
                .serve_with_incoming(manul_flows::listen::incoming(
                    listener,
                    listeners.grpc,
                    listeners.grpc_slots,
                )),
        );
        Aggregator { shared, runtime }
    }

    /// Up to `n` of the records the store holds, as it lists them.
    fn records(&self, n: usize) -> Vec<FlowRecord> {
        self.shared.store().list(&manul_flows::Filter::default(), n)
    }

    /// What the store holds.
    fn delivered(&self) -> Delivered {
        let store = self.shared.store();
        let mut d = Delivered {
            records: store.stats.records,
            batches: store.stats.batches,
            duplicates: store.stats.duplicates,
            ..Delivered::default()
        };
        for f in store.newest(store.len()) {
            match &*f.reporter {
                "src" => {
                    d.started_src += f.flows_started;
                    d.completed_src += f.flows_completed;
                }
                _ => {
                    d.started_dst += f.flows_started;
                    d.completed_dst += f.flows_completed;
                }
            }
        }
        d
    }
}

/// Felix's exporter (`export::run`, as `felix --flow-aggregator
/// http://127.0.0.1:7443` spawns it) on its own runtime in the node's
/// namespace.
struct Exporter {
    sink: tmpsc::Sender<Vec<FlowRecord>>,
    status: watch::Receiver<ExportStatus>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl Exporter {
    fn start(node: &NetNs, name: &str) -> Exporter {
        // One worker: the task is one of the agent's runtime's many.
        let runtime = runtime_in(EXPORT_THREAD, 1, node.path());
        // The agent's channel to the exporter, as `felix` makes it.
        let (sink, records) = tmpsc::channel(64);
        let (status_tx, status) = watch::channel(ExportStatus::default());
        let config = ExportConfig {
            endpoint: format!("http://{AGGREGATOR}"),
            transport: Transport::Plain,
            node: name.to_owned(),
            epoch: 1,
            // `--flow-buffer-records`' default.
            capacity: 100_000,
        };
        let task = runtime.spawn(export::run(config, records, status_tx));
        Exporter {
            sink,
            status,
            task,
            runtime,
        }
    }

    /// Waits until `ok` holds for the exporter's status, at most `limit`.
    fn wait(&self, limit: Duration, ok: impl Fn(&ExportStatus) -> bool) -> Result<(), String> {
        let until = Instant::now() + limit;
        loop {
            let st = *self.status.borrow();
            if ok(&st) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!("the exporter's status after {limit:?}: {st:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes the channel (the exporter returns) and stops the runtime.
    fn stop(self) {
        let Exporter {
            sink,
            task,
            runtime,
            ..
        } = self;
        drop(sink);
        let _ =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
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

/// The client's source ports, each connection its own while `--rate` ×
/// `--seconds` stays under their number (64,512): every connection is a
/// new 5-tuple, so a new flow for the dataplane. Ports the kernel picks
/// repeat within seconds at this rate (a birthday collision among its
/// 28,232 ephemeral ports), and a connection on a tuple whose conntrack
/// entry is still there is no new flow.
const FIRST_SOURCE_PORT: u16 = 1024;
const LAST_SOURCE_PORT: u16 = 65535;

/// Paced connects from the client pod: `(made, failed)`.
fn load(client: &NetNs, args: &Args) -> (u64, u64, Duration) {
    let dst = SockAddr::from(SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT));
    let per_thread = f64::from(args.rate) / f64::from(args.clients.max(1));
    let gap = Duration::from_secs_f64(1.0 / per_thread);
    let length = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let clients = args.clients.max(1);
    let ports = u32::from(LAST_SOURCE_PORT - FIRST_SOURCE_PORT) + 1;
    let share = ports / clients;
    let kernel_ports = args.kernel_source_ports;
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (dst, path) = (dst.clone(), client.path().to_path_buf());
            // This thread's source ports, used in turn.
            let first = u32::from(FIRST_SOURCE_PORT) + i * share;
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
                        if !kernel_ports {
                            let port = first + u32::try_from(made + failed).unwrap_or(0) % share;
                            let port = u16::try_from(port).expect("a port");
                            let src = SocketAddr::new(IpAddr::V4(CLIENT_IP), port);
                            if s.bind(&SockAddr::from(src)).is_err() {
                                failed += 1;
                                continue;
                            }
                        }
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

/// CPU per thread name between two readings.
fn cpu_between(
    before: &HashMap<u64, (String, u64)>,
    after: &HashMap<u64, (String, u64)>,
) -> HashMap<String, u64> {
    let mut cpu_ns: HashMap<String, u64> = HashMap::new();
    for (tid, (name, end)) in after {
        let start = before.get(tid).map_or(0, |(_, s)| *s);
        *cpu_ns.entry(name.clone()).or_default() += end.saturating_sub(start);
    }
    cpu_ns
}

fn measure(args: &Args, on: bool) -> Sample {
    let load_average = load_average();
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
    // With records on: the aggregator, and Felix's exporter streaming to it.
    let aggregator = on.then(|| Aggregator::start(&node));
    let exporter = on.then(|| Exporter::start(&node, &prefix));
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        quiet: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        handed_batches: AtomicU64::new(0),
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    let felix = felix_thread(
        node.path().to_path_buf(),
        prefix.clone(),
        exporter.as_ref().map(|e| e.sink.clone()),
        args,
        control.clone(),
        ready_tx,
    )
    .expect("Felix's thread");
    let sample = (|| {
        ready_rx
            .recv()
            .map_err(|_| "Felix's thread died".to_owned())??;
        if let Some(e) = &exporter {
            e.wait(Duration::from_secs(10), |st| st.connected)
                .map_err(|e| format!("the exporter never reached the aggregator: {e}"))?;
        }
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
        let names = [
            AGENT_THREAD,
            EVENTS_THREAD,
            EXPORT_THREAD,
            AGGREGATOR_THREAD,
        ];
        let before = thread_cpu(&names);
        let started = Instant::now();
        let (made, failed, took) = load(&client, args);
        std::thread::sleep(Duration::from_secs(args.flow_interval + 2));
        // No more intervals; the window closes once everything handed to
        // the exporter is acknowledged.
        control.quiet.store(true, Ordering::Release);
        let closing = Instant::now() + Duration::from_secs(args.flow_interval + 5);
        while !control.closed.load(Ordering::Acquire) {
            if Instant::now() > closing {
                return Err("the agent never closed its last interval".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(e) = &exporter {
            let handed = control.handed_batches.load(Ordering::Acquire);
            e.wait(Duration::from_secs(10), |st| {
                st.acknowledged >= handed && st.unacknowledged == 0
            })
            .map_err(|e| format!("not every batch was acknowledged ({handed} handed): {e}"))?;
        }
        let after = thread_cpu(&names);
        let window_s = started.elapsed().as_secs_f64();
        Ok::<_, String>((made, failed, took, cpu_between(&before, &after), window_s))
    })();
    control.stop.store(true, Ordering::Release);
    let counts = felix.join().expect("Felix's thread");
    let mut delivered = aggregator
        .as_ref()
        .map(Aggregator::delivered)
        .unwrap_or_default();
    let received = aggregator
        .as_ref()
        .map(|a| a.records(64))
        .unwrap_or_default();
    if let Some(e) = exporter {
        let st = *e.status.borrow();
        delivered.sent_batches = st.sent_batches;
        delivered.acknowledged = st.acknowledged;
        delivered.export_dropped = st.dropped_records;
        e.stop();
    }
    if let Some(a) = aggregator {
        a.runtime.shutdown_timeout(Duration::from_secs(1));
    }
    drop(sink);
    drop((client, server, node));
    purge(&prefix);
    let (made, failed, took, cpu_ns, window_s) =
        sample.unwrap_or_else(|e| panic!("measurement: {e}"));
    Sample {
        records_on: on,
        connections: made,
        failures: failed,
        achieved_rate: made as f64 / took.as_secs_f64(),
        cpu_ns,
        counts,
        delivered,
        window_s,
        load_s: took.as_secs_f64(),
        load_average,
        received,
    }
}

/// One run of the export phase.
#[derive(Debug)]
struct ExportRun {
    records: u64,
    delivered: u64,
    duplicates: u64,
    acknowledged_all: bool,
    wall_s: f64,
    cpu_ns: HashMap<String, u64>,
    load_average: f64,
}

impl ExportRun {
    fn us_per_record(&self, thread: &str) -> f64 {
        self.cpu_ns.get(thread).copied().unwrap_or(0) as f64 / 1e3 / self.records.max(1) as f64
    }

    fn ok(&self) -> bool {
        self.delivered == self.records && self.duplicates == 0 && self.acknowledged_all
    }
}

/// The exporter alone at a record rate the two-pod load cannot produce:
/// `--export-records` records shaped as the pipeline made them
/// (`templates`, each copy another source workload, so the aggregator
/// interns new names as it would from many pods), handed to Felix's
/// exporter `--export-interval-records` at a time as fast as its channel
/// takes them, streamed to the aggregator in a fresh namespace; its CPU
/// and the aggregator's until the last batch is acknowledged. Building
/// the records (the pipeline's work) is not counted.
fn export_phase(args: &Args, templates: &[FlowRecord]) -> ExportRun {
    let load_average = load_average();
    let prefix = unique_prefix("fx");
    let ns = NetNs::create(&format!("{prefix}-n")).expect("a namespace");
    let mut intervals: Vec<Vec<FlowRecord>> = Vec::new();
    let per = args.export_interval_records.max(1);
    for first in (0..args.export_records).step_by(per) {
        let n = per.min(args.export_records - first);
        intervals.push(
            (first..first + n)
                .map(|i| {
                    let mut r = templates[i % templates.len()].clone();
                    if let Some(src) = r.src.as_mut() {
                        src.workload = format!("client-{}-*", i % 2_000);
                    }
                    r
                })
                .collect(),
        );
    }
    let batches: u64 = intervals
        .iter()
        .map(|v| v.len().div_ceil(BATCH_RECORDS) as u64)
        .sum();
    let aggregator = Aggregator::start(&ns);
    let exporter = Exporter::start(&ns, &prefix);
    exporter
        .wait(Duration::from_secs(10), |st| st.connected)
        .unwrap_or_else(|e| panic!("the exporter never reached the aggregator: {e}"));
    let names = [EXPORT_THREAD, AGGREGATOR_THREAD];
    let before = thread_cpu(&names);
    let started = Instant::now();
    for v in intervals {
        exporter
            .sink
            .blocking_send(v)
            .expect("the exporter takes records");
    }
    let acked = exporter.wait(Duration::from_secs(120), |st| {
        st.acknowledged >= batches && st.unacknowledged == 0
    });
    let wall_s = started.elapsed().as_secs_f64();
    let after = thread_cpu(&names);
    let d = aggregator.delivered();
    exporter.stop();
    aggregator.runtime.shutdown_timeout(Duration::from_secs(1));
    drop(ns);
    if let Err(e) = &acked {
        eprintln!("flows-cpu: export phase: {e}");
    }
    ExportRun {
        records: args.export_records as u64,
        delivered: d.records,
        duplicates: d.duplicates,
        acknowledged_all: acked.is_ok(),
        wall_s,
        cpu_ns: cpu_between(&before, &after),
        load_average,
    }
}

fn export_report(args: &Args, runs: &[ExportRun]) -> Value {
    let per = |f: &dyn Fn(&ExportRun) -> f64| figure(runs.iter().map(f).collect());
    json!({
        "records": args.export_records,
        "interval_records": args.export_interval_records,
        "batch_records": BATCH_RECORDS,
        "export_cpu_us_per_record": per(&|r| r.us_per_record(EXPORT_THREAD)),
        "export_cpu_ms_per_1000_records": per(&|r| r.us_per_record(EXPORT_THREAD)),
        "aggregator_cpu_us_per_record": per(&|r| r.us_per_record(AGGREGATOR_THREAD)),
        "aggregator_cpu_ms_per_1000_records": per(&|r| r.us_per_record(AGGREGATOR_THREAD)),
        "records_per_s": per(&|r| r.records as f64 / r.wall_s.max(f64::MIN_POSITIVE)),
        "load_average": per(&|r| r.load_average),
        "delivered_records": per(&|r| r.delivered as f64),
        "every_record_delivered": runs.iter().all(ExportRun::ok),
    })
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
    let thread = |name: &'static str| move |s: &Sample| s.thread_ns(name) as f64 / 1e6;
    let mut out = json!({
        // Felix's whole flow path: observation, aggregation and export.
        "felix_cpu_ms_per_1000_connections": per(&|s| s.cpu_ms_per_1000()),
        "felix_cpu_ms": per(&|s| s.felix_cpu_ns() as f64 / 1e6),
        "agent_thread_cpu_ms": per(&thread(AGENT_THREAD)),
        "events_thread_cpu_ms": per(&thread(EVENTS_THREAD)),
        "connections": per(&|s| s.connections as f64),
        "connect_failures": per(&|s| s.failures as f64),
        "achieved_connections_per_s": per(&|s| s.achieved_rate),
        "cpu_window_s": per(&|s| s.window_s),
        "load_average": per(&|s| s.load_average),
        "observations": per(&|s| s.counts.observations as f64),
        "records": per(&|s| s.counts.records as f64),
        "record_batches": per(&|s| s.counts.record_batches as f64),
        "trace_mismatches": per(&|s| s.counts.trace_mismatches as f64),
        "dropped_observations": per(&|s| s.counts.dropped_observations as f64),
        "kernel_new_flows_allowed": per(&|s| s.counts.kernel_new_allowed as f64),
        "kernel_events_lost": per(&|s| s.counts.kernel_events_lost as f64),
        "starts_recovered": per(&|s| s.counts.starts_recovered as f64),
        "unhanded_starts": per(&|s| s.counts.unhanded_starts as f64),
    });
    if samples.iter().any(|s| s.records_on)
        && let Some(o) = out.as_object_mut()
    {
        let d = |f: fn(&Delivered) -> u64| move |s: &Sample| f(&s.delivered) as f64;
        let extra = json!({
            "export_cpu_ms": per(&thread(EXPORT_THREAD)),
            "export_cpu_ms_per_1000_connections":
                per(&|s| s.per_1000_connections(s.thread_ns(EXPORT_THREAD))),
            "export_cpu_us_per_record": per(&|s| {
                s.thread_ns(EXPORT_THREAD) as f64 / 1e3 / s.counts.records.max(1) as f64
            }),
            "observation_and_aggregation_cpu_ms_per_1000_connections": per(&|s| {
                s.per_1000_connections(s.thread_ns(AGENT_THREAD) + s.thread_ns(EVENTS_THREAD))
            }),
            "aggregator_cpu_ms": per(&thread(AGGREGATOR_THREAD)),
            "aggregator_cpu_ms_per_1000_records": per(&|s| {
                s.thread_ns(AGGREGATOR_THREAD) as f64 / 1e6
                    / (s.delivered.records.max(1) as f64 / 1000.0)
            }),
            "aggregator_cpu_ms_per_1000_connections":
                per(&|s| s.per_1000_connections(s.thread_ns(AGGREGATOR_THREAD))),
            "flows_started_src": per(&|s| s.counts.started_src as f64),
            "flows_started_dst": per(&|s| s.counts.started_dst as f64),
            "delivered_records": per(&d(|d| d.records)),
            "delivered_batches": per(&d(|d| d.batches)),
            "delivered_duplicates": per(&d(|d| d.duplicates)),
            "delivered_flows_started_src": per(&d(|d| d.started_src)),
            "delivered_flows_started_dst": per(&d(|d| d.started_dst)),
            "delivered_flows_completed_src": per(&d(|d| d.completed_src)),
            "delivered_flows_completed_dst": per(&d(|d| d.completed_dst)),
            "delivered_flows_per_s": per(&|s| {
                s.delivered.started_src as f64 / s.load_s.max(f64::MIN_POSITIVE)
            }),
            "exported_batches": per(&d(|d| d.sent_batches)),
            "acknowledged_batches": per(&d(|d| d.acknowledged)),
            "export_dropped_records": per(&d(|d| d.export_dropped)),
            "refused_intervals": per(&|s| s.counts.refused_intervals as f64),
            "every_record_delivered": samples.iter().all(|s| s.all_delivered()),
        });
        if let Some(extra) = extra.as_object() {
            o.extend(extra.clone());
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let load_start = load_average();
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
                "flows-cpu: records {:3}: {} connections ({:.0}/s, {} failed), load {:.1}, Felix {:.1} ms CPU ({:.1} export), {:.2} ms per 1,000, {} observations, {} records, {} new flows in the kernel, {} events lost, {} starts recovered, {} starts not handed over; aggregator {:.1} ms CPU, {} records, {}/{} flows started (src/dst) of {}/{}{}",
                if on { "on" } else { "off" },
                s.connections,
                s.achieved_rate,
                s.failures,
                s.load_average,
                s.felix_cpu_ns() as f64 / 1e6,
                s.thread_ns(EXPORT_THREAD) as f64 / 1e6,
                s.cpu_ms_per_1000(),
                s.counts.observations,
                s.counts.records,
                s.counts.kernel_new_allowed,
                s.counts.kernel_events_lost,
                s.counts.starts_recovered,
                s.counts.unhanded_starts,
                s.thread_ns(AGGREGATOR_THREAD) as f64 / 1e6,
                s.delivered.records,
                s.delivered.started_src,
                s.delivered.started_dst,
                s.counts.started_src,
                s.counts.started_dst,
                if s.all_delivered() {
                    ""
                } else {
                    ", NOT ALL DELIVERED"
                },
            );
            samples.push(s);
        }
    }
    let templates: Vec<FlowRecord> = samples
        .iter()
        .flat_map(|s| s.received.iter().cloned())
        .collect();
    let mut export_runs = Vec::new();
    if args.export_records > 0 && !templates.is_empty() {
        for _ in 0..args.runs.max(1) {
            let r = export_phase(&args, &templates);
            eprintln!(
                "flows-cpu: export phase: {} records ({:.0}/s, load {:.1}), exporter {:.2} µs per record, aggregator {:.2} µs per record, {} delivered{}",
                r.records,
                r.records as f64 / r.wall_s,
                r.load_average,
                r.us_per_record(EXPORT_THREAD),
                r.us_per_record(AGGREGATOR_THREAD),
                r.delivered,
                if r.ok() { "" } else { ", NOT ALL DELIVERED" },
            );
            export_runs.push(r);
        }
    }
    let off: Vec<&Sample> = samples.iter().filter(|s| !s.records_on).collect();
    let on: Vec<&Sample> = samples.iter().filter(|s| s.records_on).collect();
    let delivered =
        samples.iter().all(Sample::all_delivered) && export_runs.iter().all(ExportRun::ok);
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
        "source_ports": if args.kernel_source_ports { "the kernel's" } else { "one per connection" },
        "export": format!("felix's exporter over TCP to the flow aggregator at {AGGREGATOR} (node namespace)"),
        "cpu_window": "load start until flow_interval + 2 s after its end, then until the interval open then is handed to the exporter and every batch handed is acknowledged",
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "every_record_delivered": delivered,
        "off": off,
        "on": on,
        "records_cost_ms_per_1000_connections": m(&on) - m(&off),
        "export_phase": (!export_runs.is_empty()).then(|| export_report(&args, &export_runs)),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if delivered {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("flows-cpu: the aggregator did not receive every record the pipeline produced");
        std::process::ExitCode::FAILURE
    }
}
