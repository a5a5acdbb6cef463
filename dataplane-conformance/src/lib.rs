//! The behaviour matrix every Manul kernel dataplane must pass, written
//! once and run against each driver (`dataplane-iptables`,
//! `dataplane-bpf`).
//!
//! It builds a node network namespace with pods plumbed into it the way the
//! CNI plugin does (veth pairs, `/32` routes, proxy ARP), runs small TCP,
//! UDP and ICMP servers in every pod, and drives the driver under test with
//! the operations Felix's calculation graph computes from real resources.
//! Then it sends real packets and compares what got through with the
//! expected matrix ([`cases`]) *and* with the reference evaluator (the null
//! driver's verdict), so the expectations themselves are checked.
//!
//! Beyond the per-rule cases it checks source spoofing ([`spoof`]: a pod
//! sending as another pod is not judged as it), connection tracking (an established
//! connection survives a policy that denies new ones), a driver restart
//! with no dropped packet on an open connection, and fail-closed handling
//! of interfaces the driver was never told about. (That a failed batch is
//! resynced by Felix's agent loop, failing closed meanwhile, is checked in
//! `felix/tests/recovery/` with these parts.)
//!
//! Service (kube-proxy replacement) cases live in [`services`]: one call,
//! [`services::run_service_cases`], runs them against any driver.
//!
//! It refuses to touch anything outside the namespaces it creates; they are
//! removed when the run ends, also on failure. Running it needs root.

pub mod cases;
pub mod cluster;
pub mod driver_thread;
pub mod services;
pub mod spoof;
pub mod topology;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use manul_dataplane_api::Packet;
use manul_model::resource::{Resource, ResourceKey};

pub use driver_thread::{DriverThread, Factory, NodeContext};
use topology::{Pod, Probe, Topology};

/// Why the suite failed.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("setting up the test network: {0}")]
    Setup(String),
    #[error("the driver failed: {0}")]
    Driver(String),
    #[error("{} expectation(s) failed:\n{}", .0.len(), .0.join("\n"))]
    Mismatch(Vec<String>),
}

/// One probe's result.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: String,
    pub from: String,
    pub to: String,
    pub probe: String,
    pub expected: bool,
    pub actual: bool,
    /// The reference evaluator's verdict (`None` where it does not apply).
    pub oracle: Option<bool>,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// The node name the driver was given (its per-node state is named
    /// after it).
    pub node: String,
    pub rows: Vec<Row>,
}

impl Report {
    /// A readable table of every probe.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let yn = |b: bool| if b { "allow" } else { "deny" };
        for r in &self.rows {
            out.push_str(&format!(
                "{:<55} {:<20} -> {:<20} {:<10} expected {:<5} got {:<5}{}\n",
                r.case,
                r.from,
                r.to,
                r.probe,
                yn(r.expected),
                yn(r.actual),
                if r.expected == r.actual {
                    ""
                } else {
                    "  MISMATCH"
                }
            ));
        }
        out
    }
}

/// Whether the suite can run here: true as root; false (skip, with a
/// notice) when not root outside CI. Without root under `CI=true` it
/// panics: kernel tests fail, not skip, in CI.
pub fn privileges() -> Result<bool, ConformanceError> {
    Ok(manul_netns::testing::have_root("the behaviour matrix"))
}

fn packet(from: &Pod, to: &Pod, probe: Probe) -> Packet {
    let (src, dst) = (IpAddr::V4(from.ip), IpAddr::V4(to.ip));
    match probe {
        Probe::Tcp(port) => Packet::tcp(src, 40000, dst, port),
        Probe::Udp => Packet::udp(src, 40000, dst, topology::UDP_PORT),
        Probe::Ping => Packet::icmp(src, dst, 8, 0),
    }
}

