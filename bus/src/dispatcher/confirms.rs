//! Confirms: the confirmed publishes waiting for the fsync that covers their offset, in offset
//! order. When the log's durable offset passes them they are released: each as its own OK
//! reply, or, for a client that asked for batches ([`FLAG_BATCH_ACKS`]), as entries of ACKS
//! messages of at most [`MAX_ACKS_PER_MESSAGE`] entries.
//!
//! [`FLAG_BATCH_ACKS`]: agora_wire::bus::FLAG_BATCH_ACKS

use std::collections::VecDeque;

use agora_wire::bus::{self as protocol, ACK_ENTRY_LEN};
use agora_wire::socket::ReplyAddress;

/// Confirms per ACKS message, at most.
pub(super) const MAX_ACKS_PER_MESSAGE: usize = 256;

/// A confirmed publish waiting for the fsync that covers its offset.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PendingConfirm {
    pub(super) offset: u64,
    pub(super) seq: u64,
    pub(super) address: ReplyAddress,
    pub(super) request_id: u64,
    /// The client takes this confirm inside an ACKS message ([`protocol::FLAG_BATCH_ACKS`]).
    pub(super) batched: bool,
}

/// A reply that releasing confirms asks for, in the order they are to be sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Release {
    /// An OK reply to this confirm's request, carrying its publish ack.
    Ack(PendingConfirm),
    /// An ACKS message for the client `identity`, with this body.
    Acks { identity: Vec<u8>, body: Vec<u8> },
}

/// The confirms waiting, oldest offset first.
#[derive(Default)]
pub(super) struct Confirms {
    waiting: VecDeque<PendingConfirm>,
}

impl Confirms {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Wait for the fsync covering a publish just stamped (so the highest offset yet).
    #[inline]
    pub(super) fn push(&mut self, confirm: PendingConfirm) {
        self.waiting.push_back(confirm);
    }

    /// Wait behind the original for a retry of a publish already stamped: confirms are
    /// answered in offset order.
    pub(super) fn push_retry(&mut self, confirm: PendingConfirm) {
        let pos = self.waiting.partition_point(|c| c.offset <= confirm.offset);
        self.waiting.insert(pos, confirm);
    }

    /// Release the confirms below `durable` (an exclusive offset), in offset order. A
    /// client's batched confirms go out as one ACKS message once it holds
    /// [`MAX_ACKS_PER_MESSAGE`] entries, and the rest after every single confirm.
    pub(super) fn release(&mut self, durable: u64) -> Vec<Release> {
        let mut out = Vec::new();
        // One ACKS body per client (few clients: a short list beats a map).
        let mut batches: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while let Some(c) = self.waiting.front() {
            if c.offset >= durable {
                break;
            }
            let c = self.waiting.pop_front().expect("front exists");
            if !c.batched {
                out.push(Release::Ack(c));
                continue;
            }
            let i = match batches
                .iter()
                .position(|(who, _)| *who == c.address.identity)
            {
                Some(i) => i,
                None => {
                    batches.push((c.address.identity, Vec::with_capacity(64 * ACK_ENTRY_LEN)));
                    batches.len() - 1
                }
            };
            protocol::push_ack_entry(&mut batches[i].1, c.request_id, c.offset, c.seq);
            if batches[i].1.len() >= MAX_ACKS_PER_MESSAGE * ACK_ENTRY_LEN {
                let (identity, body) = batches.swap_remove(i);
                out.push(Release::Acks { identity, body });
            }
        }
        out.extend(
            batches
                .into_iter()
                .map(|(identity, body)| Release::Acks { identity, body }),
        );
        out
    }

