//! Shared helpers: start the real `saslauthd-rs` binary on a socket in a temporary directory,
//! make sasldb2 files with `saslpasswd2-rs`, and find Debian's peer programs.
#![allow(dead_code)]

pub mod dirsrv;
pub mod dovecot;
pub mod dovecot_auth;
pub mod imapd;
pub mod kdc;
pub mod ldap;
pub mod mariadb;
pub mod oidc;
pub mod pam;
pub mod pg;
pub mod pki;
pub mod postfix;
pub mod redis;
pub mod samba;
pub mod smtp;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_saslauthd-rs");
pub const SASLPASSWD2: &str = env!("CARGO_BIN_EXE_saslpasswd2-rs");
pub const LISTUSERS: &str = env!("CARGO_BIN_EXE_sasldblistusers2-rs");
pub const TESTSASLAUTHD: &str = env!("CARGO_BIN_EXE_testsaslauthd-rs");
pub const CTL: &str = env!("CARGO_BIN_EXE_saslauthd-rs-ctl");

/// The fixtures written by the real Cyrus tools (`tests/fixtures/sasldb/README.md` lists their
/// users and passwords).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sasldb")
        .join(name)
}

/// The records of a sasldb2 file as the format's own C library sees them: `db5.3_dump -p`
/// (Berkeley DB), `mdb_dump -n -p` (LMDB) or `gdbm_dump` (GDBM), picked by the file's magic.
/// `None` when the peer is missing (and not required). Panics when the tool rejects the file.
pub fn records_by_peer(path: &Path) -> Option<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    let head = std::fs::read(path).unwrap();
    // Either byte order.
    let word = |at: usize, magic: u32, mask: u32| {
        head.get(at..at + 4).is_some_and(|b| {
            let b: [u8; 4] = b.try_into().unwrap();
            u32::from_le_bytes(b) & mask == magic || u32::from_be_bytes(b) & mask == magic
        })
    };
    let (tool, args): (&str, &[&str]) = if word(16, 0xBEEF_C0DE, !0) {
        ("mdb_dump", &["-n", "-p"])
    } else if word(12, 0x0006_1561, !0) {
        ("db5.3_dump", &["-p"])
    } else if word(0, 0x1357_9ac0, 0xffff_fff0) {
        ("gdbm_dump", &[])
    } else {
        panic!("{}: no sasldb2 magic", path.display());
    };
    let program = peer(tool)?;
    let mut cmd = Command::new(program);
    cmd.args(args).arg(path);
    if tool == "gdbm_dump" {
        cmd.arg("-");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let values: Vec<Vec<u8>> = if tool == "gdbm_dump" {
        gdbm_dump_items(&text)
    } else {
        text.lines()
            .skip_while(|l| *l != "HEADER=END")
            .skip(1)
            .take_while(|l| *l != "DATA=END")
            .map(|l| unescape_dump(l.strip_prefix(' ').unwrap_or(l)))
            .collect()
    };
    assert!(values.len().is_multiple_of(2), "{tool}: odd item count");
    Some(
        values
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect(),
    )
}

/// One item of `db_dump -p` / `mdb_dump -p`: printable bytes, `\\` and `\XX` escapes.
fn unescape_dump(line: &str) -> Vec<u8> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if bytes[i] == b'\\' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The items of a `gdbm_dump` ASCII dump: `#:len=N` then base64 lines.
fn gdbm_dump_items(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut items = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("#:len=") || line.starts_with("# End of data") {
            if let Some(b64) = current.take() {
                items.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                );
            }
            if line.starts_with("#:len=") {
                current = Some(String::new());
            }
        } else if let Some(b64) = current.as_mut() {
            if !line.starts_with('#') {
                b64.push_str(line.trim());
            }
        }
    }
    if let Some(b64) = current {
        items.push(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        );
    }
    items
}

/// A peer program from Debian's packages. When `SASLAUTHD_RS_REQUIRE_PEERS=1` (as `.ci/run`
/// sets it) a missing peer fails the test; otherwise the test is skipped with a message.
pub fn peer(program: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return Some(path);
        }
    }
    if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{program} is not installed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
    }
    eprintln!("SKIPPED: {program} is not installed; run .ci/run to install the peers");
    None
}

/// Writes `users` (authid, realm, password) into a new LMDB sasldb2 with `saslpasswd2-rs`.
pub fn make_sasldb(path: &Path, users: &[(&str, &str, &str)]) {
    for (authid, realm, password) in users {
        set_password(path, authid, realm, password);
    }
}

