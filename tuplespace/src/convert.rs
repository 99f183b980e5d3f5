//! Bridges between the model and the outside: CBOR (the wire and disk form), serde types,
//! and JSON (the CLI's `--format json`).
//!
//! # CBOR
//! A [`Value`] is its natural CBOR item (integer, float, text, bytes, array, bool, null);
//! a [`Tuple`] is a CBOR array of them. Maps, tags, `undefined`-less simple values and
//! integers beyond 64 bits are rejected with [`ModelError`], never a panic. Because a tuple
//! is just an array, a Rust tuple or tuple struct encoded with `ciborium` is byte-for-byte a
//! valid tuple, and a tuple's bytes decode straight into such a type.
//!
//! A [`Template`] has its own CBOR shape (the "wire encoding" in `docs/TEMPLATES.md`): an
//! array of fields, each an array `[code, ...]`:
//!
//! | field | CBOR |
//! |---|---|
//! | actual value `v` | `[0, v]` |
//! | formal `?int` | `[1, "int"]` (also `float` `str` `bytes` `bool` `array`) |
//! | wildcard `_` | `[2]` |
//! | range | `[3, lo, lo_inclusive, hi, hi_inclusive]` (`lo`/`hi`: int, float or null = unbounded) |
//! | regex | `[4, "pattern"]` |
//! | nested template | `[5, [field, ...]]` |
//!
//! # serde
//! [`to_tuple`] turns any `T: Serialize` that serializes as a sequence (Rust tuples, tuple
//! structs like `struct Job(String, i64)`, `Vec`s, arrays) into a tuple; [`from_tuple`] goes
//! back. Structs with named fields serialize as maps and are rejected: use a tuple struct.
//!
//! # JSON
//! [`Value::to_json`]: bytes become `{"$bytes": "<hex>"}`, non-finite floats the strings
//! `"NaN"`, `"inf"`, `"-inf"`; everything else is the obvious JSON.

use std::fmt;
use std::ops::Bound;

use ciborium::value::{Integer, Value as Cbor};
use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::template::{compile_regex, validate_range, Field, Kind, Number, Template};
use crate::value::{ModelError, Tuple, Value};

/// How deeply a template's wire form may nest (arrays in actual values count too).
pub const MAX_TEMPLATE_DEPTH: usize = 64;

/// Wire code of an actual-value field.
pub const CODE_ACTUAL: u8 = 0;
/// Wire code of a typed formal field.
pub const CODE_FORMAL: u8 = 1;
/// Wire code of the wildcard.
pub const CODE_ANY: u8 = 2;
/// Wire code of a range field.
pub const CODE_RANGE: u8 = 3;
/// Wire code of a regex field.
pub const CODE_REGEX: u8 = 4;
/// Wire code of a nested template.
pub const CODE_NESTED: u8 = 5;

