//! The dispatcher thread: owns the request ROUTER and the events XPUB, and runs the broker's
//! state machine with `zmq::poll`: it reads requests, serves them, and does what is due
//! (commits, confirms, stats, beacons, queue group backlogs) between reads.
//!
//! # Layout
//!
//! * this file: the [`Dispatcher`], its sockets and the poll loop; requests decoded and
//!   answered; every reply sent, and every other socket send the features ask for.
//! * `fast_path.rs`: a publish checked, stamped, handed to the log and sent on the events
//!   socket (`Egress`: bursts, the slow-subscriber timeout, lossy spells); the per-topic state.
//! * `producers.rs`: producer dedupe (producer id and sequence, retries, the TTL sweep).
//! * `confirms.rs`: confirmed publishes waiting for the fsync, released in offset order, as
//!   single acks or ACKS messages.
//! * `queue_groups.rs`: queue groups (join, leave, round robin, backlogs).
//! * `subscriptions.rs`: the subscriptions on the events socket, each topic's fan-out, and
//!   whether `$space.*` events are wanted.
//! * `beacons.rs`: when each topic's beacon is due.
//! * `stats.rs`: counters, rates and the `$sys.stats` snapshot.
//! * `sync.rs`: the SYNC barrier's topic and event.
//!
//! The feature types own their state and hold no socket: they say what to send, or are given
//! a function that sends.

mod beacons;
mod confirms;
mod fast_path;
mod producers;
mod queue_groups;
mod stats;
mod subscriptions;
mod sync;

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::frame::Frame;
use crate::log_writer::{LogBatch, LogWriter};
use crate::space_events::SpaceEvents;
use crate::{send_routed, sibling_endpoint, BusConfig, BusError};
use agora_storage::log::{EventLog, FsyncPolicy};
use agora_storage::{Durability, EventStore};
use agora_wire::bus::{
    self as protocol, ContentType, ErrorCode, Header, Hello, Meta, Op, ProtocolError, KIND_BEACON,
    KIND_EVENT, STATS_TOPIC, UNLOGGED_OFFSET, VERSION,
};
use agora_wire::socket::{Bell, ReplyAddress};
use agora_wire::topic::MAX_TOPIC_LEN;

use confirms::{Confirms, Release};
use fast_path::{Egress, InPlace, TopicState};
use producers::Producers;
use queue_groups::{Offered, QueueGroups};
use stats::Stats;
use subscriptions::Subscriptions;

/// Per-client queue bound for replies (confirms released by one fsync can be thousands).
const REPLY_HWM: i32 = 10_000;
/// Requests handled per poll wakeup before the loop looks at its other duties again.
const REQUEST_BATCH: usize = 4096;
/// The most frames a request may have; more is malformed (and is not buffered).
const MAX_FRAMES: usize = 8;
/// Requests received before any of them is handled, at most: one clock reading, taken after
/// they have all arrived, stamps all their events (see `drain_request_batch`), as a reading
/// per event was a noticeable share of the per-event work.
const RECEIVE_RUN: usize = 32;
/// How long appended fire-and-forget events may sit in the log's buffer before they are
/// pushed to the OS (and become visible to replays).
const COMMIT_INTERVAL: Duration = Duration::from_millis(1);

/// Where the request came from and how to address the reply.
struct ReplyTo<'a> {
    address: ReplyAddress<&'a [u8]>,
    /// Echoed in the reply (0 when the header could not be read).
    request_id: u64,
}

