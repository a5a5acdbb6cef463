//! `manulctl sync`: the delta-stream debugger. `watch` prints a snapshot
//! summary, then every delta as it arrives; `stats` summarises sizes and
//! lag over a short window. The stream is opened on the first replica
//! `--server` names that answers.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{Entry, EntryList, SyncRequest};
use prost::Message as _;

use crate::client::{ServerArgs, client_error, status_error};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Print a snapshot summary, then each delta: revision, operation, key.
    Watch(WatchArgs),
    /// Summarise snapshot size, time to in-sync, delta rate and lag.
    Stats {
        /// How long to watch deltas after in-sync, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Resume after this revision (only later deltas, when still retained).
    #[arg(long)]
    pub from_revision: Option<u64>,
    /// Only show this kind.
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// Stop after this many deltas (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
}

fn decode(bytes: &[u8], compression: &str) -> Result<Vec<Entry>> {
    let raw = if compression == "gzip" {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .context("corrupt gzip data from the server")?;
        out
    } else {
        bytes.to_vec()
    };
    Ok(EntryList::decode(raw.as_slice())
        .context("corrupt entry list from the server")?
        .entries)
}

async fn open(
    server: &ServerArgs,
    from: u64,
) -> Result<tonic::Streaming<manul_proto::v1::SyncMessage>> {
    let client = server.client().await?;
    let req = SyncRequest {
        node_name: "manulctl".into(),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        resume_revision: from,
        accepted_compression: vec!["gzip".into()],
    };
    client.sync(req).await.map_err(client_error)
}

fn key_text(e: &Entry) -> String {
    let k = e.key.clone().unwrap_or_default();
    if k.namespace.is_empty() {
        format!("{}/{}", k.kind, k.name)
    } else {
        format!("{}/{}/{}", k.kind, k.namespace, k.name)
    }
}

pub async fn run(server: &ServerArgs, cmd: &SyncCommand) -> Result<ExitCode> {
    match cmd {
        SyncCommand::Watch(args) => watch(server, args).await,
        SyncCommand::Stats { seconds } => stats(server, *seconds).await,
    }
}

async fn watch(server: &ServerArgs, args: &WatchArgs) -> Result<ExitCode> {
    let kind = match &args.kind {
        Some(k) => Some(
            manul_model::Kind::from_cli(k)
                .with_context(|| crate::BadInput(format!("unknown kind {k:?}")))?
                .key_name()
                .to_string(),
        ),
        None => None,
    };
    let mut stream = open(server, args.from_revision.unwrap_or(0)).await?;
    let mut compression = "identity".to_string();
    let mut snapshot: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = 0u64;
    while let Some(msg) = stream.message().await.map_err(status_error)? {
        match msg.message {
            Some(Message::Hello(h)) => {
                compression = h.compression.clone();
                println!(
                    "hello: replica {} at revision {}, {}, compression {}",
                    h.replica_id,
                    h.revision,
                    if h.snapshot_follows {
                        "snapshot follows"
                    } else {
                        "resuming without a snapshot"
                    },
                    h.compression
                );
            }
            Some(Message::Snapshot(chunk)) => {
                for e in decode(&chunk.entries, &compression)? {
                    let k = e.key.clone().unwrap_or_default().kind;
                    *snapshot.entry(k).or_default() += 1;
                }
            }
            Some(Message::InSync(s)) => {
                let total: u64 = snapshot.values().sum();
                println!("snapshot: {total} resources at revision {}", s.revision);
                for (k, n) in &snapshot {
                    println!("  {k}: {n}");
                }
                println!("in sync at revision {}", s.revision);
            }
            Some(Message::Deltas(batch)) => {
                for e in decode(&batch.entries, &compression)? {
                    let key = e.key.clone().unwrap_or_default();
                    if kind.as_ref().is_some_and(|k| *k != key.kind) {
                        continue;
                    }
                    let op = if e.deleted { "delete" } else { "put" };
                    match args.output {
                        Format::Text => println!("{} {op} {}", e.revision, key_text(&e)),
                        Format::Json => {
                            let value: serde_json::Value = if e.deleted {
                                serde_json::Value::Null
                            } else {
                                serde_json::from_slice(&e.value).unwrap_or(serde_json::Value::Null)
                            };
                            println!(
                                "{}",
                                serde_json::json!({"revision": e.revision, "op": op, "key": key_text(&e), "value": value})
                            );
                        }
                    }
                    seen += 1;
                    if args.count.is_some_and(|c| seen >= c) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            Some(Message::Ping(_) | Message::End(_)) | None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn stats(server: &ServerArgs, seconds: u64) -> Result<ExitCode> {
    let started = Instant::now();
    let mut stream = open(server, 0).await?;
    let mut compression = "identity".to_string();
    let (mut chunks, mut snap_bytes, mut snap_entries) = (0u64, 0u64, 0u64);
    let (mut batches, mut delta_bytes, mut deltas) = (0u64, 0u64, 0u64);
    let mut in_sync: Option<(Instant, u64)> = None;
    let mut server_revision = 0u64;
    let mut last_revision = 0u64;
    let mut lags = Vec::new();
    let window = Duration::from_secs(seconds);
    loop {
        let deadline = in_sync.map_or(started + Duration::from_secs(600), |(t, _)| t + window);
        let msg = match tokio::time::timeout_at(deadline.into(), stream.message()).await {
            Err(_) => break,
            Ok(m) => match m.map_err(status_error)? {
                Some(m) => m,
                None => break,
            },
        };
        match msg.message {
            Some(Message::Hello(h)) => {
                compression = h.compression;
                server_revision = h.revision;
            }
            Some(Message::Snapshot(c)) => {
                chunks += 1;
                snap_bytes += c.entries.len() as u64;
                snap_entries += decode(&c.entries, &compression)?.len() as u64;
            }
            Some(Message::InSync(s)) => {
                in_sync = Some((Instant::now(), s.revision));
                last_revision = s.revision;
            }
            Some(Message::Deltas(b)) => {
                batches += 1;
                delta_bytes += b.entries.len() as u64;
                deltas += decode(&b.entries, &compression)?.len() as u64;
                last_revision = b.last_revision;
            }
            Some(Message::Ping(p)) => {
                server_revision = p.revision;
                lags.push((
                    now_millis().saturating_sub(p.unix_millis),
                    p.revision.saturating_sub(last_revision),
                ));
            }
            Some(Message::End(_)) | None => {}
        }
    }
    let Some((t, rev)) = in_sync else {
        anyhow::bail!("the stream ended before it was in sync");
    };
    let report = serde_json::json!({
        "server_revision_at_hello": server_revision,
        "in_sync_revision": rev,
        "time_to_in_sync_ms": (t - started).as_secs_f64() * 1000.0,
        "snapshot": {"chunks": chunks, "resources": snap_entries, "bytes": snap_bytes, "compression": compression},
        "deltas": {"batches": batches, "entries": deltas, "bytes": delta_bytes, "window_s": seconds,
                   "per_second": deltas as f64 / seconds.max(1) as f64},
        "last_revision": last_revision,
        "pings": lags.len(),
        "max_ping_delay_ms": lags.iter().map(|l| l.0).max(),
        "max_revision_lag": lags.iter().map(|l| l.1).max(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
