//! `-a ldap` against a real OpenLDAP (Debian's slapd, throwaway instances): bind, fastbind and
//! custom; filter tokens and realms; a user name full of filter syntax; a password changed
//! with ldappasswd; failover between two servers under load; a directory that is down or
//! stopped; what Cyrus's `saslauthd -a ldap` answers to the same requests; and the start-up
//! errors of a bad saslauthd.conf. And against a real 389 Directory Server (Debian's
//! 389-ds-base): its inactivated accounts, and its changes followed; and against Samba's
//! AD domain controller: Active Directory's disabled and locked-out accounts.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dirsrv::{self, DirSrv};
use common::dovecot::{plain, Client};
use common::ldap::{self, Slapd, PEOPLE, SEARCHER, SEARCHER_PW};
use common::pki::{certificates, issue, openssl, path_str};
use common::samba::{self, Samba};
use common::{ask_at, Daemon};

/// The directory's users: uid, userPassword as stored, mail.
fn users() -> Vec<(String, String, String)> {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut ssha = Sha1::digest(b"hashed-pwSALTY").to_vec();
    ssha.extend_from_slice(b"SALTY");
    let ssha = format!(
        "{{SSHA}}{}",
        base64::engine::general_purpose::STANDARD.encode(ssha)
    );
    let crypt = format!(
        "{{CRYPT}}{}",
        saslauthd_rs::crypt::hash(b"crypted-pw", "$6$").unwrap()
    );
    vec![
        (
            "alice".into(),
            "alice-pw".into(),
            "alice@example.org".into(),
        ),
        ("bob".into(), "bob-pw".into(), "bob@example.net".into()),
        ("carol".into(), ssha, "carol@example.org".into()),
        ("dave".into(), crypt, "dave@example.org".into()),
        // A name made of filter syntax: it must match only itself.
        ("m*(x)\\".into(), "odd-pw".into(), "odd@example.org".into()),
    ]
}

fn start_slapd(dir: &Path) -> Slapd {
    with_users(|users| Slapd::start(dir, users, None))
}

/// `f` given [`users`] as the `(uid, password, mail)` slices a [`Slapd`] starts with.
fn with_users<T>(f: impl FnOnce(&[(&str, &str, &str)]) -> T) -> T {
    let users = users();
    let refs: Vec<(&str, &str, &str)> = users
        .iter()
        .map(|(u, p, m)| (u.as_str(), p.as_str(), m.as_str()))
        .collect();
    f(&refs)
}

/// Changes alice's password in the directory from `old` to `new` (`change(new)`): the old one is refused
/// at the very next request and the new one accepted, on both sockets. Returns how long
/// after the change began the old one was refused.
fn change_alice_password(
    change: impl FnOnce(&str),
    d: &Daemon,
    auth: &Path,
    old: &str,
    new: &str,
) -> Duration {
    let changed = Instant::now();
    change(new);
    assert_eq!(
        d.ask("alice", old, "smtp", ""),
        "NO",
        "the old password, at once"
    );
    let refused = changed.elapsed();
    assert_eq!(d.ask("alice", new, "smtp", ""), "OK");
    assert!(dovecot_plain(auth, "alice", old).starts_with("FAIL"));
    assert!(dovecot_plain(auth, "alice", new).starts_with("OK"));
    refused
}

/// [`start_slapd`], logging every operation (to count binds).
fn logged_slapd(dir: &Path) -> Slapd {
    let mut slapd = start_slapd(dir);
    slapd.log_operations();
    slapd
}

