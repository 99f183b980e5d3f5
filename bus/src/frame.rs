//! [`Frame`]: one ZeroMQ message owned through `zmq_sys`, for the dispatcher's hot path.
//!
//! `zmq::Message` cannot do two things the dispatcher needs: a send that is refused
//! (`EAGAIN`) consumes it, and its bytes are rewritten only through a fresh message. A
//! [`Frame`] stays with the caller when a send is refused, so it can be retried, and a
//! received publish can be turned into its event in place and sent on (see
//! [`protocol::publish_into_event`](agora_wire::bus::publish_into_event)) without allocating
//! or copying the payload.

use std::mem::MaybeUninit;

/// An owned `zmq_msg_t`; closed on drop.
pub(crate) struct Frame {
    msg: zmq_sys::zmq_msg_t,
}

// SAFETY: a zmq_msg_t may be moved to and used from another thread as long as one thread uses
// it at a time (libzmq's own I/O threads do exactly that with every message).
unsafe impl Send for Frame {}

/// A libzmq return code as a result: -1 means the call failed, with the reason in errno.
fn check(rc: i32) -> Result<(), zmq::Error> {
    if rc == -1 {
        // SAFETY: zmq_errno has no preconditions.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    } else {
        Ok(())
    }
}

impl Frame {
    /// An empty message (what a receive overwrites).
    pub(crate) fn new() -> Frame {
        let mut msg = MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
        // SAFETY: zmq_msg_init initialises the struct it is given and cannot fail.
        unsafe {
            zmq_sys::zmq_msg_init(msg.as_mut_ptr());
            Frame {
                msg: msg.assume_init(),
            }
        }
    }

    /// A message of `len` bytes (contents unspecified until written).
    pub(crate) fn with_len(len: usize) -> Frame {
        let mut msg = MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
        // SAFETY: zmq_msg_init_size initialises the struct; it fails only when out of memory,
        // which we treat as Rust does an allocation failure.
        unsafe {
            if zmq_sys::zmq_msg_init_size(msg.as_mut_ptr(), len) != 0 {
                std::alloc::handle_alloc_error(
                    std::alloc::Layout::array::<u8>(len).expect("message length"),
                );
            }
            Frame {
                msg: msg.assume_init(),
            }
        }
    }

    /// A second reference to this message's content (libzmq counts references; nothing is
    /// copied). Neither may be changed afterwards.
    pub(crate) fn share(&mut self) -> Frame {
        let mut copy = Frame::new();
        // SAFETY: both are initialised messages; zmq_msg_copy releases `copy`'s (empty)
        // content and makes it refer to this one's. It fails only for an invalid message.
        unsafe {
            zmq_sys::zmq_msg_copy(&mut copy.msg, &mut self.msg);
        }
        copy
    }

    /// A new message holding the event frame `topic ‖ 0 ‖ meta ‖ payload`, encoded straight
    /// into it (the one copy of the payload).
    pub(crate) fn event(topic: &[u8], meta: &agora_wire::bus::Meta, payload: &[u8]) -> Frame {
        use agora_wire::bus::{encode_event_into, event_len};
        let mut frame = Frame::with_len(event_len(topic.len(), payload.len()));
        encode_event_into(frame.as_mut_slice(), topic, meta, payload);
        frame
    }

    /// Receive the next frame from `sock` into this message (its old contents are released).
    pub(crate) fn recv(&mut self, sock: &mut zmq::Socket, flags: i32) -> Result<(), zmq::Error> {
        // SAFETY: `self.msg` is an initialised message and the socket pointer is valid while
        // `sock` lives; zmq_msg_recv closes the old content before it stores the new one.
        check(unsafe { zmq_sys::zmq_msg_recv(&mut self.msg, sock.as_mut_ptr(), flags) })
    }

    /// Send this message on `sock`. On success the message is left empty; on failure
    /// (for example `EAGAIN` under `DONTWAIT`) it is untouched and can be sent again.
    pub(crate) fn send(&mut self, sock: &mut zmq::Socket, flags: i32) -> Result<(), zmq::Error> {
        // SAFETY: as in `recv`; zmq_msg_send takes the content only when it succeeds.
        check(unsafe { zmq_sys::zmq_msg_send(&mut self.msg, sock.as_mut_ptr(), flags) })
    }

