//! A batch through the seam against the in-memory maps: a write failing
//! at any point of a batch, undo after a compile or capacity error, id
//! reuse, and a resync after a failure, all without root.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use manul_dataplane_api::testutil::{net_set, pid, policy_update, rule, tier, wep};
use manul_dataplane_api::{
    Action, DesiredState, DriverError, IpSetMember, NullDriver, Operation, Rule,
};

use super::{Env, Outcome, apply};
use crate::batch::{self, Context};
use crate::compile::CompiledTable;
use crate::driver::labels;
use crate::events::Shared;
use crate::ledger::Ledger;
use crate::maps::TableCounts;
use crate::plan::{self, Touched};
use crate::testing::{EndpointView, FakeMaps};
use crate::write::{MapOp, MapWriter};

/// A node: the desired state, the ledger and in-memory maps, with
/// interfaces `calia` (2), `calib` (3), `calic` (4) and `calid` (5).
struct Node {
    desired: NullDriver,
    ledger: Ledger,
    maps: FakeMaps,
    shared: Mutex<Shared>,
    interfaces: BTreeMap<String, u32>,
    prefixes: Vec<String>,
}

const A: u32 = 2;
const B: u32 = 3;
const C: u32 = 4;

impl Node {
    fn new(maps: FakeMaps) -> Self {
        Self {
            desired: NullDriver::new(),
            ledger: Ledger::new(1),
            maps,
            shared: Mutex::new(Shared::default()),
            interfaces: ["calia", "calib", "calic", "calid"]
                .iter()
                .zip(2..)
                .map(|(n, ix)| ((*n).to_owned(), ix))
                .collect(),
            prefixes: vec!["cali".to_owned()],
        }
    }

    fn apply(&mut self, batch: &[Operation]) -> Result<Outcome, DriverError> {
        let shared = &self.shared;
        apply(
            &mut self.desired,
            &mut self.ledger,
            &mut self.maps,
            batch,
            Env {
                interfaces: &self.interfaces,
                workload_prefixes: &self.prefixes,
            },
            &mut |t| labels(shared, t),
        )
    }

    /// The table and space ids of an interface's entry.
    fn ids(&self, ix: u32) -> Option<([u32; 2], [u32; 2])> {
        self.maps.endpoints.get(&ix).map(|v| (v.table, v.space))
    }
}

/// `web` allows TCP to port 80 from the members of set `clients`.
fn web(port: u16) -> Operation {
    let mut allow = rule("default/web/inbound/0", Action::Allow);
    allow.protocol = Some(6);
    allow.src.ip_sets = vec!["clients".into()];
    allow.dst.ports = manul_dataplane_api::testutil::ports(&[(port, port)]);
    policy_update(
        pid("default", "web"),
        vec![allow],
        vec![rule("default/web/outbound/0", Action::Allow)],
    )
}

/// `other` allows everything from 10.9.0.0/16.
fn other(net: &str) -> Operation {
    let mut allow = rule("default/other/inbound/0", Action::Allow);
    allow.src.nets = vec![manul_dataplane_api::testutil::net(net)];
    policy_update(pid("default", "other"), vec![allow], vec![])
}

fn endpoint(name: &str, policy: &str) -> Operation {
    let p = pid("default", policy);
    Operation::WorkloadEndpointUpdate(wep(
        "ns",
        name,
        &["10.0.0.1/32"],
        vec![tier(
            "default",
            Action::Deny,
            std::slice::from_ref(&p),
            std::slice::from_ref(&p),
        )],
        &[],
    ))
}

/// `a` and `c` read `web` (and its set), `b` reads `other`.
fn initial() -> Vec<Operation> {
    vec![
        net_set("clients", &["10.0.0.2/32", "10.0.0.3/32"]),
        web(80),
        other("10.9.0.0/16"),
        endpoint("a", "web"),
        endpoint("b", "other"),
        endpoint("c", "web"),
        Operation::InSync,
    ]
}

fn member(s: &str) -> IpSetMember {
    IpSetMember::Net(manul_dataplane_api::testutil::net(s))
}

fn set_delta(added: &[&str], removed: &[&str]) -> Operation {
    Operation::IpSetDelta {
        id: "clients".into(),
        added: added.iter().map(|s| member(s)).collect(),
        removed: removed.iter().map(|s| member(s)).collect(),
    }
}

