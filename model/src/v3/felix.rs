//! The `FelixConfiguration` spec: every field of Calico's reference, each
//! typed so that a bad value is an error at its field. Which of them Manul
//! acts on is listed in [`crate::not_acted`]; the rest are accepted so that
//! Calico's documents load unchanged, and `manulctl validate` warns about
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cluster::{EndpointToHostAction, GoDuration, LogSeverity, ProtoPort};
use super::primitives::{Cidr, Port};
use crate::selector::Selector;

/// An enum Calico spells as a string and compares without regard to case
/// (its schema patterns are `(?i)`): any case is accepted, the canonical
/// spelling is written back.
macro_rules! calico_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every accepted value, canonically spelt.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                crate::crd::case_insensitive(Self::NAMES)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $(
                    if text.eq_ignore_ascii_case($text) {
                        return Ok($name::$variant);
                    }
                )+
                Err(de::Error::custom(format_args!(
                    "unknown value {text:?}; expected one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        }
    };
}

calico_enum!(
    /// Where Felix puts its jump rules in the kernel's chains.
    ChainInsertMode { Insert = "Insert", Append = "Append" }
);
calico_enum!(
    /// The verdict for traffic policy allows.
    AllowAction { Accept = "Accept", Return = "Return" }
);
calico_enum!(
    /// The verdict for traffic policy denies.
    DenyAction { Drop = "Drop", Reject = "Reject" }
);
calico_enum!(
    /// An on/off setting.
    OnOff { Enabled = "Enabled", Disabled = "Disabled" }
);
calico_enum!(
    /// Conntrack logging of the eBPF programs.
    BpfConntrackLogLevel { Off = "Off", Debug = "Debug" }
);
calico_enum!(
    /// Who cleans the eBPF conntrack table.
    BpfConntrackMode { Auto = "Auto", Userspace = "Userspace", BpfProgram = "BPFProgram" }
);
calico_enum!(
    /// How external traffic to a service is forwarded.
    BpfExternalServiceMode { Tunnel = "Tunnel", Dsr = "DSR" }
);
calico_enum!(
    /// Whether the conntrack map grows when full.
    BpfMapSizeConntrackScaling { Disabled = "Disabled", DoubleIfFull = "DoubleIfFull" }
);
calico_enum!(
    /// Reverse-path filtering in the eBPF programs.
    BpfEnforceRpf { Disabled = "Disabled", Strict = "Strict", Loose = "Loose" }
);
calico_enum!(
    /// Where the routes to workloads come from.
    RouteSource { WorkloadIps = "WorkloadIPs", CalicoIpam = "CalicoIPAM" }
);
calico_enum!(
    /// What happens to traffic to a service address nothing backs.
    ServiceLoopPrevention { Drop = "Drop", Reject = "Reject", Disabled = "Disabled" }
);
calico_enum!(
    /// Whether workloads may send from addresses not their own.
    WorkloadSourceSpoofing { Disabled = "Disabled", Any = "Any" }
);
calico_enum!(
    /// Which cluster routes Felix programs.
    ProgramClusterRoutes {
        Enabled = "Enabled",
        Disabled = "Disabled",
        EnabledIpipOnly = "EnabledIPIPOnly",
        EnabledNoEncapOnly = "EnabledNoEncapOnly",
    }
);
calico_enum!(
    /// Whether Felix's iptables dataplane runs through nftables.
    NftablesMode { Disabled = "Disabled", Enabled = "Enabled", Auto = "Auto" }
);
calico_enum!(
    /// Flowtable offload of accepted connections.
    NftablesFlowTableOffload { All = "All", Disabled = "Disabled" }
);
calico_enum!(
    /// The source/destination check of an AWS instance.
    AwsSrcDstCheck { DoNothing = "DoNothing", Enable = "Enable", Disable = "Disable" }
);
calico_enum!(
    /// How the eBPF programs are attached.
    BpfAttachType { Tc = "TC", Tcx = "TCX", Netkit = "Netkit" }
);
calico_enum!(
    /// Whether pods on the local subnet are reachable over L2.
    LocalSubnetL2Reachability { Disabled = "Disabled", PodsAndLoadBalancers = "PodsAndLoadBalancers" }
);
calico_enum!(
    /// Connect-time load balancing in the eBPF dataplane.
    BpfConnectTimeLoadBalancing { Tcp = "TCP", Enabled = "Enabled", Disabled = "Disabled" }
);
calico_enum!(
    /// The source address of host traffic into the overlay.
    BpfOverlayHostSourceIp { TunnelAddress = "TunnelAddress", HostAddress = "HostAddress" }
);
calico_enum!(
    /// The kernel's BPF JIT hardening.
    BpfJitHardening { Auto = "Auto", Strict = "Strict" }
);
calico_enum!(
    /// How flow logs evaluate policy.
    FlowLogsPolicyEvaluationMode { None = "None", Continuous = "Continuous" }
);
calico_enum!(
    /// Which destinations are exempt from outgoing NAT.
    NatOutgoingExclusions { IpPoolsOnly = "IPPoolsOnly", IpPoolsAndHostIps = "IPPoolsAndHostIPs" }
);
calico_enum!(
    /// Client certificate checking of the metrics server.
    PrometheusMetricsClientAuth {
        RequireAndVerifyClientCert = "RequireAndVerifyClientCert",
        RequireAnyClientCert = "RequireAnyClientCert",
        VerifyClientCertIfGiven = "VerifyClientCertIfGiven",
        NoClientCert = "NoClientCert",
    }
);

/// A per-component health timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthTimeoutOverride {
    pub name: String,
    pub timeout: GoDuration,
}

