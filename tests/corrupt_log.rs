//! The broker recovers from a damaged event log: a torn last record, or a flipped byte.

use std::time::Duration;

use agora::{Client, ReplayFrom};
use agora_examples::TestBroker;
use futures_util::StreamExt;
use tokio::time::timeout;

const N: u32 = 100;

/// The newest segment file of the broker's event log.
fn last_segment(data: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Publish N confirmed events, damage the log while the broker is down, restart, and check
/// that exactly the first `intact` events come back (in order) and publishing goes on after
/// them.
async fn damaged_log_recovers(damage: impl FnOnce(&std::path::Path), intact: u32) {
    let mut broker = TestBroker::start();
    {
        let client = Client::connect(&broker.endpoint()).await.unwrap();
        // 1000 + n: every payload is the same size in CBOR (3 bytes), so every record is.
        for n in 0..N {
            client.publish_confirmed("c.t", &(1000 + n)).await.unwrap();
        }
    }
    broker.restart(|config| damage(&last_segment(&config.data_dir)));

    let client = Client::connect(&broker.endpoint()).await.unwrap();
    let mut replay = client
        .subscribe_from::<u32>("c.t", ReplayFrom::Beginning)
        .await
        .unwrap();
    for n in 0..intact {
        let ev = timeout(Duration::from_secs(10), replay.next())
            .await
            .unwrap_or_else(|_| panic!("event {n} not replayed in time"))
            .expect("stream open")
            .expect("an intact event");
        assert_eq!(
            (ev.payload, ev.offset, ev.seq),
            (1000 + n, n as u64, n as u64 + 1)
        );
    }
    // The damaged tail is gone: the next event takes the first free offset and sequence.
    let (offset, seq) = client.publish_confirmed("c.t", &999u32).await.unwrap();
    assert_eq!((offset, seq), (intact as u64, intact as u64 + 1));
    let ev = timeout(Duration::from_secs(10), replay.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((ev.payload, ev.offset), (999, intact as u64));
}

#[tokio::test]
async fn a_torn_last_record_is_truncated() {
    damaged_log_recovers(
        |seg| {
            // Cut the last record in half.
            let len = std::fs::metadata(seg).unwrap().len();
            assert_eq!(len % N as u64, 0, "equal-sized records");
            let record = len / N as u64;
            let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            f.set_len(len - record / 2).unwrap();
        },
        N - 1,
    )
    .await;
}

#[tokio::test]
async fn a_flipped_byte_truncates_from_the_bad_record() {
    damaged_log_recovers(
        |seg| {
            // Flip a byte inside record 60 (all records here have the same size).
            let mut bytes = std::fs::read(seg).unwrap();
            assert_eq!(bytes.len() % N as usize, 0, "equal-sized records");
            let record = bytes.len() / N as usize;
            bytes[60 * record + record / 2] ^= 0xff;
            std::fs::write(seg, bytes).unwrap();
        },
        60,
    )
    .await;
}
