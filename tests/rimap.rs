//! `-a rimap` against a real Dovecot IMAP server (`dovecot-imapd`, a throwaway instance per
//! test), compared request for request with Debian's Cyrus `saslauthd -a rimap` on the same
//! server; TLS both ways; and against hostile servers made here (silent, lying, not IMAP).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::imapd::{Imapd, Options};
use common::{peer, Cyrus, Daemon};

fn ready() -> bool {
    common::peers_for("rimap", common::imapd::missing())
}

/// Debian's Cyrus `saslauthd -a rimap` with `args`, its socket in `dir`; `None` (after the
/// missing-peer rule) without it.
fn cyrus(dir: &Path, args: &[&str]) -> Option<Cyrus> {
    let saslauthd = peer("saslauthd")?;
    let run = dir.join(format!("cyrus-run-{}", args.join("-").replace('/', "_")));
    let mut command = Cyrus::command();
    command
        .arg(&saslauthd)
        .args(["-a", "rimap", "-d", "-n", "4", "-m"])
        .arg(&run)
        .args(args);
    Some(Cyrus::start(command, &run))
}

/// `saslauthd-rs -a rimap` with `args`.
fn ours(args: &[&str]) -> Daemon {
    let args: Vec<std::ffi::OsString> = ["-a", "rimap"]
        .iter()
        .chain(args)
        .map(|a| a.into())
        .collect();
    Daemon::spawn(tempfile::tempdir().unwrap(), &args, &[])
}

/// The reply to a raw request (a password with a NUL cannot go through `ask`).
fn ask_raw(socket: &Path, login: &[u8], password: &[u8], realm: &[u8]) -> String {
    let reply = common::raw_exchange(socket, &common::frame(&[login, password, b"imap", realm]));
    String::from_utf8_lossy(&reply[2..]).into_owned()
}

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("quoter", r#"q"uo\te"#),
    // Dovecot's passwd-file never finds this one (it escapes the `'`): NO from both.
    ("o'brien@example.org", "an irish pw"),
    ("jürgen", "pässwörd"),
    ("carol@example.org", "carol-pw"),
];

/// The same reply, text for text, from both for every user's right and wrong password and
/// an unknown user, with and without a realm, with and without `-r`, and with the server
/// down.
#[test]
fn the_same_replies_as_cyrus_on_a_real_dovecot() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut imapd = Imapd::start(USERS, Options::default());
    let o = imapd.option();
    let Some(cyrus_plain) = cyrus(dir.path(), &["-O", &o]) else {
        return;
    };
    let cyrus_r = cyrus(dir.path(), &["-O", &o, "-r"]).unwrap();
    let (ours_plain, ours_r) = (ours(&["-O", &o]), ours(&["-O", &o, "-r"]));
    let mut cases: Vec<(String, String, &str)> = Vec::new();
    for (user, pw) in USERS {
        for realm in ["", "example.org"] {
            cases.push((user.to_string(), pw.to_string(), realm));
            cases.push((user.to_string(), format!("{pw}x"), realm));
        }
    }
    cases.push(("carol".into(), "carol-pw".into(), "example.org"));
    cases.push(("nobody".into(), "x".into(), ""));
    cases.push(("nobody".into(), "x".into(), "example.org"));
    let (mut compared, mut ok) = (0, 0);
    // Every case at once, each on its own thread, both daemons side by side: each IMAP
    // failure takes Dovecot half a second (its failure timer's tick).
    let mut compare = |cases: &[(String, String, &str)], down: bool| {
        let replies: Vec<(String, String, String)> = std::thread::scope(|s| {
            let asks: Vec<_> = cases
                .iter()
                .flat_map(|case| {
                    [
                        (&cyrus_plain, &ours_plain, "without -r"),
                        (&cyrus_r, &ours_r, "with -r"),
                    ]
                    .map(|(cyrus, ours, mode)| {
                        let (login, pw, realm) = case;
                        s.spawn(move || {
                            let theirs = common::ask_at(&cyrus.socket, login, pw, "imap", realm);
                            let got = ours.ask(login, pw, "imap", realm);
                            (
                                format!(
                                    "{login:?} {pw:?} realm {realm:?} {mode} (server down: {down})"
                                ),
                                got,
                                theirs,
                            )
                        })
                    })
                })
                .collect();
            asks.into_iter().map(|a| a.join().unwrap()).collect()
        });
        for (case, got, theirs) in replies {
            assert_eq!(got, theirs, "{case}: {}", ours_plain.log_text());
            compared += 1;
            ok += usize::from(got.starts_with("OK"));
        }
    };
    compare(&cases, false);
    // Without -r the realm is ignored; with it, the login is user@realm.
    assert_eq!(
        ours_r.ask("carol", "carol-pw", "imap", "example.org"),
        "OK remote authentication successful"
    );
    assert_eq!(
        ours_plain.ask("carol", "carol-pw", "imap", "example.org"),
        "NO remote server rejected your credentials"
    );
    imapd.stop();
    compare(&cases[..4], true);
    assert_eq!(
        ours_plain.ask("alice", "alice-pw", "imap", ""),
        "NO [ALERT] Couldn't contact remote authentication server"
    );
    eprintln!(
        "-a rimap and Cyrus's on Dovecot's IMAP server: the same reply for {compared} \
         requests ({ok} OK), server up and down"
    );
}

