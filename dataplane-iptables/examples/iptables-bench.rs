//! `iptables-bench`: the iptables (nftables) dataplane's benchmarks, as
//! JSON on stdout (progress on stderr).
//!
//! - `programming`: the time to program 1,000 policies of 10 rules each,
//!   referencing IP sets with 10,000 members in total, into a fresh table
//!   through `NftDriver::apply`; then one policy change and one set-member
//!   change, repeated.
//! - `traffic`: the shared per-packet-cost benchmark
//!   (`manul_dataplane_conformance::traffic`) with the `NftDriver`, for 10,
//!   100 and 1,000 non-matching rules before the allowing one, and the
//!   baseline without a dataplane: throughput (iperf3), new-connection
//!   latency and rate, established round trips, with ratios.
//! - `services`: the time to program `--services` services of one TCP
//!   port with `--backends` backends each from a fresh table (the
//!   snapshot), then one service's backend change (an EndpointSlice
//!   change: one backend replaced), repeated `--changes` times; with where
//!   the time goes (the driver's own split between preparing the script
//!   and `nft`, rendering and diffing the whole state, `nft` alone).
//! - `service-connections`: new connections through a ClusterIP with 10
//!   and 10,000 services: the eBPF driver (its TC programs, pins under
//!   `/sys/fs/bpf/manul-bench-svc`, removed at the end), this driver, and
//!   kube-proxy's iptables mode for the same services
//!   (`traffic::run_service_connect_benchmark`; needs
//!   `iptables-legacy-restore`), `--runs` rounds; one client connecting
//!   sequentially, then `--parallel-clients` at once; beside them the
//!   harness's ceiling, the same loops straight to the server pod's IP
//!   with no dataplane and through the eBPF driver without services.
//! - `service-handshakes`: the same dataplanes and services, counted as
//!   new-connection handshakes from a raw socket in the client pod (SYN
//!   from a new source port each, the server's SYN-ACK back from the
//!   cluster IP, the client kernel's RST), `--window` outstanding: a
//!   harness whose own cost per connection is small, so the figure is
//!   what each dataplane spends per new connection
//!   (`traffic::run_service_handshake_benchmark`); with the SYN to
//!   SYN-ACK latency one at a time.
//! - `flows`: the per-packet cost with flow observations off and on, side
//!   by side in one run (`iptables-bench/flows.rs`): established round
//!   trips (a TCP_RR loop), new connections and throughput, with the
//!   ratios of the medians.
//! - no command: `programming` and `traffic`.
//!
//! Everything runs in network namespaces it creates and removes, also on
//! error; the root namespace is never touched. Needs root, `nft` and
//! `iperf3`.
//!
//! It is an example rather than a `[[bin]]` because it needs
//! `manul-dataplane-conformance`, which depends on `manul-felix`, which
//! depends on this crate: only a dev-dependency may close that cycle.
//!
//! ```sh
//! cargo build --release -p manul-dataplane-iptables --example iptables-bench
//! target/release/examples/iptables-bench            # both
//! target/release/examples/iptables-bench traffic --runs 3
//! target/release/examples/iptables-bench services --services 10000 --backends 10
//! target/release/examples/iptables-bench service-handshakes --runs 5
//! target/release/examples/iptables-bench flows --runs 5
//! ```

use std::sync::Arc;
use std::time::Instant;

/// Where `service-connections` pins the eBPF driver's maps and programs.
const BPF_PIN_ROOT: &str = "/sys/fs/bpf/manul-bench-svc";

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ipnet::{IpNet, Ipv4Net};
use manul_dataplane_api::{
    Action, Driver, EndpointId, IpSetKind, IpSetMember, Match, Operation, Policy, PolicyId,
    PortRange, Rule, TierPolicies, WorkloadEndpoint,
};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::traffic::{self, Dataplane, TrafficOptions, TrafficReport};
use manul_dataplane_conformance::{Factory, privileges};
use manul_dataplane_iptables::{Nft, NftDriver, names, render, script};
use manul_netns::NetNs;
use serde::Serialize;

#[path = "iptables-bench/flows.rs"]
mod flows;
#[path = "iptables-bench/services.rs"]
mod services;

