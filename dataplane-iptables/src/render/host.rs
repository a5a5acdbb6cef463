//! Host endpoints: per interface, the chains of each kind of policy and
//! the dispatch entries that reach them (Calico's host endpoint chains,
//! `felix/rules/endpoints.go`, with nftables hooks for its tables).
//!
//! - normal policy (`mnl-th-`, `mnl-fh-`): traffic to and from the host
//!   itself; failsafe ports, tiers, profiles, then drop;
//! - `applyOnForward` policy (`mnl-thfw-`, `mnl-fhfw-`): traffic forwarded
//!   through the interface; only when the endpoint has forward policy in
//!   some direction (otherwise forwarded traffic is not policed here), no
//!   failsafe ports, no profiles, no final drop;
//! - untracked policy (`mnl-thu-`, `mnl-fhu-`, raw priority): both
//!   directions' failsafe ports, then tiers whose allow also marks the
//!   packet untracked; nothing else is decided there;
//! - pre-DNAT policy (`mnl-thd-`, ingress only): inbound failsafe ports,
//!   then tiers; nothing else is decided there.
//!
//! One endpoint per interface: when several name the same interface, the
//! one with the lowest id (Calico's choice). The all-interfaces endpoint
//! (`*`, the lowest id again) applies to every interface that no named
//! endpoint covers and that is not a workload's (loopback included, as in
//! Calico), through the `mnl-any-*` chains; its untracked policy is not
//! applied (Calico does not support it either). An endpoint with no
//! interface name (matched by `expectedIPs` in Calico) is not rendered:
//! the renderer does not know the node's addresses.

use std::collections::{BTreeMap, BTreeSet};

use manul_dataplane_api::{DesiredState, HostEndpoint, TierPolicies};

use super::{
    ANY_FROM_HOST, ANY_FROM_HOST_FWD, ANY_TO_HOST, ANY_TO_HOST_DNAT, ANY_TO_HOST_FWD, ChainKind,
    MAP_FROM_HOST, MAP_FROM_HOST_FWD, MAP_FROM_HOST_RAW, MAP_TO_HOST, MAP_TO_HOST_DNAT,
    MAP_TO_HOST_FWD, MAP_TO_HOST_RAW, NftConfig, Rules, SET_HOST_IFACES, SetDef, config,
    endpoint_chains, insert, map_entry, with_id,
};
use crate::names::{self, ALL_INTERFACES, HostChain};

/// Whether any tier has a policy for either direction.
fn has_policies(tiers: &[TierPolicies]) -> bool {
    tiers
        .iter()
        .any(|t| !t.inbound.is_empty() || !t.outbound.is_empty())
}

/// Whether any tier has a policy for the inbound direction.
fn has_inbound(tiers: &[TierPolicies]) -> bool {
    tiers.iter().any(|t| !t.inbound.is_empty())
}

/// The endpoint used for each interface name (`*` included): the lowest
/// id among those naming it.
fn by_interface(state: &DesiredState) -> BTreeMap<&str, &HostEndpoint> {
    let mut out: BTreeMap<&str, &HostEndpoint> = BTreeMap::new();
    // `host_endpoints` is ordered by id, so the first one seen wins.
    for hep in state.host_endpoints.values() {
        if !hep.interface_name.is_empty() {
            out.entry(hep.interface_name.as_str()).or_insert(hep);
        }
    }
    out
}

/// Renders every host endpoint's chains into `chains` and its dispatch
/// entries into `maps`; returns the named interfaces (as set elements).
pub(super) fn render(
    state: &DesiredState,
    config: &NftConfig,
    chains: &mut BTreeMap<String, Rules>,
    maps: &mut BTreeMap<&str, SetDef>,
) -> BTreeSet<crate::element::Element> {
    let mut named = BTreeSet::new();
    let mut any: BTreeMap<&str, Rules> = [
        ANY_TO_HOST,
        ANY_FROM_HOST,
        ANY_TO_HOST_FWD,
        ANY_FROM_HOST_FWD,
        ANY_TO_HOST_DNAT,
    ]
    .into_iter()
    .map(|c| (c, Rules::new()))
    .collect();
    for (iface, hep) in by_interface(state) {
        let wildcard = iface == ALL_INTERFACES;
        let made = endpoint(hep, iface, config, chains, !wildcard);
        if wildcard {
            for (dispatch, inbound, target) in [
                (ANY_TO_HOST, true, Some(made.to_host)),
                (ANY_FROM_HOST, false, Some(made.from_host)),
                (
                    ANY_TO_HOST_FWD,
                    true,
                    made.forward.as_ref().map(|f| f.0.clone()),
                ),
                (ANY_FROM_HOST_FWD, false, made.forward.map(|f| f.1)),
                (ANY_TO_HOST_DNAT, true, made.pre_dnat),
            ] {
                if let (Some(target), Some(rules)) = (target, any.get_mut(dispatch)) {
                    *rules = wildcard_dispatch(dispatch, inbound, &target, config);
                }
            }
            continue;
        }
        named.insert(crate::element::Element::iface(iface));
        insert(maps, MAP_TO_HOST, map_entry(iface, &made.to_host));
        insert(maps, MAP_FROM_HOST, map_entry(iface, &made.from_host));
        if let Some((to, from)) = &made.forward {
            insert(maps, MAP_TO_HOST_FWD, map_entry(iface, to));
            insert(maps, MAP_FROM_HOST_FWD, map_entry(iface, from));
        }
        if let Some((to, from)) = &made.untracked {
            insert(maps, MAP_TO_HOST_RAW, map_entry(iface, to));
            insert(maps, MAP_FROM_HOST_RAW, map_entry(iface, from));
        }
        if let Some(to) = &made.pre_dnat {
            insert(maps, MAP_TO_HOST_DNAT, map_entry(iface, to));
        }
    }
    for (name, rules) in any {
        chains.insert(name.to_string(), rules);
    }
    named
}

