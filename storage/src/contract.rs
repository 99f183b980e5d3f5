//! The storage boundary's contract as a test suite: generic functions over the traits of
//! [`boundary`](crate::boundary) that panic when an implementation breaks a promise. The
//! embedded files run them in this crate's tests; a second backend runs them in its own
//! (with the `contract` feature), each on a store of its own.
//!
//! A store given to these functions is empty (its first offset is its next offset) unless
//! said otherwise. Functions that reopen a store take `open`, which opens the same store on
//! each call: empty the first time, and after the previous one was dropped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::boundary::{
    CursorStore, EventReader, EventStore, LastValueCache, ResumeState, StoreError,
};
use crate::log::OwnedRecord;

/// Now, in nanoseconds since the epoch: record times near it, so that no store takes them
/// for records long gone.
fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// A record to append at `offset`, its time `t0 + 10 × i`.
fn event(offset: u64, i: u64, t0: u64, topic: &str, payload: &[u8]) -> OwnedRecord {
    OwnedRecord {
        offset,
        seq: i + 1,
        time_ns: t0 + 10 * i,
        content_type: u8::try_from(i % 3).unwrap_or(0),
        producer: None,
        topic: topic.to_owned(),
        payload: payload.to_vec(),
    }
}

fn append_all<S: EventStore>(store: &mut S, records: &[OwnedRecord]) {
    for rec in records {
        store.append(&rec.as_record()).expect("append");
    }
}

/// Everything `reader` delivers from `from` (wanted by `wanted`, at most `max_records` read,
/// stopping past `max_bytes`), and where it says to continue.
fn read<R: EventReader>(
    reader: &mut R,
    from: u64,
    max_records: usize,
    max_bytes: usize,
    wanted: impl Fn(&str) -> bool,
) -> (Vec<OwnedRecord>, u64) {
    let mut got = Vec::new();
    let next = reader
        .read_matching(from, max_records, max_bytes, wanted, |r| {
            got.push(OwnedRecord::from(r))
        })
        .expect("read");
    (got, next)
}

/// Every visible record from `from` on.
fn read_all<R: EventReader>(reader: &mut R, from: u64) -> Vec<OwnedRecord> {
    read(reader, from, usize::MAX, usize::MAX, |_| true).0
}

/// Offsets are contiguous and checked, a record becomes visible to readers at `flush` or
/// `commit` and reads back as it was appended, and `sync` makes everything durable.
pub fn offsets_visibility_and_durability<S: EventStore>(mut store: S) {
    let base = store.next_offset();
    assert_eq!(store.first_offset(), base, "the store is empty");
    let mut reader = store.reader();
    assert_eq!(reader.end_offset(), base);
    assert_eq!(reader.first_offset(), base);
    assert!(store.durable_offset() <= base);

    let t0 = now_ns();
    let misplaced = event(base + 1, 0, t0, "a.b", b"x");
    assert!(
        store.append(&misplaced.as_record()).is_err(),
        "an offset other than next_offset is refused"
    );
    assert_eq!(
        store.next_offset(),
        base,
        "a refused record takes no offset"
    );
    assert_eq!(store.flush().expect("flush"), base, "nothing was stored");
    assert_eq!(read_all(&mut reader, base), []);

    let mut records = vec![
        event(base, 0, t0, "a.b", b"first"),
        event(base + 1, 1, t0, "c", &[0xab; 3000]),
        event(base + 2, 2, t0, "a.b", b""),
    ];
    records[1].producer = Some((7, 1));
    records[2].producer = Some((7, 2));
    append_all(&mut store, &records);
    assert_eq!(store.next_offset(), base + 3);
    // Before the flush a reader may see some of them, but only whole, in order.
    let early = reader.end_offset();
    assert!((base..=base + 3).contains(&early));
    assert_eq!(
        read_all(&mut reader, base)[..],
        records[..(early - base) as usize]
    );

    assert_eq!(store.commit().expect("commit"), base + 3);
    assert_eq!(reader.end_offset(), base + 3, "a commit makes them visible");
    let (got, next) = read(&mut reader, base, 100, usize::MAX, |_| true);
    assert_eq!(got, records, "each record reads back as appended");
    assert_eq!(next, base + 3);
    assert_eq!(
        read(&mut reader, base + 3, 100, usize::MAX, |_| true),
        (vec![], base + 3),
        "a read at the end reads nothing and stays there"
    );
    assert_eq!(
        store.flush().expect("flush"),
        base + 3,
        "nothing new to flush"
    );
    assert!(
        store.durable_offset() <= base + 3,
        "durable never passes appended"
    );

    assert_eq!(
        store.sync().expect("sync"),
        base + 3,
        "sync makes everything durable"
    );
    assert_eq!(store.durable_offset(), base + 3);
    // Appends go on after a sync.
    let more = event(base + 3, 3, t0, "c", b"more");
    store.append(&more.as_record()).expect("append");
    assert_eq!(store.flush().expect("flush"), base + 4);
    assert_eq!(read_all(&mut reader, base + 3), [more]);
}

