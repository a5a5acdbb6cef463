//! Elements as text and as bytes, row by row: every kind of element the
//! renderers build, with the text nft reads and the bytes nf_tables
//! takes; and elements that do not fit their set, each with a named
//! error.

use super::*;

fn a(s: &str) -> Value {
    Value::Addr(s.parse().unwrap())
}

/// The index a `numgen` expression writes, in host order.
fn index(n: u32) -> Vec<u8> {
    n.to_ne_bytes().to_vec()
}

/// A set's type, an element, its text, and its encoded key and data.
type Row = (
    &'static str,
    Element,
    &'static str,
    Vec<u8>,
    Option<EncodedData>,
);

#[test]
fn each_kind_of_element_as_text_and_as_bytes() {
    let be4 =
        "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport";
    let be6 =
        "typeof ip6 daddr . meta l4proto . th dport . numgen random mod 1 : ip6 daddr . udp dport";
    let np4 = "typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . sctp dport";
    let mut be4_key = vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0];
    be4_key.extend(index(16_777_217));
    let mut be6_key: Vec<u8> = "fd00:96::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    be6_key.extend([17, 0, 0, 0, 0, 53, 0, 0]);
    be6_key.extend(index(0));
    let mut be6_data: Vec<u8> = "fd00:65::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    be6_data.extend([0x14, 0xe9, 0, 0]);
    let mut np4_key = vec![132, 0, 0, 0, 0x75, 0x30, 0, 0];
    np4_key.extend(index(1));
    let rows: Vec<Row> = vec![
        (
            "ipv4_addr",
            Element::key(vec![a("10.96.0.1")]),
            "10.96.0.1",
            vec![10, 96, 0, 1],
            None,
        ),
        (
            "ipv4_addr . inet_proto . inet_service : verdict",
            Element::verdict(
                vec![a("10.96.0.1"), Value::Proto(6), Value::Port(80)],
                Verb::Goto,
                "mnl-pick4-cip-2",
            ),
            "10.96.0.1 . 6 . 80 : goto mnl-pick4-cip-2",
            vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0],
            Some(EncodedData::Verdict(NFT_GOTO, "mnl-pick4-cip-2".into())),
        ),
        (
            "ipv4_addr . inet_proto . inet_service : verdict",
            Element::verdict(
                vec![a("198.51.100.10"), Value::Proto(6), Value::Port(443)],
                Verb::Jump,
                "mnl-fw4-prod/edge",
            ),
            "198.51.100.10 . 6 . 443 : jump mnl-fw4-prod/edge",
            vec![198, 51, 100, 10, 6, 0, 0, 0, 0x01, 0xbb, 0, 0],
            Some(EncodedData::Verdict(NFT_JUMP, "mnl-fw4-prod/edge".into())),
        ),
        (
            "inet_proto . inet_service : verdict",
            Element::verdict(
                vec![Value::Proto(17), Value::Port(30053)],
                Verb::Goto,
                "mnl-svc-reject",
            ),
            "17 . 30053 : goto mnl-svc-reject",
            vec![17, 0, 0, 0, 0x75, 0x65, 0, 0],
            Some(EncodedData::Verdict(NFT_GOTO, "mnl-svc-reject".into())),
        ),
        (
            be4,
            Element::values(
                vec![
                    a("10.96.0.1"),
                    Value::Proto(6),
                    Value::Port(80),
                    Value::Index(16_777_217),
                ],
                vec![a("10.65.1.1"), Value::Port(8080)],
            ),
            "10.96.0.1 . 6 . 80 . 16777217 : 10.65.1.1 . 8080",
            be4_key,
            Some(EncodedData::Value(vec![10, 65, 1, 1, 0x1f, 0x90, 0, 0])),
        ),
        (
            be6,
            Element::values(
                vec![
                    a("fd00:96::10"),
                    Value::Proto(17),
                    Value::Port(53),
                    Value::Index(0),
                ],
                vec![a("fd00:65::2"), Value::Port(5353)],
            ),
            "fd00:96::10 . 17 . 53 . 0 : fd00:65::2 . 5353",
            be6_key,
            Some(EncodedData::Value(be6_data)),
        ),
        (
            np4,
            Element::values(
                vec![Value::Proto(132), Value::Port(30000), Value::Index(1)],
                vec![a("10.65.0.7"), Value::Port(9)],
            ),
            "132 . 30000 . 1 : 10.65.0.7 . 9",
            np4_key,
            Some(EncodedData::Value(vec![10, 65, 0, 7, 0, 9, 0, 0])),
        ),
        (
            "ipv4_addr . ipv4_addr",
            Element::key(vec![a("10.65.0.2"), a("10.65.0.2")]),
            "10.65.0.2 . 10.65.0.2",
            vec![10, 65, 0, 2, 10, 65, 0, 2],
            None,
        ),
        (
            "ipv4_addr . inet_proto . inet_service",
            Element::key(vec![a("10.65.0.2"), Value::Proto(6), Value::Port(8080)]),
            "10.65.0.2 . 6 . 8080",
            vec![10, 65, 0, 2, 6, 0, 0, 0, 0x1f, 0x90, 0, 0],
            None,
        ),
    ];
    for (type_, element, text, key, data) in rows {
        assert_eq!(element.to_string(), text);
        let layout = layout(type_).unwrap_or_else(|| panic!("{type_}: no layout"));
        let encoded = element
            .encode(&layout)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(encoded, Encoded { key, data }, "{text}");
    }
}

