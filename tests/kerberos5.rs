//! `-a kerberos5` against a throwaway MIT KDC (its own krb5.conf, database and keytab in a
//! temporary directory, on a loopback port), compared request for request with Debian's
//! Cyrus `saslauthd -a kerberos5` on the same KDC and keytab; a keytab that cannot verify
//! the KDC's tickets; a KDC down and one that never answers.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::kdc::{Kdc, REALM};
use common::{peer, Cyrus, Daemon};

fn ready() -> bool {
    common::peers_for("kerberos5", common::kdc::missing())
}

/// Debian's Cyrus `saslauthd -a kerberos5` with `args`, on `kdc`.
fn cyrus(dir: &Path, kdc: &Kdc, args: &[&str]) -> Option<Cyrus> {
    let saslauthd = peer("saslauthd")?;
    let run = dir.join(format!("cyrus-run{}", args.join("")));
    let mut command = Cyrus::command();
    command
        .arg(&saslauthd)
        .args(["-a", "kerberos5", "-d", "-n", "4", "-m"])
        .arg(&run)
        .args(args)
        .envs(kdc.env());
    Some(Cyrus::start(command, &run))
}

/// `saslauthd-rs -a kerberos5` with `args` and `env`.
fn ours_with(args: &[&str], env: &[(&str, std::ffi::OsString)]) -> Daemon {
    let args: Vec<std::ffi::OsString> = ["-a", "kerberos5"]
        .iter()
        .chain(args)
        .map(|a| a.into())
        .collect();
    Daemon::spawn(tempfile::tempdir().unwrap(), &args, env)
}

fn principals() -> Kdc {
    Kdc::start(&[
        ("alice", "alice-pw", ""),
        ("bob", "bob:pw-2", ""),
        // Disabled, expired, password expired.
        ("carol", "carol-pw", "-allow_tix"),
        ("dave", "dave-pw", "-expire 2020-01-01"),
        ("erin", "erin-pw", "-pwexpire 2020-01-01"),
    ])
}

/// The same reply, text for text, for right and wrong passwords, unknown, disabled and
/// expired principals, with and without a realm and `-r`; but where Cyrus 2.1.28 doubles the
/// realm (cyrus-sasl #832), which ours does not.
#[test]
fn the_same_replies_as_cyrus_on_a_real_kdc() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kdc = principals();
    let Some(cyrus_plain) = cyrus(dir.path(), &kdc, &[]) else {
        return;
    };
    let cyrus_r = cyrus(dir.path(), &kdc, &["-r"]).unwrap();
    let (ours_plain, ours_r) = (ours_with(&[], &kdc.env()), ours_with(&["-r"], &kdc.env()));
    let users = [
        ("alice", "alice-pw"),
        ("bob", "bob:pw-2"),
        ("carol", "carol-pw"),
        ("dave", "dave-pw"),
        ("erin", "erin-pw"),
        ("nobody", "x"),
    ];
    let (mut compared, mut ok, mut doubled) = (0, 0, 0);
    for (user, pw) in users {
        for (login, realm) in [
            (user.to_owned(), ""),
            (user.to_owned(), REALM),
            (format!("{user}@{REALM}"), ""),
            (format!("{user}@{REALM}"), REALM),
        ] {
            for password in [pw.to_owned(), format!("{pw}x")] {
                for (cyrus, ours, r) in [
                    (&cyrus_plain, &ours_plain, false),
                    (&cyrus_r, &ours_r, true),
                ] {
                    let theirs = common::ask_at(&cyrus.socket, &login, &password, "smtp", realm);
                    let got = ours.ask(&login, &password, "smtp", realm);
                    // Cyrus's principal is login@realm whenever the realm is not empty: with
                    // -r, or a login that has its realm, it is user@REALM@REALM.
                    let cyrus_doubles = !realm.is_empty() && (r || login.contains('@'));
                    if cyrus_doubles {
                        assert_eq!(
                            theirs, "NO saslauthd internal error",
                            "{login} {realm} -r {r}"
                        );
                        let right = password == pw && (user == "alice" || user == "bob");
                        let expected = if right {
                            "OK"
                        } else {
                            "NO krb5_get_init_creds_password failed"
                        };
                        assert_eq!(
                            got,
                            expected,
                            "{login} {password:?} {realm} -r {r}: {}",
                            ours.log_text()
                        );
                        doubled += 1;
                    } else {
                        assert_eq!(
                            got,
                            theirs,
                            "{login} {password:?} realm {realm:?} -r {r}: {}",
                            ours.log_text()
                        );
                        compared += 1;
                    }
                    ok += usize::from(got == "OK");
                }
            }
        }
    }
    eprintln!(
        "-a kerberos5 and Cyrus's on one MIT KDC: the same reply for {compared} requests; \
         {doubled} where Cyrus doubles the realm (#832) answered as the principal says; {ok} OK \
         in all"
    );
}

/// A ticket the keytab cannot verify (the host's key changed at the KDC since the keytab was
/// written, as a forged KDC's would be) logs nobody in; a KDC that is down, or that never
/// answers, is a temporary failure within the reply deadline: 454 for Postfix's dovecot
/// mode, and never a success.
#[test]
fn an_unverifiable_ticket_and_a_kdc_down_or_silent() {
    if !ready() {
        return;
    }
    let mut kdc = principals();
    let auth_dir = tempfile::tempdir().unwrap();
    let dovecot = auth_dir.path().join("auth");
    let d = ours_with(&["--dovecot-socket", dovecot.to_str().unwrap()], &kdc.env());
    let cyrus_dir = tempfile::tempdir().unwrap();
    let c = cyrus(cyrus_dir.path(), &kdc, &[]);
    // Cyrus's, when there, answers the same.
    let both = |expected: &str| {
        assert_eq!(d.ask("alice", "alice-pw", "smtp", ""), expected);
        if let Some(c) = &c {
            assert_eq!(
                common::ask_at(&c.socket, "alice", "alice-pw", "smtp", ""),
                expected
            );
        }
    };
    both("OK");
    kdc.kadmin(&format!("cpw -randkey host/{}", common::kdc::host_name()));
    both("NO krb5_verify_init_creds failed");
    d.wait_for_log("could not be verified against the keytab", 1);
    kdc.stop();
    both("NO krb5_get_init_creds_password failed");
    d.wait_for_log("Cannot contact any KDC", 1);
    // The Dovecot socket closes the request's connection, as Dovecot does for a passdb
    // that broke: Postfix answers 454 (try later).
    let reply = common::dovecot::plain_reply(&dovecot, "alice", "alice-pw");
    assert_eq!(reply, "", "a closed connection");

    // A KDC that takes the packets and never answers.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let _tcp = TcpListener::bind(("127.0.0.1", port)).ok();
    let silent = tempfile::tempdir().unwrap();
    let conf = silent.path().join("krb5.conf");
    std::fs::write(
        &conf,
        format!(
            "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n\
             [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n"
        ),
    )
    .unwrap();
    let mut env = kdc.env();
    env[0].1 = conf.into();
    let d = ours_with(&["-n", "4"], &env);
    let start = Instant::now();
    let replies = common::ask_at_once(&d, 4, "alice", "alice-pw");
    let took = start.elapsed();
    assert!(
        replies
            .iter()
            .all(|r| r == "NO krb5_get_init_creds_password failed"),
        "{replies:?}: {}",
        d.log_text()
    );
    assert!(took < Duration::from_millis(4500), "{took:?}");
    eprintln!(
        "-a kerberos5: an unverifiable ticket refused; a KDC down answered at once, one that \
         never answers in {took:?} (4 at once); never OK"
    );
}
