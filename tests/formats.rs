//! Every sasldb2 format real hosts have (Berkeley DB hash on Debian and Ubuntu, GDBM on Fedora,
//! RHEL, Alpine and Arch, LMDB on upstream master), through the binaries and against the real
//! peers: the Cyrus-written fixtures listed and served, files changed under a running daemon by
//! our tools and by the formats' own C libraries, Cyrus's saslpasswd2 and ours changing each
//! other's files, writers killed at random, damaged files, and conversions between formats.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dovecot::{cram, plain, scram, Client};
use common::{peer, records_by_peer, Daemon, Rng, LISTUSERS, SASLPASSWD2};
use saslauthd_rs::sasldb::{Kind, OpenMode, Record, Store};
use zeroize::Zeroizing;

const CONVERT: &str = env!("CARGO_BIN_EXE_sasldb-convert-rs");

/// The fixture of each format, and how `-v` names the format.
const FORMATS: [(&str, Kind, &str); 3] = [
    ("bdb-hash", Kind::BerkeleyDb, "Berkeley DB hash, version 9"),
    ("gdbm", Kind::Gdbm, "GDBM ("),
    ("lmdb", Kind::Lmdb, "LMDB"),
];

/// The users of the fixtures (tests/fixtures/sasldb/README.md), with the 2,000 bulk users of
/// the larger ones.
fn fixture_users(bulk: bool) -> Vec<(String, String, Vec<u8>)> {
    let mut users: Vec<(String, String, Vec<u8>)> = [
        ("alice", "example.org", "secret".to_owned()),
        ("alice", "other.test", "different-secret".to_owned()),
        (
            "bob",
            "example.org",
            "correct horse battery staple".to_owned(),
        ),
        ("carol", "mail.example.net", "pa:ss@wo rd!".to_owned()),
        ("dave.o-brien", "example.org", "Ünïcødé-pässwörd".to_owned()),
        ("eve", "example.org", "x".repeat(255)),
        ("longpw", "example.org", "L".repeat(1500)),
    ]
    .into_iter()
    .map(|(a, r, p)| (a.to_owned(), r.to_owned(), p.into_bytes()))
    .collect();
    if bulk {
        for n in 1..=2000 {
            users.push((
                format!("user{n}"),
                "bulk.example".into(),
                format!("pw-{n}").into_bytes(),
            ));
        }
    }
    users
}

fn fixture_name(format: &str, bulk: bool) -> String {
    if bulk {
        format!("sasldb2-{format}-2007users")
    } else {
        format!("sasldb2-{format}")
    }
}

/// A copy of a fixture in a directory of its own (an LMDB reader writes a lock file beside
/// it).
fn copy_fixture(dir: &Path, format: &str, bulk: bool) -> PathBuf {
    let path = dir.join("sasldb2");
    std::fs::copy(common::fixture(&fixture_name(format, bulk)), &path).unwrap();
    path
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn listusers(program: &Path, path: &Path) -> Vec<String> {
    let out = Command::new(program).arg("-f").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{program:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&out.stdout)
}

#[test]
fn listings_match_cyrus_for_every_fixture() {
    let Some(cyrus) = peer("sasldblistusers2") else {
        return;
    };
    for bulk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let bdb = copy_fixture(dir.path(), "bdb-hash", bulk);
        let theirs = listusers(&cyrus, &bdb);
        let expected: Vec<String> = fixture_users(bulk)
            .iter()
            .map(|(a, r, _)| format!("{a}@{r}: userPassword"))
            .collect();
        assert_eq!(sorted(theirs.clone()), sorted(expected));
        for (format, _, named) in FORMATS {
            let dir = tempfile::tempdir().unwrap();
            let path = copy_fixture(dir.path(), format, bulk);
            let ours = listusers(Path::new(LISTUSERS), &path);
            if format == "bdb-hash" {
                // Berkeley DB's cursor order, as Cyrus lists it.
                assert_eq!(ours, theirs, "{format}: the same lines in the same order");
            }
            assert_eq!(sorted(ours), sorted(theirs.clone()), "{format}");
            let v = Command::new(LISTUSERS)
                .arg("-v")
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&v.stderr);
            assert!(
                v.status.success() && text.contains(named),
                "{format}: {text}"
            );
        }
    }
}

