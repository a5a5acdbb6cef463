//! `scale-test run`: a local cluster per dataplane, standing pods and
//! policies, then pod and policy churn while measuring time to first ping,
//! policy-change-to-enforced latency, and that denied pairs stay denied.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use manul_local_cluster::{ClusterConfig, ClusterError, Dataplane, LocalCluster, PodSpec};
use manul_model::resource::{Kind, ResourceKey};
use manul_netns::NetNs;
use serde::Serialize;

use crate::probe;
use crate::report::{DataplaneRun, Sample};
use crate::sampler::Sampler;

/// What a run does.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub name: String,
    pub nodes: usize,
    pub standing_pods: usize,
    pub standing_policies: usize,
    pub pods_per_s: f64,
    pub policy_updates_per_s: f64,
    pub duration_s: f64,
    pub dataplanes: Vec<String>,
    /// Churn pods kept alive at once (older ones are deleted).
    pub live_churn_pods: usize,
}

const NS: &str = "scale";
const PORT: u16 = 8080;
/// A probe that has not succeeded after this long is a failure.
const GIVE_UP: Duration = Duration::from_secs(10);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(name: &str, node: usize, pairs: &[(&str, &str)], listen: bool) -> PodSpec {
    PodSpec {
        namespace: NS.into(),
        name: name.into(),
        labels: labels(pairs),
        node,
        tcp_ports: if listen {
            vec![(PORT, Some("http".into()))]
        } else {
            Vec::new()
        },
        udp_ports: Vec::new(),
        service_account: None,
    }
}

fn policy(name: &str, body: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n{body}---\n"
    )
}

/// A decoy: realistic rules that select standing pods, with sets and
/// ports that change on every update.
fn decoy(j: usize, version: usize) -> String {
    policy(
        &format!("decoy-{j}"),
        &format!(
            "  selector: app == 'standing-{}'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{selector: role == 'r-{j}'}}\n    destination: {{ports: [{}]}}\n  - action: Allow\n    protocol: TCP\n    source: {{nets: [10.{}.{}.0/24]}}\n    destination: {{ports: [8080]}}\n",
            j % 10,
            10_000 + (j + version) % 50_000,
            100 + j % 100,
            version % 256
        ),
    )
}

const ALLOW_TTFP: &str = "  selector: app == 'target'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {selector: role == 'client'}\n    destination: {ports: [8080]}\n";
const OPEN_GUARD: &str = "  selector: app == 'guarded'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {selector: role == 'prober'}\n    destination: {ports: [8080]}\n";
const GUARD: &str = "  selector: app == 'guarded'\n  types: [Ingress]\n";

fn target(c: &LocalCluster, key: &str) -> Result<(SocketAddr, String), ClusterError> {
    let p = c.pod(key)?;
    Ok((
        SocketAddr::new(IpAddr::V4(p.ip), PORT),
        p.netns.name().to_string(),
    ))
}

fn open(name: &str) -> Result<NetNs, ClusterError> {
    NetNs::open(name).map_err(|e| ClusterError::Netns(e.to_string()))
}

/// The guarded pair's state machine: open it (measure allow), close it
/// (measure deny), one step per policy tick.
enum Guard {
    Closed,
    Opening(JoinHandle<Option<Duration>>, f64),
    Open,
    Closing(JoinHandle<Option<Duration>>, f64),
}

