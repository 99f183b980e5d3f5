//! fsync policy and group commit.
//!
//! The dispatcher thread owns the [`EventLog`](super::EventLog) and must never block on a
//! disk flush. The protocol is:
//!
//! 1. dispatcher: `append` a batch of records, then [`EventLog::commit`](super::EventLog::commit)
//!    (= `flush` the buffer to the OS, publish the flushed offset to readers, and
//!    [`Syncer::request`] unless the policy is `never`);
//! 2. syncer thread ([`Syncer::run`] or [`Syncer::spawn`]): waits for a request, takes a
//!    snapshot of the flushed offset and the files holding it (the active segment and any
//!    segment sealed since the last sync), `fdatasync`s them, then publishes the durable
//!    offset through an `AtomicU64` ([`Syncer::durable_offset`]) and calls the callback,
//!    which typically wakes the dispatcher to send the confirmations up to that offset;
//! 3. with `every <d>` the syncer waits at least `d` between two syncs, so one fsync covers
//!    every event flushed in the meantime (group commit); with `always` it syncs again as
//!    soon as a new request is pending.
//!
//! Offsets: `durable_offset()` is one past the last durable record (so records with
//! `offset < durable_offset()` survive power loss).

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::LogError;
pub use crate::fsync::{FsyncPolicy, ParseFsyncPolicyError};

/// Files waiting for a sync, and the request flags.
#[derive(Default)]
struct Queue {
    /// Segments sealed since the last sync.
    sealed: Vec<Arc<File>>,
    /// The segment being written.
    active: Option<Arc<File>>,
    /// A segment file was created: the directory entry must be synced too.
    dir_dirty: bool,
    requested: bool,
    closed: bool,
    /// The syncer is waiting for a request (not pausing between syncs): only then does a
    /// request need to wake it. Waking it during its pause cost a context switch per commit.
    idle: bool,
}

/// State shared by the writer, the readers' offsets and the syncer.
pub(crate) struct SyncShared {
    dir: PathBuf,
    queue: Mutex<Queue>,
    cond: Condvar,
    /// One past the last record flushed to the OS.
    pub flushed: AtomicU64,
    /// One past the last record known to be on disk.
    pub durable: AtomicU64,
    /// Serialises whole sync passes, so a later pass never publishes before an earlier one
    /// has synced the files it took. Holds the newest sealed segment synced so far, the one
    /// sealed segment whose pages are left in the OS page cache (see `drop_cached`).
    pass: Mutex<Option<Arc<File>>>,
}

