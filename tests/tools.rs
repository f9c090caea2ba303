//! The tools through their binaries: flags, prompts (on a real pty), outputs, exit codes.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_stdin, Daemon, LISTUSERS, SASLPASSWD2, TESTSASLAUTHD, USERS};
use saslauthd_rs::sasldb::{OpenMode, Store, USER_PASSWORD};

fn stored(path: &Path, authid: &str, realm: &str) -> Option<Vec<u8>> {
    let store = Store::open(path, OpenMode::ReadOnly).unwrap();
    store
        .get(authid.as_bytes(), realm.as_bytes(), USER_PASSWORD)
        .unwrap()
        .map(|v| v.to_vec())
}

fn listing(path: &Path) -> Vec<String> {
    let out = Command::new(LISTUSERS)
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In the file's order, which depends on the format: compare sorted.
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn saslpasswd2(args: &[&str], db: &Path, stdin: &[u8]) -> (i32, String) {
    let out = run_with_stdin(
        Command::new(SASLPASSWD2).arg("-f").arg(db).args(args),
        stdin,
    );
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn saslpasswd2_sets_and_splits_like_cyrus() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    assert_eq!(
        saslpasswd2(
            &["-p", "-c", "-u", "example.org", "alice"],
            &db,
            b"secret\n"
        )
        .0,
        0
    );
    assert_eq!(stored(&db, "alice", "example.org").unwrap(), b"secret");
    // user@realm wins over -u, split at the first @.
    assert_eq!(
        saslpasswd2(&["-p", "-u", "ignored.test", "a@b@c"], &db, b"pw\n").0,
        0
    );
    assert_eq!(stored(&db, "a", "b@c").unwrap(), b"pw");
    // No -u: the host name (gethostname), as Cyrus.
    assert_eq!(saslpasswd2(&["-p", "bob"], &db, b"x\n").0, 0);
    let host = String::from_utf8(saslauthd_rs::request::host_name().unwrap()).unwrap();
    assert_eq!(stored(&db, "bob", &host).unwrap(), b"x");
    // Only one trailing newline goes; \r and inner newlines stay (Cyrus's stored bytes).
    assert_eq!(
        saslpasswd2(&["-p", "-u", "e.test", "nl"], &db, b"two\nlines\n").0,
        0
    );
    assert_eq!(stored(&db, "nl", "e.test").unwrap(), b"two\nlines");
    assert_eq!(
        saslpasswd2(&["-p", "-u", "e.test", "cr"], &db, b"pw\r\n").0,
        0
    );
    assert_eq!(stored(&db, "cr", "e.test").unwrap(), b"pw\r");
    // -c on an existing user overwrites (Cyrus does not check either).
    assert_eq!(
        saslpasswd2(&["-p", "-c", "-u", "example.org", "alice"], &db, b"new\n").0,
        0
    );
    assert_eq!(stored(&db, "alice", "example.org").unwrap(), b"new");
    // Stdin that is not a terminal means pipe mode even without -p.
    assert_eq!(
        saslpasswd2(&["-u", "example.org", "piped"], &db, b"p1\n").0,
        0
    );
    assert_eq!(stored(&db, "piped", "example.org").unwrap(), b"p1");
}

#[test]
fn saslpasswd2_deletes_every_property_and_stale_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    assert_eq!(
        saslpasswd2(&["-p", "-u", "example.org", "alice"], &db, b"secret\n").0,
        0
    );
    assert_eq!(
        saslpasswd2(&["-p", "-u", "example.org", "alicia"], &db, b"s2\n").0,
        0
    );
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    store
        .put(
            b"alice",
            b"example.org",
            b"authPassword",
            b"SCRAM-SHA-256$4096:x$y:z",
        )
        .unwrap();
    store
        .put(b"alice", b"example.org", b"cmusaslsecretCRAM-MD5", b"old")
        .unwrap();
    drop(store);
    // A password change removes the stale cmusaslsecret* as Cyrus does.
    assert_eq!(
        saslpasswd2(&["-p", "-u", "example.org", "alice"], &db, b"again\n").0,
        0
    );
    assert_eq!(
        listing(&db),
        [
            "alice@example.org: authPassword",
            "alice@example.org: userPassword",
            "alicia@example.org: userPassword"
        ]
    );
    // -d removes authPassword too (Cyrus leaves it) and nobody else's keys.
    assert_eq!(
        saslpasswd2(&["-d", "-u", "example.org", "alice"], &db, b"").0,
        0
    );
    assert_eq!(listing(&db), ["alicia@example.org: userPassword"]);
    // Deleting a user that does not exist succeeds, as Cyrus.
    assert_eq!(
        saslpasswd2(&["-d", "-u", "example.org", "ghost"], &db, b"").0,
        0
    );
    // -n sets no userPassword.
    assert_eq!(
        saslpasswd2(&["-p", "-n", "-u", "example.org", "nopw"], &db, b"x\n").0,
        0
    );
    assert_eq!(stored(&db, "nopw", "example.org"), None);
}

