//! `felix`: Manul's per-node agent.
//!
//! It follows Typha (`--typha`), computes what its node (`--node`) needs
//! and drives a dataplane: `null` records the desired state (tests, scale
//! runs; needs no root), `remote` sends it to an out-of-process driver over
//! a Unix socket (`--driver-socket`), `iptables` programs netfilter through
//! nftables and `bpf` loads eBPF programs at TC (both need root).
//!
//! `--netns NAME` runs the whole agent inside a named network namespace
//! (entered before any thread starts), as a local cluster's nodes do.
//!
//! Configuration: before the dataplane starts, Felix reads the
//! FelixConfigurations `default` and `node.<node>` from Typha and merges
//! them with `FELIX_*` variables and explicit flags (`manul_felix::config`).
//! `--print-config` prints the result with each value's source and exits;
//! `/config` on the `--metrics` listener shows it while Felix runs. A later
//! change that Calico applies live is applied live; any other restarts
//! Felix in place (it executes itself again, same process id): the kernel
//! state of the old run keeps enforcing until the new run is in sync, as
//! after any restart, so no traffic is allowed that policy denies.

/// The agent's allocator: the calculation graph allocates and frees many
/// small objects, which mimalloc serves far faster than the system malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use manul_dataplane_api::Driver;
use manul_felix::agent::{self, AgentOptions, AgentStatus};
use manul_felix::calc::CalcGraph;
use manul_felix::config::{self, FelixConfig, Inputs, View};
use manul_felix::configure::{self, Live};
use manul_felix::http::{Endpoints, HttpState, Limits};
use manul_felix::metrics::FelixMetrics;
use manul_felix::routes::{RouteCalc, RouteProgrammer};
use manul_felix::status::StatusReporter;
use manul_felix::sync::{SyncConfig, SyncTransport, Syncer};
use manul_felix::wireguard::Wireguard;
use manul_felix::wireguard::publish::Publisher;
use manul_model::error::chain;
use manul_model::v3::{BpfExternalServiceMode, EndpointToHostAction};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dataplane {
    /// Record the desired state in memory.
    Null,
    /// Send operations to an out-of-process driver (--driver-socket).
    Remote,
    /// The kernel dataplane FelixConfiguration picks: eBPF when
    /// `bpfEnabled`, iptables otherwise.
    Kernel,
    /// Linux netfilter, programmed through nftables (`nft`); sets
    /// `bpfEnabled: false` as a flag.
    Iptables,
    /// eBPF programs at TC on every workload interface; sets
    /// `bpfEnabled: true` as a flag.
    Bpf,
}

