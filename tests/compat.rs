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
    let q = saslauthd_rs::client::Query {
        login: b"alice",
        password: b"secret",
        service: b"smtp",
        realm: b"example.org",
        client_addr: None,
    };
    let reply = saslauthd_rs::client::query(&socket, &q, Duration::from_secs(5)).unwrap();
    assert_eq!(reply, b"OK");
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
