//! # client_server_vs_ring: the homework's "hacker's edition"
//!
//! Two ways for P processes to cooperate through the tuple space, timed side by side:
//!
//! * **Ring**: a token goes N times around a ring of P processes. Process `i` waits in
//!   `in(("token", run, i, ?hops))` and passes the token on with
//!   `out(("token", run, (i + 1) % P, hops + 1))`. Nobody knows anybody's address, only a
//!   position in the ring; each hop is one `out` and one `in`.
//! * **Client-server**: P clients call one server, N calls in all. A client writes
//!   `("req", run, client, seq, x)` and waits in `in(("rep", run, client, seq, ?int))`; the
//!   server loops on `in(("req", run, ?int, ?int, ?int))` and writes the reply. Each call is
//!   two `out`s and two `in`s, and every call goes through the one server.
//!
//! It prints the time for each, for each P. (The figures vary from run to run; they show the
//! shape, not a benchmark.) An `out` returns once the tuple is durable (the broker's group
//! commit, every 5 ms by default), while the tuple is visible to a waiting taker at once: in
//! a ring the next hops run while the sender still waits for its acknowledgement, so larger
//! rings hide that wait; the client-server pattern pays it on every call.
//!
//! Lecture concepts: the shared space as the only medium (indirect addressing, no process
//! knows another's address), client-server vs peer-to-peer coordination, synchronous
//! request-reply built from asynchronous `out`/`in`.
//!
//! Run: `cargo run --example client_server_vs_ring [N] [P...]` (defaults: N = 100, P = 2 4 8).
//! It starts an embedded broker unless `AGORA_BROKER` names one.

use std::time::{Duration, Instant};

use agora::{template, Client, Space};
use anyhow::{bail, Context};

/// How long any one wait may take before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// What one ring run did.
#[derive(Debug, Clone)]
pub struct RingOutcome {
    /// How many times each process passed the token on (index = position in the ring).
    pub passes: Vec<u64>,
    /// The hop count the token had when it came home.
    pub final_hops: i64,
    /// How long the N hops took.
    pub elapsed: Duration,
}

/// What one client-server run did.
#[derive(Debug, Clone)]
pub struct ClientServerOutcome {
    /// `(client, x, reply)` for every call.
    pub calls: Vec<(usize, i64, i64)>,
    /// How many requests the server answered.
    pub served: usize,
    /// How long the N calls took.
    pub elapsed: Duration,
}

async fn connect_space(endpoint: &str) -> anyhow::Result<Space> {
    Ok(Client::connect(endpoint).await?.space()?)
}

/// Pass a token `n` times around a ring of `p` processes (each its own connection).
pub async fn ring(endpoint: &str, n: u64, p: usize) -> anyhow::Result<RingOutcome> {
    if p == 0 {
        bail!("a ring needs at least one process");
    }
    let run = agora_examples::run_id();
    let n = i64::try_from(n).context("N is too large")?;
    let mut spaces = Vec::with_capacity(p);
    for _ in 0..p {
        spaces.push(connect_space(endpoint).await?);
    }
    let mut tasks = Vec::with_capacity(p);
    for (i, space) in spaces.into_iter().enumerate() {
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let me = i as i64;
            let next = ((i + 1) % p) as i64;
            let mine = template!("token", run.as_str(), me, ?int);
            let mut passes = 0u64;
            let mut final_hops = None;
            loop {
                let (_, _, _, hops): (String, String, i64, i64) = space
                    .take_timeout_as(&mine, WAIT)
                    .await?
                    .with_context(|| format!("process {i}: no token within {WAIT:?}"))?;
                if hops < 0 {
                    // The stop token: pass it on unless it has come back to its sender.
                    if final_hops.is_none() {
                        space.out(&("token", &run, next, -1)).await?;
                    }
                    return anyhow::Ok((passes, final_hops));
                }
                if hops == n {
                    // The last hop ended here: send a stop token round and wait for it.
                    final_hops = Some(hops);
                    space.out(&("token", &run, next, -1)).await?;
                    continue;
                }
                space.out(&("token", &run, next, hops + 1)).await?;
                passes += 1;
            }
        }));
    }
    let starter = connect_space(endpoint).await?;
    let start = Instant::now();
    starter.out(&("token", &run, 0, 0)).await?;
    let mut passes = Vec::with_capacity(p);
    let mut final_hops = None;
    for t in tasks {
        let (n, fin) = t.await??;
        passes.push(n);
        final_hops = final_hops.or(fin);
    }
    let elapsed = start.elapsed();
    Ok(RingOutcome {
        passes,
        final_hops: final_hops.context("the token never completed its hops")?,
        elapsed,
    })
}

