//! Throwaway Postfix instances (Debian's): each with its own config and queue directories
//! (tests/postfix/instance.sh), smtpd on a free 127.0.0.1 port, SASL through saslauthd-rs in
//! the mode given. Needs root (Postfix's master drops to the postfix user).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The instance script.
pub const INSTANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postfix/instance.sh");

/// A Postfix instance; stopped on drop.
pub struct Postfix {
    pub dir: PathBuf,
    pub port: u16,
}

impl Postfix {
    pub fn start(dir: &Path, sasl_type: &str, socket: &Path) -> Postfix {
        Postfix::start_with(dir, sasl_type, socket, "", "")
    }

    /// With `main_cf` lines added to the instance's main.cf and, unless empty, `smtpd_conf`
    /// as libsasl2's smtpd.conf (the socket or file path added).
    pub fn start_with(
        dir: &Path,
        sasl_type: &str,
        socket: &Path,
        main_cf: &str,
        smtpd_conf: &str,
    ) -> Postfix {
        // A port another program took between free_port and Postfix's bind: another one.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = super::free_port();
            let out = Command::new(INSTANCE)
                .args(["start"])
                .arg(dir)
                .arg(port.to_string())
                .arg(sasl_type)
                .arg(socket)
                .env("POSTFIX_MAIN_EXTRA", main_cf)
                .env("POSTFIX_SMTPD_CONF", smtpd_conf)
                .output()
                .unwrap();
            if out.status.success() {
                return Postfix {
                    dir: dir.to_owned(),
                    port,
                };
            }
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        panic!("postfix: {failures:?}");
    }

    /// The SMTP code swaks saw for AUTH (235, 535, 454).
    pub fn auth(&self, mech: &str, user: &str, password: &str) -> String {
        super::smtp::swaks_auth(Self::swaks(), self.port, mech, user, password)
    }

    /// The whole AUTH reply line swaks saw.
    pub fn auth_reply(&self, mech: &str, user: &str, password: &str) -> String {
        super::smtp::swaks_auth_reply(Self::swaks(), self.port, mech, user, password)
    }

    pub fn swaks() -> Command {
        let mut swaks = Command::new("swaks");
        swaks.args(["--server", "127.0.0.1"]);
        swaks
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postfix.log")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(INSTANCE).arg("stop").arg(&self.dir).status();
    }
}

/// Whether a Postfix instance can run here (root, Postfix and swaks installed); a missing
/// package fails under SASLAUTHD_RS_REQUIRE_PEERS=1.
pub fn ready() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let peers =
        super::peer("swaks").is_some() && Path::new("/usr/lib/postfix/sbin/master").exists();
    if !peers && std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("postfix is not installed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
    }
    if !root {
        eprintln!("SKIPPED: a Postfix instance needs root");
    }
    root && peers
}
