//! Durable subscriptions against a real `agora-broker` process that is killed with -9 and
//! restarted: the cursor (acked on disk) and the log survive, and the subscriber resumes with
//! exactly the events after its last ack.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora::{Client, RawSubscription, ReplayFrom};
use futures_util::StreamExt;

/// A broker child process on a fixed request endpoint with a given data dir.
struct BrokerProcess {
    child: Child,
    endpoint: String,
}

impl BrokerProcess {
    fn start(listen: &str, data: &Path) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora-broker"))
            .args(["--listen", listen, "--data"])
            .arg(data)
            .args(["--fsync", "every 5ms", "--no-space"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("broker starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let endpoint = line
            .trim()
            .strip_prefix("agora-broker ready: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        BrokerProcess { child, endpoint }
    }

    fn kill9(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port with the three ports after it free too (events, space, replay).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 65_000
            && (1..=3).all(|d| std::net::TcpListener::bind(("127.0.0.1", port + d)).is_ok())
        {
            return port;
        }
    }
}

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
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let mut broker = BrokerProcess::start(&listen, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let publisher = Client::connect(&broker.endpoint).await.unwrap();
        let subscriber = Client::connect(&broker.endpoint).await.unwrap();
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

    let broker = BrokerProcess::start(&listen, dir.path());
    rt.block_on(async {
        let subscriber = Client::connect(&broker.endpoint).await.unwrap();
        let mut sub = subscriber
            .durable_raw_from("k1", &["k.>"], ReplayFrom::Beginning)
            .await
            .unwrap();
        // At least once: 4 (not acked) comes again, then the missed ones, in order, once.
        for n in 4..10u32 {
            assert_eq!(next_n(&mut sub).await, n);
        }
        let publisher = Client::connect(&broker.endpoint).await.unwrap();
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
