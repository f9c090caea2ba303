//! `-a pam` end to end, under Debian's pam_wrapper with its pam_matrix module: no system user
//! is created and `/etc/pam.d` is never read or touched (PAM_WRAPPER_SERVICE_DIR points PAM at
//! a service directory of the test's own).

mod common;

use std::path::Path;

use common::pam::{PamFixture, START};
use common::{frame, peer, raw_exchange, Cyrus};

fn ask(socket: &Path, user: &str, password: &str, service: &str) -> Vec<u8> {
    raw_exchange(
        socket,
        &frame(&[
            user.as_bytes(),
            password.as_bytes(),
            service.as_bytes(),
            b"",
        ]),
    )
}

const OK: &[u8] = b"\x00\x02OK";
const AUTH_ERROR: &[u8] = b"\x00\x11NO PAM auth error";
const ACCT_ERROR: &[u8] = b"\x00\x11NO PAM acct error";

#[test]
fn verdicts_through_pam_matrix() {
    let Some(pam) = PamFixture::new(true) else {
        return;
    };
    let d = pam.daemon(&[]);
    assert_eq!(ask(&d.socket, "alice", "wonderland", "sasl-test"), OK);
    assert_eq!(ask(&d.socket, "alice", "wrong", "sasl-test"), AUTH_ERROR);
    assert_eq!(
        ask(&d.socket, "nobody", "wonderland", "sasl-test"),
        AUTH_ERROR
    );
    // bob's password is right, but pam_matrix's account stage allows him another service only.
    assert_eq!(ask(&d.socket, "bob", "builder", "sasl-test"), ACCT_ERROR);
    assert_eq!(ask(&d.socket, "bob", "wrong", "sasl-test"), AUTH_ERROR);
    // An unknown service falls to "other" (pam_deny), as Linux-PAM does.
    assert_eq!(ask(&d.socket, "alice", "wonderland", "smtp"), AUTH_ERROR);
    let log = d.log_text();
    assert!(log.contains("[reason=account disabled]"), "{log}");
    assert!(
        !log.contains("wonderland") && !log.contains("builder"),
        "{log}"
    );
}

#[test]
fn pam_service_override() {
    let Some(pam) = PamFixture::new(true) else {
        return;
    };
    let d = pam.daemon(&["--pam-service", "sasl-test"]);
    assert_eq!(ask(&d.socket, "alice", "wonderland", "smtp"), OK);
    assert_eq!(ask(&d.socket, "alice", "wonderland", "imap"), OK);
}

#[test]
fn a_missing_service_fails_per_request_with_a_log_line() {
    let Some(pam) = PamFixture::new(false) else {
        return;
    };
    let d = pam.daemon(&[]);
    let reply = ask(&d.socket, "alice", "wonderland", "nosuch");
    assert!(
        reply.starts_with(b"\x00") && reply[2..].starts_with(b"NO"),
        "{reply:?}"
    );
    assert_eq!(
        ask(&d.socket, "alice", "wonderland", "sasl-test"),
        OK,
        "others still served"
    );
    let log = d.log_text();
    assert!(log.contains("nosuch"), "{log}");
}

#[test]
fn cache_hits_skip_pam_and_a_mismatch_asks_again() {
    let Some(pam) = PamFixture::new(true) else {
        return;
    };
    let d = pam.daemon(&["-c", "-t", "3600"]);
    assert_eq!(ask(&d.socket, "alice", "wonderland", "sasl-test"), OK);
    pam.set_passdb("alice:looking-glass:sasl-test\n");
    // Within the TTL a cached success answers without PAM (that is what a cache is for; the
    // TTL, 60 s by default, bounds it).
    assert_eq!(ask(&d.socket, "alice", "wonderland", "sasl-test"), OK);
    assert!(
        d.log_text().contains("pam: cache hit for alice"),
        "{}",
        d.log_text()
    );
    // Another password misses the cache: PAM is asked, says yes, and replaces the entry.
    assert_eq!(ask(&d.socket, "alice", "looking-glass", "sasl-test"), OK);
    assert_eq!(
        ask(&d.socket, "alice", "wonderland", "sasl-test"),
        AUTH_ERROR,
        "old password gone"
    );
    // Without -c, PAM is asked every time.
    let plain = pam.daemon(&[]);
    assert_eq!(
        ask(&plain.socket, "alice", "wonderland", "sasl-test"),
        AUTH_ERROR
    );
    assert!(!plain.log_text().contains("cache hit"));
}

#[test]
fn cache_entries_expire_after_the_ttl() {
    let Some(pam) = PamFixture::new(true) else {
        return;
    };
    let d = pam.daemon(&["-c", "-t", "1"]);
    assert_eq!(ask(&d.socket, "carol", "pw", "sasl-test"), OK);
    pam.set_passdb("carol:changed:sasl-test\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let reply = ask(&d.socket, "carol", "pw", "sasl-test");
    assert_eq!(
        reply,
        AUTH_ERROR,
        "expired entry: PAM asked; {}",
        d.log_text()
    );
}

#[test]
fn differential_against_cyrus_pam() {
    let Some(pam) = PamFixture::new(true) else {
        return;
    };
    let Some(saslauthd) = peer("saslauthd") else {
        return;
    };
    // Cyrus's own `saslauthd -a pam` under the same pam_wrapper setup.
    let run = pam.dir.path().join("cyrus-run");
    let mut command = Cyrus::command();
    command
        .arg(&saslauthd)
        .args(["-a", "pam", "-d", "-n", "2", "-m"])
        .arg(&run)
        .envs(pam.env());
    let start = START.lock().unwrap_or_else(|e| e.into_inner());
    let cyrus = Cyrus::start(command, &run);
    drop(start);
    let ours = pam.daemon(&[]);
    let rows = [
        ("alice", "wonderland", "sasl-test"),
        ("alice", "wrong", "sasl-test"),
        ("nobody", "x", "sasl-test"),
        ("bob", "builder", "sasl-test"),
        ("bob", "nope", "sasl-test"),
        ("alice", "wonderland", "other"),
        ("alice", "wonderland", "unknown-service"),
    ];
    for (user, password, service) in rows {
        let theirs = ask(&cyrus.socket, user, password, service);
        let mine = ask(&ours.socket, user, password, service);
        assert_eq!(
            mine, theirs,
            "{user}/{password}/{service}: same bytes as Cyrus"
        );
    }
}