/// Runs the whole test on one dataplane.
pub fn run_one(
    cfg: &RunConfig,
    dataplane: Dataplane,
    bar: &ProgressBar,
    interrupted: &AtomicBool,
) -> Result<DataplaneRun, ClusterError> {
    bar.set_message(format!(
        "{}: starting a {}-node cluster",
        dataplane.as_str(),
        cfg.nodes
    ));
    let mut c = LocalCluster::up(ClusterConfig {
        name: cfg.name.clone(),
        nodes: cfg.nodes,
        typha_replicas: 1,
        dataplane,
        policy_setup_timeout: Duration::ZERO,
        ..ClusterConfig::default()
    })?;
    let nodes = cfg.nodes;
    bar.set_message(format!(
        "{}: standing pods and policies",
        dataplane.as_str()
    ));
    for i in 0..nodes {
        c.add_pod(pod(&format!("target-{i}"), i, &[("app", "target")], true))?;
        c.add_pod(pod(&format!("denied-{i}"), i, &[("app", "denied")], false))?;
    }
    c.add_pod(pod("prober", 0, &[("role", "prober")], false))?;
    c.add_pod(pod("guarded", nodes - 1, &[("app", "guarded")], true))?;
    for k in 0..cfg.standing_pods {
        c.add_pod(pod(
            &format!("standing-{k}"),
            k % nodes,
            &[("app", &format!("standing-{}", k % 10))],
            true,
        ))?;
    }
    let decoys = cfg.standing_policies.saturating_sub(2);
    let mut yaml = policy("allow-ttfp", ALLOW_TTFP) + &policy("guard", GUARD);
    for j in 0..decoys {
        yaml.push_str(&decoy(j, 0));
    }
    c.apply_yaml(&yaml)?;

    // The standing policy is enforced before the clock starts.
    let targets: Vec<(SocketAddr, String)> = (0..nodes)
        .map(|i| target(&c, &format!("{NS}/target-{i}")))
        .collect::<Result<_, _>>()?;
    let denied: Vec<String> = (0..nodes)
        .map(|i| {
            c.pod(&format!("{NS}/denied-{i}"))
                .map(|p| p.netns.name().to_string())
        })
        .collect::<Result<_, _>>()?;
    // On every node: each node's Felix applies the policy on its own, so
    // one blocked pair says nothing about the others.
    for (i, d) in denied.iter().enumerate() {
        let ns = open(d)?;
        for (j, (t, _)) in targets.iter().enumerate() {
            if probe::time_to_first_block(&ns, *t, Instant::now(), Duration::from_secs(20))
                .is_none()
            {
                return Err(ClusterError::Invalid(format!(
                    "the standing policy was never enforced: denied-{i} still reaches target-{j} after 20 s"
                )));
            }
        }
    }

    let start = Instant::now();
    let (typhas, felixes) = c.process_ids();
    let mut procs: Vec<(String, u32)> = typhas
        .iter()
        .enumerate()
        .map(|(k, p)| (format!("typha-{}", k + 1), *p))
        .collect();
    procs.extend(
        felixes
            .iter()
            .enumerate()
            .map(|(k, p)| (format!("felix-node{}", k + 1), *p)),
    );
    let sampler = Sampler::start(procs, start, Duration::from_millis(500));

    // Denied pairs must stay denied the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let unexpected = Arc::new(AtomicU64::new(0));
    let allowed_pairs = Arc::new(Mutex::new(Vec::<String>::new()));
    let checker = {
        let (stop, unexpected, allowed_pairs) =
            (stop.clone(), unexpected.clone(), allowed_pairs.clone());
        let pairs: Vec<(String, String, SocketAddr)> = denied
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                targets.iter().enumerate().map(move |(j, (t, _))| {
                    (d.clone(), format!("denied-{i} reached target-{j}"), *t)
                })
            })
            .collect();
        std::thread::spawn(move || {
            let handles: Vec<(NetNs, String, SocketAddr)> = pairs
                .into_iter()
                .filter_map(|(d, what, t)| NetNs::open(&d).ok().map(|n| (n, what, t)))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                for (ns, what, t) in &handles {
                    if probe::connects(ns, *t, Duration::from_millis(50)) {
                        unexpected.fetch_add(1, Ordering::Relaxed);
                        let at = start.elapsed().as_secs_f64();
                        if let Ok(mut seen) = allowed_pairs.lock() {
                            seen.push(format!("unexpected allow: {what} at {at:.3} s"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut result = DataplaneRun::default();
    let (tx, rx) = mpsc::channel::<(f64, Option<Duration>, String)>();
    let mut live: VecDeque<(String, JoinHandle<()>)> = VecDeque::new();
    let prober = open(c.pod(&format!("{NS}/prober"))?.netns.name())?;
    let guarded = target(&c, &format!("{NS}/guarded"))?.0;
    let mut guard = Guard::Closed;
    let duration = Duration::from_secs_f64(cfg.duration_s);
    let pod_every = Duration::from_secs_f64(1.0 / cfg.pods_per_s.max(0.001));
    let policy_every = Duration::from_secs_f64(1.0 / cfg.policy_updates_per_s.max(0.001));
    let (mut next_pod, mut next_policy) = (start, start + policy_every / 2);
    let (mut n, mut version, mut op) = (0usize, 0usize, 0usize);
    let failed = |result: &mut DataplaneRun, msg: String| {
        result.failures += 1;
        if result.failure_messages.len() < 10 {
            result.failure_messages.push(msg);
        }
    };
    while start.elapsed() < duration {
        if interrupted.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            return Err(ClusterError::Interrupted);
        }
        let now = Instant::now();
        if now >= next_pod {
            next_pod += pod_every;
            let name = format!("client-{n}");
            let node = n % nodes;
            let (dst, _) = targets[(n + 1) % nodes];
            n += 1;
            match c.add_pod(pod(&name, node, &[("role", "client")], false)) {
                Ok(p) => {
                    result.pods_created += 1;
                    let (ready, ns_name) = (p.ready_at, p.netns.name().to_string());
                    let at = ready.duration_since(start).as_secs_f64();
                    let tx = tx.clone();
                    let key = p.key();
                    let handle = std::thread::spawn(move || {
                        let ttfp = NetNs::open(&ns_name)
                            .ok()
                            .and_then(|ns| probe::time_to_first_success(&ns, dst, ready, GIVE_UP));
                        let _ = tx.send((at, ttfp, key));
                    });
                    live.push_back((format!("{NS}/{name}"), handle));
                }
                Err(e) => failed(&mut result, format!("creating {name}: {e}")),
            }
            while live.len() > cfg.live_churn_pods
                && live.front().is_some_and(|(_, h)| h.is_finished())
            {
                if let Some((key, h)) = live.pop_front() {
                    let _ = h.join();
                    match c.remove_pod(&key) {
                        Ok(()) => result.pods_deleted += 1,
                        Err(e) => failed(&mut result, format!("deleting {key}: {e}")),
                    }
                }
            }
        }
        if now >= next_policy {
            next_policy += policy_every;
            op += 1;
            if op % 4 == 0 {
                guard = step_guard(&c, guard, &prober, guarded, start, &mut result)?;
            } else {
                version += 1;
                if decoys > 0 {
                    c.apply_yaml(&decoy(version % decoys, version))?;
                    result.policy_updates += 1;
                }
            }
        }
        while let Ok((at, ttfp, key)) = rx.try_recv() {
            match ttfp {
                Some(d) => result.ttfp.push(Sample {
                    at_s: at,
                    value_ms: d.as_secs_f64() * 1e3,
                }),
                None => failed(
                    &mut result,
                    format!("{key} never reached its target in {GIVE_UP:?}"),
                ),
            }
        }
        bar.set_position(
            (start.elapsed().as_secs_f64() / cfg.duration_s * 1000.0).min(1000.0) as u64,
        );
        bar.set_message(format!(
            "{}: {} pods, {} policy updates, {} unexpected allows",
            dataplane.as_str(),
            result.pods_created,
            result.policy_updates,
            unexpected.load(Ordering::Relaxed)
        ));
        let wake = next_pod.min(next_policy);
        let now = Instant::now();
        if wake > now {
            std::thread::sleep((wake - now).min(Duration::from_millis(5)));
        }
    }
    // Let the last probes and the guard finish.
    for (_, h) in live.drain(..) {
        let _ = h.join();
    }
    drop(tx);
    for (at, ttfp, key) in rx.iter() {
        match ttfp {
            Some(d) => result.ttfp.push(Sample {
                at_s: at,
                value_ms: d.as_secs_f64() * 1e3,
            }),
            None => failed(
                &mut result,
                format!("{key} never reached its target in {GIVE_UP:?}"),
            ),
        }
    }
    while !matches!(guard, Guard::Closed | Guard::Open) {
        guard = step_guard(&c, guard, &prober, guarded, start, &mut result)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = checker.join();
    result.unexpected_allows = unexpected.load(Ordering::Relaxed);
    if let Ok(seen) = allowed_pairs.lock() {
        for message in seen.iter().take(10) {
            result.failure_messages.push(message.clone());
        }
    }
    result.duration_s = start.elapsed().as_secs_f64();
    result.resources = sampler.stop();
    result.ttfp.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    bar.set_message(format!("{}: tearing down", dataplane.as_str()));
    drop(c);
    Ok(result)
}

fn step_guard(
    c: &LocalCluster,
    guard: Guard,
    prober: &NetNs,
    guarded: SocketAddr,
    start: Instant,
    result: &mut DataplaneRun,
) -> Result<Guard, ClusterError> {
    let spawn = |block: bool| {
        let ns = prober.name().to_string();
        let t0 = Instant::now();
        let handle = std::thread::spawn(move || {
            let ns = NetNs::open(&ns).ok()?;
            if block {
                probe::time_to_first_block(&ns, guarded, t0, GIVE_UP)
            } else {
                probe::time_to_first_success(&ns, guarded, t0, GIVE_UP)
            }
        });
        (handle, t0.duration_since(start).as_secs_f64())
    };
    let key = ResourceKey {
        kind: Kind::NetworkPolicy,
        namespace: Some(NS.into()),
        name: "open-guard".into(),
    };
    Ok(match guard {
        Guard::Closed => {
            c.apply_yaml(&policy("open-guard", OPEN_GUARD))?;
            result.policy_updates += 1;
            let (h, at) = spawn(false);
            Guard::Opening(h, at)
        }
        Guard::Opening(h, at) if h.is_finished() => {
            record(result, h, at, true);
            Guard::Open
        }
        Guard::Open => {
            c.delete(key)?;
            result.policy_updates += 1;
            let (h, at) = spawn(true);
            Guard::Closing(h, at)
        }
        Guard::Closing(h, at) if h.is_finished() => {
            record(result, h, at, false);
            Guard::Closed
        }
        pending => pending,
    })
}

/// Records a finished enforcement measurement: a new allow (`allow`) or a
/// new deny.
fn record(result: &mut DataplaneRun, h: JoinHandle<Option<Duration>>, at: f64, allow: bool) {
    match h.join().ok().flatten() {
        Some(d) => {
            let sample = Sample {
                at_s: at,
                value_ms: d.as_secs_f64() * 1e3,
            };
            if allow {
                result.policy_allow.push(sample);
            } else {
                result.policy_deny.push(sample);
            }
        }
        None => {
            result.failures += 1;
            let what = if allow { "allow" } else { "deny" };
            if result.failure_messages.len() < 10 {
                result.failure_messages.push(format!(
                    "a new {what} at {at:.1} s was not enforced within {GIVE_UP:?}"
                ));
            }
        }
    }
}

/// A progress bar for one dataplane's run.
pub fn progress_bar(label: &str) -> ProgressBar {
    let bar = ProgressBar::new(1000);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}
