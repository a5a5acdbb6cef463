//! Set and map element changes as one nf_tables netlink batch: the
//! messages `nft` would send for `add element` / `delete element`, built
//! here from the rendered elements, encoded by `element.rs` (no text in
//! between). Pure: no I/O (`netlink.rs` sends the batch).
//!
//! Only what the service maps need is understood (see
//! [`crate::element::layout`]): keys and values made of IPv4 and IPv6
//! addresses, protocol numbers, ports and `numgen` indices, and
//! `goto`/`jump` verdicts. Anything else is an error, and the caller
//! writes the change through `nft` instead.

use crate::element::{Element, EncodeError, Encoded, EncodedData, layout};
use crate::names::TABLE;

/// Why a change cannot be expressed as element messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementError {
    #[error("set {set}: the type {type_:?} is not one the netlink writer knows")]
    UnknownType { set: String, type_: String },
    #[error("set {set}: the element {element} does not fit the set")]
    BadElement {
        set: String,
        element: String,
        #[source]
        source: EncodeError,
    },
}

/// Adding or deleting elements of one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange<'a> {
    pub set: &'a str,
    /// The set's `type_` as rendered.
    pub type_: &'a str,
    pub add: bool,
    pub elements: Vec<&'a Element>,
}

// netlink and nf_tables constants (linux/netlink.h, netfilter/nfnetlink.h,
// netfilter/nf_tables.h).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 0x2;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// The most bytes of elements in one message: the attribute that holds
/// them has a 16-bit length.
const ELEMENT_BYTES_PER_MESSAGE: usize = 60_000;

/// A batch ready to send: the bytes, and the sequence numbers of the
/// messages the kernel acknowledges, each with what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub acked: Vec<(u32, String)>,
}

/// An upper bound of an element's bytes in a message.
fn element_size(e: &Encoded) -> usize {
    let data = match &e.data {
        None => 0,
        Some(EncodedData::Value(v)) => 8 + v.len().next_multiple_of(4),
        Some(EncodedData::Verdict(_, chain)) => 24 + (chain.len() + 1).next_multiple_of(4),
    };
    12 + e.key.len().next_multiple_of(4) + data
}

fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend((len as u16).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend([0u8; 4]);
    fill(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Appends one netlink message (header, `nfgenmsg`, attributes).
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: &[u8],
) {
    let len = 16 + 4 + body.len();
    out.extend((len as u32).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend(res_id.to_be_bytes());
    out.extend(body);
}

/// The batch that applies `changes` in order, as one transaction. Its
/// messages are numbered from `seq`.
pub fn batch(changes: &[SetChange<'_>], seq: u32) -> Result<Batch, ElementError> {
    batch_around(&[], &[], changes, seq)
}

/// The batch that applies `before`, sends `first` (messages `nft`
/// compiled, see `compiled.rs`), then applies `after`, as one
/// transaction. Its messages are numbered from `seq`; each is
/// acknowledged.
pub fn batch_around(
    before: &[SetChange<'_>],
    first: &[crate::compiled::Message],
    after: &[SetChange<'_>],
    seq: u32,
) -> Result<Batch, ElementError> {
    let mut bytes = Vec::new();
    let mut acked = Vec::new();
    let mut seq = seq;
    message(
        &mut bytes,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    append_changes(&mut bytes, &mut acked, &mut seq, before)?;
    for (i, m) in first.iter().enumerate() {
        seq = seq.wrapping_add(1);
        let len = 16 + m.body.len();
        bytes.extend((len as u32).to_ne_bytes());
        bytes.extend(m.kind.to_ne_bytes());
        bytes.extend((m.flags | NLM_F_ACK).to_ne_bytes());
        bytes.extend(seq.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(&m.body);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        acked.push((seq, format!("nft's message {i} (type {:#06x})", m.kind)));
    }
    append_changes(&mut bytes, &mut acked, &mut seq, after)?;
    seq = seq.wrapping_add(1);
    message(
        &mut bytes,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    Ok(Batch { bytes, acked })
}

/// Appends the messages of `changes`, numbered after `seq`.
fn append_changes(
    bytes: &mut Vec<u8>,
    acked: &mut Vec<(u32, String)>,
    seq: &mut u32,
    changes: &[SetChange<'_>],
) -> Result<(), ElementError> {
    for change in changes {
        let layout = layout(change.type_).ok_or_else(|| ElementError::UnknownType {
            set: change.set.to_string(),
            type_: change.type_.to_string(),
        })?;
        let encoded: Vec<Encoded> = change
            .elements
            .iter()
            .map(|e| {
                e.encode(&layout)
                    .map_err(|source| ElementError::BadElement {
                        set: change.set.to_string(),
                        element: e.to_string(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut rest: &[Encoded] = &encoded;
        while !rest.is_empty() {
            let mut bytes_of = 0;
            let count = rest
                .iter()
                .take_while(|e| {
                    bytes_of += element_size(e);
                    bytes_of <= ELEMENT_BYTES_PER_MESSAGE
                })
                .count()
                .max(1);
            let (chunk, later) = rest.split_at(count);
            rest = later;
            let mut body = Vec::new();
            attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &cstr(TABLE));
            attr(&mut body, NFTA_SET_ELEM_LIST_SET, &cstr(change.set));
            nested(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS, |out| {
                for e in chunk {
                    nested(out, NFTA_LIST_ELEM, |out| {
                        nested(out, NFTA_SET_ELEM_KEY, |out| {
                            attr(out, NFTA_DATA_VALUE, &e.key);
                        });
                        if !change.add {
                            return;
                        }
                        match &e.data {
                            None => {}
                            Some(EncodedData::Value(v)) => nested(out, NFTA_SET_ELEM_DATA, |out| {
                                attr(out, NFTA_DATA_VALUE, v);
                            }),
                            Some(EncodedData::Verdict(code, chain)) => {
                                nested(out, NFTA_SET_ELEM_DATA, |out| {
                                    nested(out, NFTA_DATA_VERDICT, |out| {
                                        attr(out, NFTA_VERDICT_CODE, &code.to_be_bytes());
                                        attr(out, NFTA_VERDICT_CHAIN, &cstr(chain));
                                    });
                                });
                            }
                        }
                    });
                }
            });
            *seq = seq.wrapping_add(1);
            let (kind, flags, verb) = if change.add {
                (
                    NFT_MSG_NEWSETELEM,
                    NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
                    "adding",
                )
            } else {
                (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, "deleting")
            };
            message(
                bytes,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                flags,
                *seq,
                NFPROTO_INET,
                0,
                &body,
            );
            acked.push((
                *seq,
                format!("{verb} {} elements of {}", chunk.len(), change.set),
            ));
        }
    }
    Ok(())
}

/// The acknowledgements and errors in a buffer the kernel sent: per
/// message, its sequence number and error (0: success).
pub fn acks(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let word = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let len = word(at) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let seq = word(at + 8);
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((seq, word(at + 16) as i32));
        }
        at += len.next_multiple_of(4);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Value;

    fn addr(a: &str) -> Element {
        Element::key(vec![Value::Addr(a.parse().unwrap())])
    }

    #[test]
    fn a_batch_is_framed_and_its_messages_acknowledged() {
        let (e1, e2, e3) = (addr("10.96.0.1"), addr("10.96.0.2"), addr("10.96.0.3"));
        let changes = [
            SetChange {
                set: "mnl-cluster-ips4",
                type_: "ipv4_addr",
                add: false,
                elements: vec![&e1],
            },
            SetChange {
                set: "mnl-cluster-ips4",
                type_: "ipv4_addr",
                add: true,
                elements: vec![&e2, &e3],
            },
        ];
        let b = batch(&changes, 100).unwrap();
        assert_eq!(b.acked.len(), 2);
        assert_eq!(b.acked[0].0, 101);
        // Begin, two messages, end; each length-prefixed and aligned.
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(
                b.bytes[at + 4..at + 6].try_into().unwrap(),
            ));
            assert_eq!(len % 4, 0);
            at += len;
        }
        assert_eq!(at, b.bytes.len());
        assert_eq!(kinds, vec![0x10, 0x0a0e, 0x0a0c, 0x11]);
        let v6 = addr("fd00::1");
        let bad = [SetChange {
            set: "s",
            type_: "ipv4_addr",
            add: true,
            elements: vec![&v6],
        }];
        assert!(matches!(
            batch(&bad, 1),
            Err(ElementError::BadElement { .. })
        ));
    }

    #[test]
    fn acks_are_read_from_error_messages() {
        let mut buf = Vec::new();
        for (seq, err) in [(7u32, 0i32), (8, -2)] {
            buf.extend(36u32.to_ne_bytes());
            buf.extend(NLMSG_ERROR.to_ne_bytes());
            buf.extend(0u16.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend(err.to_ne_bytes());
            buf.extend([0u8; 16]);
        }
        assert_eq!(acks(&buf), vec![(7, 0), (8, -2)]);
        assert!(acks(&[1, 2, 3]).is_empty());
    }
}
