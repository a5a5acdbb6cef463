//! Write requests made to cost a replica as much as possible, against a
//! real `typha` process on loopback: items of 8 MiB that are nothing but
//! errors (`[1,1,…]`, four million documents that are not resources),
//! seven of them in one request, and a request over the size limit. Each is
//! refused with a bounded message, the replica's peak memory stays
//! bounded, and writes go on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_proto::v1::{ApplyItem, ApplyRequest};

/// The model's largest input.
const ITEM: usize = 8 * 1024 * 1024;

/// `[1,1,…,1]` of `ITEM` bytes.
fn numbers() -> bytes::Bytes {
    let mut doc = Vec::with_capacity(ITEM);
    doc.push(b'[');
    while doc.len() < ITEM - 2 {
        doc.extend_from_slice(b"1,");
    }
    doc.truncate(ITEM - 2);
    doc.extend_from_slice(b"1]");
    doc.into()
}

fn request(items: usize, document: &bytes::Bytes) -> ApplyRequest {
    ApplyRequest {
        items: (0..items)
            .map(|k| ApplyItem {
                document: document.clone(),
                origin: format!("numbers-{k}.json"),
                expected_revision: None,
            })
            .collect(),
        deletes: Vec::new(),
        origin: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_errors_costs_bounded_memory_and_message() {
    let _serial = SERIAL.lock().await;
    let flags = ["--max-request-mib", "60"].map(String::from).to_vec();
    let c = Cluster::start_with(1, 10_000, flags).await;
    let mut resources = c
        .resources(0)
        .await
        .max_decoding_message_size(64 * 1024 * 1024);
    let before = c.memory_kib(0, "VmHWM").unwrap();
    let document = numbers();

    // One item, then seven: each refusal lists the first problems and
    // says that validation stopped.
    for items in [1, 7] {
        let started = Instant::now();
        let refused = resources
            .apply(request(items, &document))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        let message = refused.message();
        assert!(message.len() <= 4096 + 200, "{} bytes", message.len());
        assert!(
            message.starts_with("numbers-0.json: document 1: a resource must be a mapping"),
            "{message}"
        );
        assert!(message.contains("validation stopped after"), "{message}");
        assert!(!message.contains("numbers-1.json"), "{message}");
        eprintln!("{items} item(s) of 8 MiB refused in {took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    // Over the request limit: refused by gRPC's decoder, from the
    // message's length prefix.
    let refused = resources.apply(request(8, &document)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");

    // Seven 8 MiB items are 56 MiB on the wire, held while they are
    // validated: the peak stays within a small multiple of that (it was
    // 16.6 GB before the limits).
    let peak = c.memory_kib(0, "VmHWM").unwrap();
    eprintln!("peak resident memory {before} KiB before, {peak} KiB after");
    assert!(peak < 400 * 1024, "peak resident memory {peak} KiB");

    // Writes go on.
    common::apply(&c, 0, &["after".to_owned()]).await.unwrap();
    assert_eq!(c.names(0).await, ["after"]);
    assert_eq!(c.http(0, "/readyz").await.unwrap().0, 200);
}
