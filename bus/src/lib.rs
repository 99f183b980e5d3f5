//! # agora-bus
//!
//! Agora's event bus: topics and filters, the wire protocol, the durable event log and the
//! broker that serves them (binary `agora-broker`).
//!
//! # Layout
//!
//! * [`topic`]: validated [`Topic`](topic::Topic)s and [`Filter`](topic::Filter)s (literal,
//!   `*`, `>`, `re:` regex) and their matching rules.
//! * [`protocol`]: every frame on the wire, built and parsed in one place
//!   (docs/PROTOCOL.md says the same in prose).
//! * [`broker`]: the dispatcher thread (ROUTER ingress, XPUB egress), the log writer and
//!   replay threads, its config and handle.
//! * [`error_line`]: an error and its causes in one line, as the binaries print them.
//!
//! # Running a broker in-process
//!
//! ```no_run
//! use agora_bus::broker::{Broker, BrokerConfig};
//!
//! let dir = std::env::temp_dir().join("agora-doc-broker");
//! let broker = Broker::start(BrokerConfig::ephemeral(&dir)).unwrap();
//! println!("serving on {}", broker.endpoint());
//! broker.shutdown().unwrap();
//! ```

pub mod broker;
pub mod log;
pub mod protocol;
pub mod topic;

/// An error and its causes in one line, `outer: cause: root`, each said once: many errors
/// quote their cause in their own message (`cannot bind ... : Address already in use`) and
/// also return it as `source()`, and printing the chain as it is (`{:#}`) said it twice.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !line.contains(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_line_says_each_cause_once() {
        let bind = crate::broker::BrokerError::Bind {
            what: "request",
            endpoint: "tcp://127.0.0.1:7400".into(),
            source: zmq::Error::EADDRINUSE,
        };
        let e = anyhow::Error::new(bind).context("cannot start the broker");
        assert_eq!(
            crate::error_line(e.as_ref()),
            "cannot start the broker: cannot bind request socket to tcp://127.0.0.1:7400: \
             Address already in use"
        );
        // A cause the message does not quote is kept.
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(io).context("cannot write");
        assert_eq!(crate::error_line(e.as_ref()), "cannot write: disk on fire");
    }
}
