use proptest::prelude::*;

use super::*;
use std::net::IpAddr;

use crate::ops::{Action, IpSetKind, IpSetMember};
use crate::testutil::*;

/// Applies a batch that must break the contract, checks that nothing of it
/// was recorded and that the driver is out of sync (everything stale), and
/// returns the error's index and violation.
fn rejected(driver: &mut NullDriver, batch: &[Operation]) -> (usize, ContractViolation, String) {
    let mut before = driver.state().clone();
    let batches = driver.batches_applied();
    let error = driver.apply(batch).expect_err("the batch must be rejected");
    before.in_sync = false;
    assert_eq!(
        driver.state(),
        &before,
        "a rejected batch changed the state"
    );
    assert_eq!(driver.batches_applied(), batches);
    let items = before.ip_sets.len()
        + before.policies.len()
        + before.profiles.len()
        + before.workload_endpoints.len()
        + before.host_endpoints.len()
        + before.services.len()
        + usize::from(
            !before.node_addresses.is_empty()
                || !before.local_addresses.is_empty()
                || !before.pools.is_empty(),
        );
    assert_eq!(driver.stale_count(), items, "everything is stale");
    let message = error.to_string();
    match error {
        DriverError::Contract {
            index,
            operation,
            violation,
        } => {
            assert_eq!(operation, batch[index].kind());
            assert!(
                message.starts_with(&format!("operation {index} ({operation})")),
                "{message}"
            );
            (index, violation, message)
        }
        other => panic!("not a contract error: {other}"),
    }
}

fn loaded() -> NullDriver {
    let mut driver = NullDriver::new();
    driver
        .apply(&sample_batch())
        .expect("the sample state is valid");
    driver
}

#[test]
fn an_ordered_batch_is_recorded() {
    let driver = loaded();
    assert_eq!(driver.name(), "null");
    assert_eq!(driver.ip_set_count(), 2);
    assert_eq!(driver.policy_count(), 1);
    assert_eq!(driver.profile_count(), 1);
    assert_eq!(driver.workload_endpoint_count(), 2);
    assert_eq!(driver.host_endpoint_count(), 1);
    assert_eq!(driver.service_count(), 1);
    assert!(driver.in_sync());
    assert_eq!(driver.batches_applied(), 1);
    assert_eq!(driver.operations_applied(), sample_batch().len() as u64);
    let set = driver.ip_set("s:web").expect("set");
    assert_eq!(set.kind, IpSetKind::Net);
    assert!(set.contains_addr(ip("10.0.0.2")));
    assert!(!set.contains_addr(ip("10.0.0.3")));
    assert!(
        driver
            .ip_set("np:http")
            .expect("set")
            .contains_named_port(ip("10.0.0.1"), 6, 8080)
    );
    assert!(driver.policy(&pid("default", "prod/allow-web")).is_some());
    assert!(driver.profile("kns.prod").is_some());
    assert_eq!(
        driver
            .workload_endpoint(&eid("prod", "web-0"))
            .expect("endpoint")
            .interface_name,
        "caliweb-0"
    );
    let names: Vec<&str> = driver
        .workload_endpoints()
        .map(|ep| ep.id.name.as_str())
        .collect();
    assert_eq!(names, ["web-0", "web-1"]);
    assert!(driver.host_endpoint("node1-eth0").is_some());
    assert_eq!(driver.host_endpoints().count(), 1);
    assert!(driver.service("prod", "web").is_some());
    assert!(driver.service("prod", "other").is_none());
    driver
        .state()
        .check()
        .expect("a driver's state is consistent");
}

#[test]
fn removals_in_reverse_order_empty_the_driver() {
    let mut driver = loaded();
    let p = pid("default", "prod/allow-web");
    driver
        .apply(&[
            Operation::ServiceRemove {
                namespace: "prod".to_owned(),
                name: "web".to_owned(),
            },
            Operation::HostEndpointRemove {
                id: "node1-eth0".to_owned(),
            },
            Operation::WorkloadEndpointRemove {
                id: eid("prod", "web-1"),
            },
            Operation::WorkloadEndpointRemove {
                id: eid("prod", "web-0"),
            },
            Operation::ProfileRemove {
                id: "kns.prod".to_owned(),
            },
            Operation::PolicyRemove { id: p },
            Operation::IpSetRemove {
                id: "np:http".to_owned(),
            },
            Operation::IpSetRemove {
                id: "s:web".to_owned(),
            },
        ])
        .expect("reverse order is valid");
    let empty = DesiredState {
        in_sync: true,
        ..DesiredState::default()
    };
    assert_eq!(driver.state(), &empty);
    assert!(
        driver.set_refs.is_empty()
            && driver.policy_refs.is_empty()
            && driver.profile_refs.is_empty()
    );
}

