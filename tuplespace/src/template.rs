//! Templates: what `in`/`rd` ask for, matched field by field against tuples.
//!
//! A [`Template`] matches a tuple when both have the same arity and every [`Field`] matches
//! the value at its position:
//!
//! | field | matches |
//! |---|---|
//! | `Actual(v)` | a value equal to `v` (`1` does not equal `1.0`; `-0.0 == 0.0`; NaN == NaN) |
//! | `Formal(Kind::Int)` (`?int`) | `Int` and `UInt`; other kinds match their own variant |
//! | `Any` (`_`) | anything, including `null` |
//! | `Range { lo, hi }` | `Int`, `UInt`, `Float` inside the bounds, compared exactly |
//! | `Regex(r)` | `Text` values `r` finds a match in (unanchored unless `^`/`$`) |
//! | `Nested(t)` | an `Array` value that `t` matches (arity counts) |
//!
//! Build templates with the text syntax ([`crate::parse`]), the `template!` macro, or
//! [`Template::builder`].

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Bound, RangeBounds};

use crate::value::{ModelError, Tuple, Value};

/// The largest compiled size allowed for a template regex (bytes), so a hostile pattern from
/// the wire cannot eat the server's memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The longest regex pattern accepted (bytes).
pub const REGEX_MAX_PATTERN: usize = 4096;

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

impl Kind {
    /// Every kind, in the order the text syntax lists them.
    pub const ALL: [Kind; 6] = [
        Kind::Int,
        Kind::Float,
        Kind::Str,
        Kind::Bytes,
        Kind::Bool,
        Kind::Array,
    ];

    /// The name used after `?` in the text syntax and in the wire form (`int`, `float`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Str => "str",
            Kind::Bytes => "bytes",
            Kind::Bool => "bool",
            Kind::Array => "array",
        }
    }

    /// The kind with this name (`"int"` -> `Kind::Int`).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether a value is of this kind.
    pub fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Kind::Int, Value::Int(_) | Value::UInt(_))
                | (Kind::Float, Value::Float(_))
                | (Kind::Str, Value::Text(_))
                | (Kind::Bytes, Value::Bytes(_))
                | (Kind::Bool, Value::Bool(_))
                | (Kind::Array, Value::Array(_))
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "?{}", self.name())
    }
}

/// A numeric bound of a range field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// An integer bound (wide enough for every `i64` and `u64`).
    Int(i128),
    /// A float bound (never NaN in a validated range).
    Float(f64),
}

impl Number {
    /// The number a value holds, if it is numeric (`Int`, `UInt`, `Float`).
    pub fn of(v: &Value) -> Option<Number> {
        match v {
            Value::Int(i) => Some(Number::Int(i128::from(*i))),
            Value::UInt(u) => Some(Number::Int(i128::from(*u))),
            Value::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }

    /// Exact numeric comparison across ints and floats; `None` when a NaN is involved.
    pub fn compare(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
            (Number::Int(a), Number::Float(b)) => cmp_int_float(a, b),
            (Number::Float(a), Number::Int(b)) => cmp_int_float(b, a).map(Ordering::reverse),
        }
    }
}

impl From<i64> for Number {
    fn from(v: i64) -> Number {
        Number::Int(i128::from(v))
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Number {
        Number::Float(v)
    }
}

/// Compares an integer with a float exactly (no rounding of the integer to f64).
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^127 as f64 is exact; every i128 is below it and at or above -2^127.
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f >= TWO_127 {
        return Some(Ordering::Less);
    }
    if f < -TWO_127 {
        return Some(Ordering::Greater);
    }
    let fl = f.floor();
    // In range and integral: the cast is exact.
    let fl_i = fl as i128;
    match i.cmp(&fl_i) {
        Ordering::Equal if f > fl => Some(Ordering::Less),
        o => Some(o),
    }
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
        /// The lower bound (`Excluded` is written `3<..` in the text syntax).
        lo: std::ops::Bound<Number>,
        /// The upper bound.
        hi: std::ops::Bound<Number>,
    },
    /// `/pattern/`: matches text values the regex matches.
    Regex(regex::Regex),
    /// A nested template: matches an array value field by field.
    Nested(Template),
}

