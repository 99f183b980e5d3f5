//! [`Space`]: the tuple space in-process, with no broker. A cheap `Clone` handle over a shared
//! [`Store`]; blocking operations are `async` (tokio) and cancel cleanly when dropped.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use agora_tuplespace::{Field, Kind, Space, Template, Tuple, Value};
//! let space = Space::new();
//! let worker = {
//!     let space = space.clone();
//!     tokio::spawn(async move {
//!         let t = Template(vec![Field::Actual(Value::from("job")), Field::Formal(Kind::Int)]);
//!         space.take(&t).await
//!     })
//! };
//! space.out(Tuple(vec![Value::from("job"), Value::Int(42)])).unwrap();
//! assert_eq!(worker.await.unwrap().0[1], Value::Int(42));
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::Result;
use crate::store::{Delivery, Observer, Sink, Store, WaitMode, WaitOutcome, WaiterHandle};
use crate::template::Template;
use crate::value::Tuple;

/// A handle to a tuple space. Clones share the same tuples.
#[derive(Clone, Debug, Default)]
pub struct Space {
    store: Arc<Store>,
}

/// Cancels a registered waiter when the future that owns it is dropped. If the waiter was
/// already served (the tuple sits in the channel but nobody will read it), a take's
/// reservation is released so the tuple goes back where it was.
struct WaitGuard<'a> {
    store: &'a Store,
    handle: WaiterHandle,
    rx: oneshot::Receiver<Delivery>,
    done: bool,
}

impl WaitGuard<'_> {
    /// The delivery, or `None` if the waiter was dropped without one (not expected).
    async fn recv(&mut self) -> Option<Delivery> {
        let d = (&mut self.rx).await.ok();
        self.done = true;
        d
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if !self.store.cancel(&self.handle) {
            // Served already: the delivery is in the channel (sinks run under the shard lock,
            // and `cancel` took that lock after it).
            if let Ok(d) = self.rx.try_recv() {
                if let Some(r) = d.reservation {
                    let _ = self.store.release(r);
                }
            }
        }
    }
}

fn sink_for(tx: oneshot::Sender<Delivery>) -> Sink {
    Box::new(move |d| tx.send(d))
}

impl Space {
    /// An empty in-memory space.
    pub fn new() -> Space {
        Space {
            store: Arc::new(Store::new()),
        }
    }

    /// A space over an existing store (e.g. one loaded from disk).
    pub fn from_store(store: Arc<Store>) -> Space {
        Space { store }
    }

    /// Makes every change so far durable now (no-op for an in-memory space).
    pub fn sync(&self) -> Result<()> {
        self.store.sync()
    }

    /// The shared store (what the server and persistence work on).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Writes a tuple (it stays until taken). Fails only if a configured journal cannot
    /// record it.
    pub fn out(&self, tuple: Tuple) -> Result<()> {
        self.store.out(tuple, None).map(|_| ())
    }

    /// Writes a tuple that expires `lease` from now (monotonic clock); after that it never
    /// matches and is purged.
    pub fn out_with_lease(&self, tuple: Tuple, lease: Duration) -> Result<()> {
        self.store.out(tuple, Some(lease)).map(|_| ())
    }

    /// Removes and returns the oldest matching tuple, waiting as long as it takes (Linda
    /// `in`). Dropping the future before it completes consumes nothing.
    pub async fn take(&self, t: &Template) -> Tuple {
        if let Some(x) = self.store.take_now(t) {
            return x;
        }
        loop {
            let (tx, rx) = oneshot::channel();
            match self
                .store
                .wait(t, WaitMode::Take { lease: None }, sink_for(tx))
            {
                WaitOutcome::Ready { tuple, reservation } => {
                    if let Some(r) = reservation {
                        let _ = self.store.confirm(r);
                    }
                    return tuple;
                }
                WaitOutcome::Waiting(handle) => {
                    let mut guard = WaitGuard {
                        store: &self.store,
                        handle,
                        rx,
                        done: false,
                    };
                    if let Some(d) = guard.recv().await {
                        if let Some(r) = d.reservation {
                            // No await between receipt and confirm: a drop cannot intervene.
                            let _ = self.store.confirm(r);
                        }
                        return d.tuple;
                    }
                }
            }
        }
    }

