//! The small pieces every thread that owns a ZeroMQ socket shares, broker and SDK alike: a
//! [`doorbell`] that wakes it from other threads, [`poll_in`] to sleep on a socket's and a
//! doorbell's descriptors, the [`ReplyAddress`] a `ROUTER` answers a client at (and
//! [`send_routed`]), and a [`PendingReplies`] table of requests waiting for an answer with
//! their deadlines. Pieces, not a framework: each loop keeps its own shape.

use std::collections::{BinaryHeap, HashMap};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A connected doorbell: other threads hold the [`Ringer`] (cheap to clone), the socket's
/// thread polls the [`Bell`]'s descriptor next to its sockets (`zmq::PollItem::from_fd` or
/// poll(2)).
///
/// A ring writes one byte only while the bell is *armed*, so a burst of commands costs one
/// wake-up, not one per command. The owning thread arms the bell when it is about to sleep,
/// looks at its queues once more (a command sent before the arm rang nothing; if there is one,
/// it [`Bell::disarm`]s and carries on), sleeps in poll, then [`Bell::wake`]s: disarm and drain. A bell that should ring at any time (a server
/// waking for each new batch) is armed again right after each wake.
pub fn doorbell() -> std::io::Result<(Ringer, Bell)> {
    let (ringer, bell) = UnixStream::pair()?;
    ringer.set_nonblocking(true)?;
    bell.set_nonblocking(true)?;
    let armed = Arc::new(AtomicBool::new(false));
    Ok((
        Ringer {
            stream: Arc::new(ringer),
            armed: armed.clone(),
        },
        Bell {
            stream: bell,
            armed,
        },
    ))
}

/// The end other threads ring.
#[derive(Clone, Debug)]
pub struct Ringer {
    stream: Arc<UnixStream>,
    armed: Arc<AtomicBool>,
}

impl Ringer {
    /// Wake the thread if its bell is armed (it is asleep, or about to be).
    pub fn ring(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.knock();
        }
    }

    /// Wake the thread whether or not the bell is armed: for news it must see even while
    /// busy, such as "stop" or "the last handle is gone".
    pub fn knock(&self) {
        // WouldBlock means bytes are already waiting: the thread wakes anyway.
        let _ = (&*self.stream).write(&[1]);
    }
}

/// The end the socket's thread polls.
#[derive(Debug)]
pub struct Bell {
    stream: UnixStream,
    armed: Arc<AtomicBool>,
}

impl Bell {
    /// The descriptor to poll for `POLLIN`.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Let the next [`Ringer::ring`] write: call before the last look at the queues that
    /// precedes a sleep.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The last look at the queues found work: the thread stays up, so rings need not
    /// write (one that already did left a byte, which the next poll sees at once).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// After poll returned: disarm and read every byte waiting, so the next poll sleeps
    /// until a new ring.
    pub fn wake(&self) {
        self.armed.store(false, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        // A read that does not fill the buffer emptied the stream: no second read (an
        // EAGAIN syscall) to learn it.
        while matches!((&self.stream).read(&mut buf), Ok(n) if n == buf.len()) {}
    }

    /// Whether a ring came since the bell was last armed (its byte may still be unread):
    /// for a loop that keeps its bell armed while it works and checks it between polls.
    pub fn rang(&self) -> bool {
        !self.armed.load(Ordering::SeqCst)
    }

    /// Whether any ringer is still connected (false once every [`Ringer`] is dropped and the
    /// bytes waiting are read).
    pub fn is_orphaned(&self) -> bool {
        let mut buf = [0u8; 1];
        matches!((&self.stream).read(&mut buf), Ok(0))
    }
}

/// Sleep in poll(2) until one of `fds` is readable (or hung up, or in error: a read will
/// tell) or `timeout_ms` passes (-1: no timeout); returns which are. For a ZeroMQ socket pass
/// its `ZMQ_FD` and check its `ZMQ_EVENTS` after waking (the descriptor only signals that
/// something changed). A plain poll(2) because `zmq::poll` adds a non-blocking pass and a
/// `ZMQ_EVENTS` query per socket before and after: up to five more syscalls per wake-up, on
/// loops whose latency is a few wake-ups. An interrupted call is `ErrorKind::Interrupted`.
pub fn poll_in<const N: usize>(fds: [RawFd; N], timeout_ms: i32) -> std::io::Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `pollfds` is a valid, writable array of `pollfd` of the length given, alive for
    // the duration of the call.
    let rc = unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pollfds.map(|p| p.revents != 0))
}

/// Where a `ROUTER` answers a client: the peer's routing identity, and whether the client's
/// requests carried an empty delimiter frame (a `REQ` socket does; a `DEALER` need not),
/// which the reply must carry too. Owned (`Vec<u8>`, kept while a request waits) or borrowed
/// from the received frames (`&[u8]`, on a hot path that answers at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplyAddress<I = Vec<u8>> {
    /// The routing identity frame the `ROUTER` received first.
    pub identity: I,
    /// An empty frame followed the identity.
    pub delimited: bool,
}