#[derive(Debug, Parser)]
#[command(name = "felix", version, about = "Manul's per-node policy agent")]
struct Args {
    /// Typha replicas, tried in turn: HOST:PORT[,HOST:PORT...].
    #[arg(long, default_value = "127.0.0.1:5473", value_delimiter = ',')]
    typha: Vec<String>,
    /// This node's name (endpoints with this spec.node are local).
    #[arg(long)]
    node: String,
    #[arg(long, value_enum, default_value = "null")]
    dataplane: Dataplane,
    /// Unix socket of an out-of-process driver (with --dataplane remote).
    #[arg(long)]
    driver_socket: Option<PathBuf>,
    /// Local debug listener: /metrics, /healthz, /readyz, /config and /services.
    #[arg(long, default_value = "127.0.0.1:9091")]
    metrics: SocketAddr,
    /// eBPF: pins live under /sys/fs/bpf/manul/NAME (default: the node
    /// name; nodes sharing a machine need different names).
    #[arg(long)]
    bpf_pin_name: Option<String>,
    /// eBPF: append flow logs (JSON lines, aggregated per interval) here;
    /// sets `flowLogsFileEnabled: true` as a flag.
    #[arg(long)]
    flow_log: Option<PathBuf>,
    /// Run inside this named network namespace (as `ip netns` names them).
    #[arg(long)]
    netns: Option<String>,
    /// Write a status file per programmed workload endpoint here, for the
    /// CNI plugin to wait on.
    #[arg(long)]
    status_dir: Option<PathBuf>,
    /// Route other nodes' pod blocks via their node addresses (direct
    /// routing, no encapsulation).
    #[arg(long)]
    program_routes: bool,
    /// How often the dataplane is checked for out-of-band changes, in
    /// seconds; sets `iptablesRefreshInterval` as a flag.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    refresh_interval: Option<u64>,
    /// CA bundle Typha's certificate must chain to; with --typha-cert-file
    /// and --typha-key-file Felix speaks TLS to Typha (`typhaCAFile`, also
    /// FELIX_TYPHACAFILE).
    #[arg(long)]
    typha_ca_file: Option<String>,
    /// Felix's client certificate (`typhaCertFile`, FELIX_TYPHACERTFILE).
    #[arg(long)]
    typha_cert_file: Option<String>,
    /// Its private key (`typhaKeyFile`, FELIX_TYPHAKEYFILE).
    #[arg(long)]
    typha_key_file: Option<String>,
    /// Common name Typha's certificate must have (`typhaCN`,
    /// FELIX_TYPHACN).
    #[arg(long)]
    typha_cn: Option<String>,
    /// URI SAN Typha's certificate must have (`typhaURISAN`,
    /// FELIX_TYPHAURISAN).
    #[arg(long)]
    typha_uri_san: Option<String>,
    /// How the Sync stream is carried: grpc, or tcp (the lean transport on
    /// Typha's --sync-listen) (`typhaSyncTransport`,
    /// FELIX_TYPHASYNCTRANSPORT).
    #[arg(long)]
    typha_sync_transport: Option<String>,
    /// The port of Typha's sync listener for the tcp transport
    /// (`typhaSyncPort`, FELIX_TYPHASYNCPORT; 5475).
    #[arg(long)]
    typha_sync_port: Option<String>,
    /// Serve /metrics, /healthz, /readyz (and the Prometheus and health
    /// listeners) over HTTPS with this certificate (chain), PEM; with
    /// --metrics-tls-key. The files are read again when they change.
    #[arg(long, env = "FELIX_METRICSTLSCERT")]
    metrics_tls_cert: Option<PathBuf>,
    /// The metrics certificate's private key, PEM.
    #[arg(long, env = "FELIX_METRICSTLSKEY")]
    metrics_tls_key: Option<PathBuf>,
    /// Connections each HTTP listener (--metrics, Prometheus, health)
    /// holds at once; past them it waits before accepting.
    #[arg(long, env = "FELIX_METRICSMAXCONNECTIONS", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    metrics_max_connections: u64,
    /// Close an HTTP listener's connection after this many seconds without
    /// a request.
    #[arg(long, env = "FELIX_METRICSIDLETIMEOUTSECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    metrics_idle_timeout_secs: u64,
    /// Close an HTTP listener's connection whose TLS handshake, or a
    /// request's head, takes longer than this many seconds.
    #[arg(long, env = "FELIX_METRICSHANDSHAKETIMEOUTSECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    metrics_handshake_timeout_secs: u64,
    /// Log format: text or json. RUST_LOG, when set, overrides
    /// `logSeverityScreen`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print the effective configuration, with where each value came from,
    /// and exit (reads the FelixConfigurations from Typha).
    #[arg(long)]
    print_config: bool,
    /// Where the health-check node ports of LoadBalancer Services with
    /// `externalTrafficPolicy: Local` listen (kube-proxy's; 0.0.0.0: every
    /// IPv4 address of the node; add `::` for the IPv6 ones).
    #[arg(long, default_value = "0.0.0.0", value_delimiter = ',')]
    service_health_addresses: Vec<std::net::IpAddr>,
    /// Open no health-check node ports (another proxy answers them).
    #[arg(long)]
    no_service_health: bool,
    /// Stream flow records to this flow aggregator (`manul-flows`),
    /// `http://HOST:PORT`, or `https://HOST:PORT` for TLS with Felix's
    /// Typha certificate (--typha-ca-file, --typha-cert-file,
    /// --typha-key-file); without it no records are built.
    #[arg(long, env = "FELIX_FLOWAGGREGATOR")]
    flow_aggregator: Option<String>,
    /// Common name the aggregator's certificate must have (default
    /// manul-flows, unless --flow-aggregator-uri-san is given).
    #[arg(long, env = "FELIX_FLOWAGGREGATORCN")]
    flow_aggregator_cn: Option<String>,
    /// URI SAN the aggregator's certificate must have.
    #[arg(long, env = "FELIX_FLOWAGGREGATORURISAN")]
    flow_aggregator_uri_san: Option<String>,
    /// Flow records aggregate the observations of this many seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    flow_interval: u64,
    /// Flow records kept while the aggregator is unreachable (the oldest
    /// go first).
    #[arg(long, default_value_t = 100_000)]
    flow_buffer_records: usize,
    /// Leave every Service to kube-proxy (`kubeProxyReplacement: false`):
    /// program none, and remove those an earlier run programmed.
    #[arg(long)]
    no_kube_proxy_replacement: bool,
}

