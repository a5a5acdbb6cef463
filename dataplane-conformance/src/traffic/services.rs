//! New connections through a ClusterIP: the cost per connection of a
//! dataplane's service translation against the number of services, with
//! kube-proxy's iptables mode for the same services as the alternative.
//!
//! One measurement builds the node and both pods as in [`super::measure`],
//! programs `services` ClusterIP services of one TCP port (10 backends
//! each at addresses no pod has, except the service under test, the one
//! in the middle of the list, whose one backend is the server pod's
//! connect listener), checks that a connection to the service's cluster
//! IP reaches the server, then times sequential new connections to it
//! from the client pod (each closed with an RST, so every one is a new
//! flow: a fresh translation).
//!
//! The alternative, [`ServiceDataplane::KubeProxyIptables`], programs no
//! Manul driver (pods plumbed as for the baseline: plain forwarding) and
//! loads the nat table kube-proxy's iptables mode writes for the same
//! services into the node's namespace with `iptables-legacy-restore`
//! ([`kube_proxy_rules`]): `KUBE-SERVICES` with one rule per service
//! port, a `KUBE-SVC-` chain per service port choosing a backend with
//! `statistic --mode random` rules, and a `KUBE-SEP-` chain per backend.
//! The node's namespace is where kube-proxy's rules act on pod traffic (in
//! prerouting, as the node routes between its pods).

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manul_dataplane_api::{Backend, Operation, Service, ServicePort};
use manul_netns::{NetNs, ProbeOutcome};
use serde::Serialize;

use super::load::{ConnectSink, connect_loop};
use super::measure::build;
use super::{CONNECT_PORT, LatencyStats, SERVER_IP, TrafficOptions, bench_operations, setup};
use crate::{ConformanceError, DriverThread, Factory, NodeContext};

/// The services' port.
pub const SERVICE_PORT: u16 = 80;
/// Backends of every service but the one under test.
pub const BACKENDS: usize = 10;
/// The cluster CIDR kube-proxy is told (`--cluster-cidr`): traffic to a
/// service from outside it is masqueraded.
pub const CLUSTER_CIDR: &str = "10.64.0.0/10";