// ---------------------------------------------------------------------------------------
// serde for Value and Tuple (the hot path: encode/decode without an intermediate tree)

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Array(items) => s.collect_seq(items),
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tuple-space value (integer, float, text, bytes, bool, null or array)")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Value::from_i128(v).ok_or_else(|| E::custom("integer outside the i64/u64 range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom("integer outside the i64/u64 range"))
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Value, E> {
        Ok(Value::Float(f64::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "maps are not part of the tuple-space data model",
        ))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "CBOR tags are not part of the tuple-space data model",
        ))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl Serialize for Tuple {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

struct TupleVisitor;

impl<'de> Visitor<'de> for TupleVisitor {
    type Value = Tuple;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tuple (a CBOR array of values)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Tuple, A::Error> {
        match ValueVisitor.visit_seq(seq)? {
            Value::Array(items) => Ok(Tuple(items)),
            _ => Err(de::Error::custom("expected an array")),
        }
    }
}

impl<'de> Deserialize<'de> for Tuple {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tuple, D::Error> {
        d.deserialize_seq(TupleVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// CBOR bytes

fn de_error<E: fmt::Debug>(e: ciborium::de::Error<E>) -> ModelError {
    ModelError::Cbor(cbor_error_message(&e))
}

pub use agora_wire::text::cbor_error_message;

/// Decodes exactly one CBOR item from `bytes`; trailing bytes are an error.
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let mut rest = bytes;
    let v = ciborium::from_reader(&mut rest).map_err(de_error)?;
    if rest.is_empty() {
        Ok(v)
    } else {
        Err(ModelError::Cbor(format!(
            "{} trailing bytes after the CBOR item",
            rest.len()
        )))
    }
}

fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    // Writing into a Vec cannot fail, and our Serialize impls raise no custom errors.
    ciborium::into_writer(v, &mut buf).expect("encoding a model value into a Vec cannot fail");
    buf
}

impl Value {
    /// This value's CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes one CBOR item as a value (maps, tags, >64-bit integers are errors).
    pub fn from_cbor(bytes: &[u8]) -> Result<Value, ModelError> {
        decode_exact(bytes)
    }
}

impl Tuple {
    /// This tuple's CBOR encoding: an array of its values.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode(self)
    }

    /// Appends this tuple's CBOR encoding to `buf` (no intermediate allocation).
    pub fn write_cbor(&self, buf: &mut Vec<u8>) {
        ciborium::into_writer(self, buf).expect("encoding a model value into a Vec cannot fail");
    }

    /// Decodes a tuple from CBOR: one array of values and nothing after it.
    pub fn from_cbor(bytes: &[u8]) -> Result<Tuple, ModelError> {
        decode_exact(bytes)
    }
}

// ---------------------------------------------------------------------------------------
// Value <-> ciborium::value::Value

impl From<&Value> for Cbor {
    fn from(v: &Value) -> Cbor {
        match v {
            Value::Null => Cbor::Null,
            Value::Bool(b) => Cbor::Bool(*b),
            Value::Int(i) => Cbor::Integer(Integer::from(*i)),
            Value::UInt(u) => Cbor::Integer(Integer::from(*u)),
            Value::Float(f) => Cbor::Float(*f),
            Value::Text(t) => Cbor::Text(t.clone()),
            Value::Bytes(b) => Cbor::Bytes(b.clone()),
            Value::Array(items) => Cbor::Array(items.iter().map(Cbor::from).collect()),
        }
    }
}

impl From<Value> for Cbor {
    fn from(v: Value) -> Cbor {
        match v {
            Value::Text(t) => Cbor::Text(t),
            Value::Bytes(b) => Cbor::Bytes(b),
            Value::Array(items) => Cbor::Array(items.into_iter().map(Cbor::from).collect()),
            other => Cbor::from(&other),
        }
    }
}

impl From<&Tuple> for Cbor {
    fn from(t: &Tuple) -> Cbor {
        Cbor::Array(t.iter().map(Cbor::from).collect())
    }
}

fn cbor_kind(c: &Cbor) -> &'static str {
    match c {
        Cbor::Integer(_) => "integer",
        Cbor::Bytes(_) => "bytes",
        Cbor::Float(_) => "float",
        Cbor::Text(_) => "text",
        Cbor::Bool(_) => "bool",
        Cbor::Null => "null",
        Cbor::Tag(..) => "tag",
        Cbor::Array(_) => "array",
        Cbor::Map(_) => "map",
        _ => "unknown item",
    }
}

impl TryFrom<Cbor> for Value {
    type Error = ModelError;

    /// Converts a CBOR item; maps and tags are [`ModelError::Unsupported`].
    fn try_from(c: Cbor) -> Result<Value, ModelError> {
        Ok(match c {
            Cbor::Null => Value::Null,
            Cbor::Bool(b) => Value::Bool(b),
            Cbor::Integer(i) => Value::from_i128(i128::from(i)).ok_or_else(|| {
                ModelError::Unsupported("integer outside the i64/u64 range".to_owned())
            })?,
            Cbor::Float(f) => Value::Float(f),
            Cbor::Text(t) => Value::Text(t),
            Cbor::Bytes(b) => Value::Bytes(b),
            Cbor::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(Value::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(ModelError::Unsupported(format!(
                    "a CBOR {} is not a tuple-space value",
                    cbor_kind(&other)
                )))
            }
        })
    }
}

impl TryFrom<Cbor> for Tuple {
    type Error = ModelError;

