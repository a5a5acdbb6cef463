//! Services without session affinity, as data: a service port's backends
//! are elements of one map per family, and the chains that pick among
//! them are shared by every service port with the same number of
//! backends. A backend change is then a few element changes, whatever the
//! number of services, and the table holds a few hundred chains instead
//! of one per service port and one per backend.
//!
//! - `mnl-be4-tcp`: `daddr . l4proto . dport . INDEX : backend . port`,
//!   for frontends by address (cluster, external and load-balancer IPs),
//!   and `mnl-npbe4-tcp`: `l4proto . dport . INDEX : backend . port` for
//!   node ports; one map per transport protocol (`-tcp`, `-udp`, `-sctp`,
//!   see [`empty_maps`]). A frontend's own backends have the indices
//!   `0..N`; an
//!   `externalTrafficPolicy: Local` frontend also has its cluster
//!   backends at [`CLUSTER_OFFSET`]` + i`, for pods and the node itself.
//! - A pick chain (`mnl-pick4-KIND-N`) marks for masquerade where its kind
//!   needs it and DNATs through `numgen random mod N` into the backend
//!   map of the packet's protocol (one rule per protocol): `cip` (cluster IPs; masqueraded unless from a pod), `ext`
//!   (`Cluster` external traffic; masqueraded), `loc` (`Local` external
//!   traffic from elsewhere; kept), `pod` and `node` (`Local` external
//!   traffic from a pod, kept, or from the node, masqueraded: both to the
//!   cluster backends), and their node-port twins (`np…`).
//! - The frontend verdict maps (`mnl-svc-ips4`, `mnl-svc-nodeports4`, and
//!   for `Local` frontends with cluster backends `mnl-svc-xpod4`,
//!   `mnl-svc-xnode4`, `mnl-np-xpod4`, `mnl-np-xnode4`, looked up first
//!   for traffic from pods and from the node) send a frontend to its pick
//!   chain.
//! - Hairpin (a backend reaching its own service) is masqueraded in
//!   postrouting: `mnl-hairpin4` holds `backend . backend` for every
//!   backend, matched against `saddr . daddr` of DNATed connections.
//!
//! A pick chain is claimed like a shared map entry (`PICK_CHAINS`): it is
//! written with its first user and removed with its last.

use manul_dataplane_api::Backend;

use super::{Rules, SetDef, with_comment};
use crate::element::{Element, Value};
use crate::flows::prefix;
use crate::names::MARK_MASQ;

/// The pseudo-set under which services claim the pick chains they use.
pub const PICK_CHAINS: &str = "#pick-chains";

/// The names of pick chains begin with this.
pub const PICK_PREFIX: &str = "mnl-pick";

/// Where an `externalTrafficPolicy: Local` frontend's cluster backends
/// start in the backend maps.
pub const CLUSTER_OFFSET: u32 = 1 << 24;

/// The transport protocols a frontend is translated for, with their
/// names in nft.
pub const PROTOCOLS: [(u8, &str); 3] = [(6, "tcp"), (17, "udp"), (132, "sctp")];

/// The backend maps' and the hairpin set's names, per family and
/// transport protocol (`None` for a protocol no map holds).
pub fn backend_map(v6: bool, node_port: bool, protocol: u8) -> Option<String> {
    let n = if v6 { 6 } else { 4 };
    let (_, p) = PROTOCOLS.iter().find(|(number, _)| *number == protocol)?;
    Some(if node_port {
        format!("mnl-npbe{n}-{p}")
    } else {
        format!("mnl-be{n}-{p}")
    })
}

pub fn hairpin_set(v6: bool) -> String {
    format!("mnl-hairpin{}", if v6 { 6 } else { 4 })
}

/// What a pick chain does before it DNATs, and from which part of the
/// backend map it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A cluster IP: masquerade unless from a pod; own backends.
    ClusterIp,
    /// External traffic under `Cluster`: masquerade; own backends.
    External,
    /// External traffic under `Local` from elsewhere: own (local) backends.
    Local,
    /// External traffic under `Local` from a pod: cluster backends.
    LocalFromPod,
    /// External traffic under `Local` from the node: masquerade; cluster
    /// backends.
    LocalFromNode,
}

impl Pick {
    fn name(self) -> &'static str {
        match self {
            Pick::ClusterIp => "cip",
            Pick::External => "ext",
            Pick::Local => "loc",
            Pick::LocalFromPod => "pod",
            Pick::LocalFromNode => "node",
        }
    }
    fn offset(self) -> u32 {
        match self {
            Pick::LocalFromPod | Pick::LocalFromNode => CLUSTER_OFFSET,
            _ => 0,
        }
    }
}

/// The pick chain's name.
pub fn chain_name(pick: Pick, v6: bool, node_port: bool, n: usize) -> String {
    format!(
        "{PICK_PREFIX}{}-{}{}-{n}",
        if v6 { 6 } else { 4 },
        if node_port { "np" } else { "" },
        pick.name()
    )
}

