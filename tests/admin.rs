//! The admin socket and `saslauthd-rs-ctl`: after a scripted mix of good, wrong and unknown
//! logins on both sockets, the metrics parse as OpenMetrics (Python's prometheus_client
//! parser, not string matching) and every counter equals what was sent, the histograms'
//! counts too; `stats` summarizes them; `reload` is SIGHUP; another uid is refused.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::dovecot::{plain, Client};
use common::{ctl, Daemon, CTL};

/// The samples of an OpenMetrics text, as the reference parser reads them: name and sorted
/// labels to value. `None` when no parser is installed.
fn parse_openmetrics(text: &str) -> Option<BTreeMap<String, f64>> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output()
        .ok()?;
    if !probe.status.success() {
        if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("python3 with prometheus_client is needed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
        }
        eprintln!("SKIPPED: no OpenMetrics parser (pip install prometheus-client)");
        return None;
    }
    let out = common::run_with_stdin(
        Command::new("python3").args(["-c", script]),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout).unwrap();
    Some(parsed)
}

/// The daemon's metrics, parsed (`None` when no parser is installed).
fn scrape(d: &Daemon) -> Option<BTreeMap<String, f64>> {
    let (code, text, err) = ctl(&d.run_dir, &["metrics"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse_openmetrics(&text)
}

#[test]
fn metrics_count_what_was_sent() {
    let (d, auth) = Daemon::with_dovecot(&["--max-connections", "2"]);
    // What the harness's start-up probes counted.
    let Some(before) = scrape(&d) else {
        return;
    };
    // The saslauthd socket: 3 right, 2 wrong, 1 unknown.
    for _ in 0..3 {
        assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    }
    for _ in 0..2 {
        assert_eq!(d.ask("alice", "wrong", "smtp", "example.org"), "NO");
    }
    assert_eq!(d.ask("nobody", "secret", "smtp", "example.org"), "NO");
    // The Dovecot socket: 2 PLAIN right, 1 PLAIN wrong, 1 LOGIN right.
    let mut c = Client::postfix(&auth);
    for (id, password) in [(1, "secret"), (2, "secret"), (3, "nope")] {
        c.send(&format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\tresp={}\n",
            plain("alice@example.org", password)
        ));
        c.line();
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    c.send("AUTH\t4\tLOGIN\tservice=smtp\n");
    c.line();
    c.send(&format!("CONT\t4\t{}\n", b64("alice@example.org")));
    c.line();
    c.send(&format!("CONT\t4\t{}\n", b64("secret")));
    assert!(c.line().starts_with("OK\t4\t"));
    // A passdb that breaks: the store replaced by something that is not a sasldb.
    let moved = d.dir.path().join("moved");
    std::fs::rename(&d.sasldb, &moved).unwrap();
    std::fs::write(&d.sasldb, "not a database\n").unwrap();
    assert!(d
        .ask("alice", "secret", "smtp", "example.org")
        .starts_with("NO"));
    std::fs::rename(&moved, &d.sasldb).unwrap();

    let samples = scrape(&d).unwrap();
    let get = |key: &str| samples.get(key).copied().unwrap_or(0.0);
    let mux = d.run_dir.join("mux").display().to_string();
    let admin = d.run_dir.join("admin").display().to_string();
    let dovecot = auth.display().to_string();
    let delta = |key: &str| get(key) - before.get(key).copied().unwrap_or(0.0);
    let connections = |protocol: &str, listener: &str| {
        delta(&format!(
            "saslauthd_rs_connections_total{{listener={listener},protocol={protocol}}}"
        ))
    };
    // The harness's readiness probe (one connect to mux, closed at once) is counted when the
    // listener's accept loop reaches it, which may be after the first scrape; it is ahead of
    // the 7 asks in the same queue, so by now it is counted: 1 + 7 in all.
    assert_eq!(
        get(&format!(
            "saslauthd_rs_connections_total{{listener={mux},protocol=saslauthd}}"
        )),
        8.0,
        "{samples:?}"
    );
    assert_eq!(connections("dovecot", &dovecot), 1.0);
    assert_eq!(connections("admin", &admin), 1.0, "this scrape's");
    let open = |protocol: &str, listener: &str| {
        get(&format!(
            "saslauthd_rs_connections_open{{listener={listener},protocol={protocol}}}"
        ))
    };
    assert_eq!(open("dovecot", &dovecot), 1.0, "the client still connected");
    assert_eq!(open("admin", &admin), 1.0, "this scrape");
    for protocol in ["saslauthd", "dovecot", "admin"] {
        assert_eq!(
            get(&format!(
                "saslauthd_rs_requests_in_flight{{protocol={protocol}}}"
            )),
            0.0
        );
    }
    assert_eq!(get("saslauthd_rs_pool_queue_depth{}"), 0.0);
    assert_eq!(
        get("saslauthd_rs_backend_errors_total{kind=error,passdb=sasldb}"),
        1.0
    );
    let requests = |protocol: &str, mechanism: &str, verdict: &str| {
        get(&format!(
            "saslauthd_rs_requests_total{{mechanism={mechanism},passdb=sasldb,protocol={protocol},verdict={verdict}}}"
        ))
    };
    assert_eq!(requests("saslauthd", "none", "success"), 3.0, "{samples:?}");
    assert_eq!(requests("saslauthd", "none", "failure"), 3.0);
    assert_eq!(requests("saslauthd", "none", "error"), 1.0);
    assert_eq!(requests("dovecot", "PLAIN", "success"), 2.0);
    assert_eq!(requests("dovecot", "PLAIN", "failure"), 1.0);
    assert_eq!(requests("dovecot", "LOGIN", "success"), 1.0);
    assert_eq!(
        get("saslauthd_rs_request_duration_seconds_count{passdb=sasldb,protocol=saslauthd}"),
        7.0
    );
    assert_eq!(
        get("saslauthd_rs_request_duration_seconds_count{passdb=sasldb,protocol=dovecot}"),
        4.0
    );
    // Every bucket holds at most the count, the +Inf bucket exactly it.
    assert_eq!(
        get("saslauthd_rs_request_duration_seconds_bucket{le=+Inf,passdb=sasldb,protocol=saslauthd}"),
        7.0
    );
    assert!(get("saslauthd_rs_start_time_seconds{}") > 1.7e9);
    assert_eq!(
        get(&format!(
            "saslauthd_rs_build_info{{version={}}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // The harness runs with --failure-delay 0: nothing was delayed.
    assert_eq!(get("saslauthd_rs_failure_delays_total{}"), 0.0);

    let (code, stats, _) = ctl(&d.run_dir, &["stats"]);
    assert_eq!(code, Some(0));
    assert!(stats.contains("saslauthd  success  3"), "{stats}");
    assert!(stats.contains("dovecot    failure  1"), "{stats}");
    assert!(stats.contains("PLAIN          3"), "{stats}");
    assert!(stats.contains("backend errors: sasldb error 1"), "{stats}");
    assert!(
        stats.contains(&format!("  {}: 1, 1, 0\n", auth.display())),
        "the Dovecot listener: one open, one let in, none refused: {stats}"
    );

    // The mux socket at its limit (2): a third connection is closed at once, and counted.
    let idle: Vec<_> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&mux).unwrap())
        .collect();
    // Both seen: 10 let in (the probe, the 7 asks, these 2).
    d.wait_on_mux(2, 10);
    let mut third = std::os::unix::net::UnixStream::connect(&mux).unwrap();
    let mut reply = Vec::new();
    use std::io::Read;
    let _ = third.read_to_end(&mut reply);
    assert!(reply.is_empty(), "closed without a reply");
    drop(idle);
    let samples = scrape(&d).unwrap();
    assert_eq!(
        samples.get(&format!(
            "saslauthd_rs_connections_refused_total{{listener={mux},protocol=saslauthd,reason=limit}}"
        )),
        Some(&1.0),
        "{samples:?}"
    );
    eprintln!(
        "metrics: 11 logins on two sockets (one a backend error), 7 + 1 connections, one \
         refused at the limit: every counter and histogram count as sent"
    );
}

#[test]
fn reload_is_sighup_and_other_users_are_refused() {
    let (d, _) = Daemon::with_dovecot(&[]);
    let (code, answer, err) = ctl(&d.run_dir, &["reload"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(answer.starts_with("ok: reloading"), "{answer}");
    d.wait_for_log("SIGHUP: configuration reloaded", 1);
    let (code, _, err) = ctl(&d.run_dir, &["frobnicate"]);
    assert_eq!(code, Some(1), "{err}");
    // The socket is the daemon user's, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let admin = d.run_dir.join("admin");
    assert_eq!(
        std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777,
        0o600
    );
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // Another uid: refused (the mode keeps nobody out; were it open, SO_PEERCRED would).
    std::fs::set_permissions(&d.run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for mode in [0o600, 0o666] {
        std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                CTL,
                "-m",
            ])
            .arg(&d.run_dir)
            .arg("metrics")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "mode {mode:o}: {err}");
        assert!(out.stdout.is_empty(), "mode {mode:o}: nothing told");
        if mode == 0o666 {
            assert!(err.contains("only root and the daemon's user"), "{err}");
            assert!(d
                .log_text()
                .contains("admin socket: refused a connection from uid 65534"));
        }
    }
    if let Some(samples) = scrape(&d) {
        let key = format!(
            "saslauthd_rs_connections_refused_total{{listener={},protocol=admin,reason=peer_uid}}",
            admin.display()
        );
        assert_eq!(samples.get(&key), Some(&1.0), "{samples:?}");
    }
}

#[test]
fn penalty_list_and_reset_and_a_test_login() {
    let (d, auth) = Daemon::with_dovecot(&["--failure-delay", "0.05"]);
    let mut c = Client::postfix(&auth);
    for (id, password) in [(1, "nope"), (2, "nope again")] {
        c.send(&format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={}\n",
            plain("alice@example.org", password)
        ));
        assert!(c.line().starts_with(&format!("FAIL\t{id}")));
    }
    let (code, list, err) = ctl(&d.run_dir, &["penalty", "list"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[1].starts_with("192.0.2.7\t2\t"), "two steps: {list}");
    assert!(lines[2].starts_with("users guessing"), "{list}");
    assert!(
        lines[3].starts_with("alice@example.org\t2\t"),
        "two guesses: {list}"
    );
    let (code, answer, _) = ctl(&d.run_dir, &["penalty", "reset", "192.0.2.7"]);
    assert_eq!(code, Some(0));
    assert_eq!(answer, "ok: 192.0.2.7 is no longer delayed\n");
    let (code, answer, _) = ctl(&d.run_dir, &["penalty", "reset-user", "alice@example.org"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        answer,
        "ok: alice@example.org's wrong guesses are forgotten\n"
    );
    let (_, list, _) = ctl(&d.run_dir, &["penalty", "list"]);
    assert_eq!(list.lines().count(), 2, "nobody delayed: {list}");
    let (_, answer, _) = ctl(&d.run_dir, &["penalty", "reset", "192.0.2.7"]);
    assert_eq!(answer, "ok: 192.0.2.7 had no delay\n");
    let (code, _, err) = ctl(&d.run_dir, &["penalty", "reset", "not-an-address"]);
    assert_eq!(
        (code, err.contains("is not an IP address")),
        (Some(1), true)
    );

    // `test`: through the driver, as a request; a password with a space in it travels whole.
    let (code, answer, err) = ctl(
        &d.run_dir,
        &["test", "alice", "secret", "--realm", "example.org"],
    );
    assert_eq!(code, Some(0), "{answer}{err}");
    assert!(answer.starts_with("ok: alice authenticated"), "{answer}");
    let (code, answer, _) = ctl(
        &d.run_dir,
        &["test", "alice", "sec ret", "--realm", "example.org"],
    );
    assert_eq!(code, Some(1));
    assert!(answer.starts_with("fail: alice: "), "{answer}");
    let (code, _, err) = ctl(&d.run_dir, &["cache", "flush"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("the credential cache is off"), "{err}");
    let (_, text, _) = ctl(&d.run_dir, &["metrics"]);
    let Some(samples) = parse_openmetrics(&text) else {
        return;
    };
    let admin = |verdict: &str| {
        samples
            .get(&format!(
                "saslauthd_rs_requests_total{{mechanism=none,passdb=sasldb,protocol=admin,verdict={verdict}}}"
            ))
            .copied()
    };
    assert_eq!(
        (admin("success"), admin("failure")),
        (Some(1.0), Some(1.0)),
        "{text}"
    );
    assert_eq!(
        samples.get("saslauthd_rs_penalty_peers{}"),
        Some(&0.0),
        "{text}"
    );
    // Never a password in the log.
    assert!(!d.log_text().contains("sec ret"));
}

#[test]
fn metrics_over_http_on_loopback() {
    use std::io::{Read, Write};
    let conf_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = conf_dir.path().join("saslauthd-rs.toml");
    std::fs::write(&conf, format!("metrics_address = \"{port}\"\n")).unwrap();
    let (d, _) = Daemon::with_dovecot(&["--config", conf.to_str().unwrap()]);
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    assert_eq!(d.ask("alice", "wrong", "smtp", "example.org"), "NO");
    let get = |request: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let answer = get(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: application/openmetrics-text"));
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    if let Some(samples) = parse_openmetrics(body) {
        let key = |verdict: &str| {
            format!(
                "saslauthd_rs_requests_total{{mechanism=none,passdb=sasldb,protocol=saslauthd,verdict={verdict}}}"
            )
        };
        assert_eq!(samples.get(&key("success")), Some(&1.0), "{body}");
        assert_eq!(samples.get(&key("failure")), Some(&1.0));
    }
    // Every series the sample Grafana dashboard draws is one the daemon serves.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/saslauthd-compat/prometheus/grafana-dashboard.json"
    ))
    .unwrap();
    let mut drawn = 0;
    for piece in dashboard.split("saslauthd_rs_").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_total", "_bucket", "_info"]
            .iter()
            .fold(name.as_str(), |n, suffix| {
                n.strip_suffix(suffix).unwrap_or(n)
            });
        assert!(
            body.contains(&format!("# TYPE saslauthd_rs_{family} ")),
            "the dashboard draws saslauthd_rs_{name}, which is not served"
        );
        drawn += 1;
    }
    assert!(drawn >= 8, "{drawn}");
    assert!(get(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(get(b"nonsense\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let huge = get(&[b'x'; 9000]);
    assert!(
        huge.is_empty() || huge.starts_with("HTTP/1.1 431 "),
        "{huge}"
    );
    assert!(d
        .log_text()
        .contains(&format!("metrics on http://127.0.0.1:{port}/metrics")));
}

#[test]
fn top_in_a_real_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("tmux is needed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
        }
        eprintln!("SKIPPED: no tmux");
        return;
    }
    let (d, auth) = Daemon::with_dovecot(&["--failure-delay", "0.01"]);
    let session = format!("saslauthd-rs-top-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .output()
            .unwrap()
    };
    let command = format!("{CTL} -m {} top --count 30", d.run_dir.display());
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        &session,
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    // Logins while it runs: 5 right, 3 wrong from one throttled address.
    let mut c = Client::postfix(&auth);
    for id in 1..=8 {
        // Three different wrong passwords: three steps (a retry of one would not climb).
        let password = if id <= 5 {
            "secret".to_string()
        } else {
            format!("nope{id}")
        };
        c.send(&format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\trip=198.51.100.9\tresp={}\n",
            plain("alice@example.org", &password)
        ));
        c.line();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let screen = loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let shown = tmux(&["capture-pane", "-p", "-t", &session]);
        let text = String::from_utf8_lossy(&shown.stdout).into_owned();
        if text.contains("since start: 5 logins, 3 failures") && text.contains("198.51.100.9") {
            break text;
        }
        if std::time::Instant::now() > deadline {
            tmux(&["kill-server"]);
            panic!("top never showed the figures:\n{text}");
        }
    };
    tmux(&["kill-server"]);
    assert!(screen.contains("logins/s"), "{screen}");
    assert!(screen.contains("p99"), "{screen}");
    assert!(
        screen.contains("connections open 1    in flight 0    queued for a worker 0"),
        "the Postfix client's connection: {screen}"
    );
    assert!(
        screen.contains("198.51.100.9   3   "),
        "step 3 after three failures: {screen}"
    );
    eprintln!("top showed:\n{screen}");
}
