#![allow(clippy::unwrap_used)]

use manul_model::Kind;
use manul_tls::PeerIdentity;

use super::roles::{Identities, RoleMap, RoleSettings};
use super::*;

fn cni(node: &str) -> Caller {
    Caller {
        identity: format!("spiffe://manul/node/{node}/cni"),
        role: Role::Cni(Scope::Node(node.into())),
    }
}

fn on(node: &str) -> Placement {
    Placement::Node(node.into())
}

fn target(verb: Verb, kind: Kind, written: Placement, stored: Placement) -> Target {
    Target {
        verb,
        kind,
        name: "x".into(),
        written,
        stored,
        change: Change::Other,
    }
}

#[test]
fn decisions() {
    use Placement::{Absent, NoNode};
    use Verb::{Apply, Delete};
    let wep = Kind::WorkloadEndpoint;
    let block = Kind::IpamBlock;
    let felix = Caller {
        identity: "spiffe://manul/node/n1/felix".into(),
        role: Role::Felix(Scope::Node("n1".into())),
    };
    let shared = Caller {
        identity: "spiffe://manul/node/shared/cni".into(),
        role: Role::Cni(Scope::AnyNode),
    };
    let role = |role: Role| Caller {
        identity: "someone".into(),
        role,
    };
    // (caller, verb, kind, written, stored, refusal reason or "" when allowed)
    let table: Vec<(Caller, Verb, Kind, Placement, Placement, &str)> = vec![
        (
            role(Role::Admin),
            Apply,
            Kind::GlobalNetworkPolicy,
            NoNode,
            Absent,
            "",
        ),
        (role(Role::Admin), Delete, wep, Absent, on("n2"), ""),
        (role(Role::Replica), Apply, Kind::IpPool, NoNode, NoNode, ""),
        (
            role(Role::Plaintext),
            Delete,
            Kind::Tier,
            Absent,
            NoNode,
            "",
        ),
        // A node's CNI identity: its node's endpoints and blocks.
        (cni("n1"), Apply, wep, on("n1"), Absent, ""),
        (cni("n1"), Apply, wep, on("n1"), on("n1"), ""),
        (cni("n1"), Delete, wep, Absent, on("n1"), ""),
        (cni("n1"), Delete, wep, Absent, Absent, ""),
        (cni("n1"), Apply, block, on("n1"), Absent, ""),
        (cni("n1"), Apply, block, on("n1"), on("n1"), ""),
        (cni("n1"), Delete, block, Absent, on("n1"), ""),
        (
            cni("n1"),
            Apply,
            wep,
            on("n2"),
            Absent,
            "it is on node n2; a CNI identity writes its own node's endpoints only",
        ),
        (
            cni("n1"),
            Apply,
            wep,
            on("n1"),
            on("n2"),
            "the stored one is on node n2; a CNI identity writes its own node's endpoints only",
        ),
        (
            cni("n1"),
            Delete,
            wep,
            Absent,
            on("n2"),
            "the stored one is on node n2; a CNI identity writes its own node's endpoints only",
        ),
        (
            cni("n1"),
            Apply,
            block,
            on("n2"),
            Absent,
            "it is on node n2; a CNI identity writes the IPAM blocks affine to its own node only",
        ),
        (
            cni("n1"),
            Delete,
            block,
            Absent,
            NoNode,
            "the stored one names no node; a CNI identity writes the IPAM blocks affine to its own node only",
        ),
        (
            cni("n1"),
            Apply,
            Kind::GlobalNetworkPolicy,
            NoNode,
            Absent,
            "a CNI identity writes WorkloadEndpoints and IPAM blocks only",
        ),
        (
            cni("n1"),
            Apply,
            Kind::Node,
            NoNode,
            Absent,
            "a CNI identity writes WorkloadEndpoints and IPAM blocks only",
        ),
        // An identity shared by every node's plugin: any node, same kinds.
        (shared.clone(), Apply, block, on("n7"), on("n7"), ""),
        (shared.clone(), Apply, wep, on("n2"), on("n1"), ""),
        (
            shared.clone(),
            Apply,
            block,
            NoNode,
            Absent,
            "it names no node; a CNI identity writes the IPAM blocks affine to its own node only",
        ),
        (
            shared,
            Delete,
            Kind::NetworkPolicy,
            Absent,
            NoNode,
            "a CNI identity writes WorkloadEndpoints and IPAM blocks only",
        ),
        // Felix, read-only and unmapped identities write nothing.
        (
            felix.clone(),
            Apply,
            wep,
            on("n1"),
            on("n1"),
            "a Felix identity reads, and writes only its own node's status (the Node's WireGuard public key annotation)",
        ),
        (
            felix,
            Delete,
            block,
            Absent,
            on("n1"),
            "a Felix identity reads, and writes only its own node's status (the Node's WireGuard public key annotation)",
        ),
        (
            role(Role::ReadOnly),
            Apply,
            wep,
            on("n1"),
            Absent,
            "a read-only identity reads only",
        ),
        (
            role(Role::Unmapped),
            Delete,
            Kind::Tier,
            Absent,
            NoNode,
            "this identity has no role that writes (admin, or a node's CNI identity for its node's endpoints and IPAM)",
        ),
    ];
    for (caller, verb, kind, written, stored, want) in table {
        let t = target(verb, kind, written, stored);
        let got = decide(&caller, &t);
        match (want, got) {
            ("", Ok(())) => {}
            ("", Err(r)) => panic!("{caller:?} {t:?}: refused: {r}"),
            (want, Ok(())) => panic!("{caller:?} {t:?}: allowed, wanted {want:?}"),
            (want, Err(r)) => {
                assert_eq!(r.reason, want, "{caller:?} {t:?}");
                assert_eq!(r.identity, caller.identity);
            }
        }
    }
}

