//! Calico's staged policies: `StagedNetworkPolicy`,
//! `StagedGlobalNetworkPolicy` and `StagedKubernetesNetworkPolicy`. Each is
//! its enforced kind's spec plus `stagedAction`: `Set` (the default) says
//! "this policy, as if enforced"; `Delete` says "the enforced policy of the
//! same name, as if deleted", and then every field but the tier must be
//! empty (Calico's rule). Felix evaluates them for flow records and never
//! enforces them; `manulctl policy promote` makes one its enforced kind.

use k8s_openapi::api::networking::v1::{
    NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicySpec as K8sNetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::policy::{DEFAULT_TIER, GlobalNetworkPolicySpec, NetworkPolicySpec};
use super::primitives::PolicyType;
use super::rule::Rule;
use crate::selector::Selector;

/// What a staged policy would do to its enforced counterpart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StagedAction {
    /// Create or replace the enforced policy of the same name.
    #[default]
    Set,
    /// Delete the enforced policy of the same name.
    Delete,
}

fn default_tier() -> String {
    DEFAULT_TIER.to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Spec of a `StagedNetworkPolicy`: a `NetworkPolicy`'s, plus
/// `stagedAction`. The selector stays unset when not written (a `Delete`
/// must leave it so; a `Set` means `all()`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedNetworkPolicySpec {
    #[serde(default)]
    pub staged_action: StagedAction,
    #[serde(default = "default_tier")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
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

/// Spec of a `StagedGlobalNetworkPolicy`: a `GlobalNetworkPolicy`'s, plus
/// `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedGlobalNetworkPolicySpec {
    #[serde(default)]
    pub staged_action: StagedAction,
    #[serde(default = "default_tier")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
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

/// An open object in the CRD schema: the Kubernetes types below are
/// checked by the loader, strictly, not by the API server.
fn open_object(_g: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn open_objects(_g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// Spec of a `StagedKubernetesNetworkPolicy`: a Kubernetes
/// `NetworkPolicy`'s spec (`networking.k8s.io/v1`), plus `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedKubernetesNetworkPolicySpec {
    #[serde(default)]
    pub staged_action: StagedAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_objects")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_objects")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
}

impl StagedNetworkPolicySpec {
    /// The enforced `NetworkPolicy` spec it stages (for `Set`).
    pub fn enforced(&self) -> NetworkPolicySpec {
        NetworkPolicySpec {
            tier: self.tier.clone(),
            order: self.order,
            selector: self.selector.clone().unwrap_or_else(Selector::all),
            types: self.types.clone(),
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            service_account_selector: self.service_account_selector.clone(),
            performance_hints: self.performance_hints.clone(),
        }
    }

    /// Whether every field but the tier (and the action) is unset, as a
    /// `Delete` must be.
    pub fn is_empty_but_tier(&self) -> bool {
        let Self {
            staged_action: _,
            tier: _,
            order,
            selector,
            types,
            ingress,
            egress,
            service_account_selector,
            performance_hints,
        } = self;
        order.is_none()
            && selector.is_none()
            && types.is_empty()
            && ingress.is_empty()
            && egress.is_empty()
            && service_account_selector.is_none()
            && performance_hints.is_empty()
    }
}

impl StagedGlobalNetworkPolicySpec {
    /// The enforced `GlobalNetworkPolicy` spec it stages (for `Set`).
    pub fn enforced(&self) -> GlobalNetworkPolicySpec {
        GlobalNetworkPolicySpec {
            tier: self.tier.clone(),
            order: self.order,
            selector: self.selector.clone().unwrap_or_else(Selector::all),
            namespace_selector: self.namespace_selector.clone(),
            types: self.types.clone(),
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            do_not_track: self.do_not_track,
            pre_dnat: self.pre_dnat,
            apply_on_forward: self.apply_on_forward,
            service_account_selector: self.service_account_selector.clone(),
            performance_hints: self.performance_hints.clone(),
        }
    }

    /// Whether every field but the tier (and the action) is unset.
    pub fn is_empty_but_tier(&self) -> bool {
        let Self {
            staged_action: _,
            tier: _,
            order,
            selector,
            namespace_selector,
            types,
            ingress,
            egress,
            do_not_track,
            pre_dnat,
            apply_on_forward,
            service_account_selector,
            performance_hints,
        } = self;
        order.is_none()
            && selector.is_none()
            && namespace_selector.is_none()
            && types.is_empty()
            && ingress.is_empty()
            && egress.is_empty()
            && !do_not_track
            && !pre_dnat
            && !apply_on_forward
            && service_account_selector.is_none()
            && performance_hints.is_empty()
    }
}

impl StagedKubernetesNetworkPolicySpec {
    /// The enforced Kubernetes `NetworkPolicy` spec it stages (for `Set`).
    pub fn enforced(&self) -> K8sNetworkPolicySpec {
        K8sNetworkPolicySpec {
            pod_selector: Some(self.pod_selector.clone().unwrap_or_default()),
            ingress: (!self.ingress.is_empty()).then(|| self.ingress.clone()),
            egress: (!self.egress.is_empty()).then(|| self.egress.clone()),
            policy_types: (!self.policy_types.is_empty()).then(|| self.policy_types.clone()),
        }
    }

    /// Whether every field (but the action) is unset.
    pub fn is_empty(&self) -> bool {
        self.pod_selector.is_none()
            && self.ingress.is_empty()
            && self.egress.is_empty()
            && self.policy_types.is_empty()
    }
}
