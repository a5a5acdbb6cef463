//! Table tests of the pending view and trace: a cluster with enforced and
//! staged policies, a packet, the side judged; the pending verdict and the
//! policies passed.

use manul_model::Resource;

use super::*;
use crate::evaluator::Verdict;

const BASE: &str = r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {node: n1, interfaceName: cali1, ipNetworks: ["10.0.0.1/32"], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {node: n1, interfaceName: cali2, ipNetworks: ["10.0.0.2/32"], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-client, namespace: shop}
spec:
  order: 100
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [8080]}
"#;

fn resources(extra: &str) -> Vec<Resource> {
    let yaml = format!("{BASE}\n---\n{extra}");
    let out = manul_model::load("test", yaml.as_bytes());
    match out.into_result() {
        Ok(l) => l.into_iter().map(|l| l.resource).collect(),
        Err(errors) => panic!("fixture does not load: {errors:#?}"),
    }
}

/// `TIER KIND NS/NAME rule N ACTION`, or `... no match`, per policy passed.
fn describe(d: &Decision) -> Vec<String> {
    d.passed
        .iter()
        .map(|p| {
            let name = match &p.namespace {
                Some(ns) => format!("{ns}/{}", p.name),
                None => p.name.clone(),
            };
            let what = match (p.rule_index, p.action) {
                (Some(i), Some(a)) => format!("rule {i} {a:?}"),
                _ => "no match".to_string(),
            };
            format!("{} {} {name} {what}", p.tier, p.kind.name())
                .trim()
                .to_string()
        })
        .collect()
}

struct Case {
    name: &'static str,
    staged: &'static str,
    port: u16,
    direction: Direction,
    enforced: Verdict,
    pending: Verdict,
    passed: &'static [&'static str],
}

const STAGED_DENY: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-down, namespace: shop}
spec:
  order: 10
  selector: app == 'api'
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}]
"#;

const STAGED_DELETE: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: allow-client, namespace: shop}
spec: {stagedAction: Delete}
"#;

const STAGED_REPLACE: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: allow-client, namespace: shop}
spec:
  order: 100
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [9090]}
"#;

const STAGED_GLOBAL_EGRESS: &str = r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: no-egress}
spec:
  tier: security
  selector: app == 'client'
  egress: [{action: Deny, protocol: TCP}]
"#;

const STAGED_K8S: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const CASES: &[Case] = &[
    Case {
        name: "no staged policy: pending is enforced",
        staged: "",
        port: 8080,
        direction: Direction::Ingress,
        enforced: Verdict::Allow,
        pending: Verdict::Allow,
        passed: &["default NetworkPolicy shop/allow-client rule 0 Allow"],
    },
    Case {
        name: "a staged deny ahead of the allow",
        staged: STAGED_DENY,
        port: 8080,
        direction: Direction::Ingress,
        enforced: Verdict::Allow,
        pending: Verdict::Deny,
        passed: &["default StagedNetworkPolicy shop/lock-down rule 0 Deny"],
    },
    Case {
        name: "a staged deny another port passes over",
        staged: STAGED_DENY,
        port: 9090,
        direction: Direction::Ingress,
        enforced: Verdict::Deny,
        pending: Verdict::Deny,
        passed: &[
            "default StagedNetworkPolicy shop/lock-down no match",
            "default NetworkPolicy shop/allow-client no match",
        ],
    },
    Case {
        name: "a staged delete of the only policy leaves the profile",
        staged: STAGED_DELETE,
        port: 9090,
        direction: Direction::Ingress,
        enforced: Verdict::Deny,
        pending: Verdict::Allow,
        passed: &["Profile kns.shop rule 0 Allow"],
    },
    Case {
        name: "a staged set replaces the enforced policy of its name",
        staged: STAGED_REPLACE,
        port: 8080,
        direction: Direction::Ingress,
        enforced: Verdict::Allow,
        pending: Verdict::Deny,
        passed: &["default StagedNetworkPolicy shop/allow-client no match"],
    },
    Case {
        name: "a staged global policy in an earlier tier, on egress",
        staged: STAGED_GLOBAL_EGRESS,
        port: 8080,
        direction: Direction::Egress,
        enforced: Verdict::Allow,
        pending: Verdict::Deny,
        passed: &["security StagedGlobalNetworkPolicy no-egress rule 0 Deny"],
    },
    Case {
        name: "egress is untouched by an ingress-only staged policy",
        staged: STAGED_DENY,
        port: 8080,
        direction: Direction::Egress,
        enforced: Verdict::Allow,
        pending: Verdict::Allow,
        passed: &["Profile kns.shop rule 0 Allow"],
    },
    Case {
        name: "a staged Kubernetes default deny, after the allow",
        staged: STAGED_K8S,
        port: 9090,
        direction: Direction::Ingress,
        enforced: Verdict::Deny,
        pending: Verdict::Deny,
        passed: &[
            "default NetworkPolicy shop/allow-client no match",
            "default StagedKubernetesNetworkPolicy shop/knp.default.default-deny no match",
        ],
    },
];

#[test]
fn pending_traces() {
    let src: IpAddr = "10.0.0.1".parse().unwrap();
    let dst: IpAddr = "10.0.0.2".parse().unwrap();
    for case in CASES {
        let all = resources(case.staged);
        let enforced = ClusterState::from_resources(all.clone());
        let pending = ClusterState::from_resources_with(pending_resources(&all), true);
        let p = packet(6, src, 40000, dst, case.port);
        let e = enforced
            .trace_side(&p, case.direction)
            .unwrap()
            .expect("enforced side");
        assert_eq!(e.verdict, case.enforced, "{}: enforced", case.name);
        let d = pending_trace(&pending, &p, case.direction)
            .unwrap()
            .expect("pending side");
        assert_eq!(d.verdict, case.pending, "{}: pending", case.name);
        assert_eq!(describe(&d), case.passed, "{}", case.name);
    }
}

#[test]
fn the_view_follows_updates_and_counts_staged_policies() {
    let mut view = PendingView::new();
    for r in resources(STAGED_DENY) {
        view.update(&Update {
            key: r.key(),
            value: Some(r),
        });
    }
    assert_eq!(view.staged(), 1);
    let p = packet(
        6,
        "10.0.0.1".parse().unwrap(),
        40000,
        "10.0.0.2".parse().unwrap(),
        8080,
    );
    let d = view.trace(&p, Direction::Ingress).unwrap().unwrap();
    assert_eq!(d.verdict, Verdict::Deny);
    let key = ResourceKey {
        kind: manul_model::Kind::StagedNetworkPolicy,
        namespace: Some("shop".into()),
        name: "lock-down".into(),
    };
    view.update(&Update { key, value: None });
    assert_eq!(view.staged(), 0);
    let d = view.trace(&p, Direction::Ingress).unwrap().unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    // An address no endpoint holds has no side to judge.
    let outside = packet(
        6,
        "10.0.0.1".parse().unwrap(),
        1,
        "192.0.2.1".parse().unwrap(),
        80,
    );
    assert_eq!(view.trace(&outside, Direction::Ingress).unwrap(), None);
}