pub fn set_password(path: &Path, authid: &str, realm: &str, password: &str) {
    passwd(
        Path::new(SASLPASSWD2),
        path,
        &["-c", "-u", realm, authid],
        password,
    );
}

/// Runs a saslpasswd2 (ours or Cyrus's) as `PROGRAM -p -f FILE ARGS`, with `password` and a
/// newline on stdin, and checks that it succeeded.
pub fn passwd(program: &Path, file: &Path, args: &[&str], password: &str) {
    let out = run_with_stdin(
        Command::new(program)
            .arg("-p")
            .arg("-f")
            .arg(file)
            .args(args),
        format!("{password}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small deterministic generator (xorshift), so a failure can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // A tool that fails before reading its input closes the pipe: not the test's concern.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// Whether the `suite`'s tests can run: `missing` names what is not there, if anything. A
/// missing peer fails under SASLAUTHD_RS_REQUIRE_PEERS=1, else the tests skip, saying so.
pub fn peers_for(suite: &str, missing: Option<&str>) -> bool {
    match missing {
        Some(what) if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("{suite} tests: {what} missing (SASLAUTHD_RS_REQUIRE_PEERS=1)")
        }
        Some(what) => {
            eprintln!("SKIPPED: {suite} tests need {what}");
            false
        }
        None => true,
    }
}

/// Where an unpacked peer is: the directory `$var` names if `program` (a path under it,
/// `usr/sbin/slapd`) is there, else `/` if the system has it installed.
pub fn peer_root(var: &str, program: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(var) {
        let dir = PathBuf::from(dir);
        if dir.join(program).exists() {
            return Some(dir);
        }
    }
    Path::new("/")
        .join(program)
        .exists()
        .then(|| PathBuf::from("/"))
}

/// A free 127.0.0.1 port: bound to port 0, noted, let go; never one this process has handed
/// out before. The kernel may give a port just let go to the next bind to port 0, and tests
/// run in parallel: two servers told the same port left one of them (a Postfix) failing to
/// bind while its test talked to the other's, which was being stopped (a connection that
/// never got a banner, once in a CI run).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Asks `ready` every `every` until it says yes; panics with `why()` once `within` has
/// passed. Returns how long it took.
pub fn wait_until(
    within: Duration,
    every: Duration,
    mut ready: impl FnMut() -> bool,
    why: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < within, "{}", why());
        std::thread::sleep(every);
    }
    start.elapsed()
}

