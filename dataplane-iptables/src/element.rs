//! One set or map element as data: the values of its key, and its value
//! or verdict. The renderers build elements as values, never as text;
//! this file is the one place an element becomes nft's text
//! ([`std::fmt::Display`], for scripts `nft` reads) and the one place it
//! becomes the bytes nf_tables takes ([`Element::encode`], for the
//! batches `elements.rs` builds). Pure: no I/O.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// One value of a key or of a map's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// An address (`ipv4_addr`, `ipv6_addr`, `ip daddr`, ...).
    Addr(IpAddr),
    /// A network of an interval set.
    Net(IpNet),
    /// A protocol number (`inet_proto`, `meta l4proto`).
    Proto(u8),
    /// A port (`inet_service`, `th dport`, ...).
    Port(u16),
    /// A `numgen` index.
    Index(u32),
    /// An interface name (`ifname`).
    Iface(String),
    /// A chain's name: what services claim of the shared pick chains;
    /// never a set of the kernel.
    Chain(String),
}

/// A verdict's verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Jump,
    Goto,
}

/// What a map's element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Data {
    /// A verdict map's `jump CHAIN` or `goto CHAIN`.
    Verdict(Verb, String),
    /// A data map's values (`addr . port`).
    Values(Vec<Value>),
}

/// A set's element (a key) or a map's (a key and its data). Ordered by
/// key first, so the elements of one key are neighbours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Vec<Value>,
    pub data: Option<Data>,
}

impl Element {
    /// A set's element.
    pub fn key(key: Vec<Value>) -> Self {
        Self { key, data: None }
    }

    /// A verdict map's element.
    pub fn verdict(key: Vec<Value>, verb: Verb, chain: impl Into<String>) -> Self {
        Self {
            key,
            data: Some(Data::Verdict(verb, chain.into())),
        }
    }

    /// A data map's element.
    pub fn values(key: Vec<Value>, values: Vec<Value>) -> Self {
        Self {
            key,
            data: Some(Data::Values(values)),
        }
    }

    /// The element of an interface name set.
    pub fn iface(name: &str) -> Self {
        Self::key(vec![Value::Iface(name.to_string())])
    }

    /// The first element of `key` in an ordered set (the lower bound of
    /// a range over a `BTreeSet<Element>`).
    pub fn first_of(key: &[Value]) -> Self {
        Self::key(key.to_vec())
    }

    /// This element's key and its data as nf_tables takes them, for a set
    /// of `layout`; an error names what does not fit.
    pub fn encode(&self, layout: &Layout) -> Result<Encoded, EncodeError> {
        let mut key = Vec::with_capacity(4 * layout.key.len() + 12);
        encode_values(&layout.key, &self.key, &mut key)?;
        let data = match (&layout.data, &self.data) {
            (LayoutData::None, None) => None,
            (LayoutData::Verdict, Some(Data::Verdict(verb, chain))) => {
                let code = match verb {
                    Verb::Jump => NFT_JUMP,
                    Verb::Goto => NFT_GOTO,
                };
                Some(EncodedData::Verdict(code, chain.clone()))
            }
            (LayoutData::Values(parts), Some(Data::Values(values))) => {
                let mut out = Vec::with_capacity(4 * parts.len() + 12);
                encode_values(parts, values, &mut out)?;
                Some(EncodedData::Value(out))
            }
            (LayoutData::None, Some(_)) => return Err(EncodeError::UnexpectedData),
            (_, None) => return Err(EncodeError::MissingData),
            (LayoutData::Verdict, Some(Data::Values(_))) => {
                return Err(EncodeError::WrongData { want: "a verdict" });
            }
            (LayoutData::Values(_), Some(Data::Verdict(..))) => {
                return Err(EncodeError::WrongData { want: "values" });
            }
        };
        Ok(Encoded { key, data })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(a) => write!(f, "{a}"),
            Value::Net(n) => write!(f, "{n}"),
            Value::Proto(p) => write!(f, "{p}"),
            Value::Port(p) => write!(f, "{p}"),
            Value::Index(i) => write!(f, "{i}"),
            Value::Iface(name) => write!(f, "\"{name}\""),
            Value::Chain(name) => f.write_str(name),
        }
    }
}

fn write_values(f: &mut fmt::Formatter<'_>, values: &[Value]) -> fmt::Result {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(" . ")?;
        }
        write!(f, "{v}")?;
    }
    Ok(())
}

