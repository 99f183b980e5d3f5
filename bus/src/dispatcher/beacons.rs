//! Beacons: at each stats tick, every topic whose sequence moved since its last beacon gets a
//! beacon carrying its latest sequence, so a subscriber that lost the last events of a burst
//! learns of the gap (and heals it from the log) without waiting for the next event.
//!
//! A beacon sent while the events socket is lossy may itself be lost, so it only counts as
//! delivered when sent losslessly. Even a lossless send does not reach everyone once the
//! socket has been lossy: libzmq takes a subscriber's pipe that overflowed during a lossy
//! spell out of the fan-out until its reader drains it, and sends skip that pipe without an
//! error even with `XPUB_NODROP` back on. A subscriber that was not reading would never learn
//! of the events it lost at the end of a burst. So, once the socket has been lossy, each
//! topic's latest beacon is repeated after 1, 2, 4, ... up to [`BEACON_REPEAT_MAX_TICKS`]
//! stats ticks, for as long as the broker runs (one small message per topic and interval).
//!
//! A [`BeaconSchedule`] is one topic's part of this; the dispatcher sends the beacons.

/// After the events socket was lossy, a topic's latest beacon is repeated at doubling
/// intervals of stats ticks, up to this many.
const BEACON_REPEAT_MAX_TICKS: u32 = 16;

/// Why a topic's beacon is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Its sequence moved since the last delivered beacon.
    Moved,
    /// A repeat of the latest beacon.
    Repeat,
}

/// One topic's beacon state.
pub(super) struct BeaconSchedule {
    /// The sequence the last delivered beacon carried.
    beaconed_seq: u64,
    /// Stats ticks between repeats of the latest beacon (0: not repeated), and ticks left
    /// until the next one.
    every: u32,
    wait: u32,
}

impl BeaconSchedule {
    /// A topic whose subscribers know of sequence `seq` (0 for a new topic; a recovered
    /// topic's last sequence, whose events were all sent before the restart).
    pub(super) fn new(seq: u64) -> BeaconSchedule {
        BeaconSchedule {
            beaconed_seq: seq,
            every: 0,
            wait: 0,
        }
    }

    /// At a stats tick: whether a beacon carrying the topic's sequence `seq` is to be sent.
    pub(super) fn due(&mut self, seq: u64) -> Option<Due> {
        if seq != self.beaconed_seq {
            return Some(Due::Moved);
        }
        if self.every == 0 {
            return None;
        }
        self.wait = self.wait.saturating_sub(1);
        if self.wait > 0 {
            return None;
        }
        self.every = (self.every * 2).min(BEACON_REPEAT_MAX_TICKS);
        self.wait = self.every;
        Some(Due::Repeat)
    }

    /// The beacon for `seq`, sent because `due`, went out losslessly. `repeat`: the events
    /// socket has been lossy at some time, so a new beacon is repeated.
    pub(super) fn delivered(&mut self, seq: u64, due: Due, repeat: bool) {
        self.beaconed_seq = seq;
        if due == Due::Moved && repeat {
            self.every = 1;
            self.wait = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `ticks` stats ticks on a topic at sequence `seq`, every beacon delivered; returns
    /// the ticks (from 1) at which one was sent.
    fn beacon_ticks(b: &mut BeaconSchedule, seq: u64, ticks: u32, repeat: bool) -> Vec<u32> {
        let mut sent = Vec::new();
        for tick in 1..=ticks {
            if let Some(due) = b.due(seq) {
                b.delivered(seq, due, repeat);
                sent.push(tick);
            }
        }
        sent
    }

    #[test]
    fn a_moved_sequence_is_beaconed_once_while_never_lossy() {
        let mut b = BeaconSchedule::new(5);
        assert_eq!(b.due(5), None);
        assert_eq!(beacon_ticks(&mut b, 7, 10, false), [1]);
    }

    #[test]
    fn after_a_lossy_spell_repeats_double_up_to_the_cap() {
        let mut b = BeaconSchedule::new(0);
        let sent = beacon_ticks(&mut b, 3, 80, true);
        // The beacon, then repeats 1, 2, 4, 8, 16, 16, ... ticks apart.
        assert_eq!(sent, [1, 2, 4, 8, 16, 32, 48, 64, 80]);
        // New events start the schedule over.
        assert_eq!(beacon_ticks(&mut b, 4, 4, true), [1, 2, 4]);
    }

    #[test]
    fn an_undelivered_beacon_is_due_again() {
        let mut b = BeaconSchedule::new(0);
        // Sent while lossy: not delivered, so still due at the next tick.
        assert_eq!(b.due(3), Some(Due::Moved));
        assert_eq!(b.due(3), Some(Due::Moved));
        b.delivered(3, Due::Moved, true);
        assert_eq!(b.due(3), Some(Due::Repeat));
        // A repeat that was not delivered still moves the schedule on.
        assert_eq!(b.due(3), None);
        assert_eq!(b.due(3), Some(Due::Repeat));
    }
}
