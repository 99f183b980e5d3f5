//! [`Space`]: the tuple space client. Linda's `out`, `in` (here [`Space::take`]: `in` is a
//! Rust keyword), `rd` ([`Space::read`]), `inp`/`rdp` ([`Space::try_take`],
//! [`Space::try_read`]), waits with timeouts, bulk ops, and typed variants that decode a tuple
//! straight into a serde type.
//!
//! The guarantees and an example are on [`Space`] (this module is private; its docs are
//! there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_tuplespace::{from_tuple_cbor, to_tuple, Template, Tuple};
use agora_wire::space::{Reply, Request, Wait};
use agora_wire::{ErrorCode, Op};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::space_io::{self, Cmd, Ctl, Reservation};

/// Default limit on how long a non-blocking request waits for its reply.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on a tuple space served by an Agora broker.
///
/// Get one from a connected [`Client`](crate::Client) with [`Client::space`](crate::Client::space)
/// (the broker advertises its space in HELLO), or connect to a space endpoint directly with
/// [`Space::connect`]. Cloning is cheap: clones share one I/O thread that owns one `DEALER`
/// socket. The wire format is in docs/PROTOCOL.md (the tuple space section).
///
/// # Nothing lost
/// A take does not delete the tuple at the server: it reserves it for this client. The
/// client confirms the moment the caller has the tuple (a fire-and-forget `CONFIRM`, so an
/// `out` + `take` pair costs two round trips). If the caller is gone before that (its future
/// was dropped or timed out, or a typed take could not decode the tuple), the client sends
/// `RELEASE` and the tuple goes back in its original place. A dropped or timed-out blocked
/// take or read sends `CANCEL`, so it cannot swallow a tuple written later; while blocked
/// requests are pending the client sends a heartbeat every second (the server forgets
/// silent clients' waiters after 5 s), and after a reconnection (a broker restart) it
/// re-sends them.
///
/// `CONFIRM`, `RELEASE` and `CANCEL` are fire-and-forget: a program that exits right after a
/// take should first call [`Space::flush`], or the confirm may never leave the process, and
/// the server puts the tuple back when its reservation lease (5 s) runs out.
///
/// # Example
/// ```no_run
/// use agora::{template, tuple};
///
/// # async fn demo() -> agora::Result<()> {
/// let client = agora::Client::connect("tcp://127.0.0.1:7400").await?;
/// let space = client.space()?;
/// space.out(tuple!("job", 42, "resize")).await?;
/// space.out(&("job", 43, "crop")).await?; // any serde sequence is a tuple
/// let job = space.take(&template!("job", ?int, ?str)).await?;
/// println!("took {job}");
/// let (_, id, what): (String, i64, String) = space.take_as(&template!("job", _, _)).await?;
/// println!("job {id}: {what}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Space {
    inner: Arc<Inner>,
}

