//! Segment files, their sparse in-memory index, the recovery scan and the sidecar files.
//!
//! * `<base:020>.log`: the records whose offsets start at `base`.
//! * `<base:020>.idx`: written when the segment is sealed: its end offset, byte length, time
//!   range and sparse index, so recovery need not read sealed segments.
//! * `<base:020>.state`: written when the segment is created by a roll: the cumulative
//!   per-topic and per-producer state *before* its first record, so recovery only has to
//!   scan the segments after the newest valid `.state` (normally just the active one) and
//!   the state survives retention deleting old segments.
//!
//! Sidecars are written to a `.tmp` file and renamed, and carry a trailing CRC; an invalid
//! or mismatching sidecar is ignored (the segment is scanned instead).

use std::fs::{self, File};
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{crc_ok, decode_body, parse_header, Record, HEADER_LEN, MIN_BODY_LEN};

/// One sparse index entry: the record at byte `pos` has `offset` and `time_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    pub time_ns: u64,
}

/// What readers know about one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    /// Offset of the first record.
    pub base: u64,
    /// One past the last readable record.
    pub end: u64,
    /// Readable bytes (for the active segment: flushed bytes).
    pub len: u64,
    /// Time of the first record (0 if empty).
    pub first_time: u64,
    /// Time of the last record (0 if empty).
    pub last_time: u64,
    /// Sparse index, ascending.
    pub index: Vec<IndexEntry>,
}

impl SegMeta {
    /// An empty segment starting at `base`.
    pub fn empty(base: u64) -> SegMeta {
        SegMeta {
            base,
            end: base,
            len: 0,
            first_time: 0,
            last_time: 0,
            index: Vec::new(),
        }
    }

    /// The index entry to start reading from to find `offset`: `(offset, pos)`.
    pub fn seek_offset(&self, offset: u64) -> (u64, u64) {
        let k = self.index.partition_point(|e| e.offset <= offset);
        match k.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.offset, e.pos),
            None => (self.base, 0),
        }
    }

    /// The index entry to start reading from to find the first record with time >= `t`.
    pub fn seek_time(&self, t: u64) -> (u64, u64) {
        let k = self.index.partition_point(|e| e.time_ns < t);
        match k.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.offset, e.pos),
            None => (self.base, 0),
        }
    }
}

/// Cumulative state recovered from the log: last seq and offset per topic, last producer seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TopicState {
    /// Updated on every append: FxHash, because SipHash showed in the append profile.
    pub topics: rustc_hash::FxHashMap<String, (u64, u64)>,
    /// Producer id → (last sequence, time of its last record; 0 when not known yet, as for
    /// entries read from a state file, which stores no times).
    pub producers: rustc_hash::FxHashMap<u64, (u64, u64)>,
}

impl TopicState {
    /// Records one event.
    pub fn note(&mut self, rec: &Record<'_>) {
        match self.topics.get_mut(rec.topic) {
            Some(v) => *v = (rec.seq, rec.offset),
            None => {
                self.topics
                    .insert(rec.topic.to_owned(), (rec.seq, rec.offset));
            }
        }
        if let Some((id, pseq)) = rec.producer {
            self.producers.insert(id, (pseq, rec.time_ns));
        }
    }

    /// Forget the producers whose last record is older than `cutoff_ns`: their retries are
    /// long over, and without this every producer that ever published would be kept (in
    /// memory and in each segment's state file) for good.
    pub fn forget_producers_before(&mut self, cutoff_ns: u64) {
        self.producers.retain(|_, (_, seen)| *seen >= cutoff_ns);
    }

    /// Give the producers whose time is not known (read from a state file) the time `ns`.
    pub fn date_unknown_producers(&mut self, ns: u64) {
        for (_, seen) in self.producers.values_mut() {
            if *seen == 0 {
                *seen = ns;
            }
        }
    }
}

/// File name of the segment starting at `base`.
pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// File name of the sealed-segment summary.
pub(crate) fn idx_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// File name of the cumulative state at the start of a segment.
pub(crate) fn state_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.state"))
}

/// Parses `<20 digits>.<ext>` into the base offset.
pub(crate) fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Result of scanning one segment file.
#[derive(Debug)]
pub(crate) struct Scan {
    pub meta: SegMeta,
    /// First invalid record: byte position and why.
    pub corrupt: Option<(u64, String)>,
}

