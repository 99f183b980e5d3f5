//! Bus throughput, side by side in one run: 1 publisher -> 1 subscriber through
//!
//! * a bare libzmq XSUB->XPUB proxy (the baseline: PUB and XPUB with NODROP, HWM 1000),
//! * the Agora broker, driven with raw ZeroMQ sockets (DEALER in, SUB out),
//! * the Agora broker through the typed SDK (serde + CBOR encode and decode).
//!
//! Every event is counted at the subscriber; the clock runs from the first send to the last
//! receive. Events are `[topic, payload]` through the proxy; the broker's are one frame in
//! (`header‖room‖topic‖0‖payload`, as the SDK sends them: the ROOM flag leaves the topic at
//! byte 32, so the broker turns the frame into the event in place) and one out
//! (`topic‖0‖meta‖payload`).
//!
//! Each row runs the three paths in turn, for three rounds (`AGORA_BENCH_ROUNDS=N`), and
//! prints each path's median rate, the ratios of the medians, and the spread of the ratios
//! over the rounds: on a small shared machine any single run, the bare proxy's included, can
//! be 20% off.
//!
//! Under each row it prints the CPU time each path took per event (all threads of this
//! process, the broker's included, from `getrusage`), median over the rounds, and the
//! broker's dispatcher and log writer threads' share of it: rates swing with the machine's
//! other load, CPU per event much less, so it is the figure to compare before and after a
//! change on the hot path.
//!
//! Run: `cargo bench --bench bus_throughput` (`AGORA_BENCH_EVENTS=N` changes the count from
//! 1,000,000; `AGORA_BENCH_ONLY=proxy|raw|sdk` runs one path, `AGORA_BENCH_SIZE=N` one payload
//! size, for profiling; `AGORA_BENCH_FSYNC=never|always|'every 5ms'` the broker's fsync
//! policy; `AGORA_BENCH_VERBOSE=1` prints every round).

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use agora::Client;
use agora_examples::TestBroker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

const HWM: i32 = 1000;
const TOPIC: &str = "bench.events";
/// Subscriptions are on `bench.`; probes (sent until the subscription works) use this topic.
const PROBE: &str = "bench.probe";

fn set_nodrop(sock: &mut zmq::Socket) {
    let one: i32 = 1;
    // SAFETY: a valid socket pointer, a c_int option value and its size.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            sock.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as i32,
            &one as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>(),
        )
    };
    assert_eq!(rc, 0, "setting XPUB_NODROP");
}

/// Subscribe `sub` and wait until a probe sent by `send_probe` arrives (slow-joiner guard).
fn await_subscription(sub: &zmq::Socket, mut send_probe: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send_probe();
        if sub.poll(zmq::POLLIN, 10).unwrap() > 0 {
            // Drain probes.
            while let Ok(parts) = sub.recv_multipart(zmq::DONTWAIT) {
                let _ = parts;
            }
            return;
        }
        assert!(Instant::now() < deadline, "subscription never took effect");
    }
}

/// Count `n` events at a SUB socket; returns when the last one arrived.
fn count_events(sub: zmq::Socket, n: u64, frames: usize) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        let mut topic = zmq::Message::new();
        let mut msg = zmq::Message::new();
        let mut got = 0u64;
        while got < n {
            sub.recv(&mut topic, 0).unwrap();
            for _ in 1..frames {
                sub.recv(&mut msg, 0).unwrap();
            }
            // A late probe (distinct topic) is not a bench event. Broker events start with
            // `topic\0`, proxy events are a `topic` frame.
            if topic.starts_with(TOPIC.as_bytes()) && !topic.starts_with(PROBE.as_bytes()) {
                got += 1;
            }
        }
        Instant::now()
    })
}

/// CPU time used so far: by the whole process, and by each live thread, by thread id.
struct CpuMark {
    process_ns: u64,
    threads: std::collections::HashMap<String, (String, u64)>,
}

impl CpuMark {
    fn now() -> CpuMark {
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            let mut u = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut u);
            u
        };
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        let mut threads = std::collections::HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for task in dir.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                // schedstat: time on a CPU (ns), time waiting for one, timeslices.
                let run_ns = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                let tid = task.file_name().to_string_lossy().into_owned();
                threads.insert(tid, (comm.trim().to_owned(), run_ns));
            }
        }
        CpuMark {
            process_ns: ns(usage.ru_utime) + ns(usage.ru_stime),
            threads,
        }
    }

    /// CPU µs per event since `self`: the process's, and that of the threads named `name`.
    fn per_event(&self, n: u64, names: &[&str]) -> Vec<f64> {
        let later = CpuMark::now();
        let us = |ns: u64| ns as f64 / 1000.0 / n as f64;
        let mut out = vec![us(later.process_ns.saturating_sub(self.process_ns))];
        for name in names {
            let ns: u64 = later
                .threads
                .iter()
                .filter(|(_, (comm, _))| comm == name)
                .map(|(tid, (_, ns))| {
                    ns.saturating_sub(self.threads.get(tid).map_or(0, |(_, before)| *before))
                })
                .sum();
            out.push(us(ns));
        }
        out
    }
}

