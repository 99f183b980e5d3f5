//! Readers: replay flushed records from any offset or time, on any thread.
//!
//! A reader only ever reads below the writer's published *flushed* position, so it never
//! sees a half-written record. It finds its start through the per-segment sparse index
//! (binary search over segments, then over index entries) and then reads sequentially,
//! keeping its file handle and position between calls so a replay that continues where it
//! stopped costs no seek.

use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::record::{
    crc_ok, decode_body, parse_header, Checksum, Record, HEADER_LEN, MIN_BODY_LEN,
};
use super::segment::segment_path;
use super::{LogError, OwnedRecord, Shared};
use crate::boundary::EventReader;

/// Read buffer of a reader.
const READ_BUFFER: usize = 64 << 10;

struct Cursor {
    base: u64,
    rd: BufReader<File>,
    /// Byte position of the next record in the file.
    pos: u64,
    /// Offset of the record at `pos`.
    next: u64,
}

/// Where to read in one segment, copied out of the shared view.
struct Plan {
    base: u64,
    /// One past the last readable record of the segment.
    end: u64,
    /// Readable bytes of the segment.
    len: u64,
    /// Index entry to start from: `(offset, pos)`.
    start: (u64, u64),
}

/// An independent reader of an [`EventLog`](super::EventLog). `Send`; create one per
/// thread with [`EventLog::reader`](super::EventLog::reader) (or [`LogReader::clone`]).
pub struct LogReader {
    shared: Arc<Shared>,
    cur: Option<Cursor>,
    body: Vec<u8>,
}

impl Clone for LogReader {
    /// A new reader over the same log, with its own file handles.
    fn clone(&self) -> Self {
        LogReader::new(self.shared.clone())
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>) -> LogReader {
        LogReader {
            shared,
            cur: None,
            body: Vec::new(),
        }
    }

    /// The oldest offset still stored.
    pub fn first_offset(&self) -> u64 {
        self.shared.read().first_offset
    }

    /// One past the last record readers may see (flushed by the writer).
    pub fn end_offset(&self) -> u64 {
        self.shared.read().flushed_offset
    }

    /// Reads up to `max_records` records starting at `from_offset`, stopping early once
    /// `max_bytes` of topic + payload have been collected (at least one record is returned
    /// if any is available). An empty result means `from_offset` is at the end.
    pub fn read(
        &mut self,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<OwnedRecord>, LogError> {
        let mut out = Vec::new();
        self.read_with(from_offset, max_records, max_bytes, |r| {
            out.push(OwnedRecord::from(r))
        })?;
        Ok(out)
    }

    /// Like [`read`](Self::read) but lends each record to `f` instead of copying it.
    /// Returns the offset to continue from (one past the last record delivered, or
    /// `from_offset` if none was).
    pub fn read_with(
        &mut self,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
        mut f: impl FnMut(Record<'_>),
    ) -> Result<u64, LogError> {
        let mut from = from_offset;
        let mut count = 0usize;
        let mut bytes = 0usize;
        if max_records == 0 {
            return Ok(from);
        }
        loop {
            let Some(plan) = self.plan_offset(from)? else {
                return Ok(from);
            };
            self.position(&plan, from)?;
            while let Some(rec) = self.next_record(plan.len)? {
                if rec.offset < from {
                    continue;
                }
                from = rec.offset + 1;
                count += 1;
                bytes += rec.topic.len() + rec.payload.len();
                f(rec);
                if count >= max_records || bytes >= max_bytes {
                    return Ok(from);
                }
            }
            if from < plan.end {
                return Err(self.corrupt(plan.base, "segment ends before its last record"));
            }
        }
    }

    /// The first offset whose record has `time_ns >= t`, or the end offset if none does.
    /// Assumes timestamps do not decrease along the log (the broker stamps them so).
    pub fn offset_for_time(&mut self, t: u64) -> Result<u64, LogError> {
        let plan = {
            let v = self.shared.read();
            let i = v
                .segments
                .partition_point(|s| s.end > s.base && s.last_time < t);
            match v.segments.get(i) {
                Some(s) if s.end > s.base => Plan {
                    base: s.base,
                    end: s.end,
                    len: s.len,
                    start: s.seek_time(t),
                },
                _ => return Ok(v.flushed_offset),
            }
        };
        let from = plan.start.0;
        self.position(&plan, from)?;
        while let Some(rec) = self.next_record(plan.len)? {
            if rec.time_ns >= t {
                return Ok(rec.offset);
            }
        }
        Ok(plan.end)
    }

    /// Finds the segment holding `from`; `None` when `from` is at or past the end.
    fn plan_offset(&self, from: u64) -> Result<Option<Plan>, LogError> {
        let v = self.shared.read();
        if from < v.first_offset {
            return Err(LogError::Truncated {
                requested: from,
                first_available: v.first_offset,
            });
        }
        if from >= v.flushed_offset {
            return Ok(None);
        }
        let i = v.segments.partition_point(|s| s.base <= from);
        let Some(s) = i.checked_sub(1).and_then(|i| v.segments.get(i)) else {
            return Err(LogError::Truncated {
                requested: from,
                first_available: v.first_offset,
            });
        };
        if from >= s.end {
            return Err(LogError::Corrupt {
                path: segment_path(&self.shared.dir, s.base),
                position: s.len,
                reason: format!("offset {from} falls after the segment's end {}", s.end),
            });
        }
        Ok(Some(Plan {
            base: s.base,
            end: s.end,
            len: s.len,
            start: s.seek_offset(from),
        }))
    }

    /// Moves the cursor to read `plan`'s segment at or before `from`, reusing the open file
    /// and current position when they are already suitable.
    fn position(&mut self, plan: &Plan, from: u64) -> Result<(), LogError> {
        let (start_off, start_pos) = plan.start;
        if let Some(c) = &self.cur {
            if c.base == plan.base && c.next <= from && c.next >= start_off {
                return Ok(());
            }
        }
        let reuse = matches!(&self.cur, Some(c) if c.base == plan.base);
        if !reuse {
            let path = segment_path(&self.shared.dir, plan.base);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // Deleted by retention since we looked.
                    let first = self.first_offset();
                    return Err(LogError::Truncated {
                        requested: from,
                        first_available: first,
                    });
                }
                Err(source) => {
                    return Err(LogError::Io {
                        op: "open",
                        path,
                        source,
                    })
                }
            };
            self.cur = Some(Cursor {
                base: plan.base,
                rd: BufReader::with_capacity(READ_BUFFER, file),
                pos: 0,
                next: plan.base,
            });
        }
        if let Some(c) = &mut self.cur {
            if let Err(source) = c.rd.seek(SeekFrom::Start(start_pos)) {
                let path = segment_path(&self.shared.dir, plan.base);
                self.cur = None;
                return Err(LogError::Io {
                    op: "seek",
                    path,
                    source,
                });
            }
            c.pos = start_pos;
            c.next = start_off;
        }
        Ok(())
    }

