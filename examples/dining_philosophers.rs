//! # dining_philosophers: forks and room tickets as tuples
//!
//! N philosophers sit around a table with N forks, one between each pair. The forks are
//! tuples `("fork", run, i)`; picking a fork up is `in`, putting it down is `out`. If all N
//! picked up their left fork at once, each would wait forever for the right one: deadlock.
//! Carriero and Gelernter's fix: only N - 1 may be in the room at once. The room holds
//! N - 1 tuples `("ticket", run)`; a philosopher takes a ticket before the forks and puts
//! it back after. With at most N - 1 at the table, one of them always gets both forks.
//!
//! ```text
//! loop { think; in(ticket); in(fork i); in(fork i+1); eat; out(fork i); out(fork i+1); out(ticket) }
//! ```
//!
//! Every philosopher here is its own client connection; the forks and tickets live only in
//! the space. The program checks, locally, that no fork is ever held by two philosophers and
//! reports how many ate at the same time.
//!
//! Lecture concepts: the shared space for synchronisation (tuples as tokens / resources),
//! mutual exclusion without locks or addresses, deadlock avoidance.
//!
//! Run: `cargo run --example dining_philosophers [N] [MEALS]` (defaults 5 and 3). It starts
//! an embedded broker unless `AGORA_BROKER` names one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora::{template, Client};
use anyhow::{bail, Context};

/// How long a philosopher waits for a ticket or a fork before the example reports a failure
/// (a deadlock would show up as this).
const WAIT: Duration = Duration::from_secs(10);

/// What the dinner came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Meals eaten by each philosopher.
    pub meals: Vec<usize>,
    /// Times a fork was found already in use when a philosopher started eating (0 when the
    /// space's `in` gives each fork to one taker at a time).
    pub fork_clashes: usize,
    /// The most philosophers eating at the same moment.
    pub max_eating: usize,
    /// Forks in the space after dinner.
    pub forks_left: u64,
    /// Tickets in the space after dinner.
    pub tickets_left: u64,
}

/// What every philosopher's task can see, for the local checks.
struct Table {
    in_use: Vec<AtomicBool>,
    eating: AtomicUsize,
    max_eating: AtomicUsize,
    clashes: AtomicUsize,
}

/// Seat `n` philosophers for `meals` meals each; `eat` is how long a meal takes.
pub async fn run(endpoint: &str, n: usize, meals: usize, eat: Duration) -> anyhow::Result<Outcome> {
    if n < 2 {
        bail!("the table needs at least two philosophers");
    }
    let run = agora_examples::run_id();
    let host = Client::connect(endpoint).await?.space()?;
    for i in 0..n as i64 {
        host.out(&("fork", &run, i)).await?;
    }
    for _ in 0..n - 1 {
        host.out(&("ticket", &run)).await?;
    }
    println!("{n} forks and {} tickets are on the table", n - 1);

    let table = Arc::new(Table {
        in_use: (0..n).map(|_| AtomicBool::new(false)).collect(),
        eating: AtomicUsize::new(0),
        max_eating: AtomicUsize::new(0),
        clashes: AtomicUsize::new(0),
    });
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let space = Client::connect(endpoint).await?.space()?;
        let run = run.clone();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            let (left, right) = (i, (i + 1) % n);
            let ticket = template!("ticket", run.as_str());
            let fork = |f: usize| template!("fork", run.as_str(), f as i64);
            for meal in 1..=meals {
                // Think for a while (a varying few ms, so philosophers fall out of step).
                let think = Duration::from_millis(((i * 7 + meal * 3) % 4) as u64);
                tokio::time::sleep(think).await;
                let (left_fork, right_fork) = (fork(left), fork(right));
                let wants = [
                    ("a ticket", &ticket),
                    ("the left fork", &left_fork),
                    ("the right fork", &right_fork),
                ];
                for (what, t) in wants {
                    space
                        .take_timeout(t, WAIT)
                        .await?
                        .with_context(|| format!("philosopher {i}: no {what} in {WAIT:?}"))?;
                }
                // Eat, checking locally that nobody else holds these forks.
                for f in [left, right] {
                    if table.in_use[f].swap(true, Ordering::SeqCst) {
                        table.clashes.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let now = table.eating.fetch_add(1, Ordering::SeqCst) + 1;
                table.max_eating.fetch_max(now, Ordering::SeqCst);
                println!("  philosopher {i} eats meal {meal} with forks {left} and {right}");
                if !eat.is_zero() {
                    tokio::time::sleep(eat).await;
                }
                table.eating.fetch_sub(1, Ordering::SeqCst);
                for f in [left, right] {
                    table.in_use[f].store(false, Ordering::SeqCst);
                }
                space.out(&("fork", &run, left as i64)).await?;
                space.out(&("fork", &run, right as i64)).await?;
                space.out(&("ticket", &run)).await?;
            }
            println!("  philosopher {i} is full");
            anyhow::Ok(meals)
        }));
    }
    let mut eaten = Vec::with_capacity(n);
    for t in tasks {
        eaten.push(t.await??);
    }
    let forks_left = host.count(&template!("fork", run.as_str(), ?int)).await?;
    let tickets_left = host.count(&template!("ticket", run.as_str())).await?;
    let outcome = Outcome {
        meals: eaten,
        fork_clashes: table.clashes.load(Ordering::SeqCst),
        max_eating: table.max_eating.load(Ordering::SeqCst),
        forks_left,
        tickets_left,
    };
    println!(
        "everyone ate: {:?}; at most {} at once; {} fork clash(es); {} forks and {} tickets back",
        outcome.meals,
        outcome.max_eating,
        outcome.fork_clashes,
        outcome.forks_left,
        outcome.tickets_left
    );
    // Clear the table, so a shared broker is left as it was found.
    host.take_all(&template!("fork", run.as_str(), ?int), n)
        .await?;
    host.take_all(&template!("ticket", run.as_str()), n).await?;
    Ok(outcome)
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let n = agora_examples::arg(1, 5)?;
    let meals = agora_examples::arg(2, 3)?;
    run(&endpoint, n, meals, Duration::from_millis(5)).await?;
    Ok(())
}