#[test]
fn saslpasswd2_bad_input_keeps_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    assert_eq!(
        saslpasswd2(&["-p", "-u", "example.org", "alice"], &db, b"secret\n").0,
        0
    );
    let before = std::fs::read(&db).unwrap();
    let cases: &[(&[&str], &[u8], i32, &str)] = &[
        (
            &["-p", "-u", "example.org", "alice"],
            b"",
            7,
            "invalid parameter supplied: the password is empty",
        ),
        (
            &["-p", "-u", "example.org", "alice"],
            b"\n",
            7,
            "the password is empty",
        ),
        (
            &["-p", "-u", "example.org", "alice"],
            &[b'x'; 2049],
            7,
            "longer than 2048 bytes",
        ),
        (&["-p", "-u"], b"", 1, "option requires an argument -- 'u'"),
        (&["-p", "-c", "-d", "alice"], b"", 1, "usage:"),
        (&["-p"], b"pw\n", 1, "usage:"),
        (&["-p", "alice", "bob"], b"pw\n", 1, "usage:"),
        (&["-x", "alice"], b"pw\n", 1, "invalid option -- 'x'"),
        (
            &["-p", "-a", "a/b", "alice"],
            b"pw\n",
            1,
            "appname must not contain /",
        ),
        (
            &["-p", "@example.org"],
            b"pw\n",
            7,
            "the user name is empty",
        ),
        (&["-p", "alice@"], b"pw\n", 7, "the realm is empty"),
    ];
    for (args, stdin, code, message) in cases {
        let (got, err) = saslpasswd2(args, &db, stdin);
        assert_eq!(got, *code, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(
            std::fs::read(&db).unwrap(),
            before,
            "{args:?} changed the database"
        );
    }
    // An empty password never creates a file.
    let fresh = dir.path().join("fresh");
    assert_eq!(saslpasswd2(&["-p", "alice"], &fresh, b"\n").0, 7);
    assert!(!fresh.exists());
    // 2048 bytes are accepted (Cyrus's limit).
    assert_eq!(
        saslpasswd2(&["-p", "-u", "e.test", "big"], &db, &[b'y'; 2048]).0,
        0
    );
}

