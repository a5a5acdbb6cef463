//! The incremental plan against the whole plan: the index kept up to date
//! service by service equals [`desired`] of the whole state, and the diff
//! over the keys a change touched makes exactly the writes, and leaves
//! exactly the bookkeeping, of the diff over every key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use manul_dataplane_api::{Balancing, Service, ServiceKey, TrafficPolicy};

use super::diff::{Counts, Scope, diff};
use super::index::{Change, Index};
use super::tests::{ba, fe, maglev_service, service, services, step};
use super::*;

fn key(name: &str) -> ServiceKey {
    ("ns".to_string(), name.to_string())
}

/// The desired maps without what was skipped (the index hands that to
/// the log once).
fn maps_of(d: &Desired) -> Desired {
    Desired {
        frontends: d.frontends.clone(),
        lists: d.lists.clone(),
        addresses: d.addresses.clone(),
        source_ranges: d.source_ranges.clone(),
        maglev: d.maglev.clone(),
        maglev_capacity: d.maglev_capacity,
        skipped: Vec::new(),
    }
}

/// Brings `index` (at `before`, programmed as `programmed`) to `after`
/// incrementally, checks it against the whole plan from the same
/// programmed state, and returns the change, its writes and the
/// programmed state after them.
fn incremental(
    index: &mut Index,
    programmed: &Programmed,
    before: &BTreeMap<ServiceKey, Service>,
    after: &BTreeMap<ServiceKey, Service>,
) -> (Change, Writes, Programmed) {
    let keys: BTreeSet<&ServiceKey> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    let change = index.update(keys.into_iter().map(|k| (k, after.get(k))));
    let whole = desired(after);
    assert_eq!(maps_of(index.desired()), maps_of(&whole));
    let (w, delta) = diff(
        index.desired(),
        programmed,
        Scope::Touched(&change.touched),
        false,
    );
    let counts = Counts::of(programmed).after(programmed, &delta);
    let mut next = programmed.clone();
    next.apply(delta);
    assert_eq!(counts, Counts::of(&next));
    let (full_w, full_next) = plan(&whole, programmed, false);
    assert_eq!(w, full_w);
    assert_eq!(next, full_next);
    let ranges = |s: &BTreeMap<ServiceKey, Service>| desired(s).source_ranges;
    let (old, new) = (ranges(before), ranges(after));
    assert_eq!(
        change.ranges_added,
        new.difference(&old).copied().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        change.ranges_removed,
        old.difference(&new).copied().collect::<BTreeSet<_>>()
    );
    (change, w, next)
}

/// A named service at cluster IP 10.96.0.`ip` on port 80.
fn at(name: &str, ip: u8, backends: &[u8]) -> Service {
    service(name, [10, 96, 0, ip], backends)
}

fn with_lb(mut svc: Service, lb: u8, range: &str) -> Service {
    svc.load_balancer_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, lb))];
    svc.load_balancer_source_ranges = vec![range.parse().unwrap()];
    svc
}

struct Case {
    what: &'static str,
    before: Vec<Service>,
    after: Vec<Service>,
    /// The services the change touches, by name.
    touched: &'static [&'static str],
    /// Frontend writes and deletes, backend writes and deletes.
    counts: (usize, usize, usize, usize),
}

