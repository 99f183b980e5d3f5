//! Every operation code of both protocols (header byte 1): the op tables of docs/PROTOCOL.md,
//! "Requests and replies", "Replay and durable subscriptions" and "Tuple space" /
//! "Operations". The bus owns `0x01..=0x1F`, the space `0x20..=0x3F`; replies (`OK`,
//! `ERROR`) are shared, and `0x82..` are the bus's broker-to-client messages.
//!
//! Each endpoint serves only its own part: a space op sent to the bus (or a bus op sent to
//! the space) is answered `UNKNOWN_OP`, as an op no one defines is.

/// Request and reply operation codes of the bus and the tuple space (header byte 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    // --- The bus: the request endpoint -------------------------------------------------
    /// Publish an event: a single frame `header ‖ topic ‖ 0x00 ‖ payload`.
    /// Flags: [`FLAG_ACK`](crate::bus::FLAG_ACK), [`FLAG_CONFIRM`](crate::bus::FLAG_CONFIRM),
    /// [`FLAG_PRODUCER`](crate::bus::FLAG_PRODUCER), [`FLAG_ROOM`](crate::bus::FLAG_ROOM).
    Publish = 0x01,
    /// Ask for the broker's endpoints and limits; the reply body is a CBOR map
    /// ([`Hello`](crate::bus::Hello)).
    Hello = 0x02,
    /// No-op round trip; the reply is an empty `Ok`. Used by clients to flush.
    Ping = 0x03,
    /// Ask for the current statistics snapshot; the reply body is a CBOR map.
    Stats = 0x04,
    /// Subscription barrier: frame `token` (1..=64 bytes of `[A-Za-z0-9_-]`). The broker
    /// publishes an empty event on `$sync.<token>` and replies `Ok`. A client that has
    /// subscribed to `$sync.<token>` and receives that event knows every subscription it made
    /// before on the same SUB socket is in effect at the broker.
    Sync = 0x05,
    /// Join a queue group: frame 1 the group name (1..=64 bytes of `[A-Za-z0-9_.-]`), frame 2
    /// a filter. `Ok` once joined; from then on each event matching the filter goes to ONE
    /// member of the group (round robin over members that can take it), as an
    /// [`Op::Deliver`] message carrying this request's id. Members must use DEALER sockets.
    QueueJoin = 0x06,
    /// Leave a queue group: frame 1 `[join request id u64 LE]`. `Ok`.
    QueueLeave = 0x07,

    // --- The bus: the replay endpoint --------------------------------------------------
    /// Replay from the log (sent to the **replay** endpoint, see
    /// [`Hello::replay`](crate::bus::Hello::replay)): frame 1 is a CBOR
    /// [`ReplayRequest`](crate::bus::ReplayRequest). The reply is `Ok` with a CBOR
    /// [`ReplayStart`](crate::bus::ReplayStart), then [`Op::ReplayBatch`] messages (never
    /// more than the granted credit unacknowledged), then one [`Op::ReplayEnd`]; all carry
    /// the REPLAY's request id.
    Replay = 0x10,
    /// Broker → client: one batch of a replay. Frame 1: `[scanned up to u64 LE]` (the
    /// offset the replay will read next); frame 2: the events, each `[u32 LE length][event
    /// frame]` with the same event frame as live delivery. Consumes one credit.
    ReplayBatch = 0x11,
    /// Broker → client: the replay reached its end. Frame 1: `[end offset u64 LE][events
    /// sent u64 LE]`: every matching event below `end` was sent. Needs no credit.
    ReplayEnd = 0x12,
    /// Client → broker: grant `n` more batches to the replay named by the request id.
    /// Frame 1: `[n u32 LE]`. No reply.
    Credit = 0x13,
    /// Client → broker: stop the replay named by the request id. No reply.
    ReplayClose = 0x14,
    /// Client → broker: move a durable subscription's cursor past an offset. Frame 1: the
    /// name (UTF-8), frame 2: `[offset u64 LE]` (every event at or below it is done). `Ok`
    /// once the cursor is on disk.
    DurableAck = 0x15,
    /// Client → broker: delete a durable subscription's cursor. Frame 1: the name. `Ok`.
    DurableDelete = 0x16,

    // --- The tuple space ---------------------------------------------------------------
    /// Write a tuple: frames `tuple`, optional `lease ms` (u64 LE).
    Out = 0x20,
    /// Take (Linda `in`): frames `template`, optional `timeout ms` (u64 LE).
    Take = 0x21,
    /// Read (Linda `rd`): frames `template`, optional `timeout ms`.
    Read = 0x22,
    /// Take up to `max` at once, never waits: frames `template`, `max` (u64 LE).
    TakeAll = 0x23,
    /// Read up to `max` at once: frames `template`, `max`.
    ReadAll = 0x24,
    /// Count matches: frame `template`.
    Count = 0x25,
    /// List tuples: optional frame `template`.
    Dump = 0x26,
    /// Confirm a reservation (the tuples are gone): frame `reservation id`.
    Confirm = 0x27,
    /// Release a reservation (the tuples go back): frame `reservation id`.
    Release = 0x28,
    /// Cancel this client's blocked take/read: frame `request id` of that request.
    Cancel = 0x29,
    /// The space's PING: heartbeat and round trip; keeps this client's blocked requests
    /// alive. (The bus's PING is [`Op::Ping`].)
    SpacePing = 0x2A,

    // --- Replies, both protocols -------------------------------------------------------
    /// Success reply.
    Ok = 0x80,
    /// Error reply: frames `code` (u16 LE) and `message` (UTF-8).
    Error = 0x81,

    // --- The bus: broker → client ------------------------------------------------------
    /// Broker → queue-group member: one event. Frame 1: the event frame (as on the events
    /// socket). The header's request id is the member's QUEUE_JOIN request id.
    Deliver = 0x82,
    /// Broker → client: acks for several publishes that asked for them with
    /// [`FLAG_BATCH_ACKS`](crate::bus::FLAG_BATCH_ACKS), one message per client per release
    /// (a group commit can confirm thousands at once). Header request id 0; frame 1: `n` ×
    /// 24 bytes, each `[request id u64 LE][offset u64 LE][seq u64 LE]`.
    Acks = 0x83,
}

