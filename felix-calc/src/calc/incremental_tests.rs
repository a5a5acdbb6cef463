//! Property: over random sequences of policy changes (rules alone,
//! selector, order, tier, types, namespace selector, host-policy flags,
//! adds and removes), endpoint changes (labels, node, adds and removes,
//! host endpoints too) and tier order changes, applied in random batches,
//! the dataplane state the graph's batches build in the null driver is
//! after every batch exactly the state a fresh graph builds from the
//! cluster state of that moment (the reference). The null driver also
//! refuses any batch that breaks the contract's order.
//!
//! Beside it, table tests of what a change marks for recomputation: a
//! change to a policy's rules alone leaves the local endpoints clean (they
//! name the policy by id), a change to anything that places the policy in
//! an endpoint's tiers does not.

use manul_dataplane_api::{Driver, NullDriver};
use proptest::prelude::*;

use super::golden::transition;
use super::tests::puts;
use super::*;

const NODE: &str = "node1";

const SELECTORS: [&str; 6] = [
    "all()",
    "app == 'a'",
    "app in {'a', 'b'}",
    "has(role)",
    "role == 'x' || app == 'c'",
    "!has(role)",
];

const NS_SELECTORS: [&str; 2] = ["team == 'x'", "all()"];

/// Over the service account's name (`all()`: has an account).
const SA_SELECTORS: [&str; 2] = ["projectcalico.org/name == 'sa0'", "all()"];

/// Rule lists; `PEER` is `source` for ingress, `destination` for egress.
const RULES: [&str; 6] = [
    "",
    "  - action: Allow\n    PEER:\n      selector: app == 'a'\n",
    "  - action: Deny\n    PEER:\n      selector: role == 'x'\n  - action: Allow\n",
    "  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [8080]\n",
    "  - action: Pass\n    PEER:\n      selector: has(app)\n",
    "  - action: Allow\n    PEER:\n      selector: app == 'a'\n  - action: Deny\n    PEER:\n      selector: app == 'b'\n",
];

const TYPES: [&str; 4] = [
    "",
    "  types: [Ingress]\n",
    "  types: [Egress]\n",
    "  types: [Ingress, Egress]\n",
];

/// Global policies come first; the rest are NetworkPolicies in `ns-a`
/// and `ns-b`.
const GLOBAL_POLICIES: usize = 4;
const POLICIES: usize = 6;
const ENDPOINTS: usize = 5;
const HOST_ENDPOINTS: usize = 2;

#[derive(Debug, Clone)]
struct Pol {
    present: bool,
    /// 0: the default tier, 1: `t1`.
    tier: usize,
    order: Option<u8>,
    selector: usize,
    types: usize,
    ingress: usize,
    egress: usize,
    sa_selector: Option<usize>,
    /// Global policies only.
    ns_selector: Option<usize>,
    /// Global policies only: 0 normal, 1 applyOnForward, 2 preDNAT,
    /// 3 doNotTrack.
    flags: usize,
}

#[derive(Debug, Clone)]
struct Ep {
    present: bool,
    local: bool,
    ns: usize,
    app: usize,
    role: Option<usize>,
    account: Option<usize>,
}

#[derive(Debug, Clone)]
struct Hep {
    present: bool,
    local: bool,
    app: usize,
}

#[derive(Debug, Clone)]
struct Model {
    pols: Vec<Pol>,
    eps: Vec<Ep>,
    heps: Vec<Hep>,
    tier_order: Option<u32>,
}

