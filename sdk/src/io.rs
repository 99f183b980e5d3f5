//! The I/O thread: the one owner of a client's ZeroMQ sockets.
//!
//! Async handles send [`Command`]s over a bounded tokio channel (so publishers feel
//! back-pressure) and ring a [`doorbell`] that writes only when the thread is parked in
//! `zmq::poll`. The thread writes requests to the DEALER, matches replies to waiting callers
//! by request id, reads events from the SUB and hands them to subscriptions in batches.
//!
//! Also [`spawn_socket_thread`], how each of a client's three socket threads (this one, the
//! tuple space's, the replay service's) is started in the client's one ZeroMQ context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_wire::bus::{self as protocol, EventLayout, HEADER_LEN, SYNC_TOPIC_PREFIX};
use agora_wire::socket::{doorbell, Bell, Ringer};
use agora_wire::topic::Filter;
use agora_wire::{Header, Op};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Events handed to a subscription per channel message, at most.
const EVENT_BATCH: usize = 512;
/// Commands taken from the channel per loop turn, at most.
const COMMAND_BATCH: usize = 1024;
/// Messages of ZeroMQ's size limit for inline (no allocation) messages.
const ZMQ_VSM: usize = 33;

/// Run `worker` on a new thread named `name`, then close its sockets, then let go of its
/// clone of their context, in that order: the last clone of a context to go waits
/// (`zmq_ctx_term`) until every socket made in it is closed, so a context dropped before its
/// own thread's sockets would wait forever.
pub(crate) fn spawn_socket_thread<W: Send + 'static>(
    name: &str,
    ctx: &zmq::Context,
    mut worker: W,
    run: fn(&mut W),
) -> std::io::Result<()> {
    let ctx = ctx.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            run(&mut worker);
            drop(worker);
            drop(ctx);
        })
        .map(drop)
}

/// A received event frame: the ZeroMQ message itself when only one subscription wants it, a
/// copy otherwise.
pub(crate) enum FrameBuf {
    Zmq(zmq::Message),
    Owned(Vec<u8>),
    /// A slice of a replay batch, whose events share one buffer.
    Shared(std::sync::Arc<[u8]>, std::ops::Range<usize>),
}

impl std::ops::Deref for FrameBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FrameBuf::Zmq(m) => m,
            FrameBuf::Owned(v) => v,
            FrameBuf::Shared(b, r) => &b[r.clone()],
        }
    }
}

/// One event as it came off the wire: the frame and where its parts are. The topic was
/// checked to be UTF-8 when the frame arrived.
pub(crate) struct WireEvent {
    pub frame: FrameBuf,
    pub layout: EventLayout,
}

impl WireEvent {
    pub(crate) fn topic(&self) -> &str {
        std::str::from_utf8(&self.frame[..self.layout.topic_len]).unwrap_or_default()
    }
    pub(crate) fn payload(&self) -> &[u8] {
        &self.frame[self.layout.payload_start..]
    }
}

/// A reply: the frames after the header.
pub(crate) type ReplyFrames = Vec<zmq::Message>;
type ReplyTx = oneshot::Sender<Result<ReplyFrames>>;

