//! `felix-bench`: calculation-graph benchmarks that print JSON.
//!
//! `snapshot`: a cluster of `--endpoints` workload endpoints over
//! `--nodes` nodes and `--policies` policies with varied selectors, in the
//! form Typha streams it (gzipped chunks of stored JSON entries), is
//! decoded by the sync client's own function on one thread and fed to one
//! node's graph on another, as the agent does; reports the time from the
//! first chunk to in-sync, each thread's CPU time, and the peak RSS, also
//! per endpoint.
//!
//! `churn`: after the snapshot, single updates (remote endpoint label
//! changes, endpoint adds and removes, policy selector changes) one at a
//! time; reports calculation-graph updates per second and per-update
//! latency percentiles, and the same with each update's decoding included
//! (the null driver's time is reported separately).
//!
//! `--profile sets`: instead of the mixed policies, the node's endpoints
//! are selected by `--set-values` GlobalNetworkPolicies of `--set-labels`
//! ingress rules each, every rule selecting the remote endpoints with one
//! value of one label: `set-labels x set-values` IP sets (2,000 by
//! default), each endpoint a member of `set-labels` of them (a million
//! members with the default 100,000 endpoints). Churn relabels endpoints
//! (each relabel moves it between sets), adds and removes them, and
//! changes a policy's rule selectors.

/// The agent's allocator: the calculation graph allocates and frees many
/// small objects, which mimalloc serves far faster than the system malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use manul_dataplane_api::{Driver, NullDriver};
use manul_felix::calc::{CalcGraph, Update};
use manul_felix::sync::{snapshot_updates, update_of};
use manul_model::Resource;
use manul_proto::v1::Entry;

/// What the cluster's policies look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Profile {
    /// Namespaced, global and Kubernetes policies with varied selectors.
    Mixed,
    /// Policies whose rules select thousands of remote endpoints: many
    /// large IP sets.
    Sets,
}

#[derive(Debug, Parser)]
#[command(name = "felix-bench")]
struct Args {
    #[arg(long, value_enum, default_value_t = Profile::Mixed)]
    profile: Profile,
    /// Endpoints in the cluster (default: 250,000 for `mixed`, 100,000
    /// for `sets`).
    #[arg(long)]
    endpoints: Option<usize>,
    /// `sets`: labels each endpoint carries for the sets' selectors (the
    /// rules per policy, and the sets each endpoint is a member of).
    #[arg(long, default_value_t = 10)]
    set_labels: usize,
    /// `sets`: values of each of those labels (the policies).
    #[arg(long, default_value_t = 200)]
    set_values: usize,
    #[arg(long, default_value_t = 1_250)]
    nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    policies: usize,
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Updates in the churn phase (0: snapshot only).
    #[arg(long, default_value_t = 100_000)]
    churn: usize,
    /// Snapshot batch size.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
}

fn load(yaml: &str) -> Result<Resource> {
    let mut r = manul_model::load("bench", yaml.as_bytes())
        .into_result()
        .map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    r.pop().map(|l| l.resource).context("empty")
}

/// A resource as Typha streams it: its key and its stored JSON.
fn put(r: Resource) -> Result<Entry> {
    let key = r.key();
    Ok(Entry {
        key: Some(manul_proto::wire::key_to_proto(&key)),
        value: serde_json::to_vec(&r)?.into(),
        revision: 0,
        deleted: false,
    })
}

/// A deletion as Typha streams it.
fn delete(r: &Resource) -> Result<Entry> {
    let mut e = put(r.clone())?;
    e.value = Default::default();
    e.deleted = true;
    Ok(e)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

fn decode(e: &Entry) -> Result<Update> {
    update_of(e).map_err(|err| anyhow::anyhow!("{err}"))
}

fn endpoint(i: usize, nodes: usize, namespaces: usize, variant: usize) -> Result<Resource> {
    let node = i % nodes;
    let ns = i % namespaces;
    let app = (i / 7 + variant) % 500;
    let role = (i / 3) % 50;
    let tier = ["web", "api", "db", "cache"][i % 4];
    let env = ["prod", "staging", "dev"][(i / 11) % 3];
    let (a, b) = ((i >> 8) & 0xff, i & 0xff);
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: ep-{i}\n  namespace: ns-{ns}\n  labels: {{app: app-{app}, role: r-{role}, tier: {tier}, env: {env}}}\n\
         spec:\n  node: node-{node}\n  interfaceName: cali{i}\n  ipNetworks: [10.{}.{a}.{b}/32]\n  profiles: [kns.ns-{ns}]\n  ports:\n  - {{name: http, protocol: TCP, port: 8080}}\n",
        64 + (i >> 16)
    ))
}

