//! The event bus's frames: every frame the broker and its clients exchange on the bus is built
//! and parsed here, and nowhere else. docs/PROTOCOL.md describes the same bytes for people:
//! this module follows its sections "Requests and replies" (PUBLISH and its flags, HELLO,
//! PING, STATS, SYNC, queue groups, ACKS, error replies), "Events" (the event frame, the
//! meta, beacons, `$sys.stats`) and "Replay and durable subscriptions".
//!
//! Two sockets carry the bus:
//!
//! * **Requests** (client `DEALER` → broker `ROUTER`): a multipart message whose first frame
//!   starts with a 12-byte [`Header`]. A publish is that one frame: header, topic, a NUL byte,
//!   payload ([`encode_publish`], or with room for the meta [`encode_room_publish`]). Other
//!   ops have a header-only first frame followed by op-specific frames. Replies come back on
//!   the same socket with the request id echoed and op [`Op::Ok`] or [`Op::Error`].
//! * **Events** (broker `XPUB` → client `SUB`): one frame: topic, a NUL byte, a 32-byte
//!   [`Meta`], payload ([`encode_event`]). The topic leads so SUB prefix filtering works; the NUL
//!   lets a SUB subscribe to `topic\0` for an exact topic.
//!
//! One frame per publish and per event, because at small sizes ZeroMQ's per-frame cost is
//! what limits throughput (see the README's benchmark).
//!
//! The header, the ops and the error codes are shared with the tuple space ([`crate::header`],
//! [`crate::op`], [`crate::error`]); they are re-exported here under the names the bus side has
//! always used.
//!
//! Decoding never panics: every malformed input is a [`ProtocolError`] that the broker turns
//! into an error reply.

use std::collections::BTreeMap;

pub use crate::error::ErrorCode;
use crate::header::read_header;
/// Length of the request/reply header frame (the layout is shared with the tuple space).
pub use crate::header::HEADER_LEN;
pub use crate::header::{Header, VERSION};
/// Length of the event metadata frame.
pub const META_LEN: usize = 32;
/// Default maximum payload the broker accepts (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The one op enum of both protocols; a bus endpoint serves the bus's part of it (see
/// [`Header::op`]).
pub use crate::Op;

/// Publish flag: reply `Ok` with the event's offset and sequence once it is stamped.
pub const FLAG_ACK: u8 = 0x01;
/// Publish flag: reply only once the event is durable in the log (implies [`FLAG_ACK`]).
pub const FLAG_CONFIRM: u8 = 0x02;
/// Publish flag: 16 bytes follow the header, `[producer id u64 LE][producer seq u64 LE]`,
/// before the topic. The broker drops a publish whose seq is not above the last one it took
/// from that producer (a retry) and answers it with the original's offset.
pub const FLAG_PRODUCER: u8 = 0x04;
/// Publish flag, with [`FLAG_CONFIRM`]: the confirm may come inside an [`Op::Acks`] message
/// together with others for the same client, instead of as its own `Ok` reply.
pub const FLAG_BATCH_ACKS: u8 = 0x08;
/// Publish flag: the topic starts at byte [`PUBLISH_ROOM`] of the frame; the bytes between the
/// header (or the producer fields) and it are padding. Such a frame is as long as the event it
/// becomes, so the broker turns it into the event in place ([`publish_into_event`]) and sends
/// the received message on, without allocating or copying the payload.
pub const FLAG_ROOM: u8 = 0x10;
/// Where the topic starts in a publish with [`FLAG_ROOM`]: the length of the meta, so that
/// `room ‖ topic ‖ 0 ‖ payload` and `topic ‖ 0 ‖ meta ‖ payload` are the same length.
pub const PUBLISH_ROOM: usize = META_LEN;
/// Bytes per entry of an [`Op::Acks`] body.
pub const ACK_ENTRY_LEN: usize = 24;

/// Append one `[request id][offset][seq]` entry to an [`Op::Acks`] body.
pub fn push_ack_entry(body: &mut Vec<u8>, request_id: u64, offset: u64, seq: u64) {
    body.extend_from_slice(&request_id.to_le_bytes());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&seq.to_le_bytes());
}