/// What handles ask the I/O thread to do.
pub(crate) enum Command {
    /// Send a request; `reply` gets the reply frames (or the error reply as an `Err`).
    /// Without `reply`, no reply is expected on success (fire-and-forget publish); an error
    /// reply is recorded as the client's last asynchronous error. `frames[0]` starts with
    /// [`HEADER_LEN`] bytes of room that the I/O thread fills with the header.
    Request {
        op: Op,
        flags: u8,
        content_type: u8,
        frames: Vec<Vec<u8>>,
        reply: Option<ReplyTx>,
        /// How long `reply` waits before it gets [`Error::Timeout`]; `None`: the client's
        /// request timeout. (Enforced here, so callers need no timer of their own.)
        timeout: Option<Duration>,
    },
    /// Start delivering events matching `filter` to `tx`, then answer `done` once the broker
    /// provably delivers to this subscription.
    Subscribe {
        id: u64,
        filters: Vec<Filter>,
        tx: mpsc::Sender<Vec<WireEvent>>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Join a queue group: events matching `filter` are shared among the group's members,
    /// each going to one. They arrive on the request socket as DELIVER messages. `done` gets
    /// the broker's answer to the join.
    QueueJoin {
        id: u64,
        group: String,
        filter: Filter,
        tx: mpsc::Sender<Vec<WireEvent>>,
        done: ReplyTx,
    },
    /// Stop a subscription or leave a queue group (its stream was dropped).
    Unsubscribe { id: u64 },
}

/// This client's membership of a queue group, keyed by the join's request id.
struct GroupMember {
    sub_id: u64,
    tx: mpsc::Sender<Vec<WireEvent>>,
    /// Delivered events the stream has no room for yet.
    overflow: std::collections::VecDeque<WireEvent>,
}

/// The handle side: the command channel plus the doorbell.
pub(crate) struct IoHandle {
    tx: mpsc::Sender<Command>,
    ringer: Ringer,
    /// Errors from fire-and-forget requests, reported by the next `flush`.
    pub(crate) async_error: Arc<Mutex<Option<Error>>>,
}

impl IoHandle {
    /// Queue a command (waits while the queue is full: back-pressure).
    pub(crate) async fn send(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| Error::Closed)?;
        self.ring();
        Ok(())
    }

    /// [`IoHandle::send`], giving up after `limit` if the queue stays full (the broker takes
    /// nothing: gone, or pushing back that long). Then nothing was queued: `Timeout`.
    pub(crate) async fn send_within(
        &self,
        cmd: Command,
        limit: Duration,
        what: &'static str,
    ) -> Result<()> {
        // No timer on the fast path: most sends find room.
        let cmd = match self.tx.try_send(cmd) {
            Ok(()) => {
                self.ring();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
            Err(mpsc::error::TrySendError::Full(cmd)) => cmd,
        };
        self.ring();
        match tokio::time::timeout(limit, self.tx.send(cmd)).await {
            Ok(Ok(())) => {
                self.ring();
                Ok(())
            }
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout {
                what,
                timeout: limit,
            }),
        }
    }

    /// Queue a command without waiting (used from `Drop`).
    pub(crate) fn try_send(&self, cmd: Command) {
        if self.tx.try_send(cmd).is_ok() {
            self.ring();
        }
    }

    /// Wake the thread if it is parked.
    fn ring(&self) {
        self.ringer.ring();
    }
}

impl Drop for IoHandle {
    fn drop(&mut self) {
        // Dropping the sender ends the thread's loop; wake it so it notices.
        self.ringer.knock();
    }
}

struct Subscriber {
    id: u64,
    /// An event is delivered once if any of the filters matches.
    filters: Vec<Filter>,
    prefixes: Vec<Vec<u8>>,
    tx: mpsc::Sender<Vec<WireEvent>>,
    batch: Vec<WireEvent>,
}

struct PendingSync {
    token: String,
    done: oneshot::Sender<Result<()>>,
    next_try: Instant,
    deadline: Instant,
}

/// Start the I/O thread with sockets connected to the broker's request endpoint; the events
/// socket connects once the returned sender gives it the events endpoint (after HELLO).
pub(crate) fn spawn(
    ctx: &zmq::Context,
    endpoint: &str,
    request_timeout: Duration,
) -> Result<(IoHandle, oneshot::Sender<String>)> {
    let dealer = ctx.socket(zmq::DEALER)?;
    dealer.set_linger(1000)?;
    dealer.set_sndhwm(10_000)?;
    dealer.set_rcvhwm(10_000)?;
    dealer.connect(endpoint)?;
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_linger(0)?;
    sub.set_rcvhwm(10_000)?;

    let (tx, rx) = mpsc::channel(4096);
    let (ringer, bell) = doorbell()?;
    let async_error = Arc::new(Mutex::new(None));
    let (events_tx, events_rx) = oneshot::channel::<String>();
    let io = IoThread {
        dealer,
        sub,
        sub_connected: false,
        events_rx: Some(events_rx),
        rx,
        bell,
        async_error: async_error.clone(),
        next_request_id: 1,
        waiting: rustc_hash::FxHashMap::default(),
        subscribers: Vec::new(),
        members: HashMap::new(),
        syncs: Vec::new(),
        stalled: false,
        member_backlog: false,
        pending: None,
        request_timeout,
        closing: false,
    };
    spawn_socket_thread("agora-io", ctx, io, IoThread::run)?;
    Ok((
        IoHandle {
            tx,
            ringer,
            async_error,
        },
        events_tx,
    ))
}

