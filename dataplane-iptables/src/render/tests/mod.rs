use std::collections::BTreeSet;

use manul_dataplane_api::testutil::{pid, rule};
use manul_dataplane_api::{
    Action, DesiredState, EndpointId, IpSet, IpSetKind, IpSetMember, Policy, Rule, TierPolicies,
    WorkloadEndpoint,
};

use super::*;

/// A set's elements as nft writes them.
pub(super) fn text(elements: &BTreeSet<Element>) -> BTreeSet<String> {
    elements.iter().map(ToString::to_string).collect()
}

fn allow_from(set: &str) -> Rule {
    let mut r = rule("r0", Action::Allow);
    r.protocol = Some(6);
    r.src.ip_sets = vec![set.into()];
    r
}

fn state() -> DesiredState {
    let mut s = DesiredState::default();
    s.ip_sets.insert(
        "sel:role == 'frontend'".into(),
        IpSet {
            kind: IpSetKind::Net,
            members: [
                IpSetMember::Net("10.65.0.2/32".parse().unwrap()),
                IpSetMember::Net("10.65.0.0/24".parse().unwrap()),
                IpSetMember::Net("fd00::2/128".parse().unwrap()),
            ]
            .into_iter()
            .collect(),
        },
    );
    s.policies.insert(
        pid("security", "gate"),
        Policy {
            inbound: vec![Rule {
                action: Action::Pass,
                ..allow_from("sel:role == 'frontend'")
            }],
            outbound: vec![],
        },
    );
    s.policies.insert(
        pid("default", "production/api"),
        Policy {
            inbound: vec![allow_from("sel:role == 'frontend'")],
            outbound: vec![],
        },
    );
    s.profiles
        .insert("kns.production".into(), Policy::default());
    s.workload_endpoints.insert(
        EndpointId {
            namespace: "production".into(),
            name: "api".into(),
        },
        WorkloadEndpoint {
            id: EndpointId {
                namespace: "production".into(),
                name: "api".into(),
            },
            interface_name: "mnlapi".into(),
            nets: vec!["10.65.0.3/32".parse().unwrap()],
            mac: None,
            tiers: vec![
                TierPolicies {
                    name: "security".into(),
                    default_action: Action::Deny,
                    inbound: vec![pid("security", "gate")],
                    outbound: vec![],
                },
                TierPolicies {
                    name: "default".into(),
                    default_action: Action::Deny,
                    inbound: vec![pid("default", "production/api")],
                    outbound: vec![],
                },
            ],
            profiles: vec!["kns.production".into()],
        },
    );
    s
}

fn texts(rs: &Ruleset, chain: &str) -> Vec<String> {
    rs.chains
        .get(chain)
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .iter()
        .map(|r| r.text.clone())
        .collect()
}

#[test]
fn sets_are_split_by_family_and_aggregated() {
    let rs = render(&state());
    let v4 = &rs.sets[&names::ip_set("sel:role == 'frontend'", false)];
    let v6 = &rs.sets[&names::ip_set("sel:role == 'frontend'", true)];
    assert_eq!(
        text(&v4.elements),
        BTreeSet::from(["10.65.0.0/24".to_string()])
    );
    assert_eq!(
        text(&v6.elements),
        BTreeSet::from(["fd00::2/128".to_string()])
    );
    assert!(v4.interval);
    assert_eq!(v4.comment, "sel:role == 'frontend'");
}

#[test]
fn endpoint_chains_walk_tiers_then_profiles_then_drop() {
    let rs = render(&state());
    let to = names::workload_chain("mnlapi", true);
    assert_eq!(
        texts(&rs, &to),
        vec![
            "meta mark set meta mark & 0xfffcffff".to_string(),
            format!("jump {to}.t0"),
            ACCEPTED.to_string(),
            format!("jump {to}.t1"),
            ACCEPTED.to_string(),
            "jump mnl-pri-kns.production".to_string(),
            ACCEPTED.to_string(),
            "drop".to_string(),
        ]
    );
    let t0 = texts(&rs, &format!("{to}.t0"));
    assert_eq!(t0[0], "jump mnl-pi-security/gate");
    assert_eq!(t0.last().map(String::as_str), Some("drop"));
    // Outbound: no tier has outbound policies, so only profiles, after the
    // anti-spoofing check.
    let from = names::workload_chain("mnlapi", false);
    let f = texts(&rs, &from);
    assert_eq!(f[0], "ip saddr != { 10.65.0.3/32 } drop");
    assert!(!f.iter().any(|r| r.contains(".t0")));
    assert!(!rs.chains.contains_key(&format!("{from}.t0")));
}

