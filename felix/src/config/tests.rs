#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use manul_model::v3::{EndpointToHostAction, FelixConfigurationSpec, GoDuration, LogSeverity};

use super::*;

fn spec(yaml: &str) -> FelixConfigurationSpec {
    serde_json::from_value(serde_json::to_value(serde_yaml_like(yaml)).unwrap()).unwrap()
}

/// `key: value` lines to a JSON object (values are strings, numbers or
/// booleans), so that tables stay readable.
fn serde_yaml_like(text: &str) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').unwrap();
        let v = v.trim();
        let value = if let Ok(b) = v.parse::<bool>() {
            serde_json::Value::Bool(b)
        } else if let Ok(n) = v.parse::<u64>() {
            serde_json::Value::from(n)
        } else {
            serde_json::Value::String(v.to_string())
        };
        map.insert(k.trim().to_string(), value);
    }
    serde_json::Value::Object(map)
}

struct Case {
    what: &'static str,
    global: &'static str,
    node: &'static str,
    env: &'static [(&'static str, &'static str)],
    flags: &'static [(&'static str, &'static str)],
    setting: &'static str,
    value: &'static str,
    source: Source,
}

const CASES: &[Case] = &[
    Case {
        what: "nothing set: the built-in default",
        global: "",
        node: "",
        env: &[],
        flags: &[],
        setting: "interfacePrefix",
        value: "mnl",
        source: Source::Default,
    },
    Case {
        what: "global over default",
        global: "interfacePrefix: cali",
        node: "",
        env: &[],
        flags: &[],
        setting: "interfacePrefix",
        value: "cali",
        source: Source::DatastoreGlobal,
    },
    Case {
        what: "per-node over global",
        global: "interfacePrefix: cali",
        node: "interfacePrefix: tap,cali",
        env: &[],
        flags: &[],
        setting: "interfacePrefix",
        value: "tap,cali",
        source: Source::DatastorePerHost,
    },
    Case {
        what: "a per-node spec without the field leaves the global value",
        global: "healthPort: 9199",
        node: "interfacePrefix: tap",
        env: &[],
        flags: &[],
        setting: "healthPort",
        value: "9199",
        source: Source::DatastoreGlobal,
    },
    Case {
        what: "environment over per-node",
        global: "logSeverityScreen: Warning",
        node: "logSeverityScreen: Error",
        env: &[("FELIX_LOGSEVERITYSCREEN", "debug")],
        flags: &[],
        setting: "logSeverityScreen",
        value: "Debug",
        source: Source::Environment,
    },
    Case {
        what: "a service map size from the datastore",
        global: "bpfMapSizeNATFrontend: 200000",
        node: "",
        env: &[],
        flags: &[],
        setting: "bpfMapSizeNATFrontend",
        value: "200000",
        source: Source::DatastoreGlobal,
    },
    Case {
        what: "the variable's name is matched in any case",
        global: "",
        node: "",
        env: &[("felix_BpfEnabled", "true")],
        flags: &[],
        setting: "bpfEnabled",
        value: "true",
        source: Source::Environment,
    },
    Case {
        what: "an empty variable is unset",
        global: "bpfEnabled: true",
        node: "",
        env: &[("FELIX_BPFENABLED", "")],
        flags: &[],
        setting: "bpfEnabled",
        value: "true",
        source: Source::DatastoreGlobal,
    },
    Case {
        what: "a flag over the environment",
        global: "bpfEnabled: true",
        node: "",
        env: &[("FELIX_BPFENABLED", "true")],
        flags: &[("bpfEnabled", "false")],
        setting: "bpfEnabled",
        value: "false",
        source: Source::Flag,
    },
    Case {
        what: "the external service mode from the datastore",
        global: "bpfExternalServiceMode: DSR",
        node: "",
        env: &[],
        flags: &[],
        setting: "bpfExternalServiceMode",
        value: "DSR",
        source: Source::DatastoreGlobal,
    },
    Case {
        what: "the external service mode in any case from the environment",
        global: "bpfExternalServiceMode: DSR",
        node: "",
        env: &[("FELIX_BPFEXTERNALSERVICEMODE", "tunnel")],
        flags: &[],
        setting: "bpfExternalServiceMode",
        value: "Tunnel",
        source: Source::Environment,
    },
    Case {
        what: "the host service device setting in any case from the environment",
        global: "bpfHostNetworkedNATWithoutCTLB: Enabled",
        node: "",
        env: &[("FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB", "disabled")],
        flags: &[],
        setting: "bpfHostNetworkedNATWithoutCTLB",
        value: "Disabled",
        source: Source::Environment,
    },
    Case {
        what: "direct delivery between local pods turned off in a node's configuration",
        global: "bpfRedirectToPeer: Enabled",
        node: "bpfRedirectToPeer: Disabled",
        env: &[],
        flags: &[],
        setting: "bpfRedirectToPeer",
        value: "Disabled",
        source: Source::DatastorePerHost,
    },
    Case {
        what: "environment intervals are seconds",
        global: "iptablesRefreshInterval: 30s",
        node: "",
        env: &[("FELIX_IPTABLESREFRESHINTERVAL", "15")],
        flags: &[],
        setting: "iptablesRefreshInterval",
        value: "15s",
        source: Source::Environment,
    },
    Case {
        what: "a datastore interval",
        global: "routeRefreshInterval: 1m30s",
        node: "routeRefreshInterval: 500ms",
        env: &[],
        flags: &[],
        setting: "routeRefreshInterval",
        value: "500ms",
        source: Source::DatastorePerHost,
    },
    Case {
        what: "failsafe ports: none",
        global: "",
        node: "",
        env: &[("FELIX_FAILSAFEINBOUNDHOSTPORTS", "none")],
        flags: &[],
        setting: "failsafeInboundHostPorts",
        value: "none",
        source: Source::Environment,
    },
    Case {
        what: "failsafe ports: a bare port is TCP, a net may be given",
        global: "",
        node: "",
        env: &[(
            "FELIX_FAILSAFEOUTBOUNDHOSTPORTS",
            "22, udp:53,tcp:10.0.0.0/8:6443",
        )],
        flags: &[],
        setting: "failsafeOutboundHostPorts",
        value: "TCP:22,UDP:53,TCP:10.0.0.0/8:6443",
        source: Source::Environment,
    },
    Case {
        what: "failsafe ports: Calico's defaults",
        global: "",
        node: "",
        env: &[],
        flags: &[],
        setting: "failsafeInboundHostPorts",
        value: "TCP:22,UDP:68,TCP:179,TCP:2379,TCP:2380,TCP:5473,TCP:6443,TCP:6666,TCP:6667",
        source: Source::Default,
    },
    Case {
        what: "endpoint-to-host action from the node",
        global: "defaultEndpointToHostAction: Accept",
        node: "defaultEndpointToHostAction: Return",
        env: &[],
        flags: &[],
        setting: "defaultEndpointToHostAction",
        value: "Return",
        source: Source::DatastorePerHost,
    },
    Case {
        what: "a local-only setting ignores the datastore (it has no field)",
        global: "",
        node: "",
        env: &[("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1")],
        flags: &[],
        setting: "prometheusMetricsHost",
        value: "127.0.0.1",
        source: Source::Environment,
    },
    Case {
        what: "metrics port from the global resource",
        global: "prometheusMetricsPort: 9191\nprometheusMetricsEnabled: true",
        node: "",
        env: &[],
        flags: &[],
        setting: "prometheusMetricsPort",
        value: "9191",
        source: Source::DatastoreGlobal,
    },
];

