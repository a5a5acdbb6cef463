//! `Client` against a real single-node Typha over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use manul_client::{Client, ClientConfig, ClientError};
use manul_model::{Kind, Resource, ResourceKey};

fn netset(ns: &str, name: &str, net: &str) -> Resource {
    common::resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  nets: [{net}]\n"
    ))
}

fn key(ns: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::NetworkSet,
        namespace: Some(ns.into()),
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_list_delete_with_expected_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (typha, addr) = common::typha(dir.path()).await;
    let c = Client::connect(&[addr.as_str()]).await.unwrap();

    let a = netset("ns1", "a", "10.0.0.0/8");
    let b = netset("ns2", "b", "10.1.0.0/16");
    let revs = c.apply(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0], revs[1], "one batch, one revision");

    let (got, rev) = c.get(&key("ns1", "a")).await.unwrap().unwrap();
    assert_eq!(got, a);
    assert_eq!(rev, revs[0]);
    assert!(c.get(&key("ns1", "missing")).await.unwrap().is_none());

    assert_eq!(c.list(Kind::NetworkSet, None).await.unwrap().len(), 2);
    let only = c.list(Kind::NetworkSet, Some("ns2")).await.unwrap();
    assert_eq!(only, vec![(b.clone(), revs[1])]);

    // Optimistic concurrency: 0 = must not exist; otherwise the revision read.
    let e = c.apply_if(&a, 0).await.unwrap_err();
    assert!(matches!(e, ClientError::Conflict { .. }), "{e}");
    let a2 = netset("ns1", "a", "10.2.0.0/16");
    let e = c.apply_if(&a2, rev + 100).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let rev2 = c.apply_if(&a2, rev).await.unwrap();
    assert!(rev2 > rev);
    let c3 = netset("ns1", "c", "10.3.0.0/16");
    let rev3 = c.apply_if(&c3, 0).await.unwrap();
    assert!(rev3 > rev2);

    // Delete: conditional, then idempotent.
    let e = c.delete(&key("ns1", "a"), Some(rev)).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert!(
        c.delete(&key("ns1", "a"), Some(rev2))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(c.delete(&key("ns1", "a"), None).await.unwrap(), None);
    assert!(c.get(&key("ns1", "a")).await.unwrap().is_none());

    // Invalid writes are refused and change nothing.
    let mut bad = netset("ns1", "bad", "10.4.0.0/16");
    if let Resource::NetworkSet(o) = &mut bad {
        o.metadata.name = Some("Not_A_Name".into());
    }
    let e = c
        .apply(&[netset("ns1", "d", "10.5.0.0/16"), bad])
        .await
        .unwrap_err();
    assert!(e.is_invalid(), "{e}");
    assert!(e.to_string().contains("Not_A_Name"), "{e}");
    assert!(
        c.get(&key("ns1", "d")).await.unwrap().is_none(),
        "nothing half-written"
    );

    assert!(c.apply(&[]).await.unwrap().is_empty());
    typha.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replicas_are_skipped_and_none_alive_is_unavailable() {
    let dead = format!("127.0.0.1:{}", common::free_port());
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(500),
        rounds: 1,
        ..ClientConfig::default()
    };
    let e = Client::connect_with(&[dead.as_str()], config.clone())
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains(&dead), "{e}");
    let e = Client::connect::<&str>(&[]).await.unwrap_err();
    assert!(matches!(e, ClientError::NoAddress), "{e}");
    let e = Client::connect(&["not an address"]).await.unwrap_err();
    assert!(e.is_invalid(), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let (typha, addr) = common::typha(dir.path()).await;
    let c = Client::connect_with(&[dead.as_str(), addr.as_str()], config)
        .await
        .unwrap();
    c.apply(&[netset("ns", "x", "10.0.0.0/8")]).await.unwrap();
    assert!(c.get(&key("ns", "x")).await.unwrap().is_some());

    typha.shutdown().await;
    let e = c.get(&key("ns", "x")).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}
