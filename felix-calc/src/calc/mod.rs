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

pub mod inputs;
pub mod labelindex;
pub mod render;
pub mod services;
mod whole;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use manul_dataplane_api as dp;
use manul_model::convert;
use manul_model::selector::Expr;
use manul_model::v3::{Action, PolicyType, ProfileSpec, TierSpec};
use manul_model::{Kind, Resource, ResourceKey};
use roaring::RoaringBitmap;

use inputs::{EndpointInput, Item, NetSetInput, PolicyInput, by_order, namespace_selector_labels};
use labelindex::{
    FxHashMap, FxHashSet, Interner, LabelIndex, LabelMap, Labels, MatchChange, Sym, finish_labels,
};
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

/// What was last sent to the driver (sets: in [`SetState`]).
#[derive(Debug, Default, Clone, PartialEq)]
struct Emitted {
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

/// An endpoint as the graph keeps it: what its labels, set membership and
/// locality are made of, with interned strings.
#[derive(Debug)]
struct EndpointRec {
    local: bool,
    namespace: Option<Sym>,
    profiles: Box<[Sym]>,
    own_labels: Labels,
    service_account: Option<Sym>,
    /// `ksa.NAMESPACE.ACCOUNT`: the profile whose `pcsa.` labels are the
    /// service account's, when the endpoint has one.
    account_profile: Option<Sym>,
    orchestrator: Sym,
    nets: Box<[IpNet]>,
    /// Named ports: (name, protocol number, port).
    ports: Box<[(Sym, u8, u16)]>,
    expected_ips: Box<[IpAddr]>,
}

#[derive(Debug)]
struct NetSetRec {
    namespace: Option<Sym>,
    own_labels: Labels,
    nets: Box<[IpNet]>,
}

#[derive(Debug)]
enum Rec {
    Endpoint(EndpointRec),
    NetSet(NetSetRec),
}

/// A local endpoint: its whole input, and what it was last counted as
/// using.
#[derive(Debug)]
struct Local {
    item: Item,
    input: EndpointInput,
    matched: BTreeSet<dp::PolicyId>,
    profiles: Vec<String>,
}

/// One active IP set.
#[derive(Debug)]
struct SetState {
    id: dp::IpSetId,
    def: SetDef,
    /// Rendered policies and profiles using it.
    refs: usize,
    /// Current members, counted by contributing item.
    members: FxHashMap<dp::IpSetMember, u32>,
    /// Whether the driver has it.
    emitted: bool,
    /// Members whose count changed in this batch, with whether they were
    /// members at the last flush.
    touched: FxHashMap<dp::IpSetMember, bool>,
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
    policies: BTreeMap<dp::PolicyId, PolicyInput>,
    policy_keys: BTreeMap<ResourceKey, dp::PolicyId>,
    /// Policy ids in the policy index.
    policy_slots: FxHashMap<dp::PolicyId, u32>,
    slot_policies: Vec<Option<dp::PolicyId>>,
    free_policy_slots: Vec<u32>,
    profiles: BTreeMap<String, ProfileSpec>,
    /// Interned `labels_to_apply` of each profile.
    profile_labels: FxHashMap<String, Labels>,
    namespaces: BTreeMap<String, LabelMap>,
    /// Per namespace: the labels namespace selectors see, and their
    /// `pcns.`-prefixed interned form that namespaced items inherit.
    namespace_views: FxHashMap<String, (LabelMap, Labels)>,
    /// Endpoints and network sets: key → id, id → record.
    item_ids: FxHashMap<Item, u32>,
    items: Vec<Option<Rec>>,
    free_items: Vec<u32>,
    endpoint_count: usize,
    netset_count: usize,
    /// Items by namespace and endpoints by profile, for inheritance.
    namespace_members: FxHashMap<Sym, RoaringBitmap>,
    profile_members: FxHashMap<Sym, RoaringBitmap>,
    k8s_services: BTreeMap<(String, String), k8s_openapi::api::core::v1::Service>,
    /// (namespace, slice name) → slice.
    slices: BTreeMap<(String, String), services::Slice>,
    dirty_services: BTreeSet<(String, String)>,
    /// Slots of the active sets made of each Service's endpoints.
    service_sets: BTreeMap<(String, String), BTreeSet<u32>>,
    /// Set selectors over every endpoint and network set.
    index: LabelIndex,
    /// Policy selectors over local endpoints.
    policy_index: LabelIndex,
    sets: Vec<Option<SetState>>,
    set_slots: FxHashMap<dp::IpSetId, u32>,
    free_set_slots: Vec<u32>,
    /// Sets created or touched in this batch.
    dirty_sets: FxHashSet<u32>,
    /// Sets whose use count went to zero in this batch.
    released_sets: Vec<u32>,
    locals: FxHashMap<u32, Local>,
    /// How many local endpoints each policy and profile applies to.
    policy_users: FxHashMap<dp::PolicyId, usize>,
    profile_users: FxHashMap<String, usize>,
    /// Rendered active policies and profiles, with the sets they use.
    rendered: BTreeMap<dp::PolicyId, (dp::Policy, Vec<SetDef>)>,
    rendered_profiles: BTreeMap<String, (dp::Policy, Vec<SetDef>)>,
    emitted: Emitted,
    dirty_policies: BTreeSet<dp::PolicyId>,
    dirty_profiles: BTreeSet<String>,
    dirty_locals: BTreeSet<Item>,
    all_locals_dirty: bool,
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
            policies: BTreeMap::new(),
            policy_keys: BTreeMap::new(),
            policy_slots: FxHashMap::default(),
            slot_policies: Vec::new(),
            free_policy_slots: Vec::new(),
            profiles: BTreeMap::new(),
            profile_labels: FxHashMap::default(),
            namespaces: BTreeMap::new(),
            namespace_views: FxHashMap::default(),
            item_ids: FxHashMap::default(),
            items: Vec::new(),
            free_items: Vec::new(),
            endpoint_count: 0,
            netset_count: 0,
            namespace_members: FxHashMap::default(),
            profile_members: FxHashMap::default(),
            k8s_services: BTreeMap::new(),
            slices: BTreeMap::new(),
            dirty_services: BTreeSet::new(),
            service_sets: BTreeMap::new(),
            index: LabelIndex::default(),
            policy_index: LabelIndex::default(),
            sets: Vec::new(),
            set_slots: FxHashMap::default(),
            free_set_slots: Vec::new(),
            dirty_sets: FxHashSet::default(),
            released_sets: Vec::new(),
            locals: FxHashMap::default(),
            policy_users: FxHashMap::default(),
            profile_users: FxHashMap::default(),
            rendered: BTreeMap::new(),
            rendered_profiles: BTreeMap::new(),
            emitted: Emitted::default(),
            dirty_policies: BTreeSet::new(),
            dirty_profiles: BTreeSet::new(),
            dirty_locals: BTreeSet::new(),
            all_locals_dirty: false,
            changes: Vec::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stats(&self) -> Stats {
        Stats {
            local_endpoints: self.locals.len(),
            active_policies: self.emitted.policies.len(),
            active_profiles: self.emitted.profiles.len(),
            ip_sets: self.sets.iter().flatten().filter(|s| s.emitted).count(),
            endpoints: self.endpoint_count,
            policies: self.policies.len(),
            network_sets: self.netset_count,
        }
    }

