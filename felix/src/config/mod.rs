//! Felix's effective configuration, merged as Calico merges it. Pure: the
//! inputs (the datastore's `FelixConfiguration`s, the environment, the
//! command line) are passed in; nothing here reads a file, the environment
//! or the clock.
//!
//! Priority, highest first (Calico's `config_params.go` order, with the
//! command line above the environment as the most explicit local input):
//!
//! 1. a command-line flag given explicitly ([`Source::Flag`]),
//! 2. the environment, `FELIX_<NAME>` with the name upper-cased, matched
//!    case-insensitively ([`Source::Environment`]),
//! 3. the operator's `Installation` `default`, as the settings Calico's
//!    operator derives from it (`linuxDataplane` → `bpfEnabled`;
//!    [`Source::Installation`]),
//! 4. the node's own `FelixConfiguration` `node.<nodename>`
//!    ([`Source::DatastorePerHost`]),
//! 5. the global `FelixConfiguration` `default` ([`Source::DatastoreGlobal`]),
//! 6. the built-in default ([`Source::Default`]).
//!
//! Local-only settings (where to listen, where to write files) have no
//! datastore field and come from flags and the environment only. Every value
//! remembers where it came from, and every setting says whether a change
//! applies live or needs the dataplane restarted ([`Apply`]).
//!
//! It refuses a malformed local value (an error naming the variable or flag
//! and the value); datastore values were validated when they were written.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use manul_model::convert::installation::{INSTALLATION_NAME, felix_settings};
use manul_model::operator::InstallationSpec;
use manul_model::v3::{
    BpfConnectTimeLoadBalancing, BpfExternalServiceMode, EndpointToHostAction,
    FelixConfigurationSpec, LogSeverity, ProtoPort,
};
use serde::Serialize;

pub use parse::{parse_ports, parse_prefixes};

/// Where a value came from, lowest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Default,
    DatastoreGlobal,
    DatastorePerHost,
    Installation,
    Environment,
    Flag,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::DatastoreGlobal => "datastore (default)",
            Source::DatastorePerHost => "datastore (node)",
            Source::Installation => "installation",
            Source::Environment => "environment",
            Source::Flag => "flag",
        }
    }
}

/// When a change to a setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Apply {
    /// At once, in the running Felix.
    Live,
    /// Felix restarts its dataplane (the kernel state keeps enforcing
    /// meanwhile).
    Restart,
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// A malformed local setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{origin} {value:?}: {reason}")]
    Invalid {
        /// The variable (`FELIX_INTERFACEPREFIX`) or flag that gave it.
        origin: String,
        value: String,
        reason: String,
    },
}

/// What the configuration is merged from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The global `default` FelixConfiguration, if stored.
    pub global: Option<FelixConfigurationSpec>,
    /// This node's `node.<nodename>` FelixConfiguration, if stored.
    pub node: Option<FelixConfigurationSpec>,
    /// The settings the `Installation` `default` gives, if stored
    /// ([`manul_model::convert::installation::felix_settings`]).
    pub installation: Option<FelixConfigurationSpec>,
    /// `FELIX_*` variables, names upper-cased.
    pub env: BTreeMap<String, String>,
    /// Settings given explicitly on the command line, by setting name
    /// (`bpfEnabled`), in the same text form as the environment.
    pub flags: BTreeMap<&'static str, String>,
}

impl Inputs {
    /// Keeps the `FELIX_*` variables of `vars` (any case), upper-cased.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Inputs {
        self.env = vars
            .into_iter()
            .filter(|(k, _)| k.len() > 6 && k[..6].eq_ignore_ascii_case("FELIX_"))
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        self
    }

    /// The Installation layer: only `default` counts. Returns whether
    /// the name was `default`, and a warning for a value Felix cannot act
    /// on.
    pub fn set_installation(
        &mut self,
        name: &str,
        spec: Option<&InstallationSpec>,
    ) -> (bool, Option<String>) {
        if name != INSTALLATION_NAME {
            return (false, None);
        }
        match spec.map(felix_settings) {
            Some((settings, warning)) => {
                self.installation = Some(settings);
                (true, warning)
            }
            None => {
                self.installation = None;
                (true, None)
            }
        }
    }

    /// The datastore layer for `node`: `default` is global, `node.<node>`
    /// is this node's; anything else is another node's and ignored.
    /// Returns whether the name was this node's or the global one.
    pub fn set_datastore(
        &mut self,
        node: &str,
        name: &str,
        spec: Option<FelixConfigurationSpec>,
    ) -> bool {
        if name == "default" {
            self.global = spec;
            true
        } else if name.strip_prefix("node.") == Some(node) {
            self.node = spec;
            true
        } else {
            false
        }
    }
}

