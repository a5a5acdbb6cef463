//! Per-packet cost of a dataplane against the number of policy rules,
//! measured with real traffic between pod namespaces. Written once for
//! every driver, like the behaviour matrix.
//!
//! One measurement ([`measure`]) builds a fresh node namespace with two
//! pods plumbed into it Calico-style (`bench/client` at [`CLIENT_IP`],
//! `bench/server` at [`SERVER_IP`]), starts the driver on a
//! [`DriverThread`] in the node namespace and programs
//! [`bench_operations`]: the server's inbound policy holds `rules` rules
//! that do not match the benchmark traffic, then one that allows it, so a
//! linear dataplane walks all of them for every new flow. The fillers are
//! real checks: even ones allow the benchmark ports from a different `/32`
//! source net, odd ones allow the client's IP set to a different port.
//! Without a driver ([`Dataplane::None`]) nothing is programmed: plain
//! veth forwarding, the baseline.
//!
//! It first checks that the policy is enforced (a connection to
//! [`CLOSED_PORT`], which the policy does not allow, must not get through
//! to the server's kernel), then measures, from the client's namespace:
//!
//! - **new connections**: sequential TCP connects to a listener on
//!   [`CONNECT_PORT`], each closed with an RST (no `TIME_WAIT`): latency of
//!   the handshake (p50/p90/p99) and connects per second. Every SYN is a
//!   new conntrack flow, so this is where the cost per rule shows;
//! - **established round trips**: request/response over one held TCP
//!   connection ([`manul_netns::HeldConnection::roundtrip`]). Established
//!   packets are accepted by conntrack before any policy, so this shows the
//!   dataplane's fixed cost, not the rule count;
//! - **throughput**: `iperf3 -J` (server in the server pod, client in the
//!   client pod, spawned from threads that entered those namespaces), the
//!   receiver's bits per second. Also an established flow.
//!
//! [`summarise`] takes the medians of repeated runs per configuration and
//! their ratios to the baseline and to the fewest rules: the figures to
//! compare one driver with another. Everything lives in namespaces the
//! measurement creates and removes (also on error); nothing touches the
//! root namespace. Needs root and `iperf3`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use manul_dataplane_conformance::Factory;
//! use manul_dataplane_conformance::traffic::{self, Dataplane, TrafficOptions};
//! # fn driver() -> Arc<Factory> { unimplemented!() }
//! let options = TrafficOptions::default();
//! let dataplane = Dataplane::Driver { name: "bpf".into(), factory: driver() };
//! let report = traffic::run_traffic_benchmark("tb", &dataplane, &[10, 100, 1000], 3, &options)?;
//! println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
//! # Ok::<(), manul_dataplane_conformance::ConformanceError>(())
//! ```

use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use manul_dataplane_api::{
    Action, EndpointId, IpSetKind, IpSetMember, Match, Operation, Policy, PolicyId, PortRange,
    Rule, TierPolicies, WorkloadEndpoint,
};
use manul_model::names::workload_interface_name;
use manul_netns::{IpNet, NetNs, ProbeOutcome, TcpServer, plumb_pod};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{ConformanceError, DriverThread, Factory, NodeContext};

/// The client pod's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 10);
/// The server pod's address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 20);
/// The Kubernetes namespace of both pods.
pub const NAMESPACE: &str = "bench";
/// The pods' names.
pub const CLIENT: &str = "client";
pub const SERVER: &str = "server";
/// The echo server for established round trips.
pub const ECHO_PORT: u16 = 8080;
/// The listener for new connections.
pub const CONNECT_PORT: u16 = 8090;
/// iperf3's port.
pub const IPERF_PORT: u16 = 5201;
/// A port the policy does not allow and nothing listens on: the
/// enforcement check.
pub const CLOSED_PORT: u16 = 9999;
/// The IP set holding the client's address.
pub const CLIENT_SET: &str = "bench:client";
/// The profile both endpoints carry (allow all, both ways).
pub const PROFILE: &str = "bench-allow";

/// The server's inbound policy.
pub fn server_policy_id() -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: format!("{NAMESPACE}/server-ingress"),
    }
}

