//! Agreement between the calculation graph and the reference evaluator.
//!
//! Property: for random cluster states and random updates between them, the
//! dataplane state the calculation graph produces for node `node1`, when
//! interpreted by the null driver ([`NullDriver::verdict`]), judges every
//! packet exactly as the reference evaluator
//! ([`manul_felix::evaluator::ClusterState`]) does, restricted to what
//! `node1` enforces.
//!
//! # What is generated
//!
//! A [`Model`] rendered as YAML and loaded with [`manul_model::load`]:
//! 2–3 Namespaces with random labels (`env`, `team`); 3–8
//! WorkloadEndpoints on `node1` (local) or `node2`, labelled from a small
//! alphabet (`app`, `role`, `env`, few values), one distinct /32 each,
//! `profiles: [kns.NS]`, sometimes a named port (`http` TCP 8080, `dns` UDP
//! 53); 0–2 Tiers `t1`, `t2` (order random or unset, `defaultAction` Deny or
//! Pass) and sometimes a Tier resource for `default`; 0–2 labelled network
//! sets (mostly GlobalNetworkSets, sometimes namespaced NetworkSets) whose
//! CIDRs may contain endpoint addresses or external ones (198.51.100.0/24,
//! 203.0.113.9/32, 0.0.0.0/0); 1–5 policies: v3 NetworkPolicy,
//! GlobalNetworkPolicy (sometimes with a `namespaceSelector`) and
//! Kubernetes NetworkPolicy (pod and namespace selectors with
//! matchLabels/matchExpressions, ipBlocks with `except`, ports with
//! protocol, number, range or name, `policyTypes`). v3 policies have a
//! random tier (existing or default), order (or unset), selector (`==`,
//! `!=`, `in`, `not in`, `has`, `!has`, `&&`, `||`, `all()`), types, and
//! 0–3 rules per direction: Allow, Deny, Pass or Log; TCP, UDP, ICMP or
//! any; each side with random subsets of `selector`, `notSelector`,
//! `namespaceSelector` (over namespace labels and `projectcalico.org/name`,
//! with `all()` and `global()`), `nets`, `notNets`, `ports` and `notPorts`
//! (numbers, ranges, `http`, `dns`; only with TCP or UDP), `services`
//! (a Service by name, in the policy's namespace or a named one; never
//! beside nets, selector or namespaceSelector, nor beside ports as a
//! destination, as validation requires) and `serviceAccounts` (names and
//! a selector over the accounts' labels and `projectcalico.org/name`);
//! sometimes `notProtocol`, `ipVersion` 4 or 6, `icmp`/`notICMP` types and
//! codes (with ICMP) and an `http` match; sometimes a policy-level
//! `serviceAccountSelector`. Endpoints sometimes have a service account
//! (`sa0`, `sa1`, listed as profile `ksa.NS.SA`), 0–3 such profiles carry
//! `pcsa.` labels, and 0–3 EndpointSlices of `svc0`/`svc1` hold endpoint
//! addresses (or one no endpoint has) with named and unnamed TCP and UDP
//! ports. A rule's `selector`, `notSelector` or `namespaceSelector` is
//! rarely the empty string. Every state is valid by construction; a state that
//! `manul_model::load` refuses anyway is discarded (a proptest rejection),
//! never asserted on.
//!
//! State B is state A after 1–3 random [`Mutation`]s (relabel, move, re-port,
//! re-namespace, add or remove an endpoint; relabel or delete a Namespace;
//! change a policy's selector, order, tier or whole spec, add or remove a
//! policy; add, change or remove a Tier or a network set; change an
//! endpoint's service account or an account's labels; add, change or
//! remove an EndpointSlice).
//!
//! # What is checked
//!
//! 1. State A is fed to `CalcGraph::new("node1")` as puts (in document order
//!    or reversed), then `in_sync()`, and every operation is applied to a
//!    [`NullDriver`], which must accept every batch (a refusal means the
//!    graph's ordering broke the dataplane contract).
//! 2. Every packet between two addresses of the state (endpoint addresses,
//!    and the external `198.51.100.7` and `203.0.113.9`) of which at least
//!    one is a `node1` endpoint, for TCP and UDP to ports 53, 80, 8080, 9000
//!    and 9999 from source port 40000, ICMP echo request (8/0) and
//!    fragmentation needed (3/4), gets the same verdict
//!    from the driver as from the evaluator (restricted, see below).
//! 3. The transition A → B (puts for new or changed keys, deletes for removed
//!    ones; in one batch or one update per batch, in order or reversed) is
//!    applied to the same graph and driver; the driver must accept every
//!    batch and end in exactly the state (`DesiredState`) a fresh graph and
//!    driver build from B; then check 2 is repeated on B.
//!
//! # Restricting the evaluator to what `node1` enforces (why it is sound)
//!
//! The null driver only polices `node1`'s endpoints: a packet is judged by
//! its source's egress when the source is a `node1` endpoint, and by its
//! destination's ingress when the destination is one; a `node2` endpoint's
//! side is not policed there. The evaluator judges both ends of a flow and
//! only reports the direction that decided. So the expected verdict is
//! computed from a copy of the state given only to the evaluator, in which
//! a non-local side can never deny:
//!
//! - every `node2` WorkloadEndpoint gets one extra label,
//!   [`REMOTE_LABEL`], whose key no generated selector mentions (generated
//!   selectors use only the `app`/`role`/`env` keys and namespace keys, so
//!   no rule, policy or set selector can see the difference: `all()`,
//!   `!has(k)` and `k != v` are unaffected by an unrelated key);
//! - a Tier ordered before every generated tier (order -1e9; generated
//!   orders are positive or unset) holds one GlobalNetworkPolicy selecting
//!   `has(REMOTE_LABEL)` with an unconditional Allow for ingress and egress.
//!
//! In that copy a `node2` endpoint's side allows everything at its first
//! tier, while a `node1` endpoint's side is evaluated exactly as before
//! (the helper policy never applies to it, and a tier without an applying
//! policy is skipped). The evaluator's verdict on the copy is therefore
//! `egress(src) if src is local` AND `ingress(dst) if dst is local`, which
//! is what the driver computes.
//!
//! # Excluded corner
//!
//! `global()` in a GlobalNetworkPolicy's own (policy-level)
//! `namespaceSelector` is never generated (it is generated in rules'
//! `namespaceSelector`s, where both sides agree). The sides read it
//! differently: the evaluator documents it as "no namespace", so the policy
//! applies to no workload endpoint; the graph evaluates `global()` against
//! the namespace's labels (which never carry `projectcalico.org/namespace`),
//! so the policy applies to every workload endpoint its `selector` matches.
//! The Calico source we could read (libcalico-go's GlobalNetworkPolicy
//! update processor) ANDs the `pcns.`-prefixed namespace selector with the
//! policy selector, replaces every `all()` in the result by
//! `has(projectcalico.org/namespace)`, and its selector evaluator takes
//! `global()` as true: on workload endpoints that is the graph's answer,
//! not the evaluator's, but it reads as an accident of translation rather
//! than intent, so which side to change is left to a decision. Minimal
//! case: a `node1` endpoint labelled `app: web`, a GlobalNetworkPolicy with
//! `selector: app == 'web'`, `namespaceSelector: global()` and
//! `ingress: [{action: Deny}]`; TCP 198.51.100.7 → the endpoint: the graph
//! denies, the evaluator allows (the namespace profile).
//!
//! # Disagreements found (minimal reproductions below)
//!
//! Each has a test at the end of this file with its minimal state, a packet
//! and Calico's verdict; the side in parentheses is the one that differs
//! from Calico:
//!
//! - `rule_namespace_selector_all_does_not_select_global_network_sets`
//!   (graph): a rule's `namespaceSelector: all()` must select namespaced
//!   things only (Calico: `has(projectcalico.org/namespace)`).
//! - `empty_rule_selectors_are_unset` (graph): `selector: ""`,
//!   `notSelector: ""` and `namespaceSelector: ""` in a rule are unset.
//! - `kubernetes_empty_namespace_selector_selects_every_namespace`
//!   (evaluator, through `manul_model::convert`): a Kubernetes peer with
//!   `namespaceSelector: {}` selects every namespace.
//! - `default_tier_without_order_keeps_its_order` (graph): a Tier resource
//!   named `default` without `order` stays at order 1,000,000.
//!
//! While one is being fixed, `AGREEMENT_SKIP` (comma-separated:
//! `rule-ns-all`, `empty-selector`, `k8s-empty-ns`, `default-tier-unset`)
//! leaves the corresponding corner out of generation, so the property can
//! look past it. Unset, nothing but the excluded corner is left out.
//!
//! # Running
//!
//! `cargo test -p manul-felix --test agreement` runs [`CASES`] cases (about
//! 15 s in a debug build on 2 cores when it passes); `PROPTEST_CASES=N`
//! (with `--release`) explores more. The seed is random unless `PROPTEST_RNG_SEED` is set. A
//! failure prints the minimal state's YAML, the packet, both verdicts and
//! both traces (or the refused batch, or the difference between the
//! incremental and the fresh dataplane state).
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::net::{IpAddr, Ipv4Addr};