    /// Converts a CBOR array into a tuple.
    fn try_from(c: Cbor) -> Result<Tuple, ModelError> {
        match Value::try_from(c)? {
            Value::Array(items) => Ok(Tuple(items)),
            v => Err(ModelError::Cbor(format!(
                "a tuple is a CBOR array, not {}",
                v.kind_name()
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Templates on the wire

/// A range bound's lower/upper number in the wire form (`null` when unbounded).
struct WireBound<'a>(&'a Bound<Number>);

impl Serialize for WireBound<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Bound::Unbounded => s.serialize_unit(),
            Bound::Included(n) | Bound::Excluded(n) => match n {
                Number::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                    (Ok(i), _) => s.serialize_i64(i),
                    (_, Ok(u)) => s.serialize_u64(u),
                    _ => s.serialize_i128(*i),
                },
                Number::Float(f) => s.serialize_f64(*f),
            },
        }
    }
}

fn inclusive(b: &Bound<Number>) -> bool {
    matches!(b, Bound::Included(_) | Bound::Unbounded)
}

impl Serialize for Field {
    /// The wire form `[code, ...]` (see the module docs).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Actual(v) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&CODE_ACTUAL)?;
                t.serialize_element(v)?;
                t.end()
            }
            Field::Formal(k) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&CODE_FORMAL)?;
                t.serialize_element(k.name())?;
                t.end()
            }
            Field::Any => {
                let mut t = s.serialize_tuple(1)?;
                t.serialize_element(&CODE_ANY)?;
                t.end()
            }
            Field::Range { lo, hi } => {
                let mut t = s.serialize_tuple(5)?;
                t.serialize_element(&CODE_RANGE)?;
                t.serialize_element(&WireBound(lo))?;
                t.serialize_element(&inclusive(lo))?;
                t.serialize_element(&WireBound(hi))?;
                t.serialize_element(&inclusive(hi))?;
                t.end()
            }
            Field::Regex(r) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&CODE_REGEX)?;
                t.serialize_element(r.as_str())?;
                t.end()
            }
            Field::Nested(tpl) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&CODE_NESTED)?;
                t.serialize_element(tpl)?;
                t.end()
            }
        }
    }
}

impl Serialize for Template {
    /// The wire form: an array of fields.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for f in &self.0 {
            seq.serialize_element(f)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Template {
    /// Decodes and validates the wire form (bad codes, shapes, regexes, ranges are errors).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        let c = Cbor::deserialize(d)?;
        template_from_cbor(c, 0).map_err(de::Error::custom)
    }
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::BadTemplate(msg.into())
}

