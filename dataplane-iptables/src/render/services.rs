//! Services: kube-proxy's nftables mode, in Manul's table.
//!
//! Per address family (`4`/`6`):
//!
//! - verdict maps keyed by `daddr . l4proto . dport`: `mnl-svc-ips4` sends
//!   a cluster IP to its port's backend chain (`mnl-svc4-`, or `mnl-svl4-`
//!   under `internalTrafficPolicy: Local`), an external or load-balancer IP
//!   to its port's external chain (`mnl-ext4-`); `mnl-svc-nodeports4`,
//!   keyed by `l4proto . dport`, does the same for node ports when the
//!   destination is one of the node's addresses (`fib daddr type local`,
//!   not loopback);
//! - a service without session affinity is data (`service_pick.rs`): the
//!   map entries send a frontend to a pick chain shared by all frontends
//!   with as many backends, which masquerades as its kind needs and DNATs
//!   through `numgen random mod N` into the backend map; hairpin traffic
//!   is masqueraded in postrouting (`mnl-hairpin4`);
//! - a service with session affinity keeps kube-proxy's chains: a backend
//!   chain picks a backend (`numgen random mod N vmap`) after the
//!   session-affinity sets (`mnl-aff4-`, one per backend, `timeout`,
//!   named with their timeout); each backend's chain (`mnl-sep4-`) marks
//!   hairpin traffic (source == the backend) for masquerade, records the
//!   client in its affinity set, and DNATs;
//! - external traffic is marked for masquerade under
//!   `externalTrafficPolicy: Cluster` (so replies return through this
//!   node) and goes to the cluster backends; under `Local` it keeps the
//!   client's address and goes to the local backends, except for traffic
//!   from pods (workload interfaces: to the cluster backends, unmasked) and
//!   from the node itself (masqueraded, to the cluster backends), as
//!   kube-proxy does (for services without affinity through the maps
//!   `mnl-svc-xpod4`/`mnl-svc-xnode4` and their node-port twins, looked up
//!   first for those sources; with affinity through an external chain,
//!   `mnl-ext4-`);
//! - traffic to a cluster IP that did not come from a pod is masqueraded
//!   (kube-proxy's local-traffic detection by interface prefix);
//! - `mnl-noep-ips4` and `mnl-noep-nodeports4`: a port whose backends for
//!   that traffic are none is rejected at once (TCP reset, ICMP port
//!   unreachable), in filter chains before DNAT; under a `Local` policy
//!   whose backends are all on other nodes it is dropped instead
//!   (`mnl-svc-no-local`), as kube-proxy and the eBPF dataplane do; for
//!   an external frontend only from outside the cluster
//!   (`mnl-svc-no-local-ext` lets pods and the node itself through to
//!   `mnl-svc-xpod4`/`-xnode4` or the external chain: kube-proxy's
//!   short-circuit, whose drop is after DNAT);
//! - `mnl-lb-ranged4` and `mnl-lb-src4`: a new connection to a
//!   load-balancer IP with source ranges from a source none of them holds
//!   is dropped; as on eBPF, per address (every port), the ranges being
//!   the union of every service's naming the address (`service_claims`);
//! - `mnl-cluster-ips4`: every cluster IP; a new connection still
//!   addressed to one after DNAT (a port or protocol the service does not
//!   have) is rejected, in filter chains just after DNAT.
//!
//! The fixed chains (`mnl-services`, `mnl-svc-filter`, the masquerade
//! chains, the reject chain) are the same for every state; the base chains
//! in `render::base_chains` jump to them. Policy runs at the filter
//! priority on forward, input and output, after DNAT at `dstnat`, so a
//! backend's ingress policy sees the client's address (or the node's, when
//! masqueraded) and the backend's real port; masquerading happens in
//! postrouting, after policy.
//!
//! A service's families are those of its cluster IPs (and external and
//! load-balancer addresses); its node ports are open in the families of
//! its cluster IPs (IPv4 for a service without any), as on eBPF: a
//! single-stack service gets no node port in the other family. Ports of protocols other than TCP, UDP and SCTP are
//! not rendered. When two services claim the same address, protocol and
//! port (or node port), the first in namespace/name order has every entry
//! of it, in every map, as on eBPF (`service_claims`), so a conflict never
//! fails the transaction nor mixes two services' entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use manul_dataplane_api::{Backend, DesiredState, Service, ServicePort, TrafficPolicy};

use super::service_claims::{Claims, Frontend};
use super::service_pick::{self, PICK_CHAINS, Pick};
use super::service_pools;
use super::{NftConfig, Rules, SetDef, with_comment, with_id};
use crate::element::{Element, Value, Verb};
use crate::flows::prefix;
use crate::names::{self, MARK_MASQ, ServiceObject};

