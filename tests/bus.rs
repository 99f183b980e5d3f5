//! Event bus end to end: real brokers on ephemeral ports, the public SDK.

use std::collections::HashMap;
use std::time::Duration;

use agora::{Client, ClientOptions, Error};
use agora_examples::TestBroker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Reading {
    room: String,
    celsius: f64,
    n: u32,
}

fn reading(room: &str, n: u32) -> Reading {
    Reading {
        room: room.into(),
        celsius: 20.0 + n as f64 / 10.0,
        n,
    }
}

async fn next<S, I>(s: &mut S) -> I
where
    S: futures_util::Stream<Item = I> + Unpin,
{
    timeout(T, s.next())
        .await
        .expect("an item within the deadline")
        .expect("stream open")
}

#[tokio::test]
async fn typed_publish_and_subscribe() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let mut sub = client.subscribe::<Reading>("sensors.*.temp").await.unwrap();
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    for n in 0..3 {
        client
            .publish("sensors.kitchen.temp", &reading("kitchen", n))
            .await
            .unwrap();
    }
    for n in 0..3u32 {
        let ev = next(&mut sub).await.unwrap();
        assert_eq!(ev.topic, "sensors.kitchen.temp");
        assert_eq!(ev.payload, reading("kitchen", n));
        assert_eq!(ev.seq, n as u64 + 1);
        assert_eq!(ev.offset, n as u64);
        assert!(ev.time > before);
    }
    client.flush().await.unwrap();
}

#[tokio::test]
async fn acked_publish_returns_offsets_and_sequences() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    assert_eq!(client.publish_acked("a.b", &1).await.unwrap(), (0, 1));
    assert_eq!(client.publish_acked("a.c", &2).await.unwrap(), (1, 1));
    assert_eq!(client.publish_acked("a.b", &3).await.unwrap(), (2, 2));
}

#[tokio::test]
async fn wildcard_and_regex_routing() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let filters = [
        "sensors.kitchen.temp",
        "sensors.*.temp",
        "sensors.>",
        ">",
        "re:^sensors\\.(kitchen|hall)\\.",
        "tx",
    ];
    let mut subs = Vec::new();
    for f in filters {
        subs.push(client.subscribe_raw(f).await.unwrap());
    }
    let topics = [
        "sensors.kitchen.temp",
        "sensors.hall.humidity",
        "sensors.attic.temp",
        "sensors.attic.temp.max",
        "tx_trytes",
        "tx",
        "other",
    ];
    for t in topics {
        client.publish(t, &t).await.unwrap();
    }
    // Every subscription also gets a final marker so we know where its stream ends.
    client.publish("tx", &"end").await.unwrap();
    let expected: [&[&str]; 6] = [
        &["sensors.kitchen.temp"],
        &["sensors.kitchen.temp", "sensors.attic.temp"],
        &[
            "sensors.kitchen.temp",
            "sensors.hall.humidity",
            "sensors.attic.temp",
            "sensors.attic.temp.max",
        ],
        &topics,
        &["sensors.kitchen.temp", "sensors.hall.humidity"],
        &["tx"],
    ];
    // Read each subscription until the end marker, or until it has everything expected
    // (those that do not match `tx` never see the marker).
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut got = Vec::new();
        let want = expected[i];
        let matches_marker = want.contains(&"tx");
        loop {
            if !matches_marker && got.len() == want.len() {
                break;
            }
            let ev = next(sub).await.unwrap();
            let body: String = ev.decode().unwrap();
            if body == "end" {
                break;
            }
            got.push(ev.topic().to_string());
        }
        assert_eq!(got, want, "filter {}", filters[i]);
    }
    // `tx` must not have seen `tx_trytes`, and `>` must not see `$sys` events: checked above
    // by exact lists.
}

