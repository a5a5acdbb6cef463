//! IPAM blocks: the per-node slices of an IP pool and the addresses handed
//! out from them, kept in the datastore so that every node's CNI plugin
//! allocates without a central allocator (optimistic concurrency on the
//! block's revision).
//!
//! Calico keeps blocks as `crd.projectcalico.org/v1` `IPAMBlock`s with a
//! bitmap-like layout; Manul keeps a simpler, readable form under
//! `projectcalico.org/v3`: the block's CIDR, its node affinity
//! (`host:NODE`) and the list of allocations (address and handle, the
//! container id). A block is named after its CIDR with `.`, `:` and `/`
//! replaced by `-` (`10.65.0.0/26` is `10-65-0-0-26`), so two writers that
//! claim the same block collide on the same key.

use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::primitives::Cidr;

/// The prefix of a block's `affinity` when a node owns it.
pub const HOST_AFFINITY_PREFIX: &str = "host:";

/// One address handed out from a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamAllocation {
    pub ip: IpAddr,
    /// Who holds the address: the CNI plugin uses the container id.
    pub handle: String,
    /// The pod's namespace, for people reading the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name, for people reading the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// Spec of an `IPAMBlock`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamBlockSpec {
    /// Required; validation reports a block without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// `host:NODE` when a node owns the block; empty when nobody does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub affinity: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<IpamAllocation>,
}

impl IpamBlockSpec {
    /// The node this block is affine to, if any.
    pub fn affine_node(&self) -> Option<&str> {
        self.affinity
            .strip_prefix(HOST_AFFINITY_PREFIX)
            .filter(|n| !n.is_empty())
    }
}

/// The `affinity` value for `node`.
pub fn host_affinity(node: &str) -> String {
    format!("{HOST_AFFINITY_PREFIX}{node}")
}

/// The name of the block covering `cidr`: its text with `.`, `:` and `/`
/// replaced by `-` (Calico's convention), e.g. `10-65-0-0-26`.
pub fn ipam_block_name(cidr: IpNet) -> String {
    cidr.trunc()
        .to_string()
        .chars()
        .map(|c| if matches!(c, '.' | ':' | '/') { '-' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_follow_calico() {
        let cases = [
            ("10.65.0.0/26", "10-65-0-0-26"),
            ("192.168.1.64/26", "192-168-1-64-26"),
            ("10.65.0.5/26", "10-65-0-0-26"),
            ("fd00::/122", "fd00---122"),
        ];
        for (cidr, name) in cases {
            let net: IpNet = cidr.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
            assert_eq!(ipam_block_name(net), name, "{cidr}");
        }
    }

    #[test]
    fn affinity_names_a_node() {
        let spec = IpamBlockSpec {
            affinity: host_affinity("node-1"),
            ..IpamBlockSpec::default()
        };
        assert_eq!(spec.affine_node(), Some("node-1"));
        assert_eq!(IpamBlockSpec::default().affine_node(), None);
        let other = IpamBlockSpec {
            affinity: "host:".into(),
            ..IpamBlockSpec::default()
        };
        assert_eq!(other.affine_node(), None);
    }
}
