//! # agora-bus
//!
//! The event bus service: the threads that take publishes, stamp them, log them and fan
//! them out, and the one that serves replays and durable cursors from the log. A finite-state
//! machine with non-blocking calls; each ZeroMQ socket is owned by one thread. The
//! `agora-broker` process (crate `agora-broker`) runs it beside the tuple space.
//!
//! # Layout
//!
//! * [`Bus`] / [`BusConfig`] (this file): [`Bus::bind`] opens the log and binds the sockets
//!   (so the caller learns the real endpoints, ephemeral ports included),
//!   [`BoundBus::start`] starts the threads, [`Bus::shutdown`] stops them.
//! * `dispatcher/`: the dispatcher thread, which owns the request `ROUTER` and the events
//!   `XPUB`.
//!   * `mod.rs`: the poll loop and the sockets; requests decoded, replies sent.
//!   * `fast_path.rs`: a publish is read as ZeroMQ messages, checked (header, topic, size),
//!     stamped with offset, sequence and time, handed to the log writer and sent on the XPUB
//!     in bursts (lossy past a slow subscriber); the payload is never decoded, and a ROOM
//!     publish's message goes out itself, rewritten in place into the event (`frame.rs` owns
//!     such messages).
//!   * one file per feature, each a type that owns its state and sends nothing itself:
//!     `producers.rs` (dedupe of retries by producer id and sequence), `confirms.rs`
//!     (confirms released by the durable offset, single or in ACKS messages),
//!     `queue_groups.rs`, `subscriptions.rs` (counts, fan-out, `$space.*` wanted),
//!     `beacons.rs` (when each topic's beacon is due), `stats.rs` (counters, rates, the
//!     `$sys.stats` snapshot), `sync.rs` (the SYNC barrier).
//! * `log_writer.rs`: the thread that appends the dispatcher's batches to the event log
//!   (crate `agora-storage`) and commits them.
//! * `replay.rs`: the replay service: replays with credit, durable cursors, gap healing.
//! * [`space_events`]: the tuple space's events on their way to `$space.*`.
//!
//! The frames themselves are crate `agora-wire`'s; docs/PROTOCOL.md is the contract.

mod dispatcher;
mod frame;
mod log_writer;
mod replay;
pub mod space_events;

pub use replay::CURSORS_FILE;
pub use space_events::{SpaceEventSender, SpaceEvents};

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use agora_storage::log::{EventLog, LogOptions};
use agora_storage::log::{DEFAULT_MAX_RECORD_BYTES, DEFAULT_PRODUCER_TTL, DEFAULT_SEGMENT_BYTES};
use agora_storage::{EventStore, FsyncPolicy};
use agora_wire::bus::{DEFAULT_ENDPOINT, DEFAULT_MAX_PAYLOAD};
use agora_wire::socket::{self, Ringer};

/// The bus's settings; [`BusConfig::default`] needs nothing else.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// The request endpoint (ROUTER): the one address clients need.
    pub listen: String,
    /// The events endpoint (XPUB). `None`: same host as `listen`, port + 1 (or `*` when
    /// `listen` uses `*`).
    pub events: Option<String>,
    /// The replay service endpoint (ROUTER): replays, durable subscriptions, gap healing.
    /// `None`: same host as `listen`, port + 3 (or `*`).
    pub replay: Option<String>,
    /// Where the event log (`<data_dir>/log`) and the durable cursors are kept.
    pub data_dir: PathBuf,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// How often statistics are published on `$sys.stats`.
    pub stats_interval: Duration,
    /// How long a subscriber whose queue is full may hold up delivery (back-pressure on
    /// publishers) before the broker sends past it and that subscriber misses events.
    pub slow_consumer_timeout: Duration,
    /// Per-subscriber queue bound on the events socket (ZMQ_SNDHWM), in messages.
    pub events_hwm: i32,
    /// Per-client queue bound on the request socket (ZMQ_RCVHWM), in messages. A full
    /// queue stops the broker reading that client's connection (back-pressure, no loss).
    /// Deeper queues measured slower (more in flight, more memory touched per event).
    pub requests_hwm: i32,
    /// When the event log is forced to disk (`always`, `every 5ms`: group commit, `never`).
    /// A confirmed publish is answered only after the fsync that covers it.
    pub fsync: FsyncPolicy,
    /// Event log segment size, in bytes.
    pub segment_bytes: u64,
    /// Keep at most this many bytes of events (oldest segments are removed first).
    pub retention_bytes: Option<u64>,
    /// Remove segments whose newest event is older than this.
    pub retention_age: Option<Duration>,
    /// How long the broker remembers a producer (the id and sequence a confirmed publish
    /// carries, to drop retries) after its last publish. Default 10 minutes, twenty times
    /// the SDK's confirm timeout; a retry later than this would be stored again.
    pub producer_ttl: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            listen: DEFAULT_ENDPOINT.to_string(),
            events: None,
            replay: None,
            data_dir: PathBuf::from("agora-data"),
            max_payload: DEFAULT_MAX_PAYLOAD,
            stats_interval: Duration::from_secs(1),
            slow_consumer_timeout: Duration::from_millis(500),
            events_hwm: 1000,
            requests_hwm: 1000,
            fsync: FsyncPolicy::Every(Duration::from_millis(5)),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention_bytes: None,
            retention_age: None,
            producer_ttl: DEFAULT_PRODUCER_TTL,
        }
    }
}