/// Compiles a template regex with the crate's size limits.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, ModelError> {
    if pattern.len() > REGEX_MAX_PATTERN {
        return Err(ModelError::InvalidRegex {
            pattern: pattern.chars().take(40).collect::<String>() + "...",
            message: format!("pattern longer than {REGEX_MAX_PATTERN} bytes"),
        });
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ModelError::InvalidRegex {
            pattern: pattern.to_owned(),
            message: regex_error_line(&e),
        })
}

pub use agora_wire::text::regex_error_line;

/// Checks a range's bounds: no NaN, not reversed, not empty.
pub fn validate_range(lo: &Bound<Number>, hi: &Bound<Number>) -> Result<(), ModelError> {
    let bad = |m: &str| Err(ModelError::InvalidRange(m.to_owned()));
    // The wire carries bounds as CBOR integers: -2^64 ..= 2^64-1.
    const CBOR_INT: std::ops::RangeInclusive<i128> = -(1i128 << 64)..=(1i128 << 64) - 1;
    for b in [lo, hi] {
        if let Bound::Included(Number::Int(i)) | Bound::Excluded(Number::Int(i)) = b {
            if !CBOR_INT.contains(i) {
                return bad("an integer bound must lie within -2^64 ..= 2^64-1");
            }
        }
        if let Bound::Included(Number::Float(f)) | Bound::Excluded(Number::Float(f)) = b {
            if f.is_nan() {
                return bad("a range bound cannot be NaN");
            }
        }
    }
    let (l, lo_incl) = match lo {
        Bound::Included(n) => (*n, true),
        Bound::Excluded(n) => (*n, false),
        Bound::Unbounded => return Ok(()),
    };
    let (h, hi_incl) = match hi {
        Bound::Included(n) => (*n, true),
        Bound::Excluded(n) => (*n, false),
        Bound::Unbounded => return Ok(()),
    };
    match l.compare(h) {
        Some(Ordering::Greater) => bad("reversed range: the lower bound is above the upper bound"),
        Some(Ordering::Equal) if !(lo_incl && hi_incl) => {
            bad("empty range: equal bounds and one of them excluded")
        }
        Some(_) => Ok(()),
        None => bad("a range bound cannot be NaN"),
    }
}

impl Field {
    /// Whether this field matches the value.
    pub fn matches(&self, v: &Value) -> bool {
        match self {
            Field::Actual(a) => a == v,
            Field::Formal(k) => k.accepts(v),
            Field::Any => true,
            Field::Range { lo, hi } => match Number::of(v) {
                Some(n) => in_bounds(n, lo, hi),
                None => false,
            },
            Field::Regex(r) => match v {
                Value::Text(s) => r.is_match(s),
                _ => false,
            },
            Field::Nested(t) => match v {
                Value::Array(items) => t.matches(items),
                _ => false,
            },
        }
    }

    /// A validated range field from explicit bounds.
    pub fn range(lo: Bound<Number>, hi: Bound<Number>) -> Result<Field, ModelError> {
        validate_range(&lo, &hi)?;
        Ok(Field::Range { lo, hi })
    }

    /// A regex field, compiled with the crate's size limits.
    pub fn regex(pattern: &str) -> Result<Field, ModelError> {
        compile_regex(pattern).map(Field::Regex)
    }

    /// A nested-template field, normalised: when every field is `Actual`, the result is the
    /// equivalent `Actual` array (it matches the same values and can serve as an index key).
    pub fn nested(t: Template) -> Field {
        if t.0.iter().all(|f| matches!(f, Field::Actual(_))) {
            let values =
                t.0.into_iter()
                    .filter_map(|f| match f {
                        Field::Actual(v) => Some(v),
                        _ => None,
                    })
                    .collect();
            Field::Actual(Value::Array(values))
        } else {
            Field::Nested(t)
        }
    }

