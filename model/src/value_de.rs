//! Typed decoding of a parsed YAML value, with messages written for the
//! person who wrote the document: "expected a string, found the integer
//! 42", never the name of a Rust or parser type.
//!
//! It also carries integers too large for 64 bits (which the YAML value
//! type cannot hold) through to the field that receives them, so that such
//! a number is a type error at its field instead of a syntax error for the
//! whole document.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
use serde_yaml_ng::Value;
use serde_yaml_ng::value::{Tag, TaggedValue};

/// The tag under which [`parse_document`] keeps an integer that does not
/// fit in 64 bits, as its decimal text.
const BIG_INTEGER_TAG: &str = "manul-big-integer";

/// A decoding error, already phrased for people.
#[derive(Debug)]
pub struct DeError(pub String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError(format!(
            "expected {}, found {}",
            expected(exp),
            found(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError(format!(
            "expected {}, found {}",
            expected(exp),
            found(&unexp)
        ))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError(format!("expected {}, found {len} item(s)", expected(exp)))
    }
}

/// What a visitor expected, in the document's terms.
fn expected(exp: &dyn de::Expected) -> String {
    let text = exp.to_string();
    let plain = match text.as_str() {
        "u8" => "an integer 0-255",
        "u16" => "an integer 0-65535",
        "u32" => "an integer 0-4294967295",
        "u64" | "usize" | "u128" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "an integer",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        "a map" => "a mapping",
        "a borrowed string" => "a string",
        "option" => "a value or null",
        "unit" => "null",
        _ if text.starts_with("struct ") || text.starts_with("map") => "a mapping",
        _ if text.starts_with("tuple") || text.starts_with("sequence") => "a list",
        _ if text.starts_with("enum ") || text.starts_with("variant identifier") => {
            "one of the allowed names"
        }
        _ if text.starts_with("field identifier") => "a field name",
        _ => return text,
    };
    plain.to_string()
}

/// What the document holds, in the document's terms.
fn found(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(b) => format!("the boolean {b}"),
        Unexpected::Unsigned(n) => format!("the integer {n}"),
        Unexpected::Signed(n) => format!("the integer {n}"),
        Unexpected::Float(f) => format!("the number {f}"),
        Unexpected::Char(c) => format!("the character {c:?}"),
        Unexpected::Str(s) => format!("the string {s:?}"),
        Unexpected::Bytes(_) => "bytes".into(),
        Unexpected::Unit => "null".into(),
        Unexpected::Option => "an optional value".into(),
        Unexpected::NewtypeStruct => "a value".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a mapping".into(),
        Unexpected::Enum => "a tagged value".into(),
        Unexpected::UnitVariant => "a name".into(),
        Unexpected::NewtypeVariant | Unexpected::TupleVariant | Unexpected::StructVariant => {
            "a tagged value".into()
        }
        // serde's visitors describe a 128-bit integer as "integer `N` as
        // u128"; the document only has the integer.
        Unexpected::Other(text) => match text
            .strip_prefix("integer `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((digits, _)) => format!("the integer {digits}"),
            None => (*text).to_string(),
        },
    }
}

/// Parses one YAML document into a value, keeping integers that do not fit
/// in 64 bits (which [`Value`] cannot hold) under a private tag, so that
/// [`Friendly`] can hand them to the field they belong to.
pub fn parse_document<'de, D: Deserializer<'de>>(de: D) -> Result<Value, D::Error> {
    de.deserialize_any(ValueVisitor)
}

struct ValueVisitor;

impl<'de> DeserializeSeed<'de> for ValueVisitor {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(ValueVisitor)
    }
}

fn big(digits: String) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new(BIG_INTEGER_TAG),
        value: Value::String(digits),
    }))
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(big(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(big(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueVisitor)? {
            items.push(v);
        }
        Ok(Value::Sequence(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_yaml_ng::Mapping::new();
        while let Some(k) = map.next_key_seed(ValueVisitor)? {
            let v = map.next_value_seed(ValueVisitor)?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format_args!(
                    "duplicate entry with key {}",
                    key_text(&k)
                )));
            }
            out.insert(k, v);
        }
        Ok(Value::Mapping(out))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (String, _) = data.variant()?;
        let value = variant.newtype_variant_seed(ValueVisitor)?;
        if tag.is_empty() {
            return Ok(value);
        }
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// The digits of a big integer kept by [`parse_document`].
fn big_digits(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(t) if t.tag == BIG_INTEGER_TAG => t.value.as_str(),
        _ => None,
    }
}

/// How a value would be described in an error.
fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (_, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Sequence(_) => Unexpected::Seq,
        Value::Mapping(_) => Unexpected::Map,
        Value::Tagged(_) => Unexpected::Enum,
    }
}

fn found_value(v: &Value) -> String {
    match big_digits(v) {
        Some(digits) => format!("the integer {digits}"),
        None => found(&unexpected(v)),
    }
}

