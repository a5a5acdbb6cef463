//! Felix's Prometheus metrics, named like Calico Felix's where the meaning
//! is the same.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::calc::Stats;

/// `felix_resync_state` values, as Calico reports them.
pub mod resync {
    pub const WAITING: i64 = 1;
    pub const RESYNCING: i64 = 2;
    pub const IN_SYNC: i64 = 3;
}

/// Labels of `felix_resyncs_started`: what was resynced.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResyncLabels {
    /// `datastore`: the sync stream from Typha started again (Calico's
    /// meaning of the metric); `dataplane`: the driver was sent the whole
    /// state after a failed batch.
    pub target: String,
}

/// Labels of the per-policy flow counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyFlowLabels {
    pub policy: String,
    /// `allow` or `deny`.
    pub action: String,
}

/// Labels of the conntrack gauges: the driver whose table it is.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DataplaneLabels {
    pub dataplane: String,
}

/// Labels of the per-map gauges: the map's name (`manul_svc_fe`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

#[derive(Debug, Clone)]
pub struct FelixMetrics {
    pub policy_flows: Family<PolicyFlowLabels, Counter>,
    /// Series only for drivers that keep their own conntrack table.
    pub conntrack_entries: Family<DataplaneLabels, Gauge>,
    pub conntrack_capacity: Family<DataplaneLabels, Gauge>,
    /// Series only for drivers with sized service maps (eBPF).
    pub bpf_map_entries: Family<MapLabels, Gauge>,
    pub bpf_map_capacity: Family<MapLabels, Gauge>,
    pub calc_graph_update_time: Histogram,
    pub dataplane_apply_time: Histogram,
    pub dataplane_failures: Counter,
    pub dataplane_repairs: Counter,
    pub operations: Counter,
    pub active_local_endpoints: Gauge,
    pub active_local_policies: Gauge,
    pub active_local_profiles: Gauge,
    pub ipsets: Gauge,
    pub resync_state: Gauge,
    /// `felix_resyncs_started{target="datastore"}`.
    pub resyncs: Counter,
    /// `felix_resyncs_started{target="dataplane"}`.
    pub dataplane_resyncs: Counter,
    /// 1 while the driver is out of sync after a failed batch.
    pub dataplane_out_of_sync: Gauge,
    pub cluster_endpoints: Gauge,
    pub cluster_policies: Gauge,
    pub cluster_network_sets: Gauge,
    pub revision: Gauge<u64, AtomicU64>,
    pub flow_observations: Counter,
    pub flow_trace_mismatches: Counter,
    pub flow_observations_dropped: Gauge,
    pub flow_events_lost: Gauge,
    pub flow_records: Counter,
    pub flow_records_dropped: Counter,
}

impl Default for FelixMetrics {
    fn default() -> Self {
        let h = || Histogram::new(exponential_buckets(0.000_01, 2.0, 22));
        FelixMetrics {
            policy_flows: Family::default(),
            conntrack_entries: Family::default(),
            conntrack_capacity: Family::default(),
            bpf_map_entries: Family::default(),
            bpf_map_capacity: Family::default(),
            calc_graph_update_time: h(),
            dataplane_apply_time: h(),
            dataplane_failures: Counter::default(),
            dataplane_repairs: Counter::default(),
            operations: Counter::default(),
            active_local_endpoints: Gauge::default(),
            active_local_policies: Gauge::default(),
            active_local_profiles: Gauge::default(),
            ipsets: Gauge::default(),
            resync_state: Gauge::default(),
            resyncs: Counter::default(),
            dataplane_resyncs: Counter::default(),
            dataplane_out_of_sync: Gauge::default(),
            cluster_endpoints: Gauge::default(),
            cluster_policies: Gauge::default(),
            cluster_network_sets: Gauge::default(),
            revision: Gauge::default(),
            flow_observations: Counter::default(),
            flow_trace_mismatches: Counter::default(),
            flow_observations_dropped: Gauge::default(),
            flow_events_lost: Gauge::default(),
            flow_records: Counter::default(),
            flow_records_dropped: Counter::default(),
        }
    }
}

