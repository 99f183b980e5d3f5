//! Tests of the event log: round trips, recovery, corruption, retention, time lookup,
//! concurrent reading and group commit.

use super::*;
use std::sync::mpsc;
use std::time::Instant;

const TOPICS: [&str; 3] = ["a.b", "sensors.kitchen.temp", "x"];

/// Deterministic record `i`: topic cycles, seq = per-topic count, payload derived from i.
fn payload(i: u64) -> Vec<u8> {
    let n = (i % 50) as usize + 1;
    (0..n).map(|k| (i as usize + k) as u8).collect()
}

fn append_n(log: &mut EventLog, n: u64) {
    for _ in 0..n {
        let i = log.next_offset();
        let topic = TOPICS[(i % 3) as usize];
        let seq = log.last_seq(topic).unwrap_or(0) + 1;
        let p = payload(i);
        log.append(&Record {
            offset: i,
            seq,
            time_ns: 1_000 + i * 10,
            content_type: (i % 4) as u8,
            producer: (i & 1 == 0).then_some((7, i)),
            topic,
            payload: &p,
        })
        .unwrap();
    }
}

fn check(r: &OwnedRecord) {
    let i = r.offset;
    assert_eq!(r.topic, TOPICS[(i % 3) as usize], "offset {i}");
    assert_eq!(r.payload, payload(i), "offset {i}");
    assert_eq!(r.time_ns, 1_000 + i * 10);
    assert_eq!(r.content_type, (i % 4) as u8);
    assert_eq!(r.producer, (i & 1 == 0).then_some((7, i)));
    assert_eq!(r.seq, i / 3 + 1);
}

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        index_interval: 256,
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    }
}

fn read_all(reader: &mut LogReader, from: u64) -> Vec<OwnedRecord> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = reader.read(next, 97, 1 << 20).unwrap();
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        out.extend(batch);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, 0);
    // Nothing is visible before the flush.
    let mut reader = log.reader();
    append_n(&mut log, 3);
    assert!(reader.read(0, 10, 1 << 20).unwrap().is_empty());
    assert_eq!(log.flush().unwrap(), 3);
    assert_eq!(reader.read(0, 10, 1 << 20).unwrap().len(), 3);
    append_n(&mut log, 997);
    log.flush().unwrap();
    assert!(log.segment_count() > 5, "{}", log.segment_count());
    let all = read_all(&mut reader, 0);
    assert_eq!(all.len(), 1000);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        check(r);
    }
    // Random access through the sparse index, from a fresh reader each time.
    for from in [0u64, 1, 37, 255, 256, 499, 998, 999] {
        let got = log.reader().read(from, 3, 1 << 20).unwrap();
        assert_eq!(got[0].offset, from);
        got.iter().for_each(check);
    }
    assert!(reader.read(1000, 10, 1 << 20).unwrap().is_empty());
    // max_bytes stops early but always yields one record.
    let got = reader.read(10, 100, 1).unwrap();
    assert_eq!(got.len(), 1);
    let got = reader.read(10, 100, 60).unwrap();
    assert!(got.len() > 1 && got.len() < 100, "{}", got.len());
    // File names are the zero-padded first offsets.
    let files = segment_files(dir.path());
    assert_eq!(
        files[0].file_name().unwrap().to_str().unwrap(),
        "00000000000000000000.log"
    );
}

#[test]
fn reject_bad_appends() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        max_record_bytes: 100,
        ..small()
    };
    let (mut log, _) = EventLog::open(dir.path(), opts).unwrap();
    let mut r = Record {
        offset: 1,
        seq: 1,
        time_ns: 0,
        content_type: 0,
        producer: None,
        topic: "t",
        payload: b"",
    };
    assert!(matches!(
        log.append(&r),
        Err(LogError::NonContiguous {
            expected: 0,
            got: 1
        })
    ));
    r.offset = 0;
    let big = vec![0u8; 200];
    r.payload = &big;
    assert!(matches!(
        log.append(&r),
        Err(LogError::RecordTooLarge { .. })
    ));
    r.payload = b"ok";
    log.append(&r).unwrap();
    assert_eq!(log.next_offset(), 1);
    assert!(matches!(
        EventLog::open(
            dir.path(),
            LogOptions {
                segment_bytes: 0,
                ..small()
            }
        ),
        Err(LogError::InvalidOptions(_))
    ));
}

