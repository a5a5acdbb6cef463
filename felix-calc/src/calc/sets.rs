//! The active IP sets: which exist (a set lives while a rendered policy or
//! profile uses it), their members counted per contributing item, and the
//! set operations of a batch (creations and deltas first, removals last).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use manul_dataplane_api as dp;

use super::CalcGraph;
use super::items::Rec;
use super::labelindex::{FxHashMap, FxHashSet, LabelIndex};
use super::render::SetDef;
use super::services;

/// One active IP set.
#[derive(Debug)]
pub(super) struct SetState {
    pub(super) id: dp::IpSetId,
    pub(super) def: SetDef,
    /// Rendered policies and profiles using it.
    pub(super) refs: usize,
    /// Current members, counted by contributing item.
    pub(super) members: FxHashMap<dp::IpSetMember, u32>,
    /// Whether the driver has it.
    pub(super) emitted: bool,
    /// Members whose count changed in this batch, with whether they were
    /// members at the last flush.
    pub(super) touched: FxHashMap<dp::IpSetMember, bool>,
}

/// The sets state of the graph.
#[derive(Debug, Default)]
pub(super) struct Sets {
    /// Set selectors over every endpoint and network set.
    pub(super) index: LabelIndex,
    pub(super) all: Vec<Option<SetState>>,
    pub(super) slots: FxHashMap<dp::IpSetId, u32>,
    pub(super) free: Vec<u32>,
    /// Sets created or touched in this batch.
    pub(super) dirty: FxHashSet<u32>,
    /// Sets whose use count went to zero in this batch.
    pub(super) released: Vec<u32>,
    /// Slots of the active sets made of each Service's endpoints.
    pub(super) by_service: BTreeMap<(String, String), BTreeSet<u32>>,
}

