//! The 12-byte header that opens every request and reply, bus and space alike
//! (docs/PROTOCOL.md, "Requests"): `[version u8][op u8][flags u8][aux u8][request id u64 LE]`.
//! `aux` is the bus's content type and 0 for the space.

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
}