struct Inner {
    ctl: Arc<Ctl>,
    endpoint: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl Space {
    /// Connect to a tuple space endpoint directly (the broker's space `ROUTER`, e.g. the
    /// `space` field of [`Client::broker_info`](crate::Client::broker_info), or a standalone
    /// `agora_tuplespace::SpaceServer`). Most apps use
    /// [`Client::space`](crate::Client::space) instead.
    ///
    /// ZeroMQ connects in the background: this returns at once, and requests wait until the
    /// space is reachable (non-blocking ones fail with [`Error::Timeout`] after 10 s).
    pub fn connect(endpoint: &str) -> Result<Space> {
        Space::connect_with(endpoint, DEFAULT_REQUEST_TIMEOUT)
    }

    /// [`Space::connect`] with a limit on how long non-blocking requests wait for a reply.
    pub fn connect_with(endpoint: &str, request_timeout: Duration) -> Result<Space> {
        Space::connect_in(&zmq::Context::new(), endpoint, request_timeout)
    }

    /// [`Space::connect_with`], its socket made in `ctx` (a client's, shared with its bus
    /// and replay sockets).
    pub(crate) fn connect_in(
        ctx: &zmq::Context,
        endpoint: &str,
        request_timeout: Duration,
    ) -> Result<Space> {
        let ctl = space_io::spawn(ctx, endpoint)?;
        Ok(Space {
            inner: Arc::new(Inner {
                ctl,
                endpoint: endpoint.to_string(),
                request_timeout,
            }),
        })
    }

    /// The space endpoint this handle talks to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Linda `out`: write a tuple. Returns once the space has stored it (and, with a data
    /// dir, made it durable).
    ///
    /// `tuple` is a [`Tuple`] (see [`tuple!`](crate::tuple)) or anything that serializes as a
    /// sequence: a Rust tuple (`&("job", 42)`), a tuple struct, a `Vec`. A value that is not
    /// a sequence (a struct with named fields) is [`Error::Encode`]; a sequence holding
    /// something a tuple cannot (a map) is refused by the space with
    /// [`Error::Space`] (`BadTuple`).
    ///
    /// ```no_run
    /// # async fn demo(space: agora::Space) -> agora::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Job(String, u32);
    /// space.out(agora::tuple!("job", 1)).await?;
    /// space.out(&("job", 2)).await?;
    /// space.out(&Job("job".into(), 3)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn out<T: Serialize>(&self, tuple: T) -> Result<()> {
        self.out_inner(&tuple, None).await
    }

    /// [`Space::out`] with a lease: the tuple expires (disappears) after `lease`, measured on
    /// the server's monotonic clock. A zero lease expires it at once.
    pub async fn out_with_lease<T: Serialize>(&self, tuple: T, lease: Duration) -> Result<()> {
        self.out_inner(&tuple, Some(lease)).await
    }

    async fn out_inner<T: Serialize>(&self, tuple: &T, lease: Option<Duration>) -> Result<()> {
        let mut frame = Vec::with_capacity(64);
        ciborium::into_writer(tuple, &mut frame)
            .map_err(|e| Error::Encode(crate::error::cbor_encode_message(&e)))?;
        // A tuple is a CBOR array (major type 4); anything else gets the model's explanation.
        if frame.first().map(|b| b >> 5) != Some(4) {
            let message = match to_tuple(tuple) {
                Err(e) => e.to_string(),
                Ok(_) => "the value does not encode as a CBOR array".to_string(),
            };
            return Err(Error::Encode(message));
        }
        let out = Request::Out {
            tuple: frame,
            lease,
        };
        let timeout = self.inner.request_timeout;
        self.call(out, None, Some(timeout), "space out").await?;
        Ok(())
    }

    /// Linda `in`: take (remove) the oldest tuple matching `template`, waiting as long as it
    /// takes. Blocked takers are served first come, first served.
    ///
    /// Dropping the future withdraws the wait; a tuple already on its way goes back.
    pub async fn take(&self, template: &Template) -> Result<Tuple> {
        self.fetch_tuple(Op::Take, template, Wait::Forever)
            .await?
            .ok_or_else(never_empty)
    }

    /// Linda `inp`: take the oldest match if there is one now; `None` if not.
    pub async fn try_take(&self, template: &Template) -> Result<Option<Tuple>> {
        self.fetch_tuple(Op::Take, template, Wait::NonBlocking)
            .await
    }

    /// Take, waiting at most `timeout` (at the server, on its monotonic clock); `None` if no
    /// match came in time. A zero timeout is [`Space::try_take`]. If the server does not
    /// answer within `timeout` plus the request timeout, [`Error::Timeout`].
    pub async fn take_timeout(
        &self,
        template: &Template,
        timeout: Duration,
    ) -> Result<Option<Tuple>> {
        self.fetch_tuple(Op::Take, template, wait_for(timeout))
            .await
    }

