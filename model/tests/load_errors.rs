//! Every error of a document is reported, each at its field path and in
//! the document's terms: (document, every error line `load` must produce,
//! in order).
#![allow(clippy::unwrap_used, clippy::expect_used)]

const POLICY: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n";
const FELIX: &str = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n";
const INSTALLATION: &str =
    "apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec:\n";

fn errors_of(doc: &str) -> Vec<String> {
    let out = manul_model::load("t.yaml", doc.as_bytes());
    assert!(
        out.resources.is_empty(),
        "{doc}: loaded {:?}",
        out.resources
    );
    out.errors.iter().map(ToString::to_string).collect()
}

fn check(cases: &[(String, Vec<&str>)]) {
    for (doc, want) in cases {
        let got = errors_of(doc);
        assert_eq!(&got, want, "\n{doc}");
    }
}

#[test]
fn every_unknown_field_and_bad_value_of_a_document_is_reported() {
    let p = "t.yaml: document 1 (NetworkPolicy ns/p)";
    check(&[(
        format!(
            "{POLICY}  selectr: all()\n  ingress:\n  - action: Allow\n    sorce: {{}}\n  \
                 - action: Allow\n    protocol: TCP\n    destination:\n      ports: [70000, 80, 'x:y', 99999]\n  \
                 egress:\n  - action: 5\n"
        ),
        vec![
            &format!(
                "{p}: spec: unknown field `selectr`, expected one of `tier`, `order`, `selector`, `types`, `ingress`, `egress`, `serviceAccountSelector`, `performanceHints`"
            ),
            &format!(
                "{p}: spec.ingress[0]: unknown field `sorce`, expected one of `action`, `ipVersion`, `protocol`, `icmp`, `notProtocol`, `notICMP`, `source`, `destination`, `http`, `metadata`"
            ),
            &format!(
                "{p}: spec.ingress[1].destination.ports[0]: port 70000 is out of range 0-65535"
            ),
            &format!("{p}: spec.ingress[1].destination.ports[2]: port \"x\" is not a number"),
            &format!(
                "{p}: spec.ingress[1].destination.ports[3]: port 99999 is out of range 0-65535"
            ),
            &format!(
                "{p}: spec.egress[0].action: expected one of `Allow`, `Deny`, `Log`, `Pass`, found the integer 5"
            ),
        ],
    )]);
}

#[test]
fn a_value_of_the_wrong_type_is_a_type_error_at_its_field() {
    let p = "t.yaml: document 1 (NetworkPolicy ns/p)";
    let f = "t.yaml: document 1 (FelixConfiguration default)";
    let i = "t.yaml: document 1 (Installation default)";
    check(&[
        (
            format!("{POLICY}  selector: 1234567890123456789012345\n"),
            vec![&format!(
                "{p}: spec.selector: expected a string, found the integer 1234567890123456789012345"
            )],
        ),
        (
            format!("{POLICY}  order: [1]\n  types: Ingress\n  ingress:\n  - action: [Allow]\n"),
            vec![
                &format!("{p}: spec.order: expected a number, found a list"),
                &format!("{p}: spec.types: expected a list, found the string \"Ingress\""),
                &format!(
                    "{p}: spec.ingress[0].action: expected one of `Allow`, `Deny`, `Log`, `Pass`, found a list"
                ),
            ],
        ),
        (
            format!(
                "{FELIX}  ipipMTU: big\n  logSeverityScreen: 3\n  bpfEnabled: 'yes'\n  healthPort: 70000\n  chainInsertMode: Sideways\n"
            ),
            vec![
                &format!(
                    "{f}: spec.ipipMTU: expected an integer 0-4294967295, found the string \"big\""
                ),
                &format!(
                    "{f}: spec.logSeverityScreen: expected one of `Trace`, `Debug`, `Info`, `Warning`, `Error`, `Fatal`, found the integer 3"
                ),
                &format!("{f}: spec.bpfEnabled: expected a boolean, found the string \"yes\""),
                &format!(
                    "{f}: spec.healthPort: expected an integer 0-65535, found the integer 70000"
                ),
                &format!(
                    "{f}: spec.chainInsertMode: unknown value \"Sideways\"; expected one of Insert, Append"
                ),
            ],
        ),
        (
            format!("{FELIX}  ipipMTUU: 1400\n  ipv6Suport: false\n  ipv6Support: false\n"),
            vec![
                &format!("{f}: spec: unknown field `ipipMTUU`; did you mean `ipipMTU`?"),
                &format!("{f}: spec: unknown field `ipv6Suport`; did you mean `ipv6Support`?"),
            ],
        ),
        (
            format!(
                "{INSTALLATION}  cni:\n    type: Flannel\n  calicoNetwork:\n    nodeAddressAutodetectionV4:\n      canreach: 8.8.8.8\n    ipPools:\n    - cidr: 10.0.0.0/33\n      nodeSelector: app = x\n"
            ),
            vec![
                &format!(
                    "{i}: spec.cni.type: unknown variant `Flannel`, expected one of `Calico`, `GKE`, `AmazonVPC`, `AzureVNET`"
                ),
                &format!(
                    "{i}: spec.calicoNetwork.nodeAddressAutodetectionV4: unknown field `canreach`, expected one of `firstFound`, `kubernetes`, `interface`, `skipInterface`, `canReach`, `cidrs`"
                ),
                &format!(
                    "{i}: spec.calicoNetwork.ipPools[0].cidr: \"10.0.0.0/33\" is not a valid CIDR (such as 10.0.0.0/8 or fd00::/64)"
                ),
                &format!(
                    "{i}: spec.calicoNetwork.ipPools[0].nodeSelector: invalid selector \"app = x\": at position 4: unexpected character `=`; equality is written `==`"
                ),
            ],
        ),
    ]);
}