#[derive(Debug, Clone)]
enum Op {
    Rules(usize, usize, usize),
    Selector(usize, usize),
    Order(usize, Option<u8>),
    Tier(usize, usize),
    Types(usize, usize),
    NsSelector(usize, Option<usize>),
    SaSelector(usize, Option<usize>),
    Flags(usize, usize),
    TogglePolicy(usize),
    EndpointLabels(usize, usize, Option<usize>),
    EndpointLocal(usize, bool),
    EndpointAccount(usize, Option<usize>),
    ToggleEndpoint(usize),
    HostLabels(usize, usize),
    ToggleHost(usize),
    TierOrder(Option<u32>),
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Rules(p, i, e) => (self.pols[p].ingress, self.pols[p].egress) = (i, e),
            Op::Selector(p, s) => self.pols[p].selector = s,
            Op::Order(p, o) => self.pols[p].order = o,
            Op::Tier(p, t) => self.pols[p].tier = t,
            Op::Types(p, t) => self.pols[p].types = t,
            Op::NsSelector(p, s) => self.pols[p].ns_selector = s,
            Op::SaSelector(p, s) => self.pols[p].sa_selector = s,
            Op::Flags(p, f) => self.pols[p].flags = f,
            Op::TogglePolicy(p) => self.pols[p].present ^= true,
            Op::EndpointLabels(e, app, role) => (self.eps[e].app, self.eps[e].role) = (app, role),
            Op::EndpointLocal(e, l) => self.eps[e].local = l,
            Op::EndpointAccount(e, a) => self.eps[e].account = a,
            Op::ToggleEndpoint(e) => self.eps[e].present ^= true,
            Op::HostLabels(h, app) => self.heps[h].app = app,
            Op::ToggleHost(h) => self.heps[h].present ^= true,
            Op::TierOrder(o) => self.tier_order = o,
        }
    }

    fn yaml(&self) -> String {
        let mut s = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-a\n  labels: {team: x}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-b\n  labels: {team: y}\n---\n",
        );
        s += "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t1\nspec:\n";
        match self.tier_order {
            Some(o) => s += &format!("  order: {o}\n---\n"),
            None => s += "  order: null\n---\n",
        }
        for (i, e) in self.eps.iter().enumerate().filter(|(_, e)| e.present) {
            let ns = ["ns-a", "ns-b"][e.ns];
            let node = if e.local { NODE } else { "node2" };
            let mut labels = format!("app: {}", ["a", "b", "c"][e.app]);
            if let Some(r) = e.role {
                labels += &format!(", role: {}", ["x", "y"][r]);
            }
            let account = e
                .account
                .map(|a| format!("  serviceAccountName: sa{a}\n"))
                .unwrap_or_default();
            s += &format!(
                "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: e{i}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  node: {node}\n  interfaceName: cali-e{i}\n  ipNetworks: [10.0.0.{}/32]\n  profiles: [kns.{ns}]\n{account}---\n",
                i + 1
            );
        }
        for (i, h) in self.heps.iter().enumerate().filter(|(_, h)| h.present) {
            let node = if h.local { NODE } else { "node2" };
            s += &format!(
                "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h{i}\n  labels: {{app: {}, host: 'true'}}\nspec:\n  node: {node}\n  interfaceName: eth{i}\n  expectedIPs: [10.0.1.{}]\n---\n",
                ["a", "b", "c"][h.app],
                i + 1
            );
        }
        for (i, p) in self.pols.iter().enumerate().filter(|(_, p)| p.present) {
            let global = i < GLOBAL_POLICIES;
            let tier = ["default", "t1"][p.tier];
            let name = if p.tier == 0 {
                format!("p{i}")
            } else {
                format!("t1.p{i}")
            };
            if global {
                s += &format!(
                    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n"
                );
            } else {
                let ns = ["ns-a", "ns-b"][i % 2];
                s += &format!(
                    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n"
                );
            }
            s += &format!(
                "  tier: {tier}\n  selector: \"{}\"\n",
                SELECTORS[p.selector]
            );
            if let Some(o) = p.order {
                s += &format!("  order: {o}\n");
            }
            if let Some(a) = p.sa_selector {
                s += &format!("  serviceAccountSelector: \"{}\"\n", SA_SELECTORS[a]);
            }
            let pre_dnat = global && p.flags == 2;
            if global {
                if let Some(n) = p.ns_selector {
                    s += &format!("  namespaceSelector: \"{}\"\n", NS_SELECTORS[n]);
                }
                match p.flags {
                    1 => s += "  applyOnForward: true\n",
                    2 => s += "  applyOnForward: true\n  preDNAT: true\n",
                    3 => s += "  applyOnForward: true\n  doNotTrack: true\n",
                    _ => {}
                }
            }
            // A preDNAT policy has ingress rules only.
            s += if pre_dnat {
                "  types: [Ingress]\n"
            } else {
                TYPES[p.types]
            };
            let rules = |r: usize, peer: &str| RULES[r].replace("PEER", peer);
            // Rules only in the directions explicit types include.
            let (ingress, egress) = match (pre_dnat, p.types) {
                (true, _) | (false, 1) => (true, false),
                (false, 2) => (false, true),
                _ => (true, true),
            };
            if ingress && !RULES[p.ingress].is_empty() {
                s += &format!("  ingress:\n{}", rules(p.ingress, "source"));
            }
            if egress && !RULES[p.egress].is_empty() {
                s += &format!("  egress:\n{}", rules(p.egress, "destination"));
            }
            s += "---\n";
        }
        s
    }
}

fn pol() -> impl Strategy<Value = Pol> {
    (
        any::<bool>(),
        0..2usize,
        prop::option::of(prop::sample::select(vec![1u8, 2, 5])),
        0..SELECTORS.len(),
        0..TYPES.len(),
        0..RULES.len(),
        0..RULES.len(),
        prop::option::of(0..SA_SELECTORS.len()),
        prop::option::of(0..NS_SELECTORS.len()),
        0..4usize,
    )
        .prop_map(
            |(
                present,
                tier,
                order,
                selector,
                types,
                ingress,
                egress,
                sa_selector,
                ns_selector,
                flags,
            )| Pol {
                present: present || tier == 0,
                tier,
                order,
                selector,
                types,
                ingress,
                egress,
                sa_selector,
                ns_selector,
                flags,
            },
        )
}

