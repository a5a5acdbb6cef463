//! Host endpoints: every kind of policy, the all-interfaces endpoint and
//! failsafe ports. `host_endpoints.nft` is the golden whole-table script
//! of [`hosts`]; `MANUL_UPDATE_GOLDEN=1` rewrites it.

use std::path::PathBuf;

use manul_dataplane_api::{HostEndpoint, Match, PolicyId, PortRange};

use super::*;
use crate::names::HostChain;

fn tier(name: &str, inbound: &[&PolicyId], outbound: &[&PolicyId]) -> TierPolicies {
    TierPolicies {
        name: name.into(),
        default_action: Action::Deny,
        inbound: inbound.iter().map(|p| (*p).clone()).collect(),
        outbound: outbound.iter().map(|p| (*p).clone()).collect(),
    }
}

fn tcp_port(id: &str, action: Action, port: u16) -> Rule {
    Rule {
        id: id.into(),
        action,
        ip_version: None,
        protocol: Some(6),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match::default(),
        dst: Match {
            ports: vec![PortRange {
                first: port,
                last: port,
            }],
            ..Match::default()
        },
    }
}

fn hep(id: &str, iface: &str) -> HostEndpoint {
    HostEndpoint {
        id: id.into(),
        interface_name: iface.into(),
        expected_ips: vec![],
        tiers: vec![],
        pre_dnat_tiers: vec![],
        untracked_tiers: vec![],
        forward_tiers: vec![],
        profiles: vec![],
    }
}

/// The workload state plus: `eth0` with normal, forward, untracked and
/// pre-DNAT policy; a second endpoint naming `eth0` (a higher id: not
/// used); the automatic all-interfaces endpoint with an allow-all profile
/// and an untracked policy (not applied on `*`).
fn hosts() -> DesiredState {
    let mut s = state();
    let host = pid("default", "host-ssh-and-kubelet");
    let fwd = pid("default", "forward-block-9999");
    let raw = pid("default", "untracked-dns");
    let dnat = pid("default", "pre-dnat-block-nodeports");
    s.policies.insert(
        host.clone(),
        Policy {
            inbound: vec![tcp_port("host/in/0", Action::Allow, 10250)],
            outbound: vec![Rule {
                id: "host/out/0".into(),
                action: Action::Allow,
                ..allow_from("sel:role == 'frontend'")
            }],
        },
    );
    s.policies.insert(
        fwd.clone(),
        Policy {
            inbound: vec![tcp_port("fwd/in/0", Action::Deny, 9999)],
            outbound: vec![],
        },
    );
    s.policies.insert(
        raw.clone(),
        Policy {
            inbound: vec![Rule {
                protocol: Some(17),
                ..tcp_port("raw/in/0", Action::Allow, 53)
            }],
            outbound: vec![Rule {
                protocol: Some(17),
                ..tcp_port("raw/out/0", Action::Allow, 53)
            }],
        },
    );
    s.policies.insert(
        dnat.clone(),
        Policy {
            inbound: vec![tcp_port("dnat/in/0", Action::Deny, 30080)],
            outbound: vec![],
        },
    );
    s.profiles.insert(
        "projectcalico-default-allow".into(),
        Policy {
            inbound: vec![Rule {
                protocol: None,
                dst: Match::default(),
                ..tcp_port("allow/in", Action::Allow, 1)
            }],
            outbound: vec![Rule {
                protocol: None,
                dst: Match::default(),
                ..tcp_port("allow/out", Action::Allow, 1)
            }],
        },
    );
    let mut eth0 = hep("node1-eth0", "eth0");
    eth0.tiers = vec![tier("default", &[&host], &[&host])];
    eth0.forward_tiers = vec![tier("default", &[&fwd], &[])];
    eth0.untracked_tiers = vec![tier("default", &[&raw], &[&raw])];
    eth0.pre_dnat_tiers = vec![tier("default", &[&dnat], &[])];
    s.host_endpoints.insert(eth0.id.clone(), eth0);
    let mut shadow = hep("node1-other-eth0", "eth0");
    shadow.profiles = vec!["projectcalico-default-allow".into()];
    s.host_endpoints.insert(shadow.id.clone(), shadow);
    let mut auto = hep("node1-auto-hep", "*");
    auto.profiles = vec!["projectcalico-default-allow".into()];
    auto.untracked_tiers = vec![tier("default", &[&raw], &[&raw])];
    s.host_endpoints.insert(auto.id.clone(), auto);
    s
}

