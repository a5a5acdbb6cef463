use super::*;

fn event(allowed: bool, hook: u32, sport: u16) -> abi::manul_event {
    abi::manul_event {
        ifindex: 7,
        hook: hook as u8,
        verdict: if allowed {
            abi::MANUL_VERDICT_ALLOW
        } else {
            abi::MANUL_VERDICT_DENY
        } as u8,
        reason: abi::MANUL_REASON_POLICY as u8,
        kind: abi::MANUL_RULE_POLICY as u8,
        proto: 6,
        version: 4,
        src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        sport,
        dport: 80,
        ..Default::default()
    }
}

fn resolver(labels: &mut Labels) -> Resolver {
    let pid = PolicyId {
        tier: "default".into(),
        name: "ns/allow-web".into(),
    };
    let p = labels.intern("default/ns/allow-web");
    let mut r = Resolver::default();
    r.owners.insert(p, SlotOwner::Policy(pid));
    r.interfaces.insert(
        7,
        Interface::Workload(EndpointId {
            namespace: "ns".into(),
            name: "web".into(),
        }),
    );
    r
}

fn counts(p: u64) -> FlowCounts {
    FlowCounts {
        packets_forward: p,
        bytes_forward: p * 100,
        packets_reverse: p,
        bytes_reverse: p * 50,
    }
}

#[test]
fn an_event_names_its_rule_endpoint_and_side() {
    let mut labels = Labels::default();
    let r = resolver(&mut labels);
    let mut e = event(true, abi::MANUL_HOOK_EGRESS, 40000);
    e.policy = labels.intern("default/ns/allow-web");
    e.rule = labels.intern("default/ns/allow-web/inbound/0");
    let (key, obs) = r.observe(&e, &labels, 5, None);
    assert_eq!(key.ifindex, 7);
    assert_eq!(obs.phase, FlowPhase::Start);
    assert_eq!(obs.reporter, Reporter::Destination);
    assert_eq!(obs.endpoint.as_ref().map(|e| e.name.as_str()), Some("web"));
    assert_eq!(
        obs.decider.rule_id(),
        Some("default/ns/allow-web/inbound/0")
    );
    let (_, out) = r.observe(&event(false, abi::MANUL_HOOK_INGRESS, 1), &labels, 5, None);
    assert_eq!(out.reporter, Reporter::Source);
    assert_eq!(out.phase, FlowPhase::Denied);
    let mut failsafe = event(true, abi::MANUL_HOOK_INGRESS, 1);
    failsafe.reason = abi::MANUL_REASON_FAILSAFE as u8;
    assert_eq!(r.decider(&failsafe, &labels), Decider::NotAnEndpoint);
}

#[test]
fn a_followed_connection_updates_when_it_moves_and_ends_once() {
    let mut labels = Labels::default();
    let r = resolver(&mut labels);
    let (key, start) = r.observe(&event(true, abi::MANUL_HOOK_EGRESS, 1), &labels, 1, None);
    let mut t = Tracker::new(10, 0);
    t.started(key, &start, 1);

    t.begin_scan();
    let u = t.visit(&key, counts(3), false, 2).expect("moved");
    assert_eq!(
        (u.phase, u.counts, u.time_unix_ms),
        (FlowPhase::Update, counts(3), 2)
    );
    assert!(t.end_scan(2).is_empty());

    t.begin_scan();
    assert_eq!(
        t.visit(&key, counts(3), false, 3),
        None,
        "no change, no update"
    );
    assert!(t.end_scan(3).is_empty());

    t.begin_scan();
    let end = t.visit(&key, counts(4), true, 4).expect("expired");
    assert_eq!((end.phase, end.counts), (FlowPhase::End, counts(4)));
    assert!(t.end_scan(4).is_empty());
    assert!(t.is_empty());
}

#[test]
fn a_connection_missing_from_a_scan_ends_with_its_last_counters() {
    let mut labels = Labels::default();
    let r = resolver(&mut labels);
    let (k1, s1) = r.observe(&event(true, abi::MANUL_HOOK_EGRESS, 1), &labels, 1, None);
    let (k2, s2) = r.observe(&event(true, abi::MANUL_HOOK_EGRESS, 2), &labels, 1, None);
    let mut t = Tracker::new(10, 0);
    t.started(k1, &s1, 1);
    t.started(k2, &s2, 1);
    t.begin_scan();
    t.visit(&k1, counts(2), false, 2);
    t.visit(&k2, counts(5), false, 2);
    t.end_scan(2);
    t.begin_scan();
    t.visit(&k1, counts(2), false, 3);
    let ended = t.end_scan(3);
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].tuple.src_port, ended[0].counts), (2, counts(5)));
    assert_eq!(t.len(), 1);
}

