//! Dovecot's auth-client protocol over the daemon's real socket: the handshake, Postfix's and
//! doveadm's exact lines, PLAIN and LOGIN, multiplexing, and every disconnect case.

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::dovecot::{cram, digest, plain, scram, Client};
use common::{peer, Daemon};
use saslauthd_rs::mech::{ScramClient, ScramHash};

fn dovecot_daemon(extra: &[&str]) -> (Daemon, PathBuf) {
    let args: Vec<&str> = ["--realm", "example.org"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    Daemon::with_dovecot(&args)
}

#[test]
fn handshake_on_accept() {
    let (_d, auth) = dovecot_daemon(&[]);
    let c = Client::connect(&auth);
    let lines: Vec<&str> = c.handshake.lines().collect();
    assert_eq!(lines[0], "VERSION\t1\t2");
    assert_eq!(
        &lines[1..4],
        [
            "MECH\tPLAIN\tplaintext",
            "MECH\tLOGIN\tplaintext",
            "MECH\tCRAM-MD5\tdictionary\tactive"
        ]
    );
    assert_eq!(
        &lines[4..6],
        [
            "MECH\tSCRAM-SHA-1\tmutual-auth",
            "MECH\tSCRAM-SHA-256\tmutual-auth"
        ]
    );
    let lines: Vec<&str> = [&lines[..4], &lines[6..]].concat();
    assert!(
        lines[4].starts_with("SPID\t") && lines[4][5..].parse::<u32>().is_ok(),
        "{lines:?}"
    );
    assert_eq!(lines[5], "CUID\t1");
    let cookie = lines[6].strip_prefix("COOKIE\t").unwrap();
    assert!(
        cookie.len() == 32 && cookie.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    assert_eq!(lines[7], "DONE");
    let second = Client::connect(&auth);
    assert!(second.handshake.contains("CUID\t2\n"));
    assert_ne!(
        second.handshake.lines().nth(8),
        Some(lines[6]),
        "a fresh cookie each time"
    );
}

#[test]
fn postfix_plain_and_login() {
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    // Postfix 3.7's exact AUTH line (minor 0: an empty resp= means none).
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\tresp={}\n",
        plain("alice@example.org", "secret")
    ));
    assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n");
    c.send(&format!(
        "AUTH\t2\tPLAIN\tservice=smtp\tnologin\tresp={}\n",
        plain("alice", "wrong")
    ));
    assert_eq!(c.line(), "FAIL\t2\tuser=alice\n");
    // No @: the default realm (--realm example.org).
    c.send(&format!(
        "AUTH\t3\tplain\tservice=smtp\tresp={}\n",
        plain("bob", "correct horse battery staple")
    ));
    assert_eq!(c.line(), "OK\t3\tuser=bob\n");
    // PLAIN without an initial response: an empty challenge, then the data.
    c.send("AUTH\t4\tPLAIN\tservice=smtp\tresp=\n");
    assert_eq!(c.line(), "CONT\t4\t\n");
    c.send(&format!(
        "CONT\t4\t{}\n",
        plain("carol@mail.example.net", "pa:ss@wo rd!")
    ));
    assert_eq!(c.line(), "OK\t4\tuser=carol@mail.example.net\n");
    // LOGIN, as Postfix relays it.
    c.send("AUTH\t5\tLOGIN\tservice=smtp\tnologin\tresp=\n");
    assert_eq!(c.line(), "CONT\t5\tVXNlcm5hbWU6\n");
    c.send(&format!("CONT\t5\t{}\n", B64.encode("alice@other.test")));
    assert_eq!(c.line(), "CONT\t5\tUGFzc3dvcmQ6\n");
    c.send(&format!("CONT\t5\t{}\r\n", B64.encode("different-secret")));
    assert_eq!(c.line(), "OK\t5\tuser=alice@other.test\n");
    // LOGIN with the user name as initial response.
    c.send(&format!(
        "AUTH\t6\tLOGIN\tservice=smtp\tresp={}\n",
        B64.encode("alice@example.org")
    ));
    assert_eq!(c.line(), "CONT\t6\tUGFzc3dvcmQ6\n");
    c.send(&format!("CONT\t6\t{}\n", B64.encode("nope")));
    assert_eq!(c.line(), "FAIL\t6\tuser=alice@example.org\n");
}

