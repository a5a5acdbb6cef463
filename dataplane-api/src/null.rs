//! The null driver: a software dataplane.
//!
//! [`NullDriver`] holds the desired state exactly as a kernel driver would
//! (IP sets, policies, profiles, workload and host endpoints, services, the
//! in-sync flag) and checks every batch against the dataplane contract (see
//! [`crate::driver`]). A batch is applied atomically: every operation is
//! checked against the state left by the operations before it, and if one
//! breaks the contract the whole batch is rolled back and the error names
//! the operation's index and the missing or offending id. That is how the
//! calculation graph's tests prove its ordering (sets before policies before
//! endpoints, removals in reverse).
//!
//! [`NullDriver::verdict`] evaluates a packet against the recorded state the
//! way the kernel dataplanes must (see [`crate::verdict`]).
//!
//! # Restarts
//!
//! A kernel driver that starts finds state from an earlier run and keeps it
//! until Felix is in sync, then removes what Felix did not send again.
//! [`NullDriver::from_state`] models that: every item of the given state is
//! *stale* until an update (or removal) names it; [`Operation::InSync`]
//! removes what is still stale (endpoints and services first, then policies
//! and profiles, then IP sets), and is a contract error if something sent
//! again still names a stale policy, profile or set. An `IpSetDelta` does not
//! make a stale set fresh: only a full `IpSetUpdate` does.
//!
//! The same marking follows every refused batch: the refused batch itself
//! records nothing (it is rolled back whole), but the driver is out of sync
//! until a resync's `InSync` (see "After an error" in [`crate::driver`]).
//!
//! Removing what the driver does not have is an error; an `IpSetDelta` that
//! adds a member already present or removes one that is absent is not.
//! Rule checks beyond references: `ip_version` is 4 or 6, port ranges are
//! not inverted, numeric ports need protocol TCP, UDP or SCTP, ICMP matches
//! need protocol ICMP or ICMPv6.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::driver::{ContractViolation, Driver, DriverError};
use crate::ops::{
    Action, EndpointId, HostEndpoint, IpSetId, IpSetKind, IpSetMember, Operation, Policy, PolicyId,
    Rule, Service, TierPolicies, WorkloadEndpoint,
};

/// A service's key: namespace and name.
pub type ServiceKey = (String, String);

/// An IP set as a driver holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpSet {
    pub kind: IpSetKind,
    pub members: BTreeSet<IpSetMember>,
}

impl IpSet {
    /// Whether `addr` is inside one of the member networks (a `Net` set).
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.members.iter().any(|m| match m {
            IpSetMember::Net(net) => net.contains(&addr),
            IpSetMember::NamedPort { .. } => false,
        })
    }

    /// Whether `(addr, protocol, port)` is a member (a `NamedPort` set).
    pub fn contains_named_port(&self, addr: IpAddr, protocol: u8, port: u16) -> bool {
        self.members.contains(&IpSetMember::NamedPort {
            ip: addr,
            protocol,
            port,
        })
    }
}

/// Everything a driver has been told, as it should be programmed.
///
/// Maps serialise as lists of `[key, value]` pairs (JSON object keys must be
/// strings, and most keys here are not); a duplicate key is a decoding
/// error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    #[serde(with = "entries")]
    pub ip_sets: BTreeMap<IpSetId, IpSet>,
    #[serde(with = "entries")]
    pub policies: BTreeMap<PolicyId, Policy>,
    #[serde(with = "entries")]
    pub profiles: BTreeMap<String, Policy>,
    #[serde(with = "entries")]
    pub workload_endpoints: BTreeMap<EndpointId, WorkloadEndpoint>,
    #[serde(with = "entries")]
    pub host_endpoints: BTreeMap<String, HostEndpoint>,
    #[serde(with = "entries")]
    pub services: BTreeMap<ServiceKey, Service>,
    pub in_sync: bool,
}

