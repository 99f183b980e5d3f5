//! `agora pub`, `agora sub`, `agora stats`.

use std::io::Write;
use std::time::{Duration, Instant};

use agora::{ContentType, Error, RawEvent};
use anyhow::{bail, Context};
use futures_util::StreamExt;

use crate::json::{cbor_to_json, json_to_cbor, parse_event_json};
use crate::{connect, Format, Outcome};

#[derive(clap::Args, Debug)]
pub struct PubArgs {
    /// Topic, e.g. `sensors.kitchen.temp`.
    pub topic: String,
    /// The event as JSON (sent as CBOR). `-` reads it from stdin.
    pub json: String,
    /// Publish the event this many times.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Events per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Wait until each event is durable in the broker's log (fsync'd) before going on.
    #[arg(long)]
    pub confirm: bool,
}

#[derive(clap::Args, Debug)]
pub struct SubArgs {
    /// Filters: `a.b`, `a.*.c`, `a.>`, `>`, `re:<regex>`; an event matching several is
    /// printed once.
    #[arg(required = true)]
    pub filters: Vec<String>,
    /// Output: readable lines, or JSON Lines (`{"topic","offset","seq","time","payload"}`).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up after this long (e.g. `5s`); exit 1 if fewer events than `--count` came (or
    /// none, without `--count`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Replay stored events first, then go live: `beginning`, an offset (`1234`), an RFC 3339
    /// time (`2024-05-01T12:00:00Z`), a time ago (`-10m`, `-2h`), or `last` (the last event
    /// of each matching topic).
    #[arg(long, value_parser = parse_from, allow_hyphen_values = true)]
    pub from: Option<agora::ReplayFrom>,
    /// Use the durable subscription NAME: resume after its last acknowledged event (each
    /// event is acknowledged once printed). A new NAME starts at `--from` (default: now).
    #[arg(long, value_name = "NAME")]
    pub durable: Option<String>,
}

/// Parse `--from`.
fn parse_from(s: &str) -> Result<agora::ReplayFrom, String> {
    use agora::ReplayFrom;
    match s {
        "beginning" | "start" => return Ok(ReplayFrom::Beginning),
        "last" => return Ok(ReplayFrom::Last),
        "end" | "now" => return Ok(ReplayFrom::End),
        _ => {}
    }
    if let Ok(offset) = s.parse::<u64>() {
        return Ok(ReplayFrom::Offset(offset));
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago).map_err(|e| format!("bad duration `{ago}`: {e}"))?;
        let t = std::time::SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("`{s}` is before the epoch"))?;
        return Ok(ReplayFrom::Time(t));
    }
    humantime::parse_rfc3339_weak(s)
        .map(ReplayFrom::Time)
        .map_err(|_| {
            format!(
                "`{s}` is not `beginning`, `last`, an offset, an RFC 3339 time or `-<duration>`"
            )
        })
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Keep printing the stats the broker publishes every second.
    #[arg(long)]
    pub watch: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub async fn publish(broker: &str, args: PubArgs) -> anyhow::Result<Outcome> {
    agora::Topic::new(args.topic.as_str())?;
    let text = if args.json == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the event from stdin")?
    } else {
        args.json.clone()
    };
    let value = parse_event_json(&text)?;
    let payload = json_to_cbor(&value)?;
    if args.rate < 0.0 || !args.rate.is_finite() {
        bail!("--rate must be a positive number of events per second");
    }
    let client = connect(broker).await?;
    if args.count == 1 && !args.confirm {
        let (offset, seq) = client
            .publish_raw_acked(&args.topic, payload, ContentType::Cbor)
            .await?;
        eprintln!("published to {} at offset {offset} (seq {seq})", args.topic);
        return Ok(Outcome::Done);
    }
    // Ctrl-C stops the run: what went out is flushed and counted.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stopped = false;
    let start = Instant::now();
    let mut sent = 0;
    // The last confirmed event's (offset, seq).
    let mut last = None;
    while sent < args.count {
        if args.rate > 0.0 {
            // `--rate`: event `sent` is due at `start + sent / rate`.
            let due = start + Duration::from_secs_f64(sent as f64 / args.rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = &mut ctrl_c => { stopped = true; break; }
            }
        }
        let step = async {
            if args.confirm {
                let at = client
                    .publish_raw_confirmed(&args.topic, payload.clone(), ContentType::Cbor)
                    .await?;
                Ok::<_, agora::Error>(Some(at))
            } else {
                client
                    .publish_raw(&args.topic, payload.clone(), ContentType::Cbor)
                    .await?;
                Ok(None)
            }
        };
        tokio::pin!(step);
        let done = tokio::select! {
            r = &mut step => Some(r),
            _ = &mut ctrl_c => {
                stopped = true;
                // The event may be out already (a confirm waits for the fsync): a moment
                // to know whether it counts.
                tokio::time::timeout(Duration::from_secs(3), &mut step).await.ok()
            }
        };
        let Some(result) = done else { break };
        match result {
            Ok(at) => last = at.or(last),
            // Say how far it got before the error (the broker went away, say).
            Err(e) => {
                let gone = if args.confirm { "confirmed" } else { "sent" };
                eprintln!("{sent} of {} event(s) {gone} to {}", args.count, args.topic);
                return Err(e.into());
            }
        }
        sent += 1;
        if stopped {
            break;
        }
    }
    let stopped = if stopped {
        format!(" (stopped by Ctrl-C after {sent} of {})", args.count)
    } else {
        String::new()
    };
    if args.confirm {
        let last = last.map_or(String::new(), |(offset, seq)| {
            format!("; last at offset {offset} (seq {seq})")
        });
        eprintln!(
            "published {sent} confirmed event(s) to {}{last}{stopped}",
            args.topic
        );
        return Ok(Outcome::Done);
    }
    client
        .flush()
        .await
        .context("the broker refused an event")?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "published {sent} events to {} in {secs:.3}s ({:.0}/s){stopped}",
        args.topic,
        sent as f64 / secs.max(1e-9),
    );
    Ok(Outcome::Done)
}