    /// [`Space::take`], decoding the tuple into `T` (a Rust tuple or tuple struct).
    ///
    /// If the tuple does not decode as `T`, it goes back in the space and the result is
    /// [`Error::TupleType`]: use a template that only matches tuples of that shape.
    ///
    /// ```no_run
    /// # async fn demo(space: agora::Space) -> agora::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Job(String, i64);
    /// let Job(_, n) = space.take_as(&agora::template!("job", ?int)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn take_as<T: DeserializeOwned>(&self, template: &Template) -> Result<T> {
        self.fetch_typed(Op::Take, template, Wait::Forever)
            .await?
            .ok_or_else(never_empty)
    }

    /// [`Space::try_take`], decoding into `T` (see [`Space::take_as`]).
    pub async fn try_take_as<T: DeserializeOwned>(&self, template: &Template) -> Result<Option<T>> {
        self.fetch_typed(Op::Take, template, Wait::NonBlocking)
            .await
    }

    /// [`Space::take_timeout`], decoding into `T` (see [`Space::take_as`]).
    pub async fn take_timeout_as<T: DeserializeOwned>(
        &self,
        template: &Template,
        timeout: Duration,
    ) -> Result<Option<T>> {
        self.fetch_typed(Op::Take, template, wait_for(timeout))
            .await
    }

    /// Linda `rd`: a copy of the oldest tuple matching `template`, waiting as long as it
    /// takes. Every blocked reader that matches a new tuple gets a copy.
    pub async fn read(&self, template: &Template) -> Result<Tuple> {
        self.fetch_tuple(Op::Read, template, Wait::Forever)
            .await?
            .ok_or_else(never_empty)
    }

    /// Linda `rdp`: a copy of the oldest match if there is one now; `None` if not.
    pub async fn try_read(&self, template: &Template) -> Result<Option<Tuple>> {
        self.fetch_tuple(Op::Read, template, Wait::NonBlocking)
            .await
    }

    /// Read, waiting at most `timeout`; `None` if no match came in time (see
    /// [`Space::take_timeout`]).
    pub async fn read_timeout(
        &self,
        template: &Template,
        timeout: Duration,
    ) -> Result<Option<Tuple>> {
        self.fetch_tuple(Op::Read, template, wait_for(timeout))
            .await
    }

    /// [`Space::read`], decoding into `T`.
    pub async fn read_as<T: DeserializeOwned>(&self, template: &Template) -> Result<T> {
        self.fetch_typed(Op::Read, template, Wait::Forever)
            .await?
            .ok_or_else(never_empty)
    }

    /// [`Space::try_read`], decoding into `T`.
    pub async fn try_read_as<T: DeserializeOwned>(&self, template: &Template) -> Result<Option<T>> {
        self.fetch_typed(Op::Read, template, Wait::NonBlocking)
            .await
    }

    /// [`Space::read_timeout`], decoding into `T`.
    pub async fn read_timeout_as<T: DeserializeOwned>(
        &self,
        template: &Template,
        timeout: Duration,
    ) -> Result<Option<T>> {
        self.fetch_typed(Op::Read, template, wait_for(timeout))
            .await
    }

    /// Take up to `max` matching tuples at once, oldest first (never waits; may be empty).
    pub async fn take_all(&self, template: &Template, max: usize) -> Result<Vec<Tuple>> {
        let template = template.to_cbor();
        self.bulk(Request::TakeAll {
            template,
            max: wire_max(max),
        })
        .await
    }

    /// Copies of up to `max` matching tuples, oldest first (never waits; may be empty).
    pub async fn read_all(&self, template: &Template, max: usize) -> Result<Vec<Tuple>> {
        let template = template.to_cbor();
        self.bulk(Request::ReadAll {
            template,
            max: wire_max(max),
        })
        .await
    }

    /// How many tuples match `template` now.
    pub async fn count(&self, template: &Template) -> Result<u64> {
        let count = Request::Count {
            template: template.to_cbor(),
        };
        let timeout = self.inner.request_timeout;
        match self.call(count, None, Some(timeout), "space count").await? {
            (Reply::Count(n), _) => Ok(n),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Wait until the server has handled everything this client sent so far: the confirms
    /// of its takes (they are final from then on), the releases and the cancels of dropped
    /// requests (which then cannot take a tuple written later). Call it before a program
    /// exits; the messages are sent fire-and-forget and would otherwise die with the process.
    pub async fn flush(&self) -> Result<()> {
        self.ping().await.map(|_| ())
    }

    /// A round trip to the space server; returns how long it took. It is answered after
    /// everything this client sent before it (see [`Space::flush`]).
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let timeout = self.inner.request_timeout;
        self.call(Request::Ping, None, Some(timeout), "space ping")
            .await?;
        Ok(started.elapsed())
    }

    /// Every live tuple (or every one matching `template`), oldest first. Tuples reserved
    /// by a taker that has not confirmed yet are not listed.
    pub async fn dump(&self, template: Option<&Template>) -> Result<Vec<Tuple>> {
        self.bulk(Request::Dump {
            template: template.map(Template::to_cbor),
        })
        .await
    }

    /// TAKE_ALL, READ_ALL or DUMP.
    async fn bulk(&self, request: Request) -> Result<Vec<Tuple>> {
        let timeout = self.inner.request_timeout;
        let (reply, reservation) = self
            .call(request, None, Some(timeout), "space bulk request")
            .await?;
        let Reply::Tuples { tuples, .. } = reply else {
            return Err(unexpected(&reply));
        };
        // On a decode error the reservation guard is dropped: the tuples go back.
        let tuples = tuples
            .iter()
            .map(|f| Tuple::from_cbor(f).map_err(|e| malformed_msg(&e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        if let Some(r) = reservation {
            r.confirm();
        }
        Ok(tuples)
    }

    /// A take/read whose result is a [`Tuple`].
    async fn fetch_tuple(&self, op: Op, t: &Template, wait: Wait) -> Result<Option<Tuple>> {
        self.fetch(op, t, wait, |bytes| {
            Tuple::from_cbor(bytes).map_err(|e| malformed_msg(&e.to_string()))
        })
        .await
    }

    /// A take/read decoded straight from CBOR into `T`.
    async fn fetch_typed<T: DeserializeOwned>(
        &self,
        op: Op,
        t: &Template,
        wait: Wait,
    ) -> Result<Option<T>> {
        self.fetch(op, t, wait, |bytes| {
            from_tuple_cbor::<T>(bytes).map_err(|e| match Tuple::from_cbor(bytes) {
                Ok(tuple) => Error::TupleType {
                    tuple,
                    message: e.to_string(),
                },
                Err(bad) => malformed_msg(&bad.to_string()),
            })
        })
        .await
    }

    async fn fetch<T>(
        &self,
        op: Op,
        template: &Template,
        wait: Wait,
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        let what = if op == Op::Take {
            "space take"
        } else {
            "space read"
        };
        let request_timeout = self.inner.request_timeout;
        let (blocking, local) = match wait {
            Wait::NonBlocking => (None, Some(request_timeout)),
            Wait::Timeout(d) => (
                Some(Instant::now().checked_add(d)),
                Some(d.saturating_add(request_timeout)),
            ),
            Wait::Forever => (Some(None), None),
        };
        let template = template.to_cbor();
        let request = if op == Op::Take {
            Request::Take { template, wait }
        } else {
            Request::Read { template, wait }
        };
        let (reply, reservation) = self.call(request, blocking, local, what).await?;
        let tuple = match reply {
            Reply::Done => return Ok(None),
            Reply::Tuple { tuple, .. } => tuple,
            other => return Err(unexpected(&other)),
        };
        // A decode error drops the reservation guard: the tuple goes back.
        let value = decode(&tuple)?;
        if let Some(r) = reservation {
            r.confirm();
        }
        Ok(Some(value))
    }

    /// Send a request and wait for its reply. `blocking` is `Some(deadline)` for a take/read
    /// that may wait at the server. `local` bounds the wait here ([`Error::Timeout`]).
    /// Dropping the future (or the local timeout) withdraws the request.
    async fn call(
        &self,
        request: Request,
        blocking: Option<Option<Instant>>,
        local: Option<Duration>,
        what: &'static str,
    ) -> Result<(Reply<zmq::Message>, Option<Reservation>)> {
        let ctl = &self.inner.ctl;
        let id = ctl.next_id();
        let (tx, rx) = oneshot::channel();
        ctl.send(Cmd::Request {
            id,
            request,
            reply: tx,
            blocking: blocking.is_some(),
            deadline: blocking.flatten(),
        })?;
        let mut guard = CancelOnDrop {
            ctl,
            id,
            armed: true,
        };
        let reply = match local {
            Some(d) => match tokio::time::timeout(d, rx).await {
                Ok(r) => r,
                Err(_) => return Err(Error::Timeout { what, timeout: d }),
            },
            None => rx.await,
        };
        guard.armed = false;
        let reply = reply.map_err(|_| Error::Closed)?;
        match reply.reply {
            Reply::Error { code, message } => Err(Error::Space { code, message }),
            ok => Ok((ok, reply.reservation)),
        }
    }
}

/// Withdraws a request whose caller stopped waiting (future dropped, local timeout).
struct CancelOnDrop<'a> {
    ctl: &'a Ctl,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.ctl.send(Cmd::Cancel { id: self.id });
        }
    }
}