/// The whole state after `batch` was applied to [`initial`].
fn resync_after(batch: &[Operation]) -> Vec<Operation> {
    let mut d = NullDriver::new();
    use manul_dataplane_api::Driver;
    d.apply(&initial()).unwrap();
    d.apply(batch).unwrap();
    let s = d.state();
    let mut ops: Vec<Operation> = s
        .ip_sets
        .iter()
        .map(|(id, set)| Operation::IpSetUpdate {
            id: id.clone(),
            kind: set.kind,
            members: set.members.iter().copied().collect(),
        })
        .collect();
    ops.extend(s.policies.iter().map(|(id, p)| Operation::PolicyUpdate {
        id: id.clone(),
        policy: p.clone(),
    }));
    ops.extend(
        s.workload_endpoints
            .values()
            .map(|ep| Operation::WorkloadEndpointUpdate(ep.clone())),
    );
    ops.push(Operation::InSync);
    ops
}

/// The state's items (an error also makes the state not in sync).
fn unsynced(s: &DesiredState) -> DesiredState {
    DesiredState {
        in_sync: false,
        ..s.clone()
    }
}

fn fresh(ops: &[Operation]) -> FakeMaps {
    let mut n = Node::new(FakeMaps::roomy());
    n.apply(ops).expect("a fresh apply");
    n.maps
}

/// Fails the batch's first write, then its second, and so on until it
/// goes through. After each failure: the refused batch is not recorded,
/// every endpoint entry is the one before the batch or gone, only
/// endpoints in `may_lose` (those reading a space the batch writes into)
/// are gone, entries of lineages the failure dropped are deleted, and a
/// resync leaves the maps enforcing what a fresh apply of the same
/// state does.
fn fail_each_write(batch: &[Operation], may_lose: &[u32]) {
    let target = resync_after(batch);
    let want = fresh(&target).view();
    let mut failures = 0;
    for n in 0.. {
        let mut node = Node::new(FakeMaps::roomy());
        node.apply(&initial()).expect("initial state");
        let before_view = node.maps.view();
        let before_state = unsynced(node.desired.state());
        node.maps.fail_write(n);
        let start = node.maps.writes();
        match node.apply(batch) {
            Ok(outcome) if outcome.soft_errors.is_empty() => {
                assert!(
                    node.maps.writes() - start <= n,
                    "write {n} was not the batch's"
                );
                assert_eq!(node.maps.view(), want, "the batch without failures");
                break;
            }
            Ok(outcome) => {
                // After the flip: each endpoint is on its old or its new
                // tables, each whole (a space may still hold prefixes of
                // the old version), or, when its own entry could not be
                // written, names an old version that is deleted (the
                // kernel drops its new flows: no table). The resync below
                // repairs the rest.
                assert_eq!(outcome.soft_errors.len(), 1, "{:?}", outcome.soft_errors);
                let rules = |v: &EndpointView| -> Vec<Option<CompiledTable>> {
                    v.tables
                        .iter()
                        .map(|t| t.as_ref().map(|t| t.table.clone()))
                        .collect()
                };
                // An endpoint's sources are written as part of its flip.
                let chain = manul_dataplane_api::chain(&outcome.soft_errors[0]);
                let flip_failed = chain.contains("manul_ep") || chain.contains("manul_src");
                for (ix, v) in &node.maps.view() {
                    if flip_failed && v.tables.iter().any(Option::is_none) {
                        continue;
                    }
                    assert!(
                        [before_view.get(ix), want.get(ix)]
                            .into_iter()
                            .flatten()
                            .any(|w| rules(w) == rules(v)),
                        "write {n}: interface {ix} is on neither state"
                    );
                    assert_whole(v, n);
                }
            }
            Err(e) => {
                failures += 1;
                let text = manul_dataplane_api::chain(&e);
                assert!(text.contains("manul_"), "{text}");
                assert_eq!(
                    unsynced(node.desired.state()),
                    before_state,
                    "write {n}: undone"
                );
                let after = node.maps.view();
                for v in after.values() {
                    assert_whole(v, n);
                }
                for (ix, v) in &before_view {
                    match after.get(ix) {
                        Some(now) => assert_eq!(now, v, "write {n}: interface {ix} changed"),
                        None => assert!(
                            may_lose.contains(ix),
                            "write {n}: interface {ix} lost its entry"
                        ),
                    }
                }
                let live = node.ledger.live_ids();
                let leaked: BTreeSet<u32> = node
                    .maps
                    .ids()
                    .into_iter()
                    .filter(|id| !live.contains(id))
                    .collect();
                assert_eq!(
                    leaked,
                    BTreeSet::new(),
                    "write {n}: deleted what nothing holds"
                );
            }
        }
        node.apply(&target).expect("the resync");
        assert_eq!(node.maps.view(), want, "write {n}: resynced");
        assert_eq!(node.maps.orphans(), BTreeSet::new(), "write {n}: resynced");
    }
    assert!(failures > 0, "no write of the batch failed");
}

