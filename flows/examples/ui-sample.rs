//! Serves the web UI on `127.0.0.1:7999` over an in-memory window filled
//! with a few sample records (two namespaces, allowed and denied flows, a
//! name with markup in it), to look at the page without a cluster:
//! `cargo run -p manul-flows --example ui-sample`. The records are made
//! up; a real cluster's are in `local-cluster`'s flows tests.

use manul_flows::{Shared, Store};
use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit, RecordBatch};

struct Sample<'a> {
    reporter: &'a str,
    src: (&'a str, &'a str),
    dst: (&'a str, &'a str),
    port: u32,
    action: &'a str,
    flows: u64,
    policy: (&'a str, &'a str, &'a str),
}

fn record(s: Sample<'_>) -> FlowRecord {
    let ep = |(ns, w): (&str, &str)| FlowEndpoint {
        kind: "pod".into(),
        namespace: ns.into(),
        workload: w.into(),
        labels: Default::default(),
    };
    let now = manul_flows::server::unix_now();
    let (kind, namespace, name) = s.policy;
    FlowRecord {
        start_unix_s: now - 15,
        end_unix_s: now,
        node: if s.reporter == "dst" {
            "node2"
        } else {
            "node1"
        }
        .into(),
        reporter: s.reporter.into(),
        src: Some(ep(s.src)),
        dst: Some(ep(s.dst)),
        protocol: 6,
        dst_port: s.port,
        action: s.action.into(),
        enforced: vec![PolicyHit {
            tier: "default".into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            rule_index: (kind != "EndOfTier").then_some(0),
            action: s.action.into(),
        }],
        flows_started: if s.action == "allow" { s.flows } else { 0 },
        flows_denied: if s.action == "deny" { s.flows } else { 0 },
        packets_forward: 6 * s.flows,
        bytes_forward: 420 * s.flows,
        packets_reverse: 4 * s.flows,
        bytes_reverse: 900 * s.flows,
        ..FlowRecord::default()
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let shared = Shared::new(Store::new(3600, 1000));
    let end = ("EndOfTier", "", "default");
    let records = vec![
        record(Sample {
            reporter: "dst",
            src: ("production", "frontend"),
            dst: ("production", "api"),
            port: 8080,
            action: "allow",
            flows: 5,
            policy: ("NetworkPolicy", "production", "frontend-to-api"),
        }),
        record(Sample {
            reporter: "dst",
            src: ("production", "other"),
            dst: ("production", "api"),
            port: 8080,
            action: "deny",
            flows: 3,
            policy: end,
        }),
        record(Sample {
            reporter: "dst",
            src: ("production", "api"),
            dst: ("data", "db-*"),
            port: 5432,
            action: "allow",
            flows: 7,
            policy: ("NetworkPolicy", "data", "api-to-db"),
        }),
        record(Sample {
            reporter: "src",
            src: ("production", "api"),
            dst: ("data", "<b>not-markup</b>"),
            port: 6379,
            action: "deny",
            flows: 1,
            policy: end,
        }),
    ];
    shared.ingest("node2", 1, RecordBatch { seq: 1, records });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:7999").await?;
    println!("http://127.0.0.1:7999/");
    manul_flows::web::serve(listener, shared, None).await
}
