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
//! reference (whose members may be anywhere in the cluster). A two-way
//! label index ([`labelindex`]) keeps set membership current without
//! scanning every endpoint or every selector.

pub mod inputs;
pub mod labelindex;
pub mod render;
pub mod services;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use manul_dataplane_api as dp;
use manul_model::convert;
use manul_model::v3::{Action, PolicyType, ProfileSpec, TierSpec};
use manul_model::{Kind, Resource, ResourceKey};

use inputs::{EndpointInput, Item, NetSetInput, PolicyInput, by_order, namespace_selector_labels};
use labelindex::{LabelIndex, LabelMap};
use render::{NAMESPACE_LABEL, NAMESPACE_PREFIX, SERVICE_ACCOUNT_LABEL, SetDef};

/// The order Calico gives the `default` tier when no Tier resource sets one.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// One change of cluster state.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub key: ResourceKey,
    /// The new value; None when the resource was deleted.
    pub value: Option<Resource>,
}

/// What was last sent to the driver.
#[derive(Debug, Default, Clone, PartialEq)]
struct Emitted {
    sets: BTreeMap<dp::IpSetId, BTreeSet<dp::IpSetMember>>,
    policies: BTreeMap<dp::PolicyId, dp::Policy>,
    profiles: BTreeMap<String, dp::Policy>,
    workloads: BTreeMap<dp::EndpointId, dp::WorkloadEndpoint>,
    hosts: BTreeMap<String, dp::HostEndpoint>,
    services: BTreeMap<(String, String), dp::Service>,
}

/// Counts for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub local_endpoints: usize,
    pub active_policies: usize,
    pub active_profiles: usize,
    pub ip_sets: usize,
    pub endpoints: usize,
    pub policies: usize,
    pub network_sets: usize,
}

/// The calculation graph for one node.
#[derive(Debug)]
pub struct CalcGraph {
    node: String,
    tiers: BTreeMap<String, TierSpec>,
    policies: BTreeMap<dp::PolicyId, PolicyInput>,
    policy_keys: BTreeMap<ResourceKey, dp::PolicyId>,
    profiles: BTreeMap<String, ProfileSpec>,
    namespaces: BTreeMap<String, LabelMap>,
    endpoints: BTreeMap<Item, EndpointInput>,
    netsets: BTreeMap<Item, NetSetInput>,
    k8s_services: BTreeMap<(String, String), k8s_openapi::api::core::v1::Service>,
    /// (namespace, slice name) → slice.
    slices: BTreeMap<(String, String), services::Slice>,
    dirty_services: BTreeSet<(String, String)>,
    index: LabelIndex<dp::IpSetId, Item>,
    set_defs: BTreeMap<dp::IpSetId, SetDef>,
    /// How many rendered policies and profiles use each set.
    set_refs: BTreeMap<dp::IpSetId, usize>,
    /// Local endpoint → the policies whose selector matches it.
    local_matches: BTreeMap<Item, BTreeSet<dp::PolicyId>>,
    /// Rendered active policies and profiles, with the sets they use.
    rendered: BTreeMap<dp::PolicyId, (dp::Policy, Vec<SetDef>)>,
    rendered_profiles: BTreeMap<String, (dp::Policy, Vec<SetDef>)>,
    emitted: Emitted,
    /// Current members of every active set, counted by contributing item.
    set_members: HashMap<dp::IpSetId, BTreeMap<dp::IpSetMember, u32>>,
    /// Sets created (or re-created) in this batch: sent whole.
    new_sets: BTreeSet<dp::IpSetId>,
    /// Members whose count changed in this batch, per set: sent as deltas.
    touched: BTreeMap<dp::IpSetId, BTreeSet<dp::IpSetMember>>,
    /// Sets whose last user went away in this batch.
    released_sets: BTreeSet<dp::IpSetId>,
    dirty_policies: BTreeSet<dp::PolicyId>,
    dirty_profiles: BTreeSet<String>,
    dirty_locals: BTreeSet<Item>,
    all_locals_dirty: bool,
}

