//! A two-way index between labelled items and selectors, over interned
//! labels.
//!
//! A new selector finds its candidate items, and a changed item finds its
//! candidate selectors, without scanning everything: each selector is
//! registered under one positive requirement it cannot match without (a
//! label equal to a value, a label in a set, or a label being present),
//! and items are indexed by (label, value). A new selector starts from the
//! smallest of its requirements' posting lists. Only selectors with no
//! such requirement (`all()`, negations, `||` at the top) are checked
//! against every item. The index reports every change of a (selector,
//! item) match.
//!
//! Label names and values are interned ([`Sym`]): an item's labels are a
//! sorted slice of symbol pairs, selectors are compiled to compare symbols,
//! and items and selectors are named by `u32` ids, so the index holds no
//! owned strings per item.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use manul_model::selector::{Expr, NAMESPACE_LABEL};
use roaring::RoaringBitmap;

/// Labels as resources carry them.
pub type LabelMap = BTreeMap<String, String>;

/// Maps and sets with the Fx hash (rustc's): fast for ids, symbols and
/// short keys; the inputs are cluster state, not attacker-chosen hash
/// floods.
pub use rustc_hash::{FxHashMap, FxHashSet};

/// An interned string. Equal strings from one [`Interner`] are the same
/// allocation, so equality, hashing and ordering use the address (the
/// order is arbitrary but stable for the symbol's lifetime).
#[derive(Clone)]
pub struct Sym(Arc<str>);

impl Sym {
    #[inline]
    fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Sym {
    #[inline]
    fn eq(&self, other: &Sym) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Sym {}

impl Hash for Sym {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.addr());
    }
}

