//! Subscriptions: streams of events, typed ([`Subscription`]) or raw ([`RawSubscription`]).
//!
//! Both watch each topic's sequence numbers. A jump means events were missed: they are
//! fetched from the broker's log and delivered in order before the event that revealed the
//! jump (gap healing, reported by [`RawSubscription::healed`]); what the log no longer holds
//! (or every gap, with [`ClientOptions::heal_gaps`](crate::ClientOptions) off) is an
//! [`Error::Gap`] item that says how many events were missed on which topic. A sequence that
//! goes backwards means the broker restarted without its log, and is taken as a restart, not
//! a gap.
//!
//! A subscription opened with a replay ([`Client::subscribe_from`](crate::Client), durable
//! subscriptions) follows the zguide's Clone pattern: it subscribes live first (buffering),
//! replays the log up to the END the broker reports, then hands over to the buffered live
//! events, skipping those the replay already delivered: no gap, no duplicate.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_wire::bus::{ContentType, ReplayFrom, ReplayRequest, KIND_BEACON};
use agora_wire::Op;
use futures_core::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::client::ClientInner;
use crate::error::{Error, Result};
use crate::io::{Command, WireEvent};
use crate::replay_io::{ReplayFeed, ReplayMsg};

pub use agora_wire::bus::UNLOGGED_OFFSET;

/// A typed event as a subscriber receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<T> {
    /// The topic it was published on.
    pub topic: String,
    /// Its position in the broker's log (global, increasing; [`UNLOGGED_OFFSET`] for an
    /// event the broker made itself on a `$`-topic, such as `$sys.stats`).
    pub offset: u64,
    /// Its sequence number on its topic (1, 2, 3, ...).
    pub seq: u64,
    /// When the broker stamped it.
    pub time: SystemTime,
    /// The decoded payload.
    pub payload: T,
}

/// An event whose payload is left as bytes.
pub struct RawEvent {
    wire: WireEvent,
}

impl RawEvent {
    /// The topic it was published on.
    pub fn topic(&self) -> &str {
        self.wire.topic()
    }
    /// Its position in the broker's log ([`UNLOGGED_OFFSET`] for an event the broker made
    /// itself on a `$`-topic).
    pub fn offset(&self) -> u64 {
        self.wire.layout.meta.offset
    }
    /// Its sequence number on its topic.
    pub fn seq(&self) -> u64 {
        self.wire.layout.meta.seq
    }
    /// When the broker stamped it, in nanoseconds since the Unix epoch.
    pub fn time_ns(&self) -> u64 {
        self.wire.layout.meta.time_ns
    }
    /// When the broker stamped it.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.wire.layout.meta.time_ns)
    }
    /// How the publisher encoded the payload.
    pub fn content_type(&self) -> ContentType {
        ContentType::from_u8(self.wire.layout.meta.content_type)
    }
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        self.wire.payload()
    }
    /// Decode the payload (CBOR) as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.decode_with(&mut Vec::new())
    }

    fn decode_with<T: DeserializeOwned>(&self, scratch: &mut Vec<u8>) -> Result<T> {
        if scratch.len() < 4096 {
            scratch.resize(4096, 0);
        }
        ciborium::de::from_reader_with_buffer(self.payload(), scratch).map_err(|e| Error::Decode {
            topic: self.topic().to_string(),
            offset: self.offset(),
            message: agora_wire::text::cbor_error_message(&e),
        })
    }
}

impl std::fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvent")
            .field("topic", &self.topic())
            .field("offset", &self.offset())
            .field("seq", &self.seq())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// Live events buffered while a replay runs; beyond this the oldest are dropped and the
/// replay is extended to cover them instead (so a long replay cannot grow memory without
/// bound, and the I/O thread never stalls on a replaying subscription).
const LIVE_BUFFER: usize = 65_536;

/// A gap that was healed: the events were fetched from the broker's log and delivered in
/// order, in place of the [`Error::Gap`] a subscriber without a log would see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healed {
    /// The topic that had the gap.
    pub topic: String,
    /// How many missed events were recovered from the log.
    pub count: u64,
    /// Sequence of the first recovered event.
    pub first_seq: u64,
    /// Sequence of the last recovered event.
    pub last_seq: u64,
}

/// The Clone pattern's first phase: live events are buffered while the log is replayed.
struct ReplayPhase {
    feed: ReplayFeed,
    filters: Vec<String>,
    live: VecDeque<WireEvent>,
    /// Live events below this offset were dropped from `live` (it was full): the replay
    /// must reach it before handing over.
    live_floor: u64,
}

/// A gap being filled from the log.
struct Healing {
    feed: ReplayFeed,
    topic: String,
    /// Wanted sequences: `first..=last`; `next` is the next one to deliver.
    first: u64,
    last: u64,
    next: u64,
    /// The event that revealed the gap, delivered after the healed ones.
    held: Option<WireEvent>,
}

