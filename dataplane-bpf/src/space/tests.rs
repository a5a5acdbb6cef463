//! The space's deltas are as small as the change: the reason it exists.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use manul_dataplane_api::{DesiredState, Driver, IpSetKind, IpSetMember, NullDriver, Operation};

use super::*;
use crate::compile::AddrMatch;

fn member(i: u32) -> IpSetMember {
    let a = Ipv4Addr::from(0x0ac8_0000 + i);
    IpSetMember::Net(IpNet::V4(Ipv4Net::new(a, 32).unwrap()))
}

fn rules(net: &str) -> [AddrRules; 2] {
    let mut src = AddrRules::default();
    src.conditional.push((
        0,
        AddrMatch {
            sets: vec!["big".into()],
            ..AddrMatch::default()
        },
    ));
    src.conditional.push((
        1,
        AddrMatch {
            nets: vec![net.parse().unwrap()],
            ..AddrMatch::default()
        },
    ));
    [src, AddrRules::default()]
}

fn apply(d: &mut NullDriver, op: Operation) -> DesiredState {
    d.apply(&[op]).unwrap();
    d.state().clone()
}

#[test]
fn a_member_change_is_one_entry_and_a_rule_change_none() {
    let mut d = NullDriver::new();
    let s = apply(
        &mut d,
        Operation::IpSetUpdate {
            id: "big".into(),
            kind: IpSetKind::Net,
            members: (0..10_000).map(member).collect(),
        },
    );
    let mut space = Space::new();
    let old = rules("10.1.0.0/16");
    space.add_table(&old, &s);
    let first = space.settle();
    // 10,000 members, one net, a root per side.
    assert_eq!(first.upserts.len(), 10_003);
    assert_eq!(
        space.class_count(),
        4,
        "{:?}",
        space.snapshot()[0]
            .values()
            .collect::<std::collections::BTreeSet<_>>()
    );

    // One member added, one removed.
    let s = apply(
        &mut d,
        Operation::IpSetDelta {
            id: "big".into(),
            added: vec![member(20_000)],
            removed: vec![member(3)],
        },
    );
    space.sync_set("big", &s);
    let delta = space.settle();
    assert_eq!((delta.upserts.len(), delta.deletes.len()), (1, 1));
    assert!(delta.new_classes.is_empty() && delta.dropped_classes.is_empty());

    // A new table version naming the same items: nothing to write.
    let same = rules("10.1.0.0/16");
    space.add_table(&same, &s);
    assert!(space.settle().is_empty());
    space.remove_table(&old);
    assert!(space.settle().is_empty());

    // One naming another net: that net's entry and class only, and the old
    // net's entry and class gone once the old version is.
    let moved = rules("10.2.0.0/16");
    space.add_table(&moved, &s);
    let grow = space.settle();
    assert_eq!((grow.upserts.len(), grow.new_classes.len()), (1, 1));
    space.remove_table(&same);
    let shrink = space.settle();
    assert_eq!((shrink.deletes.len(), shrink.dropped_classes.len()), (1, 1));
    assert_eq!(space.entry_count(), 10_003);
}

#[test]
fn a_wide_member_reclasses_the_prefixes_inside_it() {
    let mut d = NullDriver::new();
    let s = apply(
        &mut d,
        Operation::IpSetUpdate {
            id: "big".into(),
            kind: IpSetKind::Net,
            members: (0..100).map(member).collect(),
        },
    );
    let mut space = Space::new();
    let r = rules("10.200.0.0/30");
    space.add_table(&r, &s);
    space.settle();
    // 10.200.0.0/30 holds members 0..4: they are in both items.
    let sig = |space: &Space, m: u32| {
        let IpSetMember::Net(n) = member(m) else {
            unreachable!()
        };
        space.snapshot()[0][&IpEntry::Net(n)].clone()
    };
    assert_eq!(sig(&space, 1).len(), 2);
    assert_eq!(sig(&space, 9).len(), 1);
    // The set gains 10.200.0.0/24: every member inside is re-classed.
    let wide = IpSetMember::Net("10.200.0.0/24".parse().unwrap());
    let s = apply(
        &mut d,
        Operation::IpSetDelta {
            id: "big".into(),
            added: vec![wide],
            removed: vec![],
        },
    );
    space.sync_set("big", &s);
    let delta = space.settle();
    // The /24 itself and the /30 (now inside the set too); the members
    // were in the set already, so they keep their class.
    assert_eq!(delta.upserts.len(), 2);
    let mut fresh = Space::new();
    fresh.add_table(&r, &s);
    fresh.settle();
    assert_eq!(space.snapshot(), fresh.snapshot());
}