/// The fixed chains.
pub const SERVICES: &str = "mnl-services";
pub const SERVICES_FILTER: &str = "mnl-svc-filter";
/// After DNAT: a packet still addressed to a cluster IP matched no service
/// port (an unknown port or protocol) and is rejected.
pub const SERVICES_POST_DNAT: &str = "mnl-svc-post-dnat";
pub const MARK_FOR_MASQ: &str = "mnl-mark-masq";
pub const MASQ_NON_POD: &str = "mnl-masq-non-pod";
pub const MASQUERADING: &str = "mnl-masquerading";
pub const REJECT: &str = "mnl-svc-reject";
/// A `Local` traffic policy's port whose backends are all on other nodes.
pub const NO_LOCAL: &str = "mnl-svc-no-local";
/// As [`NO_LOCAL`] for an external frontend: the drop is for traffic from
/// outside the cluster only.
pub const NO_LOCAL_EXT: &str = "mnl-svc-no-local-ext";

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fam {
    v6: bool,
}

impl Fam {
    const BOTH: [Fam; 2] = [Fam { v6: false }, Fam { v6: true }];
    fn of(ip: &IpAddr) -> Fam {
        Fam { v6: ip.is_ipv6() }
    }
    fn kw(self) -> &'static str {
        if self.v6 { "ip6" } else { "ip" }
    }
    fn n(self) -> char {
        if self.v6 { '6' } else { '4' }
    }
    fn addr_type(self) -> &'static str {
        if self.v6 { "ipv6_addr" } else { "ipv4_addr" }
    }
    fn map(self, what: &str) -> String {
        format!("mnl-{what}{}", self.n())
    }
}

/// The verdict maps, per family, by address (`svc-ips`, ...) and by node
/// port (`svc-nodeports`, ...).
pub(super) const TRIPLE_MAPS: [&str; 4] = ["svc-ips", "svc-xpod", "svc-xnode", "noep-ips"];
pub(super) const PORT_MAPS: [&str; 4] = ["svc-nodeports", "np-xpod", "np-xnode", "noep-nodeports"];

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

fn fmt_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// The fixed regular chains, for `config`.
pub(super) fn fixed_chains(config: &NftConfig) -> BTreeMap<String, Rules> {
    let mut out = BTreeMap::new();
    let mut services = Vec::new();
    let mut filter = Vec::new();
    for f in Fam::BOTH {
        let kw = f.kw();
        let lo = if f.v6 { "::1" } else { "127.0.0.0/8" };
        // `externalTrafficPolicy: Local` frontends send pods and the node
        // itself to the cluster backends (see `service_pick`).
        for p in &config.workload_prefixes {
            services.push(format!(
                "iifname \"{p}*\" {kw} daddr . meta l4proto . th dport vmap @{}",
                f.map("svc-xpod")
            ));
        }
        services.push(format!(
            "fib saddr type local {kw} daddr . meta l4proto . th dport vmap @{}",
            f.map("svc-xnode")
        ));
        // Pods of other nodes (`service_pools`).
        services.push(service_pools::dispatch(config, f.v6));
        services.push(format!(
            "{kw} daddr . meta l4proto . th dport vmap @{}",
            f.map("svc-ips")
        ));
        for p in &config.workload_prefixes {
            services.push(format!(
                "iifname \"{p}*\" fib daddr type local {kw} daddr != {lo} meta l4proto . th dport vmap @{}",
                f.map("np-xpod")
            ));
        }
        services.push(format!(
            "fib saddr type local fib daddr type local {kw} daddr != {lo} meta l4proto . th dport vmap @{}",
            f.map("np-xnode")
        ));
        services.push(format!(
            "fib daddr type local {kw} daddr != {lo} meta l4proto . th dport vmap @{}",
            f.map("svc-nodeports")
        ));
        // Load-balancer source ranges, per address as on eBPF.
        filter.push(format!(
            "{kw} daddr @{} {kw} daddr . {kw} saddr != @{} drop",
            f.map(LB_RANGED),
            f.map(LB_SOURCES)
        ));
        filter.push(format!(
            "{kw} daddr . meta l4proto . th dport vmap @{}",
            f.map("noep-ips")
        ));
        filter.push(format!(
            "fib daddr type local {kw} daddr != {lo} meta l4proto . th dport vmap @{}",
            f.map("noep-nodeports")
        ));
    }
    let rules = |chain: &str, texts: Vec<String>| -> Rules {
        texts.iter().map(|t| with_comment(chain, t)).collect()
    };
    out.insert(SERVICES.to_string(), rules(SERVICES, services));
    out.insert(SERVICES_FILTER.to_string(), rules(SERVICES_FILTER, filter));
    let post: Vec<String> = Fam::BOTH
        .iter()
        .map(|f| format!("{} daddr @{} goto {REJECT}", f.kw(), f.map("cluster-ips")))
        .collect();
    out.insert(
        SERVICES_POST_DNAT.to_string(),
        rules(SERVICES_POST_DNAT, post),
    );
    out.insert(
        MARK_FOR_MASQ.to_string(),
        rules(
            MARK_FOR_MASQ,
            vec![format!("meta mark set meta mark | {MARK_MASQ:#010x}")],
        ),
    );
    let mut non_pod: Vec<String> = config
        .workload_prefixes
        .iter()
        .map(|p| format!("iifname \"{p}*\" return"))
        .collect();
    non_pod.push(format!("goto {MARK_FOR_MASQ}"));
    out.insert(MASQ_NON_POD.to_string(), rules(MASQ_NON_POD, non_pod));
    out.insert(
        MASQUERADING.to_string(),
        rules(
            MASQUERADING,
            vec![
                service_pick::hairpin_rule(false),
                service_pick::hairpin_rule(true),
                service_pools::masquerading_rule(),
                format!("meta mark & {MARK_MASQ:#010x} == 0 return"),
                format!("meta mark set meta mark & {:#010x}", !MARK_MASQ),
                "masquerade fully-random".to_string(),
            ],
        ),
    );
    out.insert(
        NO_LOCAL.to_string(),
        rules(NO_LOCAL, vec!["drop".to_string()]),
    );
    // External frontends: only traffic from outside the cluster; pods and
    // the node itself reach the backends elsewhere (kube-proxy's
    // short-circuit, through `mnl-svc-xpod4`/`-xnode4` or the external
    // chain).
    let mut no_local_ext: Vec<String> = config
        .workload_prefixes
        .iter()
        .map(|p| format!("iifname \"{p}*\" return"))
        .collect();
    no_local_ext.push("fib saddr type local return".to_string());
    no_local_ext.extend(service_pools::no_local_ext_rules());
    no_local_ext.push("drop".to_string());
    out.insert(NO_LOCAL_EXT.to_string(), rules(NO_LOCAL_EXT, no_local_ext));
    out.extend(service_pools::fixed_chains(config));
    out.insert(
        REJECT.to_string(),
        rules(
            REJECT,
            vec![
                "meta l4proto tcp reject with tcp reset".to_string(),
                "reject".to_string(),
            ],
        ),
    );
    out
}

