#![allow(clippy::unwrap_used)]

use super::*;

const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"manul","type":"manul-cni","typha":["127.0.0.1:5473"],
 "nodename":"node-1","policy_setup_timeout_ms":0,"endpoint_status_dir":"/var/run/manul/endpoint-status/node-1",
 "log_level":"debug"}"#;

fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CniEnv::from_vars(|k| map.get(k).cloned())
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "abc_1.2-3"),
    ("CNI_NETNS", "/var/run/netns/pod"),
    ("CNI_IFNAME", "eth0"),
    (
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=production;K8S_POD_NAME=api;K8S_POD_INFRA_CONTAINER_ID=abc",
    ),
    ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
];

#[test]
fn a_good_configuration_parses() {
    let c = NetConf::parse(GOOD.as_bytes()).unwrap();
    assert_eq!(c.cni_version, "1.0.0");
    assert_eq!(c.typha, vec!["127.0.0.1:5473"]);
    assert_eq!(c.node_name().unwrap(), "node-1");
    assert_eq!(c.policy_setup_timeout(), None);
    assert!(!c.legacy_result());
    assert!(c.unknown_keys().is_empty());

    let with_runtime_keys = GOOD
        .replace(
            "\"log_level\":\"debug\"",
            "\"prevResult\":{},\"runtimeConfig\":{},\"ipam\":{\"type\":\"manul-ipam\"},\"tpyha\":1",
        )
        .replace(
            "\"policy_setup_timeout_ms\":0",
            "\"policy_setup_timeout_ms\":250",
        );
    let c = NetConf::parse(with_runtime_keys.as_bytes()).unwrap();
    assert_eq!(c.unknown_keys(), vec!["tpyha"]);
    assert_eq!(c.policy_setup_timeout(), Some(Duration::from_millis(250)));
}

#[test]
fn the_hostname_is_the_default_node_name() {
    let c = NetConf::parse(GOOD.replace("\"nodename\":\"node-1\",", "").as_bytes()).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(c.node_name().unwrap(), host.trim());
}

#[test]
fn bad_configurations_get_the_spec_codes() {
    let cases: &[(String, u32, &str)] = &[
        ("not json".into(), code::DECODE, "cannot decode"),
        (r#"{"name":"x"}"#.into(), code::DECODE, "cniVersion"),
        (GOOD.replace("1.0.0", "2.0.0"), code::INCOMPATIBLE_VERSION, "2.0.0"),
        (GOOD.replace("\"name\":\"manul\"", "\"name\":\"\""), code::INVALID_CONFIG, "name"),
        (GOOD.replace("[\"127.0.0.1:5473\"]", "[]"), code::INVALID_CONFIG, "typha"),
        (GOOD.replace("\"debug\"", "\"loud\""), code::INVALID_CONFIG, "log_level"),
        (
            GOOD.replace(
                "\"policy_setup_timeout_ms\":0,\"endpoint_status_dir\":\"/var/run/manul/endpoint-status/node-1\",",
                "\"policy_setup_timeout_ms\":10,",
            ),
            code::INVALID_CONFIG,
            "endpoint_status_dir",
        ),
        (
            GOOD.replace("\"log_level\"", "\"ipam\":{\"type\":\"host-local\"},\"log_level\""),
            code::UNSUPPORTED_FIELD,
            "ipam",
        ),
    ];
    for (text, want, mention) in cases {
        let e = NetConf::parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.code, *want, "{text}: {e}");
        assert!(e.to_string().contains(mention), "{text}: {e}");
    }
}

