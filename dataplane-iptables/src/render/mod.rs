//! Rendering: the desired state in, the nftables objects that enforce it
//! out. Pure: no I/O, no kernel, unit-tested.
//!
//! Every object lives in the `inet manul` table:
//!
//! - one nft set per IP set and family (`mnl-s4-HASH`, `mnl-s6-HASH`),
//!   interval sets of aggregated networks, or `addr . proto . port` sets for
//!   named ports;
//! - a chain per policy and direction (`mnl-pi-`, `mnl-po-`) and per profile
//!   and direction (`mnl-pri-`, `mnl-pro-`): Allow sets the accept mark bit
//!   and returns, Deny drops, Pass sets the pass bit and returns (in a
//!   profile it just returns), Log logs and goes on;
//! - per endpoint and direction, an endpoint chain (`mnl-tw-IFACE` to the
//!   workload, `mnl-fw-IFACE` from it) that jumps to one chain per tier
//!   (`….tN`) and then to the profiles, returning as soon as the accept bit
//!   is set and dropping when nothing allowed;
//! - verdict maps from interface name to endpoint chain (dispatch), and sets
//!   of the known interfaces, so traffic on an unknown `mnl*` interface is
//!   dropped (fail closed);
//! - base chains on the forward, input and output hooks that accept
//!   established and related traffic first;
//! - services (`services.rs`): verdict maps to per-port and per-backend
//!   chains, reached from nat base chains at `dstnat` on prerouting and
//!   output, masquerade at `srcnat`, rejects and source-range drops in
//!   filter base chains at `dstnat - 10`, and rejects of cluster-IP
//!   traffic no service port matched just after DNAT (`-90`).

pub mod config;
mod host;
pub mod rule;
pub mod service_change;
pub mod service_claims;
pub mod service_pick;
pub mod service_pools;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use manul_dataplane_api::verdict::Decider;
use manul_dataplane_api::{
    Action, DesiredState, IpSetKind, IpSetMember, Policy, PolicyId, TierPolicies,
};
use sha2::{Digest, Sha256};

use crate::element::{Element, Value, Verb};
use crate::flows::prefix;
use crate::names::{self, MARK_ACCEPT, MARK_PASS};
use rule::{Family, Owner};

pub use config::{EndpointToHost, Failsafe, NftConfig};

/// A set (or map) of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDef {
    /// The `type` clause, e.g. `ipv4_addr` or `ifname : verdict`, or a
    /// whole `typeof …` clause.
    pub type_: &'static str,
    pub interval: bool,
    /// Elements expire this many seconds after they were last added or
    /// updated (`flags dynamic,timeout`): a set the packet path fills,
    /// such as session affinity. Its elements are not part of the desired
    /// state.
    pub timeout: Option<u32>,
    pub comment: String,
    /// Elements as data (`element.rs` writes them as text or encodes
    /// them for netlink).
    pub elements: BTreeSet<Element>,
}

/// A regular chain's rules, each with its comment.
pub type Rules = Vec<RuleText>;

/// One rule: its text and its comment (the rule id for operators, and a
/// hash that the refresh compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleText {
    pub text: String,
    pub comment: String,
}

/// A base chain: its name, its hook clause and its rules.
pub type BaseChain = (&'static str, &'static str, Rules);

/// Everything in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Sets and maps by name.
    pub sets: BTreeMap<String, SetDef>,
    /// Regular chains by name.
    pub chains: BTreeMap<String, Rules>,
    /// The base chains: they depend on the configuration only, which is
    /// fixed for a driver's life, so an incremental write leaves them.
    pub base: Vec<BaseChain>,
}

