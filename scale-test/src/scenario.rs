//! Reachability scenarios: namespaces, pods with labels and ports, the
//! resources to apply, and the expected results — a list of probes or a
//! full matrix per protocol and port. [`run`] builds them on a local
//! cluster and compares what really gets through with what is expected.
//!
//! ```yaml
//! name: deny-all-ingress
//! nodes: 2                        # optional, default 2
//! namespaces:
//!   - {name: production, labels: {team: shop}}
//! pods:
//!   - {name: production/api, labels: {app: api}, tcp: [8080], udp: [53], node: 1,
//!      service_account: api-sa}      # optional: the pod's serviceAccountName
//! services:                       # optional: a Service and the EndpointSlice
//!   - name: production/api        # the endpoint controller would write: the
//!     selector: {app: api}        # addresses of the pods it selects
//!     ports: [{name: http, protocol: tcp, port: 8080}]
//! resources: |
//!   apiVersion: networking.k8s.io/v1
//!   kind: NetworkPolicy
//!   ...
//! probes:                         # and/or
//!   - {from: production/frontend, to: production/api, protocol: tcp, port: 8080, expect: allow}
//! matrices:
//!   - protocol: tcp               # tcp, udp or icmp
//!     port: 8080
//!     expect:                     # every pair of different pods: FROM -> TO
//!       production/frontend: {production/api: allow}
//!       production/api: {production/frontend: deny}
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// `NAMESPACE/NAME`.
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
    /// Node index (0-based); default: round-robin.
    #[serde(default)]
    pub node: Option<usize>,
    /// The pod's `serviceAccountName`.
    #[serde(default)]
    pub service_account: Option<String>,
}

/// A Service port, as an EndpointSlice lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A Kubernetes Service selecting pods of its namespace by labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `NAMESPACE/NAME`.
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

/// A probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

/// allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    #[serde(default)]
    pub port: u16,
    pub expect: Verdict,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub protocol: Protocol,
    #[serde(default)]
    pub port: u16,
    pub expect: BTreeMap<String, BTreeMap<String, Verdict>>,
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "two")]
    pub nodes: usize,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub resources: String,
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    #[serde(default)]
    pub matrices: Vec<Matrix>,
}

fn two() -> usize {
    2
}