/// The chains one endpoint got.
struct Made {
    to_host: String,
    from_host: String,
    forward: Option<(String, String)>,
    untracked: Option<(String, String)>,
    pre_dnat: Option<String>,
}

/// Renders the chains of `hep` for interface `iface` (`*` for every
/// other); untracked chains only when `untracked_allowed`.
fn endpoint(
    hep: &HostEndpoint,
    iface: &str,
    config: &NftConfig,
    chains: &mut BTreeMap<String, Rules>,
    untracked_allowed: bool,
) -> Made {
    let chain = |inbound, kind| names::host_chain(iface, inbound, kind);
    let to_host = chain(true, HostChain::Normal);
    let from_host = chain(false, HostChain::Normal);
    for (name, inbound) in [(&to_host, true), (&from_host, false)] {
        endpoint_chains(
            chains,
            name,
            &hep.tiers,
            &hep.profiles,
            inbound,
            &[],
            ChainKind::Normal,
            config.flows.map(|f| f.group),
        );
        let ports = if inbound {
            &config.failsafe_inbound
        } else {
            &config.failsafe_outbound
        };
        failsafe_first(chains, name, &config::failsafe_rules(ports, inbound));
    }
    let forward = has_policies(&hep.forward_tiers).then(|| {
        let (to, from) = (
            chain(true, HostChain::Forward),
            chain(false, HostChain::Forward),
        );
        for (name, inbound) in [(&to, true), (&from, false)] {
            endpoint_chains(
                chains,
                name,
                &hep.forward_tiers,
                &[],
                inbound,
                &[],
                ChainKind::Forward,
                config.flows.map(|f| f.group),
            );
        }
        (to, from)
    });
    let untracked = (untracked_allowed && has_policies(&hep.untracked_tiers)).then(|| {
        let (to, from) = (
            chain(true, HostChain::Untracked),
            chain(false, HostChain::Untracked),
        );
        for (name, inbound) in [(&to, true), (&from, false)] {
            endpoint_chains(
                chains,
                name,
                &hep.untracked_tiers,
                &[],
                inbound,
                &[],
                ChainKind::Untracked,
                config.flows.map(|f| f.group),
            );
            failsafe_first(chains, name, &config::failsafe_raw_rules(config, inbound));
        }
        (to, from)
    });
    let pre_dnat = has_inbound(&hep.pre_dnat_tiers).then(|| {
        let to = chain(true, HostChain::PreDnat);
        endpoint_chains(
            chains,
            &to,
            &hep.pre_dnat_tiers,
            &[],
            true,
            &[],
            ChainKind::PreDnat,
            config.flows.map(|f| f.group),
        );
        failsafe_first(
            chains,
            &to,
            &config::failsafe_rules(&config.failsafe_inbound, true),
        );
        to
    });
    Made {
        to_host,
        from_host,
        forward,
        untracked,
        pre_dnat,
    }
}

/// The all-interfaces endpoint's dispatch for one hook: interfaces of named
/// endpoints and workloads are left alone, every other goes to `target`.
fn wildcard_dispatch(chain: &str, inbound: bool, target: &str, config: &NftConfig) -> Rules {
    let dir = if inbound { "iif" } else { "oif" };
    let mut out = vec![with_id(
        chain,
        "named host endpoint",
        &format!("{dir}name @{SET_HOST_IFACES} return"),
    )];
    for p in &config.workload_prefixes {
        out.push(with_id(
            chain,
            "workload",
            &format!("{dir}name \"{p}*\" return"),
        ));
    }
    out.push(with_id(chain, "all interfaces", &format!("goto {target}")));
    out
}

/// Puts the failsafe rules in front of a host endpoint chain, so its policy
/// can never cut SSH, DHCP, BGP, etcd, Typha or the API server (Calico's
/// defaults; configurable).
fn failsafe_first(chains: &mut BTreeMap<String, Rules>, chain: &str, rules: &[String]) {
    if let Some(existing) = chains.get_mut(chain) {
        let mut out: Rules = rules
            .iter()
            .map(|r| with_id(chain, "failsafe", r))
            .collect();
        out.append(existing);
        *existing = out;
    }
}
