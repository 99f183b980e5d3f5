//! The bus wire protocol spoken with raw ZeroMQ sockets, as a foreign client would.
//!
//! Nothing here uses the agora SDK or `agora_wire`: every header, meta frame, flag,
//! op and error code is written out as bytes, so these tests pin the format docs/PROTOCOL.md
//! describes. A change to the wire format has to change this file too.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_examples::TestBroker;
use ciborium::value::Value;

/// How long any single receive may wait before the test fails.
const RECV_TIMEOUT_MS: i32 = 5000;

// Header byte 1: ops.
const OP_PUBLISH: u8 = 0x01;
const OP_HELLO: u8 = 0x02;
const OP_PING: u8 = 0x03;
const OP_STATS: u8 = 0x04;
const OP_SYNC: u8 = 0x05;
const OP_REPLAY: u8 = 0x10;
const OP_REPLAY_BATCH: u8 = 0x11;
const OP_REPLAY_END: u8 = 0x12;
const OP_OK: u8 = 0x80;
const OP_ERROR: u8 = 0x81;

// Header byte 2: publish flags.
const FLAG_ACK: u8 = 0x01;
const FLAG_CONFIRM: u8 = 0x02;
const FLAG_PRODUCER: u8 = 0x04;
const FLAG_BATCH_ACKS: u8 = 0x08;
const FLAG_ROOM: u8 = 0x10;

// Header byte 3 / meta byte 1: content types.
const CT_CBOR: u8 = 0;
const CT_RAW: u8 = 1;
const CT_JSON: u8 = 2;
const CT_TEXT: u8 = 3;

// Error reply codes (u16 little-endian).
const E_MALFORMED: u16 = 1;
const E_UNKNOWN_OP: u16 = 2;
const E_PAYLOAD_TOO_LARGE: u16 = 3;
const E_BAD_TOPIC: u16 = 4;
const E_UNSUPPORTED_VERSION: u16 = 5;
const E_BAD_REQUEST: u16 = 7;
const E_OUT_OF_ORDER: u16 = 9;

// Meta byte 2: kinds.
const KIND_EVENT: u8 = 0;
const KIND_BEACON: u8 = 1;

/// Offset of events the broker does not log (`$sys.*`, `$sync.*`, beacons).
const UNLOGGED: u64 = u64::MAX;

/// A 12-byte request header: version 1, op, flags, content type, request id (u64 LE).
fn header(op: u8, flags: u8, content_type: u8, request_id: u64) -> Vec<u8> {
    let mut h = vec![1, op, flags, content_type];
    h.extend_from_slice(&request_id.to_le_bytes());
    h
}

/// A publish request: one frame, `header ‖ topic ‖ 0x00 ‖ payload`.
fn publish_frame(flags: u8, content_type: u8, id: u64, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = header(OP_PUBLISH, flags, content_type, id);
    f.extend_from_slice(topic);
    f.push(0);
    f.extend_from_slice(payload);
    f
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(kind).expect("socket");
    s.set_rcvtimeo(RECV_TIMEOUT_MS).expect("rcvtimeo");
    s.set_linger(0).expect("linger");
    s.connect(endpoint).expect("connect");
    s
}

fn dealer(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    socket(ctx, zmq::DEALER, endpoint)
}

fn send(sock: &zmq::Socket, frames: &[&[u8]]) {
    sock.send_multipart(frames.iter().copied(), 0)
        .expect("send");
}

fn recv(sock: &zmq::Socket) -> Vec<Vec<u8>> {
    sock.recv_multipart(0)
        .expect("a message within the deadline")
}

/// Send a request and return the reply frames (header first).
fn request(sock: &zmq::Socket, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    send(sock, frames);
    recv(sock)
}

/// Check an error reply: header op 0x81 with the request id, code, non-empty message.
fn assert_error(reply: &[Vec<u8>], request_id: u64, code: u16) -> String {
    assert_eq!(
        reply.len(),
        3,
        "error reply is header, code, message: {reply:?}"
    );
    assert_eq!(reply[0], header(OP_ERROR, 0, 0, request_id), "error header");
    assert_eq!(reply[1].len(), 2, "code is a u16");
    let got = u16::from_le_bytes([reply[1][0], reply[1][1]]);
    let msg = String::from_utf8(reply[2].clone()).expect("UTF-8 message");
    assert_eq!(got, code, "error code (message: {msg})");
    assert!(!msg.is_empty());
    msg
}

/// A CBOR map's text-keyed entries.
fn cbor_map(bytes: &[u8]) -> BTreeMap<String, Value> {
    let v: Value = ciborium::from_reader(bytes).expect("CBOR body");
    let Value::Map(entries) = v else {
        panic!("body is not a CBOR map: {v:?}");
    };
    entries
        .into_iter()
        .map(|(k, v)| (k.into_text().expect("text keys"), v))
        .collect()
}

fn int(v: &Value) -> u64 {
    let i: i128 = v.as_integer().expect("integer").into();
    u64::try_from(i).expect("non-negative")
}

/// HELLO: returns the reply's CBOR map.
fn hello(sock: &zmq::Socket, request_id: u64) -> BTreeMap<String, Value> {
    let reply = request(sock, &[&header(OP_HELLO, 0, 0, request_id)]);
    assert_eq!(reply.len(), 2, "HELLO reply is header + CBOR body");
    assert_eq!(reply[0], header(OP_OK, 0, 0, request_id));
    cbor_map(&reply[1])
}

fn events_endpoint(ctx: &zmq::Context, endpoint: &str) -> String {
    let d = dealer(ctx, endpoint);
    let m = hello(&d, 1);
    m["events"].as_text().expect("events is text").to_string()
}

/// One event off a SUB socket: a single frame `topic ‖ 0x00 ‖ meta (32 bytes) ‖ payload`.
struct Event {
    topic: Vec<u8>,
    meta: Vec<u8>,
    payload: Vec<u8>,
}

impl Event {
    fn kind(&self) -> u8 {
        self.meta[2]
    }
    fn offset(&self) -> u64 {
        le64(&self.meta[8..16])
    }
    fn seq(&self) -> u64 {
        le64(&self.meta[16..24])
    }
    fn time_ns(&self) -> u64 {
        le64(&self.meta[24..32])
    }
}

