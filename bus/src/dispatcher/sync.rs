//! The SYNC barrier: a client that subscribed to `$sync.<token>` sends SYNC with the token;
//! the dispatcher commits and flushes what it has stamped, then sends an event on that topic
//! behind every event stamped before it, and replies. A client that sees the barrier event
//! has seen everything published before its SYNC, and a replay reads all of it (the Clone
//! pattern's handover relies on this).

use agora_wire::bus::{valid_sync_token, UNLOGGED_OFFSET};
use agora_wire::bus::{ContentType, Meta, ProtocolError, KIND_EVENT, SYNC_TOPIC_PREFIX};

/// The topic of the barrier for `token`, or why the token is refused.
pub(super) fn barrier_topic(token: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    if !valid_sync_token(token) {
        return Err(ProtocolError::BadRequest(
            "sync token must be 1..=64 bytes of [A-Za-z0-9_-]".into(),
        ));
    }
    let mut topic = Vec::with_capacity(SYNC_TOPIC_PREFIX.len() + token.len());
    topic.extend_from_slice(SYNC_TOPIC_PREFIX.as_bytes());
    topic.extend_from_slice(token);
    Ok(topic)
}

/// The barrier event's meta: not logged, sent at `time_ns`, no payload.
pub(super) fn barrier_meta(time_ns: u64) -> Meta {
    Meta {
        kind: KIND_EVENT,
        offset: UNLOGGED_OFFSET,
        seq: 0,
        time_ns,
        content_type: ContentType::Raw as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_the_barrier_topic() {
        assert_eq!(barrier_topic(b"abc-_9").unwrap(), b"$sync.abc-_9");
        assert_eq!(barrier_topic(&[b'a'; 64]).unwrap().len(), 6 + 64);
    }

    #[test]
    fn bad_tokens_are_refused() {
        for token in [&b""[..], b"a.b", b"a b", &[b'a'; 65]] {
            let e = barrier_topic(token).unwrap_err();
            assert_eq!(
                e.to_string(),
                ProtocolError::BadRequest(
                    "sync token must be 1..=64 bytes of [A-Za-z0-9_-]".into()
                )
                .to_string()
            );
        }
    }

    #[test]
    fn the_barrier_is_an_unlogged_raw_event() {
        let meta = barrier_meta(42);
        assert_eq!(
            (meta.kind, meta.offset, meta.seq),
            (KIND_EVENT, UNLOGGED_OFFSET, 0)
        );
        assert_eq!(
            (meta.time_ns, meta.content_type),
            (42, ContentType::Raw as u8)
        );
    }
}
