#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The cluster's IP pools in `manul_pool` (whose sources reaching a
//! `Local` external frontend at a host interface are pods of another
//! node): written from `NodeAddresses` as map data, replaced as a whole,
//! kept by a restarted driver (the pins) until `InSync`, which leaves
//! only what the new run was told.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;
use manul_dataplane_api::{Driver, Operation};
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::privileges;
use manul_netns::{NetNs, unique_prefix};

const PIN_ROOT: &str = "/sys/fs/bpf/manul-test";

/// A node's pins, removed on drop.
struct Pins(String);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), &self.0);
    }
}

fn pools(list: &[&str]) -> BTreeSet<IpNet> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

fn told(list: &[&str]) -> Operation {
    Operation::NodeAddresses {
        addresses: Vec::new(),
        local: Vec::new(),
        pools: pools(list).into_iter().collect(),
    }
}

#[test]
fn pools_are_replaced_and_kept_over_a_restart_until_in_sync() {
    if !privileges().expect("privileges: CI=true needs root") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let node = unique_prefix("pl");
    let _pins = Pins(node.clone());
    let ns = NetNs::create(&node).expect("namespace");
    ns.run(move || {
        let config = || {
            let mut c = BpfConfig::new(&node);
            c.pin_root = PathBuf::from(PIN_ROOT);
            c
        };
        let mut d = BpfDriver::new(config()).expect("load the programs");
        d.apply(&[told(&["10.65.0.0/16", "fd00:65::/64"]), Operation::InSync])
            .expect("apply");
        assert_eq!(d.pools(), pools(&["10.65.0.0/16", "fd00:65::/64"]));
        d.apply(&[told(&["10.66.0.0/16", "10.65.0.0/24"])])
            .expect("apply");
        assert_eq!(
            d.pools(),
            pools(&["10.66.0.0/16", "10.65.0.0/24"]),
            "replaced as a whole"
        );
        drop(d);
        let mut d = BpfDriver::new(config()).expect("restart");
        assert_eq!(
            d.pools(),
            pools(&["10.66.0.0/16", "10.65.0.0/24"]),
            "an earlier run's pools stay until the state is in sync"
        );
        d.apply(&[told(&["fd00:66::/64"])]).expect("apply");
        assert_eq!(d.pools(), pools(&["fd00:66::/64"]));
        d.apply(&[Operation::InSync]).expect("in sync");
        assert_eq!(d.pools(), pools(&["fd00:66::/64"]), "told again: kept");
        let mut d = {
            drop(d);
            BpfDriver::new(config()).expect("restart")
        };
        d.apply(&[Operation::InSync]).expect("in sync");
        assert!(d.pools().is_empty(), "not told again: gone");
    })
    .expect("run in the namespace");
}