/// Verdict map: workload interface → `mnl-fw-` chain.
pub const MAP_FROM_WORKLOAD: &str = "mnl-from-wl";
/// Verdict map: workload interface → `mnl-tw-` chain.
pub const MAP_TO_WORKLOAD: &str = "mnl-to-wl";
/// Set of programmed workload interfaces.
pub const SET_WORKLOAD_IFACES: &str = "mnl-wl-ifaces";
/// Verdict maps for host endpoints: to the host, from the host, and the
/// forwarded-traffic variants.
pub const MAP_TO_HOST: &str = "mnl-to-host";
pub const MAP_FROM_HOST: &str = "mnl-from-host";
pub const MAP_TO_HOST_FWD: &str = "mnl-to-host-fwd";
pub const MAP_FROM_HOST_FWD: &str = "mnl-from-host-fwd";
/// Verdict maps for host endpoints' untracked policy (raw priority).
pub const MAP_TO_HOST_RAW: &str = "mnl-to-host-raw";
pub const MAP_FROM_HOST_RAW: &str = "mnl-from-host-raw";
/// Verdict map for host endpoints' pre-DNAT policy.
pub const MAP_TO_HOST_DNAT: &str = "mnl-to-host-dnat";
/// Set of the interfaces a named host endpoint covers: the all-interfaces
/// endpoint covers every other interface that is not a workload's.
pub const SET_HOST_IFACES: &str = "mnl-host-ifaces";
/// The chains that send what no named host endpoint covers to the
/// all-interfaces endpoint's chains (empty without one); the base chains
/// always jump to them, so the base chains depend on the configuration
/// only.
pub const ANY_TO_HOST: &str = "mnl-any-to-host";
pub const ANY_FROM_HOST: &str = "mnl-any-from-host";
pub const ANY_TO_HOST_FWD: &str = "mnl-any-to-host-fwd";
pub const ANY_FROM_HOST_FWD: &str = "mnl-any-from-host-fwd";
pub const ANY_TO_HOST_DNAT: &str = "mnl-any-to-host-dnat";

