//! Property tests: random expression trees, printed in random but
//! equivalent spellings, must parse to a canonical form that is a fixed
//! point and must match exactly what an independent oracle says.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{NAMESPACE_LABEL, Selector};

/// Label names, including keyword-like ones, which must still work as labels.
const LABELS: &[&str] = &[
    "a",
    "b.c/d-e_f",
    "in",
    "not",
    "all",
    "has",
    "with",
    NAMESPACE_LABEL,
];

/// Values used in selectors.
const VALUES: &[&str] = &["", "x", "y", "xy", "x y", "say \"hi\"", "it's"];

/// Values used in label maps: the selector values and a few more.
const MAP_VALUES: &[&str] = &[
    "",
    "x",
    "y",
    "xy",
    "x y",
    "say \"hi\"",
    "it's",
    "yx",
    "xyz",
    "hi",
];

/// The test's own expression tree, indexes into `LABELS` and `VALUES`.
#[derive(Clone, Debug)]
enum T {
    All,
    Global,
    Eq(usize, usize),
    Ne(usize, usize),
    In(usize, Vec<usize>),
    NotIn(usize, Vec<usize>),
    Has(usize),
    NotHas(usize),
    Contains(usize, usize),
    Starts(usize, usize),
    Ends(usize, usize),
    Not(Box<T>),
    And(Vec<T>),
    Or(Vec<T>),
}

fn leaf() -> impl Strategy<Value = T> {
    let l = 0..LABELS.len();
    let v = 0..VALUES.len();
    let set = prop::collection::vec(0..VALUES.len(), 0..4);
    prop_oneof![
        Just(T::All),
        Just(T::Global),
        (l.clone(), v.clone()).prop_map(|(l, v)| T::Eq(l, v)),
        (l.clone(), v.clone()).prop_map(|(l, v)| T::Ne(l, v)),
        (l.clone(), set.clone()).prop_map(|(l, s)| T::In(l, s)),
        (l.clone(), set).prop_map(|(l, s)| T::NotIn(l, s)),
        l.clone().prop_map(T::Has),
        l.clone().prop_map(T::NotHas),
        (l.clone(), v.clone()).prop_map(|(l, v)| T::Contains(l, v)),
        (l.clone(), v.clone()).prop_map(|(l, v)| T::Starts(l, v)),
        (l, v).prop_map(|(l, v)| T::Ends(l, v)),
    ]
}

fn tree() -> impl Strategy<Value = T> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| T::Not(Box::new(t))),
            prop::collection::vec(inner.clone(), 1..4).prop_map(T::And),
            prop::collection::vec(inner, 1..4).prop_map(T::Or),
        ]
    })
}

/// A label map: each label absent or set to one of `MAP_VALUES`.
fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::vec(prop::option::of(0..MAP_VALUES.len()), LABELS.len()).prop_map(|vals| {
        LABELS
            .iter()
            .zip(vals)
            .filter_map(|(l, v)| v.map(|v| ((*l).to_owned(), MAP_VALUES[v].to_owned())))
            .collect()
    })
}

/// The oracle: a direct reading of the semantics.
fn oracle(t: &T, m: &BTreeMap<String, String>) -> bool {
    let get = |l: &usize| m.get(LABELS[*l]).map(String::as_str);
    match t {
        T::All => true,
        T::Global => !m.contains_key(NAMESPACE_LABEL),
        T::Eq(l, v) => get(l) == Some(VALUES[*v]),
        T::Ne(l, v) => get(l) != Some(VALUES[*v]),
        T::In(l, s) => get(l).is_some_and(|x| s.iter().any(|v| VALUES[*v] == x)),
        T::NotIn(l, s) => !get(l).is_some_and(|x| s.iter().any(|v| VALUES[*v] == x)),
        T::Has(l) => get(l).is_some(),
        T::NotHas(l) => get(l).is_none(),
        T::Contains(l, v) => get(l).is_some_and(|x| x.contains(VALUES[*v])),
        T::Starts(l, v) => get(l).is_some_and(|x| x.starts_with(VALUES[*v])),
        T::Ends(l, v) => get(l).is_some_and(|x| x.ends_with(VALUES[*v])),
        T::Not(t) => !oracle(t, m),
        T::And(ts) => ts.iter().all(|t| oracle(t, m)),
        T::Or(ts) => ts.iter().any(|t| oracle(t, m)),
    }
}