fn recv_event(sub: &zmq::Socket) -> Event {
    let frames = recv(sub);
    assert_eq!(frames.len(), 1, "an event is one frame");
    parse_event(&frames[0])
}

/// An event frame, as on the events socket and in replay batches.
fn parse_event(frame: &[u8]) -> Event {
    let nul = frame[..frame.len().min(256)]
        .iter()
        .position(|&b| b == 0)
        .expect("the topic ends with a NUL within 256 bytes");
    let topic = frame[..nul].to_vec();
    assert!(frame.len() >= nul + 1 + 32, "room for the 32-byte meta");
    let meta = frame[nul + 1..nul + 33].to_vec();
    let payload = frame[nul + 33..].to_vec();
    assert_eq!(meta[0], 1, "meta version");
    assert_eq!(&meta[3..8], &[0; 5], "reserved meta bytes are zero");
    Event {
        topic,
        meta,
        payload,
    }
}

/// The next event that is not a sequence beacon.
fn recv_non_beacon(sub: &zmq::Socket) -> Event {
    loop {
        let ev = recv_event(sub);
        if ev.kind() != KIND_BEACON {
            return ev;
        }
    }
}

/// A SUB socket subscribed to `prefixes`, returned once the broker provably delivers to it:
/// subscribe `$sync.<token>` too and send SYNC until that event arrives.
fn subscriber(ctx: &zmq::Context, endpoint: &str, prefixes: &[&[u8]]) -> zmq::Socket {
    let events = events_endpoint(ctx, endpoint);
    let sub = socket(ctx, zmq::SUB, &events);
    for p in prefixes {
        sub.set_subscribe(p).expect("subscribe");
    }
    let token = format!("t{}", now_ns());
    let sync_topic = format!("$sync.{token}");
    let sync_prefix = [sync_topic.as_bytes(), b"\0"].concat();
    sub.set_subscribe(&sync_prefix).expect("subscribe");
    let req = dealer(ctx, endpoint);
    let deadline = Instant::now() + Duration::from_millis(RECV_TIMEOUT_MS as u64);
    let mut id = 100;
    loop {
        assert!(Instant::now() < deadline, "SYNC barrier never came back");
        id += 1;
        let reply = request(&req, &[&header(OP_SYNC, 0, 0, id), token.as_bytes()]);
        assert_eq!(reply, vec![header(OP_OK, 0, 0, id)], "SYNC reply");
        // The SYNC event left the broker before its reply: poll briefly for it.
        let mut items = [sub.as_poll_item(zmq::POLLIN)];
        if zmq::poll(&mut items, 50).expect("poll") > 0 {
            let ev = recv_event(&sub);
            if ev.topic == sync_topic.as_bytes() {
                sub.set_unsubscribe(&sync_prefix).expect("unsubscribe");
                return sub;
            }
            panic!(
                "unexpected event before the barrier: {}",
                String::from_utf8_lossy(&ev.topic)
            );
        }
    }
}

#[test]
fn hello_over_dealer_decodes_as_a_cbor_map() {
    let broker = TestBroker::start();
    let ctx = zmq::Context::new();
    let d = dealer(&ctx, &broker.endpoint());
    let m = hello(&d, 0x1122_3344_5566_7788);
    assert_eq!(int(&m["version"]), 1);
    let events = m["events"].as_text().expect("text");
    assert!(events.starts_with("tcp://127.0.0.1:"), "{events}");
    assert_ne!(events, broker.endpoint());
    // The broker mounts the tuple space by default and advertises it.
    let space = m["space"].as_text().expect("space endpoint");
    assert!(space.starts_with("tcp://127.0.0.1:"), "{space}");
    assert!(space != events && space != broker.endpoint());
    assert_eq!(int(&m["max_payload"]), 1024 * 1024);
    assert_eq!(int(&m["max_topic"]), 255);

    // Request id 0 is fine too; PING answers with a bare header.
    assert_eq!(
        request(&d, &[&header(OP_PING, 0, 0, 0)]),
        vec![header(OP_OK, 0, 0, 0)]
    );
}

#[test]
fn publish_with_ack_and_every_meta_byte_on_the_subscriber() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_secs(3600));
    let ctx = zmq::Context::new();
    let sub = subscriber(&ctx, &broker.endpoint(), &[b"raw."]);
    // `topic\0` subscribes to exactly one topic: this one sees raw.t, never raw.tt or raw.u.
    let exact = subscriber(&ctx, &broker.endpoint(), &[b"raw.t\0"]);
    let publ = dealer(&ctx, &broker.endpoint());

    /// topic, flags, content type, payload, expected offset, expected seq
    type Case<'a> = (&'a [u8], u8, u8, &'a [u8], u64, u64);
    let before = now_ns();
    let cases: [Case; 6] = [
        (b"raw.t", FLAG_ACK, CT_JSON, br#"{"a":1}"#, 0, 1),
        (b"raw.t", FLAG_ACK, CT_CBOR, &[0xa1, 0x61, 0x61, 0x01], 1, 2),
        (b"raw.u", FLAG_CONFIRM, CT_TEXT, "h\u{e9}".as_bytes(), 2, 1),
        (
            b"raw.t",
            FLAG_ACK | FLAG_CONFIRM,
            CT_RAW,
            &[0, 255, 7],
            3,
            3,
        ),
        (b"raw.u", FLAG_ACK, 0x42, b"", 4, 2),
        (
            b"raw.tt",
            FLAG_ACK,
            CT_RAW,
            b"\0NUL\0s in a payload are fine\0",
            5,
            1,
        ),
    ];
    for (i, (topic, flags, ct, payload, offset, seq)) in cases.iter().enumerate() {
        let id = 1000 + i as u64;
        let reply = request(&publ, &[&publish_frame(*flags, *ct, id, topic, payload)]);
        assert_eq!(reply.len(), 2, "ack is header + 16-byte body");
        assert_eq!(reply[0], header(OP_OK, 0, 0, id));
        assert_eq!(reply[1].len(), 16);
        assert_eq!(le64(&reply[1][..8]), *offset, "acked offset");
        assert_eq!(le64(&reply[1][8..]), *seq, "acked seq");
    }
    // Without a flag there is no reply: the next reply is the PING's.
    send(&publ, &[&publish_frame(0, CT_CBOR, 77, b"raw.t", &[0xf6])]);
    assert_eq!(
        request(&publ, &[&header(OP_PING, 0, 0, 78)]),
        vec![header(OP_OK, 0, 0, 78)]
    );
    let after = now_ns();

    let mut last_time = 0;
    for &(topic, _, ct, payload, offset, seq) in &cases {
        let ev = recv_non_beacon(&sub);
        assert_eq!(ev.topic, topic);
        assert_eq!(ev.meta[1], ct, "content type byte carried unchanged");
        assert_eq!(ev.kind(), KIND_EVENT);
        assert_eq!(ev.offset(), offset);
        assert_eq!(ev.seq(), seq);
        assert!(ev.time_ns() >= before && ev.time_ns() <= after, "time");
        assert!(ev.time_ns() >= last_time, "time never goes back");
        last_time = ev.time_ns();
        assert_eq!(ev.payload, payload);
    }
    let ev = recv_non_beacon(&sub);
    assert_eq!(
        (ev.topic.as_slice(), ev.offset(), ev.seq()),
        (&b"raw.t"[..], 6, 4)
    );
    assert_eq!(ev.payload, [0xf6]);

    let exact_offsets: Vec<u64> = (0..4).map(|_| recv_non_beacon(&exact).offset()).collect();
    assert_eq!(exact_offsets, [0, 1, 3, 6], "only raw.t through `raw.t\\0`");
    let mut items = [exact.as_poll_item(zmq::POLLIN)];
    assert_eq!(zmq::poll(&mut items, 0).expect("poll"), 0, "nothing else");
}

