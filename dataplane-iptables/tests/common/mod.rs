//! What the kernel tests of this crate share.

use std::sync::Arc;

use manul_dataplane_api::Driver;
use manul_dataplane_conformance::Factory;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_iptables::{Nft, NftDriver};

/// The nftables driver, for the shared conformance suites.
pub fn nft_factory() -> Arc<Factory> {
    Arc::new(|_ctx| {
        NftDriver::new(Nft::default())
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    })
}
