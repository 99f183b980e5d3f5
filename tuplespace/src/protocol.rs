//! The tuple space's wire protocol: every frame the space server and its clients exchange is
//! built and parsed here, by both sides. docs/PROTOCOL.md ("Tuple space") describes the same bytes for
//! people.
//!
//! Client `DEALER` (or `REQ`) → server `ROUTER`. A request is a multipart message: a 12-byte
//! [`Header`] frame `[version=1][op][flags][0][request id u64 LE]`, then op-specific frames.
//! Tuples and templates travel as CBOR (the model's `to_cbor`/`from_cbor`), integers as
//! little-endian. Replies echo the request id with op [`Op::Ok`] or [`Op::Error`]; an error
//! reply carries `code` (u16 LE) and `message` (UTF-8).
//!
//! Decoding never panics: garbage yields an [`Error::Protocol`] with the [`ErrorCode`] the
//! server sends back.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::ReservationId;
use crate::template::Template;
use crate::value::Tuple;

/// Protocol version carried in every header.
pub const VERSION: u8 = 1;
pub use agora_wire::header::{read_header, write_header, HEADER_LEN};
/// Header flag: do not send an `Ok` reply (errors are still reported). Honoured by `OUT`,
/// `CONFIRM`, `RELEASE`, `CANCEL` and `PING`; the SDK sets it on `CONFIRM` and `RELEASE`.
pub const FLAG_NO_REPLY: u8 = 0x01;
/// Wire value of "wait forever" for timeouts and "no lease" for leases.
pub const FOREVER: u64 = u64::MAX;

/// Operation codes (header byte 1). The space owns 0x20..=0x3F; replies use 0x80/0x81 like
/// the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Write a tuple: frames `tuple`, optional `lease ms` (u64 LE).
    Out = 0x20,
    /// Take (Linda `in`): frames `template`, optional `timeout ms` (u64 LE).
    Take = 0x21,
    /// Read (Linda `rd`): frames `template`, optional `timeout ms`.
    Read = 0x22,
    /// Take up to `max` at once, never waits: frames `template`, `max` (u64 LE).
    TakeAll = 0x23,
    /// Read up to `max` at once: frames `template`, `max`.
    ReadAll = 0x24,
    /// Count matches: frame `template`.
    Count = 0x25,
    /// List tuples: optional frame `template`.
    Dump = 0x26,
    /// Confirm a reservation (the tuples are gone): frame `reservation id`.
    Confirm = 0x27,
    /// Release a reservation (the tuples go back): frame `reservation id`.
    Release = 0x28,
    /// Cancel this client's blocked take/read: frame `request id` of that request.
    Cancel = 0x29,
    /// Heartbeat / round trip; keeps this client's blocked requests alive.
    Ping = 0x2A,
    /// Success reply.
    Ok = 0x80,
    /// Error reply: frames `code` (u16 LE), `message` (UTF-8).
    Error = 0x81,
}

impl Op {
    /// The op for a header byte, if this protocol defines it.
    pub fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            0x20 => Op::Out,
            0x21 => Op::Take,
            0x22 => Op::Read,
            0x23 => Op::TakeAll,
            0x24 => Op::ReadAll,
            0x25 => Op::Count,
            0x26 => Op::Dump,
            0x27 => Op::Confirm,
            0x28 => Op::Release,
            0x29 => Op::Cancel,
            0x2A => Op::Ping,
            0x80 => Op::Ok,
            0x81 => Op::Error,
            _ => return None,
        })
    }

    /// `true` for the ops this module's space requests use (0x20..=0x3F range).
    pub fn is_space_op(b: u8) -> bool {
        (0x20..=0x3F).contains(&b)
    }
}

