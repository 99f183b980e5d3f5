//! Replay, durable subscriptions and gap healing against an in-process broker (issue 4).

use std::time::{Duration, SystemTime};

use agora::{Client, ClientOptions, ContentType, Error, RawSubscription, ReplayFrom};
use agora_examples::TestBroker;
use futures_util::StreamExt;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

/// The next item, failing the test after `T`.
async fn next(sub: &mut RawSubscription) -> agora::Result<agora::RawEvent> {
    timeout(T, sub.next())
        .await
        .expect("an item within the deadline")
        .expect("the stream goes on")
}

/// Payload of a raw event published by [`publish_n`]: the number as 8 bytes LE.
fn num(ev: &agora::RawEvent) -> u64 {
    u64::from_le_bytes(ev.payload().try_into().expect("8-byte payload"))
}

async fn publish_n(client: &Client, topic: &str, range: std::ops::Range<u64>) {
    for i in range {
        client
            .publish_raw(topic, i.to_le_bytes().to_vec(), ContentType::Raw)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

#[tokio::test]
async fn replay_from_beginning_offset_time_and_last_then_live() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    assert!(
        client.broker_info().replay.is_some(),
        "HELLO advertises the replay service"
    );
    // a.x gets 0..5, a.y gets 5..10; offsets are 0..10.
    publish_n(&client, "a.x", 0..5).await;
    let middle = SystemTime::now();
    publish_n(&client, "a.y", 5..10).await;

    // From the beginning: all ten, in order, then live.
    let mut sub = client
        .subscribe_raw_from("a.>", ReplayFrom::Beginning)
        .await
        .unwrap();
    for i in 0..10 {
        let ev = next(&mut sub).await.unwrap();
        assert_eq!((num(&ev), ev.offset()), (i, i));
    }
    publish_n(&client, "a.x", 10..11).await;
    let ev = next(&mut sub).await.unwrap();
    assert_eq!((num(&ev), ev.offset(), ev.seq()), (10, 10, 6));

    // From an offset, with a filter that matches one topic.
    let mut sub = client
        .subscribe_raw_from("a.y", ReplayFrom::Offset(7))
        .await
        .unwrap();
    for i in 7..10 {
        assert_eq!(num(&next(&mut sub).await.unwrap()), i);
    }

    // From a time: the first event stamped after `middle` is a.y's first.
    let mut sub = client
        .subscribe_raw_from("a.>", ReplayFrom::Time(middle))
        .await
        .unwrap();
    assert_eq!(num(&next(&mut sub).await.unwrap()), 5);

    // Last per topic: a.x's last is 10, a.y's is 9; in offset order.
    let mut sub = client
        .subscribe_raw_from("a.>", ReplayFrom::Last)
        .await
        .unwrap();
    let first = next(&mut sub).await.unwrap();
    let second = next(&mut sub).await.unwrap();
    assert_eq!((first.topic(), num(&first)), ("a.y", 9));
    assert_eq!((second.topic(), num(&second)), ("a.x", 10));
    publish_n(&client, "a.y", 11..12).await;
    assert_eq!(num(&next(&mut sub).await.unwrap()), 11);
    assert!(
        timeout(Duration::from_millis(100), sub.next())
            .await
            .is_err(),
        "nothing else: no duplicate after the handover"
    );
}

#[tokio::test]
async fn last_per_topic_is_known_at_once_and_after_a_restart() {
    let mut broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    publish_n(&client, "lv.a", 0..3).await;
    publish_n(&client, "lv.b", 3..5).await;
    publish_n(&client, "lv.a", 5..6).await;
    let lasts = |client: Client| async move {
        let mut sub = client
            .subscribe_raw_from("lv.*", ReplayFrom::Last)
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let ev = next(&mut sub).await.unwrap();
            got.push((ev.topic().to_string(), num(&ev)));
        }
        got
    };
    let want = vec![("lv.b".to_string(), 4), ("lv.a".to_string(), 5)];
    assert_eq!(lasts(client.clone()).await, want);
    drop(client);
    broker.restart(|_| {});
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    assert_eq!(
        lasts(client).await,
        want,
        "the cache is rebuilt from the log"
    );
}

#[tokio::test]
async fn replay_errors_are_clear() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    // Filters are checked before anything is sent.
    let e = client
        .subscribe_raw_from("a..b", ReplayFrom::Beginning)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Filter(_)), "{e}");
    // A typed replay reports events that do not decode, and goes on.
    publish_n(&client, "t.x", 0..1).await;
    client.publish("t.x", &"text").await.unwrap();
    let mut typed = client
        .subscribe_from::<String>("t.x", ReplayFrom::Beginning)
        .await
        .unwrap();
    let first = timeout(T, typed.next()).await.unwrap().unwrap();
    assert!(matches!(first, Err(Error::Decode { offset: 0, .. })));
    let second = timeout(T, typed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.payload, "text");
    // Acknowledging is for durable subscriptions only.
    assert!(matches!(typed.ack(1).await, Err(Error::NotDurable)));
}

