//! The fast path: a publish is checked (header, topic, size, producer sequence), stamped with
//! offset, topic sequence and time, handed to the log writer's batch, and sent on the events
//! socket. A publish with the ROOM flag (what the SDK sends) becomes the event inside the
//! received message, which goes on as it is; any other is copied into a new event message.
//!
//! [`Egress`] owns the events socket. It runs with `ZMQ_XPUB_NODROP`, so a full subscriber
//! queue pushes back instead of losing events; if one subscriber stays full for longer than
//! `slow_consumer_timeout`, the socket turns lossy for a while so the others are served, and
//! those sends count as `dropped` (the slow subscriber's SDK sees the sequence gap). Stamped
//! events go out in bursts of up to [`SEND_BURST`], and at once when the request queue runs
//! dry.
//!
//! Everything here runs once per event: no allocation, hashing or indirection is added
//! lightly (a known topic is one hash lookup; its state, counters included, is one entry).

use std::time::{Duration, Instant};

use super::beacons::BeaconSchedule;
use super::confirms::PendingConfirm;
use super::producers::Check;
use super::stats::TopicCounters;
use super::subscriptions::Fanout;
use super::{set_raw_int_option, Dispatcher, ReplyTo};
use crate::frame::Frame;
use agora_storage::log::{LogError, Record};
use agora_wire::bus::{
    self as protocol, ErrorCode, Header, Meta, FLAG_ACK, FLAG_BATCH_ACKS, FLAG_CONFIRM,
    FLAG_PRODUCER, FLAG_ROOM, KIND_EVENT, PUBLISH_ROOM,
};
use agora_wire::socket::ReplyAddress;
use agora_wire::topic::{validate_topic, MAX_TOPIC_LEN};

/// Events sent to the events socket together, at most. Sent one by one as they were
/// stamped, each event found the I/O thread idle and woke it, each wake-up preempting this
/// thread; sent in bursts, the I/O thread finds a run of them per wake-up. Larger bursts
/// gain nothing more. They wait a few microseconds at most: a burst is also sent whenever the
/// request queue runs dry, and before anything else goes out on the socket.
pub(super) const SEND_BURST: usize = 32;

/// Per-topic state: the sequence counter, and each feature's part.
pub(super) struct TopicState {
    pub(super) seq: u64,
    pub(super) counters: TopicCounters,
    pub(super) fanout: Fanout,
    pub(super) beacon: BeaconSchedule,
}

impl TopicState {
    /// A topic whose last sequence is `seq` (0: new).
    pub(super) fn new(seq: u64) -> TopicState {
        TopicState {
            seq,
            counters: TopicCounters::new(),
            fanout: Fanout::new(),
            beacon: BeaconSchedule::new(seq),
        }
    }
}

/// How a stamped event reaches the events socket.
#[derive(Clone, Copy, Debug)]
pub(super) enum Forward {
    /// Encoded into a new message (topic, meta and a copy of the payload).
    Copy,
    /// The publish frame itself (a [`FLAG_ROOM`] publish, the request's frame at this index)
    /// becomes the event in place and is sent on.
    InPlace { frame_index: usize },
}

