//! The runnable examples (examples/*.rs), each run against a temp broker with small
//! parameters, asserting the outcome the example is about. The examples' logic is included
//! from their files, so what is tested is what `cargo run --example` runs.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_examples::TestBroker;
use agora_storage::FsyncPolicy;

#[path = "../examples/increment_server.rs"]
mod increment_server;

/// A generous bound for a whole example run (never reached when things work).
const DEADLINE: Duration = Duration::from_secs(20);

async fn within<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the example finishes in time")
        .expect("the example succeeds")
}

/// The example left no tuple behind (reserved tuples are not listed: a take that has not
/// confirmed yet counts as gone).
fn assert_space_empty(broker: &TestBroker) {
    let space = broker.broker().space().expect("the broker serves a space");
    assert!(
        space.dump(None).is_empty(),
        "left behind: {:?}",
        space.dump(None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn increment_server_replies_match_requests() {
    let broker = TestBroker::start();
    let (clients, requests) = (3, 4);
    let out = within(increment_server::run(&broker.endpoint(), clients, requests)).await;
    for (name, calls, served) in [
        ("bus", &out.bus, out.bus_served),
        ("space", &out.space, out.space_served),
    ] {
        assert_eq!(
            calls.len(),
            clients * requests,
            "{name}: every call answered"
        );
        assert_eq!(
            served,
            clients * requests,
            "{name}: the server answered each once"
        );
        for call in calls {
            assert_eq!(call.received, call.sent + 1, "{name}: {call:?}");
        }
        let mut per_client = BTreeMap::new();
        for call in calls {
            *per_client.entry(call.client).or_insert(0) += 1;
        }
        assert!(
            per_client.values().all(|&n| n == requests),
            "{name}: {per_client:?}"
        );
    }
    assert_space_empty(&broker);
}

#[path = "../examples/sync_over_async.rs"]
mod sync_over_async;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_over_async_correlates_and_times_out() {
    let broker = TestBroker::start();
    let calls = 6;
    let out = within(sync_over_async::run(&broker.endpoint(), calls)).await;
    let squares: Vec<(i64, i64)> = (0..calls as i64).map(|x| (x, x * x)).collect();
    assert_eq!(out.sync_results, squares);
    assert_eq!(out.async_results, squares);
    assert!(out.unserved_timed_out, "a call nobody serves times out");
    assert!(out.slow_timed_out, "a call answered too late times out");
    assert_eq!(
        out.late_replies, 1,
        "the late reply was dropped, not delivered"
    );
    assert_eq!(
        out.after_late,
        Some(144),
        "the next call gets its own reply"
    );
}

#[path = "../examples/client_server_vs_ring.rs"]
mod client_server_vs_ring;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ring_and_client_server_do_every_hop_and_call_once() {
    // Without waiting for fsync each `out` is quicker (see the example's header): the outcome
    // does not depend on it, the test's run time does.
    let broker = TestBroker::start_with(|c| c.space_fsync = FsyncPolicy::Never);
    let n = 40u64;
    let rows = within(client_server_vs_ring::run(&broker.endpoint(), n, &[1, 3])).await;
    assert_eq!(rows.len(), 2);
    for (p, ring, cs) in rows {
        assert_eq!(
            ring.final_hops, n as i64,
            "P={p}: the token made all its hops"
        );
        // Hop h is passed on by process h % P: the token visited everyone in turn.
        let expected: Vec<u64> = (0..p as u64)
            .map(|i| n / p as u64 + u64::from(i < n % p as u64))
            .collect();
        assert_eq!(ring.passes, expected, "P={p}");
        assert_eq!(
            cs.served, n as usize,
            "P={p}: the server answered every call once"
        );
        assert_eq!(cs.calls.len(), n as usize, "P={p}");
        for (c, x, y) in &cs.calls {
            assert_eq!(*y, x + 1, "P={p}: client {c}'s reply matches its request");
        }
    }
    // Nothing left behind: every token and every reply was taken.
    assert_space_empty(&broker);
}

#[path = "../examples/bag_of_tasks.rs"]
mod bag_of_tasks;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bag_of_tasks_does_every_task_exactly_once() {
    let broker = TestBroker::start();
    let tasks = 24;
    let rounds = within(bag_of_tasks::run(
        &broker.endpoint(),
        tasks,
        Duration::ZERO,
        &[1, 3],
    ))
    .await;
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        let w = r.workers;
        let mut ids: Vec<i64> = r.results.iter().map(|(i, _, _)| *i).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..tasks as i64).collect::<Vec<_>>(),
            "{w} worker(s): each task once"
        );
        for (i, y, worker) in &r.results {
            assert_eq!(*y, (i + 1) * (i + 1), "{w} worker(s): task {i}'s result");
            assert!(*worker < w, "{w} worker(s): result from worker {worker}");
        }
        assert_eq!(
            r.done_by.iter().sum::<usize>(),
            tasks,
            "{w} worker(s): {:?}",
            r.done_by
        );
        // Per worker, what it said it did matches the results carrying its id.
        for (id, done) in r.done_by.iter().enumerate() {
            let carried = r.results.iter().filter(|(_, _, x)| *x == id).count();
            assert_eq!(carried, *done, "{w} worker(s): worker {id}");
        }
        assert_eq!(r.pills, w, "{w} worker(s): every worker swallowed one pill");
        assert_eq!(r.leftovers, 0, "{w} worker(s): nothing left in the space");
    }
    assert_space_empty(&broker);
}

