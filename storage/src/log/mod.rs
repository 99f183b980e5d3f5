//! The durable event log: segmented, append-only, checksummed files.
//!
//! One writer (the broker's dispatcher) appends [`Record`]s with contiguous offsets; any
//! number of [`LogReader`]s on other threads replay what has been flushed; a [`Syncer`]
//! thread makes it durable (group commit). docs/LOG.md describes the format byte by byte.
//!
//! # Layout
//!
//! * [`record`]: the record encoding, [`Record`] and [`OwnedRecord`].
//! * `segment`: segment files, the sparse index, the recovery scan, sidecar summaries.
//! * [`sync`]: [`FsyncPolicy`] and the [`Syncer`] (group commit protocol).
//! * `reader`: [`LogReader`].
//!
//! # Example
//!
//! ```
//! use agora_storage::log::{EventLog, LogOptions, Record};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (mut log, recovery) = EventLog::open(dir.path(), LogOptions::default()).unwrap();
//! assert_eq!(recovery.next_offset, 0);
//! log.append(&Record {
//!     offset: 0, seq: 1, time_ns: 1, content_type: 0, producer: None,
//!     topic: "a.b", payload: b"hi",
//! }).unwrap();
//! log.commit().unwrap();
//! let recs = log.reader().read(0, 10, 1 << 20).unwrap();
//! assert_eq!(recs[0].payload, b"hi");
//! ```

mod reader;
pub mod record;
mod segment;
pub mod sync;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use reader::LogReader;
pub use record::{OwnedRecord, Record};
pub use sync::{FsyncPolicy, ParseFsyncPolicyError, Syncer};

use crate::boundary::{EventStore, LastValueCache, ResumeState, StoreError};
use segment::{IndexEntry, SegMeta, TopicState};
use sync::SyncShared;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default distance between two sparse index entries: 16 KiB.
pub const DEFAULT_INDEX_INTERVAL: u64 = 16 << 10;
/// Default largest record body accepted: 16 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;
/// Default [`LogOptions::producer_ttl`]: twenty times the SDK's confirm timeout, during
/// which it retries a publish.
pub const DEFAULT_PRODUCER_TTL: Duration = Duration::from_secs(600);
/// Capacity of the writer's buffer.
const WRITE_BUFFER: usize = 256 << 10;

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `append` was given an offset other than [`EventLog::next_offset`].
    #[error("non-contiguous append: offset {got}, expected {expected}")]
    NonContiguous {
        /// The offset the log expected.
        expected: u64,
        /// The offset given.
        got: u64,
    },
    /// The record's body is larger than [`LogOptions::max_record_bytes`].
    #[error("record of {size} bytes exceeds the maximum of {max}")]
    RecordTooLarge {
        /// Encoded body size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The topic is longer than 65535 bytes.
    #[error("topic of {len} bytes is too long for the log")]
    TopicTooLong {
        /// Topic length.
        len: usize,
    },
    /// The requested offset was removed by retention.
    #[error("offset {requested} is no longer in the log (first available: {first_available})")]
    Truncated {
        /// The offset asked for.
        requested: u64,
        /// The oldest offset still stored.
        first_available: u64,
    },
    /// A reader found a damaged record in data it was allowed to read.
    #[error("corrupt record in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the record.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write failed; the writer refuses further appends (reopen the log to
    /// recover).
    #[error("the log writer failed earlier and must be reopened")]
    Failed,
    /// The options are unusable.
    #[error("invalid log options: {0}")]
    InvalidOptions(String),
    /// Another `EventLog` (in this or another process) has the directory open.
    #[error("the log in {} is already open elsewhere (lock held on {})", dir.display(), dir.join(LOCK_FILE).display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
}

