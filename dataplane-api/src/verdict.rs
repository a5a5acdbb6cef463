//! Packet verdicts: how a dataplane must judge a packet, given a
//! [`DesiredState`].
//!
//! This is the reference the kernel dataplanes are tested against
//! (design.md §4):
//!
//! - A packet leaves its source endpoint and enters its destination
//!   endpoint. If `src` is an address of a local workload endpoint, that
//!   endpoint's **outbound** side judges it; if `dst` is, that endpoint's
//!   **inbound** side does. Both must allow. A side whose address is not a
//!   local workload endpoint is not policed. An address belongs to the
//!   endpoint with a net containing it (the longest such prefix; ties go to
//!   the first endpoint in id order).
//! - On one side: tiers in the endpoint's order. A tier with no policies for
//!   the direction is skipped. Otherwise its policies in order, each
//!   policy's rules for the direction in order: the first matching rule with
//!   **Allow** accepts, **Deny** drops, **Pass** ends the tier (on to the
//!   next), **Log** records a step and goes on. A tier whose policies gave no
//!   verdict applies its `default_action`: `Deny` drops, `Pass` goes on.
//! - Then the endpoint's profiles in order: **Allow** accepts, **Deny**
//!   drops, **Log** goes on, **Pass** ends that profile (on to the next).
//!   No verdict at all drops ([`Decider::NoMatch`]).
//! - A rule matches when every condition it sets holds: `ip_version` (the
//!   source address's family), `protocol`, `not_protocol`, `icmp` (type, and
//!   code when set), `not_icmp`, and each side's [`crate::ops::Match`]: the
//!   address in one of `nets` and in none of `not_nets`; if `ports` or
//!   `named_port_sets` is non-empty, the port in one of the ranges or
//!   `(address, protocol, port)` in one of the named-port sets; the port in
//!   none of `not_ports` and `(address, protocol, port)` in none of
//!   `not_named_port_sets`; the address in **every** one of `ip_sets`
//!   (inside one of a `Net` set's member networks) and in none of
//!   `not_ip_sets`. The source side uses the source port, the destination
//!   side the destination port.
//!
//! Host endpoints are recorded by the null driver but not judged here:
//! only workload endpoints police packets in [`DesiredState::verdict`].
//! There is no connection tracking: every packet is judged as a new flow.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::desired::DesiredState;
use crate::ops::{Action, EndpointId, Icmp, Match, Policy, PolicyId, Rule, WorkloadEndpoint};

/// A packet to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    /// 0 for protocols without ports.
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

impl Packet {
    /// A TCP packet.
    pub fn tcp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Self {
        Self::with_ports(6, src, src_port, dst, dst_port)
    }

    /// A UDP packet.
    pub fn udp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Self {
        Self::with_ports(17, src, src_port, dst, dst_port)
    }

    /// A packet of any protocol with ports.
    pub fn with_ports(
        protocol: u8,
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
    ) -> Self {
        Self {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
            icmp_type: None,
            icmp_code: None,
        }
    }

    /// An ICMP packet (ICMPv6 when `src` is IPv6).
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, icmp_code: u8) -> Self {
        Self {
            src,
            dst,
            protocol: if src.is_ipv4() { 1 } else { 58 },
            src_port: 0,
            dst_port: 0,
            icmp_type: Some(icmp_type),
            icmp_code: Some(icmp_code),
        }
    }

    /// 4 or 6, from the source address.
    pub fn ip_version(&self) -> u8 {
        if self.src.is_ipv4() { 4 } else { 6 }
    }
}

/// What decided a side, or the whole packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decider {
    /// A rule's Allow or Deny: in a policy (`policy` set) or a profile
    /// (`profile` set).
    Rule {
        policy: Option<PolicyId>,
        profile: Option<String>,
        rule_id: String,
    },
    /// A tier whose policies applied but gave no verdict dropped it.
    TierDefault { tier: String },
    /// No tier and no profile gave a verdict: dropped.
    NoMatch,
    /// Neither address is a local workload endpoint: not policed, allowed.
    NotAnEndpoint,
}

impl Decider {
    /// The deciding rule's id, if a rule decided.
    pub fn rule_id(&self) -> Option<&str> {
        match self {
            Decider::Rule { rule_id, .. } => Some(rule_id),
            _ => None,
        }
    }
}

/// How one endpoint judged the packet on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideVerdict {
    pub endpoint: EndpointId,
    pub allowed: bool,
    pub decider: Decider,
}

