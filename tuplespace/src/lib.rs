//! # agora-tuplespace
//!
//! A Linda-style tuple space. (Crate docs: layout written when the modules land.)

pub mod template;
pub mod value;

pub use template::{Field, Kind, Number, Template};
pub use value::{Tuple, Value};