/// saslauthd.conf for `servers` with `extra` lines.
fn conf(dir: &Path, servers: &str, extra: &str) -> PathBuf {
    let path = dir.join("saslauthd.conf");
    std::fs::write(
        &path,
        format!(
            "ldap_servers: {servers}\nldap_search_base: {PEOPLE}\nldap_bind_dn: {SEARCHER}\n\
             ldap_password: {SEARCHER_PW}\nldap_timeout: 2\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// The daemon with `-a ldap -O CONF`, serving the Dovecot protocol too.
fn daemon(conf: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    daemon_via(&[], conf, extra)
}

/// [`daemon`] run by `via` (`nsenter` into a directory's network namespace).
fn daemon_via(via: &[OsString], conf: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    let mut args: Vec<OsString> = vec![
        "-a".into(),
        "ldap".into(),
        "-O".into(),
        conf.into(),
        "--realm".into(),
        "example.org".into(),
        "--dovecot-socket".into(),
        auth.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    (Daemon::spawn_via(via, dir, &args, &[]), auth)
}

/// Debian's Cyrus `saslauthd -a ldap -n 2 -O CONF`, its socket in `run` (the caller has
/// checked that `common::peer("saslauthd")` is there).
fn cyrus_ldap(conf: &Path, run: &Path) -> common::Cyrus {
    cyrus_ldap_via(&[], conf, run)
}

/// [`cyrus_ldap`] run by `via`, as [`daemon_via`].
fn cyrus_ldap_via(via: &[OsString], conf: &Path, run: &Path) -> common::Cyrus {
    std::fs::create_dir_all(run).unwrap();
    let mut command = common::Cyrus::command();
    command
        .args(via)
        .arg(common::peer("saslauthd").unwrap())
        .args(["-d", "-a", "ldap", "-n", "2", "-O"])
        .arg(conf)
        .arg("-m")
        .arg(run);
    common::Cyrus::start(command, run)
}

/// Cyrus's `saslauthd -a ldap` on `conf` (socket in `run`, run by `via`) answers each (user, password,
/// expected OK or NO) of `table` as expected, when Debian's saslauthd is there.
fn cyrus_agrees(
    via: &[OsString],
    conf: &Path,
    run: &Path,
    table: &[(&str, &str, &str)],
    server: &str,
) {
    if common::peer("saslauthd").is_none() {
        return;
    }
    let theirs = cyrus_ldap_via(via, conf, run);
    for (user, password, expected) in table {
        let reply = ask_at(&theirs.socket, user, password, "smtp", "");
        assert!(
            reply.starts_with(expected),
            "Cyrus, {user}/{password}: {reply}"
        );
    }
    eprintln!(
        "{server}: {} requests, the same OK/NO from Cyrus saslauthd -a ldap",
        table.len()
    );
}

/// The daemon answers each (user, password, expected OK or NO) of `table` as expected; else
/// the failure shows its log and `server_log()`.
fn answers(d: &Daemon, table: &[(&str, &str, &str)], server_log: impl Fn() -> String) {
    for (user, password, expected) in table {
        assert_eq!(
            d.ask(user, password, "smtp", ""),
            *expected,
            "{user}/{password}: {}\n{}",
            d.log_text(),
            server_log()
        );
    }
}

fn dovecot_plain(auth: &Path, user: &str, password: &str) -> String {
    common::dovecot::plain_reply(auth, user, password)
}

#[test]
fn bind_fastbind_and_custom() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    let url = slapd.url();
    let ldapi = ldap::ldapi_url(&slapd.ldapi);
    // bind (the default), over TCP and over ldapi.
    for servers in [&url, &ldapi] {
        let (d, auth) = daemon(&conf(dir.path(), servers, ""), &[]);
        assert_eq!(
            d.ask("alice", "alice-pw", "smtp", ""),
            "OK",
            "{}",
            d.log_text()
        );
        assert_eq!(d.ask("alice", "wrong", "smtp", ""), "NO");
        assert_eq!(d.ask("nobody", "alice-pw", "smtp", ""), "NO");
        assert_eq!(
            d.ask("carol", "hashed-pw", "smtp", ""),
            "OK",
            "slapd checks {{SSHA}}"
        );
        assert_eq!(
            dovecot_plain(&auth, "alice", "alice-pw"),
            "OK\t1\tuser=alice\n"
        );
        assert!(dovecot_plain(&auth, "alice", "nope").starts_with("FAIL\t1\t"));
        // An empty password would be an unauthenticated bind, which slapd accepts.
        assert_eq!(
            common::raw_exchange(&d.socket, &common::frame(&[b"alice", b"", b"smtp", b""])),
            b"\x00\x19NO NULL password received"
        );
    }
    // fastbind: the filter is the DN.
    let fast = conf(
        dir.path(),
        &url,
        &format!("ldap_auth_method: fastbind\nldap_filter: uid=%U,{PEOPLE}\n"),
    );
    let (d, _) = daemon(&fast, &[]);
    assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK", "{}", d.log_text());
    assert_eq!(
        d.ask("bob@example.net", "bob-pw", "smtp", ""),
        "OK",
        "%U drops the domain"
    );
    assert_eq!(d.ask("bob", "alice-pw", "smtp", ""), "NO");
    assert_eq!(d.ask("nobody", "x", "smtp", ""), "NO");
    drop(d);
    // custom: the password attribute read and checked here, in each scheme.
    let custom = conf(dir.path(), &url, "ldap_auth_method: custom\n");
    let (d, _) = daemon(&custom, &[]);
    for (user, password, want) in [
        ("alice", "alice-pw", "OK"),
        ("alice", "alice-PW", "NO"),
        ("carol", "hashed-pw", "OK"),
        ("carol", "hashed-px", "NO"),
        ("dave", "crypted-pw", "OK"),
        ("dave", "crypted-px", "NO"),
        ("nobody", "alice-pw", "NO"),
    ] {
        assert_eq!(
            d.ask(user, password, "smtp", ""),
            want,
            "custom {user}/{password}"
        );
    }
}

#[test]
fn filter_tokens_realms_and_no_injection() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    // The mail attribute is user@realm: %U and %r (or %d from a user@domain login).
    let by_mail = conf(dir.path(), &slapd.url(), "ldap_filter: (mail=%U@%d)\n");
    let (d, auth) = daemon(&by_mail, &[]);
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", "example.org"),
        "OK",
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", "example.net"),
        "NO",
        "another realm"
    );
    assert_eq!(d.ask("bob", "bob-pw", "smtp", "example.net"), "OK");
    assert_eq!(
        d.ask("bob", "bob-pw", "smtp", ""),
        "NO",
        "the default realm is example.org"
    );
    assert_eq!(
        d.ask("bob@example.net", "bob-pw", "smtp", ""),
        "OK",
        "%d from the login"
    );
    // Dovecot: user@realm is split, the realm goes to %r.
    assert_eq!(
        dovecot_plain(&auth, "bob@example.net", "bob-pw"),
        "OK\t1\tuser=bob@example.net\n"
    );
    drop(d);
    // A user name of filter syntax matches only the entry of that name.
    let (d, _) = daemon(&conf(dir.path(), &slapd.url(), ""), &[]);
    assert_eq!(
        d.ask("m*(x)\\", "odd-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    for (user, password) in [
        ("*", "alice-pw"),
        ("ali*", "alice-pw"),
        ("*)(uid=alice", "alice-pw"),
        ("alice)(|(uid=*", "alice-pw"),
        ("m*", "odd-pw"),
        ("m\\2a\\28x\\29\\5c", "odd-pw"),
    ] {
        assert_eq!(d.ask(user, password, "smtp", ""), "NO", "{user:?}");
    }
    // What went to the server was escaped: slapd logged no filter with a bare *.
    eprintln!("filter syntax in user names: escaped, matched only themselves");
}

#[test]
fn a_changed_password_takes_effect_at_once() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut slapd = logged_slapd(&dir.path().join("slapd"));
    let alice = format!("uid=alice,{PEOPLE}");
    let (d, auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &["-c"]);
    for _ in 0..5 {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    }
    // The cache: one bind for five successes (each still searched, which returns the
    // entry's change stamps).
    assert_eq!(slapd.binds_as(&alice), 1, "{}", slapd.log());
    assert_eq!(
        d.ask("alice", "wrong", "smtp", ""),
        "NO",
        "another password: to the directory"
    );
    assert_eq!(slapd.binds_as(&alice), 2);
    change_alice_password(
        |new| slapd.passwd("alice", new),
        &d,
        &auth,
        "alice-pw",
        "changed-pw",
    );
    // A directory that cannot be searched is no cached success.
    slapd.stop();
    assert_eq!(
        d.ask("alice", "changed-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
}

#[test]
fn an_unknown_user_costs_the_directory_the_bind_a_wrong_password_does() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = logged_slapd(&dir.path().join("slapd"));
    let (d, _auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &[]);
    let binds = |slapd: &Slapd| slapd.log().matches("BIND dn=").count();
    // Warm up: the search connection binds as ldap_bind_dn once.
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    let before = binds(&slapd);
    assert_eq!(d.ask("alice", "wrong", "smtp", ""), "NO");
    let wrong = binds(&slapd) - before;
    assert_eq!(d.ask("nobody-here", "wrong", "smtp", ""), "NO");
    let unknown = binds(&slapd) - before - wrong;
    assert_eq!((wrong, unknown), (1, 1), "{}", slapd.log());
    let log = slapd.log();
    let decoy = log
        .lines()
        .filter(|l| l.contains("BIND dn=\"cn=saslauthd-rs decoy "))
        .count();
    assert_eq!(decoy, 1, "the unknown user's bind is the decoy's: {log}");
    assert!(log.contains(&format!(",{PEOPLE}\" method=128")));
    eprintln!("a wrong password: {wrong} bind; an unknown user: {unknown} bind (the decoy)");
}

#[test]
fn cache_flush_of_a_user_sends_the_next_login_to_the_directory() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = logged_slapd(&dir.path().join("slapd"));
    let alice = format!("uid=alice,{PEOPLE}");
    let bob = format!("uid=bob,{PEOPLE}");
    let (d, _auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &["-c"]);
    let ctl = |args: &[&str]| {
        let (code, out, err) = common::ctl(&d.run_dir, args);
        assert_eq!(code, Some(0), "{err}");
        out
    };
    for _ in 0..3 {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
        assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK");
    }
    assert_eq!((slapd.binds_as(&alice), slapd.binds_as(&bob)), (1, 1));
    assert_eq!(
        ctl(&["cache", "flush", "alice"]),
        "ok: 1 cache entries of alice dropped\n"
    );
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK");
    assert_eq!(
        (slapd.binds_as(&alice), slapd.binds_as(&bob)),
        (2, 1),
        "alice's login went to the directory, bob's stayed cached"
    );
    assert_eq!(ctl(&["cache", "flush"]), "ok: 2 cache entries dropped\n");
    assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK");
    assert_eq!(slapd.binds_as(&bob), 2);
    // The metrics saw it: 9 logins, 4 went to the directory.
    let metrics = ctl(&["metrics"]);
    for line in [
        "saslauthd_rs_cache_lookups_total{result=\"hit\"} 5",
        "saslauthd_rs_cache_lookups_total{result=\"miss\"} 4",
        "saslauthd_rs_cache_entries 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
}

#[test]
fn failover_under_load_and_a_directory_that_is_down() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_slapd(&dir.path().join("one"));
    let mut second = start_slapd(&dir.path().join("two"));
    let servers = format!("{} {}", first.url(), second.url());
    let (d, auth) = daemon(&conf(dir.path(), &servers, ""), &[]);
    let socket = d.socket.clone();
    // Load: three clients, right and wrong passwords; every answer must be the right one.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, wrong_answers, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let slowest = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for client in 0..3u64 {
        let (stop, ok, wrong_answers, errors, slowest, socket) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&wrong_answers),
            Arc::clone(&errors),
            Arc::clone(&slowest),
            socket.clone(),
        );
        load.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let right = !(n + client).is_multiple_of(3);
                let password = if right { "alice-pw" } else { "not-it" };
                let started = Instant::now();
                let reply = ask_at(&socket, "alice", password, "smtp", "");
                let took = started.elapsed().as_millis() as u64;
                slowest.fetch_max(took, Ordering::Relaxed);
                match (right, reply.as_str()) {
                    (true, "OK") | (false, "NO") => ok.fetch_add(1, Ordering::Relaxed),
                    (_, "NO internal mechanism failure") => errors.fetch_add(1, Ordering::Relaxed),
                    _ => wrong_answers.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = ok.load(Ordering::Relaxed);
    // The first server goes away while the load runs.
    first.stop();
    std::thread::sleep(Duration::from_millis(2500));
    let during = ok.load(Ordering::Relaxed) - before;
    assert!(during > 10, "the second server took over: {during} answers");
    // It comes back, the second goes: the first serves again.
    first.restart();
    std::thread::sleep(Duration::from_millis(1500));
    second.stop();
    let mark = ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(2500));
    let after = ok.load(Ordering::Relaxed) - mark;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let slowest = slowest.load(Ordering::Relaxed);
    eprintln!(
        "failover: {} right answers, {} wrong, {} internal errors; {during} answers in the \
         2.5 s after the first server stopped, {after} after the second did; slowest reply \
         {slowest} ms",
        ok.load(Ordering::Relaxed),
        wrong_answers.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    assert_eq!(
        wrong_answers.load(Ordering::Relaxed),
        0,
        "no answer was wrong"
    );
    assert!(after > 10, "the first server serves again: {after}");
    assert!(
        slowest < 4500,
        "every reply within the deadline: {slowest} ms"
    );

    // Both down: an internal error, at once and within the deadline, never OK or a plain NO.
    first.stop();
    let started = Instant::now();
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    assert!(started.elapsed() < Duration::from_millis(4500));
    // The Dovecot socket closes the connection (Postfix: 454, try again later).
    let mut c = Client::postfix(&auth);
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("alice", "alice-pw")
    ));
    assert!(c.closed(), "closed on a directory outage");
    assert!(
        d.log_text().contains("LDAP server unusable"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_server_that_stops_answering_costs_a_bounded_pause() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = start_slapd(&dir.path().join("one"));
    let second = start_slapd(&dir.path().join("two"));
    let servers = format!("{} {}", first.url(), second.url());
    let (d, _) = daemon(&conf(dir.path(), &servers, ""), &[]);
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    // SIGSTOP: the kernel still accepts, slapd answers nothing.
    first.pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            d.ask("alice", "alice-pw", "smtp", ""),
            "OK",
            "{}",
            d.log_text()
        );
        assert_eq!(d.ask("alice", "bad", "smtp", ""), "NO");
        slowest = slowest.max(started.elapsed());
    }
    first.resume();
    // Alone and stopped: a bounded internal error.
    let (lone, _) = daemon(&conf(dir.path(), &first.url(), ""), &[]);
    first.pause();
    let started = Instant::now();
    assert_eq!(
        lone.ask("alice", "alice-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    let alone = started.elapsed();
    first.resume();
    eprintln!("a stopped slapd: slowest round with a second server {slowest:?}; alone, answered in {alone:?}");
    assert!(alone < Duration::from_millis(4500));
}

#[test]
fn the_same_answers_as_cyrus_saslauthd() {
    if !ldap::available() {
        return;
    }
    if common::peer("saslauthd").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    for (name, extra) in [
        // Our own key (its default spelled out): Cyrus must start on the same file too.
        ("bind", "ldap_follow_changes: yes\n".to_string()),
        (
            "fastbind",
            format!("ldap_auth_method: fastbind\nldap_filter: uid=%U,{PEOPLE}\n"),
        ),
        ("custom", "ldap_auth_method: custom\n".to_string()),
        ("tokens", "ldap_filter: (mail=%U@%r)\n".to_string()),
    ] {
        let conf = conf(dir.path(), &slapd.url(), &extra);
        let (ours, _) = daemon(&conf, &[]);
        let theirs = cyrus_ldap(&conf, &dir.path().join(format!("cyrus-{name}")));
        let mux = theirs.socket.clone();
        let mut same = 0;
        for (user, password, realm) in [
            ("alice", "alice-pw", "example.org"),
            ("alice", "wrong", "example.org"),
            ("alice", "alice-pw", "example.net"),
            ("bob", "bob-pw", "example.net"),
            ("bob", "bob-pw", "example.org"),
            ("carol", "hashed-pw", "example.org"),
            ("carol", "hashed-px", "example.org"),
            ("nobody", "x", "example.org"),
            ("*", "alice-pw", "example.org"),
            ("m*(x)\\", "odd-pw", "example.org"),
        ] {
            let a = ask_at(&ours.socket, user, password, "smtp", realm);
            let b = ask_at(&mux, user, password, "smtp", realm);
            let verdict = |r: &str| r.split(' ').next().unwrap_or_default().to_owned();
            assert_eq!(
                verdict(&a),
                verdict(&b),
                "{name}: {user}/{password}/{realm}: ours {a:?}, Cyrus {b:?}"
            );
            same += 1;
        }
        drop(theirs);
        eprintln!("{name}: {same} requests, the same OK/NO as Cyrus saslauthd -a ldap");
    }
}

#[test]
fn what_a_bad_saslauthd_conf_gets() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    let start = |conf: &Path| {
        Command::new(common::DAEMON)
            .args(["-f", "-a", "ldap", "-O"])
            .arg(conf)
            .arg("-m")
            .arg(dir.path().join("run"))
            .output()
            .unwrap()
    };
    // A typo: refused, naming the key and the line.
    let typo = conf(dir.path(), &slapd.url(), "ldap_fliter: (uid=%u)\n");
    let out = start(&typo);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 6: unknown key ldap_fliter"), "{err}");
    // No such file.
    let out = start(&dir.path().join("missing.conf"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the LDAP configuration"));
    // A wrong password for ldap_bind_dn: every request an internal error, the log says why.
    let bad_bind = dir.path().join("bad-bind.conf");
    std::fs::write(
        &bad_bind,
        format!(
            "ldap_servers: {}\nldap_search_base: {PEOPLE}\nldap_bind_dn: {SEARCHER}\nldap_password: wrong\n",
            slapd.url()
        ),
    )
    .unwrap();
    let (d, _) = daemon(&bad_bind, &[]);
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    assert!(
        d.log_text()
            .contains("bind as ldap_bind_dn cn=saslauthd,dc=example,dc=org refused"),
        "{}",
        d.log_text()
    );
    assert!(!d.log_text().contains("alice-pw") && !d.log_text().contains(": wrong"));
    // Nothing listens: an internal error within the deadline.
    let port = common::free_port();
    let (d, _) = daemon(
        &conf(dir.path(), &format!("ldap://127.0.0.1:{port}/"), ""),
        &[],
    );
    let started = Instant::now();
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A server that demands a client certificate (`TLSVerifyClient demand`): `ldap_tls_cert`
/// and `ldap_tls_key` give it one, over ldaps:// and StartTLS; without them, an internal
/// error. The CA comes from an `ldap_tls_cacert_dir` laid out as OpenSSL's `c_rehash` lays it
/// out (the subject hash's name only), and Cyrus's saslauthd answers alike on the same file.
#[test]
fn client_certificates_and_a_hashed_ca_directory() {
    if !ldap::available() || common::peer("openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (ca, cert, key) = certificates(&pki, "right", "IP:127.0.0.1,DNS:localhost");
    let (client_cert, client_key) =
        issue(&pki, "right", "saslauthd", "extendedKeyUsage=clientAuth");
    let slapd = with_users(|users| {
        Slapd::start(&dir.path().join("slapd"), users, Some((&ca, &cert, &key)))
    })
    .with_global("TLSVerifyClient demand");
    let hash = openssl(&["x509", "-hash", "-noout", "-in", &path_str(&ca)]);
    let ca_dir = dir.path().join("ca-dir");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&ca, ca_dir.join(format!("{}.0", hash.trim()))).unwrap();
    let tls = |client: bool| {
        let mut lines = format!(
            "ldap_tls_check_peer: yes\nldap_tls_cacert_dir: {}\n",
            ca_dir.display()
        );
        if client {
            lines += &format!(
                "ldap_tls_cert: {}\nldap_tls_key: {}\n",
                client_cert.display(),
                client_key.display()
            );
        }
        lines
    };
    let ldaps = format!("ldaps://127.0.0.1:{}/", slapd.ldaps_port);
    for (servers, start_tls) in [(&ldaps, ""), (&slapd.url(), "ldap_start_tls: yes\n")] {
        let with = conf(dir.path(), servers, &format!("{start_tls}{}", tls(true)));
        let (d, _) = daemon(&with, &[]);
        let what = format!("{servers} {start_tls}");
        answers(
            &d,
            &[("alice", "alice-pw", "OK"), ("alice", "wrong", "NO")],
            || what.clone(),
        );
        drop(d);
        let without = conf(dir.path(), servers, &format!("{start_tls}{}", tls(false)));
        let (d, _) = daemon(&without, &[]);
        assert_eq!(
            d.ask("alice", "alice-pw", "smtp", ""),
            "NO internal mechanism failure",
            "{what}without a client certificate"
        );
    }
    let with = conf(dir.path(), &ldaps, &tls(true));
    let table = [("alice", "alice-pw", "OK"), ("alice", "wrong", "NO")];
    cyrus_agrees(
        &[],
        &with,
        &dir.path().join("cyrus"),
        &table,
        "slapd demanding a client certificate",
    );
}

#[test]
fn start_tls_and_ldaps_check_the_server() {
    if !ldap::available() || common::peer("openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(
        &dir.path().join("pki"),
        "right",
        "IP:127.0.0.1,DNS:localhost",
    );
    let (_, other_cert, other_key) =
        certificates(&dir.path().join("pki"), "wrong", "DNS:ldap.example.org");
    let other_ca = dir.path().join("pki/wrong-ca.pem");
    let (good, misnamed) = with_users(|users| {
        let good = Slapd::start(&dir.path().join("good"), users, Some((&ca, &cert, &key)));
        let misnamed = Slapd::start(
            &dir.path().join("misnamed"),
            users,
            Some((&other_ca, &other_cert, &other_key)),
        );
        (good, misnamed)
    });
    let check = |servers: String, tls: String| {
        let conf = conf(dir.path(), &servers, &tls);
        let (d, _) = daemon(&conf, &[]);
        let reply = d.ask("alice", "alice-pw", "smtp", "");
        (reply, d.log_text())
    };
    let ca_line = |ca: &Path| {
        format!(
            "ldap_tls_check_peer: yes\nldap_tls_cacert_file: {}\n",
            ca.display()
        )
    };
    // StartTLS and ldaps://, the name and the chain checked.
    let (reply, log) = check(good.url(), format!("ldap_start_tls: yes\n{}", ca_line(&ca)));
    assert_eq!(reply, "OK", "StartTLS: {log}");
    let (reply, log) = check(
        format!("ldaps://127.0.0.1:{}/", good.ldaps_port),
        ca_line(&ca),
    );
    assert_eq!(reply, "OK", "ldaps: {log}");
    // A CA that did not sign the server's certificate: refused.
    let (reply, _) = check(
        format!("ldaps://127.0.0.1:{}/", good.ldaps_port),
        ca_line(&other_ca),
    );
    assert_eq!(reply, "NO internal mechanism failure", "an unknown CA");
    // A certificate for another name: refused when the peer is checked, accepted when not
    // (Cyrus's default, ldap_tls_check_peer: no).
    let (reply, log) = check(
        format!("ldaps://127.0.0.1:{}/", misnamed.ldaps_port),
        ca_line(&other_ca),
    );
    assert_eq!(reply, "NO internal mechanism failure", "a wrong host name");
    assert!(log.contains("LDAP server unusable"), "{log}");
    let (reply, _) = check(
        format!("ldaps://127.0.0.1:{}/", misnamed.ldaps_port),
        String::new(),
    );
    assert_eq!(reply, "OK", "ldap_tls_check_peer: no");
    // StartTLS refused by the server's name too.
    let (reply, _) = check(
        misnamed.url(),
        format!("ldap_start_tls: yes\n{}", ca_line(&other_ca)),
    );
    assert_eq!(reply, "NO internal mechanism failure");
    eprintln!(
        "TLS: StartTLS and ldaps with the CA checked; an unknown CA and a wrong host name refused"
    );
}

/// The `[ldap]` table of the TOML file instead of saslauthd.conf; two entries for one name
/// (no user is chosen); a group the user must be in, by attribute and by filter.
#[test]
fn toml_settings_duplicates_and_groups() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    // A second entry with alice's uid elsewhere, and a group holding bob only.
    slapd.add(&format!(
        "dn: ou=others,dc=example,dc=org\nobjectClass: organizationalUnit\nou: others\n\n\
         dn: uid=twin,ou=others,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: twin\nuid: carol\ncn: twin\nsn: twin\nuserPassword: twin-pw\n\n\
         dn: cn=mailers,dc=example,dc=org\nobjectClass: groupOfUniqueNames\ncn: mailers\nuniqueMember: uid=bob,{PEOPLE}\n\n"
    ));
    let toml = dir.path().join("saslauthd-rs.toml");
    std::fs::write(
        &toml,
        format!(
            "passdb = \"ldap\"\n\n[ldap]\nldap_servers = \"{}\"\nldap_search_base = \"dc=example,dc=org\"\n\
             ldap_bind_dn = \"{SEARCHER}\"\nldap_password = \"{SEARCHER_PW}\"\nldap_timeout = 2\n",
            slapd.url()
        ),
    )
    .unwrap();
    let args: Vec<OsString> = vec!["--config".into(), toml.clone().into()];
    let d = Daemon::spawn(tempfile::tempdir().unwrap(), &args, &[]);
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    assert_eq!(d.ask("twin", "twin-pw", "smtp", ""), "OK");
    // carol is in ou=people and, as a second uid, in ou=others: two entries, no user.
    assert_eq!(d.ask("carol", "hashed-pw", "smtp", ""), "NO");
    assert!(d.log_text().contains("2 entries match"), "{}", d.log_text());
    drop(d);
    // A typo in the table is named at start.
    std::fs::write(
        &toml,
        "passdb = \"ldap\"\n[ldap]\nldap_severs = \"ldap://x/\"\n",
    )
    .unwrap();
    let out = Command::new(common::DAEMON)
        .args(["--check-config", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("unknown key ldap_severs"), "{err}");
    // Groups: by attribute (the group's uniqueMember holds the DN) and by filter.
    for group in [
        "ldap_group_dn: cn=mailers,dc=example,dc=org\n".to_string(),
        "ldap_group_match_method: filter\nldap_group_search_base: dc=example,dc=org\n\
         ldap_group_filter: (&(cn=mailers)(uniqueMember=%D))\n"
            .to_string(),
    ] {
        let (d, _) = daemon(&conf(dir.path(), &slapd.url(), &group), &[]);
        assert_eq!(
            d.ask("bob", "bob-pw", "smtp", ""),
            "OK",
            "{group}: {}",
            d.log_text()
        );
        assert_eq!(
            d.ask("alice", "alice-pw", "smtp", ""),
            "NO",
            "{group}: not a member"
        );
        assert_eq!(d.ask("bob", "wrong", "smtp", ""), "NO");
    }
}

/// With `custom` and a cleartext password attribute, the Dovecot socket offers CRAM-MD5 and
/// SCRAM too, and runs them over the secret the directory hands out; with `bind`, only PLAIN
/// and LOGIN.
#[test]
fn cram_and_scram_from_a_cleartext_attribute() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    let (d, auth) = daemon(
        &conf(dir.path(), &slapd.url(), "ldap_auth_method: custom\n"),
        &[],
    );
    let c = Client::postfix(&auth);
    for mech in ["MECH\tCRAM-MD5", "MECH\tSCRAM-SHA-256", "MECH\tPLAIN"] {
        assert!(c.handshake.contains(mech), "{mech}: {}", c.handshake);
    }
    let mut c = Client::postfix(&auth);
    let reply = common::dovecot::cram(&mut c, 1, "alice", "alice-pw");
    assert!(
        reply.starts_with("OK\t1\t"),
        "CRAM-MD5: {reply} {}",
        d.log_text()
    );
    let reply = common::dovecot::cram(&mut c, 2, "alice", "wrong");
    assert!(reply.starts_with("FAIL\t2\t"), "{reply}");
    let reply = common::dovecot::scram(&mut c, 3, true, "alice", "alice-pw", false);
    assert!(reply.starts_with("OK\t3\t"), "SCRAM-SHA-256: {reply}");
    let reply = common::dovecot::scram(&mut c, 4, true, "alice", "nope", false);
    assert!(reply.starts_with("FAIL\t4\t"), "{reply}");
    // A user whose value is hashed has no cleartext: CRAM-MD5 fails as a wrong password would.
    let reply = common::dovecot::cram(&mut c, 5, "carol", "hashed-pw");
    assert!(reply.starts_with("FAIL\t5\t"), "{reply}");
    let reply = common::dovecot::cram(&mut c, 6, "nobody", "x");
    assert!(reply.starts_with("FAIL\t6\t"), "{reply}");
    drop(d);
    let (_d, auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &[]);
    let c = Client::postfix(&auth);
    assert!(
        !c.handshake.contains("CRAM-MD5") && c.handshake.contains("MECH\tPLAIN"),
        "{}",
        c.handshake
    );
}

/// A server with the password policy overlay says an account is locked: that is a disabled
/// account (Dovecot's `code=user_disabled`), even with the right password.
#[test]
fn a_locked_account_is_disabled() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = Slapd::start_with_lockout(
        &dir.path().join("slapd"),
        &[("erin", "erin-pw", "erin@example.org")],
    );
    let (d, auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &[]);
    assert_eq!(
        d.ask("erin", "erin-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    assert_eq!(d.ask("erin", "wrong1", "smtp", ""), "NO");
    assert_eq!(d.ask("erin", "wrong2", "smtp", ""), "NO");
    // Locked now (pwdMaxFailure 2): the right password no longer binds.
    refused_as_locked(&d, &auth, "erin", "erin-pw");
}

/// `user`'s right `password` is refused on both sockets as a disabled account.
fn refused_as_locked(d: &Daemon, auth: &Path, user: &str, password: &str) {
    assert_eq!(d.ask(user, password, "smtp", ""), "NO", "{}", d.log_text());
    assert!(
        d.log_text().contains("reason=account disabled"),
        "{}",
        d.log_text()
    );
    let reply = dovecot_plain(auth, user, password);
    assert!(reply.contains("code=user_disabled"), "{reply}");
}

/// A directory that restarts drops the daemon's pooled connections: the next request
/// reconnects and is answered, not failed.
#[test]
fn a_restarted_server_costs_no_request() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut slapd = start_slapd(&dir.path().join("slapd"));
    let (d, auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &["-c"]);
    for round in 0..3 {
        assert_eq!(
            d.ask("alice", "alice-pw", "smtp", ""),
            "OK",
            "round {round}"
        );
        assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK", "round {round}");
        assert!(dovecot_plain(&auth, "alice", "alice-pw").starts_with("OK"));
        slapd.restart();
    }
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    assert_eq!(d.ask("bob", "wrong", "smtp", ""), "NO");
    assert!(!d.log_text().contains("auth error"), "{}", d.log_text());
}

/// [`daemon`] once it follows the directory's changes: alice's login starts the stream, and
/// her next one, once the stream is live, is remembered.
fn following(conf: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let (d, auth) = daemon(conf, extra);
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "OK",
        "{}",
        d.log_text()
    );
    d.wait_for_log("following the directory's changes", 1);
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    (d, auth)
}

/// The searches for `uid` slapd has seen (with operations logged).
fn searches_for(slapd: &Slapd, uid: &str) -> usize {
    slapd
        .log()
        .matches(&format!("filter=\"(uid={uid})\""))
        .count()
}

#[test]
fn followed_changes_spare_the_search_and_reach_the_next_request() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut slapd =
        with_users(|users| Slapd::start_with_syncprov(&dir.path().join("slapd"), users));
    slapd.log_operations();
    let alice = format!("uid=alice,{PEOPLE}");
    let conf = conf(dir.path(), &slapd.url(), "");

    // Without the cache: the first request starts following; once the stream is up, a
    // login costs the directory one bind and no search, and an unknown user the same.
    let (d, _auth) = daemon(&conf, &[]);
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    d.wait_for_log("following the directory's changes", 1);
    let (searched, bound) = (searches_for(&slapd, "alice"), slapd.binds_as(&alice));
    for _ in 0..5 {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    }
    assert_eq!(d.ask("alice", "wrong", "smtp", ""), "NO");
    assert_eq!(
        searches_for(&slapd, "alice") - searched,
        1,
        "{}",
        slapd.log()
    );
    assert_eq!(slapd.binds_as(&alice) - bound, 6);
    let decoys = |slapd: &Slapd| {
        slapd
            .log()
            .matches("BIND dn=\"cn=saslauthd-rs decoy ")
            .count()
    };
    for _ in 0..3 {
        assert_eq!(d.ask("nobody-here", "x", "smtp", ""), "NO");
    }
    assert_eq!(searches_for(&slapd, "nobody-here"), 1);
    assert_eq!(decoys(&slapd), 3, "an unknown user still costs the bind");

    // A second entry that the filter finds too: the next request after the push sees both
    // (no user). (slapd pushes the change after it has answered the write: a request in
    // those few milliseconds may still use the DN it knew.)
    after_the_push(&d, || {
        slapd.add(&format!(
            "dn: cn=alice again,{PEOPLE}\nobjectClass: inetOrgPerson\ncn: alice again\nsn: a\nuid: alice\nuserPassword: alice-pw\n"
        ))
    });
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "NO",
        "{}",
        d.log_text()
    );
    drop(d);

    // With the cache: no search and no bind for a password that succeeded, until something
    // under the base changes; a new password refused old at once.
    let ldif = format!("dn: cn=alice again,{PEOPLE}\nchangetype: delete\n");
    slapd.modify(&ldif);
    let (d, auth) = following(&conf, &["-c"]);
    let (searched, bound) = (searches_for(&slapd, "alice"), slapd.binds_as(&alice));
    for _ in 0..10 {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
        assert!(dovecot_plain(&auth, "alice", "alice-pw").starts_with("OK"));
    }
    assert_eq!(
        (
            searches_for(&slapd, "alice") - searched,
            slapd.binds_as(&alice) - bound
        ),
        (0, 0),
        "20 logins from memory: {}",
        slapd.log()
    );
    // The next request after the server has pushed the change (slapd pushes it after it
    // has answered the write).
    let mut push = Duration::ZERO;
    let refused = change_alice_password(
        |new| push = after_the_push(&d, || slapd.passwd("alice", new)),
        &d,
        &auth,
        "alice-pw",
        "changed-pw",
    );
    eprintln!("slapd pushed the change {push:?} after ldappasswd returned; the old password refused {refused:?} after ldappasswd began");

    // A server that stops answering: within the grace nothing is served from memory.
    slapd.pause();
    let paused = Instant::now();
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        d.ask("alice", "changed-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
    eprintln!("a stopped server: an error after {:?}", paused.elapsed());
    slapd.resume();
    // Back: the stream is opened again and memory starts afresh.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.ask("alice", "changed-pw", "smtp", "") != "OK" {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A server that is gone: no cached success once the daemon sees its stream close.
    slapd.stop();
    d.wait_for_log("the change stream ended", 1);
    assert_eq!(
        d.ask("alice", "changed-pw", "smtp", ""),
        "NO internal mechanism failure"
    );
}

