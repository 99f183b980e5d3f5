//! The tuple space's events on their way to `$space.*` topics (JavaSpaces' `notify` done
//! with the bus): whoever observes the space pushes (topic, CBOR tuple) through a
//! [`SpaceEventSender`]; the dispatcher drains the [`SpaceEvents`] end and publishes them
//! unlogged. Nothing is encoded or queued while no subscription covers `$space.`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// Events queued for the dispatcher, at most: if it falls this far behind, events are
/// dropped (and logged) rather than blocking the space.
const QUEUE: usize = 65_536;

/// The observer's end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SpaceEventSender {
    tx: SyncSender<(&'static str, Vec<u8>)>,
    ringer: Arc<UnixStream>,
    pending: Arc<AtomicBool>,
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
        if !self.pending.swap(true, Ordering::SeqCst) {
            // A full socket buffer means the dispatcher has bytes to read already.
            let _ = (&*self.ringer).write(&[1]);
        }
        true
    }
}

/// The dispatcher's end.
pub struct SpaceEvents {
    rx: Receiver<(&'static str, Vec<u8>)>,
    bell: UnixStream,
    /// The sender's end of the bell, to ring it again after a drain cut short (a byte
    /// written on `bell` itself would go to the other end, and the dispatcher would sleep
    /// on events already queued).
    ringer: Arc<UnixStream>,
    /// Set by the sender when it rings; cleared by the dispatcher before it drains.
    pending: Arc<AtomicBool>,
    /// Whether any subscription covers `$space.`: the sender's [`SpaceEventSender::wanted`].
    wanted: Arc<AtomicBool>,
}

impl SpaceEvents {
    /// A connected pair.
    pub fn channel() -> std::io::Result<(SpaceEventSender, SpaceEvents)> {
        let (tx, rx) = sync_channel(QUEUE);
        let (bell, ringer) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        ringer.set_nonblocking(true)?;
        let pending = Arc::new(AtomicBool::new(false));
        let wanted = Arc::new(AtomicBool::new(false));
        let ringer = Arc::new(ringer);
        let sender = SpaceEventSender {
            tx,
            ringer: ringer.clone(),
            pending: pending.clone(),
            wanted: wanted.clone(),
        };
        Ok((
            sender,
            SpaceEvents {
                rx,
                bell,
                ringer,
                pending,
                wanted,
            },
        ))
    }

    /// The descriptor to poll: readable when events are waiting.
    pub(crate) fn fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    /// Take up to `max` waiting events. If `max` were reached, the bell is rung again so
    /// the next poll looks again.
    pub(crate) fn drain(&self, max: usize) -> Vec<(&'static str, Vec<u8>)> {
        let mut buf = [0u8; 64];
        while matches!((&self.bell).read(&mut buf), Ok(n) if n > 0) {}
        self.pending.store(false, Ordering::SeqCst);
        let batch: Vec<_> = self.rx.try_iter().take(max).collect();
        if batch.len() == max {
            let _ = (&*self.ringer).write(&[1]);
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

    #[test]
    fn events_flow_only_in_order_and_ring_once() {
        let (tx, rx) = SpaceEvents::channel().unwrap();
        assert!(!tx.wanted());
        rx.set_wanted(true);
        assert!(tx.wanted());
        assert!(tx.send("$space.out", vec![1]));
        assert!(tx.send("$space.take", vec![2]));
        // One ring for both: a pending ring is not repeated.
        let mut buf = [0u8; 8];
        assert_eq!((&rx.bell).read(&mut buf).unwrap(), 1);
        assert!((&rx.bell).read(&mut buf).is_err(), "only one byte rung");
        rx.pending.store(true, Ordering::SeqCst);
        let got = rx.drain(10);
        assert_eq!(got, vec![("$space.out", vec![1]), ("$space.take", vec![2])]);
        assert!(!rx.pending.load(Ordering::SeqCst));
    }

    #[test]
    fn a_drain_cut_short_rings_again() {
        let (tx, rx) = SpaceEvents::channel().unwrap();
        for i in 0..3 {
            assert!(tx.send("$space.out", vec![i]));
        }
        assert_eq!(rx.drain(2).len(), 2);
        let mut buf = [0u8; 8];
        assert!((&rx.bell).read(&mut buf).is_ok(), "rung for the rest");
        assert_eq!(rx.drain(2).len(), 1);
    }
}