/// `testsaslauthd` (Debian's) against our socket: its exit code.
fn testsaslauthd(program: &Path, socket: &Path, user: &str, realm: &str, password: &[u8]) -> i32 {
    let out = Command::new(program)
        .args(["-u", user, "-r", realm, "-s", "smtp", "-f"])
        .arg(socket)
        .arg("-p")
        .arg(std::ffi::OsStr::new(std::str::from_utf8(password).unwrap()))
        .output()
        .unwrap();
    out.status.code().unwrap()
}

/// A daemon over `sasldb` with a Dovecot socket too; returns it and that socket.
fn daemon_with_dovecot(dir: tempfile::TempDir, sasldb: PathBuf) -> (Daemon, PathBuf) {
    let auth = dir.path().join("auth");
    let d = Daemon::launch(
        dir,
        sasldb,
        Some("example.org"),
        &["--dovecot-socket", auth.to_str().unwrap()],
    );
    (d, auth)
}

#[test]
fn the_daemon_serves_every_fixture_through_both_protocols() {
    let (Some(cyrus_test), Some(doveadm)) = (peer("testsaslauthd"), peer("doveadm")) else {
        return;
    };
    for bulk in [false, true] {
        for (format, kind, _) in FORMATS {
            let dir = tempfile::tempdir().unwrap();
            let path = copy_fixture(dir.path(), format, bulk);
            let (d, auth) = daemon_with_dovecot(dir, path);
            let users = fixture_users(bulk);
            for (i, (user, realm, password)) in users.iter().enumerate() {
                // A saslauthd field holds 256 bytes: the 1,500-byte password goes through
                // the Dovecot socket only (as with Cyrus).
                let fits = password.len() <= 256;
                if fits && (i < 7 || i % 97 == 0) {
                    assert_eq!(
                        testsaslauthd(&cyrus_test, &d.socket, user, realm, password),
                        0,
                        "{kind}: {user}@{realm}"
                    );
                    assert_eq!(
                        testsaslauthd(&cyrus_test, &d.socket, user, realm, b"wrong"),
                        255,
                        "{kind}: {user}@{realm}, wrong password"
                    );
                } else if fits {
                    let password = std::str::from_utf8(password).unwrap();
                    assert_eq!(d.ask(user, password, "smtp", realm), "OK", "{user}");
                    assert_eq!(d.ask(user, "pw-0", "smtp", realm), "NO", "{user}");
                }
            }
            assert_eq!(
                d.ask("frank", "gone", "smtp", "example.org"),
                "NO",
                "deleted"
            );
            // doveadm through the Dovecot socket.
            for (user, password, code) in [
                ("alice@example.org", "secret", 0),
                ("dave.o-brien@example.org", "Ünïcødé-pässwörd", 0),
                ("alice@example.org", "different-secret", 77),
                ("nobody@example.org", "secret", 77),
            ] {
                let out = Command::new(&doveadm)
                    .args(["auth", "test", "-a"])
                    .arg(&auth)
                    .args([user, password])
                    .output()
                    .unwrap();
                assert_eq!(out.status.code(), Some(code), "{kind}: doveadm {user}");
            }
            // PLAIN, CRAM-MD5 and SCRAM from the stored password, the long one included.
            let mut c = Client::postfix(&auth);
            let long = "L".repeat(1500);
            for (id, (user, password)) in [
                ("alice", "secret"),
                ("longpw", long.as_str()),
                ("dave.o-brien", "Ünïcødé-pässwörd"),
            ]
            .into_iter()
            .enumerate()
            {
                let id = 10 * id as u32 + 10; // ids start at 1
                c.send(&format!(
                    "AUTH\t{id}\tPLAIN\tservice=smtp\tresp={}\n",
                    plain(user, password)
                ));
                assert_eq!(c.line(), format!("OK\t{id}\tuser={user}\n"), "{kind} PLAIN");
                assert_eq!(
                    cram(&mut c, id + 1, user, password),
                    format!("OK\t{}\tuser={user}\n", id + 1),
                    "{kind} CRAM-MD5 {user}"
                );
                assert!(
                    cram(&mut c, id + 2, user, "wrong").starts_with(&format!("FAIL\t{}", id + 2)),
                    "{kind} CRAM-MD5 wrong"
                );
                assert_eq!(
                    scram(&mut c, id + 3, true, user, password, true),
                    format!("OK\t{}\tuser={user}", id + 3),
                    "{kind} SCRAM-SHA-256 {user}"
                );
                assert!(
                    scram(&mut c, id + 4, true, user, "wrong", true)
                        .starts_with(&format!("FAIL\t{}", id + 4)),
                    "{kind} SCRAM wrong"
                );
            }
        }
    }
}

