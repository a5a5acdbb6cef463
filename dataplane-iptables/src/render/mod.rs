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
//!   established and related traffic first.

pub mod config;
pub mod rule;

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use manul_dataplane_api::{Action, DesiredState, IpSetKind, IpSetMember, Policy, TierPolicies};
use sha2::{Digest, Sha256};

use crate::names::{self, MARK_ACCEPT, MARK_PASS};
use rule::{Family, Owner};

pub use config::{EndpointToHost, Failsafe, NftConfig};

/// A set (or verdict map) of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    /// The `type` clause, e.g. `ipv4_addr` or `ifname : verdict`.
    pub type_: &'static str,
    pub interval: bool,
    pub comment: String,
    /// Elements as nft writes them.
    pub elements: BTreeSet<String>,
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

/// The base chains, hooked into netfilter, for `config`; the refresh checks
/// them like any other chain. Traffic on an interface with a workload prefix
/// that is not a programmed workload interface is dropped.
pub fn base_chains(config: &NftConfig) -> Vec<BaseChain> {
    let wl = SET_WORKLOAD_IFACES;
    let unknown = |dir: &str| -> Vec<String> {
        config
            .workload_prefixes
            .iter()
            .map(|p| format!("{dir}name \"{p}*\" {dir}name != @{wl} drop"))
            .collect()
    };
    let to_host: Vec<String> = match config.endpoint_to_host {
        EndpointToHost::Return => Vec::new(),
        EndpointToHost::Drop | EndpointToHost::Accept => {
            let verdict = if config.endpoint_to_host == EndpointToHost::Drop {
                "drop"
            } else {
                "accept"
            };
            config
                .workload_prefixes
                .iter()
                .map(|p| format!("iifname \"{p}*\" {verdict}"))
                .collect()
        }
    };
    let est = "ct state established,related accept";
    let inv = "ct state invalid drop";
    let nd = "meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept";
    let raw = |groups: &[Vec<String>]| -> Rules {
        groups
            .iter()
            .flatten()
            .map(|r| with_comment("base", r))
            .collect()
    };
    vec![
        (
            "mnl-forward",
            "type filter hook forward priority filter; policy accept;",
            raw(&[
                vec![est.to_string(), inv.to_string()],
                unknown("iif"),
                unknown("oif"),
                vec![
                    format!("iifname vmap @{MAP_FROM_WORKLOAD}"),
                    format!("oifname vmap @{MAP_TO_WORKLOAD}"),
                    format!("iifname vmap @{MAP_TO_HOST_FWD}"),
                    format!("oifname vmap @{MAP_FROM_HOST_FWD}"),
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
                vec![format!("iifname vmap @{MAP_TO_HOST}")],
            ]),
        ),
        (
            "mnl-output",
            "type filter hook output priority filter; policy accept;",
            raw(&[
                vec![est.to_string(), inv.to_string(), nd.to_string()],
                unknown("oif"),
                vec![
                    format!("oifname vmap @{MAP_TO_WORKLOAD}"),
                    format!("oifname vmap @{MAP_FROM_HOST}"),
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

fn with_id(chain: &str, id: &str, text: &str) -> RuleText {
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

fn policy_chain(chain: &str, policy: &Policy, inbound: bool, owner: Owner) -> Rules {
    let mut out = Vec::new();
    for rule in rules_of(policy, inbound) {
        for family in Family::BOTH {
            for text in rule::render(rule, family, owner) {
                out.push(with_id(chain, &rule.id, &text));
            }
        }
    }
    out
}

const ACCEPTED: &str = "meta mark & 0x00010000 == 0x00010000 return";

/// An endpoint chain and its tier chains: the tiers with policies for the
/// direction, then the profiles, then drop.
fn endpoint_chains(
    out: &mut BTreeMap<String, Rules>,
    chain: &str,
    tiers: &[TierPolicies],
    profiles: &[String],
    inbound: bool,
    anti_spoof: &[IpNet],
    end_with_drop: bool,
) {
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
    let clear = !(MARK_ACCEPT | MARK_PASS);
    rules.push(with_comment(
        chain,
        &format!("meta mark set meta mark & {clear:#010x}"),
    ));
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
        let default = match tier.default_action {
            Action::Pass => "return",
            _ => "drop",
        };
        trules.push(with_id(
            &tier_chain,
            &format!("tier {} default", tier.name),
            default,
        ));
        out.insert(tier_chain.clone(), trules);
        rules.push(with_id(
            chain,
            &format!("tier {}", tier.name),
            &format!("jump {tier_chain}"),
        ));
        rules.push(with_comment(chain, ACCEPTED));
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
    if end_with_drop {
        rules.push(with_id(chain, "no policy or profile allowed", "drop"));
    }
    out.insert(chain.to_string(), rules);
}

fn set_elements(kind: IpSetKind, members: &BTreeSet<IpSetMember>, v6: bool) -> BTreeSet<String> {
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
                .iter()
                .map(ToString::to_string)
                .collect()
        }
        IpSetKind::NamedPort => members
            .iter()
            .filter_map(|m| match m {
                IpSetMember::NamedPort { ip, protocol, port } if ip.is_ipv6() == v6 => {
                    Some(format!("{ip} . {protocol} . {port}"))
                }
                _ => None,
            })
            .collect(),
    }
}

fn map_entry(iface: &str, chain: &str) -> String {
    format!("\"{iface}\" : jump {chain}")
}

fn empty_map() -> SetDef {
    SetDef {
        type_: "ifname : verdict",
        interval: false,
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
    let mut rs = Ruleset {
        base: base_chains(config),
        ..Ruleset::default()
    };
    let failsafe_in = config::failsafe_rules(&config.failsafe_inbound, true);
    let failsafe_out = config::failsafe_rules(&config.failsafe_outbound, false);
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
                    comment: names::set_comment(id),
                    elements: set_elements(set.kind, &set.members, v6),
                },
            );
        }
    }
    for (id, policy) in &state.policies {
        for inbound in [true, false] {
            let chain = names::policy_chain(id, inbound);
            let rules = policy_chain(&chain, policy, inbound, Owner::Policy);
            rs.chains.insert(chain, rules);
        }
    }
    for (name, profile) in &state.profiles {
        for inbound in [true, false] {
            let chain = names::profile_chain(name, inbound);
            let rules = policy_chain(&chain, profile, inbound, Owner::Profile);
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
            true,
        );
        endpoint_chains(
            &mut rs.chains,
            &from,
            &ep.tiers,
            &ep.profiles,
            false,
            &ep.nets,
            true,
        );
        insert(&mut maps, MAP_TO_WORKLOAD, map_entry(iface, &to));
        insert(&mut maps, MAP_FROM_WORKLOAD, map_entry(iface, &from));
        ifaces.insert(format!("\"{iface}\""));
    }
    for hep in state.host_endpoints.values() {
        let iface = &hep.interface_name;
        // `*` (all interfaces) and empty names are not bound to one
        // interface; they are not rendered (see the crate docs).
        if iface.is_empty() || iface == "*" {
            continue;
        }
        let to = names::host_chain(iface, true, false);
        let from = names::host_chain(iface, false, false);
        endpoint_chains(
            &mut rs.chains,
            &to,
            &hep.tiers,
            &hep.profiles,
            true,
            &[],
            true,
        );
        endpoint_chains(
            &mut rs.chains,
            &from,
            &hep.tiers,
            &hep.profiles,
            false,
            &[],
            true,
        );
        failsafe(&mut rs.chains, &to, &failsafe_in);
        failsafe(&mut rs.chains, &from, &failsafe_out);
        insert(&mut maps, MAP_TO_HOST, map_entry(iface, &to));
        insert(&mut maps, MAP_FROM_HOST, map_entry(iface, &from));
        if hep
            .forward_tiers
            .iter()
            .any(|t| !t.inbound.is_empty() || !t.outbound.is_empty())
        {
            let to = names::host_chain(iface, true, true);
            let from = names::host_chain(iface, false, true);
            endpoint_chains(
                &mut rs.chains,
                &to,
                &hep.forward_tiers,
                &[],
                true,
                &[],
                false,
            );
            endpoint_chains(
                &mut rs.chains,
                &from,
                &hep.forward_tiers,
                &[],
                false,
                &[],
                false,
            );
            insert(&mut maps, MAP_TO_HOST_FWD, map_entry(iface, &to));
            insert(&mut maps, MAP_FROM_HOST_FWD, map_entry(iface, &from));
        }
    }
    for (name, def) in maps {
        rs.sets.insert(name.to_string(), def);
    }
    rs.sets.insert(
        SET_WORKLOAD_IFACES.to_string(),
        SetDef {
            type_: "ifname",
            interval: false,
            comment: "programmed workload interfaces".into(),
            elements: ifaces,
        },
    );
    rs
}

/// Puts the failsafe rules in front of a host endpoint chain, so its policy
/// can never cut SSH, DHCP, BGP, etcd, Typha or the API server (Calico's
/// defaults; configurable).
fn failsafe(chains: &mut BTreeMap<String, Rules>, chain: &str, rules: &[String]) {
    if let Some(existing) = chains.get_mut(chain) {
        let mut out: Rules = rules
            .iter()
            .map(|r| with_id(chain, "failsafe", r))
            .collect();
        out.append(existing);
        *existing = out;
    }
}

fn insert(maps: &mut BTreeMap<&str, SetDef>, map: &str, entry: String) {
    if let Some(def) = maps.get_mut(map) {
        def.elements.insert(entry);
    }
}

#[cfg(test)]
mod tests;
