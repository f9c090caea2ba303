//! The throttle shared by several daemons through Redis (`throttle_store`), against Debian's
//! Redis 7 run as throwaway servers on loopback ports: several daemons delay a client as one;
//! the user guard trips on a spray from 200 addresses while the user's own login goes
//! through; a store that stops, hangs (`DEBUG SLEEP`) or comes back is never an outage; bad
//! URLs, a wrong password, a prefix another application uses and values that are not ours
//! get a clear error or the local throttle; Redis Cluster, Sentinel and TLS.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dovecot::{plain, Client};
use common::redis::{self, Redis};
use common::{ctl, frame, Daemon, DAEMON, USERS};

fn peers() -> bool {
    common::peers_for("throttle store", redis::missing())
}

/// A daemon over [`USERS`] whose configuration file says `toml`, with `--failure-delay
/// delay`.
fn daemon(toml: &str, delay: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    let sasldb = dir.path().join("sasldb2");
    common::make_sasldb(&sasldb, USERS);
    let conf = dir.path().join("saslauthd-rs.toml");
    std::fs::write(&conf, toml).unwrap();
    let args: Vec<OsString> = vec![
        "-a".into(),
        "sasldb".into(),
        "--sasldb".into(),
        sasldb.into(),
        "--failure-delay".into(),
        delay.into(),
        "--config".into(),
        conf.into(),
        "--dovecot-socket".into(),
        auth.into(),
    ];
    Daemon::spawn(dir, &args, &[])
}

/// `throttle_store = URL` and more lines.
fn store(url: &str, more: &str) -> String {
    format!("throttle_store = \"{url}\"\n{more}")
}

/// A daemon that has connected to its store.
fn shared(url: &str, more: &str, delay: &str) -> Daemon {
    let d = daemon(&store(url, more), delay);
    d.wait_for_log("is up: the throttle is shared", 1);
    d
}

/// `n` daemons sharing one Redis of their own, each with the failure delay `delay`; `None`
/// (the test skips) when Redis is not installed.
fn sharing(n: usize, delay: &str) -> Option<(Redis, Vec<Daemon>)> {
    if !peers() {
        return None;
    }
    let r = Redis::start(redis::Options::default());
    let ds = (0..n).map(|_| shared(&r.url(), "", delay)).collect();
    Some((r, ds))
}

/// alice@example.org's login with `password` from `addr` over the saslauthd socket: the
/// reply and how long it took.
fn login(d: &Daemon, password: &str, addr: &str) -> (String, Duration) {
    login_as(d, "alice", password, addr)
}

fn login_as(d: &Daemon, user: &str, password: &str, addr: &str) -> (String, Duration) {
    let started = Instant::now();
    let reply = d.raw(&frame(&[
        user.as_bytes(),
        password.as_bytes(),
        b"smtp",
        b"example.org",
        addr.as_bytes(),
    ]));
    let took = started.elapsed();
    (
        String::from_utf8_lossy(&reply[2.min(reply.len())..]).into_owned(),
        took,
    )
}

/// A failure's delay at `step` with a 0.2 s base is 0.2 × 2^step, ±20%; the time taken
/// includes the request's own (a few ms, more on a loaded machine).
fn at_step(took: Duration, step: u32) -> bool {
    let base = 0.2 * f64::from(1u32 << step);
    let t = took.as_secs_f64();
    t >= base * 0.8 && t <= base * 1.2 + 0.15
}

