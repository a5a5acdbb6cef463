//! The agent loop: sync events in, calculation graph, driver out. A thin
//! async shell around the I/O-free graph.

use std::time::{Duration, Instant};

use manul_dataplane_api::{Driver, Operation};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::calc::{CalcGraph, Update};
use crate::metrics::{FelixMetrics, resync};
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
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            routes: None,
            status: None,
            refresh_interval: Duration::from_secs(90),
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
    let mut refresh = tokio::time::interval(options.refresh_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    loop {
        let first = tokio::select! {
            event = events.recv() => match event {
                Some(e) => e,
                None => break,
            },
            _ = refresh.tick() => {
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