/// What the replay service needs from the log the dispatcher opened.
pub(crate) struct ReplaySeed<S: EventStore> {
    pub(crate) reader: S::Reader,
    pub(crate) last_offsets: S::Cache,
    /// One past the last event handed to the log (see [`Dispatcher::committed_end`]).
    pub(crate) committed_end: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) struct Dispatcher<S: EventStore = EventLog> {
    pub(crate) endpoint: String,
    pub(crate) events_endpoint: String,
    pub(crate) space_endpoint: Option<String>,
    /// The replay service's endpoint, advertised in HELLO.
    pub(crate) replay_endpoint: Option<String>,
    /// What the replay service starts from, taken by [`Bus::bind`](crate::Bus::bind).
    pub(crate) replay_seed: Option<ReplaySeed<S>>,
    config: BusConfig,
    router: zmq::Socket,
    egress: Egress,
    doorbell: Bell,

    /// The log, on its writer thread; `log_batch` holds what goes to it at the next commit.
    log: LogWriter<S>,
    log_batch: LogBatch,
    max_record_bytes: usize,
    /// The log's flushed and durable offsets.
    syncer: S::Durability,
    /// Rung by the log's syncer thread when more of the log is durable.
    durable_bell: Bell,
    syncer_thread: Option<std::thread::JoinHandle<Result<(), S::Error>>>,
    confirms: Confirms,
    pub(crate) space_events: Option<SpaceEvents>,
    groups: QueueGroups,
    producers: Producers,
    /// Set by a [`FLAG_ROOM`](agora_wire::bus::FLAG_ROOM) publish that was stamped and
    /// logged: its frame (the request's frame at this index) becomes the event in place, with
    /// this topic length and meta, once the request's slices are no longer borrowed (see
    /// [`Dispatcher::drain_requests`]).
    forward_in_place: Option<InPlace>,
    /// Appended since the last commit.
    uncommitted: bool,
    last_commit: Instant,
    /// One past the last event handed to the log writer, for the replay service: a replay's
    /// default end. The log's flushed end lags it by up to a commit, and a replay that ended
    /// there would stop short of an event its client already knows of (a beacon's, say, as
    /// every beacon follows a commit); a replay waits for the flush instead.
    committed_end: std::sync::Arc<std::sync::atomic::AtomicU64>,
    last_retention: Instant,

    next_offset: u64,
    last_time_ns: u64,
    /// A clock reading taken after the requests being handled had all been received.
    received_at_ns: u64,
    /// Every topic ever published (recovered from the log, then as they come): name -> index
    /// into `topics`, which holds each one's name and state.
    topic_index: FxHashMap<Box<[u8]>, usize>,
    topics: Vec<(Box<str>, TopicState)>,
    /// The subscriptions on the events socket (from XPUB_VERBOSER messages).
    subscriptions: Subscriptions,
    stats: Stats,
}

fn bind(sock: &zmq::Socket, what: &'static str, endpoint: &str) -> Result<String, BusError> {
    sock.bind(endpoint).map_err(|source| BusError::Bind {
        what,
        endpoint: endpoint.to_string(),
        source,
    })?;
    // With `*` the real port is only known after the bind.
    match sock.get_last_endpoint()? {
        Ok(s) => Ok(s),
        Err(_) => Ok(endpoint.to_string()),
    }
}

/// Set an integer socket option the `zmq` crate has no setter for.
fn set_raw_int_option(sock: &mut zmq::Socket, option: u32, value: i32) -> Result<(), zmq::Error> {
    // SAFETY: the socket pointer is valid while `sock` lives; the option value is a c_int
    // and its size is passed along, as zmq_setsockopt requires.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            sock.as_mut_ptr(),
            option as i32,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: zmq_errno has no preconditions.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch (0 for a clock set before it).
/// Straight from `clock_gettime`: it is read per run of requests, and `SystemTime`'s checked
/// subtraction around the same call costs a good part of the call again.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    u64::try_from(ts.tv_sec).map_or(0, |s| s * 1_000_000_000 + ts.tv_nsec as u64)
}

