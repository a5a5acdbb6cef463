//! The health-check node ports: a null driver wrapped by
//! `HealthCheckedDriver` takes Service operations, and a plain HTTP client
//! asks the listeners on 127.0.0.1 what a load balancer would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use manul_dataplane_api::testutil::{ip, service};
use manul_dataplane_api::{Backend, Driver, NullDriver, Operation, Service};
use manul_felix::service_health::{HealthCheckedDriver, ServiceHealth};

/// Two free ports below 32768 (bound and released; the range is picked by
/// process so parallel runs of this test do not meet, and each call in a
/// process starts past the ports earlier calls handed out, so parallel
/// tests of one process do not take the same pair before either binds).
fn free_ports() -> (u16, u16) {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20 + call * 2;
    let mut found = Vec::new();
    for p in base..base + 2_000 {
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok() {
            found.push(p);
            if found.len() == 2 {
                return (found[0], found[1]);
            }
        }
    }
    panic!("no free ports from {base}");
}

/// GET / on 127.0.0.1:`port`: (status, JSON body), or None when nothing
/// listens.
fn get(port: u16) -> Option<(u16, serde_json::Value)> {
    get_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

fn get_at(addr: SocketAddr) -> Option<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    // A listener being closed may take the connection and drop it.
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    Some((status, serde_json::from_str(body).unwrap()))
}