impl DesiredState {
    /// The operations that build this state from nothing, in contract
    /// order: IP sets, policies, profiles, workload endpoints, host
    /// endpoints, services, then `InSync` if the state is in sync. This is
    /// also what a resync sends.
    pub fn operations(&self) -> Vec<Operation> {
        let mut ops = Vec::with_capacity(
            self.ip_sets.len()
                + self.policies.len()
                + self.profiles.len()
                + self.workload_endpoints.len()
                + self.host_endpoints.len()
                + self.services.len()
                + 1,
        );
        ops.extend(self.ip_sets.iter().map(|(id, set)| Operation::IpSetUpdate {
            id: id.clone(),
            kind: set.kind,
            members: set.members.iter().copied().collect(),
        }));
        ops.extend(
            self.policies
                .iter()
                .map(|(id, policy)| Operation::PolicyUpdate {
                    id: id.clone(),
                    policy: policy.clone(),
                }),
        );
        ops.extend(
            self.profiles
                .iter()
                .map(|(id, profile)| Operation::ProfileUpdate {
                    id: id.clone(),
                    profile: profile.clone(),
                }),
        );
        ops.extend(
            self.workload_endpoints
                .values()
                .map(|ep| Operation::WorkloadEndpointUpdate(ep.clone())),
        );
        ops.extend(
            self.host_endpoints
                .values()
                .map(|ep| Operation::HostEndpointUpdate(ep.clone())),
        );
        ops.extend(
            self.services
                .values()
                .map(|svc| Operation::ServiceUpdate(svc.clone())),
        );
        if self.in_sync {
            ops.push(Operation::InSync);
        }
        ops
    }

    /// Checks the whole state against the contract by scanning it: every
    /// reference resolves, every member fits its set, every rule is valid,
    /// every key matches its value's id. The null driver keeps this true
    /// incrementally; this is the slow, obvious version (for states read
    /// back from elsewhere, and for tests).
    pub fn check(&self) -> Result<(), ContractViolation> {
        for (id, set) in &self.ip_sets {
            for member in &set.members {
                check_member(id, set.kind, member)?;
            }
        }
        for (id, policy) in &self.policies {
            check_rules(Owner::Policy(id), policy, &self.ip_sets)?;
        }
        for (id, profile) in &self.profiles {
            check_rules(Owner::Profile(id), profile, &self.ip_sets)?;
        }
        for (key, ep) in &self.workload_endpoints {
            if *key != ep.id {
                return Err(ContractViolation::KeyMismatch {
                    what: "workload endpoint",
                    key: key.to_string(),
                    id: ep.id.to_string(),
                });
            }
            check_endpoint(
                EndpointRef::Workload(&ep.id),
                ep.tiers.iter(),
                &ep.profiles,
                &self.policies,
                &self.profiles,
            )?;
        }
        for (key, ep) in &self.host_endpoints {
            if *key != ep.id {
                return Err(ContractViolation::KeyMismatch {
                    what: "host endpoint",
                    key: key.clone(),
                    id: ep.id.clone(),
                });
            }
            check_endpoint(
                EndpointRef::Host(&ep.id),
                host_tiers(ep),
                &ep.profiles,
                &self.policies,
                &self.profiles,
            )?;
        }
        for ((namespace, name), svc) in &self.services {
            if *namespace != svc.namespace || *name != svc.name {
                return Err(ContractViolation::KeyMismatch {
                    what: "service",
                    key: format!("{namespace}/{name}"),
                    id: format!("{}/{}", svc.namespace, svc.name),
                });
            }
        }
        Ok(())
    }
}

/// The null driver: records the desired state, enforces the contract, and
/// evaluates packets against what it holds.
#[derive(Debug, Default)]
pub struct NullDriver {
    state: DesiredState,
    /// How many rule fields name each IP set.
    set_refs: HashMap<IpSetId, usize>,
    /// How many endpoint tier entries name each policy.
    policy_refs: HashMap<PolicyId, usize>,
    /// How many endpoint profile entries name each profile.
    profile_refs: HashMap<String, usize>,
    /// Items kept from an earlier run and not sent again yet.
    stale: BTreeSet<Item>,
    batches: u64,
    operations: u64,
}

/// An item of the state, ordered as [`Operation::InSync`] removes stale
/// ones: users before what they use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Workload(EndpointId),
    Host(String),
    Service(ServiceKey),
    Policy(PolicyId),
    Profile(String),
    IpSet(IpSetId),
}

/// How to undo one change made while applying a batch.
#[derive(Debug)]
enum Undo {
    IpSet(IpSetId, Option<IpSet>),
    /// Members that a delta really added and really removed.
    IpSetDelta {
        id: IpSetId,
        added: Vec<IpSetMember>,
        removed: Vec<IpSetMember>,
    },
    Policy(PolicyId, Option<Policy>),
    Profile(String, Option<Policy>),
    Workload(EndpointId, Option<WorkloadEndpoint>),
    Host(String, Option<HostEndpoint>),
    Service(ServiceKey, Option<Service>),
    InSync(bool),
    Restale(Item),
}