fn inputs(case: &Case) -> Inputs {
    let mut inputs = Inputs::default().with_env(
        case.env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("PATH".to_string(), "/bin".to_string())]),
    );
    inputs.global = (!case.global.is_empty()).then(|| spec(case.global));
    inputs.node = (!case.node.is_empty()).then(|| spec(case.node));
    inputs.flags = case
        .flags
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    inputs
}

#[test]
fn settings_merge_by_priority() {
    for case in CASES {
        let config = merge(&inputs(case)).unwrap_or_else(|e| panic!("{}: {e}", case.what));
        let entry = config
            .entries()
            .into_iter()
            .find(|e| e.name == case.setting)
            .unwrap();
        assert_eq!(
            (entry.value.as_str(), entry.source),
            (case.value, case.source),
            "{}",
            case.what
        );
    }
}

#[test]
fn typed_values_match_what_is_shown() {
    let i = Inputs {
        global: Some(spec(
            "interfacePrefix: cali,tap\nlogSeverityScreen: Warning\nflowLogsFlushInterval: 15s",
        )),
        ..Inputs::default()
    };
    let c = merge(&i).unwrap();
    assert_eq!(c.interface_prefix.value, vec!["cali", "tap"]);
    assert_eq!(c.log_severity_screen.value, LogSeverity::Warning);
    assert_eq!(c.log_filter(), "warn");
    assert_eq!(c.flow_logs_flush_interval.value, Duration::from_secs(15));
    assert_eq!(
        c.default_endpoint_to_host_action.value,
        EndpointToHostAction::Drop
    );
    assert_eq!(c.failsafe_inbound_host_ports.value.len(), 9);
}