impl Scenario {
    /// Parses and checks a scenario: pods named `NS/NAME` and unique,
    /// probes and matrices naming known pods, every matrix complete, ports
    /// given for TCP and UDP and served by the destination pod, resources
    /// that load.
    pub fn parse(text: &str) -> Result<Scenario> {
        let sc: Scenario = serde_yaml_ng::from_str(text).context("not a scenario")?;
        if sc.nodes == 0 || sc.nodes > 20 {
            bail!("nodes: {} is not in 1..=20", sc.nodes);
        }
        let mut pods = BTreeMap::new();
        for p in &sc.pods {
            if p.name
                .split_once('/')
                .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
            {
                bail!("pod {:?}: the name must be NAMESPACE/NAME", p.name);
            }
            if p.node.is_some_and(|n| n >= sc.nodes) {
                bail!(
                    "pod {}: node {} does not exist (nodes: {})",
                    p.name,
                    p.node.unwrap_or(0),
                    sc.nodes
                );
            }
            if pods.insert(p.name.clone(), p).is_some() {
                bail!("pod {} is listed twice", p.name);
            }
        }
        for s in &sc.services {
            if s.name
                .split_once('/')
                .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
            {
                bail!("service {:?}: the name must be NAMESPACE/NAME", s.name);
            }
            if let Some(p) = s.ports.iter().find(|p| p.protocol == Protocol::Icmp) {
                bail!("service {}: port {:?} must be TCP or UDP", s.name, p.name);
            }
        }
        if sc.probes.is_empty() && sc.matrices.is_empty() {
            bail!("a scenario needs probes or matrices");
        }
        let check =
            |from: &str, to: &str, protocol: Protocol, port: u16, what: &str| -> Result<()> {
                if !pods.contains_key(from) {
                    bail!("{what}: unknown pod {from}");
                }
                let Some(dst) = pods.get(to) else {
                    bail!("{what}: unknown pod {to}")
                };
                let served = match protocol {
                    Protocol::Tcp => dst.tcp.contains(&port),
                    Protocol::Udp => dst.udp.contains(&port),
                    Protocol::Icmp => true,
                };
                if !served {
                    bail!("{what}: {to} does not listen on {protocol:?} port {port}");
                }
                Ok(())
            };
        for (i, p) in sc.probes.iter().enumerate() {
            check(&p.from, &p.to, p.protocol, p.port, &format!("probes[{i}]"))?;
        }
        for (i, m) in sc.matrices.iter().enumerate() {
            for from in pods.keys() {
                for to in pods.keys().filter(|t| *t != from) {
                    if m.expect.get(from).and_then(|r| r.get(to)).is_none() {
                        bail!(
                            "matrices[{i}]: no expectation for {from} -> {to} (a matrix lists every pair)"
                        );
                    }
                    check(from, to, m.protocol, m.port, &format!("matrices[{i}]"))?;
                }
            }
            for (from, row) in &m.expect {
                for to in row.keys() {
                    if !pods.contains_key(from) || !pods.contains_key(to) || from == to {
                        bail!(
                            "matrices[{i}]: {from} -> {to} is not a pair of different pods of the scenario"
                        );
                    }
                }
            }
        }
        manul_model::load::load("resources", sc.resources.as_bytes())
            .into_result()
            .map_err(|errors| {
                anyhow::anyhow!(
                    "resources: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        Ok(sc)
    }

    /// Every check, in order: (from, to, protocol, port, expected).
    pub fn checks(&self) -> Vec<(String, String, Protocol, u16, bool)> {
        let mut out: Vec<_> = self
            .probes
            .iter()
            .map(|p| {
                (
                    p.from.clone(),
                    p.to.clone(),
                    p.protocol,
                    p.port,
                    p.expect == Verdict::Allow,
                )
            })
            .collect();
        for m in &self.matrices {
            for (from, row) in &m.expect {
                for (to, v) in row {
                    out.push((
                        from.clone(),
                        to.clone(),
                        m.protocol,
                        m.port,
                        *v == Verdict::Allow,
                    ));
                }
            }
        }
        out
    }
}

/// One result: (from, to, protocol, port, expected, actual).
pub type ResultRow = (String, String, Protocol, u16, bool, bool);

/// What a run saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub results: Vec<ResultRow>,
}

impl Outcome {
    pub fn matches(&self) -> bool {
        self.results.iter().all(|r| r.4 == r.5)
    }

    /// The expected and actual results, per protocol and port as matrices.
    pub fn render(&self) -> String {
        let mut out = format!("scenario {}\n", self.name);
        let yn = |b: bool| if b { "allow" } else { "deny" };
        let mut groups: BTreeMap<(Protocol, u16), Vec<&ResultRow>> = BTreeMap::new();
        for r in &self.results {
            groups.entry((r.2, r.3)).or_default().push(r);
        }
        for ((proto, port), rows) in groups {
            let _ = writeln!(out, "\n{proto:?} port {port}: expected / actual");
            let mut pods: Vec<&String> = rows.iter().flat_map(|r| [&r.0, &r.1]).collect();
            pods.sort();
            pods.dedup();
            let _ = write!(out, "{:>24}", "");
            for p in &pods {
                let _ = write!(out, " {:>22}", p);
            }
            out.push('\n');
            for from in &pods {
                let _ = write!(out, "{from:>24}");
                for to in &pods {
                    let cell = rows.iter().find(|r| &&r.0 == from && &&r.1 == to).map_or(
                        "-".to_string(),
                        |r| {
                            let mark = if r.4 == r.5 { "" } else { " !" };
                            format!("{}/{}{mark}", yn(r.4), yn(r.5))
                        },
                    );
                    let _ = write!(out, " {cell:>22}");
                }
                out.push('\n');
            }
        }
        let bad = self.results.iter().filter(|r| r.4 != r.5).count();
        let _ = writeln!(
            out,
            "\n{} of {} results as expected{}",
            self.results.len() - bad,
            self.results.len(),
            if bad == 0 { "" } else { "; ! marks a mismatch" }
        );
        out
    }
}

/// Builds the scenario on a fresh local cluster and probes it.
pub fn run(
    name: &str,
    sc: &Scenario,
    dataplane: Dataplane,
    interrupted: &AtomicBool,
) -> Result<Outcome> {
    let mut c = LocalCluster::up(ClusterConfig {
        name: name.into(),
        nodes: sc.nodes,
        typha_replicas: 1,
        dataplane,
        policy_setup_timeout: Duration::from_secs(10),
    })?;
    for ns in &sc.namespaces {
        c.declare_namespace(&ns.name, &ns.labels)?;
    }
    for (i, p) in sc.pods.iter().enumerate() {
        let (ns, name) = p.name.split_once('/').unwrap_or(("default", &p.name));
        c.add_pod(PodSpec {
            namespace: ns.into(),
            name: name.into(),
            labels: p.labels.clone(),
            node: p.node.unwrap_or(i % sc.nodes),
            tcp_ports: p.tcp.iter().map(|&port| (port, None)).collect(),
            udp_ports: p.udp.clone(),
            service_account: p.service_account.clone(),
        })?;
    }
    let mut endpoints = Vec::new();
    for s in &sc.services {
        endpoints.extend(service_resources(s, &c)?);
    }
    if !endpoints.is_empty() {
        c.apply(endpoints)?;
    }
    let revision = c.apply_yaml(&sc.resources)?;
    // Felix reports programmed endpoints; policies have no such report, so
    // wait until every node has seen the write (its status files carry the
    // revision they reflect) by re-adding nothing and polling briefly.
    settle(&c, revision)?;
    let mut results = Vec::new();
    for (from, to, protocol, port, expected) in sc.checks() {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let src = c.pod(&from)?;
        let dst = c.pod(&to)?;
        let timeout = Duration::from_millis(300);
        let outcome = match protocol {
            Protocol::Tcp => manul_netns::tcp_connect(
                &src.netns,
                SocketAddr::new(IpAddr::V4(dst.ip), port),
                timeout,
            )?,
            Protocol::Udp => manul_netns::udp_probe(
                &src.netns,
                SocketAddr::new(IpAddr::V4(dst.ip), port),
                timeout,
            )?,
            Protocol::Icmp => manul_netns::ping(&src.netns, IpAddr::V4(dst.ip), timeout)?,
        };
        results.push((from, to, protocol, port, expected, outcome.reached()));
    }
    drop(c);
    Ok(Outcome {
        name: sc.name.clone(),
        results,
    })
}

/// A headless Service and the EndpointSlice the endpoint controller would
/// write for it: the addresses of the pods of its namespace whose labels
/// it selects, with its ports.
fn service_resources(s: &ServiceSpec, c: &LocalCluster) -> Result<Vec<manul_model::Resource>> {
    use k8s_openapi::api::core::v1::{Service, ServiceSpec as K8sServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let (ns, name) = s.name.split_once('/').unwrap_or(("default", &s.name));
    let protocol = |p: Protocol| match p {
        Protocol::Udp => "UDP",
        _ => "TCP",
    };
    let mut addresses = Vec::new();
    for pod in c.pods() {
        let selected = pod.spec.namespace == ns
            && s.selector
                .iter()
                .all(|(k, v)| pod.spec.labels.get(k) == Some(v));
        if selected {
            addresses.push(pod.ip.to_string());
        }
    }
    let meta = |n: String, labels: Option<BTreeMap<String, String>>| ObjectMeta {
        name: Some(n),
        namespace: Some(ns.to_string()),
        labels,
        ..ObjectMeta::default()
    };
    let service = Service {
        metadata: meta(name.to_string(), None),
        spec: Some(K8sServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(s.selector.clone()),
            ports: Some(
                s.ports
                    .iter()
                    .map(|p| k8s_openapi::api::core::v1::ServicePort {
                        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                        protocol: Some(protocol(p.protocol).into()),
                        port: i32::from(p.port),
                        ..k8s_openapi::api::core::v1::ServicePort::default()
                    })
                    .collect(),
            ),
            ..K8sServiceSpec::default()
        }),
        status: None,
    };
    let slice = EndpointSlice {
        metadata: meta(
            format!("{name}-1"),
            Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                name.to_string(),
            )])),
        ),
        address_type: "IPv4".into(),
        endpoints: addresses
            .into_iter()
            .map(|a| Endpoint {
                addresses: vec![a],
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            s.ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.clone()),
                    protocol: Some(protocol(p.protocol).into()),
                    port: Some(i32::from(p.port)),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    };
    Ok(vec![
        manul_model::Resource::Service(Box::new(service)),
        manul_model::Resource::EndpointSlice(Box::new(slice)),
    ])
}

/// Waits until every Felix has applied `revision` (from its readiness
/// endpoint), so probes see the scenario's policies.
fn settle(c: &LocalCluster, revision: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in c.nodes() {
        loop {
            if c.felix_revision(node)? >= revision {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} did not reach revision {revision} in time", node.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "scenario_tests.rs"]
mod tests;