#[test]
fn user_facing_failures_keep_the_connection() {
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    c.send("AUTH\t1\tPLAIN\tservice=smtp\tresp=!!!notb64\n");
    assert_eq!(
        c.line(),
        "FAIL\t1\tcode=invalid_base64\treason=Invalid base64 data in initial response\n"
    );
    c.send("CONT\t99\tAAAA\n");
    assert_eq!(
        c.line(),
        "FAIL\t99\treason=Authentication request timed out\n"
    );
    c.send("AUTH\t2\tLOGIN\tservice=smtp\n");
    assert_eq!(c.line(), "CONT\t2\tVXNlcm5hbWU6\n");
    c.send("CONT\t2\t=\n");
    assert_eq!(
        c.line(),
        "FAIL\t2\tcode=invalid_base64\treason=Invalid base64 data in continued response\n"
    );
    // Garbage SASL data, a NUL in LOGIN, an authzid for someone else, invalid UTF-8.
    c.send(&format!(
        "AUTH\t3\tPLAIN\tservice=smtp\tresp={}\n",
        B64.encode("only-one-field")
    ));
    assert_eq!(c.line(), "FAIL\t3\n");
    c.send(&format!(
        "AUTH\t4\tLOGIN\tservice=smtp\tresp={}\n",
        B64.encode("ali\0ce")
    ));
    assert_eq!(c.line(), "FAIL\t4\n");
    c.send(&format!(
        "AUTH\t5\tPLAIN\tservice=smtp\tresp={}\n",
        B64.encode("bob\0alice\0secret")
    ));
    assert_eq!(c.line(), "FAIL\t5\n");
    c.send(&format!(
        "AUTH\t6\tPLAIN\tservice=smtp\tresp={}\n",
        B64.encode(b"\0\xff\xfe@example.org\0secret")
    ));
    // The name comes back as the client gave it (Dovecot does the same; Postfix makes it
    // printable before it logs it).
    assert_eq!(c.line_bytes(), b"FAIL\t6\tuser=\xff\xfe@example.org\n");
    // CANCEL: no reply; the id is free again.
    c.send("AUTH\t7\tLOGIN\tservice=smtp\n");
    assert_eq!(c.line(), "CONT\t7\tVXNlcm5hbWU6\n");
    c.send("CANCEL\t7\n");
    c.send(&format!(
        "AUTH\t7\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice@example.org", "secret")
    ));
    assert_eq!(c.line(), "OK\t7\tuser=alice@example.org\n");
}

#[test]
fn disconnect_cases() {
    let (d, auth) = dovecot_daemon(&[]);
    let ir = plain("alice@example.org", "secret");
    let cases: Vec<(&str, String)> = vec![
        ("unknown command", "HELLO\n".into()),
        (
            "unknown mechanism",
            "AUTH\t1\tDIGEST-MD5\tservice=smtp\n".into(),
        ),
        ("no service", format!("AUTH\t1\tPLAIN\tresp={ir}\n")),
        ("id 0", format!("AUTH\t0\tPLAIN\tservice=smtp\tresp={ir}\n")),
        (
            "parameters after resp",
            format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={ir}\tfoo=bar\n"),
        ),
        (
            "duplicate active id",
            "AUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tLOGIN\tservice=smtp\n".into(),
        ),
        ("CONT without data", "CONT\t1\n".into()),
        (
            "a line over 16 KiB",
            format!(
                "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
                "A".repeat(17_000)
            ),
        ),
    ];
    for (what, lines) in cases {
        let mut c = Client::postfix(&auth);
        c.send(&lines);
        if what == "duplicate active id" {
            assert_eq!(c.line(), "CONT\t1\tVXNlcm5hbWU6\n");
        }
        assert!(c.closed(), "{what}: not disconnected");
    }
    for (what, lines) in [
        ("major version 2", "VERSION\t2\t0\nCPID\t1\n"),
        (
            "AUTH before CPID",
            "VERSION\t1\t2\nAUTH\t1\tPLAIN\tservice=smtp\n",
        ),
        ("CPID 0", "VERSION\t1\t2\nCPID\t0\n"),
        ("no VERSION", "CPID\t1\n"),
    ] {
        let mut c = Client::connect(&auth);
        c.send(lines);
        assert!(c.closed(), "{what}: not disconnected");
    }
    // The daemon still serves.
    let mut c = Client::postfix(&auth);
    c.send(&format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={ir}\n"));
    assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n");
    assert!(
        d.log_text()
            .contains("disconnecting a client: unknown command"),
        "{}",
        d.log_text()
    );
}

/// Lines are framed across reads: a request sent a byte at a time, one that ends in the same
/// read as the next one starts, and a line that grows past 16 KiB over many reads without a
/// newline (a disconnect, not a buffer that grows without end).
#[test]
fn lines_are_framed_across_reads() {
    let (_d, auth) = dovecot_daemon(&[]);
    let line = format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice@example.org", "secret")
    );
    let mut c = Client::postfix(&auth);
    for byte in line.as_bytes() {
        c.send(std::str::from_utf8(std::slice::from_ref(byte)).unwrap());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n");
    let two = line.replace("\t1\t", "\t2\t") + &line.replace("\t1\t", "\t3\t");
    let (head, tail) = two.split_at(line.len() + 7);
    c.send(head);
    std::thread::sleep(Duration::from_millis(20));
    c.send(tail);
    assert_eq!(c.line(), "OK\t2\tuser=alice@example.org\n");
    assert_eq!(c.line(), "OK\t3\tuser=alice@example.org\n");
    let mut c = Client::postfix(&auth);
    c.send("AUTH\t4\tPLAIN\tservice=smtp\tresp=");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(5));
        c.send(&"A".repeat(4000));
    }
    assert!(
        c.closed(),
        "a 20,000-byte line without a newline was not refused"
    );
}

