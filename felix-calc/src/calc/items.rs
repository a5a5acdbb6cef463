//! Items and relabelling: endpoints and network sets stored once under a
//! `u32` id shared by both label indexes, with interned labels; the labels
//! they inherit from namespaces and profiles, re-derived when those change;
//! their membership in sets follows their labels.

use std::collections::BTreeSet;

use ipnet::IpNet;
use roaring::RoaringBitmap;
use std::net::IpAddr;

use super::CalcGraph;
use super::inputs::{EndpointInput, Item, NetSetInput, account_profile, namespace_selector_labels};
use super::labelindex::{FxHashMap, Labels, Sym, finish_labels};
use super::policies::Local;
use super::render::{self, NAMESPACE_PREFIX};

/// An endpoint as the graph keeps it: what its labels, set membership and
/// locality are made of, with interned strings.
#[derive(Debug)]
pub(super) struct EndpointRec {
    pub(super) local: bool,
    pub(super) namespace: Option<Sym>,
    pub(super) profiles: Box<[Sym]>,
    pub(super) own_labels: Labels,
    pub(super) service_account: Option<Sym>,
    /// `ksa.NAMESPACE.ACCOUNT`: the profile whose `pcsa.` labels are the
    /// service account's, when the endpoint has one.
    pub(super) account_profile: Option<Sym>,
    pub(super) orchestrator: Sym,
    pub(super) nets: Box<[IpNet]>,
    /// Named ports: (name, protocol number, port).
    pub(super) ports: Box<[(Sym, u8, u16)]>,
    pub(super) expected_ips: Box<[IpAddr]>,
}

#[derive(Debug)]
pub(super) struct NetSetRec {
    pub(super) namespace: Option<Sym>,
    pub(super) own_labels: Labels,
    pub(super) nets: Box<[IpNet]>,
}

#[derive(Debug)]
pub(super) enum Rec {
    Endpoint(EndpointRec),
    NetSet(NetSetRec),
}

/// The items state of the graph.
#[derive(Debug, Default)]
pub(super) struct Items {
    /// Endpoints and network sets: key → id, id → record.
    pub(super) ids: FxHashMap<Item, u32>,
    pub(super) recs: Vec<Option<Rec>>,
    pub(super) free: Vec<u32>,
    pub(super) endpoints: usize,
    pub(super) netsets: usize,
    /// Items by namespace and endpoints by profile, for inheritance.
    pub(super) by_namespace: FxHashMap<Sym, RoaringBitmap>,
    pub(super) by_profile: FxHashMap<Sym, RoaringBitmap>,
}

impl CalcGraph {
    pub(super) fn profile_changed(&mut self, name: &str) {
        self.policies.dirty_profiles.insert(name.to_string());
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
            .items
            .by_profile
            .get(&sym)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        for id in users {
            self.reindex(id);
            self.mark_local_dirty(id);
        }
    }

