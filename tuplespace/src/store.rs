//! The indexed multiset behind a space: tuples, blocked waiters, reservations and leases.
//!
//! # Layout of the data
//!
//! Tuples are partitioned by arity (a template only ever matches tuples of its own arity).
//! Each arity has one `Shard`; the shards live in a [`DashMap`] keyed by arity, and each
//! shard sits behind its own short `std::sync::Mutex`. Inside a shard:
//!
//! - `entries`: sequence number -> stored tuple (the tuple and its lease deadline);
//! - `order`: every available sequence number of this arity, ascending (the per-arity index,
//!   scanned by templates whose first field is not an actual value);
//! - `by_first`: first value -> its sequence numbers, ascending (the (arity, first value)
//!   index: a template with an actual first field only scans its own bucket);
//! - waiters indexed the same way (`waiters_by_first`, `waiters_any`), so an `out` only looks
//!   at waiters that could match it;
//! - reservations (tuples handed to a taker that has not confirmed yet).
//!
//! Sequence numbers come from one global counter, so "oldest first" is "smallest sequence
//! number first", and a released reservation goes back under its original number.
//!
//! # Why a mutex per arity and not a lock-free structure
//!
//! A blocked take must never miss a tuple: "look for a match, else register a waiter" and
//! "insert a tuple, else offer it to waiters" have to be atomic with respect to each other.
//! Both touch only the shard of their arity, so one mutex per arity makes them atomic, keeps
//! every invariant in one place and cannot deadlock: no code path holds two shard locks, and
//! no code path waits for a shard lock while holding a `DashMap` guard. Different arities
//! proceed in parallel. Critical sections are short: an index lookup plus the matches scanned.
//!
//! # Cost
//!
//! With an actual first field, finding a match costs O(log n) to reach the bucket position
//! plus the tuples scanned in that bucket; it does not grow with tuples stored under other
//! keys. Templates whose first field is a formal, wildcard, range, regex or nested template
//! scan their arity in age order.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::error::{Error, Result};
use crate::template::Template;
use crate::value::{Tuple, Value};

/// A tuple's position in the global insertion order (smaller = older).
pub type Seq = u64;

/// Names a reservation: tuples handed to a taker and held until it confirms or releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationId(pub u64);

impl std::fmt::Display for ReservationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Names a blocked take or read registered with [`Store::wait`]. Ids grow with arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// What [`Store::wait`] returns for a registered waiter; pass it to [`Store::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaiterHandle {
    id: WaiterId,
    arity: usize,
}

impl WaiterHandle {
    /// The waiter's id (the same id its [`Delivery`] carries).
    pub fn id(&self) -> WaiterId {
        self.id
    }
}

/// How a waiter wants its tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// A copy; the tuple stays in the space.
    Read,
    /// The tuple itself, handed over as a reservation that the taker confirms (the tuple is
    /// gone) or releases (it goes back in its original place). With a lease, an unconfirmed
    /// reservation is released automatically when the lease runs out (see [`Store::tick`]).
    Take {
        /// How long the reservation may stay unconfirmed; `None` = until confirm/release.
        lease: Option<Duration>,
    },
}

/// A tuple handed to a waiter.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Which waiter it is for.
    pub waiter: WaiterId,
    /// The tuple (a copy for readers).
    pub tuple: Tuple,
    /// For takers: the reservation to confirm or release. `None` for readers.
    pub reservation: Option<ReservationId>,
}

/// Hands a [`Delivery`] to a waiter; returns it back if the waiter is gone (then the store
/// offers the tuple to the next waiter). Called with the shard locked: it must not block and
/// must not call back into the store.
pub type Sink = Box<dyn FnOnce(Delivery) -> std::result::Result<(), Delivery> + Send>;

/// Result of [`Store::wait`].
#[derive(Debug)]
pub enum WaitOutcome {
    /// A tuple matched at once (no waiter was registered).
    Ready {
        /// The tuple (a copy for reads).
        tuple: Tuple,
        /// For takes: the reservation to confirm or release.
        reservation: Option<ReservationId>,
    },
    /// Nothing matched; a waiter is registered and its sink will get the tuple.
    Waiting(WaiterHandle),
}

/// Something that happened to the space, for observers (e.g. publishing `$space.*` events).
#[derive(Clone, Debug, PartialEq)]
pub enum SpaceEvent {
    /// A tuple was written.
    Out(Tuple),
    /// A tuple was taken (consumed for good: a direct take or a confirmed reservation).
    Take(Tuple),
    /// A tuple's lease ran out and it was removed.
    Expire(Tuple),
}

/// An observer callback: called after the store's locks are released, on the thread that
/// made the change. Keep it short (e.g. push into a channel).
pub type Observer = Arc<dyn Fn(&SpaceEvent) + Send + Sync>;

