//! # agora-tuplespace
//!
//! A Linda-style tuple space. (Crate docs: layout written when the modules land.)

pub mod macros;
pub mod parse;
pub mod template;
pub mod value;

pub use parse::{parse_template, parse_tuple, parse_value, ParseError};
pub use template::{re, range, Field, Kind, Number, Template, TemplateBuilder};
pub use value::{ModelError, Tuple, Value};
