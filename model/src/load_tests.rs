use std::path::PathBuf;

use super::*;
use crate::v3::{Action, PolicyType};

fn load_str(yaml: &str) -> LoadOutcome {
    load("test.yaml", yaml.as_bytes())
}

/// The one error loading `yaml` must produce, as displayed.
fn only_error(yaml: &str) -> String {
    let out = load_str(yaml);
    assert!(out.resources.is_empty(), "loaded {:?}", out.resources);
    assert_eq!(out.errors.len(), 1, "errors: {:#?}", out.errors);
    out.errors[0].to_string()
}

/// The repository's `examples/`.
fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

#[test]
fn examples_load_and_bad_ones_are_rejected() {
    let dir = examples();
    for f in yaml_files(&dir) {
        let out = load(&f.display().to_string(), &std::fs::read(&f).unwrap());
        assert!(out.errors.is_empty(), "{}: {:#?}", f.display(), out.errors);
        assert!(!out.resources.is_empty(), "{}", f.display());
    }
    let expectations = [
        ("bad-cidr.yaml", "spec.nets[0]", "10.0.0.300/8"),
        ("bad-selector.yaml", "spec.selector", "position 7"),
    ];
    for (file, path, reason) in expectations {
        let f = dir.join("bad").join(file);
        let out = load(file, &std::fs::read(&f).unwrap());
        assert_eq!(out.errors.len(), 1, "{file}: {:#?}", out.errors);
        let msg = out.errors[0].to_string();
        assert!(msg.contains(path) && msg.contains(reason), "{file}: {msg}");
    }
}

const POLICY_HEAD: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: p
  namespace: ns
spec:
";

/// (spec body under a namespaced NetworkPolicy, path, reason) per
/// validation error.
const POLICY_ERRORS: &[(&str, &str, &str)] = &[
    (
        "  egress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      services: {name: db}\n      ports: [5432]\n",
        "spec.egress[0].destination.ports",
        "cannot be combined with it",
    ),
    (
        "  ingress:\n  - action: Allow\n    source:\n      services: {name: web}\n      selector: app == 'web'\n",
        "spec.ingress[0].source.services",
        "cannot be combined with nets, selector or namespaceSelector",
    ),
    (
        "  ingress:\n  - action: Allow\n    sorce:\n      selector: all()\n",
        "spec.ingress[0]",
        "unknown field `sorce`",
    ),
    ("  selector: app == api\n", "spec.selector", "position 7"),
    ("  selector: (a == 'b'\n", "spec.selector", "position"),
    (
        "  ingress:\n  - action: Allow\n    source:\n      nets: [10.0.0.0/33]\n",
        "spec.ingress[0].source.nets[0]",
        "not a valid CIDR",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [70000]\n",
        "spec.ingress[0].destination.ports[0]",
        "out of range 0-65535",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [-1]\n",
        "spec.ingress[0].destination.ports[0]",
        "out of range",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: ['90:80']\n",
        "spec.ingress[0].destination.ports[0]",
        "low end 90 is above the high end 80",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: ['1:70000']\n",
        "spec.ingress[0].destination.ports[0]",
        "out of range",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [Web_Port]\n",
        "spec.ingress[0].destination.ports[0]",
        "not a valid port name",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCPX\n",
        "spec.ingress[0].protocol",
        "unknown protocol \"TCPX\"",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: 300\n",
        "spec.ingress[0].protocol",
        "out of range 1-255",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: TCP\n    icmp:\n      type: 8\n",
        "spec.ingress[0].icmp",
        "need protocol ICMP or ICMPv6",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp:\n      code: 0\n",
        "spec.ingress[0].icmp.code",
        "needs an ICMP type",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp:\n      type: 255\n",
        "spec.ingress[0].icmp.type",
        "0-254",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: ICMP\n    notICMP:\n      type: 300\n",
        "spec.ingress[0].notICMP.type",
        "300",
    ),
    (
        "  ingress:\n  - action: Accept\n",
        "spec.ingress[0].action",
        "unknown variant `Accept`",
    ),
    (
        "  ingress:\n  - protocol: TCP\n",
        "spec.ingress[0]",
        "missing field `action`",
    ),
    (
        "  ingress:\n  - action: Allow\n    destination:\n      ports: [80]\n",
        "spec.ingress[0].destination.ports",
        "need a protocol",
    ),
    (
        "  ingress:\n  - action: Allow\n    protocol: ICMP\n    destination:\n      ports: [80]\n",
        "spec.ingress[0].destination.ports",
        "protocol is ICMP",
    ),
    (
        "  ingress:\n  - action: Allow\n    ipVersion: 4\n    source:\n      nets: ['fd00::/64']\n",
        "spec.ingress[0].source.nets[0]",
        "ipVersion is 4",
    ),
    (
        "  ingress:\n  - action: Allow\n    ipVersion: 5\n",
        "spec.ingress[0].ipVersion",
        "must be 4 or 6",
    ),
    (
        "  types: [Egress]\n  ingress:\n  - action: Allow\n",
        "spec.ingress",
        "does not include Ingress",
    ),
    (
        "  types: [Ingress, Ingress]\n",
        "spec.types[1]",
        "listed twice",
    ),
    (
        "  types: [Inbound]\n",
        "spec.types[0]",
        "unknown variant `Inbound`",
    ),
    ("  tier: Security\n", "spec.tier", "DNS-1123 label"),
    ("  order: .nan\n", "spec.order", "finite"),
    ("  selector: all()\n  selector: all()\n", "", "duplicate"),
];