#[test]
fn producers_idle_past_their_ttl_are_forgotten_by_rolls_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    // Record times run 1_000..=5_990 ns (producer 7 on even offsets), then one at 99_999
    // from producer 42, then enough of producer 42 to seal its segment too.
    let opts = LogOptions {
        producer_ttl: Duration::from_nanos(50_000),
        ..small()
    };
    let extra = |log: &mut EventLog, pseq: u64| {
        let offset = log.next_offset();
        log.append(&Record {
            offset,
            seq: pseq,
            time_ns: 99_999 + pseq,
            content_type: 0,
            producer: Some((42, pseq)),
            topic: "other",
            payload: &[0u8; 100],
        })
        .unwrap();
    };
    {
        let (mut log, _) = EventLog::open(dir.path(), opts.clone()).unwrap();
        append_n(&mut log, 500);
        assert_eq!(log.producer_seq(7), Some(498));
        // 60 records of 140-odd bytes: at least two more segments are sealed, and the
        // state written when they are no longer holds producer 7.
        for pseq in 1..=60 {
            extra(&mut log, pseq);
        }
        assert_eq!(
            log.producer_seq(7),
            None,
            "forgotten when a segment was sealed"
        );
        assert_eq!(log.producer_seq(42), Some(60));
    }
    for verify_on_open in [false, true] {
        let (log, rec) = EventLog::open(
            dir.path(),
            LogOptions {
                verify_on_open,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(rec.producers.get(&7), None);
        assert_eq!(rec.producers[&42], 60);
        assert_eq!(log.producer_seq(42), Some(60));
        // Topics are never forgotten.
        assert_eq!(rec.last_seq_by_topic["a.b"], 167);
    }
    // A producer idle past the TTL within the active segment is forgotten by a reopen.
    {
        let (mut log, _) = EventLog::open(dir.path(), opts.clone()).unwrap();
        let offset = log.next_offset();
        log.append(&Record {
            offset,
            seq: 61,
            time_ns: 99_999 + 60 + 50_001,
            content_type: 0,
            producer: Some((43, 1)),
            topic: "other",
            payload: b"",
        })
        .unwrap();
    }
    let (_, rec) = EventLog::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(rec.producers.get(&42), None);
    assert_eq!(rec.producers[&43], 1);
    // Reopened with the default TTL: producer 7 stays gone, as the state files no longer
    // have it (only a full scan, `verify_on_open`, would read its records again).
    let (_, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.producers[&43], 1);
    assert_eq!(rec.producers.get(&7), None);
}

#[test]
fn the_last_value_cache_follows_flushes_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let all = |lvc: &LastOffsets| {
        let (lasts, covered) = lvc.matching(0, |_| true);
        let mut offsets: Vec<u64> = lasts.into_iter().map(|(_, o)| o).collect();
        offsets.sort_unstable();
        (offsets, covered)
    };
    let wanted = |lvc: &LastOffsets, topic: &str| lvc.matching(0, |t| t == topic).0;
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        let lvc = log.last_offsets();
        assert_eq!(all(&lvc), (vec![], 0));
        // Runs on one topic and switches between topics, the way appends come.
        for (offset, topic) in ["a", "a", "b", "a", "c", "c", "b"].iter().enumerate() {
            log.append(&Record {
                offset: offset as u64,
                seq: 1,
                time_ns: 1,
                content_type: 0,
                producer: None,
                topic,
                payload: b"v",
            })
            .unwrap();
            if offset == 2 {
                assert_eq!(all(&lvc), (vec![], 0), "nothing before a flush");
                log.flush().unwrap();
                assert_eq!(all(&lvc), (vec![1, 2], 3));
            }
        }
        log.flush().unwrap();
        assert_eq!(all(&lvc), (vec![3, 5, 6], 7));
        assert_eq!(wanted(&lvc, "b"), [("b".to_string(), 6)]);
        assert_eq!(
            lvc.matching(4, |_| true).0.len(),
            2,
            "offsets below `first` left out"
        );
    }
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(all(&log.last_offsets()), (vec![3, 5, 6], 7));
}

