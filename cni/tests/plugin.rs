//! The real `manul-cni` binary against a real Typha and real namespaces:
//! ADD plumbs the pod and writes its endpoint, CHECK passes, DEL (twice)
//! removes everything; failed ADDs leave nothing behind; ADD waits for
//! Felix's status file when asked. Needs root (fails without it when
//! CI=true). Typha, the client and the plugin all run inside a node
//! namespace the test creates; the root namespace is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{Cleanup, Run, cni, conf, have_root, in_netns, seed, typha, vars};
use ipnet::IpNet;
use manul_client::Client;
use manul_client::ipam::Ipam;
use manul_model::names::workload_interface_name;
use manul_model::{Kind, Resource, ResourceKey};
use manul_netns::{NetNs, ProbeOutcome, link_exists, list_addresses, list_routes, ping};

fn wep_key() -> ResourceKey {
    ResourceKey {
        kind: Kind::WorkloadEndpoint,
        namespace: Some("production".into()),
        name: "api".into(),
    }
}

/// Pod production/api, as `CNI_ARGS` name it.
const API: Option<(&str, &str)> = Some(("production", "api"));

/// Runs the plugin's `command` on container `id` of pod production/api in
/// `netns`, configured with `conf`.
async fn api(command: &str, id: &str, netns: Option<&Path>, conf: &str) -> Run {
    cni(vars(command, id, netns, API), conf.to_string()).await
}

/// A test's node and pod namespaces (removed even on failure) and its
/// scratch directory.
struct Namespaces {
    cleanup: Cleanup,
    node: NetNs,
    pod: NetNs,
    dir: tempfile::TempDir,
}

impl Namespaces {
    /// Creates them for `test`, named after `tag`; none without root.
    fn create(test: &str, tag: &str) -> Option<Namespaces> {
        if !have_root(test) {
            return None;
        }
        let cleanup = Cleanup::new(tag);
        let node = NetNs::create(&cleanup.name("node")).unwrap();
        let pod = NetNs::create(&cleanup.name("pod")).unwrap();
        Some(Namespaces {
            cleanup,
            node,
            pod,
            dir: tempfile::tempdir().unwrap(),
        })
    }
}

/// Nothing of pod production/api is left: no veth, no endpoint, no address.
async fn assert_nothing_left(node: &NetNs, client: &Client, handle: &str) {
    let host_if = workload_interface_name("production", "api");
    assert!(
        !link_exists(node, &host_if).unwrap(),
        "{host_if} is left behind"
    );
    assert!(
        client.get(&wep_key()).await.unwrap().is_none(),
        "the endpoint is left behind"
    );
    let held = Ipam::new(client.clone())
        .addresses_of(handle)
        .await
        .unwrap();
    assert!(held.is_empty(), "{handle} still holds {held:?}");
}

