//! `fanout`: N Sync clients on their own connections; server memory per
//! client, then delta latency and server CPU for single-resource writes
//! made one after another (each waits until every client has the
//! previous one). Each transport asked for (gRPC, the lean framed TCP
//! transport, or both: side by side in one run) gets a fresh replica, so
//! that one's memory is not counted against the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clients::{self, ClientOptions, Progress, SyncTransport};
use crate::procs::{TyphaOptions, cpu_split, metric};
use crate::stats::{ms, round3, summary_ms};

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Sync clients, each on its own connection.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Single-resource writes whose delivery is timed.
    #[arg(long, default_value_t = 20)]
    updates: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 500)]
    connect_concurrency: usize,
    /// Compression the clients accept: identity or gzip.
    #[arg(long, default_value = "identity", value_parser = ["identity", "gzip"])]
    compression: String,
    /// Seconds to wait for all clients to be in sync / to get an update.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// The Sync transport: grpc, tcp (the lean transport), or both (one
    /// after the other, each on a fresh replica, compared).
    #[arg(long, default_value = "both", value_parser = ["grpc", "tcp", "both"])]
    transport: String,
}

pub async fn run(opts: &TyphaOptions, args: &FanoutArgs, nofile: u64) -> Result<Value> {
    let transports: &[SyncTransport] = match args.transport.as_str() {
        "grpc" => &[SyncTransport::Grpc],
        "tcp" => &[SyncTransport::Tcp],
        _ => &[SyncTransport::Grpc, SyncTransport::Tcp],
    };
    let mut out = serde_json::Map::new();
    for &t in transports {
        eprintln!("== transport {}", t.name());
        out.insert(t.name().to_owned(), run_one(opts, args, nofile, t).await?);
    }
    if let (Some(grpc), Some(tcp)) = (out.get("grpc"), out.get("tcp")) {
        let ratio = |path: &[&str]| {
            let get = |v: &Value| {
                path.iter()
                    .try_fold(v, |v, k| v.get(*k))
                    .and_then(Value::as_f64)
            };
            match (get(tcp), get(grpc)) {
                (Some(t), Some(g)) if g > 0.0 => json!(round3(t / g)),
                _ => Value::Null,
            }
        };
        let comparison = json!({
            "rss_per_client": ratio(&["rss_per_client_bytes"]),
            "server_cpu_per_update": ratio(&["updates_phase", "server_cpu_per_update_ms"]),
            "delta_latency_per_client_p50": ratio(&["delta_latency_per_client", "p50_ms"]),
            "delta_latency_per_client_p99": ratio(&["delta_latency_per_client", "p99_ms"]),
            "delta_latency_last_client_p50": ratio(&["delta_latency_last_client", "p50_ms"]),
            "note": "tcp divided by grpc, measured in this run",
        });
        out.insert("tcp_over_grpc".to_owned(), comparison);
    }
    Ok(Value::Object(out))
}

