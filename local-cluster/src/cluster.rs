//! Bringing a cluster up, adding and removing pods, and tearing it down.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use manul_client::Client;
use manul_model::resource::{Resource, ResourceKey};
use manul_netns::{IpNet, NetNs, TcpServer};
use tracing::{info, warn};

use crate::ClusterError;
use crate::procs::{self, program, spawn_in};

/// The underlay network; the bridge holds `.1`, node N `.(10+N)`.
pub const UNDERLAY_PREFIX: [u8; 3] = [192, 168, 220];
/// The node network every node's `eth0` also has: the bridge holds `.1`,
/// node N `.(9+N)`, so `node1`'s `eth0` is at 10.0.0.10, the address the
/// quick start's HostEndpoint expects.
pub const HOST_NET_PREFIX: [u8; 3] = [10, 0, 0];
/// The pod address pool.
pub const POD_POOL: &str = "10.65.0.0/16";
/// Typha's first port (replica K listens on `PORT + K - 1`).
pub const TYPHA_PORT: u16 = 5473;
/// Typha's first peer port (Raft and cluster administration; replica K
/// listens on `PEER_PORT + K - 1`).
pub const TYPHA_PEER_PORT: u16 = 5573;

/// Which dataplane the nodes' Felix runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataplane {
    Bpf,
    Iptables,
    /// No enforcement (the null driver): for control-plane runs.
    Null,
}

impl Dataplane {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Bpf => "bpf",
            Dataplane::Iptables => "iptables",
            Dataplane::Null => "null",
        }
    }

    pub fn parse(s: &str) -> Result<Dataplane, ClusterError> {
        match s {
            "bpf" | "ebpf" => Ok(Dataplane::Bpf),
            "iptables" | "nftables" => Ok(Dataplane::Iptables),
            "null" => Ok(Dataplane::Null),
            other => Err(ClusterError::Invalid(format!(
                "unknown dataplane {other:?}: use bpf, iptables or null"
            ))),
        }
    }
}

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Prefix of every namespace (`NAME-cp`, `NAME-node1`, ...).
    pub name: String,
    pub nodes: usize,
    /// 1, or 3 and more (a Raft cluster).
    pub typha_replicas: usize,
    pub dataplane: Dataplane,
    /// How long the CNI plugin waits for Felix to program a new pod (0:
    /// do not wait).
    pub policy_setup_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "manul".into(),
            nodes: 2,
            typha_replicas: 1,
            dataplane: Dataplane::Iptables,
            policy_setup_timeout: Duration::ZERO,
        }
    }
}

/// A node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Its `eth0`'s address on the node network ([`HOST_NET_PREFIX`]).
    pub host_ip: Ipv4Addr,
    pub netns: NetNs,
    pub status_dir: PathBuf,
    pub log: PathBuf,
    pub felix: Child,
}

/// A pod to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Index into the cluster's nodes.
    pub node: usize,
    /// TCP ports to listen on: `(port, optional name)`.
    pub tcp_ports: Vec<(u16, Option<String>)>,
    /// UDP ports to echo on.
    pub udp_ports: Vec<u16>,
    /// The pod's `serviceAccountName`.
    pub service_account: Option<String>,
}

/// A pod that exists.
#[derive(Debug)]
pub struct PodInfo {
    pub spec: PodSpec,
    pub ip: Ipv4Addr,
    pub netns: NetNs,
    pub container_id: String,
    /// When the CNI plugin returned: the sandbox is ready.
    pub ready_at: Instant,
    _servers: Vec<TcpServer>,
    _udp: Vec<manul_netns::UdpEcho>,
}

impl PodInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.spec.namespace, self.spec.name)
    }
}

