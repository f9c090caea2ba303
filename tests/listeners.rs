//! `[[listener]]` tables in the configuration file: more Unix sockets of either protocol, and
//! the Dovecot protocol on TCP for Postfix's `smtpd_sasl_path = inet:host:port`, letting in
//! only its allow list. And the start-up errors an administrator's slip gets: one line naming
//! the problem, exit status 1.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::dovecot::{plain, Client};
use common::{ask_at, free_port, make_sasldb, Daemon, USERS};

/// AUTH PLAIN over a TCP connection to the Dovecot protocol: the reply line, or `None` when
/// the server closed the connection without a handshake.
fn tcp_plain(port: u16, user: &str, password: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    // The handshake, up to DONE.
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "DONE\n" {
            break;
        }
    }
    write!(
        stream,
        "VERSION\t1\t0\nCPID\t7\nAUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain(user, password)
    )
    .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    Some(line)
}

fn start_with_config(text: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let sasldb = dir.path().join("sasldb2");
    make_sasldb(&sasldb, USERS);
    let text = text.replace("DIR", dir.path().to_str().unwrap());
    let file = dir.path().join("saslauthd-rs.toml");
    std::fs::write(&file, text).unwrap();
    let args: Vec<OsString> = vec![
        "-a".into(),
        "sasldb".into(),
        "--sasldb".into(),
        sasldb.into(),
        "--config".into(),
        file.into(),
    ];
    Daemon::spawn(dir, &args, &[])
}

#[test]
fn more_sockets_and_dovecot_on_tcp_with_an_allow_list() {
    use std::os::unix::fs::PermissionsExt;
    let (open, closed) = (free_port(), free_port());
    let d = start_with_config(&format!(
        r#"
[[listener]]
protocol = "saslauthd"
path = "DIR/second-mux"
mode = "0600"

[[listener]]
protocol = "dovecot"
path = "DIR/auth"
max_connections = 2

[[listener]]
protocol = "dovecot"
address = "127.0.0.1:{open}"
allow = ["127.0.0.0/8", "::1"]

[[listener]]
protocol = "dovecot"
address = "127.0.0.1:{closed}"
allow = ["192.0.2.0/24"]
"#
    ));
    let dir = d.dir.path().to_owned();
    // The mux socket as always, and the second one with its own mode.
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    let second = dir.join("second-mux");
    assert_eq!(
        ask_at(&second, "alice", "secret", "smtp", "example.org"),
        "OK"
    );
    assert_eq!(
        ask_at(&second, "alice", "wrong", "smtp", "example.org"),
        "NO"
    );
    let mode = std::fs::metadata(&second).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A Dovecot socket with its own budget of two connections: a third closes the one idle
    // longest.
    let login = |c: &mut Client| {
        c.send(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
            plain("alice@example.org", "secret")
        ));
        assert_eq!(c.line(), "OK\t1\tuser=alice@example.org\n");
    };
    // Each answered before the next connects: the first is the one quiet longest.
    let mut first = Client::postfix(&dir.join("auth"));
    login(&mut first);
    let mut other = Client::postfix(&dir.join("auth"));
    login(&mut other);
    let mut third = Client::postfix(&dir.join("auth"));
    login(&mut third);
    assert!(
        first.closed(),
        "the budget of 2 made room by closing the oldest: {}",
        d.log_text()
    );
    // TCP, from an allowed address.
    let reply = tcp_plain(open, "alice@example.org", "secret").unwrap();
    assert_eq!(reply, "OK\t1\tuser=alice@example.org\n");
    let reply = tcp_plain(open, "alice@example.org", "wrong").unwrap();
    assert!(reply.starts_with("FAIL\t1\t"), "{reply}");
    // From anywhere else: closed at once, before the handshake.
    assert_eq!(tcp_plain(closed, "alice@example.org", "secret"), None);
    let log = d.log_text();
    assert!(
        log.contains("refused a connection from 127.0.0.1 (not in the listener's allow list)"),
        "{log}"
    );
    // At stop, the sockets it bound are gone.
    let mut d = d;
    assert!(d.stop().success());
    assert!(!second.exists() && !dir.join("auth").exists());
}