/// Replay `stored` events while another client keeps publishing `live` more; the
/// subscriber must see every one exactly once, in order.
async fn replay_while_publishing(stored: u64, live: u64) {
    let broker = TestBroker::start();
    let ep = broker.endpoint();
    let publisher = Client::connect(&ep).await.unwrap();
    // Several topics, so per-topic sequences and the global order are both checked.
    let topics = ["big.a", "big.b", "big.c"];
    for i in 0..stored {
        let topic = topics[(i % 3) as usize];
        publisher
            .publish_raw(topic, i.to_le_bytes().to_vec(), ContentType::Raw)
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();

    let subscriber = Client::connect(&ep).await.unwrap();
    let live_pub = tokio::spawn(async move {
        for i in stored..stored + live {
            let topic = topics[(i % 3) as usize];
            publisher
                .publish_raw(topic, i.to_le_bytes().to_vec(), ContentType::Raw)
                .await
                .unwrap();
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        publisher.flush().await.unwrap();
    });
    let mut sub = subscriber
        .subscribe_raw_from("big.>", ReplayFrom::Beginning)
        .await
        .unwrap();
    let total = stored + live;
    for i in 0..total {
        let ev = match next(&mut sub).await {
            Ok(ev) => ev,
            Err(e) => panic!("at {i}: {e}"),
        };
        assert_eq!(num(&ev), i, "event {i} in order, once");
        assert_eq!(ev.offset(), i);
        assert_eq!(ev.seq(), i / 3 + 1, "per-topic sequence");
    }
    live_pub.await.unwrap();
    assert!(
        timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "nothing after the last: no duplicate"
    );
}

/// How many stored events the replay tests use (`AGORA_REPLAY_EVENTS` overrides).
fn stored_events(default: u64) -> u64 {
    std::env::var("AGORA_REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The figure: a replay of 1,000,000 events while live publishing goes on (about
/// 5 s in a debug build; `AGORA_REPLAY_EVENTS` sets another count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_million_events_while_publishing_loses_and_doubles_nothing() {
    replay_while_publishing(stored_events(1_000_000), 100_000).await;
}

#[tokio::test]
async fn durable_subscription_resumes_after_its_last_ack() {
    let mut broker = TestBroker::start();
    let publisher = Client::connect(&broker.endpoint()).await.unwrap();
    let subscriber = Client::connect(&broker.endpoint()).await.unwrap();
    publish_n(&publisher, "d.x", 0..3).await; // before the durable exists: not delivered

    let mut sub = subscriber
        .durable_raw_from("orders", &["d.>"], ReplayFrom::End)
        .await
        .unwrap();
    assert_eq!(sub.durable_name(), Some("orders"));
    publish_n(&publisher, "d.x", 3..8).await;
    let mut last_acked = 0;
    for i in 3..8 {
        let ev = next(&mut sub).await.unwrap();
        assert_eq!(num(&ev), i);
        if i == 5 {
            sub.ack(ev.offset()).await.unwrap();
            last_acked = ev.offset();
        }
    }
    drop(sub);
    // Offline: more events.
    publish_n(&publisher, "d.x", 8..12).await;
    // Back: everything after the last ack (6, 7 were delivered but not acked), in order.
    let mut sub = subscriber
        .durable_raw_from("orders", &["d.>"], ReplayFrom::End)
        .await
        .unwrap();
    for i in 6..12 {
        let ev = next(&mut sub).await.unwrap();
        assert_eq!(num(&ev), i);
        assert!(ev.offset() > last_acked);
        if i == 11 {
            sub.ack(ev.offset()).await.unwrap();
        }
    }
    // Live after the replay.
    publish_n(&publisher, "d.x", 12..13).await;
    let ev = next(&mut sub).await.unwrap();
    assert_eq!(num(&ev), 12);
    sub.ack(ev.offset()).await.unwrap();
    drop(sub);

    // The cursor survives a broker restart.
    publish_n(&publisher, "d.x", 13..15).await;
    broker.restart(|_| {});
    let subscriber = Client::connect(&broker.endpoint()).await.unwrap();
    let mut sub = subscriber
        .durable_raw_from("orders", &["d.>"], ReplayFrom::End)
        .await
        .unwrap();
    for i in 13..15 {
        assert_eq!(num(&next(&mut sub).await.unwrap()), i);
    }
    assert!(timeout(Duration::from_millis(200), sub.next())
        .await
        .is_err());
    drop(sub);
    subscriber.delete_durable("orders").await.unwrap();
    let e = subscriber.delete_durable("orders").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Broker {
                code: agora::ErrorCode::UnknownDurable,
                ..
            }
        ),
        "{e}"
    );
    // A bad name is refused before anything is sent.
    let e = subscriber
        .durable_raw_from("bad name!", &["d.>"], ReplayFrom::End)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::DurableName(n) if n == "bad name!"),
        "{e}"
    );
}

