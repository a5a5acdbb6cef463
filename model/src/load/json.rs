//! A JSON input's documents one by one: each top-level value, and each
//! item of a top-level array, is parsed and handed on before the next is
//! read, so that a caller that stops early stops the parsing too and never
//! holds more than one item parsed.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::EachDocument;
use crate::error::Problem;

/// The message of the error that unwinds the parser when the caller stops.
const STOPPED: &str = "manul: loading stopped";

/// See the module documentation.
pub(super) fn each_document(text: &str, f: &mut EachDocument<'_>) -> Result<(), Problem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut next = 0;
    // `end` fails while anything but whitespace is left.
    while de.end().is_err() {
        let mut stopped = false;
        let top = TopLevel {
            next: &mut next,
            f: &mut *f,
            stopped: &mut stopped,
        };
        match top.deserialize(&mut de) {
            Ok(()) => {}
            Err(_) if stopped => return Ok(()),
            Err(error) => return Err(Problem::JsonSyntax { error }),
        }
    }
    Ok(())
}

/// One top-level value: an array's items are documents, anything else is
/// one document.
struct TopLevel<'a, 'f> {
    next: &'a mut usize,
    f: &'a mut EachDocument<'f>,
    stopped: &'a mut bool,
}

impl TopLevel<'_, '_> {
    /// Hands `item` on; false when the caller stops.
    fn emit(&mut self, item: serde_json::Value) -> bool {
        *self.next += 1;
        let value = serde_yaml_ng::to_value(item).map_err(|e| Problem::Decode {
            message: e.to_string(),
        });
        if (self.f)(*self.next, value).is_break() {
            *self.stopped = true;
            return false;
        }
        true
    }

    fn one<E: de::Error>(mut self, item: serde_json::Value) -> Result<(), E> {
        if self.emit(item) {
            Ok(())
        } else {
            Err(E::custom(STOPPED))
        }
    }
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            if !self.emit(item) {
                return Err(de::Error::custom(STOPPED));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let item = serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.one(item)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.one(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.one(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.one(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.one(v.into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.one(v.into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.one(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;

    fn documents(text: &str, stop_after: usize) -> Result<Vec<(usize, String)>, String> {
        let mut seen = Vec::new();
        each_document(text, &mut |i, v| {
            seen.push((i, format!("{:?}", v.map_err(|e| e.to_string()))));
            if seen.len() >= stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(|e| e.to_string())?;
        Ok(seen)
    }

    #[test]
    fn values_and_array_items_are_documents_in_order() {
        let got = documents(r#"{"a":1} [2, {"b":true}] "s" null 3"#, usize::MAX).unwrap();
        let indexes: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 2, 3, 4, 5, 6]);
        assert!(got[0].1.contains("\"a\""), "{got:?}");
        assert!(got[2].1.contains("\"b\""), "{got:?}");
        assert!(got[4].1.contains("Null"), "{got:?}");
    }

    #[test]
    fn stopping_stops_the_parsing_before_later_syntax_errors() {
        let got = documents("[1, 2, 3, oops", 2).unwrap();
        assert_eq!(got.len(), 2);
        let err = documents("[1, 2, 3, oops", 10).unwrap_err();
        assert!(err.contains("JSON syntax error"), "{err}");
        assert!(
            documents("{} x", 10)
                .unwrap_err()
                .contains("JSON syntax error")
        );
    }
}
