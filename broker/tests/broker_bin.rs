//! The `agora-broker` binary as a user runs it: the ready line, serving, clean exit on
//! SIGTERM/SIGINT, and exit code 2 with a message for bad flags.

use std::path::Path;
use std::process::{Command, Stdio};

use agora_testkit::BrokerProcess;

const AGORA_BROKER: &str = env!("CARGO_BIN_EXE_agora-broker");

/// Start the broker on an ephemeral loopback port with `flags`, and wait for its ready line.
fn start(data: &Path, flags: &[&str]) -> BrokerProcess {
    BrokerProcess::start(AGORA_BROKER, "tcp://127.0.0.1:*", data, flags)
}

/// HELLO over a raw DEALER: the reply header and the CBOR body's `version`; returns the body.
fn hello(endpoint: &str) -> ciborium::value::Value {
    let ctx = zmq::Context::new();
    let d = ctx.socket(zmq::DEALER).expect("socket");
    d.set_rcvtimeo(5000).expect("rcvtimeo");
    d.set_linger(0).expect("linger");
    d.connect(endpoint).expect("connect");
    // version 1, op HELLO (0x02), flags 0, content type 0, request id 42 (u64 LE)
    let req = [1u8, 0x02, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0];
    d.send(&req[..], 0).expect("send");
    let reply = d.recv_multipart(0).expect("a HELLO reply");
    assert_eq!(reply.len(), 2, "header + CBOR body");
    assert_eq!(reply[0], [1u8, 0x80, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0]);
    let body: ciborium::value::Value = ciborium::from_reader(&reply[1][..]).expect("CBOR body");
    let version = body
        .as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_text() == Some("version"))
                .map(|(_, v)| v.clone())
        })
        .and_then(|v| v.as_integer())
        .map(i128::from);
    assert_eq!(version, Some(1));
    body
}

/// A text field of a HELLO body.
fn hello_text(body: &ciborium::value::Value, key: &str) -> String {
    body.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(key)))
        .and_then(|(_, v)| v.as_text())
        .unwrap_or_else(|| panic!("HELLO has a text `{key}`: {body:?}"))
        .to_string()
}

#[test]
fn endpoint_flags_put_each_socket_where_they_say() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Free ports, found by binding and letting go.
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("tcp://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let (events, space, replay) = (free(), free(), free());
    let mut broker = start(
        &dir.path().join("data"),
        &["--events", &events, "--space", &space, "--replay", &replay],
    );
    let body = hello(broker.endpoint());
    assert_eq!(hello_text(&body, "events"), events);
    assert_eq!(hello_text(&body, "space"), space);
    assert_eq!(hello_text(&body, "replay"), replay);
    for ep in [&events, &space, &replay] {
        let addr = ep.strip_prefix("tcp://").expect("tcp");
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{ep} is served: {e}"));
    }
    broker.terminate();
    assert!(broker.wait_exit().success());
}

fn serves_then_exits_cleanly_on(sig: libc::c_int) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut broker = start(&data, &[]);
    assert!(data.is_dir(), "the data dir is created");
    hello(broker.endpoint());
    broker.signal(sig);
    let status = broker.wait_exit();
    assert!(
        status.success(),
        "exit status after signal {sig}: {status:?}"
    );
}

#[test]
fn sigterm_exits_zero() {
    serves_then_exits_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_exits_zero() {
    serves_then_exits_cleanly_on(libc::SIGINT);
}

/// Run the broker with `args` and expect exit code 2 and an error on stderr.
fn fails_with_usage(args: &[&str], data: &Path) -> String {
    let out = Command::new(AGORA_BROKER)
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run agora-broker");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "no ready line on failure");
    assert!(!stderr.trim().is_empty(), "a message on stderr");
    stderr
}

#[test]
fn bad_flags_exit_two_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = fails_with_usage(&["--listen", "udp://x"], dir.path());
    assert!(stderr.contains("agora-broker: error:"), "{stderr}");
    assert!(stderr.contains("udp://x"), "names the endpoint: {stderr}");
    fails_with_usage(&["--no-such-flag"], dir.path());
    fails_with_usage(&["--max-payload", "lots"], dir.path());
    fails_with_usage(&["--slow-consumer-timeout", "soon"], dir.path());
    let stderr = fails_with_usage(
        &["--listen", "tcp://127.0.0.1:*", "--replay", "udp://y"],
        dir.path(),
    );
    assert!(stderr.contains("udp://y"), "names the endpoint: {stderr}");
    // A file where the data dir should be.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let stderr = fails_with_usage(&["--listen", "tcp://127.0.0.1:*"], &file);
    assert!(stderr.contains("is not a directory"), "{stderr}");
    // Values a broker cannot keep its promises with (each was once taken silently).
    for (flag, value, says) in [
        ("--events-hwm", "0", "--events-hwm"),
        ("--max-payload", "0", "--max-payload"),
        ("--max-payload", "40000000", "what the event log can store"),
        ("--segment-bytes", "10", "--segment-bytes"),
        ("--retention-bytes", "0", "--retention-bytes"),
        ("--space-spin", "100s", "--space-spin"),
    ] {
        let stderr = fails_with_usage(&["--listen", "tcp://127.0.0.1:*", flag, value], dir.path());
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_closed_stderr_does_not_stop_the_broker() {
    // A log shipper that goes away closes the broker's stderr: every log line then fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = BrokerProcess::start_logging_to(
        AGORA_BROKER,
        "tcp://127.0.0.1:*",
        dir.path(),
        &[],
        Stdio::piped(),
    );
    drop(broker.take_stderr());
    hello(broker.endpoint());
    // Shutting down logs too; it must still flush and exit 0.
    broker.terminate();
    assert_eq!(broker.wait_exit().code(), Some(0));
}

#[test]
fn a_taken_port_exits_two() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = start(&dir.path().join("a"), &[]);
    let stderr = fails_with_usage(&["--listen", first.endpoint()], &dir.path().join("b"));
    assert!(stderr.contains("agora-broker: error:"), "{stderr}");
    // Said once (the message and its cause both said it).
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    hello(first.endpoint());
}

#[test]
fn a_data_dir_in_use_exits_two_saying_so_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = start(dir.path(), &[]);
    let stderr = fails_with_usage(&["--listen", "tcp://127.0.0.1:*"], dir.path());
    assert_eq!(
        stderr.matches("already open elsewhere").count(),
        1,
        "{stderr}"
    );
    hello(first.endpoint());
}