use manul_dataplane_api::{DesiredState, Driver, NullDriver, Operation, Packet};
use manul_felix::calc::{CalcGraph, Update};
use manul_felix::evaluator::{self, ClusterState, Peer};
use manul_model::{Resource, ResourceKey};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::{Config, TestCaseError};

/// The node whose dataplane is computed.
const LOCAL: &str = "node1";
/// The other node.
const REMOTE: &str = "node2";
/// Default number of cases (overridden by `PROPTEST_CASES`).
const CASES: u32 = 500;
/// The label that marks non-local endpoints in the evaluator's copy.
const REMOTE_LABEL: &str = "agreement.manul.test/remote";
/// Addresses that belong to no endpoint.
const EXTERNAL: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(203, 0, 113, 9),
];
/// The source port of TCP and UDP packets.
const SRC_PORT: u16 = 40000;
/// The destination ports of TCP and UDP packets.
const DST_PORTS: [u16; 5] = [53, 80, 8080, 9000, 9999];

/// What the evaluator gets on top of the state (see the module doc).
const HELPER: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: agreement-remote
spec:
  order: -1000000000
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: agreement-remote-allow
spec:
  tier: agreement-remote
  selector: has(agreement.manul.test/remote)
  types: [Ingress, Egress]
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
";

// ---------------------------------------------------------------- alphabet

type KeySpace = &'static [(&'static str, &'static [&'static str])];

/// Endpoint and network set labels.
const POD_KEYS: KeySpace = &[
    ("app", &["web", "api", "db"]),
    ("role", &["fe", "be"]),
    ("env", &["prod", "dev"]),
];
/// Namespace labels.
const NS_LABEL_KEYS: KeySpace = &[("env", &["prod", "dev"]), ("team", &["a", "b"])];
/// What namespace selectors may mention.
const NS_KEYS: KeySpace = &[
    ("env", &["prod", "dev"]),
    ("team", &["a", "b"]),
    ("projectcalico.org/name", &["ns0", "ns1", "ns2"]),
];

/// Rule and network set CIDRs: some endpoint addresses (10.65.0.10 is w0,
/// .12-.13 w2-w3, .16-.23 w6-w7 and added endpoints), all of them, the
/// external ranges, everything.
const CIDRS: &[&str] = &[
    "10.65.0.10/32",
    "10.65.0.12/31",
    "10.65.0.16/29",
    "10.65.0.0/24",
    "198.51.100.0/24",
    "203.0.113.9/32",
    "0.0.0.0/0",
];

/// Kubernetes ipBlocks: (cidr, except), each except strictly inside.
const IP_BLOCKS: &[(&str, &[&str])] = &[
    ("10.65.0.0/24", &["10.65.0.10/32"]),
    ("10.65.0.0/24", &["10.65.0.12/31", "10.65.0.16/29"]),
    ("0.0.0.0/0", &["10.65.0.0/24"]),
    ("198.51.100.0/24", &[]),
    ("10.65.0.8/29", &["10.65.0.12/31"]),
];

/// Service account names, and the labels their `ksa.` profiles give them.
const ACCOUNTS: &[&str] = &["sa0", "sa1"];
const ACCOUNT_LABEL_KEYS: KeySpace = &[("tier", &["gold", "silver"])];
/// What service account selectors may mention.
const ACCOUNT_KEYS: KeySpace = &[
    ("tier", &["gold", "silver"]),
    ("projectcalico.org/name", &["sa0", "sa1"]),
];
/// Services named by EndpointSlices and rules.
const SERVICES: &[&str] = &["svc0", "svc1"];
/// Last octets of EndpointSlice addresses: endpoints' (w0-w7, x0-x1) and
/// one that belongs to no endpoint.
const SLICE_OCTETS: &[u8] = &[10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 99];
/// EndpointSlice ports: (name, protocol, port).
const SLICE_PORTS: &[(&str, &str, u16)] =
    &[("http", "TCP", 8080), ("", "TCP", 80), ("dns", "UDP", 53)];
/// ICMP (type, code) matches; packets are echo requests (8/0) and
/// fragmentation-needed (3/4).
const ICMP_MATCHES: &[(u8, Option<u8>)] = &[
    (8, None),
    (8, Some(0)),
    (3, None),
    (3, Some(4)),
    (3, Some(1)),
    (0, None),
];

const TIER_ORDERS: &[Option<f64>] = &[None, Some(1.0), Some(100.0), Some(1e6), Some(2e6)];
const POLICY_ORDERS: &[Option<f64>] = &[None, Some(0.5), Some(10.0), Some(100.0), Some(1000.0)];

// ------------------------------------------------------------------- model