/// A password with CR LF is one value, never a second command: Cyrus's makes Dovecot log in
/// another user (its `LOGIN` carries the password raw inside quotes), ours sends a literal.
/// And a NUL is refused: Cyrus's cuts the password there and logs in.
#[test]
fn no_command_injection_and_no_cut_at_a_nul() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imapd = Imapd::start(USERS, Options::default());
    let o = imapd.option();
    let d = ours(&["-O", &o]);
    let injection = "x\r\nsaslauthd LOGIN bob bob-pw\r\nz";
    let logins_of_bob = || imapd.log().matches("Login: user=<bob>").count();
    assert_eq!(
        d.ask("alice", injection, "imap", ""),
        "NO remote server rejected your credentials"
    );
    assert_eq!(
        d.ask("alice", r#"x" "y"#, "imap", ""),
        "NO remote server rejected your credentials"
    );
    assert_eq!(
        ask_raw(&d.socket, b"alice", b"alice-pw\0junk", b""),
        "NO remote server rejected your credentials"
    );
    assert_eq!(logins_of_bob(), 0, "{}", imapd.log());
    let Some(c) = cyrus(dir.path(), &["-O", &o]) else {
        return;
    };
    let theirs = common::ask_at(&c.socket, "alice", injection, "imap", "");
    common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || logins_of_bob() == 1,
        || {
            format!(
                "Cyrus's injection did not log bob in ({theirs}): {}",
                imapd.log()
            )
        },
    );
    assert_eq!(
        ask_raw(&c.socket, b"alice", b"alice-pw\0junk", b""),
        "OK remote authentication successful"
    );
    eprintln!(
        "a password with CR LF: Cyrus's saslauthd made Dovecot log bob in (and answered \
         {theirs:?}), ours did not; a NUL: Cyrus OK, ours NO"
    );
}

/// A server that takes no LOGIN before TLS (LOGINDISABLED): without TLS ours sends no
/// password and says the server cannot be used (Cyrus's sends it in the clear); with STARTTLS or imaps, checked against the test CA, logins work; a server
/// whose certificate the CA did not sign gets no password.
#[test]
fn starttls_and_imaps_with_the_certificate_checked() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imapd = Imapd::start(
        USERS,
        Options {
            tls_required: true,
            ..Options::default()
        },
    );
    let o = imapd.option();
    let ca = imapd.ca.to_str().unwrap();
    let attempts = || imapd.log().matches("auth failed").count();
    let plain = ours(&["-O", &o]);
    assert_eq!(
        plain.ask("alice", "alice-pw", "imap", ""),
        "NO [ALERT] The remote authentication server is currently unavailable"
    );
    plain.wait_for_log("LOGINDISABLED", 1);
    let imaps = format!("localhost/{}", imapd.imaps_port);
    for args in [
        vec!["-O", &o, "--rimap-tls", "starttls", "--rimap-ca", ca],
        vec!["-O", &imaps, "--rimap-tls", "imaps", "--rimap-ca", ca],
    ] {
        let d = ours(&args);
        // Dovecot's passwd-file never finds a name with `'` (it looks up `o\'brien`).
        for (user, pw) in USERS.iter().filter(|(u, _)| !u.contains('\'')) {
            assert_eq!(
                d.ask(user, pw, "imap", ""),
                "OK remote authentication successful",
                "{args:?} {user}: {} {}",
                d.log_text(),
                imapd.log()
            );
            assert_eq!(
                d.ask(user, "wrong", "imap", ""),
                "NO remote server rejected your credentials",
                "{args:?} {user}"
            );
        }
    }
    let before = attempts();
    // Another CA: the handshake fails, no password is sent.
    let (other_ca, _, _) = common::pki::certificates(dir.path(), "other", "DNS:localhost");
    let d = ours(&[
        "-O",
        &o,
        "--rimap-tls",
        "starttls",
        "--rimap-ca",
        other_ca.to_str().unwrap(),
    ]);
    assert_eq!(
        d.ask("alice", "alice-pw", "imap", ""),
        "NO [ALERT] Couldn't contact remote authentication server"
    );
    d.wait_for_log("TLS", 1);
    assert_eq!(attempts(), before, "no login was tried: {}", imapd.log());
    // Logins tried outside TLS (STARTTLS's and imaps's lines say TLS).
    let exposed = || {
        imapd
            .log()
            .lines()
            .filter(|l| l.contains("auth failed") && !l.contains("TLS"))
            .count()
    };
    assert_eq!(exposed(), 0, "{}", imapd.log());
    // Cyrus's sends the password in the clear all the same (Dovecot answers `* BAD [ALERT]
    // Plaintext authentication not allowed without SSL/TLS, but your client did it anyway`,
    // which Cyrus's calls unexpected).
    if let Some(c) = cyrus(dir.path(), &["-O", &o]) {
        assert_eq!(
            common::ask_at(&c.socket, "alice", "alice-pw", "imap", ""),
            "NO [ALERT] Unexpected response from remote authentication server"
        );
        common::wait_until(
            Duration::from_secs(5),
            Duration::from_millis(50),
            || exposed() == 1,
            || imapd.log(),
        );
    }
    eprintln!(
        "-a rimap: STARTTLS and imaps logins ({} users each), no password to a server that \
         says LOGINDISABLED or whose certificate fails",
        USERS.len() - 1
    );
}

