#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn object<M>(json: &str) -> CalicoObject<M> {
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_custom_resource_is_stored_as_the_model_loads_it() {
    let gnp: CalicoObject<GlobalNetworkPolicies> = object(
        r#"{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "default.deny-db", "uid": "u1", "resourceVersion": "7", "generation": 2,
                         "labels": {"team": "db"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl"}], "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"order": 10, "selector": "app == 'db'", "ingress": [{"action": "Deny", "protocol": "TCP"}]}}"#,
    );
    let source = CalicoSource::<GlobalNetworkPolicies>::new(KubeOptions::default());
    let out = source.convert(&gnp).unwrap();
    assert_eq!(out.len(), 1);
    let stored = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(
        stored["metadata"],
        json!({"name": "default.deny-db", "uid": "u1", "labels": {"team": "db"}}),
        "no annotations, managed fields, versions or timestamps"
    );
    assert_eq!(
        stored["spec"]["tier"], "default",
        "Calico's defaults applied"
    );
    assert_eq!(stored["spec"]["types"], json!(["Ingress"]));
    assert_eq!(
        source.keys_of(&ObjectRef {
            namespace: None,
            name: "default.deny-db".into()
        }),
        [out[0].key()]
    );
}

#[test]
fn status_is_not_stored_and_namespaced_kinds_keep_their_namespace() {
    let np: CalicoObject<NetworkPolicies> = object(
        r#"{"metadata": {"name": "allow", "namespace": "shop"},
            "spec": {"selector": "all()", "egress": [{"action": "Allow"}]}, "status": {"anything": 1}}"#,
    );
    let out = CalicoSource::<NetworkPolicies>::new(KubeOptions::default())
        .convert(&np)
        .unwrap();
    assert_eq!(out[0].key().namespace.as_deref(), Some("shop"));
    let tier: CalicoObject<Tiers> = object(
        r#"{"metadata": {"name": "security"}, "spec": {"order": 100},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}"#,
    );
    let out = CalicoSource::<Tiers>::new(KubeOptions::default())
        .convert(&tier)
        .unwrap();
    assert_eq!(serde_json::to_value(&out[0]).unwrap().get("status"), None);
}

#[test]
fn what_the_model_refuses_is_a_conversion_error_naming_the_field() {
    let bad: CalicoObject<GlobalNetworkPolicies> =
        object(r#"{"metadata": {"name": "broken"}, "spec": {"selector": "app == api"}}"#);
    let e = CalicoSource::<GlobalNetworkPolicies>::new(KubeOptions::default())
        .convert(&bad)
        .unwrap_err();
    assert_eq!(e.path, "spec.selector");
    let unknown: CalicoObject<GlobalNetworkSets> =
        object(r#"{"metadata": {"name": "s"}, "spec": {"netz": ["10.0.0.0/8"]}}"#);
    let e = CalicoSource::<GlobalNetworkSets>::new(KubeOptions::default())
        .convert(&unknown)
        .unwrap_err();
    assert!(e.reason.contains("unknown field"), "{e:?}");
}

#[test]
fn keys_another_watcher_owns_are_refused_and_not_owned() {
    let opts = KubeOptions::default();
    let profiles = CalicoSource::<Profiles>::new(opts);
    let ksa: CalicoObject<Profiles> =
        object(r#"{"metadata": {"name": "ksa.shop.web"}, "spec": {}}"#);
    let e = profiles.convert(&ksa).unwrap_err();
    assert!(e.reason.contains("serviceaccount"), "{e:?}");
    let mine: CalicoObject<Profiles> = object(r#"{"metadata": {"name": "shared"}, "spec": {}}"#);
    assert_eq!(profiles.convert(&mine).unwrap().len(), 1);
    let key = |name: &str| ResourceKey {
        kind: Kind::Profile,
        namespace: None,
        name: name.into(),
    };
    assert!(profiles.owns(&key("shared")));
    assert!(!profiles.owns(&key("ksa.shop.web")));
    assert!(!profiles.owns(&key("projectcalico-default-allow")));
    let heps = CalicoSource::<HostEndpoints>::new(opts);
    let auto: CalicoObject<HostEndpoints> =
        object(r#"{"metadata": {"name": "worker-1-auto-hep"}, "spec": {"node": "worker-1"}}"#);
    assert!(heps.convert(&auto).is_err());
}

#[test]
fn the_resource_names_the_crd() {
    use kube::Resource as _;
    assert_eq!(
        CalicoObject::<GlobalNetworkPolicies>::plural(&()),
        "globalnetworkpolicies"
    );
    assert_eq!(CalicoObject::<IpPools>::group(&()), "projectcalico.org");
    assert_eq!(CalicoObject::<IpPools>::version(&()), "v3");
    assert_eq!(CalicoObject::<IpPools>::kind(&()), "IPPool");
    assert_eq!(
        CalicoSource::<NetworkPolicies>::new(KubeOptions::default()).kind(),
        "networkpolicies.projectcalico.org",
        "not Kubernetes' networkpolicy watcher's label"
    );
    assert_eq!(
        CalicoObject::<NetworkPolicies>::url_path(&(), Some("shop")),
        "/apis/projectcalico.org/v3/namespaces/shop/networkpolicies"
    );
}

#[test]
fn every_crd_is_watched_and_typha_may_list_and_watch_it() {
    let crds: Vec<Kind> = manul_model::crd::CRDS.iter().map(|c| c.kind).collect();
    assert_eq!(WATCHED, crds.as_slice());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/base/typha/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut granted = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: serde_json::Value = serde::Deserialize::deserialize(de).unwrap();
        if doc["kind"] != "ClusterRole" {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            if rule["apiGroups"] == json!(["projectcalico.org"])
                || rule["apiGroups"] == json!(["operator.tigera.io"])
            {
                assert_eq!(
                    rule["verbs"],
                    json!(["list", "watch"]),
                    "only what the watchers use"
                );
                granted.extend(rule["resources"].as_array().unwrap().iter().cloned());
            }
        }
    }
    let watched: Vec<Value> = WATCHED.iter().map(|k| json!(plural(*k))).collect();
    assert_eq!(
        granted, watched,
        "the custom resources Typha's ClusterRole grants"
    );
}

#[test]
fn the_operators_installation_is_stored_for_felix_and_judged_by_the_model() {
    use kube::Resource as _;
    assert_eq!(
        CalicoObject::<Installations>::group(&()),
        "operator.tigera.io"
    );
    assert_eq!(CalicoObject::<Installations>::version(&()), "v1");
    assert_eq!(CalicoObject::<Installations>::plural(&()), "installations");
    let source = CalicoSource::<Installations>::new(KubeOptions::default());
    let bpf: CalicoObject<Installations> = object(
        r#"{"apiVersion": "operator.tigera.io/v1", "kind": "Installation",
            "metadata": {"name": "default"}, "spec": {"calicoNetwork": {"linuxDataplane": "BPF"}}}"#,
    );
    let out = source.convert(&bpf).unwrap();
    let stored = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(stored["apiVersion"], "operator.tigera.io/v1");
    assert_eq!(stored["spec"]["calicoNetwork"]["linuxDataplane"], "BPF");
    // The CRD's schema is open; the model is the judge.
    for bad in [
        r#"{"metadata": {"name": "other"}, "spec": {}}"#,
        r#"{"metadata": {"name": "default"}, "spec": {"calicoNetwork": {"linuxDataplane": "Turbo"}}}"#,
        r#"{"metadata": {"name": "default"}, "spec": {"noSuchField": 1}}"#,
    ] {
        assert!(source.convert(&object(bad)).is_err(), "{bad}");
    }
}