#[derive(Debug, Parser)]
#[command(
    name = "iptables-bench",
    about = "Benchmarks of the iptables (nftables) dataplane; JSON on stdout"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Policies to program.
    #[arg(long, default_value_t = 1000, global = true)]
    policies: usize,
    /// Rules per policy.
    #[arg(long, default_value_t = 10, global = true)]
    rules_per_policy: usize,
    /// IP set members in total (spread over one set per policy).
    #[arg(long, default_value_t = 10_000, global = true)]
    set_members: usize,
    /// Workload endpoints (each with `--policies-per-endpoint` policies).
    #[arg(long, default_value_t = 100, global = true)]
    endpoints: usize,
    #[arg(long, default_value_t = 10, global = true)]
    policies_per_endpoint: usize,
    /// Repetitions of the full programming (each from a fresh table).
    #[arg(long, default_value_t = 3, global = true)]
    full_repetitions: usize,
    /// Repetitions of each single change.
    #[arg(long, default_value_t = 20, global = true)]
    repetitions: usize,
    /// Non-matching rules before the allowing one, per configuration.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,100,1000",
        global = true
    )]
    rule_counts: Vec<usize>,
    /// Rounds of the traffic benchmark (each measures every configuration).
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
    /// Services to program (`services`).
    #[arg(long, default_value_t = 10_000, global = true)]
    services: usize,
    /// Backends per service (`services`).
    #[arg(long, default_value_t = 10, global = true)]
    backends: usize,
    /// Backend changes to time (`services`).
    #[arg(long, default_value_t = 50, global = true)]
    changes: usize,
    /// Non-matching rules before the allowing one (`flows`).
    #[arg(long, default_value_t = 10, global = true)]
    flow_rules: usize,
    /// iperf3 `-t` seconds.
    #[arg(long, default_value_t = 4, global = true)]
    iperf_seconds: u32,
    /// Timed new connections per measurement.
    #[arg(long, default_value_t = 2000, global = true)]
    connects: usize,
    /// Timed round trips per measurement.
    #[arg(long, default_value_t = 2000, global = true)]
    roundtrips: usize,
    /// Clients connecting at once for the parallel figure of
    /// `service-connections` (0: sequential only).
    #[arg(long, default_value_t = 2, global = true)]
    parallel_clients: usize,
    /// Timed handshakes per measurement, `window` outstanding
    /// (`service-handshakes`).
    #[arg(long, default_value_t = 50_000, global = true)]
    handshakes: usize,
    /// SYNs outstanding at once (`service-handshakes`).
    #[arg(long, default_value_t = 8, global = true)]
    window: usize,
    /// Handshakes timed one at a time for the latency
    /// (`service-handshakes`).
    #[arg(long, default_value_t = 5_000, global = true)]
    latency_handshakes: usize,
    /// Handshakes per slice of the median-slice rate
    /// (`service-handshakes`): short enough that most slices run without
    /// the scheduler taking the CPU away on a loaded machine.
    #[arg(long, default_value_t = 8, global = true)]
    slice: usize,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Cmd {
    /// Programming time: full table, one policy change, one set-member change.
    Programming,
    /// Per-packet cost against the number of rules, with real traffic.
    Traffic,
    /// Services: the whole snapshot, then one service's backend change.
    Services,
    /// New connections through a ClusterIP with 10 and 10,000 services,
    /// against kube-proxy's iptables mode for the same services.
    ServiceConnections,
    /// New-connection handshakes (SYN, SYN-ACK, RST) through a ClusterIP
    /// with 10 and 10,000 services, from a raw socket: the same
    /// dataplanes with a harness of small fixed cost.
    ServiceHandshakes,
    /// Per-packet cost with flow observations off and on, side by side.
    Flows,
}

#[derive(Debug, Serialize)]
struct Machine {
    kernel: String,
    cpus: usize,
    cpu_model: String,
    nft: String,
    iperf3: String,
}

fn command_version(program: &str, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    Machine {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        nft: command_version("nft", "--version"),
        iperf3: command_version("iperf3", "--version"),
    }
}

