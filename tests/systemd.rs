//! Running under systemd: the unit files verify, and the daemon takes the sockets socket
//! activation passes (`systemd-socket-activate`, which execs it with LISTEN_FDS and
//! LISTEN_FDNAMES as systemd does), tells the service manager READY=1, WATCHDOG=1 and
//! STOPPING=1, and authenticates through both passed sockets.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dovecot::{plain, Client};
use common::peer;

const UNITS: &[&str] = &[
    "saslauthd-rs.service",
    "saslauthd-rs.socket",
    "saslauthd-rs-dovecot.socket",
    "saslauthd.service",
];

fn tool(name: &str) -> Option<PathBuf> {
    let found = peer(name);
    if found.is_none() && std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{name} is not installed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
    }
    found
}

/// `systemd-analyze verify` has nothing to say about the units (with ExecStart pointing at
/// the binary under test, since the installed path need not exist here).
#[test]
fn the_units_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(unit),
        )
        .unwrap();
        let wrapper = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/saslauthd-compat/saslauthd.wrapper"
        );
        let text = text
            .replace("/usr/sbin/saslauthd-rs", common::DAEMON)
            .replace("/usr/lib/saslauthd-rs/saslauthd.wrapper", wrapper);
        assert!(
            !unit.ends_with(".service") || text.contains(common::DAEMON) || text.contains(wrapper),
            "{unit} runs the daemon"
        );
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let service = std::fs::read_to_string(&paths[0]).unwrap();
    assert!(service.contains("Type=notify"), "{service}");
}

/// Waits for `path` to exist.
fn wait_for(path: &Path) {
    common::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || path.exists(),
        || format!("{} never appeared", path.display()),
    );
}

/// The next notification on `socket`.
fn next_notice(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn socket_activation_and_notifications() {
    let Some(activate) = tool("systemd-socket-activate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sasldb = d.join("sasldb2");
    common::make_sasldb(&sasldb, common::USERS);
    let (mux, auth) = (d.join("mux"), d.join("auth"));
    let notify = UnixDatagram::bind(d.join("notify")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = std::fs::File::create(d.join("daemon.log")).unwrap();
    // Killed if the test fails half-way (it becomes the daemon by exec).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(&mux)
        .arg("-l")
        .arg(&auth)
        .arg("--fdname=mux:dovecot")
        // It gives the program only LISTEN_* and what --setenv names.
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            d.join("notify").display()
        ))
        .arg("--setenv=WATCHDOG_USEC=200000")
        .arg(common::DAEMON)
        .args(["-a", "sasldb", "-f", "--failure-delay", "0", "--sasldb"])
        .arg(&sasldb)
        .arg("-m")
        .arg(d.join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    wait_for(&mux);
    wait_for(&auth);
    // The first connection starts the daemon, on the sockets systemd-socket-activate bound.
    let mut c = Client::postfix(&auth);
    let ready = next_notice(&notify);
    assert!(ready.starts_with("READY=1\nSTATUS=serving"), "{ready:?}");
    assert!(
        !d.join("run/mux").exists(),
        "the passed socket is used, none bound"
    );
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice@example.org", "secret")
    ));
    assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n");
    assert_eq!(
        common::ask_at(&mux, "alice", "secret", "smtp", "example.org"),
        "OK"
    );
    let watchdog = next_notice(&notify);
    assert_eq!(watchdog, "WATCHDOG=1");
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let mut stopping = next_notice(&notify);
    while stopping == "WATCHDOG=1" {
        stopping = next_notice(&notify);
    }
    assert_eq!(stopping, "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(
        mux.exists() && auth.exists(),
        "passed sockets are systemd's to remove"
    );
    eprintln!("systemd: READY=1, WATCHDOG=1, STOPPING=1 seen; PLAIN on the passed Dovecot socket and a mux request answered; exit 0");
}