/// A bulk op's `max` on the wire.
fn wire_max(max: usize) -> u64 {
    u64::try_from(max).unwrap_or(u64::MAX)
}

fn wait_for(timeout: Duration) -> Wait {
    if timeout.is_zero() {
        Wait::NonBlocking
    } else {
        Wait::Timeout(timeout)
    }
}

fn malformed_msg(message: &str) -> Error {
    Error::Space {
        code: ErrorCode::Malformed,
        message: message.to_string(),
    }
}

/// A reply of a kind its request does not get (the wire's decoder reads a reply in the light
/// of its request's op, so this is a bug rather than a server's mistake).
fn unexpected<F>(reply: &Reply<F>) -> Error {
    let kind = match reply {
        Reply::Done => "an empty OK",
        Reply::Tuple { .. } => "a tuple",
        Reply::Tuples { .. } => "tuples",
        Reply::Count(_) => "a count",
        Reply::Cancelled(_) => "a cancel's answer",
        Reply::Error { .. } => "an error",
    };
    malformed_msg(&format!("unexpected reply: {kind}"))
}

/// A blocking take/read with no timeout answered "nothing": the server broke the protocol.
fn never_empty() -> Error {
    malformed_msg("the space answered a wait without a timeout with no tuple")
}

/// The endpoint to reach an advertised space at: a wildcard host (`0.0.0.0`, `*`, `[::]`)
/// is replaced by the host the client reached the broker at.
pub(crate) fn resolve_endpoint(advertised: &str, broker: &str) -> String {
    fn split(ep: &str) -> Option<(&str, &str, &str)> {
        let (scheme, rest) = ep.split_once("://")?;
        let (host, port) = rest.rsplit_once(':')?;
        Some((scheme, host, port))
    }
    match (split(advertised), split(broker)) {
        (Some(("tcp", "0.0.0.0" | "*" | "[::]", port)), Some(("tcp", broker_host, _))) => {
            format!("tcp://{broker_host}:{port}")
        }
        _ => advertised.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_are_resolved() {
        assert_eq!(
            resolve_endpoint("tcp://0.0.0.0:7402", "tcp://10.1.2.3:7400"),
            "tcp://10.1.2.3:7402"
        );
        assert_eq!(
            resolve_endpoint("tcp://*:7402", "tcp://example.org:7400"),
            "tcp://example.org:7402"
        );
        assert_eq!(
            resolve_endpoint("tcp://127.0.0.1:5000", "tcp://10.1.2.3:7400"),
            "tcp://127.0.0.1:5000"
        );
        assert_eq!(
            resolve_endpoint("ipc:///tmp/x-space", "ipc:///tmp/x"),
            "ipc:///tmp/x-space"
        );
    }
}