#[test]
fn an_endpoint_naming_an_unknown_policy_is_rejected() {
    let mut driver = NullDriver::new();
    let p = pid("default", "missing");
    let (index, violation, message) = rejected(
        &mut driver,
        &[
            allow_all_profile("kns.prod"),
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "a",
                &["10.0.0.1/32"],
                vec![tier("default", Action::Deny, std::slice::from_ref(&p), &[])],
                &["kns.prod"],
            )),
        ],
    );
    assert_eq!(index, 1);
    assert_eq!(
        violation,
        ContractViolation::UnknownPolicy {
            policy: p,
            endpoint: "workload endpoint prod/a".to_owned()
        }
    );
    assert!(
        message.contains("names policy default/missing"),
        "{message}"
    );
    // Sending the policy first makes the same endpoint valid.
    driver
        .apply(&[
            allow_all_profile("kns.prod"),
            policy_update(pid("default", "missing"), Vec::new(), Vec::new()),
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "a",
                &["10.0.0.1/32"],
                vec![tier(
                    "default",
                    Action::Deny,
                    &[pid("default", "missing")],
                    &[],
                )],
                &["kns.prod"],
            )),
        ])
        .expect("policy before endpoint");
}

#[test]
fn an_endpoint_naming_an_unknown_profile_is_rejected() {
    let mut driver = loaded();
    let (index, violation, message) = rejected(
        &mut driver,
        &[Operation::HostEndpointUpdate(hep(
            "h",
            Vec::new(),
            &["kns.nope"],
        ))],
    );
    assert_eq!(index, 0);
    assert!(matches!(
        violation,
        ContractViolation::UnknownProfile { ref profile, ref endpoint } if profile == "kns.nope" && endpoint == "host endpoint \"h\""
    ));
    assert!(message.contains("kns.nope"), "{message}");
}

#[test]
fn a_rule_naming_an_unknown_set_is_rejected() {
    let mut driver = loaded();
    let mut r = rule("default/p/outbound/0", Action::Allow);
    r.dst.not_ip_sets = strings(&["s:ghost"]);
    let (index, violation, message) = rejected(
        &mut driver,
        &[
            net_set("s:other", &[]),
            policy_update(pid("default", "p"), Vec::new(), vec![r]),
        ],
    );
    assert_eq!(index, 1);
    assert_eq!(
        violation,
        ContractViolation::UnknownIpSet {
            set: "s:ghost".to_owned(),
            owner: "policy default/p".to_owned(),
            rule: "default/p/outbound/0".to_owned(),
        }
    );
    assert!(message.contains("s:ghost"), "{message}");
    assert!(
        driver.ip_set("s:other").is_none(),
        "the first operation was rolled back"
    );

    let mut r = rule("kns.x/inbound/0", Action::Allow);
    r.src.named_port_sets = strings(&["np:ghost"]);
    let (_, violation, _) = rejected(&mut driver, &[profile_update("kns.x", vec![r], Vec::new())]);
    assert!(
        matches!(violation, ContractViolation::UnknownIpSet { ref set, ref owner, .. } if set == "np:ghost" && owner == "profile \"kns.x\"")
    );
}

#[test]
fn a_set_used_as_the_wrong_kind_is_rejected() {
    let mut driver = loaded();
    let mut r = rule("default/p/inbound/0", Action::Allow);
    r.protocol = Some(6);
    r.dst.named_port_sets = strings(&["s:web"]);
    let (_, violation, _) = rejected(
        &mut driver,
        &[policy_update(pid("default", "p"), vec![r], Vec::new())],
    );
    assert_eq!(
        violation,
        ContractViolation::SetKindMismatch {
            set: "s:web".to_owned(),
            owner: "policy default/p".to_owned(),
            rule: "default/p/inbound/0".to_owned(),
            used_as: IpSetKind::NamedPort,
            actual: IpSetKind::Net,
        }
    );
    // Nor may a used set change kind.
    let (_, violation, message) = rejected(&mut driver, &[np_set("s:web", &[])]);
    assert!(
        matches!(violation, ContractViolation::SetKindChangeWhileReferenced { ref set, .. } if set == "s:web")
    );
    assert!(message.contains("default/allow-web/inbound/0"), "{message}");
}

