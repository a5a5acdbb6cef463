#![allow(clippy::unwrap_used)]

use super::*;
use manul_model::Selector;
use manul_model::v3::Cidr;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(name: &str, cidr: &str, block_size: Option<u8>) -> Object<IpPoolSpec> {
    Object::new(
        name,
        None,
        IpPoolSpec {
            cidr: Some(Cidr(net(cidr))),
            block_size,
            node_selector: Selector::all(),
            ..IpPoolSpec::default()
        },
    )
}

fn usable(name: &str, cidr: &str, block_size: u8) -> Pool {
    Pool {
        name: name.into(),
        cidr: net(cidr),
        block_size,
    }
}

/// A block of `node` holding `used` (address, handle) pairs.
fn block(cidr: &str, node: &str, used: &[(&str, &str)]) -> Block {
    let mut spec = new_block(net(cidr), node);
    for (a, h) in used {
        spec = with_allocation(&spec, ip(a), &holder(h));
    }
    Block {
        cidr: net(cidr),
        spec,
        revision: 7,
    }
}

fn holder(h: &str) -> Holder {
    Holder {
        handle: h.into(),
        namespace: None,
        pod: None,
    }
}

/// Every address of `cidr` but the first, allocated to `node`.
fn full(cidr: &str, node: &str) -> Block {
    let n = net(cidr);
    let mut spec = new_block(n, node);
    while let Some(a) = free_address(n, &spec) {
        spec = with_allocation(&spec, a, &holder(&a.to_string()));
    }
    Block {
        cidr: n,
        spec,
        revision: 1,
    }
}

#[test]
fn usable_pools_respect_disabled_use_selector_version_and_block_size() {
    let mut disabled = pool("b-disabled", "10.1.0.0/16", None);
    disabled.spec.disabled = true;
    let mut tunnel_only = pool("c-tunnel", "10.2.0.0/16", None);
    tunnel_only.spec.allowed_uses = vec![AllowedUse::Tunnel];
    let mut zone_b = pool("d-zone-b", "10.3.0.0/16", None);
    zone_b.spec.node_selector = Selector::parse("zone == 'b'").unwrap();
    let mut zone_a = pool("e-zone-a", "10.4.0.0/16", Some(28));
    zone_a.spec.node_selector = Selector::parse("zone == 'a'").unwrap();
    let pools = vec![
        pool("z-default", "10.65.0.0/16", None),
        disabled,
        tunnel_only,
        zone_b,
        zone_a,
        pool("v6", "fd00::/64", None),
        pool("tiny", "10.9.0.0/28", Some(26)),
    ];
    let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
    let none = BTreeMap::new();
    let cases: Vec<(&BTreeMap<String, String>, u8, Vec<Pool>)> = vec![
        (
            &labels,
            4,
            vec![
                usable("e-zone-a", "10.4.0.0/16", 28),
                usable("tiny", "10.9.0.0/28", 28),
                usable("z-default", "10.65.0.0/16", 26),
            ],
        ),
        (
            &none,
            4,
            vec![
                usable("tiny", "10.9.0.0/28", 28),
                usable("z-default", "10.65.0.0/16", 26),
            ],
        ),
        (&labels, 6, vec![usable("v6", "fd00::/64", 122)]),
    ];
    for (labels, version, want) in cases {
        assert_eq!(
            usable_pools(&pools, labels, version),
            want,
            "{labels:?} v{version}"
        );
    }
}

#[test]
fn free_addresses_skip_the_first_and_fill_holes() {
    let cases = [
        ("10.65.0.0/26", vec![], Some("10.65.0.1")),
        (
            "10.65.0.0/26",
            vec!["10.65.0.1", "10.65.0.2"],
            Some("10.65.0.3"),
        ),
        (
            "10.65.0.0/26",
            vec!["10.65.0.1", "10.65.0.3"],
            Some("10.65.0.2"),
        ),
        (
            "10.65.0.0/30",
            vec!["10.65.0.1", "10.65.0.2"],
            Some("10.65.0.3"),
        ),
        (
            "10.65.0.0/30",
            vec!["10.65.0.1", "10.65.0.2", "10.65.0.3"],
            None,
        ),
        ("10.65.0.0/32", vec![], None),
        ("fd00::40/122", vec!["fd00::41"], Some("fd00::42")),
    ];
    for (cidr, used, want) in cases {
        let used: Vec<(&str, &str)> = used.iter().map(|a| (*a, "h")).collect();
        let b = block(cidr, "n", &used);
        assert_eq!(
            free_address(b.cidr, &b.spec),
            want.map(ip),
            "{cidr} {used:?}"
        );
    }
    assert_eq!(full("10.65.0.0/26", "n").spec.allocations.len(), 63);
}

