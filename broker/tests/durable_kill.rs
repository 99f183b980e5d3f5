//! Durable subscriptions against a real `agora-broker` process that is killed with -9 and
//! restarted: the cursor (acked on disk) and the log survive, and the subscriber resumes with
//! exactly the events after its last ack.

use std::time::Duration;

use agora::{Client, RawSubscription, ReplayFrom};
use agora_testkit::{loopback_port_block, BrokerProcess};
use futures_util::StreamExt;

const AGORA_BROKER: &str = env!("CARGO_BIN_EXE_agora-broker");

async fn next_n(sub: &mut RawSubscription) -> u32 {
    let ev = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("an event, not an error");
    ciborium::from_reader(ev.payload()).expect("a u32")
}

#[test]
fn a_durable_subscriber_resumes_exactly_after_its_last_ack_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("tcp://127.0.0.1:{}", loopback_port_block(4));
    let mut broker = BrokerProcess::start(
        AGORA_BROKER,
        &listen,
        dir.path(),
        &["--fsync", "every 5ms", "--no-space"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let publisher = Client::connect(broker.endpoint()).await.unwrap();
        let subscriber = Client::connect(broker.endpoint()).await.unwrap();
        let mut sub = subscriber
            .durable_raw_from("k1", &["k.>"], ReplayFrom::Beginning)
            .await
            .unwrap();
        for n in 0..5u32 {
            publisher.publish_confirmed("k.a", &n).await.unwrap();
        }
        for n in 0..5u32 {
            assert_eq!(next_n(&mut sub).await, n);
        }
        // Everything up to n = 3 is done; 4 was delivered but not acked.
        sub.ack(3).await.unwrap();
        drop(sub);
        // Offline: five more, confirmed (durable in the log).
        for n in 5..10u32 {
            publisher.publish_confirmed("k.a", &n).await.unwrap();
        }
    });
    broker.kill9();

    let broker = BrokerProcess::start(
        AGORA_BROKER,
        &listen,
        dir.path(),
        &["--fsync", "every 5ms", "--no-space"],
    );
    rt.block_on(async {
        let subscriber = Client::connect(broker.endpoint()).await.unwrap();
        let mut sub = subscriber
            .durable_raw_from("k1", &["k.>"], ReplayFrom::Beginning)
            .await
            .unwrap();
        // At least once: 4 (not acked) comes again, then the missed ones, in order, once.
        for n in 4..10u32 {
            assert_eq!(next_n(&mut sub).await, n);
        }
        let publisher = Client::connect(broker.endpoint()).await.unwrap();
        publisher.publish_confirmed("k.a", &10u32).await.unwrap();
        assert_eq!(next_n(&mut sub).await, 10, "then live");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), sub.next())
                .await
                .is_err(),
            "nothing doubled"
        );
    });
}
