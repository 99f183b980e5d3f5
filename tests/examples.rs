//! The runnable examples (examples/*.rs), each run against a temp broker with small
//! parameters, asserting the outcome the example is about. The examples' logic is included
//! from their files, so what is tested is what `cargo run --example` runs.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_examples::TestBroker;

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
}
