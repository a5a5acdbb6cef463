//! The fields Manul accepts but does not act on: the one list, with the
//! reason for each. The loader warns about every one a document sets
//! (`manulctl validate` prints the warnings), and a test holds the README's
//! list to this one.
//!
//! Calico's documents set many fields of `FelixConfiguration` and of the
//! operator's `Installation` that only make sense for Calico's own
//! components. Refusing them would make those documents fail to load;
//! ignoring them silently would let a user believe they took effect.

use serde_yaml_ng::Value;

use crate::resource::Kind;

/// A field that is accepted, typed and stored, but that nothing in Manul
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotActedOn {
    pub kind: Kind,
    /// The field's path in the document, such as `spec.ipipMTU`.
    pub field: &'static str,
    /// Why Manul does not act on it.
    pub reason: &'static str,
}

/// A field set in one document that Manul does not act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub reason: &'static str,
}

const SELECTOR_SCOPED: &str = "Felix merges only the FelixConfigurations named `default` and \
     `node.NAME`; a selector-scoped one applies to no node";
const DRIVER: &str = "Felix picks its dataplane from `bpfEnabled` and its flags; the iptables \
     dataplane always writes one nftables table of its own";
const DEBUG: &str = "Calico Felix's debugging, profiling and feature-detection hooks have no \
     counterpart in Manul";
const HEALTH: &str = "Manul's health endpoint listens on `healthPort` with fixed timeouts and \
     reports no status TTL";
const IPV6: &str = "Manul always handles IPv4 and IPv6 alike";
const TIMERS: &str = "Manul has no such periodic task or lock; its nftables table is \
     refreshed on `iptablesRefreshInterval`";
const SET_SIZE: &str = "Manul's nftables sets have no size limit";
const OPENSTACK: &str = "OpenStack is not supported";
const INTERFACES: &str = "Manul manages exactly the interfaces named by `interfacePrefix`";
const MTU: &str = "Manul does not manage MTUs";
const RULES: &str = "Manul's dataplanes own their table, marks and verdicts; Calico's \
     iptables tuning does not apply";
const LOGGING: &str = "Manul logs only to the console, at `logSeverityScreen`; there is no \
     log file, syslog or packet logging to configure";
const OVERLAY: &str = "Manul sets up no IPIP or VXLAN tunnels; pod traffic is routed directly \
     or through WireGuard";
const WIREGUARD_V6: &str = "Manul's WireGuard encrypts IPv4 pod traffic only";
const WIREGUARD_HOST: &str = "Manul's WireGuard encrypts pod-to-pod traffic only, not host \
     traffic";
const WIREGUARD_ROUTING: &str = "Manul routes other nodes' pod blocks through the WireGuard \
     interface in the main table; there is no routing rule";
const WIREGUARD_THREADS: &str = "the userspace WireGuard device picks its own threads";
const WIREGUARD_METRICS: &str = "Manul exports no WireGuard metrics";
const ROUTES: &str = "Manul programs only the routes to its own workloads, through its CNI \
     plugin; route tables, priorities and forwarding settings do not apply";
const METRICS: &str = "Manul's metrics server serves plain HTTP on `prometheusMetricsPort` \
     with its own metric set";
const USAGE: &str = "Manul never reports usage";
const NAT: &str = "Manul does no NAT; outgoing NAT is left to the network";
const SERVICES: &str = "Manul programs Services on both dataplanes from the Services and \
     EndpointSlices alone; it does not read this setting";
const CTLB_DEPRECATED: &str = "Calico's deprecated switch; Manul reads \
     `bpfConnectTimeLoadBalancing` only";
const BPF: &str = "Manul's eBPF programs, maps and conntrack are its own; only `bpfEnabled` \
     chooses them";
const XDP: &str = "Manul attaches no XDP programs and has no sidecar acceleration";
const FLOWS: &str = "Manul writes flow logs only to a local file (`flowLogsFileEnabled`); \
     there is no collector";
const PLATFORM: &str = "cloud, Windows and Istio integrations are not supported";
const GO: &str = "Manul is not a Go program";
const SPOOFING: &str = "Manul has no opt-out letting workloads send from addresses not \
     their own";
const POLICY_SYNC: &str = "Manul has no policy sync API for application-layer policy";