/// A stream of [`RawEvent`]s; items are `Err` for gaps the log could not fill (and for a
/// replay that failed). Dropping it unsubscribes.
///
/// Gaps heal themselves: when the sequence of a topic jumps (the subscriber fell behind and
/// ZeroMQ dropped events), the missing events are fetched from the broker's log and
/// delivered in order before the event that revealed the gap; [`RawSubscription::healed`]
/// counts them and [`RawSubscription::take_healed`] says where. Only what the log no
/// longer holds is reported as an [`Error::Gap`].
pub struct RawSubscription {
    id: u64,
    rx: mpsc::Receiver<Vec<WireEvent>>,
    batch: std::vec::IntoIter<WireEvent>,
    /// Items to yield next, in order.
    ready: VecDeque<Result<WireEvent>>,
    /// Per topic: the last sequence seen and the offset of the last event seen.
    last: HashMap<String, (u64, u64)>,
    client: Arc<ClientInner>,
    /// Live events below this offset were already delivered by a replay.
    skip_below: u64,
    replay: Option<ReplayPhase>,
    heal: Option<Healing>,
    heal_gaps: bool,
    /// False for queue-group members, which see only their share of each topic.
    check_gaps: bool,
    healed: u64,
    healed_log: Vec<Healed>,
    durable: Option<String>,
}

impl RawSubscription {
    pub(crate) fn new(
        id: u64,
        rx: mpsc::Receiver<Vec<WireEvent>>,
        client: Arc<ClientInner>,
        heal_gaps: bool,
    ) -> RawSubscription {
        RawSubscription {
            id,
            rx,
            batch: Vec::new().into_iter(),
            ready: VecDeque::new(),
            last: HashMap::new(),
            client,
            skip_below: 0,
            replay: None,
            heal: None,
            heal_gaps,
            check_gaps: true,
            healed: 0,
            healed_log: Vec::new(),
            durable: None,
        }
    }

    /// Enter the replay phase: `feed` (already started) delivers first, live events wait.
    pub(crate) fn begin_replay(
        &mut self,
        feed: ReplayFeed,
        filters: Vec<String>,
        durable: Option<String>,
    ) {
        self.replay = Some(ReplayPhase {
            feed,
            filters,
            live: VecDeque::new(),
            live_floor: 0,
        });
        self.durable = durable;
    }

    /// Start the stream with an [`Error::Expired`] item (never silent).
    pub(crate) fn report_expired(&mut self, missed: u64) {
        self.ready.push_back(Err(Error::Expired { missed }));
    }

    /// A queue-group member gets only its share of each topic: sequence jumps are expected.
    pub(crate) fn without_gap_checks(mut self) -> RawSubscription {
        self.check_gaps = false;
        self.heal_gaps = false;
        self
    }

    /// How many missed events were recovered from the broker's log so far.
    pub fn healed(&self) -> u64 {
        self.healed
    }

    /// The gaps healed since the last call, oldest first.
    pub fn take_healed(&mut self) -> Vec<Healed> {
        std::mem::take(&mut self.healed_log)
    }

    /// The durable subscription's name, if this is one.
    pub fn durable_name(&self) -> Option<&str> {
        self.durable.as_deref()
    }

    /// Acknowledge every event up to and including `offset` (durable subscriptions only):
    /// the broker moves the subscription's cursor past it and answers once the cursor is on
    /// disk. After a crash or reconnect, delivery resumes after the last acknowledged event
    /// (at least once: events delivered but not acknowledged come again).
    pub async fn ack(&self, offset: u64) -> Result<()> {
        let name = self.durable.as_deref().ok_or(Error::NotDurable)?;
        let handle = self.client.replay_handle()?;
        handle
            .call(
                Op::DurableAck,
                vec![name.as_bytes().to_vec(), offset.to_le_bytes().to_vec()],
            )
            .await
    }

    /// Compare `ev`'s sequence with the topic's last; `Some((gap, last seq, last offset))`
    /// if events before it were missed. Records `ev` as the topic's latest.
    ///
    /// A beacon carries the topic's latest sequence: if it is ahead of what was seen, the
    /// events in between were lost at the tail of a burst (`got` is then the sequence the next
    /// event will carry).
    fn check_gap(&mut self, ev: &WireEvent) -> Option<(Error, u64, u64)> {
        let seq = ev.layout.meta.seq;
        if seq == 0 || !self.check_gaps {
            return None; // unsequenced (broker-internal) event
        }
        let beacon = ev.layout.meta.kind == KIND_BEACON;
        let offset = ev.layout.meta.offset;
        match self.last.get_mut(ev.topic()) {
            Some(last) => {
                let (last_seq, last_offset) = *last;
                let expected = last_seq + 1;
                let next = if beacon { seq + 1 } else { seq };
                if beacon && seq < last_seq {
                    return None; // an old beacon, or a broker restarted without its log
                }
                last.0 = seq;
                if !beacon {
                    last.1 = offset;
                }
                (next > expected).then(|| {
                    let gap = Error::Gap {
                        topic: ev.topic().to_string(),
                        missed: next - expected,
                        expected,
                        got: next,
                    };
                    (gap, last_seq, last_offset)
                })
            }
            None => {
                let offset = if beacon { UNLOGGED_OFFSET } else { offset };
                self.last.insert(ev.topic().to_string(), (seq, offset));
                None
            }
        }
    }

