//! The log writer thread: owns the event log (an [`EventStore`], the embedded [`EventLog`]
//! unless the broker opens another) and appends the events the dispatcher has
//! stamped, in offset order, beside the dispatcher's hot loop instead of inside it (checksum,
//! record encoding and the write to the OS are too much work for the thread that stamps and
//! forwards every event).
//!
//! The dispatcher adds each stamped event frame to a [`LogBatch`] and hands the batch over at
//! each commit (every millisecond, at once while confirms wait, or when the batch is full:
//! [`BATCH_EVENTS`], [`BATCH_BYTES`]). A small frame is copied into the batch's buffer; a
//! large one is kept as a second reference to the message ([`Frame::share`]), which costs no
//! copy but counts references on the message's connection metadata, a cache line the I/O
//! thread, the dispatcher and the writer would fight over per event: copying is cheaper for
//! small events, sharing for large ones. Per batch the writer appends every
//! record and commits: flushes to the OS (replays can read them from then on) and asks the
//! syncer for an fsync; under fsync `never` ([`EventStore::commit_is_durable`]) it rings the
//! durable bell itself, as flushed is as durable as it gets.
//!
//! This keeps what the log promised before: a record reaches the OS within about a
//! millisecond of being forwarded, as it did when it sat in the dispatcher's write buffer,
//! and confirms still wait for the fsync that covers them. The channel is bounded, so a log
//! that falls behind (a slow disk) slows the dispatcher down rather than growing without end,
//! and the log lags the events sent by at most [`QUEUED_BATCHES`] full batches.
//!
//! A write error marks the log failed ([`LogWriter::failed`]) and rings the durable bell; the
//! dispatcher then answers the confirms still waiting with an error and refuses further
//! publishes with an error reply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::frame::Frame;
use agora_storage::log::{EventLog, Record};
use agora_storage::EventStore;
use agora_wire::bus as protocol;

/// Batches the writer may be behind before the dispatcher waits for it.
const QUEUED_BATCHES: usize = 16;
/// A batch is handed over once it holds this many events or bytes, if its commit is not due
/// earlier: with [`QUEUED_BATCHES`] this bounds how far the log may lag the events sent
/// (replays, gap healing included, wait for it; a lag of whole seconds, possible when batches
/// were bounded only by time, outlasted their wait).
pub(crate) const BATCH_EVENTS: usize = 1024;
pub(crate) const BATCH_BYTES: usize = 1 << 20;
/// Event frames up to this size are copied into a batch; larger ones are shared.
const COPY_MAX: usize = 256;

/// Stamped events for the log, in offset order: each one's event frame (`topic ‖ 0 ‖ meta ‖
/// payload`, which holds everything the record needs but the producer) and the producer
/// fields of its publish.
#[derive(Default)]
pub(crate) struct LogBatch {
    /// Copied frames, back to back.
    frames: Vec<u8>,
    /// Shared frames.
    shared: Vec<Frame>,
    events: Vec<(Where, Option<(u64, u64)>)>,
    /// Bytes of all frames, copied and shared.
    bytes: usize,
}

/// Where a batch holds an event's frame.
enum Where {
    /// In `frames`, ending here (starting where the previous copied one ended).
    CopiedTo(usize),
    /// The next one of `shared`.
    Shared,
}

impl LogBatch {
    /// Add one event (copied or shared, by size). The frame must not change afterwards.
    pub(crate) fn push(&mut self, event_frame: &mut Frame, producer: Option<(u64, u64)>) {
        let bytes = event_frame.as_slice();
        self.bytes += bytes.len();
        if bytes.len() <= COPY_MAX {
            self.frames.extend_from_slice(bytes);
            self.events
                .push((Where::CopiedTo(self.frames.len()), producer));
        } else {
            self.shared.push(event_frame.share());
            self.events.push((Where::Shared, producer));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the batch should be handed over now ([`BATCH_EVENTS`], [`BATCH_BYTES`]).
    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES
    }

    /// Empty the batch, keeping its buffers.
    fn clear(&mut self) {
        self.frames.clear();
        self.shared.clear();
        self.events.clear();
        self.bytes = 0;
    }

    /// Each event's frame and producer fields.
    fn iter(&self) -> impl Iterator<Item = (&[u8], Option<(u64, u64)>)> + '_ {
        let mut copied_from = 0;
        let mut shared = self.shared.iter();
        self.events.iter().map(move |(at, producer)| {
            let frame = match at {
                Where::CopiedTo(end) => {
                    let frame = &self.frames[copied_from..*end];
                    copied_from = *end;
                    frame
                }
                // As many `Shared` entries as shared frames, by construction.
                Where::Shared => shared.next().map_or(&[][..], |f| f.as_slice()),
            };
            (frame, *producer)
        })
    }
}

