//! The `tuple!` and `template!` macros.
//!
//! ```
//! use agora_tuplespace::{template, tuple, Value};
//!
//! let t = tuple!("job", 42, 3.5, [1, 2], Value::bytes(*b"\x00\xff"), ());
//! let tpl = template!("job", ?int, _, [?int, _], ?bytes, _);
//! assert!(tpl.matches(&t));
//! let ranged = template!("job", range(1..=100), re(r"^\d+$"));
//! assert!(ranged.matches(&tuple!("job", 42, "7")));
//! ```
//!
//! Both expand to `$crate::` paths, so a crate that re-exports them (the SDK) works without
//! importing anything else.

/// Builds a [`Tuple`](crate::Tuple); each element is any expression that converts
/// `Into<Value>` (`&str`, `String`, integers, floats, `bool`, `()`/`None` for null,
/// `Vec<T>` / `[T; N]` for arrays, [`Value::bytes`](crate::Value::bytes) for bytes).
///
/// ```
/// use agora_tuplespace::{tuple, Value};
/// let t = tuple!("job", 42, 3.5, true, ());
/// assert_eq!(t.to_string(), r#"("job", 42, 3.5, true, null)"#);
/// assert_eq!(tuple!().len(), 0);
/// ```
#[macro_export]
macro_rules! tuple {
    () => {
        $crate::Tuple(::std::vec::Vec::new())
    };
    ($($e:expr),+ $(,)?) => {
        $crate::Tuple(::std::vec![$(::std::convert::Into::<$crate::Value>::into($e)),+])
    };
}

/// Builds a [`Template`](crate::Template) field by field:
///
/// | written | field |
/// |---|---|
/// | an expression (`"job"`, `42`, `x`) | `Actual(x.into())` |
/// | `?int` `?float` `?str` `?bytes` `?bool` `?array` | a typed formal |
/// | `_` | the wildcard |
/// | `range(1..10)`, `range(..=5)`, `range(0.5..1.5)` | a numeric range |
/// | `re(r"^job-\d+$")` | a regex on text |
/// | `[ ... ]` | a nested template (all-actual lists become an actual array) |
/// | a [`Field`](crate::Field) expression | that field |
///
/// # Panics
/// `range(..)` panics on a reversed or empty range and `re(..)` on an invalid pattern, like
/// `Regex::new(..).unwrap()` on a literal. For ranges and patterns that come from input use
/// [`Template::builder`](crate::Template::builder), whose `range`/`regex` return `Result`.
///
/// ```
/// use agora_tuplespace::{template, tuple};
/// let tpl = template!("job", ?int, _, range(1..10), re("^a"), [?str, _]);
/// assert_eq!(tpl.to_string(), r#"("job", ?int, _, 1..10, /^a/, [?str, _])"#);
/// assert!(tpl.matches(&tuple!("job", 1, (), 9, "abc", vec!["x", "y"])));
/// ```
#[macro_export]
macro_rules! template {
    () => {
        $crate::Template(::std::vec::Vec::new())
    };
    ($($rest:tt)+) => {
        $crate::Template($crate::__agora_template_fields!([] $($rest)+))
    };
}

/// Implementation detail of [`template!`]: munches fields into a `Vec<Field>`.
#[doc(hidden)]
#[macro_export]
macro_rules! __agora_template_fields {
    ([$($acc:expr),*]) => {
        ::std::vec![$($acc),*]
    };
    ([$($acc:expr),*] ?int $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::Formal($crate::Kind::Int)] $($($rest)*)?)
    };
    ([$($acc:expr),*] ?float $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::Formal($crate::Kind::Float)] $($($rest)*)?)
    };
    ([$($acc:expr),*] ?str $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::Formal($crate::Kind::Str)] $($($rest)*)?)
    };
    ([$($acc:expr),*] ?bytes $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::Formal($crate::Kind::Bytes)] $($($rest)*)?)
    };
    ([$($acc:expr),*] ?bool $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::Formal($crate::Kind::Bool)] $($($rest)*)?)
    };
    ([$($acc:expr),*] ?array $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::Formal($crate::Kind::Array)] $($($rest)*)?)
    };
    ([$($acc:expr),*] _ $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!([$($acc,)* $crate::Field::Any] $($($rest)*)?)
    };
    ([$($acc:expr),*] range($r:expr) $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!([$($acc,)* $crate::template::range($r)] $($($rest)*)?)
    };
    ([$($acc:expr),*] re($p:expr) $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!([$($acc,)* $crate::template::re($p)] $($($rest)*)?)
    };
    ([$($acc:expr),*] [$($inner:tt)*] $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::Field::nested($crate::template!($($inner)*))] $($($rest)*)?)
    };
    ([$($acc:expr),*] $e:expr $(, $($rest:tt)*)?) => {
        $crate::__agora_template_fields!(
            [$($acc,)* $crate::template::IntoField::into_field($e)] $($($rest)*)?)
    };
}