#[test]
fn reopen_recovers_offsets_seqs_and_producers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 500);
        log.append(&Record {
            offset: 500,
            seq: 1,
            time_ns: 99_999,
            content_type: 0,
            producer: Some((42, 17)),
            topic: "other",
            payload: b"p",
        })
        .unwrap();
    } // dropped: flushed
    for verify_on_open in [false, true] {
        let opts = LogOptions {
            verify_on_open,
            ..small()
        };
        let (log, rec) = EventLog::open(dir.path(), opts).unwrap();
        assert_eq!(rec.next_offset, 501);
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(rec.truncated_at, None);
        assert_eq!(rec.last_seq_by_topic["a.b"], 167); // offsets 0,3,..,498
        assert_eq!(rec.last_offset_by_topic["a.b"], 498);
        assert_eq!(rec.last_seq_by_topic["x"], 166); // 2,5,..,497
        assert_eq!(rec.last_offset_by_topic["x"], 497);
        assert_eq!(rec.last_seq_by_topic["other"], 1);
        assert_eq!(rec.producers[&7], 498);
        assert_eq!(rec.producers[&42], 17);
        assert_eq!(log.last_seq("sensors.kitchen.temp"), Some(167)); // 1,4,..,499
        assert_eq!(log.producer_seq(42), Some(17));
        let all = read_all(&mut log.reader(), 0);
        assert_eq!(all.len(), 501);
        all[..500].iter().for_each(check);
    }
    // Appends continue after reopen.
    let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
    append_n(&mut log, 10);
    log.flush().unwrap();
    assert_eq!(log.reader().read(505, 1, 100).unwrap()[0].offset, 505);
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 300);
    }
    let last = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Cut the last record in half.
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    let last_rec = log.reader().read(299, 1, 100).unwrap().remove(0);
    drop(log);
    let rec_len = last_rec.as_record().encoded_len() as u64;
    let cut = len - rec_len / 2;
    let f = OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(cut).unwrap();
    drop(f);

    let (mut log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, 299);
    assert_eq!(rec.truncated_bytes, cut - (len - rec_len));
    assert_eq!(rec.truncated_at, Some((last.clone(), len - rec_len)));
    assert_eq!(fs::metadata(&last).unwrap().len(), len - rec_len);
    append_n(&mut log, 5);
    drop(log);
    let (log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, 304);
    assert_eq!(rec.truncated_bytes, 0);
    let all = read_all(&mut log.reader(), 0);
    assert_eq!(all.len(), 304);
    all.iter().for_each(check);
}

/// Byte position of record `offset` in its segment file, found by walking the file.
fn position_of(path: &Path, offset: u64) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut pos = 0usize;
    loop {
        // The length word's bit 31 says the checksum is CRC-32C; the rest is the length.
        let word = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap());
        assert_ne!(word & (1 << 31), 0, "records are written with CRC-32C");
        let len = (word & !(1 << 31)) as usize;
        let body = &bytes[pos + 8..pos + 8 + len];
        let off = u64::from_le_bytes(body[..8].try_into().unwrap());
        if off == offset {
            return pos as u64;
        }
        pos += 8 + len;
    }
}