/// A read stops at its record and byte limits (both counting records the topic predicate
/// refuses), delivers only what the predicate wants, says where to go on; clones read on
/// their own; `offset_for_time` finds the first record at or after a time.
pub fn reads_with_limits_and_filters<S: EventStore>(mut store: S) {
    let base = store.next_offset();
    assert_eq!(store.first_offset(), base, "the store is empty");
    let t0 = now_ns();
    // Ten records, each 10 bytes of topic and payload, on `a.x` and `b.y` by turns.
    let records: Vec<OwnedRecord> = (0..10)
        .map(|i| {
            let topic = if i % 2 == 0 { "a.x" } else { "b.y" };
            event(base + i, i, t0, topic, b"payload")
        })
        .collect();
    append_all(&mut store, &records);
    store.commit().expect("commit");
    let mut reader = store.reader();
    let all = |_: &str| true;
    let only_a = |t: &str| t.starts_with("a.");

    assert_eq!(
        read(&mut reader, base, 4, usize::MAX, all),
        (records[..4].to_vec(), base + 4)
    );
    let a_records: Vec<OwnedRecord> = records
        .iter()
        .filter(|r| only_a(&r.topic))
        .cloned()
        .collect();
    assert_eq!(
        read(&mut reader, base, 4, usize::MAX, only_a),
        (a_records[..2].to_vec(), base + 4),
        "refused records count towards the limit"
    );
    assert_eq!(
        read(&mut reader, base, usize::MAX, usize::MAX, only_a),
        (a_records.clone(), base + 10)
    );
    assert_eq!(
        read(&mut reader, base + 1, 1, usize::MAX, only_a),
        (vec![], base + 2),
        "a read that delivers nothing still moves on"
    );
    assert_eq!(
        read(&mut reader, base, usize::MAX, 25, all),
        (records[..3].to_vec(), base + 3),
        "the record that reaches max_bytes is the last"
    );
    assert_eq!(
        read(&mut reader, base, usize::MAX, 25, only_a),
        (vec![records[0].clone(), records[2].clone()], base + 3)
    );
    assert_eq!(
        read(&mut reader, base + 5, usize::MAX, 1, all),
        (records[5..6].to_vec(), base + 6),
        "at least one record"
    );
    assert_eq!(
        read(&mut reader, base + 5, 0, usize::MAX, all),
        (vec![], base + 5)
    );

    // Clones read on their own, from anywhere, in any order.
    let mut other = reader.clone();
    assert_eq!(
        read(&mut reader, base + 7, 2, usize::MAX, all).0,
        records[7..9]
    );
    assert_eq!(
        read(&mut other, base + 1, 2, usize::MAX, all).0,
        records[1..3]
    );
    assert_eq!(
        read(&mut reader, base + 9, 5, usize::MAX, all).0,
        records[9..]
    );
    assert_eq!(read(&mut other, base, 1, usize::MAX, all).0, records[..1]);

    let at = |reader: &mut S::Reader, t: u64| reader.offset_for_time(t).expect("offset_for_time");
    assert_eq!(at(&mut reader, 0), base);
    assert_eq!(at(&mut reader, t0), base);
    assert_eq!(at(&mut reader, t0 + 30), base + 3);
    assert_eq!(
        at(&mut reader, t0 + 25),
        base + 3,
        "the first at or after the time"
    );
    assert_eq!(at(&mut reader, t0 + 90), base + 9);
    assert_eq!(
        at(&mut reader, t0 + 91),
        base + 10,
        "past every record: the end"
    );
}