#[cfg(test)]
mod tests {
    use crate::{Field, Kind, Number, Template, Tuple, Value};
    use std::ops::Bound;

    #[test]
    fn tuple_macro() {
        let name = String::from("n");
        let t = tuple!(
            "job",
            42,
            -1i8,
            3.5,
            true,
            (),
            None::<i64>,
            name.clone(),
            u64::MAX
        );
        assert_eq!(
            t,
            Tuple(vec![
                Value::from("job"),
                Value::Int(42),
                Value::Int(-1),
                Value::Float(3.5),
                Value::Bool(true),
                Value::Null,
                Value::Null,
                Value::from("n"),
                Value::UInt(u64::MAX),
            ])
        );
        assert_eq!(tuple!(), Tuple(vec![]));
        assert_eq!(tuple!(1,).len(), 1);
        let nested = tuple!([1, 2], vec![Value::from("a")], Value::bytes(vec![0u8, 255]));
        assert_eq!(nested.to_string(), r#"([1, 2], ["a"], h'00ff')"#);
    }

    #[test]
    fn template_macro() {
        let n = 7;
        let tpl = template!("job", ?int, _, ?str, n, n + 1);
        assert_eq!(
            tpl,
            Template(vec![
                Field::Actual(Value::from("job")),
                Field::Formal(Kind::Int),
                Field::Any,
                Field::Formal(Kind::Str),
                Field::Actual(Value::Int(7)),
                Field::Actual(Value::Int(8)),
            ])
        );
        assert_eq!(template!(), Template(vec![]));
        assert_eq!(template!(?float, ?bytes, ?bool, ?array,).len(), 4);
        let tpl = template!(range(1..10), range(..=5), range(0.5..1.5), re(r"^job-\d+$"));
        assert_eq!(tpl.to_string(), r"(1..10, ..=5, 0.5..1.5, /^job-\d+$/)");
        assert_eq!(
            tpl.0[0],
            Field::Range {
                lo: Bound::Included(Number::Int(1)),
                hi: Bound::Excluded(Number::Int(10))
            }
        );
        let tpl = template!("a", [?int, [_, "x"]], [1, 2], Field::Any);
        assert_eq!(tpl.to_string(), r#"("a", [?int, [_, "x"]], [1, 2], _)"#);
        assert_eq!(tpl.0[2], Field::Actual(Value::from([1, 2])));
        let inner = |x: Value| vec![Value::Int(1), Value::from(vec![Value::Bool(true), x])];
        assert!(tpl.matches(&tuple!("a", inner("x".into()), [1, 2], ())));
        assert!(!tpl.matches(&tuple!("a", inner("y".into()), [1, 2], ())));
        assert!(!tpl.matches(&tuple!("a", inner("x".into()), [1, 2, 3], ())));
        // The macro agrees with the text syntax.
        let parsed: Template = r#"("job", ?int, _, 1..=3, [?str])"#.parse().unwrap();
        assert_eq!(template!("job", ?int, _, range(1..=3), [?str]), parsed);
    }

    #[test]
    #[should_panic(expected = "invalid range")]
    fn range_panics_on_reversed_literal() {
        let (a, b) = (5, 1);
        let _ = template!(range(a..b));
    }
}