/// The environment variable of a setting: `FELIX_` and its name upper-cased.
pub fn env_name(name: &str) -> String {
    format!("FELIX_{}", name.to_ascii_uppercase())
}

/// A value's text for display.
pub trait Render {
    fn render(&self) -> String;
}

impl Render for bool {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Render for u16 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Render for u32 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Render for String {
    fn render(&self) -> String {
        self.clone()
    }
}

impl Render for Vec<String> {
    fn render(&self) -> String {
        self.join(",")
    }
}

impl Render for Duration {
    fn render(&self) -> String {
        manul_model::v3::GoDuration(*self).to_string()
    }
}

impl Render for LogSeverity {
    fn render(&self) -> String {
        format!("{self:?}")
    }
}

impl Render for EndpointToHostAction {
    fn render(&self) -> String {
        format!("{self:?}")
    }
}

impl Render for BpfExternalServiceMode {
    fn render(&self) -> String {
        self.as_str().to_string()
    }
}

impl Render for manul_model::v3::OnOff {
    fn render(&self) -> String {
        self.as_str().to_string()
    }
}

impl Render for BpfConnectTimeLoadBalancing {
    fn render(&self) -> String {
        self.as_str().to_string()
    }
}

impl Render for Vec<ProtoPort> {
    fn render(&self) -> String {
        if self.is_empty() {
            return "none".into();
        }
        self.iter()
            .map(|p| match &p.net {
                Some(net) => format!("{}:{}:{}", p.protocol, net.0, p.port),
                None => format!("{}:{}", p.protocol, p.port),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One setting as shown by `felix --print-config` and `/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
    pub apply: Apply,
}

/// A setting whose value changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: &'static str,
    pub apply: Apply,
}

type SpecField<T> = fn(&FelixConfigurationSpec) -> Option<T>;
type Parser<T> = fn(&str) -> Result<T, String>;

fn pick<T>(
    name: &'static str,
    default: T,
    spec: SpecField<T>,
    parse: Parser<T>,
    inputs: &Inputs,
) -> Result<Sourced<T>, ConfigError> {
    let local = |text: &String, origin: String, source: Source| {
        parse(text.trim())
            .map(|value| Sourced { value, source })
            .map_err(|reason| ConfigError::Invalid {
                origin,
                value: text.clone(),
                reason,
            })
    };
    if let Some(text) = inputs.flags.get(name) {
        return local(text, format!("the flag for {name}"), Source::Flag);
    }
    let var = env_name(name);
    // An empty variable is unset, as in Calico.
    if let Some(text) = inputs.env.get(&var).filter(|t| !t.trim().is_empty()) {
        return local(text, var, Source::Environment);
    }
    for (layer, source) in [
        (&inputs.installation, Source::Installation),
        (&inputs.node, Source::DatastorePerHost),
        (&inputs.global, Source::DatastoreGlobal),
    ] {
        if let Some(value) = layer.as_ref().and_then(spec) {
            return Ok(Sourced { value, source });
        }
    }
    Ok(Sourced {
        value: default,
        source: Source::Default,
    })
}

fn local_only<T>(_: &FelixConfigurationSpec) -> Option<T> {
    None
}

/// Declares the settings Felix acts on: the struct of effective values,
/// the merge, the display and the comparison all come from this one list.
macro_rules! settings {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty = $name:literal, $default:expr, $spec:expr, $parse:expr, $apply:ident; )*) => {
        /// The effective configuration.
        #[derive(Debug, Clone, PartialEq)]
        pub struct FelixConfig {
            $( $(#[$doc])* pub $field: Sourced<$ty>, )*
        }

        /// Merges `inputs` by priority.
        pub fn merge(inputs: &Inputs) -> Result<FelixConfig, ConfigError> {
            Ok(FelixConfig {
                $( $field: pick($name, $default, $spec, $parse, inputs)?, )*
            })
        }

        impl FelixConfig {
            /// Every setting with its value and source, in declaration order.
            pub fn entries(&self) -> Vec<Entry> {
                vec![ $( Entry {
                    name: $name,
                    value: self.$field.value.render(),
                    source: self.$field.source,
                    apply: Apply::$apply,
                }, )* ]
            }

            /// The settings whose values differ from `old` (sources aside).
            pub fn changes_from(&self, old: &FelixConfig) -> Vec<Change> {
                let mut out = Vec::new();
                $( if self.$field.value != old.$field.value {
                    out.push(Change { name: $name, apply: Apply::$apply });
                } )*
                out
            }
        }

        /// The names of the settings Felix acts on.
        pub const SETTINGS: &[&str] = &[ $( $name, )* ];
    };
}

settings! {
    /// Workload interface name prefixes (Calico: `cali`; Manul's CNI plugin
    /// names interfaces `mnl…`, so `mnl` is the default).
    interface_prefix: Vec<String> = "interfacePrefix",
        vec![manul_model::names::WORKLOAD_INTERFACE_PREFIX.to_string()],
        |s| s.interface_prefix.as_deref().and_then(|p| parse_prefixes(p).ok()),
        parse_prefixes, Restart;
    failsafe_inbound_host_ports: Vec<ProtoPort> = "failsafeInboundHostPorts",
        parse::default_failsafe(true),
        |s| s.failsafe_inbound_host_ports.clone(),
        parse_ports, Restart;
    failsafe_outbound_host_ports: Vec<ProtoPort> = "failsafeOutboundHostPorts",
        parse::default_failsafe(false),
        |s| s.failsafe_outbound_host_ports.clone(),
        parse_ports, Restart;
    default_endpoint_to_host_action: EndpointToHostAction = "defaultEndpointToHostAction",
        EndpointToHostAction::Drop,
        |s| s.default_endpoint_to_host_action,
        parse::endpoint_to_host, Restart;
    log_severity_screen: LogSeverity = "logSeverityScreen",
        LogSeverity::Info,
        |s| s.log_severity_screen,
        parse::severity, Live;
    bpf_enabled: bool = "bpfEnabled",
        false, |s| s.bpf_enabled, parse::boolean, Restart;
    /// eBPF: how external traffic (node ports, external and load-balancer
    /// IPs under `externalTrafficPolicy: Cluster`) reaches a backend.
    /// `Tunnel` (the default): masqueraded to the node's address, replies
    /// return through the node, as with kube-proxy (Calico tunnels
    /// instead); `DSR`: the backend's node answers the client directly and
    /// the backend sees the client's address.
    bpf_external_service_mode: BpfExternalServiceMode = "bpfExternalServiceMode",
        BpfExternalServiceMode::Tunnel, |s| s.bpf_external_service_mode,
        parse::external_service_mode, Restart;
    /// Connect-time load balancing on the eBPF dataplane: `TCP` (TCP
    /// only), `Enabled` (TCP and UDP) or `Disabled`. Calico's values;
    /// Manul's default is `Disabled` (the TC programs already translate
    /// pods' connections; turning it on gives host-networked processes
    /// services and destroys sockets of backends that leave).
    bpf_connect_time_load_balancing: BpfConnectTimeLoadBalancing =
        "bpfConnectTimeLoadBalancing",
        BpfConnectTimeLoadBalancing::Disabled, |s| s.bpf_connect_time_load_balancing,
        parse::connect_time_lb, Restart;
    /// eBPF: host-networked processes reach IPv4 cluster IPs through a
    /// device of the driver's own (`manul-svc`), routed to and translated
    /// at, without connect-time load balancing (`Enabled`, the default, as
    /// Calico's); `Disabled`: the device is removed, and host processes
    /// reach services only with connect-time load balancing.
    bpf_host_networked_nat_without_ctlb: manul_model::v3::OnOff =
        "bpfHostNetworkedNATWithoutCTLB",
        manul_model::v3::OnOff::Enabled, |s| s.bpf_host_networked_nat_without_ctlb,
        parse::on_off, Restart;
    /// eBPF: a packet between two pods of this node, once the destination
    /// pod's own checks (policy, conntrack, reverse translation) allow it,
    /// goes straight into that pod (`bpf_redirect_peer`) instead of
    /// through the host's routing (`Enabled`, the default); `Disabled`:
    /// routed, as before (host tools such as tcpdump on the host-side
    /// veth see such packets only then).
    bpf_redirect_to_peer: manul_model::v3::OnOff =
        "bpfRedirectToPeer",
        manul_model::v3::OnOff::Enabled, |s| s.bpf_redirect_to_peer,
        parse::on_off, Restart;
    /// Local only: Felix programs Services on either dataplane (true, the
    /// default) or leaves them all to kube-proxy (false, while a cluster
    /// migrates from kube-proxy): no Service is programmed, those an
    /// earlier run programmed go at the first resync, and no health-check
    /// node port is served. (Cilium's `kubeProxyReplacement`.)
    kube_proxy_replacement: bool = "kubeProxyReplacement",
        true, local_only, parse::boolean, Restart;
    /// The cgroup (v2) directory connect-time load balancing attaches to;
    /// empty: the root of the node's cgroup v2 hierarchy (mounted at
    /// `/run/manul/cgroup` when the node has none).
    cgroup_v2_path: String = "cgroupV2Path",
        String::new(), |s| s.cgroup_v2_path.clone(), parse::text, Restart;
    prometheus_metrics_enabled: bool = "prometheusMetricsEnabled",
        false, |s| s.prometheus_metrics_enabled, parse::boolean, Restart;
    /// Local only (Calico: all interfaces).
    prometheus_metrics_host: String = "prometheusMetricsHost",
        String::new(), local_only, parse::host, Restart;
    prometheus_metrics_port: u16 = "prometheusMetricsPort",
        9091, |s| s.prometheus_metrics_port, parse::port, Restart;
    health_enabled: bool = "healthEnabled",
        false, |s| s.health_enabled, parse::boolean, Restart;
    /// Local only.
    health_host: String = "healthHost",
        "localhost".to_string(), local_only, parse::host, Restart;
    health_port: u16 = "healthPort",
        9099, |s| s.health_port, parse::port, Restart;
    /// How often the dataplane is checked for out-of-band changes; zero
    /// turns the check off.
    iptables_refresh_interval: Duration = "iptablesRefreshInterval",
        Duration::from_secs(90), |s| s.iptables_refresh_interval.map(|d| d.0),
        parse::duration, Live;
    /// How often programmed routes are written again.
    route_refresh_interval: Duration = "routeRefreshInterval",
        Duration::from_secs(90), |s| s.route_refresh_interval.map(|d| d.0),
        parse::duration, Live;
    flow_logs_file_enabled: bool = "flowLogsFileEnabled",
        false, |s| s.flow_logs_file_enabled, parse::boolean, Restart;
    /// Local only: where `flows.log` is written.
    flow_logs_file_directory: String = "flowLogsFileDirectory",
        "/var/log/calico/flowlogs".to_string(), local_only, parse::path, Restart;
    flow_logs_flush_interval: Duration = "flowLogsFlushInterval",
        Duration::from_secs(300), |s| s.flow_logs_flush_interval.map(|d| d.0),
        parse::duration, Live;
    /// Local only: the CA Typha's certificate must chain to; with the
    /// certificate and key, Felix speaks TLS to Typha (Calico's
    /// `TyphaCAFile`).
    typha_ca_file: String = "typhaCAFile",
        String::new(), local_only, parse::text, Restart;
    /// Local only: Felix's client certificate (Calico's `TyphaCertFile`).
    typha_cert_file: String = "typhaCertFile",
        String::new(), local_only, parse::text, Restart;
    /// Local only: its key (Calico's `TyphaKeyFile`).
    typha_key_file: String = "typhaKeyFile",
        String::new(), local_only, parse::text, Restart;
    /// Local only: the common name Typha's certificate must have (Calico's
    /// `TyphaCN`).
    typha_cn: String = "typhaCN",
        String::new(), local_only, parse::text, Restart;
    /// Local only: a URI SAN Typha's certificate must have (Calico's
    /// `TyphaURISAN`).
    typha_uri_san: String = "typhaURISAN",
        String::new(), local_only, parse::text, Restart;
    /// Local only: how the Sync stream reaches Felix: `grpc` (the `Sync`
    /// call on each Typha address) or `tcp` (the lean transport, framed
    /// protobuf over TCP, on each address's host at `typhaSyncPort`; TLS
    /// with the same files when they are set).
    typha_sync_transport: String = "typhaSyncTransport",
        "grpc".to_string(), local_only, parse::sync_transport, Restart;
    /// Local only: the port of Typha's sync listener (`--sync-listen`)
    /// for `typhaSyncTransport: tcp`.
    typha_sync_port: u16 = "typhaSyncPort",
        5475, local_only, parse::port, Restart;
    /// Encrypt pod traffic to other nodes with WireGuard (see
    /// `crate::wireguard`).
    wireguard_enabled: bool = "wireguardEnabled",
        false, |s| s.wireguard_enabled, parse::boolean, Restart;
    wireguard_listening_port: u16 = "wireguardListeningPort",
        51820, |s| s.wireguard_listening_port, parse::port, Restart;
    /// Calico: `wireguard.cali`. It must not start with a workload prefix
    /// (`interfacePrefix`): a workload interface is policed fail-closed.
    wireguard_interface_name: String = "wireguardInterfaceName",
        "wireguard.mnl".to_string(),
        |s| s.wireguard_interface_name.as_deref().and_then(|n| parse::interface_name(n).ok()),
        parse::interface_name, Restart;
    /// 0: the MTU of the interface holding the node's address, less the
    /// overhead (60 bytes over IPv4).
    wireguard_mtu: u32 = "wireguardMTU",
        0, |s| s.wireguard_mtu.filter(|m| parse::mtu(&m.to_string()).is_ok()),
        parse::mtu, Restart;
    /// Keepalive towards each peer; zero turns it off.
    wireguard_keep_alive: Duration = "wireguardKeepAlive",
        Duration::ZERO, |s| s.wireguard_keep_alive.map(|d| d.0),
        parse::duration, Restart;
    /// Local only: where the node's WireGuard private key is kept (created,
    /// mode 0600, on first use; the same key across restarts).
    wireguard_private_key_file: String = "wireguardPrivateKeyFile",
        "/var/lib/manul/wireguard/private.key".to_string(), local_only, parse::path, Restart;
    /// Local only (Calico has no such field): Maglev consistent hashing
    /// for the external traffic of every Service without Calico's
    /// `lb.projectcalico.org/external-traffic-strategy` annotation (which
    /// decides for its Service); set it alike on every node.
    service_maglev_default: bool = "serviceMaglevDefault",
        false, local_only, parse::boolean, Restart;
    /// eBPF: Maglev tables are sized for at least this many backends (as
    /// in Calico), so a table's size, and with it every flow's slot, stays
    /// the same while a Service has at most that many.
    bpf_maglev_max_endpoints_per_service: u16 = "bpfMaglevMaxEndpointsPerService",
        100,
        |s| s.bpf_maglev_max_endpoints_per_service.filter(|n| (1..=3000).contains(n)),
        parse::maglev_endpoints, Restart;
    /// eBPF: entries of the service frontend maps (`manul_svc_fe`, and
    /// `manul_svc_fe6` alike): one per address, port and protocol a
    /// Service answers on. A sync that would overflow it is refused (what
    /// was programmed stays, Felix is not ready) until the cluster fits.
    bpf_map_size_nat_frontend: u32 = "bpfMapSizeNATFrontend",
        manul_dataplane_bpf::ServiceMapSizes::default().frontend,
        |s| s.bpf_map_size_nat_frontend.filter(|n| parse::map_size(&n.to_string()).is_ok()),
        parse::map_size, Restart;
    /// eBPF: entries of the service backend maps (`manul_svc_be`,
    /// `manul_svc_be6`): one per backend of each frontend's list.
    bpf_map_size_nat_backend: u32 = "bpfMapSizeNATBackend",
        manul_dataplane_bpf::ServiceMapSizes::default().backend,
        |s| s.bpf_map_size_nat_backend.filter(|n| parse::map_size(&n.to_string()).is_ok()),
        parse::map_size, Restart;
    /// eBPF: entries of the session affinity maps (LRU: the oldest client
    /// is forgotten when full).
    bpf_map_size_nat_affinity: u32 = "bpfMapSizeNATAffinity",
        manul_dataplane_bpf::ServiceMapSizes::default().affinity,
        |s| s.bpf_map_size_nat_affinity.filter(|n| parse::map_size(&n.to_string()).is_ok()),
        parse::map_size, Restart;
    /// eBPF: entries of the conntrack map (LRU).
    bpf_map_size_conntrack: u32 = "bpfMapSizeConntrack",
        manul_dataplane_bpf::BpfConfig::DEFAULT_CONNTRACK_CAPACITY,
        |s| s.bpf_map_size_conntrack.filter(|n| parse::map_size(&n.to_string()).is_ok()),
        parse::map_size, Restart;
}

impl FelixConfig {
    /// Whether any of `changes` needs a restart.
    pub fn needs_restart(changes: &[Change]) -> bool {
        changes.iter().any(|c| c.apply == Apply::Restart)
    }

    /// The `tracing` filter directive for `logSeverityScreen`.
    pub fn log_filter(&self) -> &'static str {
        match self.log_severity_screen.value {
            LogSeverity::Trace => "trace",
            LogSeverity::Debug => "debug",
            LogSeverity::Info => "info",
            LogSeverity::Warning => "warn",
            LogSeverity::Error | LogSeverity::Fatal => "error",
        }
    }

    /// The effective configuration as aligned text, one setting a line.
    pub fn table(&self) -> String {
        let entries = self.entries();
        let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        let vwidth = entries.iter().map(|e| e.value.len()).max().unwrap_or(0);
        let mut out = String::new();
        for e in entries {
            let apply = match e.apply {
                Apply::Live => "live",
                Apply::Restart => "restart",
            };
            out.push_str(&format!(
                "{:width$}  {:vwidth$}  {:20}  {apply}\n",
                e.name,
                e.value,
                e.source.as_str()
            ));
        }
        out
    }
}

/// Datastore values Felix cannot use (they fall back to the next layer):
/// `(field, reason)`. The model checks types; the prefix list's syntax is
/// checked here.
pub fn unusable_fields(spec: &FelixConfigurationSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(p) = &spec.interface_prefix
        && let Err(e) = parse_prefixes(p)
    {
        out.push(("interfacePrefix", e));
    }
    if let Some(n) = &spec.wireguard_interface_name
        && let Err(e) = parse::interface_name(n)
    {
        out.push(("wireguardInterfaceName", e));
    }
    if let Some(m) = spec.wireguard_mtu
        && let Err(e) = parse::mtu(&m.to_string())
    {
        out.push(("wireguardMTU", e));
    }
    out
}

/// The FelixConfiguration fields set in `spec` that Felix does not act on
/// (those the model's [`manul_model::not_acted::NOT_ACTED_ON`] table lists,
/// the local-only settings among them), for a warning.
pub fn ignored_fields(spec: &FelixConfigurationSpec) -> Vec<String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(spec) else {
        return Vec::new();
    };
    fields
        .keys()
        .filter(|name| not_acted_on(name))
        .cloned()
        .collect()
}

/// Whether the model lists FelixConfiguration field `name` as accepted but
/// not acted on.
pub fn not_acted_on(name: &str) -> bool {
    manul_model::not_acted::NOT_ACTED_ON.iter().any(|e| {
        e.kind == manul_model::Kind::FelixConfiguration
            && e.field.strip_prefix("spec.") == Some(name)
    })
}

/// What `/config` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub node: String,
    /// Identifies this run of Felix: it changes when Felix restarts.
    pub run_id: String,
    /// The driver this run started (`iptables`, `bpf`, ...).
    pub dataplane: String,
    pub settings: Vec<Entry>,
    /// Fields set in this node's FelixConfigurations that Felix accepts but
    /// does not act on.
    pub not_acted_on: Vec<String>,
    /// `RUST_LOG`, when it overrides `logSeverityScreen`.
    pub log_filter_override: Option<String>,
}

impl View {
    pub fn new(node: &str, run_id: &str, config: &FelixConfig, inputs: &Inputs) -> View {
        let mut not_acted_on: Vec<String> = [&inputs.global, &inputs.node]
            .into_iter()
            .flatten()
            .flat_map(ignored_fields)
            .collect();
        not_acted_on.sort();
        not_acted_on.dedup();
        View {
            node: node.to_string(),
            run_id: run_id.to_string(),
            dataplane: String::new(),
            settings: config.entries(),
            not_acted_on,
            log_filter_override: None,
        }
    }
}
