//! The tuple space's frames: every frame the space server and its clients exchange is built
//! and parsed here, by both sides. docs/PROTOCOL.md, "Tuple space", describes the same bytes
//! for people.
//!
//! Client `DEALER` (or `REQ`) → server `ROUTER`. A request is a multipart message: a 12-byte
//! [`Header`] frame `[version=1][op][flags][0][request id u64 LE]`, then op-specific frames.
//! Integers are little-endian. Replies echo the request id with op [`Op::Ok`] or
//! [`Op::Error`]; an error reply carries `code` (u16 LE) and `message` (UTF-8).
//!
//! Tuples and templates travel as CBOR, and this module carries them as those bytes, as the
//! bus carries a payload: it does not interpret them. The space's model (crate
//! `agora-tuplespace`, which depends on this one) encodes them (`Tuple::to_cbor`,
//! `Template::to_cbor`) and decodes them (`Tuple::from_cbor`, `Template::from_cbor`), and the
//! server answers a bad one with [`ErrorCode::BadTuple`] or [`ErrorCode::BadTemplate`].
//! [`Request`] and [`Reply`] are generic over the frame type, so that neither side copies a
//! tuple's bytes to get them through: the server decodes a request that borrows the received
//! frames, the SDK decodes a reply that keeps its received messages
//! ([`Reply::decode_frames`]), and both encode by moving their frames in
//! ([`Request::into_frames`], [`Reply::into_frames`]).
//!
//! Decoding never panics: garbage yields a [`DecodeError`] with the [`ErrorCode`] the server
//! sends back.

use std::ops::Deref;
use std::time::Duration;

pub use crate::error::ErrorCode;
use crate::header::read_header;
pub use crate::header::{Header, HEADER_LEN, VERSION};
pub use crate::op::Op;

/// Header flag: do not send an `Ok` reply (errors are still reported). Honoured by `OUT`,
/// `CONFIRM`, `RELEASE`, `CANCEL` and `PING`; the SDK sets it on `CONFIRM` and `RELEASE`.
pub const FLAG_NO_REPLY: u8 = 0x01;
/// Wire value of "wait forever" for timeouts and "no lease" for leases.
pub const FOREVER: u64 = u64::MAX;

/// A space message that does not follow the protocol: the code and message of the error
/// reply it gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The code an error reply carries for this problem.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

impl DecodeError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> DecodeError {
        DecodeError {
            code,
            message: message.into(),
        }
    }

    fn malformed(message: impl Into<String>) -> DecodeError {
        DecodeError::new(ErrorCode::Malformed, message)
    }
}

/// A duration as wire milliseconds (a lease, a timeout), the one rounding both sides use:
/// rounded up to a whole millisecond, so nothing waits or lives shorter than asked (1 µs is
/// 1 ms), and at most `FOREVER - 1` ([`FOREVER`] means forever).
pub fn wire_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(FOREVER - 1).min(FOREVER - 1)
}

/// How long a take/read may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Answer at once (`inp`/`rdp`). Wire: 0.
    NonBlocking,
    /// Wait at most this long. Wire: milliseconds ([`wire_ms`], at least 1).
    Timeout(Duration),
    /// Wait until a match. Wire: `u64::MAX` or an absent frame.
    Forever,
}

impl Wait {
    /// The wait a timeout frame's value means.
    pub fn from_ms(ms: u64) -> Wait {
        match ms {
            0 => Wait::NonBlocking,
            FOREVER => Wait::Forever,
            ms => Wait::Timeout(Duration::from_millis(ms)),
        }
    }

    /// The timeout frame's value. A timeout is at least 1 ms: 0 would mean "do not wait".
    pub fn to_ms(self) -> u64 {
        match self {
            Wait::NonBlocking => 0,
            Wait::Forever => FOREVER,
            Wait::Timeout(d) => wire_ms(d).max(1),
        }
    }
}

/// The header frame of a space message and its version byte, which is not checked here: the
/// server answers a wrong version naming the request id, so it reads the id first.
pub fn decode_header(frame: &[u8]) -> Result<(Header, u8), DecodeError> {
    let (version, op, flags, content_type, request_id) = read_header(frame)
        .filter(|_| frame.len() == HEADER_LEN)
        .ok_or_else(|| {
            DecodeError::malformed(format!(
                "header frame must be {HEADER_LEN} bytes, got {}",
                frame.len()
            ))
        })?;
    let header = Header {
        op,
        flags,
        content_type,
        request_id,
    };
    Ok((header, version))
}

