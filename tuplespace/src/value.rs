//! Values and tuples: the CBOR data model.
//!
//! A [`Value`] is one field of a tuple. Integers keep their sign class (`Int` for anything
//! that fits `i64`, `UInt` only above `i64::MAX`), floats stay floats: `1` and `1.0` are
//! different values and never match each other.
//!
//! Equality and hashing are total so values can be used as index keys:
//! - integers compare by their mathematical value (`Int(5) == UInt(5)`, should anyone build a
//!   non-normalised `UInt`);
//! - floats compare by canonical bits: `-0.0 == 0.0`, and every NaN equals every other NaN;
//! - an integer never equals a float (`Int(1) != Float(1.0)`).

use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Errors of the model: building templates, converting to and from CBOR and serde types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A regex field's pattern did not compile (or exceeded the size limits).
    #[error("invalid regex `{pattern}`: {message}")]
    InvalidRegex {
        /// The pattern (truncated when very long).
        pattern: String,
        /// Why it was rejected.
        message: String,
    },
    /// A range is reversed, empty or has a NaN bound.
    #[error("invalid range: {0}")]
    InvalidRange(String),
    /// The bytes are not valid CBOR, or not the expected CBOR shape.
    #[error("CBOR decode error: {0}")]
    Cbor(String),
    /// The CBOR holds something outside the tuple space's data model (a map, a tag,
    /// an integer beyond 64 bits, ...).
    #[error("unsupported CBOR item: {0}")]
    Unsupported(String),
    /// A template's wire form is malformed (unknown field code, wrong shape).
    #[error("bad template encoding: {0}")]
    BadTemplate(String),
    /// A Rust value did not serialize to a sequence, or a tuple did not fit the target type.
    #[error("serde conversion error: {0}")]
    Serde(String),
}

/// One field of a tuple: the CBOR data model.
#[derive(Clone, Debug)]
pub enum Value {
    /// CBOR `null`. Distinct from the template wildcard `_`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Any integer that fits in `i64`.
    Int(i64),
    /// Only integers above `i64::MAX` (normalised: a `UInt` never holds a value that fits `Int`).
    UInt(u64),
    /// A 64-bit float (f32 inputs are widened).
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A nested array of values.
    Array(Vec<Value>),
}

/// The canonical bit pattern of a float for equality and hashing: all zeros are `+0.0`,
/// all NaNs are one NaN.
pub(crate) fn canonical_float_bits(f: f64) -> u64 {
    if f.is_nan() {
        f64::NAN.to_bits()
    } else if f == 0.0 {
        0.0f64.to_bits()
    } else {
        f.to_bits()
    }
}

impl Value {
    /// A byte-string value (`Vec<u8>` does not convert with `From`, to avoid confusion with
    /// arrays of integers).
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// A text value.
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    /// An integer value from any `i128` that fits `i64` or `u64`; `None` otherwise.
    /// The result is normalised (`UInt` only above `i64::MAX`).
    pub fn from_i128(n: i128) -> Option<Value> {
        if let Ok(i) = i64::try_from(n) {
            Some(Value::Int(i))
        } else {
            u64::try_from(n).ok().map(Value::UInt)
        }
    }

    /// The integer held by `Int` or `UInt`, widened to `i128`.
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(i128::from(*i)),
            Value::UInt(u) => Some(i128::from(*u)),
            _ => None,
        }
    }

    /// The text held by a `Text` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The kind name used by the text syntax's formals (`int`, `float`, `str`, `bytes`,
    /// `bool`, `array`), or `null`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
        }
    }

    /// `true` for `Value::Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(_) | UInt(_), Int(_) | UInt(_)) => self.as_i128() == other.as_i128(),
            (Float(a), Float(b)) => canonical_float_bits(*a) == canonical_float_bits(*b),
            (Text(a), Text(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Discriminants: Int and UInt share one so equal integers hash alike.
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                b.hash(state);
            }
            Value::Int(_) | Value::UInt(_) => {
                state.write_u8(2);
                self.as_i128().hash(state);
            }
            Value::Float(f) => {
                state.write_u8(3);
                canonical_float_bits(*f).hash(state);
            }
            Value::Text(s) => {
                state.write_u8(4);
                s.hash(state);
            }
            Value::Bytes(b) => {
                state.write_u8(5);
                b.hash(state);
            }
            Value::Array(a) => {
                state.write_u8(6);
                a.hash(state);
            }
        }
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_signed!(i8, i16, i32, i64);

