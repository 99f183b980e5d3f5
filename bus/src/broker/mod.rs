//! The broker: a finite-state machine with non-blocking calls, one thread owning its sockets.
//!
//! * [`BrokerConfig`]: endpoints, limits, data dir.
//! * [`Broker::start`] binds the sockets (so the caller learns the real endpoints, including
//!   ephemeral ports), then hands them to the dispatcher thread (`dispatcher.rs`).
//! * [`Broker::shutdown`] rings a doorbell the dispatcher polls; it stops accepting, flushes
//!   and returns.
//!
//! The dispatcher owns the request `ROUTER` and the events `XPUB`. A publish is read as
//! ZeroMQ messages, checked (header, topic, size), stamped with offset/sequence/time, logged,
//! and sent on the XPUB; the payload is never decoded, and a ROOM publish's message goes out
//! itself, rewritten in place into the event (`frame.rs` owns such messages). The event log
//! is written by its own thread (`log_writer.rs`), which the dispatcher hands a batch of
//! stamped events per commit; the replay service (`replay.rs`) reads it on another.

mod dispatcher;
mod frame;
mod log_writer;
mod replay;

pub use replay::CURSORS_FILE;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::protocol::DEFAULT_MAX_PAYLOAD;

/// The address clients use when they name no broker.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:7400";

/// Everything the broker can be told; [`BrokerConfig::default`] needs nothing else.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The request endpoint (ROUTER): the one address clients need.
    pub listen: String,
    /// The events endpoint (XPUB). `None`: same host as `listen`, port + 1 (or `*` when
    /// `listen` uses `*`).
    pub events: Option<String>,
    /// The tuple space endpoint (ROUTER). `None`: same host as `listen`, port + 2 (or `*`).
    pub space: Option<String>,
    /// The replay service endpoint (ROUTER): replays, durable subscriptions, gap healing.
    /// `None`: same host as `listen`, port + 3 (or `*`).
    pub replay: Option<String>,
    /// Where the broker keeps its state (created if missing).
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
    /// Default 1000, like the events socket: deeper queues measured slower (1 publisher ->
    /// 1 subscriber at 64 B: ~0.9 M/s with 1000, ~0.7 M/s with 10,000; more in flight, more
    /// memory touched per event).
    pub requests_hwm: i32,
    /// When the event log is forced to disk (`always`, `every 5ms`: group commit, `never`).
    /// A confirmed publish is answered only after the fsync that covers it.
    pub fsync: crate::log::FsyncPolicy,
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
    /// Serve the tuple space (on `space`, persisted under `<data_dir>/space`).
    pub serve_space: bool,
    /// When the space's write-ahead log is forced to disk.
    pub space_fsync: agora_tuplespace::persist::FsyncPolicy,
    /// How long a tuple handed to a taker stays reserved waiting for its confirmation.
    pub reservation_lease: Duration,
    /// How long the space's server thread keeps looking for the next request after a few
    /// before it sleeps (see [`agora_tuplespace::ServerConfig::spin`]). Default 200 µs: a
    /// client's next request usually follows within a round trip, and on a VM a thread
    /// put to sleep and woken again costs more than the round trip itself (a sequential
    /// `out` + `take` pair: ~3.8 bare echo round trips without it, ~1.3 with it). Zero
    /// turns it off (the thread then never polls while idle).
    pub space_spin: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: DEFAULT_ENDPOINT.to_string(),
            events: None,
            space: None,
            replay: None,
            data_dir: PathBuf::from("agora-data"),
            max_payload: DEFAULT_MAX_PAYLOAD,
            stats_interval: Duration::from_secs(1),
            slow_consumer_timeout: Duration::from_millis(500),
            events_hwm: 1000,
            requests_hwm: 1000,
            fsync: crate::log::FsyncPolicy::Every(Duration::from_millis(5)),
            segment_bytes: crate::log::DEFAULT_SEGMENT_BYTES,
            retention_bytes: None,
            retention_age: None,
            producer_ttl: crate::log::DEFAULT_PRODUCER_TTL,
            serve_space: true,
            space_fsync: agora_tuplespace::persist::FsyncPolicy::Every(Duration::from_millis(5)),
            reservation_lease: Duration::from_secs(5),
            space_spin: Duration::from_micros(200),
        }
    }
}

/// Smallest event log segment accepted: smaller ones make a file or three per event.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Largest `space_spin` accepted: the spin is a busy wait.
pub const MAX_SPACE_SPIN: Duration = Duration::from_millis(10);

