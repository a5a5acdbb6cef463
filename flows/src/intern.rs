//! Shared strings, endpoints and traces for the stored records ([`crate::flow`]),
//! with no I/O. Namespaces, workloads, labels, policy names, tiers and
//! actions are drawn from small sets, so each distinct value is kept once
//! and every record holding it shares it (`Arc`). Endpoints (kind,
//! namespace, workload, labels) and whole traces repeat too, and are shared
//! whole: a record refers to them, it does not own copies.
//!
//! Lookups take the value's bytes as they came (from the wire or from a
//! decoded message), so a value seen before costs a hash and a compare,
//! not an allocation; bytes that are not UTF-8 are refused when first
//! seen. Endpoints and traces are looked up by a canonical key (labels
//! sorted by key, a repeated label key's last value kept, as protobuf maps
//! decode), so the order a sender's map happened to have does not matter.
//!
//! A value nobody but the interner holds any more is dropped by
//! [`Interner::prune`], which [`Interner::maybe_prune`] calls when the
//! tables have doubled since the last pruning: the tables stay bounded by
//! what the records in the window use. The interner refuses nothing but
//! bytes that are not UTF-8.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use crate::flow::{Endpoint, Hit, Sym, Trace};

/// The hasher of the tables: foldhash, seeded per process (the keys come
/// from the network).
type Hasher = foldhash::fast::RandomState;

/// Bytes that should have been UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a string is not UTF-8")]
pub struct NotUtf8;

/// Text as it arrives: checked already (`&str`, never fails) or raw bytes
/// from the wire (checked when first seen).
pub trait Text<'a>: Copy {
    type Error;
    fn bytes(self) -> &'a [u8];
    fn text(self) -> Result<&'a str, Self::Error>;
}

impl<'a> Text<'a> for &'a str {
    type Error = Infallible;
    fn bytes(self) -> &'a [u8] {
        self.as_bytes()
    }
    fn text(self) -> Result<&'a str, Infallible> {
        Ok(self)
    }
}

/// Bytes from the wire that a protobuf `string` field carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wire<'a>(pub &'a [u8]);

impl<'a> Text<'a> for Wire<'a> {
    type Error = NotUtf8;
    fn bytes(self) -> &'a [u8] {
        self.0
    }
    fn text(self) -> Result<&'a str, NotUtf8> {
        std::str::from_utf8(self.0).map_err(|_| NotUtf8)
    }
}

/// A policy hit's fields as they arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct HitRef<T> {
    pub tier: T,
    pub kind: T,
    pub namespace: T,
    pub name: T,
    pub rule_index: Option<u32>,
    pub action: T,
}

/// The fewest entries at which the tables are pruned.
const PRUNE_FLOOR: usize = 4_096;

#[derive(Debug)]
pub struct Interner {
    strings: HashMap<Box<[u8]>, Sym, Hasher>,
    endpoints: HashMap<Box<[u8]>, Arc<Endpoint>, Hasher>,
    traces: HashMap<Box<[u8]>, Trace, Hasher>,
    /// The canonical key being built (kept to reuse its allocation).
    key: Vec<u8>,
    /// Prune when the tables hold more entries than this.
    prune_above: usize,
}

impl Default for Interner {
    fn default() -> Interner {
        Interner {
            strings: HashMap::default(),
            endpoints: HashMap::default(),
            traces: HashMap::default(),
            key: Vec::new(),
            prune_above: PRUNE_FLOOR,
        }
    }
}

/// Appends `b` to a canonical key, length first (so no two sequences of
/// fields give the same key).
fn put(key: &mut Vec<u8>, b: &[u8]) {
    key.extend_from_slice(&(b.len() as u32).to_le_bytes());
    key.extend_from_slice(b);
}

impl Interner {
    pub fn new() -> Interner {
        Interner::default()
    }

    /// The shared string of `t`.
    pub fn sym<'a, T: Text<'a>>(&mut self, t: T) -> Result<Sym, T::Error> {
        if let Some(s) = self.strings.get(t.bytes()) {
            return Ok(s.clone());
        }
        let s: Sym = Arc::from(t.text()?);
        self.strings.insert(Box::from(t.bytes()), s.clone());
        Ok(s)
    }

    /// The shared endpoint of these fields. `labels` is sorted here (by
    /// key; the last of a repeated key wins).
    pub fn endpoint<'a, T: Text<'a>>(
        &mut self,
        kind: T,
        namespace: T,
        workload: T,
        labels: &mut Vec<(T, T)>,
    ) -> Result<Arc<Endpoint>, T::Error> {
        // Stable: entries of one key keep their order, so the last is the
        // one that arrived last.
        labels.sort_by(|a, b| a.0.bytes().cmp(b.0.bytes()));
        let mut w = 0;
        for r in 0..labels.len() {
            if w > 0 && labels[w - 1].0.bytes() == labels[r].0.bytes() {
                labels[w - 1] = labels[r];
            } else {
                labels[w] = labels[r];
                w += 1;
            }
        }
        labels.truncate(w);
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        for t in [kind, namespace, workload] {
            put(&mut key, t.bytes());
        }
        for (k, v) in labels.iter() {
            put(&mut key, k.bytes());
            put(&mut key, v.bytes());
        }
        let found = self.endpoints.get(key.as_slice()).cloned();
        let result = match found {
            Some(e) => Ok(e),
            None => self
                .new_endpoint(kind, namespace, workload, labels)
                .inspect(|e| {
                    self.endpoints.insert(Box::from(key.as_slice()), e.clone());
                }),
        };
        self.key = key;
        result
    }