/// The load-balancer addresses with source ranges (`mnl-lb-ranged4`), and
/// their ranges (`mnl-lb-src4`: `address . range`, the union of the ranges
/// of every service naming the address, see `service_claims`).
pub(super) const LB_RANGED: &str = "lb-ranged";
pub(super) const LB_SOURCES: &str = "lb-src";

/// The empty verdict maps, and the empty sets of cluster IPs and of
/// load-balancer source ranges.
pub(super) fn empty_maps() -> BTreeMap<String, SetDef> {
    let mut out = service_pools::empty_sets();
    for f in Fam::BOTH {
        out.insert(
            f.map(LB_RANGED),
            SetDef {
                type_: f.addr_type(),
                interval: false,
                timeout: None,
                comment: "load-balancer addresses with source ranges".into(),
                elements: BTreeSet::new(),
            },
        );
        out.insert(
            f.map(LB_SOURCES),
            SetDef {
                type_: if f.v6 {
                    "typeof ip6 daddr . ip6 saddr"
                } else {
                    "typeof ip daddr . ip saddr"
                },
                interval: true,
                timeout: None,
                comment: "load-balancer address . source range".into(),
                elements: BTreeSet::new(),
            },
        );
        out.insert(
            f.map("cluster-ips"),
            SetDef {
                type_: f.addr_type(),
                interval: false,
                timeout: None,
                comment: "every service's cluster IPs".into(),
                elements: BTreeSet::new(),
            },
        );
        for m in TRIPLE_MAPS {
            out.insert(
                f.map(m),
                SetDef {
                    type_: if f.v6 {
                        "ipv6_addr . inet_proto . inet_service : verdict"
                    } else {
                        "ipv4_addr . inet_proto . inet_service : verdict"
                    },
                    interval: false,
                    timeout: None,
                    comment: String::new(),
                    elements: BTreeSet::new(),
                },
            );
        }
        out.extend(service_pick::empty_maps(f.v6));
        for m in PORT_MAPS {
            out.insert(
                f.map(m),
                SetDef {
                    type_: "inet_proto . inet_service : verdict",
                    interval: false,
                    timeout: None,
                    comment: String::new(),
                    elements: BTreeSet::new(),
                },
            );
        }
    }
    out
}

/// Adds `entry` (`KEY : VERDICT`) to `map` unless the map has that key
/// already (a map holds one verdict per key, or the transaction fails).
/// Which service writes a contested frontend's entries is decided before
/// (`service_claims`); within one service its first claim has them.
///
/// A shared set or map a service's own rendering does not hold yet is
/// created for its elements (see [`render_service`]).
pub(super) fn add(sets: &mut BTreeMap<String, SetDef>, map: &str, entry: Element) {
    if !sets.contains_key(map) {
        if !shared_names().contains(map) {
            return;
        }
        sets.insert(map.to_string(), SetDef::default());
    }
    let Some(def) = sets.get_mut(map) else {
        return;
    };
    if entry.data.is_none() {
        def.elements.insert(entry);
        return;
    }
    let taken = def
        .elements
        .range(Element::first_of(&entry.key)..)
        .next()
        .is_some_and(|e| e.key == entry.key);
    if !taken {
        def.elements.insert(entry);
    }
}

