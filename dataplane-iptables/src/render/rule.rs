//! One contract rule as nftables rule text, for one address family.

use std::fmt::Write as _;

use ipnet::IpNet;
use manul_dataplane_api::{Action, Icmp, Match, PortRange, Rule};

use crate::names::{self, MARK_ACCEPT, MARK_PASS};

/// Where a rule sits: Pass means "next tier" in a policy but "next
/// profile" in a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Policy,
    Profile,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn addr(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn is(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }

    fn version(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

/// The verdict statement of an action; `None` for Log (which goes on).
fn verdict(action: Action, owner: Owner, rule_id: &str) -> String {
    match (action, owner) {
        (Action::Allow, _) => format!("meta mark set meta mark | {MARK_ACCEPT:#010x} return"),
        (Action::Deny, _) => "drop".to_string(),
        (Action::Pass, Owner::Policy) => {
            format!("meta mark set meta mark | {MARK_PASS:#010x} return")
        }
        (Action::Pass, Owner::Profile) => "return".to_string(),
        (Action::Log, _) => {
            let prefix: String = format!("manul {rule_id}: ")
                .chars()
                .filter(|c| *c != '"' && *c != '\\')
                .take(120)
                .collect();
            format!("log prefix \"{prefix}\"")
        }
    }
}

/// `{ a, b }` or a single item.
fn anon<T: ToString>(items: &[T]) -> String {
    if items.len() == 1 {
        items[0].to_string()
    } else {
        let list: Vec<String> = items.iter().map(T::to_string).collect();
        format!("{{ {} }}", list.join(", "))
    }
}

fn ports(ranges: &[PortRange]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            }
        })
        .collect();
    anon(&items)
}

fn nets_of(family: Family, nets: &[IpNet]) -> Vec<IpNet> {
    let mine: Vec<IpNet> = nets.iter().copied().filter(|n| family.is(n)).collect();
    IpNet::aggregate(&mine)
}

fn icmp(family: Family, icmp: &Icmp, negate: bool) -> String {
    let kw = match family {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    };
    let op = if negate { "!= " } else { "" };
    match icmp.code {
        // A negated type-and-code match excludes only that pair: nft has no
        // "not (a and b)" in one rule, so match it as type+code concatenated.
        Some(code) if negate => format!("{kw} type . {kw} code != {} . {code}", icmp.icmp_type),
        Some(code) => format!("{kw} type {} {kw} code {code}", icmp.icmp_type),
        None => format!("{kw} type {op}{}", icmp.icmp_type),
    }
}

/// The alternatives of one side's port match: a rule's `ports` may mix
/// numbers and names, which nft cannot OR in one rule, so each is a
/// separate rule with the same verdict. `None` means "no port condition".
fn port_alternatives(family: Family, side: &str, m: &Match) -> Vec<Option<String>> {
    if m.ports.is_empty() && m.named_port_sets.is_empty() {
        return vec![None];
    }
    let mut alts = Vec::new();
    if !m.ports.is_empty() {
        alts.push(Some(format!("th {side}port {}", ports(&m.ports))));
    }
    let addr = family.addr();
    for set in &m.named_port_sets {
        alts.push(Some(format!(
            "{addr} {side}addr . meta l4proto . th {side}port @{}",
            names::ip_set(set, family == Family::V6)
        )));
    }
    alts
}

/// The conditions of one side other than its port alternatives; `None` if
/// the side cannot match this family at all.
fn side_conditions(family: Family, side: &str, m: &Match) -> Option<Vec<String>> {
    let addr = family.addr();
    let v6 = family == Family::V6;
    let mut out = Vec::new();
    if !m.nets.is_empty() {
        let nets = nets_of(family, &m.nets);
        if nets.is_empty() {
            return None;
        }
        out.push(format!("{addr} {side}addr {}", anon(&nets)));
    }
    let not_nets = nets_of(family, &m.not_nets);
    if !not_nets.is_empty() {
        out.push(format!("{addr} {side}addr != {}", anon(&not_nets)));
    }
    if !m.not_ports.is_empty() {
        out.push(format!("th {side}port != {}", ports(&m.not_ports)));
    }
    for set in &m.not_named_port_sets {
        out.push(format!(
            "{addr} {side}addr . meta l4proto . th {side}port != @{}",
            names::ip_set(set, v6)
        ));
    }
    for set in &m.ip_sets {
        out.push(format!("{addr} {side}addr @{}", names::ip_set(set, v6)));
    }
    for set in &m.not_ip_sets {
        out.push(format!("{addr} {side}addr != @{}", names::ip_set(set, v6)));
    }
    Some(out)
}

