//! Against the real Cyrus SASL 2.1.28 of Debian 12 (`sasl2-bin`, `libsasl2-2`, `lmdb-utils`,
//! `db5.3-util`): its clients talk to our daemon, its tools read what ours wrote, and its own
//! `saslauthd` answers the same requests as ours.
//!
//! `.ci/run` installs the peers and sets `SASLAUTHD_RS_REQUIRE_PEERS=1`, so there a missing
//! peer fails; elsewhere these tests skip with a message.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{frame, peer, raw_exchange, Cyrus, Daemon, USERS};

fn testsaslauthd(cyrus: &Path, socket: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(cyrus)
        .arg("-f")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn debian_testsaslauthd_against_saslauthd_rs() {
    let Some(cyrus) = peer("testsaslauthd") else {
        return;
    };
    let d = Daemon::start(USERS, &[]);
    let ok = (0, "0: OK \"Success.\"\n".to_owned());
    let no = (255, "0: NO \"authentication failed\"\n".to_owned());
    let rows: &[(&[&str], &(i32, String), &str)] = &[
        (
            &[
                "-u",
                "alice",
                "-p",
                "secret",
                "-r",
                "example.org",
                "-s",
                "smtp",
            ],
            &ok,
            "right password",
        ),
        (
            &["-u", "alice", "-p", "different-secret", "-r", "other.test"],
            &ok,
            "second realm",
        ),
        (
            &[
                "-u",
                "carol",
                "-p",
                "pa:ss@wo rd!",
                "-r",
                "mail.example.net",
            ],
            &ok,
            "odd characters",
        ),
        (
            &[
                "-u",
                "alice",
                "-p",
                "wrong",
                "-r",
                "example.org",
                "-s",
                "smtp",
            ],
            &no,
            "wrong password",
        ),
        (
            &["-u", "mallory", "-p", "secret", "-r", "example.org"],
            &no,
            "unknown user",
        ),
        (
            &["-u", "alice", "-p", "secret", "-r", "other.test"],
            &no,
            "wrong realm",
        ),
        (
            &["-u", "alice@example.org", "-p", "secret"],
            &no,
            "testsaslauthd never splits",
        ),
    ];
    for (args, want, what) in rows {
        assert_eq!(&testsaslauthd(&cyrus, &d.socket, args), *want, "{what}");
    }
}

#[test]
fn libsasl2_pwcheck_saslauthd_reaches_saslauthd_rs() {
    // The route of Postfix (smtpd_sasl_type = cyrus) and sendmail: libsasl2 with
    // `pwcheck_method: saslauthd`, here inside Debian's sasl-sample-server.
    let Some(server) = peer("sasl-sample-server") else {
        return;
    };
    let d = Daemon::start(USERS, &[]);
    let conf = d.dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("sample.conf"),
        format!(
            "pwcheck_method: saslauthd\nsaslauthd_path: {}\nmech_list: PLAIN\n",
            d.socket.display()
        ),
    )
    .unwrap();
    let plain = |user: &str, password: &str| {
        let b64 = |b: &[u8]| {
            use std::io::Write;
            let mut child = Command::new("base64")
                .arg("-w0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(b).unwrap();
            String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
        };
        let response = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
        let input = format!("C: {}\nC: {}\n", b64(b"PLAIN"), b64(&response));
        let out = common::run_with_stdin(
            Command::new(&server)
                .args(["-m", "PLAIN", "-s", "smtp"])
                .env("SASL_CONF_PATH", &conf),
            input.as_bytes(),
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // libsasl2 splits user@realm at the last @ and sends user and realm apart.
    let good = plain("alice@example.org", "secret");
    assert!(good.contains("Negotiation complete"), "{good}");
    let bad = plain("alice@example.org", "wrong");
    assert!(bad.contains("authentication failure"), "{bad}");
    assert!(!bad.contains("Negotiation complete"), "{bad}");
    let unknown = plain("nobody@example.org", "secret");
    assert!(unknown.contains("authentication failure"), "{unknown}");
    let log = d.log_text();
    assert!(
        log.contains("auth success: [user=alice] [service=smtp] [realm=example.org]"),
        "{log}"
    );
}

#[test]
fn every_format_holds_exactly_what_cyrus_saslpasswd2_writes() {
    let (Some(cyrus), Some(_), Some(_), Some(_)) = (
        peer("saslpasswd2"),
        peer("mdb_dump"),
        peer("db5.3_dump"),
        peer("gdbm_dump"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    let entries: &[(&[&str], &[u8])] = &[
        (&["-c", "-u", "example.org", "alice"], b"secret\n"),
        (
            &["-u", "example.org", "bob"],
            b"correct horse battery staple\n",
        ),
        (&["carol@mail.example.net"], b"pa:ss@wo rd!\n"),
        (
            &["-u", "example.org", "dave.o-brien"],
            "Ünïcødé-pässwörd\n".as_bytes(),
        ),
        (&["-u", "example.org", "nl"], b"two\nlines\n"),
        (&["-u", "x.test", "a@b@c"], b"first-at\n"),
        (&["hostrealm"], b"pw\n"),
        (&["-u", "example.org", "longpw"], &[b'L'; 1500]),
        (&["-u", "example.org", "frank"], b"gone\n"),
    ];
    // Ours in each format (a new file on Debian gets Berkeley DB, what libsasl2 reads);
    // Cyrus's in its own (Berkeley DB).
    let ours: Vec<(PathBuf, &[&str])> = vec![
        (dir.path().join("ours-default"), &[]),
        (dir.path().join("ours-lmdb"), &["--format", "lmdb"]),
        (dir.path().join("ours-gdbm"), &["--format", "gdbm"]),
    ];
    let writers: Vec<(PathBuf, &Path, &[&str])> = ours
        .iter()
        .map(|(p, f)| (PathBuf::from(common::SASLPASSWD2), p.as_path(), *f))
        .chain([(cyrus.clone(), theirs.as_path(), &[][..])])
        .collect();
    for (program, path, format) in &writers {
        for (args, input) in entries {
            let out = common::run_with_stdin(
                Command::new(program)
                    .args(*format)
                    .arg("-p")
                    .arg("-f")
                    .arg(path)
                    .args(*args),
                input,
            );
            assert!(
                out.status.success(),
                "{program:?} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = Command::new(program)
            .args(["-d", "-u", "example.org", "-f"])
            .arg(path)
            .arg("frank")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let theirs_records = common::records_by_peer(&theirs).unwrap();
    assert_eq!(theirs_records.len(), 8, "{theirs_records:?}");
    assert_eq!(
        theirs_records.get(&b"alice\0example.org\0userPassword"[..]),
        Some(&b"secret".to_vec())
    );
    let expect_format = [
        ("ours-default", "Berkeley DB"),
        ("ours-lmdb", "LMDB"),
        ("ours-gdbm", "GNU dbm"),
    ];
    for (name, magic) in expect_format {
        let path = dir.path().join(name);
        let file = Command::new("file").arg(&path).output().unwrap();
        let file = String::from_utf8_lossy(&file.stdout);
        assert!(
            file.contains(magic) || (magic == "LMDB" && file.contains("data")),
            "{name}: {file}"
        );
        // Read by the format's own C library (db5.3_dump, mdb_dump, gdbm_dump).
        assert_eq!(
            common::records_by_peer(&path).unwrap(),
            theirs_records,
            "{name} as its C library reads it, vs Cyrus's file"
        );
    }
    if let Some(verify) = peer("db5.3_verify") {
        let out = Command::new(verify)
            .arg(dir.path().join("ours-default"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "db5.3_verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And Cyrus's listing of its file matches ours of ours.
    let list = |program: &Path, path: &Path| {
        let out = Command::new(program).arg("-f").arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    };
    let cyrus_list = peer("sasldblistusers2").unwrap();
    for (name, _) in expect_format {
        assert_eq!(
            list(Path::new(common::LISTUSERS), &dir.path().join(name)),
            list(&cyrus_list, &dir.path().join("theirs")),
            "{name}"
        );
    }
    // Cyrus's own tool lists the Berkeley DB file we wrote, in the same words.
    assert_eq!(
        list(&cyrus_list, &dir.path().join("ours-default")),
        list(&cyrus_list, &dir.path().join("theirs"))
    );
}

/// Debian's own `saslauthd -a sasldb`, which always reads `/etc/sasldb2`: started in a
/// private mount namespace with a Berkeley DB file bind-mounted over that path, so the real
/// `/etc/sasldb2` is never touched.
fn cyrus_sasldb(bdb: &Path, run_dir: &Path) -> Option<Cyrus> {
    let saslauthd = peer("saslauthd")?;
    if !Path::new("/etc/sasldb2").exists() {
        panic!("/etc/sasldb2 (created by sasl2-bin's postinst) is needed as a mount point");
    }
    let script = format!(
        "mount --bind '{}' /etc/sasldb2 && exec '{}' -a sasldb -d -n 5 -m '{}'",
        bdb.display(),
        saslauthd.display(),
        run_dir.display()
    );
    let mut command = Cyrus::command();
    command.args(["unshare", "-m", "sh", "-c", &script]);
    Some(Cyrus::start(command, run_dir))
}

#[test]
fn differential_against_cyrus_saslauthd() {
    let Some(cyrus_passwd) = peer("saslpasswd2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The same users in both formats: the Cyrus fixtures, plus one user in the host-name
    // realm (the default realm of both daemons), each written by its own tool.
    let bdb = dir.path().join("sasldb2.bdb");
    std::fs::copy(common::fixture("sasldb2-bdb-hash"), &bdb).unwrap();
    let lmdb = dir.path().join("sasldb2.lmdb");
    std::fs::copy(common::fixture("sasldb2-lmdb"), &lmdb).unwrap();
    for (program, path) in [
        (cyrus_passwd.as_path(), &bdb),
        (Path::new(common::SASLPASSWD2), &lmdb),
    ] {
        let out = common::run_with_stdin(
            Command::new(program)
                .arg("-p")
                .arg("-f")
                .arg(path)
                .arg("hostuser"),
            b"hostpw\n",
        );
        assert!(out.status.success());
    }
    let Some(cyrus) = cyrus_sasldb(&bdb, &dir.path().join("cyrus-run")) else {
        return;
    };
    // No --realm: both default to the host name.
    let ours = Daemon::launch(tempfile::tempdir().unwrap(), lmdb, None, &[]);

    let long = vec![b'x'; 257];
    let at_limit = vec![b'x'; 255];
    let eve_pw = vec![b'x'; 255];
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "good",
            frame(&[b"alice", b"secret", b"smtp", b"example.org"]),
        ),
        (
            "good, second realm",
            frame(&[b"alice", b"different-secret", b"imap", b"other.test"]),
        ),
        (
            "good, UTF-8",
            frame(&[
                b"dave.o-brien",
                "Ünïcødé-pässwörd".as_bytes(),
                b"smtp",
                b"example.org",
            ]),
        ),
        (
            "good, 255-byte password",
            frame(&[b"eve", &eve_pw, b"smtp", b"example.org"]),
        ),
        (
            "bad password",
            frame(&[b"alice", b"Secret", b"smtp", b"example.org"]),
        ),
        (
            "prefix of the password",
            frame(&[b"alice", b"secre", b"smtp", b"example.org"]),
        ),
        (
            "unknown user",
            frame(&[b"mallory", b"secret", b"smtp", b"example.org"]),
        ),
        (
            "wrong realm",
            frame(&[b"alice", b"secret", b"smtp", b"mail.example.net"]),
        ),
        (
            "empty realm = host name",
            frame(&[b"hostuser", b"hostpw", b"smtp", b""]),
        ),
        (
            "empty realm, user elsewhere",
            frame(&[b"alice", b"secret", b"smtp", b""]),
        ),
        (
            "user@realm login, empty realm",
            frame(&[b"alice@example.org", b"secret", b"smtp", b""]),
        ),
        (
            "user@realm login and realm",
            frame(&[b"alice@example.org", b"secret", b"smtp", b"example.org"]),
        ),
        (
            "5 fields",
            frame(&[
                b"alice",
                b"secret",
                b"smtp",
                b"example.org",
                b"192.0.2.7;54321",
            ]),
        ),
        (
            "5 fields, bad",
            frame(&[
                b"alice",
                b"nope",
                b"smtp",
                b"example.org",
                b"192.0.2.7;54321",
            ]),
        ),
        (
            "257-byte login",
            frame(&[&long, b"secret", b"smtp", b"example.org"]),
        ),
        (
            "257-byte password",
            frame(&[b"alice", &long, b"smtp", b"example.org"]),
        ),
        (
            "257-byte realm",
            frame(&[b"alice", b"secret", b"smtp", &long]),
        ),
        (
            "255-byte login",
            frame(&[&at_limit, b"secret", b"smtp", b"example.org"]),
        ),
        (
            "empty login",
            frame(&[b"", b"secret", b"smtp", b"example.org"]),
        ),
        (
            "empty password",
            frame(&[b"alice", b"", b"smtp", b"example.org"]),
        ),
        (
            "invalid UTF-8",
            frame(&[b"\xff\xfe", b"\xc3\x28", b"smtp", b"\x80"]),
        ),
    ];
    for (what, request) in &requests {
        let theirs = raw_exchange(&cyrus.socket, request);
        let ours_reply = raw_exchange(&ours.socket, request);
        assert_eq!(ours_reply, theirs, "{what}: ours vs Cyrus");
    }
    // Deliberate differences, named: Cyrus truncates a field at a NUL byte, so it accepts
    // "alice\0zz" as alice; we refuse it.
    let nul = frame(&[b"alice\0zz", b"secret", b"smtp", b"example.org"]);
    assert_eq!(
        raw_exchange(&cyrus.socket, &nul),
        b"\x00\x02OK",
        "Cyrus's NUL truncation"
    );
    assert_eq!(
        raw_exchange(&ours.socket, &nul),
        b"\x00\x02NO",
        "ours refuses"
    );
}
