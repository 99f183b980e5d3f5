//! The tuple space's events on their way to `$space.*` topics (JavaSpaces' `notify` done
//! with the bus): whoever observes the space pushes (topic, CBOR tuple) through a
//! [`SpaceEventSender`]; the dispatcher drains the [`SpaceEvents`] end and publishes them
//! unlogged. Nothing is encoded or queued while no subscription covers `$space.`.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use agora_wire::socket::{doorbell, Bell, Ringer};

/// Events queued for the dispatcher, at most: if it falls this far behind, events are
/// dropped (and logged) rather than blocking the space.
const QUEUE: usize = 65_536;

/// The observer's end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SpaceEventSender {
    tx: SyncSender<(&'static str, Vec<u8>)>,
    ringer: Ringer,
    wanted: Arc<AtomicBool>,
}

impl SpaceEventSender {
    /// Whether any subscriber would receive a `$space.*` event now: the observer skips the
    /// encoding when not.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Queue one event on `topic` (a `$space.` topic) and wake the dispatcher if it is not
    /// already due to look. Returns `false` (and the event is lost) when the queue is full.
    pub fn send(&self, topic: &'static str, payload: Vec<u8>) -> bool {
        match self.tx.try_send((topic, payload)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => return false,
        }
        self.ringer.ring();
        true
    }
}

/// The dispatcher's end.
pub struct SpaceEvents {
    rx: Receiver<(&'static str, Vec<u8>)>,
    /// Armed except between a ring and the drain that follows it: one byte per drain at
    /// most, however many events arrive.
    bell: Bell,
    /// To ring again after a drain cut short (a byte written on the bell's own end would go
    /// to the other end, and the dispatcher would sleep on events already queued).
    ringer: Ringer,
    /// Whether any subscription covers `$space.`: the sender's [`SpaceEventSender::wanted`].
    wanted: Arc<AtomicBool>,
}

impl SpaceEvents {
    /// A connected pair.
    pub fn channel() -> std::io::Result<(SpaceEventSender, SpaceEvents)> {
        let (tx, rx) = sync_channel(QUEUE);
        let (ringer, bell) = doorbell()?;
        bell.arm();
        let wanted = Arc::new(AtomicBool::new(false));
        let sender = SpaceEventSender {
            tx,
            ringer: ringer.clone(),
            wanted: wanted.clone(),
        };
        Ok((
            sender,
            SpaceEvents {
                rx,
                bell,
                ringer,
                wanted,
            },
        ))
    }

    /// The descriptor to poll: readable when events are waiting.
    pub(crate) fn fd(&self) -> RawFd {
        self.bell.fd()
    }

    /// Take up to `max` waiting events. If `max` were reached, the bell is rung again so
    /// the next poll looks again.
    pub(crate) fn drain(&self, max: usize) -> Vec<(&'static str, Vec<u8>)> {
        self.bell.wake();
        self.bell.arm();
        let batch: Vec<_> = self.rx.try_iter().take(max).collect();
        if batch.len() == max {
            self.ringer.knock();
        }
        batch
    }

    /// Tell the sender whether anyone subscribes to `$space.` events.
    pub(crate) fn set_wanted(&self, wanted: bool) {
        self.wanted.store(wanted, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(rx: &SpaceEvents) -> bool {
        agora_wire::socket::poll_in([rx.fd()], 0).unwrap()[0]
    }

    #[test]
    fn events_flow_only_in_order_and_ring_once() {
        let (tx, rx) = SpaceEvents::channel().unwrap();
        assert!(!tx.wanted());
        rx.set_wanted(true);
        assert!(tx.wanted());
        assert!(tx.send("$space.out", vec![1]));
        assert!(tx.send("$space.take", vec![2]));
        // One ring for both: a pending ring is not repeated.
        assert!(readable(&rx));
        assert!(rx.bell.rang());
        let got = rx.drain(10);
        assert_eq!(got, vec![("$space.out", vec![1]), ("$space.take", vec![2])]);
        assert!(!readable(&rx), "drained");
        assert!(!rx.bell.rang(), "armed again");
    }

    #[test]
    fn a_drain_cut_short_rings_again() {
        let (tx, rx) = SpaceEvents::channel().unwrap();
        for i in 0..3 {
            assert!(tx.send("$space.out", vec![i]));
        }
        assert_eq!(rx.drain(2).len(), 2);
        assert!(readable(&rx), "rung for the rest");
        assert_eq!(rx.drain(2).len(), 1);
    }
}