/// A WorkloadEndpoint `NAMESPACE/NAME` on `node` as YAML, plumbed the way
/// the topology plumbs its pods.
pub fn workload_yaml(
    key: &str,
    ip: [u8; 4],
    labels: &str,
    profiles: &str,
    ports: &str,
    node: &str,
) -> String {
    let (ns, name) = key.split_once('/').unwrap_or(("default", key));
    let iface = manul_model::names::workload_interface_name(ns, name);
    let ip = Ipv4Addr::from(ip);
    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!("\n  ports: {ports}")
    };
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  node: {node}\n  orchestrator: k8s\n  pod: {name}\n  endpoint: eth0\n  interfaceName: {iface}\n  ipNetworks: [{ip}/32]\n  profiles: {profiles}{ports}\n---\n"
    )
}

/// A running harness: topology, cluster model and driver.
struct Harness {
    // Field order is drop order: the driver stops before the namespaces go.
    driver: DriverThread,
    cluster: cluster::Cluster,
    policies: BTreeMap<ResourceKey, Resource>,
    topo: Topology,
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl Harness {
    fn set_policies(&mut self, yaml: &str) -> Result<(), ConformanceError> {
        let wanted = cluster::parse(yaml)?;
        let ops = self.cluster.set(&mut self.policies, wanted, false)?;
        self.driver.apply(ops)
    }

    fn check(&mut self, case: &str, expect: &[cases::Expect]) -> Result<(), ConformanceError> {
        let mut jobs = Vec::new();
        for e in expect {
            let from = self.topo.pod(e.from)?;
            let to = self.topo.pod(e.to)?;
            let oracle = if e.from == cases::GHOST || e.to == cases::GHOST {
                None
            } else {
                Some(self.cluster.oracle_allows(&packet(from, to, e.probe)))
            };
            jobs.push((e, from, to, oracle));
        }
        let results: Vec<Result<bool, ConformanceError>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(e, from, to, _)| s.spawn(move || topology::probe(from, to, e.probe)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(ConformanceError::Setup("a probe panicked".into())))
                })
                .collect()
        });
        for ((e, _, _, oracle), actual) in jobs.into_iter().zip(results) {
            let actual = actual?;
            let row = Row {
                case: case.to_string(),
                from: e.from.to_string(),
                to: e.to.to_string(),
                probe: e.probe.to_string(),
                expected: e.allowed,
                actual,
                oracle,
            };
            if actual != e.allowed {
                self.failures.push(format!(
                    "[{case}] {} -> {} {}: expected {}, the dataplane {}",
                    e.from,
                    e.to,
                    e.probe,
                    if e.allowed { "allow" } else { "deny" },
                    if actual { "allowed it" } else { "dropped it" }
                ));
            }
            if oracle.is_some_and(|o| o != e.allowed) {
                self.failures.push(format!(
                    "[{case}] {} -> {} {}: the expectation disagrees with the reference evaluator",
                    e.from, e.to, e.probe
                ));
            }
            self.rows.push(row);
        }
        Ok(())
    }

    fn open(&self, from: &str, to: &str) -> Result<manul_netns::HeldConnection, ConformanceError> {
        let from = self.topo.pod(from)?;
        let to = self.topo.pod(to)?;
        manul_netns::open_connection(
            &from.netns,
            SocketAddr::new(IpAddr::V4(to.ip), 8080),
            Duration::from_secs(2),
        )
        .map_err(|e| {
            ConformanceError::Setup(format!(
                "opening a connection {from:?} -> {to:?}: {e} ({e:?})"
            ))
        })
    }

    fn expect_true(&mut self, what: &str, ok: bool) {
        if !ok {
            self.failures.push(what.to_string());
        }
    }
}