#[test]
fn req_socket_works_and_replies_carry_the_delimiter() {
    let broker = TestBroker::start();
    let ctx = zmq::Context::new();
    // A REQ socket adds the empty delimiter itself and only accepts a delimited reply.
    let req = socket(&ctx, zmq::REQ, &broker.endpoint());
    let reply = request(&req, &[&header(OP_HELLO, 0, 0, 5)]);
    assert_eq!(reply[0], header(OP_OK, 0, 0, 5));
    assert_eq!(int(&cbor_map(&reply[1])["version"]), 1);
    let reply = request(
        &req,
        &[&publish_frame(FLAG_ACK, CT_CBOR, 6, b"req.t", &[1])],
    );
    assert_eq!(reply[0], header(OP_OK, 0, 0, 6));
    assert_eq!(reply[1].len(), 16);
    let reply = request(&req, &[&publish_frame(0, 0, 7, b"a..b", b"")]);
    assert_error(&reply, 7, E_BAD_TOPIC);

    // A DEALER that writes the delimiter by hand sees it echoed.
    let d = dealer(&ctx, &broker.endpoint());
    let reply = request(&d, &[b"", &header(OP_PING, 0, 0, 8)]);
    assert_eq!(reply, vec![Vec::new(), header(OP_OK, 0, 0, 8)]);
    let reply = request(&d, &[b"", b"junk"]);
    assert_eq!(reply[0], b"");
    assert_error(&reply[1..], 0, E_MALFORMED);
    // A lone empty frame: delimiter without a header.
    let reply = request(&d, &[b""]);
    assert_eq!(reply[0], b"");
    assert_error(&reply[1..], 0, E_MALFORMED);
}

