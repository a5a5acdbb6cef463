//! IPAM in Kubernetes mode survives losing every Typha replica: pods get
//! addresses (recorded on the Pods as the plugin records them, or only in
//! their status), every replica's data is wiped, a new Typha lists the
//! pods from a minimal API server on loopback, and the next allocations
//! hand out none of the addresses the pods hold. Until that list is in,
//! allocation is refused. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use manul_client::Client;
use manul_client::ipam::plan::Holder;
use manul_client::ipam::{AllocationRequest, Ipam, IpamConfig, IpamError};
use manul_cni::pod_api::PodApi;
use manul_model::v3::CLUSTER_INFORMATION_NAME;
use manul_model::{Kind, Resource, ResourceKey};
use manul_typha::kube::driver::{KubeOptions, client, run};
use manul_typha::kube::testing::{FakeApi, RunningApi};
use manul_typha::server::{Running, start_single_loopback};
use serde_json::json;
use tokio::sync::watch;

const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default
spec:
  cidr: 10.65.0.0/24
  blockSize: 26
";

fn pool() -> Resource {
    let out = manul_model::load("pool", POOL.as_bytes());
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    out.resources.into_iter().next().unwrap().resource
}

/// A Typha replica that watches the API server.
struct Replica {
    running: Running,
    stop: watch::Sender<bool>,
    client: Client,
}

async fn replica(dir: &Path, kubeconfig: Option<&Path>) -> Replica {
    let running = start_single_loopback(dir.to_path_buf(), Duration::from_secs(10))
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    if let Some(kubeconfig) = kubeconfig {
        watch_api(&running, kubeconfig, stopped).await;
    }
    let client = Client::connect(&[running.local_addr.to_string()])
        .await
        .unwrap();
    Replica {
        running,
        stop,
        client,
    }
}

async fn watch_api(running: &Running, kubeconfig: &Path, stopped: watch::Receiver<bool>) {
    let kube = client(Some(kubeconfig)).await.unwrap();
    tokio::spawn(run(
        kube,
        running.node.clone(),
        running.kube_metrics.clone(),
        KubeOptions::default(),
        stopped,
    ));
}

impl Replica {
    async fn wipe(self, dir: &Path) {
        let _ = self.stop.send(true);
        self.running.shutdown().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn ipam(&self) -> Ipam {
        Ipam::with_config(
            self.client.clone(),
            IpamConfig {
                require_ready: true,
                ..IpamConfig::default()
            },
        )
    }

    async fn until_ready(&self) {
        let key = ResourceKey {
            kind: Kind::ClusterInformation,
            namespace: None,
            name: CLUSTER_INFORMATION_NAME.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.client.get(&key).await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "Typha never listed the pods");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn until_endpoints(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self
                .client
                .list(Kind::WorkloadEndpoint, None)
                .await
                .unwrap();
            if got.len() == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} endpoints, want {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn pod(name: &str, node: &str, status_ip: Option<IpAddr>) -> serde_json::Value {
    let status = match status_ip {
        Some(ip) => {
            json!({"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]})
        }
        None => json!({"phase": "Pending"}),
    };
    json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": status,
    })
}

async fn allocate(ipam: &Ipam, name: &str, node: &str) -> Result<IpAddr, IpamError> {
    ipam.allocate(&AllocationRequest {
        node: node.into(),
        holder: Holder {
            handle: format!("container-{name}"),
            namespace: Some("shop".into()),
            pod: Some(name.into()),
        },
        ip_version: 4,
    })
    .await
    .map(|a| a.ip)
}

/// A pod scheduled, allocated for and networked as in Kubernetes mode: the
/// address recorded on the Pod by the plugin's own patch, or (`status`)
/// only by the kubelet's status update.
async fn network(
    api: &RunningApi,
    pods: &PodApi,
    ipam: &Ipam,
    name: &str,
    node: &str,
    status: bool,
) -> IpAddr {
    api.api.put_pod(pod(name, node, None));
    let ip = allocate(ipam, name, node).await.unwrap();
    if status {
        api.api.put_pod(pod(name, node, Some(ip)));
    } else {
        pods.record("shop", name, &[ip], &format!("container-{name}"))
            .await
            .unwrap();
    }
    ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_address_is_handed_out_twice_after_every_replica_lost_its_data() {
    let api = FakeApi::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let pods = PodApi::connect(&kubeconfig).await.unwrap();

    let dir = tmp.path().join("typha");
    let first = replica(&dir, Some(&kubeconfig)).await;
    first.client.apply(&[pool()]).await.unwrap();
    first.until_ready().await;
    let ipam = first.ipam();
    let mut held = BTreeSet::new();
    for (name, node, status) in [
        ("a", "node-1", false),
        ("b", "node-1", true),
        ("c", "node-2", false),
        ("d", "node-1", false),
    ] {
        assert!(held.insert(network(&api, &pods, &ipam, name, node, status).await));
    }
    first.until_endpoints(4).await;
    first.wipe(&dir).await;

    // Every replica is gone; a new one starts empty. Until it has listed
    // the pods, nothing is allocated.
    let second = replica(&dir, None).await;
    assert!(matches!(
        allocate(&second.ipam(), "early", "node-1").await,
        Err(IpamError::NotReady)
    ));
    watch_api(&second.running, &kubeconfig, second.stop.subscribe()).await;
    second.until_ready().await;
    // The pool comes back after the pods (as its own watcher would bring
    // it): the recorded blocks already cover every address in use.
    second.client.apply(&[pool()]).await.unwrap();

    let ipam = second.ipam();
    let mut fresh = BTreeSet::new();
    for (name, node) in [
        ("e", "node-1"),
        ("f", "node-1"),
        ("g", "node-2"),
        ("h", "node-3"),
        ("i", "node-1"),
    ] {
        api.api.put_pod(pod(name, node, None));
        let ip = allocate(&ipam, name, node).await.unwrap();
        assert!(
            !held.contains(&ip),
            "{ip} (for {name}) is held by a live pod: {held:?}"
        );
        assert!(fresh.insert(ip), "{ip} handed out twice");
    }
    // The old pods' addresses are recorded under their containers.
    for name in ["a", "c", "d"] {
        let got = ipam
            .addresses_of(&format!("container-{name}"))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{name}: {got:?}");
    }
    let _ = second.stop.send(true);
    second.running.shutdown().await;
}
