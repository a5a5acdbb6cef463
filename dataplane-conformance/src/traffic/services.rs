//! New connections through a ClusterIP: the cost per connection of a
//! dataplane's service translation against the number of services, with
//! kube-proxy's iptables mode for the same services as the alternative,
//! and the harness's own ceiling beside them.
//!
//! One measurement builds the node and both pods as in [`super::measure`],
//! programs `services` ClusterIP services of one TCP port (10 backends
//! each at addresses no pod has, except the service under test, the one
//! in the middle of the list, whose one backend is the server pod's
//! connect listener), checks that a connection to the service's cluster
//! IP reaches the server, then times new connections to it from the
//! client pod, each closed with an RST so that every one is a new flow (a
//! fresh translation): first one client connecting sequentially, then, in
//! the same namespaces, `parallel_clients` clients at once (one thread
//! each; the listener has as many accepting threads), which keeps every
//! core busy so that the rate shows the CPU cost per connection rather
//! than the latency of one.
//!
//! The alternative, [`ServiceDataplane::KubeProxyIptables`], programs no
//! Manul driver (pods plumbed as for the baseline: plain forwarding) and
//! loads the tables kube-proxy's iptables mode writes for the same
//! services into the node's namespace with `iptables-legacy-restore`
//! ([`kube_proxy_rules`], see [`super::kube_proxy`]). The node's namespace
//! is where kube-proxy's rules act on pod traffic (in prerouting and
//! forward, as the node routes between its pods).
//!
//! The ceiling: [`ServiceDataplane::None`] runs the same loops with no
//! dataplane and no service, straight to the server pod's IP (what the
//! loop itself, the veths and the listener cost), and
//! [`ServiceDataplane::DriverNoServices`] does so through a driver
//! programmed with the pods and their policy but no service. Their
//! samples have `services` 0.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manul_dataplane_api::{Backend, Operation, Service, ServicePort};
use manul_netns::{NetNs, ProbeOutcome};
use serde::Serialize;

use super::kube_proxy::iptables_restore;
pub use super::kube_proxy::{CLUSTER_CIDR, kube_proxy_rules};
use super::load::{ConnectSink, parallel_connect_loop};
use super::measure::build;
use super::stats::{Configuration, comparisons, median, summarise_each};
use super::{CONNECT_PORT, LatencyStats, SERVER_IP, TrafficOptions, bench_operations, setup};
use crate::{ConformanceError, DriverThread, Factory, NodeContext};

/// The services' port.
pub const SERVICE_PORT: u16 = 80;
/// Backends of every service but the one under test.
pub const BACKENDS: usize = 10;

/// What translates the services (or, for the ceiling, carries the
/// connections without any service).
#[derive(Clone)]
pub enum ServiceDataplane {
    /// A Manul driver, programmed with the services and the pods.
    Driver { name: String, factory: Arc<Factory> },
    /// kube-proxy's iptables mode, loaded with `program` (an
    /// `iptables-restore`).
    KubeProxyIptables { program: String },
    /// The ceiling: no dataplane, no service; the connections go straight
    /// to the server pod's IP.
    None,
    /// A Manul driver programmed with the pods and their policy but no
    /// service; the connections go straight to the server pod's IP.
    DriverNoServices { name: String, factory: Arc<Factory> },
}

impl std::fmt::Debug for ServiceDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ServiceDataplane {
    pub fn name(&self) -> &str {
        match self {
            ServiceDataplane::Driver { name, .. } => name,
            ServiceDataplane::DriverNoServices { name, .. } => name,
            ServiceDataplane::KubeProxyIptables { .. } => "kube-proxy-iptables",
            ServiceDataplane::None => "none",
        }
    }