/// A directory that writes to a user's entry when the user binds (the password policy's
/// failure time, its lock) keeps every other user's remembered success: only that user's
/// next login goes back to the directory, and the lock is seen there at once. A change to an
/// attribute the filter tests still forgets everything, and a changed password is refused at
/// the next request.
#[test]
fn a_write_to_one_users_entry_forgets_that_users_success_only() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut slapd = with_users(|users| {
        Slapd::start_with_lockout(&dir.path().join("slapd"), users).with_syncprov()
    });
    slapd.log_operations();
    let (alice, bob) = (format!("uid=alice,{PEOPLE}"), format!("uid=bob,{PEOPLE}"));
    let conf = conf(
        dir.path(),
        &slapd.url(),
        "ldap_filter: (|(uid=%u)(mail=%u))\n",
    );
    // Both successes remembered while the stream is live.
    let (d, auth) = following(&conf, &["-c"]);
    assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK");
    let searched = |uid: &str| {
        let filter = format!("filter=\"(|(uid={uid})(mail={uid}))\"");
        slapd.log().matches(&filter).count()
    };
    let costs = |dn: &str, uid: &str| (searched(uid), slapd.binds_as(dn));
    let alice_before = costs(&alice, "alice");
    let one_entry = |d: &Daemon| d.log_text().matches("to one user's entry").count();

    // A wrong password for bob: slapd writes pwdFailureTime to bob's entry and pushes it.
    after_the_push(&d, || assert_eq!(d.ask("bob", "wrong", "smtp", ""), "NO"));
    assert_eq!(one_entry(&d), 1, "{}", d.log_text());
    // Bob's right password goes to the directory (a bind; the search is remembered), and
    // the success clears the failure time: another write to bob's entry.
    let bob_before = costs(&bob, "bob");
    after_the_push(&d, || assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK"));
    assert_eq!(costs(&bob, "bob"), (bob_before.0, bob_before.1 + 1));
    assert_eq!(one_entry(&d), 2, "{}", d.log_text());
    // Remembered again, then served from memory.
    assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK");
    let bob_before = costs(&bob, "bob");
    assert_eq!(d.ask("bob", "bob-pw", "smtp", ""), "OK");
    assert!(dovecot_plain(&auth, "bob", "bob-pw").starts_with("OK"));
    assert_eq!(costs(&bob, "bob"), bob_before, "bob from memory");

    // Two wrong passwords lock bob (pwdMaxFailure 2): his remembered success is forgotten
    // with the write, and the directory says locked.
    for wrong in ["wrong1", "wrong2"] {
        after_the_push(&d, || assert_eq!(d.ask("bob", wrong, "smtp", ""), "NO"));
    }
    refused_as_locked(&d, &auth, "bob", "bob-pw");

    // All the while alice's success stood, and cost the directory nothing.
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    assert!(dovecot_plain(&auth, "alice", "alice-pw").starts_with("OK"));
    assert_eq!(
        costs(&alice, "alice"),
        alice_before,
        "alice from memory: {}",
        slapd.log()
    );
    let one_entry_writes = one_entry(&d);
    assert!(one_entry_writes >= 4, "{}", d.log_text());

    // Bob's mail, which the filter tests, becomes "alice": that forgets everything, and the
    // next request for alice finds two entries.
    let set_bobs_mail = |mail: &str| {
        slapd.modify(&format!(
            "dn: {bob}\nchangetype: modify\nreplace: mail\nmail: {mail}\n"
        ))
    };
    after_the_push(&d, || set_bobs_mail("alice"));
    assert_eq!(one_entry(&d), one_entry_writes, "{}", d.log_text());
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "NO",
        "{}",
        d.log_text()
    );
    after_the_push(&d, || set_bobs_mail("bob@example.net"));
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");

    // A changed password (a write to alice's entry alone) is refused at the next request.
    change_alice_password(
        |new| {
            after_the_push(&d, || slapd.passwd("alice", new));
        },
        &d,
        &auth,
        "alice-pw",
        "changed-pw",
    );
}

