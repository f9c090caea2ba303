//! `-a shadow` end to end: shadow fixtures made with Debian's `mkpasswd` (package whois) and
//! `openssl passwd` for every scheme the system writes, checked through the daemon by
//! Debian's `testsaslauthd`, and compared with Cyrus's own `saslauthd -a shadow` under
//! nss_wrapper. No system user is created; `/etc/shadow` is never touched.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{frame, peer, raw_exchange, Cyrus, Daemon};

const PASSWORD: &str = "s3cret pass";

fn today() -> i64 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86400) as i64
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// (user, shadow line) for every scheme, and the special accounts.
fn fixture_lines(mkpasswd: &Path) -> Vec<(String, String)> {
    let mk = |method: &str| output(Command::new(mkpasswd).args(["-m", method, PASSWORD]));
    let ossl = |flag: &str| output(Command::new("openssl").args(["passwd", flag, PASSWORD]));
    let t = today();
    let line =
        |user: &str, hash: &str, fields: &str| (user.to_owned(), format!("{user}:{hash}:{fields}"));
    let normal = format!("{}:0:99999:7:::", t - 10);
    let sha512 = mk("sha512crypt");
    vec![
        line("yescrypt", &mk("yescrypt"), &normal),
        line("gostyescrypt", &mk("gost-yescrypt"), &normal),
        line("scrypt", &mk("scrypt"), &normal),
        line("bcrypt", &mk("bcrypt"), &normal),
        line("sha512", &sha512, &normal),
        line("sha512ossl", &ossl("-6"), &normal),
        line("sha256", &ossl("-5"), &normal),
        line("md5", &ossl("-1"), &normal),
        line("des", &mk("descrypt"), &normal),
        line("locked", &format!("!{sha512}"), &normal),
        line("star", "*", &normal),
        line("empty", "", &normal),
        line(
            "expired",
            &sha512,
            &format!("{}:0:99999:7::{}:", t - 10, t - 1),
        ),
        line(
            "expiresoon",
            &sha512,
            &format!("{}:0:99999:7::{}:", t - 10, t + 10),
        ),
        line("aged", &sha512, &format!("{}:0:30:7:::", t - 100)),
        line("forcechange", &sha512, "0:0:30:7:::"),
    ]
}

fn write_fixtures(dir: &Path, mkpasswd: &Path) -> (PathBuf, Vec<String>) {
    let lines = fixture_lines(mkpasswd);
    let shadow = dir.join("shadow");
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&shadow, text).unwrap();
    let users = lines.into_iter().map(|(u, _)| u).collect::<Vec<_>>();
    let passwd: String = users
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{u}:x:{}:{}::/nonexistent:/bin/false\n", 2000 + i, 2000 + i))
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let group: String = users
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{u}:x:{}:\n", 2000 + i))
        .collect();
    std::fs::write(dir.join("group"), group).unwrap();
    (shadow, users)
}

