//! A threat feed with real packets, on both kernel dataplanes: Typha pulls
//! a `GlobalThreatFeed` from an HTTP server listening on the control
//! plane's loopback (inside the cluster's namespace), a policy denies
//! egress to the feed's label, and once the feed lists a pod's address
//! that pod is unreachable within one period of the change, while an
//! unlisted pod stays reachable; taking the address off the feed lets it
//! through again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec};
use manul_netns::{NetNs, ProbeOutcome};

/// The feed's pull period.
const PERIOD: Duration = Duration::from_secs(3);
/// From a pull to enforcement on the node: Raft, the fan-out, Felix and
/// the kernel, plus probing at 100 ms steps.
const PROPAGATION: Duration = Duration::from_secs(2);
/// The feed server's port on the control plane's loopback.
const FEED_PORT: u16 = 18_080;

fn pod(name: &str, node: usize) -> PodSpec {
    PodSpec {
        namespace: "shop".into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        node,
        tcp_ports: vec![(8080, None)],
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// What the feed serves, and when each pull served what.
#[derive(Debug, Default)]
struct Feed {
    body: String,
    pulls: Vec<(Instant, String)>,
}

/// An HTTP/1.1 server answering every request with the feed's body, on
/// 127.0.0.1 inside `ns`; stops when the flag is set.
fn serve_feed(
    ns: &NetNs,
    feed: Arc<Mutex<Feed>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let listener = ns
        .run(|| TcpListener::bind(("127.0.0.1", FEED_PORT)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let body = {
                let mut feed = feed.lock().unwrap();
                let body = feed.body.clone();
                feed.pulls.push((Instant::now(), body.clone()));
                body
            };
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    })
}

/// Probes until `want` or `within`; how long it took.
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
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn reachable(c: &LocalCluster, from: &str, to: &str) -> bool {
    c.tcp_probe(from, to, 8080, Duration::from_millis(500))
        .unwrap()
        == ProbeOutcome::Connected
}

const FEED: &str = "apiVersion: projectcalico.org/v3
kind: GlobalThreatFeed
metadata: {name: blocklist}
spec:
  content: IPSet
  globalNetworkSet:
    labels: {threat-feed: blocklist}
  pull:
    period: 3s
    http:
      url: http://127.0.0.1:18080/blocklist.txt
";

const DENY_FEED: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-threat-feed}
spec:
  selector: all()
  types: [Egress]
  egress:
  - action: Deny
    destination: {selector: threat-feed == 'blocklist'}
  - action: Allow
";

fn run(dataplane: Dataplane) {
    let name = manul_netns::unique_prefix("tf");
    let mut c = LocalCluster::up(ClusterConfig {
        name,
        nodes: 2,
        typha_replicas: 1,
        dataplane,
        policy_setup_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    })
    .expect("cluster up");
    c.add_pod(pod("client", 0)).unwrap();
    c.add_pod(pod("listed", 1)).unwrap();
    c.add_pod(pod("unlisted", 1)).unwrap();
    let (client, listed, unlisted) = ("shop/client", "shop/listed", "shop/unlisted");
    let listed_ip = c.pod(listed).unwrap().ip;

    let feed = Arc::new(Mutex::new(Feed {
        body: "# nothing listed yet\n".into(),
        pulls: Vec::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let cp = NetNs::open(c.control_plane_netns()).unwrap();
    let server = serve_feed(&cp, feed.clone(), stop.clone());
    c.apply_yaml(FEED).unwrap();
    c.apply_yaml(DENY_FEED).unwrap();
    // The empty feed has been pulled and the policy is in place: both
    // pods are reachable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while feed.lock().unwrap().pulls.is_empty() {
        assert!(Instant::now() < deadline, "the feed was never pulled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(until(&c, client, listed, true, Duration::from_secs(10)).is_some());
    assert!(reachable(&c, client, unlisted));

    // The feed lists the pod: blocked within one period of the change.
    let listed_body = format!("# bad actors\n{listed_ip}\n");
    let changed = {
        let mut f = feed.lock().unwrap();
        f.body = listed_body.clone();
        Instant::now()
    };
    let blocked = until(&c, client, listed, false, PERIOD + PROPAGATION)
        .unwrap_or_else(|| panic!("{dataplane:?}: the listed pod is still reachable"));
    let pulled = feed
        .lock()
        .unwrap()
        .pulls
        .iter()
        .find(|(at, body)| *at >= changed && *body == listed_body)
        .map(|(at, _)| at.duration_since(changed))
        .expect("the change was pulled");
    eprintln!("{dataplane:?}: pulled {pulled:?} and blocked {blocked:?} after the feed changed");
    assert!(pulled <= PERIOD + Duration::from_millis(200), "{pulled:?}");
    assert!(
        reachable(&c, client, unlisted),
        "{dataplane:?}: an unlisted pod was blocked"
    );
    // The other direction is not the policy's business: the listed pod
    // still reaches the client (its egress is to an unlisted address).
    assert!(reachable(&c, listed, client));

    // Off the feed: reachable again within one period.
    feed.lock().unwrap().body = "# all clear\n".into();
    assert!(
        until(&c, client, listed, true, PERIOD + PROPAGATION).is_some(),
        "{dataplane:?}: the pod stayed blocked after leaving the feed"
    );

    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    drop(cp);
    drop(c);
}

#[test]
fn a_threat_feed_blocks_a_listed_pod_within_one_period() {
    if !manul_netns::testing::have_root("this test") {
        return;
    }
    for dataplane in [Dataplane::Iptables, Dataplane::Bpf] {
        run(dataplane);
    }
}
