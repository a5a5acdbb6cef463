//! From what is programmed to the desired maps: the ordered [`Writes`]
//! and the [`Delta`] that brings the bookkeeping ([`Programmed`]) to what
//! the maps hold after them. The same code diffs the whole state ([`Scope::All`]:
//! a snapshot, `InSync`, a resync after a failed write) or only the keys
//! a service change touched ([`Scope::Touched`]), so an incremental plan
//! is the whole plan restricted to those keys.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use manul_dataplane_api::{Backend, MaglevTable};

use super::index::{Touched, first_list};
use super::recover::recover;
use super::{
    BackendAddr, Desired, Frontend, FrontendEntry, ListKey, Programmed, TableInfo, Wanted, Writes,
};

/// What a plan diffs.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every key: what is programmed and nobody wants is deleted (an
    /// earlier run's adopted frontends excepted).
    All,
    /// The keys of a change. Needs what is programmed to be this run's
    /// own plan with nothing adopted, so that every list and table
    /// belongs to the frontends of one service.
    Touched(&'a Touched),
}

type Iter<'b, T> = Box<dyn Iterator<Item = T> + 'b>;

impl<'a> Scope<'a> {
    fn desired_lists<'b>(self, d: &'b Desired) -> Iter<'b, (&'b ListKey, &'b Vec<BackendAddr>)>
    where
        'a: 'b,
    {
        match self {
            Scope::All => Box::new(d.lists.iter()),
            Scope::Touched(t) => Box::new(t.services.iter().flat_map(|s| {
                d.lists
                    .range(first_list(s)..)
                    .take_while(move |(k, _)| k.service == *s)
            })),
        }
    }

    fn desired_frontends<'b>(self, d: &'b Desired) -> Iter<'b, (&'b Frontend, &'b Wanted)>
    where
        'a: 'b,
    {
        match self {
            Scope::All => Box::new(d.frontends.iter()),
            Scope::Touched(t) => Box::new(
                t.frontends
                    .iter()
                    .filter_map(|f| d.frontends.get_key_value(f)),
            ),
        }
    }

    fn desired_addresses<'b>(self, d: &'b Desired) -> Iter<'b, (&'b IpAddr, &'b u32)>
    where
        'a: 'b,
    {
        match self {
            Scope::All => Box::new(d.addresses.iter()),
            Scope::Touched(t) => Box::new(
                t.frontends
                    .iter()
                    .filter(|f| f.is_address())
                    .filter_map(|f| d.addresses.get_key_value(&f.addr)),
            ),
        }
    }

    fn programmed_frontends<'b>(
        self,
        p: &'b Programmed,
    ) -> Iter<'b, (&'b Frontend, &'b FrontendEntry)>
    where
        'a: 'b,
    {
        match self {
            Scope::All => Box::new(p.frontends.iter()),
            Scope::Touched(t) => Box::new(
                t.frontends
                    .iter()
                    .filter_map(|f| p.frontends.get_key_value(f)),
            ),
        }
    }

    /// The programmed list ids in scope, in order.
    fn programmed_lists(self, p: &Programmed) -> BTreeSet<u32> {
        match self {
            Scope::All => p.lists.keys().copied().collect(),
            Scope::Touched(t) => t
                .services
                .iter()
                .flat_map(|s| {
                    p.ids
                        .range(first_list(s)..)
                        .take_while(move |(k, _)| k.service == *s)
                        .map(|(_, id)| *id)
                })
                .collect(),
        }
    }

    fn programmed_ids<'b>(self, p: &'b Programmed) -> Iter<'b, &'b ListKey>
    where
        'a: 'b,
    {
        match self {
            Scope::All => Box::new(p.ids.keys()),
            Scope::Touched(t) => Box::new(t.services.iter().flat_map(|s| {
                p.ids
                    .range(first_list(s)..)
                    .take_while(move |(k, _)| k.service == *s)
                    .map(|(k, _)| k)
            })),
        }
    }

    /// The programmed Maglev tables in scope, in order.
    fn programmed_tables(self, p: &Programmed) -> BTreeSet<u32> {
        match self {
            Scope::All => p.tables.keys().copied().collect(),
            Scope::Touched(t) => t
                .frontends
                .iter()
                .filter_map(|f| p.frontends.get(f))
                .map(|e| e.maglev)
                .filter(|id| p.tables.contains_key(id))
                .collect(),
        }
    }
}

