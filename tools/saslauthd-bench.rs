//! `saslauthd-bench`: a load generator for the saslauthd protocol. N client threads each open
//! a connection per request (as libsasl2 does), send one request, read the reply, close; for
//! a fixed time. It counts replies, checks each against what was expected (a wrong answer
//! under load is a bug, not noise), and reports requests per second and latency percentiles.
//!
//! ```text
//! saslauthd-bench --socket /run/saslauthd/mux --clients 16 --duration 10 \
//!     --user alice --password secret --realm example.org [--fail-percent 10]
//! ```
//!
//! It works against any saslauthd-protocol server, Cyrus's included, so both can be
//! measured by the same generator in the same run (`benches/compare-cyrus.sh`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use saslauthd_rs::client::{self, Query};
use saslauthd_rs::getopt::{self, Spec};

const SPEC: Spec<'static> = Spec {
    short: "h",
    long: &[
        ("socket", true),
        ("clients", true),
        ("duration", true),
        ("warmup", true),
        ("user", true),
        ("password", true),
        ("realm", true),
        ("service", true),
        ("fail-percent", true),
        ("label", true),
        ("help", false),
    ],
};

struct Settings {
    socket: PathBuf,
    clients: usize,
    duration: Duration,
    warmup: Duration,
    user: String,
    password: String,
    realm: String,
    service: String,
    fail_percent: u64,
    label: String,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    no: u64,
    errors: u64,
    unexpected: u64,
    latencies_us: Vec<u32>,
}

fn usage() -> &'static str {
    "usage: saslauthd-bench --socket PATH [--clients 16] [--duration 10] [--warmup 1]\n\
     \x20      --user USER --password PASSWORD [--realm REALM] [--service smtp]\n\
     \x20      [--fail-percent 0] [--label NAME]\n"
}

fn parse() -> Result<Settings, String> {
    let parsed = SPEC
        .parse(std::env::args_os().skip(1))
        .map_err(|e| e.to_string())?;
    let mut s = Settings {
        socket: PathBuf::new(),
        clients: 16,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        user: String::new(),
        password: String::new(),
        realm: String::new(),
        service: "smtp".into(),
        fail_percent: 0,
        label: "saslauthd".into(),
    };
    let num = |o: &getopt::Opt| -> Result<u64, String> {
        o.str_value()
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|_| format!("{o}: not a number"))
    };
    for o in &parsed.opts {
        match o.name.as_str() {
            "socket" => s.socket = PathBuf::from(o.value.clone().unwrap_or_default()),
            "clients" => s.clients = num(o)?.max(1) as usize,
            "duration" => s.duration = Duration::from_secs(num(o)?.clamp(1, 600)),
            "warmup" => s.warmup = Duration::from_secs(num(o)?.min(60)),
            "user" => s.user = o.str_value().map_err(|e| e.to_string())?.into(),
            "password" => s.password = o.str_value().map_err(|e| e.to_string())?.into(),
            "realm" => s.realm = o.str_value().map_err(|e| e.to_string())?.into(),
            "service" => s.service = o.str_value().map_err(|e| e.to_string())?.into(),
            "fail-percent" => s.fail_percent = num(o)?.min(100),
            "label" => s.label = o.str_value().map_err(|e| e.to_string())?.into(),
            _ => return Err(String::new()),
        }
    }
    if s.socket.as_os_str().is_empty() || s.user.is_empty() || s.password.is_empty() {
        return Err("--socket, --user and --password are required".into());
    }
    Ok(s)
}

fn client(s: &Settings, id: usize, stop: &AtomicBool, measuring: &AtomicBool) -> Tally {
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let wrong = format!("{}-wrong", s.password);
    let mut i: u64 = id as u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let should_fail = (i * 37 % 100) < s.fail_percent;
        let query = Query {
            login: s.user.as_bytes(),
            password: if should_fail {
                wrong.as_bytes()
            } else {
                s.password.as_bytes()
            },
            service: s.service.as_bytes(),
            realm: s.realm.as_bytes(),
            client_addr: None,
        };
        let start = Instant::now();
        let reply = client::query(&s.socket, &query, Duration::from_secs(10));
        let elapsed = start.elapsed();
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        match reply {
            Ok(body) => {
                let ok = client::is_ok(&body);
                if ok {
                    tally.ok += 1;
                } else {
                    tally.no += 1;
                }
                if ok == should_fail {
                    tally.unexpected += 1;
                }
            }
            Err(_) => tally.errors += 1,
        }
        tally
            .latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }
    tally
}

fn main() -> ExitCode {
    let settings = match parse() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("saslauthd-bench: {e}");
            }
            eprint!("{}", usage());
            return ExitCode::from(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(settings.clients + 1));
    let threads: Vec<_> = (0..settings.clients)
        .map(|id| {
            let (s, stop, measuring, barrier) = (
                Arc::clone(&settings),
                Arc::clone(&stop),
                Arc::clone(&measuring),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                client(&s, id, &stop, &measuring)
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(settings.warmup);
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(settings.duration);
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for t in threads {
        let t = t.join().expect("client thread");
        total.ok += t.ok;
        total.no += t.no;
        total.errors += t.errors;
        total.unexpected += t.unexpected;
        total.latencies_us.extend(t.latencies_us);
    }
    total.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let lat = &total.latencies_us;
        if lat.is_empty() {
            return 0;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize]
    };
    let requests = total.ok + total.no + total.errors;
    let rate = requests as f64 / elapsed.as_secs_f64();
    println!(
        "{label}: {rate:.0} req/s  p50 {p50} us  p99 {p99} us  max {max} us  \
         ({requests} requests in {secs:.1} s, {clients} clients: ok {ok}, no {no}, errors {errors}, \
         unexpected {unexpected})",
        label = settings.label,
        p50 = pct(0.50),
        p99 = pct(0.99),
        max = pct(1.0),
        secs = elapsed.as_secs_f64(),
        clients = settings.clients,
        ok = total.ok,
        no = total.no,
        errors = total.errors,
        unexpected = total.unexpected,
    );
    if total.errors > 0 || total.unexpected > 0 {
        eprintln!(
            "saslauthd-bench: {} errors, {} unexpected replies",
            total.errors, total.unexpected
        );
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