fn template_from_cbor(c: Cbor, depth: usize) -> Result<Template, ModelError> {
    if depth > MAX_TEMPLATE_DEPTH {
        return Err(bad(format!(
            "nested more than {MAX_TEMPLATE_DEPTH} levels deep"
        )));
    }
    match c {
        Cbor::Array(fields) => fields
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                field_from_cbor(f, depth).map_err(|e| match e {
                    ModelError::BadTemplate(m) => bad(format!("field {i}: {m}")),
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Template),
        other => Err(bad(format!(
            "a template is an array of fields, not a {}",
            cbor_kind(&other)
        ))),
    }
}

fn bound_from_cbor(n: Cbor, incl: Cbor, which: &str) -> Result<Bound<Number>, ModelError> {
    let inclusive = match incl {
        Cbor::Bool(b) => b,
        other => {
            return Err(bad(format!(
                "range {which}_inclusive must be a bool, not a {}",
                cbor_kind(&other)
            )))
        }
    };
    let num = match n {
        Cbor::Null => return Ok(Bound::Unbounded),
        Cbor::Integer(i) => Number::Int(i128::from(i)),
        Cbor::Float(f) => Number::Float(f),
        other => {
            return Err(bad(format!(
                "range {which} bound must be a number or null, not a {}",
                cbor_kind(&other)
            )))
        }
    };
    Ok(if inclusive {
        Bound::Included(num)
    } else {
        Bound::Excluded(num)
    })
}

fn field_from_cbor(c: Cbor, depth: usize) -> Result<Field, ModelError> {
    let items = match c {
        Cbor::Array(items) => items,
        other => {
            return Err(bad(format!(
                "a field is an array [code, ...], not a {}",
                cbor_kind(&other)
            )))
        }
    };
    let mut it = items.into_iter();
    let code = match it.next() {
        Some(Cbor::Integer(i)) => i128::from(i),
        Some(other) => {
            return Err(bad(format!(
                "field code must be an integer, not a {}",
                cbor_kind(&other)
            )))
        }
        None => return Err(bad("empty field array")),
    };
    let args: Vec<Cbor> = it.collect();
    let n = args.len();
    let want = |k: usize, name: &str| -> Result<(), ModelError> {
        if n == k {
            Ok(())
        } else {
            Err(bad(format!(
                "{name} field takes {k} item(s) after the code, got {n}"
            )))
        }
    };
    let mut args_it = args.into_iter();
    let mut next = || args_it.next().unwrap_or(Cbor::Null);
    match code {
        0 => {
            want(1, "actual")?;
            let v = next();
            check_depth(&v, depth)?;
            Ok(Field::Actual(Value::try_from(v)?))
        }
        1 => {
            want(1, "formal")?;
            match next() {
                Cbor::Text(name) => Kind::from_name(&name)
                    .map(Field::Formal)
                    .ok_or_else(|| bad(format!("unknown formal type `{name}`"))),
                other => Err(bad(format!(
                    "formal type must be text, not a {}",
                    cbor_kind(&other)
                ))),
            }
        }
        2 => {
            want(0, "wildcard")?;
            Ok(Field::Any)
        }
        3 => {
            want(4, "range")?;
            let (lo, lo_incl, hi, hi_incl) = (next(), next(), next(), next());
            let lo = bound_from_cbor(lo, lo_incl, "lo")?;
            let hi = bound_from_cbor(hi, hi_incl, "hi")?;
            validate_range(&lo, &hi)?;
            Ok(Field::Range { lo, hi })
        }
        4 => {
            want(1, "regex")?;
            match next() {
                Cbor::Text(p) => compile_regex(&p).map(Field::Regex),
                other => Err(bad(format!(
                    "regex pattern must be text, not a {}",
                    cbor_kind(&other)
                ))),
            }
        }
        5 => {
            want(1, "nested")?;
            template_from_cbor(next(), depth + 1).map(Field::Nested)
        }
        c => Err(bad(format!("unknown field code {c}"))),
    }
}

/// Rejects actual values nested deeper than the template depth limit.
fn check_depth(c: &Cbor, depth: usize) -> Result<(), ModelError> {
    if depth > MAX_TEMPLATE_DEPTH {
        return Err(bad(format!(
            "nested more than {MAX_TEMPLATE_DEPTH} levels deep"
        )));
    }
    if let Cbor::Array(items) = c {
        for i in items {
            check_depth(i, depth + 1)?;
        }
    }
    Ok(())
}

impl Template {
    /// This template's wire form (see the module docs and `docs/TEMPLATES.md`).
    pub fn to_cbor(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes and validates a template's wire form. Malformed input (bad codes, wrong
    /// shapes, invalid or oversized regexes, reversed ranges) is an error, never a panic.
    pub fn from_cbor(bytes: &[u8]) -> Result<Template, ModelError> {
        let c: Cbor = decode_exact(bytes)?;
        template_from_cbor(c, 0)
    }
}

// ---------------------------------------------------------------------------------------
// serde types <-> tuples

/// Converts any value that serializes as a sequence (a Rust tuple, a tuple struct such as
/// `#[derive(Serialize)] struct Job(String, i64)`, a `Vec`, an array) into a tuple.
///
/// Structs with named fields and maps serialize as CBOR maps and are an error
/// ([`ModelError::Serde`]); so are values that are not sequences at all.
pub fn to_tuple<T: Serialize + ?Sized>(value: &T) -> Result<Tuple, ModelError> {
    let c = Cbor::serialized(value).map_err(|e| ModelError::Serde(e.to_string()))?;
    match c {
        Cbor::Array(items) => items
            .into_iter()
            .map(|i| Value::try_from(i).map_err(|e| ModelError::Serde(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Tuple),
        Cbor::Map(_) => Err(ModelError::Serde(
            "the value serialized as a map (a struct with named fields?); a tuple needs a \
             sequence: use a tuple struct like `struct Job(String, i64)` or a Rust tuple"
                .to_owned(),
        )),
        other => Err(ModelError::Serde(format!(
            "the value serialized as a {}, not a sequence; use a Rust tuple or tuple struct",
            cbor_kind(&other)
        ))),
    }
}

/// Decodes a tuple into a type that deserializes from a sequence (a Rust tuple, a tuple
/// struct, a `Vec`); an arity or type mismatch is [`ModelError::Serde`].
pub fn from_tuple<T: DeserializeOwned>(tuple: &Tuple) -> Result<T, ModelError> {
    Cbor::from(tuple)
        .deserialized()
        .map_err(|e| ModelError::Serde(e.to_string()))
}

/// Decodes a tuple's CBOR bytes straight into `T` (no intermediate [`Tuple`]).
pub fn from_tuple_cbor<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let mut rest = bytes;
    ciborium::from_reader(&mut rest).map_err(|e| match de_error(e) {
        ModelError::Cbor(m) => ModelError::Serde(m),
        other => other,
    })
}

// ---------------------------------------------------------------------------------------
// JSON

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

impl Value {
    /// The JSON form for `--format json`: bytes as `{"$bytes": "<hex>"}`, NaN and infinities
    /// as the strings `"NaN"`, `"inf"`, `"-inf"`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None if f.is_nan() => J::String("NaN".to_owned()),
                None if *f > 0.0 => J::String("inf".to_owned()),
                None => J::String("-inf".to_owned()),
            },
            Value::Text(t) => J::String(t.clone()),
            Value::Bytes(b) => {
                let mut m = serde_json::Map::new();
                m.insert("$bytes".to_owned(), J::String(hex(b)));
                J::Object(m)
            }
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
        }
    }
}