/// Smallest event log segment accepted: smaller ones make a file or three per event.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;

impl BusConfig {
    /// The largest `max_payload` the event log can store (its records hold the topic and a
    /// header besides the payload).
    pub const MAX_PAYLOAD_LIMIT: usize =
        DEFAULT_MAX_RECORD_BYTES - agora_wire::topic::MAX_TOPIC_LEN - 1024;

    /// Refuse settings the bus cannot keep its promises with (each was accepted once and
    /// did harm): a queue bound of 0 (libzmq: no bound, memory grows without end), payloads
    /// the log cannot store, segments of a few bytes, a size retention of 0.
    pub fn validate(&self) -> Result<(), String> {
        if self.events_hwm < 1 {
            return Err(format!(
                "events_hwm (--events-hwm) is {}: it must be at least 1 message (0 would lift \
                 the bound on each subscriber's queue)",
                self.events_hwm
            ));
        }
        if self.requests_hwm < 1 {
            return Err(format!(
                "requests_hwm is {}: it must be at least 1 message (0 would lift the bound on \
                 each client's queue)",
                self.requests_hwm
            ));
        }
        if self.max_payload == 0 || self.max_payload > Self::MAX_PAYLOAD_LIMIT {
            return Err(format!(
                "max_payload (--max-payload) is {} bytes: it must be 1 to {} (what the event \
                 log can store)",
                self.max_payload,
                Self::MAX_PAYLOAD_LIMIT
            ));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(format!(
                "segment_bytes (--segment-bytes) is {}: it must be at least {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.retention_bytes == Some(0) {
            return Err(
                "retention_bytes (--retention-bytes) is 0, which would keep no events: \
                        leave it out for no size limit"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// Why the bus could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot bind {what} socket to {endpoint}: {source}")]
    Bind {
        what: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("invalid endpoint `{0}`: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")]
    Endpoint(String),
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the dispatcher thread panicked")]
    Panicked,
    #[error("event log: {0}")]
    Log(#[from] agora_storage::log::LogError),
}

/// What the bus needs to know of a tuple space served beside it.
pub struct SpaceLink {
    /// The space's endpoint, advertised in HELLO.
    pub endpoint: String,
    /// Its events, published on `$space.*`.
    pub events: SpaceEvents,
}

/// A running bus: the dispatcher and the replay service. Dropping it shuts it down.
pub struct Bus {
    endpoint: String,
    events_endpoint: String,
    replay_endpoint: String,
    doorbell: Ringer,
    thread: Option<JoinHandle<Result<(), BusError>>>,
    replay_doorbell: Ringer,
    replay_thread: Option<JoinHandle<Result<(), BusError>>>,
}

/// A bus whose log is open and whose sockets are bound, not yet serving: what
/// [`Bus::bind`] returns, so the caller can start what the bus advertises (the space) before
/// clients are served, and learn the real endpoints. [`BoundBus::start`] starts it.
pub struct BoundBus<S: EventStore = EventLog> {
    ctx: zmq::Context,
    dispatcher: dispatcher::Dispatcher<S>,
    replay: replay::ReplayService<S::Reader, S::Cache>,
    replay_endpoint: String,
    doorbell: Ringer,
    replay_doorbell: Ringer,
}

impl<S: EventStore + 'static> BoundBus<S> {
    /// The request endpoint, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.dispatcher.endpoint
    }

    /// Start serving on new threads; `space` is advertised in HELLO and its events go out on
    /// `$space.*`.
    pub fn start(self, space: Option<SpaceLink>) -> Result<Bus, BusError> {
        let BoundBus {
            ctx,
            mut dispatcher,
            replay,
            replay_endpoint,
            doorbell,
            replay_doorbell,
        } = self;
        dispatcher.replay_endpoint = Some(replay_endpoint.clone());
        if let Some(space) = space {
            dispatcher.space_endpoint = Some(space.endpoint);
            dispatcher.space_events = Some(space.events);
        }
        let replay_ctx = ctx.clone();
        let replay_thread = std::thread::Builder::new()
            .name("agora-replay".into())
            .spawn(move || {
                let r = replay.run();
                drop(replay_ctx);
                r
            })?;
        let endpoint = dispatcher.endpoint.clone();
        let events_endpoint = dispatcher.events_endpoint.clone();
        let mut bus = Bus {
            endpoint,
            events_endpoint,
            replay_endpoint,
            doorbell,
            thread: None,
            replay_doorbell,
            replay_thread: Some(replay_thread),
        };
        // If this spawn fails, dropping `bus` stops the replay thread.
        bus.thread = Some(
            std::thread::Builder::new()
                .name("agora-dispatcher".into())
                .spawn(move || {
                    let ctx = ctx; // the context lives as long as the dispatcher
                    let r = dispatcher.run();
                    drop(ctx);
                    r
                })?,
        );
        Ok(bus)
    }
}

impl Bus {
    /// Open the embedded event log (`<data_dir>/log`, created if missing) and bind the
    /// sockets in `ctx`; [`BoundBus::start`] then serves.
    pub fn bind(ctx: &zmq::Context, config: &BusConfig) -> Result<BoundBus, BusError> {
        let log_dir = config.data_dir.join("log");
        let (log, recovery) = EventLog::open(
            &log_dir,
            LogOptions {
                segment_bytes: config.segment_bytes,
                retention_bytes: config.retention_bytes,
                retention_age: config.retention_age,
                fsync: config.fsync,
                producer_ttl: config.producer_ttl,
                ..LogOptions::default()
            },
        )?;
        // (A truncation in recovery was logged by the log, with where the bytes went.)
        tracing::info!(
            dir = %log_dir.display(),
            first_offset = recovery.first_offset,
            next_offset = recovery.next_offset,
            topics = recovery.last_seq_by_topic.len(),
            "event log open"
        );
        Bus::bind_with(ctx, config, log)
    }

    /// [`Bus::bind`] on an event store already open: the embedded log or another backend
    /// (see `agora_storage::boundary`). The durable cursors stay in `<data_dir>`.
    pub fn bind_with<S: EventStore + 'static>(
        ctx: &zmq::Context,
        config: &BusConfig,
        log: S,
    ) -> Result<BoundBus<S>, BusError> {
        let (doorbell, doorbell_rx) = socket::doorbell()?;
        let mut dispatcher = dispatcher::Dispatcher::bind(ctx, config, doorbell_rx, log)?;
        let seed = dispatcher
            .replay_seed
            .take()
            .ok_or_else(|| BusError::Io(std::io::Error::other("replay seed taken")))?;
        let replay_want = match &config.replay {
            Some(e) => e.clone(),
            None => sibling_endpoint(&config.listen, 3, "replay")?,
        };
        let (replay_doorbell, replay_doorbell_rx) = socket::doorbell()?;
        let (replay, replay_endpoint) = replay::ReplayService::bind(
            ctx,
            &replay_want,
            &config.data_dir,
            seed.reader,
            seed.last_offsets,
            seed.committed_end,
            replay_doorbell_rx,
        )?;
        Ok(BoundBus {
            ctx: ctx.clone(),
            dispatcher,
            replay,
            replay_endpoint,
            doorbell,
            replay_doorbell,
        })
    }

    /// The request endpoint, with the real port (the one address a client needs).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The events (XPUB) endpoint.
    pub fn events_endpoint(&self) -> &str {
        &self.events_endpoint
    }

    /// The replay service endpoint (replays, durable subscriptions, gap healing).
    pub fn replay_endpoint(&self) -> &str {
        &self.replay_endpoint
    }

    /// Stop accepting, flush the log, and wait for both threads.
    pub fn shutdown(mut self) -> Result<(), BusError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), BusError> {
        if let Some(t) = self.replay_thread.take() {
            self.replay_doorbell.knock();
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("replay service stopped with an error: {e}"),
                Err(_) => tracing::error!("replay service panicked"),
            }
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.doorbell.knock();
        thread.join().map_err(|_| BusError::Panicked)?
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("bus stopped with an error: {e}");
        }
    }
}

pub(crate) use agora_wire::socket::send_routed;

/// Derive a sibling endpoint from the request endpoint: same transport and host, the port
/// moved by `delta` (or `*` when the request port is ephemeral); ipc/inproc get a suffix.
pub fn sibling_endpoint(listen: &str, delta: u16, suffix: &str) -> Result<String, BusError> {
    if let Some(rest) = listen.strip_prefix("tcp://") {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| BusError::Endpoint(listen.to_string()))?;
        if port == "*" || port == "0" {
            return Ok(format!("tcp://{host}:*"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| BusError::Endpoint(listen.to_string()))?;
        let sib = port
            .checked_add(delta)
            .ok_or_else(|| BusError::Endpoint(listen.to_string()))?;
        Ok(format!("tcp://{host}:{sib}"))
    } else if listen.starts_with("ipc://") || listen.starts_with("inproc://") {
        Ok(format!("{listen}-{suffix}"))
    } else {
        Err(BusError::Endpoint(listen.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_endpoints() {
        let s = sibling_endpoint("tcp://127.0.0.1:7400", 1, "events").unwrap();
        assert_eq!(s, "tcp://127.0.0.1:7401");
        let s = sibling_endpoint("tcp://127.0.0.1:*", 2, "space").unwrap();
        assert_eq!(s, "tcp://127.0.0.1:*");
        let s = sibling_endpoint("ipc:///tmp/a", 1, "events").unwrap();
        assert_eq!(s, "ipc:///tmp/a-events");
        assert!(sibling_endpoint("udp://x", 1, "e").is_err());
        assert!(sibling_endpoint("tcp://127.0.0.1:65535", 1, "e").is_err());
    }
}