#[test]
fn each_policy_validation_error_names_path_and_reason() {
    for (body, path, reason) in POLICY_ERRORS {
        let msg = only_error(&format!("{POLICY_HEAD}{body}"));
        assert!(msg.starts_with("test.yaml: document 1"), "{msg}");
        assert!(
            msg.contains(&format!(": {path}")),
            "path {path:?} missing from: {msg}"
        );
        assert!(
            msg.contains(reason),
            "reason {reason:?} missing from: {msg}"
        );
    }
}

/// (whole document, path, reason) for the other kinds and for metadata.
const OTHER_ERRORS: &[(&str, &str, &str)] = &[
    (
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: Frontend\n",
        "metadata.name",
        "DNS-1123 subdomain",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: n\n  nmae: x\n",
        "metadata",
        "unknown field `nmae`",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  namespace: x\n",
        "metadata.name",
        "required",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: Prod\n",
        "metadata.namespace",
        "DNS-1123 label",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  namespace: prod\n",
        "metadata.namespace",
        "cluster-scoped",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels:\n    app: -bad\n",
        "metadata.labels.app",
        "label value",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels:\n    'bad key': x\n",
        "metadata.labels.bad key",
        "label name",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: g\nspec:\n  preDNAT: true\n",
        "spec.preDNAT",
        "requires applyOnForward",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: g\nspec:\n  doNotTrack: true\n",
        "spec.doNotTrack",
        "requires applyOnForward",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: g\nspec:\n  applyOnForward: true\n  preDNAT: true\n  egress:\n  - action: Allow\n",
        "spec.egress",
        "ingress only",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\nspec:\n  defaultAction: Allow\n",
        "spec.defaultAction",
        "Deny or Pass",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\nspec:\n  interfaceName: eth0\n",
        "spec.node",
        "required",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\nspec:\n  node: n\n  expectedIPs: [10.0.0.300]\n",
        "spec.expectedIPs[0]",
        "invalid IP",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: w\n  namespace: ns\nspec:\n  node: n\n  ports:\n  - name: Http\n    protocol: TCP\n    port: 80\n",
        "spec.ports[0].name",
        "not a valid port name",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: 8\n",
        "spec.blockSize",
        "20-32",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  blockSize: 26\n",
        "spec.cidr",
        "required",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  iptablesRefreshInterval: soon\n",
        "spec.iptablesRefreshInterval",
        "not a duration",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  bpfMapSizeNATFrontend: 0\n",
        "spec.bpfMapSizeNATFrontend",
        "0 is out of range 1-67108864",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  bpfMapSizeConntrack: 4000000000\n",
        "spec.bpfMapSizeConntrack",
        "4000000000 is out of range 1-67108864",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  bpfEnabledd: true\n",
        "spec",
        "unknown field `bpfEnabledd`",
    ),
    (
        "apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: other\n",
        "metadata.name",
        "named \"default\"",
    ),
    (
        "apiVersion: projectcalico.org/v3\nkind: Firewall\nmetadata:\n  name: f\n",
        "kind",
        "unknown kind \"Firewall\"",
    ),
    (
        "kind: NetworkPolicy\nmetadata:\n  name: f\n",
        "apiVersion",
        "missing `apiVersion`",
    ),
    ("just a string\n", "document 1", "must be a mapping"),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  podSelectr: {}\n",
        "spec",
        "unknown field `podSelectr`",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  ingress:\n  - ports:\n    - port: 80\n      endPort: 70\n",
        "spec.ingress[0].ports[0].endPort",
        "below port 80",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  ingress:\n  - ports:\n    - port: http\n      endPort: 90\n",
        "spec.ingress[0].ports[0].endPort",
        "numeric port",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  ingress:\n  - ports:\n    - protocol: ICMP\n",
        "spec.ingress[0].ports[0].protocol",
        "unsupported protocol",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [192.168.0.0/16]\n",
        "spec.egress[0].to[0].ipBlock.except[0]",
        "not strictly inside",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  podSelector:\n    matchExpressions:\n    - key: a\n      operator: Matches\n",
        "spec.podSelector.matchExpressions[0].operator",
        "unknown operator",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  podSelector:\n    matchExpressions:\n    - key: a\n      operator: In\n",
        "spec.podSelector.matchExpressions[0].values",
        "at least one value",
    ),
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k\nspec:\n  policyTypes: [Sideways]\n",
        "spec.policyTypes[0]",
        "unknown policy type",
    ),
    (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Bad_Name\n",
        "metadata.name",
        "DNS-1123",
    ),
    ("a: [1, 2\n", "document 1", "YAML syntax error"),
];