/// A made-up IMAP server on loopback: for each connection, `script` is given the stream;
/// what every client sent is kept.
struct Fake {
    port: u16,
    heard: Arc<Mutex<Vec<u8>>>,
}

impl Fake {
    fn start(script: fn(&mut TcpStream)) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&heard);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    script(&mut stream);
                    // Whatever else the client says, until it closes or goes quiet.
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Fake { port, heard }
    }

    fn heard(&self) -> String {
        String::from_utf8_lossy(&self.heard.lock().unwrap()).into_owned()
    }
}

/// Reads the client's next line (or gives up after a second).
fn read_line(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = stream.read(&mut byte) {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

const GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] ready\r\n";

/// Servers that are silent, lie, break or are not IMAP: each a temporary failure in Cyrus's
/// words, within the reply deadline, never a success; and no password where it must not go.
#[test]
fn hostile_servers_are_temporary_failures_never_successes() {
    if !ready() {
        return;
    }
    type Script = fn(&mut TcpStream);
    let cases: [(&str, Script, &[&str], &str); 12] = [
        (
            "silent",
            |_| std::thread::sleep(Duration::from_secs(6)),
            &[],
            "NO [ALERT] error synchronizing with remote authentication server",
        ),
        (
            "not IMAP",
            |s| s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").unwrap(),
            &[],
            "NO [ALERT] Unexpected response from remote authentication server",
        ),
        (
            "BYE",
            |s| s.write_all(b"* BYE too busy\r\n").unwrap(),
            &[],
            "NO [ALERT] The remote authentication server is currently unavailable",
        ),
        (
            "PREAUTH",
            |s| {
                s.write_all(b"* PREAUTH welcome, whoever you are\r\n")
                    .unwrap()
            },
            &[],
            "NO [ALERT] Unexpected response from remote authentication server",
        ),
        (
            "closes after LOGIN",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                s.write_all(b"* OK [ALERT] going\r\n").unwrap();
                let _ = s.shutdown(std::net::Shutdown::Both);
            },
            &[],
            "NO [ALERT] saslauthd internal error",
        ),
        (
            "BAD",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                s.write_all(b"saslauthd BAD what\r\n").unwrap();
            },
            &[],
            "NO [ALERT] Unexpected response from remote authentication server",
        ),
        (
            "another tag's OK",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                s.write_all(b"a1 OK yes\r\nsaslauthd NO [AUTHENTICATIONFAILED] no\r\n")
                    .unwrap();
            },
            &[],
            "NO [ALERT] Unexpected response from remote authentication server",
        ),
        (
            "endless line",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                let _ = s.write_all(&[b'x'; 100_000]);
            },
            &[],
            "NO [ALERT] Unexpected response from remote authentication server",
        ),
        (
            "NO [UNAVAILABLE]",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                s.write_all(b"saslauthd NO [UNAVAILABLE] directory down\r\n")
                    .unwrap();
            },
            &[],
            "NO [ALERT] The remote authentication server is currently unavailable",
        ),
        (
            "LOGINDISABLED",
            |s| {
                s.write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n")
                    .unwrap();
            },
            &[],
            "NO [ALERT] The remote authentication server is currently unavailable",
        ),
        (
            "STARTTLS refused",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                s.write_all(b"saslauthd BAD no such command\r\n").unwrap();
            },
            &["--rimap-tls", "starttls"],
            "NO [ALERT] The remote authentication server is currently unavailable",
        ),
        (
            "data after STARTTLS's OK",
            |s| {
                s.write_all(GREETING).unwrap();
                read_line(s);
                s.write_all(b"saslauthd OK begin TLS\r\nsaslauthd OK [injected] yes\r\n")
                    .unwrap();
            },
            &["--rimap-tls", "starttls"],
            "NO [ALERT] Unexpected response from remote authentication server",
        ),
    ];
    for (what, script, extra, expected) in cases {
        let fake = Fake::start(script);
        let host = format!("127.0.0.1/{}", fake.port);
        let mut args = vec!["-O", host.as_str()];
        args.extend_from_slice(extra);
        let d = ours(&args);
        let start = Instant::now();
        let reply = d.ask("alice", "alice-pw", "imap", "");
        let took = start.elapsed();
        assert_eq!(reply, expected, "{what}: {}", d.log_text());
        assert!(took < Duration::from_millis(4500), "{what}: {took:?}");
        if extra.contains(&"starttls") || what == "LOGINDISABLED" {
            std::thread::sleep(Duration::from_millis(400));
            assert!(
                !fake.heard().contains("alice-pw"),
                "{what}: the password went out: {}",
                fake.heard()
            );
        }
    }
    eprintln!("-a rimap: 12 hostile servers, each a NO [ALERT] within 4.5 s, no password leaked");
}

