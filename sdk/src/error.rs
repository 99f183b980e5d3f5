//! The SDK's error type: one enum callers can match on.

use agora_wire::ErrorCode;

/// The tuple space's error codes: the one [`ErrorCode`] of both protocols, by the name the
/// SDK has always given them in [`Error::Space`].
pub type SpaceErrorCode = ErrorCode;

/// Everything an SDK call or a subscription item can fail with.
///
/// New variants may come: a `match` needs a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No broker answered at the endpoint in time.
    #[error("no broker answered at {endpoint} within {timeout:?}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// How long the client waited.
        timeout: std::time::Duration,
    },
    /// The endpoint is not one a client can connect to: not a ZeroMQ address, or what
    /// answers there is not an Agora broker's request endpoint.
    #[error("`{endpoint}` {problem}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it, for people.
        problem: String,
    },
    /// A request got no reply in time (the broker may be down or restarting). The request
    /// was not withdrawn: it may still reach the broker and take effect (after a restart,
    /// say), so retrying a timed-out `publish_acked` can publish the event twice. Confirmed
    /// publishes ([`Client::publish_confirmed`](crate::Client::publish_confirmed)) are safe to
    /// retry: the broker drops the duplicate.
    #[error("{what} timed out after {timeout:?}")]
    Timeout {
        /// The operation that timed out.
        what: &'static str,
        /// The deadline that passed.
        timeout: std::time::Duration,
    },
    /// The broker refused the request.
    #[error("broker error ({code:?}): {message}")]
    Broker {
        /// The error code from the reply.
        code: ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// The topic is not a valid topic (the message says what is wrong).
    #[error(transparent)]
    Topic(#[from] agora_wire::topic::TopicError),
    /// The filter is not a valid filter (the message says what is wrong).
    #[error(transparent)]
    Filter(#[from] agora_wire::topic::FilterError),
    /// The payload is larger than the broker accepts.
    #[error("payload is {size} bytes, the broker accepts at most {max}")]
    PayloadTooLarge {
        /// Encoded payload size.
        size: usize,
        /// The broker's limit (from HELLO).
        max: usize,
    },
    /// The event or tuple could not be encoded as CBOR.
    #[error("cannot encode as CBOR: {0}")]
    Encode(String),
    /// An event did not decode as the subscription's type. The stream goes on.
    #[error("event on `{topic}` at offset {offset} does not decode: {message}")]
    Decode {
        /// The event's topic.
        topic: String,
        /// The event's offset in the broker's log.
        offset: u64,
        /// What the decoder said.
        message: String,
    },
    /// The subscriber missed events on a topic (its sequence numbers jumped).
    #[error(
        "missed {missed} event(s) on `{topic}` (sequence {expected} expected, {got} received)"
    )]
    Gap {
        /// The topic with the gap.
        topic: String,
        /// How many events were missed.
        missed: u64,
        /// The sequence number that should have come next.
        expected: u64,
        /// The sequence number that came (for a gap found by a sequence beacon, which says
        /// where the topic is: one past its latest event).
        got: u64,
    },
    /// A durable subscription resumed after retention had removed events it had not
    /// acknowledged: the stream starts with this item, then goes on from the oldest event
    /// left. Never silent; nothing can bring those events back.
    #[error("missed {missed} event(s): retention removed them from the broker's log before this durable subscription resumed")]
    Expired {
        /// How many offsets between the subscription's cursor and the log's start are gone.
        missed: u64,
    },
    /// A reply or event broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(agora_wire::bus::ProtocolError),
    /// The tuple space refused a request (its error reply), or its reply broke the protocol
    /// (`code` [`SpaceErrorCode::Malformed`]).
    #[error("tuple space error ({code:?}): {message}")]
    Space {
        /// The error code (docs/PROTOCOL.md lists them).
        code: SpaceErrorCode,
        /// What went wrong, for people.
        message: String,
    },
    /// The broker does not serve a tuple space (its HELLO advertised none).
    #[error("the broker at {endpoint} serves no tuple space")]
    NoSpace {
        /// The broker's request endpoint.
        endpoint: String,
    },
    /// A tuple did not decode as the requested type. A taken tuple was put back in the space.
    #[error("tuple {tuple} does not decode as the requested type: {message}")]
    TupleType {
        /// The tuple as it came.
        tuple: agora_tuplespace::Tuple,
        /// What the decoder said.
        message: String,
    },
    /// The broker serves no replay service (its HELLO advertised none), so nothing can be
    /// replayed, no durable subscription opened and no gap healed.
    #[error("the broker at {endpoint} serves no replay (an older broker?)")]
    NoReplay {
        /// The broker's request endpoint.
        endpoint: String,
    },
    /// A durable subscription's name must be 1..=128 bytes of `[A-Za-z0-9_.-]` (checked
    /// before anything is sent).
    #[error("invalid durable subscription name `{0}`: use 1 to 128 of A-Z a-z 0-9 _ . -")]
    DurableName(String),
    /// A queue group name must be 1..=64 bytes of `[A-Za-z0-9_.-]`.
    #[error("invalid queue group name `{0}`: use 1 to 64 of A-Z a-z 0-9 _ . -")]
    QueueGroup(String),
    /// `ack` was called on a subscription that is not durable.
    #[error("only durable subscriptions can acknowledge events")]
    NotDurable,
    /// The client's I/O thread is gone (the client was closed or failed).
    #[error("client is closed")]
    Closed,
    /// ZeroMQ failed.
    #[error("zeromq: {0}")]
    Zmq(zmq::Error),
    /// An operating-system error.
    #[error("i/o: {0}")]
    Io(std::io::Error),
}

// Manual `From`s: these variants already print their cause, so they do not also expose it
// as `source()` (which would make `{:#}` chains say it twice).
impl From<agora_wire::bus::ProtocolError> for Error {
    fn from(e: agora_wire::bus::ProtocolError) -> Error {
        Error::Protocol(e)
    }
}

impl From<zmq::Error> for Error {
    fn from(e: zmq::Error) -> Error {
        Error::Zmq(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

impl Error {
    /// Build an [`Error::Broker`] from an error reply's frames.
    pub(crate) fn from_reply(frames: &[&[u8]]) -> Error {
        let (code, message) = agora_wire::bus::decode_error(frames);
        Error::Broker { code, message }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a CBOR encoding error says, for people.
pub(crate) fn cbor_encode_message<E: std::fmt::Debug>(e: &ciborium::ser::Error<E>) -> String {
    match e {
        ciborium::ser::Error::Value(message) => message.clone(),
        ciborium::ser::Error::Io(e) => format!("{e:?}"),
    }
}
