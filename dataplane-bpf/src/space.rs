//! Address spaces: the prefixes a table's address conditions name, each
//! with a class, kept up to date incrementally. No I/O.
//!
//! A table's address lookup is split in two: the space's trie maps an
//! address to the class of its longest inserted prefix (`manul_addr`), and
//! the table maps the class to its rule bitmap (`manul_class`). A prefix's
//! class is its *signature*: the items (networks and IP sets) of the
//! space that contain it. Every prefix of a set usually has the same
//! signature, so a table holds a handful of class bitmaps, not one bitmap
//! per member, and:
//!
//! - a set-member change writes or deletes that member's entry (and
//!   re-classes the prefixes inside it, if any): a few map writes;
//! - a rule change writes a new table version (its class bitmaps, ports,
//!   protocols and rules) in the same space, and flips the endpoints.
//!
//! **Why every step is safe for the packet path.** The space's items are
//! the union of the items of the tables that use it (the current version,
//! and during a change also the next one). A table only reads the items it
//! names, and a prefix's signature restricted to those items is the same
//! whichever other items are in the space: an address lands on its longest
//! inserted prefix, every item the table names is inserted, so an item
//! that contains the address contains that prefix. Hence each single entry
//! write or delete, in any order, leaves every live table judging each
//! address by the right set membership, provided the class bitmaps an
//! entry points at exist first: [`Delta`] lists new classes (written for
//! every live table before the entries) and dropped ones (deleted after).
//! A set-member change flips each affected address on its own, from the
//! old membership to the new.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use manul_dataplane_api::{DesiredState, IpSetMember};

use crate::bitmap::Bitmap;
use crate::compile::{AddrItem, AddrRules, IpEntry};

/// A class of prefixes within one side of a space.
pub type ClassId = u32;

/// The kernel writes one settling of a space needs, in this order: a
/// bitmap for each new class in every live table of the space, the entry
/// writes and deletes (any order), then deleting the dropped classes'
/// bitmaps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub new_classes: Vec<(u8, ClassId)>,
    /// (side, entry, class, whether the key is new).
    pub upserts: Vec<(u8, IpEntry, ClassId, bool)>,
    pub deletes: Vec<(u8, IpEntry)>,
    pub dropped_classes: Vec<(u8, ClassId)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.new_classes.is_empty()
            && self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.dropped_classes.is_empty()
    }

    /// How many `manul_addr` keys it adds, net.
    pub fn added_entries(&self) -> isize {
        let added = self.upserts.iter().filter(|u| u.3).count();
        added as isize - self.deletes.len() as isize
    }
}

#[derive(Debug, Default, Clone)]
struct Side {
    /// Items the space's tables name, with how many tables name each.
    items: HashMap<AddrItem, u32>,
    /// The net members of each set item, as installed.
    members: HashMap<String, BTreeSet<IpNet>>,
    /// Every prefix some item has, with the items that have it.
    owners: BTreeMap<IpNet, BTreeSet<AddrItem>>,
    /// How many owned prefixes have each length, per IP version (index 0
    /// IPv4, 1 IPv6): the ancestor walk only tries these lengths.
    lens: [BTreeMap<u8, u32>; 2],
    /// What the kernel holds (or will once the last delta is written).
    installed: BTreeMap<IpEntry, ClassId>,
    /// Signature -> (class, entries in that class).
    classes: HashMap<Vec<AddrItem>, (ClassId, u32)>,
    sigs: BTreeMap<ClassId, Vec<AddrItem>>,
    free: Vec<ClassId>,
    next: ClassId,
    /// Prefixes whose ownership changed since the last settling.
    dirty: BTreeSet<IpNet>,
}

fn version(net: &IpNet) -> usize {
    usize::from(matches!(net, IpNet::V6(_)))
}

