//! Errors of the store, the in-process [`Space`](crate::space::Space), the wire protocol and
//! the ZeroMQ service. One enum callers can match; wire-level problems keep their
//! [`ErrorCode`] (the wire's, `agora_wire::ErrorCode`) so a server can send them back as error
//! replies.

use agora_wire::space::DecodeError;
pub use agora_wire::ErrorCode;

use crate::store::ReservationId;

/// Everything that can go wrong in this crate's store, space, protocol and server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `confirm`/`release` named a reservation that does not exist (never made, already
    /// confirmed or released, or its lease expired and the tuples went back).
    #[error("unknown reservation {0}")]
    UnknownReservation(ReservationId),
    /// A message did not follow the wire protocol (bad header, missing frame, bad CBOR, ...).
    #[error("protocol error ({code:?}): {message}")]
    Protocol {
        /// The code an error reply carries for this problem.
        code: ErrorCode,
        /// What was wrong, for people.
        message: String,
    },
    /// The peer answered with an error reply.
    #[error("remote error ({code:?}): {message}")]
    Remote {
        /// The code from the error reply.
        code: ErrorCode,
        /// The message from the error reply.
        message: String,
    },
    /// A ZeroMQ call failed.
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    /// A file or socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The persisted state (WAL or snapshot) is unreadable beyond repair.
    #[error("storage: {0}")]
    Storage(String),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server thread is gone (it stopped or failed).
    #[error("the space server has stopped")]
    Stopped,
}

impl Error {
    /// A protocol error with this code and message.
    pub fn protocol(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Protocol {
            code,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for Error {
    /// A frame that breaks the space protocol: its code and message, for the error reply.
    fn from(e: DecodeError) -> Error {
        Error::Protocol {
            code: e.code,
            message: e.message,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