/// Milliseconds: median, p90 and p99 (nearest rank), min, max.
#[derive(Debug, Serialize)]
struct Stats {
    n: usize,
    median_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
    all_ms: Vec<f64>,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        let all_ms = v.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let at = |p: f64| {
            if n == 0 {
                0.0
            } else {
                v[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
            }
        };
        let median = if n == 0 {
            0.0
        } else if !n.is_multiple_of(2) {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            n,
            median_ms: median,
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            min_ms: v.first().copied().unwrap_or(0.0),
            max_ms: v.last().copied().unwrap_or(0.0),
            all_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct Programming {
    policies: usize,
    rules_per_policy: usize,
    ip_sets: usize,
    set_members: usize,
    endpoints: usize,
    policies_per_endpoint: usize,
    /// Rules in the rendered table (both families, all chains).
    nft_rules: usize,
    nft_chains: usize,
    /// The size of the whole-table `nft -f` script.
    full_script_bytes: usize,
    /// The whole state, from a fresh table, in one `apply` (one `nft -f`).
    full_apply: Stats,
    /// Rendering the whole state once (inside every `apply`).
    render_full: Stats,
    /// One `PolicyUpdate` (one rule's port changed).
    policy_change: Stats,
    /// One `IpSetDelta` (one member added, or removed again).
    set_member_change: Stats,
    /// A refresh that finds the table clean (`nft -j list` and compare).
    refresh_clean: Stats,
    /// `nft -f` alone, outside the driver, on the same table: a one-line
    /// `add element` / `delete element` script (what a set-member change
    /// writes) ...
    nft_only_set_element: Stats,
    /// ... and an empty transaction (`add table`, which exists already).
    nft_only_noop: Stats,
    full_writes: u64,
    incremental_writes: u64,
}

fn set_id(i: usize) -> String {
    format!("bench:set-{i}")
}

fn policy_id(i: usize) -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: format!("bench/policy-{i}"),
    }
}

fn host(n: u32) -> IpNet {
    IpNet::V4(Ipv4Net::from(std::net::Ipv4Addr::from(n)))
}

/// Rule `j` of policy `i`: TCP from an IP set to a port; even rules use
/// the policy's own set, odd ones another policy's.
fn rule(cli: &Cli, i: usize, j: usize, port: u16) -> Rule {
    let set = if j.is_multiple_of(2) {
        i
    } else {
        (i + j) % cli.policies
    };
    Rule {
        id: format!("{}/inbound/{j}", policy_id(i).name),
        action: Action::Allow,
        ip_version: None,
        protocol: Some(6),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match {
            ip_sets: vec![set_id(set)],
            ..Match::default()
        },
        dst: Match {
            ports: vec![PortRange {
                first: port,
                last: port,
            }],
            ..Match::default()
        },
    }
}

fn policy(cli: &Cli, i: usize, port_offset: u16) -> Policy {
    Policy {
        inbound: (0..cli.rules_per_policy)
            .map(|j| rule(cli, i, j, 8000 + j as u16 + port_offset))
            .collect(),
        outbound: vec![],
    }
}

fn programming_state(cli: &Cli) -> Vec<Operation> {
    let per_set = cli.set_members.div_ceil(cli.policies.max(1));
    let mut ops = Vec::new();
    let mut next = u32::from(std::net::Ipv4Addr::new(10, 128, 0, 1));
    let mut left = cli.set_members;
    for i in 0..cli.policies {
        let n = per_set.min(left);
        left -= n;
        let members = (0..n)
            .map(|_| {
                next += 1;
                IpSetMember::Net(host(next))
            })
            .collect();
        ops.push(Operation::IpSetUpdate {
            id: set_id(i),
            kind: IpSetKind::Net,
            members,
        });
    }
    let allow = |id: &str| manul_dataplane_api::testutil::rule(id, Action::Allow);
    ops.push(Operation::ProfileUpdate {
        id: "bench-allow".into(),
        profile: Policy {
            inbound: vec![allow("bench-allow/inbound/0")],
            outbound: vec![allow("bench-allow/outbound/0")],
        },
    });
    for i in 0..cli.policies {
        ops.push(Operation::PolicyUpdate {
            id: policy_id(i),
            policy: policy(cli, i, 0),
        });
    }
    for e in 0..cli.endpoints {
        let name = format!("pod-{e}");
        let first = e * cli.policies_per_endpoint;
        ops.push(Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: EndpointId {
                namespace: "bench".into(),
                name: name.clone(),
            },
            interface_name: manul_model::names::workload_interface_name("bench", &name),
            nets: vec![host(
                u32::from(std::net::Ipv4Addr::new(10, 65, 0, 0)) + e as u32 + 1,
            )],
            mac: None,
            tiers: vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: (first..first + cli.policies_per_endpoint)
                    .map(|p| policy_id(p % cli.policies.max(1)))
                    .collect(),
                outbound: vec![],
            }],
            profiles: vec!["bench-allow".into()],
        }));
    }
    ops.push(Operation::InSync);
    ops
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