/// The shared sets and maps (those of [`empty_maps`]) and
/// [`PICK_CHAINS`], under which services claim elements.
fn shared_names() -> &'static BTreeSet<String> {
    static NAMES: std::sync::LazyLock<BTreeSet<String>> = std::sync::LazyLock::new(|| {
        let mut names: BTreeSet<String> = empty_maps().into_keys().collect();
        names.insert(PICK_CHAINS.to_string());
        names
    });
    &NAMES
}

/// The protocols a service port can be translated for (DNAT to a port
/// needs a transport header nft knows).
fn translatable(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

/// One service's objects: its own chains and sets (backend, external,
/// affinity sets), and the elements it claims in the
/// shared sets and maps (cluster IPs, map entries), in no particular order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceObjects {
    pub chains: BTreeMap<String, Rules>,
    pub sets: BTreeMap<String, SetDef>,
    /// The pick chains it uses, shared with other services (claimed as
    /// elements of [`PICK_CHAINS`]).
    pub shared_chains: BTreeMap<String, Rules>,
    /// `(shared set or map, element)`; at most one element per map key.
    pub elements: Vec<(String, Element)>,
}

/// The address, protocol and port of a frontend by address: the key of
/// the verdict maps by address.
fn triple(ip: &IpAddr, port: &ServicePort) -> Vec<Value> {
    vec![
        Value::Addr(*ip),
        Value::Proto(port.protocol),
        Value::Port(port.port),
    ]
}

/// The protocol and node port of a frontend by node port.
fn node_port_key(protocol: u8, node_port: u16) -> Vec<Value> {
    vec![Value::Proto(protocol), Value::Port(node_port)]
}

/// The element sending `key` to the reject chain.
fn reject(key: Vec<Value>) -> Element {
    Element::verdict(key, Verb::Goto, REJECT)
}

/// The element for `key` when the traffic's backends are none: dropped
/// under a `Local` policy while the port has backends on other nodes
/// (`cluster`), else rejected.
fn no_backends(key: Vec<Value>, local: bool, cluster: &[Backend]) -> Element {
    if local && !cluster.is_empty() {
        Element::verdict(key, Verb::Goto, NO_LOCAL)
    } else {
        reject(key)
    }
}

/// [`no_backends`] for an external frontend (a node port, an external or
/// load-balancer address): under `Local` the drop spares pods and the
/// node itself ([`NO_LOCAL_EXT`]).
fn no_external_backends(key: Vec<Value>, local: bool, cluster: &[Backend]) -> Element {
    if local && !cluster.is_empty() {
        Element::verdict(key, Verb::Goto, NO_LOCAL_EXT)
    } else {
        reject(key)
    }
}

/// Renders one service on its own; [`render`] merges the services, and
/// the driver renders only the services a batch changed. `local`: this
/// node's addresses (for the load-balancer source ranges).
pub fn render_service(
    svc: &Service,
    config: &NftConfig,
    local: &BTreeSet<IpAddr>,
) -> ServiceObjects {
    let mut chains = BTreeMap::new();
    // Own sets (affinity), and the shared ones this service claims
    // elements of, created as it does (`add`).
    let mut sets = BTreeMap::new();
    let mut families: BTreeSet<bool> = svc
        .cluster_ips
        .iter()
        .chain(svc.external_addresses())
        .map(IpAddr::is_ipv6)
        .collect();
    if svc.ports.iter().any(|p| p.node_port.is_some()) {
        families.extend(
            [false, true]
                .into_iter()
                .filter(|v6| node_port_family(svc, *v6)),
        );
    }
    for ip in &svc.cluster_ips {
        add(
            &mut sets,
            &Fam::of(ip).map("cluster-ips"),
            Element::key(vec![Value::Addr(*ip)]),
        );
    }
    // The frontends claimed so far: a service's first claim on a
    // frontend has it (see `service_claims`).
    let mut claimed = BTreeSet::new();
    for v6 in families {
        let f = Fam { v6 };
        source_ranges(svc, f, local, &mut sets);
        for port in svc.ports.iter().filter(|p| translatable(p.protocol)) {
            let out = Out {
                chains: &mut chains,
                sets: &mut sets,
                claimed: &mut claimed,
                log: config.flows.map(|l| l.group),
            };
            service_port(svc, port, f, config, out);
        }
    }
    let mut elements = Vec::new();
    for name in shared_names() {
        if let Some(def) = sets.remove(name) {
            elements.extend(def.elements.into_iter().map(|e| (name.clone(), e)));
        }
    }
    let picks: Vec<String> = chains
        .keys()
        .filter(|name| name.starts_with(service_pick::PICK_PREFIX))
        .cloned()
        .collect();
    let shared_chains = picks
        .into_iter()
        .filter_map(|name| chains.remove_entry(&name))
        .collect();
    ServiceObjects {
        chains,
        sets,
        shared_chains,
        elements,
    }
}