/// The `(request id, offset, seq)` entries of an [`Op::Acks`] body.
pub fn ack_entries(
    body: &[u8],
) -> Result<impl Iterator<Item = (u64, u64, u64)> + '_, ProtocolError> {
    if !body.chunks_exact(ACK_ENTRY_LEN).remainder().is_empty() {
        return Err(ProtocolError::Body(format!(
            "acks body is {} bytes, not a multiple of {ACK_ENTRY_LEN}",
            body.len()
        )));
    }
    let u64_at = |e: &[u8], at: usize| u64::from_le_bytes(e[at..at + 8].try_into().expect("8"));
    Ok(body
        .chunks_exact(ACK_ENTRY_LEN)
        .map(move |e| (u64_at(e, 0), u64_at(e, 8), u64_at(e, 16))))
}

/// Offset in an ack for a retried publish whose original offset the broker no longer knows.
pub const UNKNOWN_OFFSET: u64 = u64::MAX;

/// Split the producer id and sequence off the front of a publish's inline bytes.
pub fn split_producer(rest: &[u8]) -> Result<((u64, u64), &[u8]), ProtocolError> {
    if rest.len() < 16 {
        return Err(ProtocolError::Body(
            "publish with the producer flag is too short for its 16-byte producer id and seq"
                .into(),
        ));
    }
    let id = u64::from_le_bytes(rest[..8].try_into().expect("8"));
    let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8"));
    Ok(((id, seq), &rest[16..]))
}

/// Skip a [`FLAG_ROOM`] publish's padding: `rest` is what follows the header (and the producer
/// fields, `producer_len` bytes of them); the result starts at the topic.
pub fn split_room(rest: &[u8], producer_len: usize) -> Result<&[u8], ProtocolError> {
    let pad = PUBLISH_ROOM - HEADER_LEN - producer_len;
    rest.get(pad..).ok_or_else(|| {
        ProtocolError::Body(format!(
            "publish with the room flag is too short: the topic starts at byte {PUBLISH_ROOM}"
        ))
    })
}

/// Turn a [`FLAG_ROOM`] publish frame, whose topic (`topic_len` bytes) starts at
/// [`PUBLISH_ROOM`], into the event frame `topic ‖ 0 ‖ meta ‖ payload` in place: the topic and
/// its NUL move to the front and the meta takes the room; the payload stays where it is.
#[inline]
pub fn publish_into_event(frame: &mut [u8], topic_len: usize, meta: &Meta) {
    frame.copy_within(PUBLISH_ROOM..PUBLISH_ROOM + topic_len + 1, 0);
    frame[topic_len + 1..topic_len + 1 + META_LEN].copy_from_slice(&meta.encode());
}

/// How a payload is encoded. The broker never looks inside; it carries the byte along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ContentType {
    /// CBOR (RFC 8949), what the typed SDK writes.
    Cbor = 0,
    /// Opaque bytes.
    Raw = 1,
    /// JSON text.
    Json = 2,
    /// UTF-8 text.
    Text = 3,
}

impl ContentType {
    /// The content type for a byte; unknown values are carried as [`ContentType::Raw`].
    pub fn from_u8(b: u8) -> ContentType {
        match b {
            0 => ContentType::Cbor,
            2 => ContentType::Json,
            3 => ContentType::Text,
            _ => ContentType::Raw,
        }
    }
}

/// A malformed frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("header frame is {0} bytes, expected {HEADER_LEN}")]
    HeaderLength(usize),
    #[error(
        "event frame is {0} bytes, too short for a topic, its NUL and the {META_LEN}-byte meta"
    )]
    EventLength(usize),
    #[error("no NUL byte ends the topic in its first {} bytes (a topic is at most {max})", max + 1)]
    NoTopicEnd { max: usize },
    #[error("protocol version {0} is not supported (this side speaks {VERSION})")]
    Version(u8),
    #[error("unknown op 0x{0:02x}")]
    UnknownOp(u8),
    #[error("{op:?} expects {expected} frames after the header, got {got}")]
    FrameCount { op: Op, expected: usize, got: usize },
    #[error("malformed body: {0}")]
    Body(String),
    #[error("{0}")]
    BadRequest(String),
}

