//! The contract's checks on what operations carry: an IP set's members fit
//! its kind, rules are valid and name sets of the right kind, endpoints name
//! known policies (in their own tier, with a default action of deny or pass)
//! and known profiles, and, for a whole [`DesiredState`], every key matches
//! its value's id.
//!
//! Rule checks beyond references: `ip_version` is 4 or 6, port ranges are
//! not inverted, numeric ports need protocol TCP, UDP or SCTP, ICMP matches
//! need protocol ICMP or ICMPv6.
//!
//! Each check is a pure function of what it is given; it refuses to track
//! what references what over time (that is the null driver's bookkeeping).

use std::collections::BTreeMap;
use std::fmt;

use crate::desired::{DesiredState, IpSet};
use crate::driver::ContractViolation;
use crate::ops::{
    Action, EndpointId, HostEndpoint, IpSetId, IpSetKind, IpSetMember, Policy, PolicyId, Rule,
    TierPolicies,
};

/// Checks the whole state by scanning it (see [`DesiredState::check`]).
pub(crate) fn check_state(state: &DesiredState) -> Result<(), ContractViolation> {
    for (id, set) in &state.ip_sets {
        for member in &set.members {
            check_member(id, set.kind, member)?;
        }
    }
    for (id, policy) in &state.policies {
        check_rules(Owner::Policy(id), policy, &state.ip_sets)?;
    }
    for (id, profile) in &state.profiles {
        check_rules(Owner::Profile(id), profile, &state.ip_sets)?;
    }
    for (key, ep) in &state.workload_endpoints {
        if *key != ep.id {
            return Err(ContractViolation::KeyMismatch {
                what: "workload endpoint",
                key: key.to_string(),
                id: ep.id.to_string(),
            });
        }
        check_endpoint(
            EndpointRef::Workload(&ep.id),
            ep.tiers.iter(),
            &ep.profiles,
            &state.policies,
            &state.profiles,
        )?;
    }
    for (key, ep) in &state.host_endpoints {
        if *key != ep.id {
            return Err(ContractViolation::KeyMismatch {
                what: "host endpoint",
                key: key.clone(),
                id: ep.id.clone(),
            });
        }
        check_endpoint(
            EndpointRef::Host(&ep.id),
            host_tiers(ep),
            &ep.profiles,
            &state.policies,
            &state.profiles,
        )?;
    }
    for ((namespace, name), svc) in &state.services {
        if *namespace != svc.namespace || *name != svc.name {
            return Err(ContractViolation::KeyMismatch {
                what: "service",
                key: format!("{namespace}/{name}"),
                id: format!("{}/{}", svc.namespace, svc.name),
            });
        }
    }
    Ok(())
}

/// Who owns a rule, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner<'a> {
    Policy(&'a PolicyId),
    Profile(&'a str),
}

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Policy(id) => write!(f, "policy {id}"),
            Owner::Profile(id) => write!(f, "profile {id:?}"),
        }
    }
}

/// An endpoint, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EndpointRef<'a> {
    Workload(&'a EndpointId),
    Host(&'a str),
}

impl fmt::Display for EndpointRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointRef::Workload(id) => write!(f, "workload endpoint {id}"),
            EndpointRef::Host(id) => write!(f, "host endpoint {id:?}"),
        }
    }
}

/// The IP sets a rule names, with the kind each use needs.
pub(crate) fn rule_set_refs(rule: &Rule) -> impl Iterator<Item = (&IpSetId, IpSetKind)> {
    [&rule.src, &rule.dst].into_iter().flat_map(|m| {
        m.ip_sets
            .iter()
            .chain(&m.not_ip_sets)
            .map(|s| (s, IpSetKind::Net))
            .chain(
                m.named_port_sets
                    .iter()
                    .chain(&m.not_named_port_sets)
                    .map(|s| (s, IpSetKind::NamedPort)),
            )
    })
}

pub(crate) fn policy_set_refs(policy: &Policy) -> impl Iterator<Item = (&IpSetId, IpSetKind)> {
    policy
        .inbound
        .iter()
        .chain(&policy.outbound)
        .flat_map(rule_set_refs)
}

pub(crate) fn tier_policies<'a>(
    tiers: impl Iterator<Item = &'a TierPolicies>,
) -> impl Iterator<Item = &'a PolicyId> {
    tiers.flat_map(|t| t.inbound.iter().chain(&t.outbound))
}

