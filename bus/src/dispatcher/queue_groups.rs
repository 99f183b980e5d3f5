//! Queue groups: clients join a group by name and filter; each event the filter matches goes
//! to one member of the group, round robin over the members that can take it. Events no
//! member can take yet (every queue full) wait in the group's backlog, oldest first.
//!
//! The groups decide who is offered what; the offer itself is the caller's: a function that
//! tries to send one event to one member and says how it went ([`Offered`]).

use std::collections::VecDeque;

use agora_wire::topic::Filter;

/// Events a queue group holds while all its members are full; beyond this the oldest go.
const GROUP_BACKLOG: usize = 100_000;

/// How an offer of an event to a member went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Offered {
    /// The member has it.
    Taken,
    /// The member's queue is full: try the next one.
    Full,
    /// The member is gone: it leaves the group.
    Gone,
}

/// A member: its identity on the request socket and the request id of its join, which
/// addresses its deliveries (and names it in a leave).
type Member = (Vec<u8>, u64);

/// A queue group: events matching `filter` go to one member each, round robin.
struct QueueGroup {
    name: String,
    filter: Filter,
    members: Vec<Member>,
    next: usize,
    /// Events no member could take yet (all queues full), oldest first.
    backlog: VecDeque<Vec<u8>>,
}

/// Every queue group.
#[derive(Default)]
pub(super) struct QueueGroups {
    groups: Vec<QueueGroup>,
}

impl QueueGroups {
    /// Whether there are no groups (then events need no look here).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Add the client `identity` (joining with request `join_id`) to the group `name` with
    /// `filter`, making the group if there is none with that name and filter.
    pub(super) fn join(&mut self, name: String, filter: Filter, identity: &[u8], join_id: u64) {
        let member = (identity.to_vec(), join_id);
        match self
            .groups
            .iter_mut()
            .find(|g| g.name == name && g.filter.as_str() == filter.as_str())
        {
            Some(g) => g.members.push(member),
            None => self.groups.push(QueueGroup {
                name,
                filter,
                members: vec![member],
                next: 0,
                backlog: VecDeque::new(),
            }),
        }
    }

    /// Remove the member that joined with request `join_id` from client `identity`; a group
    /// left with no members goes, with its backlog.
    pub(super) fn leave(&mut self, identity: &[u8], join_id: u64) {
        for g in &mut self.groups {
            g.members
                .retain(|(who, join)| !(who == identity && *join == join_id));
        }
        self.groups.retain(|g| !g.members.is_empty());
    }

    /// Give an event to one member of each group whose filter matches `topic`; `encode`
    /// makes the event frame (once, if some group matches). Returns how many events were
    /// dropped from full backlogs.
    pub(super) fn deliver(
        &mut self,
        topic: &str,
        encode: impl FnOnce() -> Vec<u8>,
        mut offer: impl FnMut(&[u8], u64, &[u8]) -> Offered,
    ) -> u64 {
        let mut encode = Some(encode);
        let mut encoded: Option<Vec<u8>> = None;
        let mut dropped = 0;
        for group in &mut self.groups {
            if !group.filter.matches(topic) {
                continue;
            }
            let frame = encoded
                .get_or_insert_with(|| (encode.take().expect("encoded once"))())
                .clone();
            if group.backlog.is_empty() {
                if let Some(rejected) = group.offer(frame, &mut offer) {
                    group.backlog.push_back(rejected);
                }
            } else {
                group.backlog.push_back(frame);
            }
            if group.backlog.len() > GROUP_BACKLOG {
                group.backlog.pop_front();
                dropped += 1;
            }
        }
        self.groups
            .retain(|g| !g.members.is_empty() || !g.backlog.is_empty());
        dropped
    }

    /// Offer the events the groups hold back again, oldest first; returns whether any remain.
    pub(super) fn flush_backlogs(
        &mut self,
        mut offer: impl FnMut(&[u8], u64, &[u8]) -> Offered,
    ) -> bool {
        let mut left = false;
        for group in &mut self.groups {
            while let Some(frame) = group.backlog.pop_front() {
                if group.members.is_empty() {
                    group.backlog.clear();
                    break;
                }
                if let Some(rejected) = group.offer(frame, &mut offer) {
                    group.backlog.push_front(rejected);
                    break;
                }
            }
            left |= !group.backlog.is_empty();
        }
        self.groups.retain(|g| !g.members.is_empty());
        left
    }
}

impl QueueGroup {
    /// Hand an event frame to the next member that can take it. Members that are gone are
    /// removed; full ones are skipped. Returns the frame if nobody could take it.
    fn offer(
        &mut self,
        frame: Vec<u8>,
        offer: &mut impl FnMut(&[u8], u64, &[u8]) -> Offered,
    ) -> Option<Vec<u8>> {
        let mut tries = self.members.len();
        while tries > 0 && !self.members.is_empty() {
            tries -= 1;
            let i = self.next % self.members.len();
            let (identity, join_id) = &self.members[i];
            match offer(identity, *join_id, &frame) {
                Offered::Taken => {
                    self.next = i + 1;
                    return None;
                }
                Offered::Gone => {
                    tracing::info!(group = %self.name, "queue group member gone");
                    self.members.remove(i);
                }
                Offered::Full => self.next = i + 1,
            }
        }
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(f: &str) -> Filter {
        Filter::new(f).unwrap()
    }

    /// Members by name: who takes, who is full, who is gone; records who got what.
    struct Fake {
        full: Vec<&'static [u8]>,
        gone: Vec<&'static [u8]>,
        got: Vec<(Vec<u8>, u64, Vec<u8>)>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                full: Vec::new(),
                gone: Vec::new(),
                got: Vec::new(),
            }
        }

