//! `saslauthd-rs-ctl`: the admin command, over the daemon's admin socket (`<run_dir>/admin`,
//! mode 0600: root or the daemon's user).
//!
//! ```text
//! saslauthd-rs-ctl [-m RUN_DIR] stats      a summary of the metrics
//! saslauthd-rs-ctl [-m RUN_DIR] metrics    the OpenMetrics text (what a scraper reads)
//! saslauthd-rs-ctl [-m RUN_DIR] reload     as SIGHUP
//! saslauthd-rs-ctl [-m RUN_DIR] top        a live view, refreshed every second
//! saslauthd-rs-ctl [-m RUN_DIR] cache flush [USER]
//! saslauthd-rs-ctl [-m RUN_DIR] penalty list|reset ADDR|reset-user USER
//! saslauthd-rs-ctl [-m RUN_DIR] test USER PASSWORD [--service S] [--realm R]
//! saslauthd-rs-ctl pw [-s SCHEME] [-u USER] [-p PASSWORD] [-t HASH] | pw -l
//! ```
//!
//! `pw` makes a password value in Dovecot's `{SCHEME}` notation for the SQL passdb, as
//! `doveadm pw` does (default `ARGON2ID`), or with `-t` tests one; it needs no daemon.
//!
//! Exit 0 when the daemon answered (and `test` authenticated), 1 on a usage error, a refusal
//! or a failed `test`, 2 when it cannot be reached.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use saslauthd_rs::getopt::{self, Spec};

const SPEC: Spec<'static> = Spec {
    options: saslauthd_rs::tools::options::CTL,
};

fn usage(program: &str) -> String {
    format!(
        "usage: {program} [-m RUN_DIR] stats|metrics|reload|top [--count N]\n       \
         {program} [-m RUN_DIR] cache flush [USER]\n       \
         {program} [-m RUN_DIR] penalty list|reset ADDR|reset-user USER\n       \
         {program} [-m RUN_DIR] test USER PASSWORD [--service S] [--realm R]\n       \
         {program} pw [-s SCHEME] [-u USER] [-p PASSWORD] [-t HASH] | pw -l\n"
    )
}

