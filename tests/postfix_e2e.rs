//! A real Postfix (Debian's), driven by swaks: a throwaway instance with its own config and
//! queue directories (tests/postfix/instance.sh), smtpd on a free 127.0.0.1 port, SASL through
//! saslauthd-rs both ways Postfix can reach it. Needs root (Postfix's master drops to the
//! postfix user) and the packages postfix and swaks.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::postfix::{ready, Postfix};
use common::{Daemon, USERS};

/// A daemon whose sockets the postfix user can reach: group postfix on the run directory
/// (0710) and the mux (0660), as Debian does with group sasl; the Dovecot socket owned by
/// postfix, as `--dovecot-socket-owner postfix:postfix` makes it.
fn daemon_for_postfix() -> (Daemon, PathBuf) {
    daemon_for_postfix_with(&[])
}

/// The same with more flags.
fn daemon_for_postfix_with(extra: &[&str]) -> (Daemon, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sasldb = dir.path().join("sasldb2");
    common::make_sasldb(&sasldb, USERS);
    let auth = dir.path().join("auth");
    let args: Vec<OsString> = [
        "-a",
        "sasldb",
        "--sasldb",
        sasldb.to_str().unwrap(),
        "--dovecot-socket",
        auth.to_str().unwrap(),
        "--dovecot-socket-owner",
        "postfix:postfix",
    ]
    .iter()
    .chain(extra)
    .map(OsString::from)
    .collect();
    let d = Daemon::spawn(dir, &args, &[]);
    let gid = group_id("postfix");
    std::os::unix::fs::chown(&d.run_dir, None, Some(gid)).unwrap();
    std::os::unix::fs::chown(&d.socket, None, Some(gid)).unwrap();
    (d, auth)
}

fn group_id(name: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn postfix_dovecot_mode_plain_login_cram_md5() {
    if !ready() {
        return;
    }
    let (d, auth) = daemon_for_postfix();
    let postfix = Postfix::start(&d.dir.path().join("postfix"), "dovecot", &auth);
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "secret"),
            "235",
            "{mech}; {}",
            postfix.log()
        );
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "wrong"),
            "535",
            "{mech}"
        );
        assert_eq!(
            postfix.auth(mech, "carol@mail.example.net", "pa:ss@wo rd!"),
            "235",
            "{mech}"
        );
        assert_eq!(
            postfix.auth(mech, "nobody@example.org", "secret"),
            "535",
            "{mech}"
        );
    }
    assert!(
        postfix.log().contains("sasl_username=alice@example.org"),
        "{}",
        postfix.log()
    );
}

#[test]
fn postfix_cyrus_mode_plain_login() {
    if !ready() {
        return;
    }
    let (d, _) = daemon_for_postfix();
    let postfix = Postfix::start(&d.dir.path().join("postfix"), "cyrus", &d.socket);
    for mech in ["PLAIN", "LOGIN"] {
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "secret"),
            "235",
            "{mech}; {}",
            postfix.log()
        );
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "wrong"),
            "535",
            "{mech}"
        );
        assert_eq!(
            postfix.auth(mech, "bob@example.org", "correct horse battery staple"),
            "235",
            "{mech}"
        );
    }
}

/// `smtpd_sasl_path = inet:127.0.0.1:PORT`: the Dovecot protocol on a TCP `[[listener]]`
/// whose allow list lets the Postfix host in.
#[test]
fn postfix_dovecot_mode_over_tcp() {
    if !ready() {
        return;
    }
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sasldb = dir.path().join("sasldb2");
    common::make_sasldb(&sasldb, USERS);
    let config = dir.path().join("saslauthd-rs.toml");
    std::fs::write(
        &config,
        format!(
            "passdb = \"sasldb\"\nsasldb = \"{}\"\n\n[[listener]]\nprotocol = \"dovecot\"\n\
             address = \"127.0.0.1:{port}\"\nallow = [\"127.0.0.1\"]\n",
            sasldb.display()
        ),
    )
    .unwrap();
    let args: Vec<OsString> = vec!["--config".into(), config.into()];
    let d = Daemon::spawn(dir, &args, &[]);
    let path = PathBuf::from(format!("inet:127.0.0.1:{port}"));
    let postfix = Postfix::start(&d.dir.path().join("postfix"), "dovecot", &path);
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "secret"),
            "235",
            "{mech}; {}",
            postfix.log()
        );
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "wrong"),
            "535",
            "{mech}"
        );
    }
    assert!(postfix.log().contains("sasl_username=alice@example.org"));
}