/// Receives every mutation that must survive a restart, in order, while the shard is locked.
/// Implemented by the persistence layer.
pub trait Journal: Send + Sync {
    /// A tuple was stored under `seq` (with its lease deadline, if any).
    fn record_out(&self, seq: Seq, tuple: &Tuple, expires: Option<Instant>) -> Result<()>;
    /// The tuple stored under `seq` is gone for good (taken, confirmed or expired).
    fn record_remove(&self, seq: Seq) -> Result<()>;
    /// (records appended, records durable): a record is durable once `durable >=` the
    /// `appended` value read right after writing it.
    fn positions(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Makes everything appended so far durable now.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Called (from any thread) after each sync that advanced the durable position.
    fn set_sync_listener(&self, _listener: Option<SyncListener>) {}
}

/// See [`Journal::set_sync_listener`].
pub type SyncListener = Arc<dyn Fn() + Send + Sync>;

/// A stored tuple and its lease deadline.
#[derive(Clone, Debug)]
struct Entry {
    tuple: Tuple,
    expires: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

struct Waiter {
    template: Template,
    mode: WaitMode,
    sink: Sink,
}

struct Reservation {
    items: Vec<(Seq, Entry)>,
    deadline: Option<Instant>,
}

/// All tuples, waiters and reservations of one arity.
#[derive(Default)]
struct Shard {
    entries: HashMap<Seq, Entry>,
    order: BTreeSet<Seq>,
    by_first: HashMap<Value, BTreeSet<Seq>>,
    expiries: BinaryHeap<Reverse<(Instant, Seq)>>,
    waiters: HashMap<u64, Waiter>,
    waiters_any: BTreeSet<u64>,
    waiters_by_first: HashMap<Value, BTreeSet<u64>>,
    reserved: HashMap<u64, Reservation>,
    res_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Shard {
    /// Sequence numbers of live matches, oldest first, at most `max`; expired entries met
    /// on the way are pushed to `expired` (the caller removes them).
    fn find(&self, t: &Template, now: Instant, max: usize, expired: &mut Vec<Seq>) -> Vec<Seq> {
        let mut found = Vec::new();
        if max == 0 {
            return found;
        }
        let set = match t.index_key().1 {
            Some(first) => match self.by_first.get(first) {
                Some(set) => set,
                None => return found,
            },
            None => &self.order,
        };
        for seq in set {
            let Some(entry) = self.entries.get(seq) else {
                continue;
            };
            if entry.expired(now) {
                expired.push(*seq);
                continue;
            }
            if t.matches(entry.tuple.values()) {
                found.push(*seq);
                if found.len() >= max {
                    break;
                }
            }
        }
        found
    }

    fn insert(&mut self, seq: Seq, entry: Entry) {
        if let Some(first) = entry.tuple.values().first() {
            self.by_first.entry(first.clone()).or_default().insert(seq);
        }
        self.order.insert(seq);
        if let Some(at) = entry.expires {
            self.expiries.push(Reverse((at, seq)));
        }
        self.entries.insert(seq, entry);
    }

    fn remove(&mut self, seq: Seq) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.order.remove(&seq);
        if let Some(first) = entry.tuple.values().first() {
            if let Some(set) = self.by_first.get_mut(first) {
                set.remove(&seq);
                if set.is_empty() {
                    self.by_first.remove(first);
                }
            }
        }
        Some(entry)
    }

    fn add_waiter(&mut self, id: u64, w: Waiter) {
        match w.template.index_key().1 {
            Some(first) => {
                self.waiters_by_first
                    .entry(first.clone())
                    .or_default()
                    .insert(id);
            }
            None => {
                self.waiters_any.insert(id);
            }
        }
        self.waiters.insert(id, w);
    }

