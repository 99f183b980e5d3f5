//! `agora space ...`: the tuple space from the terminal.
//!
//! Tuples and templates are written in the text syntax (docs/TEMPLATES.md):
//! `agora space out '("job", 42, 3.5, "x", true, null, [1, 2])'`,
//! `agora space in '("job", ?int)' --timeout 5s`. Results print one tuple per line, in the
//! same syntax (`--format text`) or as JSON Lines (`--format json`). A literal that does not
//! parse is shown with a caret under the column, exit 2; `in`/`rd` that time out and
//! `inp`/`rdp` that find nothing exit 1. A take (`in`, `inp`) exits once the broker has its
//! confirmation: only then is it final. Ctrl-C (exit 0) or SIGTERM (exit 143) on a waiting
//! `in`/`rd` withdraws the request before the process ends.

use std::io::Write;
use std::time::Duration;

use agora::{Template, Tuple};
use anyhow::{anyhow, Context};

use crate::{connect, Format, Outcome};

#[derive(clap::Args, Debug)]
pub struct SpaceArgs {
    /// Output: the tuple syntax, or JSON Lines (one JSON array per tuple).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub format: Format,
    #[command(subcommand)]
    pub command: SpaceCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SpaceCommand {
    /// Write a tuple: `agora space out '("job", 42)' [--lease 10s]`.
    Out {
        /// The tuple, e.g. `("job", 42, 3.5, "x", true, null, [1, 2], h'00ff')`.
        tuple: String,
        /// Expire the tuple after this long (e.g. `10s`, `500ms`; at least `1ms`).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<Duration>,
    },
    /// Take a matching tuple, waiting for one (Linda `in`): `agora space in '("job", ?int)'`.
    In(WaitArgs),
    /// Read (copy) a matching tuple, waiting for one (Linda `rd`).
    Rd(WaitArgs),
    /// Take a matching tuple if there is one now (Linda `inp`); exit 1 if none.
    Inp(TemplateArg),
    /// Read a matching tuple if there is one now (Linda `rdp`); exit 1 if none.
    Rdp(TemplateArg),
    /// Print how many tuples match.
    Count(TemplateArg),
    /// Print every tuple (or every one matching a template), oldest first.
    Dump {
        /// Only tuples matching this template, e.g. `("job", _)`.
        template: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The template, e.g. `("job", ?int, _)`.
    pub template: String,
    /// Give up after this long (e.g. `5s`) and exit 1. Default: wait forever.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(clap::Args, Debug)]
pub struct TemplateArg {
    /// The template, e.g. `("job", ?int, _)`.
    pub template: String,
}

/// Run an `agora space` command.
pub async fn run(broker: &str, args: SpaceArgs) -> anyhow::Result<Outcome> {
    let format = args.format;
    // Everything is parsed before connecting: a typo is reported as such, with a caret.
    match args.command {
        SpaceCommand::Out { tuple, lease } => {
            let tuple = parse_tuple(&tuple)?;
            let space = open(broker).await?;
            match lease {
                Some(lease) => space.out_with_lease(tuple, lease).await?,
                None => space.out(tuple).await?,
            }
            Ok(Outcome::Done)
        }
        SpaceCommand::In(w) => wait_for(broker, w, true, format).await,
        SpaceCommand::Rd(w) => wait_for(broker, w, false, format).await,
        SpaceCommand::Inp(t) => {
            let template = parse_template(&t.template)?;
            let space = open(broker).await?;
            let found = space.try_take(&template).await?;
            make_final(&space, &found).await?;
            print_found(found, format)
        }
        SpaceCommand::Rdp(t) => {
            let template = parse_template(&t.template)?;
            let space = open(broker).await?;
            print_found(space.try_read(&template).await?, format)
        }
        SpaceCommand::Count(t) => {
            let template = parse_template(&t.template)?;
            let space = open(broker).await?;
            let n = space.count(&template).await?;
            let mut out = std::io::stdout().lock();
            // A bare number is valid JSON too.
            writeln!(out, "{n}")?;
            out.flush()?;
            Ok(Outcome::Done)
        }
        SpaceCommand::Dump { template } => {
            let template = template.as_deref().map(parse_template).transpose()?;
            let space = open(broker).await?;
            let tuples = space.dump(template.as_ref()).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for t in &tuples {
                writeln!(out, "{}", render(t, format))?;
            }
            out.flush()?;
            Ok(Outcome::Done)
        }
    }
}

/// `in` (`take`) or `rd`: wait for a match, up to `--timeout`, or until Ctrl-C.
async fn wait_for(
    broker: &str,
    w: WaitArgs,
    take: bool,
    format: Format,
) -> anyhow::Result<Outcome> {
    let template = parse_template(&w.template)?;
    let space = open(broker).await?;
    let request = async {
        match (take, w.timeout) {
            (true, Some(t)) => space.take_timeout(&template, t).await,
            (true, None) => space.take(&template).await.map(Some),
            (false, Some(t)) => space.read_timeout(&template, t).await,
            (false, None) => space.read(&template).await.map(Some),
        }
    };
    match until_interrupted(&space, request).await? {
        Ok(got) => {
            if take {
                make_final(&space, &got).await?;
            }
            print_found(got, format)
        }
        Err(signal) => Ok(signal),
    }
}

/// The CLI exits right after a take: make sure the take's `CONFIRM` reached the server
/// first, or it dies with the process and the tuple returns to the space when its
/// reservation lease runs out, taken twice.
async fn make_final(space: &agora::Space, took: &Option<Tuple>) -> anyhow::Result<()> {
    if let Some(t) = took {
        space.flush().await.with_context(|| {
            format!(
                "took {t}, but the broker did not answer after: the take may not be final \
                 (unconfirmed, the tuple returns to the space after 5 s)"
            )
        })?;
    }
    Ok(())
}

/// Run a blocking take or read until it ends (`Ok`) or Ctrl-C or SIGTERM (`Err` with the
/// exit to make). On a signal the request is withdrawn before this returns: dropping it
/// sends its `CANCEL`, and a flush means the server has handled it, so the waiter cannot
/// take a tuple written later (without this the process exited first and the server kept
/// the waiter until it missed its heartbeats, 5 s).
async fn until_interrupted<T>(
    space: &agora::Space,
    request: impl std::future::Future<Output = agora::Result<T>>,
) -> anyhow::Result<Result<T, Outcome>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let terminated = term.recv();
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    let exit = tokio::select! {
        got = request => return Ok(Ok(got?)),
        _ = tokio::signal::ctrl_c() => Outcome::Done,
        _ = terminated => Outcome::Terminated,
    };
    // `request` is dropped by now. Best effort, and briefly: a broker that is gone cannot
    // answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), space.flush()).await;
    Ok(Err(exit))
}

/// Whether the command handles Ctrl-C and SIGTERM itself (`main` must not stop it first).
pub fn handles_interrupts(args: &SpaceArgs) -> bool {
    matches!(args.command, SpaceCommand::In(_) | SpaceCommand::Rd(_))
}

async fn open(broker: &str) -> anyhow::Result<agora::Space> {
    let client = connect(broker).await?;
    client
        .space()
        .with_context(|| format!("cannot use the tuple space of the broker at {broker}"))
}

/// `--lease`: the wire counts whole milliseconds, and a zero lease expires the tuple at once,
/// which from a terminal is a mistake, not a request.
fn parse_lease(s: &str) -> Result<Duration, String> {
    let lease = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if lease < Duration::from_millis(1) {
        return Err(format!(
            "a lease of {s} would expire the tuple at once; give 1ms or more"
        ));
    }
    Ok(lease)
}

/// The error message starts on a new line so the caret lines up under the input.
fn parse_tuple(input: &str) -> anyhow::Result<Tuple> {
    agora::parse_tuple(input).map_err(|e| anyhow!("the tuple does not parse:\n{}", e.render(input)))
}

fn parse_template(input: &str) -> anyhow::Result<Template> {
    agora::parse_template(input)
        .map_err(|e| anyhow!("the template does not parse:\n{}", e.render(input)))
}

fn render(t: &Tuple, format: Format) -> String {
    match format {
        Format::Text => t.to_string(),
        Format::Json => t.to_json().to_string(),
    }
}

fn print_found(found: Option<Tuple>, format: Format) -> anyhow::Result<Outcome> {
    let Some(t) = found else {
        return Ok(Outcome::NothingMatched);
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", render(&t, format))?;
    out.flush()?;
    Ok(Outcome::Done)
}