/// A selector of the generated grammar.
#[derive(Clone, Debug)]
enum Sel {
    /// The empty string (Calico: unset). Only ever at the top level.
    Empty,
    All,
    Global,
    Eq(&'static str, &'static str),
    Ne(&'static str, &'static str),
    In(&'static str, Vec<&'static str>),
    NotIn(&'static str, Vec<&'static str>),
    Has(&'static str),
    NotHas(&'static str),
    And(Box<Sel>, Box<Sel>),
    Or(Box<Sel>, Box<Sel>),
}

impl fmt::Display for Sel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &[&str]| {
            vs.iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Sel::Empty => Ok(()),
            Sel::All => f.write_str("all()"),
            Sel::Global => f.write_str("global()"),
            Sel::Eq(k, v) => write!(f, "{k} == '{v}'"),
            Sel::Ne(k, v) => write!(f, "{k} != '{v}'"),
            Sel::In(k, vs) => write!(f, "{k} in {{{}}}", set(vs)),
            Sel::NotIn(k, vs) => write!(f, "{k} not in {{{}}}", set(vs)),
            Sel::Has(k) => write!(f, "has({k})"),
            Sel::NotHas(k) => write!(f, "!has({k})"),
            Sel::And(a, b) => write!(f, "({a}) && ({b})"),
            Sel::Or(a, b) => write!(f, "({a}) || ({b})"),
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NamedPort {
    Http,
    Dns,
}

#[derive(Clone, Debug)]
struct Namespace {
    exists: bool,
    labels: Labels,
}

#[derive(Clone, Debug)]
struct Endpoint {
    name: String,
    /// Index into the namespaces (modulo their number).
    ns: usize,
    local: bool,
    labels: Labels,
    /// Last octet of 10.65.0.x.
    ip: u8,
    port: Option<NamedPort>,
    /// Index into [`ACCOUNTS`].
    account: Option<usize>,
}

/// A `ksa.NS.SA` profile carrying a service account's labels.
#[derive(Clone, Debug)]
struct Account {
    ns: usize,
    account: usize,
    labels: Labels,
}

/// An EndpointSlice of a Service.
#[derive(Clone, Debug)]
struct SliceDef {
    ns: usize,
    /// Index into [`SERVICES`].
    service: usize,
    octets: Vec<u8>,
    ports: Vec<(&'static str, &'static str, u16)>,
}

#[derive(Clone, Debug)]
struct TierDef {
    order: Option<f64>,
    pass: bool,
}

#[derive(Clone, Debug)]
struct NetSet {
    name: String,
    /// A NetworkSet in this namespace (index), or a GlobalNetworkSet.
    ns: Option<usize>,
    labels: Labels,
    nets: Vec<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Types {
    Ingress,
    Egress,
    Both,
}

impl Types {
    fn ingress(self) -> bool {
        self != Types::Egress
    }
    fn egress(self) -> bool {
        self != Types::Ingress
    }
    fn yaml(self) -> &'static str {
        match self {
            Types::Ingress => "[Ingress]",
            Types::Egress => "[Egress]",
            Types::Both => "[Ingress, Egress]",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, Debug)]
enum PortDef {
    Num(u16),
    Range(u16, u16),
    Named(&'static str),
}

impl fmt::Display for PortDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortDef::Num(n) => write!(f, "{n}"),
            PortDef::Range(a, b) => write!(f, "'{a}:{b}'"),
            PortDef::Named(n) => f.write_str(n),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct EntityDef {
    selector: Option<Sel>,
    not_selector: Option<Sel>,
    namespace_selector: Option<Sel>,
    nets: Vec<&'static str>,
    not_nets: Vec<&'static str>,
    ports: Vec<PortDef>,
    not_ports: Vec<PortDef>,
    /// A Service (index into [`SERVICES`]) and its namespace, when named.
    services: Option<(usize, Option<usize>)>,
    /// Service account names (indexes into [`ACCOUNTS`]) and selector.
    accounts: Option<(Vec<usize>, Option<Sel>)>,
}

#[derive(Clone, Debug)]
struct RuleDef {
    action: &'static str,
    protocol: Option<Proto>,
    not_protocol: Option<Proto>,
    ip_version: Option<u8>,
    /// ICMP and notICMP (type, code), with protocol ICMP only.
    icmp: Option<(u8, Option<u8>)>,
    not_icmp: Option<(u8, Option<u8>)>,
    /// A layer-7 match (methods).
    http: bool,
    source: EntityDef,
    destination: EntityDef,
}

/// A v3 NetworkPolicy (`global: false`) or GlobalNetworkPolicy.
#[derive(Clone, Debug)]
struct CalicoPolicy {
    global: bool,
    /// Namespace index, for a NetworkPolicy.
    ns: usize,
    /// GlobalNetworkPolicy only.
    namespace_selector: Option<Sel>,
    service_account_selector: Option<Sel>,
    /// 0: default (omitted), 1: t1, 2: t2 (default when that tier does not
    /// exist).
    tier: usize,
    order: Option<f64>,
    selector: Sel,
    types: Option<Types>,
    ingress: Vec<RuleDef>,
    egress: Vec<RuleDef>,
}

/// A Kubernetes label selector: matchLabels and matchExpressions.
#[derive(Clone, Debug, Default)]
struct LabelSel {
    labels: Labels,
    exprs: Vec<(&'static str, &'static str, Vec<&'static str>)>,
}

#[derive(Clone, Debug)]
enum K8sPeer {
    Pods {
        pod: Option<LabelSel>,
        ns: Option<LabelSel>,
    },
    IpBlock(usize),
}

#[derive(Clone, Debug)]
struct K8sPort {
    protocol: Option<&'static str>,
    port: Option<PortDef>,
}

#[derive(Clone, Debug)]
struct K8sRule {
    peers: Option<Vec<K8sPeer>>,
    ports: Option<Vec<K8sPort>>,
}

#[derive(Clone, Debug)]
struct K8sPolicy {
    ns: usize,
    pod_selector: LabelSel,
    policy_types: Option<Types>,
    ingress: Option<Vec<K8sRule>>,
    egress: Option<Vec<K8sRule>>,
}

#[derive(Clone, Debug)]
enum PolicySpec {
    Calico(CalicoPolicy),
    K8s(K8sPolicy),
}

#[derive(Clone, Debug)]
struct Policy {
    name: String,
    spec: PolicySpec,
}

#[derive(Clone, Debug)]
struct Model {
    namespaces: Vec<Namespace>,
    endpoints: Vec<Endpoint>,
    tiers: [Option<TierDef>; 2],
    /// A Tier resource for `default` (Calico's order and action unless it
    /// says otherwise).
    default_tier: Option<TierDef>,
    netsets: Vec<NetSet>,
    policies: Vec<Policy>,
    accounts: Vec<Account>,
    slices: Vec<SliceDef>,
    /// For fresh names of added items.
    next: usize,
}

// -------------------------------------------------------------- strategies

fn leaf(keys: KeySpace) -> BoxedStrategy<Sel> {
    select(keys)
        .prop_flat_map(|(k, vals)| {
            prop_oneof![
                select(vals).prop_map(move |v| Sel::Eq(k, v)),
                select(vals).prop_map(move |v| Sel::Ne(k, v)),
                subsequence(vals, 1..=2).prop_map(move |vs| Sel::In(k, vs)),
                subsequence(vals, 1..=2).prop_map(move |vs| Sel::NotIn(k, vs)),
                Just(Sel::Has(k)),
                Just(Sel::NotHas(k)),
            ]
        })
        .boxed()
}

/// Whether `AGREEMENT_SKIP` names this corner (see the module doc).
fn skip(what: &str) -> bool {
    std::env::var("AGREEMENT_SKIP").is_ok_and(|v| v.split(',').any(|w| w == what))
}

/// A selector over `keys`; `global` allows `global()` leaves (namespace
/// selectors).
fn selector(keys: KeySpace, global: bool) -> BoxedStrategy<Sel> {
    selector_with(keys, global, true)
}

/// [`selector`], with or without `all()` leaves.
fn selector_with(keys: KeySpace, global: bool, all: bool) -> BoxedStrategy<Sel> {
    let all_w = u32::from(all);
    let base = if global {
        prop_oneof![all_w => Just(Sel::All), 1 => Just(Sel::Global), 8 => leaf(keys)].boxed()
    } else {
        prop_oneof![all_w => Just(Sel::All), 6 => leaf(keys)].boxed()
    };
    base.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Sel::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Sel::Or(Box::new(a), Box::new(b))),
        ]
    })
    .boxed()
}

/// A rule side's selector field: rarely the empty string.
fn rule_selector(keys: KeySpace, global: bool) -> BoxedStrategy<Sel> {
    let all = !(global && skip("rule-ns-all"));
    let empty = u32::from(!skip("empty-selector"));
    prop_oneof![20 => selector_with(keys, global, all), empty => Just(Sel::Empty)].boxed()
}

fn labels(keys: KeySpace) -> BoxedStrategy<Labels> {
    let per_key: Vec<BoxedStrategy<Option<(&'static str, &'static str)>>> = keys
        .iter()
        .map(|&(k, vals)| prop::option::of(select(vals).prop_map(move |v| (k, v))).boxed())
        .collect();
    per_key
        .prop_map(|v| v.into_iter().flatten().collect())
        .boxed()
}

fn named_port() -> BoxedStrategy<Option<NamedPort>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(NamedPort::Http)),
        1 => Just(Some(NamedPort::Dns)),
    ]
    .boxed()
}

fn tier_def() -> BoxedStrategy<TierDef> {
    (select(TIER_ORDERS), any::<bool>())
        .prop_map(|(order, pass)| TierDef { order, pass })
        .boxed()
}

fn cidrs() -> BoxedStrategy<Vec<&'static str>> {
    prop::collection::vec(select(CIDRS), 1..=2).boxed()
}

fn netset_ns() -> BoxedStrategy<Option<usize>> {
    prop::option::weighted(0.3, 0..3usize).boxed()
}

fn port_def() -> BoxedStrategy<PortDef> {
    prop_oneof![
        select(&[53u16, 80, 8080, 9000, 40000][..]).prop_map(PortDef::Num),
        select(&[(1u16, 1024u16), (8000, 9000), (9000, 9999), (30000, 50000)][..])
            .prop_map(|(a, b)| PortDef::Range(a, b)),
        select(&["http", "dns"][..]).prop_map(PortDef::Named),
    ]
    .boxed()
}

fn ports() -> BoxedStrategy<Vec<PortDef>> {
    prop::collection::vec(port_def(), 1..=2).boxed()
}

fn accounts_match() -> BoxedStrategy<(Vec<usize>, Option<Sel>)> {
    (
        subsequence(vec![0usize, 1], 0..=2),
        prop::option::weighted(0.6, selector(ACCOUNT_KEYS, false)),
    )
        .boxed()
}

fn entity() -> BoxedStrategy<EntityDef> {
    (
        prop::option::weighted(0.4, rule_selector(POD_KEYS, false)),
        prop::option::weighted(0.15, rule_selector(POD_KEYS, false)),
        prop::option::weighted(0.2, rule_selector(NS_KEYS, true)),
        prop::option::weighted(0.2, cidrs()),
        prop::option::weighted(0.15, cidrs()),
        prop::option::weighted(0.35, ports()),
        prop::option::weighted(0.15, ports()),
        prop::option::weighted(
            0.12,
            (0..SERVICES.len(), prop::option::weighted(0.4, 0..3usize)),
        ),
        prop::option::weighted(0.15, accounts_match()),
    )
        .prop_map(
            |(
                selector,
                not_selector,
                namespace_selector,
                nets,
                not_nets,
                ports,
                not_ports,
                services,
                accounts,
            )| {
                let mut e = EntityDef {
                    selector,
                    not_selector,
                    namespace_selector,
                    nets: nets.unwrap_or_default(),
                    not_nets: not_nets.unwrap_or_default(),
                    ports: ports.unwrap_or_default(),
                    not_ports: not_ports.unwrap_or_default(),
                    services,
                    accounts,
                };
                // Validation: services stand instead of nets and selectors.
                if e.services.is_some() {
                    e.selector = None;
                    e.namespace_selector = None;
                    e.nets.clear();
                }
                e
            },
        )
        .boxed()
}

fn icmp_match() -> BoxedStrategy<(u8, Option<u8>)> {
    select(ICMP_MATCHES).boxed()
}

