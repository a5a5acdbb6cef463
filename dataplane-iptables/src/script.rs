//! nft scripts: the whole table in one transaction, or only what changed
//! between two rendered states. Pure text; `nft -f` applies a script as
//! one atomic transaction.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::element::Element;
use crate::names::TABLE;
use crate::render::{Ruleset, SetDef};

/// Elements per `add element` line, so no line grows without bound.
const ELEMENTS_PER_LINE: usize = 2_000;

fn set_decl(out: &mut String, name: &str, def: &SetDef) {
    // Maps are declared with `add map`, sets with `add set`.
    let keyword = if def.type_.contains(" : ") {
        "map"
    } else {
        "set"
    };
    let clause = if def.type_.starts_with("typeof ") {
        ""
    } else {
        "type "
    };
    let _ = write!(
        out,
        "add {keyword} inet {TABLE} {name} {{ {clause}{};",
        def.type_
    );
    if def.interval {
        out.push_str(" flags interval;");
    }
    if let Some(timeout) = def.timeout {
        let _ = write!(out, " flags dynamic,timeout; timeout {timeout}s;");
    }
    if !def.comment.is_empty() {
        let _ = write!(out, " comment \"{}\";", def.comment);
    }
    out.push_str(" }\n");
}

/// `verb element` lines for `items`, in the order of their text (the
/// order nft scripts always had).
fn elements<'a>(out: &mut String, verb: &str, set: &str, items: impl Iterator<Item = &'a Element>) {
    let mut items: Vec<String> = items.map(ToString::to_string).collect();
    items.sort_unstable();
    for chunk in items.chunks(ELEMENTS_PER_LINE) {
        let list: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(
            out,
            "{verb} element inet {TABLE} {set} {{ {} }}",
            list.join(", ")
        );
    }
}

fn rules(out: &mut String, chain: &str, rules: &[crate::render::RuleText]) {
    for r in rules {
        let _ = writeln!(
            out,
            "add rule inet {TABLE} {chain} {} comment \"{}\"",
            r.text, r.comment
        );
    }
}

fn declare_set(out: &mut String, name: &str, def: &SetDef) {
    set_decl(out, name, def);
    elements(out, "add", name, def.elements.iter());
}

/// The whole table, replacing whatever table of that name exists, in one
/// transaction: nothing is ever missing in between.
pub fn full(rs: &Ruleset) -> String {
    full_except(rs, |_| false)
}

/// Whether the netlink writer (`elements.rs`) can write a set's elements:
/// a layout it knows, no intervals, no timeout.
fn by_netlink(def: &SetDef) -> bool {
    !def.interval && def.timeout.is_none() && crate::element::layout(def.type_).is_some()
}

/// The whole table split in two for one batch: the script without the
/// elements of the sets the netlink writer can write (for `nft` to
/// compile, see `compiled.rs`), and those elements, to be sent after
/// the script's messages. Most of a large table's volume is the service
/// maps' elements, which `nft` would spend most of its time parsing.
pub fn full_split(rs: &Ruleset) -> (String, Vec<crate::elements::SetChange<'_>>) {
    let script = full_except(rs, by_netlink);
    let mut out = Vec::new();
    for maps in [false, true] {
        for (name, def) in rs.sets.iter().filter(|(_, d)| is_map(d) == maps) {
            if by_netlink(def) && !def.elements.is_empty() {
                out.push(crate::elements::SetChange {
                    set: name,
                    type_: def.type_,
                    add: true,
                    elements: def.elements.iter().collect(),
                });
            }
        }
    }
    (script, out)
}