#[test]
fn the_whole_table_matches_the_golden_script() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/render/tests/host_endpoints.nft");
    let got = crate::script::full(&render(&hosts()));
    if std::env::var_os("MANUL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(
        got == want,
        "the rendering differs from {} (MANUL_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn one_endpoint_per_interface_the_lowest_id() {
    let rs = render(&hosts());
    let to = names::host_chain("eth0", true, HostChain::Normal);
    assert_eq!(
        super::text(&rs.sets[MAP_TO_HOST].elements),
        BTreeSet::from([format!("\"eth0\" : jump {to}")])
    );
    // node1-eth0's policy, not node1-other-eth0's profile.
    let rules = texts(&rs, &to);
    assert!(rules.contains(&format!("jump {to}.t0")), "{rules:?}");
    assert!(
        !rules.iter().any(|r| r.contains("default-allow")),
        "{rules:?}"
    );
    assert_eq!(
        super::text(&rs.sets[SET_HOST_IFACES].elements),
        BTreeSet::from(["\"eth0\"".to_string()])
    );
}

#[test]
fn untracked_policy_is_at_raw_priority_both_ways_and_allows_untracked() {
    let rs = render(&hosts());
    let base = |name: &str| {
        rs.base
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, hook, _)| *hook)
            .unwrap()
    };
    assert!(base("mnl-raw-prerouting").contains("hook prerouting priority raw"));
    assert!(base("mnl-raw-output").contains("hook output priority raw"));
    for (inbound, map) in [(true, MAP_TO_HOST_RAW), (false, MAP_FROM_HOST_RAW)] {
        let chain = names::host_chain("eth0", inbound, HostChain::Untracked);
        assert!(super::text(&rs.sets[map].elements).contains(&format!("\"eth0\" : jump {chain}")));
        let rules = texts(&rs, &chain);
        // Failsafe ports of both directions first (replies are not known
        // as replies before conntrack), then the tier; an allow is
        // untracked; nothing is dropped at the end.
        let first_policy = rules
            .iter()
            .position(|r| r.starts_with("meta mark set"))
            .unwrap();
        assert!(rules[..first_policy].iter().all(|r| r.ends_with("accept")));
        assert!(rules[..first_policy].iter().any(|r| r.contains("sport")));
        assert!(rules[..first_policy].iter().any(|r| r.contains("dport")));
        assert!(rules.contains(&ACCEPTED_UNTRACKED.to_string()), "{rules:?}");
        assert_ne!(rules.last().map(String::as_str), Some("drop"));
        let t0 = texts(&rs, &format!("{chain}.t0"));
        assert_eq!(t0.last().map(String::as_str), Some("return"), "{t0:?}");
    }
    // Not on the all-interfaces endpoint, as in Calico.
    assert!(
        !rs.chains
            .contains_key(&names::host_chain("*", true, HostChain::Untracked))
    );
}

