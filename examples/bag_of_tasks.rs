//! # bag_of_tasks: master/worker through the space, with a poison pill
//!
//! The master writes every task into the space as `("task", run, i, x)` while **no worker is
//! running yet**, then goes away. Workers started afterwards still find the work: the tasks
//! outlive their writer (decoupled in time). Each worker loops on
//! `in(("task", run, ?i, ?x))`, computes, and writes `("result", run, i, y, worker)`. Which
//! worker gets which task nobody decides: whoever asks first (decoupled in space; the
//! load balances itself). A collector takes the T results, then writes one
//! **poison pill** `("task", run, -1, 0)` per worker; a worker that takes a pill stops.
//!
//! Each task simulates a fixed amount of work (a sleep, like waiting on I/O). The bag is
//! run with 1, 2 and 4 workers and the speedup printed (timings vary; they are printed,
//! never asserted).
//!
//! Lecture concepts: the shared space, temporal decoupling (tasks outlive their writer),
//! spatial decoupling (anonymous workers), persistent vs transient communication.
//!
//! Run: `cargo run --example bag_of_tasks [TASKS] [WORK_MS]` (defaults 40 tasks of 10 ms).
//! It starts an embedded broker unless `AGORA_BROKER` names one.

use std::time::{Duration, Instant};

use agora::{template, Client, Space};
use anyhow::Context;

/// How long any one wait may take before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// One round of the bag with a given number of workers.
#[derive(Debug, Clone)]
pub struct Round {
    /// How many workers took part.
    pub workers: usize,
    /// `(task, result, worker)` for every result collected.
    pub results: Vec<(i64, i64, usize)>,
    /// How many tasks each worker did (index = worker).
    pub done_by: Vec<usize>,
    /// How many poison pills the workers swallowed (one each when all went well).
    pub pills: usize,
    /// Tuples of this round left in the space at the end.
    pub leftovers: u64,
    /// Time from the first worker's start to the last result.
    pub elapsed: Duration,
}

/// The "computation": a fixed delay, then x².
async fn compute(x: i64, work: Duration) -> i64 {
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
    x * x
}

async fn connect_space(endpoint: &str) -> anyhow::Result<Space> {
    Ok(Client::connect(endpoint).await?.space()?)
}

/// A worker: take tasks until a poison pill comes; returns `(tasks done, pills taken)`.
async fn worker(
    space: Space,
    run: String,
    id: usize,
    work: Duration,
) -> anyhow::Result<(usize, usize)> {
    let task = template!("task", run.as_str(), ?int, ?int);
    let mut done = 0;
    loop {
        let (_, _, i, x): (String, String, i64, i64) = space
            .take_timeout_as(&task, WAIT)
            .await?
            .with_context(|| format!("worker {id}: neither a task nor a pill in {WAIT:?}"))?;
        if i < 0 {
            println!("  worker {id}: poison pill after {done} task(s)");
            return Ok((done, 1));
        }
        let y = compute(x, work).await;
        space.out(&("result", &run, i, y, id as i64)).await?;
        done += 1;
    }
}

/// One round: post `tasks` tasks, then start `workers` workers, collect, poison.
pub async fn round(
    endpoint: &str,
    tasks: usize,
    workers: usize,
    work: Duration,
) -> anyhow::Result<Round> {
    let run = agora_examples::run_id();
    // The master posts every task and disconnects before any worker exists.
    {
        let master = connect_space(endpoint).await?;
        for i in 0..tasks as i64 {
            master.out(&("task", &run, i, i + 1)).await?;
        }
        let waiting = master.count(&template!("task", run.as_str(), _, _)).await?;
        println!("  master: posted {tasks} task(s) and left; {waiting} wait in the space");
    }

    let start = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let space = connect_space(endpoint).await?;
        handles.push(tokio::spawn(worker(space, run.clone(), id, work)));
    }

    // The collector: a fresh connection that takes the T results, then poisons the workers.
    let collector = connect_space(endpoint).await?;
    let result = template!("result", run.as_str(), ?int, ?int, ?int);
    let mut results = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (_, _, i, y, w): (String, String, i64, i64, i64) = collector
            .take_timeout_as(&result, WAIT)
            .await?
            .context("collector: a result is missing")?;
        results.push((i, y, usize::try_from(w).context("bad worker id")?));
    }
    let elapsed = start.elapsed();
    for _ in 0..workers {
        collector.out(&("task", &run, -1, 0)).await?;
    }
    let mut done_by = Vec::with_capacity(workers);
    let mut pills = 0;
    for h in handles {
        let (done, pill) = h.await??;
        done_by.push(done);
        pills += pill;
    }
    let leftovers = collector.count(&template!(_, run.as_str(), _, _)).await?
        + collector
            .count(&template!(_, run.as_str(), _, _, _))
            .await?;
    Ok(Round {
        workers,
        results,
        done_by,
        pills,
        leftovers,
        elapsed,
    })
}

/// Run the bag with each worker count in `worker_counts` and print the speedups.
pub async fn run(
    endpoint: &str,
    tasks: usize,
    work: Duration,
    worker_counts: &[usize],
) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::new();
    for &w in worker_counts {
        println!("== {tasks} task(s) of {work:?}, {w} worker(s)");
        let r = round(endpoint, tasks, w, work).await?;
        println!("  tasks per worker: {:?}; {:.1?}", r.done_by, r.elapsed);
        rounds.push(r);
    }
    if let Some(base) = rounds.first().map(|r| r.elapsed) {
        println!("{:>8}  {:>10}  {:>8}", "workers", "time", "speedup");
        for r in &rounds {
            let speedup = base.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9);
            println!("{:>8}  {:>10.1?}  {:>7.2}x", r.workers, r.elapsed, speedup);
        }
    }
    Ok(rounds)
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let tasks = agora_examples::arg(1, 40)?;
    let work = Duration::from_millis(agora_examples::arg(2, 10)?);
    run(&endpoint, tasks, work, &[1, 2, 4]).await?;
    Ok(())
}
