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
            "a Felix identity reads only",
        ),
        (
            felix,
            Delete,
            block,
            Absent,
            on("n1"),
            "a Felix identity reads only",
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
