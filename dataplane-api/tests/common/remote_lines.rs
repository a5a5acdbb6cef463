//! Any bytes as what a client sends a remote driver server (JSON lines,
//! `manul_dataplane_api::remote`), served by the real `serve_connection`
//! over a socket pair to the null driver. Nothing may panic; every request
//! line gets exactly one answer, in order, either `{"ok":true}` or
//! `{"error":"...","index":N?}`; an answer is `ok` exactly when its line is
//! a well-formed request (within the line bound, one key, `batch`, a list
//! of operations) whose batch the driver took; a batch the driver refused
//! leaves what it holds as it was, and an unterminated last line is never
//! applied. Shared by the `remote_lines` fuzz target and
//! `dataplane-api/tests/remote_protocol.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;

use manul_dataplane_api::{Driver, DriverError, NullDriver, Operation, serve_connection};
use serde::Deserialize;

/// The line bound of the server under test: small, so that inputs reach it.
pub const MAX_LINE: usize = 4096;

/// The protocol's request, as its documentation states it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    batch: Vec<Operation>,
}

/// The null driver, recording whether each batch was taken and checking
/// that a refused one changed nothing.
#[derive(Debug, Default)]
struct Recording {
    inner: NullDriver,
    taken: Vec<bool>,
}

impl Driver for Recording {
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        let before = self.inner.state().clone();
        let result = self.inner.apply(batch);
        if result.is_err() {
            // Nothing recorded, and out of sync until a resync's InSync.
            let after = self.inner.state();
            assert!(!after.in_sync, "a refused batch left the driver in sync");
            let after_but_sync = manul_dataplane_api::DesiredState {
                in_sync: before.in_sync,
                ..after.clone()
            };
            assert_eq!(
                after_but_sync, before,
                "a refused batch changed what the driver holds"
            );
        }
        self.taken.push(result.is_ok());
        result
    }

    fn mark_stale(&mut self) {
        self.inner.mark_stale();
    }

    fn name(&self) -> &'static str {
        "recording"
    }
}

