//! Tuple space throughput and latency, side by side in one run:
//!
//! * a bare DEALER/ROUTER echo round trip (the baseline: what one request/reply costs here),
//! * `out` + `take` pairs through the SDK ([`agora::Space`]): one client in sequence (`out`
//!   answered, then `take`), the same pair sent back to back with `tokio::join!` (one round
//!   trip: the server handles a connection's requests in order), 8 clients (8 connections) at
//!   once, 8 clients with 16 (and 64) pairs in flight each, and 1 client with 64 joined pairs
//!   in flight (with the WAL fsynced every 5 ms, throughput is in-flight pairs / fsync
//!   period: group commit shares one fsync among all of them),
//! * each on a fresh space and on an "aged" one that already holds 1,000,000 unrelated
//!   tuples (stored in-process, different first fields), to show the cost stays flat,
//! * for four servers: the broker with its write-ahead log fsynced every 5 ms (the default:
//!   an `out` is answered once durable), the broker with the WAL written but never fsynced
//!   (both with the broker's default `space_spin` of 200 µs: the server thread polls that
//!   long after small batches before it sleeps), and a memory-only `SpaceServer` (no WAL)
//!   without and with `ServerConfig::spin` = 200 µs.
//!
//! A pair is `out(("bench-<client>", i))` (answered by the server) then
//! `take(("bench-<client>", ?int))` (its CONFIRM is fire-and-forget). Latency is per pair;
//! ops/s counts the out and the take. Run: `cargo bench --bench space_throughput`
//! (`AGORA_BENCH_SECS=N` sets each measurement's length, default 2; `AGORA_BENCH_AGED=N` the
//! aged space's size, 0 skips the aged pass; `AGORA_BENCH_SERVERS=memory,spin,nofsync,fsync`
//! picks the servers, `AGORA_BENCH_ROWS=seq,join,8,8x16,8x64,1x64` the rows; `AGORA_BENCH_CPU=1`
//! adds two columns: the process's CPU µs and thread sleeps per pair; `AGORA_BENCH_RT=current`
//! runs the clients on a current-thread tokio runtime). Without `--bench`
//! (`cargo test --benches`) it runs a quick smoke pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use agora::{template, tuple, Space};
use agora_broker::BrokerConfig;
use agora_examples::TestBroker;
use agora_storage::FsyncPolicy;
use agora_tuplespace::{ServerConfig, SpaceServer, Tuple, Value};

/// Settings for one run.
struct Scale {
    /// How long each throughput measurement runs.
    secs: f64,
    /// Echo round trips measured.
    echo: usize,
    /// Tuples stored before the "aged" measurements.
    aged: u64,
}

/// What serves the space.
enum Target {
    Broker(TestBroker),
    Memory(SpaceServer),
}

impl Target {
    fn start(kind: Kind) -> Target {
        match kind {
            Kind::WalEvery5ms => Target::Broker(TestBroker::start()),
            Kind::WalNoFsync => Target::Broker(TestBroker::start_with(|c: &mut BrokerConfig| {
                c.space_fsync = FsyncPolicy::Never
            })),
            Kind::Memory => Target::Memory(
                SpaceServer::start(ServerConfig::default()).expect("space server starts"),
            ),
            Kind::MemorySpin => Target::Memory(
                SpaceServer::start(ServerConfig {
                    spin: Duration::from_micros(200),
                    ..ServerConfig::default()
                })
                .expect("space server starts"),
            ),
        }
    }

    fn endpoint(&self) -> String {
        match self {
            Target::Broker(b) => b
                .broker()
                .space_endpoint()
                .expect("broker serves a space")
                .to_string(),
            Target::Memory(s) => s.endpoint().to_string(),
        }
    }

    fn space(&self) -> &agora_tuplespace::Space {
        match self {
            Target::Broker(b) => b.broker().space().expect("broker serves a space"),
            Target::Memory(s) => s.space(),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    WalEvery5ms,
    WalNoFsync,
    Memory,
    MemorySpin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::WalEvery5ms => "broker, WAL fsync 5ms",
            Kind::WalNoFsync => "broker, WAL no fsync",
            Kind::Memory => "memory only (no WAL)",
            Kind::MemorySpin => "memory, spin 200µs",
        }
    }

    /// The name `AGORA_BENCH_SERVERS` knows it by.
    fn key(self) -> &'static str {
        match self {
            Kind::WalEvery5ms => "fsync",
            Kind::WalNoFsync => "nofsync",
            Kind::Memory => "memory",
            Kind::MemorySpin => "spin",
        }
    }
}

/// One measurement's result.
struct Figures {
    pairs: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time the whole process (clients and server) used meanwhile, if known.
    cpu: Option<Duration>,
    /// Times a thread of the process went to sleep meanwhile (voluntary context switches:
    /// each is a wake-up later), if known.
    sleeps: Option<u64>,
}

