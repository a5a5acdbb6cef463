//! The compiler against the reference verdicts (`DesiredState::verdict`),
//! through the userspace model of the kernel lookup.

use ipnet::IpNet;
use manul_dataplane_api::testutil::{ip, net, pid, rule};
use manul_dataplane_api::{
    Action, Decider, DesiredState, Driver, EndpointId, Icmp, IpSetKind, IpSetMember, Match,
    NullDriver, Operation, Packet, Policy, PortRange, Rule, TierPolicies, WorkloadEndpoint,
};
use proptest::prelude::*;

use super::*;
use crate::model::decide;
use crate::space::Space;

fn wep(name: &str, nets: &[&str], tiers: Vec<TierPolicies>, profiles: &[&str]) -> WorkloadEndpoint {
    WorkloadEndpoint {
        id: EndpointId {
            namespace: "ns".into(),
            name: name.into(),
        },
        interface_name: format!("mnl{name}"),
        nets: nets.iter().map(|n| net(n)).collect(),
        mac: None,
        tiers,
        profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
    }
}

pub(super) fn state(ops: Vec<Operation>) -> DesiredState {
    let mut d = NullDriver::new();
    d.apply(&ops).unwrap();
    d.state().clone()
}

/// The kernel model's judgement of one side, as a reference decider.
fn model_side(
    state: &DesiredState,
    ep: &EndpointId,
    dir: Direction,
    p: &Packet,
) -> (bool, Decider) {
    let ep = &state.workload_endpoints[ep];
    let table = compile(state, &TableSpec::new(dir, &ep.tiers, &ep.profiles)).unwrap();
    let mut space = Space::new();
    space.add_table(&table.addr, state);
    space.settle();
    judge(&table, &space, p)
}

/// The model's judgement of a packet by a table in a space.
fn judge(table: &CompiledTable, space: &Space, p: &Packet) -> (bool, Decider) {
    match decide(table, &space.view(&table.addr), p) {
        None => (false, Decider::NoMatch),
        Some((_, slot)) => {
            let decider = match &slot.kind {
                SlotKind::Policy { policy, rule_id } => Decider::Rule {
                    policy: Some(policy.clone()),
                    profile: None,
                    rule_id: rule_id.clone(),
                },
                SlotKind::Profile { profile, rule_id } => Decider::Rule {
                    policy: None,
                    profile: Some(profile.clone()),
                    rule_id: rule_id.clone(),
                },
                SlotKind::TierDefault { tier } => Decider::TierDefault { tier: tier.clone() },
                SlotKind::NoMatch => Decider::NoMatch,
            };
            (slot.action == SlotAction::Allow, decider)
        }
    }
}

/// Checks both sides of a packet against the oracle.
fn agree(state: &DesiredState, p: &Packet) -> Result<(), TestCaseError> {
    let v = state.verdict(p);
    if let Some(side) = &v.outbound {
        let got = model_side(state, &side.endpoint, Direction::Outbound, p);
        prop_assert_eq!(
            got,
            (side.allowed, side.decider.clone()),
            "outbound {:?}\n{:#?}",
            p,
            v.steps
        );
    }
    if let Some(side) = &v.inbound {
        let got = model_side(state, &side.endpoint, Direction::Inbound, p);
        prop_assert_eq!(
            got,
            (side.allowed, side.decider.clone()),
            "inbound {:?}\n{:#?}",
            p,
            v.steps
        );
    }
    Ok(())
}

#[test]
fn port_ranges_become_aligned_blocks() {
    let blocks = range_blocks(&PortRange {
        first: 80,
        last: 90,
    });
    let covered: Vec<u16> = blocks.iter().flat_map(|b| b.first..=b.last()).collect();
    assert_eq!(covered, (80..=90).collect::<Vec<_>>());
    assert_eq!(blocks.len(), 3); // 80-87, 88-89, 90
    let all = range_blocks(&PortRange {
        first: 0,
        last: 65535,
    });
    assert_eq!(
        all,
        vec![PortBlock {
            first: 0,
            prefix_len: 0
        }]
    );
    let top = range_blocks(&PortRange {
        first: 65535,
        last: 65535,
    });
    assert_eq!(
        top,
        vec![PortBlock {
            first: 65535,
            prefix_len: 16
        }]
    );
}