#[test]
fn flipped_byte_in_last_segment_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let base;
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 300);
        base = log.shared.read().segments.last().unwrap().base;
    }
    let last = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    let victim = base + 2;
    let pos = position_of(&last, victim);
    let mut bytes = fs::read(&last).unwrap();
    bytes[pos as usize + 8 + 30] ^= 0x40; // inside the body
    fs::write(&last, &bytes).unwrap();

    let (mut log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, victim);
    assert_eq!(rec.truncated_bytes, len - pos);
    assert_eq!(rec.truncated_at, Some((last.clone(), pos)));
    assert!(rec.truncation_reasons[0].contains("checksum mismatch"));
    // Nothing cut off is lost: the tail is in quarantine, byte for byte.
    assert_eq!(rec.quarantined.len(), 1);
    assert!(rec.quarantined[0].starts_with(dir.path().join(QUARANTINE_DIR)));
    assert_eq!(
        fs::read(&rec.quarantined[0]).unwrap(),
        &bytes[pos as usize..]
    );
    append_n(&mut log, 3);
    log.flush().unwrap();
    let all = read_all(&mut log.reader(), 0);
    assert_eq!(all.len() as u64, victim + 3);
    all.iter().for_each(check);
}

#[test]
fn corruption_in_an_older_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 400);
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 3);
    let older = &files[1];
    let base: u64 =
        segment::parse_name(older.file_name().unwrap().to_str().unwrap(), "log").unwrap();
    let victim = base + 1;
    let pos = position_of(older, victim);
    let mut bytes = fs::read(older).unwrap();
    bytes[pos as usize + 8 + 30] ^= 0x01;
    fs::write(older, bytes).unwrap();

    // Trusting the sealed-segment summary, open does not read the segment; a reader
    // reaching the bad record reports it instead of returning garbage.
    let (log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, 400);
    let err = log
        .reader()
        .read(base, 10, 1 << 20)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { position, .. } if *position == pos),
        "{err}"
    );
    drop(log);

    // A verifying open finds it and truncates from there, deleting the later segments.
    let total: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    let keep: u64 = files[..1]
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum::<u64>()
        + pos;
    let opts = LogOptions {
        verify_on_open: true,
        ..small()
    };
    let later: Vec<Vec<u8>> = files[2..].iter().map(|f| fs::read(f).unwrap()).collect();
    let (mut log, rec) = EventLog::open(dir.path(), opts).unwrap();
    assert_eq!(rec.next_offset, victim);
    assert_eq!(rec.truncated_bytes, total - keep);
    assert_eq!(rec.truncated_at, Some((older.clone(), pos)));
    // The segment's tail and every later segment, whole, are in quarantine.
    assert_eq!(rec.quarantined.len(), 1 + later.len());
    let kept: u64 = rec
        .quarantined
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(kept, total - keep);
    for (moved, bytes) in rec.quarantined[1..].iter().zip(&later) {
        assert_eq!(&fs::read(moved).unwrap(), bytes);
    }
    assert_eq!(segment_files(dir.path()).len(), 2);
    // State was rebuilt from before the corruption.
    let expect_ab = (0..victim).filter(|i| i % 3 == 0).count() as u64;
    assert_eq!(rec.last_seq_by_topic["a.b"], expect_ab);
    append_n(&mut log, 20);
    log.flush().unwrap();
    let all = read_all(&mut log.reader(), 0);
    assert_eq!(all.len() as u64, victim + 20);
    all.iter().for_each(check);
}

#[test]
fn damaged_sidecars_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 400);
    }
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "idx" || ext == "state" {
            let mut b = fs::read(&p).unwrap();
            let n = b.len();
            b[n / 2] ^= 0xff;
            fs::write(&p, b).unwrap();
        }
    }
    let (log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, 400);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(rec.last_seq_by_topic["a.b"], 134);
    assert_eq!(read_all(&mut log.reader(), 0).len(), 400);
}

