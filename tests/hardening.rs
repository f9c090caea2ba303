//! What a careless admin or a hostile local user does to a running daemon, each case under
//! load, each test printing what it held.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dovecot::plain, Daemon};

/// Writes a sasldb2 in `format` holding `users` (user, realm, password) with saslpasswd2-rs.
fn make(format: &str, path: &Path, users: &[(&str, &str, &str)]) {
    for (user, realm, password) in users {
        common::passwd(
            Path::new(common::SASLPASSWD2),
            path,
            &["--format", format, "-c", "-u", realm, user],
            password,
        );
    }
}

/// What the requests of one phase got.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: u64,
    /// Any other reply to a right password: a refusal or an internal error.
    failed: u64,
    /// A wrong password accepted: never allowed.
    wrong_ok: u64,
    /// Dovecot connections the daemon closed (a backend error closes one).
    closed: u64,
}

const PHASES: &[&str] = &[
    "steady",
    "replaced by rename (mv new sasldb2), lock file too",
    "overwritten in place (cp other sasldb2)",
    "truncated to 0 bytes, then replaced",
    "garbage written in place, then replaced",
    "removed, then re-created",
    "steady after all that",
];

/// The phases in which every login must succeed.
const STRICT: &[usize] = &[0, 1, 6];

struct Load {
    phase: Arc<AtomicUsize>,
    tallies: Arc<Mutex<Vec<Tally>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Logins as alice (right and wrong passwords) on both sockets until stopped.
    fn start(mux: &Path, auth: &Path) -> Load {
        let phase = Arc::new(AtomicUsize::new(0));
        let tallies = Arc::new(Mutex::new(vec![Tally::default(); PHASES.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for n in 0..4 {
            let (phase, tallies, stop) = (phase.clone(), tallies.clone(), stop.clone());
            let mux = mux.to_owned();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Counted in the phase it was sent in.
                    let sent_in = phase.load(Ordering::Relaxed);
                    let wrong = n == 3;
                    let q = saslauthd_rs::client::Query {
                        login: b"alice",
                        password: if wrong { b"wrong" } else { b"secret" },
                        service: b"smtp",
                        realm: b"example.org",
                        client_addr: None,
                    };
                    let reply = saslauthd_rs::client::query(&mux, &q, Duration::from_secs(10));
                    let ok = matches!(&reply, Ok(body) if body == b"OK");
                    let mut t = tallies.lock().unwrap();
                    let t = &mut t[sent_in];
                    match (wrong, ok) {
                        (true, true) => t.wrong_ok += 1,
                        (true, false) => {}
                        (false, true) => t.ok += 1,
                        (false, false) => t.failed += 1,
                    }
                }
            }));
        }
        {
            let (phase, tallies, stop) = (phase.clone(), tallies.clone(), stop.clone());
            let auth = auth.to_owned();
            threads.push(std::thread::spawn(move || {
                let connect = || {
                    let stream = UnixStream::connect(&auth).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut w = stream.try_clone().unwrap();
                    w.write_all(b"VERSION\t1\t0\nCPID\t1\n").unwrap();
                    let mut r = BufReader::new(stream);
                    let mut line = String::new();
                    while line != "DONE\n" {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                    }
                    (w, r)
                };
                let (mut w, mut r) = connect();
                let mut id = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let sent_in = phase.load(Ordering::Relaxed);
                    id += 1;
                    let sent = w.write_all(
                        format!(
                            "AUTH\t{id}\tPLAIN\tservice=smtp\tresp={}\n",
                            plain("alice@example.org", "secret")
                        )
                        .as_bytes(),
                    );
                    let mut line = String::new();
                    let read = r.read_line(&mut line);
                    let mut guard = tallies.lock().unwrap();
                    let t = &mut guard[sent_in];
                    if sent.is_err() || !matches!(read, Ok(n) if n > 0) {
                        t.closed += 1;
                        drop(guard);
                        (w, r) = connect();
                    } else if line.starts_with("OK\t") {
                        t.ok += 1;
                    } else {
                        t.failed += 1;
                    }
                }
            }));
        }
        Load {
            phase,
            tallies,
            stop,
            threads,
        }
    }

    fn finish(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.tallies.lock().unwrap().clone()
    }
}