/// The broker threads whose CPU time is reported on their own.
const BROKER_THREADS: [&str; 2] = ["agora-dispatche", "agora-log-write"];

fn bare_proxy(n: u64, size: usize) -> f64 {
    // The proxy gets its own context (its own I/O thread), as a standalone proxy process
    // would, and as the broker has; the clients share another.
    let proxy_ctx = zmq::Context::new();
    let ctx = zmq::Context::new();
    let xsub = proxy_ctx.socket(zmq::XSUB).unwrap();
    let mut xpub = proxy_ctx.socket(zmq::XPUB).unwrap();
    xsub.set_rcvhwm(HWM).unwrap();
    xpub.set_sndhwm(HWM).unwrap();
    set_nodrop(&mut xpub);
    xsub.bind("tcp://127.0.0.1:*").unwrap();
    xpub.bind("tcp://127.0.0.1:*").unwrap();
    let in_ep = xsub.get_last_endpoint().unwrap().unwrap();
    let out_ep = xpub.get_last_endpoint().unwrap().unwrap();
    let control = proxy_ctx.socket(zmq::PAIR).unwrap();
    control.bind("inproc://bench-proxy-control").unwrap();
    let thread_ctx = proxy_ctx.clone();
    let proxy = std::thread::spawn(move || {
        let (mut xsub, mut xpub) = (xsub, xpub);
        let mut ctl = thread_ctx.socket(zmq::PAIR).unwrap();
        ctl.connect("inproc://bench-proxy-control").unwrap();
        let _ = zmq::proxy_steerable(&mut xsub, &mut xpub, &mut ctl);
    });

    let mut publisher = ctx.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(HWM).unwrap();
    set_nodrop(&mut publisher);
    publisher.connect(&in_ep).unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(HWM).unwrap();
    sub.connect(&out_ep).unwrap();
    sub.set_subscribe(b"bench.").unwrap();
    await_subscription(&sub, || {
        publisher
            .send_multipart([PROBE.as_bytes(), b"probe"], 0)
            .unwrap()
    });

    let payload = vec![0xabu8; size];
    let counter = count_events(sub, n, 2);
    let start = Instant::now();
    for _ in 0..n {
        publisher.send(TOPIC, zmq::SNDMORE).unwrap();
        publisher.send(&payload[..], 0).unwrap();
    }
    let end = counter.join().unwrap();
    control.send("TERMINATE", 0).unwrap();
    proxy.join().unwrap();
    n as f64 / (end - start).as_secs_f64()
}