static NULL: Value = Value::Null;

/// A deserializer over a borrowed [`Value`] that phrases its errors with
/// [`DeError`].
pub struct Friendly<'a>(pub &'a Value);

impl<'de> Deserializer<'de> for Friendly<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Sequence(items) => {
                let mut seq = Seq {
                    iter: items.iter(),
                    seen: 0,
                };
                let out = visitor.visit_seq(&mut seq)?;
                let left = seq.iter.len();
                if left > 0 {
                    return Err(de::Error::invalid_length(
                        seq.seen + left,
                        &format!("{} item(s)", seq.seen).as_str(),
                    ));
                }
                Ok(out)
            }
            Value::Mapping(map) => visitor.visit_map(Map {
                iter: map.iter(),
                value: None,
            }),
            Value::Tagged(t) => match big_digits(self.0) {
                Some(digits) => {
                    if let Ok(i) = digits.parse::<i128>() {
                        visitor.visit_i128(i)
                    } else if let Ok(u) = digits.parse::<u128>() {
                        visitor.visit_u128(u)
                    } else {
                        visitor.visit_borrowed_str(digits)
                    }
                }
                None => visitor.visit_enum(Enum {
                    variant: t.tag.to_string().trim_start_matches('!').to_string(),
                    value: &t.value,
                }),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(Enum {
                variant: s.clone(),
                value: &NULL,
            }),
            Value::Mapping(map) if map.len() == 1 => {
                let Some((Value::String(k), v)) = map.iter().next() else {
                    return Err(DeError(format!(
                        "expected one of {}, found a mapping",
                        one_of(variants)
                    )));
                };
                visitor.visit_enum(Enum {
                    variant: k.clone(),
                    value: v,
                })
            }
            other => Err(DeError(format!(
                "expected one of {}, found {}",
                one_of(variants),
                found_value(other)
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

fn one_of(variants: &[&str]) -> String {
    variants
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Seq<'a> {
    iter: std::slice::Iter<'a, Value>,
    seen: usize,
}

impl<'de> SeqAccess<'de> for &mut Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(v) => {
                self.seen += 1;
                seed.deserialize(Friendly(v)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Map<'a> {
    iter: serde_yaml_ng::mapping::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Friendly(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        seed.deserialize(Friendly(self.value.take().unwrap_or(&NULL)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An enum written as a name, a one-entry mapping or a YAML tag.
struct Enum<'a> {
    variant: String,
    value: &'a Value,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = DeError;
    type Variant = Friendly<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Friendly<'de>), DeError> {
        let name = seed.deserialize(de::value::StringDeserializer::<DeError>::new(self.variant))?;
        Ok((name, Friendly(self.value)))
    }
}

impl<'de> VariantAccess<'de> for Friendly<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.0 {
            Value::Null => Ok(()),
            other => Err(DeError(format!(
                "expected a name alone, found {} after it",
                found_value(other)
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn parse(text: &str) -> Value {
        parse_document(serde_yaml_ng::Deserializer::from_str(text)).unwrap()
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Color {
        Red,
        Green,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        color: Option<Color>,
        #[serde(default)]
        big: Option<u128>,
    }

    fn error(text: &str) -> String {
        let v = parse(text);
        Doc::deserialize(Friendly(&v)).unwrap_err().to_string()
    }

    #[test]
    fn messages_name_values_not_types() {
        let cases = [
            (
                "name: 1234567890123456789012345",
                "expected a string, found the integer 1234567890123456789012345",
            ),
            (
                "name: -1234567890123456789012345",
                "expected a string, found the integer -1234567890123456789012345",
            ),
            ("name: [a]", "expected a string, found a list"),
            (
                "port: 70000",
                "expected an integer 0-65535, found the integer 70000",
            ),
            (
                "port: x",
                "expected an integer 0-65535, found the string \"x\"",
            ),
            (
                "color: 5",
                "expected one of `Red`, `Green`, found the integer 5",
            ),
            (
                "color: [Red]",
                "expected one of `Red`, `Green`, found a list",
            ),
            (
                "color: Blue",
                "unknown variant `Blue`, expected `Red` or `Green`",
            ),
            ("7", "expected a mapping, found the integer 7"),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "{text}");
        }
        let v = parse("big: 1234567890123456789012345");
        let d = Doc::deserialize(Friendly(&v)).unwrap();
        assert_eq!(d.big, Some(1234567890123456789012345));
    }

    #[test]
    fn documents_parse_like_the_yaml_value_type() {
        let text = "a: [1, -2, 2.5, x, null, true]\nb: {c: d}\n";
        let ours = parse(text);
        let theirs: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        let dup = parse_document(serde_yaml_ng::Deserializer::from_str("a: 1\na: 2\n"));
        assert!(
            dup.unwrap_err().to_string().contains("duplicate"),
            "duplicate keys"
        );
    }
}
