//! The replay service: its own thread and its own `ROUTER` socket, so reading the log for
//! one client never stalls live traffic on the dispatcher.
//!
//! It serves the ops 0x10..0x1F (docs/PROTOCOL.md, "Replay and durable subscriptions"):
//!
//! * **REPLAY**: read the log from the beginning, an offset, a time or the last event per
//!   topic, keep the events that match the filters, and send them in batches. Each replay
//!   has a credit (batches the client has room for); the service never sends past it, so a
//!   slow reader costs the broker one batch buffer, not memory in proportion to the log.
//!   Replays are served round robin, one batch each per turn, so many run fairly side by
//!   side.
//! * **Durable subscriptions**: a REPLAY that names a durable subscription starts at its
//!   cursor; DURABLE_ACK moves the cursor. Cursors are kept by a [`CursorStore`]: the
//!   embedded [`CursorFile`] is `<data>/cursors` (a CBOR map, replaced atomically). Acks that
//!   arrive together are stored with one [`persist`](CursorStore::persist) (one fsync) and
//!   answered after it.
//! * **Last value per topic**: the log's last-value cache (topic → offset of its newest
//!   flushed event, a [`LastValueCache`], kept by the log writer at each flush) gives the
//!   events a "last" replay sends. One that ends before a matching topic's newest event (an
//!   earlier `until`) first reads the log up to its end, in turns like any replay, for the
//!   last event of each topic there.
//!
//! The log is read with an [`EventReader`] per replay (a clone of the service's), below the
//! writer's flushed position. The embedded log's [`LogReader`], [`LastOffsets`] and
//! [`CursorFile`] are the defaults.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::BusError;
use agora_storage::cursors::CursorFile;
use agora_storage::log::{LastOffsets, LogReader, Record};
use agora_storage::{CursorStore, EventReader, LastValueCache, StoreError};
use agora_wire::bus::{
    self as protocol, ErrorCode, Header, Meta, Op, ProtocolError, ReplayFrom, ReplayRequest,
    ReplayStart, KIND_EVENT,
};
use agora_wire::socket::Bell;
use agora_wire::topic::Filter;

/// Most events in one batch.
const BATCH_EVENTS: usize = 1024;
/// A batch is sent once its events reach this many bytes.
const BATCH_BYTES: usize = 256 << 10;
/// Most records read (matching or not) for one batch: a replay whose filter matches little
/// still reports progress and yields its turn.
const BATCH_SCAN: u64 = 32_768;
/// Most credit a client may hold per replay (bounds the service's sends in flight).
const MAX_CREDIT: u32 = 1024;
/// Requests read per turn.
const REQUEST_BATCH: usize = 256;
/// How long a replay waits for the log to reach an `until` past its flushed end.
const UNTIL_WAIT: Duration = Duration::from_secs(2);
pub use agora_storage::cursors::CURSORS_FILE;

/// One running replay.
struct Replay<R> {
    identity: Vec<u8>,
    id: u64,
    reader: R,
    filters: Vec<Filter>,
    /// Next offset to read.
    next: u64,
    /// Stop before this offset.
    end: u64,
    /// For a "last" replay: the offsets still to send, ascending.
    picks: Option<VecDeque<u64>>,
    /// For a "last" replay that ends before a matching topic's newest event (an earlier
    /// `until`): the newest offset of each matching topic read so far while the replay reads
    /// `next..end`. Once it gets to `end` these become the picks.
    lasts_before_end: Option<HashMap<String, u64>>,
    credit: u32,
    sent: u64,
    /// A batch the socket refused (the client's queue is full), to resend first.
    blocked: Option<(u64, Vec<u8>)>,
    /// `end` lies past what the log had flushed when the replay started (a live event the
    /// client saw is not flushed yet: the dispatcher sends before it flushes its batch). The
    /// replay waits for the log to get there until this deadline, then ends where it is.
    wait_until: Instant,
}

