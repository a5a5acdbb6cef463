//! Every membership decision, as tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn p(name: &str) -> PodView {
    PodView {
        name: name.into(),
        uid: format!("uid-{name}"),
        ip: Some(IpAddr::from([10, 0, 0, name.len() as u8])),
        peer_port: None,
        ready: false,
        deleting: false,
    }
}

fn ready(mut pod: PodView) -> PodView {
    pod.ready = true;
    pod
}

fn deleting(mut pod: PodView) -> PodView {
    pod.deleting = true;
    pod
}

fn no_ip(mut pod: PodView) -> PodView {
    pod.ip = None;
    pod
}

fn id(name: &str) -> u64 {
    node_id(&format!("uid-{name}"))
}

fn lease(holder: Option<&str>, observed_ms: i64) -> LeaseView {
    LeaseView {
        holder: holder.map(str::to_string),
        duration_ms: 15_000,
        observed_ms,
    }
}

#[test]
fn node_ids_are_stable_nonzero_and_differ_by_uid() {
    let a = node_id("6b1c1f4e-0c55-4f7e-9d59-1b2a8e0f4c11");
    assert_eq!(a, node_id("6b1c1f4e-0c55-4f7e-9d59-1b2a8e0f4c11"));
    assert_ne!(a, node_id("6b1c1f4e-0c55-4f7e-9d59-1b2a8e0f4c12"));
    assert!(a > 0 && a < (1 << 53));
    // Fixed by the uid alone: the same value on every replica and release.
    assert_eq!(node_id(""), 0xe3b0_c442_98fc_1c14 & ((1 << 53) - 1));
}

