//! The flow aggregator's ingest benchmark, printing one JSON object:
//!
//! - `store`: records per second into the window (`Store::ingest` of
//!   decoded `RecordBatch`es, batches of 2,000, no network), per run;
//! - `grpc`: records per second from a client streaming numbered batches
//!   over `FlowIngest` on loopback until the last is acknowledged (the
//!   server in the same process, on its own runtime threads), into a
//!   window that keeps every run's records (it grows: new pages);
//! - `grpc_full_window`: the same into a window already holding
//!   `--retained` records at its bound, so each record stored drops the
//!   oldest (the steady state of a full window);
//! - `memory`: the process's resident memory before and after the store
//!   holds `--retained` records, per record, beside the store's estimate.
//!
//! `cargo run --release -p manul-flows --example ingest-bench [-- --records N --runs R --retained M]`

#![allow(clippy::expect_used, clippy::unwrap_used)]

/// The aggregator's allocator, as `manul-flows` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use manul_flows::server::Shared;
use manul_flows::store::Store;
use manul_proto::flows::flow_ingest_client::FlowIngestClient;
use manul_proto::flows::{
    FlowEndpoint, FlowRecord, PolicyHit, PushHello, PushRequest, RecordBatch, push_request,
};
use serde_json::json;

const BATCH: usize = 2_000;

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A record as a busy node sends them: pods with a few labels, a
/// two-step enforced trace and, as with a staged policy in place, a
/// two-step pending trace.
fn record(i: usize) -> FlowRecord {
    let ep = |ns: &str, w: String, app: &str| FlowEndpoint {
        kind: "pod".into(),
        namespace: ns.into(),
        workload: w,
        labels: [
            ("app".to_owned(), app.to_owned()),
            ("team".to_owned(), "payments".to_owned()),
            ("pod-template-hash".to_owned(), "6d4cf56db6".to_owned()),
        ]
        .into_iter()
        .collect(),
    };
    FlowRecord {
        start_unix_s: 1_700_000_000,
        end_unix_s: 1_700_000_015,
        node: format!("node-{}", i % 100),
        reporter: "dst".into(),
        src: Some(ep("frontend", format!("web-{}-*", i % 500), "web")),
        dst: Some(ep("backend", format!("api-{}-*", i % 50), "api")),
        protocol: 6,
        dst_port: 8080,
        action: "allow".into(),
        enforced: vec![
            PolicyHit {
                tier: "security".into(),
                kind: "GlobalNetworkPolicy".into(),
                namespace: String::new(),
                name: "baseline".into(),
                rule_index: Some(2),
                action: "pass".into(),
            },
            PolicyHit {
                tier: "default".into(),
                kind: "NetworkPolicy".into(),
                namespace: "backend".into(),
                name: "api-allow".into(),
                rule_index: Some(0),
                action: "allow".into(),
            },
        ],
        pending: vec![
            PolicyHit {
                tier: "security".into(),
                kind: "GlobalNetworkPolicy".into(),
                namespace: String::new(),
                name: "baseline".into(),
                rule_index: Some(2),
                action: "pass".into(),
            },
            PolicyHit {
                tier: "default".into(),
                kind: "StagedNetworkPolicy".into(),
                namespace: "backend".into(),
                name: "api-lockdown".into(),
                rule_index: Some(0),
                action: "deny".into(),
            },
        ],
        pending_action: "deny".into(),
        packets_forward: 10,
        bytes_forward: 1500,
        packets_reverse: 8,
        bytes_reverse: 9000,
        flows_started: 3,
        flows_completed: 2,
        num_flows: 3,
        ..FlowRecord::default()
    }
}

/// Batch `i` (from 0) of `n` records in all: sequence number `i + 1`.
fn batch(i: usize, n: usize) -> RecordBatch {
    let first = i * BATCH;
    RecordBatch {
        seq: i as u64 + 1,
        records: (first..n.min(first + BATCH)).map(record).collect(),
    }
}