#[test]
fn requests_are_multiplexed_and_a_delayed_failure_blocks_nothing() {
    let (_d, auth) = dovecot_daemon(&["--failure-delay", "1"]);
    let mut c = Client::postfix(&auth);
    let start = Instant::now();
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={}\n",
        plain("alice", "wrong")
    ));
    c.send(&format!(
        "AUTH\t2\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice", "secret")
    ));
    assert_eq!(c.line(), "OK\t2\tuser=alice\n", "the success comes first");
    assert_eq!(c.line(), "FAIL\t1\tuser=alice\n");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "the failure waited"
    );
}

#[test]
fn many_ids_on_one_connection() {
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    // 20,000 requests pipelined in batches: every one answered.
    let ir = plain("alice", "secret");
    for batch in 0..20 {
        let mut lines = String::new();
        for i in 0..1000 {
            let id = batch * 1000 + i + 1;
            lines.push_str(&format!("AUTH\t{id}\tPLAIN\tservice=smtp\tresp={ir}\n"));
        }
        c.send(&lines);
        for _ in 0..1000 {
            assert!(c.line().starts_with("OK\t"));
        }
    }
    // 100,000 requests left waiting for CONT: past the per-connection bound on the bytes
    // requests in flight hold, a disconnect.
    let mut c = Client::postfix(&auth);
    let mut lines = String::new();
    for id in 1..=100_000 {
        lines.push_str(&format!("AUTH\t{id}\tLOGIN\tservice=smtp\n"));
    }
    let writer = std::thread::spawn({
        let mut w = c.inner.writer().unwrap();
        move || {
            let _ = w.write_all(lines.as_bytes());
        }
    });
    let mut answered = 0;
    while c.inner.line().is_ok_and(|line| !line.is_empty()) {
        answered += 1;
    }
    writer.join().unwrap();
    // Each waiting LOGIN counts 516 bytes (its entry, 512, and its service) against the
    // 256 KiB a connection's requests in flight may hold: 508 of them.
    assert_eq!(
        answered, 508,
        "challenges up to the bound, then the connection closed"
    );
    // Others are served.
    let mut other = Client::postfix(&auth);
    other.send(&format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={ir}\n"));
    assert_eq!(other.line(), "OK\t1\tuser=alice\n");
}

#[test]
fn a_client_that_never_reads_does_not_stop_others() {
    let (_d, auth) = dovecot_daemon(&[]);
    let stuck = UnixStream::connect(&auth).unwrap();
    let mut w = stuck.try_clone().unwrap();
    let ir = plain("alice", "secret");
    let flood = std::thread::spawn(move || {
        let _ = w.write_all(b"VERSION\t1\t0\nCPID\t1\n");
        w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        for id in 1..200_000u32 {
            if w.write_all(format!("AUTH\t{id}\tPLAIN\tservice=smtp\tresp={ir}\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Client::postfix(&auth);
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice", "secret")
    ));
    assert_eq!(c.line(), "OK\t1\tuser=alice\n");
    flood.join().unwrap();
    drop(stuck);
}

#[test]
fn doveadm_auth_test() {
    let Some(doveadm) = peer("doveadm") else {
        return;
    };
    let (_d, auth) = dovecot_daemon(&[]);
    let run = |user: &str, password: &str| {
        let out = Command::new(&doveadm)
            .args(["auth", "test", "-a"])
            .arg(&auth)
            .args([user, password])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run("alice@example.org", "secret");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("auth succeeded"), "{out}");
    assert_eq!(run("alice@example.org", "wrong").0, 77);
    assert_eq!(run("nobody@example.org", "secret").0, 77);
    assert_eq!(
        run("bob", "correct horse battery staple").0,
        0,
        "default realm"
    );
}

#[test]
fn socket_owner_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: chown needs root");
        return;
    }
    let (_d, auth) = dovecot_daemon(&[
        "--dovecot-socket-owner",
        "nobody:nogroup",
        "--dovecot-socket-mode",
        "0600",
    ]);
    let meta = std::fs::metadata(&auth).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 65534);
    let mut d = _d;
    assert!(d.stop().success());
    assert!(!auth.exists(), "socket removed at exit");
}

#[test]
fn cram_md5_from_sasldb() {
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    assert_eq!(
        cram(&mut c, 1, "alice@example.org", "secret"),
        "OK\t1\tuser=alice@example.org\n"
    );
    assert_eq!(
        cram(&mut c, 2, "alice@example.org", "wrong"),
        "FAIL\t2\tuser=alice@example.org\n"
    );
    assert_eq!(
        cram(&mut c, 3, "nobody@example.org", "secret"),
        "FAIL\t3\tuser=nobody@example.org\n"
    );
    assert_eq!(
        cram(&mut c, 4, "carol@mail.example.net", "pa:ss@wo rd!"),
        "OK\t4\tuser=carol@mail.example.net\n"
    );
    assert_eq!(
        cram(&mut c, 5, "bob", "correct horse battery staple"),
        "OK\t5\tuser=bob\n",
        "default realm"
    );
    // Garbage instead of "user digest".
    c.send("AUTH\t6\tCRAM-MD5\tservice=smtp\n");
    assert!(c.line().starts_with("CONT\t6\t"));
    c.send(&format!("CONT\t6\t{}\n", B64.encode("no-digest-here")));
    assert_eq!(c.line(), "FAIL\t6\n");
}

#[test]
fn digest_md5_only_when_named() {
    let (_d, auth) = dovecot_daemon(&[]);
    let c = Client::postfix(&auth);
    assert!(!c.handshake.contains("DIGEST-MD5"), "{}", c.handshake);
    let (_d, auth) = dovecot_daemon(&["--dovecot-mechanisms", "plain,LOGIN cram-md5, digest-md5"]);
    let mut c = Client::postfix(&auth);
    let mechs: Vec<&str> = c
        .handshake
        .lines()
        .filter(|l| l.starts_with("MECH\t"))
        .collect();
    assert_eq!(
        mechs,
        [
            "MECH\tPLAIN\tplaintext",
            "MECH\tLOGIN\tplaintext",
            "MECH\tCRAM-MD5\tdictionary\tactive",
            "MECH\tDIGEST-MD5\tdictionary\tactive\tmutual-auth",
        ],
        "named ones only, Dovecot's flags"
    );
    let rows = [
        // The realm the client names, as a user made with saslpasswd2 -u has it.
        (
            "alice",
            Some("example.org"),
            "secret",
            "OK\t1\tuser=alice@example.org\n",
        ),
        (
            "carol",
            Some("mail.example.net"),
            "pa:ss@wo rd!",
            "OK\t2\tuser=carol@mail.example.net\n",
        ),
        // None named: the one offered, the default realm (--realm example.org).
        ("alice", None, "secret", "OK\t3\tuser=alice@example.org\n"),
        (
            "bob",
            None,
            "correct horse battery staple",
            "OK\t4\tuser=bob@example.org\n",
        ),
        (
            "alice",
            Some("example.org"),
            "wrong",
            "FAIL\t5\tuser=alice@example.org\n",
        ),
        (
            "alice",
            Some("mail.example.net"),
            "secret",
            "FAIL\t6\tuser=alice@mail.example.net\n",
        ),
        (
            "nobody",
            Some("example.org"),
            "secret",
            "FAIL\t7\tuser=nobody@example.org\n",
        ),
    ];
    for (i, (user, realm, password, want)) in rows.into_iter().enumerate() {
        let id = u32::try_from(i).unwrap() + 1;
        assert_eq!(
            digest(&mut c, id, user, realm, password),
            want,
            "{user} {realm:?}"
        );
    }
    // A user name with its own realm, the realm offered kept (what swaks sends).
    assert_eq!(
        digest(&mut c, 10, "carol@mail.example.net", None, "pa:ss@wo rd!"),
        "OK\t10\tuser=carol@mail.example.net\n"
    );
    // A response for another service, or garbage: FAIL, the connection stays.
    c.send("AUTH\t8\tDIGEST-MD5\tservice=smtp\n");
    assert!(c.line().starts_with("CONT\t8\t"));
    c.send(&format!(
        "CONT\t8\t{}\n",
        B64.encode("username=\"alice\",,=")
    ));
    assert_eq!(c.line(), "FAIL\t8\n");
    assert_eq!(
        digest(&mut c, 9, "alice", None, "secret"),
        "OK\t9\tuser=alice@example.org\n"
    );
}

#[test]
fn a_mechanism_list_that_cannot_be_served_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow");
    std::fs::write(&shadow, "").unwrap();
    let m = dir.path().join("run");
    let run = |args: &[&str]| {
        let out = Command::new(common::DAEMON)
            .args(["-d", "-m"])
            .arg(&m)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["-a", "sasldb", "--dovecot-mechanisms", "plain ntlm"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown mechanism \"ntlm\""), "{err}");
    let shadow = shadow.to_str().unwrap();
    let (code, err) = run(&[
        "-a",
        "shadow",
        "--shadow-file",
        shadow,
        "--dovecot-mechanisms",
        "plain,cram-md5",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("mechanism CRAM-MD5 needs the stored password, which the shadow passdb"),
        "{err}"
    );
    assert!(!m.join("mux").exists(), "nothing listens");
}

#[test]
fn passdbs_without_secrets_offer_plain_and_login_only() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow");
    let hash = saslauthd_rs::crypt::hash(b"secret", "$6$").unwrap();
    std::fs::write(&shadow, format!("alice:{hash}:19000:0:99999:7:::\n")).unwrap();
    let auth = dir.path().join("auth");
    let args: Vec<OsString> = vec![
        "-a".into(),
        "shadow".into(),
        "--shadow-file".into(),
        shadow.into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
    ];
    let _d = Daemon::spawn(dir, &args, &[]);
    let mut c = Client::postfix(&auth);
    assert!(!c.handshake.contains("CRAM-MD5"), "{}", c.handshake);
    assert!(c.handshake.contains("MECH\tPLAIN") && c.handshake.contains("MECH\tLOGIN"));
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice", "secret")
    ));
    assert_eq!(c.line(), "OK\t1\tuser=alice\n");
    c.send("AUTH\t2\tCRAM-MD5\tservice=smtp\n");
    assert!(
        c.closed(),
        "a mechanism not offered is an unknown one: disconnect"
    );
}

