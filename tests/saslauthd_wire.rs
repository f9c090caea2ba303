//! The saslauthd protocol over the real socket of the real daemon, byte for byte.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{frame, Daemon, USERS};

#[test]
fn replies_byte_for_byte() {
    let d = Daemon::start(USERS, &[]);
    let ok = b"\x00\x02OK".to_vec();
    let no = b"\x00\x02NO".to_vec();
    type Row<'a> = (&'a [&'a [u8]], Vec<u8>, &'a str);
    let rows: &[Row<'_>] = &[
        (
            &[b"alice", b"secret", b"smtp", b"example.org"],
            ok.clone(),
            "right password",
        ),
        (
            &[
                b"alice",
                b"secret",
                b"smtp",
                b"example.org",
                b"192.0.2.7;54321",
            ],
            ok.clone(),
            "5 fields",
        ),
        (
            &[b"alice", b"secret", b"smtp", b"example.org", b""],
            ok.clone(),
            "empty 5th field",
        ),
        (
            &[b"alice", b"wrong", b"smtp", b"example.org"],
            no.clone(),
            "wrong password",
        ),
        (
            &[b"nobody", b"secret", b"smtp", b"example.org"],
            no.clone(),
            "unknown user",
        ),
        (
            &[b"alice", b"secret", b"smtp", b"other.test"],
            no.clone(),
            "wrong realm",
        ),
        (
            &[b"alice", b"secret", b"smtp", b""],
            no.clone(),
            "empty realm = default.test",
        ),
        (
            &[b"alice@example.org", b"secret", b"smtp", b""],
            no.clone(),
            "never split at @",
        ),
        (
            &[b"alice\0zz", b"secret", b"smtp", b"example.org"],
            no.clone(),
            "NUL in login",
        ),
        (
            &[b"alice", b"secret\0", b"smtp", b"example.org"],
            no.clone(),
            "NUL in password",
        ),
        (
            &[b"\xff\xfe", b"\xc3\x28", b"smtp", b"\x80"],
            no.clone(),
            "invalid UTF-8",
        ),
        (
            &[b"carol", b"pa:ss@wo rd!", b"", b"mail.example.net"],
            ok.clone(),
            "empty service",
        ),
        (
            &[b"", b"secret", b"smtp", b"example.org"],
            b"\x00\x16NO NULL login received".to_vec(),
            "empty login",
        ),
        (
            &[b"alice", b"", b"smtp", b"example.org"],
            b"\x00\x19NO NULL password received".to_vec(),
            "empty password",
        ),
    ];
    for (fields, want, what) in rows {
        assert_eq!(d.raw(&frame(fields)), *want, "{what}");
    }
}

#[test]
fn default_realm_and_combine() {
    let d = Daemon::start(&[("dora", "default.test", "pw1")], &["-r"]);
    // saslpasswd2 splits user@realm, so an authid holding `@` is written directly.
    let mut store =
        saslauthd_rs::sasldb::Store::open(&d.sasldb, saslauthd_rs::sasldb::OpenMode::ReadWrite)
            .unwrap();
    store
        .set_password(b"erin@x.test", b"x.test", Some(b"pw2"))
        .unwrap();
    drop(store);
    assert_eq!(
        d.ask("dora", "pw1", "smtp", ""),
        "OK",
        "empty realm uses --realm"
    );
    assert_eq!(
        d.ask("erin", "pw2", "smtp", "x.test"),
        "OK",
        "-r passes erin@x.test"
    );
    assert_eq!(
        d.ask("dora", "pw1", "smtp", "default.test"),
        "NO",
        "-r: dora@default.test unknown"
    );
}

#[test]
fn oversized_fields_get_cyrus_three_byte_no() {
    let d = Daemon::start(USERS, &[]);
    let long = vec![b'a'; 257];
    let at_limit = vec![b'a'; 256];
    for fields in [
        vec![&long[..], b"pw", b"smtp", b""],
        vec![b"alice", &long[..], b"smtp", b""],
        vec![b"alice", b"pw", &long[..], b""],
        vec![b"alice", b"pw", b"smtp", &long[..]],
        vec![b"alice", b"pw", b"smtp", b"", &long[..]],
    ] {
        assert_eq!(d.raw(&frame(&fields)), b"\x00\x03NO ");
    }
    // The length alone decides, before the body arrives.
    assert_eq!(d.raw(b"\x00\x05alice\xff\xff"), b"\x00\x03NO ");
    assert_eq!(
        d.raw(&frame(&[
            &at_limit, &at_limit, &at_limit, &at_limit, &at_limit
        ])),
        b"\x00\x02NO"
    );
}