    /// The value of an `Actual` field.
    pub fn as_actual(&self) -> Option<&Value> {
        match self {
            Field::Actual(v) => Some(v),
            _ => None,
        }
    }
}

fn in_bounds(n: Number, lo: &Bound<Number>, hi: &Bound<Number>) -> bool {
    let lo_ok = match lo {
        Bound::Unbounded => true,
        Bound::Included(b) => matches!(n.compare(*b), Some(Ordering::Greater | Ordering::Equal)),
        Bound::Excluded(b) => matches!(n.compare(*b), Some(Ordering::Greater)),
    };
    let hi_ok = match hi {
        Bound::Unbounded => !matches!(n, Number::Float(f) if f.is_nan()),
        Bound::Included(b) => matches!(n.compare(*b), Some(Ordering::Less | Ordering::Equal)),
        Bound::Excluded(b) => matches!(n.compare(*b), Some(Ordering::Less)),
    };
    lo_ok && hi_ok && !matches!(n, Number::Float(f) if f.is_nan())
}

fn bound_eq(a: &Bound<Number>, b: &Bound<Number>) -> bool {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => true,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            x == y
        }
        _ => false,
    }
}

impl PartialEq for Field {
    /// Structural equality; regexes compare by their pattern text.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Field::Actual(a), Field::Actual(b)) => a == b,
            (Field::Formal(a), Field::Formal(b)) => a == b,
            (Field::Any, Field::Any) => true,
            (Field::Range { lo: l1, hi: h1 }, Field::Range { lo: l2, hi: h2 }) => {
                bound_eq(l1, l2) && bound_eq(h1, h2)
            }
            (Field::Regex(a), Field::Regex(b)) => a.as_str() == b.as_str(),
            (Field::Nested(a), Field::Nested(b)) => a == b,
            _ => false,
        }
    }
}

impl From<Value> for Field {
    fn from(v: Value) -> Field {
        Field::Actual(v)
    }
}

impl From<Kind> for Field {
    fn from(k: Kind) -> Field {
        Field::Formal(k)
    }
}

impl From<Template> for Field {
    fn from(t: Template) -> Field {
        Field::Nested(t)
    }
}

/// A template: a list of fields; a tuple matches when the arity is equal and every field matches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Template(pub Vec<Field>);

impl Template {
    /// A template of these fields.
    pub fn new(fields: Vec<Field>) -> Template {
        Template(fields)
    }

    /// A fallible builder: `Template::builder().actual("job").formal(Kind::Int).build()`.
    pub fn builder() -> TemplateBuilder {
        TemplateBuilder::default()
    }

    /// A template of actual fields that matches exactly this tuple.
    pub fn exact(tuple: &Tuple) -> Template {
        Template(tuple.iter().cloned().map(Field::Actual).collect())
    }

