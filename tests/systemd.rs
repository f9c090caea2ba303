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
        assert!(text.contains("/usr/sbin/saslauthd-rs") || !unit.ends_with(".service"));
        let path = dir.path().join(unit);
        std::fs::write(
            &path,
            text.replace("/usr/sbin/saslauthd-rs", common::DAEMON),
        )
        .unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(&mux)
        .arg("-l")
        .arg(&auth)
        .arg("--fdname=mux:dovecot")
        // It gives the program only LISTEN_* and what --setenv names.
        .arg(format!("--setenv=NOTIFY_SOCKET={}", d.join("notify").display()))
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
    let q = saslauthd_rs::client::Query {
        login: b"alice",
        password: b"secret",
        service: b"smtp",
        realm: b"example.org",
        client_addr: None,
    };
    let reply = saslauthd_rs::client::query(&mux, &q, Duration::from_secs(10)).unwrap();
    assert_eq!(reply, b"OK");
    let watchdog = next_notice(&notify);
    assert_eq!(watchdog, "WATCHDOG=1");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stopping = next_notice(&notify);
    while stopping == "WATCHDOG=1" {
        stopping = next_notice(&notify);
    }
    assert_eq!(stopping, "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
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
