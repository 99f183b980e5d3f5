//! # agora-testkit
//!
//! What every Agora test (and example) needs to run against a real broker: one in the test's
//! own process, or the `agora-broker` binary as a child process; loopback ports it can come
//! back on after a restart; child processes that are waited for with deadlines and killed if
//! the test fails; and waiting on conditions with deadlines instead of sleeping.
//!
//! # Layout
//!
//! * [`test_broker`]: [`TestBroker`], an in-process broker on loopback ports of its own with
//!   a temp data dir: start, restart on the same ports, shut down on drop.
//! * [`broker_process`]: [`BrokerProcess`], the `agora-broker` binary as a child process:
//!   the ready line read with a deadline, SIGTERM, `kill -9`, killed on drop.
//! * [`child`]: [`ChildProcess`] (killed on drop, waited for with a deadline), [`run`] a
//!   command to completion, and [`lines`] to read a child's output with deadlines.
//! * [`ports`]: [`loopback_port_block`], free loopback ports outside the ephemeral range.
//! * [`wait`]: [`wait_until`] (async) and [`wait_until_blocking`]: poll a condition with a
//!   deadline. Tests never sleep to synchronise.
//!
//! # Where a test lives
//!
//! A test lives with the crate whose API or binary it drives: `cli/tests/` runs the `agora`
//! binary, `broker/tests/` the `agora-broker` binary, `storage/tests/` the storage layer's
//! API. The root package's `tests/` keeps the cross-crate scenarios: the SDK against a
//! broker, the runnable examples, and the wire format spoken with raw sockets
//! (`tests/protocol_raw.rs`). A test that runs a binary lives with it even when an SDK client
//! drives the load (`kill -9` of a broker process): only the package that owns a binary is
//! told its path, `env!("CARGO_BIN_EXE_<name>")`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use agora_testkit::{wait_until_blocking, TestBroker};
//!
//! let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_millis(50));
//! assert!(broker.endpoint().starts_with("tcp://127.0.0.1:"));
//! assert!(wait_until_blocking(Duration::from_secs(10), || {
//!     broker.space_waiters() == 0
//! }));
//! ```

pub mod broker_process;
pub mod child;
pub mod ports;
pub mod test_broker;
pub mod wait;

pub use broker_process::BrokerProcess;
pub use child::{lines, run, ChildProcess};
pub use ports::loopback_port_block;
pub use test_broker::TestBroker;
pub use wait::{wait_until, wait_until_blocking};