fn rule() -> BoxedStrategy<RuleDef> {
    (
        prop_oneof![
            4 => Just("Allow"),
            3 => Just("Deny"),
            2 => Just("Pass"),
            1 => Just("Log"),
        ],
        prop_oneof![
            3 => Just(None),
            3 => Just(Some(Proto::Tcp)),
            2 => Just(Some(Proto::Udp)),
            1 => Just(Some(Proto::Icmp)),
        ],
        entity(),
        entity(),
        prop::option::weighted(0.1, select(&[Proto::Tcp, Proto::Udp, Proto::Icmp][..])),
        prop::option::weighted(0.1, select(&[4u8, 6][..])),
        prop::option::weighted(0.5, icmp_match()),
        prop::option::weighted(0.3, icmp_match()),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                action,
                protocol,
                source,
                mut destination,
                not_protocol,
                ip_version,
                icmp,
                not_icmp,
                http,
            )| {
                let is_icmp = matches!(protocol, Some(Proto::Icmp));
                // Validation: a destination Service brings its own ports.
                if destination.services.is_some() {
                    destination.ports.clear();
                    destination.not_ports.clear();
                }
                // Validation: nets must be of the rule's IP version.
                let has_nets = [&source, &destination]
                    .iter()
                    .any(|e| !e.nets.is_empty() || !e.not_nets.is_empty());
                RuleDef {
                    action,
                    protocol,
                    not_protocol,
                    ip_version: ip_version.filter(|v| *v == 4 || !has_nets),
                    icmp: icmp.filter(|_| is_icmp),
                    not_icmp: not_icmp.filter(|_| is_icmp),
                    http,
                    source,
                    destination,
                }
            },
        )
        .boxed()
}

fn types() -> BoxedStrategy<Option<Types>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Types::Ingress)),
        1 => Just(Some(Types::Egress)),
        1 => Just(Some(Types::Both)),
    ]
    .boxed()
}

fn calico_policy() -> BoxedStrategy<CalicoPolicy> {
    (
        any::<bool>(),
        0..3usize,
        // No `global()` here: see "Excluded corner" in the module doc.
        prop::option::weighted(0.3, selector(NS_KEYS, false)),
        0..3usize,
        select(POLICY_ORDERS),
        selector(POD_KEYS, false),
        types(),
        prop::collection::vec(rule(), 0..=3),
        prop::collection::vec(rule(), 0..=3),
        prop::option::weighted(0.1, selector(ACCOUNT_KEYS, false)),
    )
        .prop_map(
            |(
                global,
                ns,
                namespace_selector,
                tier,
                order,
                selector,
                types,
                ingress,
                egress,
                service_account_selector,
            )| {
                CalicoPolicy {
                    global,
                    ns,
                    namespace_selector,
                    service_account_selector,
                    tier,
                    order,
                    selector,
                    types,
                    ingress,
                    egress,
                }
            },
        )
        .boxed()
}

fn label_sel(keys: KeySpace) -> BoxedStrategy<LabelSel> {
    let expr = select(keys).prop_flat_map(|(k, vals)| {
        prop_oneof![
            subsequence(vals, 1..=2).prop_map(move |vs| (k, "In", vs)),
            subsequence(vals, 1..=2).prop_map(move |vs| (k, "NotIn", vs)),
            Just((k, "Exists", Vec::new())),
            Just((k, "DoesNotExist", Vec::new())),
        ]
    });
    (
        prop::collection::vec(
            select(keys).prop_flat_map(|(k, vals)| select(vals).prop_map(move |v| (k, v))),
            0..=1,
        ),
        prop::collection::vec(expr, 0..=1),
    )
        .prop_map(|(mut labels, exprs)| {
            labels.dedup_by_key(|(k, _)| *k);
            LabelSel { labels, exprs }
        })
        .boxed()
}

fn k8s_peer() -> BoxedStrategy<K8sPeer> {
    prop_oneof![
        3 => (
            prop::option::of(label_sel(POD_KEYS)),
            prop::option::of(label_sel(NS_LABEL_KEYS).prop_filter("AGREEMENT_SKIP=k8s-empty-ns", |l| {
                !(skip("k8s-empty-ns") && l.labels.is_empty() && l.exprs.is_empty())
            })),
        )
            .prop_map(|(pod, ns)| match (pod, ns) {
                (None, None) => K8sPeer::Pods {
                    pod: Some(LabelSel::default()),
                    ns: None,
                },
                (pod, ns) => K8sPeer::Pods { pod, ns },
            }),
        1 => (0..IP_BLOCKS.len()).prop_map(K8sPeer::IpBlock),
    ]
    .boxed()
}

fn k8s_port() -> BoxedStrategy<K8sPort> {
    (
        prop_oneof![Just(None), Just(Some("TCP")), Just(Some("UDP"))],
        prop::option::weighted(0.8, port_def()),
    )
        .prop_map(|(protocol, port)| K8sPort { protocol, port })
        .boxed()
}

fn k8s_rule() -> BoxedStrategy<K8sRule> {
    (
        prop::option::weighted(0.8, prop::collection::vec(k8s_peer(), 0..=2)),
        prop::option::weighted(0.6, prop::collection::vec(k8s_port(), 0..=2)),
    )
        .prop_map(|(peers, ports)| K8sRule { peers, ports })
        .boxed()
}

fn k8s_policy() -> BoxedStrategy<K8sPolicy> {
    (
        0..3usize,
        label_sel(POD_KEYS),
        types(),
        prop::option::weighted(0.8, prop::collection::vec(k8s_rule(), 0..=2)),
        prop::option::weighted(0.5, prop::collection::vec(k8s_rule(), 0..=2)),
    )
        .prop_map(
            |(ns, pod_selector, policy_types, ingress, egress)| K8sPolicy {
                ns,
                pod_selector,
                policy_types,
                ingress,
                egress,
            },
        )
        .boxed()
}

fn policy_spec() -> BoxedStrategy<PolicySpec> {
    prop_oneof![
        3 => calico_policy().prop_map(PolicySpec::Calico),
        1 => k8s_policy().prop_map(PolicySpec::K8s),
    ]
    .boxed()
}

fn model() -> BoxedStrategy<Model> {
    (
        prop::collection::vec(labels(NS_LABEL_KEYS), 2..=3),
        prop::collection::vec(
            (
                0..3usize,
                any::<bool>(),
                labels(POD_KEYS),
                named_port(),
                account(),
            ),
            3..=8,
        ),
        (
            prop::option::weighted(0.4, tier_def()),
            prop::option::weighted(0.3, tier_def()),
            prop::option::weighted(0.15, tier_def()),
        ),
        prop::collection::vec((netset_ns(), labels(POD_KEYS), cidrs()), 0..=2),
        prop::collection::vec(policy_spec(), 1..=5),
        prop::collection::vec(account_def(), 0..=3),
        prop::collection::vec(slice_def(), 0..=3),
    )
        .prop_map(
            |(nss, eps, (t1, t2, default_tier), sets, pols, accounts, slices)| Model {
                namespaces: nss
                    .into_iter()
                    .map(|labels| Namespace {
                        exists: true,
                        labels,
                    })
                    .collect(),
                endpoints: eps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ns, local, labels, port, account))| Endpoint {
                        name: format!("w{i}"),
                        ns,
                        local,
                        labels,
                        ip: 10 + i as u8,
                        port,
                        account,
                    })
                    .collect(),
                tiers: [t1, t2],
                default_tier,
                netsets: sets
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ns, labels, nets))| NetSet {
                        name: format!("s{i}"),
                        ns,
                        labels,
                        nets,
                    })
                    .collect(),
                policies: pols
                    .into_iter()
                    .enumerate()
                    .map(|(i, spec)| Policy {
                        name: format!("p{i}"),
                        spec,
                    })
                    .collect(),
                accounts,
                slices,
                next: 0,
            },
        )
        .boxed()
}

fn account() -> BoxedStrategy<Option<usize>> {
    prop::option::weighted(0.5, 0..ACCOUNTS.len()).boxed()
}

fn account_def() -> BoxedStrategy<Account> {
    (0..3usize, 0..ACCOUNTS.len(), labels(ACCOUNT_LABEL_KEYS))
        .prop_map(|(ns, account, labels)| Account {
            ns,
            account,
            labels,
        })
        .boxed()
}

fn slice_def() -> BoxedStrategy<SliceDef> {
    (
        0..3usize,
        0..SERVICES.len(),
        subsequence(SLICE_OCTETS, 0..=4),
        subsequence(SLICE_PORTS, 1..=2),
    )
        .prop_map(|(ns, service, octets, ports)| SliceDef {
            ns,
            service,
            octets,
            ports,
        })
        .boxed()
}

