//! Raft membership for a Deployment, with real `typha` processes on
//! loopback against a minimal Kubernetes API server (Pods and Leases): the
//! three replicas of a Deployment form one cluster with one bootstrapper;
//! when the leader's pod is replaced by a new pod (new uid, empty data
//! directory), the next leader takes the Lease, removes the gone member,
//! adds the new pod as a learner that catches up from a snapshot, and
//! promotes it; nothing acknowledged is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kube_api::{FakeApi, PodSpec, write_kubeconfig};
use common::{SERIAL, TOKEN, apply_request, connect, free_port};
use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{ReplicaStatus, ReplicaStatusRequest, StatusRequest};
use manul_typha::kube::membership::node_id;
use manul_typha::peer_auth::{AttachToken, PeerToken};

const NAMESPACE: &str = "manul-system";
const LEASE: &str = "manul-typha-bootstrap";

/// One Typha pod: its API object and its process.
struct Replica {
    pod: PodSpec,
    port: u16,
    metrics_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn id(&self) -> u64 {
        node_id(&self.pod.uid)
    }
}

struct Deployment {
    tmp: tempfile::TempDir,
    api: Arc<FakeApi>,
    kubeconfig: PathBuf,
    replicas: Vec<Replica>,
    kubelet: tokio::task::JoinHandle<()>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kubelet.abort();
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// GET /readyz on a metrics port: true on 200.
async fn readyz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.starts_with("HTTP/1.1 200")
}