#[test]
fn each_other_validation_error_names_path_and_reason() {
    for (doc, path, reason) in OTHER_ERRORS {
        let out = load_str(doc);
        assert_eq!(out.errors.len(), 1, "{doc}: {:#?}", out.errors);
        let msg = out.errors[0].to_string();
        assert!(msg.contains(path), "path {path:?} missing from: {msg}");
        assert!(
            msg.contains(reason),
            "reason {reason:?} missing from: {msg}"
        );
    }
}

#[test]
fn name_length_limit() {
    let long = "a".repeat(254);
    let msg = only_error(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: {long}\n"
    ));
    assert!(
        msg.contains("metadata.name") && msg.contains("limit is 253"),
        "{msg}"
    );
}

#[test]
fn duplicate_names_in_one_file_are_rejected() {
    let doc = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n";
    let out = load_str(&format!("{doc}---\n{doc}"));
    assert_eq!(out.resources.len(), 1);
    assert_eq!(out.errors.len(), 1);
    let msg = out.errors[0].to_string();
    assert!(
        msg.contains("document 2") && msg.contains("duplicate resource tier/t"),
        "{msg}"
    );
    assert!(msg.contains("document 1 of this input"), "{msg}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let not_utf8 = load("x.yaml", b"kind: Tier\nname: \xff\xfe\n");
    assert!(
        not_utf8.errors[0]
            .to_string()
            .contains("not UTF-8: invalid byte at offset 17")
    );

    let big = vec![b'a'; 50 * 1024 * 1024];
    let msg = load("big.yaml", &big).errors[0].to_string();
    assert!(
        msg.contains("52428800 bytes; the limit is 8388608"),
        "{msg}"
    );

    let deep_yaml = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let out = load_str(&deep_yaml);
    assert_eq!(out.errors.len(), 1);

    let deep_selector = format!(
        "{POLICY_HEAD}  selector: '{}a == \"b\"{}'\n",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let msg = only_error(&deep_selector);
    assert!(
        msg.contains("spec.selector") && msg.contains("position"),
        "{msg}"
    );

    let msg = only_error("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: 7\n");
    assert!(msg.contains("metadata"), "{msg}");
}

#[test]
fn every_error_in_a_file_is_reported() {
    let bad = format!("{POLICY_HEAD}  selector: app == api\n");
    let good = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n";
    let out = load_str(&format!("{bad}---\n{good}---\n{bad}"));
    assert_eq!(out.errors.len(), 2);
    assert_eq!(out.errors[0].document, Some(1));
    assert_eq!(out.errors[1].document, Some(3));
    assert_eq!(out.resources.len(), 1);
    assert!(out.into_result().is_err());
}

#[test]
fn calico_defaults_are_applied() {
    let out = load_str(&format!(
        "{POLICY_HEAD}  egress:\n  - action: Allow\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: q\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: fd00::/48\n"
    ))
    .into_result()
    .unwrap();
    let Resource::NetworkPolicy(p) = &out[0].resource else {
        panic!()
    };
    assert_eq!(p.spec.tier, "default");
    assert!(p.spec.selector.is_all());
    assert_eq!(p.spec.types, vec![PolicyType::Egress]);
    let Resource::NetworkPolicy(q) = &out[1].resource else {
        panic!()
    };
    assert_eq!(
        q.spec.types,
        vec![PolicyType::Ingress],
        "no rules at all: ingress default-deny"
    );
    assert_eq!(q.metadata.namespace.as_deref(), Some("default"));
    let Resource::Tier(t) = &out[2].resource else {
        panic!()
    };
    assert_eq!(t.spec.default_action, Some(Action::Deny));
    let Resource::IpPool(pool) = &out[3].resource else {
        panic!()
    };
    assert_eq!(pool.spec.block_size, Some(122));
}

#[test]
fn json_yaml_and_lists_load_alike() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\nspec:\n  nets: [10.0.0.0/8]\n";
    let json = r#"{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
        "metadata": {"name": "s"}, "spec": {"nets": ["10.0.0.0/8"]}}"#;
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}",
        yaml.replace('\n', "\n  ")
    );
    let a = load_str(yaml).into_result().unwrap();
    let b = load("x.json", json.as_bytes()).into_result().unwrap();
    let c = load_str(&list).into_result().unwrap();
    assert_eq!(a[0].resource, b[0].resource);
    assert_eq!(a[0].resource, c[0].resource);
    let bad_json = load("x.json", br#"{"apiVersion": "#);
    assert!(bad_json.errors[0].to_string().contains("JSON syntax error"));
}