fn broker_raw(endpoint: &str, events: &str, n: u64, size: usize) -> f64 {
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_sndhwm(HWM).unwrap();
    dealer.connect(endpoint).unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(HWM).unwrap();
    sub.connect(events).unwrap();
    sub.set_subscribe(b"bench.").unwrap();
    // A publish is one frame: header (version 1, op 0x01, flag ROOM 0x10, CBOR, request id
    // 0), 20 bytes of room (the topic starts at byte 32), topic, NUL, payload.
    let frame = |topic: &str, payload: &[u8]| {
        let mut f = vec![1u8, 0x01, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        f.resize(32, 0);
        f.extend_from_slice(topic.as_bytes());
        f.push(0);
        f.extend_from_slice(payload);
        f
    };
    let probe = frame(PROBE, b"probe");
    await_subscription(&sub, || dealer.send(&probe[..], 0).unwrap());
    let event = frame(TOPIC, &vec![0xabu8; size]);
    let counter = count_events(sub, n, 1);
    let start = Instant::now();
    for _ in 0..n {
        dealer.send(&event[..], 0).unwrap();
    }
    let end = counter.join().unwrap();
    n as f64 / (end - start).as_secs_f64()
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Tick {
    seq: u64,
    symbol: String,
    price: f64,
    note: String,
}

fn tick(size: usize) -> Tick {
    // Field names and values add up to about `size` bytes of CBOR.
    Tick {
        seq: 1,
        symbol: "AGORA".into(),
        price: 101.25,
        note: "x".repeat(size.saturating_sub(40)),
    }
}

fn sdk_typed(rt: &tokio::runtime::Runtime, endpoint: &str, n: u64, size: usize) -> (f64, usize) {
    rt.block_on(async {
        let publisher = Client::connect(endpoint).await.unwrap();
        let subscriber = Client::connect(endpoint).await.unwrap();
        let mut sub = subscriber.subscribe::<Tick>(TOPIC).await.unwrap();
        let mut t = tick(size);
        let encoded = {
            let mut v = Vec::new();
            ciborium::into_writer(&t, &mut v).unwrap();
            v.len()
        };
        let reader = tokio::spawn(async move {
            let mut got = 0u64;
            while got < n {
                match sub.next().await {
                    Some(Ok(_ev)) => got += 1,
                    Some(Err(e)) => panic!("{e}"),
                    None => panic!("stream ended"),
                }
            }
            Instant::now()
        });
        let start = Instant::now();
        for i in 0..n {
            t.seq = i;
            publisher.publish(TOPIC, &t).await.unwrap();
        }
        let end = reader.await.unwrap();
        (n as f64 / (end - start).as_secs_f64(), encoded)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants it quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("AGORA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1_000_000 } else { 10_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = TestBroker::start_with(|c| {
        c.events_hwm = HWM;
        c.requests_hwm = std::env::var("AGORA_BENCH_RHWM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(c.requests_hwm);
        if let Ok(f) = std::env::var("AGORA_BENCH_FSYNC") {
            c.fsync = f.parse().unwrap();
        }
    });
    let endpoint = broker.endpoint();
    let events = broker.broker().events_endpoint().to_string();

    let rounds: usize = std::env::var("AGORA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 3 } else { 1 })
        .max(1);
    println!(
        "bus throughput, 1 publisher -> 1 subscriber, {n} events per run, loopback tcp; \
         median of {rounds} rounds (ratio spread over the rounds in brackets)"
    );
    println!(
        "{:<7} {:>13} {:>13} {:>18} {:>13} {:>18}",
        "payload",
        "bare proxy/s",
        "broker raw/s",
        "ratio [spread]",
        "sdk typed/s",
        "ratio [spread]"
    );
    // AGORA_BENCH_ONLY=proxy|raw|sdk runs one path (for profiling); the others print 0.
    let only = std::env::var("AGORA_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    // AGORA_BENCH_SIZE=N runs one payload size instead of 64 B and 1 KiB.
    let sizes: Vec<usize> = match std::env::var("AGORA_BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(size) => vec![size],
        None => vec![64, 1024],
    };
    for size in sizes {
        let (mut proxy, mut raw, mut typed) = (Vec::new(), Vec::new(), Vec::new());
        // CPU µs per event of each round: [process, dispatcher, log writer].
        let (mut proxy_cpu, mut raw_cpu, mut typed_cpu) = (Vec::new(), Vec::new(), Vec::new());
        let mut encoded = 0;
        // The paths take turns, so a slow spell of the machine hits all of them alike.
        // One path's run (if selected): its rate, and its CPU µs per event.
        let measure = |name: &str, path: &mut dyn FnMut() -> f64| {
            let mark = CpuMark::now();
            let rate = if run(name) { path() } else { 0.0 };
            (rate, mark.per_event(n, &BROKER_THREADS))
        };
        for _ in 0..rounds {
            let (rate, cpu) = measure("proxy", &mut || bare_proxy(n, size));
            proxy.push(rate);
            proxy_cpu.push(cpu);
            let (rate, cpu) = measure("raw", &mut || broker_raw(&endpoint, &events, n, size));
            raw.push(rate);
            raw_cpu.push(cpu);
            let (rate, cpu) = measure("sdk", &mut || {
                let (rate, len) = sdk_typed(&rt, &endpoint, n, size);
                encoded = len;
                rate
            });
            typed.push(rate);
            typed_cpu.push(cpu);
        }
        if std::env::var_os("AGORA_BENCH_VERBOSE").is_some() {
            for i in 0..rounds {
                eprintln!(
                    "  {size} B round {}: proxy {:.0}/s, raw {:.0}/s, typed {:.0}/s; \
                     cpu us/event: proxy {:.3}, raw {:.3} (dispatcher {:.3}, log writer {:.3}), \
                     typed {:.3} (dispatcher {:.3}, log writer {:.3})",
                    i + 1,
                    proxy[i],
                    raw[i],
                    typed[i],
                    proxy_cpu[i][0],
                    raw_cpu[i][0],
                    raw_cpu[i][1],
                    raw_cpu[i][2],
                    typed_cpu[i][0],
                    typed_cpu[i][1],
                    typed_cpu[i][2],
                );
            }
        }
        let spread = |of: &[f64]| {
            let ratios: Vec<f64> = of.iter().zip(&proxy).map(|(r, p)| r / p).collect();
            let min = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            format!("[{min:.2}-{max:.2}]")
        };
        let (p, r, t) = (median(&proxy), median(&raw), median(&typed));
        println!(
            "{:<7} {:>13.0} {:>13.0} {:>5.2} {:>12} {:>13.0} {:>5.2} {:>12}   (typed event: {encoded} B CBOR)",
            format!("{size} B"),
            p,
            r,
            r / p,
            spread(&raw),
            t,
            t / p,
            spread(&typed),
        );
        // Medians, column by column, over the rounds.
        let cpu = |of: &[Vec<f64>], i: usize| {
            median(&of.iter().map(|round| round[i]).collect::<Vec<_>>())
        };
        println!(
            "{:<7} cpu us/event: proxy {:.3}, broker raw {:.3} (dispatcher {:.3}, log writer \
             {:.3}), sdk typed {:.3} (dispatcher {:.3}, log writer {:.3})",
            "",
            cpu(&proxy_cpu, 0),
            cpu(&raw_cpu, 0),
            cpu(&raw_cpu, 1),
            cpu(&raw_cpu, 2),
            cpu(&typed_cpu, 0),
            cpu(&typed_cpu, 1),
            cpu(&typed_cpu, 2),
        );
    }
}

/// The median of a few figures (the upper one of the middle two for an even count).
fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}
