//! The on-disk record: `[u32 LE body length | CRC32C_BIT][u32 LE checksum(body)][body]`.
//!
//! The checksum is CRC-32C (Castagnoli, computed with the CPU's `crc32` instruction where
//! there is one) when bit 31 of the length word is set, which is how this version writes
//! every record; records without the bit (logs written before) carry a CRC-32 (IEEE) and are
//! read as such. A body is at most [`MAX_BODY_LEN`] bytes, so the bit is never part of a
//! length.
//!
//! Body layout (all integers little endian):
//!
//! | bytes | field                                             |
//! |-------|---------------------------------------------------|
//! | 8     | offset                                            |
//! | 8     | per-topic sequence                                |
//! | 8     | time, ns since the Unix epoch                     |
//! | 1     | content type                                      |
//! | 1     | producer flag (0 or 1)                            |
//! | 8+8   | producer id, producer sequence (only if flag = 1) |
//! | 2     | topic length                                      |
//! | n     | topic (UTF-8)                                     |
//! | rest  | payload                                           |

use std::io::{self, Write};

/// Bytes of the record header (length + crc).
pub const HEADER_LEN: usize = 8;
/// Set in the length word when the checksum is CRC-32C; clear for CRC-32 (IEEE).
const CRC32C_BIT: u32 = 1 << 31;
/// Largest body a record can have (the length word's low 31 bits).
pub const MAX_BODY_LEN: usize = (CRC32C_BIT - 1) as usize;
/// Smallest possible body: no producer, empty topic, empty payload.
pub const MIN_BODY_LEN: usize = 8 + 8 + 8 + 1 + 1 + 2;
/// Largest fixed part of a body (with producer), before topic and payload.
const MAX_FIXED_LEN: usize = MIN_BODY_LEN + 16;

/// One event as stored in the log, borrowing its topic and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Global position in the log (contiguous, starting at 0).
    pub offset: u64,
    /// Per-topic sequence number.
    pub seq: u64,
    /// Broker timestamp, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Content type code of the payload (opaque to the log).
    pub content_type: u8,
    /// `(producer id, producer sequence)` for idempotent publishes.
    pub producer: Option<(u64, u64)>,
    /// The topic.
    pub topic: &'a str,
    /// The payload bytes (never decoded by the log).
    pub payload: &'a [u8],
}

/// An owned copy of a [`Record`], as returned by [`LogReader::read`](super::LogReader::read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Global position in the log.
    pub offset: u64,
    /// Per-topic sequence number.
    pub seq: u64,
    /// Broker timestamp, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Content type code of the payload.
    pub content_type: u8,
    /// `(producer id, producer sequence)` if the publish carried one.
    pub producer: Option<(u64, u64)>,
    /// The topic.
    pub topic: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl OwnedRecord {
    /// Borrows this record as a [`Record`].
    pub fn as_record(&self) -> Record<'_> {
        Record {
            offset: self.offset,
            seq: self.seq,
            time_ns: self.time_ns,
            content_type: self.content_type,
            producer: self.producer,
            topic: &self.topic,
            payload: &self.payload,
        }
    }
}

impl From<Record<'_>> for OwnedRecord {
    fn from(r: Record<'_>) -> Self {
        OwnedRecord {
            offset: r.offset,
            seq: r.seq,
            time_ns: r.time_ns,
            content_type: r.content_type,
            producer: r.producer,
            topic: r.topic.to_owned(),
            payload: r.payload.to_vec(),
        }
    }
}

/// Records up to this many bytes, header included, are written from one stack buffer.
const SMALL_RECORD: usize = 256;

