//! Policies and profiles: the policy index over local endpoints, which
//! policies and profiles each local endpoint uses (kept as use counts, so
//! that only active ones are rendered), tier ordering, and rendering.

use std::collections::{BTreeMap, BTreeSet};

use manul_dataplane_api as dp;
use manul_model::selector::Expr;
use manul_model::v3::{Action, PolicyType};
use manul_model::{ResourceKey, convert};

use super::inputs::{
    self, EndpointInput, Item, PolicyInput, account_profile, by_order, namespace_selector_labels,
};
use super::labelindex::{FxHashMap, LabelIndex, LabelMap, MatchChange};
use super::render::{self, NAMESPACE_LABEL, SetDef};
use super::{CalcGraph, DEFAULT_TIER_ORDER};

/// A local endpoint: its whole input, and what it was last counted as
/// using.
#[derive(Debug)]
pub(super) struct Local {
    pub(super) item: Item,
    pub(super) input: EndpointInput,
    pub(super) matched: BTreeSet<dp::PolicyId>,
    pub(super) profiles: Vec<String>,
}

/// The policies state of the graph.
#[derive(Debug, Default)]
pub(super) struct Policies {
    pub(super) inputs: BTreeMap<dp::PolicyId, PolicyInput>,
    pub(super) keys: BTreeMap<ResourceKey, dp::PolicyId>,
    /// Policy ids in the policy index.
    pub(super) slots: FxHashMap<dp::PolicyId, u32>,
    pub(super) by_slot: Vec<Option<dp::PolicyId>>,
    pub(super) free_slots: Vec<u32>,
    /// Policy selectors over local endpoints.
    pub(super) index: LabelIndex,
    pub(super) locals: FxHashMap<u32, Local>,
    /// How many local endpoints each policy and profile applies to.
    pub(super) users: FxHashMap<dp::PolicyId, usize>,
    pub(super) profile_users: FxHashMap<String, usize>,
    /// Rendered active policies and profiles, with the sets they use.
    pub(super) rendered: BTreeMap<dp::PolicyId, (dp::Policy, Vec<SetDef>)>,
    pub(super) rendered_profiles: BTreeMap<String, (dp::Policy, Vec<SetDef>)>,
    pub(super) dirty: BTreeSet<dp::PolicyId>,
    pub(super) dirty_profiles: BTreeSet<String>,
    pub(super) dirty_locals: BTreeSet<Item>,
    /// Local endpoints whose policies are the same but whose tiers must
    /// be built again (a policy they use changed its order or types).
    pub(super) retiered_locals: BTreeSet<Item>,
    pub(super) all_locals_dirty: bool,
}

