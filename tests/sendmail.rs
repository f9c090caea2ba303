//! sendmail (Debian's 8.17, unpacked by scripts/test.sh beside Postfix, never installed)
//! with the admin guides' configurations verbatim (tests/fixtures/sendmail/): the MSA on 587
//! with SMTP AUTH through saslauthd-rs (`pwcheck_method: saslauthd`) over sasldb, shadow and
//! PAM; DIGEST-MD5 and CRAM-MD5 from a sasldb2 that only saslpasswd2-rs wrote
//! (`pwcheck_method: auxprop`); and what happens without a Sendmail.conf.
//!
//! Each sendmail runs in private mount, network and UTS namespaces (tests/sendmail/ns.sh):
//! its own loopback on the real ports 25 and 587, its own /dev/log read by the test, and the
//! test's Sendmail.conf where libsasl2 looks for it. No system file changes and no message can
//! leave: there is no other interface, and mail is only queued, in the test's directory.
//! Needs root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pam::PamFixture;
use common::{Daemon, USERS};

const NS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sendmail/ns.sh");

/// The directories libsasl2 reads `Sendmail.conf` from, in its order.
const SASL_CONF_DIRS: &[&str] = &[
    "/etc/sasl2",
    "/etc/sasl",
    "/usr/lib/x86_64-linux-gnu/sasl2",
    "/usr/lib/aarch64-linux-gnu/sasl2",
    "/usr/lib/sasl2",
];

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sendmail")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where scripts/test.sh unpacked sendmail, or `None` (then the test is skipped, or fails
/// when peers are required).
fn sendmail_root() -> Option<PathBuf> {
    let root = std::env::var_os("SASLAUTHD_RS_SENDMAIL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/sendmail"));
    let root = root
        .join("usr/libexec/sendmail/sendmail")
        .exists()
        .then_some(root);
    let root_user = unsafe { libc::geteuid() } == 0;
    if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        assert!(
            root.is_some(),
            "sendmail is not unpacked (scripts/test.sh does it; SASLAUTHD_RS_REQUIRE_PEERS=1)"
        );
        assert!(root_user, "the sendmail tests need root");
    }
    if !root_user {
        eprintln!("SKIPPED: sendmail in private namespaces needs root");
        return None;
    }
    if root.is_none() {
        eprintln!("SKIPPED: sendmail is not unpacked (scripts/test.sh does it)");
    }
    root
}