/// One change from state A towards state B.
#[derive(Clone, Debug)]
enum Mutation {
    RelabelEndpoint(Index, Labels),
    MoveEndpoint(Index),
    EndpointPort(Index, Option<NamedPort>),
    EndpointNamespace(Index, usize),
    RemoveEndpoint(Index),
    AddEndpoint(usize, bool, Labels, Option<NamedPort>),
    RelabelNamespace(Index, Labels),
    ToggleNamespace(Index),
    PolicySelector(Index, Sel, LabelSel),
    PolicyOrder(Index, Option<f64>),
    PolicyTier(Index, usize),
    ReplacePolicy(Index, PolicySpec),
    RemovePolicy(Index),
    AddPolicy(PolicySpec),
    SetTier(usize, Option<TierDef>),
    AddNetSet(Option<usize>, Labels, Vec<&'static str>),
    ChangeNetSet(Index, Labels, Vec<&'static str>),
    RemoveNetSet(Index),
    EndpointAccount(Index, Option<usize>),
    SetAccount(Index, Labels),
    AddSlice(SliceDef),
    ChangeSlice(Index, Vec<u8>),
    RemoveSlice(Index),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        3 => (any::<Index>(), labels(POD_KEYS)).prop_map(|(i, l)| Mutation::RelabelEndpoint(i, l)),
        2 => any::<Index>().prop_map(Mutation::MoveEndpoint),
        1 => (any::<Index>(), named_port()).prop_map(|(i, p)| Mutation::EndpointPort(i, p)),
        1 => (any::<Index>(), 0..3usize).prop_map(|(i, n)| Mutation::EndpointNamespace(i, n)),
        1 => any::<Index>().prop_map(Mutation::RemoveEndpoint),
        1 => (0..3usize, any::<bool>(), labels(POD_KEYS), named_port())
            .prop_map(|(n, l, lb, p)| Mutation::AddEndpoint(n, l, lb, p)),
        2 => (any::<Index>(), labels(NS_LABEL_KEYS))
            .prop_map(|(i, l)| Mutation::RelabelNamespace(i, l)),
        1 => any::<Index>().prop_map(Mutation::ToggleNamespace),
        3 => (any::<Index>(), selector(POD_KEYS, false), label_sel(POD_KEYS))
            .prop_map(|(i, s, l)| Mutation::PolicySelector(i, s, l)),
        1 => (any::<Index>(), select(POLICY_ORDERS)).prop_map(|(i, o)| Mutation::PolicyOrder(i, o)),
        1 => (any::<Index>(), 0..3usize).prop_map(|(i, t)| Mutation::PolicyTier(i, t)),
        2 => (any::<Index>(), policy_spec()).prop_map(|(i, p)| Mutation::ReplacePolicy(i, p)),
        2 => any::<Index>().prop_map(Mutation::RemovePolicy),
        2 => policy_spec().prop_map(Mutation::AddPolicy),
        2 => (0..3usize, prop::option::of(tier_def())).prop_map(|(i, t)| Mutation::SetTier(i, t)),
        1 => (netset_ns(), labels(POD_KEYS), cidrs()).prop_map(|(n, l, c)| Mutation::AddNetSet(n, l, c)),
        1 => (any::<Index>(), labels(POD_KEYS), cidrs())
            .prop_map(|(i, l, c)| Mutation::ChangeNetSet(i, l, c)),
        1 => any::<Index>().prop_map(Mutation::RemoveNetSet),
        1 => (any::<Index>(), account()).prop_map(|(i, a)| Mutation::EndpointAccount(i, a)),
        1 => (any::<Index>(), labels(ACCOUNT_LABEL_KEYS))
            .prop_map(|(i, l)| Mutation::SetAccount(i, l)),
        1 => slice_def().prop_map(Mutation::AddSlice),
        1 => (any::<Index>(), subsequence(SLICE_OCTETS, 0..=4))
            .prop_map(|(i, o)| Mutation::ChangeSlice(i, o)),
        1 => any::<Index>().prop_map(Mutation::RemoveSlice),
    ]
    .boxed()
}

/// How the updates of a transition reach the graph.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Batch,
    BatchReversed,
    SingleUpdates,
    SingleUpdatesReversed,
}

fn mode() -> impl Strategy<Value = Mode> {
    select(
        &[
            Mode::Batch,
            Mode::BatchReversed,
            Mode::SingleUpdates,
            Mode::SingleUpdatesReversed,
        ][..],
    )
}

impl Model {
    fn apply(&mut self, m: &Mutation) {
        let n_eps = self.endpoints.len();
        let n_pols = self.policies.len();
        let n_sets = self.netsets.len();
        match m {
            Mutation::RelabelEndpoint(i, l) if n_eps > 0 => {
                self.endpoints[i.index(n_eps)].labels = l.clone();
            }
            Mutation::MoveEndpoint(i) if n_eps > 0 => {
                let e = &mut self.endpoints[i.index(n_eps)];
                e.local = !e.local;
            }
            Mutation::EndpointPort(i, p) if n_eps > 0 => {
                self.endpoints[i.index(n_eps)].port = *p;
            }
            Mutation::EndpointNamespace(i, ns) if n_eps > 0 => {
                self.endpoints[i.index(n_eps)].ns = *ns;
            }
            Mutation::RemoveEndpoint(i) if n_eps > 0 => {
                self.endpoints.remove(i.index(n_eps));
            }
            Mutation::AddEndpoint(ns, local, labels, port) => {
                self.endpoints.push(Endpoint {
                    name: format!("x{}", self.next),
                    ns: *ns,
                    local: *local,
                    labels: labels.clone(),
                    ip: 20 + self.next as u8,
                    port: *port,
                    account: None,
                });
                self.next += 1;
            }
            Mutation::RelabelNamespace(i, l) => {
                let n = self.namespaces.len();
                self.namespaces[i.index(n)].labels = l.clone();
            }
            Mutation::ToggleNamespace(i) => {
                let n = self.namespaces.len();
                let ns = &mut self.namespaces[i.index(n)];
                ns.exists = !ns.exists;
            }
            Mutation::PolicySelector(i, s, l) if n_pols > 0 => {
                match &mut self.policies[i.index(n_pols)].spec {
                    PolicySpec::Calico(p) => p.selector = s.clone(),
                    PolicySpec::K8s(p) => p.pod_selector = l.clone(),
                }
            }
            Mutation::PolicyOrder(i, o) if n_pols > 0 => {
                if let PolicySpec::Calico(p) = &mut self.policies[i.index(n_pols)].spec {
                    p.order = *o;
                }
            }
            Mutation::PolicyTier(i, t) if n_pols > 0 => {
                if let PolicySpec::Calico(p) = &mut self.policies[i.index(n_pols)].spec {
                    p.tier = *t;
                }
            }
            Mutation::ReplacePolicy(i, spec) if n_pols > 0 => {
                self.policies[i.index(n_pols)].spec = spec.clone();
            }
            Mutation::RemovePolicy(i) if n_pols > 0 => {
                self.policies.remove(i.index(n_pols));
            }
            Mutation::AddPolicy(spec) => {
                self.policies.push(Policy {
                    name: format!("q{}", self.next),
                    spec: spec.clone(),
                });
                self.next += 1;
            }
            Mutation::SetTier(2, t) => self.default_tier = t.clone(),
            Mutation::SetTier(i, t) => self.tiers[*i % 2] = t.clone(),
            Mutation::AddNetSet(ns, labels, nets) => {
                self.netsets.push(NetSet {
                    name: format!("y{}", self.next),
                    ns: *ns,
                    labels: labels.clone(),
                    nets: nets.clone(),
                });
                self.next += 1;
            }
            Mutation::ChangeNetSet(i, labels, nets) if n_sets > 0 => {
                let s = &mut self.netsets[i.index(n_sets)];
                s.labels = labels.clone();
                s.nets = nets.clone();
            }
            Mutation::RemoveNetSet(i) if n_sets > 0 => {
                self.netsets.remove(i.index(n_sets));
            }
            Mutation::EndpointAccount(i, a) if n_eps > 0 => {
                self.endpoints[i.index(n_eps)].account = *a;
            }
            Mutation::SetAccount(i, labels) if !self.accounts.is_empty() => {
                let n = self.accounts.len();
                self.accounts[i.index(n)].labels = labels.clone();
            }
            Mutation::AddSlice(slice) => self.slices.push(slice.clone()),
            Mutation::ChangeSlice(i, octets) if !self.slices.is_empty() => {
                let n = self.slices.len();
                self.slices[i.index(n)].octets = octets.clone();
            }
            Mutation::RemoveSlice(i) if !self.slices.is_empty() => {
                let n = self.slices.len();
                self.slices.remove(i.index(n));
            }
            _ => {}
        }
    }

    fn ns_name(&self, i: usize) -> String {
        format!("ns{}", i % self.namespaces.len())
    }

    fn ip(e: &Endpoint) -> Ipv4Addr {
        Ipv4Addr::new(10, 65, 0, e.ip)
    }