/// A human summary of the OpenMetrics text: requests by protocol and verdict, by mechanism,
/// the failure delays, connections by listener, what is in flight, backend errors, the cache.
fn summary(metrics: &str) -> String {
    let mut by_protocol: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut by_mechanism: BTreeMap<String, f64> = BTreeMap::new();
    // Listener: open, let in, refused (by reason).
    let mut listeners: BTreeMap<String, (f64, f64, BTreeMap<String, f64>)> = BTreeMap::new();
    let mut backend: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut cache: BTreeMap<String, f64> = BTreeMap::new();
    let (mut delays, mut in_flight, mut queued) = (0.0, 0.0, 0.0);
    for line in metrics.lines() {
        let Some((name, rest)) = line.split_once('{').or_else(|| line.split_once(' ')) else {
            continue;
        };
        let value = |rest: &str| rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let label = |rest: &str, key: &str| {
            rest.split(['{', ',', '}'])
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        match name {
            "saslauthd_rs_requests_total" => {
                let v = value(rest).unwrap_or(0.0);
                *by_protocol
                    .entry((label(rest, "protocol"), label(rest, "verdict")))
                    .or_default() += v;
                *by_mechanism.entry(label(rest, "mechanism")).or_default() += v;
            }
            "saslauthd_rs_failure_delays_total" => delays = value(rest).unwrap_or(0.0),
            "saslauthd_rs_requests_in_flight" => in_flight += value(rest).unwrap_or(0.0),
            "saslauthd_rs_pool_queue_depth" => queued = value(rest).unwrap_or(0.0),
            "saslauthd_rs_connections_open" | "saslauthd_rs_connections_total" => {
                let entry = listeners.entry(label(rest, "listener")).or_default();
                let v = value(rest).unwrap_or(0.0);
                match name.ends_with("_open") {
                    true => entry.0 = v,
                    false => entry.1 = v,
                }
            }
            "saslauthd_rs_connections_refused_total" => {
                let v = value(rest).unwrap_or(0.0);
                if v > 0.0 {
                    let entry = listeners.entry(label(rest, "listener")).or_default();
                    entry.2.insert(label(rest, "reason"), v);
                }
            }
            "saslauthd_rs_backend_errors_total" => {
                *backend
                    .entry((label(rest, "passdb"), label(rest, "kind")))
                    .or_default() += value(rest).unwrap_or(0.0);
            }
            "saslauthd_rs_cache_lookups_total" => {
                cache.insert(label(rest, "result"), value(rest).unwrap_or(0.0));
            }
            "saslauthd_rs_cache_entries" => {
                cache.insert("entries".into(), value(rest).unwrap_or(0.0));
            }
            _ => {}
        }
    }
    let mut out = String::from("requests (protocol, verdict):\n");
    for ((protocol, verdict), n) in &by_protocol {
        out += &format!("  {protocol:<10} {verdict:<8} {n}\n");
    }
    out += "by mechanism:\n";
    for (mechanism, n) in &by_mechanism {
        out += &format!("  {mechanism:<14} {n}\n");
    }
    out += &format!("failures delayed by the throttle: {delays}\n");
    out += &format!("in flight: {in_flight} requests; {queued} waiting for a worker\n");
    out += "connections (listener: open, let in, refused):\n";
    for (listener, (open, total, refused)) in &listeners {
        let refused: Vec<String> = refused.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let refused = match refused.is_empty() {
            true => "0".to_string(),
            false => refused.join(", "),
        };
        out += &format!("  {listener}: {open}, {total}, {refused}\n");
    }
    let errors: Vec<String> = backend
        .iter()
        .map(|((passdb, kind), n)| format!("{passdb} {kind} {n}"))
        .collect();
    out += &match errors.is_empty() {
        true => "backend errors: none\n".to_string(),
        false => format!("backend errors: {}\n", errors.join(", ")),
    };
    let get = |key: &str| cache.get(key).copied().unwrap_or(0.0);
    out += &format!(
        "credential cache: {} hits, {} misses, {} entries\n",
        get("hit"),
        get("miss"),
        get("entries")
    );
    out
}

/// What `top` reads from one scrape: successes, failures (refusals and wrong passwords),
/// errors, the duration buckets summed over protocols and passdbs, the delays.
#[derive(Default)]
struct Frame {
    success: f64,
    failure: f64,
    error: f64,
    delays: f64,
    open: f64,
    in_flight: f64,
    queued: f64,
    backend_errors: f64,
    buckets: BTreeMap<u64, f64>,
}

fn frame(metrics: &str) -> Frame {
    let mut f = Frame::default();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with("saslauthd_rs_requests_total{") {
            if series.contains("verdict=\"success\"") {
                f.success += value;
            } else if series.contains("verdict=\"error\"") {
                f.error += value;
            } else {
                f.failure += value;
            }
        } else if series.starts_with("saslauthd_rs_request_duration_seconds_bucket{") {
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("+Inf");
            // In microseconds, so that the map orders them; +Inf last.
            let key = le.parse::<f64>().map_or(u64::MAX, |s| (s * 1e6) as u64);
            *f.buckets.entry(key).or_default() += value;
        } else if series == "saslauthd_rs_failure_delays_total" {
            f.delays = value;
        } else if series.starts_with("saslauthd_rs_connections_open{")
            && !series.contains("protocol=\"admin\"")
            && !series.contains("protocol=\"metrics\"")
        {
            f.open += value;
        } else if series.starts_with("saslauthd_rs_requests_in_flight{") {
            f.in_flight += value;
        } else if series == "saslauthd_rs_pool_queue_depth" {
            f.queued = value;
        } else if series.starts_with("saslauthd_rs_backend_errors_total{") {
            f.backend_errors += value;
        }
    }
    f
}

/// The 99th percentile of the durations between two frames: the upper bound of the bucket
/// that holds it.
fn p99(before: &Frame, now: &Frame) -> Option<f64> {
    let total = now.buckets.get(&u64::MAX)? - before.buckets.get(&u64::MAX).unwrap_or(&0.0);
    if total <= 0.0 {
        return None;
    }
    now.buckets.iter().find_map(|(le, n)| {
        let seen = n - before.buckets.get(le).unwrap_or(&0.0);
        (seen >= 0.99 * total).then(|| *le as f64 / 1e6)
    })
}

