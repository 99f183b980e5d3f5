//! The tuple space's events on the bus: `$space.out`, `$space.take`, `$space.expire`.

use std::time::Duration;

use agora::Client;
use agora_examples::TestBroker;
use agora_tuplespace::{parse_template, parse_tuple, Tuple};
use futures_util::StreamExt;
use tokio::time::timeout;

#[tokio::test]
async fn outs_takes_and_expiries_are_published_on_space_topics() {
    let broker = TestBroker::start();
    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let mut events = client.subscribe::<Tuple>("$space.>").await.unwrap();
    let space = broker
        .broker()
        .space()
        .expect("the broker serves a space")
        .clone();

    space.out(parse_tuple(r#"("job", 1)"#).unwrap()).unwrap();
    let taken = space
        .try_take(&parse_template(r#"("job", ?int)"#).unwrap())
        .expect("the job is there");
    space
        .out_with_lease(
            parse_tuple(r#"("lease", 2)"#).unwrap(),
            Duration::from_millis(50),
        )
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = timeout(Duration::from_secs(10), events.next())
            .await
            .expect("space events arrive")
            .expect("stream open")
            .expect("a tuple");
        seen.push((ev.topic, ev.payload.to_string()));
    }
    assert_eq!(
        seen,
        vec![
            ("$space.out".to_string(), r#"("job", 1)"#.to_string()),
            ("$space.take".to_string(), taken.to_string()),
            ("$space.out".to_string(), r#"("lease", 2)"#.to_string()),
            ("$space.expire".to_string(), r#"("lease", 2)"#.to_string()),
        ]
    );
    // `>` does not match `$` topics: space events stay out of ordinary subscriptions.
    let mut plain = client.subscribe_raw(">").await.unwrap();
    space.out(parse_tuple("(3)").unwrap()).unwrap();
    client.publish("after", &1).await.unwrap();
    let first = timeout(Duration::from_secs(10), plain.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.topic(), "after");
}
