//! Tiers, policies and profiles, per endpoint and direction, and the trace
//! of a packet through the source's egress and the destination's ingress.

use std::net::IpAddr;

use manul_model::v3::{Action, PolicyType, Rule};

use super::matching::{End, Flow, has_ports, parent_selector_matches, protocol_name};
use super::state::{ClusterState, Policy, WorkloadEndpoint};
use super::{Decision, Direction, Packet, Peer, PolicyStep, Trace, TraceError, Verdict};

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "Allow",
        Action::Deny => "Deny",
        Action::Log => "Log",
        Action::Pass => "Pass",
    }
}

fn order_text(order: Option<f64>) -> String {
    order.map_or_else(|| "unset".to_string(), |o| o.to_string())
}

impl ClusterState {
    /// Traces a packet from `from` to `to` with IP protocol `protocol`,
    /// destination port `port` (TCP, UDP, SCTP, UDPLite) and ICMP type and
    /// code `icmp` (ICMP, ICMPv6). The source port is unknown.
    pub fn trace(
        &self,
        from: &Peer,
        to: &Peer,
        protocol: u8,
        port: Option<u16>,
        icmp: Option<(u8, Option<u8>)>,
    ) -> Result<Trace, TraceError> {
        self.trace_packet(&Packet {
            from: from.clone(),
            to: to.clone(),
            protocol,
            src_port: None,
            dst_port: port,
            icmp,
        })
    }

    /// Whether [`trace`](Self::trace) allows the packet.
    pub fn verdict(
        &self,
        from: &Peer,
        to: &Peer,
        protocol: u8,
        port: Option<u16>,
        icmp: Option<(u8, Option<u8>)>,
    ) -> Result<bool, TraceError> {
        Ok(self.trace(from, to, protocol, port, icmp)?.verdict == Verdict::Allow)
    }

    /// Traces a packet, with the source port when it matters.
    pub fn trace_packet(&self, packet: &Packet) -> Result<Trace, TraceError> {
        let p = packet.protocol;
        if !has_ports(p) && (packet.src_port.is_some() || packet.dst_port.is_some()) {
            return Err(TraceError::InvalidPacket(format!(
                "ports need TCP, UDP, SCTP or UDPLite, not {}",
                protocol_name(p)
            )));
        }
        if packet.icmp.is_some() && !matches!(p, 1 | 58) {
            return Err(TraceError::InvalidPacket(format!(
                "an ICMP type needs ICMP or ICMPv6, not {}",
                protocol_name(p)
            )));
        }
        let (src_ep, dst_ep) = (self.lookup(&packet.from)?, self.lookup(&packet.to)?);
        let (src_addr, dst_addr) = self.addresses(packet, src_ep, dst_ep)?;
        let flow = Flow {
            protocol: p,
            icmp: packet.icmp,
            src: End::new(self, src_addr, packet.src_port, src_ep),
            dst: End::new(self, dst_addr, packet.dst_port, dst_ep),
        };
        let mut what = protocol_name(p);
        if let Some(port) = packet.dst_port {
            what.push_str(&format!(" port {port}"));
        }
        if let Some(port) = packet.src_port {
            what.push_str(&format!(" from port {port}"));
        }
        if let Some((t, c)) = packet.icmp {
            what.push_str(&format!(" type {t}"));
            if let Some(c) = c {
                what.push_str(&format!(" code {c}"));
            }
        }
        let mut steps = vec![format!(
            "packet: {} -> {}, {what}",
            flow.src.describe(),
            flow.dst.describe()
        )];
        for (side, end) in [("source", &flow.src), ("destination", &flow.dst)] {
            let extra: Vec<&str> = end
                .labelled
                .iter()
                .filter(|l| !l.what.starts_with("endpoint "))
                .map(|l| l.what.as_str())
                .collect();
            if !extra.is_empty() {
                let also = if end.endpoint.is_some() { " also" } else { "" };
                steps.push(format!(
                    "{side} {} is{also} in {}",
                    end.addr,
                    extra.join(", ")
                ));
            }
        }
        let mut deciding = None;
        for (ep, direction) in [(src_ep, Direction::Egress), (dst_ep, Direction::Ingress)] {
            let Some(ep) = ep else { continue };
            let d = self.evaluate(ep, direction, &flow, &mut steps);
            let verdict = d.verdict;
            deciding = Some(d);
            if verdict == Verdict::Deny {
                break;
            }
        }
        let verdict = match &deciding {
            Some(d) => d.verdict,
            None => {
                steps.push("neither end is a workload endpoint: no policy is enforced".to_string());
                Verdict::Allow
            }
        };
        Ok(Trace {
            verdict,
            steps,
            deciding,
        })
    }

