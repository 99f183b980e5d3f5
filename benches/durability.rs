//! Durability costs, side by side in one run (64-byte payloads, in-process broker, loopback):
//!
//! * fire-and-forget publishes (`publish_raw` + one `flush`), fsync `every 5ms`;
//! * confirmed publishes (`publish_raw_confirmed`: answered after the fsync that covers them)
//!   with fsync `every 5ms` (group commit) and `always`, pipelined from many concurrent tasks
//!   so one fsync covers many of them;
//! * replay throughput: 1,000,000 stored events read back through
//!   `subscribe_raw_from(ReplayFrom::Beginning)`, counted at the subscriber.
//!
//! Run: `cargo bench --bench durability`. `AGORA_BENCH_EVENTS=N` changes the fire-and-forget
//! and replay counts (default 1,000,000); `AGORA_BENCH_CONFIRMED=N` the confirmed count
//! (default 400,000), `AGORA_BENCH_TASKS=N` the concurrent confirmed publishers (default 4096).

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use agora::{Client, ContentType, ReplayFrom};
use agora_examples::TestBroker;
use agora_storage::FsyncPolicy;
use futures_util::StreamExt;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn broker(fsync: FsyncPolicy) -> TestBroker {
    TestBroker::start_with(|c| {
        c.fsync = fsync;
        c.serve_space = false;
    })
}

/// Fire-and-forget: events/s until the broker has taken them all (flush round trip).
async fn fire_and_forget(n: u64) -> f64 {
    let b = broker(FsyncPolicy::Every(Duration::from_millis(5)));
    let client = Client::connect(&b.endpoint()).await.unwrap();
    let payload = vec![7u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        client
            .publish_raw("bench.ff", payload.clone(), ContentType::Raw)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Confirmed: `tasks` concurrent publishers on one client share `n` confirmed publishes.
/// A current-thread runtime keeps each client's producer sequence in send order.
async fn confirmed(fsync: FsyncPolicy, n: u64, tasks: u64) -> f64 {
    let b = broker(fsync);
    let client = Client::connect(&b.endpoint()).await.unwrap();
    let per_task = n / tasks;
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                client
                    .publish_raw_confirmed("bench.confirmed", vec![7u8; 64], ContentType::Raw)
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (per_task * tasks) as f64 / start.elapsed().as_secs_f64()
}

/// Replay: store `n` events, then time a replay of all of them to one subscriber.
async fn replay(n: u64) -> f64 {
    let b = broker(FsyncPolicy::Every(Duration::from_millis(5)));
    let client = Client::connect(&b.endpoint()).await.unwrap();
    for _ in 0..n {
        client
            .publish_raw("bench.stored", vec![7u8; 64], ContentType::Raw)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let reader = Client::connect(&b.endpoint()).await.unwrap();
    let start = Instant::now();
    let mut sub = reader
        .subscribe_raw_from("bench.>", ReplayFrom::Beginning)
        .await
        .unwrap();
    let mut got = 0u64;
    while got < n {
        match sub.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => panic!("replay item failed: {e}"),
            None => panic!("replay ended early"),
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let events = env_u64("AGORA_BENCH_EVENTS", 1_000_000);
    let confirmed_n = env_u64("AGORA_BENCH_CONFIRMED", 400_000);
    let tasks = env_u64("AGORA_BENCH_TASKS", 4096).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ff = rt.block_on(fire_and_forget(events));
    let every = rt.block_on(confirmed(
        FsyncPolicy::Every(Duration::from_millis(5)),
        confirmed_n,
        tasks,
    ));
    let always = rt.block_on(confirmed(FsyncPolicy::Always, confirmed_n / 4, tasks));
    let replayed = rt.block_on(replay(events));
    println!("durability bench: 64-byte payloads, {tasks} concurrent confirmed publishers");
    println!("{:<44} {:>14} {:>10}", "case", "events/s", "vs f&f");
    let row = |name: &str, v: f64| {
        println!("{name:<44} {v:>14.0} {:>9.0}%", 100.0 * v / ff);
    };
    row("publish, fire-and-forget (fsync every 5ms)", ff);
    row("publish_confirmed, fsync every 5ms", every);
    row("publish_confirmed, fsync always", always);
    println!(
        "{:<44} {replayed:>14.0}",
        format!("replay of {events} stored events")
    );
}
