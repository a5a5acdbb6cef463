//! Emission: what the driver was last told, the batch that brings it to
//! what the state now requires (diffed, at most one operation per key, in
//! the contract's order), and the numbers [`super::Ready`] carries.

use std::collections::{BTreeMap, BTreeSet};

use manul_dataplane_api as dp;

use super::CalcGraph;
use super::inputs::{EndpointInput, Item, PolicyInput};
use super::services;

/// What was last sent to the driver (sets: in [`super::sets::SetState`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Emitted {
    /// Batches emitted (non-empty ones), and how many of them the
    /// dataplane is known to hold.
    pub(super) number: u64,
    pub(super) committed: u64,
    pub(super) policies: BTreeMap<dp::PolicyId, dp::Policy>,
    pub(super) profiles: BTreeMap<String, dp::Policy>,
    pub(super) workloads: BTreeMap<dp::EndpointId, dp::WorkloadEndpoint>,
    pub(super) hosts: BTreeMap<String, dp::HostEndpoint>,
    pub(super) services: BTreeMap<(String, String), dp::Service>,
    /// The other nodes' addresses.
    pub(super) node_addresses: BTreeSet<std::net::IpAddr>,
    /// This node's own addresses.
    pub(super) local_addresses: BTreeSet<std::net::IpAddr>,
    /// The IP pools' CIDRs.
    pub(super) pools: BTreeSet<ipnet::IpNet>,
}

impl CalcGraph {
    /// Computes the operations for everything ingested since the last
    /// flush, and records them as emitted.
    pub(super) fn flush(&mut self) -> Vec<dp::Operation> {
        self.refresh_dirty_service_sets();
        let locals = self.recompute_dirty_locals();
        let (policies, profiles) = self.rerender();
        let mut ops = Vec::new();
        // 1. Sets created or changed.
        self.emit_sets(&mut ops);
        // 2. Policies and profiles created or changed.
        self.emit_policies(&policies, &profiles, &mut ops);
        // 3. Endpoints and services created or changed; removals collected
        //    for later.
        let mut removals = Vec::new();
        self.emit_endpoints(locals, &mut ops, &mut removals);
        self.emit_services(&mut ops, &mut removals);
        self.emit_node_addresses(&mut ops);
        // 4. Removals, in reverse dependency order.
        ops.extend(removals);
        self.emit_policy_removals(policies, profiles, &mut ops);
        self.release_unused_sets(&mut ops);
        ops
    }

    /// The other nodes' addresses, this node's own and the IP pools, when
    /// they changed (a node joined, left or changed its addresses; a pool
    /// was added, removed or changed its CIDR).
    fn emit_node_addresses(&mut self, ops: &mut Vec<dp::Operation>) {
        let now: BTreeSet<std::net::IpAddr> = self.nodes.values().flatten().copied().collect();
        let pools: BTreeSet<ipnet::IpNet> = self.pools.values().copied().collect();
        if now != self.emitted.node_addresses
            || self.own_addresses != self.emitted.local_addresses
            || pools != self.emitted.pools
        {
            ops.push(dp::Operation::NodeAddresses {
                addresses: now.iter().copied().collect(),
                local: self.own_addresses.iter().copied().collect(),
                pools: pools.iter().copied().collect(),
            });
            self.emitted.node_addresses = now;
            self.emitted.local_addresses = self.own_addresses.clone();
            self.emitted.pools = pools;
        }
    }

    fn emit_policies(
        &mut self,
        changed_policies: &BTreeSet<dp::PolicyId>,
        changed_profiles: &BTreeSet<String>,
        ops: &mut Vec<dp::Operation>,
    ) {
        for id in changed_policies {
            if let Some((policy, _)) = self.policies.rendered.get(id)
                && self.emitted.policies.get(id) != Some(policy)
            {
                ops.push(dp::Operation::PolicyUpdate {
                    id: id.clone(),
                    policy: policy.clone(),
                });
                self.emitted.policies.insert(id.clone(), policy.clone());
            }
        }
        for id in changed_profiles {
            if let Some((profile, _)) = self.policies.rendered_profiles.get(id)
                && self.emitted.profiles.get(id) != Some(profile)
            {
                ops.push(dp::Operation::ProfileUpdate {
                    id: id.clone(),
                    profile: profile.clone(),
                });
                self.emitted.profiles.insert(id.clone(), profile.clone());
            }
        }
    }