/// Locks a mutex, ignoring poisoning: the protected data stays consistent because every
/// critical section here only moves plain values.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SyncShared {
    pub fn new(dir: PathBuf, active: Arc<File>, next_offset: u64) -> SyncShared {
        SyncShared {
            dir,
            queue: Mutex::new(Queue {
                active: Some(active),
                ..Queue::default()
            }),
            cond: Condvar::new(),
            flushed: AtomicU64::new(next_offset),
            durable: AtomicU64::new(next_offset),
            pass: Mutex::new(None),
        }
    }

    /// Called by the writer when it rolls to a new segment.
    pub fn rolled(&self, sealed: Arc<File>, active: Arc<File>, keep_sealed: bool) {
        let mut q = lock(&self.queue);
        if keep_sealed {
            q.sealed.push(sealed);
        }
        q.active = Some(active);
        q.dir_dirty = true;
    }

    fn sync_now(&self) -> Result<u64, LogError> {
        let mut newest_sealed = lock(&self.pass);
        let (target, sealed, active, dir_dirty) = {
            let mut q = lock(&self.queue);
            (
                self.flushed.load(Ordering::Acquire),
                std::mem::take(&mut q.sealed),
                q.active.clone(),
                std::mem::replace(&mut q.dir_dirty, false),
            )
        };
        let result = (|| {
            for f in &sealed {
                f.sync_data()?;
            }
            if let Some(f) = &active {
                f.sync_data()?;
            }
            if dir_dirty {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(source) = result {
            // Put the work back so a retry covers it.
            let mut q = lock(&self.queue);
            let mut back = sealed;
            back.append(&mut q.sealed);
            q.sealed = back;
            q.dir_dirty |= dir_dirty;
            return Err(LogError::Io {
                op: "fdatasync",
                path: self.dir.clone(),
                source,
            });
        }
        // Synced, so clean: every sealed segment but the newest can leave the page cache.
        for f in sealed {
            if let Some(older) = newest_sealed.replace(f) {
                drop_cached(&older);
            }
        }
        let prev = self.durable.fetch_max(target, Ordering::AcqRel);
        Ok(prev.max(target))
    }
}

/// Ask the OS to drop a synced (clean) segment's pages from its page cache.
///
/// The log keeps about two segments of its own data cached, the active one and the newest
/// sealed one, where live subscribers' gap healing and recent replays read; older segments
/// are read back from disk when a replay asks for them. Otherwise a busy log fills all free
/// memory with data it rarely reads again, at the expense of everything else cached, and each
/// new page it takes costs more than a reused one: a lot more on a VM that hands unused guest
/// memory back to its host (docs/LOG.md and the README's benchmark notes have the figures).
/// Only under an fsync policy: the pages must be clean to be dropped.
fn drop_cached(segment: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; posix_fadvise only advises, on the whole file (0, 0).
    let rc = unsafe { libc::posix_fadvise(segment.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(
            errno = rc,
            "event log: could not drop a sealed segment from the cache"
        );
    }
}

/// Handle for the thread that makes the log durable. `Send + Clone`; see the module docs
/// for the protocol.
#[derive(Clone)]
pub struct Syncer {
    pub(crate) shared: Arc<SyncShared>,
}

impl fmt::Debug for Syncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Syncer")
            .field("flushed", &self.flushed_offset())
            .field("durable", &self.durable_offset())
            .finish()
    }
}

impl Syncer {
    /// Asks the syncer thread to sync what has been flushed. Never blocks on I/O.
    pub fn request(&self) {
        let mut q = lock(&self.shared.queue);
        if !q.requested {
            q.requested = true;
            // While the syncer pauses between syncs it looks at `requested` when the pause
            // ends; only a syncer waiting for work needs the wake-up.
            if q.idle {
                self.shared.cond.notify_all();
            }
        }
    }

    /// Syncs everything flushed so far, on the calling thread, and returns the durable
    /// offset (one past the last durable record).
    pub fn sync(&self) -> Result<u64, LogError> {
        self.shared.sync_now()
    }

    /// One past the last record known to be on disk.
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// One past the last record flushed to the OS (visible to readers).
    pub fn flushed_offset(&self) -> u64 {
        self.shared.flushed.load(Ordering::Acquire)
    }

    /// Stops [`Syncer::run`] after a final sync of any pending request. The log closes its
    /// syncer when it is dropped.
    pub fn close(&self) {
        let mut q = lock(&self.shared.queue);
        q.closed = true;
        self.shared.cond.notify_all();
    }

    /// True once [`Syncer::close`] was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.queue).closed
    }

    /// The syncer loop: wait for a request, sync, call `on_durable(durable_offset)`, wait at
    /// least `min_interval` since the start of that sync, repeat. Returns when closed (after
    /// a last sync if one was requested), or with the first I/O error.
    pub fn run(
        &self,
        min_interval: Duration,
        mut on_durable: impl FnMut(u64),
    ) -> Result<(), LogError> {
        loop {
            {
                let mut q = lock(&self.shared.queue);
                q.idle = true;
                while !q.requested && !q.closed {
                    q = self.shared.cond.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.idle = false;
                if !q.requested {
                    return Ok(());
                }
                q.requested = false;
            }
            let started = Instant::now();
            let durable = self.shared.sync_now()?;
            on_durable(durable);
            if !min_interval.is_zero() {
                let deadline = started + min_interval;
                let mut q = lock(&self.shared.queue);
                while !q.closed {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q = self
                        .shared
                        .cond
                        .wait_timeout(q, deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }

    /// Spawns a thread running [`Syncer::run`] with the policy's interval; `None` for
    /// [`FsyncPolicy::Never`].
    pub fn spawn(
        &self,
        policy: FsyncPolicy,
        on_durable: impl FnMut(u64) + Send + 'static,
    ) -> Option<JoinHandle<Result<(), LogError>>> {
        let interval = policy.interval()?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("agora-log-sync".into())
            .spawn(move || me.run(interval, on_durable))
            .ok()
    }
}
