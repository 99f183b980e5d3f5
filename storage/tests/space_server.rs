//! A space server over a persistent space (the broker's composition): an `OUT` is answered
//! only once its write-ahead record is durable, and what was stored (taken but never
//! confirmed included) is back after a restart.

use std::time::Duration;

use agora_storage::space::{open_space, PersistOptions};
use agora_storage::FsyncPolicy;
use agora_tuplespace::{Field, Kind, ServerConfig, SpaceServer, Template, Tuple, Value};
use agora_wire::space::{Reply, Request, Wait};

/// The tuple `("job", n)` as it travels: its CBOR bytes.
fn job(n: i64) -> Vec<u8> {
    Tuple(vec![Value::from("job"), Value::Int(n)]).to_cbor()
}

fn take(wait: Wait) -> Request {
    Request::Take {
        template: Template(vec![
            Field::Actual(Value::from("job")),
            Field::Formal(Kind::Int),
        ])
        .to_cbor(),
        wait,
    }
}

fn dealer(s: &SpaceServer) -> zmq::Socket {
    let ctx = zmq::Context::new();
    let d = ctx.socket(zmq::DEALER).unwrap();
    d.set_linger(0).unwrap();
    d.connect(s.endpoint()).unwrap();
    d
}

fn call(sock: &zmq::Socket, req: &Request, id: u64) -> Reply {
    sock.send_multipart(req.encode(id, 0), 0).unwrap();
    assert!(
        sock.poll(zmq::POLLIN, 5_000).unwrap() > 0,
        "a reply within 5 s"
    );
    let frames = sock.recv_multipart(0).unwrap();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let (rid, reply) = Reply::decode(req.op(), &refs).unwrap();
    assert_eq!(rid, id);
    reply
}

#[test]
fn persistent_server_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let options = PersistOptions {
            fsync: FsyncPolicy::Every(Duration::from_millis(5)),
            ..PersistOptions::default()
        };
        let (space, _) = open_space(dir.path(), &options).expect("space opens");
        SpaceServer::start(ServerConfig {
            space: Some(space),
            ..ServerConfig::default()
        })
        .expect("server starts")
    };
    let s = start();
    let c = dealer(&s);
    for n in 0..4 {
        let out = Request::Out {
            tuple: job(n),
            lease: None,
        };
        // The OK comes only once the record is durable.
        assert_eq!(call(&c, &out, n as u64), Reply::Done);
        let (appended, durable) = s.space().store().journal_positions().unwrap();
        assert!(durable >= 1 && durable <= appended);
    }
    let Reply::Tuple {
        reservation: Some(r),
        ..
    } = call(&c, &take(Wait::NonBlocking), 10)
    else {
        panic!("expected a tuple")
    };
    assert_eq!(call(&c, &Request::Confirm(r), 11), Reply::Done);
    // Taken but never confirmed: back after the restart.
    let Reply::Tuple { tuple, .. } = call(&c, &take(Wait::NonBlocking), 12) else {
        panic!("expected a tuple")
    };
    assert_eq!(tuple, job(1));
    s.shutdown();
    let s = start();
    let c = dealer(&s);
    let dump = Request::Dump { template: None };
    assert_eq!(
        call(&c, &dump, 1),
        Reply::Tuples {
            reservation: None,
            tuples: vec![job(1), job(2), job(3)]
        }
    );
}