#[path = "../examples/dining_philosophers.rs"]
mod dining_philosophers;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dining_philosophers_all_eat_without_deadlock() {
    let broker = TestBroker::start();
    let (n, meals) = (5, 4);
    let out = within(dining_philosophers::run(
        &broker.endpoint(),
        n,
        meals,
        Duration::from_millis(1),
    ))
    .await;
    assert_eq!(out.meals, vec![meals; n], "nobody starves");
    assert_eq!(
        out.fork_clashes, 0,
        "no fork is ever held by two philosophers"
    );
    assert!(
        (1..=n / 2).contains(&out.max_eating),
        "at most N/2 eat at once: {}",
        out.max_eating
    );
    assert_eq!(out.forks_left, n as u64, "every fork is back");
    assert_eq!(out.tickets_left, n as u64 - 1, "every ticket is back");
    // The example cleared the table after counting.
    assert_space_empty(&broker);
}

#[path = "../examples/semaphore_barrier_counter.rs"]
mod semaphore_barrier_counter;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_barrier_and_counter_hold() {
    let broker = TestBroker::start_with(|c| c.space_fsync = FsyncPolicy::Never);
    let (workers, permits, increments) = (5, 2, 10);
    let out = within(semaphore_barrier_counter::run(
        &broker.endpoint(),
        workers,
        permits,
        increments,
    ))
    .await;
    assert_eq!(out.sem_completed, workers, "every worker got through");
    assert!(
        (1..=permits).contains(&out.sem_max_inside),
        "never more than {permits} inside: {}",
        out.sem_max_inside
    );
    assert_eq!(
        out.sem_permits_left, permits as u64,
        "every permit came back"
    );
    assert_eq!(
        out.barrier_seen,
        vec![workers; workers],
        "nobody passed the barrier before all had arrived, and all passed"
    );
    assert_eq!(out.counter, (workers * increments) as i64, "no lost update");
    assert_space_empty(&broker);
}

#[path = "../examples/streams.rs"]
mod streams;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_in_once_in_order_and_read_by_everyone() {
    let broker = TestBroker::start_with(|c| c.space_fsync = FsyncPolicy::Never);
    let (producers, consumers, per) = (3, 3, 6);
    let out = within(streams::run(&broker.endpoint(), producers, consumers, per)).await;
    let total = producers * per;

    // In-stream: indices 0..total each appended once; every element consumed exactly once,
    // and each consumer took its elements in stream order.
    let mut produced = out.in_produced.clone();
    produced.sort_unstable();
    let indices: Vec<i64> = produced.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..total as i64).collect::<Vec<_>>());
    let mut consumed: Vec<(i64, i64)> = out.in_consumed.iter().flatten().copied().collect();
    consumed.sort_unstable();
    assert_eq!(consumed, produced, "every element consumed exactly once");
    for (c, taken) in out.in_consumed.iter().enumerate() {
        assert!(
            taken.windows(2).all(|w| w[0].0 < w[1].0),
            "consumer {c} took elements in order: {taken:?}"
        );
    }

    // Read-stream: every reader saw the whole stream, in index order.
    let mut produced = out.rd_produced.clone();
    produced.sort_unstable();
    assert_eq!(produced.len(), total);
    assert_eq!(out.rd_seen.len(), consumers);
    for (r, seen) in out.rd_seen.iter().enumerate() {
        assert_eq!(seen, &produced, "reader {r} saw every element in order");
    }
    assert_space_empty(&broker);
}

