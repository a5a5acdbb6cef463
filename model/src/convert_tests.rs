use super::*;
use crate::load;

fn one(yaml: &str) -> Resource {
    let mut out = load("test.yaml", yaml.as_bytes()).into_result().unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0).resource
}

fn k8s(spec: &str) -> Resource {
    one(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: ns\nspec:\n{spec}"
    ))
}

fn v3(spec: &str) -> Resource {
    one(&format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: knp.default.np\n  namespace: ns\nspec:\n  order: 1000\n{spec}"
    ))
}

/// (Kubernetes spec, expected v3 spec) pairs.
const CASES: &[(&str, &str)] = &[
    // An empty pod selector selects every pod; no rules: ingress default deny.
    (
        "  podSelector: {}\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n",
    ),
    // `ingress: []` is the same as absent: deny all ingress.
    (
        "  podSelector: {}\n  ingress: []\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n",
    ),
    // `ingress: [{}]` allows everything.
    (
        "  podSelector: {}\n  ingress: [{}]\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n",
    ),
    // `from: []` is the same as no `from`: every source, on the listed ports.
    (
        "  podSelector: {}\n  ingress:\n  - from: []\n    ports:\n    - port: 80\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [80]\n",
    ),
    // Egress rules add the Egress type; an empty egress list does not.
    (
        "  podSelector: {}\n  egress:\n  - {}\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress, Egress]\n  egress:\n  - action: Allow\n",
    ),
    (
        "  podSelector: {}\n  egress: []\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n",
    ),
    // Explicit policyTypes: egress only, egress default deny.
    (
        "  podSelector: {}\n  policyTypes: [Egress]\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Egress]\n",
    ),
    // A pod and a namespace selector in one peer are ANDed; separate peers are ORed.
    (
        "  podSelector:\n    matchLabels: {role: db}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {team: web}\n      podSelector:\n        matchLabels: {role: frontend}\n    - podSelector:\n        matchExpressions:\n        - {key: tier, operator: In, values: [b, a]}\n        - {key: legacy, operator: DoesNotExist}\n    - namespaceSelector: {}\n",
        "  selector: projectcalico.org/orchestrator == 'k8s' && role == 'db'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    source:\n      selector: projectcalico.org/orchestrator == 'k8s' && role == 'frontend'\n      namespaceSelector: team == 'web'\n  - action: Allow\n    source:\n      selector: projectcalico.org/orchestrator == 'k8s' && tier in {'a', 'b'} && !has(legacy)\n  - action: Allow\n    source:\n      selector: projectcalico.org/orchestrator == 'k8s'\n      namespaceSelector: all()\n",
    ),
    // ipBlock with except; ports grouped per protocol; named ports; endPort ranges;
    // a port entry without a port allows the whole protocol.
    (
        "  podSelector: {}\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [10.1.0.0/16, 10.2.0.0/16]\n    ports:\n    - port: 443\n    - protocol: UDP\n      port: 53\n    - port: http\n    - protocol: TCP\n      port: 8000\n      endPort: 8100\n    - protocol: SCTP\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress, Egress]\n  egress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      nets: [10.0.0.0/8]\n      notNets: [10.1.0.0/16, 10.2.0.0/16]\n      ports: [443, http, '8000:8100']\n  - action: Allow\n    protocol: UDP\n    destination:\n      nets: [10.0.0.0/8]\n      notNets: [10.1.0.0/16, 10.2.0.0/16]\n      ports: [53]\n  - action: Allow\n    protocol: SCTP\n    destination:\n      nets: [10.0.0.0/8]\n      notNets: [10.1.0.0/16, 10.2.0.0/16]\n",
    ),
    // Once any entry of a protocol has no port, that protocol is wide open.
    (
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - protocol: TCP\n    - port: 81\n",
        "  selector: projectcalico.org/orchestrator == 'k8s'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: TCP\n",
    ),
];

#[test]
fn kubernetes_policies_convert_with_calico_semantics() {
    for (i, (input, expected)) in CASES.iter().enumerate() {
        let got = to_v3(&k8s(input)).unwrap().unwrap();
        let want = v3(expected);
        assert_eq!(
            got,
            want,
            "case {i}:\n{}\nwant:\n{}",
            serde_yaml_ng::to_string(&got).unwrap(),
            serde_yaml_ng::to_string(&want).unwrap()
        );
        // The converted policy is itself valid.
        assert_eq!(crate::validate::validate(&got), vec![], "case {i}");
    }
}

#[test]
fn namespace_becomes_a_profile_with_prefixed_labels() {
    let ns =
        one("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels:\n    team: web\n");
    let Some(Ok(Resource::Profile(p))) = to_v3(&ns) else {
        panic!()
    };
    assert_eq!(p.name(), "kns.prod");
    let labels: Vec<_> = p.spec.labels_to_apply.iter().collect();
    assert_eq!(
        labels,
        [
            (
                &"pcns.projectcalico.org/name".to_string(),
                &"prod".to_string()
            ),
            (&"pcns.team".to_string(), &"web".to_string()),
        ]
    );
    assert_eq!(p.spec.ingress, vec![Rule::action(Action::Allow)]);
    assert_eq!(p.spec.egress, vec![Rule::action(Action::Allow)]);
}

#[test]
fn other_kinds_have_no_conversion() {
    let tier = one("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n");
    assert!(to_v3(&tier).is_none());
}