impl Record<'_> {
    /// Length of the encoded body in bytes.
    pub fn body_len(&self) -> usize {
        let fixed = if self.producer.is_some() {
            MAX_FIXED_LEN
        } else {
            MIN_BODY_LEN
        };
        fixed + self.topic.len() + self.payload.len()
    }

    /// Length of header plus body.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Writes header and body to `w`. The caller has checked that the topic fits in a
    /// `u16` and the body in a `u32`.
    pub(crate) fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut fixed = [0u8; MAX_FIXED_LEN];
        fixed[0..8].copy_from_slice(&self.offset.to_le_bytes());
        fixed[8..16].copy_from_slice(&self.seq.to_le_bytes());
        fixed[16..24].copy_from_slice(&self.time_ns.to_le_bytes());
        fixed[24] = self.content_type;
        let mut n = 26;
        if let Some((id, seq)) = self.producer {
            fixed[25] = 1;
            fixed[26..34].copy_from_slice(&id.to_le_bytes());
            fixed[34..42].copy_from_slice(&seq.to_le_bytes());
            n = 42;
        }
        let topic_len = u16::try_from(self.topic.len()).unwrap_or(u16::MAX);
        fixed[n..n + 2].copy_from_slice(&topic_len.to_le_bytes());
        n += 2;
        debug_assert!(self.body_len() <= MAX_BODY_LEN);
        let len_word = (self.body_len() as u32 & !CRC32C_BIT) | CRC32C_BIT;
        let total = HEADER_LEN + self.body_len();
        if total <= SMALL_RECORD {
            // A small record is assembled in one buffer: one checksum pass and one write
            // instead of three and four (small events are most of a busy log's records).
            let mut buf = [0u8; SMALL_RECORD];
            let topic_at = HEADER_LEN + n;
            let payload_at = topic_at + self.topic.len();
            buf[HEADER_LEN..topic_at].copy_from_slice(&fixed[..n]);
            buf[topic_at..payload_at].copy_from_slice(self.topic.as_bytes());
            buf[payload_at..total].copy_from_slice(self.payload);
            let crc = crc32c::crc32c(&buf[HEADER_LEN..total]);
            buf[0..4].copy_from_slice(&len_word.to_le_bytes());
            buf[4..8].copy_from_slice(&crc.to_le_bytes());
            return w.write_all(&buf[..total]);
        }
        let crc = crc32c::crc32c_append(crc32c::crc32c(&fixed[..n]), self.topic.as_bytes());
        let crc = crc32c::crc32c_append(crc, self.payload);
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&len_word.to_le_bytes());
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        w.write_all(&header)?;
        w.write_all(&fixed[..n])?;
        w.write_all(self.topic.as_bytes())?;
        w.write_all(self.payload)
    }
}

/// A record's stored checksum, of the kind its header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksum {
    /// CRC-32C, what this version writes.
    Crc32c(u32),
    /// CRC-32 (IEEE), in logs written before.
    Crc32(u32),
}