impl<R: EventReader> Replay<R> {
    /// Read on from `next` (at most `want` records, stopping past `max_bytes`), handing each
    /// record that matches the filters to `each`. Returns whether anything was read. When
    /// nothing was, `end` lies past the flushed log: the replay waits for the log until
    /// `wait_until`, then ends where the log does (an `until` beyond it is clamped).
    fn read_matching(
        &mut self,
        want: usize,
        max_bytes: usize,
        mut each: impl FnMut(&Record<'_>),
    ) -> Result<bool, R::Error> {
        let filters = &self.filters;
        let next = self.reader.read_matching(
            self.next,
            want,
            max_bytes,
            |topic| filters.iter().any(|f| f.matches(topic)),
            |rec| each(&rec),
        )?;
        if next == self.next {
            if Instant::now() >= self.wait_until {
                self.end = self.next;
            }
            return Ok(false);
        }
        self.next = next;
        Ok(true)
    }

    fn done(&self) -> bool {
        if self.lasts_before_end.is_some() {
            return false;
        }
        match &self.picks {
            Some(p) => p.is_empty(),
            None => self.next >= self.end,
        }
    }
}

/// Where a reply goes: the client's identity and the request id.
struct Peer {
    identity: Vec<u8>,
    request_id: u64,
}

/// The replay thread's state: it reads the log with `R`, finds the last event per topic in
/// `L` and keeps the durable cursors in `C`.
pub(crate) struct ReplayService<
    R: EventReader = LogReader,
    L: LastValueCache = LastOffsets,
    C: CursorStore = CursorFile,
> {
    router: zmq::Socket,
    doorbell: Bell,
    reader: R,
    /// Topic → offset of its newest flushed event.
    last_offsets: L,
    /// One past the last event the dispatcher handed to the log: a replay's default end (the
    /// flushed end may lag it; a replay waits for the flush).
    committed_end: Arc<AtomicU64>,
    cursors: C,
    replays: VecDeque<Replay<R>>,
    /// Acks applied to `cursors` but not yet on disk, to answer once they are.
    acks: Vec<Peer>,
    cursors_dirty: bool,
    batch: Vec<u8>,
    /// Batches and ENDs sent so far (progress between turns).
    sends: u64,
    /// This round a replay read the log without sending (a "last" replay finding the newest
    /// events before its end): progress too.
    read_without_sending: bool,
}

impl<R: EventReader, L: LastValueCache> ReplayService<R, L, CursorFile> {
    /// [`bind_with`](ReplayService::bind_with) the cursors in `<data_dir>/cursors`.
    pub(crate) fn bind(
        ctx: &zmq::Context,
        endpoint: &str,
        data_dir: &Path,
        reader: R,
        last_offsets: L,
        committed_end: Arc<AtomicU64>,
        doorbell: Bell,
    ) -> Result<(Self, String), BusError> {
        let cursors = CursorFile::load(data_dir)?;
        Self::bind_with(
            ctx,
            endpoint,
            cursors,
            reader,
            last_offsets,
            committed_end,
            doorbell,
        )
    }
}

impl<R: EventReader, L: LastValueCache, C: CursorStore> ReplayService<R, L, C> {
    /// Bind the ROUTER; returns the service and its real endpoint.
    pub(crate) fn bind_with(
        ctx: &zmq::Context,
        endpoint: &str,
        cursors: C,
        reader: R,
        last_offsets: L,
        committed_end: Arc<AtomicU64>,
        doorbell: Bell,
    ) -> Result<(Self, String), BusError> {
        let router = ctx.socket(zmq::ROUTER)?;
        router.set_linger(0)?;
        router.set_rcvhwm(10_000)?;
        // Credit bounds what is queued per client; the HWM only needs to exceed it.
        router.set_sndhwm(4 * MAX_CREDIT as i32)?;
        // Unroutable peers are reported (EHOSTUNREACH) instead of silently dropped, so a
        // vanished client's replay is ended.
        router.set_router_mandatory(true)?;
        router.bind(endpoint).map_err(|source| BusError::Bind {
            what: "replay",
            endpoint: endpoint.to_string(),
            source,
        })?;
        let real = match router.get_last_endpoint()? {
            Ok(s) => s,
            Err(_) => endpoint.to_string(),
        };
        Ok((
            ReplayService {
                router,
                doorbell,
                reader,
                last_offsets,
                committed_end,
                cursors,
                replays: VecDeque::new(),
                acks: Vec::new(),
                cursors_dirty: false,
                batch: Vec::with_capacity(BATCH_BYTES + 64 * 1024),
                sends: 0,
                read_without_sending: false,
            },
            real,
        ))
    }

