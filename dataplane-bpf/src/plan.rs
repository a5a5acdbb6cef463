//! Pure bookkeeping for a batch: what it touches, which tables that makes
//! stale, and the operations that undo it when the kernel cannot take it.

use std::collections::BTreeSet;

use ipnet::IpNet;
use manul_dataplane_api::{
    DesiredState, EndpointId, HostEndpoint, IpSet, Operation, Policy, PolicyId, Rule,
    WorkloadEndpoint,
};

use crate::compile::{Direction, Stage, TableSpec};
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
                Operation::ServiceUpdate(_)
                | Operation::ServiceRemove { .. }
                | Operation::NodeAddresses { .. } => {}
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

/// An endpoint of either kind on one interface (a host endpoint named
/// `*` is one per interface it covers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKey {
    Workload(EndpointId),
    Host { id: String, interface: String },
}

impl std::fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointKey::Workload(id) => write!(f, "workload endpoint {id}"),
            EndpointKey::Host { id, interface } => {
                write!(f, "host endpoint {id} on {interface}")
            }
        }
    }
}

/// A host endpoint with this interface name applies to every host
/// interface of the node that no other host endpoint names.
pub const ALL_INTERFACES: &str = "*";

/// The stages of [`EndpointPlan::stages`], in the order of `enum
/// manul_stage`.
pub const STAGES: [Stage; 3] = [Stage::Untracked, Stage::PreDnat, Stage::Forward];

/// What an endpoint needs: its interface and the table spec of each hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    pub interface: String,
    /// Indexed by [`Hook::index`]: the normal tables.
    pub specs: [TableSpec; 2],
    /// Host endpoints only: by hook, then as [`STAGES`]; `None` where the
    /// endpoint has no such policy.
    pub stages: [[Option<TableSpec>; 3]; 2],
    /// Workloads only: the sources its pod may send from (its networks);
    /// anything else from the pod is dropped. Empty for host endpoints.
    pub sources: Vec<IpNet>,
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
            stages: Default::default(),
            sources: ep.nets.clone(),
        }
    }

    /// A host interface's ingress is traffic to the host (inbound). Its
    /// normal tables hold the normal tiers and profiles; the untracked and
    /// forward tiers have a table per hook, the pre-DNAT tiers one for
    /// ingress only (they judge arriving traffic).
    pub fn host(ep: &HostEndpoint, interface: &str) -> Self {
        let stages = |direction: Direction| {
            STAGES.map(|stage| {
                let tiers = match stage {
                    Stage::Untracked => &ep.untracked_tiers,
                    Stage::PreDnat if direction == Direction::Inbound => &ep.pre_dnat_tiers,
                    Stage::Forward => &ep.forward_tiers,
                    Stage::PreDnat | Stage::Normal => return None,
                };
                TableSpec::stage(stage, direction, tiers)
            })
        };
        Self {
            interface: interface.to_owned(),
            specs: [
                TableSpec::new(Direction::Inbound, &ep.tiers, &ep.profiles),
                TableSpec::new(Direction::Outbound, &ep.tiers, &ep.profiles),
            ],
            stages: [stages(Direction::Inbound), stages(Direction::Outbound)],
            sources: Vec::new(),
        }
    }

    pub fn spec(&self, hook: Hook) -> &TableSpec {
        &self.specs[hook.index()]
    }

    /// Every table spec the endpoint reads.
    pub fn all_specs(&self) -> impl Iterator<Item = &TableSpec> {
        self.specs
            .iter()
            .chain(self.stages.iter().flatten().flatten())
    }
}

/// Every endpoint of the state with its plan. `interfaces` are the names
/// of the node's interfaces, which a host endpoint named `*` covers except
/// loopback, interfaces with a workload prefix or a workload endpoint, and
/// those another host endpoint names (the first `*` endpoint in id order
/// takes an interface).
pub fn plans(
    state: &DesiredState,
    interfaces: &[String],
    workload_prefixes: &[String],
) -> Vec<(EndpointKey, EndpointPlan)> {
    let mut out: Vec<(EndpointKey, EndpointPlan)> = state
        .workload_endpoints
        .values()
        .map(|ep| {
            (
                EndpointKey::Workload(ep.id.clone()),
                EndpointPlan::workload(ep),
            )
        })
        .collect();
    let mut taken: BTreeSet<&str> = state
        .workload_endpoints
        .values()
        .map(|ep| ep.interface_name.as_str())
        .collect();
    for ep in state.host_endpoints.values() {
        if ep.interface_name != ALL_INTERFACES {
            taken.insert(ep.interface_name.as_str());
            out.push(host_plan(ep, &ep.interface_name));
        }
    }
    for ep in state.host_endpoints.values() {
        if ep.interface_name != ALL_INTERFACES {
            continue;
        }
        for name in interfaces {
            if crate::driver::is_own_or_loopback(name)
                || crate::driver::is_workload_interface(workload_prefixes, name)
                || !taken.insert(name.as_str())
            {
                continue;
            }
            out.push(host_plan(ep, name));
        }
    }
    out
}