/// A caller waiting for its reply.
struct Waiting {
    tx: ReplyTx,
    /// When it gets [`Error::Timeout`] instead.
    deadline: Instant,
    timeout: Duration,
}

impl Waiting {
    /// Waiting from now, for at most `timeout`.
    fn new(tx: ReplyTx, timeout: Duration) -> Waiting {
        Waiting {
            tx,
            deadline: Instant::now() + timeout,
            timeout,
        }
    }
}

struct IoThread {
    dealer: zmq::Socket,
    sub: zmq::Socket,
    sub_connected: bool,
    /// The events endpoint, once the client has learnt it from HELLO.
    events_rx: Option<oneshot::Receiver<String>>,
    rx: mpsc::Receiver<Command>,
    /// Armed while the thread is parked (or about to be): handles' rings write only then.
    bell: Bell,
    async_error: Arc<Mutex<Option<Error>>>,
    next_request_id: u64,
    /// Callers waiting for a reply, with when they give up. Not an
    /// `agora_wire::socket::PendingReplies`: the sweep also retires callers that went away
    /// (their receiver dropped), which only a scan of every entry finds, and a closing thread
    /// waits for this table to empty; and every confirmed publish passes through here, so
    /// an insert is one cheap hash (no heap of deadlines, whose answered entries would stay
    /// behind an unanswered one until its deadline).
    waiting: rustc_hash::FxHashMap<u64, Waiting>,
    subscribers: Vec<Subscriber>,
    members: HashMap<u64, GroupMember>,
    syncs: Vec<PendingSync>,
    /// A subscription's channel is full: stop reading events until it drains.
    stalled: bool,
    /// Queue events are waiting for room in their streams: look again soon.
    member_backlog: bool,
    /// A request the DEALER refused (its queue is full), to retry before anything else.
    pending: Option<(Header, Vec<Vec<u8>>)>,
    request_timeout: Duration,
    closing: bool,
}

impl IoThread {
    fn run(&mut self) {
        let mut last_sweep = Instant::now();
        loop {
            if let Some(rx) = &mut self.events_rx {
                if let Ok(ep) = rx.try_recv() {
                    match self.sub.connect(&ep) {
                        Ok(()) => self.sub_connected = true,
                        Err(e) => tracing::error!("cannot connect events socket to {ep}: {e}"),
                    }
                    self.events_rx = None;
                }
            }
            let mut progressed = self.flush_pending();
            if self.pending.is_none() && !self.closing {
                progressed |= self.take_commands();
            }
            progressed |= self.read_replies();
            if self.stalled {
                progressed |= self.retry_batches();
            }
            if self.member_backlog {
                self.flush_members();
            }
            if !self.stalled && self.sub_connected {
                progressed |= self.read_events();
            }
            self.drive_syncs();
            if last_sweep.elapsed() >= Duration::from_millis(100) {
                self.expire_requests();
                last_sweep = Instant::now();
            }
            if self.closing && self.waiting.is_empty() && self.pending.is_none() {
                return;
            }
            if progressed {
                continue;
            }
            // Park: arm the doorbell, look once more, then sleep in poll.
            self.bell.arm();
            if !self.closing && self.pending.is_none() && !self.rx.is_empty() {
                self.bell.disarm();
                continue;
            }
            let timeout_ms = if self.stalled
                || self.member_backlog
                || self.events_rx.is_some()
                || !self.syncs.is_empty()
            {
                1
            } else {
                100
            };
            let dealer_events = if self.pending.is_some() {
                zmq::POLLIN | zmq::POLLOUT
            } else {
                zmq::POLLIN
            };
            let sub_events = if self.stalled || !self.sub_connected {
                zmq::PollEvents::empty()
            } else {
                zmq::POLLIN
            };
            let mut items = [
                self.dealer.as_poll_item(dealer_events),
                self.sub.as_poll_item(sub_events),
                zmq::PollItem::from_fd(self.bell.fd(), zmq::POLLIN),
            ];
            let _ = zmq::poll(&mut items, timeout_ms);
            self.bell.wake();
        }
    }