#[test]
fn add_check_del_against_real_namespaces() {
    let Some(Namespaces {
        cleanup,
        node,
        pod,
        dir,
    }) = Namespaces::create("add_check_del_against_real_namespaces", "mc")
    else {
        return;
    };
    in_netns(&node, async {
        let (typha, addr) = typha(&dir.path().join("typha")).await;
        let client = seed(&addr).await;
        let conf = conf(&addr, 0, &dir.path().join("status"));
        let id = "c0ffee01";
        let pod_path = pod.path().to_path_buf();
        let host_if = workload_interface_name("production", "api");

        let add = api("ADD", id, Some(&pod_path), &conf).await;
        assert!(add.ok, "{add:?}");
        let result = add.json();
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(result["interfaces"][0]["name"], host_if.as_str());
        assert_eq!(result["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
        assert_eq!(result["interfaces"][1]["name"], "eth0");
        assert_eq!(
            result["interfaces"][1]["sandbox"],
            pod_path.display().to_string()
        );
        assert_eq!(result["ips"][0]["interface"], 1);
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(result["routes"][0]["gw"], "169.254.1.1");
        let address: IpNet = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(address.to_string(), "10.65.0.1/32");
        let ip = address.addr();

        // The kernel: pod address and routes, host route and proxy ARP.
        assert!(list_addresses(&pod, "eth0").unwrap().contains(&address));
        let pod_routes = list_routes(&pod).unwrap();
        let gateway: IpAddr = "169.254.1.1".parse().unwrap();
        assert!(
            pod_routes
                .iter()
                .any(|r| r.dst.prefix_len() == 0 && r.via == Some(gateway)),
            "{pod_routes:?}"
        );
        assert!(
            pod_routes.iter().any(|r| r.dst == IpNet::from(gateway)
                && r.scope_link
                && r.dev.as_deref() == Some("eth0")),
            "{pod_routes:?}"
        );
        let node_routes = list_routes(&node).unwrap();
        assert!(
            node_routes
                .iter()
                .any(|r| r.dst == address && r.dev.as_deref() == Some(host_if.as_str())),
            "{node_routes:?}"
        );
        assert_eq!(
            node.get_sysctl(&format!("net/ipv4/conf/{host_if}/proxy_arp"))
                .unwrap(),
            "1"
        );

        // A second pod on the node reaches the first through the host.
        let other = NetNs::create(&cleanup.name("pod2")).unwrap();
        client
            .apply(&[common::resource(
                &common::POD.replace("name: api", "name: frontend"),
            )])
            .await
            .unwrap();
        let frontend = Some(("production", "frontend"));
        let add2 = cni(
            vars("ADD", "f00d01", Some(other.path()), frontend),
            conf.clone(),
        )
        .await;
        assert!(add2.ok, "{add2:?}");
        assert_eq!(add2.json()["ips"][0]["address"], "10.65.0.2/32");
        assert_eq!(
            ping(&other, ip, Duration::from_secs(2)).unwrap(),
            ProbeOutcome::Connected
        );
        let del2 = cni(
            vars("DEL", "f00d01", Some(other.path()), frontend),
            conf.clone(),
        )
        .await;
        assert!(del2.ok, "{del2:?}");

        // The datastore: the endpoint and the allocation.
        let (wep, _) = client.get(&wep_key()).await.unwrap().unwrap();
        let Resource::WorkloadEndpoint(wep) = wep else {
            panic!("{wep:?}")
        };
        let labels = wep.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "api");
        assert_eq!(labels["projectcalico.org/namespace"], "production");
        assert_eq!(labels["projectcalico.org/orchestrator"], "k8s");
        assert_eq!(wep.spec.node, "node-1");
        assert_eq!(wep.spec.container_id, id);
        assert_eq!(wep.spec.interface_name, host_if);
        assert_eq!(wep.spec.ip_networks[0].0, address);
        assert_eq!(wep.spec.profiles, vec!["kns.production"]);
        assert_eq!(wep.spec.ports[0].name, "http");
        assert_eq!(
            wep.spec.mac,
            result["interfaces"][1]["mac"].as_str().unwrap()
        );
        let ipam = Ipam::new(client.clone());
        assert_eq!(ipam.addresses_of(id).await.unwrap(), vec![ip]);

        let check = api("CHECK", id, Some(&pod_path), &conf).await;
        assert!(check.ok, "{check:?}");
        assert!(check.stdout.trim().is_empty(), "{check:?}");

        // DEL twice; the second finds nothing and succeeds. The runtime
        // may have lost the netns: DEL needs none.
        for round in 0..2 {
            let del = api("DEL", id, None, &conf).await;
            assert!(del.ok, "DEL {round}: {del:?}");
        }
        assert_nothing_left(&node, &client, id).await;
        assert!(!link_exists(&pod, "eth0").unwrap());

        let check = api("CHECK", id, Some(&pod_path), &conf).await;
        assert!(!check.ok);
        assert_eq!(check.json()["code"], 104, "{check:?}");

        // The released address is handed out again.
        let again = api("ADD", "c0ffee02", Some(&pod_path), &conf).await;
        assert!(again.ok, "{again:?}");
        assert_eq!(again.json()["ips"][0]["address"], "10.65.0.1/32");
        // A DEL without CNI_ARGS finds the pod through the endpoint.
        let del = cni(vars("DEL", "c0ffee02", Some(&pod_path), None), conf.clone()).await;
        assert!(del.ok, "{del:?}");
        assert_nothing_left(&node, &client, "c0ffee02").await;
        typha.shutdown().await;
    });
}

#[test]
fn failed_adds_leave_nothing_behind() {
    // The guard is held to the end: the namespaces are removed on return.
    let Some(Namespaces {
        cleanup: _cleanup,
        node,
        pod,
        dir,
    }) = Namespaces::create("failed_adds_leave_nothing_behind", "mf")
    else {
        return;
    };
    in_netns(&node, async {
        let (typha, addr) = typha(&dir.path().join("typha")).await;
        let client = seed(&addr).await;
        let pod_path = pod.path().to_path_buf();

        // A pod the datastore does not know.
        let conf0 = conf(&addr, 0, &dir.path().join("status"));
        let add = cni(
            vars(
                "ADD",
                "dead01",
                Some(&pod_path),
                Some(("production", "ghost")),
            ),
            conf0.clone(),
        )
        .await;
        assert!(!add.ok, "{add:?}");
        let e = add.json();
        assert_eq!(e["cniVersion"], "1.0.0");
        assert_eq!(e["code"], 100);
        assert!(
            e["msg"].as_str().unwrap().contains("production/ghost"),
            "{e}"
        );
        assert!(
            Ipam::new(client.clone()).blocks().await.unwrap().is_empty(),
            "no block was claimed"
        );
        assert!(!link_exists(&node, &workload_interface_name("production", "ghost")).unwrap());

        // A netns that does not exist.
        let missing = dir.path().join("no-such-netns");
        let add = api("ADD", "dead02", Some(&missing), &conf0).await;
        assert!(!add.ok, "{add:?}");
        assert_eq!(add.json()["code"], 3, "{add:?}");
        assert_nothing_left(&node, &client, "dead02").await;

        // Felix never reports the endpoint: the wait times out and ADD
        // undoes the endpoint, the veth and the address.
        let status = dir.path().join("status");
        let conf_wait = conf(&addr, 300, &status);
        let add = api("ADD", "dead03", Some(&pod_path), &conf_wait).await;
        assert!(!add.ok, "{add:?}");
        assert_eq!(add.json()["code"], 103, "{add:?}");
        assert_nothing_left(&node, &client, "dead03").await;
        assert!(!link_exists(&pod, "eth0").unwrap());

        // A stand-in Felix reports the endpoint once it is written: ADD waits
        // for that and succeeds.
        std::fs::create_dir_all(&status).unwrap();
        let felix = {
            let (client, status) = (client.clone(), status.clone());
            tokio::spawn(async move {
                for _ in 0..2000 {
                    if let Some((_, revision)) = client.get(&wep_key()).await.unwrap() {
                        let report = serde_json::json!({
                            "namespace": "production", "name": "api",
                            "interface": workload_interface_name("production", "api"),
                            "revision": revision,
                        });
                        std::fs::write(status.join("production.api.json"), report.to_string())
                            .unwrap();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                panic!("the endpoint never appeared");
            })
        };
        let conf_wait = conf(&addr, 5000, &status);
        let add = api("ADD", "live04", Some(&pod_path), &conf_wait).await;
        assert!(add.ok, "{add:?}");
        felix.await.unwrap();
        let del = api("DEL", "live04", Some(&pod_path), &conf_wait).await;
        assert!(del.ok, "{del:?}");
        assert_nothing_left(&node, &client, "live04").await;
        typha.shutdown().await;
    });
}