/// What a plan changes in [`Programmed`]: each key set (`Some`) or
/// deleted (`None`); keys not named stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub frontends: BTreeMap<Frontend, Option<FrontendEntry>>,
    pub lists: BTreeMap<u32, Option<Vec<BackendAddr>>>,
    pub ids: BTreeMap<ListKey, Option<u32>>,
    pub tables: BTreeMap<u32, Option<TableInfo>>,
    /// The adopted frontends after the plan.
    pub adopted: BTreeSet<Frontend>,
    pub next_id: u32,
    pub next_table: u32,
}

impl Delta {
    fn list<'b>(&'b self, id: u32, p: &'b Programmed) -> Option<&'b Vec<BackendAddr>> {
        match self.lists.get(&id) {
            Some(l) => l.as_ref(),
            None => p.lists.get(&id),
        }
    }

    fn id(&self, key: &ListKey, p: &Programmed) -> Option<u32> {
        match self.ids.get(key) {
            Some(id) => *id,
            None => p.ids.get(key).copied(),
        }
    }
}

fn set<K: Ord, V>(map: &mut BTreeMap<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}

impl Programmed {
    /// Takes a plan's changes (once its writes are made).
    pub fn apply(&mut self, d: Delta) {
        set(&mut self.frontends, d.frontends);
        set(&mut self.lists, d.lists);
        set(&mut self.ids, d.ids);
        set(&mut self.tables, d.tables);
        self.adopted = d.adopted;
        self.next_id = d.next_id;
        self.next_table = d.next_table;
    }
}

