//! Authorization of writes over real mutual TLS: three `typha` processes
//! on loopback, clients holding the development identities (a node's CNI
//! plugin, Felix, a read-only client, an administrator). Writes go to a
//! follower, so the forwarded path is the one tested. Every write is in
//! the audit log of the replica the client called, and refusals are
//! counted in the metrics, scraped over HTTPS with the CA. The audit
//! history of the replicated log holds every committed write with the
//! identity of the client that made it, read back from the other
//! replicas than the one the clients wrote to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::{
    ApplyItem, ApplyRequest, AuditEvent, AuditRequest, DeleteRequest, ResourceKey, SyncRequest,
};
use manul_tls::connect::Transport;
use manul_tls::dev::{self, DevCa, Leaf, write_atomic, write_pair};
use tonic::Code;

use common::tls_replicas::{TlsReplicas, agreed_leader, channel};

/// A CA and the certificates of the test's identities in `dir`.
fn certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = DevCa::new("test CA", 1).unwrap();
    write_atomic(&dir.join("ca.crt"), &ca.cert_pem(), 0o644).unwrap();
    let leaf = |cn: &str, uri: String, server: bool| Leaf {
        common_name: cn.into(),
        uri_sans: vec![uri],
        ips: if server {
            vec!["127.0.0.1".parse().unwrap()]
        } else {
            Vec::new()
        },
        server,
        days: 1,
        ..Leaf::default()
    };
    let leaves = [
        ("typha", leaf(dev::TYPHA_CN, dev::TYPHA_URI.into(), true)),
        ("admin", leaf(dev::ADMIN_CN, dev::ADMIN_URI.into(), false)),
        (
            "cni-n1",
            leaf(dev::CNI_CN, dev::node_uri("n1", "cni"), false),
        ),
        (
            "felix-n1",
            leaf(dev::FELIX_CN, dev::node_uri("n1", "felix"), false),
        ),
        (
            "reader",
            leaf("manul-reader", "spiffe://manul/reader".into(), false),
        ),
    ];
    for (stem, l) in leaves {
        write_pair(dir, stem, &ca.issue(&l).unwrap()).unwrap();
    }
}

/// The transport of `who`'s certificate in `certs`, expecting Typha.
fn transport(certs: &Path, who: &str) -> Transport {
    common::tls_typha::transport(certs, who, dev::TYPHA_CN)
}

fn endpoint(name: &str, node: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  node: {node}\n  orchestrator: k8s\n  pod: {name}\n  endpoint: eth0\n  interfaceName: cali{name}\n  ipNetworks: [10.65.0.5/32]\n"
    )
}

fn block(third: u8, node: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: IPAMBlock\nmetadata:\n  name: 10-65-{third}-0-26\nspec:\n  cidr: 10.65.{third}.0/26\n  affinity: host:{node}\n  allocations:\n    - ip: 10.65.{third}.1\n      handle: c-{third}\n"
    )
}

const POLICY: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: default.deny-all\nspec:\n  selector: all()\n  types: [Ingress]\n";

fn apply(doc: &str, expected: Option<u64>) -> ApplyRequest {
    ApplyRequest {
        items: vec![ApplyItem {
            document: doc.as_bytes().to_vec().into(),
            origin: "test".into(),
            expected_revision: expected,
        }],
        deletes: Vec::new(),
        origin: None,
    }
}

