//! [`BpfConfig`]: how to run the eBPF dataplane on one node.

use std::path::PathBuf;
use std::time::Duration;

use crate::conntrack::ConntrackTimeouts;
use crate::error::BpfError;

/// The eBPF driver's default flow queue: twice the API's default, since
/// Felix takes it once a second and in that second a node with 10,000
/// new connections a second (both ends local) makes 20,000 starts, and a
/// conntrack scan one update or end for every connection it follows
/// (over 65,536 in all, measured by `flows-cpu-bench`).
pub const FLOW_QUEUE_CAPACITY: usize = 2 * manul_dataplane_api::FlowQueue::DEFAULT_CAPACITY;

/// How to run the eBPF dataplane on one node.
#[derive(Debug, Clone)]
pub struct BpfConfig {
    /// The node's name: its pins live under `pin_root/node`.
    pub node: String,
    /// Default `/sys/fs/bpf/manul` (bpffs is mounted there if absent).
    pub pin_root: PathBuf,
    /// Conntrack entries (LRU; Felix's `bpfMapSizeConntrack`). A pinned
    /// map of another size is created again at this size when the driver
    /// loads, its entries copied over (see [`crate::resize`]).
    pub conntrack_capacity: u32,
    /// Entries of `manul_addr` (every prefix and IP-set member the tables'
    /// address spaces hold); `None`: the program's size (1 Mi). A pinned
    /// map of another size is created again, as for conntrack. A batch that
    /// would overflow it is refused (the map is full) and the driver fails
    /// closed.
    pub addr_capacity: Option<u32>,
    /// The service maps' sizes (Felix's `bpfMapSizeNATFrontend`,
    /// `bpfMapSizeNATBackend`, `bpfMapSizeNATAffinity`). A pinned map of
    /// another size is created again, as for conntrack; a sync that would
    /// overflow one is refused and the driver fails closed.
    pub service_map_sizes: ServiceMapSizes,
    pub conntrack_timeouts: ConntrackTimeouts,
    /// How often the background thread collects expired conntrack entries.
    pub gc_interval: Duration,
    /// How often flow observations' `Update`s and `End`s are made (Felix's
    /// flow-record interval): the conntrack scan, which makes them and
    /// collects expired entries, then runs at the shorter of this and
    /// `gc_interval`. `None`: every `gc_interval`.
    pub flow_update_interval: Option<Duration>,
    /// Make flow observations (`Driver::take_flows`): follow allowed
    /// connections and report their starts, updates, ends and denials.
    /// Off, nothing is queued for a reader that never comes; the kernel
    /// programs are the same either way.
    pub flow_observations: bool,
    /// Where to append flow-log JSON lines, if anywhere.
    pub flow_log: Option<PathBuf>,
    pub flow_log_interval: Duration,
    /// Flow observations kept until Felix takes them
    /// (`Driver::take_flows`); beyond it they are dropped and counted.
    /// Default [`FLOW_QUEUE_CAPACITY`].
    pub flow_queue_capacity: usize,
    /// Interfaces whose names start with one of these prefixes are workload
    /// interfaces (Felix's `interfacePrefix`): the driver attaches to them
    /// as soon as it sees them, and drops their traffic until their
    /// endpoint is programmed. Default `manul_model::names::
    /// WORKLOAD_INTERFACE_PREFIX`; empty: attach to endpoints only.
    pub workload_prefixes: Vec<String>,
    /// Drop a workload's traffic to its own host once the workload's policy
    /// allowed it (Felix's `defaultEndpointToHostAction: Drop`); otherwise
    /// it goes on to the host. Applies to new flows.
    pub endpoint_to_host_drop: bool,
    /// Ports a host endpoint always allows new flows to, whatever its
    /// policy: `(outbound, protocol number, port)` (Felix's failsafe
    /// ports; inbound ones only for traffic to the host itself). Default
    /// none.
    pub failsafe: Vec<(bool, u8, u16)>,
    /// Maglev tables are sized for at least this many backends (Felix's
    /// `bpfMaglevMaxEndpointsPerService`), so a table's size, and with it
    /// every flow's slot, stays the same while its Service has at most
    /// that many; 0: each table sized for its own backends (a change
    /// across a size step moves every flow).
    pub maglev_capacity: usize,
    /// Benchmarks only: never create conntrack entries, so every packet is
    /// classified as a new flow.
    pub benchmark_no_conntrack: bool,
    /// Connect-time load balancing (Felix's `bpfConnectTimeLoadBalancing`
    /// `TCP` or `Enabled`); `None` (`Disabled`, the default): off, and an
    /// earlier run's cgroup links are removed.
    pub connect_time_lb: Option<crate::ctlb::CtlbConfig>,
    /// How external traffic (node ports, external and load-balancer IPs
    /// under `externalTrafficPolicy: Cluster`) reaches a backend on
    /// another node (Felix's `bpfExternalServiceMode`). Default
    /// [`ExternalServiceMode::Snat`].
    pub external_service_mode: ExternalServiceMode,
    /// Host-networked processes reach cluster, external and load-balancer
    /// IPs of both families through the host's service device, which the
    /// driver creates, routes every such address to and translates at (Felix's `bpfHostNetworkedNATWithoutCTLB`,
    /// `Enabled` by default; see `driver/host_svc.rs`). Off: an earlier
    /// run's device is removed, and host processes reach services only
    /// with connect-time load balancing.
    pub host_service_nat: bool,
    /// A packet between two workloads of this node, once the source's
    /// ingress program allowed it, is judged by the destination's egress
    /// logic in the same run and delivered straight into the destination
    /// pod (`bpf_redirect_peer`), skipping the host's routing, its
    /// netfilter hooks and a second program run (Cilium's BPF host
    /// routing; see `bpf/manul_peer.h`). Only a packet whose source is
    /// routed back out of the interface it came in by (never a spoofed
    /// source), whose destination the FIB routes to another workload's
    /// interface with a resolved neighbour, and whose TTL allows
    /// forwarding takes it; anything else is routed. Default on; off is
    /// Cilium's `bpf.hostLegacyRouting`: every such packet routed by the
    /// host.
    pub peer_delivery: bool,
}

