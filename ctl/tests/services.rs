//! `manulctl services` against Felix's real HTTP listener (in this process,
//! on a loopback port), run as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{free_low_port, manulctl, text};
use manul_dataplane_api::{Backend, Balancing, Operation, Service, ServicePort, TrafficPolicy};
use manul_felix::agent::AgentStatus;
use manul_felix::http::{Endpoints, HttpState, serve_with};
use manul_felix::programmed_services::ProgrammedServices;
use prometheus_client::registry::Registry;

/// `MANUL_SERVER` for the helper: `services` talks to Felix only.
const UNUSED: &str = "127.0.0.1:1";

fn backend(ip: &str, local: bool) -> Backend {
    Backend {
        ip: ip.parse().unwrap(),
        port: 8080,
        local,
        ready: true,
    }
}

fn web() -> Service {
    Service {
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec!["10.96.0.20".parse().unwrap()],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: TrafficPolicy::Local,
        internal_traffic: TrafficPolicy::Cluster,
        affinity_timeout_seconds: Some(10800),
        health_check_node_port: None,
        balancing: Balancing::Random,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: 6,
            port: 80,
            node_port: Some(30080),
            backends: vec![backend("10.0.1.2", true), backend("10.0.2.2", false)],
            local_backends: vec![backend("10.0.1.2", true)],
        }],
    }
}

/// Felix's debug listener on a free loopback port, holding `services`.
async fn felix(services: &[Service]) -> String {
    let programmed = ProgrammedServices::new();
    let ops: Vec<Operation> = services
        .iter()
        .cloned()
        .map(Operation::ServiceUpdate)
        .collect();
    programmed.applied(&ops);
    let mut registry = Registry::default();
    programmed.register_metrics(&mut registry);
    let (_tx, status) = tokio::sync::watch::channel(AgentStatus::default());
    let state = HttpState {
        registry: Arc::new(registry),
        status,
        config: None,
        services: Some(programmed),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], free_low_port()));
    let bound = serve_with(addr, Endpoints::ALL, state, None).await.unwrap();
    format!("http://{bound}")
}

#[tokio::test]
async fn services_prints_each_frontend_with_the_backends_it_selects() {
    let mut db = web();
    db.name = "db".into();
    db.ports[0].node_port = None;
    db.ports[0].backends.clear();
    let url = felix(&[web(), db]).await;

    let out = manulctl(UNUSED, &["services", "--felix", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("SERVICE"), "{table}");
    // The cluster IP picks from every backend; the node port under Local
    // from this node's only; a port without backends rejects.
    let row = |svc: &str, fe: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(svc) && l.contains(fe))
            .unwrap_or_else(|| panic!("no {svc} {fe} in\n{table}"))
            .to_string()
    };
    let cluster = row("shop/web", "10.96.0.20:80/TCP");
    assert!(
        cluster.contains("Cluster") && cluster.ends_with("10.0.1.2:8080,10.0.2.2:8080"),
        "{cluster}"
    );
    assert!(cluster.contains("10800s"), "{cluster}");
    let node_port = row("shop/web", "*:30080/TCP");
    assert!(
        node_port.contains("NodePort") && node_port.contains("Local"),
        "{node_port}"
    );
    assert!(node_port.ends_with(" 10.0.1.2:8080"), "{node_port}");
    assert!(row("shop/db", "10.96.0.20:80/TCP").ends_with("none (rejected)"));

    // One Service, as JSON.
    let out = manulctl(
        UNUSED,
        &["services", "--felix", &url, "shop/web", "-o", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["name"], "web");
    assert_eq!(json[0]["frontends"][1]["kind"], "NodePort");
    assert_eq!(json[0]["frontends"][1]["port"], 30080);

    // A Service the node does not have, and a malformed name: bad input.
    let out = manulctl(UNUSED, &["services", "--felix", &url, "shop/absent"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("shop/absent"),
        "{}",
        text(&out.stderr)
    );
    let out = manulctl(UNUSED, &["services", "--felix", &url, "web"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("NAMESPACE/NAME"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_unreachable_felix_or_a_bad_url_is_an_error_naming_it() {
    let url = format!("http://127.0.0.1:{}", free_low_port());
    let out = manulctl(UNUSED, &["services", "--felix", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&url) && err.contains("cannot reach Felix"),
        "{err}"
    );
    let out = manulctl(UNUSED, &["services", "--felix", "felix.local:9091"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("felix.local:9091"),
        "{}",
        text(&out.stderr)
    );
}
