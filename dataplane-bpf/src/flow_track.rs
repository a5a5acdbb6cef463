//! Flow observations ([`manul_dataplane_api::flows`]) from what the kernel
//! keeps, with no I/O: a flow-start or denial event becomes a `Start` or
//! `Denied` observation; the connections whose start was seen are followed
//! through the conntrack table's scans (the garbage collection's), which
//! give an `Update` with the counters when they moved and an `End` with the
//! totals when the entry expired or is gone (evicted by the LRU, or the
//! program replaced). An allowed connection whose start event was lost
//! (the ring buffer full) is not lost: the scan that finds its entry
//! unfollowed makes its `Start` from the entry ([`Tracker::lost_start`],
//! [`Resolver::recovered_start`]) and follows it from there. Denials of one 5-tuple on one interface within one
//! drain of the ring buffer are folded into one observation (a burst).
//!
//! The kernel's per-packet work is unchanged by this: the counters are the
//! conntrack entry's own, the events are the ones the flow log used.

use std::collections::HashMap;
use std::net::IpAddr;

use manul_dataplane_api::{
    Decider, EndpointId, FlowCounts, FlowObservation, FlowPhase, FlowTuple, PolicyId, Reporter,
};

use crate::abi;
use crate::compile::SlotKind;
use crate::events::Labels;
use crate::keys::addr_from;

/// A connection on one interface, its originator first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub ifindex: u32,
    pub tuple: FlowTuple,
}

/// What a rule slot's policy label stands for (registered when the driver
/// writes a table, so that an event's numeric ids give a [`Decider`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotOwner {
    Policy(PolicyId),
    Profile(String),
    TierDefault(String),
    NoMatch,
}

impl SlotOwner {
    pub fn of(kind: &SlotKind) -> SlotOwner {
        match kind {
            SlotKind::Policy { policy, .. } => SlotOwner::Policy(policy.clone()),
            SlotKind::Profile { profile, .. } => SlotOwner::Profile(profile.clone()),
            SlotKind::TierDefault { tier } => SlotOwner::TierDefault(tier.clone()),
            SlotKind::NoMatch => SlotOwner::NoMatch,
        }
    }
}

/// What the driver knows about its interfaces, for the reporting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    Workload(EndpointId),
    Host,
}

/// What an event needs resolved: labels, slot owners and interfaces.
#[derive(Debug, Default)]
pub struct Resolver {
    pub owners: HashMap<u32, SlotOwner>,
    pub interfaces: HashMap<u32, Interface>,
}

impl Resolver {
    /// The deciding rule of an event, as [`Decider`] names it.
    pub fn decider(&self, e: &abi::manul_event, labels: &Labels) -> Decider {
        self.decider_of(u32::from(e.reason), e.policy, e.rule, labels)
    }

    /// The decider of a `reason` (`MANUL_REASON_*`) and the policy and
    /// rule label ids.
    fn decider_of(&self, reason: u32, policy: u32, rule: u32, labels: &Labels) -> Decider {
        match reason {
            abi::MANUL_REASON_POLICY | abi::MANUL_REASON_TO_HOST => {}
            abi::MANUL_REASON_FAILSAFE | abi::MANUL_REASON_FORWARD_UNPOLICED => {
                return Decider::NotAnEndpoint;
            }
            _ => return Decider::NoMatch,
        }
        let rule_id = labels.name(rule).to_owned();
        match self.owners.get(&policy) {
            Some(SlotOwner::Policy(p)) => Decider::Rule {
                policy: Some(p.clone()),
                profile: None,
                rule_id,
            },
            Some(SlotOwner::Profile(p)) => Decider::Rule {
                policy: None,
                profile: Some(p.clone()),
                rule_id,
            },
            Some(SlotOwner::TierDefault(tier)) => Decider::TierDefault { tier: tier.clone() },
            Some(SlotOwner::NoMatch) | None => Decider::NoMatch,
        }
    }

