//! # sensor_dashboard: typed events, wildcard and regex subscribers, a durable catch-up
//!
//! Sensors publish typed readings (a serde struct, CBOR on the wire) on
//! `sensors.<room>.<kind>`. Subscribers say what they want with filters, never who from:
//!
//! * `sensors.*.temp`: every room's temperature (`*` is one token);
//! * `sensors.kitchen.>`: everything from the kitchen (`>` is one or more tokens);
//! * `re:^sensors\.(kitchen|hall)\.humidity$`: a regex filter;
//! * a **durable** dashboard on `sensors.>`: the broker keeps its cursor. The dashboard reads
//!   the first round and acknowledges it, then goes offline; the sensors go on publishing;
//!   when the dashboard comes back under the same name it first receives exactly what it
//!   missed, from the broker's log, then live events.
//!
//! One sensor sends a reading that is not a `Reading`: typed subscribers get an error item
//! naming its topic and offset, and their streams go on.
//!
//! Lecture concepts: event-based communication (publish/subscribe, content by topic),
//! spatial decoupling (publishers and subscribers never know each other), temporal
//! decoupling and transient vs persistent communication (live subscribers see only what
//! happens while they listen; the durable one gets what it missed).
//!
//! Run: `cargo run --example sensor_dashboard`. It starts an embedded broker unless
//! `AGORA_BROKER` names one.

use std::time::Duration;

use agora::{Client, Error, Filter, Subscription};
use anyhow::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// How long to wait for an expected event before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// A sensor reading.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reading {
    /// The run that published it (runs sharing one broker ignore each other's readings).
    pub run: String,
    /// The publishing round (1, 2, 3).
    pub round: u32,
    /// The measured value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// What a subscriber received: `Ok((topic, round))` for a reading, `Err(topic)` for an
/// event that did not decode as a [`Reading`].
pub type Received = Result<(String, u32), String>;

/// What every subscriber received.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `sensors.*.temp`.
    pub temps: Vec<Received>,
    /// `sensors.kitchen.>`.
    pub kitchen: Vec<Received>,
    /// `re:^sensors\.(kitchen|hall)\.humidity$`.
    pub humidity: Vec<Received>,
    /// The durable dashboard before it went offline.
    pub dashboard_first: Vec<Received>,
    /// The durable dashboard after it came back: the missed events, then live ones.
    pub dashboard_again: Vec<Received>,
}

const ROOMS: [&str; 3] = ["kitchen", "hall", "bedroom"];
const KINDS: [(&str, &str); 2] = [("temp", "°C"), ("humidity", "%")];
const TEMPS: &str = "sensors.*.temp";
const KITCHEN: &str = "sensors.kitchen.>";
const HUMIDITY: &str = r"re:^sensors\.(kitchen|hall)\.humidity$";
const ALL: &str = "sensors.>";
/// The topic of the event that is not a `Reading`.
const BROKEN: &str = "sensors.attic.temp";

/// The topics of one round: one reading per room and kind.
fn round_topics() -> Vec<String> {
    let mut topics = Vec::new();
    for room in ROOMS {
        for (kind, _) in KINDS {
            topics.push(format!("sensors.{room}.{kind}"));
        }
    }
    topics
}

/// Publish one reading per room and kind; returns how many.
async fn publish_round(client: &Client, run: &str, round: u32) -> anyhow::Result<usize> {
    let mut n = 0;
    for (r, room) in ROOMS.iter().enumerate() {
        for (kind, unit) in KINDS {
            let topic = format!("sensors.{room}.{kind}");
            let value = 20.0 + f64::from(round) + r as f64 / 2.0;
            let reading = Reading {
                run: run.to_string(),
                round,
                value,
                unit: unit.to_string(),
            };
            client.publish(&topic, &reading).await?;
            n += 1;
        }
    }
    client.flush().await?;
    println!("sensors: round {round} published ({n} readings)");
    Ok(n)
}

