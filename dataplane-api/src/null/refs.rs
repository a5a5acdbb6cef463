//! Reference counts: how many rule fields name each IP set, and how many
//! endpoint entries name each policy and profile, kept exact as items are
//! put and removed, so that removing something still in use is refused
//! without scanning the state.

use std::collections::HashMap;
use std::hash::Hash;

use super::NullDriver;
use crate::contract::{
    EndpointRef, Owner, host_tiers, policy_set_refs, rule_set_refs, tier_policies,
};
use crate::ops::{EndpointId, HostEndpoint, Policy, PolicyId, WorkloadEndpoint};

impl NullDriver {
    pub(super) fn put_policy(&mut self, id: PolicyId, new: Option<Policy>) -> Option<Policy> {
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

    pub(super) fn put_profile(&mut self, id: String, new: Option<Policy>) -> Option<Policy> {
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

    pub(super) fn put_workload(
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

    pub(super) fn put_host(
        &mut self,
        id: String,
        new: Option<HostEndpoint>,
    ) -> Option<HostEndpoint> {
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
    pub(super) fn set_user(&self, id: &str) -> Option<String> {
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
    pub(super) fn policy_user(&self, id: &PolicyId) -> Option<String> {
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
    pub(super) fn profile_user(&self, id: &str) -> Option<String> {
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
