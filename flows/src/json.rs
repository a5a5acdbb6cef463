//! A flow record as JSON: the one shape `manulctl flows -o json` prints
//! and the web UI's `/api/flows` and `/api/follow` serve. A policy hit
//! carries its fields and `display`, the name the table and the filters
//! use; `pending_action` is null while no staged policy was evaluated.

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

/// `r` as JSON (see the module documentation).
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
        "pending_action": if r.pending_action.is_empty() { Value::Null } else { json!(r.pending_action) },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_its_display_names_and_pending_verdict() {
        let hit = |kind: &str, ns: &str, name: &str, action: &str| PolicyHit {
            tier: "default".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            rule_index: None,
            action: action.into(),
        };
        let mut r = FlowRecord {
            src: Some(FlowEndpoint {
                kind: "pod".into(),
                namespace: "prod".into(),
                workload: "web-*".into(),
                labels: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
            }),
            action: "deny".into(),
            enforced: vec![hit("EndOfTier", "", "default", "deny")],
            pending: vec![hit("StagedNetworkPolicy", "prod", "web-egress", "allow")],
            pending_action: "allow".into(),
            ..FlowRecord::default()
        };
        let j = record(&r);
        assert_eq!(j["source"]["labels"]["app"], "web");
        assert_eq!(j["destination"], Value::Null);
        assert_eq!(j["policies"]["enforced"][0]["display"], "default/default");
        assert_eq!(j["policies"]["pending"][0]["display"], "prod/web-egress");
        assert_eq!(j["pending_action"], "allow");
        assert_eq!(j["service"], Value::Null);
        r.pending_action.clear();
        assert_eq!(record(&r)["pending_action"], Value::Null);
    }
}