    /// Applies a batch of updates; returns the ordered operations.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> Vec<dp::Operation> {
        for u in updates {
            self.ingest(u);
        }
        self.flush()
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
                self.namespace_views.remove(&name);
                self.profile_changed(&format!("{}{name}", convert::NAMESPACE_PROFILE_PREFIX));
                self.namespace_changed(&name);
            }
            Kind::WorkloadEndpoint | Kind::HostEndpoint => {
                let item = Item::Endpoint(u.key.namespace, u.key.name);
                let input = u.value.and_then(endpoint_input);
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

    // ---------------------------------------------------------- policies

    /// The selector a policy is indexed by over local endpoints: its own,
    /// limited to its namespace for a namespaced policy. Matching it is
    /// necessary for the policy to apply; [`Self::policy_applies`] checks
    /// the rest.
    fn policy_expr(p: &PolicyInput) -> Expr {
        match &p.namespace {
            Some(ns) => Expr::and(vec![
                p.selector.expr().clone(),
                Expr::Eq {
                    label: NAMESPACE_LABEL.to_string(),
                    value: ns.clone(),
                },
            ]),
            None => p.selector.expr().clone(),
        }
    }

    fn set_policy(&mut self, key: ResourceKey, input: Option<PolicyInput>) {
        // A policy can move tiers: its id changes, so remove the old one.
        let old = self.policy_keys.remove(&key);
        if let Some(old) = &old
            && input.as_ref().is_none_or(|p| p.id != *old)
        {
            self.policies.remove(old);
            self.dirty_policies.insert(old.clone());
            if let Some(slot) = self.policy_slots.remove(old) {
                let mut changes = std::mem::take(&mut self.changes);
                self.policy_index.remove_selector(slot, &mut changes);
                self.locals_dirty_from(&mut changes);
                self.changes = changes;
                self.slot_policies[slot as usize] = None;
                self.free_policy_slots.push(slot);
            }
        }
        let Some(p) = input else {
            return;
        };
        let id = p.id.clone();
        let slot = match self.policy_slots.get(&id) {
            Some(s) => *s,
            None => {
                let s = match self.free_policy_slots.pop() {
                    Some(s) => {
                        self.slot_policies[s as usize] = Some(id.clone());
                        s
                    }
                    None => {
                        self.slot_policies.push(Some(id.clone()));
                        (self.slot_policies.len() - 1) as u32
                    }
                };
                self.policy_slots.insert(id.clone(), s);
                s
            }
        };
        // Local endpoints it applied to see its new order, types or rules.
        let before: Vec<u32> = self.policy_index.matching(slot).collect();
        for i in before {
            self.mark_local_dirty(i);
        }
        let expr = Self::policy_expr(&p);
        let mut changes = std::mem::take(&mut self.changes);
        self.policy_index
            .update_selector(slot, &expr, &mut self.syms, &mut changes);
        self.locals_dirty_from(&mut changes);
        self.changes = changes;
        self.policy_keys.insert(key, id.clone());
        self.policies.insert(id.clone(), p);
        self.dirty_policies.insert(id);
    }

    fn locals_dirty_from(&mut self, changes: &mut Vec<MatchChange>) {
        for (_, item, _) in changes.drain(..) {
            self.mark_local_dirty(item);
        }
    }

    fn mark_local_dirty(&mut self, id: u32) {
        if let Some(local) = self.locals.get(&id) {
            self.dirty_locals.insert(local.item.clone());
        }
    }

    fn profile_changed(&mut self, name: &str) {
        self.dirty_profiles.insert(name.to_string());
        match self.profiles.get(name) {
            Some(p) if !p.labels_to_apply.is_empty() => {
                let labels = self.syms.pairs(
                    p.labels_to_apply
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                );
                self.profile_labels.insert(name.to_string(), labels);
            }
            _ => {
                self.profile_labels.remove(name);
            }
        }
        // Profile labels are inherited by the endpoints that use it.
        let sym = self.syms.intern(name);
        let users: Vec<u32> = self
            .profile_members
            .get(&sym)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        for id in users {
            self.reindex(id);
            self.mark_local_dirty(id);
        }
    }

    fn namespace_changed(&mut self, ns: &str) {
        let sym = self.syms.intern(ns);
        let members: Vec<u32> = self
            .namespace_members
            .get(&sym)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        for id in members {
            self.reindex(id);
            // Namespace selectors of policies see the namespace's labels.
            self.mark_local_dirty(id);
        }
    }

    /// Appends the labels items of `ns` inherit from it (caching them
    /// with the labels namespace selectors see).
    fn namespace_inherited(&mut self, ns: &str, out: &mut Vec<(Sym, Sym)>) {
        if !self.namespace_views.contains_key(ns) {
            let plain = namespace_selector_labels(ns, self.namespaces.get(ns));
            let prefixed: Vec<(String, &str)> = plain
                .iter()
                .map(|(k, v)| (format!("{NAMESPACE_PREFIX}{k}"), v.as_str()))
                .collect();
            let inherited = self
                .syms
                .pairs(prefixed.iter().map(|(k, v)| (k.as_str(), *v)));
            self.namespace_views
                .insert(ns.to_string(), (plain, inherited));
        }
        if let Some((_, inherited)) = self.namespace_views.get(ns) {
            out.extend(inherited.iter().cloned());
        }
    }

    // --------------------------------------------------------- endpoints

    /// An endpoint's labels as selectors see them.
    fn endpoint_labels(&mut self, e: &EndpointRec) -> Labels {
        // Precedence, lowest first: namespace labels (for namespace
        // selectors), profile labels (an earlier profile wins), the
        // endpoint's own labels, then the namespace and orchestrator.
        let mut labels: Vec<(Sym, Sym)> = Vec::with_capacity(e.own_labels.len() + 8);
        if let Some(ns) = &e.namespace {
            self.namespace_inherited(ns.as_str(), &mut labels);
        }
        for p in e.profiles.iter().rev() {
            if let Some(l) = self.profile_labels.get(p.as_str()) {
                labels.extend(l.iter().cloned());
            }
        }
        labels.extend(e.own_labels.iter().cloned());
        if let Some(ns) = &e.namespace {
            labels.push((self.sym_namespace.clone(), ns.clone()));
            labels.push((self.sym_orchestrator.clone(), e.orchestrator.clone()));
            if let Some(sa) = &e.service_account {
                labels.push((self.sym_service_account.clone(), sa.clone()));
                // What `serviceAccounts.selector` sees, `pcsa.`-prefixed.
                if let Some(l) = e
                    .account_profile
                    .as_ref()
                    .and_then(|p| self.profile_labels.get(p.as_str()))
                {
                    labels.extend(
                        l.iter()
                            .filter(|(k, _)| k.as_str().starts_with(render::SERVICE_ACCOUNT_PREFIX))
                            .cloned(),
                    );
                }
                labels.push((self.sym_account_name.clone(), sa.clone()));
            }
        }
        finish_labels(labels)
    }

    fn netset_labels(&mut self, n: &NetSetRec) -> Labels {
        let mut labels: Vec<(Sym, Sym)> = Vec::with_capacity(n.own_labels.len() + 4);
        if let Some(ns) = &n.namespace {
            self.namespace_inherited(ns.as_str(), &mut labels);
            labels.push((self.sym_namespace.clone(), ns.clone()));
        }
        labels.extend(n.own_labels.iter().cloned());
        finish_labels(labels)
    }

    fn labels_of(&mut self, id: u32) -> Option<Labels> {
        let rec = self.items.get_mut(id as usize)?.take()?;
        let labels = match &rec {
            Rec::Endpoint(e) => self.endpoint_labels(e),
            Rec::NetSet(n) => self.netset_labels(n),
        };
        self.items[id as usize] = Some(rec);
        Some(labels)
    }

    /// The members item `id` contributes to the set `def`.
    fn contribution(rec: &Rec, def: &SetDef, out: &mut Vec<dp::IpSetMember>) {
        let named_port = match def {
            SetDef::Selected { named_port, .. } => named_port,
            // Made of EndpointSlices, not of labelled items.
            SetDef::Service { .. } => return,
        };
        match (rec, named_port) {
            (Rec::Endpoint(e), None) => {
                out.extend(e.nets.iter().map(|n| dp::IpSetMember::Net(*n)));
                out.extend(
                    e.expected_ips
                        .iter()
                        .map(|ip| dp::IpSetMember::Net(IpNet::from(*ip))),
                );
            }
            (Rec::Endpoint(e), Some((proto, name))) => {
                for (pname, pproto, port) in e.ports.iter() {
                    if pname.as_str() == name && pproto == proto {
                        out.extend(e.nets.iter().map(|n| dp::IpSetMember::NamedPort {
                            ip: n.addr(),
                            protocol: *proto,
                            port: *port,
                        }));
                    }
                }
            }
            (Rec::NetSet(n), None) => out.extend(n.nets.iter().map(|n| dp::IpSetMember::Net(*n))),
            (Rec::NetSet(_), Some(_)) => {}
        }
    }

    /// Adds (`sign` true) or removes item `id`'s contribution to the sets
    /// `sets` (all it is in when None), recording the touched members.
    fn contribute(&mut self, id: u32, sets: Option<&[u32]>, sign: bool) {
        let Some(Some(rec)) = self.items.get(id as usize) else {
            return;
        };
        let sets = sets.unwrap_or_else(|| self.index.selectors_of(id));
        let mut members = Vec::new();
        for &slot in sets {
            let Some(Some(set)) = self.sets.get_mut(slot as usize) else {
                continue;
            };
            members.clear();
            Self::contribution(rec, &set.def, &mut members);
            if members.is_empty() {
                continue;
            }
            count(set, members.drain(..), sign);
            self.dirty_sets.insert(slot);
        }
    }

    /// Re-derives item `id`'s labels after what it inherits changed.
    fn reindex(&mut self, id: u32) {
        let Some(labels) = self.labels_of(id) else {
            return;
        };
        self.relabel(id, labels);
    }

    /// Gives item `id` new labels in both indexes, moving its set
    /// contributions.
    fn relabel(&mut self, id: u32, labels: Labels) {
        let mut changes = std::mem::take(&mut self.changes);
        if self.locals.contains_key(&id) {
            self.policy_index
                .update_item(id, labels.clone(), &mut changes);
            changes.clear();
        }
        self.index.update_item(id, labels, &mut changes);
        let left: Vec<u32> = changes.iter().filter(|c| !c.2).map(|c| c.0).collect();
        let joined: Vec<u32> = changes.drain(..).filter(|c| c.2).map(|c| c.0).collect();
        self.changes = changes;
        self.contribute(id, Some(&left), false);
        self.contribute(id, Some(&joined), true);
    }

    fn intern_opt(&mut self, s: Option<&str>) -> Option<Sym> {
        s.map(|s| self.syms.intern(s))
    }

    fn endpoint_rec(&mut self, e: &EndpointInput) -> EndpointRec {
        EndpointRec {
            local: e.node == self.node,
            namespace: self.intern_opt(e.namespace.as_deref()),
            profiles: e.profiles.iter().map(|p| self.syms.intern(p)).collect(),
            own_labels: self
                .syms
                .pairs(e.own_labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            service_account: self.intern_opt(e.service_account.as_deref()),
            account_profile: match (&e.namespace, &e.service_account) {
                (Some(ns), Some(sa)) => Some(self.syms.intern(&account_profile(ns, sa))),
                _ => None,
            },
            orchestrator: self.syms.intern(&e.orchestrator),
            nets: e.nets.clone().into_boxed_slice(),
            ports: e
                .ports
                .iter()
                .map(|(n, proto, port)| (self.syms.intern(n), *proto, *port))
                .collect(),
            expected_ips: e.expected_ips.clone().into_boxed_slice(),
        }
    }

    fn alloc_item(&mut self, item: &Item) -> u32 {
        if let Some(id) = self.item_ids.get(item) {
            return *id;
        }
        let id = match self.free_items.pop() {
            Some(id) => id,
            None => {
                self.items.push(None);
                (self.items.len() - 1) as u32
            }
        };
        self.item_ids.insert(item.clone(), id);
        id
    }

    /// Forgets item `id`'s record and memberships; returns it.
    fn take_rec(&mut self, id: u32) -> Option<Rec> {
        let rec = self.items.get_mut(id as usize)?.take()?;
        let (ns, profiles, account): (Option<&Sym>, &[Sym], Option<&Sym>) = match &rec {
            Rec::Endpoint(e) => {
                self.endpoint_count -= 1;
                (
                    e.namespace.as_ref(),
                    &e.profiles,
                    e.account_profile.as_ref(),
                )
            }
            Rec::NetSet(n) => {
                self.netset_count -= 1;
                (n.namespace.as_ref(), &[], None)
            }
        };
        if let Some(ns) = ns
            && let Some(m) = self.namespace_members.get_mut(ns)
        {
            m.remove(id);
            if m.is_empty() {
                self.namespace_members.remove(ns);
            }
        }
        for p in profiles.iter().chain(account) {
            if let Some(m) = self.profile_members.get_mut(p) {
                m.remove(id);
                if m.is_empty() {
                    self.profile_members.remove(p);
                }
            }
        }
        Some(rec)
    }

    fn put_rec(&mut self, id: u32, rec: Rec) {
        let (ns, profiles, account): (Option<&Sym>, &[Sym], Option<&Sym>) = match &rec {
            Rec::Endpoint(e) => {
                self.endpoint_count += 1;
                (
                    e.namespace.as_ref(),
                    &e.profiles,
                    e.account_profile.as_ref(),
                )
            }
            Rec::NetSet(n) => {
                self.netset_count += 1;
                (n.namespace.as_ref(), &[], None)
            }
        };
        if let Some(ns) = ns {
            self.namespace_members
                .entry(ns.clone())
                .or_default()
                .insert(id);
        }
        for p in profiles.iter().chain(account) {
            self.profile_members
                .entry(p.clone())
                .or_default()
                .insert(id);
        }
        self.items[id as usize] = Some(rec);
    }

    fn remove_item(&mut self, item: Item) {
        let Some(id) = self.item_ids.remove(&item) else {
            return;
        };
        self.contribute(id, None, false);
        let mut changes = std::mem::take(&mut self.changes);
        self.index.remove_item(id, &mut changes);
        changes.clear();
        self.changes = changes;
        self.take_rec(id);
        self.drop_local(id, &item);
        self.free_items.push(id);
    }

    /// Item `id` is no longer a local endpoint.
    fn drop_local(&mut self, id: u32, item: &Item) {
        let Some(local) = self.locals.remove(&id) else {
            return;
        };
        let mut changes = std::mem::take(&mut self.changes);
        self.policy_index.remove_item(id, &mut changes);
        changes.clear();
        self.changes = changes;
        for p in local.matched {
            self.unuse_policy(p);
        }
        for p in local.profiles {
            self.unuse_profile(p);
        }
        self.dirty_locals.insert(item.clone());
    }

    fn unuse_policy(&mut self, p: dp::PolicyId) {
        if let Some(n) = self.policy_users.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.policy_users.remove(&p);
                self.dirty_policies.insert(p);
            }
        }
    }

