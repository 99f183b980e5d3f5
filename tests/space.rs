//! The tuple space end to end: a real broker on ephemeral ports, the public SDK
//! (`client.space()`). The classic Linda/Rinda behaviours, ported.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agora::{template, tuple, Client, Error, Space, Template, Tuple, Value};
use agora_examples::{wait_until, TestBroker};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

/// Upper bound for anything that should happen "soon" (never reached when things work).
const T: Duration = Duration::from_secs(10);

async fn space_of(broker: &TestBroker) -> Space {
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    client.space().unwrap()
}

/// Wait until the broker's space has exactly `n` registered waiters.
async fn waiters(broker: &TestBroker, n: usize) {
    assert!(
        wait_until(T, || async move { broker.space_waiters() == n }).await,
        "expected {n} waiter(s), have {}",
        broker.space_waiters()
    );
}

async fn take_now(space: &Space, t: &Template) -> Option<Tuple> {
    space.try_take(t).await.unwrap()
}

#[tokio::test]
async fn exact_values_and_typed_formals() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    s.out(tuple!("a", 1, 2.5, true, "x")).await.unwrap();
    s.out(tuple!("a", 1.0, 2.5, true, "x")).await.unwrap();
    // 1 and 1.0 are different actuals.
    let t = take_now(&s, &template!("a", 1, 2.5, true, "x")).await;
    assert_eq!(t, Some(tuple!("a", 1, 2.5, true, "x")));
    assert_eq!(take_now(&s, &template!("a", 1, _, _, _)).await, None);
    // Typed formals: ?int does not match a float, ?float does.
    assert_eq!(take_now(&s, &template!("a", ?int, _, _, _)).await, None);
    let t = take_now(&s, &template!("a", ?float, ?float, ?bool, ?str)).await;
    assert_eq!(t, Some(tuple!("a", 1.0, 2.5, true, "x")));
    // Bytes and arrays.
    s.out(tuple!(Value::bytes(*b"\x00\xff"), [1, 2]))
        .await
        .unwrap();
    assert_eq!(take_now(&s, &template!(?str, ?array)).await, None);
    let t = take_now(&s, &template!(?bytes, ?array)).await.unwrap();
    assert_eq!(t, tuple!(Value::bytes(*b"\x00\xff"), [1, 2]));
    // Arity always counts.
    s.out(tuple!("n", 1, 2)).await.unwrap();
    assert_eq!(take_now(&s, &template!("n", _)).await, None);
    assert_eq!(take_now(&s, &template!("n", _, _, _)).await, None);
    assert!(take_now(&s, &template!("n", _, _)).await.is_some());
}