/// `-a ldap` behind both Postfix modes: a throwaway slapd, saslauthd-rs with a Cyrus
/// saslauthd.conf, Postfix in cyrus mode (libsasl2 -> the mux socket) and in dovecot mode.
#[test]
fn postfix_both_modes_with_ldap() {
    if !ready() || !common::ldap::available() {
        return;
    }
    use common::ldap::Slapd;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let slapd = Slapd::start(
        &dir.path().join("slapd"),
        &[("alice", "alice-ldap-pw", "alice@example.org")],
        None,
    );
    let (d, auth) = ldap_daemon(dir.path(), &slapd);
    let modes = both_modes(&d, &auth);
    assert_logins(
        &modes,
        &d,
        "alice@example.org",
        "alice-ldap-pw",
        "nobody@example.org",
    );
    eprintln!("Postfix, cyrus and dovecot modes, -a ldap: PLAIN and LOGIN 235/535 as they should");
}

/// A Postfix instance in each mode on `d`'s sockets: cyrus (libsasl2 to the mux), then
/// dovecot (the auth socket at `auth`), each with its name.
fn both_modes(d: &Daemon, auth: &Path) -> [(Postfix, &'static str); 2] {
    let dir = d.dir.path();
    [
        (
            Postfix::start(&dir.join("postfix-cyrus"), "cyrus", &d.socket),
            "cyrus",
        ),
        (
            Postfix::start(&dir.join("postfix-dovecot"), "dovecot", auth),
            "dovecot",
        ),
    ]
}

/// In each mode, PLAIN and LOGIN: `user`'s `password` is a 235, a wrong one and an unknown
/// user `nobody` are 535s.
fn assert_logins(modes: &[(Postfix, &str)], d: &Daemon, user: &str, password: &str, nobody: &str) {
    for (postfix, mode) in modes {
        for mech in ["PLAIN", "LOGIN"] {
            assert_eq!(
                postfix.auth(mech, user, password),
                "235",
                "{mode} {mech}: {} {}",
                postfix.log(),
                d.log_text()
            );
            assert_eq!(postfix.auth(mech, user, "wrong"), "535", "{mode} {mech}");
            assert_eq!(postfix.auth(mech, nobody, "x"), "535", "{mode} {mech}");
        }
    }
}

/// `saslauthd-rs -a ldap` over `slapd` (filter `(uid=%U)`), its sockets reachable by the
/// postfix user; the daemon and its Dovecot socket.
fn ldap_daemon(dir: &Path, slapd: &common::ldap::Slapd) -> (Daemon, PathBuf) {
    use common::ldap::{PEOPLE, SEARCHER, SEARCHER_PW};
    let conf = dir.join("saslauthd.conf");
    std::fs::write(
        &conf,
        format!(
            "ldap_servers: {}\nldap_search_base: {PEOPLE}\nldap_bind_dn: {SEARCHER}\n\
             ldap_password: {SEARCHER_PW}\nldap_filter: (uid=%U)\n",
            slapd.url()
        ),
    )
    .unwrap();
    reachable_by_postfix(dir, &["-a", "ldap", "-O", conf.to_str().unwrap()])
}

/// `saslauthd-rs` with `args` and a Dovecot socket at `dir/auth`, both sockets reachable by
/// the postfix user; the daemon and its Dovecot socket.
fn reachable_by_postfix(dir: &Path, args: &[&str]) -> (Daemon, PathBuf) {
    reachable_by_postfix_with(dir, args, &[])
}

/// The same, with `env` for the daemon.
fn reachable_by_postfix_with(
    dir: &Path,
    args: &[&str],
    env: &[(&str, OsString)],
) -> (Daemon, PathBuf) {
    let auth = dir.join("auth");
    let args: Vec<OsString> = args
        .iter()
        .copied()
        .chain([
            "--dovecot-socket",
            auth.to_str().unwrap(),
            "--dovecot-socket-owner",
            "postfix:postfix",
        ])
        .map(OsString::from)
        .collect();
    let d = Daemon::spawn(tempfile::tempdir().unwrap(), &args, env);
    let gid = group_id("postfix");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&d.run_dir, None, Some(gid)).unwrap();
    std::os::unix::fs::chown(&d.socket, None, Some(gid)).unwrap();
    (d, auth)
}