impl Op {
    /// The op for a header byte, if either protocol defines it.
    pub fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            0x01 => Op::Publish,
            0x02 => Op::Hello,
            0x03 => Op::Ping,
            0x04 => Op::Stats,
            0x05 => Op::Sync,
            0x06 => Op::QueueJoin,
            0x07 => Op::QueueLeave,
            0x10 => Op::Replay,
            0x11 => Op::ReplayBatch,
            0x12 => Op::ReplayEnd,
            0x13 => Op::Credit,
            0x14 => Op::ReplayClose,
            0x15 => Op::DurableAck,
            0x16 => Op::DurableDelete,
            0x20 => Op::Out,
            0x21 => Op::Take,
            0x22 => Op::Read,
            0x23 => Op::TakeAll,
            0x24 => Op::ReadAll,
            0x25 => Op::Count,
            0x26 => Op::Dump,
            0x27 => Op::Confirm,
            0x28 => Op::Release,
            0x29 => Op::Cancel,
            0x2A => Op::SpacePing,
            0x80 => Op::Ok,
            0x81 => Op::Error,
            0x82 => Op::Deliver,
            0x83 => Op::Acks,
            _ => return None,
        })
    }

    /// `true` for the tuple space's requests (`0x20..=0x3F`).
    pub fn is_space(self) -> bool {
        (0x20..=0x3F).contains(&(self as u8))
    }

    /// `true` for the replies both protocols use (`OK`, `ERROR`).
    pub fn is_reply(self) -> bool {
        matches!(self, Op::Ok | Op::Error)
    }
}

impl From<Op> for u8 {
    fn from(op: Op) -> u8 {
        op as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_through_its_byte() {
        let known: Vec<Op> = (0..=255u8).filter_map(Op::from_u8).collect();
        assert_eq!(known.len(), 29);
        for op in known {
            assert_eq!(Op::from_u8(op as u8), Some(op));
        }
        assert_eq!(Op::from_u8(0x2B), None);
        assert!(Op::Out.is_space() && Op::SpacePing.is_space() && !Op::Ping.is_space());
        assert!(Op::Ok.is_reply() && !Op::Acks.is_reply());
    }
}