    /// Whether it programs services (the ceilings do not).
    pub fn has_services(&self) -> bool {
        matches!(
            self,
            ServiceDataplane::Driver { .. } | ServiceDataplane::KubeProxyIptables { .. }
        )
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectSample {
    pub dataplane: String,
    /// 0 for the ceilings (straight to the pod's IP).
    pub services: usize,
    /// Programming the services (and, for a driver, the pods) in ms.
    pub program_ms: f64,
    /// One client, sequential connects: timed connects over the wall time.
    pub connects_per_sec: f64,
    pub connect: LatencyStats,
    /// One client's whole cycles (socket, connect, RST close).
    pub cycle: LatencyStats,
    /// 1 / the median cycle: the sequential rate with the time other
    /// processes take from the loop (its slow tail) left out.
    pub connects_per_sec_p50_cycle: f64,
    /// Clients connecting at once in the parallel figure (0: not measured).
    pub parallel_clients: usize,
    /// All of them together.
    pub parallel_connects_per_sec: f64,
    pub parallel_connect: LatencyStats,
    /// `/proc/loadavg` (1, 5, 15 minutes) before the timed connects.
    pub load_average: [f64; 3],
}

pub(super) fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32)
}

/// Backend `b` of service `i` (in 10.128.0.0/9, outside the pods' range).
fn fake_backend(i: usize, b: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + (i * 16 + b) as u32)
}

/// The index of the service under test.
pub fn tested(services: usize) -> usize {
    services / 2
}

/// The cluster IP and port of the service under test among `services`.
pub fn tested_service(services: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(cluster_ip(tested(services))), SERVICE_PORT)
}

/// The backends of service `i`: `(address, port)`.
pub(super) fn backends(i: usize, services: usize) -> Vec<(Ipv4Addr, u16)> {
    if i == tested(services) {
        vec![(SERVER_IP, CONNECT_PORT)]
    } else {
        (0..BACKENDS).map(|b| (fake_backend(i, b), 8080)).collect()
    }
}

/// The services as dataplane operations.
pub fn service_operations(services: usize) -> Vec<Operation> {
    (0..services)
        .map(|i| {
            let backends: Vec<Backend> = backends(i, services)
                .into_iter()
                .map(|(ip, port)| Backend {
                    ip: IpAddr::V4(ip),
                    port,
                    local: ip == SERVER_IP,
                    ready: true,
                })
                .collect();
            let local = backends.iter().copied().filter(|b| b.local).collect();
            Operation::ServiceUpdate(Service::cluster_ip(
                "bench",
                format!("svc-{i}"),
                vec![IpAddr::V4(cluster_ip(i))],
                vec![ServicePort {
                    name: "http".into(),
                    protocol: 6,
                    port: SERVICE_PORT,
                    node_port: None,
                    backends,
                    local_backends: local,
                }],
            ))
        })
        .collect()
}

pub(super) fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
    [
        f.next().unwrap_or(f64::NAN),
        f.next().unwrap_or(f64::NAN),
        f.next().unwrap_or(f64::NAN),
    ]
}

/// Programs `services` services through `dataplane` into `node` (named
/// `prefix`): a driver with the pods, their policy and the services (or
/// no service for [`ServiceDataplane::DriverNoServices`]), kube-proxy's
/// tables, or nothing for [`ServiceDataplane::None`]. Returns the running
/// driver, if any, and how long programming took in ms.
pub(super) fn program(
    node: &NetNs,
    prefix: &str,
    dataplane: &ServiceDataplane,
    services: usize,
) -> Result<(Option<DriverThread>, f64), ConformanceError> {
    let started = Instant::now();
    let driver = match dataplane {
        ServiceDataplane::Driver { factory, .. }
        | ServiceDataplane::DriverNoServices { factory, .. } => {
            let driver = DriverThread::start(
                node,
                NodeContext {
                    node: prefix.to_string(),
                },
                Arc::clone(factory),
            )?;
            let mut ops = bench_operations(0);
            let in_sync = ops.pop();
            ops.extend(service_operations(services));
            ops.extend(in_sync);
            driver.apply(ops)?;
            Some(driver)
        }
        ServiceDataplane::KubeProxyIptables { program } => {
            iptables_restore(node, program, &kube_proxy_rules(services))?;
            None
        }
        ServiceDataplane::None => None,
    };
    Ok((driver, started.elapsed().as_secs_f64() * 1e3))
}

/// The namespaces, listener and driver of one measurement; field order
/// is drop order.
struct Bench {
    driver: Option<DriverThread>,
    _sink: ConnectSink,
    client: NetNs,
    _server: NetNs,
    node: NetNs,
}