    /// Every address packets are sent between, with whether it is a local
    /// endpoint.
    fn addresses(&self) -> Vec<(IpAddr, bool)> {
        self.endpoints
            .iter()
            .map(|e| (IpAddr::V4(Model::ip(e)), e.local))
            .chain(EXTERNAL.iter().map(|ip| (IpAddr::V4(*ip), false)))
            .collect()
    }

    // ---------------------------------------------------------- rendering

    fn yaml(&self) -> String {
        let mut out = String::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            if ns.exists {
                let _ = write!(
                    out,
                    "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{i}\n  labels: {}\n",
                    flow_labels(&ns.labels)
                );
            }
        }
        for e in &self.endpoints {
            let ns = self.ns_name(e.ns);
            let _ = write!(
                out,
                "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  \
                 name: {}\n  namespace: {ns}\n  labels: {}\nspec:\n  node: {}\n  \
                 interfaceName: cali-{}\n  ipNetworks: [{}/32]\n",
                e.name,
                flow_labels(&e.labels),
                if e.local { LOCAL } else { REMOTE },
                e.name,
                Model::ip(e),
            );
            match e.account {
                Some(a) => {
                    let _ = write!(
                        out,
                        "  profiles: [kns.{ns}, ksa.{ns}.{sa}]\n  serviceAccountName: {sa}\n",
                        sa = ACCOUNTS[a]
                    );
                }
                None => {
                    let _ = writeln!(out, "  profiles: [kns.{ns}]");
                }
            }
            match e.port {
                Some(NamedPort::Http) => {
                    out.push_str("  ports: [{name: http, protocol: TCP, port: 8080}]\n")
                }
                Some(NamedPort::Dns) => {
                    out.push_str("  ports: [{name: dns, protocol: UDP, port: 53}]\n")
                }
                None => {}
            }
        }
        let tiers = [
            ("t1", &self.tiers[0]),
            ("t2", &self.tiers[1]),
            ("default", &self.default_tier),
        ];
        for (name, t) in tiers {
            let Some(t) = t else { continue };
            let _ = write!(
                out,
                "---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: {}\nspec:\n  defaultAction: {}\n",
                name,
                if t.pass { "Pass" } else { "Deny" }
            );
            if let Some(o) = t
                .order
                .or((name == "default" && skip("default-tier-unset")).then_some(1e6))
            {
                let _ = writeln!(out, "  order: {o}");
            }
        }
        for s in &self.netsets {
            let kind = match s.ns {
                Some(ns) => format!("NetworkSet\nmetadata:\n  namespace: {}", self.ns_name(ns)),
                None => "GlobalNetworkSet\nmetadata:".to_string(),
            };
            let _ = write!(
                out,
                "---\napiVersion: projectcalico.org/v3\nkind: {kind}\n  \
                 name: {}\n  labels: {}\nspec:\n  nets: [{}]\n",
                s.name,
                flow_labels(&s.labels),
                s.nets.join(", ")
            );
        }
        let mut profiles = std::collections::BTreeSet::new();
        for a in &self.accounts {
            let name = format!("ksa.{}.{}", self.ns_name(a.ns), ACCOUNTS[a.account]);
            if !profiles.insert(name.clone()) {
                continue;
            }
            let labels: Vec<String> = a
                .labels
                .iter()
                .map(|(k, v)| format!("pcsa.{k}: {v}"))
                .collect();
            let _ = write!(
                out,
                "---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: {name}\n\
                 spec:\n  labelsToApply: {{{}}}\n",
                labels.join(", ")
            );
        }
        for (i, sl) in self.slices.iter().enumerate() {
            let endpoints: Vec<String> = sl
                .octets
                .iter()
                .map(|o| format!("{{addresses: [10.65.0.{o}]}}"))
                .collect();
            let ports: Vec<String> = sl
                .ports
                .iter()
                .map(|(name, proto, port)| {
                    format!("{{name: \"{name}\", protocol: {proto}, port: {port}}}")
                })
                .collect();
            let _ = write!(
                out,
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
                 name: slice{i}\n  namespace: {}\n  labels: {{kubernetes.io/service-name: {}}}\n\
                 addressType: IPv4\nendpoints: [{}]\nports: [{}]\n",
                self.ns_name(sl.ns),
                SERVICES[sl.service],
                endpoints.join(", "),
                ports.join(", ")
            );
        }
        for p in &self.policies {
            match &p.spec {
                PolicySpec::Calico(c) => self.calico_yaml(&p.name, c, &mut out),
                PolicySpec::K8s(k) => self.k8s_yaml(&p.name, k, &mut out),
            }
        }
        out
    }

    fn calico_yaml(&self, name: &str, p: &CalicoPolicy, out: &mut String) {
        out.push_str("---\napiVersion: projectcalico.org/v3\n");
        if p.global {
            let _ = write!(
                out,
                "kind: GlobalNetworkPolicy\nmetadata:\n  name: {name}\n"
            );
        } else {
            let _ = write!(
                out,
                "kind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {}\n",
                self.ns_name(p.ns)
            );
        }
        out.push_str("spec:\n");
        if p.tier > 0 && self.tiers[p.tier - 1].is_some() {
            let _ = writeln!(out, "  tier: t{}", p.tier);
        }
        if let Some(o) = p.order {
            let _ = writeln!(out, "  order: {o}");
        }
        let _ = writeln!(out, "  selector: \"{}\"", p.selector);
        if p.global
            && let Some(ns) = &p.namespace_selector
        {
            let _ = writeln!(out, "  namespaceSelector: \"{ns}\"");
        }
        if let Some(sa) = &p.service_account_selector {
            let _ = writeln!(out, "  serviceAccountSelector: \"{sa}\"");
        }
        if let Some(t) = p.types {
            let _ = writeln!(out, "  types: {}", t.yaml());
        }
        for (dir, rules, on) in [
            ("ingress", &p.ingress, p.types.is_none_or(Types::ingress)),
            ("egress", &p.egress, p.types.is_none_or(Types::egress)),
        ] {
            if rules.is_empty() || !on {
                continue;
            }
            let _ = writeln!(out, "  {dir}:");
            for r in rules {
                rule_yaml(r, out);
            }
        }
    }

    fn k8s_yaml(&self, name: &str, p: &K8sPolicy, out: &mut String) {
        let _ = write!(
            out,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
             namespace: {}\nspec:\n  podSelector: {}\n",
            self.ns_name(p.ns),
            flow_label_sel(&p.pod_selector)
        );
        if let Some(t) = p.policy_types {
            let _ = writeln!(out, "  policyTypes: {}", t.yaml());
        }
        for (dir, peer_field, rules) in
            [("ingress", "from", &p.ingress), ("egress", "to", &p.egress)]
        {
            let Some(rules) = rules else { continue };
            if rules.is_empty() {
                let _ = writeln!(out, "  {dir}: []");
                continue;
            }
            let _ = writeln!(out, "  {dir}:");
            for r in rules {
                let mut fields = Vec::new();
                if let Some(peers) = &r.peers {
                    let peers: Vec<String> = peers
                        .iter()
                        .map(|peer| match peer {
                            K8sPeer::Pods { pod, ns } => {
                                let mut f = Vec::new();
                                if let Some(s) = pod {
                                    f.push(format!("podSelector: {}", flow_label_sel(s)));
                                }
                                if let Some(s) = ns {
                                    f.push(format!("namespaceSelector: {}", flow_label_sel(s)));
                                }
                                format!("{{{}}}", f.join(", "))
                            }
                            K8sPeer::IpBlock(i) => {
                                let (cidr, except) = IP_BLOCKS[*i];
                                format!(
                                    "{{ipBlock: {{cidr: {cidr}, except: [{}]}}}}",
                                    except.join(", ")
                                )
                            }
                        })
                        .collect();
                    fields.push(format!("{peer_field}: [{}]", peers.join(", ")));
                }
                if let Some(ports) = &r.ports {
                    let ports: Vec<String> = ports
                        .iter()
                        .map(|p| {
                            let mut f = Vec::new();
                            if let Some(proto) = p.protocol {
                                f.push(format!("protocol: {proto}"));
                            }
                            match p.port {
                                Some(PortDef::Num(n)) => f.push(format!("port: {n}")),
                                Some(PortDef::Range(a, b)) => {
                                    f.push(format!("port: {a}, endPort: {b}"));
                                }
                                Some(PortDef::Named(n)) => f.push(format!("port: {n}")),
                                None => {}
                            }
                            format!("{{{}}}", f.join(", "))
                        })
                        .collect();
                    fields.push(format!("ports: [{}]", ports.join(", ")));
                }
                let _ = writeln!(out, "  - {{{}}}", fields.join(", "));
            }
        }
    }
}

fn flow_labels(labels: &Labels) -> String {
    let items: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", items.join(", "))
}