impl BrokerConfig {
    /// The largest `max_payload` the event log can store (its records hold the topic and a
    /// header besides the payload).
    pub const MAX_PAYLOAD_LIMIT: usize =
        crate::log::DEFAULT_MAX_RECORD_BYTES - crate::topic::MAX_TOPIC_LEN - 1024;

    /// Refuse settings a broker cannot keep its promises with (each was accepted once and
    /// did harm): a queue bound of 0 (libzmq: no bound, memory grows without end), payloads
    /// the log cannot store, segments of a few bytes, a size retention of 0, a space spin
    /// that keeps a core busy.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |msg: String| Err(BrokerError::Config(msg));
        if self.events_hwm < 1 {
            return bad(format!(
                "events_hwm (--events-hwm) is {}: it must be at least 1 message (0 would lift \
                 the bound on each subscriber's queue)",
                self.events_hwm
            ));
        }
        if self.requests_hwm < 1 {
            return bad(format!(
                "requests_hwm is {}: it must be at least 1 message (0 would lift the bound on \
                 each client's queue)",
                self.requests_hwm
            ));
        }
        if self.max_payload == 0 || self.max_payload > Self::MAX_PAYLOAD_LIMIT {
            return bad(format!(
                "max_payload (--max-payload) is {} bytes: it must be 1 to {} (what the event \
                 log can store)",
                self.max_payload,
                Self::MAX_PAYLOAD_LIMIT
            ));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes (--segment-bytes) is {}: it must be at least {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.retention_bytes == Some(0) {
            return bad(
                "retention_bytes (--retention-bytes) is 0, which would keep no events: \
                        leave it out for no size limit"
                    .to_string(),
            );
        }
        if self.space_spin > MAX_SPACE_SPIN {
            return bad(format!(
                "space_spin (--space-spin) is {:?}: at most {MAX_SPACE_SPIN:?} (it is a busy \
                 wait; longer keeps a core busy after every request)",
                self.space_spin
            ));
        }
        Ok(())
    }

    /// A config that listens on an ephemeral loopback port with the given data dir: what
    /// tests and embedded brokers want.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            listen: "tcp://127.0.0.1:*".to_string(),
            data_dir: data_dir.into(),
            ..BrokerConfig::default()
        }
    }
}

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
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
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the dispatcher thread panicked")]
    Panicked,
    #[error("tuple space: {0}")]
    Space(#[from] agora_tuplespace::Error),
    #[error("event log: {0}")]
    Log(#[from] crate::log::LogError),
    /// A setting the broker refuses (see [`BrokerConfig::validate`]).
    #[error("{0}")]
    Config(String),
}

/// A running broker. Dropping it shuts it down.
pub struct Broker {
    endpoint: String,
    events_endpoint: String,
    space_endpoint: Option<String>,
    replay_endpoint: String,
    doorbell: UnixStream,
    thread: Option<JoinHandle<Result<(), BrokerError>>>,
    replay_doorbell: UnixStream,
    replay_thread: Option<JoinHandle<Result<(), BrokerError>>>,
    space: Option<agora_tuplespace::SpaceServer>,
}

impl Broker {
    /// Bind the sockets and start serving on a new thread.
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
        let (doorbell, doorbell_rx) = UnixStream::pair()?;
        doorbell_rx.set_nonblocking(true)?;
        let mut parts = dispatcher::Dispatcher::bind(&ctx, &config, doorbell_rx)?;
        let seed = parts
            .replay_seed
            .take()
            .ok_or_else(|| BrokerError::Io(std::io::Error::other("replay seed taken")))?;
        let replay_want = match &config.replay {
            Some(e) => e.clone(),
            None => sibling_endpoint(&config.listen, 3, "replay")?,
        };
        let (replay_doorbell, replay_doorbell_rx) = UnixStream::pair()?;
        replay_doorbell_rx.set_nonblocking(true)?;
        let (replay, replay_endpoint) = replay::ReplayService::bind(
            &ctx,
            &replay_want,
            &config.data_dir,
            seed.reader,
            seed.last_offsets,
            seed.committed_end,
            replay_doorbell_rx,
        )?;
        parts.replay_endpoint = Some(replay_endpoint.clone());
        let replay_ctx = ctx.clone();
        let replay_thread = std::thread::Builder::new()
            .name("agora-replay".into())
            .spawn(move || {
                let r = replay.run();
                drop(replay_ctx);
                r
            })?;
        let space = if config.serve_space {
            let endpoint = match &config.space {
                Some(e) => e.clone(),
                None => sibling_endpoint(&config.listen, 2, "space")?,
            };
            let server = agora_tuplespace::SpaceServer::start(agora_tuplespace::ServerConfig {
                endpoint,
                reservation_lease: config.reservation_lease,
                data_dir: Some(config.data_dir.join("space")),
                fsync: config.space_fsync,
                context: Some(ctx.clone()),
                spin: config.space_spin,
                ..agora_tuplespace::ServerConfig::default()
            })?;
            parts.space_endpoint = Some(server.endpoint().to_string());
            parts.space_events = Some(forward_space_events(server.space())?);
            Some(server)
        } else {
            None
        };
        let endpoint = parts.endpoint.clone();
        let events_endpoint = parts.events_endpoint.clone();
        let space_endpoint = parts.space_endpoint.clone();
        let thread = std::thread::Builder::new()
            .name("agora-dispatcher".into())
            .spawn(move || {
                let ctx = ctx; // the context lives as long as the dispatcher
                let r = parts.run();
                drop(ctx);
                r
            })?;
        Ok(Broker {
            endpoint,
            events_endpoint,
            space_endpoint,
            replay_endpoint,
            doorbell,
            thread: Some(thread),
            replay_doorbell,
            replay_thread: Some(replay_thread),
            space,
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

    /// The tuple space endpoint, when the broker serves one.
    pub fn space_endpoint(&self) -> Option<&str> {
        self.space_endpoint.as_deref()
    }

    /// The replay service endpoint (replays, durable subscriptions, gap healing).
    pub fn replay_endpoint(&self) -> &str {
        &self.replay_endpoint
    }

    /// Stop accepting, flush, and wait for the dispatcher to finish.
    pub fn shutdown(mut self) -> Result<(), BrokerError> {
        self.stop()
    }

    /// The tuple space the broker serves (shared with its space server), if any.
    pub fn space(&self) -> Option<&agora_tuplespace::Space> {
        self.space.as_ref().map(|s| s.space())
    }

    /// Stop the space server and the dispatcher, and wait for both.
    fn stop(&mut self) -> Result<(), BrokerError> {
        if let Some(space) = self.space.take() {
            space.shutdown();
        }
        if let Some(t) = self.replay_thread.take() {
            let _ = (&self.replay_doorbell).write(&[1]);
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("replay service stopped with an error: {e}"),
                Err(_) => tracing::error!("replay service panicked"),
            }
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // A full or closed doorbell both mean the dispatcher already knows.
        let _ = (&self.doorbell).write(&[1]);
        thread.join().map_err(|_| BrokerError::Panicked)?
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("broker stopped with an error: {e}");
        }
    }
}

/// Observe the space and queue its events for the dispatcher, which publishes them on
/// `$space.out`, `$space.take` and `$space.expire` (payload: the tuple as CBOR). Nothing is
/// encoded or queued while no subscription covers `$space.`.
fn forward_space_events(
    space: &agora_tuplespace::Space,
) -> Result<dispatcher::SpaceEvents, BrokerError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Bounded: if the dispatcher falls this far behind, events are dropped (and logged)
    // rather than blocking the space.
    let (tx, rx) = std::sync::mpsc::sync_channel(65_536);
    let (bell, ringer) = UnixStream::pair()?;
    bell.set_nonblocking(true)?;
    ringer.set_nonblocking(true)?;
    let pending = Arc::new(AtomicBool::new(false));
    let wanted = Arc::new(AtomicBool::new(false));
    let (p, w) = (pending.clone(), wanted.clone());
    space.set_observer(Some(Arc::new(move |event| {
        if !w.load(Ordering::Relaxed) {
            return;
        }
        let (topic, tuple) = match event {
            agora_tuplespace::SpaceEvent::Out(t) => ("$space.out", t),
            agora_tuplespace::SpaceEvent::Take(t) => ("$space.take", t),
            agora_tuplespace::SpaceEvent::Expire(t) => ("$space.expire", t),
        };
        if tx.try_send((topic, tuple.to_cbor())).is_err() {
            tracing::warn!("space event dropped: the dispatcher is behind");
            return;
        }
        if !p.swap(true, Ordering::SeqCst) {
            let _ = (&ringer).write(&[1]);
        }
    })));
    Ok(dispatcher::SpaceEvents {
        rx,
        bell,
        pending,
        wanted,
    })
}

/// Send `identity ‖ [empty delimiter] ‖ header ‖ body…` on a ROUTER without blocking: the
/// one way the broker's threads address a client. Only the first frame can fail (EAGAIN: the
/// peer's queue is full; EHOSTUNREACH: it is gone, with ROUTER_MANDATORY), and then nothing
/// was sent; after it the rest of the message always goes through.
pub(crate) fn send_routed(
    router: &zmq::Socket,
    identity: &[u8],
    delimited: bool,
    header: &[u8],
    body: &[&[u8]],
) -> Result<(), zmq::Error> {
    router.send(identity, zmq::SNDMORE | zmq::DONTWAIT)?;
    if delimited {
        router.send(&b""[..], zmq::SNDMORE | zmq::DONTWAIT)?;
    }
    let more = if body.is_empty() { 0 } else { zmq::SNDMORE };
    router.send(header, more | zmq::DONTWAIT)?;
    for (i, part) in body.iter().enumerate() {
        let more = if i + 1 < body.len() { zmq::SNDMORE } else { 0 };
        router.send(*part, more | zmq::DONTWAIT)?;
    }
    Ok(())
}

/// The first of `count` consecutive free loopback TCP ports, for a broker that must come back
/// on the same ports after a restart (tests, tools). They lie below the kernel's ephemeral
/// port range: while the broker is down, no outgoing connection can be given one of them as
/// its local port (another test's client, or a client reconnecting to the broker's own port,
/// which on loopback can connect to itself), which would keep the broker from binding again.
/// A block is not handed out twice in one process.
pub fn loopback_port_block(count: u16) -> u16 {
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let ephemeral_low = ephemeral_port_low();
    let bottom: u16 = 10_000.min(ephemeral_low / 2);
    let top = ephemeral_low.saturating_sub(count);
    let span = u32::from(top.saturating_sub(bottom)).max(1);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Start somewhere different in each process, then walk the range.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for step in 0..span {
        let first = bottom + ((seed.wrapping_add(step * u32::from(count))) % span) as u16;
        let taken = handed_out
            .iter()
            .any(|&(f, n)| first < f + n && f < first + count);
        let free =
            || (0..count).all(|d| std::net::TcpListener::bind(("127.0.0.1", first + d)).is_ok());
        if !taken && free() {
            handed_out.push((first, count));
            return first;
        }
    }
    panic!("no {count} free loopback ports between {bottom} and {ephemeral_low}");
}

/// The lowest port the kernel gives outgoing connections (`low high` in
/// `ip_local_port_range`; Linux's default if unreadable).
fn ephemeral_port_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Derive a sibling endpoint from the request endpoint: same transport and host, the port
/// moved by `delta` (or `*` when the request port is ephemeral); ipc/inproc get a suffix.
pub(crate) fn sibling_endpoint(
    listen: &str,
    delta: u16,
    suffix: &str,
) -> Result<String, BrokerError> {
    if let Some(rest) = listen.strip_prefix("tcp://") {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| BrokerError::Endpoint(listen.to_string()))?;
        if port == "*" || port == "0" {
            return Ok(format!("tcp://{host}:*"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| BrokerError::Endpoint(listen.to_string()))?;
        let sib = port
            .checked_add(delta)
            .ok_or_else(|| BrokerError::Endpoint(listen.to_string()))?;
        Ok(format!("tcp://{host}:{sib}"))
    } else if listen.starts_with("ipc://") || listen.starts_with("inproc://") {
        Ok(format!("{listen}-{suffix}"))
    } else {
        Err(BrokerError::Endpoint(listen.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_are_free_below_the_ephemeral_range_and_never_handed_out_twice() {
        let low = ephemeral_port_low();
        let mut blocks: Vec<u16> = (0..50).map(|_| loopback_port_block(4)).collect();
        for &b in &blocks {
            assert!(b + 4 <= low, "{b} below the ephemeral range ({low})");
            for d in 0..4 {
                std::net::TcpListener::bind(("127.0.0.1", b + d)).expect("free");
            }
        }
        blocks.sort_unstable();
        assert!(
            blocks.windows(2).all(|w| w[1] >= w[0] + 4),
            "{blocks:?} overlap"
        );
    }

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
