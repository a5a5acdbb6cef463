use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::driver::ContractViolation;
use crate::null::NullDriver;
use crate::ops::{Action, IpSetMember};
use crate::testutil::*;

/// A socket path in a fresh directory (kept alive by the guard).
fn socket() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("driver.sock");
    (dir, path)
}

fn server(path: &PathBuf, max_line: usize) -> ServeHandle<NullDriver> {
    let listener = UnixListener::bind(path).expect("bind");
    ServeHandle::spawn_with(listener, NullDriver::new(), max_line).expect("spawn")
}

/// Later batches after the sample state: deltas, replacements, removals.
fn more_batches() -> Vec<Vec<crate::ops::Operation>> {
    use crate::ops::Operation;
    vec![
        vec![Operation::IpSetDelta {
            id: "s:web".to_owned(),
            added: vec![IpSetMember::Net(net("10.0.0.3/32"))],
            removed: vec![IpSetMember::Net(net("10.0.0.2/32"))],
        }],
        vec![
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "web-2",
                &["10.0.0.3/32"],
                Vec::new(),
                &["kns.prod"],
            )),
            Operation::WorkloadEndpointRemove {
                id: eid("prod", "web-1"),
            },
        ],
        vec![Operation::ServiceRemove {
            namespace: "prod".to_owned(),
            name: "web".to_owned(),
        }],
    ]
}