async fn run_one(
    opts: &TyphaOptions,
    args: &FanoutArgs,
    nofile: u64,
    transport: SyncTransport,
) -> Result<Value> {
    let n = args.clients;
    if n == 0 {
        bail!("--clients must be above 0");
    }
    if (n as u64) + 256 > nofile {
        bail!("{n} clients need more open files than the limit of {nofile}");
    }
    let limit = Duration::from_secs(args.timeout_secs);
    eprintln!("starting typha");
    let mut cluster = crate::procs::start(opts, 1, n + 100).await?;
    let server = cluster.replica(1)?;
    let addr = server.grpc;
    let mut writer = clients::resources(clients::channel(addr).await?);
    // Warm-up write: allocations on the write path, not per client.
    writer
        .apply(clients::apply_request([clients::network_set(
            "bench-warmup",
            0,
            2,
        )]))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.memory()?;
    eprintln!(
        "server RSS before clients: {:.1} MiB",
        before.rss as f64 / 1048576.0
    );

    let started = Instant::now();
    eprintln!("connecting {n} clients");
    let sync_addr = match transport {
        SyncTransport::Grpc => addr,
        SyncTransport::Tcp => server.sync.context("the replica has no sync listener")?,
    };
    let channels = clients::conns(transport, sync_addr, n, args.connect_concurrency).await?;
    let connected = started.elapsed();
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let client_opts = ClientOptions {
        compression: args.compression.clone(),
        delta_capacity: args.updates,
        decode_snapshot: false,
    };
    let mut tasks = Vec::with_capacity(n);
    for (idx, ch) in channels.into_iter().enumerate() {
        tasks.push(tokio::spawn(clients::run_client(
            idx,
            ch,
            client_opts.clone(),
            progress.clone(),
            stop_rx.clone(),
        )));
    }
    progress
        .wait(
            |p| p.in_sync.load(Ordering::Relaxed),
            n,
            limit,
            Some("in sync"),
        )
        .await?;
    let all_in_sync = started.elapsed();
    eprintln!(
        "all {n} clients in sync after {:.1}s",
        all_in_sync.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.check_alive()?;
    let server = cluster.replica(1)?;
    let after = server.memory()?;
    let metrics_after_sync = server.metrics_text().await?;
    let bench_memory = crate::procs::memory(std::process::id())?;

    // Updates, one at a time.
    let server_pid = server.pid().context("the replica is not running")?;
    let cpu_before = (cpu_split(server_pid)?, cpu_split(std::process::id())?);
    let updates_started = Instant::now();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut acks = Vec::with_capacity(args.updates);
    let mut order = Vec::with_capacity(args.updates);
    for i in 0..args.updates {
        let doc = clients::network_set(&format!("bench-{i}"), i, 2);
        let t0 = Instant::now();
        let resp = writer
            .apply(clients::apply_request([doc]))
            .await?
            .into_inner();
        acks.push(ms(t0.elapsed()));
        sent.insert(resp.revision, t0);
        order.push(resp.revision);
        progress
            .wait(
                |p| p.deltas.load(Ordering::Relaxed),
                n * (i + 1),
                limit,
                None,
            )
            .await?;
        eprintln!(
            "  update {}/{} (revision {}): all clients after {:.1} ms",
            i + 1,
            args.updates,
            resp.revision,
            ms(t0.elapsed())
        );
    }
    let updates_elapsed = updates_started.elapsed().as_secs_f64();
    let cpu_after = (cpu_split(server_pid)?, cpu_split(std::process::id())?);
    let (server_cpu, bench_cpu) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let per_update = |s: f64| round3(s * 1000.0 / args.updates.max(1) as f64);
    let after_updates = server.memory()?;
    let _ = stop_tx.send(true);
    let mut per_client = Vec::with_capacity(n * args.updates);
    let mut last: HashMap<u64, Instant> = HashMap::new();
    let mut missing = 0usize;
    for task in tasks {
        let result = task.await?;
        let mut got = 0;
        for (rev, at) in result.deltas {
            if let Some(t0) = sent.get(&rev) {
                got += 1;
                per_client.push(ms(at.saturating_duration_since(*t0)));
                let e = last.entry(rev).or_insert(at);
                if at > *e {
                    *e = at;
                }
            }
        }
        missing += args.updates - got.min(args.updates);
    }
    progress.check()?;
    let last_client: Vec<f64> = order
        .iter()
        .filter_map(|rev| {
            Some(ms(last
                .get(rev)?
                .saturating_duration_since(*sent.get(rev)?)))
        })
        .collect();
    let per_client_bytes = after.rss.saturating_sub(before.rss) as f64 / n as f64;
    // The lean transport's target is 8 KB a client; gRPC's 20 KiB.
    let target_bytes: u64 = match transport {
        SyncTransport::Grpc => 20 * 1024,
        SyncTransport::Tcp => 8 * 1000,
    };
    let delta_p99 = summary_ms(per_client.clone())["p99_ms"]
        .as_f64()
        .unwrap_or(f64::MAX);
    Ok(json!({
        "parameters": {
            "clients": n,
            "updates": args.updates,
            "connect_concurrency": args.connect_concurrency,
            "compression": args.compression,
            "transport": transport.name(),
        },
        "connect_s": round3(connected.as_secs_f64()),
        "all_in_sync_s": round3(all_in_sync.as_secs_f64()),
        "server_rss_before_bytes": before.rss,
        "server_rss_in_sync_bytes": after.rss,
        "server_rss_after_updates_bytes": after_updates.rss,
        "server_peak_rss_bytes": after_updates.peak_rss,
        "rss_per_client_bytes": per_client_bytes.round(),
        "connections_active": metric(&metrics_after_sync, "typha_connections_active"),
        "bench_process_rss_bytes": bench_memory.rss,
        "updates_phase": {
            "elapsed_s": round3(updates_elapsed),
            "server_cpu_s": round3(server_cpu.user + server_cpu.system),
            "server_cpu_per_update_ms": per_update(server_cpu.user + server_cpu.system),
            "server_cpu_per_client_per_update_us": round3(
                (server_cpu.user + server_cpu.system) * 1e6
                    / (args.updates.max(1) * n) as f64
            ),
            "bench_cpu_s": round3(bench_cpu.user + bench_cpu.system),
            "per_update_cpu_ms": {
                "server_user": per_update(server_cpu.user),
                "server_system": per_update(server_cpu.system),
                "clients_user": per_update(bench_cpu.user),
                "clients_system": per_update(bench_cpu.system),
            },
            "note": "server and clients share the machine's cores; per_update_cpu_ms is CPU time per update (user space and kernel), whose sum divided by the cores bounds how fast the last client can have it",
        },
        "apply_ack_ms": summary_ms(acks),
        "delta_latency_per_client": summary_ms(per_client),
        "delta_latency_last_client": summary_ms(last_client),
        "deltas_missing": missing,
        "targets": {
            "rss_per_client_bytes_max": target_bytes,
            "rss_per_client_ok": per_client_bytes <= target_bytes as f64,
            "delta_p99_ms_max": 100,
            "delta_p99_ok": delta_p99 <= 100.0,
            "note": "targets are for 10,000 clients",
        },
    }))
}