#[tokio::test]
async fn wildcard_null_regex_ranges_nested() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    s.out(tuple!("w", ())).await.unwrap();
    s.out(tuple!("w", 5)).await.unwrap();
    // `_` matches null and anything; null only matches null.
    assert_eq!(s.count(&template!("w", _)).await.unwrap(), 2);
    assert_eq!(s.count(&template!("w", ())).await.unwrap(), 1);
    assert_eq!(
        take_now(&s, &template!("w", ())).await,
        Some(tuple!("w", ()))
    );
    assert_eq!(take_now(&s, &template!("w", ())).await, None);
    assert_eq!(take_now(&s, &template!("w", _)).await, Some(tuple!("w", 5)));

    for name in ["job-1", "job-22", "jobx", "task-3"] {
        s.out(tuple!("r", name)).await.unwrap();
    }
    let jobs = s
        .read_all(&template!("r", re(r"^job-\d+$")), 10)
        .await
        .unwrap();
    assert_eq!(jobs, vec![tuple!("r", "job-1"), tuple!("r", "job-22")]);
    // A regex never matches a non-text value.
    s.out(tuple!("r", 7)).await.unwrap();
    assert_eq!(s.count(&template!("r", re(".*"))).await.unwrap(), 4);

    for n in [0, 1, 5, 9, 10] {
        s.out(tuple!("g", n)).await.unwrap();
    }
    s.out(tuple!("g", 2.5)).await.unwrap();
    assert_eq!(s.count(&template!("g", range(1..10))).await.unwrap(), 4);
    assert_eq!(s.count(&template!("g", range(1..=10))).await.unwrap(), 5);
    assert_eq!(s.count(&template!("g", range(..5))).await.unwrap(), 3);
    assert_eq!(s.count(&template!("g", range(2.0..3.0))).await.unwrap(), 1);

    s.out(tuple!(
        "nest",
        vec![Value::from("x"), Value::from(vec![1, 2])]
    ))
    .await
    .unwrap();
    assert_eq!(
        s.count(&template!("nest", [?str, [?int, _]]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.count(&template!("nest", [?str, [?int]])).await.unwrap(),
        0
    );
    assert_eq!(s.count(&template!("nest", [?int, _])).await.unwrap(), 0);
    let t = s.try_take(&template!("nest", ["x", [1, 2]])).await.unwrap();
    assert!(t.is_some());
}

#[tokio::test]
async fn text_templates_work_through_the_sdk() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    let t: Tuple = r#"("cfg", "mode", [1, 2], h'00ff', null)"#.parse().unwrap();
    s.out(t.clone()).await.unwrap();
    let tpl = agora::parse_template(r#"("cfg", ?str, [?int, _], ?bytes, _)"#).unwrap();
    assert_eq!(s.read(&tpl).await.unwrap(), t);
    assert_eq!(s.dump(None).await.unwrap(), vec![t]);
}

#[tokio::test]
async fn bag_semantics_five_identical() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    for _ in 0..5 {
        s.out(tuple!("dup", 1)).await.unwrap();
    }
    assert_eq!(s.count(&template!("dup", 1)).await.unwrap(), 5);
    for _ in 0..5 {
        let t = timeout(T, s.take(&template!("dup", 1))).await.unwrap();
        assert_eq!(t.unwrap(), tuple!("dup", 1));
    }
    assert_eq!(take_now(&s, &template!("dup", 1)).await, None);
    assert_eq!(s.count(&template!("dup", _)).await.unwrap(), 0);
}

#[tokio::test]
async fn oldest_first() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    for n in 0..5 {
        s.out(tuple!("o", n)).await.unwrap();
    }
    for n in 0..5 {
        assert_eq!(
            take_now(&s, &template!("o", ?int)).await,
            Some(tuple!("o", n))
        );
    }
}

#[tokio::test]
async fn zero_timeout_on_an_empty_space() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    let tpl = template!("none", _);
    assert_eq!(s.try_take(&tpl).await.unwrap(), None);
    assert_eq!(s.try_read(&tpl).await.unwrap(), None);
    assert_eq!(s.take_timeout(&tpl, Duration::ZERO).await.unwrap(), None);
    assert_eq!(s.read_timeout(&tpl, Duration::ZERO).await.unwrap(), None);
    assert_eq!(s.take_all(&tpl, 10).await.unwrap(), Vec::<Tuple>::new());
    assert_eq!(s.count(&tpl).await.unwrap(), 0);
    waiters(&b, 0).await;
}

#[tokio::test]
async fn blocked_take_is_woken_by_a_later_out() {
    let b = TestBroker::start();
    let taker = space_of(&b).await;
    let writer = space_of(&b).await;
    let task = tokio::spawn(async move { taker.take(&template!("wake", ?int)).await });
    waiters(&b, 1).await;
    writer.out(tuple!("wake", 7)).await.unwrap();
    let got = timeout(T, task).await.unwrap().unwrap().unwrap();
    assert_eq!(got, tuple!("wake", 7));
    // It was taken (and confirmed): nothing left, no reservation outstanding.
    let store = b.broker().space().unwrap().store().clone();
    assert!(
        wait_until(T, || {
            let store = store.clone();
            async move { store.reservation_count() == 0 }
        })
        .await
    );
    assert_eq!(writer.count(&template!("wake", _)).await.unwrap(), 0);
}

