//! The tuple space client's I/O thread: the one owner of its `DEALER` socket to the space.
//!
//! [`Space`](crate::Space) handles send [`Cmd`]s over an unbounded channel and ring a
//! [`doorbell`] (polled next to the `DEALER`) that writes only when the thread is parked. The
//! channel is unbounded on purpose: `CANCEL`, `CONFIRM` and `RELEASE` are sent from `Drop`
//! (which cannot wait) and must never be lost or overtake the request they refer to; every
//! operation waits for its reply, so the queue is bounded by the caller's own concurrency.
//!
//! The thread writes requests, matches replies to callers by request id, turns a take's
//! reservation into a [`Reservation`] guard (confirmed by the caller once it has the tuple,
//! released if it never gets it), releases reservations that arrive for callers that are gone,
//! sends `PING` every second while blocked requests are pending (the server drops silent
//! clients' waiters after 5 s), and re-sends blocked requests after a reconnection (a
//! restarted broker has forgotten them).

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use agora_wire::socket::{doorbell, poll_in, Bell, Ringer};
use agora_wire::space::{decode_header, Reply, Request, Wait, FLAG_NO_REPLY};
use agora_wire::Op;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Commands taken from the channel per loop turn, at most.
const COMMAND_BATCH: usize = 1024;
/// Replies read per loop turn, at most.
const REPLY_BATCH: usize = 1024;
/// Heartbeat period while blocked requests are pending (the server's silence limit is 5 s).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Monitor events: see libzmq's `ZMQ_EVENT_*`.
const EVENT_CONNECTED: u16 = 0x0001;
const EVENT_DISCONNECTED: u16 = 0x0200;

/// Counter for unique inproc monitor endpoints within the process.
static MONITOR_SEQ: AtomicU64 = AtomicU64::new(1);

/// What a [`Space`](crate::Space) handle asks the I/O thread to do.
pub(crate) enum Cmd {
    /// Send a request (its tuple or template already CBOR, moved into the frames) and hand
    /// its reply to `reply`.
    Request {
        id: u64,
        request: Request,
        reply: oneshot::Sender<RawReply>,
        /// A TAKE/READ that may wait at the server: heartbeats, CANCEL on drop, re-sent after
        /// a reconnection.
        blocking: bool,
        /// For a blocking request with a timeout: when it ends (to re-send the rest).
        deadline: Option<Instant>,
    },
    /// The caller of request `id` is gone: forget it; withdraw it at the server if it blocks.
    Cancel { id: u64 },
    /// Confirm a reservation (fire-and-forget).
    Confirm(u64),
    /// Release a reservation (fire-and-forget).
    Release(u64),
}

/// A reply as the thread hands it to the caller: decoded by the wire's [`Reply`], its tuples
/// still in the messages they arrived in (the caller decodes them with the model), or an
/// error (the server's, or a reply that broke the protocol). A take's reply carries its
/// reservation.
pub(crate) struct RawReply {
    pub(crate) reply: Reply<zmq::Message>,
    pub(crate) reservation: Option<Reservation>,
}

/// State shared by every handle of one space client: the channel to the thread, the doorbell
/// and the request id counter. Dropping the last one (handles and guards) stops the thread.
pub(crate) struct Ctl {
    tx: mpsc::UnboundedSender<Cmd>,
    ringer: Ringer,
    next_id: Arc<AtomicU64>,
}

impl Ctl {
    /// A fresh request id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queue a command and wake the thread if it is parked.
    pub(crate) fn send(&self, cmd: Cmd) -> Result<()> {
        self.tx.send(cmd).map_err(|_| Error::Closed)?;
        self.ringer.ring();
        Ok(())
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // Close the channel first (the fields would drop only after this body: a thread
        // woken quickly enough would find it still open, park again and never wake), then
        // wake the thread so it notices and exits.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, closed));
        self.ringer.knock();
    }
}

/// A tuple handed to this client and held for it at the server. [`Reservation::confirm`]
/// makes the take final; dropping the guard unconfirmed releases the tuple back to the space.
pub(crate) struct Reservation {
    id: u64,
    ctl: Arc<Ctl>,
    done: bool,
}

impl Reservation {
    /// Confirm (the tuple is gone from the space for good).
    pub(crate) fn confirm(mut self) {
        self.done = true;
        let _ = self.ctl.send(Cmd::Confirm(self.id));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.ctl.send(Cmd::Release(self.id));
        }
    }
}