#[test]
fn a_delta_on_a_missing_set_is_rejected() {
    let mut driver = loaded();
    let (index, violation, message) = rejected(
        &mut driver,
        &[
            Operation::IpSetDelta {
                id: "s:web".to_owned(),
                added: vec![IpSetMember::Net(net("10.0.0.9/32"))],
                removed: vec![IpSetMember::Net(net("10.0.0.1/32"))],
            },
            Operation::IpSetDelta {
                id: "s:nope".to_owned(),
                added: vec![IpSetMember::Net(net("10.0.0.9/32"))],
                removed: Vec::new(),
            },
        ],
    );
    assert_eq!(index, 1);
    assert_eq!(
        violation,
        ContractViolation::DeltaOnUnknownSet {
            set: "s:nope".to_owned()
        }
    );
    assert!(message.contains("s:nope"), "{message}");
    // The first delta was undone member by member.
    let set = driver.ip_set("s:web").expect("set");
    assert!(set.contains_addr(ip("10.0.0.1")) && !set.contains_addr(ip("10.0.0.9")));
}

#[test]
fn delta_members_must_fit_and_not_conflict() {
    let mut driver = loaded();
    let (_, violation, _) = rejected(
        &mut driver,
        &[Operation::IpSetDelta {
            id: "s:web".to_owned(),
            added: vec![named_port("10.0.0.1", 6, 80)],
            removed: Vec::new(),
        }],
    );
    assert!(
        matches!(violation, ContractViolation::MemberKindMismatch { ref set, kind: IpSetKind::Net, .. } if set == "s:web")
    );
    let (_, violation, _) = rejected(
        &mut driver,
        &[net_set("s:mixed", &[]), np_set("np:bad", &[]), {
            Operation::IpSetUpdate {
                id: "s:mixed".to_owned(),
                kind: IpSetKind::Net,
                members: vec![named_port("10.0.0.1", 6, 80)],
            }
        }],
    );
    assert!(matches!(
        violation,
        ContractViolation::MemberKindMismatch { .. }
    ));
    let member = IpSetMember::Net(net("10.0.0.5/32"));
    let (_, violation, _) = rejected(
        &mut driver,
        &[Operation::IpSetDelta {
            id: "s:web".to_owned(),
            added: vec![member],
            removed: vec![member],
        }],
    );
    assert_eq!(
        violation,
        ContractViolation::AddedAndRemoved {
            set: "s:web".to_owned(),
            member
        }
    );
    // Adding a present member and removing an absent one are no-ops.
    driver
        .apply(&[Operation::IpSetDelta {
            id: "s:web".to_owned(),
            added: vec![IpSetMember::Net(net("10.0.0.1/32"))],
            removed: vec![IpSetMember::Net(net("10.9.9.9/32"))],
        }])
        .expect("idempotent delta");
    assert_eq!(driver.ip_set("s:web").expect("set").members.len(), 2);
}