    /// Move commands from the channel to the sockets.
    fn take_commands(&mut self) -> bool {
        let mut progressed = false;
        for _ in 0..COMMAND_BATCH {
            let cmd = match self.rx.try_recv() {
                Ok(c) => c,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closing = true;
                    break;
                }
            };
            progressed = true;
            match cmd {
                Command::Request {
                    op,
                    flags,
                    content_type,
                    frames,
                    reply,
                    timeout,
                } => {
                    let request_id = self.next_request_id;
                    self.next_request_id += 1;
                    let header = Header {
                        op: op as u8,
                        flags,
                        content_type,
                        request_id,
                    };
                    if let Some(tx) = reply {
                        let timeout = timeout.unwrap_or(self.request_timeout);
                        self.waiting.insert(request_id, Waiting::new(tx, timeout));
                    }
                    let mut frames = frames;
                    match frames.first_mut() {
                        Some(f) if f.len() >= HEADER_LEN => {
                            f[..HEADER_LEN].copy_from_slice(&header.encode())
                        }
                        _ => {
                            let e = Error::Encode("request without room for a header".into());
                            self.fail_request(request_id, e);
                            continue;
                        }
                    }
                    if !self.send_request(header, frames) {
                        return true;
                    }
                }
                Command::Subscribe {
                    id,
                    filters,
                    tx,
                    done,
                } => self.subscribe(id, filters, tx, done),
                Command::QueueJoin {
                    id,
                    group,
                    filter,
                    tx,
                    done,
                } => {
                    let request_id = self.next_request_id;
                    self.next_request_id += 1;
                    let header = Header::new(Op::QueueJoin, request_id);
                    let waiting = Waiting::new(done, self.request_timeout);
                    self.waiting.insert(request_id, waiting);
                    self.members.insert(
                        request_id,
                        GroupMember {
                            sub_id: id,
                            tx,
                            overflow: std::collections::VecDeque::new(),
                        },
                    );
                    let frames = vec![
                        header.encode().to_vec(),
                        group.into_bytes(),
                        filter.as_str().as_bytes().to_vec(),
                    ];
                    if !self.send_request(header, frames) {
                        return true;
                    }
                }
                Command::Unsubscribe { id } => self.unsubscribe(id),
            }
        }
        progressed
    }

    /// Send a request, or park it in `pending` if the DEALER's queue is full. Returns whether
    /// it went out.
    fn send_request(&mut self, header: Header, frames: Vec<Vec<u8>>) -> bool {
        let Some(first) = frames.first() else {
            return true;
        };
        let more = if frames.len() > 1 { zmq::SNDMORE } else { 0 };
        // The first frame goes from a borrowed slice, so a refused send can be retried.
        match self.dealer.send(&first[..], more | zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                self.pending = Some((header, frames));
                return false;
            }
            Err(e) => {
                self.fail_request(header.request_id, Error::Zmq(e));
                return true;
            }
        }
        // After the first frame the rest of the message is always accepted.
        let n = frames.len();
        for (i, f) in frames.into_iter().enumerate().skip(1) {
            let flags = if i + 1 < n { zmq::SNDMORE } else { 0 };
            let msg = if f.len() <= ZMQ_VSM {
                zmq::Message::from(&f[..])
            } else {
                zmq::Message::from(f)
            };
            if let Err(e) = self.dealer.send(msg, flags) {
                tracing::error!("request socket failed mid-message: {e}");
            }
        }
        true
    }

    fn flush_pending(&mut self) -> bool {
        match self.pending.take() {
            Some((header, frames)) => self.send_request(header, frames),
            None => false,
        }
    }

    fn fail_request(&mut self, request_id: u64, err: Error) {
        match self.waiting.remove(&request_id) {
            Some(w) => {
                let _ = w.tx.send(Err(err));
            }
            None => self.record_async_error(err),
        }
    }

    fn record_async_error(&self, err: Error) {
        tracing::warn!("asynchronous request failed: {err}");
        if let Ok(mut slot) = self.async_error.lock() {
            slot.get_or_insert(err);
        }
    }

    fn read_replies(&mut self) -> bool {
        let mut progressed = false;
        for _ in 0..COMMAND_BATCH {
            // The frames themselves are handed on (no copies): a reply's body frames become
            // the caller's `ReplyFrames`.
            let mut head = zmq::Message::new();
            if self.dealer.recv(&mut head, zmq::DONTWAIT).is_err() {
                break;
            }
            let mut body: ReplyFrames = Vec::new();
            let mut more = head.get_more();
            while more {
                let mut part = zmq::Message::new();
                if self.dealer.recv(&mut part, 0).is_err() {
                    break;
                }
                more = part.get_more();
                body.push(part);
            }
            progressed = true;
            let header = match Header::decode(&head) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!("unreadable reply from broker: {e}");
                    continue;
                }
            };
            if header.op == Op::Deliver as u8 {
                self.deliver(header.request_id, &body);
                continue;
            }
            if header.op == Op::Acks as u8 {
                self.acks(&body);
                continue;
            }
            let result = match Op::from_u8(header.op) {
                Some(Op::Ok) => Ok(body),
                Some(Op::Error) => {
                    let parts: Vec<&[u8]> = body.iter().map(|f| &f[..]).collect();
                    Err(Error::from_reply(&parts))
                }
                _ => {
                    tracing::warn!("reply with op 0x{:02x} ignored", header.op);
                    continue;
                }
            };
            match self.waiting.remove(&header.request_id) {
                Some(w) => {
                    let _ = w.tx.send(result);
                }
                None => {
                    if let Err(e) = result {
                        self.record_async_error(e);
                    }
                }
            }
        }
        progressed
    }

    /// Confirms that came batched ([`Op::Acks`]): each caller gets the 16-byte ack body an
    /// `Ok` reply would have carried.
    fn acks(&mut self, body: &[zmq::Message]) {
        let entries = match body {
            [frame] => protocol::ack_entries(frame),
            _ => Err(protocol::ProtocolError::Body(
                "acks without one body frame".into(),
            )),
        };
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("unreadable acks from broker: {e}");
                return;
            }
        };
        for (request_id, offset, seq) in entries {
            if let Some(w) = self.waiting.remove(&request_id) {
                let ack = protocol::encode_publish_ack(offset, seq);
                let _ = w.tx.send(Ok(vec![zmq::Message::from(&ack[..])]));
            }
        }
    }

    fn expire_requests(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.deadline || w.tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiting.remove(&id) {
                let _ = w.tx.send(Err(Error::Timeout {
                    what: "request",
                    timeout: w.timeout,
                }));
            }
        }
    }

    fn subscribe(
        &mut self,
        id: u64,
        filters: Vec<Filter>,
        tx: mpsc::Sender<Vec<WireEvent>>,
        done: oneshot::Sender<Result<()>>,
    ) {
        // A literal filter subscribes to `topic\0`: exact at the ZeroMQ level.
        let prefixes: Vec<Vec<u8>> = filters
            .iter()
            .map(|f| {
                let mut p = f.literal_prefix().as_bytes().to_vec();
                if f.is_literal() {
                    p.push(0);
                }
                p
            })
            .collect();
        for prefix in &prefixes {
            if let Err(e) = self.sub.set_subscribe(prefix) {
                let _ = done.send(Err(e.into()));
                return;
            }
        }
        self.subscribers.push(Subscriber {
            id,
            filters,
            prefixes,
            tx,
            batch: Vec::new(),
        });
        let token = format!("{:016x}{:08x}", id, std::process::id());
        if let Err(e) = self.sub.set_subscribe(&sync_prefix(&token)) {
            let _ = done.send(Err(e.into()));
            return;
        }
        let now = Instant::now();
        self.syncs.push(PendingSync {
            token,
            done,
            next_try: now,
            deadline: now + self.request_timeout,
        });
    }

    /// A queue group event for one of our memberships.
    fn deliver(&mut self, join_id: u64, body: &[zmq::Message]) {
        let Some(member) = self.members.get_mut(&join_id) else {
            return; // left the group; the broker learns it from the LEAVE
        };
        for frame in body {
            match protocol::decode_event(frame) {
                Ok(layout) if std::str::from_utf8(&frame[..layout.topic_len]).is_ok() => {
                    member.overflow.push_back(WireEvent {
                        frame: FrameBuf::Owned(frame.to_vec()),
                        layout,
                    })
                }
                Ok(_) => tracing::warn!("queue event with a non-UTF-8 topic ignored"),
                Err(e) => tracing::warn!("unreadable queue event ignored: {e}"),
            }
        }
        self.flush_members();
    }

    /// Hand delivered queue events to their streams; returns whether any are still waiting.
    fn flush_members(&mut self) -> bool {
        let mut gone = Vec::new();
        let mut waiting = false;
        for (join_id, m) in &mut self.members {
            while let Some(ev) = m.overflow.pop_front() {
                match m.tx.try_send(vec![ev]) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(mut batch)) => {
                        m.overflow.push_front(batch.remove(0));
                        waiting = true;
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        gone.push(*join_id);
                        break;
                    }
                }
            }
        }
        for join_id in gone {
            self.leave(join_id);
        }
        self.member_backlog = waiting;
        waiting
    }

    /// Leave a queue group (fire-and-forget).
    fn leave(&mut self, join_id: u64) {
        if self.members.remove(&join_id).is_some() {
            let header = Header::new(Op::QueueLeave, 0);
            let frames = vec![header.encode().to_vec(), join_id.to_le_bytes().to_vec()];
            self.send_request(header, frames);
        }
    }

    fn unsubscribe(&mut self, id: u64) {
        if let Some(join_id) = self
            .members
            .iter()
            .find(|(_, m)| m.sub_id == id)
            .map(|(j, _)| *j)
        {
            return self.leave(join_id);
        }
        if let Some(i) = self.subscribers.iter().position(|s| s.id == id) {
            let s = self.subscribers.swap_remove(i);
            for prefix in &s.prefixes {
                let _ = self.sub.set_unsubscribe(prefix);
            }
        }
    }

    /// Re-send SYNC barriers that have not come back yet; fail the ones past their deadline.
    fn drive_syncs(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.syncs.len() {
            if now >= self.syncs[i].deadline {
                let s = self.syncs.swap_remove(i);
                let _ = self.sub.set_unsubscribe(&sync_prefix(&s.token));
                let _ = s.done.send(Err(Error::Timeout {
                    what: "subscribe",
                    timeout: self.request_timeout,
                }));
                continue;
            }
            if self.sub_connected && now >= self.syncs[i].next_try && self.pending.is_none() {
                self.syncs[i].next_try = now + Duration::from_millis(20);
                let header = Header::new(Op::Sync, 0);
                let token = self.syncs[i].token.clone().into_bytes();
                self.send_request(header, vec![header.encode().to_vec(), token]);
            }
            i += 1;
        }
    }

    fn sync_arrived(&mut self, token: &str) {
        if let Some(i) = self.syncs.iter().position(|s| s.token == token) {
            let s = self.syncs.swap_remove(i);
            let _ = self.sub.set_unsubscribe(&sync_prefix(token));
            let _ = s.done.send(Ok(()));
        }
    }

    /// Read events and batch them per matching subscription.
    fn read_events(&mut self) -> bool {
        let mut progressed = false;
        for _ in 0..EVENT_BATCH {
            let mut frame = zmq::Message::new();
            if self.sub.recv(&mut frame, zmq::DONTWAIT).is_err() {
                break;
            }
            progressed = true;
            if frame.get_more() {
                // Not our framing (a foreign publisher on the socket?): skip the whole message.
                while matches!(self.sub.recv_msg(0), Ok(m) if m.get_more()) {}
                tracing::warn!("multipart event ignored");
                continue;
            }
            let layout = match protocol::decode_event(&frame) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("unreadable event ignored: {e}");
                    continue;
                }
            };
            let Ok(topic) = std::str::from_utf8(&frame[..layout.topic_len]) else {
                tracing::warn!("event with a non-UTF-8 topic ignored");
                continue;
            };
            if let Some(token) = topic.strip_prefix(SYNC_TOPIC_PREFIX) {
                let token = token.to_string();
                self.sync_arrived(&token);
                continue;
            }
            let mut matching = self
                .subscribers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.filters.iter().any(|f| f.matches(topic)))
                .map(|(i, _)| i);
            let Some(first) = matching.next() else {
                continue;
            };
            let rest: Vec<usize> = matching.collect();
            for &i in &rest {
                self.subscribers[i].batch.push(WireEvent {
                    frame: FrameBuf::Owned(frame.to_vec()),
                    layout,
                });
            }
            self.subscribers[first].batch.push(WireEvent {
                frame: FrameBuf::Zmq(frame),
                layout,
            });
        }
        self.retry_batches();
        progressed
    }

    /// Hand accumulated batches to their subscriptions; a full channel stalls event reading
    /// (so the broker's queue for us fills and it pushes back) until it drains.
    fn retry_batches(&mut self) -> bool {
        let mut stalled = false;
        let mut progressed = false;
        let mut gone = Vec::new();
        for s in &mut self.subscribers {
            if s.batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut s.batch);
            match s.tx.try_send(batch) {
                Ok(()) => progressed = true,
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    s.batch = batch;
                    stalled = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(s.id),
            }
        }
        for id in gone {
            self.unsubscribe(id);
        }
        // While a subscribe waits for its SYNC event, keep reading (full subscriptions keep
        // their events in `batch`): the SYNC event sits behind those events on the socket,
        // and the new subscription's stream is not read before the subscribe returns. This
        // buffers at most until the subscribe's deadline.
        self.stalled = stalled && self.syncs.is_empty();
        progressed
    }
}

