//! SIGHUP: the configuration file is read again and the passdb it names reopened for new
//! requests, while clients keep authenticating on both sockets; none of their requests fails,
//! the sockets are the same, and a configuration that does not load changes nothing.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dovecot::{cram, plain, Client};
use common::{ask_at, make_sasldb, Daemon};

fn hangup(daemon: &Daemon) {
    // SAFETY: kill(2) with a child's pid and a valid signal number.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) }, 0);
}

fn config(sasldb: &Path, extra: &str) -> String {
    format!(
        "passdb = \"sasldb\"\nsasldb = \"{}\"\nrealm = \"example.org\"\n{extra}",
        sasldb.display()
    )
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[test]
fn sighup_reloads_under_load_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.db");
    let second = dir.path().join("second.db");
    make_sasldb(&first, &[("alice", "example.org", "one")]);
    make_sasldb(
        &second,
        &[
            ("alice", "example.org", "one"),
            ("bob", "example.org", "two"),
        ],
    );
    let file = dir.path().join("saslauthd-rs.toml");
    std::fs::write(&file, config(&first, "")).unwrap();
    let auth = dir.path().join("auth");
    let args: Vec<OsString> = vec![
        "--config".into(),
        file.clone().into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
        "--dovecot-mechanisms".into(),
        "plain login cram-md5".into(),
    ];
    let daemon = Daemon::spawn(dir, &args, &[]);
    let mux_inode = std::fs::metadata(&daemon.socket).unwrap().ino();
    assert_eq!(daemon.ask("bob", "two", "smtp", ""), "NO");

    // Clients on both sockets all along: three on the mux socket (a connection a request),
    // one on the Dovecot socket (one connection, a request after another, as Postfix).
    let stop = Arc::new(AtomicBool::new(false));
    let mux = Arc::new(Tally::default());
    let dovecot = Arc::new(Tally::default());
    let mut load = Vec::new();
    for _ in 0..3 {
        let (stop, tally, socket) = (Arc::clone(&stop), Arc::clone(&mux), daemon.socket.clone());
        load.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let counter = match ask_at(&socket, "alice", "one", "smtp", "") == "OK" {
                    true => &tally.ok,
                    false => &tally.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let (stop, tally, auth) = (Arc::clone(&stop), Arc::clone(&dovecot), auth.clone());
        load.push(std::thread::spawn(move || {
            let mut c = Client::postfix(&auth);
            let mut id = 0u32;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                c.send(&format!(
                    "AUTH\t{id}\tPLAIN\tservice=smtp\tresp={}\n",
                    plain("alice", "one")
                ));
                let counter = match c.line().starts_with(&format!("OK\t{id}\t")) {
                    true => &tally.ok,
                    false => &tally.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Twenty reloads, switching between the two files: each takes effect for the next
    // requests (bob exists only in the second).
    for round in 1..=20usize {
        let (db, bob) = match round % 2 {
            1 => (&second, "OK"),
            _ => (&first, "NO"),
        };
        std::fs::write(&file, config(db, "")).unwrap();
        hangup(&daemon);
        daemon.wait_for_log("SIGHUP: configuration reloaded", round);
        assert_eq!(daemon.ask("bob", "two", "smtp", ""), bob, "round {round}");
        // CRAM-MD5 looks up bob's secret in the file now named.
        let mut c = Client::postfix(&auth);
        let reply = cram(&mut c, 1, "bob", "two");
        assert_eq!(
            reply.starts_with("OK\t1\t"),
            bob == "OK",
            "round {round}: {reply}"
        );
    }
    assert_eq!(daemon.ask("bob", "two", "smtp", ""), "NO");

    // A file with a typo changes nothing: the error names the key, the daemon goes on with
    // what it had.
    std::fs::write(&file, config(&second, "sasldb_fromat = \"lmdb\"\n")).unwrap();
    hangup(&daemon);
    daemon.wait_for_log("still serving with the previous configuration", 1);
    assert!(
        daemon.log_text().contains("sasldb_fromat"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(daemon.ask("bob", "two", "smtp", ""), "NO");
    // And a passdb that does not open neither.
    let junk = daemon.dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, not even close to one").unwrap();
    std::fs::write(&file, config(&junk, "")).unwrap();
    hangup(&daemon);
    daemon.wait_for_log("still serving with the previous configuration", 2);
    assert_eq!(daemon.ask("alice", "one", "smtp", ""), "OK");

    // What only a restart can change is said, and the rest is applied.
    std::fs::write(&file, config(&second, "max_connections = 100\n")).unwrap();
    hangup(&daemon);
    daemon.wait_for_log("SIGHUP: configuration reloaded", 21);
    assert!(
        daemon
            .log_text()
            .contains("--max-connections changed; that takes a restart"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(daemon.ask("bob", "two", "smtp", ""), "OK");

    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().unwrap();
    }
    let (mux_ok, mux_failed) = (
        mux.ok.load(Ordering::Relaxed),
        mux.failed.load(Ordering::Relaxed),
    );
    let (dove_ok, dove_failed) = (
        dovecot.ok.load(Ordering::Relaxed),
        dovecot.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "under 23 reloads: mux {mux_ok} ok / {mux_failed} failed, dovecot {dove_ok} ok / \
         {dove_failed} failed"
    );
    assert_eq!((mux_failed, dove_failed), (0, 0));
    assert!(
        mux_ok > 100 && dove_ok > 100,
        "the load ran: {mux_ok}, {dove_ok}"
    );
    // The same socket, never closed.
    assert_eq!(std::fs::metadata(&daemon.socket).unwrap().ino(), mux_inode);
}

/// The throttle outlives a reload: a client that was being delayed stays delayed (its
/// steps go on doubling), under the new base delay.
#[test]
fn a_reload_forgives_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    make_sasldb(&db, &[("alice", "example.org", "one")]);
    let file = dir.path().join("saslauthd-rs.toml");
    std::fs::write(&file, config(&db, "")).unwrap();
    let auth = dir.path().join("auth");
    let args: Vec<OsString> = vec![
        "--config".into(),
        file.into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
        // After the harness's --failure-delay 0: the later flag wins.
        "--failure-delay".into(),
        "0.1".into(),
    ];
    let daemon = Daemon::spawn(dir, &args, &[]);
    let mut c = Client::postfix(&auth);
    // One client address, a new wrong password each time: 0.1, 0.2, 0.4, 0.8 s (± 20 %),
    // then 0.8 s at most steps.
    let mut attempt = |id: u32| {
        let started = Instant::now();
        c.send(&format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={}\n",
            plain("alice", &format!("wrong{id}"))
        ));
        let reply = c.line();
        assert!(reply.starts_with(&format!("FAIL\t{id}")), "{reply}");
        started.elapsed()
    };
    for id in 1..=4 {
        attempt(id);
    }
    hangup(&daemon);
    daemon.wait_for_log("SIGHUP: configuration reloaded", 1);
    // Forgiven, it would be 0.1 s (at most 0.12); remembered, 0.8 s (at least 0.64).
    let took = attempt(5);
    eprintln!("the fifth failure, after the reload, waited {took:?}");
    assert!(
        took >= Duration::from_millis(640),
        "the throttle started again: {took:?}"
    );
}