#[test]
fn scram_sha1_and_sha256_from_sasldb() {
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    // final-resp-ok: the signature rides on OK.
    assert_eq!(
        scram(&mut c, 1, true, "alice@example.org", "secret", true),
        "OK\t1\tuser=alice@example.org"
    );
    // Postfix never says final-resp-ok: the signature comes in one more CONT.
    assert_eq!(
        scram(&mut c, 2, false, "alice@example.org", "secret", false),
        "OK\t2\tuser=alice@example.org"
    );
    assert_eq!(
        scram(
            &mut c,
            3,
            true,
            "dave.o-brien@example.org",
            "Ünïcødé-pässwörd",
            false
        ),
        "FAIL\t3\tuser=dave.o-brien@example.org"
    );
    assert_eq!(
        scram(&mut c, 4, true, "alice@example.org", "wrong", false),
        "FAIL\t4\tuser=alice@example.org"
    );
    // An unknown user gets a salt like anyone and fails at the same step.
    assert_eq!(
        scram(&mut c, 5, true, "nobody@example.org", "secret", false),
        "FAIL\t5\tuser=nobody@example.org"
    );
    assert_eq!(
        scram(
            &mut c,
            6,
            false,
            "carol@mail.example.net",
            "pa:ss@wo rd!",
            false
        ),
        "OK\t6\tuser=carol@mail.example.net"
    );
    // The same user again: the derived keys come from the cache, the answer is the same.
    assert_eq!(
        scram(&mut c, 7, true, "alice@example.org", "secret", true),
        "OK\t7\tuser=alice@example.org"
    );
    // Channel binding is refused cleanly.
    c.send(&format!(
        "AUTH\t8\tSCRAM-SHA-256\tservice=smtp\tresp={}\n",
        B64.encode("p=tls-unique,,n=alice,r=abc")
    ));
    assert_eq!(c.line(), "FAIL\t8\n");
}

