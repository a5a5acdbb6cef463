//! The README's main job: a two-node local cluster, the pods of the
//! frontend-to-api example, the example policy, a reachability table for
//! port 8080, host protection of `node1`'s `eth0` (the example's
//! HostEndpoint and its policy, with real packets: a failsafe port, a port
//! the policy allows, a port it denies, and pod traffic forwarded through
//! that interface), a short churn with time to first ping, and cleanup.
//! The expectations are the same whatever the dataplane.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec};
use manul_model::resource::{Kind, Resource};

use crate::probe;
use crate::report::{LatencySummary, Sample};

const NS: &str = "production";

fn pod(name: &str, app: &str, node: usize) -> PodSpec {
    PodSpec {
        namespace: NS.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        node,
        tcp_ports: vec![(8080, Some("http".into()))],
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// Runs the main job; `Ok(false)` when the reachability did not match.
pub fn run(
    name: &str,
    dataplane: Dataplane,
    policy_file: &Path,
    churn_pods: usize,
    keep: bool,
    interrupted: &AtomicBool,
) -> Result<bool> {
    let text = std::fs::read_to_string(policy_file)
        .with_context(|| format!("cannot read {}", policy_file.display()))?;
    let loaded = manul_model::load::load(&policy_file.display().to_string(), text.as_bytes())
        .into_result()
        .map_err(|errors| {
            anyhow::anyhow!(
                "{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
    let (policies, skipped): (Vec<Resource>, Vec<Resource>) = loaded
        .into_iter()
        .map(|l| l.resource)
        .partition(|r| match r {
            Resource::HostEndpoint(h) => is_cluster_node(&h.spec.node, 2),
            _ => matches!(
                r.kind(),
                Kind::NetworkPolicy | Kind::GlobalNetworkPolicy | Kind::K8sNetworkPolicy
            ),
        });
    let host_endpoints: Vec<(String, String, String)> = policies
        .iter()
        .filter_map(|r| match r {
            Resource::HostEndpoint(h) => Some((
                h.name().to_string(),
                h.spec.node.clone(),
                h.spec.interface_name.clone(),
            )),
            _ => None,
        })
        .collect();

    println!(
        "== starting a 2-node local cluster on the {} dataplane",
        dataplane.as_str()
    );
    let started = Instant::now();
    let mut c = LocalCluster::up(ClusterConfig {
        name: name.into(),
        nodes: 2,
        typha_replicas: 1,
        dataplane,
        // As in the scale test: the CNI plugin does not wait for Felix, so
        // the time to first ping includes programming the new pod.
        policy_setup_timeout: Duration::ZERO,
        ..ClusterConfig::default()
    })?;
    println!(
        "   up in {:.1} s: Typha at {}, nodes {}",
        started.elapsed().as_secs_f64(),
        c.typha_addresses().join(","),
        c.nodes()
            .iter()
            .map(|n| format!("{} ({})", n.name, n.ip))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for spec in [
        pod("frontend", "frontend", 0),
        pod("api", "api", 1),
        pod("other", "other", 0),
        client(),
    ] {
        let p = c.add_pod(spec)?;
        println!(
            "   pod {}/{} on node{} at {}",
            p.spec.namespace,
            p.spec.name,
            p.spec.node + 1,
            p.ip
        );
    }
    for r in &skipped {
        println!(
            "   (not applied: {} {} — it is not a policy or a host endpoint of a node of the local cluster)",
            r.kind().name(),
            r.key().name
        );
    }
    // Host processes of the protected nodes: a failsafe port, a port the
    // example's host policy allows and one it does not.
    let mut guarded = Vec::new();
    let mut listening = std::collections::BTreeSet::new();
    for (name, node, iface) in &host_endpoints {
        let index = node_index(node).unwrap_or(0);
        if listening.insert(index) {
            for port in HOST_PORTS.iter().map(|(p, _, _)| *p) {
                c.host_listen(index, port)?;
            }
        }
        let ip = c.nodes()[index].host_ip;
        let before = c
            .underlay_tcp_probe(
                SocketAddr::new(IpAddr::V4(ip), DENIED_HOST_PORT),
                Duration::from_millis(300),
            )?
            .reached();
        println!(
            "   {node} listens on TCP {} ({iface} at {ip}); before HostEndpoint {name}: TCP {DENIED_HOST_PORT} {}",
            HOST_PORTS
                .iter()
                .map(|(p, _, _)| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if before { "allow" } else { "deny" }
        );
        guarded.push((name.clone(), node.clone(), iface.clone(), ip));
    }
    let names: Vec<String> = policies
        .iter()
        .map(|r| format!("{} {}", r.kind().name(), r.key()))
        .collect();
    c.apply(policies)?;
    println!(
        "== applied {} from {}: {}",
        names.len(),
        policy_file.display(),
        names.join(", ")
    );

    let api = c.pod(&format!("{NS}/api"))?;
    let api_addr = SocketAddr::new(IpAddr::V4(api.ip), 8080);
    let other = manul_netns::NetNs::open(c.pod(&format!("{NS}/other"))?.netns.name())?;
    let t0 = Instant::now();
    match probe::time_to_first_block(&other, api_addr, t0, Duration::from_secs(10)) {
        Some(d) => println!(
            "   enforced on every node within {:.1} ms",
            d.as_secs_f64() * 1e3
        ),
        None => bail!("the policy was not enforced within 10 s"),
    }
    let underlay = manul_netns::NetNs::open(c.control_plane_netns())?;
    for (name, _, _, ip) in &guarded {
        let target = SocketAddr::new(IpAddr::V4(*ip), DENIED_HOST_PORT);
        match probe::time_to_first_block(&underlay, target, t0, Duration::from_secs(10)) {
            Some(d) => println!(
                "   HostEndpoint {name} enforced within {:.1} ms",
                d.as_secs_f64() * 1e3
            ),
            None => bail!("HostEndpoint {name} was not enforced within 10 s"),
        }
    }

    println!("== reachability on TCP port 8080 (rows: from, columns: to)");
    let keys = ["frontend", "api", "other"];
    print!("{:>12}", "");
    for k in keys {
        print!("{k:>10}");
    }
    println!();
    let mut actual = BTreeMap::new();
    for from in keys {
        print!("{from:>12}");
        for to in keys {
            if from == to {
                print!("{:>10}", "-");
                continue;
            }
            let ok = c
                .tcp_probe(
                    &format!("{NS}/{from}"),
                    &format!("{NS}/{to}"),
                    8080,
                    Duration::from_millis(300),
                )?
                .reached();
            actual.insert((from, to), ok);
            print!("{:>10}", if ok { "allow" } else { "deny" });
        }
        println!();
    }
    let expected = [(("frontend", "api"), true), (("other", "api"), false)];
    let mut good = true;
    for ((from, to), want) in expected {
        let got = actual.get(&(from, to)).copied().unwrap_or(!want);
        let mark = if got == want {
            "ok"
        } else {
            good = false;
            "MISMATCH"
        };
        println!(
            "   expected {from} -> {to}: {}, got {} [{mark}]",
            if want { "allow" } else { "deny" },
            if got { "allow" } else { "deny" }
        );
    }

    for (name, node, iface, ip) in &guarded {
        good &= host_protection(&c, name, node, iface, *ip)?;
    }

    println!("== churn: {churn_pods} new frontend pods, time to first ping to api:8080");
    let mut samples = Vec::new();
    for i in 0..churn_pods {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let p = c.add_pod(PodSpec {
            tcp_ports: Vec::new(),
            ..pod(&format!("frontend-{i}"), "frontend", i % 2)
        })?;
        let ns = manul_netns::NetNs::open(p.netns.name())?;
        match probe::time_to_first_success(&ns, api_addr, p.ready_at, Duration::from_secs(10)) {
            Some(d) => samples.push(Sample {
                at_s: 0.0,
                value_ms: d.as_secs_f64() * 1e3,
            }),
            None => {
                good = false;
                println!("   frontend-{i} never reached api");
            }
        }
    }
    let s = LatencySummary::of(&samples);
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    println!(
        "   TTFP p50 {} p99 {} max {} (n={})",
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.count
    );

    if keep {
        println!("== the cluster stays up; explore it with:");
        println!(
            "   manulctl --netns {} --server {} {} get networkpolicy",
            c.control_plane_netns(),
            c.typha_addresses()[0],
            c.manulctl_tls_flags()
        );
        println!(
            "   manulctl --netns {} --server {} {} trace --from production/frontend --to production/api --proto tcp --port 8080",
            c.control_plane_netns(),
            c.typha_addresses()[0],
            c.manulctl_tls_flags()
        );
        println!("   logs: {}", c.work_dir().display());
        println!("   press Ctrl-C to remove it");
        while !interrupted.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("== cleaning up");
    drop(c);
    Ok(good)
}

/// The pod that shows traffic through a protected node's interface: on
/// node2, reaching pods on node1.
const CLIENT: &str = "default/client";

fn client() -> PodSpec {
    PodSpec {
        namespace: "default".into(),
        name: "client".into(),
        labels: BTreeMap::from([("app".to_string(), "client".to_string())]),
        node: 1,
        tcp_ports: Vec::new(),
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// The host ports the main job listens on in a protected node, with what
/// the example expects from the node network and why.
const HOST_PORTS: [(u16, bool, &str); 3] = [
    (22, true, "failsafe port"),
    (10250, true, "allowed by the example's host policy"),
    (DENIED_HOST_PORT, false, "no rule allows it"),
];
const DENIED_HOST_PORT: u16 = 8081;

/// `node1` is index 0.
fn node_index(node: &str) -> Option<usize> {
    node.strip_prefix("node")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

fn is_cluster_node(node: &str, nodes: usize) -> bool {
    node_index(node).is_some_and(|i| i < nodes)
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

/// Prints and checks host protection of `node`'s `iface` at `ip`: from the
/// node network to the host's ports, and pod traffic forwarded through
/// the interface (both ways). `Ok(false)` when anything differs.
fn host_protection(
    c: &LocalCluster,
    name: &str,
    node: &str,
    iface: &str,
    ip: std::net::Ipv4Addr,
) -> Result<bool> {
    let mut good = true;
    let mut check = |what: String, want: bool, got: bool| {
        let mark = if want == got {
            "ok"
        } else {
            good = false;
            "MISMATCH"
        };
        println!(
            "   {what}: expected {}, got {} [{mark}]",
            verdict(want),
            verdict(got)
        );
    };
    println!("== host protection: HostEndpoint {name} ({node} {iface}, {ip})");
    for (port, want, why) in HOST_PORTS {
        let got = c
            .underlay_tcp_probe(
                SocketAddr::new(IpAddr::V4(ip), port),
                Duration::from_millis(300),
            )?
            .reached();
        check(
            format!("node network -> {node} {ip} TCP {port} ({why})"),
            want,
            got,
        );
    }
    // Pod traffic forwarded through the interface: normal host policy does
    // not apply to it (no applyOnForward policy selects the endpoint).
    let through = [
        (CLIENT.to_string(), format!("{NS}/other")),
        (format!("{NS}/frontend"), format!("{NS}/api")),
    ];
    for (from, to) in through {
        let got = c
            .tcp_probe(&from, &to, 8080, Duration::from_millis(300))?
            .reached();
        check(
            format!("pod {from} -> pod {to} TCP 8080, through {node} {iface}"),
            true,
            got,
        );
    }
    Ok(good)
}
