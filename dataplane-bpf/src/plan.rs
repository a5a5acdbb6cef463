//! Pure bookkeeping for a batch: what it touches, which tables that makes
//! stale, and the operations that undo it when the kernel cannot take it.

use std::collections::BTreeSet;

use manul_dataplane_api::{
    DesiredState, EndpointId, HostEndpoint, IpSet, Operation, Policy, PolicyId, Rule,
    WorkloadEndpoint,
};

use crate::compile::{Direction, TableSpec};
use crate::loader::Hook;

/// What a batch names.
#[derive(Debug, Default)]
pub struct Touched {
    pub sets: BTreeSet<String>,
    pub policies: BTreeSet<PolicyId>,
    pub profiles: BTreeSet<String>,
    pub workloads: BTreeSet<EndpointId>,
    pub hosts: BTreeSet<String>,
    pub in_sync: bool,
}

impl Touched {
    pub fn of(batch: &[Operation]) -> Self {
        let mut t = Self::default();
        for op in batch {
            match op {
                Operation::IpSetUpdate { id, .. }
                | Operation::IpSetDelta { id, .. }
                | Operation::IpSetRemove { id } => {
                    t.sets.insert(id.clone());
                }
                Operation::PolicyUpdate { id, .. } | Operation::PolicyRemove { id } => {
                    t.policies.insert(id.clone());
                }
                Operation::ProfileUpdate { id, .. } | Operation::ProfileRemove { id } => {
                    t.profiles.insert(id.clone());
                }
                Operation::WorkloadEndpointUpdate(ep) => {
                    t.workloads.insert(ep.id.clone());
                }
                Operation::WorkloadEndpointRemove { id } => {
                    t.workloads.insert(id.clone());
                }
                Operation::HostEndpointUpdate(ep) => {
                    t.hosts.insert(ep.id.clone());
                }
                Operation::HostEndpointRemove { id } => {
                    t.hosts.insert(id.clone());
                }
                Operation::ServiceUpdate(_) | Operation::ServiceRemove { .. } => {}
                Operation::InSync => t.in_sync = true,
            }
        }
        t
    }

    /// Whether a table built from `spec` must be compiled again: a policy
    /// or profile it reads changed, or a named-port set its rules name
    /// (named-port triples are part of the table). Address sets are not:
    /// they live in the table's address space, which is synced in place.
    pub fn rules_affect(&self, spec: &TableSpec, state: &DesiredState) -> bool {
        let rules_touch_sets = |rules: &[Rule]| {
            !self.sets.is_empty()
                && rules.iter().any(|r| {
                    [&r.src, &r.dst].iter().any(|m| {
                        m.named_port_sets
                            .iter()
                            .chain(&m.not_named_port_sets)
                            .any(|s| self.sets.contains(s))
                    })
                })
        };
        let policy_rules = |p: &Policy| match spec.direction {
            Direction::Inbound => rules_touch_sets(&p.inbound),
            Direction::Outbound => rules_touch_sets(&p.outbound),
        };
        spec.policies().any(|id| {
            self.policies.contains(id) || state.policies.get(id).is_some_and(policy_rules)
        }) || spec.profiles.iter().any(|id| {
            self.profiles.contains(id) || state.profiles.get(id).is_some_and(policy_rules)
        })
    }
}

/// An endpoint of either kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKey {
    Workload(EndpointId),
    Host(String),
}

impl std::fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointKey::Workload(id) => write!(f, "workload endpoint {id}"),
            EndpointKey::Host(id) => write!(f, "host endpoint {id}"),
        }
    }
}

/// What an endpoint needs: its interface and the table spec of each hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    pub interface: String,
    /// Indexed by [`Hook::index`].
    pub specs: [TableSpec; 2],
}

impl EndpointPlan {
    /// Traffic from a pod arrives on the host-side veth's ingress: that is
    /// the endpoint's outbound policy; traffic to it leaves by egress.
    pub fn workload(ep: &WorkloadEndpoint) -> Self {
        Self {
            interface: ep.interface_name.clone(),
            specs: [
                TableSpec::new(Direction::Outbound, &ep.tiers, &ep.profiles),
                TableSpec::new(Direction::Inbound, &ep.tiers, &ep.profiles),
            ],
        }
    }