/// Writes `bytes` as `path` by a rename (what `mv` does), with a stale lock file beside.
fn rename_in(dir: &Path, path: &Path, bytes: &[u8]) {
    let tmp = dir.join("incoming");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::write(dir.join("incoming-lock"), [0u8; 8192]).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    let mut lock = path.as_os_str().to_owned();
    lock.push("-lock");
    std::fs::rename(dir.join("incoming-lock"), lock).unwrap();
}

fn file_changes_under_load(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let path = d.join("sasldb2");
    // Two versions holding alice with the same password, and more users apart.
    make(
        format,
        &d.join("v1"),
        &[
            ("alice", "example.org", "secret"),
            ("bob", "example.org", "b"),
        ],
    );
    make(
        format,
        &d.join("v2"),
        &[
            ("carol", "example.org", "c"),
            ("alice", "example.org", "secret"),
            ("dave", "example.org", "d"),
        ],
    );
    let (v1, v2) = (
        std::fs::read(d.join("v1")).unwrap(),
        std::fs::read(d.join("v2")).unwrap(),
    );
    std::fs::copy(d.join("v1"), &path).unwrap();
    let auth = d.join("auth");
    let args: Vec<OsString> = vec![
        "-a".into(),
        "sasldb".into(),
        "--sasldb".into(),
        path.clone().into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
    ];
    let mut daemon = Daemon::spawn(dir, &args, &[]);
    let load = Load::start(&daemon.socket, &auth);
    let hold = |ms| std::thread::sleep(Duration::from_millis(ms));
    let mut rng = common::Rng(0x5eed ^ format.len() as u64);
    for (phase, name) in PHASES.iter().enumerate() {
        load.phase.store(phase, Ordering::Relaxed);
        let started = Instant::now();
        for round in 0..6 {
            let (this, other) = if round % 2 == 0 {
                (&v2, &v1)
            } else {
                (&v1, &v2)
            };
            match phase {
                1 => rename_in(&d, &path, this),
                2 => std::fs::write(&path, this).unwrap(),
                3 => {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    hold(40);
                    rename_in(&d, &path, other);
                }
                4 => {
                    let garbage: Vec<u8> = (0..65536).map(|_| rng.next() as u8).collect();
                    std::fs::write(&path, garbage).unwrap();
                    hold(40);
                    rename_in(&d, &path, other);
                }
                5 => {
                    std::fs::remove_file(&path).unwrap();
                    hold(40);
                    rename_in(&d, &path, this);
                }
                _ => {}
            }
            hold(60);
            assert!(
                daemon.alive(),
                "{format}: the daemon died in phase {name:?}: {}",
                daemon.log_text()
            );
        }
        // Let the last change settle before the next phase is counted.
        hold(150);
        while started.elapsed() < Duration::from_millis(500) {
            hold(20);
        }
    }
    let tallies = load.finish();
    for (name, t) in PHASES.iter().zip(&tallies) {
        eprintln!(
            "{format}: {name}: {} logins ok, {} failed, {} Dovecot connections closed, {} wrong passwords accepted",
            t.ok, t.failed, t.closed, t.wrong_ok
        );
    }
    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(
            t.wrong_ok, 0,
            "{format}: {}: a wrong password was accepted",
            PHASES[i]
        );
        assert!(t.ok > 0, "{format}: {}: nothing got through", PHASES[i]);
        if STRICT.contains(&i) {
            assert_eq!(
                (t.failed, t.closed),
                (0, 0),
                "{format}: {}: {}",
                PHASES[i],
                daemon.log_text()
            );
        }
    }
    assert_eq!(daemon.ask("alice", "secret", "smtp", "example.org"), "OK");
    assert!(daemon.stop().success());
}

#[test]
fn an_lmdb_file_changed_under_load() {
    file_changes_under_load("lmdb");
}

#[test]
fn a_berkeley_db_file_changed_under_load() {
    file_changes_under_load("bdb");
}