/// What the server answered each request line: whether it was `ok`.
pub fn offer_lines(data: &[u8]) -> Vec<bool> {
    let (client, server) = UnixStream::pair().unwrap();
    let mut writer = client.try_clone().unwrap();
    let input = data.to_vec();
    let write = std::thread::spawn(move || {
        // The server may stop reading (it never does here); ignore a
        // broken pipe rather than hide the server's own failure.
        let _ = writer.write_all(&input);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut reader = client;
    let read = std::thread::spawn(move || {
        let mut answers = Vec::new();
        reader.read_to_end(&mut answers).unwrap();
        answers
    });
    let mut driver = Recording::default();
    serve_connection(server, &mut driver, MAX_LINE).expect("the server serves to the end");
    write.join().unwrap();
    let answers = read.join().unwrap();
    check(data, &answers, &driver.taken)
}

/// Checks the answers against the request lines; returns the `ok` flags.
fn check(data: &[u8], answers: &[u8], taken: &[bool]) -> Vec<bool> {
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    // The piece after the last newline is no line: never applied.
    lines.pop();
    assert!(answers.is_empty() || answers.ends_with(b"\n"));
    let answer_lines: Vec<&[u8]> = if answers.is_empty() {
        Vec::new()
    } else {
        answers[..answers.len() - 1]
            .split(|b| *b == b'\n')
            .collect()
    };
    assert_eq!(
        answer_lines.len(),
        lines.len(),
        "one answer per request line"
    );
    let mut taken = taken.iter();
    let mut oks = Vec::new();
    for (line, answer) in lines.iter().zip(&answer_lines) {
        let answer: serde_json::Value =
            serde_json::from_slice(answer).expect("every answer is JSON");
        let object = answer.as_object().expect("every answer is an object");
        let ok = match (object.get("ok"), object.get("error")) {
            (Some(serde_json::Value::Bool(true)), None) => {
                assert_eq!(object.len(), 1, "{answer}");
                true
            }
            (None, Some(serde_json::Value::String(message))) => {
                assert!(!message.is_empty());
                assert!(
                    object.keys().all(|k| k == "error" || k == "index"),
                    "{answer}"
                );
                if let Some(index) = object.get("index") {
                    assert!(index.is_u64(), "{answer}");
                }
                false
            }
            _ => panic!("an answer is ok or an error: {answer}"),
        };
        let well_formed = line.len() <= MAX_LINE
            && !line.iter().all(u8::is_ascii_whitespace)
            && serde_json::from_slice::<Request>(line).is_ok();
        if well_formed {
            let took = taken
                .next()
                .expect("a well-formed request reached the driver");
            assert_eq!(ok, *took, "the answer says what the driver did");
        } else {
            assert!(!ok, "a malformed request line was answered ok");
        }
        oks.push(ok);
    }
    assert!(
        taken.next().is_none(),
        "the driver saw a batch no answer accounts for"
    );
    oks
}

/// Real request streams in the protocol's wire form (its documentation's
/// lines): a whole session of every operation in contract order, the
/// documented exchange, a contract violation, garbage, an over-long line,
/// and an unterminated last line.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let rule = r#"{"id":"default/prod/allow-web/inbound/0","action":"Allow","ip_version":null,"protocol":6,"not_protocol":null,"icmp":null,"not_icmp":null,"src":{"nets":[],"not_nets":[],"ports":[],"not_ports":[],"named_port_sets":[],"not_named_port_sets":[],"ip_sets":["s:web"],"not_ip_sets":[]},"dst":{"nets":[],"not_nets":[],"ports":[{"first":80,"last":80}],"not_ports":[],"named_port_sets":["np:http"],"not_named_port_sets":[],"ip_sets":[],"not_ip_sets":[]}}"#;
    let icmp_rule = r#"{"id":"default/prod/allow-web/outbound/0","action":"Deny","ip_version":4,"protocol":1,"not_protocol":null,"icmp":{"icmp_type":8,"code":null},"not_icmp":null,"src":{"nets":["10.0.0.0/24"],"not_nets":[],"ports":[],"not_ports":[],"named_port_sets":[],"not_named_port_sets":[],"ip_sets":[],"not_ip_sets":[]},"dst":{"nets":[],"not_nets":["10.0.1.0/24"],"ports":[],"not_ports":[],"named_port_sets":[],"not_named_port_sets":[],"ip_sets":[],"not_ip_sets":[]}}"#;
    let session = [
        r#"{"IpSetUpdate":{"id":"s:web","kind":"Net","members":[{"Net":"10.0.0.1/32"}]}}"#.to_owned(),
        r#"{"IpSetUpdate":{"id":"np:http","kind":"NamedPort","members":[{"NamedPort":{"ip":"10.0.0.1","protocol":6,"port":8080}}]}}"#.to_owned(),
        format!(
            r#"{{"PolicyUpdate":{{"id":{{"tier":"default","name":"prod/allow-web"}},"policy":{{"inbound":[{rule}],"outbound":[{icmp_rule}]}}}}}}"#
        ),
        format!(
            r#"{{"ProfileUpdate":{{"id":"kns.prod","profile":{{"inbound":[{rule}],"outbound":[]}}}}}}"#
        ),
        r#"{"WorkloadEndpointUpdate":{"id":{"namespace":"prod","name":"web-0"},"interface_name":"cali0","nets":["10.0.0.1/32"],"mac":null,"tiers":[{"name":"default","default_action":"Deny","inbound":[{"tier":"default","name":"prod/allow-web"}],"outbound":[]}],"profiles":["kns.prod"]}}"#.to_owned(),
        r#"{"HostEndpointUpdate":{"id":"node1-eth0","interface_name":"eth0","expected_ips":["192.168.0.10"],"tiers":[],"pre_dnat_tiers":[],"untracked_tiers":[],"forward_tiers":[],"profiles":[]}}"#.to_owned(),
        r#"{"ServiceUpdate":{"namespace":"prod","name":"web","cluster_ips":["10.96.0.10"],"external_ips":[],"load_balancer_ips":[],"load_balancer_source_ranges":[],"external_traffic":"Cluster","internal_traffic":"Cluster","affinity_timeout_seconds":null,"health_check_node_port":null,"balancing":"Random","ports":[{"name":"http","protocol":6,"port":80,"node_port":null,"backends":[{"ip":"10.0.0.1","port":8080,"local":true}],"local_backends":[{"ip":"10.0.0.1","port":8080,"local":true}]}]}}"#.to_owned(),
        r#""InSync""#.to_owned(),
    ];
    let removals = [
        r#"{"IpSetDelta":{"id":"s:web","added":[{"Net":"10.0.0.2/32"}],"removed":[{"Net":"10.0.0.1/32"}]}}"#,
        r#"{"ServiceRemove":{"namespace":"prod","name":"web"}}"#,
        r#"{"HostEndpointRemove":{"id":"node1-eth0"}}"#,
        r#"{"WorkloadEndpointRemove":{"id":{"namespace":"prod","name":"web-0"}}}"#,
        r#"{"ProfileRemove":{"id":"kns.prod"}}"#,
        r#"{"PolicyRemove":{"id":{"tier":"default","name":"prod/allow-web"}}}"#,
        r#"{"IpSetRemove":{"id":"np:http"}}"#,
        r#"{"IpSetRemove":{"id":"s:web"}}"#,
    ];
    let batch = |ops: &[&str]| format!("{{\"batch\":[{}]}}\n", ops.join(","));
    let session_refs: Vec<&str> = session.iter().map(String::as_str).collect();
    let mut whole = batch(&session_refs);
    whole.push_str(&batch(&removals[..1]));
    whole.push_str(&batch(&removals[1..]));
    let one_per_line: String = session_refs.iter().map(|op| batch(&[op])).collect();
    vec![
        ("seed-session".to_owned(), whole.into_bytes()),
        ("seed-one-per-line".to_owned(), one_per_line.into_bytes()),
        (
            "seed-documented-exchange".to_owned(),
            concat!(
                "{\"batch\":[{\"IpSetUpdate\":{\"id\":\"s:web\",\"kind\":\"Net\",\"members\":[]}},\"InSync\"]}\n",
                "{\"batch\":[{\"IpSetRemove\":{\"id\":\"s:nope\"}}]}\n",
                "hello\n",
            )
            .as_bytes()
            .to_vec(),
        ),
        (
            "seed-edges".to_owned(),
            format!(
                "\n \r\n{{\"batch\":[],\"extra\":1}}\n{{\"batch\":[\"InSync\"]}}\r\n{}\n{{\"batch\":[\"InSync\"]}}",
                "x".repeat(MAX_LINE + 1)
            )
            .into_bytes(),
        ),
    ]
}