/// The base chains, hooked into netfilter, for `config`; the refresh checks
/// them like any other chain. Traffic on an interface with a workload prefix
/// that is not a programmed workload interface is dropped.
///
/// Host endpoint policy follows Calico's tables: untracked policy at raw
/// priority on prerouting and output (before connection tracking); pre-DNAT
/// policy on prerouting just before destination NAT, ingress only; normal
/// policy on input and output; `applyOnForward` policy on forward. An allow
/// by untracked or pre-DNAT policy sets the accept bit, which the later
/// hooks honour (the raw chains clear it first, so no other packet carries
/// it); failsafe ports come first in every host endpoint chain.
pub fn base_chains(config: &NftConfig) -> Vec<BaseChain> {
    let wl = SET_WORKLOAD_IFACES;
    let unknown = |dir: &str| -> Vec<String> {
        config
            .workload_prefixes
            .iter()
            .map(|p| format!("{dir}name \"{p}*\" {dir}name != @{wl} drop"))
            .collect()
    };
    // Traffic from a workload to its host, once the workload's outbound
    // policy allowed it; host endpoint policy never applies to it (Calico:
    // the workload-to-host chain is reached by a goto).
    let verdict = match config.endpoint_to_host {
        EndpointToHost::Drop => "drop",
        EndpointToHost::Accept => "accept",
        EndpointToHost::Return => "return",
    };
    let to_host: Vec<String> = config
        .workload_prefixes
        .iter()
        .map(|p| format!("iifname \"{p}*\" {verdict}"))
        .collect();
    // Traffic from the host to a workload is judged by the workload's
    // inbound policy only.
    let to_workload: Vec<String> = config
        .workload_prefixes
        .iter()
        .map(|p| format!("oifname \"{p}*\" return"))
        .collect();
    let est = "ct state established,related accept";
    let inv = "ct state invalid drop";
    let nd = "meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept";
    let accepted_before = format!("meta mark & {MARK_ACCEPT:#010x} == {MARK_ACCEPT:#010x} accept");
    let not_accepted = format!("meta mark & {MARK_ACCEPT:#010x} == 0");
    let raw = |groups: &[Vec<String>]| -> Rules {
        groups
            .iter()
            .flatten()
            .map(|r| with_comment("base", r))
            .collect()
    };
    vec![
        (
            "mnl-raw-prerouting",
            "type filter hook prerouting priority raw; policy accept;",
            raw(&[vec![
                clear_marks(),
                format!("iifname vmap @{MAP_TO_HOST_RAW}"),
            ]]),
        ),
        (
            "mnl-raw-output",
            "type filter hook output priority raw; policy accept;",
            raw(&[vec![
                clear_marks(),
                format!("oifname vmap @{MAP_FROM_HOST_RAW}"),
            ]]),
        ),
        (
            "mnl-pre-dnat",
            "type filter hook prerouting priority dstnat - 1; policy accept;",
            raw(&[vec![
                est.to_string(),
                accepted_before.clone(),
                format!("iifname vmap @{MAP_TO_HOST_DNAT}"),
                format!("jump {ANY_TO_HOST_DNAT}"),
            ]]),
        ),
        // Services (`services.rs`): load-balancer source ranges and
        // ports without backends, before DNAT; DNAT for traffic arriving
        // and leaving from the host; masquerade last.
        (
            "mnl-svc-filter-pre",
            "type filter hook prerouting priority dstnat - 10; policy accept;",
            raw(&[vec![format!(
                "ct state new jump {}",
                services::SERVICES_FILTER
            )]]),
        ),
        (
            "mnl-svc-filter-out",
            "type filter hook output priority -110; policy accept;",
            raw(&[vec![format!(
                "ct state new jump {}",
                services::SERVICES_FILTER
            )]]),
        ),
        (
            "mnl-nat-prerouting",
            "type nat hook prerouting priority dstnat; policy accept;",
            raw(&[vec![format!("jump {}", services::SERVICES)]]),
        ),
        (
            "mnl-nat-output",
            "type nat hook output priority -100; policy accept;",
            raw(&[vec![format!("jump {}", services::SERVICES)]]),
        ),
        (
            "mnl-svc-post-dnat-pre",
            "type filter hook prerouting priority -90; policy accept;",
            raw(&[vec![format!(
                "ct state new jump {}",
                services::SERVICES_POST_DNAT
            )]]),
        ),
        (
            "mnl-svc-post-dnat-out",
            "type filter hook output priority -90; policy accept;",
            raw(&[vec![format!(
                "ct state new jump {}",
                services::SERVICES_POST_DNAT
            )]]),
        ),
        (
            "mnl-nat-postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            raw(&[vec![format!("jump {}", services::MASQUERADING)]]),
        ),
        (
            "mnl-forward",
            "type filter hook forward priority filter; policy accept;",
            raw(&[
                vec![est.to_string(), inv.to_string()],
                unknown("iif"),
                unknown("oif"),
                vec![
                    // Forward policy of the host endpoint the packet came
                    // in through, unless untracked or pre-DNAT policy
                    // allowed it already.
                    format!("{not_accepted} iifname vmap @{MAP_TO_HOST_FWD}"),
                    format!("{not_accepted} jump {ANY_TO_HOST_FWD}"),
                    format!("iifname vmap @{MAP_FROM_WORKLOAD}"),
                    format!("oifname vmap @{MAP_TO_WORKLOAD}"),
                    format!("oifname vmap @{MAP_FROM_HOST_FWD}"),
                    format!("jump {ANY_FROM_HOST_FWD}"),
                ],
            ]),
        ),
        (
            "mnl-input",
            "type filter hook input priority filter; policy accept;",
            raw(&[
                vec![est.to_string(), inv.to_string(), nd.to_string()],
                unknown("iif"),
                vec![format!("iifname vmap @{MAP_FROM_WORKLOAD}")],
                to_host,
                vec![
                    accepted_before.clone(),
                    format!("iifname vmap @{MAP_TO_HOST}"),
                    format!("jump {ANY_TO_HOST}"),
                ],
            ]),
        ),
        (
            "mnl-output",
            "type filter hook output priority filter; policy accept;",
            raw(&[
                vec![est.to_string(), inv.to_string(), nd.to_string()],
                unknown("oif"),
                vec![format!("oifname vmap @{MAP_TO_WORKLOAD}")],
                to_workload,
                vec![
                    accepted_before,
                    format!("oifname vmap @{MAP_FROM_HOST}"),
                    format!("jump {ANY_FROM_HOST}"),
                ],
            ]),
        ),
    ]
}

/// A rule with its comment: `ID HASH`, the hash over the chain's name and
/// the rule text, so the refresh can tell a changed rule.
fn with_comment(chain: &str, text: &str) -> RuleText {
    with_id(chain, "", text)
}

pub(crate) fn with_id(chain: &str, id: &str, text: &str) -> RuleText {
    let mut h = Sha256::new();
    h.update(chain.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    let hash = hex::encode(&h.finalize()[..4]);
    let id: String = id
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .take(100)
        .collect();
    let comment = if id.is_empty() {
        hash
    } else {
        format!("{id} {hash}")
    };
    RuleText {
        text: text.to_string(),
        comment,
    }
}

fn rules_of(policy: &Policy, inbound: bool) -> &[manul_dataplane_api::Rule] {
    if inbound {
        &policy.inbound
    } else {
        &policy.outbound
    }
}

/// How a policy or profile chain logs its deciding rules (flows on): the
/// nflog group and the decider of a rule id.
type LogWith<'a> = Option<(u16, &'a dyn Fn(&str) -> Decider)>;