#[test]
fn pre_dnat_policy_is_ingress_only_before_dnat_and_decides_only_what_it_matches() {
    let rs = render(&hosts());
    let (_, hook, rules) = rs
        .base
        .iter()
        .find(|(n, _, _)| *n == "mnl-pre-dnat")
        .unwrap();
    assert!(
        hook.contains("hook prerouting priority dstnat - 1"),
        "{hook}"
    );
    let rules: Vec<&str> = rules.iter().map(|r| r.text.as_str()).collect();
    assert!(rules.contains(&"iifname vmap @mnl-to-host-dnat"));
    let chain = names::host_chain("eth0", true, HostChain::PreDnat);
    let texts = texts(&rs, &chain);
    assert!(texts[0].starts_with("tcp dport { 22,"), "{texts:?}");
    assert!(!texts.iter().any(|r| r.contains("mnl-pri-")), "no profiles");
    assert_ne!(texts.last().map(String::as_str), Some("drop"));
    // The all-interfaces endpoint has no pre-DNAT policy: its dispatch is
    // empty.
    assert!(rs.chains[ANY_TO_HOST_DNAT].is_empty());
}

#[test]
fn forward_policy_applies_only_with_apply_on_forward_tiers() {
    let rs = render(&hosts());
    let to = names::host_chain("eth0", true, HostChain::Forward);
    let rules = texts(&rs, &to);
    assert!(!rules.iter().any(|r| r.contains("mnl-pri-")), "no profiles");
    assert_ne!(rules.last().map(String::as_str), Some("drop"));
    assert_eq!(
        texts(&rs, &format!("{to}.t0")).last().map(String::as_str),
        Some("drop"),
        "tier defaults apply to forwarded traffic"
    );
    // Untracked or pre-DNAT allows skip it.
    let forward = base_rules(&rs, "mnl-forward");
    assert!(forward.contains(&format!(
        "meta mark & 0x00010000 == 0 iifname vmap @{MAP_TO_HOST_FWD}"
    )));
    // The all-interfaces endpoint has no forward policy: forwarded
    // traffic through other interfaces is not policed.
    assert!(rs.chains[ANY_TO_HOST_FWD].is_empty());
    assert!(rs.chains[ANY_FROM_HOST_FWD].is_empty());
}

#[test]
fn the_all_interfaces_endpoint_covers_what_no_named_one_does() {
    let config = NftConfig {
        workload_prefixes: vec!["mnl".into(), "tap".into()],
        ..NftConfig::default()
    };
    let rs = render_with(&hosts(), &config);
    let th = names::host_chain("*", true, HostChain::Normal);
    assert_eq!(
        texts(&rs, ANY_TO_HOST),
        vec![
            "iifname @mnl-host-ifaces return".to_string(),
            "iifname \"mnl*\" return".to_string(),
            "iifname \"tap*\" return".to_string(),
            format!("goto {th}"),
        ]
    );
    assert_eq!(
        texts(&rs, ANY_FROM_HOST).last(),
        Some(&format!(
            "goto {}",
            names::host_chain("*", false, HostChain::Normal)
        ))
    );
    let rules = texts(&rs, &th);
    assert!(rules[0].starts_with("tcp dport { 22,"), "failsafe first");
    assert!(rules.contains(&"jump mnl-pri-projectcalico-default-allow".to_string()));
    // The base chains reach it after the named endpoints.
    let input = base_rules(&rs, "mnl-input");
    let named = input
        .iter()
        .position(|r| r == "iifname vmap @mnl-to-host")
        .unwrap();
    assert_eq!(input[named + 1], format!("jump {ANY_TO_HOST}"));
    // Traffic allowed by untracked or pre-DNAT policy is not judged again.
    assert_eq!(
        input[named - 1],
        "meta mark & 0x00010000 == 0x00010000 accept"
    );
}

#[test]
fn a_host_endpoint_without_an_interface_name_is_not_rendered() {
    let mut s = state();
    let mut h = hep("by-address", "");
    h.expected_ips = vec!["10.0.0.10".parse().unwrap()];
    s.host_endpoints.insert(h.id.clone(), h);
    let rs = render(&s);
    assert!(rs.sets[MAP_TO_HOST].elements.is_empty());
    assert!(rs.chains[ANY_TO_HOST].is_empty());
}
