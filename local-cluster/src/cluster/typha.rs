//! The control plane: certificates, the Typha replicas, and writing
//! resources through them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use manul_client::Client;
use manul_model::resource::{Resource, ResourceKey};
use manul_netns::NetNs;
use tracing::warn;

use crate::ClusterError;
use crate::procs::{program, spawn_in_appending};

use super::*;

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

impl LocalCluster {
    /// Typha's addresses, `HOST:PORT` per replica.
    pub fn typha_addresses(&self) -> Vec<String> {
        (0..self.config.typha_replicas)
            .map(|k| format!("{}:{}", self.typha_ip(k), TYPHA_PORT + k as u16))
            .collect()
    }

    /// Replica `k`'s (0-based) sync listener of the lean transport,
    /// `HOST:PORT`.
    pub fn typha_sync_address(&self, k: usize) -> String {
        format!("{}:{}", self.typha_ip(k), super::TYPHA_SYNC_PORT)
    }

    /// Typha's peer listeners (Raft, `manulctl cluster`), `HOST:PORT` per
    /// replica; they require the token in [`Self::typha_peer_token_file`].
    pub fn typha_peer_addresses(&self) -> Vec<String> {
        (0..self.config.typha_replicas)
            .map(|k| format!("{}:{}", self.typha_ip(k), TYPHA_PEER_PORT + k as u16))
            .collect()
    }

    /// Replica `k`'s (0-based) address: the bridge's with one replica,
    /// else `192.168.220.(2+k)` in its own namespace.
    pub fn typha_ip(&self, k: usize) -> Ipv4Addr {
        let [a, b, c] = UNDERLAY_PREFIX;
        if self.config.typha_replicas == 1 {
            Ipv4Addr::new(a, b, c, 1)
        } else {
            Ipv4Addr::new(a, b, c, 2 + k as u8)
        }
    }

    /// Replica `k`'s metrics listener: the control plane's loopback with
    /// one replica, else its own address.
    pub(super) fn typha_metrics_addr(&self, k: usize) -> std::net::SocketAddr {
        use std::net::{IpAddr, SocketAddr};
        let port = TYPHA_METRICS_PORT.saturating_add(u16::try_from(k).unwrap_or(u16::MAX));
        let ip = if self.config.typha_replicas == 1 {
            Ipv4Addr::LOCALHOST
        } else {
            self.typha_ip(k)
        };
        SocketAddr::new(IpAddr::V4(ip), port)
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

    pub(super) fn make_certs(&self) -> Result<(), ClusterError> {
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

    /// Every Typha replica's and every Felix's metrics listener, as seen
    /// from the control-plane namespace (Typha on its loopback, Felix at
    /// its node's underlay address).
    pub fn metrics_targets(&self) -> Vec<MetricsTarget> {
        use std::net::{IpAddr, SocketAddr};
        let typhas = (0..self.config.typha_replicas).map(|k| MetricsTarget {
            job: "typha",
            address: self.typha_metrics_addr(k),
        });
        let felixes = self.nodes.iter().map(|n| MetricsTarget {
            job: "felix",
            address: SocketAddr::new(IpAddr::V4(n.ip), FELIX_METRICS_PORT),
        });
        typhas.chain(felixes).collect()
    }

    /// The command line of replica `k` (0-based); the same at every
    /// (re)start, so a restarted replica resumes from its data directory.
    pub(super) fn typha_command(&self, k: usize) -> Result<Command, ClusterError> {
        let typha = program("typha")?;
        let addrs = self.typha_addresses();
        let peer_addrs = self.typha_peer_addresses();
        let peers: Vec<String> = peer_addrs
            .iter()
            .enumerate()
            .map(|(k, a)| format!("{}={a}", k + 1))
            .collect();
        let id = k + 1;
        let mut cmd = Command::new(&typha);
        cmd.arg("--data-dir")
            .arg(self.typha_data_dir(k))
            .args(["--listen", &addrs[k]])
            .args(["--sync-listen", &self.typha_sync_address(k)])
            .args(["--peer-listen", &peer_addrs[k]])
            .arg("--peer-token-file")
            .arg(self.typha_peer_token_file())
            .args(["--metrics", &self.typha_metrics_addr(k).to_string()])
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
        Ok(cmd)
    }

    /// Replica `k`'s (0-based) data directory.
    pub fn typha_data_dir(&self, k: usize) -> PathBuf {
        self.work.path().join(format!("typha-{}", k + 1))
    }

    /// Replica `k`'s (0-based) log, appended to across restarts.
    pub fn typha_log(&self, k: usize) -> PathBuf {
        self.work.path().join(format!("typha-{}.log", k + 1))
    }

    /// Replica `k`'s own namespace, `NAME-tK` on the underlay bridge
    /// (clusters of three and more replicas, so that a partition between
    /// replicas is a cut between namespaces).
    fn replica_netns(&self, k: usize) -> Result<NetNs, ClusterError> {
        let ns = NetNs::create(&format!("{}-t{}", self.config.name, k + 1)).map_err(netns_err)?;
        let peer = format!("t{}", k + 1);
        manul_netns::create_veth(&ns, "eth0", &self.cp, &peer).map_err(netns_err)?;
        manul_netns::set_master(&self.cp, &peer, "br0").map_err(netns_err)?;
        manul_netns::link_up(&self.cp, &peer).map_err(netns_err)?;
        let net = manul_netns::IpNet::new(std::net::IpAddr::V4(self.typha_ip(k)), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&ns, "eth0", net).map_err(netns_err)?;
        manul_netns::link_up(&ns, "eth0").map_err(netns_err)?;
        Ok(ns)
    }

    pub(super) fn start_typha(&mut self, disks: super::Disks) -> Result<(), ClusterError> {
        let token_file = self.typha_peer_token_file();
        std::fs::write(&token_file, random_token()?).map_err(|source| ClusterError::Io {
            path: token_file.clone(),
            source,
        })?;
        let addrs = self.typha_addresses();
        for k in 0..addrs.len() {
            let netns = if addrs.len() > 1 {
                Some(self.replica_netns(k)?)
            } else {
                None
            };
            let data = self.typha_data_dir(k);
            if let Some(d) = disks.small.filter(|d| d.replica == k) {
                std::fs::create_dir_all(&data).map_err(|e| ClusterError::io(&data, e))?;
                super::disk::mount_tmpfs(&data, d.mib)?;
                self.small_disk = Some((data.clone(), d));
            }
            if let Some(d) = disks.slow.filter(|d| d.replica == k) {
                let image = self.work.path().join(format!("typha-{}.img", k + 1));
                let cgroup = super::slow_disk::cgroup_name(&self.config.name);
                self.slow_disk = Some(super::slow_disk::Mounted::set_up(
                    d, &data, &image, &cgroup,
                )?);
            }
            let log = self.typha_log(k);
            let cmd = self.typha_command(k)?;
            let child = spawn_in_appending(netns.as_ref().unwrap_or(&self.cp), cmd, &log)?;
            self.typhas.push(Replica { netns, child });
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
                        log: tail(&self.typha_log(0)),
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

    pub(super) fn seed(&self) -> Result<(), ClusterError> {
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
