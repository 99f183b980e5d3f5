//! `agora space ...` end to end against an in-process broker: out, in, rd, inp, rdp, count,
//! dump (text and JSON Lines), parse errors with a caret (exit 2), nothing found or timed
//! out (exit 1), and a taker process killed mid-wait that loses nothing.
//!
//! Blocked takers are observed through the broker's own store (`waiter_count`), never by
//! sleeping.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agora_testkit::{wait_until_blocking, ChildProcess, TestBroker};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

/// Poll until the broker's space has `n` blocked waiters.
fn await_waiters(b: &TestBroker, n: usize) {
    assert!(
        wait_until_blocking(DEADLINE, || b.space_waiters() == n),
        "expected {n} waiter(s)"
    );
}

/// `agora --broker <ep> space <args...>` with a clean environment.
fn space(broker: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agora"));
    c.env_remove("AGORA_BROKER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .arg("--broker")
        .arg(broker)
        .arg("space")
        .args(args);
    c
}

/// Run to completion (with a deadline) and collect the output.
fn run(broker: &str, args: &[&str]) -> Output {
    agora_testkit::run(&mut space(broker, args), DEADLINE)
}

/// `agora space in <template>` in the background, returned once the broker holds its
/// waiter (the space must have no other).
fn blocked_in(b: &TestBroker, template: &str) -> ChildProcess {
    let taker = ChildProcess::spawn(&mut space(&b.endpoint(), &["in", template]));
    await_waiters(b, 1);
    taker
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(broker: &str, args: &[&str]) -> String {
    let o = run(broker, args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn out_then_rd_count_dump_in() {
    let b = TestBroker::start();
    let ep = &b.endpoint();
    ok(ep, &["out", r#"("job", 42, 3.5, "x", true, null, [1, 2])"#]);
    ok(ep, &["out", r#"("job", 43, 0.5, "y", false, null, [])"#]);
    ok(ep, &["out", r#"("other", h'00ff')"#]);

    let rd = ok(ep, &["rd", r#"("job", ?int, _, _, _, _, _)"#]);
    assert_eq!(rd, "(\"job\", 42, 3.5, \"x\", true, null, [1, 2])\n");
    assert_eq!(ok(ep, &["count", r#"("job", _, _, _, _, _, _)"#]), "2\n");
    assert_eq!(ok(ep, &["count", r#"("nothing")"#]), "0\n");

    let dump = ok(ep, &["dump"]);
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(
        lines,
        vec![
            r#"("job", 42, 3.5, "x", true, null, [1, 2])"#,
            r#"("job", 43, 0.5, "y", false, null, [])"#,
            r#"("other", h'00ff')"#,
        ]
    );
    let json_lines = ok(
        ep,
        &["dump", r#"("job", _, _, _, _, _, _)"#, "--format", "json"],
    );
    let parsed: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
        .collect();
    assert_eq!(
        parsed,
        vec![
            json!(["job", 42, 3.5, "x", true, null, [1, 2]]),
            json!(["job", 43, 0.5, "y", false, null, []]),
        ]
    );
    let other = ok(ep, &["--format", "json", "rdp", r#"("other", ?bytes)"#]);
    assert_eq!(
        serde_json::from_str::<Value>(&other).unwrap(),
        json!(["other", {"$bytes": "00ff"}])
    );

    // in takes the oldest match; inp the next; then nothing is left.
    let t = ok(
        ep,
        &["in", r#"("job", ?int, _, _, _, _, _)"#, "--timeout", "5s"],
    );
    assert!(t.starts_with(r#"("job", 42,"#), "{t}");
    let t = ok(ep, &["inp", r#"("job", ?int, _, _, _, _, _)"#]);
    assert!(t.starts_with(r#"("job", 43,"#), "{t}");
    let o = run(ep, &["inp", r#"("job", ?int, _, _, _, _, _)"#]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let o = run(ep, &["rdp", r#"("job", _, _, _, _, _, _)"#]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(ok(ep, &["dump", r#"("job", _, _, _, _, _, _)"#]), "");
}

#[test]
fn parse_errors_point_at_the_column_and_exit_2() {
    // Parsed before connecting: no broker needed (port 1 is never a broker).
    let ep = "tcp://127.0.0.1:1";
    let input = r#"("job", ?integer)"#;
    let o = run(ep, &["in", input]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == input)
        .unwrap_or_else(|| panic!("input line echoed: {err}"));
    let caret = lines.get(at + 1).expect("a caret line");
    // `?integer` starts at byte 8: the caret sits under it.
    assert_eq!(caret.find('^'), Some(8), "{err}");
    assert!(caret.contains("?integer"), "{err}");

    let input = r#"("job", 4x)"#;
    let o = run(ep, &["out", input]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("does not parse"), "{err}");
    assert!(err.lines().any(|l| l == input), "{err}");
    assert!(
        err.lines().any(|l| l.trim_start().starts_with('^')),
        "{err}"
    );

    // A template's syntax is not a tuple's.
    let o = run(ep, &["out", r#"("job", ?int)"#]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains('^'));
}

#[test]
fn in_times_out_with_exit_1_and_leaves_no_waiter() {
    let b = TestBroker::start();
    let started = Instant::now();
    let o = run(
        &b.endpoint(),
        &["in", r#"("none", _)"#, "--timeout", "200ms"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(stdout(&o), "");
    await_waiters(&b, 0);
    let o = run(
        &b.endpoint(),
        &["rd", r#"("none", _)"#, "--timeout", "100ms"],
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_blocked_in_is_woken_by_an_out() {
    let b = TestBroker::start();
    let ep = &b.endpoint();
    let taker = ChildProcess::spawn(&mut space(
        ep,
        &["in", r#"("wake", ?int)"#, "--format", "json"],
    ));
    await_waiters(&b, 1);
    ok(ep, &["out", r#"("wake", 5)"#]);
    let o = taker.wait_output(DEADLINE);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap(),
        json!(["wake", 5])
    );
    assert_eq!(ok(ep, &["count", r#"("wake", _)"#]), "0\n");
}

#[test]
fn a_taker_killed_mid_wait_loses_nothing() {
    // A short reservation lease: a tuple handed to the dead taker comes back within 1 s.
    let b = TestBroker::start_with(|c| c.reservation_lease = Duration::from_secs(1));
    let ep = &b.endpoint();
    let mut victim = blocked_in(&b, r#"("job", ?int)"#);
    // SIGKILL: no chance to cancel anything.
    victim.kill().expect("kill");
    victim.wait().expect("reap");
    ok(ep, &["out", r#"("job", 1)"#]);
    // Whether the server dropped the dead waiter first or handed it the tuple (which then
    // comes back when the reservation lease ends), a fresh taker gets it.
    let got = ok(ep, &["in", r#"("job", ?int)"#, "--timeout", "15s"]);
    assert_eq!(got, "(\"job\", 1)\n");
    let mut rest = String::new();
    if let Some(mut s) = victim.stdout.take() {
        s.read_to_string(&mut rest).expect("read");
    }
    assert_eq!(rest, "", "the killed taker printed nothing");
    assert_eq!(ok(ep, &["count", r#"("job", _)"#]), "0\n");
}

/// Send `signal` to a blocked `agora space in`: it exits with `code`, its request withdrawn
/// from the server before the process ends.
fn signal_withdraws_a_blocked_in(signal: libc::c_int, code: i32) {
    let b = TestBroker::start();
    let ep = &b.endpoint();
    let mut taker = blocked_in(&b, r#"("never", _)"#);
    taker.signal(signal);
    let out = taker.wait_output(DEADLINE);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "nothing taken");
    // Gone from the server already (it would otherwise stay until it missed its
    // heartbeats, 5 s, and could take the tuple below meanwhile).
    assert_eq!(
        b.space_waiters(),
        0,
        "the blocked in was cancelled before the process exited"
    );
    ok(ep, &["out", r#"("never", 1)"#]);
    assert_eq!(ok(ep, &["inp", r#"("never", _)"#]), "(\"never\", 1)\n");
}

#[test]
fn ctrl_c_on_a_blocked_in_withdraws_it_before_exiting() {
    // Ctrl-C is a clean exit.
    signal_withdraws_a_blocked_in(libc::SIGINT, 0);
}

#[test]
fn sigterm_on_a_blocked_in_withdraws_it_before_exiting() {
    // `timeout agora space in ...` and service managers stop a process with SIGTERM; it
    // exits as a SIGTERM would have it, 128 + 15.
    signal_withdraws_a_blocked_in(libc::SIGTERM, 143);
}

#[test]
fn a_take_is_final_when_the_process_exits() {
    let b = TestBroker::start();
    let ep = &b.endpoint();
    let store = b.broker().space().expect("space").store().clone();
    for i in 0..5 {
        for take in ["in", "inp"] {
            ok(ep, &["out", &format!("(\"r\", {i})")]);
            assert_eq!(ok(ep, &[take, r#"("r", ?int)"#]), format!("(\"r\", {i})\n"));
            // Confirmed before the process ended: no reservation left to run out and put
            // the tuple back (taken twice).
            assert_eq!(store.reservation_count(), 0, "{take} round {i}");
            assert_eq!(store.len(), 0, "{take} round {i}");
        }
    }
}

#[test]
fn out_with_a_lease_expires() {
    let b = TestBroker::start();
    let ep = &b.endpoint();
    ok(ep, &["out", r#"("tmp", 1)"#, "--lease", "50ms"]);
    ok(ep, &["out", r#"("tmp", 2)"#]);
    assert!(
        wait_until_blocking(DEADLINE, || ok(ep, &["count", r#"("tmp", _)"#]) == "1\n"),
        "leased tuple never expired"
    );
    assert_eq!(ok(ep, &["dump"]), "(\"tmp\", 2)\n");
    // A lease that would expire the tuple at once is refused, not silently obeyed.
    for lease in ["0s", "500us"] {
        let o = run(ep, &["out", r#"("tmp", 3)"#, "--lease", lease]);
        assert_eq!(o.status.code(), Some(2), "{lease}");
        assert!(
            stderr(&o).contains("expire the tuple at once"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(ok(ep, &["count", r#"("tmp", _)"#]), "1\n");
}