/// The last-value cache lists each wanted topic's newest visible event and says how far it
/// is complete.
pub fn last_value_cache<S: EventStore>(mut store: S) {
    let base = store.next_offset();
    assert_eq!(store.first_offset(), base, "the store is empty");
    let cache = store.last_value_cache();
    let sorted = |(mut lasts, covered): (Vec<(String, u64)>, u64)| {
        lasts.sort();
        (lasts, covered)
    };
    let owned = |lasts: &[(&str, u64)]| -> Vec<(String, u64)> {
        lasts.iter().map(|&(t, o)| (t.to_owned(), o)).collect()
    };
    assert_eq!(sorted(cache.matching(base, |_| true)), (vec![], base));
    let t0 = now_ns();
    let topics = ["a.1", "b.1", "a.1", "c.1"];
    let records: Vec<OwnedRecord> = (0..4)
        .map(|i| event(base + i, i, t0, topics[i as usize], b"v"))
        .collect();
    append_all(&mut store, &records);
    store.commit().expect("commit");
    assert_eq!(
        sorted(cache.matching(base, |_| true)),
        (
            owned(&[("a.1", base + 2), ("b.1", base + 1), ("c.1", base + 3)]),
            base + 4
        )
    );
    assert_eq!(
        sorted(store.last_value_cache().matching(base, |t| t != "c.1")),
        (owned(&[("a.1", base + 2), ("b.1", base + 1)]), base + 4),
        "a second handle shares the cache; the predicate picks topics"
    );
    assert_eq!(
        sorted(cache.matching(base + 2, |_| true)),
        (owned(&[("a.1", base + 2), ("c.1", base + 3)]), base + 4),
        "events below `first` are left out"
    );

    // Appended, not yet flushed: the cache may lag, but never claims what readers can't see.
    let late = event(base + 4, 4, t0, "d.1", b"v");
    store.append(&late.as_record()).expect("append");
    let (lasts, covered) = cache.matching(base, |_| true);
    assert!(covered <= store.reader().end_offset());
    assert!(lasts.iter().all(|&(_, o)| o < covered));
    store.flush().expect("flush");
    assert_eq!(
        sorted(cache.matching(base, |_| true)),
        (
            owned(&[
                ("a.1", base + 2),
                ("b.1", base + 1),
                ("c.1", base + 3),
                ("d.1", base + 4)
            ]),
            base + 5
        )
    );
}

