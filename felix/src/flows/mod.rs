//! Flows: what the driver observed ([`manul_dataplane_api::flows`]),
//! enriched with what Felix knows and aggregated per interval into flow
//! records for the flow aggregator.
//!
//! The core ([`FlowPipeline`]) does no I/O and reads no clock: the agent
//! hands it the sync updates (for [`endpoints`]), the batches the driver
//! took (a mirror of the driver's desired state, which [`trace`] judges
//! flows against), the observations it drains from the driver and the
//! time. [`export`] is the thin task that streams the records to the
//! aggregator.
//!
//! It refuses to invent what it does not know: an address no endpoint or
//! node owns is the reporting endpoint's when it is on the reporting side
//! (a pod's link-local source), else a network by its class
//! ([`network_class`]: `pub`, `pvt`, `link-local`, `multicast`), a trace
//! that disagrees with the kernel is the kernel's deciding rule alone (and
//! counted), and the
//! pending trace ([`pending`]: what the staged policies would do) is empty
//! while no staged policy exists.

pub mod aggregate;
pub mod endpoints;
pub mod export;
pub mod pending;
pub mod trace;
pub mod workload;

use std::net::IpAddr;

use manul_dataplane_api::{
    DesiredState, Driver, EndpointId, FlowObservation, NullDriver, Operation, Reporter,
};
use manul_proto::flows::{FlowEndpoint, FlowRecord};

use aggregate::{Aggregator, Enriched, wire_labels};
use endpoints::EndpointIndex;
use pending::StagedPolicies;

use crate::calc::Update;

/// Counters of the pipeline, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStats {
    pub observations: u64,
    pub trace_mismatches: u64,
    pub records: u64,
    /// Observations whose pending trace could not be computed.
    pub pending_errors: u64,
}

/// Observations in, records out (see the module documentation).
pub struct FlowPipeline {
    mirror: NullDriver,
    index: EndpointIndex,
    aggregator: Aggregator,
    pending: StagedPolicies,
    pub stats: PipelineStats,
}

impl std::fmt::Debug for FlowPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowPipeline")
            .field("endpoints", &self.index.len())
            .field("open_records", &self.aggregator.len())
            .field("staged_policies", &self.pending.staged())
            .field("stats", &self.stats)
            .finish()
    }
}

impl FlowPipeline {
    /// A pipeline for `node`, aggregating over `interval_s`, from `now_s`.
    pub fn new(node: &str, interval_s: u64, now_s: u64) -> FlowPipeline {
        FlowPipeline {
            mirror: NullDriver::new(),
            index: EndpointIndex::default(),
            aggregator: Aggregator::new(node, interval_s, now_s),
            pending: StagedPolicies::new(),
            stats: PipelineStats::default(),
        }
    }

    /// A sync update (endpoints' and nodes' addresses, labels; the
    /// policies, staged ones included, for the pending trace).
    pub fn update(&mut self, u: &Update) {
        self.index.update(u);
        self.pending.update(u);
    }

    /// How many staged policies the pending trace evaluates.
    pub fn staged_policies(&self) -> usize {
        self.pending.staged()
    }

    /// The driver took `batch`: the mirror follows.
    pub fn applied(&mut self, batch: &[Operation]) {
        if let Err(e) = self.mirror.apply(batch) {
            tracing::warn!(
                "the flow pipeline's copy of the dataplane state refused a batch the driver took: {e}"
            );
            self.mirror.mark_stale();
        }
    }

    /// The driver went stale: the whole state follows.
    pub fn mark_stale(&mut self) {
        self.mirror.mark_stale();
    }

    /// The state traces are computed on.
    pub fn state(&self) -> &DesiredState {
        self.mirror.state()
    }

    /// Enriches and aggregates observations.
    pub fn observe(&mut self, observations: Vec<FlowObservation>) {
        for obs in observations {
            self.stats.observations += 1;
            let e = self.enrich(&obs);
            self.aggregator.add(e);
        }
    }

