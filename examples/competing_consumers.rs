//! # competing_consumers: a work queue on the bus, beside fan-out
//!
//! Two ways to receive the same stream of events:
//!
//! * **Competing consumers (a queue group).** C workers join the group `workers` on
//!   `work.<run>.>` with `queue_subscribe`: the broker hands each job to **one** of them,
//!   round robin over the members that have room, so they share the load. No worker knows
//!   the others; adding one adds capacity.
//! * **Fan-out (plain subscriptions).** A dashboard and an audit log `subscribe` to the same
//!   filter: each gets **every** job.
//!
//! A producer publishes J jobs; each worker does its share and reports `done.<run>`. When
//! all J are reported done, the coordinator publishes `ctl.<run>.stop`, a fan-out event
//! every worker receives, and they stop.
//!
//! A queue group delivers at most once: a job handed to a worker that dies is lost. Where
//! that matters, put the jobs in the tuple space (`bag_of_tasks`: a taken tuple that is
//! never confirmed goes back) or use a durable subscription.
//!
//! Lecture concepts: event-based communication, one-to-one vs one-to-many delivery over
//! the same indirect medium (queue vs topic), spatial decoupling (producers and consumers
//! never know each other), load sharing.
//!
//! Run: `cargo run --example competing_consumers [JOBS] [WORKERS] [WORK_MS]` (defaults 24,
//! 3, 5). It starts an embedded broker unless `AGORA_BROKER` names one.

use std::time::Duration;

use agora::{Client, Subscription};
use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// How long to wait for an expected event before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// A job on the bus.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Job {
    /// Which job.
    pub id: u32,
    /// How long the work takes, in milliseconds.
    pub work_ms: u64,
}

/// A worker's report that it finished a job.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Done {
    /// Which job.
    pub id: u32,
    /// Which worker did it.
    pub worker: usize,
}

/// What everybody received.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// For each worker, the ids of the jobs it did, in order.
    pub per_worker: Vec<Vec<u32>>,
    /// The reports the coordinator collected, in arrival order.
    pub done: Vec<(u32, usize)>,
    /// The job ids each fan-out subscriber saw, in order (dashboard, then audit).
    pub fan_out: Vec<Vec<u32>>,
}

/// The next event from `sub`, or an error after `WAIT`.
async fn next<T: serde::de::DeserializeOwned>(
    sub: &mut Subscription<T>,
    what: &str,
) -> anyhow::Result<agora::Event<T>> {
    Ok(tokio::time::timeout(WAIT, sub.next())
        .await
        .with_context(|| format!("{what}: nothing within {WAIT:?}"))?
        .with_context(|| format!("{what}: the subscription ended"))??)
}

/// A worker in the queue group: do each job it is handed, until the stop signal.
async fn worker(
    endpoint: String,
    run: String,
    id: usize,
    joined: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Vec<u32>> {
    let client = Client::connect(&endpoint).await?;
    let mut jobs = client
        .queue_subscribe::<Job>(&format!("work.{run}.>"), "workers")
        .await?;
    let mut stop = client.subscribe::<()>(&format!("ctl.{run}.stop")).await?;
    let _ = joined.send(());
    let mut did = Vec::new();
    loop {
        tokio::select! {
            _ = stop.next() => {
                println!("  worker {id}: stop, after {} job(s)", did.len());
                return Ok(did);
            }
            item = jobs.next() => {
                let job = item.context("the queue subscription ended")??.payload;
                tokio::time::sleep(Duration::from_millis(job.work_ms)).await; // the work
                println!("  worker {id}: did job {}", job.id);
                client.publish(&format!("done.{run}"), &Done { id: job.id, worker: id }).await?;
                did.push(job.id);
            }
        }
    }
}

/// A fan-out subscriber: print and collect every job until `jobs` have been seen.
async fn watcher(
    mut sub: Subscription<Job>,
    name: &'static str,
    jobs: usize,
) -> anyhow::Result<Vec<u32>> {
    let mut seen = Vec::with_capacity(jobs);
    while seen.len() < jobs {
        let ev = next(&mut sub, name).await?;
        println!("  {name}: saw job {} on {}", ev.payload.id, ev.topic);
        seen.push(ev.payload.id);
    }
    Ok(seen)
}

/// Run the demo: `jobs` jobs of `work` each, shared by `workers` workers.
pub async fn run(
    endpoint: &str,
    jobs: usize,
    workers: usize,
    work: Duration,
) -> anyhow::Result<Outcome> {
    if workers == 0 {
        bail!("a queue group needs at least one worker");
    }
    let run = agora_examples::run_id();
    let coordinator = Client::connect(endpoint).await?;
    let mut done = coordinator
        .subscribe::<Done>(&format!("done.{run}"))
        .await?;

    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let (joined, has_joined) = tokio::sync::oneshot::channel();
        handles.push(tokio::spawn(worker(
            endpoint.to_string(),
            run.clone(),
            id,
            joined,
        )));
        has_joined
            .await
            .with_context(|| format!("worker {id} failed to join"))?;
    }
    let mut fan_out = Vec::new();
    for name in ["dashboard", "audit"] {
        let client = Client::connect(endpoint).await?;
        let sub = client.subscribe::<Job>(&format!("work.{run}.>")).await?;
        fan_out.push(tokio::spawn(async move {
            let seen = watcher(sub, name, jobs).await;
            drop(client);
            seen
        }));
    }

    println!("== {jobs} job(s) for {workers} competing worker(s) and 2 fan-out subscribers");
    let producer = Client::connect(endpoint).await?;
    let work_ms = u64::try_from(work.as_millis()).unwrap_or(u64::MAX);
    for id in 0..jobs as u32 {
        let kind = if id % 2 == 0 { "resize" } else { "crop" };
        producer
            .publish(&format!("work.{run}.{kind}"), &Job { id, work_ms })
            .await?;
    }
    producer.flush().await?;

    let mut reports = Vec::with_capacity(jobs);
    while reports.len() < jobs {
        let d = next(&mut done, "coordinator").await?.payload;
        reports.push((d.id, d.worker));
    }
    println!("== all {jobs} job(s) done: stopping the workers");
    coordinator.publish(&format!("ctl.{run}.stop"), &()).await?;
    coordinator.flush().await?;

    let mut per_worker = Vec::with_capacity(workers);
    for h in handles {
        per_worker.push(h.await??);
    }
    let mut seen = Vec::new();
    for h in fan_out {
        seen.push(h.await??);
    }
    let shares: Vec<usize> = per_worker.iter().map(Vec::len).collect();
    println!(
        "jobs per worker: {shares:?}; each fan-out subscriber saw {:?}",
        seen.iter().map(Vec::len).collect::<Vec<_>>()
    );
    Ok(Outcome {
        per_worker,
        done: reports,
        fan_out: seen,
    })
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let jobs = agora_examples::arg(1, 24)?;
    let workers = agora_examples::arg(2, 3)?;
    let work = Duration::from_millis(agora_examples::arg(3, 5)?);
    run(&endpoint, jobs, workers, work).await?;
    Ok(())
}
