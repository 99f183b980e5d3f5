//! Persistence of a space: a write-ahead log of store mutations plus periodic snapshots, in a
//! data directory, so that after a restart the space holds exactly what it held.
//!
//! # Files
//!
//! - `space-wal-<generation>.log`: the write-ahead log, one file per generation.
//! - `space.snapshot`: the last snapshot (written to `space.snapshot.tmp`, fsynced, renamed).
//!
//! Every record is framed `[length u32 LE][crc32 u32 LE of the payload][payload]`. Payloads:
//!
//! | kind | payload |
//! |---|---|
//! | 1 OUT | `[1][seq u64][lease deadline u64: ms since the Unix epoch, 0 = none][tuple CBOR]` |
//! | 2 REMOVE | `[2][seq u64]` (taken, confirmed or expired) |
//! | 3 META | `[3][next seq u64][first WAL generation not covered u64]` (snapshot only, first) |
//!
//! A snapshot starts with the 8 bytes `AGSPSNP1`, then a META record, then one OUT record per
//! live tuple. Reservations are not logged: a reserved tuple is still stored, so after a
//! restart it is available again (its taker never confirmed as far as the disk knows).
//! Lease deadlines are stored as wall-clock time, so an expired tuple stays expired.
//!
//! # Recovery
//!
//! Load the snapshot, replay the WAL generations it does not cover in order (OUT inserts,
//! REMOVE deletes; replay is idempotent). A record that is cut short or fails its CRC ends its
//! file: the file is truncated there (a torn tail from a crash), what is cut off is kept in
//! `quarantine/` beside it (never deleted), and a warning is logged (an error past 1 MiB:
//! more than a crash tears). Then a fresh snapshot is written and old generations are
//! deleted.
//!
//! # Durability
//!
//! [`FsyncPolicy::Always`] fsyncs each record before the operation returns;
//! [`FsyncPolicy::Every`] writes and fsyncs from a background thread every interval (group
//! commit); the server answers an `OUT` only once the fsync covering it is done;
//! [`FsyncPolicy::Never`] hands each record to the OS at once but never fsyncs (survives a
//! killed process, not a power cut).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_tuplespace::store::{Journal, Seq, Store, SyncListener};
use agora_tuplespace::{Error, Space, Tuple};

use crate::dir::{lock_dir, sync_dir, LockError};
pub use crate::fsync::FsyncPolicy;
use crate::quarantine::{keep_in_quarantine, QUIET_CUT_BYTES};

type Result<T, E = Error> = std::result::Result<T, E>;

/// How long opening a space waits for a previous holder of its directory (a space being
/// dropped in this process, whose background thread is finishing).
const LOCK_WAIT: Duration = Duration::from_secs(3);

fn lock(dir: &Path) -> Result<File> {
    lock_dir(dir, LOCK_WAIT).map_err(|e| match e {
        LockError::Busy { dir } => {
            Error::Storage(format!("{} is in use by another space", dir.display()))
        }
        LockError::Io { source, .. } => Error::Io(source),
    })
}

const SNAPSHOT: &str = "space.snapshot";
const SNAPSHOT_TMP: &str = "space.snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"AGSPSNP1";
const KIND_OUT: u8 = 1;
const KIND_REMOVE: u8 = 2;
const KIND_META: u8 = 3;
/// Largest record accepted when reading (a corrupt length beyond this ends the file).
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Settings of [`open`].
#[derive(Clone, Debug)]
pub struct PersistOptions {
    /// When to fsync. Default: every 5 ms.
    pub fsync: FsyncPolicy,
    /// Write a snapshot (and drop old WAL files) once the WAL has grown by this much.
    /// Default 64 MiB.
    pub snapshot_after_bytes: u64,
}