/// Loading, printing as YAML and loading again gives the same resources.
#[test]
fn yaml_round_trips() {
    let mut inputs: Vec<String> = yaml_files(&examples())
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    inputs.push(include_str!("../tests/data/everything.yaml").to_string());
    for input in inputs {
        let first = load_str(&input).into_result().unwrap();
        let mut printed = String::new();
        for l in &first {
            printed.push_str("---\n");
            printed.push_str(&serde_yaml_ng::to_string(&l.resource).unwrap());
        }
        let second = load_str(&printed)
            .into_result()
            .unwrap_or_else(|e| panic!("{printed}\n{e:#?}"));
        let a: Vec<_> = first.iter().map(|l| &l.resource).collect();
        let b: Vec<_> = second.iter().map(|l| &l.resource).collect();
        assert_eq!(a, b, "{printed}");
        let json = serde_json::to_string(&a).unwrap();
        let third = load("x.json", json.as_bytes()).into_result().unwrap();
        assert_eq!(a, third.iter().map(|l| &l.resource).collect::<Vec<_>>());
    }
}

const BLOCK_HEAD: &str = "apiVersion: projectcalico.org/v3\nkind: IPAMBlock\nmetadata:\n  name: 10-65-0-0-26\nspec:\n  cidr: 10.65.0.0/26\n";