/// Every table an entry names is there, with a bitmap for every class its
/// space's entries point at.
fn assert_whole(v: &EndpointView, n: usize) {
    for t in &v.tables {
        let t = t.as_ref().expect("a named table is there");
        assert!(
            t.addr.iter().all(|side| side.values().all(Option::is_some)),
            "write {n}: a class without its bitmap"
        );
    }
}

#[test]
fn a_set_change_failing_part_way_unprograms_only_the_readers_of_the_set() {
    fail_each_write(
        &[set_delta(&["10.0.1.0/24", "10.0.0.4/32"], &["10.0.0.2/32"])],
        &[A, C],
    );
}

#[test]
fn a_rule_and_endpoint_change_failing_part_way_fails_closed() {
    fail_each_write(
        &[
            set_delta(&["10.0.1.0/24"], &[]),
            web(8080),
            other("10.8.0.0/16"),
            endpoint("d", "other"),
            Operation::WorkloadEndpointRemove {
                id: manul_dataplane_api::testutil::eid("ns", "c"),
            },
        ],
        &[A, B, C],
    );
}

#[test]
fn a_rule_change_failing_part_way_unprograms_only_where_it_added_prefixes() {
    // `other`'s new net is a new prefix in the space `b` reads; `web`'s
    // new port changes no address, so `a` and `c` keep their tables.
    fail_each_write(&[other("10.8.0.0/16"), web(443)], &[B]);
}

fn big_policy(rules: usize) -> Operation {
    let inbound: Vec<Rule> = (0..rules)
        .map(|i| {
            let mut r = rule(&format!("default/other/inbound/{i}"), Action::Deny);
            r.protocol = Some(17);
            r
        })
        .collect();
    policy_update(pid("default", "other"), inbound, vec![])
}

fn assert_untouched(node: &mut Node, batch: &[Operation], what: &str) {
    let maps = node.maps.clone();
    let state = unsynced(node.desired.state());
    let next = node.ledger.next_table;
    let err = node.apply(batch).expect_err(what);
    let text = manul_dataplane_api::chain(&err);
    assert!(text.contains(what), "{text}");
    assert_eq!(unsynced(node.desired.state()), state);
    assert_eq!(node.ledger.next_table, next, "no id was allocated");
    assert_eq!(
        (&node.maps.tables, &node.maps.classes, &node.maps.addrs),
        (&maps.tables, &maps.classes, &maps.addrs)
    );
    assert_eq!(node.maps.endpoints, maps.endpoints);
    assert_eq!(node.maps.writes(), maps.writes(), "nothing was written");
}

#[test]
fn compile_and_capacity_errors_change_nothing() {
    let mut node = Node::new(FakeMaps::roomy());
    node.apply(&initial()).expect("initial state");
    assert_untouched(
        &mut node,
        &[set_delta(&["10.0.5.0/24"], &[]), big_policy(1100)],
        "exceed the table limit",
    );
    // The driver keeps working.
    node.apply(&[other("10.7.0.0/16")]).expect("apply");

    let used = node.maps.used();
    let mut capacity = TableCounts {
        rule: used.rule + 20,
        ..FakeMaps::roomy().capacity
    };
    capacity.addr = used.addr + 100;
    node.maps.capacity = capacity;
    assert_untouched(
        &mut node,
        &[set_delta(&["10.0.6.0/24"], &[]), big_policy(40)],
        "manul_rule would need",
    );
    node.apply(&[big_policy(10)]).expect("fits");
}

