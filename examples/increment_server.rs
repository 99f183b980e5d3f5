//! # increment_server: the lecture's Erlang increment server, twice
//!
//! ```erlang
//! loop() -> receive {inc, From, N} -> From ! {reply, N + 1}, loop() end.
//! ```
//!
//! 1. **Request-reply over the bus.** The server subscribes to `inc.<run>.request`; each
//!    client subscribes to its own reply topic first, then publishes
//!    `{id, reply_to, n}`. The request goes to a topic: the client does not know which
//!    server, if any, listens (indirect). The reply goes where the client said, like
//!    Erlang's `From`: addressed to that one client (its mailbox, in effect). Both sides
//!    must be running at the same time: a request published while no server listens is
//!    lost to it (coupled in time).
//! 2. **Through the tuple space.** The client writes `("inc", id, 10)` and waits in
//!    `in(("inc-reply", id, ?int))`; the server loops on `in(("inc", ?str, ?int))` and writes
//!    `("inc-reply", id, n + 1)`. Nobody addresses anybody: the id in the tuple is the only
//!    correlation, any server may answer, and a request written before any server runs
//!    simply waits (decoupled in space *and* time).
//!
//! Lecture concepts: direct vs indirect addressing, spatial and temporal coupling,
//! request-reply on top of asynchronous messaging, the shared space.
//!
//! Run: `cargo run --example increment_server [CLIENTS] [REQUESTS_PER_CLIENT]`
//! (defaults 3 and 4). It starts an embedded broker unless `AGORA_BROKER` names one.

use std::time::Duration;

use agora::{template, Client};
use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// How long a client waits for any one reply before it gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request on the bus: Erlang's `{inc, From, N}`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct IncRequest {
    /// Correlates the reply with the request.
    pub id: u64,
    /// The topic the reply goes to (Erlang's `From`).
    pub reply_to: String,
    /// The number to increment.
    pub n: i64,
}

/// A reply on the bus: `{reply, N + 1}`, with the request's id.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct IncReply {
    /// The id of the request this answers.
    pub id: u64,
    /// The incremented number.
    pub n: i64,
}

/// One answered call: what a client sent and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which client made it.
    pub client: usize,
    /// The number sent.
    pub sent: i64,
    /// The number received.
    pub received: i64,
}

/// What both variants did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The calls made through the bus.
    pub bus: Vec<Call>,
    /// How many requests the bus server answered.
    pub bus_served: usize,
    /// The calls made through the tuple space.
    pub space: Vec<Call>,
    /// How many requests the space server answered.
    pub space_served: usize,
}

/// Run both variants with `clients` concurrent clients making `requests` calls each.
pub async fn run(endpoint: &str, clients: usize, requests: usize) -> anyhow::Result<Outcome> {
    let run = agora_examples::run_id();
    let (bus, bus_served) = over_the_bus(endpoint, &run, clients, requests).await?;
    let (space, space_served) = through_the_space(endpoint, &run, clients, requests).await?;
    Ok(Outcome {
        bus,
        bus_served,
        space,
        space_served,
    })
}