/// The log filter's handle: `logSeverityScreen` changes go through it.
type LogHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_tracing(json: bool, level: &str) -> LogHandle {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        // Colours only on a terminal, not in log files.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init();
    }
    handle
}

/// Waits for SIGTERM (the kubelet stopping the pod) or SIGINT. Felix
/// then exits without touching the dataplane: the pinned eBPF state or the
/// `inet manul` table keeps enforcing until the next Felix takes over.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty())
}

/// The settings the command line gives explicitly.
fn flags(args: &Args) -> std::collections::BTreeMap<&'static str, String> {
    let mut out = std::collections::BTreeMap::new();
    match args.dataplane {
        Dataplane::Iptables => {
            out.insert("bpfEnabled", "false".to_string());
        }
        Dataplane::Bpf => {
            out.insert("bpfEnabled", "true".to_string());
        }
        _ => {}
    }
    if let Some(secs) = args.refresh_interval {
        out.insert("iptablesRefreshInterval", secs.to_string());
    }
    if args.flow_log.is_some() {
        out.insert("flowLogsFileEnabled", "true".to_string());
    }
    if args.no_kube_proxy_replacement {
        out.insert("kubeProxyReplacement", "false".to_string());
    }
    for (name, value) in [
        ("typhaCAFile", &args.typha_ca_file),
        ("typhaCertFile", &args.typha_cert_file),
        ("typhaKeyFile", &args.typha_key_file),
        ("typhaCN", &args.typha_cn),
        ("typhaURISAN", &args.typha_uri_san),
        ("typhaSyncTransport", &args.typha_sync_transport),
        ("typhaSyncPort", &args.typha_sync_port),
    ] {
        if let Some(v) = value {
            out.insert(name, v.clone());
        }
    }
    out
}

/// Connect-time load balancing from `bpfConnectTimeLoadBalancing` and
/// `cgroupV2Path`.
fn connect_time_lb(config: &FelixConfig) -> Option<manul_dataplane_bpf::CtlbConfig> {
    use manul_model::v3::BpfConnectTimeLoadBalancing as Ctlb;
    let udp = match config.bpf_connect_time_load_balancing.value {
        Ctlb::Disabled => return None,
        Ctlb::Tcp => false,
        Ctlb::Enabled => true,
    };
    let path = config.cgroup_v2_path.value.trim();
    Some(manul_dataplane_bpf::CtlbConfig {
        udp,
        cgroup: (!path.is_empty()).then(|| PathBuf::from(path)),
    })
}

/// How often the driver reports live connections' counters and ended
/// connections when flow records are on (`--flow-aggregator`): once per
/// record interval, so every interval of a long connection has its
/// counters. `None` when records are off.
fn flow_update_interval(args: &Args) -> Option<std::time::Duration> {
    args.flow_aggregator
        .as_ref()
        .map(|_| std::time::Duration::from_secs(args.flow_interval))
}

fn nft_config(args: &Args, config: &FelixConfig) -> manul_dataplane_iptables::NftConfig {
    use manul_dataplane_iptables::{EndpointToHost, Failsafe};
    let ports = |list: &[manul_model::v3::ProtoPort]| {
        list.iter()
            .filter_map(|p| {
                let protocol = match p.protocol.number() {
                    6 => "tcp",
                    17 => "udp",
                    132 => "sctp",
                    _ => return None,
                };
                Some(Failsafe {
                    protocol,
                    port: p.port,
                    net: p.net.as_ref().map(|n| n.net()),
                })
            })
            .collect()
    };
    manul_dataplane_iptables::NftConfig {
        workload_prefixes: config.interface_prefix.value.clone(),
        failsafe_inbound: ports(&config.failsafe_inbound_host_ports.value),
        failsafe_outbound: ports(&config.failsafe_outbound_host_ports.value),
        endpoint_to_host: match config.default_endpoint_to_host_action.value {
            EndpointToHostAction::Drop => EndpointToHost::Drop,
            EndpointToHostAction::Return => EndpointToHost::Return,
            EndpointToHostAction::Accept => EndpointToHost::Accept,
        },
        // On for the flow-log file or for flow records; records set how
        // often counters are read.
        flows: match flow_update_interval(args) {
            Some(every) => {
                let mut log = manul_dataplane_iptables::FlowLog::default();
                log.update_interval = log.update_interval.min(every);
                Some(log)
            }
            None => config
                .flow_logs_file_enabled
                .value
                .then(manul_dataplane_iptables::FlowLog::default),
        },
    }
}

