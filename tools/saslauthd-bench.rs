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
//! `--addresses N` gives each request a client address out of N (10.0.0.1 on: the
//! saslauthd request's fifth field, Dovecot's `rip=`), for the throttle's per-address state;
//! the failures' latencies are then reported apart as well.
//!
//! It works against any saslauthd-protocol server, Cyrus's included, so both can be
//! measured by the same generator in the same run (`benches/compare-cyrus.sh`).
//!
//! `--protocol dovecot` speaks Dovecot's auth-client protocol instead: each client keeps one
//! connection (as Postfix's smtpd does) and runs one AUTH at a time on it, `--mech plain` or
//! `--mech scram-sha-256` (the client caches its salted password per salt, as a real client
//! may, so the load is the server's). It works against Dovecot's own auth process too
//! (`benches/compare-dovecot.sh`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use saslauthd_rs::client::{self, Query};
use saslauthd_rs::getopt::{self, ArgKind, OptDef, Spec};

const SPEC: Spec<'static> = Spec {
    options: &[
        OptDef::with(
            None,
            Some("socket"),
            "path",
            ArgKind::File,
            "The socket to load.",
        ),
        OptDef::with(
            None,
            Some("clients"),
            "n",
            ArgKind::Any,
            "Concurrent clients.",
        ),
        OptDef::with(
            None,
            Some("duration"),
            "secs",
            ArgKind::Any,
            "Measured seconds.",
        ),
        OptDef::with(
            None,
            Some("warmup"),
            "secs",
            ArgKind::Any,
            "Unmeasured seconds first.",
        ),
        OptDef::with(None, Some("user"), "user", ArgKind::Any, "The user."),
        OptDef::with(
            None,
            Some("password"),
            "password",
            ArgKind::Any,
            "Its password.",
        ),
        OptDef::with(None, Some("realm"), "realm", ArgKind::Any, "The realm."),
        OptDef::with(
            None,
            Some("service"),
            "service",
            ArgKind::Any,
            "The service.",
        ),
        OptDef::with(
            None,
            Some("fail-percent"),
            "n",
            ArgKind::Any,
            "Wrong passwords, %.",
        ),
        OptDef::with(
            None,
            Some("label"),
            "name",
            ArgKind::Any,
            "The result's label.",
        ),
        OptDef::with(
            None,
            Some("protocol"),
            "protocol",
            ArgKind::Any,
            "saslauthd or dovecot.",
        ),
        OptDef::with(
            None,
            Some("mech"),
            "mech",
            ArgKind::Any,
            "plain, scram-sha-256, oauthbearer or xoauth2 (--password is then the access token).",
        ),
        OptDef::with(
            None,
            Some("addresses"),
            "n",
            ArgKind::Any,
            "Client addresses to send (0: none).",
        ),
        OptDef::flag(Some('h'), Some("help"), "The usage."),
        OptDef::flag(None, Some("version"), "The version."),
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
    dovecot: bool,
    mech: Mech,
    addresses: u64,
}

/// The Dovecot socket's mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mech {
    Plain,
    Scram,
    /// OAUTHBEARER or XOAUTH2, with the token as the password (a wrong one: the token with
    /// `x` appended, which the server refuses after its error challenge).
    OAuthBearer,
    XOAuth2,
}

impl Settings {
    /// Request `i`'s client address, when `--addresses` asks for them.
    fn address(&self, i: u64) -> Option<String> {
        (self.addresses > 0).then(|| {
            let n = (i.wrapping_mul(7919) % self.addresses) + 1;
            format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
        })
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    no: u64,
    errors: u64,
    unexpected: u64,
    latencies_us: Vec<u32>,
    /// The failures' alone.
    failures_us: Vec<u32>,
}

impl Tally {
    /// Counts one request: `Some(ok)` for an answer, `None` for an error; an answer other
    /// than the expected one is counted as unexpected.
    fn record(&mut self, answer: Option<bool>, should_fail: bool, elapsed: Duration) {
        match answer {
            Some(ok) => {
                if ok {
                    self.ok += 1;
                } else {
                    self.no += 1;
                }
                if ok == should_fail {
                    self.unexpected += 1;
                }
            }
            None => self.errors += 1,
        }
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(us);
        if answer == Some(false) {
            self.failures_us.push(us);
        }
    }
}

fn usage() -> &'static str {
    "usage: saslauthd-bench --socket PATH [--clients 16] [--duration 10] [--warmup 1]\n\
     \x20      --user USER --password PASSWORD [--realm REALM] [--service smtp]\n\
     \x20      [--fail-percent 0] [--label NAME] [--protocol saslauthd|dovecot]\n\
     \x20      [--mech plain|scram-sha-256|oauthbearer|xoauth2]\n"
}