/// Reads an 8-byte little-endian integer frame.
pub fn u64_frame(f: &[u8], what: &str) -> Result<u64, DecodeError> {
    let b: [u8; 8] = f.try_into().map_err(|_| {
        DecodeError::malformed(format!(
            "{what} frame must be 8 bytes (u64 LE), got {}",
            f.len()
        ))
    })?;
    Ok(u64::from_le_bytes(b))
}

/// A request. `F` is a frame holding a tuple's or a template's CBOR bytes: `&[u8]` as the
/// server decodes it from the frames it received, `Vec<u8>` as a client builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<F = Vec<u8>> {
    /// `OUT`
    Out {
        /// The tuple (CBOR).
        tuple: F,
        /// Its lease; `None` = forever.
        lease: Option<Duration>,
    },
    /// `TAKE`
    Take {
        /// What to take (CBOR template).
        template: F,
        /// How long to wait.
        wait: Wait,
    },
    /// `READ`
    Read {
        /// What to read (CBOR template).
        template: F,
        /// How long to wait.
        wait: Wait,
    },
    /// `TAKE_ALL`
    TakeAll {
        /// What to take (CBOR template).
        template: F,
        /// At most this many.
        max: u64,
    },
    /// `READ_ALL`
    ReadAll {
        /// What to read (CBOR template).
        template: F,
        /// At most this many.
        max: u64,
    },
    /// `COUNT`
    Count {
        /// What to count (CBOR template).
        template: F,
    },
    /// `DUMP`
    Dump {
        /// Only tuples matching this (CBOR template), if given.
        template: Option<F>,
    },
    /// `CONFIRM`: the reservation id.
    Confirm(u64),
    /// `RELEASE`: the reservation id.
    Release(u64),
    /// `CANCEL`: the request id of this client's blocked take/read.
    Cancel(u64),
    /// `PING`
    Ping,
}

impl<F> Request<F> {
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
            Request::Ping => Op::SpacePing,
        }
    }

    /// The same request with each tuple or template frame passed through `f`.
    pub fn map<G>(self, mut f: impl FnMut(F) -> G) -> Request<G> {
        match self {
            Request::Out { tuple, lease } => Request::Out {
                tuple: f(tuple),
                lease,
            },
            Request::Take { template, wait } => Request::Take {
                template: f(template),
                wait,
            },
            Request::Read { template, wait } => Request::Read {
                template: f(template),
                wait,
            },
            Request::TakeAll { template, max } => Request::TakeAll {
                template: f(template),
                max,
            },
            Request::ReadAll { template, max } => Request::ReadAll {
                template: f(template),
                max,
            },
            Request::Count { template } => Request::Count {
                template: f(template),
            },
            Request::Dump { template } => Request::Dump {
                template: template.map(f),
            },
            Request::Confirm(r) => Request::Confirm(r),
            Request::Release(r) => Request::Release(r),
            Request::Cancel(id) => Request::Cancel(id),
            Request::Ping => Request::Ping,
        }
    }

    /// The same request borrowing its frames.
    pub fn by_ref(&self) -> Request<&F> {
        match self {
            Request::Out { tuple, lease } => Request::Out {
                tuple,
                lease: *lease,
            },
            Request::Take { template, wait } => Request::Take {
                template,
                wait: *wait,
            },
            Request::Read { template, wait } => Request::Read {
                template,
                wait: *wait,
            },
            Request::TakeAll { template, max } => Request::TakeAll {
                template,
                max: *max,
            },
            Request::ReadAll { template, max } => Request::ReadAll {
                template,
                max: *max,
            },
            Request::Count { template } => Request::Count { template },
            Request::Dump { template } => Request::Dump {
                template: template.as_ref(),
            },
            Request::Confirm(r) => Request::Confirm(*r),
            Request::Release(r) => Request::Release(*r),
            Request::Cancel(id) => Request::Cancel(*id),
            Request::Ping => Request::Ping,
        }
    }
}

