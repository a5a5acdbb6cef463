//! A two-node cluster on the real kernel: pods on different nodes reach
//! each other through routes Felix programs, and a policy is enforced on
//! both nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::FRONTEND_TO_API;
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec};
use manul_netns::ProbeOutcome;

fn root_or_skip() -> bool {
    manul_netns::testing::have_root("this test")
}

fn pod(ns: &str, name: &str, app: &str, node: usize) -> PodSpec {
    PodSpec {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        node,
        tcp_ports: vec![(8080, Some("http".into()))],
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// Probes until `want` or the deadline; returns how long it took.
fn until(c: &LocalCluster, from: &str, to: &str, want: bool, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        let got = c
            .tcp_probe(from, to, 8080, Duration::from_millis(100))
            .unwrap()
            == ProbeOutcome::Connected;
        if got == want {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn two_nodes_route_and_enforce() {
    if !root_or_skip() {
        return;
    }
    let name = manul_netns::unique_prefix("lc");
    let mut c = LocalCluster::up(ClusterConfig {
        name: name.clone(),
        nodes: 2,
        typha_replicas: 1,
        dataplane: Dataplane::Iptables,
        policy_setup_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    })
    .expect("cluster up");
    c.add_pod(pod("production", "frontend", "frontend", 0))
        .unwrap();
    c.add_pod(pod("production", "api", "api", 1)).unwrap();
    c.add_pod(pod("production", "other", "other", 0)).unwrap();
    let fe = "production/frontend";
    let api = "production/api";
    let other = "production/other";
    // No policy: everything is allowed, across nodes too.
    assert!(
        until(&c, fe, api, true, Duration::from_secs(10)).is_some(),
        "frontend cannot reach api"
    );
    assert!(until(&c, other, api, true, Duration::from_secs(5)).is_some());
    c.apply_yaml(FRONTEND_TO_API).unwrap();
    assert!(
        until(&c, other, api, false, Duration::from_secs(5)).is_some(),
        "the policy did not take effect"
    );
    assert!(
        until(&c, fe, api, true, Duration::from_secs(1)).is_some(),
        "frontend lost access"
    );
    let names: Vec<String> = c.pods().map(|p| p.key()).collect();
    assert_eq!(names.len(), 3);
    c.remove_pod(other).unwrap();
    drop(c);
    assert!(
        std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .all(|e| !e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))),
        "namespaces left behind"
    );
}

#[test]
fn three_typha_replicas_serve_the_cluster() {
    if !root_or_skip() {
        return;
    }
    let name = manul_netns::unique_prefix("lr");
    let mut c = LocalCluster::up(ClusterConfig {
        name: name.clone(),
        nodes: 1,
        typha_replicas: 3,
        dataplane: Dataplane::Bpf,
        policy_setup_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    })
    .expect("cluster up");
    assert_eq!(c.typha_addresses().len(), 3);
    c.add_pod(pod("production", "frontend", "frontend", 0))
        .unwrap();
    c.add_pod(pod("production", "api", "api", 0)).unwrap();
    let (fe, api) = ("production/frontend", "production/api");
    assert!(until(&c, fe, api, true, Duration::from_secs(10)).is_some());
    c.apply_yaml(
        FRONTEND_TO_API
            .replace("app == 'frontend'", "app == 'nobody'")
            .as_str(),
    )
    .unwrap();
    assert!(
        until(&c, fe, api, false, Duration::from_secs(10)).is_some(),
        "the policy did not take effect"
    );
    drop(c);
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/manul/{name}-node1")).exists(),
        "pins left behind"
    );
}

/// Probes from the node network until `want` or the deadline.
fn host_until(c: &LocalCluster, dst: SocketAddr, want: bool, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        let got = c
            .underlay_tcp_probe(dst, Duration::from_millis(100))
            .unwrap()
            == ProbeOutcome::Connected;
        if got == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn node1_eth0_is_the_examples_host_endpoint() {
    if !root_or_skip() {
        return;
    }
    let name = manul_netns::unique_prefix("lh");
    let mut c = LocalCluster::up(ClusterConfig {
        name: name.clone(),
        nodes: 1,
        typha_replicas: 1,
        dataplane: Dataplane::Iptables,
        policy_setup_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    })
    .expect("cluster up");
    let ip = c.nodes()[0].host_ip;
    assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 10));
    c.host_listen(0, 22).unwrap();
    c.host_listen(0, 8081).unwrap();
    let (ssh, other) = (SocketAddr::from((ip, 22)), SocketAddr::from((ip, 8081)));
    assert!(host_until(&c, other, true, Duration::from_secs(5)));
    // A host endpoint with no policy: everything to the host is denied but
    // the failsafe ports.
    c.apply_yaml(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0}
spec: {node: node1, interfaceName: eth0, expectedIPs: [10.0.0.10]}
",
    )
    .unwrap();
    assert!(
        host_until(&c, other, false, Duration::from_secs(5)),
        "the host endpoint did not take effect"
    );
    assert!(
        host_until(&c, ssh, true, Duration::from_secs(1)),
        "failsafe"
    );
}
