//! The run's cluster and its fixed workload: three Typha replicas (each in
//! its own namespace, one on a small tmpfs, one on a loop device a fault
//! can throttle), the nodes' Felix on the eBPF
//! dataplane, on every node a server pod, a client its policy allows and
//! one it denies; and the clients the checks use (one per replica, as the
//! administrator, from a runtime whose threads live in the control-plane
//! namespace).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manul_client::{Client, ClientConfig};
use manul_local_cluster::{
    ClusterConfig, Dataplane, Disks, LocalCluster, PodSpec, SlowDisk, SmallDisk, Throttle,
};
use manul_netns::{NetNs, ProbeOutcome};

use crate::ChaosError;

/// The namespace of the run's pods and policies.
pub const NAMESPACE: &str = "chaos";
/// The servers' port.
pub const PORT: u16 = 8080;
/// Replicas.
pub const REPLICAS: usize = 3;
/// The replica (0-based) whose data directory is a small tmpfs.
pub const SMALL_DISK_REPLICA: usize = 2;
/// The replica (0-based) whose data directory is on a disk a fault slows.
pub const SLOW_DISK_REPLICA: usize = 1;
/// The slow disk's size (its image is sparse).
const SLOW_DISK_MIB: u64 = 256;
/// What the slow-disk fault leaves the replica: 8 writes and 512 KiB a
/// second to its disk.
pub const SLOW: Throttle = Throttle {
    write_iops: 8,
    write_bytes: 512 * 1024,
};

/// The policy that makes `denied-*` → `server-*` a denied pair: only
/// `role == 'allowed'` may reach the servers.
pub const SERVER_POLICY: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: servers, namespace: chaos}
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'allowed'}
    destination: {ports: [8080]}
";

/// A pair of pods the probes try, and what they must see.
#[derive(Debug, Clone)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub from_ns: String,
    pub to_ip: std::net::Ipv4Addr,
    pub allowed: bool,
}