fn host_plan(ep: &HostEndpoint, interface: &str) -> (EndpointKey, EndpointPlan) {
    (
        EndpointKey::Host {
            id: ep.id.clone(),
            interface: interface.to_owned(),
        },
        EndpointPlan::host(ep, interface),
    )
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

#[cfg(test)]
mod tests {
    use manul_dataplane_api::{Action, Driver, NullDriver, Policy, TierPolicies};

    use super::*;

    fn hep(id: &str, interface: &str, tiers: Vec<TierPolicies>) -> HostEndpoint {
        HostEndpoint {
            id: id.into(),
            interface_name: interface.into(),
            expected_ips: vec![],
            tiers: vec![],
            pre_dnat_tiers: tiers.clone(),
            untracked_tiers: tiers.clone(),
            forward_tiers: tiers,
            profiles: vec![],
        }
    }

    fn both_ways() -> Vec<TierPolicies> {
        let id = PolicyId {
            tier: "t".into(),
            name: "p".into(),
        };
        vec![TierPolicies {
            name: "t".into(),
            default_action: Action::Deny,
            inbound: vec![id.clone()],
            outbound: vec![id],
        }]
    }

    #[test]
    fn all_interfaces_covers_host_interfaces_nothing_else_names() {
        let mut d = NullDriver::new();
        d.apply(&[
            Operation::PolicyUpdate {
                id: PolicyId {
                    tier: "t".into(),
                    name: "p".into(),
                },
                policy: Policy::default(),
            },
            Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
                id: EndpointId {
                    namespace: "ns".into(),
                    name: "w".into(),
                },
                interface_name: "veth-w".into(),
                nets: vec![],
                mac: None,
                tiers: vec![],
                profiles: vec![],
            }),
            Operation::HostEndpointUpdate(hep("all", ALL_INTERFACES, both_ways())),
            Operation::HostEndpointUpdate(hep("named", "eth1", vec![])),
        ])
        .unwrap();
        let names: Vec<String> = ["eth0", "eth1", "lo", "mnl1", "tunl0", "veth-w"]
            .map(String::from)
            .to_vec();
        let plans = plans(d.state(), &names, &["mnl".to_owned()]);
        let hosts: Vec<(String, String)> = plans
            .iter()
            .filter_map(|(k, p)| match k {
                EndpointKey::Host { id, interface } => {
                    assert_eq!(interface, &p.interface);
                    Some((id.clone(), interface.clone()))
                }
                EndpointKey::Workload(_) => None,
            })
            .collect();
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            hosts,
            vec![
                pair("named", "eth1"),
                pair("all", "eth0"),
                pair("all", "tunl0")
            ]
        );

        // Stages per hook: pre-DNAT on ingress only.
        let (_, all) = plans
            .iter()
            .find(|(k, _)| matches!(k, EndpointKey::Host { id, .. } if id == "all"))
            .unwrap();
        let present = all.stages.clone().map(|h| h.map(|s| s.map(|s| s.stage)));
        assert_eq!(
            present,
            [
                [
                    Some(Stage::Untracked),
                    Some(Stage::PreDnat),
                    Some(Stage::Forward)
                ],
                [Some(Stage::Untracked), None, Some(Stage::Forward)],
            ]
        );
        assert_eq!(all.all_specs().count(), 2 + 5);
        let (_, named) = plans
            .iter()
            .find(|(k, _)| matches!(k, EndpointKey::Host { id, .. } if id == "named"))
            .unwrap();
        assert_eq!(named.all_specs().count(), 2);
    }

    #[test]
    fn stage_order_is_the_kernel_s() {
        use crate::abi;
        let index = |s: Stage| STAGES.iter().position(|x| *x == s).unwrap() as u32;
        assert_eq!(index(Stage::Untracked), abi::MANUL_STAGE_UNTRACKED);
        assert_eq!(index(Stage::PreDnat), abi::MANUL_STAGE_PRE_DNAT);
        assert_eq!(index(Stage::Forward), abi::MANUL_STAGE_FORWARD);
        assert_eq!(STAGES.len() as u32, abi::MANUL_STAGE_MAX);
    }
}