    pub(super) fn namespace_changed(&mut self, ns: &str) {
        let sym = self.syms.intern(ns);
        let members: Vec<u32> = self
            .items
            .by_namespace
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
    pub(super) fn namespace_inherited(&mut self, ns: &str, out: &mut Vec<(Sym, Sym)>) {
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

    /// An endpoint's labels as selectors see them.
    pub(super) fn endpoint_labels(&mut self, e: &EndpointRec) -> Labels {
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

    pub(super) fn netset_labels(&mut self, n: &NetSetRec) -> Labels {
        let mut labels: Vec<(Sym, Sym)> = Vec::with_capacity(n.own_labels.len() + 4);
        if let Some(ns) = &n.namespace {
            self.namespace_inherited(ns.as_str(), &mut labels);
            labels.push((self.sym_namespace.clone(), ns.clone()));
        }
        labels.extend(n.own_labels.iter().cloned());
        finish_labels(labels)
    }

    pub(super) fn labels_of(&mut self, id: u32) -> Option<Labels> {
        let rec = self.items.recs.get_mut(id as usize)?.take()?;
        let labels = match &rec {
            Rec::Endpoint(e) => self.endpoint_labels(e),
            Rec::NetSet(n) => self.netset_labels(n),
        };
        self.items.recs[id as usize] = Some(rec);
        Some(labels)
    }

    /// Re-derives item `id`'s labels after what it inherits changed.
    pub(super) fn reindex(&mut self, id: u32) {
        let Some(labels) = self.labels_of(id) else {
            return;
        };
        self.relabel(id, labels);
    }

    /// Gives item `id` new labels in both indexes, moving its set
    /// contributions.
    pub(super) fn relabel(&mut self, id: u32, labels: Labels) {
        let mut changes = std::mem::take(&mut self.changes);
        if self.policies.locals.contains_key(&id) {
            self.policies
                .index
                .update_item(id, labels.clone(), &mut changes);
            changes.clear();
        }
        self.sets.index.update_item(id, labels, &mut changes);
        let left: Vec<u32> = changes.iter().filter(|c| !c.2).map(|c| c.0).collect();
        let joined: Vec<u32> = changes.drain(..).filter(|c| c.2).map(|c| c.0).collect();
        self.changes = changes;
        self.contribute(id, Some(&left), false);
        self.contribute(id, Some(&joined), true);
    }

    pub(super) fn intern_opt(&mut self, s: Option<&str>) -> Option<Sym> {
        s.map(|s| self.syms.intern(s))
    }

    pub(super) fn endpoint_rec(&mut self, e: &EndpointInput) -> EndpointRec {
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

    pub(super) fn alloc_item(&mut self, item: &Item) -> u32 {
        if let Some(id) = self.items.ids.get(item) {
            return *id;
        }
        let id = match self.items.free.pop() {
            Some(id) => id,
            None => {
                self.items.recs.push(None);
                (self.items.recs.len() - 1) as u32
            }
        };
        self.items.ids.insert(item.clone(), id);
        id
    }

    /// Forgets item `id`'s record and memberships; returns it.
    pub(super) fn take_rec(&mut self, id: u32) -> Option<Rec> {
        let rec = self.items.recs.get_mut(id as usize)?.take()?;
        let (ns, profiles, account): (Option<&Sym>, &[Sym], Option<&Sym>) = match &rec {
            Rec::Endpoint(e) => {
                self.items.endpoints -= 1;
                (
                    e.namespace.as_ref(),
                    &e.profiles,
                    e.account_profile.as_ref(),
                )
            }
            Rec::NetSet(n) => {
                self.items.netsets -= 1;
                (n.namespace.as_ref(), &[], None)
            }
        };
        if let Some(ns) = ns
            && let Some(m) = self.items.by_namespace.get_mut(ns)
        {
            m.remove(id);
            if m.is_empty() {
                self.items.by_namespace.remove(ns);
            }
        }
        for p in profiles.iter().chain(account) {
            if let Some(m) = self.items.by_profile.get_mut(p) {
                m.remove(id);
                if m.is_empty() {
                    self.items.by_profile.remove(p);
                }
            }
        }
        Some(rec)
    }

    pub(super) fn put_rec(&mut self, id: u32, rec: Rec) {
        let (ns, profiles, account): (Option<&Sym>, &[Sym], Option<&Sym>) = match &rec {
            Rec::Endpoint(e) => {
                self.items.endpoints += 1;
                (
                    e.namespace.as_ref(),
                    &e.profiles,
                    e.account_profile.as_ref(),
                )
            }
            Rec::NetSet(n) => {
                self.items.netsets += 1;
                (n.namespace.as_ref(), &[], None)
            }
        };
        if let Some(ns) = ns {
            self.items
                .by_namespace
                .entry(ns.clone())
                .or_default()
                .insert(id);
        }
        for p in profiles.iter().chain(account) {
            self.items
                .by_profile
                .entry(p.clone())
                .or_default()
                .insert(id);
        }
        self.items.recs[id as usize] = Some(rec);
    }

    pub(super) fn remove_item(&mut self, item: Item) {
        let Some(id) = self.items.ids.remove(&item) else {
            return;
        };
        self.contribute(id, None, false);
        let mut changes = std::mem::take(&mut self.changes);
        self.sets.index.remove_item(id, &mut changes);
        changes.clear();
        self.changes = changes;
        self.take_rec(id);
        self.drop_local(id, &item);
        self.items.free.push(id);
    }

    pub(super) fn set_endpoint(&mut self, item: Item, input: Option<EndpointInput>) {
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
            self.items.recs.get(id as usize),
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
        self.sets.index.update_item(id, labels, &mut changes);
        if same_members {
            let left: Vec<u32> = changes.iter().filter(|c| !c.2).map(|c| c.0).collect();
            let joined: Vec<u32> = changes.iter().filter(|c| c.2).map(|c| c.0).collect();
            self.contribute(id, Some(&left), false);
            self.contribute(id, Some(&joined), true);
        }
        changes.clear();
        if let Some(labels) = policy_labels {
            self.policies.index.update_item(id, labels, &mut changes);
            changes.clear();
            match self.policies.locals.get_mut(&id) {
                Some(l) => l.input = e,
                None => {
                    self.policies.locals.insert(
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
            self.policies.dirty_locals.insert(item);
        } else {
            self.drop_local(id, &item);
        }
        self.changes = changes;
        if !same_members {
            self.contribute(id, None, true);
        }
    }

    pub(super) fn set_netset(&mut self, item: Item, input: Option<NetSetInput>) {
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
        self.sets.index.update_item(id, labels, &mut changes);
        changes.clear();
        self.changes = changes;
        self.contribute(id, None, true);
    }
}
