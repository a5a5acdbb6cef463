#![allow(clippy::unwrap_used)]

use super::*;
use manul_model::v3::IpamBlockSpec;

fn pool(name: &str, cidr: &str, block_size: Option<u8>) -> Object<IpPoolSpec> {
    let mut o = Object::new(name, None, IpPoolSpec::default());
    o.spec.cidr = Some(Cidr(cidr.parse().unwrap()));
    o.spec.block_size = block_size;
    o
}

fn wep(
    ns: &str,
    pod: &str,
    node: &str,
    container: &str,
    ips: &[&str],
) -> Object<WorkloadEndpointSpec> {
    let mut o = Object::new(pod, Some(ns), WorkloadEndpointSpec::default());
    o.spec.pod = pod.into();
    o.spec.node = node.into();
    o.spec.container_id = container.into();
    o.spec.ip_networks = ips
        .iter()
        .map(|i| Cidr(IpNet::from(i.parse::<IpAddr>().unwrap())))
        .collect();
    o
}

fn block(cidr: &str, node: &str, allocs: &[(&str, &str)], revision: u64) -> StoredBlock {
    StoredBlock {
        spec: IpamBlockSpec {
            cidr: Some(Cidr(cidr.parse().unwrap())),
            affinity: host_affinity(node),
            allocations: allocs
                .iter()
                .map(|(ip, h)| IpamAllocation {
                    ip: ip.parse().unwrap(),
                    handle: (*h).into(),
                    namespace: None,
                    pod: None,
                })
                .collect(),
        },
        revision,
    }
}

/// A write as block name, expected revision, [(ip, handle)], affinity.
type Summary = (String, u64, Vec<(String, String)>, String);

fn summary(writes: &[BlockWrite]) -> Vec<Summary> {
    writes
        .iter()
        .map(|w| {
            let Resource::IpamBlock(b) = &w.block else {
                panic!("{w:?}")
            };
            assert_eq!(w.key, w.block.key());
            (
                w.key.name.clone(),
                w.expected,
                b.spec
                    .allocations
                    .iter()
                    .map(|a| (a.ip.to_string(), a.handle.clone()))
                    .collect(),
                b.spec.affinity.clone(),
            )
        })
        .collect()
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn an_empty_store_gets_a_block_per_pool_block_with_every_live_address() {
    let pools = [pool("default", "10.65.0.0/16", Some(26))];
    let weps = [
        wep("shop", "a", "node-1", "c-a", &["10.65.0.1"]),
        wep("shop", "b", "node-1", "c-b", &["10.65.0.2"]),
        wep("shop", "c", "node-2", "", &["10.65.0.65"]),
        // No pool (yet): a block of the default size.
        wep("shop", "d", "node-2", "c-d", &["192.168.9.9"]),
    ];
    let writes = record_live(&weps, &pools, &[]);
    assert_eq!(
        summary(&writes),
        vec![
            (
                s("10-65-0-0-26"),
                0,
                vec![(s("10.65.0.1"), s("c-a")), (s("10.65.0.2"), s("c-b"))],
                s("host:node-1")
            ),
            (
                s("10-65-0-64-26"),
                0,
                vec![(s("10.65.0.65"), s("k8s-pod.shop.c"))],
                s("host:node-2")
            ),
            (
                s("192-168-9-0-26"),
                0,
                vec![(s("192.168.9.9"), s("c-d"))],
                s("host:node-2")
            ),
        ]
    );
    // What is written is what validation accepts.
    for w in &writes {
        assert!(
            manul_model::validate::validate(&w.block).is_empty(),
            "{w:?}"
        );
    }
}

#[test]
fn recorded_addresses_are_left_and_missing_ones_join_their_block_at_its_revision() {
    let pools = [pool("default", "10.65.0.0/16", None)];
    let blocks = [block("10.65.0.0/26", "node-1", &[("10.65.0.1", "c-a")], 7)];
    let weps = [
        wep("shop", "a", "node-1", "c-a", &["10.65.0.1"]),
        wep("shop", "b", "node-1", "c-b", &["10.65.0.3"]),
    ];
    assert_eq!(
        summary(&record_live(&weps, &pools, &blocks)),
        vec![(
            s("10-65-0-0-26"),
            7,
            vec![(s("10.65.0.1"), s("c-a")), (s("10.65.0.3"), s("c-b"))],
            s("host:node-1")
        )]
    );
    // Everything recorded (even under another handle): nothing to write.
    let blocks = [block(
        "10.65.0.0/26",
        "node-1",
        &[("10.65.0.1", "c-a"), ("10.65.0.3", "someone-else")],
        9,
    )];
    assert!(record_live(&weps, &pools, &blocks).is_empty());
}

#[test]
fn a_new_block_never_overlaps_a_stored_one() {
    // The pool's blocks are /24 but a /26 block is stored (from before the
    // pool changed): an address next to it gets a block of its own.
    let pools = [pool("default", "10.65.0.0/16", Some(24))];
    let blocks = [block("10.65.0.0/26", "node-1", &[], 3)];
    let weps = [wep("shop", "a", "node-1", "c-a", &["10.65.0.100"])];
    assert_eq!(
        summary(&record_live(&weps, &pools, &blocks)),
        vec![(
            s("10-65-0-100-32"),
            0,
            vec![(s("10.65.0.100"), s("c-a"))],
            s("host:node-1")
        )]
    );
}

#[test]
fn two_pods_claiming_one_address_record_it_once() {
    let pools = [pool("default", "10.65.0.0/24", Some(26))];
    let weps = [
        wep("shop", "a", "node-1", "c-a", &["10.65.0.5"]),
        wep("shop", "b", "node-1", "c-b", &["10.65.0.5"]),
    ];
    let writes = record_live(&weps, &pools, &[]);
    assert_eq!(summary(&writes)[0].2, vec![(s("10.65.0.5"), s("c-a"))]);
}

#[test]
fn the_ready_flag_is_a_valid_cluster_information() {
    let r = cluster_information();
    assert_eq!(r.key(), cluster_information_key());
    assert!(manul_model::validate::validate(&r).is_empty());
    let text = serde_json::to_vec(&r).unwrap();
    assert_eq!(manul_model::stored::decode(&text).unwrap(), r);
}