#[test]
fn elements_nft_writes_without_the_netlink_writer() {
    assert_eq!(Element::iface("cali1234").to_string(), "\"cali1234\"");
    assert_eq!(
        super::super::render::map_entry("cali1234", "mnl-tw-cali1234").to_string(),
        "\"cali1234\" : jump mnl-tw-cali1234"
    );
    let net = Element::key(vec![Value::Net("10.65.0.0/24".parse().unwrap())]);
    assert_eq!(net.to_string(), "10.65.0.0/24");
    let host6 = Element::key(vec![Value::Net("fd00::2/128".parse().unwrap())]);
    assert_eq!(host6.to_string(), "fd00::2/128");
    assert_eq!(
        Element::key(vec![Value::Chain("mnl-pick4-cip-2".into())]).to_string(),
        "mnl-pick4-cip-2"
    );
    // Interface names and intervals have no layout: `nft` writes them.
    assert!(layout("ifname : verdict").is_none());
    assert!(layout("ifname").is_none());
}

#[test]
fn layouts_of_the_service_maps() {
    let l = layout("ipv4_addr . inet_proto . inet_service : verdict").unwrap();
    assert_eq!(l.key, vec![Part::Addr4, Part::Proto, Part::Port]);
    assert_eq!(l.data, LayoutData::Verdict);
    let l = layout(
        "typeof ip6 daddr . meta l4proto . th dport . numgen random mod 1 : ip6 daddr . th dport",
    )
    .unwrap();
    assert_eq!(
        l.key,
        vec![Part::Addr6, Part::Proto, Part::Port, Part::Index]
    );
    assert_eq!(l.data, LayoutData::Values(vec![Part::Addr6, Part::Port]));
    assert!(layout("ipv4_addr . ipv4_addr").is_some());
}

#[test]
fn elements_that_do_not_fit_get_a_named_error() {
    let verdicts = layout("inet_proto . inet_service : verdict").unwrap();
    let key = vec![Value::Proto(17), Value::Port(53)];
    let cases: Vec<(&Layout, Element, EncodeError)> = vec![
        (
            &verdicts,
            Element::key(key.clone()),
            EncodeError::MissingData,
        ),
        (
            &verdicts,
            Element::values(key.clone(), vec![Value::Port(1)]),
            EncodeError::WrongData { want: "a verdict" },
        ),
        (
            &verdicts,
            Element::verdict(vec![Value::Proto(17)], Verb::Goto, "c"),
            EncodeError::Arity { got: 1, want: 2 },
        ),
        (
            &verdicts,
            Element::verdict(vec![Value::Port(17), Value::Port(53)], Verb::Goto, "c"),
            EncodeError::WrongValue {
                index: 0,
                value: "17".into(),
                want: "a protocol number",
            },
        ),
    ];
    for (layout, element, want) in cases {
        assert_eq!(element.encode(layout), Err(want), "{element}");
    }
    let v4 = layout("ipv4_addr").unwrap();
    let err = Element::key(vec![a("fd00::1")]).encode(&v4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "value 0 is fd00::1, where the set has an IPv4 address"
    );
    let err = Element::verdict(vec![a("10.0.0.1")], Verb::Jump, "c")
        .encode(&v4)
        .unwrap_err();
    assert_eq!(err, EncodeError::UnexpectedData);
    let data = layout("typeof ip daddr . numgen random mod 1 : ip daddr . tcp dport").unwrap();
    let err = Element::verdict(vec![a("10.0.0.1"), Value::Index(0)], Verb::Goto, "c")
        .encode(&data)
        .unwrap_err();
    assert_eq!(err, EncodeError::WrongData { want: "values" });
    let err = Element::values(
        vec![a("10.0.0.1"), Value::Index(0)],
        vec![Value::Iface("eth0".into()), Value::Port(80)],
    )
    .encode(&data)
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "value 0 is \"eth0\", where the set has an IPv4 address"
    );
}