/// The pick chain's rules; with flows on (`log`, the nflog group) first
/// the log of the connection's first packet before DNAT, whose
/// destination is the frontend (`flows::prefix::FRONTEND`).
pub fn chain_rules(pick: Pick, v6: bool, node_port: bool, n: usize, log: Option<u16>) -> Rules {
    let name = chain_name(pick, v6, node_port, n);
    let kw = if v6 { "ip6" } else { "ip" };
    let mut rules: Vec<String> = log
        .map(prefix::frontend_log_statement)
        .into_iter()
        .collect();
    match pick {
        Pick::ClusterIp => rules.push(format!("jump {}", super::services::MASQ_NON_POD)),
        Pick::External | Pick::LocalFromNode => {
            rules.push(format!("jump {}", super::services::MARK_FOR_MASQ));
        }
        Pick::Local | Pick::LocalFromPod => {}
    }
    let key = if node_port {
        "meta l4proto . th dport".to_string()
    } else {
        format!("{kw} daddr . meta l4proto . th dport")
    };
    let offset = match pick.offset() {
        0 => String::new(),
        o => format!(" offset {o}"),
    };
    for (number, p) in PROTOCOLS {
        if let Some(map) = backend_map(v6, node_port, number) {
            rules.push(format!(
                "meta l4proto {p} dnat {kw} to {key} . numgen random mod {n}{offset} map @{map}"
            ));
        }
    }
    rules.iter().map(|t| with_comment(&name, t)).collect()
}

/// The backend maps and the hairpin set, empty. A backend map's value is
/// declared with the map's own protocol (`daddr . udp dport`): nft makes
/// a rule naming the map depend on the value's protocol, so a map typed
/// `tcp dport` never translates UDP, and with `th dport` there nft 1.0.6
/// refuses any later rule naming the map ("conflicting protocols
/// specified"). Hence one map per protocol, and one rule per protocol in
/// each pick chain.
pub fn empty_maps(v6: bool) -> Vec<(String, SetDef)> {
    let addr = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    let map = |type_: &'static str, comment: String| SetDef {
        type_,
        interval: false,
        timeout: None,
        comment,
        elements: Default::default(),
    };
    let mut out = Vec::new();
    for (number, p) in PROTOCOLS {
        for node_port in [false, true] {
            let Some(name) = backend_map(v6, node_port, number) else {
                continue;
            };
            let type_ = backend_map_type(v6, node_port, p);
            let what = if node_port { "node port" } else { "address" };
            out.push((name, map(type_, format!("{p} service backends by {what}"))));
        }
    }
    out.push((
        hairpin_set(v6),
        map(
            if v6 {
                "ipv6_addr . ipv6_addr"
            } else {
                "ipv4_addr . ipv4_addr"
            },
            format!("{addr} pairs backend . backend: hairpin"),
        ),
    ));
    out
}

/// A backend map's declaration (see [`empty_maps`]).
fn backend_map_type(v6: bool, node_port: bool, protocol: &str) -> &'static str {
    macro_rules! typeof_ {
        ($key:literal, $kw:literal) => {
            match protocol {
                "udp" => concat!(
                    "typeof ",
                    $key,
                    " . numgen random mod 1 : ",
                    $kw,
                    " daddr . udp dport"
                ),
                "sctp" => concat!(
                    "typeof ",
                    $key,
                    " . numgen random mod 1 : ",
                    $kw,
                    " daddr . sctp dport"
                ),
                _ => concat!(
                    "typeof ",
                    $key,
                    " . numgen random mod 1 : ",
                    $kw,
                    " daddr . tcp dport"
                ),
            }
        };
    }
    match (v6, node_port) {
        (false, false) => typeof_!("ip daddr . meta l4proto . th dport", "ip"),
        (false, true) => typeof_!("meta l4proto . th dport", "ip"),
        (true, false) => typeof_!("ip6 daddr . meta l4proto . th dport", "ip6"),
        (true, true) => typeof_!("meta l4proto . th dport", "ip6"),
    }
}

/// The hairpin rule of the masquerading chain, per family.
pub fn hairpin_rule(v6: bool) -> String {
    let kw = if v6 { "ip6" } else { "ip" };
    format!(
        "ct status dnat {kw} saddr . {kw} daddr @{} meta mark set meta mark | {MARK_MASQ:#010x}",
        hairpin_set(v6)
    )
}

/// The backend map entries of one frontend (`key`: `daddr . proto .
/// dport`, or `proto . port` for a node port): `backends` at `offset +
/// i`.
pub fn backend_entries(key: &[Value], offset: u32, backends: &[Backend]) -> Vec<Element> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut k = Vec::with_capacity(key.len() + 1);
            k.extend_from_slice(key);
            k.push(Value::Index(offset + i as u32));
            Element::values(k, vec![Value::Addr(b.ip), Value::Port(b.port)])
        })
        .collect()
}

/// The hairpin set's element for a backend.
pub fn hairpin_element(b: &Backend) -> Element {
    Element::key(vec![Value::Addr(b.ip), Value::Addr(b.ip)])
}
