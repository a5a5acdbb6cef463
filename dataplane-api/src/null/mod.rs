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
//! adds a member already present or removes one that is absent is not. What
//! an operation must carry is checked by `contract`; what it may
//! name or remove depends on the state, which this driver keeps with counts
//! of references (`refs`) so that a removal still in use is refused.
//!
//! One function per operation kind applies it (`apply`); each records how to
//! undo what it changed (`undo`), and restarts and `InSync` are handled by
//! `stale`.

mod apply;
mod refs;
mod stale;
mod undo;

use std::collections::{BTreeSet, HashMap};

use crate::desired::{DesiredState, IpSet};
use crate::driver::{ContractViolation, Driver, DriverError};
use crate::ops::{
    EndpointId, HostEndpoint, IpSetId, Operation, Policy, PolicyId, Service, WorkloadEndpoint,
};
use stale::Item;
use undo::Undo;

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
                self.ip_set_update(id, *kind, members, undo)
            }
            Operation::IpSetDelta { id, added, removed } => {
                self.ip_set_delta(id, added, removed, undo)
            }
            Operation::IpSetRemove { id } => self.ip_set_remove(id, undo),
            Operation::PolicyUpdate { id, policy } => self.policy_update(id, policy, undo),
            Operation::PolicyRemove { id } => self.policy_remove(id, undo),
            Operation::ProfileUpdate { id, profile } => self.profile_update(id, profile, undo),
            Operation::ProfileRemove { id } => self.profile_remove(id, undo),
            Operation::WorkloadEndpointUpdate(ep) => self.workload_endpoint_update(ep, undo),
            Operation::WorkloadEndpointRemove { id } => self.workload_endpoint_remove(id, undo),
            Operation::HostEndpointUpdate(ep) => self.host_endpoint_update(ep, undo),
            Operation::HostEndpointRemove { id } => self.host_endpoint_remove(id, undo),
            Operation::ServiceUpdate(svc) => self.service_update(svc, undo),
            Operation::ServiceRemove { namespace, name } => {
                self.service_remove(namespace, name, undo)
            }
            Operation::NodeAddresses {
                addresses,
                local,
                pools,
            } => self.node_addresses_op(addresses, local, pools, undo),
            Operation::InSync => self.in_sync_op(undo),
        }
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

#[cfg(test)]
mod tests;