#[path = "../examples/space_notify.rs"]
mod space_notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn space_notify_sees_out_take_and_expire() {
    let broker = TestBroker::start();
    let out = within(space_notify::run(&broker.endpoint())).await;
    let show = |events: &[(String, agora::Tuple)]| -> Vec<String> {
        events
            .iter()
            .map(|(kind, t)| {
                // Drop the run id (field 1) so the expectation can be written down.
                let mut fields = t.values().to_vec();
                fields.remove(1);
                format!("{kind} {}", agora::Tuple(fields))
            })
            .collect()
    };
    assert_eq!(
        show(&out.all),
        vec![
            r#"out ("order", "tea", 5)"#,
            r#"out ("order", "piano", 2500)"#,
            r#"take ("order", "tea", 5)"#,
            r#"take ("order", "piano", 2500)"#,
            r#"out ("offer", "discount", 10)"#,
            r#"expire ("offer", "discount", 10)"#,
        ]
    );
    assert_eq!(
        show(&out.notified),
        vec![
            r#"out ("order", "piano", 2500)"#,
            r#"take ("order", "piano", 2500)"#
        ],
        "the notify saw only orders of 100 or more"
    );
    assert_space_empty(&broker);
}

#[path = "../examples/sensor_dashboard.rs"]
mod sensor_dashboard;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sensor_dashboard_filters_and_durable_catch_up() {
    let broker = TestBroker::start();
    let out = within(sensor_dashboard::run(&broker.endpoint())).await;
    let ok = |topic: &str, round: u32| Ok((topic.to_string(), round));
    let broken = || Err("sensors.attic.temp".to_string());
    let round = |r: u32, kinds: &[&str], rooms: &[&str]| -> Vec<sensor_dashboard::Received> {
        let mut v = Vec::new();
        for room in rooms {
            for kind in kinds {
                v.push(ok(&format!("sensors.{room}.{kind}"), r));
            }
        }
        v
    };
    let all_rooms = ["kitchen", "hall", "bedroom"];
    let both = ["temp", "humidity"];

    let mut temps = round(1, &["temp"], &all_rooms);
    temps.extend(round(2, &["temp"], &all_rooms));
    temps.extend([broken(), ok("sensors.hall.temp", 3)]);
    assert_eq!(out.temps, temps, "sensors.*.temp");

    let mut kitchen = round(1, &both, &["kitchen"]);
    kitchen.extend(round(2, &both, &["kitchen"]));
    assert_eq!(out.kitchen, kitchen, "sensors.kitchen.>");

    let mut humidity = round(1, &["humidity"], &["kitchen", "hall"]);
    humidity.extend(round(2, &["humidity"], &["kitchen", "hall"]));
    assert_eq!(out.humidity, humidity, "the regex filter");

    assert_eq!(out.dashboard_first, round(1, &both, &all_rooms));
    let mut again = round(2, &both, &all_rooms);
    again.extend([broken(), ok("sensors.hall.temp", 3)]);
    assert_eq!(
        out.dashboard_again, again,
        "back online, the dashboard got exactly what it missed, then live events"
    );
}

#[path = "../examples/competing_consumers.rs"]
mod competing_consumers;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers_share_while_fan_out_sees_all() {
    let broker = TestBroker::start();
    let (jobs, workers) = (30u32, 3);
    let out = within(competing_consumers::run(
        &broker.endpoint(),
        jobs as usize,
        workers,
        Duration::ZERO,
    ))
    .await;
    let all: Vec<u32> = (0..jobs).collect();
    // The queue group: every job done exactly once, by some worker; everyone got a share.
    let mut done: Vec<u32> = out.per_worker.iter().flatten().copied().collect();
    done.sort_unstable();
    assert_eq!(done, all, "each job went to exactly one worker");
    assert!(
        out.per_worker.iter().all(|w| !w.is_empty()),
        "round robin gives every worker a share: {:?}",
        out.per_worker
    );
    // The reports agree with what each worker says it did.
    let mut reported = out.done.clone();
    reported.sort_unstable();
    let mut claimed: Vec<(u32, usize)> = out
        .per_worker
        .iter()
        .enumerate()
        .flat_map(|(w, ids)| ids.iter().map(move |id| (*id, w)))
        .collect();
    claimed.sort_unstable();
    assert_eq!(reported, claimed);
    // Fan-out: each plain subscriber saw every job, in publish order.
    assert_eq!(out.fan_out, vec![all.clone(), all]);
}
