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
    let mut t = Tracker::new(10);
    t.started(key, &start);

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
    let mut t = Tracker::new(10);
    t.started(k1, &s1);
    t.started(k2, &s2);
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
    let mut t = Tracker::new(2);
    for port in 1..=4 {
        let (k, s) = r.observe(&event(true, abi::MANUL_HOOK_EGRESS, port), &labels, 1, None);
        t.started(k, &s);
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