/// A filter may test an attribute that `ldap_bind_dn` can search but not read (an ACL's
/// `search` level): the change stream does not see it, so a write to such an entry forgets
/// everything, and a user the filter no longer finds is refused at the next request.
#[test]
fn a_filter_attribute_the_searcher_cannot_read_still_reaches_the_next_request() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = with_users(|users| {
        Slapd::start_with_syncprov(&dir.path().join("slapd"), users).with_acl(&format!(
            "access to attrs=employeeType by dn.exact=\"{SEARCHER}\" search by * none"
        ))
    });
    let alice = format!("uid=alice,{PEOPLE}");
    let employee_type = |value: &str| {
        slapd.modify(&format!(
            "dn: {alice}\nchangetype: modify\nreplace: employeeType\nemployeeType: {value}\n"
        ))
    };
    employee_type("mail");
    let filter = "ldap_filter: (&(uid=%u)(employeeType=mail))\n";
    let (d, _auth) = following(&conf(dir.path(), &slapd.url(), filter), &[]);
    after_the_push(&d, || employee_type("none"));
    assert_eq!(
        d.ask("alice", "alice-pw", "smtp", ""),
        "NO",
        "{}",
        d.log_text()
    );
    assert!(
        !d.log_text().contains("to one user's entry"),
        "{}",
        d.log_text()
    );
    after_the_push(&d, || employee_type("mail"));
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
}