/// Error codes in error replies. 1..=8 mean the same as on the bus; 32.. are the space's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frames do not form a valid message (too short, wrong count, bad header).
    Malformed = 1,
    /// The op byte names no operation this server serves.
    UnknownOp = 2,
    /// The request is larger than the server's maximum.
    TooLarge = 3,
    /// The header's version byte is not one this server speaks.
    UnsupportedVersion = 5,
    /// The server failed internally (e.g. the write-ahead log could not be written).
    Internal = 6,
    /// Well formed, but an argument is invalid.
    BadRequest = 7,
    /// The server is shutting down.
    Unavailable = 8,
    /// The tuple frame is not a valid CBOR tuple.
    BadTuple = 32,
    /// The template frame is not a valid CBOR template.
    BadTemplate = 33,
    /// The reservation does not exist (already confirmed/released, or its lease ran out).
    UnknownReservation = 34,
}

impl ErrorCode {
    /// The code for a number; unknown numbers read as [`ErrorCode::Internal`].
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnknownOp,
            3 => ErrorCode::TooLarge,
            5 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::BadRequest,
            8 => ErrorCode::Unavailable,
            32 => ErrorCode::BadTuple,
            33 => ErrorCode::BadTemplate,
            34 => ErrorCode::UnknownReservation,
            _ => ErrorCode::Internal,
        }
    }
}

/// The first frame of every request and reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version ([`VERSION`]).
    pub version: u8,
    /// Op byte (an [`Op`], kept raw so unknown ops can be answered).
    pub op: u8,
    /// Flag bits ([`FLAG_NO_REPLY`]).
    pub flags: u8,
    /// Chosen by the client, echoed in the reply.
    pub request_id: u64,
}

impl Header {
    /// A version-1 header.
    pub fn new(op: Op, flags: u8, request_id: u64) -> Header {
        Header {
            version: VERSION,
            op: op as u8,
            flags,
            request_id,
        }
    }

    /// The 12 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        write_header(self.version, self.op, self.flags, 0, self.request_id)
    }

    /// Parses a header frame (exactly 12 bytes; the version is not checked here).
    pub fn decode(frame: &[u8]) -> Result<Header> {
        if frame.len() != HEADER_LEN {
            return Err(Error::protocol(
                ErrorCode::Malformed,
                format!(
                    "header frame must be {HEADER_LEN} bytes, got {}",
                    frame.len()
                ),
            ));
        }
        let (version, op, flags, _, request_id) =
            read_header(frame).expect("the length was checked");
        Ok(Header {
            version,
            op,
            flags,
            request_id,
        })
    }
}

/// How long a take/read may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Answer at once (`inp`/`rdp`). Wire: 0.
    NonBlocking,
    /// Wait at most this long. Wire: milliseconds (1..u64::MAX-1).
    Timeout(Duration),
    /// Wait until a match. Wire: `u64::MAX` or an absent frame.
    Forever,
}

impl Wait {
    fn from_ms(ms: u64) -> Wait {
        match ms {
            0 => Wait::NonBlocking,
            FOREVER => Wait::Forever,
            ms => Wait::Timeout(Duration::from_millis(ms)),
        }
    }

    fn to_ms(self) -> u64 {
        match self {
            Wait::NonBlocking => 0,
            Wait::Forever => FOREVER,
            Wait::Timeout(d) => (d.as_millis().clamp(1, (FOREVER - 1) as u128)) as u64,
        }
    }
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// `OUT`
    Out {
        /// The tuple.
        tuple: Tuple,
        /// Its lease; `None` = forever.
        lease: Option<Duration>,
    },
    /// `TAKE`
    Take {
        /// What to take.
        template: Template,
        /// How long to wait.
        wait: Wait,
    },
    /// `READ`
    Read {
        /// What to read.
        template: Template,
        /// How long to wait.
        wait: Wait,
    },
    /// `TAKE_ALL`
    TakeAll {
        /// What to take.
        template: Template,
        /// At most this many.
        max: u64,
    },
    /// `READ_ALL`
    ReadAll {
        /// What to read.
        template: Template,
        /// At most this many.
        max: u64,
    },
    /// `COUNT`
    Count {
        /// What to count.
        template: Template,
    },
    /// `DUMP`
    Dump {
        /// Only tuples matching this, if given.
        template: Option<Template>,
    },
    /// `CONFIRM`
    Confirm(ReservationId),
    /// `RELEASE`
    Release(ReservationId),
    /// `CANCEL`: the request id of this client's blocked take/read.
    Cancel(u64),
    /// `PING`
    Ping,
}

