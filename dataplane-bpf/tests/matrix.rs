#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The shared behaviour matrix against the eBPF driver, on the real kernel
//! in network namespaces the suite creates. Pins live under a test root and
//! are removed afterwards.

use manul_dataplane_conformance::run_behaviour_matrix;

mod node;

use node::SharedNodes;

#[test]
fn behaviour_matrix() {
    if !node::root() {
        return;
    }
    let nodes = SharedNodes::default();
    let result = run_behaviour_matrix("bpf", nodes.factory(|_| {}));
    nodes.purge();
    match result {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}
