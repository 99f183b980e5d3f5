//! Templates: what `in`/`rd` ask for, matched field by field against tuples.

use crate::value::{Tuple, Value};

/// The type a formal field (`?int`, `?str`, ...) accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `?int`: `Value::Int` or `Value::UInt`.
    Int,
    /// `?float`
    Float,
    /// `?str`
    Str,
    /// `?bytes`
    Bytes,
    /// `?bool`
    Bool,
    /// `?array`
    Array,
}

/// A numeric bound of a range field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i128),
    Float(f64),
}

/// One field of a template.
#[derive(Clone, Debug)]
pub enum Field {
    /// Matches a value equal to this one (`1` does not equal `1.0`).
    Actual(Value),
    /// Matches any value of this kind.
    Formal(Kind),
    /// `_`: matches any value, including null.
    Any,
    /// A numeric range: `1..10`, `1..=10`, `..5`, `3..`. Matches ints and floats inside it.
    Range {
        lo: std::ops::Bound<Number>,
        hi: std::ops::Bound<Number>,
    },
    /// `/pattern/`: matches text values the regex matches.
    Regex(regex::Regex),
    /// A nested template: matches an array value field by field.
    Nested(Template),
}

/// A template: a list of fields; a tuple matches when the arity is equal and every field matches.
#[derive(Clone, Debug)]
pub struct Template(pub Vec<Field>);

#[allow(dead_code)]
fn _types_are_used(_: Tuple) {}
