//! Restarts: items kept from an earlier run are stale until an operation
//! names them, and `InSync` sweeps what is still stale.

use super::NullDriver;
use super::undo::Undo;
use crate::desired::ServiceKey;
use crate::driver::ContractViolation;
use crate::ops::{EndpointId, IpSetId, PolicyId};

/// An item of the state, ordered as [`Operation::InSync`] removes stale
/// ones: users before what they use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Item {
    Workload(EndpointId),
    Host(String),
    Service(ServiceKey),
    Policy(PolicyId),
    Profile(String),
    IpSet(IpSetId),
    /// The nodes' addresses (others' and this one's), which `InSync` clears when they were
    /// not sent again.
    NodeAddresses,
}

impl NullDriver {
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
            .chain(
                (!s.node_addresses.is_empty()
                    || !s.local_addresses.is_empty()
                    || !s.pools.is_empty())
                .then_some(Item::NodeAddresses),
            )
            .collect();
        self.state.in_sync = false;
    }

    /// Removes every stale item, users before what they use.
    pub(super) fn sweep(&mut self, undo: &mut Vec<Undo>) -> Result<(), ContractViolation> {
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
                Item::NodeAddresses => {
                    let old = std::mem::take(&mut self.state.node_addresses);
                    let local = std::mem::take(&mut self.state.local_addresses);
                    let pools = std::mem::take(&mut self.state.pools);
                    undo.push(Undo::NodeAddresses(old, local, pools));
                }
            }
        }
        Ok(())
    }

    pub(super) fn unstale(&mut self, item: impl FnOnce() -> Item, undo: &mut Vec<Undo>) {
        if self.stale.is_empty() {
            return;
        }
        let item = item();
        if self.stale.remove(&item) {
            undo.push(Undo::Restale(item));
        }
    }
}