fn net_members(state: &DesiredState, id: &str) -> BTreeSet<IpNet> {
    state
        .ip_sets
        .get(id)
        .map(|s| {
            s.members
                .iter()
                .filter_map(|m| match m {
                    IpSetMember::Net(n) => Some(n.trunc()),
                    IpSetMember::NamedPort { .. } => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Side {
    fn add_item(&mut self, item: &AddrItem, state: &DesiredState) {
        let n = self.items.entry(item.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            return;
        }
        match item {
            AddrItem::Net(net) => self.own(*net, item),
            AddrItem::Set(id) => {
                let members = net_members(state, id);
                for m in &members {
                    self.own(*m, item);
                }
                self.members.insert(id.clone(), members);
            }
        }
    }

    fn remove_item(&mut self, item: &AddrItem) {
        let Some(n) = self.items.get_mut(item) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.items.remove(item);
        match item {
            AddrItem::Net(net) => self.disown(*net, item),
            AddrItem::Set(id) => {
                for m in self.members.remove(id).unwrap_or_default() {
                    self.disown(m, item);
                }
            }
        }
    }

    fn sync_set(&mut self, id: &str, state: &DesiredState) {
        let Some(old) = self.members.get(id) else {
            return;
        };
        let new = net_members(state, id);
        if *old == new {
            return;
        }
        let item = AddrItem::Set(id.to_owned());
        let old = self.members.insert(id.to_owned(), new).unwrap_or_default();
        let new = &self.members[id];
        let gone: Vec<IpNet> = old.difference(new).copied().collect();
        let added: Vec<IpNet> = new.difference(&old).copied().collect();
        for m in gone {
            self.disown(m, &item);
        }
        for m in added {
            self.own(m, &item);
        }
    }

    fn own(&mut self, prefix: IpNet, item: &AddrItem) {
        let owners = self.owners.entry(prefix).or_default();
        if owners.is_empty() {
            *self.lens[version(&prefix)]
                .entry(prefix.prefix_len())
                .or_insert(0) += 1;
        }
        owners.insert(item.clone());
        self.dirty.insert(prefix);
    }

    fn disown(&mut self, prefix: IpNet, item: &AddrItem) {
        if let Some(owners) = self.owners.get_mut(&prefix) {
            owners.remove(item);
            if owners.is_empty() {
                self.owners.remove(&prefix);
                let lens = &mut self.lens[version(&prefix)];
                if let Some(n) = lens.get_mut(&prefix.prefix_len()) {
                    *n -= 1;
                    if *n == 0 {
                        lens.remove(&prefix.prefix_len());
                    }
                }
            }
        }
        self.dirty.insert(prefix);
    }

    /// The items that contain `prefix`: those of its owned ancestors and
    /// itself.
    fn signature(&self, prefix: &IpNet) -> Vec<AddrItem> {
        let mut sig: BTreeSet<&AddrItem> = BTreeSet::new();
        for &len in self.lens[version(prefix)].keys() {
            if len > prefix.prefix_len() {
                break;
            }
            let Ok(a) = IpNet::new(prefix.network(), len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(owners) = self.owners.get(&a) {
                sig.extend(owners.iter());
            }
        }
        sig.into_iter().cloned().collect()
    }

    fn class_of(&mut self, sig: Vec<AddrItem>, created: &mut Vec<ClassId>) -> ClassId {
        if let Some((id, _)) = self.classes.get(&sig) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.classes.insert(sig.clone(), (id, 0));
        self.sigs.insert(id, sig);
        created.push(id);
        id
    }

    fn count(&mut self, class: ClassId, by: i32) {
        if let Some(sig) = self.sigs.get(&class)
            && let Some((_, n)) = self.classes.get_mut(sig)
        {
            *n = n.saturating_add_signed(by);
        }
    }

    fn set_entry(&mut self, side: u8, entry: IpEntry, class: ClassId, delta: &mut Delta) {
        let old = self.installed.insert(entry, class);
        if old == Some(class) {
            return;
        }
        self.count(class, 1);
        if let Some(o) = old {
            self.count(o, -1);
        }
        delta.upserts.push((side, entry, class, old.is_none()));
    }

    fn settle(&mut self, side: u8, delta: &mut Delta) {
        let mut created = Vec::new();
        let before: BTreeSet<ClassId> = self.sigs.keys().copied().collect();
        if !self.installed.contains_key(&IpEntry::Root) {
            let c = self.class_of(Vec::new(), &mut created);
            self.set_entry(side, IpEntry::Root, c, delta);
        }
        // The changed prefixes and every installed prefix inside them.
        let dirty = std::mem::take(&mut self.dirty);
        let mut affected: BTreeSet<IpNet> = BTreeSet::new();
        for p in &dirty {
            affected.insert(*p);
            let last = IpNet::new(p.broadcast(), p.max_prefix_len()).unwrap_or(*p);
            for e in self
                .installed
                .range(IpEntry::Net(*p)..=IpEntry::Net(last))
                .map(|(e, _)| *e)
            {
                if let IpEntry::Net(q) = e
                    && p.contains(&q)
                {
                    affected.insert(q);
                }
            }
        }
        for p in affected {
            if self.owners.contains_key(&p) {
                let sig = self.signature(&p);
                let c = self.class_of(sig, &mut created);
                self.set_entry(side, IpEntry::Net(p), c, delta);
            } else if let Some(old) = self.installed.remove(&IpEntry::Net(p)) {
                self.count(old, -1);
                delta.deletes.push((side, IpEntry::Net(p)));
            }
        }
        // Classes no entry uses any more (their ids are reused from the
        // next settling on, once their bitmaps are gone).
        let unused: Vec<ClassId> = self
            .classes
            .values()
            .filter(|(_, n)| *n == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            if let Some(sig) = self.sigs.remove(&id) {
                self.classes.remove(&sig);
            }
            if before.contains(&id) {
                delta.dropped_classes.push((side, id));
            }
            self.free.push(id);
        }
        delta.new_classes.extend(
            created
                .into_iter()
                .filter(|c| self.sigs.contains_key(c))
                .map(|c| (side, c)),
        );
    }
}

/// One table lineage's address space: both sides.
#[derive(Debug, Default, Clone)]
pub struct Space {
    sides: [Side; 2],
}

impl Space {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a table's items (the table must stay until
    /// [`Space::remove_table`] with the same rules).
    pub fn add_table(&mut self, rules: &[AddrRules; 2], state: &DesiredState) {
        for (side, r) in self.sides.iter_mut().zip(rules) {
            for item in r.items() {
                side.add_item(&item, state);
            }
        }
    }

    pub fn remove_table(&mut self, rules: &[AddrRules; 2]) {
        for (side, r) in self.sides.iter_mut().zip(rules) {
            for item in r.items() {
                side.remove_item(&item);
            }
        }
    }

    /// Whether a table of the space names set `id` in an address
    /// condition.
    pub fn names_set(&self, id: &str) -> bool {
        self.sides.iter().any(|s| s.members.contains_key(id))
    }

    /// Brings the members of set `id` to the state's, if the space names
    /// it.
    pub fn sync_set(&mut self, id: &str, state: &DesiredState) {
        for side in &mut self.sides {
            side.sync_set(id, state);
        }
    }

    /// Re-classes every prefix whose items changed since the last
    /// settling; returns the kernel writes.
    pub fn settle(&mut self) -> Delta {
        let mut delta = Delta::default();
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.settle(i as u8, &mut delta);
        }
        delta
    }

    /// Every class with its signature.
    pub fn classes(&self) -> impl Iterator<Item = (u8, ClassId, &[AddrItem])> {
        self.sides.iter().enumerate().flat_map(|(i, s)| {
            s.sigs
                .iter()
                .map(move |(c, sig)| (i as u8, *c, sig.as_slice()))
        })
    }

    pub fn sig(&self, side: u8, class: ClassId) -> Option<&[AddrItem]> {
        self.sides
            .get(usize::from(side))?
            .sigs
            .get(&class)
            .map(Vec::as_slice)
    }

    /// Every installed entry with its class.
    pub fn entries(&self) -> impl Iterator<Item = (u8, IpEntry, ClassId)> + '_ {
        self.sides
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.installed.iter().map(move |(e, c)| (i as u8, *e, *c)))
    }

    pub fn entry_count(&self) -> usize {
        self.sides.iter().map(|s| s.installed.len()).sum()
    }

    pub fn class_count(&self) -> usize {
        self.sides.iter().map(|s| s.sigs.len()).sum()
    }

    /// A table's address lookups through this space, per side: every
    /// entry with the table's bitmap for its class (the userspace model's
    /// view of `manul_addr` and `manul_class`).
    pub fn view(&self, rules: &[AddrRules; 2]) -> [Vec<(IpEntry, Bitmap)>; 2] {
        let mut out: [Vec<(IpEntry, Bitmap)>; 2] = Default::default();
        for (i, (side, r)) in self.sides.iter().zip(rules).enumerate() {
            out[i] = side
                .installed
                .iter()
                .map(|(e, c)| {
                    let sig = side.sigs.get(c).map_or(&[][..], Vec::as_slice);
                    (*e, r.bitmap(sig))
                })
                .collect();
        }
        out
    }

    /// Each installed entry with its signature: two spaces with the same
    /// items and members have equal snapshots, whatever their history.
    pub fn snapshot(&self) -> [BTreeMap<IpEntry, Vec<AddrItem>>; 2] {
        let mut out: [BTreeMap<IpEntry, Vec<AddrItem>>; 2] = Default::default();
        for (i, side) in self.sides.iter().enumerate() {
            out[i] = side
                .installed
                .iter()
                .map(|(e, c)| (*e, side.sigs.get(c).cloned().unwrap_or_default()))
                .collect();
        }
        out
    }
}

#[cfg(test)]
mod tests;
