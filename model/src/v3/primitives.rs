//! Small value types shared by the v3 resources: ports, protocols, actions,
//! CIDRs, ICMP matches and policy types.
//!
//! Each type validates itself while it is deserialised, so a bad value fails
//! with the path of the field that holds it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A port match: one number, an inclusive range, or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// An inclusive range `min..=max`; a single number has `min == max`.
    Range { min: u16, max: u16 },
    /// A named port, resolved per endpoint (an IANA service name).
    Named(String),
}

impl Port {
    /// A single port number.
    pub fn single(port: u16) -> Port {
        Port::Range {
            min: port,
            max: port,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(name) => f.write_str(name),
        }
    }
}

fn parse_port_number(s: &str) -> Result<u16, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("port {s:?} is not a number"))?;
    u16::try_from(n).map_err(|_| format!("port {n} is out of range 0-65535"))
}

impl FromStr for Port {
    type Err = String;

    fn from_str(s: &str) -> Result<Port, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("port is empty".into());
        }
        if let Some((lo, hi)) = s.split_once(':') {
            let (min, max) = (parse_port_number(lo)?, parse_port_number(hi)?);
            if min > max {
                return Err(format!(
                    "port range {s:?}: the low end {min} is above the high end {max}"
                ));
            }
            return Ok(Port::Range { min, max });
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return parse_port_number(s).map(Port::single);
        }
        if s.starts_with('-') && s[1..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("port {s} is out of range 0-65535"));
        }
        crate::names::validate_port_name(s).map_err(|e| format!("port {s:?}: {e}"))?;
        Ok(Port::Named(s.to_string()))
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a range \"MIN:MAX\" or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Port, E> {
                Err(E::custom(format!("port {v} is not a whole number")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP protocol, by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    IcmpV6,
    Sctp,
    UdpLite,
    /// Any other protocol by number (1-255).
    Number(u8),
}

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::IcmpV6 => 58,
            Protocol::Sctp => 132,
            Protocol::UdpLite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// Whether rules may match on ports with this protocol.
    pub fn supports_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }

    /// Whether rules may match on ICMP type and code with this protocol.
    pub fn is_icmp(self) -> bool {
        matches!(self.number(), 1 | 58)
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
            Protocol::IcmpV6 => "ICMPv6",
            Protocol::Sctp => "SCTP",
            Protocol::UdpLite => "UDPLite",
            Protocol::Number(_) => return None,
        })
    }

    fn from_number(n: u64) -> Result<Protocol, String> {
        match n {
            6 => Ok(Protocol::Tcp),
            17 => Ok(Protocol::Udp),
            1 => Ok(Protocol::Icmp),
            58 => Ok(Protocol::IcmpV6),
            132 => Ok(Protocol::Sctp),
            136 => Ok(Protocol::UdpLite),
            2..=255 => Ok(Protocol::Number(n as u8)),
            _ => Err(format!("protocol number {n} is out of range 1-255")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.number()),
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        const NAMES: [(&str, Protocol); 6] = [
            ("tcp", Protocol::Tcp),
            ("udp", Protocol::Udp),
            ("icmp", Protocol::Icmp),
            ("icmpv6", Protocol::IcmpV6),
            ("sctp", Protocol::Sctp),
            ("udplite", Protocol::UdpLite),
        ];
        if let Some((_, p)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(*p);
        }
        if let Ok(n) = s.parse::<u64>() {
            return Protocol::from_number(n);
        }
        Err(format!(
            "unknown protocol {s:?}; use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"
        ))
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u8(self.number()),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name or number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                Protocol::from_number(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                Err(E::custom(format!(
                    "protocol number {v} is out of range 1-255"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Accept the packet; no later rule or tier is consulted.
    Allow,
    /// Drop the packet.
    Deny,
    /// Log the packet and continue with the next rule.
    Log,
    /// Skip the rest of this tier and continue with the next one.
    Pass,
}

/// Which direction a policy applies to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// A network in CIDR notation. A bare address is accepted and means the
/// single-address network (`/32` or `/128`), as Calico does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// The network, with host bits cleared.
    pub fn net(&self) -> IpNet {
        self.0.trunc()
    }

    /// 4 or 6.
    pub fn ip_version(&self) -> u8 {
        match self.0 {
            IpNet::V4(_) => 4,
            IpNet::V6(_) => 6,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        Err(format!(
            "{s:?} is not a valid CIDR (such as 10.0.0.0/8 or fd00::/64)"
        ))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An ICMP type and optional code to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IcmpMatch {
    /// ICMP type, 0-254.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 254))]
    pub icmp_type: Option<u8>,
    /// ICMP code, 0-255; only with a type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}
