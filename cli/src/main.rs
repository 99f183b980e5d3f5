//! `agora`: the terminal tool. Publish, subscribe, watch stats, and use the tuple space.
//!
//! Exit codes: 0 ok, 1 nothing matched or a timeout passed, 2 error (one line on stderr).
//!
//! # Layout
//!
//! * `main.rs`: the command line (clap), connecting, exit codes.
//! * `bus.rs`: `pub`, `sub` (live, replayed, durable), `stats`.
//! * `space.rs`: `space out|in|rd|inp|rdp|count|dump`.
//! * `json.rs`: events between JSON and CBOR (`--format json`, JSON Lines).

mod bus;
mod json;
mod space;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Agora: event bus and tuple space, from the terminal.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    propagate_version = true,
    after_help = "Exit status: 0 done; 1 nothing matched or a timeout passed first (space \
                  inp/rdp found nothing, space in/rd --timeout waited in vain, sub --timeout \
                  saw no event or fewer than --count); 2 error (one line on stderr)."
)]
pub struct Cli {
    /// The broker's request endpoint.
    #[arg(long, global = true, env = "AGORA_BROKER", default_value = agora::DEFAULT_BROKER)]
    pub broker: String,
    /// How long to wait for the broker to answer when connecting.
    #[arg(long, global = true, env = "AGORA_CONNECT_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// More logging on stderr (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish an event: `agora pub sensors.kitchen.temp '{"celsius": 21.5}'`.
    Pub(bus::PubArgs),
    /// Print events matching one or more filters as they arrive.
    Sub(bus::SubArgs),
    /// Show the broker's statistics.
    Stats(bus::StatsArgs),
    /// Use the tuple space: out, in, rd, inp, rdp, count, dump.
    Space(space::SpaceArgs),
}

/// What a command concluded, beyond success.
pub enum Outcome {
    /// Exit 0.
    Done,
    /// Exit 1: nothing matched, or a timeout passed first.
    NothingMatched,
    /// Exit 143 (128 + SIGTERM), as if the signal had ended the process: a command that
    /// handles SIGTERM itself (to withdraw a request first) ended on it.
    Terminated,
}

/// Output format shared by the commands that print records.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One readable line per record.
    Text,
    /// JSON Lines.
    Json,
}

/// The `--connect-timeout` in force, for [`connect`].
static CONNECT_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = CONNECT_TIMEOUT.set(cli.connect_timeout);
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agora: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        // A blocked `space in` / `space rd` withdraws its request on Ctrl-C or SIGTERM before
        // exiting.
        // So does `pub`, after flushing and counting what it published.
        if matches!(&cli.command, Command::Pub(_))
            || matches!(&cli.command, Command::Space(args) if space::handles_interrupts(args))
        {
            return run(cli).await;
        }
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => Ok(Outcome::Done),
        }
    });
    // Do not wait for I/O threads still blocked on a broker that is gone.
    runtime.shutdown_background();
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::NothingMatched) => ExitCode::from(1),
        Ok(Outcome::Terminated) => ExitCode::from(143),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agora: error: {}", agora_wire::text::error_line(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Pub(args) => bus::publish(&cli.broker, args).await,
        Command::Sub(args) => bus::subscribe(&cli.broker, args).await,
        Command::Stats(args) => bus::stats(&cli.broker, args).await,
        Command::Space(args) => space::run(&cli.broker, args).await,
    }
}

/// A closed stdout (`agora sub x | head -1`) ends the program quietly.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Connect to the broker with a message that names the endpoint.
pub async fn connect(endpoint: &str) -> anyhow::Result<agora::Client> {
    use anyhow::Context;
    let options = agora::ClientOptions {
        connect_timeout: CONNECT_TIMEOUT
            .get()
            .copied()
            .unwrap_or(std::time::Duration::from_secs(5)),
        ..agora::ClientOptions::default()
    };
    match agora::Client::connect_with(endpoint, options).await {
        Ok(client) => Ok(client),
        // It names the endpoint and says what is wrong with it.
        Err(e @ agora::Error::Endpoint { .. }) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("cannot connect to the broker at {endpoint}")),
    }
}
