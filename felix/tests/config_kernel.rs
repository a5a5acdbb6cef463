//! FelixConfiguration on a real node, on both kernel dataplanes: a node
//! namespace with Typha and `felix --netns` inside it, and pods plumbed as
//! Calico plumbs them, with `cali…` host interfaces. The node's own
//! FelixConfiguration says `interfacePrefix: cali` over a global `tap`, so:
//!
//! - a `cali` pod is fail-closed until its WorkloadEndpoint is programmed
//!   (dropped before, allowed after);
//! - a live change (the log level) takes effect in the same run of Felix;
//! - `defaultEndpointToHostAction` Drop (the default) keeps a workload
//!   from its own host, Accept lets it through;
//! - a change that needs a restart restarts Felix in place, and an
//!   unprogrammed `cali` pod stays dropped throughout, also across a switch
//!   between the two kernel dataplanes.
//!
//! Needs root (namespaces, nftables, eBPF); skipped without it unless
//! `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use manul_netns::{NetNs, TcpServer, plumb_pod, tcp_connect, unique_prefix};
use manul_typha::server::{TyphaConfig, start};

fn root() -> bool {
    manul_netns::testing::have_root("this FelixConfiguration kernel test")
}

/// Removes the eBPF pins of a run, also when the test fails.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn doc(kind: &str, name: &str, body: &str) -> String {
    let api = if kind == "Namespace" {
        "v1"
    } else {
        "projectcalico.org/v3"
    };
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n{body}")
}

fn wep(name: &str, iface: &str, ip: Ipv4Addr) -> String {
    doc(
        "WorkloadEndpoint",
        name,
        &format!(
            "  namespace: be\nspec:\n  node: node1\n  interfaceName: {iface}\n  ipNetworks: [{ip}/32]\n  profiles: [kns.be]\n"
        ),
    )
}

fn reached(from: &NetNs, to: SocketAddr) -> bool {
    tcp_connect(from, to, Duration::from_millis(300))
        .unwrap()
        .reached()
}