/// What the test adds around a guide's lines: its own files and directories, queue-only
/// delivery, no DNS, the standard mailers.
const HARNESS_MC: &str = "divert(-1)
divert(0)dnl
OSTYPE(`linux')dnl
define(`QUEUE_DIR', `@DIR@/mqueue')dnl
define(`confPID_FILE', `@DIR@/sendmail.pid')dnl
define(`ALIAS_FILE', `@DIR@/aliases')dnl
define(`STATUS_FILE', `@DIR@/statistics')dnl
define(`HELP_FILE', `@DIR@/helpfile')dnl
define(`confSERVICE_SWITCH_FILE', `@DIR@/service.switch')dnl
define(`confHOSTS_FILE', `@DIR@/hosts')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confDELIVERY_MODE', `queue')dnl
define(`confLOG_LEVEL', `14')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
include(`@DIR@/guide.mc')dnl
MAILER(`local')dnl
MAILER(`smtp')dnl
";

/// A running sendmail; killed on drop.
struct Sendmail {
    dir: tempfile::TempDir,
    /// `unshare`, whose child runs sendmail.
    child: Child,
    /// sendmail's own pid (its pid file): the namespaces to enter.
    pid: i32,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Sendmail {
    /// Starts sendmail with `guide_mc` (a guide's sendmail.mc lines) and, if given, the
    /// `Sendmail.conf` text libsasl2 is to find.
    fn start(root: &Path, guide_mc: &str, sendmail_conf: Option<&str>) -> Sendmail {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let text = |name: &str, body: &str| std::fs::write(d.join(name), body).unwrap();
        text("guide.mc", guide_mc);
        text("test.mc", &HARNESS_MC.replace("@DIR@", d.to_str().unwrap()));
        text("service.switch", "hosts files\naliases files\n");
        text("hosts", "127.0.0.1 localhost\n127.0.0.2 client.test\n");
        text("aliases", "");
        std::fs::create_dir(d.join("mqueue")).unwrap();
        std::fs::set_permissions(d.join("mqueue"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cf_dir = root.join("usr/share/sendmail/cf");
        let out = Command::new(root.join("usr/bin/m4"))
            .arg(format!("-D_CF_DIR_={}/", cf_dir.display()))
            .arg(cf_dir.join("m4/cf.m4"))
            .arg(d.join("test.mc"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "m4: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(d.join("sendmail.cf"), &out.stdout).unwrap();

        // The first directory libsasl2 reads: our Sendmail.conf (or none) beside copies of
        // what was there (the plugins, when it is their directory).
        let sasldir = SASL_CONF_DIRS
            .iter()
            .map(Path::new)
            .find(|p| p.is_dir())
            .expect("a libsasl2 configuration directory");
        std::fs::create_dir(d.join("sasl")).unwrap();
        for entry in std::fs::read_dir(sasldir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "Sendmail.conf" {
                continue;
            }
            if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                std::fs::copy(entry.path(), d.join("sasl").join(entry.file_name())).unwrap();
            }
        }
        if let Some(conf) = sendmail_conf {
            text("sasl/Sendmail.conf", conf);
        }

        // sendmail's syslog, line by line.
        let socket = UnixDatagram::bind(d.join("log")).unwrap();
        std::fs::set_permissions(d.join("log"), std::fs::Permissions::from_mode(0o666)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let line = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
                        log.lock().unwrap().push(line);
                    }
                }
            });
        }

        let output = std::fs::File::create(d.join("sendmail.out")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "-n", "-u", "--fork"])
            .arg(NS)
            .arg(d)
            .arg(sasldir)
            .arg(root.join("usr/libexec/sendmail/sendmail"))
            .args(["-bD", "-C"])
            .arg(d.join("sendmail.cf"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        let mut sendmail = Sendmail {
            dir,
            child,
            pid: 0,
            log,
            stop,
        };
        sendmail.wait_ready();
        sendmail
    }

    /// Waits for the pid file and for port 587 to answer.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sendmail exited ({status}): {}", self.output());
            }
            let pid = std::fs::read_to_string(self.dir.path().join("sendmail.pid"))
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse().ok());
            if let Some(pid) = pid {
                self.pid = pid;
                let greeting = self.in_netns(|| {
                    std::net::TcpStream::connect(("127.0.0.2", 587)).is_ok()
                        && std::net::TcpStream::connect(("127.0.0.2", 25)).is_ok()
                });
                if greeting {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sendmail did not listen: {}", self.output());
    }

    fn output(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("sendmail.out")).unwrap_or_default();
        format!("{out}\n{}", self.log_text())
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Runs `f` on a thread inside sendmail's network namespace.
    fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid)).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// A whole SMTP session from 127.0.0.2 (not the 127.0.0.1 sendmail relays for); every
    /// reply line.
    fn session(&self, port: u16, commands: &[&str]) -> Vec<String> {
        self.in_netns(|| common::smtp::session(("127.0.0.2", port), commands))
    }

    /// swaks (with Authen::SASL, an independent client) inside the namespace: AUTH's code.
    fn auth(&self, port: u16, mech: &str, user: &str, password: &str) -> String {
        let mut swaks = Command::new("nsenter");
        swaks
            .args(["-t", &self.pid.to_string(), "-n", "swaks"])
            .args(["--server", "127.0.0.2"]);
        common::smtp::swaks_auth(swaks, port, mech, user, password)
    }

    /// The lines of sendmail's log that mention AUTH.
    fn auth_log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("AUTH") || l.contains("SASL"))
            .cloned()
            .collect()
    }

    /// The `AUTH failure` lines of sendmail's log, once there are at least `n` (10 s at
    /// most): its syslog line may arrive after swaks has read the 535.
    fn failures_logged(&self, n: usize) -> Vec<String> {
        let failures = || -> Vec<String> {
            self.auth_log()
                .into_iter()
                .filter(|l| l.contains("AUTH failure"))
                .collect()
        };
        common::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || failures().len() >= n,
            || format!("{n} AUTH failures logged: {:?}", failures()),
        );
        failures()
    }

    /// Messages in the queue (each has a `qf` file).
    fn queued(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("mqueue"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("qf"))
            })
            .count()
    }
}

impl Drop for Sendmail {
    fn drop(&mut self) {
        // sendmail is set-group-id: the parent-death signal unshare could ask for does not
        // survive its exec, so it is killed by its pid.
        if self.pid > 0 {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn b64(text: &str) -> String {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    B64.encode(text)
}

/// The guide's MSA checks for one passdb: `user` with `password` is right.
fn msa_checks(sendmail: &Sendmail, daemon: &Daemon, user: &str, password: &str) {
    let port = 587;
    // AUTH PLAIN and then a message, as the guide shows it with telnet.
    let plain = format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{password}")));
    let lines = sendmail.session(
        port,
        &[
            "EHLO client.test",
            &plain,
            "MAIL FROM:<sender@example.org>",
            "RCPT TO:<someone@example.com>",
            "DATA",
            "Subject: test\r\n\r\nbody\r\n.",
            "QUIT",
        ],
    );
    let has = |lines: &[String], prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has(&lines, "250-AUTH LOGIN PLAIN"), "{lines:?}");
    assert!(has(&lines, "235 2.0.0 OK Authenticated"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("250 2.0.0") && l.ends_with("Message accepted for delivery")),
        "{lines:?}\n{}",
        sendmail.output()
    );
    assert_eq!(sendmail.queued(), 1, "queued here, never sent");
    // swaks: both mechanisms, right and wrong passwords, an unknown user.
    for mech in ["PLAIN", "LOGIN"] {
        assert_eq!(sendmail.auth(port, mech, user, password), "235", "{mech}");
        assert_eq!(sendmail.auth(port, mech, user, "wrong"), "535", "{mech}");
        assert_eq!(
            sendmail.auth(port, mech, "nobody", password),
            "535",
            "{mech}"
        );
    }
    // A refusal, not a broken daemon: libsasl2's SASL(-13).
    let refusals = sendmail.failures_logged(4);
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    assert!(
        refusals.iter().all(|l| l.contains("SASL(-13)")),
        "{refusals:?}"
    );
    // Without AUTH the MSA takes nothing.
    let lines = sendmail.session(
        port,
        &["EHLO client.test", "MAIL FROM:<sender@example.org>", "QUIT"],
    );
    assert!(
        has(&lines, "530 5.7.0 Authentication required"),
        "{lines:?}"
    );
    // Port 25: AUTH is not offered and not available; relaying is denied.
    let lines = sendmail.session(
        25,
        &[
            "EHLO client.test",
            &plain,
            "MAIL FROM:<sender@example.org>",
            "RCPT TO:<someone@example.com>",
            "QUIT",
        ],
    );
    assert!(!has(&lines, "250-AUTH"), "not offered on 25: {lines:?}");
    assert!(has(&lines, "503 5.3.3 AUTH not available"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("550 5.7.1") && l.contains("Relaying denied")),
        "{lines:?}"
    );
    // Every check went to saslauthd-rs, and no password reached its log.
    let log = daemon.log_text();
    assert_eq!(log.matches("auth success").count(), 3, "{log}");
    assert!(!log.contains(password) && !log.contains("wrong"), "{log}");
}

/// Setup 1 with `-a sasldb`, then a stopped daemon: 535 too, but no SASL(-13) in the log.
#[test]
fn sendmail_msa_587_through_saslauthd_rs_sasldb() {
    let Some(root) = sendmail_root() else {
        return;
    };
    let mut daemon = Daemon::start(USERS, &[]);
    let conf = fixture("Sendmail.conf.saslauthd").replace("@MUX@", daemon.socket.to_str().unwrap());
    let sendmail = Sendmail::start(&root, &fixture("msa.mc"), Some(&conf));
    msa_checks(&sendmail, &daemon, "alice@example.org", "secret");
    assert_eq!(
        sendmail.auth(587, "PLAIN", "carol@mail.example.net", "pa:ss@wo rd!"),
        "235"
    );

    daemon.stop();
    assert_eq!(
        sendmail.auth(587, "PLAIN", "alice@example.org", "secret"),
        "535"
    );
    // msa_checks' 4 refusals, then this one.
    let last = sendmail.failures_logged(5).pop().unwrap_or_default();
    assert!(
        last.contains("AUTH failure") && !last.contains("SASL(-13)"),
        "a dead daemon is told apart from a refusal: {last}"
    );
}

/// Setup 1 with `-a shadow`.
#[test]
fn sendmail_msa_587_through_saslauthd_rs_shadow() {
    let Some(root) = sendmail_root() else {
        return;
    };
    let daemon = Daemon::with_shadow_user("dave", "s3cret pass");
    let conf = fixture("Sendmail.conf.saslauthd").replace("@MUX@", daemon.socket.to_str().unwrap());
    let sendmail = Sendmail::start(&root, &fixture("msa.mc"), Some(&conf));
    msa_checks(&sendmail, &daemon, "dave", "s3cret pass");
}

/// Setup 1 with `-a pam` (pam_wrapper's pam_matrix, the test's own service file).
#[test]
fn sendmail_msa_587_through_saslauthd_rs_pam() {
    let Some(root) = sendmail_root() else {
        return;
    };
    let pam = PamFixture::new(true).expect("pam_wrapper");
    pam.set_passdb("erin:pam pass word:sasl-test\n");
    let daemon = pam.daemon(&["--pam-service", "sasl-test"]);
    let conf = fixture("Sendmail.conf.saslauthd").replace("@MUX@", daemon.socket.to_str().unwrap());
    let sendmail = Sendmail::start(&root, &fixture("msa.mc"), Some(&conf));
    msa_checks(&sendmail, &daemon, "erin", "pam pass word");
}

/// Setup 2: DIGEST-MD5 and CRAM-MD5 (and LOGIN, PLAIN) where libsasl2 itself reads a sasldb2
/// that only saslpasswd2-rs wrote, users made as the guide makes them.
#[test]
fn sendmail_auxprop_digest_and_cram_from_what_saslpasswd2_rs_wrote() {
    let Some(root) = sendmail_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sasldb = dir.path().join("sasldb2");
    let saslpasswd2 = |args: &[&str], password: &str| {
        common::passwd(Path::new(common::SASLPASSWD2), &sasldb, args, password)
    };
    // A bare user name is in the realm libsasl2 gives it: sendmail's host name.
    saslpasswd2(&["-c", "-u", "mail.example.test", "frank"], "frank's pw");
    saslpasswd2(&["-c", "-u", "example.org", "alice"], "secret");
    let conf = format!(
        "{}sasldb_path: {}\n",
        fixture("Sendmail.conf.auxprop"),
        sasldb.display()
    );
    let sendmail = Sendmail::start(&root, &fixture("secure.mc"), Some(&conf));
    let lines = sendmail.session(25, &["EHLO client.test", "QUIT"]);
    let offered: Vec<&str> = lines
        .iter()
        .find_map(|l| l.strip_prefix("250-AUTH "))
        .unwrap_or_else(|| panic!("no AUTH in {lines:?}"))
        .split(' ')
        .collect();
    let mut sorted = offered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["CRAM-MD5", "DIGEST-MD5", "LOGIN", "PLAIN"]);
    for mech in ["DIGEST-MD5", "CRAM-MD5", "LOGIN", "PLAIN"] {
        assert_eq!(
            sendmail.auth(25, mech, "frank", "frank's pw"),
            "235",
            "{mech}: {:?}",
            sendmail.auth_log()
        );
        assert_eq!(sendmail.auth(25, mech, "frank", "wrong"), "535", "{mech}");
        assert_eq!(
            sendmail.auth(25, mech, "nobody", "frank's pw"),
            "535",
            "{mech}"
        );
        assert_eq!(
            sendmail.auth(25, mech, "alice@example.org", "secret"),
            "235",
            "{mech}: {:?}",
            sendmail.auth_log()
        );
    }
    // A change by saslpasswd2-rs is what the next AUTH sees.
    saslpasswd2(&["-u", "mail.example.test", "frank"], "changed");
    for mech in ["DIGEST-MD5", "CRAM-MD5"] {
        assert_eq!(sendmail.auth(25, mech, "frank", "changed"), "235", "{mech}");
        assert_eq!(
            sendmail.auth(25, mech, "frank", "frank's pw"),
            "535",
            "{mech}"
        );
    }
}

/// The guide's trap: without a Sendmail.conf, libsasl2 checks the system's sasldb itself and
/// never asks saslauthd-rs, however it runs.
#[test]
fn without_sendmail_conf_the_daemon_is_never_asked() {
    let Some(root) = sendmail_root() else {
        return;
    };
    let daemon = Daemon::start(USERS, &[]);
    let sendmail = Sendmail::start(&root, &fixture("msa.mc"), None);
    let lines = sendmail.session(587, &["EHLO client.test", "QUIT"]);
    let auth = lines
        .iter()
        .find_map(|l| l.strip_prefix("250-AUTH "))
        .unwrap_or_default();
    assert_eq!(
        auth, "LOGIN PLAIN",
        "what libsasl2 offers by itself: {lines:?}"
    );
    assert_eq!(
        sendmail.auth(587, "PLAIN", "alice@example.org", "secret"),
        "535"
    );
    let log = daemon.log_text();
    assert!(!log.contains("auth "), "the daemon was asked: {log}");
}