pub async fn subscribe(broker: &str, args: SubArgs) -> anyhow::Result<Outcome> {
    // Check every filter before touching the network, so a typo is reported as such.
    for f in &args.filters {
        agora::Filter::new(f).with_context(|| format!("bad filter `{f}`"))?;
    }
    if let Some(name) = &args.durable {
        if !agora_wire::bus::valid_durable_name(name) {
            bail!("{}", agora::Error::DurableName(name.clone()));
        }
    }
    let client = connect(broker).await?;
    let filters: Vec<&str> = args.filters.iter().map(String::as_str).collect();
    let mut sub = match (&args.durable, args.from) {
        (Some(name), from) => {
            client
                .durable_raw_from(name, &filters, from.unwrap_or(agora::ReplayFrom::End))
                .await?
        }
        (None, Some(from)) => client.subscribe_raw_from_any(&filters, from).await?,
        (None, None) => client.subscribe_raw_any(&filters).await?,
    };
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            return Ok(Outcome::Done);
        }
        let item = match deadline {
            Some(d) => match tokio::time::timeout_at(d, sub.next()).await {
                Ok(item) => item,
                // Fewer than `--count`, or none at all without it.
                Err(_) if args.count.is_some() || seen == 0 => return Ok(Outcome::NothingMatched),
                Err(_) => return Ok(Outcome::Done),
            },
            None => sub.next().await,
        };
        match item {
            Some(Ok(ev)) => {
                let line = render(&ev, args.format);
                {
                    let mut out = stdout.lock();
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                if sub.durable_name().is_some() {
                    // Printed: done with it. A crash before this line prints it again.
                    sub.ack(ev.offset()).await?;
                }
                seen += 1;
            }
            Some(Err(e @ (Error::Gap { .. } | Error::Expired { .. }))) => {
                eprintln!("agora: warning: {e}")
            }
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the subscription ended"),
        }
    }
}

/// The payload as JSON, whatever the publisher encoded it as.
fn payload_json(ev: &RawEvent) -> serde_json::Value {
    let bytes = ev.payload();
    let as_bytes = || {
        let hex: String = bytes.iter().map(|x| format!("{x:02x}")).collect();
        serde_json::json!({ "$bytes": hex })
    };
    match ev.content_type() {
        ContentType::Cbor => cbor_to_json(bytes).unwrap_or_else(|e| {
            tracing::warn!("event at offset {} is not valid CBOR: {e}", ev.offset());
            as_bytes()
        }),
        ContentType::Json => serde_json::from_slice(bytes).unwrap_or_else(|_| as_bytes()),
        ContentType::Text => match std::str::from_utf8(bytes) {
            Ok(s) => serde_json::Value::String(s.to_string()),
            Err(_) => as_bytes(),
        },
        ContentType::Raw => as_bytes(),
    }
}

fn render(ev: &RawEvent, format: Format) -> String {
    let time = humantime::format_rfc3339_millis(ev.time()).to_string();
    let payload = payload_json(ev);
    // Events the broker makes itself (`$sys.stats`) are not in the log: no offset.
    let offset = (ev.offset() != agora::UNLOGGED_OFFSET).then(|| ev.offset());
    match format {
        Format::Json => serde_json::json!({
            "topic": ev.topic(),
            "offset": offset,
            "seq": ev.seq(),
            "time": time,
            "payload": payload,
        })
        .to_string(),
        Format::Text => {
            let at = offset.map(|o| format!(" @{o}")).unwrap_or_default();
            format!("{time} {} #{}{at} {payload}", ev.topic(), ev.seq())
        }
    }
}

pub async fn stats(broker: &str, args: StatsArgs) -> anyhow::Result<Outcome> {
    let client = connect(broker).await?;
    if !args.watch {
        let s = client.stats().await?;
        print_stats(&s, args.format)?;
        return Ok(Outcome::Done);
    }
    let mut sub = client
        .subscribe::<agora::Stats>(agora_wire::bus::STATS_TOPIC)
        .await?;
    while let Some(item) = sub.next().await {
        match item {
            Ok(ev) => print_stats(&ev.payload, args.format)?,
            Err(e @ Error::Gap { .. }) => eprintln!("agora: warning: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the stats subscription ended")
}

fn print_stats(s: &agora::Stats, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(s)?)?,
        Format::Text => {
            writeln!(
                out,
                "uptime {:.0}s  in {} ({:.0}/s)  out {}  rejected {}  dropped {}  subscriptions {}  requests {}",
                s.uptime_s, s.events_in, s.rate_in, s.events_out, s.rejected, s.dropped,
                s.subscriptions, s.requests
            )?;
            if !s.topics.is_empty() {
                writeln!(
                    out,
                    "{:<40} {:>12} {:>12} {:>10}",
                    "TOPIC", "EVENTS", "SEQ", "RATE/s"
                )?;
                for (name, t) in &s.topics {
                    writeln!(
                        out,
                        "{name:<40} {:>12} {:>12} {:>10.0}",
                        t.events, t.seq, t.rate
                    )?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