#[test]
fn malformed_local_values_are_errors_naming_their_origin() {
    let cases: &[(&str, &str, &str)] = &[
        ("FELIX_INTERFACEPREFIX", "cali,,tap", "empty"),
        ("FELIX_INTERFACEPREFIX", "ca*li", "'*'"),
        ("FELIX_INTERFACEPREFIX", "averyveryverylongprefix", "longer"),
        ("FELIX_BPFENABLED", "maybe", "boolean"),
        ("FELIX_HEALTHPORT", "70000", "port"),
        ("FELIX_LOGSEVERITYSCREEN", "loud", "severity"),
        (
            "FELIX_FAILSAFEINBOUNDHOSTPORTS",
            "icmp:22",
            "TCP, UDP or SCTP",
        ),
        (
            "FELIX_FAILSAFEINBOUNDHOSTPORTS",
            "tcp:a:b:c",
            "PROTOCOL:[NET:]PORT",
        ),
        ("FELIX_IPTABLESREFRESHINTERVAL", "soon", "soon"),
        ("FELIX_BPFMAPSIZENATFRONTEND", "0", "holds nothing"),
        (
            "FELIX_BPFMAPSIZENATBACKEND",
            "100000000",
            "beyond the most a map may hold",
        ),
        (
            "FELIX_BPFMAPSIZECONNTRACK",
            "lots",
            "not a number of entries",
        ),
        (
            "FELIX_DEFAULTENDPOINTTOHOSTACTION",
            "allow",
            "Drop, Return or Accept",
        ),
        (
            "FELIX_BPFHOSTNETWORKEDNATWITHOUTCTLB",
            "sometimes",
            "neither Enabled nor Disabled",
        ),
    ];
    for (var, value, reason) in cases {
        let i = Inputs::default().with_env([(var.to_string(), value.to_string())]);
        let err = merge(&i).unwrap_err().to_string();
        assert!(
            err.contains(var) && err.contains(value) && err.contains(reason),
            "{var}={value}: {err}"
        );
    }
}

#[test]
fn changes_say_whether_a_restart_is_needed() {
    let base = merge(&Inputs::default()).unwrap();
    let mut i = Inputs {
        global: Some(FelixConfigurationSpec {
            log_severity_screen: Some(LogSeverity::Debug),
            iptables_refresh_interval: Some(GoDuration(Duration::from_secs(5))),
            ..Default::default()
        }),
        ..Inputs::default()
    };
    let live = merge(&i).unwrap();
    let changes = live.changes_from(&base);
    assert_eq!(
        changes.iter().map(|c| c.name).collect::<Vec<_>>(),
        vec!["logSeverityScreen", "iptablesRefreshInterval"]
    );
    assert!(!FelixConfig::needs_restart(&changes));

    i.node = Some(FelixConfigurationSpec {
        interface_prefix: Some("cali".into()),
        ..Default::default()
    });
    let restart = merge(&i).unwrap();
    let changes = restart.changes_from(&live);
    assert_eq!(changes.len(), 1);
    assert!(FelixConfig::needs_restart(&changes));

    // The same value from another source is no change.
    let mut j = Inputs::default().with_env([("FELIX_INTERFACEPREFIX".into(), "mnl".into())]);
    j.global = None;
    assert!(merge(&j).unwrap().changes_from(&base).is_empty());
}