/// [`full`] without the elements of the sets `skip` names.
fn full_except(rs: &Ruleset, skip: impl Fn(&SetDef) -> bool) -> String {
    let mut out = String::new();
    // `add` then `delete` makes the delete succeed whether or not the table
    // exists; the kernel applies the file as one transaction.
    let _ = writeln!(out, "add table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    let _ = writeln!(out, "add table inet {TABLE}");
    // Sets first (rules name them), chains next, then the verdict maps'
    // elements (they name chains).
    for (name, def) in rs.sets.iter().filter(|(_, d)| !is_map(d)) {
        set_decl(&mut out, name, def);
        if !skip(def) {
            elements(&mut out, "add", name, def.elements.iter());
        }
    }
    for (name, def) in rs.sets.iter().filter(|(_, d)| is_map(d)) {
        set_decl(&mut out, name, def);
    }
    for name in rs.chains.keys() {
        let _ = writeln!(out, "add chain inet {TABLE} {name}");
    }
    for (name, r) in &rs.chains {
        rules(&mut out, name, r);
    }
    for (name, def) in rs.sets.iter().filter(|(_, d)| is_map(d) && !skip(d)) {
        elements(&mut out, "add", name, def.elements.iter());
    }
    for (name, spec, r) in &rs.base {
        let _ = writeln!(out, "add chain inet {TABLE} {name} {{ {spec} }}");
        rules(&mut out, name, r);
    }
    out
}

/// The changes that turn `old` into `new`; empty when nothing changed.
/// Order: new sets and elements, new chains, rewritten chains, map
/// entries, then the removal of what is no longer used (flushed before it
/// is deleted, so references among removed chains do not matter).
pub fn incremental(old: &Ruleset, new: &Ruleset) -> String {
    incremental_except(old, new, &|_| false)
}

/// [`incremental`] without the element changes of the sets `skip` names.
fn incremental_except(old: &Ruleset, new: &Ruleset, skip: &dyn Fn(&String) -> bool) -> String {
    let mut out = String::new();
    sets(&mut out, old, new, false, skip);
    chains(&mut out, old, new);
    sets(&mut out, old, new, true, skip);
    removals(&mut out, old, new);
    out
}

/// [`incremental`] split in three for one batch (see `full_write.rs`):
/// the element deletions of the sets the netlink writer can write and
/// that `old` and `new` declare alike, the script without those changes
/// (for `nft` to compile), and their element additions. `None` when the
/// script would remove a chain or a set: `nft` checks the script against
/// the kernel's table, where elements deleted by the first part may
/// still name what it removes.
pub fn incremental_split<'a>(old: &'a Ruleset, new: &'a Ruleset) -> Option<Split<'a>> {
    let alike = |name: &String| -> Option<&'a SetDef> {
        let (o, n) = (old.sets.get(name)?, new.sets.get(name)?);
        let same = o.type_ == n.type_ && o.interval == n.interval && o.timeout == n.timeout;
        (same && by_netlink(n)).then_some(n)
    };
    if old.chains.keys().any(|c| !new.chains.contains_key(c))
        || old.sets.keys().any(|s| !new.sets.contains_key(s))
    {
        return None;
    }
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for maps in [false, true] {
        for (name, def) in new.sets.iter().filter(|(_, d)| is_map(d) == maps) {
            if alike(name).is_none() {
                continue;
            }
            let o = &old.sets[name];
            let gone: Vec<&Element> = o.elements.difference(&def.elements).collect();
            let added: Vec<&Element> = def.elements.difference(&o.elements).collect();
            if !gone.is_empty() {
                deletes.push(crate::elements::SetChange {
                    set: name,
                    type_: def.type_,
                    add: false,
                    elements: gone,
                });
            }
            if !added.is_empty() {
                adds.push(crate::elements::SetChange {
                    set: name,
                    type_: def.type_,
                    add: true,
                    elements: added,
                });
            }
        }
    }
    Some(Split {
        deletes,
        script: incremental_except(old, new, &|name| alike(name).is_some()),
        adds,
    })
}

/// A write in three parts, in this order, for one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    pub deletes: Vec<crate::elements::SetChange<'a>>,
    pub script: String,
    pub adds: Vec<crate::elements::SetChange<'a>>,
}

/// When turning `old` into `new` changes elements of sets that `programmed`
/// holds and nothing else (no chain, no set created or removed, no set the
/// packet path fills): those changes, in the order [`incremental`] writes
/// them (plain sets, then verdict maps; within a set, deletions first).
pub fn element_changes<'a>(
    programmed: &'a Ruleset,
    old: &'a Ruleset,
    new: &'a Ruleset,
) -> Option<Vec<crate::elements::SetChange<'a>>> {
    if !old.chains.is_empty() || !new.chains.is_empty() {
        return None;
    }
    if !old.sets.keys().eq(new.sets.keys()) {
        return None;
    }
    let mut out = Vec::new();
    for maps in [false, true] {
        for (name, def) in new.sets.iter().filter(|(_, d)| is_map(d) == maps) {
            let held = programmed.sets.get(name)?;
            let o = old.sets.get(name)?;
            if held.type_ != def.type_ || held.interval || held.timeout.is_some() {
                return None;
            }
            for (add, elements) in [
                (false, o.elements.difference(&def.elements)),
                (true, def.elements.difference(&o.elements)),
            ] {
                let elements: Vec<&Element> = elements.collect();
                if !elements.is_empty() {
                    out.push(crate::elements::SetChange {
                        set: name,
                        type_: def.type_,
                        add,
                        elements,
                    });
                }
            }
        }
    }
    Some(out)
}

fn is_map(def: &SetDef) -> bool {
    def.type_.contains(": verdict")
}

/// New sets and changed elements, of plain sets or of verdict maps.
fn sets(
    out: &mut String,
    old: &Ruleset,
    new: &Ruleset,
    maps: bool,
    skip: &dyn Fn(&String) -> bool,
) {
    for (name, def) in new.sets.iter().filter(|(_, d)| is_map(d) == maps) {
        match old.sets.get(name) {
            Some(_) if skip(name) => {}
            None => declare_set(out, name, def),
            Some(o)
                if o.type_ != def.type_
                    || o.interval != def.interval
                    || o.timeout != def.timeout =>
            {
                // Never happens for a given name, but be exact if it does.
                let _ = writeln!(out, "delete set inet {TABLE} {name}");
                declare_set(out, name, def);
            }
            Some(o) => {
                // Removed elements first: an aggregated network may be
                // replaced by one that overlaps it.
                elements(out, "delete", name, o.elements.difference(&def.elements));
                elements(out, "add", name, def.elements.difference(&o.elements));
            }
        }
    }
}

