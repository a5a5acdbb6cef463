//! The behaviour matrix: one case per kind of rule, each a set of policy
//! resources and the probes with their expected results. Cases run in
//! order, each replacing the previous case's policies, so every step is
//! also a policy change that must take effect for new connections.

use crate::topology::Probe;

/// One expected result: `from` → `to` with `probe` gets through or not.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub from: &'static str,
    pub to: &'static str,
    pub probe: Probe,
    pub allowed: bool,
}

const fn allow(from: &'static str, to: &'static str, probe: Probe) -> Expect {
    Expect {
        from,
        to,
        probe,
        allowed: true,
    }
}

const fn deny(from: &'static str, to: &'static str, probe: Probe) -> Expect {
    Expect {
        from,
        to,
        probe,
        allowed: false,
    }
}

/// A case: its name, the policy resources (YAML), the expectations.
#[derive(Debug)]
pub struct Case {
    pub name: &'static str,
    pub policies: &'static str,
    pub expect: Vec<Expect>,
}

const FE: &str = "production/frontend";
const API: &str = "production/api";
const OTHER: &str = "production/other";
const TESTER: &str = "dev/tester";
const LEGACY: &str = "production/legacy";
/// A pod whose interface Felix never heard of: traffic to and from it is
/// dropped (fail closed). The reference evaluator knows nothing of
/// interfaces, so these expectations are checked on the dataplane only.
pub const GHOST: &str = "production/ghost";

const HTTP: Probe = Probe::Tcp(8080);

/// Pods: `(namespace/name, address, labels, profiles, named ports)`.
pub const PODS: &[(&str, [u8; 4], &str, &str, &str)] = &[
    (FE, [10, 65, 0, 1], "app: frontend", "[kns.production]", ""),
    (
        API,
        [10, 65, 0, 2],
        "app: api",
        "[kns.production]",
        "[{name: http, protocol: TCP, port: 8080}, {name: metrics, protocol: TCP, port: 9000}]",
    ),
    (OTHER, [10, 65, 0, 3], "app: other", "[kns.production]", ""),
    (TESTER, [10, 65, 0, 4], "app: frontend", "[kns.dev]", ""),
    (LEGACY, [10, 65, 0, 5], "app: legacy", "[restricted]", ""),
];

/// The ghost pod's address.
pub const GHOST_IP: [u8; 4] = [10, 65, 0, 9];

/// Namespaces and the custom profile every case has.
pub const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: production, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {team: dev}}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: restricted}
spec:
  ingress:
  - action: Allow
    source: {selector: app == 'frontend'}
  egress:
  - action: Allow
"#;

/// Every case, in the order they run.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "no policy: profiles decide",
            policies: "",
            expect: vec![
                allow(FE, API, HTTP),
                allow(OTHER, API, Probe::Tcp(9000)),
                allow(TESTER, API, Probe::Udp),
                allow(FE, API, Probe::Ping),
                allow(FE, LEGACY, HTTP),
                deny(OTHER, LEGACY, HTTP),
                deny(FE, GHOST, HTTP),
                deny(GHOST, FE, HTTP),
            ],
        },
        Case {
            name: "selector, scoped to the policy's namespace",
            policies: FRONTEND_TO_API,
            expect: vec![
                allow(FE, API, HTTP),
                deny(OTHER, API, HTTP),
                deny(FE, API, Probe::Tcp(8081)),
                deny(TESTER, API, HTTP),
                allow(FE, OTHER, HTTP),
                allow(API, FE, HTTP),
            ],
        },
        Case {
            name: "namespace selector",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-dev, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    source: {namespaceSelector: team == 'dev'}
"#,
            expect: vec![
                allow(TESTER, API, HTTP),
                deny(FE, API, HTTP),
                deny(OTHER, API, Probe::Ping),
            ],
        },
        Case {
            name: "nets and notNets",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: nets, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    source: {nets: [10.65.0.0/24], notNets: [10.65.0.1/32]}
"#,
            expect: vec![
                allow(OTHER, API, HTTP),
                allow(TESTER, API, HTTP),
                deny(FE, API, HTTP),
            ],
        },
        Case {
            name: "ports and port ranges",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ports, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: ["8080:8081"]}
"#,
            expect: vec![
                allow(FE, API, HTTP),
                allow(FE, API, Probe::Tcp(8081)),
                deny(FE, API, Probe::Tcp(9000)),
                deny(FE, API, Probe::Udp),
            ],
        },
        Case {
            name: "named ports, inbound and outbound",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: named-in, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [http, metrics]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: named-out, namespace: production}
spec:
  selector: app == 'frontend'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    destination: {selector: app == 'api', ports: [metrics]}
"#,
            expect: vec![
                allow(FE, API, Probe::Tcp(9000)),
                deny(FE, API, HTTP),
                deny(FE, OTHER, Probe::Tcp(9000)),
                allow(OTHER, API, HTTP),
                deny(OTHER, API, Probe::Tcp(8081)),
            ],
        },
        Case {
            name: "protocols and ICMP",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: icmp-udp, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
  - action: Allow
    protocol: UDP
"#,
            expect: vec![
                allow(FE, API, Probe::Ping),
                allow(FE, API, Probe::Udp),
                deny(FE, API, HTTP),
            ],
        },
        Case {
            name: "deny ICMP, then allow the rest (first match wins)",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-ping, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Deny
    protocol: ICMP
  - action: Allow
    notProtocol: UDP
"#,
            expect: vec![
                deny(FE, API, Probe::Ping),
                allow(FE, API, HTTP),
                deny(FE, API, Probe::Udp),
            ],
        },
        Case {
            name: "tiers and Pass",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.gate}
spec:
  tier: security
  selector: app == 'api'
  ingress:
  - action: Pass
    source: {selector: app == 'frontend'}
  - action: Deny
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all-to-api, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
"#,
            expect: vec![
                allow(FE, API, HTTP),
                allow(TESTER, API, HTTP),
                deny(OTHER, API, HTTP),
            ],
        },
        Case {
            name: "policy order: a lower order decides first",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-allow, namespace: production}
spec:
  order: 20
  selector: app == 'api'
  ingress:
  - action: Allow
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-deny-other, namespace: production}
spec:
  order: 10
  selector: app == 'api'
  ingress:
  - action: Deny
    source: {selector: app == 'other'}
"#,
            expect: vec![deny(OTHER, API, HTTP), allow(FE, API, HTTP)],
        },
        Case {
            name: "default deny once a policy selects an endpoint (egress)",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: fe-egress, namespace: production}
spec:
  selector: app == 'frontend'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    destination: {ports: [443]}
"#,
            expect: vec![
                deny(FE, API, HTTP),
                allow(FE, API, Probe::Tcp(443)),
                deny(FE, API, Probe::Ping),
                allow(OTHER, FE, HTTP),
            ],
        },
        Case {
            name: "replies of allowed connections pass a default deny",
            policies: r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: isolate-frontend, namespace: production}
spec:
  selector: app == 'frontend'
  types: [Ingress]
"#,
            expect: vec![
                allow(FE, API, HTTP),
                deny(API, FE, HTTP),
                allow(FE, API, Probe::Ping),
            ],
        },
    ]
}

/// frontend may reach api on TCP 8080: the selector case, and the policy
/// the connection-tracking and restart checks run under.
pub const FRONTEND_TO_API: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: frontend-to-api, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'frontend'}
    destination: {ports: [8080]}
"#;

/// A policy that denies everything into api.
pub const ISOLATE_API: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: frontend-to-api, namespace: production}
spec:
  selector: app == 'api'
  types: [Ingress]
"#;