/// Name, data on disk, the pods, the Lease, the decision.
type StartCase = (&'static str, bool, Vec<PodView>, Option<LeaseView>, Start);

#[test]
fn start_decisions() {
    let now = 100_000;
    let cases: Vec<StartCase> = vec![
        (
            "data on disk: resume",
            true,
            vec![p("a")],
            None,
            Start::Resume,
        ),
        (
            "data on disk even when another pod holds the lease",
            true,
            vec![p("a"), ready(p("b"))],
            Some(lease(Some("b"), now)),
            Start::Resume,
        ),
        (
            "no lease, nobody ready: acquire",
            false,
            vec![p("a"), p("b"), p("c")],
            None,
            Start::Acquire,
        ),
        (
            "another pod is ready: a cluster exists",
            false,
            vec![p("a"), ready(p("b"))],
            None,
            Start::Join,
        ),
        (
            "a ready pod being deleted proves nothing",
            false,
            vec![p("a"), ready(deleting(p("b")))],
            None,
            Start::Acquire,
        ),
        (
            "lease held by a live pod within its duration: join",
            false,
            vec![p("a"), p("b")],
            Some(lease(Some("b"), now - 14_999)),
            Start::Join,
        ),
        (
            "lease held by a live pod, expired: acquire",
            false,
            vec![p("a"), p("b")],
            Some(lease(Some("b"), now - 15_000)),
            Start::Acquire,
        ),
        (
            "lease held by a pod that is gone: acquire",
            false,
            vec![p("a"), p("c")],
            Some(lease(Some("b"), now)),
            Start::Acquire,
        ),
        (
            "lease held by a pod being deleted: acquire",
            false,
            vec![p("a"), deleting(p("b"))],
            Some(lease(Some("b"), now)),
            Start::Acquire,
        ),
        (
            "lease held by this pod (restarted before bootstrapping): acquire",
            false,
            vec![p("a")],
            Some(lease(Some("a"), now)),
            Start::Acquire,
        ),
        (
            "lease released (no holder): acquire",
            false,
            vec![p("a"), p("b")],
            Some(lease(None, now)),
            Start::Acquire,
        ),
        (
            "this pod's own readiness does not count",
            false,
            vec![ready(p("a"))],
            None,
            Start::Acquire,
        ),
    ];
    for (name, has_data, pods, lease, want) in cases {
        assert_eq!(
            decide_start(has_data, "a", &pods, lease.as_ref(), now),
            want,
            "{name}"
        );
    }
}

fn settings() -> Settings {
    Settings {
        me: "a".into(),
        my_id: id("a"),
        voters: 3,
        peer_port: 5474,
        renew_ms: 5_000,
    }
}

fn raft(voters: &[&str], learners: &[&str], matched: &[(&str, u64)], committed: u64) -> RaftView {
    RaftView {
        voters: voters.iter().map(|n| id(n)).collect(),
        learners: learners.iter().map(|n| id(n)).collect(),
        matched: matched.iter().map(|(n, m)| (id(n), *m)).collect(),
        committed,
    }
}

fn add(name: &str, ip: [u8; 4], port: u16) -> Option<MembershipChange> {
    Some(MembershipChange::AddLearner {
        id: id(name),
        address: format!("{}:{port}", IpAddr::from(ip)),
    })
}

fn promote(name: &str) -> Option<MembershipChange> {
    Some(MembershipChange::Promote { id: id(name) })
}

fn remove(name: &str) -> Option<MembershipChange> {
    Some(MembershipChange::Remove { id: id(name) })
}

#[test]
fn membership_changes() {
    let now = 100_000;
    let held = Some(lease(Some("a"), now));
    let mut b_port = p("bb");
    b_port.peer_port = Some(6000);
    let cases: Vec<(&str, Vec<PodView>, RaftView, Option<MembershipChange>)> = vec![
        (
            "the bootstrapper alone, two new pods: add the first by name",
            vec![p("a"), p("bb"), p("ccc")],
            raft(&["a"], &[], &[], 10),
            add("bb", [10, 0, 0, 2], 5474),
        ),
        (
            "the port named peer is used when the pod declares it",
            vec![p("a"), b_port],
            raft(&["a"], &[], &[], 10),
            add("bb", [10, 0, 0, 2], 6000),
        ),
        (
            "a learner catching up is not promoted; the next pod is added",
            vec![p("a"), p("bb"), p("ccc")],
            raft(&["a"], &["bb"], &[("bb", 3)], 10),
            add("ccc", [10, 0, 0, 3], 5474),
        ),
        (
            "a caught-up learner is promoted",
            vec![p("a"), p("bb"), p("ccc")],
            raft(&["a"], &["bb", "ccc"], &[("bb", 10), ("ccc", 2)], 10),
            promote("bb"),
        ),
        (
            "promotion stops at the voter count",
            vec![p("a"), p("bb"), p("ccc"), p("dddd")],
            raft(&["a", "bb", "ccc"], &["dddd"], &[("dddd", 10)], 10),
            None,
        ),
        (
            "a learner whose pod is being deleted is not promoted",
            vec![p("a"), deleting(p("bb"))],
            raft(&["a"], &["bb"], &[("bb", 10)], 10),
            None,
        ),
        (
            "pods without an IP or being deleted are not added",
            vec![p("a"), no_ip(p("bb")), deleting(p("ccc"))],
            raft(&["a"], &[], &[], 10),
            None,
        ),
        (
            "a complete cluster: nothing to do",
            vec![p("a"), p("bb"), p("ccc")],
            raft(&["a", "bb", "ccc"], &[], &[], 10),
            None,
        ),
        (
            "a voter whose pod is gone is removed before anything else",
            vec![p("a"), p("bb"), p("dddd")],
            raft(&["a", "bb", "ccc"], &[], &[], 10),
            remove("ccc"),
        ),
        (
            "a learner whose pod is gone is removed first",
            vec![p("a"), p("bb")],
            raft(&["a", "bb", "ccc"], &["dddd"], &[], 10),
            remove("dddd"),
        ),
        (
            "a voter whose pod is being deleted stays a member",
            vec![p("a"), p("bb"), deleting(p("ccc"))],
            raft(&["a", "bb", "ccc"], &[], &[], 10),
            None,
        ),
        (
            "the new pod replacing a removed one joins as a learner",
            vec![p("a"), p("bb"), p("dddd")],
            raft(&["a", "bb"], &[], &[], 10),
            add("dddd", [10, 0, 0, 4], 5474),
        ),
        (
            "then it is promoted once caught up",
            vec![p("a"), p("bb"), p("dddd")],
            raft(&["a", "bb"], &["dddd"], &[("dddd", 12)], 12),
            promote("dddd"),
        ),
        (
            "this replica is never removed, even with no pod listed",
            vec![p("bb"), p("ccc")],
            raft(&["a", "bb", "ccc"], &[], &[], 10),
            None,
        ),
        (
            "no removal that leaves fewer live voters than a quorum",
            vec![p("a")],
            raft(&["a", "bb", "ccc"], &[], &[], 10),
            None,
        ),
        (
            "two voters, one gone: removing it leaves a live quorum of one",
            vec![p("a")],
            raft(&["a", "bb"], &[], &[], 10),
            remove("bb"),
        ),
        (
            "a pod whose uid changed under the same name is a new member",
            vec![
                p("a"),
                p("bb"),
                PodView {
                    uid: "uid-ccc-2".into(),
                    ..p("ccc")
                },
            ],
            raft(&["a", "bb", "ccc"], &[], &[], 10),
            remove("ccc"),
        ),
    ];
    for (name, pods, view, want) in cases {
        let got = plan(&settings(), &pods, held.as_ref(), &view, now);
        assert_eq!(got.change, want, "{name}");
        assert_eq!(got.lease, None, "{name}: the fresh lease needs no renewal");
    }
}

#[test]
fn every_planned_change_passes_the_node_precheck() {
    // The last voter is not removed even when its pod is gone (the node's
    // guard refuses it), and a learner is promoted only with progress.
    let view = raft(&["bb"], &[], &[], 10);
    let got = plan(&settings(), &[p("a")], None, &view, 0);
    assert_eq!(got.change, None, "the last voter stays");
    let view = raft(&["a"], &["bb"], &[], 10);
    let got = plan(&settings(), &[p("a"), p("bb")], None, &view, 0);
    assert_eq!(got.change, None, "no progress known: not promoted");
}

#[test]
fn lease_decisions() {
    let now = 100_000;
    let pods = vec![p("a"), p("bb"), p("ccc"), p("x")];
    let cluster = raft(&["a", "bb", "ccc"], &[], &[], 10);
    let cases: Vec<(&str, Option<LeaseView>, Option<LeaseAction>, bool)> = vec![
        (
            "no lease: create it",
            None,
            Some(LeaseAction::Create),
            false,
        ),
        (
            "held by this pod, renewed recently: nothing",
            Some(lease(Some("a"), now - 4_999)),
            None,
            false,
        ),
        (
            "held by this pod, due: renew",
            Some(lease(Some("a"), now - 5_000)),
            Some(LeaseAction::Renew),
            false,
        ),
        (
            "no holder: take",
            Some(lease(None, now)),
            Some(LeaseAction::Take),
            false,
        ),
        (
            "held by a member of this cluster (an earlier leader): take at once",
            Some(lease(Some("bb"), now)),
            Some(LeaseAction::Take),
            false,
        ),
        (
            "held by a pod that is gone: take",
            Some(lease(Some("zz"), now)),
            Some(LeaseAction::Take),
            false,
        ),
        (
            "held by a live pod outside this cluster, fresh: a conflict",
            Some(lease(Some("x"), now)),
            None,
            true,
        ),
        (
            "held by a live pod outside this cluster, expired: take",
            Some(lease(Some("x"), now - 15_000)),
            Some(LeaseAction::Take),
            false,
        ),
    ];
    for (name, lease, want, conflict) in cases {
        let got = plan(&settings(), &pods, lease.as_ref(), &cluster, now);
        assert_eq!(got.lease, want, "{name}");
        assert_eq!(got.lease_conflict.is_some(), conflict, "{name}");
        assert_eq!(got.change, add("x", [10, 0, 0, 1], 5474), "{name}");
    }
}