#[test]
fn error_version_is_read_leniently() {
    assert_eq!(version_of(GOOD.as_bytes()), "1.0.0");
    assert_eq!(version_of(br#"{"cniVersion":"0.4.0","junk":"#), "1.0.0");
    assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
    assert_eq!(version_of(br#"{"cniVersion":"9.9.9"}"#), "1.0.0");
}

#[test]
fn the_environment_parses() {
    let e = env(ADD).unwrap();
    assert_eq!(e.command, Command::Add);
    assert_eq!(e.container_id, "abc_1.2-3");
    assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/pod")));
    assert_eq!(e.ifname, "eth0");
    assert_eq!(e.pod(), Some(("production", "api")));
    assert_eq!(e.args["IgnoreUnknown"], "1");
    assert_eq!(e.path.len(), 2);

    let version = env(&[("CNI_COMMAND", "VERSION")]).unwrap();
    assert_eq!(version.command, Command::Version);

    // DEL may come without a netns (the runtime lost it).
    let mut del: Vec<_> = ADD
        .iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .copied()
        .collect();
    del[0] = ("CNI_COMMAND", "DEL");
    assert_eq!(env(&del).unwrap().netns, None);
}

#[test]
fn bad_environments_are_invalid_env() {
    let with = |key: &str, value: Option<&str>| -> Vec<(&str, String)> {
        let mut v: Vec<(&str, String)> = ADD
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        if let Some(value) = value {
            v.push((key_static(key), value.to_string()));
        }
        v
    };
    fn key_static(k: &str) -> &'static str {
        [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
        ]
        .into_iter()
        .find(|s| *s == k)
        .unwrap()
    }
    let cases = [
        (with("CNI_COMMAND", None), "CNI_COMMAND is not set"),
        (with("CNI_COMMAND", Some("UP")), "\"UP\""),
        (with("CNI_CONTAINERID", None), "CNI_CONTAINERID"),
        (with("CNI_CONTAINERID", Some("a/b")), "CNI_CONTAINERID"),
        (with("CNI_NETNS", None), "CNI_NETNS"),
        (with("CNI_IFNAME", None), "CNI_IFNAME"),
        (with("CNI_IFNAME", Some("a-very-long-ifname")), "CNI_IFNAME"),
        (with("CNI_IFNAME", Some("eth/0")), "CNI_IFNAME"),
        (with("CNI_ARGS", Some("K8S_POD_NAME")), "KEY=VALUE"),
    ];
    for (vars, mention) in cases {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e = env(&pairs).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV, "{vars:?}");
        assert!(e.msg.contains(mention), "{vars:?}: {e}");
    }
    let no_pod = with("CNI_ARGS", Some("IgnoreUnknown=1"));
    let pairs: Vec<(&str, &str)> = no_pod.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let e = env(&pairs).unwrap();
    assert_eq!(e.pod(), None);
    assert_eq!(e.required_pod().unwrap_err().code, code::INVALID_ENV);
}

#[test]
fn the_datastore_comes_from_datastore_type_and_kubernetes() {
    let with = |extra: &str| GOOD.replace("\"log_level\"", &format!("{extra},\"log_level\""));
    let c = NetConf::parse(GOOD.as_bytes()).unwrap();
    assert_eq!(c.datastore, Datastore::Typha);
    assert!(!c.kubernetes());
    let c = NetConf::parse(
        with(r#""datastore_type":"kubernetes","kubernetes":{"kubeconfig":"/etc/cni/net.d/manul-kubeconfig"}"#)
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        c.datastore,
        Datastore::Kubernetes {
            kubeconfig: PathBuf::from("/etc/cni/net.d/manul-kubeconfig")
        }
    );
    assert!(c.kubernetes());
    assert!(c.unknown_keys().is_empty());
}

#[test]
fn bad_datastore_settings_name_their_field() {
    let with = |extra: &str| GOOD.replace("\"log_level\"", &format!("{extra},\"log_level\""));
    let cases: &[(&str, u32, &str)] = &[
        (
            r#""datastore_type":"etcdv3""#,
            code::INVALID_CONFIG,
            "\"datastore_type\" must be \"kubernetes\"",
        ),
        (
            r#""datastore_type":7"#,
            code::INVALID_CONFIG,
            "\"datastore_type\"",
        ),
        (
            r#""datastore_type":"kubernetes""#,
            code::INVALID_CONFIG,
            "needs \"kubernetes\": {\"kubeconfig\": PATH}",
        ),
        (
            r#""datastore_type":"kubernetes","kubernetes":"/etc/kubeconfig""#,
            code::INVALID_CONFIG,
            "\"kubernetes\" must be an object",
        ),
        (
            r#""datastore_type":"kubernetes","kubernetes":{}"#,
            code::INVALID_CONFIG,
            "\"kubernetes.kubeconfig\" must name",
        ),
        (
            r#""datastore_type":"kubernetes","kubernetes":{"kubeconfig":""}"#,
            code::INVALID_CONFIG,
            "\"kubernetes.kubeconfig\" must name",
        ),
        (
            r#""datastore_type":"kubernetes","kubernetes":{"kubeconfig":["/a"]}"#,
            code::INVALID_CONFIG,
            "\"kubernetes.kubeconfig\" must be a path",
        ),
        (
            r#""datastore_type":"kubernetes","kubernetes":{"kubeconfig":"/a","k8s_api_root":"https://x"}"#,
            code::UNSUPPORTED_FIELD,
            "\"kubernetes.k8s_api_root\" is not supported",
        ),
        (
            r#""kubernetes":{"kubeconfig":"/a"}"#,
            code::INVALID_CONFIG,
            "\"datastore_type\" is not \"kubernetes\"",
        ),
    ];
    for (extra, want, mention) in cases {
        let text = with(extra);
        let e = NetConf::parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.code, *want, "{extra}: {e}");
        assert!(e.to_string().contains(mention), "{extra}: {e}");
    }
}