macro_rules! from_unsigned_small {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_unsigned_small!(u8, u16, u32);

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(f64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Value {
        Value::Null
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    /// An array value. Note: `Vec<u8>` becomes an array of integers; use [`Value::bytes`]
    /// for a byte string.
    fn from(v: Vec<T>) -> Value {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Value>, const N: usize> From<[T; N]> for Value {
    /// An array value (`[1, 2]` becomes `Array([Int(1), Int(2)])`).
    fn from(v: [T; N]) -> Value {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

impl From<Tuple> for Value {
    /// A tuple nested as an array value.
    fn from(t: Tuple) -> Value {
        Value::Array(t.0)
    }
}

/// An ordered list of values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple(pub Vec<Value>);

impl Tuple {
    /// A tuple of these values.
    pub fn new(values: Vec<Value>) -> Tuple {
        Tuple(values)
    }

    /// The number of fields (the arity).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` for the empty tuple `()`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.0.iter()
    }

    /// The field at `i`, if any.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i)
    }

    /// The fields as a slice.
    pub fn values(&self) -> &[Value] {
        &self.0
    }

    /// Consumes the tuple, returning its fields.
    pub fn into_values(self) -> Vec<Value> {
        self.0
    }

    /// The store's index key: (arity, first field). The first field is `None` for `()`.
    pub fn index_key(&self) -> (usize, Option<&Value>) {
        (self.0.len(), self.0.first())
    }
}

impl Deref for Tuple {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

impl From<Vec<Value>> for Tuple {
    fn from(v: Vec<Value>) -> Tuple {
        Tuple(v)
    }
}

impl From<Tuple> for Vec<Value> {
    fn from(t: Tuple) -> Vec<Value> {
        t.0
    }
}

impl FromIterator<Value> for Tuple {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Tuple {
        Tuple(iter.into_iter().collect())
    }
}

impl IntoIterator for Tuple {
    type Item = Value;
    type IntoIter = std::vec::IntoIter<Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Tuple {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn h(v: &Value) -> u64 {
        let mut s = DefaultHasher::new();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn float_equality_is_canonical() {
        assert_eq!(Value::Float(-0.0), Value::Float(0.0));
        assert_eq!(h(&Value::Float(-0.0)), h(&Value::Float(0.0)));
        let nan2 = f64::from_bits(f64::NAN.to_bits() | 1);
        assert!(nan2.is_nan());
        assert_eq!(Value::Float(f64::NAN), Value::Float(nan2));
        assert_eq!(h(&Value::Float(f64::NAN)), h(&Value::Float(nan2)));
        assert_ne!(Value::Float(1.0), Value::Float(1.5));
    }

    #[test]
    fn int_is_not_float() {
        assert_ne!(Value::Int(1), Value::Float(1.0));
        assert_ne!(Value::Int(0), Value::Null);
        assert_ne!(Value::Bool(false), Value::Null);
        assert_ne!(Value::Text("1".into()), Value::Int(1));
    }

    #[test]
    fn int_uint_compare_numerically() {
        assert_eq!(Value::Int(5), Value::UInt(5));
        assert_eq!(h(&Value::Int(5)), h(&Value::UInt(5)));
        assert_ne!(Value::Int(-1), Value::UInt(u64::MAX));
    }

    #[test]
    fn from_impls() {
        assert_eq!(Value::from(5u8), Value::Int(5));
        assert_eq!(Value::from(-5i8), Value::Int(-5));
        assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
        assert!(matches!(Value::from(7u64), Value::Int(7)));
        assert!(matches!(Value::from(i64::MAX as u64 + 1), Value::UInt(_)));
        assert_eq!(Value::from(1.5f32), Value::Float(1.5));
        assert_eq!(Value::from("a"), Value::Text("a".into()));
        assert_eq!(Value::from(String::from("a")), Value::Text("a".into()));
        assert_eq!(Value::from(()), Value::Null);
        assert_eq!(Value::from(None::<i32>), Value::Null);
        assert_eq!(Value::from(Some(3)), Value::Int(3));
        assert_eq!(
            Value::from(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(1)])
        );
        assert_eq!(Value::from(vec![1u8]), Value::Array(vec![Value::Int(1)]));
        assert_eq!(
            Value::from([1, 2]),
            Value::Array(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(Value::bytes(vec![1u8, 2]), Value::Bytes(vec![1, 2]));
        assert_eq!(Value::bytes(&b"ab"[..]), Value::Bytes(vec![97, 98]));
    }

    #[test]
    fn from_i128_normalises() {
        assert!(matches!(Value::from_i128(3), Some(Value::Int(3))));
        assert!(matches!(
            Value::from_i128(i128::from(u64::MAX)),
            Some(Value::UInt(_))
        ));
        assert!(Value::from_i128(i128::from(u64::MAX) + 1).is_none());
        assert!(Value::from_i128(i128::from(i64::MIN) - 1).is_none());
    }

    #[test]
    fn tuple_helpers() {
        let t = Tuple::new(vec![Value::from("job"), Value::from(1)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(0), Some(&Value::from("job")));
        assert_eq!(t.get(2), None);
        assert_eq!(t.iter().count(), 2);
        assert_eq!(t.index_key(), (2, Some(&Value::from("job"))));
        assert_eq!(Tuple::default().index_key(), (0, None));
        assert_eq!(t[1], Value::Int(1));
    }
}