#[test]
fn choose_prefers_own_blocks_then_claims_the_next_unclaimed() {
    let pools = vec![
        usable("a", "10.65.0.0/24", 26),
        usable("b", "10.66.0.0/26", 26),
    ];
    let cases: Vec<(&str, Vec<Block>, Choice)> = vec![
        (
            "nothing stored: claim the pool's first block",
            vec![],
            Choice::Claim {
                cidr: net("10.65.0.0/26"),
                ip: ip("10.65.0.1"),
            },
        ),
        (
            "own block with room",
            vec![block("10.65.0.64/26", "n1", &[("10.65.0.65", "x")])],
            Choice::Existing {
                cidr: net("10.65.0.64/26"),
                ip: ip("10.65.0.66"),
            },
        ),
        (
            "own blocks in address order",
            vec![
                block("10.65.0.128/26", "n1", &[]),
                block("10.65.0.64/26", "n1", &[]),
            ],
            Choice::Existing {
                cidr: net("10.65.0.64/26"),
                ip: ip("10.65.0.65"),
            },
        ),
        (
            "another node's block is never borrowed; skip it when claiming",
            vec![block("10.65.0.0/26", "n2", &[])],
            Choice::Claim {
                cidr: net("10.65.0.64/26"),
                ip: ip("10.65.0.65"),
            },
        ),
        (
            "own block full: claim the next",
            vec![
                full("10.65.0.0/26", "n1"),
                block("10.65.0.64/26", "n2", &[]),
            ],
            Choice::Claim {
                cidr: net("10.65.0.128/26"),
                ip: ip("10.65.0.129"),
            },
        ),
        (
            "first pool fully claimed: the next pool",
            vec![
                block("10.65.0.0/26", "n2", &[]),
                block("10.65.0.64/26", "n2", &[]),
                block("10.65.0.128/26", "n3", &[]),
                block("10.65.0.192/26", "n3", &[]),
            ],
            Choice::Claim {
                cidr: net("10.66.0.0/26"),
                ip: ip("10.66.0.1"),
            },
        ),
        (
            "own block outside every usable pool (disabled pool) is ignored",
            vec![block("10.99.0.0/26", "n1", &[])],
            Choice::Claim {
                cidr: net("10.65.0.0/26"),
                ip: ip("10.65.0.1"),
            },
        ),
        (
            "a block of another size, or a single address recorded for a pod, claims what it overlaps",
            vec![
                block("10.65.0.0/25", "n2", &[]),
                block("10.65.0.130/32", "n2", &[("10.65.0.130", "k8s-pod.shop.a")]),
            ],
            Choice::Claim {
                cidr: net("10.65.0.192/26"),
                ip: ip("10.65.0.193"),
            },
        ),
        (
            "everything claimed and full",
            vec![
                full("10.65.0.0/26", "n1"),
                block("10.65.0.64/26", "n2", &[]),
                block("10.65.0.128/26", "n3", &[]),
                full("10.65.0.192/26", "n1"),
                block("10.66.0.0/26", "n2", &[]),
            ],
            Choice::Exhausted,
        ),
    ];
    for (what, blocks, want) in cases {
        assert_eq!(choose("n1", &pools, &blocks), want, "{what}");
    }
    assert_eq!(choose("n1", &[], &[]), Choice::Exhausted, "no pools");
}

#[test]
fn release_removes_only_the_handle_and_is_idempotent() {
    let b = block(
        "10.65.0.0/26",
        "n1",
        &[("10.65.0.1", "a"), ("10.65.0.2", "b"), ("10.65.0.3", "a")],
    );
    let (after, ips) = without_handle(&b.spec, "a").unwrap();
    assert_eq!(ips, vec![ip("10.65.0.1"), ip("10.65.0.3")]);
    assert_eq!(after.allocations.len(), 1);
    assert_eq!(after.allocations[0].handle, "b");
    assert_eq!(after.affinity, b.spec.affinity);
    assert!(
        without_handle(&after, "a").is_none(),
        "second release changes nothing"
    );
    assert!(without_handle(&b.spec, "zzz").is_none());
    // The released address is the next one handed out.
    assert_eq!(free_address(b.cidr, &after), Some(ip("10.65.0.1")));
}

#[test]
fn allocations_stay_sorted_and_keep_the_holder() {
    let h = Holder {
        handle: "c1".into(),
        namespace: Some("production".into()),
        pod: Some("api".into()),
    };
    let b = block("10.65.0.0/26", "n1", &[("10.65.0.5", "x")]);
    let spec = with_allocation(&b.spec, ip("10.65.0.2"), &h);
    let ips: Vec<_> = spec.allocations.iter().map(|a| a.ip).collect();
    assert_eq!(ips, vec![ip("10.65.0.2"), ip("10.65.0.5")]);
    assert_eq!(spec.allocations[0].pod.as_deref(), Some("api"));
    let blocks = vec![
        Block {
            cidr: b.cidr,
            spec,
            revision: 3,
        },
        block("10.65.0.64/26", "n2", &[("10.65.0.70", "c1")]),
    ];
    assert_eq!(
        held_by(&blocks, "c1"),
        vec![
            (net("10.65.0.0/26"), ip("10.65.0.2")),
            (net("10.65.0.64/26"), ip("10.65.0.70"))
        ]
    );
    assert_eq!(blocks[0].name(), "10-65-0-0-26");
}

#[test]
fn claiming_in_a_large_pool_skips_every_stored_block() {
    // 4096 /26 blocks of other nodes at the start of a /8 (plus a nested
    // single-address block): the next claim is the first block after them.
    let pools = vec![usable("big", "10.0.0.0/8", 26)];
    let mut blocks: Vec<Block> = (0..4096u32)
        .map(|i| {
            let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + i * 64;
            let cidr = format!("{}/26", std::net::Ipv4Addr::from(base));
            block(&cidr, "n2", &[])
        })
        .collect();
    blocks.push(block("10.0.0.5/32", "n3", &[("10.0.0.5", "k8s-pod.a.b")]));
    assert_eq!(
        choose("n1", &pools, &blocks),
        Choice::Claim {
            cidr: net("10.4.0.0/26"),
            ip: ip("10.4.0.1"),
        }
    );
}