/// A uid's and gids' lines of /proc/PID/status.
fn ids(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

fn group_id(name: &str) -> u32 {
    nix::unistd::Group::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no group {name}"))
        .gid
        .as_raw()
}

/// Started as root with `--user nobody`, the daemon binds its sockets and then runs as
/// nobody, keeping only the group that reads the passdb's file.
#[test]
fn drops_to_the_user_it_is_told() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: dropping privileges needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mail = group_id("mail");
    // sasldb: the file's group (mail) is kept.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sasldb = dir.path().join("sasldb2");
    common::make_sasldb(&sasldb, common::USERS);
    std::os::unix::fs::chown(&sasldb, Some(0), Some(mail)).unwrap();
    std::fs::set_permissions(&sasldb, std::fs::Permissions::from_mode(0o640)).unwrap();
    let d = common::Daemon::start_on(dir, sasldb.clone(), &["--user", "nobody"]);
    // The socket answers from the moment it is bound, which is before the drop.
    d.wait_for_log("running as nobody", 1);
    let (uid, gid, groups) = ids(d.pid());
    assert_eq!(uid, "65534 65534 65534 65534");
    assert_eq!(gid, "65534 65534 65534 65534");
    let mut groups: Vec<u32> = groups.split(' ').map(|g| g.parse().unwrap()).collect();
    groups.sort_unstable();
    let mut want = [65534, mail];
    want.sort_unstable();
    assert_eq!(groups, want, "nobody's group and the sasldb file's");
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    // A change (by root) is read by the daemon as nobody.
    common::set_password(&sasldb, "alice", "example.org", "changed");
    assert_eq!(d.ask("alice", "changed", "smtp", "example.org"), "OK");
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "NO");
    // shadow: the shadow group is kept.
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow");
    let hash = saslauthd_rs::crypt::hash(b"pw", "$6$").unwrap();
    std::fs::write(&shadow, format!("dave:{hash}:19000:0:99999:7:::\n")).unwrap();
    std::os::unix::fs::chown(&shadow, Some(0), Some(group_id("shadow"))).unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "-a".into(),
        "shadow".into(),
        "--shadow-file".into(),
        shadow.clone().into(),
        "--user".into(),
        "nobody".into(),
    ];
    let s = common::Daemon::spawn(dir, &args, &[]);
    s.wait_for_log("running as nobody", 1);
    let (uid, _, groups) = ids(s.pid());
    assert_eq!(uid, "65534 65534 65534 65534");
    assert!(
        groups
            .split(' ')
            .any(|g| g == group_id("shadow").to_string()),
        "{groups}"
    );
    assert_eq!(s.ask("dave", "pw", "smtp", ""), "OK");
    // A file the user cannot read: refused at start (before detaching), with the reason.
    std::fs::set_permissions(&sasldb, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(common::DAEMON)
        .args(["-a", "sasldb", "--user", "nobody", "--sasldb"])
        .arg(&sasldb)
        .arg("-m")
        .arg(tempfile::tempdir().unwrap().path().join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("as nobody (--user)") && err.contains("cannot be read"),
        "{err}"
    );
    eprintln!("privileges: as nobody (uid 65534) with group mail for the sasldb and shadow for -a shadow; logins and a change served; an unreadable file refused at start");
}

/// `--check-config`: the shipped example parses, the effective settings it prints read back
/// as the same settings, and a typo, a bad value or a missing user is one clear line.
#[test]
fn check_config_validates_and_prints_the_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/saslauthd-rs.toml");
    let check = |config: &Path, extra: &[&str]| {
        let out = Command::new(common::DAEMON)
            .arg("--check-config")
            .arg("--config")
            .arg(config)
            .args(["--sasldb"])
            .arg(dir.path().join("sasldb2"))
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, effective, err) = check(&example, &["--realm", "example.org"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(effective.contains("passdb = \"sasldb\"\n"), "{effective}");
    assert!(
        effective.contains("realm = \"example.org\"\n"),
        "flags override the file"
    );
    // What it printed is a configuration file meaning the same.
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &effective).unwrap();
    let (code, effective_again, err) = check(&again, &[]);
    assert_eq!(
        (code, effective_again.as_str()),
        (Some(0), effective.as_str()),
        "{err}"
    );
    for (text, wanted) in [
        ("passdb = \"sasldb\"\nreaml = \"x\"\n", "line 2"),
        ("socket_mode = \"999\"\n", "invalid socket mode \"999\""),
        (
            "user = \"no-such-user\"\npassdb = \"sasldb\"\n",
            "--user no-such-user: no such user",
        ),
        (
            "passdb = \"shadow\"\ndovecot_mechanisms = \"cram-md5\"\n",
            "mechanism CRAM-MD5 needs the stored password",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let (code, out, err) = check(&bad, &[]);
        assert_eq!(code, Some(1), "{text:?}: {out}");
        assert!(err.contains(wanted), "{text:?}: {err}");
        assert!(out.is_empty());
    }
    assert!(check(&bad_path(), &[]).2.contains("cannot read"));
}

fn bad_path() -> PathBuf {
    PathBuf::from("/nonexistent/saslauthd-rs.toml")
}

/// Parses one datagram of the journal's native protocol into its fields.
fn journal_fields(datagram: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut fields = std::collections::BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = &rest[..end];
        match line.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let name = String::from_utf8(line[..eq].to_vec()).unwrap();
                fields.insert(name, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
                rest = &rest[end + 1..];
            }
            None => {
                // NAME\n, u64 LE length, value, \n
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(rest[end + 1..end + 9].try_into().unwrap()) as usize;
                let value = &rest[end + 9..end + 9 + len];
                fields.insert(name, String::from_utf8_lossy(value).into_owned());
                rest = &rest[end + 9 + len + 1..];
            }
        }
    }
    fields
}