#[test]
fn saslpasswd2_refuses_other_files_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text");
    std::fs::write(&text, "alice:secret\n").unwrap();
    // A Berkeley DB btree (not what libsasl2 writes) and a hash file cut short.
    let mut bytes = std::fs::read(common::fixture("sasldb2-bdb-hash")).unwrap();
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..6000]).unwrap();
    bytes[12..16].copy_from_slice(&0x0005_3162u32.to_le_bytes());
    let btree = dir.path().join("btree");
    std::fs::write(&btree, &bytes).unwrap();
    for (path, names) in [
        (
            &text,
            "not a sasldb2 file: its first bytes match no database format",
        ),
        (&btree, "not a sasldb2 file: a Berkeley DB btree database"),
        (&truncated, "a damaged Berkeley DB (hash) file: truncated"),
    ] {
        let before = std::fs::read(path).unwrap();
        let (code, err) = saslpasswd2(&["-p", "-u", "e.test", "alice"], path, b"pw\n");
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(names), "{err}");
        let (code, _) = saslpasswd2(&["-d", "-u", "e.test", "alice"], path, b"");
        assert_eq!(code, 1);
        assert_eq!(std::fs::read(path).unwrap(), before);
        assert!(!Path::new(&format!("{}-lock", path.display())).exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "nothing but the three files: {leftovers:?}"
    );
    // A directory that does not exist: a database failure, exit 1, naming the path.
    let nowhere = dir.path().join("no/such/dir/sasldb2");
    let (code, err) = saslpasswd2(&["-p", "alice"], &nowhere, b"pw\n");
    assert_eq!(code, 1);
    assert!(err.contains("no/such/dir/sasldb2"), "{err}");
    // A directory as the path.
    let (code, err) = saslpasswd2(&["-p", "alice"], dir.path(), b"pw\n");
    assert_eq!(code, 1, "{err}");
}

#[test]
fn saslpasswd2_unwritable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    common::make_sasldb(&db, common::USERS);
    for path in [
        dir.path().to_path_buf(),
        db.clone(),
        dir.path().join("sasldb2-lock"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    {
        let mode = if path.is_dir() { 0o755 } else { 0o444 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    // Root ignores file modes, so as root the tool runs as nobody (setpriv, util-linux).
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            SASLPASSWD2,
        ]);
        c
    } else {
        Command::new(SASLPASSWD2)
    };
    let out = run_with_stdin(
        cmd.args(["-p", "-u", "example.org", "-f"])
            .arg(&db)
            .arg("alice"),
        b"new\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Permission denied") && err.contains("sasldb2"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

/// A pseudo-terminal whose slave is the child's stdin, stdout and stderr.
struct Pty {
    master: std::fs::File,
    output: Vec<u8>,
}

impl Pty {
    fn spawn(cmd: &mut Command) -> (Pty, std::process::Child) {
        let (mut master, mut slave) = (0, 0);
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        (
            Pty {
                master: unsafe { std::fs::File::from_raw_fd(master) },
                output: Vec::new(),
            },
            child,
        )
    }

    /// Reads until `text` has appeared (or EOF / 10 s).
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&self.output).contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in {:?}",
                String::from_utf8_lossy(&self.output)
            );
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 256];
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => panic!(
                    "EOF before {text:?}: {:?}",
                    String::from_utf8_lossy(&self.output)
                ),
                Ok(n) => self.output.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    fn finish(&mut self, child: &mut std::process::Child) -> i32 {
        let status = child.wait().unwrap();
        let mut buf = [0u8; 256];
        loop {
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
                break;
            }
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.output.extend_from_slice(&buf[..n]),
            }
        }
        status.code().unwrap()
    }
}