#[test]
fn the_tracker_is_bounded() {
    let mut labels = Labels::default();
    let r = resolver(&mut labels);
    let mut t = Tracker::new(2, 0);
    for port in 1..=4 {
        let (k, s) = r.observe(&event(true, abi::MANUL_HOOK_EGRESS, port), &labels, 1, None);
        t.started(k, &s, 1);
    }
    assert_eq!((t.len(), t.untracked), (2, 2));
}

#[test]
fn denials_of_one_tuple_fold_into_a_burst() {
    let mut labels = Labels::default();
    let r = resolver(&mut labels);
    let obs: Vec<_> = [1, 1, 2, 1]
        .into_iter()
        .map(|port| {
            r.observe(
                &event(false, abi::MANUL_HOOK_EGRESS, port),
                &labels,
                1,
                None,
            )
        })
        .chain(std::iter::once(r.observe(
            &event(true, abi::MANUL_HOOK_EGRESS, 1),
            &labels,
            1,
            None,
        )))
        .collect();
    let folded = fold_denials(obs);
    let summary: Vec<_> = folded
        .iter()
        .map(|o| (o.phase, o.tuple.src_port, o.counts.packets_forward))
        .collect();
    assert_eq!(
        summary,
        vec![
            (FlowPhase::Denied, 1, 3),
            (FlowPhase::Denied, 2, 1),
            (FlowPhase::Start, 1, 1)
        ]
    );
}

#[test]
fn which_unfollowed_entries_are_lost_starts() {
    let mut labels = Labels::default();
    let r = resolver(&mut labels);
    let key = |port| r.observe(&event(true, abi::MANUL_HOOK_EGRESS, port), &labels, 1, None);
    // A tracker started at 100 ns, following port 1 (started at 150),
    // full at two connections once port 2 is followed, port 3 refused at
    // 300; the scan's horizon is 1,000.
    let mut t = Tracker::new(2, 100);
    let (k1, s1) = key(1);
    t.started(k1, &s1, 150);
    let (k9, _) = key(9);
    // (key, allowed, created, want)
    let before_full: Vec<(FlowKey, bool, u64, bool)> = vec![
        (k9, true, 500, true),
        (k1, true, 150, false),   // followed
        (k9, false, 500, false),  // denied
        (k9, true, 50, false),    // older than the tracker
        (k9, true, 1_000, false), // its event may still be in the ring
        (k9, true, 999, true),
    ];
    for (i, (k, allowed, created, want)) in before_full.into_iter().enumerate() {
        assert_eq!(t.lost_start(&k, allowed, created, 1_000), want, "case {i}");
    }
    let (k2, s2) = key(2);
    t.started(k2, &s2, 200);
    let (k3, s3) = key(3);
    t.started(k3, &s3, 300);
    assert_eq!(t.untracked, 1);
    // Full: nothing is recovered.
    assert!(!t.lost_start(&k9, true, 500, 1_000));
    // Room again (port 2 gone): port 3 was reported at its start, so
    // nothing created up to its refusal is recovered; later ones are.
    t.begin_scan();
    t.visit(&k1, counts(1), false, 5);
    t.end_scan(5);
    let after_refusal: Vec<(FlowKey, u64, bool)> =
        vec![(k3, 300, false), (k9, 250, false), (k9, 301, true)];
    for (i, (k, created, want)) in after_refusal.into_iter().enumerate() {
        assert_eq!(t.lost_start(&k, true, created, 1_000), want, "case {i}");
    }
}

#[test]
fn a_recovered_start_is_the_rule_of_its_entry_on_a_workload_only() {
    let mut labels = Labels::default();
    let mut r = resolver(&mut labels);
    r.interfaces.insert(8, Interface::Host);
    let policy = labels.intern("default/ns/allow-web");
    let rule = labels.intern("default/ns/allow-web/inbound/0");
    let (key, from_event) = {
        let mut e = event(true, abi::MANUL_HOOK_EGRESS, 40000);
        e.policy = policy;
        e.rule = rule;
        r.observe(&e, &labels, 5, None)
    };
    let frontend = Some((IpAddr::from([10, 96, 0, 1]), 80));
    let recovered = r
        .recovered_start(
            key,
            abi::MANUL_HOOK_EGRESS as u8,
            (policy, rule),
            &labels,
            5,
            frontend,
        )
        .expect("a workload's connection");
    assert_eq!(
        recovered,
        FlowObservation {
            service_frontend: frontend,
            ..from_event
        }
    );
    // (interface, want a start)
    let cases = [(7, true), (8, false), (99, false)];
    for (ifindex, want) in cases {
        let k = FlowKey { ifindex, ..key };
        let got = r.recovered_start(
            k,
            abi::MANUL_HOOK_INGRESS as u8,
            (policy, rule),
            &labels,
            5,
            None,
        );
        assert_eq!(got.is_some(), want, "interface {ifindex}");
    }
}