impl<I: AsRef<[u8]>> ReplyAddress<I> {
    /// The same address, borrowed.
    pub fn as_ref(&self) -> ReplyAddress<&[u8]> {
        ReplyAddress {
            identity: self.identity.as_ref(),
            delimited: self.delimited,
        }
    }

    /// The same address, owned (to keep while a request waits).
    pub fn to_owned(&self) -> ReplyAddress {
        ReplyAddress {
            identity: self.identity.as_ref().to_vec(),
            delimited: self.delimited,
        }
    }
}

impl ReplyAddress {
    /// Split the address off a received request: the identity, then an empty delimiter if
    /// the next frame is empty (a header is never empty). The frames after them may be none
    /// (a malformed request, answered at that address). `None` if there is no frame at all.
    pub fn split<T: AsRef<[u8]>>(frames: &[T]) -> Option<(ReplyAddress, &[T])> {
        let (identity, rest) = frames.split_first()?;
        let delimited = rest.first().is_some_and(|f| f.as_ref().is_empty());
        let rest = if delimited { &rest[1..] } else { rest };
        Some((
            ReplyAddress {
                identity: identity.as_ref().to_vec(),
                delimited,
            },
            rest,
        ))
    }
}

/// Send `identity ‖ [empty delimiter] ‖ header ‖ body…` to `to` on a `ROUTER` without
/// blocking: the one way the broker's threads address a client. Only the first frame can fail
/// (EAGAIN: the peer's queue is full; EHOSTUNREACH: it is gone, with `ROUTER_MANDATORY`), and
/// then nothing was sent; after it the rest of the message always goes through.
pub fn send_routed(
    router: &zmq::Socket,
    to: ReplyAddress<&[u8]>,
    header: &[u8],
    body: &[&[u8]],
) -> Result<(), zmq::Error> {
    router.send(to.identity, zmq::SNDMORE | zmq::DONTWAIT)?;
    if to.delimited {
        router.send(&b""[..], zmq::SNDMORE | zmq::DONTWAIT)?;
    }
    let more = if body.is_empty() { 0 } else { zmq::SNDMORE };
    router.send(header, more | zmq::DONTWAIT)?;
    for (i, part) in body.iter().enumerate() {
        let more = if i + 1 < body.len() { zmq::SNDMORE } else { 0 };
        router.send(*part, more | zmq::DONTWAIT)?;
    }
    Ok(())
}

/// Requests waiting for their answers, by request id, each with a deadline: the table a
/// client's I/O thread matches replies against, and a server's blocked requests.
/// [`PendingReplies::expired`] hands back those whose deadline passed, oldest deadline
/// first, in time proportional to their number (a heap of deadlines; entries removed
/// earlier are skipped when they surface).
#[derive(Debug)]
pub struct PendingReplies<T> {
    entries: HashMap<u64, (Option<Instant>, T)>,
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
}

impl<T> Default for PendingReplies<T> {
    fn default() -> Self {
        PendingReplies {
            entries: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }
}

impl<T> PendingReplies<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait for `id` until `deadline`. An entry already there for `id` is replaced and
    /// returned.
    pub fn insert(&mut self, id: u64, deadline: Instant, value: T) -> Option<T> {
        self.deadlines.push(std::cmp::Reverse((deadline, id)));
        self.entries
            .insert(id, (Some(deadline), value))
            .map(|(_, v)| v)
    }

    /// Wait for `id` with no deadline (until it is answered or removed). An entry already
    /// there for `id` is replaced and returned.
    pub fn insert_without_deadline(&mut self, id: u64, value: T) -> Option<T> {
        // Its old deadline, if any, is left in the heap and skipped as stale.
        self.entries.insert(id, (None, value)).map(|(_, v)| v)
    }