    fn remove_waiter(&mut self, id: u64) -> Option<Waiter> {
        let w = self.waiters.remove(&id)?;
        match w.template.index_key().1 {
            Some(first) => {
                if let Some(set) = self.waiters_by_first.get_mut(first) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.waiters_by_first.remove(first);
                    }
                }
            }
            None => {
                self.waiters_any.remove(&id);
            }
        }
        Some(w)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let a = self.expiries.peek().map(|r| r.0 .0);
        let b = self.res_deadlines.peek().map(|r| r.0 .0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The concurrent, indexed tuple store. Shared (`&self`) by every user; see the module doc.
pub struct Store {
    shards: DashMap<usize, Arc<Mutex<Shard>>>,
    reservations: DashMap<u64, usize>,
    next_seq: AtomicU64,
    next_waiter: AtomicU64,
    next_res: AtomicU64,
    observer: RwLock<Option<Observer>>,
    journal: RwLock<Option<Arc<dyn Journal>>>,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last opportunistic sweep.
    last_sweep: AtomicU64,
    /// A lower bound of every lease deadline held by the shards, in nanoseconds after
    /// `epoch` (`u64::MAX`: none), so [`Store::next_deadline`] is one atomic load instead of
    /// a walk over the shards (the server asks on every loop turn). Lowered when a deadline
    /// is added (under its shard lock), recomputed by [`Store::tick`].
    deadline_hint: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("arities", &self.shards.len())
            .field("reservations", &self.reservations.len())
            .finish_non_exhaustive()
    }
}

/// How often operations sweep expired leases on their own (besides [`Store::tick`]).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Locks a shard. A poisoned lock (a panic elsewhere while holding it) is taken over: every
/// mutation keeps the shard's indexes consistent before anything that could panic.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store {
            shards: DashMap::new(),
            reservations: DashMap::new(),
            next_seq: AtomicU64::new(1),
            next_waiter: AtomicU64::new(1),
            next_res: AtomicU64::new(1),
            observer: RwLock::new(None),
            journal: RwLock::new(None),
            epoch: Instant::now(),
            last_sweep: AtomicU64::new(0),
            deadline_hint: AtomicU64::new(u64::MAX),
        }
    }

    /// Installs the observer that receives every [`SpaceEvent`] (replaces any previous one).
    pub fn set_observer(&self, observer: Option<Observer>) {
        *self.observer.write().unwrap_or_else(|e| e.into_inner()) = observer;
    }

    /// Installs the journal that records mutations (replaces any previous one).
    pub fn set_journal(&self, journal: Option<Arc<dyn Journal>>) {
        *self.journal.write().unwrap_or_else(|e| e.into_inner()) = journal;
    }

    /// The journal's (appended, durable) positions, if a journal is installed.
    pub fn journal_positions(&self) -> Option<(u64, u64)> {
        self.journal().map(|j| j.positions())
    }

    /// Makes every recorded mutation durable now (no-op without a journal).
    pub fn sync(&self) -> Result<()> {
        match self.journal() {
            Some(j) => j.sync(),
            None => Ok(()),
        }
    }

    /// Registers a callback run after each journal sync (no-op without a journal).
    pub fn set_sync_listener(&self, listener: Option<SyncListener>) {
        if let Some(j) = self.journal() {
            j.set_sync_listener(listener);
        }
    }

    /// Makes sure future sequence numbers are at least `next` (used when loading state).
    pub fn ensure_next_seq(&self, next: Seq) {
        self.next_seq.fetch_max(next, Ordering::Relaxed);
    }

    fn observer(&self) -> Option<Observer> {
        self.observer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn journal(&self) -> Option<Arc<dyn Journal>> {
        self.journal
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn shard(&self, arity: usize) -> Arc<Mutex<Shard>> {
        if let Some(s) = self.shards.get(&arity) {
            return s.clone();
        }
        self.shards.entry(arity).or_default().clone()
    }

    fn existing_shard(&self, arity: usize) -> Option<Arc<Mutex<Shard>>> {
        self.shards.get(&arity).map(|s| s.clone())
    }

    /// Lowers the deadline hint to `at` (call after adding a deadline to a shard).
    fn note_deadline(&self, at: Option<Instant>) {
        if let Some(at) = at {
            let ns = at.saturating_duration_since(self.epoch).as_nanos();
            let ns = u64::try_from(ns).unwrap_or(u64::MAX - 1);
            self.deadline_hint.fetch_min(ns, Ordering::AcqRel);
        }
    }

    fn all_shards(&self) -> Vec<Arc<Mutex<Shard>>> {
        self.shards.iter().map(|s| s.value().clone()).collect()
    }

    fn emit(&self, events: Vec<SpaceEvent>) {
        if events.is_empty() {
            return;
        }
        if let Some(obs) = self.observer() {
            for e in &events {
                obs(e);
            }
        }
    }

    /// Runs [`Store::tick`] if the last sweep is older than [`SWEEP_EVERY`], so leases are
    /// purged even when nobody drives `tick`.
    fn maybe_sweep(&self, now: Instant) {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now_ns.saturating_sub(last) < SWEEP_EVERY.as_nanos() as u64 {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.tick(now);
        }
    }

    /// Removes expired entries met during a scan: journal, events.
    fn purge(
        &self,
        shard: &mut Shard,
        seqs: &[Seq],
        journal: &Option<Arc<dyn Journal>>,
        events: &mut Vec<SpaceEvent>,
        observed: bool,
    ) {
        for seq in seqs {
            if let Some(e) = shard.remove(*seq) {
                if let Some(j) = journal {
                    if let Err(err) = j.record_remove(*seq) {
                        tracing::warn!("journal: recording an expiry failed: {err}");
                    }
                }
                if observed {
                    events.push(SpaceEvent::Expire(e.tuple));
                }
            }
        }
    }

    fn new_reservation(
        &self,
        shard: &mut Shard,
        arity: usize,
        items: Vec<(Seq, Entry)>,
        lease: Option<Duration>,
        now: Instant,
    ) -> ReservationId {
        let id = self.next_res.fetch_add(1, Ordering::Relaxed);
        let deadline = lease.and_then(|l| now.checked_add(l));
        if let Some(d) = deadline {
            shard.res_deadlines.push(Reverse((d, id)));
            self.note_deadline(Some(d));
        }
        shard.reserved.insert(id, Reservation { items, deadline });
        self.reservations.insert(id, arity);
        ReservationId(id)
    }

    /// Offers an available tuple to the shard's waiters: every matching reader gets a copy,
    /// then the oldest matching taker gets the tuple (as a reservation). Returns the entry if
    /// no taker took it (the caller stores it).
    fn offer(
        &self,
        shard: &mut Shard,
        arity: usize,
        seq: Seq,
        entry: Entry,
        now: Instant,
    ) -> Option<Entry> {
        if shard.waiters.is_empty() {
            return Some(entry);
        }
        let mut cands: Vec<u64> = shard.waiters_any.iter().copied().collect();
        if let Some(first) = entry.tuple.values().first() {
            if let Some(set) = shard.waiters_by_first.get(first) {
                cands.extend(set.iter().copied());
            }
        }
        if cands.is_empty() {
            return Some(entry);
        }
        cands.sort_unstable();
        let mut readers = Vec::new();
        let mut takers = Vec::new();
        for id in cands {
            if let Some(w) = shard.waiters.get(&id) {
                if w.template.matches(entry.tuple.values()) {
                    match w.mode {
                        WaitMode::Read => readers.push(id),
                        WaitMode::Take { .. } => takers.push(id),
                    }
                }
            }
        }
        for id in readers {
            if let Some(w) = shard.remove_waiter(id) {
                // A reader that is gone simply does not get its copy.
                let _ = (w.sink)(Delivery {
                    waiter: WaiterId(id),
                    tuple: entry.tuple.clone(),
                    reservation: None,
                });
            }
        }
        let mut entry = entry;
        for id in takers {
            let Some(w) = shard.remove_waiter(id) else {
                continue;
            };
            let lease = match w.mode {
                WaitMode::Take { lease } => lease,
                WaitMode::Read => None,
            };
            let tuple = entry.tuple.clone();
            // The reservation exists before the sink runs, so a taker on another thread can
            // confirm as soon as it has the delivery.
            let res = self.new_reservation(shard, arity, vec![(seq, entry)], lease, now);
            let delivery = Delivery {
                waiter: WaiterId(id),
                tuple,
                reservation: Some(res),
            };
            if (w.sink)(delivery).is_ok() {
                return None;
            }
            // The taker went away: undo the reservation and try the next taker.
            self.reservations.remove(&res.0);
            let items = shard.reserved.remove(&res.0).map(|r| r.items);
            match items.and_then(|v| v.into_iter().next()) {
                Some((_, e)) => entry = e,
                // Unreachable (the reservation was made just above); nothing to put back.
                None => return None,
            }
        }
        Some(entry)
    }

    /// Writes a tuple, optionally with a lease (it expires that long from now). Returns its
    /// sequence number. Blocked readers that match get a copy, and the oldest blocked taker
    /// that matches gets the tuple.
    pub fn out(&self, tuple: Tuple, lease: Option<Duration>) -> Result<Seq> {
        let now = Instant::now();
        self.maybe_sweep(now);
        let expires = lease.and_then(|l| now.checked_add(l));
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let arity = tuple.len();
        let shard = self.shard(arity);
        let mut events = Vec::new();
        let seq;
        {
            let mut g = lock(&shard);
            seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            if let Some(j) = &journal {
                j.record_out(seq, &tuple, expires)?;
            }
            if observed {
                events.push(SpaceEvent::Out(tuple.clone()));
            }
            let entry = Entry { tuple, expires };
            if entry.expired(now) {
                if let Some(j) = &journal {
                    j.record_remove(seq)?;
                }
                if observed {
                    events.push(SpaceEvent::Expire(entry.tuple));
                }
            } else if let Some(entry) = self.offer(&mut g, arity, seq, entry, now) {
                self.note_deadline(entry.expires);
                g.insert(seq, entry);
            }
        }
        self.emit(events);
        Ok(seq)
    }

    /// Restores a tuple under a known sequence number (used when loading persisted state).
    /// Does not journal and does not offer it to waiters.
    pub fn restore(&self, seq: Seq, tuple: Tuple, expires: Option<Instant>) {
        let arity = tuple.len();
        let shard = self.shard(arity);
        let mut g = lock(&shard);
        self.next_seq.fetch_max(seq + 1, Ordering::Relaxed);
        g.insert(seq, Entry { tuple, expires });
        self.note_deadline(expires);
    }

    /// Shared body of the non-blocking ops: finds up to `max` matches and removes them
    /// (`remove`) or copies them.
    fn grab(&self, t: &Template, max: usize, remove: bool) -> Vec<(Seq, Entry)> {
        let now = Instant::now();
        self.maybe_sweep(now);
        let Some(shard) = self.existing_shard(t.len()) else {
            return Vec::new();
        };
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let mut events = Vec::new();
        let mut out = Vec::new();
        {
            let mut g = lock(&shard);
            let mut expired = Vec::new();
            let found = g.find(t, now, max, &mut expired);
            self.purge(&mut g, &expired, &journal, &mut events, observed);
            for seq in found {
                if remove {
                    if let Some(e) = g.remove(seq) {
                        if let Some(j) = &journal {
                            if let Err(err) = j.record_remove(seq) {
                                tracing::warn!("journal: recording a take failed: {err}");
                            }
                        }
                        if observed {
                            events.push(SpaceEvent::Take(e.tuple.clone()));
                        }
                        out.push((seq, e));
                    }
                } else if let Some(e) = g.entries.get(&seq) {
                    out.push((seq, e.clone()));
                }
            }
        }
        self.emit(events);
        out
    }

    /// Removes and returns the oldest matching tuple, if any (Linda `inp`).
    pub fn take_now(&self, t: &Template) -> Option<Tuple> {
        self.grab(t, 1, true).pop().map(|(_, e)| e.tuple)
    }

    /// A copy of the oldest matching tuple, if any (Linda `rdp`).
    pub fn read_now(&self, t: &Template) -> Option<Tuple> {
        self.grab(t, 1, false).pop().map(|(_, e)| e.tuple)
    }

    /// Removes and returns up to `max` matching tuples, oldest first.
    pub fn take_all(&self, t: &Template, max: usize) -> Vec<Tuple> {
        self.grab(t, max, true)
            .into_iter()
            .map(|(_, e)| e.tuple)
            .collect()
    }

    /// Copies of up to `max` matching tuples, oldest first.
    pub fn read_all(&self, t: &Template, max: usize) -> Vec<Tuple> {
        self.grab(t, max, false)
            .into_iter()
            .map(|(_, e)| e.tuple)
            .collect()
    }

    /// How many live tuples match.
    pub fn count(&self, t: &Template) -> usize {
        let now = Instant::now();
        let Some(shard) = self.existing_shard(t.len()) else {
            return 0;
        };
        let g = lock(&shard);
        let mut expired = Vec::new();
        g.find(t, now, usize::MAX, &mut expired).len()
    }

    /// Every live tuple (matching `t` if given), oldest first. Reserved tuples are not listed.
    pub fn dump(&self, t: Option<&Template>) -> Vec<Tuple> {
        let now = Instant::now();
        match t {
            Some(t) => self.read_all(t, usize::MAX),
            None => {
                let mut all: Vec<(Seq, Tuple)> = Vec::new();
                for shard in self.all_shards() {
                    let g = lock(&shard);
                    for seq in &g.order {
                        if let Some(e) = g.entries.get(seq) {
                            if !e.expired(now) {
                                all.push((*seq, e.tuple.clone()));
                            }
                        }
                    }
                }
                all.sort_unstable_by_key(|(s, _)| *s);
                all.into_iter().map(|(_, t)| t).collect()
            }
        }
    }

    /// Every live stored tuple with its sequence number and lease deadline, oldest first,
    /// including reserved ones (they come back on restart). Used by snapshots.
    pub fn snapshot(&self) -> Vec<(Seq, Tuple, Option<Instant>)> {
        let now = Instant::now();
        let mut all = Vec::new();
        for shard in self.all_shards() {
            let g = lock(&shard);
            for (seq, e) in &g.entries {
                if !e.expired(now) {
                    all.push((*seq, e.tuple.clone(), e.expires));
                }
            }
            for r in g.reserved.values() {
                for (seq, e) in &r.items {
                    if !e.expired(now) {
                        all.push((*seq, e.tuple.clone(), e.expires));
                    }
                }
            }
        }
        all.sort_unstable_by_key(|(s, _, _)| *s);
        all
    }

    /// The next sequence number `out` will use.
    pub fn next_seq(&self) -> Seq {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Number of available (not reserved) tuples, counting expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.all_shards()
            .iter()
            .map(|s| lock(s).entries.len())
            .sum()
    }

    /// `true` when no tuple is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of open reservations.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Number of registered waiters.
    pub fn waiter_count(&self) -> usize {
        self.all_shards()
            .iter()
            .map(|s| lock(s).waiters.len())
            .sum()
    }

    /// Reserves up to `max` matching tuples at once (oldest first) under one reservation.
    /// `None` when nothing matches.
    pub fn reserve_now(
        &self,
        t: &Template,
        max: usize,
        lease: Option<Duration>,
    ) -> Option<(ReservationId, Vec<Tuple>)> {
        let now = Instant::now();
        self.maybe_sweep(now);
        let shard = self.existing_shard(t.len())?;
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let mut events = Vec::new();
        let result;
        {
            let mut g = lock(&shard);
            let mut expired = Vec::new();
            let found = g.find(t, now, max, &mut expired);
            self.purge(&mut g, &expired, &journal, &mut events, observed);
            let items: Vec<(Seq, Entry)> = found
                .into_iter()
                .filter_map(|s| g.remove(s).map(|e| (s, e)))
                .collect();
            result = if items.is_empty() {
                None
            } else {
                let tuples = items.iter().map(|(_, e)| e.tuple.clone()).collect();
                let id = self.new_reservation(&mut g, t.len(), items, lease, now);
                Some((id, tuples))
            };
        }
        self.emit(events);
        result
    }

    /// Looks for a match; if there is one, returns it at once (for takes, as a reservation).
    /// Otherwise registers a waiter whose `sink` receives the first tuple that matches
    /// (readers: every matching reader gets a copy; takers: first come, first served).
    pub fn wait(&self, t: &Template, mode: WaitMode, sink: Sink) -> WaitOutcome {
        let now = Instant::now();
        self.maybe_sweep(now);
        let arity = t.len();
        let shard = self.shard(arity);
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let mut events = Vec::new();
        let outcome;
        {
            let mut g = lock(&shard);
            let mut expired = Vec::new();
            let found = g.find(t, now, 1, &mut expired);
            self.purge(&mut g, &expired, &journal, &mut events, observed);
            outcome = match (found.first(), mode) {
                (Some(seq), WaitMode::Read) => match g.entries.get(seq) {
                    Some(e) => WaitOutcome::Ready {
                        tuple: e.tuple.clone(),
                        reservation: None,
                    },
                    None => self.register(&mut g, arity, t, mode, sink),
                },
                (Some(seq), WaitMode::Take { lease }) => match g.remove(*seq) {
                    Some(e) => {
                        let tuple = e.tuple.clone();
                        let id = self.new_reservation(&mut g, arity, vec![(*seq, e)], lease, now);
                        WaitOutcome::Ready {
                            tuple,
                            reservation: Some(id),
                        }
                    }
                    None => self.register(&mut g, arity, t, mode, sink),
                },
                (None, _) => self.register(&mut g, arity, t, mode, sink),
            };
        }
        self.emit(events);
        outcome
    }

    fn register(
        &self,
        shard: &mut Shard,
        arity: usize,
        t: &Template,
        mode: WaitMode,
        sink: Sink,
    ) -> WaitOutcome {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        shard.add_waiter(
            id,
            Waiter {
                template: t.clone(),
                mode,
                sink,
            },
        );
        WaitOutcome::Waiting(WaiterHandle {
            id: WaiterId(id),
            arity,
        })
    }

    /// Removes a waiter. `true` if it was still waiting (it will never get a tuple); `false`
    /// if it was already served (its delivery went to its sink) or cancelled.
    pub fn cancel(&self, h: &WaiterHandle) -> bool {
        match self.existing_shard(h.arity) {
            Some(shard) => lock(&shard).remove_waiter(h.id.0).is_some(),
            None => false,
        }
    }

    /// Confirms a reservation: its tuples are gone for good.
    pub fn confirm(&self, res: ReservationId) -> Result<()> {
        let arity = self
            .reservations
            .get(&res.0)
            .map(|a| *a)
            .ok_or(Error::UnknownReservation(res))?;
        let shard = self.shard(arity);
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let mut events = Vec::new();
        {
            let mut g = lock(&shard);
            let r = g
                .reserved
                .remove(&res.0)
                .ok_or(Error::UnknownReservation(res))?;
            self.reservations.remove(&res.0);
            for (seq, e) in r.items {
                if let Some(j) = &journal {
                    j.record_remove(seq)?;
                }
                if observed {
                    events.push(SpaceEvent::Take(e.tuple));
                }
            }
        }
        self.emit(events);
        Ok(())
    }

    /// Releases a reservation: its tuples go back under their original sequence numbers
    /// (still the oldest), and are offered to waiters first.
    pub fn release(&self, res: ReservationId) -> Result<()> {
        let arity = self
            .reservations
            .get(&res.0)
            .map(|a| *a)
            .ok_or(Error::UnknownReservation(res))?;
        let shard = self.shard(arity);
        let now = Instant::now();
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let mut events = Vec::new();
        {
            let mut g = lock(&shard);
            let r = g
                .reserved
                .remove(&res.0)
                .ok_or(Error::UnknownReservation(res))?;
            self.reservations.remove(&res.0);
            self.put_back(&mut g, arity, r, now, &journal, &mut events, observed);
        }
        self.emit(events);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn put_back(
        &self,
        shard: &mut Shard,
        arity: usize,
        r: Reservation,
        now: Instant,
        journal: &Option<Arc<dyn Journal>>,
        events: &mut Vec<SpaceEvent>,
        observed: bool,
    ) {
        for (seq, e) in r.items {
            if e.expired(now) {
                if let Some(j) = journal {
                    if let Err(err) = j.record_remove(seq) {
                        tracing::warn!("journal: recording an expiry failed: {err}");
                    }
                }
                if observed {
                    events.push(SpaceEvent::Expire(e.tuple));
                }
            } else if let Some(e) = self.offer(shard, arity, seq, e, now) {
                self.note_deadline(e.expires);
                shard.insert(seq, e);
            }
        }
    }

    /// Purges tuples whose lease ran out and releases reservations whose lease ran out.
    /// The server calls it when [`Store::next_deadline`] passes; operations also call it
    /// on their own from time to time.
    pub fn tick(&self, now: Instant) {
        let observed = self.observer.read().map(|o| o.is_some()).unwrap_or(true);
        let journal = self.journal();
        let mut events = Vec::new();
        // Recomputed below from every shard; a deadline added meanwhile lowers it again
        // (it is added under its shard lock, before the note, so either this walk sees it or
        // its note comes after this reset).
        self.deadline_hint.store(u64::MAX, Ordering::Release);
        for entry in self
            .shards
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect::<Vec<_>>()
        {
            let (arity, shard) = entry;
            let mut g = lock(&shard);
            let mut expired = Vec::new();
            while let Some(Reverse((at, seq))) = g.expiries.peek().copied() {
                if at > now {
                    break;
                }
                g.expiries.pop();
                if g.entries.get(&seq).is_some_and(|e| e.expires == Some(at)) {
                    expired.push(seq);
                }
            }
            self.purge(&mut g, &expired, &journal, &mut events, observed);
            while let Some(Reverse((at, id))) = g.res_deadlines.peek().copied() {
                if at > now {
                    break;
                }
                g.res_deadlines.pop();
                if g.reserved.get(&id).is_some_and(|r| r.deadline == Some(at)) {
                    if let Some(r) = g.reserved.remove(&id) {
                        self.reservations.remove(&id);
                        self.put_back(&mut g, arity, r, now, &journal, &mut events, observed);
                    }
                }
            }
            self.note_deadline(g.next_deadline());
        }
        self.emit(events);
    }

    /// The earliest tuple-lease or reservation-lease deadline (possibly already passed or
    /// stale: calling [`Store::tick`] then is harmless). Cheap: one atomic load.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.deadline_hint.load(Ordering::Acquire) {
            u64::MAX => None,
            ns => self.epoch.checked_add(Duration::from_nanos(ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Field, Kind};

    fn tup(vals: Vec<Value>) -> Tuple {
        Tuple(vals)
    }
    fn s(x: &str) -> Value {
        Value::Text(x.into())
    }
    fn i(x: i64) -> Value {
        Value::Int(x)
    }
    fn a(v: Value) -> Field {
        Field::Actual(v)
    }

    #[test]
    fn bag_semantics_five_identical() {
        let st = Store::new();
        for _ in 0..5 {
            st.out(tup(vec![s("x"), i(1)]), None).unwrap();
        }
        let t = Template(vec![a(s("x")), a(i(1))]);
        assert_eq!(st.count(&t), 5);
        for _ in 0..5 {
            assert_eq!(st.take_now(&t), Some(tup(vec![s("x"), i(1)])));
        }
        assert_eq!(st.take_now(&t), None);
        assert!(st.is_empty());
    }

    #[test]
    fn oldest_first_in_bucket_and_in_arity_scan() {
        let st = Store::new();
        for n in 0..10 {
            st.out(tup(vec![s(if n % 2 == 0 { "a" } else { "b" }), i(n)]), None)
                .unwrap();
        }
        let by_first = Template(vec![a(s("b")), Field::Formal(Kind::Int)]);
        let any = Template(vec![Field::Any, Field::Formal(Kind::Int)]);
        assert_eq!(st.take_now(&by_first), Some(tup(vec![s("b"), i(1)])));
        assert_eq!(st.take_now(&any), Some(tup(vec![s("a"), i(0)])));
        assert_eq!(st.take_now(&any), Some(tup(vec![s("a"), i(2)])));
        assert_eq!(st.take_now(&by_first), Some(tup(vec![s("b"), i(3)])));
        let rest = st.dump(None);
        assert_eq!(rest.len(), 6);
        assert_eq!(rest[0], tup(vec![s("a"), i(4)]));
    }

    #[test]
    fn index_many_arities_and_first_values() {
        let st = Store::new();
        for arity in 1..6usize {
            for first in 0..20i64 {
                let mut v = vec![i(first)];
                v.extend((1..arity).map(|k| i(k as i64)));
                st.out(tup(v), None).unwrap();
            }
        }
        assert_eq!(st.len(), 100);
        for arity in 1..6usize {
            let mut f = vec![a(i(7))];
            f.extend((1..arity).map(|_| Field::Formal(Kind::Int)));
            assert_eq!(st.count(&Template(f.clone())), 1, "arity {arity}");
            let mut any = vec![Field::Any];
            any.extend((1..arity).map(|_| Field::Any));
            assert_eq!(st.count(&Template(any)), 20);
            let got = st.take_now(&Template(f)).unwrap();
            assert_eq!(got.len(), arity);
            assert_eq!(got.0[0], i(7));
        }
        assert_eq!(st.len(), 95);
        // A first value that was never stored finds nothing; arity 0 works.
        assert_eq!(st.count(&Template(vec![a(i(99))])), 0);
        st.out(Tuple(vec![]), None).unwrap();
        assert_eq!(st.take_now(&Template(vec![])), Some(Tuple(vec![])));
    }

    #[test]
    fn lease_expiry_hides_and_purges() {
        let st = Store::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        st.set_observer(Some(Arc::new(move |e: &SpaceEvent| {
            ev.lock().unwrap().push(e.clone());
        })));
        st.out(tup(vec![s("lease")]), Some(Duration::from_millis(30)))
            .unwrap();
        st.out(tup(vec![s("keep")]), None).unwrap();
        let t = Template(vec![Field::Formal(Kind::Str)]);
        assert_eq!(st.count(&t), 2);
        let deadline = st.next_deadline().unwrap();
        // Not expired yet at the deadline minus a bit; expired at the deadline.
        st.tick(deadline - Duration::from_millis(1));
        assert_eq!(st.len(), 2);
        st.tick(deadline);
        assert_eq!(st.len(), 1);
        assert_eq!(st.dump(None), vec![tup(vec![s("keep")])]);
        let evs = events.lock().unwrap().clone();
        assert!(evs.contains(&SpaceEvent::Expire(tup(vec![s("lease")]))));
        // Zero lease: expired at once, never stored.
        st.out(tup(vec![s("gone")]), Some(Duration::ZERO)).unwrap();
        assert_eq!(st.count(&t), 1);
    }

    fn chan_sink() -> (Sink, std::sync::mpsc::Receiver<Delivery>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Box::new(move |d| tx.send(d).map_err(|e| e.0)), rx)
    }

    #[test]
    fn waiters_fifo_takers_and_all_readers() {
        let st = Store::new();
        let t = Template(vec![a(s("job")), Field::Any]);
        let t_any = Template(vec![Field::Formal(Kind::Str), Field::Any]);
        let (s1, r1) = chan_sink();
        let (s2, r2) = chan_sink();
        let (s3, r3) = chan_sink();
        let (s4, r4) = chan_sink();
        let take = WaitMode::Take { lease: None };
        let WaitOutcome::Waiting(_) = st.wait(&t_any, take, s1) else {
            panic!("expected waiting")
        };
        let WaitOutcome::Waiting(_) = st.wait(&t, take, s2) else {
            panic!("expected waiting")
        };
        let WaitOutcome::Waiting(_) = st.wait(&t, WaitMode::Read, s3) else {
            panic!("expected waiting")
        };
        let WaitOutcome::Waiting(_) = st.wait(&t_any, WaitMode::Read, s4) else {
            panic!("expected waiting")
        };
        st.out(tup(vec![s("job"), i(1)]), None).unwrap();
        // First taker by arrival (the any-first one) got it; both readers got copies.
        let d1 = r1.try_recv().unwrap();
        assert!(r2.try_recv().is_err());
        assert_eq!(r3.try_recv().unwrap().tuple, tup(vec![s("job"), i(1)]));
        assert_eq!(r4.try_recv().unwrap().tuple, tup(vec![s("job"), i(1)]));
        st.confirm(d1.reservation.unwrap()).unwrap();
        st.out(tup(vec![s("job"), i(2)]), None).unwrap();
        let d2 = r2.try_recv().unwrap();
        assert_eq!(d2.tuple, tup(vec![s("job"), i(2)]));
        st.confirm(d2.reservation.unwrap()).unwrap();
        assert!(st.is_empty());
        assert_eq!(st.waiter_count(), 0);
    }

    #[test]
    fn vanished_taker_passes_tuple_on_and_cancel_removes() {
        let st = Store::new();
        let t = Template(vec![a(s("k"))]);
        let take = WaitMode::Take { lease: None };
        let (s1, r1) = chan_sink();
        drop(r1); // this taker is gone
        let (s2, r2) = chan_sink();
        let (s3, _r3) = chan_sink();
        st.wait(&t, take, s1);
        let WaitOutcome::Waiting(h3) = st.wait(&t, take, s3) else {
            panic!("expected waiting")
        };
        assert!(st.cancel(&h3));
        assert!(!st.cancel(&h3));
        st.wait(&t, take, s2);
        st.out(tup(vec![s("k")]), None).unwrap();
        let d = r2.try_recv().unwrap();
        assert_eq!(st.reservation_count(), 1);
        st.confirm(d.reservation.unwrap()).unwrap();
        assert!(matches!(
            st.confirm(d.reservation.unwrap()),
            Err(Error::UnknownReservation(_))
        ));
        assert!(st.is_empty());
    }

    #[test]
    fn release_restores_original_position() {
        let st = Store::new();
        st.out(tup(vec![s("q"), i(1)]), None).unwrap();
        st.out(tup(vec![s("q"), i(2)]), None).unwrap();
        let t = Template(vec![a(s("q")), Field::Any]);
        let (res, got) = st.reserve_now(&t, 1, None).unwrap();
        assert_eq!(got, vec![tup(vec![s("q"), i(1)])]);
        // While reserved, nobody else sees it.
        assert_eq!(st.read_now(&t), Some(tup(vec![s("q"), i(2)])));
        st.out(tup(vec![s("q"), i(3)]), None).unwrap();
        st.release(res).unwrap();
        assert!(st.release(res).is_err());
        assert_eq!(
            st.take_all(&t, 10),
            vec![
                tup(vec![s("q"), i(1)]),
                tup(vec![s("q"), i(2)]),
                tup(vec![s("q"), i(3)])
            ]
        );
    }

    #[test]
    fn next_deadline_is_the_earliest_across_arities_and_moves_on_after_tick() {
        let st = Store::new();
        assert_eq!(st.next_deadline(), None);
        st.out(tup(vec![s("late")]), Some(Duration::from_secs(60)))
            .unwrap();
        let late = st.next_deadline().unwrap();
        st.out(tup(vec![s("soon"), i(1)]), Some(Duration::from_millis(10)))
            .unwrap();
        let soon = st.next_deadline().unwrap();
        assert!(
            soon < late,
            "the other arity's earlier lease is the next deadline"
        );
        st.tick(soon);
        assert_eq!(st.len(), 1);
        assert_eq!(st.next_deadline(), Some(late));
        // A reservation lease counts too; once it is confirmed, its deadline is stale but
        // harmless, and a tick past it forgets it.
        let t = Template(vec![a(s("late"))]);
        let (res, _) = st
            .reserve_now(&t, 1, Some(Duration::from_millis(5)))
            .unwrap();
        let res_deadline = st.next_deadline().unwrap();
        assert!(res_deadline < late);
        st.confirm(res).unwrap();
        st.tick(res_deadline);
        // The taken tuple's own lease is stale now too; it stays a (harmless) lower bound.
        assert_eq!(st.next_deadline(), Some(late));
        assert!(st.is_empty());
    }

    #[test]
    fn reservation_lease_expiry_gives_tuple_to_waiter() {
        let st = Store::new();
        st.out(tup(vec![i(5)]), None).unwrap();
        let t = Template(vec![a(i(5))]);
        let (res, _) = st
            .reserve_now(&t, 1, Some(Duration::from_millis(20)))
            .unwrap();
        let (s1, r1) = chan_sink();
        let WaitOutcome::Waiting(_) = st.wait(&t, WaitMode::Take { lease: None }, s1) else {
            panic!("expected waiting")
        };
        let deadline = st.next_deadline().unwrap();
        st.tick(deadline);
        let d = r1.try_recv().unwrap();
        assert_eq!(d.tuple, tup(vec![i(5)]));
        assert!(st.confirm(res).is_err(), "the expired reservation is gone");
        st.confirm(d.reservation.unwrap()).unwrap();
        assert!(st.is_empty());
    }

    #[test]
    fn concurrent_outs_and_takes_each_tuple_once() {
        let st = Arc::new(Store::new());
        let n = 2000i64;
        let mut hs = Vec::new();
        for p in 0..2 {
            let st = st.clone();
            hs.push(std::thread::spawn(move || {
                for k in 0..n / 2 {
                    st.out(tup(vec![s("w"), i(p * n + k)]), None).unwrap();
                }
            }));
        }
        let t = Template(vec![a(s("w")), Field::Formal(Kind::Int)]);
        let taken = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..2 {
            let st = st.clone();
            let taken = taken.clone();
            let t = t.clone();
            hs.push(std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while taken.lock().unwrap().len() < n as usize && Instant::now() < deadline {
                    if let Some(x) = st.take_now(&t) {
                        taken.lock().unwrap().push(x);
                    } else {
                        std::thread::yield_now();
                    }
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        let mut got = taken.lock().unwrap().clone();
        assert_eq!(got.len(), n as usize);
        got.sort_by_key(|t| t.0[1].as_i128());
        got.dedup();
        assert_eq!(got.len(), n as usize);
    }
}
