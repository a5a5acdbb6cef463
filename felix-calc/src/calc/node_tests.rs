//! The other nodes' addresses: emitted when a node joins, leaves or
//! changes them, never this node's own, and in the whole state.

use std::collections::BTreeSet;
use std::net::IpAddr;

use manul_dataplane_api::{Driver, NullDriver, Operation};
use manul_model::{Kind, ResourceKey};

use super::tests::puts;
use super::{CalcGraph, Update};

fn node(name: &str, spec: &str) -> Vec<Update> {
    puts(&format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    ))
}

fn addresses(list: &[&str]) -> Operation {
    let set: BTreeSet<IpAddr> = list.iter().map(|a| a.parse().unwrap()).collect();
    Operation::NodeAddresses {
        addresses: set.into_iter().collect(),
    }
}

fn node_ops(ops: Vec<Operation>) -> Vec<Operation> {
    ops.into_iter()
        .filter(|o| matches!(o, Operation::NodeAddresses { .. }))
        .collect()
}

#[test]
fn other_nodes_addresses_follow_nodes_joining_changing_and_leaving() {
    let mut g = CalcGraph::new("node1");
    let mut driver = NullDriver::new();
    let mut step = |g: &mut CalcGraph, updates: Vec<Update>| {
        let ops = g.apply(updates);
        driver.apply(&ops).unwrap();
        node_ops(ops)
    };
    let node2 = "{bgp: {ipv4Address: 192.168.220.12/24, ipv6Address: 'fd00:220::12/64'}, \
                 addresses: [{address: 192.168.220.12}, {address: 10.0.0.2, type: InternalIP}, \
                 {address: 127.0.0.1}]}";
    let mut joined = node("node1", "{bgp: {ipv4Address: 192.168.220.11/24}}");
    joined.extend(node("node2", node2));
    assert_eq!(
        step(&mut g, joined),
        vec![addresses(&["192.168.220.12", "fd00:220::12", "10.0.0.2"])],
        "node 2's addresses, every kind, no loopback; never this node's own"
    );
    assert_eq!(
        step(&mut g, node("node2", node2)),
        vec![],
        "unchanged: nothing"
    );
    assert_eq!(
        step(
            &mut g,
            node("node1", "{bgp: {ipv4Address: 192.168.220.21/24}}")
        ),
        vec![],
        "this node's own changes are not sent"
    );
    assert_eq!(
        step(
            &mut g,
            node("node3", "{addresses: [{address: '192.168.220.13/24'}]}")
        ),
        vec![addresses(&[
            "192.168.220.12",
            "fd00:220::12",
            "10.0.0.2",
            "192.168.220.13"
        ])],
        "a node joins"
    );
    let gone = Update {
        key: ResourceKey {
            kind: Kind::Node,
            namespace: None,
            name: "node2".into(),
        },
        value: None,
    };
    assert_eq!(
        step(&mut g, vec![gone]),
        vec![addresses(&["192.168.220.13"])],
        "a node leaves"
    );

    // The whole state holds them too.
    let mut ops = g.whole_state();
    ops.push(Operation::InSync);
    let mut fresh = NullDriver::new();
    fresh.apply(&ops).unwrap();
    driver.apply(&[Operation::InSync]).unwrap();
    assert_eq!(fresh.state(), driver.state());
    assert_eq!(
        fresh.state().node_addresses,
        ["192.168.220.13".parse().unwrap()].into_iter().collect()
    );
}