impl Request {
    /// This request's op.
    pub fn op(&self) -> Op {
        match self {
            Request::Out { .. } => Op::Out,
            Request::Take { .. } => Op::Take,
            Request::Read { .. } => Op::Read,
            Request::TakeAll { .. } => Op::TakeAll,
            Request::ReadAll { .. } => Op::ReadAll,
            Request::Count { .. } => Op::Count,
            Request::Dump { .. } => Op::Dump,
            Request::Confirm(_) => Op::Confirm,
            Request::Release(_) => Op::Release,
            Request::Cancel(_) => Op::Cancel,
            Request::Ping => Op::Ping,
        }
    }

    /// The frames of this request: header, then op-specific frames.
    pub fn encode(&self, request_id: u64, flags: u8) -> Vec<Vec<u8>> {
        let mut frames = vec![Header::new(self.op(), flags, request_id).encode().to_vec()];
        match self {
            Request::Out { tuple, lease } => {
                frames.push(tuple.to_cbor());
                if let Some(l) = lease {
                    let ms = l.as_millis().min((FOREVER - 1) as u128) as u64;
                    frames.push(ms.to_le_bytes().to_vec());
                }
            }
            Request::Take { template, wait } | Request::Read { template, wait } => {
                frames.push(template.to_cbor());
                frames.push(wait.to_ms().to_le_bytes().to_vec());
            }
            Request::TakeAll { template, max } | Request::ReadAll { template, max } => {
                frames.push(template.to_cbor());
                frames.push(max.to_le_bytes().to_vec());
            }
            Request::Count { template } => frames.push(template.to_cbor()),
            Request::Dump { template } => {
                if let Some(t) = template {
                    frames.push(t.to_cbor());
                }
            }
            Request::Confirm(r) | Request::Release(r) => frames.push(r.0.to_le_bytes().to_vec()),
            Request::Cancel(id) => frames.push(id.to_le_bytes().to_vec()),
            Request::Ping => {}
        }
        frames
    }

    /// Decodes the request body (the frames after the header) for an op byte.
    pub fn decode(op: u8, body: &[&[u8]]) -> Result<Request> {
        let Some(op) = Op::from_u8(op) else {
            return Err(Error::protocol(
                ErrorCode::UnknownOp,
                format!("unknown op 0x{op:02x}"),
            ));
        };
        let n = body.len();
        let arity = |min: usize, max: usize| -> Result<()> {
            if n < min || n > max {
                Err(Error::protocol(
                    ErrorCode::Malformed,
                    format!("{op:?} takes {min}..={max} frames after the header, got {n}"),
                ))
            } else {
                Ok(())
            }
        };
        Ok(match op {
            Op::Out => {
                arity(1, 2)?;
                let tuple = decode_tuple(body[0])?;
                let lease = match body.get(1) {
                    Some(f) => match u64_frame(f, "lease")? {
                        FOREVER => None,
                        ms => Some(Duration::from_millis(ms)),
                    },
                    None => None,
                };
                Request::Out { tuple, lease }
            }
            Op::Take | Op::Read => {
                arity(1, 2)?;
                let template = decode_template(body[0])?;
                let wait = match body.get(1) {
                    Some(f) => Wait::from_ms(u64_frame(f, "timeout")?),
                    None => Wait::Forever,
                };
                if op == Op::Take {
                    Request::Take { template, wait }
                } else {
                    Request::Read { template, wait }
                }
            }
            Op::TakeAll | Op::ReadAll => {
                arity(2, 2)?;
                let template = decode_template(body[0])?;
                let max = u64_frame(body[1], "max")?;
                if op == Op::TakeAll {
                    Request::TakeAll { template, max }
                } else {
                    Request::ReadAll { template, max }
                }
            }
            Op::Count => {
                arity(1, 1)?;
                Request::Count {
                    template: decode_template(body[0])?,
                }
            }
            Op::Dump => {
                arity(0, 1)?;
                Request::Dump {
                    template: match body.first() {
                        Some(f) => Some(decode_template(f)?),
                        None => None,
                    },
                }
            }
            Op::Confirm => {
                arity(1, 1)?;
                Request::Confirm(ReservationId(u64_frame(body[0], "reservation id")?))
            }
            Op::Release => {
                arity(1, 1)?;
                Request::Release(ReservationId(u64_frame(body[0], "reservation id")?))
            }
            Op::Cancel => {
                arity(1, 1)?;
                Request::Cancel(u64_frame(body[0], "request id")?)
            }
            Op::Ping => {
                arity(0, 0)?;
                Request::Ping
            }
            Op::Ok | Op::Error => {
                return Err(Error::protocol(
                    ErrorCode::UnknownOp,
                    format!("op 0x{:02x} is a reply, not a request", op as u8),
                ))
            }
        })
    }
}