#[test]
fn a_gdbm_file_changed_under_load() {
    file_changes_under_load("gdbm");
}

/// Runs the daemon on run directory `run` over an empty sasldb; its exit code and stderr
/// (it must not start).
fn refused_start(run: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(common::DAEMON)
        .args([
            "-a",
            "sasldb",
            "-d",
            "--sasldb",
            "/nonexistent/sasldb2",
            "-m",
        ])
        .arg(run)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started on {}", run.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn run_directories_other_users_could_tamper_with_are_refused() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    // World-writable: another user could rename mux and bind their own.
    let open = d.join("open");
    std::fs::create_dir(&open).unwrap();
    mode(&open, 0o777).unwrap();
    let (code, err) = refused_start(&open, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is writable by other users (mode 0777)",
            open.display()
        )),
        "{err}"
    );
    // Group-writable, sticky or not: refused for the run directory itself.
    mode(&open, 0o1770).unwrap();
    let (_, err) = refused_start(&open, &[]);
    assert!(
        err.contains("is writable by other users (mode 1770)"),
        "{err}"
    );
    // A symlink to a good directory: not followed.
    let good = d.join("good");
    std::fs::create_dir(&good).unwrap();
    let link = d.join("link");
    symlink(&good, &link).unwrap();
    let (_, err) = refused_start(&link, &[]);
    assert!(
        err.contains(&format!("{} is a symlink", link.display())),
        "{err}"
    );
    // A parent others may write into (not sticky): they could rename the directory itself.
    let parent = d.join("parent");
    std::fs::create_dir(&parent).unwrap();
    mode(&parent, 0o777).unwrap();
    let (_, err) = refused_start(&parent.join("run"), &[]);
    assert!(
        err.contains(&format!(
            "{} is writable by other users (mode 0777)",
            parent.display()
        )),
        "{err}"
    );
    // A sticky parent (as /tmp) is fine for a directory of the daemon's own.
    mode(&parent, 0o1777).unwrap();
    let args: Vec<OsString> = vec!["-a".into(), "sasldb".into()];
    let sticky_parent = tempfile::tempdir().unwrap();
    mode(sticky_parent.path(), 0o1777).unwrap();
    let daemon = Daemon::spawn(sticky_parent, &args, &[]);
    assert!(daemon.socket.exists());
    if is_root() {
        // Owned by another user.
        let theirs = d.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        mode(&theirs, 0o700).unwrap();
        std::os::unix::fs::chown(&theirs, Some(NOBODY), None).unwrap();
        let (_, err) = refused_start(&theirs, &[]);
        assert!(
            err.contains(&format!("{} is owned by uid {NOBODY}", theirs.display())),
            "{err}"
        );
    }
    eprintln!("refused: a 0777, a 1770, a symlinked and another user's run directory, and one under a 0777 parent; started under a 1777 parent");
}

#[test]
fn symlinks_planted_for_the_lock_files_are_not_followed() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let victim = d.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    // The pid lock.
    let run = d.join("run");
    std::fs::create_dir(&run).unwrap();
    symlink(&victim, run.join("saslauthd.pid.lock")).unwrap();
    let (code, err) = refused_start(&run, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("saslauthd.pid.lock"), "{err}");
    // LMDB's lock file, for saslpasswd2-rs and for the daemon.
    let db = d.join("sasldb2");
    make("lmdb", &db, &[("alice", "example.org", "secret")]);
    let lock = d.join("sasldb2-lock");
    std::fs::remove_file(&lock).unwrap();
    symlink(&victim, &lock).unwrap();
    let out = common::run_with_stdin(
        std::process::Command::new(common::SASLPASSWD2)
            .args(["-p", "-f"])
            .arg(&db)
            .args(["-u", "example.org", "alice"]),
        b"changed\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sasldb2-lock: is a symlink"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args: Vec<OsString> = vec![
        "-a".into(),
        "sasldb".into(),
        "--sasldb".into(),
        db.clone().into(),
    ];
    let daemon = Daemon::spawn(tempfile::tempdir().unwrap(), &args, &[]);
    assert_eq!(daemon.ask("alice", "secret", "smtp", "example.org"), "OK");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "the target is untouched"
    );
    eprintln!("not followed: a symlinked pid lock (start refused), LMDB's lock (saslpasswd2-rs refused, the daemon never opens it)");
}