fn driver_err(e: manul_dataplane_api::DriverError) -> anyhow::Error {
    anyhow::anyhow!(chain(&e))
}

/// Programs the whole state into a fresh table in its own namespace;
/// returns the time, and (for the last repetition) the driver to go on with.
fn full_apply(ops: &[Operation]) -> Result<(f64, NftDriver)> {
    let mut driver = NftDriver::new(Nft::default()).map_err(driver_err)?;
    let started = Instant::now();
    driver.apply(ops).map_err(driver_err)?;
    Ok((ms(started), driver))
}

fn programming(cli: &Cli) -> Result<Programming> {
    if cli.policies == 0 || cli.rules_per_policy == 0 {
        bail!("--policies and --rules-per-policy must be positive");
    }
    let ops = programming_state(cli);
    let mut full = Vec::new();
    for r in 0..cli.full_repetitions.max(1) {
        let ns = NetNs::create(&format!("{}-p", manul_netns::unique_prefix("ib")))
            .context("creating a namespace")?;
        let last = r + 1 == cli.full_repetitions.max(1);
        let result = ns
            .run(|| -> Result<Option<Programming>> {
                let (took, mut driver) = full_apply(&ops)?;
                eprintln!("programming: full table in {took:.0} ms");
                full.push(took);
                if !last {
                    return Ok(None);
                }
                let rs = render::render(driver.state());
                let full_script_bytes = script::full(&rs).len();
                let nft_rules = rs.chains.values().map(Vec::len).sum();
                let nft_chains = rs.chains.len();
                let mut render_full = Vec::new();
                for _ in 0..5 {
                    let started = Instant::now();
                    std::hint::black_box(render::render(driver.state()));
                    render_full.push(ms(started));
                }
                let mut policy_change = Vec::new();
                for k in 0..cli.repetitions {
                    let i = (k * 37) % cli.policies;
                    let op = Operation::PolicyUpdate {
                        id: policy_id(i),
                        policy: policy(cli, i, 100 + k as u16),
                    };
                    let started = Instant::now();
                    driver.apply(&[op]).map_err(driver_err)?;
                    policy_change.push(ms(started));
                }
                let mut set_change = Vec::new();
                for k in 0..cli.repetitions {
                    let set = set_id((k / 2 * 53) % cli.policies);
                    let member = IpSetMember::Net(host(
                        u32::from(std::net::Ipv4Addr::new(10, 129, 0, 1)) + (k / 2) as u32,
                    ));
                    let op = if k.is_multiple_of(2) {
                        Operation::IpSetDelta {
                            id: set,
                            added: vec![member],
                            removed: vec![],
                        }
                    } else {
                        Operation::IpSetDelta {
                            id: set,
                            added: vec![],
                            removed: vec![member],
                        }
                    };
                    let started = Instant::now();
                    driver.apply(&[op]).map_err(driver_err)?;
                    set_change.push(ms(started));
                }
                let mut refresh = Vec::new();
                for _ in 0..3 {
                    let started = Instant::now();
                    let r = driver.refresh().map_err(driver_err)?;
                    refresh.push(ms(started));
                    if r != manul_dataplane_iptables::Refresh::Clean {
                        bail!("the refresh found the table changed: {r:?}");
                    }
                }
                // The same kind of script as a set-member change, straight
                // to nft: added and deleted again, so the table stays as
                // the driver wrote it.
                let nft = Nft::default();
                let set = names::ip_set(&set_id(0), false);
                let mut nft_element = Vec::new();
                let mut nft_noop = Vec::new();
                for k in 0..cli.repetitions.max(2) / 2 * 2 {
                    let verb = if k.is_multiple_of(2) { "add" } else { "delete" };
                    let line = format!(
                        "{verb} element inet {} {set} {{ 10.130.0.1 }}\n",
                        names::TABLE
                    );
                    let started = Instant::now();
                    nft.apply(&line).map_err(|e| anyhow::anyhow!(chain(&e)))?;
                    nft_element.push(ms(started));
                    let started = Instant::now();
                    nft.apply(&format!("add table inet {}\n", names::TABLE))
                        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
                    nft_noop.push(ms(started));
                }
                let stats = driver.stats();
                Ok(Some(Programming {
                    policies: cli.policies,
                    rules_per_policy: cli.rules_per_policy,
                    ip_sets: cli.policies,
                    set_members: cli.set_members,
                    endpoints: cli.endpoints,
                    policies_per_endpoint: cli.policies_per_endpoint,
                    nft_rules,
                    nft_chains,
                    full_script_bytes,
                    full_apply: Stats::of(Vec::new()),
                    render_full: Stats::of(render_full),
                    policy_change: Stats::of(policy_change),
                    set_member_change: Stats::of(set_change),
                    refresh_clean: Stats::of(refresh),
                    nft_only_set_element: Stats::of(nft_element),
                    nft_only_noop: Stats::of(nft_noop),
                    full_writes: stats.full_writes,
                    incremental_writes: stats.incremental_writes,
                }))
            })
            .context("running in the benchmark namespace")??;
        drop(ns);
        if let Some(mut report) = result {
            report.full_apply = Stats::of(full);
            return Ok(report);
        }
    }
    bail!("no repetition ran")
}