/// Why [`LogWriter::flush`] or [`LogWriter::finish`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError<E> {
    /// The log failed.
    #[error(transparent)]
    Log(E),
    /// The writer thread is gone: it stopped after a failure, or panicked.
    #[error("the log writer has stopped")]
    Stopped,
}

enum Work<E> {
    /// Append these, flush them to the OS and request an fsync.
    Append(LogBatch),
    /// Answer once everything sent before is flushed (with the flushed offset).
    Flush(SyncSender<Result<u64, E>>),
    /// Delete segments past the retention limits.
    Retention,
    /// Flush, fsync on this thread, answer with the durable offset, and stop.
    Finish(SyncSender<Result<u64, E>>),
}

/// The dispatcher's handle on the writer thread, which owns the log `S`.
pub(crate) struct LogWriter<S: EventStore = EventLog> {
    work: Option<SyncSender<Work<S::Error>>>,
    /// Batches the writer is done with, emptied, for the dispatcher to fill again: a fresh
    /// batch per commit grew its buffers from new memory, and the page faults (zeroing whole
    /// huge pages) were a few percent of the dispatcher's time.
    recycled: Receiver<LogBatch>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl<S: EventStore + 'static> LogWriter<S> {
    /// Move `log` to a new writer thread. `ring_durable` is called after each commit when a
    /// commit is all the durability the log gives (fsync `never`: then nothing else says that
    /// more of the log is durable), and when the log fails (so the dispatcher answers the
    /// confirms that will never be durable).
    pub(crate) fn spawn(
        log: S,
        ring_durable: impl Fn() + Send + 'static,
    ) -> std::io::Result<LogWriter<S>> {
        let (tx, rx) = sync_channel(QUEUED_BATCHES);
        // Room for every batch in flight: the writer never waits to hand one back.
        let (recycle, recycled) = sync_channel(QUEUED_BATCHES + 2);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("agora-log-write".into())
            .spawn(move || run(log, rx, recycle, &flag, ring_durable))?;
        Ok(LogWriter {
            work: Some(tx),
            recycled,
            thread: Some(thread),
            failed,
        })
    }

    /// Whether a write has failed (the log takes nothing more).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Hand over `batch`'s stamped events, in offset order, leaving it empty (with the
    /// buffers of a batch the writer is done with, when there is one). Waits only while the
    /// writer is [`QUEUED_BATCHES`] behind.
    pub(crate) fn append(&self, batch: &mut LogBatch) {
        let empty = self.recycled.try_recv().unwrap_or_default();
        self.send(Work::Append(std::mem::replace(batch, empty)));
    }

    /// Wait until everything handed over is flushed to the OS; returns the flushed offset.
    pub(crate) fn flush(&self) -> Result<u64, WriteError<S::Error>> {
        let (tx, rx) = sync_channel(1);
        self.send(Work::Flush(tx));
        answer(rx.recv())
    }

    /// Ask for the retention limits to be enforced (the writer logs what it deleted).
    pub(crate) fn enforce_retention(&self) {
        self.send(Work::Retention);
    }

    /// Flush and fsync everything handed over, stop the thread; returns the durable offset.
    pub(crate) fn finish(&mut self) -> Result<u64, WriteError<S::Error>> {
        let (tx, rx) = sync_channel(1);
        self.send(Work::Finish(tx));
        let durable = answer(rx.recv());
        self.work = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("event log writer panicked");
            }
        }
        durable
    }

    fn send(&self, work: Work<S::Error>) {
        let sent = self.work.as_ref().map(|tx| tx.send(work));
        if !matches!(sent, Some(Ok(()))) && !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!("event log writer is gone; the log takes nothing more");
        }
    }
}