fn policy(j: usize, namespaces: usize, variant: usize) -> Result<Resource> {
    let app = (j + variant) % 500;
    match j % 4 {
        0 | 1 => load(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: np-{j}\n  namespace: ns-{}\nspec:\n  order: {}\n  selector: app == 'app-{app}'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      selector: role == 'r-{}'\n    destination:\n      ports: [http, 9000]\n  egress:\n  - action: Allow\n",
            j % namespaces,
            j % 100,
            j % 50
        )),
        2 => load(&format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: gnp-{j}\nspec:\n  order: {}\n  selector: tier == '{}' && app in {{'app-{app}', 'app-{}'}}\n  namespaceSelector: team == 't-{}'\n  ingress:\n  - action: Deny\n    source:\n      nets: [192.0.2.0/24]\n  - action: Allow\n    source:\n      selector: env != 'prod' && has(role)\n",
            j % 50,
            ["web", "api", "db", "cache"][j % 4],
            (app + 1) % 500,
            j % 10
        )),
        _ => load(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k8s-{j}\n  namespace: ns-{}\nspec:\n  podSelector:\n    matchLabels: {{app: app-{app}}}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {{tier: web}}\n      namespaceSelector:\n        matchLabels: {{team: t-{}}}\n    ports:\n    - port: 8080\n",
            j % namespaces,
            j % 10
        )),
    }
}

/// `sets`: the value endpoint `i` has for set label `k` (`variant` 0 in
/// the snapshot, another in a relabel). Each value is held by about one
/// endpoint in `values`, spread differently for each label.
fn set_value(i: usize, k: usize, values: usize, variant: usize) -> usize {
    (i / (k + 1) + k * 13 + variant) % values
}

/// `sets`: an endpoint with the mixed profile's labels and `set_labels`
/// more, `s0`..`sN`, one value each.
fn set_endpoint(i: usize, args: &Args, variant: usize) -> Result<Resource> {
    let node = i % args.nodes;
    let ns = i % args.namespaces;
    let labels: Vec<String> = (0..args.set_labels)
        .map(|k| format!("s{k}: v-{}", set_value(i, k, args.set_values, variant)))
        .collect();
    let (a, b) = ((i >> 8) & 0xff, i & 0xff);
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: ep-{i}\n  namespace: ns-{ns}\n  labels: {{app: app-{}, {}}}\n\
         spec:\n  node: node-{node}\n  interfaceName: cali{i}\n  ipNetworks: [10.{}.{a}.{b}/32]\n  profiles: [kns.ns-{ns}]\n",
        i % 500,
        labels.join(", "),
        64 + (i >> 16)
    ))
}

/// `sets`: GlobalNetworkPolicy `j` applies to every endpoint; its rule `k`
/// allows the endpoints whose label `sk` has value `j` (shifted by
/// `variant`): one IP set per (label, value).
fn set_policy(j: usize, args: &Args, variant: usize) -> Result<Resource> {
    let rules: String = (0..args.set_labels)
        .map(|k| {
            format!(
                "  - action: Allow\n    source:\n      selector: s{k} == 'v-{}'\n",
                (j + variant) % args.set_values
            )
        })
        .collect();
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: sets-{j}\nspec:\n  order: {}\n  selector: has(s0)\n  ingress:\n{rules}",
        j % 100
    ))
}

/// Endpoint `i` of the profile.
fn any_endpoint(i: usize, args: &Args, variant: usize) -> Result<Resource> {
    match args.profile {
        Profile::Mixed => endpoint(i, args.nodes, args.namespaces, variant),
        Profile::Sets => set_endpoint(i, args, variant),
    }
}

