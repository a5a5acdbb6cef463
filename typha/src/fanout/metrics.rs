//! Fan-out metrics (prometheus-client). Exposed names are listed in the
//! module documentation of [`super`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a sync stream was ended (or refused) by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    /// The client read too slowly: what it needed next left the history.
    FellBehind,
    /// The history restarted after a Raft snapshot, past the client.
    HistoryReset,
    /// Refused: the replica was at `max_connections`.
    Limit,
    /// Ended by [`super::Fanout::shutdown`].
    Shutdown,
    /// Its client took nothing queued for `stall_timeout`.
    Stalled,
    /// Ended or refused while the replica does not serve
    /// ([`super::Fanout::stop_serving`]: it has not known a Raft leader
    /// since it started, or has known none for an election timeout).
    NotServing,
}

impl DropReason {
    pub(crate) const ALL: [DropReason; 6] = [
        DropReason::FellBehind,
        DropReason::HistoryReset,
        DropReason::Limit,
        DropReason::Shutdown,
        DropReason::Stalled,
        DropReason::NotServing,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::FellBehind => "fell_behind",
            DropReason::HistoryReset => "history_reset",
            DropReason::Limit => "limit",
            DropReason::Shutdown => "shutdown",
            DropReason::Stalled => "stalled",
            DropReason::NotServing => "not_serving",
        }
    }
}

/// The `reason` label of `typha_connections_dropped_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DropLabels {
    reason: &'static str,
}

/// The fan-out's metrics. Cheap to clone: every clone updates the same
/// series.
#[derive(Debug, Clone)]
pub struct FanoutMetrics {
    pub(crate) connections_active: Gauge,
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_dropped: Family<DropLabels, Counter>,
    pub(crate) updates: Counter,
    pub(crate) breadcrumb_seq_number: Gauge,
    pub(crate) client_snapshot_send_secs: Histogram,
    pub(crate) snapshots_generated: Counter,
    pub(crate) snapshots_reused: Counter,
    pub(crate) history_bytes: Gauge,
    /// 1 while the replica serves Sync clients, 0 while it does not
    /// ([`super::Fanout::stop_serving`]).
    pub(crate) serving: Gauge,
}

impl Default for FanoutMetrics {
    fn default() -> Self {
        FanoutMetrics::new()
    }
}

impl FanoutMetrics {
    /// Unregistered metrics (for tests, or to register later).
    pub fn new() -> FanoutMetrics {
        FanoutMetrics {
            connections_active: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_dropped: Family::default(),
            updates: Counter::default(),
            breadcrumb_seq_number: Gauge::default(),
            // 1 ms .. ~33 s.
            client_snapshot_send_secs: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            snapshots_generated: Counter::default(),
            snapshots_reused: Counter::default(),
            history_bytes: Gauge::default(),
            serving: Gauge::default(),
        }
    }

    /// New metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> FanoutMetrics {
        let metrics = FanoutMetrics::new();
        // Every reason's series exists (at 0) from the start, so a rate
        // over it is 0 rather than missing.
        for reason in DropReason::ALL {
            let _series = metrics.connections_dropped.get_or_create(&DropLabels {
                reason: reason.as_str(),
            });
        }
        metrics.serving.set(1);
        registry.register(
            "typha_serving",
            "1 while this replica serves Sync clients, 0 while it refuses them (no Raft leader known, or not caught up)",
            metrics.serving.clone(),
        );
        registry.register(
            "typha_connections_active",
            "Sync streams currently open",
            metrics.connections_active.clone(),
        );
        registry.register(
            "typha_connections_accepted",
            "Sync streams accepted",
            metrics.connections_accepted.clone(),
        );
        registry.register(
            "typha_connections_dropped",
            "Sync streams ended or refused by the server, by reason",
            metrics.connections_dropped.clone(),
        );
        registry.register(
            "typha_updates",
            "Entries published to the fan-out",
            metrics.updates.clone(),
        );
        registry.register(
            "typha_breadcrumb_seq_number",
            "Latest revision published to the fan-out",
            metrics.breadcrumb_seq_number.clone(),
        );
        registry.register(
            "typha_client_snapshot_send_secs",
            "Time to send a snapshot to a client, from hello to in-sync",
            metrics.client_snapshot_send_secs.clone(),
        );
        registry.register(
            "typha_snapshots_generated",
            "Snapshots taken from the state machine and encoded",
            metrics.snapshots_generated.clone(),
        );
        registry.register(
            "typha_snapshots_reused",
            "Clients served a snapshot that was already taken",
            metrics.snapshots_reused.clone(),
        );
        registry.register(
            "typha_history_bytes",
            "Encoded bytes of the retained delta history",
            metrics.history_bytes.clone(),
        );
        metrics
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.connections_dropped
            .get_or_create(&DropLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Current value of `typha_connections_dropped_total{reason}`.
    #[cfg(test)]
    pub(crate) fn dropped_count(&self, reason: DropReason) -> u64 {
        self.connections_dropped
            .get_or_create(&DropLabels {
                reason: reason.as_str(),
            })
            .get()
    }
}

/// Gauges are `i64`; sizes and revisions are not.
pub(crate) fn gauge_value<T: TryInto<i64>>(value: T) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}
