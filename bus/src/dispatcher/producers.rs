//! Producer dedupe: a confirmed publish carries its producer's id and a per-producer
//! sequence number, so a retry of an event already stamped (its confirm was lost, or came
//! too late) is answered instead of stored twice. Each producer's last sequence is kept until
//! it has been idle for `producer_ttl`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_wire::bus::UNKNOWN_OFFSET;

/// How often, at most, producers idle past `producer_ttl` are looked for (more often when
/// the TTL is shorter than twice this).
const PRODUCER_SWEEP: Duration = Duration::from_secs(10);

/// The last event a producer published: what a retry of it is answered with.
#[derive(Clone, Copy, Debug)]
struct ProducerState {
    seq: u64,
    /// Offset and topic sequence of that event; unknown after a restart.
    stamped: Option<(u64, u64)>,
    /// When it last published (or retried), ns since the epoch: it is forgotten
    /// `producer_ttl` later (see [`Producers::sweep`]).
    last_seen_ns: u64,
}

/// What to do with a producer's publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// The next in the producer's sequence, or the first of a producer not known: stamp it.
    Fresh,
    /// A retry of an event already stamped: forward nothing, answer with this offset and
    /// topic sequence. They are known only for the producer's latest event seen since this
    /// broker started; an older retry gets [`UNKNOWN_OFFSET`] and 0.
    Retry { offset: u64, seq: u64 },
    /// An earlier publish never arrived (lost with a dropped connection): refuse it, so the
    /// producer resends in order and nothing is skipped as a duplicate.
    Gap { expected: u64 },
}

/// The producers the broker remembers, by id.
pub(super) struct Producers {
    known: HashMap<u64, ProducerState>,
    ttl: Duration,
    last_sweep: Instant,
}

impl Producers {
    /// The producers the log recovered (id, last sequence), seen at `now_ns`: their TTL runs
    /// from the restart, as when they last published is not known.
    pub(super) fn recovered(
        recovered: impl IntoIterator<Item = (u64, u64)>,
        ttl: Duration,
        now: Instant,
        now_ns: u64,
    ) -> Producers {
        let known = recovered
            .into_iter()
            .map(|(id, seq)| {
                (
                    id,
                    ProducerState {
                        seq,
                        stamped: None,
                        last_seen_ns: now_ns,
                    },
                )
            })
            .collect();
        Producers {
            known,
            ttl,
            last_sweep: now,
        }
    }

    /// Check publish `pseq` of producer `id`, received at `received_at_ns`. A retry counts
    /// as the producer being seen.
    #[inline]
    pub(super) fn check(&mut self, id: u64, pseq: u64, received_at_ns: u64) -> Check {
        let Some(p) = self.known.get_mut(&id) else {
            return Check::Fresh;
        };
        if pseq <= p.seq {
            p.last_seen_ns = p.last_seen_ns.max(received_at_ns);
            let (offset, seq) = match p.stamped {
                Some(stamped) if p.seq == pseq => stamped,
                _ => (UNKNOWN_OFFSET, 0),
            };
            return Check::Retry { offset, seq };
        }
        if pseq != p.seq + 1 {
            return Check::Gap {
                expected: p.seq + 1,
            };
        }
        Check::Fresh
    }

    /// Publish `pseq` of producer `id` was stamped with `offset` and topic sequence `seq`
    /// at `time_ns`.
    #[inline]
    pub(super) fn stamped(&mut self, id: u64, pseq: u64, offset: u64, seq: u64, time_ns: u64) {
        self.known.insert(
            id,
            ProducerState {
                seq: pseq,
                stamped: Some((offset, seq)),
                last_seen_ns: time_ns,
            },
        );
    }

