//! The 12-byte header that opens every request and reply, bus and space alike: docs/PROTOCOL.md,
//! "Requests and replies" / "Header (12 bytes)" and "Tuple space" / "Header (12 bytes)".
//! `[version u8][op u8][flags u8][aux u8][request id u64 LE]`; `aux` is the bus's content type
//! and 0 for the space.
//!
//! [`Header`] is the one header type of both protocols. What a malformed one is answered with
//! differs between them (PROTOCOL.md says how), so each protocol reads it with its own checks:
//! [`Header::decode`] and [`Header::decode_prefix`] for the bus (in [`crate::bus`]),
//! [`crate::space::decode_header`] for the space.

use crate::op::Op;

/// Protocol version carried in every header (and in the bus's event meta).
pub const VERSION: u8 = 1;

/// Length of the header frame (or of the header at the start of a publish frame).
pub const HEADER_LEN: usize = 12;

/// The header bytes:
/// `[version u8][op u8][flags u8][aux u8][request id u64 LE]` (`aux` is the bus's content type,
/// 0 for the space). The one place this layout is written.
pub fn write_header(version: u8, op: u8, flags: u8, aux: u8, request_id: u64) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0] = version;
    b[1] = op;
    b[2] = flags;
    b[3] = aux;
    b[4..12].copy_from_slice(&request_id.to_le_bytes());
    b
}

/// The fields of the header at the start of `frame`: `(version, op, flags, aux, request
/// id)`, or `None` if the frame is shorter than [`HEADER_LEN`].
pub fn read_header(frame: &[u8]) -> Option<(u8, u8, u8, u8, u64)> {
    let b: &[u8; HEADER_LEN] = frame.get(..HEADER_LEN)?.try_into().ok()?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[4..12]);
    Some((b[0], b[1], b[2], b[3], u64::from_le_bytes(id)))
}

/// The first frame of every request and reply, bus and space. Its version is [`VERSION`]:
/// a header that decodes has had its version checked (or, in the space, is answered with
/// `UNSUPPORTED_VERSION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Operation (the raw byte, so an unknown op can still be answered; see [`Op`]).
    pub op: u8,
    /// Op-specific flags (the bus's publish flags, the space's `NO_REPLY`).
    pub flags: u8,
    /// Byte 3, the aux byte: a publish's content type on the bus
    /// ([`ContentType`](crate::bus::ContentType)); 0 in every other message, bus and space.
    pub content_type: u8,
    /// Chosen by the client, echoed in the reply. 0 is allowed (the replies to a header that
    /// cannot be read also carry 0).
    pub request_id: u64,
}

impl Header {
    /// A header for `op` with the given request id, no flags, aux byte 0.
    pub fn new(op: impl Into<Op>, request_id: u64) -> Header {
        Header {
            op: op.into() as u8,
            flags: 0,
            content_type: 0,
            request_id,
        }
    }

    /// This header with `flags`.
    pub fn with_flags(self, flags: u8) -> Header {
        Header { flags, ..self }
    }

    /// The 12 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        write_header(
            VERSION,
            self.op,
            self.flags,
            self.content_type,
            self.request_id,
        )
    }

    /// The request id in a frame that looks like a header but may be malformed otherwise, so
    /// that an error reply can still name the request (0 if the frame is too short).
    pub fn salvage_request_id(frame: &[u8]) -> u64 {
        read_header(frame).map_or(0, |(.., request_id)| request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let b = write_header(1, 0x21, 0x01, 2, 0x0102_0304_0506_0708);
        assert_eq!(b, [1, 0x21, 1, 2, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(
            read_header(&b),
            Some((1, 0x21, 1, 2, 0x0102_0304_0506_0708))
        );
        assert_eq!(read_header(&b[..11]), None);
    }

    #[test]
    fn new_header_has_no_flags_and_aux_zero() {
        let h = Header::new(Op::Take, 9).with_flags(0x01);
        assert_eq!(h.encode(), [1, 0x21, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Header::salvage_request_id(&h.encode()), 9);
        assert_eq!(Header::salvage_request_id(&[1, 2, 3]), 0);
    }
}