        fn offer(&mut self, who: &[u8], join: u64, frame: &[u8]) -> Offered {
            if self.gone.contains(&who) {
                Offered::Gone
            } else if self.full.contains(&who) {
                Offered::Full
            } else {
                self.got.push((who.to_vec(), join, frame.to_vec()));
                Offered::Taken
            }
        }

        fn receivers(&self) -> Vec<&[u8]> {
            self.got.iter().map(|(who, _, _)| &who[..]).collect()
        }
    }

    fn deliver(groups: &mut QueueGroups, fake: &mut Fake, topic: &str) -> u64 {
        groups.deliver(
            topic,
            || topic.as_bytes().to_vec(),
            |w, j, f| fake.offer(w, j, f),
        )
    }

    #[test]
    fn round_robin_over_members() {
        let mut g = QueueGroups::default();
        g.join("workers".into(), filter("jobs.>"), b"a", 1);
        g.join("workers".into(), filter("jobs.>"), b"b", 2);
        g.join("workers".into(), filter("jobs.>"), b"c", 3);
        let mut fake = Fake::new();
        for _ in 0..4 {
            assert_eq!(deliver(&mut g, &mut fake, "jobs.x"), 0);
        }
        assert_eq!(fake.receivers(), [b"a", b"b", b"c", b"a"]);
        assert_eq!(fake.got[1].1, 2, "delivered under the member's join id");
        assert_eq!(fake.got[1].2, b"jobs.x");
    }

    #[test]
    fn members_that_cannot_take_are_skipped() {
        let mut g = QueueGroups::default();
        for (who, join) in [(&b"a"[..], 1), (b"b", 2), (b"c", 3)] {
            g.join("w".into(), filter("jobs.>"), who, join);
        }
        let mut fake = Fake::new();
        fake.full.push(b"b");
        for _ in 0..3 {
            deliver(&mut g, &mut fake, "jobs.x");
        }
        assert_eq!(fake.receivers(), [b"a", b"c", b"a"]);
        // A member that is gone leaves the group.
        fake.got.clear();
        fake.full.clear();
        fake.gone.push(b"c");
        for _ in 0..3 {
            deliver(&mut g, &mut fake, "jobs.x");
        }
        assert_eq!(fake.receivers(), [b"b", b"a", b"b"]);
        assert_eq!(g.groups[0].members.len(), 2);
    }

    #[test]
    fn only_matching_groups_get_the_event_once_each() {
        let mut g = QueueGroups::default();
        g.join("w".into(), filter("jobs.*"), b"a", 1);
        g.join("w".into(), filter("other.>"), b"b", 2);
        g.join("v".into(), filter("jobs.>"), b"c", 3);
        let mut fake = Fake::new();
        let mut encoded = 0;
        g.deliver(
            "jobs.x",
            || {
                encoded += 1;
                b"e".to_vec()
            },
            |w, j, f| fake.offer(w, j, f),
        );
        assert_eq!(fake.receivers(), [b"a", b"c"]);
        assert_eq!(encoded, 1);
        let mut encoded = 0;
        g.deliver(
            "nobody",
            || {
                encoded += 1;
                Vec::new()
            },
            |w, j, f| fake.offer(w, j, f),
        );
        assert_eq!(encoded, 0, "no group matched: the event is not encoded");
    }

    #[test]
    fn a_full_group_keeps_a_backlog_until_a_member_takes() {
        let mut g = QueueGroups::default();
        g.join("w".into(), filter(">"), b"a", 1);
        let mut fake = Fake::new();
        fake.full.push(b"a");
        deliver(&mut g, &mut fake, "one");
        deliver(&mut g, &mut fake, "two");
        assert!(fake.got.is_empty());
        assert!(g.flush_backlogs(|w, j, f| fake.offer(w, j, f)));
        fake.full.clear();
        assert!(!g.flush_backlogs(|w, j, f| fake.offer(w, j, f)));
        let frames: Vec<&[u8]> = fake.got.iter().map(|(_, _, f)| &f[..]).collect();
        assert_eq!(frames, [&b"one"[..], b"two"]);
    }

    #[test]
    fn leave_removes_the_member_and_an_empty_group() {
        let mut g = QueueGroups::default();
        g.join("w".into(), filter(">"), b"a", 1);
        g.join("w".into(), filter(">"), b"a", 2);
        g.leave(b"a", 1);
        let mut fake = Fake::new();
        deliver(&mut g, &mut fake, "t");
        assert_eq!(fake.got[0].1, 2);
        g.leave(b"b", 2);
        assert!(!g.is_empty(), "another client's leave changes nothing");
        g.leave(b"a", 2);
        assert!(g.is_empty());
    }
}