/// Reads a segment sequentially, checking lengths, CRCs, layout and offset contiguity.
///
/// Stops at the first bad record. Updates `state` (if given) for every good record.
pub(crate) fn scan_segment(
    path: &Path,
    base: u64,
    max_body: usize,
    index_interval: u64,
    mut state: Option<&mut TopicState>,
) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let mut meta = SegMeta::empty(base);
    let mut body = Vec::new();
    let mut pos = 0u64;
    let mut last_indexed: Option<u64> = None;
    let corrupt = loop {
        if pos == file_len {
            break None;
        }
        let mut h = [0u8; HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut h) {
            if e.kind() == ErrorKind::UnexpectedEof {
                break Some((pos, "torn record header".to_owned()));
            }
            return Err(e);
        }
        let (len, crc) = parse_header(&h);
        let len = len as usize;
        if !(MIN_BODY_LEN..=max_body).contains(&len) {
            break Some((pos, format!("implausible record length {len}")));
        }
        if pos + (HEADER_LEN + len) as u64 > file_len {
            break Some((pos, "torn record body".to_owned()));
        }
        body.resize(len, 0);
        if let Err(e) = rd.read_exact(&mut body) {
            if e.kind() == ErrorKind::UnexpectedEof {
                break Some((pos, "torn record body".to_owned()));
            }
            return Err(e);
        }
        if !crc_ok(&body, crc) {
            break Some((pos, "checksum mismatch".to_owned()));
        }
        let Some(rec) = decode_body(&body) else {
            break Some((pos, "malformed record body".to_owned()));
        };
        if rec.offset != meta.end {
            break Some((
                pos,
                format!("offset {} where {} was expected", rec.offset, meta.end),
            ));
        }
        let due = match last_indexed {
            None => true,
            Some(p) => pos - p >= index_interval,
        };
        if due {
            meta.index.push(IndexEntry {
                offset: rec.offset,
                pos,
                time_ns: rec.time_ns,
            });
            last_indexed = Some(pos);
        }
        if meta.end == base {
            meta.first_time = rec.time_ns;
        }
        meta.last_time = rec.time_ns;
        meta.end += 1;
        if let Some(s) = state.as_deref_mut() {
            s.note(&rec);
        }
        pos += (HEADER_LEN + len) as u64;
    };
    meta.len = pos;
    Ok(Scan { meta, corrupt })
}

const IDX_MAGIC: &[u8; 4] = b"AGLI";
const STATE_MAGIC: &[u8; 4] = b"AGLS";
const SIDECAR_VERSION: u32 = 1;

/// Writes `bytes` + crc to `path` atomically (tmp file + rename). Not fsynced: a sidecar
/// lost in a crash only makes the next recovery scan more.
fn write_sidecar(path: &Path, mut bytes: Vec<u8>) -> io::Result<()> {
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
    }
    fs::rename(&tmp, path)
}

/// Reads a sidecar, checking magic, version and crc; returns the payload after the header.
fn read_sidecar(path: &Path, magic: &[u8; 4]) -> Option<Vec<u8>> {
    let mut bytes = fs::read(path).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let split = bytes.len() - 4;
    let crc = u32::from_le_bytes(bytes[split..].try_into().ok()?);
    if crc32fast::hash(&bytes[..split]) != crc {
        return None;
    }
    if &bytes[..4] != magic || bytes[4..8] != SIDECAR_VERSION.to_le_bytes() {
        return None;
    }
    bytes.truncate(split);
    Some(bytes.split_off(8))
}

fn put(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn header(magic: &[u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1024);
    v.extend_from_slice(magic);
    v.extend_from_slice(&SIDECAR_VERSION.to_le_bytes());
    v
}

/// Bounds-checked little-endian reader over a sidecar payload.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
}

/// Writes the summary of a sealed segment.
pub(crate) fn write_idx(dir: &Path, m: &SegMeta) -> io::Result<()> {
    let mut v = header(IDX_MAGIC);
    v.reserve(8 * (6 + 3 * m.index.len()));
    for x in [m.base, m.end, m.len, m.first_time, m.last_time] {
        put(&mut v, x);
    }
    put(&mut v, m.index.len() as u64);
    for e in &m.index {
        put(&mut v, e.offset);
        put(&mut v, e.pos);
        put(&mut v, e.time_ns);
    }
    write_sidecar(&idx_path(dir, m.base), v)
}

/// Reads the summary of a sealed segment if it is valid for `base`.
pub(crate) fn read_idx(dir: &Path, base: u64) -> Option<SegMeta> {
    let bytes = read_sidecar(&idx_path(dir, base), IDX_MAGIC)?;
    let mut c = Cur(&bytes);
    let mut m = SegMeta::empty(c.u64()?);
    if m.base != base {
        return None;
    }
    m.end = c.u64()?;
    m.len = c.u64()?;
    m.first_time = c.u64()?;
    m.last_time = c.u64()?;
    let n = c.u64()?;
    if n.checked_mul(24)? != c.0.len() as u64 || m.end < m.base {
        return None;
    }
    for _ in 0..n {
        let offset = c.u64()?;
        let pos = c.u64()?;
        let time_ns = c.u64()?;
        m.index.push(IndexEntry {
            offset,
            pos,
            time_ns,
        });
    }
    Some(m)
}