/// `saslpasswd2-rs -p -f FILE ARGS` with `password` on stdin.
fn ours(file: &Path, args: &[&str], password: &str) {
    common::passwd(Path::new(SASLPASSWD2), file, args, password);
}

/// Starts `saslpasswd2-rs -p -f FILE ARGS` with `password` on its stdin, without waiting.
fn spawn_ours(file: &Path, args: &[&str], password: &str) -> std::process::Child {
    let mut child = Command::new(SASLPASSWD2)
        .arg("-p")
        .arg("-f")
        .arg(file)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child
}

/// Changes `authid@example.org`'s password in place through C GDBM (Python's `dbm.gnu`, which
/// takes GDBM's writer lock), as Fedora's Cyrus tools do.
fn c_gdbm_set(file: &Path, authid: &str, password: &str) {
    let script = "import dbm.gnu, sys\n\
                  d = dbm.gnu.open(sys.argv[1], 'w')\n\
                  d[sys.argv[2].encode() + b'\\0example.org\\0userPassword'] = sys.argv[3].encode()\n\
                  d.close()\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(file)
        .args([authid, password])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn changes_are_served_on_the_next_request_in_every_format() {
    let cyrus_passwd = peer("saslpasswd2");
    let c_gdbm = Path::new("/usr/bin/python3").exists().then_some(());
    for (_, kind, _) in FORMATS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let format = ["--format", kind_name(kind)];
        ours(
            &path,
            &[&format[..], &["-c", "-u", "example.org", "alice"]].concat(),
            "one",
        );
        ours(&path, &["-c", "-u", "example.org", "bob"], "bob-pw");
        let d = Daemon::start_on(dir, path.clone(), &[]);
        assert_eq!(d.ask("alice", "one", "smtp", "example.org"), "OK", "{kind}");
        // Ours: a rewrite (or, for LMDB, a transaction) per change, seen at once.
        for round in 0..20 {
            let password = format!("round-{round}");
            ours(&path, &["-u", "example.org", "alice"], &password);
            assert_eq!(
                d.ask("alice", &password, "smtp", "example.org"),
                "OK",
                "{kind} {round}"
            );
        }
        assert_eq!(
            d.ask("alice", "one", "smtp", "example.org"),
            "NO",
            "{kind}: old password"
        );
        ours(&path, &["-c", "-u", "example.org", "carol"], "carol-pw");
        assert_eq!(
            d.ask("carol", "carol-pw", "smtp", "example.org"),
            "OK",
            "{kind}: added"
        );
        let out = Command::new(SASLPASSWD2)
            .args(["-d", "-u", "example.org", "-f"])
            .arg(&path)
            .arg("bob")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            d.ask("bob", "bob-pw", "smtp", "example.org"),
            "NO",
            "{kind}: deleted"
        );
        // The format's own C writer, in place.
        match kind {
            Kind::BerkeleyDb => {
                let Some(cyrus_passwd) = &cyrus_passwd else {
                    continue;
                };
                for round in 0..10 {
                    let password = format!("cyrus-{round}");
                    common::passwd(
                        cyrus_passwd,
                        &path,
                        &["-u", "example.org", "alice"],
                        &password,
                    );
                    assert_eq!(
                        d.ask("alice", &password, "smtp", "example.org"),
                        "OK",
                        "Cyrus's in-place write {round}"
                    );
                }
                common::passwd(
                    cyrus_passwd,
                    &path,
                    &["-c", "-u", "example.org", "dan"],
                    "dan-pw",
                );
                assert_eq!(d.ask("dan", "dan-pw", "smtp", "example.org"), "OK");
            }
            Kind::Gdbm if c_gdbm.is_some() => {
                for round in 0..10 {
                    let password = format!("c-gdbm-{round}");
                    c_gdbm_set(&path, "alice", &password);
                    assert_eq!(
                        d.ask("alice", &password, "smtp", "example.org"),
                        "OK",
                        "C GDBM's in-place write {round}"
                    );
                }
            }
            _ => {}
        }
        assert_eq!(
            d.ask("carol", "carol-pw", "smtp", "example.org"),
            "OK",
            "{kind}"
        );
        assert!(
            d.log_text().contains("sasldb file changed; reread") || kind == Kind::Lmdb,
            "{}",
            d.log_text()
        );
    }
}

