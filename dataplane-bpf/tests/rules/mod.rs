//! Policy pieces the tests share: policy ids in the default tier, and
//! allow rules.
#![allow(dead_code)]

use manul_dataplane_api::{Action, Match, PolicyId, Rule};

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