/// Runs the whole suite against the driver `factory` builds. `tag` goes
/// into the namespace names.
pub fn run_behaviour_matrix(tag: &str, factory: Arc<Factory>) -> Result<Report, ConformanceError> {
    let prefix = manul_netns::unique_prefix(tag);
    let mut topo = Topology::new(&prefix)?;
    let node = prefix.clone();
    for (key, ip, ..) in cases::PODS {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        topo.add_pod(ns, name, Ipv4Addr::from(*ip))?;
    }
    let (gns, gname) = cases::GHOST
        .split_once('/')
        .unwrap_or(("default", cases::GHOST));
    topo.add_pod(gns, gname, Ipv4Addr::from(cases::GHOST_IP))?;

    let driver = DriverThread::start(&topo.node, NodeContext { node: node.clone() }, factory)?;
    let mut cluster = cluster::Cluster::new(&node);
    let mut base_yaml = cases::BASE.to_string();
    base_yaml.push_str("\n---\n");
    for (key, ip, labels, profiles, ports) in cases::PODS {
        base_yaml.push_str(&workload_yaml(key, *ip, labels, profiles, ports, &node));
    }
    let mut base = BTreeMap::new();
    let ops = cluster.set(&mut base, cluster::parse(&base_yaml)?, true)?;
    driver.apply(ops)?;
    let mut h = Harness {
        driver,
        cluster,
        policies: BTreeMap::new(),
        topo,
        rows: Vec::new(),
        failures: Vec::new(),
    };

    for case in cases::cases() {
        h.set_policies(case.policies)?;
        h.check(case.name, &case.expect)?;
    }

    // Source spoofing: a pod's packets carrying another pod's address are
    // dropped at its interface, whatever the destination's policy says.
    h.set_policies(spoof::FRONTEND_ONLY)?;
    let spoofed = spoof::check(&h.topo)?;
    h.failures.extend(spoofed);

    // Connection tracking: an open connection outlives a policy that
    // denies new ones; new ones are judged by the new policy.
    h.set_policies(cases::FRONTEND_TO_API)?;
    let mut held = h.open("production/frontend", "production/api")?;
    let before = held.roundtrip(Duration::from_secs(1)).unwrap_or(false);
    h.expect_true(
        "[conntrack] a connection opened under an allow does not pass data",
        before,
    );
    h.set_policies(cases::ISOLATE_API)?;
    let after = held.roundtrip(Duration::from_secs(1)).unwrap_or(false);
    h.expect_true(
        "[conntrack] an established connection was cut by a policy change",
        after,
    );
    h.check(
        "conntrack: new connections see the new policy",
        &[cases::Expect {
            from: "production/frontend",
            to: "production/api",
            probe: Probe::Tcp(8080),
            allowed: false,
        }],
    )?;
    drop(held);

    // Restart: an open connection keeps passing data while the driver is
    // replaced and resynced, and the new driver enforces the same policy.
    h.set_policies(cases::FRONTEND_TO_API)?;
    let held = h.open("production/frontend", "production/api")?;
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (stop, lost, rounds) = (stop.clone(), lost.clone(), rounds.clone());
        let mut held = held;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !held.roundtrip(Duration::from_millis(500)).unwrap_or(false) {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let restarted = h.driver.restart();
    let resync = restarted.and_then(|()| {
        let ops = h.cluster.resync()?;
        h.driver.apply(ops)
    });
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    resync?;
    let (lost, rounds) = (lost.load(Ordering::Relaxed), rounds.load(Ordering::Relaxed));
    h.expect_true(
        &format!("[restart] {lost} of {rounds} round trips on an open connection failed during the restart"),
        lost == 0 && rounds > 0,
    );
    h.check(
        "after a restart",
        &[
            cases::Expect {
                from: "production/frontend",
                to: "production/api",
                probe: Probe::Tcp(8080),
                allowed: true,
            },
            cases::Expect {
                from: "production/other",
                to: "production/api",
                probe: Probe::Tcp(8080),
                allowed: false,
            },
            cases::Expect {
                from: "production/frontend",
                to: cases::GHOST,
                probe: Probe::Tcp(8080),
                allowed: false,
            },
        ],
    )?;

    let report = Report {
        node,
        rows: std::mem::take(&mut h.rows),
    };
    if h.failures.is_empty() {
        Ok(report)
    } else {
        eprintln!("{}", report.table());
        Err(ConformanceError::Mismatch(std::mem::take(&mut h.failures)))
    }
}