impl Figures {
    fn pairs_per_sec(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A bare DEALER/ROUTER echo: per round trip latencies of a 12-byte header + 16-byte body.
fn echo(n: usize) -> Figures {
    let server_ctx = zmq::Context::new();
    let router = server_ctx.socket(zmq::ROUTER).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let ep = router.get_last_endpoint().unwrap().unwrap();
    let server = std::thread::spawn(move || {
        while let Ok(frames) = router.recv_multipart(0) {
            if frames.len() == 2 && frames[1] == b"stop" {
                break;
            }
            router.send_multipart(frames, 0).unwrap();
        }
    });
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(&ep).unwrap();
    let header = [1u8; 12];
    let body = [2u8; 16];
    let mut latencies = Vec::with_capacity(n);
    let warmup = n / 10;
    let start = Instant::now();
    for i in 0..n + warmup {
        let t = Instant::now();
        dealer.send(&header[..], zmq::SNDMORE).unwrap();
        dealer.send(&body[..], 0).unwrap();
        let reply = dealer.recv_multipart(0).unwrap();
        assert_eq!(reply.len(), 2);
        if i >= warmup {
            latencies.push(t.elapsed());
        }
    }
    let elapsed = start.elapsed();
    dealer.send("stop", 0).unwrap();
    server.join().unwrap();
    Figures {
        pairs: n as u64,
        elapsed,
        latencies,
        cpu: None,
        sleeps: None,
    }
}

/// `out` + `take` pairs on one connection for `secs`, `inflight` at a time; per pair
/// latencies. The key keeps each client's tuples apart.
async fn pairs(space: Space, key: String, secs: f64, inflight: usize, pipelined: bool) -> Figures {
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for lane in 0..inflight {
        let space = space.clone();
        let key = format!("{key}-{lane}");
        tasks.push(tokio::spawn(async move {
            let tpl = template!(key.as_str(), ?int);
            let mut latencies = Vec::new();
            let mut i = 0i64;
            while Instant::now() < stop {
                let t = Instant::now();
                let got = if pipelined {
                    // Both requests leave back to back on the one connection, which the
                    // server handles in order: the take sees the out, one round trip.
                    let (o, got) =
                        tokio::join!(space.out(tuple!(key.as_str(), i)), space.take(&tpl));
                    o.unwrap();
                    got.unwrap()
                } else {
                    space.out(tuple!(key.as_str(), i)).await.unwrap();
                    space.take(&tpl).await.unwrap()
                };
                latencies.push(t.elapsed());
                assert_eq!(got.0[1], Value::Int(i), "this lane's own tuple");
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Figures {
        pairs: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
        cpu: None,
        sleeps: None,
    }
}

/// `clients` connections running `pairs` at once.
async fn clients(
    endpoint: &str,
    clients: usize,
    inflight: usize,
    pipelined: bool,
    secs: f64,
) -> Figures {
    let mut spaces = Vec::new();
    for _ in 0..clients {
        let s = Space::connect(endpoint).unwrap();
        // Connected and warm before the clock starts.
        s.count(&template!("warm")).await.unwrap();
        spaces.push(s);
    }
    let start = Instant::now();
    let cpu_start = process_cpu();
    let sleeps_start = process_sleeps();
    let runs: Vec<_> = spaces
        .into_iter()
        .enumerate()
        .map(|(c, s)| tokio::spawn(pairs(s, format!("bench-{c}"), secs, inflight, pipelined)))
        .collect();
    let mut all = Figures {
        pairs: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        cpu: None,
        sleeps: None,
    };
    for r in runs {
        let f = r.await.unwrap();
        all.pairs += f.pairs;
        all.latencies.extend(f.latencies);
    }
    all.elapsed = start.elapsed();
    all.cpu = process_cpu()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    all.sleeps = process_sleeps()
        .zip(sleeps_start)
        .map(|(end, start)| end.saturating_sub(start));
    all
}

/// Voluntary context switches of this process's live threads so far (Linux).
fn process_sleeps() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse::<u64>()
            .ok()?;
        total += n;
    }
    Some(total)
}

/// User + system CPU time of this process so far (Linux: `/proc/self/stat`, 100 Hz ticks).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Store `n` tuples the bench's templates never match (other first fields), in-process.
fn age(space: &agora_tuplespace::Space, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let first = format!("aged-{}", i % 1024);
        space
            .out(Tuple(vec![
                Value::from(first),
                Value::UInt(i),
                Value::from("unrelated payload"),
            ]))
            .unwrap();
    }
    start.elapsed()
}

fn row(config: &str, space: &str, what: &str, mut f: Figures) -> f64 {
    let p50 = f.percentile(0.50);
    let p99 = f.percentile(0.99);
    // With AGORA_BENCH_CPU set, two last columns: process CPU µs per pair (clients +
    // server) and thread sleeps (so wake-ups) per pair: steadier than throughput on a busy
    // machine.
    let cpu = match (std::env::var_os("AGORA_BENCH_CPU"), f.cpu, f.sleeps) {
        (Some(_), Some(cpu), Some(sleeps)) => format!(
            " {:>9.1} {:>9.1}",
            micros(cpu) / f.pairs.max(1) as f64,
            sleeps as f64 / f.pairs.max(1) as f64
        ),
        _ => String::new(),
    };
    println!(
        "{config:<24} {space:<10} {what:<18} {:>10.0} {:>10.0} {:>9.0} {:>9.0}{cpu}",
        f.pairs_per_sec(),
        2.0 * f.pairs_per_sec(),
        micros(p50),
        micros(p99)
    );
    micros(p50)
}

/// One line of the table per server and space: how many clients, how many pairs each keeps
/// in flight, and whether a pair's two requests leave together (`join!`).
struct RowSpec {
    /// The name `AGORA_BENCH_ROWS` knows it by.
    key: &'static str,
    label: &'static str,
    clients: usize,
    inflight: usize,
    joined: bool,
}

const ROWS: &[RowSpec] = &[
    RowSpec {
        key: "seq",
        label: "1 sequential",
        clients: 1,
        inflight: 1,
        joined: false,
    },
    RowSpec {
        key: "join",
        label: "1 join!(out,take)",
        clients: 1,
        inflight: 1,
        joined: true,
    },
    RowSpec {
        key: "8",
        label: "8",
        clients: 8,
        inflight: 1,
        joined: false,
    },
    RowSpec {
        key: "8x16",
        label: "8 x 16 in flight",
        clients: 8,
        inflight: 16,
        joined: false,
    },
    RowSpec {
        key: "8x64",
        label: "8 x 64 in flight",
        clients: 8,
        inflight: 64,
        joined: false,
    },
    RowSpec {
        key: "1x64",
        label: "1 x 64 join!",
        clients: 1,
        inflight: 64,
        joined: true,
    },
];

/// `list` (comma-separated, from the environment) is empty or names `key`.
fn wanted(list: &str, key: &str) -> bool {
    list.is_empty() || list.split(',').any(|s| s.trim() == key)
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants it quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let scale = if benching {
        Scale {
            secs: env_f64("AGORA_BENCH_SECS").unwrap_or(2.0),
            echo: 20_000,
            aged: env_f64("AGORA_BENCH_AGED").map_or(1_000_000, |v| v as u64),
        }
    } else {
        Scale {
            secs: 0.1,
            echo: 500,
            aged: 10_000,
        }
    };
    // What an app would use: the multi-thread runtime (one worker per core).
    // `AGORA_BENCH_RT=current` runs the clients on a current-thread runtime instead.
    let mut builder = match std::env::var("AGORA_BENCH_RT").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let rt = Arc::new(builder.enable_all().build().unwrap());

    let mut e = echo(scale.echo);
    let echo_p50 = micros(e.percentile(0.50));
    let echo_p99 = micros(e.percentile(0.99));
    println!(
        "bare DEALER/ROUTER echo: {:.0} round trips/s, p50 {echo_p50:.0} µs, p99 {echo_p99:.0} µs",
        e.pairs_per_sec()
    );
    println!();
    println!(
        "{:<24} {:<10} {:<18} {:>10} {:>10} {:>9} {:>9}",
        "server", "space", "clients", "pairs/s", "ops/s", "p50 µs", "p99 µs"
    );
    let servers = std::env::var("AGORA_BENCH_SERVERS").unwrap_or_default();
    let rows = std::env::var("AGORA_BENCH_ROWS").unwrap_or_default();
    let kinds = [
        Kind::Memory,
        Kind::MemorySpin,
        Kind::WalNoFsync,
        Kind::WalEvery5ms,
    ]
    .into_iter()
    .filter(|k| wanted(&servers, k.key()));
    for kind in kinds {
        let target = Target::start(kind);
        let ep = target.endpoint();
        for aged in [false, true] {
            if aged && scale.aged == 0 {
                continue;
            }
            let label = if aged {
                let took = age(target.space(), scale.aged);
                eprintln!(
                    "  ({}: stored {} tuples in {:.1} s)",
                    kind.name(),
                    scale.aged,
                    took.as_secs_f64()
                );
                format!("aged {}", human(scale.aged))
            } else {
                "fresh".to_string()
            };
            let mut seq_p50 = None;
            let mut joined_p50 = None;
            for r in ROWS.iter().filter(|r| wanted(&rows, r.key)) {
                let f = rt.block_on(clients(&ep, r.clients, r.inflight, r.joined, scale.secs));
                let p50 = row(kind.name(), &label, r.label, f);
                match r.key {
                    "seq" => seq_p50 = Some(p50),
                    "join" => joined_p50 = Some(p50),
                    _ => {}
                }
            }
            if let (false, Some(p50), Some(joined_p50)) = (aged, seq_p50, joined_p50) {
                eprintln!(
                    "  ({}: at p50 a sequential pair = {:.2} echo round trips, a join!ed one \
                     {:.2})",
                    kind.name(),
                    p50 / echo_p50.max(1e-9),
                    joined_p50 / echo_p50.max(1e-9)
                );
            }
        }
    }
}

fn human(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