#[test]
fn retention_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        retention_bytes: Some(10_000),
        ..small()
    };
    let (mut log, _) = EventLog::open(dir.path(), opts).unwrap();
    append_n(&mut log, 1000);
    log.flush().unwrap();
    let before = log.segment_count();
    let report = log.enforce_retention(SystemTime::now()).unwrap();
    assert!(report.segments_removed > 0);
    assert_eq!(log.segment_count(), before - report.segments_removed);
    assert!(log.size_bytes() <= 10_000 + 4096, "{}", log.size_bytes());
    assert!(log.size_bytes() > 10_000 - 4096);
    let first = log.first_offset();
    assert_eq!(report.first_offset, first);
    assert!(first > 0);
    let mut reader = log.reader();
    assert!(matches!(
        reader.read(0, 1, 100),
        Err(LogError::Truncated { requested: 0, first_available }) if first_available == first
    ));
    let rest = read_all(&mut reader, first);
    assert_eq!(rest.len() as u64, 1000 - first);
    rest.iter().for_each(check);
    // Topic state survives the deleted segments across a reopen.
    drop(log);
    let (mut log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.first_offset, first);
    assert_eq!(rec.last_seq_by_topic["a.b"], 334);
    assert_eq!(rec.producers[&7], 998);

    // By age: records are stamped at 1_000 + 10 i ns after the epoch, so "now" decides.
    let opts_age = LogOptions {
        retention_age: Some(Duration::from_nanos(100)),
        ..small()
    };
    log.opts = opts_age;
    let t = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
    let last_first_seg = log.shared.read().segments[0].last_time;
    // Not yet old enough: nothing removed.
    let r = log.enforce_retention(t(last_first_seg + 100)).unwrap();
    assert_eq!(r.segments_removed, 0);
    let r = log.enforce_retention(t(last_first_seg + 101)).unwrap();
    assert_eq!(r.segments_removed, 1);
    // Far future: everything sealed goes, the active segment stays.
    log.enforce_retention(t(u64::MAX)).unwrap();
    assert_eq!(log.segment_count(), 1);
    let active_base = log.first_offset();
    let got = read_all(&mut log.reader(), active_base);
    assert_eq!(got.len() as u64, 1000 - active_base);
}

#[test]
fn offset_for_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
    let mut reader = log.reader();
    assert_eq!(reader.offset_for_time(5).unwrap(), 0);
    append_n(&mut log, 700);
    log.flush().unwrap();
    // Record i has time 1000 + 10 i.
    assert_eq!(reader.offset_for_time(0).unwrap(), 0);
    assert_eq!(reader.offset_for_time(1000).unwrap(), 0);
    assert_eq!(reader.offset_for_time(1001).unwrap(), 1);
    for i in [1u64, 17, 256, 333, 512, 699] {
        assert_eq!(reader.offset_for_time(1000 + 10 * i).unwrap(), i);
        assert_eq!(reader.offset_for_time(1000 + 10 * i - 5).unwrap(), i);
    }
    assert_eq!(reader.offset_for_time(1000 + 10 * 699 + 1).unwrap(), 700);
    assert_eq!(reader.offset_for_time(u64::MAX).unwrap(), 700);
}

#[test]
fn concurrent_reader_never_sees_partial_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
    let mut reader = log.reader();
    const N: u64 = 20_000;
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next = 0u64;
        while next < N {
            assert!(Instant::now() < deadline, "reader stuck at {next}");
            let batch = reader.read(next, 500, 1 << 20).expect("read");
            if batch.is_empty() {
                std::thread::yield_now();
            }
            for r in batch {
                assert_eq!(r.offset, next);
                check(&r);
                next += 1;
            }
        }
        next
    });
    for chunk in 0..N / 100 {
        append_n(&mut log, 100);
        if chunk % 3 == 0 {
            log.flush().unwrap();
        }
    }
    log.flush().unwrap();
    assert_eq!(handle.join().unwrap(), N);
}