#[test]
fn a_refusal_names_identity_verb_key_and_permission() {
    let t = Target {
        verb: Verb::Apply,
        kind: Kind::WorkloadEndpoint,
        name: "default/web".into(),
        written: on("n2"),
        stored: Placement::Absent,
        change: Change::Other,
    };
    assert_eq!(
        decide(&cni("n1"), &t).unwrap_err().to_string(),
        "spiffe://manul/node/n1/cni may not write WorkloadEndpoint default/web: it is on node n2; a CNI identity writes its own node's endpoints only"
    );
    let d = Target {
        verb: Verb::Delete,
        kind: Kind::IpamBlock,
        name: "10-65-0-0-26".into(),
        written: Placement::Absent,
        stored: on("n2"),
        change: Change::Other,
    };
    assert!(
        decide(&cni("n1"), &d)
            .unwrap_err()
            .to_string()
            .starts_with("spiffe://manul/node/n1/cni may not delete IPAMBlock 10-65-0-0-26: ")
    );
}

#[test]
fn placement_reads_the_stored_form() {
    let wep = br#"{"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint","metadata":{"name":"web"},"spec":{"node":"n1"}}"#;
    assert_eq!(Placement::of(Kind::WorkloadEndpoint, wep), on("n1"));
    let block = br#"{"kind":"IPAMBlock","spec":{"cidr":"10.65.0.0/26","affinity":"host:n2"}}"#;
    assert_eq!(Placement::of(Kind::IpamBlock, block), on("n2"));
    let unowned = br#"{"kind":"IPAMBlock","spec":{"cidr":"10.65.0.0/26","affinity":"host:"}}"#;
    assert_eq!(Placement::of(Kind::IpamBlock, unowned), Placement::NoNode);
    assert_eq!(
        Placement::of(Kind::IpamBlock, b"not json"),
        Placement::NoNode
    );
    assert_eq!(Placement::of(Kind::Tier, wep), Placement::NoNode);
}