#[test]
fn each_change_touches_only_its_services_and_writes_what_the_whole_plan_writes() {
    let cases = [
        Case {
            what: "a backend moves: one index and the list's frontend stay, one index is written",
            before: vec![at("a", 1, &[2, 3]), at("b", 2, &[4])],
            after: vec![at("a", 1, &[2, 5]), at("b", 2, &[4])],
            touched: &["a"],
            counts: (0, 0, 1, 0),
        },
        Case {
            what: "a backend goes: the count shrinks, the last index is deleted",
            before: vec![at("a", 1, &[2, 3, 4]), at("b", 2, &[4])],
            after: vec![at("a", 1, &[2, 3]), at("b", 2, &[4])],
            touched: &["a"],
            counts: (1, 0, 0, 1),
        },
        Case {
            what: "a new service: its backends, its frontend, then its address entry",
            before: vec![at("a", 1, &[2])],
            after: vec![at("a", 1, &[2]), at("b", 2, &[4, 5])],
            touched: &["b"],
            counts: (2, 0, 2, 0),
        },
        Case {
            what: "a service goes: its address entry, its frontend, its list",
            before: vec![at("a", 1, &[2]), at("b", 2, &[4, 5])],
            after: vec![at("a", 1, &[2])],
            touched: &["b"],
            counts: (0, 2, 0, 2),
        },
        Case {
            what: "the keeper of a contested frontend goes: the next by name takes it",
            before: vec![at("a", 1, &[2]), at("b", 1, &[4, 5])],
            after: vec![at("b", 1, &[4, 5])],
            touched: &["a", "b"],
            counts: (1, 0, 2, 1),
        },
        Case {
            what: "a service sorting first claims a frontend: it takes it from the keeper",
            before: vec![at("b", 1, &[4, 5])],
            after: vec![at("a", 1, &[2]), at("b", 1, &[4, 5])],
            touched: &["a", "b"],
            counts: (1, 0, 1, 2),
        },
        Case {
            what: "a losing claimant changes: nothing is written",
            before: vec![at("a", 1, &[2]), at("b", 1, &[4])],
            after: vec![at("a", 1, &[2]), at("b", 1, &[5])],
            touched: &["a", "b"],
            counts: (0, 0, 0, 0),
        },
        Case {
            what: "two services share a load balancer: its frontend, address and range stay with the other",
            before: vec![
                with_lb(at("a", 1, &[2]), 9, "198.51.100.0/24"),
                with_lb(at("b", 2, &[3]), 9, "198.51.100.0/24"),
            ],
            after: vec![with_lb(at("b", 2, &[3]), 9, "198.51.100.0/24")],
            touched: &["a", "b"],
            counts: (1, 2, 0, 1),
        },
        Case {
            what: "nothing changes: nothing is written",
            before: vec![at("a", 1, &[2])],
            after: vec![at("a", 1, &[2])],
            touched: &[],
            counts: (0, 0, 0, 0),
        },
    ];
    for case in cases {
        let before = services(case.before);
        let after = services(case.after);
        let (_, programmed) = step(&before, &Programmed::default(), true);
        let mut index = Index::new(&before, 0, &BTreeSet::new());
        let (change, w, _) = incremental(&mut index, &programmed, &before, &after);
        let touched: BTreeSet<ServiceKey> = case.touched.iter().map(|n| key(n)).collect();
        assert_eq!(change.touched.services, touched, "{}", case.what);
        let counts = (
            w.frontends.len(),
            w.frontend_deletes.len(),
            w.backends.len(),
            w.backend_deletes.len(),
        );
        assert_eq!(counts, case.counts, "{}: {w:?}", case.what);
    }
}

#[test]
fn a_moved_backend_is_reported_gone_and_its_maglev_table_replaced() {
    let before = services(vec![maglev_service(&[2, 3, 4])]);
    let after = services(vec![maglev_service(&[2, 3, 5])]);
    let (_, programmed) = step(&before, &Programmed::default(), true);
    let mut index = Index::new(&before, 0, &BTreeSet::new());
    let (_, w, next) = incremental(&mut index, &programmed, &before, &after);
    let old = programmed.frontends[&fe([192, 0, 2, 9], 80)];
    let new = next.frontends[&fe([192, 0, 2, 9], 80)];
    assert_eq!(w.gone[&old.id], BTreeSet::from([ba(4)]));
    assert_eq!(w.tables.len(), 1, "one new table for the list");
    assert_eq!(w.table_deletes, vec![(old.maglev, old.maglev_size)]);
    assert_ne!(new.maglev, old.maglev);
    // The node port shares the list, so it flips to the same table.
    assert_eq!(next.frontends[&fe([0, 0, 0, 0], 30080)].maglev, new.maglev);
}

#[test]
fn a_service_named_twice_in_one_change_is_planned_once() {
    let before = services(vec![at("a", 1, &[2])]);
    let after = services(vec![at("a", 1, &[3])]);
    let mut index = Index::new(&before, 0, &BTreeSet::new());
    let k = key("a");
    let change = index.update([(&k, after.get(&k)), (&k, after.get(&k))]);
    assert_eq!(change.touched.services, BTreeSet::from([k]));
    assert_eq!(maps_of(index.desired()), maps_of(&desired(&after)));
}

mod any_state {
    use proptest::prelude::*;

    use super::*;

    /// One service: cluster IP and external IP from pools of three (so
    /// names contend for frontends and share addresses), backends from a
    /// pool of six, local ones the even ones, a second port, node port,
    /// traffic policies, affinity, Maglev, a load balancer with a source
    /// range from a pool of two.
    type Shape = (
        u8,
        Vec<u8>,
        (bool, bool, bool),
        (bool, bool, bool),
        Option<u8>,
    );