fn pod(name: String, labels: &[(&str, &str)], node: usize, serve: bool) -> PodSpec {
    PodSpec {
        namespace: NAMESPACE.into(),
        name,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        node,
        tcp_ports: if serve {
            vec![(PORT, None)]
        } else {
            Vec::new()
        },
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// Brings the cluster up (removing an earlier run's leftovers first).
pub fn cluster(name: &str, nodes: usize, small_disk_mib: u64) -> Result<LocalCluster, ChaosError> {
    let removed = LocalCluster::cleanup(name)?;
    if removed > 0 {
        tracing::warn!(removed, "removed the namespaces of an earlier run");
    }
    let config = ClusterConfig {
        name: name.into(),
        nodes,
        typha_replicas: REPLICAS,
        dataplane: Dataplane::Bpf,
        policy_setup_timeout: Duration::ZERO,
        ..ClusterConfig::default()
    };
    Ok(LocalCluster::up_with_disks(
        config,
        Disks {
            small: Some(SmallDisk {
                replica: SMALL_DISK_REPLICA,
                mib: small_disk_mib,
            }),
            slow: slow_disk()?,
        },
    )?)
}

/// The slow disk, when this machine can make one. Without, a run goes on
/// without it (its slow-disk faults are recorded as not injected), except
/// under `CI=true`, where it fails saying what is missing.
fn slow_disk() -> Result<Option<SlowDisk>, ChaosError> {
    match SlowDisk::check() {
        Ok(()) => Ok(Some(SlowDisk {
            replica: SLOW_DISK_REPLICA,
            mib: SLOW_DISK_MIB,
        })),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => Err(ChaosError::Setup(format!(
            "the slow disk cannot be made, and CI=true: {e}"
        ))),
        Err(e) => {
            tracing::warn!("running without the slow disk: {e}");
            Ok(None)
        }
    }
}

/// The fixed pods and the policy; returns the pairs to probe once every
/// allowed pair connects and every denied one does not.
pub fn workload(c: &mut LocalCluster) -> Result<Vec<Pair>, ChaosError> {
    let nodes = c.nodes().len();
    c.apply_yaml(SERVER_POLICY)?;
    for n in 0..nodes {
        c.add_pod(pod(format!("server-{n}"), &[("app", "server")], n, true))?;
        c.add_pod(pod(
            format!("allowed-{n}"),
            &[("role", "allowed")],
            n,
            false,
        ))?;
        c.add_pod(pod(format!("denied-{n}"), &[("role", "denied")], n, false))?;
    }
    let mut pairs = Vec::new();
    for from in 0..nodes {
        for to in 0..nodes {
            for (role, allowed) in [("allowed", true), ("denied", false)] {
                let src = c.pod(&format!("{NAMESPACE}/{role}-{from}"))?;
                let dst = c.pod(&format!("{NAMESPACE}/server-{to}"))?;
                pairs.push(Pair {
                    from: src.key(),
                    to: dst.key(),
                    from_ns: src.netns.name().to_string(),
                    to_ip: dst.ip,
                    allowed,
                });
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in &pairs {
        loop {
            let ns = NetNs::open(&p.from_ns)?;
            let got = probe(&ns, p, Duration::from_millis(200))? == ProbeOutcome::Connected;
            if got == p.allowed {
                break;
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Setup(format!(
                    "{} -> {} is not {} within 30 s",
                    p.from,
                    p.to,
                    if p.allowed { "allowed" } else { "denied" }
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(pairs)
}

/// One TCP connect for a pair.
pub fn probe(ns: &NetNs, p: &Pair, timeout: Duration) -> Result<ProbeOutcome, ChaosError> {
    Ok(manul_netns::tcp_connect(
        ns,
        std::net::SocketAddr::new(std::net::IpAddr::V4(p.to_ip), PORT),
        timeout,
    )?)
}

/// A runtime whose threads live in the control-plane namespace.
pub fn runtime(c: &LocalCluster) -> Result<tokio::runtime::Runtime, ChaosError> {
    let cp = NetNs::open(c.control_plane_netns())?;
    let path = cp.path().to_path_buf();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = NetNs::from_path(&path).and_then(|ns| ns.enter_current_thread()) {
                tracing::error!("a runtime thread cannot enter the control plane: {e}");
            }
        })
        .build()
        .map_err(|e| ChaosError::Setup(format!("runtime: {e}")))
}

/// Runs `fut` on one of `rt`'s threads (inside the control plane) and
/// waits for it.
pub fn on<F>(rt: &tokio::runtime::Runtime, fut: F) -> Result<F::Output, ChaosError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(fut))
        .map_err(|e| ChaosError::Setup(format!("a task failed: {e}")))
}

/// The client configuration of the administrator, with short timeouts (a
/// request to a dead replica fails fast).
pub fn admin_config(c: &LocalCluster) -> Result<ClientConfig, ChaosError> {
    let d = c.certs_dir();
    let settings = manul_tls::client::ClientSettings {
        ca_file: d.join("ca.crt"),
        cert_file: d.join("admin.crt"),
        key_file: d.join("admin.key"),
        server: manul_tls::Expected::new([manul_tls::dev::TYPHA_CN.to_string()], [], "chaos")
            .map_err(|e| ChaosError::Setup(format!("TLS: {e}")))?,
    };
    let config = settings
        .config()
        .map_err(|e| ChaosError::Setup(format!("TLS: {}", manul_model::error::chain(&e))))?;
    Ok(ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        rounds: 1,
        round_pause: Duration::from_millis(100),
        transport: manul_tls::connect::Transport::Tls(config),
    })
}

/// One client per address (each talks to that replica only).
pub fn clients(
    rt: &tokio::runtime::Runtime,
    addresses: &[String],
    config: &ClientConfig,
) -> Result<Vec<Client>, ChaosError> {
    addresses
        .iter()
        .map(|a| {
            let (a, config) = (a.clone(), config.clone());
            on(rt, async move { Client::connect_with(&[a], config).await })?
                .map_err(|e| ChaosError::Setup(format!("connecting: {e}")))
        })
        .collect()
}
