//! Three `typha` processes on loopback with TLS on every listener, for
//! tests of mutual TLS between replicas and of clients admitted by their
//! certificates: the replicas' addresses, a client's channel, and the
//! leader they agree on. Every process is killed when
//! dropped, even on failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_proto::v1::ReplicaStatusRequest;
use manul_proto::v1::cluster_client::ClusterClient;
use manul_tls::connect::Transport;
use tonic::transport::{Channel, Endpoint};

use super::free_port;
use super::tls_typha::tls_server_args;

/// Three replicas that bootstrap together, serving with TLS.
pub struct TlsReplicas {
    /// Each replica's client listener.
    pub client: Vec<String>,
    /// Each replica's peer listener.
    pub peer: Vec<String>,
    /// Each replica's metrics listener.
    pub metrics: Vec<String>,
    children: Vec<Child>,
}

impl Drop for TlsReplicas {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl TlsReplicas {
    /// Starts three replicas with their data in `dir/r1` to `dir/r3`,
    /// serving with the CA, certificate and key in `certs`; `flags` adds
    /// the flags of replica `i` (0 to 2) after the common ones.
    pub fn start(dir: &Path, certs: &Path, flags: impl Fn(usize, &mut Command)) -> TlsReplicas {
        let addrs = || -> Vec<String> {
            (0..3)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect()
        };
        let (client, peer, metrics) = (addrs(), addrs(), addrs());
        let peers = (0..3)
            .map(|i| format!("{}={}", i + 1, peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut replicas = TlsReplicas {
            client,
            peer,
            metrics,
            children: Vec::new(),
        };
        for i in 0..3 {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_typha"));
            cmd.args(["--node-id", &(i + 1).to_string()])
                .args(["--listen", &replicas.client[i]])
                .args(["--peer-listen", &replicas.peer[i]])
                .args(["--metrics", &replicas.metrics[i]])
                .arg("--data-dir")
                .arg(dir.join(format!("r{}", i + 1)))
                .args(["--peers", &peers]);
            tls_server_args(&mut cmd, certs);
            flags(i, &mut cmd);
            let child = cmd
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            replicas.children.push(child);
        }
        replicas
    }
}

/// A channel to `addr` over `t`, given up after 2 s.
pub async fn channel(addr: &str, t: &Transport) -> Result<Channel, tonic::transport::Error> {
    let e = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    t.connect(e).await
}

/// The leader's id once every replica names the same one (asked on each
/// peer listener as an administrator), within 30 s.
pub async fn agreed_leader(peers: &[String], admin: &Transport) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for p in peers {
            let leader = match channel(p, admin).await {
                Ok(ch) => ClusterClient::new(ch)
                    .replica(ReplicaStatusRequest::default())
                    .await
                    .map_or(0, |s| s.into_inner().leader_id),
                Err(_) => 0,
            };
            leaders.push(leader);
        }
        if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