const OPERATOR: &str = "Manul has no operator: it deploys and configures no components, so \
     installation settings are stored only";
const CNI: &str = "Manul runs its own CNI plugin with datastore IPAM, whatever the \
     Installation names";
const SERVICE_CIDRS: &str = "Manul takes service addresses from the Services themselves";
const WINDOWS: &str = "Windows nodes are not supported";
const KUBE_PROXY: &str = "Manul does not manage kube-proxy";
const BGP: &str = "Manul runs no BGP; routes between nodes are the network's";
const POOLS: &str = "Manul allocates from IPPool resources, not from an Installation's pools";
const AUTODETECT: &str = "Manul reads node addresses from Node resources; it does not \
     autodetect them";
const HOST_PORTS: &str = "Manul does not implement hostPort";
const MULTI_INTERFACE: &str = "extra pod interfaces (Multus) are not supported";
const STATUS: &str = "Felix reports no status to the datastore; it writes a file per \
     programmed endpoint under its `--status-dir`";
const MAP_SIZES: &str = "the eBPF dataplane sizes its policy maps itself (only conntrack and \
     the service maps take a configured size)";
const POD_SETUP: &str = "Manul's CNI plugin sets pods up its own way (see its configuration)";

const fn felix(field: &'static str, reason: &'static str) -> NotActedOn {
    NotActedOn {
        kind: Kind::FelixConfiguration,
        field,
        reason,
    }
}

const fn installation(field: &'static str, reason: &'static str) -> NotActedOn {
    NotActedOn {
        kind: Kind::Installation,
        field,
        reason,
    }
}

