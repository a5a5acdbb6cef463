//! The `pending` trace of an observation: what the staged policies
//! (`StagedNetworkPolicy` and its kin) would have done with it, beside the
//! `enforced` trace. Staged policies are never enforced; Felix evaluates
//! them here, over the pending view of the policy-relevant resources its
//! sync delivers ([`manul_felix_calc::pending::PendingView`]: the enforced
//! policies with each staged one in its place), with the reference
//! evaluator, for the side of the flow that reported it.
//!
//! While no staged policy exists the pending trace is empty (nothing is
//! made up, and nothing is evaluated).

use manul_dataplane_api::{FlowObservation, Reporter};
use manul_felix_calc::evaluator::{Decision, Direction, PolicyStep, Verdict};
use manul_felix_calc::pending::{self, PendingView};
use manul_model::Kind;
use manul_model::convert::K8S_POLICY_PREFIX;
use manul_model::v3::Action;
use manul_proto::flows::PolicyHit;

use crate::calc::Update;

/// The pending trace and its verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    pub hits: Vec<PolicyHit>,
    /// `None`: no staged policy exists, or the reporting side is not a
    /// workload endpoint the view knows.
    pub allowed: Option<bool>,
}

/// Staged policies over the resources Felix's sync delivers.
#[derive(Debug, Default)]
pub struct StagedPolicies {
    view: PendingView,
    /// Traces that could not be computed (an ambiguous endpoint, ...).
    pub errors: u64,
}

impl StagedPolicies {
    pub fn new() -> StagedPolicies {
        StagedPolicies::default()
    }

    /// A sync update (the view ignores what it does not need).
    pub fn update(&mut self, u: &Update) {
        self.view.update(u);
    }

    /// How many staged policies there are.
    pub fn staged(&self) -> usize {
        self.view.staged()
    }

    /// The pending trace of the side that reported `obs`.
    pub fn pending(&mut self, obs: &FlowObservation) -> Pending {
        if self.view.staged() == 0 {
            return Pending::default();
        }
        let direction = match obs.reporter {
            Reporter::Source => Direction::Egress,
            Reporter::Destination => Direction::Ingress,
        };
        let t = &obs.tuple;
        let packet = pending::packet(t.protocol, t.src, t.src_port, t.dst, t.dst_port);
        match self.view.trace(&packet, direction) {
            Ok(Some(d)) => Pending {
                hits: hits(&d),
                allowed: Some(d.verdict == Verdict::Allow),
            },
            Ok(None) => Pending::default(),
            Err(e) => {
                self.errors += 1;
                tracing::debug!(error = %e, "no pending trace for a flow");
                Pending::default()
            }
        }
    }
}

/// Every policy that gave a verdict, as the enforced trace has them: a
/// rule's Allow, Deny or Pass, then the tier's end when its default
/// decided.
pub fn hits(d: &Decision) -> Vec<PolicyHit> {
    let mut out: Vec<PolicyHit> = d.passed.iter().filter_map(step_hit).collect();
    if let (Some(tier), None, None) = (&d.tier, &d.policy, &d.profile) {
        out.push(PolicyHit {
            tier: tier.clone(),
            kind: "EndOfTier".to_owned(),
            namespace: String::new(),
            name: tier.clone(),
            rule_index: None,
            action: verdict_name(d.verdict).to_owned(),
        });
    }
    out
}

fn step_hit(s: &PolicyStep) -> Option<PolicyHit> {
    let action = match s.action? {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Pass => "pass",
        Action::Log => return None,
    };
    let kind = match s.kind {
        Kind::K8sNetworkPolicy => "KubernetesNetworkPolicy",
        k => k.name(),
    };
    let name = match s.kind {
        Kind::K8sNetworkPolicy | Kind::StagedKubernetesNetworkPolicy => s
            .name
            .strip_prefix(K8S_POLICY_PREFIX)
            .unwrap_or(&s.name)
            .to_owned(),
        _ => s.name.clone(),
    };
    Some(PolicyHit {
        tier: s.tier.clone(),
        kind: kind.to_owned(),
        namespace: s.namespace.clone().unwrap_or_default(),
        name,
        rule_index: s.rule_index.and_then(|i| u32::try_from(i).ok()),
        action: action.to_owned(),
    })
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}