impl PartialOrd for Sym {
    fn partial_cmp(&self, other: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sym {
    #[inline]
    fn cmp(&self, other: &Sym) -> std::cmp::Ordering {
        self.addr().cmp(&other.addr())
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Interns strings. A string no one holds any more is dropped by a sweep
/// that runs when the table has doubled since the last one, so unique
/// label values that come and go do not accumulate.
#[derive(Debug, Default)]
pub struct Interner {
    set: FxHashSet<Arc<str>>,
    live_after_sweep: usize,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(a) = self.set.get(s) {
            return Sym(a.clone());
        }
        if self.set.len() >= 2 * self.live_after_sweep + 1024 {
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.live_after_sweep = self.set.len();
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(a.clone());
        Sym(a)
    }

    /// Interns `(name, value)` pairs.
    pub fn pairs<'a>(&mut self, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
        let v: Vec<(Sym, Sym)> = labels
            .into_iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        finish_labels(v)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// An item's labels: unique names, sorted by symbol.
pub type Labels = Box<[(Sym, Sym)]>;

/// Sorts pairs by name; for a repeated name, the last pair wins.
pub fn finish_labels(mut v: Vec<(Sym, Sym)>) -> Labels {
    // Stable: pairs with one name keep their order, the last is wanted.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Sym, Sym)> = Vec::with_capacity(v.len());
    for (k, val) in v {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = val,
            _ => out.push((k, val)),
        }
    }
    out.into_boxed_slice()
}

#[inline]
fn get<'a>(labels: &'a [(Sym, Sym)], k: &Sym) -> Option<&'a Sym> {
    if labels.len() <= 8 {
        labels.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    } else {
        labels
            .binary_search_by(|(n, _)| n.cmp(k))
            .ok()
            .map(|i| &labels[i].1)
    }
}

/// A selector compiled to symbols.
#[derive(Debug)]
enum CExpr {
    True,
    Has(Sym),
    NotHas(Sym),
    Eq(Sym, Sym),
    Ne(Sym, Sym),
    In(Sym, Box<[Sym]>),
    NotIn(Sym, Box<[Sym]>),
    Contains(Sym, Box<str>),
    StartsWith(Sym, Box<str>),
    EndsWith(Sym, Box<str>),
    Not(Box<CExpr>),
    And(Box<[CExpr]>),
    Or(Box<[CExpr]>),
}

fn compile(e: &Expr, syms: &mut Interner) -> CExpr {
    match e {
        Expr::All => CExpr::True,
        Expr::Global => CExpr::NotHas(syms.intern(NAMESPACE_LABEL)),
        Expr::Eq { label, value } => CExpr::Eq(syms.intern(label), syms.intern(value)),
        Expr::Ne { label, value } => CExpr::Ne(syms.intern(label), syms.intern(value)),
        Expr::In { label, values } => CExpr::In(
            syms.intern(label),
            values.iter().map(|v| syms.intern(v)).collect(),
        ),
        Expr::NotIn { label, values } => CExpr::NotIn(
            syms.intern(label),
            values.iter().map(|v| syms.intern(v)).collect(),
        ),
        Expr::Has(l) => CExpr::Has(syms.intern(l)),
        Expr::NotHas(l) => CExpr::NotHas(syms.intern(l)),
        Expr::Contains { label, value } => {
            CExpr::Contains(syms.intern(label), value.as_str().into())
        }
        Expr::StartsWith { label, value } => {
            CExpr::StartsWith(syms.intern(label), value.as_str().into())
        }
        Expr::EndsWith { label, value } => {
            CExpr::EndsWith(syms.intern(label), value.as_str().into())
        }
        Expr::Not(inner) => CExpr::Not(Box::new(compile(inner, syms))),
        Expr::And(es) => CExpr::And(es.iter().map(|e| compile(e, syms)).collect()),
        Expr::Or(es) => CExpr::Or(es.iter().map(|e| compile(e, syms)).collect()),
    }
}

impl CExpr {
    fn eval(&self, l: &[(Sym, Sym)]) -> bool {
        match self {
            CExpr::True => true,
            CExpr::Has(k) => get(l, k).is_some(),
            CExpr::NotHas(k) => get(l, k).is_none(),
            CExpr::Eq(k, v) => get(l, k) == Some(v),
            CExpr::Ne(k, v) => get(l, k) != Some(v),
            CExpr::In(k, vs) => get(l, k).is_some_and(|v| vs.contains(v)),
            CExpr::NotIn(k, vs) => !get(l, k).is_some_and(|v| vs.contains(v)),
            CExpr::Contains(k, s) => get(l, k).is_some_and(|v| v.as_str().contains(&**s)),
            CExpr::StartsWith(k, s) => get(l, k).is_some_and(|v| v.as_str().starts_with(&**s)),
            CExpr::EndsWith(k, s) => get(l, k).is_some_and(|v| v.as_str().ends_with(&**s)),
            CExpr::Not(e) => !e.eval(l),
            CExpr::And(es) => es.iter().all(|e| e.eval(l)),
            CExpr::Or(es) => es.iter().any(|e| e.eval(l)),
        }
    }
}

/// What a selector cannot match without.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    Value(Sym, Sym),
    Values(Sym, Box<[Sym]>),
    Key(Sym),
}

/// Every requirement a match needs, from the top-level conjunction.
fn anchors(e: &CExpr, out: &mut Vec<Anchor>) {
    match e {
        CExpr::Eq(k, v) => out.push(Anchor::Value(k.clone(), v.clone())),
        CExpr::In(k, vs) => out.push(Anchor::Values(k.clone(), vs.clone())),
        CExpr::Has(k) | CExpr::Contains(k, _) | CExpr::StartsWith(k, _) | CExpr::EndsWith(k, _) => {
            out.push(Anchor::Key(k.clone()))
        }
        CExpr::And(es) => {
            for e in es.iter() {
                anchors(e, out);
            }
        }
        _ => {}
    }
}

/// A short list of ids, inline up to three (most items match few
/// selectors), so that an item's matches cost no allocation of their own.
#[derive(Debug, Clone)]
enum Ids {
    Inline(u8, [u32; 3]),
    Heap(Vec<u32>),
}

impl Default for Ids {
    fn default() -> Ids {
        Ids::Inline(0, [0; 3])
    }
}

impl Ids {
    fn as_slice(&self) -> &[u32] {
        match self {
            Ids::Inline(n, a) => &a[..*n as usize],
            Ids::Heap(v) => v,
        }
    }

    fn push(&mut self, id: u32) {
        match self {
            Ids::Inline(n, a) if (*n as usize) < a.len() => {
                a[*n as usize] = id;
                *n += 1;
            }
            Ids::Inline(_, a) => {
                let mut v = a.to_vec();
                v.push(id);
                *self = Ids::Heap(v);
            }
            Ids::Heap(v) => v.push(id),
        }
    }