/// A running local cluster. Dropping it stops every process and removes
/// every namespace.
#[derive(Debug)]
pub struct LocalCluster {
    config: ClusterConfig,
    // Field order is drop order.
    pods: BTreeMap<String, PodInfo>,
    /// Servers listening in node namespaces ([`Self::host_listen`]).
    host_servers: Vec<TcpServer>,
    nodes: Vec<Node>,
    typhas: Vec<Child>,
    client: Option<Client>,
    runtime: Option<tokio::runtime::Runtime>,
    namespaces: BTreeSet<String>,
    work: tempfile::TempDir,
    cp: NetNs,
    pod_counter: AtomicU64,
}

fn netns_err(e: manul_netns::NetnsError) -> ClusterError {
    ClusterError::Netns(e.to_string())
}

/// A fresh peer token: 32 bytes of the kernel's randomness, as hex.
fn random_token() -> Result<String, ClusterError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| ClusterError::Io {
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn typha_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Typha(e.to_string())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// An HTTP GET from inside `ns`: the status code and the body.
fn http_get(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    ns.run(|| -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    })
    .ok()
    .flatten()
}

fn http_status(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(ns, addr, path).map(|(code, _)| code)
}

const FELIX_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9091);

impl LocalCluster {
    /// Stops the processes of a cluster named `name` and removes its
    /// namespaces (what a killed run left behind). Returns how many
    /// namespaces were removed.
    pub fn cleanup(name: &str) -> Result<usize, ClusterError> {
        let prefix = format!("{name}-");
        if let Ok(entries) = std::fs::read_dir(manul_netns::NETNS_RUN_DIR) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    procs::stop_processes_in(&e.path(), Duration::from_secs(2));
                }
            }
        }
        let removed = manul_netns::cleanup_prefix(&prefix).map_err(netns_err)?;
        remove_bpf_pins(&prefix);
        Ok(removed)
    }

    /// Builds the cluster and waits until Typha and every Felix are ready.
    pub fn up(config: ClusterConfig) -> Result<LocalCluster, ClusterError> {
        if config.nodes == 0 || config.nodes > 200 {
            return Err(ClusterError::Invalid("nodes must be 1..=200".into()));
        }
        if config.typha_replicas != 1 && config.typha_replicas < 3 {
            return Err(ClusterError::Invalid(
                "Typha runs 1 replica, or 3 or more".into(),
            ));
        }
        let removed = Self::cleanup(&config.name)?;
        if removed > 0 {
            warn!(
                removed,
                "removed namespaces of an earlier run named {}", config.name
            );
        }
        let cp = NetNs::create(&format!("{}-cp", config.name)).map_err(netns_err)?;
        let work = tempfile::Builder::new()
            .prefix(&format!("{}-", config.name))
            .tempdir()
            .map_err(|e| ClusterError::io(Path::new("temporary directory"), e))?;
        let mut cluster = LocalCluster {
            config,
            pods: BTreeMap::new(),
            host_servers: Vec::new(),
            nodes: Vec::new(),
            typhas: Vec::new(),
            client: None,
            runtime: None,
            namespaces: BTreeSet::new(),
            work,
            cp,
            pod_counter: AtomicU64::new(0),
        };
        cluster.underlay()?;
        cluster.make_certs()?;
        cluster.start_typha()?;
        cluster.seed()?;
        for i in 1..=cluster.config.nodes {
            cluster.start_node(i)?;
        }
        cluster.wait_nodes_ready()?;
        info!(
            nodes = cluster.config.nodes,
            dataplane = cluster.config.dataplane.as_str(),
            "cluster up"
        );
        Ok(cluster)
    }

    fn underlay(&mut self) -> Result<(), ClusterError> {
        let [a, b, c] = UNDERLAY_PREFIX;
        manul_netns::create_bridge(&self.cp, "br0").map_err(netns_err)?;
        let bridge = IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, c, 1)), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&self.cp, "br0", bridge).map_err(netns_err)?;
        let [a, b, c] = HOST_NET_PREFIX;
        let host_net = IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, c, 1)), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&self.cp, "br0", host_net).map_err(netns_err)?;
        manul_netns::link_up(&self.cp, "br0").map_err(netns_err)?;
        Ok(())
    }

    /// Starts a TCP server on `port` in node `node`'s namespace (all its
    /// addresses), as a host process of that node would listen; it stops
    /// with the cluster.
    pub fn host_listen(&mut self, node: usize, port: u16) -> Result<(), ClusterError> {
        let ns = &self
            .nodes
            .get(node)
            .ok_or_else(|| ClusterError::Invalid(format!("no node with index {node}")))?
            .netns;
        let server = TcpServer::start(ns, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .map_err(netns_err)?;
        self.host_servers.push(server);
        Ok(())
    }

    /// A TCP connect from the underlay (the control-plane namespace, a
    /// machine on the nodes' network) to `dst`.
    pub fn underlay_tcp_probe(
        &self,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Result<manul_netns::ProbeOutcome, ClusterError> {
        manul_netns::tcp_connect(&self.cp, dst, timeout).map_err(netns_err)
    }

    /// Typha's addresses, `HOST:PORT` per replica.
    pub fn typha_addresses(&self) -> Vec<String> {
        let [a, b, c] = UNDERLAY_PREFIX;
        (0..self.config.typha_replicas)
            .map(|k| format!("{a}.{b}.{c}.1:{}", TYPHA_PORT + k as u16))
            .collect()
    }

    /// Typha's peer listeners (Raft, `manulctl cluster`), `HOST:PORT` per
    /// replica; they require the token in [`Self::typha_peer_token_file`].
    pub fn typha_peer_addresses(&self) -> Vec<String> {
        let [a, b, c] = UNDERLAY_PREFIX;
        (0..self.config.typha_replicas)
            .map(|k| format!("{a}.{b}.{c}.1:{}", TYPHA_PEER_PORT + k as u16))
            .collect()
    }

    /// The file holding the Typha replicas' shared peer token.
    pub fn typha_peer_token_file(&self) -> PathBuf {
        self.work.path().join("typha-peer-token")
    }

    /// The development CA and certificates every component uses (see
    /// `manul_tls::dev` for the identities): TLS on every connection.
    pub fn certs_dir(&self) -> PathBuf {
        self.work.path().join("certs")
    }

    /// The `manulctl` flags that give it the administrator's identity.
    pub fn manulctl_tls_flags(&self) -> String {
        let d = self.certs_dir();
        format!(
            "--ca-file {} --cert-file {} --key-file {}",
            d.join("ca.crt").display(),
            d.join("admin.crt").display(),
            d.join("admin.key").display()
        )
    }

    fn make_certs(&self) -> Result<(), ClusterError> {
        let typha_names = self
            .typha_addresses()
            .iter()
            .filter_map(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let set = manul_tls::dev::DevSet {
            typha_names,
            typha_cn: manul_tls::dev::TYPHA_CN.into(),
            nodes: (1..=self.config.nodes)
                .map(|i| format!("node{i}"))
                .collect(),
            days: 30,
        };
        manul_tls::dev::write_dev_set(&self.certs_dir(), &set).map_err(|e| {
            ClusterError::Spawn(format!("certificates: {}", manul_model::error::chain(&e)))
        })?;
        Ok(())
    }

    /// Towards Typha as the administrator (the cluster's own client).
    fn admin_transport(&self) -> Result<manul_tls::connect::Transport, ClusterError> {
        let d = self.certs_dir();
        let settings = manul_tls::client::ClientSettings {
            ca_file: d.join("ca.crt"),
            cert_file: d.join("admin.crt"),
            key_file: d.join("admin.key"),
            server: manul_tls::Expected::new(
                [manul_tls::dev::TYPHA_CN.to_string()],
                [],
                "local cluster",
            )
            .map_err(|e| ClusterError::Spawn(e.to_string()))?,
        };
        let config = settings
            .config()
            .map_err(|e| ClusterError::Spawn(format!("TLS: {}", manul_model::error::chain(&e))))?;
        Ok(manul_tls::connect::Transport::Tls(config))
    }

    /// The control-plane namespace's name (for `manulctl --netns`).
    pub fn control_plane_netns(&self) -> &str {
        self.cp.name()
    }

    /// The control-plane namespace, which holds the underlay bridge.
    pub(crate) fn underlay_netns(&self) -> &NetNs {
        &self.cp
    }

    fn start_typha(&mut self) -> Result<(), ClusterError> {
        let typha = program("typha")?;
        let addrs = self.typha_addresses();
        let peer_addrs = self.typha_peer_addresses();
        let token_file = self.typha_peer_token_file();
        std::fs::write(&token_file, random_token()?).map_err(|source| ClusterError::Io {
            path: token_file.clone(),
            source,
        })?;
        let peers: Vec<String> = peer_addrs
            .iter()
            .enumerate()
            .map(|(k, a)| format!("{}={a}", k + 1))
            .collect();
        for (k, addr) in addrs.iter().enumerate() {
            let id = k + 1;
            let data = self.work.path().join(format!("typha-{id}"));
            let mut cmd = Command::new(&typha);
            cmd.arg("--data-dir")
                .arg(&data)
                .args(["--listen", addr])
                .args(["--peer-listen", &peer_addrs[k]])
                .arg("--peer-token-file")
                .arg(&token_file)
                .args(["--metrics", &format!("127.0.0.1:{}", 9093 + k)])
                .args(["--node-id", &id.to_string()])
                .arg("--ca-file")
                .arg(self.certs_dir().join("ca.crt"))
                .arg("--server-cert-file")
                .arg(self.certs_dir().join("typha.crt"))
                .arg("--server-key-file")
                .arg(self.certs_dir().join("typha.key"))
                .args([
                    "--client-cn",
                    &format!("{},{}", manul_tls::dev::FELIX_CN, manul_tls::dev::CNI_CN),
                ]);
            if addrs.len() > 1 {
                cmd.args(["--peers", &peers.join(",")]);
            }
            let log = self.work.path().join(format!("typha-{id}.log"));
            self.typhas.push(spawn_in(&self.cp, cmd, &log)?);
        }
        // A runtime whose threads live in the control-plane namespace, so
        // the client's connections reach Typha.
        let cp_path = self.cp.path().to_path_buf();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = NetNs::from_path(&cp_path).and_then(|ns| ns.enter_current_thread())
                {
                    warn!("runtime thread cannot enter the control plane: {e}");
                }
            })
            .build()
            .map_err(|e| ClusterError::Spawn(format!("runtime: {e}")))?;
        self.runtime = Some(runtime);
        let deadline = Instant::now() + Duration::from_secs(30);
        let config = manul_client::ClientConfig {
            transport: self.admin_transport()?,
            ..manul_client::ClientConfig::default()
        };
        loop {
            let (addrs, config) = (addrs.clone(), config.clone());
            match self.block_on(async move { Client::connect_with(&addrs, config).await }) {
                Ok(Ok(client)) => {
                    self.client = Some(client);
                    return Ok(());
                }
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Ok(Err(e)) => {
                    return Err(ClusterError::NotReady {
                        what: format!("Typha ({e})"),
                        secs: 30,
                        log: tail(&self.work.path().join("typha-1.log")),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs a future on the control-plane runtime.
    pub fn block_on<F>(&self, fut: F) -> Result<F::Output, ClusterError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| ClusterError::Typha("not started".into()))?;
        rt.block_on(rt.spawn(fut))
            .map_err(|e| ClusterError::Typha(format!("task failed: {e}")))
    }

    /// The Typha client (its calls must run through [`Self::block_on`]).
    pub fn client(&self) -> Result<Client, ClusterError> {
        self.client
            .clone()
            .ok_or_else(|| ClusterError::Typha("not connected".into()))
    }

    /// Writes resources (retrying while Typha elects a leader); returns the
    /// revision of the write.
    pub fn apply(&self, resources: Vec<Resource>) -> Result<u64, ClusterError> {
        if resources.is_empty() {
            return Ok(0);
        }
        let client = self.client()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (c, r) = (client.clone(), resources.clone());
            match self.block_on(async move { c.apply(&r).await })? {
                Ok(revs) => return Ok(revs.into_iter().max().unwrap_or(0)),
                Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(typha_err(e)),
            }
        }
    }

    /// Parses YAML and writes it.
    pub fn apply_yaml(&self, yaml: &str) -> Result<u64, ClusterError> {
        self.apply(parse(yaml)?)
    }

    /// Deletes a resource; absent is fine.
    pub fn delete(&self, key: ResourceKey) -> Result<(), ClusterError> {
        let client = self.client()?;
        match self.block_on(async move { client.delete(&key, None).await })? {
            Ok(_) => Ok(()),
            Err(manul_client::ClientError::NotFound { .. }) => Ok(()),
            Err(e) => Err(typha_err(e)),
        }
    }

    fn seed(&self) -> Result<(), ClusterError> {
        let [a, b, c] = UNDERLAY_PREFIX;
        let mut yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: default-ipv4-ippool}}\nspec: {{cidr: {POD_POOL}, blockSize: 26}}\n"
        );
        for i in 1..=self.config.nodes {
            yaml.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node{i}}}\nspec: {{bgp: {{ipv4Address: {a}.{b}.{c}.{}/24}}}}\n",
                10 + i
            ));
        }
        self.apply_yaml(&yaml).map(|_| ())
    }

    fn start_node(&mut self, i: usize) -> Result<(), ClusterError> {
        let [a, b, c] = UNDERLAY_PREFIX;
        let name = format!("node{i}");
        let ns = NetNs::create(&format!("{}-{name}", self.config.name)).map_err(netns_err)?;
        let underlay_if = format!("n{i}");
        manul_netns::create_veth(&ns, "eth0", &self.cp, &underlay_if).map_err(netns_err)?;
        manul_netns::set_master(&self.cp, &underlay_if, "br0").map_err(netns_err)?;
        manul_netns::link_up(&self.cp, &underlay_if).map_err(netns_err)?;
        let ip = Ipv4Addr::new(a, b, c, 10 + i as u8);
        let net =
            IpNet::new(IpAddr::V4(ip), 24).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&ns, "eth0", net).map_err(netns_err)?;
        let [ha, hb, hc] = HOST_NET_PREFIX;
        let host_ip = Ipv4Addr::new(ha, hb, hc, 9 + i as u8);
        let host_net = IpNet::new(IpAddr::V4(host_ip), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&ns, "eth0", host_net).map_err(netns_err)?;
        manul_netns::link_up(&ns, "eth0").map_err(netns_err)?;
        ns.set_sysctl("net.ipv4.ip_forward", "1")
            .map_err(netns_err)?;
        let dir = self.work.path().join(&name);
        let status_dir = dir.join("endpoint-status");
        std::fs::create_dir_all(&status_dir).map_err(|e| ClusterError::io(&status_dir, e))?;
        let log = dir.join("felix.log");
        let mut cmd = Command::new(program("felix")?);
        cmd.args(["--netns", ns.name(), "--node", &name])
            .args(["--typha", &self.typha_addresses().join(",")])
            .args(["--dataplane", self.config.dataplane.as_str()])
            .arg("--status-dir")
            .arg(&status_dir)
            .args(["--metrics", "127.0.0.1:9091", "--program-routes"])
            .arg("--typha-ca-file")
            .arg(self.certs_dir().join("ca.crt"))
            .arg("--typha-cert-file")
            .arg(self.certs_dir().join(format!("felix-{name}.crt")))
            .arg("--typha-key-file")
            .arg(self.certs_dir().join(format!("felix-{name}.key")))
            .args(["--typha-cn", manul_tls::dev::TYPHA_CN]);
        if self.config.dataplane == Dataplane::Bpf {
            // bpffs is shared by every namespace: pins are per cluster node.
            cmd.args(["--bpf-pin-name", &format!("{}-{name}", self.config.name)])
                .arg("--flow-log")
                .arg(dir.join("flows.jsonl"));
        }
        // felix enters its namespace itself; start it from the root one.
        let out = std::fs::File::create(&log).map_err(|e| ClusterError::io(&log, e))?;
        let err = out.try_clone().map_err(|e| ClusterError::io(&log, e))?;
        let felix = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("MANUL_FELIX_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Each node keeps its own WireGuard key (used once a
            // FelixConfiguration sets wireguardEnabled).
            .env("FELIX_WIREGUARDPRIVATEKEYFILE", dir.join("wireguard.key"))
            .spawn()
            .map_err(|e| ClusterError::Spawn(format!("felix: {e}")))?;
        self.nodes.push(Node {
            name,
            ip,
            host_ip,
            netns: ns,
            status_dir,
            log,
            felix,
        });
        Ok(())
    }

    fn wait_nodes_ready(&mut self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let metrics = FELIX_METRICS;
        for node in &mut self.nodes {
            loop {
                if let Ok(Some(status)) = node.felix.try_wait() {
                    return Err(ClusterError::NotReady {
                        what: format!("felix on {} (exited: {status})", node.name),
                        secs: 0,
                        log: tail(&node.log),
                    });
                }
                if http_status(&node.netns, metrics, "/readyz") == Some(200) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::NotReady {
                        what: format!("felix on {}", node.name),
                        secs: 30,
                        log: tail(&node.log),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The datastore revision a node's Felix has applied to its dataplane
    /// (0 before its first sync).
    pub fn felix_revision(&self, node: &Node) -> Result<u64, ClusterError> {
        let (_, body) = http_get(&node.netns, FELIX_METRICS, "/readyz").ok_or_else(|| {
            ClusterError::NotReady {
                what: format!("felix on {}", node.name),
                secs: 0,
                log: tail(&node.log),
            }
        })?;
        Ok(body
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0))
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Process ids of Typha replicas and Felix agents, for sampling.
    pub fn process_ids(&self) -> (Vec<u32>, Vec<u32>) {
        (
            self.typhas.iter().map(Child::id).collect(),
            self.nodes.iter().map(|n| n.felix.id()).collect(),
        )
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    pub fn pod(&self, key: &str) -> Result<&PodInfo, ClusterError> {
        self.pods
            .get(key)
            .ok_or_else(|| ClusterError::Invalid(format!("no pod {key}")))
    }

    /// Creates (or updates) a Kubernetes Namespace with `labels`.
    pub fn declare_namespace(
        &mut self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let mut all = labels.clone();
        all.entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| namespace.to_string());
        let labels: Vec<String> = all.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels: {{{}}}\n",
            labels.join(", ")
        ))?;
        self.namespaces.insert(namespace.to_string());
        Ok(())
    }

    fn ensure_namespace(&mut self, namespace: &str) -> Result<(), ClusterError> {
        if self.namespaces.contains(namespace) {
            return Ok(());
        }
        self.declare_namespace(namespace, &BTreeMap::new())
    }

    /// The YAML of a pod resource.
    /// The Pod resource a kubelet would report for `spec` on `node`.
    fn pod_resource(spec: &PodSpec, node: &str) -> Resource {
        use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let ports = spec
            .tcp_ports
            .iter()
            .map(|(port, name)| ContainerPort {
                name: name.clone(),
                container_port: i32::from(*port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            })
            .collect();
        Resource::Pod(Box::new(Pod {
            metadata: ObjectMeta {
                name: Some(spec.name.clone()),
                namespace: Some(spec.namespace.clone()),
                labels: Some(spec.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.to_string()),
                service_account_name: spec.service_account.clone(),
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("manul/probe".into()),
                    ports: Some(ports),
                    ..Container::default()
                }],
                ..k8s_openapi::api::core::v1::PodSpec::default()
            }),
            status: None,
        }))
    }

    fn cni(
        &self,
        node: &Node,
        command: &str,
        container_id: &str,
        netns: &Path,
        spec: &PodSpec,
    ) -> Result<String, ClusterError> {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "manul",
            "type": "manul-cni",
            "typha": self.typha_addresses(),
            "nodename": node.name,
            "policy_setup_timeout_ms": self.config.policy_setup_timeout.as_millis() as u64,
            "endpoint_status_dir": node.status_dir,
            "typha_ca_file": self.certs_dir().join("ca.crt"),
            "typha_cert_file": self.certs_dir().join(format!("cni-{}.crt", node.name)),
            "typha_key_file": self.certs_dir().join(format!("cni-{}.key", node.name)),
            "typha_cn": manul_tls::dev::TYPHA_CN,
        });
        let cni = program("manul-cni")?;
        let bin_dir = procs::bin_dir()?;
        let args = format!(
            "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            spec.namespace, spec.name
        );
        let netns = netns.to_path_buf();
        let container_id = container_id.to_string();
        let command = command.to_string();
        let output = node
            .netns
            .run(move || -> std::io::Result<std::process::Output> {
                let mut child = Command::new(cni)
                    .env("CNI_COMMAND", command)
                    .env("CNI_CONTAINERID", container_id)
                    .env("CNI_NETNS", netns)
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_ARGS", args)
                    .env("CNI_PATH", bin_dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(conf.to_string().as_bytes())?;
                }
                child.wait_with_output()
            })
            .map_err(netns_err)?
            .map_err(|e| ClusterError::Spawn(format!("manul-cni: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(ClusterError::Cni {
                pod: format!("{}/{}", spec.namespace, spec.name),
                message: format!(
                    "{} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    }

    /// Creates a pod: its Namespace and Pod resources, its namespace, the
    /// CNI ADD on its node, and servers on its ports. Returns when the
    /// sandbox is ready (the CNI plugin returned).
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<&PodInfo, ClusterError> {
        let node_name = self
            .nodes
            .get(spec.node)
            .map(|n| n.name.clone())
            .ok_or_else(|| ClusterError::Invalid(format!("no node with index {}", spec.node)))?;
        self.ensure_namespace(&spec.namespace)?;
        self.apply(vec![Self::pod_resource(&spec, &node_name)])?;
        let n = self.pod_counter.fetch_add(1, Ordering::Relaxed);
        let netns = NetNs::create(&format!("{}-p{n}", self.config.name)).map_err(netns_err)?;
        let container_id = format!("{}-{n:08}", self.config.name);
        let node = &self.nodes[spec.node];
        let result = self.cni(node, "ADD", &container_id, netns.path(), &spec)?;
        let ready_at = Instant::now();
        let ip = pod_ip(&result).ok_or_else(|| ClusterError::Cni {
            pod: format!("{}/{}", spec.namespace, spec.name),
            message: format!("no IPv4 address in the result {result}"),
        })?;
        let mut servers = Vec::new();
        for (port, _) in &spec.tcp_ports {
            servers.push(
                TcpServer::start(&netns, SocketAddr::new(IpAddr::V4(ip), *port))
                    .map_err(netns_err)?,
            );
        }
        let mut udp = Vec::new();
        for port in &spec.udp_ports {
            udp.push(
                manul_netns::UdpEcho::start(&netns, SocketAddr::new(IpAddr::V4(ip), *port))
                    .map_err(netns_err)?,
            );
        }
        let key = format!("{}/{}", spec.namespace, spec.name);
        self.pods.insert(
            key.clone(),
            PodInfo {
                spec,
                ip,
                netns,
                container_id,
                ready_at,
                _servers: servers,
                _udp: udp,
            },
        );
        self.pod(&key)
    }

    /// Removes a pod: CNI DEL, its Pod resource, its namespace.
    pub fn remove_pod(&mut self, key: &str) -> Result<(), ClusterError> {
        let Some(pod) = self.pods.remove(key) else {
            return Ok(());
        };
        let node = &self.nodes[pod.spec.node];
        self.cni(node, "DEL", &pod.container_id, pod.netns.path(), &pod.spec)?;
        self.delete(ResourceKey {
            kind: manul_model::resource::Kind::Pod,
            namespace: Some(pod.spec.namespace.clone()),
            name: pod.spec.name.clone(),
        })?;
        Ok(())
    }

    /// A TCP connect from pod `from` to pod `to` on `port`.
    pub fn tcp_probe(
        &self,
        from: &str,
        to: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<manul_netns::ProbeOutcome, ClusterError> {
        let from = self.pod(from)?;
        let to = self.pod(to)?;
        manul_netns::tcp_connect(
            &from.netns,
            SocketAddr::new(IpAddr::V4(to.ip), port),
            timeout,
        )
        .map_err(netns_err)
    }

    /// Where the cluster keeps logs and state.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Keeps the working directory (logs) after the cluster goes.
    pub fn keep_work_dir(&mut self) -> PathBuf {
        let path = self.work.path().to_path_buf();
        let fresh = tempfile::tempdir();
        if let Ok(fresh) = fresh {
            let old = std::mem::replace(&mut self.work, fresh);
            let _ = old.keep();
        }
        path
    }
}

/// Where the eBPF dataplane pins its maps, per node (`--bpf-pin-name`).
const BPF_PIN_ROOT: &str = "/sys/fs/bpf/manul";

/// Removes the eBPF pins of the cluster's nodes (bpffs is shared by every
/// namespace, so they outlive the node namespaces).
fn remove_bpf_pins(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(BPF_PIN_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix)
            && let Err(err) = std::fs::remove_dir_all(e.path())
        {
            warn!("cannot remove {}: {err}", e.path().display());
        }
    }
}

/// The first IPv4 address in a CNI result.
fn pod_ip(result: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    v.get("ips")?
        .as_array()?
        .iter()
        .find_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
}

/// Parses YAML resources, failing on the first problem.
pub fn parse(yaml: &str) -> Result<Vec<Resource>, ClusterError> {
    manul_model::load::load("cluster", yaml.as_bytes())
        .into_result()
        .map(|l| l.into_iter().map(|l| l.resource).collect())
        .map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            ClusterError::Invalid(text.join("; "))
        })
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Pods first (their namespaces), then the agents, Typha, and the
        // node and control-plane namespaces (with anything still in them).
        self.pods.clear();
        self.host_servers.clear();
        for node in &mut self.nodes {
            procs::stop_child(&mut node.felix, Duration::from_secs(3));
        }
        for typha in &mut self.typhas {
            procs::stop_child(typha, Duration::from_secs(3));
        }
        self.client = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        for node in &self.nodes {
            procs::stop_processes_in(node.netns.path(), Duration::from_secs(1));
        }
        procs::stop_processes_in(self.cp.path(), Duration::from_secs(1));
        self.nodes.clear();
        remove_bpf_pins(&format!("{}-", self.config.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cni_result_gives_the_pod_address() {
        let r = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.65.0.7/32","interface":0}]}"#;
        assert_eq!(pod_ip(r), Some(Ipv4Addr::new(10, 65, 0, 7)));
        assert_eq!(pod_ip("{}"), None);
        assert_eq!(pod_ip("garbage"), None);
    }

    #[test]
    fn dataplane_names() {
        assert_eq!(Dataplane::parse("bpf").unwrap(), Dataplane::Bpf);
        assert_eq!(Dataplane::parse("iptables").unwrap(), Dataplane::Iptables);
        assert!(Dataplane::parse("ipvs").is_err());
    }
}