/// Name of the lock file that keeps two writers out of one log directory.
pub use crate::dir::LOCK_FILE;
/// Subdirectory of the log directory where recovery moves what it cuts off (see
/// [`Recovery::quarantined`]). Nothing in it is read or removed by the broker.
pub use crate::quarantine::QUARANTINE_DIR;
use crate::quarantine::{keep_in_quarantine, quarantine_path, QUIET_CUT_BYTES};

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Settings of an [`EventLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is sealed and a new one started when the next record would make it
    /// larger than this (a single larger record still gets its own segment).
    pub segment_bytes: u64,
    /// Retention: delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Retention: delete sealed segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// fsync policy (used by [`EventLog::commit`] and [`Syncer::spawn`]).
    pub fsync: FsyncPolicy,
    /// Bytes between two sparse index entries.
    pub index_interval: u64,
    /// Largest record body accepted (and believed during recovery).
    pub max_record_bytes: usize,
    /// Scan and verify every segment on open instead of trusting sealed-segment summaries.
    pub verify_on_open: bool,
    /// A producer's last sequence (for idempotent retries) is kept until its last record is
    /// this much older than the newest one (checked when a segment is sealed and on
    /// [`EventLog::enforce_retention`]); then it is forgotten.
    pub producer_ttl: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention_bytes: None,
            retention_age: None,
            fsync: FsyncPolicy::default(),
            index_interval: DEFAULT_INDEX_INTERVAL,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            verify_on_open: false,
            producer_ttl: DEFAULT_PRODUCER_TTL,
        }
    }
}

/// What [`EventLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The offset the next append must use.
    pub next_offset: u64,
    /// The oldest offset stored.
    pub first_offset: u64,
    /// Bytes removed because they were torn or corrupt (including whole later segments).
    pub truncated_bytes: u64,
    /// Where the first truncation happened: segment file and byte position.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Why the data was truncated (empty when nothing was).
    pub truncation_reasons: Vec<String>,
    /// Where the truncated data went: nothing recovery cuts off is deleted. The tail of a
    /// segment is copied into a file of its own, later segments are moved, all under
    /// `<log dir>/quarantine/`, for an operator to inspect (or replay by hand).
    pub quarantined: Vec<PathBuf>,
    /// Last per-topic sequence number.
    pub last_seq_by_topic: HashMap<String, u64>,
    /// Offset of the last event per topic (for the last-value cache).
    pub last_offset_by_topic: HashMap<String, u64>,
    /// Last sequence per producer id (for idempotent retries).
    pub producers: HashMap<u64, u64>,
}

/// What [`EventLog::enforce_retention`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_removed: usize,
    /// Bytes deleted.
    pub bytes_removed: u64,
    /// The oldest offset still stored afterwards.
    pub first_offset: u64,
}

/// What readers may see: the segments and how far the writer has flushed.
pub(crate) struct View {
    /// Ascending by base; the last one is the active segment.
    pub segments: Vec<SegMeta>,
    pub first_offset: u64,
    pub flushed_offset: u64,
}

/// State shared by the writer and its readers.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub view: RwLock<View>,
    pub max_body: usize,
}

impl Shared {
    /// Short read-locked critical sections (a binary search or a few copies); poisoning
    /// is ignored because writers never leave the view half-updated across a panic point.
    pub fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The last-value cache: topic → offset of its newest flushed event, kept current by the
/// writer at each flush (seeded from recovery) and read by replays of the last event per
/// topic. A clone shares the cache.
#[derive(Clone, Debug, Default)]
pub struct LastOffsets(Arc<Mutex<LastOffsetsInner>>);

#[derive(Debug, Default)]
struct LastOffsetsInner {
    by_topic: HashMap<String, u64>,
    /// The cache covers every event below this offset, and none at or above it.
    covered: u64,
}

impl LastOffsets {
    /// Each topic that `wanted` accepts with its last offset, if at least `first`, and the
    /// offset the cache is complete up to (exclusive), read together.
    pub fn matching(&self, first: u64, wanted: impl Fn(&str) -> bool) -> (Vec<(String, u64)>, u64) {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let lasts = inner
            .by_topic
            .iter()
            .filter(|(topic, &offset)| offset >= first && wanted(topic))
            .map(|(topic, &offset)| (topic.clone(), offset))
            .collect();
        (lasts, inner.covered)
    }

    fn publish(&self, pending: &mut rustc_hash::FxHashMap<String, u64>, covered: u64) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, offset) in pending.drain() {
            inner.by_topic.insert(topic, offset);
        }
        inner.covered = covered;
    }
}