/// The failsafe ports for the eBPF driver. It cannot restrict one to a
/// network: such a port is left out (so it is policed, never opened wider).
fn bpf_failsafe(config: &FelixConfig) -> Vec<(bool, u8, u16)> {
    let mut out = Vec::new();
    for (outbound, ports) in [
        (false, &config.failsafe_inbound_host_ports.value),
        (true, &config.failsafe_outbound_host_ports.value),
    ] {
        for p in ports {
            if let Some(net) = &p.net {
                tracing::warn!(
                    port = p.port,
                    net = %net.0,
                    "the eBPF dataplane cannot limit a failsafe port to a network; it is not failsafe there"
                );
                continue;
            }
            out.push((outbound, p.protocol.number(), p.port));
        }
    }
    out
}

/// The driver, and the eBPF flow-log interval's handle when it is eBPF.
type Built = (
    Box<dyn Driver>,
    Option<manul_dataplane_bpf::FlowLogInterval>,
);

/// With `--dataplane bpf`, loads the eBPF programs on a blocking thread
/// while Felix reads its configuration from Typha, so that loading (the
/// pinned programs adopted, or both through the verifier on a fresh node
/// or after an upgrade) overlaps it. Loading adopts the node's pinned maps
/// and attaches nothing, so the earlier run's programs keep enforcing
/// until the dataplane is in sync, as before.
fn preload_bpf(
    args: &Args,
    local: &FelixConfig,
) -> Option<tokio::task::JoinHandle<Result<manul_dataplane_bpf::LoadedPrograms, String>>> {
    if args.dataplane != Dataplane::Bpf {
        return None;
    }
    let mut config = manul_dataplane_bpf::BpfConfig::new(bpf_pin_name(args));
    // Maps pinned already keep their size until the datastore's are known.
    set_map_sizes(&mut config, local);
    Some(tokio::task::spawn_blocking(move || {
        manul_dataplane_bpf::BpfDriver::preload(&config).map_err(|e| chain(&e))
    }))
}

/// The map sizes of `config` (`bpfMapSize*`); a change needs a restart,
/// which creates the pinned maps anew at the new sizes.
fn set_map_sizes(bpf: &mut manul_dataplane_bpf::BpfConfig, config: &FelixConfig) {
    bpf.conntrack_capacity = config.bpf_map_size_conntrack.value;
    bpf.service_map_sizes = manul_dataplane_bpf::ServiceMapSizes {
        frontend: config.bpf_map_size_nat_frontend.value,
        backend: config.bpf_map_size_nat_backend.value,
        affinity: config.bpf_map_size_nat_affinity.value,
    };
}

fn bpf_pin_name(args: &Args) -> String {
    args.bpf_pin_name
        .clone()
        .unwrap_or_else(|| args.node.clone())
}

