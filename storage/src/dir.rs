//! A data directory's lock and the fsync that makes its names durable, shared by the event
//! log and the space's write-ahead log.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file each store keeps in its directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why [`lock_dir`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another store in this one) holds the directory.
    #[error("{} is in use by another process (its LOCK is held)", dir.display())]
    Busy {
        /// The directory.
        dir: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Takes an exclusive advisory lock on `<dir>/LOCK`, held as long as the returned file is
/// open (released when the store, or the process, goes away). Waits up to `wait` for a
/// previous holder to let go (a store being dropped in this process, whose background thread
/// is finishing); `Duration::ZERO` fails at once.
pub fn lock_dir(dir: &Path, wait: Duration) -> Result<File, LockError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err)?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
            Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                return Err(LockError::Busy {
                    dir: dir.to_path_buf(),
                })
            }
            // flock has no timed wait; the holder is expected to let go within moments.
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// fsync a directory, so the names created, renamed or removed in it are on disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_dir_is_busy_until_its_holder_goes() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path(), Duration::ZERO).unwrap();
        let e = lock_dir(dir.path(), Duration::from_millis(20)).unwrap_err();
        assert!(matches!(e, LockError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("in use"), "{e}");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        lock_dir(dir.path(), Duration::from_secs(5)).expect("free once dropped");
        releaser.join().unwrap();
        sync_dir(dir.path()).unwrap();
    }
}
