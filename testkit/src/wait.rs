//! Waiting on a condition with a deadline. Tests poll what they wait for and fail when the
//! deadline passes; they never sleep for a guessed time to synchronise.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled: short next to any deadline, long enough not to spin.
const POLL: Duration = Duration::from_millis(5);

/// Poll `cond` until it returns true or `timeout` passes; returns whether it became true.
/// For async tests (it yields to the runtime between polls).
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
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for plain threads: poll `cond` until it returns true or `timeout` passes;
/// returns whether it became true. Never call it on an async runtime's thread (it blocks
/// the thread between polls).
pub fn wait_until_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_comes_true_is_seen_and_one_that_never_does_times_out() {
        let mut polls = 0;
        assert!(wait_until_blocking(Duration::from_secs(10), || {
            polls += 1;
            polls == 3
        }));
        let started = Instant::now();
        assert!(!wait_until_blocking(Duration::from_millis(30), || false));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
