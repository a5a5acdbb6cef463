//! The shared behaviour matrix against the iptables (nftables) driver, on
//! the real kernel in network namespaces the suite creates.

use std::sync::Arc;

use manul_dataplane_api::Driver;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::{Factory, privileges, run_behaviour_matrix};
use manul_dataplane_iptables::{Nft, NftDriver};

#[test]
fn behaviour_matrix() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory: Arc<Factory> = Arc::new(|_ctx| {
        NftDriver::new(Nft::default())
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    match run_behaviour_matrix("ipt", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}