/// A first host that never answers and one that does not resolve: every login is answered
/// by the next host, sixteen at once within the reply deadline; the dead host is then
/// skipped; the real server stopped and started again is used again.
#[test]
fn failover_past_silent_and_unresolvable_hosts() {
    if !ready() {
        return;
    }
    let silent = Fake::start(|_| std::thread::sleep(Duration::from_secs(8)));
    let mut imapd = Imapd::start(USERS, Options::default());
    let hosts = format!(
        "nonexistent.invalid/143 127.0.0.1/{} {}",
        silent.port,
        imapd.option()
    );
    let d = ours(&["-O", &hosts]);
    let start = Instant::now();
    let replies = common::ask_at_once(&d, 16, "alice", "alice-pw");
    let took = start.elapsed();
    assert!(
        replies
            .iter()
            .all(|r| r == "OK remote authentication successful"),
        "{replies:?}: {}",
        d.log_text()
    );
    assert!(took < Duration::from_millis(4500), "{took:?}");
    d.wait_for_log("IMAP server unusable", 2);
    let start = Instant::now();
    assert_eq!(
        d.ask("bob", "bob-pw", "imap", ""),
        "OK remote authentication successful"
    );
    let skipped = start.elapsed();
    assert!(skipped < Duration::from_millis(1000), "{skipped:?}");
    imapd.stop();
    assert!(d.ask("bob", "bob-pw", "imap", "").starts_with("NO [ALERT]"));
    imapd.run();
    common::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || d.ask("bob", "bob-pw", "imap", "") == "OK remote authentication successful",
        || d.log_text(),
    );
    eprintln!(
        "-a rimap: 16 logins at once past a silent and an unresolvable host in {took:?}, \
         then {skipped:?} with them skipped"
    );
}

/// Settings that cannot work stop the start with a message that names them; the TOML keys
/// work as the flags do.
#[test]
fn settings() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str]| {
        let out = std::process::Command::new(common::DAEMON)
            .args(["-a", "rimap", "-m"])
            .arg(dir.path())
            .args(args)
            .arg("--check-config")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for (args, says) in [
        (&[][..], "-a rimap needs the IMAP server"),
        (&["-O", "h/0"], "-O \"h/0\": the port is not a number"),
        (
            &["-O", "h", "--rimap-tls", "tls"],
            "rimap_tls \"tls\": expected starttls, imaps or off",
        ),
        (
            &[
                "-O",
                "h",
                "--rimap-tls",
                "imaps",
                "--rimap-ca",
                "/nonexistent/ca.pem",
            ],
            "rimap_ca: /nonexistent/ca.pem",
        ),
    ] {
        let (ok, text) = check(args);
        assert!(!ok && text.contains(says), "{args:?}: {text}");
    }
    let conf = dir.path().join("saslauthd-rs.toml");
    std::fs::write(
        &conf,
        "passdb = \"rimap\"\nmech_options = [\"imap.example.org\"]\nrimap_tls = \"starttls\"\n",
    )
    .unwrap();
    let (ok, text) = check(&["--config", conf.to_str().unwrap()]);
    assert!(ok && text.contains("rimap_tls = \"starttls\""), "{text}");
}
