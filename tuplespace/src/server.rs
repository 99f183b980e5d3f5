//! [`SpaceServer`]: serves a [`Space`] over ZeroMQ (a `ROUTER` socket; the frames are
//! [`agora_wire::space`]'s, docs/PROTOCOL.md "Tuple space"; the tuples and templates in them
//! are decoded here, with the model).
//!
//! One thread owns the socket and sleeps in poll(2) on the `ROUTER`'s descriptor and a
//! doorbell ([`agora_wire::socket`]). A blocked take or read is a waiter registered in the
//! store (no thread or task per waiter); its sink pushes the delivery into a channel and
//! rings the doorbell, so an
//! `out` made by any thread (another client through this server, or an in-process user of
//! the same [`Space`]) wakes the server thread, which sends the reply.
//!
//! Takes hand tuples out as reservations with a lease ([`ServerConfig::reservation_lease`]):
//! the client confirms on receipt; a reservation never confirmed (client killed, reply lost)
//! puts the tuple back in its original place when the lease runs out. Blocked requests of a
//! client that has sent nothing for [`ServerConfig::client_timeout`] are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agora_wire::socket::{doorbell, poll_in, Bell, PendingReplies, ReplyAddress, Ringer};
use agora_wire::space::{decode_header, Reply, Request, Wait, FLAG_NO_REPLY, VERSION};

use crate::error::{Error, ErrorCode, Result};
use crate::space::Space;
use crate::store::{Delivery, ReservationId, Sink, WaitMode, WaitOutcome, WaiterHandle};
use crate::template::Template;
use crate::value::Tuple;

/// Settings of a [`SpaceServer`].
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to bind the `ROUTER`, e.g. `tcp://127.0.0.1:*` (the real port is read back).
    pub endpoint: String,
    /// How long a taker has to confirm a reservation before the tuple goes back. Default 5 s.
    pub reservation_lease: Duration,
    /// Largest request (sum of its frames) accepted. Default 1 MiB.
    pub max_request_bytes: usize,
    /// Blocked requests of a client silent for this long are dropped. Default 5 s (the SDK
    /// sends `PING` every second while it has blocked requests).
    pub client_timeout: Duration,
    /// The ZeroMQ context to use; `None` creates one.
    pub context: Option<zmq::Context>,
    /// The space to serve; `None` creates an empty one in memory. A persistent space (the
    /// broker's: `agora_storage::space::open_space`) journals every change, and the server
    /// answers an `OUT` only once its journal says it is durable.
    pub space: Option<Space>,
    /// After a loop turn that handled a few requests (at most 4), the server thread keeps
    /// looking for the next one for this long before it goes to sleep: a sequential
    /// client's next request follows within a round trip, and a thread put to sleep and
    /// woken again can cost more than that on a VM. The spin costs CPU while a client is
    /// active, and pipelined clients gain nothing from it (README, "Performance", has the
    /// figures). Default zero (off).
    pub spin: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            endpoint: "tcp://127.0.0.1:*".into(),
            reservation_lease: Duration::from_secs(5),
            max_request_bytes: 1024 * 1024,
            client_timeout: Duration::from_secs(5),
            context: None,
            space: None,
            spin: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("endpoint", &self.endpoint)
            .field("reservation_lease", &self.reservation_lease)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("client_timeout", &self.client_timeout)
            .field("spin", &self.spin)
            .finish_non_exhaustive()
    }
}

/// A running space server. Dropping it (or [`SpaceServer::shutdown`]) stops the thread.
pub struct SpaceServer {
    endpoint: String,
    space: Space,
    stop: Arc<AtomicBool>,
    ringer: Ringer,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SpaceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceServer")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SpaceServer {
    /// Binds the `ROUTER` and starts the server thread.
    pub fn start(config: ServerConfig) -> Result<SpaceServer> {
        if config.max_request_bytes == 0 {
            return Err(Error::Config("max_request_bytes must be > 0".into()));
        }
        let ctx = config.context.clone().unwrap_or_default();
        let space = config.space.clone().unwrap_or_default();
        let router = ctx.socket(zmq::ROUTER)?;
        router.set_linger(0)?;
        router.bind(&config.endpoint)?;
        let endpoint = match router.get_last_endpoint()? {
            Ok(s) => s,
            Err(_) => config.endpoint.clone(),
        };
        // Armed while the thread works as well as while it sleeps: a ring between two looks
        // at the channels is seen by the next poll (or by the spin, through `Bell::rang`).
        let (ringer, bell) = doorbell()?;
        bell.arm();
        let stop = Arc::new(AtomicBool::new(false));
        let ring = ringer.clone();
        space
            .store()
            .set_sync_listener(Some(Arc::new(move || ring.ring())));
        let (dtx, drx) = mpsc::channel();
        let router_fd = router.get_fd()?;
        let mut worker = Worker {
            router,
            bell,
            ringer: ringer.clone(),
            stop: stop.clone(),
            space: space.clone(),
            config,
            deliveries_tx: dtx,
            deliveries: drx,
            pending: PendingReplies::new(),
            by_request: HashMap::new(),
            last_seen: HashMap::new(),
            next_sweep: Instant::now(),
            next_tick: Instant::now(),
            acks: VecDeque::new(),
            outbox: Vec::new(),
            router_fd,
            router_settled: false,
            last_request: Instant::now(),
            last_batch: 0,
        };
        let thread = std::thread::Builder::new()
            .name("agora-space".into())
            .spawn(move || worker.run())?;
        Ok(SpaceServer {
            endpoint,
            space,
            stop,
            ringer,
            thread: Some(thread),
        })
    }