#[test]
fn garbage_gets_error_replies_and_the_broker_keeps_serving() {
    let broker = TestBroker::start_with(|c| c.max_payload = 64);
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();
    let sub = subscriber(&ctx, &ep, &[b"ok."]);
    let bad = dealer(&ctx, &ep);

    let max_topic = vec![b'b'; 255];
    let exactly_max = vec![0u8; 64];
    let mut wrong_version = header(OP_PING, 0, 0, 31);
    wrong_version[0] = 2;
    let mut long_header = header(OP_PING, 0, 0, 33);
    long_header.push(0);
    let pubf = |id, topic: &[u8], payload: &[u8]| publish_frame(FLAG_ACK, 0, id, topic, payload);
    let v = |b: &[u8]| b.to_vec();
    let mut no_nul = header(OP_PUBLISH, FLAG_ACK, 0, 45);
    no_nul.extend_from_slice(b"ok.t");
    // 256 topic bytes: the NUL comes one byte too late.
    let nul_too_far = pubf(46, &[b'a'; 256], b"p");
    let mut too_many = vec![header(OP_PUBLISH, FLAG_ACK, 0, 42)];
    for _ in 0..8 {
        too_many.push(v(b"x"));
    }

    // (frames, request id the error reply carries, code)
    let cases: Vec<(Vec<Vec<u8>>, u64, u16)> = vec![
        // Headers.
        (vec![v(b"hello")], 0, E_MALFORMED),
        (vec![v(&header(OP_PING, 0, 0, 32)[..11])], 0, E_MALFORMED),
        (vec![long_header], 33, E_MALFORMED),
        (vec![wrong_version], 31, E_UNSUPPORTED_VERSION),
        (vec![header(0x7f, 0, 0, 34)], 34, E_UNKNOWN_OP),
        (vec![header(0x00, 0, 0, 35)], 35, E_UNKNOWN_OP),
        (vec![header(0x0f, 0, 0, 36)], 36, E_UNKNOWN_OP),
        // Publish framing: one frame, topic ended by a NUL.
        (vec![header(OP_PUBLISH, FLAG_ACK, 0, 40)], 40, E_BAD_TOPIC),
        (vec![pubf(41, b"ok.t", b"p"), v(b"extra")], 41, E_MALFORMED),
        (too_many, 42, E_MALFORMED),
        // The 3-frame publish of older drafts is refused.
        (
            vec![header(OP_PUBLISH, FLAG_ACK, 0, 43), v(b"ok.t"), v(b"p")],
            43,
            E_MALFORMED,
        ),
        (vec![no_nul], 45, E_BAD_TOPIC),
        (vec![nul_too_far], 46, E_BAD_TOPIC),
        // Topics and sizes.
        (vec![pubf(47, b"a..b", b"p")], 47, E_BAD_TOPIC),
        (vec![pubf(48, b"$sys.stats", b"p")], 48, E_BAD_TOPIC),
        (vec![pubf(49, b"$sync.x", b"p")], 49, E_BAD_TOPIC),
        (
            vec![pubf(50, &[0xff, 0xfe, b'.', b'a'], b"p")],
            50,
            E_BAD_TOPIC,
        ),
        (vec![pubf(51, b"", b"p")], 51, E_BAD_TOPIC),
        (vec![pubf(52, b"ok.t", &[0; 65])], 52, E_PAYLOAD_TOO_LARGE),
        // Other ops: header-only first frame, exact frame counts.
        (
            vec![header(OP_PING, 0, 0, 53), v(b"extra")],
            53,
            E_MALFORMED,
        ),
        (
            vec![header(OP_HELLO, 0, 0, 54), v(b"extra")],
            54,
            E_MALFORMED,
        ),
        (
            vec![header(OP_STATS, 0, 0, 55), v(b"extra")],
            55,
            E_MALFORMED,
        ),
        (vec![header(OP_SYNC, 0, 0, 56)], 56, E_MALFORMED),
        (
            vec![header(OP_SYNC, 0, 0, 57), v(b"has space")],
            57,
            E_BAD_REQUEST,
        ),
        (vec![header(OP_SYNC, 0, 0, 58), v(b"")], 58, E_BAD_REQUEST),
        (
            vec![header(OP_SYNC, 0, 0, 59), vec![b'k'; 65]],
            59,
            E_BAD_REQUEST,
        ),
        (vec![header(OP_OK, 0, 0, 60)], 60, E_BAD_REQUEST),
        (vec![header(OP_ERROR, 0, 0, 61)], 61, E_BAD_REQUEST),
    ];
    for (frames, id, code) in &cases {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let reply = request(&bad, &frames);
        let msg = assert_error(&reply, *id, *code);
        if *code == E_PAYLOAD_TOO_LARGE {
            assert!(msg.contains("64"), "message names the limit: {msg}");
        }
    }
    // More topic/char cases, each its own request.
    for (i, topic) in [&b"a b"[..], b"a.", b".a", b"a\tb", b"a.*", b"a.>", b"x*y"]
        .iter()
        .enumerate()
    {
        let id = 70 + i as u64;
        let reply = request(&bad, &[&publish_frame(0, 0, id, topic, b"p")]);
        assert_error(&reply, id, E_BAD_TOPIC);
    }

    // The garbage socket is still served, and so is everyone else; limits are inclusive.
    assert_eq!(int(&hello(&bad, 80)["version"]), 1);
    let good = dealer(&ctx, &ep);
    for topic in [&b"ok.t"[..], &max_topic] {
        let reply = request(
            &good,
            &[&publish_frame(FLAG_ACK, CT_RAW, 81, topic, &exactly_max)],
        );
        assert_eq!(reply[0], header(OP_OK, 0, 0, 81));
    }
    let ev = recv_non_beacon(&sub);
    assert_eq!(ev.topic, b"ok.t");
    assert_eq!(
        (ev.offset(), ev.seq()),
        (0, 1),
        "no refused publish used an offset"
    );
    assert_eq!(ev.payload, exactly_max);

    let reply = request(&good, &[&header(OP_STATS, 0, 0, 82)]);
    assert_eq!(reply[0], header(OP_OK, 0, 0, 82));
    let stats = cbor_map(&reply[1]);
    assert_eq!(int(&stats["events_in"]), 2);
    // Publishes refused for their topic or size: 9 in the table, 7 in the loop. (Publishes
    // with the wrong frame count are refused before those checks and not counted.)
    assert_eq!(int(&stats["rejected"]), 16);
}

#[test]
fn half_conversations_and_raw_tcp_junk_do_not_hurt_the_broker() {
    let broker = TestBroker::start();
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();

    // A DEALER that sends the first frame of a request and vanishes.
    {
        let d = dealer(&ctx, &ep);
        d.send(
            &publish_frame(FLAG_ACK, 0, 1, b"half.t", b"x")[..],
            zmq::SNDMORE,
        )
        .expect("send");
        d.send(&b"more"[..], zmq::SNDMORE).expect("send");
    }
    // A DEALER that asks and leaves before the reply.
    {
        let d = dealer(&ctx, &ep);
        send(&d, &[&publish_frame(FLAG_ACK, 0, 2, b"half.t", b"x")]);
        send(&d, &[&header(OP_STATS, 0, 0, 3)]);
    }
    // Plain TCP: half a ZMTP greeting, then junk, then a hang-up.
    let addr = ep.trim_start_matches("tcp://");
    for junk in [
        &[0xffu8, 0, 0, 0][..],
        b"GET / HTTP/1.1\r\n\r\n",
        &[0u8; 300],
    ] {
        let mut s = std::net::TcpStream::connect(addr).expect("tcp connect");
        let _ = s.write_all(junk);
    }

    // Everyone else is served.
    let d = dealer(&ctx, &ep);
    assert_eq!(int(&hello(&d, 9)["version"]), 1);
    let reply = request(&d, &[&publish_frame(FLAG_ACK, 0, 10, b"half.t", b"y")]);
    assert_eq!(reply[0], header(OP_OK, 0, 0, 10));
    assert_eq!(reply[1].len(), 16);
}

#[test]
fn sync_barrier_event_and_reply() {
    let broker = TestBroker::start();
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();
    let events = events_endpoint(&ctx, &ep);
    let sub = socket(&ctx, zmq::SUB, &events);
    sub.set_subscribe(b"$sync.tok").expect("subscribe");
    let d = dealer(&ctx, &ep);
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = now_ns();
    let ev = loop {
        assert!(Instant::now() < deadline, "no $sync.tok event");
        let reply = request(&d, &[&header(OP_SYNC, 0, 0, 4), b"tok"]);
        assert_eq!(reply, vec![header(OP_OK, 0, 0, 4)]);
        let mut items = [sub.as_poll_item(zmq::POLLIN)];
        if zmq::poll(&mut items, 50).expect("poll") > 0 {
            break recv_event(&sub);
        }
    };
    assert_eq!(ev.topic, b"$sync.tok");
    assert_eq!(ev.meta[1], CT_RAW);
    assert_eq!(ev.kind(), KIND_EVENT);
    assert_eq!(ev.offset(), UNLOGGED);
    assert_eq!(ev.seq(), 0);
    assert!(ev.time_ns() >= before);
    assert!(ev.payload.is_empty());

    // A token of all allowed characters, 64 bytes, is accepted.
    let token = "aZ09-_".repeat(11)[..64].to_string();
    let reply = request(&d, &[&header(OP_SYNC, 0, 0, 5), token.as_bytes()]);
    assert_eq!(reply, vec![header(OP_OK, 0, 0, 5)]);
}

