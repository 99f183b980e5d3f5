//! The durable subscriptions' cursors on disk: [`CursorFile`], the embedded
//! [`CursorStore`].
//!
//! One file, `<data>/cursors` ([`CURSORS_FILE`]): a CBOR map, name → the next offset to
//! deliver. It is replaced whole at each [`persist`](CursorStore::persist), atomically: a
//! temp file is written and fsynced, renamed over the file, and the directory is fsynced, so
//! a crash leaves the old map or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::boundary::CursorStore;

/// Name of the cursor file in the data dir.
pub const CURSORS_FILE: &str = "cursors";

/// The cursors, kept in memory and written to [`CURSORS_FILE`] whole.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
    /// Name → the next offset to deliver.
    map: BTreeMap<String, u64>,
}

impl CursorFile {
    /// Reads `<data_dir>/cursors` (none yet: no cursors). A file that does not decode is an
    /// [`io::ErrorKind::InvalidData`] error naming it.
    pub fn load(data_dir: &Path) -> io::Result<CursorFile> {
        let path = data_dir.join(CURSORS_FILE);
        let map = match std::fs::read(&path) {
            Ok(bytes) => ciborium::from_reader(&bytes[..]).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cursor file {} is unreadable: {}",
                        path.display(),
                        agora_wire::text::cbor_error_message(&e)
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(CursorFile { path, map })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CursorStore for CursorFile {
    type Error = io::Error;

    fn get(&self, name: &str) -> Option<u64> {
        self.map.get(name).copied()
    }

    fn set(&mut self, name: &str, next: u64) {
        match self.map.get_mut(name) {
            Some(c) => *c = next,
            None => {
                self.map.insert(name.to_owned(), next);
            }
        }
    }

    fn delete(&mut self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    /// Replace the file atomically: temp file, fsync, rename, fsync the directory.
    fn persist(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut bytes = Vec::new();
        ciborium::into_writer(&self.map, &mut bytes).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_a_cbor_map_of_names_to_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut cursors = CursorFile::load(dir.path()).unwrap();
        cursors.set("b", 7);
        cursors.set("a", 3);
        cursors.persist().unwrap();
        let bytes = std::fs::read(dir.path().join(CURSORS_FILE)).unwrap();
        let map: BTreeMap<String, u64> = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(map, BTreeMap::from([("a".into(), 3), ("b".into(), 7)]));
        assert!(
            !dir.path().join("cursors.tmp").exists(),
            "the temp file is renamed over the file"
        );
    }

    #[test]
    fn a_file_that_does_not_decode_is_invalid_data_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CURSORS_FILE), b"\xff\x00not cbor").unwrap();
        let e = CursorFile::load(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("cursor file"), "{e}");
        assert!(e.to_string().contains(CURSORS_FILE), "{e}");
    }
}
