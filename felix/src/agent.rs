//! The agent loop: sync events in, calculation graph, driver out. A thin
//! async shell around the I/O-free graph.
//!
//! A batch the driver refuses is not forgotten: the driver is then out of
//! sync (the `Driver` contract, "After an error"), later batches are folded
//! into the graph only, and the driver is resynced from the graph's whole
//! state, with a backoff, until that succeeds ([`crate::resync`] decides
//! when). Meanwhile `/readyz` says not ready.

use std::time::{Duration, Instant};

use manul_dataplane_api::{Driver, Operation};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::calc::{CalcGraph, Ready, Update};
use crate::flows::FlowPipeline;
use crate::metrics::{DataplaneLabels, FelixMetrics, MapLabels, PolicyFlowLabels, resync};
use crate::resync::{BatchAction, DriverSync};
use crate::routes::{RouteCalc, RouteProgrammer};
use crate::status::StatusReporter;
use crate::sync::SyncEvent;
use crate::wireguard::Wireguard;

/// What the health endpoints report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub in_sync: bool,
    pub revision: u64,
    /// Batches and resyncs the driver refused.
    pub driver_failures: u64,
    /// The driver refused a batch and has not been resynced yet.
    pub dataplane_out_of_sync: bool,
    /// Resyncs started since the driver went out of sync.
    pub resync_attempts: u32,
}

impl AgentStatus {
    /// In sync with Typha, and the driver holds what the graph computed.
    pub fn ready(&self) -> bool {
        self.in_sync && !self.dataplane_out_of_sync
    }
}

/// How the agent runs besides its inputs.
#[derive(Debug)]
pub struct AgentOptions {
    /// Program routes to other nodes' pod blocks (`--program-routes`, and
    /// WireGuard's).
    pub routes: Option<(RouteCalc, RouteProgrammer)>,
    /// Encrypt pod traffic to other nodes (`wireguardEnabled`); needs
    /// `routes`.
    pub wireguard: Option<Wireguard>,
    /// Where to report programmed endpoints (`--status-dir`).
    pub status: Option<StatusReporter>,
    /// How often the driver checks the kernel for out-of-band changes.
    pub refresh_interval: Duration,
    /// The wait before the first resync after a failed batch; it doubles
    /// with every failed resync, up to `resync_max_backoff`.
    pub resync_min_backoff: Duration,
    pub resync_max_backoff: Duration,
    /// Later values of the refresh intervals (Felix's configuration,
    /// applied live); a zero interval turns that refresh off.
    pub intervals: Option<watch::Receiver<Intervals>>,
    /// Where the driver's service NAT totals go, read with the flow
    /// counters.
    pub services: Option<crate::programmed_services::ProgrammedServices>,
    /// Flow records: the pipeline that enriches and aggregates the
    /// driver's observations, and where each interval's records go.
    pub flows: Option<FlowOptions>,
}

/// Flow records' pipeline and destination.
#[derive(Debug)]
pub struct FlowOptions {
    pub pipeline: FlowPipeline,
    /// A full channel drops the interval's records (counted): the agent
    /// never waits for the exporter.
    pub sink: mpsc::Sender<Vec<manul_proto::flows::FlowRecord>>,
}

/// Unix seconds (the agent's one wall-clock reading, for flow intervals).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The periodic refreshes' intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// The dataplane's check for out-of-band changes.
    pub dataplane: Duration,
    /// Writing every programmed route again.
    pub routes: Duration,
}

/// A ticker for `every`, or none when it is zero (turned off).
fn ticker(every: Duration) -> Option<tokio::time::Interval> {
    if every.is_zero() {
        return None;
    }
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(t)
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_intervals(rx: &mut Option<watch::Receiver<Intervals>>) -> Option<Intervals> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(*r.borrow_and_update()),
            Err(_) => {
                *rx = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            routes: None,
            wireguard: None,
            status: None,
            refresh_interval: Duration::from_secs(90),
            resync_min_backoff: Duration::from_millis(100),
            resync_max_backoff: Duration::from_secs(10),
            intervals: None,
            services: None,
            flows: None,
        }
    }
}

/// The per-policy flow totals last exported, so the Prometheus counters
/// only ever grow by what the driver counted since.
#[derive(Debug, Default)]
struct FlowTotals {
    seen: std::collections::HashMap<(String, bool), u64>,
}

