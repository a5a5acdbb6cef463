//! Policies, tiers and profiles.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::primitives::{Action, PolicyType};
use super::rule::Rule;
use crate::selector::Selector;

/// The tier every policy without an explicit tier belongs to.
pub const DEFAULT_TIER: &str = "default";

/// The order Calico gives the `default` tier when no Tier resource sets
/// one.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

fn default_tier() -> String {
    DEFAULT_TIER.to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Spec of a namespaced `NetworkPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default = "default_tier")]
    pub tier: String,
    /// Lower orders apply first; unset sorts last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// Which endpoints (in the policy's namespace) the policy applies to.
    #[serde(default = "Selector::all")]
    pub selector: Selector,
    /// Filled in by [`crate::defaults`] when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// Spec of a cluster-wide `GlobalNetworkPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    #[serde(default = "default_tier")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default = "Selector::all")]
    pub selector: Selector,
    /// Restricts the policy to endpoints in namespaces whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub do_not_track: bool,
    #[serde(default, rename = "preDNAT", skip_serializing_if = "is_false")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// Spec of a `Tier`: an ordered group of policies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// What happens when policies of the tier apply but none decides:
    /// `Deny` (the default) or `Pass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

/// Spec of a `Profile`: rules and labels shared by the endpoints that name
/// it (namespaces and service accounts become profiles).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Labels every endpoint using the profile inherits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> NetworkPolicySpec {
        NetworkPolicySpec {
            tier: default_tier(),
            order: None,
            selector: Selector::all(),
            types: Vec::new(),
            ingress: Vec::new(),
            egress: Vec::new(),
            service_account_selector: None,
            performance_hints: Vec::new(),
        }
    }
}

impl Default for GlobalNetworkPolicySpec {
    fn default() -> GlobalNetworkPolicySpec {
        GlobalNetworkPolicySpec {
            tier: default_tier(),
            order: None,
            selector: Selector::all(),
            namespace_selector: None,
            types: Vec::new(),
            ingress: Vec::new(),
            egress: Vec::new(),
            do_not_track: false,
            pre_dnat: false,
            apply_on_forward: false,
            service_account_selector: None,
            performance_hints: Vec::new(),
        }
    }
}
