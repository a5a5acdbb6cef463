//! `snapshot`: R stored resources, then C clients requesting a Sync stream
//! together: time to in-sync, server memory, and the snapshot counters
//! (one snapshot generated, the other clients served it again).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clients::{self, ClientOptions, Progress};
use crate::procs::{TyphaOptions, metric};
use crate::stats::{ms, round3, summary_ms};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Resources stored before the clients connect.
    #[arg(long, default_value_t = 100_000)]
    resources: usize,
    /// Clients requesting a snapshot together.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Resources per Apply request while loading.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Every Nth resource is a NetworkPolicy (the rest GlobalNetworkSets);
    /// 0 for none.
    #[arg(long, default_value_t = 10)]
    policy_every: usize,
    /// Connections being set up at once (before the streams are requested).
    #[arg(long, default_value_t = 500)]
    connect_concurrency: usize,
    /// Compression the clients accept: gzip or identity. Clients count
    /// chunk bytes without decoding them (except client 0, which checks
    /// the entry count).
    #[arg(long, default_value = "gzip", value_parser = ["identity", "gzip"])]
    compression: String,
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

const SNAPSHOTS_GENERATED: &str = "typha_snapshots_generated_total";
const SNAPSHOTS_REUSED: &str = "typha_snapshots_reused_total";

pub async fn run(opts: &TyphaOptions, args: &SnapshotArgs, nofile: u64) -> Result<Value> {
    let c = args.clients;
    if c == 0 || args.batch == 0 {
        bail!("--clients and --batch must be above 0");
    }
    if (c as u64) + 256 > nofile {
        bail!("{c} clients need more open files than the limit of {nofile}");
    }
    eprintln!("starting typha");
    let mut cluster = crate::procs::start(opts, 1, c + 100).await?;
    let server = cluster.replica(1)?;
    let addr = server.grpc;

    // Load.
    eprintln!("loading {} resources", args.resources);
    let mut writer = clients::resources(clients::channel(addr).await?);
    let load_started = Instant::now();
    let mut policies = 0usize;
    let mut revision = 0;
    for start in (0..args.resources).step_by(args.batch) {
        let end = (start + args.batch).min(args.resources);
        let docs: Vec<String> = (start..end)
            .map(|i| {
                if args.policy_every > 0 && i % args.policy_every == args.policy_every - 1 {
                    policies += 1;
                    clients::network_policy(&format!("bench-np-{i}"), i)
                } else {
                    clients::network_set(&format!("bench-{i}"), i, 2 + i % 2)
                }
            })
            .collect();
        revision = writer
            .apply(clients::apply_request(docs))
            .await?
            .into_inner()
            .revision;
        if (end / args.batch).is_multiple_of(10) || end == args.resources {
            eprintln!(
                "  loaded {end}/{} in {:.1}s",
                args.resources,
                load_started.elapsed().as_secs_f64()
            );
        }
    }
    let load = load_started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = server.memory()?;
    let metrics_before = server.metrics_text().await?;

    // Connect, then request every stream at once.
    eprintln!("connecting {c} clients");
    let connect_started = Instant::now();
    let channels = clients::channels(addr, c, args.connect_concurrency).await?;
    let connect = connect_started.elapsed();
    let connected = server.memory()?;
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(c);
    for (idx, ch) in channels.into_iter().enumerate() {
        let client_opts = ClientOptions {
            compression: args.compression.clone(),
            delta_capacity: 0,
            decode_snapshot: idx == 0,
        };
        tasks.push(tokio::spawn(clients::run_client(
            idx,
            clients::Conn::Grpc(ch),
            client_opts,
            progress.clone(),
            stop_rx.clone(),
        )));
    }
    progress
        .wait(
            |p| p.in_sync.load(Ordering::Relaxed),
            c,
            Duration::from_secs(args.timeout_secs),
            Some("in sync"),
        )
        .await?;
    let total = started.elapsed();
    eprintln!("all {c} clients in sync after {:.1}s", total.as_secs_f64());
    cluster.check_alive()?;
    let server = cluster.replica(1)?;
    let in_sync = server.memory()?;
    let metrics_after = server.metrics_text().await?;
    let _ = stop_tx.send(true);

    let mut times = Vec::with_capacity(c);
    let (mut chunks, mut bytes, mut entries) = (0u32, 0u64, None);
    for task in tasks {
        let r = task.await?;
        if let Some(at) = r.in_sync_at {
            times.push(ms(at.saturating_duration_since(started)));
        }
        chunks = chunks.max(r.snapshot_chunks);
        bytes = bytes.max(r.snapshot_bytes);
        if r.snapshot_entries.is_some() {
            entries = r.snapshot_entries;
        }
    }
    progress.check()?;
    // The warm store holds exactly what was loaded.
    if entries != Some(args.resources as u64) {
        bail!(
            "client 0 got {entries:?} entries in its snapshot, expected {}",
            args.resources
        );
    }
    let delta = |name: &str| {
        Some(metric(&metrics_after, name)? - metric(&metrics_before, name).unwrap_or(0.0))
    };
    Ok(json!({
        "parameters": {
            "resources": args.resources,
            "network_policies": policies,
            "global_network_sets": args.resources - policies,
            "clients": c,
            "load_batch": args.batch,
            "connect_concurrency": args.connect_concurrency,
            "compression": args.compression,
        },
        "load_s": round3(load.as_secs_f64()),
        "load_resources_per_s": (args.resources as f64 / load.as_secs_f64().max(1e-9)).round(),
        "revision": revision,
        "connect_s": round3(connect.as_secs_f64()),
        "snapshot_chunks": chunks,
        "snapshot_bytes_per_client": bytes,
        "snapshot_entries_checked": entries,
        "time_to_in_sync": summary_ms(times),
        "all_in_sync_ms": round3(ms(total)),
        "server_rss_loaded_bytes": loaded.rss,
        "server_peak_rss_loaded_bytes": loaded.peak_rss,
        "server_rss_connected_bytes": connected.rss,
        "server_rss_in_sync_bytes": in_sync.rss,
        "server_peak_rss_bytes": in_sync.peak_rss,
        "snapshots_generated_delta": delta(SNAPSHOTS_GENERATED),
        "snapshots_reused_delta": delta(SNAPSHOTS_REUSED),
        "client_snapshot_send_secs_count": metric(&metrics_after, "typha_client_snapshot_send_secs_count"),
        "client_snapshot_send_secs_sum": metric(&metrics_after, "typha_client_snapshot_send_secs_sum"),
    }))
}