    /// The bound endpoint with the real port, e.g. `tcp://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The served space (shared: in-process `out`s are seen by remote takers).
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Stops the server thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ringer.knock();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("space server thread panicked");
            }
        }
    }
}

impl Drop for SpaceServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Where a reply goes: the client's routing id, and whether it used a `REQ` socket (an empty
/// delimiter frame before the header, echoed back).
#[derive(Clone, Debug)]
/// A blocked request waiting at the server.
struct Pending {
    route: ReplyAddress,
    request_id: u64,
    handle: WaiterHandle,
    /// Cancelled (by CANCEL, timeout or a dead client) after the store had already served it:
    /// the delivery is on its way and must be released, not sent.
    cancelled: bool,
}

struct Worker {
    router: zmq::Socket,
    bell: Bell,
    /// For the store's sinks and sync listener.
    ringer: Ringer,
    stop: Arc<AtomicBool>,
    space: Space,
    config: ServerConfig,
    deliveries_tx: mpsc::Sender<Delivery>,
    deliveries: mpsc::Receiver<Delivery>,
    /// Waiter id -> blocked request, with its timeout if it has one.
    pending: PendingReplies<Pending>,
    /// (client, request id) -> waiter id, for CANCEL.
    by_request: HashMap<(Vec<u8>, u64), u64>,
    /// Last time each client with blocked requests was heard from.
    last_seen: HashMap<Vec<u8>, Instant>,
    next_sweep: Instant,
    /// Lease deadlines are handled no earlier than this (see [`TICK_EVERY`]).
    next_tick: Instant,
    /// `OUT` replies waiting for the journal to make them durable: (journal position, where,
    /// request id), in position order.
    acks: VecDeque<(u64, ReplyAddress, u64)>,
    /// Replies of this loop turn, sent together at its end: (request id, frames).
    outbox: Vec<(u64, Vec<Vec<u8>>)>,
    /// The `ROUTER`'s ZMQ_FD (readable when its state may have changed).
    router_fd: std::os::fd::RawFd,
    /// The `ROUTER`'s last operation was a `recv` that found nothing (see [`Worker::wait`]).
    router_settled: bool,
    /// When the last request was handled (the spin window starts there).
    last_request: Instant,
    /// Requests handled by the last loop turn that read any.
    last_batch: usize,
}

/// Most messages handled per poll wake-up before deliveries and timers get a turn.
const BATCH: usize = 512;
/// The server spins (see [`ServerConfig::spin`]) only after loop turns that handled at most
/// this many requests.
const SPIN_MAX_BATCH: usize = 4;
/// Replies queued before they are sent even in the middle of a batch (bounds the delay a
/// long batch adds to its first replies).
const OUTBOX_FLUSH: usize = 64;
/// Lease expiry (tuples and reservations) is checked at most this often.
const TICK_EVERY: Duration = Duration::from_millis(1);
/// How often dead clients are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