/// `p` clients make `n` calls in all (x → x + 1) to one server, through the space.
pub async fn client_server(
    endpoint: &str,
    n: u64,
    p: usize,
) -> anyhow::Result<ClientServerOutcome> {
    if p == 0 {
        bail!("client-server needs at least one client");
    }
    let run = agora_examples::run_id();
    let server_space = connect_space(endpoint).await?;
    let mut client_spaces = Vec::with_capacity(p);
    for _ in 0..p {
        client_spaces.push(connect_space(endpoint).await?);
    }
    let start = Instant::now();
    let server = {
        let run = run.clone();
        tokio::spawn(async move {
            let request = template!("req", run.as_str(), ?int, ?int, ?int);
            for _ in 0..n {
                let (_, _, client, seq, x): (String, String, i64, i64, i64) = server_space
                    .take_timeout_as(&request, WAIT)
                    .await?
                    .context("server: no request in time")?;
                server_space.out(&("rep", &run, client, seq, x + 1)).await?;
            }
            anyhow::Ok(n as usize)
        })
    };
    let mut tasks = Vec::with_capacity(p);
    for (c, space) in client_spaces.into_iter().enumerate() {
        let run = run.clone();
        // Share the n calls out: the first n % p clients make one more.
        let mine = n / p as u64 + u64::from((c as u64) < n % p as u64);
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for seq in 0..mine as i64 {
                let x = (c as i64) * 1_000_000 + seq;
                space.out(&("req", &run, c as i64, seq, x)).await?;
                let reply = template!("rep", run.as_str(), c as i64, seq, ?int);
                let (_, _, _, _, y): (String, String, i64, i64, i64) = space
                    .take_timeout_as(&reply, WAIT)
                    .await?
                    .with_context(|| format!("client {c}: no reply to call {seq}"))?;
                calls.push((c, x, y));
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await??);
    }
    let served = server.await??;
    Ok(ClientServerOutcome {
        calls,
        served,
        elapsed: start.elapsed(),
    })
}

/// Both, for each P in `ps`, printed side by side.
pub async fn run(
    endpoint: &str,
    n: u64,
    ps: &[usize],
) -> anyhow::Result<Vec<(usize, RingOutcome, ClientServerOutcome)>> {
    println!("{n} hops around a ring vs {n} calls to one server, through the space");
    println!(
        "{:>4}  {:>12}  {:>12}  {:>14}",
        "P", "ring", "client-server", "per hop / call"
    );
    let mut rows = Vec::new();
    for &p in ps {
        let r = ring(endpoint, n, p).await?;
        let cs = client_server(endpoint, n, p).await?;
        let per = |d: Duration| d.checked_div(n.max(1) as u32).unwrap_or_default();
        println!(
            "{p:>4}  {:>12.1?}  {:>12.1?}  {:>6.0?} / {:.0?}",
            r.elapsed,
            cs.elapsed,
            per(r.elapsed),
            per(cs.elapsed)
        );
        rows.push((p, r, cs));
    }
    Ok(rows)
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let n: u64 = agora_examples::arg(1, 100)?;
    let mut ps = Vec::new();
    for i in 2.. {
        match std::env::args().nth(i) {
            Some(a) => ps.push(
                a.parse()
                    .with_context(|| format!("P `{a}` is not a count"))?,
            ),
            None => break,
        }
    }
    if ps.is_empty() {
        ps = vec![2, 4, 8];
    }
    run(&endpoint, n, &ps).await?;
    Ok(())
}