impl FelixMetrics {
    pub fn register(registry: &mut Registry) -> FelixMetrics {
        let mut m = FelixMetrics::default();
        // Both series of the family exist (at 0) from the start.
        let resyncs = Family::<ResyncLabels, Counter>::default();
        let series = |target: &str| {
            resyncs
                .get_or_create(&ResyncLabels {
                    target: target.into(),
                })
                .clone()
        };
        m.resyncs = series("datastore");
        m.dataplane_resyncs = series("dataplane");
        registry.register(
            "felix_calc_graph_update_time_seconds",
            "Time to process one batch of updates in the calculation graph",
            m.calc_graph_update_time.clone(),
        );
        registry.register(
            "felix_int_dataplane_apply_time_seconds",
            "Time to apply one batch of operations to the dataplane",
            m.dataplane_apply_time.clone(),
        );
        registry.register(
            "felix_int_dataplane_failures",
            "Batches and resyncs the dataplane driver refused (each is retried by a resync)",
            m.dataplane_failures.clone(),
        );
        registry.register(
            "felix_flow_observations",
            "Flow observations taken from the dataplane driver (starts, updates, ends, denied bursts)",
            m.flow_observations.clone(),
        );
        registry.register(
            "felix_flow_trace_mismatches",
            "Observations whose policy trace on Felix's copy of the dataplane state ended elsewhere than the kernel's deciding rule",
            m.flow_trace_mismatches.clone(),
        );
        registry.register(
            "felix_flow_observations_dropped",
            "Flow observations the driver dropped because its queue was full, since it started",
            m.flow_observations_dropped.clone(),
        );
        registry.register(
            "felix_flow_events_lost",
            "Flow events the kernel could not hand to the driver (its event ring full), since the driver's maps were created",
            m.flow_events_lost.clone(),
        );
        registry.register(
            "felix_flow_records",
            "Aggregated flow records handed to the exporter",
            m.flow_records.clone(),
        );
        registry.register(
            "felix_flow_records_dropped",
            "Aggregated flow records dropped because the exporter was behind",
            m.flow_records_dropped.clone(),
        );
        registry.register(
            "felix_policy_flows",
            "New flows allowed and denied, per deciding policy (dataplanes with flow events)",
            m.policy_flows.clone(),
        );
        registry.register(
            "felix_conntrack_entries",
            "Live entries of the dataplane's own conntrack table at its last garbage collection (dataplanes with one: bpf)",
            m.conntrack_entries.clone(),
        );
        registry.register(
            "felix_conntrack_capacity",
            "Entries the dataplane's own conntrack table holds at most (dataplanes with one: bpf)",
            m.conntrack_capacity.clone(),
        );
        registry.register(
            "felix_bpf_map_entries",
            "Entries of each eBPF service map (frontends, backends, Maglev slots, affinity), per map",
            m.bpf_map_entries.clone(),
        );
        registry.register(
            "felix_bpf_map_capacity",
            "Entries each eBPF service map holds at most (bpfMapSizeNAT*), per map",
            m.bpf_map_capacity.clone(),
        );
        registry.register(
            "felix_int_dataplane_repairs",
            "Refreshes that found and repaired out-of-band changes to the dataplane",
            m.dataplane_repairs.clone(),
        );
        registry.register(
            "felix_int_dataplane_operations",
            "Operations sent to the dataplane driver",
            m.operations.clone(),
        );
        registry.register(
            "felix_active_local_endpoints",
            "Local workload and host endpoints",
            m.active_local_endpoints.clone(),
        );
        registry.register(
            "felix_active_local_policies",
            "Policies that apply to at least one local endpoint",
            m.active_local_policies.clone(),
        );
        registry.register(
            "felix_active_local_profiles",
            "Profiles used by local endpoints",
            m.active_local_profiles.clone(),
        );
        registry.register(
            "felix_ipsets_calico",
            "IP sets programmed",
            m.ipsets.clone(),
        );
        registry.register(
            "felix_resync_state",
            "Datastore sync state: 1 waiting, 2 resyncing, 3 in sync",
            m.resync_state.clone(),
        );
        registry.register(
            "felix_resyncs_started",
            "Resyncs started: of the datastore stream (target=datastore, a new connection to Typha) and of the dataplane driver from the whole state after a failed batch (target=dataplane)",
            resyncs,
        );
        registry.register(
            "felix_int_dataplane_out_of_sync",
            "1 while the dataplane driver is out of sync after a failed batch and a resync is pending",
            m.dataplane_out_of_sync.clone(),
        );
        registry.register(
            "felix_cluster_num_workload_endpoints",
            "Workload and host endpoints in the cluster",
            m.cluster_endpoints.clone(),
        );
        registry.register(
            "felix_cluster_num_policies",
            "Policies in the cluster",
            m.cluster_policies.clone(),
        );
        registry.register(
            "felix_cluster_num_network_sets",
            "Network sets in the cluster",
            m.cluster_network_sets.clone(),
        );
        registry.register(
            "felix_sync_revision",
            "Last Typha revision applied",
            m.revision.clone(),
        );
        m
    }

    pub fn observe(&self, s: Stats) {
        self.active_local_endpoints.set(s.local_endpoints as i64);
        self.active_local_policies.set(s.active_policies as i64);
        self.active_local_profiles.set(s.active_profiles as i64);
        self.ipsets.set(s.ip_sets as i64);
        self.cluster_endpoints.set(s.endpoints as i64);
        self.cluster_policies.set(s.policies as i64);
        self.cluster_network_sets.set(s.network_sets as i64);
    }
}