/// Why the command line cannot be used.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error(transparent)]
    Getopt(#[from] getopt::GetoptError),
    #[error("{0}: not a number")]
    NotANumber(String),
    #[error("--{option} {value}: {expected}")]
    Value {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("--socket, --user and --password are required")]
    Missing,
    /// `-h`: the usage alone.
    #[error("usage asked for")]
    Help,
}

fn parse() -> Result<Settings, UsageError> {
    let parsed = SPEC.parse(std::env::args_os().skip(1))?;
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
        dovecot: false,
        mech: Mech::Plain,
        addresses: 0,
    };
    let num = |o: &getopt::Opt| -> Result<u64, UsageError> {
        o.str_value()?
            .parse()
            .map_err(|_| UsageError::NotANumber(o.to_string()))
    };
    for o in &parsed.opts {
        match o.name.as_str() {
            "version" => {
                println!("saslauthd-bench {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "socket" => s.socket = PathBuf::from(o.value.clone().unwrap_or_default()),
            "clients" => s.clients = num(o)?.max(1) as usize,
            "duration" => s.duration = Duration::from_secs(num(o)?.clamp(1, 600)),
            "warmup" => s.warmup = Duration::from_secs(num(o)?.min(60)),
            "user" => s.user = o.str_value()?.into(),
            "password" => s.password = o.str_value()?.into(),
            "realm" => s.realm = o.str_value()?.into(),
            "service" => s.service = o.str_value()?.into(),
            "fail-percent" => s.fail_percent = num(o)?.min(100),
            "addresses" => s.addresses = num(o)?.min(1 << 24),
            "label" => s.label = o.str_value()?.into(),
            "protocol" => match o.str_value()? {
                "saslauthd" => s.dovecot = false,
                "dovecot" => s.dovecot = true,
                other => {
                    return Err(UsageError::Value {
                        option: "protocol",
                        value: other.to_owned(),
                        expected: "saslauthd or dovecot",
                    })
                }
            },
            "mech" => match o.str_value()?.to_ascii_lowercase().as_str() {
                "plain" => s.mech = Mech::Plain,
                "scram-sha-256" => s.mech = Mech::Scram,
                "oauthbearer" => s.mech = Mech::OAuthBearer,
                "xoauth2" => s.mech = Mech::XOAuth2,
                other => {
                    return Err(UsageError::Value {
                        option: "mech",
                        value: other.to_owned(),
                        expected: "plain, scram-sha-256, oauthbearer or xoauth2",
                    })
                }
            },
            _ => return Err(UsageError::Help),
        }
    }
    if s.socket.as_os_str().is_empty() || s.user.is_empty() || s.password.is_empty() {
        return Err(UsageError::Missing);
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
        let address = s.address(i);
        let query = Query {
            login: s.user.as_bytes(),
            password: if should_fail {
                wrong.as_bytes()
            } else {
                s.password.as_bytes()
            },
            service: s.service.as_bytes(),
            realm: s.realm.as_bytes(),
            client_addr: address.as_deref().map(str::as_bytes),
        };
        let start = Instant::now();
        let reply = client::query(&s.socket, &query, Duration::from_secs(10));
        let elapsed = start.elapsed();
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        tally.record(
            reply.map(|body| client::is_ok(&body)).ok(),
            should_fail,
            elapsed,
        );
    }
    tally
}

fn main() -> ExitCode {
    let settings = match parse() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            if !matches!(e, UsageError::Help) {
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
                if s.dovecot {
                    dovecot::client(&s, id, &stop, &measuring)
                } else {
                    client(&s, id, &stop, &measuring)
                }
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
        total.failures_us.extend(t.failures_us);
    }
    total.latencies_us.sort_unstable();
    total.failures_us.sort_unstable();
    let at = |lat: &[u32], p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize]
    };
    let pct = |p: f64| at(&total.latencies_us, p);
    let failures = if settings.addresses > 0 && !total.failures_us.is_empty() {
        format!(
            "  failures p50 {} us p99 {} us",
            at(&total.failures_us, 0.5),
            at(&total.failures_us, 0.99)
        )
    } else {
        String::new()
    };
    let requests = total.ok + total.no + total.errors;
    let rate = requests as f64 / elapsed.as_secs_f64();
    println!(
        "{label}: {rate:.0} req/s  p50 {p50} us  p99 {p99} us  max {max} us{failures}  \
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

/// The Dovecot auth-client side of the generator, on the library's client.
mod dovecot {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use saslauthd_rs::client::AuthClient;
    use saslauthd_rs::mech::{ScramClient, ScramHash};

    use super::{Mech, Settings, Tally};

    fn open(s: &Settings) -> std::io::Result<AuthClient> {
        let mut c = AuthClient::connect(&s.socket, Duration::from_secs(10))?;
        c.send(&format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id()))?;
        Ok(c)
    }

    /// One SCRAM-SHA-256 exchange; `Ok(true)` for OK. The client keeps its SaltedPassword,
    /// as a real client may, so the load is the server's.
    fn scram(c: &mut AuthClient, id: u64, client: &mut ScramClient) -> std::io::Result<bool> {
        let first = client.first(&format!("bench{id}"));
        let reply = c.ask(&format!(
            "AUTH\t{id}\tSCRAM-SHA-256\tservice=smtp\tfinal-resp-ok\tresp={}\n",
            B64.encode(first)
        ))?;
        let Some(data) = reply.strip_prefix(&format!("CONT\t{id}\t")) else {
            return Ok(false);
        };
        let server_first = B64.decode(data.trim_end()).unwrap_or_default();
        let Some((last, _)) = client.last(&String::from_utf8_lossy(&server_first)) else {
            return Ok(false);
        };
        let reply = c.ask(&format!("CONT\t{id}\t{}\n", B64.encode(last)))?;
        if reply.starts_with("CONT\t") {
            // A server that ignores final-resp-ok sends v= in a CONT.
            return Ok(c.ask(&format!("CONT\t{id}\t\n"))?.starts_with("OK\t"));
        }
        Ok(reply.starts_with("OK\t"))
    }

    /// One OAUTHBEARER or XOAUTH2 exchange with `token`; `Ok(true)` for OK. A refusal's error
    /// challenge is answered with the mechanism's dummy message.
    fn token(
        c: &mut AuthClient,
        id: u64,
        mech: Mech,
        user: &str,
        token: &str,
    ) -> std::io::Result<bool> {
        let (name, message, dummy) = if mech == Mech::OAuthBearer {
            (
                "OAUTHBEARER",
                format!("n,a={user},\x01auth=Bearer {token}\x01\x01"),
                "AQ==",
            )
        } else {
            (
                "XOAUTH2",
                format!("user={user}\x01auth=Bearer {token}\x01\x01"),
                "",
            )
        };
        let reply = c.ask(&format!(
            "AUTH\t{id}\t{name}\tservice=smtp\tresp={}\n",
            B64.encode(message)
        ))?;
        if reply.starts_with("CONT\t") {
            return Ok(c
                .ask(&format!("CONT\t{id}\t{dummy}\n"))?
                .starts_with("OK\t"));
        }
        Ok(reply.starts_with("OK\t"))
    }

    pub(super) fn client(
        s: &Settings,
        id: usize,
        stop: &AtomicBool,
        measuring: &AtomicBool,
    ) -> Tally {
        let mut tally = Tally {
            latencies_us: Vec::with_capacity(1 << 16),
            ..Tally::default()
        };
        let wrong = format!("{}-wrong", s.password);
        let user = if s.realm.is_empty() {
            s.user.clone()
        } else {
            format!("{}@{}", s.user, s.realm)
        };
        let mut right_scram = ScramClient::new(ScramHash::Sha256, &user, &s.password);
        let mut wrong_scram = ScramClient::new(ScramHash::Sha256, &user, &wrong);
        let mut conn = None;
        let mut i: u64 = id as u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let should_fail = (i * 37 % 100) < s.fail_percent;
            let password = if should_fail { &wrong } else { &s.password };
            let start = Instant::now();
            let result = (|| -> std::io::Result<bool> {
                if conn.is_none() {
                    conn = Some(open(s)?);
                }
                let c = conn.as_mut().expect("just opened");
                if matches!(s.mech, Mech::OAuthBearer | Mech::XOAuth2) {
                    return token(c, i, s.mech, &user, password);
                }
                if s.mech == Mech::Scram {
                    let client = if should_fail {
                        &mut wrong_scram
                    } else {
                        &mut right_scram
                    };
                    return scram(c, i, client);
                }
                let resp = B64.encode(format!("\0{user}\0{password}"));
                let rip = s
                    .address(i)
                    .map(|a| format!("\trip={a}"))
                    .unwrap_or_default();
                Ok(c.ask(&format!(
                    "AUTH\t{i}\tPLAIN\tservice=smtp{rip}\tresp={resp}\n"
                ))?
                .starts_with("OK\t"))
            })();
            let elapsed = start.elapsed();
            if result.is_err() {
                conn = None;
            }
            if !measuring.load(Ordering::Relaxed) {
                continue;
            }
            tally.record(result.ok(), should_fail, elapsed);
        }
        tally
    }
}