fn ids(cns: &[&str], uris: &[&str]) -> Identities {
    Identities {
        common_names: cns.iter().map(|s| s.to_string()).collect(),
        uri_sans: uris.iter().map(|s| s.to_string()).collect(),
    }
}

fn cert(cn: Option<&str>, uris: &[&str]) -> PeerIdentity {
    PeerIdentity {
        common_name: cn.map(str::to_string),
        uri_sans: uris.iter().map(|s| s.to_string()).collect(),
    }
}

fn dev_roles() -> RoleMap {
    RoleMap::new(&RoleSettings {
        admin: ids(&["manul-admin"], &["spiffe://manul/admin"]),
        replica: ids(&["manul-typha"], &["spiffe://manul/typha"]),
        cni: ids(&["cni-{node}"], &["spiffe://manul/node/{node}/cni"]),
        felix: ids(&["manul-felix"], &["spiffe://manul/node/{node}/felix"]),
        read_only: ids(
            &[],
            &["spiffe://manul/reader", "spiffe://manul/all/{node}/cni"],
        ),
    })
    .unwrap()
}

#[test]
fn certificates_map_to_roles() {
    let m = dev_roles();
    // (common name, URI SANs, identity, role)
    let table: Vec<(Option<&str>, Vec<&str>, &str, Role)> = vec![
        (
            Some("manul-admin"),
            vec!["spiffe://manul/admin"],
            "spiffe://manul/admin",
            Role::Admin,
        ),
        (Some("manul-admin"), vec![], "manul-admin", Role::Admin),
        (
            Some("manul-typha"),
            vec!["spiffe://manul/typha"],
            "spiffe://manul/typha",
            Role::Replica,
        ),
        (
            Some("manul-cni"),
            vec!["spiffe://manul/node/n1/cni"],
            "spiffe://manul/node/n1/cni",
            Role::Cni(Scope::Node("n1".into())),
        ),
        // The common name is the fallback, a template there too.
        (
            Some("cni-n4"),
            vec![],
            "cni-n4",
            Role::Cni(Scope::Node("n4".into())),
        ),
        (
            Some("manul-felix"),
            vec!["spiffe://manul/node/n2/felix"],
            "spiffe://manul/node/n2/felix",
            Role::Felix(Scope::Node("n2".into())),
        ),
        (
            Some("manul-felix"),
            vec![],
            "manul-felix",
            Role::Felix(Scope::AnyNode),
        ),
        // URI SANs first, in the certificate's order.
        (
            Some("manul-admin"),
            vec!["spiffe://manul/other", "spiffe://manul/node/n3/cni"],
            "spiffe://manul/node/n3/cni",
            Role::Cni(Scope::Node("n3".into())),
        ),
        (
            None,
            vec!["spiffe://manul/reader"],
            "spiffe://manul/reader",
            Role::ReadOnly,
        ),
        // A node name holds no '/', and is never empty.
        (
            None,
            vec!["spiffe://manul/node/a/b/cni"],
            "spiffe://manul/node/a/b/cni",
            Role::Unmapped,
        ),
        (
            None,
            vec!["spiffe://manul/node//cni"],
            "spiffe://manul/node//cni",
            Role::Unmapped,
        ),
        (Some("stranger"), vec![], "stranger", Role::Unmapped),
        (None, vec![], "no CN", Role::Unmapped),
    ];
    for (cn, uris, identity, role) in table {
        let got = m.caller(&cert(cn, &uris));
        assert_eq!(got.identity, identity, "{cn:?} {uris:?}");
        assert_eq!(got.role, role, "{cn:?} {uris:?}");
    }
}

