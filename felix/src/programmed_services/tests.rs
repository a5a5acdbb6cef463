use manul_dataplane_api::testutil::service;
use manul_dataplane_api::{Driver, NullDriver, Operation};

use super::*;

fn recorded(driver: &ServiceRecordingDriver) -> Vec<(String, String)> {
    driver
        .observer()
        .frontends()
        .into_iter()
        .map(|s| (s.namespace, s.name))
        .collect()
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_owned(), name.to_owned())
}

#[test]
fn the_record_follows_what_the_driver_took_and_drops_stale_services_at_in_sync() {
    let services = ProgrammedServices::new();
    let mut driver = ServiceRecordingDriver::new(Box::new(NullDriver::new()), services.clone());
    driver
        .apply(&[
            Operation::ServiceUpdate(service("default", "web")),
            Operation::ServiceUpdate(service("default", "db")),
            Operation::InSync,
        ])
        .unwrap();
    assert_eq!(
        recorded(&driver),
        vec![key("default", "db"), key("default", "web")]
    );
    // A refused batch (removing what the driver does not hold) changes
    // nothing but makes everything stale.
    let refused = driver.apply(&[
        Operation::ServiceRemove {
            namespace: "default".into(),
            name: "web".into(),
        },
        Operation::ServiceRemove {
            namespace: "default".into(),
            name: "absent".into(),
        },
    ]);
    assert!(refused.is_err());
    assert_eq!(recorded(&driver).len(), 2);
    // The resync sends `web` only: `db` goes at its InSync.
    driver.mark_stale();
    driver
        .apply(&[Operation::ServiceUpdate(service("default", "web"))])
        .unwrap();
    assert_eq!(recorded(&driver).len(), 2, "stale items stay until InSync");
    driver.apply(&[Operation::InSync]).unwrap();
    assert_eq!(recorded(&driver), vec![key("default", "web")]);
    driver
        .apply(&[Operation::ServiceRemove {
            namespace: "default".into(),
            name: "web".into(),
        }])
        .unwrap();
    assert!(recorded(&driver).is_empty());
}

#[test]
fn metrics_count_services_frontends_and_backends_at_scrape() {
    let services = ProgrammedServices::new();
    let mut registry = Registry::default();
    services.register_metrics(&mut registry);
    let mut web = service("default", "web");
    // Two cluster IPs and a node port on one port: three frontends.
    web.cluster_ips.push("fd00::a".parse().unwrap());
    web.ports[0].node_port = Some(30080);
    services.applied(&[
        Operation::ServiceUpdate(web),
        Operation::ServiceUpdate(service("default", "db")),
    ]);
    assert_eq!(services.counts(), (2, 4, 2));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "felix_services 2",
        "felix_service_frontends 4",
        "felix_service_backends 2",
        "# HELP felix_service_frontends ",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn service_nat_totals_are_exported_only_from_drivers_that_count_them() {
    let services = ProgrammedServices::new();
    let mut registry = Registry::default();
    services.register_metrics(&mut registry);
    let encode = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    services.observe_counters(NullDriver::new().service_counters());
    assert!(!encode().contains("felix_service_nat"), "{}", encode());
    services.observe_counters(Some(ServiceCounters {
        translated: 7,
        rejected_no_backend: 3,
        hairpin: 2,
        reset: 1,
        dsr_untrusted_dropped: 4,
        affinity_entries: 5,
    }));
    let text = encode();
    for line in [
        "felix_service_nat_connections_total 7",
        "felix_service_no_backend_rejects_total 3",
        "felix_service_hairpin_connections_total 2",
        "felix_service_backend_resets_total 1",
        "felix_service_dsr_untrusted_drops_total 4",
        "felix_service_affinity_entries 5",
        "# HELP felix_service_no_backend_rejects ",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
