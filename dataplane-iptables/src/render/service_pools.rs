//! Pods of other nodes reaching an `externalTrafficPolicy: Local`
//! external frontend (node port, external or load-balancer IP) of this
//! node: a source in one of the cluster's IP pools (`mnl-pools4`,
//! `mnl-pools6`, interval sets of the desired state's pools) arriving at
//! no workload interface is from inside the cluster, as kube-proxy's
//! `ClusterCIDR` local-traffic detection has it, and goes to every
//! backend through the pod maps (`mnl-svc-xpod4`, `mnl-np-xpod4`: the
//! entries this node's pods use) from a chain of its own
//! (`mnl-svc-xpool4`). Such a packet is marked [`MARK_MASQ_OFF_NODE`]:
//! postrouting masquerades it when it leaves through no workload
//! interface (a backend on another node, whose reply would otherwise go
//! straight to the pod, untranslated: kubernetes/kubernetes#74383), and
//! lets it keep its address to a backend here (the reply leaves through
//! this node, whose conntrack translates it).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{NftConfig, Rules, SetDef, with_comment};
use crate::element::{Element, Value};
use crate::names::MARK_MASQ_OFF_NODE;

/// The postrouting chain of [`MARK_MASQ_OFF_NODE`].
pub const MASQ_OFF_NODE: &str = "mnl-masq-off-node";

fn kw(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

fn n(v6: bool) -> char {
    if v6 { '6' } else { '4' }
}

/// The set of the pools of a family.
pub fn set(v6: bool) -> String {
    format!("mnl-pools{}", n(v6))
}

/// The chain a pool source's packet is looked up in.
pub fn chain(v6: bool) -> String {
    format!("mnl-svc-xpool{}", n(v6))
}

/// The rule of `mnl-services` sending a pool source to [`chain`] (after
/// this node's pods and the node itself). With one workload prefix (the
/// usual case) this node's pods, whose addresses are in a pool too, do
/// not even take the jump.
pub(super) fn dispatch(config: &NftConfig, v6: bool) -> String {
    let not_pod = match config.workload_prefixes.as_slice() {
        [one] => format!("iifname != \"{one}*\" "),
        _ => String::new(),
    };
    format!("{not_pod}{} saddr @{} jump {}", kw(v6), set(v6), chain(v6))
}

/// The rule of an external chain (a service with session affinity)
/// sending a pool source to the cluster backends, marked.
pub(super) fn ext_chain_rule(v6: bool, cluster_chain: &str) -> String {
    format!(
        "{} saddr @{} meta mark set meta mark | {MARK_MASQ_OFF_NODE:#010x} goto {cluster_chain}",
        kw(v6),
        set(v6)
    )
}

/// The rules of `mnl-svc-no-local-ext` letting pool sources through.
pub(super) fn no_local_ext_rules() -> Vec<String> {
    [false, true]
        .iter()
        .map(|&v6| format!("{} saddr @{} return", kw(v6), set(v6)))
        .collect()
}

/// The rule of `mnl-masquerading` (postrouting) for marked packets.
pub(super) fn masquerading_rule() -> String {
    format!("meta mark & {MARK_MASQ_OFF_NODE:#010x} != 0 jump {MASQ_OFF_NODE}")
}

/// The fixed chains: [`chain`] of each family and [`MASQ_OFF_NODE`].
pub(super) fn fixed_chains(config: &NftConfig) -> BTreeMap<String, Rules> {
    let mut out = BTreeMap::new();
    let pods = |verb: &str| -> Vec<String> {
        config
            .workload_prefixes
            .iter()
            .map(|p| format!("{verb}name \"{p}*\" return"))
            .collect()
    };
    for v6 in [false, true] {
        let (kw, n) = (kw(v6), n(v6));
        let lo = if v6 { "::1" } else { "127.0.0.0/8" };
        let mark = format!("meta mark set meta mark | {MARK_MASQ_OFF_NODE:#010x}");
        // This node's pods and the node itself were looked up before.
        let mut rules = pods("iif");
        rules.push("fib saddr type local return".to_string());
        rules.push(format!(
            "{mark} {kw} daddr . meta l4proto . th dport vmap @mnl-svc-xpod{n}"
        ));
        rules.push(format!(
            "fib daddr type local {kw} daddr != {lo} {mark} meta l4proto . th dport vmap @mnl-np-xpod{n}"
        ));
        // No Local external frontend: unmarked.
        rules.push(format!(
            "meta mark set meta mark & {:#010x}",
            !MARK_MASQ_OFF_NODE
        ));
        let name = chain(v6);
        out.insert(
            name.clone(),
            rules.iter().map(|t| with_comment(&name, t)).collect(),
        );
    }
    let mut masq = vec![format!(
        "meta mark set meta mark & {:#010x}",
        !MARK_MASQ_OFF_NODE
    )];
    masq.extend(pods("oif"));
    masq.push("masquerade fully-random".to_string());
    out.insert(
        MASQ_OFF_NODE.to_string(),
        masq.iter()
            .map(|t| with_comment(MASQ_OFF_NODE, t))
            .collect(),
    );
    out
}

/// The pool sets, empty.
pub(super) fn empty_sets() -> BTreeMap<String, SetDef> {
    [false, true]
        .into_iter()
        .map(|v6| {
            let def = SetDef {
                type_: if v6 { "ipv6_addr" } else { "ipv4_addr" },
                interval: true,
                timeout: None,
                comment: "the cluster's IP pools".into(),
                elements: BTreeSet::new(),
            };
            (set(v6), def)
        })
        .collect()
}

/// Fills the pool sets with `pools`, aggregated (an interval set refuses
/// overlapping elements).
pub(super) fn fill(pools: &BTreeSet<IpNet>, sets: &mut BTreeMap<String, SetDef>) {
    let nets: Vec<IpNet> = pools.iter().map(IpNet::trunc).collect();
    for net in IpNet::aggregate(&nets) {
        if let Some(def) = sets.get_mut(&set(net.addr().is_ipv6())) {
            def.elements.insert(Element::key(vec![Value::Net(net)]));
        }
    }
}