#[test]
fn truncated_frames_are_closed_without_reply() {
    let d = Daemon::start(USERS, &["--timeout", "1"]);
    let whole = frame(&[b"alice", b"secret", b"smtp", b"example.org"]);
    for cut in [0, 1, 2, 5, 7, 20, whole.len() - 1] {
        // Client half-closes: EOF before a whole request.
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&whole[..cut]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        assert!(reply.is_empty(), "cut {cut}: {reply:?}");
    }
    // A length beyond the data, client waiting: closed at the read deadline, no reply.
    let start = Instant::now();
    assert!(d.raw(b"\x00\x05alice\x00\x09sec").is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
}

/// A client that connects and waits, or sends its request in pieces, is answered as one that
/// sends it at once: the daemon reads what has come and waits for the rest (and only then
/// puts the connection in its reactor). Right and wrong passwords, and a reply after the
/// longest wait allowed.
#[test]
fn requests_that_come_late_or_in_pieces_are_answered() {
    let d = Daemon::start(USERS, &["--timeout", "3"]);
    let right = frame(&[b"alice", b"secret", b"smtp", b"example.org"]);
    let wrong = frame(&[b"alice", b"wrong", b"smtp", b"example.org"]);
    for (request, pieces, expected) in [
        (&right, vec![0], &b"\x00\x02OK"[..]),
        (&right, vec![1, 7, 20], b"\x00\x02OK"),
        (&wrong, vec![0, 3], b"\x00\x02NO"),
        (&right, (0..right.len()).collect(), b"\x00\x02OK"),
    ] {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut from = 0;
        for cut in pieces {
            s.write_all(&request[from..cut]).unwrap();
            from = cut;
            std::thread::sleep(Duration::from_millis(30));
        }
        s.write_all(&request[from..]).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let reply = &reply[..reply.len().min(4)];
        assert_eq!(reply, expected, "{:?}", String::from_utf8_lossy(request));
    }
}

#[test]
fn idle_connections_do_not_block_others() {
    // Cyrus with -n 5 stops answering after 5 idle clients; here 2,000 idle clients (the
    // stress test in tests/stress.rs goes to 10,000) leave the daemon serving.
    let d = Daemon::start(USERS, &["--timeout", "30"]);
    let idle: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let start = Instant::now();
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(idle);
}

#[test]
fn connection_limit_closes_the_excess() {
    let d = Daemon::start(USERS, &["--max-connections", "3", "--timeout", "30"]);
    // The harness's readiness probe was let in and has released its slot.
    d.wait_on_mux(0, 1);
    let idle: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    d.wait_on_mux(3, 4);
    let reply = d.raw(&frame(&[b"alice", b"secret", b"smtp", b"example.org"]));
    assert!(
        reply.is_empty(),
        "over the limit: closed, got {reply:?}; log: {}",
        d.log_text()
    );
    assert!(d.log_text().contains("connections open (the limit)"));
    drop(idle);
    d.wait_on_mux(0, 4);
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
}

#[test]
fn changes_are_seen_without_restart() {
    let d = Daemon::start(USERS, &[]);
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    common::set_password(&d.sasldb, "alice", "example.org", "changed");
    assert_eq!(
        d.ask("alice", "secret", "smtp", "example.org"),
        "NO",
        "old password refused at once"
    );
    assert_eq!(d.ask("alice", "changed", "smtp", "example.org"), "OK");
    common::set_password(&d.sasldb, "zoe", "example.org", "new");
    assert_eq!(d.ask("zoe", "new", "smtp", "example.org"), "OK", "new user");
    let out = Command::new(common::SASLPASSWD2)
        .args(["-d", "-u", "example.org", "-f"])
        .arg(&d.sasldb)
        .arg("zoe")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        d.ask("zoe", "new", "smtp", "example.org"),
        "NO",
        "deleted user"
    );
}

#[test]
fn a_replaced_or_late_file_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let sasldb = dir.path().join("sasldb2");
    let d = Daemon::start_on(dir, sasldb.clone(), &[]);
    assert_eq!(
        d.ask("alice", "secret", "smtp", "example.org"),
        "NO",
        "no file yet"
    );
    common::make_sasldb(&sasldb, USERS);
    assert_eq!(
        d.ask("alice", "secret", "smtp", "example.org"),
        "OK",
        "file appeared"
    );
    let other = d.dir.path().join("next");
    common::make_sasldb(&other, &[("alice", "example.org", "rotated")]);
    std::fs::rename(&other, &sasldb).unwrap();
    // An LMDB file comes with its lock file (a new file on Debian is Berkeley DB: none).
    let _ = std::fs::rename(
        d.dir.path().join("next-lock"),
        d.dir.path().join("sasldb2-lock"),
    );
    assert_eq!(
        d.ask("alice", "rotated", "smtp", "example.org"),
        "OK",
        "file replaced"
    );
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "NO");
}