fn model() -> impl Strategy<Value = Model> {
    (
        prop::collection::vec(pol(), POLICIES),
        prop::collection::vec(
            (
                any::<bool>(),
                any::<bool>(),
                0..2usize,
                0..3usize,
                prop::option::of(0..2usize),
                prop::option::of(0..2usize),
            ),
            ENDPOINTS,
        ),
        prop::collection::vec((any::<bool>(), any::<bool>(), 0..3usize), HOST_ENDPOINTS),
        prop::option::of(prop::sample::select(vec![5u32, 2_000_000])),
    )
        .prop_map(|(pols, eps, heps, tier_order)| Model {
            pols,
            eps: eps
                .into_iter()
                .map(|(present, local, ns, app, role, account)| Ep {
                    present: present || local,
                    local,
                    ns,
                    app,
                    role,
                    account,
                })
                .collect(),
            heps: heps
                .into_iter()
                .map(|(present, local, app)| Hep {
                    present,
                    local,
                    app,
                })
                .collect(),
            tier_order,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..POLICIES;
    let g = 0..GLOBAL_POLICIES;
    let e = 0..ENDPOINTS;
    prop_oneof![
        // Rules alone: the change this graph makes cheap, so the most
        // frequent.
        6 => (p.clone(), 0..RULES.len(), 0..RULES.len()).prop_map(|(p, i, e)| Op::Rules(p, i, e)),
        2 => (p.clone(), 0..SELECTORS.len()).prop_map(|(p, s)| Op::Selector(p, s)),
        2 => (p.clone(), prop::option::of(prop::sample::select(vec![1u8, 2, 5])))
            .prop_map(|(p, o)| Op::Order(p, o)),
        1 => (p.clone(), 0..2usize).prop_map(|(p, t)| Op::Tier(p, t)),
        1 => (p.clone(), 0..TYPES.len()).prop_map(|(p, t)| Op::Types(p, t)),
        1 => (g.clone(), prop::option::of(0..NS_SELECTORS.len()))
            .prop_map(|(p, s)| Op::NsSelector(p, s)),
        2 => (g, 0..4usize).prop_map(|(p, f)| Op::Flags(p, f)),
        1 => (p.clone(), prop::option::of(0..SA_SELECTORS.len()))
            .prop_map(|(p, s)| Op::SaSelector(p, s)),
        1 => p.prop_map(Op::TogglePolicy),
        2 => (e.clone(), 0..3usize, prop::option::of(0..2usize))
            .prop_map(|(e, a, r)| Op::EndpointLabels(e, a, r)),
        1 => (e.clone(), any::<bool>()).prop_map(|(e, l)| Op::EndpointLocal(e, l)),
        1 => (e.clone(), prop::option::of(0..2usize)).prop_map(|(e, a)| Op::EndpointAccount(e, a)),
        1 => e.prop_map(Op::ToggleEndpoint),
        1 => (0..HOST_ENDPOINTS, 0..3usize).prop_map(|(h, a)| Op::HostLabels(h, a)),
        1 => (0..HOST_ENDPOINTS).prop_map(Op::ToggleHost),
        1 => prop::option::of(prop::sample::select(vec![5u32, 2_000_000])).prop_map(Op::TierOrder),
    ]
}

/// The reference: the driver state a fresh graph builds from `yaml`.
fn fresh(yaml: &str) -> NullDriver {
    let mut g = CalcGraph::new(NODE);
    let mut d = NullDriver::default();
    let mut ops = g.apply(puts(yaml));
    ops.extend(g.in_sync());
    d.apply(&ops)
        .unwrap_or_else(|e| panic!("fresh build refused: {e}\n{yaml}"));
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Each op with whether it starts a new batch; a batch's updates in
    /// order or reversed.
    #[test]
    fn incremental_output_equals_a_fresh_graphs(
        start in model(),
        steps in prop::collection::vec((op(), any::<bool>()), 1..40),
        reverse in any::<bool>(),
    ) {
        let mut m = start;
        let mut g = CalcGraph::new(NODE);
        let mut d = NullDriver::default();
        let mut current = m.yaml();
        let mut ops = g.apply(puts(&current));
        ops.extend(g.in_sync());
        d.apply(&ops).map_err(|e| TestCaseError::fail(format!("first batch refused: {e}")))?;
        let n = steps.len();
        for (i, (op, new_batch)) in steps.iter().enumerate() {
            m.apply(op);
            let last = i + 1 == n;
            if !new_batch && !last && !matches!(steps[i + 1].0, Op::TierOrder(_)) {
                // Folded into the next batch.
                continue;
            }
            let next = m.yaml();
            let mut updates = transition(&current, &next);
            if reverse {
                updates.reverse();
            }
            let ops = g.apply(updates);
            d.apply(&ops).map_err(|e| {
                TestCaseError::fail(format!("after {op:?}: refused: {e}\n{ops:#?}\n{next}"))
            })?;
            let reference = fresh(&next);
            prop_assert_eq!(d.state(), reference.state(), "after {:?}:\n{}", op, next);
            current = next;
        }
    }
}

fn model_of(yaml_ops: &[Op]) -> Model {
    let pol = |tier| Pol {
        present: true,
        tier,
        order: Some(1),
        selector: 0,
        types: 0,
        ingress: 1,
        egress: 0,
        sa_selector: None,
        ns_selector: None,
        flags: 0,
    };
    let ep = |local| Ep {
        present: true,
        local,
        ns: 0,
        app: 0,
        role: Some(0),
        account: Some(0),
    };
    let mut m = Model {
        pols: vec![pol(0), pol(1), pol(0), pol(0), pol(0), pol(0)],
        eps: vec![ep(true), ep(true), ep(false), ep(false), ep(true)],
        heps: vec![
            Hep {
                present: true,
                local: true,
                app: 0,
            },
            Hep {
                present: false,
                local: false,
                app: 0,
            },
        ],
        tier_order: Some(5),
    };
    for op in yaml_ops {
        m.apply(op);
    }
    m
}

/// The local endpoints a change of `before` to `after` marks for
/// recomputation, those it marks for their tiers alone, and the batch it
/// gives.
fn marked(before: &[Op], after: &[Op]) -> (usize, usize, Vec<dp::Operation>) {
    let mut g = CalcGraph::new(NODE);
    let from = model_of(before).yaml();
    let _ = g.apply(puts(&from));
    let _ = g.in_sync();
    let to = model_of(after).yaml();
    for u in transition(&from, &to) {
        g.update(u);
    }
    let dirty = g.policies.dirty_locals.len()
        + if g.policies.all_locals_dirty {
            g.policies.locals.len()
        } else {
            0
        };
    let retiered = g.policies.retiered_locals.len();
    let ready = g.ready();
    g.advance(&ready);
    (dirty, retiered, ready.ops)
}

use manul_dataplane_api as dp;

#[test]
fn a_rules_only_change_leaves_the_local_endpoints_clean() {
    // Without explicit types, the types follow which rules are present:
    // the egress rules stay absent.
    let (dirty, retiered, ops) = marked(&[], &[Op::Rules(0, 2, 0)]);
    assert_eq!((dirty, retiered), (0, 0), "{ops:#?}");
    // The policy and its new sets change; no endpoint does.
    assert!(
        ops.iter()
            .any(|o| matches!(o, dp::Operation::PolicyUpdate { id, .. } if id.name == "p0")),
        "{ops:#?}"
    );
    assert!(
        !ops.iter().any(|o| matches!(
            o,
            dp::Operation::WorkloadEndpointUpdate(_) | dp::Operation::HostEndpointUpdate(_)
        )),
        "{ops:#?}"
    );
}

#[test]
fn a_selector_change_marks_only_the_endpoints_whose_match_changed() {
    // `app == 'a'` matches the three local workload endpoints and the
    // host endpoint; `has(role)` neither the one whose role is gone nor
    // the host endpoint (no `role`).
    let (dirty, retiered, _) = marked(
        &[Op::EndpointLabels(1, 0, None), Op::Selector(0, 1)],
        &[Op::EndpointLabels(1, 0, None), Op::Selector(0, 3)],
    );
    assert_eq!((dirty, retiered), (2, 0));
}

#[test]
fn placement_changes_mark_the_endpoints_the_policy_applies_to() {
    // Three local workload endpoints and one host endpoint use p0. A new
    // order or types keeps which of them it applies to: their tiers are
    // built again, what they use is not recomputed.
    for change in [Op::Order(0, Some(2)), Op::Types(0, 3)] {
        let (dirty, retiered, ops) = marked(&[], std::slice::from_ref(&change));
        assert_eq!((dirty, retiered), (0, 4), "{change:?}");
        assert!(
            ops.iter()
                .any(|o| matches!(o, dp::Operation::WorkloadEndpointUpdate(_))),
            "{change:?}: {ops:#?}"
        );
    }
    for change in [
        Op::NsSelector(0, Some(1)),
        Op::SaSelector(0, Some(0)),
        Op::Flags(0, 1),
    ] {
        let (dirty, retiered, _) = marked(&[], std::slice::from_ref(&change));
        assert_eq!((dirty, retiered), (4, 0), "{change:?}");
    }
}