/// One measurement in fresh namespaces named after
/// `manul_netns::unique_prefix(tag)` (2 characters): `services` services
/// programmed through `dataplane` (none for the ceilings), the
/// reachability check, then `options.connects` timed sequential connects
/// (after `options.warmup`), then as many again from `parallel_clients`
/// clients at once (skipped when it is 0). Everything it created is
/// removed when it returns.
pub fn measure_services(
    tag: &str,
    dataplane: &ServiceDataplane,
    services: usize,
    parallel_clients: usize,
    options: &TrafficOptions,
) -> Result<ServiceConnectSample, ConformanceError> {
    let services = if dataplane.has_services() {
        if services == 0 {
            return Err(ConformanceError::Driver(
                "the number of services must be positive".into(),
            ));
        }
        services
    } else {
        0
    };
    let prefix = manul_netns::unique_prefix(tag);
    let (node, client, server) = build(&prefix)?;
    let sink = ConnectSink::start_with(
        &server,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
        parallel_clients.max(1),
    )?;
    let mut bench = Bench {
        driver: None,
        _sink: sink,
        client,
        _server: server,
        node,
    };
    let (driver, program_ms) = program(&bench.node, &prefix, dataplane, services)?;
    bench.driver = driver;

    let target = if services == 0 {
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT)
    } else {
        tested_service(services)
    };
    let reached = manul_netns::tcp_connect(&bench.client, target, Duration::from_secs(1))
        .map_err(setup("reachability check"))?;
    if !matches!(reached, ProbeOutcome::Connected) {
        return Err(ConformanceError::Driver(format!(
            "{}: {target} is not reached: {reached:?}",
            dataplane.name()
        )));
    }
    let load_average = load_average();
    let mut seq =
        parallel_connect_loop(&bench.client, target, 1, options.connects, options.warmup)?;
    let cycle = LatencyStats::from_samples(&mut seq.cycles, 0);
    let (parallel_connects_per_sec, parallel_connect) = if parallel_clients > 0 {
        let mut par = parallel_connect_loop(
            &bench.client,
            target,
            parallel_clients,
            options.connects,
            options.warmup,
        )?;
        (
            par.connects.len() as f64 / par.took.as_secs_f64().max(1e-9),
            LatencyStats::from_samples(&mut par.connects, par.failures),
        )
    } else {
        (0.0, LatencyStats::default())
    };
    Ok(ServiceConnectSample {
        dataplane: dataplane.name().to_string(),
        services,
        program_ms,
        connects_per_sec: seq.connects.len() as f64 / seq.took.as_secs_f64().max(1e-9),
        connect: LatencyStats::from_samples(&mut seq.connects, seq.failures),
        connects_per_sec_p50_cycle: if cycle.p50_us > 0.0 {
            1e6 / cycle.p50_us
        } else {
            0.0
        },
        cycle,
        parallel_clients,
        parallel_connects_per_sec,
        parallel_connect,
        load_average,
    })
}

/// The medians of one configuration's runs.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectSummary {
    pub dataplane: String,
    pub services: usize,
    pub runs: usize,
    pub connects_per_sec: f64,
    pub connects_per_sec_min: f64,
    pub connects_per_sec_max: f64,
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
    pub cycle_p50_us: f64,
    pub connects_per_sec_p50_cycle: f64,
    pub connects_per_sec_p50_cycle_min: f64,
    pub connects_per_sec_p50_cycle_max: f64,
    pub parallel_clients: usize,
    pub parallel_connects_per_sec: f64,
    pub parallel_connects_per_sec_min: f64,
    pub parallel_connects_per_sec_max: f64,
    pub parallel_connect_p50_us: f64,
    pub program_ms: f64,
    /// The median of the 1-minute load averages of its runs.
    pub load_average_1m: f64,
}

/// Ratios of the medians: each dataplane's most services against its
/// fewest (cost: the inverse of the connect rate, and the connect p50),
/// each dataplane against kube-proxy (the last dataplane with services)
/// at the same number of services, and each configuration against the
/// first ceiling (services 0; how close it comes to the harness's own
/// rate).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectRatio {
    pub dataplane: String,
    pub against: String,
    pub services: usize,
    pub against_services: usize,
    pub connects_per_sec: f64,
    pub connect_p50: f64,
    pub connects_per_sec_p50_cycle: f64,
    /// 0 when the parallel figure was not measured.
    pub parallel_connects_per_sec: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectReport {
    pub samples: Vec<ServiceConnectSample>,
    pub summary: Vec<ServiceConnectSummary>,
    pub ratios: Vec<ServiceConnectRatio>,
}