/// The service maps' sizes; each applies to the map of both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceMapSizes {
    /// `manul_svc_fe`, `manul_svc_fe6`: one entry per (address, port,
    /// protocol) a Service answers on (ClusterIP, each node port address,
    /// external and load-balancer IPs). Calico's `bpfMapSizeNATFrontend`.
    pub frontend: u32,
    /// `manul_svc_be`, `manul_svc_be6`: one entry per backend of each
    /// frontend's list. Calico's `bpfMapSizeNATBackend`.
    pub backend: u32,
    /// `manul_svc_aff`, `manul_svc_aff6` (and the connect-time load
    /// balancer's `manul_ctlb_aff`, `manul_ctlb_aff6`): one entry per
    /// (client, frontend) under session affinity, made by the programs
    /// (LRU: the oldest client is forgotten when full). Calico's
    /// `bpfMapSizeNATAffinity`.
    pub affinity: u32,
}

impl Default for ServiceMapSizes {
    /// The sizes the object declares (`manul_svc_maps.h`, `manul_tc.c`).
    fn default() -> Self {
        Self {
            frontend: 65536,
            backend: 1 << 20,
            affinity: 65536,
        }
    }
}

/// The largest size any sized map accepts: beyond it the kernel would be
/// asked for gigabytes of map memory, a typo rather than a cluster.
pub const MAX_MAP_SIZE: u32 = 1 << 26;

/// The sizes a configuration gives its maps, checked: each must be 1 to
/// [`MAX_MAP_SIZE`] entries.
pub fn check_map_size(setting: &'static str, value: u32) -> Result<u32, BpfError> {
    if value == 0 || value > MAX_MAP_SIZE {
        return Err(BpfError::MapSize {
            setting,
            value,
            max: MAX_MAP_SIZE,
        });
    }
    Ok(value)
}

/// How external traffic under `externalTrafficPolicy: Cluster` reaches its
/// backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExternalServiceMode {
    /// Masqueraded to the node's address toward the backend (local or
    /// on another node), so replies return through this node: the backend
    /// sees the node's address, as with kube-proxy (`Tunnel` in Felix's
    /// setting).
    #[default]
    Snat,
    /// Direct server return: a backend on another node gets the client's
    /// own address and the frontend in an IPv4 option or an IPv6
    /// Destination Options header, and its node answers the client
    /// directly; a local backend sees the client too (`DSR`).
    Dsr,
}

