//! `writes`: committed resources per second and per-request commit latency
//! on a fresh 1- or 3-replica cluster, written to the leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::clients;
use crate::procs::TyphaOptions;
use crate::stats::{ms, round3, summary_ms};

#[derive(Debug, Args)]
pub struct WritesArgs {
    /// Replica counts to run (comma-separated), each on a fresh cluster.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    replicas: Vec<usize>,
    /// Resources written per run.
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Resources per Apply request (comma-separated list of sizes to run).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
    batch: Vec<usize>,
    /// Requests in flight at once, each writer on its own connection
    /// (comma-separated list to run).
    #[arg(long, value_delimiter = ',', default_values_t = [16])]
    concurrency: Vec<usize>,
}

pub async fn run(opts: &TyphaOptions, args: &WritesArgs) -> Result<Value> {
    let mut runs = Vec::new();
    for &replicas in &args.replicas {
        for &batch in &args.batch {
            for &concurrency in &args.concurrency {
                if replicas == 0 || batch == 0 || concurrency == 0 {
                    bail!("--replicas, --batch and --concurrency must be above 0");
                }
                eprintln!(
                    "writes: {replicas} replica(s), {} resources, batch {batch}, concurrency {concurrency}",
                    args.writes
                );
                runs.push(one(opts, replicas, args.writes, batch, concurrency).await?);
            }
        }
    }
    Ok(json!({
        "parameters": {
            "replicas": args.replicas,
            "writes": args.writes,
            "batch": args.batch,
            "concurrency": args.concurrency,
        },
        "runs": runs,
    }))
}

async fn one(
    opts: &TyphaOptions,
    replicas: usize,
    writes: usize,
    batch: usize,
    concurrency: usize,
) -> Result<Value> {
    let mut cluster = crate::procs::start(opts, replicas, 100).await?;
    let leader_id = clients::leader(cluster.replica(1)?.peer, &cluster.token).await?;
    let leader = cluster.replica(leader_id)?.grpc;
    // Warm-up: one write through the leader, not measured.
    let mut warm = clients::resources(clients::channel(leader).await?);
    warm.apply(clients::apply_request([clients::network_set(
        "bench-warmup",
        0,
        2,
    )]))
    .await?;

    let requests = writes.div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let channel = clients::channel(leader).await?;
        let next = next.clone();
        writers.push(async move {
            let mut client = clients::resources(channel);
            let mut latencies = Vec::new();
            let mut last_revision = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let docs = (i * batch..((i + 1) * batch).min(writes))
                    .map(|j| clients::network_set(&format!("bench-w-{j}"), j, 2));
                let request = clients::apply_request(docs);
                let t0 = Instant::now();
                let resp = client.apply(request).await?.into_inner();
                latencies.push(ms(t0.elapsed()));
                last_revision = last_revision.max(resp.revision);
            }
            anyhow::Ok((latencies, last_revision))
        });
    }
    let started = Instant::now();
    let handles: Vec<_> = writers.into_iter().map(tokio::spawn).collect();
    let mut latencies = Vec::with_capacity(requests);
    let mut last_revision = 0;
    for h in handles {
        let (l, r) = h.await??;
        latencies.extend(l);
        last_revision = last_revision.max(r);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    cluster.check_alive()?;
    let leader_memory = cluster.replica(leader_id)?.memory()?;
    eprintln!(
        "  {:.0} resources/s, {:.0} requests/s",
        writes as f64 / elapsed,
        requests as f64 / elapsed
    );
    Ok(json!({
        "replicas": replicas,
        "writes": writes,
        "batch": batch,
        "concurrency": concurrency,
        "requests": requests,
        "leader": leader_id,
        "last_revision": last_revision,
        "elapsed_s": round3(elapsed),
        "resources_per_s": (writes as f64 / elapsed).round(),
        "requests_per_s": round3(requests as f64 / elapsed),
        "commit_latency": summary_ms(latencies),
        "leader_rss_bytes": leader_memory.rss,
    }))
}