#[test]
fn saslpasswd2_follows_only_trusted_symlinks_to_existing_files() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let passwd = |path: &Path| {
        common::run_with_stdin(
            std::process::Command::new(common::SASLPASSWD2)
                .args(["-p", "-c", "-f"])
                .arg(path)
                .args(["-u", "example.org", "alice"]),
            b"secret\n",
        )
    };
    // A dangling link: nothing is created through it.
    let dangling = d.join("dangling");
    symlink(d.join("made-through-link"), &dangling).unwrap();
    let out = passwd(&dangling);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a symlink to nothing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.join("made-through-link").exists());
    // A link of our own to an existing file is followed (Fedora's /etc/sasldb2 -> sasl2/).
    let real = d.join("real");
    make("bdb", &real, &[("bob", "example.org", "b")]);
    let ours = d.join("ours");
    symlink(&real, &ours).unwrap();
    assert!(passwd(&ours).status.success());
    assert!(std::fs::symlink_metadata(&ours)
        .unwrap()
        .file_type()
        .is_symlink());
    if is_root() {
        // Another user's link: not followed.
        let theirs = d.join("theirs");
        symlink(&real, &theirs).unwrap();
        std::os::unix::fs::lchown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
        let out = passwd(&theirs);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("symlink owned by another user"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("saslpasswd2-rs: refused a dangling link and another user's link, followed its own");
}

/// SIGTERM while Dovecot requests wait out their failure delay and another waits for the
/// client's next step: every one is answered before its connection closes, at once.
#[test]
fn a_stop_answers_every_dovecot_request_in_flight() {
    let (mut daemon, auth) = Daemon::with_dovecot(&["--failure-delay", "2"]);
    let mut clients: Vec<common::dovecot::Client> = (0..40)
        .map(|i| {
            let mut c = common::dovecot::Client::postfix(&auth);
            c.send(&format!(
                "AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.{i}\tresp={}\n",
                plain("alice@example.org", "wrong")
            ));
            c
        })
        .collect();
    // One exchange half-way: LOGIN has asked for the user name.
    let mut talking = common::dovecot::Client::postfix(&auth);
    talking.send("AUTH\t7\tLOGIN\tservice=smtp\n");
    assert!(talking.line().starts_with("CONT\t7\t"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) };
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.line(), "FAIL\t1\tuser=alice@example.org\n", "client {i}");
        assert!(c.closed(), "client {i}: closed after its answer");
    }
    assert_eq!(talking.line(), "FAIL\t7\n");
    assert!(talking.closed());
    let status = daemon.wait();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    eprintln!("stop: 41 Dovecot requests in flight answered, exit 0 in {took:?}");
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Raises this process's open-file limit to its hard limit (the tests hold thousands).
fn many_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// A full Dovecot listener closes its longest-idle connection for a new one: 50 clients that
/// handshake and sit idle lock no one out.
#[test]
fn idle_dovecot_holders_make_room() {
    let (daemon, auth) = Daemon::with_dovecot(&["--dovecot-max-connections", "50"]);
    // Each holder's handshake is answered before the next connects (a login each), so the
    // daemon has seen them in order: the first is the one idle longest.
    let mut holders: Vec<common::dovecot::Client> = (0..50)
        .map(|_| {
            let mut c = common::dovecot::Client::postfix(&auth);
            c.send(&format!(
                "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
                plain("alice@example.org", "secret")
            ));
            assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n");
            c
        })
        .collect();
    let started = Instant::now();
    // The new clients stay connected, as Postfix's smtpd processes do.
    let mut newcomers = Vec::new();
    for i in 0..24 {
        let mut c = common::dovecot::Client::postfix(&auth);
        c.send(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
            plain("alice@example.org", "secret")
        ));
        assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n", "login {i}");
        newcomers.push(c);
    }
    let took = started.elapsed();
    let closed: Vec<bool> = holders
        .iter_mut()
        .map(|c| c.inner.closed(Duration::from_millis(200)))
        .collect();
    // One idle holder closed per newcomer, the longest idle first.
    assert_eq!(closed, [vec![true; 24], vec![false; 26]].concat());
    let closed = 24;
    // The mux socket has a budget of its own.
    assert_eq!(daemon.ask("alice", "secret", "smtp", "example.org"), "OK");
    eprintln!("idle holders: 50 held the Dovecot socket; 24 of 24 new logins served in {took:?}, {closed} idle holders closed for them");
}