#[test]
fn a_directory_that_does_not_offer_its_changes_is_searched_every_time() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = logged_slapd(&dir.path().join("slapd"));
    let (d, _auth) = daemon(&conf(dir.path(), &slapd.url(), ""), &[]);
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    d.wait_for_log("does not let saslauthd-rs follow its changes", 1);
    for _ in 0..3 {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    }
    assert_eq!(searches_for(&slapd, "alice"), 4);
    // ldap_follow_changes: no asks nothing of the kind.
    let (d, _auth) = daemon(
        &conf(dir.path(), &slapd.url(), "ldap_follow_changes: no\n"),
        &[],
    );
    assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.log_text().contains("follow its changes"),
        "{}",
        d.log_text()
    );
}

/// A request with no realm, to a daemon without `--realm`: `%r` is `ldap_default_realm`,
/// else empty, as in Cyrus's (never the host name, which is the sasldb default).
#[test]
fn an_empty_realm_stays_empty_as_in_cyrus() {
    if !ldap::available() {
        return;
    }
    if common::peer("saslauthd").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("slapd"));
    // The realm glued to the name: only an empty one finds the entry.
    for (extra, expected) in [
        ("ldap_filter: (uid=%U%r)\n", "OK"),
        ("ldap_filter: (uid=%U%r)\nldap_default_realm: x\n", "NO"),
    ] {
        let conf = conf(dir.path(), &slapd.url(), extra);
        let ours = Daemon::spawn(
            tempfile::tempdir().unwrap(),
            &["-a".into(), "ldap".into(), "-O".into(), conf.clone().into()],
            &[],
        );
        let theirs = cyrus_ldap(&conf, &dir.path().join("cyrus-realm"));
        let verdict = |r: String| r.split(' ').next().unwrap_or_default().to_owned();
        let (a, b) = (
            verdict(ours.ask("alice", "alice-pw", "smtp", "")),
            verdict(ask_at(&theirs.socket, "alice", "alice-pw", "smtp", "")),
        );
        assert_eq!((a.as_str(), b.as_str()), (expected, expected), "{extra}");
        drop(theirs);
    }
}