/// What the administrator wrote wrong, and the one line that says so.
#[test]
fn start_up_refuses_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str, flags: &[&str]| {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, config).unwrap();
        let out = Command::new(common::DAEMON)
            .args(["-f", "-a", "sasldb", "--sasldb"])
            .arg(dir.path().join("sasldb2"))
            .arg("-m")
            .arg(dir.path().join("run"))
            .arg("--config")
            .arg(&file)
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{config:?} {flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    let missing = dir.path().join("no-such-dir/auth");
    let cases: Vec<(String, Vec<&str>, String)> = vec![
        // A typo in a key: its name and line.
        (
            "realm = \"example.org\"\nfailure_dleay = 1\n".into(),
            vec![],
            "unknown field `failure_dleay`".into(),
        ),
        // A bad value: the key and its line.
        (
            "realm = \"example.org\"\n\nsocket_mode = \"0999\"\n".into(),
            vec![],
            "socket_mode at line 3: invalid socket mode".into(),
        ),
        // A socket in a directory that does not exist.
        (
            format!("[[listener]]\nprotocol = \"dovecot\"\npath = \"{}\"\n", missing.display()),
            vec![],
            format!("{}: No such file or directory", missing.parent().unwrap().display()),
        ),
        // A user that does not exist.
        (
            "user = \"no-such-user-here\"\n".into(),
            vec![],
            "no such user".into(),
        ),
        (
            "[[listener]]\nprotocol = \"dovecot\"\npath = \"/tmp/auth\"\nowner = \"no-such-user-here\"\n".into(),
            vec![],
            "the [[listener]] at line 1: owner \"no-such-user-here\": no such user".into(),
        ),
        // An address where a path belongs, and the other way round.
        (
            "[[listener]]\nprotocol = \"dovecot\"\npath = \"127.0.0.1:12345\"\n".into(),
            vec![],
            "path \"127.0.0.1:12345\" is an address; a TCP listener takes address = \"127.0.0.1:12345\"".into(),
        ),
        (
            "\n[[listener]]\nprotocol = \"dovecot\"\naddress = \"/run/auth\"\n".into(),
            vec![],
            "the [[listener]] at line 2: address \"/run/auth\" is a path".into(),
        ),
        (
            String::new(),
            vec!["--dovecot-socket", "inet:127.0.0.1:12345"],
            "an address where a path belongs".into(),
        ),
        // A thread count out of range, on the command line or in the file.
        (
            String::new(),
            vec!["--threads", "-1"],
            "--threads takes 0 (one per core) to 1024".into(),
        ),
        (
            "threads = 5000\n".into(),
            vec![],
            "threads at line 1: --threads takes 0 (one per core) to 1024".into(),
        ),
        // TCP without an allow list, or with an empty one, or a bad network.
        (
            "[[listener]]\nprotocol = \"dovecot\"\naddress = \"127.0.0.1:12345\"\n".into(),
            vec![],
            "a TCP listener needs allow = [...]".into(),
        ),
        (
            "[[listener]]\nprotocol = \"dovecot\"\naddress = \"127.0.0.1:12345\"\nallow = []\n".into(),
            vec![],
            "allow = [] lets nobody in".into(),
        ),
        (
            "[[listener]]\nprotocol = \"dovecot\"\naddress = \"127.0.0.1:12345\"\nallow = [\"10.1.2.3/8\"]\n".into(),
            vec![],
            "has host bits set".into(),
        ),
        // The saslauthd protocol on TCP, an unknown protocol, two listeners on one socket.
        (
            "[[listener]]\nprotocol = \"saslauthd\"\naddress = \"127.0.0.1:12345\"\nallow = [\"127.0.0.1\"]\n".into(),
            vec![],
            "the saslauthd protocol is served on Unix sockets only".into(),
        ),
        (
            "[[listener]]\nprotocol = \"imap\"\npath = \"/tmp/x\"\n".into(),
            vec![],
            "protocol \"imap\"".into(),
        ),
        (
            format!(
                "[[listener]]\nprotocol = \"saslauthd\"\npath = \"{}\"\n",
                dir.path().join("run/mux").display()
            ),
            vec![],
            "is already the mux socket (-m)".into(),
        ),
    ];
    for (config, flags, wanted) in &cases {
        let err = run(config, flags);
        assert!(
            err.contains(wanted.as_str()),
            "{config:?} {flags:?}:\n{err}\nwanted {wanted:?}"
        );
    }
    eprintln!(
        "{} misconfigurations refused, each with one line",
        cases.len()
    );
}

/// `--threads N`, or `threads = N` in the file (the flag wins): the runtime answers with N
/// threads, by its own count in the start-up line; the default is one, and 0 one per core.
#[test]
fn threads_set_how_many_threads_answer() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for (config, flags, threads) in [
        ("", vec![], 1),
        ("threads = 0\n", vec![], cores),
        ("", vec!["--threads", "0"], cores),
        ("threads = 3\n", vec![], 3),
        ("threads = 3\n", vec!["--threads", "1"], 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sasldb = dir.path().join("sasldb2");
        make_sasldb(&sasldb, USERS);
        let file = dir.path().join("saslauthd-rs.toml");
        std::fs::write(&file, config).unwrap();
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "sasldb".into(),
            "--sasldb".into(),
            sasldb.into(),
            "--config".into(),
            file.into(),
        ];
        args.extend(flags.iter().map(OsString::from));
        let d = Daemon::spawn(dir, &args, &[]);
        assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
        let log = d.log_text();
        assert!(
            log.contains(&format!(", threads {threads})")),
            "{config:?} {flags:?}: {log}"
        );
    }
}
