//! # sync_over_async: a blocking call built from publish/subscribe, and back
//!
//! The lecture's homework: the bus only offers asynchronous, one-way messages (publish and
//! go on; events arrive whenever they arrive). Build a *synchronous* call on top of it:
//!
//! * the caller subscribes once to its own reply topic (`rpc.<run>.reply.<caller>`);
//! * each call publishes a request carrying a fresh **correlation id** and the reply topic,
//!   then waits for the reply with that id, for at most a **timeout**;
//! * one task routes every reply to the call waiting for its id; a reply that comes after
//!   its caller gave up finds nobody waiting and is dropped (counted as "late"), so it can
//!   never be mistaken for the answer to a later call.
//!
//! Then the other way round, **async built on sync**: wrap the blocking call in a task and
//! hand back a handle to wait on later (a future/promise); ten calls in flight at once cost
//! about one round trip instead of ten.
//!
//! Lecture concepts: synchronous vs asynchronous communication, event-based communication,
//! correlation of requests and replies, timeouts.
//!
//! Run: `cargo run --example sync_over_async [CALLS]` (default 10). It starts an embedded
//! broker unless `AGORA_BROKER` names one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora::Client;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

/// A request on the bus.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Request {
    /// The correlation id: the reply carries it back.
    pub id: u64,
    /// Where the reply goes.
    pub reply_to: String,
    /// The argument.
    pub x: i64,
}

/// A reply on the bus.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Reply {
    /// The id of the request it answers.
    pub id: u64,
    /// The result.
    pub value: i64,
}