#[tokio::test]
async fn blocked_take_times_out() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    let start = Instant::now();
    let got = s
        .take_timeout(&template!("late", _), Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(got, None);
    assert!(start.elapsed() >= Duration::from_millis(200));
    waiters(&b, 0).await;
    // A tuple written after the timeout stays in the space.
    s.out(tuple!("late", 1)).await.unwrap();
    assert_eq!(s.count(&template!("late", _)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_dropped_take_consumes_nothing() {
    let b = TestBroker::start();
    let taker = space_of(&b).await;
    let writer = space_of(&b).await;
    let task = {
        let taker = taker.clone();
        tokio::spawn(async move { taker.take(&template!("c", ?int)).await })
    };
    waiters(&b, 1).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The CANCEL reaches the server and withdraws the waiter...
    waiters(&b, 0).await;
    // ...so a later tuple stays for someone else.
    writer.out(tuple!("c", 1)).await.unwrap();
    assert_eq!(writer.count(&template!("c", _)).await.unwrap(), 1);
    assert_eq!(
        writer.try_take(&template!("c", ?int)).await.unwrap(),
        Some(tuple!("c", 1))
    );

    // A local timeout on a forever-take drops the future the same way.
    let r = timeout(
        Duration::from_millis(100),
        taker.take(&template!("c", ?int)),
    )
    .await;
    assert!(r.is_err());
    waiters(&b, 0).await;
    writer.out(tuple!("c", 2)).await.unwrap();
    assert_eq!(writer.count(&template!("c", _)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_ping_answered_means_an_earlier_cancel_was_handled() {
    let b = TestBroker::start();
    let taker = space_of(&b).await;
    let store = b.broker().space().expect("space served").store().clone();
    for _ in 0..20 {
        let task = {
            let taker = taker.clone();
            tokio::spawn(async move { taker.take(&template!("p", ?int)).await })
        };
        waiters(&b, 1).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        // No waiting on the server: the ping's answer comes after the CANCEL's effect.
        taker.ping().await.unwrap();
        assert_eq!(store.waiter_count(), 0);
    }
}

#[tokio::test]
async fn a_take_is_final_once_flush_returns() {
    let b = TestBroker::start();
    let space = space_of(&b).await;
    let store = b.broker().space().expect("space served").store().clone();
    for i in 0..20 {
        space.out(tuple!("f", i)).await.unwrap();
        space.take(&template!("f", ?int)).await.unwrap();
        // The CONFIRM is fire-and-forget; once flush returns the server has handled it, so
        // a program may exit now without the tuple coming back after its lease.
        space.flush().await.unwrap();
        assert_eq!(store.reservation_count(), 0, "round {i}");
        assert_eq!(store.len(), 0, "round {i}");
    }
}

#[tokio::test]
async fn blocked_takers_are_served_first_come_first_served() {
    let b = TestBroker::start();
    let writer = space_of(&b).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        // Separate clients: separate connections, as separate processes would be.
        let s = space_of(&b).await;
        tasks.push(tokio::spawn(async move {
            s.take(&template!("fifo", ?int)).await
        }));
        waiters(&b, i + 1).await;
    }
    for n in 0..3 {
        writer.out(tuple!("fifo", n)).await.unwrap();
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let got = timeout(T, t).await.unwrap().unwrap().unwrap();
        assert_eq!(got, tuple!("fifo", i as i64), "taker {i}");
    }
}

#[tokio::test]
async fn every_blocked_reader_gets_a_copy() {
    let b = TestBroker::start();
    let writer = space_of(&b).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let s = space_of(&b).await;
        tasks.push(tokio::spawn(async move {
            s.read(&template!("news", ?str)).await
        }));
        waiters(&b, i + 1).await;
    }
    // A blocked taker too: readers get copies, the one taker gets the tuple.
    let taker = space_of(&b).await;
    let take = tokio::spawn(async move { taker.take(&template!("news", ?str)).await });
    waiters(&b, 4).await;
    writer.out(tuple!("news", "hello")).await.unwrap();
    for t in tasks {
        let got = timeout(T, t).await.unwrap().unwrap().unwrap();
        assert_eq!(got, tuple!("news", "hello"));
    }
    let got = timeout(T, take).await.unwrap().unwrap().unwrap();
    assert_eq!(got, tuple!("news", "hello"));
    assert_eq!(writer.count(&template!("news", _)).await.unwrap(), 0);
}

#[tokio::test]
async fn leased_tuples_expire() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    s.out_with_lease(tuple!("lease", 1), Duration::from_millis(150))
        .await
        .unwrap();
    s.out(tuple!("lease", 2)).await.unwrap();
    s.out_with_lease(tuple!("lease", 3), Duration::ZERO)
        .await
        .unwrap();
    let s2 = s.clone();
    assert!(
        wait_until(T, || {
            let s = s2.clone();
            async move { s.count(&template!("lease", _)).await.unwrap() == 1 }
        })
        .await
    );
    assert_eq!(
        s.dump(Some(&template!("lease", _))).await.unwrap(),
        vec![tuple!("lease", 2)]
    );
}

#[tokio::test]
async fn bulk_ops() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    for n in 0..10 {
        s.out(tuple!("bulk", n)).await.unwrap();
    }
    s.out(tuple!("other", 1)).await.unwrap();
    let read = s.read_all(&template!("bulk", ?int), 3).await.unwrap();
    assert_eq!(read, (0..3).map(|n| tuple!("bulk", n)).collect::<Vec<_>>());
    let taken = s.take_all(&template!("bulk", ?int), 4).await.unwrap();
    assert_eq!(taken, (0..4).map(|n| tuple!("bulk", n)).collect::<Vec<_>>());
    assert_eq!(s.count(&template!("bulk", _)).await.unwrap(), 6);
    let all = s.dump(None).await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[0], tuple!("bulk", 4));
    let rest = s.take_all(&template!("bulk", _), usize::MAX).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!(s.dump(None).await.unwrap(), vec![tuple!("other", 1)]);
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job(String, u32, f64);

#[tokio::test]
async fn typed_out_and_take() {
    let b = TestBroker::start();
    let s = space_of(&b).await;
    s.out(&Job("job".into(), 1, 0.5)).await.unwrap();
    s.out(&("job", 2u32, 1.5)).await.unwrap();
    let a: Job = s.take_as(&template!("job", ?int, ?float)).await.unwrap();
    assert_eq!(a, Job("job".into(), 1, 0.5));
    let (name, n, f): (String, u32, f64) = s
        .try_take_as(&template!("job", _, _))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((name.as_str(), n, f), ("job", 2, 1.5));

    // A tuple that does not fit the type goes back, and the error says what it was.
    s.out(tuple!("job", "not a number", 1.0)).await.unwrap();
    let e = s
        .try_take_as::<Job>(&template!("job", _, _))
        .await
        .unwrap_err();
    match e {
        Error::TupleType { tuple, .. } => assert_eq!(tuple, tuple!("job", "not a number", 1.0)),
        other => panic!("unexpected {other:?}"),
    }
    let store = b.broker().space().unwrap().store().clone();
    assert!(
        wait_until(T, || {
            let store = store.clone();
            async move { store.len() == 1 && store.reservation_count() == 0 }
        })
        .await
    );
    assert_eq!(s.count(&template!("job", _, _)).await.unwrap(), 1);

    // Structs with named fields are not tuples.
    #[derive(Serialize)]
    struct Named {
        a: u32,
    }
    assert!(matches!(
        s.out(&Named { a: 1 }).await.unwrap_err(),
        Error::Encode(_)
    ));
}

#[tokio::test]
async fn producers_and_consumers_take_each_tuple_exactly_once() {
    const PRODUCERS: i64 = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: i64 = 500;
    let b = TestBroker::start();
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let s = space_of(&b).await;
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let (_, n): (String, i64) = s.take_as(&template!("item", ?int)).await.unwrap();
                if n < 0 {
                    return got;
                }
                got.push(n);
            }
        }));
    }
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let s = space_of(&b).await;
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                s.out(&("item", p * PER_PRODUCER + i)).await.unwrap();
            }
        }));
    }
    for p in producers {
        timeout(T * 3, p).await.unwrap().unwrap();
    }
    let s = space_of(&b).await;
    for _ in 0..CONSUMERS {
        s.out(&("item", -1)).await.unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(timeout(T * 3, c).await.unwrap().unwrap());
    }
    let total = (PRODUCERS * PER_PRODUCER) as usize;
    assert_eq!(all.len(), total, "every tuple taken once");
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), total, "no tuple taken twice");
    assert!(distinct.iter().all(|n| (0..total as i64).contains(n)));
    assert_eq!(s.count(&template!("item", _)).await.unwrap(), 0);
}

