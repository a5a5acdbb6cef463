//! How the tables of a host endpoint's stages end (forward, pre-DNAT,
//! untracked), checked by example and against the reference verdicts:
//! a stage's table decides as the reference judges an endpoint with the
//! same tiers and no profiles (pre-DNAT and untracked tiers never apply a
//! default action), except that where the reference finds no verdict at
//! all the forward table allows and the others go on to the next stage.

use manul_dataplane_api::{
    Action, Decider, DesiredState, Operation, Packet, Policy, PortRange, TierPolicies,
};
use proptest::prelude::*;

use super::tests::{a_packet, a_state, state};
use super::*;
use crate::model::decide;
use crate::space::Space;
use manul_dataplane_api::testutil::{ip, pid, rule};

fn tier(name: &str, default_action: Action, inbound: &[&str]) -> TierPolicies {
    TierPolicies {
        name: name.into(),
        default_action,
        inbound: inbound.iter().map(|p| pid(name, p)).collect(),
        outbound: vec![],
    }
}

/// The deciding slot's action and kind for a packet.
fn decided(s: &DesiredState, spec: &TableSpec, p: &Packet) -> (SlotAction, SlotKind) {
    let table = compile(s, spec).unwrap();
    let mut space = Space::new();
    space.add_table(&table.addr, s);
    space.settle();
    let (_, slot) = decide(&table, &space.view(&table.addr), p).expect("a slot decides");
    (slot.action, slot.kind.clone())
}

fn port_rule(id: &str, action: Action, port: u16) -> manul_dataplane_api::Rule {
    let mut r = rule(id, action);
    r.protocol = Some(6);
    r.dst.ports = vec![PortRange {
        first: port,
        last: port,
    }];
    r
}

#[test]
fn stages_end_as_calico_does() {
    let s = state(vec![Operation::PolicyUpdate {
        id: pid("t1", "p"),
        policy: Policy {
            inbound: vec![
                port_rule("p/0", Action::Allow, 80),
                port_rule("p/1", Action::Deny, 22),
            ],
            outbound: vec![],
        },
    }]);
    let tiers = vec![tier("t1", Action::Deny, &["p"])];
    let p = |port| Packet::tcp(ip("10.0.0.9"), 40000, ip("10.0.0.1"), port);
    let spec = |stage| TableSpec::stage(stage, Direction::Inbound, &tiers).unwrap();

    // Forward: the tier's default action, no profiles.
    let forward = spec(Stage::Forward);
    assert!(forward.profiles.is_empty());
    assert_eq!(decided(&s, &forward, &p(80)).0, SlotAction::Allow);
    assert_eq!(decided(&s, &forward, &p(22)).0, SlotAction::Deny);
    assert_eq!(
        decided(&s, &forward, &p(23)),
        (
            SlotAction::Deny,
            SlotKind::TierDefault { tier: "t1".into() }
        )
    );
    // A Pass tier with no verdict: forwarded traffic is allowed.
    let pass = vec![tier("t1", Action::Pass, &["p"])];
    let forward_pass = TableSpec::stage(Stage::Forward, Direction::Inbound, &pass).unwrap();
    assert_eq!(
        decided(&s, &forward_pass, &p(23)),
        (SlotAction::Allow, SlotKind::NoMatch)
    );

    // Pre-DNAT and untracked: no tier default; no verdict goes on.
    for stage in [Stage::PreDnat, Stage::Untracked] {
        let spec = spec(stage);
        assert_eq!(decided(&s, &spec, &p(80)).0, SlotAction::Allow);
        assert_eq!(decided(&s, &spec, &p(22)).0, SlotAction::Deny);
        assert_eq!(
            decided(&s, &spec, &p(23)),
            (SlotAction::Next, SlotKind::NoMatch),
            "{stage:?}"
        );
    }

    // No policy for the direction: no table at all.
    assert_eq!(
        TableSpec::stage(Stage::Forward, Direction::Outbound, &tiers),
        None
    );
    assert_eq!(
        TableSpec::stage(Stage::PreDnat, Direction::Inbound, &[]),
        None
    );
    // Different stages of the same tiers are different tables.
    assert_ne!(spec(Stage::PreDnat), spec(Stage::Untracked));
}

/// The reference's judgement of endpoint "a", with its tiers' defaults
/// made Pass where the stage has none and no profiles, as the action the
/// stage's table must take.
fn reference(
    s: &DesiredState,
    stage: Stage,
    dir: Direction,
    p: &Packet,
) -> Option<(SlotAction, Decider)> {
    let mut s = s.clone();
    let key = s.workload_endpoints.keys().find(|k| k.name == "a")?.clone();
    s.workload_endpoints.retain(|k, _| *k == key);
    let ep = s.workload_endpoints.get_mut(&key)?;
    ep.profiles.clear();
    if !stage.tier_defaults() {
        for t in &mut ep.tiers {
            t.default_action = Action::Pass;
        }
    }
    let v = s.verdict(p);
    let side = match dir {
        Direction::Inbound => v.inbound?,
        Direction::Outbound => v.outbound?,
    };
    let action = match (&side.decider, side.allowed) {
        (Decider::NoMatch, _) => stage.no_match(),
        (_, true) => SlotAction::Allow,
        (_, false) => SlotAction::Deny,
    };
    Some((action, side.decider))
}

fn as_decider(kind: SlotKind) -> Decider {
    match kind {
        SlotKind::Policy { policy, rule_id } => Decider::Rule {
            policy: Some(policy),
            profile: None,
            rule_id,
        },
        SlotKind::Profile { profile, rule_id } => Decider::Rule {
            policy: None,
            profile: Some(profile),
            rule_id,
        },
        SlotKind::TierDefault { tier } => Decider::TierDefault { tier },
        SlotKind::NoMatch => Decider::NoMatch,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn stage_tables_agree_with_the_reference(
        s in a_state(),
        packets in proptest::collection::vec(a_packet(), 1..48),
    ) {
        let Some(a) = s.workload_endpoints.values().find(|e| e.id.name == "a") else {
            return Ok(());
        };
        for stage in [Stage::Forward, Stage::PreDnat, Stage::Untracked] {
            for dir in [Direction::Inbound, Direction::Outbound] {
                let Some(spec) = TableSpec::stage(stage, dir, &a.tiers) else {
                    continue;
                };
                for p in &packets {
                    let Some(want) = reference(&s, stage, dir, p) else {
                        continue;
                    };
                    let (action, kind) = decided(&s, &spec, p);
                    prop_assert_eq!(
                        (action, as_decider(kind)),
                        want,
                        "{:?} {:?} {:?}",
                        stage,
                        dir,
                        p
                    );
                }
            }
        }
    }
}