fn kind_name(kind: Kind) -> &'static str {
    kind.name()
}

#[test]
fn cyrus_and_ours_change_each_others_berkeley_db_files() {
    let (Some(cyrus_passwd), Some(cyrus_list), Some(verify)) = (
        peer("saslpasswd2"),
        peer("sasldblistusers2"),
        peer("db5.3_verify"),
    ) else {
        return;
    };
    let check = |path: &Path| {
        let out = Command::new(&verify).arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = sorted(listusers(&cyrus_list, path));
        assert_eq!(sorted(listusers(Path::new(LISTUSERS), path)), theirs);
        theirs
    };
    // Begun by ours, and by Cyrus (the fixture).
    for start in ["ours", "cyrus"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        if start == "ours" {
            ours(&path, &["-c", "-u", "example.org", "alice"], "secret");
        } else {
            std::fs::copy(common::fixture("sasldb2-bdb-hash-2007users"), &path).unwrap();
        }
        let d = Daemon::start_on(dir, path.clone(), &[]);
        common::passwd(
            &cyrus_passwd,
            &path,
            &["-c", "-u", "example.org", "bob"],
            "bob-1",
        );
        common::passwd(
            &cyrus_passwd,
            &path,
            &["-u", "example.org", "alice"],
            "alice-2",
        );
        check(&path);
        assert_eq!(d.ask("bob", "bob-1", "smtp", "example.org"), "OK");
        assert_eq!(d.ask("alice", "alice-2", "smtp", "example.org"), "OK");
        ours(&path, &["-u", "example.org", "bob"], "bob-3");
        ours(&path, &["-c", "-u", "example.org", "zed"], "zed-3");
        let out = Command::new(SASLPASSWD2)
            .args(["-d", "-u", "example.org", "-f"])
            .arg(&path)
            .arg("alice")
            .output()
            .unwrap();
        assert!(out.status.success());
        let listed = check(&path);
        assert!(listed.contains(&"zed@example.org: userPassword".to_owned()));
        assert!(!listed.contains(&"alice@example.org: userPassword".to_owned()));
        // And Cyrus again, over what ours wrote.
        for n in 0..50 {
            common::passwd(
                &cyrus_passwd,
                &path,
                &["-c", "-u", "grow.example", &format!("g{n}")],
                "g",
            );
        }
        check(&path);
        assert_eq!(d.ask("bob", "bob-3", "smtp", "example.org"), "OK");
        assert_eq!(d.ask("alice", "alice-2", "smtp", "example.org"), "NO");
        assert_eq!(d.ask("g49", "g", "smtp", "grow.example"), "OK");
        if start == "cyrus" {
            assert_eq!(d.ask("user1999", "pw-1999", "smtp", "bulk.example"), "OK");
        }
        // Cyrus's own view of a value ours wrote: its records, through libdb.
        let records = records_by_peer(&path).unwrap();
        assert_eq!(
            records.get(&b"zed\0example.org\0userPassword"[..]),
            Some(&b"zed-3".to_vec())
        );
    }
}