    fn remove(&mut self, id: u32) {
        match self {
            Ids::Inline(n, a) => {
                if let Some(i) = a[..*n as usize].iter().position(|x| *x == id) {
                    a.copy_within(i + 1..*n as usize, i);
                    *n -= 1;
                }
            }
            Ids::Heap(v) => v.retain(|x| *x != id),
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

/// A (selector, item) match that started (`true`) or stopped (`false`).
pub type MatchChange = (u32, u32, bool);

#[derive(Debug)]
struct SelectorEntry {
    expr: Expr,
    compiled: CExpr,
    /// Where item changes find it; None: checked against every item.
    registered: Option<Anchor>,
}

/// The index. Selectors and items are named by `u32` ids.
#[derive(Debug, Default)]
pub struct LabelIndex {
    items: FxHashMap<u32, Labels>,
    postings: FxHashMap<(Sym, Sym), RoaringBitmap>,
    /// Label name → its values that some item has.
    key_values: FxHashMap<Sym, FxHashSet<Sym>>,
    selectors: FxHashMap<u32, SelectorEntry>,
    selectors_by_value: FxHashMap<(Sym, Sym), Vec<u32>>,
    selectors_by_key: FxHashMap<Sym, Vec<u32>>,
    selectors_scanning: Vec<u32>,
    matches: FxHashMap<u32, RoaringBitmap>,
    item_matches: FxHashMap<u32, Ids>,
}

fn drop_from<K: Hash + Eq>(m: &mut FxHashMap<K, Vec<u32>>, key: &K, id: u32) {
    if let Some(v) = m.get_mut(key) {
        v.retain(|x| *x != id);
        if v.is_empty() {
            m.remove(key);
        }
    }
}

impl LabelIndex {
    /// Items a selector currently matches.
    pub fn matching(&self, selector: u32) -> impl Iterator<Item = u32> + '_ {
        self.matches
            .get(&selector)
            .into_iter()
            .flat_map(|b| b.iter())
    }

    /// Selectors an item currently matches.
    pub fn selectors_of(&self, item: u32) -> &[u32] {
        self.item_matches.get(&item).map_or(&[], Ids::as_slice)
    }

    pub fn labels(&self, item: u32) -> Option<&Labels> {
        self.items.get(&item)
    }

    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    pub fn selector_count(&self) -> usize {
        self.selectors.len()
    }

    fn set_match(&mut self, s: u32, i: u32, matched: bool, out: &mut Vec<MatchChange>) {
        let changed = if matched {
            self.matches.entry(s).or_default().insert(i)
        } else {
            self.matches.get_mut(&s).is_some_and(|set| set.remove(i))
        };
        if changed {
            if matched {
                self.item_matches.entry(i).or_default().push(s);
            } else if let Some(rev) = self.item_matches.get_mut(&i) {
                rev.remove(s);
                if rev.is_empty() {
                    self.item_matches.remove(&i);
                }
            }
            out.push((s, i, matched));
        }
    }

    fn anchor_size(&self, a: &Anchor) -> usize {
        let posting = |k: &Sym, v: &Sym| {
            self.postings
                .get(&(k.clone(), v.clone()))
                .map_or(0, |b| b.len() as usize)
        };
        match a {
            Anchor::Value(k, v) => posting(k, v),
            Anchor::Values(k, vs) => vs.iter().map(|v| posting(k, v)).sum(),
            Anchor::Key(k) => self
                .key_values
                .get(k)
                .map_or(0, |vs| vs.iter().map(|v| posting(k, v)).sum()),
        }
    }

    /// Items that may match a selector with these requirements: those of
    /// the most selective one, or every item.
    fn candidate_items(&self, all: &[Anchor]) -> Vec<u32> {
        let best = all.iter().min_by_key(|a| self.anchor_size(a));
        let mut out = Vec::new();
        let mut add = |k: &Sym, v: &Sym| {
            if let Some(s) = self.postings.get(&(k.clone(), v.clone())) {
                out.extend(s.iter());
            }
        };
        match best {
            Some(Anchor::Value(k, v)) => add(k, v),
            Some(Anchor::Values(k, vs)) => {
                for v in vs.iter() {
                    add(k, v);
                }
            }
            Some(Anchor::Key(k)) => {
                if let Some(vs) = self.key_values.get(k) {
                    for v in vs {
                        add(k, v);
                    }
                }
            }
            None => out.extend(self.items.keys().copied()),
        }
        out
    }

    fn candidate_selectors(&self, labels: &[(Sym, Sym)]) -> Vec<u32> {
        let mut out = self.selectors_scanning.clone();
        for (k, v) in labels {
            if let Some(s) = self.selectors_by_value.get(&(k.clone(), v.clone())) {
                out.extend_from_slice(s);
            }
            if let Some(s) = self.selectors_by_key.get(k) {
                out.extend_from_slice(s);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Adds or replaces a selector; appends the match changes to `out`.
    pub fn update_selector(
        &mut self,
        id: u32,
        expr: &Expr,
        syms: &mut Interner,
        out: &mut Vec<MatchChange>,
    ) {
        if self.selectors.get(&id).is_some_and(|s| s.expr == *expr) {
            return;
        }
        self.unindex_selector(id);
        let compiled = compile(expr, syms);
        let mut all = Vec::new();
        anchors(&compiled, &mut all);
        let registered = all
            .iter()
            .find(|a| matches!(a, Anchor::Value(..)))
            .or_else(|| all.first())
            .cloned();
        match &registered {
            Some(Anchor::Value(k, v)) => self
                .selectors_by_value
                .entry((k.clone(), v.clone()))
                .or_default()
                .push(id),
            Some(Anchor::Values(k, vs)) => {
                for v in vs.iter() {
                    self.selectors_by_value
                        .entry((k.clone(), v.clone()))
                        .or_default()
                        .push(id);
                }
            }
            Some(Anchor::Key(k)) => self.selectors_by_key.entry(k.clone()).or_default().push(id),
            None => self.selectors_scanning.push(id),
        }
        let candidates = self.candidate_items(&all);
        let previous: Vec<u32> = self
            .matches
            .get(&id)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        for i in previous {
            let m = self.items.get(&i).is_some_and(|l| compiled.eval(l));
            if !m {
                self.set_match(id, i, false, out);
            }
        }
        for i in candidates {
            let m = self.items.get(&i).is_some_and(|l| compiled.eval(l));
            if m {
                self.set_match(id, i, true, out);
            }
        }
        self.selectors.insert(
            id,
            SelectorEntry {
                expr: expr.clone(),
                compiled,
                registered,
            },
        );
    }

    fn unindex_selector(&mut self, id: u32) {
        let Some(entry) = self.selectors.remove(&id) else {
            return;
        };
        match entry.registered {
            Some(Anchor::Value(k, v)) => drop_from(&mut self.selectors_by_value, &(k, v), id),
            Some(Anchor::Values(k, vs)) => {
                for v in vs.iter() {
                    drop_from(&mut self.selectors_by_value, &(k.clone(), v.clone()), id);
                }
            }
            Some(Anchor::Key(k)) => drop_from(&mut self.selectors_by_key, &k, id),
            None => self.selectors_scanning.retain(|x| *x != id),
        }
    }

    /// Removes a selector; appends the matches that ended to `out`.
    pub fn remove_selector(&mut self, id: u32, out: &mut Vec<MatchChange>) {
        self.unindex_selector(id);
        for i in self.matches.remove(&id).unwrap_or_default() {
            if let Some(rev) = self.item_matches.get_mut(&i) {
                rev.remove(id);
                if rev.is_empty() {
                    self.item_matches.remove(&i);
                }
            }
            out.push((id, i, false));
        }
    }

    /// Adds or replaces an item's labels; appends the match changes to
    /// `out`.
    pub fn update_item(&mut self, id: u32, labels: Labels, out: &mut Vec<MatchChange>) {
        if self.items.get(&id) == Some(&labels) {
            return;
        }
        // Only the pairs that changed move between postings.
        let old = self.items.remove(&id).unwrap_or_default();
        for (k, v) in old.iter() {
            if get(&labels, k) != Some(v) {
                self.unpost(id, k, v);
            }
        }
        for (k, v) in labels.iter() {
            if get(&old, k) != Some(v) {
                self.post(id, k, v);
            }
        }
        let candidates = self.candidate_selectors(&labels);
        let previous: Vec<u32> = self.selectors_of(id).to_vec();
        for s in previous {
            if candidates.binary_search(&s).is_err() {
                self.set_match(s, id, false, out);
            }
        }
        for s in candidates {
            let m = self
                .selectors
                .get(&s)
                .is_some_and(|e| e.compiled.eval(&labels));
            self.set_match(s, id, m, out);
        }
        self.items.insert(id, labels);
    }

    fn post(&mut self, id: u32, k: &Sym, v: &Sym) {
        let posting = self.postings.entry((k.clone(), v.clone())).or_default();
        if posting.is_empty() {
            self.key_values
                .entry(k.clone())
                .or_default()
                .insert(v.clone());
        }
        posting.insert(id);
    }

    fn unpost(&mut self, id: u32, k: &Sym, v: &Sym) {
        let key = (k.clone(), v.clone());
        if let Some(s) = self.postings.get_mut(&key) {
            s.remove(id);
            if s.is_empty() {
                self.postings.remove(&key);
                if let Some(vs) = self.key_values.get_mut(k) {
                    vs.remove(v);
                    if vs.is_empty() {
                        self.key_values.remove(k);
                    }
                }
            }
        }
    }

    fn unindex_item(&mut self, id: u32) {
        let Some(labels) = self.items.remove(&id) else {
            return;
        };
        for (k, v) in labels.iter() {
            self.unpost(id, k, v);
        }
    }

    /// Removes an item; appends the matches that ended to `out`.
    pub fn remove_item(&mut self, id: u32, out: &mut Vec<MatchChange>) {
        self.unindex_item(id);
        for &s in self.item_matches.remove(&id).unwrap_or_default().as_slice() {
            if let Some(set) = self.matches.get_mut(&s) {
                set.remove(id);
            }
            out.push((s, id, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manul_model::Selector;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        pairs.to_vec()
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
            "global()",
            "app not in {'a'} && has(app) && env == 'prod'",
        ];
        let items = [
            labels(&[("app", "a")]),
            labels(&[("app", "b"), ("env", "dev")]),
            labels(&[("env", "prod")]),
            labels(&[]),
            labels(&[("app", "xy"), ("env", "prod")]),
            labels(&[("app", "xz"), ("env", "prod"), (NAMESPACE_LABEL, "n")]),
        ];
        for reversed in [false, true] {
            let mut syms = Interner::default();
            let mut idx = LabelIndex::default();
            let mut live: BTreeMap<(u32, u32), bool> = BTreeMap::new();
            let mut changes = Vec::new();
            fn record(live: &mut BTreeMap<(u32, u32), bool>, changes: &mut Vec<MatchChange>) {
                for (s, i, m) in changes.drain(..) {
                    let prev = live.insert((s, i), m);
                    assert_ne!(prev, Some(m), "a change that changes nothing was reported");
                }
            }
            let mut sel_order: Vec<usize> = (0..selectors.len()).collect();
            if reversed {
                sel_order.reverse();
            }
            let expr = |s: &str| Selector::parse(s).unwrap().expr().clone();
            for (n, s) in sel_order.iter().enumerate() {
                if n % 2 == 0 {
                    idx.update_selector(*s as u32, &expr(selectors[*s]), &mut syms, &mut changes);
                    record(&mut live, &mut changes);
                }
            }
            for (i, l) in items.iter().enumerate() {
                let l = syms.pairs(l.iter().copied());
                idx.update_item(i as u32, l, &mut changes);
                record(&mut live, &mut changes);
            }
            for (n, s) in sel_order.iter().enumerate() {
                if n % 2 == 1 {
                    idx.update_selector(*s as u32, &expr(selectors[*s]), &mut syms, &mut changes);
                    record(&mut live, &mut changes);
                }
            }
            // Relabel item 0 and item 2, remove item 3, replace a selector.
            let l = syms.pairs([("app", "b"), ("env", "dev")]);
            idx.update_item(0, l, &mut changes);
            record(&mut live, &mut changes);
            let l = syms.pairs([("app", "a")]);
            idx.update_item(2, l, &mut changes);
            record(&mut live, &mut changes);
            idx.remove_item(3, &mut changes);
            record(&mut live, &mut changes);
            idx.update_selector(4, &expr("env == 'dev'"), &mut syms, &mut changes);
            record(&mut live, &mut changes);
            let current_items: BTreeMap<u32, LabelMap> = [
                (0, vec![("app", "b"), ("env", "dev")]),
                (1, items[1].clone()),
                (2, vec![("app", "a")]),
                (4, items[4].clone()),
                (5, items[5].clone()),
            ]
            .into_iter()
            .map(|(i, l)| {
                (
                    i,
                    l.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect();
            let mut current_sel: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
            current_sel[4] = "env == 'dev'".into();
            for (s, text) in current_sel.iter().enumerate() {
                let sel = Selector::parse(text).unwrap();
                for (i, l) in &current_items {
                    let want = sel.matches(l);
                    let got = idx.matching(s as u32).any(|x| x == *i);
                    assert_eq!(got, want, "selector {text:?} item {i}");
                    assert_eq!(live.get(&(s as u32, *i)).copied().unwrap_or(false), want);
                }
                assert!(!idx.matching(s as u32).any(|x| x == 3));
            }
            idx.remove_selector(0, &mut changes);
            record(&mut live, &mut changes);
            assert_eq!(idx.matching(0).count(), 0);
        }
    }

    #[test]
    fn later_pairs_win_and_unused_strings_are_swept() {
        let mut syms = Interner::default();
        let l = syms.pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        let a = syms.intern("a");
        assert_eq!(l.len(), 2);
        assert_eq!(get(&l, &a).map(Sym::as_str), Some("3"));
        drop(l);
        for n in 0..5000 {
            let _ = syms.intern(&format!("v{n}"));
        }
        assert!(syms.len() < 5000, "{}", syms.len());
        assert_eq!(syms.intern("a"), a);
    }
}
