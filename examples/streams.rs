//! # streams: ordered streams in an unordered space
//!
//! A tuple space is a bag: no order. Index tuples make a stream out of it (Carriero and
//! Gelernter, "How to write parallel programs"):
//!
//! * **In-stream** (many producers, many consumers, each element consumed once). Elements
//!   are `("in-stream", run, index, value)`; a tail tuple `("in-tail", run, t)` says where
//!   the next element goes, a head tuple `("in-head", run, h)` which one is consumed next.
//!   Append: `in(tail ?t); out(tail t+1); out(element t)`. Consume: `in(head ?h);
//!   out(head h+1); in(element h)`. Taking the index tuple is the lock; the element is
//!   consumed exactly once, in stream order.
//! * **Read-stream** (every reader sees every element: broadcast through the space).
//!   Producers append the same way; a reader keeps its own index and `rd`s element 0, 1,
//!   2, ... Nothing is taken, so every reader sees the whole stream, in order, whenever it
//!   comes (a late reader still sees it all: the elements persist).
//!
//! Each stream ends with end markers (value -1): one per consumer for the in-stream (each
//! consumer takes exactly one and stops), one for the read-stream (every reader reads it).
//!
//! Lecture concepts: the shared space (distributed data structures), persistent vs
//! transient communication (a read-stream is a persistent broadcast), many-to-many
//! communication without addresses.
//!
//! Run: `cargo run --example streams [PRODUCERS] [CONSUMERS] [ELEMENTS_PER_PRODUCER]`
//! (defaults 3, 3, 5). It starts an embedded broker unless `AGORA_BROKER` names one.

use std::time::Duration;

use agora::{template, Client, Space};
use anyhow::Context;

/// How long any one wait may take before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// The value that ends a stream.
const END: i64 = -1;

/// What happened on both streams.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// In-stream: `(index, value)` of every element appended, in no particular order.
    pub in_produced: Vec<(i64, i64)>,
    /// In-stream: what each consumer took, `(index, value)` in the order it took them.
    pub in_consumed: Vec<Vec<(i64, i64)>>,
    /// Read-stream: `(index, value)` of every element appended.
    pub rd_produced: Vec<(i64, i64)>,
    /// Read-stream: what each reader read, `(index, value)` in order.
    pub rd_seen: Vec<Vec<(i64, i64)>>,
}

async fn connect_space(endpoint: &str) -> anyhow::Result<Space> {
    Ok(Client::connect(endpoint).await?.space()?)
}

/// Append `value` to stream `name` (element tuples `(name, run, index, value)`, tail tuple
/// `(tail, run, t)`); returns the index it got.
async fn append(
    space: &Space,
    run: &str,
    name: &str,
    tail: &str,
    value: i64,
) -> anyhow::Result<i64> {
    let (_, _, t): (String, String, i64) = space
        .take_timeout_as(&template!(tail, run, ?int), WAIT)
        .await?
        .with_context(|| format!("the {tail} tuple is gone"))?;
    space.out(&(tail, run, t + 1)).await?;
    space.out(&(name, run, t, value)).await?;
    Ok(t)
}

/// Start `producers` producers appending `per_producer` elements each to a stream; returns
/// the `(index, value)` pairs they appended.
async fn produce(
    endpoint: &str,
    run: &str,
    name: &'static str,
    tail: &'static str,
    producers: usize,
    per_producer: usize,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let space = connect_space(endpoint).await?;
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut appended = Vec::with_capacity(per_producer);
            for j in 0..per_producer {
                let value = (p * 1000 + j) as i64;
                let index = append(&space, &run, name, tail, value).await?;
                println!("  producer {p}: {name}[{index}] = {value}");
                appended.push((index, value));
            }
            anyhow::Ok(appended)
        }));
    }
    let mut produced = Vec::new();
    for t in tasks {
        produced.extend(t.await??);
    }
    Ok(produced)
}

