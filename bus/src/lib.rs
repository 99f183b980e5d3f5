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