/// Start the I/O thread with a `DEALER` connected to the space at `endpoint`.
pub(crate) fn spawn(ctx: &zmq::Context, endpoint: &str) -> Result<Arc<Ctl>> {
    let dealer = ctx.socket(zmq::DEALER)?;
    // Give CONFIRM/RELEASE/CANCEL queued at shutdown a moment to leave.
    dealer.set_linger(1000)?;
    dealer.set_sndhwm(100_000)?;
    dealer.set_rcvhwm(100_000)?;
    let mon_ep = format!(
        "inproc://agora-space-monitor-{}-{}",
        std::process::id(),
        MONITOR_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    dealer.monitor(
        &mon_ep,
        i32::from(EVENT_CONNECTED) | i32::from(EVENT_DISCONNECTED),
    )?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(&mon_ep)?;
    dealer.connect(endpoint)?;

    let (tx, rx) = mpsc::unbounded_channel();
    let (ringer, bell) = doorbell()?;
    let next_id = Arc::new(AtomicU64::new(1));
    let ctl = Arc::new(Ctl {
        tx,
        ringer,
        next_id: next_id.clone(),
    });
    let dealer_fd = dealer.get_fd()?;
    let monitor_fd = monitor.get_fd()?;
    let io = IoThread {
        dealer,
        monitor,
        rx,
        ctl: Arc::downgrade(&ctl),
        bell,
        next_id,
        waiting: HashMap::new(),
        blocked: 0,
        outq: VecDeque::new(),
        last_sent: Instant::now(),
        was_disconnected: false,
        closing: false,
        monitor_ready: true,
        dealer_fd,
        monitor_fd,
        dealer_settled: false,
    };
    crate::io::spawn_socket_thread("agora-space-io", ctx, io, IoThread::run)?;
    Ok(ctl)
}

/// A caller waiting for its reply.
struct Waiter {
    op: Op,
    tx: oneshot::Sender<RawReply>,
    /// For blocking requests: the request, to re-send after a reconnection.
    resend: Option<(Request, Option<Instant>)>,
}

struct IoThread {
    dealer: zmq::Socket,
    monitor: zmq::Socket,
    rx: mpsc::UnboundedReceiver<Cmd>,
    ctl: Weak<Ctl>,
    /// Armed while the thread is parked (or about to be): handles' rings write only then.
    bell: Bell,
    next_id: Arc<AtomicU64>,
    /// Callers waiting for their reply. No deadlines here (not a `PendingReplies`): a
    /// caller's own timer ends its wait, and its dropped future sends `Cancel`.
    waiting: HashMap<u64, Waiter>,
    /// How many of `waiting` are blocking requests (heartbeats run while > 0).
    blocked: usize,
    /// Whole messages (header first) the `DEALER` did not take yet.
    outq: VecDeque<Vec<Vec<u8>>>,
    last_sent: Instant,
    /// A disconnection was seen: the next connection re-sends blocked requests.
    was_disconnected: bool,
    closing: bool,
    /// The last poll saw the monitor readable (events are read only then).
    monitor_ready: bool,
    /// The DEALER's ZMQ_FD (readable when its state may have changed).
    dealer_fd: RawFd,
    /// The monitor's ZMQ_FD.
    monitor_fd: RawFd,
    /// The DEALER's last operation was a `recv` that found nothing: its fd can be slept on
    /// without asking ZMQ_EVENTS first.
    dealer_settled: bool,
}

impl Drop for IoThread {
    fn drop(&mut self) {
        // Stop the monitor before the sockets close. libzmq writes monitor events with a
        // blocking send from its I/O thread: an event for a closing DEALER whose reading PAIR
        // is already gone would block that thread, and with it every socket of the SDK's
        // shared context (every client in the process).
        // SAFETY: the DEALER is a live socket owned by this thread; a null address is
        // libzmq's documented way to stop monitoring.
        let rc =
            unsafe { zmq_sys::zmq_socket_monitor(self.dealer.as_mut_ptr(), std::ptr::null(), 0) };
        if rc != 0 {
            tracing::warn!("space client: cannot stop the socket monitor");
        }
    }
}

impl IoThread {
    fn run(&mut self) {
        loop {
            let mut progressed = false;
            if !self.closing {
                progressed |= self.take_commands();
            }
            progressed |= self.flush_out();
            progressed |= self.read_replies();
            if self.monitor_ready {
                // Only when the last poll saw an event: an empty read costs a syscall, and
                // this loop turns once per burst of requests.
                self.monitor_ready = false;
                progressed |= self.read_monitor();
            }
            self.heartbeat();
            if self.closing {
                // Every handle is gone, so nobody waits for a reply: leave what is queued to
                // the socket's linger and stop.
                self.flush_out();
                return;
            }
            // After progress, go round again only if there is more to do right away; whatever
            // else may have come meanwhile (a reply), the poll below sees at once. A full
            // extra turn would cost an empty DEALER read: a syscall per wake-up.
            if progressed && (!self.rx.is_empty() || self.monitor_ready) {
                continue;
            }
            // Park: arm the doorbell, look once more, then sleep in poll.
            self.bell.arm();
            if !self.rx.is_empty() {
                self.bell.disarm();
                continue;
            }
            // libzmq's socket fds only signal a change since the socket was last used; a
            // `recv` that found nothing (`read_replies` ends with one) leaves the DEALER in
            // that state, anything after it (a send) needs a look at ZMQ_EVENTS first.
            if !self.dealer_settled || !self.outq.is_empty() {
                let want = if self.outq.is_empty() {
                    zmq::POLLIN
                } else {
                    zmq::POLLIN | zmq::POLLOUT
                };
                match self.dealer.get_events() {
                    Ok(ev) if !(ev & want).is_empty() => {
                        self.bell.disarm();
                        continue;
                    }
                    Ok(_) => self.dealer_settled = true,
                    Err(e) => {
                        tracing::error!("space client: ZMQ_EVENTS failed: {e}");
                        self.dealer_settled = true;
                    }
                }
            }
            let timeout_ms = if self.blocked > 0 {
                HEARTBEAT
                    .saturating_sub(self.last_sent.elapsed())
                    .as_millis()
                    .max(1) as i64
            } else {
                -1
            };
            // A plain poll(2) on the three fds (see `poll_in`: `zmq::poll` would cost up to
            // five more syscalls per wake-up).
            let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
            // On a poll error (EINTR), look at everything: one syscall too many at worst.
            // The DEALER is read on every loop turn anyway.
            let [_, monitor, doorbell] =
                poll_in([self.dealer_fd, self.monitor_fd, self.bell.fd()], timeout)
                    .unwrap_or([true; 3]);
            self.monitor_ready = monitor;
            if doorbell {
                // One byte per park at most (plus one at shutdown): one read.
                self.bell.wake();
            } else {
                // Woken by the sockets: no read of an empty doorbell.
                self.bell.disarm();
            }
        }
    }

    fn internal_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queue a request of a caller.
    fn enqueue(&mut self, id: u64, request: Request) {
        self.outq.push_back(request.into_frames(id, 0));
    }

    /// Queue a fire-and-forget request of this thread's own (CONFIRM, RELEASE, CANCEL, PING).
    fn enqueue_internal(&mut self, request: Request) {
        let id = self.internal_id();
        self.outq.push_back(request.into_frames(id, FLAG_NO_REPLY));
    }

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
                Cmd::Request {
                    id,
                    request,
                    reply,
                    blocking,
                    deadline,
                } => {
                    let resend = if blocking {
                        self.blocked += 1;
                        Some((request.clone(), deadline))
                    } else {
                        None
                    };
                    self.waiting.insert(
                        id,
                        Waiter {
                            op: request.op(),
                            tx: reply,
                            resend,
                        },
                    );
                    self.enqueue(id, request);
                }
                Cmd::Cancel { id } => {
                    if let Some(w) = self.waiting.remove(&id) {
                        if w.resend.is_some() {
                            self.blocked -= 1;
                            // Withdraw the waiter so it cannot swallow a later tuple. If it
                            // was served already, its reply finds no caller and is released.
                            self.enqueue_internal(Request::Cancel(id));
                        }
                    }
                }
                Cmd::Confirm(r) => self.enqueue_internal(Request::Confirm(r)),
                Cmd::Release(r) => self.enqueue_internal(Request::Release(r)),
            }
        }
        progressed
    }

    /// Hand queued messages to the `DEALER` until it pushes back.
    fn flush_out(&mut self) -> bool {
        let mut progressed = false;
        while let Some(frames) = self.outq.front() {
            let n = frames.len();
            // The first frame goes from a borrowed slice so a refused send can be retried.
            let more = if n > 1 { zmq::SNDMORE } else { 0 };
            self.dealer_settled = false;
            match self.dealer.send(&frames[0][..], more | zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    tracing::error!("space client: send failed: {e}");
                    self.outq.pop_front();
                    continue;
                }
            }
            let Some(frames) = self.outq.pop_front() else {
                break;
            };
            // After the first frame the rest of the message is always accepted.
            for (i, f) in frames.into_iter().enumerate().skip(1) {
                let flags = if i + 1 < n { zmq::SNDMORE } else { 0 };
                if let Err(e) = self.dealer.send(f, flags) {
                    tracing::error!("space client: send failed mid-message: {e}");
                }
            }
            self.last_sent = Instant::now();
            progressed = true;
        }
        progressed
    }

    fn read_replies(&mut self) -> bool {
        let mut progressed = false;
        for _ in 0..REPLY_BATCH {
            let mut frames = Vec::with_capacity(3);
            loop {
                let mut m = zmq::Message::new();
                if self.dealer.recv(&mut m, zmq::DONTWAIT).is_err() {
                    // Nothing more (EAGAIN): commands processed, the fd is armed.
                    self.dealer_settled = true;
                    break;
                }
                let more = m.get_more();
                frames.push(m);
                if !more {
                    break;
                }
            }
            if frames.is_empty() {
                break;
            }
            progressed = true;
            self.reply(frames);
        }
        progressed
    }

    fn reply(&mut self, frames: Vec<zmq::Message>) {
        // The request id first: the reply is read in the light of its request's op.
        let request_id = match frames.first().map(|f| decode_header(f)) {
            Some(Ok((header, _))) => header.request_id,
            Some(Err(e)) => {
                tracing::warn!("space client: unreadable reply ignored: {e}");
                return;
            }
            None => return,
        };
        let waiter = self.waiting.remove(&request_id);
        if let Some(w) = &waiter {
            if w.resend.is_some() {
                self.blocked -= 1;
            }
        }
        // A reply without a caller is read as a take's (`[tuple, reservation]`): if it
        // carries a reservation, the tuple goes back below.
        let op = waiter.as_ref().map_or(Op::Take, |w| w.op);
        let reply = match Reply::decode_frames(op, frames) {
            Ok((_, reply)) => reply,
            Err(e) => Reply::from(e),
        };
        let reservation = reply.reservation();
        let Some(w) = waiter else {
            match (&reply, reservation) {
                // The caller went away (dropped, timed out, cancelled): put the tuple back.
                (_, Some(r)) => self.enqueue_internal(Request::Release(r)),
                (Reply::Error { code, message }, None) => {
                    tracing::warn!("space client: request {request_id} failed: {code:?}: {message}")
                }
                _ => {}
            }
            return;
        };
        let guard = match (reservation, self.ctl.upgrade()) {
            (Some(id), Some(ctl)) => Some(Reservation {
                id,
                ctl,
                done: false,
            }),
            (Some(id), None) => {
                self.enqueue_internal(Request::Release(id));
                None
            }
            (None, _) => None,
        };
        // If the caller is gone by now, the reply (and its guard) is dropped: released.
        let _ = w.tx.send(RawReply {
            reply,
            reservation: guard,
        });
    }

    /// Keep the server from dropping this client's blocked requests as those of a dead one.
    fn heartbeat(&mut self) {
        if self.blocked > 0 && self.last_sent.elapsed() >= HEARTBEAT {
            self.enqueue_internal(Request::Ping);
            self.flush_out();
            // Even if the socket pushed back, do not spin on this.
            self.last_sent = Instant::now();
        }
    }

    /// Watch the connection: after a reconnection, re-send the blocked requests (a restarted
    /// server has no memory of them; if it is the same server, the old waiter is dropped as
    /// silent and anything it reserved goes back when its lease ends).
    fn read_monitor(&mut self) -> bool {
        let mut progressed = false;
        while let Ok(parts) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            progressed = true;
            let Some(ev) = parts.first().filter(|f| f.len() >= 2) else {
                continue;
            };
            match u16::from_le_bytes([ev[0], ev[1]]) {
                EVENT_DISCONNECTED => self.was_disconnected = true,
                EVENT_CONNECTED if self.was_disconnected => {
                    self.was_disconnected = false;
                    self.resend_blocked();
                }
                _ => {}
            }
        }
        progressed
    }

    fn resend_blocked(&mut self) {
        let now = Instant::now();
        let mut again = Vec::new();
        for (id, w) in &self.waiting {
            if let Some((request, deadline)) = &w.resend {
                let mut request = request.clone();
                if let Some(d) = deadline {
                    // What is left of the wait (at least 1 ms on the wire).
                    let left = Wait::Timeout(d.saturating_duration_since(now));
                    if let Request::Take { wait, .. } | Request::Read { wait, .. } = &mut request {
                        *wait = left;
                    }
                }
                again.push((*id, request));
            }
        }
        if !again.is_empty() {
            tracing::info!(
                "space client: reconnected, re-sending {} blocked request(s)",
                again.len()
            );
        }
        for (id, request) in again {
            self.enqueue(id, request);
        }
    }
}
