//! Values and tuples: the CBOR data model.
//!
//! A [`Value`] is one field of a tuple. Integers keep their sign class (`Int` for anything
//! that fits `i64`, `UInt` only above `i64::MAX`), floats stay floats: `1` and `1.0` are
//! different values and never match each other.

/// One field of a tuple: the CBOR data model.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    /// Any integer that fits in `i64`.
    Int(i64),
    /// Only integers above `i64::MAX` (normalised: a `UInt` never holds a value that fits `Int`).
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
}

/// An ordered list of values.
#[derive(Clone, Debug)]
pub struct Tuple(pub Vec<Value>);