#[test]
fn pass_returns_from_the_policy_and_skips_the_rest_of_the_tier() {
    let rs = render(&state());
    let gate = texts(&rs, "mnl-pi-security/gate");
    // One rule per family: the set has IPv4 and IPv6 halves.
    assert_eq!(gate.len(), 2);
    assert!(gate[0].starts_with("meta l4proto 6 ip saddr @"));
    assert!(gate[1].starts_with("meta l4proto 6 ip6 saddr @"));
    for rule in &gate {
        assert!(rule.ends_with(&format!(
            "meta mark set meta mark | {MARK_PASS:#010x} return"
        )));
    }
    let t0 = texts(
        &rs,
        &format!("{}.t0", names::workload_chain("mnlapi", true)),
    );
    assert!(t0[2].starts_with(&format!(
        "meta mark & {MARK_PASS:#010x} == {MARK_PASS:#010x}"
    )));
    assert!(t0[2].ends_with("return"));
}

#[test]
fn tier_default_pass_returns_instead_of_dropping() {
    let mut s = state();
    for ep in s.workload_endpoints.values_mut() {
        ep.tiers[0].default_action = Action::Pass;
    }
    let rs = render(&s);
    let t0 = texts(
        &rs,
        &format!("{}.t0", names::workload_chain("mnlapi", true)),
    );
    assert_eq!(t0.last().map(String::as_str), Some("return"));
}

#[test]
fn dispatch_knows_every_programmed_interface() {
    let rs = render(&state());
    assert_eq!(
        text(&rs.sets[MAP_TO_WORKLOAD].elements),
        BTreeSet::from(["\"mnlapi\" : jump mnl-tw-mnlapi".to_string()])
    );
    assert_eq!(
        text(&rs.sets[MAP_FROM_WORKLOAD].elements),
        BTreeSet::from(["\"mnlapi\" : jump mnl-fw-mnlapi".to_string()])
    );
    assert_eq!(
        text(&rs.sets[SET_WORKLOAD_IFACES].elements),
        BTreeSet::from(["\"mnlapi\"".to_string()])
    );
    let empty = render(&DesiredState::default());
    assert!(empty.sets[SET_WORKLOAD_IFACES].elements.is_empty());
    // Only the all-interfaces dispatch chains, empty, and the services'
    // fixed chains.
    let fixed = crate::render::services::fixed_chains(&NftConfig::default());
    assert!(
        empty
            .chains
            .iter()
            .filter(|(name, _)| !fixed.contains_key(*name))
            .all(|(name, rules)| name.starts_with("mnl-any-") && rules.is_empty())
    );
    assert!(
        fixed
            .iter()
            .all(|(name, rules)| empty.chains[name] == *rules)
    );
}

#[test]
fn comments_change_with_the_rule_and_the_chain() {
    let a = with_comment("c", "drop");
    assert_eq!(a, with_comment("c", "drop"));
    assert_ne!(a.comment, with_comment("c", "accept").comment);
    assert_ne!(a.comment, with_comment("d", "drop").comment);
    assert!(
        with_id("c", "ns/p/inbound/0", "drop")
            .comment
            .starts_with("ns/p/inbound/0 ")
    );
}

#[test]
fn rendering_is_deterministic_and_incremental_diff_is_empty() {
    let a = render(&state());
    let b = render(&state());
    assert_eq!(a, b);
    assert_eq!(crate::script::incremental(&a, &b), "");
}

#[test]
fn host_endpoints_get_failsafe_ports_before_their_policy() {
    let mut s = state();
    s.host_endpoints.insert(
        "node1-eth0".into(),
        manul_dataplane_api::HostEndpoint {
            id: "node1-eth0".into(),
            interface_name: "eth0".into(),
            expected_ips: vec![],
            tiers: vec![],
            pre_dnat_tiers: vec![],
            untracked_tiers: vec![],
            forward_tiers: vec![],
            profiles: vec![],
        },
    );
    let rs = render(&s);
    let to = texts(
        &rs,
        &names::host_chain("eth0", true, names::HostChain::Normal),
    );
    assert!(to[0].starts_with("tcp dport { 22, 179, 2379, 2380, 5473,"));
    assert_eq!(to.last().map(String::as_str), Some("drop"));
    let from = texts(
        &rs,
        &names::host_chain("eth0", false, names::HostChain::Normal),
    );
    assert!(from[1].starts_with("udp dport { 53, 67 }"));
    assert!(text(&rs.sets[MAP_TO_HOST].elements).contains("\"eth0\" : jump mnl-th-eth0"));
    // No forward policies: forwarded traffic is not policed.
    assert!(rs.sets[MAP_TO_HOST_FWD].elements.is_empty());
}