impl Tuple {
    /// The JSON form: an array of the values' JSON forms (see [`Value::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.iter().map(Value::to_json).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::tests::{random_value, Rng};
    use crate::{parse_template, parse_tuple, template, tuple};
    use serde::{Deserialize, Serialize};

    fn cbor_of(c: &Cbor) -> Vec<u8> {
        let mut buf = Vec::new();
        ciborium::into_writer(c, &mut buf).unwrap();
        buf
    }

    #[test]
    fn tuple_cbor_round_trip_random() {
        let mut r = Rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..3000 {
            let t = Tuple((0..r.below(6)).map(|_| random_value(&mut r, 0)).collect());
            let bytes = t.to_cbor();
            let back = Tuple::from_cbor(&bytes).unwrap();
            assert_eq!(back, t);
            assert_eq!(
                format!("{back:?}").replace("NaN", "nan"),
                format!("{t:?}").replace("NaN", "nan")
            );
            // The ciborium tree agrees with the direct path.
            let via_tree = Tuple::try_from(Cbor::from(&t)).unwrap();
            assert_eq!(via_tree, t);
        }
    }

    #[test]
    fn tuple_cbor_is_a_plain_array() {
        let t = tuple!(
            "job",
            42,
            -1,
            true,
            (),
            1.5,
            Value::bytes(*b"\x01"),
            [1u64 << 63]
        );
        let expect = Cbor::Array(vec![
            Cbor::Text("job".into()),
            Cbor::Integer(42.into()),
            Cbor::Integer((-1).into()),
            Cbor::Bool(true),
            Cbor::Null,
            Cbor::Float(1.5),
            Cbor::Bytes(vec![1]),
            Cbor::Array(vec![Cbor::Integer((1u64 << 63).into())]),
        ]);
        assert_eq!(t.to_cbor(), cbor_of(&expect));
        // A Rust tuple encodes to the same bytes and decodes from them.
        let rust = ("job", 7i64, 2.5f64);
        let mut buf = Vec::new();
        ciborium::into_writer(&rust, &mut buf).unwrap();
        assert_eq!(Tuple::from_cbor(&buf).unwrap(), tuple!("job", 7, 2.5));
        let back: (String, i64, f64) = from_tuple_cbor(&tuple!("job", 7, 2.5).to_cbor()).unwrap();
        assert_eq!(back, ("job".to_owned(), 7, 2.5));
    }

