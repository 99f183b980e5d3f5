//! The dispatcher thread: owns the request ROUTER and the events XPUB, and runs the broker's
//! state machine with `zmq::poll`.
//!
//! Per publish: read the frames (no copy), check header/topic/size, stamp a [`Meta`], append
//! to the log, and send the event on the XPUB: a publish with the ROOM flag (what the SDK
//! sends) becomes the event inside the received message, which goes on as it is; any other
//! is copied into a new event message. The events socket runs with
//! `ZMQ_XPUB_NODROP`, so a full subscriber queue pushes back instead of losing events; if one
//! subscriber stays full for longer than `slow_consumer_timeout`, the broker switches the socket
//! to lossy for a while so the others are served, and counts those sends as `dropped` (the slow
//! subscriber's SDK sees the sequence gap). Stamped events go out in bursts of up to
//! [`SEND_BURST`], and at once when the request queue runs dry.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::frame::Frame;
use crate::log_writer::{LogBatch, LogWriter};
use crate::space_events::SpaceEvents;
use crate::{send_routed, sibling_endpoint, BusConfig, BusError};
use agora_storage::log::{EventLog, FsyncPolicy, LogOptions, Record, Syncer};
use agora_wire::bus::{
    self as protocol, ContentType, ErrorCode, Header, Hello, Meta, Op, ProtocolError, Stats,
    TopicStats, ACK_ENTRY_LEN, FLAG_ACK, FLAG_BATCH_ACKS, FLAG_CONFIRM, FLAG_PRODUCER, FLAG_ROOM,
    KIND_BEACON, KIND_EVENT, PUBLISH_ROOM, SPACE_TOPIC_PREFIX, STATS_TOPIC, SYNC_TOPIC_PREFIX,
    UNLOGGED_OFFSET, VERSION,
};
use agora_wire::topic::{validate_topic, MAX_TOPIC_LEN};

/// Confirms per ACKS message, at most.
const MAX_ACKS_PER_MESSAGE: usize = 256;
/// Per-client queue bound for replies (confirms released by one fsync can be thousands).
const REPLY_HWM: i32 = 10_000;
/// Requests handled per poll wakeup before the loop looks at its other duties again.
const REQUEST_BATCH: usize = 4096;
/// Events sent to the events socket together, at most. Sent one by one as they were
/// stamped, each event found the I/O thread idle and woke it (tens of thousands of wake-ups
/// per million events, each preempting this thread); sent in bursts, the I/O thread finds a
/// run of them per wake-up. They wait a few microseconds at most: a burst is also sent
/// whenever the request queue runs dry, and before anything else goes out on the socket.
/// (bus_throughput, 64 B, broker raw: one by one 1.01-1.05 M/s, bursts of 32 1.17-1.18,
/// 128 and 512 the same as 32.)
const SEND_BURST: usize = 32;
/// The most frames a request may have; more is malformed (and is not buffered).
const MAX_FRAMES: usize = 8;
/// Requests received before any of them is handled, at most: one clock reading, taken after
/// they have all arrived, stamps all their events (see `drain_request_batch`). Read per
/// event, the clock was a twentieth of the hot path.
const RECEIVE_RUN: usize = 32;
/// How long appended fire-and-forget events may sit in the log's buffer before they are
/// pushed to the OS (and become visible to replays).
const COMMIT_INTERVAL: Duration = Duration::from_millis(1);
/// After the events socket was lossy, a topic's latest beacon is repeated at doubling
/// intervals of stats ticks, up to this many (see [`Dispatcher::send_beacons`]).
const BEACON_REPEAT_MAX_TICKS: u32 = 16;
/// How often, at most, producers idle past `producer_ttl` are looked for (more often when
/// the TTL is shorter than twice this).
const PRODUCER_SWEEP: Duration = Duration::from_secs(10);

/// Per-topic state: the sequence counter and the stats counters.
struct TopicState {
    seq: u64,
    events: u64,
    events_at_tick: u64,
    rate: f64,
    /// Matching subscriptions, valid while `fanout_generation` equals the dispatcher's.
    fanout: u64,
    fanout_generation: u64,
    /// The sequence the last delivered beacon carried.
    beaconed_seq: u64,
    /// Stats ticks between repeats of the latest beacon (0: not repeated), and ticks left
    /// until the next one (see [`Dispatcher::send_beacons`]).
    beacon_every: u32,
    beacon_in: u32,
}

impl TopicState {
    fn new() -> TopicState {
        TopicState {
            seq: 0,
            events: 0,
            events_at_tick: 0,
            rate: 0.0,
            fanout: 0,
            fanout_generation: u64::MAX,
            beaconed_seq: 0,
            beacon_every: 0,
            beacon_in: 0,
        }
    }
}

/// Where the request came from and how to address the reply.
struct ReplyTo<'a> {
    identity: &'a [u8],
    /// A REQ client puts an empty delimiter before the header; the reply must carry it too.
    delimited: bool,
    /// Echoed in the reply (0 when the header could not be read).
    request_id: u64,
}

/// A queue group: events matching `filter` go to one member each, round robin.
struct QueueGroup {
    name: String,
    filter: agora_wire::topic::Filter,
    /// (identity, join request id)
    members: Vec<(Vec<u8>, u64)>,
    next: usize,
    /// Events no member could take yet (all queues full), oldest first.
    backlog: std::collections::VecDeque<Vec<u8>>,
}