fn driver(
    args: &Args,
    config: &FelixConfig,
    preloaded: Option<manul_dataplane_bpf::LoadedPrograms>,
) -> Result<Built, String> {
    let kernel_bpf = config.bpf_enabled.value;
    match args.dataplane {
        Dataplane::Null => Ok((
            Box::new(manul_dataplane_api::null::NullDriver::default()),
            None,
        )),
        Dataplane::Remote => {
            let path = args
                .driver_socket
                .as_ref()
                .ok_or("--dataplane remote needs --driver-socket PATH")?;
            manul_dataplane_api::remote::RemoteDriver::connect(path)
                .map(|d| (Box::new(d) as Box<dyn Driver>, None))
                .map_err(|e| format!("cannot reach the driver at {}: {e}", path.display()))
        }
        Dataplane::Iptables | Dataplane::Bpf | Dataplane::Kernel if !kernel_bpf => {
            manul_dataplane_iptables::NftDriver::with_config(
                manul_dataplane_iptables::Nft::default(),
                nft_config(args, config),
            )
            .map(|d| (Box::new(d) as Box<dyn Driver>, None))
            .map_err(|e| format!("cannot start the iptables dataplane: {}", chain(&e)))
        }
        Dataplane::Iptables | Dataplane::Bpf | Dataplane::Kernel => {
            let mut bpf = manul_dataplane_bpf::BpfConfig::new(bpf_pin_name(args));
            bpf.workload_prefixes = config.interface_prefix.value.clone();
            bpf.flow_log = match &args.flow_log {
                Some(path) => Some(path.clone()),
                None if config.flow_logs_file_enabled.value => {
                    let dir = PathBuf::from(&config.flow_logs_file_directory.value);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("flowLogsFileDirectory {}: {e}", dir.display()))?;
                    Some(dir.join("flows.log"))
                }
                None => None,
            };
            bpf.flow_log_interval = config.flow_logs_flush_interval.value;
            bpf.flow_update_interval = flow_update_interval(args);
            // Observations only for flow records: nothing else reads them.
            bpf.flow_observations = args.flow_aggregator.is_some();
            bpf.endpoint_to_host_drop =
                config.default_endpoint_to_host_action.value == EndpointToHostAction::Drop;
            bpf.failsafe = bpf_failsafe(config);
            bpf.maglev_capacity = usize::from(config.bpf_maglev_max_endpoints_per_service.value);
            set_map_sizes(&mut bpf, config);
            bpf.external_service_mode = match config.bpf_external_service_mode.value {
                BpfExternalServiceMode::Tunnel => manul_dataplane_bpf::ExternalServiceMode::Snat,
                BpfExternalServiceMode::Dsr => manul_dataplane_bpf::ExternalServiceMode::Dsr,
            };
            bpf.connect_time_lb = connect_time_lb(config);
            bpf.host_service_nat =
                config.bpf_host_networked_nat_without_ctlb.value == manul_model::v3::OnOff::Enabled;
            bpf.peer_delivery =
                config.bpf_redirect_to_peer.value == manul_model::v3::OnOff::Enabled;
            match preloaded {
                Some(loaded) => manul_dataplane_bpf::BpfDriver::start(bpf, loaded),
                None => manul_dataplane_bpf::BpfDriver::new(bpf),
            }
            .map(|d| {
                let handle = d.flow_log_interval();
                (Box::new(d) as Box<dyn Driver>, Some(handle))
            })
            .map_err(|e| format!("cannot start the eBPF dataplane: {}", chain(&e)))
        }
    }
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let args = Args::parse();
    // Until the configuration is read: RUST_LOG, or FELIX_LOGSEVERITYSCREEN.
    let early = config::merge(&Inputs::default().with_env(std::env::vars()))
        .map(|c| c.log_filter())
        .unwrap_or("info");
    let log = init_tracing(args.log_format == "json", early);
    if let Some(name) = &args.netns {
        // Before the runtime starts: every thread inherits the namespace.
        if let Err(e) = manul_netns::NetNs::open(name).and_then(|ns| ns.enter_current_thread()) {
            eprintln!("error: --netns {name}: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args, log, started)) {
        Outcome::Exit(code) => code,
        Outcome::Restart(changed) => {
            tracing::warn!(
                ?changed,
                "configuration changed: restarting Felix; the dataplane keeps enforcing meanwhile"
            );
            // Stop the runtime's threads before replacing the process.
            runtime.shutdown_timeout(Duration::from_secs(1));
            restart()
        }
    }
}

/// Executes this binary again with the same arguments and environment.
fn restart() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the felix binary to restart: {e}");
            return ExitCode::from(RESTART_FAILED);
        }
    };
    let e = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("error: cannot restart {}: {e}", exe.display());
    ExitCode::from(RESTART_FAILED)
}

/// Exit status when a restart the configuration needs could not be done
/// in place: a supervisor should start Felix again.
const RESTART_FAILED: u8 = 129;

