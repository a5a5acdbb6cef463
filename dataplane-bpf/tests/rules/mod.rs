//! Policy pieces the tests share: policy ids in the default tier, and
//! allow rules.
#![allow(dead_code)]

use manul_dataplane_api::{Action, Match, PolicyId, Rule, TierPolicies};

/// A policy of the default tier.
pub fn pid(name: &str) -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: name.into(),
    }
}

/// Allows any protocol from `src` (to anywhere).
pub fn allow(id: &str, src: Match) -> Rule {
    Rule {
        id: id.into(),
        action: Action::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src,
        dst: Match::default(),
    }
}

/// Allows everything.
pub fn allow_all(id: &str) -> Rule {
    allow(id, Match::default())
}

/// A pod's tiers and profiles: a backend is guarded by the default tier's
/// "backend" policy (denying what it does not allow), any other pod is
/// open through the "allow" profile.
pub fn guard(backend: bool) -> (Vec<TierPolicies>, Vec<String>) {
    if backend {
        let tier = TierPolicies {
            name: "default".into(),
            default_action: Action::Deny,
            inbound: vec![pid("backend")],
            outbound: vec![pid("backend")],
        };
        (vec![tier], vec![])
    } else {
        (vec![], vec!["allow".into()])
    }
}
