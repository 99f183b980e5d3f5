//! # space_notify: the tuple space's events, observed on the bus
//!
//! The broker publishes what happens in its tuple space as events: `$space.out` when a
//! tuple is written, `$space.take` when one is taken, `$space.expire` when a tuple's lease
//! runs out. The payload is the tuple. Any bus subscriber can watch the space without
//! touching it (a `rd` would have to guess what to look for; a take would change it), and
//! JavaSpaces' `notify(template)` is just a subscription plus a template match.
//!
//! Here a watcher prints every space event of this run, a `notify` on "orders of 100 or
//! more" prints only those, and the program writes orders, takes them, and writes an
//! offer with a 100 ms lease that expires.
//!
//! Topics starting with `$` only match filters that name `$` explicitly, so `>` never
//! delivers space events by accident; and the broker produces them only while somebody
//! subscribes to `$space.`.
//!
//! Lecture concepts: event-based communication (publish/subscribe on top of the shared
//! space), JavaSpaces `notify`, leases (time-bounded persistence).
//!
//! Run: `cargo run --example space_notify`. It starts an embedded broker unless
//! `AGORA_BROKER` names one.

use std::time::Duration;

use agora::{template, Client, Event, Subscription, Template, Tuple, Value};
use anyhow::Context;
use futures_util::StreamExt;

/// How long to wait for an expected event before the example reports a failure.
const WAIT: Duration = Duration::from_secs(10);

/// What the watchers saw: `(kind, tuple)` with kind `out`, `take` or `expire`.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every space event of this run, in order.
    pub all: Vec<(String, Tuple)>,
    /// The events whose tuple matched the notify template.
    pub notified: Vec<(String, Tuple)>,
}

/// JavaSpaces-style `notify`: the space's events for the tuples a filter accepts, as
/// `(kind, tuple)`. A subscription to `$space.>`, filtered on this side.
pub struct Notify {
    events: Subscription<Tuple>,
    accept: Box<dyn Fn(&Tuple) -> bool + Send>,
}

impl Notify {
    /// Watch for tuples that match `template`. Events from before this call are not seen
    /// (the bus is transient for live subscribers).
    pub async fn new(client: &Client, template: Template) -> agora::Result<Notify> {
        Notify::filtered(client, move |t| template.matches(t)).await
    }

    /// Watch for tuples `accept` says yes to (any arity, any shape).
    pub async fn filtered(
        client: &Client,
        accept: impl Fn(&Tuple) -> bool + Send + 'static,
    ) -> agora::Result<Notify> {
        Ok(Notify {
            events: client.subscribe::<Tuple>("$space.>").await?,
            accept: Box::new(accept),
        })
    }

    /// The next accepted event: `(kind, tuple)`, or `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<agora::Result<(String, Tuple)>> {
        loop {
            match self.events.next().await? {
                Ok(Event { topic, payload, .. }) => {
                    if (self.accept)(&payload) {
                        let kind = topic.trim_start_matches("$space.").to_string();
                        return Some(Ok((kind, payload)));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Collect events from `notify` until `done` says the last expected one came.
async fn watch(
    mut notify: Notify,
    name: &'static str,
    done: impl Fn(&str, &Tuple) -> bool,
) -> anyhow::Result<Vec<(String, Tuple)>> {
    let mut seen = Vec::new();
    loop {
        let (kind, tuple) = tokio::time::timeout(WAIT, notify.next())
            .await
            .with_context(|| format!("{name}: an expected event did not come"))?
            .context("the event stream ended")??;
        println!("  {name}: {kind:<6} {tuple}");
        let last = done(&kind, &tuple);
        seen.push((kind, tuple));
        if last {
            return Ok(seen);
        }
    }
}

/// Run the demo.
pub async fn run(endpoint: &str) -> anyhow::Result<Outcome> {
    let run = agora_examples::run_id();
    let client = Client::connect(endpoint).await?;

    // Subscribe first: events are produced from the moment somebody listens. The watcher
    // takes every tuple of this run (its second field is the run id), whatever its arity.
    let mine = Value::from(run.as_str());
    let watcher = Notify::filtered(&client, move |t| t.get(1) == Some(&mine)).await?;
    let big_orders = Notify::new(
        &client,
        template!("order", run.as_str(), ?str, range(100..)),
    )
    .await?;
    let offer = Value::from("offer");
    let watcher = tokio::spawn(watch(watcher, "watcher", move |kind, t| {
        kind == "expire" && t.get(0) == Some(&offer)
    }));
    let notify = tokio::spawn(watch(big_orders, "notify(order >= 100)", |kind, _| {
        kind == "take"
    }));

    let space = client.space()?;
    println!("== writing, taking, leasing");
    space.out(&("order", &run, "tea", 5)).await?;
    space.out(&("order", &run, "piano", 2500)).await?;
    space
        .take_timeout(&template!("order", run.as_str(), "tea", _), WAIT)
        .await?
        .context("the tea order is gone")?;
    space
        .take_timeout(&template!("order", run.as_str(), "piano", _), WAIT)
        .await?
        .context("the piano order is gone")?;
    space
        .out_with_lease(&("offer", &run, "discount", 10), Duration::from_millis(100))
        .await?;
    println!("  (the offer's 100 ms lease runs out)");

    let all = watcher.await??;
    let notified = notify.await??;
    Ok(Outcome { all, notified })
}

#[allow(dead_code)] // the integration test includes this file for `run`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (endpoint, _broker) = agora_examples::broker_or_embedded();
    let out = run(&endpoint).await?;
    println!(
        "the watcher saw {} event(s), the notify {}",
        out.all.len(),
        out.notified.len()
    );
    Ok(())
}