fn traffic(cli: &Cli) -> Result<TrafficReport> {
    let factory: Arc<Factory> = Arc::new(|_ctx| {
        NftDriver::new(Nft::default())
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let dataplane = Dataplane::Driver {
        name: "iptables".into(),
        factory,
    };
    let options = TrafficOptions {
        iperf_seconds: cli.iperf_seconds,
        connects: cli.connects,
        roundtrips: cli.roundtrips,
        ..TrafficOptions::default()
    };
    traffic::run_traffic_benchmark_with(
        "it",
        &dataplane,
        &cli.rule_counts,
        cli.runs,
        &options,
        &mut |s| {
            eprintln!(
                "traffic: {} rules {:>5}: {:6.2} Gbit/s, connect p50 {:6.1} us p99 {:6.1} us, {:6.0} connects/s, rr p50 {:5.1} us",
                s.dataplane,
                s.rules.map_or("-".to_string(), |r| r.to_string()),
                s.throughput_bps / 1e9,
                s.connect.p50_us,
                s.connect.p99_us,
                s.connects_per_sec,
                s.roundtrip.p50_us,
            );
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

#[derive(Debug, Serialize)]
struct Output {
    benchmark: &'static str,
    machine: Machine,
    #[serde(skip_serializing_if = "Option::is_none")]
    programming: Option<Programming>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic: Option<TrafficReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<services::Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_connections: Option<traffic::ServiceConnectReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_handshakes: Option<HandshakeRun>,
    flows: Option<flows::Report>,
}

/// `service-handshakes`: its options and figures.
#[derive(Debug, Serialize)]
struct HandshakeRun {
    options: traffic::HandshakeOptions,
    report: traffic::HandshakeReport,
}

/// The dataplanes of `service-connections` and `service-handshakes`, in
/// their order (the ceilings, the eBPF driver, this driver, kube-proxy
/// last as the baseline), and the nodes the eBPF driver was started for.
fn service_dataplanes() -> (
    Vec<traffic::ServiceDataplane>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let nft: Arc<Factory> = Arc::new(|_ctx| {
        NftDriver::new(Nft::default())
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    // The eBPF driver's real TC programs, services as map data; its pins
    // under their own root, removed at the end.
    let bpf_nodes: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = bpf_nodes.clone();
    let bpf: Arc<Factory> = Arc::new(move |ctx| {
        if let Ok(mut nodes) = seen.lock() {
            nodes.push(ctx.node.clone());
        }
        let mut config = manul_dataplane_bpf::BpfConfig::new(&ctx.node);
        config.pin_root = BPF_PIN_ROOT.into();
        manul_dataplane_bpf::BpfDriver::new(config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let dataplanes = vec![
        traffic::ServiceDataplane::None,
        traffic::ServiceDataplane::DriverNoServices {
            name: "ebpf-no-services".into(),
            factory: bpf.clone(),
        },
        traffic::ServiceDataplane::Driver {
            name: "ebpf".into(),
            factory: bpf,
        },
        traffic::ServiceDataplane::Driver {
            name: "nftables".into(),
            factory: nft,
        },
        traffic::ServiceDataplane::KubeProxyIptables {
            program: "iptables-legacy-restore".into(),
        },
    ];
    (dataplanes, bpf_nodes)
}

/// Removes the eBPF driver's pins of every node it was started for (its
/// maps: each node's would stay in kernel memory until then), and forgets
/// those nodes. Called after every measurement, whose driver has stopped.
fn purge_bpf_nodes(nodes: &std::sync::Mutex<Vec<String>>) {
    if let Ok(mut nodes) = nodes.lock() {
        for node in nodes.drain(..) {
            if let Err(e) = manul_dataplane_bpf::BpfDriver::purge_node(BPF_PIN_ROOT.as_ref(), &node)
            {
                eprintln!("removing the eBPF pins of {node}: {}", chain(&e));
            }
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !privileges().map_err(|e| anyhow::anyhow!("{e}"))? {
        bail!("iptables-bench needs root (it creates network namespaces)");
    }
    let (run_programming, run_traffic) = match cli.command {
        None => (true, true),
        Some(Cmd::Programming) => (true, false),
        Some(Cmd::Traffic) => (false, true),
        Some(Cmd::Services | Cmd::ServiceConnections | Cmd::ServiceHandshakes | Cmd::Flows) => {
            (false, false)
        }
    };
    let service_connections = if matches!(cli.command, Some(Cmd::ServiceConnections)) {
        let (dataplanes, bpf_nodes) = service_dataplanes();
        let options = TrafficOptions {
            connects: cli.connects,
            ..TrafficOptions::default()
        };
        let report = traffic::run_service_connect_benchmark(
            "sc",
            &dataplanes,
            &[10, 10_000],
            cli.runs,
            cli.parallel_clients,
            &options,
            &mut |s| {
                eprintln!(
                    "service-connections: {} {} services: {:.0} connects/s ({:.0} from the median cycle; p50 {:.1} us, p99 {:.1} us); {} clients: {:.0} connects/s; programmed in {:.0} ms; load {:.2}",
                    s.dataplane,
                    s.services,
                    s.connects_per_sec,
                    s.connects_per_sec_p50_cycle,
                    s.connect.p50_us,
                    s.connect.p99_us,
                    s.parallel_clients,
                    s.parallel_connects_per_sec,
                    s.program_ms,
                    s.load_average[0],
                );
                purge_bpf_nodes(&bpf_nodes);
            },
        );
        purge_bpf_nodes(&bpf_nodes);
        Some(report.map_err(|e| anyhow::anyhow!(chain(&e)))?)
    } else {
        None
    };
    let service_handshakes = if matches!(cli.command, Some(Cmd::ServiceHandshakes)) {
        let (dataplanes, bpf_nodes) = service_dataplanes();
        let options = traffic::HandshakeOptions {
            handshakes: cli.handshakes,
            latency: cli.latency_handshakes,
            window: cli.window,
            slice: cli.slice,
            ..traffic::HandshakeOptions::default()
        };
        let report = traffic::run_service_handshake_benchmark(
            "sh",
            &dataplanes,
            &[10, 10_000],
            cli.runs,
            &options,
            &mut |s| {
                eprintln!(
                    "service-handshakes: {} {} services: {:.0} handshakes/s from the median slice ({:.0} over the wall time; {} of {} answered, {} lost); SYN to SYN-ACK p50 {:.1} us, p99 {:.1} us; denied port: {}; nf_conntrack entries {:?}; programmed in {:.0} ms; load {:.2}",
                    s.dataplane,
                    s.services,
                    s.handshakes_per_sec_p50_slice,
                    s.handshakes_per_sec,
                    s.answered,
                    s.sent,
                    s.lost,
                    s.latency.p50_us,
                    s.latency.p99_us,
                    s.denied_port,
                    s.nf_conntrack_entries,
                    s.program_ms,
                    s.load_average[0],
                );
                purge_bpf_nodes(&bpf_nodes);
            },
        );
        purge_bpf_nodes(&bpf_nodes);
        Some(HandshakeRun {
            options,
            report: report.map_err(|e| anyhow::anyhow!(chain(&e)))?,
        })
    } else {
        None
    };
    let flows = if matches!(cli.command, Some(Cmd::Flows)) {
        Some(flows::run(&cli)?)
    } else {
        None
    };
    let services = if matches!(cli.command, Some(Cmd::Services)) {
        Some(services::run(&cli)?)
    } else {
        None
    };
    let programming = if run_programming {
        Some(programming(&cli)?)
    } else {
        None
    };
    let traffic = if run_traffic {
        Some(traffic(&cli)?)
    } else {
        None
    };
    let out = Output {
        benchmark: "iptables-bench",
        machine: machine(),
        programming,
        traffic,
        services,
        service_connections,
        service_handshakes,
        flows,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