    /// A live event: skip what a replay delivered, check its sequence, heal or report gaps.
    fn accept_live(&mut self, ev: WireEvent) {
        let meta = ev.layout.meta;
        let beacon = meta.kind == KIND_BEACON;
        if !beacon && meta.offset != UNLOGGED_OFFSET && meta.offset < self.skip_below {
            return;
        }
        match self.check_gap(&ev) {
            None => {
                if !beacon {
                    self.ready.push_back(Ok(ev));
                }
            }
            Some((gap, last_seq, last_offset)) => {
                let loggable =
                    last_offset != UNLOGGED_OFFSET && (beacon || meta.offset != UNLOGGED_OFFSET);
                if self.heal_gaps && loggable {
                    let target = if beacon { meta.seq } else { meta.seq - 1 };
                    let until = (!beacon).then_some(meta.offset);
                    let topic = ev.topic().to_string();
                    let held = (!beacon).then_some(ev);
                    match self.start_heal(&topic, last_offset + 1, until) {
                        Ok(feed) => {
                            self.heal = Some(Healing {
                                feed,
                                topic,
                                first: last_seq + 1,
                                last: target,
                                next: last_seq + 1,
                                held,
                            });
                        }
                        Err(e) => {
                            tracing::debug!("cannot heal a gap: {e}");
                            self.ready.push_back(Err(gap));
                            if let Some(ev) = held {
                                self.ready.push_back(Ok(ev));
                            }
                        }
                    }
                    return;
                }
                self.ready.push_back(Err(gap));
                if !beacon {
                    self.ready.push_back(Ok(ev));
                }
            }
        }
    }

    /// Fetch `topic`'s events from `from` (until `until`, or the log's end) from the log.
    fn start_heal(&self, topic: &str, from: u64, until: Option<u64>) -> Result<ReplayFeed> {
        let handle = self.client.replay_handle()?;
        handle.start(ReplayRequest {
            filters: vec![topic.to_string()],
            from: ReplayFrom::Offset(from),
            until,
            credit: 0,
            durable: None,
        })
    }

    /// An event that came from a replay: record its sequence and deliver it.
    fn accept_replayed(&mut self, ev: WireEvent) {
        if let Some((gap, _, _)) = self.check_gap(&ev) {
            self.ready.push_back(Err(gap));
        }
        self.ready.push_back(Ok(ev));
    }