    /// Take every confirm still waiting (the log failed: none will be durable), oldest
    /// first.
    pub(super) fn take_all(&mut self) -> VecDeque<PendingConfirm> {
        std::mem::take(&mut self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirm(who: &[u8], offset: u64, batched: bool) -> PendingConfirm {
        PendingConfirm {
            offset,
            seq: offset + 1000,
            address: ReplyAddress {
                identity: who.to_vec(),
                delimited: false,
            },
            request_id: offset + 500,
            batched,
        }
    }

    /// (identity, [(request id, offset, seq)]) of an ACKS release.
    fn acks(r: &Release) -> (&[u8], Vec<(u64, u64, u64)>) {
        match r {
            Release::Acks { identity, body } => {
                (identity, protocol::ack_entries(body).unwrap().collect())
            }
            Release::Ack(c) => panic!("expected ACKS, got a single ack for {}", c.offset),
        }
    }

    #[test]
    fn released_in_offset_order_up_to_the_durable_offset() {
        let mut c = Confirms::default();
        for offset in 0..5 {
            c.push(confirm(b"a", offset, false));
        }
        assert!(c.release(0).is_empty());
        let out = c.release(3);
        let offsets: Vec<u64> = out
            .iter()
            .map(|r| match r {
                Release::Ack(c) => c.offset,
                Release::Acks { .. } => panic!("not batched"),
            })
            .collect();
        assert_eq!(offsets, [0, 1, 2]);
        assert!(!c.is_empty());
        assert_eq!(c.release(3), []);
        assert_eq!(c.release(10).len(), 2);
        assert!(c.is_empty());
    }

    #[test]
    fn a_retry_waits_behind_its_original() {
        let mut c = Confirms::default();
        c.push(confirm(b"a", 4, false));
        c.push(confirm(b"a", 6, false));
        c.push_retry(confirm(b"b", 4, false));
        c.push_retry(confirm(b"b", 5, false));
        let out = c.release(u64::MAX);
        let order: Vec<(&[u8], u64)> = out
            .iter()
            .map(|r| match r {
                Release::Ack(c) => (&c.address.identity[..], c.offset),
                Release::Acks { .. } => panic!("not batched"),
            })
            .collect();
        assert_eq!(
            order,
            [
                (&b"a"[..], 4),
                (&b"b"[..], 4),
                (&b"b"[..], 5),
                (&b"a"[..], 6)
            ]
        );
    }

    #[test]
    fn batched_confirms_go_in_acks_of_at_most_256_per_client() {
        let mut c = Confirms::default();
        // Client a: 300 batched confirms; b: 2, interleaved; c: one single ack between.
        let mut offset = 0;
        for i in 0..300 {
            c.push(confirm(b"a", offset, true));
            offset += 1;
            if i == 10 || i == 290 {
                c.push(confirm(b"b", offset, true));
                offset += 1;
            }
            if i == 100 {
                c.push(confirm(b"c", offset, false));
                offset += 1;
            }
        }
        let out = c.release(u64::MAX);
        assert_eq!(out.len(), 4);
        // The single ack goes out as it is reached, before any ACKS.
        assert!(
            matches!(&out[0], Release::Ack(c) if c.address.identity == b"c" && c.offset == 102)
        );
        // a's first 256 go as soon as they are collected.
        let (who, entries) = acks(&out[1]);
        assert_eq!(who, b"a");
        assert_eq!(entries.len(), MAX_ACKS_PER_MESSAGE);
        assert_eq!(entries[0], (500, 0, 1000));
        assert!(entries.windows(2).all(|w| w[0].1 < w[1].1));
        // Then the rest, per client: b's (whose batch took a's place in the list), then a's.
        let (who, entries) = acks(&out[2]);
        assert_eq!(who, b"b");
        assert_eq!(entries.iter().map(|e| e.1).collect::<Vec<_>>(), [11, 293]);
        let (who, entries) = acks(&out[3]);
        assert_eq!(who, b"a");
        assert_eq!(entries.len(), 300 - MAX_ACKS_PER_MESSAGE);
        assert!(c.is_empty());
    }

    #[test]
    fn take_all_empties_in_order() {
        let mut c = Confirms::default();
        c.push(confirm(b"a", 1, true));
        c.push(confirm(b"b", 2, false));
        let all: Vec<u64> = c.take_all().into_iter().map(|c| c.offset).collect();
        assert_eq!(all, [1, 2]);
        assert!(c.is_empty());
    }
}