fn has_ports(m: &Match) -> bool {
    !m.ports.is_empty()
        || !m.not_ports.is_empty()
        || !m.named_port_sets.is_empty()
        || !m.not_named_port_sets.is_empty()
}

/// The nft rules (without comments) that implement `rule` for `family`:
/// none if the rule cannot match that family, several when its port list
/// mixes numbers and names.
pub fn render(rule: &Rule, family: Family, owner: Owner) -> Vec<String> {
    render_logged(rule, family, owner, None)
}

/// [`render`], with `log` (an nft `log` statement) before the verdict.
pub fn render_logged(rule: &Rule, family: Family, owner: Owner, log: Option<&str>) -> Vec<String> {
    if rule.ip_version.is_some_and(|v| v != family.version()) {
        return Vec::new();
    }
    match (rule.protocol, family) {
        (Some(1), Family::V6) | (Some(58), Family::V4) => return Vec::new(),
        _ => {}
    }
    let mut head = Vec::new();
    if rule.ip_version.is_some() {
        head.push(format!(
            "meta nfproto {}",
            if family == Family::V4 { "ipv4" } else { "ipv6" }
        ));
    }
    match rule.protocol {
        Some(p) => head.push(format!("meta l4proto {p}")),
        None if has_ports(&rule.src) || has_ports(&rule.dst) => {
            head.push("meta l4proto { 6, 17, 132 }".to_string());
        }
        None => {}
    }
    if let Some(p) = rule.not_protocol {
        head.push(format!("meta l4proto != {p}"));
    }
    if let Some(i) = &rule.icmp {
        head.push(icmp(family, i, false));
    }
    if let Some(i) = &rule.not_icmp {
        head.push(icmp(family, i, true));
    }
    let (Some(src), Some(dst)) = (
        side_conditions(family, "s", &rule.src),
        side_conditions(family, "d", &rule.dst),
    ) else {
        return Vec::new();
    };
    head.extend(src);
    head.extend(dst);
    let tail = match log {
        Some(log) => format!("{log} {}", verdict(rule.action, owner, &rule.id)),
        None => verdict(rule.action, owner, &rule.id),
    };
    let mut out = Vec::new();
    for sp in port_alternatives(family, "s", &rule.src) {
        for dp in port_alternatives(family, "d", &rule.dst) {
            let mut text = String::new();
            for part in head.iter().chain(sp.iter()).chain(dp.iter()) {
                let _ = write!(text, "{part} ");
            }
            text.push_str(&tail);
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use manul_dataplane_api::testutil::net;
    use manul_dataplane_api::{Action, Icmp, Match, PortRange, Rule};

    use super::*;

    fn rule(action: Action) -> Rule {
        manul_dataplane_api::testutil::rule("default/p/inbound/0", action)
    }

    #[test]
    fn table_of_rules_and_their_text() {
        let allow_tcp_80 = Rule {
            protocol: Some(6),
            dst: Match {
                ports: vec![
                    PortRange {
                        first: 80,
                        last: 80,
                    },
                    PortRange {
                        first: 8000,
                        last: 8080,
                    },
                ],
                ..Match::default()
            },
            ..rule(Action::Allow)
        };
        let deny_nets = Rule {
            src: Match {
                nets: vec![net("10.0.0.0/8"), net("10.1.0.0/16"), net("fd00::/8")],
                not_nets: vec![net("10.2.0.0/16")],
                ..Match::default()
            },
            ..rule(Action::Deny)
        };
        let pass_sets = Rule {
            src: Match {
                ip_sets: vec!["sel:a == 'b'".into()],
                not_ip_sets: vec!["sel:c == 'd'".into()],
                ..Match::default()
            },
            ..rule(Action::Pass)
        };
        let icmp = Rule {
            protocol: Some(1),
            icmp: Some(Icmp {
                icmp_type: 8,
                code: Some(0),
            }),
            ..rule(Action::Allow)
        };
        let accept = format!("meta mark set meta mark | {MARK_ACCEPT:#010x} return");
        let pass = format!("meta mark set meta mark | {MARK_PASS:#010x} return");
        let s4 = names::ip_set("sel:a == 'b'", false);
        let n4 = names::ip_set("sel:c == 'd'", false);
        let cases: Vec<(&Rule, Family, Owner, Vec<String>)> = vec![
            (
                &allow_tcp_80,
                Family::V4,
                Owner::Policy,
                vec![format!(
                    "meta l4proto 6 th dport {{ 80, 8000-8080 }} {accept}"
                )],
            ),
            (
                &allow_tcp_80,
                Family::V6,
                Owner::Policy,
                vec![format!(
                    "meta l4proto 6 th dport {{ 80, 8000-8080 }} {accept}"
                )],
            ),
            (
                &deny_nets,
                Family::V4,
                Owner::Policy,
                vec!["ip saddr 10.0.0.0/8 ip saddr != 10.2.0.0/16 drop".into()],
            ),
            (
                &deny_nets,
                Family::V6,
                Owner::Policy,
                vec!["ip6 saddr fd00::/8 drop".into()],
            ),
            (
                &pass_sets,
                Family::V4,
                Owner::Policy,
                vec![format!("ip saddr @{s4} ip saddr != @{n4} {pass}")],
            ),
            (
                &pass_sets,
                Family::V4,
                Owner::Profile,
                vec![format!("ip saddr @{s4} ip saddr != @{n4} return")],
            ),
            (
                &icmp,
                Family::V4,
                Owner::Policy,
                vec![format!("meta l4proto 1 icmp type 8 icmp code 0 {accept}")],
            ),
            (&icmp, Family::V6, Owner::Policy, vec![]),
        ];
        for (rule, family, owner, want) in cases {
            assert_eq!(render(rule, family, owner), want, "{rule:?} {family:?}");
        }
    }

    #[test]
    fn named_ports_and_numbers_become_alternatives() {
        let r = Rule {
            protocol: Some(6),
            dst: Match {
                ports: vec![PortRange {
                    first: 53,
                    last: 53,
                }],
                named_port_sets: vec!["np:tcp:http:all()".into()],
                ..Match::default()
            },
            ..rule(Action::Allow)
        };
        let got = render(&r, Family::V4, Owner::Policy);
        assert_eq!(got.len(), 2);
        assert!(got[0].contains("th dport 53"));
        assert!(got[1].contains(&format!(
            "ip daddr . meta l4proto . th dport @{}",
            names::ip_set("np:tcp:http:all()", false)
        )));
    }

    #[test]
    fn ip_version_and_ports_without_protocol() {
        let r = Rule {
            ip_version: Some(6),
            src: Match {
                not_ports: vec![PortRange {
                    first: 1,
                    last: 1023,
                }],
                ..Match::default()
            },
            ..rule(Action::Deny)
        };
        assert!(render(&r, Family::V4, Owner::Policy).is_empty());
        assert_eq!(
            render(&r, Family::V6, Owner::Policy),
            vec![
                "meta nfproto ipv6 meta l4proto { 6, 17, 132 } th sport != 1-1023 drop".to_string()
            ]
        );
        let log = render(&rule(Action::Log), Family::V4, Owner::Policy);
        assert_eq!(
            log,
            vec!["log prefix \"manul default/p/inbound/0: \"".to_string()]
        );
    }
}