fn shadow_daemon(shadow: &Path, extra: &[&str]) -> Daemon {
    let mut args: Vec<OsString> = vec![
        "-a".into(),
        "shadow".into(),
        "--shadow-file".into(),
        shadow.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Daemon::spawn(tempfile::tempdir().unwrap(), &args, &[])
}

const OK: &[u8] = b"\x00\x02OK";

fn no(reason: &str) -> Vec<u8> {
    let body = format!("NO {reason}");
    [&(body.len() as u16).to_be_bytes()[..], body.as_bytes()].concat()
}

#[test]
fn every_scheme_and_account_state() {
    let Some(mkpasswd) = peer("mkpasswd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (shadow, _) = write_fixtures(dir.path(), &mkpasswd);
    let d = shadow_daemon(&shadow, &[]);
    let ask = |user: &str, password: &str| {
        raw_exchange(
            &d.socket,
            &frame(&[user.as_bytes(), password.as_bytes(), b"smtp", b""]),
        )
    };
    let failed = no("authentication failed");
    for user in [
        "yescrypt",
        "gostyescrypt",
        "scrypt",
        "bcrypt",
        "sha512",
        "sha512ossl",
        "sha256",
        "md5",
        "des",
        "expiresoon",
    ] {
        assert_eq!(ask(user, PASSWORD), OK, "{user}");
        // (DES reads 8 characters: the wrong password must differ within them.)
        assert_eq!(ask(user, "S3cret pass"), failed, "{user}: wrong password");
    }
    for user in ["locked", "star", "empty", "nobody"] {
        assert_eq!(ask(user, PASSWORD), failed, "{user}");
        assert_eq!(ask(user, "x"), failed, "{user}");
    }
    // Expiry is told only to whoever knows the password, as Cyrus does.
    assert_eq!(ask("expired", PASSWORD), no("Account expired"));
    assert_eq!(ask("expired", "wrong"), failed);
    assert_eq!(ask("aged", PASSWORD), no("Password expired"));
    assert_eq!(ask("forcechange", PASSWORD), no("Password expired"));
    assert_eq!(ask("aged", "wrong"), failed);
    let log = d.log_text();
    assert!(
        !log.contains("$y$") && !log.contains("$6$") && !log.contains(PASSWORD),
        "{log}"
    );
}

#[test]
fn debian_testsaslauthd_against_shadow() {
    let (Some(mkpasswd), Some(cyrus)) = (peer("mkpasswd"), peer("testsaslauthd")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (shadow, _) = write_fixtures(dir.path(), &mkpasswd);
    let d = shadow_daemon(&shadow, &[]);
    let run = |user: &str, pw: &str| {
        let out = Command::new(&cyrus)
            .arg("-f")
            .arg(&d.socket)
            .args(["-u", user, "-p", pw, "-s", "smtp"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(
        run("yescrypt", PASSWORD),
        (0, "0: OK \"Success.\"\n".into())
    );
    assert_eq!(
        run("sha512", "nope"),
        (255, "0: NO \"authentication failed\"\n".into())
    );
    assert_eq!(
        run("locked", PASSWORD),
        (255, "0: NO \"authentication failed\"\n".into())
    );
    assert_eq!(
        run("nobody", PASSWORD),
        (255, "0: NO \"authentication failed\"\n".into())
    );
}

#[test]
fn malformed_shadow_lines_are_skipped_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let hash = saslauthd_rs::crypt::hash(PASSWORD.as_bytes(), "$6$").unwrap();
    let long = "x".repeat(2000);
    let text = format!(
        "good:{hash}:19000:0:99999:7:::\n\
         crlf:{hash}:19000:0:99999:7:::\r\n\
         short:{hash}\n\
         long:{long}:19000:0:99999:7:::\n\
         baddays:{hash}:yesterday:0:99999:7:::\n\
         \n\
         good2:{hash}:19000:0:99999:7:::\n"
    );
    let shadow = dir.path().join("shadow");
    std::fs::write(&shadow, text).unwrap();
    let d = shadow_daemon(&shadow, &[]);
    assert_eq!(d.ask("good", PASSWORD, "smtp", ""), "OK");
    assert_eq!(d.ask("good2", PASSWORD, "smtp", ""), "OK");
    for user in ["crlf", "short", "long", "baddays"] {
        assert_eq!(
            d.ask(user, PASSWORD, "smtp", ""),
            "NO authentication failed",
            "{user}"
        );
    }
    let log = d.log_text();
    for (line, reason) in [
        (2, "carriage return"),
        (3, "not 9"),
        (4, "too long"),
        (5, "not a number"),
    ] {
        assert!(
            log.contains(&format!("line {line} skipped: ")) && log.contains(reason),
            "{log}"
        );
    }
    assert!(!log.contains(&hash), "a hash was logged");
}

#[test]
fn a_changed_hash_takes_effect_at_once_even_with_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow");
    let write = |pw: &str| {
        let hash = saslauthd_rs::crypt::hash(pw.as_bytes(), "$y$").unwrap();
        std::fs::write(&shadow, format!("alice:{hash}:19000:0:99999:7:::\n")).unwrap();
    };
    write("oldpw");
    let d = shadow_daemon(&shadow, &["-c", "-t", "3600"]);
    assert_eq!(d.ask("alice", "oldpw", "smtp", ""), "OK");
    assert_eq!(d.ask("alice", "oldpw", "smtp", ""), "OK");
    assert!(
        d.log_text().contains("cache hit"),
        "the second check is a cache hit: {}",
        d.log_text()
    );
    write("newpw");
    assert_eq!(
        d.ask("alice", "oldpw", "smtp", ""),
        "NO authentication failed",
        "old password refused at once"
    );
    assert_eq!(d.ask("alice", "newpw", "smtp", ""), "OK");
}

/// Cyrus's `saslauthd -a shadow` with nss_wrapper standing in for the system's databases
/// (it uses getspnam, which nss_wrapper intercepts).
fn cyrus_shadow(dir: &Path, extra: &[&str]) -> Option<Cyrus> {
    cyrus_with_nss(dir, "shadow", extra)
}

/// Cyrus's `saslauthd -a PASSDB` with nss_wrapper standing in for the system's databases
/// (`passwd`, `group` and `shadow` in `dir`).
fn cyrus_with_nss(dir: &Path, passdb: &str, extra: &[&str]) -> Option<Cyrus> {
    let saslauthd = peer("saslauthd")?;
    let run = dir.join("cyrus-run");
    let mut command = Cyrus::command();
    command
        .arg(&saslauthd)
        .args(["-a", passdb, "-d", "-n", "2", "-m"])
        .arg(&run)
        .args(extra)
        .envs(nss_wrapper(dir)?);
    Some(Cyrus::start(command, &run))
}

/// The environment that puts nss_wrapper in front of NSS, with the databases in `dir`;
/// `None` (after the missing-peer rule) without libnss-wrapper.
fn nss_wrapper(dir: &Path) -> Option<Vec<(&'static str, OsString)>> {
    let wrapper = [
        "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
        "/usr/lib/libnss_wrapper.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(wrapper) = wrapper else {
        return peer("libnss_wrapper.so").map(|_| unreachable!());
    };
    Some(vec![
        ("LD_PRELOAD", wrapper.into()),
        ("NSS_WRAPPER_PASSWD", dir.join("passwd").into()),
        ("NSS_WRAPPER_GROUP", dir.join("group").into()),
        ("NSS_WRAPPER_SHADOW", dir.join("shadow").into()),
    ])
}

/// `-a getpwent` against Cyrus's, both under nss_wrapper with every scheme's hash in the
/// passwd file's password field (a system without shadow passwords), a shadowed entry (`x`)
/// and an empty field: the same OK/NO for every user and password; Cyrus's failure texts
/// tell who exists (`Incorrect password`, `Username lookup failure: ...`), ours is one text.
#[test]
fn differential_against_cyrus_getpwent() {
    let Some(mkpasswd) = peer("mkpasswd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut passwd = String::from("root:x:0:0::/root:/bin/sh\n");
    let mut users = Vec::new();
    for (i, (user, line)) in fixture_lines(&mkpasswd).into_iter().enumerate() {
        let hash = line.split(':').nth(1).unwrap().to_owned();
        passwd += &format!(
            "{user}:{hash}:{}:{}::/nonexistent:/bin/false\n",
            3000 + i,
            3000 + i
        );
        users.push(user);
    }
    passwd += "shadowed:x:3100:3100::/nonexistent:/bin/false\n";
    users.push("shadowed".into());
    std::fs::write(dir.path().join("passwd"), passwd).unwrap();
    std::fs::write(dir.path().join("group"), "root:x:0:\n").unwrap();
    std::fs::write(dir.path().join("shadow"), "").unwrap();
    let Some(cyrus) = cyrus_with_nss(dir.path(), "getpwent", &[]) else {
        return;
    };
    let env = nss_wrapper(dir.path()).unwrap();
    let args: Vec<OsString> = vec!["-a".into(), "getpwent".into()];
    let ours = Daemon::spawn(tempfile::tempdir().unwrap(), &args, &env);
    let mut compared = 0;
    let mut ok = 0;
    for user in users.iter().map(String::as_str).chain(["nobody"]) {
        for password in [PASSWORD, "wrong", "s3cret"] {
            let request = frame(&[user.as_bytes(), password.as_bytes(), b"smtp", b""]);
            let theirs = raw_exchange(&cyrus.socket, &request);
            let mine = raw_exchange(&ours.socket, &request);
            if theirs == OK {
                assert_eq!(mine, OK, "{user}/{password}: {}", ours.log_text());
                ok += 1;
            } else {
                assert_eq!(
                    mine,
                    no("authentication failed"),
                    "{user}/{password}: {theirs:?}"
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, (users.len() + 1) * 3);
    // Every scheme's right password but the locked, disabled and empty fields' (and x).
    assert_eq!(ok, users.len() - 4, "{}", ours.log_text());
    // root's entry says x: the log says what that means.
    assert!(
        ours.log_text()
            .contains("no password will match here; -a shadow reads them"),
        "{}",
        ours.log_text()
    );
}

#[test]
fn differential_against_cyrus_shadow() {
    let Some(mkpasswd) = peer("mkpasswd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (shadow, users) = write_fixtures(dir.path(), &mkpasswd);
    let Some(cyrus) = cyrus_shadow(dir.path(), &[]) else {
        return;
    };
    let ours = shadow_daemon(&shadow, &[]);
    let mut compared = 0;
    for user in users.iter().map(String::as_str).chain(["nobody"]) {
        for password in [PASSWORD, "wrong", "s3cret"] {
            let request = frame(&[user.as_bytes(), password.as_bytes(), b"imap", b""]);
            let theirs = raw_exchange(&cyrus.socket, &request);
            let mine = raw_exchange(&ours.socket, &request);
            // Replies agree on OK / NO. OK and the expiry texts (given only with the right
            // password) are identical; every other failure text differs on purpose: Cyrus
            // says "Invalid username", "Username lookup failure: ..." or "Incorrect
            // password", which tells who exists; ours is one text for all.
            assert_eq!(
                &mine[2..4],
                &theirs[2..4],
                "{user}/{password}: {mine:?} vs {theirs:?}"
            );
            let same_text = [OK.to_vec(), no("Account expired"), no("Password expired")];
            if same_text.contains(&theirs) {
                assert_eq!(mine, theirs, "{user}/{password}");
            } else {
                assert_eq!(mine, no("authentication failed"), "{user}/{password}");
            }
            compared += 1;
        }
    }
    assert_eq!(compared, (users.len() + 1) * 3);
}

#[test]
fn cyrus_cache_accepts_an_old_password_ours_does_not() {
    let Some(mkpasswd) = peer("mkpasswd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_fixtures(dir.path(), &mkpasswd);
    let shadow = dir.path().join("shadow");
    let set = |pw: &str| {
        let hash = output(Command::new(&mkpasswd).args(["-m", "yescrypt", pw]));
        std::fs::write(&shadow, format!("yescrypt:{hash}:19000:0:99999:7:::\n")).unwrap();
    };
    set("oldpw");
    let Some(cyrus) = cyrus_shadow(dir.path(), &["-c"]) else {
        return;
    };
    let ours = shadow_daemon(&shadow, &["-c"]);
    let ask = |socket: &Path, pw: &str| {
        raw_exchange(socket, &frame(&[b"yescrypt", pw.as_bytes(), b"imap", b""]))
    };
    assert_eq!(ask(&cyrus.socket, "oldpw"), OK);
    assert_eq!(ask(&ours.socket, "oldpw"), OK);
    set("newpw");
    assert_eq!(
        ask(&cyrus.socket, "oldpw"),
        OK,
        "Cyrus: the old password still works (its cache)"
    );
    assert_eq!(
        ask(&ours.socket, "oldpw"),
        no("authentication failed"),
        "ours: refused at once"
    );
    assert_eq!(ask(&ours.socket, "newpw"), OK);
}

#[test]
fn refuses_to_start_without_access_to_shadow() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/etc/shadow").exists() {
        eprintln!("SKIPPED: needs root to run the daemon as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::DAEMON,
            "-a",
            "shadow",
            "-d",
            "-m",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read /etc/shadow: Permission denied"),
        "{err}"
    );
}