/// The writes from `programmed` to `desired` over `scope`, and the
/// changes they make. `in_sync`: what an earlier run left and nobody
/// asked for again is removed. A desired list first takes over the
/// earlier run's list its frontends name ([`recover`]).
pub fn diff(
    desired: &Desired,
    programmed: &Programmed,
    scope: Scope<'_>,
    in_sync: bool,
) -> (Writes, Delta) {
    // An earlier run's lists that desired ones take over keep their ids.
    let recovered = recover(desired, programmed, in_sync);
    let programmed: &Programmed = &recovered;
    let mut w = Writes::default();
    let mut next = Delta {
        next_id: programmed.next_id.max(1),
        next_table: programmed.next_table.max(1),
        adopted: if in_sync {
            BTreeSet::new()
        } else {
            programmed.adopted.clone()
        },
        ..Delta::default()
    };
    for (key, list) in scope.desired_lists(desired) {
        let id = match programmed.ids.get(key) {
            Some(id) => *id,
            None => {
                let mut id = next.next_id;
                while programmed.lists.contains_key(&id) || next.lists.contains_key(&id) {
                    id = id.checked_add(1).unwrap_or(1);
                }
                next.next_id = id.checked_add(1).unwrap_or(1);
                id
            }
        };
        let old = programmed.lists.get(&id).map_or(&[][..], Vec::as_slice);
        for (i, b) in (0u32..).zip(list) {
            if old.get(i as usize) != Some(b) {
                w.backends.push((id, i, *b));
            }
        }
        for i in list.len()..old.len() {
            w.backend_deletes.push((id, i as u32));
        }
        let gone: BTreeSet<BackendAddr> =
            old.iter().filter(|b| !list.contains(b)).copied().collect();
        if !gone.is_empty() {
            w.gone.insert(id, gone);
        }
        next.ids.insert(key.clone(), Some(id));
        next.lists.insert(id, Some(list.clone()));
    }
    for (frontend, wanted) in scope.desired_frontends(desired) {
        // Every desired frontend's list is a desired list.
        let Some(id) = next.id(&wanted.list, programmed) else {
            continue;
        };
        let (maglev, maglev_size) = match desired.maglev.contains(frontend) {
            true => maglev_table(desired, programmed, &mut next, &mut w, id),
            false => (0, 0),
        };
        let entry = FrontendEntry {
            id,
            count: next.list(id, programmed).map_or(0, Vec::len) as u32,
            affinity_s: wanted.affinity_s,
            flags: wanted.flags,
            maglev,
            maglev_size,
        };
        if programmed.frontends.get(frontend) != Some(&entry) {
            w.frontends.push((*frontend, entry));
        }
        next.frontends.insert(*frontend, Some(entry));
        next.adopted.remove(frontend);
    }
    for (addr, flags) in scope.desired_addresses(desired) {
        let frontend = Frontend::address(*addr);
        let entry = FrontendEntry {
            id: 0,
            count: 0,
            affinity_s: 0,
            flags: *flags,
            maglev: 0,
            maglev_size: 0,
        };
        if programmed.frontends.get(&frontend) != Some(&entry) {
            w.frontends.push((frontend, entry));
        }
        next.frontends.insert(frontend, Some(entry));
        next.adopted.remove(&frontend);
    }
    for (frontend, entry) in scope.programmed_frontends(programmed) {
        if next.frontends.contains_key(frontend) {
            continue;
        }
        if next.adopted.contains(frontend) {
            next.frontends.insert(*frontend, Some(*entry));
            if let Some(list) = programmed.lists.get(&entry.id) {
                next.lists
                    .entry(entry.id)
                    .or_insert_with(|| Some(list.clone()));
            }
            if let Some(t) = programmed.tables.get(&entry.maglev) {
                next.tables
                    .entry(entry.maglev)
                    .or_insert_with(|| Some(t.clone()));
            }
        } else {
            w.frontend_deletes.push(*frontend);
            next.frontends.insert(*frontend, None);
        }
    }
    // Address entries first: a cluster IP refuses unknown ports only
    // while all of its ports are there.
    w.frontend_deletes.sort_by_key(|f| !f.is_address());
    for id in scope.programmed_lists(programmed) {
        if next.lists.contains_key(&id) {
            continue;
        }
        let old = programmed.lists.get(&id).map_or(&[][..], Vec::as_slice);
        w.backend_deletes
            .extend((0..old.len() as u32).map(|i| (id, i)));
        w.gone.insert(id, old.iter().copied().collect());
        next.lists.insert(id, None);
    }
    let stale: Vec<ListKey> = scope
        .programmed_ids(programmed)
        .filter(|k| !next.ids.contains_key(*k))
        .cloned()
        .collect();
    next.ids.extend(stale.into_iter().map(|k| (k, None)));
    for id in scope.programmed_tables(programmed) {
        if next.tables.contains_key(&id) {
            continue;
        }
        if let Some(t) = programmed.tables.get(&id) {
            w.table_deletes.push((id, t.size));
        }
        next.tables.insert(id, None);
    }
    (w, next)
}

/// The Maglev table of list `id` (as the plan leaves it), for a frontend
/// that picks by Maglev: the one already written for the same backends
/// and size, else a new one (written whole before any frontend names it).
/// (0, 0) for an empty list: its frontends refuse new connections.
fn maglev_table(
    desired: &Desired,
    programmed: &Programmed,
    next: &mut Delta,
    w: &mut Writes,
    id: u32,
) -> (u32, u32) {
    let Some(list) = next.list(id, programmed).filter(|l| !l.is_empty()) else {
        return (0, 0);
    };
    // The capacity is the driver's, fixed for the run: the same backends
    // give the same table.
    let built = Some((id, list.clone()));
    let same = |t: &TableInfo| t.built == built;
    let kept = next
        .tables
        .iter()
        .find(|(_, t)| t.as_ref().is_some_and(same));
    if let Some((tid, Some(t))) = kept {
        return (*tid, t.size);
    }
    if let Some((tid, t)) = programmed.tables.iter().find(|(_, t)| same(t)) {
        next.tables.insert(*tid, Some(t.clone()));
        return (*tid, t.size);
    }
    let slots = table_slots(list, desired.maglev_capacity);
    let mut tid = next.next_table;
    while programmed.tables.contains_key(&tid) || next.tables.contains_key(&tid) {
        tid = tid.checked_add(1).unwrap_or(1);
    }
    next.next_table = tid.checked_add(1).unwrap_or(1);
    let size = slots.len() as u32;
    let info = TableInfo {
        size,
        built,
        digest: None,
    };
    next.tables.insert(tid, Some(info));
    w.tables.push((tid, slots));
    (tid, size)
}

