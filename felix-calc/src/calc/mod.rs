//! The calculation graph: cluster state in, dataplane operations out, with
//! no I/O and no clock.
//!
//! [`CalcGraph::apply`] takes a batch of resource updates (a key and the new
//! value, or none for a deletion) and returns the operations that bring the
//! dataplane from what it was last told to what the state now requires:
//!
//! - IP sets are created or changed before the policies that use them,
//!   policies and profiles before the endpoints that reference them;
//!   endpoint removals come before the policies and profiles they used,
//!   and those before the sets;
//! - at most one operation per key, and nothing that changes nothing
//!   (every output is diffed against what was emitted before).
//!
//! Only what this node needs is kept in the dataplane: its local endpoints,
//! the policies and profiles that apply to them, and the IP sets those
//! reference (whose members may be anywhere in the cluster). Two label
//! indexes ([`labelindex`]) keep set membership (over every endpoint and
//! network set) and policy matches (over local endpoints) current without
//! scanning every item or every selector.
//!
//! The work of a batch is proportional to what it changed: endpoints are
//! stored once, with interned labels, under a `u32` id shared by the
//! indexes; set members are counted per set and diffed only where a batch
//! touched them; which policies and profiles are active is kept as counts
//! of the local endpoints using them.
//!
//! It has raft-rs's shape: [`CalcGraph::update`] takes updates in;
//! [`CalcGraph::ready`] gives the next batch; what was emitted counts as
//! held by the dataplane only once [`CalcGraph::advance`] commits it;
//! [`CalcGraph::resync`] gives the whole state, for a dataplane that
//! refused a batch. [`CalcGraph::apply`] does all three for callers whose
//! dataplane takes every batch.
//!
//! The state is grouped by concern: the inputs' conversions
//! ([`inputs`]), items and relabelling (`items.rs`), sets (`sets.rs`),
//! policies and profiles (`policies.rs`), and emission (`emission.rs`,
//! `whole.rs`).

mod emission;
pub mod inputs;
mod items;
pub mod labelindex;
mod policies;
mod ready;
pub mod render;
pub mod services;
mod sets;
mod whole;

use std::collections::{BTreeMap, BTreeSet};

use manul_model::convert;
use manul_model::v3::{ProfileSpec, TierSpec};
use manul_model::{Kind, Resource, ResourceKey};

use emission::Emitted;
use inputs::{Item, NetSetInput};
use items::Items;
use labelindex::{FxHashMap, Interner, LabelMap, Labels, MatchChange, Sym};
use policies::Policies;
use render::{NAMESPACE_LABEL, SERVICE_ACCOUNT_LABEL};
use sets::Sets;

pub use ready::Ready;

pub use inputs::{endpoint_input, policy_input};

pub use manul_model::v3::DEFAULT_TIER_ORDER;

/// One change of cluster state.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub key: ResourceKey,
    /// The new value; None when the resource was deleted.
    pub value: Option<Resource>,
}

/// Counts for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub local_endpoints: usize,
    pub active_policies: usize,
    pub active_profiles: usize,
    pub ip_sets: usize,
    /// Members of the IP sets the driver was given, summed over the sets.
    pub ip_set_members: usize,
    pub endpoints: usize,
    pub policies: usize,
    pub network_sets: usize,
}

/// The calculation graph for one node.
#[derive(Debug)]
pub struct CalcGraph {
    node: String,
    syms: Interner,
    /// Interned names of the labels the graph adds.
    sym_namespace: Sym,
    sym_orchestrator: Sym,
    sym_service_account: Sym,
    sym_account_name: Sym,
    tiers: BTreeMap<String, TierSpec>,
    profiles: BTreeMap<String, ProfileSpec>,
    /// Interned `labels_to_apply` of each profile.
    profile_labels: FxHashMap<String, Labels>,
    namespaces: BTreeMap<String, LabelMap>,
    /// Per namespace: the labels namespace selectors see, and their
    /// `pcns.`-prefixed interned form that namespaced items inherit.
    namespace_views: FxHashMap<String, (LabelMap, Labels)>,
    /// The Services this node proxies, by (namespace, name): their
    /// frontends (Services that are not ours are not kept).
    k8s_services: BTreeMap<(String, String), services::Frontend>,
    /// (namespace, slice name) → slice.
    slices: BTreeMap<(String, String), services::Slice>,
    /// (namespace, Service name) → the names of its slices.
    slices_by_service: BTreeMap<(String, String), BTreeSet<String>>,
    dirty_services: BTreeSet<(String, String)>,
    /// The other nodes' addresses, by node name (this node's are not
    /// kept here).
    nodes: BTreeMap<String, BTreeSet<std::net::IpAddr>>,
    /// This node's own addresses (its Node resource's, by the name Felix
    /// runs as).
    own_addresses: BTreeSet<std::net::IpAddr>,
    /// The CIDR of each IP pool, by pool name (disabled pools too: their
    /// pods keep their addresses).
    pools: BTreeMap<String, ipnet::IpNet>,
    /// How a Service without Calico's external-traffic-strategy
    /// annotation balances its external traffic.
    default_balancing: manul_dataplane_api::Balancing,
    /// Whether this node proxies Services at all (Felix's
    /// `kubeProxyReplacement`): false leaves every Service to kube-proxy,
    /// none is emitted.
    proxy_services: bool,
    /// Endpoints and network sets, and what they inherit.
    items: Items,
    /// The active IP sets.
    sets: Sets,
    /// Policies, profiles and what local endpoints use.
    policies: Policies,
    /// What was last sent to the driver.
    emitted: Emitted,
    /// Scratch space for index match changes.
    changes: Vec<MatchChange>,
}

