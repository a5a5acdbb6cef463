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
//!   - {name: production/old, labels: {app: api}, tcp: [8080],
//!      terminating: true}            # optional: its endpoints are serving and
//!                                   # terminating, not ready
//! services:                       # optional: a Service and the EndpointSlice
//!   - name: production/api        # the endpoint controller would write: the
//!     selector: {app: api}        # pods it selects, with their nodes
//!     ports: [{name: http, protocol: tcp, port: 8080}]
//!   - name: production/web        # with a cluster_ip: a real Service (without,
//!     cluster_ip: 10.96.0.10      # headless: for policy `services` matches)
//!     type: NodePort              # optional: ClusterIP (default), NodePort,
//!                                 # LoadBalancer
//!     external_traffic_policy: Local   # optional: Cluster (default)
//!     session_affinity: ClientIP       # optional: None (default)
//!     load_balancer_ip: 198.51.100.7   # optional (LoadBalancer): its ingress
//!                                      # address, probed as lb/NS/NAME
//!     load_balancer_source_ranges: [external/inside, 10.0.0.0/8]
//!                                      # optional: CIDRs or external clients
//!     selector: {app: api}
//!     ports: [{protocol: tcp, port: 80, target_port: 8080, node_port: 30080}]
//! externals: [outside]            # optional: clients outside the cluster, on
//!                                 # the nodes' network, no Felix
//! resources: |
//!   apiVersion: networking.k8s.io/v1
//!   kind: NetworkPolicy
//!   ...
//! probes:                         # and/or
//!   - {from: production/frontend, to: production/api, protocol: tcp, port: 8080, expect: allow}
//!   # to a Service's cluster IP (port: the Service's port); expect allow,
//!   # deny (no answer, or any refusal) or reject (refused at once: a TCP
//!   # reset or an ICMP error)
//!   - {from: production/frontend, to: service/production/web, protocol: tcp, port: 80,
//!      expect: allow,
//!      source: client,              # optional (TCP): the address the backend
//!                                   # saw: client (the prober's) or node (an
//!                                   # address of a node of the cluster)
//!      backends: [production/api],  # optional (TCP): who may answer
//!      reach: each,                 # optional: any (default); each: every
//!                                   # listed backend answers; same: one does,
//!                                   # every time
//!      repeat: 20,                  # optional: connections to make (default
//!                                   # 1; 30 for each, 10 for same); each
//!                                   # stops once all were reached
//!      backend_port: 8080}          # optional (TCP): the port the backend
//!                                   # answered on (the targetPort)
//!   # to a node port on node NODE_INDEX (port: the node port), from an
//!   # external client
//!   - {from: external/outside, to: nodeport/0/production/web, protocol: tcp, port: 30080,
//!      expect: allow, source: client}
//!   # to a LoadBalancer Service's ingress address (port: the Service's
//!   # port); external clients route it to node 0
//!   - {from: external/outside, to: lb/production/web, protocol: tcp, port: 80,
//!      expect: deny}
//! steps: [...]                   # optional, after the probes and matrices:
//!                                 # see scenario_steps.rs
//! matrices:
//!   - protocol: tcp               # tcp, udp or icmp
//!     port: 8080
//!     expect:                     # every pair of different pods: FROM -> TO
//!       production/frontend: {production/api: allow}
//!       production/api: {production/frontend: deny}
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec};
use serde::Deserialize;

pub use crate::scenario_services::{
    ServicePort, ServiceSpec, ServiceType, SessionAffinity, TrafficPolicy,
};
pub use crate::scenario_steps::{Held, Step, StepRow};

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
    /// Its endpoints are terminating (serving, not ready).
    #[serde(default)]
    pub terminating: bool,
}

/// A probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

/// allow, deny (not reached: no answer, or refused) or reject (refused at
/// once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    Reject,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Reject => "reject",
        }
    }
}

/// Whose address a backend must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The prober's own address.
    Client,
    /// An address of a node of the cluster (masqueraded).
    Node,
}

/// Which of a probe's backends must answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// Any listed one, each time.
    #[default]
    Any,
    /// Every listed one, over the repeats.
    Each,
    /// One, the same every time.
    Same,
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
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub backends: Vec<String>,
    #[serde(default)]
    pub reach: Reach,
    #[serde(default)]
    pub repeat: Option<u32>,
    /// The port the backend must have answered on (TCP; a Service's
    /// targetPort).
    #[serde(default)]
    pub backend_port: Option<u16>,
}

/// One check, as [`Scenario::checks`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    pub expect: Verdict,
    pub source: Option<Source>,
    pub backends: Vec<String>,
    pub reach: Reach,
    pub repeat: u32,
    pub backend_port: Option<u16>,
}