impl ProtocolError {
    /// The error code a broker replies with for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Version(_) => ErrorCode::UnsupportedVersion,
            ProtocolError::UnknownOp(_) => ErrorCode::UnknownOp,
            ProtocolError::BadRequest(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Malformed,
        }
    }
}
/// The bus's reading of a [`Header`]: the version is checked, and a header-only frame must be
/// exactly [`HEADER_LEN`] bytes.
impl Header {
    /// Parse a header-only frame. The version is checked; the op is not (see [`Header::op`]).
    pub fn decode(frame: &[u8]) -> Result<Header, ProtocolError> {
        if frame.len() != HEADER_LEN {
            return Err(ProtocolError::HeaderLength(frame.len()));
        }
        Header::decode_prefix(frame).map(|(h, _)| h)
    }

    /// Parse the header at the start of a frame; returns it and the bytes after it.
    pub fn decode_prefix(frame: &[u8]) -> Result<(Header, &[u8]), ProtocolError> {
        let (version, op, flags, content_type, request_id) =
            read_header(frame).ok_or(ProtocolError::HeaderLength(frame.len()))?;
        if version != VERSION {
            return Err(ProtocolError::Version(version));
        }
        let header = Header {
            op,
            flags,
            content_type,
            request_id,
        };
        Ok((header, &frame[HEADER_LEN..]))
    }

    /// The op, if it is one a bus endpoint may see: a space op is answered `UNKNOWN_OP` by
    /// the bus, as a byte no one defines is.
    pub fn op(&self) -> Result<Op, ProtocolError> {
        Op::from_u8(self.op)
            .filter(|op| !op.is_space())
            .ok_or(ProtocolError::UnknownOp(self.op))
    }
}

/// The broker's stamp on an event: 32 bytes after the topic's NUL in every event frame.
///
/// Layout (32 bytes): `[version u8][content type u8][kind u8][5 reserved zero bytes]
/// [offset u64 LE][topic sequence u64 LE][time: ns since the Unix epoch u64 LE]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// [`KIND_EVENT`] for events; [`KIND_BEACON`] for sequence beacons (no payload, not an
    /// event: `seq` is the topic's latest sequence, so a subscriber behind it missed events).
    pub kind: u8,
    /// Position in the broker's global log: strictly increasing, starting at 0.
    pub offset: u64,
    /// Per-topic sequence number: 1 for a topic's first event, then +1 per event.
    pub seq: u64,
    /// When the broker stamped the event, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The payload's [`ContentType`] byte, as the publisher sent it.
    pub content_type: u8,
}

impl Meta {
    /// The 32 meta bytes.
    #[inline]
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0] = VERSION;
        b[1] = self.content_type;
        b[2] = self.kind;
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.time_ns.to_le_bytes());
        b
    }

    /// Parse the 32 meta bytes.
    #[inline]
    pub fn decode(frame: &[u8; META_LEN]) -> Result<Meta, ProtocolError> {
        if frame[0] != VERSION {
            return Err(ProtocolError::Version(frame[0]));
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(frame[r].try_into().expect("8"));
        Ok(Meta {
            content_type: frame[1],
            kind: frame[2],
            offset: u(8..16),
            seq: u(16..24),
            time_ns: u(24..32),
        })
    }
}

/// Length of the publish frame for a topic and payload.
pub fn publish_len(topic: &[u8], payload: &[u8]) -> usize {
    HEADER_LEN + topic.len() + 1 + payload.len()
}

/// Build a publish frame: `header ‖ topic ‖ 0x00 ‖ payload`.
pub fn encode_publish(header: &Header, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(publish_len(topic, payload));
    frame.extend_from_slice(&header.encode());
    frame.extend_from_slice(topic);
    frame.push(0);
    frame.extend_from_slice(payload);
    frame
}

