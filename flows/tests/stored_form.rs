//! The stored form against the records it stands for. Before, the store
//! kept each record as prost decoded it and answered clones of it; now it
//! keeps the flat, shared form decoded straight from the wire. Property
//! tests: random records, sent as `PushRequest` bytes, come back from the
//! store exactly as sent, in order (by both ways into the store); and
//! decoding any bytes (random records, then cut, changed or grown) gives
//! what prost's decoding of the same bytes, converted, gives: the same
//! records or an error both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use manul_flows::flow::Flow;
use manul_flows::intern::Interner;
use manul_flows::store::Store;
use manul_flows::wire::{Batch, Push, PushDecoder};
use manul_flows::{Filter, server::MAX_LIST};
use manul_proto::flows::{
    FlowEndpoint, FlowFilter, FlowRecord, PolicyHit, PushHello, PushRequest, RecordBatch,
    push_request,
};
use proptest::prelude::*;
use prost::Message;

/// Strings as they come: a few that repeat (as namespaces, workloads,
/// labels and policy names do), empty, and any.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["", "prod", "web-*", "api", "default", "allow", "deny", "pod", "app"])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn endpoint() -> impl Strategy<Value = FlowEndpoint> {
    (
        text(),
        text(),
        text(),
        prop::collection::hash_map(text(), text(), 0..4),
    )
        .prop_map(|(kind, namespace, workload, labels)| FlowEndpoint {
            kind,
            namespace,
            workload,
            labels,
        })
}

fn hit() -> impl Strategy<Value = PolicyHit> {
    (text(), text(), text(), text(), any::<Option<u32>>(), text()).prop_map(
        |(tier, kind, namespace, name, rule_index, action)| PolicyHit {
            tier,
            kind,
            namespace,
            name,
            rule_index,
            action,
        },
    )
}

fn record() -> impl Strategy<Value = FlowRecord> {
    let strings = (text(), text(), text(), text(), text(), text());
    let parts = (
        prop::option::of(endpoint()),
        prop::option::of(endpoint()),
        prop::collection::vec(hit(), 0..3),
        prop::collection::vec(hit(), 0..3),
    );
    let numbers = (any::<[u64; 10]>(), any::<(u32, u32, u32)>());
    (strings, parts, numbers).prop_map(
        |(
            (node, reporter, action, service_namespace, service_name, pending_action),
            (src, dst, enforced, pending),
            (n, (protocol, dst_port, service_port)),
        )| FlowRecord {
            start_unix_s: n[0],
            end_unix_s: n[1],
            node,
            reporter,
            src,
            dst,
            protocol,
            dst_port,
            action,
            enforced,
            pending,
            service_namespace,
            service_name,
            service_port,
            packets_forward: n[2],
            bytes_forward: n[3],
            packets_reverse: n[4],
            bytes_reverse: n[5],
            flows_started: n[6],
            flows_completed: n[7],
            flows_denied: n[8],
            num_flows: n[9],
            pending_action,
        },
    )
}

fn push_bytes(seq: u64, records: Vec<FlowRecord>) -> Vec<u8> {
    PushRequest {
        msg: Some(push_request::Msg::Batch(RecordBatch { seq, records })),
    }
    .encode_to_vec()
}

/// What prost's decoding of `bytes` stands for, in the stored form.
fn oracle(bytes: &[u8]) -> Option<Push> {
    let m = PushRequest::decode(bytes).ok()?;
    let mut i = Interner::new();
    Some(match m.msg {
        None => Push::Empty,
        Some(push_request::Msg::Hello(h)) => Push::Hello(h),
        Some(push_request::Msg::Batch(b)) => Push::Batch(Batch {
            seq: b.seq,
            records: b
                .records
                .iter()
                .map(|r| Flow::from_record(r, &mut i))
                .collect(),
        }),
    })
}

