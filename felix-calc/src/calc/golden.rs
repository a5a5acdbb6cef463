//! Golden state tests, after Calico's `states_for_test`: named cluster
//! states, each with the verdicts the dataplane must give, visited in
//! sequences forwards and backwards, with each transition's updates
//! applied in order and reversed. After every step the driver's state must
//! equal the state a fresh graph builds from scratch, and the null
//! driver (a software dataplane interpreting that state) must give the
//! expected verdicts. The null driver also rejects any batch whose order
//! breaks the contract.

use std::collections::BTreeMap;

use manul_dataplane_api::Driver;
use manul_dataplane_api::{NullDriver, Packet};

use super::tests::{resources, wep_in as wep};
use super::*;

const NODE: &str = "node1";

fn base() -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  labels: {team: shop}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n  labels: {team: dev}\n---\n",
    );
    s += &wep("api", "production", NODE, "10.65.0.2", "app: api");
    s += &wep(
        "frontend",
        "production",
        "node2",
        "10.65.1.2",
        "app: frontend",
    );
    s += &wep("devpod", "dev", "node2", "10.65.2.2", "app: frontend");
    s += &wep("db", "dev", NODE, "10.65.0.3", "app: db");
    s
}

const FRONTEND_TO_API: &str = super::tests::POLICY;

const FROM_DEV: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: from-dev
spec:
  order: 100
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source:
      namespaceSelector: team == 'dev'
    destination:
      ports: [8080]
---
";

const SECURITY: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  order: 10
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: threats
  labels: {threat: 'true'}
spec:
  nets: [198.51.100.0/24]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: security.block
spec:
  tier: security
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    source:
      selector: threat == 'true'
  - action: Pass
---
";

const HOST: &str = "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node1-eth0
  labels: {role: worker}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [10.0.0.10]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: workers
spec:
  selector: role == 'worker'
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [22]
---
";

/// (source, destination, port, allowed)
type Expect = &'static [(&'static str, &'static str, u16, bool)];

struct State {
    name: &'static str,
    yaml: String,
    expect: Expect,
    host_endpoints: usize,
}

fn states() -> Vec<State> {
    vec![
        State {
            name: "empty",
            yaml: String::new(),
            expect: &[],
            host_endpoints: 0,
        },
        State {
            name: "base: profiles allow everything",
            yaml: base(),
            expect: &[
                ("10.65.1.2", "10.65.0.2", 8080, true),
                ("10.65.2.2", "10.65.0.2", 9090, true),
                ("10.65.0.2", "10.65.0.3", 5432, true),
            ],
            host_endpoints: 0,
        },
        State {
            name: "frontend-to-api: named port, namespaced selector",
            yaml: base() + FRONTEND_TO_API,
            expect: &[
                ("10.65.1.2", "10.65.0.2", 8080, true),
                ("10.65.1.2", "10.65.0.2", 9090, false),
                ("10.65.2.2", "10.65.0.2", 8080, false),
                ("198.51.100.7", "10.65.0.2", 8080, false),
                ("10.65.1.2", "10.65.0.3", 5432, true),
            ],
            host_endpoints: 0,
        },
        State {
            name: "namespace selector admits dev",
            yaml: base() + FRONTEND_TO_API + FROM_DEV,
            expect: &[
                ("10.65.1.2", "10.65.0.2", 8080, true),
                ("10.65.2.2", "10.65.0.2", 8080, true),
                ("10.65.2.2", "10.65.0.2", 9090, false),
            ],
            host_endpoints: 0,
        },
        State {
            name: "security tier denies a network set, passes the rest",
            yaml: base() + FRONTEND_TO_API + SECURITY,
            expect: &[
                ("10.65.1.2", "10.65.0.2", 8080, true),
                ("198.51.100.7", "10.65.0.2", 8080, false),
                ("198.51.100.7", "10.65.0.3", 5432, false),
                ("203.0.113.1", "10.65.0.3", 5432, true),
            ],
            host_endpoints: 0,
        },
        State {
            name: "frontend relabelled: no longer admitted",
            yaml: base().replace(
                "frontend\n  namespace: production\n  labels: {app: frontend}",
                "frontend\n  namespace: production\n  labels: {app: web}",
            ) + FRONTEND_TO_API,
            expect: &[
                ("10.65.1.2", "10.65.0.2", 8080, false),
                ("10.65.1.2", "10.65.0.3", 8080, true),
            ],
            host_endpoints: 0,
        },
        State {
            name: "policy selector moved from api to nothing local in production",
            yaml: base()
                + &FRONTEND_TO_API.replace("selector: app == 'api'", "selector: app == 'db'"),
            expect: &[
                ("10.65.2.2", "10.65.0.2", 9090, true),
                ("10.65.1.2", "10.65.0.3", 5432, true),
            ],
            host_endpoints: 0,
        },
        State {
            name: "host endpoint with a policy",
            yaml: base() + HOST,
            expect: &[("10.65.1.2", "10.65.0.2", 8080, true)],
            host_endpoints: 1,
        },
    ]
}

