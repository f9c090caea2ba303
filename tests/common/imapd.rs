//! A throwaway Dovecot 2.3 IMAP server (`dovecot-imapd`), from its own configuration in a
//! temporary directory: users from a passwd-file, IMAP on a loopback port (with STARTTLS)
//! and IMAPS on another, with a certificate for `localhost` and 127.0.0.1 from a CA of its
//! own. The peer of `-a rimap`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether Dovecot's IMAP server is installed.
pub fn missing() -> Option<&'static str> {
    if !Path::new("/usr/lib/dovecot/imap").exists()
        || !Path::new("/usr/lib/dovecot/imap-login").exists()
    {
        return Some("Dovecot's IMAP server (dovecot-imapd)");
    }
    None
}

/// A running Dovecot IMAP server.
pub struct Imapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    conf: PathBuf,
    /// Its IMAP port (STARTTLS offered).
    pub port: u16,
    /// Its IMAPS port.
    pub imaps_port: u16,
    /// The CA its certificate is signed by.
    pub ca: PathBuf,
}

/// How the server is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// No LOGIN before TLS (`disable_plaintext_auth`, Dovecot's default): the greeting says
    /// LOGINDISABLED.
    pub tls_required: bool,
    /// `auth_failure_delay` in seconds (Dovecot's default is 2; the tests want 0).
    pub failure_delay: u32,
}

impl Imapd {
    /// Dovecot with the users `(name, password)` (passwords stored `{PLAIN}`).
    pub fn start(users: &[(&str, &str)], options: Options) -> Imapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Its login processes run as dovenull and its imap processes as nobody: they must
        // reach the directory.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["run", "state", "home"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        std::fs::set_permissions(d.join("home"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (ca, cert, key) =
            super::pki::certificates(d, "imapd", "DNS:localhost,IP:127.0.0.1,IP:127.0.0.2");
        let passwd: String = users
            .iter()
            .map(|(user, pw)| format!("{user}:{{PLAIN}}{pw}::::::\n"))
            .collect();
        std::fs::write(d.join("users"), passwd).unwrap();
        let (port, imaps_port) = (super::free_port(), super::free_port());
        let conf = d.join("dovecot.conf");
        // Every login comes from one address (the daemon's): Dovecot's growing penalty for an
        // address's failures is turned off (its anvil socket closed to the auth process), as
        // its failure delay is, so that a test's wrong passwords do not slow the next ones.
        // Every character is allowed in a user name (Dovecot's default refuses `'` and 8-bit
        // ones), so that such names reach the passdb.
        std::fs::write(
            &conf,
            format!(
                "protocols = imap\nbase_dir = {run}\nstate_dir = {state}\nlog_path = {log}\n\
                 listen = 127.0.0.1, 127.0.0.2\nssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n\
                 disable_plaintext_auth = {tls}\nauth_mechanisms = plain login\nauth_username_chars =\n\
                 auth_failure_delay = {delay}\nmail_location = maildir:~/Maildir\n\
                 passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={home}/%u\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n\
                 inet_listener imaps {{\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n\
                 service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n",
                run = d.join("run").display(),
                state = d.join("state").display(),
                log = d.join("dovecot.log").display(),
                cert = cert.display(),
                key = key.display(),
                tls = if options.tls_required { "yes" } else { "no" },
                delay = options.failure_delay,
                users = d.join("users").display(),
                home = d.join("home").display(),
            ),
        )
        .unwrap();
        let mut imapd = Imapd {
            dir,
            child: None,
            conf,
            port,
            imaps_port,
            ca,
        };
        imapd.run();
        imapd
    }

    /// Starts it (again).
    pub fn run(&mut self) {
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("dovecot.err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for port in [self.port, self.imaps_port] {
            super::wait_for_port(port, Duration::from_secs(20), "Dovecot IMAP", || self.log());
        }
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }

    /// `host/port` for `-O`: 127.0.0.2, which Dovecot does not count as the local host.
    pub fn option(&self) -> String {
        format!("127.0.0.2/{}", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        super::files_text(self.dir.path(), &["dovecot.err", "dovecot.log"])
    }
}

impl Drop for Imapd {
    fn drop(&mut self) {
        self.stop();
    }
}