/// Parses a record header into `(body length, checksum)`.
pub(crate) fn parse_header(h: &[u8; HEADER_LEN]) -> (u32, Checksum) {
    let word = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    match word & CRC32C_BIT {
        0 => (word, Checksum::Crc32(crc)),
        _ => (word & !CRC32C_BIT, Checksum::Crc32c(crc)),
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Decodes a body whose CRC has already been checked. `None` if the layout is invalid.
pub(crate) fn decode_body(body: &[u8]) -> Option<Record<'_>> {
    let offset = u64_at(body, 0)?;
    let seq = u64_at(body, 8)?;
    let time_ns = u64_at(body, 16)?;
    let content_type = *body.get(24)?;
    let (producer, mut at) = match *body.get(25)? {
        0 => (None, 26),
        1 => (Some((u64_at(body, 26)?, u64_at(body, 34)?)), 42),
        _ => return None,
    };
    let tl = body.get(at..at + 2)?;
    let topic_len = usize::from(u16::from_le_bytes([tl[0], tl[1]]));
    at += 2;
    let topic = std::str::from_utf8(body.get(at..at + topic_len)?).ok()?;
    let payload = body.get(at + topic_len..)?;
    Some(Record {
        offset,
        seq,
        time_ns,
        content_type,
        producer,
        topic,
        payload,
    })
}

/// Checks `body` against its stored checksum.
pub(crate) fn crc_ok(body: &[u8], crc: Checksum) -> bool {
    match crc {
        Checksum::Crc32c(c) => crc32c::crc32c(body) == c,
        Checksum::Crc32(c) => crc32fast::hash(body) == c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_producer() {
        // Payload lengths around SMALL_RECORD: records written from one buffer and records
        // written piece by piece must read back alike.
        let big = vec![0x5au8; 2 * SMALL_RECORD];
        let fixed = |producer: bool| {
            HEADER_LEN
                + if producer {
                    MAX_FIXED_LEN
                } else {
                    MIN_BODY_LEN
                }
        };
        let mut cases = vec![(None, 5), (Some((7, 9)), 5), (None, 2 * SMALL_RECORD)];
        for producer in [None, Some((7, 9))] {
            let at_limit = SMALL_RECORD - fixed(producer.is_some()) - "a.b".len();
            cases.extend([at_limit - 1, at_limit, at_limit + 1].map(|len| (producer, len)));
        }
        for (producer, len) in cases {
            let r = Record {
                offset: 42,
                seq: 3,
                time_ns: 1_700_000_000_000_000_000,
                content_type: 2,
                producer,
                topic: "a.b",
                payload: &big[..len],
            };
            let mut buf = Vec::new();
            r.write_to(&mut buf).unwrap();
            assert_eq!(buf.len(), r.encoded_len());
            // The checksum covers the body as one run of bytes, however it was written.
            assert_eq!(
                buf[4..8],
                crc32c::crc32c(&buf[HEADER_LEN..]).to_le_bytes(),
                "payload {len}"
            );
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&buf[..HEADER_LEN]);
            let (len, crc) = parse_header(&h);
            assert_eq!(len as usize, r.body_len());
            let body = &buf[HEADER_LEN..];
            assert!(crc_ok(body, crc));
            assert_eq!(decode_body(body), Some(r));
            let owned = OwnedRecord::from(r);
            assert_eq!(owned.as_record(), r);
            // Any flipped bit of the body fails the check.
            let mut bad = body.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x10;
            assert!(!crc_ok(&bad, crc));
        }
    }

    #[test]
    fn records_from_older_logs_with_an_ieee_crc_still_read() {
        let r = Record {
            offset: 1,
            seq: 1,
            time_ns: 5,
            content_type: 0,
            producer: None,
            topic: "old.topic",
            payload: b"written before CRC-32C",
        };
        let mut buf = Vec::new();
        r.write_to(&mut buf).unwrap();
        // Rewrite the header as the previous version did: plain length, CRC-32 (IEEE).
        let body = buf[HEADER_LEN..].to_vec();
        buf[0..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        buf[4..8].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&buf[..HEADER_LEN]);
        let (len, crc) = parse_header(&h);
        assert_eq!(len as usize, body.len());
        assert_eq!(crc, Checksum::Crc32(crc32fast::hash(&body)));
        assert!(crc_ok(&body, crc));
        assert_eq!(decode_body(&body), Some(r));
        // The same bytes under the other checksum do not pass.
        assert!(!crc_ok(&body, Checksum::Crc32c(crc32fast::hash(&body))));
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(decode_body(&[]), None);
        assert_eq!(decode_body(&[0u8; 20]), None);
        let mut b = vec![0u8; MIN_BODY_LEN];
        b[25] = 2; // bad producer flag
        assert_eq!(decode_body(&b), None);
        let mut b = vec![0u8; MIN_BODY_LEN];
        b[26] = 10; // topic longer than the body
        assert_eq!(decode_body(&b), None);
        let mut b = vec![0u8; MIN_BODY_LEN + 1];
        b[26] = 1;
        b[MIN_BODY_LEN] = 0xff; // topic not UTF-8
        assert_eq!(decode_body(&b), None);
    }
}