enum Outcome {
    Exit(ExitCode),
    Restart(Vec<&'static str>),
}

/// Once the new dataplane is in sync, removes what the other kernel
/// dataplane left from an earlier run (after `bpfEnabled` changed): the
/// `inet manul` table under eBPF, this node's pins under iptables. Until
/// then both enforce, which only ever drops more.
async fn retire_other_dataplane(
    running: &'static str,
    pin_name: String,
    mut status: watch::Receiver<AgentStatus>,
) {
    if status.wait_for(|s| s.in_sync).await.is_err() {
        return;
    }
    let result = tokio::task::spawn_blocking(move || -> Result<bool, String> {
        match running {
            "bpf" => {
                let nft = manul_dataplane_iptables::Nft::default();
                if !nft.table_exists().map_err(|e| e.to_string())? {
                    return Ok(false);
                }
                manul_dataplane_iptables::NftDriver::new(nft)
                    .and_then(|mut d| d.remove_all())
                    .map(|()| true)
                    .map_err(|e| chain(&e))
            }
            "iptables" => {
                let root = manul_dataplane_bpf::BpfConfig::new(pin_name.clone()).pin_root;
                if !root.join(&pin_name).exists() {
                    return Ok(false);
                }
                manul_dataplane_bpf::BpfDriver::purge_node(&root, &pin_name)
                    .map(|()| true)
                    .map_err(|e| e.to_string())
            }
            _ => Ok(false),
        }
    })
    .await;
    match result {
        Ok(Ok(true)) => tracing::info!(
            running,
            "removed what the other kernel dataplane left from an earlier run"
        ),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!("cannot remove the other kernel dataplane's state: {e}"),
        Err(e) => tracing::error!("cannot remove the other kernel dataplane's state: {e}"),
    }
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn listen_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))
}