/// A small xorshift generator driving the printing choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len())]
    }

    /// Optional whitespace.
    fn ws(&mut self) -> &'static str {
        self.pick(&["", "", "", " ", "  ", "\n", "\t", " \n\t"])
    }

    /// Required whitespace (between two words).
    fn sep(&mut self) -> &'static str {
        self.pick(&[" ", " ", "  ", "\n", "\t", " \r\n "])
    }
}

/// Where a printed sub-expression sits, to decide on required parentheses.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    /// Top level or inside parentheses: anything goes.
    Free,
    /// Operand of `||`: an `||` group would merge (harmless), `&&` binds tighter.
    OrOperand,
    /// Operand of `&&`: an `||` group needs parentheses.
    AndOperand,
    /// Operand of `!`: any group needs parentheses.
    NotOperand,
}

/// Prints `t` in a random, non-canonical but equivalent spelling.
fn print(t: &T, rng: &mut Rng, ctx: Ctx, out: &mut String) {
    let needs_parens = match t {
        T::And(items) if items.len() > 1 => ctx == Ctx::NotOperand,
        T::Or(items) if items.len() > 1 => matches!(ctx, Ctx::NotOperand | Ctx::AndOperand),
        _ => false,
    };
    let parens = needs_parens || rng.one_in(5);
    if parens {
        out.push('(');
        out.push_str(rng.ws());
    }
    let ctx = if parens { Ctx::Free } else { ctx };
    print_bare(t, rng, ctx, out);
    if parens {
        out.push_str(rng.ws());
        out.push(')');
    }
    out.push_str(rng.ws());
}

fn lit(v: &str, rng: &mut Rng, out: &mut String) {
    let q = if v.contains('"') {
        '\''
    } else if v.contains('\'') || rng.one_in(2) {
        '"'
    } else {
        '\''
    };
    out.push(q);
    out.push_str(v);
    out.push(q);
}

fn label_op(l: usize, op: &str, rng: &mut Rng, out: &mut String) {
    out.push_str(LABELS[l]);
    // Word operators need a separator after the label; symbols do not.
    let word = op.starts_with(|c: char| c.is_ascii_alphabetic());
    out.push_str(if word { rng.sep() } else { rng.ws() });
    out.push_str(op);
    out.push_str(rng.ws());
}

fn set(members: &[usize], rng: &mut Rng, out: &mut String) {
    let mut members: Vec<usize> = members.to_vec();
    // Random duplicates and order.
    for _ in 0..rng.below(3) {
        if !members.is_empty() {
            members.push(members[rng.below(members.len())]);
        }
    }
    for i in (1..members.len()).rev() {
        members.swap(i, rng.below(i + 1));
    }
    out.push('{');
    out.push_str(rng.ws());
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
            out.push_str(rng.ws());
        }
        lit(VALUES[*m], rng, out);
        out.push_str(rng.ws());
    }
    out.push('}');
}

