//! The nodes' addresses: the other nodes' and this node's own (apart),
//! emitted when a node joins, leaves or changes them, and in the whole
//! state.

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
    with_local(list, &["192.168.220.11"])
}

fn with_local(list: &[&str], local: &[&str]) -> Operation {
    let set = |l: &[&str]| -> Vec<IpAddr> {
        let s: BTreeSet<IpAddr> = l.iter().map(|a| a.parse().unwrap()).collect();
        s.into_iter().collect()
    };
    Operation::NodeAddresses {
        addresses: set(list),
        local: set(local),
        pools: Vec::new(),
    }
}

fn node_ops(ops: Vec<Operation>) -> Vec<Operation> {
    ops.into_iter()
        .filter(|o| matches!(o, Operation::NodeAddresses { .. }))
        .collect()
}

/// The whole state, applied to a fresh driver, leaves what the steps left
/// in `driver`; the fresh driver, to look into.
fn whole_state_as_stepped(g: &CalcGraph, driver: &mut NullDriver) -> NullDriver {
    let mut ops = g.whole_state();
    ops.push(Operation::InSync);
    let mut fresh = NullDriver::new();
    fresh.apply(&ops).unwrap();
    driver.apply(&[Operation::InSync]).unwrap();
    assert_eq!(fresh.state(), driver.state());
    fresh
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
        "node 2's addresses, every kind, no loopback; this node's own apart"
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
        vec![with_local(
            &["192.168.220.12", "fd00:220::12", "10.0.0.2"],
            &["192.168.220.21"]
        )],
        "this node's own change is sent as its own, the others unchanged"
    );
    assert_eq!(
        step(
            &mut g,
            node("node3", "{addresses: [{address: '192.168.220.13/24'}]}")
        ),
        vec![with_local(
            &[
                "192.168.220.12",
                "fd00:220::12",
                "10.0.0.2",
                "192.168.220.13"
            ],
            &["192.168.220.21"]
        )],
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
        vec![with_local(&["192.168.220.13"], &["192.168.220.21"])],
        "a node leaves"
    );

    // The whole state holds them too.
    let fresh = whole_state_as_stepped(&g, &mut driver);
    assert_eq!(
        fresh.state().node_addresses,
        ["192.168.220.13".parse().unwrap()].into_iter().collect()
    );
    assert_eq!(
        fresh.state().local_addresses,
        ["192.168.220.21".parse().unwrap()].into_iter().collect()
    );
}

#[test]
fn this_nodes_addresses_are_sent_alone_without_other_nodes_and_cleared_when_it_goes() {
    let mut g = CalcGraph::new("node1");
    let ops = node_ops(g.apply(node("node1", "{addresses: [{address: 10.0.0.1}]}")));
    assert_eq!(ops, vec![with_local(&[], &["10.0.0.1"])]);
    assert_eq!(g.whole_state(), vec![with_local(&[], &["10.0.0.1"])]);
    let gone = Update {
        key: ResourceKey {
            kind: Kind::Node,
            namespace: None,
            name: "node1".into(),
        },
        value: None,
    };
    assert_eq!(node_ops(g.apply(vec![gone])), vec![with_local(&[], &[])]);
    assert!(g.whole_state().is_empty());
}

fn pool(name: &str, spec: &str) -> Vec<Update> {
    puts(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    ))
}

fn pools_op(pools: &[&str]) -> Operation {
    let set: BTreeSet<ipnet::IpNet> = pools.iter().map(|p| p.parse().unwrap()).collect();
    Operation::NodeAddresses {
        addresses: Vec::new(),
        local: Vec::new(),
        pools: set.into_iter().collect(),
    }
}

#[test]
fn ip_pools_follow_pools_added_changed_disabled_and_removed() {
    let mut g = CalcGraph::new("node1");
    let mut driver = NullDriver::new();
    let mut step = |g: &mut CalcGraph, updates: Vec<Update>| {
        let ops = g.apply(updates);
        driver.apply(&ops).unwrap();
        node_ops(ops)
    };
    assert_eq!(
        step(&mut g, pool("default-ipv4", "{cidr: 10.65.0.0/16}")),
        vec![pools_op(&["10.65.0.0/16"])],
        "a pool"
    );
    assert_eq!(
        step(&mut g, pool("v6", "{cidr: 'fd00:65::/64', disabled: true}")),
        vec![pools_op(&["10.65.0.0/16", "fd00:65::/64"])],
        "a disabled pool counts: its pods keep their addresses"
    );
    assert_eq!(
        step(&mut g, pool("v6", "{cidr: 'fd00:65::/64'}")),
        vec![],
        "enabled again, same CIDR: nothing"
    );
    assert_eq!(
        step(&mut g, pool("default-ipv4", "{cidr: 10.66.0.0/16}")),
        vec![pools_op(&["10.66.0.0/16", "fd00:65::/64"])],
        "a pool's CIDR changes"
    );
    let gone = Update {
        key: ResourceKey {
            kind: Kind::IpPool,
            namespace: None,
            name: "v6".into(),
        },
        value: None,
    };
    assert_eq!(
        step(&mut g, vec![gone]),
        vec![pools_op(&["10.66.0.0/16"])],
        "a pool goes"
    );
    // The whole state holds them too.
    let fresh = whole_state_as_stepped(&g, &mut driver);
    assert_eq!(
        fresh.state().pools,
        ["10.66.0.0/16".parse().unwrap()].into_iter().collect()
    );
}
