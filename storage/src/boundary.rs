//! The storage boundary: what the broker needs of its storage, as traits a second backend
//! (a replicated engine) can implement beside the embedded files.
//!
//! * [`EventStore`]: the event log's writer, owned by one thread: append records with
//!   contiguous offsets, make them visible to readers, make them durable, apply retention,
//!   and say what the broker resumes from ([`ResumeState`]).
//! * [`EventReader`]: replays, on any thread: read visible records from an offset, find the
//!   offset for a time.
//! * [`LastValueCache`]: each topic's newest visible event, for replays of the last event
//!   per topic.
//! * [`CursorStore`]: the durable subscriptions' cursors.
//! * [`SpaceJournal`]: the tuple space's boundary is the tuple store's
//!   [`Journal`](agora_tuplespace::store::Journal), re-exported here under that name; the
//!   space's write-ahead log ([`crate::space`]) implements it.
//! * [`StoreError`]: what the broker must tell apart in a backend's errors.
//!
//! The embedded implementations are [`EventLog`](crate::log::EventLog),
//! [`LogReader`](crate::log::LogReader), [`LastOffsets`](crate::log::LastOffsets) and
//! [`CursorFile`](crate::cursors::CursorFile). The traits are synchronous (the broker's
//! loops are plain threads) and used through generic parameters: static dispatch, no boxing
//! per event. Opening a store is not part of them: each backend has its own options, and the
//! broker picks one where it opens it.
//!
//! # Offsets
//!
//! Every event has an offset: a `u64`, contiguous (the next record's offset is one past the
//! previous one's), never reused, not even after a restart or after retention removed the
//! records below it. Ranges are half-open: "one past the last record" is how every position
//! below is given.
//!
//! `contract` (built for the crate's tests, or with the `contract` feature) holds a test
//! suite for these promises, written over the traits, which a second backend can run
//! against itself.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::log::Record;

/// The space's storage boundary: the tuple store writes every mutation through it, in
/// order ([`space`](crate::space) implements it with its write-ahead log and snapshots).
pub use agora_tuplespace::store::Journal as SpaceJournal;

/// What the broker needs to tell apart in a store's errors; everything else it reports.
pub trait StoreError: std::error::Error + Send + Sync + 'static {
    /// The offset asked for is no longer stored (retention removed it): the caller may
    /// resume at the store's first offset.
    fn is_truncated(&self) -> bool;
}

/// What the broker resumes from after a restart: read from an [`EventStore`] when it is
/// opened, before anything is appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// The offset the next append must use.
    pub next_offset: u64,
    /// The oldest offset still stored (`next_offset` when nothing is).
    pub first_offset: u64,
    /// Each topic's last sequence number: its next event gets the one after.
    pub last_seq_by_topic: HashMap<String, u64>,
    /// Each recent producer's last sequence (for idempotent retries). A store may forget
    /// producers idle for longer than a retry can take.
    pub producers: HashMap<u64, u64>,
}

/// The writer side of the event log: one thread appends, in offset order.
///
/// Three positions move forward, never back, each one past the last record it covers:
/// `next_offset` (appended) ≥ the end readers see (visible, set by [`flush`](Self::flush)
/// and [`commit`](Self::commit)) ≥ [`durable_offset`](Self::durable_offset) (survives a
/// crash of the host, as far as the store promises it). After a restart the store holds at
/// least every record that was durable, and its `next_offset` follows the last record it
/// holds.
///
/// After an error from [`append`](Self::append) (other than a refused record), `flush`,
/// `commit` or `sync`, the store may refuse everything further: the broker then stops
/// taking publishes.
pub trait EventStore: Send {
    /// The store's error.
    type Error: StoreError;
    /// Its readers.
    type Reader: EventReader;
    /// Its last-value cache.
    type Cache: LastValueCache;

    /// Appends one record. `rec.offset` must be [`next_offset`](Self::next_offset): any
    /// other is refused with an error and nothing is stored (the store takes the right one
    /// after that). Readers need not see the record before the next `flush` or `commit`.
    fn append(&mut self, rec: &Record<'_>) -> Result<(), Self::Error>;

    /// Makes every appended record visible to readers (and to the last-value cache); returns
    /// the visible end, which is then `next_offset`. Says nothing about durability.
    fn flush(&mut self) -> Result<u64, Self::Error>;

    /// [`flush`](Self::flush), and start making the records durable without waiting for it:
    /// [`durable_offset`](Self::durable_offset) advances later, off this thread (the embedded
    /// log's [`Syncer`](crate::log::Syncer) thread). Returns the visible end.
    fn commit(&mut self) -> Result<u64, Self::Error>;

    /// Whether a commit is all the durability this store gives: nothing advances
    /// [`durable_offset`](Self::durable_offset) afterwards except [`sync`](Self::sync), so
    /// whoever waits for durability takes a committed record as durable as it gets. True for
    /// the embedded log under fsync `never`.
    fn commit_is_durable(&self) -> bool;

    /// Makes every appended record durable before returning (on this thread), and returns
    /// the durable offset, which is then `next_offset`.
    fn sync(&mut self) -> Result<u64, Self::Error>;

    /// One past the last record known to be durable.
    fn durable_offset(&self) -> u64;

    /// The offset the next append must use.
    fn next_offset(&self) -> u64;

    /// The oldest offset still stored (`next_offset` when nothing is).
    fn first_offset(&self) -> u64;

    /// Removes the oldest records that exceed the store's retention limits, as of `now`;
    /// returns the first offset still stored. Only whole records from the start go; a store
    /// may keep more than its limits ask (the embedded log deletes whole segments, never the
    /// one being written), and one whose engine applies retention itself may do nothing
    /// here. Readers asking for a removed offset get an error that
    /// [`is_truncated`](StoreError::is_truncated).
    fn enforce_retention(&mut self, now: SystemTime) -> Result<u64, Self::Error>;

    /// What the broker resumes from: right after opening, the state recovery restored.
    fn resume_state(&self) -> ResumeState;

    /// A new reader, independent of every other (`Send`: give it to any thread).
    fn reader(&self) -> Self::Reader;

    /// The last-value cache, shared with the store, which keeps it current at each flush.
    fn last_value_cache(&self) -> Self::Cache;

    /// What follows this store's flushed and durable offsets from other threads and makes
    /// its commits durable in the background.
    type Durability: Durability<Error = Self::Error>;

    /// A handle on this store's durability, for the thread that answers confirms.
    fn durability(&self) -> Self::Durability;

    /// The largest record [`append`](Self::append) takes (topic, payload and the store's
    /// own header), in bytes.
    fn max_record_bytes(&self) -> usize;
}

/// Follows what an [`EventStore`] has made visible and durable, from a thread other than its
/// writer's (the broker's dispatcher, which answers confirms), and runs whatever makes
/// commits durable in the background (the embedded log: a syncer thread that fsyncs per the
/// [`FsyncPolicy`](crate::FsyncPolicy)).
pub trait Durability: Send + 'static {
    /// The store's error.
    type Error: StoreError;