#[test]
fn stats_events_and_sequence_beacons() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_millis(50));
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();
    let sub = subscriber(&ctx, &ep, &[b"bcn.", b"$sys.stats"]);
    let d = dealer(&ctx, &ep);
    for i in 0..3u64 {
        let reply = request(&d, &[&publish_frame(FLAG_ACK, CT_CBOR, i, b"bcn.t", &[1])]);
        assert_eq!(le64(&reply[1][8..]), i + 1);
    }

    // Within a few stats intervals: 3 events, a beacon on bcn.t with seq 3, and stats.
    let mut events = 0;
    let mut beacon = None;
    let mut stats_seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (beacon.is_none() || stats_seqs.len() < 2) && Instant::now() < deadline {
        // A beacon only counts once it carries the last sequence (an earlier tick may have
        // caught the topic mid-burst).
        let ev = recv_event(&sub);
        match (ev.topic.as_slice(), ev.kind()) {
            (b"bcn.t", KIND_EVENT) => {
                events += 1;
                assert_eq!(ev.seq(), events);
            }
            (b"bcn.t", KIND_BEACON) => {
                assert!(
                    ev.seq() <= events,
                    "a beacon never runs ahead of the events"
                );
                if ev.seq() == 3 {
                    beacon = Some(ev);
                }
            }
            (b"$sys.stats", KIND_EVENT) => {
                assert_eq!(ev.meta[1], CT_CBOR);
                assert_eq!(ev.offset(), UNLOGGED);
                let m = cbor_map(&ev.payload);
                for key in [
                    "uptime_s",
                    "events_in",
                    "events_out",
                    "rejected",
                    "dropped",
                    "subscriptions",
                    "requests",
                    "rate_in",
                    "topics",
                ] {
                    assert!(m.contains_key(key), "$sys.stats has {key}: {m:?}");
                }
                assert!(m["uptime_s"].is_float());
                assert!(m["rate_in"].is_float());
                // Events and stats leave the broker in order: the snapshot counts exactly
                // the events already received.
                assert_eq!(int(&m["events_in"]), events);
                assert!(int(&m["subscriptions"]) >= 2);
                let Value::Map(topics) = &m["topics"] else {
                    panic!("topics is a map");
                };
                let Some((name, t)) = topics.first() else {
                    assert_eq!(events, 0);
                    stats_seqs.push(ev.seq());
                    continue;
                };
                assert_eq!(name.as_text(), Some("bcn.t"));
                let Value::Map(fields) = t else {
                    panic!("topic stats is a map");
                };
                let keys: Vec<_> = fields.iter().filter_map(|(k, _)| k.as_text()).collect();
                assert_eq!(keys, ["events", "seq", "rate"]);
                stats_seqs.push(ev.seq());
            }
            (t, k) => panic!("unexpected event {} kind {k}", String::from_utf8_lossy(t)),
        }
    }
    assert_eq!(events, 3);
    let beacon = beacon.expect("a beacon within the deadline");
    assert_eq!(beacon.seq(), 3, "beacon carries the topic's latest seq");
    assert_eq!(beacon.offset(), UNLOGGED);
    assert_eq!(beacon.meta[1], CT_RAW);
    assert!(beacon.payload.is_empty());
    assert!(stats_seqs.len() >= 2, "stats events every interval");
    assert!(
        stats_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "stats seq counts up: {stats_seqs:?}"
    );
}

/// A publish with the PRODUCER flag: `header ‖ producer id u64 ‖ producer seq u64 ‖ topic ‖
/// 0x00 ‖ payload`.
fn producer_frame(flags: u8, id: u64, producer: u64, pseq: u64, topic: &[u8]) -> Vec<u8> {
    let mut f = header(OP_PUBLISH, flags | FLAG_PRODUCER, CT_CBOR, id);
    f.extend_from_slice(&producer.to_le_bytes());
    f.extend_from_slice(&pseq.to_le_bytes());
    f.extend_from_slice(topic);
    f.push(0);
    f.push(0xf6);
    f
}

fn ack(reply: &[Vec<u8>], id: u64) -> (u64, u64) {
    assert_eq!(reply.len(), 2, "ack is header + 16 bytes: {reply:?}");
    assert_eq!(reply[0], header(OP_OK, 0, 0, id));
    (le64(&reply[1][..8]), le64(&reply[1][8..]))
}

#[test]
fn idempotent_producers_confirms_and_offsets_across_a_restart() {
    let mut broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_secs(3600));
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();
    let sub = subscriber(&ctx, &ep, &[b"idem.t\0"]);
    let d = dealer(&ctx, &ep);
    let p = 0xABCD_0000_0000_0001;
    let call = |frame: Vec<u8>| request(&d, &[&frame]);
    let r = call(producer_frame(FLAG_ACK, 1, p, 1, b"idem.t"));
    assert_eq!(ack(&r, 1), (0, 1));
    // A retry of seq 1 is answered with the original's offset and not forwarded.
    let r = call(producer_frame(FLAG_ACK, 2, p, 1, b"idem.t"));
    assert_eq!(ack(&r, 2), (0, 1));
    // Skipping seq 2 is refused.
    let r = call(producer_frame(FLAG_ACK, 3, p, 3, b"idem.t"));
    assert_error(&r, 3, E_OUT_OF_ORDER);
    // CONFIRM: answered once the event is durable.
    let r = call(producer_frame(FLAG_CONFIRM, 4, p, 2, b"idem.t"));
    assert_eq!(ack(&r, 4), (1, 2));
    // An older retry: the broker only remembers the latest offset, so it answers "unknown".
    let r = call(producer_frame(FLAG_ACK, 5, p, 1, b"idem.t"));
    assert_eq!(ack(&r, 5), (UNLOGGED, 0));
    // A retry without ACK gets no reply at all (the PING's comes next).
    send(&d, &[&producer_frame(0, 6, p, 2, b"idem.t")]);
    assert_eq!(
        request(&d, &[&header(OP_PING, 0, 0, 7)]),
        vec![header(OP_OK, 0, 0, 7)]
    );
    // Too short for the 16 producer bytes.
    let mut short = header(OP_PUBLISH, FLAG_PRODUCER, 0, 8);
    short.extend_from_slice(&[1, 2, 3]);
    let r = call(short);
    assert_error(&r, 8, E_MALFORMED);

    let got: Vec<(u64, u64)> = (0..2)
        .map(|_| {
            let ev = recv_non_beacon(&sub);
            (ev.offset(), ev.seq())
        })
        .collect();
    assert_eq!(got, [(0, 1), (1, 2)], "each event forwarded once");
    let mut items = [sub.as_poll_item(zmq::POLLIN)];
    assert_eq!(zmq::poll(&mut items, 0).expect("poll"), 0, "no duplicates");

    // Offsets, topic sequences and producer sequences survive a restart.
    drop((sub, d));
    broker.restart(|c| c.stats_interval = Duration::from_secs(3600));
    let d = dealer(&ctx, &broker.endpoint());
    let r = request(&d, &[&publish_frame(FLAG_ACK, 0, 9, b"idem.t", b"x")]);
    assert_eq!(ack(&r, 9), (2, 3));
    let r = request(&d, &[&producer_frame(FLAG_ACK, 10, p, 2, b"idem.t")]);
    assert_eq!(
        ack(&r, 10),
        (UNLOGGED, 0),
        "a retry across the restart is still dropped"
    );
    let r = request(&d, &[&producer_frame(FLAG_ACK, 11, p, 3, b"idem.t")]);
    assert_eq!(ack(&r, 11), (3, 4));
}

