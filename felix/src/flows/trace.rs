//! The policy trace of an observation: every policy the reporting side's
//! judgement went through, from [`DesiredState::verdict`] on the state the
//! driver holds, cross-checked against the rule the kernel says decided.
//! (The staged policies' pending trace is [`super::pending`].)

use manul_dataplane_api::{
    Action, Decider, DesiredState, FlowObservation, Packet, PolicyId, Reporter, TraceStep,
};
use manul_model::convert::K8S_POLICY_PREFIX;
use manul_proto::flows::PolicyHit;

/// The enforced trace of an observation, and whether it agrees with the
/// kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub hits: Vec<PolicyHit>,
    /// The verdict on the driver's state did not end where the kernel's
    /// did (the policy changed since, or the dataplane differs from the
    /// reference): the trace is then the kernel's deciding rule alone.
    pub mismatch: bool,
}

/// The packet an observation describes (ICMP without its type: the
/// kernel's flows carry identifiers, not types, so ICMP rules with a type
/// do not match in the reference).
fn packet(obs: &FlowObservation) -> Packet {
    let t = &obs.tuple;
    match t.protocol {
        1 | 58 => Packet {
            icmp_type: None,
            icmp_code: None,
            ..Packet::with_ports(t.protocol, t.src, 0, t.dst, 0)
        },
        p => Packet::with_ports(p, t.src, t.src_port, t.dst, t.dst_port),
    }
}

/// The enforced trace of the reporting side.
pub fn enforced(state: &DesiredState, obs: &FlowObservation) -> Trace {
    let inbound = obs.reporter == Reporter::Destination;
    let verdict = state.verdict(&packet(obs));
    let steps: Vec<&TraceStep> = verdict
        .trace
        .iter()
        .filter(|s| s.inbound == inbound && obs.endpoint.as_ref().is_none_or(|e| *e == s.endpoint))
        .collect();
    let kernel = kernel_hit(&obs.decider, obs.allowed);
    let ours = steps
        .last()
        .filter(|s| s.action != Action::Pass)
        .map(|s| hit(s));
    let agrees = match (&kernel, &ours) {
        (Some(k), Some(o)) => k == o,
        (None, None) => true,
        _ => false,
    };
    if agrees {
        Trace {
            hits: steps.into_iter().map(hit).collect(),
            mismatch: false,
        }
    } else {
        Trace {
            hits: kernel.into_iter().collect(),
            mismatch: true,
        }
    }
}

/// `(kind, namespace, name)` of a policy id (`NS/NAME` for namespaced
/// policies, `NS/knp.default.NAME` for converted Kubernetes ones).
pub fn policy_names(id: &PolicyId) -> (&'static str, String, String) {
    match id.name.split_once('/') {
        Some((ns, name)) => match name.strip_prefix(K8S_POLICY_PREFIX) {
            Some(k8s) => ("KubernetesNetworkPolicy", ns.to_owned(), k8s.to_owned()),
            None => ("NetworkPolicy", ns.to_owned(), name.to_owned()),
        },
        None => ("GlobalNetworkPolicy", String::new(), id.name.clone()),
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Pass => "pass",
        Action::Log => "log",
    }
}

fn hit(s: &TraceStep) -> PolicyHit {
    let (tier, kind, namespace, name) = match (&s.policy, &s.profile, &s.tier) {
        (Some(p), _, _) => {
            let (kind, ns, name) = policy_names(p);
            (p.tier.clone(), kind.to_owned(), ns, name)
        }
        (None, Some(profile), _) => (
            String::new(),
            "Profile".to_owned(),
            String::new(),
            profile.clone(),
        ),
        (None, None, tier) => {
            let tier = tier.clone().unwrap_or_default();
            (tier.clone(), "EndOfTier".to_owned(), String::new(), tier)
        }
    };
    PolicyHit {
        tier,
        kind,
        namespace,
        name,
        rule_index: s.rule_index,
        action: action_name(s.action).to_owned(),
    }
}

/// The rule index at the end of a rule id (`POLICY/DIRECTION/INDEX`).
fn rule_index(rule_id: &str) -> Option<u32> {
    rule_id.rsplit('/').next()?.parse().ok()
}

/// The kernel's deciding rule as a trace entry (`None`: nothing polices
/// the flow, or nothing decided).
fn kernel_hit(decider: &Decider, allowed: bool) -> Option<PolicyHit> {
    let action = if allowed { "allow" } else { "deny" }.to_owned();
    match decider {
        Decider::Rule {
            policy: Some(p),
            rule_id,
            ..
        } => {
            let (kind, namespace, name) = policy_names(p);
            Some(PolicyHit {
                tier: p.tier.clone(),
                kind: kind.to_owned(),
                namespace,
                name,
                rule_index: rule_index(rule_id),
                action,
            })
        }
        Decider::Rule {
            profile: Some(profile),
            rule_id,
            ..
        } => Some(PolicyHit {
            tier: String::new(),
            kind: "Profile".to_owned(),
            namespace: String::new(),
            name: profile.clone(),
            rule_index: rule_index(rule_id),
            action,
        }),
        Decider::TierDefault { tier } => Some(PolicyHit {
            tier: tier.clone(),
            kind: "EndOfTier".to_owned(),
            namespace: String::new(),
            name: tier.clone(),
            rule_index: None,
            action,
        }),
        Decider::Rule { .. } | Decider::NoMatch | Decider::NotAnEndpoint => None,
    }
}