impl<F: Into<Vec<u8>>> Request<F> {
    /// The frames of this request, header first; its tuple or template frame is moved in.
    pub fn into_frames(self, request_id: u64, flags: u8) -> Vec<Vec<u8>> {
        let mut frames = Vec::with_capacity(3);
        frames.push(
            Header::new(self.op(), request_id)
                .with_flags(flags)
                .encode()
                .to_vec(),
        );
        let u64_frame = |n: u64| n.to_le_bytes().to_vec();
        match self {
            Request::Out { tuple, lease } => {
                frames.push(tuple.into());
                if let Some(l) = lease {
                    frames.push(u64_frame(wire_ms(l)));
                }
            }
            Request::Take { template, wait } | Request::Read { template, wait } => {
                frames.push(template.into());
                frames.push(u64_frame(wait.to_ms()));
            }
            Request::TakeAll { template, max } | Request::ReadAll { template, max } => {
                frames.push(template.into());
                frames.push(u64_frame(max));
            }
            Request::Count { template } => frames.push(template.into()),
            Request::Dump { template } => frames.extend(template.map(Into::into)),
            Request::Confirm(n) | Request::Release(n) | Request::Cancel(n) => {
                frames.push(u64_frame(n))
            }
            Request::Ping => {}
        }
        frames
    }
}

impl<F: AsRef<[u8]>> Request<F> {
    /// The frames of this request, header first, copying its tuple or template frame
    /// ([`Request::into_frames`] moves it).
    pub fn encode(&self, request_id: u64, flags: u8) -> Vec<Vec<u8>> {
        self.by_ref()
            .map(|f| f.as_ref())
            .into_frames(request_id, flags)
    }
}