/// Why a synchronous call failed.
#[derive(Debug)]
pub enum CallError {
    /// No reply came within the timeout (nobody serves the method, or it is too slow).
    Timeout {
        /// The call's correlation id.
        id: u64,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The bus refused the request or the client is gone.
    Bus(agora::Error),
    /// The reply router stopped (its subscription ended).
    RouterGone,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout { id, timeout } => {
                write!(f, "no reply to call {id} within {timeout:?}")
            }
            CallError::Bus(e) => write!(f, "{e}"),
            CallError::RouterGone => write!(f, "the reply router stopped"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<agora::Error> for CallError {
    fn from(e: agora::Error) -> CallError {
        CallError::Bus(e)
    }
}

/// Calls waiting for their reply, by correlation id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<i64>>>>;

/// A synchronous RPC caller over the asynchronous bus.
#[derive(Clone)]
pub struct RpcClient {
    client: Client,
    prefix: String,
    reply_to: String,
    next_id: Arc<AtomicU64>,
    pending: Pending,
    late: Arc<AtomicU64>,
}

impl RpcClient {
    /// Connect a caller named `name`; services live under `rpc.<run>.<method>`.
    pub async fn connect(endpoint: &str, run: &str, name: &str) -> anyhow::Result<RpcClient> {
        let client = Client::connect(endpoint).await?;
        let reply_to = format!("rpc.{run}.reply.{name}");
        // Subscribe before any request goes out, so no reply can be missed.
        let mut replies = client.subscribe::<Reply>(&reply_to).await?;
        let pending: Pending = Arc::default();
        let late = Arc::new(AtomicU64::new(0));
        let (router_pending, router_late) = (pending.clone(), late.clone());
        tokio::spawn(async move {
            while let Some(item) = replies.next().await {
                let Ok(ev) = item else { continue };
                // A short critical section: a map lookup, no await while locked.
                let waiter = router_pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&ev.payload.id));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(ev.payload.value);
                    }
                    None => {
                        println!("  router: late reply to call {} dropped", ev.payload.id);
                        router_late.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Ok(RpcClient {
            client,
            prefix: format!("rpc.{run}"),
            reply_to,
            next_id: Arc::new(AtomicU64::new(1)),
            pending,
            late,
        })
    }

    /// Call `method` with `x` and wait for the result, at most `timeout`: synchronous from
    /// the caller's point of view, built from one publish and one subscription.
    pub async fn call(&self, method: &str, x: i64, timeout: Duration) -> Result<i64, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let request = Request {
            id,
            reply_to: self.reply_to.clone(),
            x,
        };
        let topic = format!("{}.{method}", self.prefix);
        if let Err(e) = self.client.publish(&topic, &request).await {
            self.forget(id);
            return Err(e.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(CallError::RouterGone),
            Err(_) => {
                // Give up: a reply that still comes finds no waiter and is dropped.
                self.forget(id);
                Err(CallError::Timeout { id, timeout })
            }
        }
    }

    /// A one-way message (Erlang's `cast`): publish the request, expect no reply.
    pub async fn cast(&self, method: &str, x: i64) -> Result<(), CallError> {
        let request = Request {
            id: 0,
            reply_to: self.reply_to.clone(),
            x,
        };
        let topic = format!("{}.{method}", self.prefix);
        Ok(self.client.publish(&topic, &request).await?)
    }

    /// Async built on sync: start the call in its own task and return at once; await the
    /// handle when the result is needed (a future / promise).
    pub fn call_async(
        &self,
        method: &str,
        x: i64,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<Result<i64, CallError>> {
        let me = self.clone();
        let method = method.to_string();
        tokio::spawn(async move { me.call(&method, x, timeout).await })
    }

    /// How many replies came after their caller had given up.
    pub fn late_replies(&self) -> u64 {
        self.late.load(Ordering::SeqCst)
    }

    fn forget(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }
}

/// Serve `rpc.<run>.square` (x → x²) and `rpc.<run>.slow` (x → x + 1000, but only once
/// `release` is notified: the demo releases it after the caller has timed out).
pub async fn serve(
    endpoint: &str,
    run: &str,
    release: Arc<Notify>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let client = Client::connect(endpoint).await?;
    let mut requests = client.subscribe::<Request>(&format!("rpc.{run}.*")).await?;
    Ok(tokio::spawn(async move {
        while let Some(item) = requests.next().await {
            let ev = item?;
            let req = ev.payload;
            let value = if ev.topic.ends_with(".square") {
                req.x * req.x
            } else if ev.topic.ends_with(".slow") {
                release.notified().await;
                req.x + 1000
            } else if ev.topic.ends_with(".stop") {
                return Ok(());
            } else {
                continue; // a method nobody serves: the caller will time out
            };
            client
                .publish(&req.reply_to, &Reply { id: req.id, value })
                .await?;
        }
        Ok(())
    }))
}

/// What the demo observed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `(x, result)` of the sequential synchronous calls.
    pub sync_results: Vec<(i64, i64)>,
    /// Whether the call to a method nobody serves timed out.
    pub unserved_timed_out: bool,
    /// Whether the call to the slow method timed out.
    pub slow_timed_out: bool,
    /// The result of the call made right after the slow one's late reply was dropped.
    pub after_late: Option<i64>,
    /// Replies dropped because their caller had given up.
    pub late_replies: u64,
    /// `(x, result)` of the calls run concurrently as promises.
    pub async_results: Vec<(i64, i64)>,
    /// Time for the sequential calls.
    pub sync_time: Duration,
    /// Time for the same number of calls in flight at once.
    pub async_time: Duration,
}

/// Run the demo with `calls` calls each way.
pub async fn run(endpoint: &str, calls: usize) -> anyhow::Result<Outcome> {
    let run = agora_examples::run_id();
    let release = Arc::new(Notify::new());
    let server = serve(endpoint, &run, release.clone()).await?;
    let rpc = RpcClient::connect(endpoint, &run, "caller").await?;
    let timeout = Duration::from_secs(5);
    let mut out = Outcome::default();

    println!("== sync over async: {calls} blocking calls, one after the other");
    let start = Instant::now();
    for x in 0..calls as i64 {
        let v = rpc.call("square", x, timeout).await?;
        println!("  square({x}) = {v}");
        out.sync_results.push((x, v));
    }
    out.sync_time = start.elapsed();

    println!("== timeouts");
    let short = Duration::from_millis(200);
    match rpc.call("nobody", 1, short).await {
        Err(CallError::Timeout { id, timeout }) => {
            println!("  nobody(1): call {id} timed out after {timeout:?} (nobody serves it)");
            out.unserved_timed_out = true;
        }
        other => println!("  nobody(1): unexpected {other:?}"),
    }
    match rpc.call("slow", 7, short).await {
        Err(CallError::Timeout { id, .. }) => {
            println!("  slow(7): call {id} timed out; the server answers only now");
            out.slow_timed_out = true;
        }
        other => println!("  slow(7): unexpected {other:?}"),
    }
    // Let the slow server answer the call that already gave up, and wait (with a deadline)
    // for the router to drop that late reply.
    release.notify_one();
    let rpc2 = rpc.clone();
    agora_examples::wait_until(timeout, move || {
        let rpc = rpc2.clone();
        async move { rpc.late_replies() >= 1 }
    })
    .await;
    out.late_replies = rpc.late_replies();
    let v = rpc.call("square", 12, timeout).await?;
    println!("  square(12) = {v} (its own reply, not the late one)");
    out.after_late = Some(v);

    println!("== async on sync: {calls} calls in flight at once, awaited later");
    let start = Instant::now();
    let promises: Vec<_> = (0..calls as i64)
        .map(|x| (x, rpc.call_async("square", x, timeout)))
        .collect();
    println!(
        "  {} calls started; the caller is free meanwhile",
        promises.len()
    );
    for (x, p) in promises {
        let v = p.await??;
        out.async_results.push((x, v));
    }
    out.async_time = start.elapsed();
    println!(
        "  sequential: {:?}, concurrent: {:?} for {calls} calls",
        out.sync_time, out.async_time
    );

    // Stop the server: a one-way message, no reply expected.
    rpc.cast("stop", 0).await?;
    server.await??;
    Ok(out)
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let calls = agora_examples::arg(1, 10)?;
    run(&endpoint, calls).await?;
    Ok(())
}