#[test]
fn tiers_pass_profiles_and_default_deny() {
    let mut allow_web = rule("web/inbound/0", Action::Allow);
    allow_web.protocol = Some(6);
    allow_web.dst.ports = vec![PortRange {
        first: 80,
        last: 80,
    }];
    let mut pass_admin = rule("admin/inbound/0", Action::Pass);
    pass_admin.src.nets = vec![net("10.9.0.0/16")];
    let s = state(vec![
        Operation::PolicyUpdate {
            id: pid("security", "admin"),
            policy: Policy {
                inbound: vec![rule("admin/inbound/log", Action::Log), pass_admin],
                outbound: vec![],
            },
        },
        Operation::PolicyUpdate {
            id: pid("default", "web"),
            policy: Policy {
                inbound: vec![allow_web],
                outbound: vec![],
            },
        },
        Operation::ProfileUpdate {
            id: "kns.ns".into(),
            profile: Policy {
                inbound: vec![rule("kns.ns/inbound/0", Action::Allow)],
                outbound: vec![rule("kns.ns/outbound/0", Action::Allow)],
            },
        },
        Operation::WorkloadEndpointUpdate(wep(
            "a",
            &["10.0.0.1/32"],
            vec![
                TierPolicies {
                    name: "security".into(),
                    default_action: Action::Pass,
                    inbound: vec![pid("security", "admin")],
                    outbound: vec![],
                },
                TierPolicies {
                    name: "default".into(),
                    default_action: Action::Deny,
                    inbound: vec![pid("default", "web")],
                    outbound: vec![],
                },
            ],
            &["kns.ns"],
        )),
    ]);
    for p in [
        Packet::tcp(ip("10.1.0.1"), 1000, ip("10.0.0.1"), 80),
        Packet::tcp(ip("10.1.0.1"), 1000, ip("10.0.0.1"), 81),
        Packet::tcp(ip("10.9.0.1"), 1000, ip("10.0.0.1"), 22),
        Packet::udp(ip("10.9.0.1"), 1000, ip("10.0.0.1"), 80),
        Packet::tcp(ip("10.0.0.1"), 1000, ip("10.1.0.1"), 80),
        Packet::icmp(ip("10.1.0.1"), ip("10.0.0.1"), 8, 0),
    ] {
        agree(&s, &p).unwrap();
    }
    let ep = &s.workload_endpoints[&EndpointId {
        namespace: "ns".into(),
        name: "a".into(),
    }];
    let table = compile(
        &s,
        &TableSpec::new(Direction::Inbound, &ep.tiers, &ep.profiles),
    )
    .unwrap();
    // pass, allow web, tier default, profile allow, no match (the Log rule
    // takes no slot).
    assert_eq!(table.slots.len(), 5);
    assert_eq!(table.slots[0].end, 0);
}

#[test]
fn too_many_rules_is_an_error() {
    let rules: Vec<Rule> = (0..MAX_SLOTS)
        .map(|i| rule(&format!("big/inbound/{i}"), Action::Allow))
        .collect();
    let s = state(vec![
        Operation::PolicyUpdate {
            id: pid("default", "big"),
            policy: Policy {
                inbound: rules,
                outbound: vec![],
            },
        },
        Operation::WorkloadEndpointUpdate(wep(
            "a",
            &["10.0.0.1/32"],
            vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![pid("default", "big")],
                outbound: vec![],
            }],
            &[],
        )),
    ]);
    let ep = s.workload_endpoints.values().next().unwrap();
    let err = compile(
        &s,
        &TableSpec::new(Direction::Inbound, &ep.tiers, &ep.profiles),
    );
    assert!(
        matches!(err, Err(CompileError::TooManyRules { .. })),
        "{err:?}"
    );
}

// ---- property test ----

const ADDRS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.5",
    "10.0.1.7",
    "192.168.3.4",
    "fd00::1",
    "fd00::2",
    "fd00:1::9",
];
const NETS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.4/30",
    "10.0.0.2/32",
    "10.0.1.0/24",
    "192.168.0.0/16",
    "::/0",
    "fd00::/64",
    "fd00::2/128",
];
const PORTS: &[u16] = &[0, 1, 79, 80, 443, 1000, 8080, 65535];
const RANGES: &[(u16, u16)] = &[
    (80, 80),
    (0, 1000),
    (443, 8080),
    (1, 65535),
    (1000, 1000),
    (79, 81),
];
const NET_SETS: &[&str] = &["s0", "s1", "s2"];
const NP_SETS: &[&str] = &["n0", "n1"];

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