/// Renders every service into `chains` and `sets` (which already hold the
/// empty maps of [`empty_maps`]); returns who claims what.
pub(super) fn render(
    state: &DesiredState,
    config: &NftConfig,
    chains: &mut BTreeMap<String, Rules>,
    sets: &mut BTreeMap<String, SetDef>,
) -> Claims {
    let mut claims = Claims::default();
    for (key, svc) in &state.services {
        let objects = render_service(svc, config, &state.local_addresses);
        chains.extend(objects.chains);
        chains.extend(objects.shared_chains);
        sets.extend(objects.sets);
        claims.insert_elements(key, objects.elements);
    }
    // Gathered per set, then merged a set at a time in key order: one
    // pass per set rather than two searches of a large map per element.
    let mut gathered: BTreeMap<&str, Vec<Element>> = BTreeMap::new();
    for (set, element) in claims.programmed() {
        // The pick chains are chains, not a set of the table.
        if set != PICK_CHAINS {
            gathered.entry(set).or_default().push(element);
        }
    }
    for (set, elements) in gathered {
        merge(sets, set, elements);
    }
    service_pools::fill(&state.pools, sets);
    claims
}

/// [`add`] for each of `elements`, in their order (the first element of
/// a key has it), as one merge: sorted by key, then taken in bulk into an
/// empty set, else one by one.
pub(super) fn merge(sets: &mut BTreeMap<String, SetDef>, map: &str, mut elements: Vec<Element>) {
    // Stable: of one key's elements, the first stays first.
    elements.sort_by(|a, b| a.key.cmp(&b.key));
    let empty = sets.get(map).is_some_and(|d| d.elements.is_empty());
    if !empty {
        for e in elements {
            add(sets, map, e);
        }
        return;
    }
    // A map holds one verdict per key; a set's elements are keys alone.
    elements.dedup_by(|later, first| later.key == first.key);
    if let Some(def) = sets.get_mut(map) {
        def.elements = elements.into_iter().collect();
    }
}

/// A load-balancer IP's source ranges: the address in `mnl-lb-ranged4`,
/// and `address . range` for each range of its family (none: every
/// source is dropped), which `service_claims` merges with other services'
/// ranges for the address. When one of this node's addresses `local`
/// lies in a range, also `address . address/32` (`/128`): a connection
/// from the node to a VIP assigned on it has the VIP as its source
/// (kube-proxy's exception).
fn source_ranges(
    svc: &Service,
    f: Fam,
    local: &BTreeSet<IpAddr>,
    sets: &mut BTreeMap<String, SetDef>,
) {
    if svc.load_balancer_source_ranges.is_empty() {
        return;
    }
    for ip in svc.load_balancer_ips.iter().filter(|ip| Fam::of(ip) == f) {
        add(
            sets,
            &f.map(LB_RANGED),
            Element::key(vec![Value::Addr(*ip)]),
        );
        for range in &svc.load_balancer_source_ranges {
            if range.addr().is_ipv6() == f.v6 {
                let e = Element::key(vec![Value::Addr(*ip), Value::Net(range.trunc())]);
                add(sets, &f.map(LB_SOURCES), e);
            }
        }
    }
    for ip in svc
        .self_sourced_load_balancer_ips(local)
        .filter(|ip| Fam::of(ip) == f)
    {
        let e = Element::key(vec![Value::Addr(ip), Value::Net(ipnet::IpNet::from(ip))]);
        add(sets, &f.map(LB_SOURCES), e);
    }
}

fn port_body(svc: &Service, port: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        proto_name(port.protocol),
        port.port
    )
}

fn of_family(backends: &[Backend], f: Fam) -> Vec<Backend> {
    backends
        .iter()
        .copied()
        .filter(|b| Fam::of(&b.ip) == f)
        .collect()
}

/// One service port in one family: its map entries, and the pick chains
/// they name (services without affinity), or its chains (with affinity).
fn service_port(svc: &Service, port: &ServicePort, f: Fam, config: &NftConfig, out: Out<'_>) {
    if svc.affinity_timeout_seconds.is_some() {
        service_port_chains(svc, port, f, config, out);
    } else {
        service_port_data(svc, port, f, out);
    }
}

/// Where a service port's rendering goes: its chains, its sets and shared
/// map entries, and the frontends the service claimed before it.
struct Out<'a> {
    chains: &'a mut BTreeMap<String, Rules>,
    sets: &'a mut BTreeMap<String, SetDef>,
    claimed: &'a mut BTreeSet<Frontend>,
    /// The nflog group of flow observations (flows on): chains that pick
    /// a backend log the connection's first packet before DNAT.
    log: Option<u16>,
}

/// Whether `svc`'s node ports are open in family `v6`: the families of its
/// cluster IPs (IPv4 for a service without any), as on eBPF.
fn node_port_family(svc: &Service, v6: bool) -> bool {
    if svc.cluster_ips.is_empty() {
        return !v6;
    }
    svc.cluster_ips.iter().any(|ip| ip.is_ipv6() == v6)
}

