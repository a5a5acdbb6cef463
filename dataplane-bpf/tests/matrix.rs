//! The shared behaviour matrix against the eBPF driver, on the real kernel
//! in network namespaces the suite creates. Pins live under a test root and
//! are removed afterwards.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use manul_dataplane_api::Driver;
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::{Factory, NodeContext, privileges, run_behaviour_matrix};

#[test]
fn behaviour_matrix() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let pin_root = PathBuf::from("/sys/fs/bpf/manul-test");
    let nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let (root, seen) = (pin_root.clone(), nodes.clone());
    let factory: Arc<Factory> = Arc::new(move |ctx: &NodeContext| {
        seen.lock().unwrap().push(ctx.node.clone());
        let mut config = BpfConfig::new(&ctx.node);
        config.pin_root = root.clone();
        BpfDriver::new(config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let result = run_behaviour_matrix("bpf", factory);
    for node in nodes.lock().unwrap().iter() {
        BpfDriver::purge_node(&pin_root, node).expect("remove the test's pins");
    }
    match result {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}