/// The writer's answer, or [`WriteError::Stopped`] if it went away without one.
fn answer<E>(
    reply: Result<Result<u64, E>, std::sync::mpsc::RecvError>,
) -> Result<u64, WriteError<E>> {
    match reply {
        Ok(answer) => answer.map_err(WriteError::Log),
        Err(_) => Err(WriteError::Stopped),
    }
}

impl<S: EventStore> Drop for LogWriter<S> {
    fn drop(&mut self) {
        // Closing the channel makes the writer flush, sync and stop.
        self.work = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<S: EventStore>(
    mut log: S,
    work: Receiver<Work<S::Error>>,
    recycle: SyncSender<LogBatch>,
    failed: &AtomicBool,
    ring_durable: impl Fn(),
) {
    let durable_at_commit = log.commit_is_durable();
    let fail = |e: &dyn std::fmt::Display| {
        if !failed.swap(true, Ordering::Relaxed) {
            tracing::error!("event log write failed; the log takes nothing more: {e}");
            ring_durable();
        }
    };
    while let Ok(item) = work.recv() {
        match item {
            Work::Append(mut batch) => {
                for (frame, producer) in batch.iter() {
                    // The dispatcher built the frame from a checked publish; a frame that
                    // does not parse is a bug, reported, and it stops the log rather than
                    // leave a hole in the offsets.
                    let Some(record) = record(frame, producer) else {
                        fail(&"an event handed to the log writer does not parse");
                        break;
                    };
                    if let Err(e) = log.append(&record) {
                        fail(&e);
                        break;
                    }
                }
                match log.commit() {
                    Ok(_) if durable_at_commit => ring_durable(),
                    Ok(_) => {}
                    Err(e) => fail(&e),
                }
                batch.clear();
                // Full (the dispatcher has not taken the earlier ones) or gone: let it go.
                let _ = recycle.try_send(batch);
            }
            Work::Flush(reply) => {
                let _ = reply.send(log.flush());
            }
            // The log says what retention removed.
            Work::Retention => {
                if let Err(e) = log.enforce_retention(SystemTime::now()) {
                    tracing::error!("retention failed: {e}");
                }
            }
            Work::Finish(reply) => {
                let _ = reply.send(log.sync());
                return;
            }
        }
    }
    // The dispatcher went away without finishing (it failed): keep what was handed over.
    if let Err(e) = log.sync() {
        tracing::error!("final event log sync failed: {e}");
    }
}

/// A stamped event's record, read back from its event frame (`None`, reported, if the frame
/// does not parse).
fn record(frame: &[u8], producer: Option<(u64, u64)>) -> Option<Record<'_>> {
    let parsed = protocol::decode_event(frame)
        .map_err(|e| e.to_string())
        .and_then(|layout| {
            std::str::from_utf8(&frame[..layout.topic_len])
                .map(|topic| (layout, topic))
                .map_err(|_| "topic is not UTF-8".to_string())
        });
    let (layout, topic) = parsed
        .map_err(|e| tracing::error!("event handed to the log writer does not parse: {e}"))
        .ok()?;
    Some(Record {
        offset: layout.meta.offset,
        seq: layout.meta.seq,
        time_ns: layout.meta.time_ns,
        content_type: layout.meta.content_type,
        producer,
        topic,
        payload: &frame[layout.payload_start..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_stores_each_event_as_its_record_and_reports_flush_and_sync() {
        use agora_storage::log::{FsyncPolicy, LogOptions, OwnedRecord};
        use agora_wire::bus::{Meta, KIND_EVENT};

        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            fsync: FsyncPolicy::Never,
            ..LogOptions::default()
        };
        let (log, _) = EventLog::open(dir.path(), opts).unwrap();
        let mut reader = log.reader();
        let syncer = log.syncer();
        let rung = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = rung.clone();
        let mut writer = LogWriter::spawn(log, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();

        // Small (copied) and large (shared) events, with and without producer fields.
        type Event = (&'static str, Vec<u8>, Option<(u64, u64)>);
        let events: Vec<Event> = vec![
            ("a.small", b"tiny".to_vec(), None),
            ("b.large", vec![0xcd; 5000], Some((7, 1))),
            ("a.small", Vec::new(), Some((7, 2))),
        ];
        let mut batch = LogBatch::default();
        for (offset, (topic, payload, producer)) in events.iter().enumerate() {
            let meta = Meta {
                kind: KIND_EVENT,
                offset: offset as u64,
                seq: offset as u64 + 1,
                time_ns: 1_000 + offset as u64,
                content_type: 2,
            };
            batch.push(
                &mut Frame::event(topic.as_bytes(), &meta, payload),
                *producer,
            );
        }
        writer.append(&mut batch);
        assert!(batch.is_empty(), "appending hands the events over");
        assert_eq!(writer.flush().unwrap(), 3);
        assert_eq!(syncer.flushed_offset(), 3);
        assert!(
            rung.load(Ordering::SeqCst) >= 1,
            "under `never` a commit rings"
        );
        let got = reader.read(0, 10, 1 << 20).unwrap();
        let want: Vec<OwnedRecord> = events
            .iter()
            .enumerate()
            .map(|(offset, (topic, payload, producer))| OwnedRecord {
                offset: offset as u64,
                seq: offset as u64 + 1,
                time_ns: 1_000 + offset as u64,
                content_type: 2,
                producer: *producer,
                topic: topic.to_string(),
                payload: payload.clone(),
            })
            .collect();
        assert_eq!(got, want);
        // The writer is done with that batch (the flush came after it): the next append
        // leaves us its buffers, emptied.
        batch.push(
            &mut Frame::event(
                b"a.small",
                &Meta {
                    kind: KIND_EVENT,
                    offset: 3,
                    seq: 4,
                    time_ns: 1_003,
                    content_type: 2,
                },
                b"again",
            ),
            None,
        );
        writer.append(&mut batch);
        assert!(batch.is_empty());
        assert!(
            batch.frames.capacity() > 0 && batch.events.capacity() >= 3,
            "a recycled batch keeps its buffers"
        );
        assert_eq!(writer.flush().unwrap(), 4);
        assert!(!writer.failed());
        assert_eq!(writer.finish().unwrap(), 4);
    }

    #[test]
    fn a_failed_write_marks_the_log_failed_and_rings() {
        use agora_storage::log::LogOptions;
        use agora_wire::bus::{Meta, KIND_EVENT};

        let dir = tempfile::tempdir().unwrap();
        // A record larger than the log takes: the append fails as a disk error would.
        let opts = LogOptions {
            max_record_bytes: 100,
            ..LogOptions::default()
        };
        let (log, _) = EventLog::open(dir.path(), opts).unwrap();
        let rung = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = rung.clone();
        let mut writer = LogWriter::spawn(log, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let meta = Meta {
            kind: KIND_EVENT,
            offset: 0,
            seq: 1,
            time_ns: 1,
            content_type: 0,
        };
        let payload = [1u8; 200];
        let mut batch = LogBatch::default();
        batch.push(&mut Frame::event(b"a.b", &meta, &payload), None);
        writer.append(&mut batch);
        let _ = writer.flush();
        assert!(writer.failed());
        assert_eq!(rung.load(Ordering::SeqCst), 1, "the failure rings once");
        assert_eq!(writer.finish().unwrap(), 0, "nothing was stored");
    }

    #[test]
    fn a_batch_gives_back_each_event_and_its_producer() {
        let frame = |bytes: &[u8]| {
            let mut f = Frame::with_len(bytes.len());
            f.as_mut_slice().copy_from_slice(bytes);
            f
        };
        let big = vec![7u8; COPY_MAX + 1];
        let mut batch = LogBatch::default();
        assert!(batch.is_empty());
        batch.push(&mut frame(b"first"), None);
        batch.push(&mut frame(&big), Some((9, 9)));
        batch.push(&mut frame(b""), Some((1, 2)));
        batch.push(&mut frame(b"fourth"), Some((3, 4)));
        let got: Vec<_> = batch.iter().collect();
        assert_eq!(
            got,
            [
                (&b"first"[..], None),
                (&big[..], Some((9, 9))),
                (&b""[..], Some((1, 2))),
                (&b"fourth"[..], Some((3, 4)))
            ]
        );
        assert_eq!((batch.shared.len(), batch.frames.len()), (1, 11));
        assert_eq!(batch.bytes, 11 + big.len());
        assert!(!batch.is_full());
        let capacity = batch.frames.capacity();
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!((batch.iter().count(), batch.bytes), (0, 0));
        assert_eq!(
            batch.frames.capacity(),
            capacity,
            "clearing keeps the buffers"
        );
    }
}
