//! Any text: parsing never panics, and a selector that parses has a stable
//! canonical form that matches exactly what the original matches.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use manul_model::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(sel) = Selector::parse(text) else { return };
    let canon = Selector::parse(sel.canonical()).expect("canonical form parses");
    assert_eq!(canon.canonical(), sel.canonical(), "canonical form is stable");
    let label_sets: [&[(&str, &str)]; 4] = [
        &[],
        &[("a", "x")],
        &[("a", "y"), ("b", "x"), ("projectcalico.org/namespace", "ns")],
        &[("app", "api"), ("a", ""), ("b", "xyz")],
    ];
    for set in label_sets {
        let labels: BTreeMap<String, String> =
            set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(sel.matches(&labels), canon.matches(&labels));
    }
});