impl FlowTotals {
    fn export(&mut self, driver: &dyn Driver, metrics: &FelixMetrics) {
        metrics
            .flow_events_lost
            .set(i64::try_from(driver.flow_events_lost()).unwrap_or(i64::MAX));
        for c in driver.policy_counters() {
            for (allowed, total) in [(true, c.allowed), (false, c.denied)] {
                let last = self.seen.entry((c.policy.clone(), allowed)).or_insert(0);
                // A total below the last one means the driver restarted and
                // counts from zero again.
                let grew = if total >= *last { total - *last } else { total };
                if grew > 0 {
                    metrics
                        .policy_flows
                        .get_or_create(&PolicyFlowLabels {
                            policy: c.policy.clone(),
                            action: if allowed { "allow" } else { "deny" }.into(),
                        })
                        .inc_by(grew);
                }
                *last = total;
            }
        }
    }
}

/// Sets the conntrack gauges of a driver that keeps its own table.
fn export_conntrack(driver: &dyn Driver, metrics: &FelixMetrics) {
    if let Some(u) = driver.conntrack_usage() {
        let labels = DataplaneLabels {
            dataplane: driver.name().into(),
        };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        metrics
            .conntrack_entries
            .get_or_create(&labels)
            .set(gauge(u.entries));
        metrics
            .conntrack_capacity
            .get_or_create(&labels)
            .set(gauge(u.capacity));
    }
}

/// Sets the per-map gauges of a driver with sized service maps.
fn export_map_usage(driver: &dyn Driver, metrics: &FelixMetrics) {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for u in driver.map_usage() {
        let labels = MapLabels { map: u.map.into() };
        metrics
            .bpf_map_entries
            .get_or_create(&labels)
            .set(gauge(u.entries));
        metrics
            .bpf_map_capacity
            .get_or_create(&labels)
            .set(gauge(u.capacity));
    }
}

/// Reports what a successfully applied batch programmed.
fn report(status: &StatusReporter, ops: &[Operation], revision: u64) {
    for op in ops {
        let result = match op {
            Operation::WorkloadEndpointUpdate(ep) => status.programmed(ep, revision),
            Operation::WorkloadEndpointRemove { id } => status.removed(id),
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn!("cannot write an endpoint status file: {e}");
        }
    }
}

/// The driver and what keeps it in step with the graph.
struct Dataplane<'a> {
    driver: Box<dyn Driver>,
    sync: DriverSync,
    metrics: &'a FelixMetrics,
    status: Option<&'a StatusReporter>,
    flows: Option<FlowOptions>,
}

