//! The desired state: everything a driver has been told, as it should be
//! programmed.
//!
//! [`DesiredState`] is what the drivers render from (the eBPF and nftables
//! drivers compile their tables from it; the null driver keeps nothing
//! else), what a resync sends ([`DesiredState::operations`]) and what
//! [`crate::null::NullDriver::from_state`] restarts from.
//! [`DesiredState::check`] scans it against the contract (the checks are in
//! `contract`).
//!
//! It refuses to apply operations: applying them batch by batch, with the
//! contract's checks, is the drivers' work (the reference is
//! [`crate::null::NullDriver`]).

mod entries;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::contract;
use crate::driver::ContractViolation;
use crate::ops::{
    EndpointId, HostEndpoint, IpSetId, IpSetKind, IpSetMember, Operation, Policy, PolicyId,
    Service, WorkloadEndpoint,
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
    /// The cluster's other nodes' addresses ([`Operation::NodeAddresses`]).
    #[serde(default)]
    pub node_addresses: BTreeSet<IpAddr>,
    /// This node's own addresses (`local` of [`Operation::NodeAddresses`]).
    #[serde(default)]
    pub local_addresses: BTreeSet<IpAddr>,
    /// The cluster's IP pools (`pools` of [`Operation::NodeAddresses`]).
    #[serde(default)]
    pub pools: BTreeSet<ipnet::IpNet>,
    pub in_sync: bool,
}

impl DesiredState {
    /// The operations that build this state from nothing, in contract
    /// order: IP sets, policies, profiles, workload endpoints, host
    /// endpoints, services, the nodes' addresses (when there are
    /// any), then `InSync` if the state is in sync. This is
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
        if !self.node_addresses.is_empty()
            || !self.local_addresses.is_empty()
            || !self.pools.is_empty()
        {
            ops.push(Operation::NodeAddresses {
                addresses: self.node_addresses.iter().copied().collect(),
                local: self.local_addresses.iter().copied().collect(),
                pools: self.pools.iter().copied().collect(),
            });
        }
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
        contract::check_state(self)
    }
}
