//! A batch of service changes rendered on its own: only the changed
//! services' objects (their chains and sets, and the shared map entries
//! whose holder changed), as two partial rulesets that
//! [`crate::script::incremental`] turns into a script, then folded into
//! the programmed ruleset. What this writes is exactly what rendering the
//! whole state and diffing it would write (a unit test checks that), at a
//! cost that grows with the changed services rather than with the table.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use manul_dataplane_api::{Service, ServiceKey};

use super::service_claims::{Claims, Entries, Frontend, RangeKey, frontend_of, range_of};
use super::service_pick::PICK_CHAINS;
use super::services::{ServiceObjects, render_service};
use super::{NftConfig, Ruleset, SetDef};
use crate::element::{Element, Value};

/// One service's change: its key, and the service before and after
/// (`None`: absent).
pub type Change<'a> = (&'a ServiceKey, Option<&'a Service>, Option<&'a Service>);

/// The touched objects before and after the change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceChange {
    pub old: Ruleset,
    pub new: Ruleset,
}

/// Renders `changes` against `programmed` (the table as written) and
/// `claims` (who claims which shared keys in it), and updates `claims`;
/// `local`: this node's addresses, as the table was rendered with (a
/// batch that changes them renders the whole state).
/// After a failed write, `claims` no longer matches the kernel: rebuild it
/// with the whole state ([`super::render_indexed`]).
pub fn render_changes(
    programmed: &Ruleset,
    claims: &mut Claims,
    changes: &[Change<'_>],
    config: &NftConfig,
    local: &BTreeSet<std::net::IpAddr>,
) -> ServiceChange {
    let rendered: Vec<(&ServiceKey, Option<ServiceObjects>, Option<ServiceObjects>)> = changes
        .iter()
        .map(|(key, before, after)| {
            (
                *key,
                before.map(|s| render_service(s, config, local)),
                after.map(|s| render_service(s, config, local)),
            )
        })
        .collect();
    // Plain set elements and frontends the change may give to another
    // holder (see `service_claims`).
    let mut touched: BTreeSet<(String, Vec<Value>)> = BTreeSet::new();
    let mut frontends: BTreeSet<Frontend> = BTreeSet::new();
    let mut ranges: BTreeSet<RangeKey> = BTreeSet::new();
    for (_, before, after) in &rendered {
        for objects in [before, after].into_iter().flatten() {
            for (set, element) in &objects.elements {
                if let Some((k, _)) = range_of(set, &element.key) {
                    ranges.insert(k);
                    continue;
                }
                match frontend_of(set, &element.key) {
                    Some(f) => {
                        frontends.insert(f);
                    }
                    None => {
                        touched.insert((set.clone(), element.key.clone()));
                    }
                }
            }
        }
    }
    let holders_before: Vec<Option<Element>> = touched
        .iter()
        .map(|(set, key)| claims.holder(set, key).cloned())
        .collect();
    let ranges_before: Vec<Entries> = ranges.iter().map(|k| claims.range_entries(k)).collect();
    let keepers_before: Vec<Option<Entries>> = frontends
        .iter()
        .map(|f| claims.keeper(f).map(|(_, entries)| entries.clone()))
        .collect();
    let mut pick_chains = BTreeMap::new();
    for (_, before, after) in &rendered {
        for objects in [before, after].into_iter().flatten() {
            for (name, rules) in &objects.shared_chains {
                pick_chains.insert(name.clone(), rules.clone());
            }
        }
    }
    let mut change = ServiceChange::default();
    for (key, before, after) in rendered {
        if let Some(o) = before {
            claims.remove(key, &o);
            change.old.chains.extend(o.chains);
            change.old.sets.extend(o.sets);
        }
        if let Some(n) = after {
            claims.insert(key, &n);
            change.new.chains.extend(n.chains);
            change.new.sets.extend(n.sets);
        }
    }
    for ((set, key), before) in touched.iter().zip(holders_before) {
        let after = claims.holder(set, key);
        if before.as_ref() == after {
            continue;
        }
        if set == PICK_CHAINS {
            // A shared pick chain: written with its first user, removed
            // with its last.
            let part = match (&before, after) {
                (None, Some(_)) => &mut change.new,
                (Some(_), None) => &mut change.old,
                _ => continue,
            };
            if let [Value::Chain(name)] = key.as_slice()
                && let Some(rules) = pick_chains.get(name)
            {
                part.chains.insert(name.clone(), rules.clone());
            }
            continue;
        }
        let before: Vec<(&String, &Element)> = before.iter().map(|e| (set, e)).collect();
        let after: Vec<(&String, &Element)> = after.iter().map(|e| (set, *e)).collect();
        entry_change(&mut change, programmed, &[set], &before, &after);
    }
    // A frontend whose keeper's entries changed: the old entries out, the
    // new ones in, whichever maps they are in.
    for (f, before) in frontends.iter().zip(keepers_before) {
        let after = claims.keeper(f).map(|(_, entries)| entries);
        if before.as_ref() == after {
            continue;
        }
        let before = before.unwrap_or_default();
        let after: &[(String, Element)] = after.map_or(&[], Vec::as_slice);
        let sets: BTreeSet<&String> = before.iter().chain(after).map(|(s, _)| s).collect();
        let sets: Vec<&String> = sets.into_iter().collect();
        entry_change(
            &mut change,
            programmed,
            &sets,
            &pairs(&before),
            &pairs(after),
        );
    }
    // A load-balancer address's ranges: the old union out, the new in.
    for (k, before) in ranges.iter().zip(ranges_before) {
        let after = claims.range_entries(k);
        if before != after {
            entry_change(
                &mut change,
                programmed,
                &[&k.0],
                &pairs(&before),
                &pairs(&after),
            );
        }
    }
    change
}

fn pairs(entries: &[(String, Element)]) -> Vec<(&String, &Element)> {
    entries.iter().map(|(s, e)| (s, e)).collect()
}

/// Adds to `change` the elements `before` (to remove) and `after` (to
/// write) of the shared `sets`, each declared in both parts as
/// `programmed` declares it.
fn entry_change(
    change: &mut ServiceChange,
    programmed: &Ruleset,
    sets: &[&String],
    before: &[(&String, &Element)],
    after: &[(&String, &Element)],
) {
    for set in sets {
        let Some(def) = programmed.sets.get(*set) else {
            continue;
        };
        for part in [&mut change.old, &mut change.new] {
            // Not `def.clone()`: that would copy every element of the map.
            part.sets.entry((*set).clone()).or_insert_with(|| SetDef {
                type_: def.type_,
                interval: def.interval,
                timeout: def.timeout,
                comment: def.comment.clone(),
                elements: BTreeSet::new(),
            });
        }
    }
    for (part, entries) in [(&mut change.old, before), (&mut change.new, after)] {
        for (set, e) in entries {
            if let Some(def) = part.sets.get_mut(*set) {
                def.elements.insert((*e).clone());
            }
        }
    }
}

/// Folds a written change into `programmed`.
pub fn fold(programmed: &mut Ruleset, change: ServiceChange) {
    for name in change.old.chains.keys() {
        programmed.chains.remove(name);
    }
    programmed.chains.extend(change.new.chains);
    for (name, old) in &change.old.sets {
        if !change.new.sets.contains_key(name) {
            programmed.sets.remove(name);
        } else if let Some(def) = programmed.sets.get_mut(name) {
            for e in &old.elements {
                def.elements.remove(e);
            }
        }
    }
    for (name, new) in change.new.sets {
        match programmed.sets.get_mut(&name) {
            Some(def) if change.old.sets.contains_key(&name) => {
                def.elements.extend(new.elements);
            }
            _ => {
                programmed.sets.insert(name, new);
            }
        }
    }
}