/// As nft writes it: `10.96.0.1 . 6 . 80 : goto mnl-pick4-cip-2`.
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_values(f, &self.key)?;
        match &self.data {
            None => Ok(()),
            Some(Data::Verdict(Verb::Jump, chain)) => write!(f, " : jump {chain}"),
            Some(Data::Verdict(Verb::Goto, chain)) => write!(f, " : goto {chain}"),
            Some(Data::Values(values)) => {
                f.write_str(" : ")?;
                write_values(f, values)
            }
        }
    }
}

/// One part of a concatenated key or value, as a set declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Addr4,
    Addr6,
    Proto,
    Port,
    Index,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Addr4 => "an IPv4 address",
            Part::Addr6 => "an IPv6 address",
            Part::Proto => "a protocol number",
            Part::Port => "a port",
            Part::Index => "a numgen index",
        }
    }
}

/// What a set's elements hold, read from its declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub key: Vec<Part>,
    pub data: LayoutData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutData {
    None,
    Verdict,
    Values(Vec<Part>),
}

fn part(token: &str) -> Option<Part> {
    Some(match token.trim() {
        "ipv4_addr" | "ip daddr" | "ip saddr" => Part::Addr4,
        "ipv6_addr" | "ip6 daddr" | "ip6 saddr" => Part::Addr6,
        "inet_proto" | "meta l4proto" => Part::Proto,
        "inet_service" | "th dport" | "tcp dport" | "udp dport" | "sctp dport" => Part::Port,
        t if t.starts_with("numgen random mod ") => Part::Index,
        _ => return None,
    })
}

fn parts(text: &str) -> Option<Vec<Part>> {
    text.split(" . ").map(part).collect()
}

/// The layout of a set declared with `type_` (a `type` or `typeof`
/// clause), if the netlink writer knows it: keys and values made of
/// addresses, protocol numbers, ports and `numgen` indices, and verdicts.
pub fn layout(type_: &str) -> Option<Layout> {
    let clause = type_.strip_prefix("typeof ").unwrap_or(type_);
    let (key, data) = match clause.split_once(" : ") {
        None => (clause, None),
        Some((k, d)) => (k, Some(d)),
    };
    let data = match data {
        None => LayoutData::None,
        Some("verdict") => LayoutData::Verdict,
        Some(d) => LayoutData::Values(parts(d)?),
    };
    Some(Layout {
        key: parts(key)?,
        data,
    })
}

/// A verdict as the kernel codes it (`NFT_JUMP`, `NFT_GOTO`).
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;

/// One element, encoded: its key, and its value or verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub key: Vec<u8>,
    pub data: Option<EncodedData>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodedData {
    Value(Vec<u8>),
    Verdict(i32, String),
}

/// Why an element does not fit its set's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{got} values where the set has {want}")]
    Arity { got: usize, want: usize },
    #[error("value {index} is {value}, where the set has {want}")]
    WrongValue {
        index: usize,
        value: String,
        want: &'static str,
    },
    #[error("the set has no data, the element has")]
    UnexpectedData,
    #[error("the set maps to data, the element has none")]
    MissingData,
    #[error("the set maps to {want}")]
    WrongData { want: &'static str },
}

/// Appends `values` as the kernel's concatenation of `parts`: each value
/// padded to 4 bytes, ports in network order, `numgen` indices in host
/// order (as `numgen` writes them).
fn encode_values(parts: &[Part], values: &[Value], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if parts.len() != values.len() {
        return Err(EncodeError::Arity {
            got: values.len(),
            want: parts.len(),
        });
    }
    for (index, (p, v)) in parts.iter().zip(values).enumerate() {
        match (p, v) {
            (Part::Addr4, Value::Addr(IpAddr::V4(a))) => out.extend(a.octets()),
            (Part::Addr6, Value::Addr(IpAddr::V6(a))) => out.extend(a.octets()),
            (Part::Proto, Value::Proto(n)) => out.extend([*n, 0, 0, 0]),
            (Part::Port, Value::Port(n)) => {
                let [a, b] = n.to_be_bytes();
                out.extend([a, b, 0, 0]);
            }
            (Part::Index, Value::Index(n)) => out.extend(n.to_ne_bytes()),
            _ => {
                return Err(EncodeError::WrongValue {
                    index,
                    value: v.to_string(),
                    want: p.name(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
