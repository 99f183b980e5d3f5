//! # agora-examples
//!
//! Helpers shared by the runnable examples (`examples/`) and the integration tests
//! (`tests/`): start an embedded broker on an ephemeral loopback port with its own temp
//! data dir, or use the one `AGORA_BROKER` names.
//!
//! # Layout
//!
//! * [`TestBroker`]: an in-process broker with a temp data dir, shut down on drop.
//! * [`broker_or_embedded`]: what every example calls first.
//! * [`wait_until`]: poll a condition with a deadline (tests never sleep to synchronise).
//! * [`arg`]: an example's optional positional command-line argument.
//! * [`run_id`]: a short id unique to this run, so examples sharing a long-lived broker (or
//!   leftovers of an interrupted run) never see each other's tuples and topics.

use std::future::Future;
use std::time::{Duration, Instant};

use agora_bus::broker::{loopback_port_block, Broker, BrokerConfig};

/// An in-process broker on ephemeral loopback ports with a temporary data dir.
pub struct TestBroker {
    broker: Option<Broker>,
    dir: tempfile::TempDir,
}

impl TestBroker {
    /// Start a broker with default settings.
    pub fn start() -> TestBroker {
        TestBroker::start_with(|_| {})
    }

    /// Start a broker, letting `tweak` adjust the config (its data dir is already set).
    ///
    /// It listens on four loopback ports of its own ([`loopback_port_block`]: outside the
    /// ephemeral range, so [`TestBroker::restart`] finds them free again).
    pub fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = BrokerConfig::ephemeral(dir.path());
        config.listen = format!("tcp://127.0.0.1:{}", loopback_port_block(4));
        tweak(&mut config);
        let broker = Broker::start(config).expect("broker starts");
        TestBroker {
            broker: Some(broker),
            dir,
        }
    }

    /// The request endpoint clients connect to.
    pub fn endpoint(&self) -> String {
        self.broker().endpoint().to_string()
    }

    /// The running broker.
    pub fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("broker running")
    }

    /// The data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stop the broker and start it again on the same endpoints and data dir.
    pub fn restart(&mut self, tweak: impl FnOnce(&mut BrokerConfig)) {
        let old = self.broker.take().expect("broker running");
        let mut config = BrokerConfig::ephemeral(self.dir.path());
        config.listen = old.endpoint().to_string();
        config.events = Some(old.events_endpoint().to_string());
        config.space = old.space_endpoint().map(str::to_string);
        config.replay = Some(old.replay_endpoint().to_string());
        old.shutdown().expect("clean shutdown");
        tweak(&mut config);
        self.broker = Some(Broker::start(config).expect("broker restarts"));
    }
}

/// The broker an example should use: the one `AGORA_BROKER` names, or a fresh embedded one
/// (returned so it lives as long as the example needs it).
pub fn broker_or_embedded() -> (String, Option<TestBroker>) {
    match std::env::var("AGORA_BROKER") {
        Ok(ep) if !ep.is_empty() => (ep, None),
        _ => {
            let b = TestBroker::start();
            (b.endpoint(), Some(b))
        }
    }
}

/// Poll `cond` until it returns true or `timeout` passes; returns whether it became true.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A short id unique to this run (clock, process id and a call counter, in base 36): examples
/// put it in their tuples and topics so that runs sharing one broker never mix.
pub fn run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = u64::from(std::process::id());
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut n = nanos ^ pid.rotate_left(40) ^ calls.rotate_left(24);
    let mut id = String::new();
    for _ in 0..10 {
        let d = (n % 36) as u32;
        id.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    id
}

/// The example's `index`-th command-line argument parsed as `T`, or `default` if absent.
pub fn arg<T>(index: usize, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::args().nth(index) {
        Some(a) => a
            .parse()
            .map_err(|e| anyhow::anyhow!("argument {index} `{a}`: {e}")),
        None => Ok(default),
    }
}