fn by_key(yaml: &str) -> BTreeMap<ResourceKey, Resource> {
    resources(yaml).into_iter().map(|r| (r.key(), r)).collect()
}

/// The updates that take the graph from `from` to `to`.
pub(super) fn transition(from: &str, to: &str) -> Vec<Update> {
    let (a, b) = (by_key(from), by_key(to));
    let mut out: Vec<Update> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| Update {
            key: k.clone(),
            value: Some(v.clone()),
        })
        .collect();
    out.extend(a.keys().filter(|k| !b.contains_key(*k)).map(|k| Update {
        key: k.clone(),
        value: None,
    }));
    out
}

fn fresh(yaml: &str) -> NullDriver {
    let mut g = CalcGraph::new(NODE);
    let mut d = NullDriver::default();
    let mut ops = g.apply(transition("", yaml));
    ops.extend(g.in_sync());
    d.apply(&ops)
        .unwrap_or_else(|e| panic!("fresh build refused: {e}"));
    d
}

fn check(d: &NullDriver, s: &State, context: &str) {
    for (src, dst, port, allowed) in s.expect {
        let p = Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: *port,
            icmp_type: None,
            icmp_code: None,
        };
        let v = d.verdict(&p);
        assert_eq!(
            v.allowed, *allowed,
            "{context}: state {:?}: {src} -> {dst}:{port}\n{:#?}",
            s.name, v.steps
        );
    }
    assert_eq!(
        d.state().host_endpoints.len(),
        s.host_endpoints,
        "{context}: {}",
        s.name
    );
}

fn walk(order: &[usize], reverse_updates: bool) {
    let states = states();
    let mut g = CalcGraph::new(NODE);
    let mut d = NullDriver::default();
    let mut current = String::new();
    for &i in order {
        let s = &states[i];
        let mut updates = transition(&current, &s.yaml);
        if reverse_updates {
            updates.reverse();
        }
        let mut ops = g.apply(updates);
        ops.extend(g.in_sync());
        let context = format!("order {order:?} reversed={reverse_updates}");
        d.apply(&ops).unwrap_or_else(|e| {
            panic!(
                "{context}: into {:?}: driver refused: {e}\n{ops:#?}",
                s.name
            )
        });
        assert_eq!(
            d.state(),
            fresh(&s.yaml).state(),
            "{context}: into {:?}",
            s.name
        );
        check(&d, s, &context);
        current = s.yaml.clone();
    }
}

#[test]
fn every_state_from_scratch() {
    for s in states() {
        check(&fresh(&s.yaml), &s, "fresh");
    }
}

#[test]
fn sequences_forwards_backwards_and_with_updates_reversed() {
    let n = states().len();
    let forwards: Vec<usize> = (0..n).collect();
    let backwards: Vec<usize> = (0..n).rev().collect();
    // Every state to every other state and back to empty.
    let mut pairs = Vec::new();
    for a in 0..n {
        for b in 0..n {
            if a != b {
                pairs.extend([a, b, 0]);
            }
        }
    }
    for order in [&forwards, &backwards, &pairs] {
        for reversed in [false, true] {
            walk(order, reversed);
        }
    }
}