    fn new_endpoint<'a, T: Text<'a>>(
        &mut self,
        kind: T,
        namespace: T,
        workload: T,
        labels: &[(T, T)],
    ) -> Result<Arc<Endpoint>, T::Error> {
        let labels = labels
            .iter()
            .map(|(k, v)| Ok((self.sym(*k)?, self.sym(*v)?)))
            .collect::<Result<Vec<_>, T::Error>>()?;
        Ok(Arc::new(Endpoint {
            kind: self.sym(kind)?,
            namespace: self.sym(namespace)?,
            workload: self.sym(workload)?,
            labels: labels.into_boxed_slice(),
        }))
    }

    /// The shared trace of these hits, in order.
    pub fn trace<'a, T: Text<'a>>(&mut self, hits: &[HitRef<T>]) -> Result<Trace, T::Error> {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        for h in hits {
            for t in [h.tier, h.kind, h.namespace, h.name, h.action] {
                put(&mut key, t.bytes());
            }
            match h.rule_index {
                Some(i) => {
                    key.push(1);
                    key.extend_from_slice(&i.to_le_bytes());
                }
                None => key.push(0),
            }
        }
        let found = self.traces.get(key.as_slice()).cloned();
        let result = match found {
            Some(t) => Ok(t),
            None => hits
                .iter()
                .map(|h| {
                    Ok(Hit {
                        tier: self.sym(h.tier)?,
                        kind: self.sym(h.kind)?,
                        namespace: self.sym(h.namespace)?,
                        name: self.sym(h.name)?,
                        rule_index: h.rule_index,
                        action: self.sym(h.action)?,
                    })
                })
                .collect::<Result<Trace, T::Error>>()
                .inspect(|t| {
                    self.traces.insert(Box::from(key.as_slice()), t.clone());
                }),
        };
        self.key = key;
        result
    }

    /// Entries in the tables.
    pub fn len(&self) -> usize {
        self.strings.len() + self.endpoints.len() + self.traces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every value only the interner holds (endpoints and traces
    /// first: they hold strings).
    pub fn prune(&mut self) {
        self.endpoints.retain(|_, e| Arc::strong_count(e) > 1);
        self.traces.retain(|_, t| Arc::strong_count(t) > 1);
        self.strings.retain(|_, s| Arc::strong_count(s) > 1);
        self.prune_above = (2 * self.len()).max(PRUNE_FLOOR);
    }

    /// Prunes when the tables have doubled since the last pruning (so the
    /// work is a constant share of the lookups).
    pub fn maybe_prune(&mut self) {
        if self.len() > self.prune_above {
            self.prune();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_shared_and_label_order_does_not_matter() {
        let mut i = Interner::new();
        let a = i.sym("backend").unwrap();
        let b = i.sym(Wire(b"backend")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let e1 = i
            .endpoint("pod", "prod", "web-*", &mut vec![("b", "2"), ("a", "1")])
            .unwrap();
        let e2 = i
            .endpoint("pod", "prod", "web-*", &mut vec![("a", "1"), ("b", "2")])
            .unwrap();
        assert!(Arc::ptr_eq(&e1, &e2));
        assert_eq!(e1.label("a"), Some("1"));
        // A repeated key: the last one wins, as a protobuf map decodes.
        let e3 = i
            .endpoint(
                "pod",
                "prod",
                "web-*",
                &mut vec![("a", "0"), ("b", "2"), ("a", "1")],
            )
            .unwrap();
        assert!(Arc::ptr_eq(&e1, &e3));
        // Fields do not run into each other.
        let x = i.endpoint("pod", "ab", "c", &mut vec![]).unwrap();
        let y = i.endpoint("pod", "a", "bc", &mut vec![]).unwrap();
        assert!(!Arc::ptr_eq(&x, &y));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        let mut i = Interner::new();
        assert_eq!(i.sym(Wire(&[0xff, 0xfe])), Err(NotUtf8));
        assert_eq!(
            i.endpoint(
                Wire(b"pod"),
                Wire(b""),
                Wire(b"w"),
                &mut vec![(Wire(b"k"), Wire(&[0xc0]))]
            )
            .map(|_| ()),
            Err(NotUtf8)
        );
        assert!(i.endpoints.is_empty());
    }

    #[test]
    fn pruning_drops_what_no_record_holds() {
        let mut i = Interner::new();
        let kept = i
            .trace(&[HitRef {
                tier: "default",
                kind: "NetworkPolicy",
                namespace: "prod",
                name: "kept",
                rule_index: Some(0),
                action: "allow",
            }])
            .unwrap();
        let gone = i.sym("gone").unwrap();
        drop(gone);
        i.prune();
        assert!(i.strings.contains_key(b"kept".as_slice()));
        assert!(!i.strings.contains_key(b"gone".as_slice()));
        assert_eq!(i.traces.len(), 1);
        drop(kept);
        i.prune();
        assert!(i.is_empty());
    }
}