    /// The observation an event makes (`Start` or `Denied`), and its key.
    pub fn observe(
        &self,
        e: &abi::manul_event,
        labels: &Labels,
        time_unix_ms: u64,
        service_frontend: Option<(IpAddr, u16)>,
    ) -> (FlowKey, FlowObservation) {
        let allowed = u32::from(e.verdict) == abi::MANUL_VERDICT_ALLOW;
        let key = FlowKey {
            ifindex: e.ifindex,
            tuple: FlowTuple {
                protocol: e.proto,
                src: addr_from(e.version, &e.src),
                src_port: e.sport,
                dst: addr_from(e.version, &e.dst),
                dst_port: e.dport,
            },
        };
        let obs = self.observation(
            key,
            u32::from(e.hook) == abi::MANUL_HOOK_INGRESS,
            allowed,
            self.decider(e, labels),
            time_unix_ms,
            service_frontend,
        );
        (key, obs)
    }

    /// The `Start` of an allowed connection whose start event was lost,
    /// from its conntrack entry: the hook that created it and the policy
    /// and rule label ids of the rule at its table and index
    /// (`manul_rule`). Only on a workload's interface, where an allowed
    /// new flow is always a policy rule's (a host endpoint's may be a
    /// failsafe port's or forwarded unpoliced, which the entry does not
    /// tell): `None` elsewhere.
    pub fn recovered_start(
        &self,
        key: FlowKey,
        hook: u8,
        (policy, rule): (u32, u32),
        labels: &Labels,
        time_unix_ms: u64,
        service_frontend: Option<(IpAddr, u16)>,
    ) -> Option<FlowObservation> {
        if !matches!(
            self.interfaces.get(&key.ifindex),
            Some(Interface::Workload(_))
        ) {
            return None;
        }
        let decider = self.decider_of(abi::MANUL_REASON_POLICY, policy, rule, labels);
        Some(self.observation(
            key,
            u32::from(hook) == abi::MANUL_HOOK_INGRESS,
            true,
            decider,
            time_unix_ms,
            service_frontend,
        ))
    }

    /// A `Start` (allowed) or `Denied` observation of one packet.
    fn observation(
        &self,
        key: FlowKey,
        ingress: bool,
        allowed: bool,
        decider: Decider,
        time_unix_ms: u64,
        service_frontend: Option<(IpAddr, u16)>,
    ) -> FlowObservation {
        let iface = self.interfaces.get(&key.ifindex);
        // A workload's host-side ingress hook sees what the pod sends; a
        // host interface's sees what arrives at the host.
        let reporter = match (iface, ingress) {
            (Some(Interface::Host), true) | (Some(Interface::Workload(_)) | None, false) => {
                Reporter::Destination
            }
            _ => Reporter::Source,
        };
        FlowObservation {
            phase: if allowed {
                FlowPhase::Start
            } else {
                FlowPhase::Denied
            },
            time_unix_ms,
            tuple: key.tuple,
            service_frontend,
            reporter,
            endpoint: match iface {
                Some(Interface::Workload(id)) => Some(id.clone()),
                _ => None,
            },
            allowed,
            decider,
            counts: FlowCounts {
                packets_forward: 1,
                ..FlowCounts::default()
            },
        }
    }
}

/// The key and counters of a conntrack entry.
pub fn entry_flow(k: &abi::manul_ct_key, v: &abi::manul_ct_value) -> (FlowKey, FlowCounts) {
    let e = crate::conntrack::ConntrackEntry::new(k, v);
    (
        FlowKey {
            ifindex: e.ifindex,
            tuple: FlowTuple {
                protocol: e.protocol,
                src: e.src,
                src_port: e.src_port,
                dst: e.dst,
                dst_port: e.dst_port,
            },
        },
        FlowCounts {
            packets_forward: e.packets_orig,
            bytes_forward: e.bytes_orig,
            packets_reverse: e.packets_reply,
            bytes_reverse: e.bytes_reply,
        },
    )
}

#[derive(Debug)]
struct Tracked {
    /// The `Start` observation, which `Update` and `End` repeat.
    start: FlowObservation,
    counts: FlowCounts,
    /// The scan that last saw the entry.
    seen: u64,
}

/// The allowed connections being followed, up to a bound (the conntrack
/// table's capacity: a connection beyond it is reported at its start only).
#[derive(Debug)]
pub struct Tracker {
    live: HashMap<FlowKey, Tracked>,
    capacity: usize,
    scan: u64,
    /// Starts not followed because the tracker was full.
    pub untracked: u64,
    /// CLOCK_MONOTONIC nanoseconds when the tracker started: older
    /// connections are not its to recover.
    since_ns: u64,
    /// The latest start (its event's time) not followed because the
    /// tracker was full: connections up to it were reported at their
    /// start, so none is recovered.
    refused_ns: u64,
}

