//! The real `manul-cni` binary in Kubernetes mode, against a minimal API
//! server (pods: list, watch, get, PATCH of `status`) and a Typha watching
//! it, all inside a node namespace the test creates: ADD records the
//! address on the Pod and writes no endpoint itself; the pod watcher writes
//! it from the annotation, without any status update; DEL takes the
//! address off the Pod, the watcher drops the endpoint, the address and
//! the veth are released. Needs root (fails without it when CI=true).
//!
//! It also measures, for both datastores, the time from the start of ADD
//! until the pod's endpoint is in Typha (what Felix programs from; Felix's
//! own part does not depend on the datastore) and prints the figures:
//! `cargo test -p manul-cni --test kubernetes -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cleanup, cni, have_root, in_netns, resource, typha, vars};
use manul_client::Client;
use manul_client::ipam::Ipam;
use manul_model::names::workload_interface_name;
use manul_model::v3::CLUSTER_INFORMATION_NAME;
use manul_model::{Kind, Resource, ResourceKey};
use manul_netns::{NetNs, link_exists};
use manul_typha::kube::driver::{KubeOptions, client, run};
use manul_typha::kube::testing::FakeApi;
use serde_json::json;

fn key(kind: Kind, namespace: Option<&str>, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

fn conf(addr: &str, kubeconfig: Option<&Path>) -> String {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "manul",
        "type": "manul-cni",
        "typha": [addr],
        "nodename": "node-1",
        "log_level": "warn",
    });
    if let Some(k) = kubeconfig {
        c["datastore_type"] = "kubernetes".into();
        c["kubernetes"] = json!({"kubeconfig": k});
    }
    c.to_string()
}

fn pod(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "production", "uid": format!("uid-{name}"), "labels": {"app": "api"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "default",
                 "containers": [{"name": "main", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Pending"},
    })
}

/// Polls until `key` is present (`true`) or absent (`false`) in Typha.
async fn until(client: &Client, key: &ResourceKey, present: bool) -> Option<Resource> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = client.get(key).await.unwrap();
        if got.is_some() == present {
            return got.map(|(r, _)| r);
        }
        assert!(Instant::now() < deadline, "{key}: never {present}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "ADD -> endpoint in Typha, {what}: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms (n={})",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        samples.len()
    );
}

const RUNS: usize = 20;