impl CalcGraph {
    /// The selector a policy is indexed by over local endpoints: its own,
    /// limited to its namespace for a namespaced policy. Matching it is
    /// necessary for the policy to apply; [`Self::policy_applies`] checks
    /// the rest.
    pub(super) fn policy_expr(p: &PolicyInput) -> Expr {
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

    pub(super) fn set_policy(&mut self, key: ResourceKey, input: Option<PolicyInput>) {
        // A policy can move tiers: its id changes, so remove the old one.
        let old = self.policies.keys.remove(&key);
        if let Some(old) = &old
            && input.as_ref().is_none_or(|p| p.id != *old)
        {
            self.policies.inputs.remove(old);
            self.policies.dirty.insert(old.clone());
            if let Some(slot) = self.policies.slots.remove(old) {
                let mut changes = std::mem::take(&mut self.changes);
                self.policies.index.remove_selector(slot, &mut changes);
                self.locals_dirty_from(&mut changes);
                self.changes = changes;
                self.policies.by_slot[slot as usize] = None;
                self.policies.free_slots.push(slot);
            }
        }
        let Some(p) = input else {
            return;
        };
        let id = p.id.clone();
        let slot = match self.policies.slots.get(&id) {
            Some(s) => *s,
            None => {
                let s = match self.policies.free_slots.pop() {
                    Some(s) => {
                        self.policies.by_slot[s as usize] = Some(id.clone());
                        s
                    }
                    None => {
                        self.policies.by_slot.push(Some(id.clone()));
                        (self.policies.by_slot.len() - 1) as u32
                    }
                };
                self.policies.slots.insert(id.clone(), s);
                s
            }
        };
        // The local endpoints it applies to name it by id: a change to its
        // rules alone changes none of them (its rendering changes); a new
        // order or types reorders their tiers; anything else may change
        // which of them it applies to.
        let moved = match self.policies.inputs.get(&id) {
            Some(old) => moved(old, &p),
            None => Moved::Matches,
        };
        if moved != Moved::Nothing {
            let before: Vec<u32> = self.policies.index.matching(slot).collect();
            for i in before {
                match moved {
                    Moved::Tiers => self.mark_local_retiered(i),
                    _ => self.mark_local_dirty(i),
                }
            }
        }
        // A changed selector marks the local endpoints whose match changed
        // (an unchanged one leaves the index as it is).
        let expr = Self::policy_expr(&p);
        let mut changes = std::mem::take(&mut self.changes);
        self.policies
            .index
            .update_selector(slot, &expr, &mut self.syms, &mut changes);
        self.locals_dirty_from(&mut changes);
        self.changes = changes;
        self.policies.keys.insert(key, id.clone());
        self.policies.inputs.insert(id.clone(), p);
        self.policies.dirty.insert(id);
    }

    pub(super) fn locals_dirty_from(&mut self, changes: &mut Vec<MatchChange>) {
        for (_, item, _) in changes.drain(..) {
            self.mark_local_dirty(item);
        }
    }

    pub(super) fn mark_local_dirty(&mut self, id: u32) {
        if let Some(local) = self.policies.locals.get(&id) {
            self.policies.dirty_locals.insert(local.item.clone());
        }
    }

    /// Local endpoint `id` uses the same policies, in a new order.
    fn mark_local_retiered(&mut self, id: u32) {
        if let Some(local) = self.policies.locals.get(&id) {
            self.policies.retiered_locals.insert(local.item.clone());
        }
    }

    /// Item `id` is no longer a local endpoint.
    pub(super) fn drop_local(&mut self, id: u32, item: &Item) {
        let Some(local) = self.policies.locals.remove(&id) else {
            return;
        };
        let mut changes = std::mem::take(&mut self.changes);
        self.policies.index.remove_item(id, &mut changes);
        changes.clear();
        self.changes = changes;
        for p in local.matched {
            self.unuse_policy(p);
        }
        for p in local.profiles {
            self.unuse_profile(p);
        }
        self.policies.dirty_locals.insert(item.clone());
    }

    pub(super) fn unuse_policy(&mut self, p: dp::PolicyId) {
        if let Some(n) = self.policies.users.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.policies.users.remove(&p);
                self.policies.dirty.insert(p);
            }
        }
    }

    pub(super) fn use_policy(&mut self, p: dp::PolicyId) {
        let n = self.policies.users.entry(p.clone()).or_default();
        *n += 1;
        if *n == 1 {
            self.policies.dirty.insert(p);
        }
    }

    pub(super) fn unuse_profile(&mut self, p: String) {
        if let Some(n) = self.policies.profile_users.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.policies.profile_users.remove(&p);
                self.policies.dirty_profiles.insert(p);
            }
        }
    }

    pub(super) fn use_profile(&mut self, p: String) {
        let n = self.policies.profile_users.entry(p.clone()).or_default();
        *n += 1;
        if *n == 1 {
            self.policies.dirty_profiles.insert(p);
        }
    }

    /// Whether policy `p`, whose indexed selector matches local endpoint
    /// `e`, applies to it: the checks that are not about its labels.
    pub(super) fn policy_applies(&self, p: &PolicyInput, e: &EndpointInput) -> bool {
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
    pub(super) fn account_labels(&self, ns: &str, sa: &str) -> LabelMap {
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
    pub(super) fn recompute_local(&mut self, id: u32) {
        let Some(local) = self.policies.locals.remove(&id) else {
            return;
        };
        let mut matched = BTreeSet::new();
        for slot in self.policies.index.selectors_of(id) {
            let Some(Some(pid)) = self.policies.by_slot.get(*slot as usize) else {
                continue;
            };
            if let Some(p) = self.policies.inputs.get(pid)
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
        self.policies.locals.insert(
            id,
            Local {
                item: local.item,
                input: local.input,
                matched,
                profiles,
            },
        );
    }

    pub(super) fn tier_order(&self, tier: &str) -> Option<f64> {
        let is_default = tier == manul_model::v3::DEFAULT_TIER;
        match self.tiers.get(tier).and_then(|t| t.order) {
            Some(order) => Some(order),
            // The default tier keeps Calico's order unless a Tier sets one.
            None if is_default => Some(DEFAULT_TIER_ORDER),
            None => None,
        }
    }

    pub(super) fn tier_default(&self, tier: &str) -> dp::Action {
        match self.tiers.get(tier).and_then(|t| t.default_action) {
            Some(Action::Pass) => dp::Action::Pass,
            _ => dp::Action::Deny,
        }
    }

    /// The ordered tiers of policies for a local endpoint, per kind of
    /// tier list (normal, pre-DNAT, untracked, forward).
    pub(super) fn tiers_for(
        &self,
        matched: &BTreeSet<dp::PolicyId>,
        filter: impl Fn(&PolicyInput) -> bool,
    ) -> Vec<dp::TierPolicies> {
        let mut by_tier: BTreeMap<String, Vec<&PolicyInput>> = BTreeMap::new();
        for id in matched {
            if let Some(p) = self.policies.inputs.get(id)
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

    pub(super) fn render_policy(&self, id: &dp::PolicyId) -> Option<(dp::Policy, Vec<SetDef>)> {
        let p = self.policies.inputs.get(id)?;
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

    pub(super) fn render_profile(&self, id: &str) -> Option<(dp::Policy, Vec<SetDef>)> {
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

    /// Recomputes what the local endpoints this batch touched use; returns
    /// them, and those whose tiers alone must be built again, each with
    /// its id while it is still a local endpoint.
    pub(super) fn recompute_dirty_locals(&mut self) -> Vec<(Item, Option<u32>)> {
        if std::mem::take(&mut self.policies.all_locals_dirty) {
            let locals: Vec<Item> = self
                .policies
                .locals
                .values()
                .map(|l| l.item.clone())
                .collect();
            self.policies.dirty_locals.extend(locals);
        }
        // Local endpoints: what they use now.
        let dirty_locals = std::mem::take(&mut self.policies.dirty_locals);
        let retiered: Vec<Item> = std::mem::take(&mut self.policies.retiered_locals)
            .into_iter()
            .filter(|item| !dirty_locals.contains(item))
            .collect();
        let mut live_locals = Vec::new();
        for item in dirty_locals {
            match self.items.ids.get(&item) {
                Some(id) if self.policies.locals.contains_key(id) => {
                    let id = *id;
                    self.recompute_local(id);
                    live_locals.push((item, Some(id)));
                }
                _ => live_locals.push((item, None)),
            }
        }
        // Those that use the same policies only emit their tiers again.
        for item in retiered {
            if let Some(id) = self.items.ids.get(&item)
                && self.policies.locals.contains_key(id)
            {
                let id = *id;
                live_locals.push((item, Some(id)));
            }
        }
        live_locals
    }

    /// Renders the policies and profiles whose use or definition changed,
    /// retaining the sets they use now and releasing those they used;
    /// returns which changed.
    pub(super) fn rerender(&mut self) -> (BTreeSet<dp::PolicyId>, BTreeSet<String>) {
        let changed_policies = std::mem::take(&mut self.policies.dirty);
        let changed_profiles = std::mem::take(&mut self.policies.dirty_profiles);
        for id in &changed_policies {
            let active = self.policies.users.contains_key(id);
            let new = if active { self.render_policy(id) } else { None };
            if let Some((_, sets)) = &new {
                self.retain_sets(sets);
            }
            if let Some((_, old_sets)) = self.policies.rendered.remove(id) {
                self.release_sets(&old_sets);
            }
            if let Some(new) = new {
                self.policies.rendered.insert(id.clone(), new);
            }
        }
        for id in &changed_profiles {
            let active = self.policies.profile_users.contains_key(id);
            let new = if active {
                self.render_profile(id)
            } else {
                None
            };
            if let Some((_, sets)) = &new {
                self.retain_sets(sets);
            }
            if let Some((_, old_sets)) = self.policies.rendered_profiles.remove(id) {
                self.release_sets(&old_sets);
            }
            if let Some(new) = new {
                self.policies.rendered_profiles.insert(id.clone(), new);
            }
        }
        (changed_policies, changed_profiles)
    }
}

/// What a policy's change changes for the local endpoints its selector
/// matched before (the index reports those a new selector adds or drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    /// Only its rules: endpoints name it by id, only its rendering changes.
    Nothing,
    /// Its order or types: the same endpoints use it, their tiers change.
    Tiers,
    /// Which endpoints it applies to may change (namespace, namespace or
    /// service-account selector, the host-policy flags).
    Matches,
}

/// How policy `a` changing into `b` (same id) moves it. Destructured field
/// by field, so a new field must be placed here.
fn moved(a: &PolicyInput, b: &PolicyInput) -> Moved {
    let PolicyInput {
        id,
        namespace,
        order,
        selector: _,
        namespace_selector,
        service_account_selector,
        types,
        ingress: _,
        egress: _,
        pre_dnat,
        do_not_track,
        apply_on_forward,
    } = a;
    if *id != b.id
        || *namespace != b.namespace
        || *namespace_selector != b.namespace_selector
        || *service_account_selector != b.service_account_selector
        || *pre_dnat != b.pre_dnat
        || *do_not_track != b.do_not_track
        || *apply_on_forward != b.apply_on_forward
    {
        Moved::Matches
    } else if *order != b.order || *types != b.types {
        Moved::Tiers
    } else {
        Moved::Nothing
    }
}