fn base_rules(rs: &Ruleset, chain: &str) -> Vec<String> {
    rs.base
        .iter()
        .find(|(name, _, _)| *name == chain)
        .map(|(_, _, rules)| rules.iter().map(|r| r.text.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn every_workload_prefix_is_fail_closed() {
    let config = NftConfig {
        workload_prefixes: vec!["cali".into(), "tap".into()],
        ..NftConfig::default()
    };
    let rs = render_with(&state(), &config);
    let forward = base_rules(&rs, "mnl-forward");
    for want in [
        "iifname \"cali*\" iifname != @mnl-wl-ifaces drop",
        "oifname \"cali*\" oifname != @mnl-wl-ifaces drop",
        "iifname \"tap*\" iifname != @mnl-wl-ifaces drop",
        "oifname \"tap*\" oifname != @mnl-wl-ifaces drop",
    ] {
        assert!(forward.iter().any(|r| r == want), "{want} in {forward:?}");
    }
    assert!(!forward.iter().any(|r| r.contains("mnl*")), "{forward:?}");
    assert!(
        base_rules(&rs, "mnl-input")
            .iter()
            .any(|r| r == "iifname \"tap*\" iifname != @mnl-wl-ifaces drop")
    );
    assert!(
        base_rules(&rs, "mnl-output")
            .iter()
            .any(|r| r == "oifname \"cali*\" oifname != @mnl-wl-ifaces drop")
    );
    // The whole-table script carries them.
    assert!(crate::script::full(&rs).contains("iifname \"tap*\" iifname != @mnl-wl-ifaces drop"));
}

#[test]
fn endpoint_to_host_action_follows_the_workloads_outbound_policy() {
    for (action, want) in [
        (EndpointToHost::Drop, "iifname \"mnl*\" drop"),
        (EndpointToHost::Accept, "iifname \"mnl*\" accept"),
        (EndpointToHost::Return, "iifname \"mnl*\" return"),
    ] {
        let config = NftConfig {
            endpoint_to_host: action,
            ..NftConfig::default()
        };
        let input = base_rules(&render_with(&state(), &config), "mnl-input");
        let from_wl = input
            .iter()
            .position(|r| r == "iifname vmap @mnl-from-wl")
            .unwrap();
        // Host endpoint policy (a wildcard's included) never sees it.
        assert_eq!(input[from_wl + 1], want, "{action:?}");
        assert_eq!(
            input[from_wl + 3],
            "iifname vmap @mnl-to-host",
            "{action:?}"
        );
    }
}

#[test]
fn failsafe_ports_come_from_the_configuration() {
    let mut s = state();
    s.host_endpoints.insert(
        "node1-eth0".into(),
        manul_dataplane_api::HostEndpoint {
            id: "node1-eth0".into(),
            interface_name: "eth0".into(),
            expected_ips: vec![],
            tiers: vec![],
            pre_dnat_tiers: vec![],
            untracked_tiers: vec![],
            forward_tiers: vec![],
            profiles: vec![],
        },
    );
    let config = NftConfig {
        failsafe_inbound: vec![
            Failsafe::new("tcp", 2222),
            Failsafe {
                protocol: "udp",
                port: 500,
                net: Some("10.0.0.0/8".parse().unwrap()),
            },
        ],
        failsafe_outbound: vec![],
        ..NftConfig::default()
    };
    let rs = render_with(&s, &config);
    let to = texts(
        &rs,
        &names::host_chain("eth0", true, names::HostChain::Normal),
    );
    assert_eq!(to[0], "tcp dport 2222 accept");
    assert_eq!(to[1], "ip saddr 10.0.0.0/8 udp dport 500 accept");
    let from = texts(
        &rs,
        &names::host_chain("eth0", false, names::HostChain::Normal),
    );
    assert!(!from.iter().any(|r| r.contains("dport 53")), "{from:?}");
}

mod host;
mod service_conflicts;
mod services;
