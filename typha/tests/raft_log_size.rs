//! Large writes against a real `typha` process: the Raft log is compacted
//! by size as well as by count, so after twenty 2 MiB writes of one key
//! (far fewer than `--snapshot-every` entries) the log holds at most
//! `--snapshot-every-mib` of entries, and a restart replays that bounded
//! log (in pieces) with bounded memory and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_proto::v1::{ApplyItem, ApplyRequest};

/// A GlobalNetworkSet named `big` of about 2 MiB, different each `k`.
fn big(k: u64) -> ApplyRequest {
    let nets: Vec<String> = (0..100_000u32)
        .map(|i| format!("\"10.{}.{}.{}/32\"", k % 250, (i >> 8) % 256, i % 256))
        .collect();
    let document = format!(
        "{{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"GlobalNetworkSet\",\"metadata\":{{\"name\":\"big\"}},\"spec\":{{\"nets\":[{}]}}}}",
        nets.join(",")
    );
    ApplyRequest {
        items: vec![ApplyItem {
            document: document.into_bytes().into(),
            origin: format!("big-{k}"),
            expected_revision: None,
        }],
        deletes: Vec::new(),
        origin: None,
    }
}

/// Bytes the files under `dir` take on disk.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_compacted_by_size_and_a_restart_is_bounded() {
    let _serial = SERIAL.lock().await;
    let flags = ["--snapshot-every-mib", "4"].map(String::from).to_vec();
    let mut c = Cluster::start_with(1, 10_000, flags).await;
    let mut resources = c
        .resources(0)
        .await
        .max_decoding_message_size(64 * 1024 * 1024);
    let started = Instant::now();
    let mut last = 0;
    for k in 0..20 {
        last = resources.apply(big(k)).await.unwrap().into_inner().revision;
    }
    eprintln!("20 writes of 2 MiB in {:?}", started.elapsed());
    let snapshot = c.metric(0, "typha_raft_snapshot_index").await.unwrap();
    let applied = c.metric(0, "typha_raft_applied_index").await.unwrap();
    // 4 MiB of 2 MiB entries: at most two left in the log.
    assert!(
        applied - snapshot <= 2.0,
        "log from {snapshot} to {applied}: not compacted by size"
    );
    let used = disk_usage(&c.replicas[0].dir);
    eprintln!("data directory: {} KiB after 40 MiB of writes", used / 1024);

    c.kill(0);
    let restarted = Instant::now();
    c.spawn(0);
    c.wait_for_leader(Duration::from_secs(15)).await;
    c.wait_applied(last, Duration::from_secs(15)).await;
    let took = restarted.elapsed();
    let peak = c.memory_kib(0, "VmHWM").unwrap();
    eprintln!("restart in {took:?}, peak resident memory {peak} KiB");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(peak < 120 * 1024, "{peak} KiB");
    assert_eq!(c.names(0).await, ["big"]);
    eprintln!(
        "data directory after the restart: {} KiB",
        disk_usage(&c.replicas[0].dir) / 1024
    );
}
