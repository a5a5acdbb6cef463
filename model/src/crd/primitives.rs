//! JSON schemas of the model's own string-typed values (selectors, ports,
//! protocols, CIDRs, durations, Calico's case-insensitive enums): the one
//! place where a schema is written by hand. Each says as much of the rule
//! as a pattern can; the model's parser stays the judge of the rest (a
//! selector's grammar, a port range's order).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::selector::{MAX_SELECTOR_LEN, Selector};
use crate::v3::{BpfConntrackTimeout, Cidr, Dscp, GoDuration, Port, Protocol};

/// One IPv4 octet, 0-255 without leading zeros.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
/// An IPv6 address, loosely: hex digits, colons and an optional dotted
/// tail, with at least one colon.
const IPV6: &str = "[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*";

fn ipv4() -> String {
    format!("{OCTET}(\\.{OCTET}){{3}}")
}

/// An IPv4 or IPv6 address.
pub fn ip_pattern() -> String {
    format!("^({}|{IPV6})$", ipv4())
}

/// A CIDR, or a bare address (Calico's single-address network).
pub fn cidr_pattern() -> String {
    format!(
        "^({}(/(3[0-2]|[12]?[0-9]))?|{IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$",
        ipv4()
    )
}

/// A Go duration such as `90s` or `1m30s`.
const DURATION: &str = "0|([0-9]*\\.?[0-9]+(ns|us|µs|ms|s|m|h))+";

/// A string that matches `names` in any case (Calico compares them so).
pub fn case_insensitive(names: &[&str]) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": format!("^(?i:{})$", names.join("|")),
    })
}

/// An integer or a string, as Kubernetes' int-or-string fields are.
fn int_or_string(min: u64, max: u64, pattern: String, max_len: Option<usize>) -> Schema {
    let mut s = json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "minimum": min,
        "maximum": max,
        "pattern": pattern,
    });
    if let Some(n) = max_len {
        s.insert("maxLength".into(), n.into());
    }
    s
}

macro_rules! inline {
    ($t:ty, $name:literal, |$g:ident| $body:expr) => {
        impl JsonSchema for $t {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema($g: &mut SchemaGenerator) -> Schema {
                $body
            }
        }
    };
}

inline!(Selector, "Selector", |_g| json_schema!({
    "type": "string",
    "maxLength": MAX_SELECTOR_LEN,
}));

inline!(Port, "Port", |_g| int_or_string(
    0,
    65535,
    "^([0-9]{1,5}(:[0-9]{1,5})?|[a-z0-9]+(-[a-z0-9]+)*)$".into(),
    Some(crate::names::MAX_PORT_NAME_LEN),
));

inline!(Protocol, "Protocol", |_g| int_or_string(
    1,
    255,
    "^((?i:tcp|udp|icmp|icmpv6|sctp|udplite)|[0-9]{1,3})$".into(),
    None,
));

inline!(Cidr, "Cidr", |_g| json_schema!({
    "type": "string",
    "pattern": cidr_pattern(),
}));

inline!(GoDuration, "GoDuration", |_g| json_schema!({
    "type": "string",
    "pattern": format!("^({DURATION})$"),
}));

inline!(
    BpfConntrackTimeout,
    "BpfConntrackTimeout",
    |_g| json_schema!({
        "type": "string",
        "pattern": format!("^(Auto|{DURATION})$"),
    })
);

inline!(Dscp, "Dscp", |_g| int_or_string(
    0,
    63,
    format!("^(?i:{})$", crate::v3::DSCP_NAMES.join("|")),
    None,
));