impl BpfConfig {
    /// The conntrack map's default size.
    pub const DEFAULT_CONNTRACK_CAPACITY: u32 = 512 * 1024;

    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            pin_root: PathBuf::from("/sys/fs/bpf/manul"),
            conntrack_capacity: Self::DEFAULT_CONNTRACK_CAPACITY,
            addr_capacity: None,
            service_map_sizes: ServiceMapSizes::default(),
            conntrack_timeouts: ConntrackTimeouts::default(),
            gc_interval: Duration::from_secs(10),
            flow_update_interval: None,
            flow_observations: true,
            flow_log: None,
            flow_log_interval: Duration::from_secs(10),
            flow_queue_capacity: FLOW_QUEUE_CAPACITY,
            workload_prefixes: vec!["mnl".to_owned()],
            endpoint_to_host_drop: false,
            failsafe: Vec::new(),
            maglev_capacity: 0,
            benchmark_no_conntrack: false,
            external_service_mode: ExternalServiceMode::Snat,
            connect_time_lb: None,
            host_service_nat: true,
            peer_delivery: true,
        }
    }
}

impl BpfConfig {
    /// Checks the map sizes (each 1 to [`MAX_MAP_SIZE`]).
    pub fn validate(&self) -> Result<(), BpfError> {
        self.map_sizes().map(|_| ())
    }

    /// Every map whose size the configuration sets, with that size (the
    /// TC object's maps), checked.
    pub fn map_sizes(&self) -> Result<Vec<(&'static str, u32)>, BpfError> {
        let s = self.service_map_sizes;
        let ct = check_map_size(
            "conntrack_capacity (bpfMapSizeConntrack)",
            self.conntrack_capacity,
        )?;
        let fe = check_map_size(
            "service_map_sizes.frontend (bpfMapSizeNATFrontend)",
            s.frontend,
        )?;
        let be = check_map_size(
            "service_map_sizes.backend (bpfMapSizeNATBackend)",
            s.backend,
        )?;
        let aff = check_map_size(
            "service_map_sizes.affinity (bpfMapSizeNATAffinity)",
            s.affinity,
        )?;
        let mut out = vec![
            ("manul_ct", ct),
            ("manul_svc_fe", fe),
            ("manul_svc_fe6", fe),
            ("manul_svc_be", be),
            ("manul_svc_be6", be),
            ("manul_svc_aff", aff),
            ("manul_svc_aff6", aff),
        ];
        if let Some(n) = self.addr_capacity {
            out.push(("manul_addr", check_map_size("addr_capacity", n)?));
        }
        Ok(out)
    }

    /// How often the conntrack scan runs: `gc_interval`, or the flow
    /// update interval when that is shorter (never below 100 ms).
    pub fn scan_interval(&self) -> Duration {
        let wanted = match self.flow_update_interval {
            Some(f) => f.min(self.gc_interval),
            None => self.gc_interval,
        };
        wanted.max(Duration::from_millis(100).min(self.gc_interval))
    }
}

/// Whether `name` starts with one of the workload prefixes.
pub fn is_workload_interface(prefixes: &[String], name: &str) -> bool {
    prefixes
        .iter()
        .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
}

#[cfg(test)]
mod prefix_tests {
    use super::{BpfConfig, Duration, is_workload_interface};

    #[test]
    fn the_scan_follows_the_shorter_of_gc_and_flow_intervals() {
        let mut c = BpfConfig::new("n");
        assert_eq!(c.scan_interval(), Duration::from_secs(10));
        c.flow_update_interval = Some(Duration::from_secs(2));
        assert_eq!(c.scan_interval(), Duration::from_secs(2));
        c.flow_update_interval = Some(Duration::from_secs(60));
        assert_eq!(c.scan_interval(), Duration::from_secs(10));
        c.flow_update_interval = Some(Duration::ZERO);
        assert_eq!(c.scan_interval(), Duration::from_millis(100));
        // A shorter collection interval than the floor stays as asked.
        c.gc_interval = Duration::from_millis(20);
        assert_eq!(c.scan_interval(), Duration::from_millis(20));
    }

    #[test]
    fn any_configured_prefix_makes_a_workload_interface() {
        let prefixes = vec!["cali".to_string(), "tap".to_string()];
        for (name, want) in [
            ("cali12ab", true),
            ("tap0", true),
            ("mnl12ab", false),
            ("eth0", false),
            ("ca", false),
        ] {
            assert_eq!(is_workload_interface(&prefixes, name), want, "{name}");
        }
        assert!(!is_workload_interface(&[], "cali0"));
        assert!(!is_workload_interface(&[String::new()], "eth0"));
    }
}
