//! A flow record as JSON, in the shape `manulctl flows -o json` prints.

use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit};
use serde_json::{Value, json};

fn endpoint(e: Option<&FlowEndpoint>) -> Value {
    match e {
        None => Value::Null,
        Some(e) => {
            let labels: std::collections::BTreeMap<_, _> = e.labels.iter().collect();
            json!({"kind": e.kind, "namespace": e.namespace, "workload": e.workload, "labels": labels})
        }
    }
}

fn hits(hits: &[PolicyHit]) -> Value {
    hits.iter()
        .map(|h| {
            json!({"tier": h.tier, "kind": h.kind, "namespace": h.namespace, "name": h.name,
                   "rule_index": h.rule_index, "action": h.action,
                   "display": crate::graph::policy_name(h)})
        })
        .collect()
}

pub fn record(r: &FlowRecord) -> Value {
    let service = if r.service_name.is_empty() {
        Value::Null
    } else {
        json!({"namespace": r.service_namespace, "name": r.service_name, "port": r.service_port})
    };
    json!({
        "start_time": r.start_unix_s,
        "end_time": r.end_unix_s,
        "node": r.node,
        "reporter": r.reporter,
        "source": endpoint(r.src.as_ref()),
        "destination": endpoint(r.dst.as_ref()),
        "protocol": r.protocol,
        "dest_port": r.dst_port,
        "action": r.action,
        "policies": {"enforced": hits(&r.enforced), "pending": hits(&r.pending)},
        "service": service,
        "packets_forward": r.packets_forward,
        "bytes_forward": r.bytes_forward,
        "packets_reverse": r.packets_reverse,
        "bytes_reverse": r.bytes_reverse,
        "flows_started": r.flows_started,
        "flows_completed": r.flows_completed,
        "flows_denied": r.flows_denied,
        "num_flows": r.num_flows,
    })
}
