//! Any bytes: loading never panics, and whatever loads prints to YAML that
//! loads back to the same resources.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outcome = manul_model::load("fuzz", data);
    let mut printed = String::new();
    for loaded in &outcome.resources {
        printed.push_str("---\n");
        printed.push_str(&serde_yaml_ng::to_string(&loaded.resource).expect("prints"));
    }
    let again = manul_model::load("again", printed.as_bytes());
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    let a: Vec<_> = outcome.resources.iter().map(|l| &l.resource).collect();
    let b: Vec<_> = again.resources.iter().map(|l| &l.resource).collect();
    assert_eq!(a, b);
});
