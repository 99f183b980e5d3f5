//! # agora-examples
//!
//! Helpers shared by the runnable examples (`examples/`): use the broker `AGORA_BROKER`
//! names, or start an embedded one on an ephemeral loopback port with its own temp data dir.
//! The package also holds the cross-crate integration tests (`tests/`) and the benchmarks
//! (`benches/`). A test that drives one crate's API or binary lives with that crate instead
//! (the rule, and the test kit every test uses, are in crate `agora-testkit`).
//!
//! # Layout
//!
//! * [`broker_or_embedded`]: what every example calls first.
//! * [`arg`]: an example's optional positional command-line argument.
//! * [`run_id`]: a short id unique to this run, so examples sharing a long-lived broker (or
//!   leftovers of an interrupted run) never see each other's tuples and topics.
//! * [`TestBroker`] and [`wait_until`], from crate `agora-testkit`.

pub use agora_testkit::{wait_until, TestBroker};

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