impl<S: EventStore + 'static> Dispatcher<S> {
    /// Create and bind the sockets.
    pub(crate) fn bind(
        ctx: &zmq::Context,
        config: &BusConfig,
        doorbell: Bell,
        log: S,
    ) -> Result<Dispatcher<S>, BusError> {
        let router = ctx.socket(zmq::ROUTER)?;
        // Unroutable sends fail (EHOSTUNREACH) instead of vanishing: a queue group learns
        // that a member is gone and gives the event to another.
        router.set_router_mandatory(true)?;
        router.set_rcvhwm(config.requests_hwm)?;
        router.set_sndhwm(REPLY_HWM)?;
        router.set_linger(1000)?;
        let endpoint = bind(&router, "request", &config.listen)?;

        let mut xpub = ctx.socket(zmq::XPUB)?;
        xpub.set_sndhwm(config.events_hwm)?;
        xpub.set_linger(2000)?;
        set_raw_int_option(&mut xpub, zmq_sys::ZMQ_XPUB_NODROP, 1)?;
        set_raw_int_option(&mut xpub, zmq_sys::ZMQ_XPUB_VERBOSER, 1)?;
        let events_want = match &config.events {
            Some(e) => e.clone(),
            None => sibling_endpoint(&config.listen, 1, "events")?,
        };
        let events_endpoint = bind(&xpub, "events", &events_want)?;

        let recovery = log.resume_state();
        let mut topic_index = FxHashMap::default();
        let mut topics = Vec::with_capacity(recovery.last_seq_by_topic.len());
        for (name, seq) in &recovery.last_seq_by_topic {
            topic_index.insert(Box::from(name.as_bytes()), topics.len());
            topics.push((Box::from(name.as_str()), TopicState::new(*seq)));
        }
        let producers = Producers::recovered(
            recovery.producers.iter().map(|(id, seq)| (*id, *seq)),
            config.producer_ttl,
            Instant::now(),
            now_ns(),
        );
        // The syncer thread knocks on `bell_writer` (each time more is durable); the
        // dispatcher polls `durable_bell`.
        let (bell_writer, durable_bell) = agora_wire::socket::doorbell()?;
        // Under fsync `never` there is no syncer thread: the log writer rings instead.
        let writer_bell = bell_writer.clone();
        let syncer = log.durability();
        let syncer_thread = syncer.start(
            config.fsync,
            Box::new(move |_durable| {
                // A full socket means a wakeup is already pending.
                bell_writer.knock();
            }),
        );

        let committed_end =
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(recovery.next_offset));
        let replay_seed = ReplaySeed {
            reader: log.reader(),
            last_offsets: log.last_value_cache(),
            committed_end: committed_end.clone(),
        };
        let max_record_bytes = log.max_record_bytes();
        let log = LogWriter::spawn(log, move || {
            writer_bell.knock();
        })?;
        let now = Instant::now();
        Ok(Dispatcher {
            endpoint,
            events_endpoint,
            space_endpoint: None,
            replay_endpoint: None,
            replay_seed: Some(replay_seed),
            config: config.clone(),
            router,
            egress: Egress::new(xpub, config.slow_consumer_timeout),
            doorbell,
            next_offset: recovery.next_offset,
            last_time_ns: 0,
            received_at_ns: 0,
            topic_index,
            topics,
            log,
            log_batch: LogBatch::default(),
            max_record_bytes,
            syncer,
            durable_bell,
            syncer_thread,
            confirms: Confirms::default(),
            space_events: None,
            groups: QueueGroups::default(),
            producers,
            forward_in_place: None,
            uncommitted: false,
            last_commit: now,
            committed_end,
            // Retention's first pass comes with the first stats tick: a restart with a
            // tighter limit applies it at once.
            last_retention: now.checked_sub(Duration::from_secs(10)).unwrap_or(now),
            subscriptions: Subscriptions::default(),
            stats: Stats::new(now),
        })
    }

    /// The state machine: poll, serve, publish stats, until the doorbell rings.
    pub(crate) fn run(mut self) -> Result<(), BusError> {
        tracing::info!(
            requests = %self.endpoint,
            events = %self.events_endpoint,
            "dispatcher serving"
        );
        let interval = self.config.stats_interval;
        let mut next_stats = Instant::now() + interval;
        // Per request of a receive run: one slot per frame a request may have, and one more
        // to notice a longer request.
        let mut run_frames: Vec<Vec<Frame>> = (0..RECEIVE_RUN)
            .map(|_| (0..=MAX_FRAMES).map(|_| Frame::new()).collect())
            .collect();
        // Queue groups holding events back: look again soon even with nothing to read.
        let mut backlog = false;
        loop {
            // Nothing stays queued while the loop sleeps.
            self.egress.flush();
            let mut timeout = next_stats.saturating_duration_since(Instant::now());
            if backlog || self.uncommitted {
                timeout = timeout.min(Duration::from_millis(1));
            }
            let space_fd = self.space_events.as_ref().map(SpaceEvents::fd);
            let (requests_ready, subs_ready, stop, durable, space_ready) = {
                let mut items = [
                    self.router.as_poll_item(zmq::POLLIN),
                    self.egress.xpub.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.doorbell.fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(self.durable_bell.fd(), zmq::POLLIN),
                    // Without a space, poll the doorbell twice rather than juggle lengths.
                    zmq::PollItem::from_fd(space_fd.unwrap_or(self.doorbell.fd()), zmq::POLLIN),
                ];
                match zmq::poll(&mut items, timeout.as_millis() as i64) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items[2].is_readable(),
                    items[3].is_readable(),
                    space_fd.is_some() && items[4].is_readable(),
                )
            };
            if stop {
                break;
            }
            if subs_ready {
                self.drain_subscriptions();
            }
            if requests_ready {
                self.drain_requests(&mut run_frames)?;
            }
            if space_ready {
                self.drain_space_events();
            }
            backlog = self.flush_group_backlogs();
            // Confirmed publishes are committed at once; fire-and-forget traffic is pushed to
            // the OS at most every COMMIT_INTERVAL, so a busy broker does not pay a write and
            // a syncer wake-up per small batch.
            if self.uncommitted
                && (!self.confirms.is_empty() || self.last_commit.elapsed() >= COMMIT_INTERVAL)
            {
                self.commit();
            }
            if durable {
                self.durable_bell.wake();
                self.release_confirms(self.durable_offset());
                if self.log.failed() {
                    self.fail_confirms();
                }
            }
            if Instant::now() >= next_stats {
                self.publish_stats();
                next_stats = Instant::now() + interval;
                self.producers.sweep(Instant::now(), now_ns());
                if self.last_retention.elapsed() >= Duration::from_secs(10) {
                    self.last_retention = Instant::now();
                    self.log.enforce_retention();
                }
            }
        }
        self.finish();
        Ok(())
    }

    /// Shutdown: nothing more is read; the log is flushed and synced, the confirms it covers
    /// are answered, and the sockets linger so queued events and replies drain.
    fn finish(&mut self) {
        tracing::info!(events_in = self.stats.events_in(), "dispatcher stopping");
        self.egress.flush();
        self.commit();
        match self.log.finish() {
            Ok(durable) => self.release_confirms(durable),
            Err(e) => tracing::error!("final log sync failed: {e}"),
        }
        self.syncer.close();
        if let Some(t) = self.syncer_thread.take() {
            match t.join() {
                Ok(Err(e)) => tracing::error!("log syncer failed: {e}"),
                Err(_) => tracing::error!("log syncer panicked"),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Hand the events stamped since the last commit to the log writer, which writes them to
    /// the OS and asks the syncer for an fsync (see `log_writer.rs`).
    fn commit(&mut self) {
        self.uncommitted = false;
        self.last_commit = Instant::now();
        if !self.log_batch.is_empty() {
            self.log.append(&mut self.log_batch);
        }
        self.committed_end
            .store(self.next_offset, std::sync::atomic::Ordering::Release);
    }

    /// One past the last event a confirm may be released for: the durable offset, or under
    /// fsync `never` the flushed one (that is as durable as it gets).
    fn durable_offset(&self) -> u64 {
        if self.config.fsync == FsyncPolicy::Never {
            self.syncer.flushed_offset()
        } else {
            self.syncer.durable_offset()
        }
    }

    /// Answer the confirmed publishes below `durable` (an exclusive offset).
    fn release_confirms(&mut self, durable: u64) {
        for release in self.confirms.release(durable) {
            match release {
                Release::Ack(c) => {
                    let to = ReplyTo {
                        address: c.address.as_ref(),
                        request_id: c.request_id,
                    };
                    let ack = protocol::encode_publish_ack(c.offset, c.seq);
                    self.ok_reply(&to, &[&ack]);
                }
                Release::Acks { identity, body } => self.send_acks(&identity, &body),
            }
        }
    }

    /// The log failed: the confirms still waiting will never be durable. Each gets an error
    /// reply now, so its publisher learns at once instead of when its confirm times out.
    fn fail_confirms(&mut self) {
        for c in self.confirms.take_all() {
            let to = ReplyTo {
                address: c.address.as_ref(),
                request_id: c.request_id,
            };
            let msg = format!(
                "event log failed before offset {} was durable; the broker takes no more \
                 publishes until it is restarted",
                c.offset
            );
            self.error_reply(&to, ErrorCode::Internal, &msg);
        }
    }

    /// One ACKS message (batched confirms carry their request ids in the body; REQ clients,
    /// the delimited ones, never get batches).
    fn send_acks(&mut self, identity: &[u8], body: &[u8]) {
        let to = ReplyTo {
            address: ReplyAddress {
                identity,
                delimited: false,
            },
            request_id: 0,
        };
        let header = Header::new(Op::Acks, 0).encode();
        self.send_reply(&to, &header, &[body]);
    }

    /// Publish the tuple space's events that arrived since the last look.
    fn drain_space_events(&mut self) {
        let batch = match &self.space_events {
            Some(se) => se.drain(REQUEST_BATCH),
            None => return,
        };
        for (topic, payload) in batch {
            let ct = ContentType::Cbor as u8;
            let received_at = now_ns();
            if let Err(e) = self.append_and_forward(
                (topic, None),
                &payload,
                ct,
                None,
                fast_path::Forward::Copy,
                received_at,
            ) {
                tracing::error!("event log append failed for {topic}: {e}");
            }
        }
    }

    /// Take in the subscribes and unsubscribes the events socket reports.
    fn drain_subscriptions(&mut self) {
        loop {
            let msg = match self.egress.xpub.recv_msg(zmq::DONTWAIT) {
                Ok(m) => m,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!("events socket receive failed: {e}");
                    return;
                }
            };
            if !self.subscriptions.apply(&msg) {
                continue;
            }
            if let Some(se) = &self.space_events {
                se.set_wanted(self.subscriptions.space_wanted());
            }
        }
    }

    fn drain_requests(&mut self, run_frames: &mut [Vec<Frame>]) -> Result<(), BusError> {
        let drained = self.drain_request_batch(run_frames);
        self.egress.flush();
        drained
    }

    /// Handle up to [`REQUEST_BATCH`] requests, in runs: receive up to [`RECEIVE_RUN`] of
    /// them, read the clock, then handle each. That one reading is a valid stamp for every
    /// event of the run: each publish had arrived, so was sent, before it was taken, and no
    /// reply of the run had gone out yet, so no sender had seen anything later. (A reading
    /// taken before a request arrived could be earlier than what its sender saw; a replay
    /// from that time would then miss the event.)
    fn drain_request_batch(&mut self, run_frames: &mut [Vec<Frame>]) -> Result<(), BusError> {
        let mut lens = [0usize; RECEIVE_RUN];
        let mut handled = 0;
        while handled < REQUEST_BATCH {
            let mut received = 0;
            let mut ended = Ok(false);
            while received < run_frames.len() {
                match recv_frames(&mut self.router, &mut run_frames[received]) {
                    Ok(n) => {
                        lens[received] = n;
                        received += 1;
                    }
                    Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                        ended = Ok(true);
                        break;
                    }
                    // Handle what was received first; then report.
                    Err(e) => {
                        ended = Err(e);
                        break;
                    }
                }
            }
            if received > 0 {
                self.received_at_ns = now_ns();
            }
            for (frames, &n) in run_frames[..received].iter_mut().zip(&lens) {
                self.stats.request();
                // Getting a frame's bytes is two FFI calls; look at every frame once.
                let mut parts: [&[u8]; MAX_FRAMES + 1] = [&[]; MAX_FRAMES + 1];
                for (part, frame) in parts.iter_mut().zip(frames.iter()) {
                    *part = frame.as_slice();
                }
                self.handle(&parts[..n]);
                if let Some(stamped) = self.forward_in_place.take() {
                    self.send_in_place(frames, stamped);
                }
            }
            handled += received;
            match ended {
                Ok(false) => {}
                Ok(true) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Serve one request. Every failure becomes an error reply; nothing here can stop the loop.
    fn handle(&mut self, frames: &[&[u8]]) {
        if frames.len() < 2 {
            // An identity alone: nothing to answer.
            return;
        }
        let delimited = frames[1].is_empty();
        let first = if delimited { 2 } else { 1 };
        let reply = ReplyTo {
            address: ReplyAddress {
                identity: frames[0],
                delimited,
            },
            request_id: frames
                .get(first)
                .map_or(0, |f| Header::salvage_request_id(f)),
        };
        let Some(head) = frames.get(first) else {
            return self.error_reply(&reply, ErrorCode::Malformed, "no header frame");
        };
        let (header, inline) = match Header::decode_prefix(head) {
            Ok(h) => h,
            Err(e) => return self.error_reply(&reply, e.code(), &e.to_string()),
        };
        if frames.len() > MAX_FRAMES {
            let msg = format!("too many frames (more than {})", MAX_FRAMES - 1);
            return self.error_reply(&reply, ErrorCode::Malformed, &msg);
        }
        let op = match header.op() {
            Ok(op) => op,
            Err(e) => return self.error_reply(&reply, e.code(), &e.to_string()),
        };
        let body = &frames[first + 1..];
        // Only a publish carries data in its first frame.
        if op != Op::Publish && !inline.is_empty() {
            let e = ProtocolError::HeaderLength(head.len());
            return self.error_reply(&reply, e.code(), &e.to_string());
        }
        let expect = |expected: usize| -> Result<(), ProtocolError> {
            if body.len() == expected {
                Ok(())
            } else {
                Err(ProtocolError::FrameCount {
                    op,
                    expected,
                    got: body.len(),
                })
            }
        };
        let result = match op {
            Op::Publish => expect(0).map(|()| self.publish(&reply, header, inline, first)),
            Op::Hello => expect(0).map(|()| {
                let hello = Hello {
                    version: VERSION,
                    events: self.events_endpoint.clone(),
                    space: self.space_endpoint.clone(),
                    replay: self.replay_endpoint.clone(),
                    max_payload: self.config.max_payload as u64,
                    max_topic: MAX_TOPIC_LEN as u64,
                };
                let body = protocol::encode_cbor_body(&hello);
                self.ok_reply(&reply, &[&body]);
            }),
            Op::Ping => expect(0).map(|()| self.ok_reply(&reply, &[])),
            Op::Stats => expect(0).map(|()| {
                let body = protocol::encode_cbor_body(&self.snapshot());
                self.ok_reply(&reply, &[&body]);
            }),
            Op::Sync => expect(1).and_then(|()| {
                let topic = sync::barrier_topic(body[0])?;
                // Everything stamped before the barrier is readable by replays once the
                // client sees it (the Clone pattern's handover relies on this).
                if self.uncommitted {
                    self.commit();
                }
                if self.syncer.flushed_offset() < self.next_offset {
                    if let Err(e) = self.log.flush() {
                        tracing::error!("event log flush for a sync barrier failed: {e}");
                    }
                }
                let meta = sync::barrier_meta(now_ns());
                self.egress.send(&topic, &meta, &[]);
                self.ok_reply(&reply, &[]);
                Ok(())
            }),
            Op::Replay
            | Op::ReplayBatch
            | Op::ReplayEnd
            | Op::Credit
            | Op::ReplayClose
            | Op::DurableAck
            | Op::DurableDelete => {
                let msg = format!(
                    "op {op:?} is served on the replay endpoint (HELLO's `replay`), not here"
                );
                self.error_reply(&reply, ErrorCode::BadRequest, &msg);
                Ok(())
            }
            Op::QueueJoin => expect(2).and_then(|()| {
                let name: &[u8] = body[0];
                if !protocol::valid_group_name(name) {
                    return Err(ProtocolError::BadRequest(
                        "queue group name must be 1..=64 bytes of [A-Za-z0-9_.-]".into(),
                    ));
                }
                let filter = std::str::from_utf8(body[1])
                    .map_err(|_| ProtocolError::BadRequest("filter is not UTF-8".into()))?;
                let filter = agora_wire::topic::Filter::new(filter)
                    .map_err(|e| ProtocolError::BadRequest(e.to_string()))?;
                let name = String::from_utf8_lossy(name).into_owned();
                self.groups
                    .join(name, filter, reply.address.identity, reply.request_id);
                self.ok_reply(&reply, &[]);
                Ok(())
            }),
            Op::QueueLeave => expect(1).and_then(|()| {
                let id: [u8; 8] = body[0][..]
                    .try_into()
                    .map_err(|_| ProtocolError::BadRequest("join id must be 8 bytes".into()))?;
                self.groups
                    .leave(reply.address.identity, u64::from_le_bytes(id));
                self.ok_reply(&reply, &[]);
                Ok(())
            }),
            Op::Deliver | Op::Acks | Op::Ok | Op::Error => {
                let msg = format!("op {op:?} is a reply, not a request");
                self.error_reply(&reply, ErrorCode::BadRequest, &msg);
                Ok(())
            }
            // `Header::op` answers these UNKNOWN_OP already; the space serves them.
            Op::Out
            | Op::Take
            | Op::Read
            | Op::TakeAll
            | Op::ReadAll
            | Op::Count
            | Op::Dump
            | Op::Confirm
            | Op::Release
            | Op::Cancel
            | Op::SpacePing => Err(ProtocolError::UnknownOp(op as u8)),
        };
        if let Err(e) = result {
            self.error_reply(&reply, e.code(), &e.to_string());
        }
    }

    /// Give the event to one member of each queue group whose filter matches.
    fn deliver_to_groups(&mut self, topic: &str, meta: &Meta, payload: &[u8]) {
        let router = &self.router;
        let dropped = self.groups.deliver(
            topic,
            || protocol::encode_event(topic.as_bytes(), meta, payload),
            |identity, join_id, frame| offer(router, identity, join_id, frame),
        );
        self.egress.dropped += dropped;
    }

    /// Retry the events queue groups hold back; returns whether any remain.
    fn flush_group_backlogs(&mut self) -> bool {
        let router = &self.router;
        self.groups
            .flush_backlogs(|identity, join_id, frame| offer(router, identity, join_id, frame))
    }

    fn snapshot(&self) -> protocol::Stats {
        let elsewhere = stats::Elsewhere {
            dropped: self.egress.dropped,
            subscriptions: self.subscriptions.count(),
        };
        let topics = self
            .topics
            .iter()
            .map(|(name, t)| (&name[..], t.seq, &t.counters));
        self.stats.snapshot(Instant::now(), elsewhere, topics)
    }

    /// Update rates and publish the snapshot on `$sys.stats`.
    fn publish_stats(&mut self) {
        let now = Instant::now();
        self.stats
            .tick(now, self.topics.iter_mut().map(|(_, t)| &mut t.counters));
        self.send_beacons();
        let body = protocol::encode_cbor_body(&self.snapshot());
        let meta = Meta {
            kind: KIND_EVENT,
            offset: UNLOGGED_OFFSET,
            seq: self.stats.next_stats_seq(),
            time_ns: now_ns(),
            content_type: ContentType::Cbor as u8,
        };
        self.egress.send(STATS_TOPIC.as_bytes(), &meta, &body);
    }

    /// Send the beacons due (see `beacons.rs`). A beacon counts as delivered only when sent
    /// losslessly.
    ///
    /// The log is committed first (handed to the log writer, which flushes within about a
    /// millisecond): the replay that heals the gap a beacon reveals reads up to the beacon's
    /// event, waiting for that flush if it comes first (a replay waits up to 2 s for a log
    /// that has not reached its end yet).
    fn send_beacons(&mut self) {
        if self.uncommitted {
            self.commit();
        }
        let time_ns = now_ns();
        let repeat = self.egress.was_lossy();
        for (topic, state) in self.topics.iter_mut() {
            let Some(due) = state.beacon.due(state.seq) else {
                continue;
            };
            let meta = Meta {
                kind: KIND_BEACON,
                offset: UNLOGGED_OFFSET,
                seq: state.seq,
                time_ns,
                content_type: ContentType::Raw as u8,
            };
            self.egress.send(topic.as_bytes(), &meta, &[]);
            if self.egress.is_lossless() {
                state.beacon.delivered(state.seq, due, repeat);
            }
        }
    }

    fn ok_reply(&mut self, to: &ReplyTo<'_>, body: &[&[u8]]) {
        let header = Header::new(Op::Ok, to.request_id).encode();
        self.send_reply(to, &header, body);
    }

    fn error_reply(&mut self, to: &ReplyTo<'_>, code: ErrorCode, message: &str) {
        tracing::debug!(?code, request_id = to.request_id, "error reply: {message}");
        let header = Header::new(Op::Error, to.request_id).encode();
        let code = protocol::encode_error_code(code);
        self.send_reply(to, &header, &[&code, message.as_bytes()]);
    }

    /// Every reply goes out after the events stamped before it (they may wait in the burst
    /// queue): a client that got a reply to a later request never sees earlier events arrive
    /// at a subscription it makes afterwards, as before events were sent in bursts.
    fn send_reply(&mut self, to: &ReplyTo<'_>, header: &[u8], body: &[&[u8]]) {
        self.egress.flush();
        // ROUTER refuses replies to peers that are gone or whose queue is full: a client that
        // stopped reading only loses its own replies.
        if let Err(e) = send_routed(&self.router, to.address, header, body) {
            tracing::debug!("reply not sent: {e}");
        }
    }
}

/// Offer a queue group member (`identity`, joined with request `join_id`) an event `frame`
/// as a DELIVER message, without blocking. Unroutable (the socket is ROUTER_MANDATORY): the
/// member is gone; any other refusal: its queue is full.
fn offer(router: &zmq::Socket, identity: &[u8], join_id: u64, frame: &[u8]) -> Offered {
    let header = Header::new(Op::Deliver, join_id).encode();
    let to = ReplyAddress {
        identity,
        delimited: false,
    };
    match send_routed(router, to, &header, &[frame]) {
        Ok(()) => Offered::Taken,
        Err(zmq::Error::EHOSTUNREACH) => Offered::Gone,
        Err(_) => Offered::Full,
    }
}

/// Receive one multipart message into `frames` (`MAX_FRAMES + 1` slots); returns how many
/// frames it has, at most `MAX_FRAMES + 1`. Only the first frame can fail with EAGAIN (the
/// rest of a multipart message arrives atomically). Frames past [`MAX_FRAMES`] are read into
/// the last slot, one over the other, so the request is recognised as oversized.
fn recv_frames(sock: &mut zmq::Socket, frames: &mut [Frame]) -> Result<usize, zmq::Error> {
    let mut n = 0;
    let mut flags = zmq::DONTWAIT;
    loop {
        let slot = n.min(MAX_FRAMES);
        frames[slot].recv(sock, flags)?;
        flags = 0;
        n += 1;
        if !frames[slot].more() {
            return Ok(n.min(MAX_FRAMES + 1));
        }
    }
}
