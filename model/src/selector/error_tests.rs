//! Tests of selector errors, limits and nesting.

use std::collections::BTreeMap;

use super::tests::parse;
use super::{Expr, MAX_NESTING_DEPTH, MAX_SELECTOR_LEN, Selector};

/// (selector, byte position of the error, part of the reason).
const BAD: &[(&str, usize, &str)] = &[
    (
        "app == api",
        7,
        "expected a quoted string after `==`, found `api`",
    ),
    (
        "a ==",
        4,
        "expected a quoted string after `==`, found the end of the selector",
    ),
    ("a !=", 4, "expected a quoted string after `!=`"),
    ("a == \"b", 5, "unterminated string: no closing `\"`"),
    ("a == 'b\"", 5, "unterminated string: no closing `'`"),
    (
        "(a == \"b\"",
        9,
        "expected `&&`, `||` or `)` to close the `(` at position 0",
    ),
    ("a == 'b' && (c == 'd' || e)", 26, "expected an operator"),
    (
        "a in {\"x\"",
        9,
        "expected `,` or `}` after set member `\"x\"`",
    ),
    ("a in {\"x\" \"y\"}", 10, "expected `,` or `}`"),
    ("a in {'x',}", 10, "expected a quoted string after `,`"),
    (
        "a in {x}",
        6,
        "expected a quoted string or `}` in the set, found `x`",
    ),
    ("a in 'x'", 5, "expected `{` after `in`"),
    ("a not in 'x'", 9, "expected `{` after `not in`"),
    ("a in", 4, "expected `{`"),
    ("has(a", 5, "expected `)` to close `has(`"),
    ("has(a b)", 6, "expected `)` to close `has(`, found `b`"),
    ("has()", 4, "expected a label name in `has(`, found `)`"),
    ("has('a')", 4, "expected a label name"),
    ("all(x)", 4, "expected `)` after `all(`"),
    ("global(", 7, "expected `)` after `global(`"),
    ("foo(a)", 0, "unknown function `foo`"),
    ("a === \"b\"", 4, "unexpected character `=`"),
    (
        "a = 'b'",
        2,
        "unexpected character `=`; equality is written `==`",
    ),
    ("a == 'b' & c == 'd'", 9, "conjunction is written `&&`"),
    ("a == 'b' | c == 'd'", 9, "disjunction is written `||`"),
    (
        "a == \"b\" &&",
        11,
        "after `&&`, found the end of the selector",
    ),
    ("a == 'b' ||", 11, "after `||`"),
    ("a == 'b' && || c == 'd'", 12, "after `&&`, found `||`"),
    (
        "&& a == \"b\"",
        0,
        "expected a label, `has(`, `all()`, `global()`, `!` or `(`, found `&&`",
    ),
    (
        "a == \"b\" c",
        9,
        "expected `&&`, `||` or the end of the selector, found `c`",
    ),
    (
        "a == 'b' (c == 'd')",
        9,
        "expected `&&`, `||` or the end of the selector",
    ),
    ("a == 'b')", 8, "unmatched `)`"),
    (")", 0, "expected a label"),
    ("a ~ \"b\"", 2, "unexpected character `~`"),
    ("a == 'é' §", 10, "unexpected character `§`"),
    ("a\u{0} == 'b'", 1, "unexpected character `\\0`"),
    ("!", 1, "after `!`, found the end of the selector"),
    ("!!", 2, "after `!`"),
    ("()", 1, "after `(`, found `)`"),
    (
        "a",
        1,
        "expected an operator (`==`, `!=`, `in`, `not in`, `contains`, `starts with` or `ends with`) after label `a`, found the end of the selector",
    ),
    ("a 'b'", 2, "expected an operator"),
    ("a is 'b'", 2, "expected an operator"),
    ("a not 'x'", 6, "expected `in` after `not`, found `'x'`"),
    ("a starts 'x'", 9, "expected `with` after `starts`"),
    ("a ends", 6, "expected `with` after `ends`"),
    (
        "a starts with",
        13,
        "expected a quoted string after `starts with`",
    ),
    (
        "a contains x",
        11,
        "expected a quoted string after `contains`",
    ),
    (
        "a != == 'b'",
        5,
        "expected a quoted string after `!=`, found `==`",
    ),
    ("a == 'b' && !", 13, "after `!`"),
    ("==", 0, "expected a label"),
];