fn flow_label_sel(s: &LabelSel) -> String {
    let mut f = Vec::new();
    if !s.labels.is_empty() {
        f.push(format!("matchLabels: {}", flow_labels(&s.labels)));
    }
    if !s.exprs.is_empty() {
        let exprs: Vec<String> = s
            .exprs
            .iter()
            .map(|(k, op, vals)| {
                if vals.is_empty() {
                    format!("{{key: {k}, operator: {op}}}")
                } else {
                    format!(
                        "{{key: {k}, operator: {op}, values: [{}]}}",
                        vals.join(", ")
                    )
                }
            })
            .collect();
        f.push(format!("matchExpressions: [{}]", exprs.join(", ")));
    }
    format!("{{{}}}", f.join(", "))
}

fn rule_yaml(r: &RuleDef, out: &mut String) {
    let _ = writeln!(out, "  - action: {}", r.action);
    let with_ports = match r.protocol {
        Some(Proto::Tcp) => {
            out.push_str("    protocol: TCP\n");
            true
        }
        Some(Proto::Udp) => {
            out.push_str("    protocol: UDP\n");
            true
        }
        Some(Proto::Icmp) => {
            out.push_str("    protocol: ICMP\n");
            false
        }
        None => false,
    };
    if let Some(p) = r.not_protocol {
        let name = match p {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Icmp => "ICMP",
        };
        let _ = writeln!(out, "    notProtocol: {name}");
    }
    if let Some(v) = r.ip_version {
        let _ = writeln!(out, "    ipVersion: {v}");
    }
    for (field, m) in [("icmp", r.icmp), ("notICMP", r.not_icmp)] {
        match m {
            Some((t, Some(c))) => {
                let _ = writeln!(out, "    {field}: {{type: {t}, code: {c}}}");
            }
            Some((t, None)) => {
                let _ = writeln!(out, "    {field}: {{type: {t}}}");
            }
            None => {}
        }
    }
    if r.http {
        out.push_str("    http: {methods: [GET]}\n");
    }
    for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
        let mut fields = Vec::new();
        for (name, sel) in [
            ("selector", &e.selector),
            ("notSelector", &e.not_selector),
            ("namespaceSelector", &e.namespace_selector),
        ] {
            if let Some(s) = sel {
                fields.push(format!("{name}: \"{s}\""));
            }
        }
        for (name, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
            if !nets.is_empty() {
                fields.push(format!("{name}: [{}]", nets.join(", ")));
            }
        }
        if let Some((svc, ns)) = e.services {
            match ns {
                Some(ns) => fields.push(format!(
                    "services: {{name: {}, namespace: ns{ns}}}",
                    SERVICES[svc]
                )),
                None => fields.push(format!("services: {{name: {}}}", SERVICES[svc])),
            }
        }
        if let Some((names, sel)) = &e.accounts {
            let mut f = Vec::new();
            if !names.is_empty() {
                let names: Vec<&str> = names.iter().map(|i| ACCOUNTS[*i]).collect();
                f.push(format!("names: [{}]", names.join(", ")));
            }
            if let Some(sel) = sel {
                f.push(format!("selector: \"{sel}\""));
            }
            fields.push(format!("serviceAccounts: {{{}}}", f.join(", ")));
        }
        if with_ports {
            for (name, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
                if !ports.is_empty() {
                    let ps: Vec<String> = ports.iter().map(ToString::to_string).collect();
                    fields.push(format!("{name}: [{}]", ps.join(", ")));
                }
            }
        }
        if !fields.is_empty() {
            let _ = writeln!(out, "    {side}:");
            for f in fields {
                let _ = writeln!(out, "      {f}");
            }
        }
    }
}

// ------------------------------------------------------------ the checks