impl CalcGraph {
    pub fn new(node: impl Into<String>) -> CalcGraph {
        CalcGraph {
            node: node.into(),
            tiers: BTreeMap::new(),
            policies: BTreeMap::new(),
            policy_keys: BTreeMap::new(),
            profiles: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            netsets: BTreeMap::new(),
            k8s_services: BTreeMap::new(),
            slices: BTreeMap::new(),
            dirty_services: BTreeSet::new(),
            index: LabelIndex::default(),
            set_defs: BTreeMap::new(),
            set_refs: BTreeMap::new(),
            local_matches: BTreeMap::new(),
            rendered: BTreeMap::new(),
            rendered_profiles: BTreeMap::new(),
            emitted: Emitted::default(),
            set_members: HashMap::new(),
            new_sets: BTreeSet::new(),
            touched: BTreeMap::new(),
            released_sets: BTreeSet::new(),
            dirty_policies: BTreeSet::new(),
            dirty_profiles: BTreeSet::new(),
            dirty_locals: BTreeSet::new(),
            all_locals_dirty: false,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stats(&self) -> Stats {
        Stats {
            local_endpoints: self.local_matches.len(),
            active_policies: self.emitted.policies.len(),
            active_profiles: self.emitted.profiles.len(),
            ip_sets: self.emitted.sets.len(),
            endpoints: self.endpoints.len(),
            policies: self.policies.len(),
            network_sets: self.netsets.len(),
        }
    }

    /// Applies a batch of updates; returns the ordered operations.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> Vec<dp::Operation> {
        for u in updates {
            self.ingest(u);
        }
        self.flush()
    }

    fn is_local(&self, e: &EndpointInput) -> bool {
        e.node == self.node
    }

    // ------------------------------------------------------------ ingest

    fn ingest(&mut self, u: Update) {
        match u.key.kind {
            Kind::Tier => {
                match u.value {
                    Some(Resource::Tier(t)) => self.tiers.insert(u.key.name, t.spec),
                    _ => self.tiers.remove(&u.key.name),
                };
                self.all_locals_dirty = true;
            }
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy | Kind::K8sNetworkPolicy => {
                let input = u.value.as_ref().and_then(policy_input);
                self.set_policy(u.key, input);
            }
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
                self.profile_changed(&format!("{}{name}", convert::NAMESPACE_PROFILE_PREFIX));
                self.namespace_changed(&name);
            }
            Kind::WorkloadEndpoint | Kind::HostEndpoint => {
                let item = Item::Endpoint(u.key.namespace.clone(), u.key.name.clone());
                let input = u.value.as_ref().and_then(endpoint_input);
                self.set_endpoint(item, input);
            }
            Kind::Service => {
                let key = (
                    u.key.namespace.clone().unwrap_or_default(),
                    u.key.name.clone(),
                );
                match u.value {
                    Some(Resource::Service(svc)) => self.k8s_services.insert(key.clone(), *svc),
                    _ => self.k8s_services.remove(&key),
                };
                self.dirty_services.insert(key);
            }
            Kind::EndpointSlice => {
                let ns = u.key.namespace.clone().unwrap_or_default();
                let key = (ns.clone(), u.key.name.clone());
                if let Some(old) = self.slices.remove(&key) {
                    self.dirty_services.insert((ns.clone(), old.service));
                }
                if let Some(Resource::EndpointSlice(s)) = &u.value
                    && let Some(slice) = services::Slice::from_k8s(s)
                {
                    self.dirty_services.insert((ns, slice.service.clone()));
                    self.slices.insert(key, slice);
                }
            }
            Kind::NetworkSet | Kind::GlobalNetworkSet => {
                let item = Item::NetSet(u.key.namespace.clone(), u.key.name.clone());
                let input = match &u.value {
                    Some(Resource::NetworkSet(o)) | Some(Resource::GlobalNetworkSet(o)) => {
                        Some(NetSetInput {
                            namespace: u.key.namespace.clone(),
                            labels: o.metadata.labels.clone().unwrap_or_default(),
                            nets: o.spec.nets.iter().map(|c| c.net()).collect(),
                        })
                    }
                    _ => None,
                };
                self.set_netset(item, input);
            }
            _ => {}
        }
    }

    fn set_policy(&mut self, key: ResourceKey, input: Option<PolicyInput>) {
        // A policy can move tiers: its id changes, so remove the old one.
        if let Some(old) = self.policy_keys.remove(&key) {
            self.policies.remove(&old);
            self.policy_changed(&old);
        }
        if let Some(p) = input {
            let id = p.id.clone();
            self.policy_keys.insert(key, id.clone());
            self.policies.insert(id.clone(), p);
            self.policy_changed(&id);
        }
    }