#[test]
fn scram_iterations_are_configurable() {
    let (_d, auth) = dovecot_daemon(&["--scram-iterations", "8192"]);
    let mut c = Client::postfix(&auth);
    c.send(&format!(
        "AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tresp={}\n",
        B64.encode("n,,n=alice,r=abc")
    ));
    let line = c.line();
    let first = B64
        .decode(line.trim_end().strip_prefix("CONT\t1\t").unwrap())
        .unwrap();
    assert!(String::from_utf8(first).unwrap().ends_with(",i=8192"));
    c.send("CANCEL\t1\n");
    assert_eq!(
        scram(&mut c, 2, true, "alice", "secret", true),
        "OK\t2\tuser=alice"
    );
}

#[test]
fn a_broken_backend_closes_the_connection_or_says_temp_fail() {
    for temp_fail in [false, true] {
        let extra: &[&str] = if temp_fail {
            &["--dovecot-temp-fail"]
        } else {
            &[]
        };
        let (d, auth) = dovecot_daemon(extra);
        let mut c = Client::postfix(&auth);
        c.send(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
            plain("alice", "secret")
        ));
        assert_eq!(c.line(), "OK\t1\tuser=alice\n");
        // The store is replaced by something that is not a sasldb: the passdb breaks.
        std::fs::rename(&d.sasldb, d.dir.path().join("moved")).unwrap();
        std::fs::write(&d.sasldb, "not a database\n").unwrap();
        c.send(&format!(
            "AUTH\t2\tPLAIN\tservice=smtp\tresp={}\n",
            plain("alice", "secret")
        ));
        if temp_fail {
            assert_eq!(c.line(), "FAIL\t2\tuser=alice\tcode=temp_fail\n");
        } else {
            // Postfix answers a closed connection with 454 (temporary), not 535.
            assert!(c.closed(), "connection closed on a backend failure");
        }
        assert!(
            d.log_text().contains("not a sasldb2 file"),
            "{}",
            d.log_text()
        );
    }
}

