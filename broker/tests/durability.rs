//! Durability of the event log, against a real `agora-broker` process: kill -9 while
//! confirmed publishes are in flight, restart, and check the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora::{Client, ClientOptions};
use agora_storage::log::{EventLog, LogOptions};
use agora_testkit::{loopback_port_block, wait_until_blocking, BrokerProcess};

const AGORA_BROKER: &str = env!("CARGO_BIN_EXE_agora-broker");

/// Every record in the log under `data`, in offset order.
fn read_log(data: &Path) -> Vec<agora_storage::log::OwnedRecord> {
    let (log, _) = EventLog::open(&data.join("log"), LogOptions::default()).expect("log opens");
    let mut reader = log.reader();
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let batch = reader.read(from, 10_000, 16 << 20).expect("log reads");
        if batch.is_empty() {
            return all;
        }
        from = batch.last().unwrap().offset + 1;
        all.extend(batch);
    }
}

/// Wait until `confirmed` holds `at_least` entries (failing after 20 s), kill the broker with
/// SIGKILL, let the client tasks notice, and return what was confirmed.
fn kill_9_once_confirmed<T: Clone>(
    broker: &mut BrokerProcess,
    rt: &tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    confirmed: &Mutex<Vec<T>>,
    at_least: usize,
) -> Vec<T> {
    assert!(
        wait_until_blocking(Duration::from_secs(20), || {
            confirmed.lock().unwrap().len() >= at_least
        }),
        "clients made no progress"
    );
    broker.kill9();
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();
    confirmed
}

#[test]
fn kill_9_loses_no_confirmed_event_and_stores_each_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Four free ports: the broker comes back on the same request, events, space and replay
    // ports.
    let port = loopback_port_block(4);
    let listen = format!("tcp://127.0.0.1:{port}");
    let mut broker =
        BrokerProcess::start(AGORA_BROKER, &listen, dir.path(), &["--fsync", "every 5ms"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let confirmed: Arc<Mutex<Vec<(u32, u32, u64)>>> = Arc::default();

    // Two publishers send confirmed events as fast as they are confirmed.
    let mut tasks = Vec::new();
    for p in 0..2u32 {
        let endpoint = broker.endpoint().to_string();
        let confirmed = confirmed.clone();
        tasks.push(rt.spawn(async move {
            let options = ClientOptions {
                confirm_timeout: Duration::from_secs(2),
                ..ClientOptions::default()
            };
            let client = Client::connect_with(&endpoint, options).await.unwrap();
            for n in 0u32.. {
                match client.publish_confirmed("durable.events", &(p, n)).await {
                    Ok((offset, _)) => confirmed.lock().unwrap().push((p, n, offset)),
                    Err(_) => return, // the broker is gone
                }
            }
        }));
    }
    let confirmed = kill_9_once_confirmed(&mut broker, &rt, tasks, &confirmed, 400);

    let records = read_log(dir.path());
    let mut by_offset = HashMap::new();
    let mut seen: HashMap<(u32, u32), usize> = HashMap::new();
    let mut last_n: HashMap<u32, u32> = HashMap::new();
    for r in &records {
        let (p, n): (u32, u32) = ciborium::from_reader(&r.payload[..]).unwrap();
        *seen.entry((p, n)).or_default() += 1;
        // Per publisher, events are stored in the order they were sent.
        if let Some(prev) = last_n.insert(p, n) {
            assert_eq!(n, prev + 1, "publisher {p} out of order in the log");
        }
        by_offset.insert(r.offset, (p, n));
    }
    assert!(seen.values().all(|&c| c == 1), "an event is stored twice");
    for (p, n, offset) in &confirmed {
        assert_eq!(
            by_offset.get(offset),
            Some(&(*p, *n)),
            "confirmed event {p}/{n} at offset {offset} is missing after kill -9"
        );
    }

    // The broker comes back on the same data and goes on after the last stored offset.
    let broker = BrokerProcess::start(AGORA_BROKER, &listen, dir.path(), &[]);
    rt.block_on(async {
        let client = Client::connect(broker.endpoint()).await.unwrap();
        let (offset, seq) = client
            .publish_confirmed("durable.events", &(9u32, 0u32))
            .await
            .unwrap();
        assert_eq!(offset, records.len() as u64);
        assert_eq!(seq, records.len() as u64 + 1);
    });
}

#[test]
fn a_retried_confirmed_publish_is_stored_once() {
    // The SDK retries with the same producer sequence; simulate a lost reply by sending the
    // same producer id/seq twice through raw sockets and check the log holds one copy.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        AGORA_BROKER,
        "tcp://127.0.0.1:*",
        dir.path(),
        &["--fsync", "always"],
    );
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(broker.endpoint()).unwrap();
    let send = |request_id: u8, seq: u64| {
        // header: version 1, op publish, flags CONFIRM|PRODUCER, CBOR, request id
        let mut f = vec![1u8, 0x01, 0x02 | 0x04, 0, request_id, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&42u64.to_le_bytes());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(b"retry.topic\0");
        f.extend_from_slice(&[0x18, 0x2a]); // CBOR 42
        dealer.send(&f[..], 0).unwrap();
        let reply = dealer.recv_multipart(0).unwrap();
        assert_eq!(reply[0][1], 0x80, "ok reply");
        u64::from_le_bytes(reply[1][..8].try_into().unwrap())
    };
    let first = send(1, 1);
    let again = send(2, 1);
    assert_eq!(first, again, "a retry is answered with the original offset");
    // A gap in the producer's sequence is refused (code 9), so nothing is skipped.
    let mut f = vec![1u8, 0x01, 0x02 | 0x04, 0, 3, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&42u64.to_le_bytes());
    f.extend_from_slice(&5u64.to_le_bytes());
    f.extend_from_slice(b"retry.topic\0\x01");
    dealer.send(&f[..], 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(reply[0][1], 0x81, "error reply");
    assert_eq!(reply[1], 9u16.to_le_bytes());
    assert_eq!(send(4, 2), first + 1);
    drop(broker);
    let records = read_log(dir.path());
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].producer, Some((42, 1)));
    assert_eq!(records[1].producer, Some((42, 2)));
}

