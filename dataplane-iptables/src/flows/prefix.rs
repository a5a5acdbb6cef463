//! The log prefix of a deciding rule, and the index that maps it back.
//!
//! A rule that decides (an Allow or Deny of a policy or profile, a tier's
//! default drop, an endpoint's final drop) carries `log group G prefix
//! "mnl:D:HASH"` when flows are on: `D` the direction (`i` inbound, `o`
//! outbound) and `HASH` 16 hex digits of SHA-256 over the decider. The
//! prefix stays short whatever the rule's id (nflog cuts prefixes at 64
//! bytes), and the same decider always gets the same prefix, so rendering
//! needs no allocation state and an incremental write never renumbers.
//! [`FlowIndex`] maps a prefix back from the desired state.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use manul_dataplane_api::verdict::Decider;
use manul_dataplane_api::{Action, DesiredState, EndpointId, Policy, TierPolicies};
use sha2::{Digest, Sha256};

const TAG: &str = "mnl:";

/// The 16 hex digits naming `decider`.
pub fn decider_hash(decider: &Decider) -> String {
    let key = match decider {
        Decider::Rule {
            policy,
            profile,
            rule_id,
        } => {
            let owner = match (policy, profile) {
                (Some(p), _) => format!("p\0{}\0{}", p.tier, p.name),
                (None, Some(name)) => format!("r\0{name}"),
                (None, None) => String::new(),
            };
            format!("rule\0{owner}\0{rule_id}")
        }
        Decider::TierDefault { tier } => format!("tier\0{tier}"),
        Decider::NoMatch => "nomatch".to_string(),
        Decider::NotAnEndpoint => "none".to_string(),
    };
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The prefix of a decider in one direction.
pub fn prefix(inbound: bool, decider: &Decider) -> String {
    let d = if inbound { 'i' } else { 'o' };
    format!("{TAG}{d}:{}", decider_hash(decider))
}

/// The nft statement that logs a decision to `group`.
pub fn log_statement(group: u16, inbound: bool, decider: &Decider) -> String {
    format!("log group {group} prefix \"{}\"", prefix(inbound, decider))
}

/// The prefix of a translated connection's first packet, logged before
/// destination NAT (at the top of every chain that picks a Service's
/// backend): the packet's destination is the frontend the client dialled.
pub const FRONTEND: &str = "mnl:s";

/// The nft statement that logs a translated connection's first packet,
/// before DNAT, to `group` ([`FRONTEND`]).
pub fn frontend_log_statement(group: u16) -> String {
    format!("log group {group} prefix \"{FRONTEND}\"")
}

/// A prefix read back: the direction (inbound?) and the decider's hash.
/// `None` for a prefix this driver did not write.
pub fn parse_prefix(prefix: &str) -> Option<(bool, &str)> {
    let rest = prefix.strip_prefix(TAG)?;
    let (d, hash) = rest.split_once(':')?;
    let inbound = match d {
        "i" => true,
        "o" => false,
        _ => return None,
    };
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((inbound, hash))
}

/// What a log record or a conntrack entry is mapped back with: every
/// decider of the desired state by hash, and every workload interface's
/// endpoint.
#[derive(Debug, Clone, Default)]
pub struct FlowIndex {
    /// Each decider by hash, with whether it allows.
    deciders: HashMap<String, (Decider, bool)>,
    interfaces: HashMap<String, EndpointId>,
    /// Every Service backend: protocol, address and port.
    backends: HashSet<(u8, IpAddr, u16)>,
}

fn add_rules(index: &mut FlowIndex, policy: &Policy, owner: impl Fn(&str) -> Decider) {
    for rule in policy.inbound.iter().chain(&policy.outbound) {
        if matches!(rule.action, Action::Allow | Action::Deny) {
            let d = owner(&rule.id);
            index
                .deciders
                .insert(decider_hash(&d), (d, rule.action == Action::Allow));
        }
    }
}

fn add_tiers(index: &mut FlowIndex, tiers: &[TierPolicies]) {
    for tier in tiers {
        let d = Decider::TierDefault {
            tier: tier.name.clone(),
        };
        index.deciders.insert(decider_hash(&d), (d, false));
    }
}

impl FlowIndex {
    /// The index of `state`.
    pub fn build(state: &DesiredState) -> FlowIndex {
        let mut index = FlowIndex::default();
        for (id, policy) in &state.policies {
            add_rules(&mut index, policy, |rule_id| Decider::Rule {
                policy: Some(id.clone()),
                profile: None,
                rule_id: rule_id.to_string(),
            });
        }
        for (name, profile) in &state.profiles {
            add_rules(&mut index, profile, |rule_id| Decider::Rule {
                policy: None,
                profile: Some(name.clone()),
                rule_id: rule_id.to_string(),
            });
        }
        for ep in state.workload_endpoints.values() {
            add_tiers(&mut index, &ep.tiers);
            index
                .interfaces
                .insert(ep.interface_name.clone(), ep.id.clone());
        }
        for hep in state.host_endpoints.values() {
            add_tiers(&mut index, &hep.tiers);
            add_tiers(&mut index, &hep.forward_tiers);
        }
        for svc in state.services.values() {
            for port in &svc.ports {
                for b in port.backends.iter().chain(&port.local_backends) {
                    index.backends.insert((port.protocol, b.ip, b.port));
                }
            }
        }
        index
            .deciders
            .insert(decider_hash(&Decider::NoMatch), (Decider::NoMatch, false));
        index
    }

    /// Whether a Service of the state has this backend.
    pub fn is_backend(&self, protocol: u8, ip: IpAddr, port: u16) -> bool {
        self.backends.contains(&(protocol, ip, port))
    }

    /// The decider a hash names and whether it allows, if the state has
    /// it.
    pub fn decider(&self, hash: &str) -> Option<&(Decider, bool)> {
        self.deciders.get(hash)
    }

    /// The workload endpoint behind an interface.
    pub fn endpoint(&self, interface: &str) -> Option<&EndpointId> {
        self.interfaces.get(interface)
    }
}

#[cfg(test)]
mod tests {
    use manul_dataplane_api::PolicyId;

    use super::*;

    #[test]
    fn prefixes_round_trip_and_stay_short() {
        let d = Decider::Rule {
            policy: Some(PolicyId {
                tier: "a-very-long-tier-name".into(),
                name: "some-namespace-with-a-long-name/and-a-policy-with-a-long-name".into(),
            }),
            profile: None,
            rule_id: "some-namespace-with-a-long-name/and-a-policy/inbound/12".into(),
        };
        let p = prefix(true, &d);
        assert_eq!(p.len(), 22);
        assert_eq!(parse_prefix(&p), Some((true, decider_hash(&d).as_str())));
        let o = prefix(false, &Decider::NoMatch);
        assert_eq!(parse_prefix(&o).map(|(i, _)| i), Some(false));
        assert_eq!(parse_prefix(FRONTEND), None);
        for bad in [
            "manul x: ",
            "mnl:x:0011223344556677",
            "mnl:i:00",
            "mnl:i:zz11223344556677",
        ] {
            assert_eq!(parse_prefix(bad), None, "{bad}");
        }
        assert_ne!(
            decider_hash(&Decider::TierDefault { tier: "a".into() }),
            decider_hash(&Decider::Rule {
                policy: None,
                profile: Some("a".into()),
                rule_id: String::new()
            })
        );
    }
}
