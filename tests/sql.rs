//! `-a sql` against real databases: SQLite in a file, and a throwaway PostgreSQL 15
//! (tests/common/pg.rs), with Dovecot's own `dovecot-sql.conf.ext` and Postfixadmin's tables;
//! hashes made by Debian's `doveadm pw`. Asked through the saslauthd socket (as libsasl2 asks)
//! and the Dovecot socket (as Postfix asks).

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::dovecot::Client;
use common::Daemon;

/// `doveadm pw -s SCHEME -p PASSWORD [-u USER]`.
fn doveadm_pw(scheme: &str, password: &str, user: &str) -> String {
    let out = Command::new("doveadm")
        .args(["pw", "-s", scheme, "-p", password, "-u", user])
        .output()
        .expect("doveadm");
    let out = common::checked(out, "doveadm pw");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn peers() -> bool {
    let missing = if Command::new("doveadm").arg("help").output().is_err() {
        Some("doveadm (dovecot-core)")
    } else if Command::new("sqlite3").arg("-version").output().is_err() {
        Some("sqlite3")
    } else {
        None
    };
    common::peers_for("sql", missing)
}

/// Postfixadmin's tables (the columns a password check reads), for SQLite and PostgreSQL.
const SCHEMA: &str = "CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255), \
     domain VARCHAR(255), active SMALLINT NOT NULL DEFAULT 1, smtp_active SMALLINT NOT NULL DEFAULT 1); \
     CREATE TABLE mailbox_app_password (id SERIAL, username VARCHAR(255), description VARCHAR(255), \
     password_hash VARCHAR(255));";

/// Postfixadmin's recommended query, with its app passwords and a per-service flag (`%s`).
const QUERY: &str = "password_query = SELECT username AS user, password FROM mailbox \\\n\
    WHERE username = '%u' AND active = '1' AND (smtp_active = '1' OR '%s' <> 'smtp') \\\n\
    UNION SELECT username AS user, password_hash AS password FROM mailbox_app_password \\\n\
    WHERE username = '%u'\n";

/// A login, its password, and the stored value.
type User = (String, &'static str, String);

/// The users: a login, its password, and the stored value (the scheme's hash of it).
fn users() -> Vec<(String, &'static str, String)> {
    let mut users = Vec::new();
    for scheme in [
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "BLF-CRYPT",
        "MD5-CRYPT",
        "SSHA512",
        "SSHA256",
        "SSHA",
        "SHA",
        "SHA256.HEX",
        "SMD5",
        "PLAIN-MD5",
        "LDAP-MD5",
        "PLAIN-MD4",
        "DIGEST-MD5",
        "CRAM-MD5",
        "PBKDF2",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "ARGON2ID",
        "PLAIN",
        "CLEAR",
    ] {
        let login = format!(
            "{}@example.org",
            scheme.to_ascii_lowercase().replace('.', "-")
        );
        let password = "Secret-1";
        users.push((
            login.clone(),
            password,
            doveadm_pw(scheme, password, &login),
        ));
    }
    users
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The rows every test loads: `users()`, an app password for alice, a user whose SMTP is
/// off, an inactive one, a NULL and an empty password, and a user whose name has a quote.
fn rows() -> (String, Vec<(String, &'static str, String)>) {
    let users = users();
    let mut sql = String::new();
    for (login, _, stored) in &users {
        sql += &format!(
            "INSERT INTO mailbox (username, password, domain) VALUES ({}, {}, 'example.org');\n",
            sql_quote(login),
            sql_quote(stored)
        );
    }
    let alice = doveadm_pw("SHA512-CRYPT", "alice-pw", "alice@example.org");
    let app = doveadm_pw("SSHA512", "app-pw-1", "alice@example.org");
    let obrien = doveadm_pw("SSHA256", "irish", "o'brien@example.org");
    sql += &format!(
        "INSERT INTO mailbox (username, password, domain) VALUES ('alice@example.org', {}, 'example.org');\n\
         INSERT INTO mailbox_app_password (username, description, password_hash) VALUES ('alice@example.org', 'phone', {});\n\
         INSERT INTO mailbox (username, password, domain) VALUES ({}, {}, 'example.org');\n\
         INSERT INTO mailbox (username, password, domain, smtp_active) VALUES ('nosmtp@example.org', '{{PLAIN}}pw', 'example.org', 0);\n\
         INSERT INTO mailbox (username, password, domain, active) VALUES ('gone@example.org', '{{PLAIN}}pw', 'example.org', 0);\n\
         INSERT INTO mailbox (username, password, domain) VALUES ('null@example.org', NULL, 'example.org');\n\
         INSERT INTO mailbox (username, password, domain) VALUES ('empty@example.org', '', 'example.org');\n",
        sql_quote(&alice),
        sql_quote(&app),
        sql_quote("o'brien@example.org"),
        sql_quote(&obrien),
    );
    (sql, users)
}

/// Logins beside the schemes' users, with the reply wanted: app passwords, refusals, and
/// names that would change a query pasted together.
fn cases() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("alice@example.org", "alice-pw", "OK"),
        ("alice@example.org", "app-pw-1", "OK"),
        ("ALICE@Example.Org", "app-pw-1", "OK"),
        ("alice@example.org", "app-pw-2", "NO"),
        ("o'brien@example.org", "irish", "OK"),
        ("nosmtp@example.org", "pw", "NO"),
        ("gone@example.org", "pw", "NO"),
        ("null@example.org", "", "NO"),
        ("null@example.org", "x", "NO"),
        ("empty@example.org", "x", "NO"),
        ("nobody@example.org", "x", "NO"),
        // Names that would change a query pasted together.
        ("x' OR '1'='1", "x' OR '1'='1", "NO"),
        ("alice@example.org' --", "alice-pw", "NO"),
        ("%u", "alice-pw", "NO"),
        ("é@example.org", "x", "NO"),
    ]
}

/// An SQLite file in `dir` with the tables and [`rows`]; its path and the scheme users.
fn sqlite_db(dir: &Path) -> (std::path::PathBuf, Vec<(String, &'static str, String)>) {
    let db = dir.join("mail.db");
    let (inserts, users) = rows();
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!("{}\n{inserts}", SCHEMA.replace("id SERIAL, ", "")))
        .output()
        .unwrap();
    common::checked(out, "sqlite3");
    (db, users)
}

/// The daemon on `-a sql -O conf`, with the Dovecot socket too.
fn daemon(conf: &Path, extra: &[&str]) -> (Daemon, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    let mut args: Vec<OsString> = vec!["-a".into(), "sql".into(), "-O".into(), conf.into()];
    args.push("--dovecot-socket".into());
    args.push(auth.clone().into());
    args.extend(extra.iter().map(OsString::from));
    (Daemon::spawn(dir, &args, &[]), auth)
}

/// Every user's right and wrong password through both sockets, the app password, and the
/// refusals; `dovecot` also asks through the Dovecot socket.
fn check_everyone(d: &Daemon, auth: &Path, users: &[(String, &'static str, String)]) {
    for (login, password, stored) in users {
        assert_eq!(
            d.ask(login, password, "smtp", ""),
            "OK",
            "{login} {stored}: {}",
            d.log_text()
        );
        assert_eq!(d.ask(login, "wrong", "smtp", ""), "NO", "{login} {stored}");
        // Postfix: the login with its domain, split into authid and realm by the daemon.
        let reply = common::dovecot::plain_reply(auth, login, password);
        assert!(reply.starts_with("OK\t"), "{login}: {reply}");
    }
    let cases = cases();
    for (login, password, want) in cases {
        let got = d.ask(login, password, "smtp", "");
        // NO with any text ("NULL password received" for the empty one, as Cyrus).
        assert!(
            got.starts_with(want),
            "{login} {password}: {got}: {}",
            d.log_text()
        );
    }
    let long = "a".repeat(300);
    assert!(d.ask(&long, "x", "smtp", "").starts_with("NO"));
    // The name in the Dovecot socket's OK is the query's `user` column, as Dovecot's SQL
    // passdb answers (Postfix's sasl_username), not the login as typed.
    assert_eq!(
        common::dovecot::plain_reply(auth, "ALICE@Example.Org", "app-pw-1"),
        "OK\t1\tuser=alice@example.org\n"
    );
    // The per-service flag: the same user may log in to IMAP (%s is the service).
    assert_eq!(d.ask("nosmtp@example.org", "pw", "imap", ""), "OK");
    let log = d.log_text();
    assert!(
        !log.contains("alice-pw") && !log.contains("Secret-1") && !log.contains("$6$"),
        "{log}"
    );
}

#[test]
fn sqlite_every_scheme_app_passwords_and_hostile_names() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, users) = sqlite_db(dir.path());
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "# Dovecot's file, as Postfixadmin's documentation writes it\ndriver = sqlite\nconnect = {}\n\
             default_pass_scheme = MD5-CRYPT\n{QUERY}user_query = SELECT 1\niterate_query = SELECT 1\n",
            db.display()
        ),
    )
    .unwrap();
    let (d, auth) = daemon(&conf, &[]);
    check_everyone(&d, &auth, &users);
    assert!(
        d.log_text().contains("user_query is not needed"),
        "{}",
        d.log_text()
    );
}