    fn use_policy(&mut self, p: dp::PolicyId) {
        let n = self.policy_users.entry(p.clone()).or_default();
        *n += 1;
        if *n == 1 {
            self.dirty_policies.insert(p);
        }
    }

    fn unuse_profile(&mut self, p: String) {
        if let Some(n) = self.profile_users.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.profile_users.remove(&p);
                self.dirty_profiles.insert(p);
            }
        }
    }

    fn use_profile(&mut self, p: String) {
        let n = self.profile_users.entry(p.clone()).or_default();
        *n += 1;
        if *n == 1 {
            self.dirty_profiles.insert(p);
        }
    }

    fn set_endpoint(&mut self, item: Item, input: Option<EndpointInput>) {
        let Some(e) = input else {
            self.remove_item(item);
            return;
        };
        let rec = self.endpoint_rec(&e);
        let local = rec.local;
        let labels = self.endpoint_labels(&rec);
        let id = self.alloc_item(&item);
        // Where the addresses and ports are unchanged, only the sets the
        // endpoint joins or leaves change. Otherwise the old contribution
        // leaves with the old record and the new one joins with the new
        // (the members may differ even where the sets do not).
        let same_members = matches!(
            self.items.get(id as usize),
            Some(Some(Rec::Endpoint(old)))
                if old.nets == rec.nets
                    && old.ports == rec.ports
                    && old.expected_ips == rec.expected_ips
        );
        if !same_members {
            self.contribute(id, None, false);
        }
        self.take_rec(id);
        self.put_rec(id, Rec::Endpoint(rec));
        let mut changes = std::mem::take(&mut self.changes);
        // Only a local endpoint's labels are needed twice.
        let policy_labels = local.then(|| labels.clone());
        self.index.update_item(id, labels, &mut changes);
        if same_members {
            let left: Vec<u32> = changes.iter().filter(|c| !c.2).map(|c| c.0).collect();
            let joined: Vec<u32> = changes.iter().filter(|c| c.2).map(|c| c.0).collect();
            self.contribute(id, Some(&left), false);
            self.contribute(id, Some(&joined), true);
        }
        changes.clear();
        if let Some(labels) = policy_labels {
            self.policy_index.update_item(id, labels, &mut changes);
            changes.clear();
            match self.locals.get_mut(&id) {
                Some(l) => l.input = e,
                None => {
                    self.locals.insert(
                        id,
                        Local {
                            item: item.clone(),
                            input: e,
                            matched: BTreeSet::new(),
                            profiles: Vec::new(),
                        },
                    );
                }
            }
            self.dirty_locals.insert(item);
        } else {
            self.drop_local(id, &item);
        }
        self.changes = changes;
        if !same_members {
            self.contribute(id, None, true);
        }
    }

    fn set_netset(&mut self, item: Item, input: Option<NetSetInput>) {
        let Some(n) = input else {
            self.remove_item(item);
            return;
        };
        let rec = NetSetRec {
            namespace: self.intern_opt(n.namespace.as_deref()),
            own_labels: self
                .syms
                .pairs(n.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            nets: n.nets.into_boxed_slice(),
        };
        let labels = self.netset_labels(&rec);
        let id = self.alloc_item(&item);
        self.contribute(id, None, false);
        self.take_rec(id);
        self.put_rec(id, Rec::NetSet(rec));
        let mut changes = std::mem::take(&mut self.changes);
        self.index.update_item(id, labels, &mut changes);
        changes.clear();
        self.changes = changes;
        self.contribute(id, None, true);
    }

    /// Whether policy `p`, whose indexed selector matches local endpoint
    /// `e`, applies to it: the checks that are not about its labels.
    fn policy_applies(&self, p: &PolicyInput, e: &EndpointInput) -> bool {
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
            let labels = match (&e.namespace, &e.service_account) {
                (Some(ns), Some(sa)) => Some(self.account_labels(ns, sa)),
                _ => None,
            };
            if !inputs::parent_selector_matches(sas.expr(), labels.as_ref()) {
                return false;
            }
        }
        if let (Some(nssel), Some(ns)) = (&p.namespace_selector, &e.namespace) {
            let matched = match self.namespace_views.get(ns) {
                Some((labels, _)) => nssel.matches(labels),
                None => nssel.matches(&namespace_selector_labels(ns, self.namespaces.get(ns))),
            };
            if !matched {
                return false;
            }
        }
        true
    }

    /// The labels a service account selector sees for account `sa` in
    /// `ns`: the `pcsa.` labels of profile `ksa.NS.SA`, unprefixed, and
    /// `projectcalico.org/name`.
    fn account_labels(&self, ns: &str, sa: &str) -> LabelMap {
        let mut labels: LabelMap = self
            .profiles
            .get(&account_profile(ns, sa))
            .map(|p| {
                p.labels_to_apply
                    .iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix(render::SERVICE_ACCOUNT_PREFIX)
                            .map(|k| (k.to_string(), v.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        labels.insert(convert::NAMESPACE_NAME_LABEL.to_string(), sa.to_string());
        labels
    }

    /// Recomputes what local endpoint `id` uses; updates the counts.
    fn recompute_local(&mut self, id: u32) {
        let Some(local) = self.locals.remove(&id) else {
            return;
        };
        let mut matched = BTreeSet::new();
        for slot in self.policy_index.selectors_of(id) {
            let Some(Some(pid)) = self.slot_policies.get(*slot as usize) else {
                continue;
            };
            if let Some(p) = self.policies.get(pid)
                && self.policy_applies(p, &local.input)
            {
                matched.insert(pid.clone());
            }
        }
        let profiles = local.input.profiles.clone();
        for p in matched.difference(&local.matched) {
            self.use_policy(p.clone());
        }
        for p in local.matched.difference(&matched) {
            self.unuse_policy(p.clone());
        }
        for p in &profiles {
            self.use_profile(p.clone());
        }
        for p in &local.profiles {
            self.unuse_profile(p.clone());
        }
        self.locals.insert(
            id,
            Local {
                item: local.item,
                input: local.input,
                matched,
                profiles,
            },
        );
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
        matched: &BTreeSet<dp::PolicyId>,
        filter: impl Fn(&PolicyInput) -> bool,
    ) -> Vec<dp::TierPolicies> {
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

    fn render_policy(&self, id: &dp::PolicyId) -> Option<(dp::Policy, Vec<SetDef>)> {
        let p = self.policies.get(id)?;
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
        let rendered = render::rules(&owner, ingress, egress, p.namespace.as_deref(), &mut sets);
        Some((rendered, sets))
    }

    fn render_profile(&self, id: &str) -> Option<(dp::Policy, Vec<SetDef>)> {
        let p = self.profiles.get(id)?;
        let mut sets = Vec::new();
        let rendered = render::rules(
            &format!("profile/{id}"),
            &p.ingress,
            &p.egress,
            None,
            &mut sets,
        );
        Some((rendered, sets))
    }

    fn flush(&mut self) -> Vec<dp::Operation> {
        // Service sets follow their Services' EndpointSlices.
        let refresh: Vec<(String, String)> = self
            .dirty_services
            .iter()
            .filter(|k| self.service_sets.contains_key(*k))
            .cloned()
            .collect();
        for key in refresh {
            self.refresh_service_sets(&key);
        }
        if std::mem::take(&mut self.all_locals_dirty) {
            let locals: Vec<Item> = self.locals.values().map(|l| l.item.clone()).collect();
            self.dirty_locals.extend(locals);
        }
        // Local endpoints: what they use now.
        let dirty_locals = std::mem::take(&mut self.dirty_locals);
        let mut live_locals = Vec::new();
        for item in &dirty_locals {
            match self.item_ids.get(item) {
                Some(id) if self.locals.contains_key(id) => {
                    let id = *id;
                    self.recompute_local(id);
                    live_locals.push((item, Some(id)));
                }
                _ => live_locals.push((item, None)),
            }
        }

        // Policies and profiles whose use or definition changed.
        let changed_policies = std::mem::take(&mut self.dirty_policies);
        let changed_profiles = std::mem::take(&mut self.dirty_profiles);
        for id in &changed_policies {
            let active = self.policy_users.contains_key(id);
            let new = if active { self.render_policy(id) } else { None };
            if let Some((_, sets)) = &new {
                self.retain_sets(sets);
            }
            if let Some((_, old_sets)) = self.rendered.remove(id) {
                self.release_sets(&old_sets);
            }
            if let Some(new) = new {
                self.rendered.insert(id.clone(), new);
            }
        }
        for id in &changed_profiles {
            let active = self.profile_users.contains_key(id);
            let new = if active {
                self.render_profile(id)
            } else {
                None
            };
            if let Some((_, sets)) = &new {
                self.retain_sets(sets);
            }
            if let Some((_, old_sets)) = self.rendered_profiles.remove(id) {
                self.release_sets(&old_sets);
            }
            if let Some(new) = new {
                self.rendered_profiles.insert(id.clone(), new);
            }
        }

        let mut ops = Vec::new();
        // 1. Sets created or changed.
        let mut dirty_sets: Vec<(dp::IpSetId, u32)> = self
            .dirty_sets
            .drain()
            .filter_map(|slot| match self.sets.get(slot as usize) {
                Some(Some(s)) => Some((s.id.clone(), slot)),
                _ => None,
            })
            .collect();
        dirty_sets.sort();
        for (id, slot) in dirty_sets {
            let Some(Some(set)) = self.sets.get_mut(slot as usize) else {
                continue;
            };
            let touched = std::mem::take(&mut set.touched);
            if set.refs == 0 {
                continue;
            }
            if !set.emitted {
                let mut members: Vec<dp::IpSetMember> = set.members.keys().copied().collect();
                members.sort();
                ops.push(dp::Operation::IpSetUpdate {
                    id,
                    kind: set.def.kind(),
                    members,
                });
                set.emitted = true;
                continue;
            }
            let (mut added, mut removed) = (Vec::new(), Vec::new());
            for (m, was) in touched {
                match (set.members.contains_key(&m), was) {
                    (true, false) => added.push(m),
                    (false, true) => removed.push(m),
                    _ => {}
                }
            }
            if !added.is_empty() || !removed.is_empty() {
                added.sort();
                removed.sort();
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
        for (item, id) in live_locals {
            let local = id.and_then(|id| self.locals.get(&id));
            match (item, local) {
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
        let mut released: Vec<(dp::IpSetId, u32)> = Vec::new();
        for slot in std::mem::take(&mut self.released_sets) {
            if let Some(Some(s)) = self.sets.get(slot as usize)
                && s.refs == 0
            {
                released.push((s.id.clone(), slot));
            }
        }
        released.sort();
        released.dedup();
        for (id, slot) in released {
            match self.sets.get(slot as usize) {
                Some(Some(SetState {
                    def:
                        SetDef::Service {
                            namespace, name, ..
                        },
                    ..
                })) => {
                    let key = (namespace.clone(), name.clone());
                    if let Some(slots) = self.service_sets.get_mut(&key) {
                        slots.remove(&slot);
                        if slots.is_empty() {
                            self.service_sets.remove(&key);
                        }
                    }
                }
                _ => {
                    let mut changes = std::mem::take(&mut self.changes);
                    self.index.remove_selector(slot, &mut changes);
                    changes.clear();
                    self.changes = changes;
                }
            }
            self.set_slots.remove(&id);
            self.free_set_slots.push(slot);
            if let Some(s) = self.sets.get_mut(slot as usize).and_then(Option::take)
                && s.emitted
            {
                ops.push(dp::Operation::IpSetRemove { id });
            }
        }
        ops
    }

    /// The members of a set of Service `key`'s endpoints: every address of
    /// its EndpointSlices, or with `ports`, each address with each port of
    /// its slice.
    fn service_members(&self, key: &(String, String), ports: bool) -> BTreeSet<dp::IpSetMember> {
        let slices = self
            .slices
            .range((key.0.clone(), String::new())..)
            .take_while(|((ns, _), _)| *ns == key.0)
            .filter(|(_, s)| s.service == key.1)
            .map(|(_, s)| s);
        services::policy_members(slices, ports)
    }

    /// Brings Service `key`'s sets to what its slices say now.
    fn refresh_service_sets(&mut self, key: &(String, String)) {
        let slots: Vec<u32> = self
            .service_sets
            .get(key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for slot in slots {
            let Some(Some(SetState {
                def: SetDef::Service { ports, .. },
                ..
            })) = self.sets.get(slot as usize)
            else {
                continue;
            };
            let wanted = self.service_members(key, *ports);
            let Some(Some(set)) = self.sets.get_mut(slot as usize) else {
                continue;
            };
            let gone: Vec<dp::IpSetMember> = set
                .members
                .keys()
                .filter(|m| !wanted.contains(m))
                .copied()
                .collect();
            let new: Vec<dp::IpSetMember> = wanted
                .into_iter()
                .filter(|m| !set.members.contains_key(m))
                .collect();
            if gone.is_empty() && new.is_empty() {
                continue;
            }
            count(set, gone.into_iter(), false);
            count(set, new.into_iter(), true);
            self.dirty_sets.insert(slot);
        }
    }

    /// The endpoint's profiles that exist.
    fn existing_profiles(&self, e: &EndpointInput) -> Vec<String> {
        e.profiles
            .iter()
            .filter(|p| self.profiles.contains_key(*p))
            .cloned()
            .collect()
    }

    fn retain_sets(&mut self, sets: &[SetDef]) {
        for def in sets {
            let id = def.id();
            if let Some(slot) = self.set_slots.get(&id)
                && let Some(Some(s)) = self.sets.get_mut(*slot as usize)
            {
                s.refs += 1;
                continue;
            }
            let slot = match self.free_set_slots.pop() {
                Some(s) => s,
                None => {
                    self.sets.push(None);
                    (self.sets.len() - 1) as u32
                }
            };
            let mut set = SetState {
                id: id.clone(),
                def: def.clone(),
                refs: 1,
                members: FxHashMap::default(),
                emitted: false,
                touched: FxHashMap::default(),
            };
            let mut members = Vec::new();
            match def {
                SetDef::Selected { selector, .. } => {
                    let mut changes = std::mem::take(&mut self.changes);
                    self.index
                        .update_selector(slot, selector.expr(), &mut self.syms, &mut changes);
                    members.reserve(changes.len());
                    for (_, item, joined) in changes.drain(..) {
                        if joined && let Some(Some(rec)) = self.items.get(item as usize) {
                            Self::contribution(rec, def, &mut members);
                        }
                    }
                    self.changes = changes;
                }
                SetDef::Service {
                    namespace,
                    name,
                    ports,
                } => {
                    let key = (namespace.clone(), name.clone());
                    members.extend(self.service_members(&key, *ports));
                    self.service_sets.entry(key).or_default().insert(slot);
                }
            }
            // A new set is sent whole: no need to track touched members.
            set.members.reserve(members.len());
            for m in members {
                *set.members.entry(m).or_default() += 1;
            }
            self.sets[slot as usize] = Some(set);
            self.set_slots.insert(id, slot);
            self.dirty_sets.insert(slot);
        }
    }

    fn release_sets(&mut self, sets: &[SetDef]) {
        for def in sets {
            let id = def.id();
            let Some(slot) = self.set_slots.get(&id).copied() else {
                continue;
            };
            if let Some(Some(s)) = self.sets.get_mut(slot as usize) {
                s.refs = s.refs.saturating_sub(1);
                if s.refs == 0 {
                    self.released_sets.push(slot);
                }
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

/// The name of the profile carrying account `sa`'s labels in `ns`.
fn account_profile(ns: &str, sa: &str) -> String {
    format!("{}{ns}.{sa}", convert::SERVICE_ACCOUNT_PROFILE_PREFIX)
}

/// Adds (`sign` true) or removes one count of each member, remembering
/// whether a member was present before the batch touched it.
fn count(set: &mut SetState, members: impl Iterator<Item = dp::IpSetMember>, sign: bool) {
    use std::collections::hash_map::Entry;
    for m in members {
        let before = match set.members.entry(m) {
            Entry::Occupied(mut o) => {
                if sign {
                    *o.get_mut() += 1;
                } else {
                    *o.get_mut() -= 1;
                    if *o.get() == 0 {
                        o.remove();
                    }
                }
                true
            }
            Entry::Vacant(v) => {
                if sign {
                    v.insert(1);
                }
                false
            }
        };
        set.touched.entry(m).or_insert(before);
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
pub fn endpoint_input(r: Resource) -> Option<EndpointInput> {
    match r {
        Resource::WorkloadEndpoint(w) => {
            let namespace = Some(w.metadata.namespace.unwrap_or_default());
            let s = w.spec;
            Some(EndpointInput {
                node: s.node,
                namespace,
                name: w.metadata.name.unwrap_or_default(),
                interface_name: s.interface_name,
                own_labels: w.metadata.labels.unwrap_or_default(),
                profiles: s.profiles,
                service_account: (!s.service_account_name.is_empty())
                    .then_some(s.service_account_name),
                orchestrator: if s.orchestrator.is_empty() {
                    "k8s".into()
                } else {
                    s.orchestrator
                },
                nets: s.ip_networks.iter().map(|c| c.net()).collect(),
                mac: (!s.mac.is_empty()).then_some(s.mac),
                ports: s
                    .ports
                    .into_iter()
                    .map(|p| {
                        let proto = p.protocol.number();
                        (p.name, proto, p.port)
                    })
                    .collect(),
                expected_ips: Vec::new(),
            })
        }
        Resource::HostEndpoint(h) => {
            let s = h.spec;
            Some(EndpointInput {
                node: s.node,
                namespace: None,
                name: h.metadata.name.unwrap_or_default(),
                interface_name: s.interface_name,
                own_labels: h.metadata.labels.unwrap_or_default(),
                profiles: s.profiles,
                service_account: None,
                orchestrator: String::new(),
                nets: Vec::new(),
                mac: None,
                ports: s
                    .ports
                    .into_iter()
                    .map(|p| {
                        let proto = p.protocol.number();
                        (p.name, proto, p.port)
                    })
                    .collect(),
                expected_ips: s.expected_ips,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;
