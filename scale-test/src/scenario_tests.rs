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
    let c = &checks[0];
    assert_eq!(
        (c.from.as_str(), c.to.as_str(), c.protocol, c.port, c.expect),
        ("prod/a", "prod/b", Protocol::Udp, 53, Verdict::Deny)
    );
    assert_eq!((c.repeat, c.reach, c.source), (1, Reach::Any, None));
}

/// Asserts that each case's scenario text is refused with an error
/// containing its reason.
pub(crate) fn assert_all_refused(cases: impl IntoIterator<Item = (String, &'static str)>) {
    for (text, want) in cases {
        let err = format!("{:#}", Scenario::parse(&text).unwrap_err());
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
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
    assert_all_refused(cases);
}

fn row(from: &str, to: &str, expected: Verdict, actual: Verdict, note: &str) -> ResultRow {
    ResultRow {
        from: from.into(),
        to: to.into(),
        protocol: Protocol::Tcp,
        port: 80,
        expected,
        actual,
        ok: expected == actual && note.is_empty(),
        note: note.into(),
    }
}

#[test]
fn outcomes_render_matrices_and_mark_mismatches() {
    let o = Outcome {
        name: "t".into(),
        results: vec![
            row("prod/a", "prod/b", Verdict::Allow, Verdict::Allow, ""),
            row("prod/b", "prod/a", Verdict::Deny, Verdict::Allow, ""),
            row(
                "external/x",
                "nodeport/0/prod/web",
                Verdict::Allow,
                Verdict::Allow,
                "the backend saw 192.168.220.11, not the client's 192.168.220.200",
            ),
        ],
        steps: Vec::new(),
    };
    assert!(!o.matches());
    let text = o.render();
    assert!(text.contains("allow/allow"));
    assert!(text.contains("deny/allow !"));
    assert!(text.contains("! external/x -> nodeport/0/prod/web Tcp 80: the backend saw"));
    assert!(text.contains("1 of 3 results as expected"));
}

const SVC: &str = r#"
name: s
externals: [out]
pods:
  - {name: prod/a, labels: {app: a}, tcp: [8080]}
  - {name: prod/b, labels: {app: b}}
services:
  - {name: prod/web, cluster_ip: 10.96.0.1, type: NodePort, selector: {app: a},
     ports: [{protocol: tcp, port: 80, target_port: 8080, node_port: 30080}]}
  - {name: prod/head, selector: {app: a}, ports: [{protocol: tcp, port: 80}]}
probes:
  - {from: prod/b, to: service/prod/web, protocol: tcp, port: 80, expect: allow,
     source: client, backends: [prod/a]}
  - {from: external/out, to: nodeport/1/prod/web, protocol: tcp, port: 30080, expect: reject}
"#;

#[test]
fn service_probes_parse_into_checks() {
    let sc = Scenario::parse(SVC).unwrap();
    let checks = sc.checks();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].source, Some(Source::Client));
    assert_eq!(checks[0].backends, vec!["prod/a".to_string()]);
    assert_eq!(
        Target::parse(&checks[1].to).unwrap(),
        Target::NodePort(1, "prod/web")
    );
    assert_eq!(checks[1].expect, Verdict::Reject);
    assert_eq!(sc.services[0].ports[0].backend_port(), 8080);
    assert_eq!(sc.services[1].ports[0].backend_port(), 80);
}

#[test]
fn bad_service_scenarios_are_rejected_with_a_reason() {
    let cases = [
        (
            SVC.replace("service/prod/web", "service/prod/nope"),
            "unknown service prod/nope",
        ),
        (
            SVC.replace("service/prod/web", "service/prod/head"),
            "headless",
        ),
        (
            SVC.replace("nodeport/1/", "nodeport/2/"),
            "node 2 does not exist",
        ),
        (SVC.replace("nodeport/1/", "nodeport/x/"), "the node index"),
        (
            SVC.replace("from: external/out", "from: external/in"),
            "unknown pod or external client",
        ),
        (SVC.replace(", node_port: 30080", ""), "needs a node_port"),
        (
            SVC.replace("node_port: 30080", "node_port: 80"),
            "not in 30000-32767",
        ),
        (
            SVC.replace("type: NodePort, ", ""),
            "node_port needs type NodePort",
        ),
        (
            SVC.replace(
                "{name: prod/head,",
                "{name: prod/head, session_affinity: ClientIP,",
            ),
            "a headless service",
        ),
        (
            SVC.replace("backends: [prod/a]", "backends: [prod/z]"),
            "backend prod/z",
        ),
        (
            SVC.replace(
                "source: client, backends: [prod/a]",
                "source: client, backends: [prod/a], reach: each",
            ),
            "two or more backends",
        ),
        (
            SVC.replace("expect: allow,", "expect: deny,"),
            "TCP probes expecting allow",
        ),
        (
            SVC.replace("source: client,", "source: nobody,"),
            "not a scenario",
        ),
        (
            SVC.replace("externals: [out]", "externals: [out, out]"),
            "listed twice",
        ),
        (
            SVC.replace("{name: prod/b,", "{name: external/out,")
                .replace("from: prod/b", "from: external/out"),
            "the name of an external client",
        ),
        (
            SVC.replace("source: client,", "source: client, repeat: 0,"),
            "repeat is 1..=100",
        ),
    ];
    assert_all_refused(cases);
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