/// A ROOM publish: `header ‖ [producer id ‖ producer seq] ‖ zero padding ‖ topic ‖ 0x00 ‖
/// payload`, with the topic at byte 32.
fn room_frame(
    flags: u8,
    id: u64,
    producer: Option<(u64, u64)>,
    topic: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = header(OP_PUBLISH, flags | FLAG_ROOM, CT_RAW, id);
    if let Some((producer, pseq)) = producer {
        f[2] |= FLAG_PRODUCER;
        f.extend_from_slice(&producer.to_le_bytes());
        f.extend_from_slice(&pseq.to_le_bytes());
    }
    f.resize(32, 0);
    f.extend_from_slice(topic);
    f.push(0);
    f.extend_from_slice(payload);
    f
}

#[test]
fn room_publishes_arrive_like_plain_ones() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_secs(3600));
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();
    let sub = subscriber(&ctx, &ep, &[b"room."]);
    let d = dealer(&ctx, &ep);
    let long_topic = [b"room.".as_slice(), &[b'x'; 200]].concat();
    // Plain and ROOM publishes interleaved; topics shorter and longer than the 32-byte room,
    // with and without producer fields, with and without ACK, payloads with NULs and empty.
    let sent: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"room.a".to_vec(), b"first\0one".to_vec()),
        (b"room.b".to_vec(), Vec::new()),
        (long_topic.clone(), vec![0xab; 1000]),
        (b"room.a".to_vec(), b"plain".to_vec()),
        (b"room.a".to_vec(), b"produced".to_vec()),
    ];
    send(&d, &[&room_frame(0, 1, None, &sent[0].0, &sent[0].1)]);
    let r = request(
        &d,
        &[&room_frame(FLAG_ACK, 2, None, &sent[1].0, &sent[1].1)],
    );
    assert_eq!(ack(&r, 2), (1, 1));
    send(&d, &[&room_frame(0, 3, None, &sent[2].0, &sent[2].1)]);
    send(&d, &[&publish_frame(0, CT_RAW, 4, &sent[3].0, &sent[3].1)]);
    let r = request(
        &d,
        &[&room_frame(
            FLAG_ACK,
            5,
            Some((77, 1)),
            &sent[4].0,
            &sent[4].1,
        )],
    );
    assert_eq!(ack(&r, 5), (4, 3));
    for (i, (topic, payload)) in sent.iter().enumerate() {
        let ev = recv_non_beacon(&sub);
        assert_eq!(&ev.topic, topic, "event {i}");
        assert_eq!(&ev.payload, payload, "event {i}");
        assert_eq!(ev.offset(), i as u64);
        assert_eq!(ev.meta[1], CT_RAW);
        assert_eq!(ev.kind(), KIND_EVENT);
    }

    // Too short for the room: refused as malformed, nothing forwarded.
    let mut short = header(OP_PUBLISH, FLAG_ROOM, CT_RAW, 6);
    short.extend_from_slice(&[0; 10]);
    assert_error(&request(&d, &[&short]), 6, E_MALFORMED);
    // The topic must start at byte 32: a topic right after the header is partly read as
    // padding (here its first 20 bytes, leaving `.p`, which is not a valid topic).
    let wrong = publish_frame(FLAG_ROOM, CT_RAW, 7, b"room.abcdefghijklmno.p", b"x");
    assert_error(&request(&d, &[&wrong]), 7, E_BAD_TOPIC);
    let mut items = [sub.as_poll_item(zmq::POLLIN)];
    assert_eq!(
        zmq::poll(&mut items, 100).expect("poll"),
        0,
        "refused publishes are not forwarded"
    );
}

#[test]
fn batched_confirms_come_in_acks_messages() {
    const OP_ACKS: u8 = 0x83;
    // fsync `always`, and a long stats interval so nothing else arrives on the DEALER.
    let broker = TestBroker::start_with(|c| {
        c.stats_interval = Duration::from_secs(3600);
        c.fsync = agora_storage::FsyncPolicy::Always;
    });
    let ctx = zmq::Context::new();
    let d = dealer(&ctx, &broker.endpoint());
    // 300 confirmed publishes sent back to back (request ids 100..400), each asking for
    // batched acks. Every one is acked exactly once, with offsets in publish order, inside
    // ACKS messages: header op 0x83, request id 0, then n x [request id][offset][seq].
    let n = 300u64;
    for i in 0..n {
        let f = publish_frame(
            FLAG_CONFIRM | FLAG_BATCH_ACKS,
            CT_RAW,
            100 + i,
            b"acks.t",
            b"x",
        );
        send(&d, &[&f]);
    }
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    while (acked.len() as u64) < n {
        let reply = recv(&d);
        assert_eq!(reply.len(), 2, "ACKS is header + one body frame: {reply:?}");
        assert_eq!(reply[0], header(OP_ACKS, 0, 0, 0));
        assert_eq!(reply[1].len() % 24, 0, "24-byte entries");
        for e in reply[1].chunks(24) {
            acked.push((le64(&e[..8]), le64(&e[8..16]), le64(&e[16..])));
        }
    }
    assert_eq!(acked.len() as u64, n, "no extra acks");
    for (i, (id, offset, seq)) in acked.iter().enumerate() {
        assert_eq!(
            (*id, *offset, *seq),
            (100 + i as u64, i as u64, i as u64 + 1)
        );
    }
    // Without the flag a confirm is still its own OK reply.
    let r = request(
        &d,
        &[&publish_frame(FLAG_CONFIRM, CT_RAW, 7, b"acks.t", b"x")],
    );
    assert_eq!(ack(&r, 7), (n, n + 1));
    // ACKS is a reply: sent as a request it is refused.
    let r = request(&d, &[&header(OP_ACKS, 0, 0, 8)]);
    assert_error(&r, 8, E_BAD_REQUEST);
}

