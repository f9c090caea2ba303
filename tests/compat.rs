//! The drop-in shims of saslauthd-compat/.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

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
    let wrapper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/saslauthd-compat/saslauthd.wrapper"
    );
    let mut child = Command::new(wrapper)
        .arg("-f")
        .env("SASLAUTHD_DEFAULTS", &defaults)
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
