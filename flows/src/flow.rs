//! The stored form of a flow record, with no I/O: the fields of the wire's
//! `FlowRecord`, flat, with every string, endpoint and trace shared
//! through an [`Interner`] (`Arc`), so a record is one fixed-size value
//! and holds no heap allocation of its own. Labels are a slice sorted by
//! key (a protobuf map has no order and no repeated key). It converts to
//! and from `FlowRecord` without loss: what a query answers is the record
//! that was sent.

use std::convert::Infallible;
use std::sync::Arc;

use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit};

use crate::intern::{HitRef, Interner};

/// A shared string.
pub type Sym = Arc<str>;

/// One side of a flow (`FlowEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub kind: Sym,
    pub namespace: Sym,
    pub workload: Sym,
    /// Sorted by key; no key twice.
    pub labels: Box<[(Sym, Sym)]>,
}

impl Endpoint {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.labels[i].1)
    }

    pub fn to_wire(&self) -> FlowEndpoint {
        FlowEndpoint {
            kind: self.kind.to_string(),
            namespace: self.namespace.to_string(),
            workload: self.workload.to_string(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// A policy that gave a verdict (`PolicyHit`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hit {
    pub tier: Sym,
    pub kind: Sym,
    pub namespace: Sym,
    pub name: Sym,
    pub rule_index: Option<u32>,
    pub action: Sym,
}

impl Hit {
    pub fn to_wire(&self) -> PolicyHit {
        PolicyHit {
            tier: self.tier.to_string(),
            kind: self.kind.to_string(),
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            rule_index: self.rule_index,
            action: self.action.to_string(),
        }
    }
}

/// A policy trace, shared by every record with the same one.
pub type Trace = Arc<[Hit]>;

/// A stored flow record (`FlowRecord`; see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub start_unix_s: u64,
    pub end_unix_s: u64,
    pub node: Sym,
    pub reporter: Sym,
    pub src: Option<Arc<Endpoint>>,
    pub dst: Option<Arc<Endpoint>>,
    pub protocol: u32,
    pub dst_port: u32,
    pub action: Sym,
    pub enforced: Trace,
    pub pending: Trace,
    pub service_namespace: Sym,
    pub service_name: Sym,
    pub service_port: u32,
    pub packets_forward: u64,
    pub bytes_forward: u64,
    pub packets_reverse: u64,
    pub bytes_reverse: u64,
    pub flows_started: u64,
    pub flows_completed: u64,
    pub flows_denied: u64,
    pub num_flows: u64,
    pub pending_action: Sym,
}

/// Unwraps what cannot fail.
fn sure<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => match e {},
    }
}

fn hits(trace: &[PolicyHit]) -> Vec<HitRef<&str>> {
    trace
        .iter()
        .map(|h| HitRef {
            tier: h.tier.as_str(),
            kind: h.kind.as_str(),
            namespace: h.namespace.as_str(),
            name: h.name.as_str(),
            rule_index: h.rule_index,
            action: h.action.as_str(),
        })
        .collect()
}

fn endpoint(e: &FlowEndpoint, interner: &mut Interner) -> Arc<Endpoint> {
    let mut labels: Vec<(&str, &str)> = e
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sure(interner.endpoint(
        e.kind.as_str(),
        e.namespace.as_str(),
        e.workload.as_str(),
        &mut labels,
    ))
}

impl Flow {
    /// `r` in the stored form, its parts shared through `interner`.
    pub fn from_record(r: &FlowRecord, interner: &mut Interner) -> Flow {
        let mut sym = |s: &str| sure(interner.sym(s));
        let (node, reporter, action) = (sym(&r.node), sym(&r.reporter), sym(&r.action));
        let (service_namespace, service_name) = (sym(&r.service_namespace), sym(&r.service_name));
        let pending_action = sym(&r.pending_action);
        Flow {
            start_unix_s: r.start_unix_s,
            end_unix_s: r.end_unix_s,
            node,
            reporter,
            src: r.src.as_ref().map(|e| endpoint(e, interner)),
            dst: r.dst.as_ref().map(|e| endpoint(e, interner)),
            protocol: r.protocol,
            dst_port: r.dst_port,
            action,
            enforced: sure(interner.trace(&hits(&r.enforced))),
            pending: sure(interner.trace(&hits(&r.pending))),
            service_namespace,
            service_name,
            service_port: r.service_port,
            packets_forward: r.packets_forward,
            bytes_forward: r.bytes_forward,
            packets_reverse: r.packets_reverse,
            bytes_reverse: r.bytes_reverse,
            flows_started: r.flows_started,
            flows_completed: r.flows_completed,
            flows_denied: r.flows_denied,
            num_flows: r.num_flows,
            pending_action,
        }
    }

    /// The record as the API answers it.
    pub fn to_record(&self) -> FlowRecord {
        FlowRecord {
            start_unix_s: self.start_unix_s,
            end_unix_s: self.end_unix_s,
            node: self.node.to_string(),
            reporter: self.reporter.to_string(),
            src: self.src.as_deref().map(Endpoint::to_wire),
            dst: self.dst.as_deref().map(Endpoint::to_wire),
            protocol: self.protocol,
            dst_port: self.dst_port,
            action: self.action.to_string(),
            enforced: self.enforced.iter().map(Hit::to_wire).collect(),
            pending: self.pending.iter().map(Hit::to_wire).collect(),
            service_namespace: self.service_namespace.to_string(),
            service_name: self.service_name.to_string(),
            service_port: self.service_port,
            packets_forward: self.packets_forward,
            bytes_forward: self.bytes_forward,
            packets_reverse: self.packets_reverse,
            bytes_reverse: self.bytes_reverse,
            flows_started: self.flows_started,
            flows_completed: self.flows_completed,
            flows_denied: self.flows_denied,
            num_flows: self.num_flows,
            pending_action: self.pending_action.to_string(),
        }
    }
}