/// Where a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A pod's address (`NS/NAME`).
    Pod(&'a str),
    /// A Service's cluster IP (`service/NS/NAME`).
    Service(&'a str),
    /// A node's address, on a node port (`nodeport/NODE_INDEX/NS/NAME`).
    NodePort(usize, &'a str),
    /// A LoadBalancer Service's ingress address (`lb/NS/NAME`).
    LoadBalancer(&'a str),
}

impl<'a> Target<'a> {
    /// Reads a probe's `to`.
    pub fn parse(to: &'a str) -> Result<Target<'a>> {
        if let Some(service) = to.strip_prefix("service/") {
            return Ok(Target::Service(service));
        }
        if let Some(service) = to.strip_prefix("lb/") {
            return Ok(Target::LoadBalancer(service));
        }
        if let Some(rest) = to.strip_prefix("nodeport/") {
            let Some((node, service)) = rest.split_once('/') else {
                bail!("{to}: not nodeport/NODE_INDEX/NAMESPACE/NAME");
            };
            let node = node
                .parse()
                .with_context(|| format!("{to}: the node index {node:?}"))?;
            return Ok(Target::NodePort(node, service));
        }
        Ok(Target::Pod(to))
    }
}

/// The prefix of a probe's `from` naming an external client.
pub const EXTERNAL: &str = "external/";

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
    pub externals: Vec<String>,
    #[serde(default)]
    pub resources: String,
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    #[serde(default)]
    pub matrices: Vec<Matrix>,
    /// Run in order after the probes and matrices (each `- KIND: {...}`).
    #[serde(
        default,
        deserialize_with = "serde_yaml_ng::with::singleton_map_recursive::deserialize"
    )]
    pub steps: Vec<Step>,
}

fn two() -> usize {
    2
}

impl Scenario {
    /// Parses and checks a scenario: pods named `NS/NAME` and unique,
    /// probes and matrices naming known pods, services and external
    /// clients, every matrix complete, ports given for TCP and UDP and
    /// served by the destination pod, resources that load.
    pub fn parse(text: &str) -> Result<Scenario> {
        let sc: Scenario = serde_yaml_ng::from_str(text).context("not a scenario")?;
        if sc.nodes == 0 || sc.nodes > 20 {
            bail!("nodes: {} is not in 1..=20", sc.nodes);
        }
        let mut externals = BTreeMap::new();
        for x in &sc.externals {
            if x.is_empty() || x.contains('/') {
                bail!("external {x:?}: a name without '/'");
            }
            if externals.insert(x.as_str(), ()).is_some() {
                bail!("external {x} is listed twice");
            }
        }
        if externals.len() > manul_local_cluster::external::MAX_EXTERNALS {
            bail!(
                "externals: at most {}",
                manul_local_cluster::external::MAX_EXTERNALS
            );
        }
        let mut pods = BTreeMap::new();
        for p in &sc.pods {
            if p.name
                .split_once('/')
                .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
            {
                bail!("pod {:?}: the name must be NAMESPACE/NAME", p.name);
            }
            if p.name
                .strip_prefix(EXTERNAL)
                .is_some_and(|x| externals.contains_key(x))
            {
                bail!("pod {}: the name of an external client", p.name);
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
        let mut services = BTreeMap::new();
        for s in &sc.services {
            s.check()?;
            for r in &s.load_balancer_source_ranges {
                if let Some(x) = r.strip_prefix(EXTERNAL)
                    && !externals.contains_key(x)
                {
                    bail!(
                        "service {}: source range {r}: no external client {x}",
                        s.name
                    );
                }
            }
            if services.insert(s.name.as_str(), s).is_some() {
                bail!("service {} is listed twice", s.name);
            }
        }
        if sc.probes.is_empty() && sc.matrices.is_empty() && sc.steps.is_empty() {
            bail!("a scenario needs probes, matrices or steps");
        }
        let pod_names: std::collections::BTreeSet<&str> = pods.keys().map(String::as_str).collect();
        let service_names: std::collections::BTreeSet<&str> = services.keys().copied().collect();
        let step_probes = crate::scenario_steps::check(
            &sc.steps,
            &crate::scenario_steps::Known {
                pods: &pod_names,
                services: &service_names,
            },
        )?;
        let check_to_pod = |to: &str, protocol: Protocol, port: u16, what: &str| -> Result<()> {
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
        let all_probes = sc
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("probes[{i}]"), p))
            .chain(step_probes.iter().map(|(what, p)| (what.clone(), p)));
        for (what, p) in all_probes {
            let external = p
                .from
                .strip_prefix(EXTERNAL)
                .is_some_and(|x| externals.contains_key(x));
            if !external && !pods.contains_key(&p.from) {
                bail!("{what}: unknown pod or external client {}", p.from);
            }
            let service = |name: &str| -> Result<&ServiceSpec> {
                let s = services
                    .get(name)
                    .with_context(|| format!("{what}: unknown service {name}"))?;
                if s.cluster_ip.is_none() {
                    bail!("{what}: service {name} is headless (no cluster_ip)");
                }
                Ok(s)
            };
            match Target::parse(&p.to).with_context(|| what.clone())? {
                Target::Pod(to) => check_to_pod(to, p.protocol, p.port, &what)?,
                Target::Service(name) => {
                    service(name)?;
                }
                Target::NodePort(node, name) => {
                    if node >= sc.nodes {
                        bail!("{what}: node {node} does not exist (nodes: {})", sc.nodes);
                    }
                    if service(name)?.service_type == ServiceType::ClusterIP {
                        bail!("{what}: service {name} has no node ports");
                    }
                }
                Target::LoadBalancer(name) => {
                    if service(name)?.load_balancer_ip.is_none() {
                        bail!("{what}: service {name} has no load_balancer_ip");
                    }
                }
            }
            if (p.source.is_some()
                || !p.backends.is_empty()
                || p.reach != Reach::Any
                || p.backend_port.is_some())
                && (p.protocol != Protocol::Tcp || p.expect != Verdict::Allow)
            {
                bail!(
                    "{what}: source, backends, reach and backend_port are for TCP probes expecting allow"
                );
            }
            if let Some(b) = p.backends.iter().find(|b| !pods.contains_key(*b)) {
                bail!("{what}: backend {b} is not a pod of the scenario");
            }
            if p.reach == Reach::Each && p.backends.len() < 2 {
                bail!("{what}: reach: each needs two or more backends");
            }
            if p.repeat.is_some_and(|r| !(1..=100).contains(&r)) {
                bail!("{what}: repeat is 1..=100");
            }
        }
        for (i, m) in sc.matrices.iter().enumerate() {
            let what = format!("matrices[{i}]");
            for from in pods.keys() {
                for to in pods.keys().filter(|t| *t != from) {
                    if m.expect.get(from).and_then(|r| r.get(to)).is_none() {
                        bail!(
                            "{what}: no expectation for {from} -> {to} (a matrix lists every pair)"
                        );
                    }
                    check_to_pod(to, m.protocol, m.port, &what)?;
                }
            }
            for (from, row) in &m.expect {
                for to in row.keys() {
                    if !pods.contains_key(from) || !pods.contains_key(to) || from == to {
                        bail!(
                            "{what}: {from} -> {to} is not a pair of different pods of the scenario"
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

    /// Every check, in order: the probes, then the matrices' cells.
    pub fn checks(&self) -> Vec<Check> {
        let mut out: Vec<_> = self.probes.iter().map(check_of).collect();
        for m in &self.matrices {
            for (from, row) in &m.expect {
                for (to, v) in row {
                    out.push(Check {
                        from: from.clone(),
                        to: to.clone(),
                        protocol: m.protocol,
                        port: m.port,
                        expect: *v,
                        source: None,
                        backends: Vec::new(),
                        reach: Reach::Any,
                        repeat: 1,
                        backend_port: None,
                    });
                }
            }
        }
        out
    }
}

/// A probe as a check: its repeats defaulted by its reach.
pub fn check_of(p: &ProbeSpec) -> Check {
    Check {
        from: p.from.clone(),
        to: p.to.clone(),
        protocol: p.protocol,
        port: p.port,
        expect: p.expect,
        source: p.source,
        backends: p.backends.clone(),
        reach: p.reach,
        repeat: p.repeat.unwrap_or(match p.reach {
            Reach::Any => 1,
            Reach::Each => 30,
            Reach::Same => 10,
        }),
        backend_port: p.backend_port,
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    pub expected: Verdict,
    pub actual: Verdict,
    /// Whether everything expected held (the verdict, and the source and
    /// backends when asked for).
    pub ok: bool,
    /// What the backends saw, or what did not hold.
    pub note: String,
}

/// What a run saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub results: Vec<ResultRow>,
    /// The steps', in order.
    pub steps: Vec<StepRow>,
}

impl Outcome {
    pub fn matches(&self) -> bool {
        self.results.iter().all(|r| r.ok) && self.steps.iter().all(|s| s.ok)
    }

    /// The expected and actual results, per protocol and port as matrices,
    /// then the notes.
    pub fn render(&self) -> String {
        let mut out = format!("scenario {}\n", self.name);
        let mut groups: BTreeMap<(Protocol, u16), Vec<&ResultRow>> = BTreeMap::new();
        for r in &self.results {
            groups.entry((r.protocol, r.port)).or_default().push(r);
        }
        for ((proto, port), rows) in groups {
            let _ = writeln!(out, "\n{proto:?} port {port}: expected / actual");
            let mut froms: Vec<&String> = rows.iter().map(|r| &r.from).collect();
            let mut tos: Vec<&String> = rows.iter().map(|r| &r.to).collect();
            let mut names: Vec<&String> = froms.iter().chain(&tos).copied().collect();
            names.sort();
            names.dedup();
            let pods_only = rows.iter().all(|r| {
                matches!(Target::parse(&r.to), Ok(Target::Pod(_))) && !r.from.starts_with(EXTERNAL)
            });
            if pods_only {
                froms = names.clone();
                tos = names;
            } else {
                froms.sort();
                froms.dedup();
                tos.sort();
                tos.dedup();
            }
            let width = tos.iter().map(|t| t.len()).max().unwrap_or(0).max(22);
            let _ = write!(out, "{:>24}", "");
            for t in &tos {
                let _ = write!(out, " {t:>width$}");
            }
            out.push('\n');
            for from in &froms {
                let _ = write!(out, "{from:>24}");
                for to in &tos {
                    let cell = rows
                        .iter()
                        .find(|r| &&r.from == from && &&r.to == to)
                        .map_or("-".to_string(), |r| {
                            let mark = if r.ok { "" } else { " !" };
                            format!("{}/{}{mark}", r.expected.word(), r.actual.word())
                        });
                    let _ = write!(out, " {cell:>width$}");
                }
                out.push('\n');
            }
        }
        let notes: Vec<&ResultRow> = self.results.iter().filter(|r| !r.note.is_empty()).collect();
        if !notes.is_empty() {
            out.push('\n');
            for r in notes {
                let mark = if r.ok { " " } else { "!" };
                let _ = writeln!(
                    out,
                    "{mark} {} -> {} {:?} {}: {}",
                    r.from, r.to, r.protocol, r.port, r.note
                );
            }
        }
        if !self.steps.is_empty() {
            out.push_str("\nsteps:\n");
            for s in &self.steps {
                let mark = if s.ok { " " } else { "!" };
                let _ = writeln!(out, "{mark} {}: {}", s.what, s.note);
            }
        }
        let total = self.results.len() + self.steps.len();
        let bad = self.results.iter().filter(|r| !r.ok).count()
            + self.steps.iter().filter(|s| !s.ok).count();
        let _ = writeln!(
            out,
            "\n{} of {} results as expected{}",
            total - bad,
            total,
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
        ..ClusterConfig::default()
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
    let mut externals = BTreeMap::new();
    for (i, x) in sc.externals.iter().enumerate() {
        let client = c.add_external(i, x)?;
        // The load balancer in front of the cluster: its addresses go to
        // node 0.
        for ip in sc.services.iter().filter_map(|s| s.load_balancer_ip) {
            let route = manul_netns::Route::to(manul_netns::IpNet::from(std::net::IpAddr::V4(ip)))
                .via(std::net::IpAddr::V4(c.nodes()[0].ip));
            manul_netns::replace_route(&client.netns, &route)
                .with_context(|| format!("external {x}: a route to {ip}"))?;
        }
        externals.insert(x.clone(), client);
    }
    let external_ips: BTreeMap<String, std::net::Ipv4Addr> = externals
        .iter()
        .map(|(name, x)| (name.clone(), x.ip))
        .collect();
    let terminating: std::collections::BTreeSet<String> = sc
        .pods
        .iter()
        .filter(|p| p.terminating)
        .map(|p| p.name.clone())
        .collect();
    let mut endpoints = Vec::new();
    for s in &sc.services {
        let ranges = s.source_ranges(&external_ips)?;
        endpoints.extend(crate::scenario_services::resources(
            s,
            &c,
            &terminating,
            ranges,
            None,
        ));
    }
    let mut revision = 0;
    if !endpoints.is_empty() {
        revision = c.apply(endpoints)?;
    }
    // An empty `resources` writes nothing: the Services' revision counts.
    revision = revision.max(c.apply_yaml(&sc.resources)?);
    // Felix reports programmed endpoints; policies have no such report, so
    // wait until every node has seen the write (its status files carry the
    // revision they reflect) by re-adding nothing and polling briefly.
    settle(&c, revision)?;
    let mut results = Vec::new();
    for check in sc.checks() {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        results.push(crate::scenario_probe::probe(&c, sc, &externals, check)?);
    }
    let steps = crate::scenario_steps::run(
        &crate::scenario_steps::Env {
            cluster: &c,
            scenario: sc,
            externals: &externals,
            external_ips: &external_ips,
            terminating: &terminating,
            dataplane,
        },
        interrupted,
    )?;
    drop(externals);
    drop(c);
    Ok(Outcome {
        name: sc.name.clone(),
        results,
        steps,
    })
}

/// Waits until every Felix has applied `revision` (from its readiness
/// endpoint), so probes see the scenario's policies.
pub(crate) fn settle(c: &LocalCluster, revision: u64) -> Result<()> {
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
pub(crate) mod tests;