#[test]
fn bad_selectors() {
    for &(text, position, reason) in BAD {
        let err = match Selector::parse(text) {
            Ok(sel) => panic!("{text:?} should not parse, got {:?}", sel.canonical()),
            Err(e) => e,
        };
        assert_eq!(err.selector, text);
        assert_eq!(err.position, position, "position for {text:?}: {err}");
        assert!(
            err.reason.contains(reason),
            "reason for {text:?} should contain {reason:?}: {err}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("at position {position}: ")),
            "{shown}"
        );
        assert!(shown.contains(&err.reason), "{shown}");
    }
}

#[test]
fn error_display() {
    let err = Selector::parse("app == api").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid selector \"app == api\": at position 7: \
         expected a quoted string after `==`, found `api`"
    );
    let err = Selector::parse("a == 'b\" c").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid selector \"a == 'b\\\" c\": at position 5: unterminated string: no closing `'`"
    );
}

#[test]
fn deep_nesting_is_a_clean_error() {
    let limit = MAX_NESTING_DEPTH;
    for text in [
        "(".repeat(10_000),
        format!("{}a == 'b'{}", "(".repeat(5_000), ")".repeat(5_000)),
        format!("{}has(a)", "!".repeat(10_000)),
        format!("{}has(a)", "!(".repeat(5_000)),
        format!("{}a == 'b'", "( ".repeat(limit + 1)),
    ] {
        let err = Selector::parse(&text).unwrap_err();
        let nth_open = text
            .char_indices()
            .filter(|&(_, c)| c == '(' || c == '!')
            .nth(limit)
            .map(|(i, _)| i)
            .unwrap();
        assert_eq!(err.position, nth_open, "{err}");
        assert!(err.reason.contains("nesting deeper than 128"), "{err}");
        // The message quotes an excerpt, not 10,000 characters.
        assert!(err.to_string().len() < 400, "{err}");
    }
}