fn batches(n: usize) -> Vec<RecordBatch> {
    (0..n.div_ceil(BATCH)).map(|i| batch(i, n)).collect()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Records per second, per run, of `runs` client streams of `n` records
/// each (one after the other) into `shared`'s ingest service on loopback:
/// the server on one runtime thread, the client on another.
fn grpc(shared: &Shared, n: usize, runs: usize) -> Vec<f64> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (ingest, query) = shared.services();
    let listener = server_rt.block_on(async {
        // A loopback port below 32768.
        for port in 17_000..17_100 {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return l;
            }
        }
        panic!("no free loopback port in 17000..17100");
    });
    let addr = listener.local_addr().unwrap();
    // Served as the aggregator serves plaintext: its default limits, Nagle
    // off on each accepted connection (`manul_flows::listen`).
    let listeners = manul_flows::listen::Listeners::new(
        &manul_flows::listen::ListenArgs::default(),
        manul_listen::slots::nofile(),
    );
    server_rt.spawn(
        listeners
            .grpc
            .builder()
            .add_service(ingest)
            .add_service(query)
            .serve_with_incoming(manul_flows::listen::incoming(
                listener,
                listeners.grpc,
                listeners.grpc_slots,
            )),
    );
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut rates = Vec::new();
    for run in 0..runs {
        let input = batches(n);
        let last = input.len() as u64;
        let rate = client_rt.block_on(async {
            let mut client = FlowIngestClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let started = Instant::now();
            let hello = PushRequest {
                msg: Some(push_request::Msg::Hello(PushHello {
                    node: "bench".into(),
                    epoch: 1000 + run as u64,
                })),
            };
            let requests = std::iter::once(hello).chain(input.into_iter().map(|b| PushRequest {
                msg: Some(push_request::Msg::Batch(b)),
            }));
            let mut acks = client
                .push(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            while let Some(a) = acks.message().await.unwrap() {
                if a.seq == last {
                    break;
                }
            }
            n as f64 / started.elapsed().as_secs_f64()
        });
        rates.push(rate);
    }
    drop(client_rt);
    drop(server_rt);
    rates
}

fn main() {
    let n: usize = flag("--records")
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    let runs: usize = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    let retained: usize = flag("--retained")
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);

    // Memory per retained record, first (the allocator keeps what later
    // phases free, which would hide the growth): each batch is built just
    // before it is stored and dropped after, so what the RSS grows by is
    // what the store keeps of its records (their shared strings included),
    // plus one batch's worth.
    let before = rss_bytes();
    let mut store = Store::new(3600, usize::MAX);
    for i in 0..retained.div_ceil(BATCH) {
        store.ingest("node-a", 1, batch(i, retained), 1_700_000_015);
    }
    let after = rss_bytes();
    let per_record = (after.saturating_sub(before)) as f64 / retained as f64;
    let store_estimate = store.bytes() as f64 / retained as f64;
    drop(store);

    // The store alone.
    let mut store_rates = Vec::new();
    for run in 0..runs {
        let input = batches(n);
        let mut store = Store::new(3600, usize::MAX);
        let started = Instant::now();
        for b in input {
            store.ingest("node-a", run as u64, b, 1_700_000_015);
        }
        store_rates.push(n as f64 / started.elapsed().as_secs_f64());
    }

    // Over gRPC on loopback, into a window that grows (every run's records
    // stay: the kernel zeroes each new page the store takes).
    let growing = Shared::new(Store::new(3600, usize::MAX));
    let grpc_rates = grpc(&growing, n, runs);
    let grpc_stored = growing.store().len();
    drop(growing);

    // Over gRPC into a full window: `--retained` records held, so each
    // record stored drops the oldest (what a window at its bound or
    // expiring steadily does; freed records' memory is reused).
    let full = Shared::new(Store::new(3600, retained));
    for i in 0..retained.div_ceil(BATCH) {
        full.ingest("prefill", 1, batch(i, retained));
    }
    let steady_rates = grpc(&full, n, runs);
    let steady_stored = full.store().len();
    drop(full);

    let summary = |v: &Vec<f64>| {
        json!({
            "median": median(v.clone()).round(),
            "min": v.iter().cloned().fold(f64::INFINITY, f64::min).round(),
            "max": v.iter().cloned().fold(0.0, f64::max).round(),
            "runs": v.iter().map(|r| r.round()).collect::<Vec<_>>(),
        })
    };
    let out = json!({
        "records_per_run": n,
        "batch_records": BATCH,
        "store_records_per_s": summary(&store_rates),
        "grpc_records_per_s": summary(&grpc_rates),
        "grpc_records_stored": grpc_stored,
        "grpc_full_window_records_per_s": summary(&steady_rates),
        "grpc_full_window_records_held": steady_stored,
        "memory": {
            "retained": retained,
            "rss_delta_bytes": after.saturating_sub(before),
            "bytes_per_record": per_record.round(),
            "store_estimate_bytes_per_record": store_estimate.round(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