/// What translates the services.
#[derive(Clone)]
pub enum ServiceDataplane {
    /// A Manul driver, programmed with the services and the pods.
    Driver { name: String, factory: Arc<Factory> },
    /// kube-proxy's iptables mode, loaded with `program` (an
    /// `iptables-restore`).
    KubeProxyIptables { program: String },
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
            ServiceDataplane::KubeProxyIptables { .. } => "kube-proxy-iptables",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectSample {
    pub dataplane: String,
    pub services: usize,
    /// Programming the services (and, for a driver, the pods) in ms.
    pub program_ms: f64,
    pub connects_per_sec: f64,
    pub connect: LatencyStats,
}

fn cluster_ip(i: usize) -> Ipv4Addr {
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

/// The backends of service `i`: `(address, port)`.
fn backends(i: usize, services: usize) -> Vec<(Ipv4Addr, u16)> {
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

fn chain_hash(kind: &str, text: &str) -> String {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    format!("{kind}-{:016X}", h.finish())
}

/// kube-proxy's iptables-mode nat table for the services, as
/// `iptables-restore` input (the shape of kube-proxy 1.3x's
/// `proxier.go` for ClusterIP services, without the filter table's
/// rules, which these services do not use).
pub fn kube_proxy_rules(services: usize) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for c in [
        "KUBE-SERVICES",
        "KUBE-MARK-MASQ",
        "KUBE-POSTROUTING",
        "KUBE-NODEPORTS",
    ] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    for i in 0..services {
        let name = format!("bench/svc-{i}:http");
        let svc = chain_hash("KUBE-SVC", &name);
        let vip = cluster_ip(i);
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {SERVICE_PORT} -j {svc}"
        );
        let _ = writeln!(
            rules,
            "-A {svc} ! -s {CLUSTER_CIDR} -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ"
        );
        let eps = backends(i, services);
        let n = eps.len();
        for (b, (ip, port)) in eps.into_iter().enumerate() {
            let sep = chain_hash("KUBE-SEP", &format!("{name}/{ip}:{port}"));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            if b + 1 < n {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ip}:{port}\" -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / (n - b) as f64
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ip}:{port}\" -j {sep}"
                );
            }
            let _ = writeln!(
                rules,
                "-A {sep} -s {ip}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ip}:{port}"
            );
        }
    }
    let fixed = [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    ];
    let mut out = String::from("*nat\n");
    out.push_str(&chains);
    out.push_str(&rules);
    for r in fixed {
        out.push_str(r);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

fn iptables_restore(node: &NetNs, program: &str, input: &str) -> Result<(), ConformanceError> {
    let output = node
        .run(|| -> std::io::Result<std::process::Output> {
            let mut child = Command::new(program)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(input.as_bytes())?;
            }
            child.wait_with_output()
        })
        .map_err(setup("entering the node namespace"))?
        .map_err(setup("running iptables-restore"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ConformanceError::Driver(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .chars()
                .take(2000)
                .collect::<String>()
        )))
    }
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
/// programmed through `dataplane`, the reachability check, then
/// `options.connects` timed connects (after `options.warmup`). Everything
/// it created is removed when it returns.
pub fn measure_services(
    tag: &str,
    dataplane: &ServiceDataplane,
    services: usize,
    options: &TrafficOptions,
) -> Result<ServiceConnectSample, ConformanceError> {
    if services == 0 {
        return Err(ConformanceError::Driver(
            "the number of services must be positive".into(),
        ));
    }
    let prefix = manul_netns::unique_prefix(tag);
    let (node, client, server) = build(&prefix)?;
    let sink = ConnectSink::start(
        &server,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
    )?;
    let mut bench = Bench {
        driver: None,
        _sink: sink,
        client,
        _server: server,
        node,
    };
    let started = Instant::now();
    match dataplane {
        ServiceDataplane::Driver { factory, .. } => {
            let driver = DriverThread::start(
                &bench.node,
                NodeContext {
                    node: prefix.clone(),
                },
                Arc::clone(factory),
            )?;
            let mut ops = bench_operations(0);
            let in_sync = ops.pop();
            ops.extend(service_operations(services));
            ops.extend(in_sync);
            driver.apply(ops)?;
            bench.driver = Some(driver);
        }
        ServiceDataplane::KubeProxyIptables { program } => {
            iptables_restore(&bench.node, program, &kube_proxy_rules(services))?;
        }
    }
    let program_ms = started.elapsed().as_secs_f64() * 1e3;

    let vip = SocketAddr::new(IpAddr::V4(cluster_ip(tested(services))), SERVICE_PORT);
    let reached = manul_netns::tcp_connect(&bench.client, vip, Duration::from_secs(1))
        .map_err(setup("reachability check"))?;
    if !matches!(reached, ProbeOutcome::Connected) {
        return Err(ConformanceError::Driver(format!(
            "{}: the service's cluster IP {vip} is not reached: {reached:?}",
            dataplane.name()
        )));
    }
    let (mut connects, failures, took) =
        connect_loop(&bench.client, vip, options.connects, options.warmup)?;
    Ok(ServiceConnectSample {
        dataplane: dataplane.name().to_string(),
        services,
        program_ms,
        connects_per_sec: connects.len() as f64 / took.as_secs_f64().max(1e-9),
        connect: LatencyStats::from_samples(&mut connects, failures),
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
    pub program_ms: f64,
}

/// Ratios: each dataplane's most services against its fewest (cost: the
/// inverse of the connect rate, and the connect p50), and each dataplane
/// against the last one (kube-proxy) at the same number of services.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectRatio {
    pub dataplane: String,
    pub against: String,
    pub services: usize,
    pub against_services: usize,
    pub connects_per_sec: f64,
    pub connect_p50: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceConnectReport {
    pub samples: Vec<ServiceConnectSample>,
    pub summary: Vec<ServiceConnectSummary>,
    pub ratios: Vec<ServiceConnectRatio>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians per configuration, and the ratios.
pub fn summarise_services(samples: Vec<ServiceConnectSample>) -> ServiceConnectReport {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for s in &samples {
        let k = (s.dataplane.clone(), s.services);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let summary: Vec<ServiceConnectSummary> = keys
        .iter()
        .map(|(d, n)| {
            let of: Vec<&ServiceConnectSample> = samples
                .iter()
                .filter(|s| &s.dataplane == d && s.services == *n)
                .collect();
            let mut cps: Vec<f64> = of.iter().map(|s| s.connects_per_sec).collect();
            let mut p50: Vec<f64> = of.iter().map(|s| s.connect.p50_us).collect();
            let mut p99: Vec<f64> = of.iter().map(|s| s.connect.p99_us).collect();
            let mut prog: Vec<f64> = of.iter().map(|s| s.program_ms).collect();
            ServiceConnectSummary {
                dataplane: d.clone(),
                services: *n,
                runs: of.len(),
                connects_per_sec_min: cps.iter().copied().fold(f64::INFINITY, f64::min),
                connects_per_sec_max: cps.iter().copied().fold(0.0, f64::max),
                connects_per_sec: median(&mut cps),
                connect_p50_us: median(&mut p50),
                connect_p99_us: median(&mut p99),
                program_ms: median(&mut prog),
            }
        })
        .collect();
    let mut ratios = Vec::new();
    let find = |d: &str, n: usize| summary.iter().find(|s| s.dataplane == d && s.services == n);
    let mut dataplanes: Vec<&str> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for (d, n) in &keys {
        if !dataplanes.contains(&d.as_str()) {
            dataplanes.push(d);
        }
        if !counts.contains(n) {
            counts.push(*n);
        }
    }
    counts.sort_unstable();
    let ratio = |a: &ServiceConnectSummary, b: &ServiceConnectSummary| ServiceConnectRatio {
        dataplane: a.dataplane.clone(),
        against: b.dataplane.clone(),
        services: a.services,
        against_services: b.services,
        connects_per_sec: a.connects_per_sec / b.connects_per_sec.max(1e-9),
        connect_p50: a.connect_p50_us / b.connect_p50_us.max(1e-9),
    };
    if let (Some(&few), Some(&many)) = (counts.first(), counts.last())
        && few != many
    {
        for d in &dataplanes {
            if let (Some(a), Some(b)) = (find(d, many), find(d, few)) {
                ratios.push(ratio(a, b));
            }
        }
    }
    if let Some(baseline) = dataplanes.last() {
        for n in &counts {
            for d in &dataplanes[..dataplanes.len() - 1] {
                if let (Some(a), Some(b)) = (find(d, *n), find(baseline, *n)) {
                    ratios.push(ratio(a, b));
                }
            }
        }
    }
    ServiceConnectReport {
        samples,
        summary,
        ratios,
    }
}

/// Runs `runs` rounds; each round measures every dataplane at every
/// number of services, interleaved so that load from elsewhere spreads
/// over all of them. `progress` sees each sample.
pub fn run_service_connect_benchmark(
    tag: &str,
    dataplanes: &[ServiceDataplane],
    service_counts: &[usize],
    runs: usize,
    options: &TrafficOptions,
    progress: &mut dyn FnMut(&ServiceConnectSample),
) -> Result<ServiceConnectReport, ConformanceError> {
    let mut samples = Vec::new();
    for _ in 0..runs.max(1) {
        for &n in service_counts {
            for d in dataplanes {
                let s = measure_services(tag, d, n, options)?;
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
    fn kube_proxy_rules_have_its_shape() {
        let rules = kube_proxy_rules(3);
        assert!(rules.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"));
        assert!(rules.ends_with("COMMIT\n"));
        // One KUBE-SERVICES rule per service, ten backends for the others,
        // one for the tested one (the middle one).
        assert_eq!(
            rules
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES -d "))
                .count(),
            3
        );
        assert_eq!(rules.lines().filter(|l| l.contains("-j DNAT")).count(), 21);
        assert!(rules.contains(&format!("--to-destination {SERVER_IP}:{CONNECT_PORT}")));
        assert!(
            rules.contains("-m statistic --mode random --probability 0.10000000000 -j KUBE-SEP-")
        );
        assert!(
            rules.contains("-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-")
        );
        // Chains are declared before use, each once.
        let declared: Vec<&str> = rules.lines().filter(|l| l.starts_with(':')).collect();
        let mut unique = declared.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(declared.len(), unique.len());
        assert_eq!(declared.len(), 4 + 3 + 21);
    }

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
        };
        let report = summarise_services(vec![
            sample("bpf", 10, 9000.0, 100.0),
            sample("kp", 10, 8000.0, 110.0),
            sample("bpf", 10000, 8800.0, 102.0),
            sample("kp", 10000, 2000.0, 500.0),
            sample("bpf", 10000, 9200.0, 98.0),
            sample("kp", 10000, 2200.0, 450.0),
        ]);
        assert_eq!(report.summary.len(), 4);
        let bpf_many = &report.summary[2];
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
        let flat = report
            .ratios
            .iter()
            .find(|r| r.dataplane == "bpf" && r.against == "bpf")
            .unwrap();
        assert!((flat.connect_p50 - 1.0).abs() < 1e-9);
    }
}