/// An inclusive range of routing table numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTableRange {
    pub min: u32,
    pub max: u32,
}

/// A conntrack timeout of the eBPF dataplane: a duration or `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfConntrackTimeout {
    Auto,
    After(GoDuration),
}

impl Serialize for BpfConntrackTimeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BpfConntrackTimeout::Auto => s.serialize_str("Auto"),
            BpfConntrackTimeout::After(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BpfConntrackTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "Auto" {
            return Ok(BpfConntrackTimeout::Auto);
        }
        text.parse()
            .map(BpfConntrackTimeout::After)
            .map_err(|e: String| de::Error::custom(format_args!("{e}, or Auto")))
    }
}

/// The eBPF dataplane's conntrack timeouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BpfConntrackTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_grace_period: Option<BpfConntrackTimeout>,
    #[serde(
        default,
        rename = "tcpSynSent",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_syn_sent: Option<BpfConntrackTimeout>,
    #[serde(
        default,
        rename = "tcpEstablished",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_established: Option<BpfConntrackTimeout>,
    #[serde(
        default,
        rename = "tcpFinsSeen",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_fins_seen: Option<BpfConntrackTimeout>,
    #[serde(
        default,
        rename = "tcpResetSeen",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_reset_seen: Option<BpfConntrackTimeout>,
    #[serde(
        default,
        rename = "udpTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_timeout: Option<BpfConntrackTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_timeout: Option<BpfConntrackTimeout>,
    #[serde(
        default,
        rename = "icmpTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_timeout: Option<BpfConntrackTimeout>,
}

/// The DSCP names Calico accepts besides numbers 0-63.
pub const DSCP_NAMES: &[&str] = &[
    "DF", "EF", "AF11", "AF12", "AF13", "AF21", "AF22", "AF23", "AF31", "AF32", "AF33", "AF41",
    "AF42", "AF43", "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6",
];

/// A DSCP value: a number 0-63 or a standard name such as `EF` or `AF21`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dscp {
    Value(u8),
    Name(String),
}