/// `-a sql` on a throwaway PostgreSQL with Postfixadmin's `mailbox` table, through Postfix in
/// both modes; the database stopped mid-run is a 454 (try later) in dovecot mode, never a 235,
/// and logins come back with it.
#[test]
fn postfix_both_modes_with_sql() {
    if !ready() || !common::peers_for("sql", (!common::pg::available()).then_some("PostgreSQL 15"))
    {
        return;
    }
    let mut pg = common::pg::Pg::start();
    pg.psql("postgres", "CREATE DATABASE mail");
    pg.psql(
        "mail",
        "CREATE TABLE mailbox (username VARCHAR(255), password VARCHAR(255), active SMALLINT); \
         INSERT INTO mailbox VALUES ('alice@example.org', \
         '{SSHA256}kYRcDaf6voOv3cpluAh3yK0CgCakpz+D5SLGzSJ5pgIeOvAh', 1)",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "driver = pgsql\nconnect = host={} port={} dbname=mail user=postgres\n\
             password_query = SELECT username AS user, password FROM mailbox \\\n\
             WHERE username = '%u' AND active = '1'\n",
            pg.socket_dir.display(),
            pg.port
        ),
    )
    .unwrap();
    let (d, auth) = reachable_by_postfix(dir.path(), &["-a", "sql", "-O", conf.to_str().unwrap()]);
    let modes = both_modes(&d, &auth);
    assert_logins(
        &modes,
        &d,
        "alice@example.org",
        "sql-pw",
        "nobody@example.org",
    );
    pg.stop();
    let (dovecot_mode, _) = &modes[1];
    assert_eq!(
        dovecot_mode.auth("PLAIN", "alice@example.org", "sql-pw"),
        "454",
        "{}",
        dovecot_mode.log()
    );
    pg.run();
    for (postfix, mode) in &modes {
        common::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(200),
            || postfix.auth("PLAIN", "alice@example.org", "sql-pw") == "235",
            || format!("{mode}: {}", d.log_text()),
        );
    }
    eprintln!("Postfix, cyrus and dovecot modes, -a sql: 235/535, and 454 with the database down");
}