/// The value of one series in the daemon's metrics.
fn metric(d: &Daemon, series: &str) -> f64 {
    let (_, text, _) = ctl(&d.run_dir, &["metrics"]);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn three_daemons_delay_a_client_as_one() {
    let Some((r, ds)) = sharing(3, "0.2") else {
        return;
    };
    let addr = "192.0.2.7";
    // Two failures at daemon 1: steps 0 and 1.
    let (reply, took) = login(&ds[0], "guess-1", addr);
    assert!(reply == "NO" && at_step(took, 0), "{reply} {took:?}");
    let (_, took) = login(&ds[0], "guess-2", addr);
    assert!(at_step(took, 1), "{took:?}");
    // Daemons 2 and 3 go on from there.
    let (reply, took) = login(&ds[1], "guess-3", addr);
    assert!(reply == "NO" && at_step(took, 2), "daemon 2: {took:?}");
    let (_, took) = login(&ds[2], "guess-4", addr);
    assert!(at_step(took, 3), "daemon 3: {took:?}");
    // Another address is not affected.
    let (_, took) = login(&ds[2], "guess-5", "198.51.100.1");
    assert!(at_step(took, 0), "another address: {took:?}");
    // The same wrong password again (a client with an old password) does not raise it.
    let (_, took) = login(&ds[1], "guess-5", "198.51.100.1");
    assert!(at_step(took, 1), "{took:?}");
    let (_, took) = login(&ds[0], "guess-5", "198.51.100.1");
    assert!(at_step(took, 1), "the same password: {took:?}");

    // `penalty list` at any daemon shows the store's counts.
    let (code, list, err) = ctl(&ds[2].run_dir, &["penalty", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        list.starts_with("ok: peers delayed") && list.contains("from the store redis://"),
        "{list}"
    );
    assert!(list.contains("\n192.0.2.7\t3\t"), "{list}");
    assert!(
        list.contains("\nalice@example.org\t5\t"),
        "five distinct guesses: {list}"
    );

    // A success at daemon 3 resets the address everywhere.
    let (reply, took) = login(&ds[2], "secret", addr);
    assert_eq!(reply, "OK");
    assert!(
        took < Duration::from_millis(150),
        "a success waits for nothing: {took:?}"
    );
    common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            !r.cli(&["EXISTS", "{saslauthd-rs}:peer:192.0.2.7"])
                .contains('1')
        },
        || "the success's reset did not reach the store".into(),
    );
    let (_, took) = login(&ds[0], "guess-6", addr);
    assert!(at_step(took, 0), "after the success: {took:?}");
    // `penalty reset` at daemon 2 lifts the delay for all.
    login(&ds[0], "guess-7", addr);
    let (code, answer, _) = ctl(&ds[1].run_dir, &["penalty", "reset", addr]);
    assert_eq!(
        (code, answer.as_str()),
        (Some(0), "ok: 192.0.2.7 is no longer delayed\n")
    );
    let (_, took) = login(&ds[2], "guess-8", addr);
    assert!(at_step(took, 0), "after the reset: {took:?}");

    // What Redis holds: no password, only counts and 32-bit fingerprints.
    let dump = r.cli(&["GET", "{saslauthd-rs}:peer:192.0.2.7"]);
    assert!(
        !dump.contains("guess") && !dump.contains("secret"),
        "{dump}"
    );
    let guesses = r.cli(&["ZRANGE", "{saslauthd-rs}:user:alice@example.org", "0", "-1"]);
    assert!(
        guesses.lines().all(|g| g.parse::<u32>().is_ok()),
        "{guesses}"
    );
    assert!(
        metric(
            &ds[0],
            "saslauthd_rs_throttle_store_calls_total{result=\"ok\"}"
        ) >= 3.0
    );
    assert_eq!(metric(&ds[0], "saslauthd_rs_throttle_store_up"), 1.0);
}

/// alice's login over the Dovecot socket (PLAIN, or CRAM-MD5 with a wrong digest when
/// `password` is `None`) from `addr`: whether it succeeded, and how long it took.
fn dovecot_login(d: &Daemon, password: Option<&str>, addr: &str) -> (bool, Duration) {
    let mut c = Client::postfix(&d.dir.path().join("auth"));
    let started = Instant::now();
    match password {
        Some(password) => c.send(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\trip={addr}\tresp={}\n",
            plain("alice@example.org", password)
        )),
        None => {
            c.send(&format!("AUTH\t1\tCRAM-MD5\tservice=smtp\trip={addr}\n"));
            assert!(c.line().starts_with("CONT\t1\t"));
            // "alice@example.org 0123...": a digest that is not the right one.
            c.send(
                "CONT\t1\tYWxpY2VAZXhhbXBsZS5vcmcgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=\n",
            );
        }
    }
    let line = c.line();
    (line.starts_with("OK\t1"), started.elapsed())
}

#[test]
fn the_dovecot_socket_shares_the_same_counts() {
    let Some((r, ds)) = sharing(2, "0.2") else {
        return;
    };
    let addr = "192.0.2.40";
    let (ok, took) = dovecot_login(&ds[0], Some("wrong-1"), addr);
    assert!(!ok && at_step(took, 0), "{took:?}");
    let (_, took) = login(&ds[1], "wrong-2", addr);
    assert!(
        at_step(took, 1),
        "the saslauthd socket of daemon 2: {took:?}"
    );
    let (ok, took) = dovecot_login(&ds[1], Some("wrong-3"), addr);
    assert!(!ok && at_step(took, 2), "{took:?}");
    // A mechanism's own failure (a wrong CRAM-MD5 digest) counts there too.
    let (ok, took) = dovecot_login(&ds[0], None, addr);
    assert!(!ok && at_step(took, 3), "{took:?}");
    let (ok, took) = dovecot_login(&ds[0], Some("secret"), addr);
    assert!(ok && took < Duration::from_millis(150), "{took:?}");
    common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            !r.cli(&["EXISTS", "{saslauthd-rs}:peer:192.0.2.40"])
                .contains('1')
        },
        || "the success's reset did not reach the store".into(),
    );
    let (_, took) = dovecot_login(&ds[1], None, addr);
    assert!(at_step(took, 0), "after the success: {took:?}");
}

