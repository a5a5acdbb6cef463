//! The `operator.tigera.io/v1` `Installation`, which users know from the
//! Calico operator. Every field of the operator's reference is accepted and
//! typed, so that Calico's install documents (EKS, AKS, IP
//! autodetection...) load unchanged; which of them Manul acts on is listed
//! in [`crate::not_acted`].
//!
//! The component overrides (`calicoNodeDaemonSet`, `typhaDeployment` and
//! the others) share one shape here, the union of the operator's: each
//! accepts the fields any of them has.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSetUpdateStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, NodeSelector, PodDNSConfig, PreferredSchedulingTerm,
    ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::v3::{AllowedUse, AssignmentMode, Cidr, EncapMode};

/// The API group and version of the operator's resources.
pub const API_VERSION: &str = "operator.tigera.io/v1";

/// Spec of an `Installation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<ProductVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_provider: Option<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_network: Option<CalicoNetworkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typha_affinity: Option<TyphaAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_metrics_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typha_metrics_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flex_volume_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_run_host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_lib_host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_volume_plugin_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_update_strategy: Option<DaemonSetUpdateStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_resources: Option<Vec<ComponentResource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_management: Option<CertificateManagement>,
    #[serde(
        default,
        rename = "tlsCipherSuites",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_cipher_suites: Option<Vec<TlsCipherSuite>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_privileged: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_node_daemon_set: Option<ComponentOverride>,
    #[serde(
        default,
        rename = "csiNodeDriverDaemonSet",
        skip_serializing_if = "Option::is_none"
    )]
    pub csi_node_driver_daemon_set: Option<ComponentOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_kube_controllers_deployment: Option<ComponentOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typha_deployment: Option<ComponentOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typha_pod_disruption_budget: Option<PodDisruptionBudgetOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_windows_upgrade_daemon_set: Option<ComponentOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_node_windows_daemon_set: Option<ComponentOverride>,
    #[serde(default, rename = "fipsMode", skip_serializing_if = "Option::is_none")]
    pub fips_mode: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_nodes: Option<WindowsNodeSpec>,
    #[serde(
        default,
        rename = "serviceCIDRs",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_cidrs: Option<Vec<Cidr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<Azure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicyManagement>,
}

/// The product an `Installation` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductVariant {
    Calico,
    CalicoEnterprise,
    TigeraSecureEnterprise,
}

/// When images are pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The platform the cluster runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "")]
    Unspecified,
    #[serde(rename = "EKS")]
    Eks,
    #[serde(rename = "GKE")]
    Gke,
    #[serde(rename = "AKS")]
    Aks,
    OpenShift,
    DockerEnterprise,
    #[serde(rename = "RKE2")]
    Rke2,
    #[serde(rename = "TKG")]
    Tkg,
    Kind,
}

/// The CNI plugin and IPAM a cluster uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniSpec {
    #[serde(rename = "type")]
    pub plugin: CniPlugin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_version: Option<CniSpecVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_mode: Option<CniInstallMode>,
}

/// A CNI plugin the operator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CniPlugin {
    Calico,
    #[serde(rename = "GKE")]
    Gke,
    #[serde(rename = "AmazonVPC")]
    AmazonVpc,
    #[serde(rename = "AzureVNET")]
    AzureVnet,
}

/// The IPAM plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamSpec {
    #[serde(rename = "type")]
    pub plugin: IpamPlugin,
}

/// An IPAM plugin the operator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpamPlugin {
    Calico,
    HostLocal,
    #[serde(rename = "AmazonVPC")]
    AmazonVpc,
    #[serde(rename = "AzureVNET")]
    AzureVnet,
}

/// The CNI specification version of the plugin's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CniSpecVersion {
    Auto,
    #[serde(rename = "0.3.1")]
    V0_3_1,
    #[serde(rename = "0.4.0")]
    V0_4_0,
    #[serde(rename = "1.0.0")]
    V1_0_0,
}

/// Which CNI plugins are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CniInstallMode {
    All,
    CalicoOnly,
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

/// The Windows dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowsDataplane {
    #[serde(rename = "HNS")]
    Hns,
    Disabled,
}

/// An on/off switch spelled the operator's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Toggle {
    Enabled,
    Disabled,
}

/// Who programs the routes between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterRoutingMode {
    #[serde(rename = "BIRD")]
    Bird,
    Felix,
    #[serde(rename = "FelixIPIPOnly")]
    FelixIpipOnly,
}

/// Extra pod interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiInterfaceMode {
    None,
    Multus,
}

/// The kind of interface pods get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinuxPodInterfaceType {
    Veth,
    Netkit,
}