/// A raw protocol client: one line out, one line back.
struct Raw {
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn connect(path: &PathBuf) -> Self {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    fn answer(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        assert!(
            line.ends_with('\n'),
            "an answer is one whole line: {line:?}"
        );
        serde_json::from_str(&line).expect("an answer is JSON")
    }

    fn exchange(&mut self, line: &str) -> serde_json::Value {
        self.send(line.as_bytes());
        self.send(b"\n");
        self.answer()
    }
}

#[test]
fn batches_through_the_socket_give_the_same_state_as_applying_them_directly() {
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    assert_eq!(remote.name(), "remote");
    assert_eq!(remote.options().timeout, DEFAULT_TIMEOUT);
    let mut direct = NullDriver::new();
    let mut batches = vec![sample_batch()];
    batches.extend(more_batches());
    for batch in &batches {
        remote.apply(batch).expect("remote apply");
        direct.apply(batch).expect("direct apply");
    }
    // An empty batch is a valid no-op.
    remote.apply(&[]).expect("empty batch");
    direct.apply(&[]).expect("empty batch");
    let served = handle.stop().expect("stop");
    assert_eq!(served.state(), direct.state());
    assert_eq!(served.batches_applied(), direct.batches_applied());
    assert_eq!(served.workload_endpoint_count(), 2);
}

#[test]
fn a_contract_violation_comes_back_as_an_error_and_the_connection_stays_usable() {
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    remote.apply(&sample_batch()).expect("sample");
    let bad = [
        net_set("s:new", &[]),
        crate::ops::Operation::PolicyRemove {
            id: pid("default", "prod/allow-web"),
        },
    ];
    let error = remote.apply(&bad).expect_err("still referenced");
    match &error {
        DriverError::Rejected { message, index } => {
            assert_eq!(*index, Some(1));
            assert!(message.contains("operation 1 (PolicyRemove)"), "{message}");
            assert!(message.contains("default/prod/allow-web"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(error.to_string().contains("at operation 1"), "{error}");
    assert!(!remote.is_broken());
    remote
        .apply(&more_batches()[0])
        .expect("the next good batch works");
    let served = handle.stop().expect("stop");
    assert!(
        served.ip_set("s:new").is_none(),
        "the refused batch was not applied"
    );
    assert!(
        served
            .ip_set("s:web")
            .expect("set")
            .contains_addr(ip("10.0.0.3"))
    );
}

#[test]
fn garbage_lines_get_error_answers_and_the_next_batch_works() {
    let (_dir, path) = socket();
    let handle = server(&path, 4096);
    let mut raw = Raw::connect(&path);
    let good = serde_json::to_string(&RequestRef {
        batch: &[net_set("s:one", &["10.0.0.1/32"])],
    })
    .expect("encode");

    let answer = raw.exchange("this is not json");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .starts_with("malformed request"),
        "{answer}"
    );
    assert_eq!(answer.get("ok"), None);

    let answer = raw.exchange("");
    assert_eq!(answer["error"], "empty request line");

    let answer = raw.exchange(r#"{"batch": [], "extra": 1}"#);
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("unknown field"),
        "{answer}"
    );

    let answer = raw.exchange(r#"{"batch": [{"NoSuchOperation": {}}]}"#);
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("NoSuchOperation"),
        "{answer}"
    );

    let answer = raw.exchange(&"x".repeat(10_000));
    assert_eq!(
        answer["error"],
        "request line of 10000 bytes exceeds the limit of 4096 bytes"
    );

    // Invalid UTF-8.
    raw.send(b"{\"batch\": [\xff]}\n");
    assert!(raw.answer()["error"].is_string());

    // Two requests in one write get two answers, in order.
    raw.send(format!("{good}\nnope\n").as_bytes());
    assert_eq!(raw.answer(), serde_json::json!({"ok": true}));
    assert!(raw.answer()["error"].is_string());

    let answer = raw.exchange(&good);
    assert_eq!(answer, serde_json::json!({"ok": true}));
    drop(raw);
    let served = handle.stop().expect("stop");
    assert_eq!(served.ip_set_count(), 1);
    assert_eq!(served.batches_applied(), 2);
}

#[test]
fn an_unterminated_last_line_is_never_applied() {
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    let mut raw = Raw::connect(&path);
    let good = serde_json::to_string(&RequestRef {
        batch: &[net_set("s:one", &[])],
    })
    .expect("encode");
    raw.send(good.as_bytes());
    raw.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut rest = String::new();
    raw.reader.read_to_string(&mut rest).expect("read to end");
    assert_eq!(rest, "", "no answer to a line without its newline");
    // The server moves on to the next client.
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    remote.apply(&[net_set("s:two", &[])]).expect("apply");
    let served = handle.stop().expect("stop");
    assert!(served.ip_set("s:one").is_none());
    assert!(served.ip_set("s:two").is_some());
}

#[test]
fn clients_are_served_one_after_another() {
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    {
        let mut first = RemoteDriver::connect(&path).expect("connect");
        first.apply(&[net_set("s:one", &[])]).expect("apply");
    }
    let mut second = RemoteDriver::connect(&path).expect("connect");
    second.apply(&[net_set("s:two", &[])]).expect("apply");
    let served = handle.stop().expect("stop");
    assert_eq!(served.ip_set_count(), 2);
}

/// A fake server that answers each request line with `answer` (or not at
/// all when it is `None`).
fn fake_server(path: &PathBuf, answer: Option<&'static [u8]>) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
            match answer {
                Some(bytes) => {
                    if reader.get_mut().write_all(bytes).is_err() {
                        return;
                    }
                }
                None => {
                    // Hold the connection without answering, then go.
                    std::thread::sleep(Duration::from_secs(2));
                    return;
                }
            }
        }
    })
}

#[test]
fn a_silent_server_times_out_and_the_connection_is_then_unusable() {
    let (_dir, path) = socket();
    let fake = fake_server(&path, None);
    let mut remote = RemoteDriver::connect_with(
        &path,
        RemoteOptions {
            timeout: Duration::from_millis(200),
            ..RemoteOptions::default()
        },
    )
    .expect("connect");
    let error = remote.apply(&[net_set("s", &[])]).expect_err("no answer");
    assert!(
        matches!(error, DriverError::Timeout(t) if t == Duration::from_millis(200)),
        "{error:?}"
    );
    assert!(remote.is_broken());
    assert!(matches!(remote.apply(&[]), Err(DriverError::Broken)));
    fake.join().expect("fake server");
}

#[test]
fn malformed_answers_and_disconnects_are_errors() {
    let (_dir, path) = socket();
    let fake = fake_server(&path, Some(b"{\"ok\": false}\n"));
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    let error = remote.apply(&[]).expect_err("ok false is no answer");
    assert!(
        matches!(error, DriverError::BadResponse { source: None, .. }),
        "{error:?}"
    );
    assert!(matches!(remote.apply(&[]), Err(DriverError::Broken)));
    drop(remote);
    fake.join().expect("fake");

    let (_dir, path) = socket();
    let fake = fake_server(&path, Some(b"<html>\n"));
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    let error = remote.apply(&[]).expect_err("not JSON");
    assert!(
        matches!(error, DriverError::BadResponse { source: Some(_), ref line } if line == "<html>"),
        "{error:?}"
    );
    drop(remote);
    fake.join().expect("fake");

    let (_dir, path) = socket();
    let fake = fake_server(&path, Some(b"{\"ok\": true, \"later\": \"ignored\"}\n"));
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    remote.apply(&[]).expect("unknown answer keys are ignored");
    drop(remote);
    fake.join().expect("fake");

    // A server that goes away.
    let (_dir, path) = socket();
    let listener = UnixListener::bind(&path).expect("bind");
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    drop(accepted);
    drop(listener);
    let error = remote.apply(&[]).expect_err("gone");
    assert!(
        matches!(error, DriverError::Disconnected | DriverError::Io { .. }),
        "{error:?}"
    );
    assert!(remote.is_broken());
}

#[test]
fn an_over_long_answer_is_bounded() {
    let (_dir, path) = socket();
    let fake = fake_server(&path, Some(b"{\"error\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n"));
    let mut remote = RemoteDriver::connect_with(
        &path,
        RemoteOptions {
            max_line: 64,
            ..RemoteOptions::default()
        },
    )
    .expect("connect");
    let error = remote.apply(&[]).expect_err("too long");
    assert!(
        matches!(
            error,
            DriverError::LineTooLong {
                what: "answer",
                limit: 64,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(remote.is_broken());
    drop(remote);
    fake.join().expect("fake");
}

#[test]
fn an_over_long_request_is_refused_before_sending() {
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    let mut remote = RemoteDriver::connect_with(
        &path,
        RemoteOptions {
            max_line: 100,
            ..RemoteOptions::default()
        },
    )
    .expect("connect");
    let error = remote.apply(&sample_batch()).expect_err("too long");
    assert!(
        matches!(
            error,
            DriverError::LineTooLong {
                what: "request",
                limit: 100,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!remote.is_broken(), "nothing was sent");
    remote
        .apply(&[crate::ops::Operation::InSync])
        .expect("a short batch still works");
    assert!(handle.stop().expect("stop").in_sync());
}

#[test]
fn bad_options_and_missing_sockets_are_errors() {
    let (_dir, path) = socket();
    let error = RemoteDriver::connect(&path).expect_err("nothing listens");
    assert!(matches!(error, DriverError::Connect { .. }));
    assert!(
        std::error::Error::source(&error).is_some(),
        "the io error is the source"
    );
    let _listener = UnixListener::bind(&path).expect("bind");
    let zero = RemoteOptions {
        timeout: Duration::ZERO,
        ..RemoteOptions::default()
    };
    assert!(matches!(
        RemoteDriver::connect_with(&path, zero),
        Err(DriverError::InvalidOption(_))
    ));
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    assert!(matches!(
        remote.set_timeout(Duration::ZERO),
        Err(DriverError::InvalidOption(_))
    ));
    remote.set_timeout(Duration::from_secs(5)).expect("set");
    assert_eq!(remote.options().timeout, Duration::from_secs(5));
    assert_eq!(remote.path(), path.as_path());
}

/// A driver shared with the test, for [`serve`], which never returns.
struct Shared(Arc<Mutex<NullDriver>>);

impl Driver for Shared {
    fn apply(&mut self, batch: &[crate::ops::Operation]) -> Result<(), DriverError> {
        self.0.lock().expect("lock").apply(batch)
    }

    fn mark_stale(&mut self) {
        self.0.lock().expect("lock").mark_stale();
    }

    fn name(&self) -> &'static str {
        "shared"
    }
}

#[test]
fn serve_forever_serves_a_boxed_driver() {
    let (_dir, path) = socket();
    let listener = UnixListener::bind(&path).expect("bind");
    let shared = Arc::new(Mutex::new(NullDriver::new()));
    let driver: Box<dyn Driver> = Box::new(Shared(Arc::clone(&shared)));
    // Detached: it ends with the test process.
    std::thread::spawn(move || serve(listener, driver));
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    remote.apply(&sample_batch()).expect("apply");
    let error = remote
        .apply(&[crate::ops::Operation::ProfileRemove {
            id: "kns.prod".to_owned(),
        }])
        .expect_err("still used");
    assert!(matches!(
        error,
        DriverError::Rejected { index: Some(0), .. }
    ));
    drop(remote);
    let mut expected = NullDriver::new();
    expected.apply(&sample_batch()).expect("apply");
    // The refusal left the driver out of sync, nothing of it recorded.
    expected.mark_stale();
    assert_eq!(shared.lock().expect("lock").state(), expected.state());
    assert_eq!(
        shared.lock().expect("lock").stale_count(),
        expected.stale_count()
    );
}

#[test]
fn stop_interrupts_an_idle_connection() {
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    remote.apply(&[net_set("s", &[])]).expect("apply");
    // The client stays connected; stop must not wait for it.
    let served = handle.stop().expect("stop");
    assert_eq!(served.ip_set_count(), 1);
    assert!(
        remote.apply(&[]).is_err(),
        "the server closed the connection"
    );
}

#[test]
fn read_line_bounded_bounds_and_recovers() {
    let input = b"short\nexactly8\n0123456789abcdef\nafter\nunterminated";
    let mut reader = BufReader::with_capacity(4, Cursor::new(&input[..]));
    let mut line = Vec::new();
    let mut next = |line: &mut Vec<u8>| read_line_bounded(&mut reader, line, 9).expect("read");
    assert_eq!(next(&mut line), ReadLine::Line);
    assert_eq!(line, b"short");
    assert_eq!(next(&mut line), ReadLine::Line);
    assert_eq!(line, b"exactly8");
    assert_eq!(next(&mut line), ReadLine::TooLong(16));
    assert!(line.is_empty());
    assert_eq!(next(&mut line), ReadLine::Line);
    assert_eq!(line, b"after");
    assert_eq!(next(&mut line), ReadLine::Eof);
    assert!(line.is_empty());
}

/// The module documentation's examples are what the code does: every
/// operation line decodes and re-encodes to itself, and the sample exchange
/// gets exactly the answers shown.
#[test]
fn the_protocol_documentation_is_true() {
    let source = include_str!("../remote.rs");
    let doc: Vec<&str> = source
        .lines()
        .filter_map(|l| l.strip_prefix("//! ").or_else(|| l.strip_prefix("//!")))
        .collect();

    // The RULE, joined from its lines.
    let start = doc
        .iter()
        .position(|l| l.starts_with("{\"id\":\"default/prod/allow-web/inbound/0\""))
        .expect("rule");
    let rule_text: String = doc[start..start + 4]
        .iter()
        .map(|l| l.trim_start())
        .collect();
    let rule: crate::ops::Rule = serde_json::from_str(&rule_text).expect("the RULE decodes");
    assert_eq!(rule.action, Action::Allow);
    assert_eq!(serde_json::to_string(&rule).expect("encode"), rule_text);

    let mut variants = std::collections::BTreeSet::new();
    for line in doc
        .iter()
        .filter(|l| l.starts_with("{\"") || **l == "\"InSync\"")
    {
        if ["{\"batch\"", "{\"ok\"", "{\"error\"", "{\"id\""]
            .iter()
            .any(|p| line.starts_with(p))
        {
            continue;
        }
        let line = line.replace("RULE", &rule_text);
        let op: crate::ops::Operation =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(
            serde_json::to_string(&op).expect("encode"),
            line,
            "the doc shows the exact encoding"
        );
        variants.insert(op.kind());
    }
    assert_eq!(variants.len(), 14, "every variant is shown: {variants:?}");

    // The sample exchange.
    let (_dir, path) = socket();
    let handle = server(&path, DEFAULT_MAX_LINE);
    let mut raw = Raw::connect(&path);
    let mut exchanged = 0;
    let mut lines = doc
        .iter()
        .filter(|l| l.starts_with("> ") || l.starts_with("< "));
    while let (Some(request), Some(answer)) = (lines.next(), lines.next()) {
        let request = request.strip_prefix("> ").expect("request");
        let expected = answer.strip_prefix("< ").expect("answer");
        raw.send(format!("{request}\n").as_bytes());
        let mut got = String::new();
        raw.reader.read_line(&mut got).expect("answer");
        assert_eq!(got.trim_end(), expected);
        exchanged += 1;
    }
    assert_eq!(exchanged, 3);
    drop(raw);
    let served = handle.stop().expect("stop");
    assert_eq!(
        served.ip_set_count(),
        1,
        "the refused batch recorded nothing"
    );
    assert!(
        !served.in_sync(),
        "a refused batch leaves the driver out of sync until a resync"
    );

    // An error answer's text for a contract violation names the violation.
    let violation = ContractViolation::RemoveUnknown {
        what: "IP set",
        id: "s:nope".to_owned(),
    };
    assert!(doc.iter().any(|l| l.contains(&violation.to_string())));
}

#[test]
fn after_a_broken_connection_mark_stale_connects_again_and_the_resync_sweeps() {
    let (_dir, path) = socket();
    let first = server(&path, DEFAULT_MAX_LINE);
    let mut remote = RemoteDriver::connect(&path).expect("connect");
    let mut batch = vec![net_set("s:old", &["10.0.0.1/32"])];
    batch.push(crate::ops::Operation::InSync);
    remote.apply(&batch).expect("apply");
    // The server goes away with its driver; the same driver is served
    // again on the same path (a connection that broke mid-way).
    let driver = first.stop().expect("stop");
    std::fs::remove_file(&path).expect("remove the socket");
    let listener = UnixListener::bind(&path).expect("bind");
    let second = ServeHandle::spawn(listener, driver).expect("spawn");
    assert!(remote.apply(&[net_set("s:lost", &[])]).is_err());
    assert!(remote.is_broken());
    assert!(matches!(remote.apply(&[]), Err(DriverError::Broken)));
    // The resync: connect again, whole state, InSync.
    remote.mark_stale();
    assert!(!remote.is_broken());
    remote
        .apply(&[net_set("s:new", &[]), crate::ops::Operation::InSync])
        .expect("the resync is accepted");
    let served = second.stop().expect("stop");
    assert!(served.in_sync());
    assert!(
        served.ip_set("s:old").is_none(),
        "what the resync did not send again is gone"
    );
    assert!(served.ip_set("s:new").is_some());
}
