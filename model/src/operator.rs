//! The `operator.tigera.io/v1` `Installation`, which users know from the
//! Calico operator: Manul reads its dataplane choice and pools from it.

use serde::{Deserialize, Serialize};

use crate::v3::{Cidr, EncapMode};

/// The API group and version of the operator's resources.
pub const API_VERSION: &str = "operator.tigera.io/v1";

/// Spec of an `Installation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_network: Option<CalicoNetworkSpec>,
}

/// The dataplane a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinuxDataplane {
    Iptables,
    #[serde(rename = "BPF")]
    Bpf,
    Nftables,
    #[serde(rename = "VPP")]
    Vpp,
}

/// An on/off switch spelled the operator's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Toggle {
    Enabled,
    Disabled,
}

/// Networking settings of an `Installation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalicoNetworkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_dataplane: Option<LinuxDataplane>,
    #[serde(
        default,
        rename = "containerIPForwarding",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_ip_forwarding: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(
        default,
        rename = "linuxPolicySetupTimeoutSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub linux_policy_setup_timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_pools: Vec<InstallationIpPool>,
}

/// Pool encapsulation, the operator's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encapsulation {
    #[serde(rename = "IPIP")]
    Ipip,
    #[serde(rename = "IPIPCrossSubnet")]
    IpipCrossSubnet,
    #[serde(rename = "VXLAN")]
    Vxlan,
    #[serde(rename = "VXLANCrossSubnet")]
    VxlanCrossSubnet,
    None,
}

impl Encapsulation {
    /// The equivalent (VXLAN, IPIP) modes of a v3 IPPool.
    pub fn modes(self) -> (EncapMode, EncapMode) {
        match self {
            Encapsulation::Ipip => (EncapMode::Never, EncapMode::Always),
            Encapsulation::IpipCrossSubnet => (EncapMode::Never, EncapMode::CrossSubnet),
            Encapsulation::Vxlan => (EncapMode::Always, EncapMode::Never),
            Encapsulation::VxlanCrossSubnet => (EncapMode::CrossSubnet, EncapMode::Never),
            Encapsulation::None => (EncapMode::Never, EncapMode::Never),
        }
    }
}

/// An IP pool declared in an `Installation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallationIpPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub cidr: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<Encapsulation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
}
