//! A two-way index between labelled items and selectors.
//!
//! A new selector finds its candidate items, and a changed item finds its
//! candidate selectors, without scanning everything: each selector is
//! anchored on one positive requirement it cannot match without (a label
//! equal to a value, a label in a set, or a label being present), and
//! items are indexed by label. Only selectors with no such requirement
//! (`all()`, negations, `||` at the top) are checked against every item.
//! The index reports every change of a (selector, item) match.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use manul_model::Selector;
use manul_model::selector::Expr;

/// Labels of an item.
pub type LabelMap = BTreeMap<String, String>;

/// What a selector cannot match without.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    Value(String, String),
    Values(String, Vec<String>),
    Key(String),
}

fn anchor(expr: &Expr) -> Option<Anchor> {
    match expr {
        Expr::Eq { label, value } => Some(Anchor::Value(label.clone(), value.clone())),
        Expr::In { label, values } => Some(Anchor::Values(label.clone(), values.clone())),
        Expr::Has(label)
        | Expr::Contains { label, .. }
        | Expr::StartsWith { label, .. }
        | Expr::EndsWith { label, .. } => Some(Anchor::Key(label.clone())),
        Expr::And(parts) => {
            let anchors: Vec<Anchor> = parts.iter().filter_map(anchor).collect();
            anchors
                .iter()
                .find(|a| matches!(a, Anchor::Value(..)))
                .or_else(|| anchors.first())
                .cloned()
        }
        _ => None,
    }
}

/// A (selector, item) match that started (`true`) or stopped (`false`).
pub type MatchChange<S, I> = (S, I, bool);

/// The index. `S` names selectors, `I` names items.
#[derive(Debug)]
pub struct LabelIndex<S, I> {
    items: HashMap<I, LabelMap>,
    items_by_value: HashMap<(String, String), BTreeSet<I>>,
    items_by_key: HashMap<String, BTreeSet<I>>,
    selectors: HashMap<S, (Selector, Option<Anchor>)>,
    selectors_by_value: HashMap<(String, String), BTreeSet<S>>,
    selectors_by_key: HashMap<String, BTreeSet<S>>,
    selectors_scanning: BTreeSet<S>,
    matches: HashMap<S, BTreeSet<I>>,
    item_matches: HashMap<I, BTreeSet<S>>,
}

impl<S, I> Default for LabelIndex<S, I> {
    fn default() -> Self {
        LabelIndex {
            items: HashMap::new(),
            items_by_value: HashMap::new(),
            items_by_key: HashMap::new(),
            selectors: HashMap::new(),
            selectors_by_value: HashMap::new(),
            selectors_by_key: HashMap::new(),
            selectors_scanning: BTreeSet::new(),
            matches: HashMap::new(),
            item_matches: HashMap::new(),
        }
    }
}

