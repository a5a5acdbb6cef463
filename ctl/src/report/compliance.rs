//! The compliance report, a pure function of the cluster state (as
//! Felix's reference evaluator reads it), the allowed flow records of a
//! window and the audit history of that window: per namespace and
//! direction, whether a default deny covers it, what it exposes (the
//! allow rules of the policies that select its endpoints, and the peers
//! and ports seen allowed), and the policy changes.
//!
//! A direction is covered by a default deny when some policy applies to
//! every pod of the namespace, present and future (it applies to the
//! endpoint a new pod without labels would be): then nothing is allowed
//! in that direction but what a rule allows. Endpoints no policy selects
//! for the direction are listed: all their traffic that way is allowed.

use std::collections::{BTreeMap, BTreeSet};

use manul_felix_calc::evaluator::{ClusterState, Direction};
use manul_model::v3::{Action, EntityRule, Rule};
use manul_proto::flows::{FlowEndpoint, FlowRecord};
use manul_proto::v1::AuditEvent;
use serde::Serialize;

use super::Window;
use super::policy::{policy_ref, rules};

/// An allow rule of a policy selecting endpoints of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Exposure {
    /// `NAMESPACE/NAME` or `NAME` of the policy, and the rule's index.
    pub policy: String,
    pub rule: u32,
    /// Who: the peer side of the rule ("any" when it names none).
    pub peer: String,
    /// What: protocol and ports ("any").
    pub ports: String,
}

/// Peers and ports seen allowed in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub peer: String,
    pub protocol: u32,
    pub port: u32,
    pub flows: u64,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectionCompliance {
    pub default_deny: bool,
    /// The policies that apply to every pod of the namespace.
    pub default_deny_by: Vec<String>,
    /// Endpoints no policy selects this way (everything allowed).
    pub unselected_endpoints: Vec<String>,
    pub allowed_by_policy: Vec<Exposure>,
    pub observed_allowed: Vec<Observed>,
}

/// One key a write changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub revision: u64,
    pub unix_millis: u64,
    pub identity: String,
    pub role: String,
    pub verb: String,
    pub action: String,
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceCompliance {
    pub namespace: String,
    pub endpoints: usize,
    pub ingress: DirectionCompliance,
    pub egress: DirectionCompliance,
    /// Policy changes in the namespace in the window.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComplianceReport {
    pub window: Window,
    pub namespaces: Vec<NamespaceCompliance>,
    /// Changes of cluster-scoped policy kinds (global policies, tiers).
    pub cluster_changes: Vec<Change>,
}

/// The kinds (key names) whose changes are policy changes.
const POLICY_KINDS: [&str; 8] = [
    "networkpolicy",
    "globalnetworkpolicy",
    "k8s-networkpolicy",
    "stagednetworkpolicy",
    "stagedglobalnetworkpolicy",
    "stagedkubernetesnetworkpolicy",
    "tier",
    "profile",
];

fn entity(e: &EntityRule) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &e.namespace_selector {
        parts.push(format!("namespaces {s}"));
    }
    if let Some(s) = &e.selector {
        parts.push(format!("endpoints {s}"));
    }
    if let Some(s) = &e.not_selector {
        parts.push(format!("not endpoints {s}"));
    }
    if !e.nets.is_empty() {
        let nets: Vec<String> = e.nets.iter().map(ToString::to_string).collect();
        parts.push(format!("nets {}", nets.join(",")));
    }
    if !e.not_nets.is_empty() {
        let nets: Vec<String> = e.not_nets.iter().map(ToString::to_string).collect();
        parts.push(format!("not nets {}", nets.join(",")));
    }
    if let Some(s) = &e.services {
        parts.push(format!("service {s:?}"));
    }
    if let Some(s) = &e.service_accounts {
        parts.push(format!("service accounts {s:?}"));
    }
    if parts.is_empty() {
        "any".to_string()
    } else {
        parts.join(" and ")
    }
}

fn ports(rule: &Rule) -> String {
    let proto = rule
        .protocol
        .as_ref()
        .map_or_else(|| "any protocol".to_string(), ToString::to_string);
    let ports: Vec<String> = rule
        .destination
        .ports
        .iter()
        .map(ToString::to_string)
        .collect();
    let not: Vec<String> = rule
        .destination
        .not_ports
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut out = proto;
    if !ports.is_empty() {
        out.push_str(&format!(" ports {}", ports.join(",")));
    }
    if !not.is_empty() {
        out.push_str(&format!(" not ports {}", not.join(",")));
    }
    if rule.protocol.is_none() && ports.is_empty() && not.is_empty() {
        out = "any".to_string();
    }
    out
}