#[test]
fn socket_and_directory_modes() {
    let d = Daemon::start(USERS, &["--socket-mode", "0600"]);
    let dir_mode = std::fs::metadata(&d.run_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(dir_mode, 0o710);
    let sock_mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o7777;
    assert_eq!(sock_mode, 0o600);
}

#[test]
fn sigterm_removes_the_socket_and_exits_zero() {
    let mut d = Daemon::start(USERS, &[]);
    // A client that is slow to send keeps its connection; shutdown must not wait for it.
    let _slow = UnixStream::connect(&d.socket).unwrap();
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists());
    assert!(d.log_text().contains("SIGTERM"));
}

#[test]
fn a_second_daemon_on_the_same_directory_is_refused() {
    let d = Daemon::start(USERS, &[]);
    let out = Command::new(common::DAEMON)
        .args(["-a", "sasldb", "-d", "-m"])
        .arg(&d.run_dir)
        .arg("--sasldb")
        .arg(&d.sasldb)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another saslauthd is running"));
    assert_eq!(
        d.ask("alice", "secret", "smtp", "example.org"),
        "OK",
        "the first one still serves"
    );
}

#[test]
fn start_up_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(common::DAEMON).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let m = dir.path().join("run");
    let m = m.to_str().unwrap();
    let (code, err) = run(&["-a", "httpform", "-d", "-m", m]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown authentication mechanism: httpform"),
        "{err}"
    );
    let missing = dir.path().join("no-shadow");
    let (code, err) = run(&[
        "-a",
        "shadow",
        "-d",
        "-m",
        m,
        "--shadow-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read") && err.contains("no-shadow"),
        "{err}"
    );
    let (code, err) = run(&["-d", "-m", m]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no authentication mechanism specified"),
        "{err}"
    );
    let (code, err) = run(&["-a", "sasldb", "-m", "relative/dir"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("-m requires an absolute pathname"), "{err}");
    // A Berkeley DB file cut short: named, with the problem.
    let bdb = dir.path().join("truncated");
    let whole = std::fs::read(common::fixture("sasldb2-bdb-hash")).unwrap();
    std::fs::write(&bdb, &whole[..5000]).unwrap();
    let (code, err) = run(&[
        "-a",
        "sasldb",
        "-d",
        "-m",
        m,
        "--sasldb",
        bdb.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("truncated: a damaged Berkeley DB (hash) file: truncated"),
        "{err}"
    );
    let long = format!("/tmp/{}", "d".repeat(120));
    let db = dir.path().join("sasldb2");
    let (code, err) = run(&[
        "-a",
        "sasldb",
        "-d",
        "-m",
        &long,
        "--sasldb",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at most 107"), "{err}");
    let _ = std::fs::remove_dir_all(&long);
    let (code, err) = run(&["-h"]);
    assert_eq!(code, Some(0));
    assert!(err.contains("usage:"), "{err}");
    let (code, err) = run(&["-Q"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid option -- 'Q'"), "{err}");
}

#[test]
fn logs_never_hold_passwords() {
    let d = Daemon::start(USERS, &[]);
    d.ask("alice", "secret", "smtp", "example.org");
    d.ask("alice", "Wr0ngPa55", "smtp", "example.org");
    d.ask("nobody", "An0therPa55", "smtp", "example.org");
    let log = d.log_text();
    assert!(log.contains("auth failure: [user=alice]"), "{log}");
    for secret in ["secret", "Wr0ngPa55", "An0therPa55"] {
        assert!(!log.contains(secret), "{secret} logged: {log}");
    }
}

#[test]
fn failures_are_delayed_without_slowing_others() {
    let d = Daemon::start(USERS, &["--failure-delay", "1"]);
    let socket = d.socket.clone();
    let start = Instant::now();
    let slow = std::thread::spawn(move || {
        let reply = common::raw_exchange(
            &socket,
            &frame(&[
                b"alice",
                b"wrong",
                b"smtp",
                b"example.org",
                b"192.0.2.7;4242",
            ]),
        );
        (reply, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    // Another client, meanwhile: answered at once, before the failure.
    assert_eq!(
        d.ask("bob", "correct horse battery staple", "smtp", "example.org"),
        "OK"
    );
    let good_done = Instant::now();
    let (reply, failed_done) = slow.join().unwrap();
    assert_eq!(reply, b"\x00\x02NO");
    assert!(
        good_done < failed_done,
        "the success did not wait for the failure"
    );
    assert!(
        failed_done - start >= Duration::from_millis(800),
        "failure answered after the delay"
    );
}

#[test]
fn sigterm_during_start_up_is_a_clean_stop() {
    // The socket exists before the runtime installs its handlers; a SIGTERM in between must
    // still be a clean stop (exit 0, socket removed), not the default kill.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        let run = dir.path().join(format!("run{i}"));
        let mut child = Command::new(common::DAEMON)
            .args(["-a", "sasldb", "-f", "--failure-delay", "0", "-m"])
            .arg(&run)
            .arg("--sasldb")
            .arg(dir.path().join("sasldb2"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !run.join("mux").exists() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_micros(200));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "round {i}: {status}");
        assert!(!run.join("mux").exists(), "round {i}: socket left behind");
    }
}