    fn corrupt(&self, base: u64, reason: &str) -> LogError {
        LogError::Corrupt {
            path: segment_path(&self.shared.dir, base),
            position: self.cur.as_ref().map_or(0, |c| c.pos),
            reason: reason.to_owned(),
        }
    }

    /// Reads the record at the cursor if it lies below `limit` bytes.
    fn next_record(&mut self, limit: u64) -> Result<Option<Record<'_>>, LogError> {
        let Some(c) = &mut self.cur else {
            return Ok(None);
        };
        if c.pos >= limit {
            return Ok(None);
        }
        let (base, pos) = (c.base, c.pos);
        let res = read_one(&mut c.rd, &mut self.body, self.shared.max_body, limit - pos);
        let err = |reason: String| LogError::Corrupt {
            path: segment_path(&self.shared.dir, base),
            position: pos,
            reason,
        };
        let crc = match res {
            Ok(Ok(crc)) => crc,
            Ok(Err(reason)) => {
                self.cur = None;
                return Err(err(reason));
            }
            Err(source) => {
                self.cur = None;
                return Err(LogError::Io {
                    op: "read",
                    path: segment_path(&self.shared.dir, base),
                    source,
                });
            }
        };
        if !crc_ok(&self.body, crc) {
            self.cur = None;
            return Err(err("checksum mismatch".into()));
        }
        let expected = c.next;
        c.pos += (HEADER_LEN + self.body.len()) as u64;
        c.next += 1;
        let reason = match decode_body(&self.body) {
            Some(r) if r.offset == expected => return Ok(Some(r)),
            Some(r) => format!("offset {} where {expected} was expected", r.offset),
            None => "malformed record body".to_owned(),
        };
        self.cur = None;
        Err(err(reason))
    }
}

/// The embedded [`EventReader`]: the topic predicate is applied to each record read.
impl EventReader for LogReader {
    type Error = LogError;

    fn first_offset(&self) -> u64 {
        LogReader::first_offset(self)
    }

    fn end_offset(&self) -> u64 {
        LogReader::end_offset(self)
    }

    fn read_matching(
        &mut self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        wanted: impl Fn(&str) -> bool,
        mut each: impl FnMut(Record<'_>),
    ) -> Result<u64, LogError> {
        self.read_with(from, max_records, max_bytes, |rec| {
            if wanted(rec.topic) {
                each(rec);
            }
        })
    }

    fn offset_for_time(&mut self, t: u64) -> Result<u64, LogError> {
        LogReader::offset_for_time(self, t)
    }
}

/// Reads header and body into `body`; returns the crc, or why the record is invalid.
fn read_one(
    rd: &mut BufReader<File>,
    body: &mut Vec<u8>,
    max_body: usize,
    room: u64,
) -> io::Result<Result<Checksum, String>> {
    let mut h = [0u8; HEADER_LEN];
    if let Err(e) = rd.read_exact(&mut h) {
        if e.kind() == ErrorKind::UnexpectedEof {
            return Ok(Err("record header past end of file".into()));
        }
        return Err(e);
    }
    let (len, crc) = parse_header(&h);
    let len = len as usize;
    if !(MIN_BODY_LEN..=max_body).contains(&len) || (HEADER_LEN + len) as u64 > room {
        return Ok(Err(format!("implausible record length {len}")));
    }
    body.resize(len, 0);
    if let Err(e) = rd.read_exact(body) {
        if e.kind() == ErrorKind::UnexpectedEof {
            return Ok(Err("record body past end of file".into()));
        }
        return Err(e);
    }
    Ok(Ok(crc))
}