    /// One observation with both endpoints, its traces and its Service.
    pub fn enrich(&mut self, obs: &FlowObservation) -> Enriched {
        let state = self.mirror.state();
        let t = trace::enforced(state, obs);
        if t.mismatch {
            self.stats.trace_mismatches += 1;
        }
        let pending = self.pending.pending(obs);
        self.stats.pending_errors = self.pending.errors;
        let service = obs.service_frontend.and_then(|(addr, port)| {
            manul_dataplane_api::service_at(state.services.values(), addr, port, obs.tuple.protocol)
                .map(|(s, p)| (s.namespace.clone(), s.name.clone(), p.port))
        });
        // The endpoint whose policy judged the flow is the reporting side's.
        let reporting = |side: Reporter| obs.endpoint.as_ref().filter(|_| obs.reporter == side);
        Enriched {
            phase: obs.phase,
            tuple: obs.tuple,
            reporter: obs.reporter,
            src: self.endpoint(obs.tuple.src, reporting(Reporter::Source)),
            dst: self.endpoint(obs.tuple.dst, reporting(Reporter::Destination)),
            allowed: obs.allowed,
            enforced: t.hits,
            pending: pending.hits,
            pending_allowed: pending.allowed,
            service,
            counts: obs.counts,
        }
    }

    /// The endpoint at `addr`: the workload that owns it; else the
    /// endpoint that reported the flow on this side (a pod's link-local or
    /// unspecified source address is still that pod's); else the node that
    /// owns it; else its network class ([`network_class`]).
    fn endpoint(&self, addr: IpAddr, reporting: Option<&EndpointId>) -> FlowEndpoint {
        let pod = |w: &endpoints::EndpointInfo| FlowEndpoint {
            kind: "pod".to_owned(),
            namespace: w.namespace.clone(),
            workload: w.workload.clone(),
            labels: wire_labels(&w.labels),
        };
        if let Some(w) = self.index.workload_at(addr) {
            return pod(w);
        }
        if let Some(w) = reporting.and_then(|id| self.index.workload_named(id)) {
            return pod(w);
        }
        if let Some(node) = self.index.node_at(addr) {
            return FlowEndpoint {
                kind: "host".to_owned(),
                namespace: String::new(),
                workload: node.to_owned(),
                labels: Default::default(),
            };
        }
        FlowEndpoint {
            kind: "net".to_owned(),
            namespace: String::new(),
            workload: network_class(addr).to_owned(),
            labels: Default::default(),
        }
    }

    /// The interval's records once it is over at `now_s`.
    pub fn flush_if_due(&mut self, now_s: u64) -> Option<Vec<FlowRecord>> {
        if !self.aggregator.due(now_s) {
            return None;
        }
        let records = self.aggregator.flush(now_s);
        self.stats.records += records.len() as u64;
        Some(records)
    }

    /// Drains the driver and aggregates what it observed; the interval's
    /// records once it is over.
    pub fn poll(&mut self, driver: &mut dyn Driver, now_s: u64) -> Option<Vec<FlowRecord>> {
        let observations = driver.take_flows();
        self.observe(observations);
        self.flush_if_due(now_s)
    }
}

/// The network an address no workload or node owns belongs to:
/// `multicast` (224.0.0.0/4, the broadcast address, ff00::/8),
/// `link-local` (169.254.0.0/16, fe80::/10 and the unspecified address:
/// valid on one link only), `pvt` (RFC 1918, CGNAT 100.64.0.0/10,
/// loopback, RFC 4193 fc00::/7: the ranges Calico calls private) or
/// `pub` (anything else).
pub fn network_class(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(a) if a.is_multicast() || a.is_broadcast() => "multicast",
        IpAddr::V4(a) if a.is_link_local() || a.is_unspecified() => "link-local",
        IpAddr::V4(a)
            if a.is_private()
                || a.is_loopback()
                || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64) =>
        {
            "pvt"
        }
        IpAddr::V6(a) if a.is_multicast() => "multicast",
        IpAddr::V6(a) if a.is_unicast_link_local() || a.is_unspecified() => "link-local",
        IpAddr::V6(a) if (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_loopback() => "pvt",
        _ => "pub",
    }
}

#[cfg(test)]
mod tests;