/// Under systemd (stderr is the journal's stream, as JOURNAL_STREAM says), each
/// authentication is one journal entry whose fields say who, how, from where and what came
/// of it; never the password. The journal socket is the test's, bound over
/// /run/systemd/journal in a private mount namespace.
#[test]
fn authentications_go_to_the_journal_as_fields() {
    use std::os::unix::fs::MetadataExt;
    if unsafe { libc::geteuid() } != 0 || tool("unshare").is_none() {
        eprintln!("SKIPPED: a private mount namespace needs root and unshare");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sasldb = dir.path().join("sasldb2");
    common::make_sasldb(&sasldb, common::USERS);
    let run = dir.path().join("run");
    let auth = dir.path().join("auth");
    let log = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
             mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
        )
        .arg(&journal_dir)
        .arg(common::DAEMON)
        .args([
            "-f",
            "-V",
            "--failure-delay",
            "0",
            "-a",
            "sasldb",
            "--sasldb",
        ])
        .arg(&sasldb)
        .arg("-m")
        .arg(&run)
        .arg("--dovecot-socket")
        .arg(&auth)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(stderr)
        .spawn()
        .unwrap();
    common::wait_for_socket(&run.join("mux"), &mut child).unwrap();
    let ask =
        |password: &str| common::ask_at(&run.join("mux"), "alice", password, "smtp", "example.org");
    assert_eq!(ask("a-wrong-password"), "NO");
    let mut c = Client::postfix(&auth);
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.44\tresp={}\n",
        plain("alice@example.org", "secret")
    ));
    assert!(c.line().starts_with("OK\t1\t"));
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 65536];
    while entries.len() < 2 {
        let n = journal.recv(&mut buf).expect("a journal entry within 10 s");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !text.contains("a-wrong-password") && !text.contains("secret"),
            "a password in the journal: {text}"
        );
        let fields = journal_fields(&buf[..n]);
        if fields.contains_key("VERDICT") {
            entries.push(fields);
        }
    }
    let _ = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let failure = &entries[0];
    for (name, value) in [
        ("VERDICT", "failure"),
        ("USER", "alice"),
        ("SERVICE", "smtp"),
        ("REALM", "example.org"),
        ("PASSDB", "sasldb"),
        ("PROTOCOL", "saslauthd"),
        ("REASON", "password mismatch"),
        ("PRIORITY", "6"),
        ("SYSLOG_IDENTIFIER", "saslauthd-rs"),
        ("SYSLOG_FACILITY", "4"),
    ] {
        assert_eq!(
            failure.get(name).map(String::as_str),
            Some(value),
            "{name}: {failure:?}"
        );
    }
    assert!(failure["DURATION_US"].parse::<u64>().is_ok());
    assert!(
        failure["MESSAGE"].starts_with("auth failure: [user=alice] [service=smtp]"),
        "the same line as in syslog: {failure:?}"
    );
    assert!(!failure["MESSAGE"].contains("verdict"));
    let success = &entries[1];
    for (name, value) in [
        ("VERDICT", "success"),
        ("PROTOCOL", "dovecot"),
        ("SASL_MECHANISM", "PLAIN"),
        ("REMOTE", "192.0.2.44"),
        ("PRIORITY", "7"),
    ] {
        assert_eq!(
            success.get(name).map(String::as_str),
            Some(value),
            "{name}: {success:?}"
        );
    }
    // Nothing went to stderr meanwhile: the journal had it all.
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!stderr.contains("auth failure"), "{stderr}");
    eprintln!("journal: {failure:?}");
}