async fn run(args: Args, log: LogHandle, started: std::time::Instant) -> Outcome {
    let fail = |code: u8, msg: String| {
        eprintln!("error: {msg}");
        Outcome::Exit(ExitCode::from(code))
    };
    if args.node.is_empty() {
        return fail(2, "--node must not be empty".into());
    }
    let https = manul_tls::https::HttpsSettings::from_pair(
        args.metrics_tls_cert.clone(),
        args.metrics_tls_key.clone(),
        ("--metrics-tls-cert", "--metrics-tls-key"),
    )
    .and_then(|s| s.map(|s| s.config()).transpose());
    let https = match https {
        Ok(h) => h,
        Err(e) => return fail(2, format!("metrics TLS: {e}")),
    };
    let mut inputs = Inputs::default().with_env(std::env::vars());
    inputs.flags = flags(&args);
    // A malformed variable or flag is an error before anything is read.
    let local = match config::merge(&inputs) {
        Ok(c) => c,
        Err(e) => return fail(2, e.to_string()),
    };
    // Typha's TLS settings are local only: known before Typha is reached.
    let transport = match manul_felix::typha_tls::transport(&local) {
        Ok(t) => t,
        Err(e) => return fail(2, chain(&e)),
    };
    if !transport.is_tls() {
        tracing::warn!("no TyphaCAFile/TyphaCertFile/TyphaKeyFile: talking to Typha in plaintext");
    }
    let deadline = args.print_config.then_some(Duration::from_secs(10));
    let preload = if args.print_config {
        None
    } else {
        preload_bpf(&args, &local)
    };
    if let Err(e) =
        configure::load(&args.typha, &args.node, &transport, &mut inputs, deadline).await
    {
        return fail(1, format!("cannot read FelixConfiguration from Typha: {e}"));
    }
    tracing::info!(
        since_start_ms = started.elapsed().as_millis() as u64,
        "configuration read from Typha"
    );
    let config = match config::merge(&inputs) {
        Ok(c) => c,
        Err(e) => return fail(2, e.to_string()),
    };
    if args.print_config {
        print!("{}", config.table());
        for name in [&inputs.global, &inputs.node]
            .into_iter()
            .flatten()
            .flat_map(config::ignored_fields)
        {
            println!("# {name}: accepted, not acted on");
        }
        return Outcome::Exit(ExitCode::SUCCESS);
    }
    configure::warn_ignored(&inputs);
    let override_log = rust_log();
    let set_log: Option<configure::SetLogFilter> = match &override_log {
        Some(_) => None,
        None => Some(Box::new(move |level: &str| {
            if let Err(e) = log.reload(EnvFilter::new(level)) {
                tracing::error!("cannot change the log level: {e}");
            }
        })),
    };
    if let Some(set) = &set_log {
        set(config.log_filter());
    }
    if config.bpf_enabled.value && matches!(args.dataplane, Dataplane::Null | Dataplane::Remote) {
        tracing::warn!("bpfEnabled is set but --dataplane is not kernel, iptables or bpf");
    }
    let preloaded = match preload {
        Some(handle) => match handle.await {
            Ok(Ok(loaded)) => Some(loaded),
            // Loading again reports the error where the driver starts.
            Ok(Err(e)) => {
                tracing::warn!("loading the eBPF programs early failed: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("loading the eBPF programs early failed: {e}");
                None
            }
        },
        None => None,
    };
    let (driver, flow_log_interval) = match driver(&args, &config, preloaded) {
        Ok(d) => d,
        Err(e) => return fail(2, e),
    };
    tracing::info!(
        driver = driver.name(),
        since_start_ms = started.elapsed().as_millis() as u64,
        "dataplane started"
    );
    let driver: Box<dyn Driver> = if args.no_service_health {
        driver
    } else {
        let health = manul_felix::service_health::ServiceHealth::new(
            args.service_health_addresses.clone(),
            tokio::runtime::Handle::current(),
        );
        Box::new(manul_felix::service_health::HealthCheckedDriver::new(
            driver, health,
        ))
    };
    let services = manul_felix::programmed_services::ProgrammedServices::new();
    let driver: Box<dyn Driver> = Box::new(
        manul_felix::programmed_services::ServiceRecordingDriver::new(driver, services.clone()),
    );
    let mut registry = Registry::default();
    let metrics = FelixMetrics::register(&mut registry);
    services.register_metrics(&mut registry);
    let listener_metrics =
        manul_listen::ListenerMetrics::register(&mut registry, manul_felix::http::METRICS_PREFIX);
    let http_limits = manul_listen::HttpLimits {
        max_connections: usize::try_from(args.metrics_max_connections).unwrap_or(usize::MAX),
        idle: Duration::from_secs(args.metrics_idle_timeout_secs),
        handshake: Duration::from_secs(args.metrics_handshake_timeout_secs),
        streaming: false,
    };
    let limits = |name| Limits {
        name,
        http: http_limits,
        metrics: listener_metrics.clone(),
    };
    let registry = Arc::new(registry);
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    let mut view = View::new(&args.node, &run_id(), &config, &inputs);
    view.log_filter_override = override_log;
    view.dataplane = driver.name().to_string();
    let (view_tx, view_rx) = watch::channel(view);
    let state = HttpState {
        registry: registry.clone(),
        status: status_rx,
        config: Some(view_rx),
        services: Some(services.clone()),
    };
    match manul_felix::http::serve_limited(
        args.metrics,
        Endpoints::ALL,
        state.clone(),
        https.clone(),
        limits("metrics"),
    )
    .await
    {
        Ok(addr) => tracing::info!(%addr, "serving metrics, health, /config and /services"),
        Err(e) => return fail(1, format!("cannot listen on {}: {e}", args.metrics)),
    }
    // Calico's listeners, from the configuration. A failure to listen is
    // reported and does not stop policy.
    let listeners = [
        (
            config.prometheus_metrics_enabled.value,
            &config.prometheus_metrics_host.value,
            config.prometheus_metrics_port.value,
            Endpoints {
                metrics: true,
                health: false,
                config: false,
            },
            "Prometheus metrics",
            "prometheus",
        ),
        (
            config.health_enabled.value,
            &config.health_host.value,
            config.health_port.value,
            Endpoints {
                metrics: false,
                health: true,
                config: false,
            },
            "health checks",
            "health",
        ),
    ];
    for (enabled, host, port, endpoints, what, name) in listeners {
        if !enabled {
            continue;
        }
        let served = match listen_addr(host, port) {
            Ok(addr) => manul_felix::http::serve_limited(
                addr,
                endpoints,
                state.clone(),
                https.clone(),
                limits(name),
            )
            .await
            .map_err(|e| format!("{addr}: {e}")),
            Err(e) => Err(e),
        };
        match served {
            Ok(addr) => tracing::info!(%addr, "serving {what}"),
            Err(e) => tracing::error!("cannot serve {what}: {e}"),
        }
    }
    if matches!(
        args.dataplane,
        Dataplane::Iptables | Dataplane::Bpf | Dataplane::Kernel
    ) {
        let pin_name = args
            .bpf_pin_name
            .clone()
            .unwrap_or_else(|| args.node.clone());
        tokio::spawn(retire_other_dataplane(
            driver.name(),
            pin_name,
            state.status.clone(),
        ));
    }
    let (tx, rx) = mpsc::channel(1024);
    let (config_tx, config_rx) = mpsc::unbounded_channel();
    let syncer = Syncer::new(SyncConfig {
        typhas: args.typha.clone(),
        node: args.node.clone(),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        transport: match SyncTransport::parse(
            &config.typha_sync_transport.value,
            config.typha_sync_port.value,
        ) {
            Ok(t) => t,
            Err(e) => return fail(2, e),
        },
    })
    .with_config_updates(config_tx)
    .with_transport(transport.clone());
    tokio::spawn(syncer.run(tx));
    let (intervals_tx, intervals_rx) = watch::channel(configure::intervals(&config));
    let mut graph = match config.kube_proxy_replacement.value {
        true => CalcGraph::new(args.node.clone()),
        false => {
            tracing::info!("kubeProxyReplacement is false: Services are left to kube-proxy");
            CalcGraph::new(args.node.clone()).without_services()
        }
    };
    if config.service_maglev_default.value {
        graph.set_default_balancing(manul_dataplane_api::Balancing::Maglev);
    }
    let mut options = AgentOptions {
        refresh_interval: config.iptables_refresh_interval.value,
        intervals: Some(intervals_rx),
        services: Some(services.clone()),
        ..AgentOptions::default()
    };
    let publish = Arc::new(tokio::sync::Notify::new());
    let publisher = |key: Option<String>| Publisher {
        typhas: args.typha.clone(),
        transport: transport.clone(),
        node: args.node.clone(),
        key,
    };
    if config.wireguard_enabled.value {
        let wg = match Wireguard::new(&config, publish.clone()) {
            Ok(wg) => wg,
            Err(e) => return fail(2, e.to_string()),
        };
        let calc = RouteCalc::new(args.node.clone()).with_tunnel(wg.tunnel(), args.program_routes);
        match RouteProgrammer::current() {
            Ok(p) => options.routes = Some((calc, p)),
            Err(e) => return fail(1, format!("wireguardEnabled: {e}")),
        }
        tokio::spawn(publisher(Some(wg.public_key())).run(publish.clone()));
        options.wireguard = Some(wg);
    } else {
        if args.program_routes {
            match RouteProgrammer::current() {
                Ok(p) => options.routes = Some((RouteCalc::new(args.node.clone()), p)),
                Err(e) => return fail(1, format!("--program-routes: {e}")),
            }
        }
        if matches!(
            args.dataplane,
            Dataplane::Iptables | Dataplane::Bpf | Dataplane::Kernel
        ) {
            // WireGuard off: a key an earlier run published is taken back,
            // so other nodes stop routing here through a tunnel.
            tokio::spawn(publisher(None).run(publish.clone()));
        }
    }
    if let Some(endpoint) = &args.flow_aggregator {
        let flow_transport = manul_felix::flows::export::transport(
            endpoint,
            [
                &local.typha_ca_file.value,
                &local.typha_cert_file.value,
                &local.typha_key_file.value,
            ],
            args.flow_aggregator_cn.as_deref(),
            args.flow_aggregator_uri_san.as_deref(),
        );
        let flow_transport = match flow_transport {
            Ok(t) => t,
            Err(e) => return fail(2, chain(&e)),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (sink, records) = mpsc::channel(64);
        let (export_tx, _) = watch::channel(manul_felix::flows::export::ExportStatus::default());
        tokio::spawn(manul_felix::flows::export::run(
            manul_felix::flows::export::ExportConfig {
                endpoint: endpoint.clone(),
                transport: flow_transport,
                node: args.node.clone(),
                epoch: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
                capacity: args.flow_buffer_records,
            },
            records,
            export_tx,
        ));
        options.flows = Some(agent::FlowOptions {
            pipeline: manul_felix::flows::FlowPipeline::new(
                &args.node,
                args.flow_interval,
                now.as_secs(),
            ),
            sink,
        });
        tracing::info!(aggregator = %endpoint, interval_s = args.flow_interval, "flow records on");
    }
    if let Some(dir) = &args.status_dir {
        match StatusReporter::new(dir) {
            Ok(r) => options.status = Some(r),
            Err(e) => return fail(2, format!("--status-dir {}: {e}", dir.display())),
        }
    }
    let live = Live {
        log: set_log,
        intervals: intervals_tx,
        flow_log_interval,
    };
    let follow = configure::follow(args.node.clone(), inputs, config, config_rx, live, view_tx);
    tokio::select! {
        _ = agent::run(graph, driver, rx, metrics, status_tx, options) => {}
        changed = follow => {
            if !changed.is_empty() {
                return Outcome::Restart(changed);
            }
        }
        signal = stop_signal() => tracing::info!(signal, "shutting down; the kernel state keeps enforcing"),
    }
    Outcome::Exit(ExitCode::SUCCESS)
}