#[test]
fn two_hundred_addresses_trip_the_user_guard_and_the_user_still_logs_in() {
    // A 50 ms base: steps of 50, 100, 200 and 400 ms.
    let Some((_r, ds)) = sharing(3, "0.05") else {
        return;
    };
    // alice's usual address.
    assert_eq!(login(&ds[0], "secret", "203.0.113.5").0, "OK");
    // 200 addresses, one guess each, spread over the three daemons, 20 at a time.
    let took: Vec<(usize, Duration)> = std::thread::scope(|s| {
        let ds = &ds;
        let workers: Vec<_> = (0..20)
            .map(|w| {
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let n = i * 20 + w;
                            let addr = format!("10.{}.{}.1", n / 250, n % 250);
                            let (reply, took) = login(&ds[n % 3], &format!("spray-{n}"), &addr);
                            assert_eq!(reply, "NO");
                            (n, took)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // No address failed twice, so the address rule delays each by the base; the user guard
    // delays all but the first dozen or so by 400 ms.
    let slow = took
        .iter()
        .filter(|(_, t)| *t >= Duration::from_millis(320))
        .count();
    assert!(slow >= 180, "{slow} of 200 slowed: {took:?}");
    // The user logs in at once from her usual address, at every daemon, and that forgets
    // the guesses.
    for d in &ds {
        let (reply, took) = login(d, "secret", "203.0.113.5");
        assert_eq!(reply, "OK");
        assert!(took < Duration::from_millis(150), "{took:?}");
    }
    // (The successes reach the store a few milliseconds later, in a batch.)
    common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            !ctl(&ds[1].run_dir, &["penalty", "list"])
                .1
                .contains("\nalice@example.org\t")
        },
        || {
            format!(
                "not forgotten: {}",
                ctl(&ds[1].run_dir, &["penalty", "list"]).1
            )
        },
    );
    // bob, from a new address, is not slowed by alice's guard.
    let (reply, took) = login_as(&ds[2], "bob", "nope", "198.51.100.77");
    assert!(
        reply == "NO" && took < Duration::from_millis(200),
        "{took:?}"
    );
    // A guess of alice's from a new address is back to the base delay.
    let (_, took) = login(&ds[2], "spray-again", "198.51.100.78");
    assert!(took < Duration::from_millis(200), "{took:?}");
}

#[test]
fn a_store_that_stops_hangs_or_comes_back_is_no_outage() {
    if !peers() {
        return;
    }
    let mut r = Redis::start(redis::Options {
        extra: "enable-debug-command local\n".into(),
        ..redis::Options::default()
    });
    let ds: Vec<Daemon> = (0..2).map(|_| shared(&r.url(), "", "0.2")).collect();
    let shared_now = |addr: &str| {
        login(&ds[0], "one", addr);
        login(&ds[0], "two", addr);
        login(&ds[1], "three", addr).1
    };
    assert!(at_step(shared_now("192.0.2.10"), 2));

    // Stopped: every login is answered, successes at once, failures after the local delay.
    r.stop();
    for d in &ds {
        let (reply, took) = login(d, "secret", "192.0.2.11");
        assert!(
            reply == "OK" && took < Duration::from_millis(150),
            "{reply} {took:?}"
        );
    }
    let (reply, took) = login(&ds[0], "down-1", "192.0.2.12");
    assert!(reply == "NO" && at_step(took, 0), "{reply} {took:?}");
    let (_, took) = login(&ds[0], "down-2", "192.0.2.12");
    assert!(at_step(took, 1), "throttled locally: {took:?}");
    let (_, took) = login(&ds[1], "down-3", "192.0.2.12");
    assert!(
        at_step(took, 0),
        "daemon 2 has its own memory only: {took:?}"
    );
    for d in &ds {
        d.wait_for_log("is down", 1);
        assert!(metric(d, "saslauthd_rs_throttle_store_up") == 0.0);
    }

    // Back (empty): shared again once each daemon has reconnected.
    r.restart();
    for d in &ds {
        d.wait_for_log("is up: the throttle is shared", 2);
    }
    assert!(at_step(shared_now("192.0.2.13"), 2), "shared again");

    // Hung: DEBUG SLEEP holds the server for 3 s. Calls give up after 50 ms; logins are
    // answered meanwhile, and the throttle is shared again after.
    let sleeper = {
        let port = r.port.to_string();
        std::thread::spawn(move || {
            Command::new("/usr/bin/redis-cli")
                .args(["-p", &port, "DEBUG", "SLEEP", "3"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let (reply, took) = login(&ds[0], "hung-1", "192.0.2.14");
    assert!(reply == "NO" && at_step(took, 0), "{reply} {took:?}");
    let (reply, took) = login(&ds[1], "secret", "192.0.2.14");
    assert!(
        reply == "OK" && took < Duration::from_millis(150),
        "{took:?}"
    );
    let (_, took) = login(&ds[0], "hung-2", "192.0.2.14");
    assert!(at_step(took, 1), "{took:?}");
    sleeper.join().unwrap();
    for d in &ds {
        d.wait_for_log("is up: the throttle is shared", 3);
    }
    assert!(
        at_step(shared_now("192.0.2.15"), 2),
        "shared after the sleep"
    );
    assert!(
        metric(
            &ds[0],
            "saslauthd_rs_throttle_store_calls_total{result=\"timeout\"}"
        ) >= 1.0
    );
    // Each outage was logged once per daemon, not once per login.
    let log = ds[0].log_text();
    assert_eq!(log.matches("is down").count(), 2, "{log}");
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 2, "one line per outage: {log}");
}

/// `saslauthd-rs --check-config` with `toml`: its exit code and stderr.
fn check_config(dir: &Path, toml: &str) -> (Option<i32>, String) {
    let conf = dir.join("check.toml");
    std::fs::write(&conf, toml).unwrap();
    let sasldb = dir.join("sasldb2");
    common::make_sasldb(&sasldb, USERS);
    let out = Command::new(DAEMON)
        .args(["-a", "sasldb", "--check-config", "--sasldb"])
        .arg(&sasldb)
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_urls_passwords_prefixes_and_foreign_values() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, err) = check_config(d, &store("http://127.0.0.1:6379", ""));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("\"http\" is not a store this daemon knows"),
        "{err}"
    );
    let (code, err) = check_config(d, &store("redis+cluster://h:0", ""));
    assert!(code == Some(1) && err.contains("is not a port"), "{err}");
    let (code, err) = check_config(
        d,
        &store("redis://127.0.0.1", "throttle_store_prefix = \"a{b}\"\n"),
    );
    assert!(
        code == Some(1) && err.contains("throttle_store_prefix"),
        "{err}"
    );
    let (code, err) = check_config(
        d,
        &store("redis://127.0.0.1", "throttle_store_timeout = 0\n"),
    );
    assert!(code == Some(1) && err.contains("1 to 1000"), "{err}");

    // A wrong password: --check-config says so (without the password); a daemon runs on its
    // local throttle.
    let r = Redis::start(redis::Options {
        password: Some("right-pw".into()),
        ..redis::Options::default()
    });
    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}/0", r.port);
    let (code, err) = check_config(d, &store(&wrong, ""));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("redis://:***@127.0.0.1") && !err.contains("wrong-pw"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("pass"), "says why: {err}");
    let (code, err) = check_config(d, &store(&r.url(), ""));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("connected"), "{err}");
    let local = daemon(&store(&wrong, ""), "0.2");
    local.wait_for_log(
        "throttling locally until the store redis://:***@127.0.0.1",
        1,
    );
    assert_eq!(login(&local, "secret", "192.0.2.20").0, "OK");
    let (_, took) = login(&local, "x1", "192.0.2.20");
    let (_, took2) = login(&local, "x2", "192.0.2.20");
    assert!(at_step(took, 0) && at_step(took2, 1), "{took:?} {took2:?}");

    // Another application's key where ours would be: a clear error, its value untouched,
    // the local throttle; another prefix works beside it.
    let r = Redis::start(redis::Options::default());
    r.cli(&["SET", "{saslauthd-rs}:key", "their value"]);
    let (code, err) = check_config(d, &store(&r.url(), ""));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("{saslauthd-rs}:key holds a value saslauthd-rs did not write")
            && err.contains("throttle_store_prefix"),
        "{err}"
    );
    let clash = daemon(&store(&r.url(), ""), "0.2");
    clash.wait_for_log("did not write", 1);
    let (reply, took) = login(&clash, "y1", "192.0.2.21");
    assert!(reply == "NO" && at_step(took, 0), "{took:?}");
    assert_eq!(r.cli(&["GET", "{saslauthd-rs}:key"]).trim(), "their value");
    let mut mine = shared(&r.url(), "throttle_store_prefix = \"mail-hosts\"\n", "0.2");
    login(&mine, "z1", "192.0.2.22");
    assert!(r
        .cli(&["EXISTS", "{mail-hosts}:peer:192.0.2.22"])
        .contains('1'));

    // Values that are not ours under our prefix: that failure is throttled locally, the
    // value is left as it is, nothing crashes; other addresses stay shared.
    r.cli(&["SET", "{mail-hosts}:peer:192.0.2.23", "not ours"]);
    let (reply, took) = login(&mine, "w1", "192.0.2.23");
    assert!(reply == "NO" && at_step(took, 0), "{took:?}");
    let (_, took) = login(&mine, "w2", "192.0.2.23");
    assert!(at_step(took, 1), "locally: {took:?}");
    assert_eq!(
        r.cli(&["GET", "{mail-hosts}:peer:192.0.2.23"]).trim(),
        "not ours"
    );
    r.cli(&["HSET", "{mail-hosts}:user:carol@example.org", "a", "hash"]);
    let (reply, took) = login_as(&mine, "carol", "w3", "192.0.2.26");
    assert!(
        reply == "NO" && at_step(took, 0),
        "a user key of another type: {took:?}"
    );
    assert_eq!(
        r.cli(&["HGET", "{mail-hosts}:user:carol@example.org", "a"])
            .trim(),
        "hash"
    );
    assert!(
        metric(
            &mine,
            "saslauthd_rs_throttle_store_calls_total{result=\"foreign\"}"
        ) >= 3.0,
        "{}{}",
        ctl(&mine.run_dir, &["metrics"]).1,
        mine.log_text()
    );
    assert!(mine.log_text().contains("saslauthd-rs did not write"));
    // A step out of range in a value of our shape: clamped to the last step.
    r.cli(&[
        "SET",
        "{mail-hosts}:peer:192.0.2.24",
        "99999999999999999999 1",
    ]);
    let (_, took) = login(&mine, "v1", "192.0.2.24");
    assert!(at_step(took, 3), "clamped to the last step: {took:?}");
    r.cli(&["SET", "{mail-hosts}:peer:192.0.2.25", "-3 1"]);
    let (_, took) = login(&mine, "v2", "192.0.2.25");
    assert!(at_step(took, 0), "not a step: {took:?}");
    assert_eq!(login(&mine, "secret", "192.0.2.25").0, "OK");
    assert!(mine.alive());
}

#[test]
fn cluster_sentinel_tls_and_an_acl_user() {
    if !peers() {
        return;
    }
    let check = |url: &str, more: &str| {
        let ds: Vec<Daemon> = (0..2).map(|_| shared(url, more, "0.2")).collect();
        login(&ds[0], "c1", "192.0.2.30");
        login(&ds[0], "c2", "192.0.2.30");
        let (reply, took) = login(&ds[1], "c3", "192.0.2.30");
        assert!(reply == "NO" && at_step(took, 2), "{url}: {took:?}");
        let (code, list, _) = ctl(&ds[1].run_dir, &["penalty", "list"]);
        assert!(
            code == Some(0) && list.contains("\n192.0.2.30\t3\t"),
            "{url}: {list}"
        );
        assert_eq!(login(&ds[1], "secret", "192.0.2.30").0, "OK");
    };
    let cluster = redis::Cluster::start();
    check(&cluster.url(), "");
    let sentinel = redis::Sentinel::start();
    check(&sentinel.url(), "");
    let tls = Redis::start(redis::Options {
        tls: true,
        password: Some("tls-pw".into()),
        ..redis::Options::default()
    });
    let ca = tls.ca.clone().unwrap();
    check(
        &tls.url(),
        &format!("throttle_store_ca = \"{}\"\n", ca.display()),
    );
    // Without the CA, the certificate is refused: the daemon throttles locally.
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = check_config(dir.path(), &store(&tls.url(), ""));
    assert_eq!(code, Some(1), "{err}");
    // An ACL user that may touch the prefix's keys and nothing else: everything the
    // daemons do stays under the prefix.
    let acl = Redis::start(redis::Options {
        extra: "user default off\nuser mailhosts on >acl-pw ~{saslauthd-rs}:* +@all\n".into(),
        ..redis::Options::default()
    });
    check(
        &format!("redis://mailhosts:acl-pw@127.0.0.1:{}/0", acl.port),
        "",
    );
    let (code, err) = check_config(
        dir.path(),
        &store(
            &format!("redis://nobody:acl-pw@127.0.0.1:{}/0", acl.port),
            "",
        ),
    );
    assert!(code == Some(1) && !err.contains("acl-pw"), "{err}");
}