#[test]
fn queue_group_join_deliver_and_leave() {
    const OP_QUEUE_JOIN: u8 = 0x06;
    const OP_QUEUE_LEAVE: u8 = 0x07;
    const OP_DELIVER: u8 = 0x82;
    let broker = TestBroker::start();
    let ctx = zmq::Context::new();
    let ep = broker.endpoint();
    let members = [dealer(&ctx, &ep), dealer(&ctx, &ep)];
    for (i, m) in members.iter().enumerate() {
        let id = 100 + i as u64;
        let reply = request(
            m,
            &[&header(OP_QUEUE_JOIN, 0, 0, id), b"workers", b"jobs.>"],
        );
        assert_eq!(reply, vec![header(OP_OK, 0, 0, id)]);
    }
    // A bad group name is BAD_REQUEST.
    let reply = request(
        &members[0],
        &[&header(OP_QUEUE_JOIN, 0, 0, 7), b"no spaces", b"a"],
    );
    assert_error(&reply, 7, E_BAD_REQUEST);

    let publisher = dealer(&ctx, &ep);
    for i in 0..4u8 {
        let reply = request(
            &publisher,
            &[&publish_frame(FLAG_ACK, CT_RAW, 1, b"jobs.a", &[i])],
        );
        assert_eq!(reply[0][1], OP_OK);
    }
    // Round robin: each member gets two DELIVER messages carrying its join id and the event
    // frame `topic ‖ 0 ‖ meta(32) ‖ payload`.
    let mut payloads = Vec::new();
    for (i, m) in members.iter().enumerate() {
        for _ in 0..2 {
            let msg = recv(m);
            assert_eq!(msg.len(), 2);
            assert_eq!(msg[0], header(OP_DELIVER, 0, 0, 100 + i as u64));
            let frame = &msg[1];
            assert_eq!(&frame[..7], b"jobs.a\0");
            assert_eq!(frame.len(), 7 + 32 + 1);
            payloads.push(frame[39]);
        }
    }
    payloads.sort();
    assert_eq!(payloads, vec![0, 1, 2, 3]);

    // After QUEUE_LEAVE the other member gets everything.
    let reply = request(
        &members[0],
        &[&header(OP_QUEUE_LEAVE, 0, 0, 9), &100u64.to_le_bytes()],
    );
    assert_eq!(reply, vec![header(OP_OK, 0, 0, 9)]);
    for i in 10..12u8 {
        request(
            &publisher,
            &[&publish_frame(FLAG_ACK, CT_RAW, 1, b"jobs.a", &[i])],
        );
    }
    for i in 10..12u8 {
        let msg = recv(&members[1]);
        assert_eq!(msg[0], header(OP_DELIVER, 0, 0, 101));
        assert_eq!(msg[1][39], i);
    }
}

/// A REPLAY on the replay endpoint, followed to its END: `(start, end)` from the OK, the
/// `(topic, offset)` of each event sent, and END's `(end, events sent)`.
type ReplayRun = ((u64, u64), Vec<(String, u64)>, (u64, u64));

fn replay(sock: &zmq::Socket, id: u64, fields: Vec<(&str, Value)>) -> ReplayRun {
    let map = Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    );
    let mut body = Vec::new();
    ciborium::into_writer(&map, &mut body).expect("CBOR");
    let reply = request(sock, &[&header(OP_REPLAY, 0, 0, id), &body]);
    assert_eq!(reply[0], header(OP_OK, 0, 0, id), "replay OK: {reply:?}");
    let start = cbor_map(&reply[1]);
    let range = (int(&start["start"]), int(&start["end"]));
    let mut events = Vec::new();
    loop {
        let frames = recv(sock);
        if frames[0] == header(OP_REPLAY_END, 0, 0, id) {
            let end = (le64(&frames[1][..8]), le64(&frames[1][8..]));
            return (range, events, end);
        }
        assert_eq!(frames[0], header(OP_REPLAY_BATCH, 0, 0, id), "{frames:?}");
        // Frame 2: `[length u32 LE][event frame]`, back to back.
        let mut rest = &frames[2][..];
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let ev = parse_event(&rest[4..4 + len]);
            events.push((String::from_utf8(ev.topic.clone()).unwrap(), ev.offset()));
            rest = &rest[4 + len..];
        }
    }
}