/// With `-c` a success is remembered under the stored value: the query still runs, the hash
/// is not recomputed, and a changed password is refused at once. Dovecot's `allow_nets` field
/// refuses a right password from elsewhere, in every mechanism; a password with TAB, CR, LF or
/// `\x01` in it is refused before the query, as Dovecot does.
#[test]
fn sqlite_the_cache_allow_nets_and_control_characters() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("extra.db");
    let bob = doveadm_pw("SHA512-CRYPT", "bob-pw", "bob@example.org");
    let sql = |statements: &str| {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg(statements)
            .output()
            .unwrap();
        common::checked(out, "sqlite3");
    };
    sql(&format!(
        "CREATE TABLE users (username TEXT, password TEXT, allow_nets TEXT, nologin TEXT, reason TEXT);\n\
         INSERT INTO users VALUES ('bob@example.org', {}, NULL, NULL, NULL);\n\
         INSERT INTO users VALUES ('carol@example.org', '{{PLAIN}}carol-pw', '127.0.0.0/8, 2001:db8::/32', NULL, NULL);\n\
         INSERT INTO users VALUES ('tab@example.org', '{{PLAIN}}a' || char(9) || 'b', NULL, NULL, NULL);\n\
         INSERT INTO users VALUES ('dave@example.org', '{{PLAIN}}dave-pw', NULL, 'Y', 'Suspended:' || char(9) || 'call the helpdesk');\n",
        sql_quote(&bob)
    ));
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "driver = sqlite\nconnect = {}\npassword_query = SELECT username AS user, password, allow_nets, \\\n\
             nologin, reason \\\n\
             FROM users WHERE username = '%u'\n",
            db.display()
        ),
    )
    .unwrap();
    let (d, auth) = daemon(&conf, &["-c", "-t", "3600"]);
    // The cache: a hit for the same value, a miss once the value changed.
    assert_eq!(d.ask("bob@example.org", "bob-pw", "smtp", ""), "OK");
    assert_eq!(d.ask("bob@example.org", "bob-pw", "smtp", ""), "OK");
    assert!(
        d.log_text()
            .contains("-a sql: cache hit for bob@example.org"),
        "{}",
        d.log_text()
    );
    let new = doveadm_pw("SHA512-CRYPT", "bob-new", "bob@example.org");
    sql(&format!(
        "UPDATE users SET password = {} WHERE username = 'bob@example.org'",
        sql_quote(&new)
    ));
    assert!(d
        .ask("bob@example.org", "bob-pw", "smtp", "")
        .starts_with("NO"));
    assert_eq!(d.ask("bob@example.org", "bob-new", "smtp", ""), "OK");
    sql("DELETE FROM users WHERE username = 'bob@example.org'");
    assert!(d
        .ask("bob@example.org", "bob-new", "smtp", "")
        .starts_with("NO"));

    // allow_nets, by the client address Postfix sends (rip=).
    let from = |rip: Option<&str>, mech: &str| {
        let mut c = Client::postfix(&auth);
        let rip = rip.map(|r| format!("\trip={r}")).unwrap_or_default();
        match mech {
            "PLAIN" => {
                c.send(&format!(
                    "AUTH\t1\tPLAIN\tservice=smtp{rip}\tresp={}\n",
                    common::dovecot::plain("carol@example.org", "carol-pw")
                ));
                c.line()
            }
            _ => {
                c.send(&format!("AUTH\t1\tCRAM-MD5\tservice=smtp{rip}\n"));
                let line = c.line();
                let challenge = B64
                    .decode(line.trim_end().rsplit('\t').next().unwrap())
                    .unwrap();
                let digest = saslauthd_rs::mech::cram_md5::digest_hex(b"carol-pw", &challenge);
                c.send(&format!(
                    "CONT\t1\t{}\n",
                    B64.encode([&b"carol@example.org "[..], &digest].concat())
                ));
                c.line()
            }
        }
    };
    for mech in ["PLAIN", "CRAM-MD5"] {
        assert!(from(Some("127.0.0.9"), mech).starts_with("OK\t1"), "{mech}");
        assert!(
            from(Some("2001:db8::25"), mech).starts_with("OK\t1"),
            "{mech}"
        );
        assert!(
            from(Some("192.0.2.1"), mech).starts_with("FAIL\t1"),
            "{mech}"
        );
        // No address known, and no `local` in the list.
        assert!(from(None, mech).starts_with("FAIL\t1"), "{mech}");
    }
    assert!(
        d.log_text().contains("allow_nets check failed"),
        "{}",
        d.log_text()
    );

    // nologin: refused after the right password, with the row's reason (printable) for the
    // client; a wrong password gets no reason.
    assert_eq!(
        common::dovecot::plain_reply(&auth, "dave@example.org", "dave-pw"),
        "FAIL\t1\tuser=dave@example.org\tcode=user_disabled\treason=Suspended: call the helpdesk\n"
    );
    assert_eq!(
        common::dovecot::plain_reply(&auth, "dave@example.org", "wrong"),
        "FAIL\t1\tuser=dave@example.org\n"
    );
    assert!(d
        .ask("dave@example.org", "dave-pw", "smtp", "")
        .starts_with("NO"));

    // Control characters: refused before the query, through both sockets.
    let tab = common::dovecot::plain_reply(&auth, "tab@example.org", "a\tb");
    assert!(tab.starts_with("FAIL\t1"), "{tab}");
    assert!(d
        .ask("tab@example.org", "a\tb", "smtp", "")
        .starts_with("NO"));
    assert!(
        d.log_text().contains("a password with TAB"),
        "{}",
        d.log_text()
    );
    assert!(!d.log_text().contains("carol-pw") && !d.log_text().contains("bob-new"));
}