/// Many Dovecot holders cannot starve the mux listener of descriptors: the limit is raised
/// to fit both budgets, or the start is refused.
#[test]
fn both_budgets_fit_the_descriptor_limit() {
    many_files();
    let (daemon, auth) = Daemon::with_dovecot(&["--dovecot-max-connections", "600"]);
    let holders: Vec<common::dovecot::Client> = (0..560)
        .map(|_| common::dovecot::Client::postfix(&auth))
        .collect();
    for _ in 0..5 {
        assert_eq!(daemon.ask("alice", "secret", "smtp", "example.org"), "OK");
    }
    drop(holders);
    // A limit that cannot hold the budgets: one clear line, no start.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("prlimit")
        .args([
            "--nofile=200:200",
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(common::DAEMON)
        .args(["-a", "sasldb", "-d", "-m"])
        .arg(dir.path().join("run"))
        .args(["--max-connections", "1000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the connection limits need 1128 open files, and the hard limit is 200"),
        "{err}"
    );
    eprintln!("descriptors: 560 Dovecot holders, 5 of 5 mux logins served; a 200-file limit for 1,000 connections refused at start");
}

/// Requests in flight hold a bounded amount of the client's data: LOGINs waiting for their
/// passwords with 11 KiB user names are refused past 256 KiB per connection.
#[test]
fn requests_in_flight_hold_bounded_memory() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let (daemon, auth) = Daemon::with_dovecot(&[]);
    let before = rss_kib(daemon.pid());
    // 11 KiB: the longest whose base64 fits a line.
    let user = B64.encode("u".repeat(11 * 1024));
    let mut peak = before;
    let mut held = 0;
    for _ in 0..4 {
        let mut c = common::dovecot::Client::postfix(&auth);
        let mut answered = 0;
        for id in 1..=4096u32 {
            c.send(&format!("AUTH\t{id}\tLOGIN\tservice=smtp\n"));
            if !c.line().starts_with(&format!("CONT\t{id}\t")) {
                break;
            }
            c.send(&format!("CONT\t{id}\t{user}\n"));
            match c.inner.line() {
                Ok(line) if line.starts_with(&format!("CONT\t{id}\t")) => answered += 1,
                _ => break,
            }
        }
        held += answered;
        peak = peak.max(rss_kib(daemon.pid()));
        assert!(
            answered < 40,
            "{answered} LOGINs with 12 KiB user names held"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(daemon.pid());
    assert!(peak - before < 8 * 1024, "{before} KiB -> {peak} KiB");
    assert_eq!(daemon.ask("alice", "secret", "smtp", "example.org"), "OK");
    eprintln!("memory: 4 connections of 11 KiB LOGINs: {held} held in all before the bound; RSS {before} KiB -> peak {peak} KiB -> {after} KiB after");
}

/// Slowloris: 2,000 connections on each socket that never finish a request.
#[test]
fn slowloris_connections_keep_memory_small() {
    many_files();
    let (daemon, auth) = Daemon::with_dovecot(&[]);
    let before = rss_kib(daemon.pid());
    let mut held = Vec::new();
    for _ in 0..2000 {
        let mut mux = UnixStream::connect(&daemon.socket).unwrap();
        mux.write_all(&[0]).unwrap();
        let mut dove = UnixStream::connect(&auth).unwrap();
        dove.write_all(b"VERSION\t1").unwrap();
        held.push((mux, dove));
    }
    std::thread::sleep(Duration::from_millis(500));
    let peak = rss_kib(daemon.pid());
    drop(held);
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss_kib(daemon.pid());
    let added = peak.saturating_sub(before);
    let each = added as f64 / 4000.0;
    eprintln!("slowloris: 2,000 + 2,000 connections: RSS {before} KiB -> {peak} KiB ({each:.1} KiB each) -> {after} KiB after they closed");
    // What they add, not the total: the daemon's own pages at start vary with the build.
    assert!(
        added < 11 * 1024,
        "{before} KiB -> {peak} KiB with 4,000 slow connections"
    );
    assert_eq!(daemon.ask("alice", "secret", "smtp", "example.org"), "OK");
}

/// Every flow of both sockets, logged at the most verbose level: no password, stored value
/// or SASL response appears in any log line or reply; no core dump can be left.
#[test]
fn no_secret_reaches_a_log_or_a_reply() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let sasldb = dir.path().join("sasldb2");
    let secret = "Sup3r-Secret-Pw";
    make(
        "bdb",
        &sasldb,
        &[
            ("alice", "example.org", secret),
            ("bob", "example.org", "B0b-Secret-Pw"),
        ],
    );
    let auth = dir.path().join("auth");
    let args: Vec<OsString> = vec![
        "-a".into(),
        "sasldb".into(),
        "--sasldb".into(),
        sasldb.into(),
        "--realm".into(),
        "example.org".into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
        "--dovecot-mechanisms".into(),
        "plain login cram-md5 digest-md5 scram-sha-1 scram-sha-256".into(),
        "-d".into(),
    ];
    let daemon = Daemon::spawn(dir, &args, &[("SASLAUTHD_LOG", "trace".into())]);
    let wrong = "Wr0ng-Guess-Pw";
    let mut replies = String::new();
    let mut sent: Vec<String> = vec![secret.into(), "B0b-Secret-Pw".into(), wrong.into()];
    // The mux socket: right, wrong, unknown, empty realm, malformed.
    for (user, password) in [("alice", secret), ("alice", wrong), ("nobody", secret)] {
        replies += &daemon.ask(user, password, "smtp", "example.org");
    }
    replies += &String::from_utf8_lossy(&daemon.raw(b"\x00\x05alice\x00\x0fSup3r-Secret"));
    // The Dovecot socket: every mechanism, right and wrong.
    let mut c = common::dovecot::Client::postfix(&auth);
    let mut id = 0;
    for password in [secret, wrong] {
        for user in ["alice@example.org", "ghost@example.org"] {
            id += 1;
            let ir = plain(user, password);
            sent.push(ir.clone());
            c.send(&format!("AUTH\t{id}\tPLAIN\tservice=smtp\tresp={ir}\n"));
            replies += &c.line();
            id += 1;
            c.send(&format!("AUTH\t{id}\tLOGIN\tservice=smtp\n"));
            replies += &c.line();
            c.send(&format!("CONT\t{id}\t{}\n", B64.encode(user)));
            replies += &c.line();
            let pw = B64.encode(password);
            sent.push(pw.clone());
            c.send(&format!("CONT\t{id}\t{pw}\n"));
            replies += &c.line();
            id += 1;
            replies += &common::dovecot::cram(&mut c, id, user, password);
            id += 1;
            replies += &common::dovecot::digest(&mut c, id, user, None, password);
            for sha256 in [false, true] {
                id += 1;
                replies += &common::dovecot::scram(&mut c, id, sha256, user, password, true);
            }
        }
    }
    assert!(
        replies.contains("OK\t") && replies.contains("FAIL\t"),
        "{replies}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = daemon.log_text();
    assert!(log.lines().count() > 20, "the log is verbose: {log}");
    for secret in &sent {
        assert!(
            !log.contains(secret.as_str()),
            "{secret:?} in the log:\n{log}"
        );
        assert!(!replies.contains(secret.as_str()), "{secret:?} in a reply");
    }
    // Not even a fragment of the stored password.
    assert!(!log.contains("Sup3r") && !log.contains("B0b-S"), "{log}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    eprintln!(
        "secrets: {} log lines at trace level, {} replies' bytes, {} secrets and SASL responses checked: none found; {core}",
        log.lines().count(),
        replies.len(),
        sent.len()
    );
}
