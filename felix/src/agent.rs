//! The agent loop: sync events in, calculation graph, driver out. A thin
//! async shell around the I/O-free graph.

use std::time::Instant;

use manul_dataplane_api::Driver;
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::calc::{CalcGraph, Update};
use crate::metrics::{FelixMetrics, resync};
use crate::sync::SyncEvent;

/// What the health endpoints report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub in_sync: bool,
    pub revision: u64,
    pub driver_failures: u64,
}

/// Runs the agent until the sync client stops.
pub async fn run(
    mut graph: CalcGraph,
    mut driver: Box<dyn Driver>,
    mut events: mpsc::Receiver<SyncEvent>,
    metrics: FelixMetrics,
    status: watch::Sender<AgentStatus>,
) {
    metrics.resync_state.set(resync::WAITING);
    let mut current = AgentStatus::default();
    while let Some(first) = events.recv().await {
        // Coalesce whatever else is queued into one graph pass.
        let mut updates: Vec<Update> = Vec::new();
        let mut in_sync_at = None;
        let mut pending = Some(first);
        while let Some(event) = pending.take().or_else(|| events.try_recv().ok()) {
            match event {
                SyncEvent::Updates(u) => updates.extend(u),
                SyncEvent::InSync { revision } => {
                    in_sync_at = Some(revision);
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
        let started = Instant::now();
        let mut ops = graph.apply(updates);
        if let Some(revision) = in_sync_at {
            ops.extend(graph.in_sync());
            current.revision = revision;
            if !current.in_sync {
                info!(revision, "in sync with Typha");
            }
            current.in_sync = true;
            metrics.resync_state.set(resync::IN_SYNC);
            metrics.revision.set(revision);
        }
        metrics
            .calc_graph_update_time
            .observe(started.elapsed().as_secs_f64());
        metrics.observe(graph.stats());
        if !ops.is_empty() {
            let started = Instant::now();
            metrics.operations.inc_by(ops.len() as u64);
            if let Err(e) = driver.apply(&ops) {
                error!(driver = driver.name(), "dataplane refused a batch: {e}");
                metrics.dataplane_failures.inc();
                current.driver_failures += 1;
            }
            metrics
                .dataplane_apply_time
                .observe(started.elapsed().as_secs_f64());
        }
        status.send_replace(current);
    }
}