impl CalcGraph {
    /// The members item `id` contributes to the set `def`.
    pub(super) fn contribution(rec: &Rec, def: &SetDef, out: &mut Vec<dp::IpSetMember>) {
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
    pub(super) fn contribute(&mut self, id: u32, sets: Option<&[u32]>, sign: bool) {
        let Some(Some(rec)) = self.items.recs.get(id as usize) else {
            return;
        };
        let sets = sets.unwrap_or_else(|| self.sets.index.selectors_of(id));
        let mut members = Vec::new();
        for &slot in sets {
            let Some(Some(set)) = self.sets.all.get_mut(slot as usize) else {
                continue;
            };
            members.clear();
            Self::contribution(rec, &set.def, &mut members);
            if members.is_empty() {
                continue;
            }
            count(set, members.drain(..), sign);
            self.sets.dirty.insert(slot);
        }
    }

    /// The members of a set of Service `key`'s endpoints: every address of
    /// its EndpointSlices, or with `ports`, each address with each port of
    /// its slice.
    pub(super) fn service_members(
        &self,
        key: &(String, String),
        ports: bool,
    ) -> BTreeSet<dp::IpSetMember> {
        services::policy_members(self.service_slices(key), ports)
    }

    /// Brings Service `key`'s sets to what its slices say now.
    pub(super) fn refresh_service_sets(&mut self, key: &(String, String)) {
        let slots: Vec<u32> = self
            .sets
            .by_service
            .get(key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for slot in slots {
            let Some(Some(SetState {
                def: SetDef::Service { ports, .. },
                ..
            })) = self.sets.all.get(slot as usize)
            else {
                continue;
            };
            let wanted = self.service_members(key, *ports);
            let Some(Some(set)) = self.sets.all.get_mut(slot as usize) else {
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
            self.sets.dirty.insert(slot);
        }
    }

    pub(super) fn retain_sets(&mut self, sets: &[SetDef]) {
        for def in sets {
            let id = def.id();
            if let Some(slot) = self.sets.slots.get(&id)
                && let Some(Some(s)) = self.sets.all.get_mut(*slot as usize)
            {
                s.refs += 1;
                continue;
            }
            let slot = match self.sets.free.pop() {
                Some(s) => s,
                None => {
                    self.sets.all.push(None);
                    (self.sets.all.len() - 1) as u32
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
                    self.sets.index.update_selector(
                        slot,
                        selector.expr(),
                        &mut self.syms,
                        &mut changes,
                    );
                    members.reserve(changes.len());
                    for (_, item, joined) in changes.drain(..) {
                        if joined && let Some(Some(rec)) = self.items.recs.get(item as usize) {
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
                    self.sets.by_service.entry(key).or_default().insert(slot);
                }
            }
            // A new set is sent whole: no need to track touched members.
            set.members.reserve(members.len());
            for m in members {
                *set.members.entry(m).or_default() += 1;
            }
            self.sets.all[slot as usize] = Some(set);
            self.sets.slots.insert(id, slot);
            self.sets.dirty.insert(slot);
        }
    }

    pub(super) fn release_sets(&mut self, sets: &[SetDef]) {
        for def in sets {
            let id = def.id();
            let Some(slot) = self.sets.slots.get(&id).copied() else {
                continue;
            };
            if let Some(Some(s)) = self.sets.all.get_mut(slot as usize) {
                s.refs = s.refs.saturating_sub(1);
                if s.refs == 0 {
                    self.sets.released.push(slot);
                }
            }
        }
    }

    /// Brings the sets of the Services whose inputs changed to what their
    /// EndpointSlices say now.
    pub(super) fn refresh_dirty_service_sets(&mut self) {
        // Service sets follow their Services' EndpointSlices.
        let refresh: Vec<(String, String)> = self
            .dirty_services
            .iter()
            .filter(|k| self.sets.by_service.contains_key(*k))
            .cloned()
            .collect();
        for key in refresh {
            self.refresh_service_sets(&key);
        }
    }

    /// Appends the creations and deltas of the sets this batch touched.
    pub(super) fn emit_sets(&mut self, ops: &mut Vec<dp::Operation>) {
        let mut dirty_sets: Vec<(dp::IpSetId, u32)> = self
            .sets
            .dirty
            .drain()
            .filter_map(|slot| match self.sets.all.get(slot as usize) {
                Some(Some(s)) => Some((s.id.clone(), slot)),
                _ => None,
            })
            .collect();
        dirty_sets.sort();
        for (id, slot) in dirty_sets {
            let Some(Some(set)) = self.sets.all.get_mut(slot as usize) else {
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
    }

    /// Forgets the sets no rendered policy or profile uses any more and
    /// appends the removals of those the driver has.
    pub(super) fn release_unused_sets(&mut self, ops: &mut Vec<dp::Operation>) {
        let mut released: Vec<(dp::IpSetId, u32)> = Vec::new();
        for slot in std::mem::take(&mut self.sets.released) {
            if let Some(Some(s)) = self.sets.all.get(slot as usize)
                && s.refs == 0
            {
                released.push((s.id.clone(), slot));
            }
        }
        released.sort();
        released.dedup();
        for (id, slot) in released {
            match self.sets.all.get(slot as usize) {
                Some(Some(SetState {
                    def:
                        SetDef::Service {
                            namespace, name, ..
                        },
                    ..
                })) => {
                    let key = (namespace.clone(), name.clone());
                    if let Some(slots) = self.sets.by_service.get_mut(&key) {
                        slots.remove(&slot);
                        if slots.is_empty() {
                            self.sets.by_service.remove(&key);
                        }
                    }
                }
                _ => {
                    let mut changes = std::mem::take(&mut self.changes);
                    self.sets.index.remove_selector(slot, &mut changes);
                    changes.clear();
                    self.changes = changes;
                }
            }
            self.sets.slots.remove(&id);
            self.sets.free.push(slot);
            if let Some(s) = self.sets.all.get_mut(slot as usize).and_then(Option::take)
                && s.emitted
            {
                ops.push(dp::Operation::IpSetRemove { id });
            }
        }
    }
}

/// Adds (`sign` true) or removes one count of each member, remembering
/// whether a member was present before the batch touched it.
pub(super) fn count(
    set: &mut SetState,
    members: impl Iterator<Item = dp::IpSetMember>,
    sign: bool,
) {
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
