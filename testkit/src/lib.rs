//! # agora-testkit
//!
//! What every Agora test (and example) needs to run against a real broker: start one
//! in-process on loopback ports of its own with a temporary data dir, restart it on the same
//! ports, and wait on conditions with deadlines instead of sleeping.
//!
//! # Layout
//!
//! * [`TestBroker`]: an in-process broker with a temp data dir, shut down on drop.
//! * [`loopback_port_block`]: free loopback ports a broker can come back on after a restart.
//! * [`wait_until`]: poll a condition with a deadline (tests never sleep to synchronise).

use std::future::Future;
use std::time::{Duration, Instant};

use agora_broker::{Broker, BrokerConfig};

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

/// The first of `count` consecutive free loopback TCP ports, for a broker that must come back
/// on the same ports after a restart (tests, tools). They lie below the kernel's ephemeral
/// port range: while the broker is down, no outgoing connection can be given one of them as
/// its local port (another test's client, or a client reconnecting to the broker's own port,
/// which on loopback can connect to itself), which would keep the broker from binding again.
/// A block is not handed out twice in one process.
pub fn loopback_port_block(count: u16) -> u16 {
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let ephemeral_low = ephemeral_port_low();
    let bottom: u16 = 10_000.min(ephemeral_low / 2);
    let top = ephemeral_low.saturating_sub(count);
    let span = u32::from(top.saturating_sub(bottom)).max(1);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Start somewhere different in each process, then walk the range.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for step in 0..span {
        let first = bottom + ((seed.wrapping_add(step * u32::from(count))) % span) as u16;
        let taken = handed_out
            .iter()
            .any(|&(f, n)| first < f + n && f < first + count);
        let free =
            || (0..count).all(|d| std::net::TcpListener::bind(("127.0.0.1", first + d)).is_ok());
        if !taken && free() {
            handed_out.push((first, count));
            return first;
        }
    }
    panic!("no {count} free loopback ports between {bottom} and {ephemeral_low}");
}

/// The lowest port the kernel gives outgoing connections (`low high` in
/// `ip_local_port_range`; Linux's default if unreadable).
fn ephemeral_port_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_are_free_below_the_ephemeral_range_and_never_handed_out_twice() {
        let low = ephemeral_port_low();
        let mut blocks: Vec<u16> = (0..50).map(|_| loopback_port_block(4)).collect();
        for &b in &blocks {
            assert!(b + 4 <= low, "{b} below the ephemeral range ({low})");
            for d in 0..4 {
                std::net::TcpListener::bind(("127.0.0.1", b + d)).expect("free");
            }
        }
        blocks.sort_unstable();
        assert!(
            blocks.windows(2).all(|w| w[1] >= w[0] + 4),
            "{blocks:?} overlap"
        );
    }
}
