//! # semaphore_barrier_counter: three synchronisation classics, each a few tuples
//!
//! * **Counting semaphore.** K tuples `("sem", run, name)` are the K permits: `P` is
//!   `in(("sem", run, name))`, `V` is `out(("sem", run, name))`. W workers share K permits;
//!   the program checks that never more than K are inside at once.
//! * **Barrier.** A counter tuple `("barrier", run, name, count)`. Arriving is
//!   `in(("barrier", run, name, ?c)); out(("barrier", run, name, c + 1))`; waiting for the
//!   others is `rd(("barrier", run, name, N))`: the read blocks until the count is N, and
//!   then everyone reads it, nobody takes it.
//! * **Atomic shared counter.** One tuple `("counter", run, name, v)`: increment is
//!   `in(... ?v)` then `out(... v + 1)`. The `in` removes the tuple, so while one process
//!   holds it, every other incrementer waits: no lost update. P processes each incrementing
//!   M times leave exactly P × M.
//!
//! Every participant is its own client connection.
//!
//! Lecture concepts: the shared space as a synchronisation medium (tuples as permits,
//! counters and conditions), blocking `in`/`rd` as wait, indirect addressing.
//!
//! Run: `cargo run --example semaphore_barrier_counter [WORKERS] [PERMITS] [INCREMENTS]`
//! (defaults 6, 2, 10). It starts an embedded broker unless `AGORA_BROKER` names one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora::{template, Client, Space};
use anyhow::{bail, Context};

/// How long any one wait may take before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// What the three demos observed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Semaphore: how many workers got through their critical section.
    pub sem_completed: usize,
    /// Semaphore: the most workers inside at the same time.
    pub sem_max_inside: usize,
    /// Semaphore: permits in the space afterwards.
    pub sem_permits_left: u64,
    /// Barrier: for each process, how many had arrived when it got through (all N if the
    /// barrier works).
    pub barrier_seen: Vec<usize>,
    /// Counter: its final value.
    pub counter: i64,
}

async fn connect_space(endpoint: &str) -> anyhow::Result<Space> {
    Ok(Client::connect(endpoint).await?.space()?)
}

/// `workers` workers pass through a critical section guarded by a `permits`-permit
/// semaphore; returns `(completed, max inside at once, permits left)`.
pub async fn semaphore(
    endpoint: &str,
    run: &str,
    workers: usize,
    permits: usize,
) -> anyhow::Result<(usize, usize, u64)> {
    println!("== semaphore: {workers} workers, {permits} permit(s)");
    let init = connect_space(endpoint).await?;
    for _ in 0..permits {
        init.out(&("sem", run, "printer")).await?;
    }
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let space = connect_space(endpoint).await?;
        let (inside, max_inside) = (inside.clone(), max_inside.clone());
        let permit = template!("sem", run, "printer");
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            // P(sem)
            space
                .take_timeout(&permit, WAIT)
                .await?
                .with_context(|| format!("worker {w}: no permit in {WAIT:?}"))?;
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            max_inside.fetch_max(now, Ordering::SeqCst);
            println!("  worker {w} is in ({now} inside)");
            tokio::time::sleep(Duration::from_millis(2)).await; // the critical section's work
            inside.fetch_sub(1, Ordering::SeqCst);
            // V(sem)
            space.out(&("sem", &run, "printer")).await?;
            anyhow::Ok(())
        }));
    }
    let mut completed = 0;
    for t in tasks {
        t.await??;
        completed += 1;
    }
    let left = init
        .take_all(&template!("sem", run, "printer"), permits + 1)
        .await?;
    Ok((
        completed,
        max_inside.load(Ordering::SeqCst),
        left.len() as u64,
    ))
}

/// `n` processes meet at a barrier; returns, per process, how many had arrived when it got
/// through.
pub async fn barrier(endpoint: &str, run: &str, n: usize) -> anyhow::Result<Vec<usize>> {
    println!("== barrier: {n} processes");
    let init = connect_space(endpoint).await?;
    init.out(&("barrier", run, "phase-1", 0)).await?;
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for p in 0..n {
        let space = connect_space(endpoint).await?;
        let arrived = arrived.clone();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            // Processes arrive at different times.
            tokio::time::sleep(Duration::from_millis((p * 3 % 7) as u64)).await;
            arrived.fetch_add(1, Ordering::SeqCst);
            let counter = template!("barrier", run.as_str(), "phase-1", ?int);
            let (_, _, _, c): (String, String, String, i64) = space
                .take_timeout_as(&counter, WAIT)
                .await?
                .context("the barrier counter is gone")?;
            space.out(&("barrier", &run, "phase-1", c + 1)).await?;
            println!("  process {p} arrives ({} of {n})", c + 1);
            let all = template!("barrier", run.as_str(), "phase-1", n as i64);
            space
                .read_timeout(&all, WAIT)
                .await?
                .with_context(|| format!("process {p}: the barrier never opened"))?;
            let seen = arrived.load(Ordering::SeqCst);
            println!("  process {p} passes the barrier ({seen} arrived)");
            anyhow::Ok(seen)
        }));
    }
    let mut seen = Vec::with_capacity(n);
    for t in tasks {
        seen.push(t.await??);
    }
    init.take_all(&template!("barrier", run, "phase-1", _), 1)
        .await?;
    Ok(seen)
}

/// `processes` processes each increment a shared counter `increments` times; returns the
/// final value.
pub async fn counter(
    endpoint: &str,
    run: &str,
    processes: usize,
    increments: usize,
) -> anyhow::Result<i64> {
    println!("== counter: {processes} processes x {increments} increments");
    let init = connect_space(endpoint).await?;
    init.out(&("counter", run, "hits", 0)).await?;
    let mut tasks = Vec::with_capacity(processes);
    for p in 0..processes {
        let space = connect_space(endpoint).await?;
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let current = template!("counter", run.as_str(), "hits", ?int);
            for _ in 0..increments {
                let (_, _, _, v): (String, String, String, i64) = space
                    .take_timeout_as(&current, WAIT)
                    .await?
                    .with_context(|| format!("process {p}: the counter is gone"))?;
                space.out(&("counter", &run, "hits", v + 1)).await?;
            }
            println!("  process {p} did its {increments} increments");
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (_, _, _, v): (String, String, String, i64) = init
        .take_timeout_as(&template!("counter", run, "hits", ?int), WAIT)
        .await?
        .context("the counter is gone")?;
    println!("  final value {v} (expected {})", processes * increments);
    Ok(v)
}

/// All three, with `workers` processes, `permits` semaphore permits and `increments`
/// increments per process.
pub async fn run(
    endpoint: &str,
    workers: usize,
    permits: usize,
    increments: usize,
) -> anyhow::Result<Outcome> {
    if permits == 0 {
        bail!("a semaphore with no permits lets nobody in");
    }
    let run = agora_examples::run_id();
    let (sem_completed, sem_max_inside, sem_permits_left) =
        semaphore(endpoint, &run, workers, permits).await?;
    let barrier_seen = barrier(endpoint, &run, workers).await?;
    let counter = counter(endpoint, &run, workers, increments).await?;
    Ok(Outcome {
        sem_completed,
        sem_max_inside,
        sem_permits_left,
        barrier_seen,
        counter,
    })
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let workers = agora_examples::arg(1, 6)?;
    let permits = agora_examples::arg(2, 2)?;
    let increments = agora_examples::arg(3, 10)?;
    run(&endpoint, workers, permits, increments).await?;
    Ok(())
}