    fn shape() -> impl Strategy<Value = Shape> {
        (
            0u8..3,
            prop::collection::btree_set(2u8..8, 0..6).prop_map(|s| s.into_iter().collect()),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            prop::option::of(0u8..4),
        )
    }

    fn build(name: &str, s: &Shape) -> Service {
        let (ip, backends, (second_port, node_port, local), (affinity, maglev, external), lb) = s;
        let mut svc = at(name, *ip, backends);
        if *second_port {
            let mut p = svc.ports[0].clone();
            p.name = "alt".into();
            p.port = 81;
            svc.ports.push(p);
        }
        if *node_port {
            svc.ports[0].node_port = Some(30080 + u16::from(*ip));
        }
        if *local {
            svc.external_traffic = TrafficPolicy::Local;
            svc.internal_traffic = TrafficPolicy::Local;
        }
        svc.affinity_timeout_seconds = affinity.then_some(10);
        if *maglev {
            svc.balancing = Balancing::Maglev;
        }
        if *external {
            svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, *ip))];
        }
        if let Some(lb) = lb {
            let range = ["198.51.100.0/24", "203.0.113.0/25"][usize::from(lb % 2)];
            svc = with_lb(svc, 10 + lb / 2, range);
        }
        svc
    }

    fn state() -> impl Strategy<Value = Vec<Option<Shape>>> {
        prop::collection::vec(prop::option::of(shape()), 4)
    }

    fn of(state: &[Option<Shape>]) -> BTreeMap<ServiceKey, Service> {
        services(
            state
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some(build(&format!("s{i}"), s.as_ref()?)))
                .collect(),
        )
    }

    /// A step: one to three services set to a new shape or removed.
    fn edits() -> impl Strategy<Value = Vec<(usize, Option<Shape>)>> {
        prop::collection::vec((0usize..4, prop::option::of(shape())), 1..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// From any state reached by whole or incremental plans, an
        /// incremental plan to any other state writes exactly what the
        /// whole plan writes and leaves exactly its bookkeeping.
        #[test]
        fn incremental_planning_from_any_state_equals_the_whole_plan(
            first in state(),
            steps in prop::collection::vec(edits(), 1..8),
        ) {
            let mut shapes = first;
            let mut before = of(&shapes);
            let (_, mut programmed) = step(&before, &Programmed::default(), true);
            let mut index = Index::new(&before, 0, &BTreeSet::new());
            for edits in steps {
                for (i, shape) in edits {
                    shapes[i] = shape;
                }
                let after = of(&shapes);
                let (_, _, next) = incremental(&mut index, &programmed, &before, &after);
                // And the writes, made in order, are safe at every point.
                step(&after, &programmed, false);
                programmed = next;
                before = after;
            }
        }
    }
}

#[test]
fn this_nodes_addresses_changing_replans_the_ranged_services_only_their_own_prefix() {
    let lb: IpAddr = "192.0.2.9".parse().unwrap();
    let mut ranged = at("ranged", 10, &[2]);
    ranged.load_balancer_ips = vec![lb];
    ranged.load_balancer_source_ranges = vec!["10.0.0.0/24".parse().unwrap()];
    let plain = at("plain", 11, &[4]);
    let all = services(vec![ranged, plain]);
    let outside: BTreeSet<IpAddr> = ["10.0.1.1".parse().unwrap()].into_iter().collect();
    let inside: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into_iter().collect();
    let mut index = Index::new(&all, 0, &outside);
    assert_eq!(
        maps_of(index.desired()),
        maps_of(&desired_with(&all, &outside))
    );
    // The node moves into the range: the ranged service, planned again,
    // adds the address's own prefix and nothing else.
    index.set_local(&inside);
    let k = key("ranged");
    let change = index.update([(&k, all.get(&k))]);
    assert_eq!(
        maps_of(index.desired()),
        maps_of(&desired_with(&all, &inside))
    );
    let own = (lb, ipnet::IpNet::from(lb));
    assert_eq!(change.ranges_added, [own].into_iter().collect());
    assert!(change.ranges_removed.is_empty());
    // And out again: removed.
    index.set_local(&outside);
    let change = index.update([(&k, all.get(&k))]);
    assert_eq!(
        maps_of(index.desired()),
        maps_of(&desired_with(&all, &outside))
    );
    assert_eq!(change.ranges_removed, [own].into_iter().collect());
    assert!(change.ranges_added.is_empty());
}