#[tokio::test]
async fn many_publishers_and_subscribers() {
    let broker = TestBroker::start();
    let ep = broker.endpoint();
    const PUBS: usize = 4;
    const PER_PUB: u32 = 2000;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let c = Client::connect(&ep).await.unwrap();
        subs.push((c.clone(), c.subscribe::<Reading>("load.>").await.unwrap()));
    }
    let mut tasks = Vec::new();
    for p in 0..PUBS {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(&ep).await.unwrap();
            let topic = format!("load.p{p}");
            for n in 0..PER_PUB {
                c.publish(&topic, &reading(&topic, n)).await.unwrap();
            }
            c.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (_c, sub) in &mut subs {
        let mut next_n: HashMap<String, u32> = HashMap::new();
        for _ in 0..(PUBS as u32 * PER_PUB) {
            let ev = next(sub).await.unwrap();
            // Per publisher, events arrive in order and none is missing or doubled.
            let n = next_n.entry(ev.topic.clone()).or_insert(0);
            assert_eq!(ev.payload.n, *n, "topic {}", ev.topic);
            assert_eq!(ev.seq, *n as u64 + 1);
            *n += 1;
        }
        assert_eq!(next_n.len(), PUBS);
    }
}

#[tokio::test]
async fn event_that_does_not_decode_is_an_error_item_and_the_stream_goes_on() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let mut sub = client.subscribe::<Reading>("mixed").await.unwrap();
    client.publish("mixed", &reading("a", 1)).await.unwrap();
    client.publish("mixed", "not a reading").await.unwrap();
    client.publish("mixed", &reading("a", 2)).await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().payload.n, 1);
    match next(&mut sub).await {
        Err(Error::Decode {
            topic,
            offset,
            message,
        }) => {
            assert_eq!(topic, "mixed");
            assert_eq!(offset, 1);
            // What serde said, not ciborium's Debug wrapper around it.
            assert_eq!(message, "invalid type: string, expected map");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(next(&mut sub).await.unwrap().payload.n, 2);
}

#[tokio::test]
async fn invalid_topics_filters_and_oversize_payloads_are_clear_errors() {
    let broker = TestBroker::start_with(|c| c.max_payload = 1024);
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>"] {
        let e = client.publish(bad, &1).await.unwrap_err();
        assert!(matches!(e, Error::Topic(_)), "{bad:?}: {e}");
    }
    for bad in ["a..b", "a.>.b", "re:(", ""] {
        let e = client.subscribe_raw(bad).await.unwrap_err();
        assert!(matches!(e, Error::Filter(_)), "{bad:?}: {e}");
    }
    let big = vec![0u8; 2000];
    let e = client.publish("big", &big).await.unwrap_err();
    assert!(matches!(e, Error::PayloadTooLarge { max: 1024, .. }), "{e}");
    // The broker also refuses `$` topics from clients, with a message that says why.
    let e = client.publish_acked("$sys.fake", &1).await.unwrap_err();
    match e {
        Error::Broker { message, .. } => assert!(message.contains("reserved"), "{message}"),
        other => panic!("{other}"),
    }
    // A fire-and-forget publish the broker refuses is reported by flush.
    client.publish("$x", &1).await.unwrap();
    assert!(matches!(client.flush().await, Err(Error::Broker { .. })));
    client.flush().await.unwrap();
}

#[tokio::test]
async fn late_subscriber_gets_what_follows_without_a_false_gap() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    for n in 0..10 {
        client.publish_acked("late.topic", &n).await.unwrap();
    }
    let late = Client::connect(&broker.endpoint()).await.unwrap();
    let mut sub = late.subscribe::<u32>("late.>").await.unwrap();
    client.publish("late.topic", &10).await.unwrap();
    client.publish("late.topic", &11).await.unwrap();
    let a = next(&mut sub).await.unwrap();
    let b = next(&mut sub).await.unwrap();
    assert_eq!((a.payload, a.seq), (10, 11));
    assert_eq!((b.payload, b.seq), (11, 12));
}

