//! The shared behaviour matrix against the iptables (nftables) driver, on
//! the real kernel in network namespaces the suite creates.

mod common;

use manul_dataplane_conformance::{privileges, run_behaviour_matrix};

#[test]
fn behaviour_matrix() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory = common::nft_factory();
    match run_behaviour_matrix("ipt", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}