/// Mostly empty lists, so that rules match often enough to decide.
fn sparse<T: std::fmt::Debug + Clone>(
    item: impl Strategy<Value = T>,
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => proptest::collection::vec(item, 0..=max),
    ]
}

fn nets(max: usize) -> impl Strategy<Value = Vec<IpNet>> {
    sparse(pick(NETS).prop_map(net), max)
}

fn ranges(max: usize) -> impl Strategy<Value = Vec<PortRange>> {
    sparse(
        pick(RANGES).prop_map(|(first, last)| PortRange { first, last }),
        max,
    )
}

fn ids(pool: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<String>> {
    sparse(pick(pool).prop_map(String::from), max)
}

fn a_match(with_ports: bool) -> impl Strategy<Value = Match> {
    let p = if with_ports { 2 } else { 0 };
    (
        nets(2),
        nets(1),
        ranges(p),
        ranges(p.min(1)),
        ids(NP_SETS, 1),
        ids(NP_SETS, 1),
        ids(NET_SETS, 2),
        ids(NET_SETS, 1),
    )
        .prop_map(
            |(nets, not_nets, ports, not_ports, named, not_named, sets, not_sets)| Match {
                nets,
                not_nets,
                ports,
                not_ports,
                named_port_sets: named,
                not_named_port_sets: not_named,
                ip_sets: sets,
                not_ip_sets: not_sets,
            },
        )
}

fn an_icmp(allowed: bool) -> impl Strategy<Value = Option<Icmp>> {
    proptest::option::of((
        pick(&[0u8, 8][..]),
        proptest::option::of(pick(&[0u8, 1][..])),
    ))
    .prop_map(move |o| {
        o.filter(|_| allowed)
            .map(|(icmp_type, code)| Icmp { icmp_type, code })
    })
}

fn a_rule() -> impl Strategy<Value = Rule> {
    let action = pick(
        &[
            Action::Allow,
            Action::Allow,
            Action::Deny,
            Action::Pass,
            Action::Log,
        ][..],
    );
    let protocol = pick(&[None, Some(6u8), Some(17), Some(1), Some(58)][..]);
    (
        action,
        protocol,
        pick(&[None, Some(4u8), Some(6)][..]),
        pick(&[None, Some(6u8), Some(17), Some(1)][..]),
    )
        .prop_flat_map(|(action, protocol, ip_version, not_protocol)| {
            let ports = matches!(protocol, Some(6 | 17));
            let icmp = matches!(protocol, Some(1 | 58));
            (an_icmp(icmp), an_icmp(icmp), a_match(ports), a_match(ports)).prop_map(
                move |(icmp, not_icmp, src, dst)| Rule {
                    id: String::new(),
                    action,
                    ip_version,
                    protocol,
                    not_protocol,
                    icmp,
                    not_icmp,
                    src,
                    dst,
                },
            )
        })
}

fn a_policy() -> impl Strategy<Value = Policy> {
    (
        proptest::collection::vec(a_rule(), 0..5),
        proptest::collection::vec(a_rule(), 0..5),
    )
        .prop_map(|(inbound, outbound)| Policy { inbound, outbound })
}

fn name_rules(owner: &str, mut p: Policy) -> Policy {
    for (dir, rules) in [("inbound", &mut p.inbound), ("outbound", &mut p.outbound)] {
        for (i, r) in rules.iter_mut().enumerate() {
            r.id = format!("{owner}/{dir}/{i}");
        }
    }
    p
}

fn a_tier(
    name: &'static str,
    policies: &'static [&'static str],
) -> impl Strategy<Value = TierPolicies> {
    let subset = || proptest::sample::subsequence(policies.to_vec(), 0..=policies.len());
    (pick(&[Action::Deny, Action::Pass][..]), subset(), subset()).prop_map(move |(d, i, o)| {
        TierPolicies {
            name: name.into(),
            default_action: d,
            inbound: i.iter().map(|n| pid(name, n)).collect(),
            outbound: o.iter().map(|n| pid(name, n)).collect(),
        }
    })
}

fn an_endpoint(
    name: &'static str,
    nets: &'static [&'static str],
) -> impl Strategy<Value = WorkloadEndpoint> {
    (
        a_tier("t1", &["p0", "p1"]),
        a_tier("t2", &["p2", "p3"]),
        proptest::sample::subsequence(vec!["pr0", "pr1"], 0..=2),
    )
        .prop_map(move |(t1, t2, profiles)| wep(name, nets, vec![t1, t2], &profiles))
}