/// A decoded reply body (what follows the reply header), read in the light of the request's
/// op.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `Ok` with no frames: OUT, CONFIRM, RELEASE, PING; and TAKE/READ that found nothing
    /// (non-blocking miss or timeout).
    Done,
    /// A TAKE/READ result; takes carry the reservation to confirm.
    Tuple {
        /// The tuple.
        tuple: Tuple,
        /// For takes: confirm (or release) this.
        reservation: Option<ReservationId>,
    },
    /// TAKE_ALL / READ_ALL / DUMP results, oldest first. TAKE_ALL's reservation covers all.
    Tuples {
        /// For TAKE_ALL with at least one tuple: confirm (or release) this.
        reservation: Option<ReservationId>,
        /// The tuples.
        tuples: Vec<Tuple>,
    },
    /// COUNT result.
    Count(u64),
    /// CANCEL result: `true` if a blocked request was removed (it gets no reply).
    Cancelled(bool),
    /// An error reply.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

impl Reply {
    /// The frames of this reply to a request with `request_id` (header first).
    pub fn encode(&self, request_id: u64) -> Vec<Vec<u8>> {
        let op = if matches!(self, Reply::Error { .. }) {
            Op::Error
        } else {
            Op::Ok
        };
        let mut frames = vec![Header::new(op, 0, request_id).encode().to_vec()];
        match self {
            Reply::Done => {}
            Reply::Tuple { tuple, reservation } => {
                frames.push(tuple.to_cbor());
                if let Some(r) = reservation {
                    frames.push(r.0.to_le_bytes().to_vec());
                }
            }
            Reply::Tuples {
                reservation,
                tuples,
            } => {
                frames.push(reservation.map_or(0, |r| r.0).to_le_bytes().to_vec());
                frames.extend(tuples.iter().map(|t| t.to_cbor()));
            }
            Reply::Count(n) => frames.push(n.to_le_bytes().to_vec()),
            Reply::Cancelled(b) => frames.push(vec![u8::from(*b)]),
            Reply::Error { code, message } => {
                frames.push((*code as u16).to_le_bytes().to_vec());
                frames.push(message.as_bytes().to_vec());
            }
        }
        frames
    }

    /// An error reply for a protocol error (other errors become [`ErrorCode::Internal`]).
    pub fn from_error(e: &Error) -> Reply {
        match e {
            Error::Protocol { code, message } | Error::Remote { code, message } => Reply::Error {
                code: *code,
                message: message.clone(),
            },
            Error::UnknownReservation(r) => Reply::Error {
                code: ErrorCode::UnknownReservation,
                message: format!("unknown reservation {r}"),
            },
            other => Reply::Error {
                code: ErrorCode::Internal,
                message: other.to_string(),
            },
        }
    }