impl NullDriver {
    /// An empty driver, not in sync.
    pub fn new() -> Self {
        Self::default()
    }

    /// A driver that restarts with `state` left from an earlier run: it
    /// holds the state, not in sync, with every item stale until an update
    /// names it (see the module documentation). The state must satisfy
    /// [`DesiredState::check`].
    pub fn from_state(state: DesiredState) -> Result<Self, ContractViolation> {
        state.check()?;
        let mut driver = Self::new();
        let mut ops = state.operations();
        ops.retain(|op| !matches!(op, Operation::InSync));
        driver
            .apply_checked(&ops)
            .map_err(|(_, violation)| violation)?;
        driver.batches = 0;
        driver.operations = 0;
        driver.mark_all_stale();
        Ok(driver)
    }

    /// Models a driver restart: every item becomes stale and the driver is
    /// no longer in sync, until the next [`Operation::InSync`].
    pub fn mark_all_stale(&mut self) {
        let s = &self.state;
        self.stale = s
            .workload_endpoints
            .keys()
            .cloned()
            .map(Item::Workload)
            .chain(s.host_endpoints.keys().cloned().map(Item::Host))
            .chain(s.services.keys().cloned().map(Item::Service))
            .chain(s.policies.keys().cloned().map(Item::Policy))
            .chain(s.profiles.keys().cloned().map(Item::Profile))
            .chain(s.ip_sets.keys().cloned().map(Item::IpSet))
            .collect();
        self.state.in_sync = false;
    }

    /// The recorded state.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The recorded state, by value.
    pub fn into_state(self) -> DesiredState {
        self.state
    }

    pub fn ip_set(&self, id: &str) -> Option<&IpSet> {
        self.state.ip_sets.get(id)
    }

    pub fn policy(&self, id: &PolicyId) -> Option<&Policy> {
        self.state.policies.get(id)
    }

    pub fn profile(&self, id: &str) -> Option<&Policy> {
        self.state.profiles.get(id)
    }

    pub fn workload_endpoint(&self, id: &EndpointId) -> Option<&WorkloadEndpoint> {
        self.state.workload_endpoints.get(id)
    }

    /// Workload endpoints in id order.
    pub fn workload_endpoints(&self) -> impl Iterator<Item = &WorkloadEndpoint> {
        self.state.workload_endpoints.values()
    }

    pub fn host_endpoint(&self, id: &str) -> Option<&HostEndpoint> {
        self.state.host_endpoints.get(id)
    }

