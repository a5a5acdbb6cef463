//! A full map on a real node: the address map is made small enough that
//! growing an IP set overflows it. Felix's agent loop resyncs the driver
//! (each attempt refused while the set is too big) until room is made,
//! and nothing the policy denies gets through meanwhile (see
//! `manul_dataplane_conformance::recovery`). Pins live under a test root
//! and are removed afterwards.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use manul_dataplane_api::Driver;
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::recovery::{BULK_GROWN, DataFault, run_failed_batch_recovery};
use manul_dataplane_conformance::{Factory, NodeContext, privileges};

/// Room for the scenario's state with the small set, not the grown one.
const ADDR_CAPACITY: u32 = 96;

#[test]
fn a_full_map_is_resynced_once_there_is_room_and_fails_closed_meanwhile() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    assert!(BULK_GROWN > ADDR_CAPACITY as usize);
    let pin_root = PathBuf::from("/sys/fs/bpf/manul-test");
    let nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let (root, seen) = (pin_root.clone(), nodes.clone());
    let factory: Arc<Factory> = Arc::new(move |ctx: &NodeContext| {
        seen.lock().unwrap().push(ctx.node.clone());
        let mut config = BpfConfig::new(&ctx.node);
        config.pin_root = root.clone();
        config.addr_capacity = Some(ADDR_CAPACITY);
        BpfDriver::new(config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let result = run_failed_batch_recovery("bpfrs", factory, &DataFault);
    for node in nodes.lock().unwrap().iter() {
        BpfDriver::purge_node(&pin_root, node).expect("remove the test's pins");
    }
    match result {
        Ok(report) => eprintln!("{report:?}"),
        Err(e) => panic!("{e}"),
    }
}