impl Serialize for Dscp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dscp::Value(n) => s.serialize_u8(*n),
            Dscp::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Dscp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dscp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DSCP value 0-63 or a name such as EF or AF21")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dscp, E> {
                u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= 63)
                    .map(Dscp::Value)
                    .ok_or_else(|| E::custom(format_args!("DSCP {n} is out of range 0-63")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dscp, E> {
                Err(E::custom(format_args!("DSCP {n} is out of range 0-63")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dscp, E> {
                DSCP_NAMES
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(s))
                    .map(|n| Dscp::Name((*n).to_string()))
                    .ok_or_else(|| {
                        E::custom(format_args!(
                            "unknown DSCP name {s:?}; expected 0-63 or one of {}",
                            DSCP_NAMES.join(", ")
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// Spec of a `FelixConfiguration` (`default` for the cluster, `node.NAME`
/// for one node): every field of Calico's reference, in its order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_internal_dataplane_driver: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_watchdog_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_support: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_post_write_check_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_lock_probe_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_detect_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsets_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ipset_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_exclude: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_insert_mode: Option<ChainInsertMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint_to_host_action: Option<EndpointToHostAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_filter_allow_action: Option<AllowAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_mangle_allow_action: Option<AllowAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_filter_deny_action: Option<DenyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_action_rate_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_action_rate_limit_burst: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_file: Option<LogSeverity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_sys: Option<LogSeverity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_debug_filename_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_enabled: Option<bool>,
    #[serde(default, rename = "ipipMTU", skip_serializing_if = "Option::is_none")]
    pub ipip_mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_enabled: Option<bool>,
    #[serde(default, rename = "vxlanMTU", skip_serializing_if = "Option::is_none")]
    pub vxlan_mtu: Option<u32>,
    #[serde(
        default,
        rename = "vxlanMTUV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_mtuv6: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    #[serde(default, rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<u32>,
    #[serde(
        default,
        rename = "allowVXLANPacketsFromWorkloads",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_vxlan_packets_from_workloads: Option<bool>,
    #[serde(
        default,
        rename = "allowIPIPPacketsFromWorkloads",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ipip_packets_from_workloads: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<GoDuration>,
    #[serde(
        default,
        rename = "reportingTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub reporting_ttl: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_reporting_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_reporting_delay: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_status_path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_mark_mask: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_conntrack_invalid_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_overrides: Option<Vec<HealthTimeoutOverride>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_go_metrics_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_process_metrics_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_wire_guard_metrics_enabled: Option<bool>,
    #[serde(
        default,
        rename = "prometheusMetricsCAFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_client_auth: Option<PrometheusMetricsClientAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_inbound_host_ports: Option<Vec<ProtoPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_outbound_host_ports: Option<Vec<ProtoPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_node_port_ranges: Option<Vec<Port>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sync_path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_initial_delay: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_address: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_exclusions: Option<NatOutgoingExclusions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_source_address: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_source_address_i_pv6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_protocol: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_external_routes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<ProgramClusterRoutes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forwarding: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_nodes_list: Option<Vec<Cidr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_memory_profile_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_disable_log_dropping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_simulate_calc_graph_hang_after: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_simulate_dataplane_hang_after: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_simulate_dataplane_apply_delay: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_port: Option<u16>,
    #[serde(
        default,
        rename = "iptablesNATOutgoingInterfaceFilter",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_nat_outgoing_interface_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_acceleration_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_enabled: Option<bool>,
    #[serde(
        default,
        rename = "genericXDPEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub generic_xdp_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_mode: Option<NftablesMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_flow_table_offload: Option<NftablesFlowTableOffload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_flow_table_data_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_filter_allow_action: Option<AllowAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_mangle_allow_action: Option<AllowAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_filter_deny_action: Option<DenyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_mark_mask: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfOverlayHostSourceIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_overlay_host_source_ip: Option<BpfOverlayHostSourceIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_disable_unprivileged: Option<bool>,
    #[serde(
        default,
        rename = "bpfJITHardening",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_jit_hardening: Option<BpfJitHardening>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_log_level: Option<BpfConntrackLogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_mode: Option<BpfConntrackMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_timeouts: Option<BpfConntrackTimeouts>,
    #[serde(
        default,
        rename = "bpfIPFragTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ip_frag_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_log_filters: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        rename = "bpfCTLBLogFilter",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ctlb_log_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_data_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_l3_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_connect_time_load_balancing_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_connect_time_load_balancing: Option<BpfConnectTimeLoadBalancing>,
    #[serde(
        default,
        rename = "bpfHostNetworkedNATWithoutCTLB",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_host_networked_nat_without_ctlb: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_external_service_mode: Option<BpfExternalServiceMode>,
    #[serde(
        default,
        rename = "bpfDSROptoutCIDRs",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_dsr_optout_cid_rs: Option<Vec<Cidr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_ext_to_service_connmark: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_iptables_cleanup_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_min_sync_period: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_healthz_port: Option<u16>,
    #[serde(
        default,
        rename = "bpfPSNATPorts",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_psnat_ports: Option<Port>,
    #[serde(
        default,
        rename = "bpfMapSizeNATFrontend",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_frontend: Option<u32>,
    #[serde(
        default,
        rename = "bpfMapSizeNATBackend",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_backend: Option<u32>,
    #[serde(
        default,
        rename = "bpfMapSizeNATAffinity",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_affinity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_route: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_per_cpu_conntrack: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack_scaling: Option<BpfMapSizeConntrackScaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack_cleanup_queue: Option<u32>,
    #[serde(
        default,
        rename = "bpfMapSizeIPSets",
        alias = "bpfMapSizeIpSets",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_ip_sets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_if_state: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_host_conntrack_bypass: Option<bool>,
    #[serde(
        default,
        rename = "bpfIPFragmentReassemblyEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ip_fragment_reassembly_enabled: Option<bool>,
    #[serde(
        default,
        rename = "bpfEnforceRPF",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_enforce_rpf: Option<BpfEnforceRpf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_policy_debug_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_force_track_packets_from_ifaces: Option<Vec<String>>,
    #[serde(
        default,
        rename = "bpfDisableGROForIfaces",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_disable_gro_for_ifaces: Option<String>,
    #[serde(
        default,
        rename = "bpfExcludeCIDRsFromNAT",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_exclude_cid_rs_from_nat: Option<Vec<Cidr>>,
    #[serde(
        default,
        rename = "bpfExportBufferSizeMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_export_buffer_size_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio_ambient_mode: Option<OnOff>,
    #[serde(
        default,
        rename = "istioDSCPMark",
        skip_serializing_if = "Option::is_none"
    )]
    pub istio_dscp_mark: Option<Dscp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_v2_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_policy_evaluation_mode: Option<FlowLogsPolicyEvaluationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_redirect_to_peer: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_attach_type: Option<BpfAttachType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_flush_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_collector_debug_trace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_goldmane_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_local_reporter: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_profiling: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_source: Option<RouteSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_ranges: Option<Vec<RouteTableRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_range: Option<RouteTableRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_sync_disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_elevated_route_priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_elevated_route_priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_migration_route_convergence_time: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled_v6: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_threading_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port_v6: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_routing_rule_priority: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_interface_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_interface_name_v6: Option<String>,
    #[serde(
        default,
        rename = "wireguardMTU",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_mtu: Option<u32>,
    #[serde(
        default,
        rename = "wireguardMTUV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_mtuv6: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_host_encryption_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_keep_alive: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_src_dst_check: Option<AwsSrcDstCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_loop_prevention: Option<ServiceLoopPrevention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_source_spoofing: Option<WorkloadSourceSpoofing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_i_ps: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_subnet_l2_reachability: Option<LocalSubnetL2Reachability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_subnet_l2_reachability_refresh_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_manage_firewall_rules: Option<OnOff>,
    #[serde(
        default,
        rename = "goGCThreshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub go_gc_threshold: Option<i64>,
    #[serde(
        default,
        rename = "goMemoryLimitMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub go_memory_limit_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go_max_procs: Option<i64>,
    #[serde(
        default,
        rename = "requireMTUFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub require_mtu_file: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_maglev_max_endpoints_per_service: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_maglev_max_services: Option<u16>,
    /// Not in Calico Open Source's reference; kept because Felix acts on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_file_enabled: Option<bool>,
}