    /// Host endpoints in id order.
    pub fn host_endpoints(&self) -> impl Iterator<Item = &HostEndpoint> {
        self.state.host_endpoints.values()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.state
            .services
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn ip_set_count(&self) -> usize {
        self.state.ip_sets.len()
    }

    pub fn policy_count(&self) -> usize {
        self.state.policies.len()
    }

    pub fn profile_count(&self) -> usize {
        self.state.profiles.len()
    }

    pub fn workload_endpoint_count(&self) -> usize {
        self.state.workload_endpoints.len()
    }

    pub fn host_endpoint_count(&self) -> usize {
        self.state.host_endpoints.len()
    }

    pub fn service_count(&self) -> usize {
        self.state.services.len()
    }

    pub fn in_sync(&self) -> bool {
        self.state.in_sync
    }

    /// Items kept from an earlier run and not sent again yet.
    pub fn stale_count(&self) -> usize {
        self.stale.len()
    }

    /// Batches applied successfully (rejected ones are not counted).
    pub fn batches_applied(&self) -> u64 {
        self.batches
    }

    /// Operations in successfully applied batches.
    pub fn operations_applied(&self) -> u64 {
        self.operations
    }

    /// Applies a batch atomically, or names the first operation that
    /// breaks the contract and changes nothing.
    fn apply_checked(&mut self, batch: &[Operation]) -> Result<(), (usize, ContractViolation)> {
        let mut undo = Vec::new();
        for (index, op) in batch.iter().enumerate() {
            if let Err(violation) = self.apply_op(op, &mut undo) {
                self.rollback(undo);
                return Err((index, violation));
            }
        }
        self.batches += 1;
        self.operations += batch.len() as u64;
        Ok(())
    }

    fn apply_op(&mut self, op: &Operation, undo: &mut Vec<Undo>) -> Result<(), ContractViolation> {
        match op {
            Operation::IpSetUpdate { id, kind, members } => {
                for member in members {
                    check_member(id, *kind, member)?;
                }
                if let Some(old) = self.state.ip_sets.get(id)
                    && old.kind != *kind
                    && let Some(user) = self.set_user(id)
                {
                    return Err(ContractViolation::SetKindChangeWhileReferenced {
                        set: id.clone(),
                        from: old.kind,
                        to: *kind,
                        user,
                    });
                }
                self.unstale(|| Item::IpSet(id.clone()), undo);
                let set = IpSet {
                    kind: *kind,
                    members: members.iter().copied().collect(),
                };
                let old = self.state.ip_sets.insert(id.clone(), set);
                undo.push(Undo::IpSet(id.clone(), old));
            }
            Operation::IpSetDelta { id, added, removed } => {
                let Some(set) = self.state.ip_sets.get_mut(id) else {
                    return Err(ContractViolation::DeltaOnUnknownSet { set: id.clone() });
                };
                for member in added.iter().chain(removed) {
                    check_member(id, set.kind, member)?;
                }
                if !added.is_empty() && !removed.is_empty() {
                    let removed_set: BTreeSet<&IpSetMember> = removed.iter().collect();
                    if let Some(member) = added.iter().find(|m| removed_set.contains(m)) {
                        return Err(ContractViolation::AddedAndRemoved {
                            set: id.clone(),
                            member: *member,
                        });
                    }
                }
                let really_removed: Vec<IpSetMember> = removed
                    .iter()
                    .filter(|m| set.members.remove(m))
                    .copied()
                    .collect();
                let really_added: Vec<IpSetMember> = added
                    .iter()
                    .filter(|m| set.members.insert(**m))
                    .copied()
                    .collect();
                undo.push(Undo::IpSetDelta {
                    id: id.clone(),
                    added: really_added,
                    removed: really_removed,
                });
            }
            Operation::IpSetRemove { id } => {
                if !self.state.ip_sets.contains_key(id) {
                    return Err(ContractViolation::RemoveUnknown {
                        what: "IP set",
                        id: id.clone(),
                    });
                }
                if let Some(user) = self.set_user(id) {
                    return Err(ContractViolation::SetStillReferenced {
                        set: id.clone(),
                        user,
                    });
                }
                self.unstale(|| Item::IpSet(id.clone()), undo);
                let old = self.state.ip_sets.remove(id);
                undo.push(Undo::IpSet(id.clone(), old));
            }
            Operation::PolicyUpdate { id, policy } => {
                check_rules(Owner::Policy(id), policy, &self.state.ip_sets)?;
                self.unstale(|| Item::Policy(id.clone()), undo);
                let old = self.put_policy(id.clone(), Some(policy.clone()));
                undo.push(Undo::Policy(id.clone(), old));
            }
            Operation::PolicyRemove { id } => {
                if !self.state.policies.contains_key(id) {
                    return Err(ContractViolation::RemoveUnknown {
                        what: "policy",
                        id: id.to_string(),
                    });
                }
                if let Some(endpoint) = self.policy_user(id) {
                    return Err(ContractViolation::PolicyStillReferenced {
                        policy: id.clone(),
                        endpoint,
                    });
                }
                self.unstale(|| Item::Policy(id.clone()), undo);
                let old = self.put_policy(id.clone(), None);
                undo.push(Undo::Policy(id.clone(), old));
            }
            Operation::ProfileUpdate { id, profile } => {
                check_rules(Owner::Profile(id), profile, &self.state.ip_sets)?;
                self.unstale(|| Item::Profile(id.clone()), undo);
                let old = self.put_profile(id.clone(), Some(profile.clone()));
                undo.push(Undo::Profile(id.clone(), old));
            }
            Operation::ProfileRemove { id } => {
                if !self.state.profiles.contains_key(id) {
                    return Err(ContractViolation::RemoveUnknown {
                        what: "profile",
                        id: id.clone(),
                    });
                }
                if let Some(endpoint) = self.profile_user(id) {
                    return Err(ContractViolation::ProfileStillReferenced {
                        profile: id.clone(),
                        endpoint,
                    });
                }
                self.unstale(|| Item::Profile(id.clone()), undo);
                let old = self.put_profile(id.clone(), None);
                undo.push(Undo::Profile(id.clone(), old));
            }
            Operation::WorkloadEndpointUpdate(ep) => {
                check_endpoint(
                    EndpointRef::Workload(&ep.id),
                    ep.tiers.iter(),
                    &ep.profiles,
                    &self.state.policies,
                    &self.state.profiles,
                )?;
                self.unstale(|| Item::Workload(ep.id.clone()), undo);
                let old = self.put_workload(ep.id.clone(), Some(ep.clone()));
                undo.push(Undo::Workload(ep.id.clone(), old));
            }
            Operation::WorkloadEndpointRemove { id } => {
                if !self.state.workload_endpoints.contains_key(id) {
                    return Err(ContractViolation::RemoveUnknown {
                        what: "workload endpoint",
                        id: id.to_string(),
                    });
                }
                self.unstale(|| Item::Workload(id.clone()), undo);
                let old = self.put_workload(id.clone(), None);
                undo.push(Undo::Workload(id.clone(), old));
            }
            Operation::HostEndpointUpdate(ep) => {
                check_endpoint(
                    EndpointRef::Host(&ep.id),
                    host_tiers(ep),
                    &ep.profiles,
                    &self.state.policies,
                    &self.state.profiles,
                )?;
                self.unstale(|| Item::Host(ep.id.clone()), undo);
                let old = self.put_host(ep.id.clone(), Some(ep.clone()));
                undo.push(Undo::Host(ep.id.clone(), old));
            }
            Operation::HostEndpointRemove { id } => {
                if !self.state.host_endpoints.contains_key(id) {
                    return Err(ContractViolation::RemoveUnknown {
                        what: "host endpoint",
                        id: id.clone(),
                    });
                }
                self.unstale(|| Item::Host(id.clone()), undo);
                let old = self.put_host(id.clone(), None);
                undo.push(Undo::Host(id.clone(), old));
            }
            Operation::ServiceUpdate(svc) => {
                let key = (svc.namespace.clone(), svc.name.clone());
                self.unstale(|| Item::Service(key.clone()), undo);
                let old = self.state.services.insert(key.clone(), svc.clone());
                undo.push(Undo::Service(key, old));
            }
            Operation::ServiceRemove { namespace, name } => {
                let key = (namespace.clone(), name.clone());
                if !self.state.services.contains_key(&key) {
                    return Err(ContractViolation::RemoveUnknown {
                        what: "service",
                        id: format!("{namespace}/{name}"),
                    });
                }
                self.unstale(|| Item::Service(key.clone()), undo);
                let old = self.state.services.remove(&key);
                undo.push(Undo::Service(key, old));
            }
            Operation::InSync => {
                undo.push(Undo::InSync(self.state.in_sync));
                self.state.in_sync = true;
                self.sweep(undo)?;
            }
        }
        Ok(())
    }

    /// Removes every stale item, users before what they use.
    fn sweep(&mut self, undo: &mut Vec<Undo>) -> Result<(), ContractViolation> {
        let items: Vec<Item> = self.stale.iter().cloned().collect();
        for item in items {
            self.stale.remove(&item);
            undo.push(Undo::Restale(item.clone()));
            match item {
                Item::Workload(id) => {
                    let old = self.put_workload(id.clone(), None);
                    undo.push(Undo::Workload(id, old));
                }
                Item::Host(id) => {
                    let old = self.put_host(id.clone(), None);
                    undo.push(Undo::Host(id, old));
                }
                Item::Service(key) => {
                    let old = self.state.services.remove(&key);
                    undo.push(Undo::Service(key, old));
                }
                Item::Policy(id) => {
                    if let Some(user) = self.policy_user(&id) {
                        return Err(ContractViolation::StaleStillReferenced {
                            what: "policy",
                            id: id.to_string(),
                            user,
                        });
                    }
                    let old = self.put_policy(id.clone(), None);
                    undo.push(Undo::Policy(id, old));
                }
                Item::Profile(id) => {
                    if let Some(user) = self.profile_user(&id) {
                        return Err(ContractViolation::StaleStillReferenced {
                            what: "profile",
                            id,
                            user,
                        });
                    }
                    let old = self.put_profile(id.clone(), None);
                    undo.push(Undo::Profile(id, old));
                }
                Item::IpSet(id) => {
                    if let Some(user) = self.set_user(&id) {
                        return Err(ContractViolation::StaleStillReferenced {
                            what: "IP set",
                            id,
                            user,
                        });
                    }
                    let old = self.state.ip_sets.remove(&id);
                    undo.push(Undo::IpSet(id, old));
                }
            }
        }
        Ok(())
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for change in undo.into_iter().rev() {
            match change {
                Undo::IpSet(id, old) => match old {
                    Some(set) => {
                        self.state.ip_sets.insert(id, set);
                    }
                    None => {
                        self.state.ip_sets.remove(&id);
                    }
                },
                Undo::IpSetDelta { id, added, removed } => {
                    if let Some(set) = self.state.ip_sets.get_mut(&id) {
                        for member in &added {
                            set.members.remove(member);
                        }
                        set.members.extend(removed);
                    }
                }
                Undo::Policy(id, old) => {
                    self.put_policy(id, old);
                }
                Undo::Profile(id, old) => {
                    self.put_profile(id, old);
                }
                Undo::Workload(id, old) => {
                    self.put_workload(id, old);
                }
                Undo::Host(id, old) => {
                    self.put_host(id, old);
                }
                Undo::Service(key, old) => match old {
                    Some(svc) => {
                        self.state.services.insert(key, svc);
                    }
                    None => {
                        self.state.services.remove(&key);
                    }
                },
                Undo::InSync(in_sync) => self.state.in_sync = in_sync,
                Undo::Restale(item) => {
                    self.stale.insert(item);
                }
            }
        }
    }

    fn unstale(&mut self, item: impl FnOnce() -> Item, undo: &mut Vec<Undo>) {
        if self.stale.is_empty() {
            return;
        }
        let item = item();
        if self.stale.remove(&item) {
            undo.push(Undo::Restale(item));
        }
    }

    fn put_policy(&mut self, id: PolicyId, new: Option<Policy>) -> Option<Policy> {
        if let Some(policy) = &new {
            count(
                &mut self.set_refs,
                policy_set_refs(policy).map(|(s, _)| s),
                true,
            );
        }
        let old = match new {
            Some(policy) => self.state.policies.insert(id, policy),
            None => self.state.policies.remove(&id),
        };
        if let Some(policy) = &old {
            count(
                &mut self.set_refs,
                policy_set_refs(policy).map(|(s, _)| s),
                false,
            );
        }
        old
    }

    fn put_profile(&mut self, id: String, new: Option<Policy>) -> Option<Policy> {
        if let Some(profile) = &new {
            count(
                &mut self.set_refs,
                policy_set_refs(profile).map(|(s, _)| s),
                true,
            );
        }
        let old = match new {
            Some(profile) => self.state.profiles.insert(id, profile),
            None => self.state.profiles.remove(&id),
        };
        if let Some(profile) = &old {
            count(
                &mut self.set_refs,
                policy_set_refs(profile).map(|(s, _)| s),
                false,
            );
        }
        old
    }

    fn put_workload(
        &mut self,
        id: EndpointId,
        new: Option<WorkloadEndpoint>,
    ) -> Option<WorkloadEndpoint> {
        if let Some(ep) = &new {
            count(&mut self.policy_refs, tier_policies(ep.tiers.iter()), true);
            count(&mut self.profile_refs, ep.profiles.iter(), true);
        }
        let old = match new {
            Some(ep) => self.state.workload_endpoints.insert(id, ep),
            None => self.state.workload_endpoints.remove(&id),
        };
        if let Some(ep) = &old {
            count(&mut self.policy_refs, tier_policies(ep.tiers.iter()), false);
            count(&mut self.profile_refs, ep.profiles.iter(), false);
        }
        old
    }

    fn put_host(&mut self, id: String, new: Option<HostEndpoint>) -> Option<HostEndpoint> {
        if let Some(ep) = &new {
            count(&mut self.policy_refs, tier_policies(host_tiers(ep)), true);
            count(&mut self.profile_refs, ep.profiles.iter(), true);
        }
        let old = match new {
            Some(ep) => self.state.host_endpoints.insert(id, ep),
            None => self.state.host_endpoints.remove(&id),
        };
        if let Some(ep) = &old {
            count(&mut self.policy_refs, tier_policies(host_tiers(ep)), false);
            count(&mut self.profile_refs, ep.profiles.iter(), false);
        }
        old
    }

    /// A policy or profile rule naming the set, if any does.
    fn set_user(&self, id: &str) -> Option<String> {
        let refs = self.set_refs.get(id).copied().unwrap_or(0);
        if refs == 0 {
            return None;
        }
        let owners = self
            .state
            .policies
            .iter()
            .map(|(pid, p)| (Owner::Policy(pid), p))
            .chain(
                self.state
                    .profiles
                    .iter()
                    .map(|(name, p)| (Owner::Profile(name), p)),
            );
        for (owner, policy) in owners {
            for rule in policy.inbound.iter().chain(&policy.outbound) {
                if rule_set_refs(rule).any(|(s, _)| s == id) {
                    return Some(format!("{owner} rule {:?}", rule.id));
                }
            }
        }
        Some(format!("{refs} rule field(s)"))
    }

    /// An endpoint naming the policy, if any does.
    fn policy_user(&self, id: &PolicyId) -> Option<String> {
        let refs = self.policy_refs.get(id).copied().unwrap_or(0);
        if refs == 0 {
            return None;
        }
        for ep in self.state.workload_endpoints.values() {
            if tier_policies(ep.tiers.iter()).any(|p| p == id) {
                return Some(EndpointRef::Workload(&ep.id).to_string());
            }
        }
        for ep in self.state.host_endpoints.values() {
            if tier_policies(host_tiers(ep)).any(|p| p == id) {
                return Some(EndpointRef::Host(&ep.id).to_string());
            }
        }
        Some(format!("{refs} endpoint tier entries"))
    }

    /// An endpoint naming the profile, if any does.
    fn profile_user(&self, id: &str) -> Option<String> {
        let refs = self.profile_refs.get(id).copied().unwrap_or(0);
        if refs == 0 {
            return None;
        }
        for ep in self.state.workload_endpoints.values() {
            if ep.profiles.iter().any(|p| p == id) {
                return Some(EndpointRef::Workload(&ep.id).to_string());
            }
        }
        for ep in self.state.host_endpoints.values() {
            if ep.profiles.iter().any(|p| p == id) {
                return Some(EndpointRef::Host(&ep.id).to_string());
            }
        }
        Some(format!("{refs} endpoint profile entries"))
    }
}

impl Driver for NullDriver {
    /// Applies the batch atomically. A refused batch records nothing of
    /// itself, and leaves the driver out of sync (everything stale), as the
    /// contract requires of every driver after an error.
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        self.apply_checked(batch).map_err(|(index, violation)| {
            self.mark_all_stale();
            DriverError::Contract {
                index,
                operation: batch.get(index).map_or("?", Operation::kind),
                violation,
            }
        })
    }