    /// Serve until the doorbell rings.
    pub(crate) fn run(mut self) -> Result<(), BusError> {
        let mut progressed = false;
        loop {
            // Busy replays: poll without waiting; replays only waiting for the log (or for
            // credit, or for a full client queue): look again in a millisecond.
            let can_send = self.replays.iter().any(|r| r.credit > 0 || r.done());
            let timeout = if !can_send {
                100 // a request (CREDIT, a new replay) wakes the poll
            } else if progressed {
                0
            } else {
                1
            };
            let (readable, stop) = {
                let mut items = [
                    self.router.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.doorbell.fd(), zmq::POLLIN),
                ];
                match zmq::poll(&mut items, timeout) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                (items[0].is_readable(), items[1].is_readable())
            };
            if stop {
                self.doorbell.wake();
                break;
            }
            if readable {
                self.drain_requests();
            }
            if self.cursors_dirty {
                self.flush_cursors();
            }
            progressed = false;
            if !self.replays.is_empty() {
                progressed = self.serve_round();
            }
        }
        if self.cursors_dirty {
            self.flush_cursors();
        }
        Ok(())
    }

    fn drain_requests(&mut self) {
        for _ in 0..REQUEST_BATCH {
            let frames = match self.router.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(_) => return,
            };
            self.handle(frames);
        }
    }

    /// Serve one request; every failure becomes an error reply.
    fn handle(&mut self, frames: Vec<Vec<u8>>) {
        let mut it = frames.into_iter();
        let Some(identity) = it.next() else { return };
        let rest: Vec<Vec<u8>> = it.collect();
        let Some(head) = rest.first() else { return };
        let peer = Peer {
            identity,
            request_id: Header::salvage_request_id(head),
        };
        let header = match Header::decode(head) {
            Ok(h) => h,
            Err(e) => return self.error(&peer, e.code(), &e.to_string()),
        };
        let body = &rest[1..];
        let op = match header.op() {
            Ok(op) => op,
            Err(e) => return self.error(&peer, e.code(), &e.to_string()),
        };
        let expected = match op {
            Op::Replay | Op::Credit | Op::DurableDelete => 1,
            Op::ReplayClose => 0,
            Op::DurableAck => 2,
            other => {
                let msg = format!(
                    "op {other:?} is not served on the replay endpoint (use the request endpoint)"
                );
                return self.error(&peer, ErrorCode::BadRequest, &msg);
            }
        };
        if body.len() != expected {
            let e = ProtocolError::FrameCount {
                op,
                expected,
                got: body.len(),
            };
            return self.error(&peer, e.code(), &e.to_string());
        }
        match op {
            Op::Replay => self.start_replay(peer, &body[0]),
            Op::Credit => {
                let Ok(n) = <[u8; 4]>::try_from(&body[0][..]) else {
                    let msg = "credit must be a u32 (4 bytes LE)";
                    return self.error(&peer, ErrorCode::Malformed, msg);
                };
                let n = u32::from_le_bytes(n);
                if let Some(r) = self.find(&peer) {
                    r.credit = r.credit.saturating_add(n).min(MAX_CREDIT);
                }
            }
            Op::ReplayClose => {
                self.replays
                    .retain(|r| !(r.id == peer.request_id && r.identity == peer.identity));
            }
            Op::DurableAck | Op::DurableDelete => {
                let Ok(name) = std::str::from_utf8(&body[0]) else {
                    return self.error(&peer, ErrorCode::Malformed, "durable name is not UTF-8");
                };
                let Some(cursor) = self.cursors.get(name) else {
                    let msg = format!("no durable subscription named `{name}`");
                    return self.error(&peer, ErrorCode::UnknownDurable, &msg);
                };
                if op == Op::DurableDelete {
                    self.cursors.delete(name);
                    self.cursors_dirty = true;
                    self.acks.push(peer);
                    return;
                }
                let offset = match protocol::decode_u64(&body[1]) {
                    Ok(o) => o,
                    Err(e) => return self.error(&peer, ErrorCode::Malformed, &e.to_string()),
                };
                let next = offset.saturating_add(1);
                if next > cursor {
                    self.cursors.set(name, next);
                    self.cursors_dirty = true;
                }
                // Answer after the write that covers it (or now, if nothing changed and
                // nothing is pending).
                if self.cursors_dirty {
                    self.acks.push(peer);
                } else {
                    self.ok(&peer, &[]);
                }
            }
            _ => {}
        }
    }

    fn find(&mut self, peer: &Peer) -> Option<&mut Replay<R>> {
        self.replays
            .iter_mut()
            .find(|r| r.id == peer.request_id && r.identity == peer.identity)
    }

    /// Validate a REPLAY, resolve its start, answer `Ok {start, end}` and queue it.
    fn start_replay(&mut self, peer: Peer, body: &[u8]) {
        let req: ReplayRequest = match protocol::decode_cbor_body(body) {
            Ok(r) => r,
            Err(e) => return self.error(&peer, ErrorCode::Malformed, &e.to_string()),
        };
        if req.filters.is_empty() {
            return self.error(&peer, ErrorCode::BadRequest, "a replay needs a filter");
        }
        let mut filters = Vec::with_capacity(req.filters.len());
        for f in &req.filters {
            match Filter::new(f) {
                Ok(f) => filters.push(f),
                Err(e) => {
                    let msg = format!("bad filter `{f}`: {e}");
                    return self.error(&peer, ErrorCode::BadRequest, &msg);
                }
            }
        }
        if self.find(&peer).is_some() {
            let msg = format!("replay {} is already running", peer.request_id);
            return self.error(&peer, ErrorCode::BadRequest, &msg);
        }
        // Everything the broker stamped before this request, flushed or about to be.
        let log_end = self
            .reader
            .end_offset()
            .max(self.committed_end.load(Ordering::Acquire));
        let first = self.reader.first_offset();
        let mut end = req.until.unwrap_or(log_end);
        let mut from = req.from;
        let mut expired = 0;
        if let Some(name) = &req.durable {
            if !protocol::valid_durable_name(name) {
                let msg = format!(
                    "durable name `{name}` must be 1..={} bytes of [A-Za-z0-9_.-]",
                    protocol::MAX_DURABLE_NAME
                );
                return self.error(&peer, ErrorCode::BadRequest, &msg);
            }
            match self.cursors.get(name) {
                // Retention passed the cursor: resume at what is left, saying how much is
                // gone (stuck on TRUNCATED, the subscription could never resume).
                Some(c) if c < first => {
                    expired = first - c;
                    from = ReplayFrom::Offset(first);
                }
                Some(c) => from = ReplayFrom::Offset(c),
                None if req.from == ReplayFrom::Last => {
                    let msg = format!(
                        "durable subscription `{name}` is new and needs one offset to start at; \
                         `last` names one per topic: use `beginning`, an offset or a time"
                    );
                    return self.error(&peer, ErrorCode::BadRequest, &msg);
                }
                None => {
                    let start = match self.resolve_start(req.from, first, log_end) {
                        Ok(s) => s,
                        Err((code, msg)) => return self.error(&peer, code, &msg),
                    };
                    self.cursors.set(name, start);
                    if let Err(e) = self.cursors.persist() {
                        self.cursors.delete(name);
                        let msg = format!("cannot store the durable cursor: {e}");
                        return self.error(&peer, ErrorCode::Internal, &msg);
                    }
                    from = ReplayFrom::Offset(start);
                }
            }
        }
        let mut picks = None;
        let mut lasts_before_end = None;
        let start = if from == ReplayFrom::Last {
            let (lasts, covered) = self
                .last_offsets
                .matching(first, |t| filters.iter().any(|f| f.matches(t)));
            // The cache is exact below `covered` (flushed, so readable): end there unless
            // asked to end elsewhere.
            if req.until.is_none() {
                end = covered;
            }
            if lasts.iter().any(|&(_, o)| o >= end) {
                // A topic's newest event is at or past an earlier `until`: the cache does
                // not know its last one before that. Read the log up to `end` to find the
                // last of every matching topic (`serve_one`), then send those.
                lasts_before_end = Some(HashMap::new());
                first.min(end)
            } else if end > covered {
                // A later `until` (the live event a client saw first, not flushed yet): the
                // cache has the last events before `covered`; read on from there to `end`,
                // waiting for the log as any replay does, for newer ones.
                lasts_before_end = Some(lasts.into_iter().collect());
                covered
            } else {
                let mut offsets: Vec<u64> = lasts.into_iter().map(|(_, o)| o).collect();
                offsets.sort_unstable();
                let start = offsets.first().copied().unwrap_or(end);
                picks = Some(offsets.into());
                start
            }
        } else {
            match self.resolve_start(from, first, log_end) {
                Ok(s) => s.min(end),
                Err((code, msg)) => return self.error(&peer, code, &msg),
            }
        };
        let reply = protocol::encode_cbor_body(&ReplayStart {
            start,
            end,
            expired,
        });
        self.ok(&peer, &[&reply]);
        self.replays.push_back(Replay {
            identity: peer.identity,
            id: peer.request_id,
            reader: self.reader.clone(),
            filters,
            next: start,
            end,
            picks,
            lasts_before_end,
            credit: req.credit.clamp(1, MAX_CREDIT),
            sent: 0,
            blocked: None,
            wait_until: Instant::now() + UNTIL_WAIT,
        });
    }

    /// The first offset for `from` (not `Last`), or the error to reply with.
    fn resolve_start(
        &mut self,
        from: ReplayFrom,
        first: u64,
        log_end: u64,
    ) -> Result<u64, (ErrorCode, String)> {
        match from {
            ReplayFrom::Beginning => Ok(first),
            ReplayFrom::Offset(o) if o < first => Err((
                ErrorCode::Truncated,
                format!(
                    "offset {o} is no longer in the log: it holds offsets {first}..{log_end} \
                     (older events were removed by retention)"
                ),
            )),
            // An offset past the end (say, an ack for an event the log lost in a power cut)
            // starts at the end.
            ReplayFrom::Offset(o) => Ok(o.min(log_end).max(first)),
            ReplayFrom::TimeNs(t) => self
                .reader
                .offset_for_time(t)
                .map(|o| o.max(first))
                .map_err(|e| (ErrorCode::Internal, format!("cannot read the log: {e}"))),
            ReplayFrom::Last => Ok(first),
        }
    }

    /// One turn: every replay with credit sends at most one batch; finished ones send END.
    /// Returns whether anything was sent.
    fn serve_round(&mut self) -> bool {
        let sent_before = self.sends;
        self.read_without_sending = false;
        let n = self.replays.len();
        for _ in 0..n {
            let Some(mut r) = self.replays.pop_front() else {
                break;
            };
            match self.serve_one(&mut r) {
                Ok(true) => self.replays.push_back(r),
                Ok(false) => {}
                Err(e) => {
                    let (code, msg) = if e.is_truncated() {
                        (ErrorCode::Truncated, e.to_string())
                    } else {
                        (ErrorCode::Internal, format!("cannot read the log: {e}"))
                    };
                    let peer = Peer {
                        identity: r.identity,
                        request_id: r.id,
                    };
                    self.error(&peer, code, &msg);
                }
            }
        }
        self.sends != sent_before || self.read_without_sending
    }

    /// Send `r`'s next batch if it has credit. `Ok(false)`: the replay is over.
    fn serve_one(&mut self, r: &mut Replay<R>) -> Result<bool, R::Error> {
        if let Some((progress, body)) = r.blocked.take() {
            match self.send_batch(r, progress, body) {
                SendOutcome::Sent => {}
                SendOutcome::Blocked(b) => {
                    r.blocked = Some(b);
                    return Ok(true);
                }
                SendOutcome::Gone => return Ok(false),
            }
        }
        if r.lasts_before_end.is_some() && !self.find_lasts_before_end(r)? {
            return Ok(true);
        }
        if r.done() {
            let end = protocol::encode_replay_end(r.end, r.sent);
            let header = Header::new(Op::ReplayEnd, r.id).encode();
            return match self.send(&r.identity, &header, &[&end]) {
                Ok(()) => {
                    self.sends += 1;
                    Ok(false)
                }
                Err(zmq::Error::EAGAIN) => Ok(true),
                Err(_) => Ok(false),
            };
        }
        if r.credit == 0 {
            return Ok(true);
        }
        let mut body = std::mem::take(&mut self.batch);
        body.clear();
        let mut count = 0usize;
        let before = r.next;
        match &mut r.picks {
            Some(picks) => {
                while count < BATCH_EVENTS && body.len() < BATCH_BYTES {
                    let Some(off) = picks.pop_front() else { break };
                    let res = r.reader.read_matching(
                        off,
                        1,
                        usize::MAX,
                        |_| true,
                        |rec| {
                            push(&mut body, &rec);
                            count += 1;
                        },
                    );
                    match res {
                        Ok(_) => {}
                        Err(e) if e.is_truncated() => {}
                        Err(e) => return Err(e),
                    }
                    r.next = off + 1;
                }
            }
            None => {
                let scan_end = r.end.min(r.next.saturating_add(BATCH_SCAN));
                while r.next < scan_end && count < BATCH_EVENTS && body.len() < BATCH_BYTES {
                    let want = (scan_end - r.next).min((BATCH_EVENTS - count) as u64) as usize;
                    // The batch ends with the event that takes it to BATCH_BYTES.
                    let room = BATCH_BYTES.saturating_sub(body.len()).max(1);
                    let read = r.read_matching(want, room, |rec| {
                        push(&mut body, rec);
                        count += 1;
                    })?;
                    if !read {
                        break;
                    }
                }
            }
        }
        r.sent += count as u64;
        let progress = r.next;
        if count == 0 && progress == before && !r.done() {
            // Waiting for the log to grow: nothing to send, keep the buffer.
            self.batch = body;
            return Ok(true);
        }
        let outcome = self.send_batch(r, progress, body);
        match outcome {
            SendOutcome::Sent => Ok(true),
            SendOutcome::Blocked(b) => {
                r.blocked = Some(b);
                Ok(true)
            }
            SendOutcome::Gone => Ok(false),
        }
    }

    /// One turn of a "last" replay's read of `next..end` for the newest event of each
    /// matching topic (at most [`BATCH_SCAN`] records). Returns whether the read is over; the
    /// replay then sends what it found, in offset order.
    fn find_lasts_before_end(&mut self, r: &mut Replay<R>) -> Result<bool, R::Error> {
        let Some(mut lasts) = r.lasts_before_end.take() else {
            return Ok(true);
        };
        let scan_end = r.end.min(r.next.saturating_add(BATCH_SCAN));
        if r.next < scan_end {
            let want = (scan_end - r.next) as usize;
            let read = r.read_matching(want, usize::MAX, |rec| match lasts.get_mut(rec.topic) {
                Some(offset) => *offset = rec.offset,
                None => {
                    lasts.insert(rec.topic.to_owned(), rec.offset);
                }
            })?;
            if read {
                // Work done this round, though nothing is sent.
                self.read_without_sending = true;
            }
            if r.next < r.end {
                r.lasts_before_end = Some(lasts);
                return Ok(false);
            }
        }
        let mut offsets: Vec<u64> = lasts.values().copied().collect();
        offsets.sort_unstable();
        r.next = offsets.first().copied().unwrap_or(r.end);
        r.picks = Some(offsets.into());
        Ok(true)
    }

    fn send_batch(&mut self, r: &mut Replay<R>, progress: u64, body: Vec<u8>) -> SendOutcome {
        let header = Header::new(Op::ReplayBatch, r.id).encode();
        let p = progress.to_le_bytes();
        match self.send(&r.identity, &header, &[&p, &body]) {
            Ok(()) => {
                r.credit -= 1;
                self.sends += 1;
                // Keep the buffer for the next batch.
                if body.capacity() >= self.batch.capacity() {
                    self.batch = body;
                }
                SendOutcome::Sent
            }
            Err(zmq::Error::EAGAIN) => SendOutcome::Blocked((progress, body)),
            Err(e) => {
                tracing::debug!(replay = r.id, "replay client gone: {e}");
                SendOutcome::Gone
            }
        }
    }

    /// Write the cursors and answer the acks waiting for that.
    fn flush_cursors(&mut self) {
        self.cursors_dirty = false;
        let acks = std::mem::take(&mut self.acks);
        match self.cursors.persist() {
            Ok(()) => {
                for p in &acks {
                    self.ok(p, &[]);
                }
            }
            Err(e) => {
                tracing::error!("cannot write durable cursors: {e}");
                let msg = format!("cannot store the durable cursor: {e}");
                for p in &acks {
                    self.error(p, ErrorCode::Internal, &msg);
                }
            }
        }
    }

    fn ok(&self, peer: &Peer, body: &[&[u8]]) {
        let header = Header::new(Op::Ok, peer.request_id).encode();
        if let Err(e) = self.send(&peer.identity, &header, body) {
            tracing::debug!("replay reply not sent: {e}");
        }
    }

    fn error(&self, peer: &Peer, code: ErrorCode, message: &str) {
        tracing::debug!(
            ?code,
            request_id = peer.request_id,
            "replay error: {message}"
        );
        let header = Header::new(Op::Error, peer.request_id).encode();
        let code = protocol::encode_error_code(code);
        if let Err(e) = self.send(&peer.identity, &header, &[&code, message.as_bytes()]) {
            tracing::debug!("replay error reply not sent: {e}");
        }
    }

    /// Send `identity ‖ header ‖ body...` without blocking. EAGAIN means the peer's queue is
    /// full and nothing was sent.
    fn send(&self, identity: &[u8], header: &[u8], body: &[&[u8]]) -> Result<(), zmq::Error> {
        let to = agora_wire::socket::ReplyAddress {
            identity,
            delimited: false,
        };
        crate::send_routed(&self.router, to, header, body)
    }
}

enum SendOutcome {
    Sent,
    Blocked((u64, Vec<u8>)),
    Gone,
}

/// Append a log record to a batch body as an event frame.
fn push(body: &mut Vec<u8>, rec: &Record<'_>) {
    let meta = Meta {
        kind: KIND_EVENT,
        offset: rec.offset,
        seq: rec.seq,
        time_ns: rec.time_ns,
        content_type: rec.content_type,
    };
    protocol::push_batch_event(body, rec.topic.as_bytes(), &meta, rec.payload);
}