impl CalcGraph {
    pub fn new(node: impl Into<String>) -> CalcGraph {
        let mut syms = Interner::default();
        CalcGraph {
            node: node.into(),
            sym_namespace: syms.intern(NAMESPACE_LABEL),
            sym_orchestrator: syms.intern(convert::ORCHESTRATOR_LABEL),
            sym_service_account: syms.intern(SERVICE_ACCOUNT_LABEL),
            sym_account_name: syms.intern(&format!(
                "{}{}",
                render::SERVICE_ACCOUNT_PREFIX,
                convert::NAMESPACE_NAME_LABEL
            )),
            syms,
            tiers: BTreeMap::new(),
            profiles: BTreeMap::new(),
            profile_labels: FxHashMap::default(),
            namespaces: BTreeMap::new(),
            namespace_views: FxHashMap::default(),
            k8s_services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_by_service: BTreeMap::new(),
            dirty_services: BTreeSet::new(),
            nodes: BTreeMap::new(),
            own_addresses: BTreeSet::new(),
            pools: BTreeMap::new(),
            default_balancing: manul_dataplane_api::Balancing::Random,
            proxy_services: true,
            items: Items::default(),
            sets: Sets::default(),
            policies: Policies::default(),
            emitted: Emitted::default(),
            changes: Vec::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// How Services without Calico's external-traffic-strategy annotation
    /// balance their external traffic (random unless set). Set it before
    /// the first update: Services already seen keep what they had.
    pub fn set_default_balancing(&mut self, balancing: manul_dataplane_api::Balancing) {
        self.default_balancing = balancing;
    }

    /// A graph that leaves every Service to another proxy (kube-proxy,
    /// while a cluster migrates): it emits no Service, as if none were
    /// this proxy's. EndpointSlices still give the members of policy
    /// rules' `services` matches.
    pub fn without_services(mut self) -> CalcGraph {
        self.proxy_services = false;
        self
    }

    pub fn stats(&self) -> Stats {
        Stats {
            local_endpoints: self.policies.locals.len(),
            active_policies: self.emitted.policies.len(),
            active_profiles: self.emitted.profiles.len(),
            ip_sets: self.sets.all.iter().flatten().filter(|s| s.emitted).count(),
            ip_set_members: self
                .sets
                .all
                .iter()
                .flatten()
                .filter(|s| s.emitted)
                .map(|s| s.members.len())
                .sum(),
            endpoints: self.items.endpoints,
            policies: self.policies.inputs.len(),
            network_sets: self.items.netsets,
        }
    }

    /// The slices of Service `key` (namespace, name).
    pub(super) fn service_slices<'a>(
        &'a self,
        key: &'a (String, String),
    ) -> impl Iterator<Item = &'a services::Slice> + 'a {
        self.slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(move |name| self.slices.get(&(key.0.clone(), name.clone())))
    }

    fn ingest(&mut self, u: Update) {
        match u.key.kind {
            Kind::Tier => {
                match u.value {
                    Some(Resource::Tier(t)) => self.tiers.insert(u.key.name, t.spec),
                    _ => self.tiers.remove(&u.key.name),
                };
                self.policies.all_locals_dirty = true;
            }
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy | Kind::K8sNetworkPolicy => {
                let input = u.value.as_ref().and_then(inputs::policy_input);
                self.set_policy(u.key, input);
            }
            // Staged policies are never enforced: nothing of them reaches
            // the driver (`crate::pending` evaluates them).
            Kind::StagedNetworkPolicy
            | Kind::StagedGlobalNetworkPolicy
            | Kind::StagedKubernetesNetworkPolicy => {}
            Kind::Profile => {
                match u.value {
                    Some(Resource::Profile(p)) => {
                        self.profiles.insert(u.key.name.clone(), p.spec);
                    }
                    _ => {
                        self.profiles.remove(&u.key.name);
                    }
                }
                self.profile_changed(&u.key.name);
            }
            Kind::Namespace => {
                let name = u.key.name.clone();
                match u.value {
                    Some(Resource::Namespace(ns)) => {
                        let p = convert::namespace_profile(&ns);
                        self.profiles.insert(p.name().to_string(), p.spec);
                        let labels = ns.metadata.labels.clone().unwrap_or_default();
                        self.namespaces.insert(name.clone(), labels);
                    }
                    _ => {
                        self.profiles
                            .remove(&format!("{}{name}", convert::NAMESPACE_PROFILE_PREFIX));
                        self.namespaces.remove(&name);
                    }
                }
                self.namespace_views.remove(&name);
                self.profile_changed(&format!("{}{name}", convert::NAMESPACE_PROFILE_PREFIX));
                self.namespace_changed(&name);
            }
            Kind::WorkloadEndpoint | Kind::HostEndpoint => {
                let item = Item::Endpoint(u.key.namespace, u.key.name);
                let input = u.value.and_then(inputs::endpoint_input);
                self.set_endpoint(item, input);
            }
            Kind::Service => {
                let key = (
                    u.key.namespace.clone().unwrap_or_default(),
                    u.key.name.clone(),
                );
                let frontend = match &u.value {
                    Some(Resource::Service(svc)) if self.proxy_services => {
                        services::Frontend::from_k8s(&key.0, &key.1, svc, self.default_balancing)
                    }
                    _ => None,
                };
                match frontend {
                    Some(f) => self.k8s_services.insert(key.clone(), f),
                    None => self.k8s_services.remove(&key),
                };
                self.dirty_services.insert(key);
            }
            Kind::EndpointSlice => {
                let ns = u.key.namespace.clone().unwrap_or_default();
                let key = (ns.clone(), u.key.name.clone());
                if let Some(old) = self.slices.remove(&key) {
                    let owner = (ns.clone(), old.service);
                    if let Some(names) = self.slices_by_service.get_mut(&owner) {
                        names.remove(&key.1);
                        if names.is_empty() {
                            self.slices_by_service.remove(&owner);
                        }
                    }
                    self.dirty_services.insert(owner);
                }
                if let Some(Resource::EndpointSlice(s)) = &u.value
                    && let Some(slice) = services::Slice::from_k8s(s, &self.node)
                {
                    let owner = (ns, slice.service.clone());
                    self.slices_by_service
                        .entry(owner.clone())
                        .or_default()
                        .insert(key.1.clone());
                    self.dirty_services.insert(owner);
                    self.slices.insert(key, slice);
                }
            }
            Kind::Node => {
                let addresses = u
                    .value
                    .as_ref()
                    .map(inputs::node_addresses)
                    .unwrap_or_default();
                if u.key.name == self.node {
                    self.own_addresses = addresses;
                } else if addresses.is_empty() {
                    self.nodes.remove(&u.key.name);
                } else {
                    self.nodes.insert(u.key.name, addresses);
                }
            }
            Kind::IpPool => {
                let cidr = match &u.value {
                    Some(Resource::IpPool(p)) => p.spec.cidr.as_ref().map(|c| c.net()),
                    _ => None,
                };
                match cidr {
                    Some(cidr) => self.pools.insert(u.key.name, cidr),
                    None => self.pools.remove(&u.key.name),
                };
            }
            Kind::NetworkSet | Kind::GlobalNetworkSet => {
                let input = match u.value {
                    Some(Resource::NetworkSet(o)) | Some(Resource::GlobalNetworkSet(o)) => {
                        Some(NetSetInput {
                            namespace: u.key.namespace.clone(),
                            labels: o.metadata.labels.unwrap_or_default(),
                            nets: o.spec.nets.iter().map(|c| c.net()).collect(),
                        })
                    }
                    _ => None,
                };
                let item = Item::NetSet(u.key.namespace, u.key.name);
                self.set_netset(item, input);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;

#[cfg(test)]
mod host_tests;

#[cfg(test)]
mod node_tests;

#[cfg(test)]
mod incremental_tests;