    /// The answer for `id` came (or it was cancelled): stop waiting for it.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let v = self.entries.remove(&id).map(|(_, v)| v);
        if self.entries.is_empty() {
            self.deadlines.clear();
        } else if self.deadlines.len() > 2 * self.entries.len() + 64 {
            // Answered entries leave their deadlines behind until those reach the top; one
            // long wait would keep every deadline pushed meanwhile. Rebuild from the live
            // ones once stale ones outnumber them (amortised: at least as many removes as
            // entries rebuilt).
            self.deadlines = self
                .entries
                .iter()
                .filter_map(|(id, (at, _))| at.map(|at| std::cmp::Reverse((at, *id))))
                .collect();
        }
        v
    }

    /// The entry for `id`, if it still waits.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|(_, v)| v)
    }

    /// The entry for `id`, if it still waits.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.entries.get(&id).map(|(_, v)| v)
    }

    /// Every entry still waiting, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.entries.iter().map(|(id, (_, v))| (*id, v))
    }

    /// Whether `id` still waits.
    pub fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest deadline of an entry still waiting (to bound a poll's sleep).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(std::cmp::Reverse((at, id))) = self.deadlines.peek().copied() {
            match self.entries.get(&id) {
                Some((Some(deadline), _)) if *deadline == at => return Some(at),
                _ => {
                    self.deadlines.pop();
                }
            }
        }
        None
    }

    /// Remove and return every entry whose deadline is at or before `now`, earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some(at) = self.next_deadline() {
            if at > now {
                break;
            }
            let Some(std::cmp::Reverse((_, id))) = self.deadlines.pop() else {
                break;
            };
            if let Some((_, v)) = self.entries.remove(&id) {
                out.push((id, v));
            }
        }
        out
    }

    /// Remove and return every entry (the connection is gone), in no particular order.
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, T)> + '_ {
        self.deadlines.clear();
        self.entries.drain().map(|(id, (_, v))| (id, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_ring_wakes_only_an_armed_bell_and_once() {
        let (ringer, bell) = doorbell().unwrap();
        let readable = |bell: &Bell| {
            let mut fds = [zmq::PollItem::from_fd(bell.fd(), zmq::POLLIN)];
            zmq::poll(&mut fds, 0).unwrap() == 1
        };
        ringer.ring();
        assert!(!readable(&bell), "not armed: no byte");
        bell.arm();
        ringer.ring();
        ringer.clone().ring();
        assert!(readable(&bell));
        bell.wake();
        assert!(
            !readable(&bell),
            "one ring drained, the second wrote nothing"
        );
        ringer.knock();
        assert!(readable(&bell), "a knock needs no arm");
        bell.wake();
        bell.arm();
        bell.disarm();
        ringer.ring();
        assert!(!readable(&bell), "disarmed: no byte");
        for _ in 0..200 {
            ringer.knock();
        }
        bell.wake();
        assert!(!readable(&bell), "a wake reads past a full buffer");
        assert!(!bell.is_orphaned());
        drop(ringer);
        assert!(bell.is_orphaned());
    }

    #[test]
    fn poll_in_reports_the_readable_descriptor() {
        let (ringer, bell) = doorbell().unwrap();
        let (_other_ringer, other) = doorbell().unwrap();
        assert_eq!(poll_in([bell.fd(), other.fd()], 0).unwrap(), [false, false]);
        ringer.knock();
        assert_eq!(
            poll_in([bell.fd(), other.fd()], 1000).unwrap(),
            [true, false]
        );
    }

    #[test]
    fn reply_addresses_split_with_and_without_delimiter() {
        let dealer: Vec<&[u8]> = vec![b"id", b"header", b"body"];
        let (addr, rest) = ReplyAddress::split(&dealer).unwrap();
        assert_eq!(addr.identity, b"id");
        assert_eq!(addr.as_ref().to_owned(), addr);
        assert!(!addr.delimited);
        assert_eq!(rest.len(), 2);
        let req: Vec<&[u8]> = vec![b"id", b"", b"header"];
        let (addr, rest) = ReplyAddress::split(&req).unwrap();
        assert!(addr.delimited);
        assert_eq!(rest, [b"header"]);
        // Nothing after the delimiter: an address to answer "malformed" at.
        let empty: Vec<&[u8]> = vec![b"id", b""];
        let (addr, rest) = ReplyAddress::split(&empty).unwrap();
        assert!(addr.delimited);
        assert!(rest.is_empty());
        assert!(ReplyAddress::split::<&[u8]>(&[]).is_none());
    }

    #[test]
    fn answered_deadlines_do_not_pile_up_behind_a_long_wait() {
        let t0 = Instant::now();
        let mut p = PendingReplies::new();
        p.insert(0, t0 + Duration::from_secs(3600), ());
        for id in 1..10_000 {
            p.insert(id, t0 + Duration::from_secs(1), ());
            p.remove(id);
        }
        assert!(
            p.deadlines.len() <= 2 * p.len() + 65,
            "{}",
            p.deadlines.len()
        );
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn pending_replies_expire_by_deadline_and_skip_answered() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = PendingReplies::new();
        p.insert(1, ms(30), "a");
        p.insert(2, ms(10), "b");
        p.insert(3, ms(20), "c");
        assert_eq!(p.next_deadline(), Some(ms(10)));
        assert_eq!(p.remove(2), Some("b"));
        assert_eq!(
            p.next_deadline(),
            Some(ms(20)),
            "an answered entry is skipped"
        );
        assert!(p.expired(ms(5)).is_empty());
        assert_eq!(p.expired(ms(25)), vec![(3, "c")]);
        assert_eq!(p.len(), 1);
        // Re-inserting moves the deadline; the old one no longer counts.
        p.insert(1, ms(100), "a2");
        assert!(p.expired(ms(50)).is_empty());
        assert_eq!(p.get_mut(1).copied(), Some("a2"));
        assert_eq!(p.expired(ms(100)), vec![(1, "a2")]);
        assert!(p.is_empty());
        assert_eq!(p.next_deadline(), None);
        p.insert(7, ms(1), "x");
        // Without a deadline: never expires, and its old deadline is stale.
        p.insert_without_deadline(7, "y");
        assert_eq!(p.next_deadline(), None);
        assert!(p.expired(ms(1000)).is_empty());
        assert_eq!(p.get(7), Some(&"y"));
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![(7, &"y")]);
        assert_eq!(p.drain().collect::<Vec<_>>(), vec![(7, "y")]);
        assert!(p.is_empty() && !p.contains(7));
    }
}