fn bulk_records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            (
                format!("u{i}\0bulk.example\0userPassword").into_bytes(),
                Zeroizing::new(format!("pw-{i}").into_bytes()),
            )
        })
        .collect()
}

#[test]
fn a_writer_killed_at_any_moment_leaves_a_whole_file() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let base = bulk_records(20_000);
    for kind in Kind::ALL {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        let mut first = base.clone();
        first.push((
            b"victim\0example.org\0userPassword".to_vec(),
            Zeroizing::new(b"pw-start".to_vec()),
        ));
        Store::create(&path, kind, &first, false).unwrap();
        // How long one change takes here: kills land anywhere from before it starts to
        // after it is done.
        let start = Instant::now();
        ours(&path, &["-u", "example.org", "victim"], "pw-timing");
        let span = start.elapsed().as_micros() as u64 + 1;
        let mut committed = "pw-timing".to_owned();
        let (mut killed, mut finished) = (0, 0);
        for round in 0..30 {
            let password = format!("pw-{round}");
            let mut child = spawn_ours(&path, &["-u", "example.org", "victim"], &password);
            std::thread::sleep(Duration::from_micros(rng.next() % (span * 5 / 4)));
            let _ = child.kill();
            let status = child.wait().unwrap();
            if status.success() {
                committed = password.clone();
                finished += 1;
            } else {
                killed += 1;
            }
            // The file opens, by ours and by the format's C library, and holds every
            // committed change: the victim's password is the last committed one, or the one
            // being written when the writer died.
            let mut ours_view: BTreeMap<Vec<u8>, Vec<u8>> = Store::open(&path, OpenMode::ReadOnly)
                .unwrap_or_else(|e| panic!("{kind} round {round}: {e}"))
                .records()
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v.to_vec()))
                .collect();
            if let Some(theirs) = records_by_peer(&path) {
                assert_eq!(theirs, ours_view, "{kind} round {round}: C library vs ours");
            }
            let victim = ours_view
                .remove(&b"victim\0example.org\0userPassword"[..])
                .unwrap();
            let victim = String::from_utf8(victim).unwrap();
            assert!(
                victim == committed || victim == password,
                "{kind} round {round}: {victim} (committed {committed})"
            );
            if victim == password {
                committed = password;
            }
            assert_eq!(ours_view.len(), base.len(), "{kind} round {round}");
            for (k, v) in &base {
                assert_eq!(ours_view.get(k).map(Vec::as_slice), Some(&v[..]));
            }
        }
        eprintln!("{kind}: {killed} writers killed, {finished} finished");
        // The next writer clears what a killed one left.
        ours(&path, &["-u", "example.org", "victim"], "pw-end");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("saslauthd-rs-new"))
            .collect();
        assert!(leftovers.is_empty(), "{kind}: {leftovers:?}");
    }
}

