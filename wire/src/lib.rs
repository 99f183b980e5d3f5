//! # agora-wire
//!
//! Every byte Agora puts on the wire, built and parsed in one place and used by the broker,
//! the space server and the SDK alike. docs/PROTOCOL.md is the contract; each module here
//! follows one of its sections, and `tests/protocol_raw.rs` pins the bus's bytes with raw
//! ZeroMQ sockets.
//!
//! # Layout
//!
//! * [`header`]: the 12-byte [`Header`] that opens every request and reply, bus and space,
//!   and the one [`VERSION`] (PROTOCOL.md "Header (12 bytes)", both protocols).
//! * [`op`]: [`Op`], every operation code of both protocols (the op tables of "Requests and
//!   replies", "Replay and durable subscriptions" and "Tuple space").
//! * [`error`]: [`ErrorCode`], every error reply code of both protocols ("Error replies",
//!   "Tuple space" / "Error reply").
//! * [`bus`]: the event bus's frames: publish (plain and with room for the meta), events and
//!   their meta, acks, HELLO, stats, queue groups, replay and durable cursors ("Requests and
//!   replies", "Events", "Replay and durable subscriptions").
//! * [`space`]: the tuple space's frames: its [`Request`](space::Request)s and
//!   [`Reply`](space::Reply)s, tuples and templates carried as their CBOR bytes, which the
//!   space's model encodes and decodes ("Tuple space").
//! * [`topic`]: validated [`Topic`](topic::Topic)s and [`Filter`](topic::Filter)s (literal,
//!   `*`, `>`, `re:` regex) and their matching rules ("Topics and filters").
//! * [`text`]: one-line error texts shared by every layer (CBOR and regex errors, an error
//!   chain as the binaries print it); no protocol section of its own.
//! * [`socket`]: the small pieces every socket-owning thread shares (a doorbell, poll(2) on
//!   raw descriptors, a `ROUTER`'s reply address, a pending-reply table with deadlines); no
//!   bytes of their own.
//!
//! Decoding never panics: malformed input is an error value the server answers with an
//! error reply. Only [`socket`] touches sockets; the frame modules build and parse bytes.
//!
//! # Example
//!
//! ```
//! use agora_wire::space::{Reply, Request, Wait};
//! use agora_wire::{Header, Op};
//!
//! // A TAKE of the template `("job", ?int)` (its CBOR bytes), waiting forever.
//! let template = vec![0x82, 0x82, 0x00, 0x63, b'j', b'o', b'b', 0x82, 0x01, 0x63, b'i', b'n', b't'];
//! let request = Request::Take { template, wait: Wait::Forever };
//! let frames = request.encode(7, 0);
//! assert_eq!(frames[0], Header::new(Op::Take, 7).encode());
//! assert_eq!(frames[2], u64::MAX.to_le_bytes());
//!
//! // The server found nothing within the wait: an OK with no frames.
//! let ok = Header::new(Op::Ok, 7).encode();
//! assert_eq!(Reply::decode(Op::Take, &[&ok[..]]).unwrap(), (7, Reply::Done));
//! ```

pub mod bus;
pub mod error;
pub mod header;
pub mod op;
pub mod socket;
pub mod space;
pub mod text;
pub mod topic;

pub use error::ErrorCode;
pub use header::{Header, HEADER_LEN, VERSION};
pub use op::Op;