#[test]
fn removing_what_is_still_used_is_rejected() {
    let mut driver = loaded();
    let p = pid("default", "prod/allow-web");
    let (_, violation, message) =
        rejected(&mut driver, &[Operation::PolicyRemove { id: p.clone() }]);
    assert_eq!(
        violation,
        ContractViolation::PolicyStillReferenced {
            policy: p.clone(),
            endpoint: "workload endpoint prod/web-0".to_owned()
        }
    );
    assert!(message.contains("default/prod/allow-web"), "{message}");

    // Removing web-0 is not enough: the host endpoint names it too.
    let (index, violation, _) = rejected(
        &mut driver,
        &[
            Operation::WorkloadEndpointRemove {
                id: eid("prod", "web-0"),
            },
            Operation::PolicyRemove { id: p.clone() },
        ],
    );
    assert_eq!(index, 1);
    assert_eq!(
        violation,
        ContractViolation::PolicyStillReferenced {
            policy: p.clone(),
            endpoint: "host endpoint \"node1-eth0\"".to_owned()
        }
    );

    let (_, violation, _) = rejected(
        &mut driver,
        &[Operation::ProfileRemove {
            id: "kns.prod".to_owned(),
        }],
    );
    assert!(
        matches!(violation, ContractViolation::ProfileStillReferenced { ref profile, .. } if profile == "kns.prod")
    );

    let (_, violation, message) = rejected(
        &mut driver,
        &[Operation::IpSetRemove {
            id: "np:http".to_owned(),
        }],
    );
    assert_eq!(
        violation,
        ContractViolation::SetStillReferenced {
            set: "np:http".to_owned(),
            user: "policy default/prod/allow-web rule \"default/allow-web/inbound/0\"".to_owned()
        }
    );
    assert!(message.contains("np:http"), "{message}");

    // An endpoint update that stops naming the policy frees it within the
    // same batch; then the policy, then its sets, may go.
    let mut web0 = driver
        .workload_endpoint(&eid("prod", "web-0"))
        .expect("ep")
        .clone();
    web0.tiers.clear();
    let mut host = driver.host_endpoint("node1-eth0").expect("hep").clone();
    host.tiers.clear();
    driver
        .apply(&[
            Operation::WorkloadEndpointUpdate(web0),
            Operation::HostEndpointUpdate(host),
            Operation::PolicyRemove { id: p },
            Operation::IpSetRemove {
                id: "np:http".to_owned(),
            },
        ])
        .expect("users first, then what they use");
}

#[test]
fn removing_what_does_not_exist_is_rejected() {
    let mut driver = loaded();
    let cases = [
        (Operation::IpSetRemove { id: "x".to_owned() }, "IP set"),
        (Operation::PolicyRemove { id: pid("t", "x") }, "policy"),
        (Operation::ProfileRemove { id: "x".to_owned() }, "profile"),
        (
            Operation::WorkloadEndpointRemove { id: eid("ns", "x") },
            "workload endpoint",
        ),
        (
            Operation::HostEndpointRemove { id: "x".to_owned() },
            "host endpoint",
        ),
        (
            Operation::ServiceRemove {
                namespace: "ns".to_owned(),
                name: "x".to_owned(),
            },
            "service",
        ),
    ];
    for (op, what) in cases {
        let (_, violation, _) = rejected(&mut driver, &[op]);
        assert!(
            matches!(violation, ContractViolation::RemoveUnknown { what: w, .. } if w == what),
            "{violation}"
        );
    }
}

#[test]
fn endpoint_tiers_are_checked() {
    let mut driver = loaded();
    let p = pid("default", "prod/allow-web");
    let (_, violation, _) = rejected(
        &mut driver,
        &[Operation::WorkloadEndpointUpdate(wep(
            "prod",
            "x",
            &[],
            vec![tier(
                "security",
                Action::Deny,
                std::slice::from_ref(&p),
                &[],
            )],
            &[],
        ))],
    );
    assert_eq!(
        violation,
        ContractViolation::PolicyInWrongTier {
            policy: p.clone(),
            tier: "security".to_owned(),
            endpoint: "workload endpoint prod/x".to_owned()
        }
    );
    let (_, violation, _) = rejected(
        &mut driver,
        &[Operation::WorkloadEndpointUpdate(wep(
            "prod",
            "x",
            &[],
            vec![tier("default", Action::Allow, &[p], &[])],
            &[],
        ))],
    );
    assert!(matches!(
        violation,
        ContractViolation::BadDefaultAction {
            action: Action::Allow,
            ..
        }
    ));
}

#[test]
fn malformed_rules_are_rejected() {
    let mut driver = NullDriver::new();
    let mut no_protocol = rule("r/ports", Action::Allow);
    no_protocol.dst.ports = ports(&[(80, 80)]);
    let mut inverted = rule("r/inverted", Action::Allow);
    inverted.protocol = Some(6);
    inverted.src.not_ports = ports(&[(90, 80)]);
    let mut version = rule("r/version", Action::Allow);
    version.ip_version = Some(5);
    let mut icmp = rule("r/icmp", Action::Allow);
    icmp.protocol = Some(6);
    icmp.icmp = Some(crate::ops::Icmp {
        icmp_type: 8,
        code: None,
    });
    for (bad, reason) in [
        (no_protocol, "numeric ports need protocol"),
        (inverted, "inverted"),
        (version, "ip_version is 5"),
        (icmp, "ICMP matches need protocol"),
    ] {
        let id = bad.id.clone();
        let (_, violation, message) = rejected(
            &mut driver,
            &[policy_update(pid("t", "p"), vec![bad], Vec::new())],
        );
        assert!(
            matches!(violation, ContractViolation::InvalidRule { ref rule, .. } if *rule == id),
            "{violation}"
        );
        assert!(message.contains(reason), "{message}");
    }
}