/// Variant 1: request-reply over the bus, with reply topics and correlation ids.
async fn over_the_bus(
    endpoint: &str,
    run: &str,
    clients: usize,
    requests: usize,
) -> anyhow::Result<(Vec<Call>, usize)> {
    println!("== over the bus: {clients} client(s) x {requests} request(s)");
    let request_topic = format!("inc.{run}.request");

    // The server: one subscription, one reply per request, until told to stop.
    let server = Client::connect(endpoint).await?;
    let mut requests_in = server.subscribe::<IncRequest>(&request_topic).await?;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let server_task = tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                item = requests_in.next() => {
                    let Some(item) = item else { break };
                    let req = item?.payload;
                    println!("  server: inc({}) for {} -> {}", req.n, req.reply_to, req.n + 1);
                    server
                        .publish(&req.reply_to, &IncReply { id: req.id, n: req.n + 1 })
                        .await?;
                    served += 1;
                }
            }
        }
        anyhow::Ok(served)
    });

    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoint.to_string();
        let request_topic = request_topic.clone();
        let reply_to = format!("inc.{run}.reply.c{c}");
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&endpoint).await?;
            // Subscribe before asking: a reply published before this would be missed (the
            // bus is transient for live subscribers).
            let mut replies = client.subscribe::<IncReply>(&reply_to).await?;
            let mut calls = Vec::new();
            for i in 0..requests {
                let n = (c * 100 + i) as i64;
                let id = i as u64;
                let req = IncRequest {
                    id,
                    reply_to: reply_to.clone(),
                    n,
                };
                client.publish(&request_topic, &req).await?;
                let reply = tokio::time::timeout(REPLY_TIMEOUT, replies.next())
                    .await
                    .context("no reply in time")?
                    .context("reply stream ended")??
                    .payload;
                if reply.id != id {
                    bail!(
                        "client {c}: reply for request {} while waiting for {id}",
                        reply.id
                    );
                }
                println!("  client {c}: inc({n}) = {}", reply.n);
                calls.push(Call {
                    client: c,
                    sent: n,
                    received: reply.n,
                });
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await??);
    }
    let _ = stop.send(());
    let served = server_task.await??;
    Ok((calls, served))
}

/// Variant 2: the same service through the tuple space.
async fn through_the_space(
    endpoint: &str,
    run: &str,
    clients: usize,
    requests: usize,
) -> anyhow::Result<(Vec<Call>, usize)> {
    println!("== through the space: {clients} client(s) x {requests} request(s)");
    // The clients start before the server: a request written while no server runs simply
    // waits in the space (time decoupling) until the server below takes it.
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoint.to_string();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let space = Client::connect(&endpoint).await?.space()?;
            let mut calls = Vec::new();
            for i in 0..requests {
                let n = (c * 100 + i) as i64;
                let id = format!("{run}/c{c}/{i}");
                space.out(&("inc", &id, n)).await?;
                let (_, _, reply): (String, String, i64) = space
                    .take_timeout_as(&template!("inc-reply", id.as_str(), ?int), REPLY_TIMEOUT)
                    .await?
                    .context("no reply in time")?;
                println!("  client {c}: in((\"inc-reply\", {id:?}, ?int)) -> {reply}");
                calls.push(Call {
                    client: c,
                    sent: n,
                    received: reply,
                });
            }
            anyhow::Ok(calls)
        }));
    }

    // The server: in(("inc", ?id, ?n)) then out(("inc-reply", id, n + 1)), until stopped.
    let space = Client::connect(endpoint).await?.space()?;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let server_task = tokio::spawn(async move {
        let mut served = 0usize;
        let request = template!("inc", ?str, ?int);
        loop {
            tokio::select! {
                // Dropping the pending take withdraws it: it cannot swallow a later request.
                _ = &mut stopped => break,
                req = space.take_as::<(String, String, i64)>(&request) => {
                    let (_, id, n) = req?;
                    println!("  server: in((\"inc\", {id:?}, {n})) -> out(\"inc-reply\", {})", n + 1);
                    space.out(&("inc-reply", &id, n + 1)).await?;
                    served += 1;
                }
            }
        }
        anyhow::Ok(served)
    });

    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await??);
    }
    let _ = stop.send(());
    let served = server_task.await??;
    Ok((calls, served))
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let clients = agora_examples::arg(1, 3)?;
    let requests = agora_examples::arg(2, 4)?;
    let outcome = run(&endpoint, clients, requests).await?;
    println!(
        "bus: {} calls answered by the server's {} replies; space: {} calls, {} replies",
        outcome.bus.len(),
        outcome.bus_served,
        outcome.space.len(),
        outcome.space_served
    );
    Ok(())
}