/// Runs a command with a deadline (a reader must never loop), `pw\n` on its stdin; its exit
/// code and stderr.
fn run_bounded(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"pw\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn damaged_files_are_named_with_their_problem() {
    let bdb = std::fs::read(common::fixture("sasldb2-bdb-hash")).unwrap();
    let gdbm = std::fs::read(common::fixture("sasldb2-gdbm-2007users")).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "it is empty"),
        ("text", b"alice:secret\n".to_vec(), "not a sasldb2 file"),
        ("bdb-truncated", bdb[..8192].to_vec(), "truncated"),
        (
            "gdbm-truncated",
            gdbm[..gdbm.len() / 2].to_vec(),
            "damaged GDBM file",
        ),
    ];
    let mut page = bdb.clone();
    put_u32(&mut page, 2 * 4096 + 8, 7);
    cases.push(("bdb-page-number", page, "page 2 says it is page 7"));
    let mut bucket = bdb.clone();
    put_u32(&mut bucket, 96 + 4, 1000);
    cases.push((
        "bdb-bucket-past-the-end",
        bucket,
        "past the end of the file",
    ));
    let mut looped = bdb.clone();
    put_u32(&mut looped, 3 * 4096 + 16, 3);
    cases.push(("bdb-overflow-loop", looped, "a second time (a loop"));
    let mut zeroed = gdbm.clone();
    let mid = zeroed.len() / 3;
    zeroed[mid..mid + 8192].fill(0xff);
    cases.push(("gdbm-corrupt", zeroed, "damaged GDBM file"));
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, problem) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, err) = run_bounded(Command::new(LISTUSERS).arg("-f").arg(&path));
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(name) && err.contains(problem), "{name}: {err}");
        let (code, err) = run_bounded(
            Command::new(common::DAEMON)
                .args(["-a", "sasldb", "-d", "-m"])
                .arg(dir.path().join("run"))
                .arg("--sasldb")
                .arg(&path),
        );
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(problem), "{name}: {err}");
        let (code, err) = run_bounded(
            Command::new(SASLPASSWD2)
                .args(["-p", "-u", "e.test", "-f"])
                .arg(&path)
                .arg("alice"),
        );
        if *name == "empty" {
            // An empty file is written into as a new one, as Berkeley DB and GDBM do.
            assert_eq!(code, Some(0), "{name}: {err}");
            continue;
        }
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(problem), "{name}: {err}");
        assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{name}: untouched");
    }
    let (code, err) = run_bounded(Command::new(LISTUSERS).arg("-f").arg(dir.path()));
    assert_eq!(code, Some(1));
    assert!(err.contains("directory"), "{err}");

    // A file damaged under a running daemon: requests fail (logged, naming the problem)
    // rather than being answered from the older version; repaired, it serves again.
    let run = tempfile::tempdir().unwrap();
    let path = run.path().join("sasldb2");
    std::fs::write(&path, &bdb).unwrap();
    let d = Daemon::start_on(run, path.clone(), &[]);
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    let damaged = dir.path().join("bdb-overflow-loop");
    let next = path.with_file_name("next");
    std::fs::copy(&damaged, &next).unwrap();
    std::fs::rename(&next, &path).unwrap();
    // A backend failure, not a wrong password (Cyrus's words for it).
    assert_eq!(
        d.ask("alice", "secret", "smtp", "example.org"),
        "NO internal mechanism failure"
    );
    assert!(d.log_text().contains("a second time"), "{}", d.log_text());
    std::fs::write(&next, &bdb).unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
}

#[test]
fn every_fixture_round_trips_through_every_format() {
    // The fixtures, and a file with the properties Cyrus's plugins write besides
    // userPassword, and a key that is not a sasldb key at all.
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra");
    let records: Vec<Record> = vec![
        (
            b"alice\0example.org\0userPassword".to_vec(),
            Zeroizing::new(b"secret".to_vec()),
        ),
        (
            b"alice\0example.org\0cmusaslsecretOTP".to_vec(),
            Zeroizing::new(b"md5\t0499\tvm5113\tde5d0a7bc6d81ea1\t00000000000000000000".to_vec()),
        ),
        (
            b"alice\0example.org\0authPassword".to_vec(),
            Zeroizing::new(b"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy".to_vec()),
        ),
        (
            b"big\0example.org\0userPassword".to_vec(),
            Zeroizing::new(vec![b'B'; 9000]),
        ),
        (b"odd key".to_vec(), Zeroizing::new(vec![0, 1, 2, 255])),
    ];
    Store::create(&extra, Kind::Lmdb, &records, false).unwrap();
    let mut sources: Vec<PathBuf> = vec![extra];
    for (format, _, _) in FORMATS {
        for bulk in [false, true] {
            let path = dir.path().join(fixture_name(format, bulk));
            std::fs::copy(common::fixture(&fixture_name(format, bulk)), &path).unwrap();
            sources.push(path);
        }
    }
    let all = |path: &Path| -> BTreeMap<Vec<u8>, Vec<u8>> {
        Store::open(path, OpenMode::ReadOnly)
            .unwrap()
            .records()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect()
    };
    for source in &sources {
        let original = all(source);
        let own_kind = Store::open(source, OpenMode::ReadOnly).unwrap().kind();
        if let Some(theirs) = records_by_peer(source) {
            assert_eq!(
                theirs,
                original,
                "{}: ours vs its C library",
                source.display()
            );
        }
        for via in Kind::ALL {
            let name = source.file_name().unwrap().to_string_lossy();
            let there = dir.path().join(format!("{name}.{}", via.name()));
            let back = dir.path().join(format!("{name}.{}.back", via.name()));
            for (from, to, kind) in [(source, &there, via), (&there, &back, own_kind)] {
                let out = Command::new(CONVERT)
                    .args(["--to", kind.name()])
                    .arg(from)
                    .arg(to)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    to.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(String::from_utf8_lossy(&out.stdout)
                    .contains(&format!("{} records", original.len())));
                assert_eq!(Store::open(to, OpenMode::ReadOnly).unwrap().kind(), kind);
                // Every key and value, byte for byte, as ours and the C library read them.
                assert_eq!(all(to), original, "{}", to.display());
                if let Some(theirs) = records_by_peer(to) {
                    assert_eq!(
                        theirs,
                        original,
                        "{}: as its C library reads it",
                        to.display()
                    );
                }
            }
        }
    }
    // In place, keeping mode and group; refusing to overwrite without being told.
    let file = dir.path().join("in-place");
    std::fs::copy(common::fixture("sasldb2-bdb-hash"), &file).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&file, None, Some(1)).unwrap();
    let before = all(&file);
    let out = Command::new(CONVERT)
        .args(["--to", "gdbm", "--in-place"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o640, 1));
    assert_eq!(
        Store::open(&file, OpenMode::ReadOnly).unwrap().kind(),
        Kind::Gdbm
    );
    assert_eq!(all(&file), before);
    let out = Command::new(CONVERT)
        .args(["--to", "lmdb"])
        .arg(&file)
        .arg(&sources[0])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