#[test]
fn a_cyrus_auth_password_secret_serves_scram() {
    let (d, auth) = dovecot_daemon(&[]);
    // sam has only a SCRAM-SHA-256 secret, as Cyrus's saslpasswd2 writes it with
    // scram_secret_generate and -n (no userPassword).
    let secret = saslauthd_rs::mech::scram::format_auth_password(
        ScramHash::Sha256,
        b"s4m-pass",
        b"0123456789abcdef",
        4096,
    );
    let mut store =
        saslauthd_rs::sasldb::Store::open(&d.sasldb, saslauthd_rs::sasldb::OpenMode::ReadWrite)
            .unwrap();
    store
        .put(b"sam", b"example.org", b"authPassword", secret.as_bytes())
        .unwrap();
    drop(store);
    let mut c = Client::postfix(&auth);
    assert_eq!(
        scram(&mut c, 1, true, "sam", "s4m-pass", true),
        "OK\t1\tuser=sam"
    );
    assert_eq!(
        scram(&mut c, 2, true, "sam", "wrong", true),
        "FAIL\t2\tuser=sam"
    );
    // No cleartext: SCRAM-SHA-1 (another hash) and PLAIN cannot work for sam.
    assert_eq!(
        scram(&mut c, 3, false, "sam", "s4m-pass", true),
        "FAIL\t3\tuser=sam"
    );
    c.send(&format!(
        "AUTH\t4\tPLAIN\tservice=smtp\tresp={}\n",
        plain("sam", "s4m-pass")
    ));
    assert_eq!(c.line(), "FAIL\t4\tuser=sam\n");
}