    /// A copy of the oldest matching tuple, waiting as long as it takes (Linda `rd`).
    pub async fn read(&self, t: &Template) -> Tuple {
        loop {
            let (tx, rx) = oneshot::channel();
            match self.store.wait(t, WaitMode::Read, sink_for(tx)) {
                WaitOutcome::Ready { tuple, .. } => return tuple,
                WaitOutcome::Waiting(handle) => {
                    let mut guard = WaitGuard {
                        store: &self.store,
                        handle,
                        rx,
                        done: false,
                    };
                    if let Some(d) = guard.recv().await {
                        return d.tuple;
                    }
                }
            }
        }
    }

    /// Removes and returns the oldest matching tuple if there is one now (Linda `inp`).
    pub fn try_take(&self, t: &Template) -> Option<Tuple> {
        self.store.take_now(t)
    }

    /// A copy of the oldest matching tuple if there is one now (Linda `rdp`).
    pub fn try_read(&self, t: &Template) -> Option<Tuple> {
        self.store.read_now(t)
    }

    /// [`Space::take`] with a timeout: `None` if nothing matched in time. A zero timeout is
    /// [`Space::try_take`]. Must run inside a Tokio runtime with the time driver enabled.
    pub async fn take_timeout(&self, t: &Template, timeout: Duration) -> Option<Tuple> {
        if timeout.is_zero() {
            return self.try_take(t);
        }
        tokio::time::timeout(timeout, self.take(t)).await.ok()
    }

    /// [`Space::read`] with a timeout: `None` if nothing matched in time. A zero timeout is
    /// [`Space::try_read`]. Must run inside a Tokio runtime with the time driver enabled.
    pub async fn read_timeout(&self, t: &Template, timeout: Duration) -> Option<Tuple> {
        if timeout.is_zero() {
            return self.try_read(t);
        }
        tokio::time::timeout(timeout, self.read(t)).await.ok()
    }

    /// Removes and returns up to `max` matching tuples, oldest first (never waits).
    pub fn take_all(&self, t: &Template, max: usize) -> Vec<Tuple> {
        self.store.take_all(t, max)
    }

    /// Copies of up to `max` matching tuples, oldest first (never waits).
    pub fn read_all(&self, t: &Template, max: usize) -> Vec<Tuple> {
        self.store.read_all(t, max)
    }

    /// How many tuples match now.
    pub fn count(&self, t: &Template) -> usize {
        self.store.count(t)
    }

    /// Every tuple (or every tuple matching `t`), oldest first.
    pub fn dump(&self, t: Option<&Template>) -> Vec<Tuple> {
        self.store.dump(t)
    }

    /// Number of tuples stored.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// `true` when no tuple is stored.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Calls `observer` for every out, take and expiry (see [`crate::store::SpaceEvent`]);
    /// `None` removes it.
    pub fn set_observer(&self, observer: Option<Observer>) {
        self.store.set_observer(observer);
    }

