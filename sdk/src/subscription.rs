//! Subscriptions: streams of events, typed ([`Subscription`]) or raw ([`RawSubscription`]).
//!
//! Both watch each topic's sequence numbers: a jump yields an [`Error::Gap`] item that says
//! how many events were missed on which topic, before the event that revealed it. A sequence
//! that goes backwards means the broker restarted without its log, and is taken as a restart,
//! not a gap.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_bus::protocol::{ContentType, KIND_BEACON};
use futures_core::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::client::ClientInner;
use crate::error::{Error, Result};
use crate::io::{Command, WireEvent};

/// A typed event as a subscriber receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<T> {
    /// The topic it was published on.
    pub topic: String,
    /// Its position in the broker's log (global, increasing).
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
    /// Its position in the broker's log.
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
            message: e.to_string(),
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

/// A stream of [`RawEvent`]s; items are `Err` for gaps. Dropping it unsubscribes.
pub struct RawSubscription {
    id: u64,
    rx: mpsc::Receiver<Vec<WireEvent>>,
    batch: std::vec::IntoIter<WireEvent>,
    /// The event that revealed a gap, delivered right after the gap item.
    held: Option<WireEvent>,
    last_seq: HashMap<String, u64>,
    client: Arc<ClientInner>,
}

impl RawSubscription {
    pub(crate) fn new(
        id: u64,
        rx: mpsc::Receiver<Vec<WireEvent>>,
        client: Arc<ClientInner>,
    ) -> RawSubscription {
        RawSubscription {
            id,
            rx,
            batch: Vec::new().into_iter(),
            held: None,
            last_seq: HashMap::new(),
            client,
        }
    }

    /// Check the sequence of `ev`: `Some(gap)` if events before it were missed.
    ///
    /// A beacon carries the topic's latest sequence: if it is ahead of what was seen, the
    /// events in between were lost at the tail of a burst (`got` is then the sequence the next
    /// event will carry).
    fn check_gap(&mut self, ev: &WireEvent) -> Option<Error> {
        let seq = ev.layout.meta.seq;
        if seq == 0 {
            return None; // unsequenced (broker-internal) event
        }
        let beacon = ev.layout.meta.kind == KIND_BEACON;
        match self.last_seq.get_mut(ev.topic()) {
            Some(last) => {
                let expected = *last + 1;
                let next = if beacon { seq + 1 } else { seq };
                if beacon && seq < *last {
                    return None; // an old beacon, or a broker restarted without its log
                }
                *last = seq;
                (next > expected).then(|| Error::Gap {
                    topic: ev.topic().to_string(),
                    missed: next - expected,
                    expected,
                    got: next,
                })
            }
            None => {
                self.last_seq.insert(ev.topic().to_string(), seq);
                None
            }
        }
    }

    fn poll_wire(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WireEvent>>> {
        if let Some(ev) = self.held.take() {
            return Poll::Ready(Some(Ok(ev)));
        }
        loop {
            if let Some(ev) = self.batch.next() {
                if ev.layout.meta.kind == KIND_BEACON {
                    match self.check_gap(&ev) {
                        Some(gap) => return Poll::Ready(Some(Err(gap))),
                        None => continue,
                    }
                }
                if let Some(gap) = self.check_gap(&ev) {
                    self.held = Some(ev);
                    return Poll::Ready(Some(Err(gap)));
                }
                return Poll::Ready(Some(Ok(ev)));
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