#[test]
fn a_producer_idle_past_its_ttl_is_forgotten() {
    // The broker remembers each producer's last sequence to drop retries, for
    // `--producer-ttl` after its last publish; then it forgets it, so ids of clients long
    // gone do not pile up. A forgotten producer's next publish is taken as it comes.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        AGORA_BROKER,
        "tcp://127.0.0.1:*",
        dir.path(),
        &["--producer-ttl", "300ms"],
    );
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(broker.endpoint()).unwrap();
    // A confirmed publish from producer 77: Ok(offset) or Err(error code).
    let publish = |request_id: u8, seq: u64| -> Result<u64, u16> {
        let mut f = vec![1u8, 0x01, 0x02 | 0x04, 0, request_id, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&77u64.to_le_bytes());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(b"ttl.topic\0\x01");
        dealer.send(&f[..], 0).unwrap();
        let reply = dealer.recv_multipart(0).unwrap();
        match reply[0][1] {
            0x80 => Ok(u64::from_le_bytes(reply[1][..8].try_into().unwrap())),
            0x81 => Err(u16::from_le_bytes(reply[1][..2].try_into().unwrap())),
            op => panic!("unexpected reply op {op:#x}"),
        }
    };
    assert_eq!(publish(1, 1), Ok(0));
    // Known: sequence 5 after 1 is a gap, refused (OUT_OF_ORDER, 9).
    assert_eq!(publish(2, 5), Err(9));
    // Once forgotten (the TTL, then the next sweep, about a second), the same publish is
    // taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    let offset = loop {
        match publish(3, 5) {
            Ok(offset) => break offset,
            Err(9) => {}
            Err(code) => panic!("error code {code}"),
        }
        assert!(Instant::now() < deadline, "producer 77 never forgotten");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(offset, 1);
    // And it is remembered again from there: a retry is answered, not stored.
    assert_eq!(publish(4, 5), Ok(1));
    drop(broker);
    let records = read_log(dir.path());
    let producers: Vec<_> = records.iter().map(|r| r.producer).collect();
    assert_eq!(producers, [Some((77, 1)), Some((77, 5))]);
}

#[test]
fn kill_9_loses_no_confirmed_tuple() {
    let dir = tempfile::tempdir().unwrap();
    let port = loopback_port_block(4);
    let listen = format!("tcp://127.0.0.1:{port}");
    let mut broker =
        BrokerProcess::start(AGORA_BROKER, &listen, dir.path(), &["--fsync", "every 5ms"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let confirmed: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..2u32 {
        let endpoint = broker.endpoint().to_string();
        let confirmed = confirmed.clone();
        tasks.push(rt.spawn(async move {
            let client = Client::connect(&endpoint).await.unwrap();
            let space = client.space().unwrap();
            for n in 0u32.. {
                // `out` returns once the tuple is in the space's write-ahead log on disk.
                match tokio::time::timeout(Duration::from_secs(2), space.out(("t", p, n))).await {
                    Ok(Ok(())) => confirmed.lock().unwrap().push((p, n)),
                    _ => return, // the broker is gone
                }
            }
        }));
    }
    let confirmed = kill_9_once_confirmed(&mut broker, &rt, tasks, &confirmed, 200);

    let broker = BrokerProcess::start(AGORA_BROKER, &listen, dir.path(), &[]);
    rt.block_on(async {
        let client = Client::connect(broker.endpoint()).await.unwrap();
        let space = client.space().unwrap();
        let template = agora::parse_template(r#"("t", ?int, ?int)"#).unwrap();
        let stored = space.dump(Some(&template)).await.unwrap();
        let mut count: HashMap<(u32, u32), usize> = HashMap::new();
        for t in &stored {
            let (_, p, n): (String, u32, u32) = agora::from_tuple(t).unwrap();
            *count.entry((p, n)).or_default() += 1;
        }
        assert!(count.values().all(|&c| c == 1), "a tuple is stored twice");
        for key in &confirmed {
            assert_eq!(
                count.get(key),
                Some(&1),
                "confirmed tuple {key:?} lost by kill -9"
            );
        }
        // The space still serves: take one of the survivors.
        let (p, n) = confirmed[0];
        let exact = agora::parse_template(&format!(r#"("t", {p}, {n})"#)).unwrap();
        assert!(space.try_take(&exact).await.unwrap().is_some());
    });
}
