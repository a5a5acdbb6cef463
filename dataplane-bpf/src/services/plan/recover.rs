//! Recognizing an earlier run's backend lists: the maps name no service,
//! but each frontend entry names its list, so a desired list takes over
//! the list its frontend names when the earlier run left it there. Its
//! id, and so the established connections' NAT entries and the clients'
//! affinity entries (which name the id), stay valid: a restart with the
//! same services writes nothing and cleans up nothing (a Maglev table
//! whose slots are what its list's backends give is kept too), and a
//! backend removed meanwhile is the only one that counts as gone.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::diff::table_slots;
use super::{BackendAddr, Desired, ListKey, Programmed, table_digest};

/// `programmed` with the earlier run's lists that desired lists take
/// over given to them (`ids`; a list without backends also gets its
/// empty entry in `lists`, so no new list takes its id), or as it is
/// when none does.
///
/// A desired list without an id takes list `id` when one of its port
/// frontends is an earlier run's (adopted) and names `id`, no other list
/// has `id`, and that frontend's count is the list's length: indices
/// `0..count` are always there (the writes keep that), so the list is
/// then whole, without a missing index or one a failed write left past
/// the count. And no frontend that names `id` may stay as it is while the
/// list changes: each is desired (so rewritten before any index goes), or
/// the plan is `in_sync` (so the others are deleted). Lists whose
/// backends are unchanged choose first, then the others, each in
/// frontend order; a list no desired list takes is replaced by a new
/// one (its backends count as gone).
pub fn recover<'a>(
    desired: &Desired,
    programmed: &'a Programmed,
    in_sync: bool,
) -> Cow<'a, Programmed> {
    if programmed.adopted.is_empty() {
        return Cow::Borrowed(programmed);
    }
    // The lists that a frontend kept as it is names.
    let held: BTreeSet<u32> = match in_sync {
        true => BTreeSet::new(),
        false => programmed
            .frontends
            .iter()
            .filter(|(f, _)| !desired.frontends.contains_key(*f))
            .map(|(_, e)| e.id)
            .collect(),
    };
    let empty: Vec<BackendAddr> = Vec::new();
    // (key, id, whether the backends are unchanged), in frontend order.
    let candidates: Vec<(&ListKey, u32, bool)> = desired
        .frontends
        .iter()
        .filter(|(_, w)| !programmed.ids.contains_key(&w.list))
        .filter(|(f, _)| programmed.adopted.contains(*f))
        .filter_map(|(f, w)| {
            let e = programmed.frontends.get(f)?;
            let old = programmed.lists.get(&e.id).unwrap_or(&empty);
            let wanted = desired.lists.get(&w.list)?;
            let whole = e.id != 0 && e.count as usize == old.len() && !held.contains(&e.id);
            whole.then_some((&w.list, e.id, old == wanted))
        })
        .collect();
    let mut taken: BTreeSet<u32> = programmed.ids.values().copied().collect();
    let mut found: BTreeMap<ListKey, u32> = BTreeMap::new();
    for unchanged in [true, false] {
        for (key, id, same) in &candidates {
            if *same != unchanged || found.contains_key(*key) || taken.contains(id) {
                continue;
            }
            taken.insert(*id);
            found.insert((*key).clone(), *id);
        }
    }
    if found.is_empty() {
        return Cow::Borrowed(programmed);
    }
    let mut p = programmed.clone();
    for (key, id) in &found {
        p.lists.entry(*id).or_default();
        p.next_id = p.next_id.max(id.saturating_add(1));
        p.ids.insert(key.clone(), *id);
    }
    recover_tables(desired, &found, &mut p);
    Cow::Owned(p)
}

/// Marks the earlier run's Maglev tables of the lists taken over as built
/// from their backends where their slots are exactly the table those
/// backends give (the size and the slots' digest), so an unchanged list
/// keeps its table; any other is replaced by a new one.
fn recover_tables(desired: &Desired, found: &BTreeMap<ListKey, u32>, p: &mut Programmed) {
    for f in &desired.maglev {
        let Some(w) = desired.frontends.get(f) else {
            continue;
        };
        let (Some(id), Some(e)) = (found.get(&w.list), p.frontends.get(f)) else {
            continue;
        };
        let Some(list) = p.lists.get(id) else {
            continue;
        };
        let Some(t) = p.tables.get(&e.maglev) else {
            continue;
        };
        if e.id != *id || t.built.is_some() || t.size != e.maglev_size || t.digest.is_none() {
            continue;
        }
        let slots = table_slots(list, desired.maglev_capacity);
        if slots.len() != t.size as usize || t.digest != Some(table_digest(&slots)) {
            continue;
        }
        let built = Some((*id, list.clone()));
        if let Some(t) = p.tables.get_mut(&e.maglev) {
            t.built = built;
        }
    }
}