#[test]
fn kubernetes_mode_add_and_del_through_the_api_server() {
    if !have_root("kubernetes_mode_add_and_del_through_the_api_server") {
        return;
    }
    let cleanup = Cleanup::new("mk");
    let node = NetNs::create(&cleanup.name("node")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    in_netns(&node, async {
        let api = FakeApi::start().await.unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let (typha, addr) = typha(&dir.path().join("typha")).await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(run(
            client(Some(&kubeconfig)).await.unwrap(),
            typha.node.clone(),
            typha.kube_metrics.clone(),
            KubeOptions::default(),
            stopped,
        ));
        let client = Client::connect(&[addr.as_str()]).await.unwrap();
        client.apply(&[resource(common::POOL)]).await.unwrap();
        until(
            &client,
            &key(Kind::ClusterInformation, None, CLUSTER_INFORMATION_NAME),
            true,
        )
        .await;
        let k8s = conf(&addr, Some(&kubeconfig));

        // ADD: the address is on the Pod, the endpoint comes from the watcher.
        api.api.put_pod(pod("api"));
        let pod_ns = NetNs::create(&cleanup.name("pod")).unwrap();
        let id = "c0ffee01";
        let wep = key(Kind::WorkloadEndpoint, Some("production"), "api");
        let add = cni(
            vars("ADD", id, Some(pod_ns.path()), Some(("production", "api"))),
            k8s.clone(),
        )
        .await;
        assert!(add.ok, "{add:?}");
        let annotations =
            api.api.pod("production", "api").unwrap()["metadata"]["annotations"].clone();
        assert_eq!(
            annotations,
            json!({"cni.projectcalico.org/containerID": id,
                   "cni.projectcalico.org/podIP": "10.65.0.1/32",
                   "cni.projectcalico.org/podIPs": "10.65.0.1/32"})
        );
        let patches = api.api.patches();
        assert_eq!(patches.len(), 1, "{patches:?}");
        assert_eq!(
            patches[0].0,
            "/api/v1/namespaces/production/pods/api/status"
        );
        let Some(Resource::WorkloadEndpoint(o)) = until(&client, &wep, true).await else {
            panic!("not an endpoint")
        };
        assert_eq!(o.spec.container_id, id);
        assert_eq!(o.spec.ip_networks[0].to_string(), "10.65.0.1/32");
        assert_eq!(
            o.spec.interface_name,
            workload_interface_name("production", "api")
        );
        // CHECK finds what ADD made, the watcher's endpoint included.
        let check = cni(
            vars(
                "CHECK",
                id,
                Some(pod_ns.path()),
                Some(("production", "api")),
            ),
            k8s.clone(),
        )
        .await;
        assert!(check.ok, "{check:?}");

        // DEL: off the Pod, the endpoint goes, the address and veth too.
        let del = cni(
            vars("DEL", id, Some(pod_ns.path()), Some(("production", "api"))),
            k8s.clone(),
        )
        .await;
        assert!(del.ok, "{del:?}");
        let annotations =
            api.api.pod("production", "api").unwrap()["metadata"]["annotations"].clone();
        assert_eq!(annotations["cni.projectcalico.org/podIP"], "");
        assert_eq!(annotations["cni.projectcalico.org/podIPs"], "");
        // A pod being deleted with its network down has no endpoint.
        let mut deleting = api.api.pod("production", "api").unwrap();
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        api.api.put_pod(deleting);
        until(&client, &wep, false).await;
        assert!(
            Ipam::new(client.clone())
                .addresses_of(id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(!link_exists(&node, &workload_interface_name("production", "api")).unwrap());
        let again = cni(
            vars("DEL", id, Some(pod_ns.path()), Some(("production", "api"))),
            k8s.clone(),
        )
        .await;
        assert!(again.ok, "DEL is idempotent: {again:?}");

        // ADD waiting for Felix: it waits for the watcher's endpoint, then
        // for a report of that endpoint's revision (from a stand-in Felix).
        api.api.put_pod(pod("api"));
        let status = dir.path().join("status");
        std::fs::create_dir_all(&status).unwrap();
        let mut waiting: serde_json::Value = serde_json::from_str(&k8s).unwrap();
        waiting["policy_setup_timeout_ms"] = 5000.into();
        waiting["endpoint_status_dir"] = status.display().to_string().into();
        let felix = {
            let (client, status, wep) = (client.clone(), status.clone(), wep.clone());
            tokio::spawn(async move {
                for _ in 0..5000 {
                    if let Some((_, revision)) = client.get(&wep).await.unwrap() {
                        // Reported late: ADD must still be waiting.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let report = json!({"namespace": "production", "name": "api",
                            "interface": workload_interface_name("production", "api"),
                            "revision": revision});
                        std::fs::write(status.join("production.api.json"), report.to_string())
                            .unwrap();
                        return Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                panic!("the endpoint never appeared");
            })
        };
        let add = cni(
            vars(
                "ADD",
                "w41t",
                Some(pod_ns.path()),
                Some(("production", "api")),
            ),
            waiting.to_string(),
        )
        .await;
        let returned = Instant::now();
        assert!(add.ok, "{add:?}");
        assert!(
            felix.await.unwrap() <= returned,
            "ADD returned before Felix reported"
        );
        let del = cni(
            vars(
                "DEL",
                "w41t",
                Some(pod_ns.path()),
                Some(("production", "api")),
            ),
            k8s.clone(),
        )
        .await;
        assert!(del.ok, "{del:?}");

        // The figures: ADD until the endpoint is in Typha, per datastore.
        let local = conf(&addr, None);
        let (mut kube_path, mut local_path) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            for kubernetes in [true, false] {
                let name = format!("{}{i}", if kubernetes { "k" } else { "l" });
                let ns = NetNs::create(&cleanup.name(&name)).unwrap();
                if kubernetes {
                    api.api.put_pod(pod(&name));
                } else {
                    let text = serde_json::to_string(&pod(&name)).unwrap();
                    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    v["apiVersion"] = "v1".into();
                    v["kind"] = "Pod".into();
                    v.as_object_mut().unwrap().remove("status");
                    client.apply(&[resource(&v.to_string())]).await.unwrap();
                }
                let id = format!("c{name}");
                let wep = key(Kind::WorkloadEndpoint, Some("production"), &name);
                let start = Instant::now();
                let add = cni(
                    vars("ADD", &id, Some(ns.path()), Some(("production", &name))),
                    if kubernetes {
                        k8s.clone()
                    } else {
                        local.clone()
                    },
                )
                .await;
                assert!(add.ok, "{add:?}");
                until(&client, &wep, true).await;
                let took = start.elapsed();
                if kubernetes {
                    kube_path.push(took);
                } else {
                    local_path.push(took);
                }
                let del = cni(
                    vars("DEL", &id, Some(ns.path()), Some(("production", &name))),
                    if kubernetes {
                        k8s.clone()
                    } else {
                        local.clone()
                    },
                )
                .await;
                assert!(del.ok, "{del:?}");
            }
        }
        report("Kubernetes mode (annotation -> pod watcher)", kube_path);
        report("Manul's own datastore (the plugin writes it)", local_path);
        let _ = stop.send(true);
        typha.shutdown().await;
    });
}
