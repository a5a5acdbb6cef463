//! The driver against the real kernel, in a network namespace the test
//! creates: refresh repairs out-of-band changes, other software's tables are
//! never touched, a restart adopts the old table until in-sync.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use manul_dataplane_api::{
    Action, Driver, EndpointId, IpSetKind, IpSetMember, Match, Operation, Policy, PolicyId, Rule,
    TierPolicies, WorkloadEndpoint,
};
use manul_dataplane_conformance::privileges;
use manul_dataplane_iptables::{Nft, NftDriver, Refresh};
use manul_netns::NetNs;

fn nft(args: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", &format!("nft {args}")])
        .output()
        .expect("run nft")
}

fn batch() -> Vec<Operation> {
    let pid = PolicyId {
        tier: "default".into(),
        name: "production/p".into(),
    };
    let id = EndpointId {
        namespace: "production".into(),
        name: "api".into(),
    };
    vec![
        Operation::IpSetUpdate {
            id: "sel:app == 'frontend'".into(),
            kind: IpSetKind::Net,
            members: vec![IpSetMember::Net("10.65.0.1/32".parse().unwrap())],
        },
        Operation::PolicyUpdate {
            id: pid.clone(),
            policy: Policy {
                inbound: vec![Rule {
                    id: "production/p/inbound/0".into(),
                    action: Action::Allow,
                    ip_version: None,
                    protocol: Some(6),
                    not_protocol: None,
                    icmp: None,
                    not_icmp: None,
                    src: Match {
                        ip_sets: vec!["sel:app == 'frontend'".into()],
                        ..Match::default()
                    },
                    dst: Match::default(),
                }],
                outbound: vec![],
            },
        },
        Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: id.clone(),
            interface_name: "mnlapi".into(),
            nets: vec!["10.65.0.2/32".parse().unwrap()],
            mac: None,
            tiers: vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![pid],
                outbound: vec![],
            }],
            profiles: vec![],
        }),
        Operation::InSync,
    ]
}

/// Runs `f` on a thread inside a fresh namespace.
fn in_netns(tag: &str, f: impl FnOnce() + Send) {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let ns = NetNs::create(&manul_netns::unique_prefix(tag)).expect("namespace");
    ns.run(f).expect("run in namespace");
}

#[test]
fn refresh_repairs_out_of_band_changes() {
    in_netns("iptr", || {
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        d.apply(&batch()).expect("apply");
        assert_eq!(d.refresh().expect("refresh"), Refresh::Clean);
        let set = manul_dataplane_iptables::names::ip_set("sel:app == 'frontend'", false);
        let tampering = [
            "flush chain inet manul mnl-pi-default/production/p".to_string(),
            "add rule inet manul mnl-tw-mnlapi accept".to_string(),
            "delete element inet manul mnl-wl-ifaces { \"mnlapi\" }".to_string(),
            format!("add element inet manul {set} {{ 10.9.9.9 }}"),
            "delete table inet manul".to_string(),
        ];
        for t in tampering {
            let out = nft(&format!("'{}'", t.replace('\'', "'\\''")));
            assert!(
                out.status.success(),
                "{t}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            match d.refresh().expect("refresh") {
                Refresh::Repaired(what) => eprintln!("{t}: repaired ({what})"),
                other => panic!("{t}: not detected: {other:?}"),
            }
            assert_eq!(
                d.refresh().expect("refresh"),
                Refresh::Clean,
                "after repairing {t}"
            );
        }
        assert_eq!(d.stats().repairs, 5);
    });
}

#[test]
fn other_tables_are_never_touched() {
    in_netns("ipto", || {
        let out = nft(
            "-f - <<'EOF'\ntable inet other {\n chain input { type filter hook input priority 0; policy accept; tcp dport 22 accept\n }\n}\nEOF",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = nft("list table inet other").stdout;
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        d.apply(&batch()).expect("apply");
        d.refresh().expect("refresh");
        d.remove_all().expect("remove");
        assert_eq!(nft("list table inet other").stdout, before);
        assert!(
            !nft("list table inet manul").status.success(),
            "our table is gone"
        );
    });
}

#[test]
fn a_restart_keeps_the_old_table_until_in_sync_then_replaces_it() {
    in_netns("iptt", || {
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        d.apply(&batch()).expect("apply");
        let listing = nft("list table inet manul").stdout;
        drop(d);
        let mut d = NftDriver::new(Nft::default()).expect("restarted driver");
        // Before in-sync nothing changes: the old rules keep enforcing.
        let mut ops = batch();
        ops.pop();
        // Drop the set member, so the final state differs from the old one.
        if let Operation::IpSetUpdate { members, .. } = &mut ops[0] {
            members.clear();
        }
        d.apply(&ops).expect("apply");
        assert_eq!(nft("list table inet manul").stdout, listing);
        assert_eq!(d.stats().held_batches, 1);
        d.apply(&[Operation::InSync]).expect("in sync");
        let after = String::from_utf8_lossy(&nft("list table inet manul").stdout).into_owned();
        assert!(!after.contains("10.65.0.1"), "{after}");
        assert!(after.contains("mnl-tw-mnlapi"));
        assert_eq!(d.refresh().expect("refresh"), Refresh::Clean);
    });
}

#[test]
fn host_endpoints_load_with_their_failsafe_rules() {
    in_netns("ipth", || {
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        let mut ops = batch();
        ops.insert(
            ops.len() - 1,
            Operation::HostEndpointUpdate(manul_dataplane_api::HostEndpoint {
                id: "node1-eth9".into(),
                interface_name: "eth9".into(),
                expected_ips: vec![],
                tiers: vec![],
                pre_dnat_tiers: vec![],
                untracked_tiers: vec![],
                forward_tiers: vec![],
                profiles: vec![],
            }),
        );
        d.apply(&ops).expect("apply");
        let listing =
            String::from_utf8_lossy(&nft("list chain inet manul mnl-th-eth9").stdout).into_owned();
        assert!(
            listing.contains("tcp dport { 22, 179, 2379, 2380, 5473, 6443, 6666, 6667 } accept"),
            "{listing}"
        );
        assert_eq!(d.refresh().expect("refresh"), Refresh::Clean);
    });
}