#[test]
fn saslpasswd2_prompts_twice_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    let (mut pty, mut child) = Pty::spawn(
        Command::new(SASLPASSWD2)
            .args(["-c", "-u", "example.org", "-f"])
            .arg(&db)
            .arg("alice"),
    );
    pty.expect("Password: ");
    pty.send("Typed-S3cret\n");
    pty.expect("Again (for verification): ");
    pty.send("Typed-S3cret\n");
    assert_eq!(pty.finish(&mut child), 0);
    let out = String::from_utf8_lossy(&pty.output).into_owned();
    assert_eq!(out, "Password: \r\nAgain (for verification): \r\n");
    assert_eq!(
        stored(&db, "alice", "example.org").unwrap(),
        b"Typed-S3cret"
    );

    let before = std::fs::read(&db).unwrap();
    let (mut pty, mut child) = Pty::spawn(
        Command::new(SASLPASSWD2)
            .args(["-u", "example.org", "-f"])
            .arg(&db)
            .arg("alice"),
    );
    pty.expect("Password: ");
    pty.send("one\n");
    pty.expect("Again (for verification): ");
    pty.send("two\n");
    assert_eq!(pty.finish(&mut child), 7);
    let out = String::from_utf8_lossy(&pty.output).into_owned();
    assert!(
        out.ends_with("saslpasswd2-rs: passwords don't match; aborting\r\n"),
        "{out:?}"
    );
    assert!(
        !out.contains("one") && !out.contains("two"),
        "echoed: {out:?}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn sasldblistusers2_lists_the_cyrus_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let want = [
        "alice@example.org: userPassword",
        "alice@other.test: userPassword",
        "bob@example.org: userPassword",
        "carol@mail.example.net: userPassword",
        "dave.o-brien@example.org: userPassword",
        "eve@example.org: userPassword",
        "longpw@example.org: userPassword",
    ];
    let small = dir.path().join("small");
    std::fs::copy(common::fixture("sasldb2-lmdb"), &small).unwrap();
    assert_eq!(listing(&small), want);
    // The operand form, and --json.
    let out = Command::new(LISTUSERS)
        .arg(&small)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 7);
    assert_eq!(json[0]["authid"], "alice");
    assert_eq!(json[0]["realm"], "example.org");
    assert_eq!(json[0]["property"], "userPassword");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"));

    let big = dir.path().join("big");
    std::fs::copy(common::fixture("sasldb2-lmdb-2007users"), &big).unwrap();
    let lines = listing(&big);
    assert_eq!(lines.len(), 2007);
    assert!(lines.contains(&"user2000@bulk.example: userPassword".to_owned()));
    assert!(!lines.iter().any(|l| l.starts_with("frank@")));
}

#[test]
fn sasldblistusers2_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(LISTUSERS).args(args).output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = dir.path().join("missing");
    let (code, err) = run(&["-f", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no such sasldb file"), "{err}");
    assert!(!missing.exists());
    let text = dir.path().join("text");
    std::fs::write(&text, "alice:secret\n").unwrap();
    let (code, err) = run(&[text.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a sasldb2 file"), "{err}");
    let (code, err) = run(&["a", "b"]);
    assert_eq!(code, 1);
    assert!(err.contains("usage:"), "{err}");
    let (code, _) = run(&["-h"]);
    assert_eq!(code, 1);
    let (code, err) = run(&["-v"]);
    assert_eq!(code, 0);
    assert!(err.contains("sasldblistusers2"), "{err}");
}

#[test]
fn testsaslauthd_output_and_exit_codes() {
    let d = Daemon::start(USERS, &[]);
    let sock = d.socket.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = Command::new(TESTSASLAUTHD).args(args).output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&[
        "-f",
        &sock,
        "-u",
        "alice",
        "-p",
        "secret",
        "-r",
        "example.org",
        "-s",
        "smtp",
    ]);
    assert_eq!((code, out.as_str()), (0, "0: OK \"Success.\"\n"));
    let (code, out, _) = run(&[
        "-f",
        &sock,
        "-u",
        "alice",
        "-p",
        "nope",
        "-r",
        "example.org",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (255, "0: NO \"authentication failed\"\n")
    );
    let (code, out, _) = run(&[
        "-f",
        &sock,
        "-u",
        "alice",
        "-p",
        "secret",
        "-r",
        "example.org",
        "-R",
        "3",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "0: OK \"Success.\"\n1: OK \"Success.\"\n2: OK \"Success.\"\n"
    );
    let (code, out, _) = run(&[
        "-f",
        &sock,
        "-u",
        "alice",
        "-p",
        "secret",
        "-r",
        "example.org",
        "-a",
        "192.0.2.7;4242",
    ]);
    assert_eq!((code, out.as_str()), (0, "0: OK \"Success.\"\n"));
    assert!(
        d.log_text().contains("[remote=192.0.2.7;4242]"),
        "{}",
        d.log_text()
    );
    let (code, _, err) = run(&["-u", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("usage:"), "{err}");
    let (code, out, err) = run(&["-f", "/nonexistent/mux", "-u", "a", "-p", "b"]);
    assert_eq!((code, out.as_str()), (255, "0: "));
    assert!(
        err.contains("connect() : No such file or directory"),
        "{err}"
    );
}
