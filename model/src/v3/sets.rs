//! Network sets: labelled groups of CIDRs that rule selectors can match.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::primitives::Cidr;

/// Spec of a `NetworkSet` (namespaced) or a `GlobalNetworkSet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Cidr>,
    /// Domain names egress rules may allow (resolved by a DNS-aware
    /// dataplane; stored and validated here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_egress_domains: Vec<String>,
}
