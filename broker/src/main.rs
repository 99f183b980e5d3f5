//! `agora-broker`: the Agora broker. With no flags it serves on `tcp://127.0.0.1:7400` with
//! its data in `./agora-data`, and prints `agora-broker ready: <endpoint>` once it serves.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_broker::{Broker, BrokerConfig, BusConfig, DEFAULT_ENDPOINT};
use anyhow::Context;
use clap::Parser;

/// mimalloc for every allocation in the process, libzmq's included (`override`): the
/// dispatcher allocates each outgoing event and libzmq's I/O thread frees it, and glibc's
/// malloc serialises such cross-thread frees on an arena lock (seen as futex waits in the
/// dispatcher under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Agora broker: event bus and tuple space.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Request endpoint (the one address clients need). `tcp://127.0.0.1:*` picks a free port.
    #[arg(long, default_value = DEFAULT_ENDPOINT, env = "AGORA_LISTEN")]
    listen: String,
    /// Events (XPUB) endpoint. Default: the listen port + 1.
    #[arg(long)]
    events: Option<String>,
    /// Tuple space endpoint. Default: the listen port + 2.
    #[arg(long)]
    space: Option<String>,
    /// Replay endpoint (stored events, durable subscriptions, gap healing). Default: the
    /// listen port + 3.
    #[arg(long)]
    replay: Option<String>,
    /// Data directory (created if missing).
    #[arg(long, default_value = "agora-data", env = "AGORA_DATA")]
    data: PathBuf,
    /// Largest payload accepted, in bytes.
    #[arg(long, default_value_t = agora_wire::bus::DEFAULT_MAX_PAYLOAD)]
    max_payload: usize,
    /// How long a full subscriber may hold up delivery before it misses events (e.g. 500ms).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    slow_consumer_timeout: Duration,
    /// Per-subscriber queue bound on the events socket, in messages.
    #[arg(long, default_value_t = 1000)]
    events_hwm: i32,
    /// When the event log and the space's write-ahead log are forced to disk: `always`,
    /// `every <duration>` (group commit, e.g. `every 5ms`) or `never`.
    #[arg(long, default_value = "every 5ms")]
    fsync: agora_storage::FsyncPolicy,
    /// Keep at most this many bytes of events (oldest segments are removed first).
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Remove events older than this (whole segments), e.g. `7days`, `12h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    retention_age: Option<Duration>,
    /// Event log segment size in bytes.
    #[arg(long, default_value_t = agora_storage::log::DEFAULT_SEGMENT_BYTES)]
    segment_bytes: u64,
    /// How long an idempotent producer's last sequence is kept after its last publish, to
    /// drop its retries (the SDK retries for up to 30 s).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    producer_ttl: Duration,
    /// Do not serve the tuple space.
    #[arg(long)]
    no_space: bool,
    /// How long the space server keeps polling for a client's next request before it
    /// sleeps (lower latency for sequential clients, some CPU while they are active);
    /// `0s` turns it off.
    #[arg(long, default_value = "200us", value_parser = humantime::parse_duration)]
    space_spin: Duration,
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (a log shipper gone) must not stop the broker: tracing would report
        // the failed write with `eprintln!`, which panics.
        .log_internal_errors(false)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = agora_wire::text::error_line(e.as_ref());
            let _ = writeln!(std::io::stderr(), "agora-broker: error: {line}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Register before serving so an early signal is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    let config = BrokerConfig {
        bus: BusConfig {
            listen: args.listen,
            events: args.events,
            replay: args.replay,
            data_dir: args.data,
            max_payload: args.max_payload,
            slow_consumer_timeout: args.slow_consumer_timeout,
            events_hwm: args.events_hwm,
            fsync: args.fsync,
            retention_bytes: args.retention_bytes,
            retention_age: args.retention_age,
            segment_bytes: args.segment_bytes,
            producer_ttl: args.producer_ttl,
            ..BusConfig::default()
        },
        space: args.space,
        serve_space: !args.no_space,
        space_fsync: args.fsync,
        space_spin: args.space_spin,
        ..BrokerConfig::default()
    };
    let broker = Broker::start(config).context("cannot start the broker")?;
    // Nobody may be reading stdout any more: the broker serves on regardless.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "agora-broker ready: {}", broker.endpoint());
    let _ = stdout.flush();
    tracing::info!(
        events = broker.events_endpoint(),
        space = broker.space_endpoint().unwrap_or("-"),
        replay = broker.replay_endpoint(),
        "serving"
    );
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    broker.shutdown().context("broker stopped with an error")?;
    Ok(())
}