    /// Decodes a whole reply message (header first) to a request whose op was `request_op`.
    /// Returns the header's request id and the reply.
    pub fn decode(request_op: Op, frames: &[&[u8]]) -> Result<(u64, Reply)> {
        let Some((first, body)) = frames.split_first() else {
            return Err(Error::protocol(ErrorCode::Malformed, "empty reply"));
        };
        let h = Header::decode(first)?;
        if h.version != VERSION {
            return Err(Error::protocol(
                ErrorCode::UnsupportedVersion,
                format!("reply version {} (expected {VERSION})", h.version),
            ));
        }
        let bad = |what: &str| Error::protocol(ErrorCode::Malformed, what.to_string());
        let reply = match Op::from_u8(h.op) {
            Some(Op::Error) => {
                let code = body
                    .first()
                    .filter(|f| f.len() == 2)
                    .map(|f| u16::from_le_bytes([f[0], f[1]]))
                    .ok_or_else(|| bad("error reply without a 2-byte code frame"))?;
                let message = body
                    .get(1)
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default();
                Reply::Error {
                    code: ErrorCode::from_u16(code),
                    message,
                }
            }
            Some(Op::Ok) => match request_op {
                Op::Take | Op::Read => match body {
                    [] => Reply::Done,
                    [t] => Reply::Tuple {
                        tuple: decode_tuple(t)?,
                        reservation: None,
                    },
                    [t, r] => Reply::Tuple {
                        tuple: decode_tuple(t)?,
                        reservation: Some(ReservationId(u64_frame(r, "reservation id")?)),
                    },
                    _ => return Err(bad("take/read reply has too many frames")),
                },
                Op::TakeAll | Op::ReadAll | Op::Dump => {
                    let (r, ts) = body
                        .split_first()
                        .ok_or_else(|| bad("bulk reply without a reservation frame"))?;
                    let r = u64_frame(r, "reservation id")?;
                    Reply::Tuples {
                        reservation: (r != 0).then_some(ReservationId(r)),
                        tuples: ts.iter().map(|t| decode_tuple(t)).collect::<Result<_>>()?,
                    }
                }
                Op::Count => match body {
                    [n] => Reply::Count(u64_frame(n, "count")?),
                    _ => return Err(bad("count reply must have one frame")),
                },
                Op::Cancel => match body {
                    [b] if b.len() == 1 => Reply::Cancelled(b[0] != 0),
                    _ => return Err(bad("cancel reply must have one 1-byte frame")),
                },
                _ => Reply::Done,
            },
            _ => {
                return Err(Error::protocol(
                    ErrorCode::UnknownOp,
                    format!("reply op 0x{:02x} is neither OK nor ERROR", h.op),
                ))
            }
        };
        Ok((h.request_id, reply))
    }
}

/// Reads an 8-byte little-endian integer frame.
pub fn u64_frame(f: &[u8], what: &str) -> Result<u64> {
    let b: [u8; 8] = f.try_into().map_err(|_| {
        Error::protocol(
            ErrorCode::Malformed,
            format!("{what} frame must be 8 bytes (u64 LE), got {}", f.len()),
        )
    })?;
    Ok(u64::from_le_bytes(b))
}

/// Decodes a tuple frame, mapping failures to [`ErrorCode::BadTuple`].
pub fn decode_tuple(f: &[u8]) -> Result<Tuple> {
    Tuple::from_cbor(f).map_err(|e| Error::protocol(ErrorCode::BadTuple, e.to_string()))
}