impl<S, I> LabelIndex<S, I>
where
    S: Clone + Ord + Hash,
    I: Clone + Ord + Hash,
{
    /// Items a selector currently matches.
    pub fn matching(&self, selector: &S) -> impl Iterator<Item = &I> {
        self.matches.get(selector).into_iter().flatten()
    }

    /// Selectors an item currently matches.
    pub fn selectors_of(&self, item: &I) -> impl Iterator<Item = &S> {
        self.item_matches.get(item).into_iter().flatten()
    }

    pub fn labels(&self, item: &I) -> Option<&LabelMap> {
        self.items.get(item)
    }

    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    pub fn selector_count(&self) -> usize {
        self.selectors.len()
    }

    fn set_match(&mut self, s: &S, i: &I, matched: bool, out: &mut Vec<MatchChange<S, I>>) {
        let set = self.matches.entry(s.clone()).or_default();
        let changed = if matched {
            set.insert(i.clone())
        } else {
            set.remove(i)
        };
        if changed {
            let rev = self.item_matches.entry(i.clone()).or_default();
            if matched {
                rev.insert(s.clone());
            } else {
                rev.remove(s);
                if rev.is_empty() {
                    self.item_matches.remove(i);
                }
            }
            out.push((s.clone(), i.clone(), matched));
        }
    }

    fn candidate_items(&self, a: &Option<Anchor>) -> Vec<I> {
        match a {
            Some(Anchor::Value(k, v)) => self
                .items_by_value
                .get(&(k.clone(), v.clone()))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            Some(Anchor::Values(k, vs)) => vs
                .iter()
                .filter_map(|v| self.items_by_value.get(&(k.clone(), v.clone())))
                .flatten()
                .cloned()
                .collect(),
            Some(Anchor::Key(k)) => self
                .items_by_key
                .get(k)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            None => self.items.keys().cloned().collect(),
        }
    }

    fn candidate_selectors(&self, labels: &LabelMap) -> BTreeSet<S> {
        let mut out = self.selectors_scanning.clone();
        for (k, v) in labels {
            if let Some(s) = self.selectors_by_value.get(&(k.clone(), v.clone())) {
                out.extend(s.iter().cloned());
            }
            if let Some(s) = self.selectors_by_key.get(k) {
                out.extend(s.iter().cloned());
            }
        }
        out
    }

    /// Adds or replaces a selector; returns the match changes.
    pub fn update_selector(&mut self, id: S, selector: Selector) -> Vec<MatchChange<S, I>> {
        let mut out = Vec::new();
        if let Some((old, _)) = self.selectors.get(&id)
            && *old == selector
        {
            return out;
        }
        self.unindex_selector(&id);
        let a = anchor(selector.expr());
        match &a {
            Some(Anchor::Value(k, v)) => {
                self.selectors_by_value
                    .entry((k.clone(), v.clone()))
                    .or_default()
                    .insert(id.clone());
            }
            Some(Anchor::Values(k, vs)) => {
                for v in vs {
                    self.selectors_by_value
                        .entry((k.clone(), v.clone()))
                        .or_default()
                        .insert(id.clone());
                }
            }
            Some(Anchor::Key(k)) => {
                self.selectors_by_key
                    .entry(k.clone())
                    .or_default()
                    .insert(id.clone());
            }
            None => {
                self.selectors_scanning.insert(id.clone());
            }
        }
        let candidates: BTreeSet<I> = self.candidate_items(&a).into_iter().collect();
        let previous: BTreeSet<I> = self.matches.get(&id).cloned().unwrap_or_default();
        for i in previous.difference(&candidates) {
            self.set_match(&id, i, false, &mut out);
        }
        for i in &candidates {
            let m = self.items.get(i).is_some_and(|l| selector.matches(l));
            self.set_match(&id, i, m, &mut out);
        }
        self.selectors.insert(id, (selector, a));
        out
    }

    fn unindex_selector(&mut self, id: &S) {
        let Some((_, a)) = self.selectors.remove(id) else {
            return;
        };
        let drop_from = |m: &mut HashMap<(String, String), BTreeSet<S>>, key: (String, String)| {
            if let Some(s) = m.get_mut(&key) {
                s.remove(id);
                if s.is_empty() {
                    m.remove(&key);
                }
            }
        };
        match a {
            Some(Anchor::Value(k, v)) => drop_from(&mut self.selectors_by_value, (k, v)),
            Some(Anchor::Values(k, vs)) => {
                for v in vs {
                    drop_from(&mut self.selectors_by_value, (k.clone(), v));
                }
            }
            Some(Anchor::Key(k)) => {
                if let Some(s) = self.selectors_by_key.get_mut(&k) {
                    s.remove(id);
                    if s.is_empty() {
                        self.selectors_by_key.remove(&k);
                    }
                }
            }
            None => {
                self.selectors_scanning.remove(id);
            }
        }
    }

    /// Removes a selector; returns the matches that ended.
    pub fn remove_selector(&mut self, id: &S) -> Vec<MatchChange<S, I>> {
        let mut out = Vec::new();
        self.unindex_selector(id);
        for i in self.matches.remove(id).unwrap_or_default() {
            if let Some(rev) = self.item_matches.get_mut(&i) {
                rev.remove(id);
                if rev.is_empty() {
                    self.item_matches.remove(&i);
                }
            }
            out.push((id.clone(), i, false));
        }
        out
    }

    /// Adds or replaces an item's labels; returns the match changes.
    pub fn update_item(&mut self, id: I, labels: LabelMap) -> Vec<MatchChange<S, I>> {
        let mut out = Vec::new();
        if self.items.get(&id) == Some(&labels) {
            return out;
        }
        self.unindex_item(&id);
        for (k, v) in &labels {
            self.items_by_value
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(id.clone());
            self.items_by_key
                .entry(k.clone())
                .or_default()
                .insert(id.clone());
        }
        let candidates = self.candidate_selectors(&labels);
        let previous: BTreeSet<S> = self.item_matches.get(&id).cloned().unwrap_or_default();
        for s in previous.difference(&candidates) {
            self.set_match(s, &id, false, &mut out);
        }
        for s in &candidates {
            let m = self
                .selectors
                .get(s)
                .is_some_and(|(sel, _)| sel.matches(&labels));
            self.set_match(s, &id, m, &mut out);
        }
        self.items.insert(id, labels);
        out
    }

    fn unindex_item(&mut self, id: &I) {
        let Some(labels) = self.items.remove(id) else {
            return;
        };
        for (k, v) in labels {
            let key = (k.clone(), v);
            if let Some(s) = self.items_by_value.get_mut(&key) {
                s.remove(id);
                if s.is_empty() {
                    self.items_by_value.remove(&key);
                }
            }
            if let Some(s) = self.items_by_key.get_mut(&k) {
                s.remove(id);
                if s.is_empty() {
                    self.items_by_key.remove(&k);
                }
            }
        }
    }

    /// Removes an item; returns the matches that ended.
    pub fn remove_item(&mut self, id: &I) -> Vec<MatchChange<S, I>> {
        let mut out = Vec::new();
        self.unindex_item(id);
        for s in self.item_matches.remove(id).unwrap_or_default() {
            if let Some(set) = self.matches.get_mut(&s) {
                set.remove(id);
            }
            out.push((s, id.clone(), false));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The index must agree with evaluating every selector on every item,
    /// whichever order selectors and items arrive and change in.
    #[test]
    fn agrees_with_brute_force_in_any_order() {
        let selectors = [
            "app == 'a'",
            "app in {'a', 'b'} && env != 'prod'",
            "has(env)",
            "!has(env)",
            "all()",
            "app == 'a' || env == 'prod'",
            "app starts with 'x'",
            "(app == 'b' && env == 'dev')",
        ];
        let items = [
            labels(&[("app", "a")]),
            labels(&[("app", "b"), ("env", "dev")]),
            labels(&[("env", "prod")]),
            labels(&[]),
            labels(&[("app", "xy"), ("env", "prod")]),
        ];
        for reversed in [false, true] {
            let mut idx: LabelIndex<usize, usize> = LabelIndex::default();
            let mut live: BTreeMap<(usize, usize), bool> = BTreeMap::new();
            fn record(
                live: &mut BTreeMap<(usize, usize), bool>,
                changes: Vec<MatchChange<usize, usize>>,
            ) {
                for (s, i, m) in changes {
                    let prev = live.insert((s, i), m);
                    assert_ne!(prev, Some(m), "a change that changes nothing was reported");
                }
            }
            macro_rules! apply {
                ($e:expr) => {
                    record(&mut live, $e)
                };
            }
            let mut sel_order: Vec<usize> = (0..selectors.len()).collect();
            if reversed {
                sel_order.reverse();
            }
            for (n, s) in sel_order.iter().enumerate() {
                if n % 2 == 0 {
                    apply!(idx.update_selector(*s, Selector::parse(selectors[*s]).unwrap()));
                }
            }
            for (i, l) in items.iter().enumerate() {
                apply!(idx.update_item(i, l.clone()));
            }
            for (n, s) in sel_order.iter().enumerate() {
                if n % 2 == 1 {
                    apply!(idx.update_selector(*s, Selector::parse(selectors[*s]).unwrap()));
                }
            }
            // Relabel item 0 and item 2, remove item 3, replace a selector.
            apply!(idx.update_item(0, labels(&[("app", "b"), ("env", "dev")])));
            apply!(idx.update_item(2, labels(&[("app", "a")])));
            apply!(idx.remove_item(&3));
            apply!(idx.update_selector(4, Selector::parse("env == 'dev'").unwrap()));
            let current_items: BTreeMap<usize, LabelMap> = [
                (0, labels(&[("app", "b"), ("env", "dev")])),
                (1, items[1].clone()),
                (2, labels(&[("app", "a")])),
                (4, items[4].clone()),
            ]
            .into();
            let mut current_sel: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
            current_sel[4] = "env == 'dev'".into();
            for (s, text) in current_sel.iter().enumerate() {
                let sel = Selector::parse(text).unwrap();
                for (i, l) in &current_items {
                    let want = sel.matches(l);
                    let got = idx.matching(&s).any(|x| x == i);
                    assert_eq!(got, want, "selector {text:?} item {i}");
                    assert_eq!(live.get(&(s, *i)).copied().unwrap_or(false), want);
                }
                assert!(!idx.matching(&s).any(|x| *x == 3));
            }
            apply!(idx.remove_selector(&0));
            assert_eq!(idx.matching(&0).count(), 0);
        }
    }
}