fn count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// `dataplane` is the `--dataplane` flag; `bpf` whether the node's
/// FelixConfiguration enables eBPF (with `--dataplane kernel` it picks the
/// driver).
fn run(dataplane: &str, bpf: bool) {
    let prefix = unique_prefix("fc");
    let node = NetNs::create(&format!("{prefix}n")).unwrap();
    let pods: Vec<NetNs> = ["a", "b", "c"]
        .iter()
        .map(|p| NetNs::create(&format!("{prefix}{p}")).unwrap())
        .collect();
    let ips: Vec<Ipv4Addr> = (2..5).map(|k| Ipv4Addr::new(10, 65, 0, k)).collect();
    for ((pod, ip), name) in pods.iter().zip(&ips).zip(["a", "b", "c"]) {
        plumb_pod(&node, pod, &format!("cali{prefix}{name}"), "eth0", *ip).unwrap();
    }
    let server = TcpServer::start(&pods[1], SocketAddr::new(IpAddr::V4(ips[1]), 8080)).unwrap();
    // A service of the node itself, for workload-to-host traffic.
    let host_ip = Ipv4Addr::new(10, 64, 0, 1);
    manul_netns::add_address(&node, "lo", format!("{host_ip}/32").parse().unwrap()).unwrap();
    let host_server = TcpServer::start(&node, SocketAddr::new(IpAddr::V4(host_ip), 8081)).unwrap();
    let host_target = host_server.local_addr();
    // A host endpoint: the node's interface hep0 to an outside namespace,
    // with no policy (everything denied but the failsafe ports).
    let outside = NetNs::create(&format!("{prefix}x")).unwrap();
    manul_netns::create_veth(&node, "hep0", &outside, "eth0").unwrap();
    manul_netns::add_address(&node, "hep0", "192.168.77.1/24".parse().unwrap()).unwrap();
    manul_netns::add_address(&outside, "eth0", "192.168.77.2/24".parse().unwrap()).unwrap();
    manul_netns::link_up(&node, "hep0").unwrap();
    manul_netns::link_up(&outside, "eth0").unwrap();
    let hep_ip = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 1));
    let ssh = TcpServer::start(&node, SocketAddr::new(hep_ip, 22)).unwrap();
    let other_port = TcpServer::start(&node, SocketAddr::new(hep_ip, 8082)).unwrap();
    let (ssh_target, other_target) = (ssh.local_addr(), other_port.local_addr());
    let target = server.local_addr();
    let (a, c) = (&pods[0], &pods[2]);
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/manul/{prefix}")));

    // Typha and every HTTP request of the test live in the node namespace:
    // this thread (which `block_on` polls on) and the runtime's workers.
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
    let node_spec = |bpf: bool, extra: &str| {
        doc(
            "FelixConfiguration",
            "node.node1",
            &format!(
                "spec:\n  interfacePrefix: cali\n  bpfEnabled: {bpf}\n  iptablesRefreshInterval: 5s\n  flowLogsFileEnabled: {bpf}\n{extra}"
            ),
        )
    };
    rt.block_on(apply(
        &mut api,
        &[
            doc("Namespace", "be", ""),
            doc(
                "HostEndpoint",
                "node1-hep0",
                "spec:\n  node: node1\n  interfaceName: hep0\n  expectedIPs: [192.168.77.1]\n",
            ),
            doc(
                "FelixConfiguration",
                "default",
                "spec:\n  interfacePrefix: tap\n  logSeverityScreen: Warning\n",
            ),
            node_spec(bpf, ""),
        ],
    ));

    let log = dir.path().join("felix.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_felix"));
    cmd.args(["--netns", node.name(), "--node", "node1"])
        .args(["--typha", &addr.to_string(), "--dataplane", dataplane])
        .args(["--metrics", "127.0.0.1:9091", "--bpf-pin-name", &prefix])
        .env_remove("RUST_LOG")
        .env("FELIX_FLOWLOGSFILEDIRECTORY", dir.path().join("flows"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("felix.err")).unwrap());
    let mut felix = Felix(cmd.spawn().unwrap());
    let ready = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while rt.block_on(get(9091, "/readyz")).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{what}: felix never became ready; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    ready("start");
    let first = rt.block_on(config(9091)).unwrap();
    // The node's resource overrides the global one.
    assert_eq!(
        setting(&first, "interfacePrefix"),
        ("cali".into(), "datastorePerHost".into())
    );
    let run = first["runId"].as_str().unwrap().to_string();
    let driver = if bpf || dataplane == "bpf" {
        "bpf"
    } else {
        "iptables"
    };
    assert_eq!(first["dataplane"], driver);
    assert_eq!(
        setting(&first, "bpfEnabled").1,
        if dataplane == "kernel" {
            "datastorePerHost"
        } else {
            "flag"
        }
    );

    // Fail closed: no endpoint for either pod yet, so nothing passes.
    assert!(
        !reached(a, target),
        "an unprogrammed cali pod was reachable"
    );
    rt.block_on(apply(
        &mut api,
        &[
            wep("a", &format!("cali{prefix}a"), ips[0]),
            wep("b", &format!("cali{prefix}b"), ips[1]),
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reached(a, target) {
        assert!(
            Instant::now() < deadline,
            "programmed pods never reached each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // c has no endpoint: it stays dropped.
    assert!(
        !reached(c, target),
        "an unprogrammed cali pod was reachable"
    );
    // defaultEndpointToHostAction is Drop by default: a's policy allows
    // everything, but not its own host.
    assert!(
        !reached(a, host_target),
        "a workload reached its host under Drop"
    );
    // The host endpoint denies everything but Calico's failsafe ports.
    assert!(
        reached(&outside, ssh_target),
        "failsafe port 22 was not open"
    );
    assert!(
        !reached(&outside, other_target),
        "a host endpoint without policy let 8082 in"
    );

    // Live changes, in the same run: the log level and (eBPF) how often
    // the flow log is written: every 300 s by default, so nothing yet.
    let flows = dir.path().join("flows/flows.log");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&flows, "\"action\""), 0, "flow log written early");
    assert_eq!(count(&log, "DEBUG"), 0);
    rt.block_on(apply(
        &mut api,
        &[node_spec(
            bpf,
            "  logSeverityScreen: Debug\n  flowLogsFlushInterval: 1s\n",
        )],
    ));
    rt.block_on(config_where(9091, "logSeverityScreen becomes Debug", |v| {
        setting(v, "logSeverityScreen") == ("Debug".into(), "datastorePerHost".into())
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&log, "DEBUG") == 0 {
        assert!(Instant::now() < deadline, "no debug lines after the change");
        std::thread::sleep(Duration::from_millis(50));
    }
    if driver == "bpf" {
        let deadline = Instant::now() + Duration::from_secs(15);
        while count(&flows, "\"action\"") == 0 {
            assert!(reached(a, target));
            assert!(
                Instant::now() < deadline,
                "the flow log was not written after flowLogsFlushInterval: 1s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let live = rt.block_on(config(9091)).unwrap();
    assert_eq!(live["runId"], run.as_str(), "a live change restarted Felix");

    // A change that needs a restart: Felix restarts in place; c stays
    // dropped throughout and a and b keep reaching each other.
    let restart_started = Instant::now();
    rt.block_on(apply(
        &mut api,
        &[node_spec(
            bpf,
            "  logSeverityScreen: Debug\n  defaultEndpointToHostAction: Accept\n  failsafeInboundHostPorts: [{protocol: TCP, port: 8082}]\n",
        )],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    loop {
        assert!(
            !reached(c, target),
            "an unprogrammed pod was reachable during the restart"
        );
        probes += 1;
        if let Some(v) = rt.block_on(config(9091))
            && v["runId"] != run.as_str()
            && rt.block_on(get(9091, "/readyz")).map(|r| r.0) == Some(200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "felix never came back");
    }
    assert!(felix.0.try_wait().unwrap().is_none(), "felix exited");
    assert!(count(&log, "configuration changed: restarting Felix") >= 1);
    eprintln!(
        "{dataplane}: ready again {:?} after the change; {probes} probes of the unprogrammed pod meanwhile, none reached",
        restart_started.elapsed()
    );
    assert!(
        reached(a, target),
        "programmed pods lost each other after the restart"
    );
    assert!(!reached(c, target));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reached(a, host_target) {
        assert!(
            Instant::now() < deadline,
            "a workload never reached its host under Accept"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !reached(c, host_target),
        "an unprogrammed pod reached the host"
    );
    // The failsafe ports are now 8082 alone.
    assert!(
        reached(&outside, other_target),
        "the new failsafe port 8082 is closed"
    );
    assert!(
        !reached(&outside, ssh_target),
        "22 stayed open after it left the failsafe ports"
    );

    if dataplane == "kernel" {
        // bpfEnabled flips: Felix restarts on the other dataplane, and once
        // that one is in sync removes what the first one left.
        let before = rt.block_on(config(9091)).unwrap()["runId"].clone();
        rt.block_on(apply(
            &mut api,
            &[node_spec(!bpf, "  logSeverityScreen: Debug\n")],
        ));
        let other = if bpf { "iptables" } else { "bpf" };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                !reached(c, target),
                "an unprogrammed pod was reachable while the dataplane changed"
            );
            if let Some(v) = rt.block_on(config(9091))
                && v["runId"] != before
                && v["dataplane"] == other
                && rt.block_on(get(9091, "/readyz")).map(|r| r.0) == Some(200)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "felix never came back on {other}"
            );
        }
        let table_gone = || {
            !Command::new("nft")
                .args(["list", "table", "inet", "manul"])
                .output()
                .unwrap()
                .status
                .success()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let retired = if bpf { !pins.0.exists() } else { table_gone() };
            if retired {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the {driver} dataplane's state was not removed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            reached(a, target),
            "programmed pods lost each other on {other}"
        );
        assert!(
            !reached(c, target),
            "an unprogrammed pod was reachable on {other}"
        );
    }

    drop(felix);
    rt.block_on(typha.shutdown());
    drop(server);
    drop(host_server);
    drop((ssh, other_port));
    drop(pins);
}

#[test]
fn interface_prefix_and_live_changes_on_iptables() {
    if root() {
        run("iptables", false);
    }
}

#[test]
fn interface_prefix_and_a_switch_from_iptables_to_bpf() {
    if root() {
        run("kernel", false);
    }
}

#[test]
fn interface_prefix_and_live_changes_on_bpf_picked_by_bpf_enabled() {
    if root() {
        run("kernel", true);
    }
}