/// Writes the cumulative state at the start of the segment `base`.
pub(crate) fn write_state(dir: &Path, base: u64, s: &TopicState) -> io::Result<()> {
    let mut v = header(STATE_MAGIC);
    put(&mut v, base);
    put(&mut v, s.topics.len() as u64);
    for (topic, (seq, offset)) in &s.topics {
        let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&topic.as_bytes()[..usize::from(len)]);
        put(&mut v, *seq);
        put(&mut v, *offset);
    }
    put(&mut v, s.producers.len() as u64);
    for (id, (seq, _)) in &s.producers {
        put(&mut v, *id);
        put(&mut v, *seq);
    }
    write_sidecar(&state_path(dir, base), v)
}

/// Reads the cumulative state at the start of segment `base`, if valid.
pub(crate) fn read_state(dir: &Path, base: u64) -> Option<TopicState> {
    let bytes = read_sidecar(&state_path(dir, base), STATE_MAGIC)?;
    let mut c = Cur(&bytes);
    if c.u64()? != base {
        return None;
    }
    let mut s = TopicState::default();
    let n = c.u64()?;
    for _ in 0..n {
        let len = usize::from(c.u16()?);
        let topic = std::str::from_utf8(c.take(len)?).ok()?.to_owned();
        let seq = c.u64()?;
        let offset = c.u64()?;
        s.topics.insert(topic, (seq, offset));
    }
    let n = c.u64()?;
    for _ in 0..n {
        let id = c.u64()?;
        let seq = c.u64()?;
        s.producers.insert(id, (seq, 0));
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let dir = Path::new("/d");
        assert_eq!(
            segment_path(dir, 42),
            PathBuf::from("/d/00000000000000000042.log")
        );
        assert_eq!(parse_name("00000000000000000042.log", "log"), Some(42));
        assert_eq!(parse_name("00000000000000000042.idx", "log"), None);
        assert_eq!(parse_name("42.log", "log"), None);
        assert_eq!(parse_name("0000000000000000004x.log", "log"), None);
        assert_eq!(parse_name("99999999999999999999.log", "log"), None);
    }

    #[test]
    fn sidecars_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = SegMeta::empty(100);
        m.end = 150;
        m.len = 5000;
        m.first_time = 1;
        m.last_time = 9;
        m.index.push(IndexEntry {
            offset: 100,
            pos: 0,
            time_ns: 1,
        });
        write_idx(dir.path(), &m).unwrap();
        let back = read_idx(dir.path(), 100).unwrap();
        assert_eq!(
            (back.end, back.len, back.index.clone()),
            (150, 5000, m.index)
        );
        assert!(read_idx(dir.path(), 101).is_none());

        let mut s = TopicState::default();
        let rec = |topic, seq, offset, producer| Record {
            offset,
            seq,
            time_ns: 1_000 + offset,
            content_type: 0,
            producer,
            topic,
            payload: b"",
        };
        s.note(&rec("a.b", 3, 120, Some((5, 6))));
        s.note(&rec("c", 1, 121, None));
        write_state(dir.path(), 150, &s).unwrap();
        // The file keeps no producer times: they come back unknown (0).
        let mut back = read_state(dir.path(), 150).unwrap();
        assert_eq!(back.producers[&5], (6, 0));
        back.date_unknown_producers(1_120);
        assert_eq!(back, s);
        // Flip a byte: rejected.
        let p = state_path(dir.path(), 150);
        let mut b = fs::read(&p).unwrap();
        b[12] ^= 1;
        fs::write(&p, b).unwrap();
        assert_eq!(read_state(dir.path(), 150), None);
    }

    #[test]
    fn producers_are_forgotten_once_their_last_record_is_older_than_the_cutoff() {
        let mut s = TopicState::default();
        let rec = |time_ns, producer| Record {
            offset: 0,
            seq: 1,
            time_ns,
            content_type: 0,
            producer,
            topic: "t",
            payload: b"",
        };
        s.note(&rec(100, Some((1, 1))));
        s.note(&rec(200, Some((2, 1))));
        s.note(&rec(300, Some((1, 2)))); // producer 1 again, later
        s.producers.insert(3, (9, 0));
        s.date_unknown_producers(250);
        s.forget_producers_before(250);
        let mut left: Vec<_> = s.producers.iter().map(|(id, v)| (*id, *v)).collect();
        left.sort();
        assert_eq!(left, [(1, (2, 300)), (3, (9, 250))]);
        assert_eq!(s.topics["t"], (1, 0), "topics are kept");
    }
}