impl Deployment {
    async fn new() -> Deployment {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("peer-token"), TOKEN).unwrap();
        let port = free_port();
        let api = FakeApi::start(NAMESPACE, port).await;
        let kubeconfig = tmp.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, port);
        Deployment {
            tmp,
            api,
            kubeconfig,
            replicas: Vec::new(),
            kubelet: tokio::spawn(async {}),
        }
    }

    /// Creates the pod `name` in the API, then starts its process.
    fn create_pod(&mut self, name: &str, uid: &str) -> usize {
        let pod = PodSpec {
            name: name.into(),
            uid: uid.into(),
            ip: "127.0.0.1".into(),
            peer_port: free_port(),
        };
        self.api.add_pod(&pod);
        self.replicas.push(Replica {
            dir: self.tmp.path().join(name),
            pod,
            port: free_port(),
            metrics_port: free_port(),
            child: None,
        });
        let i = self.replicas.len() - 1;
        self.spawn(i);
        i
    }

    /// Starts (or restarts, as the kubelet restarts a container: same pod,
    /// same data directory) replica `i`'s process.
    fn spawn(&mut self, i: usize) {
        let r = &self.replicas[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_typha"));
        cmd.args(["--listen", &format!("127.0.0.1:{}", r.port)])
            .args(["--peer-listen", &format!("127.0.0.1:{}", r.pod.peer_port)])
            .args(["--metrics", &format!("127.0.0.1:{}", r.metrics_port)])
            .arg("--peer-token-file")
            .arg(self.tmp.path().join("peer-token"))
            .arg("--data-dir")
            .arg(&r.dir)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--kubernetes-membership", "--no-kube-watchers"])
            .args(["--pod-name", &r.pod.name, "--pod-namespace", NAMESPACE])
            .args(["--pod-uid", &r.pod.uid, "--pod-ip", "127.0.0.1"])
            .args(["--voters", "3", "--lease-duration-secs", "3"])
            .args(["--snapshot-every", "50", "--shutdown-spread-secs", "0"])
            .env(
                "RUST_LOG",
                std::env::var("TYPHA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        self.replicas[i].child = Some(cmd.spawn().expect("spawn typha"));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Reports each live process's /readyz as its pod's Ready condition,
    /// as the kubelet does.
    fn start_kubelet(&mut self) {
        let api = self.api.clone();
        let pods: Vec<(String, u16)> = self
            .replicas
            .iter()
            .filter(|r| r.child.is_some())
            .map(|r| (r.pod.name.clone(), r.metrics_port))
            .collect();
        self.kubelet.abort();
        self.kubelet = tokio::spawn(async move {
            loop {
                for (name, port) in &pods {
                    api.set_ready(name, readyz(*port).await);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    async fn resources(&self, i: usize) -> ResourcesClient<tonic::transport::Channel> {
        ResourcesClient::new(connect(&format!("127.0.0.1:{}", self.replicas[i].port)).await)
    }

    /// Applies GlobalNetworkSets `names` through replica `i`.
    async fn write(&self, i: usize, names: &[String]) -> Result<(), tonic::Status> {
        let mut r = self.resources(i).await;
        r.apply(apply_request(names)).await.map(|_| ())
    }

    async fn admin(
        &self,
        i: usize,
    ) -> ClusterClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>,
    > {
        let addr = format!("127.0.0.1:{}", self.replicas[i].pod.peer_port);
        ClusterClient::with_interceptor(
            connect(&addr).await,
            AttachToken(PeerToken::new(TOKEN).unwrap()),
        )
    }

    async fn status(&self, i: usize) -> Option<ReplicaStatus> {
        let mut c = self.admin(i).await;
        let s = tokio::time::timeout(
            Duration::from_secs(2),
            c.replica(ReplicaStatusRequest::default()),
        );
        s.await.ok()?.ok().map(|r| r.into_inner())
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].child.is_some())
            .collect()
    }

    /// Waits until every live replica follows one leader whose voters are
    /// exactly the live replicas and which has no learner; returns the
    /// leader's index.
    async fn until_one_cluster(&self, within: Duration) -> usize {
        let want: BTreeSet<u64> = self
            .alive()
            .iter()
            .map(|i| self.replicas[*i].id())
            .collect();
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            let mut leaders = BTreeSet::new();
            for i in self.alive() {
                leaders.insert(self.status(i).await.map_or(0, |s| s.leader_id));
            }
            if let [leader] = leaders.iter().copied().collect::<Vec<_>>()[..]
                && let Some(l) = self
                    .alive()
                    .into_iter()
                    .find(|i| self.replicas[*i].id() == leader)
            {
                let members = self.admin(l).await.status(StatusRequest {}).await;
                if let Ok(m) = members {
                    let m = m.into_inner().members;
                    let voters: BTreeSet<u64> =
                        m.iter().filter(|m| !m.learner).map(|m| m.id).collect();
                    if voters == want && m.iter().all(|m| !m.learner) {
                        return l;
                    }
                    last = format!("members {m:?}");
                }
            } else {
                last = format!("leaders {leaders:?}");
            }
            assert!(
                Instant::now() < deadline,
                "no single cluster of {want:?} within {within:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn until_holder(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.api.lease_holder(LEASE).as_deref() != Some(name) {
            assert!(
                Instant::now() < deadline,
                "the Lease is held by {:?}, not {name}",
                self.api.lease_holder(LEASE)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every live replica has applied `revision` and they all
    /// hold the same state.
    async fn until_same_state(&self, revision: u64, within: Duration) -> Vec<ReplicaStatus> {
        let deadline = Instant::now() + within;
        loop {
            let mut all = Vec::new();
            for i in self.alive() {
                if let Some(s) = self.status(i).await {
                    all.push(s);
                }
            }
            if all.len() == self.alive().len()
                && all.iter().all(|s| s.applied_revision >= revision)
                && all.windows(2).all(|w| w[0].state_hash == w[1].state_hash)
            {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "not the same state at {revision} everywhere: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_forms_one_cluster_and_replaces_a_lost_pod() {
    let _serial = SERIAL.lock().await;
    let mut d = Deployment::new().await;
    for (name, uid) in [
        ("typha-a", "9d7c1e52-0001-4a1b-8c1d-000000000001"),
        ("typha-b", "9d7c1e52-0002-4a1b-8c1d-000000000002"),
        ("typha-c", "9d7c1e52-0003-4a1b-8c1d-000000000003"),
    ] {
        d.create_pod(name, uid);
    }
    d.start_kubelet();

    // One cluster of the three, bootstrapped by the one pod that created
    // the Lease; the leader holds the Lease.
    let leader = d.until_one_cluster(Duration::from_secs(40)).await;
    let creates: Vec<_> = d
        .api
        .lease_writes()
        .into_iter()
        .filter(|(verb, _)| *verb == "create")
        .collect();
    assert_eq!(creates.len(), 1, "one bootstrapper: {creates:?}");
    d.until_holder(
        &d.replicas[leader].pod.name.clone(),
        Duration::from_secs(10),
    )
    .await;

    // Acknowledged writes, enough for a Raft snapshot (every 50 entries).
    let mut acked = Vec::new();
    for k in 0..60 {
        let batch = names(&format!("before-{k}"), 2);
        d.write(leader, &batch)
            .await
            .unwrap_or_else(|e| panic!("write {k}: {e}"));
        acked.extend(batch);
    }

    // A follower's container restarts (same pod, same data): it resumes
    // as the same member, and no membership change is made for it.
    let follower = d.alive().into_iter().find(|i| *i != leader).unwrap();
    let changes_before = d.status(leader).await.unwrap().applied_revision;
    d.kill(follower);
    d.spawn(follower);
    d.until_same_state(changes_before, Duration::from_secs(20))
        .await;
    assert_eq!(d.until_one_cluster(Duration::from_secs(20)).await, leader);

    // The leader's pod is lost with its data; the Deployment creates a new
    // pod (new name, new uid, empty data directory).
    let lost = d.replicas[leader].id();
    d.kill(leader);
    d.api.delete_pod(&d.replicas[leader].pod.name.clone());
    let new = d.create_pod("typha-d", "9d7c1e52-0004-4a1b-8c1d-000000000004");
    d.start_kubelet();

    // A write while the replacement catches up is acknowledged too.
    let deadline = Instant::now() + Duration::from_secs(20);
    let late = names("during", 3);
    loop {
        let mut done = false;
        for i in d.alive() {
            if i != new && d.write(i, &late).await.is_ok() {
                done = true;
                break;
            }
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no replica took a write");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acked.extend(late);

    // The gone member is removed, the new pod joins as a learner, catches
    // up and is promoted: one cluster of the three live pods again.
    let leader = d.until_one_cluster(Duration::from_secs(60)).await;
    assert_ne!(d.replicas[leader].id(), lost);
    d.until_holder(
        &d.replicas[leader].pod.name.clone(),
        Duration::from_secs(10),
    )
    .await;
    let revision = d.status(leader).await.unwrap().applied_revision;
    let statuses = d.until_same_state(revision, Duration::from_secs(20)).await;
    let mut r = d.resources(new).await;
    let listed: BTreeSet<String> = r
        .list(manul_proto::v1::ListRequest {
            kind: "globalnetworkset".into(),
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.key.unwrap().name)
        .collect();
    for name in &acked {
        assert!(listed.contains(name), "acknowledged {name} is missing");
    }
    assert!(
        statuses.iter().all(|s| s.resources == acked.len() as u64),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_added_restarts_and_bootstraps_when_no_cluster_remains() {
    let _serial = SERIAL.lock().await;
    let mut d = Deployment::new().await;
    // A ready Typha pod with no process: to a new pod, a cluster exists.
    let ghost = PodSpec {
        name: "typha-ghost".into(),
        uid: "9d7c1e52-00ff-4a1b-8c1d-0000000000ff".into(),
        ip: "127.0.0.1".into(),
        peer_port: free_port(),
    };
    d.api.add_pod(&ghost);
    d.api.set_ready(&ghost.name, true);
    let a = d.create_pod("typha-a", "9d7c1e52-0001-4a1b-8c1d-0000000000a1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        d.api.lease_writes().is_empty(),
        "it joins instead of bootstrapping"
    );

    // The cluster it waited for is gone: after a Lease duration it stops,
    // so that the kubelet restarts it, and it then bootstraps.
    d.api.delete_pod(&ghost.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = d.replicas[a].child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the stranded joiner did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1));
    d.replicas[a].child = None;
    d.spawn(a);
    d.start_kubelet();
    assert_eq!(d.until_one_cluster(Duration::from_secs(20)).await, a);
    d.until_holder("typha-a", Duration::from_secs(10)).await;
}

#[test]
fn membership_flags_that_cannot_work_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, free_port());
    let kc = kubeconfig.to_str().unwrap();
    let pod = [
        "--pod-name=typha-a",
        "--pod-namespace=manul-system",
        "--pod-uid=u-1",
        "--pod-ip=127.0.0.1",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&["--kubernetes-membership"][..], &pod[..]].concat(),
            "needs --kubernetes or --kubeconfig",
        ),
        (
            [
                &["--kubernetes-membership", "--kubeconfig", kc, "--join"][..],
                &pod[..],
            ]
            .concat(),
            "drop --peers and --join",
        ),
        (
            vec![
                "--kubernetes-membership",
                "--kubeconfig",
                kc,
                "--pod-name=a",
                "--pod-namespace=n",
                "--pod-ip=127.0.0.1",
            ],
            "pod-uid",
        ),
        (
            vec![
                "--kubernetes-membership",
                "--kubeconfig",
                kc,
                "--pod-name=a",
                "--pod-uid=u",
                "--pod-ip=127.0.0.1",
            ],
            "pod-namespace",
        ),
        (
            vec![
                "--kubernetes-membership",
                "--kubeconfig",
                kc,
                "--pod-name=a",
                "--pod-uid=u",
                "--pod-namespace=n",
            ],
            "pod-ip",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_typha"))
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_UID")
            .env_remove("POD_IP")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing written before refusing"
    );
}