fn endpoint_name(e: Option<&FlowEndpoint>) -> String {
    match e {
        Some(e) if !e.namespace.is_empty() => format!("{}/{}", e.namespace, e.workload),
        Some(e) => format!("{} {}", e.kind, e.workload),
        None => "unknown".to_string(),
    }
}

fn change_rows(events: &[AuditEvent]) -> Vec<Change> {
    let mut out = Vec::new();
    for e in events {
        let o = e.origin.clone().unwrap_or_default();
        for c in &e.changes {
            let k = c.key.clone().unwrap_or_default();
            if !POLICY_KINDS.contains(&k.kind.as_str()) {
                continue;
            }
            out.push(Change {
                revision: e.revision,
                unix_millis: o.unix_millis,
                identity: o.identity.clone(),
                role: o.role.clone(),
                verb: o.verb.clone(),
                action: c.action.clone(),
                kind: k.kind,
                namespace: k.namespace,
                name: k.name,
            });
        }
    }
    out
}

/// The report. See the module documentation. `flows` are the window's
/// records (denied ones are ignored); `audit` its audit events.
pub fn compliance_report(
    state: &ClusterState,
    flows: &[FlowRecord],
    audit: &[AuditEvent],
    window: Window,
) -> ComplianceReport {
    let changes = change_rows(audit);
    let namespaces = state
        .namespace_names()
        .into_iter()
        .map(|ns| {
            let side = |d: Direction| direction(state, flows, &ns, d);
            NamespaceCompliance {
                endpoints: state
                    .endpoints()
                    .iter()
                    .filter(|e| e.namespace == ns)
                    .count(),
                ingress: side(Direction::Ingress),
                egress: side(Direction::Egress),
                changes: changes
                    .iter()
                    .filter(|c| c.namespace == ns)
                    .cloned()
                    .collect(),
                namespace: ns,
            }
        })
        .collect();
    ComplianceReport {
        window,
        namespaces,
        cluster_changes: changes
            .into_iter()
            .filter(|c| c.namespace.is_empty())
            .collect(),
    }
}

fn direction(
    state: &ClusterState,
    flows: &[FlowRecord],
    ns: &str,
    d: Direction,
) -> DirectionCompliance {
    let enforced = || {
        state
            .policies()
            .iter()
            .filter_map(|p| policy_ref(p).map(|r| (p, r)))
    };
    let probe = state.new_endpoint_in(ns);
    let by: Vec<String> = enforced()
        .filter(|(p, _)| state.applies(p, &probe, d))
        .map(|(_, r)| r.display())
        .collect();
    let endpoints: Vec<_> = state
        .endpoints()
        .iter()
        .filter(|e| e.namespace == ns)
        .collect();
    let unselected = endpoints
        .iter()
        .filter(|ep| !enforced().any(|(p, _)| state.applies(p, ep, d)))
        .map(|ep| ep.name.clone())
        .collect();
    let mut exposures = BTreeSet::new();
    for (p, r) in enforced() {
        if !state.applies(p, &probe, d) && !endpoints.iter().any(|ep| state.applies(p, ep, d)) {
            continue;
        }
        for (i, rule) in rules(p, d).iter().enumerate() {
            if rule.action != Action::Allow {
                continue;
            }
            let peer = match d {
                Direction::Ingress => &rule.source,
                Direction::Egress => &rule.destination,
            };
            exposures.insert(Exposure {
                policy: r.display(),
                rule: u32::try_from(i).unwrap_or(u32::MAX),
                peer: entity(peer),
                ports: ports(rule),
            });
        }
    }
    // Allowed records whose local end is in the namespace: the
    // destination for ingress, the source for egress.
    let mut seen: BTreeMap<(String, u32, u32), (u64, u64)> = BTreeMap::new();
    for r in flows.iter().filter(|r| r.action == "allow") {
        let (local, peer) = match d {
            Direction::Ingress => (r.dst.as_ref(), r.src.as_ref()),
            Direction::Egress => (r.src.as_ref(), r.dst.as_ref()),
        };
        if local.is_none_or(|l| l.namespace != ns || l.kind != "pod") {
            continue;
        }
        let entry = seen
            .entry((endpoint_name(peer), r.protocol, r.dst_port))
            .or_default();
        entry.0 += r.flows_started.max(r.num_flows);
        entry.1 += 1;
    }
    let mut observed: Vec<Observed> = seen
        .into_iter()
        .map(|((peer, protocol, port), (flows, records))| Observed {
            peer,
            protocol,
            port,
            flows,
            records,
        })
        .collect();
    observed.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.peer.cmp(&b.peer)));
    DirectionCompliance {
        default_deny: !by.is_empty(),
        default_deny_by: by,
        unselected_endpoints: unselected,
        allowed_by_policy: exposures.into_iter().collect(),
        observed_allowed: observed,
    }
}