/// A big-endian file written by Berkeley DB itself (`db5.3_load` with `db_lorder=4321`, as
/// an s390x host's would be) reads as its little-endian original.
#[test]
fn a_big_endian_berkeley_db_file_reads_as_the_little_endian_one() {
    let (Some(dump), Some(load)) = (peer("db5.3_dump"), peer("db5.3_load")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let le = copy_fixture(dir.path(), "bdb-hash", true);
    let be = dir.path().join("big-endian");
    let out = Command::new(dump).arg(&le).output().unwrap();
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace("HEADER=END", "db_lorder=4321\nHEADER=END");
    let out = common::run_with_stdin(Command::new(load).arg(&be), text.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = Command::new("file").arg(&be).output().unwrap();
    assert!(String::from_utf8_lossy(&file.stdout).contains("big-endian"));
    let all = |path: &Path| -> BTreeMap<Vec<u8>, Vec<u8>> {
        Store::open(path, OpenMode::ReadOnly)
            .unwrap()
            .records()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect()
    };
    assert_eq!(all(&be), all(&le));
    assert_eq!(all(&be).len(), 2007);
    let v = Command::new(LISTUSERS).arg("-v").arg(&be).output().unwrap();
    assert!(String::from_utf8_lossy(&v.stderr).contains("big-endian"));
    // A change keeps the file's byte order.
    ours(&be, &["-u", "example.org", "alice"], "changed");
    let v = Command::new(LISTUSERS).arg("-v").arg(&be).output().unwrap();
    assert!(String::from_utf8_lossy(&v.stderr).contains("big-endian"));
    assert_eq!(
        records_by_peer(&be)
            .unwrap()
            .get(&b"alice\0example.org\0userPassword"[..]),
        Some(&b"changed".to_vec())
    );
}

/// While ours changes a GDBM file, a C GDBM writer is kept out (its change would be lost
/// under our rename); C GDBM readers are not.
#[test]
fn a_c_gdbm_writer_waits_for_ours() {
    if !Path::new("/usr/bin/python3").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path(), "gdbm", false);
    let c_gdbm = |mode: &str| {
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import dbm.gnu, sys; dbm.gnu.open(sys.argv[1], sys.argv[2]).close()",
            ])
            .arg(&path)
            .arg(mode)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(c_gdbm("w"));
    let store = Store::open(&path, OpenMode::ReadWrite).unwrap();
    assert!(
        !c_gdbm("w"),
        "a C GDBM writer is refused while ours holds the file"
    );
    assert!(c_gdbm("r"), "readers are not");
    drop(store);
    assert!(c_gdbm("w"));
}