    /// Forget the producers that have not published for `producer_ttl`, if the last look
    /// was long enough ago: a producer id is random per client, so without this every client
    /// that ever published confirmed would be remembered for good. (The log forgets them
    /// likewise, so a restart does not bring them back.) Returns how many were forgotten.
    pub(super) fn sweep(&mut self, now: Instant, now_ns: u64) -> usize {
        if now.saturating_duration_since(self.last_sweep) < PRODUCER_SWEEP.min(self.ttl / 2) {
            return 0;
        }
        self.last_sweep = now;
        let cutoff = agora_storage::log::producer_cutoff_ns(now_ns, self.ttl);
        let before = self.known.len();
        self.known.retain(|_, p| p.last_seen_ns >= cutoff);
        let forgotten = before - self.known.len();
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                left = self.known.len(),
                "idle producers forgotten"
            );
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);
    const SEC: u64 = 1_000_000_000;

    fn empty(now: Instant) -> Producers {
        Producers::recovered([], TTL, now, 0)
    }

    #[test]
    fn a_retry_of_the_latest_is_answered_with_its_stamp() {
        let mut p = empty(Instant::now());
        assert_eq!(p.check(7, 1, 10), Check::Fresh);
        p.stamped(7, 1, 100, 5, 10);
        assert_eq!(
            p.check(7, 1, 20),
            Check::Retry {
                offset: 100,
                seq: 5
            }
        );
        assert_eq!(p.check(7, 2, 30), Check::Fresh);
        p.stamped(7, 2, 101, 6, 30);
        // An older retry: its stamp is no longer kept.
        let unknown = Check::Retry {
            offset: UNKNOWN_OFFSET,
            seq: 0,
        };
        assert_eq!(p.check(7, 1, 40), unknown);
        assert_eq!(
            p.check(7, 2, 40),
            Check::Retry {
                offset: 101,
                seq: 6
            }
        );
        // Other producers are apart.
        assert_eq!(p.check(8, 5, 40), Check::Fresh);
    }

    #[test]
    fn a_skipped_sequence_is_a_gap() {
        let mut p = empty(Instant::now());
        p.stamped(7, 3, 100, 1, 10);
        assert_eq!(p.check(7, 5, 20), Check::Gap { expected: 4 });
        assert_eq!(p.check(7, 4, 20), Check::Fresh);
    }

    #[test]
    fn recovered_producers_dedupe_without_a_stamp() {
        let mut p = Producers::recovered([(7, 3)], TTL, Instant::now(), 0);
        let unknown = Check::Retry {
            offset: UNKNOWN_OFFSET,
            seq: 0,
        };
        assert_eq!(p.check(7, 3, 10), unknown);
        assert_eq!(p.check(7, 2, 10), unknown);
        assert_eq!(p.check(7, 5, 10), Check::Gap { expected: 4 });
        assert_eq!(p.check(7, 4, 10), Check::Fresh);
    }

    #[test]
    fn idle_producers_are_forgotten_after_the_ttl() {
        let t0 = Instant::now();
        let mut p = empty(t0);
        let ttl_ns = TTL.as_secs() * SEC;
        p.stamped(1, 1, 0, 1, 1000 * SEC);
        p.stamped(2, 1, 1, 1, 1000 * SEC);
        // Producer 2 retries later: that counts as seen.
        assert!(matches!(p.check(2, 1, 1100 * SEC), Check::Retry { .. }));
        // Too soon after the last sweep: nothing is looked at.
        let late = 1000 * SEC + ttl_ns + SEC;
        assert_eq!(p.sweep(t0 + Duration::from_secs(1), late), 0);
        let t1 = t0 + PRODUCER_SWEEP;
        assert_eq!(p.sweep(t1, late), 1);
        assert_eq!(
            p.check(1, 5, late),
            Check::Fresh,
            "forgotten: any sequence goes"
        );
        assert_eq!(p.check(2, 3, late), Check::Gap { expected: 2 });
        // At exactly the TTL a producer is still kept.
        assert_eq!(p.sweep(t1 + PRODUCER_SWEEP, 1100 * SEC + ttl_ns), 0);
        assert_eq!(p.sweep(t1 + 2 * PRODUCER_SWEEP, 1100 * SEC + ttl_ns + 1), 1);
    }

    #[test]
    fn a_short_ttl_is_swept_at_half_of_it() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(4);
        let mut p = Producers::recovered([(1, 1)], ttl, t0, 0);
        assert_eq!(p.sweep(t0 + Duration::from_secs(1), 5 * SEC), 0);
        assert_eq!(p.sweep(t0 + Duration::from_secs(2), 5 * SEC), 1);
    }
}