#[test]
fn replay_from_the_beginning_and_from_last_with_and_without_until() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_secs(3600));
    let ctx = zmq::Context::new();
    let publ = dealer(&ctx, &broker.endpoint());
    let topics = ["rp.a", "rp.b", "rp.a", "rp.b", "rp.c", "other.x"];
    for (i, topic) in topics.iter().enumerate() {
        let id = i as u64 + 1;
        // The last one is confirmed: once it is durable, all six are in the log and in its
        // last-value cache.
        let flags = if id == 6 {
            FLAG_ACK | FLAG_CONFIRM
        } else {
            FLAG_ACK
        };
        let reply = request(
            &publ,
            &[&publish_frame(flags, CT_RAW, id, topic.as_bytes(), b"x")],
        );
        assert_eq!(ack(&reply, id).0, i as u64);
    }
    let replay_ep = hello(&publ, 50)["replay"]
        .as_text()
        .expect("replay endpoint")
        .to_string();
    let r = dealer(&ctx, &replay_ep);
    let filters = || ("filters", Value::Array(vec![Value::Text("rp.>".into())]));
    let last = || ("from", Value::Text("last".into()));
    let until = |o: u64| ("until", Value::Integer(o.into()));
    let ev = |t: &str, o: u64| (t.to_string(), o);

    let (range, events, end) = replay(
        &r,
        1,
        vec![
            filters(),
            ("from", Value::Text("beginning".into())),
            until(4),
        ],
    );
    assert_eq!(range, (0, 4));
    assert_eq!(
        events,
        [ev("rp.a", 0), ev("rp.b", 1), ev("rp.a", 2), ev("rp.b", 3)]
    );
    assert_eq!(end, (4, 4));

    // The last event of each matching topic, in offset order.
    let (_, events, end) = replay(&r, 2, vec![filters(), last()]);
    assert_eq!(events, [ev("rp.a", 2), ev("rp.b", 3), ev("rp.c", 4)]);
    assert_eq!(end, (6, 3));

    // ... before `until`: rp.b's last is then 1, though its newest is 3; rp.c has none.
    let (_, events, end) = replay(&r, 3, vec![filters(), last(), until(3)]);
    assert_eq!(events, [ev("rp.b", 1), ev("rp.a", 2)]);
    assert_eq!(end, (3, 2));
    let (_, events, _) = replay(&r, 4, vec![filters(), last(), until(1)]);
    assert_eq!(events, [ev("rp.a", 0)]);
    let (_, events, end) = replay(&r, 5, vec![filters(), last(), until(0)]);
    assert_eq!((events, end), (vec![], (0, 0)));

    // ... before an `until` past the log's end: the replay waits for the log (2 s), then
    // ends where the log does, as any replay; it does not claim to have reached `until`.
    let (range, events, end) = replay(&r, 6, vec![filters(), last(), until(1_000_000)]);
    assert_eq!(range.1, 1_000_000, "the end asked for");
    assert_eq!(events, [ev("rp.a", 2), ev("rp.b", 3), ev("rp.c", 4)]);
    assert_eq!(end, (6, 3), "the end reached");

    // A new durable subscription needs one offset to start at; `last` is one per topic.
    let mut body = Vec::new();
    let durable_last = Value::Map(vec![
        (
            Value::Text("filters".into()),
            Value::Array(vec![Value::Text("rp.>".into())]),
        ),
        (Value::Text("from".into()), Value::Text("last".into())),
        (Value::Text("durable".into()), Value::Text("d1".into())),
    ]);
    ciborium::into_writer(&durable_last, &mut body).unwrap();
    let reply = request(&r, &[&header(OP_REPLAY, 0, 0, 7), &body]);
    let msg = assert_error(&reply, 7, E_BAD_REQUEST);
    assert!(msg.contains("`last`"), "{msg}");

    // A request body that is not the CBOR map asked for: said plainly, as a request's.
    let not_a_request: &[u8] = &[0xa1, 0x61, b'x', 0x01];
    let reply = request(&r, &[&header(OP_REPLAY, 0, 0, 8), not_a_request]);
    let msg = assert_error(&reply, 8, E_MALFORMED);
    assert!(msg.contains("missing field `filters`"), "{msg}");
    assert!(!msg.contains("Semantic") && !msg.contains("reply"), "{msg}");
}

#[test]
fn a_replay_batch_ends_with_the_event_that_takes_it_past_256_kib() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_secs(3600));
    let ctx = zmq::Context::new();
    let publ = dealer(&ctx, &broker.endpoint());
    let big = vec![7u8; 200 * 1024];
    for id in 1..=5u64 {
        let flags = if id == 5 {
            FLAG_ACK | FLAG_CONFIRM
        } else {
            FLAG_ACK
        };
        let reply = request(&publ, &[&publish_frame(flags, CT_RAW, id, b"big.x", &big)]);
        ack(&reply, id);
    }
    let replay_ep = hello(&publ, 50)["replay"].as_text().unwrap().to_string();
    let r = dealer(&ctx, &replay_ep);
    let mut body = Vec::new();
    let req = Value::Map(vec![
        (
            Value::Text("filters".into()),
            Value::Array(vec![Value::Text("big.>".into())]),
        ),
        (Value::Text("from".into()), Value::Text("beginning".into())),
    ]);
    ciborium::into_writer(&req, &mut body).unwrap();
    let reply = request(&r, &[&header(OP_REPLAY, 0, 0, 1), &body]);
    assert_eq!(reply[0], header(OP_OK, 0, 0, 1));
    let mut per_batch = Vec::new();
    loop {
        let frames = recv(&r);
        if frames[0] == header(OP_REPLAY_END, 0, 0, 1) {
            break;
        }
        let mut rest = &frames[2][..];
        let mut n = 0;
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            rest = &rest[4 + len..];
            n += 1;
        }
        per_batch.push(n);
    }
    // 200 KiB, then 400 KiB: past 256 KiB, the batch ends. (It took all five at once.)
    assert_eq!(per_batch, [2, 2, 1]);
}

#[test]
fn replay_from_last_before_until_reads_a_long_log_in_turns() {
    let broker = TestBroker::start_with(|c| c.stats_interval = Duration::from_secs(3600));
    let ctx = zmq::Context::new();
    let publ = dealer(&ctx, &broker.endpoint());
    // More records than one turn reads (32768) between rp.a's two events.
    let n = 40_000u64;
    send(&publ, &[&publish_frame(0, CT_RAW, 1, b"rp.a", b"x")]);
    for _ in 0..n {
        send(&publ, &[&publish_frame(0, CT_RAW, 2, b"rp.b", b"x")]);
    }
    let last = n + 1;
    let reply = request(
        &publ,
        &[&publish_frame(
            FLAG_ACK | FLAG_CONFIRM,
            CT_RAW,
            3,
            b"rp.a",
            b"x",
        )],
    );
    assert_eq!(ack(&reply, 3).0, last);
    let replay_ep = hello(&publ, 50)["replay"].as_text().unwrap().to_string();
    let r = dealer(&ctx, &replay_ep);
    let (_, events, end) = replay(
        &r,
        1,
        vec![
            ("filters", Value::Array(vec![Value::Text("rp.*".into())])),
            ("from", Value::Text("last".into())),
            ("until", Value::Integer(last.into())),
        ],
    );
    assert_eq!(events, [("rp.a".to_string(), 0), ("rp.b".to_string(), n)]);
    assert_eq!(end, (last, 2));
}