/// `Write` through a shared file handle, so the syncer can fdatasync the same file.
struct SharedFile(Arc<File>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer side of the log. Owned by one thread; see the [module docs](self).
pub struct EventLog {
    dir: PathBuf,
    opts: LogOptions,
    shared: Arc<Shared>,
    sync: Arc<SyncShared>,
    file: Arc<File>,
    writer: BufWriter<SharedFile>,
    active_base: u64,
    /// Bytes written to the active segment, including the buffer.
    active_len: u64,
    first_time: u64,
    last_time: u64,
    next_offset: u64,
    pending_index: Vec<IndexEntry>,
    last_indexed_pos: Option<u64>,
    state: TopicState,
    /// The last-value cache, and what goes into it at the next flush: the topics appended
    /// to since the last one, the latest of them (`lvc_topic`, while `lvc_offset` is set)
    /// kept apart so a run of events on one topic costs a comparison each, not a hash.
    last_offsets: LastOffsets,
    lvc_pending: rustc_hash::FxHashMap<String, u64>,
    lvc_topic: String,
    lvc_offset: Option<u64>,
    dirty: bool,
    failed: bool,
    /// Holds the directory lock for the log's lifetime.
    _lock: File,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dir", &self.dir)
            .field("next_offset", &self.next_offset)
            .field("active_base", &self.active_base)
            .finish()
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(|n| segment::parse_name(n, "log"))
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LogError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn remove_segment_files(dir: &Path, base: u64) -> Result<(), LogError> {
    remove_if_exists(&segment::segment_path(dir, base))?;
    remove_if_exists(&segment::idx_path(dir, base))?;
    remove_if_exists(&segment::state_path(dir, base))
}

/// fsync a directory, so the names created, renamed or removed in it are on disk.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    crate::dir::sync_dir(dir).map_err(io_err("fsync", dir))
}

fn file_len(path: &Path) -> Result<u64, LogError> {
    Ok(fs::metadata(path).map_err(io_err("stat", path))?.len())
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
/// Index entries a full segment gets (room for them is reserved up front), within reason.
fn expected_index_entries(opts: &LogOptions) -> usize {
    let entries = opts.segment_bytes / opts.index_interval + 2;
    usize::try_from(entries).unwrap_or(usize::MAX).min(1 << 16)
}

/// Producers last seen before this (ns since the epoch) are forgotten at `now_ns`.
pub fn producer_cutoff_ns(now_ns: u64, ttl: Duration) -> u64 {
    now_ns.saturating_sub(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Result of one recovery pass.
enum Pass {
    Done(Vec<SegMeta>, TopicState),
    Truncated,
}

impl EventLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: torn or corrupt data is
    /// truncated (see [`Recovery`]), and the per-topic and per-producer state is rebuilt.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(EventLog, Recovery), LogError> {
        if opts.segment_bytes == 0 || opts.index_interval == 0 {
            return Err(LogError::InvalidOptions(
                "segment_bytes and index_interval must be positive".into(),
            ));
        }
        if opts.max_record_bytes > record::MAX_BODY_LEN {
            return Err(LogError::InvalidOptions(format!(
                "max_record_bytes must be at most {} (31 bits)",
                record::MAX_BODY_LEN
            )));
        }
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock = Self::lock_dir(dir)?;
        let mut recovery = Recovery::default();
        let (mut segments, mut state) = loop {
            match Self::recover_pass(dir, &opts, &mut recovery)? {
                Pass::Done(s, st) => break (s, st),
                Pass::Truncated => continue,
            }
        };
        Self::clean_orphans(dir, &segments)?;
        let active = segments
            .last()
            .cloned()
            .unwrap_or_else(|| SegMeta::empty(0));
        let path = segment::segment_path(dir, active.base);
        // A sealed-segment summary for the active segment would be stale.
        remove_if_exists(&segment::idx_path(dir, active.base))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        // What we recovered may only have been in the page cache of a crashed process.
        file.sync_data().map_err(io_err("fdatasync", &path))?;
        let file = Arc::new(file);
        let next_offset = active.end;
        recovery.next_offset = next_offset;
        recovery.first_offset = segments.first().map_or(0, |s| s.base);
        for (topic, (seq, offset)) in &state.topics {
            recovery.last_seq_by_topic.insert(topic.clone(), *seq);
            recovery.last_offset_by_topic.insert(topic.clone(), *offset);
        }
        // Producers read from a state file were seen before its segment began; dated as of
        // the newest record they stay at least as long as they should.
        let newest_ns = segments
            .iter()
            .rev()
            .find(|s| s.end > s.base)
            .map_or_else(|| unix_ns(SystemTime::now()), |s| s.last_time);
        state.date_unknown_producers(newest_ns);
        state.forget_producers_before(producer_cutoff_ns(newest_ns, opts.producer_ttl));
        recovery.producers = state.producers.iter().map(|(k, v)| (*k, v.0)).collect();
        let last_indexed_pos = active.index.last().map(|e| e.pos);
        if let Some(active) = segments.last_mut() {
            let full = expected_index_entries(&opts);
            active
                .index
                .reserve(full.saturating_sub(active.index.len()));
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            view: RwLock::new(View {
                first_offset: recovery.first_offset,
                flushed_offset: next_offset,
                segments,
            }),
            max_body: opts.max_record_bytes,
        });
        let sync = Arc::new(SyncShared::new(
            dir.to_path_buf(),
            file.clone(),
            next_offset,
        ));
        let last_offsets = LastOffsets::default();
        last_offsets.publish(
            &mut state.topics.iter().map(|(t, v)| (t.clone(), v.1)).collect(),
            next_offset,
        );
        let log = EventLog {
            dir: dir.to_path_buf(),
            writer: BufWriter::with_capacity(WRITE_BUFFER, SharedFile(file.clone())),
            file,
            opts,
            shared,
            sync,
            active_base: active.base,
            active_len: active.len,
            first_time: active.first_time,
            last_time: active.last_time,
            next_offset,
            pending_index: Vec::new(),
            last_indexed_pos,
            state,
            last_offsets,
            lvc_pending: Default::default(),
            lvc_topic: String::new(),
            lvc_offset: None,
            dirty: false,
            failed: false,
            _lock: lock,
        };
        Ok((log, recovery))
    }

    /// Takes an exclusive advisory lock on `<dir>/LOCK`, released when the log (or the
    /// process) goes away. Another broker on the same directory fails at once.
    fn lock_dir(dir: &Path) -> Result<File, LogError> {
        crate::dir::lock_dir(dir, Duration::ZERO).map_err(|e| match e {
            crate::dir::LockError::Busy { dir } => LogError::Locked { dir },
            crate::dir::LockError::Io { path, source } => LogError::Io {
                op: "lock",
                path,
                source,
            },
        })
    }

    /// One recovery pass over the directory; truncates at the first corruption and asks
    /// for another pass (the state to start from may then be an earlier one).
    fn recover_pass(
        dir: &Path,
        opts: &LogOptions,
        recovery: &mut Recovery,
    ) -> Result<Pass, LogError> {
        let mut bases = list_segments(dir)?;
        if bases.is_empty() {
            let path = segment::segment_path(dir, 0);
            File::create(&path).map_err(io_err("create", &path))?;
            bases.push(0);
        }
        // The newest segment whose starting state we know.
        let mut start = (0, TopicState::default());
        for (i, &base) in bases.iter().enumerate().rev() {
            if let Some(s) = segment::read_state(dir, base) {
                start = (i, s);
                break;
            }
        }
        let (state_from, mut state) = start;
        let mut metas: Vec<SegMeta> = Vec::with_capacity(bases.len());
        let last = bases.len() - 1;
        for (j, &base) in bases.iter().enumerate() {
            let path = segment::segment_path(dir, base);
            if let Some(prev) = metas.last() {
                if prev.end != base {
                    let reason = format!(
                        "segment {} starts at offset {base}, expected {}",
                        path.display(),
                        prev.end
                    );
                    Self::truncate(dir, &bases[j..], &path, 0, reason, recovery)?;
                    return Ok(Pass::Truncated);
                }
            }
            if j < state_from && j != last && !opts.verify_on_open {
                if let Some(m) = segment::read_idx(dir, base) {
                    if m.len == file_len(&path)? {
                        metas.push(m);
                        continue;
                    }
                }
            }
            let st = if j >= state_from {
                Some(&mut state)
            } else {
                None
            };
            let scan =
                segment::scan_segment(&path, base, opts.max_record_bytes, opts.index_interval, st)
                    .map_err(io_err("scan", &path))?;
            if let Some((pos, reason)) = scan.corrupt {
                let reason = format!("{}: {reason} at byte {pos}", path.display());
                Self::truncate(dir, &bases[j..], &path, pos, reason, recovery)?;
                return Ok(Pass::Truncated);
            }
            metas.push(scan.meta);
        }
        Ok(Pass::Done(metas, state))
    }

    /// Truncates `bases[0]`'s file at `pos` (deleting it if `pos` is 0 and it is not the
    /// first segment of the log) and deletes all later segments.
    fn truncate(
        dir: &Path,
        bases: &[u64],
        path: &Path,
        pos: u64,
        reason: String,
        recovery: &mut Recovery,
    ) -> Result<(), LogError> {
        let tail = file_len(path)?.saturating_sub(pos);
        let mut removed = tail;
        if recovery.truncated_at.is_none() {
            recovery.truncated_at = Some((path.to_path_buf(), pos));
        }
        let quarantine = dir.join(QUARANTINE_DIR);
        let mut kept = Vec::new();
        let first = bases.first().copied().unwrap_or(0);
        let is_oldest = list_segments(dir)?.first() == Some(&first);
        let file_name = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("segment")
                .to_string()
        };
        // The cut-off tail first, into a file of its own, synced before anything is cut.
        if tail > 0 {
            let mut src = File::open(path).map_err(io_err("open", path))?;
            io::Seek::seek(&mut src, io::SeekFrom::Start(pos)).map_err(io_err("seek", path))?;
            let name = format!("{}-from-byte-{pos}", file_name(path));
            kept.push(keep_in_quarantine(dir, &name, src).map_err(io_err("quarantine", path))?);
        }
        if pos == 0 && !is_oldest {
            remove_segment_files(dir, first)?;
        } else {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err("open", path))?;
            f.set_len(pos).map_err(io_err("truncate", path))?;
            f.sync_all().map_err(io_err("fsync", path))?;
            remove_if_exists(&segment::idx_path(dir, first))?;
        }
        for &base in bases.iter().skip(1) {
            let p = segment::segment_path(dir, base);
            removed += file_len(&p)?;
            let dest = quarantine_path(dir, &file_name(&p)).map_err(io_err("quarantine", &p))?;
            fs::rename(&p, &dest).map_err(io_err("move to quarantine", &p))?;
            kept.push(dest);
            remove_segment_files(dir, base)?;
        }
        if !kept.is_empty() {
            sync_dir(&quarantine)?;
        }
        sync_dir(dir)?;
        recovery.truncated_bytes += removed;
        let kept_in = quarantine.display().to_string();
        if removed > QUIET_CUT_BYTES {
            tracing::error!(
                %reason, bytes = removed, kept_in,
                "event log: corrupt data; everything from there on is cut off (more than a \
                 crash can tear) and moved to quarantine"
            );
        } else {
            tracing::warn!(
                %reason, bytes = removed, kept_in,
                "event log: truncating torn or corrupt data (moved to quarantine)"
            );
        }
        recovery.truncation_reasons.push(reason);
        recovery.quarantined.extend(kept);
        Ok(())
    }

    /// Removes temporary files and sidecars that belong to no segment.
    fn clean_orphans(dir: &Path, segments: &[SegMeta]) -> Result<(), LogError> {
        let known: std::collections::HashSet<u64> = segments.iter().map(|s| s.base).collect();
        for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
            let entry = entry.map_err(io_err("read directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let orphan = segment::parse_name(name, "tmp").is_some()
                || segment::parse_name(name, "idx").is_some_and(|b| !known.contains(&b))
                || segment::parse_name(name, "state").is_some_and(|b| !known.contains(&b));
            if orphan {
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Appends one record. `rec.offset` must equal [`EventLog::next_offset`]. The record is
    /// buffered: readers see it after [`EventLog::flush`] (or `commit`).
    pub fn append(&mut self, rec: &Record<'_>) -> Result<(), LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        if rec.offset != self.next_offset {
            return Err(LogError::NonContiguous {
                expected: self.next_offset,
                got: rec.offset,
            });
        }
        if rec.topic.len() > usize::from(u16::MAX) {
            return Err(LogError::TopicTooLong {
                len: rec.topic.len(),
            });
        }
        let body = rec.body_len();
        if body > self.opts.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size: body,
                max: self.opts.max_record_bytes,
            });
        }
        let size = rec.encoded_len() as u64;
        if self.active_len > 0 && self.active_len + size > self.opts.segment_bytes {
            self.roll()?;
        }
        let pos = self.active_len;
        let due = match self.last_indexed_pos {
            None => true,
            Some(p) => pos - p >= self.opts.index_interval,
        };
        if let Err(source) = rec.write_to(&mut self.writer) {
            self.failed = true;
            return Err(LogError::Io {
                op: "write",
                path: segment::segment_path(&self.dir, self.active_base),
                source,
            });
        }
        if due {
            self.pending_index.push(IndexEntry {
                offset: rec.offset,
                pos,
                time_ns: rec.time_ns,
            });
            self.last_indexed_pos = Some(pos);
        }
        if pos == 0 {
            self.first_time = rec.time_ns;
        }
        self.last_time = rec.time_ns;
        self.active_len += size;
        self.next_offset += 1;
        self.state.note(rec);
        if self.lvc_offset.is_some() && self.lvc_topic != rec.topic {
            self.stash_lvc_topic();
        }
        if self.lvc_offset.is_none() {
            self.lvc_topic.clear();
            self.lvc_topic.push_str(rec.topic);
        }
        self.lvc_offset = Some(rec.offset);
        self.dirty = true;
        Ok(())
    }

    /// Move the latest topic's offset into the pending last-value updates.
    fn stash_lvc_topic(&mut self) {
        if let Some(offset) = self.lvc_offset.take() {
            match self.lvc_pending.get_mut(self.lvc_topic.as_str()) {
                Some(o) => *o = offset,
                None => {
                    self.lvc_pending.insert(self.lvc_topic.clone(), offset);
                }
            }
        }
    }

    /// The last-value cache (topic → offset of its newest flushed event), shared.
    pub fn last_offsets(&self) -> LastOffsets {
        self.last_offsets.clone()
    }

    /// Pushes buffered records to the OS and makes them visible to readers. Returns the
    /// flushed offset (one past the last flushed record).
    pub fn flush(&mut self) -> Result<u64, LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        if !self.dirty {
            return Ok(self.next_offset);
        }
        if let Err(source) = self.writer.flush() {
            self.failed = true;
            return Err(LogError::Io {
                op: "write",
                path: segment::segment_path(&self.dir, self.active_base),
                source,
            });
        }
        {
            let mut v = self.shared.write();
            v.flushed_offset = self.next_offset;
            if let Some(seg) = v.segments.last_mut() {
                seg.end = self.next_offset;
                seg.len = self.active_len;
                seg.first_time = self.first_time;
                seg.last_time = self.last_time;
                seg.index.append(&mut self.pending_index);
            }
        }
        // After the view: what the cache covers is always readable.
        self.stash_lvc_topic();
        self.last_offsets
            .publish(&mut self.lvc_pending, self.next_offset);
        self.sync.flushed.store(self.next_offset, Ordering::Release);
        self.dirty = false;
        Ok(self.next_offset)
    }

    /// [`flush`](Self::flush), then ask the syncer for an fsync unless the policy is
    /// `never`. Never blocks on the disk. Returns the flushed offset.
    pub fn commit(&mut self) -> Result<u64, LogError> {
        let flushed = self.flush()?;
        if self.opts.fsync != FsyncPolicy::Never {
            self.syncer().request();
        }
        Ok(flushed)
    }

    /// Flush and fdatasync on this thread; returns the durable offset.
    pub fn sync(&mut self) -> Result<u64, LogError> {
        self.flush()?;
        self.sync_handle().sync()
    }

    fn sync_handle(&self) -> Syncer {
        Syncer {
            shared: self.sync.clone(),
        }
    }

    /// A handle for the syncer thread (see the [`sync` module](self::sync) for the protocol).
    pub fn syncer(&self) -> Syncer {
        self.sync_handle()
    }

    /// Seals the active segment and starts a new one at `next_offset`.
    fn roll(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let sealed = self.shared.read().segments.last().cloned();
        if let Some(sealed) = sealed {
            if let Err(e) = segment::write_idx(&self.dir, &sealed) {
                tracing::warn!(error = %e, "event log: could not write segment summary");
            }
        }
        let base = self.next_offset;
        self.state
            .forget_producers_before(producer_cutoff_ns(self.last_time, self.opts.producer_ttl));
        if let Err(e) = segment::write_state(&self.dir, base, &self.state) {
            tracing::warn!(error = %e, "event log: could not write segment state");
        }
        let path = segment::segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let file = Arc::new(file);
        let old = std::mem::replace(&mut self.file, file.clone());
        // The buffer is empty (flushed above) and is kept: only the file under it changes.
        // New buffers and growing indexes each took fresh memory, which the allocator
        // backs with huge pages zeroed on first touch (a tenth of the writer's time).
        self.writer.get_mut().0 = file.clone();
        self.sync
            .rolled(old, file, self.opts.fsync != FsyncPolicy::Never);
        let mut active = SegMeta::empty(base);
        active.index.reserve(expected_index_entries(&self.opts));
        self.shared.write().segments.push(active);
        self.active_base = base;
        self.active_len = 0;
        self.first_time = 0;
        self.last_time = 0;
        self.last_indexed_pos = None;
        Ok(())
    }

    /// Deletes the oldest sealed segments that exceed the retention limits (never the
    /// active segment). Readers asking for removed offsets then get
    /// [`LogError::Truncated`].
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<RetentionReport, LogError> {
        let now_ns = unix_ns(now);
        self.state
            .forget_producers_before(producer_cutoff_ns(now_ns, self.opts.producer_ttl));
        let removed: Vec<SegMeta> = {
            let mut v = self.shared.write();
            let mut total: u64 = v.segments.iter().map(|s| s.len).sum();
            let mut n = 0;
            while n + 1 < v.segments.len() {
                let seg = &v.segments[n];
                let by_size = self.opts.retention_bytes.is_some_and(|max| total > max);
                let by_age = self.opts.retention_age.is_some_and(|age| {
                    let age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
                    seg.last_time.saturating_add(age_ns) < now_ns
                });
                if !(by_size || by_age) {
                    break;
                }
                total -= seg.len;
                n += 1;
            }
            let removed: Vec<SegMeta> = v.segments.drain(..n).collect();
            if let Some(first) = v.segments.first() {
                v.first_offset = first.base;
            }
            removed
        };
        let mut report = RetentionReport {
            segments_removed: removed.len(),
            bytes_removed: 0,
            first_offset: self.first_offset(),
        };
        for seg in &removed {
            let path = segment::segment_path(&self.dir, seg.base);
            report.bytes_removed += fs::metadata(&path).map_or(seg.len, |m| m.len());
            remove_segment_files(&self.dir, seg.base)?;
        }
        if !removed.is_empty() {
            tracing::info!(
                segments = report.segments_removed,
                bytes = report.bytes_removed,
                first_offset = report.first_offset,
                "event log: retention removed old segments"
            );
        }
        Ok(report)
    }

    /// A new reader with its own file handles (`Send`; use it from any thread).
    pub fn reader(&self) -> LogReader {
        LogReader::new(self.shared.clone())
    }

    /// The offset the next append must use.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The oldest offset still stored.
    pub fn first_offset(&self) -> u64 {
        self.shared.read().first_offset
    }

    /// One past the last record flushed to the OS (what readers can see).
    pub fn flushed_offset(&self) -> u64 {
        self.sync.flushed.load(Ordering::Acquire)
    }

    /// One past the last record known to be on disk.
    pub fn durable_offset(&self) -> u64 {
        self.sync.durable.load(Ordering::Acquire)
    }

    /// Last sequence number written on `topic`, if any.
    pub fn last_seq(&self, topic: &str) -> Option<u64> {
        self.state.topics.get(topic).map(|v| v.0)
    }

    /// Offset of the last event written on `topic`, if any (the last-value cache).
    pub fn last_offset(&self, topic: &str) -> Option<u64> {
        self.state.topics.get(topic).map(|v| v.1)
    }

    /// Last sequence written by producer `id`, if any.
    pub fn producer_seq(&self, id: u64) -> Option<u64> {
        self.state.producers.get(&id).map(|p| p.0)
    }

    /// Total bytes of all segments (flushed or buffered).
    pub fn size_bytes(&self) -> u64 {
        let v = self.shared.read();
        let sealed: u64 = v
            .segments
            .iter()
            .take(v.segments.len().saturating_sub(1))
            .map(|s| s.len)
            .sum();
        sealed + self.active_len
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.read().segments.len()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.opts
    }
}