/// Build a publish frame with [`FLAG_ROOM`] (the header's flags must include it, and
/// [`FLAG_PRODUCER`] if `producer` is given): `header ‖ [producer id u64 LE][producer seq u64
/// LE] ‖ zero padding ‖ topic ‖ 0x00 ‖ payload`, the topic at [`PUBLISH_ROOM`], so the broker
/// turns the frame into its event in place ([`publish_into_event`]).
///
/// `write_payload` appends the payload to the frame (the SDK serializes straight into it, so
/// the payload is written once). `capacity` is a hint for the payload's size. The header can
/// be rewritten later in the first [`HEADER_LEN`] bytes (the SDK's I/O thread stamps the
/// request id there). Returns the frame and where the payload starts.
pub fn encode_room_publish<E>(
    header: &Header,
    producer: Option<(u64, u64)>,
    topic: &[u8],
    capacity: usize,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(Vec<u8>, usize), E> {
    let producer_len = if producer.is_some() { 16 } else { 0 };
    debug_assert!(HEADER_LEN + producer_len <= PUBLISH_ROOM);
    let start = PUBLISH_ROOM + topic.len() + 1;
    let mut frame = Vec::with_capacity(start + capacity);
    frame.extend_from_slice(&header.encode());
    if let Some((id, seq)) = producer {
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&seq.to_le_bytes());
    }
    frame.resize(PUBLISH_ROOM, 0);
    frame.extend_from_slice(topic);
    frame.push(0);
    write_payload(&mut frame)?;
    Ok((frame, start))
}

/// Split the bytes after a publish header into `(topic, payload)`. The topic ends at the first
/// NUL, which must come within `max_topic + 1` bytes.
pub fn split_topic(rest: &[u8], max_topic: usize) -> Result<(&[u8], &[u8]), ProtocolError> {
    let window = &rest[..rest.len().min(max_topic + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(i) => Ok((&rest[..i], &rest[i + 1..])),
        None => Err(ProtocolError::NoTopicEnd { max: max_topic }),
    }
}

/// Length of the event frame for a topic and payload.
#[inline]
pub fn event_len(topic_len: usize, payload_len: usize) -> usize {
    topic_len + 1 + META_LEN + payload_len
}

/// Write an event frame `topic ‖ 0x00 ‖ meta ‖ payload` into `out`, which must be exactly
/// [`event_len`] bytes long.
#[inline]
pub fn encode_event_into(out: &mut [u8], topic: &[u8], meta: &Meta, payload: &[u8]) {
    let t = topic.len();
    out[..t].copy_from_slice(topic);
    out[t] = 0;
    out[t + 1..t + 1 + META_LEN].copy_from_slice(&meta.encode());
    out[t + 1 + META_LEN..].copy_from_slice(payload);
}

/// Build an event frame as a vector.
pub fn encode_event(topic: &[u8], meta: &Meta, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; event_len(topic.len(), payload.len())];
    encode_event_into(&mut out, topic, meta, payload);
    out
}

/// Where the parts of an event frame are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLayout {
    /// Length of the topic (it starts at byte 0).
    pub topic_len: usize,
    /// The decoded meta.
    pub meta: Meta,
    /// Where the payload starts (it runs to the end of the frame).
    pub payload_start: usize,
}

/// Parse an event frame. The topic is not validated (the broker did that); callers that show
/// it check UTF-8.
#[inline]
pub fn decode_event(frame: &[u8]) -> Result<EventLayout, ProtocolError> {
    let window = &frame[..frame.len().min(crate::topic::MAX_TOPIC_LEN + 1)];
    let topic_len = window
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtocolError::NoTopicEnd {
            max: crate::topic::MAX_TOPIC_LEN,
        })?;
    let meta_start = topic_len + 1;
    let payload_start = meta_start + META_LEN;
    if frame.len() < payload_start {
        return Err(ProtocolError::EventLength(frame.len()));
    }
    let meta_bytes: &[u8; META_LEN] = frame[meta_start..payload_start]
        .try_into()
        .expect("META_LEN bytes");
    Ok(EventLayout {
        topic_len,
        meta: Meta::decode(meta_bytes)?,
        payload_start,
    })
}

/// Meta kind of an ordinary event.
pub const KIND_EVENT: u8 = 0;
/// Meta kind of a sequence beacon: sent on a topic after traffic, with the topic's latest
/// sequence and an empty payload, so subscribers detect events lost at the tail of a burst.
pub const KIND_BEACON: u8 = 1;

