//! `saslauthd-rs-ctl`: the admin command, over the daemon's admin socket (`<run_dir>/admin`,
//! mode 0600: root or the daemon's user).
//!
//! ```text
//! saslauthd-rs-ctl [-m RUN_DIR] stats      a summary of the metrics
//! saslauthd-rs-ctl [-m RUN_DIR] metrics    the OpenMetrics text (what a scraper reads)
//! saslauthd-rs-ctl [-m RUN_DIR] reload     as SIGHUP
//! ```
//!
//! Exit 0 when the daemon answered, 1 on a usage error or a refusal, 2 when it cannot be
//! reached.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use saslauthd_rs::getopt::{self, ArgKind, OptDef, Spec};

const SPEC: Spec<'static> = Spec {
    options: &[
        OptDef::with(
            Some('m'),
            None,
            "path",
            ArgKind::Dir,
            "The daemon's run directory (default /run/saslauthd).",
        ),
        OptDef::flag(Some('h'), Some("help"), "The usage."),
        OptDef::flag(None, Some("version"), "The version."),
    ],
};

fn usage(program: &str) -> String {
    format!("usage: {program} [-m RUN_DIR] stats|metrics|reload\n")
}

/// A human summary of the OpenMetrics text: requests by protocol and verdict, by mechanism,
/// the failure delays, and the latency's median bucket per protocol.
fn summary(metrics: &str) -> String {
    let mut by_protocol: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut by_mechanism: BTreeMap<String, f64> = BTreeMap::new();
    let mut delays = 0.0;
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
    out
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
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "m" => run_dir = PathBuf::from(opt.value.clone().unwrap_or_default()),
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
    let (command, show): (&str, fn(&str) -> String) = match words.join(" ").as_str() {
        "stats" => ("metrics", summary),
        "metrics" => ("metrics", str::to_owned),
        "reload" => ("reload", str::to_owned),
        _ => {
            eprint!("{}", usage(&program));
            return ExitCode::from(1);
        }
    };
    let socket = run_dir.join("admin");
    match saslauthd_rs::client::admin(&socket, command, Duration::from_secs(10)) {
        Ok(answer) if answer.starts_with("error:") => {
            eprint!("{program}: {}", answer.trim_start_matches("error: "));
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