#[test]
fn group_commit_publishes_durable_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        fsync: FsyncPolicy::Every(Duration::from_millis(2)),
        ..small()
    };
    let (mut log, _) = EventLog::open(dir.path(), opts).unwrap();
    let syncer = log.syncer();
    let (tx, rx) = mpsc::channel();
    let handle = syncer
        .spawn(log.options().fsync, move |d| {
            let _ = tx.send(d);
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 1..=5u64 {
        append_n(&mut log, 100); // crosses segment rolls
        let flushed = log.commit().unwrap();
        assert_eq!(flushed, round * 100);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let d = rx.recv_timeout(left).expect("durable offset in time");
            if d >= flushed {
                break;
            }
        }
        assert!(log.durable_offset() >= flushed);
        assert!(syncer.durable_offset() >= flushed);
    }
    // Explicit sync on the writer thread.
    append_n(&mut log, 1);
    assert_eq!(log.sync().unwrap(), 501);
    assert!(syncer.spawn(FsyncPolicy::Never, |_| {}).is_none());
    drop(log); // closes the syncer
    handle.join().unwrap().unwrap();
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    let err = EventLog::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    drop(log);
    EventLog::open(dir.path(), small()).unwrap();
}

#[test]
fn zero_filled_tail_is_truncated() {
    // What a crash can leave when the file size was updated but the data blocks were not.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 10);
    }
    let last = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    let f = OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len + 300).unwrap();
    drop(f);
    let (log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, 10);
    assert_eq!(rec.truncated_bytes, 300);
    assert!(rec.truncation_reasons[0].contains("implausible record length 0"));
    assert_eq!(read_all(&mut log.reader(), 0).len(), 10);
}

#[test]
fn missing_middle_segment_cuts_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = EventLog::open(dir.path(), small()).unwrap();
        append_n(&mut log, 400);
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 4);
    fs::remove_file(&files[2]).unwrap();
    let later: u64 = files[3..]
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    let end_of_second =
        segment::parse_name(files[2].file_name().unwrap().to_str().unwrap(), "log").unwrap();
    let (mut log, rec) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(rec.next_offset, end_of_second);
    assert_eq!(rec.truncated_bytes, later);
    assert!(rec.truncation_reasons[0].contains("expected"));
    assert_eq!(segment_files(dir.path()).len(), 2);
    append_n(&mut log, 5);
    log.flush().unwrap();
    let all = read_all(&mut log.reader(), 0);
    assert_eq!(all.len() as u64, end_of_second + 5);
    all.iter().for_each(check);
}

/// Pages of `path` in the page cache (mmap + mincore).
fn resident_pages(path: &std::path::Path) -> usize {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of an open file, unmapped before returning; mincore
    // fills one byte per page of it.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    vec.iter().filter(|b| **b & 1 != 0).count()
}

#[test]
fn synced_segments_but_the_newest_sealed_leave_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    // tmpfs keeps file pages in memory whatever we advise: nothing to see there.
    // SAFETY: statfs fills the struct for a valid path.
    let tmpfs = unsafe {
        let mut st = std::mem::zeroed::<libc::statfs>();
        let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    };
    if tmpfs {
        eprintln!("temp dir is on tmpfs: page cache advice has no effect, not checked");
        return;
    }
    let opts = LogOptions {
        fsync: FsyncPolicy::Always,
        ..small()
    };
    let (mut log, _) = EventLog::open(dir.path(), opts).unwrap();
    append_n(&mut log, 400); // about five 4 KiB segments
    log.sync().unwrap();
    let mut segments: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    let resident: Vec<usize> = segments.iter().map(|p| resident_pages(p)).collect();
    let n = resident.len();
    assert!(
        resident[..n - 2].iter().all(|&r| r == 0),
        "older sealed segments dropped: {resident:?}"
    );
    assert!(
        resident[n - 2] > 0 && resident[n - 1] > 0,
        "the newest sealed and the active segment stay cached: {resident:?}"
    );
    // Still readable, from disk.
    assert_eq!(read_all(&mut log.reader(), 0).len(), 400);
}

