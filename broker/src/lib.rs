//! # agora-broker
//!
//! The Agora broker process: the event bus (crate `agora-bus`) and the tuple space (crate
//! `agora-tuplespace`) served side by side, on one ZeroMQ context, with their state on disk
//! (crate `agora-storage`). The `agora-broker` binary is this crate's `main.rs`; tests and
//! apps embed the same [`Broker`] in-process.
//!
//! # Layout
//!
//! * [`BrokerConfig`]: every setting (the bus's [`BusConfig`] and the space's), with defaults
//!   that need no flags, and the refusals of settings the broker cannot keep its promises
//!   with ([`BrokerConfig::validate`]).
//! * [`Broker`]: composition. [`Broker::start`] creates the data dir,
//!   opens the bus's log (`<data>/log`) and binds its sockets, loads the space from
//!   `<data>/space` and starts its server, then starts the bus with the space's events linked
//!   to `$space.*`; [`Broker::shutdown`] stops them in reverse.
//! * `main.rs`: the command line (clap), logging, signals (SIGINT/SIGTERM: a clean stop).
//!
//! # Running a broker in-process
//!
//! ```no_run
//! use agora_broker::{Broker, BrokerConfig};
//!
//! let dir = std::env::temp_dir().join("agora-doc-broker");
//! let broker = Broker::start(BrokerConfig::ephemeral(&dir)).unwrap();
//! println!("serving on {}", broker.endpoint());
//! broker.shutdown().unwrap();
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_bus::{sibling_endpoint, Bus, BusError, SpaceEvents, SpaceLink};
use agora_storage::space::{open_space, PersistOptions};
use agora_storage::FsyncPolicy;
use agora_tuplespace::{ServerConfig, Space, SpaceEvent, SpaceServer};

pub use agora_bus::{BusConfig, CURSORS_FILE, MIN_SEGMENT_BYTES};
pub use agora_wire::bus::DEFAULT_ENDPOINT;

/// Everything the broker can be told; [`BrokerConfig::default`] needs nothing else.
///
/// The bus's settings are a [`BusConfig`] inside it, reached through it as if they were its
/// own (`config.fsync`, `config.listen`: `Deref` to the bus's part), and the space's are
/// beside them.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The event bus: endpoints (`listen`, `events`, `replay`), the data dir, limits, the
    /// log's fsync, segments and retention.
    pub bus: BusConfig,
    /// The tuple space endpoint (ROUTER). `None`: same host as `listen`, port + 2 (or `*`).
    pub space: Option<String>,
    /// Serve the tuple space (on `space`, persisted under `<data_dir>/space`).
    pub serve_space: bool,
    /// When the space's write-ahead log is forced to disk.
    pub space_fsync: FsyncPolicy,
    /// How long a tuple handed to a taker stays reserved waiting for its confirmation.
    pub reservation_lease: Duration,
    /// How long the space's server thread keeps looking for the next request after a few
    /// before it sleeps (see [`agora_tuplespace::ServerConfig::spin`]): a client's next
    /// request usually follows within a round trip, and on a VM a thread put to sleep and
    /// woken again costs more than the round trip itself. Zero turns it off (the thread then
    /// never polls while idle).
    pub space_spin: Duration,
}

impl std::ops::Deref for BrokerConfig {
    type Target = BusConfig;
    fn deref(&self) -> &BusConfig {
        &self.bus
    }
}

impl std::ops::DerefMut for BrokerConfig {
    fn deref_mut(&mut self) -> &mut BusConfig {
        &mut self.bus
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            bus: BusConfig::default(),
            space: None,
            serve_space: true,
            space_fsync: FsyncPolicy::Every(Duration::from_millis(5)),
            reservation_lease: Duration::from_secs(5),
            space_spin: Duration::from_micros(200),
        }
    }
}

/// Largest `space_spin` accepted: the spin is a busy wait.
pub const MAX_SPACE_SPIN: Duration = Duration::from_millis(10);

impl BrokerConfig {
    /// The largest `max_payload` the event log can store (its records hold the topic and a
    /// header besides the payload).
    pub const MAX_PAYLOAD_LIMIT: usize = BusConfig::MAX_PAYLOAD_LIMIT;

    /// Refuse settings a broker cannot keep its promises with (each was accepted once and
    /// did harm): the bus's ([`BusConfig::validate`]: queue bounds of 0, payloads the log
    /// cannot store, tiny segments, a size retention of 0) and a space spin that keeps a
    /// core busy.
    pub fn validate(&self) -> Result<(), BrokerError> {
        self.bus.validate().map_err(BrokerError::Config)?;
        if self.space_spin > MAX_SPACE_SPIN {
            return Err(BrokerError::Config(format!(
                "space_spin (--space-spin) is {:?}: at most {MAX_SPACE_SPIN:?} (it is a busy \
                 wait; longer keeps a core busy after every request)",
                self.space_spin
            )));
        }
        Ok(())
    }

