//! The agent loop: sync events in, calculation graph, driver out. A thin
//! async shell around the I/O-free graph.

use std::time::{Duration, Instant};

use manul_dataplane_api::{Driver, Operation};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::calc::{CalcGraph, Update};
use crate::metrics::{FelixMetrics, PolicyFlowLabels, resync};
use crate::routes::{RouteCalc, RouteProgrammer};
use crate::status::StatusReporter;
use crate::sync::SyncEvent;

/// What the health endpoints report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub in_sync: bool,
    pub revision: u64,
    pub driver_failures: u64,
}

/// How the agent runs besides its inputs.
#[derive(Debug)]
pub struct AgentOptions {
    /// Program routes to other nodes' pod blocks (`--program-routes`).
    pub routes: Option<(RouteCalc, RouteProgrammer)>,
    /// Where to report programmed endpoints (`--status-dir`).
    pub status: Option<StatusReporter>,
    /// How often the driver checks the kernel for out-of-band changes.
    pub refresh_interval: Duration,
    /// Later values of the refresh intervals (Felix's configuration,
    /// applied live); a zero interval turns that refresh off.
    pub intervals: Option<watch::Receiver<Intervals>>,
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
            status: None,
            refresh_interval: Duration::from_secs(90),
            intervals: None,
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

/// Runs the agent until the sync client stops.
pub async fn run(
    mut graph: CalcGraph,
    mut driver: Box<dyn Driver>,
    mut events: mpsc::Receiver<SyncEvent>,
    metrics: FelixMetrics,
    status: watch::Sender<AgentStatus>,
    mut options: AgentOptions,
) {
    metrics.resync_state.set(resync::WAITING);
    let mut current = AgentStatus::default();
    let mut flows = FlowTotals::default();
    let mut counters = tokio::time::interval(Duration::from_secs(5));
    counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = ticker(options.refresh_interval);
    let mut route_refresh: Option<tokio::time::Interval> = None;
    let mut intervals = options.intervals.take();
    if let Some(i) = intervals.as_mut().map(|r| *r.borrow_and_update()) {
        refresh = ticker(i.dataplane);
        route_refresh = ticker(i.routes);
    }
    loop {
        let first = tokio::select! {
            event = events.recv() => match event {
                Some(e) => e,
                None => break,
            },
            _ = counters.tick() => {
                flows.export(driver.as_ref(), &metrics);
                continue;
            }
            Some(i) = next_intervals(&mut intervals) => {
                info!(dataplane = ?i.dataplane, routes = ?i.routes, "refresh intervals changed");
                refresh = ticker(i.dataplane);
                route_refresh = ticker(i.routes);
                continue;
            }
            _ = tick(&mut route_refresh) => {
                if let Some((calc, programmer)) = options.routes.as_ref()
                    && let Err(e) = programmer.apply(&calc.all())
                {
                    error!("cannot refresh routes: {e}");
                    metrics.dataplane_failures.inc();
                }
                continue;
            }
            _ = tick(&mut refresh) => {
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
        if let Some((calc, programmer)) = options.routes.as_mut() {
            let changes = calc.apply(&updates);
            if let Err(e) = programmer.apply(&changes) {
                error!("cannot program routes: {e}");
                metrics.dataplane_failures.inc();
            }
        }
        let started = Instant::now();
        let mut ops = graph.apply(updates);
        if let Some(at) = in_sync_at {
            ops.extend(graph.in_sync());
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
        if !ops.is_empty() {
            let started = Instant::now();
            metrics.operations.inc_by(ops.len() as u64);
            match driver.apply(&ops) {
                Ok(()) => {
                    if let Some(s) = &options.status {
                        report(s, &ops, revision);
                    }
                }
                Err(e) => {
                    error!(driver = driver.name(), "dataplane refused a batch: {e}");
                    metrics.dataplane_failures.inc();
                    current.driver_failures += 1;
                }
            }
            metrics
                .dataplane_apply_time
                .observe(started.elapsed().as_secs_f64());
        }
        status.send_replace(current);
    }
}

#[cfg(test)]
mod tests {
    use manul_dataplane_api::{DriverError, PolicyCounter};
    use prometheus_client::registry::Registry;

    use super::*;

    struct Counting(Vec<PolicyCounter>);

    impl Driver for Counting {
        fn apply(&mut self, _: &[Operation]) -> Result<(), DriverError> {
            Ok(())
        }
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
}