    fn policy_changed(&mut self, id: &dp::PolicyId) {
        self.dirty_policies.insert(id.clone());
        let locals: Vec<Item> = self.local_matches.keys().cloned().collect();
        for item in locals {
            let matched = match (self.policies.get(id), self.endpoints.get(&item)) {
                (Some(p), Some(e)) => self.policy_applies(p, e, self.index.labels(&item)),
                _ => false,
            };
            let Some(set) = self.local_matches.get_mut(&item) else {
                continue;
            };
            let changed = if matched {
                set.insert(id.clone())
            } else {
                set.remove(id)
            };
            if changed || matched {
                self.dirty_locals.insert(item);
            }
        }
    }

    fn profile_changed(&mut self, name: &str) {
        self.dirty_profiles.insert(name.to_string());
        // Profile labels are inherited by the endpoints that use it.
        let users: Vec<Item> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.profiles.iter().any(|p| p == name))
            .map(|(i, _)| i.clone())
            .collect();
        for item in users {
            self.reindex_endpoint(&item);
            if self.local_matches.contains_key(&item) {
                self.dirty_locals.insert(item);
            }
        }
    }

    fn namespace_changed(&mut self, ns: &str) {
        let members: Vec<Item> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.namespace.as_deref() == Some(ns))
            .map(|(i, _)| i.clone())
            .chain(
                self.netsets
                    .iter()
                    .filter(|(_, n)| n.namespace.as_deref() == Some(ns))
                    .map(|(i, _)| i.clone()),
            )
            .collect();
        for item in members {
            match &item {
                Item::Endpoint(..) => self.reindex_endpoint(&item),
                Item::NetSet(..) => self.reindex_netset(&item),
            }
            if self.local_matches.contains_key(&item) {
                self.recompute_local(&item);
            }
        }
    }

    fn namespace_labels(&self, ns: &str) -> LabelMap {
        namespace_selector_labels(ns, self.namespaces.get(ns))
    }

    /// An endpoint's labels as selectors see them.
    fn effective_labels(&self, e: &EndpointInput) -> LabelMap {
        // Precedence, lowest first: namespace labels (for namespace
        // selectors), profile labels (an earlier profile wins), the
        // endpoint's own labels, then the namespace and orchestrator.
        let mut labels = LabelMap::new();
        if let Some(ns) = &e.namespace {
            for (k, v) in self.namespace_labels(ns) {
                labels.insert(format!("{NAMESPACE_PREFIX}{k}"), v);
            }
        }
        for p in e.profiles.iter().rev() {
            if let Some(profile) = self.profiles.get(p) {
                labels.extend(profile.labels_to_apply.clone());
            }
        }
        labels.extend(e.own_labels.clone());
        if let Some(ns) = &e.namespace {
            labels.insert(NAMESPACE_LABEL.into(), ns.clone());
            labels.insert(convert::ORCHESTRATOR_LABEL.into(), e.orchestrator.clone());
            if let Some(sa) = &e.service_account {
                labels.insert(SERVICE_ACCOUNT_LABEL.into(), sa.clone());
            }
        }
        labels
    }

    fn netset_labels(&self, n: &NetSetInput) -> LabelMap {
        let mut labels = LabelMap::new();
        if let Some(ns) = &n.namespace {
            for (k, v) in self.namespace_labels(ns) {
                labels.insert(format!("{NAMESPACE_PREFIX}{k}"), v);
            }
            labels.insert(NAMESPACE_LABEL.into(), ns.clone());
        }
        labels.extend(n.labels.clone());
        labels
    }

    /// The members `item` contributes to the set `def`, from its current
    /// data.
    fn contribution(&self, def: &SetDef, item: &Item) -> Vec<dp::IpSetMember> {
        match (item, &def.named_port) {
            (Item::Endpoint(..), None) => self
                .endpoints
                .get(item)
                .map(|e| {
                    e.nets
                        .iter()
                        .map(|n| dp::IpSetMember::Net(*n))
                        .chain(
                            e.expected_ips
                                .iter()
                                .map(|ip| dp::IpSetMember::Net(ipnet::IpNet::from(*ip))),
                        )
                        .collect()
                })
                .unwrap_or_default(),
            (Item::Endpoint(..), Some((proto, name))) => self
                .endpoints
                .get(item)
                .map(|e| {
                    e.ports
                        .iter()
                        .filter(|(pname, pproto, _)| pname == name && pproto == proto)
                        .flat_map(|(_, _, port)| {
                            e.nets.iter().map(|n| dp::IpSetMember::NamedPort {
                                ip: n.addr(),
                                protocol: *proto,
                                port: *port,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            (Item::NetSet(..), None) => self
                .netsets
                .get(item)
                .map(|n| n.nets.iter().map(|n| dp::IpSetMember::Net(*n)).collect())
                .unwrap_or_default(),
            (Item::NetSet(..), Some(_)) => Vec::new(),
        }
    }

    /// Adds (`sign` true) or removes `item`'s contribution to every set it
    /// is in, recording the touched members.
    fn contribute(&mut self, item: &Item, sign: bool) {
        let sets: Vec<dp::IpSetId> = self.index.selectors_of(item).cloned().collect();
        for id in sets {
            let Some(def) = self.set_defs.get(&id) else {
                continue;
            };
            let members = self.contribution(def, item);
            self.count(&id, members, sign);
        }
    }

    fn count(&mut self, id: &dp::IpSetId, members: Vec<dp::IpSetMember>, sign: bool) {
        let counts = self.set_members.entry(id.clone()).or_default();
        let touched = self.touched.entry(id.clone()).or_default();
        for m in members {
            if sign {
                *counts.entry(m).or_default() += 1;
            } else if let Some(n) = counts.get_mut(&m) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&m);
                }
            }
            touched.insert(m);
        }
    }

    fn reindex_endpoint(&mut self, item: &Item) {
        self.contribute(item, false);
        if let Some(e) = self.endpoints.get(item) {
            let labels = self.effective_labels(e);
            let _ = self.index.update_item(item.clone(), labels);
        }
        self.contribute(item, true);
    }

    fn reindex_netset(&mut self, item: &Item) {
        self.contribute(item, false);
        if let Some(n) = self.netsets.get(item) {
            let labels = self.netset_labels(n);
            let _ = self.index.update_item(item.clone(), labels);
        }
        self.contribute(item, true);
    }

    fn set_endpoint(&mut self, item: Item, input: Option<EndpointInput>) {
        self.contribute(&item, false);
        self.endpoints.remove(&item);
        match input {
            Some(e) => {
                let local = self.is_local(&e);
                let labels = self.effective_labels(&e);
                self.endpoints.insert(item.clone(), e);
                let _ = self.index.update_item(item.clone(), labels);
                self.contribute(&item, true);
                if local {
                    self.local_matches.entry(item.clone()).or_default();
                    self.recompute_local(&item);
                } else if self.local_matches.remove(&item).is_some() {
                    self.dirty_locals.insert(item);
                }
            }
            None => {
                let _ = self.index.remove_item(&item);
                if self.local_matches.remove(&item).is_some() {
                    self.dirty_locals.insert(item);
                }
            }
        }
    }

    fn set_netset(&mut self, item: Item, input: Option<NetSetInput>) {
        self.contribute(&item, false);
        self.netsets.remove(&item);
        match input {
            Some(n) => {
                let labels = self.netset_labels(&n);
                self.netsets.insert(item.clone(), n);
                let _ = self.index.update_item(item.clone(), labels);
                self.contribute(&item, true);
            }
            None => {
                let _ = self.index.remove_item(&item);
            }
        }
    }

    /// Whether policy `p` applies to endpoint `e`, whose effective labels
    /// (as indexed) are `labels`.
    fn policy_applies(
        &self,
        p: &PolicyInput,
        e: &EndpointInput,
        labels: Option<&LabelMap>,
    ) -> bool {
        if e.is_host() {
            // Namespaced policies never apply to host endpoints.
            if p.namespace.is_some() {
                return false;
            }
        } else {
            // preDNAT and untracked policies are for host endpoints only.
            if p.pre_dnat || p.do_not_track {
                return false;
            }
            if let Some(ns) = &p.namespace
                && e.namespace.as_ref() != Some(ns)
            {
                return false;
            }
        }
        if let Some(sas) = &p.service_account_selector {
            // Service accounts carry no labels of their own here: a
            // selector sees only their name.
            let Some(sa) = &e.service_account else {
                return false;
            };
            let labels = LabelMap::from([(convert::NAMESPACE_NAME_LABEL.to_string(), sa.clone())]);
            if !sas.matches(&labels) {
                return false;
            }
        }
        if let (Some(nssel), Some(ns)) = (&p.namespace_selector, &e.namespace)
            && !nssel.matches(&self.namespace_labels(ns))
        {
            return false;
        }
        match labels {
            Some(l) => p.selector.matches(l),
            None => p.selector.matches(&self.effective_labels(e)),
        }
    }

    fn recompute_local(&mut self, item: &Item) {
        let Some(e) = self.endpoints.get(item) else {
            return;
        };
        let matched: BTreeSet<dp::PolicyId> = self
            .policies
            .values()
            .filter(|p| self.policy_applies(p, e, self.index.labels(item)))
            .map(|p| p.id.clone())
            .collect();
        self.local_matches.insert(item.clone(), matched);
        self.dirty_locals.insert(item.clone());
    }

    // ------------------------------------------------------------- flush

    fn tier_order(&self, tier: &str) -> Option<f64> {
        let is_default = tier == manul_model::v3::DEFAULT_TIER;
        match self.tiers.get(tier).and_then(|t| t.order) {
            Some(order) => Some(order),
            // The default tier keeps Calico's order unless a Tier sets one.
            None if is_default => Some(DEFAULT_TIER_ORDER),
            None => None,
        }
    }

    fn tier_default(&self, tier: &str) -> dp::Action {
        match self.tiers.get(tier).and_then(|t| t.default_action) {
            Some(Action::Pass) => dp::Action::Pass,
            _ => dp::Action::Deny,
        }
    }

    /// The ordered tiers of policies for a local endpoint, per kind of
    /// tier list (normal, pre-DNAT, untracked, forward).
    fn tiers_for(
        &self,
        item: &Item,
        filter: impl Fn(&PolicyInput) -> bool,
    ) -> Vec<dp::TierPolicies> {
        let Some(matched) = self.local_matches.get(item) else {
            return Vec::new();
        };
        let mut by_tier: BTreeMap<String, Vec<&PolicyInput>> = BTreeMap::new();
        for id in matched {
            if let Some(p) = self.policies.get(id)
                && filter(p)
            {
                by_tier.entry(id.tier.clone()).or_default().push(p);
            }
        }
        let mut tiers: Vec<(Option<f64>, String, Vec<&PolicyInput>)> = by_tier
            .into_iter()
            .map(|(t, ps)| (self.tier_order(&t), t, ps))
            .collect();
        by_order(&mut tiers);
        tiers
            .into_iter()
            .map(|(_, name, ps)| {
                let mut ordered: Vec<(Option<f64>, String, &PolicyInput)> = ps
                    .into_iter()
                    .map(|p| (p.order, p.id.name.clone(), p))
                    .collect();
                by_order(&mut ordered);
                let list = |t: PolicyType| {
                    ordered
                        .iter()
                        .filter(|(_, _, p)| p.types.contains(&t))
                        .map(|(_, _, p)| p.id.clone())
                        .collect()
                };
                dp::TierPolicies {
                    default_action: self.tier_default(&name),
                    inbound: list(PolicyType::Ingress),
                    outbound: list(PolicyType::Egress),
                    name,
                }
            })
            .collect()
    }

    fn flush(&mut self) -> Vec<dp::Operation> {
        if std::mem::take(&mut self.all_locals_dirty) {
            let locals: Vec<Item> = self.local_matches.keys().cloned().collect();
            self.dirty_locals.extend(locals);
        }
        let locals_changed = !self.dirty_locals.is_empty();
        // Desired endpoints.
        let mut workloads = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for item in std::mem::take(&mut self.dirty_locals) {
            let Some(e) = self
                .endpoints
                .get(&item)
                .filter(|_| self.local_matches.contains_key(&item))
            else {
                match &item {
                    Item::Endpoint(Some(ns), name) => {
                        workloads.insert(
                            dp::EndpointId {
                                namespace: ns.clone(),
                                name: name.clone(),
                            },
                            None,
                        );
                    }
                    Item::Endpoint(None, name) => {
                        hosts.insert(name.clone(), None);
                    }
                    Item::NetSet(..) => {}
                }
                continue;
            };
            let profiles: Vec<String> = e
                .profiles
                .iter()
                .filter(|p| self.profiles.contains_key(*p))
                .cloned()
                .collect();
            match &e.namespace {
                Some(ns) => {
                    let id = dp::EndpointId {
                        namespace: ns.clone(),
                        name: e.name.clone(),
                    };
                    let wep = dp::WorkloadEndpoint {
                        id: id.clone(),
                        interface_name: e.interface_name.clone(),
                        nets: e.nets.clone(),
                        mac: e.mac.clone(),
                        tiers: self.tiers_for(&item, |_| true),
                        profiles,
                    };
                    workloads.insert(id, Some(wep));
                }
                None => {
                    let normal = |p: &PolicyInput| !p.pre_dnat && !p.do_not_track;
                    let hep = dp::HostEndpoint {
                        id: e.name.clone(),
                        interface_name: e.interface_name.clone(),
                        expected_ips: e.expected_ips.clone(),
                        tiers: self.tiers_for(&item, normal),
                        pre_dnat_tiers: self.tiers_for(&item, |p| p.pre_dnat),
                        untracked_tiers: self.tiers_for(&item, |p| p.do_not_track),
                        forward_tiers: self.tiers_for(&item, |p| p.apply_on_forward && normal(p)),
                        profiles,
                    };
                    hosts.insert(e.name.clone(), Some(hep));
                }
            }
        }

        // Active policies and profiles: what the local endpoints use. Only
        // recomputed when local endpoints or policies changed.
        let dirty_policies = std::mem::take(&mut self.dirty_policies);
        let dirty_profiles = std::mem::take(&mut self.dirty_profiles);
        let mut changed_policies: BTreeSet<dp::PolicyId> = BTreeSet::new();
        let mut changed_profiles: BTreeSet<String> = BTreeSet::new();
        if locals_changed || !dirty_policies.is_empty() || !dirty_profiles.is_empty() {
            let active: BTreeSet<dp::PolicyId> = self
                .local_matches
                .values()
                .flatten()
                .filter(|id| self.policies.contains_key(*id))
                .cloned()
                .collect();
            let active_profiles: BTreeSet<String> = self
                .local_matches
                .keys()
                .filter_map(|i| self.endpoints.get(i))
                .flat_map(|e| e.profiles.iter())
                .filter(|p| self.profiles.contains_key(*p))
                .cloned()
                .collect();
            let drop: Vec<dp::PolicyId> = self
                .rendered
                .keys()
                .filter(|id| !active.contains(*id) || dirty_policies.contains(*id))
                .cloned()
                .collect();
            for id in drop {
                if let Some((_, sets)) = self.rendered.remove(&id) {
                    self.release_sets(&sets);
                }
                changed_policies.insert(id);
            }
            for id in &active {
                if !self.rendered.contains_key(id)
                    && let Some(p) = self.policies.get(id)
                {
                    let mut sets = Vec::new();
                    let owner = format!("{}/{}", id.tier, id.name);
                    let ingress = if p.types.contains(&PolicyType::Ingress) {
                        &p.ingress[..]
                    } else {
                        &[]
                    };
                    let egress = if p.types.contains(&PolicyType::Egress) {
                        &p.egress[..]
                    } else {
                        &[]
                    };
                    let rendered =
                        render::rules(&owner, ingress, egress, p.namespace.as_deref(), &mut sets);
                    self.retain_sets(&sets);
                    self.rendered.insert(id.clone(), (rendered, sets));
                    changed_policies.insert(id.clone());
                }
            }
            let drop: Vec<String> = self
                .rendered_profiles
                .keys()
                .filter(|id| !active_profiles.contains(*id) || dirty_profiles.contains(*id))
                .cloned()
                .collect();
            for id in drop {
                if let Some((_, sets)) = self.rendered_profiles.remove(&id) {
                    self.release_sets(&sets);
                }
                changed_profiles.insert(id);
            }
            for id in &active_profiles {
                if !self.rendered_profiles.contains_key(id)
                    && let Some(p) = self.profiles.get(id)
                {
                    let mut sets = Vec::new();
                    let rendered = render::rules(
                        &format!("profile/{id}"),
                        &p.ingress,
                        &p.egress,
                        None,
                        &mut sets,
                    );
                    self.retain_sets(&sets);
                    self.rendered_profiles.insert(id.clone(), (rendered, sets));
                    changed_profiles.insert(id.clone());
                }
            }
        }

        let mut ops = Vec::new();
        // 1. Sets created or changed.
        for id in std::mem::take(&mut self.new_sets) {
            let Some(def) = self.set_defs.get(&id) else {
                continue;
            };
            let members: BTreeSet<dp::IpSetMember> = self
                .set_members
                .get(&id)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default();
            self.touched.remove(&id);
            match self.emitted.sets.get(&id) {
                None => {
                    ops.push(dp::Operation::IpSetUpdate {
                        id: id.clone(),
                        kind: def.kind(),
                        members: members.iter().copied().collect(),
                    });
                    self.emitted.sets.insert(id, members);
                }
                Some(old) if *old != members => {
                    ops.push(dp::Operation::IpSetDelta {
                        id: id.clone(),
                        added: members.difference(old).copied().collect(),
                        removed: old.difference(&members).copied().collect(),
                    });
                    self.emitted.sets.insert(id, members);
                }
                Some(_) => {}
            }
        }
        for (id, touched) in std::mem::take(&mut self.touched) {
            let (Some(current), Some(emitted)) =
                (self.set_members.get(&id), self.emitted.sets.get_mut(&id))
            else {
                continue;
            };
            let (mut added, mut removed) = (Vec::new(), Vec::new());
            for m in touched {
                match (current.contains_key(&m), emitted.contains(&m)) {
                    (true, false) => {
                        emitted.insert(m);
                        added.push(m);
                    }
                    (false, true) => {
                        emitted.remove(&m);
                        removed.push(m);
                    }
                    _ => {}
                }
            }
            if !added.is_empty() || !removed.is_empty() {
                ops.push(dp::Operation::IpSetDelta { id, added, removed });
            }
        }
        // 2. Policies and profiles created or changed.
        for id in &changed_policies {
            if let Some((policy, _)) = self.rendered.get(id)
                && self.emitted.policies.get(id) != Some(policy)
            {
                ops.push(dp::Operation::PolicyUpdate {
                    id: id.clone(),
                    policy: policy.clone(),
                });
                self.emitted.policies.insert(id.clone(), policy.clone());
            }
        }
        for id in &changed_profiles {
            if let Some((profile, _)) = self.rendered_profiles.get(id)
                && self.emitted.profiles.get(id) != Some(profile)
            {
                ops.push(dp::Operation::ProfileUpdate {
                    id: id.clone(),
                    profile: profile.clone(),
                });
                self.emitted.profiles.insert(id.clone(), profile.clone());
            }
        }
        // 3. Endpoints created or changed; removals collected for later.
        let mut removals = Vec::new();
        for (id, wep) in workloads {
            match wep {
                Some(w) if self.emitted.workloads.get(&id) != Some(&w) => {
                    ops.push(dp::Operation::WorkloadEndpointUpdate(w.clone()));
                    self.emitted.workloads.insert(id, w);
                }
                Some(_) => {}
                None => {
                    if self.emitted.workloads.remove(&id).is_some() {
                        removals.push(dp::Operation::WorkloadEndpointRemove { id });
                    }
                }
            }
        }
        for (id, hep) in hosts {
            match hep {
                Some(h) if self.emitted.hosts.get(&id) != Some(&h) => {
                    ops.push(dp::Operation::HostEndpointUpdate(h.clone()));
                    self.emitted.hosts.insert(id, h);
                }
                Some(_) => {}
                None => {
                    if self.emitted.hosts.remove(&id).is_some() {
                        removals.push(dp::Operation::HostEndpointRemove { id });
                    }
                }
            }
        }
        for key in std::mem::take(&mut self.dirty_services) {
            let wanted = self.k8s_services.get(&key).map(|svc| {
                let slices: Vec<&services::Slice> = self
                    .slices
                    .iter()
                    .filter(|((ns, _), s)| *ns == key.0 && s.service == key.1)
                    .map(|(_, s)| s)
                    .collect();
                services::desired(&key.0, &key.1, svc, &slices)
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
        // 4. Removals, in reverse dependency order.
        ops.extend(removals);
        for id in changed_policies {
            if !self.rendered.contains_key(&id) && self.emitted.policies.remove(&id).is_some() {
                ops.push(dp::Operation::PolicyRemove { id });
            }
        }
        for id in changed_profiles {
            if !self.rendered_profiles.contains_key(&id)
                && self.emitted.profiles.remove(&id).is_some()
            {
                ops.push(dp::Operation::ProfileRemove { id });
            }
        }
        for id in std::mem::take(&mut self.released_sets) {
            if !self.set_defs.contains_key(&id) && self.emitted.sets.remove(&id).is_some() {
                ops.push(dp::Operation::IpSetRemove { id });
            }
        }
        ops
    }

    fn retain_sets(&mut self, sets: &[SetDef]) {
        for def in sets {
            let id = def.id();
            let n = self.set_refs.entry(id.clone()).or_default();
            *n += 1;
            if *n == 1 {
                let _ = self.index.update_selector(id.clone(), def.selector.clone());
                self.set_defs.insert(id.clone(), def.clone());
                let items: Vec<Item> = self.index.matching(&id).cloned().collect();
                let mut members = Vec::new();
                for item in &items {
                    members.extend(self.contribution(def, item));
                }
                self.set_members.remove(&id);
                self.count(&id, members, true);
                self.new_sets.insert(id.clone());
                self.released_sets.remove(&id);
            }
        }
    }

    fn release_sets(&mut self, sets: &[SetDef]) {
        for def in sets {
            let id = def.id();
            let Some(n) = self.set_refs.get_mut(&id) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.set_refs.remove(&id);
                self.set_defs.remove(&id);
                self.index.remove_selector(&id);
                self.set_members.remove(&id);
                self.touched.remove(&id);
                self.new_sets.remove(&id);
                self.released_sets.insert(id);
            }
        }
    }

    /// The operation that tells the driver it has the whole state.
    pub fn in_sync(&mut self) -> Vec<dp::Operation> {
        let mut ops = self.flush();
        ops.push(dp::Operation::InSync);
        ops
    }
}

/// The normalised policy of a policy resource (Kubernetes ones converted).
pub fn policy_input(r: &Resource) -> Option<PolicyInput> {
    match r {
        Resource::NetworkPolicy(p) => {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            Some(PolicyInput {
                id: dp::PolicyId {
                    tier: p.spec.tier.clone(),
                    name: format!("{ns}/{}", p.name()),
                },
                namespace: Some(ns),
                order: p.spec.order,
                selector: p.spec.selector.clone(),
                namespace_selector: None,
                service_account_selector: p.spec.service_account_selector.clone(),
                types: p.spec.types.clone(),
                ingress: p.spec.ingress.clone(),
                egress: p.spec.egress.clone(),
                pre_dnat: false,
                do_not_track: false,
                apply_on_forward: false,
            })
        }
        Resource::GlobalNetworkPolicy(p) => Some(PolicyInput {
            id: dp::PolicyId {
                tier: p.spec.tier.clone(),
                name: p.name().to_string(),
            },
            namespace: None,
            order: p.spec.order,
            selector: p.spec.selector.clone(),
            namespace_selector: p.spec.namespace_selector.clone(),
            service_account_selector: p.spec.service_account_selector.clone(),
            types: p.spec.types.clone(),
            ingress: p.spec.ingress.clone(),
            egress: p.spec.egress.clone(),
            pre_dnat: p.spec.pre_dnat,
            do_not_track: p.spec.do_not_track,
            apply_on_forward: p.spec.apply_on_forward,
        }),
        Resource::K8sNetworkPolicy(k) => convert::network_policy(k)
            .ok()
            .and_then(|p| policy_input(&Resource::NetworkPolicy(p))),
        _ => None,
    }
}

/// The endpoint a WorkloadEndpoint or HostEndpoint describes.
pub fn endpoint_input(r: &Resource) -> Option<EndpointInput> {
    match r {
        Resource::WorkloadEndpoint(w) => {
            let s = &w.spec;
            Some(EndpointInput {
                node: s.node.clone(),
                namespace: Some(w.metadata.namespace.clone().unwrap_or_default()),
                name: w.name().to_string(),
                interface_name: s.interface_name.clone(),
                own_labels: w.metadata.labels.clone().unwrap_or_default(),
                profiles: s.profiles.clone(),
                service_account: (!s.service_account_name.is_empty())
                    .then(|| s.service_account_name.clone()),
                orchestrator: if s.orchestrator.is_empty() {
                    "k8s".into()
                } else {
                    s.orchestrator.clone()
                },
                nets: s.ip_networks.iter().map(|c| c.net()).collect(),
                mac: (!s.mac.is_empty()).then(|| s.mac.clone()),
                ports: s
                    .ports
                    .iter()
                    .map(|p| (p.name.clone(), p.protocol.number(), p.port))
                    .collect(),
                expected_ips: Vec::new(),
            })
        }
        Resource::HostEndpoint(h) => {
            let s = &h.spec;
            Some(EndpointInput {
                node: s.node.clone(),
                namespace: None,
                name: h.name().to_string(),
                interface_name: s.interface_name.clone(),
                own_labels: h.metadata.labels.clone().unwrap_or_default(),
                profiles: s.profiles.clone(),
                service_account: None,
                orchestrator: String::new(),
                nets: Vec::new(),
                mac: None,
                ports: s
                    .ports
                    .iter()
                    .map(|p| (p.name.clone(), p.protocol.number(), p.port))
                    .collect(),
                expected_ips: s.expected_ips.clone(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;
