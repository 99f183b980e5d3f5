//! # agora-wire
//!
//! Every byte Agora puts on the wire, built and parsed in one place and used by the broker
//! and the SDK alike. docs/PROTOCOL.md is the contract; this crate follows it section by
//! section, and `tests/protocol_raw.rs` pins the bytes with raw ZeroMQ sockets.
//!
//! # Layout
//!
//! * [`header`]: the 12-byte header that opens every request and reply, bus and space.
//! * [`topic`]: validated [`Topic`](topic::Topic)s and [`Filter`](topic::Filter)s (literal,
//!   `*`, `>`, `re:` regex) and their matching rules (PROTOCOL.md "Topics and filters").
//! * [`bus`]: the event bus's frames: publish, events and their meta, acks, HELLO, stats,
//!   queue groups, replay and durable cursors (PROTOCOL.md "Requests", "Events", "Replay").
//! * [`text`]: one-line error texts shared by every layer (CBOR and regex errors, an error
//!   chain as the binaries print it).
//! * [`socket`]: the small pieces every socket-owning thread shares (a doorbell, poll(2) on
//!   raw descriptors, a `ROUTER`'s reply address, a pending-reply table with deadlines).
//!
//! Decoding never panics: malformed input is an error value the server answers with an
//! error reply. Only [`socket`] touches sockets; the frame modules build and parse bytes.

pub mod bus;
pub mod header;
pub mod socket;
pub mod text;
pub mod topic;
