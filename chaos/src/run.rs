//! One chaos run: the cluster and its workload, the recorded API
//! workers, the Sync watchers and the prober in the background; faults,
//! pod and policy churn, convergence and process samples in the main loop;
//! then the end checks and the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use manul_client::Client;
use manul_local_cluster::{LocalCluster, PodSpec, procs};

use crate::ChaosError;
use crate::faults::{self, Active};
use crate::invariants::{self, Final, Invariant};
use crate::kv;
use crate::leadership::{self, Agreed};
use crate::probes::{self, Probes};
use crate::report::*;
use crate::schedule::{self, Planned, SETTLE};
use crate::scrape;
use crate::setup::{self, NAMESPACE, REPLICAS};
use crate::watch::{self, Watched};
use crate::workload::{self, History};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Prefix of the cluster's namespaces.
    pub name: String,
    pub nodes: usize,
    /// "ci", "soak" or "seed".
    pub mode: String,
    pub seed: Option<u64>,
    pub schedule: Vec<Planned>,
    /// How long the run lasts (the schedule ends before).
    pub length: Duration,
    pub out: PathBuf,
    /// The small disk's size.
    pub small_disk_mib: u64,
}

/// How long after a heal every Felix must have the leader's revision, and
/// every allowed pair must connect again.
pub const CONVERGENCE: Duration = Duration::from_secs(2);

/// The budget of the linearizability search per key.
pub const SEARCH_BUDGET: u64 = 2_000_000;

/// The CI schedule and length.
pub fn ci_config(name: &str, out: PathBuf) -> RunConfig {
    let schedule = schedule::ci(Duration::from_secs(5));
    let end = schedule
        .last()
        .map(|p| p.at + p.duration + SETTLE)
        .unwrap_or_default();
    RunConfig {
        name: name.into(),
        nodes: 3,
        mode: "ci".into(),
        seed: None,
        schedule,
        length: end,
        out,
        small_disk_mib: 96,
    }
}

/// A random schedule from `seed` lasting `length`.
pub fn seeded_config(
    name: &str,
    out: PathBuf,
    seed: u64,
    length: Duration,
    mode: &str,
) -> RunConfig {
    RunConfig {
        name: name.into(),
        nodes: 3,
        mode: mode.into(),
        seed: Some(seed),
        schedule: schedule::random(seed, Duration::from_secs(5), length),
        length,
        out,
        small_disk_mib: 128,
    }
}

/// Seconds, CPU (percent of a core), RSS (MiB).
type Sample = (f64, f64, f64);

/// The state of the main loop.
struct Run {
    start: Instant,
    events: Vec<Event>,
    faults: Vec<FaultRecord>,
    /// Samples by process name and pid.
    samples: BTreeMap<(String, u32), Vec<Sample>>,
    /// The cluster's revision at each sample (the highest a watched
    /// stream reached), for Typha's warm-up.
    revisions: Vec<(f64, u64)>,
    /// Each Typha life's Raft snapshot index at each sample (its
    /// `typha_raft_snapshot_index`), for the end of its warm-up.
    snapshots: BTreeMap<(String, u32), Vec<(f64, u64)>>,
    last_cpu: BTreeMap<u32, (f64, f64)>,
}

impl Run {
    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn event(&mut self, what: String) {
        tracing::info!("{what}");
        let t = self.t();
        self.events.push(Event { t, what });
    }

    fn sample(&mut self, c: &LocalCluster, rt: &tokio::runtime::Runtime) {
        let t = self.t();
        // The replicas' snapshot indices, read in the control plane's
        // namespace (their metrics listeners are on its loopback).
        let targets: Vec<(usize, std::net::SocketAddr)> = c
            .metrics_targets()
            .into_iter()
            .filter(|m| m.job == "typha")
            .map(|m| m.address)
            .enumerate()
            .collect();
        let indices = setup::on(rt, async move {
            let reads = targets.into_iter().map(|(k, addr)| async move {
                let v = scrape::read_gauge(
                    addr,
                    "typha_raft_snapshot_index",
                    Duration::from_millis(300),
                )
                .await;
                (k, v)
            });
            futures::future::join_all(reads).await
        })
        .unwrap_or_default();
        for (k, index) in indices {
            if let (Some(pid), Some(index)) = (c.typha_pid(k), index) {
                self.snapshots
                    .entry((format!("typha-{}", k + 1), pid))
                    .or_default()
                    .push((t, index as u64));
            }
        }
        let mut procs_now: Vec<(String, u32)> = (0..REPLICAS)
            .filter_map(|k| Some((format!("typha-{}", k + 1), c.typha_pid(k)?)))
            .collect();
        let (_, felixes) = c.process_ids();
        for (i, pid) in felixes.into_iter().enumerate() {
            procs_now.push((format!("felix-node{}", i + 1), pid));
        }
        for (name, pid) in procs_now {
            let Some((cpu, rss)) = procs::usage(pid) else {
                continue;
            };
            let percent = match self.last_cpu.insert(pid, (t, cpu)) {
                Some((t0, cpu0)) if t > t0 => 100.0 * (cpu - cpu0) / (t - t0),
                _ => 0.0,
            };
            self.samples.entry((name, pid)).or_default().push((
                t,
                percent,
                rss as f64 / (1024.0 * 1024.0),
            ));
        }
    }
}

