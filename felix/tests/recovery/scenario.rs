//! A failed batch on a real node. Felix's agent loop (the same code the
//! `felix` binary runs) drives the driver under test inside the node
//! namespace; a fault makes a batch fail; the agent must resync the driver
//! from the calculation graph's whole state, with its backoff, until that
//! succeeds. Meanwhile real packets check that nothing the policy denies
//! gets through, and afterwards that the node enforces the latest policy,
//! including a change that arrived while the driver was out of sync: no
//! restart.
//!
//! The scenario: `api` admits TCP 8080 from pods labelled `app: frontend`
//! and from the addresses of the namespace's network set `bulk` (labelled
//! `role: bulk`). Then `bulk` grows to [`BULK_GROWN`] addresses, with the
//! fault armed, and that batch fails; while the driver is out of sync the
//! pod `other` is relabelled `app: frontend`; then the fault is cleared
//! and `bulk` shrinks to [`BULK_SHRUNK`] addresses. A driver whose fault is
//! a full map (the eBPF driver with a small address map) fails on the
//! growth by itself and recovers on the shrink; one whose fault is
//! injected (a refusing `nft`) fails until it is cleared.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manul_dataplane_api::Packet;
use manul_felix::agent::{self, AgentOptions, AgentStatus};
use manul_felix::calc::{CalcGraph, Update};
use manul_felix::metrics::FelixMetrics;
use manul_felix::sync::SyncEvent;
use manul_model::resource::{Resource, ResourceKey};
use manul_netns::NetNs;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use manul_dataplane_conformance::topology::{self, Probe, Topology};
use manul_dataplane_conformance::{ConformanceError, Factory, NodeContext, cluster, workload_yaml};

/// Addresses of `bulk` when the failing batch grows it.
pub const BULK_GROWN: usize = 300;
/// Addresses of `bulk` once room is made.
pub const BULK_SHRUNK: usize = 20;

/// How the fault is switched on and off around the failing batch.
pub trait Fault {
    /// Before the batch that must fail.
    fn arm(&self);
    /// When room is made.
    fn clear(&self);
}

/// A fault that the data causes by itself (a map too small for the grown
/// set): nothing to switch.
#[derive(Debug)]
pub struct DataFault;

impl Fault for DataFault {
    fn arm(&self) {}
    fn clear(&self) {}
}

/// What the run saw.
#[derive(Debug, Default)]
#[allow(dead_code, reason = "read through `Debug`: the tests print the report")]
pub struct RecoveryReport {
    /// Resyncs the agent started (`felix_resyncs_started{target="dataplane"}`).
    pub resyncs: u64,
    /// Batches and resyncs the driver refused.
    pub failures: u64,
    /// From the failed batch to the driver back in sync.
    pub out_of_sync_for: Duration,
    /// Probes sent while the driver was out of sync.
    pub probes_while_out_of_sync: usize,
    /// Those that got through (only ones the policy allows may).
    pub allowed_while_out_of_sync: Vec<String>,
}

const API: &str = "production/api";
const FE: &str = "production/frontend";
const OTHER: &str = "production/other";
const STRANGER: &str = "production/stranger";

const PODS: &[(&str, [u8; 4], &str)] = &[
    (FE, [10, 65, 0, 1], "app: frontend"),
    (API, [10, 65, 0, 2], "app: api"),
    (OTHER, [10, 65, 0, 3], "app: other"),
    (STRANGER, [10, 65, 0, 4], "app: stranger"),
];

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: production}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'frontend'}
    destination: {ports: [8080]}
  - action: Allow
    protocol: TCP
    source: {selector: role == 'bulk'}
    destination: {ports: [8080]}
"#;

fn bulk(n: usize) -> String {
    let nets: Vec<String> = (0..n)
        .map(|i| format!("10.99.{}.{}/32", i / 250, i % 250 + 1))
        .collect();
    format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {{name: bulk, namespace: production, labels: {{role: bulk}}}}\nspec:\n  nets: [{}]\n---\n",
        nets.join(", ")
    )
}

