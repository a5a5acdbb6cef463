//! The shared service cases (`manul_dataplane_conformance::services`)
//! against the iptables (nftables) driver, on the real kernel in network
//! namespaces the cases create.

use std::sync::Arc;

use manul_dataplane_api::Driver;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::services::run_service_cases;
use manul_dataplane_conformance::{Factory, privileges};
use manul_dataplane_iptables::{Nft, NftDriver};

#[test]
fn service_cases() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory: Arc<Factory> = Arc::new(|_ctx| {
        NftDriver::new(Nft::default())
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    match run_service_cases("sv", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}