    /// The local endpoints' updates, and their removals in `removals`.
    fn emit_endpoints(
        &mut self,
        locals: Vec<(Item, Option<u32>)>,
        ops: &mut Vec<dp::Operation>,
        removals: &mut Vec<dp::Operation>,
    ) {
        for (item, id) in locals {
            let local = id.and_then(|id| self.policies.locals.get(&id));
            match (&item, local) {
                (Item::Endpoint(Some(_), _), Some(l)) => {
                    let e = &l.input;
                    let id = dp::EndpointId {
                        namespace: e.namespace.clone().unwrap_or_default(),
                        name: e.name.clone(),
                    };
                    let w = dp::WorkloadEndpoint {
                        id: id.clone(),
                        interface_name: e.interface_name.clone(),
                        nets: e.nets.clone(),
                        mac: e.mac.clone(),
                        tiers: self.tiers_for(&l.matched, |_| true),
                        profiles: self.existing_profiles(e),
                    };
                    if self.emitted.workloads.get(&id) != Some(&w) {
                        ops.push(dp::Operation::WorkloadEndpointUpdate(w.clone()));
                        self.emitted.workloads.insert(id, w);
                    }
                }
                (Item::Endpoint(None, _), Some(l)) => {
                    let e = &l.input;
                    let normal = |p: &PolicyInput| !p.pre_dnat && !p.do_not_track;
                    let h = dp::HostEndpoint {
                        id: e.name.clone(),
                        interface_name: e.interface_name.clone(),
                        expected_ips: e.expected_ips.clone(),
                        tiers: self.tiers_for(&l.matched, normal),
                        pre_dnat_tiers: self.tiers_for(&l.matched, |p| p.pre_dnat),
                        untracked_tiers: self.tiers_for(&l.matched, |p| p.do_not_track),
                        forward_tiers: self
                            .tiers_for(&l.matched, |p| p.apply_on_forward && normal(p)),
                        profiles: self.existing_profiles(e),
                    };
                    if self.emitted.hosts.get(&h.id) != Some(&h) {
                        ops.push(dp::Operation::HostEndpointUpdate(h.clone()));
                        self.emitted.hosts.insert(h.id.clone(), h);
                    }
                }
                (Item::Endpoint(Some(ns), name), None) => {
                    let id = dp::EndpointId {
                        namespace: ns.clone(),
                        name: name.clone(),
                    };
                    if self.emitted.workloads.remove(&id).is_some() {
                        removals.push(dp::Operation::WorkloadEndpointRemove { id });
                    }
                }
                (Item::Endpoint(None, name), None) => {
                    if self.emitted.hosts.remove(name).is_some() {
                        removals.push(dp::Operation::HostEndpointRemove { id: name.clone() });
                    }
                }
                (Item::NetSet(..), _) => {}
            }
        }
    }

    /// The Services' updates, and their removals in `removals`.
    fn emit_services(&mut self, ops: &mut Vec<dp::Operation>, removals: &mut Vec<dp::Operation>) {
        for key in std::mem::take(&mut self.dirty_services) {
            let wanted = self.k8s_services.get(&key).map(|frontend| {
                let slices: Vec<&services::Slice> = self.service_slices(&key).collect();
                frontend.desired(&key.0, &key.1, &slices)
            });
            match wanted {
                Some(svc) if self.emitted.services.get(&key) != Some(&svc) => {
                    ops.push(dp::Operation::ServiceUpdate(svc.clone()));
                    self.emitted.services.insert(key, svc);
                }
                Some(_) => {}
                None => {
                    if self.emitted.services.remove(&key).is_some() {
                        removals.push(dp::Operation::ServiceRemove {
                            namespace: key.0,
                            name: key.1,
                        });
                    }
                }
            }
        }
    }

    fn emit_policy_removals(
        &mut self,
        changed_policies: BTreeSet<dp::PolicyId>,
        changed_profiles: BTreeSet<String>,
        ops: &mut Vec<dp::Operation>,
    ) {
        for id in changed_policies {
            if !self.policies.rendered.contains_key(&id)
                && self.emitted.policies.remove(&id).is_some()
            {
                ops.push(dp::Operation::PolicyRemove { id });
            }
        }
        for id in changed_profiles {
            if !self.policies.rendered_profiles.contains_key(&id)
                && self.emitted.profiles.remove(&id).is_some()
            {
                ops.push(dp::Operation::ProfileRemove { id });
            }
        }
    }

    /// The endpoint's profiles that exist.
    pub(super) fn existing_profiles(&self, e: &EndpointInput) -> Vec<String> {
        e.profiles
            .iter()
            .filter(|p| self.profiles.contains_key(*p))
            .cloned()
            .collect()
    }
}
