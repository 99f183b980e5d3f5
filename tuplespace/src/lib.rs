//! # agora-tuplespace
//!
//! A Linda-style tuple space. (Crate docs: layout written when the modules land.)

pub mod convert;
pub mod error;
pub mod macros;
pub mod parse;
pub mod persist;
pub mod protocol;
pub mod server;
pub mod space;
pub mod store;
pub mod template;
pub mod value;

pub use convert::{from_tuple, from_tuple_cbor, to_tuple};
pub use parse::{parse_template, parse_tuple, parse_value, ParseError};
pub use template::{range, re, Field, Kind, Number, Template, TemplateBuilder};
pub use value::{ModelError, Tuple, Value};

pub use error::Error;
pub use server::{ServerConfig, SpaceServer};
pub use space::Space;
pub use store::{ReservationId, SpaceEvent, Store};