impl Default for PersistOptions {
    fn default() -> Self {
        PersistOptions {
            fsync: FsyncPolicy::default(),
            snapshot_after_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What [`open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Tuples loaded.
    pub tuples: usize,
    /// Tuples whose lease ran out while the space was down (dropped).
    pub expired: usize,
    /// WAL records replayed.
    pub records: usize,
    /// Bytes cut off torn or corrupt WAL tails.
    pub truncated_bytes: u64,
    /// Where those bytes were kept (`<dir>/quarantine/...`), one file per cut.
    pub quarantined: Vec<PathBuf>,
}

fn wal_name(gen: u64) -> String {
    format!("space-wal-{gen:020}.log")
}

fn parse_wal_name(name: &str) -> Option<u64> {
    name.strip_prefix("space-wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn out_payload(seq: Seq, tuple: &Tuple, deadline_ms: u64) -> Vec<u8> {
    let cbor = tuple.to_cbor();
    let mut p = Vec::with_capacity(17 + cbor.len());
    p.push(KIND_OUT);
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&deadline_ms.to_le_bytes());
    p.extend_from_slice(&cbor);
    p
}

fn now_wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock ms of a monotonic deadline (0 = none; at least 1 for a real deadline).
fn wall_deadline(expires: Option<Instant>) -> u64 {
    match expires {
        None => 0,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now()).as_millis() as u64;
            now_wall_ms().saturating_add(left).max(1)
        }
    }
}

/// A decoded record.
enum Record {
    Out {
        seq: Seq,
        deadline_ms: u64,
        tuple: Tuple,
    },
    Remove(Seq),
    Meta {
        next_seq: Seq,
        first_gen: u64,
    },
}

fn u64_at(p: &[u8], at: usize) -> Option<u64> {
    p.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn decode_record(p: &[u8]) -> Option<Record> {
    match *p.first()? {
        KIND_OUT => Some(Record::Out {
            seq: u64_at(p, 1)?,
            deadline_ms: u64_at(p, 9)?,
            tuple: Tuple::from_cbor(p.get(17..)?).ok()?,
        }),
        KIND_REMOVE if p.len() == 9 => Some(Record::Remove(u64_at(p, 1)?)),
        KIND_META if p.len() == 17 => Some(Record::Meta {
            next_seq: u64_at(p, 1)?,
            first_gen: u64_at(p, 9)?,
        }),
        _ => None,
    }
}

/// Reads framed records from `bytes`; returns them and the length of the valid prefix.
fn read_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let len = len as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        if len > MAX_RECORD || at + 8 + len > bytes.len() {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(r) = decode_record(payload) else {
            break;
        };
        out.push(r);
        at += 8 + len;
    }
    (out, at)
}

struct WalFile {
    gen: u64,
    writer: BufWriter<File>,
    /// Another handle to the same file, fsynced without holding the lock.
    sync_handle: File,
    bytes: u64,
    lsn: u64,
}

/// The write-ahead log: the store's [`Journal`].
pub struct Wal {
    /// Holds an exclusive `flock` on `dir/LOCK` while this log is open.
    _lock: File,
    dir: PathBuf,
    policy: FsyncPolicy,
    file: Mutex<WalFile>,
    appended: AtomicU64,
    durable: AtomicU64,
    listener: RwLock<Option<SyncListener>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn open_wal_file(dir: &Path, gen: u64) -> Result<WalFile> {
    let path = dir.join(wal_name(gen));
    let f = OpenOptions::new().create(true).append(true).open(&path)?;
    let bytes = f.metadata()?.len();
    let sync_handle = f.try_clone()?;
    let _ = sync_dir(dir);
    Ok(WalFile {
        gen,
        writer: BufWriter::with_capacity(256 * 1024, f),
        sync_handle,
        bytes,
        lsn: 0,
    })
}

impl Wal {
    fn lock(&self) -> std::sync::MutexGuard<'_, WalFile> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, payload: &[u8]) -> Result<()> {
        let rec = frame(payload);
        let mut f = self.lock();
        f.writer.write_all(&rec)?;
        f.bytes += rec.len() as u64;
        f.lsn += 1;
        let lsn = f.lsn;
        self.appended.store(lsn, Ordering::Release);
        match self.policy {
            FsyncPolicy::Always => {
                f.writer.flush()?;
                f.sync_handle.sync_data()?;
                drop(f);
                self.mark_durable(lsn);
            }
            FsyncPolicy::Never => {
                f.writer.flush()?;
                drop(f);
                self.mark_durable(lsn);
            }
            FsyncPolicy::Every(_) => {}
        }
        Ok(())
    }

    fn mark_durable(&self, lsn: u64) {
        let before = self.durable.fetch_max(lsn, Ordering::AcqRel);
        if lsn > before {
            if let Some(l) = self
                .listener
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                l();
            }
        }
    }

    fn sync_now(&self) -> Result<()> {
        let (lsn, handle) = {
            let mut f = self.lock();
            if f.lsn <= self.durable.load(Ordering::Acquire) {
                return Ok(());
            }
            f.writer.flush()?;
            (f.lsn, f.sync_handle.try_clone()?)
        };
        handle.sync_data()?;
        self.mark_durable(lsn);
        Ok(())
    }

    /// Closes the current generation (flushed and fsynced) and starts the next one. Returns
    /// the new generation.
    fn rotate(&self) -> Result<u64> {
        let mut f = self.lock();
        f.writer.flush()?;
        f.sync_handle.sync_data()?;
        let lsn = f.lsn;
        let mut next = open_wal_file(&self.dir, f.gen + 1)?;
        next.lsn = lsn;
        *f = next;
        let gen = f.gen;
        drop(f);
        self.mark_durable(lsn);
        Ok(gen)
    }

    fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

impl Journal for Wal {
    fn record_out(&self, seq: Seq, tuple: &Tuple, expires: Option<Instant>) -> Result<()> {
        self.append(&out_payload(seq, tuple, wall_deadline(expires)))
    }

    fn record_remove(&self, seq: Seq) -> Result<()> {
        let mut p = [0u8; 9];
        p[0] = KIND_REMOVE;
        p[1..].copy_from_slice(&seq.to_le_bytes());
        self.append(&p)
    }

    fn positions(&self) -> (u64, u64) {
        (
            self.appended.load(Ordering::Acquire),
            self.durable.load(Ordering::Acquire),
        )
    }

    fn sync(&self) -> Result<()> {
        self.sync_now()
    }

    fn set_sync_listener(&self, listener: Option<SyncListener>) {
        *self.listener.write().unwrap_or_else(|e| e.into_inner()) = listener;
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.sync_now() {
            tracing::warn!("space WAL: final sync failed: {e}");
        }
    }
}

/// Writes a snapshot of `store` and deletes the WAL generations it covers.
fn snapshot(dir: &Path, store: &Store, wal: &Wal) -> Result<()> {
    // Mutations from here on go to the new generation; everything in older ones is already
    // applied to the store (each is recorded and applied under the same shard lock), so the
    // capture below covers them. Replaying the new generation over it is idempotent.
    let gen = wal.rotate()?;
    let items = store.snapshot();
    let next_seq = store.next_seq();
    let tmp = dir.join(SNAPSHOT_TMP);
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(SNAPSHOT_MAGIC)?;
        let mut meta = vec![KIND_META];
        meta.extend_from_slice(&next_seq.to_le_bytes());
        meta.extend_from_slice(&gen.to_le_bytes());
        w.write_all(&frame(&meta))?;
        for (seq, tuple, expires) in &items {
            w.write_all(&frame(&out_payload(*seq, tuple, wall_deadline(*expires))))?;
        }
        let f = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    let _ = sync_dir(dir);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(g) = entry.file_name().to_str().and_then(parse_wal_name) {
            if g < gen {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Opens (or creates) a persistent space in `dir`: what was stored there before is back,
/// and every change is written ahead to the log there.
pub fn open_space(dir: &Path, options: &PersistOptions) -> Result<(Space, RecoveryReport)> {
    let (store, report) = open(dir, options)?;
    Ok((Space::from_store(store), report))
}

/// Opens (or creates) the persisted space in `dir`: loads the snapshot, replays the WAL
/// (truncating a torn or corrupt tail), compacts into a fresh snapshot, and returns a store
/// that journals every mutation there, plus what was recovered. A background thread does
/// group commit and periodic snapshots for as long as the store lives.
pub fn open(dir: &Path, options: &PersistOptions) -> Result<(Arc<Store>, RecoveryReport)> {
    fs::create_dir_all(dir)?;
    let lock = lock(dir)?;
    let mut report = RecoveryReport::default();
    let mut tuples: BTreeMap<Seq, (Tuple, u64)> = BTreeMap::new();
    let mut next_seq: Seq = 1;
    let mut first_gen = 0u64;
    let snap_path = dir.join(SNAPSHOT);
    if snap_path.exists() {
        let bytes = fs::read(&snap_path)?;
        let body = bytes
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .ok_or_else(|| {
                Error::Storage(format!("{} has no snapshot header", snap_path.display()))
            })?;
        let (records, valid) = read_records(body);
        if valid != body.len() {
            return Err(Error::Storage(format!(
                "{} is corrupt at byte {}",
                snap_path.display(),
                valid + SNAPSHOT_MAGIC.len()
            )));
        }
        for r in records {
            match r {
                Record::Meta {
                    next_seq: n,
                    first_gen: g,
                } => {
                    next_seq = next_seq.max(n);
                    first_gen = g;
                }
                Record::Out {
                    seq,
                    deadline_ms,
                    tuple,
                } => {
                    tuples.insert(seq, (tuple, deadline_ms));
                }
                Record::Remove(seq) => {
                    tuples.remove(&seq);
                }
            }
        }
    }
    let mut gens: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(parse_wal_name))
        .collect();
    gens.sort_unstable();
    let mut last_gen = first_gen;
    for g in gens {
        let path = dir.join(wal_name(g));
        if g < first_gen {
            let _ = fs::remove_file(&path);
            continue;
        }
        last_gen = last_gen.max(g);
        let bytes = fs::read(&path)?;
        let (records, valid) = read_records(&bytes);
        if valid < bytes.len() {
            let cut = (bytes.len() - valid) as u64;
            // Keep what is cut off before cutting: it may hold acknowledged tuples.
            let name = format!("{}-from-byte-{valid}", wal_name(g));
            let kept = keep_in_quarantine(dir, &name, &bytes[valid..])?;
            if cut > QUIET_CUT_BYTES {
                tracing::error!(
                    "space WAL {}: corrupt at offset {valid}; {cut} byte(s) after it (more than \
                     a crash tears) cut off and kept in {}",
                    path.display(),
                    kept.display()
                );
            } else {
                tracing::warn!(
                    "space WAL {}: torn or corrupt tail, truncating {cut} byte(s) at offset \
                     {valid} (kept in {})",
                    path.display(),
                    kept.display()
                );
            }
            report.truncated_bytes += cut;
            report.quarantined.push(kept);
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        report.records += records.len();
        for r in records {
            match r {
                Record::Out {
                    seq,
                    deadline_ms,
                    tuple,
                } => {
                    next_seq = next_seq.max(seq + 1);
                    tuples.insert(seq, (tuple, deadline_ms));
                }
                Record::Remove(seq) => {
                    next_seq = next_seq.max(seq + 1);
                    tuples.remove(&seq);
                }
                Record::Meta { .. } => {}
            }
        }
    }
    let store = Arc::new(Store::new());
    let now_wall = now_wall_ms();
    let now = Instant::now();
    for (seq, (tuple, deadline_ms)) in tuples {
        let expires = if deadline_ms == 0 {
            None
        } else if deadline_ms <= now_wall {
            report.expired += 1;
            continue;
        } else {
            now.checked_add(Duration::from_millis(deadline_ms - now_wall))
        };
        report.tuples += 1;
        store.restore(seq, tuple, expires);
    }
    store.ensure_next_seq(next_seq);
    let wal = Arc::new(Wal {
        _lock: lock,
        dir: dir.to_path_buf(),
        policy: options.fsync,
        file: Mutex::new(open_wal_file(dir, last_gen + 1)?),
        appended: AtomicU64::new(0),
        durable: AtomicU64::new(0),
        listener: RwLock::new(None),
    });
    store.set_journal(Some(wal.clone()));
    snapshot(dir, &store, &wal)?;
    spawn_background(
        Arc::downgrade(&store),
        wal,
        dir.to_path_buf(),
        options.clone(),
    )?;
    Ok((store, report))
}

/// Group commit and periodic snapshots, until the store is dropped.
fn spawn_background(
    store: Weak<Store>,
    wal: Arc<Wal>,
    dir: PathBuf,
    options: PersistOptions,
) -> Result<()> {
    let interval = match options.fsync {
        FsyncPolicy::Every(d) => d,
        _ => Duration::from_millis(50),
    };
    std::thread::Builder::new()
        .name("agora-space-wal".into())
        .spawn(move || {
            let mut next = Instant::now() + interval;
            loop {
                // A steady cadence: the next round starts `interval` after this one started,
                // not after its fsync ended (an fsync can take milliseconds here).
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next = Instant::now() + interval;
                if !background_round(&store, &wal, &dir, &options) {
                    return;
                }
            }
        })?;
    Ok(())
}

/// One round of the background thread: group commit, then a snapshot if the WAL grew
/// enough. `false` once the store is gone (after a last sync).
fn background_round(store: &Weak<Store>, wal: &Wal, dir: &Path, options: &PersistOptions) -> bool {
    let Some(store) = store.upgrade() else {
        let _ = wal.sync_now();
        return false;
    };
    if let FsyncPolicy::Every(_) = options.fsync {
        if let Err(e) = wal.sync_now() {
            tracing::error!("space WAL: fsync failed: {e}");
        }
    }
    if wal.bytes() > options.snapshot_after_bytes {
        if let Err(e) = snapshot(dir, &store, wal) {
            tracing::error!("space snapshot failed: {e}");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest write-ahead log file in `dir`.
    fn newest_wal(dir: &Path) -> PathBuf {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().and_then(parse_wal_name).is_some())
            .map(|e| e.path())
            .max()
            .unwrap()
    }
    use agora_tuplespace::Value;
    use agora_tuplespace::{Field, Template};

    fn t(n: i64) -> Tuple {
        Tuple(vec![Value::from("p"), Value::Int(n)])
    }
    fn any() -> Template {
        Template(vec![Field::Any, Field::Any])
    }

    fn opts(fsync: FsyncPolicy) -> PersistOptions {
        PersistOptions {
            fsync,
            snapshot_after_bytes: 64 * 1024 * 1024,
        }
    }

    #[test]
    fn restart_preserves_tuples_order_leases_and_reservations() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, report) = open(dir.path(), &opts(FsyncPolicy::Always)).unwrap();
            assert_eq!(report, RecoveryReport::default());
            let space = Space::from_store(store);
            for n in 0..6 {
                space.out(t(n)).unwrap();
            }
            space
                .out_with_lease(t(100), Duration::from_millis(1))
                .unwrap();
            space
                .out_with_lease(t(200), Duration::from_secs(3600))
                .unwrap();
            assert_eq!(space.try_take(&Template::exact(&t(2))), Some(t(2)));
            // Reserved, never confirmed: available again after the restart, in place.
            let (res, _) = space
                .store()
                .reserve_now(&Template::exact(&t(0)), 1, None)
                .unwrap();
            let _ = res;
            // Confirmed: gone for good.
            let (res, _) = space
                .store()
                .reserve_now(&Template::exact(&t(4)), 1, None)
                .unwrap();
            space.store().confirm(res).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5)); // let the 1 ms lease pass on the wall clock
        let (store, report) = open(dir.path(), &opts(FsyncPolicy::Always)).unwrap();
        let space = Space::from_store(store);
        assert_eq!(
            space.dump(Some(&any())),
            vec![t(0), t(1), t(3), t(5), t(200)]
        );
        assert_eq!(report.expired, 1);
        // The lease survived: t(200) still has one.
        assert!(space.store().next_deadline().is_some());
        // New tuples come after the old ones.
        space.out(t(7)).unwrap();
        assert_eq!(space.dump(Some(&any())).last(), Some(&t(7)));
        drop(space);
        let (store, _) = open(dir.path(), &opts(FsyncPolicy::Never)).unwrap();
        assert_eq!(Space::from_store(store).len(), 6);
    }

    #[test]
    fn torn_and_corrupt_tails_are_truncated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(dir.path(), &opts(FsyncPolicy::Always)).unwrap();
            let space = Space::from_store(store);
            for n in 0..3 {
                space.out(t(n)).unwrap();
            }
        }
        let wal = newest_wal(dir.path());
        // Torn tail: half a record appended.
        let rec = frame(&out_payload(99, &t(99), 0));
        let mut f = OpenOptions::new().append(true).open(&wal).unwrap();
        f.write_all(&rec[..rec.len() / 2]).unwrap();
        drop(f);
        let (store, report) = open(dir.path(), &opts(FsyncPolicy::Always)).unwrap();
        assert_eq!(report.truncated_bytes, (rec.len() / 2) as u64);
        // Kept, byte for byte, in quarantine.
        assert_eq!(report.quarantined.len(), 1);
        assert_eq!(
            fs::read(&report.quarantined[0]).unwrap(),
            &rec[..rec.len() / 2]
        );
        let space = Space::from_store(store);
        assert_eq!(space.dump(None), vec![t(0), t(1), t(2)]);
        space.out(t(3)).unwrap();
        space.out(t(4)).unwrap();
        drop(space);
        // Corrupt tail: flip a byte in the last record of the newest WAL.
        let wal = newest_wal(dir.path());
        let mut bytes = fs::read(&wal).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x55;
        fs::write(&wal, &bytes).unwrap();
        let (store, report) = open(dir.path(), &opts(FsyncPolicy::Always)).unwrap();
        assert!(report.truncated_bytes > 0);
        assert_eq!(
            Space::from_store(store).dump(None),
            (0..4).map(t).collect::<Vec<_>>()
        );
    }

    #[test]
    fn group_commit_reaches_durable_and_snapshots_compact() {
        let dir = tempfile::tempdir().unwrap();
        let o = PersistOptions {
            fsync: FsyncPolicy::Every(Duration::from_millis(2)),
            snapshot_after_bytes: 2000,
        };
        let (store, _) = open(dir.path(), &o).unwrap();
        for n in 0..200 {
            store.out(t(n), None).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (a, d) = store.journal_positions().unwrap();
            if d >= a {
                break;
            }
            assert!(Instant::now() < deadline, "group commit never caught up");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The background thread snapshots once the WAL passes 2000 bytes.
        let deadline = Instant::now() + Duration::from_secs(5);
        while store_wal_bytes(dir.path()) > 4000 {
            assert!(Instant::now() < deadline, "no snapshot happened");
            std::thread::sleep(Duration::from_millis(5));
        }
        store.take_all(&any(), 50);
        store.sync().unwrap();
        drop(store);
        let (store, _) = open(dir.path(), &o).unwrap();
        assert_eq!(store.len(), 150);
        assert_eq!(store.dump(None).first(), Some(&t(50)));
    }

    fn store_wal_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().and_then(parse_wal_name).is_some())
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}
