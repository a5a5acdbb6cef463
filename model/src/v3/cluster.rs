//! Cluster-level resources: nodes, IP pools and the value types of Felix
//! configuration (its spec is in `felix.rs`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::primitives::{Cidr, Protocol};
use crate::selector::Selector;

/// Spec of a `ClusterInformation` (only `default` exists): what the
/// datastore says about itself. In Kubernetes mode Typha's pod watcher
/// writes `datastoreReady: true` in the same batch as its first list, with
/// every live pod's address recorded in the IPAM blocks; the CNI plugin
/// allocates nothing until it reads that (as Calico's plugin refuses to
/// work while `datastoreReady` is not set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInformationSpec {
    #[serde(
        default,
        rename = "clusterGUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The name of the one `ClusterInformation`.
pub const CLUSTER_INFORMATION_NAME: &str = "default";

/// The annotation of a `Node` holding its WireGuard public key (base64, as
/// `wg` prints it). Calico shows it as the Node's `status.wireguardPublicKey`
/// and stores it, in Kubernetes, as this annotation of the node; Manul's
/// Nodes carry no status, so the annotation is the one place: Felix writes
/// its own node's, and reads every other node's to learn its peers.
pub const WIREGUARD_PUBLIC_KEY_ANNOTATION: &str = "projectcalico.org/WireguardPublicKey";

/// Spec of a `Node`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<IpAddr>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
}

/// BGP settings of a node; Manul reads the node's addresses from here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    #[serde(
        default,
        rename = "ipv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<Cidr>,
    #[serde(
        default,
        rename = "ipv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<Cidr>,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<IpAddr>,
    #[serde(default, rename = "asNumber", skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
}

/// One address of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<NodeAddressType>,
}

/// Where a node address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NodeAddressType {
    InternalIP,
    ExternalIP,
    #[serde(rename = "CalicoNodeIP")]
    CalicoNodeIp,
}

/// The orchestrator's name for a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    pub node_name: String,
    pub orchestrator: String,
}

/// Encapsulation mode of an IP pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

/// What addresses of a pool may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// How addresses are handed out from a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

/// The block size of an IPv4 pool that sets none (Calico's default).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// The block size of an IPv6 pool that sets none (Calico's default).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// The default block size of a pool of IPv4 (`ipv4`) or IPv6 addresses.
pub fn default_block_size(ipv4: bool) -> u8 {
    if ipv4 {
        DEFAULT_BLOCK_SIZE_V4
    } else {
        DEFAULT_BLOCK_SIZE_V6
    }
}

/// Spec of an `IPPool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    /// Required; validation reports a pool without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default, rename = "ipipMode")]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    /// Per-node block size; defaults to 26 (IPv4) or 122 (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default = "Selector::all")]
    pub node_selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

/// A Go-style duration such as `90s`, `1m30s` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<GoDuration, String> {
        let bad = || format!("{s:?} is not a duration (such as 90s, 1m30s or 500ms)");
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut rest = s;
        let mut total = 0f64;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += value * scale;
        }
        Duration::try_from_secs_f64(total)
            .map(GoDuration)
            .map_err(|_| bad())
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A protocol and port that is always allowed on host endpoints, so a bad
/// policy cannot cut a node off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtoPort {
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Cidr>,
}

/// Log severities, as Calico spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogSeverity {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

/// What happens to traffic from a workload to its own host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EndpointToHostAction {
    Drop,
    Return,
    Accept,
}