/// New and rewritten chains.
fn chains(out: &mut String, old: &Ruleset, new: &Ruleset) {
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(out, "add chain inet {TABLE} {name}");
    }
    for (name, r) in &new.chains {
        match old.chains.get(name) {
            None => rules(out, name, r),
            Some(o) if o != r => {
                let _ = writeln!(out, "flush chain inet {TABLE} {name}");
                rules(out, name, r);
            }
            Some(_) => {}
        }
    }
}

/// What is no longer used, after everything stopped naming it.
fn removals(out: &mut String, old: &Ruleset, new: &Ruleset) {
    let gone: BTreeSet<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain inet {TABLE} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain inet {TABLE} {name}");
    }
    for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let _ = writeln!(out, "delete set inet {TABLE} {name}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::element::Value;
    use crate::render::RuleText;

    fn set(elements: &[&str]) -> SetDef {
        SetDef {
            type_: "ipv4_addr",
            interval: true,
            timeout: None,
            comment: "sel:all()".into(),
            elements: elements
                .iter()
                .map(|s| {
                    Element::key(vec![if s.contains('/') {
                        Value::Net(s.parse().unwrap())
                    } else {
                        Value::Addr(s.parse().unwrap())
                    }])
                })
                .collect(),
        }
    }

    fn rule(text: &str) -> RuleText {
        RuleText {
            text: text.into(),
            comment: "c".into(),
        }
    }

    fn ruleset(sets: &[(&str, SetDef)], chains: &[(&str, Vec<RuleText>)]) -> Ruleset {
        Ruleset {
            sets: sets
                .iter()
                .map(|(n, d)| (n.to_string(), d.clone()))
                .collect(),
            chains: chains
                .iter()
                .map(|(n, r)| (n.to_string(), r.clone()))
                .collect::<BTreeMap<_, _>>(),
            base: crate::render::base_chains(&crate::render::NftConfig::default()),
        }
    }

    #[test]
    fn nothing_changed_means_no_script() {
        let rs = ruleset(&[("s", set(&["10.0.0.1"]))], &[("c", vec![rule("drop")])]);
        assert_eq!(incremental(&rs, &rs), "");
    }

    #[test]
    fn only_changed_objects_are_touched() {
        let old = ruleset(
            &[("s", set(&["10.0.0.1", "10.0.0.2"])), ("gone", set(&[]))],
            &[
                ("a", vec![rule("drop")]),
                ("b", vec![rule("accept")]),
                ("old", vec![rule("jump a")]),
            ],
        );
        let new = ruleset(
            &[
                ("s", set(&["10.0.0.2", "10.0.0.3"])),
                ("t", set(&["10.1.0.0/16"])),
            ],
            &[
                ("a", vec![rule("drop")]),
                ("b", vec![rule("return")]),
                ("c", vec![rule("jump b")]),
            ],
        );
        let script = incremental(&old, &new);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            vec![
                "delete element inet manul s { 10.0.0.1 }",
                "add element inet manul s { 10.0.0.3 }",
                "add set inet manul t { type ipv4_addr; flags interval; comment \"sel:all()\"; }",
                "add element inet manul t { 10.1.0.0/16 }",
                "add chain inet manul c",
                "flush chain inet manul b",
                "add rule inet manul b return comment \"c\"",
                "add rule inet manul c jump b comment \"c\"",
                "flush chain inet manul old",
                "delete chain inet manul old",
                "delete set inet manul gone",
            ]
        );
    }

    #[test]
    fn full_replaces_the_table_atomically_and_declares_before_use() {
        let rs = ruleset(
            &[("s", set(&["10.0.0.1"]))],
            &[("a", vec![rule("ip saddr @s drop")])],
        );
        let script = full(&rs);
        let pos = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing"))
        };
        assert!(
            script.starts_with(
                "add table inet manul\ndelete table inet manul\nadd table inet manul\n"
            )
        );
        assert!(pos("add set inet manul s") < pos("add rule inet manul a"));
        assert!(pos("add chain inet manul a") < pos("add rule inet manul a"));
        assert!(pos("add rule inet manul a") < pos("add chain inet manul mnl-forward"));
    }

    #[test]
    fn big_sets_are_split_into_lines() {
        let many: Vec<String> = (0..5000u32)
            .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let rs = ruleset(&[("s", set(&refs))], &[]);
        let script = incremental(&Ruleset::default(), &rs);
        assert_eq!(
            script
                .lines()
                .filter(|l| l.starts_with("add element"))
                .count(),
            3
        );
    }
}