fn policy_chain(
    chain: &str,
    policy: &Policy,
    inbound: bool,
    owner: Owner,
    log: LogWith<'_>,
) -> Rules {
    let mut out = Vec::new();
    for rule in rules_of(policy, inbound) {
        let statement = log
            .filter(|_| matches!(rule.action, Action::Allow | Action::Deny))
            .map(|(group, decider)| prefix::log_statement(group, inbound, &decider(&rule.id)));
        for family in Family::BOTH {
            for text in rule::render_logged(rule, family, owner, statement.as_deref()) {
                out.push(with_id(chain, &rule.id, &text));
            }
        }
    }
    out
}

const ACCEPTED: &str = "meta mark & 0x00010000 == 0x00010000 return";

/// Clears the accept and pass bits, leaving other software's bits.
fn clear_marks() -> String {
    format!(
        "meta mark set meta mark & {:#010x}",
        !(MARK_ACCEPT | MARK_PASS)
    )
}

/// What an endpoint chain is for, which decides how it ends (after
/// Calico's `endpointIptablesChain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainKind {
    /// A workload's policy, or a host endpoint's normal policy: a tier
    /// whose policies gave no verdict applies its default action; then the
    /// profiles; then drop.
    Normal,
    /// A host endpoint's `applyOnForward` policy on forwarded traffic: tier
    /// defaults apply; no profiles and no final drop.
    Forward,
    /// `doNotTrack` policy: no tier defaults and no final drop (the tracked
    /// rules still judge what it leaves); an allow also marks the packet
    /// untracked.
    Untracked,
    /// `preDNAT` policy: no tier defaults and no final drop (the normal
    /// policy still judges what it leaves).
    PreDnat,
}