/// Decodes a template frame, mapping failures to [`ErrorCode::BadTemplate`].
pub fn decode_template(f: &[u8]) -> Result<Template> {
    Template::from_cbor(f).map_err(|e| Error::protocol(ErrorCode::BadTemplate, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Field, Kind};
    use crate::value::Value;

    fn frames(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|f| f.as_slice()).collect()
    }

    #[test]
    fn request_round_trips() {
        let t = Template(vec![
            Field::Actual(Value::from("a")),
            Field::Formal(Kind::Int),
        ]);
        let reqs = vec![
            Request::Out {
                tuple: Tuple(vec![Value::from("a"), Value::Int(1)]),
                lease: Some(Duration::from_millis(1500)),
            },
            Request::Out {
                tuple: Tuple(vec![]),
                lease: None,
            },
            Request::Take {
                template: t.clone(),
                wait: Wait::Timeout(Duration::from_millis(250)),
            },
            Request::Read {
                template: t.clone(),
                wait: Wait::NonBlocking,
            },
            Request::Take {
                template: t.clone(),
                wait: Wait::Forever,
            },
            Request::TakeAll {
                template: t.clone(),
                max: 10,
            },
            Request::ReadAll {
                template: t.clone(),
                max: 3,
            },
            Request::Count {
                template: t.clone(),
            },
            Request::Dump { template: None },
            Request::Dump {
                template: Some(t.clone()),
            },
            Request::Confirm(ReservationId(7)),
            Request::Release(ReservationId(8)),
            Request::Cancel(99),
            Request::Ping,
        ];
        for r in reqs {
            let f = r.encode(42, FLAG_NO_REPLY);
            let h = Header::decode(&f[0]).unwrap();
            assert_eq!(h.request_id, 42);
            assert_eq!(h.flags, FLAG_NO_REPLY);
            let body = frames(&f[1..]);
            let back = Request::decode(h.op, &body).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn reply_round_trips() {
        let tup = Tuple(vec![Value::from("x"), Value::Float(1.5)]);
        let cases = vec![
            (Op::Out, Reply::Done),
            (Op::Take, Reply::Done),
            (
                Op::Take,
                Reply::Tuple {
                    tuple: tup.clone(),
                    reservation: Some(ReservationId(5)),
                },
            ),
            (
                Op::Read,
                Reply::Tuple {
                    tuple: tup.clone(),
                    reservation: None,
                },
            ),
            (
                Op::TakeAll,
                Reply::Tuples {
                    reservation: Some(ReservationId(3)),
                    tuples: vec![tup.clone(), tup.clone()],
                },
            ),
            (
                Op::Dump,
                Reply::Tuples {
                    reservation: None,
                    tuples: vec![],
                },
            ),
            (Op::Count, Reply::Count(12)),
            (Op::Cancel, Reply::Cancelled(true)),
            (
                Op::Take,
                Reply::Error {
                    code: ErrorCode::BadTemplate,
                    message: "nope".into(),
                },
            ),
        ];
        for (op, r) in cases {
            let f = r.encode(9);
            let (id, back) = Reply::decode(op, &frames(&f)).unwrap();
            assert_eq!(id, 9);
            assert_eq!(back, r);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Header::decode(b"short").is_err());
        assert!(Header::decode(&[0u8; 13]).is_err());
        let e = Request::decode(0x55, &[]).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol {
                code: ErrorCode::UnknownOp,
                ..
            }
        ));
        let e = Request::decode(Op::Out as u8, &[b"\xff\x00garbage"]).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol {
                code: ErrorCode::BadTuple,
                ..
            }
        ));
        let e = Request::decode(Op::Take as u8, &[b"\x01\x02"]).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol {
                code: ErrorCode::BadTemplate,
                ..
            }
        ));
        let e = Request::decode(Op::Confirm as u8, &[b"123"]).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol {
                code: ErrorCode::Malformed,
                ..
            }
        ));
        let e = Request::decode(Op::Ping as u8, &[b"x"]).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol {
                code: ErrorCode::Malformed,
                ..
            }
        ));
        assert!(Reply::decode(Op::Take, &[]).is_err());
        let h = Header::new(Op::Ok, 0, 1).encode();
        assert!(Reply::decode(Op::Count, &[&h, b"xy"]).is_err());
        // Every prefix/bit-flip of a valid request decodes or errors, never panics.
        let valid = Request::Out {
            tuple: Tuple(vec![Value::from("a"), Value::Array(vec![Value::Int(1)])]),
            lease: None,
        }
        .encode(1, 0);
        let body = valid[1].clone();
        for cut in 0..body.len() {
            let _ = Request::decode(Op::Out as u8, &[&body[..cut]]);
        }
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] ^= 0xff;
            let _ = Request::decode(Op::Out as u8, &[&b]);
        }
    }
}