    /// Whether the tuple (its values) matches: same arity and every field matches.
    pub fn matches(&self, tuple: &[Value]) -> bool {
        self.0.len() == tuple.len() && self.0.iter().zip(tuple).all(|(f, v)| f.matches(v))
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` for the empty template `()` (it matches only the empty tuple).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.0
    }

    /// The store's index key: (arity, first field's value if it is `Actual`).
    pub fn index_key(&self) -> (usize, Option<&Value>) {
        (self.0.len(), self.0.first().and_then(Field::as_actual))
    }
}

impl From<Vec<Field>> for Template {
    fn from(v: Vec<Field>) -> Template {
        Template(v)
    }
}

impl From<&Tuple> for Template {
    fn from(t: &Tuple) -> Template {
        Template::exact(t)
    }
}

/// Builds a [`Template`] field by field; the fallible steps (`range`, `regex`) return
/// `Result` so a bad bound or pattern never panics.
#[derive(Clone, Debug, Default)]
pub struct TemplateBuilder {
    fields: Vec<Field>,
}

impl TemplateBuilder {
    /// Adds an actual value (matched by equality).
    pub fn actual(mut self, v: impl Into<Value>) -> Self {
        self.fields.push(Field::Actual(v.into()));
        self
    }

    /// Adds a typed formal (`?int`, ...).
    pub fn formal(mut self, kind: Kind) -> Self {
        self.fields.push(Field::Formal(kind));
        self
    }

    /// Adds the wildcard `_`.
    pub fn any(mut self) -> Self {
        self.fields.push(Field::Any);
        self
    }

    /// Adds a numeric range (`1..10`, `..=5`, `0.5..1.5`); errors on reversed or empty ranges.
    pub fn range<T: RangeNumber, R: RangeBounds<T>>(mut self, r: R) -> Result<Self, ModelError> {
        self.fields.push(try_range(r)?);
        Ok(self)
    }

    /// Adds a regex on text; errors on an invalid or oversized pattern.
    pub fn regex(mut self, pattern: &str) -> Result<Self, ModelError> {
        self.fields.push(Field::regex(pattern)?);
        Ok(self)
    }

    /// Adds a nested template (matches an array value; see [`Field::nested`]).
    pub fn nested(mut self, t: impl Into<Template>) -> Self {
        self.fields.push(Field::nested(t.into()));
        self
    }

    /// Adds any field.
    pub fn field(mut self, f: Field) -> Self {
        self.fields.push(f);
        self
    }

    /// The finished template.
    pub fn build(self) -> Template {
        Template(self.fields)
    }
}

impl From<TemplateBuilder> for Template {
    fn from(b: TemplateBuilder) -> Template {
        b.build()
    }
}

/// Numbers usable as range bounds in [`range`] and [`TemplateBuilder::range`].
pub trait RangeNumber: Copy {
    /// The bound as a [`Number`].
    fn to_number(self) -> Number;
}

macro_rules! range_int {
    ($($t:ty),*) => {$(
        impl RangeNumber for $t {
            fn to_number(self) -> Number {
                Number::Int(i128::from(self))
            }
        }
    )*};
}
range_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl RangeNumber for f64 {
    fn to_number(self) -> Number {
        Number::Float(self)
    }
}

impl RangeNumber for f32 {
    fn to_number(self) -> Number {
        Number::Float(f64::from(self))
    }
}

fn conv_bound<T: RangeNumber>(b: Bound<&T>) -> Bound<Number> {
    match b {
        Bound::Included(x) => Bound::Included(x.to_number()),
        Bound::Excluded(x) => Bound::Excluded(x.to_number()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A range field from any Rust range of numbers; errors on reversed, empty or NaN bounds.
pub fn try_range<T: RangeNumber, R: RangeBounds<T>>(r: R) -> Result<Field, ModelError> {
    Field::range(conv_bound(r.start_bound()), conv_bound(r.end_bound()))
}

/// A range field for the `template!` macro: `range(1..10)`, `range(..=5)`, `range(0.5..1.5)`.
///
/// # Panics
/// On a reversed, empty or NaN range, like `Regex::new(..).unwrap()` on a literal: meant for
/// ranges written in the source. Use [`try_range`] or [`TemplateBuilder::range`] for ranges
/// that come from input.
pub fn range<T: RangeNumber, R: RangeBounds<T>>(r: R) -> Field {
    match try_range(r) {
        Ok(f) => f,
        Err(e) => panic!("invalid range in template: {e}"),
    }
}

/// A regex field for the `template!` macro: `re(r"^job-\d+$")`.
///
/// # Panics
/// On an invalid pattern, like `Regex::new(..).unwrap()` on a literal: meant for patterns
/// written in the source. Use [`Field::regex`] or [`TemplateBuilder::regex`] for patterns
/// that come from input.
pub fn re(pattern: &str) -> Field {
    match Field::regex(pattern) {
        Ok(f) => f,
        Err(e) => panic!("invalid regex in template: {e}"),
    }
}

/// Conversion used by the `template!` macro: a [`Field`] stays itself, anything that converts
/// into a [`Value`] becomes an `Actual` field.
pub trait IntoField {
    /// The field.
    fn into_field(self) -> Field;
}

impl IntoField for Field {
    fn into_field(self) -> Field {
        self
    }
}

impl<T: Into<Value>> IntoField for T {
    fn into_field(self) -> Field {
        Field::Actual(self.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Bound::{Excluded as Ex, Included as In, Unbounded as Un};

    fn t(vals: Vec<Value>) -> Tuple {
        Tuple(vals)
    }

    fn r(lo: Bound<Number>, hi: Bound<Number>) -> Field {
        Field::range(lo, hi).expect("valid test range")
    }

    const I: fn(i128) -> Number = Number::Int;
    const F: fn(f64) -> Number = Number::Float;

    #[test]
    fn field_matching_table() {
        use Value as V;
        let cases: Vec<(Field, Value, bool)> = vec![
            // exact values
            (Field::Actual(V::Int(1)), V::Int(1), true),
            (Field::Actual(V::Int(1)), V::Int(2), false),
            (Field::Actual(V::Int(1)), V::Float(1.0), false),
            (Field::Actual(V::Float(1.0)), V::Int(1), false),
            (Field::Actual(V::Float(0.0)), V::Float(-0.0), true),
            (Field::Actual(V::Float(f64::NAN)), V::Float(f64::NAN), true),
            (Field::Actual(V::from("a")), V::from("a"), true),
            (Field::Actual(V::from("a")), V::bytes(*b"a"), false),
            (Field::Actual(V::Null), V::Null, true),
            (Field::Actual(V::Null), V::Bool(false), false),
            (Field::Actual(V::Bool(true)), V::Bool(true), true),
            (
                Field::Actual(V::Array(vec![V::Int(1)])),
                V::Array(vec![V::Int(1)]),
                true,
            ),
            (
                Field::Actual(V::Array(vec![V::Int(1)])),
                V::Array(vec![V::Float(1.0)]),
                false,
            ),
            // typed formals
            (Field::Formal(Kind::Int), V::Int(-3), true),
            (Field::Formal(Kind::Int), V::UInt(u64::MAX), true),
            (Field::Formal(Kind::Int), V::Float(3.0), false),
            (Field::Formal(Kind::Float), V::Float(3.0), true),
            (Field::Formal(Kind::Float), V::Int(3), false),
            (Field::Formal(Kind::Str), V::from("x"), true),
            (Field::Formal(Kind::Str), V::bytes(*b"x"), false),
            (Field::Formal(Kind::Bytes), V::bytes(*b"x"), true),
            (Field::Formal(Kind::Bool), V::Bool(false), true),
            (Field::Formal(Kind::Bool), V::Null, false),
            (Field::Formal(Kind::Array), V::Array(vec![]), true),
            (Field::Formal(Kind::Array), V::from("[]"), false),
            (Field::Formal(Kind::Str), V::Null, false),
            // wildcard vs null
            (Field::Any, V::Null, true),
            (Field::Any, V::Int(0), true),
            (Field::Any, V::Array(vec![]), true),
            (Field::Actual(V::Null), V::Int(0), false),
            // regex
            (Field::regex(r"^job-\d+$").unwrap(), V::from("job-42"), true),
            (Field::regex(r"^job-\d+$").unwrap(), V::from("job-x"), false),
            (Field::regex(r"job").unwrap(), V::from("a job here"), true),
            (Field::regex(r"job").unwrap(), V::bytes(*b"job"), false),
            (Field::regex(r".*").unwrap(), V::Null, false),
            // ranges: int bounds
            (r(In(I(1)), Ex(I(10))), V::Int(1), true),
            (r(In(I(1)), Ex(I(10))), V::Int(9), true),
            (r(In(I(1)), Ex(I(10))), V::Int(10), false),
            (r(In(I(1)), In(I(10))), V::Int(10), true),
            (r(In(I(1)), Ex(I(10))), V::Int(0), false),
            (r(Ex(I(1)), Un), V::Int(1), false),
            (r(Ex(I(1)), Un), V::Int(2), true),
            (r(Un, Ex(I(5))), V::Int(i64::MIN), true),
            (r(In(I(3)), Un), V::UInt(u64::MAX), true),
            (r(Un, In(I(i128::from(i64::MAX)))), V::UInt(u64::MAX), false),
            // ranges: ints and floats mixed
            (r(In(I(1)), Ex(I(10))), V::Float(9.5), true),
            (r(In(I(1)), Ex(I(10))), V::Float(10.0), false),
            (r(In(I(1)), In(I(10))), V::Float(10.0), true),
            (r(In(I(1)), In(I(10))), V::Float(10.000001), false),
            (r(In(I(1)), Ex(I(10))), V::Float(0.999), false),
            (r(In(F(0.5)), Ex(F(1.5))), V::Int(1), true),
            (r(In(F(0.5)), Ex(F(1.5))), V::Float(1.5), false),
            (r(In(F(0.5)), In(F(1.5))), V::Float(1.5), true),
            (r(In(F(0.5)), In(F(1.5))), V::Float(0.5), true),
            (r(Ex(F(0.5)), In(F(1.5))), V::Float(0.5), false),
            (r(In(F(0.5)), In(F(1.5))), V::Int(2), false),
            (r(Un, Un), V::Float(f64::NAN), false),
            (r(Un, Un), V::Float(f64::INFINITY), true),
            (r(In(I(0)), Un), V::Float(f64::NAN), false),
            (r(In(I(0)), Un), V::Float(f64::INFINITY), true),
            (r(Un, In(I(0))), V::Float(f64::NEG_INFINITY), true),
            // precision: i64::MAX is not equal to 2^63 as f64
            (
                r(In(F(9_223_372_036_854_775_808.0)), Un),
                V::Int(i64::MAX),
                false,
            ),
            (
                r(In(F(9_223_372_036_854_775_808.0)), Un),
                V::UInt(1 << 63),
                true,
            ),
            (r(In(I(0)), In(I(10))), V::from("5"), false),
            (r(In(I(0)), In(I(10))), V::Null, false),
            // nested
            (
                Field::Nested(Template(vec![Field::Formal(Kind::Int), Field::Any])),
                V::Array(vec![V::Int(1), V::Null]),
                true,
            ),
            (
                Field::Nested(Template(vec![Field::Formal(Kind::Int), Field::Any])),
                V::Array(vec![V::Int(1)]),
                false,
            ),
            (
                Field::Nested(Template(vec![Field::Formal(Kind::Int), Field::Any])),
                V::Array(vec![V::Int(1), V::Null, V::Null]),
                false,
            ),
            (
                Field::Nested(Template(vec![Field::Formal(Kind::Int)])),
                V::Array(vec![V::Float(1.0)]),
                false,
            ),
            (Field::Nested(Template(vec![])), V::Array(vec![]), true),
            (Field::Nested(Template(vec![])), V::Null, false),
            (
                Field::Nested(Template(vec![Field::Nested(Template(vec![
                    Field::Actual(V::Int(3)),
                ]))])),
                V::Array(vec![V::Array(vec![V::Int(3)])]),
                true,
            ),
        ];
        for (i, (field, value, want)) in cases.iter().enumerate() {
            assert_eq!(
                field.matches(value),
                *want,
                "case {i}: {field:?} vs {value:?}"
            );
        }
    }

    #[test]
    fn arity_always_counts() {
        let tpl = Template(vec![Field::Any, Field::Any]);
        assert!(tpl.matches(&t(vec![Value::Null, Value::Null])));
        assert!(!tpl.matches(&t(vec![Value::Null])));
        assert!(!tpl.matches(&t(vec![Value::Null, Value::Null, Value::Null])));
        assert!(Template(vec![]).matches(&[]));
        assert!(!Template(vec![]).matches(&t(vec![Value::Null])));
        let job = Template(vec![Field::Actual("job".into()), Field::Formal(Kind::Int)]);
        assert!(job.matches(&t(vec!["job".into(), 7.into()])));
        assert!(!job.matches(&t(vec!["job".into(), 7.5.into()])));
        assert!(!job.matches(&t(vec!["jobs".into(), 7.into()])));
        assert!(!job.matches(&t(vec!["job".into(), 7.into(), 8.into()])));
    }

    #[test]
    fn index_keys() {
        let tpl = Template(vec![Field::Actual("job".into()), Field::Any]);
        assert_eq!(tpl.index_key(), (2, Some(&Value::from("job"))));
        let tpl = Template(vec![Field::Any, Field::Actual("job".into())]);
        assert_eq!(tpl.index_key(), (2, None));
        assert_eq!(Template(vec![]).index_key(), (0, None));
    }

    #[test]
    fn range_validation() {
        assert!(Field::range(In(I(10)), Ex(I(1))).is_err());
        assert!(Field::range(In(I(1)), Ex(I(1))).is_err());
        assert!(Field::range(Ex(I(1)), In(I(1))).is_err());
        assert!(Field::range(In(I(1)), In(I(1))).is_ok());
        assert!(Field::range(In(F(f64::NAN)), Un).is_err());
        assert!(Field::range(In(F(1.5)), Ex(I(1))).is_err());
        assert!(Field::range(Un, Un).is_ok());
        let (hi, lo) = (5, 1);
        assert!(try_range(hi..lo).is_err());
        assert!(try_range(1.0..=0.5).is_err());
        assert!(try_range(1..2).is_ok());
    }

    #[test]
    fn builder() {
        let tpl = Template::builder()
            .actual("job")
            .formal(Kind::Int)
            .any()
            .range(1..10)
            .unwrap()
            .regex("^a")
            .unwrap()
            .nested(Template::builder().formal(Kind::Str))
            .build();
        assert_eq!(tpl.len(), 6);
        let tuple = t(vec![
            "job".into(),
            1.into(),
            Value::Null,
            5.into(),
            "abc".into(),
            Value::Array(vec!["x".into()]),
        ]);
        assert!(tpl.matches(&tuple));
        assert!(Template::builder().regex("(").is_err());
        let (hi, lo) = (3, 2);
        assert!(Template::builder().range(hi..=lo).is_err());
    }

    #[test]
    fn regex_limits() {
        assert!(matches!(
            compile_regex("("),
            Err(ModelError::InvalidRegex { .. })
        ));
        assert!(compile_regex(&"a".repeat(REGEX_MAX_PATTERN + 1)).is_err());
        // Huge repetition counts exceed the compiled-size limit instead of eating memory.
        assert!(compile_regex(r"\w{1000}{1000}").is_err());
    }

    #[test]
    #[should_panic(expected = "invalid regex")]
    fn re_panics_on_bad_literal() {
        let _ = re("(");
    }

    #[test]
    fn int_float_comparison_is_exact() {
        assert_eq!(cmp_int_float(1, 1.0), Some(Ordering::Equal));
        assert_eq!(cmp_int_float(1, 1.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(2, 1.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(-2, -1.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-1, -1.5), Some(Ordering::Greater));
        assert_eq!(
            cmp_int_float(i128::MAX, f64::INFINITY),
            Some(Ordering::Less)
        );
        assert_eq!(
            cmp_int_float(i128::MIN, f64::NEG_INFINITY),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp_int_float(0, f64::NAN), None);
        assert_eq!(
            cmp_int_float(i128::from(i64::MAX), 9_223_372_036_854_775_808.0),
            Some(Ordering::Less)
        );
    }
}