/// Writers of ours never interleave: concurrent changes to one file all land.
#[test]
fn concurrent_writers_lose_nothing() {
    for kind in Kind::ALL {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasldb2");
        Store::create(&path, kind, &bulk_records(2000), false).unwrap();
        let children: Vec<_> = (0..12)
            .map(|n| {
                spawn_ours(
                    &path,
                    &["-c", "-u", "race.example", &format!("racer{n}")],
                    &format!("pw{n}"),
                )
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let records = Store::open(&path, OpenMode::ReadOnly)
            .unwrap()
            .records()
            .unwrap();
        assert_eq!(records.len(), 2012, "{kind}: every change landed");
        for n in 0..12 {
            let key = format!("racer{n}\0race.example\0userPassword").into_bytes();
            assert!(records
                .iter()
                .any(|(k, v)| *k == key && v[..] == *format!("pw{n}").as_bytes()));
        }
    }
}

/// The migration of README.md ("Migrating from Cyrus"), as written: a Debian sasldb2 kept as
/// it is, or converted, and served either way.
#[test]
fn the_readme_migration_works_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let documented = "sasldb-convert-rs --to lmdb /etc/sasldb2 /etc/sasldb2.lmdb";
    assert!(
        readme.contains(documented),
        "README.md must show:\n{documented}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bdb = copy_fixture(dir.path(), "bdb-hash", true);
    let lmdb = dir.path().join("sasldb2.lmdb");
    let out = Command::new(CONVERT)
        .args(["--to", "lmdb"])
        .arg(&bdb)
        .arg(&lmdb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in [bdb, lmdb] {
        let d = Daemon::start_on(tempfile::tempdir().unwrap(), path, &[]);
        for (user, realm, password) in fixture_users(true).iter().step_by(50) {
            let password = std::str::from_utf8(password).unwrap();
            if password.len() <= 256 {
                assert_eq!(d.ask(user, password, "smtp", realm), "OK", "{user}@{realm}");
                assert_eq!(d.ask(user, "wrong", "smtp", realm), "NO", "{user}@{realm}");
            }
        }
    }
}

/// A one-user file as the admin guides' first step makes it (`echo pw | saslpasswd2 -f X -c
/// -p -u example.org plainuser`, Debian 12's Cyrus): the table has two buckets and Berkeley
/// DB writes only the one the key hashes to, leaving the other's page all zeros. Both ways
/// round are read, listed and served, as Berkeley DB itself reads them.
#[test]
fn one_user_files_with_an_unwritten_bucket_page() {
    for (fixture, user, password) in [
        ("sasldb2-bdb-hash-1user-bucket0", "alice", "secret"),
        ("sasldb2-bdb-hash-1user-bucket1", "plainuser", "pw"),
    ] {
        let own = tempfile::tempdir().unwrap();
        let path = own.path().join("sasldb2");
        std::fs::copy(common::fixture(fixture), &path).unwrap();
        let records: BTreeMap<Vec<u8>, Vec<u8>> = Store::open(&path, OpenMode::ReadOnly)
            .unwrap()
            .records()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        let key = format!("{user}\0example.org\0userPassword").into_bytes();
        assert_eq!(
            records,
            BTreeMap::from([(key, password.as_bytes().to_vec())]),
            "{fixture}"
        );
        if let Some(theirs) = records_by_peer(&path) {
            assert_eq!(theirs, records, "{fixture}: ours vs db5.3_dump");
        }
        let out = Command::new(LISTUSERS)
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{user}@example.org: userPassword\n"),
            "{fixture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = Daemon::start_on(own, path, &[]);
        assert_eq!(d.ask(user, password, "smtp", "example.org"), "OK");
        assert_eq!(d.ask(user, "wrong", "smtp", "example.org"), "NO");
    }
}