fn summary_of(d: &str, n: usize, of: &[&ServiceConnectSample]) -> ServiceConnectSummary {
    let col = |f: &dyn Fn(&ServiceConnectSample) -> f64| -> Vec<f64> {
        of.iter().map(|s| f(s)).collect()
    };
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut cps = col(&|s| s.connects_per_sec);
    let mut pcps = col(&|s| s.parallel_connects_per_sec);
    let mut ccps = col(&|s| s.connects_per_sec_p50_cycle);
    ServiceConnectSummary {
        dataplane: d.to_string(),
        services: n,
        runs: of.len(),
        connects_per_sec_min: min(&cps),
        connects_per_sec_max: max(&cps),
        connects_per_sec: median(&mut cps),
        connect_p50_us: median(&mut col(&|s| s.connect.p50_us)),
        connect_p99_us: median(&mut col(&|s| s.connect.p99_us)),
        cycle_p50_us: median(&mut col(&|s| s.cycle.p50_us)),
        connects_per_sec_p50_cycle_min: min(&ccps),
        connects_per_sec_p50_cycle_max: max(&ccps),
        connects_per_sec_p50_cycle: median(&mut ccps),
        parallel_clients: of.iter().map(|s| s.parallel_clients).max().unwrap_or(0),
        parallel_connects_per_sec_min: min(&pcps),
        parallel_connects_per_sec_max: max(&pcps),
        parallel_connects_per_sec: median(&mut pcps),
        parallel_connect_p50_us: median(&mut col(&|s| s.parallel_connect.p50_us)),
        program_ms: median(&mut col(&|s| s.program_ms)),
        load_average_1m: median(&mut col(&|s| s.load_average[0])),
    }
}

/// Medians per configuration, and the ratios.
pub fn summarise_services(samples: Vec<ServiceConnectSample>) -> ServiceConnectReport {
    let summary = summarise_each(&samples, summary_of);
    let ratio = |a: &ServiceConnectSummary, b: &ServiceConnectSummary| ServiceConnectRatio {
        dataplane: a.dataplane.clone(),
        against: b.dataplane.clone(),
        services: a.services,
        against_services: b.services,
        connects_per_sec: a.connects_per_sec / b.connects_per_sec.max(1e-9),
        connect_p50: a.connect_p50_us / b.connect_p50_us.max(1e-9),
        connects_per_sec_p50_cycle: a.connects_per_sec_p50_cycle
            / b.connects_per_sec_p50_cycle.max(1e-9),
        parallel_connects_per_sec: if b.parallel_connects_per_sec > 0.0 {
            a.parallel_connects_per_sec / b.parallel_connects_per_sec
        } else {
            0.0
        },
    };
    let ratios = comparisons(&summary, None)
        .into_iter()
        .map(|(a, b)| ratio(a, b))
        .collect();
    ServiceConnectReport {
        samples,
        summary,
        ratios,
    }
}

impl Configuration for ServiceConnectSample {
    fn dataplane(&self) -> &str {
        &self.dataplane
    }
    fn services(&self) -> usize {
        self.services
    }
}

impl Configuration for ServiceConnectSummary {
    fn dataplane(&self) -> &str {
        &self.dataplane
    }
    fn services(&self) -> usize {
        self.services
    }
}