impl Dataplane<'_> {
    /// Sends a batch the graph computed, unless a resync is pending (then
    /// the graph's state covers it), and commits it in the graph once the
    /// driver holds it. A failure puts the driver out of sync.
    fn batch(
        &mut self,
        graph: &mut CalcGraph,
        ready: &Ready,
        revision: u64,
        current: &mut AgentStatus,
    ) {
        let ops = &ready.ops;
        let _span = tracing::info_span!("batch", revision, operations = ops.len()).entered();
        if self.sync.batch() == BatchAction::Fold {
            // Removed endpoints lose their status file now; programmed
            // ones are reported by the resync.
            if let Some(s) = self.status {
                let removals: Vec<Operation> = ops
                    .iter()
                    .filter(|o| matches!(o, Operation::WorkloadEndpointRemove { .. }))
                    .cloned()
                    .collect();
                report(s, &removals, revision);
            }
            return;
        }
        let started = Instant::now();
        self.metrics.operations.inc_by(ops.len() as u64);
        match self.driver.apply(ops) {
            Ok(()) => {
                graph.advance(ready);
                if let Some(f) = self.flows.as_mut() {
                    f.pipeline.applied(ops);
                }
                if let Some(s) = self.status {
                    report(s, ops, revision);
                }
            }
            Err(e) => {
                let due = self.sync.failed(now());
                error!(
                    driver = self.driver.name(),
                    resync_in = ?due.saturating_duration_since(now()),
                    "dataplane refused a batch; it is out of sync and will be resynced from the whole state: {e}"
                );
                self.failed(current);
            }
        }
        self.metrics
            .dataplane_apply_time
            .observe(started.elapsed().as_secs_f64());
    }

    /// Drains the driver's flow observations into the pipeline and sends
    /// an interval's records once it is over.
    fn flows_tick(&mut self, metrics: &FelixMetrics) {
        let Some(f) = self.flows.as_mut() else {
            return;
        };
        let before = f.pipeline.stats;
        let records = f.pipeline.poll(self.driver.as_mut(), unix_now());
        let after = f.pipeline.stats;
        metrics
            .flow_observations
            .inc_by(after.observations - before.observations);
        metrics
            .flow_trace_mismatches
            .inc_by(after.trace_mismatches - before.trace_mismatches);
        metrics
            .flow_observations_dropped
            .set(i64::try_from(self.driver.flows_dropped()).unwrap_or(i64::MAX));
        if let Some(records) = records {
            let n = records.len() as u64;
            if records.is_empty() {
                return;
            }
            match f.sink.try_send(records) {
                Ok(()) => {
                    metrics.flow_records.inc_by(n);
                }
                Err(_) => {
                    warn!(
                        records = n,
                        "the flow exporter is behind: an interval's records are dropped"
                    );
                    metrics.flow_records_dropped.inc_by(n);
                }
            }
        }
    }

    fn failed(&mut self, current: &mut AgentStatus) {
        self.metrics.dataplane_failures.inc();
        self.metrics.dataplane_out_of_sync.set(1);
        current.driver_failures += 1;
        current.dataplane_out_of_sync = true;
        current.resync_attempts = self.sync.attempts();
    }

    /// Resyncs the driver from the graph's whole state if one is due at
    /// `at`; `complete` says whether the graph has had Typha's whole state
    /// (then the resync ends with `InSync`).
    fn resync(
        &mut self,
        graph: &mut CalcGraph,
        complete: bool,
        revision: u64,
        at: std::time::Instant,
        current: &mut AgentStatus,
    ) {
        let Some(attempt) = self.sync.start(at) else {
            return;
        };
        current.resync_attempts = attempt;
        let _span = tracing::info_span!("resync", revision, attempt).entered();
        self.metrics.dataplane_resyncs.inc();
        let started = Instant::now();
        self.driver.mark_stale();
        let mut whole = graph.resync();
        if complete {
            whole.ops.push(Operation::InSync);
        }
        let ops = &whole.ops;
        warn!(
            driver = self.driver.name(),
            attempt,
            operations = ops.len(),
            "resyncing the dataplane from the whole state"
        );
        self.metrics.operations.inc_by(ops.len() as u64);
        match self.driver.apply(ops) {
            Ok(()) => {
                graph.advance(&whole);
                if let Some(f) = self.flows.as_mut() {
                    f.pipeline.mark_stale();
                    f.pipeline.applied(ops);
                }
                self.sync.resynced();
                self.metrics.dataplane_out_of_sync.set(0);
                current.dataplane_out_of_sync = false;
                current.resync_attempts = 0;
                info!(
                    driver = self.driver.name(),
                    attempt,
                    elapsed = ?started.elapsed(),
                    "dataplane resynced"
                );
                if let Some(s) = self.status {
                    report(s, ops, revision);
                }
            }
            Err(e) => {
                let due = self.sync.failed(now());
                error!(
                    driver = self.driver.name(),
                    attempt,
                    retry_in = ?due.saturating_duration_since(now()),
                    "dataplane resync failed: {e}"
                );
                self.failed(current);
            }
        }
        self.metrics
            .dataplane_apply_time
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The agent's clock (Tokio's, so that tests can pause it).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the agent until the sync client stops.
pub async fn run(
    mut graph: CalcGraph,
    driver: Box<dyn Driver>,
    mut events: mpsc::Receiver<SyncEvent>,
    metrics: FelixMetrics,
    status: watch::Sender<AgentStatus>,
    options: AgentOptions,
) {
    let AgentOptions {
        mut routes,
        mut wireguard,
        status: reporter,
        refresh_interval,
        resync_min_backoff,
        resync_max_backoff,
        intervals,
        services,
        flows: flow_options,
    } = options;
    metrics.resync_state.set(resync::WAITING);
    let mut dataplane = Dataplane {
        driver,
        sync: DriverSync::new(resync_min_backoff, resync_max_backoff),
        metrics: &metrics,
        status: reporter.as_ref(),
        flows: flow_options,
    };
    let mut flow_tick = dataplane
        .flows
        .as_ref()
        .and_then(|_| ticker(Duration::from_secs(1)));
    // Whether the graph has had Typha's whole state at least once.
    let mut complete = false;
    let mut current = AgentStatus::default();
    let mut flows = FlowTotals::default();
    let mut counters = tokio::time::interval(Duration::from_secs(5));
    counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = ticker(refresh_interval);
    let mut route_refresh: Option<tokio::time::Interval> = None;
    let mut intervals = intervals;
    if let Some(i) = intervals.as_mut().map(|r| *r.borrow_and_update()) {
        refresh = ticker(i.dataplane);
        route_refresh = ticker(i.routes);
    }
    loop {
        let due = dataplane.sync.due().map(tokio::time::Instant::from_std);
        let first = tokio::select! {
            event = events.recv() => match event {
                Some(e) => e,
                None => break,
            },
            _ = sleep_until(due), if due.is_some() => {
                dataplane.resync(&mut graph, complete, current.revision, now(), &mut current);
                status.send_replace(current);
                continue;
            }
            _ = counters.tick() => {
                flows.export(dataplane.driver.as_ref(), &metrics);
                export_conntrack(dataplane.driver.as_ref(), &metrics);
                export_map_usage(dataplane.driver.as_ref(), &metrics);
                if let Some(s) = &services {
                    s.observe_counters(dataplane.driver.service_counters());
                }
                continue;
            }
            _ = tick(&mut flow_tick) => {
                dataplane.flows_tick(&metrics);
                continue;
            }
            Some(i) = next_intervals(&mut intervals) => {
                info!(dataplane = ?i.dataplane, routes = ?i.routes, "refresh intervals changed");
                refresh = ticker(i.dataplane);
                route_refresh = ticker(i.routes);
                continue;
            }
            _ = tick(&mut route_refresh) => {
                if let Some((calc, programmer)) = routes.as_mut() {
                    // A device that failed to start is tried again here.
                    tunnel(wireguard.as_mut(), calc, programmer, &metrics);
                    if let Err(e) = programmer.apply(&calc.all()) {
                        error!("cannot refresh routes: {e}");
                        metrics.dataplane_failures.inc();
                    }
                }
                continue;
            }
            _ = tick(&mut refresh) => {
                // Out of sync, the resync rewrites everything anyway.
                if !dataplane.sync.in_sync() {
                    continue;
                }
                let driver = &mut dataplane.driver;
                match driver.refresh() {
                    Ok(true) => {
                        warn!(driver = driver.name(), "repaired out-of-band dataplane changes");
                        metrics.dataplane_repairs.inc();
                    }
                    Ok(false) => {}
                    Err(e) => {
                        error!(driver = driver.name(), "dataplane refresh failed: {e}");
                        metrics.dataplane_failures.inc();
                    }
                }
                continue;
            }
        };
        // Coalesce whatever else is queued into one graph pass.
        let mut updates: Vec<Update> = Vec::new();
        let mut revision = current.revision;
        let mut in_sync_at = None;
        let mut pending = Some(first);
        while let Some(event) = pending.take().or_else(|| events.try_recv().ok()) {
            match event {
                SyncEvent::Updates {
                    updates: u,
                    revision: r,
                } => {
                    updates.extend(u);
                    revision = revision.max(r);
                }
                SyncEvent::InSync { revision: r } => {
                    in_sync_at = Some(r);
                    revision = revision.max(r);
                    break;
                }
                SyncEvent::Disconnected { error } => {
                    info!("sync lost: {error}");
                    metrics.resync_state.set(resync::WAITING);
                    metrics.resyncs.inc();
                    current.in_sync = false;
                    break;
                }
            }
            if updates.len() >= 100_000 {
                break;
            }
        }
        if !updates.is_empty() && !current.in_sync {
            metrics.resync_state.set(resync::RESYNCING);
        }
        if let Some((calc, programmer)) = routes.as_mut() {
            let changes = calc.apply(&updates);
            if let Err(e) = programmer.apply(&changes) {
                error!("cannot program routes: {e}");
                metrics.dataplane_failures.inc();
            }
            // Then the device's peers, and the routes its start moves into
            // the tunnel (after the ones above, which they supersede).
            tunnel(wireguard.as_mut(), calc, programmer, &metrics);
        }
        let started = Instant::now();
        if let Some(f) = dataplane.flows.as_mut() {
            for u in &updates {
                f.pipeline.update(u);
            }
        }
        for u in updates {
            graph.update(u);
        }
        let mut ready = graph.ready();
        if let Some(at) = in_sync_at {
            ready.ops.push(Operation::InSync);
            complete = true;
            if !current.in_sync {
                info!(revision = at, "in sync with Typha");
            }
            current.in_sync = true;
            metrics.resync_state.set(resync::IN_SYNC);
        }
        current.revision = revision;
        metrics.revision.set(revision);
        metrics
            .calc_graph_update_time
            .observe(started.elapsed().as_secs_f64());
        metrics.observe(graph.stats());
        if !ready.ops.is_empty() {
            dataplane.batch(&mut graph, &ready, revision, &mut current);
        }
        status.send_replace(current);
    }
}