#[test]
fn reader_positioned_in_a_deleted_segment_reports_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        retention_bytes: Some(1),
        ..small()
    };
    let (mut log, _) = EventLog::open(dir.path(), opts).unwrap();
    append_n(&mut log, 300);
    log.flush().unwrap();
    let mut reader = log.reader();
    assert_eq!(reader.read(0, 5, 1 << 20).unwrap().len(), 5);
    log.enforce_retention(SystemTime::now()).unwrap();
    assert_eq!(log.segment_count(), 1);
    let first = log.first_offset();
    match reader.read(5, 5, 1 << 20) {
        Err(LogError::Truncated {
            requested: 5,
            first_available,
        }) => assert_eq!(first_available, first),
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(reader.read(first, 1, 100).unwrap()[0].offset, first);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

/// Throughput figures for docs/LOG.md; no assertions on time. Run with
/// `cargo test -p agora-bus --release --lib log::tests::throughput_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_report() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let (mut log, _) = EventLog::open(dir.path(), opts.clone()).unwrap();
    let payload = [7u8; 64];
    let t = Instant::now();
    for i in 0..N {
        log.append(&Record {
            offset: i,
            seq: i + 1,
            time_ns: i,
            content_type: 1,
            producer: None,
            topic: "sensors.kitchen.temp",
            payload: &payload,
        })
        .unwrap();
        if i % 1000 == 999 {
            log.commit().unwrap();
        }
    }
    log.flush().unwrap();
    let append = t.elapsed();
    let t = Instant::now();
    let mut reader = log.reader();
    let (mut next, mut n) = (0, 0u64);
    while next < N {
        next = reader
            .read_with(next, 10_000, usize::MAX, |r| n += r.payload.len() as u64)
            .unwrap();
    }
    let read_borrowed = t.elapsed();
    let t = Instant::now();
    let mut next = 0;
    while next < N {
        let b = reader.read(next, 10_000, usize::MAX).unwrap();
        next = b.last().unwrap().offset + 1;
    }
    let read_owned = t.elapsed();
    let t = Instant::now();
    let mut reader2 = log.reader();
    let mut hits = 0;
    for k in 0..10_000u64 {
        let from = (k * 7919) % N;
        hits += reader2.read(from, 1, 1 << 20).unwrap().len();
    }
    let random = t.elapsed();
    let bytes = log.size_bytes();
    let t = Instant::now();
    log.sync().unwrap();
    let sync1 = t.elapsed();
    drop(log);
    let t = Instant::now();
    let (log, rec) = EventLog::open(dir.path(), opts.clone()).unwrap();
    let reopen = t.elapsed();
    assert_eq!(rec.next_offset, N);
    drop(log);
    let t = Instant::now();
    let verify = LogOptions {
        verify_on_open: true,
        ..opts
    };
    let (mut log, _) = EventLog::open(dir.path(), verify).unwrap();
    let reopen_verify = t.elapsed();
    let t = Instant::now();
    for _ in 0..200 {
        let i = log.next_offset();
        log.append(&Record {
            offset: i,
            seq: 1,
            time_ns: i,
            content_type: 1,
            producer: None,
            topic: "t",
            payload: &payload,
        })
        .unwrap();
        log.sync().unwrap();
    }
    let synced = t.elapsed();
    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "log size: {:.1} MiB, {} payload bytes read, {hits} random hits",
        bytes as f64 / 1048576.0,
        n
    );
    println!(
        "append 1M x 64 B (commit every 1000): {append:?} = {:.2} M rec/s",
        rate(append) / 1e6
    );
    println!(
        "read_with (borrowed): {read_borrowed:?} = {:.2} M rec/s",
        rate(read_borrowed) / 1e6
    );
    println!(
        "read (owned): {read_owned:?} = {:.2} M rec/s",
        rate(read_owned) / 1e6
    );
    println!("10k random single-record reads: {random:?}");
    println!("final sync: {sync1:?}; reopen (summaries): {reopen:?}; reopen (verify all): {reopen_verify:?}");
    println!(
        "200 append+fdatasync: {synced:?} = {:?} per sync",
        synced / 200
    );
}