impl<'a> Request<&'a [u8]> {
    /// Decodes the request body (the frames after the header) for an op byte, borrowing its
    /// tuple or template frame. An op of the bus is unknown here.
    pub fn decode(op: u8, body: &[&'a [u8]]) -> Result<Request<&'a [u8]>, DecodeError> {
        let Some(op) = Op::from_u8(op).filter(|o| o.is_space() || o.is_reply()) else {
            return Err(DecodeError::new(
                ErrorCode::UnknownOp,
                format!("unknown op 0x{op:02x}"),
            ));
        };
        let n = body.len();
        let arity = |min: usize, max: usize| -> Result<(), DecodeError> {
            if n < min || n > max {
                Err(DecodeError::malformed(format!(
                    "{op:?} takes {min}..={max} frames after the header, got {n}"
                )))
            } else {
                Ok(())
            }
        };
        Ok(match op {
            Op::Out => {
                arity(1, 2)?;
                let lease = match body.get(1) {
                    Some(f) => match u64_frame(f, "lease")? {
                        FOREVER => None,
                        ms => Some(Duration::from_millis(ms)),
                    },
                    None => None,
                };
                Request::Out {
                    tuple: body[0],
                    lease,
                }
            }
            Op::Take | Op::Read => {
                arity(1, 2)?;
                let wait = match body.get(1) {
                    Some(f) => Wait::from_ms(u64_frame(f, "timeout")?),
                    None => Wait::Forever,
                };
                let template = body[0];
                if op == Op::Take {
                    Request::Take { template, wait }
                } else {
                    Request::Read { template, wait }
                }
            }
            Op::TakeAll | Op::ReadAll => {
                arity(2, 2)?;
                let max = u64_frame(body[1], "max")?;
                let template = body[0];
                if op == Op::TakeAll {
                    Request::TakeAll { template, max }
                } else {
                    Request::ReadAll { template, max }
                }
            }
            Op::Count => {
                arity(1, 1)?;
                Request::Count { template: body[0] }
            }
            Op::Dump => {
                arity(0, 1)?;
                Request::Dump {
                    template: body.first().copied(),
                }
            }
            Op::Confirm => {
                arity(1, 1)?;
                Request::Confirm(u64_frame(body[0], "reservation id")?)
            }
            Op::Release => {
                arity(1, 1)?;
                Request::Release(u64_frame(body[0], "reservation id")?)
            }
            Op::Cancel => {
                arity(1, 1)?;
                Request::Cancel(u64_frame(body[0], "request id")?)
            }
            Op::SpacePing => {
                arity(0, 0)?;
                Request::Ping
            }
            _ => {
                return Err(DecodeError::new(
                    ErrorCode::UnknownOp,
                    format!("op 0x{:02x} is a reply, not a request", op as u8),
                ))
            }
        })
    }
}

/// A reply body (what follows the reply header), read in the light of the request's op. `F`
/// is a frame holding a tuple's CBOR bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<F = Vec<u8>> {
    /// `Ok` with no frames: OUT, CONFIRM, RELEASE, PING; and TAKE/READ that found nothing
    /// (non-blocking miss or timeout).
    Done,
    /// A TAKE/READ result; takes carry the reservation to confirm.
    Tuple {
        /// The tuple (CBOR).
        tuple: F,
        /// For takes: confirm (or release) this reservation id.
        reservation: Option<u64>,
    },
    /// TAKE_ALL / READ_ALL / DUMP results, oldest first. TAKE_ALL's reservation covers all.
    Tuples {
        /// For TAKE_ALL with at least one tuple: confirm (or release) this reservation id.
        reservation: Option<u64>,
        /// The tuples (CBOR).
        tuples: Vec<F>,
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

impl<F> From<DecodeError> for Reply<F> {
    fn from(e: DecodeError) -> Reply<F> {
        Reply::Error {
            code: e.code,
            message: e.message,
        }
    }
}

impl<F> Reply<F> {
    /// The same reply with each tuple frame passed through `f`.
    pub fn map<G>(self, mut f: impl FnMut(F) -> G) -> Reply<G> {
        match self {
            Reply::Done => Reply::Done,
            Reply::Tuple { tuple, reservation } => Reply::Tuple {
                tuple: f(tuple),
                reservation,
            },
            Reply::Tuples {
                reservation,
                tuples,
            } => Reply::Tuples {
                reservation,
                tuples: tuples.into_iter().map(f).collect(),
            },
            Reply::Count(n) => Reply::Count(n),
            Reply::Cancelled(b) => Reply::Cancelled(b),
            Reply::Error { code, message } => Reply::Error { code, message },
        }
    }

    /// The reservation a take's reply carries, if any.
    pub fn reservation(&self) -> Option<u64> {
        match self {
            Reply::Tuple { reservation, .. } | Reply::Tuples { reservation, .. } => *reservation,
            _ => None,
        }
    }
}

impl<F: Into<Vec<u8>>> Reply<F> {
    /// The frames of this reply to a request with `request_id`, header first; its tuple
    /// frames are moved in.
    pub fn into_frames(self, request_id: u64) -> Vec<Vec<u8>> {
        let op = if matches!(self, Reply::Error { .. }) {
            Op::Error
        } else {
            Op::Ok
        };
        let mut frames = Vec::with_capacity(3);
        frames.push(Header::new(op, request_id).encode().to_vec());
        match self {
            Reply::Done => {}
            Reply::Tuple { tuple, reservation } => {
                frames.push(tuple.into());
                if let Some(r) = reservation {
                    frames.push(r.to_le_bytes().to_vec());
                }
            }
            Reply::Tuples {
                reservation,
                tuples,
            } => {
                frames.reserve(tuples.len());
                frames.push(reservation.unwrap_or(0).to_le_bytes().to_vec());
                frames.extend(tuples.into_iter().map(Into::into));
            }
            Reply::Count(n) => frames.push(n.to_le_bytes().to_vec()),
            Reply::Cancelled(b) => frames.push(vec![u8::from(b)]),
            Reply::Error { code, message } => {
                frames.push(code.encode().to_vec());
                frames.push(message.into_bytes());
            }
        }
        frames
    }
}

impl<F: Deref<Target = [u8]>> Reply<F> {
    /// Decodes a whole reply message (header first) to a request whose op was `request_op`,
    /// keeping the frames it was given: a tuple comes back as the very frame it arrived in
    /// (`Vec<u8>`, `&[u8]`, or a received `zmq::Message`: anything that derefs to bytes).
    /// Returns the header's request id and the reply.
    pub fn decode_frames(
        request_op: Op,
        mut frames: Vec<F>,
    ) -> Result<(u64, Reply<F>), DecodeError> {
        if frames.is_empty() {
            return Err(DecodeError::malformed("empty reply"));
        }
        let (h, version) = decode_header(&frames[0])?;
        if version != VERSION {
            return Err(DecodeError::new(
                ErrorCode::UnsupportedVersion,
                format!("reply version {version} (expected {VERSION})"),
            ));
        }
        // The body is what follows the header; its frames move into the reply, no copy.
        frames.remove(0);
        let mut body = frames;
        let bad = DecodeError::malformed;
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
                Op::Take | Op::Read => match body.len() {
                    0 => Reply::Done,
                    1 | 2 => {
                        let reservation = match body.len() {
                            2 => Some(u64_frame(&body[1], "reservation id")?),
                            _ => None,
                        };
                        body.truncate(1);
                        let tuple = body.pop().expect("one frame");
                        Reply::Tuple { tuple, reservation }
                    }
                    _ => return Err(bad("take/read reply has too many frames")),
                },
                Op::TakeAll | Op::ReadAll | Op::Dump => {
                    let r = match body.first() {
                        Some(r) => u64_frame(r, "reservation id")?,
                        None => return Err(bad("bulk reply without a reservation frame")),
                    };
                    body.remove(0);
                    Reply::Tuples {
                        reservation: (r != 0).then_some(r),
                        tuples: body,
                    }
                }
                Op::Count => match body.as_slice() {
                    [n] => Reply::Count(u64_frame(n, "count")?),
                    _ => return Err(bad("count reply must have one frame")),
                },
                Op::Cancel => match body.as_slice() {
                    [b] if b.len() == 1 => Reply::Cancelled(b[0] != 0),
                    _ => return Err(bad("cancel reply must have one 1-byte frame")),
                },
                _ => Reply::Done,
            },
            _ => {
                return Err(DecodeError::new(
                    ErrorCode::UnknownOp,
                    format!("reply op 0x{:02x} is neither OK nor ERROR", h.op),
                ))
            }
        };
        Ok((h.request_id, reply))
    }
}

impl<F: AsRef<[u8]>> Reply<F> {
    /// The frames of this reply, header first, copying its tuple frames
    /// ([`Reply::into_frames`] moves them).
    pub fn encode(&self, request_id: u64) -> Vec<Vec<u8>> {
        let borrowed: Reply<&[u8]> = match self {
            Reply::Done => Reply::Done,
            Reply::Tuple { tuple, reservation } => Reply::Tuple {
                tuple: tuple.as_ref(),
                reservation: *reservation,
            },
            Reply::Tuples {
                reservation,
                tuples,
            } => Reply::Tuples {
                reservation: *reservation,
                tuples: tuples.iter().map(AsRef::as_ref).collect(),
            },
            Reply::Count(n) => Reply::Count(*n),
            Reply::Cancelled(b) => Reply::Cancelled(*b),
            Reply::Error { code, message } => Reply::Error {
                code: *code,
                message: message.clone(),
            },
        };
        borrowed.into_frames(request_id)
    }
}

impl Reply {
    /// [`Reply::decode_frames`] on borrowed frames: the reply owns copies of its tuple frames.
    pub fn decode(
        request_op: Op,
        frames: &[impl AsRef<[u8]>],
    ) -> Result<(u64, Reply), DecodeError> {
        let frames: Vec<&[u8]> = frames.iter().map(AsRef::as_ref).collect();
        Reply::decode_frames(request_op, frames).map(|(id, r)| (id, r.map(<[u8]>::to_vec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|f| f.as_slice()).collect()
    }

    // Stand-ins for CBOR frames: this module does not look inside them.
    fn tuple(n: u8) -> Vec<u8> {
        vec![0x82, 0x61, b'a', n]
    }
    fn template() -> Vec<u8> {
        vec![
            0x82, 0x82, 0x00, 0x61, b'a', 0x82, 0x01, 0x63, b'i', b'n', b't',
        ]
    }

    #[test]
    fn request_round_trips() {
        let t = template();
        let reqs: Vec<Request> = vec![
            Request::Out {
                tuple: tuple(1),
                lease: Some(Duration::from_millis(1500)),
            },
            Request::Out {
                tuple: vec![0x80],
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
            Request::Confirm(7),
            Request::Release(8),
            Request::Cancel(99),
            Request::Ping,
        ];
        for r in reqs {
            let f = r.encode(42, FLAG_NO_REPLY);
            assert_eq!(f, r.clone().into_frames(42, FLAG_NO_REPLY));
            let (h, version) = decode_header(&f[0]).unwrap();
            assert_eq!(version, VERSION);
            assert_eq!(h.request_id, 42);
            assert_eq!(h.flags, FLAG_NO_REPLY);
            assert_eq!(h.content_type, 0);
            let body = frames(&f[1..]);
            let back = Request::decode(h.op, &body).unwrap();
            assert_eq!(back.map(<[u8]>::to_vec), r);
        }
    }

    #[test]
    fn reply_round_trips() {
        let tup = tuple(5);
        let cases: Vec<(Op, Reply)> = vec![
            (Op::Out, Reply::Done),
            (Op::Take, Reply::Done),
            (
                Op::Take,
                Reply::Tuple {
                    tuple: tup.clone(),
                    reservation: Some(5),
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
                    reservation: Some(3),
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
            assert_eq!(f, r.clone().into_frames(9));
            let (id, back) = Reply::decode(op, &frames(&f)).unwrap();
            assert_eq!(id, 9);
            assert_eq!(back, r);
            // Decoding owned frames hands the very frames back.
            let (id, back) = Reply::decode_frames(op, f).unwrap();
            assert_eq!((id, back), (9, r));
        }
    }

    #[test]
    fn timeouts_and_leases_round_up_to_whole_ms() {
        assert_eq!(wire_ms(Duration::from_micros(1)), 1);
        assert_eq!(wire_ms(Duration::from_millis(250)), 250);
        assert_eq!(wire_ms(Duration::from_micros(1500)), 2);
        assert_eq!(wire_ms(Duration::MAX), FOREVER - 1);
        assert_eq!(wire_ms(Duration::ZERO), 0);
        assert_eq!(Wait::Timeout(Duration::ZERO).to_ms(), 1);
        assert_eq!(Wait::Timeout(Duration::from_micros(2500)).to_ms(), 3);
        assert_eq!(Wait::Timeout(Duration::MAX).to_ms(), FOREVER - 1);
        assert_eq!(Wait::from_ms(0), Wait::NonBlocking);
        assert_eq!(Wait::from_ms(FOREVER), Wait::Forever);
        // A lease of 1.5 ms is sent as 2 ms, a zero lease as 0 (expired at once).
        let out = |lease| {
            Request::Out {
                tuple: tuple(1),
                lease,
            }
            .encode(1, 0)
        };
        assert_eq!(
            out(Some(Duration::from_micros(1500)))[2],
            2u64.to_le_bytes()
        );
        assert_eq!(out(Some(Duration::ZERO))[2], 0u64.to_le_bytes());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_header(b"short").is_err());
        assert!(decode_header(&[0u8; 13]).is_err());
        let code = |r: Result<Request<&[u8]>, DecodeError>| r.unwrap_err().code;
        assert_eq!(code(Request::decode(0x55, &[])), ErrorCode::UnknownOp);
        // A bus op is unknown to the space, a reply op is not a request.
        assert_eq!(
            code(Request::decode(Op::Publish as u8, &[])),
            ErrorCode::UnknownOp
        );
        assert_eq!(
            code(Request::decode(Op::Ok as u8, &[])),
            ErrorCode::UnknownOp
        );
        assert_eq!(
            code(Request::decode(Op::Confirm as u8, &[b"123"])),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(Request::decode(Op::SpacePing as u8, &[b"x"])),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(Request::decode(Op::Out as u8, &[])),
            ErrorCode::Malformed
        );
        assert_eq!(
            code(Request::decode(Op::Take as u8, &[b"t", b"short"])),
            ErrorCode::Malformed
        );
        assert!(Reply::decode(Op::Take, &[] as &[&[u8]]).is_err());
        let h = Header::new(Op::Ok, 1).encode();
        assert!(Reply::decode(Op::Count, &[&h[..], b"xy"]).is_err());
        let h = Header::new(Op::Error, 1).encode();
        assert!(Reply::decode(Op::Count, &[&h[..], b"x"]).is_err());
        let mut h = Header::new(Op::Ok, 1).encode();
        h[0] = 2;
        assert_eq!(
            Reply::decode(Op::SpacePing, &[&h[..]]).unwrap_err().code,
            ErrorCode::UnsupportedVersion
        );
        // Every prefix/bit-flip of a valid request decodes or errors, never panics.
        let valid = Request::Take {
            template: template(),
            wait: Wait::Timeout(Duration::from_millis(5)),
        }
        .encode(1, 0);
        for frame in 1..valid.len() {
            let body = valid[frame].clone();
            for cut in 0..body.len() {
                let mut f = frames(&valid[1..]);
                f[frame - 1] = &body[..cut];
                let _ = Request::decode(Op::Take as u8, &f);
            }
            for i in 0..body.len() {
                let mut b = body.clone();
                b[i] ^= 0xff;
                let mut f = frames(&valid[1..]);
                f[frame - 1] = &b;
                let _ = Request::decode(Op::Take as u8, &f);
            }
        }
    }
}