/// The SUB prefix for a SYNC barrier's topic (exact: it ends with the NUL).
fn sync_prefix(token: &str) -> Vec<u8> {
    let mut p = format!("{SYNC_TOPIC_PREFIX}{token}").into_bytes();
    p.push(0);
    p
}

/// Run a request whose body is `body` frames (after a header-only first frame) and wait for
/// its reply frames (or the broker's error).
pub(crate) async fn request(
    io: &IoHandle,
    op: Op,
    flags: u8,
    content_type: u8,
    body: Vec<Vec<u8>>,
) -> Result<ReplyFrames> {
    let mut frames = Vec::with_capacity(body.len() + 1);
    frames.push(vec![0u8; HEADER_LEN]);
    frames.extend(body);
    request_frames(io, op, flags, content_type, frames).await
}

/// Run a request given all its frames (`frames[0]` starting with room for the header).
pub(crate) async fn request_frames(
    io: &IoHandle,
    op: Op,
    flags: u8,
    content_type: u8,
    frames: Vec<Vec<u8>>,
) -> Result<ReplyFrames> {
    let reply = queue_request(io, op, flags, content_type, frames, None).await?;
    reply.await.map_err(|_| Error::Closed)?
}

/// Queue a request for the I/O thread; the returned receiver gets its reply (or
/// [`Error::Timeout`] after `timeout`).
pub(crate) async fn queue_request(
    io: &IoHandle,
    op: Op,
    flags: u8,
    content_type: u8,
    frames: Vec<Vec<u8>>,
    timeout: Option<Duration>,
) -> Result<oneshot::Receiver<Result<ReplyFrames>>> {
    let (tx, rx) = oneshot::channel();
    io.send(Command::Request {
        op,
        flags,
        content_type,
        frames,
        reply: Some(tx),
        timeout,
    })
    .await?;
    Ok(rx)
}

/// Decode a CBOR reply body from the first reply frame.
pub(crate) fn cbor_body<T: serde::de::DeserializeOwned>(frames: &ReplyFrames) -> Result<T> {
    let body = frames.first().map(|f| &f[..]).unwrap_or(&[]);
    Ok(protocol::decode_cbor_body(body)?)
}