/// Brings the WireGuard device in line with the route calculation and
/// programs the routes its start moves into the tunnel.
fn tunnel(
    wireguard: Option<&mut Wireguard>,
    calc: &mut RouteCalc,
    programmer: &RouteProgrammer,
    metrics: &FelixMetrics,
) {
    let Some(wg) = wireguard else { return };
    match wg.sync(calc) {
        Ok(changes) => {
            if let Err(e) = programmer.apply(&changes) {
                error!("cannot route through WireGuard: {e}");
                metrics.dataplane_failures.inc();
            }
        }
        Err(e) => {
            error!("WireGuard: {e}");
            metrics.dataplane_failures.inc();
        }
    }
}

/// Sleeps until `at`; never returns without one (the branch is disabled).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use manul_dataplane_api::{DriverError, NullDriver, PolicyCounter};
    use prometheus_client::registry::Registry;

    use super::*;

    struct Counting(Vec<PolicyCounter>);

    impl Driver for Counting {
        fn apply(&mut self, _: &[Operation]) -> Result<(), DriverError> {
            Ok(())
        }
        fn mark_stale(&mut self) {}
        fn name(&self) -> &'static str {
            "counting"
        }
        fn policy_counters(&self) -> Vec<PolicyCounter> {
            self.0.clone()
        }
    }

    fn exported(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with("felix_policy_flows_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Counts refreshes.
    struct Refreshing(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Driver for Refreshing {
        fn apply(&mut self, _: &[Operation]) -> Result<(), DriverError> {
            Ok(())
        }
        fn mark_stale(&mut self) {}
        fn name(&self) -> &'static str {
            "refreshing"
        }
        fn refresh(&mut self) -> Result<bool, DriverError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(false)
        }
    }

    #[tokio::test]
    async fn refresh_intervals_change_while_the_agent_runs() {
        use std::sync::atomic::Ordering;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (intervals, rx) = watch::channel(Intervals {
            dataplane: Duration::from_secs(3600),
            routes: Duration::ZERO,
        });
        let options = AgentOptions {
            intervals: Some(rx),
            ..AgentOptions::default()
        };
        let (_events, events_rx) = mpsc::channel(1);
        let mut registry = Registry::default();
        let metrics = FelixMetrics::register(&mut registry);
        let (status, _status_rx) = watch::channel(AgentStatus::default());
        let agent = tokio::spawn(run(
            CalcGraph::new("node1"),
            Box::new(Refreshing(count.clone())),
            events_rx,
            metrics,
            status,
            options,
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "refreshed at an hourly interval"
        );
        intervals.send_replace(Intervals {
            dataplane: Duration::from_millis(20),
            routes: Duration::ZERO,
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the new interval never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Zero turns the refresh off.
        intervals.send_replace(Intervals {
            dataplane: Duration::ZERO,
            routes: Duration::ZERO,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count.load(Ordering::SeqCst), stopped, "refreshed while off");
        agent.abort();
    }

    #[test]
    fn policy_flow_counters_grow_by_what_the_driver_counted_since() {
        let mut registry = Registry::default();
        let metrics = FelixMetrics::register(&mut registry);
        let mut totals = FlowTotals::default();
        let c = |allowed, denied| PolicyCounter {
            policy: "default/production/frontend-to-api".into(),
            allowed,
            denied,
        };
        totals.export(&Counting(vec![c(3, 1)]), &metrics);
        totals.export(&Counting(vec![c(5, 1)]), &metrics);
        let text = exported(&registry);
        assert!(text.contains("action=\"allow\"} 5"), "{text}");
        assert!(text.contains("action=\"deny\"} 1"), "{text}");
        // A driver restart resets its totals: they count from zero again,
        // and nothing is subtracted.
        totals.export(&Counting(vec![c(2, 0)]), &metrics);
        assert!(exported(&registry).contains("action=\"allow\"} 7"));
        totals.export(&Counting(vec![c(4, 0)]), &metrics);
        assert!(exported(&registry).contains("action=\"allow\"} 9"));
    }

    struct Tracking(Option<manul_dataplane_api::ConntrackUsage>);

    impl Driver for Tracking {
        fn apply(&mut self, _: &[Operation]) -> Result<(), DriverError> {
            Ok(())
        }
        fn mark_stale(&mut self) {}
        fn name(&self) -> &'static str {
            "bpf"
        }
        fn conntrack_usage(&self) -> Option<manul_dataplane_api::ConntrackUsage> {
            self.0
        }
        fn map_usage(&self) -> Vec<manul_dataplane_api::MapUsage> {
            self.0
                .map(|_| manul_dataplane_api::MapUsage {
                    map: "manul_svc_fe",
                    entries: 9,
                    capacity: 65536,
                })
                .into_iter()
                .collect()
        }
    }

    #[test]
    fn map_gauges_name_each_map_for_drivers_with_service_maps() {
        let mut registry = Registry::default();
        let metrics = FelixMetrics::register(&mut registry);
        export_map_usage(&Tracking(None), &metrics);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("felix_bpf_map_entries{"), "{text}");
        let usage = manul_dataplane_api::ConntrackUsage {
            entries: 0,
            capacity: 1,
        };
        export_map_usage(&Tracking(Some(usage)), &metrics);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("felix_bpf_map_entries{map=\"manul_svc_fe\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("felix_bpf_map_capacity{map=\"manul_svc_fe\"} 65536"),
            "{text}"
        );
    }

    #[test]
    fn conntrack_gauges_exist_only_for_drivers_with_a_table() {
        let mut registry = Registry::default();
        let metrics = FelixMetrics::register(&mut registry);
        let text = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        export_conntrack(&Tracking(None), &metrics);
        assert!(!text(&registry).contains("felix_conntrack_entries{"));
        let usage = manul_dataplane_api::ConntrackUsage {
            entries: 12,
            capacity: 524_288,
        };
        export_conntrack(&Tracking(Some(usage)), &metrics);
        let text = text(&registry);
        assert!(
            text.contains("felix_conntrack_entries{dataplane=\"bpf\"} 12"),
            "{text}"
        );
        assert!(
            text.contains("felix_conntrack_capacity{dataplane=\"bpf\"} 524288"),
            "{text}"
        );
    }

    /// A null driver that, while `fail` is positive, applies only the
    /// first half of a batch and then fails as a kernel would (and marks
    /// itself stale, as the contract requires).
    struct Flaky {
        inner: Arc<Mutex<NullDriver>>,
        fail: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    impl Driver for Flaky {
        fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut inner = self.inner.lock().unwrap();
            if self.fail.load(Ordering::SeqCst) == 0 {
                return inner.apply(batch);
            }
            self.fail.fetch_sub(1, Ordering::SeqCst);
            inner.apply(&batch[..batch.len() / 2])?;
            inner.mark_stale();
            Err(DriverError::Dataplane {
                driver: "flaky",
                context: "writing a map".into(),
                source: Box::new(std::io::Error::other("no space left")),
            })
        }
        fn mark_stale(&mut self) {
            self.inner.lock().unwrap().mark_stale();
        }
        fn name(&self) -> &'static str {
            "flaky"
        }
    }

    fn updates(yaml: &str) -> Vec<Update> {
        manul_model::load("test.yaml", yaml.as_bytes())
            .into_result()
            .unwrap()
            .into_iter()
            .map(|l| Update {
                key: l.resource.key(),
                value: Some(l.resource),
            })
            .collect()
    }

    fn wep(name: &str, node: &str, ip: &str, app: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: prod\n  labels: {{app: {app}}}\nspec:\n  node: {node}\n  interfaceName: mnl-{name}\n  ipNetworks: [{ip}/32]\n  profiles: [kns.prod]\n---\n"
        )
    }

    const POLICY: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: fe-to-api\n  namespace: prod\nspec:\n  selector: app == 'api'\n  ingress:\n  - action: Allow\n    source:\n      selector: app == 'fe'\n---\n";

    fn counter(registry: &Registry, line: &str) -> Option<u64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    }

    async fn wait_for(
        rx: &mut watch::Receiver<AgentStatus>,
        what: &str,
        f: impl Fn(&AgentStatus) -> bool,
    ) -> AgentStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let st = *rx.borrow_and_update();
            if f(&st) {
                return st;
            }
            assert!(
                tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_ok(),
                "never {what}: {st:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_resynced_with_backoff_until_the_driver_holds_the_graph_state() {
        let inner = Arc::new(Mutex::new(NullDriver::new()));
        let fail = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let driver = Box::new(Flaky {
            inner: inner.clone(),
            fail: fail.clone(),
            calls: calls.clone(),
        });
        let mut registry = Registry::default();
        let metrics = FelixMetrics::register(&mut registry);
        let (status_tx, mut status) = watch::channel(AgentStatus::default());
        let (tx, rx) = mpsc::channel(16);
        let agent = tokio::spawn(run(
            CalcGraph::new("node1"),
            driver,
            rx,
            metrics,
            status_tx,
            AgentOptions::default(),
        ));
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n---\n";
        let first = updates(&format!(
            "{ns}{}{}{POLICY}",
            wep("api", "node1", "10.65.0.2", "api"),
            wep("fe", "node2", "10.65.1.2", "fe"),
        ));
        tx.send(SyncEvent::Updates {
            updates: first.clone(),
            revision: 1,
        })
        .await
        .unwrap();
        tx.send(SyncEvent::InSync { revision: 1 }).await.unwrap();
        wait_for(&mut status, "ready", AgentStatus::ready).await;
        assert!(inner.lock().unwrap().in_sync());

        // The kernel refuses the next batch and the next two resyncs.
        fail.store(3, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let second = updates(&format!(
            "{}{}",
            wep("fe2", "node2", "10.65.1.3", "fe"),
            wep("db", "node1", "10.65.0.9", "api"),
        ));
        tx.send(SyncEvent::Updates {
            updates: second.clone(),
            revision: 2,
        })
        .await
        .unwrap();
        let st = wait_for(&mut status, "out of sync", |s| s.dataplane_out_of_sync).await;
        assert!(!st.ready(), "not ready while the dataplane is out of sync");
        // An update that arrives meanwhile is folded into the graph only.
        let third = updates(&wep("fe", "node2", "10.65.1.2", "other"));
        let before = calls.load(Ordering::SeqCst);
        tx.send(SyncEvent::Updates {
            updates: third.clone(),
            revision: 3,
        })
        .await
        .unwrap();
        let st = wait_for(&mut status, "resynced", |s| s.revision == 3 && s.ready()).await;
        // Resyncs after 100 ms, then 200 ms more, then 400 ms more.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(800),
            "{took:?}"
        );
        assert_eq!(st.driver_failures, 3);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 3,
            "only the three resyncs reached the driver"
        );

        // The driver holds exactly what a fresh graph computes from
        // everything, with nothing stale left over.
        let mut reference = NullDriver::new();
        let mut g = CalcGraph::new("node1");
        let mut ops = g.apply(first.into_iter().chain(second).chain(third));
        ops.extend(g.in_sync());
        reference.apply(&ops).unwrap();
        {
            let got = inner.lock().unwrap();
            assert_eq!(got.state(), reference.state());
            assert_eq!(got.stale_count(), 0);
        }
        assert_eq!(
            counter(
                &registry,
                "felix_resyncs_started_total{target=\"dataplane\"}"
            ),
            Some(3)
        );
        assert_eq!(
            counter(
                &registry,
                "felix_resyncs_started_total{target=\"datastore\"}"
            ),
            Some(0)
        );
        assert_eq!(
            counter(&registry, "felix_int_dataplane_failures_total"),
            Some(3)
        );
        assert_eq!(
            counter(&registry, "felix_int_dataplane_out_of_sync"),
            Some(0)
        );

        // Back in sync, batches are incremental again.
        tx.send(SyncEvent::Updates {
            updates: updates(&wep("fe3", "node2", "10.65.1.4", "fe")),
            revision: 4,
        })
        .await
        .unwrap();
        wait_for(&mut status, "at revision 4", |s| s.revision == 4).await;
        assert_eq!(calls.load(Ordering::SeqCst), before + 4);
        drop(tx);
        agent.await.unwrap();
    }
}