impl Worker {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let mut wake = self.next_sweep;
            if let Some(d) = self.pending.next_deadline() {
                wake = wake.min(d);
            }
            if let Some(d) = self.space.store().next_deadline() {
                // Not before the next allowed tick (a stale deadline must not make it spin).
                wake = wake.min(d.max(self.next_tick));
            }
            let mut timeout_ms = wake.saturating_duration_since(now).as_millis().min(1000) as i64;
            if !self.acks.is_empty() {
                // The sync listener rings the doorbell; this is only a safety net.
                timeout_ms = timeout_ms.min(20);
            }
            let (router_ready, bell_ready) = match self.wait(timeout_ms) {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!("space server: poll failed: {e}");
                    break;
                }
            };
            if bell_ready {
                self.bell.wake();
                self.bell.arm();
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if router_ready {
                let mut batch = 0;
                for _ in 0..BATCH {
                    match self.router.recv_multipart(zmq::DONTWAIT) {
                        Ok(frames) => {
                            self.last_request = Instant::now();
                            batch += 1;
                            self.handle(frames);
                            if self.outbox.len() >= OUTBOX_FLUSH {
                                self.flush_outbox();
                            }
                        }
                        Err(zmq::Error::EAGAIN) => {
                            // Nothing more: commands processed, the fd is armed again.
                            self.router_settled = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("space server: recv failed: {e}");
                            break;
                        }
                    }
                    self.flush_deliveries();
                }
                if batch > 0 {
                    self.last_batch = batch;
                }
            }
            self.flush_deliveries();
            self.flush_acks();
            self.timers(Instant::now());
            self.flush_outbox();
        }
        self.close();
    }

    /// Sleeps until the `ROUTER` may have a message or the doorbell rang, at most
    /// `timeout_ms`; returns (router ready, doorbell rung).
    ///
    /// A plain poll(2) on the `ROUTER`'s ZMQ_FD and the doorbell: `zmq::poll` would add a
    /// first non-blocking pass and ZMQ_EVENTS queries before and after (several syscalls
    /// per wake-up). The ZMQ_FD only signals a change since the socket was last used, so it
    /// is slept on only after a `recv` found nothing; after sends, ZMQ_EVENTS is asked.
    fn wait(&mut self, timeout_ms: i64) -> std::io::Result<(bool, bool)> {
        let rung = self.bell.rang();
        if !self.router_settled {
            match self.router.get_events() {
                Ok(ev) if ev.contains(zmq::POLLIN) => return Ok((true, rung)),
                Ok(_) => self.router_settled = true,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        if rung {
            return Ok((false, true));
        }
        // Busy for a moment after the last request (see [`ServerConfig::spin`]): the next
        // one often comes right behind it. Only after small batches: a client that keeps
        // many requests in flight sends them in bursts, and spinning between bursts takes a
        // core its own threads need.
        let spin = if self.last_batch <= SPIN_MAX_BATCH {
            self.config.spin
        } else {
            Duration::ZERO
        };
        let spin_until = self.last_request + spin;
        while Instant::now() < spin_until {
            if self.bell.rang() {
                return Ok((false, true));
            }
            match self.router.get_events() {
                Ok(ev) if ev.contains(zmq::POLLIN) => return Ok((true, false)),
                Ok(_) => {}
                Err(e) => return Err(std::io::Error::other(e)),
            }
            std::hint::spin_loop();
        }
        let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        match poll_in([self.router_fd, self.bell.fd()], timeout) {
            Ok([router, bell]) => Ok((router, bell)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok((false, false)),
            Err(e) => Err(e),
        }
    }

    /// Answers the `OUT`s the journal has made durable.
    fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let durable = match self.space.store().journal_positions() {
            Some((_, d)) => d,
            None => u64::MAX,
        };
        while self.acks.front().is_some_and(|(lsn, _, _)| *lsn <= durable) {
            if let Some((_, route, id)) = self.acks.pop_front() {
                self.send(&route, Reply::Done, id);
            }
        }
    }

    /// Cancels every blocked request so no waiter of a stopped server holds tuples.
    fn close(&mut self) {
        let store = self.space.store().clone();
        store.set_sync_listener(None);
        if let Err(e) = store.sync() {
            tracing::error!("space server: final sync failed: {e}");
        }
        self.flush_acks();
        for (_, p) in self.pending.iter() {
            store.cancel(&p.handle);
        }
        for d in self.deliveries.try_iter() {
            if let Some(r) = d.reservation {
                let _ = store.release(r);
            }
        }
        self.pending.drain().for_each(drop);
        self.flush_outbox();
    }

    /// Queues a reply; [`Worker::flush_outbox`] sends it at the end of the loop turn.
    fn send(&mut self, route: &ReplyAddress, reply: Reply, request_id: u64) {
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(5);
        frames.push(route.identity.clone());
        if route.delimited {
            frames.push(Vec::new());
        }
        frames.extend(reply.into_frames(request_id));
        self.outbox.push((request_id, frames));
    }

    /// Sends the queued replies, in order. Sending them together after a batch of requests
    /// (rather than one by one between them) lets libzmq's I/O thread wake once for the
    /// lot instead of racing the loop message by message.
    fn flush_outbox(&mut self) {
        if !self.outbox.is_empty() {
            self.router_settled = false;
        }
        for (request_id, frames) in self.outbox.drain(..) {
            if let Err(e) = self.router.send_multipart(frames, zmq::DONTWAIT) {
                tracing::debug!("space server: reply to request {request_id} not sent: {e}");
            }
        }
    }

    fn error(&mut self, route: &ReplyAddress, request_id: u64, code: ErrorCode, message: String) {
        tracing::debug!("space server: error reply {code:?}: {message}");
        self.send(route, Reply::Error { code, message }, request_id);
    }

    fn sink(&self) -> Sink {
        let tx = self.deliveries_tx.clone();
        let bell = self.ringer.clone();
        Box::new(move |d| {
            tx.send(d).map_err(|e| e.0)?;
            bell.ring();
            Ok(())
        })
    }

    fn handle(&mut self, frames: Vec<Vec<u8>>) {
        let mut it = frames.into_iter();
        let Some(identity) = it.next() else {
            return;
        };
        let rest: Vec<Vec<u8>> = it.collect();
        // As `ReplyAddress::split` reads it, without copying the identity.
        let delimited = rest.first().is_some_and(|f| f.is_empty());
        let route = ReplyAddress {
            identity,
            delimited,
        };
        let rest = if delimited { &rest[1..] } else { &rest[..] };
        let Some((head, body)) = rest.split_first() else {
            self.error(&route, 0, ErrorCode::Malformed, "no header frame".into());
            return;
        };
        let (h, version) = match decode_header(head) {
            Ok(h) => h,
            Err(e) => {
                self.error(&route, 0, e.code, e.message);
                return;
            }
        };
        let now = Instant::now();
        if let Some(seen) = self.last_seen.get_mut(&route.identity) {
            *seen = now;
        }
        if version != VERSION {
            let msg =
                format!("unsupported protocol version {version} (this server speaks {VERSION})");
            self.error(&route, h.request_id, ErrorCode::UnsupportedVersion, msg);
            return;
        }
        let size: usize = head.len() + body.iter().map(Vec::len).sum::<usize>();
        if size > self.config.max_request_bytes {
            let msg = format!(
                "request of {size} bytes exceeds the limit of {} bytes",
                self.config.max_request_bytes
            );
            self.error(&route, h.request_id, ErrorCode::TooLarge, msg);
            return;
        }
        // The request borrows the received frames; its tuple or template is decoded from them
        // in place by `serve`.
        let body: Vec<&[u8]> = body.iter().map(Vec::as_slice).collect();
        let served = Request::decode(h.op, &body)
            .map_err(Error::from)
            .and_then(|req| self.serve(&route, h.request_id, h.flags, req));
        match served {
            Ok(Some(reply)) => self.send(&route, reply, h.request_id),
            Ok(None) => {}
            Err(e) => {
                let (code, message) = error_reply(e);
                self.error(&route, h.request_id, code, message);
            }
        }
    }

    /// Serves one well-formed request: `Some` reply to send now, `None` if there is none yet
    /// (a blocked take/read, an `OUT` waiting for its journal) or at all (`NO_REPLY`).
    fn serve(
        &mut self,
        route: &ReplyAddress,
        request_id: u64,
        flags: u8,
        req: Request<&[u8]>,
    ) -> Result<Option<Reply>> {
        let ack = flags & FLAG_NO_REPLY == 0;
        let store = self.space.store().clone();
        let lease = Some(self.config.reservation_lease);
        Ok(match req {
            Request::Out { tuple, lease } => {
                store.out(decode_tuple(tuple)?, lease)?;
                if !ack {
                    None
                } else {
                    match store.journal_positions() {
                        Some((appended, durable)) if durable < appended => {
                            self.acks.push_back((appended, route.clone(), request_id));
                            None
                        }
                        _ => Some(Reply::Done),
                    }
                }
            }
            Request::Take { template, wait } => {
                let template = decode_template(template)?;
                match wait {
                    Wait::NonBlocking => Some(match store.reserve_now(&template, 1, lease) {
                        Some((r, mut ts)) => match ts.pop() {
                            Some(tuple) => tuple_reply(tuple, Some(r)),
                            None => Reply::Done,
                        },
                        None => Reply::Done,
                    }),
                    _ => self.block(route, request_id, &template, WaitMode::Take { lease }, wait),
                }
            }
            Request::Read { template, wait } => {
                let template = decode_template(template)?;
                match wait {
                    Wait::NonBlocking => Some(match store.read_now(&template) {
                        Some(tuple) => tuple_reply(tuple, None),
                        None => Reply::Done,
                    }),
                    _ => self.block(route, request_id, &template, WaitMode::Read, wait),
                }
            }
            Request::TakeAll { template, max } => {
                let template = decode_template(template)?;
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                Some(match store.reserve_now(&template, max, lease) {
                    Some((r, tuples)) => tuples_reply(Some(r), &tuples),
                    None => tuples_reply(None, &[]),
                })
            }
            Request::ReadAll { template, max } => {
                let template = decode_template(template)?;
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                Some(tuples_reply(None, &store.read_all(&template, max)))
            }
            Request::Count { template } => {
                let template = decode_template(template)?;
                Some(Reply::Count(store.count(&template) as u64))
            }
            Request::Dump { template } => {
                let template = template.map(decode_template).transpose()?;
                Some(tuples_reply(None, &store.dump(template.as_ref())))
            }
            Request::Confirm(r) => {
                store.confirm(ReservationId(r))?;
                ack.then_some(Reply::Done)
            }
            Request::Release(r) => {
                store.release(ReservationId(r))?;
                ack.then_some(Reply::Done)
            }
            Request::Cancel(id) => {
                let found = self.cancel_request(&route.identity, id);
                ack.then_some(Reply::Cancelled(found))
            }
            Request::Ping => ack.then_some(Reply::Done),
        })
    }

    /// Registers a blocked take/read (or answers at once if something matches).
    fn block(
        &mut self,
        route: &ReplyAddress,
        request_id: u64,
        template: &Template,
        mode: WaitMode,
        wait: Wait,
    ) -> Option<Reply> {
        let sink = self.sink();
        match self.space.store().wait(template, mode, sink) {
            WaitOutcome::Ready { tuple, reservation } => Some(tuple_reply(tuple, reservation)),
            WaitOutcome::Waiting(handle) => {
                let id = handle.id().0;
                let now = Instant::now();
                let deadline = match wait {
                    Wait::Timeout(d) => now.checked_add(d),
                    _ => None,
                };
                // A duplicate request id replaces the older mapping; the older waiter still
                // gets its own reply.
                self.by_request
                    .insert((route.identity.clone(), request_id), id);
                self.last_seen.insert(route.identity.clone(), now);
                let pending = Pending {
                    route: route.clone(),
                    request_id,
                    handle,
                    cancelled: false,
                };
                match deadline {
                    Some(at) => self.pending.insert(id, at, pending),
                    None => self.pending.insert_without_deadline(id, pending),
                };
                None
            }
        }
    }

    /// Withdraws a blocked request. `true` if it was pending (it gets no reply).
    fn cancel_request(&mut self, identity: &[u8], request_id: u64) -> bool {
        let Some(wid) = self.by_request.remove(&(identity.to_vec(), request_id)) else {
            return false;
        };
        self.withdraw(wid)
    }

    /// Removes a waiter without replying. If the store had already served it, the delivery
    /// is released when it arrives. `false` if it was not pending.
    fn withdraw(&mut self, wid: u64) -> bool {
        let store = self.space.store().clone();
        let Some(p) = self.pending.get_mut(wid) else {
            return false;
        };
        if p.cancelled {
            return false;
        }
        if store.cancel(&p.handle) {
            if let Some(p) = self.pending.remove(wid) {
                self.by_request.remove(&(p.route.identity, p.request_id));
            }
        } else {
            p.cancelled = true;
        }
        true
    }

    /// Sends the replies for waiters the store has served.
    fn flush_deliveries(&mut self) {
        while let Ok(d) = self.deliveries.try_recv() {
            let p = self.pending.remove(d.waiter.0);
            match p {
                Some(p) if !p.cancelled => {
                    self.by_request
                        .remove(&(p.route.identity.clone(), p.request_id));
                    let reply = tuple_reply(d.tuple, d.reservation);
                    self.send(&p.route, reply, p.request_id);
                }
                other => {
                    if let Some(p) = other {
                        self.by_request.remove(&(p.route.identity, p.request_id));
                    }
                    if let Some(r) = d.reservation {
                        let _ = self.space.store().release(r);
                    }
                }
            }
        }
    }

    /// Wait timeouts, lease expiry and dead clients.
    fn timers(&mut self, now: Instant) {
        let store = self.space.store().clone();
        for (wid, p) in self.pending.expired(now) {
            if !p.cancelled && store.cancel(&p.handle) {
                self.by_request
                    .remove(&(p.route.identity.clone(), p.request_id));
                // Timed out: an empty OK means "no match".
                self.send(&p.route, Reply::Done, p.request_id);
            } else {
                // Served just in time (the delivery is answered normally), or withdrawn
                // after it was served (the delivery is released): it waits for that.
                self.pending.insert_without_deadline(wid, p);
            }
        }
        if now >= self.next_tick && self.space.store().next_deadline().is_some_and(|d| d <= now) {
            // Confirmed reservations leave stale deadlines behind, so under load one passes
            // all the time: tick (a walk over the shards) at most once per TICK_EVERY.
            self.next_tick = now + TICK_EVERY;
            self.space.store().tick(now);
            self.flush_deliveries();
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            let timeout = self.config.client_timeout;
            let dead: Vec<Vec<u8>> = self
                .last_seen
                .iter()
                .filter(|(_, seen)| now.saturating_duration_since(**seen) > timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in dead {
                self.last_seen.remove(&id);
                let wids: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.route.identity == id)
                    .map(|(w, _)| w)
                    .collect();
                if !wids.is_empty() {
                    tracing::info!(
                        "space server: dropping {} blocked request(s) of a silent client",
                        wids.len()
                    );
                }
                for w in wids {
                    self.withdraw(w);
                }
            }
            // Forget clients with nothing pending.
            let live: std::collections::HashSet<&Vec<u8>> = self
                .pending
                .iter()
                .map(|(_, p)| &p.route.identity)
                .collect();
            self.last_seen.retain(|id, _| live.contains(id));
        }
    }
}

/// Decodes a request's tuple frame with the model; a bad one is `BAD_TUPLE`.
fn decode_tuple(frame: &[u8]) -> Result<Tuple> {
    Tuple::from_cbor(frame).map_err(|e| Error::protocol(ErrorCode::BadTuple, e.to_string()))
}

/// Decodes a request's template frame with the model; a bad one is `BAD_TEMPLATE`.
fn decode_template(frame: &[u8]) -> Result<Template> {
    Template::from_cbor(frame).map_err(|e| Error::protocol(ErrorCode::BadTemplate, e.to_string()))
}

/// The reply carrying one taken or read tuple.
fn tuple_reply(tuple: Tuple, reservation: Option<ReservationId>) -> Reply {
    Reply::Tuple {
        tuple: tuple.to_cbor(),
        reservation: reservation.map(|r| r.0),
    }
}

/// The reply of a bulk op (TAKE_ALL, READ_ALL, DUMP).
fn tuples_reply(reservation: Option<ReservationId>, tuples: &[Tuple]) -> Reply {
    Reply::Tuples {
        reservation: reservation.map(|r| r.0),
        tuples: tuples.iter().map(Tuple::to_cbor).collect(),
    }
}

/// The code and message of the error reply for `e`: a protocol error keeps its own, other
/// errors are `INTERNAL`.
fn error_reply(e: Error) -> (ErrorCode, String) {
    match e {
        Error::Protocol { code, message } | Error::Remote { code, message } => (code, message),
        Error::UnknownReservation(r) => (
            ErrorCode::UnknownReservation,
            format!("unknown reservation {r}"),
        ),
        other => (ErrorCode::Internal, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Field, Kind};
    use crate::value::Value;
    use agora_wire::space::{Header, Op};

    fn job(n: i64) -> Tuple {
        Tuple(vec![Value::from("job"), Value::Int(n)])
    }
    fn job_t() -> Template {
        Template(vec![
            Field::Actual(Value::from("job")),
            Field::Formal(Kind::Int),
        ])
    }

    fn server(f: impl FnOnce(&mut ServerConfig)) -> SpaceServer {
        let mut c = ServerConfig::default();
        f(&mut c);
        SpaceServer::start(c).expect("server starts")
    }

    fn dealer(s: &SpaceServer) -> zmq::Socket {
        let ctx = zmq::Context::new();
        let d = ctx.socket(zmq::DEALER).unwrap();
        d.set_linger(0).unwrap();
        d.connect(s.endpoint()).unwrap();
        d
    }

    fn send(sock: &zmq::Socket, req: &Request, id: u64, flags: u8) {
        sock.send_multipart(req.encode(id, flags), 0).unwrap();
    }

    /// Receives one reply within `within`, or `None`; its tuples decoded with the model.
    fn recv_within(sock: &zmq::Socket, op: Op, within: Duration) -> Option<(u64, Reply<Tuple>)> {
        if sock.poll(zmq::POLLIN, within.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let frames = sock.recv_multipart(0).unwrap();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let (id, reply) = Reply::decode(op, &refs).unwrap();
        Some((
            id,
            reply.map(|t| Tuple::from_cbor(&t).expect("a CBOR tuple")),
        ))
    }

    fn recv(sock: &zmq::Socket, op: Op) -> (u64, Reply<Tuple>) {
        recv_within(sock, op, Duration::from_secs(5)).expect("a reply within 5 s")
    }

    fn call(sock: &zmq::Socket, req: &Request, id: u64) -> Reply<Tuple> {
        send(sock, req, id, 0);
        let (rid, r) = recv(sock, req.op());
        assert_eq!(rid, id);
        r
    }

    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        cond()
    }

    fn take(wait: Wait) -> Request {
        Request::Take {
            template: job_t().to_cbor(),
            wait,
        }
    }

    #[test]
    fn out_take_confirm_round_trip() {
        let s = server(|_| {});
        assert!(s.endpoint().starts_with("tcp://127.0.0.1:"));
        assert!(!s.endpoint().ends_with(":*"));
        let c = dealer(&s);
        let out = Request::Out {
            tuple: job(1).to_cbor(),
            lease: None,
        };
        assert_eq!(call(&c, &out, 1), Reply::Done);
        let count = Request::Count {
            template: job_t().to_cbor(),
        };
        assert_eq!(call(&c, &count, 2), Reply::Count(1));
        let Reply::Tuple { tuple, reservation } = call(&c, &take(Wait::NonBlocking), 3) else {
            panic!("expected a tuple")
        };
        assert_eq!(tuple, job(1));
        let r = reservation.expect("takes carry a reservation");
        assert_eq!(s.space().store().reservation_count(), 1);
        send(&c, &Request::Confirm(r), 4, FLAG_NO_REPLY);
        assert_eq!(call(&c, &Request::Ping, 5), Reply::Done);
        assert_eq!(s.space().store().reservation_count(), 0);
        assert!(s.space().is_empty());
        // Confirming again is an error reply.
        let Reply::Error { code, .. } = call(&c, &Request::Confirm(r), 6) else {
            panic!("expected an error")
        };
        assert_eq!(code, ErrorCode::UnknownReservation);
        // Non-blocking take/read on an empty space: an empty OK.
        assert_eq!(call(&c, &take(Wait::NonBlocking), 7), Reply::Done);
        s.shutdown();
    }

    #[test]
    fn a_spinning_server_answers_requests_and_wakes_blocked_takers() {
        // A spin far longer than the test: every wait below happens inside a spin window.
        let s = server(|c| c.spin = Duration::from_secs(30));
        let c = dealer(&s);
        for n in 0..20 {
            let out = Request::Out {
                tuple: job(n).to_cbor(),
                lease: None,
            };
            assert_eq!(call(&c, &out, n as u64), Reply::Done);
        }
        let count = Request::Count {
            template: job_t().to_cbor(),
        };
        assert_eq!(call(&c, &count, 100), Reply::Count(20));
        // Woken through the doorbell (an in-process out), not the socket.
        let t1 = Template(vec![
            Field::Actual(Value::from("job")),
            Field::Actual(Value::Int(99)),
        ]);
        let wait = Request::Take {
            template: t1.to_cbor(),
            wait: Wait::Forever,
        };
        send(&c, &wait, 101, 0);
        assert!(eventually(|| s.space().store().waiter_count() == 1));
        s.space().out(job(99)).unwrap();
        let (id, r) = recv(&c, Op::Take);
        assert_eq!(id, 101);
        assert!(matches!(r, Reply::Tuple { tuple, .. } if tuple == job(99)));
        s.shutdown();
    }

    #[test]
    fn bulk_ops_and_dump() {
        let s = server(|_| {});
        let c = dealer(&s);
        for n in 0..4 {
            let out = Request::Out {
                tuple: job(n).to_cbor(),
                lease: None,
            };
            send(&c, &out, 100 + n as u64, FLAG_NO_REPLY);
        }
        let read_all = Request::ReadAll {
            template: job_t().to_cbor(),
            max: 2,
        };
        assert_eq!(
            call(&c, &read_all, 1),
            Reply::Tuples {
                reservation: None,
                tuples: vec![job(0), job(1)]
            }
        );
        let take_all = Request::TakeAll {
            template: job_t().to_cbor(),
            max: 3,
        };
        let Reply::Tuples {
            reservation: Some(r),
            tuples,
        } = call(&c, &take_all, 2)
        else {
            panic!("expected tuples with a reservation")
        };
        assert_eq!(tuples, vec![job(0), job(1), job(2)]);
        // Released: they come back in their original places, before job(3).
        assert_eq!(call(&c, &Request::Release(r), 3), Reply::Done);
        let dump = Request::Dump { template: None };
        assert_eq!(
            call(&c, &dump, 4),
            Reply::Tuples {
                reservation: None,
                tuples: (0..4).map(job).collect()
            }
        );
    }

    #[test]
    fn blocked_take_satisfied_by_another_client_and_in_process_out() {
        let s = server(|_| {});
        let a = dealer(&s);
        let b = dealer(&s);
        send(&a, &take(Wait::Forever), 10, 0);
        assert!(eventually(|| s.space().store().waiter_count() == 1));
        assert!(recv_within(&a, Op::Take, Duration::from_millis(20)).is_none());
        let out = Request::Out {
            tuple: job(5).to_cbor(),
            lease: None,
        };
        assert_eq!(call(&b, &out, 1), Reply::Done);
        let (id, r) = recv(&a, Op::Take);
        assert_eq!(id, 10);
        let Reply::Tuple { tuple, reservation } = r else {
            panic!("expected a tuple")
        };
        assert_eq!(tuple, job(5));
        send(
            &a,
            &Request::Confirm(reservation.unwrap()),
            11,
            FLAG_NO_REPLY,
        );

        // An in-process out on the shared space wakes a remote taker too.
        send(&a, &take(Wait::Timeout(Duration::from_secs(10))), 12, 0);
        assert!(eventually(|| s.space().store().waiter_count() == 1));
        s.space().out(job(6)).unwrap();
        let (id, r) = recv(&a, Op::Take);
        assert_eq!(id, 12);
        assert!(matches!(r, Reply::Tuple { tuple, .. } if tuple == job(6)));
    }

    #[test]
    fn blocked_take_times_out_with_empty_ok() {
        let s = server(|_| {});
        let c = dealer(&s);
        send(&c, &take(Wait::Timeout(Duration::from_millis(40))), 1, 0);
        assert_eq!(recv(&c, Op::Take), (1, Reply::Done));
        assert_eq!(s.space().store().waiter_count(), 0);
    }

    #[test]
    fn garbage_gets_error_replies_and_server_keeps_serving() {
        let s = server(|c| c.max_request_bytes = 256);
        let c = dealer(&s);
        let expect_err = |frames: Vec<Vec<u8>>, want: ErrorCode| {
            c.send_multipart(frames, 0).unwrap();
            let (_, r) = recv(&c, Op::SpacePing);
            match r {
                Reply::Error { code, message } => {
                    assert_eq!(code, want, "{message}");
                    assert!(!message.is_empty());
                }
                other => panic!("expected {want:?}, got {other:?}"),
            }
        };
        expect_err(vec![b"garbage".to_vec()], ErrorCode::Malformed);
        let mut h = Header::new(Op::SpacePing, 1).encode();
        h[0] = 9;
        expect_err(vec![h.to_vec()], ErrorCode::UnsupportedVersion);
        let h = Header {
            op: 0x3F,
            flags: 0,
            content_type: 0,
            request_id: 2,
        };
        expect_err(vec![h.encode().to_vec()], ErrorCode::UnknownOp);
        let h = Header::new(Op::Take, 3).encode().to_vec();
        expect_err(
            vec![h.clone(), vec![0xff, 0xfe, 0x00]],
            ErrorCode::BadTemplate,
        );
        expect_err(vec![h.clone(), vec![0; 300]], ErrorCode::TooLarge);
        let h = Header::new(Op::Out, 4).encode().to_vec();
        expect_err(vec![h], ErrorCode::Malformed);
        assert_eq!(call(&c, &Request::Ping, 5), Reply::Done);
    }

    #[test]
    fn bad_tuples_and_templates_get_their_codes_and_never_panic() {
        let code = |e: Error| error_reply(e).0;
        let e = decode_tuple(b"\xff\x00garbage").unwrap_err();
        assert_eq!(code(e), ErrorCode::BadTuple);
        let e = decode_template(b"\x01\x02").unwrap_err();
        assert_eq!(code(e), ErrorCode::BadTemplate);
        // Every prefix/bit-flip of a valid tuple decodes or errors, never panics.
        let body = Tuple(vec![Value::from("a"), Value::Array(vec![Value::Int(1)])]).to_cbor();
        for cut in 0..body.len() {
            let _ = decode_tuple(&body[..cut]);
        }
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] ^= 0xff;
            let _ = decode_tuple(&b);
        }
    }

    #[test]
    fn req_socket_delimiter_is_echoed() {
        let s = server(|_| {});
        let ctx = zmq::Context::new();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.connect(s.endpoint()).unwrap();
        assert_eq!(call(&req, &Request::Ping, 77), Reply::Done);
    }

    #[test]
    fn unconfirmed_take_comes_back_after_the_lease() {
        let s = server(|c| c.reservation_lease = Duration::from_millis(100));
        let a = dealer(&s);
        let b = dealer(&s);
        s.space().out(job(1)).unwrap();
        s.space().out(job(2)).unwrap();
        let Reply::Tuple { tuple, .. } = call(&a, &take(Wait::NonBlocking), 1) else {
            panic!("expected a tuple")
        };
        assert_eq!(tuple, job(1));
        // a never confirms. b waits for the oldest job: job(1) comes back first, in place.
        let t1 = Template(vec![
            Field::Actual(Value::from("job")),
            Field::Actual(Value::Int(1)),
        ]);
        let wait = Request::Take {
            template: t1.to_cbor(),
            wait: Wait::Timeout(Duration::from_secs(5)),
        };
        send(&b, &wait, 2, 0);
        let (_, r) = recv(&b, Op::Take);
        assert!(matches!(r, Reply::Tuple { tuple, .. } if tuple == job(1)));
        let Reply::Tuple { tuple, .. } = call(&b, &take(Wait::NonBlocking), 3) else {
            panic!("expected a tuple")
        };
        assert_eq!(tuple, job(2));
    }

    #[test]
    fn cancel_removes_the_waiter() {
        let s = server(|_| {});
        let a = dealer(&s);
        send(&a, &take(Wait::Forever), 5, 0);
        assert!(eventually(|| s.space().store().waiter_count() == 1));
        assert_eq!(call(&a, &Request::Cancel(5), 6), Reply::Cancelled(true));
        assert_eq!(call(&a, &Request::Cancel(5), 7), Reply::Cancelled(false));
        assert_eq!(s.space().store().waiter_count(), 0);
        s.space().out(job(1)).unwrap();
        assert_eq!(
            call(
                &a,
                &Request::Count {
                    template: job_t().to_cbor()
                },
                8
            ),
            Reply::Count(1)
        );
        // No late reply for the cancelled take.
        assert!(recv_within(&a, Op::Take, Duration::from_millis(50)).is_none());
    }

    #[test]
    fn silent_client_waiters_are_dropped() {
        let s = server(|c| c.client_timeout = Duration::from_millis(100));
        let a = dealer(&s);
        send(&a, &take(Wait::Forever), 1, 0);
        assert!(eventually(|| s.space().store().waiter_count() == 1));
        assert!(eventually(|| s.space().store().waiter_count() == 0));
        s.space().out(job(1)).unwrap();
        assert_eq!(s.space().len(), 1);
    }

    /// Prints sequential out+take pairs/s over loopback (no assertion: a report).
    /// `cargo test -p agora-tuplespace --release -- --ignored --nocapture pairs_report`
    #[test]
    #[ignore]
    fn pairs_report() {
        for aged in [0usize, 100_000] {
            let s = server(|_| {});
            for n in 0..aged {
                let t = Tuple(vec![Value::from("aged"), Value::Int(n as i64)]);
                s.space().out(t).unwrap();
            }
            let c = dealer(&s);
            let n = 20_000u64;
            let started = Instant::now();
            for i in 0..n {
                let out = Request::Out {
                    tuple: job(i as i64).to_cbor(),
                    lease: None,
                };
                call(&c, &out, 2 * i);
                let Reply::Tuple {
                    reservation: Some(r),
                    ..
                } = call(&c, &take(Wait::NonBlocking), 2 * i + 1)
                else {
                    panic!("expected a tuple")
                };
                send(&c, &Request::Confirm(r), 0, FLAG_NO_REPLY);
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "aged {aged:>7}: {n} sequential out+take pairs in {secs:.2} s = {:.0} pairs/s, \
                 {:.1} us/pair",
                n as f64 / secs,
                secs * 1e6 / n as f64
            );
        }
    }
}