    #[test]
    fn cbor_rejects_what_is_not_a_value() {
        let map = Cbor::Map(vec![(Cbor::Text("a".into()), Cbor::Integer(1.into()))]);
        let tagged = Cbor::Tag(32, Box::new(Cbor::Text("http://x".into())));
        for bad in [
            Cbor::Array(vec![map.clone()]),
            Cbor::Array(vec![tagged.clone()]),
            Cbor::Integer(1.into()),
            map.clone(),
        ] {
            assert!(Tuple::from_cbor(&cbor_of(&bad)).is_err(), "{bad:?}");
            assert!(Tuple::try_from(bad).is_err());
        }
        assert!(matches!(
            Value::try_from(map),
            Err(ModelError::Unsupported(_))
        ));
        assert!(matches!(
            Value::try_from(tagged),
            Err(ModelError::Unsupported(_))
        ));
        // Integers beyond u64 / below i64::MIN.
        let big_neg = Cbor::Integer(Integer::try_from(-(1i128 << 64)).unwrap());
        assert!(Value::try_from(big_neg.clone()).is_err());
        assert!(Value::from_cbor(&cbor_of(&big_neg)).is_err());
        // Garbage, truncation, trailing bytes, deep nesting.
        assert!(Tuple::from_cbor(&[]).is_err());
        assert!(Tuple::from_cbor(&[0xff, 0x00]).is_err());
        let good = tuple!("a", 1).to_cbor();
        assert!(Tuple::from_cbor(&good[..good.len() - 1]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Tuple::from_cbor(&trailing),
            Err(ModelError::Cbor(_))
        ));
        let deep = [vec![0x81u8; 10_000], vec![0x01]].concat();
        assert!(Tuple::from_cbor(&deep).is_err());
        // A huge declared length with no data does not allocate it all or panic.
        assert!(Tuple::from_cbor(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            Tuple::from_cbor(&[0x81, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
    }

    #[test]
    fn template_wire_round_trip() {
        let texts = [
            r#"("job", ?int, _, 1..10, 1..=10, ..5, 3.., 0.5..1.5, 1<..=2, /^job-\d+$/, [?int, _])"#,
            "()",
            r#"([1, [2, "x"]], [[?str], _], -inf..0, ..)"#,
            "(18446744073709551615..)",
            r#"(h'00ff', null, nan, /a\/b/)"#,
        ];
        for s in texts {
            let t = parse_template(s).unwrap();
            let back = Template::from_cbor(&t.to_cbor()).unwrap();
            assert_eq!(back.to_string(), t.to_string());
            assert_eq!(back, t);
        }
    }

    #[test]
    fn template_wire_shape() {
        let t = template!("job", ?int, _, range(1..=9), re("^a"), [?str, _]);
        let c: Cbor = ciborium::from_reader(&t.to_cbor()[..]).unwrap();
        let i = |n: i64| Cbor::Integer(n.into());
        let expect = Cbor::Array(vec![
            Cbor::Array(vec![i(0), Cbor::Text("job".into())]),
            Cbor::Array(vec![i(1), Cbor::Text("int".into())]),
            Cbor::Array(vec![i(2)]),
            Cbor::Array(vec![i(3), i(1), Cbor::Bool(true), i(9), Cbor::Bool(true)]),
            Cbor::Array(vec![i(4), Cbor::Text("^a".into())]),
            Cbor::Array(vec![
                i(5),
                Cbor::Array(vec![
                    Cbor::Array(vec![i(1), Cbor::Text("str".into())]),
                    Cbor::Array(vec![i(2)]),
                ]),
            ]),
        ]);
        assert_eq!(c, expect);
        let range = parse_template("(..5)").unwrap();
        let c: Cbor = ciborium::from_reader(&range.to_cbor()[..]).unwrap();
        assert_eq!(
            c,
            Cbor::Array(vec![Cbor::Array(vec![
                i(3),
                Cbor::Null,
                Cbor::Bool(true),
                i(5),
                Cbor::Bool(false)
            ])])
        );
    }

    #[test]
    fn template_wire_rejects_malformed() {
        let i = |n: i64| Cbor::Integer(n.into());
        let t = |s: &str| Cbor::Text(s.into());
        let f = |items: Vec<Cbor>| Cbor::Array(vec![Cbor::Array(items)]);
        let cases = vec![
            Cbor::Integer(1.into()),
            Cbor::Array(vec![i(0)]),
            f(vec![]),
            f(vec![t("0")]),
            f(vec![i(9)]),
            f(vec![i(-1)]),
            f(vec![i(0)]),
            f(vec![i(0), i(1), i(2)]),
            f(vec![i(0), Cbor::Map(vec![])]),
            f(vec![i(1), t("integer")]),
            f(vec![i(1), i(1)]),
            f(vec![i(2), Cbor::Null]),
            f(vec![i(3), i(10), Cbor::Bool(true), i(1), Cbor::Bool(true)]),
            f(vec![i(3), i(1), Cbor::Bool(false), i(1), Cbor::Bool(true)]),
            f(vec![
                i(3),
                Cbor::Float(f64::NAN),
                Cbor::Bool(true),
                Cbor::Null,
                Cbor::Bool(true),
            ]),
            f(vec![
                i(3),
                t("a"),
                Cbor::Bool(true),
                Cbor::Null,
                Cbor::Bool(true),
            ]),
            f(vec![i(3), i(1), Cbor::Null, Cbor::Null, Cbor::Bool(true)]),
            f(vec![i(3), i(1), Cbor::Bool(true)]),
            f(vec![i(4), t("(")]),
            f(vec![i(4), t(&"a".repeat(100_000))]),
            f(vec![i(4), t(r"\w{1000}{1000}")]),
            f(vec![i(4), Cbor::Bytes(vec![])]),
            f(vec![i(5), i(1)]),
            f(vec![i(5), Cbor::Array(vec![i(2)])]),
        ];
        for c in cases {
            let bytes = cbor_of(&c);
            assert!(Template::from_cbor(&bytes).is_err(), "{c:?}");
        }
        // Deeply nested templates are refused, not a stack overflow.
        let mut deep = Cbor::Array(vec![Cbor::Array(vec![i(2)])]);
        for _ in 0..100 {
            deep = Cbor::Array(vec![Cbor::Array(vec![i(5), deep])]);
        }
        assert!(Template::from_cbor(&cbor_of(&deep)).is_err());
        assert!(Template::from_cbor(&[0xff]).is_err());
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Job(String, i64, Option<f64>);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Named {
        name: String,
    }

    #[test]
    fn serde_bridge() {
        let job = Job("job".into(), 42, None);
        let t = to_tuple(&job).unwrap();
        assert_eq!(t, tuple!("job", 42, ()));
        assert_eq!(from_tuple::<Job>(&t).unwrap(), job);
        assert_eq!(
            from_tuple::<Job>(&tuple!("job", 1, 2.5)).unwrap(),
            Job("job".into(), 1, Some(2.5))
        );
        let t = to_tuple(&("a", 1u8, vec![1, 2], true)).unwrap();
        assert_eq!(t, parse_tuple(r#"("a", 1, [1, 2], true)"#).unwrap());
        let back: (String, u8, Vec<i32>, bool) = from_tuple(&t).unwrap();
        assert_eq!(back, ("a".into(), 1, vec![1, 2], true));
        // Named structs and maps are refused with a clear error.
        let e = to_tuple(&Named { name: "x".into() }).unwrap_err();
        assert!(
            matches!(&e, ModelError::Serde(m) if m.contains("tuple struct")),
            "{e}"
        );
        assert!(matches!(to_tuple(&5), Err(ModelError::Serde(_))));
        // Mismatches are errors.
        assert!(from_tuple::<Job>(&tuple!("job", "x", ())).is_err());
        assert!(from_tuple::<Job>(&tuple!("job")).is_err());
        assert!(from_tuple::<(String, u8)>(&tuple!("a", 300)).is_err());
        assert!(from_tuple_cbor::<(String, i64)>(&[0xff]).is_err());
    }

    #[test]
    fn json_forms() {
        let t = tuple!(
            "a",
            1,
            u64::MAX,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            (),
            true
        );
        assert_eq!(
            t.to_json().to_string(),
            r#"["a",1,18446744073709551615,1.5,"NaN","inf","-inf",null,true]"#
        );
        let t = tuple!(Value::bytes(vec![0u8, 0xab, 0xff]), [1, 2]);
        assert_eq!(t.to_json().to_string(), r#"[{"$bytes":"00abff"},[1,2]]"#);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut r = Rng(0x0BAD_5EED_1234_4321);
        let seeds = [
            tuple!("job", 42, [1, 2], Value::bytes(vec![1u8, 2])).to_cbor(),
            template!("job", ?int, _, range(1..=9), re("^a"), [?str, _]).to_cbor(),
        ];
        for _ in 0..5000 {
            let mut bytes = seeds[r.below(2) as usize].clone();
            for _ in 0..1 + r.below(4) {
                let at = r.below(bytes.len() as u64) as usize;
                match r.below(3) {
                    0 => bytes[at] = r.next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, r.next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(t) = Tuple::from_cbor(&bytes) {
                assert_eq!(Tuple::from_cbor(&t.to_cbor()), Ok(t));
            }
            if let Ok(t) = Template::from_cbor(&bytes) {
                assert_eq!(Template::from_cbor(&t.to_cbor()), Ok(t));
            }
        }
    }
}