/// What to run the traffic through.
#[derive(Clone)]
pub enum Dataplane {
    /// No driver: plain veth forwarding (the baseline).
    None,
    /// A driver, built on the node's thread by `factory`; `name` goes
    /// into the results.
    Driver { name: String, factory: Arc<Factory> },
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dataplane::None => write!(f, "Dataplane::None"),
            Dataplane::Driver { name, .. } => write!(f, "Dataplane::Driver({name})"),
        }
    }
}

impl Dataplane {
    /// The name in the results: the driver's, or `none`.
    pub fn name(&self) -> &str {
        match self {
            Dataplane::None => "none",
            Dataplane::Driver { name, .. } => name,
        }
    }
}

/// How much traffic one measurement sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficOptions {
    /// The `iperf3` program.
    pub iperf3: String,
    /// `iperf3 -t`.
    pub iperf_seconds: u32,
    /// `iperf3 -O`: seconds of slow start left out of the figure.
    pub iperf_omit_seconds: u32,
    /// New connections timed.
    pub connects: usize,
    /// Round trips timed on the held connection.
    pub roundtrips: usize,
    /// Untimed connects and round trips first (caches, ARP, conntrack).
    pub warmup: usize,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        Self {
            iperf3: "iperf3".into(),
            iperf_seconds: 4,
            iperf_omit_seconds: 1,
            connects: 2000,
            roundtrips: 2000,
            warmup: 100,
        }
    }
}

/// Latency percentiles of one series, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub samples: usize,
    /// Attempts that timed out or failed (not in the percentiles).
    pub failures: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
}

impl LatencyStats {
    /// Nearest-rank percentiles of `samples` (sorted in place).
    pub fn from_samples(samples: &mut [Duration], failures: usize) -> LatencyStats {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let pct = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            us(samples[rank.clamp(1, samples.len()) - 1])
        };
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64
        };
        LatencyStats {
            samples: samples.len(),
            failures,
            p50_us: pct(50.0),
            p90_us: pct(90.0),
            p99_us: pct(99.0),
            mean_us: mean,
            max_us: samples.last().map(|d| us(*d)).unwrap_or(0.0),
        }
    }
}

/// One measurement: one configuration, fresh namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// The driver's name, `none` for the baseline.
    pub dataplane: String,
    /// Non-matching rules before the allowing one; `None` for the baseline
    /// (nothing programmed).
    pub rules: Option<usize>,
    /// Whether a connection the policy does not allow was stopped (always
    /// false for the baseline; a driver that does not enforce is an error).
    pub enforced: bool,
    /// How long programming the state took (through the driver thread).
    pub program_ms: f64,
    /// iperf3, receiver side.
    pub throughput_bps: f64,
    /// iperf3's TCP retransmits, sender side.
    pub retransmits: Option<u64>,
    /// New TCP connections: handshake latency.
    pub connect: LatencyStats,
    /// New TCP connections per second, one after another.
    pub connects_per_sec: f64,
    /// Request/response round trips on one established connection.
    pub roundtrip: LatencyStats,
}

/// `this / reference` for each figure: above 1 is more throughput or
/// rate, and more latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub throughput: f64,
    pub connect_p50: f64,
    pub connect_p99: f64,
    pub connects_per_sec: f64,
    pub roundtrip_p50: f64,
    pub roundtrip_p99: f64,
}

/// The medians over repeated runs of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    pub dataplane: String,
    pub rules: Option<usize>,
    pub runs: usize,
    pub throughput_gbps: f64,
    /// Lowest and highest run, to show the spread.
    pub throughput_gbps_range: (f64, f64),
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
    pub connects_per_sec: f64,
    pub connects_per_sec_range: (f64, f64),
    pub roundtrip_p50_us: f64,
    pub roundtrip_p99_us: f64,
    /// Against the baseline (no dataplane), when it was measured.
    pub vs_baseline: Option<Ratios>,
    /// Against the fewest rules measured with the same dataplane.
    pub vs_fewest_rules: Option<Ratios>,
}