#[test]
fn ipam_blocks_load_and_round_trip() {
    let yaml = format!(
        "{BLOCK_HEAD}  affinity: host:node-1\n  allocations:\n  - ip: 10.65.0.1\n    handle: c1\n    namespace: production\n    pod: api\n  - ip: 10.65.0.2\n    handle: c2\n"
    );
    let out = load_str(&yaml);
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    let r = &out.resources[0].resource;
    assert_eq!(r.key().to_string(), "ipamblock/10-65-0-0-26");
    let Resource::IpamBlock(b) = r else {
        panic!("{r:?}")
    };
    assert_eq!(b.spec.affine_node(), Some("node-1"));
    assert_eq!(b.spec.allocations.len(), 2);
    let again = load("json", &serde_json::to_vec(r).unwrap());
    assert!(again.errors.is_empty(), "{:#?}", again.errors);
    assert_eq!(&again.resources[0].resource, r);
}

#[test]
fn ipam_block_errors_name_the_field() {
    let cases = [
        (
            format!("{BLOCK_HEAD}  allocations:\n  - ip: 10.65.1.1\n    handle: c\n"),
            "spec.allocations[0].ip",
            "outside the block",
        ),
        (
            format!(
                "{BLOCK_HEAD}  allocations:\n  - ip: 10.65.0.1\n    handle: a\n  - ip: 10.65.0.1\n    handle: b\n"
            ),
            "spec.allocations[1].ip",
            "allocated twice",
        ),
        (
            format!("{BLOCK_HEAD}  allocations:\n  - ip: 10.65.0.1\n    handle: \"\"\n"),
            "spec.allocations[0].handle",
            "required",
        ),
        (
            format!("{BLOCK_HEAD}  affinity: node-1\n"),
            "spec.affinity",
            "host:NODE",
        ),
        (
            BLOCK_HEAD.replace("10.65.0.0/26", "10.65.0.64/26"),
            "metadata.name",
            "10-65-0-64-26",
        ),
        (
            BLOCK_HEAD.replace("10.65.0.0/26", "10.65.0.1/26"),
            "spec.cidr",
            "host bits",
        ),
        (
            BLOCK_HEAD.replace("  cidr: 10.65.0.0/26\n", "  affinity: host:n\n"),
            "spec.cidr",
            "required",
        ),
    ];
    for (yaml, path, reason) in cases {
        let msg = only_error(&yaml);
        assert!(
            msg.contains(path) && msg.contains(reason),
            "{yaml}\n=> {msg}"
        );
    }
}

#[test]
fn every_example_round_trips_through_its_stored_form() {
    for f in yaml_files(&examples()) {
        let out = load(&f.display().to_string(), &std::fs::read(&f).unwrap());
        for r in out.into_result().unwrap().into_iter().map(|l| l.resource) {
            let bytes = serde_json::to_vec(&r).unwrap();
            let back = crate::stored::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", r.key()));
            assert_eq!(back, r, "{}", r.key());
            // The loader reads the same bytes to the same resource.
            let via_loader = load("stored", &bytes).into_result().unwrap();
            assert_eq!(via_loader[0].resource, back, "{}", r.key());
        }
    }
}

#[test]
fn an_input_made_of_errors_stops_at_the_problem_limit() {
    // Four million documents that are not resources: loading stops at the
    // limit, whatever the input holds after it.
    let mut input = String::from("[");
    for _ in 0..4_000_000 {
        input.push_str("1,");
    }
    input.push_str("1]");
    let out = load("numbers.json", input.as_bytes());
    assert_eq!(out.errors.len(), MAX_PROBLEMS + 1);
    assert!(out.errors[0].to_string().contains("found a number"));
    assert!(
        out.errors[MAX_PROBLEMS]
            .to_string()
            .contains("100 problems listed; loading stopped there"),
        "{}",
        out.errors[MAX_PROBLEMS]
    );
    assert_eq!(load_limited("x", b"1\n---\n2\n---\n3\n", 2).errors.len(), 3);

    // A name, origin or path of megabytes is not repeated in every error.
    let name = "n".repeat(100_000);
    let doc = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: {name}\n  labels: {{{}}}\nspec:\n  nets: [bad, worse]\n",
        (0..50)
            .map(|i| format!("\"bad label {i}\": x"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = load(&"o".repeat(100_000), doc.as_bytes());
    assert!(out.errors.len() > 2, "{:?}", out.errors);
    for e in &out.errors {
        assert!(e.to_string().len() < 2_000, "{}", e.to_string().len());
    }
}