/// Publish 1 KiB events on `flood` (the first 8 bytes hold the event's number, from 0) in
/// rounds, until the broker reports that it sent past a full subscriber; returns how many.
/// How much a subscriber that does not read can hold (socket buffers, ZeroMQ queues) varies
/// from run to run, so a fixed count would not always overflow it.
async fn flood_until_dropped(publisher: &Client) -> u64 {
    const ROUND: u64 = 10_000;
    const MAX: u64 = 300_000;
    let mut n = 0;
    while n < MAX {
        for i in n..n + ROUND {
            let mut payload = vec![0u8; 1024];
            payload[..8].copy_from_slice(&i.to_le_bytes());
            publisher
                .publish_raw("flood", payload, ContentType::Raw)
                .await
                .unwrap();
        }
        n += ROUND;
        publisher.flush().await.unwrap();
        if publisher.stats().await.unwrap().dropped > 0 {
            return n;
        }
    }
    panic!("the broker never sent past the slow subscriber ({n} events)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_heals_its_gaps_from_the_log() {
    // As in tests/bus.rs: a subscriber that does not read falls behind, the broker sends
    // past it and it misses events. With healing, it still gets every event exactly once,
    // in order, and says how many it recovered.
    let broker = TestBroker::start_with(|c| {
        c.slow_consumer_timeout = Duration::from_millis(50);
        c.events_hwm = 100;
        c.stats_interval = Duration::from_millis(100);
    });
    let ep = broker.endpoint();
    let options = ClientOptions {
        subscription_buffer: 1,
        ..ClientOptions::default()
    };
    let slow = Client::connect_with(&ep, options).await.unwrap();
    let mut sub = slow.subscribe_raw("flood").await.unwrap();
    let publisher = Client::connect(&ep).await.unwrap();
    let n = flood_until_dropped(&publisher).await;
    for i in 0..n {
        let ev = match next(&mut sub).await {
            Ok(ev) => ev,
            Err(e) => panic!("at {i}: {e}"),
        };
        let got = u64::from_le_bytes(ev.payload()[..8].try_into().unwrap());
        assert_eq!(got, i, "every event once, in order");
    }
    assert!(sub.healed() > 0, "events were recovered from the log");
    // Nothing more (no duplicate); polling also lets the last heal finish and report.
    assert!(timeout(Duration::from_millis(300), sub.next())
        .await
        .is_err());
    let healed: u64 = sub.take_healed().iter().map(|h| h.count).sum();
    assert_eq!(healed, sub.healed());
}

#[tokio::test]
async fn without_healing_gaps_are_reported() {
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
    let publisher = Client::connect(&ep).await.unwrap();
    let n = flood_until_dropped(&publisher).await;
    let (mut received, mut missed) = (0, 0);
    while received + missed < n {
        match next(&mut sub).await {
            Ok(_) => received += 1,
            Err(Error::Gap { missed: m, .. }) => missed += m,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(missed > 0, "the loss is reported");
    assert_eq!(
        received + missed,
        n,
        "every event received or counted missing"
    );
    assert_eq!(sub.healed(), 0);
}

#[tokio::test]
async fn a_durable_subscription_resumes_past_retention_and_says_what_it_missed() {
    let mut broker = TestBroker::start_with(|c| c.segment_bytes = 64 << 10);
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    // Created at the beginning; nothing is ever acknowledged.
    drop(
        client
            .durable_raw_from("slowpoke", &["ret.>"], ReplayFrom::Beginning)
            .await
            .unwrap(),
    );
    let pad = vec![0u8; 200];
    for i in 0..3000u64 {
        let mut payload = i.to_le_bytes().to_vec();
        payload.extend_from_slice(&pad);
        client
            .publish_raw("ret.x", payload, ContentType::Raw)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    drop(client);
    // Back with a size limit that leaves only the last segments.
    broker.restart(|c| {
        c.segment_bytes = 64 << 10;
        c.retention_bytes = Some(128 << 10);
    });
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    // The oldest event left, once retention has run (with the first stats tick).
    let deadline = std::time::Instant::now() + T;
    let first = loop {
        let mut sub = client
            .subscribe_raw_from("ret.>", ReplayFrom::Beginning)
            .await
            .unwrap();
        match next(&mut sub).await {
            Ok(ev) if ev.offset() > 0 => break ev.offset(),
            Ok(_) => {}
            // Retention removed what this replay was about to read: it runs now.
            Err(Error::Broker {
                code: agora::ErrorCode::Truncated,
                ..
            }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut sub = client
        .durable_raw_from("slowpoke", &["ret.>"], ReplayFrom::Beginning)
        .await
        .unwrap();
    // Never silent: the loss comes first, then what is left, in order.
    match next(&mut sub).await {
        Err(Error::Expired { missed }) => assert_eq!(missed, first),
        other => panic!("expected Expired, got {other:?}"),
    }
    for offset in first..first + 10 {
        let ev = next(&mut sub).await.unwrap();
        assert_eq!((ev.offset(), num8(&ev)), (offset, offset));
    }
}

/// The first 8 payload bytes as a u64 LE.
fn num8(ev: &agora::RawEvent) -> u64 {
    u64::from_le_bytes(ev.payload()[..8].try_into().expect("8 bytes"))
}