#[test]
fn datastore_names_pick_the_layer() {
    let mut i = Inputs::default();
    let s = FelixConfigurationSpec {
        health_port: Some(1),
        ..Default::default()
    };
    assert!(i.set_datastore("node1", "default", Some(s.clone())));
    assert!(i.set_datastore("node1", "node.node1", Some(s.clone())));
    assert!(!i.set_datastore("node1", "node.node2", Some(s.clone())));
    assert!(!i.set_datastore("node1", "node1", Some(s)));
    assert!(i.global.is_some() && i.node.is_some());
    assert!(i.set_datastore("node1", "node.node1", None));
    assert!(i.node.is_none());
}

#[test]
fn fields_not_acted_on_are_named() {
    let s = FelixConfigurationSpec {
        interface_prefix: Some("cali".into()),
        reporting_interval: Some(GoDuration(Duration::from_secs(1))),
        iptables_backend: Some("nft".into()),
        ..Default::default()
    };
    assert_eq!(
        ignored_fields(&s),
        vec![
            "iptablesBackend".to_string(),
            "reportingInterval".to_string()
        ]
    );
}

/// Settings Felix takes only from flags and the environment, never from
/// the datastore.
const LOCAL_ONLY: &[&str] = &[
    "prometheusMetricsHost",
    "healthHost",
    "flowLogsFileDirectory",
];