    fn poll_heal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(h) = self.heal.as_mut() else {
            return Poll::Ready(());
        };
        let msg = match h.feed.poll_msg(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(m) => m,
        };
        match msg {
            ReplayMsg::Started { .. } => {}
            ReplayMsg::Batch { events } => {
                for ev in events {
                    let seq = ev.layout.meta.seq;
                    if ev.topic() != h.topic || seq < h.next || seq > h.last {
                        continue;
                    }
                    if seq > h.next {
                        // The log itself lacks these (cannot happen short of retention).
                        self.ready.push_back(Err(Error::Gap {
                            topic: h.topic.clone(),
                            missed: seq - h.next,
                            expected: h.next,
                            got: seq,
                        }));
                    }
                    h.next = seq + 1;
                    if let Some(last) = self.last.get_mut(&h.topic) {
                        if h.held.is_none() {
                            last.1 = ev.layout.meta.offset;
                        }
                    }
                    self.healed += 1;
                    self.ready.push_back(Ok(ev));
                }
            }
            ReplayMsg::End { .. } | ReplayMsg::Failed(_) => {
                if let ReplayMsg::Failed(e) = &msg {
                    tracing::debug!("healing from the log failed: {e}");
                }
                let Some(h) = self.heal.take() else {
                    return Poll::Ready(());
                };
                if h.next > h.first {
                    self.healed_log.push(Healed {
                        topic: h.topic.clone(),
                        count: h.next - h.first,
                        first_seq: h.first,
                        last_seq: h.next - 1,
                    });
                }
                if h.next <= h.last {
                    self.ready.push_back(Err(Error::Gap {
                        topic: h.topic.clone(),
                        missed: h.last - h.next + 1,
                        expected: h.next,
                        got: h.last + 1,
                    }));
                }
                if let Some(ev) = h.held {
                    self.ready.push_back(Ok(ev));
                }
            }
        }
        Poll::Ready(())
    }

    fn poll_replay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(p) = self.replay.as_mut() else {
            return Poll::Ready(());
        };
        // Keep taking live events so the I/O thread never stalls on this subscription.
        while let Ok(batch) = self.rx.try_recv() {
            for ev in batch {
                p.live.push_back(ev);
                if p.live.len() > LIVE_BUFFER {
                    if let Some(old) = p.live.pop_front() {
                        let o = old.layout.meta.offset;
                        if old.layout.meta.kind != KIND_BEACON && o != UNLOGGED_OFFSET {
                            p.live_floor = p.live_floor.max(o + 1);
                        }
                    }
                }
            }
        }
        let msg = match p.feed.poll_msg(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(m) => m,
        };
        match msg {
            ReplayMsg::Started { .. } => {}
            ReplayMsg::Batch { events } => {
                for ev in events {
                    self.accept_replayed(ev);
                }
            }
            ReplayMsg::End { end } if p.live_floor > end => {
                // Live events in `end..live_floor` were dropped from the buffer: replay them.
                let request = ReplayRequest {
                    filters: p.filters.clone(),
                    from: ReplayFrom::Offset(end),
                    until: Some(p.live_floor),
                    credit: 0,
                    durable: None,
                };
                match self.client.replay_handle().and_then(|h| h.start(request)) {
                    Ok(feed) => p.feed = feed,
                    Err(e) => {
                        self.ready.push_back(Err(e));
                        self.hand_over(end);
                    }
                }
            }
            ReplayMsg::End { end } => self.hand_over(end),
            ReplayMsg::Failed(e) => {
                // Go live anyway; sequence checks (and healing) cover what the replay missed.
                self.ready.push_back(Err(e));
                self.hand_over(0);
            }
        }
        Poll::Ready(())
    }

    /// End the replay phase: live events below `end` were replayed and are skipped.
    fn hand_over(&mut self, end: u64) {
        if let Some(p) = self.replay.take() {
            self.skip_below = end;
            let mut live: Vec<WireEvent> = p.live.into();
            live.extend(std::mem::take(&mut self.batch));
            self.batch = live.into_iter();
        }
    }

    fn poll_wire(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WireEvent>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.heal.is_some() {
                match self.poll_heal(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => continue,
                }
            }
            if self.replay.is_some() {
                match self.poll_replay(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => continue,
                }
            }
            if let Some(ev) = self.batch.next() {
                self.accept_live(ev);
                continue;
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for RawSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSubscription")
            .field("id", &self.id)
            .finish()
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.raw.id)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl Stream for RawSubscription {
    type Item = Result<RawEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_wire(cx)
            .map(|o| o.map(|r| r.map(|wire| RawEvent { wire })))
    }
}

impl Drop for RawSubscription {
    fn drop(&mut self) {
        self.client
            .io
            .try_send(Command::Unsubscribe { id: self.id });
    }
}

/// A stream of typed [`Event`]s. Items are `Err` for events that do not decode as `T`
/// ([`Error::Decode`], naming topic and offset) and for gaps ([`Error::Gap`]); the stream
/// goes on after either.
pub struct Subscription<T> {
    raw: RawSubscription,
    scratch: Vec<u8>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Subscription<T> {
    pub(crate) fn new(raw: RawSubscription) -> Subscription<T> {
        Subscription {
            raw,
            scratch: vec![0; 4096],
            _type: PhantomData,
        }
    }

    /// Acknowledge every event up to and including `offset` (durable subscriptions only);
    /// see [`RawSubscription::ack`].
    pub async fn ack(&self, offset: u64) -> Result<()> {
        self.raw.ack(offset).await
    }

    /// How many missed events were recovered from the broker's log so far.
    pub fn healed(&self) -> u64 {
        self.raw.healed()
    }

    /// The gaps healed since the last call, oldest first.
    pub fn take_healed(&mut self) -> Vec<Healed> {
        self.raw.take_healed()
    }

    /// The durable subscription's name, if this is one.
    pub fn durable_name(&self) -> Option<&str> {
        self.raw.durable_name()
    }
}

impl<T: DeserializeOwned> Stream for Subscription<T> {
    type Item = Result<Event<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.raw.poll_wire(cx) {
            Poll::Ready(Some(Ok(wire))) => {
                let raw = RawEvent { wire };
                let item = raw.decode_with(&mut this.scratch).map(|payload| Event {
                    time: raw.time(),
                    offset: raw.offset(),
                    seq: raw.seq(),
                    topic: raw.topic().to_string(),
                    payload,
                });
                Poll::Ready(Some(item))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
