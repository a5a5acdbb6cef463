//! A full eBPF service map as a user sees it: a node namespace with Typha
//! and `felix --netns --dataplane bpf` inside it, pods plumbed as Calico
//! plumbs them, and the node's FelixConfiguration giving the frontend map
//! room for 4 entries (`bpfMapSizeNATFrontend: 4`; each ClusterIP Service
//! with one port takes two). Two Services fit and answer; a third does not:
//! Felix says not ready, logs the map and the numbers, the metrics show
//! the map's use and size and count the failures, and the two keep
//! answering. Once one of the two is deleted, Felix converges by itself
//! (no restart): ready again, the third answers.
//!
//! Needs root (namespaces, eBPF); skipped without it unless `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use manul_netns::{NetNs, TcpServer, plumb_pod, tcp_connect, unique_prefix};
use manul_typha::server::{TyphaConfig, start};

fn root() -> bool {
    manul_netns::testing::have_root("this eBPF map size test")
}

/// Removes the eBPF pins of a run, also when the test fails.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn doc(api: &str, kind: &str, name: &str, body: &str) -> String {
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n{body}")
}

fn wep(name: &str, iface: &str, ip: Ipv4Addr) -> String {
    doc(
        "projectcalico.org/v3",
        "WorkloadEndpoint",
        name,
        &format!(
            "  namespace: be\nspec:\n  node: node1\n  interfaceName: {iface}\n  ipNetworks: [{ip}/32]\n  profiles: [kns.be]\n"
        ),
    )
}

fn cluster_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 1, 10 + i)
}

/// Service `s{i}` (port 80 to 8080) and its slice: backend `backend`.
fn service(i: u8, backend: Ipv4Addr) -> [String; 2] {
    let name = format!("s{i}");
    [
        doc(
            "v1",
            "Service",
            &name,
            &format!(
                "  namespace: be\nspec:\n  clusterIP: {}\n  ports: [{{name: web, protocol: TCP, port: 80, targetPort: 8080}}]\n",
                cluster_ip(i)
            ),
        ),
        doc(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            &format!("{name}-1"),
            &format!(
                "  namespace: be\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints: [{{addresses: [{backend}]}}]\nports: [{{name: web, protocol: TCP, port: 8080}}]\n"
            ),
        ),
    ]
}

fn reaches(from: &NetNs, i: u8) -> bool {
    let dst = SocketAddr::new(IpAddr::V4(cluster_ip(i)), 80);
    tcp_connect(from, dst, Duration::from_millis(300))
        .unwrap()
        .reached()
}

