//! The `agora` terminal tool against an in-process broker: `pub`, `sub` (JSON Lines, text,
//! `--count`, `--timeout`), `stats`, how the broker is named (`--broker`, `AGORA_BROKER`),
//! exit codes and a closed stdout pipe.
//!
//! Subscriptions race with publishes, so tests start `agora sub`, then publish warm-up
//! events until its first line appears (with a deadline), and never sleep to synchronise.

use std::process::{ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agora_testkit::{lines, ChildProcess, TestBroker};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(10);
/// How long to wait for the subscriber's first line after each warm-up publish.
const WARMUP_STEP: Duration = Duration::from_millis(100);

/// `agora` with a clean environment (no `AGORA_BROKER`, no `RUST_LOG`).
fn agora() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agora"));
    c.env_remove("AGORA_BROKER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Run `agora` to completion (with a deadline).
fn run(mut cmd: Command) -> Output {
    agora_testkit::run(&mut cmd, DEADLINE)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Start `agora sub` with `args` and its stdout piped.
fn spawn_sub(broker: &str, args: &[&str]) -> (ChildProcess, ChildStdout) {
    let mut child = ChildProcess::spawn(agora().args(["--broker", broker, "sub"]).args(args));
    let stdout = child.stdout.take().expect("piped");
    (child, stdout)
}

fn publish(broker: &str, topic: &str, json: &str) {
    let out = run({
        let mut c = agora();
        c.args(["--broker", broker, "pub", topic, json]);
        c
    });
    assert!(out.status.success(), "agora pub: {}", stderr_of(&out));
}

/// Publish `{"warmup": n}` on `topic` until the subscriber prints a line; return that line.
fn warm_up(broker: &str, topic: &str, rx: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + DEADLINE;
    for n in 0.. {
        assert!(Instant::now() < deadline, "the subscriber printed nothing");
        publish(broker, topic, &format!(r#"{{"warmup": {n}}}"#));
        if let Ok(line) = rx.recv_timeout(WARMUP_STEP) {
            return line;
        }
    }
    unreachable!("the loop only ends by returning or failing")
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(DEADLINE)
        .expect("a line within the deadline")
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Check the JSON Lines record shape; returns (topic, offset, seq, payload).
fn record(line: &str) -> (String, u64, u64, Value) {
    let v = parse(line);
    let obj = v.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["offset", "payload", "seq", "time", "topic"],
        "{line}"
    );
    let time = v["time"].as_str().expect("time is a string");
    assert!(
        time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "RFC 3339 UTC with milliseconds: {time}"
    );
    (
        v["topic"].as_str().expect("topic").to_string(),
        v["offset"].as_u64().expect("offset"),
        v["seq"].as_u64().expect("seq"),
        v["payload"].clone(),
    )
}

#[test]
fn pub_and_sub_json_lines_round_trip_the_payload() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    let (_sub, stdout) = spawn_sub(ep, &["cli.>", "--format", "json"]);
    let rx = lines(stdout, None);
    let first = warm_up(ep, "cli.warm", &rx);
    let (topic, _, seq, payload) = record(&first);
    assert_eq!(topic, "cli.warm");
    assert!(seq >= 1);
    assert!(payload["warmup"].is_u64());

    let doc = r#"{"a":[1,2.5,"x",null,true],"b":{"c":-3},"big":18446744073709551615}"#;
    publish(ep, "cli.data", doc);
    let out = run({
        let mut c = agora();
        c.args(["--broker", ep, "pub", "cli.many", "--count", "3", "7"]);
        c
    });
    assert!(out.status.success(), "{}", stderr_of(&out));

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (topic, offset, seq, payload) = record(&next_line(&rx));
        if topic != "cli.warm" {
            seen.push((topic, offset, seq, payload));
        }
    }
    assert_eq!(seen[0].0, "cli.data");
    assert_eq!(seen[0].2, 1);
    assert_eq!(seen[0].3, parse(doc), "payload equals the JSON published");
    for (i, (topic, offset, seq, payload)) in seen[1..].iter().enumerate() {
        assert_eq!(topic, "cli.many");
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(
            *offset,
            seen[0].1 + 1 + i as u64,
            "offsets follow each other"
        );
        assert_eq!(*payload, json!(7));
    }
}

#[test]
fn sub_count_exits_zero_after_n_events_and_text_is_the_default() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    let (sub, stdout) = spawn_sub(ep, &["cnt.*", "--count", "2"]);
    let rx = lines(stdout, None);
    let first = warm_up(ep, "cnt.a", &rx);
    assert!(
        first.contains(" cnt.a #") && first.contains(r#"{"warmup":"#),
        "text line: {first}"
    );
    // Publish until it has printed its two lines and exited by itself.
    let deadline = Instant::now() + DEADLINE;
    let mut sub = sub;
    while matches!(sub.try_wait(), Ok(None)) {
        assert!(Instant::now() < deadline, "sub --count 2 did not exit");
        publish(ep, "cnt.b", "1");
    }
    let out = sub.wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(rest.len(), 1, "exactly two lines in all: {first} {rest:?}");
}

#[test]
fn broker_flag_env_var_and_stats_json() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    publish(ep, "st.a", r#""hi""#);

    // AGORA_BROKER names the broker.
    let out = run({
        let mut c = agora();
        c.env("AGORA_BROKER", ep)
            .args(["stats", "--format", "json"]);
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    let stats = parse(text.trim());
    assert_eq!(stats["events_in"], json!(1));
    assert_eq!(stats["topics"]["st.a"]["seq"], json!(1));
    for key in [
        "uptime_s",
        "events_out",
        "rejected",
        "dropped",
        "subscriptions",
        "requests",
    ] {
        assert!(stats.get(key).is_some(), "stats has {key}: {stats}");
    }

    // --broker wins over AGORA_BROKER (which names nothing usable here).
    let out = run({
        let mut c = agora();
        c.env("AGORA_BROKER", "udp://nowhere")
            .args(["--broker", ep, "stats"]);
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.contains("st.a"), "text stats name the topic: {text}");
}

#[test]
fn ctrl_c_stops_pub_count_and_says_how_many_went_out() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    let (_sub, stdout) = spawn_sub(ep, &["ct.>", "--format", "json"]);
    let rx = lines(stdout, None);
    for confirm in [false, true] {
        let topic = format!("ct.{confirm}");
        let mut publisher = ChildProcess::spawn(
            agora()
                .args(["--broker", ep, "pub", &topic, "1", "--count", "100000"])
                .args(["--rate", "50"])
                .args(confirm.then_some("--confirm")),
        );
        // Two events out (so its Ctrl-C handler is in place, and with --confirm the first is
        // confirmed): stop it. The previous round's last events may come first.
        for _ in 0..2 {
            while record(&next_line(&rx)).0 != topic {}
        }
        publisher.signal(libc::SIGINT);
        let out = publisher.wait_output(DEADLINE);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let sent: u64 = stderr
            .split("stopped by Ctrl-C after ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("says how many went out: {stderr}"));
        assert!((1..100000).contains(&sent), "{stderr}");
        // All of them reached the broker before the process ended.
        let stats = run({
            let mut c = agora();
            c.args(["--broker", ep, "stats", "--format", "json"]);
            c
        });
        let stats = parse(String::from_utf8_lossy(&stats.stdout).trim());
        assert_eq!(stats["topics"][&topic]["seq"], json!(sent), "{stderr}");
    }
}

#[test]
fn sub_timeout_with_nothing_exits_one() {
    let broker = TestBroker::start();
    let out = run({
        let mut c = agora();
        c.args([
            "--broker",
            &broker.endpoint(),
            "sub",
            "quiet.>",
            "--timeout",
            "300ms",
        ]);
        c
    });
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn sub_timeout_after_some_events_exits_zero_but_one_short_of_count() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    publish(ep, "tq.a", "1");
    publish(ep, "tq.a", "2");
    let sub = |extra: &[&str]| {
        run({
            let mut c = agora();
            c.args(["--broker", ep, "sub", "tq.>", "--from", "beginning"])
                .args(["--timeout", "500ms"])
                .args(extra);
            c
        })
    };
    // Without `--count` a timeout ends the watch: events came, so exit 0.
    let out = sub(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // With `--count 3`, two are fewer than asked for: exit 1, after printing them.
    let out = sub(&["--count", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn broker_events_have_no_offset() {
    // `$sys.stats` is made by the broker each second and not logged: no offset to show.
    let broker = TestBroker::start();
    let sub = |format: &str| {
        let out = run({
            let mut c = agora();
            c.args(["--broker", &broker.endpoint(), "sub", "$sys.stats"])
                .args(["--count", "1", "--format", format]);
            c
        });
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let json = parse(sub("json").trim_end());
    assert_eq!(json["topic"], "$sys.stats");
    assert_eq!(json["offset"], Value::Null, "{json}");
    assert!(json["seq"].as_u64().is_some(), "{json}");
    let text = sub("text");
    assert!(text.contains(" $sys.stats #"), "{text}");
    assert!(!text.contains('@'), "no offset in the text line: {text}");
}

#[test]
fn a_broker_address_that_is_not_one_says_why() {
    let broker = TestBroker::start();
    let space = broker
        .broker()
        .space_endpoint()
        .expect("a space")
        .to_string();
    let cases = [
        (
            "127.0.0.1:7400",
            "needs a transport, as in tcp://127.0.0.1:7400",
        ),
        (space.as_str(), "not an Agora broker's request endpoint"),
    ];
    for (endpoint, needle) in cases {
        let out = run({
            let mut c = agora();
            c.args(["--broker", endpoint, "stats"]);
            c
        });
        assert_error_exit(&out, needle);
    }
}

/// Exit code 2 and exactly one line on stderr: `agora: error: ...`.
fn assert_error_exit(out: &Output, needle: &str) {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("agora: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "`{needle}` in: {stderr}");
}

#[test]
fn bad_input_exits_two_with_one_line() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    let cases: [(&[&str], &str); 5] = [
        (&["pub", "a.b", "{nope"], "JSON"),
        (&["pub", "a..b", "1"], "a..b"),
        (&["pub", "$sys.fake", "1"], "$sys.fake"),
        (&["sub", "a.>.b"], "a.>.b"),
        (&["pub", "a.b", "1", "--rate=-1"], "rate"),
    ];
    for (args, needle) in cases {
        let out = run({
            let mut c = agora();
            c.args(["--broker", ep]).args(args);
            c
        });
        assert_error_exit(&out, needle);
    }
    let out = run({
        let mut c = agora();
        c.args(["--broker", "udp://x", "stats"]);
        c
    });
    assert_error_exit(&out, "udp://x");
}

#[test]
fn invalid_regex_error_is_one_line() {
    // The regex crate's syntax errors span several lines (pattern, caret, message); the
    // CLI promises a one-line error.
    let out = run({
        let mut c = agora();
        c.args(["--broker", "tcp://127.0.0.1:1", "sub", "re:("]);
        c
    });
    assert_error_exit(&out, "re:(");
}

#[test]
fn unreachable_broker_exits_two() {
    // Nothing listens on port 1; the client gives up after its connect timeout.
    let out = run({
        let mut c = agora();
        c.args([
            "--broker",
            "tcp://127.0.0.1:1",
            "--connect-timeout",
            "300ms",
            "stats",
        ]);
        c
    });
    assert_error_exit(&out, "tcp://127.0.0.1:1");
}

#[test]
fn closed_stdout_pipe_exits_zero_quietly() {
    let broker = TestBroker::start();
    let ep = &broker.endpoint();
    let (sub, stdout) = spawn_sub(ep, &["pipe.>"]);
    // The reader closes the pipe after the first line, like `agora sub ... | head -1`.
    let rx = lines(stdout, Some(1));
    warm_up(ep, "pipe.t", &rx);
    let deadline = Instant::now() + DEADLINE;
    let mut sub = sub;
    while matches!(sub.try_wait(), Ok(None)) {
        assert!(
            Instant::now() < deadline,
            "sub kept running on a closed pipe"
        );
        publish(ep, "pipe.t", "1");
    }
    let out = sub.wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "quiet: {}", stderr_of(&out));
}
