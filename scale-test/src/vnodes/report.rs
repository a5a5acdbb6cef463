//! The virtual-node run's figures, printed as JSON (no I/O here).

use std::time::Duration;

use serde::Serialize;

use super::Config;
use crate::report::{LatencySummary, Machine};

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Percentiles of `values` (non-finite ones dropped).
pub fn summary(values: impl IntoIterator<Item = f64>) -> LatencySummary {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    LatencySummary::of_sorted(&v)
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub config: Config,
    pub machine: Machine,
    pub setup: Setup,
    pub startup: Startup,
    pub propagation: Propagation,
    /// Per replica.
    pub typha: Vec<ReplicaFigures>,
    pub virtual_nodes_cpu: VirtualNodesCpu,
    pub memory: Memory,
    /// The reconnect storm (`None` with `--kill none`).
    pub storm: Option<Storm>,
    /// Batches or resyncs a node's null driver refused (the contract's
    /// checks): 0 in a sound run.
    pub driver_failures: u64,
}

/// The cluster written before the nodes start.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub resources: usize,
    pub endpoints: usize,
    pub write_s: f64,
    pub revision: u64,
}

/// From starting every node until all are in sync and hold the probe
/// policy.
#[derive(Debug, Serialize)]
pub struct Startup {
    /// From the first node's start until every node was in sync.
    pub all_in_sync_s: f64,
    /// From each node's start until its agent was first in sync at the
    /// cluster's revision.
    pub node_in_sync_ms: LatencySummary,
    /// CPU seconds this process used meanwhile.
    pub cpu_s: f64,
    /// Nodes whose first connection got a snapshot (all of them).
    pub snapshots: usize,
    /// Operations each node's driver took to get there.
    pub operations_per_node: LatencySummary,
}

/// Policy-change propagation.
#[derive(Debug, Serialize)]
pub struct Propagation {
    pub changes: u32,
    /// From the write's acknowledgement until one node's driver took it,
    /// over every node and change (a node that took it before the
    /// acknowledgement arrived counts 0).
    pub ack_to_node_ms: LatencySummary,
    /// From the acknowledgement until the last node took it, per change.
    pub ack_to_all_nodes_ms: LatencySummary,
    /// From sending the write until its acknowledgement.
    pub write_ack_ms: LatencySummary,
    /// Node-changes taken before the writer had the acknowledgement.
    pub nodes_before_ack: usize,
}

/// One replica's CPU and memory, from `/proc`.
#[derive(Debug, Serialize)]
pub struct ReplicaFigures {
    pub replica: u64,
    /// Sync clients it served during the changes.
    pub clients: usize,
    pub rss_before_clients_bytes: u64,
    pub rss_in_sync_bytes: u64,
    /// RSS growth from no clients to all in sync, per client.
    pub rss_per_client_bytes: Option<f64>,
    /// CPU seconds from the first node's start until all were in sync.
    pub startup_cpu_s: f64,
    /// CPU seconds over the changes (pauses included).
    pub changes_cpu_s: f64,
    pub changes_cpu_percent: f64,
    pub cpu_per_client_per_change_us: Option<f64>,
}

/// This process's CPU over the changes (every node's sync client, graph
/// and driver, and the run itself).
#[derive(Debug, Serialize)]
pub struct VirtualNodesCpu {
    pub changes_cpu_s: f64,
    pub per_node_per_change_us: f64,
}

/// This process's memory.
#[derive(Debug, Serialize)]
pub struct Memory {
    pub rss_before_nodes_bytes: u64,
    pub rss_in_sync_bytes: u64,
    pub rss_after_changes_bytes: u64,
    pub peak_rss_bytes: u64,
    /// RSS growth per node, after the changes.
    pub per_node_bytes: f64,
    /// RSS growth per node, once all were in sync.
    pub per_node_in_sync_bytes: f64,
}

/// One replica SIGKILLed.
#[derive(Debug, Serialize)]
pub struct Storm {
    pub killed_replica: u64,
    pub killed_leader: bool,
    /// Nodes that were following it.
    pub clients_moved: usize,
    /// Hellos every node got after the kill.
    pub reconnects: usize,
    /// Of them: resumed from the client's revision.
    pub resumed: usize,
    /// Of them: a snapshot followed.
    pub snapshots: usize,
    /// Snapshots the surviving replicas sent meanwhile, from their
    /// `typha_client_snapshot_send_secs_count`.
    pub server_snapshots: u64,
    /// From the kill until the change written after it was acknowledged.
    pub write_ack_ms: f64,
    /// From the kill until each moved client's hello from another replica.
    pub reconnect_ms: LatencySummary,
    pub all_back_ms: f64,
    /// From the kill until the last node's driver took the change.
    pub change_to_every_node_ms: f64,
    /// From the kill until every node's agent was in sync at the change's
    /// revision (polled every 20 ms).
    pub converged_ms: f64,
}

impl Report {
    /// Whether the run met its own invariants: no driver refused a batch,
    /// and (with a storm) every moved client resumed without a snapshot.
    pub fn sound(&self) -> bool {
        self.driver_failures == 0
            && self.storm.as_ref().is_none_or(|s| {
                s.snapshots == 0 && s.server_snapshots == 0 && s.resumed >= s.clients_moved
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_drop_non_finite_values() {
        let s = summary([3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!(s.count, 3);
        assert_eq!(s.p50, Some(2.0));
        assert_eq!(s.max, Some(3.0));
        assert_eq!(summary([]).p50, None);
    }
}