    fn mark_stale(&mut self) {
        self.mark_all_stale();
    }

    fn name(&self) -> &'static str {
        "null"
    }
}

/// Adds one to (or takes one from) each key's count.
fn count<'a, K>(counts: &mut HashMap<K, usize>, keys: impl Iterator<Item = &'a K>, add: bool)
where
    K: Clone + Eq + Hash + 'a,
{
    for key in keys {
        if add {
            match counts.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(key.clone(), 1);
                }
            }
        } else if let Some(n) = counts.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(key);
            }
        }
    }
}

/// Who owns a rule, for messages.
#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    Policy(&'a PolicyId),
    Profile(&'a str),
}

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Policy(id) => write!(f, "policy {id}"),
            Owner::Profile(id) => write!(f, "profile {id:?}"),
        }
    }
}

/// An endpoint, for messages.
#[derive(Debug, Clone, Copy)]
enum EndpointRef<'a> {
    Workload(&'a EndpointId),
    Host(&'a str),
}

impl fmt::Display for EndpointRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointRef::Workload(id) => write!(f, "workload endpoint {id}"),
            EndpointRef::Host(id) => write!(f, "host endpoint {id:?}"),
        }
    }
}

/// The IP sets a rule names, with the kind each use needs.
fn rule_set_refs(rule: &Rule) -> impl Iterator<Item = (&IpSetId, IpSetKind)> {
    [&rule.src, &rule.dst].into_iter().flat_map(|m| {
        m.ip_sets
            .iter()
            .chain(&m.not_ip_sets)
            .map(|s| (s, IpSetKind::Net))
            .chain(
                m.named_port_sets
                    .iter()
                    .chain(&m.not_named_port_sets)
                    .map(|s| (s, IpSetKind::NamedPort)),
            )
    })
}

