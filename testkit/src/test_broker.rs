//! [`TestBroker`]: a real broker in the test's own process, on loopback ports of its own, with
//! a temporary data dir.

use agora_broker::{Broker, BrokerConfig};

use crate::loopback_port_block;

/// An in-process broker on loopback ports of its own with a temporary data dir; shut down
/// (and the dir removed) on drop.
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

    /// How many blocked `in`/`rd` requests the broker's space holds right now: what a test
    /// polls (with [`crate::wait_until`]) to know a taker is waiting, instead of sleeping.
    pub fn space_waiters(&self) -> usize {
        self.broker()
            .space()
            .expect("the broker serves a space")
            .store()
            .waiter_count()
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