/// A whole benchmark: every sample and the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub dataplane: String,
    pub rule_counts: Vec<usize>,
    pub runs: usize,
    pub options: TrafficOptions,
    pub summary: Vec<TrafficSummary>,
    pub samples: Vec<TrafficSample>,
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ConformanceError + '_ {
    move |e| ConformanceError::Setup(format!("{what}: {e}"))
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::V4(ip))
}

fn port(p: u16) -> PortRange {
    PortRange { first: p, last: p }
}

fn allow_all(id: &str) -> Rule {
    Rule {
        id: id.into(),
        action: Action::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match::default(),
        dst: Match::default(),
    }
}

/// The ports the allowing rule opens.
pub const ALLOWED_PORTS: [u16; 3] = [ECHO_PORT, CONNECT_PORT, IPERF_PORT];

/// Rule `index` of the server's inbound policy when it has `fillers`
/// non-matching rules: a filler below `fillers`, the allowing rule at
/// `fillers`.
pub fn server_rule(index: usize, fillers: usize) -> Rule {
    let policy = server_policy_id().name;
    let mut rule = allow_all(&format!("{policy}/inbound/{index}"));
    rule.protocol = Some(6);
    if index >= fillers {
        // The one that decides: TCP from the client's set to the ports.
        rule.src.ip_sets = vec![CLIENT_SET.into()];
        rule.dst.ports = ALLOWED_PORTS.iter().map(|p| port(*p)).collect();
    } else if index.is_multiple_of(2) {
        // The right ports from another pod's address.
        let n = index / 2;
        let other = Ipv4Addr::new(10, 200, (n / 250) as u8, (n % 250 + 1) as u8);
        rule.src.nets = vec![host(other)];
        rule.dst.ports = ALLOWED_PORTS.iter().map(|p| port(*p)).collect();
    } else {
        // The right source, another port.
        rule.src.ip_sets = vec![CLIENT_SET.into()];
        rule.dst.ports = vec![port(20000 + (index % 40000) as u16)];
    }
    rule
}

/// Everything the benchmark programs, in contract order, ending with
/// [`Operation::InSync`]: the client's IP set, the allow-all profile, the
/// server's policy (`fillers` non-matching rules, then the allowing one)
/// and both workload endpoints.
pub fn bench_operations(fillers: usize) -> Vec<Operation> {
    let endpoint = |name: &str, ip: Ipv4Addr, tiers: Vec<TierPolicies>| {
        Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: EndpointId {
                namespace: NAMESPACE.into(),
                name: name.into(),
            },
            interface_name: workload_interface_name(NAMESPACE, name),
            nets: vec![host(ip)],
            mac: None,
            tiers,
            profiles: vec![PROFILE.into()],
        })
    };
    vec![
        Operation::IpSetUpdate {
            id: CLIENT_SET.into(),
            kind: IpSetKind::Net,
            members: vec![IpSetMember::Net(host(CLIENT_IP))],
        },
        Operation::ProfileUpdate {
            id: PROFILE.into(),
            profile: Policy {
                inbound: vec![allow_all(&format!("{PROFILE}/inbound/0"))],
                outbound: vec![allow_all(&format!("{PROFILE}/outbound/0"))],
            },
        },
        Operation::PolicyUpdate {
            id: server_policy_id(),
            policy: Policy {
                inbound: (0..=fillers).map(|i| server_rule(i, fillers)).collect(),
                outbound: vec![],
            },
        },
        endpoint(CLIENT, CLIENT_IP, vec![]),
        endpoint(
            SERVER,
            SERVER_IP,
            vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![server_policy_id()],
                outbound: vec![],
            }],
        ),
        Operation::InSync,
    ]
}

/// A listener that accepts and closes every connection at once, from its
/// own thread; stopped on drop.
struct ConnectSink {
    stop: Arc<AtomicBool>,
    waker: Socket,
    thread: Option<JoinHandle<()>>,
}

