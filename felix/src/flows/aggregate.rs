//! Per-interval aggregation of enriched observations into flow records
//! (no I/O, time passed in): one record per (reporter, source workload,
//! destination workload, destination port, protocol, action, enforced and
//! pending trace and verdict, service) and interval.

use std::collections::{BTreeMap, HashMap, HashSet};

use manul_dataplane_api::{FlowCounts, FlowPhase, FlowTuple, Reporter};
use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit};

/// One observation with everything Felix knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Enriched {
    pub phase: FlowPhase,
    pub tuple: FlowTuple,
    pub reporter: Reporter,
    pub src: FlowEndpoint,
    pub dst: FlowEndpoint,
    pub allowed: bool,
    pub enforced: Vec<PolicyHit>,
    pub pending: Vec<PolicyHit>,
    /// The staged policies' verdict (`None`: none evaluated).
    pub pending_allowed: Option<bool>,
    /// (namespace, name, port) of the Service the client addressed.
    pub service: Option<(String, String, u16)>,
    /// Cumulative for the connection.
    pub counts: FlowCounts,
}

/// What makes two observations one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    reporter: Reporter,
    src: (String, String, String),
    dst: (String, String, String),
    dst_port: u16,
    protocol: u8,
    allowed: bool,
    enforced: Vec<HitKey>,
    pending: Vec<HitKey>,
    pending_allowed: Option<bool>,
    service: Option<(String, String, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HitKey(String, String, String, String, Option<u32>, String);

fn hit_key(h: &PolicyHit) -> HitKey {
    HitKey(
        h.tier.clone(),
        h.kind.clone(),
        h.namespace.clone(),
        h.name.clone(),
        h.rule_index,
        h.action.clone(),
    )
}

fn ep_key(e: &FlowEndpoint) -> (String, String, String) {
    (e.kind.clone(), e.namespace.clone(), e.workload.clone())
}

#[derive(Debug)]
struct Acc {
    record: FlowRecord,
    tuples: HashSet<FlowTuple>,
}

/// The records of the current interval, and each connection's counters
/// as last reported (observations carry totals; records carry what the
/// interval added).
#[derive(Debug)]
pub struct Aggregator {
    node: String,
    interval_s: u64,
    start_s: u64,
    open: HashMap<Key, Acc>,
    /// Per (reporter, connection): the totals already counted.
    counted: HashMap<(Reporter, FlowTuple), FlowCounts>,
}

impl Aggregator {
    pub fn new(node: impl Into<String>, interval_s: u64, now_s: u64) -> Aggregator {
        Aggregator {
            node: node.into(),
            interval_s: interval_s.max(1),
            start_s: now_s,
            open: HashMap::new(),
            counted: HashMap::new(),
        }
    }

    pub fn interval_s(&self) -> u64 {
        self.interval_s
    }

    /// Records currently open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn add(&mut self, e: Enriched) {
        let key = Key {
            reporter: e.reporter,
            src: ep_key(&e.src),
            dst: ep_key(&e.dst),
            dst_port: e.tuple.dst_port,
            protocol: e.tuple.protocol,
            allowed: e.allowed,
            enforced: e.enforced.iter().map(hit_key).collect(),
            pending: e.pending.iter().map(hit_key).collect(),
            pending_allowed: e.pending_allowed,
            service: e.service.clone(),
        };
        // What this observation adds to the connection's counters.
        let conn = (e.reporter, e.tuple);
        let delta = if e.phase == FlowPhase::Denied {
            e.counts
        } else {
            let before = self.counted.get(&conn).copied().unwrap_or_default();
            let d = FlowCounts {
                packets_forward: e
                    .counts
                    .packets_forward
                    .saturating_sub(before.packets_forward),
                bytes_forward: e.counts.bytes_forward.saturating_sub(before.bytes_forward),
                packets_reverse: e
                    .counts
                    .packets_reverse
                    .saturating_sub(before.packets_reverse),
                bytes_reverse: e.counts.bytes_reverse.saturating_sub(before.bytes_reverse),
            };
            if e.phase == FlowPhase::End {
                self.counted.remove(&conn);
            } else {
                self.counted.insert(conn, e.counts);
            }
            d
        };
        let start_s = self.start_s;
        let node = self.node.clone();
        let acc = self.open.entry(key).or_insert_with(|| Acc {
            record: FlowRecord {
                start_unix_s: start_s,
                end_unix_s: 0,
                node,
                reporter: match e.reporter {
                    Reporter::Source => "src",
                    Reporter::Destination => "dst",
                }
                .to_owned(),
                src: Some(e.src.clone()),
                dst: Some(e.dst.clone()),
                protocol: u32::from(e.tuple.protocol),
                dst_port: u32::from(e.tuple.dst_port),
                action: if e.allowed { "allow" } else { "deny" }.to_owned(),
                enforced: e.enforced.clone(),
                pending: e.pending.clone(),
                pending_action: match e.pending_allowed {
                    Some(true) => "allow",
                    Some(false) => "deny",
                    None => "",
                }
                .to_owned(),
                service_namespace: e.service.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
                service_name: e.service.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
                service_port: e.service.as_ref().map_or(0, |s| u32::from(s.2)),
                ..FlowRecord::default()
            },
            tuples: HashSet::new(),
        });
        let r = &mut acc.record;
        intersect_labels(r.src.as_mut(), &e.src.labels);
        intersect_labels(r.dst.as_mut(), &e.dst.labels);
        r.packets_forward += delta.packets_forward;
        r.bytes_forward += delta.bytes_forward;
        r.packets_reverse += delta.packets_reverse;
        r.bytes_reverse += delta.bytes_reverse;
        match e.phase {
            FlowPhase::Start => r.flows_started += 1,
            FlowPhase::End => r.flows_completed += 1,
            FlowPhase::Denied => r.flows_denied += 1,
            FlowPhase::Update => {}
        }
        acc.tuples.insert(e.tuple);
        r.num_flows = acc.tuples.len() as u64;
    }

    /// Whether the interval that started at `start` is over at `now_s`.
    pub fn due(&self, now_s: u64) -> bool {
        now_s >= self.start_s + self.interval_s
    }

    /// Closes the interval at `now_s`: its records, and a new interval.
    pub fn flush(&mut self, now_s: u64) -> Vec<FlowRecord> {
        let end = now_s.max(self.start_s);
        let mut out: Vec<FlowRecord> = self
            .open
            .drain()
            .map(|(_, mut acc)| {
                acc.record.end_unix_s = end;
                acc.record
            })
            .collect();
        out.sort_by(|a, b| {
            (
                &a.reporter,
                &a.src.as_ref().map(|e| &e.workload),
                a.dst_port,
            )
                .cmp(&(
                    &b.reporter,
                    &b.src.as_ref().map(|e| &e.workload),
                    b.dst_port,
                ))
        });
        self.start_s = end;
        out
    }
}

/// Keeps the labels every aggregated endpoint has.
fn intersect_labels(
    e: Option<&mut FlowEndpoint>,
    labels: &std::collections::HashMap<String, String>,
) {
    if let Some(e) = e {
        e.labels.retain(|k, v| labels.get(k) == Some(v));
    }
}

/// Labels as the wire carries them.
pub fn wire_labels(labels: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