/// Read until the event with sequence `last` arrives; returns (received, missed in gaps).
async fn account(sub: &mut agora::RawSubscription, last: u64) -> (u64, u64) {
    let (mut received, mut missed, mut seq) = (0u64, 0u64, 0u64);
    while seq < last {
        match next(sub).await {
            Ok(ev) => {
                received += 1;
                seq = ev.seq();
            }
            Err(Error::Gap { missed: m, got, .. }) => {
                missed += m;
                seq = got - 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    (received, missed)
}

/// Read events 1..=`last` of one topic: each must come exactly once, in order, none missed.
async fn expect_every_event(sub: &mut agora::RawSubscription, last: u64) {
    let mut offset = None;
    for want in 1..=last {
        match next(sub).await {
            Ok(ev) => {
                assert_eq!(ev.seq(), want, "every event exactly once, in order");
                assert!(offset < Some(ev.offset()), "offsets increase");
                offset = Some(ev.offset());
            }
            Err(e) => panic!("a healing subscriber misses nothing, got at seq {want}: {e}"),
        }
    }
}

#[tokio::test]
async fn slow_subscriber_does_not_stall_others_and_loss_is_never_silent() {
    // A subscriber that does not read: its queues fill, the broker waits 50 ms, then sends
    // past it. The publisher finishes. The fast subscriber heals whatever it lost from the
    // log and gets every event; the slow one, healing off, gets every event or counts it in a
    // gap, including those lost at the very end of the flood (only a beacon reveals them).
    let broker = TestBroker::start_with(|c| {
        c.slow_consumer_timeout = Duration::from_millis(50);
        c.events_hwm = 100;
        c.stats_interval = Duration::from_millis(100);
    });
    let ep = broker.endpoint();
    let options = ClientOptions {
        subscription_buffer: 1,
        heal_gaps: false,
        ..ClientOptions::default()
    };
    let slow = Client::connect_with(&ep, options).await.unwrap();
    let mut sub = slow.subscribe_raw("flood").await.unwrap();
    let fast = Client::connect(&ep).await.unwrap();
    let mut fast_sub = fast.subscribe_raw("flood").await.unwrap();
    const N: u64 = 60_000;
    let publisher = Client::connect(&ep).await.unwrap();
    let fast_reader = tokio::spawn(async move { expect_every_event(&mut fast_sub, N).await });
    // 1 KiB events, so the 60 MB flood overflows every buffer on the way to the slow one.
    for _ in 0..N {
        publisher
            .publish_raw("flood", vec![7u8; 1024], agora::ContentType::Raw)
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    timeout(Duration::from_secs(30), fast_reader)
        .await
        .expect("the fast subscriber gets every event in time")
        .unwrap();
    // Wait for the lossy spell to end: two stats events in a row with the same `dropped` mean
    // a whole stats tick went out losslessly, so the beacon carrying N was sent losslessly.
    // The slow one has read nothing yet: libzmq keeps its overflowed queue out of the fan-out
    // until it drains, so that beacon skipped it, and only a repeated beacon can tell it
    // about the events it lost at the end of the flood.
    let mut stats = publisher
        .subscribe::<agora::Stats>("$sys.stats")
        .await
        .unwrap();
    let dropped = timeout(T, async {
        let mut prev = None;
        loop {
            let dropped = next(&mut stats).await.unwrap().payload.dropped;
            if prev == Some(dropped) {
                return dropped;
            }
            prev = Some(dropped);
        }
    })
    .await
    .expect("the events socket goes back to lossless");
    assert!(dropped > 0, "the broker should have sent past the slow one");
    let (received, missed) = account(&mut sub, N).await;
    assert!(missed > 0, "the slow subscriber's loss must be reported");
    assert_eq!(
        received + missed,
        N,
        "every event received or counted missing"
    );
}

#[tokio::test]
async fn stats_are_published_and_served() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_millis(100));
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let mut sys = client
        .subscribe::<agora::Stats>("$sys.stats")
        .await
        .unwrap();
    let mut plain = client.subscribe_raw(">").await.unwrap();
    client.publish_acked("s.one", &1).await.unwrap();
    // Stats events come every 100 ms; one of them soon shows the publish.
    let deadline = std::time::Instant::now() + T;
    loop {
        let s = next(&mut sys).await.unwrap().payload;
        if s.events_in >= 1 && s.topics.get("s.one").map(|t| t.events) == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats event shows the publish"
        );
    }
    let s = client.stats().await.unwrap();
    assert_eq!(s.events_in, 1);
    assert!(s.subscriptions >= 2);
    // `>` does not match `$sys.stats`: the first thing it sees is our event.
    assert_eq!(next(&mut plain).await.unwrap().topic(), "s.one");
}

#[tokio::test]
async fn clients_reconnect_after_a_broker_restart() {
    let mut broker = TestBroker::start();
    let publisher = Client::connect(&broker.endpoint()).await.unwrap();
    let subscriber = Client::connect(&broker.endpoint()).await.unwrap();
    let mut sub = subscriber.subscribe::<u32>("r.>").await.unwrap();
    publisher.publish_acked("r.x", &1).await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().payload, 1);

    broker.restart(|_| {});

    // Both sockets reconnect by themselves; the SUB resends its subscriptions. Publish until
    // the subscriber sees traffic again (acks prove the publisher is back). Events published
    // before the SUB is back are reported as a gap: the broker's log keeps the sequence going.
    let mut n = 100u32;
    let mut missed = 0;
    let got = loop {
        match publisher.publish_acked("r.x", &n).await {
            Ok(_) => {}
            Err(Error::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        n += 1;
        match timeout(Duration::from_millis(50), sub.next()).await {
            Ok(Some(Ok(ev))) => break ev,
            Ok(Some(Err(Error::Gap { missed: m, .. }))) => missed += m,
            Ok(other) => panic!("{other:?}"),
            Err(_) => assert!(n < 400, "subscriber never came back"),
        }
    };
    assert!(got.payload >= 100);
    // Sequence numbers continue across the restart; every event is received or counted.
    assert_eq!(got.seq, 2 + missed);
    // The new broker still serves requests from the old client.
    publisher.flush().await.unwrap();
}

#[tokio::test]
async fn publishing_to_a_broker_that_is_gone_times_out_instead_of_hanging() {
    let broker = TestBroker::start();
    let options = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&broker.endpoint(), options)
        .await
        .unwrap();
    client.publish_acked("gone.x", &0u32).await.unwrap();
    drop(broker);
    // Fire-and-forget publishes fill the client's queues, then one waits 300 ms and fails.
    let outcome = timeout(Duration::from_secs(20), async {
        for n in 1u64.. {
            if let Err(e) = client.publish("gone.x", &n).await {
                return e;
            }
        }
        unreachable!()
    })
    .await
    .expect("a publish fails within 20 s");
    assert!(matches!(outcome, Error::Timeout { .. }), "{outcome}");
}

/// A process that an app (or the broker's host) starts inherits none of the sockets, event
/// fds or epoll sets of the broker or of a client: libzmq opens them close-on-exec. (The zmq
/// crate's build of libzmq left that out on Linux until `.cargo/config.toml` gave it the
/// platform definitions libzmq's own build makes: a child then held the broker's listening
/// socket and every connection open.)
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_child_process_inherits_no_socket_of_the_broker_or_a_client() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let _sub = client.subscribe::<u32>("cloexec.>").await.unwrap();
    client.publish_acked("cloexec.x", &1).await.unwrap();

    // `ls` lists its own descriptors: stdin, stdout (a pipe), stderr, the directory it reads,
    // and whatever it inherited.
    let out = std::process::Command::new("ls")
        .args(["-l", "/proc/self/fd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    let inherited: Vec<&str> = listing
        .lines()
        .filter(|l| {
            ["socket:", "eventfd", "eventpoll"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    assert!(inherited.is_empty(), "inherited: {inherited:#?}");
}