/// Networking settings of an `Installation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalicoNetworkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_dataplane: Option<LinuxDataplane>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_dataplane: Option<WindowsDataplane>,
    #[serde(
        default,
        rename = "bpfNetworkBootstrap",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_network_bootstrap: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_management: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_routing_mode: Option<ClusterRoutingMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_pools: Option<Vec<InstallationIpPool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(
        default,
        rename = "nodeAddressAutodetectionV4",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_address_autodetection_v4: Option<NodeAddressAutodetection>,
    #[serde(
        default,
        rename = "nodeAddressAutodetectionV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_address_autodetection_v6: Option<NodeAddressAutodetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_interface_mode: Option<MultiInterfaceMode>,
    #[serde(
        default,
        rename = "containerIPForwarding",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_ip_forwarding: Option<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_pod_interface_type: Option<LinuxPodInterfaceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<Vec<Sysctl>>,
    #[serde(
        default,
        rename = "linuxPolicySetupTimeoutSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub linux_policy_setup_timeout_seconds: Option<u32>,
}

/// How a node's own address is found. One method is used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddressAutodetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_found: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesAutodetectionMethod>,
    /// A regular expression of interface names to take the address from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// A regular expression of interface names to skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_interface: Option<String>,
    /// An address or host name: the interface that reaches it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_reach: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<Cidr>,
}

/// Where the Kubernetes node's address is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KubernetesAutodetectionMethod {
    #[serde(rename = "NodeInternalIP")]
    NodeInternalIp,
}

/// A kernel setting for calico-node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    pub key: SysctlKey,
    pub value: String,
}

/// The kernel settings the operator lets users set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SysctlKey {
    #[serde(rename = "net.ipv4.tcp_keepalive_intvl")]
    TcpKeepaliveIntvl,
    #[serde(rename = "net.ipv4.tcp_keepalive_probes")]
    TcpKeepaliveProbes,
    #[serde(rename = "net.ipv4.tcp_keepalive_time")]
    TcpKeepaliveTime,
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
    pub node_selector: Option<Selector>,
    #[serde(
        default,
        rename = "disableBGPExport",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_bgp_export: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_new_allocations: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

/// Where Typha may be scheduled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TyphaAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<TyphaNodeAffinity>,
}

/// Node affinity terms for Typha.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TyphaNodeAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
}

/// Resources of one component (the older form of the overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentResource {
    pub component_name: ComponentName,
    pub resource_requirements: ResourceRequirements,
}

/// A component whose resources can be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentName {
    Node,
    Typha,
    KubeControllers,
    NodeWindows,
    FelixWindows,
    ConfdWindows,
}

/// A CA the operator's certificates are issued under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateManagement {
    /// The CA certificate, base64 in the document.
    pub ca_cert: String,
    pub signer_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_algorithm: Option<String>,
}

/// One allowed TLS cipher suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCipherSuite {
    pub name: String,
}

/// Labels and annotations added to a component's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverrideMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Overrides of one of the operator's DaemonSets or Deployments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<OverrideMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ComponentOverrideSpec>,
}

/// The spec of a component override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentOverrideSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateOverride>,
    /// Typha's rollout strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategyOverride>,
}

/// A Deployment's rolling update settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStrategyOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDeployment>,
}

/// The pod template of a component override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<OverrideMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpecOverride>,
}

/// The pod spec of a component override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpecOverride {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerOverride>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<DnsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// A pod's DNS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsPolicy {
    #[serde(rename = "")]
    Unspecified,
    Default,
    ClusterFirst,
    ClusterFirstWithHostNet,
    None,
}

/// Overrides of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerOverride {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<ProbeOverride>,
}

/// Timing of a container's probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
}

/// Typha's PodDisruptionBudget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDisruptionBudgetOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<OverrideMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodDisruptionBudgetOverrideSpec>,
}

/// The spec of Typha's PodDisruptionBudget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDisruptionBudgetOverrideSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_pod_eviction_policy: Option<UnhealthyPodEvictionPolicy>,
}

/// When unhealthy pods may be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnhealthyPodEvictionPolicy {
    IfHealthyBudget,
    AlwaysAllow,
}

/// Logging settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniLogging>,
}

/// The CNI plugin's logging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniLogging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity: Option<OperatorLogLevel>,
    /// A Kubernetes quantity such as `100Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_max_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_max_age_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_max_count: Option<u32>,
}

/// The operator's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorLogLevel {
    Error,
    Warn,
    Warning,
    Info,
    Debug,
}

/// Settings for Windows nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowsNodeSpec {
    #[serde(default, rename = "cniBinDir", skip_serializing_if = "Option::is_none")]
    pub cni_bin_dir: Option<String>,
    #[serde(
        default,
        rename = "cniConfigDir",
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_config_dir: Option<String>,
    #[serde(default, rename = "cniLogDir", skip_serializing_if = "Option::is_none")]
    pub cni_log_dir: Option<String>,
    #[serde(
        default,
        rename = "vxlanMACPrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_mac_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_adapter: Option<String>,
}

/// Azure settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Azure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_mode: Option<AzurePolicyMode>,
}

/// How the AKS policy integration is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AzurePolicyMode {
    Default,
    Manual,
}

/// The HTTP proxy the components use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    #[serde(default, rename = "httpProxy", skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<String>,
    #[serde(
        default,
        rename = "httpsProxy",
        skip_serializing_if = "Option::is_none"
    )]
    pub https_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
}

/// Whether the operator manages its own network policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyManagement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_policies: Option<Toggle>,
}