/// What the broker resumes from: each topic's last sequence, each producer's, the next
/// offset; the same after the store is reopened, which holds every synced record.
pub fn resumes_after_reopening<S: EventStore>(mut open: impl FnMut() -> S) {
    let mut store = open();
    let base = store.next_offset();
    assert_eq!(store.first_offset(), base, "the store is empty");
    assert_eq!(
        store.resume_state(),
        ResumeState {
            next_offset: base,
            first_offset: base,
            ..ResumeState::default()
        }
    );
    let t0 = now_ns();
    let mut records = vec![
        event(base, 0, t0, "a", b"1"),
        event(base + 1, 1, t0, "b", b"2"),
        event(base + 2, 2, t0, "a", b"3"),
        event(base + 3, 3, t0, "c", b"4"),
    ];
    // Topic sequences: a 1, b 1, a 2, c 1; producers 7 (two publishes) and 9.
    for (rec, seq) in records.iter_mut().zip([1, 1, 2, 1]) {
        rec.seq = seq;
    }
    records[0].producer = Some((7, 1));
    records[2].producer = Some((7, 2));
    records[3].producer = Some((9, 5));
    append_all(&mut store, &records);
    let want = ResumeState {
        next_offset: base + 4,
        first_offset: base,
        last_seq_by_topic: HashMap::from([("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]),
        producers: HashMap::from([(7, 2), (9, 5)]),
    };
    assert_eq!(store.resume_state(), want);
    assert_eq!(store.sync().expect("sync"), base + 4);
    drop(store);

    let mut store = open();
    assert_eq!(
        store.resume_state(),
        want,
        "reopened, the store resumes where it was"
    );
    assert_eq!(store.next_offset(), base + 4);
    assert_eq!(
        store.durable_offset(),
        base + 4,
        "what was synced is durable"
    );
    assert_eq!(read_all(&mut store.reader(), base), records);
    assert_eq!(
        sorted_lasts(&store.last_value_cache()),
        (
            vec![
                ("a".into(), base + 2),
                ("b".into(), base + 1),
                ("c".into(), base + 3)
            ],
            base + 4
        ),
        "the last-value cache is restored too"
    );
    let next = event(base + 4, 4, t0, "b", b"5");
    store.append(&next.as_record()).expect("offsets go on");
    store.commit().expect("commit");
    assert_eq!(read_all(&mut store.reader(), base + 4), [next]);
}

fn sorted_lasts<C: LastValueCache>(cache: &C) -> (Vec<(String, u64)>, u64) {
    let (mut lasts, covered) = cache.matching(0, |_| true);
    lasts.sort();
    (lasts, covered)
}

/// Retention removes records from the start only: reads below the first offset fail as
/// truncated, the rest reads on contiguously, and offsets are not reused. `records` are
/// appended first; retention is then applied as of `now`. Returns the first offset left,
/// for the caller to check that its store did remove something.
pub fn retention<S: EventStore>(mut store: S, records: u64, now: SystemTime) -> u64 {
    let base = store.next_offset();
    assert_eq!(store.first_offset(), base, "the store is empty");
    let t0 = now_ns();
    for i in 0..records {
        let rec = event(
            base + i,
            i,
            t0,
            "r.t",
            &[u8::try_from(i % 251).unwrap_or(0); 100],
        );
        store.append(&rec.as_record()).expect("append");
    }
    let end = base + records;
    assert_eq!(store.commit().expect("commit"), end);
    store.sync().expect("sync");
    let mut reader = store.reader();

    let first = store.enforce_retention(now).expect("retention");
    assert_eq!(store.first_offset(), first);
    assert_eq!(reader.first_offset(), first);
    assert!(
        (base..=end).contains(&first),
        "first {first} outside {base}..={end}"
    );
    assert_eq!(store.next_offset(), end, "retention takes no offsets back");
    assert_eq!(store.resume_state().first_offset, first);
    if first > base {
        let e = reader
            .read_matching(base, 10, usize::MAX, |_| true, |_| {})
            .expect_err("a read below the first offset fails");
        assert!(e.is_truncated(), "{e} is not `truncated`");
        let e = reader
            .read_matching(first - 1, 10, usize::MAX, |_| true, |_| {})
            .expect_err("a read below the first offset fails");
        assert!(e.is_truncated(), "{e} is not `truncated`");
    }
    let left = read_all(&mut reader, first);
    let offsets: Vec<u64> = left.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (first..end).collect::<Vec<_>>(),
        "what is left is contiguous"
    );

    let next = event(end, records, t0, "r.t", b"after");
    store
        .append(&next.as_record())
        .expect("append after retention");
    assert_eq!(store.commit().expect("commit"), end + 1);
    assert_eq!(read_all(&mut reader, end), [next]);
    first
}

/// Cursors: set, moved, deleted; staged changes seen at once; persisted ones kept when the
/// store is reopened.
pub fn cursor_store<C: CursorStore>(mut open: impl FnMut() -> C) {
    let mut cursors = open();
    assert_eq!(cursors.get("a"), None);
    assert!(!cursors.delete("a"), "nothing to delete");
    cursors.set("a", 5);
    cursors.set("b", 0);
    assert_eq!((cursors.get("a"), cursors.get("b")), (Some(5), Some(0)));
    cursors.set("a", 9);
    assert_eq!(cursors.get("a"), Some(9), "set moves a cursor");
    cursors.set("a", 8);
    assert_eq!(
        cursors.get("a"),
        Some(8),
        "in either direction: the caller decides"
    );
    cursors.persist().expect("persist");
    cursors.persist().expect("persisting nothing new is fine");
    drop(cursors);

    let mut cursors = open();
    assert_eq!((cursors.get("a"), cursors.get("b")), (Some(8), Some(0)));
    assert!(cursors.delete("b"));
    assert_eq!(cursors.get("b"), None);
    cursors.set("c.d-e_f", u64::MAX);
    cursors.persist().expect("persist");
    drop(cursors);

    let cursors = open();
    assert_eq!(cursors.get("a"), Some(8));
    assert_eq!(cursors.get("b"), None, "a persisted delete stays deleted");
    assert_eq!(cursors.get("c.d-e_f"), Some(u64::MAX));
}

/// A year after records are written: a store with any age limit shorter than that removes
/// them. For [`retention`]'s `now`.
pub fn a_year_later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
mod embedded {
    //! The suite against the embedded implementations.

    use std::path::Path;

    use crate::boundary::EventStore;
    use crate::cursors::CursorFile;
    use crate::log::{EventLog, FsyncPolicy, LogOptions};

    fn open(dir: &Path, opts: LogOptions) -> EventLog {
        EventLog::open(dir, opts).expect("open").0
    }

    #[test]
    fn the_event_log_keeps_offsets_visibility_and_durability() {
        for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            let log = open(
                dir.path(),
                LogOptions {
                    fsync,
                    ..LogOptions::default()
                },
            );
            assert_eq!(log.commit_is_durable(), fsync == FsyncPolicy::Never);
            super::offsets_visibility_and_durability(log);
        }
    }

    #[test]
    fn the_event_log_reads_with_limits_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        super::reads_with_limits_and_filters(open(dir.path(), LogOptions::default()));
        // Across segments (one record each) and sparse index entries.
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_bytes: 64,
            index_interval: 1,
            ..LogOptions::default()
        };
        super::reads_with_limits_and_filters(open(dir.path(), opts));
    }

    #[test]
    fn the_event_log_keeps_its_last_value_cache() {
        let dir = tempfile::tempdir().unwrap();
        super::last_value_cache(open(dir.path(), LogOptions::default()));
    }

    #[test]
    fn the_event_log_resumes_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_bytes: 100,
            ..LogOptions::default()
        };
        super::resumes_after_reopening(|| open(dir.path(), opts.clone()));
    }

    #[test]
    fn the_event_log_applies_retention_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_bytes: 1024,
            retention_age: Some(std::time::Duration::from_secs(60)),
            ..LogOptions::default()
        };
        let first = super::retention(open(dir.path(), opts), 40, super::a_year_later());
        assert!(first > 0, "sealed segments were removed");
        // By size, as of now.
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_bytes: 1024,
            retention_bytes: Some(2048),
            ..LogOptions::default()
        };
        let first = super::retention(open(dir.path(), opts), 40, std::time::SystemTime::now());
        assert!(first > 0, "sealed segments were removed");
        // No limits: nothing goes.
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_bytes: 1024,
            ..LogOptions::default()
        };
        assert_eq!(
            super::retention(open(dir.path(), opts), 40, super::a_year_later()),
            0
        );
    }

    #[test]
    fn the_cursor_file_keeps_the_cursor_contract() {
        let dir = tempfile::tempdir().unwrap();
        super::cursor_store(|| CursorFile::load(dir.path()).unwrap());
    }
}