/// Whether `port` stops answering within 3 s (a closed listener's task
/// ends on the runtime, not at once).
async fn closed(port: u16) -> bool {
    for _ in 0..60 {
        if ask(port).await.is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Asks from a blocking thread (the listeners run on the test's runtime).
async fn ask(port: u16) -> Option<(u16, serde_json::Value)> {
    tokio::task::spawn_blocking(move || get(port))
        .await
        .unwrap()
}

fn lb_service(port: u16, local: &[&str]) -> Service {
    let mut s = service("shop", "web");
    s.health_check_node_port = Some(port);
    let backends: Vec<Backend> = local
        .iter()
        .map(|a| Backend {
            ip: ip(a),
            port: 8080,
            local: true,
            ready: true,
        })
        .collect();
    s.ports[0].backends = backends.clone();
    s.ports[0].local_backends = backends.clone();
    // A second port on the same endpoints: addresses count once.
    let mut other = s.ports[0].clone();
    other.name = "https".into();
    other.port = 443;
    s.ports.push(other);
    s
}

fn expect(got: Option<(u16, serde_json::Value)>, status: u16, local: u64, healthy: bool) {
    let (code, body) = got.expect("a listener");
    assert_eq!(code, status, "{body}");
    assert_eq!(body["service"]["namespace"], "shop");
    assert_eq!(body["service"]["name"], "web");
    assert_eq!(body["localEndpoints"], local, "{body}");
    assert_eq!(body["serviceProxyHealthy"], healthy, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_ports_follow_the_services() {
    let (port, other_port) = free_ports();
    let health = ServiceHealth::new(
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        tokio::runtime::Handle::current(),
    );
    let mut driver = HealthCheckedDriver::new(Box::new(NullDriver::default()), health.clone());
    assert_eq!(driver.name(), "null");

    // Before the first InSync the dataplane is not known to be complete.
    driver
        .apply(&[Operation::ServiceUpdate(lb_service(port, &["10.65.0.5"]))])
        .unwrap();
    expect(ask(port).await, 503, 1, false);
    driver.apply(&[Operation::InSync]).unwrap();
    expect(ask(port).await, 200, 1, true);

    // Two local endpoints on two ports: two.
    driver
        .apply(&[Operation::ServiceUpdate(lb_service(
            port,
            &["10.65.0.5", "10.65.0.6"],
        ))])
        .unwrap();
    expect(ask(port).await, 200, 2, true);

    // No local backend: 503.
    driver
        .apply(&[Operation::ServiceUpdate(lb_service(port, &[]))])
        .unwrap();
    expect(ask(port).await, 503, 0, true);

    // The port moves: the old one closes.
    driver
        .apply(&[Operation::ServiceUpdate(lb_service(
            other_port,
            &["10.65.0.5"],
        ))])
        .unwrap();
    expect(ask(other_port).await, 200, 1, true);
    assert!(closed(port).await, "the old port still answers");
    assert_eq!(
        health.ports().into_values().collect::<Vec<_>>(),
        [other_port]
    );

    // A refused batch (a delta on a set that does not exist): not healthy
    // until a resync's InSync.
    let bad = Operation::IpSetDelta {
        id: "nope".into(),
        added: vec![],
        removed: vec![],
    };
    assert!(driver.apply(&[bad]).is_err());
    expect(ask(other_port).await, 503, 1, false);
    driver.mark_stale();
    driver
        .apply(&[
            Operation::ServiceUpdate(lb_service(other_port, &["10.65.0.5"])),
            Operation::InSync,
        ])
        .unwrap();
    expect(ask(other_port).await, 200, 1, true);

    // A resync that does not send the Service again closes its port.
    driver.mark_stale();
    driver.apply(&[Operation::InSync]).unwrap();
    assert!(closed(other_port).await);

    // Back, then without a health-check port, then back and removed.
    driver
        .apply(&[Operation::ServiceUpdate(lb_service(port, &["10.65.0.5"]))])
        .unwrap();
    expect(ask(port).await, 200, 1, true);
    let mut plain = lb_service(port, &["10.65.0.5"]);
    plain.health_check_node_port = None;
    driver.apply(&[Operation::ServiceUpdate(plain)]).unwrap();
    assert!(closed(port).await);
    driver
        .apply(&[Operation::ServiceUpdate(lb_service(port, &["10.65.0.5"]))])
        .unwrap();
    expect(ask(port).await, 200, 1, true);
    driver
        .apply(&[Operation::ServiceRemove {
            namespace: "shop".into(),
            name: "web".into(),
        }])
        .unwrap();
    assert!(closed(port).await);
    assert!(health.ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_tried_again_with_the_next_batch() {
    let (port, _) = free_ports();
    let squatter = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let health = ServiceHealth::new(
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        tokio::runtime::Handle::current(),
    );
    let mut driver = HealthCheckedDriver::new(Box::new(NullDriver::default()), health.clone());
    driver
        .apply(&[
            Operation::ServiceUpdate(lb_service(port, &["10.65.0.5"])),
            Operation::InSync,
        ])
        .unwrap();
    assert!(health.ports().is_empty(), "the port is someone else's");
    drop(squatter);
    driver.apply(&[]).unwrap();
    expect(ask(port).await, 200, 1, true);
}

/// GET / at `addr` from the runtime itself (the netns test's runtime has
/// one thread): the status line's code.
async fn status_at(addr: SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Felix's wildcard addresses, `0.0.0.0` and `::`, on one port: inside a
/// network namespace of the test's own (the host's addresses are not the
/// test's to listen on). Needs root; skipped without it unless `CI=true`.
#[test]
fn the_ipv4_and_ipv6_wildcards_share_a_port() {
    if !manul_netns::testing::have_root("the health-check wildcard test") {
        return;
    }
    let ns = manul_netns::NetNs::create(&manul_netns::unique_prefix("hc")).unwrap();
    let port = 21_000;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.enter_current_thread().unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let health = ServiceHealth::new(
                        vec![
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                        ],
                        tokio::runtime::Handle::current(),
                    );
                    let mut driver =
                        HealthCheckedDriver::new(Box::new(NullDriver::default()), health.clone());
                    driver
                        .apply(&[
                            Operation::ServiceUpdate(lb_service(port, &["10.65.0.5"])),
                            Operation::InSync,
                        ])
                        .unwrap();
                    assert_eq!(health.ports().into_values().collect::<Vec<_>>(), [port]);
                    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                    assert_eq!(status_at(v4).await, 200);
                    assert_eq!(status_at(v6).await, 200);
                });
            })
            .join()
            .unwrap();
    });
}