/// Waits up to `within` for something to listen on 127.0.0.1:`port`; else panics with
/// `what` and `log()` (the server's own words).
pub fn wait_for_port(port: u16, within: Duration, what: &str, log: impl Fn() -> String) {
    wait_until(
        within,
        Duration::from_millis(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        || format!("{what} did not listen: {}", log()),
    );
}

/// `out`, after asserting that its program succeeded (else its output, under `what`).
pub fn checked(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stops a server the tests started: SIGTERM, waited for up to 20 s, then SIGKILL.
pub fn terminate(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The standard users of the tests (the same as the Cyrus fixtures).
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice", "example.org", "secret"),
    ("alice", "other.test", "different-secret"),
    ("bob", "example.org", "correct horse battery staple"),
    ("carol", "mail.example.net", "pa:ss@wo rd!"),
];

/// A running daemon; SIGTERM and wait on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub sasldb: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `saslauthd-rs -a sasldb -f` over a new sasldb2 holding `users`.
    pub fn start(users: &[(&str, &str, &str)], extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let sasldb = dir.path().join("sasldb2");
        make_sasldb(&sasldb, users);
        Self::start_on(dir, sasldb, extra)
    }

    /// Starts the daemon over an existing sasldb2 path (which may not exist yet), with
    /// `--realm default.test`.
    pub fn start_on(dir: tempfile::TempDir, sasldb: PathBuf, extra: &[&str]) -> Daemon {
        Self::launch(dir, sasldb, Some("default.test"), extra)
    }

    /// Starts the daemon; `realm: None` leaves the default realm to the host name.
    pub fn launch(
        dir: tempfile::TempDir,
        sasldb: PathBuf,
        realm: Option<&str>,
        extra: &[&str],
    ) -> Daemon {
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "sasldb".into(),
            "--sasldb".into(),
            sasldb.clone().into(),
        ];
        if let Some(realm) = realm {
            args.extend(["--realm".into(), realm.into()]);
        }
        args.extend(extra.iter().map(OsString::from));
        let mut d = Self::spawn(dir, &args, &[]);
        d.sasldb = sasldb;
        d
    }

    /// Starts `saslauthd-rs -a shadow` over a shadow file holding one `user` whose password
    /// is `password` (SHA-512 crypt), in a directory others may traverse (mail servers reach
    /// its socket as their own users).
    pub fn with_shadow_user(user: &str, password: &str) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let shadow = dir.path().join("shadow");
        let hash = saslauthd_rs::crypt::hash(password.as_bytes(), "$6$").unwrap();
        std::fs::write(&shadow, format!("{user}:{hash}:19000:0:99999:7:::\n")).unwrap();
        let args: Vec<OsString> = vec![
            "-a".into(),
            "shadow".into(),
            "--shadow-file".into(),
            shadow.into(),
        ];
        Self::spawn(dir, &args, &[])
    }

    /// Starts `saslauthd-rs -f -V -m <dir>/run --failure-delay 0 ARGS` with extra environment
    /// (later flags in `args` override the earlier ones).
    pub fn spawn(dir: tempfile::TempDir, args: &[OsString], env: &[(&str, OsString)]) -> Daemon {
        Self::spawn_via(&[], dir, args, env)
    }

    /// [`Daemon::spawn`] run by `via` (a program and its arguments that exec the daemon in the
    /// same process, as `nsenter --net=...` does), or directly when `via` is empty.
    pub fn spawn_via(
        via: &[OsString],
        dir: tempfile::TempDir,
        args: &[OsString],
        env: &[(&str, OsString)],
    ) -> Daemon {
        let run_dir = dir.path().join("run");
        let log = dir.path().join("daemon.log");
        let mut command = match via.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(DAEMON);
                command
            }
            None => Command::new(DAEMON),
        };
        let child = command
            .args(["-f", "-V", "--failure-delay", "0", "-m"])
            .arg(&run_dir)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start saslauthd-rs");
        let socket = run_dir.join("mux");
        let sasldb = dir.path().join("sasldb2");
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            run_dir,
            socket,
            sasldb,
            log,
        };
        daemon.wait_for_socket();
        daemon
    }

    fn wait_for_socket(&mut self) {
        let child = self.child.as_mut().unwrap();
        if let Err(e) = wait_for_socket(&self.socket, child) {
            panic!("saslauthd-rs: {e}: {}", self.log_text());
        }
    }

    /// The daemon's log so far. The daemon writes its log from a thread of its own, a
    /// moment after the line's request was answered: this waits until the log has not grown
    /// for 50 ms (3 s at most).
    pub fn log_text(&self) -> String {
        settled_text(&self.log)
    }

    /// Sends raw bytes, half-closes nothing, and reads until the daemon closes.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        raw_exchange(&self.socket, request)
    }

    /// Sends a 4-field request and returns the reply body.
    pub fn ask(&self, login: &str, password: &str, service: &str, realm: &str) -> String {
        ask_at(&self.socket, login, password, service, realm)
    }

    /// `saslauthd-rs -a sasldb` over [`USERS`] serving Dovecot's protocol too, at the
    /// returned path, with `extra` flags.
    pub fn with_dovecot(extra: &[&str]) -> (Daemon, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sasldb = dir.path().join("sasldb2");
        make_sasldb(&sasldb, USERS);
        let auth = dir.path().join("auth");
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "sasldb".into(),
            "--sasldb".into(),
            sasldb.clone().into(),
            "--dovecot-socket".into(),
            auth.clone().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let mut d = Self::spawn(dir, &args, &[]);
        d.sasldb = sasldb;
        (d, auth)
    }

    /// Waits (at most 10 s) until the daemon's log holds `count` occurrences of `text`.
    pub fn wait_for_log(&self, text: &str, count: usize) {
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            // The file as it is now: waiting for the log to settle would wait its longest
            // while a load keeps it growing, at every poll.
            || {
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .matches(text)
                    .count()
                    >= count
            },
            || format!("no {count}× {text:?} in the log:\n{}", self.log_text()),
        );
    }

    /// The saslauthd socket's `connections_open` and `connections_total` now, from one
    /// scrape of the daemon's metrics.
    pub fn mux_counts(&self) -> Option<(u64, u64)> {
        let (code, text, err) = ctl(&self.run_dir, &["metrics"]);
        assert_eq!(code, Some(0), "{err}");
        // None until the mux's accept loop has started (the admin socket may answer first).
        let series = |name: &str| -> Option<u64> {
            let series = format!(
                "saslauthd_rs_{name}{{protocol=\"saslauthd\",listener=\"{}\"}} ",
                self.socket.display()
            );
            text.lines()
                .find_map(|line| line.strip_prefix(series.as_str()))
                .map(|n| n.parse().unwrap())
        };
        Some((series("connections_open")?, series("connections_total")?))
    }

    /// Waits (10 s at most) until `open` connections are open on the saslauthd socket and
    /// `total` were let in since the start (the harness's readiness probe is the first).
    pub fn wait_on_mux(&self, open: u64, total: u64) {
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || self.mux_counts() == Some((open, total)),
            || {
                format!(
                    "{open} open and {total} let in on mux, not {:?}; log: {}",
                    self.mux_counts(),
                    self.log_text()
                )
            },
        );
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits (at most 15 s) for the daemon to exit by itself.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(15) {
                child.kill().unwrap();
                panic!("saslauthd-rs did not exit in 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGTERM, then the exit status (within 15 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        self.wait()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// Waits until `socket` accepts connections (10 s at most), failing early if `child` exits.
/// Sends a 4-field request to the mux socket at `socket`; the reply body.
/// `n` asks of `login` on `d` at once (each on its own connection), their replies.
pub fn ask_at_once(d: &Daemon, n: usize, login: &str, password: &str) -> Vec<String> {
    std::thread::scope(|s| {
        let asks: Vec<_> = (0..n)
            .map(|_| s.spawn(|| d.ask(login, password, "smtp", "")))
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    })
}

pub fn ask_at(socket: &Path, login: &str, password: &str, service: &str, realm: &str) -> String {
    let q = saslauthd_rs::client::Query {
        login: login.as_bytes(),
        password: password.as_bytes(),
        service: service.as_bytes(),
        realm: realm.as_bytes(),
        client_addr: None,
    };
    let body = saslauthd_rs::client::query(socket, &q, Duration::from_secs(10)).unwrap();
    String::from_utf8(body).unwrap()
}

/// Why a daemon never listened.
#[derive(Debug, thiserror::Error)]
pub enum NotListening {
    /// It exited first, with this status.
    #[error("exited with {0} before listening on {path}", path = .1.display())]
    Exited(std::process::ExitStatus, PathBuf),
    /// Nothing listened within 10 s.
    #[error("no listener on {} within 10 s", .0.display())]
    Timeout(PathBuf),
}

pub fn wait_for_socket(socket: &Path, child: &mut Child) -> Result<(), NotListening> {
    let start = Instant::now();
    while UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(NotListening::Exited(status, socket.to_owned()));
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(NotListening::Timeout(socket.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Sends `request` and reads everything until EOF (bounded by a 15 s timeout).
pub fn raw_exchange(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // A daemon that closes at once (a connection over the limit, a request it refuses early)
    // may do so before the write: that is a reply of nothing, not the harness's failure.
    if let Err(e) = stream.write_all(request) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

/// A request frame: each field as `u16 BE length + bytes`.
pub fn frame(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Debian's own Cyrus `saslauthd`, for side-by-side runs. It is started through `setsid`,
/// because in `-d` mode its SIGTERM handler signals its whole process group; dropping this
/// kills that group.
pub struct Cyrus {
    child: Child,
    pub socket: PathBuf,
}

impl Cyrus {
    /// `setsid`, to which the caller adds the program and its arguments (which must put the
    /// socket in `run_dir`) and its environment.
    pub fn command() -> Command {
        Command::new("setsid")
    }

    /// Starts `command` and waits until `run_dir/mux` answers.
    pub fn start(mut command: Command, run_dir: &Path) -> Cyrus {
        std::fs::create_dir_all(run_dir).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut cyrus = Cyrus {
            child,
            socket: run_dir.join("mux"),
        };
        if let Err(e) = wait_for_socket(&cyrus.socket, &mut cyrus.child) {
            panic!("Cyrus saslauthd: {e}");
        }
        cyrus
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// `saslauthd-rs-ctl -m RUN_DIR ARGS...`: its exit code, stdout and stderr.
pub fn ctl(run_dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(CTL)
        .arg("-m")
        .arg(run_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The text of the files `names` in `dir`, one after the other (a missing one is empty): a
/// server's logs, for a failed assertion's message.
pub fn files_text(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
        .collect()
}

/// The text of a log file once it has stopped growing for 50 ms (3 s at most): a daemon's
/// log thread writes a line shortly after the reply it belongs to.
pub fn settled_text(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = std::fs::read_to_string(path).unwrap_or_default();
        if now.len() == text.len() || Instant::now() > deadline {
            return now;
        }
        text = now;
    }
}