/// Policy `j` of the profile.
fn any_policy(j: usize, args: &Args, variant: usize) -> Result<Resource> {
    match args.profile {
        Profile::Mixed => policy(j, args.namespaces, variant),
        Profile::Sets => set_policy(j, args, variant),
    }
}

fn namespace(n: usize) -> Result<Resource> {
    load(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{n}\n  labels: {{team: t-{}}}\n",
        n % 10
    ))
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds this thread has used (user + system), from
/// `/proc/thread-self/stat`: on a shared machine, wall time also counts
/// time spent waiting for a core.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let endpoints = args.endpoints.unwrap_or(match args.profile {
        Profile::Mixed => 250_000,
        Profile::Sets => 100_000,
    });
    let policies = match args.profile {
        Profile::Mixed => args.policies,
        Profile::Sets => args.set_values,
    };
    if endpoints == 0 || policies == 0 || args.nodes == 0 || args.namespaces == 0 {
        anyhow::bail!("endpoints, policies, nodes and namespaces must not be 0");
    }
    eprintln!("generating {endpoints} endpoints and {policies} policies");
    let mut updates = Vec::with_capacity(endpoints + policies + args.namespaces);
    for n in 0..args.namespaces {
        updates.push(put(namespace(n)?)?);
    }
    for i in 0..endpoints {
        updates.push(put(any_endpoint(i, &args, 0)?)?);
    }
    for j in 0..policies {
        updates.push(put(any_policy(j, &args, 0)?)?);
    }
    // The snapshot as Typha sends it: chunks of `batch` entries, each an
    // encoded EntryList, gzipped.
    let chunks: Vec<bytes::Bytes> = updates
        .chunks(args.batch.max(1))
        .map(|c| {
            let list = manul_proto::v1::EntryList {
                entries: c.to_vec(),
            };
            gzip(&prost::Message::encode_to_vec(&list)).map(bytes::Bytes::from)
        })
        .collect::<Result<_>>()?;
    let snapshot_bytes: usize = chunks.iter().map(bytes::Bytes::len).sum();
    drop(updates);
    let rss_before = rss_kb("VmRSS:");
    let mut graph = CalcGraph::new("node-0");
    let mut driver = NullDriver::default();
    let started = Instant::now();
    let cpu_started = thread_cpu_s();
    let mut ops_total = 0usize;
    // As in the agent: the sync client decodes chunks on one thread while
    // the graph takes the previous ones on another.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Update>>(1024);
    let decoder = std::thread::spawn(move || -> Result<f64> {
        let cpu = thread_cpu_s();
        let mut seen = rustc_hash::FxHashSet::default();
        for chunk in &chunks {
            let batch = snapshot_updates(chunk, true, Some(&mut seen))?;
            if tx.send(batch).is_err() {
                break;
            }
        }
        Ok(thread_cpu_s() - cpu)
    });
    for batch in rx {
        let ops = graph.apply(batch);
        ops_total += ops.len();
        driver
            .apply(&ops)
            .map_err(|e| anyhow::anyhow!("driver refused: {e}"))?;
    }
    let ops = graph.in_sync();
    ops_total += ops.len();
    driver
        .apply(&ops)
        .map_err(|e| anyhow::anyhow!("driver refused: {e}"))?;
    let snapshot_s = started.elapsed().as_secs_f64();
    let snapshot_cpu_s = thread_cpu_s() - cpu_started;
    let decode_cpu_s = decoder
        .join()
        .map_err(|_| anyhow::anyhow!("the decoding thread panicked"))??;
    let stats = graph.stats();
    let peak_kb = rss_kb("VmHWM:");
    let rss_after = rss_kb("VmRSS:");
    eprintln!("snapshot done in {snapshot_s:.2} s; churning");

    // Churn: one update at a time.
    let mut lat_ms = Vec::with_capacity(args.churn);
    let mut driver_ms = Vec::with_capacity(args.churn);
    let mut decode_ms = Vec::with_capacity(args.churn);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kind_ms: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let churn_started = Instant::now();
    let mut extra = endpoints;
    for k in 0..args.churn {
        let (kind, update) = match k % 10 {
            0..=6 => {
                // A remote endpoint's labels change.
                let mut i = (k * 7919) % endpoints;
                if i % args.nodes == 0 {
                    i += 1;
                }
                ("endpoint_label_change", put(any_endpoint(i, &args, k)?)?)
            }
            7 => {
                extra += 1;
                ("endpoint_add", put(any_endpoint(extra, &args, 0)?)?)
            }
            8 => {
                let r = any_endpoint(endpoints + k / 10, &args, 0)?;
                ("endpoint_remove", delete(&r)?)
            }
            _ => {
                let j = (k * 31) % policies;
                ("policy_selector_change", put(any_policy(j, &args, k)?)?)
            }
        };
        *kinds.entry(kind).or_default() += 1;
        let t = Instant::now();
        let update = decode(&update)?;
        decode_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let ops = graph.apply([update]);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        lat_ms.push(ms);
        kind_ms.entry(kind).or_default().push(ms);
        let t = Instant::now();
        driver
            .apply(&ops)
            .map_err(|e| anyhow::anyhow!("driver refused: {e}"))?;
        driver_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let churn_s = churn_started.elapsed().as_secs_f64();
    lat_ms.sort_by(f64::total_cmp);
    let by_kind: BTreeMap<&str, serde_json::Value> = kind_ms
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            (
                k,
                serde_json::json!({"mean": mean, "p50": percentile(&v, 0.5), "p99": percentile(&v, 0.99),
                                   "max": v.last().copied().unwrap_or(0.0)}),
            )
        })
        .collect();
    driver_ms.sort_by(f64::total_cmp);
    let graph_s: f64 = lat_ms.iter().sum::<f64>() / 1000.0;
    let churn_decode_s: f64 = decode_ms.iter().sum::<f64>() / 1000.0;
    decode_ms.sort_by(f64::total_cmp);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let report = serde_json::json!({
        "benchmark": "felix-calc",
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu},
        "parameters": {"profile": format!("{:?}", args.profile).to_lowercase(), "endpoints": endpoints, "nodes": args.nodes, "policies": policies,
                        "set_labels": (args.profile == Profile::Sets).then_some(args.set_labels),
                        "set_values": (args.profile == Profile::Sets).then_some(args.set_values),
                        "namespaces": args.namespaces, "snapshot_batch": args.batch, "churn_updates": args.churn},
        "snapshot": {
            "seconds": snapshot_s,
            "calc_graph_cpu_seconds": snapshot_cpu_s,
            "decode_cpu_seconds": decode_cpu_s,
            "one_core_seconds": snapshot_cpu_s + decode_cpu_s,
            "gzip_bytes": snapshot_bytes,
            "operations": ops_total,
            "local_endpoints": stats.local_endpoints,
            "active_policies": stats.active_policies,
            "ip_sets": stats.ip_sets,
            "ip_set_members": stats.ip_set_members,
            "peak_rss_bytes": peak_kb * 1024,
            "rss_growth_bytes": rss_after.saturating_sub(rss_before) * 1024,
            "rss_growth_per_endpoint_bytes": rss_after.saturating_sub(rss_before) as f64 * 1024.0 / endpoints as f64,
            "target_seconds": 2.0,
        },
        "churn": {
            "updates": args.churn,
            "kinds": kinds,
            "latency_ms_by_kind": by_kind,
            "seconds": churn_s,
            "calc_graph_seconds": graph_s,
            "updates_per_second": args.churn as f64 / graph_s.max(1e-9),
            "updates_per_second_with_decode": args.churn as f64 / (graph_s + churn_decode_s).max(1e-9),
            "decode_latency_ms": {"p50": percentile(&decode_ms, 0.5), "p99": percentile(&decode_ms, 0.99)},
            "null_driver_latency_ms": {"p50": percentile(&driver_ms, 0.5), "p99": percentile(&driver_ms, 0.99)},
            "latency_ms": {"p50": percentile(&lat_ms, 0.5), "p90": percentile(&lat_ms, 0.9),
                            "p99": percentile(&lat_ms, 0.99), "max": lat_ms.last().copied().unwrap_or(0.0)},
            "target_updates_per_second": 50000,
            "target_p99_ms": 1.0,
        },
    });
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