/// A 389 Directory Server in `dir`/389 with alice and frank.
fn start_389(dir: &Path) -> DirSrv {
    DirSrv::start(
        &dir.join("389"),
        &[
            ("alice", "alice-pw", "alice@example.org"),
            ("frank", "frank-pw", "frank@example.org"),
        ],
    )
}

/// frank's `nsAccountLock`: `true` inactivates the account, `false` lifts that.
fn lock_frank(ds: &DirSrv, value: &str) {
    ds.modify(&format!(
        "dn: uid=frank,{PEOPLE}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: {value}\n"
    ));
}

/// 389 Directory Server refuses the bind of an account with `nsAccountLock: true`
/// (unwillingToPerform, "Account inactivated", whatever the password): a disabled account,
/// as with ppolicy, and a login again as soon as the lock is lifted. Cyrus's saslauthd
/// answers the same OK/NO on the same saslauthd.conf.
#[test]
fn a_389_directory_server_inactivated_account_is_disabled() {
    if !dirsrv::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ds = start_389(dir.path());
    let conf = conf(dir.path(), &ds.url(), "");
    let (d, auth) = daemon(&conf, &[]);
    assert_eq!(
        d.ask("frank", "frank-pw", "smtp", ""),
        "OK",
        "{}\n{}",
        d.log_text(),
        ds.log()
    );
    lock_frank(&ds, "true");
    let table = [
        ("alice", "alice-pw", "OK"),
        ("alice", "wrong", "NO"),
        ("frank", "frank-pw", "NO"),
        ("frank", "wrong", "NO"),
        ("nobody", "x", "NO"),
    ];
    answers(&d, &table, || ds.log());
    assert!(
        d.log_text().contains("reason=account disabled"),
        "{}",
        d.log_text()
    );
    let reply = dovecot_plain(&auth, "frank", "frank-pw");
    assert!(reply.contains("code=user_disabled"), "{reply}");
    assert!(dovecot_plain(&auth, "alice", "alice-pw").starts_with("OK"));
    cyrus_agrees(&[], &conf, &dir.path().join("cyrus-389"), &table, "389 DS");
    lock_frank(&ds, "false");
    assert_eq!(
        d.ask("frank", "frank-pw", "smtp", ""),
        "OK",
        "the lock lifted"
    );
}