    /// A config that listens on an ephemeral loopback port with the given data dir: what
    /// tests and embedded brokers want.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            bus: BusConfig {
                listen: "tcp://127.0.0.1:*".to_string(),
                data_dir: data_dir.into(),
                ..BusConfig::default()
            },
            ..BrokerConfig::default()
        }
    }
}

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The bus failed (binding, the log, a thread).
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tuple space: {0}")]
    Space(#[from] agora_tuplespace::Error),
    /// A setting the broker refuses (see [`BrokerConfig::validate`]).
    #[error("{0}")]
    Config(String),
}

/// A running broker. Dropping it shuts it down.
pub struct Broker {
    bus: Option<Bus>,
    space: Option<SpaceServer>,
    space_endpoint: Option<String>,
}

impl Broker {
    /// Bind the sockets and start serving on new threads.
    pub fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        config.validate()?;
        if config.data_dir.exists() && !config.data_dir.is_dir() {
            return Err(BrokerError::DataDir {
                path: config.data_dir.clone(),
                source: std::io::Error::other("it is not a directory"),
            });
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let ctx = zmq::Context::new();
        // The log first: a data dir another broker holds is refused before anything else.
        let bound = Bus::bind(&ctx, &config.bus)?;
        let (space, link) = if config.serve_space {
            let (server, link) = start_space(&ctx, &config)?;
            (Some(server), Some(link))
        } else {
            (None, None)
        };
        let space_endpoint = link.as_ref().map(|l| l.endpoint.clone());
        let bus = bound.start(link)?;
        Ok(Broker {
            bus: Some(bus),
            space,
            space_endpoint,
        })
    }

    fn bus(&self) -> &Bus {
        self.bus
            .as_ref()
            .expect("the bus runs until the broker stops")
    }

    /// The request endpoint, with the real port (the one address a client needs).
    pub fn endpoint(&self) -> &str {
        self.bus().endpoint()
    }

    /// The events (XPUB) endpoint.
    pub fn events_endpoint(&self) -> &str {
        self.bus().events_endpoint()
    }

    /// The tuple space endpoint, when the broker serves one.
    pub fn space_endpoint(&self) -> Option<&str> {
        self.space_endpoint.as_deref()
    }

    /// The replay service endpoint (replays, durable subscriptions, gap healing).
    pub fn replay_endpoint(&self) -> &str {
        self.bus().replay_endpoint()
    }

    /// The tuple space the broker serves (shared with its space server), if any.
    pub fn space(&self) -> Option<&Space> {
        self.space.as_ref().map(|s| s.space())
    }

    /// Stop accepting, flush, and wait for every thread.
    pub fn shutdown(mut self) -> Result<(), BrokerError> {
        self.stop()
    }

    /// Stop the space server, then the bus, and wait for both.
    fn stop(&mut self) -> Result<(), BrokerError> {
        if let Some(space) = self.space.take() {
            space.shutdown();
        }
        match self.bus.take() {
            Some(bus) => Ok(bus.shutdown()?),
            None => Ok(()),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("broker stopped with an error: {e}");
        }
    }
}

/// Load the space from `<data>/space`, serve it, and link its events to the bus.
fn start_space(
    ctx: &zmq::Context,
    config: &BrokerConfig,
) -> Result<(SpaceServer, SpaceLink), BrokerError> {
    let endpoint = match &config.space {
        Some(e) => e.clone(),
        None => sibling_endpoint(&config.listen, 2, "space")?,
    };
    let dir = config.data_dir.join("space");
    let options = PersistOptions {
        fsync: config.space_fsync,
        ..PersistOptions::default()
    };
    let (space, report) = open_space(&dir, &options)?;
    tracing::info!(
        "space: loaded {} tuple(s) from {} ({} expired while down, {} byte(s) of torn WAL \
         tail truncated)",
        report.tuples,
        dir.display(),
        report.expired,
        report.truncated_bytes
    );
    let events = forward_space_events(&space)?;
    let server = SpaceServer::start(ServerConfig {
        endpoint,
        reservation_lease: config.reservation_lease,
        context: Some(ctx.clone()),
        space: Some(space),
        spin: config.space_spin,
        ..ServerConfig::default()
    })?;
    let link = SpaceLink {
        endpoint: server.endpoint().to_string(),
        events,
    };
    Ok((server, link))
}

/// Observe the space and queue its events for the dispatcher, which publishes them on
/// `$space.out`, `$space.take` and `$space.expire` (payload: the tuple as CBOR). Nothing is
/// encoded or queued while no subscription covers `$space.`.
fn forward_space_events(space: &Space) -> Result<SpaceEvents, BrokerError> {
    let (sender, events) = SpaceEvents::channel().map_err(BusError::Io)?;
    space.set_observer(Some(Arc::new(move |event| {
        if !sender.wanted() {
            return;
        }
        let (topic, tuple) = match event {
            SpaceEvent::Out(t) => ("$space.out", t),
            SpaceEvent::Take(t) => ("$space.take", t),
            SpaceEvent::Expire(t) => ("$space.expire", t),
        };
        if !sender.send(topic, tuple.to_cbor()) {
            tracing::warn!("space event dropped: the dispatcher is behind");
        }
    })));
    Ok(events)
}