#[test]
fn in_sync_is_recorded_and_rolled_back() {
    let mut driver = NullDriver::new();
    assert!(!driver.in_sync());
    let (_, _, _) = rejected(
        &mut driver,
        &[
            Operation::InSync,
            Operation::PolicyRemove { id: pid("t", "p") },
        ],
    );
    assert!(!driver.in_sync());
    driver.apply(&[Operation::InSync]).expect("in sync");
    assert!(driver.in_sync());
}

#[test]
fn a_restarted_driver_removes_what_was_not_sent_again() {
    let state = loaded().into_state();
    let mut driver = NullDriver::from_state(state.clone()).expect("valid state");
    assert!(!driver.in_sync());
    assert_eq!(driver.stale_count(), 9 - 1, "every item but InSync");
    assert_eq!(driver.batches_applied(), 0);

    // Felix sends back web-1 with its profile only; everything else goes.
    let mut batch = vec![
        allow_all_profile("kns.prod"),
        Operation::WorkloadEndpointUpdate(wep(
            "prod",
            "web-1",
            &["10.0.0.2/32"],
            Vec::new(),
            &["kns.prod"],
        )),
    ];
    driver.apply(&batch).expect("resend");
    assert_eq!(driver.stale_count(), 6);
    batch = vec![Operation::InSync];
    driver.apply(&batch).expect("sweep");
    assert!(driver.in_sync());
    assert_eq!(driver.stale_count(), 0);
    assert_eq!(driver.workload_endpoint_count(), 1);
    assert_eq!(driver.profile_count(), 1);
    assert_eq!(
        driver.policy_count()
            + driver.ip_set_count()
            + driver.host_endpoint_count()
            + driver.service_count(),
        0
    );
    driver.state().check().expect("consistent");
}

#[test]
fn a_sweep_that_would_break_a_reference_is_rejected() {
    let state = loaded().into_state();
    let mut driver = NullDriver::from_state(state).expect("valid state");
    // web-0 comes back naming the policy, but the policy is never re-sent.
    let web0 = driver
        .workload_endpoint(&eid("prod", "web-0"))
        .expect("ep")
        .clone();
    driver
        .apply(&[
            allow_all_profile("kns.prod"),
            Operation::WorkloadEndpointUpdate(web0),
        ])
        .expect("resend");
    let (_, violation, message) = rejected(&mut driver, &[Operation::InSync]);
    assert_eq!(
        violation,
        ContractViolation::StaleStillReferenced {
            what: "policy",
            id: "default/prod/allow-web".to_owned(),
            user: "workload endpoint prod/web-0".to_owned()
        }
    );
    assert!(message.contains("not sent again"), "{message}");
    assert!(!driver.in_sync());
    // The refusal made everything stale again: the caller resyncs. Re-sending
    // the policy (whose sets are still there, stale) is not enough: its sets
    // must be re-sent too.
    let policy = Operation::PolicyUpdate {
        id: pid("default", "prod/allow-web"),
        policy: driver
            .policy(&pid("default", "prod/allow-web"))
            .expect("p")
            .clone(),
    };
    let web0 = Operation::WorkloadEndpointUpdate(
        driver
            .workload_endpoint(&eid("prod", "web-0"))
            .expect("ep")
            .clone(),
    );
    let resend = [allow_all_profile("kns.prod"), policy, web0];
    driver.apply(&resend).expect("resend");
    let (_, violation, _) = rejected(&mut driver, &[Operation::InSync]);
    assert!(matches!(
        violation,
        ContractViolation::StaleStillReferenced { what: "IP set", .. }
    ));
    let mut whole = vec![net_set("s:web", &["10.0.0.1/32"]), np_set("np:http", &[])];
    whole.extend(resend);
    whole.push(Operation::InSync);
    driver.apply(&whole).expect("everything used was re-sent");
    assert!(driver.in_sync());
    assert_eq!(driver.stale_count(), 0);
    assert_eq!(driver.workload_endpoint_count(), 1);
    assert_eq!(driver.host_endpoint_count(), 0);
}