#[test]
fn a_value_taken_out_does_not_also_count_as_missing() {
    let ip = "t.yaml: document 1 (IPPool p)";
    check(&[(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 5\n  blockSize: 300\n".to_string(),
        vec![
            &format!("{ip}: spec.cidr: expected a string, found the integer 5"),
            &format!("{ip}: spec.blockSize: expected an integer 0-255, found the integer 300"),
        ],
    )]);
}

#[test]
fn kubernetes_kinds_report_every_unknown_field() {
    let k = "t.yaml: document 1 (NetworkPolicy ns/k)";
    let why = "(a misspelt field could change what a policy allows, so it is an error)";
    check(&[(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\n  namespace: ns\n  labes: {}\nspec:\n  podSelectr: {}\n  ingress:\n  - frm: []\n".to_string(),
        vec![
            &format!("{k}: metadata: unknown field `labes` {why}"),
            &format!("{k}: spec: unknown field `podSelectr` {why}"),
            &format!("{k}: spec.ingress[0]: unknown field `frm` {why}"),
        ],
    )]);
}

#[test]
fn a_selector_naming_a_label_key_kubernetes_would_refuse_is_an_error() {
    let p = "t.yaml: document 1 (NetworkPolicy ns/p)";
    let long = "k".repeat(64);
    check(&[(
        format!(
            "{POLICY}  selector: app == 'a' && {long} == 'b'\n  ingress:\n  - action: Allow\n    source:\n      selector: has(Example.com/app)\n"
        ),
        vec![
            &format!(
                "{p}: spec.selector: invalid selector \"app == 'a' && {long} == 'b'\": at position 14: \
                 label name \"kkkkkkkkkkkkkkkkkkkk\"... is 64 characters long; the limit is 63"
            ),
            &format!(
                "{p}: spec.ingress[0].source.selector: invalid selector \"has(Example.com/app)\": at position 4: \
                 label key prefix \"Example.com\": \"Example.com\" is not a valid DNS-1123 subdomain: use lowercase \
                 letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
        ],
    )]);
}

#[test]
fn felix_settings_are_checked_against_calicos_ranges_and_forms() {
    let f = "t.yaml: document 1 (FelixConfiguration default)";
    check(&[(
        format!(
            "{FELIX}  iptablesBackend: Both\n  bpfLogLevel: Loud\n  nodeSelector: all()\n  \
             logActionRateLimit: 10/week\n  featureGates: a=1,b\n  routeTableRange: {{min: 0, max: 300}}\n  \
             goMaxProcs: -2\n  wireguardRoutingRulePriority: 40000\n  bpfMaglevMaxServices: 0\n"
        ),
        vec![
            &format!(
                "{f}: spec.iptablesBackend: unknown value \"Both\"; expected one of Legacy, NFT, Auto"
            ),
            &format!(
                "{f}: spec.bpfLogLevel: unknown value \"Loud\"; expected one of Off, Info, Debug"
            ),
            &format!(
                "{f}: spec.nodeSelector: only a FelixConfiguration not named `default` or `node.NAME` may have a node selector"
            ),
            &format!(
                "{f}: spec.logActionRateLimit: \"10/week\" is not a rate such as 10/second (1-9999 per second, minute, hour or day)"
            ),
            &format!(
                "{f}: spec.featureGates: \"a=1,b\" is not a comma-separated list of key=value"
            ),
            &format!(
                "{f}: spec.routeTableRange: must be a range of route table indices within 1-250"
            ),
            &format!("{f}: spec.goMaxProcs: -2 is below the minimum, -1"),
            &format!("{f}: spec.wireguardRoutingRulePriority: 40000 is out of range 1-32765"),
            &format!("{f}: spec.bpfMaglevMaxServices: 0 is out of range 1-3000"),
        ],
    )]);
}