fn print_bare(t: &T, rng: &mut Rng, ctx: Ctx, out: &mut String) {
    match t {
        T::All => {
            out.push_str("all");
            out.push_str(rng.ws());
            out.push('(');
            out.push_str(rng.ws());
            out.push(')');
        }
        T::Global => {
            out.push_str("global");
            out.push_str(rng.ws());
            out.push_str("()");
        }
        T::Eq(l, v) => {
            label_op(*l, "==", rng, out);
            lit(VALUES[*v], rng, out);
        }
        T::Ne(l, v) => {
            label_op(*l, "!=", rng, out);
            lit(VALUES[*v], rng, out);
        }
        T::In(l, s) => {
            label_op(*l, "in", rng, out);
            set(s, rng, out);
        }
        T::NotIn(l, s) => {
            if rng.one_in(2) {
                label_op(*l, "notin", rng, out);
            } else {
                let op = format!("not{}in", rng.sep());
                label_op(*l, &op, rng, out);
            }
            set(s, rng, out);
        }
        T::Has(l) | T::NotHas(l) => {
            if matches!(t, T::NotHas(_)) {
                out.push('!');
                out.push_str(rng.ws());
            }
            out.push_str("has");
            out.push_str(rng.ws());
            out.push('(');
            out.push_str(rng.ws());
            out.push_str(LABELS[*l]);
            out.push_str(rng.ws());
            out.push(')');
        }
        T::Contains(l, v) => {
            label_op(*l, "contains", rng, out);
            lit(VALUES[*v], rng, out);
        }
        T::Starts(l, v) | T::Ends(l, v) => {
            let word = if matches!(t, T::Starts(..)) {
                "starts"
            } else {
                "ends"
            };
            let op = if rng.one_in(2) {
                format!("{word}with")
            } else {
                format!("{word}{}with", rng.sep())
            };
            label_op(*l, &op, rng, out);
            lit(VALUES[*v], rng, out);
        }
        T::Not(inner) => {
            out.push('!');
            out.push_str(rng.ws());
            print(inner, rng, Ctx::NotOperand, out);
        }
        T::And(items) | T::Or(items) => {
            let (op, operand_ctx) = if matches!(t, T::And(_)) {
                ("&&", Ctx::AndOperand)
            } else {
                ("||", Ctx::OrOperand)
            };
            // A single operand inherits the context.
            let operand_ctx = if items.len() == 1 { ctx } else { operand_ctx };
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                    out.push_str(rng.ws());
                }
                print(item, rng, operand_ctx, out);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_spellings_agree_with_the_oracle(
        t in tree(),
        seed in 1u64..,
        maps in prop::collection::vec(label_map(), 4),
    ) {
        let mut rng = Rng(seed);
        let mut text = String::new();
        out_ws(&mut rng, &mut text);
        print(&t, &mut rng, Ctx::Free, &mut text);

        let sel = Selector::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let canonical = sel.canonical().to_owned();
        let reparsed = Selector::parse(&canonical)
            .map_err(|e| TestCaseError::fail(format!("canonical {canonical:?}: {e}")))?;
        // (1) The canonical form is a fixed point.
        prop_assert_eq!(reparsed.canonical(), canonical.as_str());
        prop_assert_eq!(reparsed.expr(), sel.expr());
        prop_assert_eq!(&reparsed, &sel);
        // (2) Both texts match like the oracle.
        for m in &maps {
            let want = oracle(&t, m);
            prop_assert_eq!(sel.matches(m), want, "text {:?} labels {:?}", text, m);
            prop_assert_eq!(reparsed.matches(m), want, "canonical {:?} labels {:?}", canonical, m);
        }
    }

    #[test]
    fn token_soup_never_panics(
        parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..24),
    ) {
        let text = parts.concat();
        match Selector::parse(&text) {
            Ok(sel) => {
                let again = Selector::parse(sel.canonical())
                    .map_err(|e| TestCaseError::fail(format!("canonical of {text:?}: {e}")))?;
                prop_assert_eq!(again.canonical(), sel.canonical());
            }
            Err(e) => {
                prop_assert!(e.position <= text.len());
                prop_assert!(text.is_char_boundary(e.position));
                prop_assert!(!e.reason.is_empty());
                let expected = format!("at position {}", e.position);
                prop_assert!(e.to_string().contains(&expected));
            }
        }
    }
}

fn out_ws(rng: &mut Rng, out: &mut String) {
    out.push_str(rng.ws());
}

const FRAGMENTS: &[&str] = &[
    "a",
    "b",
    " ",
    "\n",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "==",
    "!=",
    "\"x\"",
    "'y'",
    "'",
    "\"",
    "in",
    "not",
    "notin",
    "{",
    "}",
    ",",
    "has",
    "all",
    "global",
    "contains",
    "starts",
    "with",
    "startswith",
    "ends",
    "endswith",
    "=",
    "&",
    "|",
    "é",
    "~",
];