/// Events a queue group holds while all its members are full; beyond this the oldest go.
const GROUP_BACKLOG: usize = 100_000;

/// A confirmed publish waiting for the fsync that covers its offset.
struct PendingConfirm {
    offset: u64,
    seq: u64,
    identity: Vec<u8>,
    delimited: bool,
    request_id: u64,
    /// The client takes this confirm inside an ACKS message ([`protocol::FLAG_BATCH_ACKS`]).
    batched: bool,
}

/// The last event a producer published: what a retry of it is answered with.
#[derive(Clone, Copy)]
struct ProducerState {
    seq: u64,
    /// Offset and topic sequence of that event; unknown after a restart.
    stamped: Option<(u64, u64)>,
    /// When it last published (or retried), ns since the epoch: it is forgotten
    /// `producer_ttl` later (see `forget_idle_producers`).
    last_seen_ns: u64,
}

/// What the replay service needs from the log the dispatcher opened.
pub(crate) struct ReplaySeed {
    pub(crate) reader: agora_storage::log::LogReader,
    pub(crate) last_offsets: agora_storage::log::LastOffsets,
    /// One past the last event handed to the log (see [`Dispatcher::committed_end`]).
    pub(crate) committed_end: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) struct Dispatcher {
    pub(crate) endpoint: String,
    pub(crate) events_endpoint: String,
    pub(crate) space_endpoint: Option<String>,
    /// The replay service's endpoint, advertised in HELLO.
    pub(crate) replay_endpoint: Option<String>,
    /// What the replay service starts from, taken by [`Bus::start`](crate::Bus::start).
    pub(crate) replay_seed: Option<ReplaySeed>,
    config: BusConfig,
    router: zmq::Socket,
    egress: Egress,
    doorbell: UnixStream,

    /// The log, on its writer thread; `log_batch` holds what goes to it at the next commit.
    log: LogWriter,
    log_batch: LogBatch,
    max_record_bytes: usize,
    /// The log's flushed and durable offsets.
    syncer: Syncer,
    /// Rung by the log's syncer thread when more of the log is durable.
    durable_bell: UnixStream,
    syncer_thread: Option<std::thread::JoinHandle<Result<(), agora_storage::log::LogError>>>,
    confirms: std::collections::VecDeque<PendingConfirm>,
    pub(crate) space_events: Option<SpaceEvents>,
    groups: Vec<QueueGroup>,
    producers: HashMap<u64, ProducerState>,
    /// Set by a [`FLAG_ROOM`] publish that was stamped and logged: its frame (the request's
    /// frame at this index) becomes the event in place, with this topic length and meta, once
    /// the request's slices are no longer borrowed (see [`Dispatcher::drain_requests`]).
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
    last_producer_sweep: Instant,

    next_offset: u64,
    last_time_ns: u64,
    /// A clock reading taken after the requests being handled had all been received.
    received_at_ns: u64,
    /// Every topic ever published (recovered from the log, then as they come): name -> index
    /// into `topics`, which holds each one's name and state.
    topic_index: FxHashMap<Box<[u8]>, usize>,
    topics: Vec<(Box<str>, TopicState)>,
    /// Subscription prefix -> number of subscriptions (from XPUB_VERBOSER messages).
    subscriptions: HashMap<Vec<u8>, u64>,
    subscription_count: u64,
    subscription_generation: u64,

    started: Instant,
    last_tick: Instant,
    events_in: u64,
    events_in_at_tick: u64,
    rate_in: f64,
    events_out: u64,
    rejected: u64,
    requests: u64,
    stats_seq: u64,
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
/// Straight from `clock_gettime`: read once per event, and `SystemTime`'s checked
/// subtraction around the same call was a third of its cost.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    u64::try_from(ts.tv_sec).map_or(0, |s| s * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Dispatcher {
    /// Create and bind the sockets.
    pub(crate) fn bind(
        ctx: &zmq::Context,
        config: &BusConfig,
        doorbell: UnixStream,
    ) -> Result<Dispatcher, BusError> {
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

        let log_dir = config.data_dir.join("log");
        let (log, recovery) = EventLog::open(
            &log_dir,
            LogOptions {
                segment_bytes: config.segment_bytes,
                retention_bytes: config.retention_bytes,
                retention_age: config.retention_age,
                fsync: config.fsync,
                producer_ttl: config.producer_ttl,
                ..LogOptions::default()
            },
        )?;
        // (A truncation in recovery was logged by the log, with where the bytes went.)
        tracing::info!(
            dir = %log_dir.display(),
            first_offset = recovery.first_offset,
            next_offset = recovery.next_offset,
            topics = recovery.last_seq_by_topic.len(),
            "event log open"
        );
        let mut topic_index = FxHashMap::default();
        let mut topics = Vec::with_capacity(recovery.last_seq_by_topic.len());
        for (name, seq) in &recovery.last_seq_by_topic {
            let mut state = TopicState::new();
            state.seq = *seq;
            state.beaconed_seq = *seq;
            topic_index.insert(Box::from(name.as_bytes()), topics.len());
            topics.push((Box::from(name.as_str()), state));
        }
        let started_ns = now_ns();
        let producers = recovery
            .producers
            .iter()
            .map(|(id, seq)| {
                (
                    *id,
                    ProducerState {
                        seq: *seq,
                        stamped: None,
                        // Not known: the TTL runs from the restart.
                        last_seen_ns: started_ns,
                    },
                )
            })
            .collect();
        // The syncer thread rings `bell_writer`; the dispatcher polls `durable_bell`.
        let (durable_bell, bell_writer) = UnixStream::pair()?;
        durable_bell.set_nonblocking(true)?;
        bell_writer.set_nonblocking(true)?;
        // Under fsync `never` there is no syncer thread: the log writer rings instead.
        let writer_bell = bell_writer.try_clone()?;
        let syncer = log.syncer();
        let syncer_thread = syncer.spawn(config.fsync, move |_durable| {
            // A full socket means a wakeup is already pending.
            let _ = (&bell_writer).write(&[1]);
        });

        let committed_end =
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(recovery.next_offset));
        let replay_seed = ReplaySeed {
            reader: log.reader(),
            last_offsets: log.last_offsets(),
            committed_end: committed_end.clone(),
        };
        let max_record_bytes = log.options().max_record_bytes;
        let log = LogWriter::spawn(log, move || {
            let _ = (&writer_bell).write(&[1]);
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
            egress: Egress {
                xpub,
                lossy_until: None,
                slow_timeout: config.slow_consumer_timeout,
                dropped: 0,
                was_lossy: false,
                burst: (0..SEND_BURST).map(|_| Frame::new()).collect(),
                queued: 0,
            },
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
            confirms: std::collections::VecDeque::new(),
            space_events: None,
            groups: Vec::new(),
            producers,
            forward_in_place: None,
            uncommitted: false,
            last_commit: now,
            committed_end,
            // Retention's first pass comes with the first stats tick: a restart with a
            // tighter limit applies it at once.
            last_retention: now.checked_sub(Duration::from_secs(10)).unwrap_or(now),
            last_producer_sweep: now,
            subscriptions: HashMap::new(),
            subscription_count: 0,
            subscription_generation: 0,
            started: now,
            last_tick: now,
            events_in: 0,
            events_in_at_tick: 0,
            rate_in: 0.0,
            events_out: 0,
            rejected: 0,
            requests: 0,
            stats_seq: 0,
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
                    zmq::PollItem::from_fd(self.doorbell.as_raw_fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(self.durable_bell.as_raw_fd(), zmq::POLLIN),
                    // Without a space, poll the doorbell twice rather than juggle lengths.
                    zmq::PollItem::from_fd(
                        space_fd.unwrap_or(self.doorbell.as_raw_fd()),
                        zmq::POLLIN,
                    ),
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
                let mut buf = [0u8; 64];
                while matches!((&self.durable_bell).read(&mut buf), Ok(n) if n > 0) {}
                self.release_confirms(self.durable_offset());
                if self.log.failed() {
                    self.fail_confirms();
                }
            }
            if Instant::now() >= next_stats {
                self.publish_stats();
                next_stats = Instant::now() + interval;
                if self.last_producer_sweep.elapsed()
                    >= PRODUCER_SWEEP.min(self.config.producer_ttl / 2)
                {
                    self.last_producer_sweep = Instant::now();
                    self.forget_idle_producers();
                }
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
        tracing::info!(events_in = self.events_in, "dispatcher stopping");
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
        // Batched confirms, one ACKS body per client (few clients: a short list beats a map).
        let mut batches: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while let Some(c) = self.confirms.front() {
            if c.offset >= durable {
                break;
            }
            let c = self.confirms.pop_front().expect("front exists");
            if c.batched {
                let i = match batches.iter().position(|(who, _)| *who == c.identity) {
                    Some(i) => i,
                    None => {
                        batches.push((c.identity, Vec::with_capacity(64 * ACK_ENTRY_LEN)));
                        batches.len() - 1
                    }
                };
                protocol::push_ack_entry(&mut batches[i].1, c.request_id, c.offset, c.seq);
                if batches[i].1.len() >= MAX_ACKS_PER_MESSAGE * ACK_ENTRY_LEN {
                    let (who, body) = batches.swap_remove(i);
                    self.send_acks(&who, &body);
                }
                continue;
            }
            let to = ReplyTo {
                identity: &c.identity,
                delimited: c.delimited,
                request_id: c.request_id,
            };
            let ack = protocol::encode_publish_ack(c.offset, c.seq);
            self.ok_reply(&to, &[&ack]);
        }
        for (who, body) in batches {
            self.send_acks(&who, &body);
        }
    }

    /// The log failed: the confirms still waiting will never be durable. Each gets an error
    /// reply now, so its publisher learns at once instead of when its confirm times out.
    fn fail_confirms(&mut self) {
        while let Some(c) = self.confirms.pop_front() {
            let to = ReplyTo {
                identity: &c.identity,
                delimited: c.delimited,
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
            identity,
            delimited: false,
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
                Forward::Copy,
                received_at,
            ) {
                tracing::error!("event log append failed for {topic}: {e}");
            }
        }
    }

    /// Whether some subscription would receive `$space.*` events.
    fn space_events_wanted(&self) -> bool {
        let space = SPACE_TOPIC_PREFIX.as_bytes();
        self.subscriptions
            .keys()
            .any(|p| space.starts_with(p) || p.starts_with(space))
    }

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
            let Some((&kind, prefix)) = msg.split_first() else {
                continue;
            };
            match kind {
                1 => {
                    *self.subscriptions.entry(prefix.to_vec()).or_insert(0) += 1;
                    self.subscription_count += 1;
                }
                0 => {
                    if let Some(n) = self.subscriptions.get_mut(prefix) {
                        *n -= 1;
                        self.subscription_count -= 1;
                        if *n == 0 {
                            self.subscriptions.remove(prefix);
                        }
                    }
                }
                _ => continue,
            }
            self.subscription_generation += 1;
            if let Some(se) = &self.space_events {
                se.set_wanted(self.space_events_wanted());
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
                self.requests += 1;
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

    /// Turn a stamped ROOM publish (the request's frame `stamped.frame_index`) into its event
    /// and forward it, then send its ack if it asked for one.
    fn send_in_place(&mut self, frames: &mut [Frame], stamped: InPlace) {
        let InPlace {
            frame_index,
            topic_len,
            meta,
            producer,
            ack,
        } = stamped;
        let frame = &mut frames[frame_index];
        if frame.is_shared() {
            // Someone else may read these bytes (an in-process sender that kept a copy):
            // build the event in a message of its own instead.
            let publish = frame.as_slice();
            let topic = &publish[PUBLISH_ROOM..PUBLISH_ROOM + topic_len];
            let payload = &publish[PUBLISH_ROOM + topic_len + 1..];
            let mut event = Frame::event(topic, &meta, payload);
            self.forward_logged(&mut event, producer);
        } else {
            protocol::publish_into_event(frame.as_mut_slice(), topic_len, &meta);
            self.forward_logged(frame, producer);
        }
        if let Some(later) = ack {
            let to = ReplyTo {
                identity: frames[0].as_slice(),
                delimited: later.delimited,
                request_id: later.request_id,
            };
            let ack = protocol::encode_publish_ack(meta.offset, meta.seq);
            self.ok_reply(&to, &[&ack]);
        }
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
            identity: frames[0],
            delimited,
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
                let token: &[u8] = body[0];
                if !protocol::valid_sync_token(token) {
                    return Err(ProtocolError::BadRequest(
                        "sync token must be 1..=64 bytes of [A-Za-z0-9_-]".into(),
                    ));
                }
                let mut topic = Vec::with_capacity(SYNC_TOPIC_PREFIX.len() + token.len());
                topic.extend_from_slice(SYNC_TOPIC_PREFIX.as_bytes());
                topic.extend_from_slice(token);
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
                let meta = Meta {
                    kind: KIND_EVENT,
                    offset: UNLOGGED_OFFSET,
                    seq: 0,
                    time_ns: now_ns(),
                    content_type: ContentType::Raw as u8,
                };
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
                let member = (reply.identity.to_vec(), reply.request_id);
                match self
                    .groups
                    .iter_mut()
                    .find(|g| g.name == name && g.filter.as_str() == filter.as_str())
                {
                    Some(g) => g.members.push(member),
                    None => self.groups.push(QueueGroup {
                        name,
                        filter,
                        members: vec![member],
                        next: 0,
                        backlog: std::collections::VecDeque::new(),
                    }),
                }
                self.ok_reply(&reply, &[]);
                Ok(())
            }),
            Op::QueueLeave => expect(1).and_then(|()| {
                let id: [u8; 8] = body[0][..]
                    .try_into()
                    .map_err(|_| ProtocolError::BadRequest("join id must be 8 bytes".into()))?;
                let id = u64::from_le_bytes(id);
                for g in &mut self.groups {
                    g.members
                        .retain(|(who, join)| !(who == reply.identity && *join == id));
                }
                self.groups.retain(|g| !g.members.is_empty());
                self.ok_reply(&reply, &[]);
                Ok(())
            }),
            Op::Deliver | Op::Acks | Op::Ok | Op::Error => {
                let msg = format!("op {op:?} is a reply, not a request");
                self.error_reply(&reply, ErrorCode::BadRequest, &msg);
                Ok(())
            }
        };
        if let Err(e) = result {
            self.error_reply(&reply, e.code(), &e.to_string());
        }
    }

    /// The hot path: check, stamp, log, forward. `inline` is the publish frame after its
    /// header.
    ///
    /// `frame_index` is the publish frame's index among the request's frames: a
    /// [`FLAG_ROOM`] publish is forwarded as that very frame (see `forward_in_place`).
    fn publish(&mut self, reply: &ReplyTo<'_>, header: Header, inline: &[u8], frame_index: usize) {
        let (producer, inline) = if header.flags & FLAG_PRODUCER != 0 {
            match protocol::split_producer(inline) {
                Ok(p) => (Some(p.0), p.1),
                Err(e) => {
                    self.rejected += 1;
                    return self.error_reply(reply, e.code(), &e.to_string());
                }
            }
        } else {
            (None, inline)
        };
        let in_place = header.flags & FLAG_ROOM != 0;
        let inline = if in_place {
            let producer_len = if producer.is_some() { 16 } else { 0 };
            match protocol::split_room(inline, producer_len) {
                Ok(rest) => rest,
                Err(e) => {
                    self.rejected += 1;
                    return self.error_reply(reply, e.code(), &e.to_string());
                }
            }
        } else {
            inline
        };
        let (topic, payload) = match protocol::split_topic(inline, MAX_TOPIC_LEN) {
            Ok(parts) => parts,
            Err(e) => {
                self.rejected += 1;
                return self.error_reply(reply, ErrorCode::BadTopic, &e.to_string());
            }
        };
        let topic_index = self.topic_index.get(topic).copied();
        let topic_str = match topic_index {
            // SAFETY: every key of `self.topic_index` was made from a `&str` (a topic that
            // passed `validate_topic`, or one recovered from the log as a `String`), so it is
            // UTF-8. A known topic skips the check: it was a tenth of the dispatcher's hot path.
            Some(_) => unsafe { std::str::from_utf8_unchecked(topic) },
            None => match validate_topic(topic) {
                Ok(t) => t,
                Err(e) => {
                    self.rejected += 1;
                    return self.error_reply(reply, ErrorCode::BadTopic, &e.to_string());
                }
            },
        };
        if topic[0] == b'$' {
            self.rejected += 1;
            let msg = format!(
                "topic `{}` is reserved: topics starting with `$` belong to the broker",
                String::from_utf8_lossy(topic)
            );
            return self.error_reply(reply, ErrorCode::BadTopic, &msg);
        }
        if payload.len() > self.config.max_payload {
            self.rejected += 1;
            let msg = format!(
                "payload is {} bytes, the maximum is {} bytes",
                payload.len(),
                self.config.max_payload
            );
            return self.error_reply(reply, ErrorCode::PayloadTooLarge, &msg);
        }

        if let Some((id, pseq)) = producer {
            if let Some(p) = self.producers.get_mut(&id) {
                if pseq <= p.seq {
                    // A retry of something already stamped: answer it, forward nothing.
                    p.last_seen_ns = p.last_seen_ns.max(self.received_at_ns);
                    let p = *p;
                    return self.duplicate(reply, header, pseq, p);
                }
                if pseq != p.seq + 1 {
                    // An earlier one never arrived (lost with a dropped connection): refuse,
                    // so the producer resends in order and nothing is skipped as a duplicate.
                    self.rejected += 1;
                    let msg = format!(
                        "producer {id:016x} sequence gap: expected {}, got {pseq}",
                        p.seq + 1
                    );
                    return self.error_reply(reply, ErrorCode::OutOfOrder, &msg);
                }
            }
        }

        let forward = if in_place {
            Forward::InPlace { frame_index }
        } else {
            Forward::Copy
        };
        let stamped = self.append_and_forward(
            (topic_str, topic_index),
            payload,
            header.content_type,
            producer,
            forward,
            self.received_at_ns,
        );
        let (offset, seq) = match stamped {
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::error!("event log append failed: {e}");
                let msg = format!("event log: {e}");
                return self.error_reply(reply, ErrorCode::Internal, &msg);
            }
        };

        if header.flags & FLAG_CONFIRM != 0 {
            self.confirms.push_back(PendingConfirm {
                offset,
                seq,
                identity: reply.identity.to_vec(),
                delimited: reply.delimited,
                request_id: reply.request_id,
                // A REQ socket takes one reply per request; it cannot use batches.
                batched: header.flags & FLAG_BATCH_ACKS != 0 && !reply.delimited,
            });
        } else if header.flags & FLAG_ACK != 0 {
            // An ack says the event is out: a subscriber that subscribes after it never gets
            // the event. A ROOM publish's event is sent after this returns (see
            // `forward_in_place`), so its ack is sent then; every reply flushes the burst queue.
            match self.forward_in_place.as_mut() {
                Some(f) => {
                    f.ack = Some(ReplyLater {
                        delimited: reply.delimited,
                        request_id: reply.request_id,
                    })
                }
                None => {
                    let ack = protocol::encode_publish_ack(offset, seq);
                    self.ok_reply(reply, &[&ack]);
                }
            }
        }
    }

    /// Stamp an event with the next offset, its topic's next sequence and the time, append it
    /// to the log, and send it to subscribers (or leave that to `drain_requests`, see
    /// [`Forward::InPlace`]). `topic` comes with its index in `self.topics` if the caller has
    /// looked it up. Returns `(offset, seq)`.
    fn append_and_forward(
        &mut self,
        (topic, topic_index): (&str, Option<usize>),
        payload: &[u8],
        content_type: u8,
        producer: Option<(u64, u64)>,
        forward: Forward,
        received_at_ns: u64,
    ) -> Result<(u64, u64), agora_storage::log::LogError> {
        if self.log.failed() {
            return Err(agora_storage::log::LogError::Failed);
        }
        let offset = self.next_offset;
        let record = Record {
            offset,
            seq: 0,
            time_ns: 0,
            content_type,
            producer,
            topic,
            payload,
        };
        if record.body_len() > self.max_record_bytes {
            return Err(agora_storage::log::LogError::RecordTooLarge {
                size: record.body_len(),
                max: self.max_record_bytes,
            });
        }
        // `received_at_ns` was read after the event arrived (see `drain_request_batch`);
        // stamps never go backwards.
        let time_ns = received_at_ns.max(self.last_time_ns);
        let topic_bytes = topic.as_bytes();
        let index = match topic_index.or_else(|| self.topic_index.get(topic_bytes).copied()) {
            Some(i) => i,
            None => {
                self.topic_index
                    .insert(Box::from(topic_bytes), self.topics.len());
                self.topics.push((Box::from(topic), TopicState::new()));
                self.topics.len() - 1
            }
        };
        let state = &mut self.topics[index].1;
        let seq = state.seq + 1;
        state.seq = seq;
        state.events += 1;
        if state.fanout_generation != self.subscription_generation {
            state.fanout = self
                .subscriptions
                .iter()
                .filter(|(prefix, _)| is_prefix_of_event(prefix, topic_bytes))
                .map(|(_, n)| *n)
                .sum();
            state.fanout_generation = self.subscription_generation;
        }
        self.events_out += state.fanout;
        self.uncommitted = true;
        self.next_offset += 1;
        self.events_in += 1;
        self.last_time_ns = time_ns;
        if let Some((id, pseq)) = producer {
            self.producers.insert(
                id,
                ProducerState {
                    seq: pseq,
                    stamped: Some((offset, seq)),
                    last_seen_ns: time_ns,
                },
            );
        }
        let meta = Meta {
            kind: KIND_EVENT,
            offset,
            seq,
            time_ns,
            content_type,
        };
        if !self.groups.is_empty() {
            self.deliver_to_groups(topic, &meta, payload);
        }
        match forward {
            Forward::Copy => {
                let mut frame = Frame::event(topic_bytes, &meta, payload);
                self.forward_logged(&mut frame, producer);
            }
            Forward::InPlace { frame_index } => {
                self.forward_in_place = Some(InPlace {
                    frame_index,
                    topic_len: topic.len(),
                    meta,
                    producer,
                    ack: None,
                });
            }
        }
        Ok((offset, seq))
    }

    /// Send a stamped event frame to subscribers, and to the log at the next commit.
    fn forward_logged(&mut self, frame: &mut Frame, producer: Option<(u64, u64)>) {
        self.log_batch.push(frame, producer);
        if self.log_batch.is_full() {
            self.commit();
        }
        self.egress.queue(frame);
    }

    /// Give the event to one member of each queue group whose filter matches.
    fn deliver_to_groups(&mut self, topic: &str, meta: &Meta, payload: &[u8]) {
        let mut frame: Option<Vec<u8>> = None;
        for g in 0..self.groups.len() {
            if !self.groups[g].filter.matches(topic) {
                continue;
            }
            let frame = frame
                .get_or_insert_with(|| protocol::encode_event(topic.as_bytes(), meta, payload))
                .clone();
            let group = &mut self.groups[g];
            if group.backlog.is_empty() {
                if let Some(rejected) = offer(&self.router, group, frame) {
                    group.backlog.push_back(rejected);
                }
            } else {
                group.backlog.push_back(frame);
            }
            if group.backlog.len() > GROUP_BACKLOG {
                group.backlog.pop_front();
                self.egress.dropped += 1;
            }
        }
        self.groups
            .retain(|g| !g.members.is_empty() || !g.backlog.is_empty());
    }

    /// Retry the events queue groups hold back; returns whether any remain.
    fn flush_group_backlogs(&mut self) -> bool {
        let mut left = false;
        for group in &mut self.groups {
            while let Some(frame) = group.backlog.pop_front() {
                if group.members.is_empty() {
                    group.backlog.clear();
                    break;
                }
                if let Some(rejected) = offer(&self.router, group, frame) {
                    group.backlog.push_front(rejected);
                    break;
                }
            }
            left |= !group.backlog.is_empty();
        }
        self.groups.retain(|g| !g.members.is_empty());
        left
    }

    /// Forget the producers that have not published for `producer_ttl`: a producer id is
    /// random per client, so without this every client that ever published confirmed would
    /// be remembered for good. (The log forgets them likewise, so a restart does not bring
    /// them back.)
    fn forget_idle_producers(&mut self) {
        let cutoff = agora_storage::log::producer_cutoff_ns(now_ns(), self.config.producer_ttl);
        let before = self.producers.len();
        self.producers.retain(|_, p| p.last_seen_ns >= cutoff);
        let forgotten = before - self.producers.len();
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                left = self.producers.len(),
                "idle producers forgotten"
            );
        }
    }

    /// Answer a producer's retry of an event it already published. A confirmed retry is
    /// answered once the original is durable.
    fn duplicate(&mut self, reply: &ReplyTo<'_>, header: Header, pseq: u64, last: ProducerState) {
        tracing::debug!(pseq, "duplicate publish dropped");
        if header.flags & (FLAG_ACK | FLAG_CONFIRM) == 0 {
            return;
        }
        // Offsets are known only for the producer's latest event seen since this broker
        // started; older retries are answered with the unknown offset.
        let (offset, seq) = match last.stamped {
            Some(stamped) if last.seq == pseq => stamped,
            _ => (protocol::UNKNOWN_OFFSET, 0),
        };
        let durable = self.durable_offset();
        if header.flags & FLAG_CONFIRM != 0
            && offset != protocol::UNKNOWN_OFFSET
            && offset >= durable
        {
            // Queue behind the original; confirms are answered in offset order.
            let pos = self.confirms.partition_point(|c| c.offset <= offset);
            self.confirms.insert(
                pos,
                PendingConfirm {
                    offset,
                    seq,
                    identity: reply.identity.to_vec(),
                    delimited: reply.delimited,
                    request_id: reply.request_id,
                    batched: header.flags & FLAG_BATCH_ACKS != 0 && !reply.delimited,
                },
            );
            return;
        }
        let ack = protocol::encode_publish_ack(offset, seq);
        self.ok_reply(reply, &[&ack]);
    }

    fn snapshot(&self) -> Stats {
        Stats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            events_in: self.events_in,
            events_out: self.events_out,
            rejected: self.rejected,
            dropped: self.egress.dropped,
            subscriptions: self.subscription_count,
            requests: self.requests,
            rate_in: self.rate_in,
            topics: self
                .topics
                .iter()
                .map(|(name, t)| {
                    (
                        name.to_string(),
                        TopicStats {
                            events: t.events,
                            seq: t.seq,
                            rate: t.rate,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    /// Update rates and publish the snapshot on `$sys.stats`.
    fn publish_stats(&mut self) {
        let now = Instant::now();
        let secs = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        self.rate_in = (self.events_in - self.events_in_at_tick) as f64 / secs;
        self.events_in_at_tick = self.events_in;
        for (_, t) in self.topics.iter_mut() {
            t.rate = (t.events - t.events_at_tick) as f64 / secs;
            t.events_at_tick = t.events;
        }
        self.send_beacons();
        let body = protocol::encode_cbor_body(&self.snapshot());
        self.stats_seq += 1;
        let meta = Meta {
            kind: KIND_EVENT,
            offset: UNLOGGED_OFFSET,
            seq: self.stats_seq,
            time_ns: now_ns(),
            content_type: ContentType::Cbor as u8,
        };
        self.egress.send(STATS_TOPIC.as_bytes(), &meta, &body);
    }

    /// For every topic whose sequence moved since its last beacon, send a beacon carrying the
    /// latest sequence. A beacon sent while the socket is lossy may itself be lost, so it only
    /// counts as delivered when sent losslessly.
    ///
    /// Even a lossless send does not reach everyone once the socket has been lossy: libzmq
    /// takes a subscriber's pipe that overflowed during a lossy spell out of the fan-out until
    /// its reader drains it, and sends skip that pipe without an error even with
    /// `XPUB_NODROP` back on. A subscriber that was not reading would never learn of the events
    /// it lost at the end of a burst. So, once the socket has been lossy, each topic's latest
    /// beacon is repeated after 1, 2, 4, ... up to [`BEACON_REPEAT_MAX_TICKS`] stats ticks,
    /// for as long as the broker runs (one small message per topic and interval).
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
        let repeat = self.egress.was_lossy;
        for (topic, state) in self.topics.iter_mut() {
            let moved = state.seq != state.beaconed_seq;
            if !moved {
                if state.beacon_every == 0 {
                    continue;
                }
                state.beacon_in = state.beacon_in.saturating_sub(1);
                if state.beacon_in > 0 {
                    continue;
                }
                state.beacon_every = (state.beacon_every * 2).min(BEACON_REPEAT_MAX_TICKS);
                state.beacon_in = state.beacon_every;
            }
            let meta = Meta {
                kind: KIND_BEACON,
                offset: UNLOGGED_OFFSET,
                seq: state.seq,
                time_ns,
                content_type: ContentType::Raw as u8,
            };
            self.egress.send(topic.as_bytes(), &meta, &[]);
            if self.egress.lossy_until.is_none() {
                state.beaconed_seq = state.seq;
                if moved && repeat {
                    state.beacon_every = 1;
                    state.beacon_in = 1;
                }
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
        if let Err(e) = send_routed(&self.router, to.identity, to.delimited, header, body) {
            tracing::debug!("reply not sent: {e}");
        }
    }
}

/// Hand an event frame to the next member of `group` that can take it. Members that are
/// gone are removed; full ones are skipped. Returns the frame if nobody could take it.
fn offer(router: &zmq::Socket, group: &mut QueueGroup, frame: Vec<u8>) -> Option<Vec<u8>> {
    let mut tries = group.members.len();
    while tries > 0 && !group.members.is_empty() {
        tries -= 1;
        let i = group.next % group.members.len();
        let (identity, join_id) = &group.members[i];
        let header = Header::new(Op::Deliver, *join_id).encode();
        match send_routed(router, identity, false, &header, &[&frame]) {
            Ok(()) => {
                group.next = i + 1;
                return None;
            }
            Err(zmq::Error::EHOSTUNREACH) => {
                tracing::info!(group = %group.name, "queue group member gone");
                group.members.remove(i);
            }
            Err(_) => group.next = i + 1, // full: try the next member
        }
    }
    Some(frame)
}

/// Whether a SUB subscription `prefix` matches the event frame for `topic` (which starts with
/// the topic, then a NUL): the prefix may cover the topic and its NUL.
fn is_prefix_of_event(prefix: &[u8], topic: &[u8]) -> bool {
    if prefix.len() <= topic.len() {
        topic.starts_with(prefix)
    } else {
        prefix.len() == topic.len() + 1 && prefix.starts_with(topic) && prefix[topic.len()] == 0
    }
}

/// How a stamped event reaches the events socket.
#[derive(Clone, Copy, Debug)]
enum Forward {
    /// Encoded into a new message (topic, meta and a copy of the payload).
    Copy,
    /// The publish frame itself (a [`FLAG_ROOM`] publish, the request's frame at this index)
    /// becomes the event in place and is sent on.
    InPlace { frame_index: usize },
}

/// A stamped ROOM publish waiting to become its event (see `Dispatcher::forward_in_place`).
struct InPlace {
    frame_index: usize,
    topic_len: usize,
    meta: Meta,
    producer: Option<(u64, u64)>,
    /// An ACK publish: its reply (the request's identity is frame 0), sent once the event has
    /// gone out.
    ack: Option<ReplyLater>,
}

/// Where a reply goes, apart from the identity.
struct ReplyLater {
    delimited: bool,
    request_id: u64,
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

/// The events socket and its delivery state: one place that turns (topic, meta, payload) into
/// an event frame and gets it out.
struct Egress {
    xpub: zmq::Socket,
    /// Set while a slow subscriber has made the socket lossy.
    lossy_until: Option<Instant>,
    slow_timeout: Duration,
    /// Events sent while lossy (a slow subscriber may have missed them).
    dropped: u64,
    /// The socket has been lossy at least once (so a pipe may still be out of the fan-out).
    was_lossy: bool,
    /// [`SEND_BURST`] frames: the first `queued` hold events stamped but not yet sent (see
    /// [`Egress::queue`]), the rest are empty.
    burst: Vec<Frame>,
    queued: usize,
}

impl Egress {
    /// Send one event, waiting for a full subscriber queue at most `slow_timeout` before
    /// sending past it.
    fn send(&mut self, topic: &[u8], meta: &Meta, payload: &[u8]) {
        let mut frame = Frame::event(topic, meta, payload);
        self.flush();
        // Not sent (an error, logged): dropped with the frame.
        let _ = self.send_frame(&mut frame);
    }

    /// Take an event frame (leaving it empty) to send with the next [`Egress::flush`], or
    /// at once when a burst's worth is queued.
    fn queue(&mut self, frame: &mut Frame) {
        // A swap with an empty slot: no message to initialise per event.
        std::mem::swap(frame, &mut self.burst[self.queued]);
        self.queued += 1;
        if self.queued == SEND_BURST {
            self.flush();
        }
    }

    /// Send the queued events, in order, leaving their slots empty.
    fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        let mut burst = std::mem::take(&mut self.burst);
        for frame in &mut burst[..self.queued] {
            if !self.send_frame(frame) {
                // Given up on after an error `send_frame` has logged: the slot must still be
                // empty for the next event (a sent message is left empty by libzmq).
                *frame = Frame::new();
            }
        }
        self.queued = 0;
        self.burst = burst;
    }

    /// Send one event frame, as [`Egress::send`] describes. Returns whether it was sent
    /// (the frame is empty then); an error is logged and leaves the frame as it was.
    fn send_frame(&mut self, frame: &mut Frame) -> bool {
        if let Some(until) = self.lossy_until {
            if Instant::now() >= until {
                if let Err(e) = set_raw_int_option(&mut self.xpub, zmq_sys::ZMQ_XPUB_NODROP, 1) {
                    tracing::warn!("cannot restore XPUB_NODROP: {e}");
                }
                self.lossy_until = None;
                tracing::info!("events socket back to lossless delivery");
            }
        }
        let mut blocked_since: Option<Instant> = None;
        let mut flags = zmq::DONTWAIT;
        loop {
            // A refused send (EAGAIN: a subscriber's queue is full under NODROP) leaves the
            // frame with us for the next attempt.
            match frame.send(&mut self.xpub, flags) {
                Ok(()) => break,
                Err(zmq::Error::EAGAIN) => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    let waited = since.elapsed();
                    if waited >= self.slow_timeout {
                        tracing::warn!(
                            "a subscriber has been full for {:?}: delivering past it",
                            self.slow_timeout
                        );
                        if let Err(e) =
                            set_raw_int_option(&mut self.xpub, zmq_sys::ZMQ_XPUB_NODROP, 0)
                        {
                            tracing::error!("cannot make events socket lossy: {e}");
                            return false;
                        }
                        let window = self.slow_timeout.max(Duration::from_secs(1));
                        self.lossy_until = Some(Instant::now() + window);
                        self.was_lossy = true;
                        flags = zmq::DONTWAIT;
                        continue;
                    }
                    // Wait inside libzmq until the full queue's reader frees room (the pipe
                    // wakes the socket at once, as zmq_proxy's blocking send does), for at
                    // most the rest of the slow-consumer timeout. Sleeping and retrying
                    // instead left the subscriber idle for most of each sleep.
                    let rest = (self.slow_timeout - waited).as_millis().max(1);
                    if let Err(e) = self.xpub.set_sndtimeo(rest.min(i32::MAX as u128) as i32) {
                        tracing::error!("cannot set events send timeout: {e}");
                        return false;
                    }
                    flags = 0;
                }
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("events socket send failed: {e}");
                    return false;
                }
            }
        }
        if self.lossy_until.is_some() {
            self.dropped += 1;
        }
        true
    }
}