#[test]
fn nesting_up_to_the_limit_parses() {
    let limit = MAX_NESTING_DEPTH;
    let parens = format!("{}a == 'b'{}", "(".repeat(limit), ")".repeat(limit));
    assert_eq!(parse(&parens).canonical(), r#"a == "b""#);

    let nots = format!("{}has(a)", "!".repeat(limit));
    assert_eq!(parse(&nots).canonical(), "has(a)");

    // Alternating `!(` produces a nested tree; it still evaluates and prints.
    let half = limit / 2;
    let mixed = format!(
        "{}a contains 'x' && b == 'y'{}",
        "!(".repeat(half),
        ")".repeat(half)
    );
    let sel = parse(&mixed);
    assert_eq!(sel.canonical(), r#"(a contains "x" && b == "y")"#);
    let odd = format!(
        "{}a contains 'x' && has(b){}",
        "!(".repeat(half - 1),
        ")".repeat(half - 1)
    );
    let sel = parse(&odd);
    assert_eq!(sel.canonical(), r#"!((a contains "x" && has(b)))"#);
    assert!(sel.matches(&[("b", "")]));
    assert!(!sel.matches(&[("a", "x"), ("b", "")]));
}

#[test]
fn long_flat_chains_do_not_recurse() {
    let text = vec!["has(a)"; 1500].join(" && ");
    assert!(text.len() <= MAX_SELECTOR_LEN);
    let sel = parse(&text);
    assert!(matches!(sel.expr(), Expr::And(items) if items.len() == 1500));
    assert!(sel.matches(&[("a", "")]));
    assert_eq!(parse(sel.canonical()), sel);

    let text = vec!["!a == 'b'"; 1000].join(" || ");
    let sel = parse(&text);
    assert!(matches!(sel.expr(), Expr::Or(items) if items.len() == 1000));
    assert!(sel.matches(&[("a", "c")]));
    assert!(!sel.matches(&[("a", "b")]));
}

#[test]
fn length_limit() {
    let fits = format!("a == '{}'", "x".repeat(MAX_SELECTOR_LEN - 7));
    assert_eq!(fits.len(), MAX_SELECTOR_LEN);
    assert!(Selector::parse(&fits).is_ok());

    let too_long = format!("a == '{}'", "x".repeat(MAX_SELECTOR_LEN - 6));
    let err = Selector::parse(&too_long).unwrap_err();
    assert_eq!(err.position, MAX_SELECTOR_LEN);
    assert!(err.reason.contains("the limit is 16384 bytes"), "{err}");
    assert!(err.reason.contains("16385 bytes long"), "{err}");
    let shown = err.to_string();
    assert!(shown.len() < 400, "{shown}");
    assert!(shown.contains("(16385 bytes)"), "{shown}");

    let whitespace = " ".repeat(MAX_SELECTOR_LEN + 1);
    assert_eq!(
        Selector::parse(&whitespace).unwrap_err().position,
        MAX_SELECTOR_LEN
    );
}

#[test]
fn long_error_excerpt_is_on_char_boundaries() {
    // Multi-byte characters around the cut points must not panic.
    let text = format!("a == '{}' ~", "é".repeat(300));
    let err = Selector::parse(&text).unwrap_err();
    assert_eq!(err.position, text.len() - 1);
    let shown = err.to_string();
    assert!(shown.starts_with("invalid selector \"…é"), "{shown}");
    assert!(
        shown.contains(&format!("({} bytes)", text.len())),
        "{shown}"
    );
}

#[test]
fn serde_error_names_text_and_position() {
    let err = serde_json::from_str::<Selector>(r#""app == api""#).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(
            "invalid selector \"app == api\": at position 7: \
             expected a quoted string after `==`, found `api`"
        ),
        "{shown}"
    );
    let err = serde_yaml_ng::from_str::<BTreeMap<String, Selector>>("selector: has(a\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid selector \"has(a\": at position 5"),
        "{err}"
    );
    assert!(serde_json::from_str::<Selector>("42").is_err());
}

#[test]
fn label_keys_longer_than_kubernetes_allows_are_refused_at_their_position() {
    let name63 = "n".repeat(63);
    let name64 = "n".repeat(64);
    let label253 = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    let label254 = format!("{label253}e");
    assert_eq!(label253.len(), 253);
    // Longest allowed: parse.
    for text in [
        format!("{name63} == 'x'"),
        format!("has({label253}/{name63})"),
        "example.com/app in {'a'}".to_string(),
    ] {
        assert!(Selector::parse(&text).is_ok(), "{text}");
    }
    // (selector, position, part of the reason).
    let bad: Vec<(String, usize, String)> = vec![
        (
            format!("{name64} == 'x'"),
            0,
            "is 64 characters long; the limit is 63".into(),
        ),
        (
            format!("a == 'b' && has(x/{name64})"),
            16,
            "label name \"nnnnnnnnnnnnnnnnnnnn\"... is 64 characters long".into(),
        ),
        (
            format!("!{label254}/app == 'x'"),
            1,
            "label key prefix".into(),
        ),
        (
            format!("{label254}/app == 'x'"),
            0,
            "is 254 characters long; the limit is 253".into(),
        ),
        (
            "Example.com/app == 'x'".into(),
            0,
            "not a valid DNS-1123 subdomain".into(),
        ),
        ("a/b/c == 'x'".into(), 0, "more than one `/`".into()),
        (
            "has(example.com/)".into(),
            4,
            "has no name after the `/`".into(),
        ),
    ];
    for (text, position, reason) in bad {
        let err = Selector::parse(&text).expect_err(&text);
        assert_eq!(err.position, position, "{text}: {err}");
        assert!(err.reason.contains(&reason), "{text}: {err}");
    }
}