/// A packet's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// A human-readable trace, in evaluation order.
    pub steps: Vec<String>,
    /// What decided: the side that dropped the packet; if it was allowed,
    /// the inbound side when the destination is local, else the outbound
    /// side; [`Decider::NotAnEndpoint`] when neither side is local. Always
    /// set by [`DesiredState::verdict`].
    pub deciding: Option<Decider>,
    /// The source endpoint's outbound judgement, if the source is local.
    pub outbound: Option<SideVerdict>,
    /// The destination endpoint's inbound judgement, if the destination is
    /// local and the outbound side did not drop the packet.
    pub inbound: Option<SideVerdict>,
    /// Every policy and profile that gave a verdict on the way, in
    /// evaluation order (both sides): the flow logs' policy trace.
    #[serde(default)]
    pub trace: Vec<TraceStep>,
}

/// One policy (or profile, or tier end) that gave a verdict on one side:
/// a matching rule's Allow, Deny or Pass, or a tier's default action when
/// its policies gave none (`rule_index` is then `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceStep {
    pub endpoint: EndpointId,
    /// The destination endpoint's inbound side (else the source's
    /// outbound side).
    pub inbound: bool,
    /// The tier; `None` for a profile.
    pub tier: Option<String>,
    pub policy: Option<PolicyId>,
    pub profile: Option<String>,
    /// The rule's index in the policy's rules for the direction.
    pub rule_index: Option<u32>,
    /// Allow, Deny or Pass.
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn policy_rules(self, policy: &Policy) -> &[Rule] {
        match self {
            Direction::Inbound => &policy.inbound,
            Direction::Outbound => &policy.outbound,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl DesiredState {
    /// Judges a packet (see the module documentation).
    pub fn verdict(&self, packet: &Packet) -> Verdict {
        let mut steps = Vec::new();
        let source = self.endpoint_at(packet.src, "source", &mut steps);
        let destination = self.endpoint_at(packet.dst, "destination", &mut steps);
        let mut verdict = Verdict {
            allowed: true,
            steps: Vec::new(),
            deciding: None,
            outbound: None,
            inbound: None,
            trace: Vec::new(),
        };

        match source {
            None => steps.push(format!(
                "source {} is not a local workload endpoint: outbound not policed",
                packet.src
            )),
            Some(ep) => {
                let (allowed, decider) = self.judge(
                    ep,
                    Direction::Outbound,
                    packet,
                    &mut steps,
                    &mut verdict.trace,
                );
                verdict.outbound = Some(SideVerdict {
                    endpoint: ep.id.clone(),
                    allowed,
                    decider: decider.clone(),
                });
                if !allowed {
                    steps.push(format!("dropped leaving {}", ep.id));
                    verdict.allowed = false;
                    verdict.deciding = Some(decider);
                    verdict.steps = steps;
                    return verdict;
                }
            }
        }

        match destination {
            None => steps.push(format!(
                "destination {} is not a local workload endpoint: inbound not policed",
                packet.dst
            )),
            Some(ep) => {
                let (allowed, decider) = self.judge(
                    ep,
                    Direction::Inbound,
                    packet,
                    &mut steps,
                    &mut verdict.trace,
                );
                verdict.inbound = Some(SideVerdict {
                    endpoint: ep.id.clone(),
                    allowed,
                    decider: decider.clone(),
                });
                if !allowed {
                    steps.push(format!("dropped entering {}", ep.id));
                    verdict.allowed = false;
                    verdict.deciding = Some(decider);
                    verdict.steps = steps;
                    return verdict;
                }
            }
        }

        verdict.deciding = Some(
            verdict
                .inbound
                .as_ref()
                .or(verdict.outbound.as_ref())
                .map_or(Decider::NotAnEndpoint, |side| side.decider.clone()),
        );
        steps.push("allowed".to_owned());
        verdict.steps = steps;
        verdict
    }

    /// The local workload endpoint owning `addr`: the longest prefix
    /// containing it, ties to the first in id order.
    fn endpoint_at(
        &self,
        addr: IpAddr,
        what: &str,
        steps: &mut Vec<String>,
    ) -> Option<&WorkloadEndpoint> {
        let mut best: Option<(&WorkloadEndpoint, u8)> = None;
        let mut owners = 0usize;
        for ep in self.workload_endpoints.values() {
            let Some(len) = ep
                .nets
                .iter()
                .filter(|net| net.contains(&addr))
                .map(|net| net.prefix_len())
                .max()
            else {
                continue;
            };
            owners += 1;
            if best.is_none_or(|(_, best_len)| len > best_len) {
                best = Some((ep, len));
            }
        }
        let (ep, _) = best?;
        if owners > 1 {
            steps.push(format!(
                "{what} {addr} is inside {owners} workload endpoints' nets; using {} (longest prefix)",
                ep.id
            ));
        }
        Some(ep)
    }

    /// One endpoint's judgement on one side.
    fn judge(
        &self,
        ep: &WorkloadEndpoint,
        dir: Direction,
        packet: &Packet,
        steps: &mut Vec<String>,
        trace: &mut Vec<TraceStep>,
    ) -> (bool, Decider) {
        let hit = |tier: Option<&str>,
                   policy: Option<&PolicyId>,
                   profile: Option<&str>,
                   rule_index: Option<usize>,
                   action: Action| TraceStep {
            endpoint: ep.id.clone(),
            inbound: dir == Direction::Inbound,
            tier: tier.map(str::to_owned),
            policy: policy.cloned(),
            profile: profile.map(str::to_owned),
            rule_index: rule_index.and_then(|i| u32::try_from(i).ok()),
            action,
        };
        let side = format!(
            "{} {} {}",
            dir.label(),
            if dir == Direction::Inbound {
                "to"
            } else {
                "from"
            },
            ep.id
        );
        for tier in &ep.tiers {
            let policies = match dir {
                Direction::Inbound => &tier.inbound,
                Direction::Outbound => &tier.outbound,
            };
            if policies.is_empty() {
                steps.push(format!(
                    "{side}: tier {:?} has no {} policies: skipped",
                    tier.name,
                    dir.label()
                ));
                continue;
            }
            let mut passed = false;
            'policies: for id in policies {
                let Some(policy) = self.policies.get(id) else {
                    // The contract makes this impossible; judge it as empty.
                    steps.push(format!("{side}: policy {id} is missing: no rules"));
                    continue;
                };
                for (index, rule) in dir.policy_rules(policy).iter().enumerate() {
                    let Some(action) =
                        self.rule_action(rule, packet, &side, &format!("policy {id}"), steps)
                    else {
                        continue;
                    };
                    if action != Action::Log {
                        trace.push(hit(
                            Some(tier.name.as_str()),
                            Some(id),
                            None,
                            Some(index),
                            action,
                        ));
                    }
                    match action {
                        Action::Allow | Action::Deny => {
                            let decider = Decider::Rule {
                                policy: Some(id.clone()),
                                profile: None,
                                rule_id: rule.id.clone(),
                            };
                            return (action == Action::Allow, decider);
                        }
                        Action::Log => {}
                        Action::Pass => {
                            passed = true;
                            break 'policies;
                        }
                    }
                }
                steps.push(format!("{side}: policy {id}: no verdict"));
            }
            if passed {
                steps.push(format!(
                    "{side}: tier {:?}: passed to the next tier",
                    tier.name
                ));
                continue;
            }
            trace.push(hit(
                Some(tier.name.as_str()),
                None,
                None,
                None,
                tier.default_action,
            ));
            if tier.default_action == Action::Pass {
                steps.push(format!(
                    "{side}: tier {:?}: no verdict, default action Pass",
                    tier.name
                ));
                continue;
            }
            steps.push(format!(
                "{side}: tier {:?}: no verdict, default action {:?}: drop",
                tier.name, tier.default_action
            ));
            return (
                false,
                Decider::TierDefault {
                    tier: tier.name.clone(),
                },
            );
        }
        for name in &ep.profiles {
            let Some(profile) = self.profiles.get(name) else {
                steps.push(format!("{side}: profile {name:?} is missing: no rules"));
                continue;
            };
            for (index, rule) in dir.policy_rules(profile).iter().enumerate() {
                let Some(action) =
                    self.rule_action(rule, packet, &side, &format!("profile {name:?}"), steps)
                else {
                    continue;
                };
                if action != Action::Log {
                    trace.push(hit(None, None, Some(name.as_str()), Some(index), action));
                }
                match action {
                    Action::Allow | Action::Deny => {
                        let decider = Decider::Rule {
                            policy: None,
                            profile: Some(name.clone()),
                            rule_id: rule.id.clone(),
                        };
                        return (action == Action::Allow, decider);
                    }
                    Action::Log => {}
                    Action::Pass => break,
                }
            }
        }
        steps.push(format!("{side}: no tier or profile gave a verdict: drop"));
        (false, Decider::NoMatch)
    }

    /// The rule's action if it matches (recording a step either way).
    fn rule_action(
        &self,
        rule: &Rule,
        packet: &Packet,
        side: &str,
        owner: &str,
        steps: &mut Vec<String>,
    ) -> Option<Action> {
        match self.rule_mismatch(rule, packet) {
            Some(why) => {
                steps.push(format!(
                    "{side}: {owner} rule {:?}: no match ({why})",
                    rule.id
                ));
                None
            }
            None => {
                steps.push(format!(
                    "{side}: {owner} rule {:?}: match, {:?}",
                    rule.id, rule.action
                ));
                Some(rule.action)
            }
        }
    }

    /// Why the rule does not match, or `None` if it does.
    fn rule_mismatch(&self, rule: &Rule, packet: &Packet) -> Option<String> {
        let version = packet.ip_version();
        if let Some(want) = rule.ip_version
            && want != version
        {
            return Some(format!("IPv{version}, rule wants IPv{want}"));
        }
        if let Some(want) = rule.protocol
            && want != packet.protocol
        {
            return Some(format!("protocol {} is not {want}", packet.protocol));
        }
        if let Some(not) = rule.not_protocol
            && not == packet.protocol
        {
            return Some(format!("protocol is {not}"));
        }
        if let Some(icmp) = &rule.icmp
            && !icmp_matches(icmp, packet)
        {
            return Some(format!("not ICMP {}", icmp_text(icmp)));
        }
        if let Some(icmp) = &rule.not_icmp
            && icmp_matches(icmp, packet)
        {
            return Some(format!("is ICMP {}", icmp_text(icmp)));
        }
        self.match_mismatch(
            &rule.src,
            "source",
            packet.src,
            packet.src_port,
            packet.protocol,
        )
        .or_else(|| {
            self.match_mismatch(
                &rule.dst,
                "destination",
                packet.dst,
                packet.dst_port,
                packet.protocol,
            )
        })
    }

    fn match_mismatch(
        &self,
        m: &Match,
        side: &str,
        addr: IpAddr,
        port: u16,
        protocol: u8,
    ) -> Option<String> {
        if !m.nets.is_empty() && !m.nets.iter().any(|net| net.contains(&addr)) {
            return Some(format!("{side} {addr} is in none of the nets"));
        }
        if let Some(net) = m.not_nets.iter().find(|net| net.contains(&addr)) {
            return Some(format!("{side} {addr} is in not_nets {net}"));
        }
        if !(m.ports.is_empty() && m.named_port_sets.is_empty()) {
            let in_ports = m.ports.iter().any(|range| range.contains(port));
            let in_named = || {
                m.named_port_sets.iter().any(|set| {
                    self.ip_sets
                        .get(set)
                        .is_some_and(|set| set.contains_named_port(addr, protocol, port))
                })
            };
            if !in_ports && !in_named() {
                return Some(format!(
                    "{side} port {port} is in none of the ports or named ports"
                ));
            }
        }
        if let Some(range) = m.not_ports.iter().find(|range| range.contains(port)) {
            return Some(format!(
                "{side} port {port} is in not_ports {}-{}",
                range.first, range.last
            ));
        }
        if let Some(set) = m.not_named_port_sets.iter().find(|set| {
            self.ip_sets
                .get(*set)
                .is_some_and(|set| set.contains_named_port(addr, protocol, port))
        }) {
            return Some(format!(
                "{side} ({addr}, {protocol}, {port}) is in not_named_port_sets {set:?}"
            ));
        }
        if let Some(set) = m.ip_sets.iter().find(|set| {
            !self
                .ip_sets
                .get(*set)
                .is_some_and(|set| set.contains_addr(addr))
        }) {
            return Some(format!("{side} {addr} is not in IP set {set:?}"));
        }
        if let Some(set) = m.not_ip_sets.iter().find(|set| {
            self.ip_sets
                .get(*set)
                .is_some_and(|set| set.contains_addr(addr))
        }) {
            return Some(format!("{side} {addr} is in not_ip_sets {set:?}"));
        }
        None
    }
}

fn icmp_matches(icmp: &Icmp, packet: &Packet) -> bool {
    matches!(packet.protocol, 1 | 58)
        && packet.icmp_type == Some(icmp.icmp_type)
        && icmp.code.is_none_or(|code| packet.icmp_code == Some(code))
}

fn icmp_text(icmp: &Icmp) -> String {
    match icmp.code {
        Some(code) => format!("type {} code {code}", icmp.icmp_type),
        None => format!("type {}", icmp.icmp_type),
    }
}

impl crate::null::NullDriver {
    /// Judges a packet against the recorded state (see [`crate::verdict`]).
    /// Only workload endpoints police packets here; recorded host endpoints
    /// are ignored.
    pub fn verdict(&self, packet: &Packet) -> Verdict {
        self.state().verdict(packet)
    }
}

#[cfg(test)]
mod tests;