/// Each slot's backend in the Maglev table of `list` sized for at least
/// `capacity` backends (dataplane-api's table).
pub fn table_slots(list: &[BackendAddr], capacity: usize) -> Vec<BackendAddr> {
    let backends: Vec<Backend> = list
        .iter()
        .map(|b| Backend {
            ip: b.addr,
            port: b.port,
            local: false,
            ready: true,
        })
        .collect();
    let table = MaglevTable::with_capacity(&backends, capacity);
    table
        .slots()
        .iter()
        .filter_map(|i| table.backends().get(*i as usize))
        .map(|b| BackendAddr {
            addr: b.ip,
            port: b.port,
        })
        .collect()
}

/// How many entries each service map holds at a sync's peak (after its
/// writes, before its deletions): `manul_svc_fe`, `manul_svc_be`,
/// `manul_svc_mag`, `manul_svc_fe6`, `manul_svc_be6`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    pub fe: usize,
    pub be: usize,
    pub mag: usize,
    pub fe6: usize,
    pub be6: usize,
}

/// The entries of each map after `programmed` takes `next`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub fe: usize,
    pub fe6: usize,
    pub be: usize,
    pub be6: usize,
    pub mag: usize,
}

impl Counts {
    /// What `programmed` holds (one walk over its lists).
    pub fn of(p: &Programmed) -> Counts {
        let fe6 = p.frontends.range(first_v6()..).count();
        let (be, be6) = p
            .lists
            .values()
            .map(|l| family_counts(l))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        Counts {
            fe: p.frontends.len().saturating_sub(fe6),
            fe6,
            be,
            be6,
            mag: p.tables.values().map(|t| t.size as usize).sum(),
        }
    }

    /// The counts after `programmed` (holding `self`) takes `next`.
    pub fn after(self, programmed: &Programmed, next: &Delta) -> Counts {
        let mut c = self;
        for (f, e) in &next.frontends {
            let n = if f.addr.is_ipv6() {
                &mut c.fe6
            } else {
                &mut c.fe
            };
            *n = (*n + usize::from(e.is_some()))
                .saturating_sub(usize::from(programmed.frontends.contains_key(f)));
        }
        for (id, l) in &next.lists {
            let (new4, new6) = l.as_deref().map_or((0, 0), family_counts);
            let (old4, old6) = programmed
                .lists
                .get(id)
                .map_or((0, 0), |l| family_counts(l));
            c.be = (c.be + new4).saturating_sub(old4);
            c.be6 = (c.be6 + new6).saturating_sub(old6);
        }
        for (id, t) in &next.tables {
            let new = t.as_ref().map_or(0, |t| t.size as usize);
            let old = programmed.tables.get(id).map_or(0, |t| t.size as usize);
            c.mag = (c.mag + new).saturating_sub(old);
        }
        c
    }

    /// The peak of a sync that ends at `self` with `w`'s deletions (a
    /// deleted backend index may be of either family: counted in both).
    pub fn peak(self, w: &Writes) -> Peak {
        let fe6 = w
            .frontend_deletes
            .iter()
            .filter(|f| f.addr.is_ipv6())
            .count();
        Peak {
            fe: self.fe + w.frontend_deletes.len().saturating_sub(fe6),
            fe6: self.fe6 + fe6,
            be: self.be + w.backend_deletes.len(),
            be6: self.be6 + w.backend_deletes.len(),
            mag: self.mag
                + w.table_deletes
                    .iter()
                    .map(|(_, size)| *size as usize)
                    .sum::<usize>(),
        }
    }
}

/// The first IPv6 frontend key: IPv4 ones sort before it.
fn first_v6() -> Frontend {
    Frontend::address(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
}

/// A list's IPv4 and IPv6 backends.
fn family_counts(l: &[BackendAddr]) -> (usize, usize) {
    let v6 = l.iter().filter(|b| b.addr.is_ipv6()).count();
    (l.len() - v6, v6)
}
