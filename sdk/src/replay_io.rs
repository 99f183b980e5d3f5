//! The replay I/O thread: owns the client's `DEALER` to the broker's replay service.
//!
//! Started on first use (a replay, a durable subscription, a gap to heal) and shared by
//! every subscription of the client. Handles send [`ReplayCommand`]s over a channel and
//! knock on a [`doorbell`] (every command: this thread never arms it); the thread sends
//! requests, and routes what comes back by request id: a replay's start, batches and end go
//! to that replay's [`ReplayFeed`]; acks answer their caller, or time out ([`PendingReplies`]).
//!
//! Flow control: a feed grants the broker one more batch (CREDIT) each time its consumer
//! takes a batch, so at most `credit` batches per replay are ever in flight or buffered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agora_wire::bus::{self as protocol, ReplayRequest, ReplayStart};
use agora_wire::socket::{doorbell, Bell, PendingReplies, Ringer};
use agora_wire::{Header, Op};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::io::{FrameBuf, WireEvent};

/// Batches a replay may have in flight.
pub(crate) const REPLAY_CREDIT: u32 = 8;

/// What a replay delivers to its consumer.
pub(crate) enum ReplayMsg {
    /// The broker accepted the replay; `expired` events before it are gone (a durable
    /// subscription resumed past retention).
    Started { expired: u64 },
    /// Matching events (possibly none: the broker reports progress through a long stretch
    /// of the log that does not match).
    Batch { events: Vec<WireEvent> },
    /// Every matching event below `end` has been delivered.
    End { end: u64 },
    /// The replay failed (the broker's error reply, a timeout, a protocol error).
    Failed(Error),
}

enum ReplayCommand {
    Start {
        id: u64,
        request: Vec<u8>,
        tx: mpsc::Sender<ReplayMsg>,
    },
    Credit {
        id: u64,
        n: u32,
    },
    Close {
        id: u64,
    },
    /// A request answered with `Ok`/`Error` (durable ack and delete).
    Call {
        id: u64,
        frames: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The handle: cheap to clone, shared by the client's subscriptions.
#[derive(Clone)]
pub(crate) struct ReplayHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    tx: mpsc::UnboundedSender<ReplayCommand>,
    ringer: Ringer,
    next_id: AtomicU64,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.ringer.knock();
    }
}

