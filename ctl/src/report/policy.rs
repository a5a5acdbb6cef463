//! The policy report, a pure function of the cluster state (as Felix's
//! reference evaluator reads it) and the flow aggregator's per-rule
//! statistics over a window: hits per policy and rule, the rules never
//! hit, the policies that select no endpoint, and the endpoints that no
//! policy selects (all their traffic in that direction is allowed).

use std::collections::BTreeMap;

use manul_felix_calc::evaluator::{ClusterState, Direction, Policy};
use manul_model::Kind;
use manul_model::convert::K8S_POLICY_PREFIX;
use manul_model::v3::Rule;
use manul_proto::flows::RuleStats;
use serde::Serialize;

use super::Window;

/// Flows, records, packets and bytes through one rule (or policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hits {
    pub records: u64,
    pub flows_allowed: u64,
    pub flows_denied: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Hits {
    fn add(&mut self, s: &RuleStats) {
        self.records += s.records;
        self.flows_allowed += s.flows_allowed;
        self.flows_denied += s.flows_denied;
        self.packets += s.packets;
        self.bytes += s.bytes;
    }

    fn sum(&mut self, h: &Hits) {
        self.records += h.records;
        self.flows_allowed += h.flows_allowed;
        self.flows_denied += h.flows_denied;
        self.packets += h.packets;
        self.bytes += h.bytes;
    }

    pub fn is_zero(&self) -> bool {
        self.records == 0
    }
}

/// A policy as flow records name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PolicyRef {
    /// NetworkPolicy, GlobalNetworkPolicy or KubernetesNetworkPolicy.
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    pub tier: String,
}

impl PolicyRef {
    /// `NAMESPACE/NAME` or `NAME`.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRow {
    pub direction: &'static str,
    pub index: u32,
    pub action: String,
    #[serde(flatten)]
    pub hits: Hits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRow {
    #[serde(flatten)]
    pub policy: PolicyRef,
    /// Endpoints it applies to (either direction).
    pub endpoints_selected: usize,
    /// Every rule's hits summed.
    #[serde(flatten)]
    pub hits: Hits,
    pub rules: Vec<RuleRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    #[serde(flatten)]
    pub policy: PolicyRef,
    pub direction: &'static str,
    pub index: u32,
    pub action: String,
}

/// An endpoint that no policy selects for a direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unprotected {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// No policy selects it for ingress: everything in is allowed.
    pub ingress: bool,
    /// No policy selects it for egress.
    pub egress: bool,
}

/// A decision the statistics hold that is not a current policy's rule:
/// a tier's end, a profile, or a policy or rule no longer in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherRow {
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_index: Option<u32>,
    pub direction: String,
    pub action: String,
    #[serde(flatten)]
    pub hits: Hits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    pub window: Window,
    /// Every enforced policy, by hits (most first), then name.
    pub policies: Vec<PolicyRow>,
    pub rules_never_hit: Vec<RuleRef>,
    pub policies_selecting_nothing: Vec<PolicyRef>,
    pub unprotected_endpoints: Vec<Unprotected>,
    pub other_decisions: Vec<OtherRow>,
    /// What the evaluator left out of the state, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How flow records name `p`.
pub fn policy_ref(p: &Policy) -> Option<PolicyRef> {
    let kind = match p.kind {
        Kind::NetworkPolicy => "NetworkPolicy",
        Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
        Kind::K8sNetworkPolicy => "KubernetesNetworkPolicy",
        _ => return None,
    };
    let namespace = p.namespace.clone().unwrap_or_default();
    let bare = p
        .name
        .strip_prefix(&format!("{namespace}/"))
        .filter(|_| !namespace.is_empty())
        .unwrap_or(&p.name);
    let name = if p.kind == Kind::K8sNetworkPolicy {
        bare.strip_prefix(K8S_POLICY_PREFIX).unwrap_or(bare)
    } else {
        bare
    };
    Some(PolicyRef {
        kind: kind.to_string(),
        namespace,
        name: name.to_string(),
        tier: p.tier.clone(),
    })
}

pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

pub const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

pub fn rules(p: &Policy, d: Direction) -> &[Rule] {
    match d {
        Direction::Ingress => &p.ingress,
        Direction::Egress => &p.egress,
    }
}

/// The report. See the module documentation.
pub fn policy_report(state: &ClusterState, stats: &[RuleStats], window: Window) -> PolicyReport {
    // (kind, namespace, name, direction, rule index) -> hits.
    type StatKey = (String, String, String, String, Option<u32>);
    let mut by_rule: BTreeMap<StatKey, (Hits, &RuleStats)> = BTreeMap::new();
    for s in stats {
        let key = (
            s.kind.clone(),
            s.namespace.clone(),
            s.name.clone(),
            s.direction.clone(),
            s.rule_index,
        );
        by_rule
            .entry(key)
            .or_insert_with(|| (Hits::default(), s))
            .0
            .add(s);
    }
    let mut policies = Vec::new();
    let mut never = Vec::new();
    let mut nothing = Vec::new();
    for p in state.policies() {
        let Some(r) = policy_ref(p) else { continue };
        let selected = state
            .endpoints()
            .iter()
            .filter(|ep| DIRECTIONS.iter().any(|d| state.applies(p, ep, *d)))
            .count();
        if selected == 0 {
            nothing.push(r.clone());
        }
        let mut rows = Vec::new();
        let mut total = Hits::default();
        for d in DIRECTIONS {
            for (i, rule) in rules(p, d).iter().enumerate() {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                let key = (
                    r.kind.clone(),
                    r.namespace.clone(),
                    r.name.clone(),
                    direction_name(d).to_string(),
                    Some(index),
                );
                let hits = by_rule.remove(&key).map(|(h, _)| h).unwrap_or_default();
                let action = format!("{:?}", rule.action);
                if hits.is_zero() {
                    never.push(RuleRef {
                        policy: r.clone(),
                        direction: direction_name(d),
                        index,
                        action: action.clone(),
                    });
                }
                total.sum(&hits);
                rows.push(RuleRow {
                    direction: direction_name(d),
                    index,
                    action,
                    hits,
                });
            }
        }
        policies.push(PolicyRow {
            policy: r,
            endpoints_selected: selected,
            hits: total,
            rules: rows,
        });
    }
    policies.sort_by(|a, b| {
        (b.hits.flows_allowed + b.hits.flows_denied)
            .cmp(&(a.hits.flows_allowed + a.hits.flows_denied))
            .then(b.hits.records.cmp(&a.hits.records))
            .then(a.policy.cmp(&b.policy))
    });
    let unprotected = state
        .endpoints()
        .iter()
        .filter_map(|ep| {
            let open = |d: Direction| {
                !state
                    .policies()
                    .iter()
                    .any(|p| policy_ref(p).is_some() && state.applies(p, ep, d))
            };
            let (ingress, egress) = (open(Direction::Ingress), open(Direction::Egress));
            (ingress || egress).then(|| Unprotected {
                namespace: ep.namespace.clone(),
                name: ep.name.clone(),
                pod: ep.pod.clone(),
                ingress,
                egress,
            })
        })
        .collect();
    let other_decisions = by_rule
        .into_iter()
        .map(
            |((kind, namespace, name, direction, rule_index), (hits, s))| OtherRow {
                kind,
                tier: s.tier.clone(),
                namespace,
                name,
                rule_index,
                direction,
                action: s.action.clone(),
                hits,
            },
        )
        .collect();
    PolicyReport {
        window,
        policies,
        rules_never_hit: never,
        policies_selecting_nothing: nothing,
        unprotected_endpoints: unprotected,
        other_decisions,
        notes: state.notes().to_vec(),
    }
}
