//! Connections and flows: conntrack entries and their collection, flow
//! events' counters and log, and the numeric labels events carry.

use std::sync::Mutex;
use std::time::Duration;

use manul_dataplane_api::PolicyCounter;

use super::BpfDriver;
use crate::compile::CompiledTable;
use crate::conntrack::{self, ConntrackEntry, GcStats};
use crate::error::BpfError;
use crate::events::{self, FlowCounters, FlowLogInterval, Shared};
use crate::flow_track::{Interface, SlotOwner};
use crate::keys;
use crate::plan::EndpointKey;

impl BpfDriver {
    /// Collects conntrack entries idle past their timeout at `now`
    /// (CLOCK_MONOTONIC; see [`conntrack::monotonic_now`]). The background
    /// thread also does this every `gc_interval`.
    pub fn gc(&mut self, now: Duration) -> Result<GcStats, BpfError> {
        conntrack::gc(&mut self.maps.ct, &self.config.conntrack_timeouts, now)
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Vec<ConntrackEntry> {
        conntrack::entries(&self.maps.ct)
    }

    /// Per-policy allow and deny counts from flow events so far.
    pub fn flow_counters(&self) -> FlowCounters {
        let s = events::lock(&self.shared);
        s.counters.snapshot(&s.labels)
    }

    /// A handle that changes how often the flow log is written, while the
    /// driver runs (Felix's `flowLogsFlushInterval`).
    pub fn flow_log_interval(&self) -> FlowLogInterval {
        self.flow_log_interval.clone()
    }

    /// Drains pending flow events and writes the flow log now.
    pub fn flush_flow_log(&self) {
        if let Some(r) = &self.reader {
            r.flush();
        }
    }

    /// Which endpoint each programmed interface is, for the flow
    /// observations' reporting side.
    pub(super) fn record_interfaces(&self) {
        let interfaces = self
            .ledger
            .endpoints
            .iter()
            .filter_map(|(key, p)| {
                let iface = match key {
                    EndpointKey::Workload(id) => Interface::Workload(id.clone()),
                    EndpointKey::Host { .. } => Interface::Host,
                };
                Some((p.ifindex?, iface))
            })
            .collect();
        events::lock(&self.shared).resolver.interfaces = interfaces;
    }

    /// The flow-event counters per deciding policy, in name order.
    pub(super) fn policy_counter_list(&self) -> Vec<PolicyCounter> {
        self.flow_counters()
            .per_policy
            .into_iter()
            .map(|(policy, c)| PolicyCounter {
                policy,
                allowed: c.allowed,
                denied: c.denied,
            })
            .collect()
    }
}

/// Numeric policy and rule ids of each slot (interned for the flow
/// events), with what each policy id stands for (flow observations).
pub(crate) fn labels(shared: &Mutex<Shared>, table: &CompiledTable) -> Vec<(u32, u32)> {
    let mut s = events::lock(shared);
    table
        .slots
        .iter()
        .map(|slot| {
            let (p, r) = keys::slot_labels(&slot.kind);
            let ids = (s.labels.intern(&p), s.labels.intern(&r));
            s.resolver
                .owners
                .entry(ids.0)
                .or_insert_with(|| SlotOwner::of(&slot.kind));
            ids
        })
        .collect()
}