#[test]
fn the_state_round_trips_through_json_and_operations() {
    let driver = loaded();
    let state = driver.state();
    let json = serde_json::to_string(state).expect("encode");
    let back: DesiredState = serde_json::from_str(&json).expect("decode");
    assert_eq!(&back, state);

    let mut rebuilt = NullDriver::new();
    rebuilt
        .apply(&state.operations())
        .expect("operations() is in contract order");
    assert_eq!(rebuilt.state(), state);

    // A duplicate key is an error, not a silent overwrite.
    let mut value: serde_json::Value = serde_json::from_str(&json).expect("value");
    let sets = value["ip_sets"].as_array_mut().expect("entries");
    let first = sets[0].clone();
    sets.push(first);
    let error = serde_json::from_value::<DesiredState>(value).expect_err("duplicate");
    assert!(error.to_string().contains("duplicate key"), "{error}");
}

#[test]
fn check_and_from_state_reject_inconsistent_states() {
    let mut state = loaded().into_state();
    state.policies.clear();
    assert!(matches!(
        state.check(),
        Err(ContractViolation::UnknownIpSet { .. }) | Err(ContractViolation::UnknownPolicy { .. })
    ));
    assert!(NullDriver::from_state(state).is_err());

    let mut state = loaded().into_state();
    let ep = state
        .workload_endpoints
        .remove(&eid("prod", "web-1"))
        .expect("ep");
    state
        .workload_endpoints
        .insert(eid("prod", "elsewhere"), ep);
    assert!(matches!(
        state.check(),
        Err(ContractViolation::KeyMismatch {
            what: "workload endpoint",
            ..
        })
    ));
}

#[test]
fn boxed_drivers_are_drivers() {
    let mut driver: Box<dyn Driver> = Box::new(NullDriver::new());
    assert_eq!(driver.name(), "null");
    driver
        .apply(&sample_batch())
        .expect("apply through the box");
}

