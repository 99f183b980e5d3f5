//! # agora-storage
//!
//! What Agora keeps on disk, and the shared pieces that keep it safe: the durable event log
//! (segmented, checksummed, group commit), the tuple space's write-ahead log and snapshots,
//! one fsync policy, the data directory's lock, and recovery's quarantine.
//!
//! # Layout
//!
//! * [`log`]: the event log (docs/LOG.md): [`EventLog`](log::EventLog) appends and commits,
//!   [`LogReader`](log::LogReader)s replay, the [`Syncer`](log::Syncer) makes it durable.
//! * [`space`]: the space's write-ahead log and snapshots (docs/SPACE.md "Persistence"),
//!   the [`Journal`](agora_tuplespace::store::Journal) its store writes through;
//!   [`open_space`](space::open_space) loads a space from disk.
//! * [`fsync`]: [`FsyncPolicy`] (`always`, `every 5ms`, `never`) for both.
//! * [`dir`]: the directory lock (one owner per data dir) and directory fsync.
//! * [`quarantine`]: where recovery keeps what it cuts off a damaged file.

pub mod dir;
pub mod fsync;
pub mod log;
pub mod quarantine;
pub mod space;

pub use fsync::{FsyncPolicy, ParseFsyncPolicyError};
