//! # agora
//!
//! The Agora client SDK (async, tokio): publish typed events, subscribe with topic filters,
//! and coordinate through the tuple space. Frames are crate `agora-wire`'s, the tuple model
//! crate `agora-tuplespace`'s; the SDK carries no server or CLI dependencies. The `agora`
//! terminal tool (crate `agora-cli`) is built on it.
//!
//! # Layout
//!
//! * [`Client`] (client.rs): the cheap `Clone` handle: [`Client::connect`],
//!   [`Client::publish`], [`Client::subscribe`], [`Client::stats`].
//! * [`Subscription`] / [`RawSubscription`] (subscription.rs): streams of [`Event`]s with gap
//!   detection and healing; replayed ([`Client::subscribe_from`], [`ReplayFrom`]) and
//!   durable ([`Client::durable`], [`Subscription::ack`]) subscriptions.
//! * [`Space`] (space.rs): the tuple space client from [`Client::space`]: `out`, `take`,
//!   `read`, their non-blocking and timed forms, bulk ops and typed variants; with the model
//!   re-exported ([`tuple!`], [`template!`], [`Tuple`], [`Template`], ...).
//! * space_io.rs: the thread that owns the space client's socket (reservations, cancels,
//!   heartbeats).
//! * replay_io.rs: the thread that owns the socket to the broker's replay service (replays
//!   with credit-based flow control, durable acks), started on first use.
//! * io.rs: the thread that owns the client's bus sockets (request DEALER, events SUB);
//!   handles talk to it over a channel. The three threads share the client's one ZeroMQ
//!   context and the pieces of `agora_wire::socket` (doorbell, poll, pending replies).
//! * [`Error`] (error.rs): one enum for every failure, to match on.
//!
//! # Example
//!
//! This example runs as it is: it starts a broker in-process (what `agora-broker` runs) on an
//! ephemeral port; an app would connect to `tcp://127.0.0.1:7400` instead.
//!
//! ```
//! use futures_util::StreamExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Order { id: u64, item: String }
//!
//! // A broker in this process (crate `agora-broker`), with its data in a temporary directory.
//! let dir = tempfile::tempdir().unwrap();
//! let config = agora_broker::BrokerConfig::ephemeral(dir.path());
//! let broker = agora_broker::Broker::start(config).unwrap();
//! let endpoint = broker.endpoint().to_string();
//!
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let client = agora::Client::connect(&endpoint).await?;
//!
//!     // Events: subscribe with a filter, publish typed values.
//!     let mut orders = client.subscribe::<Order>("shop.orders.>").await?;
//!     client.publish("shop.orders.eu", &Order { id: 1, item: "tea".into() }).await?;
//!     let event = orders.next().await.expect("an event")?;
//!     assert_eq!(event.topic, "shop.orders.eu");
//!     assert_eq!(event.payload, Order { id: 1, item: "tea".into() });
//!
//!     // The tuple space: out, then take (Linda's `in`) with a template.
//!     let space = client.space()?;
//!     space.out(agora::tuple!("job", 42)).await?;
//!     let job = space.take(&agora::template!("job", ?int)).await?;
//!     assert_eq!(job, agora::tuple!("job", 42));
//!     Ok::<(), agora::Error>(())
//! })?;
//! # Ok::<(), agora::Error>(())
//! ```

mod client;
mod error;
mod io;
mod replay_io;
mod space;
mod space_io;
mod subscription;

pub use agora_wire::bus::{ContentType, Hello, Stats, TopicStats};
pub use agora_wire::topic::{Filter, FilterError, Topic, TopicError};
pub use agora_wire::ErrorCode;
pub use client::{Client, ClientOptions, ReplayFrom};
pub use error::{Error, Result, SpaceErrorCode};
pub use space::Space;
pub use subscription::{Event, Healed, RawEvent, RawSubscription, Subscription, UNLOGGED_OFFSET};
// The tuple space model, so apps need no direct dependency on agora-tuplespace.
pub use agora_tuplespace::{
    from_tuple, parse_template, parse_tuple, template, to_tuple, tuple, Field, Kind, ParseError,
    Template, Tuple, Value,
};

/// The broker endpoint used when none is given (`AGORA_BROKER` overrides it in the CLI).
pub const DEFAULT_BROKER: &str = agora_wire::bus::DEFAULT_ENDPOINT;