impl Tracker {
    /// A tracker following at most `capacity` connections, started at
    /// `since_ns` (CLOCK_MONOTONIC).
    pub fn new(capacity: usize, since_ns: u64) -> Tracker {
        Tracker {
            live: HashMap::new(),
            capacity,
            scan: 0,
            untracked: 0,
            since_ns,
            refused_ns: 0,
        }
    }

    /// Connections followed.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Follows an allowed connection from its `Start` observation, made
    /// at `at_ns` (CLOCK_MONOTONIC).
    pub fn started(&mut self, key: FlowKey, start: &FlowObservation, at_ns: u64) {
        if self.live.len() >= self.capacity && !self.live.contains_key(&key) {
            self.untracked += 1;
            self.refused_ns = self.refused_ns.max(at_ns);
            return;
        }
        self.live.insert(
            key,
            Tracked {
                start: start.clone(),
                counts: start.counts,
                seen: self.scan,
            },
        );
    }

    /// Whether a conntrack entry (`allowed`, created at `created_ns`) is
    /// a connection whose start event was lost: not followed, created
    /// after the tracker started and after the last start it refused,
    /// and before `horizon_ns`, the time the ring buffer's last complete
    /// drain began (a later entry's event may still be in the ring).
    pub fn lost_start(
        &self,
        key: &FlowKey,
        allowed: bool,
        created_ns: u64,
        horizon_ns: u64,
    ) -> bool {
        allowed
            && created_ns >= self.since_ns
            && created_ns < horizon_ns
            && created_ns > self.refused_ns
            && self.live.len() < self.capacity
            && !self.live.contains_key(key)
    }

    /// Starts a scan of the conntrack table.
    pub fn begin_scan(&mut self) {
        self.scan += 1;
    }

    /// One entry of the scan: an `Update` if the connection is followed and
    /// its counters moved, an `End` if it is followed and expired.
    pub fn visit(
        &mut self,
        key: &FlowKey,
        counts: FlowCounts,
        expired: bool,
        time_unix_ms: u64,
    ) -> Option<FlowObservation> {
        let scan = self.scan;
        let t = self.live.get_mut(key)?;
        t.seen = scan;
        let moved = counts != t.counts;
        t.counts = counts;
        if expired {
            let t = self.live.remove(key)?;
            return Some(report(&t, FlowPhase::End, time_unix_ms));
        }
        moved.then(|| report(t, FlowPhase::Update, time_unix_ms))
    }

    /// Ends the scan: followed connections it did not see are gone (an
    /// `End` with the last counters known).
    pub fn end_scan(&mut self, time_unix_ms: u64) -> Vec<FlowObservation> {
        let scan = self.scan;
        let gone: Vec<FlowKey> = self
            .live
            .iter()
            .filter(|(_, t)| t.seen != scan)
            .map(|(k, _)| *k)
            .collect();
        gone.into_iter()
            .filter_map(|k| self.live.remove(&k))
            .map(|t| report(&t, FlowPhase::End, time_unix_ms))
            .collect()
    }
}

fn report(t: &Tracked, phase: FlowPhase, time_unix_ms: u64) -> FlowObservation {
    FlowObservation {
        phase,
        time_unix_ms,
        counts: t.counts,
        ..t.start.clone()
    }
}

/// Folds the denials of one drain: one observation per (interface,
/// 5-tuple), its packets the number of events folded, its time the first.
pub fn fold_denials(observations: Vec<(FlowKey, FlowObservation)>) -> Vec<FlowObservation> {
    let mut out: Vec<FlowObservation> = Vec::with_capacity(observations.len());
    let mut denied_at: HashMap<FlowKey, usize> = HashMap::new();
    for (key, obs) in observations {
        if obs.phase == FlowPhase::Denied {
            if let Some(&i) = denied_at.get(&key)
                && let Some(first) = out.get_mut(i)
            {
                first.counts.packets_forward += obs.counts.packets_forward;
                continue;
            }
            denied_at.insert(key, out.len());
        }
        out.push(obs);
    }
    out
}

#[cfg(test)]
mod tests;