/// An endpoint chain and its tier chains: the tiers with policies for the
/// direction, then (normal chains) the profiles, then drop. `log` is the
/// nflog group deciding rules log to when flow observations are on.
#[allow(clippy::too_many_arguments)]
pub(crate) fn endpoint_chains(
    out: &mut BTreeMap<String, Rules>,
    chain: &str,
    tiers: &[TierPolicies],
    profiles: &[String],
    inbound: bool,
    anti_spoof: &[IpNet],
    kind: ChainKind,
    log: Option<u16>,
) {
    // Untracked policy judges every packet: logging it would cost per
    // packet.
    let log = log.filter(|_| kind != ChainKind::Untracked);
    let logged = |decider: Decider, verdict: &str| match log {
        Some(group) => format!(
            "{} {verdict}",
            prefix::log_statement(group, inbound, &decider)
        ),
        None => verdict.to_string(),
    };
    debug_assert_eq!(
        ACCEPTED,
        format!("meta mark & {MARK_ACCEPT:#010x} == {MARK_ACCEPT:#010x} return")
    );
    let mut rules = Vec::new();
    for family in Family::BOTH {
        let mine: Vec<IpNet> = anti_spoof
            .iter()
            .copied()
            .filter(|n| {
                matches!(
                    (family, n),
                    (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
                )
            })
            .collect();
        if !mine.is_empty() {
            let nets: Vec<String> = IpNet::aggregate(&mine)
                .iter()
                .map(ToString::to_string)
                .collect();
            let kw = if family == Family::V4 { "ip" } else { "ip6" };
            rules.push(with_id(
                chain,
                "anti-spoof",
                &format!("{kw} saddr != {{ {} }} drop", nets.join(", ")),
            ));
        }
    }
    rules.push(with_comment(chain, &clear_marks()));
    let accepted = if kind == ChainKind::Untracked {
        ACCEPTED_UNTRACKED
    } else {
        ACCEPTED
    };
    for (index, tier) in tiers.iter().enumerate() {
        let policies = if inbound {
            &tier.inbound
        } else {
            &tier.outbound
        };
        if policies.is_empty() {
            continue;
        }
        let tier_chain = names::tier_chain(chain, index);
        let mut trules = Vec::new();
        for id in policies {
            let target = names::policy_chain(id, inbound);
            trules.push(with_id(
                &tier_chain,
                &format!("{}/{}", id.tier, id.name),
                &format!("jump {target}"),
            ));
            trules.push(with_comment(&tier_chain, ACCEPTED));
            trules.push(with_comment(
                &tier_chain,
                &format!(
                    "meta mark & {MARK_PASS:#010x} == {MARK_PASS:#010x} meta mark set meta mark & {:#010x} return",
                    !MARK_PASS
                ),
            ));
        }
        let default = match (kind, tier.default_action) {
            (ChainKind::Untracked | ChainKind::PreDnat, _) | (_, Action::Pass) => {
                "return".to_string()
            }
            _ => logged(
                Decider::TierDefault {
                    tier: tier.name.clone(),
                },
                "drop",
            ),
        };
        trules.push(with_id(
            &tier_chain,
            &format!("tier {} default", tier.name),
            &default,
        ));
        out.insert(tier_chain.clone(), trules);
        rules.push(with_id(
            chain,
            &format!("tier {}", tier.name),
            &format!("jump {tier_chain}"),
        ));
        rules.push(with_comment(chain, accepted));
    }
    if kind != ChainKind::Normal {
        out.insert(chain.to_string(), rules);
        return;
    }
    for profile in profiles {
        let target = names::profile_chain(profile, inbound);
        rules.push(with_id(
            chain,
            &format!("profile {profile}"),
            &format!("jump {target}"),
        ));
        rules.push(with_comment(chain, ACCEPTED));
    }
    rules.push(with_id(
        chain,
        "no policy or profile allowed",
        &logged(Decider::NoMatch, "drop"),
    ));
    out.insert(chain.to_string(), rules);
}

/// An untracked chain's return on allow: the flow is not tracked (both
/// directions must then be allowed by untracked policy, as in Calico).
const ACCEPTED_UNTRACKED: &str = "meta mark & 0x00010000 == 0x00010000 notrack return";

fn set_elements(kind: IpSetKind, members: &BTreeSet<IpSetMember>, v6: bool) -> BTreeSet<Element> {
    match kind {
        IpSetKind::Net => {
            let nets: Vec<IpNet> = members
                .iter()
                .filter_map(|m| match m {
                    IpSetMember::Net(n) if n.addr().is_ipv6() == v6 => Some(*n),
                    _ => None,
                })
                .collect();
            IpNet::aggregate(&nets)
                .into_iter()
                .map(|n| Element::key(vec![Value::Net(n)]))
                .collect()
        }
        IpSetKind::NamedPort => members
            .iter()
            .filter_map(|m| match m {
                IpSetMember::NamedPort { ip, protocol, port } if ip.is_ipv6() == v6 => {
                    Some(Element::key(vec![
                        Value::Addr(*ip),
                        Value::Proto(*protocol),
                        Value::Port(*port),
                    ]))
                }
                _ => None,
            })
            .collect(),
    }
}

pub(crate) fn map_entry(iface: &str, chain: &str) -> Element {
    Element::verdict(vec![Value::Iface(iface.to_string())], Verb::Jump, chain)
}

fn empty_map() -> SetDef {
    SetDef {
        type_: "ifname : verdict",
        interval: false,
        timeout: None,
        comment: String::new(),
        elements: BTreeSet::new(),
    }
}

/// Renders the whole desired state with the default configuration.
pub fn render(state: &DesiredState) -> Ruleset {
    render_with(state, &NftConfig::default())
}

/// Renders the whole desired state for `config`.
pub fn render_with(state: &DesiredState, config: &NftConfig) -> Ruleset {
    render_indexed(state, config).0
}

/// [`render_with`], and who claims which service map entries (what the
/// driver needs to render one service's change on its own).
pub fn render_indexed(
    state: &DesiredState,
    config: &NftConfig,
) -> (Ruleset, service_claims::Claims) {
    let mut rs = Ruleset {
        base: base_chains(config),
        ..Ruleset::default()
    };
    for (id, set) in &state.ip_sets {
        for v6 in [false, true] {
            let type_ = match (set.kind, v6) {
                (IpSetKind::Net, false) => "ipv4_addr",
                (IpSetKind::Net, true) => "ipv6_addr",
                (IpSetKind::NamedPort, false) => "ipv4_addr . inet_proto . inet_service",
                (IpSetKind::NamedPort, true) => "ipv6_addr . inet_proto . inet_service",
            };
            rs.sets.insert(
                names::ip_set(id, v6),
                SetDef {
                    type_,
                    interval: set.kind == IpSetKind::Net,
                    timeout: None,
                    comment: names::set_comment(id),
                    elements: set_elements(set.kind, &set.members, v6),
                },
            );
        }
    }
    let group = config.flows.map(|f| f.group);
    // Policies of untracked tiers judge every packet: never logged.
    let untracked: BTreeSet<&PolicyId> = state
        .host_endpoints
        .values()
        .flat_map(|h| &h.untracked_tiers)
        .flat_map(|t| t.inbound.iter().chain(&t.outbound))
        .collect();
    for (id, policy) in &state.policies {
        let decider = |rule_id: &str| Decider::Rule {
            policy: Some(id.clone()),
            profile: None,
            rule_id: rule_id.to_string(),
        };
        let log: LogWith<'_> = match group {
            Some(g) if !untracked.contains(id) => Some((g, &decider)),
            _ => None,
        };
        for inbound in [true, false] {
            let chain = names::policy_chain(id, inbound);
            let rules = policy_chain(&chain, policy, inbound, Owner::Policy, log);
            rs.chains.insert(chain, rules);
        }
    }
    for (name, profile) in &state.profiles {
        let decider = |rule_id: &str| Decider::Rule {
            policy: None,
            profile: Some(name.clone()),
            rule_id: rule_id.to_string(),
        };
        let log: LogWith<'_> = group.map(|g| (g, &decider as &dyn Fn(&str) -> Decider));
        for inbound in [true, false] {
            let chain = names::profile_chain(name, inbound);
            let rules = policy_chain(&chain, profile, inbound, Owner::Profile, log);
            rs.chains.insert(chain, rules);
        }
    }
    let mut maps: BTreeMap<&str, SetDef> = [
        MAP_FROM_WORKLOAD,
        MAP_TO_WORKLOAD,
        MAP_TO_HOST,
        MAP_FROM_HOST,
        MAP_TO_HOST_FWD,
        MAP_FROM_HOST_FWD,
        MAP_TO_HOST_RAW,
        MAP_FROM_HOST_RAW,
        MAP_TO_HOST_DNAT,
    ]
    .into_iter()
    .map(|m| (m, empty_map()))
    .collect();
    let mut ifaces = BTreeSet::new();
    for ep in state.workload_endpoints.values() {
        let iface = &ep.interface_name;
        let to = names::workload_chain(iface, true);
        let from = names::workload_chain(iface, false);
        endpoint_chains(
            &mut rs.chains,
            &to,
            &ep.tiers,
            &ep.profiles,
            true,
            &[],
            ChainKind::Normal,
            config.flows.map(|f| f.group),
        );
        endpoint_chains(
            &mut rs.chains,
            &from,
            &ep.tiers,
            &ep.profiles,
            false,
            &ep.nets,
            ChainKind::Normal,
            config.flows.map(|f| f.group),
        );
        insert(&mut maps, MAP_TO_WORKLOAD, map_entry(iface, &to));
        insert(&mut maps, MAP_FROM_WORKLOAD, map_entry(iface, &from));
        ifaces.insert(Element::iface(iface));
    }
    let host_ifaces = host::render(state, config, &mut rs.chains, &mut maps);
    rs.chains.extend(services::fixed_chains(config));
    rs.sets.extend(services::empty_maps());
    let claims = services::render(state, config, &mut rs.chains, &mut rs.sets);
    for (name, def) in maps {
        rs.sets.insert(name.to_string(), def);
    }
    rs.sets.insert(
        SET_WORKLOAD_IFACES.to_string(),
        SetDef {
            type_: "ifname",
            interval: false,
            timeout: None,
            comment: "programmed workload interfaces".into(),
            elements: ifaces,
        },
    );
    rs.sets.insert(
        SET_HOST_IFACES.to_string(),
        SetDef {
            type_: "ifname",
            interval: false,
            timeout: None,
            comment: "interfaces of named host endpoints".into(),
            elements: host_ifaces,
        },
    );
    (rs, claims)
}

pub(crate) fn insert(maps: &mut BTreeMap<&str, SetDef>, map: &str, entry: Element) {
    if let Some(def) = maps.get_mut(map) {
        def.elements.insert(entry);
    }
}

#[cfg(test)]
mod tests;