fn policy_set_refs(policy: &Policy) -> impl Iterator<Item = (&IpSetId, IpSetKind)> {
    policy
        .inbound
        .iter()
        .chain(&policy.outbound)
        .flat_map(rule_set_refs)
}

fn tier_policies<'a>(
    tiers: impl Iterator<Item = &'a TierPolicies>,
) -> impl Iterator<Item = &'a PolicyId> {
    tiers.flat_map(|t| t.inbound.iter().chain(&t.outbound))
}

/// Every tier list of a host endpoint.
fn host_tiers(ep: &HostEndpoint) -> impl Iterator<Item = &TierPolicies> {
    ep.tiers
        .iter()
        .chain(&ep.pre_dnat_tiers)
        .chain(&ep.untracked_tiers)
        .chain(&ep.forward_tiers)
}

fn check_member(set: &str, kind: IpSetKind, member: &IpSetMember) -> Result<(), ContractViolation> {
    let fits = matches!(
        (kind, member),
        (IpSetKind::Net, IpSetMember::Net(_))
            | (IpSetKind::NamedPort, IpSetMember::NamedPort { .. })
    );
    if fits {
        Ok(())
    } else {
        Err(ContractViolation::MemberKindMismatch {
            set: set.to_owned(),
            kind,
            member: *member,
        })
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn check_rules(
    owner: Owner<'_>,
    policy: &Policy,
    sets: &BTreeMap<IpSetId, IpSet>,
) -> Result<(), ContractViolation> {
    for rule in policy.inbound.iter().chain(&policy.outbound) {
        let invalid = |reason: String| ContractViolation::InvalidRule {
            owner: owner.to_string(),
            rule: rule.id.clone(),
            reason,
        };
        if let Some(version) = rule.ip_version
            && version != 4
            && version != 6
        {
            return Err(invalid(format!("ip_version is {version}, not 4 or 6")));
        }
        let mut has_ports = false;
        for m in [&rule.src, &rule.dst] {
            for range in m.ports.iter().chain(&m.not_ports) {
                has_ports = true;
                if range.first > range.last {
                    return Err(invalid(format!(
                        "port range {}-{} is inverted",
                        range.first, range.last
                    )));
                }
            }
        }
        if has_ports && !matches!(rule.protocol, Some(TCP | UDP | SCTP)) {
            return Err(invalid(
                "numeric ports need protocol TCP (6), UDP (17) or SCTP (132)".to_owned(),
            ));
        }
        if (rule.icmp.is_some() || rule.not_icmp.is_some())
            && !matches!(rule.protocol, Some(ICMP | ICMPV6))
        {
            return Err(invalid(
                "ICMP matches need protocol ICMP (1) or ICMPv6 (58)".to_owned(),
            ));
        }
        for (set, used_as) in rule_set_refs(rule) {
            match sets.get(set) {
                None => {
                    return Err(ContractViolation::UnknownIpSet {
                        set: set.clone(),
                        owner: owner.to_string(),
                        rule: rule.id.clone(),
                    });
                }
                Some(found) if found.kind != used_as => {
                    return Err(ContractViolation::SetKindMismatch {
                        set: set.clone(),
                        owner: owner.to_string(),
                        rule: rule.id.clone(),
                        used_as,
                        actual: found.kind,
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn check_endpoint<'a>(
    endpoint: EndpointRef<'_>,
    tiers: impl Iterator<Item = &'a TierPolicies>,
    profiles: &[String],
    known_policies: &BTreeMap<PolicyId, Policy>,
    known_profiles: &BTreeMap<String, Policy>,
) -> Result<(), ContractViolation> {
    for tier in tiers {
        if !matches!(tier.default_action, Action::Deny | Action::Pass) {
            return Err(ContractViolation::BadDefaultAction {
                tier: tier.name.clone(),
                action: tier.default_action,
                endpoint: endpoint.to_string(),
            });
        }
        for policy in tier.inbound.iter().chain(&tier.outbound) {
            if policy.tier != tier.name {
                return Err(ContractViolation::PolicyInWrongTier {
                    policy: policy.clone(),
                    tier: tier.name.clone(),
                    endpoint: endpoint.to_string(),
                });
            }
            if !known_policies.contains_key(policy) {
                return Err(ContractViolation::UnknownPolicy {
                    policy: policy.clone(),
                    endpoint: endpoint.to_string(),
                });
            }
        }
    }
    for profile in profiles {
        if !known_profiles.contains_key(profile) {
            return Err(ContractViolation::UnknownProfile {
                profile: profile.clone(),
                endpoint: endpoint.to_string(),
            });
        }
    }
    Ok(())
}

/// Serialises a map as a list of `[key, value]` pairs; a duplicate key is a
/// decoding error.
mod entries {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord + fmt::Debug,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        struct Entries<K, V>(PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Deserialize<'de> + Ord + fmt::Debug,
            V: Deserialize<'de>,
        {
            type Value = BTreeMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of [key, value] pairs")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((key, value)) = seq.next_element::<(K, V)>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                    }
                    map.insert(key, value);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_seq(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests;