    /// A host interface's ingress is traffic to the host (inbound). Only
    /// the normal tiers are enforced (see ARCHITECTURE.md).
    pub fn host(ep: &HostEndpoint) -> Self {
        Self {
            interface: ep.interface_name.clone(),
            specs: [
                TableSpec::new(Direction::Inbound, &ep.tiers, &ep.profiles),
                TableSpec::new(Direction::Outbound, &ep.tiers, &ep.profiles),
            ],
        }
    }

    pub fn spec(&self, hook: Hook) -> &TableSpec {
        &self.specs[hook.index()]
    }
}

/// Every endpoint of the state with its plan.
pub fn plans(state: &DesiredState) -> Vec<(EndpointKey, EndpointPlan)> {
    state
        .workload_endpoints
        .values()
        .map(|ep| {
            (
                EndpointKey::Workload(ep.id.clone()),
                EndpointPlan::workload(ep),
            )
        })
        .chain(
            state
                .host_endpoints
                .values()
                .map(|ep| (EndpointKey::Host(ep.id.clone()), EndpointPlan::host(ep))),
        )
        .collect()
}

/// The values a batch's touched items had before it.
#[derive(Debug, Default)]
pub struct Before {
    sets: Vec<(String, Option<IpSet>)>,
    policies: Vec<(PolicyId, Option<Policy>)>,
    profiles: Vec<(String, Option<Policy>)>,
    workloads: Vec<(EndpointId, Option<WorkloadEndpoint>)>,
    hosts: Vec<(String, Option<HostEndpoint>)>,
}

impl Before {
    pub fn capture(t: &Touched, s: &DesiredState) -> Self {
        Self {
            sets: t
                .sets
                .iter()
                .map(|id| (id.clone(), s.ip_sets.get(id).cloned()))
                .collect(),
            policies: t
                .policies
                .iter()
                .map(|id| (id.clone(), s.policies.get(id).cloned()))
                .collect(),
            profiles: t
                .profiles
                .iter()
                .map(|id| (id.clone(), s.profiles.get(id).cloned()))
                .collect(),
            workloads: t
                .workloads
                .iter()
                .map(|id| (id.clone(), s.workload_endpoints.get(id).cloned()))
                .collect(),
            hosts: t
                .hosts
                .iter()
                .map(|id| (id.clone(), s.host_endpoints.get(id).cloned()))
                .collect(),
        }
    }

    /// Operations that bring `now` back to the captured values, in contract
    /// order: restore what existed (sets, policies, profiles, endpoints),
    /// then remove what the batch created (endpoints, policies, profiles,
    /// sets).
    pub fn undo(&self, now: &DesiredState) -> Vec<Operation> {
        let mut ops = Vec::new();
        for (id, old) in &self.sets {
            if let Some(set) = old {
                ops.push(Operation::IpSetUpdate {
                    id: id.clone(),
                    kind: set.kind,
                    members: set.members.iter().copied().collect(),
                });
            }
        }
        for (id, old) in &self.policies {
            if let Some(p) = old {
                ops.push(Operation::PolicyUpdate {
                    id: id.clone(),
                    policy: p.clone(),
                });
            }
        }
        for (id, old) in &self.profiles {
            if let Some(p) = old {
                ops.push(Operation::ProfileUpdate {
                    id: id.clone(),
                    profile: p.clone(),
                });
            }
        }
        for (id, old) in &self.workloads {
            match old {
                Some(ep) => ops.push(Operation::WorkloadEndpointUpdate(ep.clone())),
                None if now.workload_endpoints.contains_key(id) => {
                    ops.push(Operation::WorkloadEndpointRemove { id: id.clone() })
                }
                None => {}
            }
        }
        for (id, old) in &self.hosts {
            match old {
                Some(ep) => ops.push(Operation::HostEndpointUpdate(ep.clone())),
                None if now.host_endpoints.contains_key(id) => {
                    ops.push(Operation::HostEndpointRemove { id: id.clone() })
                }
                None => {}
            }
        }
        let created = |exists: bool, was: bool| exists && !was;
        for (id, old) in &self.policies {
            if created(now.policies.contains_key(id), old.is_some()) {
                ops.push(Operation::PolicyRemove { id: id.clone() });
            }
        }
        for (id, old) in &self.profiles {
            if created(now.profiles.contains_key(id), old.is_some()) {
                ops.push(Operation::ProfileRemove { id: id.clone() });
            }
        }
        for (id, old) in &self.sets {
            if created(now.ip_sets.contains_key(id), old.is_some()) {
                ops.push(Operation::IpSetRemove { id: id.clone() });
            }
        }
        ops
    }
}
