//! # agora-storage
//!
//! What Agora keeps on disk, and the shared pieces that keep it safe: the durable event log
//! (segmented, checksummed, group commit), the durable subscriptions' cursors, the tuple
//! space's write-ahead log and snapshots, one fsync policy, the data directory's lock, and
//! recovery's quarantine. The traits of [`boundary`] say what the broker needs of its
//! storage; these files implement them, and a second backend can too: the bus's threads use
//! the log only through them, and the embedded log is chosen in one place (`Bus::bind`).
//!
//! # Layout
//!
//! * [`boundary`]: the storage boundary: [`EventStore`] (the log's writer), [`Durability`]
//!   (its flushed and durable offsets, followed from the dispatcher), [`EventReader`]
//!   (replays), [`LastValueCache`], [`CursorStore`], [`SpaceJournal`] (the space's), each
//!   with the promises an implementation keeps.
//! * [`log`]: the event log (docs/LOG.md): [`EventLog`](log::EventLog) appends and commits,
//!   [`LogReader`](log::LogReader)s replay, the [`Syncer`](log::Syncer) makes it durable.
//! * [`cursors`]: [`CursorFile`](cursors::CursorFile), the cursors in `<data>/cursors`.
//! * [`space`]: the space's write-ahead log and snapshots (docs/SPACE.md "Persistence"),
//!   the [`Journal`](agora_tuplespace::store::Journal) its store writes through;
//!   [`open_space`](space::open_space) loads a space from disk.
//! * [`fsync`]: [`FsyncPolicy`] (`always`, `every 5ms`, `never`) for both logs.
//! * [`dir`]: the directory lock (one owner per data dir) and directory fsync.
//! * [`quarantine`]: where recovery keeps what it cuts off a damaged file.
//! * `contract` (tests, or the `contract` feature): the boundary's contract test suite,
//!   generic over the traits.

pub mod boundary;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod cursors;
pub mod dir;
pub mod fsync;
pub mod log;
pub mod quarantine;
pub mod space;

pub use boundary::{
    CursorStore, Durability, EventReader, EventStore, LastValueCache, ResumeState, SpaceJournal,
    StoreError,
};
pub use fsync::{FsyncPolicy, ParseFsyncPolicyError};