/// Runs `change` (a write to the directory) and waits until the daemon has been pushed a
/// change on its stream (its debug log says so; 5 s at most). Returns how long after
/// `change` returned that came.
fn after_the_push(d: &Daemon, change: impl FnOnce()) -> Duration {
    let pushed = || {
        d.log_text()
            .matches("a change under the search base")
            .count()
    };
    let before = pushed();
    change();
    common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(1),
        || pushed() != before,
        || format!("no change pushed: {}", d.log_text()),
    )
}

/// 389 Directory Server's Content Synchronization plugin offers the changes as slapd's
/// syncprov does: the daemon follows them, and with `-c` a repeated success costs the
/// directory nothing until something changes; then a password changed by the Directory
/// Manager, and an account inactivated, are refused at the next request after 389 DS has
/// pushed the change (which it does after it has answered the write: for those few
/// milliseconds a remembered success stands).
#[test]
fn followed_changes_on_389_directory_server() {
    if !dirsrv::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ds = start_389(dir.path()).with_content_sync();
    // Learnt once the stream is live.
    let (d, auth) = following(&conf(dir.path(), &ds.url(), ""), &["-c"]);
    assert_eq!(d.ask("frank", "frank-pw", "smtp", ""), "OK");
    let alice = format!("uid=alice,{PEOPLE}");
    let bound = ds.binds_as(&alice);
    assert!(bound >= 1, "the access log shows alice's bind");
    for _ in 0..5 {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK");
        assert_eq!(d.ask("frank", "frank-pw", "smtp", ""), "OK");
    }
    assert_eq!(ds.binds_as(&alice), bound, "5 logins from memory");
    let mut push = Duration::ZERO;
    let set_password = |new: &str| {
        push = after_the_push(&d, || {
            ds.modify(&format!(
                "dn: uid=alice,{PEOPLE}\nchangetype: modify\nreplace: userPassword\nuserPassword: {new}\n"
            ))
        })
    };
    let frank = format!("uid=frank,{PEOPLE}");
    let frank_bound = ds.binds_as(&frank);
    change_alice_password(set_password, &d, &auth, "alice-pw", "changed-pw");
    // A write to alice's entry alone: frank's success still stands.
    assert_eq!(d.ask("frank", "frank-pw", "smtp", ""), "OK");
    assert_eq!(ds.binds_as(&frank), frank_bound, "frank from memory");
    let lock_push = after_the_push(&d, || lock_frank(&ds, "true"));
    assert_eq!(d.ask("frank", "frank-pw", "smtp", ""), "NO", "locked");
    assert!(dovecot_plain(&auth, "frank", "frank-pw").contains("code=user_disabled"));
    eprintln!("389 DS pushed the changes {push:?} and {lock_push:?} after ldapmodify returned");
}

