//! Reading the replicas' own statuses and agreeing on a leader, against
//! real `typha` replicas on loopback (no root; needs the workspace's
//! `typha` program, as `ci.rs` does). A stopped replica (SIGSTOP) is a
//! peer that never answers, as one cut off by a partition is to the
//! others: the statuses of all still come back within the status
//! timeout, the stopped one as no answer; a stopped follower leaves the
//! leader agreed on, and a stopped leader is never agreed on, only the one
//! the other two elect after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use manul_chaos::faults::{self, STATUS_TIMEOUT};
use manul_chaos::leadership::{self, Agreed};
use manul_client::{Client, ClientConfig, Cluster};
use manul_typha::replicas::{Options, Replicas};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::metadata::AsciiMetadataValue;

async fn clusters(r: &Replicas) -> Vec<Cluster> {
    let token = AsciiMetadataValue::try_from(r.token.secret()).unwrap();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        rounds: 1,
        ..ClientConfig::default()
    };
    let mut out = Vec::new();
    for rep in &r.replicas {
        let client = Client::connect_with(&[rep.peer.to_string()], config.clone())
            .await
            .unwrap();
        out.push(client.cluster(Some(token.clone())));
    }
    out
}

/// Reads the statuses until `done` holds of them, for at most `within`;
/// every read must come back within the status timeout (and some slack
/// for a loaded machine).
async fn until<T>(
    peers: &[Cluster],
    within: Duration,
    mut done: impl FnMut(&[Option<manul_proto::v1::ReplicaStatus>]) -> Option<T>,
) -> T {
    let begin = Instant::now();
    loop {
        let t = Instant::now();
        let s = faults::statuses(peers).await;
        let took = t.elapsed();
        assert!(
            took < STATUS_TIMEOUT + Duration::from_millis(400),
            "reading the statuses took {took:?}"
        );
        if let Some(v) = done(&s) {
            return v;
        }
        assert!(begin.elapsed() < within, "not within {within:?}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `sig` to replica `k`; after SIGSTOP, waits until every thread of
/// it is stopped (the signal is delivered to each thread as it next runs,
/// so a reply could still leave just after `kill` returns).
fn signal(r: &Replicas, k: usize, sig: Signal) {
    let pid = r.replicas[k].pid().unwrap();
    kill(Pid::from_raw(pid as i32), sig).unwrap();
    if sig != Signal::SIGSTOP {
        return;
    }
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .all(|task| {
                let stat =
                    std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
    };
    let begin = Instant::now();
    while !stopped() {
        assert!(
            begin.elapsed() < Duration::from_secs(5),
            "replica {k} not stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_come_back_at_once_and_only_an_answering_leader_is_agreed_on() {
    let typha = manul_local_cluster::procs::program("typha").unwrap();
    let r = Replicas::start(&Options::new(typha, 3, 1000))
        .await
        .unwrap();
    let peers = clusters(&r).await;
    let first: Agreed = until(&peers, Duration::from_secs(15), |s| {
        leadership::agreed(s).ok()
    })
    .await;

    // A follower stops answering: the two others still agree on the same
    // leader at the same term, and every read comes back at once.
    let follower = (first.leader + 1) % 3;
    signal(&r, follower, Signal::SIGSTOP);
    for _ in 0..5 {
        let s = until(&peers, Duration::ZERO, |s| Some(s.to_vec())).await;
        assert!(s[follower].is_none(), "{s:?}");
        assert_eq!(leadership::agreed(&s), Ok(first), "{s:?}");
    }
    signal(&r, follower, Signal::SIGCONT);
    until(&peers, Duration::from_secs(10), |s| {
        (s.iter().all(Option::is_some) && leadership::agreed(s) == Ok(first)).then_some(())
    })
    .await;

    // The leader stops answering: the others name it until they elect
    // another, and while they do leadership is not settled; then it is,
    // on the new leader at a newer term.
    signal(&r, first.leader, Signal::SIGSTOP);
    let mut unsettled = 0;
    let next = until(&peers, Duration::from_secs(15), |s| {
        assert!(s[first.leader].is_none(), "{s:?}");
        match leadership::agreed(s) {
            Ok(a) => Some(a),
            Err(_) => {
                unsettled += 1;
                None
            }
        }
    })
    .await;
    signal(&r, first.leader, Signal::SIGCONT);
    assert_ne!(next.leader, first.leader);
    assert!(next.term > first.term, "{first:?} then {next:?}");
    assert!(
        unsettled > 0,
        "the stopped leader's followers named it at first"
    );
}