    /// Whether this message's content may be shared with another message (a sender in the
    /// same process kept a copy, or it is constant data): then it must not be changed.
    pub(crate) fn is_shared(&self) -> bool {
        // SAFETY: an initialised message; zmq_msg_get only reads it, though the C API
        // declares it mutable.
        unsafe {
            zmq_sys::zmq_msg_get(
                &self.msg as *const _ as *mut zmq_sys::zmq_msg_t,
                zmq_sys::ZMQ_SHARED as i32,
            ) == 1
        }
    }

    /// Whether more frames of the same multipart message follow this one.
    pub(crate) fn more(&self) -> bool {
        // SAFETY: an initialised message; zmq_msg_more only reads it.
        unsafe { zmq_sys::zmq_msg_more(&self.msg) != 0 }
    }

    /// The message's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // zmq_msg_data only reads the message, though the C API declares it mutable.
        let ptr = &self.msg as *const _ as *mut zmq_sys::zmq_msg_t;
        // SAFETY: an initialised message: data and size describe its content, which lives as
        // long as the message is neither changed nor dropped (both need `&mut self`).
        unsafe {
            let len = zmq_sys::zmq_msg_size(&self.msg);
            if len == 0 {
                return &[];
            }
            std::slice::from_raw_parts(zmq_sys::zmq_msg_data(ptr) as *const u8, len)
        }
    }

    /// The message's bytes, writable. A received message's content belongs to it alone
    /// (libzmq may carve several messages out of one receive buffer, never overlapping).
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with exclusive access through `&mut self`.
        unsafe {
            let len = zmq_sys::zmq_msg_size(&self.msg);
            if len == 0 {
                return &mut [];
            }
            std::slice::from_raw_parts_mut(zmq_sys::zmq_msg_data(&mut self.msg) as *mut u8, len)
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY: an initialised message, closed exactly once.
        unsafe {
            zmq_sys::zmq_msg_close(&mut self.msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_send_keeps_the_message_and_a_sent_one_arrives() {
        let ctx = zmq::Context::new();
        let mut push = ctx.socket(zmq::PUSH).unwrap();
        push.bind("inproc://frame-test").unwrap();
        // Nobody connected: a non-blocking send is refused and the message stays.
        let mut frame = Frame::with_len(5);
        frame.as_mut_slice().copy_from_slice(b"hello");
        assert!(!frame.is_shared());
        assert_eq!(
            frame.send(&mut push, zmq::DONTWAIT),
            Err(zmq::Error::EAGAIN)
        );
        assert_eq!(frame.as_slice(), b"hello");

        let mut pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect("inproc://frame-test").unwrap();
        frame.send(&mut push, 0).unwrap();
        assert_eq!(frame.as_slice(), b"", "a sent message is left empty");

        let mut got = Frame::new();
        got.recv(&mut pull, 0).unwrap();
        assert_eq!(got.as_slice(), b"hello");
        assert!(!got.more());
        got.as_mut_slice()[0] = b'j';
        assert_eq!(got.as_slice(), b"jello");
        // A shared reference sees the same bytes and outlives the original being sent.
        let kept = got.share();
        got.send(&mut push, 0).unwrap();
        assert_eq!(kept.as_slice(), b"jello");
    }

    #[test]
    fn shared_content_is_reported_also_across_inproc() {
        let ctx = zmq::Context::new();
        let mut push = ctx.socket(zmq::PUSH).unwrap();
        push.bind("inproc://frame-shared").unwrap();
        let mut pull = ctx.socket(zmq::PULL).unwrap();
        pull.connect("inproc://frame-shared").unwrap();
        // Past libzmq's inline size, so the content is a counted allocation.
        let mut big = Frame::with_len(100);
        big.as_mut_slice().fill(7);
        assert!(!big.is_shared());
        let kept = big.share();
        assert!(big.is_shared() && kept.is_shared());
        big.send(&mut push, 0).unwrap();
        let mut got = Frame::new();
        got.recv(&mut pull, 0).unwrap();
        assert!(
            got.is_shared(),
            "inproc hands the shared content itself over"
        );
        assert_eq!(got.as_slice(), kept.as_slice());
    }
}
