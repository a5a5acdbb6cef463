//! A local Typha cluster of real `typha` processes on loopback, for tests.
//! Every process is killed when the cluster is dropped, even on failure.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod kube_api;
pub mod tls_replicas;
pub mod tls_typha;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::peer_client::PeerClient;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::{
    ApplyItem, ApplyRequest, ApplyResponse, ListRequest, ReplicaStatus, ReplicaStatusRequest,
};
use manul_typha::peer_auth::{AttachToken, PeerToken};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel to `addr`, retried for up to 10 s while it refuses.
pub async fn connect(addr: &str) -> Channel {
    let url = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot reach {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serialises the process-level tests: each runs a cluster on two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free loopback port below 32768 (above it the kernel hands out
/// ephemeral ports), a different one at each call.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id() % 6_000;
    loop {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = 20_000 + ((base + k * 17) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Every test cluster's peer token.
pub const TOKEN: &str = "test-cluster-peer-token-0123456789";

/// A client of a replica's peer listener (Cluster service) with the token.
pub type Admin = ClusterClient<InterceptedService<Channel, AttachToken>>;

pub struct Replica {
    pub id: u64,
    pub port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub join: bool,
}

impl Replica {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }
}

pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub replicas: Vec<Replica>,
    pub snapshot_every: u64,
    /// Flags every replica also gets.
    pub extra_args: Vec<String>,
    /// RLIMIT_NOFILE every replica starts with (none: inherited).
    pub nofile: Option<u64>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Starts `n` replicas that bootstrap together.
    pub async fn start(n: u64, snapshot_every: u64) -> Cluster {
        Cluster::start_with(n, snapshot_every, Vec::new()).await
    }

    /// Starts `n` replicas that bootstrap together, each with `extra_args`.
    pub async fn start_with(n: u64, snapshot_every: u64, extra_args: Vec<String>) -> Cluster {
        Cluster::start_limited(n, snapshot_every, extra_args, None).await
    }

    /// [`Cluster::start_with`], each replica started with RLIMIT_NOFILE
    /// `nofile` when given.
    pub async fn start_limited(
        n: u64,
        snapshot_every: u64,
        extra_args: Vec<String>,
        nofile: Option<u64>,
    ) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("peer-token"), TOKEN).unwrap();
        let replicas = (1..=n)
            .map(|id| Replica {
                id,
                port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                dir: tmp.path().join(format!("r{id}")),
                child: None,
                join: false,
            })
            .collect();
        let mut c = Cluster {
            _tmp: tmp,
            replicas,
            snapshot_every,
            extra_args,
            nofile,
        };
        for i in 0..c.replicas.len() {
            c.spawn(i);
        }
        c.wait_for_leader(Duration::from_secs(15)).await;
        c.wait_serving(Duration::from_secs(10)).await;
        c
    }

    /// Waits until every live replica serves Sync clients (a replica
    /// refuses them until it has known a leader and applied what it knows
    /// committed: `typha_serving`).
    pub async fn wait_serving(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for i in self.alive().collect::<Vec<_>>() {
            while self.metric(i, "typha_serving").await != Some(1.0) {
                assert!(
                    Instant::now() < deadline,
                    "replica {} does not serve within {within:?}",
                    self.replicas[i].id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn peers(&self) -> String {
        self.replicas
            .iter()
            .filter(|r| !r.join)
            .map(|r| format!("{}={}", r.id, r.peer_addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn spawn(&mut self, i: usize) {
        let peers = self.peers();
        let r = &mut self.replicas[i];
        let mut cmd = match self.nofile {
            // The shell lowers the limit and becomes typha (same pid).
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_typha"));
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_typha")),
        };
        cmd.args(["--node-id", &r.id.to_string()])
            .args(["--listen", &r.addr()])
            .args(["--peer-listen", &r.peer_addr()])
            .arg("--peer-token-file")
            .arg(r.dir.parent().unwrap().join("peer-token"))
            .args(["--metrics", &format!("127.0.0.1:{}", r.metrics_port)])
            .args(["--data-dir", r.dir.to_str().unwrap()])
            .args(["--snapshot-every", &self.snapshot_every.to_string()])
            .args(["--shutdown-spread-secs", "0"])
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("TYPHA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        if r.join {
            cmd.arg("--join");
        } else {
            cmd.args(["--peers", &peers]);
        }
        r.child = Some(cmd.spawn().expect("spawn typha"));
    }

    /// Adds a replica that starts with `--join`.
    pub fn spawn_joiner(&mut self, id: u64) -> usize {
        let dir = self.replicas[0]
            .dir
            .parent()
            .unwrap()
            .join(format!("r{id}"));
        self.replicas.push(Replica {
            id,
            port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            dir,
            child: None,
            join: true,
        });
        let i = self.replicas.len() - 1;
        self.spawn(i);
        i
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.replicas.len()).filter(|i| self.replicas[*i].child.is_some())
    }

    pub async fn channel(&self, i: usize) -> Channel {
        connect(&self.replicas[i].addr()).await
    }

    /// A Peer client on replica `i`'s peer listener, with the token.
    pub async fn peer(&self, i: usize) -> PeerClient<InterceptedService<Channel, AttachToken>> {
        let token = PeerToken::new(TOKEN).unwrap();
        PeerClient::with_interceptor(
            connect(&self.replicas[i].peer_addr()).await,
            AttachToken(token),
        )
    }

    /// A Cluster client on replica `i`'s peer listener, with the token.
    pub async fn admin(&self, i: usize) -> Admin {
        let token = PeerToken::new(TOKEN).unwrap();
        ClusterClient::with_interceptor(
            connect(&self.replicas[i].peer_addr()).await,
            AttachToken(token),
        )
    }

    pub async fn resources(&self, i: usize) -> ResourcesClient<Channel> {
        ResourcesClient::new(self.channel(i).await)
    }

    pub async fn sync(&self, i: usize) -> SyncClient<Channel> {
        SyncClient::new(self.channel(i).await)
    }

    pub async fn status(&self, i: usize) -> Option<ReplicaStatus> {
        let mut c = self.admin(i).await;
        c.replica(ReplicaStatusRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until every live replica agrees on one leader; returns its index.
    pub async fn wait_for_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for i in self.alive().collect::<Vec<_>>() {
                leaders.push(self.status(i).await.map_or(0, |s| s.leader_id));
            }
            if let Some(&l) = leaders.first()
                && l != 0
                && leaders.iter().all(|x| *x == l)
                && let Some(i) = self
                    .replicas
                    .iter()
                    .position(|r| r.id == l && r.child.is_some())
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live replica has applied `revision`, then returns
    /// their statuses.
    pub async fn wait_applied(&self, revision: u64, within: Duration) -> Vec<ReplicaStatus> {
        let deadline = Instant::now() + within;
        loop {
            let mut all = Vec::new();
            for i in self.alive().collect::<Vec<_>>() {
                if let Some(s) = self.status(i).await {
                    all.push(s);
                }
            }
            if all.len() == self.alive().count()
                && all.iter().all(|s| s.applied_revision >= revision)
            {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "revision {revision} not applied everywhere: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` on replica `i`'s metrics listener: status code and body.
    pub async fn http(&self, i: usize, path: &str) -> Option<(u16, String)> {
        manul_listen::testing::http_get(self.replicas[i].metrics_port, path).await
    }

    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        manul_listen::testing::metric(self.replicas[i].metrics_port, name).await
    }

    /// A line of replica `i`'s `/proc/PID/status` in KiB, such as `VmHWM`
    /// (its peak resident memory) or `VmRSS`.
    pub fn memory_kib(&self, i: usize, field: &str) -> Option<u64> {
        let pid = self.replicas[i].child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time replica `i` has used (user and system), from
    /// `/proc/PID/stat`.
    pub fn cpu_time(&self, i: usize) -> Option<Duration> {
        let pid = self.replicas[i].child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, after_name) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (`after_name` starts at
        // field 3), in ticks of USER_HZ, which is 100 on Linux.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// Lists every resource name on replica `i`.
    pub async fn names(&self, i: usize) -> Vec<String> {
        names(&mut self.resources(i).await).await
    }
}

/// Lists every resource name `api` reads.
pub async fn names(api: &mut ResourcesClient<Channel>) -> Vec<String> {
    let r = api.list(ListRequest::default()).await.unwrap().into_inner();
    r.entries.into_iter().map(|e| e.key.unwrap().name).collect()
}

pub fn set_yaml(name: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: {name}\n  labels:\n    bench: \"true\"\nspec:\n  nets: [10.1.2.0/24]\n"
    )
}

pub fn apply_request(names: &[String]) -> ApplyRequest {
    ApplyRequest {
        items: names
            .iter()
            .map(|n| ApplyItem {
                document: set_yaml(n).into_bytes().into(),
                origin: n.clone(),
                expected_revision: None,
            })
            .collect(),
        deletes: Vec::new(),
        origin: None,
    }
}

/// Applies through replica `i`.
pub async fn apply(
    c: &Cluster,
    i: usize,
    names: &[String],
) -> Result<ApplyResponse, tonic::Status> {
    let mut r = c.resources(i).await;
    r.apply(apply_request(names)).await.map(|r| r.into_inner())
}

/// A GlobalNetworkSet of 200 addresses: about 4 KiB per delta.
pub fn big_set(k: u64) -> ApplyRequest {
    let nets: Vec<String> = (0..200)
        .map(|i| format!("\"10.{}.{}.{}/32\"", k % 250, i / 250, i % 250))
        .collect();
    let document = format!(
        "{{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"GlobalNetworkSet\",\"metadata\":{{\"name\":\"set-{k}\"}},\"spec\":{{\"nets\":[{}]}}}}",
        nets.join(",")
    );
    ApplyRequest {
        items: vec![ApplyItem {
            document: document.into_bytes().into(),
            origin: format!("set-{k}"),
            expected_revision: None,
        }],
        deletes: Vec::new(),
        origin: None,
    }
}