/// A stamped ROOM publish waiting to become its event (see `Dispatcher::forward_in_place`).
pub(super) struct InPlace {
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

impl<S: agora_storage::EventStore + 'static> Dispatcher<S> {
    /// Check, stamp, log, forward. `inline` is the publish frame after its header.
    ///
    /// `frame_index` is the publish frame's index among the request's frames: a
    /// [`FLAG_ROOM`] publish is forwarded as that very frame (see `forward_in_place`).
    pub(super) fn publish(
        &mut self,
        reply: &ReplyTo<'_>,
        header: Header,
        inline: &[u8],
        frame_index: usize,
    ) {
        let (producer, inline) = if header.flags & FLAG_PRODUCER != 0 {
            match protocol::split_producer(inline) {
                Ok(p) => (Some(p.0), p.1),
                Err(e) => {
                    self.stats.reject();
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
                    self.stats.reject();
                    return self.error_reply(reply, e.code(), &e.to_string());
                }
            }
        } else {
            inline
        };
        let (topic, payload) = match protocol::split_topic(inline, MAX_TOPIC_LEN) {
            Ok(parts) => parts,
            Err(e) => {
                self.stats.reject();
                return self.error_reply(reply, ErrorCode::BadTopic, &e.to_string());
            }
        };
        let topic_index = self.topic_index.get(topic).copied();
        let topic_str = match topic_index {
            // SAFETY: every key of `self.topic_index` was made from a `&str` (a topic that
            // passed `validate_topic`, or one recovered from the log as a `String`), so it is
            // UTF-8. A known topic skips the check, a large share of the per-event work.
            Some(_) => unsafe { std::str::from_utf8_unchecked(topic) },
            None => match validate_topic(topic) {
                Ok(t) => t,
                Err(e) => {
                    self.stats.reject();
                    return self.error_reply(reply, ErrorCode::BadTopic, &e.to_string());
                }
            },
        };
        if topic[0] == b'$' {
            self.stats.reject();
            let msg = format!(
                "topic `{}` is reserved: topics starting with `$` belong to the broker",
                String::from_utf8_lossy(topic)
            );
            return self.error_reply(reply, ErrorCode::BadTopic, &msg);
        }
        if payload.len() > self.config.max_payload {
            self.stats.reject();
            let msg = format!(
                "payload is {} bytes, the maximum is {} bytes",
                payload.len(),
                self.config.max_payload
            );
            return self.error_reply(reply, ErrorCode::PayloadTooLarge, &msg);
        }

        if let Some((id, pseq)) = producer {
            match self.producers.check(id, pseq, self.received_at_ns) {
                Check::Fresh => {}
                Check::Retry { offset, seq } => {
                    return self.duplicate(reply, header, pseq, offset, seq);
                }
                Check::Gap { expected } => {
                    self.stats.reject();
                    let msg =
                        format!("producer {id:016x} sequence gap: expected {expected}, got {pseq}");
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
            self.confirms
                .push(pending_confirm(reply, header, offset, seq));
        } else if header.flags & FLAG_ACK != 0 {
            // An ack says the event is out: a subscriber that subscribes after it never gets
            // the event. A ROOM publish's event is sent after this returns (see
            // `forward_in_place`), so its ack is sent then; every reply flushes the burst queue.
            match self.forward_in_place.as_mut() {
                Some(f) => {
                    f.ack = Some(ReplyLater {
                        delimited: reply.address.delimited,
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

    /// Answer a producer's retry (`pseq`) of an event it already published, stamped with
    /// `offset` and `seq` (if known). A confirmed retry is answered once the original is
    /// durable.
    fn duplicate(&mut self, reply: &ReplyTo<'_>, header: Header, pseq: u64, offset: u64, seq: u64) {
        tracing::debug!(pseq, "duplicate publish dropped");
        if header.flags & (FLAG_ACK | FLAG_CONFIRM) == 0 {
            return;
        }
        let durable = self.durable_offset();
        if header.flags & FLAG_CONFIRM != 0
            && offset != protocol::UNKNOWN_OFFSET
            && offset >= durable
        {
            self.confirms
                .push_retry(pending_confirm(reply, header, offset, seq));
            return;
        }
        let ack = protocol::encode_publish_ack(offset, seq);
        self.ok_reply(reply, &[&ack]);
    }

    /// Stamp an event with the next offset, its topic's next sequence and the time, append it
    /// to the log, and send it to subscribers (or leave that to `drain_requests`, see
    /// [`Forward::InPlace`]). `topic` comes with its index in `self.topics` if the caller has
    /// looked it up. Returns `(offset, seq)`.
    pub(super) fn append_and_forward(
        &mut self,
        (topic, topic_index): (&str, Option<usize>),
        payload: &[u8],
        content_type: u8,
        producer: Option<(u64, u64)>,
        forward: Forward,
        received_at_ns: u64,
    ) -> Result<(u64, u64), LogError> {
        if self.log.failed() {
            return Err(LogError::Failed);
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
            return Err(LogError::RecordTooLarge {
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
                self.topics.push((Box::from(topic), TopicState::new(0)));
                self.topics.len() - 1
            }
        };
        let state = &mut self.topics[index].1;
        let seq = state.seq + 1;
        state.seq = seq;
        let fanout = self.subscriptions.fanout(&mut state.fanout, topic_bytes);
        self.stats.event(&mut state.counters, fanout);
        self.uncommitted = true;
        self.next_offset += 1;
        self.last_time_ns = time_ns;
        if let Some((id, pseq)) = producer {
            self.producers.stamped(id, pseq, offset, seq, time_ns);
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

    /// Turn a stamped ROOM publish (the request's frame `stamped.frame_index`) into its event
    /// and forward it, then send its ack if it asked for one.
    pub(super) fn send_in_place(&mut self, frames: &mut [Frame], stamped: InPlace) {
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
                address: ReplyAddress {
                    identity: frames[0].as_slice(),
                    delimited: later.delimited,
                },
                request_id: later.request_id,
            };
            let ack = protocol::encode_publish_ack(meta.offset, meta.seq);
            self.ok_reply(&to, &[&ack]);
        }
    }

    /// Send a stamped event frame to subscribers, and to the log at the next commit.
    pub(super) fn forward_logged(&mut self, frame: &mut Frame, producer: Option<(u64, u64)>) {
        self.log_batch.push(frame, producer);
        if self.log_batch.is_full() {
            self.commit();
        }
        self.egress.queue(frame);
    }
}

/// The events socket and its delivery state: one place that turns (topic, meta, payload) into
/// an event frame and gets it out.
pub(super) struct Egress {
    pub(super) xpub: zmq::Socket,
    /// Set while a slow subscriber has made the socket lossy.
    lossy_until: Option<Instant>,
    slow_timeout: Duration,
    /// Events sent while lossy (a slow subscriber may have missed them).
    pub(super) dropped: u64,
    /// The socket has been lossy at least once (so a pipe may still be out of the fan-out).
    was_lossy: bool,
    /// [`SEND_BURST`] frames: the first `queued` hold events stamped but not yet sent (see
    /// [`Egress::queue`]), the rest are empty.
    burst: Vec<Frame>,
    queued: usize,
}

impl Egress {
    /// The events socket, lossless, waiting at most `slow_timeout` for a full subscriber.
    pub(super) fn new(xpub: zmq::Socket, slow_timeout: Duration) -> Egress {
        Egress {
            xpub,
            lossy_until: None,
            slow_timeout,
            dropped: 0,
            was_lossy: false,
            burst: (0..SEND_BURST).map(|_| Frame::new()).collect(),
            queued: 0,
        }
    }

    /// Whether sends are lossless now (no slow subscriber is being sent past).
    pub(super) fn is_lossless(&self) -> bool {
        self.lossy_until.is_none()
    }

    /// Whether the socket has ever been lossy.
    pub(super) fn was_lossy(&self) -> bool {
        self.was_lossy
    }

    /// Send one event, waiting for a full subscriber queue at most `slow_timeout` before
    /// sending past it.
    pub(super) fn send(&mut self, topic: &[u8], meta: &Meta, payload: &[u8]) {
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
    pub(super) fn flush(&mut self) {
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

/// The confirm a publish (or its retry) from `reply` waits with until `offset` is durable.
fn pending_confirm(reply: &ReplyTo<'_>, header: Header, offset: u64, seq: u64) -> PendingConfirm {
    PendingConfirm {
        offset,
        seq,
        address: reply.address.to_owned(),
        request_id: reply.request_id,
        // A REQ socket takes one reply per request; it cannot use batches.
        batched: header.flags & FLAG_BATCH_ACKS != 0 && !reply.address.delimited,
    }
}