/// Active Directory's answers, as Samba's AD domain controller gives them, with the usual AD
/// saslauthd.conf (`(sAMAccountName=%u)` under cn=Users, searched as the administrator): a
/// disabled account (`data 533`, said only after the right password) and one locked out
/// by wrong passwords (`data 775`, whatever the password) are disabled accounts; a wrong
/// password stays a wrong password; a directory without RFC 4533 is searched every time;
/// Cyrus's saslauthd answers the same OK/NO.
#[test]
fn active_directory_as_samba_serves_it() {
    if !samba::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ad = Samba::start(
        &dir.path().join("ad"),
        &[
            ("alice", "Secret-41x"),
            ("frank", "Secret-42y"),
            ("gina", "Secret-43z"),
        ],
    );
    ad.tool(&["user", "disable", "frank"]);
    let conf = dir.path().join("saslauthd.conf");
    std::fs::write(
        &conf,
        format!(
            "ldap_servers: {}\nldap_search_base: {}\nldap_filter: (sAMAccountName=%u)\n\
             ldap_bind_dn: {}\nldap_password: {}\nldap_timeout: 2\n",
            ad.url(),
            samba::USERS,
            samba::ADMIN,
            samba::ADMIN_PW
        ),
    )
    .unwrap();
    let (d, auth) = daemon_via(&ad.enter(), &conf, &[]);
    let table = [
        ("alice", "Secret-41x", "OK"),
        ("alice", "wrong", "NO"),
        ("frank", "Secret-42y", "NO"),
        ("frank", "wrong", "NO"),
        ("nobody", "Secret-41x", "NO"),
    ];
    answers(&d, &table, || ad.log());
    d.wait_for_log("does not let saslauthd-rs follow its changes", 1);
    let disabled = dovecot_plain(&auth, "frank", "Secret-42y");
    assert!(disabled.contains("code=user_disabled"), "{disabled}");
    let wrong = dovecot_plain(&auth, "frank", "wrong");
    assert!(
        wrong.starts_with("FAIL") && !wrong.contains("code="),
        "{wrong}"
    );
    cyrus_agrees(
        &ad.enter(),
        &conf,
        &dir.path().join("cyrus-ad"),
        &table,
        "Samba AD",
    );
    // Two wrong passwords lock gina out: then even the right one is refused, as disabled.
    assert_eq!(d.ask("gina", "Secret-43z", "smtp", ""), "OK");
    assert_eq!(d.ask("gina", "wrong1", "smtp", ""), "NO");
    assert_eq!(d.ask("gina", "wrong2", "smtp", ""), "NO");
    assert_eq!(d.ask("gina", "Secret-43z", "smtp", ""), "NO", "locked out");
    let locked = dovecot_plain(&auth, "gina", "Secret-43z");
    assert!(locked.contains("code=user_disabled"), "{locked}");
    // A password that must change (data 773) is an expired one; an account past its expiry
    // date (data 701) is disabled.
    ad.tool(&[
        "user",
        "create",
        "hugo",
        "Secret-44w",
        "--must-change-at-next-login",
    ]);
    assert_eq!(d.ask("hugo", "Secret-44w", "smtp", ""), "NO");
    let expired = dovecot_plain(&auth, "hugo", "Secret-44w");
    assert!(expired.contains("code=pass_expired"), "{expired}");
    ad.tool(&["user", "create", "ivan", "Secret-45v"]);
    assert_eq!(d.ask("ivan", "Secret-45v", "smtp", ""), "OK");
    ad.tool(&["user", "setexpiry", "ivan", "--days=0"]);
    let past = dovecot_plain(&auth, "ivan", "Secret-45v");
    assert!(past.contains("code=user_disabled"), "{past}");
}

/// How [`Hostile`] answers: each a reply ldap3 0.12 cannot read and panics on.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// An empty SEQUENCE for every request (its message decoder).
    EmptySequence,
    /// A bind answered with an empty result (the bind's caller reading the result).
    EmptyBindResult,
    /// Binds succeed; a search is answered with an extended response (its connection
    /// task: Samba's answer to a critical control it lacks).
    ExtendedForSearch,
}

/// A "directory" on 127.0.0.1 that answers every connection's requests with [`Garbage`],
/// until dropped.
struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start(garbage: Garbage) -> Hostile {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let accepting = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                std::thread::spawn(move || Self::answer(stream, garbage));
            }
        });
        Hostile {
            port,
            stop,
            accepting: Some(accepting),
        }
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    /// One BER element: its first byte and its content (definite lengths, as LDAP sends).
    fn element(stream: &mut std::net::TcpStream) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).ok()?;
        let len = if head[1] & 0x80 == 0 {
            usize::from(head[1])
        } else {
            let mut bytes = vec![0u8; usize::from(head[1] & 0x7f)];
            stream.read_exact(&mut bytes).ok()?;
            bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b))
        };
        let mut content = vec![0u8; len.min(1 << 20)];
        stream.read_exact(&mut content).ok()?;
        Some((head[0], content))
    }

    fn answer(mut stream: std::net::TcpStream, garbage: Garbage) {
        use std::io::Write;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        while let Some((0x30, message)) = Self::element(&mut stream) {
            // messageID (INTEGER), then the operation's tag.
            let (0x02, Some(&n)) = (message[0], message.get(1)) else {
                return;
            };
            let id = &message[..2 + usize::from(n)];
            let op = message[2 + usize::from(n)];
            let reply = |op_and_result: &[u8]| {
                let mut body = id.to_vec();
                body.extend_from_slice(op_and_result);
                let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
                out.extend(body);
                out
            };
            // success, no matched DN, no text.
            let ok = [0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
            let out = match (garbage, op) {
                (_, 0x42) => return, // unbind
                (Garbage::EmptySequence, _) => vec![0x30, 0x00],
                (Garbage::EmptyBindResult, 0x60) => reply(&[0x61, 0x00]),
                (Garbage::ExtendedForSearch, 0x63) => {
                    reply(&[[0x78, ok.len() as u8].as_slice(), &ok].concat())
                }
                // Anything else (a bind): success.
                _ => reply(&[[0x61, ok.len() as u8].as_slice(), &ok].concat()),
            };
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

#[test]
fn a_directory_that_sends_what_the_ldap_library_cannot_read_costs_a_connection() {
    if !ldap::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = start_slapd(&dir.path().join("good"));
    for garbage in [
        Garbage::EmptySequence,
        Garbage::EmptyBindResult,
        Garbage::ExtendedForSearch,
    ] {
        let hostile = Hostile::start(garbage);
        // First in the list: it is asked first, then skipped as a server that broke.
        let servers = format!("{} {}", hostile.url(), slapd.url());
        let (mut d, auth) = daemon(&conf(dir.path(), &servers, ""), &[]);
        for _ in 0..3 {
            assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), "OK", "{garbage:?}");
            assert_eq!(d.ask("alice", "wrong", "smtp", ""), "NO", "{garbage:?}");
        }
        assert!(dovecot_plain(&auth, "alice", "alice-pw").starts_with("OK"));
        // Alone: a defined error, request after request, and the daemon lives on.
        let (mut lone, _) = daemon(&conf(dir.path(), &hostile.url(), ""), &[]);
        for _ in 0..2 {
            assert_eq!(
                lone.ask("alice", "alice-pw", "smtp", ""),
                "NO internal mechanism failure",
                "{garbage:?}: {}",
                lone.log_text()
            );
        }
        for d in [&mut d, &mut lone] {
            assert!(d.alive(), "{garbage:?}");
            let log = d.log_text();
            assert!(
                log.contains("the server sent a reply the LDAP library cannot read"),
                "{garbage:?}: {log}"
            );
            if let Garbage::EmptyBindResult = garbage {
                // The change stream's own bind: the stream ends, and says where. It binds in
                // the background after the first request, so its line may come later.
                let ended = format!(
                    "the change stream ended ({}: the server sent a reply the LDAP library",
                    hostile.url()
                );
                d.wait_for_log(&ended, 1);
            }
            // One line where it is caught, never a panic report.
            assert!(
                !log.contains("panicked") && !log.contains("RUST_BACKTRACE"),
                "{garbage:?}: {log}"
            );
        }
    }
}
