//! One function per operation kind: each checks the operation against the
//! state left by the operations before it, applies it, and records how to
//! undo it.

use std::collections::BTreeSet;

use super::NullDriver;
use super::stale::Item;
use super::undo::Undo;
use crate::contract::{EndpointRef, Owner, check_endpoint, check_member, check_rules, host_tiers};
use crate::desired::IpSet;
use crate::driver::ContractViolation;
use crate::ops::{
    EndpointId, HostEndpoint, IpSetId, IpSetKind, IpSetMember, Policy, PolicyId, Service,
    WorkloadEndpoint,
};

type Applied = Result<(), ContractViolation>;

impl NullDriver {
    pub(super) fn ip_set_update(
        &mut self,
        id: &IpSetId,
        kind: IpSetKind,
        members: &[IpSetMember],
        undo: &mut Vec<Undo>,
    ) -> Applied {
        for member in members {
            check_member(id, kind, member)?;
        }
        if let Some(old) = self.state.ip_sets.get(id)
            && old.kind != kind
            && let Some(user) = self.set_user(id)
        {
            return Err(ContractViolation::SetKindChangeWhileReferenced {
                set: id.clone(),
                from: old.kind,
                to: kind,
                user,
            });
        }
        self.unstale(|| Item::IpSet(id.clone()), undo);
        let set = IpSet {
            kind,
            members: members.iter().copied().collect(),
        };
        let old = self.state.ip_sets.insert(id.clone(), set);
        undo.push(Undo::IpSet(id.clone(), old));
        Ok(())
    }

    pub(super) fn ip_set_delta(
        &mut self,
        id: &IpSetId,
        added: &[IpSetMember],
        removed: &[IpSetMember],
        undo: &mut Vec<Undo>,
    ) -> Applied {
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
        Ok(())
    }

    pub(super) fn ip_set_remove(&mut self, id: &IpSetId, undo: &mut Vec<Undo>) -> Applied {
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
        Ok(())
    }

    pub(super) fn policy_update(
        &mut self,
        id: &PolicyId,
        policy: &Policy,
        undo: &mut Vec<Undo>,
    ) -> Applied {
        check_rules(Owner::Policy(id), policy, &self.state.ip_sets)?;
        self.unstale(|| Item::Policy(id.clone()), undo);
        let old = self.put_policy(id.clone(), Some(policy.clone()));
        undo.push(Undo::Policy(id.clone(), old));
        Ok(())
    }

    pub(super) fn policy_remove(&mut self, id: &PolicyId, undo: &mut Vec<Undo>) -> Applied {
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
        Ok(())
    }

    pub(super) fn profile_update(
        &mut self,
        id: &str,
        profile: &Policy,
        undo: &mut Vec<Undo>,
    ) -> Applied {
        check_rules(Owner::Profile(id), profile, &self.state.ip_sets)?;
        self.unstale(|| Item::Profile(id.to_owned()), undo);
        let old = self.put_profile(id.to_owned(), Some(profile.clone()));
        undo.push(Undo::Profile(id.to_owned(), old));
        Ok(())
    }

    pub(super) fn profile_remove(&mut self, id: &str, undo: &mut Vec<Undo>) -> Applied {
        if !self.state.profiles.contains_key(id) {
            return Err(ContractViolation::RemoveUnknown {
                what: "profile",
                id: id.to_owned(),
            });
        }
        if let Some(endpoint) = self.profile_user(id) {
            return Err(ContractViolation::ProfileStillReferenced {
                profile: id.to_owned(),
                endpoint,
            });
        }
        self.unstale(|| Item::Profile(id.to_owned()), undo);
        let old = self.put_profile(id.to_owned(), None);
        undo.push(Undo::Profile(id.to_owned(), old));
        Ok(())
    }

    pub(super) fn workload_endpoint_update(
        &mut self,
        ep: &WorkloadEndpoint,
        undo: &mut Vec<Undo>,
    ) -> Applied {
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
        Ok(())
    }

    pub(super) fn workload_endpoint_remove(
        &mut self,
        id: &EndpointId,
        undo: &mut Vec<Undo>,
    ) -> Applied {
        if !self.state.workload_endpoints.contains_key(id) {
            return Err(ContractViolation::RemoveUnknown {
                what: "workload endpoint",
                id: id.to_string(),
            });
        }
        self.unstale(|| Item::Workload(id.clone()), undo);
        let old = self.put_workload(id.clone(), None);
        undo.push(Undo::Workload(id.clone(), old));
        Ok(())
    }

    pub(super) fn host_endpoint_update(
        &mut self,
        ep: &HostEndpoint,
        undo: &mut Vec<Undo>,
    ) -> Applied {
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
        Ok(())
    }

    pub(super) fn host_endpoint_remove(&mut self, id: &str, undo: &mut Vec<Undo>) -> Applied {
        if !self.state.host_endpoints.contains_key(id) {
            return Err(ContractViolation::RemoveUnknown {
                what: "host endpoint",
                id: id.to_owned(),
            });
        }
        self.unstale(|| Item::Host(id.to_owned()), undo);
        let old = self.put_host(id.to_owned(), None);
        undo.push(Undo::Host(id.to_owned(), old));
        Ok(())
    }

    pub(super) fn service_update(&mut self, svc: &Service, undo: &mut Vec<Undo>) -> Applied {
        let key = (svc.namespace.clone(), svc.name.clone());
        self.unstale(|| Item::Service(key.clone()), undo);
        let old = self.state.services.insert(key.clone(), svc.clone());
        undo.push(Undo::Service(key, old));
        Ok(())
    }

    pub(super) fn service_remove(
        &mut self,
        namespace: &str,
        name: &str,
        undo: &mut Vec<Undo>,
    ) -> Applied {
        let key = (namespace.to_owned(), name.to_owned());
        if !self.state.services.contains_key(&key) {
            return Err(ContractViolation::RemoveUnknown {
                what: "service",
                id: format!("{namespace}/{name}"),
            });
        }
        self.unstale(|| Item::Service(key.clone()), undo);
        let old = self.state.services.remove(&key);
        undo.push(Undo::Service(key, old));
        Ok(())
    }

    /// `InSync`: the driver is in sync, and what is still stale goes.
    /// Replaces the other nodes' addresses and this node's (fresh again after a restart).
    pub(super) fn node_addresses_op(
        &mut self,
        addresses: &[std::net::IpAddr],
        local: &[std::net::IpAddr],
        pools: &[ipnet::IpNet],
        undo: &mut Vec<Undo>,
    ) -> Applied {
        if self.stale.remove(&Item::NodeAddresses) {
            undo.push(Undo::Restale(Item::NodeAddresses));
        }
        let old = std::mem::replace(
            &mut self.state.node_addresses,
            addresses.iter().copied().collect(),
        );
        let old_local = std::mem::replace(
            &mut self.state.local_addresses,
            local.iter().copied().collect(),
        );
        let old_pools = std::mem::replace(&mut self.state.pools, pools.iter().copied().collect());
        undo.push(Undo::NodeAddresses(old, old_local, old_pools));
        Ok(())
    }

    pub(super) fn in_sync_op(&mut self, undo: &mut Vec<Undo>) -> Applied {
        undo.push(Undo::InSync(self.state.in_sync));
        self.state.in_sync = true;
        self.sweep(undo)
    }
}
