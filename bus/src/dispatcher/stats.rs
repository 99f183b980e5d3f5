//! Statistics: the bus's counters and per-topic counters, their rates (events per second
//! since the previous stats tick), and the snapshot answered to STATS and published on
//! `$sys.stats`.

use std::collections::BTreeMap;
use std::time::Instant;

use agora_wire::bus::{self as protocol, TopicStats};

/// The bus's counters.
pub(super) struct Stats {
    started: Instant,
    last_tick: Instant,
    events_in: u64,
    events_in_at_tick: u64,
    rate_in: f64,
    /// Events times the subscriptions they reached.
    events_out: u64,
    rejected: u64,
    requests: u64,
    /// The sequence of the last `$sys.stats` event.
    stats_seq: u64,
}

/// One topic's counters.
pub(super) struct TopicCounters {
    events: u64,
    events_at_tick: u64,
    rate: f64,
}

impl TopicCounters {
    pub(super) fn new() -> TopicCounters {
        TopicCounters {
            events: 0,
            events_at_tick: 0,
            rate: 0.0,
        }
    }
}

/// What a snapshot needs that other parts of the dispatcher count.
pub(super) struct Elsewhere {
    /// Events sent while the events socket was lossy, or dropped from a queue group's backlog.
    pub(super) dropped: u64,
    /// Subscriptions on the events socket.
    pub(super) subscriptions: u64,
}

impl Stats {
    pub(super) fn new(now: Instant) -> Stats {
        Stats {
            started: now,
            last_tick: now,
            events_in: 0,
            events_in_at_tick: 0,
            rate_in: 0.0,
            events_out: 0,
            rejected: 0,
            requests: 0,
            stats_seq: 0,
        }
    }

    /// A request was received.
    #[inline]
    pub(super) fn request(&mut self) {
        self.requests += 1;
    }

    /// A publish was refused.
    #[inline]
    pub(super) fn reject(&mut self) {
        self.rejected += 1;
    }

    /// An event of the topic counted by `topic` was stamped; `fanout` subscriptions
    /// receive it.
    #[inline]
    pub(super) fn event(&mut self, topic: &mut TopicCounters, fanout: u64) {
        topic.events += 1;
        self.events_out += fanout;
        self.events_in += 1;
    }

    /// Events stamped since the start.
    pub(super) fn events_in(&self) -> u64 {
        self.events_in
    }

    /// A stats tick at `now`: the rates become the events since the last tick per second.
    pub(super) fn tick<'a>(
        &mut self,
        now: Instant,
        topics: impl Iterator<Item = &'a mut TopicCounters>,
    ) {
        let secs = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        self.rate_in = (self.events_in - self.events_in_at_tick) as f64 / secs;
        self.events_in_at_tick = self.events_in;
        for t in topics {
            t.rate = (t.events - t.events_at_tick) as f64 / secs;
            t.events_at_tick = t.events;
        }
    }

    /// The sequence for the next `$sys.stats` event.
    pub(super) fn next_stats_seq(&mut self) -> u64 {
        self.stats_seq += 1;
        self.stats_seq
    }

    /// The snapshot at `now`; `topics` gives each topic's name, sequence and counters.
    pub(super) fn snapshot<'a>(
        &self,
        now: Instant,
        elsewhere: Elsewhere,
        topics: impl Iterator<Item = (&'a str, u64, &'a TopicCounters)>,
    ) -> protocol::Stats {
        protocol::Stats {
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            events_in: self.events_in,
            events_out: self.events_out,
            rejected: self.rejected,
            dropped: elsewhere.dropped,
            subscriptions: elsewhere.subscriptions,
            requests: self.requests,
            rate_in: self.rate_in,
            topics: topics
                .map(|(name, seq, t)| {
                    (
                        name.to_string(),
                        TopicStats {
                            events: t.events,
                            seq,
                            rate: t.rate,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rates_are_events_per_second_since_the_last_tick() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        let mut a = TopicCounters::new();
        let mut b = TopicCounters::new();
        for _ in 0..100 {
            s.event(&mut a, 2);
        }
        for _ in 0..50 {
            s.event(&mut b, 0);
        }
        s.tick(t0 + Duration::from_secs(2), [&mut a, &mut b].into_iter());
        assert_eq!(s.rate_in, 75.0);
        assert_eq!((a.rate, b.rate), (50.0, 25.0));
        // The next tick counts only what came since.
        for _ in 0..10 {
            s.event(&mut a, 2);
        }
        s.tick(t0 + Duration::from_secs(3), [&mut a, &mut b].into_iter());
        assert_eq!(s.rate_in, 10.0);
        assert_eq!((a.rate, b.rate), (10.0, 0.0));
        // Two ticks at once: a millisecond, not a division by zero.
        s.event(&mut a, 0);
        s.tick(t0 + Duration::from_secs(3), [&mut a].into_iter());
        assert_eq!(a.rate, 1000.0);
    }

    #[test]
    fn the_snapshot_holds_every_counter() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        let mut a = TopicCounters::new();
        s.request();
        s.request();
        s.reject();
        s.event(&mut a, 3);
        s.event(&mut a, 3);
        s.tick(t0 + Duration::from_secs(1), [&mut a].into_iter());
        let b = TopicCounters::new();
        let elsewhere = Elsewhere {
            dropped: 4,
            subscriptions: 5,
        };
        let topics = [("b", 0, &b), ("a", 7, &a)].into_iter();
        let snap = s.snapshot(t0 + Duration::from_secs(10), elsewhere, topics);
        assert_eq!(snap.uptime_s, 10.0);
        assert_eq!((snap.events_in, snap.events_out), (2, 6));
        assert_eq!((snap.rejected, snap.dropped), (1, 4));
        assert_eq!((snap.subscriptions, snap.requests), (5, 2));
        assert_eq!(snap.rate_in, 2.0);
        let names: Vec<&str> = snap.topics.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "b"]);
        let a = &snap.topics["a"];
        assert_eq!((a.events, a.seq, a.rate), (2, 7, 2.0));
        assert_eq!(s.events_in(), 2);
        assert_eq!(s.next_stats_seq(), 1);
        assert_eq!(s.next_stats_seq(), 2);
    }
}