/// Body of an `Ok` reply to an acknowledged publish: `[offset u64 LE][topic sequence u64 LE]`.
pub fn encode_publish_ack(offset: u64, seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&offset.to_le_bytes());
    b[8..].copy_from_slice(&seq.to_le_bytes());
    b
}

/// Parse the body of a publish ack into `(offset, seq)`.
pub fn decode_publish_ack(body: &[u8]) -> Result<(u64, u64), ProtocolError> {
    if body.len() != 16 {
        return Err(ProtocolError::Body(format!(
            "publish ack is {} bytes, expected 16",
            body.len()
        )));
    }
    let offset = u64::from_le_bytes(body[..8].try_into().expect("8"));
    let seq = u64::from_le_bytes(body[8..].try_into().expect("8"));
    Ok((offset, seq))
}

/// Body of an error reply: frame 1 is the code (u16 LE), frame 2 the message.
pub fn encode_error_code(code: ErrorCode) -> [u8; 2] {
    code.encode()
}

/// Parse an error reply's frames (after the header) into a code and message.
pub fn decode_error(frames: &[&[u8]]) -> (ErrorCode, String) {
    let code = frames
        .first()
        .filter(|f| f.len() == 2)
        .map(|f| ErrorCode::from_u16(u16::from_le_bytes([f[0], f[1]])))
        .unwrap_or(ErrorCode::Internal);
    let msg = frames
        .get(1)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_else(|| "error reply without a message".to_string());
    (code, msg)
}

/// The reply to [`Op::Hello`]: where everything else is, and the broker's limits.
/// Encoded as a CBOR map with these field names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// Protocol version the broker speaks.
    pub version: u8,
    /// The XPUB endpoint to connect a SUB socket to.
    pub events: String,
    /// The tuple space's ROUTER endpoint, if the broker serves a space.
    pub space: Option<String>,
    /// The replay service's ROUTER endpoint (replay, durable subscriptions, gap healing),
    /// if the broker serves one. Absent from older brokers' HELLO.
    #[serde(default)]
    pub replay: Option<String>,
    /// Largest payload accepted, in bytes.
    pub max_payload: u64,
    /// Longest topic accepted, in bytes.
    pub max_topic: u64,
}

/// Encode a serde value as a CBOR reply body (HELLO, STATS).
pub fn encode_cbor_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail; a serialization error here means a broker bug.
    if let Err(e) = ciborium::into_writer(value, &mut out) {
        tracing::error!("cannot encode reply body: {e}");
        out.clear();
    }
    out
}

/// Decode a CBOR reply body.
pub fn decode_cbor_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    ciborium::from_reader(body)
        .map_err(|e| ProtocolError::Body(crate::text::cbor_error_message(&e)))
}

/// The statistics snapshot: the body of a STATS reply and of every `$sys.stats` event.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Seconds since the broker started.
    pub uptime_s: f64,
    /// Events accepted and stamped since start.
    pub events_in: u64,
    /// Event deliveries: for each event, the number of subscriptions whose prefix matched.
    pub events_out: u64,
    /// Publishes refused (oversize, bad or reserved topic, producer sequence gap).
    pub rejected: u64,
    /// Events sent while a slow subscriber's queue was full (it missed them; its SDK sees
    /// a sequence gap).
    pub dropped: u64,
    /// Active ZeroMQ subscriptions on the events socket.
    pub subscriptions: u64,
    /// Requests served on the request socket (all ops).
    pub requests: u64,
    /// Events per second over the last interval, all topics.
    pub rate_in: f64,
    /// Per-topic counters, for topics with traffic.
    pub topics: BTreeMap<String, TopicStats>,
}

/// Per-topic counters in [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopicStats {
    /// Events published on the topic since start.
    pub events: u64,
    /// Last sequence number stamped.
    pub seq: u64,
    /// Events per second over the last interval.
    pub rate: f64,
}

/// Prefix of the topics SYNC barriers are published on.
pub const SYNC_TOPIC_PREFIX: &str = "$sync.";