#[tokio::test]
async fn tuples_survive_a_broker_restart() {
    let mut b = TestBroker::start();
    let s = space_of(&b).await;
    for n in 0..100 {
        s.out(tuple!("keep", n)).await.unwrap();
    }
    s.out_with_lease(tuple!("short", 1), Duration::from_millis(50))
        .await
        .unwrap();
    // A taker blocked across the restart: the client re-sends its wait to the new broker.
    let blocked = {
        let s = s.clone();
        tokio::spawn(async move { s.take(&template!("after", ?int)).await })
    };
    waiters(&b, 1).await;
    b.restart(|_| {});

    let fresh = space_of(&b).await;
    let kept = fresh.dump(Some(&template!("keep", ?int))).await.unwrap();
    assert_eq!(
        kept,
        (0..100).map(|n| tuple!("keep", n)).collect::<Vec<_>>()
    );
    // The old client's socket reconnects by itself.
    assert_eq!(
        timeout(T, s.count(&template!("keep", _)))
            .await
            .unwrap()
            .unwrap(),
        100
    );
    waiters(&b, 1).await;
    fresh.out(tuple!("after", 1)).await.unwrap();
    let got = timeout(T, blocked).await.unwrap().unwrap().unwrap();
    assert_eq!(got, tuple!("after", 1));
    // The leased tuple stays expired.
    assert_eq!(fresh.count(&template!("short", _)).await.unwrap(), 0);
}