/// `-a rimap` over a throwaway Dovecot IMAP server, through Postfix in both modes, with
/// STARTTLS to the server; the server stopped is a 454 (try later) in dovecot mode, never a
/// 235, and logins come back with it.
#[test]
fn postfix_both_modes_with_rimap() {
    if !ready() || !common::peers_for("rimap", common::imapd::missing()) {
        return;
    }
    use common::imapd::{Imapd, Options};
    let mut imapd = Imapd::start(
        &[("alice@example.org", "imap-pw")],
        Options {
            tls_required: true,
            ..Options::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (d, auth) = reachable_by_postfix(
        dir.path(),
        // -r: libsasl2 splits alice@example.org into a login and a realm, which rimap
        // ignores unless -r joins them again (Cyrus's rule).
        &[
            "-a",
            "rimap",
            "-r",
            "-O",
            &imapd.option(),
            "--rimap-tls",
            "starttls",
            "--rimap-ca",
            imapd.ca.to_str().unwrap(),
        ],
    );
    let modes = both_modes(&d, &auth);
    assert_logins(
        &modes,
        &d,
        "alice@example.org",
        "imap-pw",
        "nobody@example.org",
    );
    imapd.stop();
    let (dovecot_mode, _) = &modes[1];
    assert_eq!(
        dovecot_mode.auth("PLAIN", "alice@example.org", "imap-pw"),
        "454",
        "{}",
        dovecot_mode.log()
    );
    let (cyrus_mode, _) = &modes[0];
    assert_ne!(
        cyrus_mode.auth("PLAIN", "alice@example.org", "imap-pw"),
        "235"
    );
    imapd.run();
    for (postfix, mode) in &modes {
        common::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(200),
            || postfix.auth("PLAIN", "alice@example.org", "imap-pw") == "235",
            || format!("{mode}: {}", d.log_text()),
        );
    }
    eprintln!(
        "Postfix, cyrus and dovecot modes, -a rimap with STARTTLS: 235/535, and 454 with the \
         IMAP server down"
    );
}

/// `-a kerberos5` over a throwaway MIT KDC, through Postfix in both modes; the KDC stopped
/// is a 454 in dovecot mode, never a 235.
#[test]
fn postfix_both_modes_with_kerberos5() {
    if !ready() || !common::peers_for("kerberos5", common::kdc::missing()) {
        return;
    }
    let mut kdc = common::kdc::Kdc::start(&[("alice", "krb-pw", "")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // -r: libsasl2 splits alice@EXAMPLE.ORG into a login and a realm; joined again, it is
    // the principal (Cyrus 2.1.28 doubles the realm there: cyrus-sasl #832).
    let (d, auth) = reachable_by_postfix_with(dir.path(), &["-a", "kerberos5", "-r"], &kdc.env());
    let modes = both_modes(&d, &auth);
    assert_logins(
        &modes,
        &d,
        "alice@EXAMPLE.ORG",
        "krb-pw",
        "nobody@EXAMPLE.ORG",
    );
    // Without a realm: krb5.conf's default realm.
    for (postfix, mode) in &modes {
        assert_eq!(postfix.auth("PLAIN", "alice", "krb-pw"), "235", "{mode}");
    }
    kdc.stop();
    let (dovecot_mode, _) = &modes[1];
    assert_eq!(
        dovecot_mode.auth("PLAIN", "alice@EXAMPLE.ORG", "krb-pw"),
        "454",
        "{}",
        dovecot_mode.log()
    );
    eprintln!("Postfix, cyrus and dovecot modes, -a kerberos5: 235/535, and 454 with the KDC down");
}

/// A locked account (slapd's ppolicy) is refused over SMTP exactly as a wrong password and
/// an unknown user are, reply line for reply line, in both modes: the saslauthd socket says
/// only `NO`, and of the Dovecot socket's `FAIL`, Postfix relays only `reason=`, which
/// saslauthd-rs sends for none of them (`code=user_disabled` stays on the socket).
#[test]
fn a_locked_ldap_account_looks_like_a_wrong_password_over_smtp() {
    if !ready() || !common::ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let slapd = common::ldap::Slapd::start_with_lockout(
        &dir.path().join("slapd"),
        &[("erin", "erin-pw", "erin@example.org")],
    );
    let (d, auth) = ldap_daemon(dir.path(), &slapd);
    assert_eq!(
        d.ask("erin", "erin-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    // Two wrong passwords lock it (pwdMaxFailure 2).
    for wrong in ["wrong1", "wrong2"] {
        assert_eq!(d.ask("erin", wrong, "smtp", ""), "NO");
    }
    let reply = common::dovecot::plain_reply(&auth, "erin", "erin-pw");
    assert!(reply.contains("code=user_disabled"), "locked: {reply}");
    let modes = both_modes(&d, &auth);
    for (postfix, mode) in &modes {
        for mech in ["PLAIN", "LOGIN"] {
            let locked = postfix.auth_reply(mech, "erin@example.org", "erin-pw");
            assert!(locked.starts_with("535 "), "{mode} {mech}: {locked}");
            for (user, password) in [("erin@example.org", "wrong3"), ("nobody@example.org", "x")] {
                assert_eq!(
                    postfix.auth_reply(mech, user, password),
                    locked,
                    "{mode} {mech} {user}"
                );
            }
        }
    }
    eprintln!(
        "Postfix, both modes: a locked account's reply is the wrong password's: {:?}",
        modes[0]
            .0
            .auth_reply("PLAIN", "erin@example.org", "erin-pw")
    );
}

/// AUTH SCRAM-SHA-1/-256 over SMTP (swaks has no SCRAM): returns the final reply code, after
/// checking the server signature Postfix relays.
fn smtp_scram(port: u16, sha256: bool, user: &str, password: &str) -> String {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut reply = || {
        // The last line of a (possibly multi-line) reply.
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_owned();
            }
        }
    };
    assert!(reply().starts_with("220"));
    w.write_all(b"EHLO client.test\r\n").unwrap();
    assert!(reply().starts_with("250"));
    use saslauthd_rs::mech::{ScramClient, ScramHash};
    let hash = if sha256 {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let mut client = ScramClient::new(hash, user, password);
    let first = client.first("smtpnonce");
    w.write_all(format!("AUTH {} {}\r\n", hash.name(), B64.encode(first)).as_bytes())
        .unwrap();
    let line = reply();
    let Some(challenge) = line.strip_prefix("334 ") else {
        return line[..3].to_owned();
    };
    let server_first = String::from_utf8(B64.decode(challenge).unwrap()).unwrap();
    let (last, expected_v) = client.last(&server_first).unwrap();
    w.write_all(format!("{}\r\n", B64.encode(last)).as_bytes())
        .unwrap();
    let line = reply();
    let Some(v) = line.strip_prefix("334 ") else {
        return line[..3].to_owned();
    };
    assert_eq!(
        B64.decode(v).unwrap(),
        expected_v.as_bytes(),
        "server signature via Postfix"
    );
    w.write_all(b"\r\n").unwrap();
    let line = reply();
    line[..3].to_owned()
}

#[test]
fn postfix_dovecot_mode_scram() {
    if !ready() {
        return;
    }
    let (d, auth) = daemon_for_postfix();
    let postfix = Postfix::start(&d.dir.path().join("postfix"), "dovecot", &auth);
    for sha256 in [false, true] {
        assert_eq!(
            smtp_scram(postfix.port, sha256, "alice@example.org", "secret"),
            "235",
            "{}",
            postfix.log()
        );
        assert_eq!(
            smtp_scram(postfix.port, sha256, "alice@example.org", "wrong"),
            "535"
        );
        assert_eq!(
            smtp_scram(postfix.port, sha256, "nobody@example.org", "secret"),
            "535"
        );
    }
}

/// The guide's secure setup in dovecot mode: `smtpd_sasl_security_options = noanonymous,
/// noplaintext` and `broken_sasl_auth_clients = yes`, the daemon offering DIGEST-MD5 too.
/// Postfix then offers only what does not send the password (the MECH flags decide), and
/// each of those authenticates against the sasldb through the Dovecot socket.
#[test]
fn postfix_dovecot_mode_noplaintext_offers_only_secret_mechanisms() {
    if !ready() {
        return;
    }
    let (d, auth) = daemon_for_postfix_with(&[
        "--realm",
        "example.org",
        "--dovecot-mechanisms",
        "plain login cram-md5 digest-md5 scram-sha-1 scram-sha-256",
    ]);
    let postfix = Postfix::start_with(
        &d.dir.path().join("postfix"),
        "dovecot",
        &auth,
        "smtpd_sasl_security_options = noanonymous, noplaintext\nbroken_sasl_auth_clients = yes",
        "",
    );
    let ehlo = common::smtp::session(("127.0.0.1", postfix.port), &["EHLO client.test", "QUIT"]);
    let offered = |prefix: &str| {
        ehlo.iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {ehlo:?}"))
            .to_owned()
    };
    let want = "CRAM-MD5 DIGEST-MD5 SCRAM-SHA-1 SCRAM-SHA-256";
    assert_eq!(offered("250-AUTH "), want);
    assert_eq!(offered("250-AUTH="), want, "broken_sasl_auth_clients");
    for mech in ["CRAM-MD5", "DIGEST-MD5"] {
        for (user, password, code) in [
            ("alice@example.org", "secret", "235"),
            ("bob", "correct horse battery staple", "235"),
            ("carol@mail.example.net", "pa:ss@wo rd!", "235"),
            ("alice@example.org", "wrong", "535"),
            ("nobody@example.org", "secret", "535"),
        ] {
            assert_eq!(
                postfix.auth(mech, user, password),
                code,
                "{mech} {user}; {}",
                postfix.log()
            );
        }
    }
    for sha256 in [false, true] {
        assert_eq!(
            smtp_scram(postfix.port, sha256, "alice@example.org", "secret"),
            "235"
        );
    }
    // PLAIN is refused by Postfix itself: never offered, never passed on.
    let plain = format!(
        "AUTH PLAIN {}",
        common::dovecot::plain("alice@example.org", "secret")
    );
    let replies = common::smtp::session(
        ("127.0.0.1", postfix.port),
        &["EHLO client.test", &plain, "QUIT"],
    );
    assert!(
        replies
            .iter()
            .any(|l| l.starts_with("535 5.7.8") && l.contains("Invalid authentication mechanism")),
        "{replies:?}"
    );
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains(
            "auth success: [user=alice] [service=smtp] \
             [realm=example.org] [mech=sasldb]"
        ) && l.contains("DIGEST-MD5")),
        "{log}"
    );
}

/// A sasldb2 that smtpd (user postfix) may read, in a directory of its own, with `users`
/// (realm, user, password) made by saslpasswd2-rs as the guides make them.
fn sasldb_for_postfix(users: &[(&str, &str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sasldb = dir.path().join("sasldb2");
    for (realm, user, password) in users {
        saslpasswd2(&sasldb, &["-c", "-u", realm, user], password);
    }
    std::os::unix::fs::chown(&sasldb, None, Some(group_id("postfix"))).unwrap();
    (dir, sasldb)
}

/// Runs `saslpasswd2-rs -p -f FILE ARGS` with `password` on stdin, as an admin would.
fn saslpasswd2(file: &Path, args: &[&str], password: &str) {
    common::passwd(Path::new(common::SASLPASSWD2), file, args, password);
}

/// The most common setup of the admin guides: Postfix in cyrus mode with
/// `pwcheck_method: auxprop`, where libsasl2's own sasldb plugin reads the file. Here the file
/// is created and changed only by saslpasswd2-rs, and every change is seen at once.
#[test]
fn postfix_auxprop_reads_what_saslpasswd2_rs_writes() {
    if !ready() {
        return;
    }
    // dave in the realm libsasl2 gives a bare user name (the server's host name).
    let (dir, sasldb) = sasldb_for_postfix(&[
        ("postfix.test", "dave", "s3cret dave"),
        ("example.org", "alice", "secret"),
    ]);
    // A new file is in the format this host's libsasl2 reads: Berkeley DB on Debian.
    let head = std::fs::read(&sasldb).unwrap();
    assert_eq!(
        u32::from_le_bytes(head[12..16].try_into().unwrap()),
        0x0006_1561,
        "a Berkeley DB hash file"
    );
    // As Debian has it (root:sasl, with postfix in the sasl group): smtpd must read it.
    let gid = group_id("postfix");
    let postfix = Postfix::start(&dir.path().join("postfix"), "auxprop", &sasldb);
    let mechs = ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5"];
    for mech in mechs {
        assert_eq!(
            postfix.auth(mech, "dave", "s3cret dave"),
            "235",
            "{mech}; {}",
            postfix.log()
        );
        assert_eq!(postfix.auth(mech, "dave", "wrong"), "535", "{mech}");
        assert_eq!(postfix.auth(mech, "nobody", "s3cret dave"), "535", "{mech}");
    }
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        assert_eq!(
            postfix.auth(mech, "alice@example.org", "secret"),
            "235",
            "{mech}"
        );
    }
    // Add a user: visible at once.
    saslpasswd2(&sasldb, &["-c", "-u", "postfix.test", "erin"], "erin-pw");
    for mech in mechs {
        assert_eq!(
            postfix.auth(mech, "erin", "erin-pw"),
            "235",
            "new user, {mech}"
        );
    }
    // Change a password: the old one fails at once.
    saslpasswd2(&sasldb, &["-u", "postfix.test", "dave"], "changed");
    for mech in mechs {
        assert_eq!(postfix.auth(mech, "dave", "changed"), "235", "{mech}");
        assert_eq!(postfix.auth(mech, "dave", "s3cret dave"), "535", "{mech}");
    }
    // Delete a user.
    let out = Command::new(common::SASLPASSWD2)
        .args(["-d", "-u", "postfix.test", "-f"])
        .arg(&sasldb)
        .arg("erin")
        .output()
        .unwrap();
    assert!(out.status.success());
    for mech in mechs {
        assert_eq!(
            postfix.auth(mech, "erin", "erin-pw"),
            "535",
            "deleted, {mech}"
        );
    }
    // Every rewrite kept the group that lets smtpd read the file.
    let meta = std::fs::metadata(&sasldb).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o640));
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/postfix")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The mechanisms an EHLO reply offers (`250-AUTH ...`), sorted.
fn offered(port: u16) -> Vec<String> {
    let lines = common::smtp::session(("127.0.0.1", port), &["EHLO client.test", "QUIT"]);
    let mut mechs: Vec<String> = lines
        .iter()
        .find_map(|l| l.strip_prefix("250-AUTH "))
        .unwrap_or_else(|| panic!("no AUTH in {lines:?}"))
        .split(' ')
        .map(str::to_owned)
        .collect();
    mechs.sort_unstable();
    mechs
}

/// Setup 3, Debian's Postfix with the sasldb as the guide has it: smtpd.conf and main.cf
/// verbatim (tests/fixtures/postfix), the user made as the guide makes it
/// (`saslpasswd2 -c -u $(postconf -h myhostname) user`) but by saslpasswd2-rs. EHLO offers only
/// what does not send the password; both authenticate; sasldblistusers2-rs prints the guide's
/// line.
#[test]
fn postfix_debian_sasldb_guide() {
    if !ready() {
        return;
    }
    let (dir, sasldb) = sasldb_for_postfix(&[("postfix.test", "dave", "s3cret dave")]);
    let postfix = Postfix::start_with(
        &dir.path().join("postfix"),
        "auxprop",
        &sasldb,
        &fixture("main.cf.sasldb"),
        &fixture("smtpd.conf.auxprop"),
    );
    assert_eq!(offered(postfix.port), ["CRAM-MD5", "DIGEST-MD5"]);
    let lines = common::smtp::session(("127.0.0.1", postfix.port), &["EHLO client.test", "QUIT"]);
    assert!(
        lines.iter().any(|l| l.starts_with("250-AUTH=")),
        "broken_sasl_auth_clients: {lines:?}"
    );
    for mech in ["CRAM-MD5", "DIGEST-MD5"] {
        assert_eq!(
            postfix.auth(mech, "dave", "s3cret dave"),
            "235",
            "{mech}: {}",
            postfix.log()
        );
        assert_eq!(postfix.auth(mech, "dave", "wrong"), "535", "{mech}");
        assert_eq!(postfix.auth(mech, "nobody", "s3cret dave"), "535", "{mech}");
    }
    let out = Command::new(common::LISTUSERS)
        .arg("-f")
        .arg(&sasldb)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "dave@postfix.test: userPassword\n"
    );
}

/// Setup 4, Postfix in cyrus mode with saslauthd (smtpd.conf `pwcheck_method: saslauthd`,
/// `mech_list: plain login`), and the guide's realm trap: `smtpd_sasl_local_domain` left
/// empty works for PAM and shadow, which ignore the realm; the sasldb needs the realm its
/// users were made in, so there it must be `$myhostname` (what saslpasswd2 gives a bare
/// name on the mail host), or the daemon's default realm, which is this machine's host name,
/// not Postfix's `myhostname`.
#[test]
fn postfix_cyrus_saslauthd_guide_and_the_realm_trap() {
    if !ready() {
        return;
    }
    let smtpd_conf = fixture("smtpd.conf.saslauthd");
    let empty_domain = fixture("main.cf.saslauthd");
    let host_domain = format!("{empty_domain}smtpd_sasl_local_domain = $myhostname\n");
    let group = group_id("postfix");
    let for_postfix = |d: &Daemon| {
        std::os::unix::fs::chown(&d.run_dir, None, Some(group)).unwrap();
        std::os::unix::fs::chown(&d.socket, None, Some(group)).unwrap();
    };

    // -a shadow (CentOS's MECH=shadow), and -a pam: either realm setting works.
    let shadow_daemon = Daemon::with_shadow_user("dave", "shadow pw");
    for_postfix(&shadow_daemon);
    let pam = common::pam::PamFixture::new(true).expect("pam_wrapper");
    pam.set_passdb("erin:pam pw:sasl-test\n");
    let pam_daemon = pam.daemon(&["--pam-service", "sasl-test"]);
    std::fs::set_permissions(
        pam_daemon.dir.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for_postfix(&pam_daemon);
    for (daemon, user, password) in [
        (&shadow_daemon, "dave", "shadow pw"),
        (&pam_daemon, "erin", "pam pw"),
    ] {
        for main_cf in [&empty_domain, &host_domain] {
            let place = tempfile::tempdir().unwrap();
            let postfix = Postfix::start_with(
                &place.path().join("postfix"),
                "cyrus",
                &daemon.socket,
                main_cf,
                &smtpd_conf,
            );
            assert_eq!(offered(postfix.port), ["LOGIN", "PLAIN"]);
            for mech in ["PLAIN", "LOGIN"] {
                assert_eq!(
                    postfix.auth(mech, user, password),
                    "235",
                    "{user} {mech} {main_cf:?}: {}",
                    postfix.log()
                );
                assert_eq!(postfix.auth(mech, user, "wrong"), "535", "{user} {mech}");
            }
        }
    }

    // -a sasldb: users made in the realm Postfix's myhostname names.
    let (dir, sasldb) = sasldb_for_postfix(&[("postfix.test", "frank", "sasldb pw")]);
    let sasldb_daemon = Daemon::launch(dir, sasldb, None, &[]);
    for_postfix(&sasldb_daemon);
    for (main_cf, want) in [(&host_domain, "235"), (&empty_domain, "535")] {
        let place = tempfile::tempdir().unwrap();
        let postfix = Postfix::start_with(
            &place.path().join("postfix"),
            "cyrus",
            &sasldb_daemon.socket,
            main_cf,
            &smtpd_conf,
        );
        assert_eq!(
            postfix.auth("PLAIN", "frank", "sasldb pw"),
            want,
            "{main_cf:?}: {}",
            postfix.log()
        );
    }
    let log = sasldb_daemon.log_text();
    assert!(
        log.contains("[user=frank] [service=smtp] [realm=postfix.test]"),
        "{log}"
    );
}