pub(super) fn a_state() -> impl Strategy<Value = DesiredState> {
    a_state_ops().prop_map(state)
}

fn a_state_ops() -> impl Strategy<Value = Vec<Operation>> {
    let net_sets =
        proptest::collection::vec(proptest::collection::vec(pick(NETS).prop_map(net), 0..4), 3);
    let np_member =
        (pick(ADDRS), pick(&[6u8, 17][..]), pick(PORTS)).prop_map(|(a, protocol, port)| {
            IpSetMember::NamedPort {
                ip: ip(a),
                protocol,
                port,
            }
        });
    let np_sets = proptest::collection::vec(proptest::collection::vec(np_member, 0..4), 2);
    let policies = proptest::collection::vec(a_policy(), 6);
    let eps = (
        an_endpoint("a", &["10.0.0.1/32", "fd00::1/128"]),
        an_endpoint("b", &["10.0.0.2/32", "fd00::2/128"]),
    );
    (net_sets, np_sets, policies, eps).prop_map(|(net_sets, np_sets, policies, (a, b))| {
        let mut ops = Vec::new();
        for (id, members) in NET_SETS.iter().zip(net_sets) {
            ops.push(Operation::IpSetUpdate {
                id: (*id).into(),
                kind: IpSetKind::Net,
                members: members.into_iter().map(IpSetMember::Net).collect(),
            });
        }
        for (id, members) in NP_SETS.iter().zip(np_sets) {
            ops.push(Operation::IpSetUpdate {
                id: (*id).into(),
                kind: IpSetKind::NamedPort,
                members,
            });
        }
        let mut policies = policies.into_iter();
        for (tier, name) in [("t1", "p0"), ("t1", "p1"), ("t2", "p2"), ("t2", "p3")] {
            let p = policies.next().unwrap_or_default();
            ops.push(Operation::PolicyUpdate {
                id: pid(tier, name),
                policy: name_rules(name, p),
            });
        }
        for name in ["pr0", "pr1"] {
            let p = policies.next().unwrap_or_default();
            ops.push(Operation::ProfileUpdate {
                id: name.into(),
                profile: name_rules(name, p),
            });
        }
        ops.push(Operation::WorkloadEndpointUpdate(a));
        ops.push(Operation::WorkloadEndpointUpdate(b));
        ops
    })
}