#[tokio::test]
async fn client_space_errors() {
    let b = TestBroker::start_with(|c| c.serve_space = false);
    let client = Client::connect(&b.endpoint()).await.unwrap();
    assert!(matches!(client.space(), Err(Error::NoSpace { .. })));

    let b = TestBroker::start();
    let client = Client::connect(&b.endpoint()).await.unwrap();
    let s = client.space().unwrap();
    // The same handle (and I/O thread) for every call.
    assert_eq!(s.endpoint(), client.space().unwrap().endpoint());
    // A tuple too large for the server is refused with a matchable code.
    let big = tuple!("big", Value::bytes(vec![0u8; 2 * 1024 * 1024]));
    match s.out(big).await.unwrap_err() {
        Error::Space { code, .. } => assert_eq!(code, agora::SpaceErrorCode::TooLarge),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_come_and_go_while_servers_stop() {
    // Regression: libzmq's socket monitor used to block the shared context's I/O thread when
    // a closing client's monitor reader was already gone, stalling every later client.
    for round in 0..10 {
        let memory =
            agora_tuplespace::SpaceServer::start(agora_tuplespace::ServerConfig::default())
                .unwrap();
        let b = TestBroker::start();
        let endpoints = [
            memory.endpoint().to_string(),
            b.broker().space_endpoint().unwrap().to_string(),
        ];
        for ep in endpoints {
            let mut spaces = Vec::new();
            for i in 0..10 {
                let s = Space::connect_with(&ep, Duration::from_secs(3)).unwrap();
                s.count(&template!("x")).await.unwrap_or_else(|e| {
                    panic!("round {round}, client {i} of {ep}: {e}");
                });
                spaces.push(s);
            }
        }
        drop(memory);
    }
}

#[tokio::test]
async fn heartbeats_keep_a_long_wait_alive() {
    // The server forgets the blocked requests of a client silent for `client_timeout`; the
    // client pings every second while it waits, so a wait longer than that survives.
    let server = agora_tuplespace::SpaceServer::start(agora_tuplespace::ServerConfig {
        client_timeout: Duration::from_millis(2500),
        ..agora_tuplespace::ServerConfig::default()
    })
    .unwrap();
    let taker = Space::connect(server.endpoint()).unwrap();
    let writer = Space::connect(server.endpoint()).unwrap();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        taker
            .take_timeout(&template!("hb", ?int), Duration::from_secs(20))
            .await
    });
    let store = server.space().store().clone();
    assert!(
        wait_until(T, || {
            let store = store.clone();
            async move { store.waiter_count() == 1 }
        })
        .await
    );
    // Let the wait outlast the server's silence limit (this is the scenario, not a sync).
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    assert_eq!(store.waiter_count(), 1, "the waiter is still registered");
    writer.out(tuple!("hb", 1)).await.unwrap();
    let got = timeout(T, task).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Some(tuple!("hb", 1)));
}
