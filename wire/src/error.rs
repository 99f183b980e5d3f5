//! The error codes of error replies, both protocols: docs/PROTOCOL.md, "Error replies" (the
//! bus) and "Tuple space" / "Error reply". Codes 1..=8 mean the same on both; 9..=11 are the
//! bus's own, 32.. the space's.

/// Error codes carried in error replies (a u16 LE frame after the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frames do not form a valid message (too short, wrong count, bad header).
    Malformed = 1,
    /// The op byte names no operation this endpoint serves.
    UnknownOp = 2,
    /// Over a limit: a publish's payload is larger than the broker's maximum
    /// (PAYLOAD_TOO_LARGE), a space request (the sum of its frames) larger than the server's
    /// (TOO_LARGE). Also spelled [`ErrorCode::PayloadTooLarge`].
    TooLarge = 3,
    /// The topic is not a valid topic (see docs/PROTOCOL.md).
    BadTopic = 4,
    /// The header's version byte is not one this endpoint speaks.
    UnsupportedVersion = 5,
    /// The server failed internally while serving the request (e.g. the event log or the
    /// space's write-ahead log could not be written).
    Internal = 6,
    /// The request is well formed but its arguments are invalid.
    BadRequest = 7,
    /// The server is shutting down or cannot serve this now.
    Unavailable = 8,
    /// A producer's publish skipped a sequence number; resend from the expected one.
    OutOfOrder = 9,
    /// A replay asked for events the log no longer holds (retention removed them); the
    /// message says which offset is the oldest available.
    Truncated = 10,
    /// The durable subscription named does not exist.
    UnknownDurable = 11,
    /// The tuple frame is not a valid CBOR tuple.
    BadTuple = 32,
    /// The template frame is not a valid CBOR template.
    BadTemplate = 33,
    /// The reservation does not exist (already confirmed/released, or its lease ran out).
    UnknownReservation = 34,
}

#[allow(non_upper_case_globals)]
impl ErrorCode {
    /// Code 3 by the bus's name for it (PAYLOAD_TOO_LARGE): the same value as
    /// [`ErrorCode::TooLarge`], usable in patterns.
    pub const PayloadTooLarge: ErrorCode = ErrorCode::TooLarge;

    /// The code for a number; unknown numbers read as [`ErrorCode::Internal`] (PROTOCOL.md:
    /// "treat any code you do not know like this").
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnknownOp,
            3 => ErrorCode::TooLarge,
            4 => ErrorCode::BadTopic,
            5 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::BadRequest,
            8 => ErrorCode::Unavailable,
            9 => ErrorCode::OutOfOrder,
            10 => ErrorCode::Truncated,
            11 => ErrorCode::UnknownDurable,
            32 => ErrorCode::BadTuple,
            33 => ErrorCode::BadTemplate,
            34 => ErrorCode::UnknownReservation,
            _ => ErrorCode::Internal,
        }
    }

    /// The code's frame in an error reply: u16 LE.
    pub fn encode(self) -> [u8; 2] {
        (self as u16).to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_reads_internal() {
        for v in 0..=u16::from(u8::MAX) {
            let code = ErrorCode::from_u16(v);
            if code != ErrorCode::Internal {
                assert_eq!(code as u16, v);
            }
        }
        assert_eq!(ErrorCode::from_u16(3), ErrorCode::PayloadTooLarge);
        assert_eq!(ErrorCode::from_u16(34), ErrorCode::UnknownReservation);
        assert_eq!(ErrorCode::from_u16(12), ErrorCode::Internal);
        assert_eq!(ErrorCode::BadTemplate.encode(), [33, 0]);
        assert!(matches!(ErrorCode::TooLarge, ErrorCode::PayloadTooLarge));
    }
}