/// Runs `runs` rounds; each round measures every dataplane with services
/// at every number of services, and every ceiling once, interleaved so
/// that load from elsewhere spreads over all of them. `progress` sees
/// each sample.
pub fn run_service_connect_benchmark(
    tag: &str,
    dataplanes: &[ServiceDataplane],
    service_counts: &[usize],
    runs: usize,
    parallel_clients: usize,
    options: &TrafficOptions,
    progress: &mut dyn FnMut(&ServiceConnectSample),
) -> Result<ServiceConnectReport, ConformanceError> {
    let mut samples = Vec::new();
    for _ in 0..runs.max(1) {
        for d in dataplanes.iter().filter(|d| !d.has_services()) {
            let s = measure_services(tag, d, 0, parallel_clients, options)?;
            progress(&s);
            samples.push(s);
        }
        for &n in service_counts {
            for d in dataplanes.iter().filter(|d| d.has_services()) {
                let s = measure_services(tag, d, n, parallel_clients, options)?;
                progress(&s);
                samples.push(s);
            }
        }
    }
    Ok(summarise_services(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tested_service_goes_to_the_server() {
        let ops = service_operations(10);
        assert_eq!(ops.len(), 10);
        let Operation::ServiceUpdate(svc) = &ops[tested(10)] else {
            panic!("not a service");
        };
        assert_eq!(svc.ports[0].backends.len(), 1);
        assert_eq!(svc.ports[0].backends[0].ip, IpAddr::V4(SERVER_IP));
        let Operation::ServiceUpdate(other) = &ops[0] else {
            panic!("not a service");
        };
        assert_eq!(other.ports[0].backends.len(), BACKENDS);
        let mut null = manul_dataplane_api::NullDriver::new();
        let mut all = bench_operations(0);
        let in_sync = all.pop();
        all.extend(ops);
        all.extend(in_sync);
        manul_dataplane_api::Driver::apply(&mut null, &all).expect("contract");
    }

    #[test]
    fn summary_takes_medians_and_ratios() {
        let sample = |d: &str, n: usize, cps: f64, p50: f64| ServiceConnectSample {
            dataplane: d.into(),
            services: n,
            program_ms: 1.0,
            connects_per_sec: cps,
            connect: LatencyStats {
                samples: 1,
                failures: 0,
                p50_us: p50,
                p90_us: p50,
                p99_us: p50,
                mean_us: p50,
                max_us: p50,
            },
            cycle: LatencyStats::default(),
            connects_per_sec_p50_cycle: cps * 0.9,
            parallel_clients: 2,
            parallel_connects_per_sec: cps * 1.5,
            parallel_connect: LatencyStats::default(),
            load_average: [1.0, 1.0, 1.0],
        };
        let report = summarise_services(vec![
            sample("none", 0, 18000.0, 40.0),
            sample("bpf", 10, 9000.0, 100.0),
            sample("kp", 10, 8000.0, 110.0),
            sample("bpf", 10000, 8800.0, 102.0),
            sample("kp", 10000, 2000.0, 500.0),
            sample("bpf", 10000, 9200.0, 98.0),
            sample("kp", 10000, 2200.0, 450.0),
        ]);
        assert_eq!(report.summary.len(), 5);
        let bpf_many = &report.summary[3];
        assert_eq!(
            (bpf_many.dataplane.as_str(), bpf_many.services),
            ("bpf", 10000)
        );
        assert_eq!(bpf_many.connects_per_sec, 9000.0);
        assert_eq!(bpf_many.connects_per_sec_min, 8800.0);
        let vs_kp = report
            .ratios
            .iter()
            .find(|r| r.dataplane == "bpf" && r.against == "kp" && r.services == 10000)
            .unwrap();
        assert!((vs_kp.connects_per_sec - 9000.0 / 2100.0).abs() < 1e-9);
        assert!((vs_kp.parallel_connects_per_sec - 9000.0 / 2100.0).abs() < 1e-9);
        assert_eq!(bpf_many.parallel_connects_per_sec, 13500.0);
        assert_eq!(bpf_many.connects_per_sec_p50_cycle, 8100.0);
        assert_eq!(bpf_many.connects_per_sec_p50_cycle_max, 9200.0 * 0.9);
        // The ceiling is no dataplane of the comparisons, only their bound.
        assert!(
            !report
                .ratios
                .iter()
                .any(|r| r.dataplane == "none" || (r.against == "none" && r.services == 0))
        );
        let of_ceiling = report
            .ratios
            .iter()
            .find(|r| r.dataplane == "bpf" && r.against == "none" && r.services == 10000)
            .unwrap();
        assert!((of_ceiling.connects_per_sec - 0.5).abs() < 1e-9);
        let flat = report
            .ratios
            .iter()
            .find(|r| r.dataplane == "bpf" && r.against == "bpf")
            .unwrap();
        assert!((flat.connect_p50 - 1.0).abs() < 1e-9);
    }
}