#[test]
fn a_16_kib_base64_blob_is_a_fail_not_a_crash() {
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    let blob = B64.encode(vec![0x41u8; 12_000]); // 16,000 base64 characters
    c.send(&format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={blob}\n"));
    assert_eq!(c.line(), "FAIL\t1\n");
    c.send("AUTH\t2\tLOGIN\tservice=smtp\n");
    assert_eq!(c.line(), "CONT\t2\tVXNlcm5hbWU6\n");
    c.send(&format!("CONT\t2\t{blob}\n"));
    assert_eq!(
        c.line(),
        "CONT\t2\tUGFzc3dvcmQ6\n",
        "a long user name is still just a user name"
    );
    c.send(&format!("CONT\t2\t{}\n", B64.encode("pw")));
    assert!(c.line().starts_with("FAIL\t2\tuser="));
}

#[test]
fn a_cold_scram_login_does_not_hold_up_plain_logins() {
    // Four cold SCRAM logins at once (a known user each, and one unknown), each deriving its
    // keys with 2,000,000 PBKDF2 rounds on two workers: about a second of CPU apiece. When the
    // derivation ran on the threads that serve sockets, they stalled every other connection.
    let (_d, auth) = dovecot_daemon(&["--scram-iterations", "2000000", "-n", "2"]);
    let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(4));
    let scrams: Vec<_> = [
        "alice@example.org",
        "bob@example.org",
        "carol@mail.example.net",
        "nobody@example.org",
    ]
    .into_iter()
    .map(|user| {
        let (auth, waiting) = (auth.clone(), std::sync::Arc::clone(&waiting));
        std::thread::spawn(move || {
            let mut c = Client::postfix(&auth);
            let mut client = ScramClient::new(ScramHash::Sha256, user, "whatever");
            let start = Instant::now();
            c.send(&format!(
                "AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tresp={}\n",
                B64.encode(client.first("cold"))
            ));
            let line = c.line();
            let took = start.elapsed();
            waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            assert!(line.starts_with("CONT\t1\t"), "{line}");
            took
        })
    })
    .collect();
    // Meanwhile, PLAIN logins on another connection, one after another.
    let mut c = Client::postfix(&auth);
    let (mut logins, mut slowest) = (0u32, Duration::ZERO);
    while waiting.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        logins += 1;
        let start = Instant::now();
        c.send(&format!(
            "AUTH\t{logins}\tPLAIN\tservice=smtp\tresp={}\n",
            plain("alice", "secret")
        ));
        assert_eq!(c.line(), format!("OK\t{logins}\tuser=alice\n"));
        slowest = slowest.max(start.elapsed());
    }
    let scram = scrams.into_iter().map(|t| t.join().unwrap()).max().unwrap();
    assert!(
        scram >= Duration::from_millis(400),
        "the derivations were long enough to tell ({scram:?})"
    );
    assert!(logins >= 10, "PLAIN kept being served: {logins} logins");
    assert!(
        slowest < Duration::from_millis(100) && slowest * 8 < scram,
        "no PLAIN login waited for a derivation: slowest {slowest:?}, SCRAM {scram:?}"
    );
}

#[test]
fn an_unknown_user_cannot_log_in_with_a_decoy_proof() {
    // Before, an unknown user's SCRAM keys came from a public constant (password
    // "\0no such user\0", salt "salt", 1 round): a client that computed its proof from those
    // logged in as any user the sasldb does not have.
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let (_d, auth) = dovecot_daemon(&[]);
    let mut c = Client::postfix(&auth);
    c.send(&format!(
        "AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tfinal-resp-ok\tresp={}\n",
        B64.encode("n,,n=mallory,r=attack")
    ));
    let line = c.line();
    let server_first = B64
        .decode(line.trim_end().strip_prefix("CONT\t1\t").unwrap())
        .unwrap();
    let server_first = String::from_utf8(server_first).unwrap();
    let nonce = server_first.split(',').next().unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(b"\0no such user\0", b"salt", 1, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored = Sha256::digest(&client_key);
    let without_proof = format!("c=biws,{nonce}");
    let auth_message = format!("n=mallory,r=attack,{server_first},{without_proof}");
    let signature = hmac(&stored, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    c.send(&format!(
        "CONT\t1\t{}\n",
        B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
    ));
    assert_eq!(c.line(), "FAIL\t1\tuser=mallory\n");
}