/// A sample's value in a metrics text.
fn metric(body: &str, sample: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn a_full_frontend_map_makes_felix_unready_and_it_converges_when_a_service_goes() {
    if !root() {
        return;
    }
    let prefix = unique_prefix("ms");
    let node = NetNs::create(&format!("{prefix}n")).unwrap();
    let pods: Vec<NetNs> = ["a", "b"]
        .iter()
        .map(|p| NetNs::create(&format!("{prefix}{p}")).unwrap())
        .collect();
    let ips = [Ipv4Addr::new(10, 65, 0, 2), Ipv4Addr::new(10, 65, 0, 3)];
    for ((pod, ip), name) in pods.iter().zip(&ips).zip(["a", "b"]) {
        plumb_pod(&node, pod, &format!("cali{prefix}{name}"), "eth0", *ip).unwrap();
    }
    let server = TcpServer::start(&pods[1], SocketAddr::new(IpAddr::V4(ips[1]), 8080)).unwrap();
    let a = &pods[0];
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/manul/{prefix}")));

    node.enter_current_thread().unwrap();
    let node_path = node.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            NetNs::from_path(&node_path)
                .and_then(|ns| ns.enter_current_thread())
                .expect("enter the node namespace");
        })
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:5473".parse().unwrap();
    let data = dir.path().to_path_buf();
    let typha = rt.block_on(async move {
        tokio::spawn(start(TyphaConfig::single(data, addr)))
            .await
            .unwrap()
            .unwrap()
    });
    let mut api = rt.block_on(api_client(&typha, addr));
    let mut docs = vec![
        doc("v1", "Namespace", "be", ""),
        doc(
            "projectcalico.org/v3",
            "FelixConfiguration",
            "node.node1",
            "spec:\n  interfacePrefix: cali\n  bpfEnabled: true\n  bpfMapSizeNATFrontend: 4\n  bpfMapSizeNATBackend: 16\n",
        ),
        wep("a", &format!("cali{prefix}a"), ips[0]),
        wep("b", &format!("cali{prefix}b"), ips[1]),
    ];
    docs.extend(service(0, ips[1]));
    docs.extend(service(1, ips[1]));
    rt.block_on(apply(&mut api, &docs));

    let log = dir.path().join("felix.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_felix"));
    cmd.args(["--netns", node.name(), "--node", "node1"])
        .args(["--typha", &addr.to_string(), "--dataplane", "bpf"])
        .args(["--metrics", "127.0.0.1:9091", "--bpf-pin-name", &prefix])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("felix.err")).unwrap());
    let felix = Felix(cmd.spawn().unwrap());
    let readyz = || rt.block_on(get(9091, "/readyz")).map(|r| r.0);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, secs: u64, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what} never happened; log:\n{}",
                logged()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let metrics = || {
        rt.block_on(get(9091, "/metrics"))
            .map(|r| r.1)
            .unwrap_or_default()
    };
    wait("ready with two services", 30, &|| readyz() == Some(200));
    let config = rt.block_on(config(9091)).unwrap();
    assert_eq!(
        setting(&config, "bpfMapSizeNATFrontend"),
        ("4".into(), "datastorePerHost".into())
    );
    wait("both services answer", 20, &|| {
        reaches(a, 0) && reaches(a, 1)
    });
    wait("the map gauges", 20, &|| {
        let m = metrics();
        metric(&m, "felix_bpf_map_capacity{map=\"manul_svc_fe\"}") == Some(4.0)
            && metric(&m, "felix_bpf_map_entries{map=\"manul_svc_fe\"}") == Some(4.0)
            && metric(&m, "felix_bpf_map_capacity{map=\"manul_svc_be\"}") == Some(16.0)
    });

    // A third does not fit: not ready, the log names the map and the
    // numbers, failures are counted, the two keep answering.
    rt.block_on(apply(&mut api, &service(2, ips[1])));
    wait("not ready with a full map", 20, &|| readyz() == Some(503));
    wait("the log names the map", 10, &|| {
        logged().contains("map manul_svc_fe would need 6 entries, but holds at most 4")
    });
    let m = metrics();
    assert!(
        metric(&m, "felix_int_dataplane_failures_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "felix_bpf_map_entries{map=\"manul_svc_fe\"}"),
        Some(4.0),
        "{m}"
    );
    assert!(reaches(a, 0) && reaches(a, 1), "the two stopped answering");
    assert!(!reaches(a, 2), "the service that did not fit answered");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(readyz(), Some(503), "ready while the map is too small");

    // One of the two goes: Felix converges from the whole state by itself.
    let deleted = Instant::now();
    rt.block_on(async {
        api.delete(manul_proto::v1::DeleteRequest {
            keys: vec![manul_proto::v1::ResourceKey {
                kind: "service".into(),
                namespace: "be".into(),
                name: "s0".into(),
            }],
            expected_revision: None,
            ..Default::default()
        })
        .await
        .unwrap()
    });
    wait("ready again", 40, &|| readyz() == Some(200));
    wait("the third answers", 20, &|| reaches(a, 2));
    eprintln!(
        "{{\"converged_after_delete_ms\":{}}}",
        deleted.elapsed().as_millis()
    );
    assert!(reaches(a, 1));
    assert!(!reaches(a, 0), "the deleted service still answers");
    let runs = logged().matches("eBPF dataplane started").count();
    assert_eq!(runs, 1, "felix restarted");

    drop(felix);
    rt.block_on(typha.shutdown());
    drop(server);
    drop(pins);
}