/// Every field of Calico's FelixConfiguration, from the types' own list
/// (the error for an unknown field names them all).
fn every_field() -> Vec<String> {
    let err = serde_json::from_str::<FelixConfigurationSpec>(r#"{"notAField": 1}"#)
        .expect_err("an unknown field is refused")
        .to_string();
    let list = err
        .split_once("expected one of ")
        .map(|(_, l)| l)
        .expect("the error lists the fields");
    list.split(", ")
        .map(|f| {
            f.trim_matches(|c: char| c == '`' || c.is_whitespace() || c == ',')
                .split('`')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn each_field_is_either_acted_on_or_listed_as_not_acted_on() {
    let fields = every_field();
    assert!(fields.len() > 150, "{fields:?}");
    // Older spellings the types still read, as aliases of a listed field.
    let aliases = ["bpfMapSizeIpSets"];
    for f in fields.iter().filter(|f| !aliases.contains(&f.as_str())) {
        let acted = SETTINGS.contains(&f.as_str()) && !LOCAL_ONLY.contains(&f.as_str());
        assert!(
            acted != not_acted_on(f),
            "{f}: acted on by Felix: {acted}; listed as not acted on by the model: {}",
            not_acted_on(f)
        );
    }
    for s in LOCAL_ONLY {
        assert!(SETTINGS.contains(s), "{s}");
    }
}

#[test]
fn the_table_shows_every_setting_with_its_source() {
    let mut i = Inputs::default().with_env([("FELIX_HEALTHENABLED".into(), "true".into())]);
    i.node = Some(spec("interfacePrefix: cali"));
    let table = merge(&i).unwrap().table();
    assert_eq!(table.lines().count(), SETTINGS.len());
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    assert!(line("interfacePrefix").contains("datastore (node)"));
    assert!(line("interfacePrefix").ends_with("restart"));
    assert!(line("healthEnabled").contains("environment"));
    assert!(line("logSeverityScreen").contains("default"));
    assert!(line("logSeverityScreen").ends_with("live"));
}

#[test]
fn an_unusable_datastore_prefix_falls_back_and_is_reported() {
    let i = Inputs {
        global: Some(spec("interfacePrefix: tap")),
        node: Some(spec("interfacePrefix: ca*li")),
        ..Inputs::default()
    };
    let c = merge(&i).unwrap();
    assert_eq!(
        (c.interface_prefix.value, c.interface_prefix.source),
        (vec!["tap".to_string()], Source::DatastoreGlobal)
    );
    let problems = unusable_fields(i.node.as_ref().unwrap());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, "interfacePrefix");
    assert!(problems[0].1.contains("'*'"), "{problems:?}");
    assert!(unusable_fields(i.global.as_ref().unwrap()).is_empty());
}

fn installation(dataplane: &str) -> manul_model::operator::InstallationSpec {
    serde_json::from_value(serde_json::json!({
        "calicoNetwork": { "linuxDataplane": dataplane }
    }))
    .unwrap()
}

/// `(FelixConfiguration default, Installation dataplane, FELIX_BPFENABLED,
/// expected bpfEnabled, expected source)`.
const INSTALLATION_CASES: &[(&str, &str, &str, &str, Source)] = &[
    ("", "BPF", "", "true", Source::Installation),
    ("", "Iptables", "", "false", Source::Installation),
    ("", "Nftables", "", "false", Source::Installation),
    ("bpfEnabled: false", "BPF", "", "true", Source::Installation),
    (
        "bpfEnabled: true",
        "Iptables",
        "",
        "false",
        Source::Installation,
    ),
    (
        "bpfEnabled: true",
        "VPP",
        "",
        "true",
        Source::DatastoreGlobal,
    ),
    ("", "BPF", "false", "false", Source::Environment),
];

#[test]
fn the_installation_picks_the_dataplane_under_local_settings() {
    for &(global, dataplane, env, value, source) in INSTALLATION_CASES {
        let mut i = Inputs::default()
            .with_env((!env.is_empty()).then(|| ("FELIX_BPFENABLED".to_string(), env.to_string())));
        i.global = (!global.is_empty()).then(|| spec(global));
        let (taken, warning) = i.set_installation("default", Some(&installation(dataplane)));
        assert!(taken);
        assert_eq!(warning.is_some(), dataplane == "VPP", "{dataplane}");
        let config = merge(&i).unwrap();
        assert_eq!(
            (
                config.bpf_enabled.value.to_string().as_str(),
                config.bpf_enabled.source
            ),
            (value, source),
            "{global} / {dataplane} / {env}"
        );
    }
}

#[test]
fn only_the_default_installation_counts_and_its_removal_clears_it() {
    let mut i = Inputs::default();
    assert_eq!(
        i.set_installation("other", Some(&installation("BPF"))),
        (false, None)
    );
    assert!(i.installation.is_none());
    i.set_installation("default", Some(&installation("BPF")));
    let with = merge(&i).unwrap();
    assert!(with.bpf_enabled.value);
    assert_eq!(i.set_installation("default", None), (true, None));
    let without = merge(&i).unwrap();
    assert_eq!(without.bpf_enabled.source, Source::Default);
    let changes = without.changes_from(&with);
    assert!(FelixConfig::needs_restart(&changes), "{changes:?}");
}

#[test]
fn wireguard_settings_come_from_the_datastore_and_the_environment() {
    let mut i = Inputs {
        global: Some(spec(
            "wireguardEnabled: true\nwireguardListeningPort: 51821\nwireguardMTU: 1400\nwireguardKeepAlive: 25s",
        )),
        ..Inputs::default()
    };
    let c = merge(&i).unwrap();
    assert!(c.wireguard_enabled.value);
    assert_eq!(c.wireguard_listening_port.value, 51821);
    assert_eq!(c.wireguard_mtu.value, 1400);
    assert_eq!(c.wireguard_keep_alive.value, Duration::from_secs(25));
    assert_eq!(c.wireguard_interface_name.value, "wireguard.mnl");
    // A datastore name that is no interface name falls back, and is named.
    i.node = Some(spec("wireguardInterfaceName: 'not an interface'"));
    assert_eq!(
        merge(&i).unwrap().wireguard_interface_name.value,
        "wireguard.mnl"
    );
    assert_eq!(
        unusable_fields(i.node.as_ref().unwrap())
            .iter()
            .map(|(f, _)| *f)
            .collect::<Vec<_>>(),
        vec!["wireguardInterfaceName"]
    );
    // The key file is local only.
    let i = Inputs::default()
        .with_env([("FELIX_WIREGUARDPRIVATEKEYFILE".into(), "/tmp/wg.key".into())]);
    assert_eq!(
        merge(&i).unwrap().wireguard_private_key_file.value,
        "/tmp/wg.key"
    );
    let bad = Inputs::default().with_env([("FELIX_WIREGUARDMTU".into(), "20".into())]);
    assert!(merge(&bad).is_err());
}