/// Every field Manul accepts but does not act on, in the order of Calico's
/// references. Felix acts on the `FelixConfiguration` fields not listed
/// here (Felix's tests hold its settings to this table).
pub const NOT_ACTED_ON: &[NotActedOn] = &[
    felix("spec.nodeSelector", SELECTOR_SCOPED),
    felix("spec.useInternalDataplaneDriver", DRIVER),
    felix("spec.dataplaneDriver", DRIVER),
    felix("spec.dataplaneWatchdogTimeout", HEALTH),
    felix("spec.ipv6Support", IPV6),
    felix("spec.interfaceRefreshInterval", TIMERS),
    felix("spec.iptablesPostWriteCheckInterval", TIMERS),
    felix("spec.iptablesLockProbeInterval", TIMERS),
    felix("spec.featureDetectOverride", DEBUG),
    felix("spec.featureGates", DEBUG),
    felix("spec.maxIpsetSize", SET_SIZE),
    felix("spec.ipsetsRefreshInterval", TIMERS),
    felix("spec.reportingInterval", STATUS),
    felix("spec.endpointStatusPathPrefix", STATUS),
    felix("spec.bpfMapSizeIPSets", MAP_SIZES),
    felix("spec.iptablesBackend", DRIVER),
    felix("spec.xdpRefreshInterval", TIMERS),
    felix("spec.netlinkTimeout", TIMERS),
    felix("spec.metadataAddr", OPENSTACK),
    felix("spec.metadataPort", OPENSTACK),
    felix("spec.openstackRegion", OPENSTACK),
    felix("spec.interfaceExclude", INTERFACES),
    felix("spec.chainInsertMode", RULES),
    felix("spec.iptablesFilterAllowAction", RULES),
    felix("spec.iptablesMangleAllowAction", RULES),
    felix("spec.iptablesFilterDenyAction", RULES),
    felix("spec.logPrefix", LOGGING),
    felix("spec.logActionRateLimit", LOGGING),
    felix("spec.logActionRateLimitBurst", LOGGING),
    felix("spec.logFilePath", LOGGING),
    felix("spec.logSeverityFile", LOGGING),
    felix("spec.logSeveritySys", LOGGING),
    felix("spec.logDebugFilenameRegex", DEBUG),
    felix("spec.ipipEnabled", OVERLAY),
    felix("spec.ipipMTU", OVERLAY),
    felix("spec.vxlanEnabled", OVERLAY),
    felix("spec.vxlanMTU", OVERLAY),
    felix("spec.vxlanMTUV6", OVERLAY),
    felix("spec.vxlanPort", OVERLAY),
    felix("spec.vxlanVNI", OVERLAY),
    felix("spec.allowVXLANPacketsFromWorkloads", OVERLAY),
    felix("spec.allowIPIPPacketsFromWorkloads", OVERLAY),
    felix("spec.reportingTTL", HEALTH),
    felix("spec.endpointReportingEnabled", OPENSTACK),
    felix("spec.endpointReportingDelay", OPENSTACK),
    felix("spec.iptablesMarkMask", RULES),
    felix("spec.disableConntrackInvalidCheck", RULES),
    felix("spec.healthHost", HEALTH),
    felix("spec.healthTimeoutOverrides", HEALTH),
    felix("spec.prometheusMetricsHost", METRICS),
    felix("spec.prometheusGoMetricsEnabled", METRICS),
    felix("spec.prometheusProcessMetricsEnabled", METRICS),
    felix("spec.prometheusWireGuardMetricsEnabled", WIREGUARD_METRICS),
    felix("spec.prometheusMetricsCAFile", METRICS),
    felix("spec.prometheusMetricsCertFile", METRICS),
    felix("spec.prometheusMetricsKeyFile", METRICS),
    felix("spec.prometheusMetricsClientAuth", METRICS),
    felix("spec.kubeNodePortRanges", RULES),
    felix("spec.policySyncPathPrefix", POLICY_SYNC),
    felix("spec.usageReportingEnabled", USAGE),
    felix("spec.usageReportingInitialDelay", USAGE),
    felix("spec.usageReportingInterval", USAGE),
    felix("spec.natPortRange", NAT),
    felix("spec.natOutgoingAddress", NAT),
    felix("spec.natOutgoingExclusions", NAT),
    felix("spec.deviceRouteSourceAddress", ROUTES),
    felix("spec.deviceRouteSourceAddressIPv6", ROUTES),
    felix("spec.deviceRouteProtocol", ROUTES),
    felix("spec.removeExternalRoutes", ROUTES),
    felix("spec.programClusterRoutes", ROUTES),
    felix("spec.ipForwarding", ROUTES),
    felix("spec.externalNodesList", OVERLAY),
    felix("spec.debugMemoryProfilePath", DEBUG),
    felix("spec.debugDisableLogDropping", DEBUG),
    felix("spec.debugSimulateCalcGraphHangAfter", DEBUG),
    felix("spec.debugSimulateDataplaneHangAfter", DEBUG),
    felix("spec.debugSimulateDataplaneApplyDelay", DEBUG),
    felix("spec.debugHost", DEBUG),
    felix("spec.debugPort", DEBUG),
    felix("spec.iptablesNATOutgoingInterfaceFilter", RULES),
    felix("spec.sidecarAccelerationEnabled", XDP),
    felix("spec.xdpEnabled", XDP),
    felix("spec.genericXDPEnabled", XDP),
    felix("spec.nftablesMode", DRIVER),
    felix("spec.nftablesFlowTableOffload", RULES),
    felix("spec.nftablesFlowTableDataIfacePattern", INTERFACES),
    felix("spec.nftablesRefreshInterval", TIMERS),
    felix("spec.nftablesFilterAllowAction", RULES),
    felix("spec.nftablesMangleAllowAction", RULES),
    felix("spec.nftablesFilterDenyAction", RULES),
    felix("spec.nftablesMarkMask", RULES),
    felix("spec.bpfOverlayHostSourceIP", SERVICES),
    felix("spec.bpfDisableUnprivileged", BPF),
    felix("spec.bpfJITHardening", BPF),
    felix("spec.bpfLogLevel", BPF),
    felix("spec.bpfConntrackLogLevel", BPF),
    felix("spec.bpfConntrackMode", BPF),
    felix("spec.bpfConntrackTimeouts", BPF),
    felix("spec.bpfIPFragTimeout", BPF),
    felix("spec.bpfLogFilters", BPF),
    felix("spec.bpfCTLBLogFilter", BPF),
    felix("spec.bpfDataIfacePattern", INTERFACES),
    felix("spec.bpfL3IfacePattern", INTERFACES),
    felix("spec.bpfConnectTimeLoadBalancingEnabled", CTLB_DEPRECATED),
    felix("spec.bpfDSROptoutCIDRs", SERVICES),
    felix("spec.bpfExtToServiceConnmark", SERVICES),
    felix("spec.bpfKubeProxyIptablesCleanupEnabled", SERVICES),
    felix("spec.bpfKubeProxyMinSyncPeriod", SERVICES),
    felix("spec.bpfKubeProxyHealthzPort", SERVICES),
    felix("spec.bpfPSNATPorts", SERVICES),
    felix("spec.bpfMapSizeRoute", BPF),
    felix("spec.bpfMapSizePerCpuConntrack", BPF),
    felix("spec.bpfMapSizeConntrackScaling", BPF),
    felix("spec.bpfMapSizeConntrackCleanupQueue", BPF),
    felix("spec.bpfMapSizeIfState", BPF),
    felix("spec.bpfHostConntrackBypass", BPF),
    felix("spec.bpfIPFragmentReassemblyEnabled", BPF),
    felix("spec.bpfEnforceRPF", BPF),
    felix("spec.bpfPolicyDebugEnabled", DEBUG),
    felix("spec.bpfForceTrackPacketsFromIfaces", INTERFACES),
    felix("spec.bpfDisableGROForIfaces", INTERFACES),
    felix("spec.bpfExcludeCIDRsFromNAT", SERVICES),
    felix("spec.bpfExportBufferSizeMB", BPF),
    felix("spec.istioAmbientMode", PLATFORM),
    felix("spec.istioDSCPMark", PLATFORM),
    felix("spec.flowLogsPolicyEvaluationMode", FLOWS),
    felix("spec.bpfAttachType", BPF),
    felix("spec.flowLogsCollectorDebugTrace", FLOWS),
    felix("spec.flowLogsGoldmaneServer", FLOWS),
    felix("spec.flowLogsLocalReporter", FLOWS),
    felix("spec.bpfProfiling", DEBUG),
    felix("spec.routeSource", ROUTES),
    felix("spec.routeTableRanges", ROUTES),
    felix("spec.routeTableRange", ROUTES),
    felix("spec.routeSyncDisabled", ROUTES),
    felix("spec.ipv4NormalRoutePriority", ROUTES),
    felix("spec.ipv4ElevatedRoutePriority", ROUTES),
    felix("spec.ipv6NormalRoutePriority", ROUTES),
    felix("spec.ipv6ElevatedRoutePriority", ROUTES),
    felix("spec.liveMigrationRouteConvergenceTime", ROUTES),
    felix("spec.wireguardEnabledV6", WIREGUARD_V6),
    felix("spec.wireguardThreadingEnabled", WIREGUARD_THREADS),
    felix("spec.wireguardListeningPortV6", WIREGUARD_V6),
    felix("spec.wireguardRoutingRulePriority", WIREGUARD_ROUTING),
    felix("spec.wireguardInterfaceNameV6", WIREGUARD_V6),
    felix("spec.wireguardMTUV6", WIREGUARD_V6),
    felix("spec.wireguardHostEncryptionEnabled", WIREGUARD_HOST),
    felix("spec.awsSrcDstCheck", PLATFORM),
    felix("spec.serviceLoopPrevention", SERVICES),
    felix("spec.workloadSourceSpoofing", SPOOFING),
    felix("spec.mtuIfacePattern", MTU),
    felix("spec.floatingIPs", ROUTES),
    felix("spec.localSubnetL2Reachability", ROUTES),
    felix("spec.localSubnetL2ReachabilityRefreshInterval", ROUTES),
    felix("spec.windowsManageFirewallRules", PLATFORM),
    felix("spec.goGCThreshold", GO),
    felix("spec.goMemoryLimitMB", GO),
    felix("spec.goMaxProcs", GO),
    felix("spec.requireMTUFile", MTU),
    felix("spec.bpfMaglevMaxServices", SERVICES),
    installation("spec.variant", OPERATOR),
    installation("spec.registry", OPERATOR),
    installation("spec.imagePath", OPERATOR),
    installation("spec.imagePrefix", OPERATOR),
    installation("spec.imagePullSecrets", OPERATOR),
    installation("spec.imagePullPolicy", OPERATOR),
    installation("spec.kubernetesProvider", OPERATOR),
    installation("spec.cni", CNI),
    installation("spec.calicoNetwork.windowsDataplane", WINDOWS),
    installation("spec.calicoNetwork.bpfNetworkBootstrap", KUBE_PROXY),
    installation("spec.calicoNetwork.kubeProxyManagement", KUBE_PROXY),
    installation("spec.calicoNetwork.bgp", BGP),
    installation("spec.calicoNetwork.clusterRoutingMode", BGP),
    installation("spec.calicoNetwork.ipPools", POOLS),
    installation("spec.calicoNetwork.mtu", MTU),
    installation("spec.calicoNetwork.nodeAddressAutodetectionV4", AUTODETECT),
    installation("spec.calicoNetwork.nodeAddressAutodetectionV6", AUTODETECT),
    installation("spec.calicoNetwork.hostPorts", HOST_PORTS),
    installation("spec.calicoNetwork.multiInterfaceMode", MULTI_INTERFACE),
    installation("spec.calicoNetwork.containerIPForwarding", POD_SETUP),
    installation("spec.calicoNetwork.linuxPodInterfaceType", POD_SETUP),
    installation("spec.calicoNetwork.sysctl", POD_SETUP),
    installation(
        "spec.calicoNetwork.linuxPolicySetupTimeoutSeconds",
        POD_SETUP,
    ),
    installation("spec.typhaAffinity", OPERATOR),
    installation("spec.controlPlaneNodeSelector", OPERATOR),
    installation("spec.controlPlaneTolerations", OPERATOR),
    installation("spec.controlPlaneReplicas", OPERATOR),
    installation("spec.nodeMetricsPort", OPERATOR),
    installation("spec.typhaMetricsPort", OPERATOR),
    installation("spec.flexVolumePath", OPERATOR),
    installation("spec.calicoRunHostPath", OPERATOR),
    installation("spec.calicoLibHostPath", OPERATOR),
    installation("spec.kubeletVolumePluginPath", OPERATOR),
    installation("spec.nodeUpdateStrategy", OPERATOR),
    installation("spec.componentResources", OPERATOR),
    installation("spec.certificateManagement", OPERATOR),
    installation("spec.tlsCipherSuites", OPERATOR),
    installation("spec.nonPrivileged", OPERATOR),
    installation("spec.calicoNodeDaemonSet", OPERATOR),
    installation("spec.csiNodeDriverDaemonSet", OPERATOR),
    installation("spec.calicoKubeControllersDeployment", OPERATOR),
    installation("spec.typhaDeployment", OPERATOR),
    installation("spec.typhaPodDisruptionBudget", OPERATOR),
    installation("spec.calicoWindowsUpgradeDaemonSet", WINDOWS),
    installation("spec.calicoNodeWindowsDaemonSet", WINDOWS),
    installation("spec.fipsMode", OPERATOR),
    installation("spec.logging", OPERATOR),
    installation("spec.windowsNodes", WINDOWS),
    installation("spec.serviceCIDRs", SERVICE_CIDRS),
    installation("spec.azure", PLATFORM),
    installation("spec.proxy", OPERATOR),
    installation("spec.networkPolicy", OPERATOR),
];

/// The value at a dotted path of mapping keys, when set (not null), and
/// where it is in the document (the index of each key in its mapping).
fn lookup<'v>(root: &'v Value, path: &str) -> Option<(&'v Value, Vec<usize>)> {
    let mut v = root;
    let mut at = Vec::new();
    for key in path.split('.') {
        let map = v.as_mapping()?;
        let (index, (_, value)) = map
            .iter()
            .enumerate()
            .find(|(_, (k, _))| k.as_str() == Some(key))?;
        at.push(index);
        v = value;
    }
    (!v.is_null()).then_some((v, at))
}

/// The fields of a document of `kind` (its body as the loader holds it)
/// that Manul accepts but does not act on, in the document's order.
pub fn warnings(kind: Kind, document: &Value) -> Vec<Warning> {
    let mut found: Vec<(Vec<usize>, Warning)> = NOT_ACTED_ON
        .iter()
        .filter(|e| e.kind == kind)
        .filter_map(|e| {
            lookup(document, e.field).map(|(_, at)| {
                (
                    at,
                    Warning {
                        path: e.field.to_string(),
                        reason: e.reason,
                    },
                )
            })
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, w)| w).collect()
}

#[cfg(test)]
#[path = "not_acted_tests.rs"]
mod tests;