/// `top`: a screen a second, until interrupted (or `--count` screens).
fn top(program: &str, socket: &std::path::Path, count: Option<u64>) -> ExitCode {
    let ask = |command: &str| saslauthd_rs::client::admin(socket, command, Duration::from_secs(5));
    let mut before: Option<Frame> = None;
    let mut shown = 0u64;
    loop {
        let (metrics, peers) = match (ask("metrics"), ask("penalty\tlist")) {
            (Ok(m), Ok(p)) if !m.starts_with("error:") => (m, p),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{program}: cannot reach {}: {e}", socket.display());
                return ExitCode::from(2);
            }
            (Ok(answer), _) => {
                eprint!("{program}: {}", answer.trim_start_matches("error: "));
                return ExitCode::from(1);
            }
        };
        let now = frame(&metrics);
        let mut screen = String::from("\x1b[H\x1b[2J");
        screen += &format!("saslauthd-rs top   {}\n\n", socket.display());
        match &before {
            None => {
                screen += "logins/s      -    failures/s      -    errors/s      -    p99      -\n"
            }
            Some(b) => {
                let p99 = p99(b, &now).map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3));
                screen += &format!(
                    "logins/s {:>6.0}    failures/s {:>6.0}    errors/s {:>6.0}    p99 {p99:>8}\n",
                    now.success - b.success,
                    now.failure - b.failure,
                    now.error - b.error,
                );
            }
        }
        screen += &format!(
            "since start: {} logins, {} failures, {} errors, {} failures delayed\n",
            now.success, now.failure, now.error, now.delays
        );
        screen += &format!(
            "connections open {}    in flight {}    queued for a worker {}    backend errors {}\n\n",
            now.open, now.in_flight, now.queued, now.backend_errors
        );
        screen += "throttled peers (address, step, last failure):\n";
        // The peers come first, up to the users' heading (a line without a tab).
        let list: Vec<&str> = peers
            .lines()
            .skip(1)
            .take_while(|line| line.contains('\t'))
            .take(10)
            .collect();
        if list.is_empty() {
            screen += "  none\n";
        }
        for peer in list {
            screen += &format!("  {}\n", peer.replace('\t', "   "));
        }
        print!("{screen}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        before = Some(now);
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `pw`'s options.
#[derive(Debug, Default, PartialEq, Eq)]
struct PwOptions {
    scheme: Option<String>,
    user: String,
    password: Option<String>,
    test: Option<String>,
    list: bool,
}

/// `pw`: a new value (or, with `-t`, a test of one), as `doveadm pw`.
fn pw_command(program: &str, pw: PwOptions) -> ExitCode {
    use saslauthd_rs::passdb::scheme;
    if pw.list {
        println!("{}", scheme::GENERATED.join(" "));
        return ExitCode::SUCCESS;
    }
    let password = match pw.password {
        Some(p) => zeroize::Zeroizing::new(p.into_bytes()),
        None => match read_new_password() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{program}: {e}");
                return ExitCode::from(1);
            }
        },
    };
    if let Some(stored) = pw.test {
        let default = pw.scheme.as_deref().unwrap_or("PLAIN");
        return match scheme::verify(stored.as_bytes(), &password, pw.user.as_bytes(), default) {
            Ok(true) => {
                println!("{stored} (verified)");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!(
                    "{program}: reverse password verification check failed: Password mismatch"
                );
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("{program}: {e}");
                ExitCode::from(1)
            }
        };
    }
    let name = pw.scheme.as_deref().unwrap_or("ARGON2ID");
    match scheme::generate(name, &password, pw.user.as_bytes()) {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e} (-l lists the schemes)");
            ExitCode::from(1)
        }
    }
}

