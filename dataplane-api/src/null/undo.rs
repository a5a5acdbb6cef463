//! Undoing a refused batch: every change made while applying it is recorded
//! and reverted in reverse order.

use super::NullDriver;
use super::stale::Item;
use crate::desired::{IpSet, ServiceKey};
use crate::ops::{
    EndpointId, HostEndpoint, IpSetId, IpSetMember, Policy, PolicyId, Service, WorkloadEndpoint,
};

/// How to undo one change made while applying a batch.
#[derive(Debug)]
pub(super) enum Undo {
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
    /// The other nodes' addresses, this node's and the IP pools.
    NodeAddresses(
        std::collections::BTreeSet<std::net::IpAddr>,
        std::collections::BTreeSet<std::net::IpAddr>,
        std::collections::BTreeSet<ipnet::IpNet>,
    ),
    InSync(bool),
    Restale(Item),
}

impl NullDriver {
    pub(super) fn rollback(&mut self, undo: Vec<Undo>) {
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
                Undo::NodeAddresses(old, local, pools) => {
                    self.state.node_addresses = old;
                    self.state.local_addresses = local;
                    self.state.pools = pools;
                }
                Undo::InSync(in_sync) => self.state.in_sync = in_sync,
                Undo::Restale(item) => {
                    self.stale.insert(item);
                }
            }
        }
    }
}
