//! Recovery's quarantine: what the event log's and the space WAL's recoveries cut off (a torn
//! or corrupt tail) is kept here, never deleted.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where recovery keeps what it cuts off, under the directory of the files it repairs (the
/// space's and the event log's). Nothing in it is read or removed again.
pub const QUARANTINE_DIR: &str = "quarantine";
/// A cut larger than this is more than a crash tears (the unsynced tail): recoveries log it
/// as an error, smaller ones as a warning.
pub const QUIET_CUT_BYTES: u64 = 1 << 20;

/// A new name for cut-off data called `name` in `dir`'s quarantine (created if missing):
/// `<dir>/quarantine/<unix seconds>-<name>`.
pub fn quarantine_path(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let quarantine = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&quarantine)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(quarantine.join(format!("{stamp}-{name}")))
}

/// Keep what `data` yields in a new quarantine file (see [`quarantine_path`]), synced with
/// its directory before this returns, so the original may be cut.
pub fn keep_in_quarantine(
    dir: &Path,
    name: &str,
    mut data: impl std::io::Read,
) -> std::io::Result<PathBuf> {
    let kept = quarantine_path(dir, name)?;
    let mut out = File::create(&kept)?;
    std::io::copy(&mut data, &mut out)?;
    out.sync_all()?;
    File::open(dir.join(QUARANTINE_DIR))?.sync_all()?;
    Ok(kept)
}