/// Why `pw` has no new password.
#[derive(Debug, thiserror::Error)]
enum NewPasswordError {
    #[error(transparent)]
    Read(#[from] saslauthd_rs::tools::ReadPasswordError),
    /// The two typed on the terminal differ (`doveadm pw`'s words).
    #[error("Passwords don't match!")]
    Mismatch,
}

/// The password for `pw`: asked twice on the terminal (as `doveadm pw`), or one line of stdin.
fn read_new_password() -> Result<zeroize::Zeroizing<Vec<u8>>, NewPasswordError> {
    use saslauthd_rs::tools;
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(tools::read_password_pipe(&mut std::io::stdin().lock())?);
    }
    let first = tools::read_password_tty("Enter new password: ")?;
    let again = tools::read_password_tty("Retype new password: ")?;
    if *first != *again {
        return Err(NewPasswordError::Mismatch);
    }
    Ok(first)
}

fn main() -> ExitCode {
    let program = getopt::program_name("saslauthd-rs-ctl");
    let parsed = match SPEC.parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprint!("{program}: {e}\n{}", usage(&program));
            return ExitCode::from(1);
        }
    };
    let mut run_dir = PathBuf::from(saslauthd_rs::protocol::saslauthd::DEFAULT_RUN_DIR);
    let mut test_options = Vec::new();
    let mut count = None;
    let mut pw = PwOptions::default();
    for opt in &parsed.opts {
        let value = || {
            opt.value
                .clone()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        match opt.name.as_str() {
            "m" => run_dir = PathBuf::from(opt.value.clone().unwrap_or_default()),
            "count" => match opt
                .value
                .as_deref()
                .and_then(|v| v.to_str()?.parse::<u64>().ok())
            {
                Some(n) if n > 0 => count = Some(n),
                _ => {
                    eprint!(
                        "{program}: --count takes a positive number\n{}",
                        usage(&program)
                    );
                    return ExitCode::from(1);
                }
            },
            "service" | "realm" => {
                test_options.push(format!("--{}", opt.name));
                test_options.push(
                    opt.value
                        .clone()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            "s" => pw.scheme = Some(value()),
            "u" => pw.user = value(),
            "p" => pw.password = Some(value()),
            "t" => pw.test = Some(value()),
            "l" => pw.list = true,
            "version" => {
                eprintln!("{program}: saslauthd-rs {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            _ => {
                eprint!("{}", usage(&program));
                return ExitCode::from(1);
            }
        }
    }
    let words: Vec<String> = parsed
        .operands
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if !test_options.is_empty() && words.first() != Some(&"test") {
        eprint!(
            "{program}: --service and --realm are for test\n{}",
            usage(&program)
        );
        return ExitCode::from(1);
    }
    let test_words: Vec<&str> = words
        .iter()
        .copied()
        .chain(test_options.iter().map(String::as_str))
        .collect();
    if words.as_slice() == ["pw"] {
        return pw_command(&program, pw);
    }
    if pw != PwOptions::default() {
        eprint!(
            "{program}: -s, -u, -p, -t and -l are for pw\n{}",
            usage(&program)
        );
        return ExitCode::from(1);
    }
    let plain: fn(&str) -> String = str::to_owned;
    if words.as_slice() == ["top"] {
        return top(&program, &run_dir.join("admin"), count);
    }
    let (command, show): (String, fn(&str) -> String) = match words.as_slice() {
        ["stats"] => ("metrics".into(), summary),
        ["metrics"]
        | ["reload"]
        | ["penalty", "list"]
        | ["penalty", "reset", _]
        | ["penalty", "reset-user", _] => (words.join("\t"), plain),
        ["cache", "flush"] | ["cache", "flush", _] => (words.join("\t"), plain),
        ["test", _, _] if test_words.iter().all(|w| !w.contains(['\t', '\n'])) => {
            (test_words.join("\t"), plain)
        }
        _ => {
            eprint!("{}", usage(&program));
            return ExitCode::from(1);
        }
    };
    let socket = run_dir.join("admin");
    match saslauthd_rs::client::admin(&socket, &command, Duration::from_secs(10)) {
        Ok(answer) if answer.starts_with("error:") => {
            eprint!("{program}: {}", answer.trim_start_matches("error: "));
            ExitCode::from(1)
        }
        Ok(answer) if answer.starts_with("fail:") => {
            print!("{answer}");
            ExitCode::from(1)
        }
        Ok(answer) => {
            print!("{}", show(&answer));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: cannot reach {}: {e}", socket.display());
            ExitCode::from(2)
        }
    }
}