/// The frontend of `ip` and `port`.
fn address_frontend(ip: &IpAddr, port: &ServicePort) -> Frontend {
    Frontend::Address {
        addr: *ip,
        proto: port.protocol,
        port: port.port,
    }
}

/// The frontend of `port`'s node port `np` in family `f`.
fn node_port_frontend(f: Fam, port: &ServicePort, np: u16) -> Frontend {
    Frontend::NodePort {
        v6: f.v6,
        proto: port.protocol,
        port: np,
    }
}

/// A frontend sent to a pick chain: the verdict map entry, the pick chain,
/// and the frontend's backends in the backend map.
#[allow(clippy::too_many_arguments)]
fn frontend(
    sets: &mut BTreeMap<String, SetDef>,
    chains: &mut BTreeMap<String, Rules>,
    log: Option<u16>,
    f: Fam,
    node_port: bool,
    verdict_map: &str,
    key: &[Value],
    protocol: u8,
    pick: Pick,
    backends: &[Backend],
) {
    let n = backends.len();
    let chain = service_pick::chain_name(pick, f.v6, node_port, n);
    add(
        sets,
        verdict_map,
        Element::verdict(key.to_vec(), Verb::Goto, chain.clone()),
    );
    if !chains.contains_key(&chain) {
        chains.insert(
            chain.clone(),
            service_pick::chain_rules(pick, f.v6, node_port, n, log),
        );
    }
    add(sets, PICK_CHAINS, Element::key(vec![Value::Chain(chain)]));
    let offset = match pick {
        Pick::LocalFromPod | Pick::LocalFromNode => service_pick::CLUSTER_OFFSET,
        _ => 0,
    };
    if let Some(map) = service_pick::backend_map(f.v6, node_port, protocol) {
        for e in service_pick::backend_entries(key, offset, backends) {
            add(sets, &map, e);
        }
    }
    let hairpin = service_pick::hairpin_set(f.v6);
    for b in backends {
        add(sets, &hairpin, service_pick::hairpin_element(b));
    }
}

/// One service port in one family, as data (see `service_pick`).
fn service_port_data(svc: &Service, port: &ServicePort, f: Fam, out: Out<'_>) {
    let Out {
        chains,
        sets,
        claimed,
        log,
    } = out;
    let cluster = of_family(&port.backends, f);
    let local = of_family(&port.local_backends, f);
    let internal_local = svc.internal_traffic == TrafficPolicy::Local;
    let external_local = svc.external_traffic == TrafficPolicy::Local;

    let internal = if internal_local { &local } else { &cluster };
    for ip in svc.cluster_ips.iter().filter(|ip| Fam::of(ip) == f) {
        if !claimed.insert(address_frontend(ip, port)) {
            continue;
        }
        if internal.is_empty() {
            let e = no_backends(triple(ip, port), internal_local, &cluster);
            add(sets, &f.map("noep-ips"), e);
        } else {
            let k = triple(ip, port);
            let map = f.map("svc-ips");
            frontend(
                sets,
                chains,
                log,
                f,
                false,
                &map,
                &k,
                port.protocol,
                Pick::ClusterIp,
                internal,
            );
        }
    }

    let ext_backends = if external_local { &local } else { &cluster };
    let mut externals: Vec<(bool, Vec<Value>)> = svc
        .external_addresses()
        .filter(|ip| Fam::of(ip) == f && claimed.insert(address_frontend(ip, port)))
        .map(|ip| (false, triple(ip, port)))
        .collect();
    if let Some(np) = port.node_port
        && node_port_family(svc, f.v6)
        && claimed.insert(node_port_frontend(f, port, np))
    {
        externals.push((true, node_port_key(port.protocol, np)));
    }
    for (node_port, k) in externals {
        let (main, xpod, xnode, noep) = if node_port {
            ("svc-nodeports", "np-xpod", "np-xnode", "noep-nodeports")
        } else {
            ("svc-ips", "svc-xpod", "svc-xnode", "noep-ips")
        };
        if external_local && !cluster.is_empty() {
            // Pods and the node reach every backend, also with none here
            // (the external client's drop, `mnl-svc-no-local-ext`, lets them
            // through).
            let (main, xpod, xnode) = (f.map(main), f.map(xpod), f.map(xnode));
            if local.is_empty() {
                add(
                    sets,
                    &f.map(noep),
                    no_external_backends(k.clone(), true, &cluster),
                );
            } else {
                frontend(
                    sets,
                    chains,
                    log,
                    f,
                    node_port,
                    &main,
                    &k,
                    port.protocol,
                    Pick::Local,
                    &local,
                );
            }
            for (map, pick) in [(&xpod, Pick::LocalFromPod), (&xnode, Pick::LocalFromNode)] {
                frontend(
                    sets,
                    chains,
                    log,
                    f,
                    node_port,
                    map,
                    &k,
                    port.protocol,
                    pick,
                    &cluster,
                );
            }
        } else if ext_backends.is_empty() {
            add(
                sets,
                &f.map(noep),
                no_external_backends(k, external_local, &cluster),
            );
        } else {
            let main = f.map(main);
            frontend(
                sets,
                chains,
                log,
                f,
                node_port,
                &main,
                &k,
                port.protocol,
                Pick::External,
                &cluster,
            );
        }
    }
}