/// The embedded [`EventStore`]: each method is the inherent one of the same name.
impl EventStore for EventLog {
    type Error = LogError;
    type Reader = LogReader;
    type Cache = LastOffsets;

    #[inline]
    fn append(&mut self, rec: &Record<'_>) -> Result<(), LogError> {
        EventLog::append(self, rec)
    }

    #[inline]
    fn flush(&mut self) -> Result<u64, LogError> {
        EventLog::flush(self)
    }

    #[inline]
    fn commit(&mut self) -> Result<u64, LogError> {
        EventLog::commit(self)
    }

    /// Under fsync `never` nothing syncs after a commit.
    fn commit_is_durable(&self) -> bool {
        self.opts.fsync == FsyncPolicy::Never
    }

    fn sync(&mut self) -> Result<u64, LogError> {
        EventLog::sync(self)
    }

    fn durable_offset(&self) -> u64 {
        EventLog::durable_offset(self)
    }

    fn next_offset(&self) -> u64 {
        self.next_offset
    }

    fn first_offset(&self) -> u64 {
        EventLog::first_offset(self)
    }

    fn enforce_retention(&mut self, now: SystemTime) -> Result<u64, LogError> {
        EventLog::enforce_retention(self, now).map(|r| r.first_offset)
    }

    /// Right after [`EventLog::open`], the same as its [`Recovery`] says.
    fn resume_state(&self) -> ResumeState {
        ResumeState {
            next_offset: self.next_offset,
            first_offset: EventLog::first_offset(self),
            last_seq_by_topic: self
                .state
                .topics
                .iter()
                .map(|(topic, &(seq, _))| (topic.clone(), seq))
                .collect(),
            producers: self
                .state
                .producers
                .iter()
                .map(|(&id, &(seq, _))| (id, seq))
                .collect(),
        }
    }