fn key(kind: &str, namespace: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The audit records of `path` for `name`, once `n` of them are there.
async fn audited(path: &Path, name: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<_> = audit_lines(path)
            .into_iter()
            .filter(|l| l["name"] == name)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_authorized_by_identity_and_audited() {
    let _serial = common::SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    certificates(&certs);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let audit = |i: usize| tmp.path().join(format!("audit-{}.log", i + 1));
    let replicas = TlsReplicas::start(tmp.path(), &certs, |i, cmd| {
        cmd.arg("--metrics-tls-server-cert")
            .args(["--client-cn", "manul-felix,manul-cni"])
            .args(["--client-uri-san", "spiffe://manul/reader"])
            .args(["--read-only-uri-san", "spiffe://manul/reader"])
            .arg("--audit-log")
            .arg(audit(i));
    });
    let (client, peer, metrics) = (&replicas.client, &replicas.peer, &replicas.metrics);
    let admin_t = transport(&certs, "admin");
    let leader = agreed_leader(peer, &admin_t).await;
    let f = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    let api = |who: &str| {
        let t = transport(&certs, who);
        let addr = client[f].clone();
        async move { ResourcesClient::new(channel(&addr, &t).await.unwrap()) }
    };
    let mut admin = api("admin").await;
    let mut cni = api("cni-n1").await;
    let mut felix = api("felix-n1").await;
    let mut reader = api("reader").await;

    // A node's CNI identity writes its own node's endpoint...
    let written = cni
        .apply(apply(&endpoint("web", "n1"), None))
        .await
        .unwrap();
    let revision = written.into_inner().revision;
    let lines = audited(&audit(f), "web", 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["identity"], "spiffe://manul/node/n1/cni");
    assert_eq!(lines[0]["role"], "cni");
    assert_eq!(lines[0]["verb"], "apply");
    assert_eq!(lines[0]["kind"], "WorkloadEndpoint");
    assert_eq!(lines[0]["namespace"], "default");
    assert_eq!(lines[0]["outcome"], "applied");
    assert_eq!(lines[0]["revision"], revision);
    // ...and not another node's: refused with the named identity and
    // permission, and recorded.
    let refused = cni
        .apply(apply(&endpoint("web2", "n2"), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "spiffe://manul/node/n1/cni may not write WorkloadEndpoint default/web2: it is on node n2; a CNI identity writes its own node's endpoints only"
    );
    let lines = audited(&audit(f), "web2", 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "denied");
    assert_eq!(lines[0]["reason"], refused.message());
    assert!(lines[0].get("revision").is_none());

    // Another node's stored endpoint cannot be taken over or deleted.
    admin
        .apply(apply(&endpoint("db", "n2"), None))
        .await
        .unwrap();
    let takeover = cni
        .apply(apply(&endpoint("db", "n1"), None))
        .await
        .unwrap_err();
    assert_eq!(takeover.code(), Code::PermissionDenied);
    assert!(
        takeover.message().ends_with(
            "the stored one is on node n2; a CNI identity writes its own node's endpoints only"
        ),
        "{}",
        takeover.message()
    );
    let del = cni
        .delete(DeleteRequest {
            keys: vec![key("workloadendpoint", "default", "db")],
            expected_revision: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(del.code(), Code::PermissionDenied);
    assert!(
        del.message()
            .contains("may not delete WorkloadEndpoint default/db")
    );
    // Its own one it deletes.
    cni.delete(DeleteRequest {
        keys: vec![key("workloadendpoint", "default", "web")],
        expected_revision: None,
        ..Default::default()
    })
    .await
    .unwrap();

    // IPAM: blocks affine to its node only, conditional writes kept.
    cni.apply(apply(&block(0, "n1"), Some(0))).await.unwrap();
    let stale = cni
        .apply(apply(&block(0, "n1"), Some(0)))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let other = cni
        .apply(apply(&block(1, "n2"), Some(0)))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(
        other
            .message()
            .ends_with("a CNI identity writes the IPAM blocks affine to its own node only"),
        "{}",
        other.message()
    );
    // Nothing but endpoints and IPAM.
    let policy = cni.apply(apply(POLICY, None)).await.unwrap_err();
    assert_eq!(policy.code(), Code::PermissionDenied);
    assert!(
        policy
            .message()
            .ends_with("a CNI identity writes WorkloadEndpoints and IPAM blocks only")
    );

    // Read-only and Felix identities read, and write nothing.
    let ro = reader.apply(apply(POLICY, None)).await.unwrap_err();
    assert_eq!(ro.code(), Code::PermissionDenied);
    assert_eq!(
        ro.message(),
        "spiffe://manul/reader may not write GlobalNetworkPolicy default.deny-all: a read-only identity reads only"
    );
    let fw = felix
        .apply(apply(&endpoint("web", "n1"), None))
        .await
        .unwrap_err();
    assert_eq!(fw.code(), Code::PermissionDenied);
    assert!(fw.message().ends_with(
        "a Felix identity reads, and writes only its own node's status (the Node's WireGuard public key annotation)"
    ));
    // ... but its own node's status: the WireGuard public key annotation on
    // its own Node, and nothing else of it.
    let node = |name: &str, address: &str, key: Option<&str>| {
        let annotations = key.map_or(String::new(), |k| {
            format!("  annotations:\n    projectcalico.org/WireguardPublicKey: {k}\n")
        });
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{annotations}spec:\n  addresses:\n  - address: {address}\n"
        )
    };
    admin
        .apply(apply(&node("n1", "192.168.0.1", None), None))
        .await
        .unwrap();
    admin
        .apply(apply(&node("n2", "192.168.0.2", None), None))
        .await
        .unwrap();
    felix
        .apply(apply(&node("n1", "192.168.0.1", Some("k1")), None))
        .await
        .unwrap();
    let moved = felix
        .apply(apply(&node("n1", "192.168.0.9", Some("k1")), None))
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::PermissionDenied, "{moved:?}");
    let other = felix
        .apply(apply(&node("n2", "192.168.0.2", Some("k1")), None))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(
        other.message().ends_with(
            "it is node n2's status; a Felix identity writes its own node's status only"
        )
    );
    assert!(common::names(&mut reader).await.iter().any(|n| n == "db"));
    assert!(
        common::names(&mut felix)
            .await
            .iter()
            .any(|n| n == "10-65-0-0-26")
    );
    let felix_ch = channel(&client[f], &transport(&certs, "felix-n1"))
        .await
        .unwrap();
    let mut stream = SyncClient::new(felix_ch)
        .sync(SyncRequest {
            node_name: "n1".into(),
            client_version: manul_proto::PROTOCOL_VERSION.into(),
            ..SyncRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    // An administrator writes anything.
    admin.apply(apply(POLICY, None)).await.unwrap();
    admin
        .delete(DeleteRequest {
            keys: vec![key("workloadendpoint", "default", "db")],
            expected_revision: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let lines = audited(&audit(f), "default.deny-all", 3).await;
    let outcomes: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("cni", "denied"),
            ("read_only", "denied"),
            ("admin", "applied")
        ]
    );
    // The leader recorded none of the writes forwarded to it.
    let leader_i = (leader - 1) as usize;
    assert!(audit_lines(&audit(leader_i)).is_empty());

    // Refusals by role and verb, scraped over HTTPS with the CA.
    let addr = metrics[f].parse().unwrap();
    let (code, body) = manul_tls::https::get(addr, "127.0.0.1", &certs.join("ca.crt"), "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);
    for (role, verb, n) in [
        ("cni", "apply", 4),
        ("cni", "delete", 1),
        ("read_only", "apply", 1),
        ("felix", "apply", 3),
    ] {
        let series = format!("typha_authz_refusals_total{{role=\"{role}\",verb=\"{verb}\"}} {n}");
        assert!(body.contains(&series), "no {series} in\n{body}");
    }

    // A promote-like write: one entry that writes a policy and deletes
    // another.
    let promoted = admin
        .apply(ApplyRequest {
            deletes: vec![key("globalnetworkpolicy", "", "default.deny-all")],
            ..apply(&POLICY.replace("default.deny-all", "default.deny-in"), None)
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    replicated_audit(&certs, client, f, revision, promoted, started).await;
}

/// `(identity, verb, action, kind, namespace/name)` of every change.
fn changes(events: &[AuditEvent]) -> Vec<(String, String, String, String, String)> {
    events
        .iter()
        .flat_map(|e| {
            let o = e.origin.clone().unwrap();
            e.changes.iter().map(move |c| {
                let k = c.key.clone().unwrap();
                (
                    o.identity.clone(),
                    o.verb.clone(),
                    c.action.clone(),
                    k.kind,
                    format!("{}/{}", k.namespace, k.name),
                )
            })
        })
        .collect()
}

/// The audit history, read by a read-only identity from every replica
/// but `written` (the one the clients wrote to), is the same on each and
/// holds each committed write with its client's identity and time.
async fn replicated_audit(
    certs: &Path,
    client: &[String],
    written: usize,
    web_revision: u64,
    promoted: u64,
    started: u64,
) {
    let reader_t = transport(certs, "reader");
    let mut answers = Vec::new();
    for (i, addr) in client.iter().enumerate().filter(|(i, _)| *i != written) {
        let mut api = ResourcesClient::new(channel(addr, &reader_t).await.unwrap());
        let all = api
            .audit(AuditRequest::default())
            .await
            .unwrap()
            .into_inner();
        answers.push((i, all.events));
    }
    let (_, events) = &answers[0];
    for (i, other) in &answers[1..] {
        assert_eq!(other, events, "replica {} answers differently", i + 1);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for e in events {
        let at = e.origin.as_ref().unwrap().unix_millis;
        assert!(at >= started && at <= now, "{e:?} stamped outside the test");
    }
    let cni = "spiffe://manul/node/n1/cni";
    let admin = "spiffe://manul/admin";
    let felix = "spiffe://manul/node/n1/felix";
    let got = changes(events);
    let row = |who: &str, verb: &str, action: &str, kind: &str, name: &str| {
        (
            who.to_string(),
            verb.to_string(),
            action.to_string(),
            kind.to_string(),
            name.to_string(),
        )
    };
    assert_eq!(
        got,
        [
            row(cni, "apply", "created", "workloadendpoint", "default/web"),
            row(admin, "apply", "created", "workloadendpoint", "default/db"),
            row(cni, "delete", "deleted", "workloadendpoint", "default/web"),
            row(cni, "apply", "created", "ipamblock", "/10-65-0-0-26"),
            row(admin, "apply", "created", "node", "/n1"),
            row(admin, "apply", "created", "node", "/n2"),
            row(felix, "apply", "updated", "node", "/n1"),
            row(
                admin,
                "apply",
                "created",
                "globalnetworkpolicy",
                "/default.deny-all"
            ),
            row(admin, "delete", "deleted", "workloadendpoint", "default/db"),
            row(
                admin,
                "apply",
                "created",
                "globalnetworkpolicy",
                "/default.deny-in"
            ),
            row(
                admin,
                "apply",
                "deleted",
                "globalnetworkpolicy",
                "/default.deny-all"
            ),
        ]
    );
    assert_eq!(events[0].revision, web_revision);
    let last = events.last().unwrap();
    assert_eq!(
        last.revision, promoted,
        "the write and the delete are one entry"
    );
    assert_eq!(last.changes[1].previous_revision, events[7].revision);
    assert_eq!(last.origin.as_ref().unwrap().role, "admin");

    // Filters, on another replica than the one written to.
    let other = answers[1].0;
    let mut api = ResourcesClient::new(channel(&client[other], &reader_t).await.unwrap());
    let ask = |r: AuditRequest| {
        let mut api = api.clone();
        async move { changes(&api.audit(r).await.unwrap().into_inner().events) }
    };
    let by_cni = ask(AuditRequest {
        identity: cni.into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_cni.len(), 3);
    assert!(by_cni.iter().all(|c| c.0 == cni));
    let policies = ask(AuditRequest {
        kind: "gnp".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(policies.len(), 3, "{policies:?}");
    let in_default = ask(AuditRequest {
        namespace: "default".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(in_default.len(), 4);
    let after = ask(AuditRequest {
        after_revision: events[9 - 1].revision,
        ..Default::default()
    })
    .await;
    assert_eq!(after.len(), 2);
    let newest = ask(AuditRequest {
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(newest.len(), 2, "one event, its two changes");
    let bad = api
        .audit(AuditRequest {
            kind: "widgets".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.message(), "kind: unknown kind \"widgets\"");
}