/// Whether `token` is an acceptable SYNC token.
pub fn valid_sync_token(token: &[u8]) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Whether `name` is an acceptable queue group name.
pub fn valid_group_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The topic the broker publishes its statistics on, once a second.
pub const STATS_TOPIC: &str = "$sys.stats";

/// Topics the space's events are published on: `$space.out`, `$space.take`,
/// `$space.expire` (payload: the tuple as CBOR).
pub const SPACE_TOPIC_PREFIX: &str = "$space.";

/// The offset of events that are not in the log: those the broker makes itself on
/// `$`-topics (`$sys.stats`, `$sync.*`, `$space.*`), which cannot be replayed.
pub const UNLOGGED_OFFSET: u64 = u64::MAX;

/// The address clients use when they name no broker, and where the broker listens by
/// default.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:7400";

// ---------------------------------------------------------------------------------------
// Replay and durable subscriptions (ops 0x10..0x1F, served on the replay endpoint)
// ---------------------------------------------------------------------------------------

/// Where a replay starts. CBOR: the text `"beginning"` or `"last"`, or a one-entry map
/// `{"offset": n}` / `{"time_ns": n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFrom {
    /// The oldest event the log still holds.
    Beginning,
    /// This offset (an error if retention removed it).
    Offset(u64),
    /// The first event stamped at or after this time (ns since the Unix epoch).
    TimeNs(u64),
    /// The last event of each topic that matches (the last-value cache), in offset order.
    Last,
}

/// Default number of batches a replay may have unacknowledged.
pub const DEFAULT_REPLAY_CREDIT: u32 = 8;

fn default_credit() -> u32 {
    DEFAULT_REPLAY_CREDIT
}

/// The body of a REPLAY request (CBOR map with these field names).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayRequest {
    /// Topic filters (as in subscriptions); an event matching any is sent once.
    pub filters: Vec<String>,
    /// Where to start. For a durable subscription, only used when the cursor is new.
    pub from: ReplayFrom,
    /// Stop before this offset (exclusive). Default: the log's end when the request
    /// arrived.
    #[serde(default)]
    pub until: Option<u64>,
    /// Batches the broker may send before the client grants more with CREDIT (default 8).
    #[serde(default = "default_credit")]
    pub credit: u32,
    /// Replay for the durable subscription of this name: start at its cursor (created at
    /// `from` if it does not exist yet).
    #[serde(default)]
    pub durable: Option<String>,
}

/// The `Ok` reply to a REPLAY: the range it will cover (CBOR map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayStart {
    /// The first offset it reads.
    pub start: u64,
    /// It ends before this offset.
    pub end: u64,
    /// A durable subscription whose cursor retention has passed resumes at the log's first
    /// offset: this many events between its cursor and there are gone (0, and left out of
    /// the map, otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expired: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Append one event to a replay batch body: `[u32 LE length][event frame]`.
pub fn push_batch_event(body: &mut Vec<u8>, topic: &[u8], meta: &Meta, payload: &[u8]) {
    let len = event_len(topic.len(), payload.len());
    body.extend_from_slice(&(len as u32).to_le_bytes());
    let start = body.len();
    body.resize(start + len, 0);
    encode_event_into(&mut body[start..], topic, meta, payload);
}

/// The event frames of a replay batch body, in order; an `Err` item (and the end) for a
/// body that is cut short.
pub fn batch_events(body: &[u8]) -> impl Iterator<Item = Result<&[u8], ProtocolError>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 4 {
            rest = &[];
            return Some(Err(ProtocolError::Body(
                "replay batch entry cut short".into(),
            )));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            rest = &[];
            return Some(Err(ProtocolError::Body(
                "replay batch entry cut short".into(),
            )));
        }
        let (frame, tail) = rest[4..].split_at(len);
        rest = tail;
        Some(Ok(frame))
    })
}

/// A little-endian u64 frame (replay progress, END, ACK offsets).
pub fn decode_u64(frame: &[u8]) -> Result<u64, ProtocolError> {
    let b: [u8; 8] = frame
        .try_into()
        .map_err(|_| ProtocolError::Body(format!("expected 8 bytes, got {}", frame.len())))?;
    Ok(u64::from_le_bytes(b))
}