/// A host on libsasl2's `sql` auxprop plugin points `-O` at its `smtpd.conf` as it is
/// (`sql_engine`, `sql_hostnames` with ports, `sql_select` with `%u`, `%r`, `%p`): the first
/// column is a cleartext password, whatever it looks like; every mechanism works with it.
#[test]
fn libsasl2s_sql_plugin_keys_on_sqlite_and_postgres() {
    if !peers() || !common::peers_for("sql", (!common::pg::available()).then_some("PostgreSQL 15"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let table =
        "CREATE TABLE users (username VARCHAR(64), realm VARCHAR(64), password VARCHAR(64));\n\
         INSERT INTO users VALUES ('bob', 'example.org', 'bob-pw');\n\
         INSERT INTO users VALUES ('carol', 'example.org', '{SHA}not-a-hash');\n\
         INSERT INTO users VALUES ('bob', 'other.org', 'other-pw');\n";
    let select = "sql_select: SELECT password FROM users WHERE username = '%u' AND realm = '%r'\n";
    let smtpd_conf = |engine: &str| {
        format!("pwcheck_method: saslauthd\nmech_list: plain login cram-md5\n{engine}{select}")
    };
    let check = |conf: &Path| {
        let (d, auth) = daemon(
            conf,
            &["--dovecot-mechanisms", "plain login cram-md5 scram-sha-256"],
        );
        assert_eq!(
            d.ask("bob", "bob-pw", "smtp", "example.org"),
            "OK",
            "{}",
            d.log_text()
        );
        assert_eq!(d.ask("bob@example.org", "bob-pw", "smtp", ""), "OK");
        assert_eq!(d.ask("bob", "other-pw", "smtp", "other.org"), "OK");
        assert!(d
            .ask("bob", "other-pw", "smtp", "example.org")
            .starts_with("NO"));
        assert!(d
            .ask("bob", "wrong", "smtp", "example.org")
            .starts_with("NO"));
        assert!(d
            .ask("nobody", "bob-pw", "smtp", "example.org")
            .starts_with("NO"));
        // Cleartext as it is: braces are no scheme here.
        assert_eq!(
            d.ask("carol", "{SHA}not-a-hash", "smtp", "example.org"),
            "OK"
        );
        let mut ours = Conn::new(&auth);
        for mech in ["PLAIN", "CRAM-MD5", "SCRAM-SHA-256"] {
            let reply = ours.exchange(mech, "bob@example.org", "bob-pw");
            assert!(reply.starts_with("OK"), "{mech}: {reply}");
        }
        assert!(
            d.log_text().contains("pwcheck_method is not needed"),
            "{}",
            d.log_text()
        );
        assert!(!d.log_text().contains("bob-pw"));
    };
    // SQLite, in a file.
    let db = dir.path().join("sasl.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(table)
        .output()
        .unwrap();
    common::checked(out, "sqlite3");
    let conf = dir.path().join("smtpd.conf");
    std::fs::write(
        &conf,
        smtpd_conf(&format!(
            "sql_engine: sqlite3\nsql_database: {}\n",
            db.display()
        )),
    )
    .unwrap();
    check(&conf);
    // PostgreSQL, the first host a port where nothing listens.
    let pg = common::pg::Pg::start();
    pg.psql("postgres", "CREATE DATABASE sasl");
    pg.psql("sasl", table);
    pg.psql(
        "postgres",
        "CREATE ROLE postfix LOGIN PASSWORD 'db secret'; GRANT CONNECT ON DATABASE sasl TO postfix",
    );
    pg.psql("sasl", "GRANT SELECT ON users TO postfix");
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = unused.local_addr().unwrap().port();
    drop(unused);
    std::fs::write(
        &conf,
        smtpd_conf(&format!(
            "sql_engine: pgsql\nsql_hostnames: 127.0.0.1:{dead}, 127.0.0.1:{}\n\
             sql_user: postfix\nsql_passwd: db secret\nsql_database: sasl\n",
            pg.port
        )),
    )
    .unwrap();
    check(&conf);
}

/// TLS to PostgreSQL, as Dovecot's `connect` says it (`sslmode=verify-full sslrootcert=`):
/// the connection is encrypted and the server checked; a server whose certificate comes from
/// another CA is a temporary failure, never a success, and named in the log.
#[test]
fn postgres_over_tls_checks_the_server() {
    if !peers()
        || !common::peers_for("sql", (!common::pg::available()).then_some("PostgreSQL 15"))
        || !common::peers_for(
            "sql",
            common::peer("openssl").is_none().then_some("openssl"),
        )
    {
        return;
    }
    let pg = common::pg::Pg::start();
    let ca = pg.enable_tls();
    pg.psql("postgres", "CREATE DATABASE tls");
    pg.psql(
        "tls",
        "CREATE TABLE users (username TEXT, password TEXT); \
         INSERT INTO users VALUES ('alice@example.org', '{PLAIN}alice-pw')",
    );
    pg.psql(
        "postgres",
        "CREATE ROLE postfix LOGIN PASSWORD 'db secret'; GRANT CONNECT ON DATABASE tls TO postfix",
    );
    pg.psql("tls", "GRANT SELECT ON users TO postfix");
    let dir = tempfile::tempdir().unwrap();
    let other = common::pki::certificates(&dir.path().join("other"), "other", "IP:127.0.0.1").0;
    let conf = |root: &Path| {
        let path = dir.path().join("dovecot-sql.conf.ext");
        std::fs::write(
            &path,
            format!(
                "driver = pgsql\nconnect = host=127.0.0.1 port={} dbname=tls user=postfix \
                 password='db secret' sslmode=verify-full sslrootcert={}\n\
                 password_query = SELECT password FROM users WHERE username = '%u'\n",
                pg.port,
                root.display()
            ),
        )
        .unwrap();
        path
    };
    let (d, _) = daemon(&conf(&ca), &[]);
    assert_eq!(
        d.ask("alice@example.org", "alice-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    assert!(d
        .ask("alice@example.org", "wrong", "smtp", "")
        .starts_with("NO"));
    let encrypted = pg.query(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND usename = 'postfix'",
    );
    assert_ne!(encrypted, "0", "no encrypted connection from the daemon");
    drop(d);
    let (d, _) = daemon(&conf(&other), &[]);
    assert_eq!(
        d.ask("alice@example.org", "alice-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    assert!(
        d.log_text().contains("SQL: no database could be asked"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_bad_file_stops_the_start_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "driver = sqlite\nconnect = /x\npasword_query = SELECT 1\n",
            "line 3: unknown key \"pasword_query\"",
        ),
        (
            "driver = oracle\n",
            "driver \"oracle\": pgsql, mysql or sqlite",
        ),
        (
            "driver = pgsql\nconnect = host=x\n",
            "password_query is not set",
        ),
        (
            "driver = pgsql\nconnect = host=x colour=blue\npassword_query = SELECT '%u'\n",
            "unknown key \"colour\" for pgsql",
        ),
        (
            "driver = pgsql\nconnect = host=x\npassword_query = SELECT '%q'\n",
            "unknown variable %q",
        ),
    ] {
        let conf = dir.path().join("bad.conf");
        std::fs::write(&conf, text).unwrap();
        let out = Command::new(common::DAEMON)
            .args(["-f", "-a", "sql", "-O"])
            .arg(&conf)
            .arg("-m")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: started");
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn postgres_failover_an_outage_and_the_return() {
    let Some((mut pg, users)) = postgres_with_mail() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    // The first host is a socket directory where nothing listens: the second answers.
    let nothing = dir.path().join("nothing");
    std::fs::create_dir(&nothing).unwrap();
    std::fs::write(
        &conf,
        format!(
            "driver = pgsql\nconnect = host={} host=127.0.0.1 port={} dbname=mail user=postfix password='db secret'\n\
             default_pass_scheme = SHA512-CRYPT\n{QUERY}",
            nothing.display(),
            pg.port
        ),
    )
    .unwrap();
    let (d, auth) = daemon(&conf, &[]);
    check_everyone(&d, &auth, &users);
    outage_and_return(&d, &auth, &mut pg, |pg| pg.stop(), |pg| pg.run());
}

/// Logins that arrive together on a busy PostgreSQL host go out in one statement (the query
/// run once per login, `LATERAL`), and each gets its own answer: 16 clients at once, every
/// one of them with right and wrong passwords, app passwords, unknown and hostile names. A
/// login whose row makes the query fail (a division by zero here) fails alone, as a
/// temporary failure; the others of its batch are answered. A query that cannot be put in a
/// batch (a data-modifying `WITH`) turns batching off, said in the log, and works as before.
#[test]
fn postgres_asks_for_logins_that_arrive_together_in_one_statement() {
    let Some((pg, users)) = postgres_with_mail() else {
        return;
    };
    pg.psql(
        "mail",
        "INSERT INTO mailbox (username, password, domain) VALUES ('zero@example.org', '{PLAIN}pw', 'example.org'); \
         GRANT UPDATE ON mailbox TO postfix",
    );
    pg.psql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let logins = batch_logins(&users);
    let connect = format!(
        "driver = pgsql\nconnect = host=127.0.0.1 port={} dbname=mail user=postfix password='db secret'\n\
         default_pass_scheme = SHA512-CRYPT\n",
        pg.port
    );
    // Postfixadmin's query with a column that fails for one user's row, and a comment after
    // it (the batch's parenthesis comes on a line of its own); then a data-modifying WITH,
    // which cannot be in a LATERAL subquery.
    batches_then_alone(
        &connect,
        "SELECT username AS user, password, \\\n\
         1 / (CASE WHEN username = 'zero@example.org' THEN 0 ELSE 1 END) AS boom FROM mailbox \\\n\
         WHERE username = '%u' AND active = '1' AND (smtp_active = '1' OR '%s' <> 'smtp') \\\n\
         UNION SELECT username AS user, password_hash AS password, 1 AS boom \\\n\
         FROM mailbox_app_password WHERE username = '%u' -- Postfixadmin's, with a column\n",
        "WITH seen AS (UPDATE mailbox SET active = active \\\n\
         WHERE username = '%u' AND active = '1' AND (smtp_active = '1' OR '%s' <> 'smtp') \\\n\
         RETURNING username, password) SELECT username AS user, password FROM seen \\\n\
         UNION SELECT username AS user, password_hash AS password FROM mailbox_app_password \\\n\
         WHERE username = '%u'\n",
        &logins,
        || {
            let log = pg.log();
            if !log.contains("saslauthd_rs_login") {
                return Err(format!("no batch was asked:\n{log}"));
            }
            if !log.contains("division by zero") {
                return Err(log);
            }
            Ok(())
        },
    );
}

/// The same on MariaDB, which has neither arrays nor `LATERAL`: a batch is the query once
/// per login, `UNION ALL`, each copy with its own bound values. A login whose row makes the
/// query fail (a scalar subquery of two rows: MariaDB's division by zero is NULL) fails
/// alone; a query that cannot be a derived table (two columns of one name) turns batching
/// off, said in the log, and works as before.
#[test]
fn mariadb_asks_for_logins_that_arrive_together_in_one_statement() {
    let Some((db, users)) = mariadb_with_mail() else {
        return;
    };
    db.sql(
        "INSERT INTO mail.mailbox (username, password, domain) \
         VALUES ('zero@example.org', '{PLAIN}pw', 'example.org')",
    );
    db.log_statements();
    let logins = batch_logins(&users);
    let connect = mariadb_connect(&db);
    // A column that fails for one user's row; then two columns named password, which a
    // derived table refuses and the query alone does not.
    batches_then_alone(
        &connect,
        "SELECT username AS user, password, \\\n\
         (SELECT 1 UNION ALL SELECT 2 FROM DUAL WHERE mailbox.username = 'zero@example.org') AS boom \\\n\
         FROM mailbox WHERE username = '%u' AND active = '1' AND (smtp_active = '1' OR '%s' <> 'smtp') \\\n\
         UNION SELECT username AS user, password_hash AS password, 1 AS boom \\\n\
         FROM mailbox_app_password WHERE username = '%u' -- Postfixadmin's, with a column\n",
        "SELECT username AS user, password, password AS password \\\n\
         FROM mailbox WHERE username = '%u' AND active = '1' AND (smtp_active = '1' OR '%s' <> 'smtp') \\\n\
         UNION SELECT username AS user, password_hash, password_hash FROM mailbox_app_password \\\n\
         WHERE username = '%u'\n",
        &logins,
        || {
            let statements = db.statements();
            match statements.contains("UNION ALL SELECT CAST(2 AS SIGNED)") {
                true => Ok(()),
                false => Err(format!("no batch was asked:\n{statements}")),
            }
        },
    );
}

/// A batching test on one database (`connect`, the lines before the query; its `mailbox`
/// has zero@example.org): with `failing`, a query that fails for zero's row, 16 clients at once
/// ask `logins` and zero's, which alone fails (a temporary failure), and `batched` says whether
/// the database saw a batch; with `unbatchable`, a query the database cannot batch, batching
/// turns off, said in the log, and every login is answered as before.
fn batches_then_alone(
    connect: &str,
    failing: &str,
    unbatchable: &str,
    logins: &[(String, String, &'static str)],
    batched: impl Fn() -> Result<(), String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(&conf, format!("{connect}password_query = {failing}")).unwrap();
    let (d, _auth) = daemon(&conf, &[]);
    let mut with_zero = logins.to_vec();
    with_zero.push((
        "zero@example.org".into(),
        "pw".into(),
        "NO internal mechanism failure",
    ));
    everyone_at_once(&d, &with_zero, 6);
    if let Err(e) = batched() {
        panic!("{e}");
    }
    assert!(
        !d.log_text().contains("cannot be asked for several logins"),
        "{}",
        d.log_text()
    );
    drop(d);

    std::fs::write(&conf, format!("{connect}password_query = {unbatchable}")).unwrap();
    let (d, _auth) = daemon(&conf, &[]);
    everyone_at_once(&d, logins, 2);
    common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            d.log_text()
                .contains("cannot be asked for several logins at once")
        },
        || d.log_text(),
    );
}

/// The logins a batching test asks: every cheap scheme's user (hashing is not what it is
/// about) with its password and a wrong one, and the other [`cases`].
fn batch_logins(users: &[User]) -> Vec<(String, String, &'static str)> {
    let cheap = users.iter().filter(|(_, _, stored)| {
        ![
            "{SHA512-CRYPT}",
            "{SHA256-CRYPT}",
            "{BLF-CRYPT}",
            "{MD5-CRYPT}",
            "{PBKDF2}",
            "{SCRAM-",
            "{ARGON2",
            "$",
        ]
        .iter()
        .any(|s| stored.starts_with(s))
    });
    let mut logins = Vec::new();
    for (login, password, _) in cheap {
        logins.push((login.clone(), password.to_string(), "OK"));
        logins.push((login.clone(), "wrong".into(), "NO"));
    }
    for (login, password, want) in cases() {
        logins.push((login.into(), password.into(), want));
    }
    logins
}

/// 16 clients on the mux socket at once, `rounds` times through `logins` each, each client
/// in its own order (so that batches mix logins); every answer as the login wants.
fn everyone_at_once(d: &Daemon, logins: &[(String, String, &str)], rounds: usize) {
    std::thread::scope(|s| {
        for client in 0..16 {
            s.spawn(move || {
                for round in 0..rounds {
                    for k in 0..logins.len() {
                        let (login, password, want) =
                            &logins[(k * 7 + client * 5 + round) % logins.len()];
                        let got = d.ask(login, password, "smtp", "");
                        assert!(got.starts_with(want), "{login} {password}: {got}");
                        if *want == "NO" {
                            assert!(!got.starts_with("OK"), "{login} {password}: {got}");
                        }
                    }
                }
            });
        }
    });
}

/// A PostgreSQL host that stops answering in the middle of a busy minute (its connections
/// stay open, nothing comes back: a hung server, a network that drops everything): the
/// statement in flight and the logins queued behind it for the next batch all go to the next
/// host, each answered within one query deadline and a half, and every right password is
/// still `OK`, every wrong one `NO`. The first host is a proxy to the same server on
/// 127.0.0.2, which the test freezes.
#[test]
fn postgres_a_host_that_hangs_under_load_sends_its_logins_to_the_next() {
    let Some((pg, _)) = postgres_with_mail() else {
        return;
    };
    pg.psql(
        "mail",
        "INSERT INTO mailbox (username, password, domain) VALUES ('busy@example.org', '{PLAIN}busy-pw', 'example.org')",
    );
    let frozen = Arc::new(AtomicBool::new(false));
    let proxied = freezable_proxy(
        ("127.0.0.2", pg.port),
        ("127.0.0.1", pg.port),
        Arc::clone(&frozen),
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "driver = pgsql\nconnect = host=127.0.0.2 host={} port={} dbname=mail user=postfix password='db secret'\n\
             default_pass_scheme = SHA512-CRYPT\n{QUERY}",
            pg.socket_dir.display(),
            pg.port
        ),
    )
    .unwrap();
    let (d, _auth) = daemon(&conf, &[]);
    assert_eq!(d.ask("busy@example.org", "busy-pw", "smtp", ""), "OK");
    assert!(
        proxied.load(Ordering::SeqCst) > 0,
        "the first host was not asked"
    );
    let answers = std::thread::scope(|s| {
        let clients: Vec<_> = (0..16)
            .map(|client| {
                let d = &d;
                s.spawn(move || {
                    let mut answers = Vec::new();
                    let begun = Instant::now();
                    let mut k = 0;
                    while begun.elapsed() < Duration::from_secs(4) {
                        let (password, want) = match (client + k) % 5 {
                            0 => ("wrong", "NO"),
                            _ => ("busy-pw", "OK"),
                        };
                        let asked = Instant::now();
                        let got = d.ask("busy@example.org", password, "smtp", "");
                        answers.push((want, got, asked.elapsed()));
                        k += 1;
                    }
                    answers
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        frozen.store(true, Ordering::SeqCst);
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let slowest = answers.iter().map(|(_, _, took)| *took).max().unwrap();
    for (want, got, took) in &answers {
        assert!(
            got == want || (*want == "NO" && got.starts_with("NO")),
            "{want}: {got} after {took:?}\n{}",
            d.log_text()
        );
    }
    // The hung statement's deadline (1.5 s), then the next host.
    assert!(
        slowest >= Duration::from_millis(1400) && slowest < Duration::from_millis(2500),
        "the slowest answer took {slowest:?}: {}",
        d.log_text()
    );
    assert!(answers.len() > 100, "{} answers", answers.len());
    assert!(
        d.log_text().contains("127.0.0.2"),
        "the first host's failure is not in the log: {}",
        d.log_text()
    );
}

/// A statement is one round trip: the connection it ran on is kept for the next (sqlx, left
/// to itself, tests each connection given back to its pool with a `Sync` of its own, a second
/// round trip a login). Counted on the wire, through a proxy on 127.0.0.2 that reads the
/// frontend's messages: 60 logins one after the other are 60 `Bind`s and, besides the few
/// `Sync`s that prepare the statement on a new connection, 60 `Sync`s. Then the server's
/// connections are cut (`pg_terminate_backend`), and the server restarted: the next login is
/// `OK` at once, asked again on a new connection, not a temporary failure.
#[test]
fn postgres_a_statement_is_one_round_trip_and_a_restart_fails_no_login() {
    let Some((mut pg, _)) = postgres_with_mail() else {
        return;
    };
    pg.psql(
        "mail",
        "INSERT INTO mailbox (username, password, domain) VALUES ('kept@example.org', '{PLAIN}kept-pw', 'example.org')",
    );
    let counts = Arc::new(Mutex::new(std::collections::HashMap::<u8, usize>::new()));
    let counted = Arc::clone(&counts);
    let never = Arc::new(AtomicBool::new(false));
    proxy(
        ("127.0.0.2", pg.port),
        ("127.0.0.1", pg.port),
        never,
        move || {
            let counted = Arc::clone(&counted);
            let mut messages = FrontendMessages::default();
            Box::new(move |bytes| {
                for kind in messages.read(bytes) {
                    *counted.lock().unwrap().entry(kind).or_default() += 1;
                }
            })
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "driver = pgsql\nconnect = host=127.0.0.2 port={} dbname=mail user=postfix password='db secret' sslmode=disable\n\
             default_pass_scheme = SHA512-CRYPT\n{QUERY}",
            pg.port
        ),
    )
    .unwrap();
    let (d, _auth) = daemon(&conf, &[]);
    for k in 0..60 {
        let (password, want) = if k % 3 == 0 {
            ("wrong", "NO")
        } else {
            ("kept-pw", "OK")
        };
        let got = d.ask("kept@example.org", password, "smtp", "");
        assert!(got.starts_with(want), "{k}: {got}\n{}", d.log_text());
    }
    let (binds, syncs) = {
        let counts = counts.lock().unwrap();
        (counts.get(&b'B').copied(), counts.get(&b'S').copied())
    };
    let (binds, syncs) = (binds.unwrap_or(0), syncs.unwrap_or(0));
    assert_eq!(binds, 60, "Bind messages: {binds}, Sync messages: {syncs}");
    assert!(
        (60..=64).contains(&syncs),
        "{syncs} Sync messages for 60 statements"
    );
    pg.query(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'postfix'",
    );
    assert_eq!(
        d.ask("kept@example.org", "kept-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    pg.stop();
    pg.run();
    assert_eq!(
        d.ask("kept@example.org", "kept-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.ask("kept@example.org", "wrong", "smtp", ""),
        "NO",
        "{}",
        d.log_text()
    );
    assert!(
        !d.log_text().contains("skipping it"),
        "a login failed: {}",
        d.log_text()
    );
}

/// Splits what a PostgreSQL client sends into messages: the untyped ones first (an
/// `SSLRequest`, then the `StartupMessage`), then one type byte and a length each.
#[derive(Default)]
struct FrontendMessages {
    buffered: Vec<u8>,
    started: bool,
}

impl FrontendMessages {
    /// The types of the messages completed by `bytes`.
    fn read(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buffered.extend_from_slice(bytes);
        let mut kinds = Vec::new();
        loop {
            let header = if self.started { 5 } else { 8 };
            if self.buffered.len() < header {
                return kinds;
            }
            let (kind, length) = if self.started {
                let length = u32::from_be_bytes(self.buffered[1..5].try_into().unwrap());
                (Some(self.buffered[0]), 1 + length as usize)
            } else {
                let length = u32::from_be_bytes(self.buffered[..4].try_into().unwrap());
                let code = u32::from_be_bytes(self.buffered[4..8].try_into().unwrap());
                // SSLRequest and GSSENCRequest come before the StartupMessage.
                self.started = !matches!(code, 80877103 | 80877104);
                (None, length as usize)
            };
            if self.buffered.len() < length {
                if kind.is_none() {
                    self.started = false;
                }
                return kinds;
            }
            self.buffered.drain(..length);
            kinds.extend(kind);
        }
    }
}

/// A TCP proxy from `listen` to `to` that forwards until `frozen` is set, then holds every
/// connection open and forwards nothing more; counts the connections it accepted.
fn freezable_proxy(
    listen: (&str, u16),
    to: (&'static str, u16),
    frozen: Arc<AtomicBool>,
) -> Arc<AtomicUsize> {
    proxy(listen, to, frozen, || Box::new(|_| {}))
}

/// What a proxy shows of one connection's bytes from the client to the server.
type Watch = Box<dyn FnMut(&[u8]) + Send>;

/// [`freezable_proxy`], which shows the bytes each client sends to a watch that `watch` makes
/// for its connection.
fn proxy(
    listen: (&str, u16),
    to: (&'static str, u16),
    frozen: Arc<AtomicBool>,
    watch: impl Fn() -> Watch + Send + 'static,
) -> Arc<AtomicUsize> {
    let listener = std::net::TcpListener::bind(listen).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(to) else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let frozen2 = Arc::clone(&frozen);
            std::thread::spawn(move || pump(server, client, &frozen2, |_| {}));
            let frozen2 = Arc::clone(&frozen);
            let mut seen = watch();
            std::thread::spawn(move || pump(c, s, &frozen2, |bytes| seen(bytes)));
        }
    });
    accepted
}

/// Copies `from` to `into` while `frozen` is not set, showing `seen` what it copies; then
/// holds both, reading nothing.
fn pump(
    mut from: std::net::TcpStream,
    mut into: std::net::TcpStream,
    frozen: &AtomicBool,
    mut seen: impl FnMut(&[u8]),
) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16384];
    loop {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                seen(&buf[..n]);
                if into.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// The database stops: a temporary failure, within the deadline, never a success or a wrong
/// password; Postfix's connection is closed (its 454). It comes back: logins too, without a
/// restart.
fn outage_and_return<S>(
    d: &Daemon,
    auth: &Path,
    server: &mut S,
    stop: fn(&mut S),
    start: fn(&mut S),
) {
    stop(server);
    let begun = Instant::now();
    assert_eq!(
        d.ask("alice@example.org", "alice-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    let mut c = Client::postfix(auth);
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        common::dovecot::plain("alice@example.org", "alice-pw")
    ));
    assert!(
        c.closed(),
        "the Dovecot socket answered with the database down"
    );
    start(server);
    common::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || d.ask("alice@example.org", "alice-pw", "smtp", "") == "OK",
        || d.log_text(),
    );
    assert_eq!(d.ask("alice@example.org", "app-pw-1", "smtp", ""), "OK");
    assert!(
        d.log_text().contains("SQL: no database could be asked"),
        "{}",
        d.log_text()
    );
}

#[test]
fn mariadb_on_its_latin1_defaults_an_outage_and_the_return() {
    let Some((mut db, users)) = mariadb_with_mail() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(&conf, format!("{}{QUERY}", mariadb_connect(&db))).unwrap();
    let (d, auth) = daemon(&conf, &[]);
    check_everyone(&d, &auth, &users);
    // Request for request against Dovecot's SQL passdb (mysql) on the same database, both
    // over TCP (Dovecot's auth process runs as its own user, outside the socket's directory).
    if common::peers_for("sql", common::dovecot_auth::missing()) {
        db.sql(
            "CREATE USER 'mailer'@'localhost' IDENTIFIED BY 'dbsecret'; \
             GRANT SELECT ON mail.* TO 'mailer'@'localhost'; \
             CREATE USER 'mailer'@'127.0.0.1' IDENTIFIED BY 'dbsecret'; \
             GRANT SELECT ON mail.* TO 'mailer'@'127.0.0.1';",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tcp = dir.path().join("dovecot-sql-tcp.conf.ext");
        std::fs::write(
            &tcp,
            format!(
                // Dovecot's mysql driver takes no quotes in `connect` (ours does).
                "driver = mysql\nconnect = host=127.0.0.1 port={} dbname=mail user=mailer \
                 password=dbsecret\ndefault_pass_scheme = SHA512-CRYPT\n{QUERY}",
                db.port
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tcp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dovecot = common::dovecot_auth::DovecotAuth::start(&format!(
            "  driver = sql\n  args = {}",
            tcp.display()
        ));
        let (ours, ours_auth) = daemon(&tcp, &[]);
        let mut asked: Vec<(&str, String, String)> = Vec::new();
        for (login, password, _) in &users {
            asked.push(("PLAIN", login.clone(), password.to_string()));
            asked.push(("LOGIN", login.clone(), password.to_string()));
            asked.push(("PLAIN", login.clone(), "wrong".into()));
        }
        for (login, password, _) in cases() {
            asked.push(("PLAIN", login.into(), password.into()));
        }
        let same = compare_with_dovecot(&dovecot, &ours_auth, &asked);
        assert!(same >= 60, "{same}");
        drop(ours);
    }
    outage_and_return(&d, &auth, &mut db, |db| db.stop(), |db| db.run());
}

/// Request for request, the same verdict as Dovecot 2.3's own SQL passdb on the same SQLite
/// file and the same `dovecot-sql.conf.ext`, asked the same way (AUTH PLAIN on the auth-client
/// socket), except where ours is meant to differ: a user with several rows (alice's app
/// password) is a temporary failure in Dovecot, and any of its passwords here.
#[test]
fn the_same_verdicts_as_dovecots_sql_passdb() {
    if !peers() || !common::peers_for("sql", common::dovecot_auth::missing()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, users) = sqlite_db(dir.path());
    // Dovecot's auth process runs as its own user: it must read the file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "driver = sqlite\nconnect = {}\ndefault_pass_scheme = MD5-CRYPT\n{QUERY}",
            db.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dovecot = common::dovecot_auth::DovecotAuth::start(&format!(
        "  driver = sql\n  args = {}",
        conf.display()
    ));
    let (d, auth) = daemon(&conf, &[]);
    let mut asked: Vec<(&str, String, String)> = Vec::new();
    for (login, password, _) in &users {
        asked.push(("PLAIN", login.clone(), password.to_string()));
        asked.push(("PLAIN", login.clone(), "wrong".into()));
    }
    for (login, password, _) in cases() {
        asked.push(("PLAIN", login.into(), password.into()));
    }
    let same = compare_with_dovecot(&dovecot, &auth, &asked);
    assert!(same >= 40, "{same}");
    assert!(!d.log_text().contains("Secret-1"));
}

/// On PostgreSQL, in every mechanism: the same verdict as Dovecot 2.3's SQL passdb (pgsql) for
/// every scheme's user — PLAIN and LOGIN with any scheme, CRAM-MD5 with a cleartext value or a
/// `{CRAM-MD5}` one, SCRAM-SHA-* with a cleartext value or a `{SCRAM-SHA-*}` one of that hash,
/// DIGEST-MD5 with a cleartext value or a `{DIGEST-MD5}` one — and for the logins beside them.
#[test]
fn the_same_verdicts_as_dovecot_on_postgres_in_every_mechanism() {
    if !peers()
        || !common::peers_for("sql", (!common::pg::available()).then_some("PostgreSQL 15"))
        || !common::peers_for("sql", common::dovecot_auth::missing())
    {
        return;
    }
    let mut pg = common::pg::Pg::start();
    let users = mail_db(&mut pg);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("dovecot-sql.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "driver = pgsql\nconnect = host=127.0.0.1 port={} dbname=mail user=postfix password='db secret'\n\
             default_pass_scheme = SHA512-CRYPT\n{QUERY}",
            pg.port
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dovecot = common::dovecot_auth::DovecotAuth::start(&format!(
        "  driver = sql\n  args = {}",
        conf.display()
    ));
    let (d, auth) = daemon(
        &conf,
        &[
            "--dovecot-mechanisms",
            "plain login cram-md5 digest-md5 scram-sha-1 scram-sha-256",
        ],
    );
    let mut asked: Vec<(&str, String, String)> = Vec::new();
    for (login, password, _) in &users {
        for mech in MECHANISMS {
            asked.push((mech, login.clone(), password.to_string()));
        }
        asked.push(("PLAIN", login.clone(), "wrong".into()));
    }
    for (login, password, _) in cases() {
        asked.push(("PLAIN", login.into(), password.into()));
        asked.push(("SCRAM-SHA-256", login.into(), password.into()));
    }
    let same = compare_with_dovecot(&dovecot, &auth, &asked);
    assert!(same >= 120, "{same}");
    assert!(!d.log_text().contains("Secret-1"));
}

/// The mechanisms both offer.
const MECHANISMS: [&str; 6] = [
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
];

/// A throwaway PostgreSQL with [`mail_db`] in it, and the scheme users; `None` without the
/// peers.
fn postgres_with_mail() -> Option<(common::pg::Pg, Vec<User>)> {
    if !peers() || !common::peers_for("sql", (!common::pg::available()).then_some("PostgreSQL 15"))
    {
        return None;
    }
    let mut pg = common::pg::Pg::start();
    let users = mail_db(&mut pg);
    Some((pg, users))
}

/// A MariaDB with Postfixadmin's tables and [`rows`] in a database `mail`, readable by
/// `postfix`@`localhost` (password `db secret`) over its socket, and the scheme users; `None`
/// when the peers are not there.
fn mariadb_with_mail() -> Option<(common::mariadb::MariaDb, Vec<User>)> {
    if !peers()
        || !common::peers_for(
            "sql",
            (!common::mariadb::available()).then_some("MariaDB 10.11"),
        )
    {
        return None;
    }
    let db = common::mariadb::MariaDb::start();
    let (inserts, users) = rows();
    db.sql(&format!(
        "CREATE DATABASE mail; USE mail; {SCHEMA} {inserts} \
         CREATE USER 'postfix'@'localhost' IDENTIFIED BY 'db secret'; \
         GRANT SELECT ON mail.* TO 'postfix'@'localhost';"
    ));
    Some((db, users))
}

/// The lines of a `dovecot-sql.conf.ext` before its query, for [`mariadb_with_mail`]'s
/// database over its socket.
fn mariadb_connect(db: &common::mariadb::MariaDb) -> String {
    format!(
        "driver = mysql\nconnect = host={} dbname=mail user=postfix password=\"db secret\"\n\
         default_pass_scheme = SHA512-CRYPT\n",
        db.socket.display()
    )
}

/// Postfixadmin's tables with [`rows`] in a new database `mail` of `pg`, readable by the role
/// `postfix` (password `db secret`); the scheme users.
fn mail_db(pg: &mut common::pg::Pg) -> Vec<(String, &'static str, String)> {
    pg.psql("postgres", "CREATE DATABASE mail");
    let (inserts, users) = rows();
    pg.psql("mail", SCHEMA);
    pg.psql("mail", &inserts);
    pg.psql(
        "postgres",
        "CREATE ROLE postfix LOGIN PASSWORD 'db secret'; GRANT CONNECT ON DATABASE mail TO postfix",
    );
    pg.psql(
        "mail",
        "GRANT SELECT ON mailbox, mailbox_app_password TO postfix",
    );
    users
}

/// Asks Dovecot and ours the same (mechanism, login, password) exchanges and compares the
/// verdicts (and a success's `user=`), except where ours is meant to differ: a user with
/// several rows (alice's app password) is a temporary failure in Dovecot, and any of its
/// passwords here; names outside Dovecot's default auth_username_chars (a quote, an accented
/// letter) it refuses; ours binds them as parameters, so it needs no such list. Returns how
/// many were compared.
fn compare_with_dovecot(
    dovecot: &common::dovecot_auth::DovecotAuth,
    auth: &Path,
    asked: &[(&str, String, String)],
) -> usize {
    let verdict = |reply: &str| reply.split('\t').next().unwrap_or_default().to_string();
    let meant = |login: &str| {
        login.eq_ignore_ascii_case("alice@example.org")
            || !login
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b))
    };
    // Dovecot sends failures in batches every 500 ms: ask it from eight threads at once.
    let compared: Vec<&(&str, String, String)> =
        asked.iter().filter(|(_, l, _)| !meant(l)).collect();
    let replies: Vec<String> = std::thread::scope(|scope| {
        let asking: Vec<_> = compared
            .chunks(compared.len().div_ceil(8))
            .map(|chunk| {
                let socket = &dovecot.socket;
                scope.spawn(move || {
                    let mut conn = Conn::new(socket);
                    chunk
                        .iter()
                        .map(|(mech, login, password)| conn.exchange(mech, login, password))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        asking.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    // The user= a success names, too.
    let named = |reply: &str| {
        reply
            .trim_end()
            .split('\t')
            .find_map(|f| f.strip_prefix("user="))
            .map(str::to_string)
    };
    let mut ours = Conn::new(auth);
    for ((mech, login, password), theirs) in compared.iter().copied().zip(&replies) {
        let reply = ours.exchange(mech, login, password);
        let ours = verdict(&reply);
        assert_eq!(
            ours,
            verdict(theirs),
            "{mech} {login} {password}: ours {reply:?}, Dovecot {theirs:?}: {}",
            dovecot.log()
        );
        if ours == "OK" {
            assert_eq!(
                named(&reply),
                named(theirs),
                "{mech} {login}: {reply} / {theirs}"
            );
        }
    }
    let theirs = Conn::new(&dovecot.socket).exchange("PLAIN", "alice@example.org", "alice-pw");
    assert!(theirs.contains("temp_fail"), "alice: {theirs}");
    let ok = replies.iter().filter(|r| r.starts_with("OK")).count();
    eprintln!(
        "{} exchanges with Dovecot's verdict ({ok} OK); {} meant to differ (app passwords, names Dovecot refuses)",
        compared.len(),
        asked.len() - compared.len()
    );
    compared.len()
}

/// A connection as Postfix keeps one, for several exchanges in turn.
struct Conn {
    client: Option<saslauthd_rs::client::AuthClient>,
    socket: std::path::PathBuf,
    id: u32,
}

impl Conn {
    fn new(socket: &Path) -> Conn {
        Conn {
            client: None,
            socket: socket.to_owned(),
            id: 0,
        }
    }

    /// [`exchange`] on this connection (made again after an error): the final line, or what
    /// went wrong instead of a panic on another thread.
    fn exchange(&mut self, mech: &str, login: &str, password: &str) -> String {
        self.id += 1;
        let result = match &mut self.client {
            Some(c) => exchange(c, self.id, mech, login, password),
            None => {
                saslauthd_rs::client::AuthClient::connect(&self.socket, Duration::from_secs(10))
                    .and_then(|mut c| {
                        // Each connection its own CPID: Dovecot drops an older connection that
                        // gave the same one.
                        static CPID: std::sync::atomic::AtomicU32 =
                            std::sync::atomic::AtomicU32::new(10_000);
                        let cpid = CPID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        c.send(&format!("VERSION\t1\t0\nCPID\t{cpid}\n"))?;
                        let line = exchange(&mut c, self.id, mech, login, password);
                        self.client = Some(c);
                        line
                    })
            }
        };
        result.unwrap_or_else(|e| {
            self.client = None;
            format!("(no answer: {e})")
        })
    }
}

/// One login in `mech` as Postfix runs it (no final-resp-ok), request `id` on `c`: the final
/// line (`OK…` or `FAIL…`). A server that fails the exchange early (Dovecot, at SCRAM's first
/// message for a user without a usable secret) ends it there.
fn exchange(
    c: &mut saslauthd_rs::client::AuthClient,
    id: u32,
    mech: &str,
    login: &str,
    password: &str,
) -> std::io::Result<String> {
    use saslauthd_rs::mech::{ScramClient, ScramHash};
    let (local, domain) = login.split_once('@').unwrap_or((login, ""));
    let mut scram = match mech {
        "SCRAM-SHA-1" => Some(ScramClient::new(ScramHash::Sha1, login, password)),
        "SCRAM-SHA-256" => Some(ScramClient::new(ScramHash::Sha256, login, password)),
        _ => None,
    };
    let initial = match (mech, &mut scram) {
        ("PLAIN", _) => format!("\tresp={}", common::dovecot::plain(login, password)),
        (_, Some(scram)) => format!("\tresp={}", B64.encode(scram.first("fixed-nonce"))),
        _ => String::new(),
    };
    // no-penalty: Dovecot's auth process delays every request from an address (here: none
    // given, all of them) by 2, 4, 8... s after each failure (auth-penalty), which would make
    // a comparison of hundreds of failures take minutes.
    c.send(&format!(
        "AUTH\t{id}\t{mech}\tservice=smtp\tno-penalty{initial}\n"
    ))?;
    for step in 0..4 {
        let line = c.line()?;
        let Some(data) = line.strip_prefix(&format!("CONT\t{id}\t")) else {
            return Ok(line);
        };
        let data = B64.decode(data.trim_end()).unwrap_or_default();
        let response: Vec<u8> = match (mech, step, &mut scram) {
            ("LOGIN", 0, _) => login.into(),
            ("LOGIN", 1, _) => password.into(),
            ("CRAM-MD5", 0, _) => [
                login.as_bytes(),
                b" ",
                &saslauthd_rs::mech::cram_md5::digest_hex(password.as_bytes(), &data),
            ]
            .concat(),
            ("DIGEST-MD5", 0, _) => saslauthd_rs::mech::digest_md5::client_response(
                &data,
                local,
                Some(domain),
                password.as_bytes(),
                "smtp/mail.example.org",
            )
            .map(|(response, _)| response)
            .unwrap_or_default(),
            (_, 0, Some(scram)) => scram
                .last(&String::from_utf8_lossy(&data))
                .map(|(last, _)| last.into_bytes())
                .unwrap_or_default(),
            // rspauth, v=: the client's empty answer.
            _ => Vec::new(),
        };
        c.send(&format!("CONT\t{id}\t{}\n", B64.encode(response)))?;
    }
    Ok("(too many steps)".into())
}

/// `saslauthd-rs-ctl pw` makes values Dovecot's own `doveadm pw -t` accepts, for every scheme
/// it makes, and tests values doveadm made.
#[test]
fn ctl_pw_values_are_dovecots() {
    if !peers() {
        return;
    }
    let ctl = env!("CARGO_BIN_EXE_saslauthd-rs-ctl");
    let out = Command::new(ctl).args(["pw", "-l"]).output().unwrap();
    let schemes = String::from_utf8(out.stdout).unwrap();
    assert!(schemes.starts_with("ARGON2ID "), "{schemes}");
    for scheme in schemes.split_whitespace() {
        let out = Command::new(ctl)
            .args(["pw", "-s", scheme, "-p", "pa ss", "-u", "alice@example.org"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{scheme}");
        let value = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let checked = Command::new("doveadm")
            .args(["pw", "-t", &value, "-p", "pa ss", "-u", "alice@example.org"])
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{scheme}: doveadm pw -t {value}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let wrong = Command::new(ctl)
            .args(["pw", "-t", &value, "-p", "pa sS", "-u", "alice@example.org"])
            .output()
            .unwrap();
        assert_eq!(wrong.status.code(), Some(1), "{scheme}");
    }
    let made = doveadm_pw("SHA512-CRYPT", "x y", "bob");
    let out = Command::new(ctl)
        .args(["pw", "-t", &made, "-p", "x y"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{made} (verified)\n")
    );
}
