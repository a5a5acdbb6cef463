//! The health-check node port of an `externalTrafficPolicy: Local`
//! LoadBalancer Service, on a node namespace each kernel driver
//! programs (nftables, eBPF): the driver wrapped by `HealthCheckedDriver`
//! takes the Services, and an external client on a veth asks the node's
//! address what a load balancer would, through the dataplane's hooks
//! (nftables' node-port maps and filter chains, eBPF's host-interface
//! programs): 200 with the local endpoints counted, 503 once the node has
//! none, nothing once the Service is gone. Needs root; the namespaces (and
//! the eBPF pins) are removed afterwards.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manul_dataplane_api::testutil::{ip, service};
use manul_dataplane_api::{Backend, Driver, Operation, Service, TrafficPolicy};
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::{DriverThread, Factory, NodeContext, privileges};
use manul_dataplane_iptables::{Nft, NftDriver};
use manul_felix::service_health::{HealthCheckedDriver, ServiceHealth};
use manul_netns::{IpNet, NetNs, add_address, create_veth, link_up};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const HEALTH_PORT: u16 = 31500;
const NODE_PORT: u16 = 30500;

/// `shop/web`: a LoadBalancer Service under `Local` with a node port and
/// the health-check port, `local` backends here and one elsewhere.
fn web(local: &[&str]) -> Service {
    let mut s = service("shop", "web");
    s.cluster_ips = vec![ip("10.96.0.50")];
    s.load_balancer_ips = vec![ip("198.51.100.50")];
    s.external_traffic = TrafficPolicy::Local;
    s.health_check_node_port = Some(HEALTH_PORT);
    let here: Vec<Backend> = local
        .iter()
        .map(|a| Backend {
            ip: ip(a),
            port: 8080,
            local: true,
            ready: true,
        })
        .collect();
    let mut all = here.clone();
    all.push(Backend {
        ip: ip("10.65.1.9"),
        port: 8080,
        local: false,
        ready: true,
    });
    s.ports[0].node_port = Some(NODE_PORT);
    s.ports[0].backends = all;
    s.ports[0].local_backends = here;
    s
}

/// GET / on the node's health-check port from `client`: (status,
/// localEndpoints), or None when nothing answers.
fn ask(client: &NetNs) -> Option<(u16, u64)> {
    client
        .run(|| {
            let addr = SocketAddr::from((NODE_IP, HEALTH_PORT));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            let (head, body) = out.split_once("\r\n\r\n")?;
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let body: serde_json::Value = serde_json::from_str(body).ok()?;
            Some((status, body["localEndpoints"].as_u64()?))
        })
        .expect("run in the client namespace")
}

/// `ask` until it gives `want` (a listener opens or closes on the
/// runtime, not at once), at most 3 s; the last answer.
fn settle(client: &NetNs, want: Option<(u16, u64)>) -> Option<(u16, u64)> {
    let mut got = ask(client);
    for _ in 0..30 {
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        got = ask(client);
    }
    got
}

/// The node and client namespaces, `inner`'s driver wrapped with the
/// health checks in the node's, and the checks.
fn check(tag: &str, inner: Arc<Factory>) {
    let prefix = manul_netns::unique_prefix(tag);
    let node = NetNs::create(&format!("{prefix}-node")).expect("node namespace");
    let client = NetNs::create(&format!("{prefix}-ext")).expect("client namespace");
    create_veth(&node, "ext0", &client, "eth0").expect("veth");
    for (ns, ifname, addr) in [(&node, "ext0", NODE_IP), (&client, "eth0", CLIENT_IP)] {
        add_address(ns, ifname, IpNet::new(IpAddr::V4(addr), 24).unwrap()).expect("address");
        link_up(ns, ifname).expect("link up");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let health = ServiceHealth::new(vec![IpAddr::V4(NODE_IP)], rt.handle().clone());
    let h = health.clone();
    let factory: Arc<Factory> = Arc::new(move |ctx: &NodeContext| {
        let driver = inner(ctx)?;
        Ok(Box::new(HealthCheckedDriver::new(driver, h.clone())) as Box<dyn Driver>)
    });
    let driver = DriverThread::start(
        &node,
        NodeContext {
            node: prefix.clone(),
        },
        factory,
    )
    .expect("driver");
    driver
        .apply(vec![
            Operation::ServiceUpdate(web(&["10.65.0.5", "10.65.0.6"])),
            Operation::InSync,
        ])
        .expect("first batch");
    assert_eq!(settle(&client, Some((200, 2))), Some((200, 2)), "{tag}");
    driver
        .apply(vec![Operation::ServiceUpdate(web(&[]))])
        .expect("no local backends");
    assert_eq!(settle(&client, Some((503, 0))), Some((503, 0)), "{tag}");
    driver
        .apply(vec![Operation::ServiceRemove {
            namespace: "shop".into(),
            name: "web".into(),
        }])
        .expect("remove");
    assert_eq!(settle(&client, None), None, "{tag}: still answering");
    assert!(health.ports().is_empty());
    drop(driver);
}

#[test]
fn nft_health_check_node_port_answers_an_external_client() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory: Arc<Factory> = Arc::new(|_ctx: &NodeContext| {
        NftDriver::new(Nft::default())
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    check("hcn", factory);
}

#[test]
fn bpf_health_check_node_port_answers_an_external_client() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let pin_root = PathBuf::from("/sys/fs/bpf/manul-test");
    let nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let (root, seen) = (pin_root.clone(), nodes.clone());
    let factory: Arc<Factory> = Arc::new(move |ctx: &NodeContext| {
        seen.lock().unwrap().push(ctx.node.clone());
        let mut config = BpfConfig::new(&ctx.node);
        config.pin_root = root.clone();
        BpfDriver::new(config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check("hcb", factory)));
    for node in nodes.lock().unwrap().iter() {
        BpfDriver::purge_node(&pin_root, node).expect("remove the test's pins");
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