fn load(yaml: &str) -> Result<Vec<Resource>, String> {
    manul_model::load("agreement.yaml", yaml.as_bytes())
        .into_result()
        .map(|v| v.into_iter().map(|l| l.resource).collect())
        .map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

fn by_key(resources: &[Resource]) -> BTreeMap<ResourceKey, Resource> {
    resources.iter().map(|r| (r.key(), r.clone())).collect()
}

/// Puts for new or changed keys, then deletes for removed ones.
fn transition(
    a: &BTreeMap<ResourceKey, Resource>,
    b: &BTreeMap<ResourceKey, Resource>,
) -> Vec<Update> {
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

fn puts(resources: &[Resource]) -> Vec<Update> {
    resources
        .iter()
        .map(|r| Update {
            key: r.key(),
            value: Some(r.clone()),
        })
        .collect()
}

fn apply_ops(d: &mut NullDriver, ops: &[Operation], context: &str) -> Result<(), TestCaseError> {
    d.apply(ops).map_err(|e| {
        TestCaseError::fail(format!(
            "{context}: the null driver refused the graph's batch: {e}\nbatch: {ops:#?}"
        ))
    })
}

/// A graph and a driver built from scratch: every resource as a put (in
/// document order or reversed), then `in_sync()`.
fn build(
    resources: &[Resource],
    reversed: bool,
    context: &str,
) -> Result<(CalcGraph, NullDriver), TestCaseError> {
    let mut g = CalcGraph::new(LOCAL);
    let mut d = NullDriver::default();
    let mut updates = puts(resources);
    if reversed {
        updates.reverse();
    }
    let mut ops = g.apply(updates);
    ops.extend(g.in_sync());
    apply_ops(&mut d, &ops, context)?;
    Ok((g, d))
}

/// The evaluator's copy of the state (see the module doc).
fn evaluator_state(resources: &[Resource]) -> ClusterState {
    let mut rs = resources.to_vec();
    for r in &mut rs {
        if let Resource::WorkloadEndpoint(o) = r
            && o.spec.node != LOCAL
        {
            o.metadata
                .labels
                .get_or_insert_default()
                .insert(REMOTE_LABEL.to_string(), "true".to_string());
        }
    }
    rs.extend(load(HELPER).expect("the helper resources load"));
    ClusterState::from_resources(rs)
}

/// The evaluator's form of a packet: ports only for TCP and UDP (the
/// evaluator refuses ports on other protocols), ICMP type and code for ICMP.
fn evaluator_packet(p: &Packet) -> evaluator::Packet {
    let ports = matches!(p.protocol, 6 | 17);
    evaluator::Packet {
        from: Peer::Ip(p.src),
        to: Peer::Ip(p.dst),
        protocol: p.protocol,
        src_port: ports.then_some(p.src_port),
        dst_port: ports.then_some(p.dst_port),
        icmp: p.icmp_type.map(|t| (t, p.icmp_code)),
    }
}

/// The packets judged in every state.
fn packets(addresses: &[(IpAddr, bool)]) -> Vec<Packet> {
    let mut out = Vec::new();
    for &(src, src_local) in addresses {
        for &(dst, dst_local) in addresses {
            if !src_local && !dst_local {
                continue;
            }
            for proto in [6u8, 17] {
                for port in DST_PORTS {
                    out.push(Packet::with_ports(proto, src, SRC_PORT, dst, port));
                }
            }
            out.push(Packet::icmp(src, dst, 8, 0));
            out.push(Packet::icmp(src, dst, 3, 4));
        }
    }
    out
}

fn describe(p: &Packet) -> String {
    match p.protocol {
        1 => format!(
            "ICMP {} -> {} type {} code {}",
            p.src,
            p.dst,
            p.icmp_type.unwrap_or_default(),
            p.icmp_code.unwrap_or_default()
        ),
        proto => format!(
            "{} {}:{} -> {}:{}",
            if proto == 6 { "TCP" } else { "UDP" },
            p.src,
            p.src_port,
            p.dst,
            p.dst_port
        ),
    }
}

/// Check 2: every packet judged alike by the driver and the evaluator.
fn check_agreement(
    d: &NullDriver,
    resources: &[Resource],
    addresses: &[(IpAddr, bool)],
    yaml: &str,
    context: &str,
) -> Result<(), TestCaseError> {
    let state = evaluator_state(resources);
    for dp_packet in packets(addresses) {
        let got = d.verdict(&dp_packet);
        let trace = state
            .trace_packet(&evaluator_packet(&dp_packet))
            .map_err(|e| {
                TestCaseError::fail(format!(
                    "{context}: the evaluator refused {}: {e}",
                    describe(&dp_packet)
                ))
            })?;
        let want = trace.verdict == evaluator::Verdict::Allow;
        if got.allowed != want {
            return Err(TestCaseError::fail(format!(
                "{context}: disagreement on {packet}\n\
                 dataplane (graph + null driver): {got_v}\n  {got_steps}\n\
                 evaluator (node1 sides only): {want_v}\n  {want_steps}\n\
                 state:\n{yaml}",
                packet = describe(&dp_packet),
                got_v = if got.allowed { "allow" } else { "deny" },
                got_steps = got.steps.join("\n  "),
                want_v = trace.verdict,
                want_steps = trace.steps.join("\n  "),
            )));
        }
    }
    Ok(())
}

fn diff_map<K: Debug + Ord, V: Debug + PartialEq>(
    what: &str,
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    out: &mut String,
) {
    for (k, v) in a {
        match b.get(k) {
            None => {
                let _ = writeln!(out, "{what} {k:?}: only in the incremental state: {v:?}");
            }
            Some(w) if w != v => {
                let _ = writeln!(out, "{what} {k:?}: incremental {v:?}\n  fresh {w:?}");
            }
            Some(_) => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            let _ = writeln!(out, "{what} {k:?}: only in the fresh state: {w:?}");
        }
    }
}

fn diff_states(a: &DesiredState, b: &DesiredState) -> String {
    let mut out = String::new();
    diff_map("ip set", &a.ip_sets, &b.ip_sets, &mut out);
    diff_map("policy", &a.policies, &b.policies, &mut out);
    diff_map("profile", &a.profiles, &b.profiles, &mut out);
    diff_map(
        "workload",
        &a.workload_endpoints,
        &b.workload_endpoints,
        &mut out,
    );
    diff_map("host", &a.host_endpoints, &b.host_endpoints, &mut out);
    diff_map("service", &a.services, &b.services, &mut out);
    if a.in_sync != b.in_sync {
        let _ = writeln!(
            out,
            "in_sync: incremental {} fresh {}",
            a.in_sync, b.in_sync
        );
    }
    out
}

fn run_case(
    a: &Model,
    mutations: &[Mutation],
    mode: Mode,
    initial_reversed: bool,
) -> Result<(), TestCaseError> {
    let mut b = a.clone();
    for m in mutations {
        b.apply(m);
    }
    let (yaml_a, yaml_b) = (a.yaml(), b.yaml());
    let ra = load(&yaml_a);
    let rb = load(&yaml_b);
    let (Ok(ra), Ok(rb)) = (ra, rb) else {
        return Err(TestCaseError::reject("a state does not load"));
    };

    // 1. State A from scratch.
    let (mut g, mut d) = build(&ra, initial_reversed, "state A: initial load")?;

    // 2. Agreement on A.
    check_agreement(&d, &ra, &a.addresses(), &yaml_a, "state A")?;

    // 3. A -> B.
    let mut updates = transition(&by_key(&ra), &by_key(&rb));
    if matches!(mode, Mode::BatchReversed | Mode::SingleUpdatesReversed) {
        updates.reverse();
    }
    let context = format!("transition A -> B ({mode:?})\nstate A:\n{yaml_a}\nstate B:\n{yaml_b}");
    match mode {
        Mode::Batch | Mode::BatchReversed => {
            let ops = g.apply(updates);
            apply_ops(&mut d, &ops, &context)?;
        }
        Mode::SingleUpdates | Mode::SingleUpdatesReversed => {
            for u in updates {
                let what = format!("{context}\nupdate of {}", u.key);
                let ops = g.apply([u]);
                apply_ops(&mut d, &ops, &what)?;
            }
        }
    }
    let (_, want) = build(&rb, false, "state B: fresh build")?;
    let diff = diff_states(d.state(), want.state());
    prop_assert!(
        diff.is_empty(),
        "{context}\nthe driver's state differs from a fresh build of B:\n{diff}"
    );
    check_agreement(
        &d,
        &rb,
        &b.addresses(),
        &yaml_b,
        "state B (after the transition)",
    )?;
    Ok(())
}

fn config() -> Config {
    let mut c = Config {
        failure_persistence: None,
        // Shrinking a failure stays within about half a minute.
        max_shrink_iters: 2048,
        max_shrink_time: 30_000,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn graph_agrees_with_evaluator(
        a in model(),
        mutations in prop::collection::vec(mutation(), 1..=3),
        mode in mode(),
        initial_reversed in any::<bool>(),
    ) {
        run_case(&a, &mutations, mode, initial_reversed)?;
    }
}

// ------------------------------------------------- minimal reproductions
//
// The smallest states the property found disagreeing, each with the verdict
// Calico gives. Both sides must give it.

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

/// Builds `yaml` from scratch and judges `packet` with the driver and with
/// the evaluator (node1 sides only): both must say `calico_allows`. The
/// error describes both answers.
fn judge(yaml: &str, packet: Packet, calico_allows: bool) -> Result<(), String> {
    let resources = load(yaml).map_err(|e| format!("the state does not load: {e}"))?;
    let (_, d) = build(&resources, false, "fresh build").map_err(|e| e.to_string())?;
    let got = d.verdict(&packet);
    let trace = evaluator_state(&resources)
        .trace_packet(&evaluator_packet(&packet))
        .map_err(|e| format!("the evaluator refused the packet: {e}"))?;
    let want = trace.verdict == evaluator::Verdict::Allow;
    if got.allowed == calico_allows && want == calico_allows {
        return Ok(());
    }
    let v = |b: bool| if b { "allow" } else { "deny" };
    Err(format!(
        "{}: Calico: {}\ndataplane (graph + null driver): {}\n  {}\n\
         evaluator (node1 sides only): {}\n  {}\nstate:\n{yaml}",
        describe(&packet),
        v(calico_allows),
        v(got.allowed),
        got.steps.join("\n  "),
        v(want),
        trace.steps.join("\n  "),
    ))
}

/// Panics with every error.
fn all_ok(results: impl IntoIterator<Item = Result<(), String>>) {
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

const NS0_W0: &str = "apiVersion: v1
kind: Namespace
metadata: {name: ns0}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w0, namespace: ns0}
spec: {node: node1, interfaceName: cali-w0, ipNetworks: [10.65.0.10/32], profiles: [kns.ns0]}
";

/// Calico translates `all()` in a rule's `namespaceSelector` to
/// `has(projectcalico.org/namespace)`: it selects namespaced things only,
/// never a GlobalNetworkSet (`global()` is for those).
#[test]
fn rule_namespace_selector_all_does_not_select_global_network_sets() {
    let yaml = format!(
        "{NS0_W0}---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {{name: s0}}
spec: {{nets: [198.51.100.0/24]}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: p0, namespace: ns0}}
spec:
  selector: all()
  ingress:
  - action: Allow
    source: {{namespaceSelector: all()}}
"
    );
    all_ok([judge(
        &yaml,
        Packet::tcp(ip("198.51.100.7"), SRC_PORT, ip("10.65.0.10"), 80),
        false,
    )]);
}

/// Calico treats an empty `selector`, `notSelector` or `namespaceSelector`
/// in a rule as unset (Go's zero value): `destination: {selector: ""}`
/// matches every destination, and does not limit it to the policy's
/// namespace.
#[test]
fn empty_rule_selectors_are_unset() {
    all_ok(
        ["selector", "notSelector", "namespaceSelector"].map(|field| {
            let yaml = format!(
                "{NS0_W0}---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: p0, namespace: ns0}}
spec:
  selector: all()
  egress:
  - action: Allow
    destination: {{{field}: ''}}
"
            );
            judge(
                &yaml,
                Packet::tcp(ip("10.65.0.10"), SRC_PORT, ip("198.51.100.7"), 80),
                true,
            )
        }),
    );
}

/// Kubernetes: a peer with `namespaceSelector: {}` selects pods in every
/// namespace (Calico converts it to `namespaceSelector: all()`).
#[test]
fn kubernetes_empty_namespace_selector_selects_every_namespace() {
    let yaml = format!(
        "{NS0_W0}---
apiVersion: v1
kind: Namespace
metadata: {{name: ns1}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: w1, namespace: ns1}}
spec: {{node: node2, interfaceName: cali-w1, ipNetworks: [10.65.0.11/32], profiles: [kns.ns1]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p0, namespace: ns0}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{}}}}]
"
    );
    all_ok([judge(
        &yaml,
        Packet::tcp(ip("10.65.0.11"), SRC_PORT, ip("10.65.0.10"), 80),
        true,
    )]);
}

/// The `default` tier's order is 1,000,000 in Calico (a `default` Tier with
/// another order is refused there); a Tier resource named `default` that
/// omits `order` does not move it after the tiers with larger orders.
#[test]
fn default_tier_without_order_keeps_its_order() {
    let yaml = format!(
        "{NS0_W0}---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {{name: default}}
spec: {{defaultAction: Deny}}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {{name: t1}}
spec: {{order: 2000000}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: allow-all}}
spec:
  selector: all()
  ingress: [{{action: Allow}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: deny-all}}
spec:
  tier: t1
  selector: all()
  ingress: [{{action: Deny}}]
"
    );
    all_ok([judge(
        &yaml,
        Packet::tcp(ip("198.51.100.7"), SRC_PORT, ip("10.65.0.10"), 80),
        true,
    )]);
}
