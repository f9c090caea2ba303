//! The drop-in shims of saslauthd-compat/.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

const WRAPPER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/saslauthd-compat/saslauthd.wrapper"
);

/// Runs the wrapper with `env` until the daemon it starts listens in `run`; one login through
/// it; then stops it.
fn through_the_wrapper(env: &[(&str, &std::path::Path)], run: &std::path::Path) {
    let mut child = Command::new(WRAPPER)
        .arg("-f")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SASLAUTHD_RS", common::DAEMON)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = run.join("mux");
    if let Err(e) = common::wait_for_socket(&socket, &mut child) {
        panic!("the wrapper's daemon: {e}");
    }
    assert_eq!(
        common::ask_at(&socket, "alice", "secret", "smtp", "example.org"),
        "OK"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// Fedora's /etc/sysconfig/saslauthd, as Fedora ships it and then edited.
#[test]
fn wrapper_reads_fedora_sysconfig() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    common::make_sasldb(&db, common::USERS);
    let run = dir.path().join("run");
    let sysconfig = dir.path().join("sysconfig-saslauthd");
    std::fs::write(
        &sysconfig,
        format!(
            "# Directory in which to place saslauthd's listening socket, pid file, and so\n\
             # on.  This directory must already exist.\nSOCKETDIR={}\n\n\
             # Mechanism to use when checking passwords.  Run \"saslauthd -v\" to get a list\n\
             # of which mechanism your installation was compiled with the ablity to use.\n\
             MECH=sasldb\n\n# Additional flags to pass to saslauthd on the command line.  See saslauthd(8)\n\
             # for the list of accepted flags.\nFLAGS=\"--sasldb {} -n 2\"\n",
            run.display(),
            db.display()
        ),
    )
    .unwrap();
    let none = dir.path().join("no-debian-defaults");
    through_the_wrapper(
        &[
            ("SASLAUTHD_DEFAULTS", &none),
            ("SASLAUTHD_SYSCONFIG", &sysconfig),
        ],
        &run,
    );
}

/// Debian's START=no starts nothing, as its init script.
#[test]
fn wrapper_honours_debian_start_no() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = dir.path().join("saslauthd");
    std::fs::write(&defaults, "START=no\nMECHANISMS=\"sasldb\"\n").unwrap();
    let out = Command::new(WRAPPER)
        .env("SASLAUTHD_DEFAULTS", &defaults)
        .env("SASLAUTHD_RS", common::DAEMON)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not started: START=no"));
}

#[test]
fn wrapper_reads_debian_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    common::make_sasldb(&db, common::USERS);
    let run = dir.path().join("run");
    let defaults = dir.path().join("saslauthd");
    std::fs::write(
        &defaults,
        format!(
            "# as Debian ships it, edited\nSTART=yes\nMECHANISMS=\"sasldb pam\"\nMECH_OPTIONS=\"\"\n\
             THREADS=2\nOPTIONS=\"-c -m {} --sasldb {}\"\n",
            run.display(),
            db.display()
        ),
    )
    .unwrap();
    through_the_wrapper(&[("SASLAUTHD_DEFAULTS", &defaults)], &run);
}

/// fail2ban (Debian's, unpacked by scripts/test.sh, never installed or started) with the
/// filter in saslauthd-compat/fail2ban, run by `fail2ban-regex` over a real daemon's log:
/// every refused login's client address, on both sockets, and no address a user name tried
/// to plant.
#[test]
fn fail2ban_finds_the_addresses_of_refused_logins() {
    let root = std::env::var_os("SASLAUTHD_RS_FAIL2BAN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/fail2ban")
        });
    let regex = root.join("usr/bin/fail2ban-regex");
    if !regex.exists() {
        assert!(
            std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() != Ok("1"),
            "fail2ban is not unpacked (scripts/test.sh does it)"
        );
        eprintln!("SKIPPED: fail2ban is not unpacked");
        return;
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dir = tempfile::tempdir().unwrap();
    let sasldb = dir.path().join("sasldb2");
    common::make_sasldb(&sasldb, common::USERS);
    let auth = dir.path().join("auth");
    let args: Vec<std::ffi::OsString> = vec![
        "-a".into(),
        "sasldb".into(),
        "--sasldb".into(),
        sasldb.into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
    ];
    let daemon = common::Daemon::spawn(dir, &args, &[]);
    let mut c = common::dovecot::Client::postfix(&auth);
    let planted = "x] [remote=10.9.9.9] [protocol=dovecot] [duration_us=1]";
    let attempts = [
        ("192.0.2.7", "alice@example.org", "wrong"),
        ("192.0.2.7", "alice@example.org", "wrong again"),
        ("192.0.2.7", "nobody@example.org", "secret"),
        ("192.0.2.50", planted, "wrong"),
        ("192.0.2.99", "alice@example.org", "secret"),
    ];
    for (id, (rip, user, password)) in attempts.iter().enumerate() {
        c.send(&format!(
            "AUTH\t{}\tPLAIN\tservice=smtp\trip={rip}\tresp={}\n",
            id + 1,
            b64(&format!("\0{user}\0{password}"))
        ));
        c.line();
    }
    let q = saslauthd_rs::client::Query {
        login: b"alice",
        password: b"wrong",
        service: b"smtp",
        realm: b"example.org",
        client_addr: Some(b"198.51.100.9;4242"),
    };
    saslauthd_rs::client::query(&daemon.socket, &q, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // fail2ban reads filter.d/ with its common definitions beside ours.
    let conf = tempfile::tempdir().unwrap();
    let filters = conf.path().join("filter.d");
    std::fs::create_dir(&filters).unwrap();
    for entry in std::fs::read_dir(root.join("etc/fail2ban/filter.d")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), filters.join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/saslauthd-compat/fail2ban/filter.d/saslauthd-rs.conf"
        ),
        filters.join("saslauthd-rs.conf"),
    )
    .unwrap();
    let out = Command::new("python3")
        .arg(&regex)
        .args(["-o", "ip"])
        .arg(&daemon.log)
        .arg(filters.join("saslauthd-rs.conf"))
        .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ips: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ips.sort_unstable();
    assert_eq!(
        ips,
        [
            "192.0.2.50",
            "192.0.2.7",
            "192.0.2.7",
            "192.0.2.7",
            "198.51.100.9"
        ],
        "{}",
        daemon.log_text()
    );
    eprintln!("fail2ban: 5 refused logins found with their addresses (Dovecot rip= and the mux 5th field), the planted 10.9.9.9 not, the success not");
}