/// One service port with session affinity, in one family: kube-proxy's
/// chains (a chain picking a backend, a chain per backend) and the map
/// entries that reach them.
fn service_port_chains(
    svc: &Service,
    port: &ServicePort,
    f: Fam,
    config: &NftConfig,
    out: Out<'_>,
) {
    let Out {
        chains,
        sets,
        claimed,
        log,
    } = out;
    let body = port_body(svc, port);
    let cluster = of_family(&port.backends, f);
    let local = of_family(&port.local_backends, f);
    let all_cluster_ips: Vec<&IpAddr> = svc
        .cluster_ips
        .iter()
        .filter(|ip| Fam::of(ip) == f)
        .collect();
    // The frontends this port claims first.
    let cluster_ips: Vec<&IpAddr> = all_cluster_ips
        .iter()
        .copied()
        .filter(|ip| claimed.insert(address_frontend(ip, port)))
        .collect();
    let external: Vec<&IpAddr> = svc
        .external_addresses()
        .filter(|ip| Fam::of(ip) == f && claimed.insert(address_frontend(ip, port)))
        .collect();
    let node_port = port.node_port.filter(|np| {
        node_port_family(svc, f.v6) && claimed.insert(node_port_frontend(f, port, *np))
    });
    let internal_local = svc.internal_traffic == TrafficPolicy::Local;
    let external_local = svc.external_traffic == TrafficPolicy::Local;
    let reject_rule = format!("goto {REJECT}");

    // The backend chains the traffic kinds use.
    let cluster_chain = names::service_object(ServiceObject::Cluster, f.v6, &body);
    let local_chain = names::service_object(ServiceObject::Local, f.v6, &body);
    let internal_ips: &[&IpAddr] = &all_cluster_ips;
    let mut need_cluster = false;
    let mut need_local = false;

    // Cluster IPs.
    let internal = if internal_local { &local } else { &cluster };
    for ip in &cluster_ips {
        if internal.is_empty() {
            let e = no_backends(triple(ip, port), internal_local, &cluster);
            add(sets, &f.map("noep-ips"), e);
        } else {
            let target = if internal_local {
                need_local = true;
                &local_chain
            } else {
                need_cluster = true;
                &cluster_chain
            };
            add(
                sets,
                &f.map("svc-ips"),
                Element::verdict(triple(ip, port), Verb::Goto, target.clone()),
            );
        }
    }

    // External traffic: external and load-balancer IPs, node ports.
    let ext_backends = if external_local { &local } else { &cluster };
    let has_external = !external.is_empty() || node_port.is_some();
    if has_external {
        let ext_chain = names::service_object(ServiceObject::External, f.v6, &body);
        let mut used = false;
        // Under `Local` with every backend elsewhere, pods and the node
        // still reach them through the external chain (the external
        // client is dropped before DNAT, `mnl-svc-no-local-ext`).
        let short_circuit = external_local && !cluster.is_empty();
        for ip in &external {
            if ext_backends.is_empty() {
                let e = no_external_backends(triple(ip, port), external_local, &cluster);
                add(sets, &f.map("noep-ips"), e);
            }
            if !ext_backends.is_empty() || short_circuit {
                add(
                    sets,
                    &f.map("svc-ips"),
                    Element::verdict(triple(ip, port), Verb::Goto, ext_chain.clone()),
                );
                used = true;
            }
        }
        if let Some(np) = node_port {
            let k = node_port_key(port.protocol, np);
            if ext_backends.is_empty() {
                let e = no_external_backends(k.clone(), external_local, &cluster);
                add(sets, &f.map("noep-nodeports"), e);
            }
            if !ext_backends.is_empty() || short_circuit {
                add(
                    sets,
                    &f.map("svc-nodeports"),
                    Element::verdict(k, Verb::Goto, ext_chain.clone()),
                );
                used = true;
            }
        }
        if used {
            let mut rules = Vec::new();
            if external_local {
                // Pods reach the service as they would its cluster IP; the
                // node itself is masqueraded (its address may not be
                // routable from a backend elsewhere); others keep their
                // address and use local backends only.
                if !cluster.is_empty() {
                    for p in &config.workload_prefixes {
                        rules.push(with_id(
                            &ext_chain,
                            "pod traffic to the cluster backends",
                            &format!("iifname \"{p}*\" goto {cluster_chain}"),
                        ));
                    }
                    rules.push(with_id(
                        &ext_chain,
                        "node traffic masqueraded",
                        &format!("fib saddr type local jump {MARK_FOR_MASQ}"),
                    ));
                    rules.push(with_id(
                        &ext_chain,
                        "node traffic to the cluster backends",
                        &format!("fib saddr type local goto {cluster_chain}"),
                    ));
                    rules.push(with_id(
                        &ext_chain,
                        "pods of other nodes to the cluster backends",
                        &service_pools::ext_chain_rule(f.v6, &cluster_chain),
                    ));
                    need_cluster = true;
                }
                if local.is_empty() {
                    rules.push(with_id(&ext_chain, "no local backends", &reject_rule));
                } else {
                    rules.push(with_id(
                        &ext_chain,
                        "externalTrafficPolicy Local",
                        &format!("goto {local_chain}"),
                    ));
                    need_local = true;
                }
            } else {
                rules.push(with_id(
                    &ext_chain,
                    "external traffic masqueraded",
                    &format!("jump {MARK_FOR_MASQ}"),
                ));
                rules.push(with_id(
                    &ext_chain,
                    "externalTrafficPolicy Cluster",
                    &format!("goto {cluster_chain}"),
                ));
                need_cluster = true;
            }
            chains.insert(ext_chain, rules);
        }
    }

    let masq_ips = |for_internal: bool| -> Vec<&IpAddr> {
        if for_internal {
            internal_ips.to_vec()
        } else {
            Vec::new()
        }
    };
    if need_cluster {
        picker(
            svc,
            port,
            f,
            &body,
            &cluster_chain,
            &cluster,
            &masq_ips(!internal_local),
            log,
            chains,
            sets,
        );
    }
    if need_local {
        picker(
            svc,
            port,
            f,
            &body,
            &local_chain,
            &local,
            &masq_ips(internal_local),
            log,
            chains,
            sets,
        );
    }
}