pub(super) fn a_packet() -> impl Strategy<Value = Packet> {
    let v4 = proptest::sample::select(&ADDRS[..6]);
    let v6 = proptest::sample::select(&ADDRS[6..]);
    let addrs = prop_oneof![(v4.clone(), v4), (v6.clone(), v6)];
    (
        addrs,
        pick(&[6u8, 17, 1, 58, 47][..]),
        pick(PORTS),
        pick(PORTS),
        pick(&[0u8, 8, 3][..]),
        pick(&[0u8, 1][..]),
    )
        .prop_map(|((s, d), proto, sp, dp, t, c)| match proto {
            1 | 58 => Packet {
                protocol: proto,
                ..Packet::icmp(ip(s), ip(d), t, c)
            },
            47 => Packet::with_ports(47, ip(s), 0, ip(d), 0),
            _ => Packet::with_ports(proto, ip(s), sp, ip(d), dp),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn compiled_tables_agree_with_the_reference(
        s in a_state(),
        packets in proptest::collection::vec(a_packet(), 1..64),
    ) {
        for p in &packets {
            agree(&s, p)?;
        }
    }
}

/// One change of an update sequence.
fn a_change() -> impl Strategy<Value = Operation> {
    let set_id = || pick(NET_SETS).prop_map(String::from);
    let members =
        || proptest::collection::vec(pick(NETS).prop_map(|n| IpSetMember::Net(net(n))), 0..3);
    const POLICY_IDS: &[(&str, &str)] = &[("t1", "p0"), ("t1", "p1"), ("t2", "p2"), ("t2", "p3")];
    prop_oneof![
        3 => (set_id(), members(), members()).prop_map(|(id, added, removed)| {
            Operation::IpSetDelta { id, added, removed }
        }),
        1 => (set_id(), members()).prop_map(|(id, members)| Operation::IpSetUpdate {
            id,
            kind: IpSetKind::Net,
            members,
        }),
        2 => (pick(POLICY_IDS), a_policy()).prop_map(|((tier, name), p)| {
            Operation::PolicyUpdate {
                id: pid(tier, name),
                policy: name_rules(name, p),
            }
        }),
        1 => an_endpoint("a", &["10.0.0.1/32", "fd00::1/128"])
            .prop_map(Operation::WorkloadEndpointUpdate),
    ]
}

/// The driver's bookkeeping without the kernel: one space per table spec,
/// tables replaced in their space, sets synced in place.
#[derive(Default)]
struct Lineages {
    tables: std::collections::HashMap<TableSpec, (CompiledTable, Space)>,
}

impl Lineages {
    fn specs(s: &DesiredState) -> Vec<TableSpec> {
        let mut out: Vec<TableSpec> = Vec::new();
        for ep in s.workload_endpoints.values() {
            for d in [Direction::Inbound, Direction::Outbound] {
                let spec = TableSpec::new(d, &ep.tiers, &ep.profiles);
                if !out.contains(&spec) {
                    out.push(spec);
                }
            }
        }
        out
    }

    /// Applies a batch the way `crate::program` does, checking at the
    /// midpoint of every table replacement that the old table still judges
    /// by the old rules and the new one by the new rules.
    fn apply(
        &mut self,
        before: &DesiredState,
        now: &DesiredState,
        batch: &[Operation],
        packets: &[Packet],
    ) -> Result<(), TestCaseError> {
        let touched = crate::plan::Touched::of(batch);
        let specs = Self::specs(now);
        for spec in &specs {
            match self.tables.get_mut(spec) {
                None => {
                    let t = compile(now, spec).unwrap();
                    let mut space = Space::new();
                    space.add_table(&t.addr, now);
                    space.settle();
                    self.tables.insert(spec.clone(), (t, space));
                }
                Some((old, space)) if touched.rules_affect(spec, now) => {
                    let new = compile(now, spec).unwrap();
                    space.add_table(&new.addr, now);
                    for id in &touched.sets {
                        space.sync_set(id, now);
                    }
                    space.settle();
                    if touched.sets.is_empty() {
                        let was = compile(before, spec).unwrap();
                        for p in packets {
                            prop_assert_eq!(
                                judge(old, space, p),
                                judge(&was, &fresh(&was, before), p)
                            );
                        }
                    }
                    for p in packets {
                        prop_assert_eq!(judge(&new, space, p), judge(&new, &fresh(&new, now), p));
                    }
                    space.remove_table(&old.addr);
                    space.settle();
                    *old = new;
                }
                Some((_, space)) => {
                    for id in &touched.sets {
                        space.sync_set(id, now);
                    }
                    space.settle();
                }
            }
        }
        self.tables.retain(|spec, _| specs.contains(spec));
        for (t, space) in self.tables.values() {
            prop_assert_eq!(space.snapshot(), fresh(t, now).snapshot());
        }
        Ok(())
    }
}

fn fresh(t: &CompiledTable, s: &DesiredState) -> Space {
    let mut space = Space::new();
    space.add_table(&t.addr, s);
    space.settle();
    space
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Incremental updates (set deltas in place, rule changes as a new
    /// table in the same space) end where a fresh compile would, and judge
    /// like the reference after every step.
    #[test]
    fn incremental_updates_agree_with_the_reference(
        initial in a_state_ops(),
        changes in proptest::collection::vec(a_change(), 1..12),
        packets in proptest::collection::vec(a_packet(), 1..32),
    ) {
        let mut d = NullDriver::new();
        d.apply(&initial).unwrap();
        let mut lineages = Lineages::default();
        lineages.apply(&DesiredState::default(), d.state(), &initial, &packets)?;
        for change in changes {
            let before = d.state().clone();
            let batch = [change];
            if d.apply(&batch).is_err() {
                continue;
            }
            let now = d.state().clone();
            lineages.apply(&before, &now, &batch, &packets)?;
            for p in &packets {
                let v = now.verdict(p);
                for (side, dir) in [(&v.outbound, Direction::Outbound), (&v.inbound, Direction::Inbound)] {
                    let Some(side) = side else { continue };
                    let ep = &now.workload_endpoints[&side.endpoint];
                    let spec = TableSpec::new(dir, &ep.tiers, &ep.profiles);
                    let (t, space) = &lineages.tables[&spec];
                    prop_assert_eq!(judge(t, space, p), (side.allowed, side.decider.clone()), "{:?}", p);
                }
            }
        }
    }
}
