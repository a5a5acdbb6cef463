#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::kube::reconcile::{Reconciler, WatchEvent, Watched};

fn at(ns: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: ns.map(str::to_string),
        name: name.to_string(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap()
}

/// The batch of one `Apply`, as `put KEY` / `del KEY`, or `-`.
fn apply<S: Source>(r: &mut Reconciler<S>, at: ObjectRef, obj: S::Object) -> String {
    let step = r.handle(WatchEvent::Apply(Watched::ok(at, obj)));
    let mut parts: Vec<String> = Vec::new();
    if let Some(b) = step.batch {
        parts.extend(b.puts.iter().map(|(k, _)| format!("put {k}")));
        parts.extend(b.deletes.iter().map(|k| format!("del {k}")));
    }
    parts.extend(
        step.skipped
            .iter()
            .map(|s| format!("skip {}: {}", s.at, s.reason)),
    );
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

#[test]
fn namespaces_are_stored_trimmed_so_status_and_annotations_do_not_rewrite_them() {
    let mut r = Reconciler::new(Namespaces, []);
    let ns = |phase: &str, note: &str, team: &str| -> Namespace {
        parse(&format!(
            r#"{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "shop", "resourceVersion": "{note}",
                "labels": {{"team": "{team}"}}, "annotations": {{"note": "{note}"}},
                "managedFields": [{{"manager": "kubectl", "operation": "Update"}}]}},
                "spec": {{"finalizers": ["kubernetes"]}}, "status": {{"phase": "{phase}"}}}}"#
        ))
    };
    assert_eq!(
        apply(&mut r, at(None, "shop"), ns("Active", "1", "a")),
        "put namespace/shop"
    );
    assert_eq!(
        apply(&mut r, at(None, "shop"), ns("Terminating", "2", "a")),
        "-"
    );
    assert_eq!(
        apply(&mut r, at(None, "shop"), ns("Active", "3", "b")),
        "put namespace/shop"
    );
    let stored = &r.stored()[&ResourceKey {
        kind: Kind::Namespace,
        namespace: None,
        name: "shop".into(),
    }];
    let v: serde_json::Value = serde_json::from_slice(stored).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "b"}}})
    );
}

#[test]
fn network_policies_that_do_not_convert_are_skipped() {
    let mut r = Reconciler::new(NetworkPolicies, []);
    let np = |port: &str| -> NetworkPolicy {
        parse(&format!(
            r#"{{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {{"name": "web", "namespace": "shop"}},
                "spec": {{"podSelector": {{}}, "ingress": [{{"ports": [{{"port": {port}}}]}}]}}}}"#
        ))
    };
    assert_eq!(
        apply(&mut r, at(Some("shop"), "web"), np("80")),
        "put k8s-networkpolicy/shop/web"
    );
    assert_eq!(
        apply(&mut r, at(Some("shop"), "web"), np("70000")),
        "skip shop/web: spec.ingress[0].ports[0].port: 70000 is out of range 1-65535"
    );
    assert_eq!(r.counts().conversion_errors, 1);
}

#[test]
fn services_and_endpoint_slices_are_stored_for_felix() {
    let mut svcs = Reconciler::new(Services, []);
    let svc: Service = parse(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": {"app": "web"}},
            "status": {"loadBalancer": {}}}"#,
    );
    assert_eq!(
        apply(&mut svcs, at(Some("shop"), "web"), svc),
        "put service/shop/web"
    );
    let mut slices = Reconciler::new(EndpointSlices, []);
    let slice: EndpointSlice = parse(
        r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abcde", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}"#,
    );
    assert_eq!(
        apply(&mut slices, at(Some("shop"), "web-abcde"), slice),
        "put endpointslice/shop/web-abcde"
    );
}