impl ConnectSink {
    fn start(ns: &NetNs, addr: SocketAddr) -> Result<ConnectSink, ConformanceError> {
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
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
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
                .map_err(setup("connect listener thread"))?
        };
        Ok(ConnectSink {
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

impl Drop for ConnectSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes a blocked accept.
        let _ = self.waker.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed (and reaped) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The namespaces, servers and driver of one measurement. Field order is
/// drop order: the driver stops first, the namespaces go last.
struct Bench {
    driver: Option<DriverThread>,
    _echo: TcpServer,
    _sink: ConnectSink,
    client: NetNs,
    server: NetNs,
    _node: NetNs,
}

fn build(prefix: &str) -> Result<(NetNs, NetNs, NetNs), ConformanceError> {
    let node = NetNs::create(&format!("{prefix}-n")).map_err(setup("node namespace"))?;
    let client = NetNs::create(&format!("{prefix}-c")).map_err(setup("client namespace"))?;
    let server = NetNs::create(&format!("{prefix}-s")).map_err(setup("server namespace"))?;
    for (ns, name, ip) in [(&client, CLIENT, CLIENT_IP), (&server, SERVER, SERVER_IP)] {
        plumb_pod(
            &node,
            ns,
            &workload_interface_name(NAMESPACE, name),
            "eth0",
            ip,
        )
        .map_err(setup("pod plumbing"))?;
    }
    Ok((node, client, server))
}

/// Whether `port` is listening in the calling thread's namespace.
fn listening_here(port: u16) -> io::Result<bool> {
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

fn iperf(
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
fn connect_loop(
    client: &NetNs,
    dst: SocketAddr,
    count: usize,
    warmup: usize,
) -> Result<(Vec<Duration>, usize, Duration), ConformanceError> {
    client
        .run(|| -> io::Result<(Vec<Duration>, usize, Duration)> {
            let addr = SockAddr::from(dst);
            let mut samples = Vec::with_capacity(count);
            let mut failures = 0;
            let mut started = Instant::now();
            for i in 0..warmup + count {
                if i == warmup {
                    started = Instant::now();
                }
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                let t = Instant::now();
                let r = s.connect_timeout(&addr, Duration::from_secs(1));
                let took = t.elapsed();
                s.set_linger(Some(Duration::ZERO))?;
                drop(s);
                if i >= warmup {
                    match r {
                        Ok(()) => samples.push(took),
                        Err(_) => failures += 1,
                    }
                }
            }
            Ok((samples, failures, started.elapsed()))
        })
        .map_err(setup("connect loop"))?
        .map_err(setup("connect loop"))
}

fn roundtrip_loop(
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

/// One measurement in fresh namespaces named after
/// `manul_netns::unique_prefix(tag)` (keep `tag` to 2 characters): the
/// state of [`bench_operations`]`(rules)` programmed through `dataplane`
/// (ignored for [`Dataplane::None`]), then connects, round trips and
/// iperf3. Everything it created is removed when it returns.
pub fn measure(
    tag: &str,
    dataplane: &Dataplane,
    rules: usize,
    options: &TrafficOptions,
) -> Result<TrafficSample, ConformanceError> {
    let prefix = manul_netns::unique_prefix(tag);
    let (node, client, server) = build(&prefix)?;
    let echo = TcpServer::start(&server, SocketAddr::new(IpAddr::V4(SERVER_IP), ECHO_PORT))
        .map_err(setup("echo server"))?;
    let sink = ConnectSink::start(
        &server,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
    )?;
    let mut bench = Bench {
        driver: None,
        _echo: echo,
        _sink: sink,
        client,
        server,
        _node: node,
    };
    let mut program_ms = 0.0;
    let programmed = match dataplane {
        Dataplane::None => None,
        Dataplane::Driver { factory, .. } => {
            let driver = DriverThread::start(
                &bench._node,
                NodeContext {
                    node: prefix.clone(),
                },
                Arc::clone(factory),
            )?;
            let started = Instant::now();
            driver.apply(bench_operations(rules))?;
            program_ms = started.elapsed().as_secs_f64() * 1e3;
            bench.driver = Some(driver);
            Some(rules)
        }
    };

    // The policy must be in force, or the figures mean nothing.
    let closed = manul_netns::tcp_connect(
        &bench.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CLOSED_PORT),
        Duration::from_millis(300),
    )
    .map_err(setup("enforcement check"))?;
    let enforced = !matches!(closed, ProbeOutcome::Connected | ProbeOutcome::Refused);
    if programmed.is_some() && !enforced {
        return Err(ConformanceError::Driver(format!(
            "the benchmark policy is not enforced: a connection to port {CLOSED_PORT} got {closed:?}"
        )));
    }

    let (mut rt, rt_failures) = roundtrip_loop(
        &bench.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), ECHO_PORT),
        options.roundtrips,
        options.warmup,
    )?;
    let (mut connects, connect_failures, connect_time) = connect_loop(
        &bench.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
        options.connects,
        options.warmup,
    )?;
    let (throughput_bps, retransmits) = iperf(&bench.client, &bench.server, options)?;

    Ok(TrafficSample {
        dataplane: dataplane.name().to_string(),
        rules: programmed,
        enforced,
        program_ms,
        throughput_bps,
        retransmits,
        connects_per_sec: connects.len() as f64 / connect_time.as_secs_f64().max(1e-9),
        connect: LatencyStats::from_samples(&mut connects, connect_failures),
        roundtrip: LatencyStats::from_samples(&mut rt, rt_failures),
    })
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

fn ratios(this: &TrafficSummary, reference: &TrafficSummary) -> Ratios {
    Ratios {
        throughput: ratio(this.throughput_gbps, reference.throughput_gbps),
        connect_p50: ratio(this.connect_p50_us, reference.connect_p50_us),
        connect_p99: ratio(this.connect_p99_us, reference.connect_p99_us),
        connects_per_sec: ratio(this.connects_per_sec, reference.connects_per_sec),
        roundtrip_p50: ratio(this.roundtrip_p50_us, reference.roundtrip_p50_us),
        roundtrip_p99: ratio(this.roundtrip_p99_us, reference.roundtrip_p99_us),
    }
}

/// Medians per configuration (dataplane and rule count, baseline first,
/// then by rule count) with their ratios to the baseline and to the
/// fewest rules of the same dataplane.
pub fn summarise(samples: &[TrafficSample]) -> Vec<TrafficSummary> {
    let mut keys: Vec<(Option<usize>, String)> = samples
        .iter()
        .map(|s| (s.rules, s.dataplane.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<TrafficSummary> = keys
        .into_iter()
        .map(|(rules, dataplane)| {
            let mine: Vec<&TrafficSample> = samples
                .iter()
                .filter(|s| s.rules == rules && s.dataplane == dataplane)
                .collect();
            let col = |f: &dyn Fn(&TrafficSample) -> f64| -> Vec<f64> {
                mine.iter().map(|s| f(s)).collect()
            };
            let mut gbps = col(&|s| s.throughput_bps / 1e9);
            let mut cps = col(&|s| s.connects_per_sec);
            let range = |v: &[f64]| {
                (
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                )
            };
            TrafficSummary {
                dataplane,
                rules,
                runs: mine.len(),
                throughput_gbps_range: range(&gbps),
                throughput_gbps: median(&mut gbps),
                connect_p50_us: median(&mut col(&|s| s.connect.p50_us)),
                connect_p99_us: median(&mut col(&|s| s.connect.p99_us)),
                connects_per_sec_range: range(&cps),
                connects_per_sec: median(&mut cps),
                roundtrip_p50_us: median(&mut col(&|s| s.roundtrip.p50_us)),
                roundtrip_p99_us: median(&mut col(&|s| s.roundtrip.p99_us)),
                vs_baseline: None,
                vs_fewest_rules: None,
            }
        })
        .collect();
    let baseline = out.iter().find(|s| s.rules.is_none()).cloned();
    let fewest: Vec<TrafficSummary> = out.iter().filter(|s| s.rules.is_some()).fold(
        Vec::<TrafficSummary>::new(),
        |mut acc, s| {
            // Sorted by rule count: the first per dataplane is the fewest.
            if !acc.iter().any(|a| a.dataplane == s.dataplane) {
                acc.push(s.clone());
            }
            acc
        },
    );
    for s in &mut out {
        if s.rules.is_some() {
            s.vs_baseline = baseline.as_ref().map(|b| ratios(s, b));
            s.vs_fewest_rules = fewest
                .iter()
                .find(|f| f.dataplane == s.dataplane)
                .map(|f| ratios(s, f));
        }
    }
    out
}

/// `runs` rounds of: the baseline, then `dataplane` with each of
/// `rule_counts` (interleaved, so slow drift on a shared machine spreads
/// over every configuration), each in fresh namespaces; then the summary.
/// `progress` is called after every measurement.
pub fn run_traffic_benchmark_with(
    tag: &str,
    dataplane: &Dataplane,
    rule_counts: &[usize],
    runs: usize,
    options: &TrafficOptions,
    progress: &mut dyn FnMut(&TrafficSample),
) -> Result<TrafficReport, ConformanceError> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let baseline = measure(tag, &Dataplane::None, 0, options)?;
        progress(&baseline);
        samples.push(baseline);
        for &rules in rule_counts {
            let sample = measure(tag, dataplane, rules, options)?;
            progress(&sample);
            samples.push(sample);
        }
    }
    Ok(TrafficReport {
        dataplane: dataplane.name().to_string(),
        rule_counts: rule_counts.to_vec(),
        runs,
        options: options.clone(),
        summary: summarise(&samples),
        samples,
    })
}

/// [`run_traffic_benchmark_with`] without progress reports.
pub fn run_traffic_benchmark(
    tag: &str,
    dataplane: &Dataplane,
    rule_counts: &[usize],
    runs: usize,
    options: &TrafficOptions,
) -> Result<TrafficReport, ConformanceError> {
    run_traffic_benchmark_with(tag, dataplane, rule_counts, runs, options, &mut |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_follow_the_contract_and_the_last_rule_decides() {
        use manul_dataplane_api::{Driver as _, NullDriver, Packet};
        let fillers = 100;
        let mut null = NullDriver::new();
        null.apply(&bench_operations(fillers)).expect("contract");
        assert_eq!(
            null.state().policies[&server_policy_id()].inbound.len(),
            fillers + 1
        );
        let (client, server) = (IpAddr::V4(CLIENT_IP), IpAddr::V4(SERVER_IP));
        for port in ALLOWED_PORTS {
            let v = null
                .state()
                .verdict(&Packet::tcp(client, 40000, server, port));
            assert!(v.allowed, "port {port}");
            let decider = v.inbound.expect("inbound judged").decider;
            let last = format!("{}/inbound/{fillers}", server_policy_id().name);
            assert_eq!(decider.rule_id(), Some(last.as_str()));
        }
        let closed = null
            .state()
            .verdict(&Packet::tcp(client, 40000, server, CLOSED_PORT));
        assert!(!closed.allowed);
        // A filler matches its own traffic: the checks are real.
        let other = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 3));
        let f = null
            .state()
            .verdict(&Packet::tcp(other, 40000, server, CONNECT_PORT));
        assert_eq!(
            f.inbound
                .expect("inbound")
                .decider
                .rule_id()
                .map(str::to_owned),
            Some(format!("{}/inbound/4", server_policy_id().name))
        );
    }

    #[test]
    fn percentiles_and_summary() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = LatencyStats::from_samples(&mut v, 2);
        assert_eq!((s.p50_us, s.p99_us, s.failures), (50.0, 99.0, 2));
        let sample = |rules: Option<usize>, bps: f64, p50: f64| TrafficSample {
            dataplane: if rules.is_some() { "x" } else { "none" }.into(),
            rules,
            enforced: rules.is_some(),
            program_ms: 0.0,
            throughput_bps: bps,
            retransmits: None,
            connect: LatencyStats {
                p50_us: p50,
                ..LatencyStats::default()
            },
            connects_per_sec: 1e6 / p50,
            roundtrip: LatencyStats::default(),
        };
        let sum = summarise(&[
            sample(None, 10e9, 50.0),
            sample(Some(10), 8e9, 60.0),
            sample(Some(1000), 8e9, 120.0),
        ]);
        assert_eq!(sum.len(), 3);
        assert!(sum[0].rules.is_none());
        let last = sum[2].vs_fewest_rules.clone().expect("ratios");
        assert!((last.connect_p50 - 2.0).abs() < 1e-9);
        let base = sum[1].vs_baseline.clone().expect("ratios");
        assert!((base.throughput - 0.8).abs() < 1e-9);
    }
}
