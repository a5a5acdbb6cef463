//! Any bytes as a stored resource (what Felix decodes from every Typha
//! entry): decoding never panics, and whatever decodes serializes back to
//! bytes that decode to the same resource, which the YAML loader reads
//! the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manul_model::stored;

fuzz_target!(|data: &[u8]| {
    let Ok(resource) = stored::decode(data) else { return };
    let again = serde_json::to_vec(&resource).expect("a decoded resource serializes");
    let back = stored::decode(&again).expect("its stored form decodes");
    assert_eq!(back, resource);
    let via_loader = manul_model::load("fuzz", &again)
        .into_result()
        .expect("the loader accepts the stored form");
    assert_eq!(via_loader[0].resource, resource);
});
