use super::*;

const GOOD: &str = r#"
name: t
namespaces: [{name: prod, labels: {team: shop}}]
pods:
  - {name: prod/a, labels: {app: a}, tcp: [80]}
  - {name: prod/b, labels: {app: b}, tcp: [80], udp: [53]}
resources: |
  apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, namespace: prod}
  spec: {podSelector: {}, policyTypes: [Ingress]}
probes:
  - {from: prod/a, to: prod/b, protocol: udp, port: 53, expect: deny}
matrices:
  - protocol: tcp
    port: 80
    expect:
      prod/a: {prod/b: deny}
      prod/b: {prod/a: deny}
"#;

#[test]
fn a_good_scenario_parses_into_checks() {
    let sc = Scenario::parse(GOOD).unwrap();
    let checks = sc.checks();
    assert_eq!(checks.len(), 3);
    assert_eq!(
        checks[0],
        ("prod/a".into(), "prod/b".into(), Protocol::Udp, 53, false)
    );
}

#[test]
fn bad_scenarios_are_rejected_with_a_reason() {
    let cases = [
        (
            GOOD.replace("prod/b: {prod/a: deny}", "prod/b: {}"),
            "no expectation for prod/b -> prod/a",
        ),
        (
            GOOD.replace("port: 53,", "port: 54,"),
            "does not listen on Udp port 54",
        ),
        (
            GOOD.replace("{name: prod/a,", "{name: a,"),
            "NAMESPACE/NAME",
        ),
        (
            GOOD.replace("policyTypes: [Ingress]", "policyTypes: [Sideways]"),
            "resources",
        ),
        (
            GOOD.replace("expect: deny}", "expect: maybe}"),
            "not a scenario",
        ),
        (GOOD.replace("name: t\n", "name: t\nnodes: 0\n"), "nodes"),
        (
            GOOD.replace("name: t\n", "name: t\ncolour: red\n"),
            "not a scenario",
        ),
        (
            GOOD.replace(
                "name: t\n",
                "name: t\nservices: [{name: web, selector: {}, ports: []}]\n",
            ),
            "service \"web\": the name must be NAMESPACE/NAME",
        ),
        (
            GOOD.replace(
                "name: t\n",
                "name: t\nservices: [{name: prod/web, selector: {}, ports: [{name: p, protocol: icmp, port: 1}]}]\n",
            ),
            "must be TCP or UDP",
        ),
        (
            GOOD.replace(
                "name: t\n",
                "name: t\nservices: [{name: prod/web, selector: {}, ports: [{protocol: TCP, port: 1}]}]\n",
            ),
            "unknown variant `TCP`",
        ),
    ];
    for (text, want) in cases {
        let err = format!("{:#}", Scenario::parse(&text).unwrap_err());
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

#[test]
fn outcomes_render_matrices_and_mark_mismatches() {
    let o = Outcome {
        name: "t".into(),
        results: vec![
            (
                "prod/a".into(),
                "prod/b".into(),
                Protocol::Tcp,
                80,
                true,
                true,
            ),
            (
                "prod/b".into(),
                "prod/a".into(),
                Protocol::Tcp,
                80,
                false,
                true,
            ),
        ],
    };
    assert!(!o.matches());
    let text = o.render();
    assert!(text.contains("allow/allow"));
    assert!(text.contains("deny/allow !"));
    assert!(text.contains("1 of 2 results as expected"));
}

#[test]
fn the_shipped_scenarios_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        n += 1;
    }
    assert!(n >= 5, "only {n} scenarios");
}