fn everything(store: &Store) -> Vec<FlowRecord> {
    store.list(&Filter::new(FlowFilter::default()).unwrap(), MAX_LIST)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_store_answers_the_records_that_were_sent(
        batches in prop::collection::vec(prop::collection::vec(record(), 0..6), 1..4),
    ) {
        let mut decoder = PushDecoder::new();
        let mut from_wire = Store::new(u64::MAX, usize::MAX);
        let mut from_decoded = Store::new(u64::MAX, usize::MAX);
        let mut sent = Vec::new();
        for (i, records) in batches.into_iter().enumerate() {
            let seq = i as u64 + 1;
            let bytes = push_bytes(seq, records.clone());
            let Push::Batch(b) = decoder.decode(&bytes).unwrap() else {
                panic!("a batch decoded as something else");
            };
            prop_assert_eq!(b.seq, seq);
            from_wire.ingest_flat("n", 1, b, 0);
            from_decoded.ingest("n", 1, RecordBatch { seq, records: records.clone() }, 0);
            sent.extend(records);
        }
        prop_assert_eq!(&everything(&from_wire), &sent);
        prop_assert_eq!(&everything(&from_decoded), &sent);
    }

    #[test]
    fn any_bytes_decode_as_prost_decodes_them(
        records in prop::collection::vec(record(), 0..4),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..3),
    ) {
        let mut bytes = push_bytes(7, records);
        for (at, how, b) in cuts {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes.truncate(i),
                1 => bytes[i] = b,
                _ => bytes.insert(i, b),
            }
        }
        let got = PushDecoder::new().decode(&bytes).ok();
        prop_assert_eq!(got, oracle(&bytes));
    }
}

/// A `FlowEndpoint` written by hand: a label given twice, an unknown
/// field, and the endpoint's message given twice (merged).
#[test]
fn irregular_but_valid_encodings_decode_as_prost_decodes_them() {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let string = |field: u32, s: &[u8], out: &mut Vec<u8>| {
        encode_key(field, WireType::LengthDelimited, out);
        encode_varint(s.len() as u64, out);
        out.extend_from_slice(s);
    };
    let entry = |k: &str, v: &str| {
        let mut e = Vec::new();
        string(1, k.as_bytes(), &mut e);
        string(2, v.as_bytes(), &mut e);
        e
    };
    let mut ep = Vec::new();
    string(1, b"pod", &mut ep);
    string(4, &entry("app", "old"), &mut ep);
    string(4, &entry("app", "web"), &mut ep);
    encode_key(99, WireType::Varint, &mut ep);
    encode_varint(5, &mut ep);
    let mut more = Vec::new();
    string(3, b"web-*", &mut more);
    let record = |src_parts: &[&[u8]]| {
        let mut r = Vec::new();
        for p in src_parts {
            string(5, p, &mut r);
        }
        encode_key(8, WireType::Varint, &mut r);
        encode_varint(1, &mut r);
        encode_key(8, WireType::Varint, &mut r);
        encode_varint(443, &mut r);
        let mut b = Vec::new();
        string(2, &r, &mut b);
        let mut push = Vec::new();
        string(2, &b, &mut push);
        push
    };
    for bytes in [record(&[&ep]), record(&[&ep, &more])] {
        let got = PushDecoder::new().decode(&bytes).unwrap();
        assert_eq!(Some(got.clone()), oracle(&bytes));
        let Push::Batch(b) = got else {
            panic!("not a batch")
        };
        let src = b.records[0].src.as_ref().unwrap();
        assert_eq!(
            (src.label("app"), b.records[0].dst_port),
            (Some("web"), 443)
        );
    }
    let merged = PushDecoder::new().decode(&record(&[&ep, &more])).unwrap();
    let Push::Batch(b) = merged else {
        panic!("not a batch")
    };
    assert_eq!(&*b.records[0].src.as_ref().unwrap().workload, "web-*");
}

#[test]
fn a_hello_and_bad_bytes() {
    let hello = PushRequest {
        msg: Some(push_request::Msg::Hello(PushHello {
            node: "node1".into(),
            epoch: 9,
        })),
    }
    .encode_to_vec();
    assert_eq!(
        PushDecoder::new().decode(&hello).unwrap(),
        Push::Hello(PushHello {
            node: "node1".into(),
            epoch: 9
        })
    );
    assert_eq!(PushDecoder::new().decode(&[]).unwrap(), Push::Empty);
    let bad_text = push_bytes(
        1,
        vec![FlowRecord {
            node: "\u{e9}".into(),
            ..FlowRecord::default()
        }],
    );
    // "é" is two bytes; its first alone is not UTF-8.
    let at = bad_text.iter().position(|b| *b == 0xc3).unwrap();
    let mut bytes = bad_text.clone();
    bytes[at + 1] = b'x';
    let err = PushDecoder::new().decode(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a push message's string field is not UTF-8"
    );
    let mut truncated = bad_text;
    truncated.pop();
    let err = PushDecoder::new().decode(&truncated).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 2 of PushRequest runs past its message"
    );
}
