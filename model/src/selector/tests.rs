//! Table-driven tests of the selector parser, printer and evaluator.

use std::collections::{BTreeMap, HashMap};

use super::{Expr, Labels, NAMESPACE_LABEL, Selector};

pub(super) fn parse(s: &str) -> Selector {
    match Selector::parse(s) {
        Ok(sel) => sel,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

/// Valid spellings and their canonical form.
const CANONICAL: &[(&str, &str)] = &[
    // Empty selector and the functions.
    ("", "all()"),
    ("   \n\t  ", "all()"),
    ("all()", "all()"),
    (" all ( ) ", "all()"),
    ("global()", "global()"),
    ("global\n(\n)", "global()"),
    // Comparisons, spacing and quotes.
    (r#"app == "api""#, r#"app == "api""#),
    ("app=='api'", r#"app == "api""#),
    ("app\t==\n'api'", r#"app == "api""#),
    (r#"app != "api""#, r#"app != "api""#),
    ("app!='api'", r#"app != "api""#),
    (r#"a == """#, r#"a == """#),
    ("a == ''", r#"a == """#),
    (r#"a == 'say "hi"'"#, r#"a == 'say "hi"'"#),
    (r#"a == "it's""#, r#"a == "it's""#),
    (r#"a == " spaced  out ""#, r#"a == " spaced  out ""#),
    ("a == \"new\nline\"", "a == \"new\nline\""),
    (r#"a == "&& || ! ( ) { } ,""#, r#"a == "&& || ! ( ) { } ,""#),
    // Sets.
    (r#"a in {"v1", "v2"}"#, r#"a in {"v1", "v2"}"#),
    (r#"a in {"v2","v1","v2"}"#, r#"a in {"v1", "v2"}"#),
    ("a in {'b', \"a\", 'c', 'a'}", r#"a in {"a", "b", "c"}"#),
    ("a in {}", "a in {}"),
    ("a in{ }", "a in {}"),
    ("a not in {}", "a not in {}"),
    (r#"a not in {"x"}"#, r#"a not in {"x"}"#),
    (r#"a notin {"y", "x"}"#, r#"a not in {"x", "y"}"#),
    ("a not \n in\t{'x'}", r#"a not in {"x"}"#),
    (r#"a in {'x"', "y"}"#, r#"a in {'x"', "y"}"#),
    (
        r#"a in {"B", "a", "A", "b"}"#,
        r#"a in {"A", "B", "a", "b"}"#,
    ),
    // has.
    ("has(a)", "has(a)"),
    (" has ( a ) ", "has(a)"),
    ("!has(a)", "!has(a)"),
    ("! has(a)", "!has(a)"),
    ("!!has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("!(has(a))", "!has(a)"),
    ("!(!has(a))", "has(a)"),
    // String operators and their alternative spellings.
    (r#"a contains "s""#, r#"a contains "s""#),
    ("a contains's'", r#"a contains "s""#),
    (r#"a starts with "s""#, r#"a starts with "s""#),
    ("a starts  \n with 's'", r#"a starts with "s""#),
    (r#"a startswith "s""#, r#"a starts with "s""#),
    (r#"a ends with "s""#, r#"a ends with "s""#),
    (r#"a endswith "s""#, r#"a ends with "s""#),
    // Label names, including keywords used as labels.
    (
        "kubernetes.io/metadata.name == 'kube-system'",
        r#"kubernetes.io/metadata.name == "kube-system""#,
    ),
    (
        "has(node-role.kubernetes.io/worker)",
        "has(node-role.kubernetes.io/worker)",
    ),
    ("pcns.team=='a'", r#"pcns.team == "a""#),
    (
        "projectcalico.org/namespace == 'ns'",
        r#"projectcalico.org/namespace == "ns""#,
    ),
    ("Under_score-9 == 'x'", r#"Under_score-9 == "x""#),
    ("9 == 'x'", r#"9 == "x""#),
    ("in == 'x'", r#"in == "x""#),
    ("in in {'x'}", r#"in in {"x"}"#),
    ("all == 'x'", r#"all == "x""#),
    ("has == 'x'", r#"has == "x""#),
    ("global != 'x'", r#"global != "x""#),
    ("has(has)", "has(has)"),
    ("has(in)", "has(in)"),
    ("not not in {'x'}", r#"not not in {"x"}"#),
    ("notin notin {}", "notin not in {}"),
    ("contains contains 'c'", r#"contains contains "c""#),
    ("starts starts with 's'", r#"starts starts with "s""#),
    ("with == 'w'", r#"with == "w""#),
    ("ends ends with 'e'", r#"ends ends with "e""#),
    ("endswith endswith 'e'", r#"endswith ends with "e""#),
    // Precedence and grouping.
    (
        "a == '1' || b == '2' && c == '3'",
        r#"(a == "1" || (b == "2" && c == "3"))"#,
    ),
    (
        "a == '1' && b == '2' || c == '3'",
        r#"((a == "1" && b == "2") || c == "3")"#,
    ),
    (
        "(a == '1' || b == '2') && c == '3'",
        r#"((a == "1" || b == "2") && c == "3")"#,
    ),
    ("a=='1'&&b=='2'", r#"(a == "1" && b == "2")"#),
    ("a=='1'||b=='2'", r#"(a == "1" || b == "2")"#),
    ("((((a == '1'))))", r#"a == "1""#),
    ("(all())", "all()"),
    // Flattening keeps operand order.
    (
        "c == '3' && (b == '2' && a == '1')",
        r#"(c == "3" && b == "2" && a == "1")"#,
    ),
    (
        "((a == '1' && b == '2') && c == '3') && d == '4'",
        r#"(a == "1" && b == "2" && c == "3" && d == "4")"#,
    ),
    (
        "a == '1' || (b == '2' || (c == '3' && d == '4'))",
        r#"(a == "1" || b == "2" || (c == "3" && d == "4"))"#,
    ),
    (
        "a == '1' && !!(b == '2' && c == '3')",
        r#"(a == "1" && b == "2" && c == "3")"#,
    ),
    ("has(a) && has(a)", "(has(a) && has(a))"),
    // Negation normalisation.
    ("!a == 'b'", r#"a != "b""#),
    ("!(a == 'b')", r#"a != "b""#),
    ("!(a != 'b')", r#"a == "b""#),
    ("!!a == 'b'", r#"a == "b""#),
    ("!(a in {'y', 'x'})", r#"a not in {"x", "y"}"#),
    ("!a not in {'x'}", r#"a in {"x"}"#),
    ("!a notin {}", "a in {}"),
    ("!a contains 'x'", r#"!(a contains "x")"#),
    ("!(a contains 'x')", r#"!(a contains "x")"#),
    ("!!a contains 'x'", r#"a contains "x""#),
    ("!a starts with 'x'", r#"!(a starts with "x")"#),
    ("!a endswith 'x'", r#"!(a ends with "x")"#),
    ("!all()", "!(all())"),
    ("!(!(all()))", "all()"),
    ("!global()", "!(global())"),
    ("!(a == '1' && b == '2')", r#"!((a == "1" && b == "2"))"#),
    ("!(a == '1' || b == '2')", r#"!((a == "1" || b == "2"))"#),
    ("!!(a == '1' && b == '2')", r#"(a == "1" && b == "2")"#),
    ("!(!(a == '1') && b == '2')", r#"!((a != "1" && b == "2"))"#),
    (
        "a == '1' && !(b == '2' && c == '3')",
        r#"(a == "1" && !((b == "2" && c == "3")))"#,
    ),
    (
        "!has(a) || !a in {'x'} && !global()",
        r#"(!has(a) || (a not in {"x"} && !(global())))"#,
    ),
    // A realistic one.
    (
        "app == 'api' && tier in {'db', 'backend'} && has(version) && env != 'dev'",
        r#"(app == "api" && tier in {"backend", "db"} && has(version) && env != "dev")"#,
    ),
];

#[test]
fn canonical_forms() {
    for &(text, want) in CANONICAL {
        let sel = parse(text);
        assert_eq!(sel.canonical(), want, "canonical form of {text:?}");
        assert_eq!(sel.to_string(), want, "Display of {text:?}");
        assert_eq!(sel.source(), text, "source of {text:?}");
    }
}

#[test]
fn canonical_form_is_a_fixed_point() {
    for &(text, _) in CANONICAL {
        let sel = parse(text);
        let again = parse(sel.canonical());
        assert_eq!(again.canonical(), sel.canonical(), "re-parsing {text:?}");
        assert_eq!(again.expr(), sel.expr(), "tree of re-parsed {text:?}");
        assert_eq!(again, sel);
    }
}

type Case = (&'static str, &'static [(&'static str, &'static str)], bool);

const NS: &str = NAMESPACE_LABEL;

/// (selector, labels, expected match).
const MATCHES: &[Case] = &[
    ("", &[], true),
    ("", &[("a", "1")], true),
    ("all()", &[], true),
    ("!all()", &[("a", "1")], false),
    // global() looks only at the namespace label.
    ("global()", &[], true),
    ("global()", &[("a", "1")], true),
    ("global()", &[(NS, "default")], false),
    ("global()", &[(NS, "")], false),
    ("!global()", &[(NS, "default")], true),
    ("!global()", &[], false),
    // ==
    ("a == '1'", &[("a", "1")], true),
    ("a == '1'", &[("a", "2")], false),
    ("a == '1'", &[("a", "10")], false),
    ("a == '1'", &[("b", "1")], false),
    ("a == ''", &[("a", "")], true),
    ("a == ''", &[], false),
    // !=
    ("a != '1'", &[("a", "1")], false),
    ("a != '1'", &[("a", "2")], true),
    ("a != '1'", &[], true),
    ("a != ''", &[], true),
    ("!a == '1'", &[], true),
    // in
    ("a in {'1', '2'}", &[("a", "1")], true),
    ("a in {'1', '2'}", &[("a", "2")], true),
    ("a in {'1', '2'}", &[("a", "3")], false),
    ("a in {'1', '2'}", &[], false),
    ("a in {}", &[("a", "1")], false),
    ("a in {}", &[], false),
    ("a in {''}", &[("a", "")], true),
    // not in
    ("a not in {'1', '2'}", &[("a", "1")], false),
    ("a not in {'1', '2'}", &[("a", "3")], true),
    ("a not in {'1', '2'}", &[], true),
    ("a notin {}", &[("a", "1")], true),
    ("a notin {}", &[], true),
    ("!a in {'1'}", &[], true),
    // has
    ("has(a)", &[("a", "")], true),
    ("has(a)", &[("b", "1")], false),
    ("!has(a)", &[("a", "")], false),
    ("!has(a)", &[], true),
    ("!!has(a)", &[("a", "x")], true),
    // contains
    ("a contains 'pi'", &[("a", "api")], true),
    ("a contains 'pi'", &[("a", "ip")], false),
    ("a contains ''", &[("a", "")], true),
    ("a contains ''", &[], false),
    ("a contains 'pi'", &[], false),
    ("!a contains 'pi'", &[], true),
    // starts with
    ("a starts with 'ap'", &[("a", "api")], true),
    ("a startswith 'pi'", &[("a", "api")], false),
    ("a starts with ''", &[("a", "x")], true),
    ("a starts with 'ap'", &[], false),
    ("!a starts with 'ap'", &[], true),
    // ends with
    ("a ends with 'pi'", &[("a", "api")], true),
    ("a endswith 'ap'", &[("a", "api")], false),
    ("a ends with 'pi'", &[], false),
    ("!a ends with 'pi'", &[], true),
    // Quotes and odd values.
    (r#"a == 'say "hi"'"#, &[("a", r#"say "hi""#)], true),
    (r#"a == "it's""#, &[("a", "it's")], true),
    ("a == ' x '", &[("a", "x")], false),
    // Keyword-named labels.
    ("in == 'x'", &[("in", "x")], true),
    ("has(all)", &[("all", "")], true),
    ("not not in {'x'}", &[("not", "y")], true),
    ("not not in {'x'}", &[("not", "x")], false),
    // Precedence: && binds tighter than ||.
    ("a == '1' || b == '2' && c == '3'", &[("a", "1")], true),
    ("a == '1' || b == '2' && c == '3'", &[("b", "2")], false),
    (
        "a == '1' || b == '2' && c == '3'",
        &[("b", "2"), ("c", "3")],
        true,
    ),
    ("(a == '1' || b == '2') && c == '3'", &[("a", "1")], false),
    (
        "(a == '1' || b == '2') && c == '3'",
        &[("a", "1"), ("c", "3")],
        true,
    ),
    // ! applies to the following term only.
    ("!a == '1' && b == '2'", &[("b", "2")], true),
    ("!(a == '1' && b == '2')", &[("b", "2")], true),
    ("!(a == '1' && b == '2')", &[("a", "1"), ("b", "2")], false),
    ("!(a == '1' || b == '2')", &[("a", "3")], true),
    ("!(a == '1' || b == '2')", &[("b", "2")], false),
    // Typical policy selectors.
    (
        "app == 'api' && tier in {'backend', 'db'} && has(version) && env != 'dev'",
        &[
            ("app", "api"),
            ("tier", "db"),
            ("version", "1"),
            ("env", "prod"),
        ],
        true,
    ),
    (
        "app == 'api' && tier in {'backend', 'db'} && has(version) && env != 'dev'",
        &[
            ("app", "api"),
            ("tier", "db"),
            ("version", "1"),
            ("env", "dev"),
        ],
        false,
    ),
    (
        "app == 'api' && tier in {'backend', 'db'} && has(version) && env != 'dev'",
        &[("app", "api"), ("tier", "db"), ("version", "1")],
        true,
    ),
    (
        "kubernetes.io/metadata.name in {'kube-system', 'calico-system'}",
        &[("kubernetes.io/metadata.name", "calico-system")],
        true,
    ),
];

#[test]
fn matching() {
    for &(text, labels, want) in MATCHES {
        let sel = parse(text);
        assert_eq!(sel.matches(labels), want, "{text:?} against {labels:?}");
        // The canonical form matches the same way.
        let canon = parse(sel.canonical());
        assert_eq!(
            canon.matches(labels),
            want,
            "{:?} against {labels:?}",
            sel.canonical()
        );
        // And so do the other label containers.
        let btree: BTreeMap<String, String> = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let hash: HashMap<String, String> = btree.clone().into_iter().collect();
        let vec: Vec<(String, String)> = btree.clone().into_iter().collect();
        assert_eq!(
            sel.matches(&btree),
            want,
            "{text:?} against BTreeMap {btree:?}"
        );
        assert_eq!(
            sel.matches(&hash),
            want,
            "{text:?} against HashMap {hash:?}"
        );
        assert_eq!(sel.matches(&vec), want, "{text:?} against Vec {vec:?}");
        assert_eq!(sel.expr().matches(labels), want);
    }
}

#[test]
fn identity_equality_hash_and_order() {
    use std::collections::HashSet;
    let spellings = [
        "a == 'x' && b in {'2', '1', '1'}",
        "(a=='x')&&(b in {\"1\",\"2\"})",
        "!(a != 'x') && !b notin {'1','2'}",
        "a == 'x' && (b in {'1', '2'})",
    ];
    let sels: Vec<Selector> = spellings.iter().map(|s| parse(s)).collect();
    let set: HashSet<&Selector> = sels.iter().collect();
    assert_eq!(set.len(), 1);
    for s in &sels {
        assert_eq!(s, &sels[0]);
        assert_eq!(s.cmp(&sels[0]), std::cmp::Ordering::Equal);
    }
    // Operand order is part of the identity.
    assert_ne!(parse("has(a) && has(b)"), parse("has(b) && has(a)"));
    assert!(parse("a == '1'") < parse("b == '1'"));
}

#[test]
fn all_and_default() {
    let all = Selector::all();
    assert!(all.is_all());
    assert_eq!(all.canonical(), "all()");
    assert_eq!(all.source(), "all()");
    assert_eq!(all, parse(""));
    assert_eq!(all, parse("  all ( )  "));
    assert_eq!(Selector::default(), all);
    assert!(parse("").is_all());
    assert!(parse("!!all()").is_all());
    assert!(!parse("has(a)").is_all());
    assert!(!parse("all() && all()").is_all());
    assert_eq!(parse("   ").source(), "   ");
    assert_eq!("has(x)".parse::<Selector>().unwrap().canonical(), "has(x)");
}

#[test]
fn label_names() {
    let sel = parse("b == '1' && (a in {} || !has(b)) && c contains 'x' || global() || all()");
    let names: Vec<&str> = sel.label_names().collect();
    assert_eq!(names, ["a", "b", "c", NAMESPACE_LABEL]);
    assert_eq!(Selector::all().label_names().count(), 0);
    let sel = parse("x starts with 'a' && y ends with 'b' && z not in {'c'} && w != 'd'");
    let names: Vec<&str> = sel.label_names().collect();
    assert_eq!(names, ["w", "x", "y", "z"]);
}

#[test]
fn expr_tree_shape() {
    let sel = parse("tier notin {'b', 'a', 'b'} || !x contains 'y'");
    assert_eq!(
        sel.expr(),
        &Expr::Or(vec![
            Expr::NotIn {
                label: "tier".into(),
                values: vec!["a".into(), "b".into()],
            },
            Expr::Not(Box::new(Expr::Contains {
                label: "x".into(),
                value: "y".into(),
            })),
        ])
    );
}

#[test]
fn normalising_constructors() {
    let has = |l: &str| Expr::Has(l.to_owned());
    assert_eq!(Expr::and(vec![]), Expr::All);
    assert_eq!(Expr::or(vec![]).to_string(), "!(all())");
    assert!(!Expr::or(vec![]).matches(&[("a", "b")]));
    assert_eq!(Expr::and(vec![has("a")]), has("a"));
    assert_eq!(
        Expr::and(vec![Expr::and(vec![has("a"), has("b")]), has("c")]).to_string(),
        "(has(a) && has(b) && has(c))"
    );
    assert_eq!(
        Expr::or(vec![Expr::and(vec![has("a"), has("b")]), has("c")]).to_string(),
        "((has(a) && has(b)) || has(c))"
    );
    assert_eq!(has("a").negate(), Expr::NotHas("a".into()));
    assert_eq!(Expr::Global.negate().negate(), Expr::Global);
    // Hand-built degenerate groups print as their meaning.
    assert_eq!(Expr::And(vec![]).to_string(), "all()");
    assert_eq!(Expr::And(vec![has("a")]).to_string(), "has(a)");
}

#[test]
fn labels_impls() {
    let sel = parse("a == '1' && !has(b)");
    let btree_str: BTreeMap<&str, &str> = [("a", "1")].into();
    let hash_str: HashMap<&str, &str> = [("a", "1")].into();
    let vec_str: Vec<(&str, &str)> = vec![("a", "1"), ("a", "2")];
    assert!(sel.matches(&btree_str));
    assert!(sel.matches(&hash_str));
    assert!(sel.matches(&vec_str), "first pair wins");
    assert!(sel.matches(&[("a", "1")]));
    assert!(sel.matches(&&[("a", "1")]));
    assert!(!sel.matches(&[("a", "1"), ("b", "")]));
    let slice: &[(&str, &str)] = &[("a", "1")];
    assert!(sel.matches(slice));
    assert_eq!([("k", "v")].get_label("k"), Some("v"));
    assert_eq!([("k", "v")].get_label("v"), None);
}

#[test]
fn serde_round_trips_the_source() {
    let text = "app=='api'  &&  has(x)";
    let sel: Selector = serde_json::from_str(&serde_json::to_string(text).unwrap()).unwrap();
    assert_eq!(sel.source(), text);
    assert_eq!(sel.canonical(), r#"(app == "api" && has(x))"#);
    assert_eq!(
        serde_json::to_string(&sel).unwrap(),
        serde_json::to_string(text).unwrap()
    );

    let yaml = "selector: app == 'api' && tier in {'db'}\n";
    let doc: BTreeMap<String, Selector> = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(
        doc["selector"].canonical(),
        r#"(app == "api" && tier in {"db"})"#
    );
    let out = serde_yaml_ng::to_string(&doc).unwrap();
    let back: BTreeMap<String, Selector> = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(back["selector"].source(), "app == 'api' && tier in {'db'}");
}