/// Every tier list of a host endpoint.
pub(crate) fn host_tiers(ep: &HostEndpoint) -> impl Iterator<Item = &TierPolicies> {
    ep.tiers
        .iter()
        .chain(&ep.pre_dnat_tiers)
        .chain(&ep.untracked_tiers)
        .chain(&ep.forward_tiers)
}

pub(crate) fn check_member(
    set: &str,
    kind: IpSetKind,
    member: &IpSetMember,
) -> Result<(), ContractViolation> {
    let fits = matches!(
        (kind, member),
        (IpSetKind::Net, IpSetMember::Net(_))
            | (IpSetKind::NamedPort, IpSetMember::NamedPort { .. })
    );
    if fits {
        Ok(())
    } else {
        Err(ContractViolation::MemberKindMismatch {
            set: set.to_owned(),
            kind,
            member: *member,
        })
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

pub(crate) fn check_rules(
    owner: Owner<'_>,
    policy: &Policy,
    sets: &BTreeMap<IpSetId, IpSet>,
) -> Result<(), ContractViolation> {
    for rule in policy.inbound.iter().chain(&policy.outbound) {
        let invalid = |reason: String| ContractViolation::InvalidRule {
            owner: owner.to_string(),
            rule: rule.id.clone(),
            reason,
        };
        if let Some(version) = rule.ip_version
            && version != 4
            && version != 6
        {
            return Err(invalid(format!("ip_version is {version}, not 4 or 6")));
        }
        let mut has_ports = false;
        for m in [&rule.src, &rule.dst] {
            for range in m.ports.iter().chain(&m.not_ports) {
                has_ports = true;
                if range.first > range.last {
                    return Err(invalid(format!(
                        "port range {}-{} is inverted",
                        range.first, range.last
                    )));
                }
            }
        }
        if has_ports && !matches!(rule.protocol, Some(TCP | UDP | SCTP)) {
            return Err(invalid(
                "numeric ports need protocol TCP (6), UDP (17) or SCTP (132)".to_owned(),
            ));
        }
        if (rule.icmp.is_some() || rule.not_icmp.is_some())
            && !matches!(rule.protocol, Some(ICMP | ICMPV6))
        {
            return Err(invalid(
                "ICMP matches need protocol ICMP (1) or ICMPv6 (58)".to_owned(),
            ));
        }
        for (set, used_as) in rule_set_refs(rule) {
            match sets.get(set) {
                None => {
                    return Err(ContractViolation::UnknownIpSet {
                        set: set.clone(),
                        owner: owner.to_string(),
                        rule: rule.id.clone(),
                    });
                }
                Some(found) if found.kind != used_as => {
                    return Err(ContractViolation::SetKindMismatch {
                        set: set.clone(),
                        owner: owner.to_string(),
                        rule: rule.id.clone(),
                        used_as,
                        actual: found.kind,
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

pub(crate) fn check_endpoint<'a>(
    endpoint: EndpointRef<'_>,
    tiers: impl Iterator<Item = &'a TierPolicies>,
    profiles: &[String],
    known_policies: &BTreeMap<PolicyId, Policy>,
    known_profiles: &BTreeMap<String, Policy>,
) -> Result<(), ContractViolation> {
    for tier in tiers {
        if !matches!(tier.default_action, Action::Deny | Action::Pass) {
            return Err(ContractViolation::BadDefaultAction {
                tier: tier.name.clone(),
                action: tier.default_action,
                endpoint: endpoint.to_string(),
            });
        }
        for policy in tier.inbound.iter().chain(&tier.outbound) {
            if policy.tier != tier.name {
                return Err(ContractViolation::PolicyInWrongTier {
                    policy: policy.clone(),
                    tier: tier.name.clone(),
                    endpoint: endpoint.to_string(),
                });
            }
            if !known_policies.contains_key(policy) {
                return Err(ContractViolation::UnknownPolicy {
                    policy: policy.clone(),
                    endpoint: endpoint.to_string(),
                });
            }
        }
    }
    for profile in profiles {
        if !known_profiles.contains_key(profile) {
            return Err(ContractViolation::UnknownProfile {
                profile: profile.clone(),
                endpoint: endpoint.to_string(),
            });
        }
    }
    Ok(())
}