/// Operations over a small universe of ids, mostly valid: sets `a` and `b`
/// are usually `Net` sets and `n` a `NamedPort` set, and rules usually use
/// them that way.
fn arb_op() -> impl Strategy<Value = Operation> {
    fn kind_of(id: &str, flip: bool) -> IpSetKind {
        match (id == "n") != flip {
            true => IpSetKind::NamedPort,
            false => IpSetKind::Net,
        }
    }
    fn member(kind: IpSetKind, i: u8) -> IpSetMember {
        match kind {
            IpSetKind::Net => IpSetMember::Net(net(&format!("10.0.0.{i}/32"))),
            IpSetKind::NamedPort => named_port(&format!("10.0.0.{i}"), 6, 80),
        }
    }
    let set = prop::sample::select(vec!["a", "b", "n"]);
    let flip = prop::bool::weighted(0.1);
    let indices = prop::collection::vec(0u8..4, 0..3);
    let policy = prop::sample::select(vec!["p", "q"]);
    let refs = prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "n"]),
            prop::bool::weighted(0.1),
        ),
        0..3,
    );
    let endpoint = prop::sample::select(vec!["e1", "e2"]);
    prop_oneof![
        4 => (set.clone(), flip, indices.clone()).prop_map(|(id, flip, members)| {
            let kind = kind_of(id, flip);
            Operation::IpSetUpdate {
                id: id.to_owned(),
                kind,
                members: members.into_iter().map(|i| member(kind, i)).collect(),
            }
        }),
        3 => (set.clone(), flip, indices.clone(), indices).prop_map(|(id, flip, added, removed)| {
            let kind = kind_of(id, flip);
            Operation::IpSetDelta {
                id: id.to_owned(),
                added: added.into_iter().map(|i| member(kind, i)).collect(),
                removed: removed.into_iter().map(|i| member(kind, (i + 2) % 6)).collect(),
            }
        }),
        1 => set.prop_map(|id| Operation::IpSetRemove { id: id.to_owned() }),
        3 => (policy.clone(), refs.clone()).prop_map(|(name, refs)| {
            let mut r = rule(&format!("t/{name}/inbound/0"), Action::Allow);
            r.protocol = Some(6);
            for (set, flip) in refs {
                match kind_of(set, flip) {
                    IpSetKind::NamedPort => r.dst.named_port_sets.push(set.to_owned()),
                    IpSetKind::Net => r.src.ip_sets.push(set.to_owned()),
                }
            }
            policy_update(pid("t", name), vec![r], Vec::new())
        }),
        1 => policy.clone().prop_map(|name| Operation::PolicyRemove { id: pid("t", name) }),
        2 => refs.prop_map(|refs| {
            let mut r = rule("prof/inbound/0", Action::Allow);
            r.src.not_ip_sets = refs.into_iter().map(|(s, _)| s.to_owned()).filter(|s| s != "n").collect();
            profile_update("prof", vec![r], Vec::new())
        }),
        1 => Just(Operation::ProfileRemove {
            id: "prof".to_owned()
        }),
        3 => (endpoint.clone(), prop::collection::vec(policy, 0..3), any::<bool>()).prop_map(|(name, policies, profile)| {
            let policies: Vec<PolicyId> = policies.into_iter().map(|p| pid("t", p)).collect();
            let profiles: &[&str] = if profile { &["prof"] } else { &[] };
            Operation::WorkloadEndpointUpdate(wep("ns", name, &["10.0.0.1/32"], vec![tier("t", Action::Deny, &policies, &[])], profiles))
        }),
        1 => endpoint.prop_map(|name| Operation::WorkloadEndpointRemove { id: eid("ns", name) }),
        1 => Just(Operation::InSync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A rejected batch records nothing of itself (and a resync with the
    /// whole state brings the driver back); an accepted one leaves a state that
    /// the slow full check accepts; and the incremental reference counts,
    /// through every commit and rollback, judge the next batch exactly as a
    /// driver rebuilt from scratch does.
    #[test]
    fn batches_are_atomic_and_bookkeeping_is_exact(
        batches in prop::collection::vec(prop::collection::vec(arb_op(), 1..4), 1..40)
    ) {
        let mut driver = NullDriver::new();
        for batch in &batches {
            let before = driver.state().clone();
            let mut fresh = NullDriver::new();
            fresh.apply(&before.operations()).expect("a consistent state rebuilds");
            let result = driver.apply(batch);
            let fresh_result = fresh.apply(batch);
            match (&result, &fresh_result) {
                (Err(DriverError::Contract { index: a, violation: va, .. }), Err(DriverError::Contract { index: b, violation: vb, .. })) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(va, vb);
                    let mut unchanged = before.clone();
                    unchanged.in_sync = false;
                    prop_assert_eq!(driver.state(), &unchanged);
                    // Out of sync: the caller resyncs with the whole state,
                    // which sweeps nothing and brings it back in sync.
                    let mut whole = before.operations();
                    whole.retain(|op| !matches!(op, Operation::InSync));
                    whole.push(Operation::InSync);
                    driver.apply(&whole).expect("the resync is accepted");
                    prop_assert_eq!(driver.stale_count(), 0);
                    unchanged.in_sync = true;
                    prop_assert_eq!(driver.state(), &unchanged);
                }
                (Ok(()), Ok(())) => {
                    prop_assert!(driver.state().check().is_ok(), "{:?}", driver.state().check());
                    prop_assert_eq!(driver.state(), fresh.state());
                }
                _ => prop_assert!(false, "incremental {:?} vs fresh {:?}", result, fresh_result),
            }
        }
    }
}

#[test]
fn node_addresses_are_replaced_restored_on_refusal_and_swept_when_not_sent_again() {
    let a: IpAddr = "192.168.0.2".parse().unwrap();
    let b: IpAddr = "fd00::2".parse().unwrap();
    let nodes = |addresses: &[IpAddr]| Operation::NodeAddresses {
        addresses: addresses.to_vec(),
        local: Vec::new(),
        pools: Vec::new(),
    };
    let mut driver = NullDriver::new();
    driver.apply(&[nodes(&[a, b])]).expect("apply");
    assert_eq!(driver.state().node_addresses, [a, b].into_iter().collect());
    driver.apply(&[nodes(&[b])]).expect("apply");
    assert_eq!(driver.state().node_addresses, [b].into_iter().collect());
    // A refused batch leaves them as they were.
    rejected(
        &mut driver,
        &[nodes(&[a]), Operation::IpSetRemove { id: "nope".into() }],
    );
    assert_eq!(driver.state().node_addresses, [b].into_iter().collect());
    // The resync sends them again; the desired state sends them before
    // InSync.
    driver
        .apply(&[nodes(&[b]), Operation::InSync])
        .expect("resync");
    let ops = driver.state().operations();
    assert_eq!(ops[ops.len() - 2..], [nodes(&[b]), Operation::InSync]);

    // After a restart they stay until InSync, which removes them unless
    // they were sent again.
    let mut restarted = NullDriver::from_state(driver.state().clone()).expect("valid");
    assert_eq!(restarted.state().node_addresses, [b].into_iter().collect());
    restarted.apply(&[Operation::InSync]).expect("in sync");
    assert!(restarted.state().node_addresses.is_empty(), "swept");
    let mut restarted = NullDriver::from_state(driver.into_state()).expect("valid");
    restarted
        .apply(&[nodes(&[a]), Operation::InSync])
        .expect("in sync");
    assert_eq!(restarted.state().node_addresses, [a].into_iter().collect());
}

#[test]
fn this_nodes_addresses_are_replaced_restored_on_refusal_resent_and_swept() {
    let own: IpAddr = "192.168.0.1".parse().unwrap();
    let other: IpAddr = "192.168.0.2".parse().unwrap();
    let nodes = |addresses: &[IpAddr], local: &[IpAddr]| Operation::NodeAddresses {
        addresses: addresses.to_vec(),
        local: local.to_vec(),
        pools: Vec::new(),
    };
    let mut driver = NullDriver::new();
    driver.apply(&[nodes(&[other], &[own])]).expect("apply");
    assert_eq!(driver.state().local_addresses, [own].into_iter().collect());
    assert_eq!(driver.state().node_addresses, [other].into_iter().collect());
    // A refused batch leaves them as they were.
    rejected(
        &mut driver,
        &[
            nodes(&[], &[]),
            Operation::IpSetRemove { id: "nope".into() },
        ],
    );
    assert_eq!(driver.state().local_addresses, [own].into_iter().collect());
    // With no other node, this node's addresses alone are still sent.
    driver.apply(&[nodes(&[], &[own])]).expect("apply");
    assert_eq!(driver.state().operations(), [nodes(&[], &[own])]);
    // After a restart they stay until InSync, which removes them unless
    // they were sent again.
    let mut restarted = NullDriver::from_state(driver.state().clone()).expect("valid");
    restarted.apply(&[Operation::InSync]).expect("in sync");
    assert!(restarted.state().local_addresses.is_empty(), "swept");
    let mut restarted = NullDriver::from_state(driver.into_state()).expect("valid");
    restarted
        .apply(&[nodes(&[], &[own]), Operation::InSync])
        .expect("in sync");
    assert_eq!(
        restarted.state().local_addresses,
        [own].into_iter().collect()
    );
}

#[test]
fn ip_pools_are_replaced_restored_on_refusal_resent_and_swept() {
    let pool: ipnet::IpNet = "10.65.0.0/16".parse().unwrap();
    let pool6: ipnet::IpNet = "fd00:65::/64".parse().unwrap();
    let nodes = |pools: &[ipnet::IpNet]| Operation::NodeAddresses {
        addresses: Vec::new(),
        local: Vec::new(),
        pools: pools.to_vec(),
    };
    let mut driver = NullDriver::new();
    driver.apply(&[nodes(&[pool, pool6])]).expect("apply");
    assert_eq!(driver.state().pools, [pool, pool6].into_iter().collect());
    // A refused batch leaves them as they were.
    rejected(
        &mut driver,
        &[nodes(&[]), Operation::IpSetRemove { id: "nope".into() }],
    );
    assert_eq!(driver.state().pools, [pool, pool6].into_iter().collect());
    // With no node address, the pools alone are still sent.
    driver.apply(&[nodes(&[pool])]).expect("apply");
    assert_eq!(driver.state().operations(), [nodes(&[pool])]);
    // After a restart they stay until InSync, which removes them unless
    // they were sent again.
    let mut restarted = NullDriver::from_state(driver.state().clone()).expect("valid");
    restarted.apply(&[Operation::InSync]).expect("in sync");
    assert!(restarted.state().pools.is_empty(), "swept");
    let mut restarted = NullDriver::from_state(driver.into_state()).expect("valid");
    restarted
        .apply(&[nodes(&[pool6]), Operation::InSync])
        .expect("in sync");
    assert_eq!(restarted.state().pools, [pool6].into_iter().collect());
}
