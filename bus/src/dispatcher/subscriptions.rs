//! Subscription tracking: the events socket (XPUB, verboser) reports every subscribe and
//! unsubscribe; they are counted per prefix, for the stats (how many subscriptions, how many
//! receive each topic's events) and for the tuple space, which sends its `$space.*` events
//! only while some subscription would receive them.
//!
//! Every change moves a generation number; each topic keeps its fan-out (how many
//! subscriptions its events reach) in a [`Fanout`] stamped with the generation it was counted
//! at, so it is counted again only after the subscriptions changed.

use std::collections::HashMap;

use agora_wire::bus::SPACE_TOPIC_PREFIX;

/// The subscriptions on the events socket, by prefix.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// Subscription prefix -> number of subscriptions.
    prefixes: HashMap<Vec<u8>, u64>,
    count: u64,
    generation: u64,
}

/// A topic's fan-out, as counted at some generation of the subscriptions.
pub(super) struct Fanout {
    count: u64,
    generation: u64,
}

impl Fanout {
    /// Not counted yet.
    pub(super) fn new() -> Fanout {
        Fanout {
            count: 0,
            generation: u64::MAX,
        }
    }
}

impl Subscriptions {
    /// Apply one message of the events socket: `1 ‖ prefix` subscribes, `0 ‖ prefix`
    /// unsubscribes. Returns whether it was either (the subscriptions may have changed);
    /// anything else is ignored.
    pub(super) fn apply(&mut self, msg: &[u8]) -> bool {
        let Some((&kind, prefix)) = msg.split_first() else {
            return false;
        };
        match kind {
            1 => {
                *self.prefixes.entry(prefix.to_vec()).or_insert(0) += 1;
                self.count += 1;
            }
            0 => {
                if let Some(n) = self.prefixes.get_mut(prefix) {
                    *n -= 1;
                    self.count -= 1;
                    if *n == 0 {
                        self.prefixes.remove(prefix);
                    }
                }
            }
            _ => return false,
        }
        self.generation += 1;
        true
    }

    /// How many subscriptions there are.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// Whether some subscription would receive `$space.*` events: its prefix covers
    /// `$space.`, or starts with it.
    pub(super) fn space_wanted(&self) -> bool {
        let space = SPACE_TOPIC_PREFIX.as_bytes();
        self.prefixes
            .keys()
            .any(|p| space.starts_with(p) || p.starts_with(space))
    }

    /// How many subscriptions receive `topic`'s events: `cached` if it was counted since the
    /// subscriptions last changed, else counted now (and kept in `cached`).
    #[inline]
    pub(super) fn fanout(&self, cached: &mut Fanout, topic: &[u8]) -> u64 {
        if cached.generation != self.generation {
            cached.count = self
                .prefixes
                .iter()
                .filter(|(prefix, _)| is_prefix_of_event(prefix, topic))
                .map(|(_, n)| *n)
                .sum();
            cached.generation = self.generation;
        }
        cached.count
    }
}

/// Whether a SUB subscription `prefix` matches the event frame for `topic` (which starts with
/// the topic, then a NUL): the prefix may cover the topic and its NUL.
fn is_prefix_of_event(prefix: &[u8], topic: &[u8]) -> bool {
    if prefix.len() <= topic.len() {
        topic.starts_with(prefix)
    } else {
        prefix.len() == topic.len() + 1 && prefix.starts_with(topic) && prefix[topic.len()] == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(prefix: &[u8]) -> Vec<u8> {
        [&[1u8][..], prefix].concat()
    }

    fn unsub(prefix: &[u8]) -> Vec<u8> {
        [&[0u8][..], prefix].concat()
    }

    #[test]
    fn subscriptions_are_counted_per_prefix() {
        let mut s = Subscriptions::default();
        assert!(s.apply(&sub(b"a.")));
        assert!(s.apply(&sub(b"a.")));
        assert!(s.apply(&sub(b"")));
        assert_eq!(s.count(), 3);
        assert!(s.apply(&unsub(b"a.")));
        assert_eq!(s.count(), 2);
        assert_eq!(s.prefixes[&b"a."[..]], 1);
        assert!(s.apply(&unsub(b"a.")));
        assert!(!s.prefixes.contains_key(&b"a."[..]));
        // An unsubscribe of what is not subscribed counts nothing, but is a change.
        let generation = s.generation;
        assert!(s.apply(&unsub(b"zzz")));
        assert_eq!(s.count(), 1);
        assert_eq!(s.generation, generation + 1);
        // Neither a subscribe nor an unsubscribe: ignored.
        assert!(!s.apply(b""));
        assert!(!s.apply(b"\x02a"));
        assert_eq!(s.generation, generation + 1);
    }

    #[test]
    fn fanout_is_recounted_only_after_a_change() {
        let mut s = Subscriptions::default();
        let mut f = Fanout::new();
        assert_eq!(s.fanout(&mut f, b"a.b"), 0);
        s.apply(&sub(b"a."));
        s.apply(&sub(b"a."));
        s.apply(&sub(b"a.b\0"));
        s.apply(&sub(b"a.b\0x"));
        s.apply(&sub(b"a.bc"));
        s.apply(&sub(b"b"));
        assert_eq!(s.fanout(&mut f, b"a.b"), 3, "a. twice and the exact a.b");
        // Counted at this generation: a stale count is kept until the next change.
        f.count = 42;
        assert_eq!(s.fanout(&mut f, b"a.b"), 42);
        s.apply(&unsub(b"a."));
        assert_eq!(s.fanout(&mut f, b"a.b"), 2);
    }

    #[test]
    fn space_events_are_wanted_by_covering_prefixes() {
        let wanted = |prefix: &[u8]| {
            let mut s = Subscriptions::default();
            s.apply(&sub(prefix));
            s.space_wanted()
        };
        assert!(!Subscriptions::default().space_wanted());
        assert!(wanted(b""), "everything");
        assert!(wanted(b"$"));
        assert!(wanted(b"$space."));
        assert!(wanted(b"$space.out"));
        assert!(!wanted(b"$sys."));
        assert!(!wanted(b"space."));
        assert!(!wanted(b"$spacex"));
        let mut s = Subscriptions::default();
        s.apply(&sub(b"$space."));
        s.apply(&unsub(b"$space."));
        assert!(!s.space_wanted(), "no longer once unsubscribed");
    }
}