/// A chain picking one of `backends` (non-empty), and each backend's
/// chain. With flows on (`log`, the nflog group) it first logs the
/// connection's first packet before DNAT (`flows::prefix::FRONTEND`).
/// Traffic to one of `cluster_ips` that did not come from a pod is
/// marked for masquerade first.
#[allow(clippy::too_many_arguments)]
fn picker(
    svc: &Service,
    port: &ServicePort,
    f: Fam,
    body: &str,
    chain: &str,
    backends: &[Backend],
    cluster_ips: &[&IpAddr],
    log: Option<u16>,
    chains: &mut BTreeMap<String, Rules>,
    sets: &mut BTreeMap<String, SetDef>,
) {
    let mut rules = Vec::new();
    if let Some(group) = log {
        rules.push(with_id(
            chain,
            "frontend logged",
            &prefix::frontend_log_statement(group),
        ));
    }
    if !cluster_ips.is_empty() {
        let list: Vec<String> = cluster_ips.iter().map(ToString::to_string).collect();
        rules.push(with_id(
            chain,
            "cluster IP traffic not from a pod masqueraded",
            &format!(
                "{} daddr {{ {} }} jump {MASQ_NON_POD}",
                f.kw(),
                list.join(", ")
            ),
        ));
    }
    let mut targets = Vec::new();
    for b in backends {
        let bbody = format!("{body}/{}/{}", b.ip, b.port);
        let sep = names::service_object(ServiceObject::Backend, f.v6, &bbody);
        let mut brules = vec![with_id(
            &sep,
            "hairpin masqueraded",
            &format!("{} saddr {} jump {MARK_FOR_MASQ}", f.kw(), b.ip),
        )];
        if let Some(timeout) = svc.affinity_timeout_seconds {
            // The timeout is part of the name: a set's timeout cannot
            // change in place, and a set still named by rules cannot be
            // deleted, so a new timeout is a new set (the old one goes
            // once no rule names it).
            let timeout = timeout.max(1);
            let aff = names::service_object(
                ServiceObject::Affinity,
                f.v6,
                &format!("{bbody}/{timeout}s"),
            );
            rules.push(with_id(
                chain,
                "session affinity",
                &format!("{} saddr @{aff} goto {sep}", f.kw()),
            ));
            brules.push(with_id(
                &sep,
                "session affinity",
                &format!("update @{aff} {{ {} saddr }}", f.kw()),
            ));
            sets.insert(
                aff,
                SetDef {
                    type_: f.addr_type(),
                    interval: false,
                    timeout: Some(timeout),
                    comment: format!("affinity {bbody}"),
                    elements: BTreeSet::new(),
                },
            );
        }
        brules.push(with_id(
            &sep,
            "dnat",
            &format!(
                "meta l4proto {} dnat {} to {}:{}",
                proto_name(port.protocol),
                f.kw(),
                fmt_ip(&b.ip),
                b.port
            ),
        ));
        chains.insert(sep.clone(), brules);
        targets.push(sep);
    }
    let arms: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i} : goto {t}"))
        .collect();
    rules.push(with_id(
        chain,
        "pick a backend",
        &format!(
            "numgen random mod {} vmap {{ {} }}",
            targets.len(),
            arms.join(", ")
        ),
    ));
    chains.insert(chain.to_string(), rules);
}
