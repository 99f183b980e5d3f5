//! # agora-tuplespace
//!
//! A Linda-style tuple space: tuples of CBOR values, templates that match them, an indexed
//! multiset with blocking takers and readers, leases, and a ZeroMQ service.
//! Usable in-process ([`Space::new`]) with no broker; the Agora broker serves it over the
//! network ([`SpaceServer`]) and the `agora` SDK is its client.
//!
//! # Layout
//!
//! * The model: [`value`] ([`Value`], [`Tuple`]), [`template`](mod@template) ([`Template`], [`Field`],
//!   [`Kind`]: actual values, `?int` formals, `_`, ranges, regex, nesting), [`parse`] (the text
//!   syntax `("job", ?int, _)` with caret errors), [`macros`] (`tuple!`, `template!`),
//!   [`convert`] (CBOR, serde and JSON bridges). docs/TEMPLATES.md has the grammar.
//! * The store: [`store`] (the index by arity and first field, waiters, reservations, leases,
//!   events; its [`Journal`](store::Journal) is where a persistent space's storage plugs in:
//!   crate `agora-storage` has the write-ahead log and snapshots), [`space`] (the async
//!   in-process API).
//! * The service: [`server`] (one thread owning a ROUTER; blocked takes are registered
//!   waiters; its frames are `agora_wire::space`'s, with tuples and templates as CBOR bytes
//!   that the model here decodes), [`error`].
//!
//! docs/SPACE.md states the semantics: a multiset, oldest match first, blocked takers served
//! first come first served, one tuple to exactly one taker, every blocked reader gets a copy.
//!
//! # Example
//!
//! ```
//! use agora_tuplespace::{parse_template, tuple, Space};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let space = Space::new();
//!     space.out(tuple!("job", 42)).unwrap();
//!     let job = space.take(&parse_template(r#"("job", ?int)"#).unwrap()).await;
//!     assert_eq!(job, tuple!("job", 42));
//! });
//! ```

pub mod convert;
pub mod error;
pub mod macros;
pub mod parse;
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