    /// One side of a packet alone: the source's egress
    /// ([`Direction::Egress`]) or the destination's ingress, whatever the
    /// other side does. `None` when that end is not a workload endpoint.
    pub fn trace_side(
        &self,
        packet: &Packet,
        direction: Direction,
    ) -> Result<Option<Decision>, TraceError> {
        let (src_ep, dst_ep) = (self.lookup(&packet.from)?, self.lookup(&packet.to)?);
        let ep = match direction {
            Direction::Egress => src_ep,
            Direction::Ingress => dst_ep,
        };
        let Some(ep) = ep else {
            return Ok(None);
        };
        let (src_addr, dst_addr) = self.addresses(packet, src_ep, dst_ep)?;
        let flow = Flow {
            protocol: packet.protocol,
            icmp: packet.icmp,
            src: End::new(self, src_addr, packet.src_port, src_ep),
            dst: End::new(self, dst_addr, packet.dst_port, dst_ep),
        };
        let mut steps = Vec::new();
        Ok(Some(self.evaluate(ep, direction, &flow, &mut steps)))
    }

    fn lookup(&self, peer: &Peer) -> Result<Option<&WorkloadEndpoint>, TraceError> {
        match peer {
            Peer::Endpoint { namespace, name } => self.find_endpoint(namespace, name).map(Some),
            Peer::Ip(ip) => Ok(self.endpoint_at(*ip)),
        }
    }

    /// The packet's source and destination addresses: an IP peer's own; an
    /// endpoint's first address of the packet's IP version, which is that of
    /// an IP peer, or else the first of the source's versions that the
    /// destination has too.
    fn addresses(
        &self,
        packet: &Packet,
        src: Option<&WorkloadEndpoint>,
        dst: Option<&WorkloadEndpoint>,
    ) -> Result<(IpAddr, IpAddr), TraceError> {
        let addrs = |peer: &Peer, ep: Option<&WorkloadEndpoint>| -> Vec<IpAddr> {
            match (peer, ep) {
                (Peer::Ip(ip), _) => vec![*ip],
                (_, Some(ep)) => ep.addresses.clone(),
                (_, None) => Vec::new(),
            }
        };
        let (from, to) = (addrs(&packet.from, src), addrs(&packet.to, dst));
        for (peer, list) in [(&packet.from, &from), (&packet.to, &to)] {
            if list.is_empty() {
                return Err(TraceError::NoAddress {
                    endpoint: peer.to_string(),
                    family: "IP".to_string(),
                });
            }
        }
        for a in &from {
            if let Some(b) = to.iter().find(|b| b.is_ipv4() == a.is_ipv4()) {
                return Ok((*a, *b));
            }
        }
        // No common version: name the side that lacks the other's.
        let (peer, want) = match (&packet.from, &packet.to) {
            (Peer::Ip(_), Peer::Ip(_)) | (Peer::Endpoint { .. }, Peer::Endpoint { .. }) => {
                return Err(TraceError::NoCommonFamily {
                    from: packet.from.to_string(),
                    to: packet.to.to_string(),
                });
            }
            (Peer::Ip(ip), other) | (other, Peer::Ip(ip)) => (other.to_string(), family(*ip)),
        };
        Err(TraceError::NoAddress {
            endpoint: peer,
            family: want.to_string(),
        })
    }