/// The in-stream: many producers, many consumers, each element consumed once.
pub async fn in_stream(
    endpoint: &str,
    run: &str,
    producers: usize,
    consumers: usize,
    per_producer: usize,
) -> anyhow::Result<(Vec<(i64, i64)>, Vec<Vec<(i64, i64)>>)> {
    println!("== in-stream: {producers} producer(s), {consumers} consumer(s)");
    let init = connect_space(endpoint).await?;
    init.out(&("in-tail", run, 0)).await?;
    init.out(&("in-head", run, 0)).await?;

    let mut tasks = Vec::with_capacity(consumers);
    for c in 0..consumers {
        let space = connect_space(endpoint).await?;
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let (_, _, h): (String, String, i64) = space
                    .take_timeout_as(&template!("in-head", run.as_str(), ?int), WAIT)
                    .await?
                    .context("the in-head tuple is gone")?;
                space.out(&("in-head", &run, h + 1)).await?;
                let element = template!("in-stream", run.as_str(), h, ?int);
                let (_, _, _, value): (String, String, i64, i64) = space
                    .take_timeout_as(&element, WAIT)
                    .await?
                    .with_context(|| format!("consumer {c}: element {h} never came"))?;
                if value == END {
                    println!(
                        "  consumer {c}: end of stream after {} element(s)",
                        taken.len()
                    );
                    return anyhow::Ok(taken);
                }
                println!("  consumer {c}: in-stream[{h}] = {value}");
                taken.push((h, value));
            }
        }));
    }

    let produced = produce(
        endpoint,
        run,
        "in-stream",
        "in-tail",
        producers,
        per_producer,
    )
    .await?;
    // One end marker per consumer: each consumer stops at the first it takes.
    for _ in 0..consumers {
        append(&init, run, "in-stream", "in-tail", END).await?;
    }
    let mut consumed = Vec::with_capacity(consumers);
    for t in tasks {
        consumed.push(t.await??);
    }
    init.take_all(&template!("in-tail", run, _), 1).await?;
    init.take_all(&template!("in-head", run, _), 1).await?;
    Ok((produced, consumed))
}

/// The read-stream: many producers, many readers, every reader sees every element.
pub async fn read_stream(
    endpoint: &str,
    run: &str,
    producers: usize,
    readers: usize,
    per_producer: usize,
) -> anyhow::Result<(Vec<(i64, i64)>, Vec<Vec<(i64, i64)>>)> {
    println!("== read-stream: {producers} producer(s), {readers} reader(s)");
    let init = connect_space(endpoint).await?;
    init.out(&("rd-tail", run, 0)).await?;

    let mut tasks = Vec::with_capacity(readers);
    for r in 0..readers {
        let space = connect_space(endpoint).await?;
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0i64.. {
                let element = template!("rd-stream", run.as_str(), i, ?int);
                let (_, _, _, value): (String, String, i64, i64) = space
                    .read_timeout_as(&element, WAIT)
                    .await?
                    .with_context(|| format!("reader {r}: element {i} never came"))?;
                if value == END {
                    break;
                }
                println!("  reader {r}: rd-stream[{i}] = {value}");
                seen.push((i, value));
            }
            println!(
                "  reader {r}: end of stream, saw all {} element(s)",
                seen.len()
            );
            anyhow::Ok(seen)
        }));
    }

    let produced = produce(
        endpoint,
        run,
        "rd-stream",
        "rd-tail",
        producers,
        per_producer,
    )
    .await?;
    append(&init, run, "rd-stream", "rd-tail", END).await?;
    let mut seen = Vec::with_capacity(readers);
    for t in tasks {
        seen.push(t.await??);
    }
    // The stream stays until somebody removes it; this run cleans up after itself.
    let all = producers * per_producer + 1;
    init.take_all(&template!("rd-stream", run, _, _), all)
        .await?;
    init.take_all(&template!("rd-tail", run, _), 1).await?;
    Ok((produced, seen))
}

/// Both streams with the given numbers of producers and consumers/readers.
pub async fn run(
    endpoint: &str,
    producers: usize,
    consumers: usize,
    per_producer: usize,
) -> anyhow::Result<Outcome> {
    if consumers == 0 {
        anyhow::bail!("a stream needs at least one consumer");
    }
    let run = agora_examples::run_id();
    let (in_produced, in_consumed) =
        in_stream(endpoint, &run, producers, consumers, per_producer).await?;
    let (rd_produced, rd_seen) =
        read_stream(endpoint, &run, producers, consumers, per_producer).await?;
    Ok(Outcome {
        in_produced,
        in_consumed,
        rd_produced,
        rd_seen,
    })
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let producers = agora_examples::arg(1, 3)?;
    let consumers = agora_examples::arg(2, 3)?;
    let per_producer = agora_examples::arg(3, 5)?;
    run(&endpoint, producers, consumers, per_producer).await?;
    Ok(())
}