/// The body of a REPLAY_END: `[end offset u64 LE][events sent u64 LE]`.
pub fn encode_replay_end(end: u64, sent: u64) -> [u8; 16] {
    encode_publish_ack(end, sent)
}

/// Parse a REPLAY_END body into `(end, sent)`.
pub fn decode_replay_end(body: &[u8]) -> Result<(u64, u64), ProtocolError> {
    decode_publish_ack(body)
}

/// Longest durable subscription name, in bytes.
pub const MAX_DURABLE_NAME: usize = 128;

/// Whether `name` is an acceptable durable subscription name: 1..=128 bytes of
/// `[A-Za-z0-9_.-]`.
pub fn valid_durable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DURABLE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            op: Op::Publish as u8,
            flags: FLAG_ACK,
            content_type: ContentType::Json as u8,
            request_id: 0x0102_0304_0506_0708,
        };
        let b = h.encode();
        assert_eq!(b[0], VERSION);
        assert_eq!(&b[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            Header::decode(b"short"),
            Err(ProtocolError::HeaderLength(5))
        );
        let mut b = Header::new(Op::Ping, 7).encode();
        b[0] = 9;
        assert_eq!(Header::decode(&b), Err(ProtocolError::Version(9)));
        assert_eq!(Header::salvage_request_id(&b), 7);
        let mut b = Header::new(Op::Ping, 7).encode();
        b[1] = 0x55;
        let h = Header::decode(&b).unwrap();
        assert_eq!(h.op(), Err(ProtocolError::UnknownOp(0x55)));
    }

    #[test]
    fn meta_round_trip() {
        let m = Meta {
            kind: KIND_BEACON,
            offset: 42,
            seq: 7,
            time_ns: 1_700_000_000_000_000_000,
            content_type: 0,
        };
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
        assert_eq!(Meta::decode(&[9; META_LEN]), Err(ProtocolError::Version(9)));
    }

    #[test]
    fn room_publish_becomes_its_event_in_place() {
        let meta = Meta {
            kind: KIND_EVENT,
            offset: 9,
            seq: 2,
            time_ns: 77,
            content_type: 0,
        };
        // Topics shorter and longer than the room (the move overlaps itself then).
        for topic in [
            "a",
            "orders.eu.created",
            &"t".repeat(crate::topic::MAX_TOPIC_LEN),
        ] {
            for producer_len in [0, 16] {
                let ee = u64::from_le_bytes([0xee; 8]);
                let producer = (producer_len > 0).then_some((ee, ee));
                let header = Header::new(Op::Publish, 1).with_flags(FLAG_ROOM);
                let (mut frame, start) =
                    encode_room_publish(&header, producer, topic.as_bytes(), 13, |f| {
                        f.extend_from_slice(b"payload\0bytes");
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                assert_eq!(start, PUBLISH_ROOM + topic.len() + 1);
                assert_eq!(&frame[start..], b"payload\0bytes");
                assert_eq!(frame[..HEADER_LEN], header.encode());
                assert!(frame[HEADER_LEN..HEADER_LEN + producer_len]
                    .iter()
                    .all(|b| *b == 0xee));
                assert!(frame[HEADER_LEN + producer_len..PUBLISH_ROOM]
                    .iter()
                    .all(|b| *b == 0));
                let rest = split_room(&frame[HEADER_LEN + producer_len..], producer_len).unwrap();
                let (t, payload) = split_topic(rest, crate::topic::MAX_TOPIC_LEN).unwrap();
                assert_eq!((t, payload), (topic.as_bytes(), &b"payload\0bytes"[..]));
                let expected = encode_event(topic.as_bytes(), &meta, b"payload\0bytes");
                publish_into_event(&mut frame, topic.len(), &meta);
                assert_eq!(frame, expected);
            }
        }
        // Shorter than the padding: 4 bytes with the producer fields, 20 without.
        assert!(split_room(&[0u8; 3], 16).is_err());
        assert!(split_room(&[0u8; 19], 0).is_err());
        assert_eq!(split_room(&[0u8; 20], 0).unwrap(), b"");
    }

    #[test]
    fn publish_and_event_frames() {
        let h = Header::new(Op::Publish, 3);
        let f = encode_publish(&h, b"a.b", b"\x00payload");
        let (h2, rest) = Header::decode_prefix(&f).unwrap();
        assert_eq!(h2, h);
        assert_eq!(
            split_topic(rest, 255).unwrap(),
            (&b"a.b"[..], &b"\x00payload"[..])
        );
        assert!(split_topic(b"abc", 255).is_err());
        assert!(split_topic(b"abcd\x00x", 2).is_err());

        let m = Meta {
            kind: KIND_EVENT,
            offset: 1,
            seq: 2,
            time_ns: 3,
            content_type: 0,
        };
        let e = encode_event(b"a.b", &m, b"xyz");
        assert_eq!(e.len(), event_len(3, 3));
        let l = decode_event(&e).unwrap();
        assert_eq!(
            (l.topic_len, l.meta, &e[l.payload_start..]),
            (3, m, &b"xyz"[..])
        );
        assert_eq!(
            decode_event(b"a.b\x00short"),
            Err(ProtocolError::EventLength(9))
        );
        assert!(decode_event(b"no-nul").is_err());
    }

    #[test]
    fn ack_and_error_bodies() {
        assert_eq!(
            decode_publish_ack(&encode_publish_ack(5, 9)).unwrap(),
            (5, 9)
        );
        assert!(decode_publish_ack(&[0; 3]).is_err());
        let code = encode_error_code(ErrorCode::PayloadTooLarge);
        let (c, m) = decode_error(&[&code, b"too big"]);
        assert_eq!(c, ErrorCode::PayloadTooLarge);
        assert_eq!(m, "too big");
        let (c, _) = decode_error(&[]);
        assert_eq!(c, ErrorCode::Internal);
    }

    #[test]
    fn hello_cbor_round_trip() {
        let h = Hello {
            version: 1,
            events: "tcp://127.0.0.1:5555".into(),
            space: None,
            replay: Some("tcp://127.0.0.1:5556".into()),
            max_payload: 10,
            max_topic: 255,
        };
        let b = encode_cbor_body(&h);
        assert_eq!(decode_cbor_body::<Hello>(&b).unwrap(), h);
        assert!(decode_cbor_body::<Hello>(b"\xff\x00").is_err());
    }

    #[test]
    fn replay_bodies_round_trip() {
        let req = ReplayRequest {
            filters: vec!["a.>".into()],
            from: ReplayFrom::Offset(7),
            until: None,
            credit: 4,
            durable: Some("d1".into()),
        };
        let b = encode_cbor_body(&req);
        assert_eq!(decode_cbor_body::<ReplayRequest>(&b).unwrap(), req);
        // Optional fields may be left out.
        #[derive(serde::Serialize)]
        struct Minimal {
            filters: Vec<String>,
            from: &'static str,
        }
        let b = encode_cbor_body(&Minimal {
            filters: vec![">".into()],
            from: "last",
        });
        let r: ReplayRequest = decode_cbor_body(&b).unwrap();
        assert_eq!(
            (r.from, r.credit, r.until),
            (ReplayFrom::Last, DEFAULT_REPLAY_CREDIT, None)
        );

        let m = Meta {
            kind: KIND_EVENT,
            offset: 9,
            seq: 1,
            time_ns: 2,
            content_type: 0,
        };
        let mut body = Vec::new();
        push_batch_event(&mut body, b"a.b", &m, b"xy");
        push_batch_event(&mut body, b"c", &m, b"");
        let frames: Vec<_> = batch_events(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], &encode_event(b"a.b", &m, b"xy")[..]);
        let cut = &body[..body.len() - 1];
        assert!(batch_events(cut).any(|r| r.is_err()));
        assert_eq!(decode_replay_end(&encode_replay_end(5, 3)).unwrap(), (5, 3));
        assert!(decode_u64(&[1, 2]).is_err());
        assert!(valid_durable_name("orders-eu.v1"));
        assert!(!valid_durable_name("") && !valid_durable_name("a b"));
    }
}