    /// Whether policy `p` applies to endpoint `ep` for `direction`: its
    /// types, namespace, namespace and service account selectors and
    /// selector, as evaluation decides (what reports use to find the
    /// endpoints no policy selects).
    pub fn applies(&self, p: &Policy, ep: &WorkloadEndpoint, direction: Direction) -> bool {
        let ty = match direction {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        };
        if !p.types.contains(&ty) {
            return false;
        }
        if p.namespace.as_ref().is_some_and(|ns| *ns != ep.namespace) {
            return false;
        }
        if let Some(sel) = &p.namespace_selector
            && !parent_selector_matches(sel, Some(&self.namespace_labels(&ep.namespace)))
        {
            return false;
        }
        if let Some(sel) = &p.service_account_selector {
            let labels = ep
                .service_account
                .as_deref()
                .map(|sa| self.service_account_labels(&ep.namespace, sa));
            if !parent_selector_matches(sel, labels.as_ref()) {
                return false;
            }
        }
        p.selector.matches(&ep.labels)
    }

    /// Tiers, then profiles, for one endpoint and direction.
    fn evaluate(
        &self,
        ep: &WorkloadEndpoint,
        direction: Direction,
        flow: &Flow<'_>,
        steps: &mut Vec<String>,
    ) -> Decision {
        let id = ep.id();
        steps.push(format!("{direction} of {id}:"));
        let mut passed: Vec<PolicyStep> = Vec::new();
        let decision = |verdict,
                        tier: Option<&str>,
                        policy: Option<&str>,
                        profile: Option<&str>,
                        rule_index,
                        reason: String| Decision {
            verdict,
            direction,
            endpoint: id.clone(),
            tier: tier.map(str::to_string),
            policy: policy.map(str::to_string),
            profile: profile.map(str::to_string),
            rule_index,
            reason,
            passed: Vec::new(),
        };
        let finish = |steps: &mut Vec<String>, mut d: Decision, passed: Vec<PolicyStep>| {
            steps.push(format!("  {direction} {}: {}", d.verdict, d.reason));
            d.passed = passed;
            d
        };
        'tiers: for tier in self.tiers() {
            let applying: Vec<&Policy> = self
                .tier_policies(&tier.name)
                .into_iter()
                .filter(|p| self.applies(p, ep, direction))
                .collect();
            if applying.is_empty() {
                steps.push(format!(
                    "  tier {} (order {}): no policy applies",
                    tier.name,
                    order_text(tier.order)
                ));
                continue;
            }
            steps.push(format!(
                "  tier {} (order {}): {} appl{}: {}",
                tier.name,
                order_text(tier.order),
                applying.len(),
                if applying.len() == 1 { "ies" } else { "y" },
                applying
                    .iter()
                    .map(|p| format!("{} (order {})", p.name, order_text(p.order)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for policy in applying {
                let rules = match direction {
                    Direction::Ingress => &policy.ingress,
                    Direction::Egress => &policy.egress,
                };
                let ns = policy.namespace.as_deref();
                let outcome =
                    self.run_rules(rules, ns, flow, &format!("policy {}", policy.name), steps);
                let bare = match &policy.namespace {
                    Some(ns) => policy
                        .name
                        .strip_prefix(&format!("{ns}/"))
                        .unwrap_or(&policy.name),
                    None => &policy.name,
                };
                passed.push(PolicyStep {
                    tier: tier.name.clone(),
                    kind: policy.kind,
                    namespace: policy.namespace.clone(),
                    name: bare.to_string(),
                    rule_index: outcome.map(|(i, _)| i),
                    action: outcome.map(|(_, a)| a),
                });
                match outcome {
                    Some((i, action @ (Action::Allow | Action::Deny))) => {
                        let verdict = if action == Action::Allow {
                            Verdict::Allow
                        } else {
                            Verdict::Deny
                        };
                        let d = decision(
                            verdict,
                            Some(&tier.name),
                            Some(&policy.name),
                            None,
                            Some(i),
                            format!(
                                "{direction} rule {i} ({}) of policy {} in tier {}",
                                action_name(action),
                                policy.name,
                                tier.name
                            ),
                        );
                        return finish(steps, d, passed);
                    }
                    Some((i, _)) => {
                        steps.push(format!(
                            "    Pass at rule {i} of policy {}: on to the next tier",
                            policy.name
                        ));
                        continue 'tiers;
                    }
                    None => {}
                }
            }
            match tier.default_action {
                Action::Pass => steps.push(format!(
                    "    end of tier {}: defaultAction Pass, on to the next tier",
                    tier.name
                )),
                other => {
                    let verdict = if other == Action::Allow {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    };
                    let d = decision(
                        verdict,
                        Some(&tier.name),
                        None,
                        None,
                        None,
                        format!(
                            "end of tier {}: policies apply but none decided, defaultAction {}",
                            tier.name,
                            action_name(other)
                        ),
                    );
                    return finish(steps, d, passed);
                }
            }
        }
        if ep.profiles.is_empty() {
            steps.push("  no profiles".to_string());
        }
        for name in &ep.profiles {
            let Some(profile) = self.profile(name) else {
                steps.push(format!("  profile {name}: not found, no rules"));
                continue;
            };
            let rules = match direction {
                Direction::Ingress => &profile.ingress,
                Direction::Egress => &profile.egress,
            };
            steps.push(format!("  profile {name}: {} rule(s)", rules.len()));
            let outcome = self.run_rules(rules, None, flow, &format!("profile {name}"), steps);
            if let Some((i, action)) = outcome {
                passed.push(PolicyStep {
                    tier: String::new(),
                    kind: manul_model::Kind::Profile,
                    namespace: None,
                    name: name.clone(),
                    rule_index: Some(i),
                    action: Some(action),
                });
            }
            match outcome {
                Some((i, action @ (Action::Allow | Action::Deny))) => {
                    let verdict = if action == Action::Allow {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    };
                    let d = decision(
                        verdict,
                        None,
                        None,
                        Some(name),
                        Some(i),
                        format!(
                            "{direction} rule {i} ({}) of profile {name}",
                            action_name(action)
                        ),
                    );
                    return finish(steps, d, passed);
                }
                Some((i, _)) => steps.push(format!(
                    "    Pass at rule {i} of profile {name}: on to the next profile"
                )),
                None => {}
            }
        }
        let d = decision(
            Verdict::Deny,
            None,
            None,
            None,
            None,
            "no policy or profile allowed it (default deny)".to_string(),
        );
        finish(steps, d, passed)
    }

    /// Runs rules in order until an Allow, Deny or Pass matches: returns its
    /// index and action. Log rules are noted and passed over.
    fn run_rules(
        &self,
        rules: &[Rule],
        policy_ns: Option<&str>,
        flow: &Flow<'_>,
        owner: &str,
        steps: &mut Vec<String>,
    ) -> Option<(usize, Action)> {
        for (i, rule) in rules.iter().enumerate() {
            let action = action_name(rule.action);
            match self.rule_mismatch(rule, policy_ns, flow) {
                Some(why) => {
                    steps.push(format!("    {owner} rule {i} ({action}): no match: {why}"))
                }
                None if rule.action == Action::Log => {
                    steps.push(format!(
                        "    {owner} rule {i} (Log): matches, logged, continuing"
                    ));
                }
                None => {
                    steps.push(format!("    {owner} rule {i} ({action}): matches"));
                    return Some((i, rule.action));
                }
            }
        }
        steps.push(format!("    {owner}: no rule decided"));
        None
    }
}