#[test]
fn unusable_role_settings_are_named() {
    for (value, problem) in [
        ("spiffe://{node}/{node}", "{node} may appear once"),
        ("{node}", "{node} alone would match any identity"),
        (
            "spiffe://manul/{nodes}/cni",
            "the only placeholder is {node}",
        ),
    ] {
        let e = RoleMap::new(&RoleSettings {
            cni: ids(&[], &[value]),
            ..RoleSettings::default()
        })
        .unwrap_err();
        assert_eq!(e.problem, problem, "{value}");
        assert_eq!(e.setting, "--cni-uri-san");
    }
    // Empty values are unset, not "match the empty identity".
    let m = RoleMap::new(&RoleSettings {
        admin: ids(&[" "], &[""]),
        ..RoleSettings::default()
    })
    .unwrap();
    assert_eq!(m.caller(&cert(Some(""), &[])).role, Role::Unmapped);
}

fn node(name: &str, annotations: &[(&str, &str)], addresses: &str) -> Vec<u8> {
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect();
    let yaml = format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n  annotations: {{{}}}\nspec:\n  addresses: [{{address: {addresses}}}]\n",
        annotations.join(", ")
    );
    let loaded = manul_model::load("node.yaml", yaml.as_bytes());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    serde_json::to_vec(&loaded.resources[0].resource).unwrap()
}

#[test]
fn felix_writes_only_its_own_nodes_wireguard_key() {
    const KEY: &str = manul_model::v3::WIREGUARD_PUBLIC_KEY_ANNOTATION;
    let plain = node("n1", &[("team", "a")], "192.168.0.1");
    let keyed = node("n1", &[("team", "a"), (KEY, "k1")], "192.168.0.1");
    let rekeyed = node("n1", &[("team", "a"), (KEY, "k2")], "192.168.0.1");
    let moved = node("n1", &[("team", "a"), (KEY, "k1")], "192.168.0.9");
    let relabelled = node("n1", &[("team", "b"), (KEY, "k1")], "192.168.0.1");
    let other = node("n2", &[], "192.168.0.2");
    let other_keyed = node("n2", &[(KEY, "k1")], "192.168.0.2");
    let n = Kind::Node;
    // (stored, written, what it changes)
    type Row<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Change);
    let table: Vec<Row> = vec![
        (Some(&plain), Some(&keyed), Change::StatusOf("n1".into())),
        (Some(&keyed), Some(&rekeyed), Change::StatusOf("n1".into())),
        (Some(&keyed), Some(&plain), Change::StatusOf("n1".into())),
        (Some(&plain), Some(&plain), Change::StatusOf("n1".into())),
        (Some(&keyed), Some(&moved), Change::Other),
        (Some(&keyed), Some(&relabelled), Change::Other),
        (None, Some(&keyed), Change::Other),
        (Some(&keyed), None, Change::Other),
        (
            Some(&other),
            Some(&other_keyed),
            Change::StatusOf("n2".into()),
        ),
        (Some(&plain), Some(b"not json"), Change::Other),
    ];
    for (i, (stored, written, want)) in table.into_iter().enumerate() {
        assert_eq!(Change::of(n, stored, written), want, "row {i}");
    }
    assert_eq!(
        Change::of(Kind::GlobalNetworkPolicy, Some(&plain), Some(&keyed)),
        Change::Other
    );
    let felix = |scope: Scope| Caller {
        identity: "spiffe://manul/node/n1/felix".into(),
        role: Role::Felix(scope),
    };
    let status = |of: &str| Target {
        verb: Verb::Apply,
        kind: n,
        name: of.into(),
        written: Placement::NoNode,
        stored: Placement::NoNode,
        change: Change::StatusOf(of.into()),
    };
    assert!(decide(&felix(Scope::Node("n1".into())), &status("n1")).is_ok());
    assert!(decide(&felix(Scope::AnyNode), &status("n2")).is_ok());
    assert_eq!(
        decide(&felix(Scope::Node("n1".into())), &status("n2"))
            .unwrap_err()
            .reason,
        "it is node n2's status; a Felix identity writes its own node's status only"
    );
    // The same write by any other non-admin role is refused.
    let cni = cni("n1");
    assert!(decide(&cni, &status("n1")).is_err());
}