/// Read `count` items of this run from `sub`, printing them as `name`; acknowledges each
/// (durable subscriptions only).
async fn collect(
    sub: &mut Subscription<Reading>,
    run: &str,
    name: &str,
    count: usize,
) -> anyhow::Result<Vec<Received>> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let item = tokio::time::timeout(WAIT, sub.next())
            .await
            .with_context(|| format!("{name}: expected {count} events, got {}", got.len()))?
            .context("the subscription ended")?;
        let offset = match item {
            Ok(ev) if ev.payload.run == run => {
                let r = &ev.payload;
                println!(
                    "  {name:<10} {:<24} round {} {:.1}{}",
                    ev.topic, r.round, r.value, r.unit
                );
                got.push(Ok((ev.topic, r.round)));
                ev.offset
            }
            Ok(ev) => ev.offset, // another run's reading
            Err(Error::Decode {
                topic,
                offset,
                message,
            }) => {
                println!("  {name:<10} {topic:<24} not a Reading ({message}); going on");
                got.push(Err(topic));
                offset
            }
            Err(e) => return Err(e.into()),
        };
        if sub.durable_name().is_some() {
            sub.ack(offset).await?;
        }
    }
    Ok(got)
}

/// How many of `topics` match `filter`.
fn matching(filter: &str, topics: &[String]) -> anyhow::Result<usize> {
    let f = Filter::new(filter)?;
    Ok(topics.iter().filter(|t| f.matches(t)).count())
}

/// Start a live subscriber on `filter` that prints and collects as events arrive, until it
/// has the ones of `plan` (the topics this run will publish) that its filter matches.
async fn live(
    client: &Client,
    run: &str,
    name: &'static str,
    filter: &str,
    plan: &[String],
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Vec<Received>>>> {
    let mut sub = client.subscribe::<Reading>(filter).await?;
    let expected = matching(filter, plan)?;
    let run = run.to_string();
    Ok(tokio::spawn(async move {
        collect(&mut sub, &run, name, expected).await
    }))
}

/// Run the demo.
pub async fn run(endpoint: &str) -> anyhow::Result<Outcome> {
    let run = agora_examples::run_id();
    let dashboard_name = format!("dashboard-{run}");
    let last = "sensors.hall.temp";
    // Everything the sensors will publish: two rounds, a broken reading, one more.
    let mut plan = round_topics();
    plan.extend(round_topics());
    plan.extend([BROKEN.to_string(), last.to_string()]);

    let sensors = Client::connect(endpoint).await?;
    let listener = Client::connect(endpoint).await?;
    let temps = live(&listener, &run, "temps", TEMPS, &plan).await?;
    let kitchen = live(&listener, &run, "kitchen", KITCHEN, &plan).await?;
    let humidity = live(&listener, &run, "humidity", HUMIDITY, &plan).await?;

    // The dashboard: a durable subscription, online for round 1.
    let dashboard = Client::connect(endpoint).await?;
    let mut board = dashboard.durable::<Reading>(&dashboard_name, ALL).await?;
    let n = publish_round(&sensors, &run, 1).await?;
    let dashboard_first = collect(&mut board, &run, "dashboard", n).await?;
    println!("dashboard: acknowledged round 1 and goes offline");
    drop(board);
    drop(dashboard);

    // Round 2 while the dashboard is away.
    let missed = publish_round(&sensors, &run, 2).await?;

    // The dashboard comes back under the same name: round 2 from the log, then live.
    let dashboard = Client::connect(endpoint).await?;
    let mut board = dashboard.durable::<Reading>(&dashboard_name, ALL).await?;
    println!("dashboard: back online; catching up");
    let mut dashboard_again = collect(&mut board, &run, "dashboard", missed).await?;

    // Round 3, live for everyone: a broken sensor, then one more reading.
    sensors.publish(BROKEN, "not a reading").await?;
    let reading = Reading {
        run: run.clone(),
        round: 3,
        value: 19.5,
        unit: "°C".into(),
    };
    sensors.publish(last, &reading).await?;
    sensors.flush().await?;
    dashboard_again.extend(collect(&mut board, &run, "dashboard", 2).await?);
    dashboard.delete_durable(&dashboard_name).await?;

    let outcome = Outcome {
        temps: temps.await??,
        kitchen: kitchen.await??,
        humidity: humidity.await??,
        dashboard_first,
        dashboard_again,
    };
    println!(
        "temps {} / kitchen {} / humidity {} events; dashboard {} before and {} after its break",
        outcome.temps.len(),
        outcome.kitchen.len(),
        outcome.humidity.len(),
        outcome.dashboard_first.len(),
        outcome.dashboard_again.len()
    );
    Ok(outcome)
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    run(&endpoint).await?;
    Ok(())
}