#[test]
fn ids_are_shared_kept_and_never_handed_out_twice() {
    let mut node = Node::new(FakeMaps::roomy());
    node.apply(&initial()).expect("initial state");
    let (a, b, c) = (
        node.ids(A).unwrap(),
        node.ids(B).unwrap(),
        node.ids(C).unwrap(),
    );
    // Endpoints with the same tiers share the tables.
    assert_eq!(a, c);
    assert_ne!(a.1, b.1);
    let mut seen: BTreeSet<u32> = [a.0, a.1, b.0, b.1].into_iter().flatten().collect();

    // A set change is written in place: same tables, same spaces.
    node.apply(&[set_delta(&["10.0.0.9/32"], &[])])
        .expect("apply");
    assert_eq!(node.ids(A), Some(a));

    // A rule change: a new table version in the same space; the old
    // version is gone from the maps.
    node.apply(&[other("10.8.0.0/16")]).expect("apply");
    let b2 = node.ids(B).unwrap();
    assert_eq!(b2.1, b.1, "same space");
    for (old, new) in b.0.iter().zip(b2.0) {
        assert!(!seen.contains(&new), "table id {new} handed out twice");
        assert!(!node.maps.tables.contains_key(old));
        assert!(node.maps.classes.keys().all(|k| k.0 != *old));
    }
    seen.extend(b2.0);
    assert_eq!(node.ids(A), Some(a), "the other tables stay");

    // A failed set change drops the lineage of the hook that names the set
    // (the egress hook: `web`'s inbound rules); the next apply builds it
    // again under ids never used before, and the old ones are gone. The
    // ingress hook's lineage was not written into and stays.
    node.maps.fail_write(0);
    node.apply(&[set_delta(&["10.0.3.0/24"], &[])])
        .expect_err("the write fails");
    assert_eq!(node.ids(A), None);
    node.apply(&resync_after(&[
        set_delta(&["10.0.0.9/32"], &[]),
        other("10.8.0.0/16"),
        set_delta(&["10.0.3.0/24"], &[]),
    ]))
    .expect("resync");
    let a2 = node.ids(A).unwrap();
    assert_eq!(node.ids(C), Some(a2));
    assert_eq!(a2.1[0], a.1[0], "same space");
    for id in [a2.0[0], a2.0[1], a2.1[1]] {
        assert!(!seen.contains(&id), "id {id} handed out twice");
    }
    for old in [a.0[1], a.1[1]] {
        assert!(!node.maps.tables.contains_key(&old));
        assert!(node.maps.addrs.keys().all(|k| k.0 != old));
        assert!(node.maps.classes.keys().all(|k| k.0 != old));
    }
    assert_eq!(node.maps.next_table_id, node.ledger.next_table);
    assert_eq!(node.maps.orphans(), BTreeSet::new());
}

#[test]
fn a_set_change_is_planned_as_its_entries_only() {
    let mut node = Node::new(FakeMaps::roomy());
    node.apply(&initial()).expect("initial state");
    let (_, spaces) = node.ids(A).unwrap();
    let batch = [set_delta(&["10.0.0.4/32"], &["10.0.0.2/32"])];
    use manul_dataplane_api::Driver;
    node.desired.apply(&batch).unwrap();
    let touched = Touched::of(&batch);
    let state = node.desired.state();
    let names: Vec<String> = node.interfaces.keys().cloned().collect();
    let plans = plan::plans(state, &names, &node.prefixes);
    let work = batch::decide(&node.ledger, state, &touched, &plans).unwrap();
    let cx = Context {
        state,
        touched: &touched,
        interfaces: &node.interfaces,
    };
    let shared = &node.shared;
    let p = batch::plan(&mut node.ledger, work, &cx, plans, &mut |t| {
        labels(shared, t)
    });
    let ops: Vec<&MapOp> = p.write.iter().flat_map(|s| &s.ops).collect();
    // The members share a class: one new entry, one deleted, in the space
    // `a` and `c` read; no table is written and no endpoint flipped.
    let [
        MapOp::SetAddr {
            space, new: true, ..
        },
        MapOp::DeleteAddr { space: gone, .. },
    ] = ops.as_slice()
    else {
        panic!("{ops:#?}")
    };
    assert!(spaces.contains(space) && gone == space);
    assert!(p.flip.is_empty() && p.retire.is_empty() && p.unused.is_empty());
}

#[test]
fn a_workloads_sources_follow_its_addresses_and_go_with_it() {
    let mut node = Node::new(FakeMaps::roomy());
    node.apply(&initial()).expect("initial");
    let nets = |v: &[&str]| -> Vec<ipnet::IpNet> {
        v.iter()
            .map(|n| manul_dataplane_api::testutil::net(n))
            .collect()
    };
    assert_eq!(node.maps.sources.get(&A), Some(&nets(&["10.0.0.1/32"])));
    // Only the address changes: the entry is rewritten, sources first.
    let Operation::WorkloadEndpointUpdate(mut moved) = endpoint("a", "web") else {
        unreachable!("an endpoint update");
    };
    moved.nets = nets(&["10.0.0.7/32", "fd00::7/128"]);
    node.apply(&[Operation::WorkloadEndpointUpdate(moved.clone())])
        .expect("move");
    assert_eq!(
        node.maps.sources.get(&A),
        Some(&nets(&["10.0.0.7/32", "fd00::7/128"]))
    );
    node.apply(&[Operation::WorkloadEndpointRemove { id: moved.id }])
        .expect("remove");
    assert_eq!(node.maps.sources.get(&A), None);
    assert!(!node.maps.endpoints.contains_key(&A));
}
