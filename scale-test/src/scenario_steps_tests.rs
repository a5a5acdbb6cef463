use crate::scenario::tests::assert_all_refused;
use crate::scenario::{Outcome, Scenario};

use super::*;

const STEPS: &str = r#"
name: s
pods:
  - {name: prod/c}
  - {name: prod/a, labels: {app: a}, tcp: [8080], udp: [5353]}
  - {name: prod/b, labels: {app: b}, tcp: [8080], udp: [5353]}
services:
  - {name: prod/web, cluster_ip: 10.96.0.1, selector: {app: a},
     ports: [{protocol: tcp, port: 80, target_port: 8080}, {protocol: udp, port: 53, target_port: 5353}]}
steps:
  - open: {name: t, from: prod/c, to: service/prod/web, protocol: tcp, port: 80, backend: prod/a}
  - open: {name: u, from: prod/c, to: service/prod/web, protocol: udp, port: 53}
  - endpoints: {service: prod/web, pods: [prod/b]}
  - check: {name: t, bpf: reset, iptables: open, backend: prod/a, within_ms: 500}
  - check: {name: u, expect: open, backend: prod/b}
  - probe: {from: prod/c, to: service/prod/web, protocol: tcp, port: 80, expect: allow,
            backends: [prod/b]}
"#;

#[test]
fn steps_parse_in_order_with_their_expectations_per_dataplane() {
    let sc = Scenario::parse(STEPS).unwrap();
    assert_eq!(sc.steps.len(), 6);
    assert!(sc.probes.is_empty() && sc.matrices.is_empty());
    let Step::Check(t) = &sc.steps[3] else {
        panic!("{:?}", sc.steps[3])
    };
    assert_eq!(t.expected(Dataplane::Bpf), Some(Held::Reset));
    assert_eq!(t.expected(Dataplane::Iptables), Some(Held::Open));
    assert_eq!(t.within_ms, 500);
    let Step::Check(u) = &sc.steps[4] else {
        panic!("{:?}", sc.steps[4])
    };
    assert_eq!(u.expected(Dataplane::Bpf), Some(Held::Open));
    assert_eq!(u.within_ms, 2000);
    let Step::Endpoints(e) = &sc.steps[2] else {
        panic!("{:?}", sc.steps[2])
    };
    assert_eq!(e.pods, ["prod/b"]);
}

#[test]
fn bad_steps_are_rejected_with_a_reason() {
    let cases = [
        (
            STEPS.replace(
                "- endpoints: {service: prod/web,",
                "- endpoint: {service: prod/web,",
            ),
            "unknown variant `endpoint`",
        ),
        (
            STEPS.replace("{service: prod/web, pods", "{service: prod/api, pods"),
            "steps[2].endpoints: unknown service prod/api",
        ),
        (
            STEPS.replace("pods: [prod/b]}", "pods: [prod/x]}"),
            "steps[2].endpoints: prod/x is not a pod of the scenario",
        ),
        (
            STEPS.replace("{name: u, expect: open", "{name: v, expect: open"),
            "steps[4].check: no earlier open step is named \"v\"",
        ),
        (
            STEPS.replace("{name: u, expect: open", "{name: u, expect: reset"),
            "steps[4].check: u is UDP: reset is for TCP",
        ),
        (
            STEPS.replace("bpf: reset, iptables: open,", "bpf: reset,"),
            "steps[3].check: needs expect, or both bpf and iptables",
        ),
        (
            STEPS.replace(
                "{name: u, expect: open,",
                "{name: u, expect: open, bpf: open,",
            ),
            "steps[4].check: expect, or bpf and iptables, not both",
        ),
        (
            STEPS.replace("within_ms: 500", "within_ms: 0"),
            "within_ms is 1..=60000",
        ),
        (
            STEPS.replace("{name: u, from: prod/c", "{name: t, from: prod/c"),
            "steps[1].open: t is opened twice",
        ),
        (
            STEPS.replace("protocol: udp, port: 53}", "protocol: icmp, port: 53}"),
            "steps[1].open: protocol must be tcp or udp",
        ),
        (
            STEPS.replace(
                "to: service/prod/web, protocol: udp",
                "to: service/prod/db, protocol: udp",
            ),
            "steps[1].open: unknown service prod/db",
        ),
        (
            STEPS.replace("backends: [prod/b]}", "backends: [prod/z]}"),
            "steps[5].probe: backend prod/z is not a pod of the scenario",
        ),
        (
            STEPS.replace(
                "port: 80, backend: prod/a}",
                "port: 80, backend: prod/a, hold: 1}",
            ),
            "unknown field `hold`",
        ),
    ];
    assert_all_refused(cases);
}

#[test]
fn step_results_render_and_count() {
    let o = Outcome {
        name: "s".into(),
        results: Vec::new(),
        steps: vec![
            StepRow {
                what: "open t: prod/c -> service/prod/web Tcp 80".into(),
                ok: true,
                note: "answered by prod/a".into(),
            },
            StepRow {
                what: "check t: reset, within 500 ms".into(),
                ok: false,
                note: "answered by prod/a until 500 ms had passed".into(),
            },
        ],
    };
    assert!(!o.matches());
    let text = o.render();
    assert!(text.contains("  open t: prod/c -> service/prod/web Tcp 80: answered by prod/a"));
    assert!(text.contains("! check t: reset, within 500 ms: answered by prod/a"));
    assert!(text.contains("1 of 2 results as expected"));
}