    fn reader(&self) -> LogReader {
        EventLog::reader(self)
    }

    fn last_value_cache(&self) -> LastOffsets {
        self.last_offsets()
    }

    type Durability = Syncer;

    fn durability(&self) -> Syncer {
        self.syncer()
    }

    fn max_record_bytes(&self) -> usize {
        self.options().max_record_bytes
    }
}

impl crate::boundary::Durability for Syncer {
    type Error = LogError;

    fn flushed_offset(&self) -> u64 {
        Syncer::flushed_offset(self)
    }

    fn durable_offset(&self) -> u64 {
        Syncer::durable_offset(self)
    }

    fn start(
        &self,
        policy: FsyncPolicy,
        on_durable: Box<dyn FnMut(u64) + Send>,
    ) -> Option<std::thread::JoinHandle<Result<(), LogError>>> {
        self.spawn(policy, on_durable)
    }

    fn close(&self) {
        Syncer::close(self)
    }
}

impl StoreError for LogError {
    fn is_truncated(&self) -> bool {
        matches!(self, LogError::Truncated { .. })
    }
}

impl LastValueCache for LastOffsets {
    fn matching(&self, first: u64, wanted: impl Fn(&str) -> bool) -> (Vec<(String, u64)>, u64) {
        LastOffsets::matching(self, first, wanted)
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if !self.failed {
            if let Err(e) = self.flush() {
                tracing::warn!(error = %e, "event log: flush on close failed");
            }
        }
        self.sync_handle().close();
    }
}

#[cfg(test)]
mod tests;
