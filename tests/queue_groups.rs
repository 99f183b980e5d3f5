//! Queue groups: each event to one member of a group, beside fan-out subscribers that get all.

use std::collections::HashSet;
use std::time::Duration;

use agora::{Client, Error};
use agora_examples::TestBroker;
use futures_util::StreamExt;
use tokio::time::timeout;

/// Read everything a member gets until `quiet` passes with nothing new.
async fn drain(sub: &mut agora::Subscription<u32>, quiet: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    while let Ok(Some(item)) = timeout(quiet, sub.next()).await {
        got.push(item.expect("a job").payload);
    }
    got
}

#[tokio::test]
async fn each_event_goes_to_exactly_one_member_and_fan_out_still_gets_all() {
    let broker = TestBroker::start();
    let ep = broker.endpoint();
    let mut members = Vec::new();
    for _ in 0..3 {
        let c = Client::connect(&ep).await.unwrap();
        members.push(c.queue_subscribe::<u32>("jobs.>", "workers").await.unwrap());
    }
    let watcher = Client::connect(&ep).await.unwrap();
    let mut all = watcher.subscribe::<u32>("jobs.>").await.unwrap();
    let other_group = Client::connect(&ep).await.unwrap();
    let mut audit = other_group
        .queue_subscribe::<u32>("jobs.>", "auditors")
        .await
        .unwrap();

    let publisher = Client::connect(&ep).await.unwrap();
    const N: u32 = 300;
    for n in 0..N {
        publisher.publish("jobs.resize", &n).await.unwrap();
    }
    publisher.flush().await.unwrap();

    // Fan-out: the plain subscriber sees every job.
    for n in 0..N {
        let ev = timeout(Duration::from_secs(10), all.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.unwrap().payload, n);
    }
    // The group: every job exactly once across its members, and all of them got work.
    let mut seen = HashSet::new();
    let mut total = 0;
    for m in &mut members {
        let got = drain(m, Duration::from_millis(300)).await;
        assert!(!got.is_empty(), "round robin gives every member a share");
        total += got.len();
        seen.extend(got);
    }
    assert_eq!(total, N as usize, "no job delivered twice");
    assert_eq!(seen.len(), N as usize, "no job lost");
    // Another group gets its own copy of each job.
    let audited = drain(&mut audit, Duration::from_millis(300)).await;
    assert_eq!(audited, (0..N).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_member_that_leaves_gets_nothing_more() {
    let broker = TestBroker::start();
    let ep = broker.endpoint();
    let a = Client::connect(&ep).await.unwrap();
    let b = Client::connect(&ep).await.unwrap();
    let mut sub_a = a.queue_subscribe::<u32>("q", "g").await.unwrap();
    let mut sub_b = b.queue_subscribe::<u32>("q", "g").await.unwrap();
    let publisher = Client::connect(&ep).await.unwrap();
    publisher.publish_acked("q", &0).await.unwrap();
    publisher.publish_acked("q", &1).await.unwrap();
    let first_a = drain(&mut sub_a, Duration::from_millis(200)).await;
    let first_b = drain(&mut sub_b, Duration::from_millis(200)).await;
    assert_eq!(first_a.len() + first_b.len(), 2);
    drop(sub_a);
    // The LEAVE travels on a's request socket: a round trip on it means the broker has it.
    a.flush().await.unwrap();
    for n in 2..20 {
        publisher.publish_acked("q", &n).await.unwrap();
    }
    assert_eq!(
        drain(&mut sub_b, Duration::from_millis(300)).await,
        (2..20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_group_names_and_filters_are_errors() {
    let broker = TestBroker::start();
    let c = Client::connect(&broker.endpoint()).await.unwrap();
    for bad in ["", "has space", &"x".repeat(65)] {
        let e = c.queue_subscribe_raw("a", bad).await.unwrap_err();
        assert!(matches!(e, Error::QueueGroup(_)), "{bad:?}: {e}");
    }
    let e = c.queue_subscribe_raw("a..b", "g").await.unwrap_err();
    assert!(matches!(e, Error::Filter(_)), "{e}");
}