fn churn_pod(n: u64, nodes: usize) -> PodSpec {
    PodSpec {
        namespace: NAMESPACE.into(),
        name: format!("churn-{n}"),
        labels: BTreeMap::from([("app".to_string(), "churn".to_string())]),
        node: (n as usize) % nodes,
        tcp_ports: Vec::new(),
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// A churn policy: on the servers (one more allow, from a role no pod has)
/// or on the churn pods.
fn churn_policy(n: u64) -> String {
    let (selector, source) = if n.is_multiple_of(2) {
        ("app == 'server'", format!("role == 'extra-{}'", n % 7))
    } else {
        ("app == 'churn'", "role == 'allowed'".to_string())
    };
    format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: churn-{}, namespace: {NAMESPACE}}}\nspec:\n  selector: {selector}\n  order: {}\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{selector: \"{source}\"}}\n    destination: {{ports: [{}]}}\n",
        n % 5,
        100 + n % 50,
        9000 + n % 100
    )
}

/// Runs the chaos test and writes its report; returns the report.
pub fn run(config: &RunConfig) -> Result<Report, ChaosError> {
    let mut c = setup::cluster(&config.name, config.nodes, config.small_disk_mib)?;
    let pairs = setup::workload(&mut c)?;
    let rt = setup::runtime(&c)?;
    let admin = setup::admin_config(&c)?;
    let api_clients = setup::clients(&rt, &c.typha_addresses(), &admin)?;
    let peer_clients = setup::clients(&rt, &c.typha_peer_addresses(), &admin)?;
    let writer = {
        let (addrs, admin) = (c.typha_addresses(), admin.clone());
        setup::on(
            &rt,
            async move { Client::connect_with(&addrs, admin).await },
        )?
        .map_err(|e| ChaosError::Setup(format!("connecting: {e}")))?
    };

    let start = Instant::now();
    let stop_workers = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let stop_probes = Arc::new(AtomicBool::new(false));
    let history = Arc::new(History::default());
    let mut workers = Vec::new();
    for (w, client) in (0..4).map(|w| (w, api_clients[w % REPLICAS].clone())) {
        let seed = config
            .seed
            .unwrap_or(1)
            .wrapping_mul(31)
            .wrapping_add(w as u64);
        workers.push(rt.spawn(workload::worker(
            client,
            history.clone(),
            seed,
            stop_workers.clone(),
        )));
    }
    let watched: Vec<Arc<Watched>> = (0..REPLICAS)
        .map(|_| Arc::new(Watched::default()))
        .collect();
    let mut watchers = Vec::new();
    for (k, w) in watched.iter().enumerate() {
        watchers.push(rt.spawn(watch::follow(
            api_clients[k].clone(),
            format!("chaos-watch-{}", k + 1),
            w.clone(),
            stop_watch.clone(),
        )));
    }
    let probe_log = Arc::new(Probes::default());
    let prober = {
        let (pairs, log, stop) = (pairs.clone(), probe_log.clone(), stop_probes.clone());
        std::thread::spawn(move || probes::run(pairs, start, log, stop))
    };

    let mut run = Run {
        start,
        events: Vec::new(),
        faults: Vec::new(),
        samples: BTreeMap::new(),
        revisions: Vec::new(),
        snapshots: BTreeMap::new(),
        last_cpu: BTreeMap::new(),
    };
    let mut pending: std::collections::VecDeque<Planned> =
        config.schedule.iter().copied().collect();
    let mut active: Option<(Active, usize)> = None;
    // After a heal: the fault's index, the revision to reach, the watcher.
    let mut converging: Option<(usize, u64, Convergence)> = None;
    let mut churn_pods: std::collections::VecDeque<String> = Default::default();
    let (mut pod_n, mut policy_n) = (0u64, 0u64);
    let (mut next_pod, mut next_policy, mut next_sample) = (0.0, 0.0, 0.0);
    let nodes = c.nodes().len();

    while start.elapsed() < config.length {
        let t = run.t();
        // Faults. The next one waits until the last heal's convergence is
        // measured (or its 15 s ran out): injected before, it would cut
        // that measurement short (a main loop held up by churn can find
        // the next fault already due when it heals one).
        if active.is_none()
            && converging.is_none()
            && pending.front().is_some_and(|p| p.at.as_secs_f64() <= t)
            && let Some(p) = pending.pop_front()
        {
            // A leader or follower fault waits until every answering
            // replica agrees on one leader at one term, and aims at that
            // view: right after a heal they can still disagree, and a
            // target picked then can be the wrong replica.
            let (agreed, choice) = if faults::needs_leader(p.kind) {
                let (agreed, choice) =
                    await_leadership(&rt, &peer_clients, p, LEADERSHIP_WAIT, &mut run);
                (agreed, Some(choice))
            } else {
                (None, None)
            };
            match (&choice, agreed) {
                (Some(choice), None) => {
                    run.event(format!(
                        "cannot inject {}: the replicas agreed on no leader within {:.0} s ({})",
                        p.kind.name(),
                        LEADERSHIP_WAIT.as_secs_f64(),
                        choice.not_settled.as_deref().unwrap_or("")
                    ));
                    let t = run.t();
                    run.faults.push(FaultRecord {
                        kind: p.kind.name().into(),
                        target: String::new(),
                        injected: false,
                        choice: Some(choice.clone()),
                        start: t,
                        healed: None,
                        convergence_target: None,
                        felix_convergence: None,
                        allowed_recovery: None,
                    });
                }
                _ => match faults::inject(&mut c, p, agreed) {
                    Ok(a) => {
                        let how = match (&choice, agreed) {
                            (Some(ch), Some(ag)) => format!(
                                " ({}; leader typha-{} at term {}, agreed after {:.2} s)",
                                ch.role.as_deref().unwrap_or(""),
                                ag.leader + 1,
                                ag.term,
                                ch.waited
                            ),
                            _ => String::new(),
                        };
                        run.event(format!("inject {} on {}{how}", p.kind.name(), a.target));
                        run.faults.push(FaultRecord {
                            kind: p.kind.name().into(),
                            target: a.target.clone(),
                            injected: true,
                            choice,
                            start: run.t(),
                            healed: None,
                            convergence_target: None,
                            felix_convergence: None,
                            allowed_recovery: None,
                        });
                        let index = run.faults.len() - 1;
                        active = Some((a, index));
                    }
                    Err(e) => run.event(format!("cannot inject {}: {e}", p.kind.name())),
                },
            }
        }
        if let Some((a, index)) = &active {
            let (a, index) = (a.clone(), *index);
            let start_t = run.faults[index].start;
            if t >= start_t + a.planned.duration.as_secs_f64() {
                if let Err(e) = faults::heal(&mut c, &a) {
                    run.event(format!("cannot heal {}: {e}", a.planned.kind.name()));
                }
                let healed_at = Instant::now();
                let healed = run.t();
                run.faults[index].healed = Some(healed);
                run.event(format!("healed {} on {}", a.planned.kind.name(), a.target));
                // What every Felix must reach: the newest revision a
                // replica applied at the heal (read at once: each replica's
                // own view, asked of all together).
                let statuses = statuses_of(&rt, &peer_clients);
                let target = faults::newest_applied(&statuses).unwrap_or_else(|| {
                    run.event(
                        "no replica answered just after the heal; Felix must reach the watched streams' revision"
                            .into(),
                    );
                    watched
                        .iter()
                        .filter_map(|w| w.check.lock().ok().map(|c| c.revision))
                        .max()
                        .unwrap_or(0)
                });
                run.faults[index].convergence_target = Some(target);
                // Watched on a thread of its own, so that a main loop held
                // up (a churn write waiting for a leader, a pod's CNI
                // plugin) does not delay the measurement.
                match watch_convergence(&c, target, healed_at) {
                    Ok(w) => converging = Some((index, target, w)),
                    Err(e) => run.event(format!("cannot watch Felix convergence: {e}")),
                }
                active = None;
            }
        }
        // Felix convergence after the last heal.
        if converging
            .as_ref()
            .is_some_and(|(_, _, w)| w.thread.is_finished())
            && let Some((index, target, w)) = converging.take()
        {
            match w.thread.join() {
                Ok(Some(s)) => run.faults[index].felix_convergence = Some(s),
                Ok(None) => run.event(format!(
                    "Felix did not reach revision {target} within {:.0} s of the heal",
                    CONVERGENCE_BOUND.as_secs_f64()
                )),
                Err(_) => run.event("the convergence watcher failed".into()),
            }
        }
        // Processes that died on their own are recorded and restarted.
        for k in 0..REPLICAS {
            // A killed replica restarts when its fault heals, one on a full
            // disk once the disk has room again.
            let killed = active.as_ref().is_some_and(|(a, _)| {
                a.undo == faults::Undo::RestartTypha(k)
                    || (a.undo == faults::Undo::FreeDisk && k == setup::SMALL_DISK_REPLICA)
            });
            if !killed && let Some(status) = c.typha_exited(k) {
                run.event(format!(
                    "typha-{} exited on its own ({status}); restarting it",
                    k + 1
                ));
                if let Err(e) = c.restart_typha(k) {
                    run.event(format!("cannot restart typha-{}: {e}", k + 1));
                }
            }
        }
        for i in 0..nodes {
            if let Some(status) = c.felix_exited(i) {
                run.event(format!(
                    "felix-node{} exited on its own ({status}); restarting it",
                    i + 1
                ));
                if let Err(e) = c.restart_felix(i) {
                    run.event(format!("cannot restart felix-node{}: {e}", i + 1));
                }
            }
        }
        // Churn.
        if t >= next_policy {
            next_policy = t + 1.0;
            policy_n += 1;
            let result = if policy_n % 4 == 0 {
                let key = manul_model::resource::ResourceKey {
                    kind: manul_model::resource::Kind::NetworkPolicy,
                    namespace: Some(NAMESPACE.into()),
                    name: format!("churn-{}", policy_n % 5),
                };
                let w = writer.clone();
                setup::on(&rt, async move {
                    tokio::time::timeout(Duration::from_secs(3), w.delete(&key, None)).await
                })
                .ok()
                .and_then(Result::ok)
                .map(|r| r.map(|_| ()))
            } else {
                match manul_local_cluster::cluster::parse(&churn_policy(policy_n)) {
                    Ok(resources) => {
                        let w = writer.clone();
                        setup::on(&rt, async move {
                            tokio::time::timeout(Duration::from_secs(3), w.apply(&resources)).await
                        })
                        .ok()
                        .and_then(Result::ok)
                        .map(|r| r.map(|_| ()))
                    }
                    Err(e) => {
                        run.event(format!("churn policy: {e}"));
                        Some(Ok(()))
                    }
                }
            };
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => run.event(format!("policy churn: {e}")),
                None => run.event("policy churn: no answer within 3 s".into()),
            }
        }
        if t >= next_pod {
            next_pod = t + 3.0;
            if churn_pods.len() < nodes * 2 {
                pod_n += 1;
                match c.add_pod(churn_pod(pod_n, nodes)) {
                    Ok(p) => churn_pods.push_back(p.key()),
                    Err(e) => run.event(format!("pod churn (add): {e}")),
                }
            } else if let Some(key) = churn_pods.pop_front()
                && let Err(e) = c.remove_pod(&key)
            {
                run.event(format!("pod churn (remove {key}): {e}"));
            }
        }
        if t >= next_sample {
            next_sample = t + 1.0;
            run.sample(&c, &rt);
            let revision = watched
                .iter()
                .filter_map(|w| w.check.lock().ok().map(|c| c.revision))
                .max()
                .unwrap_or(0);
            let now = run.t();
            run.revisions.push((now, revision));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some((_, _, w)) = converging.take() {
        w.stop.store(true, Ordering::Relaxed);
    }
    // Heal whatever is still going on.
    if let Some((a, index)) = active.take() {
        let _ = faults::heal(&mut c, &a);
        run.faults[index].healed = Some(run.t());
    }
    finish(
        config,
        c,
        rt,
        run,
        Finish {
            history,
            watched,
            api_clients,
            peer_clients,
            workers,
            watchers,
            stop_workers,
            stop_watch,
            stop_probes,
            prober,
            probe_log,
            pairs,
        },
    )
}

/// How long a leader or follower fault waits for the replicas to agree on
/// who leads before it is given up.
pub const LEADERSHIP_WAIT: Duration = Duration::from_secs(5);

/// How often the replicas' statuses are read while waiting.
const LEADERSHIP_POLL: Duration = Duration::from_millis(100);

/// How long after a heal convergence is watched for.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(15);

/// Polls the replicas' statuses until every answering one agrees on one
/// leader at one term (see `leadership::agreed`) or `bound` runs out;
/// returns the agreed view, if any, and how the choice for `planned` was
/// made.
fn await_leadership(
    rt: &tokio::runtime::Runtime,
    peers: &[Client],
    planned: Planned,
    bound: Duration,
    run: &mut Run,
) -> (Option<Agreed>, TargetChoice) {
    let begin = Instant::now();
    let mut polls = 0;
    loop {
        let statuses = statuses_of(rt, peers);
        polls += 1;
        let view = leadership::agreed(&statuses);
        let waited = begin.elapsed();
        if view.is_ok() || waited >= bound {
            let seen = SeenStatus::of(&statuses);
            return match view {
                Ok(agreed) => {
                    let role = faults::replica_target(planned.kind, planned.node, agreed.leader)
                        .map(|(_, role)| role.to_string());
                    (
                        Some(agreed),
                        TargetChoice {
                            waited: waited.as_secs_f64(),
                            polls,
                            settled: true,
                            not_settled: None,
                            leader: Some(format!("typha-{}", agreed.leader + 1)),
                            term: Some(agreed.term),
                            role,
                            statuses: seen,
                        },
                    )
                }
                Err(why) => {
                    run.event(format!(
                        "leadership not settled after {:.2} s: {why}",
                        waited.as_secs_f64()
                    ));
                    (
                        None,
                        TargetChoice {
                            waited: waited.as_secs_f64(),
                            polls,
                            settled: false,
                            not_settled: Some(why.to_string()),
                            leader: None,
                            term: None,
                            role: None,
                            statuses: seen,
                        },
                    )
                }
            };
        }
        std::thread::sleep(LEADERSHIP_POLL);
    }
}

/// A watcher of Felix convergence after a heal.
struct Convergence {
    /// Seconds from the heal until every Felix first reported the target
    /// revision; `None` when the bound ran out (or the run stopped it).
    thread: std::thread::JoinHandle<Option<f64>>,
    stop: Arc<AtomicBool>,
}

/// How often the convergence watcher reads every Felix's revision.
const CONVERGENCE_POLL: Duration = Duration::from_millis(50);

/// Starts watching every node's Felix (its `/readyz`, from inside the
/// node's namespace) until each reports `target` or more, timed from
/// `healed`, for at most [`CONVERGENCE_BOUND`].
fn watch_convergence(
    c: &LocalCluster,
    target: u64,
    healed: Instant,
) -> Result<Convergence, ChaosError> {
    let namespaces = c
        .nodes()
        .iter()
        .map(|n| manul_netns::NetNs::open(n.netns.name()))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let thread = std::thread::spawn(move || {
        while healed.elapsed() < CONVERGENCE_BOUND && !halt.load(Ordering::Relaxed) {
            if namespaces.iter().all(|ns| {
                manul_local_cluster::cluster::felix_revision_in(ns).is_some_and(|r| r >= target)
            }) {
                return Some(healed.elapsed().as_secs_f64());
            }
            std::thread::sleep(CONVERGENCE_POLL);
        }
        None
    });
    Ok(Convergence { thread, stop })
}

/// Every replica's own status, from the control plane.
fn statuses_of(
    rt: &tokio::runtime::Runtime,
    peers: &[Client],
) -> Vec<Option<manul_proto::v1::ReplicaStatus>> {
    // The administrator's certificate is the credential: no peer token.
    let peers: Vec<manul_client::Cluster> = peers.iter().map(|p| p.cluster(None)).collect();
    setup::on(rt, async move { faults::statuses(&peers).await }).unwrap_or_default()
}

/// What the end of a run needs from its start.
struct Finish {
    history: Arc<History>,
    watched: Vec<Arc<Watched>>,
    api_clients: Vec<Client>,
    peer_clients: Vec<Client>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    stop_workers: Arc<AtomicBool>,
    stop_watch: Arc<AtomicBool>,
    stop_probes: Arc<AtomicBool>,
    prober: std::thread::JoinHandle<()>,
    probe_log: Arc<Probes>,
    pairs: Vec<setup::Pair>,
}

fn finish(
    config: &RunConfig,
    mut c: LocalCluster,
    rt: tokio::runtime::Runtime,
    mut run: Run,
    f: Finish,
) -> Result<Report, ChaosError> {
    f.stop_workers.store(true, Ordering::Relaxed);
    for w in f.workers {
        let _ = rt.block_on(async move { tokio::time::timeout(Duration::from_secs(10), w).await });
    }
    run.event("churn stopped; waiting for the replicas to agree".into());
    let mut invariants = Vec::new();
    // Every replica at one revision with one state hash.
    let deadline = Instant::now() + Duration::from_secs(30);
    let statuses = loop {
        let s = statuses_of(&rt, &f.peer_clients);
        let agreed = s.iter().all(Option::is_some)
            && s.iter()
                .flatten()
                .map(|r| (r.applied_revision, r.state_hash.clone()))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1;
        if agreed || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let replicas: Vec<ReplicaFinal> = statuses
        .iter()
        .enumerate()
        .map(|(k, s)| ReplicaFinal {
            replica: k,
            applied_revision: s.as_ref().map_or(0, |s| s.applied_revision),
            state_hash: s
                .as_ref()
                .map_or_else(String::new, |s| s.state_hash.clone()),
        })
        .collect();
    let hashes: std::collections::BTreeSet<&str> =
        replicas.iter().map(|r| r.state_hash.as_str()).collect();
    let final_revision = replicas
        .iter()
        .map(|r| r.applied_revision)
        .max()
        .unwrap_or(0);
    let mut problems = Vec::new();
    if hashes.len() != 1 || hashes.contains("") {
        problems.push(format!("replicas disagree: {replicas:?}"));
    }
    // Each key's final value through each replica (recorded as gets).
    let mut finals: BTreeMap<String, Vec<(String, Final)>> = BTreeMap::new();
    for (k, client) in f.api_clients.iter().enumerate() {
        let before = f.history.operations().len();
        let (client, history) = (client.clone(), f.history.clone());
        match setup::on(&rt, async move {
            workload::final_reads(&client, &history).await
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("final reads on typha-{}: {e}", k + 1)),
            Err(e) => problems.push(format!("final reads on typha-{}: {e}", k + 1)),
        }
        for r in &f.history.operations()[before..] {
            let fin = match r.output {
                kv::Output::Found { write, revision } => Some((write, revision)),
                _ => None,
            };
            finals
                .entry(r.key.clone())
                .or_default()
                .push((format!("typha-{}", k + 1), fin));
        }
    }
    run.event("final reads done".into());
    let history = f.history.operations();
    problems.extend(invariants::acknowledged_writes(&history, &finals));
    invariants.push(Invariant::new(
        "no acknowledged write lost",
        &problems,
        format!(
            "{} replicas at revision {final_revision} with state hash {}; every key's last acknowledged change on each",
            replicas.len(),
            hashes.iter().next().copied().unwrap_or("")
        ),
    ));
    // Linearizability.
    run.event("replicas compared".into());
    let verdicts = kv::check_all(&history, SEARCH_BUDGET);
    // Each key that failed, with the minimal piece of its history that
    // shows why, written beside the report.
    let bad = kv::write_explained(&history, &verdicts, SEARCH_BUDGET, &config.out)?;
    invariants.push(Invariant::new(
        "the API history is linearizable",
        &bad,
        format!("{} operations on {} keys", history.len(), verdicts.len()),
    ));
    run.event(format!(
        "linearizability checked ({} operations)",
        history.len()
    ));
    let summary = HistorySummary {
        operations: history.len(),
        applies: history
            .iter()
            .filter(|r| matches!(r.input, kv::Input::Apply { .. }))
            .count(),
        gets: history.iter().filter(|r| r.input == kv::Input::Get).count(),
        deletes: history
            .iter()
            .filter(|r| matches!(r.input, kv::Input::Delete { .. }))
            .count(),
        unknown: history
            .iter()
            .filter(|r| r.output == kv::Output::Unknown)
            .count(),
        conflicts: history
            .iter()
            .filter(|r| r.output == kv::Output::Conflict)
            .count(),
        verdicts: verdicts
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect(),
    };
    // The streams reach the final revision and hold the replicas' state.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && f.watched
            .iter()
            .any(|w| w.snapshot().revision < final_revision)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    f.stop_watch.store(true, Ordering::Relaxed);
    for w in f.watchers {
        let _ = rt.block_on(async move { tokio::time::timeout(Duration::from_secs(10), w).await });
    }
    run.event("streams checked".into());
    let mut stream_problems = Vec::new();
    let streams: Vec<StreamSummary> = f
        .watched
        .iter()
        .enumerate()
        .map(|(k, w)| {
            let s = w.snapshot();
            for v in &s.violations {
                stream_problems.push(format!("typha-{}: {v}", k + 1));
            }
            if s.revision != replicas[k].applied_revision
                || s.state_hash() != replicas[k].state_hash
            {
                stream_problems.push(format!(
                    "typha-{}: the stream is at {} with hash {}, the replica at {} with {}",
                    k + 1,
                    s.revision,
                    s.state_hash(),
                    replicas[k].applied_revision,
                    replicas[k].state_hash
                ));
            }
            StreamSummary {
                replica: k,
                connections: w.connections.load(Ordering::Relaxed),
                snapshots: s.snapshots,
                resumes: s.resumes,
                batches: s.batches,
                revision: s.revision,
                state_hash: s.state_hash(),
                violations: s.violations.clone(),
            }
        })
        .collect();
    invariants.push(Invariant::new(
        "Sync streams ordered, without gaps or duplicates; snapshot plus deltas equal the state",
        &stream_problems,
        format!(
            "{} batches, {} resumes, {} snapshots over {} streams",
            streams.iter().map(|s| s.batches).sum::<u64>(),
            streams.iter().map(|s| s.resumes).sum::<u64>(),
            streams.iter().map(|s| s.snapshots).sum::<u64>(),
            streams.len()
        ),
    ));
    // Every Felix at the final revision.
    let deadline = Instant::now() + Duration::from_secs(5);
    let behind = loop {
        let behind: Vec<String> = c
            .nodes()
            .iter()
            .filter_map(|n| {
                let r = c.felix_revision(n).unwrap_or(0);
                (r < final_revision).then(|| format!("{} at {r}", n.name))
            })
            .collect();
        if behind.is_empty() || Instant::now() > deadline {
            break behind;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    f.stop_probes.store(true, Ordering::Relaxed);
    let _ = f.prober.join();
    let results = f.probe_log.all();
    // Convergence after each heal.
    let mut slow = behind
        .into_iter()
        .map(|b| format!("at the end {b}, below {final_revision}"))
        .collect::<Vec<_>>();
    for fault in &mut run.faults {
        let Some(healed) = fault.healed else { continue };
        fault.allowed_recovery = allowed_recovery(&results, healed);
        match fault.felix_convergence {
            Some(s) if s <= CONVERGENCE.as_secs_f64() => {}
            other => slow.push(format!(
                "{} on {}: Felix at the leader's revision after {}",
                fault.kind,
                fault.target,
                other.map_or_else(|| "more than 15 s".into(), |s| format!("{s:.2} s"))
            )),
        }
        if fault
            .allowed_recovery
            .is_none_or(|s| s > CONVERGENCE.as_secs_f64())
        {
            slow.push(format!(
                "{} on {}: allowed pairs failing {} after the heal",
                fault.kind,
                fault.target,
                fault
                    .allowed_recovery
                    .map_or_else(|| "until the end".into(), |s| format!("{s:.2} s"))
            ));
        }
    }
    let worst = run
        .faults
        .iter()
        .filter_map(|f| f.felix_convergence)
        .fold(0.0, f64::max);
    invariants.push(Invariant::new(
        "every Felix at the leader's revision and allowed pairs working within 2 s of each heal",
        &slow,
        format!("slowest Felix convergence {worst:.2} s"),
    ));
    // Leadership settled before each leader or follower fault.
    let unsettled: Vec<String> = run
        .faults
        .iter()
        .filter_map(|f| {
            let c = f.choice.as_ref().filter(|c| !c.settled)?;
            Some(format!(
                "{} at {:.1} s: {}",
                f.kind,
                f.start,
                c.not_settled.as_deref().unwrap_or("")
            ))
        })
        .collect();
    let chosen = run.faults.iter().filter(|f| f.choice.is_some()).count();
    invariants.push(Invariant::new(
        &format!(
            "the replicas agreed on one leader at one term before each leader or follower fault (within {:.0} s)",
            LEADERSHIP_WAIT.as_secs_f64()
        ),
        &unsettled,
        format!(
            "{chosen} leader or follower faults; longest wait {:.2} s",
            run.faults
                .iter()
                .filter_map(|f| f.choice.as_ref().map(|c| c.waited))
                .fold(0.0, f64::max)
        ),
    ));
    let probes = ProbeSummary::of(
        &results,
        f.pairs
            .iter()
            .map(|p| {
                format!(
                    "{} -> {} ({})",
                    p.from,
                    p.to,
                    if p.allowed { "allowed" } else { "denied" }
                )
            })
            .collect(),
    );
    let unexpected: Vec<String> = results
        .iter()
        .filter(|r| !r.allowed && r.connected)
        .map(|r| format!("{} at {:.2} s", probes.pairs[r.pair], r.t))
        .collect();
    invariants.push(Invariant::new(
        "zero unexpected allows",
        &unexpected,
        format!("{} denied probes, none connected", probes.denied_probes),
    ));
    // Panics in any log.
    let mut logs: Vec<(String, PathBuf)> = (0..REPLICAS)
        .map(|k| (format!("typha-{}", k + 1), c.typha_log(k)))
        .collect();
    for n in c.nodes() {
        logs.push((format!("felix-{}", n.name), n.log.clone()));
    }
    let mut panics = Vec::new();
    for (name, path) in &logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        panics.extend(
            invariants::panics(&text)
                .into_iter()
                .map(|l| format!("{name}: {l}")),
        );
    }
    invariants.push(Invariant::new(
        "no panic in any log",
        &panics,
        format!("{} logs read", logs.len()),
    ));
    // Memory.
    let mut processes: BTreeMap<String, ProcessSeries> = BTreeMap::new();
    let mut growth_problems = Vec::new();
    for ((name, _pid), samples) in &run.samples {
        let p = processes
            .entry(name.clone())
            .or_insert_with(|| ProcessSeries {
                name: name.clone(),
                ..ProcessSeries::default()
            });
        p.samples.extend(samples.iter().copied());
    }
    // Lives not fitted, and why.
    let mut unfitted = Vec::new();
    for p in processes.values_mut() {
        let lives = run
            .samples
            .iter()
            .filter(|((n, _), _)| *n == p.name)
            .map(|(key, s)| {
                (
                    key,
                    s.iter().map(|s| (s.0, s.2)).collect::<Vec<(f64, f64)>>(),
                )
            });
        if p.name.starts_with("typha-") {
            // A replica's memory fills its retention bounds over its first
            // revisions and steps at its first Raft snapshot (see
            // `growth_after_warmup`): only what comes after both is fitted,
            // in the life with the most of it.
            let mut most_seen = 0;
            let mut compacted = false;
            let mut longest_after = 0.0f64;
            let mut best: Option<(f64, f64)> = None;
            for (key, rss) in lives {
                let snapshots = run.snapshots.get(key).map(Vec::as_slice).unwrap_or(&[]);
                let fit = invariants::growth_after_warmup(
                    &rss,
                    &run.revisions,
                    invariants::TYPHA_WARMUP_REVISIONS,
                    snapshots,
                );
                most_seen = most_seen.max(fit.revisions_seen);
                compacted |= fit.compacted;
                longest_after = longest_after.max(fit.after_warmup);
                if let Some(g) = fit.growth
                    && best.is_none_or(|(after, _)| fit.after_warmup > after)
                {
                    best = Some((fit.after_warmup, g));
                }
            }
            p.growth_mib_per_hour = best.map(|(_, g)| g);
            if best.is_none() {
                unfitted.push(format!(
                    "{}: no life went {} revisions past its start and {:.0} s past its first Raft snapshot with {:.0} s to fit (most revisions in one life: {most_seen}; {}; longest after warm-up: {longest_after:.0} s)",
                    p.name,
                    invariants::TYPHA_WARMUP_REVISIONS,
                    invariants::COMPACTION_SETTLE_SECONDS,
                    invariants::MIN_FIT_SECONDS,
                    if compacted { "a life compacted" } else { "no life compacted" },
                ));
            }
        } else {
            // The process's longest life decides (a restart starts afresh);
            // its second half must last MIN_FIT_SECONDS.
            let longest = lives.map(|(_, s)| s).max_by_key(Vec::len);
            p.growth_mib_per_hour = longest
                .as_deref()
                .and_then(invariants::memory_growth_per_hour);
            if p.growth_mib_per_hour.is_none() {
                let span = longest
                    .as_deref()
                    .and_then(|s| Some(s.last()?.0 - s.first()?.0))
                    .unwrap_or(0.0);
                unfitted.push(format!(
                    "{}: longest life {span:.0} s, under {:.0} s, growth not fitted",
                    p.name,
                    2.0 * invariants::MIN_FIT_SECONDS
                ));
            }
        }
    }
    for p in processes.values_mut() {
        p.samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let median = {
            let mut r: Vec<f64> = p.samples.iter().map(|s| s.2).collect();
            r.sort_by(f64::total_cmp);
            r.get(r.len() / 2).copied().unwrap_or(0.0)
        };
        // Bounded: the fitted growth, carried over the whole run, stays
        // under half the process's median size (and 32 MiB).
        let hours = run.t() / 3600.0;
        if let Some(g) = p.growth_mib_per_hour
            && invariants::unbounded(g, hours, median)
        {
            growth_problems.push(format!(
                "{}: {g:.0} MiB/h fitted growth, {:.0} MiB over the run (median {median:.0} MiB)",
                p.name,
                g * hours
            ));
        }
    }
    invariants.push(Invariant::new(
        "memory bounded (Theil-Sen growth over each Felix's longest life's second half and each Typha's life after its warm-up and first Raft snapshot, each over 5 minutes at least)",
        &growth_problems,
        if unfitted.is_empty() {
            format!("{} processes sampled", processes.len())
        } else {
            format!(
                "{} processes sampled; not fitted: {}",
                processes.len(),
                unfitted.join("; ")
            )
        },
    ));
    let ok = invariants.iter().all(|i| i.ok);
    let logs_kept = if ok {
        None
    } else {
        let dir = c.keep_work_dir();
        Some(dir.display().to_string())
    };
    let report = Report {
        mode: config.mode.clone(),
        seed: config.seed,
        nodes: config.nodes,
        seconds: run.t(),
        ok,
        invariants,
        faults: run.faults,
        events: run.events,
        probes,
        history: summary,
        streams,
        replicas,
        processes: processes.into_values().collect(),
        logs: logs_kept,
    };
    report.write(&config.out)?;
    // The whole recorded history, for replaying a verdict.
    let path = config.out.join("history.json");
    let json =
        serde_json::to_string(&history).map_err(|e| ChaosError::Setup(format!("history: {e}")))?;
    std::fs::write(&path, json).map_err(|e| ChaosError::io(&path, e))?;
    drop(f.api_clients);
    drop(f.peer_clients);
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(c);
    Ok(report)
}

/// Seconds from `healed` until every allowed pair's last failure within
/// the settle time after it (0 when none failed); `None` when one was
/// still failing at the end of that window.
fn allowed_recovery(results: &[probes::ProbeResult], healed: f64) -> Option<f64> {
    let window = healed + SETTLE.as_secs_f64();
    let after: Vec<&probes::ProbeResult> = results
        .iter()
        .filter(|r| r.allowed && r.t >= healed && r.t < window)
        .collect();
    let last_failure = after
        .iter()
        .filter(|r| !r.connected)
        .map(|r| r.t)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    let Some(last_failure) = last_failure else {
        return Some(0.0);
    };
    // Every pair that failed must have connected after its last failure.
    let mut pairs: BTreeMap<usize, (f64, bool)> = BTreeMap::new();
    for r in &after {
        let e = pairs.entry(r.pair).or_insert((f64::MIN, true));
        if r.t >= e.0 {
            *e = (r.t, r.connected);
        }
    }
    pairs
        .values()
        .all(|(_, ok)| *ok)
        .then_some(last_failure - healed)
}
