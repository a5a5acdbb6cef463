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

mod handshake_stats;
mod handshakes;
mod kube_proxy;
mod load;
mod measure;
mod policy;
mod services;
mod stats;
mod syn;

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{ConformanceError, Factory};

pub use handshake_stats::{
    HandshakeRatio, HandshakeReport, HandshakeSample, HandshakeSummary, summarise_handshakes,
};
pub use handshakes::{
    HandshakeOptions, MAX_FLOWS, measure_handshakes, run_service_handshake_benchmark,
};
pub use measure::measure;
pub use policy::{ALLOWED_PORTS, bench_operations, server_policy_id, server_rule};
pub use services::{
    CLUSTER_CIDR, ServiceConnectRatio, ServiceConnectReport, ServiceConnectSample,
    ServiceConnectSummary, ServiceDataplane, kube_proxy_rules, measure_services,
    run_service_connect_benchmark, service_operations, summarise_services, tested_service,
};
pub use stats::{LatencyStats, Ratios, TrafficReport, TrafficSample, TrafficSummary, summarise};

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

/// The host-side interface of the benchmark's pod `pod` ([`CLIENT`] or
/// [`SERVER`]).
pub fn pod_interface(pod: &str) -> String {
    manul_model::names::workload_interface_name(NAMESPACE, pod)
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ConformanceError + '_ {
    move |e| ConformanceError::Setup(format!("{what}: {e}"))
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