    /// A channel of every out, take and expiry from now on (replaces any observer set
    /// before). The broker publishes these on `$space.*`.
    pub fn subscribe_events(&self) -> std::sync::mpsc::Receiver<crate::store::SpaceEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        self.store.set_observer(Some(Arc::new(move |e| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(e.clone());
            }
        })));
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Field, Kind};
    use crate::value::Value;
    use std::time::Instant;

    fn job(n: i64) -> Tuple {
        Tuple(vec![Value::Text("job".into()), Value::Int(n)])
    }
    fn job_t() -> Template {
        Template(vec![
            Field::Actual(Value::Text("job".into())),
            Field::Formal(Kind::Int),
        ])
    }

    /// Polls `cond` until it holds or the deadline passes.
    async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn zero_timeout_on_empty_space() {
        let s = Space::new();
        assert_eq!(s.take_timeout(&job_t(), Duration::ZERO).await, None);
        assert_eq!(s.read_timeout(&job_t(), Duration::ZERO).await, None);
        assert_eq!(s.try_take(&job_t()), None);
        assert_eq!(s.try_read(&job_t()), None);
        assert_eq!(s.store().waiter_count(), 0);
    }

    #[tokio::test]
    async fn bag_five_outs_five_takes() {
        let s = Space::new();
        for _ in 0..5 {
            s.out(job(1)).unwrap();
        }
        for _ in 0..5 {
            assert_eq!(s.take(&job_t()).await, job(1));
        }
        assert_eq!(s.try_take(&job_t()), None);
    }

    #[tokio::test]
    async fn blocked_take_woken_by_later_out() {
        let s = Space::new();
        let s2 = s.clone();
        let h = tokio::spawn(async move { s2.take(&job_t()).await });
        assert!(eventually(|| s.store().waiter_count() == 1).await);
        s.out(job(7)).unwrap();
        assert_eq!(h.await.unwrap(), job(7));
        assert!(s.is_empty());
        assert_eq!(s.store().reservation_count(), 0);
    }

    #[tokio::test]
    async fn blocked_take_times_out_and_leaves_no_waiter() {
        let s = Space::new();
        let got = s.take_timeout(&job_t(), Duration::from_millis(30)).await;
        assert_eq!(got, None);
        assert_eq!(s.store().waiter_count(), 0);
        s.out(job(1)).unwrap();
        assert_eq!(
            s.len(),
            1,
            "a timed-out take must not swallow a later tuple"
        );
    }

    #[tokio::test]
    async fn dropped_take_consumes_nothing() {
        let s = Space::new();
        let s2 = s.clone();
        let h = tokio::spawn(async move { s2.take(&job_t()).await });
        assert!(eventually(|| s.store().waiter_count() == 1).await);
        h.abort();
        let _ = h.await;
        assert_eq!(s.store().waiter_count(), 0);
        s.out(job(3)).unwrap();
        assert_eq!(s.try_read(&job_t()), Some(job(3)));
    }

    #[tokio::test]
    async fn served_but_dropped_take_puts_tuple_back_in_place() {
        let s = Space::new();
        s.out(Tuple(vec![
            Value::Text("job".into()),
            Value::Text("older".into()),
        ]))
        .unwrap();
        let t = job_t();
        let mut fut = Box::pin(s.take(&t));
        // Poll once: registers the waiter.
        assert!(futures_poll_once(fut.as_mut()).await.is_none());
        s.out(job(1)).unwrap(); // handed to the waiter's channel, as a reservation
        assert_eq!(s.store().reservation_count(), 1);
        drop(fut); // never received: the reservation is released
        assert_eq!(s.store().reservation_count(), 0);
        assert_eq!(s.try_take(&job_t()), Some(job(1)));
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn fifo_among_blocked_takers() {
        let s = Space::new();
        let mut hs = Vec::new();
        for k in 0..3 {
            let s2 = s.clone();
            hs.push(tokio::spawn(async move { (k, s2.take(&job_t()).await) }));
            assert!(eventually(|| s.store().waiter_count() == k + 1).await);
        }
        for n in 0..3 {
            s.out(job(n)).unwrap();
        }
        for (k, h) in hs.into_iter().enumerate() {
            let (who, got) = h.await.unwrap();
            assert_eq!(who, k);
            assert_eq!(got, job(k as i64), "taker {k} arrived {k}th");
        }
    }

    #[tokio::test]
    async fn every_blocked_reader_gets_a_copy() {
        let s = Space::new();
        let mut readers = Vec::new();
        for _ in 0..3 {
            let s2 = s.clone();
            readers.push(tokio::spawn(async move { s2.read(&job_t()).await }));
        }
        let s2 = s.clone();
        let taker = tokio::spawn(async move { s2.take(&job_t()).await });
        assert!(eventually(|| s.store().waiter_count() == 4).await);
        s.out(job(9)).unwrap();
        for r in readers {
            assert_eq!(r.await.unwrap(), job(9));
        }
        assert_eq!(taker.await.unwrap(), job(9));
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn lease_expiry() {
        let s = Space::new();
        s.out_with_lease(job(1), Duration::from_millis(20)).unwrap();
        s.out(job(2)).unwrap();
        assert_eq!(s.count(&job_t()), 2);
        assert!(eventually(|| s.count(&job_t()) == 1).await);
        assert_eq!(s.try_take(&job_t()), Some(job(2)));
    }

    #[tokio::test]
    async fn bulk_ops_and_events() {
        let s = Space::new();
        let rx = s.subscribe_events();
        for n in 0..5 {
            s.out(job(n)).unwrap();
        }
        assert_eq!(s.read_all(&job_t(), 2), vec![job(0), job(1)]);
        assert_eq!(s.take_all(&job_t(), 3), vec![job(0), job(1), job(2)]);
        assert_eq!(s.dump(None), vec![job(3), job(4)]);
        let evs: Vec<_> = rx.try_iter().collect();
        assert_eq!(evs.len(), 8);
        assert_eq!(evs[5], crate::store::SpaceEvent::Take(job(0)));
    }
}