/// The agent on its own thread inside the node namespace.
struct Agent {
    events: Option<mpsc::Sender<SyncEvent>>,
    status: watch::Receiver<AgentStatus>,
    registry: Arc<Registry>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Agent {
    fn start(
        node: &NetNs,
        context: NodeContext,
        factory: Arc<Factory>,
    ) -> Result<Agent, ConformanceError> {
        let path = node.path().to_path_buf();
        let (tx, rx) = mpsc::channel(64);
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let mut registry = Registry::default();
        let metrics = FelixMetrics::register(&mut registry);
        let thread = std::thread::Builder::new()
            .name(format!("agent-{}", context.node))
            .spawn(move || -> Result<(), String> {
                NetNs::from_path(&path)
                    .and_then(|ns| ns.enter_current_thread())
                    .map_err(|e| format!("cannot enter the node namespace: {e}"))?;
                let driver = factory(&context)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                rt.block_on(agent::run(
                    CalcGraph::new(context.node.clone()),
                    driver,
                    rx,
                    metrics,
                    status_tx,
                    AgentOptions {
                        refresh_interval: Duration::from_secs(3600),
                        ..AgentOptions::default()
                    },
                ));
                Ok(())
            })
            .map_err(|e| ConformanceError::Setup(format!("cannot start the agent thread: {e}")))?;
        Ok(Agent {
            events: Some(tx),
            status,
            registry: Arc::new(registry),
            thread: Some(thread),
        })
    }

    fn send(&self, event: SyncEvent) -> Result<(), ConformanceError> {
        self.events
            .as_ref()
            .and_then(|tx| tx.blocking_send(event).ok())
            .ok_or_else(|| ConformanceError::Driver("the agent stopped".into()))
    }

    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&AgentStatus) -> bool,
    ) -> Result<AgentStatus, ConformanceError> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = *self.status.borrow();
            if f(&st) {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(ConformanceError::Driver(format!(
                    "the agent never got {what}: {st:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn counter(&self, series: &str) -> Option<u64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.events.take();
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => tracing::error!("the agent thread failed: {e}"),
                Err(_) => tracing::error!("the agent thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The resources so far, and the reference evaluator over them.
struct Model {
    node: String,
    all: BTreeMap<ResourceKey, Resource>,
    oracle: cluster::Cluster,
    scope: BTreeMap<ResourceKey, Resource>,
    revision: u64,
}

impl Model {
    /// Records `yaml` and returns its updates with their revision.
    fn put(&mut self, yaml: &str) -> Result<SyncEvent, ConformanceError> {
        let resources = cluster::parse(yaml)?;
        let mut updates = Vec::new();
        for r in resources {
            self.all.insert(r.key(), r.clone());
            updates.push(Update {
                key: r.key(),
                value: Some(r),
            });
        }
        self.oracle
            .set(&mut self.scope, self.all.values().cloned().collect(), true)?;
        self.revision += 1;
        Ok(SyncEvent::Updates {
            updates,
            revision: self.revision,
        })
    }

    fn pod_yaml(&self, key: &str, ip: [u8; 4], labels: &str) -> String {
        workload_yaml(key, ip, labels, "[kns.production]", "", &self.node)
    }
}

/// Runs the scenario against the driver `factory` builds, with `fault`.
pub fn run_failed_batch_recovery(
    tag: &str,
    factory: Arc<Factory>,
    fault: &dyn Fault,
) -> Result<RecoveryReport, ConformanceError> {
    let prefix = manul_netns::unique_prefix(tag);
    let mut topo = Topology::new(&prefix)?;
    let node = prefix.clone();
    for (key, ip, _) in PODS {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        topo.add_pod(ns, name, Ipv4Addr::from(*ip))?;
    }
    let mut model = Model {
        node: node.clone(),
        all: BTreeMap::new(),
        oracle: cluster::Cluster::new(&node),
        scope: BTreeMap::new(),
        revision: 0,
    };
    let agent = Agent::start(&topo.node, NodeContext { node: node.clone() }, factory)?;
    let mut failures = Vec::new();
    let mut probes_while_out_of_sync = 0;
    let mut allowed_while_out_of_sync = Vec::new();

    // Probes `from -> api` on TCP 8080; checks the verdict against the
    // reference evaluator and `expect` (None: either is fine).
    let check = |model: &Model,
                 failures: &mut Vec<String>,
                 when: &str,
                 from: &str,
                 expect: Option<bool>|
     -> Result<bool, ConformanceError> {
        let (src, dst) = (topo.pod(from)?, topo.pod(API)?);
        let oracle =
            model
                .oracle
                .oracle_allows(&Packet::tcp(src.ip.into(), 40000, dst.ip.into(), 8080));
        let got = topology::probe(src, dst, Probe::Tcp(8080))?;
        if got && !oracle {
            failures.push(format!(
                "[{when}] {from} -> {API} tcp/8080 got through, but the policy denies it"
            ));
        }
        if let Some(want) = expect
            && got != want
        {
            failures.push(format!(
                "[{when}] {from} -> {API} tcp/8080: expected {}, got {}",
                if want { "allow" } else { "deny" },
                if got { "allow" } else { "deny" }
            ));
        }
        Ok(got)
    };

    // 1. The start: everything, then in sync.
    let mut yaml = POLICY.to_string();
    yaml.push_str("\n---\n");
    yaml.push_str(&bulk(1));
    for (key, ip, labels) in PODS {
        yaml.push_str(&model.pod_yaml(key, *ip, labels));
    }
    let event = model.put(&yaml)?;
    agent.send(event)?;
    agent.send(SyncEvent::InSync {
        revision: model.revision,
    })?;
    agent.wait("ready", Duration::from_secs(30), AgentStatus::ready)?;
    check(&model, &mut failures, "start", FE, Some(true))?;
    check(&model, &mut failures, "start", OTHER, Some(false))?;
    check(&model, &mut failures, "start", STRANGER, Some(false))?;

    // 2. The failing batch.
    fault.arm();
    let failed_at = Instant::now();
    agent.send(model.put(&bulk(BULK_GROWN))?)?;
    agent.wait("out of sync", Duration::from_secs(30), |s| {
        s.dataplane_out_of_sync
    })?;
    for from in [STRANGER, OTHER, FE] {
        // FE is allowed by the policy: either is right while out of sync
        // (failing closed may drop it).
        let expect = (from != FE).then_some(false);
        if check(&model, &mut failures, "out of sync", from, expect)? {
            allowed_while_out_of_sync.push(format!("{from} (before the relabel)"));
        }
        probes_while_out_of_sync += 1;
    }
    // 3. A change while out of sync: folded into the graph only.
    agent.send(model.put(&model.pod_yaml(OTHER, [10, 65, 0, 3], "app: frontend"))?)?;
    let st = agent.wait("two failed resyncs", Duration::from_secs(30), |s| {
        s.driver_failures >= 3
    })?;
    if !st.dataplane_out_of_sync || st.ready() {
        failures.push(format!("[out of sync] the status says ready: {st:?}"));
    }
    for from in [STRANGER, FE, OTHER] {
        // FE and OTHER are allowed by the latest policy: either is right
        // while out of sync (fail closed may drop them).
        let expect = (from == STRANGER).then_some(false);
        if check(&model, &mut failures, "out of sync", from, expect)? {
            allowed_while_out_of_sync.push(format!("{from} (after the relabel)"));
        }
        probes_while_out_of_sync += 1;
    }

    // 4. Room is made.
    fault.clear();
    agent.send(model.put(&bulk(BULK_SHRUNK))?)?;
    let revision = model.revision;
    agent.wait("back in sync", Duration::from_secs(60), |s| {
        s.ready() && s.revision == revision
    })?;
    let out_of_sync_for = failed_at.elapsed();
    check(&model, &mut failures, "resynced", FE, Some(true))?;
    check(&model, &mut failures, "resynced", OTHER, Some(true))?;
    check(&model, &mut failures, "resynced", STRANGER, Some(false))?;

    let report = RecoveryReport {
        resyncs: agent
            .counter("felix_resyncs_started_total{target=\"dataplane\"}")
            .unwrap_or(0),
        failures: agent.status.borrow().driver_failures,
        out_of_sync_for,
        probes_while_out_of_sync,
        allowed_while_out_of_sync,
    };
    if report.resyncs < 3 {
        failures.push(format!(
            "felix_resyncs_started{{target=\"dataplane\"}} is {}, expected at least 3",
            report.resyncs
        ));
    }
    drop(agent);
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(ConformanceError::Mismatch(failures))
    }
}