    /// One past the last record flushed: visible to readers.
    fn flushed_offset(&self) -> u64;

    /// One past the last durable record: a confirm for any offset below it may be sent.
    fn durable_offset(&self) -> u64;

    /// Start making commits durable in the background, calling `on_durable` with the new
    /// durable offset each time it moves. `None` when nothing runs in the background (the
    /// policy never syncs; the writer then says what is durable).
    fn start(
        &self,
        policy: crate::FsyncPolicy,
        on_durable: Box<dyn FnMut(u64) + Send>,
    ) -> Option<std::thread::JoinHandle<Result<(), Self::Error>>>;

    /// Stop the background work once the writer has committed its last records (what was
    /// committed by then is made durable first).
    fn close(&self);
}

/// Reads the event log for replays, on any thread, while the writer appends.
///
/// A reader sees exactly the records below the visible end ([`end_offset`](Self::end_offset),
/// which the writer's `flush` and `commit` move): never a record the writer has not made
/// visible, never part of one, and each as it was appended (offset, sequence, time, content
/// type, producer, topic, payload). A clone is a new reader of the same log, with its own
/// position.
pub trait EventReader: Clone + Send {
    /// The reader's error.
    type Error: StoreError;

    /// The oldest offset still stored.
    fn first_offset(&self) -> u64;

    /// One past the last visible record.
    fn end_offset(&self) -> u64;

    /// Reads the records from `from` on, in offset order, lending each one whose topic
    /// `wanted` accepts to `each`. Stops after `max_records` records or once `max_bytes` of
    /// topic and payload were read (both counting the records `wanted` refused, so a filter
    /// that matches little still returns in bounded time; at least one record is read if any
    /// is visible), or at the visible end. Returns the offset to continue from: one past the
    /// last record read, `from` when none was (`from` at or past the end).
    ///
    /// `from` below [`first_offset`](Self::first_offset) is an error that
    /// [`is_truncated`](StoreError::is_truncated) (retention may also remove records during
    /// a read).
    fn read_matching(
        &mut self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        wanted: impl Fn(&str) -> bool,
        each: impl FnMut(Record<'_>),
    ) -> Result<u64, Self::Error>;

    /// The first offset whose record has `time_ns >= t`, or the visible end if none does.
    /// Times do not decrease along the log (the broker stamps them so).
    fn offset_for_time(&mut self, t: u64) -> Result<u64, Self::Error>;
}

/// Each topic's newest visible event, for replays of the last event per topic. A clone
/// shares the cache.
pub trait LastValueCache: Clone + Send {
    /// Each topic that `wanted` accepts with the offset of its newest event, if at least
    /// `first`, and the offset the answer is complete up to (exclusive: it covers every
    /// event below and none at or above it, and every event below it is visible to
    /// readers), read together.
    fn matching(&self, first: u64, wanted: impl Fn(&str) -> bool) -> (Vec<(String, u64)>, u64);
}

/// The durable subscriptions' cursors: name → the next offset to deliver (every offset below
/// it is acknowledged).
///
/// Changes are staged by [`set`](Self::set) and [`delete`](Self::delete) and made durable
/// together by [`persist`](Self::persist), so acks that arrive together cost one write to
/// disk. [`get`](Self::get) sees staged changes. What was persisted is what the store holds
/// when it is opened again; staged changes that were never persisted may or may not be.
pub trait CursorStore: Send {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The cursor named `name`, if there is one.
    fn get(&self, name: &str) -> Option<u64>;

    /// Creates or moves the cursor `name` (staged).
    fn set(&mut self, name: &str, next: u64);

    /// Deletes the cursor `name` (staged); returns whether there was one.
    fn delete(&mut self, name: &str) -> bool;

    /// Makes every staged change durable before returning. On an error, none or some of
    /// them may be; they stay staged, and the next `persist` tries again.
    fn persist(&mut self) -> Result<(), Self::Error>;
}