impl ReplayHandle {
    /// Start the thread with its DEALER connected to `endpoint`.
    pub(crate) fn spawn(
        ctx: &zmq::Context,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<ReplayHandle> {
        let dealer = ctx.socket(zmq::DEALER)?;
        dealer.set_linger(0)?;
        dealer.set_rcvhwm(100_000)?;
        dealer.set_sndhwm(100_000)?;
        dealer.connect(endpoint)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ringer, bell) = doorbell()?;
        let thread = ReplayThread {
            dealer,
            rx,
            bell,
            replays: HashMap::new(),
            calls: PendingReplies::new(),
            timeout,
        };
        crate::io::spawn_socket_thread("agora-replay-io", ctx, thread, ReplayThread::run)?;
        Ok(ReplayHandle {
            inner: Arc::new(HandleInner {
                tx,
                ringer,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    fn send(&self, cmd: ReplayCommand) -> Result<()> {
        self.inner.tx.send(cmd).map_err(|_| Error::Closed)?;
        self.inner.ringer.knock();
        Ok(())
    }

    /// Start a replay; its messages arrive on the returned feed.
    pub(crate) fn start(&self, mut request: ReplayRequest) -> Result<ReplayFeed> {
        request.credit = REPLAY_CREDIT;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // Room for every batch the credit allows, plus the start, end and an error.
        let (tx, rx) = mpsc::channel(REPLAY_CREDIT as usize + 4);
        self.send(ReplayCommand::Start {
            id,
            request: protocol::encode_cbor_body(&request),
            tx,
        })?;
        Ok(ReplayFeed {
            id,
            rx,
            handle: self.clone(),
        })
    }

    /// Send a request answered by `Ok` or an error (durable ack/delete), and wait.
    pub(crate) async fn call(&self, op: Op, body: Vec<Vec<u8>>) -> Result<()> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frames = Vec::with_capacity(body.len() + 1);
        frames.push(Header::new(op, id).encode().to_vec());
        frames.extend(body);
        let (reply, rx) = oneshot::channel();
        self.send(ReplayCommand::Call { id, frames, reply })?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

/// The receiving end of one replay. Dropping it stops the replay at the broker.
pub(crate) struct ReplayFeed {
    id: u64,
    rx: mpsc::Receiver<ReplayMsg>,
    handle: ReplayHandle,
}

impl ReplayFeed {
    /// The next message; taking a batch grants the broker one more.
    pub(crate) fn poll_msg(&mut self, cx: &mut Context<'_>) -> Poll<ReplayMsg> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(msg)) => {
                if matches!(msg, ReplayMsg::Batch { .. }) {
                    let _ = self
                        .handle
                        .send(ReplayCommand::Credit { id: self.id, n: 1 });
                }
                Poll::Ready(msg)
            }
            Poll::Ready(None) => Poll::Ready(ReplayMsg::Failed(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ReplayFeed {
    fn drop(&mut self) {
        let _ = self.handle.send(ReplayCommand::Close { id: self.id });
    }
}

struct ActiveReplay {
    tx: mpsc::Sender<ReplayMsg>,
    /// Batches the broker may still send (credit it holds).
    outstanding: u32,
    started: bool,
    last_heard: Instant,
}

struct ReplayThread {
    dealer: zmq::Socket,
    rx: mpsc::UnboundedReceiver<ReplayCommand>,
    /// Never armed: handles knock, and a wake drains it after each poll.
    bell: Bell,
    /// Replays in progress. Not a [`PendingReplies`]: a replay's deadline moves with every
    /// message it gets and runs only while the broker owes it something, and one whose
    /// consumer is gone ends at the next sweep.
    replays: HashMap<u64, ActiveReplay>,
    /// Calls waiting for their answer, each until it was sent plus `timeout`.
    calls: PendingReplies<oneshot::Sender<Result<()>>>,
    timeout: Duration,
}

impl ReplayThread {
    fn run(&mut self) {
        let mut last_sweep = Instant::now();
        loop {
            if !self.take_commands() {
                return;
            }
            self.read_replies();
            if last_sweep.elapsed() >= Duration::from_millis(100) {
                last_sweep = Instant::now();
                self.sweep();
            }
            let mut items = [
                self.dealer.as_poll_item(zmq::POLLIN),
                zmq::PollItem::from_fd(self.bell.fd(), zmq::POLLIN),
            ];
            let _ = zmq::poll(&mut items, 100);
            self.bell.wake();
        }
    }

    /// Returns false once every handle is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            let cmd = match self.rx.try_recv() {
                Ok(c) => c,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            };
            match cmd {
                ReplayCommand::Start { id, request, tx } => {
                    let header = Header::new(Op::Replay, id).encode();
                    if let Err(e) = self.send(&[&header, &request]) {
                        let _ = tx.try_send(ReplayMsg::Failed(e));
                        continue;
                    }
                    self.replays.insert(
                        id,
                        ActiveReplay {
                            tx,
                            outstanding: REPLAY_CREDIT,
                            started: false,
                            last_heard: Instant::now(),
                        },
                    );
                }
                ReplayCommand::Credit { id, n } => {
                    if self.replays.contains_key(&id) {
                        let header = Header::new(Op::Credit, id).encode();
                        let sent = self.send(&[&header, &n.to_le_bytes()]).is_ok();
                        if let Some(r) = self.replays.get_mut(&id).filter(|_| sent) {
                            if r.outstanding == 0 {
                                r.last_heard = Instant::now();
                            }
                            r.outstanding += n;
                        }
                    }
                }
                ReplayCommand::Close { id } => {
                    if self.replays.remove(&id).is_some() {
                        let header = Header::new(Op::ReplayClose, id).encode();
                        let _ = self.send(&[&header]);
                    }
                }
                ReplayCommand::Call { id, frames, reply } => {
                    let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                    match self.send(&parts) {
                        Ok(()) => {
                            self.calls.insert(id, Instant::now() + self.timeout, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Send without blocking: with no broker connected the DEALER refuses (EAGAIN), which
    /// fails the request instead of hanging the thread.
    fn send(&self, frames: &[&[u8]]) -> Result<()> {
        let n = frames.len();
        for (i, f) in frames.iter().enumerate() {
            let more = if i + 1 < n { zmq::SNDMORE } else { 0 };
            match self.dealer.send(*f, more | zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    return Err(Error::Timeout {
                        what: "replay request (broker unreachable)",
                        timeout: Duration::ZERO,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_replies(&mut self) {
        for _ in 0..1024 {
            let frames = match self.dealer.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(_) => return,
            };
            let Some((head, body)) = frames.split_first() else {
                continue;
            };
            let header = match Header::decode(head) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!("unreadable replay reply: {e}");
                    continue;
                }
            };
            let id = header.request_id;
            let op = Op::from_u8(header.op);
            if let Some(reply) = self.calls.remove(id) {
                let result = match op {
                    Some(Op::Ok) => Ok(()),
                    Some(Op::Error) => {
                        let parts: Vec<&[u8]> = body.iter().map(|f| &f[..]).collect();
                        Err(Error::from_reply(&parts))
                    }
                    _ => Err(Error::Protocol(protocol::ProtocolError::Body(format!(
                        "unexpected reply op 0x{:02x}",
                        header.op
                    )))),
                };
                let _ = reply.send(result);
                continue;
            }
            let Some(r) = self.replays.get_mut(&id) else {
                continue; // a replay we closed: its last batches are still arriving
            };
            r.last_heard = Instant::now();
            let (msg, finished) = match op {
                Some(Op::Ok) if !r.started => {
                    r.started = true;
                    let body0 = body.first().map(|f| &f[..]).unwrap_or(&[]);
                    match protocol::decode_cbor_body::<ReplayStart>(body0) {
                        Ok(s) => (ReplayMsg::Started { expired: s.expired }, false),
                        Err(e) => (ReplayMsg::Failed(e.into()), true),
                    }
                }
                Some(Op::ReplayBatch) => {
                    r.outstanding = r.outstanding.saturating_sub(1);
                    match decode_batch(body) {
                        Ok((events, _progress)) => (ReplayMsg::Batch { events }, false),
                        Err(e) => (ReplayMsg::Failed(e.into()), true),
                    }
                }
                Some(Op::ReplayEnd) => {
                    let body0 = body.first().map(|f| &f[..]).unwrap_or(&[]);
                    match protocol::decode_replay_end(body0) {
                        Ok((end, _)) => (ReplayMsg::End { end }, true),
                        Err(e) => (ReplayMsg::Failed(e.into()), true),
                    }
                }
                Some(Op::Error) => {
                    let parts: Vec<&[u8]> = body.iter().map(|f| &f[..]).collect();
                    (ReplayMsg::Failed(Error::from_reply(&parts)), true)
                }
                _ => (
                    ReplayMsg::Failed(Error::Protocol(protocol::ProtocolError::Body(format!(
                        "unexpected replay message op 0x{:02x}",
                        header.op
                    )))),
                    true,
                ),
            };
            // The channel has room for every batch the credit allows, so this only fails
            // when the consumer is gone.
            if r.tx.try_send(msg).is_err() || finished {
                self.replays.remove(&id);
            }
        }
    }

    /// Fail replays and calls the broker has not answered in time.
    fn sweep(&mut self) {
        let timeout = self.timeout;
        let stale: Vec<u64> = self
            .replays
            .iter()
            .filter(|(_, r)| {
                r.tx.is_closed()
                    || ((r.outstanding > 0 || !r.started) && r.last_heard.elapsed() >= timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(r) = self.replays.remove(&id) {
                let _ = r.tx.try_send(ReplayMsg::Failed(Error::Timeout {
                    what: "replay",
                    timeout,
                }));
                let header = Header::new(Op::ReplayClose, id).encode();
                let _ = self.send(&[&header]);
            }
        }
        for (_, reply) in self.calls.expired(Instant::now()) {
            let _ = reply.send(Err(Error::Timeout {
                what: "durable subscription request",
                timeout,
            }));
        }
    }
}

/// Split a REPLAY_BATCH's frames into events (sharing one buffer) and the progress offset.
fn decode_batch(
    body: &[Vec<u8>],
) -> std::result::Result<(Vec<WireEvent>, u64), protocol::ProtocolError> {
    let [progress, events] = body else {
        return Err(protocol::ProtocolError::FrameCount {
            op: protocol::Op::ReplayBatch,
            expected: 2,
            got: body.len(),
        });
    };
    let progress = protocol::decode_u64(progress)?;
    let shared: Arc<[u8]> = Arc::from(&events[..]);
    let mut out = Vec::new();
    let mut pos = 0usize;
    for frame in protocol::batch_events(&shared) {
        let frame = frame?;
        let start = pos + 4;
        pos = start + frame.len();
        let layout = protocol::decode_event(frame)?;
        if std::str::from_utf8(&frame[..layout.topic_len]).is_err() {
            return Err(protocol::ProtocolError::Body(
                "replayed event with a non-UTF-8 topic".into(),
            ));
        }
        out.push(WireEvent {
            frame: FrameBuf::Shared(shared.clone(), start..pos),
            layout,
        });
    }
    Ok((out, progress))
}
